/* layers/conv2d.c — the Conv2d module (NCHW, square kernel/stride/padding): weight [out, in, k, k] and
 * optional bias [out] as nn.Conv2d, with PyTorch's default init: kaiming-uniform a=√5, i.e. weight and
 * bias uniform(±1/sqrt(in·k·k)). */
#include <math.h>

#include "layers/layers_internal.h"
#include "nat/ops.h"
#include "core/check.h"

nat_status nat_conv2d_layer_init(nat_conv2d_layer *m, int in_channels, int out_channels, int kernel, int stride,
                                 int pad, bool bias, nat_rng *rng)
{
    NAT_CHECK_ARG(m, "nat_conv2d_layer_init", "m");
    *m = (nat_conv2d_layer){0};
    if (in_channels < 1 || out_channels < 1 || kernel < 1 || stride < 1 || pad < 0 || !rng)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "conv2d layer: in %d, out %d, kernel %d, stride %d, pad %d, rng %s (need sizes >= 1, pad >= 0, an rng)",
                         in_channels, out_channels, kernel, stride, pad, rng ? "set" : "NULL");
    m->in_channels = in_channels;
    m->out_channels = out_channels;
    m->kernel = kernel;
    m->stride = stride;
    m->pad = pad;
    int64_t ws[4] = {out_channels, in_channels, kernel, kernel}, bs[1] = {out_channels};
    nat_status s = nat_layers_param_new(&m->weight, 4, ws);
    if (s == NAT_OK && bias)
        s = nat_layers_param_new(&m->bias, 1, bs);
    if (s != NAT_OK) {
        nat_conv2d_layer_free(m);
        return s;
    }
    float bound = 1.0f / sqrtf((float)in_channels * (float)kernel * (float)kernel);
    nat_layers_fill_uniform(m->weight, bound, rng);
    if (m->bias)
        nat_layers_fill_uniform(m->bias, bound, rng);
    return NAT_OK;
}

nat_status nat_conv2d_layer_forward(nat_ctx *ctx, const nat_conv2d_layer *m, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_conv2d_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_conv2d_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_conv2d_layer_forward", "out");
    return nat_conv2d(ctx, x, m->weight, m->bias, m->stride, m->stride, m->pad, m->pad, out);
}

nat_status nat_conv2d_layer_params(const nat_conv2d_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_conv2d_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_conv2d_layer_params", "l");
    NAT_TRY(nat_param_list_add(l, prefix, "weight", m->weight, false));
    if (m->bias)
        NAT_TRY(nat_param_list_add(l, prefix, "bias", m->bias, true));
    return NAT_OK;
}

void nat_conv2d_layer_free(nat_conv2d_layer *m)
{
    nat_tensor_free(m->weight);
    nat_tensor_free(m->bias);
    m->weight = m->bias = NULL;
}
