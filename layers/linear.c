/* layers/linear.c — the Linear module: weight [out, in] and optional bias [out] (nn.Linear's layout),
 * forward through nat_linear over the last dim of any [..., in] input. */
#include <math.h>

#include "layers/layers_internal.h"
#include "nat/ops.h"
#include "core/check.h"

nat_status nat_linear_layer_init(nat_linear_layer *m, int in_features, int out_features, bool bias, float std,
                                 nat_rng *rng)
{
    NAT_CHECK_ARG(m, "nat_linear_layer_init", "m");
    *m = (nat_linear_layer){0};
    if (in_features < 1 || out_features < 1 || !(std >= 0.0f) || !rng)
        return nat_error(NAT_ERR_INVALID_ARG, "linear layer: in %d, out %d, std %g, rng %s (need sizes >= 1, std >= 0, an rng)",
                         in_features, out_features, (double)std, rng ? "set" : "NULL");
    m->in_features = in_features;
    m->out_features = out_features;
    int64_t ws[2] = {out_features, in_features}, bs[1] = {out_features};
    nat_status s = nat_layers_param_new(&m->weight, 2, ws);
    if (s == NAT_OK && bias)
        s = nat_layers_param_new(&m->bias, 1, bs);
    if (s != NAT_OK) {
        nat_linear_layer_free(m);
        return s;
    }
    float bound = 1.0f / sqrtf((float)in_features);
    if (std > 0.0f) {
        nat_layers_fill_trunc_normal(m->weight, std, rng);
    } else {
        nat_layers_fill_uniform(m->weight, bound, rng);
        if (m->bias)
            nat_layers_fill_uniform(m->bias, bound, rng);
    }
    return NAT_OK;
}

nat_status nat_linear_layer_forward(nat_ctx *ctx, const nat_linear_layer *m, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_linear_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_linear_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_linear_layer_forward", "out");
    return nat_linear(ctx, x, m->weight, m->bias, out);
}

nat_status nat_linear_layer_params(const nat_linear_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_linear_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_linear_layer_params", "l");
    NAT_TRY(nat_param_list_add(l, prefix, "weight", m->weight, false));
    if (m->bias)
        NAT_TRY(nat_param_list_add(l, prefix, "bias", m->bias, true));
    return NAT_OK;
}

void nat_linear_layer_free(nat_linear_layer *m)
{
    nat_tensor_free(m->weight);
    nat_tensor_free(m->bias);
    m->weight = m->bias = NULL;
}
