/* nat/ops.h — differentiable tensor ops.
 *
 * Every op takes the step context first and returns its result in *out as a new step tensor owned by
 * the context (freed at nat_ctx_reset). When gradients are enabled in ctx and an input requires one,
 * the op is recorded on the tape with its backward. Inputs are borrowed. Inputs may be strided views
 * unless noted; outputs are contiguous (views say so). All ops work in f32. Shape errors name both
 * shapes.
 *
 * Layout conventions: images NCHW for conv2d; transformer activations channels-last [..., C].
 */
#ifndef NAT_OPS_H
#define NAT_OPS_H

#include <stdint.h>

#include "nat/autograd.h"
#include "nat/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear algebra (oneDNN on the CPU, cuBLAS on CUDA) ---- */

/* a [M, K] @ b [K, N] -> [M, N]; a [B, M, K] @ b [B, K, N] -> [B, M, N]; a [B, M, K] @ b [K, N] -> [B, M, N].
 * Leading batch dims beyond one are allowed on a when b is 2-D (they are flattened). */
nat_status nat_matmul(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out);
/* x [..., in] @ w[out, in]^T + bias[out] -> [..., out]; bias may be NULL. (PyTorch's nn.Linear layout.) */
nat_status nat_linear(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, nat_tensor **out);

/* ---- elementwise, with NumPy broadcasting ---- */
nat_status nat_add(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out);
nat_status nat_sub(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out);
nat_status nat_mul(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out);
/* a * s */
nat_status nat_scale(nat_ctx *ctx, nat_tensor *a, float s, nat_tensor **out);
/* x + bias broadcast along `axis` (bias has x->shape[axis] elements): axis 1 for NCHW, -1 for [..., C]. */
nat_status nat_bias_add(nat_ctx *ctx, nat_tensor *x, nat_tensor *bias, int axis, nat_tensor **out);
/* GELU, erf form: x * 0.5 * (1 + erf(x / sqrt 2)). */
nat_status nat_gelu(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);

/* ---- normalisation and softmax (over the last dim) ---- */
/* LayerNorm over the last dim; weight/bias [C] may be NULL (no affine). */
nat_status nat_layernorm(nat_ctx *ctx, nat_tensor *x, nat_tensor *weight, nat_tensor *bias, float eps,
                         nat_tensor **out);
nat_status nat_softmax(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);

/* ---- convolution and pooling ---- */
/* x [N, C, H, W], w [O, C, kh, kw], bias [O] or NULL -> [N, O, Ho, Wo], Ho = (H + 2*pad_h - kh)/stride_h + 1. */
nat_status nat_conv2d(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, int stride_h, int stride_w,
                      int pad_h, int pad_w, nat_tensor **out);
/* Mean over the spatial dims: channels_last 0: [N, C, H, W] -> [N, C]; 1: [N, H, W, C] -> [N, C]. */
nat_status nat_global_avg_pool(nat_ctx *ctx, nat_tensor *x, int channels_last, nat_tensor **out);

/* ---- shape ---- */
/* View with dims reordered: out dim i is x dim perm[i]. No copy. */
nat_status nat_permute(nat_ctx *ctx, nat_tensor *x, const int *perm, nat_tensor **out);
/* x (contiguous) read as shape view[0..view_ndim), its dims reordered by perm (out dim i is view dim
 * perm[i]), then stored dense with `shape` (the same element count): what reshape -> permute -> reshape
 * computes, as one copy forward and one in the backward, where that chain copies up to three times in
 * the backward (attention's head split and merge). */
nat_status nat_permute_reshape(nat_ctx *ctx, nat_tensor *x, int view_ndim, const int64_t *view, const int *perm,
                               int ndim, const int64_t *shape, nat_tensor **out);
/* New shape with the same element count; one entry may be -1. A view when x is contiguous, else a copy. */
nat_status nat_reshape(nat_ctx *ctx, nat_tensor *x, int ndim, const int64_t *shape, nat_tensor **out);
/* Contiguous copy (returns x itself, no node, when already contiguous). */
nat_status nat_contiguous(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);
/* View of x[..., start:end, ...] along `dim` (crop). */
nat_status nat_slice(nat_ctx *ctx, nat_tensor *x, int dim, int64_t start, int64_t end, nat_tensor **out);
/* Constant padding: before[d] and after[d] elements added to each dim d (arrays of x->ndim). */
nat_status nat_pad(nat_ctx *ctx, nat_tensor *x, const int64_t *before, const int64_t *after, float value,
                   nat_tensor **out);

/* ---- regularisation (identity when !training or p == 0) ---- */
/* Zeroes each element with probability p and scales survivors by 1/(1-p). */
nat_status nat_dropout(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out);
/* Per-sample stochastic depth: drops whole samples (dim 0) with probability p, scales by 1/(1-p). */
nat_status nat_drop_path(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out);

/* ---- losses and reductions ---- */
/* Mean cross-entropy of logits [N, C] against integer labels (N values in [0, C)), with label
 * smoothing eps (target = (1-eps)·onehot + eps/C). -> scalar [1]. */
nat_status nat_cross_entropy(nat_ctx *ctx, nat_tensor *logits, const int32_t *labels, float smoothing,
                             nat_tensor **out);
/* Mean cross-entropy against soft targets [N, C] (rows sum to 1; mixup/cutmix). -> scalar [1]. */
nat_status nat_cross_entropy_soft(nat_ctx *ctx, nat_tensor *logits, nat_tensor *targets, nat_tensor **out);
/* Sum / mean of all elements -> scalar [1]. */
nat_status nat_sum(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);
nat_status nat_mean(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
