/* tests/test_loss.c — cross-entropy with integer labels and label smoothing, cross-entropy with soft
 * targets, sum and mean: values and gradients against plain double loops (C = 1, 7, 17, 33, 64 and a
 * large case for the OpenMP paths, logits far outside exp's range), finite-difference checks of every
 * input (soft targets included), label validation messages, and results independent of thread count. */
#include <math.h>
#include <omp.h> /* thread-count independence */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

/* ---- reference (double) ---- */

/* Mean over rows of Σ_c -t_c log softmax(z)_c; dz = (softmax(z)·Σt - t) / N, dt = -log softmax(z) / N.
 * dz/dt may be NULL. */
static double ref_ce(const float *z, const double *t, int64_t N, int64_t C, double *dz, double *dt)
{
    double total = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *zr = z + i * C;
        const double *tr = t + i * C;
        double mx = -INFINITY, s = 0, ts = 0;
        for (int64_t c = 0; c < C; c++)
            mx = fmax(mx, zr[c]);
        for (int64_t c = 0; c < C; c++) {
            s += exp(zr[c] - mx);
            ts += tr[c];
        }
        double lse = mx + log(s);
        for (int64_t c = 0; c < C; c++) {
            total += tr[c] * (lse - zr[c]);
            if (dz)
                dz[i * C + c] = (exp(zr[c] - lse) * ts - tr[c]) / (double)N;
            if (dt)
                dt[i * C + c] = (lse - zr[c]) / (double)N;
        }
    }
    return total / (double)N;
}

/* Smoothed one-hot targets: (1 - eps)·onehot + eps/C. */
static double *smoothed_targets(const int32_t *labels, int64_t N, int64_t C, double eps)
{
    double *t = malloc((size_t)(N * C) * sizeof *t);
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++)
            t[i * C + c] = eps / (double)C + (c == labels[i] ? 1.0 - eps : 0.0);
    return t;
}

static int32_t *random_labels(nat_rng *rng, int64_t N, int64_t C)
{
    int32_t *l = malloc((size_t)N * sizeof *l);
    for (int64_t i = 0; i < N; i++)
        l[i] = (int32_t)nat_rng_below(rng, (uint32_t)C);
    return l;
}

static const int64_t ce_cases[][2] = {{1, 1}, {3, 1}, {4, 7}, {3, 17}, {2, 33}, {5, 64}, {300, 1000}};

/* logits = offset + scale·N(0,1) */
static nat_tensor *rand_logits(nat_rng *rng, int64_t N, int64_t C, float offset, float scale, bool grad)
{
    int64_t s[2] = {N, C};
    nat_tensor *z = th_randn(rng, 2, s, scale, grad);
    for (int64_t i = 0; i < N * C; i++)
        nat_tensor_f32(z)[i] += offset;
    return z;
}

/* ---- cross-entropy with integer labels ---- */

static void check_ce(nat_rng *rng, int64_t N, int64_t C, float offset, float scale, float eps, const char *what)
{
    nat_tensor *z = rand_logits(rng, N, C, offset, scale, true);
    int32_t *labels = random_labels(rng, N, C);
    double *t = smoothed_targets(labels, N, C, eps), *dz = malloc((size_t)(N * C) * sizeof *dz);
    double want = ref_ce(nat_tensor_f32(z), t, N, C, dz, NULL);
    nat_ctx *ctx;
    nat_tensor *loss;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_cross_entropy(ctx, z, labels, eps, &loss));
    ck_assert_int_eq(loss->ndim, 1);
    ck_assert_int_eq(loss->shape[0], 1);
    char msg[128];
    snprintf(msg, sizeof msg, "%s loss", what);
    th_assert_close(nat_tensor_f32(loss), &want, 1, 1e-6, msg);
    /* The labels are the caller's to reuse as soon as the call returns. */
    memset(labels, 0, (size_t)N * sizeof *labels);
    TH_OK(nat_backward(ctx, loss));
    snprintf(msg, sizeof msg, "%s dlogits", what);
    th_assert_close(nat_tensor_f32(z->grad), dz, N * C, 1e-6, msg);
    nat_ctx_free(ctx);
    free(labels), free(t), free(dz);
    nat_tensor_free(z);
}

START_TEST(ce_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 41);
    const float eps[] = {0.0f, 0.1f, 1.0f};
    for (size_t c = 0; c < sizeof ce_cases / sizeof *ce_cases; c++)
        for (size_t e = 0; e < 3; e++) {
            char what[96];
            snprintf(what, sizeof what, "cross_entropy [%lld, %lld] smoothing %g", (long long)ce_cases[c][0],
                     (long long)ce_cases[c][1], (double)eps[e]);
            check_ce(&rng, ce_cases[c][0], ce_cases[c][1], 0, 2, eps[e], what);
            /* Logits whose exp overflows (and underflows) float: only the max-subtracted form works. */
            snprintf(what, sizeof what, "cross_entropy [%lld, %lld] smoothing %g, logits 1000 ± 100",
                     (long long)ce_cases[c][0], (long long)ce_cases[c][1], (double)eps[e]);
            check_ce(&rng, ce_cases[c][0], ce_cases[c][1], 1000, 100, eps[e], what);
            check_ce(&rng, ce_cases[c][0], ce_cases[c][1], -1000, 100, eps[e], what);
        }
}
END_TEST

typedef struct ce_arg {
    const int32_t *labels;
    float smoothing;
} ce_arg;

static nat_status f_ce(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const ce_arg *a = u;
    return nat_cross_entropy(ctx, in[0], a->labels, a->smoothing, out);
}

START_TEST(ce_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 42);
    for (size_t c = 0; c < 5; c++) {
        int64_t N = ce_cases[c][0], C = ce_cases[c][1];
        nat_tensor *z = rand_logits(&rng, N, C, 0, 2, true);
        int32_t *labels = random_labels(&rng, N, C);
        for (int e = 0; e < 2; e++) {
            ce_arg arg = {labels, e ? 0.1f : 0.0f};
            th_gradcheck("cross_entropy", f_ce, &arg, 1, &z, 1e-2, 2e-3);
        }
        free(labels);
        nat_tensor_free(z);
    }
}
END_TEST


START_TEST(ce_argument_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 43);
    nat_tensor *z = rand_logits(&rng, 4, 7, 0, 1, true);
    int64_t s7[1] = {7}, s3d[3] = {2, 2, 7};
    nat_tensor *z1 = th_randn(&rng, 1, s7, 1, false), *z3 = th_randn(&rng, 3, s3d, 1, false);
    int32_t bad_high[4] = {0, 6, 7, 1}, bad_neg[4] = {-1, 0, 0, 0}, good[4] = {0, 1, 2, 6};
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    th_expect_error(nat_cross_entropy(ctx, z, bad_high, 0, &y), NAT_ERR_INVALID_ARG, "label 7 at row 2", "[0, 7)");
    th_expect_error(nat_cross_entropy(ctx, z, bad_neg, 0, &y), NAT_ERR_INVALID_ARG, "label -1 at row 0", "[0, 7)");
    th_expect_error(nat_cross_entropy(ctx, z, NULL, 0, &y), NAT_ERR_INVALID_ARG, "labels", "NULL");
    th_expect_error(nat_cross_entropy(ctx, z, good, 1.5f, &y), NAT_ERR_INVALID_ARG, "smoothing 1.5", NULL);
    th_expect_error(nat_cross_entropy(ctx, z, good, -0.1f, &y), NAT_ERR_INVALID_ARG, "smoothing -0.1", NULL);
    th_expect_error(nat_cross_entropy(ctx, z, good, NAN, &y), NAT_ERR_INVALID_ARG, "smoothing", NULL);
    th_expect_error(nat_cross_entropy(ctx, z1, good, 0, &y), NAT_ERR_SHAPE, "[7]", "[N, C]");
    th_expect_error(nat_cross_entropy(ctx, z3, good, 0, &y), NAT_ERR_SHAPE, "[2, 2, 7]", "[N, C]");
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    TH_OK(nat_cross_entropy(ctx, z, good, 0.1f, &y));
    nat_ctx_free(ctx);
    nat_tensor_free(z), nat_tensor_free(z1), nat_tensor_free(z3);
}
END_TEST

/* ---- cross-entropy with soft targets ---- */

typedef enum { T_SOFTMAX, T_MIXUP, T_RAW } target_kind;

/* Targets that sum to 1 per row (softmax of noise), mixup-style two-hot rows, or arbitrary values (the
 * formula and its gradients hold for any targets). */
static nat_tensor *rand_targets(nat_rng *rng, int64_t N, int64_t C, target_kind kind, bool grad)
{
    int64_t s[2] = {N, C};
    nat_tensor *t = th_randn(rng, 2, s, 1, grad);
    float *T = nat_tensor_f32(t);
    for (int64_t i = 0; i < N; i++) {
        float *r = T + i * C;
        if (kind == T_SOFTMAX) {
            double sum = 0;
            for (int64_t c = 0; c < C; c++)
                sum += exp(r[c]);
            for (int64_t c = 0; c < C; c++)
                r[c] = (float)(exp(r[c]) / sum);
        } else if (kind == T_MIXUP) {
            float lam = nat_rng_uniform(rng);
            memset(r, 0, (size_t)C * sizeof *r);
            r[nat_rng_below(rng, (uint32_t)C)] += lam;
            r[nat_rng_below(rng, (uint32_t)C)] += 1 - lam;
        }
    }
    return t;
}

static void check_ce_soft(nat_rng *rng, int64_t N, int64_t C, target_kind kind, float offset, float scale,
                          const char *what)
{
    nat_tensor *z = rand_logits(rng, N, C, offset, scale, true), *t = rand_targets(rng, N, C, kind, true);
    double *td = malloc((size_t)(N * C) * sizeof *td), *dz = malloc((size_t)(N * C) * sizeof *dz),
           *dt = malloc((size_t)(N * C) * sizeof *dt);
    for (int64_t i = 0; i < N * C; i++)
        td[i] = nat_tensor_f32(t)[i];
    double want = ref_ce(nat_tensor_f32(z), td, N, C, dz, dt);
    nat_ctx *ctx;
    nat_tensor *loss;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_cross_entropy_soft(ctx, z, t, &loss));
    ck_assert_int_eq(loss->ndim, 1);
    ck_assert_int_eq(loss->shape[0], 1);
    char msg[128];
    snprintf(msg, sizeof msg, "%s loss", what);
    th_assert_close(nat_tensor_f32(loss), &want, 1, 1e-6, msg);
    TH_OK(nat_backward(ctx, loss));
    snprintf(msg, sizeof msg, "%s dlogits", what);
    th_assert_close(nat_tensor_f32(z->grad), dz, N * C, 1e-6, msg);
    snprintf(msg, sizeof msg, "%s dtargets", what);
    th_assert_close(nat_tensor_f32(t->grad), dt, N * C, 1e-6, msg);
    nat_ctx_free(ctx);
    free(td), free(dz), free(dt);
    nat_tensor_free(z), nat_tensor_free(t);
}

START_TEST(ce_soft_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 44);
    const char *kinds[] = {"softmax targets", "mixup targets", "raw targets"};
    for (size_t c = 0; c < sizeof ce_cases / sizeof *ce_cases; c++)
        for (int k = T_SOFTMAX; k <= T_RAW; k++) {
            char what[96];
            snprintf(what, sizeof what, "cross_entropy_soft [%lld, %lld] %s", (long long)ce_cases[c][0],
                     (long long)ce_cases[c][1], kinds[k]);
            check_ce_soft(&rng, ce_cases[c][0], ce_cases[c][1], k, 0, 2, what);
            if (k != T_RAW) /* with raw targets the loss itself is ±1e5 and the comparison is of rounding */
                check_ce_soft(&rng, ce_cases[c][0], ce_cases[c][1], k, 1000, 100, what);
        }
}
END_TEST

/* One-hot soft targets smoothed by eps give exactly the hard-label loss and logits gradient. */
START_TEST(ce_soft_matches_hard_labels)
{
    nat_rng rng;
    nat_rng_seed(&rng, 45);
    int64_t N = 6, C = 9, s[2] = {6, 9};
    nat_tensor *z = rand_logits(&rng, N, C, 0, 2, true), *t;
    int32_t *labels = random_labels(&rng, N, C);
    TH_OK(nat_tensor_new(&t, NAT_F32, NAT_CPU, 2, s));
    const float eps = 0.1f;
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++)
            nat_tensor_f32(t)[i * C + c] = eps / (float)C + (c == labels[i] ? 1 - eps : 0);
    float hard_loss, hard_grad[54];
    nat_ctx *ctx;
    nat_tensor *loss;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_cross_entropy(ctx, z, labels, eps, &loss));
    TH_OK(nat_backward(ctx, loss));
    hard_loss = nat_tensor_f32(loss)[0];
    memcpy(hard_grad, nat_tensor_f32(z->grad), sizeof hard_grad);
    nat_ctx_reset(ctx);
    nat_zero_grad(z);
    TH_OK(nat_cross_entropy_soft(ctx, z, t, &loss));
    TH_OK(nat_backward(ctx, loss));
    ck_assert_float_eq_tol(nat_tensor_f32(loss)[0], hard_loss, 1e-6);
    th_assert_close_f(nat_tensor_f32(z->grad), hard_grad, N * C, 1e-6, "soft vs hard gradient");
    nat_ctx_free(ctx);
    free(labels);
    nat_tensor_free(z), nat_tensor_free(t);
}
END_TEST

static nat_status f_ce_soft(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_cross_entropy_soft(ctx, in[0], in[1], out);
}

START_TEST(ce_soft_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 46);
    for (size_t c = 0; c < 5; c++) {
        int64_t N = ce_cases[c][0], C = ce_cases[c][1];
        nat_tensor *in[2] = {rand_logits(&rng, N, C, 0, 2, true), rand_targets(&rng, N, C, T_SOFTMAX, true)};
        th_gradcheck("cross_entropy_soft, logits and targets", f_ce_soft, NULL, 2, in, 1e-2, 2e-3);
        in[0]->requires_grad = false;
        th_gradcheck("cross_entropy_soft, targets only", f_ce_soft, NULL, 2, in, 1e-2, 2e-3);
        in[0]->requires_grad = true;
        in[1]->requires_grad = false;
        th_gradcheck("cross_entropy_soft, logits only", f_ce_soft, NULL, 2, in, 1e-2, 2e-3);
        nat_tensor_free(in[0]), nat_tensor_free(in[1]);
    }
}
END_TEST

START_TEST(ce_soft_argument_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 47);
    nat_tensor *z = rand_logits(&rng, 4, 7, 0, 1, true), *t = rand_targets(&rng, 4, 6, T_SOFTMAX, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    th_expect_error(nat_cross_entropy_soft(ctx, z, t, &y), NAT_ERR_SHAPE, "[4, 6]", "[4, 7]");
    th_expect_error(nat_cross_entropy_soft(ctx, z, NULL, &y), NAT_ERR_INVALID_ARG, "targets", "NULL");
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(z), nat_tensor_free(t);
}
END_TEST

/* Strided logits and targets (transposed views) give the same loss and gradients as dense copies. */
START_TEST(ce_strided_inputs)
{
    nat_rng rng;
    nat_rng_seed(&rng, 48);
    int64_t bs[2] = {7, 5}, vs[2] = {5, 7}, st[2] = {1, 5};
    nat_tensor *bz = th_randn(&rng, 2, bs, 2, false), *bt = th_randn(&rng, 2, bs, 1, false);
    nat_tensor *dz, *dt;
    TH_OK(nat_tensor_new(&dz, NAT_F32, NAT_CPU, 2, vs));
    TH_OK(nat_tensor_new(&dt, NAT_F32, NAT_CPU, 2, vs));
    dz->requires_grad = dt->requires_grad = true;
    int32_t labels[5] = {0, 6, 3, 2, 5};
    nat_ctx *ctx;
    nat_tensor *vz, *vt, *l1, *l2;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_view(ctx, &vz, bz, 2, vs, st, 0));
    TH_OK(nat_ctx_view(ctx, &vt, bt, 2, vs, st, 0));
    vz->requires_grad = vt->requires_grad = true;
    float buf[35];
    TH_OK(nat_tensor_copy_to(vz, buf, 35));
    TH_OK(nat_tensor_copy_from(dz, buf, 35));
    TH_OK(nat_tensor_copy_to(vt, buf, 35));
    TH_OK(nat_tensor_copy_from(dt, buf, 35));
    TH_OK(nat_cross_entropy(ctx, vz, labels, 0.1f, &l1));
    TH_OK(nat_backward(ctx, l1));
    TH_OK(nat_cross_entropy(ctx, dz, labels, 0.1f, &l2));
    TH_OK(nat_backward(ctx, l2));
    ck_assert_float_eq(nat_tensor_f32(l1)[0], nat_tensor_f32(l2)[0]);
    th_assert_close_f(nat_tensor_f32(vz->grad), nat_tensor_f32(dz->grad), 35, 0, "strided cross_entropy");
    nat_zero_grad(vz), nat_zero_grad(dz);
    TH_OK(nat_cross_entropy_soft(ctx, vz, vt, &l1));
    TH_OK(nat_backward(ctx, l1));
    TH_OK(nat_cross_entropy_soft(ctx, dz, dt, &l2));
    TH_OK(nat_backward(ctx, l2));
    ck_assert_float_eq(nat_tensor_f32(l1)[0], nat_tensor_f32(l2)[0]);
    th_assert_close_f(nat_tensor_f32(vz->grad), nat_tensor_f32(dz->grad), 35, 0, "strided soft logits");
    th_assert_close_f(nat_tensor_f32(vt->grad), nat_tensor_f32(dt->grad), 35, 0, "strided soft targets");
    nat_ctx_free(ctx);
    nat_tensor_free(bz), nat_tensor_free(bt), nat_tensor_free(dz), nat_tensor_free(dt);
}
END_TEST

/* ---- sum and mean ---- */

START_TEST(sum_mean_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 49);
    static const struct {
        int nd;
        int64_t s[3];
    } cases[] = {{1, {1}}, {1, {7}}, {3, {2, 3, 4}}, {2, {17, 33}}, {3, {300, 40, 17}}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int mean = 0; mean <= 1; mean++) {
            nat_tensor *x = th_randn(&rng, cases[c].nd, cases[c].s, 1, true);
            int64_t n = nat_tensor_numel(x);
            for (int64_t i = 0; i < n; i++)
                nat_tensor_f32(x)[i] += 3; /* a sum that does not cancel */
            double want = 0;
            for (int64_t i = 0; i < n; i++)
                want += nat_tensor_f32(x)[i];
            if (mean)
                want /= (double)n;
            nat_ctx *ctx;
            nat_tensor *y;
            TH_OK(nat_ctx_new(&ctx, NAT_CPU));
            TH_OK(mean ? nat_mean(ctx, x, &y) : nat_sum(ctx, x, &y));
            ck_assert_int_eq(y->ndim, 1);
            ck_assert_int_eq(y->shape[0], 1);
            char what[64];
            snprintf(what, sizeof what, "%s case %zu", mean ? "mean" : "sum", c);
            /* Relative to the result itself: it is large for the big case. */
            ck_assert_msg(fabs(nat_tensor_f32(y)[0] - want) <= 1e-6 * fmax(1, fabs(want)), "%s: %.9g vs %.9g", what,
                          (double)nat_tensor_f32(y)[0], want);
            TH_OK(nat_backward(ctx, y));
            for (int64_t i = 0; i < n; i++)
                ck_assert_float_eq(nat_tensor_f32(x->grad)[i], mean ? 1.0f / (float)n : 1.0f);
            nat_ctx_free(ctx);
            nat_tensor_free(x);
        }
}
END_TEST

static nat_status f_sum(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return *(int *)u ? nat_mean(ctx, in[0], out) : nat_sum(ctx, in[0], out);
}

START_TEST(sum_mean_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 50);
    int64_t s[2] = {3, 7};
    nat_tensor *x = th_randn(&rng, 2, s, 1, true);
    for (int mean = 0; mean <= 1; mean++)
        th_gradcheck(mean ? "mean" : "sum", f_sum, &mean, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

START_TEST(sum_mean_strided_and_empty)
{
    nat_rng rng;
    nat_rng_seed(&rng, 51);
    int64_t bs[2] = {4, 9}, vs[2] = {3, 4}, st[2] = {9, 2}, s0[2] = {0, 3};
    nat_tensor *base = th_randn(&rng, 2, bs, 1, false), *e = th_randn(&rng, 2, s0, 1, false);
    nat_ctx *ctx;
    nat_tensor *v, *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_view(ctx, &v, base, 2, vs, st, 10)); /* rows 1..3, every other column from 1 */
    v->requires_grad = true;
    double want = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            want += nat_tensor_f32(base)[10 + i * 9 + j * 2];
    TH_OK(nat_mean(ctx, v, &y));
    ck_assert_float_eq_tol(nat_tensor_f32(y)[0], want / 12, 1e-6);
    TH_OK(nat_backward(ctx, y));
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(nat_tensor_f32(v->grad)[i], 1.0f / 12);
    TH_OK(nat_sum(ctx, e, &y));
    ck_assert_float_eq(nat_tensor_f32(y)[0], 0.0f);
    th_expect_error(nat_mean(ctx, e, &y), NAT_ERR_SHAPE, "[0, 3]", NULL);
    nat_ctx_free(ctx);
    nat_tensor_free(base), nat_tensor_free(e);
}
END_TEST

/* The same bits whatever the number of threads: per-row losses and block sums are added in a fixed order. */
START_TEST(results_independent_of_threads)
{
    nat_rng rng;
    nat_rng_seed(&rng, 52);
    nat_tensor *z = rand_logits(&rng, 500, 300, 0, 3, true);
    int32_t *labels = random_labels(&rng, 500, 300);
    float r[2][3];
    int threads[2] = {1, 2};
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(threads[k]);
        nat_ctx *ctx;
        nat_tensor *a, *b, *c;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_sum(ctx, z, &a));
        TH_OK(nat_mean(ctx, z, &b));
        TH_OK(nat_cross_entropy(ctx, z, labels, 0.1f, &c));
        r[k][0] = nat_tensor_f32(a)[0], r[k][1] = nat_tensor_f32(b)[0], r[k][2] = nat_tensor_f32(c)[0];
        nat_ctx_free(ctx);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_msg(memcmp(&r[0][i], &r[1][i], sizeof(float)) == 0, "result %d: %.9g with 1 thread, %.9g with 2", i,
                      (double)r[0][i], (double)r[1][i]);
    free(labels);
    nat_tensor_free(z);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loss");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"ce_reference", ce_reference},
        {"ce_gradcheck", ce_gradcheck},
        {"ce_argument_errors", ce_argument_errors},
        {"ce_soft_reference", ce_soft_reference},
        {"ce_soft_matches_hard_labels", ce_soft_matches_hard_labels},
        {"ce_soft_gradcheck", ce_soft_gradcheck},
        {"ce_soft_argument_errors", ce_soft_argument_errors},
        {"ce_strided_inputs", ce_strided_inputs},
        {"sum_mean_reference", sum_mean_reference},
        {"sum_mean_gradcheck", sum_mean_gradcheck},
        {"sum_mean_strided_and_empty", sum_mean_strided_and_empty},
        {"results_independent_of_threads", results_independent_of_threads},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
