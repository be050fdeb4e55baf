/* layers/natten/na_backend.h — internal: the neighborhood-attention kernels of one device kind as a
 * table of function pointers, so that the ops (na_ops.c) pick kernels by the tensors' device instead of
 * branching on it. A CPU table (cpu/na_cpu.c) and a CUDA table (cuda/dispatch.cu) with identical
 * signatures; a build without CUDA simply has no CUDA table (na_backend_get says so).
 *
 * Every entry takes the problem built and validated once by the op (na_problem.h; pb->device says where
 * it runs) and raw contiguous f32 pointers on that device, layouts as in cpu/na_cpu.h:
 *   q, k, v, out, d_out, dq, dk, dv   [B, heads, *spatial, D]
 *   attn / d_attn                     [B, heads, *spatial, K]   K = prod(kernel), row-major slots
 *   rpb / drpb                        [heads, 2k0-1, ...]       NULL = no bias / no bias gradient
 *   lse                               [B, heads, *spatial]
 * Outputs are overwritten, never accumulated into.
 */
#ifndef NAT_NA_BACKEND_H
#define NAT_NA_BACKEND_H

#include <stdint.h>

#include "layers/natten/na_problem.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kernel lab's individual versions of a backend (layers/natten/dev/README.md; CUDA: v0 naive, v2
 * tiled, v3 tensor cores), for the tests and the lab, which must not name CUDA symbols directly (a build
 * without CUDA has none). Same arguments as the entries of na_backend; v3 takes 2-byte operands (bits of
 * bfloat16, or float16 when f16 != 0); to_half writes those bits of x[0..n) on pb's device. */
typedef struct na_backend_versions {
    nat_status (*qk_v0)(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);
    nat_status (*av_v0)(const na_problem *pb, const float *attn, const float *v, float *out);
    nat_status (*qk_backward_v0)(const na_problem *pb, const float *d_attn, const float *q, const float *k,
                                 float *dq, float *dk, float *drpb);
    nat_status (*av_backward_v0)(const na_problem *pb, const float *d_out, const float *attn, const float *v,
                                 float *d_attn, float *dv);
    nat_status (*qk_v2)(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);
    nat_status (*av_v2)(const na_problem *pb, const float *attn, const float *v, float *out);
    nat_status (*qk_backward_v2)(const na_problem *pb, const float *d_attn, const float *q, const float *k,
                                 float *dq, float *dk, float *drpb);
    nat_status (*av_backward_v2)(const na_problem *pb, const float *d_out, const float *attn, const float *v,
                                 float *d_attn, float *dv);
    nat_status (*fused_forward_v3)(const na_problem *pb, int f16, const uint16_t *q, const uint16_t *k,
                                   const uint16_t *v, const float *rpb, float *out, float *lse);
    nat_status (*fused_backward_v3)(const na_problem *pb, int f16, const uint16_t *q, const uint16_t *k,
                                    const uint16_t *v, const float *rpb, const float *out, const float *lse,
                                    const float *d_out, float *dq, float *dk, float *dv, float *drpb);
    nat_status (*to_half)(int device, int f16, const float *x, uint16_t *y, int64_t n);
} na_backend_versions;

typedef struct na_backend {
    const char *name; /* "cpu", "cuda" */
    /* attn = scale * q.k[key] + rpb[slot] (logits); out = sum over slots of attn * v[key]. */
    nat_status (*qk)(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn);
    nat_status (*av)(const na_problem *pb, const float *attn, const float *v, float *out);
    nat_status (*qk_backward)(const na_problem *pb, const float *d_attn, const float *q, const float *k, float *dq,
                              float *dk, float *drpb);
    nat_status (*av_backward)(const na_problem *pb, const float *d_out, const float *attn, const float *v,
                              float *d_attn, float *dv);
    /* Fused: out and lse without the [.., K] weights; the backward rebuilds them from lse. */
    nat_status (*fused_forward)(const na_problem *pb, const float *q, const float *k, const float *v,
                                const float *rpb, float *out, float *lse);
    nat_status (*fused_backward)(const na_problem *pb, const float *q, const float *k, const float *v,
                                 const float *rpb, const float *out, const float *lse, const float *d_out, float *dq,
                                 float *dk, float *dv, float *drpb);
    /* Under autocast (f16 != 0: float16, else bfloat16): the fused op on values already rounded to the
     * 2-byte type (semantics: docs/design.md §2). NULL: the backend has no kernel of its own and the f32
     * entries run on the rounded values. The CPU's pick vdpbf16ps kernels or that emulation by ISA. */
    nat_status (*fused_forward_autocast)(const na_problem *pb, int f16, const float *q, const float *k,
                                         const float *v, const float *rpb, float *out, float *lse);
    nat_status (*fused_backward_autocast)(const na_problem *pb, int f16, const float *q, const float *k,
                                          const float *v, const float *rpb, const float *out, const float *lse,
                                          const float *d_out, float *dq, float *dk, float *dv, float *drpb);
    /* y[i] = x[i] rounded to the 2-byte type, kept as f32, on `device` (-1: the CPU). */
    nat_status (*round)(int device, int f16, const float *x, float *y, int64_t n);
    const na_backend_versions *versions; /* NULL: the backend has one version of each kernel */
} na_backend;

extern const na_backend na_cpu_backend;  /* cpu/na_cpu.c */
extern const na_backend na_cuda_backend; /* cuda/dispatch.cu; defined only in CUDA builds */

/* The table of `device` (-1: the CPU, else a CUDA ordinal) in *out, or NAT_ERR_UNSUPPORTED naming op and
 * the device when there is none (a build without CUDA). Defined in na_ops.c, the one place that knows
 * whether the CUDA table exists. */
nat_status na_backend_get(int device, const char *op, const na_backend **out);

#ifdef __cplusplus
}
#endif
#endif
