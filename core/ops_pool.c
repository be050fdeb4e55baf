/* core/ops_pool.c — global average pooling over the spatial dims, forward and backward.
 *
 * Layouts: channels-first x [N, C, H, W] (the conv stem) or channels-last x [N, H, W, C] (NAT's
 * activations before the classifier head) -> [N, C]. Any number of spatial dims is accepted
 * ([N, C, L], [N, L, C], ...): they are flattened to one of length S. Strided inputs are made dense first.
 * On a CUDA device: a reduction over S (forward) and a stride-0 broadcast add (backward), core/cuda/kernels.h.
 */
#include <inttypes.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

static nat_status avg_pool_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *grad_out)
{
    int64_t N = node->i[0], C = node->i[1], S = node->i[2];
    bool last = node->i[3];
    nat_tensor *gd, *gx;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, grad_out, &gd));
    const float *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    const float inv = 1.0f / (float)S;
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        /* gx viewed as [N, C, S] or [N, S, C] += inv · g [N, C] read with stride 0 along S. */
        int64_t shape[3] = {N, last ? S : C, last ? C : S};
        int64_t gs[3] = {C, last ? 0 : 1, last ? 1 : 0};
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_SCALE, true, GX, 3, shape, G, gs, NULL, NULL, inv);
    }
    if (!last) {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * C; r++) {
            float v = G[r] * inv;
            float *dst = GX + r * S;
            for (int64_t s = 0; s < S; s++)
                dst[s] += v;
        }
    } else {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * S; r++) {
            const float *gr = G + (r / S) * C;
            float *dst = GX + r * C;
            for (int64_t c = 0; c < C; c++)
                dst[c] += gr[c] * inv;
        }
    }
    return NAT_OK;
}

static const nat_op_def avg_pool_op = {"global_avg_pool", avg_pool_backward};

nat_status nat_global_avg_pool(nat_ctx *ctx, nat_tensor *x, int channels_last, nat_tensor **out)
{
    NAT_TRY(nat_check_f32_dev(ctx, x, "global_avg_pool", "input"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    if (channels_last != 0 && channels_last != 1)
        return nat_error(NAT_ERR_INVALID_ARG, "global_avg_pool: channels_last is %d; it must be 0 ([N, C, H, W]) or 1 ([N, H, W, C])",
                         channels_last);
    if (x->ndim < 3)
        return nat_error(NAT_ERR_SHAPE, "global_avg_pool: input %s must be %s (at least one spatial dim)", sx,
                         channels_last ? "[N, H, W, C]" : "[N, C, H, W]");
    int64_t N = x->shape[0], C = channels_last ? x->shape[x->ndim - 1] : x->shape[1];
    int64_t S = nat_shape_numel(x->ndim - 2, x->shape + (channels_last ? 1 : 2));
    if (S == 0)
        return nat_error(NAT_ERR_SHAPE, "global_avg_pool: input %s has no spatial positions to average", sx);
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    int64_t shape[2] = {N, C};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 2, shape));
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
    const float inv = 1.0f / (float)S;
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        int64_t dims[3] = {N, channels_last ? S : C, channels_last ? C : S};
        int64_t xs[3] = {S * C, dims[2], 1};
        bool keep[3] = {true, !channels_last, (bool)channels_last};
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), reduce, Y, false, inv, 3, dims, X, xs, keep));
    } else if (!channels_last) {
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t r = 0; r < N * C; r++) {
            const float *src = X + r * S;
            float s = 0.0f;
            for (int64_t i = 0; i < S; i++)
                s += src[i];
            Y[r] = s * inv;
        }
    } else {
        /* Rows of C channels are summed whole, so the inner loop runs along contiguous memory. */
#pragma omp parallel for if (N * C * S > 65536)
        for (int64_t n = 0; n < N; n++) {
            float *acc = Y + n * C;
            for (int64_t c = 0; c < C; c++)
                acc[c] = 0.0f;
            for (int64_t i = 0; i < S; i++) {
                const float *src = X + (n * S + i) * C;
                for (int64_t c = 0; c < C; c++)
                    acc[c] += src[c];
            }
            for (int64_t c = 0; c < C; c++)
                acc[c] *= inv;
        }
    }
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &avg_pool_op, y, 1, &x, &node));
    if (node)
        node->i[0] = N, node->i[1] = C, node->i[2] = S, node->i[3] = channels_last;
    *out = y;
    return NAT_OK;
}
