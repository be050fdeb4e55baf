/* core/ops_norm.c — LayerNorm and softmax over the last dim on the CPU.
 *
 * Layout: x is [..., C] (channels-last, as transformer activations are); every op works on rows of C
 * elements, rows = numel / C. Strided inputs are made dense first. LayerNorm takes an optional affine
 * weight and bias of shape [C] and saves the mean and 1/sqrt(var + eps) of each row for its backward, as
 * PyTorch does, but in f64 [rows]: row statistics are accumulated in double with the variance taken in a
 * second pass over (x - mean), and a mean rounded to f32 would cost rows with a large mean (activations
 * around 1000 with unit spread) most of their gradient's precision. Softmax subtracts the row maximum
 * before exponentiating. On a CUDA device the same saved tensors are filled by core/cuda/norm.cu.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h> /* per-thread partial sums of the weight/bias gradients */
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

#define PAR_MIN 32768

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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), layernorm_backward, X, M, R, W, G, GX, gw ? nat_tensor_f32(gw) : NULL,
                                           gb ? nat_tensor_f32(gb) : NULL, rows, C);
    /* Weight and bias gradients are sums over rows: each thread keeps its own partial rows over a static
     * block of rows, added in thread order afterwards, so a given thread count always gives the same bits. */
    int nt = rows * C > PAR_MIN ? omp_get_max_threads() : 1;
    float *part = NULL;
    if (gw || gb) {
        NAT_TRY(nat_ctx_scratch(ctx, (size_t)nt * 2 * (size_t)C * sizeof *part, (void **)&part));
        memset(part, 0, (size_t)nt * 2 * (size_t)C * sizeof *part);
    }
#pragma omp parallel num_threads(nt)
    {
        float *pw = part ? part + (int64_t)omp_get_thread_num() * 2 * C : NULL, *pb = pw ? pw + C : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *x = X + r * C, *gr = G + r * C;
            /* The mean as a float plus its rounding residual: x - m is exact for x near m, so
             * xhat = ((x - m) - dm) · rstd keeps full float precision in fast float loops. */
            const float m = (float)M[r], dm = (float)(M[r] - (double)m), rs = (float)R[r];
            if (pw) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++) {
                    pw[c] += gr[c] * (((x[c] - m) - dm) * rs);
                    pb[c] += gr[c];
                }
            }
            if (!GX)
                continue;
            /* dx = rstd · (gy - mean(gy) - xhat · mean(gy ⊙ xhat)), gy = g ⊙ weight */
            double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
            for (int64_t c = 0; c < C; c++) {
                float gy = W ? gr[c] * W[c] : gr[c];
                s1 += gy;
                s2 += (double)gy * (((x[c] - m) - dm) * rs);
            }
            const float a1 = (float)(s1 / (double)C), a2 = (float)(s2 / (double)C);
            float *gxr = GX + r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float gy = W ? gr[c] * W[c] : gr[c];
                float xh = ((x[c] - m) - dm) * rs;
                gxr[c] += rs * (gy - a1 - xh * a2);
            }
        }
    }
    if (part) {
        float *GW = gw ? nat_tensor_f32(gw) : NULL, *GB = gb ? nat_tensor_f32(gb) : NULL;
        for (int t = 0; t < nt; t++) {
            const float *pw = part + (int64_t)t * 2 * C, *pb = pw + C;
            for (int64_t c = 0; c < C; c++) {
                if (GW)
                    GW[c] += pw[c];
                if (GB)
                    GB[c] += pb[c];
            }
        }
    }
    return NAT_OK;
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), layernorm_forward, X, W, B, Y, M, R, rows, C, eps));
    } else {
#pragma omp parallel for if (rows * C > PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = X + r * C;
            float *yr = Y + r * C;
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t c = 0; c < C; c++)
                s += xr[c];
            const double m = s / (double)C;
            double v = 0;
#pragma omp simd reduction(+ : v)
            for (int64_t c = 0; c < C; c++) {
                double d = (double)xr[c] - m;
                v += d * d;
            }
            const double rs = 1.0 / sqrt(v / (double)C + (double)eps);
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float xh = (float)(((double)xr[c] - m) * rs);
                yr[c] = (W ? xh * W[c] : xh) + (B ? B[c] : 0.0f);
            }
            M[r] = m;
            R[r] = rs;
        }
    }
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), softmax_backward, Y, G, GX, rows, C);
    /* dx = y ⊙ (g - Σ g ⊙ y) */
#pragma omp parallel for if (rows * C > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *y = Y + r * C, *gr = G + r * C;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++)
            dot += (double)gr[c] * y[c];
        const float d = (float)dot;
        float *gxr = GX + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++)
            gxr[c] += y[c] * (gr[c] - d);
    }
    return NAT_OK;
}

static const nat_op_def softmax_op = {"softmax", softmax_backward};

nat_status nat_softmax(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), softmax_forward, X, Y, rows, C));
    } else {
#pragma omp parallel for if (rows * C > PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = X + r * C;
            float *yr = Y + r * C;
            float mx = xr[0];
            for (int64_t c = 1; c < C; c++)
                mx = xr[c] > mx ? xr[c] : mx;
            /* A row that is -inf everywhere (fully masked) has no distribution; it gets zeros rather than the
             * NaNs of exp(-inf - -inf), so it adds nothing downstream. */
            if (mx == -INFINITY) {
                memset(yr, 0, (size_t)C * sizeof *yr);
                continue;
            }
            double s = 0;
            for (int64_t c = 0; c < C; c++) {
                float e = expf(xr[c] - mx);
                yr[c] = e;
                s += e;
            }
            const float inv = (float)(1.0 / s);
#pragma omp simd
            for (int64_t c = 0; c < C; c++)
                yr[c] *= inv;
        }
    }
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
