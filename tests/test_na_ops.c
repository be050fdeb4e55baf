/* tests/test_na_ops.c — neighborhood attention through the autograd ops (include/nat/natten.h):
 * finite-difference gradient checks of q, k, v and rpb for the fused and unfused paths in 1-D, 2-D and
 * 3-D (with dilation, causal and non-square maps); fused equals unfused in values and gradients; strided
 * inputs; one tensor as both q and k (gradients that add up); q, k, v packed in one tensor (nat_na_packed)
 * equal to the three views, bit for bit; the fused op keeps no [.., K] tensor for backward; errors name the numbers. The kernels
 * themselves are swept against the reference in tests/test_na_cpu.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/natten.h"
#include "support/harness.h"

typedef struct na_case {
    nat_na_params p;
    bool rpb;
} na_case;

static nat_status f_fused(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const na_case *c = u;
    return nat_na(ctx, in[0], in[1], in[2], in[3], &c->p, out);
}

static nat_status f_unfused(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const na_case *c = u;
    nat_tensor *a;
    NAT_TRY(nat_na_qk(ctx, in[0], in[1], in[3], &c->p, &a));
    NAT_TRY(nat_softmax(ctx, a, &a));
    return nat_na_av(ctx, a, in[2], &c->p, out);
}

/* q, k, v [B, heads, *spatial, D] and rpb, all requiring grad. Small values keep softmax smooth. */
static void make_inputs(nat_rng *rng, const na_case *c, int64_t B, int64_t heads, const int64_t *spatial, int64_t D,
                        nat_tensor **in)
{
    int64_t s[6] = {B, heads};
    for (int a = 0; a < c->p.ndim; a++)
        s[2 + a] = spatial[a];
    s[2 + c->p.ndim] = D;
    for (int i = 0; i < 3; i++)
        in[i] = th_randn(rng, c->p.ndim + 3, s, 0.7f, true);
    in[3] = NULL;
    if (c->rpb) {
        int64_t r[4] = {heads, 2 * c->p.kernel[0] - 1, 2 * c->p.kernel[1] - 1, 2 * c->p.kernel[2] - 1};
        in[3] = th_randn(rng, c->p.ndim + 1, r, 0.5f, true);
    }
}

static void free_inputs(nat_tensor **in)
{
    for (int i = 0; i < 4; i++)
        nat_tensor_free(in[i]);
}

static const struct {
    const char *name;
    na_case c;
    int64_t B, heads, spatial[3], D;
} grad_cases[] = {
    {"1d k3 d2 rpb", {{1, {3, 1, 1}, {2, 1, 1}, {0}, 0}, true}, 1, 2, {7}, 3},
    {"1d k5 causal", {{1, {5, 1, 1}, {1, 1, 1}, {1, 0, 0}, 0}, false}, 2, 1, {8}, 4},
    {"2d k3 rpb 5x4", {{2, {3, 3, 1}, {1, 1, 1}, {0}, 0}, true}, 1, 2, {5, 4}, 3},
    {"2d k3 d2 6x7", {{2, {3, 3, 1}, {2, 2, 1}, {0}, 0.3f}, true}, 1, 1, {6, 7}, 2},
    {"2d k3 causal x", {{2, {3, 3, 1}, {1, 1, 1}, {1, 0, 0}, 0}, false}, 1, 1, {4, 5}, 3},
    {"3d k3 rpb", {{3, {3, 3, 3}, {1, 1, 1}, {0}, 0}, true}, 1, 1, {3, 4, 3}, 2},
    {"3d k3 causal t", {{3, {3, 3, 3}, {1, 1, 1}, {1, 0, 0}, 0}, false}, 1, 1, {3, 3, 4}, 2},
};

START_TEST(gradcheck_fused_and_unfused)
{
    nat_rng rng;
    nat_rng_seed(&rng, 100 + (uint64_t)_i);
    const na_case *c = &grad_cases[_i].c;
    nat_tensor *in[4];
    make_inputs(&rng, c, grad_cases[_i].B, grad_cases[_i].heads, grad_cases[_i].spatial, grad_cases[_i].D, in);
    char what[96];
    snprintf(what, sizeof what, "fused %s", grad_cases[_i].name);
    th_gradcheck(what, f_fused, (void *)c, 4, in, 1e-2, 3e-3);
    snprintf(what, sizeof what, "unfused %s", grad_cases[_i].name);
    th_gradcheck(what, f_unfused, (void *)c, 4, in, 1e-2, 3e-3);
    free_inputs(in);
}
END_TEST

/* Runs f forward and backward with a random output gradient R; returns the output and copies of the
 * gradients of in[0..n_in) (NULL for absent inputs). */
static void run_fb(th_fn f, const void *u, nat_tensor **in, int n_in, const float *R, float **out, float **grads)
{
    for (int i = 0; i < n_in; i++)
        if (in[i])
            nat_zero_grad(in[i]);
    nat_ctx *ctx;
    nat_tensor *y, *g;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f(ctx, in, (void *)u, &y));
    int64_t n = nat_tensor_numel(y);
    *out = malloc((size_t)n * sizeof(float));
    memcpy(*out, nat_tensor_f32(y), (size_t)n * sizeof(float));
    TH_OK(nat_ctx_empty(ctx, &g, NAT_F32, y->ndim, y->shape));
    TH_OK(nat_tensor_copy_from(g, R, n));
    TH_OK(nat_backward_from(ctx, y, g));
    for (int i = 0; i < n_in; i++) {
        grads[i] = NULL;
        if (!in[i])
            continue;
        int64_t m = nat_tensor_numel(in[i]);
        grads[i] = malloc((size_t)m * sizeof(float));
        memcpy(grads[i], nat_tensor_f32(in[i]->grad), (size_t)m * sizeof(float));
    }
    nat_ctx_free(ctx);
}

START_TEST(fused_equals_unfused)
{
    static const struct {
        na_case c;
        int64_t spatial[3], D;
    } cases[] = {
        {{{2, {7, 7, 1}, {1, 1, 1}, {0}, 0}, true}, {14, 9}, 32},
        {{{2, {5, 3, 1}, {2, 3, 1}, {0}, 0}, true}, {11, 10}, 20},
        {{{2, {3, 5, 1}, {1, 1, 1}, {1, 1, 0}, 0}, false}, {6, 8}, 16},
        {{{1, {9, 1, 1}, {3, 1, 1}, {0}, 0}, true}, {31}, 8},
        {{{3, {3, 5, 3}, {1, 1, 2}, {0, 1, 0}, 0}, false}, {4, 6, 7}, 8},
    };
    nat_rng rng;
    nat_rng_seed(&rng, 200);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const na_case *c = &cases[ci].c;
        nat_tensor *in[4];
        make_inputs(&rng, c, 2, 3, cases[ci].spatial, cases[ci].D, in);
        int64_t n = nat_tensor_numel(in[0]);
        float *R = malloc((size_t)n * sizeof *R);
        nat_rng_fill_normal(&rng, R, (size_t)n, 0, 1);
        float *o1, *o2, *g1[4], *g2[4];
        run_fb(f_fused, c, in, 4, R, &o1, g1);
        run_fb(f_unfused, c, in, 4, R, &o2, g2);
        char what[64];
        snprintf(what, sizeof what, "case %zu output", ci);
        th_assert_close_f(o1, o2, n, 1e-5, what);
        for (int i = 0; i < 4; i++) {
            if (!in[i])
                continue;
            snprintf(what, sizeof what, "case %zu gradient of input %d", ci, i);
            th_assert_close_f(g1[i], g2[i], nat_tensor_numel(in[i]), 1e-4, what);
            free(g1[i]);
            free(g2[i]);
        }
        free(o1);
        free(o2);
        free(R);
        free_inputs(in);
    }
}
END_TEST

/* One step tensor (q scaled, so it has a context) fed to NA as both q and k: the backward writes q's
 * gradient into the new buffer and must add k's to it, not overwrite it. v and the attention weights of
 * the unfused path are used once and take the direct route. */
static nat_status f_shared_qk(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out, bool fused)
{
    const na_case *c = u;
    nat_tensor *qs, *a;
    NAT_TRY(nat_scale(ctx, in[0], 0.8f, &qs));
    if (fused)
        return nat_na(ctx, qs, qs, in[2], in[3], &c->p, out);
    NAT_TRY(nat_na_qk(ctx, qs, qs, in[3], &c->p, &a));
    NAT_TRY(nat_softmax(ctx, a, &a));
    return nat_na_av(ctx, a, in[2], &c->p, out);
}
static nat_status f_shared_fused(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return f_shared_qk(ctx, in, u, out, true);
}
static nat_status f_shared_unfused(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return f_shared_qk(ctx, in, u, out, false);
}

START_TEST(shared_input_gradients_add_up)
{
    na_case c = {{2, {3, 3, 1}, {1, 1, 1}, {0}, 0}, true};
    nat_rng rng;
    nat_rng_seed(&rng, 400);
    nat_tensor *in[4];
    const int64_t spatial[2] = {5, 4};
    make_inputs(&rng, &c, 1, 2, spatial, 3, in);
    nat_tensor *used[4] = {in[0], NULL, in[2], in[3]}; /* in[1] is not read: no gradient to check */
    th_gradcheck("fused, q and k one step tensor", f_shared_fused, &c, 4, used, 1e-2, 3e-3);
    th_gradcheck("unfused, q and k one step tensor", f_shared_unfused, &c, 4, used, 1e-2, 3e-3);
    free_inputs(in);
}
END_TEST

/* q, k, v as permuted views ([B, H, W, heads, D] storage seen as [B, heads, H, W, D]). */
static nat_status f_fused_strided(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const na_case *c = u;
    static const int perm[5] = {0, 3, 1, 2, 4};
    nat_tensor *v[3];
    for (int i = 0; i < 3; i++)
        NAT_TRY(nat_permute(ctx, in[i], perm, &v[i]));
    return nat_na(ctx, v[0], v[1], v[2], in[3], &c->p, out);
}

START_TEST(strided_inputs)
{
    na_case c = {{2, {3, 3, 1}, {1, 1, 1}, {0}, 0}, true};
    nat_rng rng;
    nat_rng_seed(&rng, 300);
    int64_t s[5] = {1, 4, 5, 2, 3}, r[3] = {2, 5, 5};
    nat_tensor *in[4] = {th_randn(&rng, 5, s, 0.7f, true), th_randn(&rng, 5, s, 0.7f, true),
                         th_randn(&rng, 5, s, 0.7f, true), th_randn(&rng, 3, r, 0.5f, true)};
    th_gradcheck("fused on permuted views", f_fused_strided, &c, 4, in, 1e-2, 3e-3);
    free_inputs(in);
}
END_TEST

/* ---- q, k, v packed in one tensor [3, B, heads, *spatial, D] (nat_na_packed) ---- */

typedef struct packed_case {
    na_case c;
    int twice;     /* the output is na(P) + na(P): the second backward adds to the gradient */
    nat_precision prec;
} packed_case;

static nat_status f_packed(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const packed_case *pc = u;
    nat_ctx_set_precision(ctx, pc->prec);
    /* a step copy of the leaf (as the NA layer's is), so the first backward writes its gradient directly */
    static const int same[6] = {0, 1, 2, 3, 4, 5};
    nat_tensor *P;
    NAT_TRY(nat_permute_reshape(ctx, in[0], in[0]->ndim, in[0]->shape, same, in[0]->ndim, in[0]->shape, &P));
    NAT_TRY(nat_na_packed(ctx, P, in[1], &pc->c.p, out));
    if (pc->twice) {
        nat_tensor *b;
        NAT_TRY(nat_na_packed(ctx, P, in[1], &pc->c.p, &b));
        NAT_TRY(nat_add(ctx, *out, b, out));
    }
    return NAT_OK;
}

/* The same through nat_na on views of the three thirds. */
static nat_status f_split(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const packed_case *pc = u;
    nat_ctx_set_precision(ctx, pc->prec);
    nat_tensor *t[3];
    for (int i = 0; i < 3; i++) {
        NAT_TRY(nat_slice(ctx, in[0], 0, i, i + 1, &t[i]));
        NAT_TRY(nat_reshape(ctx, t[i], in[0]->ndim - 1, in[0]->shape + 1, &t[i]));
    }
    NAT_TRY(nat_na(ctx, t[0], t[1], t[2], in[1], &pc->c.p, out));
    if (pc->twice) {
        nat_tensor *b;
        NAT_TRY(nat_na(ctx, t[0], t[1], t[2], in[1], &pc->c.p, &b));
        NAT_TRY(nat_add(ctx, *out, b, out));
    }
    return NAT_OK;
}

/* nat_na_packed gives nat_na's output and gradients bit for bit (same kernels on the same values), in
 * f32 and under bf16 autocast, used once (dq, dk, dv written straight into the packed gradient) and
 * twice (added); and passes a finite-difference check. */
START_TEST(packed_equals_split)
{
    static const struct {
        packed_case pc;
        int64_t B, heads, spatial[2], D;
    } cases[] = {
        {{{{2, {3, 3, 1}, {1, 1, 1}, {0}, 0}, true}, 0, NAT_PREC_F32}, 2, 2, {5, 4}, 8},
        {{{{2, {3, 5, 1}, {2, 1, 1}, {1, 0, 0}, 0.4f}, false}, 1, NAT_PREC_F32}, 1, 3, {7, 6}, 6},
        {{{{1, {5, 1, 1}, {2, 1, 1}, {0, 0, 0}, 0}, false}, 0, NAT_PREC_BF16}, 2, 1, {13}, 16},
        {{{{2, {7, 7, 1}, {1, 1, 1}, {0}, 0}, true}, 1, NAT_PREC_BF16}, 1, 2, {9, 11}, 32},
    };
    nat_rng rng;
    nat_rng_seed(&rng, 400);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const packed_case *pc = &cases[ci].pc;
        const int nd = pc->c.p.ndim;
        int64_t s[6] = {3, cases[ci].B, cases[ci].heads};
        for (int a = 0; a < nd; a++)
            s[3 + a] = cases[ci].spatial[a];
        s[3 + nd] = cases[ci].D;
        int64_t r[3] = {cases[ci].heads, 2 * pc->c.p.kernel[0] - 1, 2 * pc->c.p.kernel[1] - 1};
        nat_tensor *in[2] = {th_randn(&rng, nd + 4, s, 0.7f, true), pc->c.rpb ? th_randn(&rng, nd + 1, r, 0.5f, true) : NULL};
        const int64_t n = nat_tensor_numel(in[0]) / 3;
        float *R = malloc((size_t)n * sizeof *R), *o1, *o2, *g1[2], *g2[2];
        nat_rng_fill_normal(&rng, R, (size_t)n, 0, 1);
        run_fb(f_packed, pc, in, 2, R, &o1, g1);
        run_fb(f_split, pc, in, 2, R, &o2, g2);
        ck_assert_msg(memcmp(o1, o2, (size_t)n * sizeof(float)) == 0, "case %zu: packed output differs from nat_na's", ci);
        for (int i = 0; i < 2; i++)
            if (in[i]) {
                ck_assert_msg(memcmp(g1[i], g2[i], (size_t)nat_tensor_numel(in[i]) * sizeof(float)) == 0,
                              "case %zu: packed gradient of %s differs from nat_na's", ci, i ? "rpb" : "qkv");
                free(g1[i]), free(g2[i]);
            }
        free(o1), free(o2), free(R);
        if (pc->prec == NAT_PREC_F32) {
            char what[64];
            snprintf(what, sizeof what, "packed case %zu", ci);
            th_gradcheck(what, f_packed, (void *)pc, pc->c.rpb ? 2 : 1, in, 1e-2, 3e-3);
        }
        nat_tensor_free(in[0]), nat_tensor_free(in[1]);
    }
    /* a tensor that is not [3, B, heads, *spatial, D] is refused, naming its shape */
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    int64_t bad[5] = {2, 1, 1, 5, 4};
    nat_tensor *x = th_randn(&rng, 5, bad, 1.0f, false);
    const nat_na_params p = nat_na_params_make(1, 3, 1);
    ck_assert_int_eq(nat_na_packed(ctx, x, NULL, &p, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 1, 1, 5, 4]"));
    nat_tensor_free(x);
    nat_ctx_free(ctx);
}
END_TEST

START_TEST(fused_keeps_no_weights)
{
    /* NAT-Mini's first level shape, batch 1: the [.., 49] weights would be 49/32 the size of q. */
    na_case c = {{2, {7, 7, 1}, {1, 1, 1}, {0}, 0}, true};
    nat_rng rng;
    nat_rng_seed(&rng, 400);
    nat_tensor *in[4];
    int64_t sp[2] = {28, 28};
    make_inputs(&rng, &c, 1, 2, sp, 32, in);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *y;
    /* A first run sizes the context's pools, so the second measures tensors only. */
    TH_OK(f_unfused(ctx, in, &c, &y));
    nat_ctx_reset(ctx);
    size_t before = nat_mem_get_stats(NAT_CPU).current;
    TH_OK(nat_na(ctx, in[0], in[1], in[2], in[3], &c.p, &y));
    size_t kept = nat_mem_get_stats(NAT_CPU).current - before;
    size_t q_bytes = (size_t)nat_tensor_numel(in[0]) * 4, weights = (size_t)2 * 28 * 28 * 49 * 4;
    /* Output plus one float per query (lse), rounded by the allocator; no room for the weights. */
    ck_assert_msg(kept < q_bytes + weights / 4, "fused forward kept %zu bytes (q is %zu, weights would be %zu)", kept,
                  q_bytes, weights);
    nat_ctx_reset(ctx);
    before = nat_mem_get_stats(NAT_CPU).current;
    TH_OK(f_unfused(ctx, in, &c, &y));
    size_t kept_unfused = nat_mem_get_stats(NAT_CPU).current - before;
    ck_assert_msg(kept_unfused > kept + weights, "unfused kept %zu, fused %zu", kept_unfused, kept);
    nat_ctx_free(ctx);
    free_inputs(in);
}
END_TEST

START_TEST(errors_name_the_numbers)
{
    nat_rng rng;
    nat_rng_seed(&rng, 500);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *y;
    int64_t s[5] = {1, 2, 5, 5, 4}, s2[5] = {1, 2, 5, 6, 4}, r[3] = {2, 13, 13}, rbad[3] = {2, 7, 7};
    nat_tensor *q = th_randn(&rng, 5, s, 1, false), *k2 = th_randn(&rng, 5, s2, 1, false),
               *rpb = th_randn(&rng, 3, r, 1, false), *rpb_bad = th_randn(&rng, 3, rbad, 1, false);
    nat_na_params p7 = nat_na_params_make(2, 7, 1);
    th_expect_error(nat_na(ctx, q, q, q, NULL, &p7, &y), NAT_ERR_SHAPE, "5", "7");
    nat_na_params p3 = nat_na_params_make(2, 3, 2);
    th_expect_error(nat_na(ctx, q, q, q, NULL, &p3, &y), NAT_ERR_SHAPE, "dilation", NULL);
    nat_na_params p4 = nat_na_params_make(2, 4, 1);
    th_expect_error(nat_na(ctx, q, q, q, NULL, &p4, &y), NAT_ERR_INVALID_ARG, "4", NULL);
    nat_na_params p5 = nat_na_params_make(2, 5, 1);
    th_expect_error(nat_na(ctx, q, k2, q, NULL, &p5, &y), NAT_ERR_SHAPE, "[1, 2, 5, 5, 4]", "[1, 2, 5, 6, 4]");
    nat_na_params p3b = nat_na_params_make(2, 3, 1);
    th_expect_error(nat_na(ctx, q, q, q, rpb_bad, &p3b, &y), NAT_ERR_SHAPE, "[2, 7, 7]", "[2, 5, 5]");
    nat_na_params p7c = nat_na_params_make(2, 7, 1);
    p7c.kernel[0] = p7c.kernel[1] = 3;
    p7c.causal[0] = 1;
    th_expect_error(nat_na(ctx, q, q, q, rpb, &p7c, &y), NAT_ERR_INVALID_ARG, "causal", NULL);
    th_expect_error(nat_na2d(ctx, q, q, q, NULL, &(nat_na_params){1, {3, 3, 3}, {1, 1, 1}, {0}, 0}, &y),
                 NAT_ERR_INVALID_ARG, "na2d", NULL);
    nat_ctx_free(ctx);
    nat_tensor_free(q);
    nat_tensor_free(k2);
    nat_tensor_free(rpb);
    nat_tensor_free(rpb_bad);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("na_ops");
    TCase *tc = tcase_create("gradcheck_fused_and_unfused");
    tcase_add_loop_test(tc, gradcheck_fused_and_unfused, 0, (int)(sizeof grad_cases / sizeof *grad_cases));
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"fused_equals_unfused", fused_equals_unfused},
        {"strided_inputs", strided_inputs},
        {"shared_input_gradients_add_up", shared_input_gradients_add_up},
        {"packed_equals_split", packed_equals_split},
        {"fused_keeps_no_weights", fused_keeps_no_weights},
        {"errors_name_the_numbers", errors_name_the_numbers},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
