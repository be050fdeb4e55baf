/* train/dist.h — data parallelism across processes (docs/distributed.md): one interface over the
 * communication engines, and what nat-train does with it.
 *
 *   engine  launch                                 transport         used for
 *   single  nat-train CONFIG                       none              today's one-process run
 *   mpi     mpirun -np N nat-train / srun          Open MPI (any)    CPU training (train/dist_mpi.c)
 *   tcp     RANK, WORLD_SIZE, MASTER_ADDR/PORT     TCP to rank 0     the NCCL id rendezvous without MPI
 *                                                                    (train/dist_tcp.c)
 *   nccl    one process per GPU, id over mpi/tcp   NCCL              CUDA training (train/dist_nccl.cu)
 *
 * Determinism: nat_dist_allreduce_f32 sums the ranks' buffers element by element in rank order,
 * ((b0 + b1) + b2) + ..., the order in which train.replicas adds its copies' gradients, so N ranks give
 * the bits N replicas give. It is a reduce-scatter followed by an all-gather made of point-to-point
 * messages (rank k owns chunk k and sums it from every rank's copy in rank order): the traffic of a
 * ring all-reduce, 2 (N-1)/N of the buffer per rank, without MPI_Allreduce's implementation-defined
 * order.
 *
 * Timeouts: every wait is bounded by the timeout given to nat_dist_init (train.dist_timeout). A peer
 * that does not answer in time is named ("rank 1 did not answer in 300 s") and the call returns
 * NAT_ERR_IO; the caller then aborts the job (nat_dist_abort), so no rank hangs on a dead one.
 *
 * Not thread-safe: one thread of a process talks through a nat_dist at a time.
 */
#ifndef NAT_TRAIN_DIST_H
#define NAT_TRAIN_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/dist_nccl.h"
#include "train/train.h"

typedef struct nat_dist nat_dist;

/* A backend: the primitives the engines implement (train/dist_mpi.c, train/dist_tcp.c). exchange
 * sends send[p] (send_bytes[p] bytes) to every peer p and receives recv[p] (recv_bytes[p]) from every
 * peer p; entries for the calling rank and zero-byte entries are skipped. It returns only when every
 * message has arrived, or with NAT_ERR_IO naming the peers that did not answer within timeout_s. */
typedef struct nat_dist_backend {
    const char *name;
    nat_status (*exchange)(void *impl, void *const *send, const size_t *send_bytes, void *const *recv,
                           const size_t *recv_bytes, double timeout_s);
    void (*abort)(void *impl, int code);
    void (*finalize)(void *impl);
} nat_dist_backend;

/* Which engine a process was launched under, from the launcher's environment: Open MPI's
 * OMPI_COMM_WORLD_SIZE or PMI_SIZE / PMIX_RANK (mpirun, srun) -> "mpi"; WORLD_SIZE and RANK -> "tcp";
 * neither -> "single". */
const char *nat_dist_detect(void);

/* Joins the job: MPI_Init under mpirun/srun, the TCP rendezvous under RANK/WORLD_SIZE, or a one-rank
 * job otherwise (every call below then does nothing). *out is owned by the caller (nat_dist_free).
 * Errors: an engine this build lacks (NAT_ERR_UNSUPPORTED, naming the CMake dependency), a failed
 * rendezvous (NAT_ERR_IO). */
nat_status nat_dist_init(nat_dist **out, double timeout_s);
/* Leaves the job (MPI_Finalize). NULL is ignored. */
void nat_dist_free(nat_dist *d);

int nat_dist_rank(const nat_dist *d);
int nat_dist_size(const nat_dist *d);
/* "single", "mpi", "tcp". */
const char *nat_dist_engine(const nat_dist *d);
double nat_dist_timeout(const nat_dist *d);

/* buf[0..n) on every rank becomes Σ_r buf_r in rank order (the same bits on every rank). */
nat_status nat_dist_allreduce_f32(nat_dist *d, float *buf, int64_t n);
/* all[r·bytes .. (r+1)·bytes) = rank r's `mine` (all holds size·bytes). */
nat_status nat_dist_allgather(nat_dist *d, const void *mine, void *all, size_t bytes);
/* buf on every rank = buf of rank `root`. */
nat_status nat_dist_broadcast(nat_dist *d, void *buf, size_t bytes, int root);
/* Returns when every rank has called it (or an error naming the ranks that did not in time). */
nat_status nat_dist_barrier(nat_dist *d);
/* Brings the whole job down (MPI_Abort; the TCP engine closes its sockets, which ends the peers' waits);
 * then exits with `code`. The message is printed first, prefixed with the rank. */
_Noreturn void nat_dist_abort(nat_dist *d, int code, const char *message);

/* Whether this build has the MPI engine (CMake found MPI); NCCL's: nat_nccl_built (train/dist_nccl.h). */
bool nat_dist_have_mpi(void);

/* Engines, for nat_dist_init and tests. Each returns NAT_ERR_UNSUPPORTED in a build without it. */
nat_status nat_dist_mpi_open(void **impl, const nat_dist_backend **be, int *rank, int *size);
nat_status nat_dist_tcp_open(void **impl, const nat_dist_backend **be, int *rank, int *size, double timeout_s);

/* ---- what nat-train does with it (train/dist.c) ---- */

/* Sums the gradients of `params` over the ranks in rank order, as train.replicas adds its copies':
 * every rank ends with Σ_r grad_r (a parameter without a gradient on every rank keeps none). Rank 0's
 * contribution is its gradient as it stands (it may hold earlier micro-batches of the step); the others
 * must have zeroed theirs before their backward (nat_dist_grads_begin). `losses` (count floats, may be
 * NULL) are summed the same way. `scratch` is grown as needed (realloc'ed; free it at the end). */
nat_status nat_dist_grads_reduce(nat_dist *d, nat_ctx *ctx, nat_tensor *const *params, int n_params, float **scratch,
                                 int64_t *scratch_cap);
/* Before a micro-batch's backward on ranks other than 0: zero the gradients, so that they send their
 * shard's alone. */
void nat_dist_grads_begin(nat_dist *d, nat_tensor *const *params, int n_params);
/* The NCCL communicator of the job's GPUs (train/dist_nccl.h): rank 0 makes the unique id, the job's
 * host engine (MPI or TCP) carries it to every rank, each joins on CUDA device `device`. */
nat_status nat_dist_nccl_open(nat_dist *d, int device, bool bf16, nat_nccl **out);
/* The CUDA device of this rank on its machine when the config says train.device = cuda: LOCAL_RANK (torchrun),
 * OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID (srun), else the rank, modulo `count` devices. */
int nat_dist_local_device(const nat_dist *d, int count);
/* The metrics of every rank's share of an evaluation, summed (counts exactly; the loss in rank order). */
nat_status nat_dist_metrics_reduce(nat_dist *d, nat_metrics *m);

#endif
