/* core/ops_dropout.c — dropout (per element) and drop-path (per sample, stochastic depth), forward and
 * backward.
 *
 * Any layout in (strided inputs are made dense); drop-path's samples are dim 0. Survivors are scaled by
 * 1/(1-p) so the expected value is unchanged; when !training or p == 0 the op is the identity and returns
 * x itself without recording anything.
 *
 * Dropout takes one draw from the caller's rng per call: the seed of its mask, kept on the tape, from
 * which the kernel (core/cpu/dropout.c, core/cuda/dropout.cu) makes the mask in forward and again in
 * backward. The CPU's mask (chunked nat_rng streams) and CUDA's (a hash of seed and index) differ for the
 * same rng state; each is reproducible on its own. Drop-path draws its per-sample factors on the host and
 * copies them to the context's device.
 */
#include <inttypes.h>
#include <math.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

/* A 32-bit uniform k drops its element when k < threshold; P(drop) = threshold / 2^32 = p to 2^-32. */
static uint64_t drop_threshold(float p) { return (uint64_t)ceil((double)p * 4294967296.0); }

static nat_status check_p(const nat_tensor *x, float p, bool training, const nat_rng *rng, const char *op)
{
    if (!(p >= 0.0f && p < 1.0f)) {
        char sx[96];
        return nat_error(NAT_ERR_INVALID_ARG, "%s: drop probability %g (input %s) must be in [0, 1)", op, (double)p,
                         nat_shape_str(x, sx, sizeof sx));
    }
    if (training && p > 0.0f && !rng)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: training with p = %g needs a nat_rng, got NULL", op, (double)p);
    return NAT_OK;
}

/* ---- dropout ---- */

static nat_status dropout_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), dropout, nat_tensor_f32(gd), nat_tensor_f32(gx), true, nat_tensor_numel(gx),
                      (uint64_t)node->i[0], (uint64_t)node->i[1], (float)node->f[0]);
}

static const nat_op_def dropout_op = {"dropout", dropout_backward};

nat_status nat_dropout(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "dropout", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "dropout", "input"));
    NAT_TRY(check_p(x, p, training, rng, "dropout"));
    if (!training || p == 0.0f) {
        *out = x;
        return NAT_OK;
    }
    int64_t n = nat_tensor_numel(x);
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    const uint64_t thresh = drop_threshold(p), base = nat_rng_u64(rng);
    const float scale = 1.0f / (1.0f - p);
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), dropout, nat_tensor_f32(xd), nat_tensor_f32(y), false, n, base, thresh, scale));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &dropout_op, y, 1, &x, &node));
    if (node) {
        node->i[0] = (int64_t)base; /* the seed's bits; cast back in backward */
        node->i[1] = (int64_t)thresh;
        node->f[0] = scale;
    }
    *out = y;
    return NAT_OK;
}

/* ---- drop-path ---- */

static nat_status drop_path_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    /* gx [N, per] += g ⊙ factor [N] read with stride 0 along each sample. */
    int64_t N = gx->shape[0], per = N ? nat_tensor_numel(gx) / N : 0;
    int64_t shape[2] = {N, per}, gs[2] = {per, 1}, fs[2] = {1, 0};
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), binary, NAT_CUDA_MUL, true, nat_tensor_f32(gx), 2, shape, nat_tensor_f32(gd), gs,
                      nat_tensor_f32(node->saved[0]), fs, 1.0f);
}

static const nat_op_def drop_path_op = {"drop_path", drop_path_backward};

nat_status nat_drop_path(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "drop_path", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "drop_path", "input"));
    NAT_TRY(check_p(x, p, training, rng, "drop_path"));
    if (x->ndim < 1) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "drop_path: input %s has no sample dim (dim 0)", nat_shape_str(x, sx, sizeof sx));
    }
    if (!training || p == 0.0f) {
        *out = x;
        return NAT_OK;
    }
    int64_t N = x->shape[0], per = N ? nat_tensor_numel(x) / N : 0;
    nat_tensor *xd, *y;
    float *factor;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    NAT_TRY(nat_ctx_scratch(ctx, (size_t)N * sizeof *factor, (void **)&factor));
    /* One draw per sample, as each sample takes the same test as a dropout element. */
    const uint64_t thresh = drop_threshold(p);
    const float scale = 1.0f / (1.0f - p);
    for (int64_t s = 0; s < N; s++)
        factor[s] = (nat_rng_u64(rng) >> 32) >= thresh ? scale : 0.0f;
    /* The factors go to the context's device (a copy of N floats) and multiply as a stride-0 operand. */
    nat_tensor *fd;
    NAT_TRY(nat_ctx_empty(ctx, &fd, NAT_F32, 1, &N));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), copy_bytes, nat_tensor_f32(fd), factor, (size_t)N * sizeof *factor,
                       NAT_CUDA_H2D));
    int64_t shape[2] = {N, per}, xs[2] = {per, 1}, fs[2] = {1, 0};
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), binary, NAT_CUDA_MUL, false, nat_tensor_f32(y), 2, shape, nat_tensor_f32(xd), xs,
                       nat_tensor_f32(fd), fs, 1.0f));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &drop_path_op, y, 1, &x, &node));
    if (node) {
        node->saved[0] = fd;
        node->n_saved = 1;
    }
    *out = y;
    return NAT_OK;
}
