/* layers/dropout.c — the Dropout and DropPath modules: parameter-free wrappers holding their drop
 * probability over nat_dropout / nat_drop_path (per element / per sample along dim 0). */
#include "nat/layers.h"
#include "nat/ops.h"
#include "core/check.h"

nat_status nat_dropout_layer_forward(nat_ctx *ctx, const nat_dropout_layer *m, nat_tensor *x, bool training,
                                     nat_rng *rng, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_dropout_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_dropout_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_dropout_layer_forward", "out");
    return nat_dropout(ctx, x, m->p, training, rng, out);
}

nat_status nat_drop_path_layer_forward(nat_ctx *ctx, const nat_drop_path_layer *m, nat_tensor *x, bool training,
                                       nat_rng *rng, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_drop_path_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_drop_path_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_drop_path_layer_forward", "out");
    return nat_drop_path(ctx, x, m->p, training, rng, out);
}
