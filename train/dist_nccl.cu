/* train/dist_nccl.cu — train/dist_nccl.h on NCCL: one communicator per process (one process per GPU),
 * gradient buckets packed, all-reduced (sum) and unpacked on a side stream of its own.
 *
 * Ordering against nat's work: nat queues every op of a device on its one stream (core/cuda/device.cu),
 * which train/ cannot see; nat_cuda_synchronize waits for it, so the buckets read finished gradients and
 * nat's next ops (clipping, the optimizer) are queued only after the sums are back (the host waits for
 * the side stream). Overlap with the backward itself needs a "gradient ready" hook in core/autograd.c
 * (docs/distributed.md, pending). The buckets are queued back to back on the side stream (pack, reduce,
 * unpack; the host waits once, at the end); two buffers alternate so that a second side stream can later
 * pack one bucket while the other is on the wire.
 *
 * libnccl is opened at run time (dlopen "libnccl.so.2", the ABI of every NCCL 2.x), not linked: nat-train
 * then starts on machines without NCCL (one GPU, the CPU), and staging it for a GPU machine does not
 * carry NCCL's 200 MB. The table of its entry points is the one process-wide state here, filled once.
 *
 * UNTESTED ON A GPU: compiled against NCCL 2.28 / CUDA 13 on a machine without one. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nat/cuda.h"
#include "train/dist_nccl.h"

static_assert(sizeof(ncclUniqueId) == NAT_NCCL_ID_BYTES, "NAT_NCCL_ID_BYTES must be sizeof(ncclUniqueId)");

#define BUCKET_BYTES ((size_t)32 << 20)

struct nat_nccl {
    int device, rank, size;
    bool bf16;
    double timeout;
    ncclComm_t comm;
    cudaStream_t side;
    void *bucket[2];     /* BUCKET_BYTES each */
    cudaEvent_t free_[2]; /* bucket b may be packed again */
};

#define CUDA_TRY(call)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess)                                                                                         \
            return nat_error(NAT_ERR_CUDA, "distributed (nccl): %s: %s (%s:%d)", #call, cudaGetErrorString(e_),       \
                             __FILE__, __LINE__);                                                                      \
    } while (0)
#define NCCL_TRY(call)                                                                                                 \
    do {                                                                                                               \
        ncclResult_t r_ = (call);                                                                                      \
        if (r_ != ncclSuccess && r_ != ncclInProgress)                                                                 \
            return nat_error(NAT_ERR_CUDA, "distributed (nccl): %s: %s (%s:%d)", #call, nccl.error_string(r_),       \
                             __FILE__, __LINE__);                                                                      \
    } while (0)

/* NCCL's entry points, from libnccl.so.2 (nccl.h gives their types). */
static struct {
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRankConfig) init_rank_config;
    decltype(&ncclCommGetAsyncError) get_async_error;
    decltype(&ncclCommAbort) abort;
    decltype(&ncclCommDestroy) destroy;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclGetErrorString) error_string;
    char error[512]; /* why loading failed; "" when it did not */
} nccl;
static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;

static void nccl_load(void)
{
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(nccl.error, sizeof nccl.error, "%s", dlerror());
        return;
    }
    struct {
        void **slot;
        const char *name;
    } syms[] = {{(void **)&nccl.get_unique_id, "ncclGetUniqueId"},
                {(void **)&nccl.init_rank_config, "ncclCommInitRankConfig"},
                {(void **)&nccl.get_async_error, "ncclCommGetAsyncError"},
                {(void **)&nccl.abort, "ncclCommAbort"},
                {(void **)&nccl.destroy, "ncclCommDestroy"},
                {(void **)&nccl.all_reduce, "ncclAllReduce"},
                {(void **)&nccl.error_string, "ncclGetErrorString"}};
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(nccl.error, sizeof nccl.error, "libnccl.so.2 has no %s (NCCL older than 2.14?)", syms[i].name);
            return;
        }
}

static nat_status nccl_ready(void)
{
    pthread_once(&nccl_once, nccl_load);
    if (nccl.error[0])
        return nat_error(NAT_ERR_UNSUPPORTED, "distributed (nccl): cannot load NCCL: %s (install it, or add the "
                                              "directory of libnccl.so.2 to LD_LIBRARY_PATH)", nccl.error);
    return NAT_OK;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

__global__ void to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

__global__ void from_bf16(const __nv_bfloat16 *__restrict__ x, float *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

static unsigned grid(size_t n) { return (unsigned)(n / 256 + 1 < 4096 ? n / 256 + 1 : 4096); }

/* Waits for the side stream, polling NCCL's asynchronous error and the timeout: a dead peer makes NCCL
 * wait forever, so past the timeout the communicator is aborted and the wait fails. */
static nat_status wait_side(nat_nccl *n, const char *what)
{
    const double deadline = now() + n->timeout;
    for (;;) {
        cudaError_t e = cudaStreamQuery(n->side);
        if (e == cudaSuccess)
            return NAT_OK;
        if (e != cudaErrorNotReady)
            return nat_error(NAT_ERR_CUDA, "distributed (nccl): %s: %s", what, cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        nccl.get_async_error(n->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress) {
            nccl.abort(n->comm);
            n->comm = NULL;
            return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: %s failed: %s (a peer died?)", n->rank, what,
                             nccl.error_string(async));
        }
        if (now() > deadline) {
            nccl.abort(n->comm);
            n->comm = NULL;
            return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: %s did not complete within %g s "
                                         "(train.dist_timeout): a rank is dead, stopped or far slower; aborting the job",
                             n->rank, what, n->timeout);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

extern "C" bool nat_nccl_built(void) { return true; }

extern "C" nat_status nat_nccl_unique_id(unsigned char id[NAT_NCCL_ID_BYTES])
{
    NAT_TRY(nccl_ready());
    ncclUniqueId u;
    NCCL_TRY(nccl.get_unique_id(&u));
    memcpy(id, &u, sizeof u);
    return NAT_OK;
}

extern "C" void nat_nccl_free(nat_nccl *n)
{
    if (!n)
        return;
    cudaSetDevice(n->device);
    if (n->side)
        cudaStreamSynchronize(n->side);
    for (int b = 0; b < 2; b++) {
        if (n->free_[b])
            cudaEventDestroy(n->free_[b]);
        if (n->bucket[b])
            cudaFree(n->bucket[b]);
    }
    if (n->side)
        cudaStreamDestroy(n->side);
    if (n->comm)
        nccl.destroy(n->comm);
    free(n);
}

static nat_status make(nat_nccl *n, const unsigned char id[NAT_NCCL_ID_BYTES])
{
    CUDA_TRY(cudaSetDevice(n->device));
    CUDA_TRY(cudaStreamCreateWithFlags(&n->side, cudaStreamNonBlocking));
    for (int b = 0; b < 2; b++) {
        CUDA_TRY(cudaMalloc(&n->bucket[b], BUCKET_BYTES));
        CUDA_TRY(cudaEventCreateWithFlags(&n->free_[b], cudaEventDisableTiming));
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    /* nonblocking: the init itself is bounded by the timeout too */
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    NCCL_TRY(nccl.init_rank_config(&n->comm, n->size, u, n->rank, &cfg));
    const double deadline = now() + n->timeout;
    for (;;) {
        ncclResult_t st = ncclInProgress;
        NCCL_TRY(nccl.get_async_error(n->comm, &st));
        if (st == ncclSuccess)
            return NAT_OK;
        if (st != ncclInProgress)
            return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: communicator init failed: %s", n->rank,
                             nccl.error_string(st));
        if (now() > deadline)
            return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: communicator init did not complete within %g s",
                             n->rank, n->timeout);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

extern "C" nat_status nat_nccl_new(const unsigned char id[NAT_NCCL_ID_BYTES], int rank, int size, int device, bool bf16,
                                   double timeout_s, nat_nccl **out)
{
    *out = NULL;
    NAT_TRY(nccl_ready());
    nat_nccl *n = (nat_nccl *)calloc(1, sizeof *n);
    if (!n)
        return nat_error(NAT_ERR_OOM, "distributed (nccl): out of memory");
    n->device = device, n->rank = rank, n->size = size, n->bf16 = bf16, n->timeout = timeout_s;
    nat_status s = make(n, id);
    if (s != NAT_OK) {
        if (n->comm)
            nccl.abort(n->comm);
        n->comm = NULL;
        nat_nccl_free(n);
        return s;
    }
    *out = n;
    return NAT_OK;
}

/* One bucket: grads [first, last) with element offsets, packed into bucket b, reduced, unpacked. */
static nat_status bucket_run(nat_nccl *n, int b, nat_tensor *const *grads, int first, int last, size_t elems)
{
    const size_t esz = n->bf16 ? 2 : 4;
    CUDA_TRY(cudaStreamWaitEvent(n->side, n->free_[b], 0)); /* its previous unpack is done */
    size_t at = 0;
    for (int i = first; i < last; i++) {
        const size_t m = (size_t)nat_tensor_numel(grads[i]);
        const float *g = (const float *)nat_tensor_data(grads[i]);
        if (n->bf16)
            to_bf16<<<grid(m), 256, 0, n->side>>>(g, (__nv_bfloat16 *)n->bucket[b] + at, m);
        else
            CUDA_TRY(cudaMemcpyAsync((float *)n->bucket[b] + at, g, m * esz, cudaMemcpyDeviceToDevice, n->side));
        at += m;
    }
    CUDA_TRY(cudaGetLastError());
    NCCL_TRY(nccl.all_reduce(n->bucket[b], n->bucket[b], elems, n->bf16 ? ncclBfloat16 : ncclFloat32, ncclSum, n->comm,
                           n->side));
    at = 0;
    for (int i = first; i < last; i++) {
        const size_t m = (size_t)nat_tensor_numel(grads[i]);
        float *g = (float *)nat_tensor_data(grads[i]);
        if (n->bf16)
            from_bf16<<<grid(m), 256, 0, n->side>>>((const __nv_bfloat16 *)n->bucket[b] + at, g, m);
        else
            CUDA_TRY(cudaMemcpyAsync(g, (float *)n->bucket[b] + at, m * esz, cudaMemcpyDeviceToDevice, n->side));
        at += m;
    }
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaEventRecord(n->free_[b], n->side));
    return NAT_OK;
}

extern "C" nat_status nat_nccl_allreduce(nat_nccl *n, nat_tensor *const *grads, int count)
{
    if (!n->comm)
        return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: the communicator was aborted", n->rank);
    NAT_TRY(nat_cuda_synchronize(n->device)); /* the backward has written every gradient */
    CUDA_TRY(cudaSetDevice(n->device));
    const size_t esz = n->bf16 ? 2 : 4, cap = BUCKET_BYTES / esz;
    /* Buckets in parameter order; a gradient larger than a bucket goes alone, in pieces. */
    int b = 0, first = 0;
    size_t elems = 0;
    for (int i = 0; i <= count; i++) {
        const size_t m = i < count ? (size_t)nat_tensor_numel(grads[i]) : 0;
        if (i < count && m > cap) { /* flush, then this one in slices of the bucket's size */
            if (i > first) {
                NAT_TRY(bucket_run(n, b, grads, first, i, elems));
                b ^= 1;
            }
            float *g = (float *)nat_tensor_data(grads[i]);
            for (size_t off = 0; off < m; off += cap) {
                const size_t k = m - off < cap ? m - off : cap;
                CUDA_TRY(cudaStreamWaitEvent(n->side, n->free_[b], 0));
                if (n->bf16)
                    to_bf16<<<grid(k), 256, 0, n->side>>>(g + off, (__nv_bfloat16 *)n->bucket[b], k);
                else
                    CUDA_TRY(cudaMemcpyAsync(n->bucket[b], g + off, k * esz, cudaMemcpyDeviceToDevice, n->side));
                NCCL_TRY(nccl.all_reduce(n->bucket[b], n->bucket[b], k, n->bf16 ? ncclBfloat16 : ncclFloat32, ncclSum,
                                       n->comm, n->side));
                if (n->bf16)
                    from_bf16<<<grid(k), 256, 0, n->side>>>((const __nv_bfloat16 *)n->bucket[b], g + off, k);
                else
                    CUDA_TRY(cudaMemcpyAsync(g + off, n->bucket[b], k * esz, cudaMemcpyDeviceToDevice, n->side));
                CUDA_TRY(cudaEventRecord(n->free_[b], n->side));
                b ^= 1;
            }
            first = i + 1;
            elems = 0;
            continue;
        }
        if (i == count || elems + m > cap) {
            if (i > first) {
                NAT_TRY(bucket_run(n, b, grads, first, i, elems));
                b ^= 1;
            }
            first = i;
            elems = 0;
        }
        elems += m;
    }
    return wait_side(n, "the gradient all-reduce");
}
