/* layers/natten/cuda/na_cuda.h — neighborhood attention on CUDA (fp32 and, under autocast, bf16/f16 operands;
 * 1-D/2-D/3-D): the C interface of the kernel lab (layers/natten/dev/README.md):
 *   v0 cuda/naive.cu   naive, one thread per output element (the GPU reference)
 *   v1 cuda/fused.cu   fused forward/backward, fp32
 *   v2 cuda/tiled.cu   shared-memory tiles of keys/values for the unfused 1-D/2-D ops, fp32
 *   v3 cuda/tensorcore_fwd.cu      fused forward on tensor cores (mma.sync m16n8k16, bf16/f16, f32 accumulation)
 *      cuda/tensorcore_bwd.cu  fused backward on tensor cores (dq over query tiles, dk/dv over key tiles)
 *   cuda/dispatch.cu   na_cuda_qk / av / qk_backward / av_backward and the autocast forward: which
 *                         version runs (NAT_NA_KERNEL=v0|v1|v2|v3 forces one; otherwise, where several
 *                         apply, each is timed on the first call per (device, shape, dtype, op) and the
 *                         fastest is cached)
 * A build without CUDA compiles none of this: it has no CUDA table (na_backend.h), and na_backend_get
 * answers NAT_ERR_UNSUPPORTED "nat was built without CUDA".
 *
 * Each function has the arguments of its cpu/na_cpu.h twin (same layouts, same semantics; the problem,
 * validated by the op, carries the CUDA ordinal in pb->device) and device pointers:
 *   q, k, v, out, d_out, dq, dk, dv   [B, heads, *spatial, D]
 *   attn / d_attn                     [B, heads, *spatial, K]   K = prod(kernel), row-major slots
 *   rpb / drpb                        [heads, 2k0-1, ...]       NULL = no bias / no bias gradient
 *   lse                               [B, heads, *spatial]
 * All contiguous, all on `device`, none overlapping another. Conventions (those of cpu/na_cpu.h):
 *  - outputs are overwritten, never accumulated into; masked (causal) slots get -inf logits and zero
 *    gradients;
 *  - dk and dv are gathered over each key's inverse neighbourhood and drpb is a fixed-order two-pass
 *    reduction in double: no atomics, the same bits on every run;
 *  - work is queued on the device's nat stream (core/ops_cuda_device.cu) and the call returns without
 *    waiting; every launch is checked (NAT_ERR_CUDA with the kernel's name); scratch comes from
 *    nat_mem_alloc on the device and goes back as soon as its kernels are queued (stream order makes
 *    the reuse safe);
 *  - the caller's current device is restored before returning.
 * All pointers are borrowed.
 */
#ifndef NAT_NA_CUDA_H
#define NAT_NA_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "layers/natten/na_problem.h" /* na_problem, na_validate (a C header without its own guards) */
#include "nat/status.h"

/* ---- dispatched entry points (cuda/dispatch.cu): v0 or v2 ---- */

/* attn = scale * q.k[key] + rpb[slot] (logits, before softmax). rpb may be NULL. */
nat_status na_cuda_qk(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);

/* out = sum over slots of attn[slot] * v[key(slot)] (attn holds weights). */
nat_status na_cuda_av(const na_problem *pb, const float *attn, const float *v, float *out);

/* Backward of na_cuda_qk: dq, dk and (if not NULL) drpb from d_attn. */
nat_status na_cuda_qk_backward(const na_problem *pb, const float *d_attn, const float *q,
                               const float *k, float *dq, float *dk, float *drpb);

/* Backward of na_cuda_av: d_attn (zero on masked slots) and dv from d_out. */
nat_status na_cuda_av_backward(const na_problem *pb, const float *d_out, const float *attn,
                               const float *v, float *d_attn, float *dv);

/* ---- each version's own entry points (same arguments as above), for the tests and the lab ---- */

nat_status na_cuda_qk_v0(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);
nat_status na_cuda_av_v0(const na_problem *pb, const float *attn, const float *v, float *out);
nat_status na_cuda_qk_backward_v0(const na_problem *pb, const float *d_attn, const float *q,
                                  const float *k, float *dq, float *dk, float *drpb);
nat_status na_cuda_av_backward_v0(const na_problem *pb, const float *d_out, const float *attn,
                                  const float *v, float *d_attn, float *dv);

/* v2 (cuda/tiled.cu): 1-D and 2-D problems whose tiles fit (na_v2_plan); otherwise
 * NAT_ERR_UNSUPPORTED "... v2 does not apply ...". The backwards tile the per-query half (dq; d_attn)
 * and keep v0's per-key gathers (dk; dv) and drpb reduction. */
nat_status na_cuda_qk_v2(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);
nat_status na_cuda_av_v2(const na_problem *pb, const float *attn, const float *v, float *out);
nat_status na_cuda_qk_backward_v2(const na_problem *pb, const float *d_attn, const float *q,
                                  const float *k, float *dq, float *dk, float *drpb);
nat_status na_cuda_av_backward_v2(const na_problem *pb, const float *d_out, const float *attn,
                                  const float *v, float *d_attn, float *dv);

/* ---- v1: fused kernels (cuda/fused.cu) ---- */

/* Online softmax over each query's window, no [.., K] buffer: writes out and lse. */
nat_status na_cuda_fused_forward(const na_problem *pb, const float *q, const float *k,
                                 const float *v, const float *rpb, float *out, float *lse);

/* Rebuilds the weights from lse (delta = rowsum(d_out * out) first) and writes dq, dk, dv and (if not
 * NULL) drpb. */
nat_status na_cuda_fused_backward(const na_problem *pb, const float *q, const float *k,
                                  const float *v, const float *rpb, const float *out, const float *lse,
                                  const float *d_out, float *dq, float *dk, float *dv, float *drpb);

/* ---- autocast (cuda/tensorcore_fwd.cu, cuda/dispatch.cu) ---- */

/* y[i] = x[i] rounded to float16 (f16 != 0) or bfloat16, kept as float (core/half.h's rounding). */
nat_status na_cuda_round(int device, int f16, const float *x, float *y, int64_t n);

/* The fused forward under autocast: q, k, v hold values already rounded to the 2-byte type (f16 != 0:
 * float16, else bfloat16), as float. Runs v3 on 2-byte copies where it applies (na_v3_applies), else
 * (or with NAT_NA_KERNEL=v1) v1 on the given values. out and lse as na_cuda_fused_forward. The
 * backward is na_cuda_fused_backward_autocast on the same rounded values. */
nat_status na_cuda_fused_forward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                          const float *v, const float *rpb, float *out, float *lse);

/* The fused backward under autocast: q, k, v as given to na_cuda_fused_forward_autocast (rounded values
 * as float), out and lse from it, d_out f32. Runs v3 (na_cuda_fused_backward_v3, on 2-byte copies)
 * where it applies, else (or with NAT_NA_KERNEL=v1) v1; where both apply and nothing is forced, the
 * faster by measurement. Outputs as na_cuda_fused_backward. */
nat_status na_cuda_fused_backward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                           const float *v, const float *rpb, const float *out, const float *lse,
                                           const float *d_out, float *dq, float *dk, float *dv, float *drpb);

/* v3 backward: q, k, v as 2-byte bits (as na_cuda_fused_forward_v3), rpb / out / lse / d_out f32; d_out
 * is rounded once to the operand type for the products, P and dS per step; delta and every
 * accumulation in f32. Writes dq, dk, dv and (if not NULL) drpb. Where v3 does not apply,
 * NAT_ERR_UNSUPPORTED "... v3 does not apply ...". */
nat_status na_cuda_fused_backward_v3(const na_problem *pb, int f16, const uint16_t *q, const uint16_t *k,
                                     const uint16_t *v, const float *rpb, const float *out, const float *lse,
                                     const float *d_out, float *dq, float *dk, float *dv, float *drpb);

/* v3: the tensor-core fused forward on 2-byte operands (bits of bfloat16, or float16 when f16 != 0),
 * f32 accumulation, online softmax, f32 out and lse. 1-D and 2-D, head dim 32 or 64; otherwise
 * NAT_ERR_UNSUPPORTED "... v3 does not apply ...". */
nat_status na_cuda_fused_forward_v3(const na_problem *pb, int f16, const uint16_t *q, const uint16_t *k,
                                    const uint16_t *v, const float *rpb, float *out, float *lse);

/* ---- shared by the kernels (not for callers outside layers/natten) ---- */

/* A validated problem as the kernels see it: always 3-D (na_problem's view: a 1-D or 2-D problem has
 * leading axes of length 1 with kernel 1), sizes in int where they index one axis or one head. Passed
 * to kernels by value. Filled by na_geom_init (cuda/body.h). */
typedef struct na_geom {
    int len[3], kernel[3], dilation[3], causal[3];
    int rpb_ext[3]; /* 2*kernel - 1 */
    int batch, heads, dim;
    int nkeys;      /* K = kernel[0]*kernel[1]*kernel[2] */
    int rpb_size;   /* per head: rpb_ext[0]*rpb_ext[1]*rpb_ext[2] */
    int64_t npix;   /* len[0]*len[1]*len[2]: pixels of one (batch, head) */
    int64_t nquery; /* batch*heads*npix */
    float scale;
} na_geom;

/* drpb[h, r] = sum over batch, pixels and slots with rpb index r of src[(b, h, pix), slot] (src [N, K]:
 * d_attn, or the fused backward's dS), in double, in a fixed order: per (head, r, block of 64 pixels)
 * partials, then the partials in order. Queued on the device's stream. */
nat_status na_cuda_drpb_reduce(int device, const na_geom *g, const float *src, float *drpb);

/* delta[n] = d_out[n] . out[n] (f32) for every query: the first pass of the fused backwards (v1, v3);
 * queued on the device's stream; `name` goes into launch errors. */
nat_status na_cuda_delta(int device, const na_geom *g, const float *d_out, const float *out, float *delta,
                         const char *name);

/* bits of x[0..n) in the 2-byte type (f16 != 0: float16, else bfloat16), queued (cuda/tensorcore_fwd.cu). */
nat_status na_cuda_to_half(int device, int f16, const float *x, uint16_t *y, int64_t n);

/* v0's per-key gather (na_gather_body) over the whole problem, queued on the device's stream: dk of
 * the qk backward (d_attn, q, scale) and dv of the av backward (attn, d_out, 1). */
nat_status na_cuda_gather_v0(int device, const na_geom *g, const float *coef, const float *src, float factor,
                             float *out, const char *name);

#ifdef __cplusplus
}
#endif
#endif
