/* tests/ref/na_ref.h — plain reference implementation of neighborhood attention (1-D, 2-D, 3-D):
 * the oracle the fast kernels and the finite-difference checks are tested against. Double precision
 * throughout (inputs, outputs and accumulators); loops written for reading, not speed.
 *
 * Layouts (contiguous, row-major; see na_problem.h): q, k, v, out, d_out, dq, dk, dv [B, heads, *spatial, D];
 * attn / d_attn [B, heads, *spatial, K] with K = prod(kernel) and row-major slot order over the kernel
 * axes; rpb / drpb [heads, 2k0-1, ...] (NULL = no bias); lse [B, heads, *spatial].
 *
 * Every function validates p against the sizes (na_validate) and returns its status, or NAT_ERR_OOM.
 * All pointers are borrowed. Outputs are overwritten, never accumulated into: gradient buffers need no
 * zeroing and their old contents are lost. Masked (causal) slots hold -inf logits, zero weights and zero
 * gradients.
 */
#ifndef NAT_NA_REF_H
#define NAT_NA_REF_H

#include <stdint.h>

#include "layers/natten/na_problem.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* attn = scale * q.k[key] + rpb[slot]: the logits, before softmax. rpb may be NULL. */
nat_status na_ref_qk(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                     int64_t dim, const double *q, const double *k, const double *rpb, double *attn);

/* out = sum over slots of attn[slot] * v[key(slot)]; attn holds weights (after softmax). */
nat_status na_ref_av(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                     int64_t dim, const double *attn, const double *v, double *out);

/* Backward of na_ref_qk: from d_attn (gradient of the logits) writes dq, dk and, when drpb is not
 * NULL, drpb (summed over batch and pixels). dk is gathered over each key's inverse neighbourhood. */
nat_status na_ref_qk_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                              const int64_t *spatial, int64_t dim, const double *d_attn,
                              const double *q, const double *k, double *dq, double *dk, double *drpb);

/* Backward of na_ref_av: from d_out writes d_attn (= d_out . v[key], zero on masked slots) and dv
 * (gathered over the inverse neighbourhood). */
nat_status na_ref_av_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                              const int64_t *spatial, int64_t dim, const double *d_out,
                              const double *attn, const double *v, double *d_attn, double *dv);

/* Fused forward: logits, softmax over the K slots, weighted sum of v. Writes out and lse (the
 * log-sum-exp of each query's logits, which the backward uses to rebuild the weights). */
nat_status na_ref_fused_forward(const nat_na_params *p, int64_t batch, int64_t heads,
                                const int64_t *spatial, int64_t dim, const double *q, const double *k,
                                const double *v, const double *rpb, double *out, double *lse);

/* Fused backward: from q, k, v, rpb, the forward's out and lse, and d_out, writes dq, dk, dv and (when
 * not NULL) drpb. Weights are rebuilt as exp(logit - lse); delta = rowsum(d_out * out). */
nat_status na_ref_fused_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                                 const int64_t *spatial, int64_t dim, const double *q, const double *k,
                                 const double *v, const double *rpb, const double *out,
                                 const double *lse, const double *d_out, double *dq, double *dk,
                                 double *dv, double *drpb);

#ifdef __cplusplus
}
#endif
#endif
