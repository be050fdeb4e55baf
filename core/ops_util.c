/* core/ops_util.c — in-place helpers behind autograd (fill, accumulate), argument checks, dense
 * copies of strided views and broadcast reduction (see core/ops_internal.h). CPU only for now: a
 * tensor on another device gets a clear "no kernel" error from nat_check_f32 before reaching these. */
#include <string.h>

#include "core/ops_internal.h"
#include "core/tensor_internal.h"

static nat_status host_only(const nat_tensor *t, const char *what)
{
    if (t->device.kind != NAT_DEV_CPU)
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: no kernel for tensors on %s in this build", what,
                         nat_device_name(t->device));
    return NAT_OK;
}

nat_status nat_fill_value(nat_tensor *t, float v)
{
    NAT_TRY(host_only(t, "fill"));
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
    if (t->device.kind == NAT_DEV_CPU && nat_tensor_is_contiguous(t)) {
        memset(nat_tensor_data(t), 0, (size_t)nat_tensor_numel(t) * nat_dtype_size(t->dtype));
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
    NAT_TRY(host_only(dst, "accumulate"));
    if (!nat_tensor_same_shape(dst, src) || !nat_tensor_is_contiguous(dst)) {
        char a[96], b[96];
        return nat_error(NAT_ERR_INTERNAL, "accumulate: %s into %s", nat_shape_str(src, a, sizeof a),
                         nat_shape_str(dst, b, sizeof b));
    }
    strided_add(nat_tensor_f32(dst), nat_tensor_f32(src), src->ndim, src->shape, src->stride);
    return NAT_OK;
}

nat_status nat_check_f32(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg)
{
    if (!t)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is NULL", op, arg);
    if (t->dtype != NAT_F32)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is %s; this op takes f32", op, arg, nat_dtype_name(t->dtype));
    nat_device d = nat_ctx_device(ctx);
    if (t->device.kind != d.kind || t->device.index != d.index)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %s is on %s but the context runs on %s", op, arg,
                         nat_device_name(t->device), nat_device_name(d));
    if (t->device.kind != NAT_DEV_CPU)
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: no kernel for %s tensors in this build", op,
                         nat_device_name(t->device));
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
    NAT_TRY(nat_ctx_zeros(ctx, &y, x->dtype, x->ndim, x->shape));
    strided_add(nat_tensor_f32(y), nat_tensor_f32(x), x->ndim, x->shape, x->stride);
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
    nat_tensor *r;
    NAT_TRY(nat_ctx_zeros(ctx, &r, NAT_F32, ndim, shape));
    int64_t rstride[NAT_MAX_DIMS];
    nat_contiguous_strides(ndim, shape, rstride);
    /* Map each element of g to its broadcast source in r. */
    int64_t gs[NAT_MAX_DIMS];
    for (int d = 0; d < g->ndim; d++) {
        int rd = d - off;
        gs[d] = (rd < 0 || shape[rd] == 1) ? 0 : rstride[rd];
    }
    const float *gp = nat_tensor_f32(g);
    float *rp = nat_tensor_f32(r);
    int64_t idx[NAT_MAX_DIMS] = {0}, n = nat_tensor_numel(g);
    for (int64_t i = 0; i < n; i++) {
        int64_t go = 0, ro = 0;
        for (int d = 0; d < g->ndim; d++) {
            go += idx[d] * g->stride[d];
            ro += idx[d] * gs[d];
        }
        rp[ro] += gp[go];
        for (int d = g->ndim - 1; d >= 0; d--) {
            if (++idx[d] < g->shape[d])
                break;
            idx[d] = 0;
        }
    }
    *out = r;
    return NAT_OK;
}
