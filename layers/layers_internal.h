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

#endif
