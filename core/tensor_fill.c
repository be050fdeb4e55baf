/* core/tensor_fill.c — in-place fills and accumulation of whole tensors (nat_fill_zero, nat_fill_value,
 * nat_add_into; core/tensor_internal.h). They need no context, so autograd (gradient buffers) and the op
 * helpers of core/ops_util.c both build on them without depending on each other. They run through the
 * kernel table of the tensor's device (core/backend.h). */
#include "core/backend.h"
#include "core/tensor_internal.h"

/* t = v, any strides: contiguous tensors are one fill; a strided one is a copy from a one-element source
 * read with stride 0 (a block of t's device, from the caching allocator). */
nat_status nat_fill_value(nat_tensor *t, float v)
{
    const nat_exec *ex = NAT_EXEC_DEV(t->device);
    if (nat_tensor_is_contiguous(t))
        return NAT_KERNEL(ex, fill, nat_tensor_f32(t), nat_tensor_numel(t), v);
    float *one;
    NAT_TRY(nat_mem_alloc(t->device, sizeof *one, (void **)&one));
    int64_t zero[NAT_MAX_DIMS] = {0};
    nat_status s = NAT_KERNEL(ex, fill, one, 1, v);
    if (s == NAT_OK)
        s = NAT_KERNEL(ex, strided_copy, nat_tensor_f32(t), t->stride, one, zero, t->ndim, t->shape, false);
    nat_mem_free(t->device, one, sizeof *one); /* stream-ordered reuse on CUDA */
    return s;
}

nat_status nat_fill_zero(nat_tensor *t)
{
    if (nat_tensor_is_contiguous(t)) {
        size_t bytes = (size_t)nat_tensor_numel(t) * nat_dtype_size(t->dtype);
        return NAT_KERNEL(NAT_EXEC_DEV(t->device), memset0, nat_tensor_data(t), bytes);
    }
    return nat_fill_value(t, 0.0f);
}

static nat_status strided_into(nat_tensor *dst, const nat_tensor *src, bool add)
{
    if (!nat_tensor_same_shape(dst, src) || !nat_tensor_is_contiguous(dst) || dst->device.kind != src->device.kind ||
        dst->device.index != src->device.index) {
        char a[96], b[96];
        return nat_error(NAT_ERR_INTERNAL, "%s: %s on %s into %s on %s", add ? "accumulate" : "copy",
                         nat_shape_str(src, a, sizeof a), nat_device_name(src->device), nat_shape_str(dst, b, sizeof b),
                         nat_device_name(dst->device));
    }
    return NAT_KERNEL(NAT_EXEC_DEV(dst->device), strided_copy, nat_tensor_f32(dst), dst->stride, nat_tensor_f32(src),
                      src->stride, src->ndim, src->shape, add);
}

nat_status nat_add_into(nat_tensor *dst, const nat_tensor *src) { return strided_into(dst, src, true); }
nat_status nat_copy_into(nat_tensor *dst, const nat_tensor *src) { return strided_into(dst, src, false); }

