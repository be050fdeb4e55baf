/* train/train_log.h — the CSV logs of a run directory:
 *   train_log.csv  step,epoch,loss,lr,grad_norm,images_per_s,mem_mib,peak_mib   (every log.csv_every steps)
 *   eval_log.csv   step,epoch,weights,images,top1,top5,loss,seconds           (weights: model or ema)
 * epoch is fractional (step / steps per epoch). A resumed run keeps the rows up to its checkpoint's step
 * and drops later ones (written after that checkpoint by the run that stopped), so each file reads as
 * one uninterrupted run. Rows are flushed as they are written. */
#ifndef NAT_TRAIN_LOG_H
#define NAT_TRAIN_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "nat/status.h"

typedef struct nat_train_log {
    FILE *steps, *evals;
    char steps_path[1024], evals_path[1024]; /* for messages */
} nat_train_log;

/* Opens (creates) both files in dir. resume_step < 0: a new run (files truncated); otherwise rows of
 * train_log.csv past resume_step and of eval_log.csv past eval_keep are dropped and new rows are
 * appended. */
nat_status nat_train_log_open(nat_train_log *log, const char *dir, int64_t resume_step, int64_t eval_keep);
/* Write errors (a full disk) are returned, naming the file and the system's reason. */
nat_status nat_train_log_step(nat_train_log *log, int64_t step, double epoch, double loss, double lr, double grad_norm,
                        double images_per_s, double mem_mib, double peak_mib);
nat_status nat_train_log_eval(nat_train_log *log, int64_t step, double epoch, const char *weights, int64_t images, double top1,
                        double top5, double loss, double seconds);
nat_status nat_train_log_close(nat_train_log *log);

#endif
