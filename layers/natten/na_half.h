/* layers/natten/na_half.h — bfloat16 / float16 round-to-nearest-even conversions for neighborhood
 * attention under autocast, as __host__ __device__ inline functions (plain C11 and CUDA C++).
 *
 * The CPU path of NA under NAT_PREC_BF16 / NAT_PREC_F16 rounds q, k, v with na_round_bf16 /
 * na_round_f16 and runs the f32 kernels on the rounded values; the CUDA path stores the same bits
 * (na_bf16_bits / na_f16_bits) as 2-byte operands of the tensor-core kernel (kernel lab v3). Both
 * round exactly like __float2bfloat16_rn / __float2half_rn: ties to even, f16 subnormals kept,
 * overflow to infinity, NaN stays NaN. (core/ has its own helpers for the GEMMs; these are NA's.)
 */
#ifndef NAT_NA_HALF_H
#define NAT_NA_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define NA_HALF_HD static __host__ __device__ __forceinline__
#else
#define NA_HALF_HD static inline
#endif

NA_HALF_HD uint32_t na_f32_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

NA_HALF_HD float na_bits_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* float -> bfloat16 bits, round to nearest even. */
NA_HALF_HD uint16_t na_bf16_bits(float f)
{
    uint32_t u = na_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

NA_HALF_HD float na_bf16_f32(uint16_t h) { return na_bits_f32((uint32_t)h << 16); }

/* float -> float16 bits, round to nearest even (subnormals kept, >= 65520 in magnitude -> inf). */
NA_HALF_HD uint16_t na_f16_bits(float f)
{
    const uint32_t x = na_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* halfway between 65504 and 2^16 and above: ties to even = inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal f16 (units of 2^-24) or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: half a unit or less rounds to (even) zero */
            return (uint16_t)sign;
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, sh = 126u - e;
        uint32_t r = m >> sh;
        const uint32_t rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (ax - 0x38000000u) >> 13; /* rebias the exponent 127 -> 15, keep 10 mantissa bits */
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++; /* a carry into the exponent is the right result */
    return (uint16_t)(sign | r);
}

NA_HALF_HD float na_f16_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    if (e == 31)
        return na_bits_f32(sign | 0x7f800000u | (m << 13));
    return na_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

NA_HALF_HD float na_round_bf16(float f) { return na_bf16_f32(na_bf16_bits(f)); }
NA_HALF_HD float na_round_f16(float f) { return na_f16_f32(na_f16_bits(f)); }

/* Bits of f in the 2-byte type (f16: nonzero selects float16, else bfloat16) and back. */
NA_HALF_HD uint16_t na_half_bits(float f, int f16) { return f16 ? na_f16_bits(f) : na_bf16_bits(f); }
NA_HALF_HD float na_half_f32(uint16_t h, int f16) { return f16 ? na_f16_f32(h) : na_bf16_f32(h); }

#endif
