/* train/train_env.c — see train/train_env.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/train_env.h"

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
