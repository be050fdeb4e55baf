/* train/train_replicas.h — data parallelism inside one process on the CPU (train.replicas).
 *
 * Why: a small network's ops (NAT on 28² Fashion-MNIST: 7×7 maps, C = 32) are too short for two OpenMP
 * threads to share — each op's fork/join costs as much as half its work — while two single-threaded
 * copies of the whole step run side by side at nearly twice the images/s. With N replicas a
 * micro-batch is cut into N consecutive shards; shard r runs forward, loss and backward on its own
 * model copy and context in its own thread with one OpenMP thread; the shards' losses are scaled by
 * their share of the batch, so the gradients add up to the whole batch's; replica r's gradients are
 * then added to the master's in replica order (the same bits on every run); the optimizer, EMA and
 * checkpoints see only the master. Before each micro-batch the copies take the master's weights.
 * Drop-path draws: shard 0 from the run's generator, shard r from a generator split off it per
 * micro-batch — a function of the run's state, so --resume stays exact.
 */
#ifndef NAT_TRAIN_REPLICAS_H
#define NAT_TRAIN_REPLICAS_H

#include "nat/nat.h"

#define NAT_MAX_REPLICAS 16

typedef struct nat_replicas {
    int n;                                 /* 1: not in use */
    nat_model *models[NAT_MAX_REPLICAS];   /* [0] the master (borrowed), [1..n) copies */
    nat_ctx *ctxs[NAT_MAX_REPLICAS];       /* [0] the run's context (borrowed), [1..n) own */
} nat_replicas;

/* n copies of `master` (n - 1 made here) with contexts like `ctx` (CPU, same precision). n = 1: nothing
 * to do. */
nat_status nat_replicas_init(nat_replicas *R, nat_model *master, nat_ctx *ctx, int n);
void nat_replicas_free(nat_replicas *R);

/* Forward, loss and backward of one micro-batch (x [b->n, c, h, w] with labels or soft targets) split
 * over the replicas; gradients accumulate into the master's parameters, each multiplied by `mul` (loss
 * scale / accumulation steps) like a plain step's. *loss: the batch's mean loss (unscaled). The
 * contexts are reset before returning. */
nat_status nat_replicas_step(nat_replicas *R, const nat_batch *b, float label_smoothing, nat_rng *rng, float mul,
                             float *loss);

#endif
