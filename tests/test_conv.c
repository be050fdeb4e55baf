/* tests/test_conv.c — conv2d (NCHW) and global average pooling (channels-first and channels-last) against
 * plain double-precision loops, forward and backward; finite-difference checks of every input; strided
 * inputs; gradient accumulation; thread-count independence; errors that name the shapes. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

typedef struct conv_cfg {
    int64_t N, C, H, W, O, kh, kw;
    int sh, sw, ph, pw, bias;
} conv_cfg;

static int64_t out_h(const conv_cfg *c) { return (c->H + 2 * c->ph - c->kh) / c->sh + 1; }
static int64_t out_w(const conv_cfg *c) { return (c->W + 2 * c->pw - c->kw) / c->sw + 1; }

/* Visits every (output pixel, kernel tap) pair that reads an input pixel inside the image. */
#define FOR_TAPS(c, Ho, Wo)                                                                                  \
    for (int64_t n = 0; n < (c)->N; n++)                                                                     \
        for (int64_t o = 0; o < (c)->O; o++)                                                                 \
            for (int64_t oy = 0; oy < (Ho); oy++)                                                            \
                for (int64_t ox = 0; ox < (Wo); ox++)                                                        \
                    for (int64_t ci = 0; ci < (c)->C; ci++)                                                  \
                        for (int64_t ki = 0; ki < (c)->kh; ki++)                                             \
                            for (int64_t kj = 0; kj < (c)->kw; kj++)                                         \
                                for (int64_t iy = oy * (c)->sh - (c)->ph + ki, ix = ox * (c)->sw - (c)->pw + kj, \
                                             once_ = 1;                                                      \
                                     once_ && iy >= 0 && iy < (c)->H && ix >= 0 && ix < (c)->W; once_ = 0)

#define XI(c, n, ci, iy, ix) ((((n) * (c)->C + (ci)) * (c)->H + (iy)) * (c)->W + (ix))
#define WI(c, o, ci, ki, kj) ((((o) * (c)->C + (ci)) * (c)->kh + (ki)) * (c)->kw + (kj))
#define YI(c, n, o, oy, ox, Ho, Wo) ((((n) * (c)->O + (o)) * (Ho) + (oy)) * (Wo) + (ox))

static void ref_conv_forward(const conv_cfg *c, const float *x, const float *w, const float *b, double *y)
{
    int64_t Ho = out_h(c), Wo = out_w(c);
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t o = 0; o < c->O; o++)
            for (int64_t p = 0; p < Ho * Wo; p++)
                y[(n * c->O + o) * Ho * Wo + p] = b ? b[o] : 0.0;
    FOR_TAPS(c, Ho, Wo)
    y[YI(c, n, o, oy, ox, Ho, Wo)] += (double)x[XI(c, n, ci, iy, ix)] * w[WI(c, o, ci, ki, kj)];
}

static void ref_conv_backward(const conv_cfg *c, const float *x, const float *w, const float *g, double *gx, double *gw,
                              double *gb)
{
    int64_t Ho = out_h(c), Wo = out_w(c);
    memset(gx, 0, (size_t)(c->N * c->C * c->H * c->W) * sizeof *gx);
    memset(gw, 0, (size_t)(c->O * c->C * c->kh * c->kw) * sizeof *gw);
    memset(gb, 0, (size_t)c->O * sizeof *gb);
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t o = 0; o < c->O; o++)
            for (int64_t p = 0; p < Ho * Wo; p++)
                gb[o] += g[(n * c->O + o) * Ho * Wo + p];
    FOR_TAPS(c, Ho, Wo)
    {
        double gy = g[YI(c, n, o, oy, ox, Ho, Wo)];
        gx[XI(c, n, ci, iy, ix)] += gy * w[WI(c, o, ci, ki, kj)];
        gw[WI(c, o, ci, ki, kj)] += gy * x[XI(c, n, ci, iy, ix)];
    }
}

/* Odd sizes on purpose: H != W, 1x1 kernels, stride 2 on odd inputs, padding 0/1/2, C = 1 and 3, one
 * sample (threads inside a sample) and several (threads over samples). */
static const conv_cfg conv_cases[] = {
    /* N  C   H   W  O kh kw sh sw ph pw bias */
    {1, 1, 7, 7, 1, 3, 3, 1, 1, 1, 1, 1},   {2, 3, 7, 9, 4, 3, 3, 2, 2, 1, 1, 1},  {3, 3, 17, 11, 5, 1, 1, 1, 1, 0, 0, 1},
    {2, 2, 9, 7, 3, 1, 1, 2, 2, 0, 0, 0},   {1, 3, 5, 6, 2, 3, 3, 1, 1, 2, 2, 1},  {2, 1, 8, 5, 3, 3, 2, 2, 1, 0, 0, 1},
    {4, 3, 33, 17, 7, 3, 3, 2, 2, 1, 1, 1}, {1, 4, 16, 16, 6, 5, 5, 3, 3, 2, 2, 0}, {2, 3, 1, 1, 2, 1, 1, 1, 1, 0, 0, 1},
    {1, 2, 3, 3, 2, 3, 3, 2, 2, 2, 1, 1},   {3, 3, 13, 15, 16, 3, 3, 2, 2, 1, 1, 1}, {1, 17, 6, 4, 33, 2, 3, 1, 2, 1, 0, 1},
};

typedef struct conv_args {
    int sh, sw, ph, pw;
} conv_args;

static nat_status f_conv(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const conv_args *a = u;
    return nat_conv2d(ctx, in[0], in[1], in[2], a->sh, a->sw, a->ph, a->pw, out);
}

static void make_inputs(nat_rng *rng, const conv_cfg *c, bool grad, nat_tensor **x, nat_tensor **w, nat_tensor **b)
{
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {c->O, c->C, c->kh, c->kw}, bs[1] = {c->O};
    *x = th_randn(rng, 4, xs, 1, grad);
    *w = th_randn(rng, 4, ws, 0.5f, grad);
    *b = c->bias ? th_randn(rng, 1, bs, 1, grad) : NULL;
}

START_TEST(conv_forward_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 11);
    for (size_t k = 0; k < sizeof conv_cases / sizeof *conv_cases; k++) {
        const conv_cfg *c = &conv_cases[k];
        nat_tensor *x, *w, *b, *y;
        make_inputs(&rng, c, false, &x, &w, &b);
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_conv2d(ctx, x, w, b, c->sh, c->sw, c->ph, c->pw, &y));
        int64_t Ho = out_h(c), Wo = out_w(c), ny = c->N * c->O * Ho * Wo;
        ck_assert_int_eq(y->ndim, 4);
        ck_assert_int_eq(y->shape[0], c->N);
        ck_assert_int_eq(y->shape[1], c->O);
        ck_assert_int_eq(y->shape[2], Ho);
        ck_assert_int_eq(y->shape[3], Wo);
        double *want = malloc((size_t)ny * sizeof *want);
        ref_conv_forward(c, nat_tensor_f32(x), nat_tensor_f32(w), b ? nat_tensor_f32(b) : NULL, want);
        char what[64];
        snprintf(what, sizeof what, "conv2d forward case %zu", k);
        th_assert_close(nat_tensor_f32(y), want, ny, 1e-5, what);
        free(want);
        nat_ctx_free(ctx);
        nat_tensor_free(x);
        nat_tensor_free(w);
        nat_tensor_free(b);
    }
}
END_TEST

/* Analytic gradients of every input against the reference, with one thread and with all of them (the
 * sample-parallel path sums per-thread weight gradients). */
START_TEST(conv_backward_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 12);
    int threads[2] = {1, omp_get_max_threads()};
    for (size_t k = 0; k < sizeof conv_cases / sizeof *conv_cases; k++) {
        const conv_cfg *c = &conv_cases[k];
        nat_tensor *x, *w, *b;
        make_inputs(&rng, c, true, &x, &w, &b);
        int64_t Ho = out_h(c), Wo = out_w(c), ny = c->N * c->O * Ho * Wo;
        int64_t gs[4] = {c->N, c->O, Ho, Wo};
        nat_tensor *g = th_randn(&rng, 4, gs, 1, false);
        int64_t nx = nat_tensor_numel(x), nw = nat_tensor_numel(w);
        double *gx = malloc((size_t)nx * sizeof *gx), *gw = malloc((size_t)nw * sizeof *gw),
               *gb = malloc((size_t)c->O * sizeof *gb);
        ref_conv_backward(c, nat_tensor_f32(x), nat_tensor_f32(w), nat_tensor_f32(g), gx, gw, gb);
        (void)ny;
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(threads[t]);
            nat_zero_grad(x);
            nat_zero_grad(w);
            nat_zero_grad(b);
            nat_ctx *ctx;
            nat_tensor *y;
            TH_OK(nat_ctx_new(&ctx, NAT_CPU));
            TH_OK(nat_conv2d(ctx, x, w, b, c->sh, c->sw, c->ph, c->pw, &y));
            TH_OK(nat_backward_from(ctx, y, g));
            char what[96];
            snprintf(what, sizeof what, "conv2d case %zu, %d threads: grad x", k, threads[t]);
            th_assert_close(nat_tensor_f32(x->grad), gx, nx, 1e-5, what);
            snprintf(what, sizeof what, "conv2d case %zu, %d threads: grad weight", k, threads[t]);
            th_assert_close(nat_tensor_f32(w->grad), gw, nw, 1e-5, what);
            if (b) {
                snprintf(what, sizeof what, "conv2d case %zu, %d threads: grad bias", k, threads[t]);
                th_assert_close(nat_tensor_f32(b->grad), gb, c->O, 1e-5, what);
            }
            nat_ctx_free(ctx);
        }
        free(gx);
        free(gw);
        free(gb);
        nat_tensor_free(x);
        nat_tensor_free(w);
        nat_tensor_free(b);
        nat_tensor_free(g);
    }
}
END_TEST

START_TEST(conv_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 13);
    static const conv_cfg tiny[] = {
        {2, 2, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1}, /* stride 2 on odd H, padding 1 */
        {1, 1, 4, 5, 2, 1, 1, 1, 1, 0, 0, 0}, /* pointwise, no bias */
        {1, 3, 4, 3, 2, 3, 3, 1, 1, 2, 2, 1}, /* padding 2, C = 3 */
        {2, 2, 5, 6, 2, 2, 3, 1, 2, 0, 1, 1}, /* non-square kernel, mixed strides and paddings */
    };
    for (size_t k = 0; k < sizeof tiny / sizeof *tiny; k++) {
        const conv_cfg *c = &tiny[k];
        nat_tensor *x, *w, *b;
        make_inputs(&rng, c, true, &x, &w, &b);
        conv_args a = {c->sh, c->sw, c->ph, c->pw};
        nat_tensor *in[3] = {x, w, b};
        char what[48];
        snprintf(what, sizeof what, "conv2d tiny case %zu", k);
        th_gradcheck(what, f_conv, &a, 3, in, 1e-2, 3e-3);
        nat_tensor_free(x);
        nat_tensor_free(w);
        nat_tensor_free(b);
    }
}
END_TEST

/* x stored [N, H, C, W] and permuted to NCHW: same values as the dense conv, and gradients flow back
 * to the stored tensor. */
static nat_status f_conv_permuted(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int perm[4] = {0, 2, 1, 3};
    nat_tensor *xp;
    NAT_TRY(nat_permute(ctx, in[0], perm, &xp));
    return f_conv(ctx, (nat_tensor *[]){xp, in[1], in[2]}, u, out);
}

START_TEST(conv_strided_input)
{
    nat_rng rng;
    nat_rng_seed(&rng, 14);
    conv_cfg c = {2, 3, 5, 7, 4, 3, 3, 2, 1, 1, 0, 1};
    int64_t xs[4] = {c.N, c.H, c.C, c.W}, ws[4] = {c.O, c.C, c.kh, c.kw}, bs[1] = {c.O};
    nat_tensor *xs_t = th_randn(&rng, 4, xs, 1, true), *w = th_randn(&rng, 4, ws, 0.5f, true),
               *b = th_randn(&rng, 1, bs, 1, true);
    /* Dense NCHW copy for the reference. */
    int64_t n4[4] = {c.N, c.C, c.H, c.W};
    nat_tensor *xd = th_randn(&rng, 4, n4, 1, false);
    const float *src = nat_tensor_f32(xs_t);
    float *dst = nat_tensor_f32(xd);
    for (int64_t n = 0; n < c.N; n++)
        for (int64_t ci = 0; ci < c.C; ci++)
            for (int64_t y = 0; y < c.H; y++)
                for (int64_t x = 0; x < c.W; x++)
                    dst[XI(&c, n, ci, y, x)] = src[((n * c.H + y) * c.C + ci) * c.W + x];
    conv_args a = {c.sh, c.sw, c.ph, c.pw};
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f_conv_permuted(ctx, (nat_tensor *[]){xs_t, w, b}, &a, &y));
    int64_t ny = nat_tensor_numel(y);
    double *want = malloc((size_t)ny * sizeof *want);
    ref_conv_forward(&c, dst, nat_tensor_f32(w), nat_tensor_f32(b), want);
    th_assert_close(nat_tensor_f32(y), want, ny, 1e-5, "conv2d of a permuted view");
    free(want);
    nat_ctx_free(ctx);
    nat_tensor *in[3] = {xs_t, w, b};
    th_gradcheck("conv2d through a permuted view", f_conv_permuted, &a, 3, in, 1e-2, 3e-3);
    nat_tensor_free(xs_t);
    nat_tensor_free(xd);
    nat_tensor_free(w);
    nat_tensor_free(b);
}
END_TEST

/* Two backward passes without zeroing add up: parameter gradients accumulate. */
START_TEST(conv_gradients_accumulate)
{
    nat_rng rng;
    nat_rng_seed(&rng, 15);
    conv_cfg c = {3, 2, 6, 5, 3, 3, 3, 1, 1, 1, 1, 1};
    nat_tensor *x, *w, *b;
    make_inputs(&rng, &c, true, &x, &w, &b);
    int64_t gs[4] = {c.N, c.O, out_h(&c), out_w(&c)};
    nat_tensor *g = th_randn(&rng, 4, gs, 1, false);
    nat_tensor *ts[3] = {x, w, b};
    float *once[3];
    for (int rep = 0; rep < 2; rep++) {
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_conv2d(ctx, x, w, b, c.sh, c.sw, c.ph, c.pw, &y));
        TH_OK(nat_backward_from(ctx, y, g));
        nat_ctx_free(ctx);
        for (int i = 0; i < 3; i++) {
            int64_t n = nat_tensor_numel(ts[i]);
            if (rep == 0) {
                once[i] = malloc((size_t)n * sizeof(float));
                memcpy(once[i], nat_tensor_f32(ts[i]->grad), (size_t)n * sizeof(float));
            } else {
                for (int64_t j = 0; j < n; j++)
                    once[i][j] *= 2.0f;
                th_assert_close_f(nat_tensor_f32(ts[i]->grad), once[i], n, 1e-6, "conv2d gradient after two passes");
                free(once[i]);
            }
        }
    }
    nat_tensor_free(x);
    nat_tensor_free(w);
    nat_tensor_free(b);
    nat_tensor_free(g);
}
END_TEST

START_TEST(conv_errors_name_shapes)
{
    nat_rng rng;
    nat_rng_seed(&rng, 16);
    int64_t xs[4] = {2, 3, 5, 5}, ws[4] = {4, 2, 3, 3}, wgood[4] = {4, 3, 3, 3}, bs[1] = {5}, x3[3] = {3, 5, 5},
            wbig[4] = {4, 3, 9, 3};
    nat_tensor *x = th_randn(&rng, 4, xs, 1, false), *w = th_randn(&rng, 4, ws, 1, false),
               *wg = th_randn(&rng, 4, wgood, 1, false), *b = th_randn(&rng, 1, bs, 1, false),
               *xbad = th_randn(&rng, 3, x3, 1, false), *wb = th_randn(&rng, 4, wbig, 1, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    ck_assert_int_eq(nat_conv2d(ctx, x, w, NULL, 1, 1, 1, 1, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 5, 5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[4, 2, 3, 3]"));
    ck_assert_int_eq(nat_conv2d(ctx, x, wg, b, 1, 1, 1, 1, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[4, 3, 3, 3]"));
    ck_assert_int_eq(nat_conv2d(ctx, xbad, wg, NULL, 1, 1, 1, 1, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[3, 5, 5]"));
    ck_assert_int_eq(nat_conv2d(ctx, x, wb, NULL, 1, 1, 1, 1, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 5, 5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "9x3"));
    ck_assert_int_eq(nat_conv2d(ctx, x, wg, NULL, 0, 1, 1, 1, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "stride 0x1"));
    ck_assert_int_eq(nat_conv2d(ctx, x, wg, NULL, 1, 1, -1, 0, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_conv2d(ctx, x, NULL, NULL, 1, 1, 0, 0, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_tensor_free(w);
    nat_tensor_free(wg);
    nat_tensor_free(b);
    nat_tensor_free(xbad);
    nat_tensor_free(wb);
}
END_TEST

/* ---- global average pooling ---- */

static nat_status f_pool(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_global_avg_pool(ctx, in[0], *(const int *)u, out);
}

/* x [N, A, B, D]: channels-first means over (B, D) per (n, A); channels-last over (A, B) per (n, D). */
static void ref_pool(const float *x, const int64_t *s, int last, double *y)
{
    int64_t N = s[0], C = last ? s[3] : s[1], S = last ? s[1] * s[2] : s[2] * s[3];
    for (int64_t i = 0; i < N * C; i++)
        y[i] = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t a = 0; a < s[1]; a++)
            for (int64_t b = 0; b < s[2]; b++)
                for (int64_t d = 0; d < s[3]; d++) {
                    double v = x[((n * s[1] + a) * s[2] + b) * s[3] + d];
                    y[n * C + (last ? d : a)] += v / (double)S;
                }
}

START_TEST(pool_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 17);
    static const int64_t shapes[][4] = {{2, 3, 5, 7}, {1, 1, 1, 1}, {3, 17, 4, 2}, {2, 33, 7, 17}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++)
        for (int last = 0; last <= 1; last++) {
            nat_tensor *x = th_randn(&rng, 4, shapes[k], 1, true);
            nat_ctx *ctx;
            nat_tensor *y;
            TH_OK(nat_ctx_new(&ctx, NAT_CPU));
            TH_OK(nat_global_avg_pool(ctx, x, last, &y));
            int64_t N = shapes[k][0], C = last ? shapes[k][3] : shapes[k][1];
            ck_assert_int_eq(y->ndim, 2);
            ck_assert_int_eq(y->shape[0], N);
            ck_assert_int_eq(y->shape[1], C);
            double *want = malloc((size_t)(N * C) * sizeof *want);
            ref_pool(nat_tensor_f32(x), shapes[k], last, want);
            char what[64];
            snprintf(what, sizeof what, "global_avg_pool shape %zu channels_last %d", k, last);
            th_assert_close(nat_tensor_f32(y), want, N * C, 1e-5, what);
            free(want);
            nat_ctx_free(ctx);
            if (nat_tensor_numel(x) <= 120)
                th_gradcheck(what, f_pool, &last, 1, &x, 1e-2, 2e-3);
            nat_tensor_free(x);
        }
}
END_TEST

/* Channels-last pooling of an NCHW tensor permuted to NHWC equals channels-first pooling of the original. */
static nat_status f_pool_permuted(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int perm[4] = {0, 2, 3, 1};
    nat_tensor *xp;
    NAT_TRY(nat_permute(ctx, in[0], perm, &xp));
    return nat_global_avg_pool(ctx, xp, 1, out);
}

START_TEST(pool_strided_input)
{
    nat_rng rng;
    nat_rng_seed(&rng, 18);
    int64_t s[4] = {2, 5, 3, 4};
    nat_tensor *x = th_randn(&rng, 4, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *a, *b;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_global_avg_pool(ctx, x, 0, &a));
    TH_OK(f_pool_permuted(ctx, &x, NULL, &b));
    th_assert_close_f(nat_tensor_f32(b), nat_tensor_f32(a), 10, 1e-6, "pool of permuted view");
    nat_ctx_free(ctx);
    th_gradcheck("global_avg_pool through a permuted view", f_pool_permuted, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

START_TEST(pool_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 19);
    int64_t s2[2] = {4, 6}, s4[4] = {2, 3, 0, 5};
    nat_tensor *x2 = th_randn(&rng, 2, s2, 1, false), *x0 = th_randn(&rng, 4, s4, 1, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    ck_assert_int_eq(nat_global_avg_pool(ctx, x2, 0, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[4, 6]"));
    ck_assert_int_eq(nat_global_avg_pool(ctx, x0, 0, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 0, 5]"));
    ck_assert_int_eq(nat_global_avg_pool(ctx, x0, 2, &y), NAT_ERR_INVALID_ARG);
    nat_ctx_free(ctx);
    nat_tensor_free(x2);
    nat_tensor_free(x0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conv");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"conv_forward_reference", conv_forward_reference},
        {"conv_backward_reference", conv_backward_reference},
        {"conv_gradcheck", conv_gradcheck},
        {"conv_strided_input", conv_strided_input},
        {"conv_gradients_accumulate", conv_gradients_accumulate},
        {"conv_errors_name_shapes", conv_errors_name_shapes},
        {"pool_reference_and_grad", pool_reference_and_grad},
        {"pool_strided_input", pool_strided_input},
        {"pool_errors", pool_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
