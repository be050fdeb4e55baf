/* core/tensor_fill.c — in-place fills and accumulation of whole tensors (nat_fill_zero, nat_fill_value,
 * nat_add_into; core/tensor_internal.h). They need no context, so autograd (gradient buffers) and the op
 * helpers of core/ops_util.c both build on them without depending on each other. The tensor's device
 * picks the kernel. */
#include <string.h>

#include "core/backend.h"
#include "core/tensor_internal.h"

static bool on_cuda(const nat_tensor *t) { return t->device.kind == NAT_DEV_CUDA; }

/* t = v on a CUDA device, any strides: a one-element source read with stride 0. */
static nat_status cuda_fill_strided(nat_tensor *t, float v)
{
    int dev = t->device.index;
    if (nat_tensor_is_contiguous(t))
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), fill, nat_tensor_f32(t), nat_tensor_numel(t), v);
    float *one;
    NAT_TRY(nat_mem_alloc(t->device, sizeof *one, (void **)&one));
    int64_t zero[NAT_MAX_DIMS] = {0};
    nat_status s = NAT_KERNEL(NAT_EXEC_CUDA(dev), fill, one, 1, v);
    if (s == NAT_OK)
        s = NAT_KERNEL(NAT_EXEC_CUDA(dev), strided_copy, nat_tensor_f32(t), t->stride, one, zero, t->ndim, t->shape, false);
    nat_mem_free(t->device, one, sizeof *one); /* stream-ordered reuse */
    return s;
}

nat_status nat_fill_value(nat_tensor *t, float v)
{
    if (on_cuda(t))
        return cuda_fill_strided(t, v);
    if (!nat_tensor_is_contiguous(t))
        return nat_tensor_fill(t, v);
    float *p = nat_tensor_f32(t);
    int64_t n = nat_tensor_numel(t);
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
    return NAT_OK;
}

nat_status nat_fill_zero(nat_tensor *t)
{
    if (nat_tensor_is_contiguous(t)) {
        size_t bytes = (size_t)nat_tensor_numel(t) * nat_dtype_size(t->dtype);
        if (on_cuda(t))
            return NAT_KERNEL(NAT_EXEC_CUDA(t->device.index), memset0, nat_tensor_data(t), bytes);
        memset(nat_tensor_data(t), 0, bytes);
        return NAT_OK;
    }
    return nat_fill_value(t, 0.0f);
}

/* Visits src in row-major order, calling body(i, src_offset). Kept as a macro-free iterator over at most
 * NAT_MAX_DIMS dims; the innermost dim is a tight loop. */
static void strided_add(float *dst, const float *src, int ndim, const int64_t *shape, const int64_t *stride)
{
    if (ndim == 0) {
        dst[0] += src[0];
        return;
    }
    int64_t inner = shape[ndim - 1], istride = stride[ndim - 1];
    int64_t outer = nat_shape_numel(ndim - 1, shape);
#pragma omp parallel for if (outer * inner > 65536)
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0, rem = o;
        for (int d = ndim - 2; d >= 0; d--) {
            off += (rem % shape[d]) * stride[d];
            rem /= shape[d];
        }
        float *dp = dst + o * inner;
        const float *sp = src + off;
        for (int64_t i = 0; i < inner; i++)
            dp[i] += sp[i * istride];
    }
}

nat_status nat_add_into(nat_tensor *dst, const nat_tensor *src)
{
    if (!nat_tensor_same_shape(dst, src) || !nat_tensor_is_contiguous(dst) || dst->device.kind != src->device.kind ||
        dst->device.index != src->device.index) {
        char a[96], b[96];
        return nat_error(NAT_ERR_INTERNAL, "accumulate: %s on %s into %s on %s", nat_shape_str(src, a, sizeof a),
                         nat_device_name(src->device), nat_shape_str(dst, b, sizeof b), nat_device_name(dst->device));
    }
    if (on_cuda(dst))
        return NAT_KERNEL(NAT_EXEC_CUDA(dst->device.index), strided_copy, nat_tensor_f32(dst), dst->stride, nat_tensor_f32(src),
                                     src->stride, src->ndim, src->shape, true);
    strided_add(nat_tensor_f32(dst), nat_tensor_f32(src), src->ndim, src->shape, src->stride);
    return NAT_OK;
}

