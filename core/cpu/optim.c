/* core/cpu/optim.c — the CPU's optimizer updates, one pass over each contiguous parameter: SGD (coupled
 * weight decay, momentum, Nesterov) and AdamW (decoupled decay), with PyTorch's float operations in its
 * order (the scalars come from core/optim.c), and the weight-averaging update. */
#include <math.h>

#include "core/cpu/kernels.h"

/* Large tensors are split over threads; small ones (biases, norms) stay serial. */
#define OPTIM_PAR_MIN 32768

nat_status nat_cpu_sgd_update(const nat_exec *ex, float *p, const float *g, float *buf, int64_t n, float lr, float wd,
                              float mu, bool nesterov)
{
    (void)ex;
    if (!buf) {
#pragma omp parallel for simd if (n > OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            p[i] = p[i] + -lr * d;
        }
        return NAT_OK;
    }
    /* A zero-filled buffer makes the first step's μ·0 + d equal PyTorch's buf = clone(d). */
#pragma omp parallel for simd if (n > OPTIM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        float b = buf[i] * mu + d;
        buf[i] = b;
        if (nesterov)
            d = d + mu * b;
        else
            d = b;
        p[i] = p[i] + -lr * d;
    }
    return NAT_OK;
}

nat_status nat_cpu_adamw_update(const nat_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                float decay_mul, float w1, float beta2, float one_minus_beta2, float neg_step_size,
                                float bc2_sqrt, float eps)
{
    (void)ex;
#pragma omp parallel for simd if (n > OPTIM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i] * decay_mul;
        float gi = g[i];
        /* torch.lerp with weight < 0.5: start + w * (end - start). */
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi + neg_step_size * mi / denom; /* addcdiv: value * t1 / t2 */
    }
    return NAT_OK;
}

nat_status nat_cpu_ema_update(const nat_exec *ex, float *m, const float *x, int64_t count, float decay, float w)
{
    (void)ex;
#pragma omp parallel for simd if (count > OPTIM_PAR_MIN)
    for (int64_t j = 0; j < count; j++)
        m[j] = decay * m[j] + w * x[j];
    return NAT_OK;
}
