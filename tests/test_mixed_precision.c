/* tests/test_mixed_precision.c — autocast (nat_ctx_set_precision) and dynamic loss scaling:
 *  - the bf16 / f16 rounding of nat/half.h against hand-computed bit patterns: ties to even, subnormals,
 *    overflow to inf, NaN, and a round trip of every 16-bit pattern;
 *  - matmul (batched and shared-b), linear (with bias) and conv2d (strided, padded, with bias) under BF16
 *    and F16, forward and every gradient, against a double reference computed on the rounded operands
 *    (tight: 1e-5) and against the f32 result (loose: 1e-2), plus a check that rounding did happen;
 *  - finite-difference gradient checks under the same rounding, on inputs that lie on the bf16 grid
 *    (multiples of 2^-6 in [-1, 1], step 2^-6) so the rounding of the perturbed inputs is exact;
 *  - nat_loss_scaler: unscale, the non-finite check, skip + halve, double after growth_interval steps;
 *    why it is needed (an f16 GEMM flushes 1e-8 gradients to zero; scaled, they survive);
 *  - a tiny MLP trained 60 steps with F16 + the loss scaler from a scale too high for f16: the first
 *    steps are skipped, the scale comes down, and the loss falls;
 *  - on a CUDA device (skipped with the reason otherwise): the same ops on cuda:0 vs the CPU emulation;
 *    with the argument "gpu" this binary runs that case alone (ctest: test_mixed_precision_gpu).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/cuda.h"
#include "nat/half.h"
#include "nat/optim.h"
#include "support/harness.h"

static const char *prec_name(nat_precision p) { return p == NAT_PREC_BF16 ? "bf16" : p == NAT_PREC_F16 ? "f16" : "f32"; }

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- rounding ---- */

START_TEST(rounding_bf16)
{
    const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3F800000u, 0x3F80u}, /* 1 */
        {0x3F808000u, 0x3F80u}, /* 1 + 2^-8: tie, to even (down) */
        {0x3F818000u, 0x3F82u}, /* 1 + 3·2^-8: tie, to even (up) */
        {0x3F808001u, 0x3F81u}, /* just above the tie */
        {0x3F807FFFu, 0x3F80u}, /* just below */
        {0xBFC00000u, 0xBFC0u}, /* -1.5 exact */
        {0x80000000u, 0x8000u}, /* -0 */
        {0x00010000u, 0x0001u}, /* f32 subnormal, exact in bf16 */
        {0x00008000u, 0x0000u}, /* subnormal tie to even: 0 */
        {0x00018000u, 0x0002u}, /* subnormal tie to even: 2 */
        {0x7F7F7FFFu, 0x7F7Fu}, /* below the midpoint past bf16's max: stays finite */
        {0x7F7F8000u, 0x7F80u}, /* the midpoint: ties to even = inf */
        {0x7F7FFFFFu, 0x7F80u}, /* FLT_MAX overflows */
        {0x7F800000u, 0x7F80u}, /* inf */
        {0xFF800000u, 0xFF80u}, /* -inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = nat_f32_to_bf16_bits(f_of(cases[i].in));
        ck_assert_msg(got == cases[i].out, "bf16(0x%08x) = 0x%04x, expected 0x%04x", cases[i].in, got, cases[i].out);
    }
    ck_assert(isnan(nat_round_bf16(NAN)));
    ck_assert(isnan(nat_round_bf16(f_of(0x7F800001u)))); /* a NaN whose payload truncation would make inf */
    ck_assert_float_eq(nat_round_bf16(1.00390625f), 1.0f);
    ck_assert_float_eq(nat_round_bf16(3.14159265f), 3.140625f);
    ck_assert_float_eq(nat_bf16_bits_to_f32(0x4049u), 3.140625f);
    /* Every non-NaN pattern survives f32 and back. */
    for (uint32_t h = 0; h < 65536; h++) {
        float v = nat_bf16_bits_to_f32((uint16_t)h);
        if (!isnan(v))
            ck_assert_msg(nat_f32_to_bf16_bits(v) == h, "bf16 0x%04x does not round-trip", h);
    }
}
END_TEST

START_TEST(rounding_f16)
{
    const struct {
        float in;
        uint16_t out;
    } cases[] = {
        {1.0f, 0x3C00u},
        {1.0f + 0x1p-11f, 0x3C00u},            /* tie, to even (down) */
        {1.0f + 3 * 0x1p-11f, 0x3C02u},        /* tie, to even (up) */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3C01u}, /* just above the tie */
        {0.1f, 0x2E66u},                       /* 0.0999755859375 */
        {-2.0f, 0xC000u},
        {65504.0f, 0x7BFFu},  /* largest half */
        {65519.0f, 0x7BFFu},  /* below the midpoint */
        {65520.0f, 0x7C00u},  /* the midpoint: ties to even = inf */
        {1e6f, 0x7C00u},      /* overflow */
        {-1e6f, 0xFC00u},
        {INFINITY, 0x7C00u},
        {0x1p-14f, 0x0400u},                   /* smallest normal */
        {0x1p-14f - 0x1p-25f, 0x0400u},        /* 1023.5 units: tie, to even = 1024 = smallest normal */
        {0x1p-24f, 0x0001u},                   /* smallest subnormal */
        {0x1p-25f, 0x0000u},                   /* half of it: tie, to even = 0 */
        {3 * 0x1p-25f, 0x0002u},               /* 1.5 units: tie, to even = 2 */
        {0x1p-25f + 0x1p-35f, 0x0001u},        /* above the tie */
        {0x1p-26f, 0x0000u},
        {-0x1p-24f, 0x8001u},
        {1e-30f, 0x0000u},
        {-0.0f, 0x8000u},
        {100 * 0x1p-24f, 0x0064u},             /* exact subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = nat_f32_to_f16_bits(cases[i].in);
        ck_assert_msg(got == cases[i].out, "f16(%a) = 0x%04x, expected 0x%04x", (double)cases[i].in, got, cases[i].out);
    }
    ck_assert(isnan(nat_round_f16(NAN)));
    ck_assert_float_eq(nat_f16_bits_to_f32(0x0001u), 0x1p-24f);
    ck_assert_float_eq(nat_f16_bits_to_f32(0x7BFFu), 65504.0f);
    ck_assert_float_eq(nat_f16_bits_to_f32(0x3555u), 0.333251953125f);
    ck_assert(isinf(nat_f16_bits_to_f32(0xFC00u)) && nat_f16_bits_to_f32(0xFC00u) < 0);
    ck_assert(isnan(nat_f16_bits_to_f32(0x7E00u)));
    for (uint32_t h = 0; h < 65536; h++) {
        float v = nat_f16_bits_to_f32((uint16_t)h);
        if (!isnan(v))
            ck_assert_msg(nat_f32_to_f16_bits(v) == h, "f16 0x%04x does not round-trip", h);
    }
    /* nat_round_array in place and as a copy. */
    float a[4] = {1.0f + 0x1p-11f, 70000.0f, 0x1p-25f, 0.1f}, b[4];
    nat_round_array(NAT_PREC_F16, a, b, 4);
    ck_assert_float_eq(b[0], 1.0f);
    ck_assert(isinf(b[1]));
    ck_assert_float_eq(b[2], 0.0f);
    ck_assert_float_eq(b[3], 0.0999755859375f);
    nat_round_array(NAT_PREC_BF16, a, a, 4);
    ck_assert_float_eq(a[0], 1.0f);
    ck_assert_float_eq(a[1], 70144.0f);
}
END_TEST

/* ---- ops under autocast vs references ---- */

typedef nat_status (*op_fn)(nat_ctx *ctx, nat_tensor **in, const void *user, nat_tensor **out);

/* Runs f on the CPU (or `dev`) with precision p from copies of in[] (all requiring gradients except where
 * grad[i] is false); loss = Σ out ⊙ R. Returns the output and each input's gradient on the host. */
static void run_prec(nat_device dev, nat_precision p, op_fn f, const void *user, int n_in, nat_tensor **in,
                     const bool *grad, const float *R, float **y, int64_t *ny, float **grads)
{
    nat_tensor *x[4];
    for (int i = 0; i < n_in; i++) {
        TH_OK(nat_tensor_to(NULL, in[i], dev, &x[i]));
        nat_set_requires_grad(x[i], grad[i]);
    }
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, dev));
    ck_assert_int_eq(nat_ctx_set_precision(ctx, p), NAT_PREC_F32); /* the default */
    ck_assert_int_eq(nat_ctx_precision(ctx), p);
    nat_tensor *out, *r, *rd;
    TH_OK(f(ctx, x, user, &out));
    *ny = nat_tensor_numel(out);
    r = th_from(R, out->ndim, out->shape, false);
    TH_OK(nat_tensor_to(ctx, r, dev, &rd));
    TH_OK(nat_backward_from(ctx, out, rd));
    nat_tensor *h;
    TH_OK(nat_tensor_to(NULL, out, NAT_CPU, &h));
    *y = malloc((size_t)*ny * sizeof **y);
    memcpy(*y, nat_tensor_f32(h), (size_t)*ny * sizeof **y);
    nat_tensor_free(h);
    for (int i = 0; i < n_in; i++) {
        grads[i] = NULL;
        if (!x[i]->grad)
            continue;
        TH_OK(nat_tensor_to(NULL, x[i]->grad, NAT_CPU, &h));
        int64_t n = nat_tensor_numel(h);
        grads[i] = malloc((size_t)n * sizeof(float));
        memcpy(grads[i], nat_tensor_f32(h), (size_t)n * sizeof(float));
        nat_tensor_free(h);
    }
    nat_ctx_free(ctx);
    nat_tensor_free(r);
    for (int i = 0; i < n_in; i++)
        nat_tensor_free(x[i]);
}

static double *rounded(nat_precision p, const float *v, int64_t n)
{
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = p == NAT_PREC_BF16 ? nat_round_bf16(v[i]) : p == NAT_PREC_F16 ? nat_round_f16(v[i]) : v[i];
    return d;
}

static nat_status f_matmul(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_matmul(c, x[0], x[1], o); }
static nat_status f_linear(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_linear(c, x[0], x[1], x[2], o); }

typedef struct conv_args {
    int sh, sw, ph, pw;
} conv_args;

static nat_status f_conv(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    const conv_args *a = u;
    return nat_conv2d(c, x[0], x[1], x[2], a->sh, a->sw, a->ph, a->pw, o);
}

/* Compares got (f32) with the double reference (tight) and with the f32 run (loose). */
static void check(const char *what, nat_precision p, const float *got, const double *ref, const float *f32, int64_t n,
                  double tight)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s %s vs double reference on rounded operands", what, prec_name(p));
    th_assert_close(got, ref, n, tight, msg);
    snprintf(msg, sizeof msg, "%s %s vs f32", what, prec_name(p));
    th_assert_close_f(got, f32, n, 1e-2, msg);
}

/* Largest |a - b| over n values. */
static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void matmul_case(nat_precision p, int64_t Bn, int64_t M, int64_t K, int64_t N, bool shared)
{
    nat_rng rng;
    nat_rng_seed(&rng, 7 + (uint64_t)M);
    int64_t as[3] = {Bn, M, K}, bs3[3] = {Bn, K, N}, bs2[2] = {K, N};
    nat_tensor *in[2] = {th_randn(&rng, 3, as, 1.0f, false), shared ? th_randn(&rng, 2, bs2, 1.0f, false)
                                                                     : th_randn(&rng, 3, bs3, 1.0f, false)};
    int64_t ny = Bn * M * N;
    float *R = malloc((size_t)ny * sizeof *R);
    nat_rng_fill_normal(&rng, R, (size_t)ny, 0.0f, 1.0f);
    bool grad[2] = {true, true};
    float *y, *g[2], *y32, *g32[2];
    int64_t n;
    run_prec(NAT_CPU, p, f_matmul, NULL, 2, in, grad, R, &y, &n, g);
    run_prec(NAT_CPU, NAT_PREC_F32, f_matmul, NULL, 2, in, grad, R, &y32, &n, g32);
    ck_assert_int_eq(n, ny);
    double *A = rounded(p, nat_tensor_f32(in[0]), Bn * M * K);
    double *B = rounded(p, nat_tensor_f32(in[1]), nat_tensor_numel(in[1]));
    double *Rr = rounded(p, R, ny);
    double *yr = calloc((size_t)ny, sizeof *yr), *ga = calloc((size_t)(Bn * M * K), sizeof *ga);
    double *gb = calloc((size_t)nat_tensor_numel(in[1]), sizeof *gb);
    for (int64_t b = 0; b < Bn; b++) {
        const double *Ab = A + b * M * K, *Bb = B + (shared ? 0 : b * K * N), *Rb = Rr + b * M * N;
        double *gbb = gb + (shared ? 0 : b * K * N);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t k = 0; k < K; k++) {
                    yr[b * M * N + i * N + j] += Ab[i * K + k] * Bb[k * N + j];
                    ga[b * M * K + i * K + k] += Rb[i * N + j] * Bb[k * N + j];
                    gbb[k * N + j] += Ab[i * K + k] * Rb[i * N + j];
                }
    }
    char what[96];
    snprintf(what, sizeof what, "matmul %lldx%lldx%lldx%lld%s", (long long)Bn, (long long)M, (long long)K, (long long)N,
             shared ? " shared b" : "");
    check(what, p, y, yr, y32, ny, 1e-5);
    ck_assert_msg(max_diff(y, y32, ny) > 1e-5, "%s %s: no rounding happened", what, prec_name(p));
    check("matmul grad a", p, g[0], ga, g32[0], Bn * M * K, 1e-5);
    check("matmul grad b", p, g[1], gb, g32[1], nat_tensor_numel(in[1]), 1e-5);
    free(A), free(B), free(Rr), free(yr), free(ga), free(gb), free(R);
    free(y), free(y32);
    for (int i = 0; i < 2; i++)
        free(g[i]), free(g32[i]), nat_tensor_free(in[i]);
}

static void linear_case(nat_precision p)
{
    nat_rng rng;
    nat_rng_seed(&rng, 11);
    const int64_t M = 12, IN = 40, OUT = 9;
    int64_t xs[2] = {M, IN}, ws[2] = {OUT, IN}, bs[1] = {OUT};
    nat_tensor *in[3] = {th_randn(&rng, 2, xs, 1.0f, false), th_randn(&rng, 2, ws, 0.5f, false),
                         th_randn(&rng, 1, bs, 1.0f, false)};
    float *R = malloc((size_t)(M * OUT) * sizeof *R);
    nat_rng_fill_normal(&rng, R, (size_t)(M * OUT), 0.0f, 1.0f);
    bool grad[3] = {true, true, true};
    float *y, *g[3], *y32, *g32[3];
    int64_t n;
    run_prec(NAT_CPU, p, f_linear, NULL, 3, in, grad, R, &y, &n, g);
    run_prec(NAT_CPU, NAT_PREC_F32, f_linear, NULL, 3, in, grad, R, &y32, &n, g32);
    double *X = rounded(p, nat_tensor_f32(in[0]), M * IN), *W = rounded(p, nat_tensor_f32(in[1]), OUT * IN);
    double *Rr = rounded(p, R, M * OUT);
    const float *bias = nat_tensor_f32(in[2]);
    double *yr = calloc((size_t)(M * OUT), sizeof *yr), *gx = calloc((size_t)(M * IN), sizeof *gx);
    double *gw = calloc((size_t)(OUT * IN), sizeof *gw), *gbias = calloc((size_t)OUT, sizeof *gbias);
    for (int64_t r = 0; r < M; r++)
        for (int64_t o = 0; o < OUT; o++) {
            yr[r * OUT + o] = bias[o]; /* bias stays f32 */
            gbias[o] += R[r * OUT + o]; /* so does its gradient: from the unrounded output gradient */
            for (int64_t i = 0; i < IN; i++) {
                yr[r * OUT + o] += X[r * IN + i] * W[o * IN + i];
                gx[r * IN + i] += Rr[r * OUT + o] * W[o * IN + i];
                gw[o * IN + i] += Rr[r * OUT + o] * X[r * IN + i];
            }
        }
    check("linear", p, y, yr, y32, M * OUT, 1e-5);
    ck_assert_msg(max_diff(y, y32, M * OUT) > 1e-5, "linear %s: no rounding happened", prec_name(p));
    check("linear grad x", p, g[0], gx, g32[0], M * IN, 1e-5);
    check("linear grad w", p, g[1], gw, g32[1], OUT * IN, 1e-5);
    check("linear grad bias", p, g[2], gbias, g32[2], OUT, 1e-5);
    free(X), free(W), free(Rr), free(yr), free(gx), free(gw), free(gbias), free(R), free(y), free(y32);
    for (int i = 0; i < 3; i++)
        free(g[i]), free(g32[i]), nat_tensor_free(in[i]);
}

static void conv_case(nat_precision p, conv_args a, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh,
                      int64_t kw)
{
    nat_rng rng;
    nat_rng_seed(&rng, 13 + (uint64_t)a.sh);
    int64_t xs[4] = {N, C, H, W}, ws[4] = {O, C, kh, kw}, bs[1] = {O};
    nat_tensor *in[3] = {th_randn(&rng, 4, xs, 1.0f, false), th_randn(&rng, 4, ws, 0.5f, false),
                         th_randn(&rng, 1, bs, 1.0f, false)};
    const int64_t Ho = (H + 2 * a.ph - kh) / a.sh + 1, Wo = (W + 2 * a.pw - kw) / a.sw + 1, ny = N * O * Ho * Wo;
    float *R = malloc((size_t)ny * sizeof *R);
    nat_rng_fill_normal(&rng, R, (size_t)ny, 0.0f, 1.0f);
    bool grad[3] = {true, true, true};
    float *y, *g[3], *y32, *g32[3];
    int64_t n;
    run_prec(NAT_CPU, p, f_conv, &a, 3, in, grad, R, &y, &n, g);
    run_prec(NAT_CPU, NAT_PREC_F32, f_conv, &a, 3, in, grad, R, &y32, &n, g32);
    ck_assert_int_eq(n, ny);
    const int64_t nx = N * C * H * W, nw = O * C * kh * kw;
    double *X = rounded(p, nat_tensor_f32(in[0]), nx), *Wt = rounded(p, nat_tensor_f32(in[1]), nw);
    double *Rr = rounded(p, R, ny);
    const float *bias = nat_tensor_f32(in[2]);
    double *yr = calloc((size_t)ny, sizeof *yr), *gx = calloc((size_t)nx, sizeof *gx);
    double *gw = calloc((size_t)nw, sizeof *gw), *gb = calloc((size_t)O, sizeof *gb);
    for (int64_t b = 0; b < N; b++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    int64_t yi = ((b * O + o) * Ho + oy) * Wo + ox;
                    yr[yi] = bias[o];
                    gb[o] += R[yi];
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t iy = oy * a.sh - a.ph + i, ix = ox * a.sw - a.pw + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                int64_t xi = ((b * C + c) * H + iy) * W + ix, wi = ((o * C + c) * kh + i) * kw + j;
                                yr[yi] += X[xi] * Wt[wi];
                                gx[xi] += Rr[yi] * Wt[wi];
                                gw[wi] += Rr[yi] * X[xi];
                            }
                }
    char what[64];
    snprintf(what, sizeof what, "conv2d s%dx%d p%dx%d", a.sh, a.sw, a.ph, a.pw);
    check(what, p, y, yr, y32, ny, 1e-5);
    ck_assert_msg(max_diff(y, y32, ny) > 1e-5, "%s %s: no rounding happened", what, prec_name(p));
    check("conv2d grad x", p, g[0], gx, g32[0], nx, 1e-5);
    check("conv2d grad w", p, g[1], gw, g32[1], nw, 1e-5);
    check("conv2d grad bias", p, g[2], gb, g32[2], O, 1e-5);
    free(X), free(Wt), free(Rr), free(yr), free(gx), free(gw), free(gb), free(R), free(y), free(y32);
    for (int i = 0; i < 3; i++)
        free(g[i]), free(g32[i]), nat_tensor_free(in[i]);
}

START_TEST(matmul_linear_autocast)
{
    for (nat_precision p = NAT_PREC_BF16; p <= NAT_PREC_F16; p++) {
        matmul_case(p, 1, 7, 33, 5, false);
        matmul_case(p, 3, 6, 20, 9, false);
        matmul_case(p, 2, 5, 17, 4, true);
        linear_case(p);
    }
}
END_TEST

START_TEST(conv2d_autocast)
{
    for (nat_precision p = NAT_PREC_BF16; p <= NAT_PREC_F16; p++) {
        conv_case(p, (conv_args){1, 1, 1, 1}, 2, 3, 7, 6, 4, 3, 3);
        conv_case(p, (conv_args){2, 2, 1, 1}, 2, 4, 9, 8, 5, 3, 3);
        conv_case(p, (conv_args){1, 1, 0, 0}, 3, 8, 4, 4, 6, 1, 1); /* pointwise: the no-im2col path */
    }
}
END_TEST

/* A precision switch before the backward does not change it: the node keeps its forward's precision. */
START_TEST(backward_keeps_forward_precision)
{
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    int64_t as[2] = {6, 30}, bs[2] = {30, 4};
    nat_tensor *a = th_randn(&rng, 2, as, 1.0f, true), *b = th_randn(&rng, 2, bs, 1.0f, true);
    float *ga[2];
    for (int t = 0; t < 2; t++) {
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        nat_ctx_set_precision(ctx, NAT_PREC_BF16);
        nat_tensor *y, *s;
        TH_OK(nat_matmul(ctx, a, b, &y));
        TH_OK(nat_sum(ctx, y, &s));
        if (t == 1)
            nat_ctx_set_precision(ctx, NAT_PREC_F32);
        nat_zero_grad(a);
        TH_OK(nat_backward(ctx, s));
        ga[t] = malloc(6 * 30 * sizeof(float));
        memcpy(ga[t], nat_tensor_f32(a->grad), 6 * 30 * sizeof(float));
        nat_ctx_free(ctx);
    }
    ck_assert_msg(memcmp(ga[0], ga[1], 6 * 30 * sizeof(float)) == 0, "backward followed the context, not its node");
    free(ga[0]), free(ga[1]);
    nat_tensor_free(a), nat_tensor_free(b);
}
END_TEST

/* ---- gradient checks on the bf16 grid ---- */

typedef struct gc_args {
    nat_precision p;
    int kind; /* 0 matmul, 1 linear, 2 conv */
} gc_args;

static nat_status gc_fn(nat_ctx *ctx, nat_tensor **x, void *user, nat_tensor **out)
{
    const gc_args *a = user;
    nat_ctx_set_precision(ctx, a->p);
    if (a->kind == 0)
        return nat_matmul(ctx, x[0], x[1], out);
    if (a->kind == 1)
        return nat_linear(ctx, x[0], x[1], x[2], out);
    return nat_conv2d(ctx, x[0], x[1], x[2], 2, 1, 1, 0, out);
}

/* Values k·2^-6, |k| <= 48: exact in bf16 and f16, and so are they ± 2^-6. */
static nat_tensor *grid(nat_rng *r, int nd, const int64_t *shape)
{
    nat_tensor *t = th_randn(r, nd, shape, 1.0f, true);
    float *v = nat_tensor_f32(t);
    for (int64_t i = 0; i < nat_tensor_numel(t); i++)
        v[i] = (float)((int)nat_rng_below(r, 97) - 48) * 0x1p-6f;
    return t;
}

START_TEST(gradcheck_autocast)
{
    nat_rng rng;
    nat_rng_seed(&rng, 21);
    for (nat_precision p = NAT_PREC_BF16; p <= NAT_PREC_F16; p++) {
        char what[64];
        int64_t as[3] = {2, 3, 5}, bs[3] = {2, 5, 4};
        nat_tensor *mm[2] = {grid(&rng, 3, as), grid(&rng, 3, bs)};
        gc_args a = {p, 0};
        snprintf(what, sizeof what, "matmul %s", prec_name(p));
        th_gradcheck(what, gc_fn, &a, 2, mm, 0x1p-6, 1e-2);
        int64_t xs[2] = {4, 6}, ws[2] = {3, 6}, b1[1] = {3};
        nat_tensor *li[3] = {grid(&rng, 2, xs), grid(&rng, 2, ws), grid(&rng, 1, b1)};
        a.kind = 1;
        snprintf(what, sizeof what, "linear %s", prec_name(p));
        th_gradcheck(what, gc_fn, &a, 3, li, 0x1p-6, 1e-2);
        int64_t cx[4] = {2, 2, 5, 4}, cw[4] = {3, 2, 3, 2}, cb[1] = {3};
        nat_tensor *cv[3] = {grid(&rng, 4, cx), grid(&rng, 4, cw), grid(&rng, 1, cb)};
        a.kind = 2;
        snprintf(what, sizeof what, "conv2d %s", prec_name(p));
        th_gradcheck(what, gc_fn, &a, 3, cv, 0x1p-6, 1e-2);
        for (int i = 0; i < 3; i++) {
            if (i < 2)
                nat_tensor_free(mm[i]);
            nat_tensor_free(li[i]);
            nat_tensor_free(cv[i]);
        }
    }
}
END_TEST

/* ---- loss scaling ---- */

START_TEST(loss_scaler_rules)
{
    nat_loss_scaler s;
    nat_loss_scaler_init(&s, 0, 0);
    ck_assert_float_eq(nat_loss_scaler_scale(&s), 65536.0f);
    ck_assert_int_eq(s.growth_interval, 2000);

    /* Unscale divides by the scale; the finite check sees inf and NaN. */
    int64_t sh[1] = {3};
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_tensor *p1 = th_randn(&rng, 1, sh, 1.0f, true), *p2 = th_randn(&rng, 1, sh, 1.0f, true);
    nat_tensor *ps[3] = {p1, NULL, p2};
    TH_OK(nat_tensor_new(&p1->grad, NAT_F32, NAT_CPU, 1, sh));
    TH_OK(nat_tensor_new(&p2->grad, NAT_F32, NAT_CPU, 1, sh));
    float *g1 = nat_tensor_f32(p1->grad), *g2 = nat_tensor_f32(p2->grad);
    g1[0] = 65536.0f, g1[1] = -131072.0f, g1[2] = 1.0f;
    g2[0] = 0.0f, g2[1] = 3.0f * 65536.0f, g2[2] = 0x1p-10f;
    bool finite;
    TH_OK(nat_loss_scaler_unscale(&s, ps, 3, &finite));
    ck_assert(finite);
    ck_assert_float_eq(g1[0], 1.0f);
    ck_assert_float_eq(g1[1], -2.0f);
    ck_assert_float_eq(g1[2], 0x1p-16f);
    ck_assert_float_eq(g2[1], 3.0f);
    ck_assert_float_eq(g2[2], 0x1p-26f);
    g2[0] = INFINITY;
    TH_OK(nat_loss_scaler_unscale(&s, ps, 3, &finite));
    ck_assert(!finite);
    g2[0] = NAN;
    TH_OK(nat_loss_scaler_unscale(&s, ps, 3, &finite));
    ck_assert(!finite);

    /* Skip and halve; double after growth_interval clean steps; a failure resets the count. */
    ck_assert(!nat_loss_scaler_update(&s, false));
    ck_assert_float_eq(s.scale, 32768.0f);
    ck_assert_int_eq(s.skipped, 1);
    nat_loss_scaler_init(&s, 8.0f, 3);
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert_float_eq(s.scale, 8.0f);
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert_float_eq(s.scale, 16.0f);
    ck_assert_int_eq(s.good_steps, 0);
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert(!nat_loss_scaler_update(&s, false));
    ck_assert_float_eq(s.scale, 8.0f);
    ck_assert_int_eq(s.good_steps, 0);
    ck_assert_int_eq(s.skipped, 1);
    for (int i = 0; i < 2; i++)
        ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert_float_eq(s.scale, 8.0f); /* only 2 clean steps since the failure */
    /* Never grows into inf. */
    nat_loss_scaler_init(&s, FLT_MAX, 1);
    ck_assert(nat_loss_scaler_update(&s, true));
    ck_assert_float_eq(s.scale, FLT_MAX);
    s.scale = 0.0f;
    th_expect_error(nat_loss_scaler_unscale(&s, ps, 3, &finite), NAT_ERR_INVALID_ARG, "scale", NULL);
    nat_tensor_free(p1), nat_tensor_free(p2);
}
END_TEST

/* Why f16 needs it: output gradients of 1e-8 flush to zero in an f16 GEMM, and survive when scaled. */
START_TEST(loss_scaling_keeps_small_f16_gradients)
{
    int64_t as[2] = {4, 8}, bs[2] = {8, 3};
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    nat_tensor *a = th_randn(&rng, 2, as, 1.0f, true), *b = th_randn(&rng, 2, bs, 1.0f, false);
    double norms[2];
    for (int scaled = 0; scaled < 2; scaled++) {
        nat_loss_scaler s;
        nat_loss_scaler_init(&s, 0, 0);
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        nat_ctx_set_precision(ctx, NAT_PREC_F16);
        nat_tensor *y, *l;
        TH_OK(nat_matmul(ctx, a, b, &y));
        TH_OK(nat_sum(ctx, y, &l));
        TH_OK(nat_scale(ctx, l, scaled ? 1e-8f * s.scale : 1e-8f, &l)); /* a loss whose gradients are ~1e-8 */
        nat_zero_grad(a);
        TH_OK(nat_backward(ctx, l));
        nat_tensor *ps[1] = {a};
        bool finite = true;
        if (scaled)
            TH_OK(nat_loss_scaler_unscale(&s, ps, 1, &finite));
        ck_assert(finite);
        double n2 = 0;
        for (int64_t i = 0; i < 32; i++)
            n2 += (double)nat_tensor_f32(a->grad)[i] * nat_tensor_f32(a->grad)[i];
        norms[scaled] = sqrt(n2);
        nat_ctx_free(ctx);
    }
    ck_assert_msg(norms[0] == 0.0, "unscaled f16 gradient norm %g: expected the 1e-8 gradients to flush to 0", norms[0]);
    ck_assert_msg(norms[1] > 1e-8, "scaled f16 gradient norm %g: expected them to survive", norms[1]);
    nat_tensor_free(a), nat_tensor_free(b);
}
END_TEST

/* A tiny MLP (linear 16->32, GELU, linear 32->4) on a separable 4-class problem, AdamW, f16 autocast and
 * the loss scaler starting at 2^30: its first output gradients overflow f16 (inf), those steps are
 * skipped and the scale halves until they fit; then the loss falls. */
START_TEST(f16_training_with_loss_scaler)
{
    nat_rng rng;
    nat_rng_seed(&rng, 99);
    const int NB = 32, D = 16, H = 32, C = 4, STEPS = 60;
    int64_t w1s[2] = {H, D}, b1s[1] = {H}, w2s[2] = {C, H}, b2s[1] = {C}, xs[2] = {NB, D};
    nat_tensor *w1 = th_randn(&rng, 2, w1s, 0.25f, true), *b1 = th_randn(&rng, 1, b1s, 0.0f, true);
    nat_tensor *w2 = th_randn(&rng, 2, w2s, 0.25f, true), *b2 = th_randn(&rng, 1, b2s, 0.0f, true);
    nat_tensor *params[4] = {w1, b1, w2, b2};
    nat_optim *opt;
    nat_optim_config oc = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    TH_OK(nat_optim_new(&opt, &oc));
    TH_OK(nat_optim_add_group(opt, params, 4, 0.0f));
    /* Data: class c has its mean at +2 on features 4c..4c+3. */
    float *X = malloc((size_t)(NB * D) * sizeof *X);
    int32_t labels[32];
    for (int i = 0; i < NB; i++) {
        labels[i] = i % C;
        for (int j = 0; j < D; j++)
            X[i * D + j] = nat_rng_normal(&rng) * 0.5f + (j / 4 == labels[i] ? 2.0f : 0.0f);
    }
    nat_tensor *x = th_from(X, 2, xs, false);
    nat_loss_scaler s;
    nat_loss_scaler_init(&s, 0x1p30f, 10);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_precision(ctx, NAT_PREC_F16);
    double first = 0, last = 0;
    int taken = 0, grew = 0;
    float min_scale = s.scale;
    for (int step = 0; step < STEPS; step++) {
        nat_tensor *h, *a, *logits, *loss;
        TH_OK(nat_linear(ctx, x, w1, b1, &h));
        TH_OK(nat_gelu(ctx, h, &a));
        TH_OK(nat_linear(ctx, a, w2, b2, &logits));
        TH_OK(nat_cross_entropy(ctx, logits, labels, 0.0f, &loss));
        float lv = nat_tensor_f32(loss)[0];
        ck_assert(isfinite(lv));
        if (step == 0)
            first = lv;
        last = lv;
        TH_OK(nat_scale(ctx, loss, nat_loss_scaler_scale(&s), &loss));
        TH_OK(nat_backward(ctx, loss));
        nat_ctx_reset(ctx);
        bool finite;
        TH_OK(nat_loss_scaler_unscale(&s, params, 4, &finite));
        float before = s.scale;
        if (nat_loss_scaler_update(&s, finite)) {
            TH_OK(nat_optim_step(opt, 1e-2f));
            taken++;
        }
        grew += s.scale > before;
        if (s.scale < min_scale)
            min_scale = s.scale;
        nat_optim_zero_grad(opt);
    }
    fprintf(stderr, "f16_training_with_loss_scaler: loss %.4f -> %.4f, %d of %d steps taken, %lld skipped, lowest scale "
                    "2^%d, final 2^%d, %d growth(s)\n",
            first, last, taken, STEPS, (long long)s.skipped, (int)log2f(min_scale), (int)log2f(s.scale), grew);
    ck_assert_msg(s.skipped >= 1, "no step was skipped from a scale of 2^30");
    ck_assert_msg(min_scale <= 0x1p22f, "the scale never came down (lowest %g)", (double)min_scale);
    ck_assert_int_eq(taken + s.skipped, STEPS);
    ck_assert_msg(grew >= 1, "the scale never grew back after 10 clean steps");
    ck_assert_msg(last < 0.5 * first, "loss fell only from %.4f to %.4f", first, last);
    nat_ctx_free(ctx);
    nat_optim_free(opt);
    nat_tensor_free(x);
    free(X);
    for (int i = 0; i < 4; i++)
        nat_tensor_free(params[i]);
}
END_TEST

/* ---- CUDA vs the CPU emulation ---- */

static const nat_device GPU = {NAT_DEV_CUDA, 0};

static void gpu_compare(const char *what, nat_precision p, op_fn f, const void *user, int n_in, nat_tensor **in,
                        const bool *grad, double tol)
{
    nat_rng rng;
    nat_rng_seed(&rng, 31);
    nat_ctx *probe;
    nat_tensor *y0;
    TH_OK(nat_ctx_new(&probe, NAT_CPU));
    nat_ctx_set_grad_enabled(probe, false);
    TH_OK(f(probe, in, user, &y0));
    int64_t ny = nat_tensor_numel(y0);
    nat_ctx_free(probe);
    float *R = malloc((size_t)ny * sizeof *R);
    nat_rng_fill_normal(&rng, R, (size_t)ny, 0.0f, 1.0f);
    float *yc, *yg, *gc[4], *gg[4];
    int64_t n;
    run_prec(NAT_CPU, p, f, user, n_in, in, grad, R, &yc, &n, gc);
    run_prec(GPU, p, f, user, n_in, in, grad, R, &yg, &n, gg);
    char msg[128];
    snprintf(msg, sizeof msg, "%s %s: cuda vs cpu emulation, forward", what, prec_name(p));
    th_assert_close_f(yg, yc, ny, tol, msg);
    for (int i = 0; i < n_in; i++) {
        if (gc[i]) {
            snprintf(msg, sizeof msg, "%s %s: cuda vs cpu emulation, gradient %d", what, prec_name(p), i);
            th_assert_close_f(gg[i], gc[i], nat_tensor_numel(in[i]), tol, msg);
        }
        free(gc[i]), free(gg[i]);
    }
    free(yc), free(yg), free(R);
}

START_TEST(gpu_vs_cpu_emulation)
{
    nat_rng rng;
    nat_rng_seed(&rng, 41);
    for (nat_precision p = NAT_PREC_BF16; p <= NAT_PREC_F16; p++) {
        int64_t as[3] = {3, 17, 64}, bs[3] = {3, 64, 24}, bs2[2] = {64, 24};
        nat_tensor *mm[2] = {th_randn(&rng, 3, as, 1.0f, false), th_randn(&rng, 3, bs, 1.0f, false)};
        bool g2[2] = {true, true}, g3[3] = {true, true, true};
        /* GEMMs: same operand bits, f32 accumulation on both sides: only the summation order differs. */
        gpu_compare("matmul batched", p, f_matmul, NULL, 2, mm, g2, 1e-5);
        nat_tensor_free(mm[1]);
        mm[1] = th_randn(&rng, 2, bs2, 1.0f, false);
        gpu_compare("matmul shared b", p, f_matmul, NULL, 2, mm, g2, 1e-5);
        int64_t xs[2] = {50, 96}, ws[2] = {40, 96}, b1[1] = {40};
        nat_tensor *li[3] = {th_randn(&rng, 2, xs, 1.0f, false), th_randn(&rng, 2, ws, 0.2f, false),
                             th_randn(&rng, 1, b1, 1.0f, false)};
        gpu_compare("linear", p, f_linear, NULL, 3, li, g3, 1e-5);
        /* Convolutions: cuDNN's result is 2-byte before it is widened: half an ulp of the format. */
        int64_t cx[4] = {2, 8, 14, 14}, cw[4] = {16, 8, 3, 3}, cb[1] = {16};
        nat_tensor *cv[3] = {th_randn(&rng, 4, cx, 1.0f, false), th_randn(&rng, 4, cw, 0.2f, false),
                             th_randn(&rng, 1, cb, 1.0f, false)};
        conv_args ca = {2, 2, 1, 1};
        gpu_compare("conv2d", p, f_conv, &ca, 3, cv, g3, p == NAT_PREC_BF16 ? 8e-3 : 1e-3);
        for (int i = 0; i < 3; i++) {
            if (i < 2)
                nat_tensor_free(mm[i]);
            nat_tensor_free(li[i]);
            nat_tensor_free(cv[i]);
        }
    }
    /* The loss scaler on device gradients. */
    int64_t sh[1] = {4};
    nat_tensor *p1;
    TH_OK(nat_tensor_new(&p1, NAT_F32, GPU, 1, sh));
    nat_set_requires_grad(p1, true);
    float gv[4] = {65536.0f, 2.0f, -65536.0f, 0.0f};
    nat_tensor *gh = th_from(gv, 1, sh, false);
    TH_OK(nat_tensor_to(NULL, gh, GPU, &p1->grad));
    nat_loss_scaler s;
    nat_loss_scaler_init(&s, 0, 0);
    bool finite;
    nat_tensor *ps[1] = {p1};
    TH_OK(nat_loss_scaler_unscale(&s, ps, 1, &finite));
    ck_assert(finite);
    nat_tensor *back;
    TH_OK(nat_tensor_to(NULL, p1->grad, NAT_CPU, &back));
    ck_assert_float_eq(nat_tensor_f32(back)[0], 1.0f);
    ck_assert_float_eq(nat_tensor_f32(back)[2], -1.0f);
    nat_tensor_free(back);
    gv[3] = INFINITY;
    nat_tensor_free(gh);
    gh = th_from(gv, 1, sh, false);
    TH_OK(nat_tensor_copy(p1->grad, gh));
    TH_OK(nat_loss_scaler_unscale(&s, ps, 1, &finite));
    ck_assert(!finite);
    nat_tensor_free(gh);
    nat_tensor_free(p1);
}
END_TEST

int main(int argc, char **argv)
{
    /* Two ctest entries: the CPU cases (test_mixed_precision) and, with the argument "gpu", the GPU case
     * alone (test_mixed_precision_gpu), so that a machine without a GPU reports the one passed and only
     * the other skipped. */
    const bool gpu = argc > 1 && !strcmp(argv[1], "gpu");
    Suite *s = suite_create(gpu ? "mixed_precision_gpu" : "mixed_precision");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"rounding_bf16", rounding_bf16},
        {"rounding_f16", rounding_f16},
        {"matmul_linear_autocast", matmul_linear_autocast},
        {"conv2d_autocast", conv2d_autocast},
        {"backward_keeps_forward_precision", backward_keeps_forward_precision},
        {"gradcheck_autocast", gradcheck_autocast},
        {"loss_scaler_rules", loss_scaler_rules},
        {"loss_scaling_keeps_small_f16_gradients", loss_scaling_keeps_small_f16_gradients},
        {"f16_training_with_loss_scaler", f16_training_with_loss_scaler},
    };
    if (!gpu) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            TCase *tc = tcase_create(cases[i].name);
            tcase_add_test(tc, cases[i].test);
            tcase_set_timeout(tc, 120);
            suite_add_tcase(s, tc);
        }
        return th_run_suite(s);
    }
    /* The GPU case only where it can run; it needs CUDA initialised in this process (no fork). */
    if (!nat_cuda_built()) {
        th_skip_case("gpu_vs_cpu_emulation", "nat was built without CUDA; no GPU case ran (the CPU cases run in test_mixed_precision)");
    } else if (nat_cuda_device_count() == 0) {
        th_skip_case("gpu_vs_cpu_emulation", "no CUDA device present; no GPU case ran (the CPU cases run in test_mixed_precision)");
    } else {
        setenv("CK_FORK", "no", 1);
        TCase *tc = tcase_create("gpu_vs_cpu_emulation");
        tcase_add_test(tc, gpu_vs_cpu_emulation);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
