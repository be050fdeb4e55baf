/* train/dist_nccl.h — the NCCL engine of train/dist.h: gradients of one process per GPU summed with
 * ncclAllReduce (docs/distributed.md). Implemented in train/dist_nccl.cu (CUDA builds that find libnccl:
 * NAT_HAVE_NCCL); train/dist_nccl.c holds the stubs of other builds, which say what is missing.
 *
 * The communicator is made from a unique id that rank 0 creates and every rank receives through the
 * job's host engine (MPI, or the TCP rendezvous of RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT):
 * nat_dist_nccl_open in train/dist.c does that exchange.
 *
 * libnccl.so.2 is opened at run time by the first nat_nccl_unique_id / nat_nccl_new (a missing library is
 * NAT_ERR_UNSUPPORTED naming it), so the tools start on machines without NCCL.
 *
 * UNTESTED ON A GPU: written and compiled against NCCL 2.28 and CUDA 13 on a machine without one.
 */
#ifndef NAT_TRAIN_DIST_NCCL_H
#define NAT_TRAIN_DIST_NCCL_H

#include <stdbool.h>

#include "nat/autograd.h"
#include "nat/status.h"
#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NAT_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct nat_nccl nat_nccl;

/* Whether this build has the NCCL engine. */
bool nat_nccl_built(void);
/* Rank 0's part: a fresh unique id (ncclGetUniqueId) into id. */
nat_status nat_nccl_unique_id(unsigned char id[NAT_NCCL_ID_BYTES]);
/* Joins the communicator of `size` ranks named by id as `rank`, on CUDA device `device`, with a side
 * stream of its own for the reductions. bf16: gradients travel as bf16 (each rank's rounded before the
 * sum, the sum rounded once more; half the bytes). Waits longer than timeout_s abort the communicator
 * (ncclCommAbort) and fail naming the wait, so no rank hangs on a dead one. *out owned by the caller. */
nat_status nat_nccl_new(const unsigned char id[NAT_NCCL_ID_BYTES], int rank, int size, int device, bool bf16,
                        double timeout_s, nat_nccl **out);
void nat_nccl_free(nat_nccl *n);
/* Gradients of params[0..count) (f32, on the device; the list is copied, the tensors borrowed) are what
 * the all-reduces sum, in buckets fixed from this list (train/grad_buckets.h): the same list on every
 * rank gives the same collectives in the same order. */
nat_status nat_nccl_plan(nat_nccl *n, nat_tensor *const *params, int count);
/* Before a backward whose gradients are to be summed. */
nat_status nat_nccl_begin(nat_nccl *n);
/* A nat_grad_ready_fn (include/nat/autograd.h; user: the nat_nccl): params[i]'s gradient is final on
 * nat's stream. Launches the buckets that may go, on the side stream, while the backward goes on.
 * Outside begin/finish it does nothing. */
nat_status nat_nccl_grad_ready(void *user, int i);
/* After the backward: launches the buckets left (a parameter without a gradient sends zeros and gets
 * the sum) and returns when every sum is in place; every rank then holds the same gradients. */
nat_status nat_nccl_finish(nat_nccl *n);

#ifdef __cplusplus
}
#endif
#endif
