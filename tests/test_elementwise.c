/* tests/test_elementwise.c — add/sub/mul with NumPy broadcasting (both directions, strided views made with
 * nat_ctx_view), scale, bias_add (NCHW axis 1, channels-last axis -1) and GELU: forward and backward
 * against plain double loops, finite-difference checks of every input, accumulation, and shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

#define M_PI_REF 3.14159265358979323846

enum { ADD, SUB, MUL };
static const char *op_names[] = {"add", "sub", "mul"};

static nat_status run_op(nat_ctx *ctx, int op, nat_tensor *a, nat_tensor *b, nat_tensor **out)
{
    return op == ADD ? nat_add(ctx, a, b, out) : op == SUB ? nat_sub(ctx, a, b, out) : nat_mul(ctx, a, b, out);
}

/* ---- plain reference for broadcasting ---- */

typedef struct shape_t {
    int nd;
    int64_t d[NAT_MAX_DIMS];
} shape_t;

static int64_t numel(shape_t s)
{
    int64_t n = 1;
    for (int i = 0; i < s.nd; i++)
        n *= s.d[i];
    return n;
}

static shape_t bshape(shape_t a, shape_t b)
{
    shape_t o = {a.nd > b.nd ? a.nd : b.nd, {0}};
    for (int i = 0; i < o.nd; i++) {
        int ia = i - (o.nd - a.nd), ib = i - (o.nd - b.nd);
        int64_t x = ia >= 0 ? a.d[ia] : 1, y = ib >= 0 ? b.d[ib] : 1;
        o.d[i] = x == 1 ? y : x;
    }
    return o;
}

/* Row-major index into `s` of the element that output index `oi` (in shape o) reads under broadcasting. */
static int64_t src_index(shape_t o, shape_t s, int64_t oi)
{
    int64_t idx = 0, mul = 1;
    for (int i = o.nd - 1; i >= 0; i--) {
        int64_t c = oi % o.d[i];
        oi /= o.d[i];
        int is = i - (o.nd - s.nd);
        if (is >= 0) {
            if (s.d[is] != 1)
                idx += c * mul;
            mul *= s.d[is];
        }
    }
    return idx;
}

static double ref_apply(int op, double x, double y) { return op == ADD ? x + y : op == SUB ? x - y : x * y; }

/* Forward and, given g (output-shaped), the gradients of a and b, all in double. */
static void ref_binary(int op, shape_t sa, const float *a, shape_t sb, const float *b, const float *g, double *y,
                       double *ga, double *gb)
{
    shape_t so = bshape(sa, sb);
    int64_t n = numel(so);
    memset(ga, 0, (size_t)numel(sa) * sizeof *ga);
    memset(gb, 0, (size_t)numel(sb) * sizeof *gb);
    for (int64_t i = 0; i < n; i++) {
        int64_t ia = src_index(so, sa, i), ib = src_index(so, sb, i);
        y[i] = ref_apply(op, a[ia], b[ib]);
        ga[ia] += op == MUL ? (double)g[i] * b[ib] : g[i];
        gb[ib] += op == MUL ? (double)g[i] * a[ia] : op == SUB ? -(double)g[i] : g[i];
    }
}

static const struct {
    shape_t a, b;
} bcases[] = {
    {{3, {2, 3, 4}}, {1, {4}}},          {{3, {2, 1, 4}}, {2, {3, 1}}},          {{1, {1}}, {2, {2, 3}}},
    {{1, {7}}, {1, {7}}},                {{2, {17, 1}}, {2, {1, 5}}},            {{2, {1, 1}}, {1, {1}}},
    {{4, {3, 1, 5, 1}}, {3, {4, 1, 1}}}, {{3, {2, 3, 33}}, {3, {2, 1, 33}}},     {{1, {33}}, {1, {1}}},
    {{2, {4, 1}}, {1, {3}}},             {{3, {1, 6, 1}}, {3, {2, 1, 7}}},       {{0, {0}}, {2, {2, 3}}},
};

/* Runs op forward and backward (gradient g) and compares with ref_binary. Runs in `outer` when given (the
 * context that owns a or b, so that a step tensor's gradient lives as long as the tensor), else in a
 * fresh context. */
static void check_binary_against_ref(nat_ctx *outer, int op, nat_tensor *a, nat_tensor *b, nat_rng *rng,
                                     const char *what)
{
    shape_t sa = {a->ndim, {0}}, sb = {b->ndim, {0}};
    memcpy(sa.d, a->shape, sizeof a->shape);
    memcpy(sb.d, b->shape, sizeof b->shape);
    shape_t so = bshape(sa, sb);
    int64_t n = numel(so), na = numel(sa), nb = numel(sb);
    float *av = malloc((size_t)na * sizeof *av), *bv = malloc((size_t)nb * sizeof *bv);
    float *gv = malloc((size_t)n * sizeof *gv);
    double *y = malloc((size_t)n * sizeof *y), *ga = malloc((size_t)na * sizeof *ga),
           *gb = malloc((size_t)nb * sizeof *gb);
    TH_OK(nat_tensor_copy_to(a, av, na));
    TH_OK(nat_tensor_copy_to(b, bv, nb));
    nat_rng_fill_normal(rng, gv, (size_t)n, 0.0f, 1.0f);
    ref_binary(op, sa, av, sb, bv, gv, y, ga, gb);

    nat_ctx *ctx = outer;
    nat_tensor *out, *g;
    if (!outer)
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(run_op(ctx, op, a, b, &out));
    ck_assert_int_eq(out->ndim, so.nd);
    for (int d = 0; d < so.nd; d++)
        ck_assert_int_eq(out->shape[d], so.d[d]);
    char msg[160];
    snprintf(msg, sizeof msg, "%s forward", what);
    th_assert_close(nat_tensor_f32(out), y, n, 1e-6, msg);
    if (a->requires_grad || b->requires_grad) {
        TH_OK(nat_ctx_empty(ctx, &g, NAT_F32, out->ndim, out->shape));
        TH_OK(nat_tensor_copy_from(g, gv, n));
        if (a->requires_grad)
            nat_zero_grad(a);
        if (b->requires_grad)
            nat_zero_grad(b);
        TH_OK(nat_backward_from(ctx, out, g));
        if (a->requires_grad) {
            snprintf(msg, sizeof msg, "%s grad a", what);
            th_assert_close(nat_tensor_f32(a->grad), ga, na, 1e-5, msg);
        }
        if (b->requires_grad) {
            snprintf(msg, sizeof msg, "%s grad b", what);
            th_assert_close(nat_tensor_f32(b->grad), gb, nb, 1e-5, msg);
        }
    }
    if (!outer)
        nat_ctx_free(ctx);
    free(av), free(bv), free(gv), free(y), free(ga), free(gb);
}

START_TEST(broadcast_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 11);
    for (size_t c = 0; c < sizeof bcases / sizeof *bcases; c++)
        for (int op = ADD; op <= MUL; op++) {
            nat_tensor *a = th_randn(&rng, bcases[c].a.nd, bcases[c].a.d, 1, true);
            nat_tensor *b = th_randn(&rng, bcases[c].b.nd, bcases[c].b.d, 1, true);
            char what[64];
            snprintf(what, sizeof what, "%s case %zu", op_names[op], c);
            check_binary_against_ref(NULL, op, a, b, &rng, what);
            /* Swapped operands: broadcasting the other way round. */
            snprintf(what, sizeof what, "%s case %zu swapped", op_names[op], c);
            check_binary_against_ref(NULL, op, b, a, &rng, what);
            nat_tensor_free(a);
            nat_tensor_free(b);
        }
}
END_TEST

/* Large enough to take the OpenMP paths of the kernel and of the reduction. */
START_TEST(broadcast_large_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 12);
    const int64_t sa[3] = {24, 1, 301}, sb[3] = {1, 40, 301}, sc[1] = {301};
    nat_tensor *a = th_randn(&rng, 3, sa, 1, true), *b = th_randn(&rng, 3, sb, 1, true);
    nat_tensor *c = th_randn(&rng, 1, sc, 1, true);
    for (int op = ADD; op <= MUL; op++) {
        check_binary_against_ref(NULL, op, a, b, &rng, "large [24,1,301] x [1,40,301]");
        check_binary_against_ref(NULL, op, b, c, &rng, "large [1,40,301] x [301]");
    }
    nat_tensor_free(a);
    nat_tensor_free(b);
    nat_tensor_free(c);
}
END_TEST

static nat_status f_binary(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return run_op(ctx, *(int *)u, in[0], in[1], out);
}

START_TEST(broadcast_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 13);
    for (size_t c = 0; c < sizeof bcases / sizeof *bcases; c++) {
        if (numel(bcases[c].a) + numel(bcases[c].b) > 120)
            continue;
        for (int op = ADD; op <= MUL; op++) {
            nat_tensor *in[2] = {th_randn(&rng, bcases[c].a.nd, bcases[c].a.d, 1, true),
                                 th_randn(&rng, bcases[c].b.nd, bcases[c].b.d, 1, true)};
            char what[64];
            snprintf(what, sizeof what, "%s case %zu", op_names[op], c);
            th_gradcheck(what, f_binary, &op, 2, in, 1e-2, 2e-3);
            nat_tensor *sw[2] = {in[1], in[0]};
            th_gradcheck(what, f_binary, &op, 2, sw, 1e-2, 2e-3);
            nat_tensor_free(in[0]);
            nat_tensor_free(in[1]);
        }
    }
}
END_TEST

/* x ⊙ x and x + x: the same tensor as both operands gets both contributions. */
START_TEST(same_tensor_both_operands)
{
    nat_rng rng;
    nat_rng_seed(&rng, 14);
    int64_t s[2] = {3, 5};
    nat_tensor *x = th_randn(&rng, 2, s, 1, true);
    for (int op = ADD; op <= MUL; op++) {
        nat_tensor *in[2] = {x, x};
        th_gradcheck(op_names[op], f_binary, &op, 2, in, 1e-2, 2e-3);
    }
    nat_tensor_free(x);
}
END_TEST

/* ---- strided inputs ---- */

/* A test-only op: a strided view of a persistent base tensor, recorded so that its gradient flows back
 * to the base (what a permute/slice op does), which lets th_gradcheck perturb the base. */
static nat_status view_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gb, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gb));
    if (!gb)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    const nat_tensor *v = node->out, *base = node->in[0];
    int64_t n = nat_tensor_numel(v);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, off = v->offset - base->offset;
        for (int d = v->ndim - 1; d >= 0; d--) {
            off += (rem % v->shape[d]) * v->stride[d];
            rem /= v->shape[d];
        }
        nat_tensor_f32(gb)[off] += nat_tensor_f32(gd)[i];
    }
    return NAT_OK;
}
static const nat_op_def test_view_op = {"test_view", view_backward};

typedef struct view_spec {
    int nd;
    int64_t shape[NAT_MAX_DIMS], stride[NAT_MAX_DIMS], offset;
} view_spec;

static nat_status make_view(nat_ctx *ctx, nat_tensor *base, const view_spec *v, nat_tensor **out)
{
    NAT_TRY(nat_ctx_view(ctx, out, base, v->nd, v->shape, v->stride, base->offset + v->offset));
    nat_node *node;
    return nat_ctx_record(ctx, &test_view_op, *out, 1, &base, &node);
}

/* The views: a permutation of a [4, 3, 2] base to [2, 3, 4]; every other column of rows 1..3 of a
 * [4, 9] base ([3, 4], inner stride 2); a transpose of a [4, 5] base. */
static const view_spec views[] = {
    {3, {2, 3, 4}, {1, 2, 6}, 0},
    {2, {3, 4}, {9, 2}, 10},
    {2, {5, 4}, {1, 5}, 0},
};
static const shape_t view_bases[] = {{3, {4, 3, 2}}, {2, {4, 9}}, {2, {4, 5}}};
/* The other operand for each view, broadcast against it. */
static const shape_t view_others[] = {{2, {3, 1}}, {1, {4}}, {2, {5, 4}}};

typedef struct strided_arg {
    int op;
    const view_spec *v;
    bool view_second; /* the view is operand b instead of a */
} strided_arg;

static nat_status f_strided(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const strided_arg *s = u;
    nat_tensor *v;
    NAT_TRY(make_view(ctx, in[0], s->v, &v));
    return s->view_second ? run_op(ctx, s->op, in[1], v, out) : run_op(ctx, s->op, v, in[1], out);
}

START_TEST(strided_views)
{
    nat_rng rng;
    nat_rng_seed(&rng, 15);
    for (size_t c = 0; c < sizeof views / sizeof *views; c++)
        for (int op = ADD; op <= MUL; op++) {
            nat_tensor *base = th_randn(&rng, view_bases[c].nd, view_bases[c].d, 1, true);
            nat_tensor *other = th_randn(&rng, view_others[c].nd, view_others[c].d, 1, true);
            /* Forward and backward of the view against the reference on its logical values. */
            nat_ctx *ctx;
            nat_tensor *v;
            TH_OK(nat_ctx_new(&ctx, NAT_CPU));
            TH_OK(nat_ctx_view(ctx, &v, base, views[c].nd, views[c].shape, views[c].stride, views[c].offset));
            ck_assert(!nat_tensor_is_contiguous(v));
            v->requires_grad = true;
            char what[64];
            snprintf(what, sizeof what, "%s strided view %zu", op_names[op], c);
            check_binary_against_ref(ctx, op, v, other, &rng, what);
            check_binary_against_ref(ctx, op, other, v, &rng, what);
            nat_ctx_free(ctx);
            /* And the gradient reaching the base through the view, numerically. */
            for (int second = 0; second <= 1; second++) {
                strided_arg arg = {op, &views[c], second};
                nat_tensor *in[2] = {base, other};
                th_gradcheck(what, f_strided, &arg, 2, in, 1e-2, 2e-3);
            }
            nat_tensor_free(base);
            nat_tensor_free(other);
        }
}
END_TEST

/* ---- scale ---- */

static nat_status f_scale(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_scale(ctx, in[0], *(float *)u, out);
}

START_TEST(scale_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 16);
    const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 7}, {1, 17, 33}, {40, 30, 31}};
    float s = -1.75f;
    for (size_t c = 0; c < 4; c++) {
        nat_tensor *x = th_randn(&rng, 3, shapes[c], 1, true);
        int64_t n = nat_tensor_numel(x);
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_scale(ctx, x, s, &y));
        double *want = malloc((size_t)n * sizeof *want);
        for (int64_t i = 0; i < n; i++)
            want[i] = (double)nat_tensor_f32(x)[i] * s;
        th_assert_close(nat_tensor_f32(y), want, n, 1e-6, "scale");
        free(want);
        /* Through a transposed view of the first two dims. */
        nat_tensor *v;
        int64_t vs[3] = {shapes[c][1], shapes[c][0], shapes[c][2]};
        int64_t st[3] = {x->stride[1], x->stride[0], x->stride[2]};
        TH_OK(nat_ctx_view(ctx, &v, x, 3, vs, st, 0));
        TH_OK(nat_scale(ctx, v, s, &y));
        for (int64_t i = 0; i < shapes[c][1]; i++)
            for (int64_t j = 0; j < shapes[c][0]; j++)
                for (int64_t k = 0; k < shapes[c][2]; k++)
                    ck_assert_float_eq(nat_tensor_f32(y)[(i * shapes[c][0] + j) * shapes[c][2] + k],
                                       nat_tensor_f32(x)[(j * shapes[c][1] + i) * shapes[c][2] + k] * s);
        nat_ctx_free(ctx);
        if (n < 300)
            th_gradcheck("scale", f_scale, &s, 1, &x, 1e-2, 2e-3);
        nat_tensor_free(x);
    }
}
END_TEST

/* ---- bias_add ---- */

typedef struct bias_case {
    shape_t x;
    int axis;
} bias_case;

static const bias_case bias_cases[] = {
    {{4, {2, 3, 4, 5}}, 1},  /* NCHW */
    {{3, {2, 5, 7}}, -1},    /* channels-last */
    {{4, {2, 3, 3, 17}}, 3}, /* NHWC, positive axis */
    {{2, {3, 4}}, 0},        {{2, {4, 1}}, -1}, {{1, {33}}, 0}, {{4, {1, 2, 3, 4}}, -3},
    {{4, {4, 32, 16, 20}}, 1},  /* large: parallel paths */
    {{3, {16, 40, 64}}, -1},    /* large channels-last */
};

static nat_status f_bias(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_bias_add(ctx, in[0], in[1], *(int *)u, out);
}

START_TEST(bias_add_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 17);
    for (size_t c = 0; c < sizeof bias_cases / sizeof *bias_cases; c++) {
        const bias_case *bc = &bias_cases[c];
        int ax = bc->axis < 0 ? bc->axis + bc->x.nd : bc->axis;
        int64_t C = bc->x.d[ax], inner = 1;
        for (int d = ax + 1; d < bc->x.nd; d++)
            inner *= bc->x.d[d];
        nat_tensor *x = th_randn(&rng, bc->x.nd, bc->x.d, 1, true), *b = th_randn(&rng, 1, &C, 1, true);
        int64_t n = nat_tensor_numel(x);
        float *g = malloc((size_t)n * sizeof *g);
        nat_rng_fill_normal(&rng, g, (size_t)n, 0, 1);
        double *want = malloc((size_t)n * sizeof *want), *gb = calloc((size_t)C, sizeof *gb);
        for (int64_t i = 0; i < n; i++) {
            int64_t ch = (i / inner) % C;
            want[i] = (double)nat_tensor_f32(x)[i] + nat_tensor_f32(b)[ch];
            gb[ch] += g[i];
        }
        nat_ctx *ctx;
        nat_tensor *y, *gt;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_bias_add(ctx, x, b, bc->axis, &y));
        char what[64];
        snprintf(what, sizeof what, "bias_add case %zu", c);
        th_assert_close(nat_tensor_f32(y), want, n, 1e-6, what);
        TH_OK(nat_ctx_empty(ctx, &gt, NAT_F32, y->ndim, y->shape));
        TH_OK(nat_tensor_copy_from(gt, g, n));
        nat_zero_grad(x);
        nat_zero_grad(b);
        TH_OK(nat_backward_from(ctx, y, gt));
        th_assert_close_f(nat_tensor_f32(x->grad), g, n, 0, what);
        th_assert_close(nat_tensor_f32(b->grad), gb, C, 1e-5, what);
        nat_ctx_free(ctx);
        if (n <= 150) {
            nat_tensor *in[2] = {x, b};
            int axis = bc->axis;
            th_gradcheck(what, f_bias, &axis, 2, in, 1e-2, 2e-3);
        }
        free(g), free(want), free(gb);
        nat_tensor_free(x);
        nat_tensor_free(b);
    }
}
END_TEST

/* ---- GELU ---- */

static nat_status f_gelu(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_gelu(ctx, in[0], out);
}

START_TEST(gelu_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 18);
    const int64_t sizes[] = {1, 7, 33, 50000};
    for (size_t c = 0; c < 4; c++) {
        nat_tensor *x = th_randn(&rng, 1, &sizes[c], 3, true);
        int64_t n = sizes[c];
        float *X = nat_tensor_f32(x);
        if (n >= 7) { /* the tails and zero */
            X[0] = -8, X[1] = 8, X[2] = 0, X[3] = -3;
        }
        double *want = malloc((size_t)n * sizeof *want), *dwant = malloc((size_t)n * sizeof *dwant);
        for (int64_t i = 0; i < n; i++) {
            double v = X[i], cdf = 0.5 * (1 + erf(v / sqrt(2.0)));
            want[i] = v * cdf;
            dwant[i] = cdf + v * exp(-0.5 * v * v) / sqrt(2 * M_PI_REF);
        }
        nat_ctx *ctx;
        nat_tensor *y, *loss;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_gelu(ctx, x, &y));
        th_assert_close(nat_tensor_f32(y), want, n, 2e-6, "gelu forward");
        TH_OK(nat_sum(ctx, y, &loss));
        nat_zero_grad(x);
        TH_OK(nat_backward(ctx, loss));
        th_assert_close(nat_tensor_f32(x->grad), dwant, n, 2e-6, "gelu derivative");
        nat_ctx_free(ctx);
        if (n < 100)
            th_gradcheck("gelu", f_gelu, NULL, 1, &x, 1e-2, 2e-3);
        free(want), free(dwant);
        nat_tensor_free(x);
    }
}
END_TEST

/* GELU's exp and erfc are our own vectorisable approximations: check them on a fine grid over [-12, 12].
 * Relative error in the far negative tail too, where 1 + erf(x/√2) in float would cancel to nothing. */
START_TEST(gelu_accuracy_grid)
{
    int64_t n = 24001;
    nat_tensor *x;
    TH_OK(nat_tensor_new(&x, NAT_F32, NAT_CPU, 1, &n));
    x->requires_grad = true;
    float *X = nat_tensor_f32(x);
    for (int64_t i = 0; i < n; i++)
        X[i] = -12.0f + 1e-3f * (float)i;
    nat_ctx *ctx;
    nat_tensor *y, *loss;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_gelu(ctx, x, &y));
    TH_OK(nat_sum(ctx, y, &loss));
    TH_OK(nat_backward(ctx, loss));
    const float *Y = nat_tensor_f32(y), *D = nat_tensor_f32(x->grad);
    for (int64_t i = 0; i < n; i++) {
        double v = X[i], cdf = 0.5 * erfc(-v / sqrt(2.0)), want = v * cdf;
        double dwant = cdf + v * exp(-0.5 * v * v) / sqrt(2 * M_PI_REF);
        ck_assert_msg(fabs(Y[i] - want) <= 5e-5 * fabs(want) + 1e-37 && fabs(Y[i] - want) <= 1e-6 * fmax(1, fabs(want)),
                      "gelu(%.4f) = %.9g, want %.9g", v, (double)Y[i], want);
        ck_assert_msg(fabs(D[i] - dwant) <= 1e-6, "gelu'(%.4f) = %.9g, want %.9g", v, (double)D[i], dwant);
    }
    /* A NaN stays NaN (not hidden by the clamping inside exp); +inf stays +inf. */
    int64_t two = 2;
    nat_tensor *special = th_from((const float[]){NAN, INFINITY}, 1, &two, false);
    TH_OK(nat_gelu(ctx, special, &y));
    ck_assert(isnan(nat_tensor_f32(y)[0]));
    ck_assert(isinf(nat_tensor_f32(y)[1]) && nat_tensor_f32(y)[1] > 0);
    nat_ctx_free(ctx);
    nat_tensor_free(special);
    nat_tensor_free(x);
}
END_TEST

/* ---- accumulation, no-grad, empty tensors ---- */

START_TEST(gradients_accumulate)
{
    nat_rng rng;
    nat_rng_seed(&rng, 19);
    int64_t sa[2] = {3, 4}, sb[1] = {4};
    nat_tensor *a = th_randn(&rng, 2, sa, 1, true), *b = th_randn(&rng, 1, sb, 1, true);
    float once_a[12], once_b[4];
    for (int rep = 0; rep < 2; rep++) {
        nat_ctx *ctx;
        nat_tensor *y, *loss;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_mul(ctx, a, b, &y));
        TH_OK(nat_sum(ctx, y, &loss));
        TH_OK(nat_backward(ctx, loss));
        nat_ctx_free(ctx);
        if (rep == 0) {
            memcpy(once_a, nat_tensor_f32(a->grad), sizeof once_a);
            memcpy(once_b, nat_tensor_f32(b->grad), sizeof once_b);
        }
    }
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq_tol(nat_tensor_f32(a->grad)[i], 2 * once_a[i], 1e-6);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(nat_tensor_f32(b->grad)[i], 2 * once_b[i], 1e-5);
    nat_tensor_free(a);
    nat_tensor_free(b);
}
END_TEST

START_TEST(no_grad_records_nothing)
{
    nat_rng rng;
    nat_rng_seed(&rng, 20);
    int64_t s[2] = {2, 3};
    nat_tensor *a = th_randn(&rng, 2, s, 1, true), *b = th_randn(&rng, 1, s + 1, 1, true);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_add(ctx, a, b, &y));
    TH_OK(nat_bias_add(ctx, a, b, -1, &y));
    TH_OK(nat_gelu(ctx, y, &y));
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    ck_assert(!y->requires_grad);
    nat_ctx_free(ctx);
    nat_tensor_free(a);
    nat_tensor_free(b);
}
END_TEST

START_TEST(empty_tensors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 21);
    int64_t sa[2] = {0, 3}, sb[1] = {3};
    nat_tensor *a = th_randn(&rng, 2, sa, 1, false), *b = th_randn(&rng, 1, sb, 1, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_add(ctx, a, b, &y));
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 0);
    ck_assert_int_eq(y->shape[1], 3);
    TH_OK(nat_gelu(ctx, a, &y));
    ck_assert_int_eq(nat_tensor_numel(y), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(a);
    nat_tensor_free(b);
}
END_TEST

/* ---- errors ---- */


START_TEST(shape_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 22);
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s234[3] = {2, 3, 4}, s33[2] = {3, 3};
    nat_tensor *a = th_randn(&rng, 2, s23, 1, false), *b = th_randn(&rng, 1, s4, 1, false),
               *c = th_randn(&rng, 3, s234, 1, false), *d = th_randn(&rng, 2, s33, 1, false);
    nat_tensor *li;
    TH_OK(nat_tensor_new(&li, NAT_I32, NAT_CPU, 1, s4));
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    th_expect_error(nat_add(ctx, a, b, &y), NAT_ERR_SHAPE, "[2, 3]", "[4]");
    th_expect_error(nat_sub(ctx, b, a, &y), NAT_ERR_SHAPE, "[2, 3]", "[4]");
    th_expect_error(nat_mul(ctx, c, d, &y), NAT_ERR_SHAPE, "[2, 3, 4]", "[3, 3]");
    th_expect_error(nat_bias_add(ctx, c, b, 1, &y), NAT_ERR_SHAPE, "[2, 3, 4]", "[4]");
    th_expect_error(nat_bias_add(ctx, c, d, -1, &y), NAT_ERR_SHAPE, "[2, 3, 4]", "[3, 3]");
    th_expect_error(nat_bias_add(ctx, c, b, 3, &y), NAT_ERR_INVALID_ARG, "axis 3", "[2, 3, 4]");
    th_expect_error(nat_bias_add(ctx, c, b, -4, &y), NAT_ERR_INVALID_ARG, "axis -4", "[2, 3, 4]");
    th_expect_error(nat_add(ctx, a, NULL, &y), NAT_ERR_INVALID_ARG, "add", "NULL");
    th_expect_error(nat_mul(ctx, li, b, &y), NAT_ERR_INVALID_ARG, "i32", "f32");
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(a), nat_tensor_free(b), nat_tensor_free(c), nat_tensor_free(d), nat_tensor_free(li);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("elementwise");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"broadcast_reference", broadcast_reference},
        {"broadcast_large_reference", broadcast_large_reference},
        {"broadcast_gradcheck", broadcast_gradcheck},
        {"same_tensor_both_operands", same_tensor_both_operands},
        {"strided_views", strided_views},
        {"scale_reference_and_grad", scale_reference_and_grad},
        {"bias_add_reference_and_grad", bias_add_reference_and_grad},
        {"gelu_reference_and_grad", gelu_reference_and_grad},
        {"gelu_accuracy_grid", gelu_accuracy_grid},
        {"gradients_accumulate", gradients_accumulate},
        {"no_grad_records_nothing", no_grad_records_nothing},
        {"empty_tensors", empty_tensors},
        {"shape_errors", shape_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
