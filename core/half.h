/* core/half.h — internal: bfloat16 / float16 <-> f32 conversions, round to nearest even, as inline
 * functions that compile as plain C11 (host) and as CUDA __host__ __device__ code. The one definition
 * behind include/nat/half.h (core/half.c), the safetensors reader (core/safetensors.c), the device
 * rounding of autocast (core/ops_cuda_half.cu) and neighborhood attention under autocast (CPU rounding
 * and the 2-byte operands of the tensor-core kernels in layers/natten/cuda/).
 *
 * Bits are manipulated directly rather than through _Float16 or the CUDA intrinsics so that host and
 * device give the same bits whatever the FPU, flags or architecture: the CPU is the GPU's reference.
 * Rounding: ties to even; bf16 keeps f32's exponent range; f16 keeps subnormals (down to 2^-24) and
 * overflows to +-inf from 65520 up (the midpoint between 65504 and 2^16 rounds to even, up). NaN stays
 * a quiet NaN (bf16 keeps the payload's top bits, f16 becomes the canonical 0x7e00).
 */
#ifndef NAT_CORE_HALF_H
#define NAT_CORE_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define NAT_HALF_FN static __host__ __device__ __forceinline__
#else
#define NAT_HALF_FN static inline
#endif

NAT_HALF_FN uint32_t half_f32_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

NAT_HALF_FN float half_bits_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* f32 -> bfloat16 bits. */
NAT_HALF_FN uint16_t half_f32_to_bf16(float f)
{
    uint32_t u = half_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: keep it a (quiet) NaN, truncation could make it inf */
    /* Adding 0x7fff plus the kept part's lowest bit rounds half to even; a carry into the exponent is
     * the correct result, up to inf for values past bf16's largest finite value. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

NAT_HALF_FN float half_bf16_to_f32(uint16_t h) { return half_bits_f32((uint32_t)h << 16); }

/* f32 -> float16 bits. */
NAT_HALF_FN uint16_t half_f32_to_f16(float f)
{
    const uint32_t u = half_f32_bits(f), a = u & 0x7fffffffu;
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* >= 65520: rounds to 2^16, i.e. overflows (and inf stays inf) */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal half (>= 2^-14): 23 -> 10 mantissa bits, exponent rebias 127 -> 15 */
        const uint32_t r = a + 0x0fffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | (uint16_t)((r >> 13) - (112u << 10)));
    }
    if (a < 0x33000000u) /* below 2^-25, half the smallest subnormal: rounds to zero */
        return sign;
    /* Subnormal half: the result counts units of 2^-24; value = mant * 2^(exp-150), so the count is
     * mant >> (126 - exp), rounded to nearest even. A count of 1024 is the smallest normal, as it
     * should be. */
    const uint32_t exp = a >> 23, mant = (a & 0x7fffffu) | 0x800000u, s = 126u - exp;
    uint32_t q = mant >> s;
    const uint32_t rem = mant & ((1u << s) - 1u), mid = 1u << (s - 1u);
    if (rem > mid || (rem == mid && (q & 1u)))
        q++;
    return (uint16_t)(sign | (uint16_t)q);
}

NAT_HALF_FN float half_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact: m < 2^10 */
        return sign ? -v : v;
    }
    if (e == 31)
        return half_bits_f32(sign | 0x7f800000u | (m << 13));
    return half_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* f rounded to the format and widened back (exact: every bf16 and f16 value is an f32). */
NAT_HALF_FN float half_round_bf16(float f) { return half_bf16_to_f32(half_f32_to_bf16(f)); }
NAT_HALF_FN float half_round_f16(float f) { return half_f16_to_f32(half_f32_to_f16(f)); }

/* Bits of f in the 2-byte type chosen at run time (f16 != 0: float16, else bfloat16) and back. */
NAT_HALF_FN uint16_t half_from_f32(float f, int f16) { return f16 ? half_f32_to_f16(f) : half_f32_to_bf16(f); }
NAT_HALF_FN float half_to_f32(uint16_t h, int f16) { return f16 ? half_f16_to_f32(h) : half_bf16_to_f32(h); }

#endif
