/* core/cuda/conv.cu — 2-D convolution through cuDNN: forward, backward data, backward filter, NCHW
 * f32, cross-correlation (PyTorch's conv2d). The algorithm of each (device, shape, TF32) and direction is
 * chosen once with cudnnFind*Algorithm and kept in a small table; workspaces come from the caching
 * allocator, so a steady-state step allocates nothing. With TF32 off the descriptors ask for
 * CUDNN_FMA_MATH (no tensor-core rounding), so results match the CPU to f32 accuracy.
 *
 * Uses cuDNN's v8 "legacy" convolution API, still present (deprecated) in cuDNN 9.
 *
 * Autocast (the *_lowp entry points): operands are rounded into 2-byte scratch (core/cuda/half.cu) and
 * cuDNN runs its PSEUDO_BFLOAT16 / PSEUDO_HALF configuration: bf16 / half tensors, float compute,
 * tensor-op math. That API takes x, w and y of one type, so the result lands in 2-byte scratch too and
 * is widened into the f32 output (overwritten forward, accumulated backward). The precision is part of
 * the algorithm cache key. */
#include <pthread.h>
#include <string.h>

#include "core/cuda/common.cuh"
#include "nat/autograd.h" /* nat_precision */

enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2 };

typedef struct algo_key {
    int dev, dir, tf32, prec;
    int64_t geom[13];
} algo_key;

typedef struct algo_entry {
    algo_key key;
    int algo;
    size_t workspace;
    bool used;
} algo_entry;

#define ALGO_CACHE 128
static algo_entry algo_cache[ALGO_CACHE];
static int algo_next;
static pthread_mutex_t algo_lock = PTHREAD_MUTEX_INITIALIZER;

static algo_key key_of(int dev, int dir, bool tf32, int prec, const nat_cuda_conv_geom *g)
{
    algo_key k;
    memset(&k, 0, sizeof k);
    k.dev = dev, k.dir = dir, k.tf32 = tf32, k.prec = prec;
    int64_t v[13] = {g->N, g->C, g->H, g->W, g->O, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->Ho, g->Wo};
    memcpy(k.geom, v, sizeof v);
    return k;
}

static bool cache_find(const algo_key *k, int *algo, size_t *ws)
{
    bool hit = false;
    pthread_mutex_lock(&algo_lock);
    for (int i = 0; i < ALGO_CACHE && !hit; i++)
        if (algo_cache[i].used && memcmp(&algo_cache[i].key, k, sizeof *k) == 0) {
            *algo = algo_cache[i].algo;
            *ws = algo_cache[i].workspace;
            hit = true;
        }
    pthread_mutex_unlock(&algo_lock);
    return hit;
}

static void cache_put(const algo_key *k, int algo, size_t ws)
{
    pthread_mutex_lock(&algo_lock);
    algo_entry *e = &algo_cache[algo_next];
    algo_next = (algo_next + 1) % ALGO_CACHE;
    e->key = *k, e->algo = algo, e->workspace = ws, e->used = true;
    pthread_mutex_unlock(&algo_lock);
}

/* Descriptors for one call, destroyed by the destructor on every return path. */
struct conv_descs {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t conv = nullptr;
    ~conv_descs()
    {
        if (x)
            cudnnDestroyTensorDescriptor(x);
        if (y)
            cudnnDestroyTensorDescriptor(y);
        if (w)
            cudnnDestroyFilterDescriptor(w);
        if (conv)
            cudnnDestroyConvolutionDescriptor(conv);
    }
};

static nat_status make_descs(conv_descs *d, const nat_cuda_conv_geom *g, bool tf32, int prec)
{
    cudnnDataType_t dt = prec == NAT_PREC_BF16 ? CUDNN_DATA_BFLOAT16 : prec == NAT_PREC_F16 ? CUDNN_DATA_HALF
                                                                                             : CUDNN_DATA_FLOAT;
    const int64_t all[13] = {g->N, g->C, g->H, g->W, g->O, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->Ho, g->Wo};
    for (int i = 0; i < 13; i++)
        if (all[i] > INT32_MAX)
            return nat_error(NAT_ERR_UNSUPPORTED, "cuda conv2d: a size (%lld) exceeds cuDNN's int", (long long)all[i]);
    NAT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x));
    NAT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->y));
    NAT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d->w));
    NAT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv));
    NAT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, dt, (int)g->N, (int)g->C, (int)g->H,
                                               (int)g->W));
    NAT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, dt, (int)g->N, (int)g->O, (int)g->Ho,
                                               (int)g->Wo));
    NAT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d->w, dt, CUDNN_TENSOR_NCHW, (int)g->O, (int)g->C, (int)g->kh,
                                               (int)g->kw));
    NAT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d->conv, (int)g->ph, (int)g->pw, (int)g->sh, (int)g->sw, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* 2-byte data wants tensor cores; f32 keeps exact FMA math unless TF32 is on. */
    NAT_CUDNN_CHECK(cudnnSetConvolutionMathType(d->conv, tf32 || prec != NAT_PREC_F32 ? CUDNN_TENSOR_OP_MATH
                                                                                      : CUDNN_FMA_MATH));
    int n, c, h, w;
    NAT_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w));
    if (n != g->N || c != g->O || h != g->Ho || w != g->Wo)
        return nat_error(NAT_ERR_INTERNAL, "cuda conv2d: cuDNN's output [%d, %d, %d, %d] differs from nat's [%lld, %lld, %lld, %lld]",
                         n, c, h, w, (long long)g->N, (long long)g->O, (long long)g->Ho, (long long)g->Wo);
    return NAT_OK;
}

/* Picks (once per key) the fastest algorithm cudnnFind reports as usable. */
static nat_status choose(nat_cuda_bundle *hb, const conv_descs *d, int dir, const algo_key *k, int *algo, size_t *ws)
{
    if (cache_find(k, algo, ws))
        return NAT_OK;
    int got = 0;
    bool found = false;
    if (dir == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        NAT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(hb->cudnn, d->x, d->w, d->conv, d->y,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
        for (int i = 0; i < got && !found; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS)
                *algo = (int)perf[i].algo, *ws = perf[i].memory, found = true;
    } else if (dir == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        NAT_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(hb->cudnn, d->w, d->y, d->conv, d->x,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
        for (int i = 0; i < got && !found; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS)
                *algo = (int)perf[i].algo, *ws = perf[i].memory, found = true;
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        NAT_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(hb->cudnn, d->x, d->y, d->conv, d->w,
                                                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
        for (int i = 0; i < got && !found; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS)
                *algo = (int)perf[i].algo, *ws = perf[i].memory, found = true;
    }
    if (!found)
        return nat_error(NAT_ERR_CUDA, "cuda conv2d: cuDNN found no usable algorithm (%d tried) for direction %d",
                         got, dir);
    cache_put(k, *algo, *ws);
    return NAT_OK;
}

/* Element counts of a direction's two operands and its output. */
static void counts_of(int dir, const nat_cuda_conv_geom *g, int64_t n[3])
{
    int64_t nx = g->N * g->C * g->H * g->W, nw = g->O * g->C * g->kh * g->kw, ny = g->N * g->O * g->Ho * g->Wo;
    if (dir == DIR_FWD)
        n[0] = nx, n[1] = nw, n[2] = ny; /* x, w -> y */
    else if (dir == DIR_BWD_DATA)
        n[0] = nw, n[1] = ny, n[2] = nx; /* w, gy -> gx */
    else
        n[0] = nx, n[1] = ny, n[2] = nw; /* x, gy -> gw */
}

static nat_status run(int dev, int dir, int prec, const nat_cuda_conv_geom *g, const float *a, const float *b,
                      float *out)
{
    NAT_CUDA_ENTER(dev);
    NAT_TRY(nat_cuda_bundle_cudnn(hb));
    conv_descs d;
    NAT_TRY(make_descs(&d, g, hb->tf32, prec));
    algo_key k = key_of(dev, dir, hb->tf32, prec, g);
    int algo = 0;
    size_t ws = 0;
    NAT_TRY(choose(hb, &d, dir, &k, &algo, &ws));
    nat_device nd = {NAT_DEV_CUDA, dev};
    /* Autocast: a, b rounded into 2-byte scratch; cuDNN writes its 2-byte result there too (beta 0),
     * widened into `out` below. */
    const bool lowp = prec != NAT_PREC_F32;
    int64_t n[3] = {0, 0, 0};
    size_t hbytes = 0;
    void *hblock = nullptr;
    float *f32_out = out;
    if (lowp) {
        counts_of(dir, g, n);
        hbytes = (size_t)(n[0] + n[1] + n[2]) * 2;
        NAT_TRY(nat_mem_alloc(nd, hbytes, &hblock));
        char *ha = (char *)hblock, *hb2 = ha + (size_t)n[0] * 2, *hout = hb2 + (size_t)n[1] * 2;
        nat_status rs = nat_cuda_round_to(dev, prec, a, ha, n[0]);
        if (rs == NAT_OK)
            rs = nat_cuda_round_to(dev, prec, b, hb2, n[1]);
        if (rs != NAT_OK) {
            nat_mem_free(nd, hblock, hbytes);
            return rs;
        }
        a = (const float *)(const void *)ha; /* cuDNN reads them through void pointers */
        b = (const float *)(const void *)hb2;
        out = (float *)(void *)hout;
    }
    void *work = nullptr;
    if (ws) {
        nat_status as = nat_mem_alloc(nd, ws, &work);
        if (as != NAT_OK) {
            nat_mem_free(nd, hblock, hbytes);
            return as;
        }
    }
    const float one = 1.0f, zero = 0.0f;
    const float *acc = lowp ? &zero : &one; /* backward accumulates, except into the 2-byte scratch */
    cudnnStatus_t e;
    const char *call;
    if (dir == DIR_FWD) {
        call = "cudnnConvolutionForward";
        e = cudnnConvolutionForward(hb->cudnn, &one, d.x, a, d.w, b, d.conv, (cudnnConvolutionFwdAlgo_t)algo, work, ws,
                                    &zero, d.y, out);
    } else if (dir == DIR_BWD_DATA) {
        call = "cudnnConvolutionBackwardData";
        e = cudnnConvolutionBackwardData(hb->cudnn, &one, d.w, a, d.y, b, d.conv, (cudnnConvolutionBwdDataAlgo_t)algo,
                                         work, ws, acc, d.x, out);
    } else {
        call = "cudnnConvolutionBackwardFilter";
        e = cudnnConvolutionBackwardFilter(hb->cudnn, &one, d.x, a, d.y, b, d.conv,
                                           (cudnnConvolutionBwdFilterAlgo_t)algo, work, ws, acc, d.w, out);
    }
    nat_mem_free(nd, work, ws); /* stream-ordered reuse */
    nat_status s = NAT_OK;
    if (e != CUDNN_STATUS_SUCCESS)
        s = nat_cuda_fail(call, __FILE__, __LINE__, cudnnGetErrorString(e));
    else if (lowp)
        s = nat_cuda_widen(dev, prec, out, f32_out, n[2], dir != DIR_FWD);
    if (hblock)
        nat_mem_free(nd, hblock, hbytes);
    return s;
}

extern "C" nat_status nat_cu_conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                              float *y)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_FWD, NAT_PREC_F32, g, x, w, y);
}

extern "C" nat_status nat_cu_conv2d_backward_data(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *w,
                                                    const float *gy, float *gx)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_BWD_DATA, NAT_PREC_F32, g, w, gy, gx);
}

extern "C" nat_status nat_cu_conv2d_backward_filter(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                                      const float *gy, float *gw)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_BWD_FILTER, NAT_PREC_F32, g, x, gy, gw);
}

extern "C" nat_status nat_cu_conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                                   const float *w, float *y)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_FWD, prec, g, x, w, y);
}

extern "C" nat_status nat_cu_conv2d_backward_data_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                                         const float *w, const float *gy, float *gx)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_BWD_DATA, prec, g, w, gy, gx);
}

extern "C" nat_status nat_cu_conv2d_backward_filter_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                                           const float *x, const float *gy, float *gw)
{
    const int dev = ex->dev.index;
    return run(dev, DIR_BWD_FILTER, prec, g, x, gy, gw);
}
