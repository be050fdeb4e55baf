/* core/ops_cuda_half.cu — f32 <-> bf16 / f16 conversions on the device for autocast: operands of the
 * mixed-precision GEMMs and convolutions are rounded into 2-byte scratch, and cuDNN's 2-byte results are
 * widened back into f32 tensors. __float2bfloat16_rn and __float2half_rn round to nearest even with
 * overflow to inf, which is what core/half.c does on the host, so the CPU emulation gets the same
 * operand bits. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda/common.cuh"
#include "nat/autograd.h" /* nat_precision */

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T> __global__ void round_kernel(const float *__restrict__ x, T *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = from_f32<T>(x[i]);
}

template <typename T, bool ACC> __global__ void widen_kernel(const T *__restrict__ x, float *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (ACC)
            y[i] += to_f32(x[i]);
        else
            y[i] = to_f32(x[i]);
    }
}

static nat_status bad_prec(const char *what, int prec)
{
    return nat_error(NAT_ERR_INTERNAL, "%s: precision %d is not bf16 (1) or f16 (2)", what, prec);
}

extern "C" nat_status nat_cuda_round_to(int dev, int prec, const float *x, void *y, int64_t n)
{
    if (prec != NAT_PREC_BF16 && prec != NAT_PREC_F16)
        return bad_prec("cuda round", prec);
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned blocks = nat_cuda_blocks(n, 256);
    if (prec == NAT_PREC_BF16)
        round_kernel<__nv_bfloat16><<<blocks, 256, 0, hb->stream>>>(x, (__nv_bfloat16 *)y, n);
    else
        round_kernel<__half><<<blocks, 256, 0, hb->stream>>>(x, (__half *)y, n);
    NAT_CUDA_LAUNCHED("round_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cuda_widen(int dev, int prec, const void *x, float *y, int64_t n, bool acc)
{
    if (prec != NAT_PREC_BF16 && prec != NAT_PREC_F16)
        return bad_prec("cuda widen", prec);
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    unsigned blocks = nat_cuda_blocks(n, 256);
    if (prec == NAT_PREC_BF16 && acc)
        widen_kernel<__nv_bfloat16, true><<<blocks, 256, 0, hb->stream>>>((const __nv_bfloat16 *)x, y, n);
    else if (prec == NAT_PREC_BF16)
        widen_kernel<__nv_bfloat16, false><<<blocks, 256, 0, hb->stream>>>((const __nv_bfloat16 *)x, y, n);
    else if (acc)
        widen_kernel<__half, true><<<blocks, 256, 0, hb->stream>>>((const __half *)x, y, n);
    else
        widen_kernel<__half, false><<<blocks, 256, 0, hb->stream>>>((const __half *)x, y, n);
    NAT_CUDA_LAUNCHED("widen_kernel");
    return NAT_OK;
}
