/* train/train_eval.h — one evaluation pass of a model over an evaluation loader (train_data.h), with
 * gradients off and dropout/drop-path off, into classification metrics. */
#ifndef NAT_TRAIN_EVAL_H
#define NAT_TRAIN_EVAL_H

#include <signal.h>

#include "nat/autograd.h"
#include "nat/data.h"
#include "nat/model.h"
#include "train/train_metrics.h"

/* Repositions L to its first batch, runs m on every batch in ctx (recording nothing; ctx is reset after
 * each batch and its grad setting restored) and accumulates into met (reset first). stop (may be NULL)
 * is polled between batches: when it is set the pass ends early and *complete is false. *seconds (may be
 * NULL) gets the wall time. */
nat_status nat_evaluate(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                        double *seconds, bool *complete);

#endif
