/* train/signal.c — see train/train.h (section signal). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;
/* Chosen before the handlers are installed and only read by them: the notice must be true for the
 * tool that got the signal (nat-eval has no checkpoint to write). */
static const char *notice = "";
static size_t notice_len;

static void on_signal(int sig)
{
    int saved_errno = errno; /* write(2) may set it under the code the signal interrupted */
    stop_flag = sig;
    ssize_t r = write(STDERR_FILENO, notice, notice_len);
    (void)r;
    errno = saved_errno;
}

void nat_train_signals_install(nat_signal_action action)
{
    notice = action == NAT_SIGNAL_CHECKPOINT
                 ? "\nnat: stopping after this step and writing a checkpoint (signal again to abort)\n"
                 : "\nnat: stopping after this batch (signal again to abort)\n";
    notice_len = strlen(notice);
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
