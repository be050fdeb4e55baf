/* core/ops_loss.c — losses and full reductions on the CPU: cross-entropy against integer labels (with
 * label smoothing), cross-entropy against soft targets (mixup/cutmix), sum and mean. Every output is a
 * scalar of shape [1].
 *
 * Layouts: logits and soft targets are [N, C] (row = sample); labels are N int32 values in [0, C),
 * validated before any work, the first bad one named with its row. Log-sum-exp subtracts the row max
 * and is saved per row in f64: with logits around 1000 an f32 lse is off by up to 6e-5, which exp() would
 * turn into a relative error of the same size in every probability of the backward. Per-row losses and partial sums are added in a fixed order in double, so results do not depend on
 * the number of threads. The labels are copied into step memory, so the caller's array need not outlive
 * the call.
 *
 * On a CUDA device (core/cuda/loss.cu, core/cuda/reduce.cu) the scalar loss stays on the device;
 * the labels are validated on the host, then copied to an int32 step tensor on the device.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

#define PAR_MIN 32768

/* log Σ_c exp(z_c), stable. */
static double row_logsumexp(const float *z, int64_t C)
{
    float mx = z[0];
    for (int64_t c = 1; c < C; c++)
        mx = z[c] > mx ? z[c] : mx;
    double s = 0;
    for (int64_t c = 0; c < C; c++)
        s += expf(z[c] - mx);
    return (double)mx + log(s);
}

/* lse as a float plus its rounding residual: z - hi is exact for logits near lse, so (z - hi) - lo keeps
 * full float precision where the probabilities are large. */
static void split(double lse, float *hi, float *lo)
{
    *hi = (float)lse;
    *lo = (float)(lse - (double)*hi);
}

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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), cross_entropy_backward, nat_tensor_f32(node->saved[0]), nat_tensor_data(node->saved[2]),
                                               NULL, nat_tensor_data(node->saved[1]), nat_tensor_f32(g), node->i[0],
                                               node->i[1], (float)node->f[0], nat_tensor_f32(gz), NULL);
    const float *Z = nat_tensor_f32(node->saved[0]);
    const double *L = nat_tensor_data(node->saved[1]);
    const int32_t *labels = node->extra;
    int64_t N = node->i[0], C = node->i[1];
    float eps = (float)node->f[0];
    float g0 = nat_tensor_f32(g)[0] / (float)N;
    float off = eps / (float)C, on = 1.0f - eps + off;
    float *GZ = nat_tensor_f32(gz);
    /* d/dz_c = (softmax(z)_c - target_c) / N */
#pragma omp parallel for if (N * C > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *z = Z + i * C;
        float *gr = GZ + i * C;
        float hi, lo;
        split(L[i], &hi, &lo);
        for (int64_t c = 0; c < C; c++)
            gr[c] += g0 * (expf((z[c] - hi) - lo) - off);
        gr[labels[i]] -= g0 * (on - off);
    }
    return NAT_OK;
}

static const nat_op_def ce_op = {"cross_entropy", ce_backward};

nat_status nat_cross_entropy(nat_ctx *ctx, nat_tensor *logits, const int32_t *labels, float smoothing,
                             nat_tensor **out)
{
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        nat_tensor *lab;
        int64_t one = 1;
        NAT_TRY(nat_ctx_empty(ctx, &lab, NAT_I32, 1, &N));
        NAT_TRY(nat_cuda_memcpy(dev, nat_tensor_data(lab), labels, (size_t)N * sizeof *labels, NAT_CUDA_H2D));
        NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), cross_entropy_forward, nat_tensor_f32(zd), nat_tensor_data(lab), NULL, N, C, smoothing,
                                               nat_tensor_data(lse_t), nat_tensor_f32(y)));
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
    double *row_loss;
    NAT_TRY(nat_ctx_scratch(ctx, (size_t)N * sizeof *row_loss, (void **)&row_loss));
    const float *Z = nat_tensor_f32(zd);
    double *L = nat_tensor_data(lse_t);
    const double off = (double)smoothing / (double)C, on = 1.0 - (double)smoothing;
    /* loss_i = lse_i - Σ_c target_c z_c, target = (1 - eps)·onehot + eps/C */
#pragma omp parallel for if (N * C > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *z = Z + i * C;
        double lse = row_logsumexp(z, C);
        double zsum = 0;
        for (int64_t c = 0; c < C; c++)
            zsum += z[c];
        L[i] = lse;
        row_loss[i] = lse - on * z[labels[i]] - off * zsum;
    }
    double total = 0;
    for (int64_t i = 0; i < N; i++)
        total += row_loss[i];
    int64_t one = 1;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
    nat_tensor_f32(y)[0] = (float)(total / (double)N);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &ce_op, y, 1, &logits, &node));
    if (node) {
        int32_t *copy;
        NAT_TRY(nat_ctx_scratch(ctx, (size_t)N * sizeof *copy, (void **)&copy));
        memcpy(copy, labels, (size_t)N * sizeof *copy);
        node->extra = copy;
        node->saved[0] = zd;
        node->saved[1] = lse_t;
        node->n_saved = 2;
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), cross_entropy_backward, nat_tensor_f32(node->saved[0]), NULL, nat_tensor_f32(node->saved[1]),
                                               nat_tensor_data(node->saved[2]), nat_tensor_f32(g), node->i[0],
                                               node->i[1], 0.0f, gz ? nat_tensor_f32(gz) : NULL,
                                               gt ? nat_tensor_f32(gt) : NULL);
    const float *Z = nat_tensor_f32(node->saved[0]), *T = nat_tensor_f32(node->saved[1]);
    const double *L = nat_tensor_data(node->saved[2]);
    int64_t N = node->i[0], C = node->i[1];
    float g0 = nat_tensor_f32(g)[0] / (float)N;
    float *GZ = gz ? nat_tensor_f32(gz) : NULL, *GT = gt ? nat_tensor_f32(gt) : NULL;
    /* loss_i = lse_i·Σt - Σ t⊙z:  d/dz = softmax(z)·Σt - t (Σt = 1 for proper targets, kept for exactness),
     * d/dt = lse - z = -log_softmax(z). */
#pragma omp parallel for if (N * C > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *z = Z + i * C, *t = T + i * C;
        float hi, lo;
        split(L[i], &hi, &lo);
        if (GZ) {
            double ts = 0;
            for (int64_t c = 0; c < C; c++)
                ts += t[c];
            const float tsum = (float)ts;
            float *gr = GZ + i * C;
            for (int64_t c = 0; c < C; c++)
                gr[c] += g0 * (expf((z[c] - hi) - lo) * tsum - t[c]);
        }
        if (GT) {
            float *gr = GT + i * C;
            for (int64_t c = 0; c < C; c++)
                gr[c] += g0 * ((hi - z[c]) + lo);
        }
    }
    return NAT_OK;
}

static const nat_op_def ce_soft_op = {"cross_entropy_soft", ce_soft_backward};

nat_status nat_cross_entropy_soft(nat_ctx *ctx, nat_tensor *logits, nat_tensor *targets, nat_tensor **out)
{
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        int64_t one = 1;
        NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), cross_entropy_forward, nat_tensor_f32(zd), NULL, nat_tensor_f32(td), N, C, 0.0f,
                                               nat_tensor_data(lse_t), nat_tensor_f32(y)));
    } else {
        double *row_loss;
        NAT_TRY(nat_ctx_scratch(ctx, (size_t)N * sizeof *row_loss, (void **)&row_loss));
        const float *Z = nat_tensor_f32(zd), *T = nat_tensor_f32(td);
        double *L = nat_tensor_data(lse_t);
#pragma omp parallel for if (N * C > PAR_MIN)
        for (int64_t i = 0; i < N; i++) {
            const float *z = Z + i * C, *t = T + i * C;
            double lse = row_logsumexp(z, C);
            double ts = 0, tz = 0;
            for (int64_t c = 0; c < C; c++) {
                ts += t[c];
                tz += (double)t[c] * z[c];
            }
            L[i] = lse;
            row_loss[i] = lse * ts - tz;
        }
        double total = 0;
        for (int64_t i = 0; i < N; i++)
            total += row_loss[i];
        int64_t one = 1;
        NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
        nat_tensor_f32(y)[0] = (float)(total / (double)N);
    }
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

/* Σ x in double over fixed blocks, then the block sums in order: the same bits for any thread count. */
#define SUM_BLOCK 4096

static nat_status sum_all(nat_ctx *ctx, const nat_tensor *x, double *total)
{
    nat_tensor *xd;
    NAT_TRY(nat_dense(ctx, x, &xd));
    const float *X = nat_tensor_f32(xd);
    int64_t n = nat_tensor_numel(x), nb = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part;
    NAT_TRY(nat_ctx_scratch(ctx, (size_t)(nb ? nb : 1) * sizeof *part, (void **)&part));
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * SUM_BLOCK, hi = lo + SUM_BLOCK < n ? lo + SUM_BLOCK : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = lo; i < hi; i++)
            s += X[i];
        part[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++)
        s += part[b];
    *total = s;
    return NAT_OK;
}

/* d/dx_i of (Σ x)·f[0] is f[0] for every element (f[0] = 1 for sum, 1/n for mean). */
static nat_status sum_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        /* gx += f · g[0], g read with stride 0 everywhere: the value never leaves the device. */
        int64_t zero[NAT_MAX_DIMS] = {0};
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_SCALE, true, nat_tensor_f32(gx), gx->ndim, gx->shape, nat_tensor_f32(g),
                               zero, NULL, NULL, (float)node->f[0]);
    }
    const float v = nat_tensor_f32(g)[0] * (float)node->f[0];
    float *GX = nat_tensor_f32(gx);
    int64_t n = nat_tensor_numel(gx);
#pragma omp parallel for simd if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        GX[i] += v;
    return NAT_OK;
}

static const nat_op_def sum_op = {"sum", sum_backward};
static const nat_op_def mean_op = {"mean", sum_backward};

static nat_status reduce_all(nat_ctx *ctx, nat_tensor *x, bool mean, nat_tensor **out)
{
    const char *name = mean ? "mean" : "sum";
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        nat_tensor *xd;
        NAT_TRY(nat_dense(ctx, x, &xd));
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), sum, nat_tensor_f32(xd), n, false, (float)f, nat_tensor_f32(y)));
    } else {
        double s;
        NAT_TRY(sum_all(ctx, x, &s));
        nat_tensor_f32(y)[0] = (float)(s * f);
    }
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, mean ? &mean_op : &sum_op, y, 1, &x, &node));
    if (node)
        node->f[0] = f;
    *out = y;
    return NAT_OK;
}

nat_status nat_sum(nat_ctx *ctx, nat_tensor *x, nat_tensor **out) { return reduce_all(ctx, x, false, out); }
nat_status nat_mean(nat_ctx *ctx, nat_tensor *x, nat_tensor **out) { return reduce_all(ctx, x, true, out); }
