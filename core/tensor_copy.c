/* core/tensor_copy.c — explicit copies between devices: nat_tensor_to and nat_tensor_copy
 * (include/nat/cuda.h). Works in every build: copies run through the kernel tables (core/backend.h), and
 * a CUDA device in a build without CUDA gets "nat was built without CUDA" from the device check.
 *
 * A strided source is first made dense on its own device (a temporary from the caching allocator), then
 * copied in one piece. Copies between two different GPUs are staged through host memory: simple and
 * correct; peer-to-peer copies can come when multi-GPU training does. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/tensor_internal.h"
#include "nat/cuda.h"
#include "core/check.h"

static bool same_device(nat_device a, nat_device b) { return a.kind == b.kind && (a.kind == NAT_DEV_CPU || a.index == b.index); }

/* A dense copy of src's values on src's device, or src's own data when already contiguous. *owned says
 * whether the caller must give the block back with nat_mem_free(src->device, ...). */
static nat_status dense_data(const nat_tensor *src, size_t bytes, const void **data, bool *owned)
{
    *owned = false;
    if (nat_tensor_is_contiguous(src)) {
        *data = nat_tensor_data(src);
        return NAT_OK;
    }
    if (src->dtype != NAT_F32)
        return nat_error(NAT_ERR_UNSUPPORTED, "tensor_copy: a strided %s source; only f32 views can be copied (make it contiguous first)",
                         nat_dtype_name(src->dtype));
    void *tmp;
    NAT_TRY(nat_mem_alloc(src->device, bytes, &tmp));
    int64_t st[NAT_MAX_DIMS];
    nat_contiguous_strides(src->ndim, src->shape, st);
    nat_status s = NAT_KERNEL(NAT_EXEC_DEV(src->device), strided_copy, tmp, st, nat_tensor_f32(src), src->stride,
                              src->ndim, src->shape, false);
    if (s != NAT_OK) {
        nat_mem_free(src->device, tmp, bytes);
        return s;
    }
    *data = tmp;
    *owned = true;
    return NAT_OK;
}

/* One copy of `bytes` between the tensors' devices, run by the table of the device that is not the host
 * (the host's own table when both are). Copies between two GPUs are staged through host memory. */
static nat_status copy_bytes(nat_tensor *dst, const nat_tensor *src, const void *from, size_t bytes)
{
    void *to = nat_tensor_data(dst);
    nat_device sd = src->device, dd = dst->device;
    bool s_host = sd.kind == NAT_DEV_CPU, d_host = dd.kind == NAT_DEV_CPU;
    if (s_host || d_host || sd.index == dd.index)
        return NAT_KERNEL(NAT_EXEC_DEV(s_host ? dd : sd), copy_bytes, to, from, bytes,
                          s_host ? NAT_CUDA_H2D : d_host ? NAT_CUDA_D2H : NAT_CUDA_D2D);
    void *host = malloc(bytes ? bytes : 1);
    if (!host)
        return nat_error(NAT_ERR_OOM, "tensor_copy: out of host memory staging %zu bytes from %s to %s", bytes,
                         nat_device_name(sd), nat_device_name(dd));
    nat_status s = NAT_KERNEL(NAT_EXEC_DEV(sd), copy_bytes, host, from, bytes, NAT_CUDA_D2H);
    if (s == NAT_OK)
        s = NAT_KERNEL(NAT_EXEC_DEV(dd), copy_bytes, to, host, bytes, NAT_CUDA_H2D);
    free(host);
    return s;
}

nat_status nat_tensor_copy(nat_tensor *dst, const nat_tensor *src)
{
    NAT_CHECK_ARG(dst, "nat_tensor_copy", "dst");
    NAT_CHECK_ARG(src, "nat_tensor_copy", "src");
    if (!dst || !src)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_copy: %s is NULL", dst ? "src" : "dst");
    char a[96], b[96];
    if (dst->dtype != src->dtype || !nat_tensor_same_shape(dst, src))
        return nat_error(NAT_ERR_SHAPE, "tensor_copy: source %s %s does not match destination %s %s",
                         nat_dtype_name(src->dtype), nat_shape_str(src, a, sizeof a), nat_dtype_name(dst->dtype),
                         nat_shape_str(dst, b, sizeof b));
    if (!nat_tensor_is_contiguous(dst))
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_copy: destination %s on %s is a strided view; it must be contiguous",
                         nat_shape_str(dst, b, sizeof b), nat_device_name(dst->device));
    if (!src->storage || !src->storage->data || !dst->storage || !dst->storage->data)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_copy: a tensor has no storage (freed by nat_ctx_reset?)");
    NAT_TRY(nat_device_check(src->device, "tensor_copy"));
    NAT_TRY(nat_device_check(dst->device, "tensor_copy"));
    size_t bytes = (size_t)nat_tensor_numel(src) * nat_dtype_size(src->dtype);
    if (bytes == 0)
        return NAT_OK;
    const void *from = NULL;
    bool owned = false;
    NAT_TRY(dense_data(src, bytes, &from, &owned));
    nat_status s = copy_bytes(dst, src, from, bytes);
    if (owned)
        nat_mem_free(src->device, (void *)from, bytes);
    return s;
}

nat_status nat_tensor_to(nat_ctx *ctx, const nat_tensor *src, nat_device dev, nat_tensor **dst)
{
    if (!dst)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_to: dst is NULL");
    *dst = NULL;
    if (!src)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_to: src is NULL");
    NAT_TRY(nat_device_check(dev, "tensor_to"));
    nat_tensor *t;
    if (ctx) {
        if (!same_device(nat_ctx_device(ctx), dev))
            return nat_error(NAT_ERR_INVALID_ARG, "tensor_to: the context runs on %s, not on the target %s",
                             nat_device_name(nat_ctx_device(ctx)), nat_device_name(dev));
        NAT_TRY(nat_ctx_empty(ctx, &t, src->dtype, src->ndim, src->shape));
    } else {
        NAT_TRY(nat_tensor_new(&t, src->dtype, dev, src->ndim, src->shape));
    }
    nat_status s = nat_tensor_copy(t, src);
    if (s != NAT_OK) {
        if (!ctx)
            nat_tensor_free(t);
        return s;
    }
    *dst = t;
    return NAT_OK;
}

nat_status nat_tensor_move(nat_tensor *t, nat_device dev)
{
    if (!t)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_move: tensor is NULL");
    if (t->ctx)
        return nat_error(NAT_ERR_INVALID_ARG, "tensor_move: a step tensor cannot move (use nat_tensor_to)");
    nat_tensor *c = NULL;
    if (!same_device(t->device, dev) || !nat_tensor_is_contiguous(t) || t->offset != 0)
        NAT_TRY(nat_tensor_to(NULL, t, dev, &c));
    if (t->grad) {
        nat_status s = nat_tensor_move(t->grad, dev);
        if (s != NAT_OK) {
            nat_tensor_free(c);
            return s;
        }
    }
    if (!c)
        return NAT_OK;
    /* The handle keeps its identity (layers and optimizers hold pointers to it); it takes the copy's
     * storage, and the copy's header leaves with the old storage. */
    nat_storage *old = t->storage;
    t->storage = c->storage;
    c->storage = old;
    t->offset = 0;
    memcpy(t->stride, c->stride, sizeof t->stride);
    t->device = dev;
    nat_tensor_free(c);
    return NAT_OK;
}
