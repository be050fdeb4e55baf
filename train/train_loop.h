/* train/train_loop.h — nat-train's run: from a config to a trained, evaluated and checkpointed model.
 *
 * One optimizer step = accum_steps micro-batches of batch_size images (losses scaled by 1/accum_steps,
 * gradients accumulating), global gradient-norm clipping, the scheduled learning rate, the optimizer
 * update (weight decay only on the parameters without the no_decay flag), the EMA update. An epoch is
 * floor(batches / accum_steps) steps; the loader position is a function of the step, so a run resumed
 * from a checkpoint sees exactly the batches, RNG draws and therefore the losses of a run that never
 * stopped.
 *
 * The run directory gets config.cfg (the resolved config), train_log.csv and eval_log.csv (train_log.h),
 * and the checkpoints (train_checkpoint.h): every train.checkpoint_every steps, at the end, and when the
 * stop flag is raised (the run then returns with `interrupted` set).
 */
#ifndef NAT_TRAIN_LOOP_H
#define NAT_TRAIN_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "train/config.h"

typedef struct nat_train_opts {
    const char *resume;  /* checkpoint file or run directory to continue; NULL: a new run */
    const char *out_dir; /* run directory; NULL: log.dir, else the resumed checkpoint's directory, else
                            runs/<config file name>-<date>-<time> */
    volatile sig_atomic_t *stop; /* polled after every step and evaluation batch; NULL: never stops */
    /* Called after every optimizer step with its 1-based number and mean loss; may be NULL. */
    void (*on_step)(void *user, int64_t step, double loss);
    void *user;
    FILE *out;      /* config, summaries, evaluations; NULL: stdout */
    FILE *progress; /* the live progress line; NULL: stderr */
    bool dry_run;   /* build everything, print the config and the plan, train nothing */
    /* A new run (no resume) into a run directory that is not empty is refused, so an old run's logs and
     * checkpoints are not lost (nor taken for the new run's by pruning); overwrite deletes the old run's
     * checkpoints and logs instead (nat-train --overwrite). */
    bool overwrite;
} nat_train_opts;

typedef struct nat_train_result {
    int64_t steps, total_steps; /* steps done (over all runs) and planned */
    bool interrupted;           /* stopped by the flag; a checkpoint was written */
    bool evaluated;             /* a final evaluation ran */
    double top1, top5, loss;    /* final evaluation of the model */
    bool has_ema;
    double ema_top1, ema_top5, ema_loss;
    double best_top1;
    double seconds;      /* training time over all runs (evaluation excluded) */
    double images_per_s; /* training images per second over all runs */
    char run_dir[NAT_CFG_STR];
    char checkpoint[NAT_CFG_STR + 64]; /* the last checkpoint written */
} nat_train_result;

/* Runs the training the config describes (cfg is resolved in place: variant values, dataset size). res
 * may be NULL. */
nat_status nat_train(nat_config *cfg, const nat_train_opts *opts, nat_train_result *res);

#endif
