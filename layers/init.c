/* layers/init.c — parameter creation and init distributions for the modules (layers_internal.h).
 * Values are drawn one after another in row-major order from the caller's nat_rng, so a model's init
 * depends only on the seed and the order its modules are made in. */
#include "layers/layers_internal.h"

nat_status nat_layers_param_new(nat_tensor **out, int ndim, const int64_t *shape)
{
    NAT_TRY(nat_tensor_new(out, NAT_F32, NAT_CPU, ndim, shape));
    nat_set_requires_grad(*out, true);
    return NAT_OK;
}

void nat_layers_fill_trunc_normal(nat_tensor *t, float std, nat_rng *rng)
{
    float *v = nat_tensor_f32(t);
    int64_t n = nat_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        v[i] = nat_rng_trunc_normal(rng, std, -2.0f * std, 2.0f * std);
}

void nat_layers_fill_uniform(nat_tensor *t, float bound, nat_rng *rng)
{
    nat_rng_fill_uniform(rng, nat_tensor_f32(t), (size_t)nat_tensor_numel(t), -bound, bound);
}
