/* core/half.c — bfloat16 / float16 rounding on the host (include/nat/half.h). Bit manipulation rather
 * than the compiler's _Float16: the result must not depend on the target's FPU or flags, and it must
 * match CUDA's __float2bfloat16_rn / __float2half_rn bit for bit. */
#include "nat/half.h"

#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t nat_f32_to_bf16_bits(float f)
{
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: keep it a (quiet) NaN, truncation could make it inf */
    /* Adding 0x7fff plus the kept part's lowest bit rounds half to even; a carry into the exponent is
     * the correct result, up to inf for values past bf16's largest finite value. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float nat_bf16_bits_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

uint16_t nat_f32_to_f16_bits(float f)
{
    uint32_t u = bits_of(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* >= 65520: rounds to 2^16, i.e. overflows (and inf stays inf) */
        return sign | 0x7c00u;
    if (a >= 0x38800000u) { /* normal half (>= 2^-14): 23 -> 10 mantissa bits, exponent rebias 127 -> 15 */
        uint32_t r = a + 0x0fffu + ((a >> 13) & 1u);
        return sign | (uint16_t)((r >> 13) - (112u << 10));
    }
    if (a < 0x33000000u) /* below 2^-25, half the smallest subnormal: rounds to zero */
        return sign;
    /* Subnormal half: the result counts units of 2^-24; value = mant · 2^(exp-150), so the count is
     * mant >> (126 - exp), rounded to nearest even. A count of 1024 is the smallest normal, as it
     * should be. */
    uint32_t exp = a >> 23, mant = (a & 0x7fffffu) | 0x800000u, s = 126u - exp;
    uint32_t q = mant >> s, rem = mant & ((1u << s) - 1u), half = 1u << (s - 1u);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return sign | (uint16_t)q;
}

float nat_f16_bits_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact: m < 2^10 */
        return sign ? -v : v;
    }
    if (e == 31)
        return float_of(sign | 0x7f800000u | (m << 13));
    return float_of(sign | ((e + 112u) << 23) | (m << 13));
}

float nat_round_bf16(float f) { return nat_bf16_bits_to_f32(nat_f32_to_bf16_bits(f)); }
float nat_round_f16(float f) { return nat_f16_bits_to_f32(nat_f32_to_f16_bits(f)); }

void nat_round_array(nat_precision p, const float *src, float *dst, int64_t n)
{
    if (p == NAT_PREC_BF16) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            dst[i] = nat_round_bf16(src[i]);
    } else if (p == NAT_PREC_F16) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            dst[i] = nat_round_f16(src[i]);
    } else if (dst != src) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    }
}
