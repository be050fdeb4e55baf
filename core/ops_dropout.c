/* core/ops_dropout.c — dropout (per element) and drop-path (per sample, stochastic depth), forward and
 * backward.
 *
 * Any layout in (strided inputs are made dense); drop-path's samples are dim 0. Masks come from the
 * caller's nat_rng and live in context scratch (nat_ctx_scratch) until nat_ctx_reset, where backward
 * reads them. Survivors are scaled by 1/(1-p) so the expected value is unchanged; when !training or
 * p == 0 the op is the identity and returns x itself without recording anything.
 *
 * Dropout's mask is drawn in fixed chunks of CHUNK elements, chunk c from a generator seeded with
 * (one draw from the caller's rng) + c: the chunks fill in parallel, yet the mask depends only on the
 * rng state and the element count, never on the thread count. The caller's rng advances by exactly one
 * draw per call.
 *
 * On a CUDA device dropout's mask is a hash of (that same one draw, element index) computed in the kernel
 * (core/cuda/dropout.cu): no mask memory, and backward regenerates it from the seed on the tape. It
 * is a different mask from the CPU's for the same rng state, reproducible on its own. Drop-path draws its
 * per-sample factors on the host exactly as on the CPU and copies them to the device.
 */
#include <inttypes.h>
#include <math.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

#define CHUNK ((int64_t)1 << 16)

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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), dropout, nat_tensor_f32(gd), nat_tensor_f32(gx), true, nat_tensor_numel(gx),
                                (uint64_t)node->i[0], (uint64_t)node->i[1], (float)node->f[0]);
    const uint8_t *mask = node->extra;
    const float scale = (float)node->f[0];
    const float *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    int64_t n = nat_tensor_numel(gx);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        GX[i] += mask[i] ? G[i] * scale : 0.0f;
    return NAT_OK;
}

static const nat_op_def dropout_op = {"dropout", dropout_backward};

nat_status nat_dropout(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out)
{
    NAT_TRY(nat_check_f32_dev(ctx, x, "dropout", "input"));
    NAT_TRY(check_p(x, p, training, rng, "dropout"));
    if (!training || p == 0.0f) {
        *out = x;
        return NAT_OK;
    }
    int64_t n = nat_tensor_numel(x);
    nat_tensor *xd, *y;
    uint8_t *mask;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    const uint64_t thresh = drop_threshold(p), base = nat_rng_u64(rng);
    const float scale = 1.0f / (1.0f - p);
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), dropout, nat_tensor_f32(xd), nat_tensor_f32(y), false, n, base, thresh, scale));
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
    NAT_TRY(nat_ctx_scratch(ctx, (size_t)n, (void **)&mask));
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
    int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > CHUNK)
    for (int64_t c = 0; c < nchunks; c++) {
        nat_rng r;
        nat_rng_seed(&r, base + (uint64_t)c);
        int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        /* Two 32-bit uniforms per draw. */
        for (int64_t i = lo; i < hi; i += 2) {
            uint64_t bits = nat_rng_u64(&r);
            mask[i] = (bits >> 32) >= thresh;
            if (i + 1 < hi)
                mask[i + 1] = (bits & 0xffffffffu) >= thresh;
        }
        for (int64_t i = lo; i < hi; i++)
            Y[i] = mask[i] ? X[i] * scale : 0.0f;
    }
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &dropout_op, y, 1, &x, &node));
    if (node) {
        node->extra = mask;
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        /* gx [N, per] += g ⊙ factor [N] read with stride 0 along each sample. */
        int64_t N = gx->shape[0], per = N ? nat_tensor_numel(gx) / N : 0;
        int64_t shape[2] = {N, per}, gs[2] = {per, 1}, fs[2] = {1, 0};
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_MUL, true, nat_tensor_f32(gx), 2, shape, nat_tensor_f32(gd), gs,
                               nat_tensor_f32(node->saved[0]), fs, 1.0f);
    }
    const float *factor = node->extra;
    const float *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    int64_t N = gx->shape[0], per = N ? nat_tensor_numel(gx) / N : 0;
#pragma omp parallel for if (N * per > 65536)
    for (int64_t s = 0; s < N; s++) {
        const float f = factor[s];
        for (int64_t i = s * per; i < (s + 1) * per; i++)
            GX[i] += G[i] * f;
    }
    return NAT_OK;
}

static const nat_op_def drop_path_op = {"drop_path", drop_path_backward};

nat_status nat_drop_path(nat_ctx *ctx, nat_tensor *x, float p, bool training, nat_rng *rng, nat_tensor **out)
{
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
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        nat_tensor *fd;
        NAT_TRY(nat_ctx_empty(ctx, &fd, NAT_F32, 1, &N));
        NAT_TRY(nat_cuda_memcpy(dev, nat_tensor_f32(fd), factor, (size_t)N * sizeof *factor, NAT_CUDA_H2D));
        int64_t shape[2] = {N, per}, xs[2] = {per, 1}, fs[2] = {1, 0};
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_MUL, false, nat_tensor_f32(y), 2, shape, nat_tensor_f32(xd), xs,
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
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
#pragma omp parallel for if (N * per > 65536)
    for (int64_t s = 0; s < N; s++) {
        const float f = factor[s];
        for (int64_t i = s * per; i < (s + 1) * per; i++)
            Y[i] = X[i] * f;
    }
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &drop_path_op, y, 1, &x, &node));
    if (node)
        node->extra = factor;
    *out = y;
    return NAT_OK;
}
