/* core/cpu/pool.c — global average pooling on the CPU, forward and backward, over [N, C, S] (channels
 * first) or [N, S, C] (channels last), S the spatial positions. */
#include "core/cpu/kernels.h"

/* y [N, C] = mean over S of x. */
nat_status nat_cpu_avg_pool_forward(const nat_exec *ex, const float *X, float *Y, int64_t N, int64_t C, int64_t S,
                                    bool channels_last)
{
    (void)ex;
    const float inv = 1.0f / (float)S;
    if (!channels_last) {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * C; r++) {
            const float *src = X + r * S;
            float s = 0.0f;
            for (int64_t i = 0; i < S; i++)
                s += src[i];
            Y[r] = s * inv;
        }
    } else {
        /* Rows of C channels are summed whole, so the inner loop runs along contiguous memory. */
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t n = 0; n < N; n++) {
            float *acc = Y + n * C;
            for (int64_t c = 0; c < C; c++)
                acc[c] = 0.0f;
            for (int64_t i = 0; i < S; i++) {
                const float *src = X + (n * S + i) * C;
                for (int64_t c = 0; c < C; c++)
                    acc[c] += src[c];
            }
            for (int64_t c = 0; c < C; c++)
                acc[c] *= inv;
        }
    }
    return NAT_OK;
}

/* gx [N, C, S] or [N, S, C] += g [N, C] / S. */
nat_status nat_cpu_avg_pool_backward(const nat_exec *ex, const float *G, float *GX, int64_t N, int64_t C, int64_t S,
                                     bool last)
{
    (void)ex;
    const float inv = 1.0f / (float)S;
    if (!last) {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * C; r++) {
            float v = G[r] * inv;
            float *dst = GX + r * S;
            for (int64_t s = 0; s < S; s++)
                dst[s] += v;
        }
    } else {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * S; r++) {
            const float *gr = G + (r / S) * C;
            float *dst = GX + r * C;
            for (int64_t c = 0; c < C; c++)
                dst[c] += gr[c] * inv;
        }
    }
    return NAT_OK;
}
