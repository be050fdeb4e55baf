/* core/ops_loss.c — losses and full reductions: cross-entropy against integer labels (with
 * label smoothing), cross-entropy against soft targets (mixup/cutmix), sum and mean. Every output is a
 * scalar of shape [1].
 *
 * Layouts: logits and soft targets are [N, C] (row = sample); labels are N int32 values in [0, C),
 * validated before any work, the first bad one named with its row. Log-sum-exp subtracts the row max
 * and is saved per row in f64: with logits around 1000 an f32 lse is off by up to 6e-5, which exp() would
 * turn into a relative error of the same size in every probability of the backward. The kernels
 * (core/cpu/loss.c, core/cuda/loss.cu; sums: core/cpu/reduce.c, core/cuda/reduce.cu) add per-row losses
 * and partial sums in a fixed order in double, so results do not depend on the number of threads. The
 * scalar loss stays on the context's device; the labels are validated on the host, then copied to an
 * int32 step tensor there, so the caller's array need not outlive the call.
 */
#include <inttypes.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

static nat_status check_logits(const nat_ctx *ctx, const nat_tensor *logits, const char *op)
{
    NAT_TRY(nat_check_f32_dev(ctx, logits, op, "logits"));
    if (logits->ndim != 2 || logits->shape[0] < 1 || logits->shape[1] < 1) {
        char s[96];
        return nat_error(NAT_ERR_SHAPE, "%s: logits %s must be [N, C] with N, C >= 1", op,
                         nat_shape_str(logits, s, sizeof s));
    }
    return NAT_OK;
}

/* ---- cross-entropy with integer labels ---- */

static nat_status ce_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gz;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gz));
    if (!gz)
        return NAT_OK;
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), cross_entropy_backward, nat_tensor_f32(node->saved[0]),
                      nat_tensor_data(node->saved[2]), NULL, nat_tensor_data(node->saved[1]), nat_tensor_f32(g),
                      node->i[0], node->i[1], (float)node->f[0], nat_tensor_f32(gz), NULL);
}

static const nat_op_def ce_op = {"cross_entropy", ce_backward};

nat_status nat_cross_entropy(nat_ctx *ctx, nat_tensor *logits, const int32_t *labels, float smoothing,
                             nat_tensor **out)
{
    NAT_CHECK_ARG(out, "cross_entropy", "out");
    NAT_TRY(check_logits(ctx, logits, "cross_entropy"));
    if (!labels)
        return nat_error(NAT_ERR_INVALID_ARG, "cross_entropy: labels is NULL");
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "cross_entropy: label smoothing %g is outside [0, 1]", (double)smoothing);
    int64_t N = logits->shape[0], C = logits->shape[1];
    for (int64_t i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C)
            return nat_error(NAT_ERR_INVALID_ARG,
                             "cross_entropy: label %" PRId32 " at row %" PRId64 " is outside [0, %" PRId64
                             ") for logits [%" PRId64 ", %" PRId64 "]",
                             labels[i], i, C, N, C);
    nat_tensor *zd, *lse_t, *y;
    NAT_TRY(nat_dense(ctx, logits, &zd));
    NAT_TRY(nat_ctx_empty(ctx, &lse_t, NAT_F64, 1, &N));
    /* The labels go to an int32 step tensor on the context's device: the caller's array need not outlive
     * the call, and backward reads them where the logits are. */
    nat_tensor *lab;
    int64_t one = 1;
    NAT_TRY(nat_ctx_empty(ctx, &lab, NAT_I32, 1, &N));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), copy_bytes, nat_tensor_data(lab), labels, (size_t)N * sizeof *labels,
                       NAT_CUDA_H2D));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), cross_entropy_forward, nat_tensor_f32(zd), nat_tensor_data(lab), NULL, N, C,
                       smoothing, nat_tensor_data(lse_t), nat_tensor_f32(y)));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &ce_op, y, 1, &logits, &node));
    if (node) {
        node->saved[0] = zd;
        node->saved[1] = lse_t;
        node->saved[2] = lab;
        node->n_saved = 3;
        node->i[0] = N, node->i[1] = C;
        node->f[0] = smoothing;
    }
    *out = y;
    return NAT_OK;
}

/* ---- cross-entropy with soft targets ---- */

static nat_status ce_soft_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gz, *gt;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gz));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gt));
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), cross_entropy_backward, nat_tensor_f32(node->saved[0]), NULL,
                      nat_tensor_f32(node->saved[1]), nat_tensor_data(node->saved[2]), nat_tensor_f32(g), node->i[0],
                      node->i[1], 0.0f, gz ? nat_tensor_f32(gz) : NULL, gt ? nat_tensor_f32(gt) : NULL);
}

static const nat_op_def ce_soft_op = {"cross_entropy_soft", ce_soft_backward};

nat_status nat_cross_entropy_soft(nat_ctx *ctx, nat_tensor *logits, nat_tensor *targets, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "cross_entropy_soft", "out");
    NAT_TRY(check_logits(ctx, logits, "cross_entropy_soft"));
    NAT_TRY(nat_check_f32_dev(ctx, targets, "cross_entropy_soft", "targets"));
    if (!nat_tensor_same_shape(logits, targets)) {
        char sl[96], st[96];
        return nat_error(NAT_ERR_SHAPE, "cross_entropy_soft: targets %s do not match logits %s",
                         nat_shape_str(targets, st, sizeof st), nat_shape_str(logits, sl, sizeof sl));
    }
    int64_t N = logits->shape[0], C = logits->shape[1];
    nat_tensor *zd, *td, *lse_t, *y;
    NAT_TRY(nat_dense(ctx, logits, &zd));
    NAT_TRY(nat_dense(ctx, targets, &td));
    NAT_TRY(nat_ctx_empty(ctx, &lse_t, NAT_F64, 1, &N));
    int64_t one = 1;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), cross_entropy_forward, nat_tensor_f32(zd), NULL, nat_tensor_f32(td), N, C, 0.0f,
                       nat_tensor_data(lse_t), nat_tensor_f32(y)));
    nat_node *node;
    nat_tensor *ins[2] = {logits, targets};
    NAT_TRY(nat_ctx_record(ctx, &ce_soft_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = zd;
        node->saved[1] = td;
        node->saved[2] = lse_t;
        node->n_saved = 3;
        node->i[0] = N, node->i[1] = C;
    }
    *out = y;
    return NAT_OK;
}

/* ---- sum and mean ---- */

/* d/dx_i of (Σ x)·f[0] is f[0] for every element (f[0] = 1 for sum, 1/n for mean). */
static nat_status sum_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    /* gx += f · g[0], g read with stride 0 everywhere: the value never leaves its device. */
    int64_t zero[NAT_MAX_DIMS] = {0};
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), binary, NAT_CUDA_SCALE, true, nat_tensor_f32(gx), gx->ndim, gx->shape,
                      nat_tensor_f32(g), zero, NULL, NULL, (float)node->f[0]);
}

static const nat_op_def sum_op = {"sum", sum_backward};
static const nat_op_def mean_op = {"mean", sum_backward};

static nat_status reduce_all(nat_ctx *ctx, nat_tensor *x, bool mean, nat_tensor **out)
{
    const char *name = mean ? "mean" : "sum";
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: out is NULL", name);
    NAT_TRY(nat_check_f32_dev(ctx, x, name, "x"));
    int64_t n = nat_tensor_numel(x);
    if (mean && n == 0) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "mean: x %s has no elements", nat_shape_str(x, sx, sizeof sx));
    }
    double f = mean ? 1.0 / (double)n : 1.0;
    nat_tensor *y;
    int64_t one = 1;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
    nat_tensor *xd;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), sum, nat_tensor_f32(xd), n, false, f, nat_tensor_f32(y)));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, mean ? &mean_op : &sum_op, y, 1, &x, &node));
    if (node)
        node->f[0] = f;
    *out = y;
    return NAT_OK;
}

nat_status nat_sum(nat_ctx *ctx, nat_tensor *x, nat_tensor **out) { return reduce_all(ctx, x, false, out); }
nat_status nat_mean(nat_ctx *ctx, nat_tensor *x, nat_tensor **out) { return reduce_all(ctx, x, true, out); }
