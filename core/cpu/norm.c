/* core/cpu/norm.c — LayerNorm and softmax over the last dim on the CPU, forward and backward, rows of C
 * contiguous floats. Row statistics are summed in double; softmax subtracts the row max before
 * exponentiating. */
#include <math.h>
#include <omp.h> /* per-thread partial sums of the weight and bias gradients */
#include <string.h>

#include "core/cpu/kernels.h"

#define PAR_MIN NAT_CPU_PAR_MIN

nat_status nat_cpu_layernorm_forward(const nat_exec *ex, const float *X, const float *W, const float *B, float *Y,
                                     double *M, double *R, int64_t rows, int64_t C, float eps)
{
    (void)ex;
#pragma omp parallel for if (rows * C > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; c++)
            s += xr[c];
        const double m = s / (double)C;
        double v = 0;
#pragma omp simd reduction(+ : v)
        for (int64_t c = 0; c < C; c++) {
            double d = (double)xr[c] - m;
            v += d * d;
        }
        const double rs = 1.0 / sqrt(v / (double)C + (double)eps);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float xh = (float)(((double)xr[c] - m) * rs);
            yr[c] = (W ? xh * W[c] : xh) + (B ? B[c] : 0.0f);
        }
        M[r] = m;
        R[r] = rs;
    }
    return NAT_OK;
}

nat_status nat_cpu_layernorm_backward(const nat_exec *ex, const float *X, const double *M, const double *R,
                                      const float *W, const float *G, float *GX, float *gw, float *gb, int64_t rows,
                                      int64_t C)
{
    /* Weight and bias gradients are sums over rows: each thread keeps its own partial rows over a static
     * block of rows, added in thread order afterwards, so a given thread count always gives the same bits. */
    int nt = rows * C > PAR_MIN ? omp_get_max_threads() : 1;
    float *part = NULL;
    if (gw || gb) {
        NAT_TRY(nat_exec_scratch(ex, (size_t)nt * 2 * (size_t)C * sizeof *part, (void **)&part));
        memset(part, 0, (size_t)nt * 2 * (size_t)C * sizeof *part);
    }
#pragma omp parallel num_threads(nt)
    {
        float *pw = part ? part + (int64_t)omp_get_thread_num() * 2 * C : NULL, *pb = pw ? pw + C : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *x = X + r * C, *gr = G + r * C;
            /* The mean as a float plus its rounding residual: x - m is exact for x near m, so
             * xhat = ((x - m) - dm) · rstd keeps full float precision in fast float loops. */
            const float m = (float)M[r], dm = (float)(M[r] - (double)m), rs = (float)R[r];
            if (pw) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    pw[c] += gr[c] * (((x[c] - m) - dm) * rs);
                    pb[c] += gr[c];
                }
            }
            if (!GX)
                continue;
            /* dx = rstd · (gy - mean(gy) - xhat · mean(gy ⊙ xhat)), gy = g ⊙ weight */
            double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
            for (int64_t c = 0; c < C; c++) {
                float gy = W ? gr[c] * W[c] : gr[c];
                s1 += gy;
                s2 += (double)gy * (((x[c] - m) - dm) * rs);
            }
            const float a1 = (float)(s1 / (double)C), a2 = (float)(s2 / (double)C);
            float *gxr = GX + r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float gy = W ? gr[c] * W[c] : gr[c];
                float xh = ((x[c] - m) - dm) * rs;
                gxr[c] += rs * (gy - a1 - xh * a2);
            }
        }
    }
    if (part) {
        float *GW = gw, *GB = gb;
        for (int t = 0; t < nt; t++) {
            const float *pw = part + (int64_t)t * 2 * C, *pb = pw + C;
            for (int64_t c = 0; c < C; c++) {
                if (GW)
                    GW[c] += pw[c];
                if (GB)
                    GB[c] += pb[c];
            }
        }
        nat_exec_scratch_release(ex, part);
    }
    return NAT_OK;
}

nat_status nat_cpu_softmax_forward(const nat_exec *ex, const float *X, float *Y, int64_t rows, int64_t C)
{
    (void)ex;
#pragma omp parallel for if (rows * C > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        float mx = xr[0];
        for (int64_t c = 1; c < C; c++)
            mx = xr[c] > mx ? xr[c] : mx;
        /* A row that is -inf everywhere (fully masked) has no distribution; it gets zeros rather than the
         * NaNs of exp(-inf - -inf), so it adds nothing downstream. */
        if (mx == -INFINITY) {
            memset(yr, 0, (size_t)C * sizeof *yr);
            continue;
        }
        double s = 0;
        for (int64_t c = 0; c < C; c++) {
            float e = expf(xr[c] - mx);
            yr[c] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
#pragma omp simd
        for (int64_t c = 0; c < C; c++)
            yr[c] *= inv;
    }
    return NAT_OK;
}

nat_status nat_cpu_softmax_backward(const nat_exec *ex, const float *Y, const float *G, float *GX, int64_t rows,
                                    int64_t C)
{
    (void)ex;
    /* dx = y ⊙ (g - Σ g ⊙ y) */
#pragma omp parallel for if (rows * C > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *y = Y + r * C, *gr = G + r * C;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++)
            dot += (double)gr[c] * y[c];
        const float d = (float)dot;
        float *gxr = GX + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++)
            gxr[c] += y[c] * (gr[c] - d);
    }
    return NAT_OK;
}
