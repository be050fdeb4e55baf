/* core/ops_pool.c — global average pooling over the spatial dims, forward and backward.
 *
 * Layouts: channels-first x [N, C, H, W] (the conv stem) or channels-last x [N, H, W, C] (NAT's
 * activations before the classifier head) -> [N, C]. Any number of spatial dims is accepted
 * ([N, C, L], [N, L, C], ...): they are flattened to one of length S. Strided inputs are made dense first.
 * Kernels: core/cpu/pool.c; on a CUDA device a reduction over S (forward) and a stride-0 broadcast add
 * (backward), core/cuda/backend_cuda.c.
 */
#include <inttypes.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

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
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), avg_pool_backward, G, GX, N, C, S, last);
}

static const nat_op_def avg_pool_op = {"global_avg_pool", avg_pool_backward};

nat_status nat_global_avg_pool(nat_ctx *ctx, nat_tensor *x, int channels_last, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "global_avg_pool", "out");
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
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), avg_pool_forward, X, Y, N, C, S, (bool)channels_last));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &avg_pool_op, y, 1, &x, &node));
    if (node)
        node->i[0] = N, node->i[1] = C, node->i[2] = S, node->i[3] = channels_last;
    *out = y;
    return NAT_OK;
}
