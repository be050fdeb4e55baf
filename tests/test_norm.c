/* tests/test_norm.c — LayerNorm and softmax over the last dim: forward and backward against plain double
 * loops (rows of 1, 7, 33 and 64 elements; large-mean rows for LayerNorm's stability; huge and -inf logits
 * for softmax's), finite-difference checks of x, weight and bias, strided inputs, and argument errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

/* ---- LayerNorm reference (double) ---- */

/* y, and for gradient g: dx, dw, db. w, b may be NULL (then dw/db are not computed). */
static void ref_layernorm(const float *x, const float *w, const float *b, const float *g, int64_t rows, int64_t C,
                          double eps, double *y, double *dx, double *dw, double *db)
{
    if (dw)
        memset(dw, 0, (size_t)C * sizeof *dw);
    if (db)
        memset(db, 0, (size_t)C * sizeof *db);
    double *xh = malloc((size_t)C * sizeof *xh);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C, *gr = g + r * C;
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++)
            m += xr[c];
        m /= (double)C;
        for (int64_t c = 0; c < C; c++)
            v += (xr[c] - m) * (xr[c] - m);
        v /= (double)C;
        double rs = 1.0 / sqrt(v + eps), s1 = 0, s2 = 0;
        for (int64_t c = 0; c < C; c++) {
            xh[c] = (xr[c] - m) * rs;
            y[r * C + c] = xh[c] * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
            double gy = (double)gr[c] * (w ? w[c] : 1.0);
            s1 += gy;
            s2 += gy * xh[c];
            if (dw)
                dw[c] += gr[c] * xh[c];
            if (db)
                db[c] += gr[c];
        }
        for (int64_t c = 0; c < C; c++) {
            double gy = (double)gr[c] * (w ? w[c] : 1.0);
            dx[r * C + c] = rs * (gy - s1 / (double)C - xh[c] * s2 / (double)C);
        }
    }
    free(xh);
}

typedef struct ln_case {
    int nd;
    int64_t shape[4];
} ln_case;

/* Rows of length 1, 7, 33 and 64, and one large enough for the OpenMP paths. */
static const ln_case ln_cases[] = {
    {2, {3, 1}}, {3, {2, 5, 7}}, {2, {4, 33}}, {3, {2, 3, 64}}, {1, {7}}, {3, {64, 40, 96}},
};

/* Forward and backward of layernorm(x, w, b) in a fresh context against ref_layernorm. x's values are
 * mean + std·N(0,1). */
static void check_layernorm(nat_rng *rng, const ln_case *lc, bool weight, bool bias, float mean, float std,
                            double tol_fwd, double tol_bwd, const char *what)
{
    int64_t C = lc->shape[lc->nd - 1];
    nat_tensor *x = th_randn(rng, lc->nd, lc->shape, std, true);
    int64_t n = nat_tensor_numel(x), rows = n / C;
    for (int64_t i = 0; i < n; i++)
        nat_tensor_f32(x)[i] += mean;
    nat_tensor *w = weight ? th_randn(rng, 1, &C, 1, true) : NULL, *b = bias ? th_randn(rng, 1, &C, 1, true) : NULL;
    float *g = malloc((size_t)n * sizeof *g);
    nat_rng_fill_normal(rng, g, (size_t)n, 0, 1);
    double *y = malloc((size_t)n * sizeof *y), *dx = malloc((size_t)n * sizeof *dx),
           *dw = malloc((size_t)C * sizeof *dw), *db = malloc((size_t)C * sizeof *db);
    const float eps = 1e-5f;
    ref_layernorm(nat_tensor_f32(x), w ? nat_tensor_f32(w) : NULL, b ? nat_tensor_f32(b) : NULL, g, rows, C, eps, y,
                  dx, w ? dw : NULL, b ? db : NULL);
    nat_ctx *ctx;
    nat_tensor *out, *gt;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_layernorm(ctx, x, w, b, eps, &out));
    ck_assert(nat_tensor_same_shape(out, x));
    char msg[160];
    snprintf(msg, sizeof msg, "%s forward", what);
    th_assert_close(nat_tensor_f32(out), y, n, tol_fwd, msg);
    TH_OK(nat_ctx_empty(ctx, &gt, NAT_F32, out->ndim, out->shape));
    TH_OK(nat_tensor_copy_from(gt, g, n));
    TH_OK(nat_backward_from(ctx, out, gt));
    snprintf(msg, sizeof msg, "%s dx", what);
    th_assert_close(nat_tensor_f32(x->grad), dx, n, tol_bwd, msg);
    if (w) {
        snprintf(msg, sizeof msg, "%s dweight", what);
        th_assert_close(nat_tensor_f32(w->grad), dw, C, tol_bwd, msg);
    }
    if (b) {
        snprintf(msg, sizeof msg, "%s dbias", what);
        th_assert_close(nat_tensor_f32(b->grad), db, C, tol_bwd, msg);
    }
    nat_ctx_free(ctx);
    free(g), free(y), free(dx), free(dw), free(db);
    nat_tensor_free(x), nat_tensor_free(w), nat_tensor_free(b);
}

START_TEST(layernorm_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 31);
    for (size_t c = 0; c < sizeof ln_cases / sizeof *ln_cases; c++)
        for (int affine = 0; affine < 4; affine++) {
            char what[96];
            snprintf(what, sizeof what, "layernorm case %zu (C = %lld) weight %d bias %d", c,
                     (long long)ln_cases[c].shape[ln_cases[c].nd - 1], affine & 1, affine >> 1);
            check_layernorm(&rng, &ln_cases[c], affine & 1, affine >> 1, 0.0f, 1.0f, 1e-6, 1e-5, what);
        }
}
END_TEST

/* Rows with mean 1000 and std 1 (and std 0.05): a one-pass E[x²] - E[x]² in float would lose every digit
 * of the variance, and a mean rounded to f32 (error up to 3e-5) would cost the gradient of x three to four
 * digits; forward and backward must match the double reference as tightly as zero-mean rows do. */
START_TEST(layernorm_large_mean)
{
    nat_rng rng;
    nat_rng_seed(&rng, 32);
    for (size_t c = 0; c < sizeof ln_cases / sizeof *ln_cases; c++) {
        char what[96];
        snprintf(what, sizeof what, "layernorm large mean, case %zu (C = %lld)", c,
                 (long long)ln_cases[c].shape[ln_cases[c].nd - 1]);
        check_layernorm(&rng, &ln_cases[c], true, true, 1000.0f, 1.0f, 1e-6, 1e-5, what);
        /* Smaller spread still: std 0.05 around 1000 (about 800 float ulps). */
        check_layernorm(&rng, &ln_cases[c], false, false, 1000.0f, 0.05f, 1e-6, 1e-5, what);
    }
}
END_TEST

typedef struct ln_arg {
    float eps;
} ln_arg;

static nat_status f_layernorm(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_layernorm(ctx, in[0], in[1], in[2], ((ln_arg *)u)->eps, out);
}

START_TEST(layernorm_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 33);
    const int64_t shapes[][2] = {{3, 1}, {2, 7}, {2, 33}, {2, 64}};
    ln_arg arg = {1e-5f};
    for (size_t c = 0; c < 4; c++) {
        int64_t C = shapes[c][1];
        nat_tensor *x = th_randn(&rng, 2, shapes[c], 1, true), *w = th_randn(&rng, 1, &C, 1, true),
                   *b = th_randn(&rng, 1, &C, 1, true);
        char what[64];
        snprintf(what, sizeof what, "layernorm C = %lld", (long long)C);
        nat_tensor *all[3] = {x, w, b}, *none[3] = {x, NULL, NULL}, *wonly[3] = {x, w, NULL}, *bonly[3] = {x, NULL, b};
        th_gradcheck(what, f_layernorm, &arg, 3, all, 1e-2, 2e-3);
        th_gradcheck(what, f_layernorm, &arg, 3, none, 1e-2, 2e-3);
        th_gradcheck(what, f_layernorm, &arg, 3, wonly, 1e-2, 2e-3);
        th_gradcheck(what, f_layernorm, &arg, 3, bonly, 1e-2, 2e-3);
        /* Only the parameters require a gradient (x is an input image, say). */
        x->requires_grad = false;
        th_gradcheck(what, f_layernorm, &arg, 3, all, 1e-2, 2e-3);
        nat_tensor_free(x), nat_tensor_free(w), nat_tensor_free(b);
    }
}
END_TEST

/* The op on a strided view must give the values and gradient of the op on its dense copy. */
typedef nat_status (*unary_fn)(nat_ctx *ctx, nat_tensor *x, nat_tensor **out);

static nat_status ln_plain(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    return nat_layernorm(ctx, x, NULL, NULL, 1e-5f, out);
}

static void check_strided(nat_rng *rng, unary_fn f, const char *what)
{
    /* base [7, 5]; the view is its transpose [5, 7] with strides (1, 5). */
    int64_t bs[2] = {7, 5}, vs[2] = {5, 7}, st[2] = {1, 5};
    nat_tensor *base = th_randn(rng, 2, bs, 1, false);
    nat_tensor *dense;
    TH_OK(nat_tensor_new(&dense, NAT_F32, NAT_CPU, 2, vs));
    dense->requires_grad = true;
    float g[35];
    nat_rng_fill_normal(rng, g, 35, 0, 1);
    nat_ctx *ctx;
    nat_tensor *v, *y1, *y2, *gt;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_view(ctx, &v, base, 2, vs, st, 0));
    v->requires_grad = true;
    float vals[35];
    TH_OK(nat_tensor_copy_to(v, vals, 35));
    TH_OK(nat_tensor_copy_from(dense, vals, 35));
    /* One forward and backward at a time: a backward spends the whole tape. */
    TH_OK(nat_ctx_empty(ctx, &gt, NAT_F32, 2, vs));
    TH_OK(nat_tensor_copy_from(gt, g, 35));
    TH_OK(f(ctx, v, &y1));
    TH_OK(nat_backward_from(ctx, y1, gt));
    TH_OK(f(ctx, dense, &y2));
    TH_OK(nat_backward_from(ctx, y2, gt));
    th_assert_close_f(nat_tensor_f32(y1), nat_tensor_f32(y2), 35, 0, what);
    th_assert_close_f(nat_tensor_f32(v->grad), nat_tensor_f32(dense->grad), 35, 0, what);
    nat_ctx_free(ctx);
    nat_tensor_free(base);
    nat_tensor_free(dense);
}

START_TEST(strided_inputs)
{
    nat_rng rng;
    nat_rng_seed(&rng, 34);
    check_strided(&rng, ln_plain, "layernorm of a transposed view");
    check_strided(&rng, nat_softmax, "softmax of a transposed view");
}
END_TEST

/* ---- softmax ---- */

static void ref_softmax(const float *x, const float *g, int64_t rows, int64_t C, double *y, double *dx)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        double mx = -INFINITY, s = 0, dot = 0;
        for (int64_t c = 0; c < C; c++)
            mx = fmax(mx, xr[c]);
        for (int64_t c = 0; c < C; c++)
            s += (mx == -INFINITY) ? 0 : exp(xr[c] - mx);
        for (int64_t c = 0; c < C; c++) {
            y[r * C + c] = s > 0 ? exp(xr[c] - mx) / s : 0;
            dot += (double)g[r * C + c] * y[r * C + c];
        }
        for (int64_t c = 0; c < C; c++)
            dx[r * C + c] = y[r * C + c] * (g[r * C + c] - dot);
    }
}

/* x = offset + scale·N(0,1); rows given a few -inf entries when `masked`. */
static void check_softmax(nat_rng *rng, int nd, const int64_t *shape, float offset, float scale, bool masked,
                          const char *what)
{
    nat_tensor *x = th_randn(rng, nd, shape, scale, true);
    int64_t n = nat_tensor_numel(x), C = shape[nd - 1], rows = n / C;
    float *X = nat_tensor_f32(x);
    for (int64_t i = 0; i < n; i++)
        X[i] += offset;
    if (masked) {
        for (int64_t r = 0; r < rows; r++)
            X[r * C + (r * 5) % C] = -INFINITY; /* one masked slot per row */
        for (int64_t c = 0; c < C; c++)
            X[c] = -INFINITY; /* row 0 fully masked */
    }
    float *g = malloc((size_t)n * sizeof *g);
    nat_rng_fill_normal(rng, g, (size_t)n, 0, 1);
    double *y = malloc((size_t)n * sizeof *y), *dx = malloc((size_t)n * sizeof *dx);
    ref_softmax(X, g, rows, C, y, dx);
    nat_ctx *ctx;
    nat_tensor *out, *gt;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_softmax(ctx, x, &out));
    char msg[160];
    snprintf(msg, sizeof msg, "%s forward", what);
    th_assert_close(nat_tensor_f32(out), y, n, 1e-6, msg);
    TH_OK(nat_ctx_empty(ctx, &gt, NAT_F32, out->ndim, out->shape));
    TH_OK(nat_tensor_copy_from(gt, g, n));
    TH_OK(nat_backward_from(ctx, out, gt));
    snprintf(msg, sizeof msg, "%s backward", what);
    th_assert_close(nat_tensor_f32(x->grad), dx, n, 1e-5, msg);
    nat_ctx_free(ctx);
    free(g), free(y), free(dx);
    nat_tensor_free(x);
}

START_TEST(softmax_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 35);
    static const struct {
        int nd;
        int64_t s[3];
    } cases[] = {{2, {1, 1}}, {2, {3, 7}}, {2, {2, 17}}, {1, {33}}, {3, {2, 3, 64}}, {2, {300, 200}}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char what[96];
        snprintf(what, sizeof what, "softmax case %zu", c);
        check_softmax(&rng, cases[c].nd, cases[c].s, 0, 1, false, what);
        /* Logits far outside exp's range: only the max-subtracted form survives. */
        snprintf(what, sizeof what, "softmax case %zu, offset 1000 scale 50", c);
        check_softmax(&rng, cases[c].nd, cases[c].s, 1000, 50, false, what);
        snprintf(what, sizeof what, "softmax case %zu, offset -1000", c);
        check_softmax(&rng, cases[c].nd, cases[c].s, -1000, 3, false, what);
        if (cases[c].s[cases[c].nd - 1] > 1) {
            snprintf(what, sizeof what, "softmax case %zu with -inf entries", c);
            check_softmax(&rng, cases[c].nd, cases[c].s, 0, 1, true, what);
        }
    }
}
END_TEST

static nat_status f_softmax(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_softmax(ctx, in[0], out);
}

START_TEST(softmax_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 36);
    const int64_t shapes[][2] = {{3, 1}, {2, 7}, {2, 33}, {1, 64}};
    for (size_t c = 0; c < 4; c++) {
        nat_tensor *x = th_randn(&rng, 2, shapes[c], 2, true);
        th_gradcheck("softmax", f_softmax, NULL, 1, &x, 1e-2, 2e-3);
        nat_tensor_free(x);
    }
}
END_TEST

/* ---- errors ---- */


START_TEST(argument_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 37);
    int64_t sx[2] = {2, 7}, s5[1] = {5}, s17[2] = {1, 7}, s0[1] = {0};
    nat_tensor *x = th_randn(&rng, 2, sx, 1, false), *w5 = th_randn(&rng, 1, s5, 1, false),
               *w17 = th_randn(&rng, 2, s17, 1, false), *e = th_randn(&rng, 1, s0, 1, false);
    nat_tensor *scalar;
    TH_OK(nat_tensor_new(&scalar, NAT_F32, NAT_CPU, 0, s0));
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    th_expect_error(nat_layernorm(ctx, x, w5, NULL, 1e-5f, &y), NAT_ERR_SHAPE, "[5]", "[2, 7]");
    th_expect_error(nat_layernorm(ctx, x, NULL, w5, 1e-5f, &y), NAT_ERR_SHAPE, "bias [5]", "[2, 7]");
    th_expect_error(nat_layernorm(ctx, x, w17, NULL, 1e-5f, &y), NAT_ERR_SHAPE, "[1, 7]", "[2, 7]");
    th_expect_error(nat_layernorm(ctx, x, NULL, NULL, -1.0f, &y), NAT_ERR_INVALID_ARG, "eps", "-1");
    th_expect_error(nat_layernorm(ctx, x, NULL, NULL, NAN, &y), NAT_ERR_INVALID_ARG, "eps", NULL);
    th_expect_error(nat_layernorm(ctx, e, NULL, NULL, 1e-5f, &y), NAT_ERR_SHAPE, "[0]", NULL);
    th_expect_error(nat_layernorm(ctx, scalar, NULL, NULL, 1e-5f, &y), NAT_ERR_SHAPE, "layernorm", NULL);
    th_expect_error(nat_softmax(ctx, scalar, &y), NAT_ERR_SHAPE, "softmax", NULL);
    th_expect_error(nat_softmax(ctx, e, &y), NAT_ERR_SHAPE, "[0]", NULL);
    th_expect_error(nat_softmax(ctx, NULL, &y), NAT_ERR_INVALID_ARG, "NULL", NULL);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(x), nat_tensor_free(w5), nat_tensor_free(w17), nat_tensor_free(e), nat_tensor_free(scalar);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("norm");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"layernorm_reference", layernorm_reference},
        {"layernorm_large_mean", layernorm_large_mean},
        {"layernorm_gradcheck", layernorm_gradcheck},
        {"strided_inputs", strided_inputs},
        {"softmax_reference", softmax_reference},
        {"softmax_gradcheck", softmax_gradcheck},
        {"argument_errors", argument_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
