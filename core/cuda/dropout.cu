/* core/cuda/dropout.cu — dropout's mask from a counter-based hash: element i is kept when the top 32
 * bits of mix(seed, i) are >= threshold (P(drop) = threshold / 2^32 = p, as on the CPU). The mask is a
 * pure function of (seed, i), so it takes no memory, does not depend on the launch configuration, and
 * backward regenerates it from the seed saved on the tape. The seed is one draw from the caller's nat_rng
 * on the host. (The CPU draws its mask from xoshiro streams instead, so the two devices drop different
 * elements for the same rng; each is reproducible on its own.) Drop-path needs no kernel: its per-sample
 * factors are drawn on the host exactly as on the CPU and applied with nat_cuda_binary. */
#include "core/cuda/common.cuh"

/* splitmix64's finaliser over seed + (i + 1)·golden: a bijection of the counter, well mixed. */
__device__ __forceinline__ uint32_t drop_bits(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)(z >> 32);
}

template <bool ACC>
__global__ void dropout_kernel(const float *x, float *y, int64_t n, uint64_t seed, uint64_t threshold, float scale)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = (uint64_t)drop_bits(seed, (uint64_t)i) >= threshold ? x[i] * scale : 0.0f;
        if (ACC)
            y[i] += v;
        else
            y[i] = v;
    }
}

extern "C" nat_status nat_cu_dropout(const nat_exec *ex, const float *x, float *y, bool acc, int64_t n, uint64_t seed,
                                       uint64_t threshold, float scale)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    if (acc)
        dropout_kernel<true><<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(x, y, n, seed, threshold, scale);
    else
        dropout_kernel<false><<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(x, y, n, seed, threshold, scale);
    NAT_CUDA_LAUNCHED("dropout_kernel");
    return NAT_OK;
}
