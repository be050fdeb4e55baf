/* train/train_signal.h — Ctrl-C handling of the command-line tools: SIGINT and SIGTERM set a flag that
 * the training loop polls after each step (it then writes a checkpoint and returns). The handler only
 * stores the signal number and writes a one-line notice with write(2); it is reset by the first signal,
 * so a second Ctrl-C ends the process at once (checkpoint writes are crash-safe). Process-wide by
 * nature: the only global state of train/. */
#ifndef NAT_TRAIN_SIGNAL_H
#define NAT_TRAIN_SIGNAL_H

#include <signal.h>

/* Installs the handlers for SIGINT and SIGTERM and clears the flag. */
void nat_train_signals_install(void);
/* The flag: 0, or the number of the signal received. */
volatile sig_atomic_t *nat_train_stop_flag(void);

#endif
