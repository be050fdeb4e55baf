/* core/cuda/loss.cu — cross-entropy on the device: integer labels with label smoothing, or soft
 * targets (mixup/cutmix); forward and backward. The rules are core/ops_loss.c's: per-row log-sum-exp
 * in double (saved, f64 [N]), row losses in double summed in row order by one block, loss = mean over
 * rows; backward gz += (g/N)·(softmax(z)·Σt - t), soft targets also gt += (g/N)·(lse - z). One block per
 * row; the loss and its gradient are one-element device tensors, never read back on the host. */
#include "core/cuda/common.cuh"

#define ROW_THREADS 128

__global__ void ce_rows_kernel(const float *__restrict__ Z, const int32_t *__restrict__ labels,
                               const float *__restrict__ T, int64_t N, int64_t C, double on, double off, double *L,
                               double *row_loss)
{
    __shared__ float fscratch[32];
    __shared__ double scratch[32];
    for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
        const float *z = Z + i * C;
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            mx = fmaxf(mx, z[c]);
        mx = nat_block_max(mx, fscratch);
        double s = 0.0, a = 0.0, b = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            s += expf(z[c] - mx);
            if (T) {
                a += T[i * C + c];
                b += (double)T[i * C + c] * z[c];
            } else {
                a += z[c];
            }
        }
        s = nat_block_sum(s, scratch);
        a = nat_block_sum(a, scratch);
        if (T)
            b = nat_block_sum(b, scratch);
        if (threadIdx.x == 0) {
            double lse = (double)mx + log(s);
            L[i] = lse;
            row_loss[i] = T ? lse * a - b : lse - on * z[labels[i]] - off * a;
        }
    }
}

__global__ void ce_mean_kernel(const double *row_loss, int64_t N, float *loss)
{
    __shared__ double scratch[32];
    double s = 0.0;
    /* Contiguous runs per thread, then the fixed tree: the same bits every run. */
    int64_t per = (N + blockDim.x - 1) / blockDim.x;
    for (int64_t i = threadIdx.x * per; i < (threadIdx.x + 1) * per && i < N; i++)
        s += row_loss[i];
    s = nat_block_sum(s, scratch);
    if (threadIdx.x == 0)
        *loss = (float)(s / (double)N);
}

static nat_status ce_forward(int dev, const float *z, const int32_t *labels, const float *targets, int64_t N, int64_t C,
                             float smoothing, double *lse, float *loss, double *row_loss)
{
    NAT_CUDA_ENTER(dev);
    const double off = (double)smoothing / (double)C, on = 1.0 - (double)smoothing;
    unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    ce_rows_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(z, labels, targets, N, C, on, off, lse, row_loss);
    NAT_CUDA_LAUNCHED("ce_rows_kernel");
    ce_mean_kernel<<<1, 1024, 0, hb->stream>>>(row_loss, N, loss);
    NAT_CUDA_LAUNCHED("ce_mean_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cu_cross_entropy_forward(const nat_exec *ex, const float *z, const int32_t *labels,
                                                     const float *targets, int64_t N, int64_t C, float smoothing,
                                                     double *lse, float *loss)
{
    const int dev = ex->dev.index;
    if (N <= 0)
        return nat_error(NAT_ERR_INTERNAL, "cuda cross_entropy: no rows");
    nat_device d = {NAT_DEV_CUDA, dev};
    double *row_loss;
    NAT_TRY(nat_mem_alloc(d, (size_t)N * sizeof(double), (void **)&row_loss));
    nat_status s = ce_forward(dev, z, labels, targets, N, C, smoothing, lse, loss, row_loss);
    nat_mem_free(d, row_loss, (size_t)N * sizeof(double)); /* stream-ordered reuse */
    return s;
}

__global__ void ce_backward_kernel(const float *__restrict__ Z, const int32_t *__restrict__ labels,
                                   const float *__restrict__ T, const double *L, const float *G, int64_t N, int64_t C,
                                   float smoothing, float *GZ, float *GT)
{
    __shared__ double scratch[32];
    const float g0 = G[0] / (float)N;
    const float off = smoothing / (float)C;
    for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
        const float *z = Z + i * C;
        const float hi = (float)L[i], lo = (float)(L[i] - (double)hi);
        float tsum = 1.0f;
        if (T && GZ) {
            double ts = 0.0;
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
                ts += T[i * C + c];
            tsum = (float)nat_block_sum(ts, scratch);
        }
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float p = expf((z[c] - hi) - lo);
            if (!T) {
                float v = g0 * (p - off);
                if (c == labels[i])
                    v -= g0 * (1.0f - smoothing);
                GZ[i * C + c] += v;
                continue;
            }
            if (GZ)
                GZ[i * C + c] += g0 * (p * tsum - T[i * C + c]);
            if (GT)
                GT[i * C + c] += g0 * ((hi - z[c]) + lo);
        }
    }
}

extern "C" nat_status nat_cu_cross_entropy_backward(const nat_exec *ex, const float *z, const int32_t *labels,
                                                      const float *targets, const double *lse, const float *g,
                                                      int64_t N, int64_t C, float smoothing, float *gz, float *gt)
{
    const int dev = ex->dev.index;
    if (N <= 0 || (!gz && !gt))
        return NAT_OK;
    if (!targets && !gz)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    ce_backward_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(z, labels, targets, lse, g, N, C, smoothing, gz, gt);
    NAT_CUDA_LAUNCHED("ce_backward_kernel");
    return NAT_OK;
}
