/* train/grad_buckets.h — which gradient buckets to send when, for an all-reduce that overlaps the
 * backward (the NCCL engine, train/dist_nccl.cu; docs/distributed.md).
 *
 * Every rank must issue the same collectives in the same order, whatever its own backward did (a rank
 * with no sample in a short last batch runs none). So the buckets are fixed once, from the parameter
 * list alone: parameters in reverse order (a model lists them in forward order, and the backward
 * finishes them about in reverse), cut into buckets of at most `cap` elements; a parameter larger than
 * cap is a bucket of its own (the engine sends it in slices). During a backward the engine reports each
 * parameter whose gradient is final (nat_ctx_watch_grads); bucket k is launched as soon as all its
 * parameters are final and buckets 0..k-1 have been launched. At the end every bucket not launched yet
 * is, in order. Pure bookkeeping: no device, testable on any machine (tests/test_dist.c).
 */
#ifndef NAT_TRAIN_GRAD_BUCKETS_H
#define NAT_TRAIN_GRAD_BUCKETS_H

#include <stdint.h>

#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nat_grad_buckets nat_grad_buckets;

/* Starts bucket k (its parameters: nat_grad_buckets_params). */
typedef nat_status (*nat_bucket_launch_fn)(void *user, int k);

/* numel[0..n): each parameter's element count (> 0); cap > 0. *out owned by the caller. */
nat_status nat_grad_buckets_new(const int64_t *numel, int n, int64_t cap, nat_grad_buckets **out);
void nat_grad_buckets_free(nat_grad_buckets *b);
int nat_grad_buckets_count(const nat_grad_buckets *b);
/* The parameter indices of bucket k (in bucket order: descending) and its element count. */
const int *nat_grad_buckets_params(const nat_grad_buckets *b, int k, int *count, int64_t *elems);
/* A new backward: nothing final, nothing launched. */
void nat_grad_buckets_begin(nat_grad_buckets *b);
/* Parameter i is final: launches (in order) every bucket that can go now. A parameter reported twice in
 * one backward, or an index out of range, is NAT_ERR_INTERNAL. */
nat_status nat_grad_buckets_ready(nat_grad_buckets *b, int i, nat_bucket_launch_fn launch, void *user);
/* The backward is over: launches, in order, the buckets not launched yet. */
nat_status nat_grad_buckets_finish(nat_grad_buckets *b, nat_bucket_launch_fn launch, void *user);
/* Buckets launched so far in this backward. */
int nat_grad_buckets_launched(const nat_grad_buckets *b);

#ifdef __cplusplus
}
#endif
#endif
