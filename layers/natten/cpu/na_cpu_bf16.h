/* layers/natten/cpu/na_cpu_bf16.h — internal: the AVX512-BF16 micro-kernels of the CPU's bf16 fused
 * neighborhood attention (cpu/na_cpu_bf16.c). The drivers (windows, lists, threads, the ring of the
 * backward) are na_cpu.c's, shared with the f32 kernels; these replace its head-dim micro-kernels when
 * the operands are bfloat16.
 *
 * Call them only when nat_cpu_isa_avx512_bf16() (core/cpu/isa.h) is true: they are compiled for
 * AVX-512 F/BW/VL/BF16 whatever the build targets. Rows are base + off[j] (offsets in elements) of
 * bf16 bits (uint16_t); x and every row hold D values. Products in vdpbf16ps (bf16 x bf16, f32
 * accumulation); the f32 weights of axpys / kgrad are rounded to bf16 (to nearest even) first.
 */
#ifndef NAT_NA_CPU_BF16_H
#define NAT_NA_CPU_BF16_H

#include <stdint.h>

/* y[j*n + i] = bf16 bits of x[j][i], j < m, i < n (round to nearest even; exact for values already
 * rounded). One OpenMP region for all m operands. */
void na_bf16_pack(const float *const *x, uint16_t *y, int m, int64_t n);

/* out[j] = scale * (bf16(x) . row_j) + (bias ? bias[bidx ? bidx[j] : j] : 0), j < n; returns max_j out[j].
 * x is f32, rounded to bf16 here (to nearest even; exact for values already on the grid). */
float na_bf16_dots(int64_t D, const float *x, const uint16_t *base, const int64_t *off, int n, float scale,
                   const float *bias, const int32_t *bidx, float *out);

/* out = factor * sum_j bf16(coef[j]) * row_j (out: D floats). */
void na_bf16_axpys(int64_t D, const float *coef, const uint16_t *base, const int64_t *off, int n, float factor,
                   float *out);

/* The ring gather of the fused backward (na_cpu.c, fused_bwd_k_ring_line): over the pairs (o, i),
 * row offset ooff[o] + ioff[i] and ring index ocix[o] + icix[i],
 *   dk = scale * sum bf16(rd[idx]) * qb[row],   dv = sum bf16(rp[idx]) * gb[row]. */
void na_bf16_kgrad(int64_t D, const uint16_t *qb, const uint16_t *gb, const float *rp, const float *rd,
                   const int64_t *ooff, const int64_t *ocix, int no, const int64_t *ioff, const int64_t *icix,
                   int ni, float scale, float *dk, float *dv);

#endif
