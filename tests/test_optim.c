/* tests/test_optim.c — SGD (momentum, Nesterov, coupled decay) and AdamW (decoupled decay) against a
 * double-precision transcription of PyTorch's update rules over several steps with hand-set gradients
 * and two groups; skipping of parameters without a gradient; state names and a checkpoint round trip;
 * no allocation in a step; argument errors; clip_grad_norm; and small least-squares problems solved
 * through nat_linear and a squared-error op defined here (so the test needs no other op file). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/optim.h"
#include "support/harness.h"

/* ---- a plain reference of the update rules (PyTorch's, written out in double) ---- */

typedef struct ref_param {
    int64_t n;
    double *p, *m, *v; /* m: momentum buffer or exp_avg; v: exp_avg_sq */
    bool has_buf;      /* SGD: PyTorch's buffer is None until the first step the param has a grad */
    int64_t t;         /* AdamW: per-parameter step */
} ref_param;

static void ref_step(const nat_optim_config *c, ref_param *r, const float *g, double lr, double wd)
{
    if (c->kind == NAT_OPTIM_SGD) {
        for (int64_t i = 0; i < r->n; i++) {
            double d = g[i] + wd * r->p[i];
            if (c->momentum > 0) {
                r->m[i] = r->has_buf ? c->momentum * r->m[i] + d : d;
                d = c->nesterov ? d + c->momentum * r->m[i] : r->m[i];
            }
            r->p[i] -= lr * d;
        }
        r->has_buf = true;
        return;
    }
    r->t++;
    double bc1 = 1 - pow(c->beta1, (double)r->t), bc2 = 1 - pow(c->beta2, (double)r->t);
    for (int64_t i = 0; i < r->n; i++) {
        r->p[i] *= 1 - lr * wd;
        r->m[i] = c->beta1 * r->m[i] + (1 - c->beta1) * g[i];
        r->v[i] = c->beta2 * r->v[i] + (1 - c->beta2) * (double)g[i] * g[i];
        double mhat = r->m[i] / bc1, vhat = r->v[i] / bc2;
        r->p[i] -= lr * mhat / (sqrt(vhat) + c->eps);
    }
}

/* Gives p a gradient buffer holding g (persistent, freed with p). */
static void set_grad(nat_tensor *p, const float *g)
{
    if (!p->grad)
        TH_OK(nat_tensor_new(&p->grad, NAT_F32, NAT_CPU, p->ndim, p->shape));
    TH_OK(nat_tensor_copy_from(p->grad, g, nat_tensor_numel(p)));
}

/* The state tensor called `name`, or NULL. */
static nat_tensor *state_named(const nat_optim *opt, const char *name)
{
    for (int i = 0; i < nat_optim_state_count(opt); i++) {
        const char *nm;
        nat_tensor *t;
        TH_OK(nat_optim_state_get(opt, i, &nm, &t));
        if (strcmp(nm, name) == 0)
            return t;
    }
    return NULL;
}

#define N_PARAMS 5
/* Sizes 1, 7, 17, 33 and one above the threaded-loop threshold. Params 0, 1, 4 form group 0 and 2, 3
 * group 1; param 3 gets its first gradient at step 2 (skipped before). */
static const int64_t param_shapes[N_PARAMS][2] = {{7, 0}, {3, 17}, {33, 0}, {1, 0}, {200, 201}};
static const int param_ndim[N_PARAMS] = {1, 2, 1, 1, 2};
static const int param_group[N_PARAMS] = {0, 0, 1, 1, 0};
#define LATE_PARAM 3
#define LATE_STEP 2

static void compare_double(const float *got, const double *want, int64_t n, double tol, const char *what, int step,
                           int param)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: step %d, param %d", what, step, param);
    th_assert_close(got, want, n, tol, msg);
}

/* Runs `steps` steps of the optimizer and of the reference with the same gradients and a changing lr,
 * comparing parameters and state after every step. */
static void check_against_reference(const nat_optim_config *cfg, float wd0, float wd1, int steps, uint64_t seed,
                                    const char *what)
{
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    nat_tensor *p[N_PARAMS];
    ref_param r[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        p[i] = th_randn(&rng, param_ndim[i], param_shapes[i], 1.0f, true);
        int64_t n = nat_tensor_numel(p[i]);
        r[i] = (ref_param){.n = n, .p = malloc((size_t)n * sizeof(double)), .m = calloc((size_t)n, sizeof(double)),
                           .v = calloc((size_t)n, sizeof(double))};
        for (int64_t j = 0; j < n; j++)
            r[i].p[j] = nat_tensor_f32(p[i])[j];
    }
    nat_optim *opt;
    TH_OK(nat_optim_new(&opt, cfg));
    nat_tensor *g0[3] = {p[0], p[1], p[4]}, *g1[2] = {p[2], p[3]};
    TH_OK(nat_optim_add_group(opt, g0, 3, wd0));
    TH_OK(nat_optim_add_group(opt, g1, 2, wd1));
    const int index_in_group[N_PARAMS] = {0, 1, 0, 1, 2};

    for (int s = 0; s < steps; s++) {
        double lr = (cfg->kind == NAT_OPTIM_SGD ? 0.1 : 0.01) * (1.0 - 0.1 * s);
        nat_optim_zero_grad(opt);
        for (int i = 0; i < N_PARAMS; i++) {
            if (i == LATE_PARAM && s < LATE_STEP)
                continue;
            int64_t n = r[i].n;
            float *g = malloc((size_t)n * sizeof *g);
            nat_rng_fill_normal(&rng, g, (size_t)n, 0.0f, 1.0f);
            set_grad(p[i], g);
            free(g);
        }
        TH_OK(nat_optim_step(opt, (float)lr));
        for (int i = 0; i < N_PARAMS; i++) {
            if (i == LATE_PARAM && s < LATE_STEP)
                continue;
            ref_step(cfg, &r[i], nat_tensor_f32(p[i]->grad), (float)lr, param_group[i] == 0 ? wd0 : wd1);
        }
        for (int i = 0; i < N_PARAMS; i++) {
            char name[64];
            compare_double(nat_tensor_f32(p[i]), r[i].p, r[i].n, 2e-6, what, s, i);
            const char *mname = cfg->kind == NAT_OPTIM_SGD ? "momentum_buffer" : "exp_avg";
            snprintf(name, sizeof name, "group%d.param%d.%s", param_group[i], index_in_group[i], mname);
            nat_tensor *m = state_named(opt, name);
            if (cfg->kind == NAT_OPTIM_SGD && cfg->momentum == 0) {
                ck_assert_msg(m == NULL, "%s: plain SGD keeps a momentum buffer", what);
                continue;
            }
            ck_assert_msg(m != NULL, "%s: no state named %s", what, name);
            compare_double(nat_tensor_f32(m), r[i].m, r[i].n, 2e-6, name, s, i);
            if (cfg->kind == NAT_OPTIM_ADAMW) {
                snprintf(name, sizeof name, "group%d.param%d.exp_avg_sq", param_group[i], index_in_group[i]);
                nat_tensor *v = state_named(opt, name);
                ck_assert_msg(v != NULL, "%s: no state named %s", what, name);
                compare_double(nat_tensor_f32(v), r[i].v, r[i].n, 2e-6, name, s, i);
                snprintf(name, sizeof name, "group%d.param%d.step", param_group[i], index_in_group[i]);
                nat_tensor *t = state_named(opt, name);
                ck_assert_msg(t != NULL, "%s: no state named %s", what, name);
                ck_assert_msg(nat_tensor_f32(t)[0] == (float)r[i].t, "%s: %s is %g, want %lld", what, name,
                              nat_tensor_f32(t)[0], (long long)r[i].t);
            }
        }
        ck_assert_int_eq(nat_optim_step_count(opt), s + 1);
    }
    nat_optim_free(opt);
    for (int i = 0; i < N_PARAMS; i++) {
        nat_tensor_free(p[i]);
        free(r[i].p);
        free(r[i].m);
        free(r[i].v);
    }
}

START_TEST(sgd_plain_matches_reference)
{
    nat_optim_config c = nat_optim_sgd_config(0.0f, false);
    check_against_reference(&c, 0.0f, 0.0f, 4, 11, "sgd");
    check_against_reference(&c, 0.05f, 0.0f, 4, 12, "sgd, decay on group 0");
}
END_TEST

START_TEST(sgd_momentum_matches_reference)
{
    nat_optim_config c = nat_optim_sgd_config(0.9f, false);
    check_against_reference(&c, 0.0f, 0.0f, 5, 21, "sgd momentum");
    check_against_reference(&c, 0.01f, 0.1f, 5, 22, "sgd momentum, two decays");
}
END_TEST

START_TEST(sgd_nesterov_matches_reference)
{
    nat_optim_config c = nat_optim_sgd_config(0.8f, true);
    check_against_reference(&c, 0.0f, 0.0f, 5, 31, "sgd nesterov");
    check_against_reference(&c, 0.05f, 0.0f, 5, 32, "sgd nesterov, decay on group 0");
}
END_TEST

START_TEST(adamw_matches_reference)
{
    nat_optim_config c = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    check_against_reference(&c, 0.0f, 0.0f, 5, 41, "adamw");
    check_against_reference(&c, 0.05f, 0.0f, 5, 42, "adamw, decay 0.05 / 0");
    nat_optim_config c2 = nat_optim_adamw_config(0.5f, 0.9f, 1e-3f);
    check_against_reference(&c2, 0.3f, 0.01f, 5, 43, "adamw, other betas and eps");
}
END_TEST

/* A parameter backward never reached stays untouched (no decay either) and keeps zero state. */
START_TEST(params_without_grad_are_skipped)
{
    const nat_optim_config cfgs[3] = {nat_optim_sgd_config(0.0f, false), nat_optim_sgd_config(0.9f, true),
                                      nat_optim_adamw_config(0.9f, 0.999f, 1e-8f)};
    for (int k = 0; k < 3; k++) {
        nat_rng rng;
        nat_rng_seed(&rng, 50 + k);
        int64_t s[1] = {9};
        nat_tensor *a = th_randn(&rng, 1, s, 1, true), *b = th_randn(&rng, 1, s, 1, true);
        float before[9], g[9];
        memcpy(before, nat_tensor_f32(b), sizeof before);
        nat_rng_fill_normal(&rng, g, 9, 0, 1);
        set_grad(a, g);
        nat_optim *opt;
        TH_OK(nat_optim_new(&opt, &cfgs[k]));
        nat_tensor *ps[2] = {a, b};
        TH_OK(nat_optim_add_group(opt, ps, 2, 0.1f));
        TH_OK(nat_optim_step(opt, 0.1f));
        TH_OK(nat_optim_step(opt, 0.1f));
        ck_assert_msg(memcmp(before, nat_tensor_f32(b), sizeof before) == 0, "kind %d: a param without grad moved", k);
        for (int i = 0; i < nat_optim_state_count(opt); i++) {
            const char *name;
            nat_tensor *t;
            TH_OK(nat_optim_state_get(opt, i, &name, &t));
            if (strncmp(name, "group0.param1.", 14) != 0)
                continue;
            for (int64_t j = 0; j < nat_tensor_numel(t); j++)
                ck_assert_msg(nat_tensor_f32(t)[j] == 0.0f, "kind %d: state %s of a skipped param is not zero", k, name);
        }
        nat_optim_free(opt);
        nat_tensor_free(a);
        nat_tensor_free(b);
    }
}
END_TEST

START_TEST(state_names_and_counts)
{
    nat_rng rng;
    nat_rng_seed(&rng, 60);
    int64_t s1[1] = {4}, s2[2] = {2, 3};
    nat_tensor *a = th_randn(&rng, 1, s1, 1, true), *b = th_randn(&rng, 2, s2, 1, true),
               *c = th_randn(&rng, 1, s1, 1, true);
    nat_tensor *g0[2] = {a, b}, *g1[1] = {c};
    nat_optim *opt;

    nat_optim_config adam = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    TH_OK(nat_optim_new(&opt, &adam));
    ck_assert_int_eq(nat_optim_get_kind(opt), NAT_OPTIM_ADAMW);
    TH_OK(nat_optim_add_group(opt, g0, 2, 0.05f));
    TH_OK(nat_optim_add_group(opt, g1, 1, 0.0f));
    ck_assert_int_eq(nat_optim_group_count(opt), 2);
    const char *want[9] = {"group0.param0.step", "group0.param0.exp_avg", "group0.param0.exp_avg_sq",
                           "group0.param1.step", "group0.param1.exp_avg", "group0.param1.exp_avg_sq",
                           "group1.param0.step", "group1.param0.exp_avg", "group1.param0.exp_avg_sq"};
    ck_assert_int_eq(nat_optim_state_count(opt), 9);
    for (int i = 0; i < 9; i++) {
        const char *name;
        nat_tensor *t;
        TH_OK(nat_optim_state_get(opt, i, &name, &t));
        ck_assert_str_eq(name, want[i]);
        const nat_tensor *owner = i < 3 ? a : i < 6 ? b : c;
        if (strstr(name, ".step"))
            ck_assert_int_eq(nat_tensor_numel(t), 1);
        else
            ck_assert(nat_tensor_same_shape(t, owner));
        ck_assert_ptr_null(t->ctx);
    }
    ck_assert_int_eq(nat_optim_state_get(opt, 9, NULL, NULL), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "9"));
    ck_assert_int_eq(nat_optim_state_get(opt, -1, NULL, NULL), NAT_ERR_INVALID_ARG);
    nat_optim_free(opt);

    nat_optim_config mom = nat_optim_sgd_config(0.9f, false);
    TH_OK(nat_optim_new(&opt, &mom));
    TH_OK(nat_optim_add_group(opt, g0, 2, 0.0f));
    TH_OK(nat_optim_add_group(opt, g1, 1, 0.0f));
    ck_assert_int_eq(nat_optim_state_count(opt), 3);
    const char *name;
    TH_OK(nat_optim_state_get(opt, 2, &name, NULL));
    ck_assert_str_eq(name, "group1.param0.momentum_buffer");
    nat_optim_free(opt);

    nat_optim_config plain = nat_optim_sgd_config(0.0f, false);
    TH_OK(nat_optim_new(&opt, &plain));
    TH_OK(nat_optim_add_group(opt, g0, 2, 0.0f));
    ck_assert_int_eq(nat_optim_state_count(opt), 0);
    nat_optim_free(opt);

    nat_tensor_free(a);
    nat_tensor_free(b);
    nat_tensor_free(c);
}
END_TEST

/* Saving every state tensor and the step count into a fresh optimizer resumes the run bit for bit. */
START_TEST(checkpoint_round_trip_resumes_exactly)
{
    const nat_optim_config cfgs[2] = {nat_optim_adamw_config(0.9f, 0.99f, 1e-8f), nat_optim_sgd_config(0.9f, true)};
    for (int k = 0; k < 2; k++) {
        nat_rng rng;
        nat_rng_seed(&rng, 70 + k);
        int64_t s1[1] = {17}, s2[2] = {5, 3};
        nat_tensor *pa[2] = {th_randn(&rng, 1, s1, 1, true), th_randn(&rng, 2, s2, 1, true)};
        nat_tensor *pb[2] = {th_randn(&rng, 1, s1, 1, true), th_randn(&rng, 2, s2, 1, true)};
        nat_optim *a, *b;
        TH_OK(nat_optim_new(&a, &cfgs[k]));
        TH_OK(nat_optim_add_group(a, pa, 1, 0.1f));
        TH_OK(nat_optim_add_group(a, pa + 1, 1, 0.0f));
        float g[17];
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < 2; i++) {
                nat_rng_fill_normal(&rng, g, (size_t)nat_tensor_numel(pa[i]), 0, 1);
                set_grad(pa[i], g);
            }
            TH_OK(nat_optim_step(a, 0.01f));
        }
        /* "Load the checkpoint": parameters, then the optimizer state by name. */
        TH_OK(nat_optim_new(&b, &cfgs[k]));
        TH_OK(nat_optim_add_group(b, pb, 1, 0.1f));
        TH_OK(nat_optim_add_group(b, pb + 1, 1, 0.0f));
        for (int i = 0; i < 2; i++)
            memcpy(nat_tensor_f32(pb[i]), nat_tensor_f32(pa[i]), (size_t)nat_tensor_numel(pa[i]) * 4);
        ck_assert_int_eq(nat_optim_state_count(a), nat_optim_state_count(b));
        for (int i = 0; i < nat_optim_state_count(a); i++) {
            const char *name;
            nat_tensor *ta, *tb;
            TH_OK(nat_optim_state_get(a, i, &name, &ta));
            tb = state_named(b, name);
            ck_assert_msg(tb != NULL, "state %s missing in the restored optimizer", name);
            memcpy(nat_tensor_f32(tb), nat_tensor_f32(ta), (size_t)nat_tensor_numel(ta) * 4);
        }
        TH_OK(nat_optim_set_step_count(b, nat_optim_step_count(a)));
        ck_assert_int_eq(nat_optim_step_count(b), 3);
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < 2; i++) {
                nat_rng_fill_normal(&rng, g, (size_t)nat_tensor_numel(pa[i]), 0, 1);
                set_grad(pa[i], g);
                set_grad(pb[i], g);
            }
            TH_OK(nat_optim_step(a, 0.01f));
            TH_OK(nat_optim_step(b, 0.01f));
        }
        for (int i = 0; i < 2; i++)
            ck_assert_msg(memcmp(nat_tensor_f32(pa[i]), nat_tensor_f32(pb[i]), (size_t)nat_tensor_numel(pa[i]) * 4) == 0,
                          "kind %d: resumed param %d differs from the uninterrupted run", k, i);
        nat_optim_free(a);
        nat_optim_free(b);
        for (int i = 0; i < 2; i++) {
            nat_tensor_free(pa[i]);
            nat_tensor_free(pb[i]);
        }
    }
}
END_TEST

START_TEST(zero_grad_keeps_buffers_and_step_allocates_nothing)
{
    nat_rng rng;
    nat_rng_seed(&rng, 80);
    int64_t s[2] = {300, 200}; /* large enough for the threaded loops */
    nat_tensor *p = th_randn(&rng, 2, s, 1, true);
    float *g = malloc(60000 * sizeof *g);
    nat_rng_fill_normal(&rng, g, 60000, 0, 1);
    set_grad(p, g);
    nat_tensor *grad = p->grad;
    nat_optim_config c = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    nat_optim *opt;
    TH_OK(nat_optim_new(&opt, &c));
    TH_OK(nat_optim_add_group(opt, &p, 1, 0.05f));
    nat_mem_stats before = nat_mem_get_stats(NAT_CPU);
    for (int i = 0; i < 3; i++)
        TH_OK(nat_optim_step(opt, 1e-3f));
    nat_mem_stats after = nat_mem_get_stats(NAT_CPU);
    ck_assert_msg(after.requests == before.requests, "optim_step made %llu allocation requests",
                  (unsigned long long)(after.requests - before.requests));
    ck_assert_uint_eq(after.current, before.current);
    nat_optim_zero_grad(opt);
    ck_assert_ptr_eq(p->grad, grad);
    for (int64_t i = 0; i < 60000; i++)
        ck_assert_msg(nat_tensor_f32(grad)[i] == 0.0f, "gradient element %lld not zeroed", (long long)i);
    nat_optim_free(opt);
    nat_tensor_free(p);
    free(g);
}
END_TEST

START_TEST(argument_errors)
{
    nat_optim *opt;
    nat_optim_config c = nat_optim_sgd_config(1.0f, false);
    ck_assert_int_eq(nat_optim_new(&opt, &c), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "momentum 1"));
    ck_assert_ptr_null(opt);
    c = nat_optim_sgd_config(0.0f, true);
    ck_assert_int_eq(nat_optim_new(&opt, &c), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "nesterov"));
    c = nat_optim_adamw_config(0.9f, 1.0f, 1e-8f);
    ck_assert_int_eq(nat_optim_new(&opt, &c), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "beta2 1"));
    c = nat_optim_adamw_config(-0.1f, 0.999f, 1e-8f);
    ck_assert_int_eq(nat_optim_new(&opt, &c), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "beta1 -0.1"));
    c = nat_optim_adamw_config(0.9f, 0.999f, NAN);
    ck_assert_int_eq(nat_optim_new(&opt, &c), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "eps"));

    nat_rng rng;
    nat_rng_seed(&rng, 90);
    int64_t s[2] = {3, 5};
    nat_tensor *frozen = th_randn(&rng, 2, s, 1, false), *w = th_randn(&rng, 2, s, 1, true);
    frozen->name = "head.weight";
    c = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    TH_OK(nat_optim_new(&opt, &c));
    ck_assert_int_eq(nat_optim_add_group(opt, &frozen, 1, 0.0f), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "head.weight"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[3, 5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "requires_grad"));
    ck_assert_int_eq(nat_optim_add_group(opt, &w, 1, -0.1f), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "weight decay -0.1"));
    nat_tensor *twice[2] = {w, w};
    ck_assert_int_eq(nat_optim_add_group(opt, twice, 2, 0.0f), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_optim_group_count(opt), 0);
    ck_assert_int_eq(nat_optim_state_count(opt), 0);
    TH_OK(nat_optim_add_group(opt, &w, 1, 0.0f));
    ck_assert_int_eq(nat_optim_add_group(opt, &w, 1, 0.0f), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "already in group 0"));

    /* A step tensor is not a parameter. */
    nat_ctx *ctx;
    nat_tensor *st;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_zeros(ctx, &st, NAT_F32, 2, s));
    st->requires_grad = true;
    ck_assert_int_eq(nat_optim_add_group(opt, &st, 1, 0.0f), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "persistent"));
    nat_ctx_free(ctx);

    ck_assert_int_eq(nat_optim_step(opt, -1.0f), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "learning rate -1"));
    ck_assert_int_eq(nat_optim_step(opt, NAN), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_optim_step(opt, INFINITY), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_optim_step_count(opt), 0);
    ck_assert_int_eq(nat_optim_set_step_count(opt, -3), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "-3"));
    nat_optim_free(opt);
    nat_tensor_free(frozen);
    nat_tensor_free(w);
}
END_TEST

/* ---- clip_grad_norm ---- */

START_TEST(clip_grad_norm_reports_and_scales)
{
    nat_rng rng;
    nat_rng_seed(&rng, 100);
    int64_t s1[1] = {7}, s2[2] = {40, 1000}, s3[1] = {3};
    nat_tensor *p[3] = {th_randn(&rng, 1, s1, 1, true), th_randn(&rng, 2, s2, 1, true),
                        th_randn(&rng, 1, s3, 1, true)}; /* p[2] never gets a gradient */
    float *g0 = malloc(7 * sizeof *g0), *g1 = malloc(40000 * sizeof *g1);
    nat_rng_fill_normal(&rng, g0, 7, 0, 3);
    nat_rng_fill_normal(&rng, g1, 40000, 0, 0.01f);
    double sq = 0;
    for (int i = 0; i < 7; i++)
        sq += (double)g0[i] * g0[i];
    for (int i = 0; i < 40000; i++)
        sq += (double)g1[i] * g1[i];
    double norm = sqrt(sq);

    /* Below the maximum: reported, nothing scaled. */
    set_grad(p[0], g0);
    set_grad(p[1], g1);
    float total = -1;
    TH_OK(nat_clip_grad_norm(p, 3, (float)(norm * 1.5), &total));
    ck_assert_msg(fabs(total - norm) <= 1e-5 * norm, "norm %g, want %g", total, norm);
    ck_assert(memcmp(nat_tensor_f32(p[0]->grad), g0, 7 * sizeof *g0) == 0);
    ck_assert(memcmp(nat_tensor_f32(p[1]->grad), g1, 40000 * sizeof *g1) == 0);
    ck_assert_ptr_null(p[2]->grad);

    /* Above: every gradient scaled by max / (norm + 1e-6). */
    float max_norm = (float)(norm / 4);
    TH_OK(nat_clip_grad_norm(p, 3, max_norm, &total));
    ck_assert_msg(fabs(total - norm) <= 1e-5 * norm, "norm %g, want %g", total, norm);
    double coef = max_norm / (norm + 1e-6);
    double *want = malloc(40000 * sizeof *want);
    for (int i = 0; i < 7; i++)
        want[i] = g0[i] * coef;
    th_assert_close(nat_tensor_f32(p[0]->grad), want, 7, 1e-6, "clipped grad 0");
    for (int i = 0; i < 40000; i++)
        want[i] = g1[i] * coef;
    th_assert_close(nat_tensor_f32(p[1]->grad), want, 40000, 1e-6, "clipped grad 1");
    ck_assert_ptr_null(p[2]->grad);
    /* The clipped gradients now have norm max_norm: a second clip reports it and changes nothing. */
    TH_OK(nat_clip_grad_norm(p, 3, max_norm, &total));
    ck_assert_msg(fabs(total - max_norm) <= 1e-5 * max_norm, "norm after clipping %g, want %g", total, max_norm);
    TH_OK(nat_clip_grad_norm(p, 3, max_norm, NULL));

    /* A non-finite gradient: reported, gradients left alone. */
    g0[2] = INFINITY;
    set_grad(p[0], g0);
    TH_OK(nat_clip_grad_norm(p, 2, 1.0f, &total));
    ck_assert(isinf(total));
    ck_assert(memcmp(nat_tensor_f32(p[0]->grad), g0, 7 * sizeof *g0) == 0);

    /* No gradients at all: norm 0. */
    TH_OK(nat_clip_grad_norm(p + 2, 1, 1.0f, &total));
    ck_assert(total == 0.0f);

    ck_assert_int_eq(nat_clip_grad_norm(p, 3, 0.0f, &total), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "max_norm 0"));
    ck_assert_int_eq(nat_clip_grad_norm(p, 3, -1.0f, &total), NAT_ERR_INVALID_ARG);
    nat_tensor *with_null[2] = {p[0], NULL};
    ck_assert_int_eq(nat_clip_grad_norm(with_null, 2, 1.0f, &total), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "param 1"));
    for (int i = 0; i < 3; i++)
        nat_tensor_free(p[i]);
    free(g0);
    free(g1);
    free(want);
}
END_TEST

/* ---- least squares through nat_linear ---- */

/* mean((pred - target)^2) -> [1], defined here so this test depends only on nat_linear. The saved
 * tensor is the difference. */
static nat_status sqerr_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    const float *d = nat_tensor_f32(node->saved[0]);
    int64_t n = nat_tensor_numel(node->saved[0]);
    float s = 2.0f * nat_tensor_f32(g)[0] / (float)n;
    nat_tensor *gp, *gt;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gp));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gt));
    for (int64_t i = 0; i < n; i++) {
        if (gp)
            nat_tensor_f32(gp)[i] += s * d[i];
        if (gt)
            nat_tensor_f32(gt)[i] -= s * d[i];
    }
    return NAT_OK;
}
static const nat_op_def sqerr_op = {"test_mean_squared_error", sqerr_backward};

static nat_status mean_sq_err(nat_ctx *ctx, nat_tensor *pred, nat_tensor *target, nat_tensor **out)
{
    int64_t n = nat_tensor_numel(pred), one = 1;
    nat_tensor *d, *y;
    NAT_TRY(nat_ctx_empty(ctx, &d, NAT_F32, pred->ndim, pred->shape));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 1, &one));
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        float di = nat_tensor_f32(pred)[i] - nat_tensor_f32(target)[i];
        nat_tensor_f32(d)[i] = di;
        s += (double)di * di;
    }
    nat_tensor_f32(y)[0] = (float)(s / (double)n);
    nat_node *node;
    nat_tensor *ins[2] = {pred, target};
    NAT_TRY(nat_ctx_record(ctx, &sqerr_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = d;
        node->n_saved = 1;
    }
    *out = y;
    return NAT_OK;
}

static nat_status f_sqerr(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return mean_sq_err(ctx, in[0], in[1], out);
}

START_TEST(test_loss_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 110);
    int64_t s[2] = {3, 4};
    nat_tensor *in[2] = {th_randn(&rng, 2, s, 1, true), th_randn(&rng, 2, s, 1, true)};
    th_gradcheck("test squared error", f_sqerr, NULL, 2, in, 1e-2, 2e-3);
    nat_tensor_free(in[0]);
    nat_tensor_free(in[1]);
}
END_TEST

/* Fits y = x·W*ᵀ + b* (32 samples, 5 -> 3) from W = 0, b = 0; returns the final loss and the largest
 * parameter error. */
static void fit_least_squares(const nat_optim_config *cfg, float lr0, bool decay, int steps, double *init_loss,
                              double *final_loss, double *param_err)
{
    nat_rng rng;
    nat_rng_seed(&rng, 120);
    int64_t xs[2] = {32, 5}, ws[2] = {3, 5}, bs[1] = {3}, ys[2] = {32, 3};
    nat_tensor *x = th_randn(&rng, 2, xs, 1, false), *wt = th_randn(&rng, 2, ws, 1, false),
               *bt = th_randn(&rng, 1, bs, 1, false);
    nat_tensor *w, *b, *y;
    TH_OK(nat_tensor_new(&w, NAT_F32, NAT_CPU, 2, ws));
    TH_OK(nat_tensor_new(&b, NAT_F32, NAT_CPU, 1, bs));
    TH_OK(nat_tensor_new(&y, NAT_F32, NAT_CPU, 2, ys));
    nat_set_requires_grad(w, true);
    nat_set_requires_grad(b, true);
    for (int i = 0; i < 32; i++)
        for (int o = 0; o < 3; o++) {
            double s = nat_tensor_f32(bt)[o];
            for (int k = 0; k < 5; k++)
                s += (double)nat_tensor_f32(x)[i * 5 + k] * nat_tensor_f32(wt)[o * 5 + k];
            nat_tensor_f32(y)[i * 3 + o] = (float)s;
        }
    nat_optim *opt;
    TH_OK(nat_optim_new(&opt, cfg));
    TH_OK(nat_optim_add_group(opt, &w, 1, 0.0f));
    TH_OK(nat_optim_add_group(opt, &b, 1, 0.0f));
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    for (int s = 0; s < steps; s++) {
        nat_tensor *pred, *loss;
        nat_optim_zero_grad(opt);
        TH_OK(nat_linear(ctx, x, w, b, &pred));
        TH_OK(mean_sq_err(ctx, pred, y, &loss));
        if (s == 0)
            *init_loss = nat_tensor_f32(loss)[0];
        *final_loss = nat_tensor_f32(loss)[0];
        TH_OK(nat_backward(ctx, loss));
        /* Linear decay to 0 lets AdamW settle instead of hovering at the lr scale. */
        TH_OK(nat_optim_step(opt, decay ? lr0 * (1.0f - (float)s / (float)steps) : lr0));
        nat_ctx_reset(ctx);
    }
    double err = 0;
    for (int i = 0; i < 15; i++)
        err = fmax(err, fabs(nat_tensor_f32(w)[i] - nat_tensor_f32(wt)[i]));
    for (int i = 0; i < 3; i++)
        err = fmax(err, fabs(nat_tensor_f32(b)[i] - nat_tensor_f32(bt)[i]));
    *param_err = err;
    nat_ctx_free(ctx);
    nat_optim_free(opt);
    nat_tensor *all[6] = {x, wt, bt, w, b, y};
    for (int i = 0; i < 6; i++)
        nat_tensor_free(all[i]);
}

START_TEST(least_squares_converges)
{
    struct {
        nat_optim_config cfg;
        float lr;
        bool decay;
        int steps;
        const char *what;
    } runs[] = {
        {nat_optim_sgd_config(0.0f, false), 0.3f, false, 300, "sgd"},
        {nat_optim_sgd_config(0.9f, false), 0.05f, false, 300, "sgd momentum"},
        {nat_optim_sgd_config(0.9f, true), 0.05f, false, 300, "sgd nesterov"},
        {nat_optim_adamw_config(0.9f, 0.999f, 1e-8f), 0.1f, true, 600, "adamw"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        double l0, l1, err;
        fit_least_squares(&runs[r].cfg, runs[r].lr, runs[r].decay, runs[r].steps, &l0, &l1, &err);
        ck_assert_msg(l1 < 1e-9 * l0 && err < 1e-4, "%s: loss %g -> %g, parameter error %g", runs[r].what, l0, l1,
                      err);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"sgd_plain_matches_reference", sgd_plain_matches_reference},
        {"sgd_momentum_matches_reference", sgd_momentum_matches_reference},
        {"sgd_nesterov_matches_reference", sgd_nesterov_matches_reference},
        {"adamw_matches_reference", adamw_matches_reference},
        {"params_without_grad_are_skipped", params_without_grad_are_skipped},
        {"state_names_and_counts", state_names_and_counts},
        {"checkpoint_round_trip_resumes_exactly", checkpoint_round_trip_resumes_exactly},
        {"zero_grad_keeps_buffers_and_step_allocates_nothing", zero_grad_keeps_buffers_and_step_allocates_nothing},
        {"argument_errors", argument_errors},
        {"clip_grad_norm_reports_and_scales", clip_grad_norm_reports_and_scales},
        {"test_loss_gradcheck", test_loss_gradcheck},
        {"least_squares_converges", least_squares_converges},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
