/* core/half.c — bfloat16 / float16 rounding on the host (include/nat/half.h): the public spellings of
 * core/half.h's inline conversions (bit manipulation rather than the compiler's _Float16: the result
 * must not depend on the target's FPU or flags, and it must match the device bit for bit). */
#include "nat/half.h"

#include <string.h>

#include "core/half.h"

uint16_t nat_f32_to_bf16_bits(float f) { return half_f32_to_bf16(f); }
float nat_bf16_bits_to_f32(uint16_t h) { return half_bf16_to_f32(h); }
uint16_t nat_f32_to_f16_bits(float f) { return half_f32_to_f16(f); }
float nat_f16_bits_to_f32(uint16_t h) { return half_f16_to_f32(h); }
float nat_round_bf16(float f) { return half_round_bf16(f); }
float nat_round_f16(float f) { return half_round_f16(f); }

void nat_round_array(nat_precision p, const float *src, float *dst, int64_t n)
{
    if (p == NAT_PREC_BF16) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            dst[i] = half_round_bf16(src[i]);
    } else if (p == NAT_PREC_F16) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++)
            dst[i] = half_round_f16(src[i]);
    } else if (dst != src) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    }
}
