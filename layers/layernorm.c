/* layers/layernorm.c — the LayerNorm module over the last dim: weight (init 1) and bias (init 0), both
 * [dim] and both exempt from weight decay. */
#include "layers/layers_internal.h"
#include "nat/ops.h"
#include "core/check.h"

nat_status nat_layernorm_layer_init(nat_layernorm_layer *m, int dim, float eps)
{
    NAT_CHECK_ARG(m, "nat_layernorm_layer_init", "m");
    *m = (nat_layernorm_layer){0};
    if (dim < 1 || !(eps > 0.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "layernorm layer: dim %d, eps %g (need dim >= 1, eps > 0)", dim, (double)eps);
    m->dim = dim;
    m->eps = eps;
    int64_t s1[1] = {dim};
    nat_status s = nat_layers_param_new(&m->weight, 1, s1);
    if (s == NAT_OK)
        s = nat_layers_param_new(&m->bias, 1, s1);
    if (s != NAT_OK) {
        nat_layernorm_layer_free(m);
        return s;
    }
    return nat_tensor_fill(m->weight, 1.0f);
}

nat_status nat_layernorm_layer_forward(nat_ctx *ctx, const nat_layernorm_layer *m, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_layernorm_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_layernorm_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_layernorm_layer_forward", "out");
    return nat_layernorm(ctx, x, m->weight, m->bias, m->eps, out);
}

nat_status nat_layernorm_layer_params(const nat_layernorm_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_layernorm_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_layernorm_layer_params", "l");
    NAT_TRY(nat_param_list_add(l, prefix, "weight", m->weight, true));
    return nat_param_list_add(l, prefix, "bias", m->bias, true);
}

void nat_layernorm_layer_free(nat_layernorm_layer *m)
{
    nat_tensor_free(m->weight);
    nat_tensor_free(m->bias);
    m->weight = m->bias = NULL;
}
