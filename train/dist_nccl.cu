/* train/dist_nccl.cu — train/dist_nccl.h on NCCL: one communicator per process (one process per GPU),
 * gradient buckets packed, all-reduced (sum) and unpacked on a side stream of its own, while the
 * backward goes on.
 *
 * Overlap: nat-train registers nat_nccl_grad_ready with nat_ctx_watch_grads (core/autograd.c), which
 * calls it during the backward as soon as no node left on the tape reads a parameter. The buckets are
 * fixed once from the parameter list (train/grad_buckets.h: reversed list, BUCKET_BYTES each), so every
 * rank issues the same all-reduces in the same order whatever its own backward did; a bucket is
 * launched when all its parameters are final and the buckets before it have gone. Launching records an
 * event on nat's stream (core/cuda/common.cuh: every op of a device is queued there) and makes the side
 * stream wait for it, so the packing reads finished gradients while nat's stream goes on with the rest
 * of the backward. The backward never touches a parameter's gradient again once it is final, and nat's
 * next ops on them (clipping, the optimizer) are queued only after nat_nccl_finish has waited for the
 * side stream. Buckets are queued back to back on the side stream (pack, reduce, unpack); two staging
 * buffers alternate.
 *
 * libnccl is opened at run time (dlopen "libnccl.so.2", the ABI of every NCCL 2.x), not linked: nat-train
 * then starts on machines without NCCL (one GPU, the CPU), and staging it for a GPU machine does not
 * carry NCCL's 200 MB. The table of its entry points is the one process-wide state here, filled once.
 *
 * UNTESTED ON A GPU: compiled against NCCL 2.28 / CUDA 13 on a machine without one; the bucket schedule
 * and the gradient-ready calls it relies on are tested on the CPU (tests/test_grad_buckets.c,
 * tests/test_grad_watch.c). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cuda/common.cuh" /* nat's stream of the device */
#include "nat/cuda.h"
#include "train/dist_nccl.h"
#include "train/grad_buckets.h"

static_assert(sizeof(ncclUniqueId) == NAT_NCCL_ID_BYTES, "NAT_NCCL_ID_BYTES must be sizeof(ncclUniqueId)");

/* 25 MiB, the size data-parallel trainers commonly use: small enough that the first buckets leave while
 * most of the backward is still to run, large enough for NCCL to reach its bandwidth. */
#define BUCKET_BYTES ((size_t)25 << 20)

struct nat_nccl {
    int device, rank, size;
    bool bf16;
    double timeout;
    ncclComm_t comm;
    cudaStream_t side;
    void *bucket[2];      /* BUCKET_BYTES each */
    cudaEvent_t free_[2]; /* bucket b may be packed again */
    cudaEvent_t ready;    /* recorded on nat's stream when a bucket's gradients are final */
    int staging;          /* the staging buffer of the next launch */
    nat_tensor **params;  /* nat_nccl_plan's (borrowed) */
    int n_params;
    nat_grad_buckets *plan;
    bool in_backward;     /* between nat_nccl_begin and nat_nccl_finish */
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
    if (n->ready)
        cudaEventDestroy(n->ready);
    if (n->side)
        cudaStreamDestroy(n->side);
    if (n->comm)
        nccl.destroy(n->comm);
    nat_grad_buckets_free(n->plan);
    free(n->params);
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
    CUDA_TRY(cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming));
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

/* An NCCL call on the nonblocking communicator may return ncclInProgress; the next call may only be
 * made once it has completed its enqueueing (NCCL's nonblocking rule), so wait for that, bounded. */
static nat_status nccl_enqueued(nat_nccl *n, ncclResult_t r, const char *what)
{
    const double deadline = now() + n->timeout;
    while (r == ncclInProgress) {
        if (now() > deadline) {
            nccl.abort(n->comm);
            n->comm = NULL;
            return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: %s was not enqueued within %g s", n->rank, what,
                             n->timeout);
        }
        nccl.get_async_error(n->comm, &r);
    }
    if (r != ncclSuccess)
        return nat_error(NAT_ERR_CUDA, "distributed (nccl): rank %d: %s: %s", n->rank, what, nccl.error_string(r));
    return NAT_OK;
}

static nat_status reduce_staged(nat_nccl *n, int b, size_t elems)
{
    return nccl_enqueued(n,
                         nccl.all_reduce(n->bucket[b], n->bucket[b], elems, n->bf16 ? ncclBfloat16 : ncclFloat32,
                                         ncclSum, n->comm, n->side),
                         "ncclAllReduce");
}

/* Copies (or rounds to bf16) m floats of g into staging buffer b at element `at`, or back when `back`. */
static nat_status stage(nat_nccl *n, int b, size_t at, float *g, size_t m, bool back)
{
    if (n->bf16) {
        __nv_bfloat16 *h = (__nv_bfloat16 *)n->bucket[b] + at;
        if (back)
            from_bf16<<<grid(m), 256, 0, n->side>>>(h, g, m);
        else
            to_bf16<<<grid(m), 256, 0, n->side>>>(g, h, m);
        CUDA_TRY(cudaGetLastError());
    } else {
        float *f = (float *)n->bucket[b] + at;
        CUDA_TRY(cudaMemcpyAsync(back ? g : f, back ? f : g, m * sizeof(float), cudaMemcpyDeviceToDevice, n->side));
    }
    return NAT_OK;
}

/* The gradients of params idx[0..cnt) packed one after another into staging buffer b, or back. */
static nat_status stage_bucket(nat_nccl *n, int b, const int *idx, int cnt, bool back)
{
    size_t at = 0;
    for (int j = 0; j < cnt; j++) {
        nat_tensor *gt = n->params[idx[j]]->grad;
        const size_t m = (size_t)nat_tensor_numel(gt);
        NAT_TRY(stage(n, b, at, (float *)nat_tensor_data(gt), m, back));
        at += m;
    }
    return NAT_OK;
}

/* Bucket k of the plan, on the side stream after what nat's stream has queued so far. */
static nat_status launch_bucket(void *user, int k)
{
    nat_nccl *n = (nat_nccl *)user;
    int cnt;
    int64_t elems;
    const int *idx = nat_grad_buckets_params(n->plan, k, &cnt, &elems);
    for (int j = 0; j < cnt; j++) { /* a parameter this rank's backward left without a gradient sends zeros */
        nat_tensor *t = n->params[idx[j]], *gt;
        NAT_TRY(nat_grad_get(NULL, t, &gt)); /* persistent leaves: the context is not used */
        if (!gt)
            return nat_error(NAT_ERR_INTERNAL, "distributed (nccl): parameter %s does not require a gradient",
                             t->name ? t->name : "?");
    }
    CUDA_TRY(cudaSetDevice(n->device));
    nat_cuda_bundle *hb;
    NAT_TRY(nat_cuda_bundle_get(n->device, &hb));
    CUDA_TRY(cudaEventRecord(n->ready, hb->stream));
    CUDA_TRY(cudaStreamWaitEvent(n->side, n->ready, 0));
    const size_t cap = BUCKET_BYTES / (n->bf16 ? 2 : 4);
    if ((size_t)elems > cap) { /* one parameter larger than a bucket: in slices of the buffer's size */
        float *g = (float *)nat_tensor_data(n->params[idx[0]]->grad);
        for (size_t off = 0; off < (size_t)elems; off += cap) {
            const size_t m = (size_t)elems - off < cap ? (size_t)elems - off : cap;
            const int b = n->staging;
            n->staging ^= 1;
            CUDA_TRY(cudaStreamWaitEvent(n->side, n->free_[b], 0));
            NAT_TRY(stage(n, b, 0, g + off, m, false));
            NAT_TRY(reduce_staged(n, b, m));
            NAT_TRY(stage(n, b, 0, g + off, m, true));
            CUDA_TRY(cudaEventRecord(n->free_[b], n->side));
        }
        return NAT_OK;
    }
    const int b = n->staging;
    n->staging ^= 1;
    CUDA_TRY(cudaStreamWaitEvent(n->side, n->free_[b], 0)); /* its previous unpack is done */
    NAT_TRY(stage_bucket(n, b, idx, cnt, false));
    NAT_TRY(reduce_staged(n, b, (size_t)elems));
    NAT_TRY(stage_bucket(n, b, idx, cnt, true));
    CUDA_TRY(cudaEventRecord(n->free_[b], n->side));
    return NAT_OK;
}

extern "C" nat_status nat_nccl_plan(nat_nccl *n, nat_tensor *const *params, int count)
{
    int64_t *numel = (int64_t *)malloc((size_t)(count > 0 ? count : 1) * sizeof *numel);
    nat_tensor **copy = (nat_tensor **)malloc((size_t)(count > 0 ? count : 1) * sizeof *copy);
    if (!numel || !copy) {
        free(numel), free(copy);
        return nat_error(NAT_ERR_OOM, "distributed (nccl): out of memory");
    }
    for (int i = 0; i < count; i++) {
        copy[i] = params[i];
        numel[i] = nat_tensor_numel(params[i]);
    }
    nat_grad_buckets *plan;
    nat_status s = nat_grad_buckets_new(numel, count, (int64_t)(BUCKET_BYTES / (n->bf16 ? 2 : 4)), &plan);
    free(numel);
    if (s != NAT_OK) {
        free(copy);
        return s;
    }
    nat_grad_buckets_free(n->plan);
    free(n->params);
    n->plan = plan, n->params = copy, n->n_params = count;
    return NAT_OK;
}

extern "C" nat_status nat_nccl_begin(nat_nccl *n)
{
    if (!n->comm)
        return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: the communicator was aborted", n->rank);
    if (!n->plan)
        return nat_error(NAT_ERR_INTERNAL, "distributed (nccl): nat_nccl_begin before nat_nccl_plan");
    nat_grad_buckets_begin(n->plan);
    n->in_backward = true;
    return NAT_OK;
}

extern "C" nat_status nat_nccl_grad_ready(void *user, int i)
{
    nat_nccl *n = (nat_nccl *)user;
    if (!n->in_backward) /* a backward outside a data-parallel step (none in nat-train today) */
        return NAT_OK;
    return nat_grad_buckets_ready(n->plan, i, launch_bucket, n);
}

extern "C" nat_status nat_nccl_finish(nat_nccl *n)
{
    if (!n->in_backward)
        return nat_error(NAT_ERR_INTERNAL, "distributed (nccl): nat_nccl_finish without nat_nccl_begin");
    n->in_backward = false;
    if (!n->comm)
        return nat_error(NAT_ERR_IO, "distributed (nccl): rank %d: the communicator was aborted", n->rank);
    NAT_TRY(nat_grad_buckets_finish(n->plan, launch_bucket, n));
    return wait_side(n, "the gradient all-reduce");
}
