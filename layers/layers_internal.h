/* layers/layers_internal.h — helpers shared by the modules of layers/: parameter creation and the
 * init distributions. Not part of the public API. */
#ifndef NAT_LAYERS_INTERNAL_H
#define NAT_LAYERS_INTERNAL_H

#include "nat/layers.h"

/* New persistent f32 CPU tensor with requires_grad, zero-filled. */
nat_status nat_layers_param_new(nat_tensor **out, int ndim, const int64_t *shape);
/* Normal(0, std) truncated at ±2·std, drawn in row-major order. */
void nat_layers_fill_trunc_normal(nat_tensor *t, float std, nat_rng *rng);
/* Uniform(-bound, bound), drawn in row-major order. */
void nat_layers_fill_uniform(nat_tensor *t, float bound, nat_rng *rng);

/* softmax(scale·q·k + rpb)·v the legacy way (layers/na_gather.c): q, k, v [B, heads, *spatial, D] ->
 * [B, heads, *spatial, D], through gathered copies of k and v and generic ops; autograd does the backward. */
nat_status nat_na_by_gather(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                            const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out);

#endif
