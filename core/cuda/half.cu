/* core/cuda/half.cu — f32 <-> bf16 / f16 conversions on the device for autocast: operands of the
 * mixed-precision GEMMs and convolutions are rounded into 2-byte scratch, and cuDNN's 2-byte results are
 * widened back into f32 tensors. The conversions are core/half.h's, the very code core/half.c runs on
 * the host (round to nearest even, overflow to inf), so the CPU emulation gets the same operand bits.
 * 2-byte values travel as their uint16_t bits (the memory layout of CUDA's bfloat16 / half types). */
#include <stdint.h>

#include "core/cuda/common.cuh"
#include "core/half.h"
#include "nat/autograd.h" /* nat_precision */

template <bool F16> __global__ void round_kernel(const float *__restrict__ x, uint16_t *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = F16 ? half_f32_to_f16(x[i]) : half_f32_to_bf16(x[i]);
}

template <bool F16, bool ACC>
__global__ void widen_kernel(const uint16_t *__restrict__ x, float *__restrict__ y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = F16 ? half_f16_to_f32(x[i]) : half_bf16_to_f32(x[i]);
        if (ACC)
            y[i] += v;
        else
            y[i] = v;
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
        round_kernel<false><<<blocks, 256, 0, hb->stream>>>(x, (uint16_t *)y, n);
    else
        round_kernel<true><<<blocks, 256, 0, hb->stream>>>(x, (uint16_t *)y, n);
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
        widen_kernel<false, true><<<blocks, 256, 0, hb->stream>>>((const uint16_t *)x, y, n);
    else if (prec == NAT_PREC_BF16)
        widen_kernel<false, false><<<blocks, 256, 0, hb->stream>>>((const uint16_t *)x, y, n);
    else if (acc)
        widen_kernel<true, true><<<blocks, 256, 0, hb->stream>>>((const uint16_t *)x, y, n);
    else
        widen_kernel<true, false><<<blocks, 256, 0, hb->stream>>>((const uint16_t *)x, y, n);
    NAT_CUDA_LAUNCHED("widen_kernel");
    return NAT_OK;
}
