/* layers/mlp.c — the Mlp module (timm's, as NAT uses it): fc1 -> GELU (erf) -> dropout -> fc2 -> dropout,
 * over the last dim of a channels-last [..., C] input. */
#include <stdio.h>

#include "nat/layers.h"
#include "nat/ops.h"
#include "core/check.h"

nat_status nat_mlp_layer_init(nat_mlp_layer *m, int in_features, int hidden_features, int out_features, float drop, float std,
                              nat_rng *rng)
{
    NAT_CHECK_ARG(m, "nat_mlp_layer_init", "m");
    *m = (nat_mlp_layer){0};
    if (!(drop >= 0.0f && drop < 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "mlp: drop %g must be in [0, 1)", (double)drop);
    m->drop = drop;
    nat_status s = nat_linear_layer_init(&m->fc1, in_features, hidden_features, true, std, rng);
    if (s == NAT_OK)
        s = nat_linear_layer_init(&m->fc2, hidden_features, out_features, true, std, rng);
    if (s != NAT_OK) {
        nat_mlp_layer_free(m);
        return nat_error_context(s, "mlp %d -> %d -> %d", in_features, hidden_features, out_features);
    }
    return NAT_OK;
}

nat_status nat_mlp_layer_forward(nat_ctx *ctx, const nat_mlp_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                 nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_mlp_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_mlp_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_mlp_layer_forward", "out");
    nat_tensor *h;
    NAT_TRY(nat_linear_layer_forward(ctx, &m->fc1, x, &h));
    NAT_TRY(nat_gelu(ctx, h, &h));
    NAT_TRY(nat_dropout(ctx, h, m->drop, training, rng, &h));
    NAT_TRY(nat_linear_layer_forward(ctx, &m->fc2, h, &h));
    return nat_dropout(ctx, h, m->drop, training, rng, out);
}

nat_status nat_mlp_layer_params(const nat_mlp_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_mlp_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_mlp_layer_params", "l");
    char p[256];
    snprintf(p, sizeof p, "%s%sfc1", prefix ? prefix : "", prefix && *prefix ? "." : "");
    NAT_TRY(nat_linear_layer_params(&m->fc1, l, p));
    snprintf(p, sizeof p, "%s%sfc2", prefix ? prefix : "", prefix && *prefix ? "." : "");
    return nat_linear_layer_params(&m->fc2, l, p);
}

void nat_mlp_layer_free(nat_mlp_layer *m)
{
    nat_linear_layer_free(&m->fc1);
    nat_linear_layer_free(&m->fc2);
}
