/* core/ops_norm.c — LayerNorm and softmax over the last dim: checks, step tensors and the tape; the
 * kernels are core/cpu/norm.c and core/cuda/norm.cu, reached through the kernel table.
 *
 * Layout: x is [..., C] (channels-last, as transformer activations are); every op works on rows of C
 * elements, rows = numel / C. Strided inputs are made dense first. LayerNorm takes an optional affine
 * weight and bias of shape [C] and saves the mean and 1/sqrt(var + eps) of each row for its backward, as
 * PyTorch does, but in f64 [rows]: row statistics are accumulated in double with the variance taken in a
 * second pass over (x - mean), and a mean rounded to f32 would cost rows with a large mean (activations
 * around 1000 with unit spread) most of their gradient's precision. Softmax subtracts the row maximum
 * before exponentiating.
 */
#include <inttypes.h>
#include <math.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

/* ---- layernorm ---- */

static nat_status layernorm_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *xd = node->saved[0], *mean_t = node->saved[1], *rstd_t = node->saved[2], *wd = node->saved[3];
    int64_t rows = node->i[0], C = node->i[1];
    nat_tensor *gd, *gx = NULL, *gw = NULL, *gb = NULL;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (node->in[1])
        NAT_TRY(nat_grad_get(ctx, node->in[1], &gw));
    if (node->in[2])
        NAT_TRY(nat_grad_get(ctx, node->in[2], &gb));
    const float *X = nat_tensor_f32(xd), *G = nat_tensor_f32(gd), *W = wd ? nat_tensor_f32(wd) : NULL;
    const double *M = nat_tensor_data(mean_t), *R = nat_tensor_data(rstd_t);
    float *GX = gx ? nat_tensor_f32(gx) : NULL;
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), layernorm_backward, X, M, R, W, G, GX, gw ? nat_tensor_f32(gw) : NULL,
                      gb ? nat_tensor_f32(gb) : NULL, rows, C);
}

static const nat_op_def layernorm_op = {"layernorm", layernorm_backward};

static nat_status check_affine(const nat_ctx *ctx, const nat_tensor *p, const char *arg, const nat_tensor *x,
                               int64_t C)
{
    NAT_TRY(nat_check_f32_dev(ctx, p, "layernorm", arg));
    if (p->ndim != 1 || p->shape[0] != C) {
        char sp[96], sx[96];
        return nat_error(NAT_ERR_SHAPE, "layernorm: %s %s does not fit x %s (expected [%" PRId64 "], the last dim)",
                         arg, nat_shape_str(p, sp, sizeof sp), nat_shape_str(x, sx, sizeof sx), C);
    }
    return NAT_OK;
}

nat_status nat_layernorm(nat_ctx *ctx, nat_tensor *x, nat_tensor *weight, nat_tensor *bias, float eps,
                         nat_tensor **out)
{
    NAT_CHECK_ARG(out, "layernorm", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "layernorm", "x"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1)
        return nat_error(NAT_ERR_SHAPE, "layernorm: x %s has no last dim to normalise over", sx);
    if (!(eps >= 0.0f) || isinf(eps))
        return nat_error(NAT_ERR_INVALID_ARG, "layernorm: eps %g must be a finite value >= 0", (double)eps);
    int64_t C = x->shape[x->ndim - 1];
    int64_t rows = nat_tensor_numel(x) / C;
    if (weight)
        NAT_TRY(check_affine(ctx, weight, "weight", x, C));
    if (bias)
        NAT_TRY(check_affine(ctx, bias, "bias", x, C));
    nat_tensor *xd, *wd = NULL, *bd = NULL, *y, *mean_t, *rstd_t;
    NAT_TRY(nat_dense(ctx, x, &xd));
    if (weight)
        NAT_TRY(nat_dense(ctx, weight, &wd));
    if (bias)
        NAT_TRY(nat_dense(ctx, bias, &bd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    NAT_TRY(nat_ctx_empty(ctx, &mean_t, NAT_F64, 1, &rows));
    NAT_TRY(nat_ctx_empty(ctx, &rstd_t, NAT_F64, 1, &rows));
    const float *X = nat_tensor_f32(xd), *W = wd ? nat_tensor_f32(wd) : NULL, *B = bd ? nat_tensor_f32(bd) : NULL;
    float *Y = nat_tensor_f32(y);
    double *M = nat_tensor_data(mean_t), *R = nat_tensor_data(rstd_t);
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), layernorm_forward, X, W, B, Y, M, R, rows, C, eps));
    nat_node *node;
    nat_tensor *ins[3] = {x, weight, bias};
    NAT_TRY(nat_ctx_record(ctx, &layernorm_op, y, 3, ins, &node));
    if (node) {
        node->saved[0] = xd;
        node->saved[1] = mean_t;
        node->saved[2] = rstd_t;
        node->saved[3] = wd;
        node->n_saved = 4;
        node->i[0] = rows, node->i[1] = C;
        node->f[0] = eps;
    }
    *out = y;
    return NAT_OK;
}

/* ---- softmax ---- */

static nat_status softmax_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    const float *Y = nat_tensor_f32(node->saved[0]), *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    int64_t rows = node->i[0], C = node->i[1];
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), softmax_backward, Y, G, GX, rows, C);
}

static const nat_op_def softmax_op = {"softmax", softmax_backward};

nat_status nat_softmax(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "softmax", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "softmax", "x"));
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "softmax: x %s has no last dim to normalise over",
                         nat_shape_str(x, sx, sizeof sx));
    }
    int64_t C = x->shape[x->ndim - 1];
    int64_t rows = nat_tensor_numel(x) / C;
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), softmax_forward, X, Y, rows, C));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &softmax_op, y, 1, &x, &node));
    if (node) {
        node->saved[0] = y;
        node->n_saved = 1;
        node->i[0] = rows, node->i[1] = C;
    }
    *out = y;
    return NAT_OK;
}
