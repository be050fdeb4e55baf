/* tests/test_layers.c — the modules of include/nat/layers.h: the parameter registry (names, order,
 * no-decay flags), init distributions, each module against a plain composition of ops or a plain-loop
 * reference, finite-difference gradient checks of every parameter on tiny shapes, Dropout/DropPath
 * statistics, and NeighborhoodAttention 1-D/2-D/3-D against a double-precision reference of NATTEN's
 * module written from docs/design.md §2 (padding of maps smaller than kernel·dilation before the qkv
 * projection included). */
#include <math.h>
#include <omp.h> /* omp_set_num_threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/layers.h"
#include "nat/ops.h"
#include "support/harness.h"

/* ---- helpers ---- */

/* Finite-difference checks run thousands of tiny forwards, where OpenMP fork/join costs more than the
 * work and, on a loaded machine, a preempted worker stalls every join; they run on one thread (Check
 * forks each test, so this stays inside the test). The reference comparisons keep all threads. */
static void single_thread(void) { omp_set_num_threads(1); }

static void fill_randn(nat_rng *rng, nat_tensor *t, float scale)
{
    nat_rng_fill_normal(rng, nat_tensor_f32(t), (size_t)nat_tensor_numel(t), 0.0f, scale);
}

/* Runs a module output from fresh contexts twice to compare two builders bit for bit. */
static float *run_out(th_fn f, void *user, nat_tensor **in, int64_t *n)
{
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(f(ctx, in, user, &y));
    *n = nat_tensor_numel(y);
    float *v = malloc((size_t)*n * sizeof *v);
    TH_OK(nat_tensor_copy_to(y, v, *n));
    nat_ctx_free(ctx);
    return v;
}

static void stats(const nat_tensor *t, double *mean, double *std, double *maxabs)
{
    const float *v = nat_tensor_f32(t);
    int64_t n = nat_tensor_numel(t);
    double s = 0, s2 = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        s2 += (double)v[i] * v[i];
        m = fmax(m, fabs(v[i]));
    }
    *mean = s / (double)n;
    *std = sqrt(fmax(0.0, s2 / (double)n - *mean * *mean));
    *maxabs = m;
}

/* ---- parameter registry ---- */

START_TEST(param_list_names_and_flags)
{
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_linear_layer lin;
    nat_layernorm_layer ln;
    TH_OK(nat_linear_layer_init(&lin, 4, 3, true, 0.02f, &rng));
    TH_OK(nat_layernorm_layer_init(&ln, 3, 1e-5f));
    nat_param_list l;
    nat_param_list_init(&l);
    TH_OK(nat_linear_layer_params(&lin, &l, "blocks.0.fc"));
    TH_OK(nat_layernorm_layer_params(&ln, &l, ""));
    ck_assert_int_eq(l.count, 4);
    const char *want[4] = {"blocks.0.fc.weight", "blocks.0.fc.bias", "weight", "bias"};
    const bool no_decay[4] = {false, true, true, true};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(l.items[i].name, want[i]);
        ck_assert_int_eq(l.items[i].no_decay, no_decay[i]);
        ck_assert_str_eq(l.items[i].tensor->name, want[i]);
    }
    ck_assert_ptr_eq(nat_param_list_find(&l, "blocks.0.fc.bias")->tensor, lin.bias);
    ck_assert_ptr_null(nat_param_list_find(&l, "blocks.0.fc"));
    ck_assert_int_eq(nat_param_list_numel(&l), 12 + 3 + 3 + 3);
    th_expect_error(nat_param_list_add(&l, "blocks.0.fc", "weight", lin.weight, false), NAT_ERR_INVALID_ARG,
                    "blocks.0.fc.weight", "already");
    nat_param_list_clear(&l);
    ck_assert_int_eq(l.count, 0);
    ck_assert_ptr_null(lin.weight->name);
    nat_linear_layer_free(&lin);
    nat_layernorm_layer_free(&ln);
}
END_TEST

/* ---- init ---- */

START_TEST(init_distributions)
{
    nat_rng rng;
    nat_rng_seed(&rng, 2);
    double mean, std, maxabs;
    /* Truncated normal 0.02 at ±2σ: std of the truncated law is 0.02·0.8796. */
    nat_linear_layer lin;
    TH_OK(nat_linear_layer_init(&lin, 256, 384, true, 0.02f, &rng));
    stats(lin.weight, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= 0.04 + 1e-7 && fabs(mean) < 1e-3 && fabs(std - 0.02 * 0.8796) < 5e-4,
                  "trunc normal: mean %g std %g max %g", mean, std, maxabs);
    stats(lin.bias, &mean, &std, &maxabs);
    ck_assert_msg(maxabs == 0.0, "linear bias should start at 0, max %g", maxabs);
    nat_linear_layer_free(&lin);

    /* PyTorch's default: uniform(±1/sqrt(in)) for weight and bias; std of U(-b, b) is b/√3. */
    TH_OK(nat_linear_layer_init(&lin, 100, 300, true, 0.0f, &rng));
    stats(lin.weight, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= 0.1 && fabs(std - 0.1 / sqrt(3.0)) < 2e-3, "default linear: std %g max %g", std, maxabs);
    stats(lin.bias, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= 0.1 && maxabs > 0.05, "default linear bias: max %g", maxabs);
    nat_linear_layer_free(&lin);

    nat_conv2d_layer conv;
    TH_OK(nat_conv2d_layer_init(&conv, 16, 64, 3, 2, 1, true, &rng));
    double bound = 1.0 / sqrt(16.0 * 9.0);
    stats(conv.weight, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= bound && fabs(std - bound / sqrt(3.0)) < 2e-3, "conv weight: std %g max %g (bound %g)", std,
                  maxabs, bound);
    stats(conv.bias, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= bound && maxabs > 0.5 * bound, "conv bias: max %g (bound %g)", maxabs, bound);
    nat_conv2d_layer_free(&conv);

    nat_layernorm_layer ln;
    TH_OK(nat_layernorm_layer_init(&ln, 7, 1e-5f));
    for (int i = 0; i < 7; i++) {
        ck_assert_float_eq(nat_tensor_f32(ln.weight)[i], 1.0f);
        ck_assert_float_eq(nat_tensor_f32(ln.bias)[i], 0.0f);
    }
    nat_layernorm_layer_free(&ln);

    nat_na_layer na;
    nat_na_layer_desc d = nat_na_layer_desc_make(2, 64, 4, 7, 1);
    TH_OK(nat_na_layer_init(&na, &d, 0.02f, &rng));
    ck_assert_int_eq(na.rpb->ndim, 3);
    ck_assert(na.rpb->shape[0] == 4 && na.rpb->shape[1] == 13 && na.rpb->shape[2] == 13);
    stats(na.rpb, &mean, &std, &maxabs);
    ck_assert_msg(maxabs <= 0.04 + 1e-7 && fabs(std - 0.02 * 0.8796) < 2e-3, "rpb: std %g max %g", std, maxabs);
    nat_na_layer_free(&na);

    /* Same seed, same values. */
    nat_linear_layer a, b;
    nat_rng r1, r2;
    nat_rng_seed(&r1, 9);
    nat_rng_seed(&r2, 9);
    TH_OK(nat_linear_layer_init(&a, 5, 6, true, 0.02f, &r1));
    TH_OK(nat_linear_layer_init(&b, 5, 6, true, 0.02f, &r2));
    ck_assert(!memcmp(nat_tensor_f32(a.weight), nat_tensor_f32(b.weight), 30 * sizeof(float)));
    nat_linear_layer_free(&a);
    nat_linear_layer_free(&b);
}
END_TEST

/* ---- Linear, Conv2d, LayerNorm ---- */

static nat_status f_linear(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_linear_layer_forward(ctx, u, in[0], out);
}

static nat_status f_linear_op(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const nat_linear_layer *m = u;
    return nat_linear(ctx, in[0], m->weight, m->bias, out);
}

static nat_status f_conv(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_conv2d_layer_forward(ctx, u, in[0], out);
}

static nat_status f_layernorm(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_layernorm_layer_forward(ctx, u, in[0], out);
}

START_TEST(linear_conv_layernorm)
{
    single_thread();
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    nat_linear_layer lin;
    TH_OK(nat_linear_layer_init(&lin, 5, 4, true, 0.0f, &rng));
    int64_t xs[3] = {2, 3, 5};
    nat_tensor *x = th_randn(&rng, 3, xs, 1.0f, true);
    nat_tensor *in[3] = {x, lin.weight, lin.bias};
    int64_t n1, n2;
    float *y1 = run_out(f_linear, &lin, in, &n1), *y2 = run_out(f_linear_op, &lin, in, &n2);
    ck_assert_int_eq(n1, 2 * 3 * 4);
    ck_assert(!memcmp(y1, y2, (size_t)n1 * sizeof(float)));
    free(y1);
    free(y2);
    th_gradcheck("linear layer", f_linear, &lin, 3, in, 1e-2, 2e-3);
    nat_linear_layer_free(&lin);
    nat_tensor_free(x);

    nat_conv2d_layer conv;
    TH_OK(nat_conv2d_layer_init(&conv, 2, 3, 3, 2, 1, true, &rng));
    int64_t cs[4] = {2, 2, 5, 4};
    x = th_randn(&rng, 4, cs, 1.0f, true);
    nat_tensor *cin[3] = {x, conv.weight, conv.bias};
    float *yc = run_out(f_conv, &conv, cin, &n1);
    ck_assert_int_eq(n1, 2 * 3 * 3 * 2); /* 5x4 -> 3x2 at stride 2, pad 1 */
    free(yc);
    th_gradcheck("conv2d layer", f_conv, &conv, 3, cin, 1e-2, 2e-3);
    nat_conv2d_layer_free(&conv);
    nat_tensor_free(x);

    /* LayerNorm against a plain loop, with non-trivial affine parameters. */
    nat_layernorm_layer ln;
    TH_OK(nat_layernorm_layer_init(&ln, 6, 1e-5f));
    fill_randn(&rng, ln.weight, 1.0f);
    fill_randn(&rng, ln.bias, 1.0f);
    int64_t ls[2] = {4, 6};
    x = th_randn(&rng, 2, ls, 2.0f, true);
    nat_tensor *lin_[3] = {x, ln.weight, ln.bias};
    float *yl = run_out(f_layernorm, &ln, lin_, &n1);
    double want[24];
    const float *xv = nat_tensor_f32(x), *g = nat_tensor_f32(ln.weight), *bb = nat_tensor_f32(ln.bias);
    for (int r = 0; r < 4; r++) {
        double mu = 0, var = 0;
        for (int c = 0; c < 6; c++)
            mu += xv[r * 6 + c] / 6.0;
        for (int c = 0; c < 6; c++)
            var += (xv[r * 6 + c] - mu) * (xv[r * 6 + c] - mu) / 6.0;
        for (int c = 0; c < 6; c++)
            want[r * 6 + c] = (xv[r * 6 + c] - mu) / sqrt(var + 1e-5) * g[c] + bb[c];
    }
    th_assert_close(yl, want, 24, 1e-5, "layernorm layer vs plain loop");
    free(yl);
    th_gradcheck("layernorm layer", f_layernorm, &ln, 3, lin_, 1e-2, 3e-3);
    nat_layernorm_layer_free(&ln);
    nat_tensor_free(x);
}
END_TEST

/* ---- Mlp ---- */

static nat_status f_mlp(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_mlp_layer_forward(ctx, u, in[0], false, NULL, out);
}

static nat_status f_mlp_ops(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const nat_mlp_layer *m = u;
    nat_tensor *h;
    NAT_TRY(nat_linear(ctx, in[0], m->fc1.weight, m->fc1.bias, &h));
    NAT_TRY(nat_gelu(ctx, h, &h));
    return nat_linear(ctx, h, m->fc2.weight, m->fc2.bias, out);
}

START_TEST(mlp_vs_composition)
{
    single_thread();
    nat_rng rng;
    nat_rng_seed(&rng, 4);
    nat_mlp_layer mlp;
    TH_OK(nat_mlp_layer_init(&mlp, 4, 12, 4, 0.0f, 0.0f, &rng));
    fill_randn(&rng, mlp.fc1.bias, 0.5f);
    fill_randn(&rng, mlp.fc2.bias, 0.5f);
    nat_param_list l;
    nat_param_list_init(&l);
    TH_OK(nat_mlp_layer_params(&mlp, &l, "mlp"));
    const char *names[4] = {"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
    ck_assert_int_eq(l.count, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(l.items[i].name, names[i]);
    ck_assert(mlp.fc1.weight->shape[0] == 12 && mlp.fc1.weight->shape[1] == 4);
    int64_t xs[3] = {2, 3, 4};
    nat_tensor *x = th_randn(&rng, 3, xs, 1.0f, true);
    nat_tensor *in[5] = {x, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias};
    int64_t n1, n2;
    float *a = run_out(f_mlp, &mlp, in, &n1), *b = run_out(f_mlp_ops, &mlp, in, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert(!memcmp(a, b, (size_t)n1 * sizeof(float)));
    free(a);
    free(b);
    th_gradcheck("mlp (x, fc1, fc2)", f_mlp, &mlp, 5, in, 1e-2, 3e-3);
    nat_param_list_clear(&l);
    nat_mlp_layer_free(&mlp);
    nat_tensor_free(x);
}
END_TEST

/* ---- Dropout, DropPath ---- */

START_TEST(dropout_and_drop_path_statistics)
{
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const int64_t N = 4000;
    int64_t s[3] = {N, 2, 3};
    nat_tensor *ones;
    TH_OK(nat_tensor_new(&ones, NAT_F32, NAT_CPU, 3, s));
    TH_OK(nat_tensor_fill(ones, 1.0f));
    nat_drop_path_layer dp = {0.3f};
    nat_tensor *y;
    TH_OK(nat_drop_path_layer_forward(ctx, &dp, ones, false, &rng, &y));
    ck_assert_ptr_eq(y, ones); /* identity at evaluation */
    TH_OK(nat_drop_path_layer_forward(ctx, &dp, ones, true, &rng, &y));
    const float *v = nat_tensor_f32(y);
    int64_t dropped = 0, bad_scale = 0, partial = 0;
    for (int64_t i = 0; i < N; i++) {
        float first = v[i * 6];
        bad_scale += !(first == 0.0f || fabsf(first - 1.0f / 0.7f) < 1e-6f);
        for (int j = 1; j < 6; j++)
            partial += v[i * 6 + j] != first;
        dropped += first == 0.0f;
    }
    ck_assert_msg(!bad_scale, "%ld samples neither dropped nor scaled by 1/(1-p)", (long)bad_scale);
    ck_assert_msg(!partial, "drop-path must drop whole samples (%ld values differ within a sample)", (long)partial);
    /* Binomial(4000, 0.3): σ ≈ 29; allow 5σ. */
    ck_assert_msg(llabs(dropped - 1200) < 145, "drop-path dropped %ld of %ld samples at p 0.3", (long)dropped, (long)N);

    nat_dropout_layer dr = {0.25f};
    TH_OK(nat_dropout_layer_forward(ctx, &dr, ones, true, &rng, &y));
    v = nat_tensor_f32(y);
    dropped = bad_scale = 0;
    for (int64_t i = 0; i < N * 6; i++) {
        bad_scale += !(v[i] == 0.0f || fabsf(v[i] - 1.0f / 0.75f) < 1e-6f);
        dropped += v[i] == 0.0f;
    }
    ck_assert_msg(!bad_scale, "dropout: %ld values neither dropped nor scaled by 1/(1-p)", (long)bad_scale);
    ck_assert_msg(llabs(dropped - 6000) < 5 * 67, "dropout dropped %ld of %ld at p 0.25", (long)dropped, (long)(N * 6));
    nat_ctx_free(ctx);
    nat_tensor_free(ones);
}
END_TEST

/* ---- NeighborhoodAttention: reference ---- */

/* Window of query i on an axis of length L (docs/design.md §2): first key position (in units of the
 * sub-grid) and the rpb start; keys are (s + t)·d + g. */
static void window(int64_t i, int64_t L, int k, int d, int causal, int64_t *s, int64_t *rpb0)
{
    int64_t g = i % d, p = i / d, Lg = (L - g + d - 1) / d, r = k / 2;
    if (causal) {
        *s = p - k + 1 > 0 ? p - k + 1 : 0;
    } else {
        *s = p - r < 0 ? 0 : p - r;
        if (*s > Lg - k)
            *s = Lg - k;
    }
    *rpb0 = (k - 1) + *s - p;
}

/* The module in double: x [B, *sp, C] -> y [B, *sp, C], from the module's own parameters. */
static void ref_module(const nat_na_layer *m, const nat_tensor *xt, double *y)
{
    const nat_na_layer_desc *d = &m->desc;
    const int nd = d->ndim;
    const int64_t C = d->dim, H = d->heads, hd = C / H, B = xt->shape[0];
    int64_t sp[3] = {1, 1, 1}, P[3] = {1, 1, 1}, S = 1, Sp = 1;
    for (int a = 0; a < nd; a++) {
        sp[a] = xt->shape[1 + a];
        int64_t win = (int64_t)d->kernel[a] * d->dilation[a];
        P[a] = sp[a] < win ? win : sp[a];
        S *= sp[a];
        Sp *= P[a];
    }
    const float *x = nat_tensor_f32(xt), *W = nat_tensor_f32(m->qkv.weight), *Wp = nat_tensor_f32(m->proj.weight),
                *bp = nat_tensor_f32(m->proj.bias);
    const float *bq = m->qkv.bias ? nat_tensor_f32(m->qkv.bias) : NULL, *rpb = m->rpb ? nat_tensor_f32(m->rpb) : NULL;
    double scale = d->scale > 0 ? d->scale : 1.0 / sqrt((double)hd);
    double *qkv = calloc((size_t)(B * Sp * 3 * C), sizeof *qkv), *o = calloc((size_t)(B * Sp * C), sizeof *o);
    /* qkv over the zero-padded map: padded tokens get the bias. */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < Sp; t++) {
            int64_t c0 = t / (P[1] * P[2]), c1 = (t / P[2]) % P[1], c2 = t % P[2];
            bool inside = c0 < sp[0] && c1 < sp[1] && c2 < sp[2];
            const float *xr = x + (b * S + (c0 * sp[1] + c1) * sp[2] + c2) * C;
            for (int64_t j = 0; j < 3 * C; j++) {
                double acc = bq ? bq[j] : 0.0;
                for (int64_t c = 0; inside && c < C; c++)
                    acc += (double)xr[c] * W[j * C + c];
                qkv[(b * Sp + t) * 3 * C + j] = acc;
            }
        }
    int64_t K = 1, kk[3] = {1, 1, 1}, R[3] = {1, 1, 1};
    for (int a = 0; a < nd; a++) {
        kk[a] = d->kernel[a];
        R[a] = 2 * d->kernel[a] - 1;
        K *= kk[a];
    }
    double *logit = malloc((size_t)K * sizeof *logit);
    int64_t *key = malloc((size_t)K * sizeof *key);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < Sp; t++) {
                int64_t qi[3] = {t / (P[1] * P[2]), (t / P[2]) % P[1], t % P[2]}, s[3] = {0}, r0[3] = {0};
                for (int a = 0; a < nd; a++)
                    window(qi[a], P[a], d->kernel[a], d->dilation[a], d->causal[a], &s[a], &r0[a]);
                double mx = -INFINITY;
                for (int64_t slot = 0; slot < K; slot++) {
                    int64_t ti[3] = {slot / (kk[1] * kk[2]), (slot / kk[2]) % kk[1], slot % kk[2]}, kp[3] = {0, 0, 0};
                    bool valid = true;
                    for (int a = 0; a < nd; a++) {
                        int64_t dd = d->dilation[a];
                        kp[a] = (s[a] + ti[a]) * dd + qi[a] % dd;
                        if (d->causal[a] && kp[a] > qi[a])
                            valid = false;
                    }
                    key[slot] = (kp[0] * P[1] + kp[1]) * P[2] + kp[2];
                    if (!valid) {
                        logit[slot] = -INFINITY;
                        continue;
                    }
                    const double *q = qkv + (b * Sp + t) * 3 * C + h * hd, *kv = qkv + (b * Sp + key[slot]) * 3 * C + C + h * hd;
                    double dot = 0;
                    for (int64_t e = 0; e < hd; e++)
                        dot += q[e] * kv[e];
                    double bias = 0;
                    if (rpb)
                        bias = rpb[((h * R[0] + r0[0] + ti[0]) * R[1] + (nd > 1 ? r0[1] + ti[1] : 0)) * R[2] +
                                   (nd > 2 ? r0[2] + ti[2] : 0)];
                    logit[slot] = scale * dot + bias;
                    mx = fmax(mx, logit[slot]);
                }
                double z = 0;
                for (int64_t slot = 0; slot < K; slot++)
                    z += exp(logit[slot] - mx);
                for (int64_t slot = 0; slot < K; slot++) {
                    double w = exp(logit[slot] - mx) / z;
                    if (w == 0)
                        continue;
                    const double *v = qkv + (b * Sp + key[slot]) * 3 * C + 2 * C + h * hd;
                    for (int64_t e = 0; e < hd; e++)
                        o[(b * Sp + t) * C + h * hd + e] += w * v[e];
                }
            }
    /* Crop, then proj. */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < S; t++) {
            int64_t c0 = t / (sp[1] * sp[2]), c1 = (t / sp[2]) % sp[1], c2 = t % sp[2];
            const double *orow = o + (b * Sp + (c0 * P[1] + c1) * P[2] + c2) * C;
            for (int64_t j = 0; j < C; j++) {
                double acc = bp[j];
                for (int64_t c = 0; c < C; c++)
                    acc += orow[c] * Wp[j * C + c];
                y[(b * S + t) * C + j] = acc;
            }
        }
    free(qkv);
    free(o);
    free(logit);
    free(key);
}

typedef struct na_case {
    const char *name;
    nat_na_layer_desc d;
    int64_t B, sp[3];
} na_case;

/* ndim, dim, heads, kernel, dilation, causal, qkv_bias, rpb, scale, attn_drop, proj_drop */
#define NA_DESC(nd, C, H, k0, k1, k2, d0, d1, d2, c0, qb, rp, sc) \
    {nd, C, H, {k0, k1, k2}, {d0, d1, d2}, {c0, 0, 0}, qb, rp, sc, 0.0f, 0.0f}

static const na_case na_cases[] = {
    {"2d 6x5 k3", NA_DESC(2, 8, 2, 3, 3, 3, 1, 1, 1, 0, true, true, 0.0f), 2, {6, 5, 1}},
    {"2d 7x9 k3 d2", NA_DESC(2, 6, 3, 3, 3, 3, 2, 2, 1, 0, true, true, 0.0f), 1, {7, 9, 1}},
    {"2d 5x5 k7 padded", NA_DESC(2, 4, 2, 7, 7, 7, 1, 1, 1, 0, true, true, 0.0f), 1, {5, 5, 1}},
    {"2d 3x6 k7 padded", NA_DESC(2, 4, 1, 7, 7, 7, 1, 1, 1, 0, true, true, 0.0f), 2, {3, 6, 1}},
    {"2d 4x9 k3 d3 pad H", NA_DESC(2, 4, 2, 3, 3, 3, 3, 3, 1, 0, true, true, 0.0f), 1, {4, 9, 1}},
    {"2d 6x6 k3x5 no rpb, no qkv bias, scale", NA_DESC(2, 6, 2, 3, 5, 3, 1, 1, 1, 0, false, false, 0.7f), 1, {6, 6, 1}},
    {"1d 9 k5 d2 padded", NA_DESC(1, 4, 2, 5, 3, 3, 2, 1, 1, 0, true, true, 0.0f), 2, {9, 1, 1}},
    {"1d 6 k3 causal", NA_DESC(1, 4, 1, 3, 3, 3, 1, 1, 1, 1, true, false, 0.0f), 1, {6, 1, 1}},
    {"3d 3x4x3 k3", NA_DESC(3, 4, 2, 3, 3, 3, 1, 1, 1, 0, true, true, 0.0f), 1, {3, 4, 3}},
    {"3d 2x3x5 k3 padded", NA_DESC(3, 2, 1, 3, 3, 3, 1, 1, 1, 0, true, true, 0.0f), 1, {2, 3, 5}},
};

/* Module with lively parameters (so attention is far from uniform) and an input. */
static void make_na(const na_case *c, uint64_t seed, nat_na_layer *m, nat_tensor **x)
{
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    TH_OK(nat_na_layer_init(m, &c->d, 0.0f, &rng));
    fill_randn(&rng, m->qkv.weight, 0.6f);
    if (m->qkv.bias)
        fill_randn(&rng, m->qkv.bias, 0.4f);
    if (m->rpb)
        fill_randn(&rng, m->rpb, 0.5f);
    int64_t xs[5] = {c->B};
    for (int a = 0; a < c->d.ndim; a++)
        xs[1 + a] = c->sp[a];
    xs[1 + c->d.ndim] = c->d.dim;
    *x = th_randn(&rng, c->d.ndim + 2, xs, 1.0f, true);
}

static nat_status f_na(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_na_layer_forward(ctx, u, in[0], false, NULL, out);
}

START_TEST(na_module_vs_reference)
{
    const na_case *c = &na_cases[_i];
    nat_na_layer m;
    nat_tensor *x;
    make_na(c, 600 + (uint64_t)_i, &m, &x);
    nat_tensor *in[1] = {x};
    int64_t n;
    float *y = run_out(f_na, &m, in, &n);
    ck_assert_int_eq(n, nat_tensor_numel(x)); /* the input's size, also when padded */
    double *want = malloc((size_t)n * sizeof *want);
    ref_module(&m, x, want);
    th_assert_close(y, want, n, 2e-5, c->name);
    free(y);
    free(want);
    nat_na_layer_free(&m);
    nat_tensor_free(x);
}
END_TEST

START_TEST(na_module_gradcheck)
{
    single_thread();
    const na_case *c = &na_cases[_i];
    nat_na_layer m;
    nat_tensor *x;
    make_na(c, 700 + (uint64_t)_i, &m, &x);
    nat_tensor *in[6] = {x, m.qkv.weight, m.qkv.bias, m.rpb, m.proj.weight, m.proj.bias};
    char what[96];
    snprintf(what, sizeof what, "NA module %s (x, qkv, rpb, proj)", c->name);
    th_gradcheck(what, f_na, &m, 6, in, 5e-3, 4e-3);
    nat_na_layer_free(&m);
    nat_tensor_free(x);
}
END_TEST

/* Attention dropout (training) takes the unfused path; the mask is made reproducible by restarting the
 * generator from the same state for every evaluation. */
typedef struct drop_user {
    nat_na_layer *m;
    nat_rng start;
} drop_user;

static nat_status f_na_drop(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    drop_user *du = u;
    nat_rng r = du->start;
    return nat_na_layer_forward(ctx, du->m, in[0], true, &r, out);
}

START_TEST(na_module_attention_dropout)
{
    single_thread();
    na_case c = na_cases[2]; /* padded 5x5, k7 */
    c.d.attn_drop = 0.3f;
    nat_na_layer m;
    nat_tensor *x;
    make_na(&c, 800, &m, &x);
    nat_tensor *in[6] = {x, m.qkv.weight, m.qkv.bias, m.rpb, m.proj.weight, m.proj.bias};
    drop_user du = {.m = &m};
    nat_rng_seed(&du.start, 801);
    th_gradcheck("NA module, unfused with attention dropout", f_na_drop, &du, 6, in, 1e-2, 4e-3);

    /* Out of training attn_drop changes nothing: equal to the reference without dropout. */
    int64_t n;
    float *y = run_out(f_na, &m, in, &n);
    double *want = malloc((size_t)n * sizeof *want);
    ref_module(&m, x, want);
    th_assert_close(y, want, n, 2e-5, "NA module with attn_drop, evaluation");
    /* In training the output differs (some weights dropped), but keeps its shape. */
    float *yd = run_out(f_na_drop, &du, in, &n);
    ck_assert_int_eq(n, nat_tensor_numel(x));
    ck_assert(th_max_rel_err(yd, want, n) > 1e-3);
    free(y);
    free(yd);
    free(want);
    nat_na_layer_free(&m);
    nat_tensor_free(x);
}
END_TEST

START_TEST(na_module_names_and_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 900);
    nat_na_layer m;
    nat_na_layer_desc d = nat_na_layer_desc_make(2, 8, 2, 3, 1);
    TH_OK(nat_na_layer_init(&m, &d, 0.02f, &rng));
    nat_param_list l;
    nat_param_list_init(&l);
    TH_OK(nat_na_layer_params(&m, &l, "levels.0.blocks.0.attn"));
    const char *names[5] = {"levels.0.blocks.0.attn.rpb", "levels.0.blocks.0.attn.qkv.weight",
                            "levels.0.blocks.0.attn.qkv.bias", "levels.0.blocks.0.attn.proj.weight",
                            "levels.0.blocks.0.attn.proj.bias"};
    const bool no_decay[5] = {true, false, true, false, true};
    ck_assert_int_eq(l.count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(l.items[i].name, names[i]);
        ck_assert_int_eq(l.items[i].no_decay, no_decay[i]);
    }
    ck_assert(m.qkv.weight->shape[0] == 24 && m.qkv.weight->shape[1] == 8);
    nat_param_list_clear(&l);

    /* Wrong input channels / rank. */
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    int64_t xs[4] = {1, 5, 5, 6};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, false), *y;
    th_expect_error(nat_na_layer_forward(ctx, &m, x, false, NULL, &y), NAT_ERR_SHAPE, "[1, 5, 5, 6]", "8");
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_na_layer_free(&m);

    nat_na_layer_desc bad = nat_na_layer_desc_make(2, 8, 3, 3, 1);
    th_expect_error(nat_na_layer_init(&m, &bad, 0.02f, &rng), NAT_ERR_INVALID_ARG, "3 heads", "dim 8");
    bad = nat_na_layer_desc_make(2, 8, 2, 6, 1);
    th_expect_error(nat_na_layer_init(&m, &bad, 0.02f, &rng), NAT_ERR_INVALID_ARG, "kernel size 6", NULL);
    bad = nat_na_layer_desc_make(1, 8, 2, 3, 1);
    bad.causal[0] = 1;
    th_expect_error(nat_na_layer_init(&m, &bad, 0.02f, &rng), NAT_ERR_INVALID_ARG, "causal", NULL);
    bad = nat_na_layer_desc_make(2, 8, 2, 3, 0);
    th_expect_error(nat_na_layer_init(&m, &bad, 0.02f, &rng), NAT_ERR_INVALID_ARG, "dilation 0", NULL);
    bad = nat_na_layer_desc_make(4, 8, 2, 3, 1);
    th_expect_error(nat_na_layer_init(&m, &bad, 0.02f, &rng), NAT_ERR_INVALID_ARG, "ndim 4", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layers");
    struct {
        const char *name;
        const TTest *fn;
        int loop;
    } cases[] = {
        {"param_list_names_and_flags", param_list_names_and_flags, 0},
        {"init_distributions", init_distributions, 0},
        {"linear_conv_layernorm", linear_conv_layernorm, 0},
        {"mlp_vs_composition", mlp_vs_composition, 0},
        {"dropout_and_drop_path_statistics", dropout_and_drop_path_statistics, 0},
        {"na_module_vs_reference", na_module_vs_reference, (int)(sizeof na_cases / sizeof *na_cases)},
        {"na_module_gradcheck", na_module_gradcheck, (int)(sizeof na_cases / sizeof *na_cases)},
        {"na_module_attention_dropout", na_module_attention_dropout, 0},
        {"na_module_names_and_errors", na_module_names_and_errors, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        if (cases[i].loop)
            tcase_add_loop_test(tc, cases[i].fn, 0, cases[i].loop);
        else
            tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
