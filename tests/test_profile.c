/* tests/test_profile.c — what nat-profile measures with (bench/profile.h) and the model switches it
 * uses:
 *  - the NA implementations of nat_profile_set_na_impl (unfused, gather) give the fused path's logits and
 *    gradients; the gather ops' gradients by finite differences;
 *  - the trace events come in order and the per-layer rows add up to the traced step, in time, memory
 *    and parameters, for training and inference;
 *  - the CSV: a header, then one parsable row per run with as many fields as the header.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h> /* omp_set_num_threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nat/layers.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "bench/bench.h"
#include "models/nat/nat_internal.h" /* nat_model_get_na_fn */
#include "support/harness.h"
#include "bench/profile.h"

static nat_model_desc tiny_desc(void)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "tiny");
    d.in_chans = 2, d.num_classes = 4, d.img_size = 24, d.embed_dim = 8;
    d.depths[0] = 2, d.depths[1] = 1, d.num_levels = 2;
    d.heads[0] = 2, d.heads[1] = 2;
    d.kernel_size = 3;
    d.dilations[0][1] = 2;
    d.mlp_ratio = 2.0f;
    d.drop_path_rate = 0.0f;
    return d;
}

/* Logits and every parameter gradient of one forward + backward with the given NA implementation. */
static float *run_impl(nat_profile_na_impl impl, int64_t *n)
{
    nat_model_desc d = tiny_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_profile_set_na_impl(m, impl);
    ck_assert(impl == NAT_PROFILE_NA_FUSED ? nat_model_get_na_fn(m) == NULL : nat_model_get_na_fn(m) != NULL);
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    int64_t xs[4] = {2, 2, 24, 24};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, false), *logits, *loss;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const int32_t labels[2] = {0, 3};
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &logits));
    TH_OK(nat_cross_entropy(ctx, logits, labels, 0.0f, &loss));
    const nat_param_list *pl = nat_model_params(m);
    *n = 8 + nat_param_list_numel(pl);
    float *out = malloc(sizeof *out * (size_t)*n), *at = out + 8;
    TH_OK(nat_tensor_copy_to(logits, out, 8));
    TH_OK(nat_backward(ctx, loss));
    for (int i = 0; i < pl->count; i++) {
        int64_t k = nat_tensor_numel(pl->items[i].tensor);
        TH_OK(nat_tensor_copy_to(pl->items[i].tensor->grad, at, k));
        at += k;
    }
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
    return out;
}

START_TEST(na_impls_agree)
{
    int64_t n, n2;
    float *fused = run_impl(NAT_PROFILE_NA_FUSED, &n);
    const nat_profile_na_impl others[2] = {NAT_PROFILE_NA_UNFUSED, NAT_PROFILE_NA_GATHER};
    for (int i = 0; i < 2; i++) {
        float *o = run_impl(others[i], &n2);
        ck_assert_int_eq(n, n2);
        char what[64];
        snprintf(what, sizeof what, "%s vs fused: logits and gradients", nat_profile_na_impl_name(others[i]));
        th_assert_close_f(o, fused, n, 2e-5, what);
        free(o);
    }
    free(fused);
    ck_assert_str_eq(nat_profile_na_impl_name(NAT_PROFILE_NA_GATHER), "gather");
}
END_TEST

static nat_na_params g_p;
static int g_transpose;
static int64_t g_sp[3];

static nat_status f_gather(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_bench_na_gather(ctx, in[0], &g_p, g_transpose, out);
}

static nat_status f_gather_rpb(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_bench_na_gather_rpb(ctx, in[0], &g_p, g_sp, out);
}

START_TEST(gather_ops)
{
    omp_set_num_threads(1);
    nat_rng rng;
    nat_rng_seed(&rng, 9);
    g_p = nat_na_params_make(2, 3, 2);
    g_p.kernel[1] = 5, g_p.dilation[1] = 1;
    int64_t ts[5] = {2, 2, 7, 6, 3};
    nat_tensor *t = th_randn(&rng, 5, ts, 1.0f, true), *in[1] = {t};
    /* slot (a, b) of query (y, x) is key ((s_y + a)·d_y + g_y, s_x + b): spot-check query (6, 0) */
    nat_ctx *ctx;
    nat_tensor *g;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_bench_na_gather(ctx, t, &g_p, 0, &g));
    ck_assert_int_eq(g->shape[2], 42);
    ck_assert_int_eq(g->shape[3], 15);
    /* y = 6, d = 2: group 0, p = 3, Lg = 4, s = clamp(3 - 1, 0, 1) = 1 -> rows 2, 4, 6; x = 0: cols 0..4 */
    const float *T = nat_tensor_f32(t), *G = nat_tensor_f32(g);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 5; b++)
            for (int e = 0; e < 3; e++)
                ck_assert(G[((6 * 6 + 0) * 15 + a * 5 + b) * 3 + e] == T[((2 + 2 * a) * 6 + b) * 3 + e]);
    nat_ctx_free(ctx);
    for (g_transpose = 0; g_transpose < 2; g_transpose++)
        th_gradcheck(g_transpose ? "na_gather transposed" : "na_gather", f_gather, NULL, 1, in, 1e-2, 1e-3);
    int64_t rs[3] = {2, 5, 9};
    nat_tensor *rpb = th_randn(&rng, 3, rs, 1.0f, true);
    g_sp[0] = 7, g_sp[1] = 6;
    in[0] = rpb;
    th_gradcheck("na_gather_rpb", f_gather_rpb, NULL, 1, in, 1e-2, 1e-3);
    nat_tensor_free(rpb);
    nat_tensor_free(t);
}
END_TEST

/* ---- trace and accounting ---- */

typedef struct ev_log {
    int n, n_back;
    nat_model_part_event ev[256];
} ev_log;

static void on_ev(void *u, const nat_model_part_event *e)
{
    ev_log *l = u;
    if (l->n < 256)
        l->ev[l->n++] = *e;
    l->n_back += e->backward;
}

START_TEST(trace_events)
{
    nat_model_desc d = tiny_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    ev_log log = {0};
    nat_model_set_trace(m, on_ev, &log);
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    int64_t xs[4] = {1, 2, 24, 24};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, false), *logits, *loss;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const int32_t label = 1;
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &logits));
    /* tokenizer, 3 layers x 4 parts, 1 downsampler, head */
    const int parts = 1 + 3 * 4 + 1 + 1;
    ck_assert_int_eq(log.n, parts);
    ck_assert_int_eq(log.n_back, 0);
    ck_assert_int_eq(log.ev[0].kind, NAT_PART_TOKENIZER);
    ck_assert_int_eq(log.ev[1].kind, NAT_PART_NORM1);
    ck_assert_int_eq(log.ev[2].kind, NAT_PART_ATTN);
    ck_assert_int_eq(log.ev[4].kind, NAT_PART_MLP);
    ck_assert_int_eq(log.ev[8].layer, 1);
    ck_assert_int_eq(log.ev[9].kind, NAT_PART_DOWNSAMPLE);
    ck_assert_int_eq(log.ev[10].level, 1);
    ck_assert_int_eq(log.ev[parts - 1].kind, NAT_PART_HEAD);
    TH_OK(nat_cross_entropy(ctx, logits, &label, 0.0f, &loss));
    TH_OK(nat_backward(ctx, loss));
    /* backward: the same parts in reverse order */
    ck_assert_int_eq(log.n, 2 * parts);
    for (int i = 0; i < parts; i++) {
        const nat_model_part_event *f = &log.ev[i], *b = &log.ev[2 * parts - 1 - i];
        ck_assert(b->backward);
        ck_assert_int_eq(b->kind, f->kind);
        ck_assert_int_eq(b->level, f->level);
        ck_assert_int_eq(b->layer, f->layer);
    }
    /* the markers pass gradients on unchanged: the same gradients as without tracing */
    const nat_param_list *pl = nat_model_params(m);
    int64_t n = nat_param_list_numel(pl);
    float *traced = malloc(sizeof *traced * (size_t)n), *plain = malloc(sizeof *plain * (size_t)n), *at = traced;
    for (int i = 0; i < pl->count; i++) {
        TH_OK(nat_tensor_copy_to(pl->items[i].tensor->grad, at, nat_tensor_numel(pl->items[i].tensor)));
        at += nat_tensor_numel(pl->items[i].tensor);
    }
    nat_model_zero_grad(m);
    nat_model_set_trace(m, NULL, NULL);
    nat_ctx_reset(ctx);
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &logits));
    TH_OK(nat_cross_entropy(ctx, logits, &label, 0.0f, &loss));
    TH_OK(nat_backward(ctx, loss));
    at = plain;
    for (int i = 0; i < pl->count; i++) {
        TH_OK(nat_tensor_copy_to(pl->items[i].tensor->grad, at, nat_tensor_numel(pl->items[i].tensor)));
        at += nat_tensor_numel(pl->items[i].tensor);
    }
    th_assert_close_f(traced, plain, n, 0.0, "gradients with and without the trace markers");
    ck_assert_int_eq(log.n, 2 * parts);
    free(traced);
    free(plain);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

static void check_accounting(const nat_profile_opts *o, const nat_profile_result *r)
{
    ck_assert_int_gt(r->n_rows, 0);
    double t = 0;
    int64_t params = 0, act = 0;
    for (int i = 0; i < r->n_rows; i++) {
        ck_assert_msg(r->rows[i].fwd_s >= 0 && r->rows[i].bwd_s >= 0, "%s: negative time", r->rows[i].name);
        t += r->rows[i].fwd_s + r->rows[i].bwd_s;
        params += r->rows[i].params;
        act += r->rows[i].act_bytes;
    }
    ck_assert_msg(fabs(t - r->traced_total_s) <= 1e-9 * (1 + r->traced_total_s), "rows sum to %.9f s, the step took %.9f s",
                  t, r->traced_total_s);
    ck_assert_int_eq(params, r->params);
    ck_assert_msg(act > 0, "activations %lld", (long long)act);
    ck_assert(r->step_median_s > 0 && r->images_per_s > 0);
    ck_assert(fabs(r->images_per_s - o->batch / r->step_median_s) < 1e-9 * r->images_per_s);
    ck_assert(r->alloc_peak >= r->alloc_persistent && r->alloc_persistent > 0);
    ck_assert(r->rss_peak > 0);
    ck_assert(fabs(r->mfu - r->gflops / o->roofline_gflops) < 1e-12);
}

START_TEST(accounting_and_csv)
{
    nat_profile_opts o = nat_profile_opts_default();
    o.desc = tiny_desc();
    snprintf(o.label, sizeof o.label, "tiny");
    o.batch = 2, o.res = 24, o.steps = 2, o.warmup = 1, o.trace_steps = 2;
    nat_profile_result rt, ri;
    TH_OK(nat_profile_run(&o, &rt));
    check_accounting(&o, &rt);
    ck_assert_str_eq(rt.rows[0].name, "tokenizer");
    ck_assert_str_eq(rt.rows[rt.n_rows - 3].name, "loss");
    ck_assert(rt.flop_per_image == 6.0 * (double)rt.macs_per_image);
    nat_profile_opts oi = o;
    oi.train = false;
    oi.na_impl = NAT_PROFILE_NA_GATHER;
    oi.trace_steps = 3;
    TH_OK(nat_profile_run(&oi, &ri));
    check_accounting(&oi, &ri);
    ck_assert(ri.flop_per_image == 2.0 * (double)ri.macs_per_image);

    char path[] = "/tmp/nat_profile_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    TH_OK(nat_profile_csv_append(path, &o, &rt));
    TH_OK(nat_profile_csv_append(path, &oi, &ri));
    FILE *f = fopen(path, "r");
    char line[3][1024];
    int lines = 0;
    while (lines < 3 && fgets(line[lines], sizeof line[lines], f))
        lines++;
    char extra[64];
    ck_assert_int_eq(lines, 3); /* one header, two rows */
    ck_assert(fgets(extra, sizeof extra, f) == NULL);
    fclose(f);
    unlink(path);
    const char *names[64];
    char *save = NULL;
    int nh = 0;
    for (char *t = strtok_r(line[0], ",\n", &save); t && nh < 64; t = strtok_r(NULL, ",\n", &save))
        names[nh++] = t;
    ck_assert_int_gt(nh, 20);
    for (int row = 1; row < 3; row++) {
        const char *vals[64];
        int nv = 0;
        char *s2 = NULL;
        for (char *t = strtok_r(line[row], ",\n", &s2); t && nv < 64; t = strtok_r(NULL, ",\n", &s2))
            vals[nv++] = t;
        ck_assert_int_eq(nv, nh);
        for (int i = 0; i < nh; i++) {
            if (!strcmp(names[i], "model"))
                ck_assert_str_eq(vals[i], "tiny");
            if (!strcmp(names[i], "mode"))
                ck_assert_str_eq(vals[i], row == 1 ? "train" : "infer");
            if (!strcmp(names[i], "na_impl"))
                ck_assert_str_eq(vals[i], row == 1 ? "fused" : "gather");
            if (!strcmp(names[i], "images_per_s")) {
                char *end;
                double v = strtod(vals[i], &end);
                ck_assert(*end == 0 && v > 0);
                const nat_profile_result *r = row == 1 ? &rt : &ri;
                ck_assert(fabs(v - r->images_per_s) <= 1e-4 * (1 + r->images_per_s));
            }
        }
    }
    nat_profile_opts bad = o;
    bad.steps = 0;
    th_expect_error(nat_profile_run(&bad, &rt), NAT_ERR_INVALID_ARG, "steps 0", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("profile");
    struct {
        const char *name;
        const TTest *fn;
    } tc_list[] = {
        {"na_impls_agree", na_impls_agree},
        {"gather_ops", gather_ops},
        {"trace_events", trace_events},
        {"accounting_and_csv", accounting_and_csv},
    };
    for (size_t i = 0; i < sizeof tc_list / sizeof *tc_list; i++) {
        TCase *tc = tcase_create(tc_list[i].name);
        tcase_add_test(tc, tc_list[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
