/* train/progress.h — the live progress line of long jobs: step/total, loss, lr, images/s, ETA.
 * On a terminal the line is redrawn in place; otherwise a plain line is printed every `every` steps. */
#ifndef NAT_TRAIN_PROGRESS_H
#define NAT_TRAIN_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

typedef struct nat_progress {
    FILE *out;
    bool tty;
    long total;
    int every;
    double t0, last_print;
} nat_progress;

void nat_progress_start(nat_progress *p, FILE *out, long total_steps, int every);
/* Draws the line for `step` (1-based); `epoch` < 0 leaves the epoch out. */
void nat_progress_update(nat_progress *p, long step, int epoch, double loss, double lr, double images_per_s);
/* Ends the line (newline on a terminal). */
void nat_progress_end(nat_progress *p);
/* Monotonic wall clock in seconds (training, evaluation and the benchmarks time with it). */
double nat_wall_now(void);
/* Formats seconds as "1h02m", "3m05s" or "12s". */
void nat_format_duration(double seconds, char *buf, size_t cap);

#endif
