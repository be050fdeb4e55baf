/* core/ops_elementwise.c — elementwise ops on the CPU: add, sub and mul with NumPy broadcasting, scale,
 * bias_add along one axis (axis 1 for NCHW, -1 for channels-last [..., C]) and GELU in its erf form.
 *
 * Inputs may be strided views of any layout: the binary kernel reads each operand through its own strides
 * (a broadcast dim has stride 0) after merging the dims that are contiguous in every operand, so the inner
 * loop is as long as the layouts allow and a plain same-shape add is one flat loop. Outputs are
 * contiguous. Backward undoes broadcasting with nat_reduce_to_shape and accumulates (+=) into the
 * gradient buffers from nat_grad_get, which are contiguous in the input's logical shape.
 *
 * On a CUDA device the same operands (pointer + strides per dim) go to nat_cuda_binary (core/cuda/kernels.h);
 * a host scalar factor (opnd_scalar) becomes the kernel's scale argument.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h> /* per-thread partial sums in bias_add's backward */
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* Inner rows are cut into chunks of this many elements so one long row still spreads over threads. */
#define CHUNK 4096

enum { OP_ADD, OP_SUB, OP_MUL };

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

/* y (op)= a (op) b over one row; y has unit stride. The four stride cases are written out so the common
 * ones (both unit, or one operand fixed) compile to vector loops. */
#define ROW_LOOPS(EXPR, ASSIGN)                                                                                        \
    do {                                                                                                               \
        if (sa == 1 && sb == 1) {                                                                                      \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float av = a[i], bv = b[i];                                                                      \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else if (sa == 1 && sb == 0) {                                                                               \
            const float bv = b[0];                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float av = a[i];                                                                                 \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else if (sa == 0 && sb == 1) {                                                                               \
            const float av = a[0];                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float bv = b[i];                                                                                 \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else {                                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                                          \
                const float av = a[i * sa], bv = b[i * sb];                                                            \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

static void row_op(int op, bool acc, int64_t n, float *restrict y, const float *restrict a, int64_t sa,
                   const float *restrict b, int64_t sb)
{
    switch (op * 2 + (acc ? 1 : 0)) {
    case OP_ADD * 2: ROW_LOOPS(av + bv, =); break;
    case OP_ADD * 2 + 1: ROW_LOOPS(av + bv, +=); break;
    case OP_SUB * 2: ROW_LOOPS(av - bv, =); break;
    case OP_SUB * 2 + 1: ROW_LOOPS(av - bv, +=); break;
    case OP_MUL * 2: ROW_LOOPS(av * bv, =); break;
    default: ROW_LOOPS(av * bv, +=); break;
    }
}

/* y = a (op) b, or y += a (op) b when acc, over `shape` (nd dims); y is contiguous in that shape and does
 * not overlap a or b. */
static void apply(int op, bool acc, float *y, int nd, const int64_t *shape, operand a, operand b)
{
    int64_t n_all = nat_shape_numel(nd, shape);
    if (n_all == 0)
        return;
    int64_t ys[NAT_MAX_DIMS];
    nat_contiguous_strides(nd, shape, ys);
    /* Drop size-1 dims and merge neighbours that are contiguous in all three operands. */
    int64_t sh[NAT_MAX_DIMS], sy[NAT_MAX_DIMS], sa[NAT_MAX_DIMS], sb[NAT_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1)
            continue;
        if (m > 0 && sy[m - 1] == ys[d] * shape[d] && sa[m - 1] == a.s[d] * shape[d] &&
            sb[m - 1] == b.s[d] * shape[d]) {
            sh[m - 1] *= shape[d];
            sy[m - 1] = ys[d], sa[m - 1] = a.s[d], sb[m - 1] = b.s[d];
            continue;
        }
        sh[m] = shape[d], sy[m] = ys[d], sa[m] = a.s[d], sb[m] = b.s[d];
        m++;
    }
    if (m == 0) {
        sh[0] = 1, sy[0] = sa[0] = sb[0] = 0;
        m = 1;
    }
    int64_t inner = sh[m - 1];
    int64_t rows = n_all / inner, nchunk = (inner + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (n_all > PAR_MIN)
    for (int64_t w = 0; w < rows * nchunk; w++) {
        int64_t r = w / nchunk, c0 = (w % nchunk) * CHUNK;
        int64_t len = inner - c0 < CHUNK ? inner - c0 : CHUNK;
        int64_t oy = c0 * sy[m - 1], oa = c0 * sa[m - 1], ob = c0 * sb[m - 1];
        for (int d = m - 2; d >= 0; d--) {
            int64_t i = r % sh[d];
            r /= sh[d];
            oy += i * sy[d], oa += i * sa[d], ob += i * sb[d];
        }
        row_op(op, acc, len, y + oy, a.p + oa, sa[m - 1], b.p + ob, sb[m - 1]);
    }
}

/* apply() on the context's device (dev -1: the CPU). On a GPU a host scalar b multiplies (OP_MUL only). */
static nat_status apply_on(int dev, int op, bool acc, float *y, int nd, const int64_t *shape, operand a, operand b)
{
    if (dev < 0) {
        apply(op, acc, y, nd, shape, a, b);
        return NAT_OK;
    }
    if (b.host) {
        if (op != OP_MUL)
            return nat_error(NAT_ERR_INTERNAL, "elementwise: host scalar with op %d on %s", op, "cuda");
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_SCALE, acc, y, nd, shape, a.p, a.s, NULL, NULL, b.p[0]);
    }
    int cop = op == OP_ADD ? NAT_CUDA_ADD : op == OP_SUB ? NAT_CUDA_SUB : NAT_CUDA_MUL;
    return NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, cop, acc, y, nd, shape, a.p, a.s, b.p, b.s, 1.0f);
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
    int dev = nat_ctx_cuda_index(ctx);
    if (nat_tensor_numel(in) == nat_tensor_numel(full))
        return apply_on(dev, OP_MUL, true, nat_tensor_f32(gin), full->ndim, full->shape, opnd_bcast(full, full->ndim),
                        opnd_scalar(sp));
    nat_tensor *r;
    NAT_TRY(nat_reduce_to_shape(ctx, full, in->ndim, in->shape, &r));
    return apply_on(dev, OP_MUL, true, nat_tensor_f32(gin), r->ndim, r->shape, opnd_bcast(r, r->ndim), opnd_scalar(sp));
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
    int nd = g->ndim, dev = nat_ctx_cuda_index(ctx);
    if (nat_tensor_numel(in) == nat_tensor_numel(g))
        return apply_on(dev, OP_MUL, true, nat_tensor_f32(gin), nd, g->shape, opnd_bcast(g, nd), opnd_bcast(other, nd));
    nat_tensor *t;
    NAT_TRY(nat_ctx_empty(ctx, &t, NAT_F32, nd, g->shape));
    NAT_TRY(apply_on(dev, OP_MUL, false, nat_tensor_f32(t), nd, g->shape, opnd_bcast(g, nd), opnd_bcast(other, nd)));
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
    NAT_TRY(nat_check_f32_dev(ctx, a, name, "a"));
    NAT_TRY(nat_check_f32_dev(ctx, b, name, "b"));
    int nd = 0;
    int64_t shape[NAT_MAX_DIMS] = {0};
    NAT_TRY(broadcast_shape(op, a, b, &nd, shape));
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, nd, shape));
    NAT_TRY(apply_on(nat_ctx_cuda_index(ctx), op, false, nat_tensor_f32(y), nd, shape, opnd_bcast(a, nd),
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
        NAT_TRY(apply_on(nat_ctx_cuda_index(ctx), OP_MUL, true, nat_tensor_f32(ga), g->ndim, g->shape,
                         opnd_bcast(g, g->ndim), opnd_scalar(&s)));
    }
    return NAT_OK;
}

static const nat_op_def scale_op = {"scale", scale_backward};

nat_status nat_scale(nat_ctx *ctx, nat_tensor *a, float s, nat_tensor **out)
{
    NAT_TRY(nat_check_f32_dev(ctx, a, "scale", "a"));
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, a->ndim, a->shape));
    NAT_TRY(apply_on(nat_ctx_cuda_index(ctx), OP_MUL, false, nat_tensor_f32(y), a->ndim, a->shape,
                     opnd_bcast(a, a->ndim), opnd_scalar(&s)));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &scale_op, y, 1, &a, &node));
    if (node)
        node->f[0] = s;
    *out = y;
    return NAT_OK;
}

/* ---- bias_add ---- */

/* g viewed as [outer, C, inner]; gb[c] += Σ over outer and inner. Each thread sums its own static block of
 * `outer` into a private row of partial sums; the rows are added in thread order, so a given thread count
 * always gives the same bits. */
static nat_status bias_grad(nat_ctx *ctx, const float *G, int64_t outer, int64_t C, int64_t inner, float *gb)
{
    int nt = outer * C * inner > PAR_MIN ? omp_get_max_threads() : 1;
    float *part;
    NAT_TRY(nat_ctx_scratch(ctx, (size_t)nt * (size_t)C * sizeof *part, (void **)&part));
    memset(part, 0, (size_t)nt * (size_t)C * sizeof *part);
#pragma omp parallel num_threads(nt)
    {
        float *mine = part + (int64_t)omp_get_thread_num() * C;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < outer; o++) {
            const float *row = G + o * C * inner;
            if (inner == 1) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++)
                    mine[c] += row[c];
            } else {
                for (int64_t c = 0; c < C; c++) {
                    float s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t i = 0; i < inner; i++)
                        s += row[c * inner + i];
                    mine[c] += s;
                }
            }
        }
    }
    for (int t = 0; t < nt; t++)
        for (int64_t c = 0; c < C; c++)
            gb[c] += part[(int64_t)t * C + c];
    return NAT_OK;
}

static nat_status bias_add_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gb;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (gx)
        NAT_TRY(nat_add_into(gx, g));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    int dev = nat_ctx_cuda_index(ctx);
    if (gb && dev >= 0) {
        /* g as [outer, C, inner], summed over outer and inner into gb [C]. */
        nat_tensor *gd;
        NAT_TRY(nat_dense(ctx, g, &gd));
        int64_t shape[3] = {node->i[0], node->i[1], node->i[2]}, stride[3] = {shape[1] * shape[2], shape[2], 1};
        bool keep[3] = {false, true, false};
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), reduce, nat_tensor_f32(gb), true, 1.0f, 3, shape, nat_tensor_f32(gd), stride, keep));
    } else if (gb) {
        nat_tensor *gd;
        NAT_TRY(nat_dense(ctx, g, &gd));
        NAT_TRY(bias_grad(ctx, nat_tensor_f32(gd), node->i[0], node->i[1], node->i[2], nat_tensor_f32(gb)));
    }
    return NAT_OK;
}

static const nat_op_def bias_add_op = {"bias_add", bias_add_backward};

nat_status nat_bias_add(nat_ctx *ctx, nat_tensor *x, nat_tensor *bias, int axis, nat_tensor **out)
{
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
    NAT_TRY(apply_on(nat_ctx_cuda_index(ctx), OP_ADD, false, nat_tensor_f32(y), x->ndim, x->shape,
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

/* GELU's loops call exp and erf on every element. glibc has vector versions of expf/erff only under
 * -ffast-math, and the scalar calls cost about 8 ns an element (more than the MLP's two matmuls spend per
 * hidden element), so both are written here from +, *, / and a bit shift, which vectorise. */

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

/* exp(x): x = k·ln2 + r with |r| <= ln2/2 (ln2 split in two so k·ln2 is exact), exp(r) by its Taylor
 * series to r^7 (truncation below 1e-8 relative), times 2^k built in the exponent bits. x is clamped to
 * [-87, 88], where 2^k stays a normal float: the results there (1.6e-38, 1.7e38) are as good as 0 and
 * inf for GELU, which multiplies them by bounded factors; a NaN stays NaN. k is rounded by adding
 * 1.5·2^23, which leaves k in the low mantissa bits: those bits give 2^k with integer arithmetic only
 * (floorf and float-to-int conversion would not vectorise, and the conversion is undefined for NaN). */
static inline float vexp(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    union {
        float f;
        uint32_t u;
    } m = {x * 1.44269504088896341f + 12582912.0f};
    float k = m.f - 12582912.0f;
    float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } two_k = {(m.u - 0x4B400000u + 127u) << 23}; /* 0x4B400000: the bits of 1.5·2^23 */
    return p * two_k.f;
}

/* Φ(x) = 0.5·erfc(-x/√2), with erfc(z), z >= 0, from the Chebyshev fit of Numerical Recipes (2nd ed.,
 * §6.2, erfcc): relative error below 1.2e-7 for every z, so the tail x << 0, where Φ is tiny, keeps its
 * relative precision too. */
static inline float normal_cdf(float x)
{
    float z = fabsf(x) * INV_SQRT2;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    float half_erfc = 0.5f * t * vexp(-z * z - 1.26551223f + t * p);
    return x >= 0.0f ? 1.0f - half_erfc : half_erfc;
}

static nat_status gelu_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    const float *X = nat_tensor_f32(node->saved[0]), *G = nat_tensor_f32(gd);
    float *GX = nat_tensor_f32(gx);
    int64_t n = nat_tensor_numel(gx);
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0)
        return NAT_KERNEL(NAT_EXEC_CUDA(dev), gelu_backward, X, G, GX, n);
    /* d/dx x·Φ(x) = Φ(x) + x·φ(x) */
#pragma omp parallel for simd if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = X[i];
        float pdf = INV_SQRT_2PI * vexp(-0.5f * x * x);
        GX[i] += G[i] * (normal_cdf(x) + x * pdf);
    }
    return NAT_OK;
}

static const nat_op_def gelu_op = {"gelu", gelu_backward};

nat_status nat_gelu(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    NAT_TRY(nat_check_f32_dev(ctx, x, "gelu", "x"));
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, x->shape));
    const float *X = nat_tensor_f32(xd);
    float *Y = nat_tensor_f32(y);
    int64_t n = nat_tensor_numel(x);
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), gelu_forward, X, Y, n));
    } else {
#pragma omp parallel for simd if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            Y[i] = X[i] * normal_cdf(X[i]);
    }
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &gelu_op, y, 1, &x, &node));
    if (node) {
        node->saved[0] = xd;
        node->n_saved = 1;
    }
    *out = y;
    return NAT_OK;
}
