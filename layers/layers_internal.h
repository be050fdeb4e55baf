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

/* How a NeighborhoodAttention module computes the NA op, dropout of the weights included:
 * q, k, v [B, heads, *spatial, D] (rpb may be NULL) -> out [B, heads, *spatial, D]. NULL means nat's own
 * choice: the fused op, or nat_na_unfused when attention dropout is active (the weights must exist to
 * be dropped). Other algorithms are plugged in only to be measured against it: nat-profile's `unfused`
 * and the legacy `gather` of bench/na_gather.c, through nat_model_set_na_fn (models/nat/nat_internal.h).
 * Not public API: a benchmark switch, not a feature. */
typedef nat_status (*nat_na_fn)(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                                const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out);
/* nat_na_qk -> nat_softmax -> nat_dropout -> nat_na_av: keeps the [.., K] attention weights. */
nat_status nat_na_unfused(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                          const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out);
/* nat_na_layer_forward with the NA op computed by fn (NULL: nat_na_layer_forward itself). */
nat_status nat_na_layer_forward_with(nat_ctx *ctx, const nat_na_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                     nat_na_fn fn, nat_tensor **out);

#endif
