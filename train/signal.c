/* train/signal.c — see train/train.h (section signal). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    stop_flag = sig;
    static const char msg[] = "\nnat: stopping after this step and writing a checkpoint (signal again to abort)\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
}

void nat_train_signals_install(void)
{
    stop_flag = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

volatile sig_atomic_t *nat_train_stop_flag(void) { return &stop_flag; }
