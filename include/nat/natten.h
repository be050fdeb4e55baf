/* nat/natten.h — neighborhood attention as differentiable ops (NATTEN's exact semantics; see the
 * README and docs/design.md §2).
 *
 * Layouts (any strides accepted; copied to dense when needed):
 *   q, k, v, out   [B, heads, *spatial, D]       spatial has p->ndim axes (1, 2 or 3)
 *   attn           [B, heads, *spatial, K]       K = prod(kernel); slot a*k1 + b in 2-D (a along axis 0)
 *   rpb            [heads, 2k0-1 (, 2k1-1 (, 2k2-1))], optional (NULL); not allowed with causal axes
 * nat_na_qk gives the logits (scale·q·k + rpb; masked causal slots are -inf); apply nat_softmax and
 * nat_na_av for the unfused path. nat_na is the fused op: it never keeps the [.., K] weights, only a
 * per-query log-sum-exp, and its backward recomputes the weights.
 * Errors name the numbers: feature map smaller than kernel x dilation, even or < 3 kernel, dilation < 1,
 * rpb with causal, shapes that disagree.
 */
#ifndef NAT_NATTEN_H
#define NAT_NATTEN_H

#include "nat/autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Neighborhood-attention descriptor (plain value). Entries past ndim are ignored. */
typedef struct nat_na_params {
    int ndim;        /* 1, 2 or 3 spatial axes */
    int kernel[3];   /* odd, >= 3, per axis */
    int dilation[3]; /* >= 1 */
    int causal[3];   /* 0 or 1 per axis */
    float scale;     /* <= 0 means D^-1/2 */
} nat_na_params;

/* The same kernel size and dilation on every axis, no causal axis, default scale. */
nat_na_params nat_na_params_make(int ndim, int kernel, int dilation);

/* Logits [B, heads, *spatial, K] = scale * q·k[neighbour] + rpb. */
nat_status nat_na_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p,
                     nat_tensor **attn);
/* out [B, heads, *spatial, D] = Σ_slots attn[slot] · v[neighbour]. */
nat_status nat_na_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p, nat_tensor **out);
/* Fused softmax(qk + rpb) · v. */
nat_status nat_na(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb, const nat_na_params *p,
                  nat_tensor **out);
/* nat_na on q, k, v stacked in one tensor qkv [3, B, heads, *spatial, D] (qkv[0] = q, [1] = k, [2] = v):
 * the same kernels and values; the backward writes dq, dk, dv into the thirds of one gradient buffer
 * (the NA layer makes qkv in one copy from its projection, nat_permute_reshape). */
nat_status nat_na_packed(nat_ctx *ctx, nat_tensor *qkv, nat_tensor *rpb, const nat_na_params *p, nat_tensor **out);

/* Per-rank spellings (NATTEN's na1d/na2d/na3d names); each checks p->ndim. */
nat_status nat_na1d_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p, nat_tensor **attn);
nat_status nat_na2d_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p, nat_tensor **attn);
nat_status nat_na3d_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p, nat_tensor **attn);
nat_status nat_na1d_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p, nat_tensor **out);
nat_status nat_na2d_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p, nat_tensor **out);
nat_status nat_na3d_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p, nat_tensor **out);
nat_status nat_na1d(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb, const nat_na_params *p, nat_tensor **out);
nat_status nat_na2d(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb, const nat_na_params *p, nat_tensor **out);
nat_status nat_na3d(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb, const nat_na_params *p, nat_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
