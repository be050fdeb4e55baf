/* core/ops_shape.c — shape ops: permute and slice (views), reshape (view or copy), permute_reshape (one
 * dense copy), contiguous, and constant padding; forward and backward.
 *
 * Any layout and any strides in; views share x's storage (nat_ctx_view), so writing into a view's
 * storage writes into x. Backward of a view scatters the gradient into the positions the view read:
 * permute through the inverse permutation, slice into the [start, end) band, pad by cropping.
 * Gradients arrive dense in practice (autograd makes them with nat_ctx_zeros) but any strides work.
 * On a CUDA device every copy is nat_cuda_strided_copy (core/cuda/kernels.h), with the same strides.
 */
#include <inttypes.h>
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

/* dst = src (or dst += src) elementwise over `shape`, both strided, on the context's device. */
static nat_status copy_on(nat_ctx *ctx, float *dst, const int64_t *ds, const float *src, const int64_t *ss, int ndim,
                          const int64_t *shape, bool add)
{
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), strided_copy, dst, ds, src, ss, ndim, shape, add);
}

/* ---- permute ---- */

static nat_status permute_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->in[0], *gx;
    bool fresh; /* a new buffer is written, not zero-filled and added to */
    NAT_TRY(nat_grad_buffer(ctx, x, &gx, &fresh));
    if (!gx)
        return NAT_OK;
    /* Read g through the inverse permutation: x's dim perm[i] is g's dim i. */
    int64_t gs[NAT_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++)
        gs[node->i[i]] = g->stride[i];
    return copy_on(ctx, nat_tensor_f32(gx), gx->stride, nat_tensor_f32(g), gs, x->ndim, x->shape,
                   !fresh);
}

static const nat_op_def permute_op = {"permute", permute_backward};

nat_status nat_permute(nat_ctx *ctx, nat_tensor *x, const int *perm, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "permute", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "permute", "input"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    if (!perm && x->ndim > 0)
        return nat_error(NAT_ERR_INVALID_ARG, "permute: perm is NULL for input %s", sx);
    bool seen[NAT_MAX_DIMS] = {false};
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]]) {
            char sp[64];
            int64_t p64[NAT_MAX_DIMS];
            for (int j = 0; j < x->ndim; j++)
                p64[j] = perm[j];
            return nat_error(NAT_ERR_INVALID_ARG, "permute: %s is not a permutation of the %d dims of input %s",
                             nat_dims_str(x->ndim, p64, sp, sizeof sp), x->ndim, sx);
        }
        seen[perm[i]] = true;
    }
    int64_t shape[NAT_MAX_DIMS], stride[NAT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[perm[i]];
        stride[i] = x->stride[perm[i]];
    }
    nat_tensor *y;
    NAT_TRY(nat_ctx_view(ctx, &y, x, x->ndim, shape, stride, x->offset));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &permute_op, y, 1, &x, &node));
    if (node)
        for (int i = 0; i < x->ndim; i++)
            node->i[i] = perm[i];
    *out = y;
    return NAT_OK;
}

/* ---- permute + reshape in one copy ---- */

/* The two dense layouts of a permute_reshape: the view (xs, its strides) and the permuted view (ps, its
 * shape, and pst, its strides); the reshaped output has the permuted view's storage order. */
static void permuted_layout(int nv, const int64_t *view, const int *perm, int64_t *xs, int64_t *ps, int64_t *pst)
{
    for (int i = 0; i < nv; i++)
        ps[i] = view[perm[i]];
    nat_contiguous_strides(nv, view, xs);
    nat_contiguous_strides(nv, ps, pst);
}

/* node->i: [0] the view's rank, [1] perm packed 4 bits per dim, [2..7] the view's shape. */
static void view_perm_of(const nat_node *node, int *nv, int64_t *view, int *perm)
{
    *nv = (int)node->i[0];
    for (int d = 0; d < *nv; d++)
        view[d] = node->i[2 + d], perm[d] = (int)(node->i[1] >> (4 * d) & 0xF);
}

static nat_status permute_reshape_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->in[0], *gx, *gd;
    bool fresh;
    NAT_TRY(nat_grad_buffer(ctx, x, &gx, &fresh));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    int nv, perm[NAT_MAX_DIMS];
    int64_t view[NAT_MAX_DIMS], ps[NAT_MAX_DIMS], pst[NAT_MAX_DIMS], xs[NAT_MAX_DIMS], gs[NAT_MAX_DIMS];
    view_perm_of(node, &nv, view, perm);
    permuted_layout(nv, view, perm, xs, ps, pst); /* g is the permuted view, stored dense */
    for (int i = 0; i < nv; i++)
        gs[perm[i]] = pst[i]; /* read g through the inverse permutation */
    return copy_on(ctx, nat_tensor_f32(gx), xs, nat_tensor_f32(gd), gs, nv, view, !fresh);
}

static const nat_op_def permute_reshape_op = {"permute_reshape", permute_reshape_backward};

nat_status nat_permute_reshape(nat_ctx *ctx, nat_tensor *x, int view_ndim, const int64_t *view, const int *perm,
                               int ndim, const int64_t *shape, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "permute_reshape", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "permute_reshape", "input"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    if (view_ndim < 1 || view_ndim > NAT_MAX_DIMS || ndim < 0 || ndim > NAT_MAX_DIMS || !view || !perm || (!shape && ndim))
        return nat_error(NAT_ERR_INVALID_ARG, "permute_reshape: bad ranks %d -> %d for input %s", view_ndim, ndim, sx);
    if (!nat_tensor_is_contiguous(x))
        return nat_error(NAT_ERR_INVALID_ARG, "permute_reshape: input %s must be contiguous", sx);
    int64_t nview = 1, nout = 1;
    bool seen[NAT_MAX_DIMS] = {false};
    for (int d = 0; d < view_ndim; d++) {
        if (perm[d] < 0 || perm[d] >= view_ndim || seen[perm[d]])
            return nat_error(NAT_ERR_INVALID_ARG, "permute_reshape: perm is not a permutation of %d dims", view_ndim);
        seen[perm[d]] = true;
        nview *= view[d];
    }
    for (int d = 0; d < ndim; d++)
        nout *= shape[d];
    if (nview != nat_tensor_numel(x) || nout != nview) {
        char sv[128], so[128];
        return nat_error(NAT_ERR_SHAPE, "permute_reshape: input %s, view %s, output %s: element counts differ", sx,
                         nat_dims_str(view_ndim, view, sv, sizeof sv), nat_dims_str(ndim, shape, so, sizeof so));
    }
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, ndim, shape));
    int64_t ps[NAT_MAX_DIMS], pst[NAT_MAX_DIMS], xs[NAT_MAX_DIMS], ss[NAT_MAX_DIMS];
    permuted_layout(view_ndim, view, perm, xs, ps, pst);
    for (int i = 0; i < view_ndim; i++)
        ss[i] = xs[perm[i]]; /* x read through the permutation */
    NAT_TRY(copy_on(ctx, nat_tensor_f32(y), pst, nat_tensor_f32(x), ss, view_ndim, ps, false));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &permute_reshape_op, y, 1, &x, &node));
    if (node) {
        node->i[0] = view_ndim;
        node->i[1] = 0;
        for (int d = 0; d < view_ndim; d++)
            node->i[1] |= (int64_t)perm[d] << (4 * d), node->i[2 + d] = view[d];
    }
    *out = y;
    return NAT_OK;
}

/* ---- slice ---- */

static nat_status slice_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->in[0], *gx;
    NAT_TRY(nat_grad_get(ctx, x, &gx));
    if (!gx)
        return NAT_OK;
    int dim = (int)node->i[0];
    float *band = nat_tensor_f32(gx) + node->i[1] * gx->stride[dim];
    return copy_on(ctx, band, gx->stride, nat_tensor_f32(g), g->stride, g->ndim, g->shape, true);
}

static const nat_op_def slice_op = {"slice", slice_backward};

nat_status nat_slice(nat_ctx *ctx, nat_tensor *x, int dim, int64_t start, int64_t end, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "slice", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "slice", "input"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    int d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim)
        return nat_error(NAT_ERR_INVALID_ARG, "slice: dim %d is out of range for input %s", dim, sx);
    if (start < 0 || end < start || end > x->shape[d])
        return nat_error(NAT_ERR_INVALID_ARG,
                         "slice: [%" PRId64 ":%" PRId64 "] along dim %d is out of range for input %s (need 0 <= start <= end <= %" PRId64 ")",
                         start, end, dim, sx, x->shape[d]);
    int64_t shape[NAT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = end - start;
    nat_tensor *y;
    NAT_TRY(nat_ctx_view(ctx, &y, x, x->ndim, shape, x->stride, x->offset + start * x->stride[d]));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &slice_op, y, 1, &x, &node));
    if (node)
        node->i[0] = d, node->i[1] = start;
    *out = y;
    return NAT_OK;
}

/* ---- reshape ---- */

/* Both reshape flavours (view and copy) send the gradient back the same way: g read in row-major order
 * is x's gradient in row-major order. */
static nat_status reshape_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->in[0], *gx, *gd;
    bool fresh;
    NAT_TRY(nat_grad_buffer(ctx, x, &gx, &fresh));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    float *dst = nat_tensor_f32(gx);
    const float *src = nat_tensor_f32(gd);
    int64_t n = nat_tensor_numel(x);
    int64_t unit = 1;
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), strided_copy, dst, &unit, src, &unit, 1, &n, !fresh);
}

static const nat_op_def reshape_op = {"reshape", reshape_backward};

nat_status nat_reshape(nat_ctx *ctx, nat_tensor *x, int ndim, const int64_t *shape, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "reshape", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "reshape", "input"));
    char sx[96], sn[128];
    nat_shape_str(x, sx, sizeof sx);
    if (ndim < 0 || ndim > NAT_MAX_DIMS || (!shape && ndim > 0))
        return nat_error(NAT_ERR_INVALID_ARG, "reshape: %d dims requested for input %s; nat tensors have 0 to %d", ndim,
                         sx, NAT_MAX_DIMS);
    nat_dims_str(ndim, shape, sn, sizeof sn);
    int64_t ns[NAT_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        ns[d] = shape[d];
        if (shape[d] == -1) {
            if (infer >= 0)
                return nat_error(NAT_ERR_INVALID_ARG, "reshape: new shape %s for input %s has more than one -1", sn, sx);
            infer = d;
        } else if (shape[d] < 0) {
            return nat_error(NAT_ERR_INVALID_ARG, "reshape: new shape %s for input %s has a negative size", sn, sx);
        } else {
            known *= shape[d];
        }
    }
    int64_t n = nat_tensor_numel(x);
    if (infer >= 0) {
        if (known == 0 || n % known != 0)
            return nat_error(NAT_ERR_SHAPE, "reshape: cannot reshape input %s (%" PRId64 " elements) into %s", sx, n, sn);
        ns[infer] = n / known;
    } else if (known != n) {
        return nat_error(NAT_ERR_SHAPE, "reshape: cannot reshape input %s (%" PRId64 " elements) into %s (%" PRId64 " elements)",
                         sx, n, sn, known);
    }
    /* A strided x is copied (unrecorded); the view is then taken of the copy and recorded as made from x. */
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    int64_t stride[NAT_MAX_DIMS];
    nat_contiguous_strides(ndim, ns, stride);
    NAT_TRY(nat_ctx_view(ctx, &y, xd, ndim, ns, stride, xd->offset));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &reshape_op, y, 1, &x, &node));
    *out = y;
    return NAT_OK;
}

/* ---- contiguous ---- */

static nat_status contiguous_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    return nat_grad_accumulate(ctx, node->in[0], g);
}

static const nat_op_def contiguous_op = {"contiguous", contiguous_backward};

nat_status nat_contiguous(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "contiguous", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "contiguous", "input"));
    if (nat_tensor_is_contiguous(x)) {
        *out = x;
        return NAT_OK;
    }
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    NAT_TRY(copy_on(ctx, nat_tensor_f32(y), y->stride, nat_tensor_f32(x), x->stride, x->ndim,
                    x->shape, false));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &contiguous_op, y, 1, &x, &node));
    *out = y;
    return NAT_OK;
}

/* ---- pad ---- */

/* The gradient of x is the interior of g: the crop that undoes the padding. */
static nat_status pad_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->in[0], *gx;
    bool fresh;
    NAT_TRY(nat_grad_buffer(ctx, x, &gx, &fresh));
    if (!gx)
        return NAT_OK;
    const float *interior = nat_tensor_f32(g);
    for (int d = 0; d < x->ndim; d++)
        interior += node->i[d] * g->stride[d];
    return copy_on(ctx, nat_tensor_f32(gx), gx->stride, interior, g->stride, x->ndim, x->shape,
                   !fresh);
}

static const nat_op_def pad_op = {"pad", pad_backward};

nat_status nat_pad(nat_ctx *ctx, nat_tensor *x, const int64_t *before, const int64_t *after, float value,
                   nat_tensor **out)
{
    NAT_CHECK_ARG(out, "pad", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "pad", "input"));
    char sx[96];
    nat_shape_str(x, sx, sizeof sx);
    if ((!before || !after) && x->ndim > 0)
        return nat_error(NAT_ERR_INVALID_ARG, "pad: before/after arrays are NULL for input %s", sx);
    int64_t shape[NAT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        if (before[d] < 0 || after[d] < 0)
            return nat_error(NAT_ERR_INVALID_ARG,
                             "pad: negative padding (%" PRId64 " before, %" PRId64 " after) on dim %d of input %s; crop with nat_slice",
                             before[d], after[d], d, sx);
        shape[d] = x->shape[d] + before[d] + after[d];
    }
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, shape));
    NAT_TRY(nat_fill_value(y, value));
    float *interior = nat_tensor_f32(y);
    for (int d = 0; d < x->ndim; d++)
        interior += before[d] * y->stride[d];
    NAT_TRY(copy_on(ctx, interior, y->stride, nat_tensor_f32(x), x->stride, x->ndim, x->shape,
                    false));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &pad_op, y, 1, &x, &node));
    if (node)
        for (int d = 0; d < x->ndim; d++)
            node->i[d] = before[d];
    *out = y;
    return NAT_OK;
}
