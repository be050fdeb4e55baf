/* nat/half.h — bfloat16 and IEEE float16 rounding on the host: what autocast (nat_ctx_set_precision in
 * autograd.h) does to the operands of GEMMs and convolutions. The CPU backend emulates mixed precision
 * with these (operands rounded in a scratch copy, then an f32 sgemm), and the CUDA conversion kernels
 * (core/cuda/half.cu) run the same inline code (core/half.h), so the CPU is the GPU's reference.
 *
 * Both conversions round to nearest, ties to even. bf16 keeps f32's exponent range (8 significant bits);
 * f16 has 11 significant bits, subnormals down to 2^-24, and overflows to ±inf from 65520 up (the
 * midpoint between 65504, the largest half, and 2^16, rounds to even: up). NaN stays NaN (quiet).
 */
#ifndef NAT_HALF_H
#define NAT_HALF_H

#include <stdint.h>

#include "nat/autograd.h" /* nat_precision */

#ifdef __cplusplus
extern "C" {
#endif

uint16_t nat_f32_to_bf16_bits(float f);
float nat_bf16_bits_to_f32(uint16_t h);
uint16_t nat_f32_to_f16_bits(float f);
float nat_f16_bits_to_f32(uint16_t h);

/* f rounded to the format and widened back to f32 (exact: every bf16 and f16 value is an f32). */
float nat_round_bf16(float f);
float nat_round_f16(float f);
/* dst[i] = src[i] rounded to precision p (a copy for NAT_PREC_F32); dst may equal src. */
void nat_round_array(nat_precision p, const float *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
