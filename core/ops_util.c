/* core/ops_util.c — helpers for op implementations: argument checks, dense copies of strided views and
 * broadcast reduction (see include/nat/op.h). It builds on autograd (step tensors) and core/tensor_fill.c;
 * autograd does not depend on it. Kernels run through the table of the context's device (core/backend.h). */
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

nat_status nat_check_f32(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg)
{
    NAT_TRY(nat_check_f32_dev(ctx, t, op, arg));
    if (t->device.kind != NAT_DEV_CPU)
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: no CUDA kernel for %s yet (%s is on %s); run it on the CPU", op, op,
                         arg, nat_device_name(t->device));
    return NAT_OK;
}

nat_status nat_check_f32_dev(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg)
{
    if (!t)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is NULL", op, arg);
    if (!ctx)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: ctx is NULL", op);
    /* Before the storage check: a stale tensor has none, and this says why. Persistent tensors (no ctx)
     * are never stale. */
    if (t->ctx && t->gen != nat_ctx_generation(t->ctx))
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s belongs to a step that nat_ctx_reset has ended (step tensors "
                                              "live until the next reset; copy what you keep into a persistent tensor)",
                         op, arg);
    if (t->dtype != NAT_F32)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is %s; this op takes f32", op, arg, nat_dtype_name(t->dtype));
    nat_device d = nat_ctx_device(ctx);
    if (t->device.kind != d.kind || t->device.index != d.index)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is on %s but the context runs on %s (copy it with nat_tensor_to)",
                         op, arg, nat_device_name(t->device), nat_device_name(d));
    NAT_TRY(nat_device_check(t->device, op));
    if (t->storage == NULL || t->storage->data == NULL)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s has no storage (freed by nat_ctx_reset?)", op, arg);
    return NAT_OK;
}

nat_status nat_dense(nat_ctx *ctx, const nat_tensor *x, nat_tensor **out)
{
    if (nat_tensor_is_contiguous(x)) {
        *out = (nat_tensor *)x;
        return NAT_OK;
    }
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, x->dtype, x->ndim, x->shape));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), strided_copy, nat_tensor_f32(y), y->stride, nat_tensor_f32(x), x->stride,
                       x->ndim, x->shape, false));
    *out = y;
    return NAT_OK;
}

nat_status nat_reduce_to_shape(nat_ctx *ctx, const nat_tensor *g, int ndim, const int64_t *shape, nat_tensor **out)
{
    /* Align shapes on the right, as broadcasting does. */
    int off = g->ndim - ndim;
    bool same = off == 0;
    for (int d = 0; d < ndim && same; d++)
        same = shape[d] == g->shape[d];
    if (same)
        return nat_dense(ctx, g, out);
    if (off < 0)
        return nat_error(NAT_ERR_INTERNAL, "reduce_to_shape: target has more dims than the gradient");
    /* r is contiguous over the dims that stay, the others having size 1 or being absent. */
    bool keep[NAT_MAX_DIMS];
    for (int d = 0; d < g->ndim; d++)
        keep[d] = d - off >= 0 && shape[d - off] != 1;
    nat_tensor *r;
    NAT_TRY(nat_ctx_empty(ctx, &r, NAT_F32, ndim, shape));
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), reduce, nat_tensor_f32(r), false, 1.0f, g->ndim, g->shape, nat_tensor_f32(g),
                       g->stride, keep));
    *out = r;
    return NAT_OK;
}
