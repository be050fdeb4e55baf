/* core/cuda/norm.cu — LayerNorm and softmax over the last dim on the device, forward and backward.
 *
 * Layout: rows of C contiguous floats. One block per row (grid-stride over rows). Row statistics follow
 * core/ops_norm.c: mean and variance in double with the variance taken over (x - mean) in a second pass,
 * mean and rstd saved in f64; softmax subtracts the row max, a row that is -inf everywhere gives zeros.
 * LayerNorm's weight/bias gradients are column sums over rows: partial sums per band of rows (double),
 * then the bands added in order, so the result does not depend on scheduling. */
#include "core/cuda/common.cuh"

#define ROW_THREADS 128

__global__ void layernorm_forward_kernel(const float *__restrict__ X, const float *__restrict__ W,
                                         const float *__restrict__ B, float *__restrict__ Y, double *M, double *R,
                                         int64_t rows, int64_t C, float eps)
{
    __shared__ double scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *x = X + r * C;
        float *y = Y + r * C;
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            s += x[c];
        const double m = nat_block_sum(s, scratch) / (double)C;
        double v = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            double d = (double)x[c] - m;
            v += d * d;
        }
        const double rs = 1.0 / sqrt(nat_block_sum(v, scratch) / (double)C + (double)eps);
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xh = (float)(((double)x[c] - m) * rs);
            y[c] = (W ? xh * W[c] : xh) + (B ? B[c] : 0.0f);
        }
        if (threadIdx.x == 0) {
            M[r] = m;
            R[r] = rs;
        }
    }
}

extern "C" nat_status nat_cu_layernorm_forward(const nat_exec *ex, const float *x, const float *w, const float *b, float *y,
                                                 double *mean, double *rstd, int64_t rows, int64_t C, float eps)
{
    const int dev = ex->dev.index;
    if (rows <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
    layernorm_forward_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(x, w, b, y, mean, rstd, rows, C, eps);
    NAT_CUDA_LAUNCHED("layernorm_forward_kernel");
    return NAT_OK;
}

/* dx = rstd · (gy - mean(gy) - xhat · mean(gy ⊙ xhat)), gy = g ⊙ weight */
__global__ void layernorm_dx_kernel(const float *__restrict__ X, const double *M, const double *R,
                                    const float *__restrict__ W, const float *__restrict__ G, float *GX, int64_t rows,
                                    int64_t C)
{
    __shared__ double scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *x = X + r * C, *g = G + r * C;
        const double m = M[r];
        const float rs = (float)R[r];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float gy = W ? g[c] * W[c] : g[c];
            float xh = (float)(((double)x[c] - m) * R[r]);
            s1 += gy;
            s2 += (double)gy * xh;
        }
        const float a1 = (float)(nat_block_sum(s1, scratch) / (double)C);
        const float a2 = (float)(nat_block_sum(s2, scratch) / (double)C);
        float *gx = GX + r * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float gy = W ? g[c] * W[c] : g[c];
            float xh = (float)(((double)x[c] - m) * R[r]);
            gx[c] += rs * (gy - a1 - xh * a2);
        }
    }
}

/* Block (32, 8): 32 columns, 8 rows at a time over band blockIdx.y of the rows. part: [bands][2][C]. */
__global__ void layernorm_dwb_partial(const float *__restrict__ X, const double *M, const double *R,
                                      const float *__restrict__ G, double *part, int64_t rows, int64_t C,
                                      int64_t band)
{
    __shared__ double sw[8][33], sb[8][33];
    int64_t c = blockIdx.x * 32 + threadIdx.x;
    int64_t r0 = blockIdx.y * band, r1 = r0 + band < rows ? r0 + band : rows;
    double aw = 0.0, ab = 0.0;
    if (c < C)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
            float g = G[r * C + c];
            float xh = (float)(((double)X[r * C + c] - M[r]) * R[r]);
            aw += (double)g * xh;
            ab += g;
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double tw = 0.0, tb = 0.0;
        for (int k = 0; k < 8; k++) {
            tw += sw[k][threadIdx.x];
            tb += sb[k][threadIdx.x];
        }
        part[(blockIdx.y * 2 + 0) * C + c] = tw;
        part[(blockIdx.y * 2 + 1) * C + c] = tb;
    }
}

__global__ void layernorm_dwb_final(const double *part, int nbands, int64_t C, float *GW, float *GB)
{
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
        double tw = 0.0, tb = 0.0;
        for (int k = 0; k < nbands; k++) {
            tw += part[(k * 2 + 0) * C + c];
            tb += part[(k * 2 + 1) * C + c];
        }
        if (GW)
            GW[c] += (float)tw;
        if (GB)
            GB[c] += (float)tb;
    }
}

static nat_status layernorm_dwb(int dev, const float *x, const double *mean, const double *rstd, const float *g,
                                float *gw, float *gb, int64_t rows, int64_t C, double *part, int nbands, int64_t band)
{
    NAT_CUDA_ENTER(dev);
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)nbands), block(32, 8);
    layernorm_dwb_partial<<<grid, block, 0, hb->stream>>>(x, mean, rstd, g, part, rows, C, band);
    NAT_CUDA_LAUNCHED("layernorm_dwb_partial");
    layernorm_dwb_final<<<nat_cuda_blocks(C, 256), 256, 0, hb->stream>>>(part, nbands, C, gw, gb);
    NAT_CUDA_LAUNCHED("layernorm_dwb_final");
    return NAT_OK;
}

extern "C" nat_status nat_cu_layernorm_backward(const nat_exec *ex, const float *x, const double *mean, const double *rstd,
                                                  const float *w, const float *g, float *gx, float *gw, float *gb,
                                                  int64_t rows, int64_t C)
{
    const int dev = ex->dev.index;
    if (rows <= 0)
        return NAT_OK;
    if (gx) {
        NAT_CUDA_ENTER(dev);
        unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
        layernorm_dx_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(x, mean, rstd, w, g, gx, rows, C);
        NAT_CUDA_LAUNCHED("layernorm_dx_kernel");
    }
    if (!gw && !gb)
        return NAT_OK;
    /* Bands of at least 64 rows, at most 256 bands: enough blocks to fill the GPU for typical C. */
    int64_t nb = (rows + 63) / 64;
    if (nb > 256)
        nb = 256;
    int64_t band = (rows + nb - 1) / nb;
    nb = (rows + band - 1) / band;
    nat_device d = {NAT_DEV_CUDA, dev};
    size_t bytes = (size_t)nb * 2 * (size_t)C * sizeof(double);
    double *part;
    NAT_TRY(nat_mem_alloc(d, bytes, (void **)&part));
    nat_status s = layernorm_dwb(dev, x, mean, rstd, g, gw, gb, rows, C, part, (int)nb, band);
    nat_mem_free(d, part, bytes); /* stream-ordered reuse: safe to return now */
    return s;
}

__global__ void softmax_forward_kernel(const float *__restrict__ X, float *__restrict__ Y, int64_t rows, int64_t C)
{
    __shared__ float fscratch[32];
    __shared__ double scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *x = X + r * C;
        float *y = Y + r * C;
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            mx = fmaxf(mx, x[c]);
        mx = nat_block_max(mx, fscratch);
        if (mx == -INFINITY) {
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
                y[c] = 0.0f;
            continue;
        }
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float e = expf(x[c] - mx);
            y[c] = e;
            s += e;
        }
        const float inv = (float)(1.0 / nat_block_sum(s, scratch));
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            y[c] *= inv;
    }
}

__global__ void softmax_backward_kernel(const float *__restrict__ Y, const float *__restrict__ G, float *GX,
                                        int64_t rows, int64_t C)
{
    __shared__ double scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *y = Y + r * C, *g = G + r * C;
        double dot = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            dot += (double)g[c] * y[c];
        const float d = (float)nat_block_sum(dot, scratch);
        float *gx = GX + r * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            gx[c] += y[c] * (g[c] - d);
    }
}

extern "C" nat_status nat_cu_softmax_forward(const nat_exec *ex, const float *x, float *y, int64_t rows, int64_t C)
{
    const int dev = ex->dev.index;
    if (rows <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
    softmax_forward_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(x, y, rows, C);
    NAT_CUDA_LAUNCHED("softmax_forward_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cu_softmax_backward(const nat_exec *ex, const float *y, const float *g, float *gx, int64_t rows,
                                                int64_t C)
{
    const int dev = ex->dev.index;
    if (rows <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
    softmax_backward_kernel<<<grid, ROW_THREADS, 0, hb->stream>>>(y, g, gx, rows, C);
    NAT_CUDA_LAUNCHED("softmax_backward_kernel");
    return NAT_OK;
}
