/* train/env.c — see train/train.h (section env). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <stdlib.h>
#include <unistd.h>

void nat_train_passive_omp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
}
