/* core/cuda/reduce.cu — sums on the device: a reduction over any set of dims of a strided tensor
 * (broadcast undoing, bias gradients, pooling) and a two-pass full sum (sum/mean, the gradient norm).
 *
 * Every sum is taken in double in a fixed order for a given shape (a fixed partition of the index space
 * and a fixed tree inside each block), so results are the same bits run after run; no atomics. */
#include <stdlib.h>

#include "core/cuda/common.cuh"

/* One block per output element (grid-stride over outputs); the block's threads stride over the reduced
 * index space. */
__global__ void reduce_kernel(float *out, bool acc, float alpha, const float *__restrict__ x, nat_iter keep,
                              nat_iter red, int64_t nout, int64_t nred)
{
    __shared__ double scratch[32];
    for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
        int64_t ko[3];
        nat_iter_offsets(keep, o, 1, ko);
        double s = 0.0;
        for (int64_t r = threadIdx.x; r < nred; r += blockDim.x) {
            int64_t ro[3];
            nat_iter_offsets(red, r, 1, ro);
            s += (double)x[ko[0] + ro[0]];
        }
        s = nat_block_sum(s, scratch);
        if (threadIdx.x == 0) {
            float v = (float)(s * (double)alpha);
            out[o] = acc ? out[o] + v : v;
        }
    }
}

extern "C" nat_status nat_cu_reduce(const nat_exec *ex, float *out, bool acc, float alpha, int nd, const int64_t *shape,
                                      const float *x, const int64_t *x_stride, const bool *keep)
{
    const int dev = ex->dev.index;
    int64_t ks[NAT_MAX_DIMS], kst[NAT_MAX_DIMS], rs[NAT_MAX_DIMS], rst[NAT_MAX_DIMS];
    int nk = 0, nr = 0;
    int64_t nout = 1, nred = 1;
    for (int d = 0; d < nd; d++) {
        if (keep[d]) {
            ks[nk] = shape[d], kst[nk++] = x_stride[d];
            nout *= shape[d];
        } else {
            rs[nr] = shape[d], rst[nr++] = x_stride[d];
            nred *= shape[d];
        }
    }
    if (nout == 0)
        return NAT_OK;
    const int64_t *kp = kst, *rp = rst;
    nat_iter ki = nat_iter_make(nk, ks, 1, &kp), ri = nat_iter_make(nr, rs, 1, &rp);
    NAT_CUDA_ENTER(dev);
    int block = nred >= 256 ? 256 : 32;
    unsigned grid = (unsigned)(nout < 65535 * 16 ? nout : 65535 * 16);
    reduce_kernel<<<grid, block, 0, hb->stream>>>(out, acc, alpha, x, ki, ri, nout, nred);
    NAT_CUDA_LAUNCHED("reduce_kernel");
    return NAT_OK;
}

#define SUM_BLOCK 256
#define SUM_MAX_BLOCKS 1024

/* Pass 1: block b sums elements b·256 + t + k·(blocks·256): a partition fixed by n alone. */
__global__ void sum_pass1(const float *__restrict__ x, int64_t n, bool squares, double *part)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)SUM_BLOCK + threadIdx.x; i < n; i += (int64_t)gridDim.x * SUM_BLOCK) {
        double v = x[i];
        s += squares ? v * v : v;
    }
    s = nat_block_sum(s, scratch);
    if (threadIdx.x == 0)
        part[blockIdx.x] = s;
}

/* Pass 2, one block: the partials in order; writes alpha·total as a float and/or the double. */
__global__ void sum_pass2(const double *part, int nparts, float alpha, float *y, double *yd)
{
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += part[i];
    s = nat_block_sum(s, scratch);
    if (threadIdx.x == 0) {
        if (y)
            *y = (float)(s * (double)alpha);
        if (yd)
            *yd = s;
    }
}

static int sum_blocks(int64_t n)
{
    int64_t b = (n + SUM_BLOCK * 4 - 1) / (SUM_BLOCK * 4);
    return (int)(b < 1 ? 1 : b > SUM_MAX_BLOCKS ? SUM_MAX_BLOCKS : b);
}

/* Queues the sums of squares (or plain sums) of `count` arrays: totals[i] = Σ xs[i] (double, device), and
 * when y is set, *y = alpha · totals[0] as a float. part holds SUM_MAX_BLOCKS doubles. */
static nat_status queue_sums(int dev, int count, const float *const *xs, const int64_t *ns, bool squares, double *part,
                             double *totals, float alpha, float *y)
{
    NAT_CUDA_ENTER(dev);
    for (int i = 0; i < count; i++) {
        int nb = sum_blocks(ns[i]);
        sum_pass1<<<nb, SUM_BLOCK, 0, hb->stream>>>(xs[i], ns[i], squares, part);
        NAT_CUDA_LAUNCHED("sum_pass1");
        sum_pass2<<<1, 1024, 0, hb->stream>>>(part, nb, alpha, y, totals ? totals + i : nullptr);
        NAT_CUDA_LAUNCHED("sum_pass2");
    }
    return NAT_OK;
}

extern "C" nat_status nat_cu_sum(const nat_exec *ex, const float *x, int64_t n, bool squares, float alpha, float *y)
{
    const int dev = ex->dev.index;
    nat_device d = {NAT_DEV_CUDA, dev};
    double *part;
    NAT_TRY(nat_mem_alloc(d, SUM_MAX_BLOCKS * sizeof(double), (void **)&part));
    nat_status s = queue_sums(dev, 1, &x, &n, squares, part, nullptr, alpha, y);
    /* Stream order makes the partials safe to hand back now: the block's next user runs after. */
    nat_mem_free(d, part, SUM_MAX_BLOCKS * sizeof(double));
    return s;
}

extern "C" nat_status nat_cu_sum_squares(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns,
                                           double *host_out)
{
    const int dev = ex->dev.index;
    *host_out = 0.0;
    if (count <= 0)
        return NAT_OK;
    nat_device d = {NAT_DEV_CUDA, dev};
    size_t bytes = (SUM_MAX_BLOCKS + (size_t)count) * sizeof(double);
    double *buf;
    NAT_TRY(nat_mem_alloc(d, bytes, (void **)&buf));
    double *totals = (double *)malloc((size_t)count * sizeof(double));
    nat_status s = totals ? NAT_OK : nat_error(NAT_ERR_OOM, "grad norm: out of host memory for %d totals", count);
    if (s == NAT_OK)
        s = queue_sums(dev, count, xs, ns, true, buf, buf + SUM_MAX_BLOCKS, 1.0f, nullptr);
    if (s == NAT_OK)
        s = nat_cu_memcpy(ex, totals, buf + SUM_MAX_BLOCKS, (size_t)count * sizeof(double), NAT_CUDA_D2H);
    if (s == NAT_OK) {
        double t = 0.0; /* in parameter order, on the host: the same bits every run */
        for (int i = 0; i < count; i++)
            t += totals[i];
        *host_out = t;
    }
    free(totals);
    nat_mem_free(d, buf, bytes);
    return s;
}
