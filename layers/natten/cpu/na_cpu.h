/* layers/natten/cpu/na_cpu.h — fast CPU neighborhood-attention kernels (1-D, 2-D, 3-D) on raw fp32 pointers.
 * Same arguments and semantics as the double-precision test oracle (tests/ref/na_ref.h), in float; the
 * autograd ops of layers/natten/na_ops.c wrap them.
 *
 * Layouts (contiguous, row-major; see na_problem.h): q, k, v, out, d_out, dq, dk, dv [B, heads, *spatial, D];
 * attn / d_attn [B, heads, *spatial, K], K = prod(kernel), row-major slot order over the kernel axes;
 * rpb / drpb [heads, 2k0-1, ...] (NULL = no bias); lse [B, heads, *spatial].
 *
 * Conventions:
 *  - The problem comes validated (na_problem_init, called once by the op in na_ops.c) and every
 *    pointer is non-NULL except the optional rpb / drpb: the kernels check neither again. They return
 *    NAT_OK, or NAT_ERR_OOM when scratch (nat_mem_alloc(NAT_CPU), given back before returning) fails.
 *  - All pointers are borrowed; inputs and outputs must not overlap.
 *  - Outputs are overwritten, never accumulated into (gradient buffers need no zeroing).
 *  - Masked (causal) slots get -inf logits, zero weights and zero gradients.
 *  - Threads: OpenMP over batch * heads * rows (the calling thread's team size). Results do not depend
 *    on scheduling except drpb, whose per-thread partial sums are added in thread order (deterministic
 *    for a given thread count).
 *  - dk and dv are gathered over each key's inverse neighbourhood: no atomics, deterministic.
 */
#ifndef NAT_NA_CPU_H
#define NAT_NA_CPU_H

#include <stdint.h>

#include "layers/natten/na_problem.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* attn = scale * q.k[key] + rpb[slot] (logits, before softmax). rpb may be NULL. */
nat_status na_cpu_qk(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);

/* out = sum over slots of attn[slot] * v[key(slot)] (attn holds weights). */
nat_status na_cpu_av(const na_problem *pb, const float *attn, const float *v, float *out);

/* Backward of na_cpu_qk: dq, dk and (if not NULL) drpb from d_attn. */
nat_status na_cpu_qk_backward(const na_problem *pb, const float *d_attn,
                              const float *q, const float *k, float *dq, float *dk, float *drpb);

/* Backward of na_cpu_av: d_attn (zero on masked slots) and dv from d_out. */
nat_status na_cpu_av_backward(const na_problem *pb, const float *d_out,
                              const float *attn, const float *v, float *d_attn, float *dv);

/* Fused forward (logits, softmax, weighted sum) without materialising the [.., K] weights: writes out
 * and lse. */
nat_status na_cpu_fused_forward(const na_problem *pb, const float *q, const float *k,
                                const float *v, const float *rpb, float *out, float *lse);

/* Fused backward: rebuilds the weights from lse (FlashAttention-style, delta = rowsum(d_out * out)) and
 * writes dq, dk, dv and (if not NULL) drpb. */
nat_status na_cpu_fused_backward(const na_problem *pb, const float *q, const float *k,
                                 const float *v, const float *rpb, const float *out, const float *lse,
                                 const float *d_out, float *dq, float *dk, float *dv, float *drpb);

/* ---- Autocast (na_backend's fused_*_autocast entries) ----
 * q, k, v hold values already rounded to bf16 (f16 == 0) or f16 (f16 != 0), kept in f32. For bf16
 * where vdpbf16ps pays (nat_cpu_bf16_vector_native, core/cpu/isa.h: AVX512_BF16 allowed by the cap,
 * ONEDNN_MAX_CPU_ISA, on an AMD core) the products run in vdpbf16ps with the semantics of the CUDA
 * tensor-core kernels (cuda/tensorcore.h, tensorcore_bwd.h; docs/design.md §2):
 *   forward   S = q.k (bf16 x bf16, f32 sums); logits scale*S + rpb, max, P = exp(logit - max), the
 *             sum l and lse = max + log l in f32 from the unrounded P; out = (sum bf16(P) v) / l.
 *   backward  delta = rowsum(d_out * out) in f32 from the f32 d_out and out; d_out rounded to bf16
 *             once; S = q.k, dP = bf16(d_out).v; P = exp(scale S + rpb - lse), dS = P (dP - delta)
 *             in f32; dq = scale sum bf16(dS) k, dk = scale sum bf16(dS) q, dv = sum bf16(P)
 *             bf16(d_out); drpb = sum of the f32 dS.
 * Otherwise (f16, no AVX512_BF16, or a CPU whose vdpbf16ps is no faster than its f32 FMAs: an Intel
 * core, nat_cpu_bf16_vector_native in core/cpu/isa.h) the f32 fused kernels run on the rounded values
 * (the emulation: nothing rounded past the inputs). Same layouts, conventions and threading as the f32
 * kernels; the bf16 copies of the operands live in scratch (nat_mem_alloc(NAT_CPU), freed before
 * returning). */
typedef enum na_cpu_autocast_kernel {
    NA_CPU_AUTOCAST_EMULATED = 0, /* the f32 kernels on the rounded values */
    NA_CPU_AUTOCAST_BF16 = 1,     /* vdpbf16ps kernels */
} na_cpu_autocast_kernel;

/* The vdpbf16ps kernels themselves, whatever the cap: for the autocast entries, the tests and nat-bench.
 * The CPU must have AVX512_BF16 (nat_cpu_isa_detected() >= NAT_ISA_AVX512_CORE_BF16). */
nat_status na_cpu_fused_forward_bf16(const na_problem *pb, const float *q, const float *k, const float *v,
                                     const float *rpb, float *out, float *lse);
nat_status na_cpu_fused_backward_bf16(const na_problem *pb, const float *q, const float *k, const float *v,
                                      const float *rpb, const float *out, const float *lse, const float *d_out,
                                      float *dq, float *dk, float *dv, float *drpb);

/* The lane kernels of the vdpbf16ps path (cpu/na_cpu_bf16_rows.h: 16 queries or keys per vector for the
 * windows unclamped along the last axis) on (the default) or off (every query and key through the
 * per-query micro-kernels): for the tests, which compare the two, and nat-bench. Not thread-safe: set it
 * between calls. */
void na_cpu_bf16_set_rows(int on);
int na_cpu_bf16_rows(void);

/* The kernel the two entries below run for this f16 flag on this CPU under this cap. */
na_cpu_autocast_kernel na_cpu_autocast_path(int f16);

nat_status na_cpu_fused_forward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                         const float *v, const float *rpb, float *out, float *lse);

nat_status na_cpu_fused_backward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                          const float *v, const float *rpb, const float *out, const float *lse,
                                          const float *d_out, float *dq, float *dk, float *dv, float *drpb);

#ifdef __cplusplus
}
#endif
#endif
