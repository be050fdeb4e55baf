/* core/cuda/elementwise.cu — add/sub/mul with broadcasting (each operand read through its own
 * strides, 0 on broadcast dims), scale, and GELU (erf form) forward and backward, on the device.
 * Bias-add, the broadcast half of pooling's backward and drop-path are this same binary kernel with the
 * right strides. Outputs are contiguous; "acc" adds into them (gradients). */
#include "core/cuda/common.cuh"

template <int OP, bool ACC>
__global__ void binary_kernel(float *y, const float *a, const float *b, nat_iter it, int64_t n, float s)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[3];
        nat_iter_offsets(it, i, 3, off);
        float av = a[off[1]], r;
        if (OP == NAT_CUDA_ADD)
            r = av + b[off[2]];
        else if (OP == NAT_CUDA_SUB)
            r = av - b[off[2]];
        else if (OP == NAT_CUDA_MUL)
            r = av * b[off[2]];
        else
            r = av;
        r *= s;
        if (ACC)
            y[off[0]] += r;
        else
            y[off[0]] = r;
    }
}

template <int OP>
static void launch_binary(bool acc, float *y, const float *a, const float *b, const nat_iter &it, int64_t n, float s,
                          cudaStream_t st)
{
    if (acc)
        binary_kernel<OP, true><<<nat_cuda_blocks(n, 256), 256, 0, st>>>(y, a, b, it, n, s);
    else
        binary_kernel<OP, false><<<nat_cuda_blocks(n, 256), 256, 0, st>>>(y, a, b, it, n, s);
}

extern "C" nat_status nat_cu_binary(const nat_exec *ex, int op, bool acc, float *y, int nd, const int64_t *shape,
                                      const float *a, const int64_t *a_stride, const float *b,
                                      const int64_t *b_stride, float s)
{
    const int dev = ex->dev.index;
    int64_t n = 1, ys[NAT_MAX_DIMS], zero[NAT_MAX_DIMS] = {0};
    for (int d = 0; d < nd; d++)
        n *= shape[d];
    if (n == 0)
        return NAT_OK;
    int64_t acc_st = 1;
    for (int d = nd - 1; d >= 0; d--) {
        ys[d] = acc_st;
        acc_st *= shape[d];
    }
    if (op == NAT_CUDA_SCALE) {
        b = a;
        b_stride = zero;
    }
    const int64_t *st[3] = {ys, a_stride, b_stride};
    nat_iter it = nat_iter_make(nd, shape, 3, st);
    NAT_CUDA_ENTER(dev);
    switch (op) {
    case NAT_CUDA_ADD: launch_binary<NAT_CUDA_ADD>(acc, y, a, b, it, n, s, hb->stream); break;
    case NAT_CUDA_SUB: launch_binary<NAT_CUDA_SUB>(acc, y, a, b, it, n, s, hb->stream); break;
    case NAT_CUDA_MUL: launch_binary<NAT_CUDA_MUL>(acc, y, a, b, it, n, s, hb->stream); break;
    case NAT_CUDA_SCALE: launch_binary<NAT_CUDA_SCALE>(acc, y, a, b, it, n, s, hb->stream); break;
    default: return nat_error(NAT_ERR_INTERNAL, "cuda binary: unknown op %d", op);
    }
    NAT_CUDA_LAUNCHED("binary_kernel");
    return NAT_OK;
}

/* GELU with the device's erff/expf (accurate to a few ulp), matching the CPU's x·Φ(x). */
__global__ void gelu_forward_kernel(const float *__restrict__ x, float *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v * 0.5f * erfcf(-v * 0.70710678118654752440f);
    }
}

__global__ void gelu_backward_kernel(const float *__restrict__ x, const float *__restrict__ g, float *__restrict__ gx,
                                     int64_t n, bool acc)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float cdf = 0.5f * erfcf(-v * 0.70710678118654752440f);
        float pdf = 0.39894228040143267794f * expf(-0.5f * v * v);
        const float d = g[i] * (cdf + v * pdf);
        gx[i] = acc ? gx[i] + d : d;
    }
}

extern "C" nat_status nat_cu_gelu_forward(const nat_exec *ex, const float *x, float *y, int64_t n)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    gelu_forward_kernel<<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(x, y, n);
    NAT_CUDA_LAUNCHED("gelu_forward_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cu_gelu_backward(const nat_exec *ex, const float *x, const float *g, float *gx, int64_t n,
                                           bool acc)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    gelu_backward_kernel<<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(x, g, gx, n, acc);
    NAT_CUDA_LAUNCHED("gelu_backward_kernel");
    return NAT_OK;
}
