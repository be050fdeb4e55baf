/* core/ops_conv.c — 2-D convolution, forward and backward: checks, step tensors and the tape. The kernels
 * are oneDNN convolutions on the CPU (core/cpu/conv.c) and cuDNN on a CUDA device (core/cuda/conv.cu,
 * the bias through the elementwise and reduction kernels), reached through the kernel table.
 *
 * Layouts: x [N, C, H, W], weight [O, C, kh, kw] (PyTorch's), bias [O], out [N, O, Ho, Wo], all
 * row-major.
 *
 * Autocast (nat_ctx_precision BF16 / F16): x, the weight and (backward) the output gradient are rounded
 * to the format before the convolutions, accumulation and results stay f32; the bias and its gradient
 * stay f32. The CPU rounds into scratch and runs the f32 path on it (exact emulation up to summation
 * order); CUDA runs cuDNN with 2-byte tensors (see core/cuda/kernels.h for its one extra rounding). The
 * precision is saved on the node for backward.
 */
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

static nat_cuda_conv_geom geom_of(const nat_tensor *x, const nat_tensor *w, const int64_t *attr)
{
    nat_cuda_conv_geom g;
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.O = w->shape[0], g.kh = w->shape[2], g.kw = w->shape[3];
    g.sh = attr[0], g.sw = attr[1], g.ph = attr[2], g.pw = attr[3];
    g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    return g;
}

static nat_status conv2d_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *grad_out)
{
    nat_tensor *x = node->saved[0], *w = node->saved[1];
    nat_cuda_conv_geom g = geom_of(x, w, node->i);
    nat_precision prec = (nat_precision)node->i[4];
    nat_tensor *gd, *gx, *gw, *gb;
    NAT_TRY(nat_dense(ctx, grad_out, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gw));
    NAT_TRY(nat_grad_get(ctx, node->in[2], &gb));
    if (g.N == 0 || g.O == 0)
        return NAT_OK;
    const float *G = nat_tensor_f32(gd);
    const nat_exec *ex = NAT_EXEC_CTX(ctx);
    if (gb)
        NAT_TRY(NAT_KERNEL(ex, conv2d_bias_grad, G, g.N, g.O, g.Ho * g.Wo, nat_tensor_f32(gb)));
    if (gx && prec != NAT_PREC_F32)
        NAT_TRY(NAT_KERNEL(ex, conv2d_backward_data_lowp, (int)prec, &g, nat_tensor_f32(w), G, nat_tensor_f32(gx)));
    else if (gx)
        NAT_TRY(NAT_KERNEL(ex, conv2d_backward_data, &g, nat_tensor_f32(w), G, nat_tensor_f32(gx)));
    if (gw && prec != NAT_PREC_F32)
        NAT_TRY(NAT_KERNEL(ex, conv2d_backward_filter_lowp, (int)prec, &g, nat_tensor_f32(x), G, nat_tensor_f32(gw)));
    else if (gw)
        NAT_TRY(NAT_KERNEL(ex, conv2d_backward_filter, &g, nat_tensor_f32(x), G, nat_tensor_f32(gw)));
    return NAT_OK;
}

static const nat_op_def conv2d_op = {"conv2d", conv2d_backward};

nat_status nat_conv2d(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, int stride_h, int stride_w,
                      int pad_h, int pad_w, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "conv2d", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "conv2d", "input"));
    NAT_TRY(nat_check_f32_dev(ctx, w, "conv2d", "weight"));
    char sx[96], sw[96];
    nat_shape_str(x, sx, sizeof sx);
    nat_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4)
        return nat_error(NAT_ERR_SHAPE, "conv2d: input %s must be [N, C, H, W] (weight %s)", sx, sw);
    if (w->ndim != 4 || w->shape[1] != x->shape[1])
        return nat_error(NAT_ERR_SHAPE, "conv2d: weight %s does not fit input %s (expected weight [O, %" PRId64 ", kh, kw])",
                         sw, sx, x->shape[1]);
    if (w->shape[1] == 0 || w->shape[2] == 0 || w->shape[3] == 0)
        return nat_error(NAT_ERR_SHAPE, "conv2d: weight %s has an empty dimension (input %s)", sw, sx);
    if (bias) {
        NAT_TRY(nat_check_f32_dev(ctx, bias, "conv2d", "bias"));
        if (bias->ndim != 1 || bias->shape[0] != w->shape[0]) {
            char sb[96];
            return nat_error(NAT_ERR_SHAPE, "conv2d: bias %s does not fit weight %s (expected [%" PRId64 "])",
                             nat_shape_str(bias, sb, sizeof sb), sw, w->shape[0]);
        }
    }
    if (stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0)
        return nat_error(NAT_ERR_INVALID_ARG, "conv2d: stride %dx%d, padding %dx%d: strides must be >= 1 and padding >= 0",
                         stride_h, stride_w, pad_h, pad_w);
    if (x->shape[2] + 2 * (int64_t)pad_h < w->shape[2] || x->shape[3] + 2 * (int64_t)pad_w < w->shape[3])
        return nat_error(NAT_ERR_SHAPE, "conv2d: kernel %" PRId64 "x%" PRId64 " of weight %s is larger than input %s padded by %dx%d",
                         w->shape[2], w->shape[3], sw, sx, pad_h, pad_w);
    int64_t attr[4] = {stride_h, stride_w, pad_h, pad_w};
    nat_cuda_conv_geom g = geom_of(x, w, attr);
    if (g.C * g.kh * g.kw > INT_MAX || g.Ho * g.Wo > INT_MAX || g.O > INT_MAX)
        return nat_error(NAT_ERR_UNSUPPORTED, "conv2d: input %s with weight %s exceeds sgemm's int dimensions", sx, sw);

    nat_tensor *xd, *wd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_dense(ctx, w, &wd));
    const float *B = NULL;
    if (bias) {
        nat_tensor *bd;
        NAT_TRY(nat_dense(ctx, bias, &bd));
        B = nat_tensor_f32(bd);
    }
    int64_t shape[4] = {g.N, g.O, g.Ho, g.Wo};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 4, shape));
    nat_precision prec = nat_ctx_precision(ctx);
    if (g.N > 0 && g.O > 0 && prec != NAT_PREC_F32)
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), conv2d_forward_lowp, (int)prec, &g, nat_tensor_f32(xd), nat_tensor_f32(wd),
                           B, nat_tensor_f32(y)));
    else if (g.N > 0 && g.O > 0)
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), conv2d_forward, &g, nat_tensor_f32(xd), nat_tensor_f32(wd), B,
                           nat_tensor_f32(y)));

    nat_node *node;
    nat_tensor *ins[3] = {x, w, bias};
    NAT_TRY(nat_ctx_record(ctx, &conv2d_op, y, 3, ins, &node));
    if (node) {
        node->saved[0] = xd;
        node->saved[1] = wd;
        node->n_saved = 2;
        memcpy(node->i, attr, sizeof attr);
        node->i[4] = prec;
    }
    *out = y;
    return NAT_OK;
}
