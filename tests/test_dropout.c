/* tests/test_dropout.c — dropout and drop-path: drop statistics and preserved mean over many elements,
 * determinism for a seed (and independence from the thread count), gradients equal to the mask scaling,
 * whole-sample drops, the identity cases, strided inputs, and argument errors. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

static nat_tensor *ones(int ndim, const int64_t *shape, bool grad)
{
    nat_tensor *t;
    TH_OK(nat_tensor_new(&t, NAT_F32, NAT_CPU, ndim, shape));
    TH_OK(nat_tensor_fill(t, 1.0f));
    t->requires_grad = grad;
    return t;
}

START_TEST(dropout_statistics)
{
    int64_t s[2] = {400, 501}; /* 200400 elements: several RNG chunks and an odd tail */
    nat_tensor *x = ones(2, s, false);
    static const float ps[] = {0.1f, 0.5f, 0.9f};
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        float p = ps[k], scale = 1.0f / (1.0f - p);
        nat_rng rng;
        nat_rng_seed(&rng, 31 + k);
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_dropout(ctx, x, p, true, &rng, &y));
        int64_t n = nat_tensor_numel(y), dropped = 0;
        double sum = 0;
        const float *v = nat_tensor_f32(y);
        for (int64_t i = 0; i < n; i++) {
            if (v[i] == 0.0f)
                dropped++;
            else
                ck_assert_float_eq(v[i], scale); /* survivors scaled by exactly 1/(1-p) */
            sum += v[i];
        }
        double frac = (double)dropped / (double)n, mean = sum / (double)n;
        /* 5 standard deviations of a binomial fraction and of the mean of the scaled survivors. */
        double sd_frac = sqrt(p * (1.0 - p) / (double)n), sd_mean = sqrt(p / (1.0 - p) / (double)n);
        ck_assert_msg(fabs(frac - p) < 5 * sd_frac, "p %.2f: dropped fraction %.4f", (double)p, frac);
        ck_assert_msg(fabs(mean - 1.0) < 5 * sd_mean, "p %.2f: mean %.4f, expected 1", (double)p, mean);
        nat_ctx_free(ctx);
    }
    nat_tensor_free(x);
}
END_TEST

/* Runs dropout from a fresh rng seeded with `seed`; returns the output values (caller frees). */
static float *dropout_values(nat_tensor *x, float p, uint64_t seed)
{
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_dropout(ctx, x, p, true, &rng, &y));
    int64_t n = nat_tensor_numel(y);
    float *v = malloc((size_t)n * sizeof *v);
    TH_OK(nat_tensor_copy_to(y, v, n));
    nat_ctx_free(ctx);
    return v;
}

START_TEST(dropout_determinism)
{
    nat_rng rng;
    nat_rng_seed(&rng, 32);
    int64_t s[1] = {150001};
    nat_tensor *x = th_randn(&rng, 1, s, 1, false);
    int64_t n = s[0];
    float *a = dropout_values(x, 0.3f, 7), *b = dropout_values(x, 0.3f, 7), *c = dropout_values(x, 0.3f, 8);
    ck_assert_int_eq(memcmp(a, b, (size_t)n * sizeof *a), 0);
    ck_assert_int_ne(memcmp(a, c, (size_t)n * sizeof *a), 0);
    /* The mask must not depend on how many threads drew it. */
    int prev = omp_get_max_threads();
    omp_set_num_threads(1);
    float *one = dropout_values(x, 0.3f, 7);
    omp_set_num_threads(prev > 1 ? prev : 2);
    float *many = dropout_values(x, 0.3f, 7);
    ck_assert_int_eq(memcmp(a, one, (size_t)n * sizeof *a), 0);
    ck_assert_int_eq(memcmp(a, many, (size_t)n * sizeof *a), 0);
    /* Successive calls on one rng draw different masks. */
    nat_rng r;
    nat_rng_seed(&r, 9);
    nat_ctx *ctx;
    nat_tensor *y1, *y2;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_dropout(ctx, x, 0.3f, true, &r, &y1));
    TH_OK(nat_dropout(ctx, x, 0.3f, true, &r, &y2));
    ck_assert_int_ne(memcmp(nat_tensor_f32(y1), nat_tensor_f32(y2), (size_t)n * sizeof(float)), 0);
    nat_ctx_free(ctx);
    free(a);
    free(b);
    free(c);
    free(one);
    free(many);
    nat_tensor_free(x);
}
END_TEST

/* The gradient is the mask times 1/(1-p), and it accumulates across backward passes. */
START_TEST(dropout_gradient_is_mask_scaling)
{
    nat_rng rng;
    nat_rng_seed(&rng, 33);
    int64_t s[3] = {3, 17, 33};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true), *g = th_randn(&rng, 3, s, 1, false);
    int64_t n = nat_tensor_numel(x);
    const float p = 0.4f, scale = 1.0f / (1.0f - p);
    float *want = calloc((size_t)n, sizeof *want);
    for (int pass = 0; pass < 2; pass++) {
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_dropout(ctx, x, p, true, &rng, &y));
        ck_assert_int_eq(nat_ctx_tape_length(ctx), 1);
        for (int64_t i = 0; i < n; i++) {
            bool kept = nat_tensor_f32(y)[i] != 0.0f;
            if (kept)
                ck_assert_float_eq(nat_tensor_f32(y)[i], nat_tensor_f32(x)[i] * scale);
            want[i] += kept ? nat_tensor_f32(g)[i] * scale : 0.0f;
        }
        TH_OK(nat_backward_from(ctx, y, g));
        nat_ctx_free(ctx);
        th_assert_close_f(nat_tensor_f32(x->grad), want, n, 1e-6, pass ? "dropout grad, accumulated" : "dropout grad");
    }
    free(want);
    nat_tensor_free(x);
    nat_tensor_free(g);
}
END_TEST

/* With the rng reseeded on every evaluation the mask is fixed, so the finite-difference check applies. */
typedef struct drop_args {
    float p;
    int per_sample;
    int permute_first;
} drop_args;

static nat_status f_drop(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const drop_args *a = u;
    nat_rng rng;
    nat_rng_seed(&rng, 1234);
    nat_tensor *x = in[0];
    if (a->permute_first) {
        static const int perm[3] = {0, 2, 1};
        NAT_TRY(nat_permute(ctx, in[0], perm, &x));
    }
    return a->per_sample ? nat_drop_path(ctx, x, a->p, true, &rng, out) : nat_dropout(ctx, x, a->p, true, &rng, out);
}

START_TEST(dropout_and_drop_path_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 34);
    int64_t s[3] = {6, 3, 5};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    static const drop_args cases[] = {{0.3f, 0, 0}, {0.5f, 1, 0}, {0.3f, 0, 1}, {0.5f, 1, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char what[64];
        snprintf(what, sizeof what, "%s p %.1f%s", cases[k].per_sample ? "drop_path" : "dropout", (double)cases[k].p,
                 cases[k].permute_first ? " of a permuted view" : "");
        th_gradcheck(what, f_drop, (void *)&cases[k], 1, &x, 1e-2, 2e-3);
    }
    nat_tensor_free(x);
}
END_TEST

/* A strided input gives the same result as its dense copy under the same rng state. */
START_TEST(dropout_strided_input)
{
    nat_rng rng;
    nat_rng_seed(&rng, 35);
    int64_t s[3] = {4, 7, 9};
    nat_tensor *x = th_randn(&rng, 3, s, 1, false);
    nat_ctx *ctx;
    nat_tensor *xp, *xc, *a, *b;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    static const int perm[3] = {2, 0, 1};
    TH_OK(nat_permute(ctx, x, perm, &xp));
    TH_OK(nat_contiguous(ctx, xp, &xc));
    nat_rng r1, r2;
    nat_rng_seed(&r1, 5);
    nat_rng_seed(&r2, 5);
    TH_OK(nat_dropout(ctx, xp, 0.5f, true, &r1, &a));
    TH_OK(nat_dropout(ctx, xc, 0.5f, true, &r2, &b));
    ck_assert_int_eq(memcmp(nat_tensor_f32(a), nat_tensor_f32(b), (size_t)nat_tensor_numel(a) * sizeof(float)), 0);
    TH_OK(nat_drop_path(ctx, xp, 0.5f, true, &r1, &a));
    TH_OK(nat_drop_path(ctx, xc, 0.5f, true, &r2, &b));
    ck_assert_int_eq(memcmp(nat_tensor_f32(a), nat_tensor_f32(b), (size_t)nat_tensor_numel(a) * sizeof(float)), 0);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}
END_TEST

START_TEST(drop_path_drops_whole_samples)
{
    nat_rng rng;
    nat_rng_seed(&rng, 36);
    int64_t s[3] = {4000, 3, 5};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true), *g = th_randn(&rng, 3, s, 1, false);
    const float p = 0.25f, scale = 1.0f / (1.0f - p);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_drop_path(ctx, x, p, true, &rng, &y));
    int64_t N = s[0], per = s[1] * s[2], dropped = 0;
    bool *kept = malloc((size_t)N * sizeof *kept);
    const float *xv = nat_tensor_f32(x), *yv = nat_tensor_f32(y);
    for (int64_t n = 0; n < N; n++) {
        kept[n] = yv[n * per] != 0.0f;
        dropped += !kept[n];
        for (int64_t i = n * per; i < (n + 1) * per; i++)
            ck_assert_float_eq(yv[i], (kept[n] ? xv[i] * scale : 0.0f));
    }
    double frac = (double)dropped / (double)N;
    ck_assert_msg(fabs(frac - p) < 5 * sqrt(p * (1 - p) / N), "drop_path dropped %.4f of samples, p %.2f", frac, (double)p);
    TH_OK(nat_backward_from(ctx, y, g));
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = n * per; i < (n + 1) * per; i++)
            ck_assert_float_eq(nat_tensor_f32(x->grad)[i], (kept[n] ? nat_tensor_f32(g)[i] * scale : 0.0f));
    nat_ctx_free(ctx);
    free(kept);
    nat_tensor_free(x);
    nat_tensor_free(g);

    /* Mean preserved over many samples. */
    int64_t s2[2] = {40000, 2};
    nat_tensor *o = ones(2, s2, false);
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_drop_path(ctx, o, p, true, &rng, &y));
    double sum = 0;
    for (int64_t i = 0; i < 80000; i++)
        sum += nat_tensor_f32(y)[i];
    double mean = sum / 80000.0;
    ck_assert_msg(fabs(mean - 1.0) < 5 * sqrt(p / (1 - p) / 40000.0), "drop_path mean %.4f, expected 1", mean);
    nat_ctx_free(ctx);
    nat_tensor_free(o);
}
END_TEST

START_TEST(identity_when_not_training_or_p_zero)
{
    nat_rng rng;
    nat_rng_seed(&rng, 37);
    int64_t s[2] = {5, 7};
    nat_tensor *x = th_randn(&rng, 2, s, 1, true);
    nat_rng before = rng;
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_dropout(ctx, x, 0.5f, false, &rng, &y));
    ck_assert_ptr_eq(y, x);
    TH_OK(nat_dropout(ctx, x, 0.0f, true, &rng, &y));
    ck_assert_ptr_eq(y, x);
    TH_OK(nat_drop_path(ctx, x, 0.5f, false, &rng, &y));
    ck_assert_ptr_eq(y, x);
    TH_OK(nat_drop_path(ctx, x, 0.0f, true, &rng, &y));
    ck_assert_ptr_eq(y, x);
    TH_OK(nat_dropout(ctx, x, 0.5f, false, NULL, &y)); /* evaluation needs no rng */
    ck_assert_ptr_eq(y, x);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    ck_assert_int_eq(memcmp(&before, &rng, sizeof rng), 0); /* no draw consumed */
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}
END_TEST

START_TEST(argument_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 38);
    int64_t s[2] = {5, 7};
    nat_tensor *x = th_randn(&rng, 2, s, 1, false), *sc;
    TH_OK(nat_tensor_new(&sc, NAT_F32, NAT_CPU, 0, s));
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    static const float bad[] = {-0.1f, 1.0f, 1.5f, NAN};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        /* Rejected even when not training: a bad config should fail at once, not when training starts. */
        ck_assert_int_eq(nat_dropout(ctx, x, bad[k], false, &rng, &y), NAT_ERR_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, 7]"));
        ck_assert_ptr_nonnull(strstr(nat_error_message(), "[0, 1)"));
        ck_assert_int_eq(nat_drop_path(ctx, x, bad[k], true, &rng, &y), NAT_ERR_INVALID_ARG);
    }
    ck_assert_int_eq(nat_dropout(ctx, x, 0.5f, true, NULL, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_drop_path(ctx, x, 0.5f, true, NULL, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_drop_path(ctx, sc, 0.5f, true, &rng, &y), NAT_ERR_SHAPE);
    ck_assert_int_eq(nat_dropout(ctx, NULL, 0.5f, true, &rng, &y), NAT_ERR_INVALID_ARG);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_tensor_free(sc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dropout");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"dropout_statistics", dropout_statistics},
        {"dropout_determinism", dropout_determinism},
        {"dropout_gradient_is_mask_scaling", dropout_gradient_is_mask_scaling},
        {"dropout_and_drop_path_gradcheck", dropout_and_drop_path_gradcheck},
        {"dropout_strided_input", dropout_strided_input},
        {"drop_path_drops_whole_samples", drop_path_drops_whole_samples},
        {"identity_when_not_training_or_p_zero", identity_when_not_training_or_p_zero},
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
