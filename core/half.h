/* core/half.h — internal: bfloat16 / float16 <-> f32 conversions, round to nearest even, as inline
 * functions that compile as plain C11 (host) and as CUDA __host__ __device__ code. The one definition
 * behind include/nat/half.h (core/half.c), the safetensors reader (core/safetensors.c), the device
 * rounding of autocast (core/cuda/half.cu) and neighborhood attention under autocast (CPU rounding
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

/* f32 -> float16 bits. (This form, remainder compared with the halfway point, is the one the NA
 * tensor-core kernels were tuned with: it keeps their register counts.) */
NAT_HALF_FN uint16_t half_f32_to_f16(float f)
{
    const uint32_t x = half_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf stays inf; NaN becomes the quiet 0x7e00 */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* >= 65520, halfway between 65504 and 2^16: ties to even = inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal f16 (units of 2^-24) or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: half a unit or less rounds to (even) zero */
            return (uint16_t)sign;
        /* value = mant * 2^(exp-150), so the count of units is mant >> (126 - exp), rounded to nearest
         * even; a count of 1024 is the smallest normal, as it should be. */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, sh = 126u - e;
        uint32_t r = m >> sh;
        const uint32_t rem = m & ((1u << sh) - 1u), mid = 1u << (sh - 1u);
        if (rem > mid || (rem == mid && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (ax - 0x38000000u) >> 13; /* rebias the exponent 127 -> 15, keep 10 mantissa bits */
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++; /* a carry into the exponent is the right result, up to inf */
    return (uint16_t)(sign | r);
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
