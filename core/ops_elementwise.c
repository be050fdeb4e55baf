/* core/ops_elementwise.c — elementwise ops: add, sub and mul with NumPy broadcasting, scale, bias_add
 * along one axis (axis 1 for NCHW, -1 for channels-last [..., C]) and GELU in its erf form.
 *
 * Inputs may be strided views of any layout: the binary kernel (core/cpu/elementwise.c,
 * core/cuda/elementwise.cu) reads each operand through its own strides (a broadcast dim has stride 0).
 * Outputs are contiguous. Backward undoes broadcasting with nat_reduce_to_shape and accumulates (+=) into
 * the gradient buffers from nat_grad_get, which are contiguous in the input's logical shape. A host scalar
 * factor (opnd_scalar) becomes the binary kernel's scale argument.
 */
#include <inttypes.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

enum { OP_ADD = NAT_CUDA_ADD, OP_SUB = NAT_CUDA_SUB, OP_MUL = NAT_CUDA_MUL };

/* One operand of the binary kernel: element 0 and a stride per dim of the iteration space. */
typedef struct operand {
    const float *p;
    int64_t s[NAT_MAX_DIMS];
    bool host; /* p is one float in host memory (a scale factor), even when the op runs on a GPU */
} operand;

/* t aligned on the right into an nd-dim iteration space; size-1 and missing dims get stride 0. */
static operand opnd_bcast(const nat_tensor *t, int nd)
{
    operand o = {nat_tensor_f32(t), {0}, false};
    int off = nd - t->ndim;
    for (int d = off; d < nd; d++)
        o.s[d] = t->shape[d - off] == 1 ? 0 : t->stride[d - off];
    return o;
}

/* One float seen at every position (all strides 0). */
static operand opnd_scalar(const float *p)
{
    operand o = {p, {0}, true};
    return o;
}

/* y (op)= a (op) b through the kernel table of the context's device. A host scalar b multiplies (OP_MUL
 * only) and is passed by value. */
static nat_status apply_on(nat_ctx *ctx, int op, bool acc, float *y, int nd, const int64_t *shape, operand a,
                           operand b)
{
    if (b.host) {
        if (op != OP_MUL)
            return nat_error(NAT_ERR_INTERNAL, "elementwise: host scalar with op %d", op);
        return NAT_KERNEL(NAT_EXEC_CTX(ctx), binary, NAT_CUDA_SCALE, acc, y, nd, shape, a.p, a.s, NULL, NULL, b.p[0]);
    }
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), binary, op, acc, y, nd, shape, a.p, a.s, b.p, b.s, 1.0f);
}

/* ---- add, sub, mul ---- */

static const char *binary_name(int op) { return op == OP_ADD ? "add" : op == OP_SUB ? "sub" : "mul"; }

static nat_status broadcast_shape(int op, const nat_tensor *a, const nat_tensor *b, int *nd, int64_t *shape)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < n; d++) {
        int da = d - (n - a->ndim), db = d - (n - b->ndim);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char s1[96], s2[96];
            return nat_error(NAT_ERR_SHAPE,
                             "%s: shapes %s and %s cannot be broadcast together (sizes %" PRId64 " and %" PRId64
                             " in the %d-th dim from the right)",
                             binary_name(op), nat_shape_str(a, s1, sizeof s1), nat_shape_str(b, s2, sizeof s2), sa,
                             sb, n - d);
        }
        shape[d] = sa == 1 ? sb : sa;
    }
    *nd = n;
    return NAT_OK;
}

/* gin += sign * (full reduced to in's shape). `full` is `other_factor ⊙ g` already formed, or g itself;
 * it has the output's shape (nd dims). When `in` has as many elements as the output, no dim was
 * broadcast and the contiguous gradient buffer lines up with the output element for element. */
static nat_status accumulate_reduced(nat_ctx *ctx, const nat_tensor *in, nat_tensor *gin, const nat_tensor *full,
                                     float sign)
{
    const float *sp = &sign;
    if (nat_tensor_numel(in) == nat_tensor_numel(full))
        return apply_on(ctx, OP_MUL, true, nat_tensor_f32(gin), full->ndim, full->shape, opnd_bcast(full, full->ndim),
                        opnd_scalar(sp));
    nat_tensor *r;
    NAT_TRY(nat_reduce_to_shape(ctx, full, in->ndim, in->shape, &r));
    return apply_on(ctx, OP_MUL, true, nat_tensor_f32(gin), r->ndim, r->shape, opnd_bcast(r, r->ndim), opnd_scalar(sp));
}

static nat_status add_sub_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *ga, *gb;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &ga));
    if (ga)
        NAT_TRY(accumulate_reduced(ctx, node->in[0], ga, g, 1.0f));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    if (gb)
        NAT_TRY(accumulate_reduced(ctx, node->in[1], gb, g, node->i[0] == OP_SUB ? -1.0f : 1.0f));
    return NAT_OK;
}

/* d(a⊙b)/da = g ⊙ b, reduced to a's shape (and the same for b). The product is formed straight into the
 * gradient buffer when no reduction is needed; otherwise in a temporary of the output's shape. */
static nat_status mul_grad_one(nat_ctx *ctx, const nat_tensor *in, nat_tensor *gin, const nat_tensor *g,
                               const nat_tensor *other)
{
    int nd = g->ndim;
    if (nat_tensor_numel(in) == nat_tensor_numel(g))
        return apply_on(ctx, OP_MUL, true, nat_tensor_f32(gin), nd, g->shape, opnd_bcast(g, nd), opnd_bcast(other, nd));
    nat_tensor *t;
    NAT_TRY(nat_ctx_empty(ctx, &t, NAT_F32, nd, g->shape));
    NAT_TRY(apply_on(ctx, OP_MUL, false, nat_tensor_f32(t), nd, g->shape, opnd_bcast(g, nd), opnd_bcast(other, nd)));
    return accumulate_reduced(ctx, in, gin, t, 1.0f);
}

static nat_status mul_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *ga, *gb;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &ga));
    if (ga)
        NAT_TRY(mul_grad_one(ctx, node->in[0], ga, g, node->saved[1]));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    if (gb)
        NAT_TRY(mul_grad_one(ctx, node->in[1], gb, g, node->saved[0]));
    return NAT_OK;
}

static const nat_op_def add_op = {"add", add_sub_backward};
static const nat_op_def sub_op = {"sub", add_sub_backward};
static const nat_op_def mul_op = {"mul", mul_backward};

static nat_status binary(nat_ctx *ctx, int op, nat_tensor *a, nat_tensor *b, nat_tensor **out)
{
    const char *name = binary_name(op);
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: out is NULL", name);
    NAT_TRY(nat_check_f32_dev(ctx, a, name, "a"));
    NAT_TRY(nat_check_f32_dev(ctx, b, name, "b"));
    int nd = 0;
    int64_t shape[NAT_MAX_DIMS] = {0};
    NAT_TRY(broadcast_shape(op, a, b, &nd, shape));
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, nd, shape));
    NAT_TRY(apply_on(ctx, op, false, nat_tensor_f32(y), nd, shape, opnd_bcast(a, nd),
                     opnd_bcast(b, nd)));
    nat_node *node;
    nat_tensor *ins[2] = {a, b};
    NAT_TRY(nat_ctx_record(ctx, op == OP_ADD ? &add_op : op == OP_SUB ? &sub_op : &mul_op, y, 2, ins, &node));
    if (node) {
        node->i[0] = op;
        /* mul's backward needs the values; a strided input is read through its strides, no copy. */
        if (op == OP_MUL) {
            node->saved[0] = a;
            node->saved[1] = b;
            node->n_saved = 2;
        }
    }
    *out = y;
    return NAT_OK;
}

nat_status nat_add(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out) { return binary(ctx, OP_ADD, a, b, out); }
nat_status nat_sub(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out) { return binary(ctx, OP_SUB, a, b, out); }
nat_status nat_mul(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out) { return binary(ctx, OP_MUL, a, b, out); }

/* ---- scale ---- */

static nat_status scale_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *ga;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &ga));
    if (ga) {
        float s = (float)node->f[0];
        NAT_TRY(apply_on(ctx, OP_MUL, true, nat_tensor_f32(ga), g->ndim, g->shape,
                         opnd_bcast(g, g->ndim), opnd_scalar(&s)));
    }
    return NAT_OK;
}

static const nat_op_def scale_op = {"scale", scale_backward};

nat_status nat_scale(nat_ctx *ctx, nat_tensor *a, float s, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "scale", "out");
    NAT_TRY(nat_check_f32_dev(ctx, a, "scale", "a"));
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, a->ndim, a->shape));
    NAT_TRY(apply_on(ctx, OP_MUL, false, nat_tensor_f32(y), a->ndim, a->shape,
                     opnd_bcast(a, a->ndim), opnd_scalar(&s)));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &scale_op, y, 1, &a, &node));
    if (node)
        node->f[0] = s;
    *out = y;
    return NAT_OK;
}

static nat_status bias_add_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gb;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (gx)
        NAT_TRY(nat_add_into(gx, g));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    if (gb) {
        /* g as [outer, C, inner], summed over outer and inner into gb [C]. */
        nat_tensor *gd;
        NAT_TRY(nat_dense(ctx, g, &gd));
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), bias_grad, nat_tensor_f32(gd), node->i[0], node->i[1], node->i[2],
                           nat_tensor_f32(gb)));
    }
    return NAT_OK;
}

static const nat_op_def bias_add_op = {"bias_add", bias_add_backward};

nat_status nat_bias_add(nat_ctx *ctx, nat_tensor *x, nat_tensor *bias, int axis, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "bias_add", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "bias_add", "x"));
    NAT_TRY(nat_check_f32_dev(ctx, bias, "bias_add", "bias"));
    char sx[96], sb[96];
    nat_shape_str(x, sx, sizeof sx);
    nat_shape_str(bias, sb, sizeof sb);
    int ax = axis < 0 ? axis + x->ndim : axis;
    if (ax < 0 || ax >= x->ndim)
        return nat_error(NAT_ERR_INVALID_ARG, "bias_add: axis %d is out of range for x %s (%d dims)", axis, sx,
                         x->ndim);
    if (bias->ndim != 1 || bias->shape[0] != x->shape[ax])
        return nat_error(NAT_ERR_SHAPE, "bias_add: bias %s does not fit x %s along axis %d (expected [%" PRId64 "])",
                         sb, sx, axis, x->shape[ax]);
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    operand ob = {nat_tensor_f32(bias), {0}, false};
    ob.s[ax] = x->shape[ax] == 1 ? 0 : bias->stride[0];
    NAT_TRY(apply_on(ctx, OP_ADD, false, nat_tensor_f32(y), x->ndim, x->shape,
                     opnd_bcast(x, x->ndim), ob));
    nat_node *node;
    nat_tensor *ins[2] = {x, bias};
    NAT_TRY(nat_ctx_record(ctx, &bias_add_op, y, 2, ins, &node));
    if (node) {
        node->i[0] = nat_shape_numel(ax, x->shape);
        node->i[1] = x->shape[ax];
        node->i[2] = nat_shape_numel(x->ndim - ax - 1, x->shape + ax + 1);
    }
    *out = y;
    return NAT_OK;
}

/* ---- GELU (erf form) ---- */

static nat_status gelu_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    bool fresh; /* the usual case (fc1's output feeds GELU alone): written, not zero-filled and added to */
    NAT_TRY(nat_grad_buffer(ctx, node->in[0], &gx, &fresh));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    const float *X = nat_tensor_f32(node->saved[0]), *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    int64_t n = nat_tensor_numel(gx);
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), gelu_backward, X, G, GX, n, !fresh);
}

static const nat_op_def gelu_op = {"gelu", gelu_backward};

nat_status nat_gelu(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "gelu", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "gelu", "x"));
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
    int64_t n = nat_tensor_numel(x);
    NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), gelu_forward, X, Y, n));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &gelu_op, y, 1, &x, &node));
    if (node) {
        node->saved[0] = xd;
        node->n_saved = 1;
    }
    *out = y;
    return NAT_OK;
}
