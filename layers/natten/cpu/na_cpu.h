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

#ifdef __cplusplus
}
#endif
#endif
