/* core/cuda/optim.cu — fused optimizer updates on the device, one pass over each parameter: SGD
 * (coupled weight decay, momentum, Nesterov) and AdamW (decoupled decay). Each element is updated with
 * the same float operations in the same order as core/optim.c's loops (the scalars are computed on the
 * host in double, as there), so a CPU and a GPU run agree to float rounding of sqrtf and division.
 * The gradient norm for clipping is nat_cuda_sum_squares (reduce.cu). */
#include "core/cuda/common.cuh"

__global__ void sgd_kernel(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ buf, int64_t n,
                           float lr, float wd, float mu, bool nesterov)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float d = __fadd_rn(g[i], __fmul_rn(wd, p[i]));
        if (buf) {
            float b = __fadd_rn(__fmul_rn(buf[i], mu), d);
            buf[i] = b;
            d = nesterov ? __fadd_rn(d, __fmul_rn(mu, b)) : b;
        }
        p[i] = __fadd_rn(p[i], __fmul_rn(-lr, d));
    }
}

__global__ void adamw_kernel(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                             float *__restrict__ v, int64_t n, float decay_mul, float w1, float beta2, float omb2,
                             float neg_step_size, float bc2_sqrt, float eps)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float pi = __fmul_rn(p[i], decay_mul);
        float gi = g[i];
        float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(gi, m[i])));
        float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(omb2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(neg_step_size, mi), denom));
    }
}

extern "C" nat_status nat_cu_sgd_update(const nat_exec *ex, float *p, const float *g, float *buf, int64_t n, float lr, float wd,
                                          float mu, bool nesterov)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    sgd_kernel<<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(p, g, buf, n, lr, wd, mu, nesterov);
    NAT_CUDA_LAUNCHED("sgd_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cu_adamw_update(const nat_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                            float decay_mul, float w1, float beta2, float one_minus_beta2,
                                            float neg_step_size, float bc2_sqrt, float eps)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    adamw_kernel<<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(p, g, m, v, n, decay_mul, w1, beta2,
                                                                  one_minus_beta2, neg_step_size, bc2_sqrt, eps);
    NAT_CUDA_LAUNCHED("adamw_kernel");
    return NAT_OK;
}
