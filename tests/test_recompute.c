/* tests/test_recompute.c — activation checkpointing (nat_recompute in include/nat/autograd.h, and
 * nat_model_set_recompute): a checkpointed call's gradients against the plain call's (bitwise) and
 * against finite differences; the recomputation runs under the forward's precision; without a tape the
 * function runs once and nothing is recorded; a function that returns its input is refused. The NAT
 * model with every layer checkpointed: the same loss and the same gradient of every parameter, bit for
 * bit, with drop-path and layer scale on (the recomputation draws the same masks, the caller's
 * generator ends in the same state), and the memory a training forward holds drops to a fraction. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/model.h"
#include "support/harness.h"

/* ---- a small function: y = gelu(x W) + x ---- */

typedef struct small_fn {
    nat_tensor *w;
    int calls;
} small_fn;

static nat_status small_body(nat_ctx *ctx, nat_tensor *x, void *user, bool recompute, nat_tensor **y)
{
    small_fn *u = user;
    (void)recompute;
    u->calls++;
    nat_tensor *h;
    NAT_TRY(nat_matmul(ctx, x, u->w, &h));
    NAT_TRY(nat_gelu(ctx, h, &h));
    return nat_add(ctx, h, x, y);
}

static nat_status identity_body(nat_ctx *ctx, nat_tensor *x, void *user, bool recompute, nat_tensor **y)
{
    (void)ctx, (void)user, (void)recompute;
    *y = x;
    return NAT_OK;
}

/* Checkpointed twice in a row, then summed: the th_fn form for the gradient check. */
static nat_status chain_fn(nat_ctx *ctx, nat_tensor **in, void *user, nat_tensor **out)
{
    small_fn u = {in[1], 0};
    (void)user;
    nat_tensor *h;
    NAT_TRY(nat_recompute(ctx, small_body, &u, sizeof u, in[0], in[1], &h));
    NAT_TRY(nat_recompute(ctx, small_body, &u, sizeof u, h, in[1], &h));
    return nat_sum(ctx, h, out);
}

static nat_status chain_plain(nat_ctx *ctx, nat_tensor **in, void *user, nat_tensor **out)
{
    small_fn u = {in[1], 0};
    (void)user;
    nat_tensor *h;
    NAT_TRY(small_body(ctx, in[0], &u, false, &h));
    NAT_TRY(small_body(ctx, h, &u, false, &h));
    return nat_sum(ctx, h, out);
}

/* Loss and gradients of x and w through f. */
static void grads_of(th_fn f, nat_tensor *x, nat_tensor *w, nat_precision prec_fwd, nat_precision prec_bwd,
                     float *loss, float *gx, float *gw)
{
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_zero_grad(x);
    nat_zero_grad(w);
    nat_tensor *in[2] = {x, w}, *out;
    nat_ctx_set_precision(ctx, prec_fwd);
    TH_OK(f(ctx, in, NULL, &out));
    nat_ctx_set_precision(ctx, prec_bwd);
    *loss = nat_tensor_f32(out)[0];
    TH_OK(nat_backward(ctx, out));
    memcpy(gx, nat_tensor_f32(x->grad), sizeof(float) * (size_t)nat_tensor_numel(x));
    memcpy(gw, nat_tensor_f32(w->grad), sizeof(float) * (size_t)nat_tensor_numel(w));
    nat_ctx_free(ctx);
}

START_TEST(checkpointed_call_matches_plain_call)
{
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    const int64_t sx[2] = {5, 6}, sw[2] = {6, 6};
    nat_tensor *x = th_randn(&rng, 2, sx, 1.0f, true), *w = th_randn(&rng, 2, sw, 0.5f, true);
    float l1, l2, gx1[30], gx2[30], gw1[36], gw2[36];
    grads_of(chain_plain, x, w, NAT_PREC_F32, NAT_PREC_F32, &l1, gx1, gw1);
    grads_of(chain_fn, x, w, NAT_PREC_F32, NAT_PREC_F32, &l2, gx2, gw2);
    ck_assert_msg(l1 == l2, "loss %g checkpointed vs %g plain", (double)l2, (double)l1);
    ck_assert_msg(!memcmp(gx1, gx2, sizeof gx1), "gradient of x differs when checkpointed");
    ck_assert_msg(!memcmp(gw1, gw2, sizeof gw1), "gradient of w differs when checkpointed");
    /* and both against finite differences */
    nat_tensor *in[2] = {x, w};
    th_gradcheck("recompute chain", chain_fn, NULL, 2, in, 1e-3, 2e-3);
    /* The backward's recomputation runs under the forward's precision, not the one set at backward time. */
    grads_of(chain_plain, x, w, NAT_PREC_BF16, NAT_PREC_BF16, &l1, gx1, gw1);
    grads_of(chain_fn, x, w, NAT_PREC_BF16, NAT_PREC_F32, &l2, gx2, gw2);
    ck_assert_msg(l1 == l2 && !memcmp(gx1, gx2, sizeof gx1) && !memcmp(gw1, gw2, sizeof gw1),
                  "a bf16 forward's recomputation did not run in bf16");
    grads_of(chain_fn, x, w, NAT_PREC_F32, NAT_PREC_F32, &l2, gx2, gw2);
    ck_assert_msg(memcmp(gw1, gw2, sizeof gw1), "bf16 and f32 gave the same gradient: the check above is void");
    nat_tensor_free(x);
    nat_tensor_free(w);
}
END_TEST

START_TEST(without_a_tape_it_runs_once)
{
    nat_rng rng;
    nat_rng_seed(&rng, 4);
    const int64_t sx[2] = {3, 4}, sw[2] = {4, 4};
    nat_tensor *x = th_randn(&rng, 2, sx, 1.0f, false), *w = th_randn(&rng, 2, sw, 0.5f, true), *y;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    small_fn u = {w, 0};
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_recompute(ctx, small_body, &u, sizeof u, x, w, &y));
    ck_assert_int_eq(u.calls, 1);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    /* with the tape on: one node, however many ops fn ran; x needs no gradient but the anchor does */
    nat_ctx_set_grad_enabled(ctx, true);
    TH_OK(nat_recompute(ctx, small_body, &u, sizeof u, x, w, &y));
    ck_assert_int_eq(u.calls, 2);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 1);
    ck_assert(y->requires_grad);
    /* without the anchor nat_recompute sees nothing that needs a gradient: fn runs as a plain call
     * (its own three ops are recorded) */
    TH_OK(nat_recompute(ctx, small_body, &u, sizeof u, x, NULL, &y));
    ck_assert_int_eq(u.calls, 3);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 4);
    th_expect_error(nat_recompute(ctx, identity_body, NULL, 0, x, w, &y), NAT_ERR_INVALID_ARG, "returned its input",
                    NULL);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_tensor_free(w);
}
END_TEST

/* ---- the model ---- */

static nat_model_desc small_nat(void)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "recompute_test");
    d.in_chans = 3;
    d.num_classes = 5;
    d.img_size = 32;
    d.embed_dim = 16;
    const int depths[4] = {2, 2, 1, 1}, heads[4] = {1, 2, 2, 4};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    d.kernel_size = 3;
    d.dilations[0][1] = 2;
    d.mlp_ratio = 2.0f;
    d.drop_path_rate = 0.3f; /* masks that the recomputation must draw again */
    d.layer_scale = 0.5f;
    d.seed = 11;
    return d;
}

typedef struct model_run {
    float loss;
    float *grads; /* every parameter's gradient, concatenated */
    nat_rng rng_after;
    int tape;
    size_t held; /* allocator bytes held after the forward, above the ctx's start */
} model_run;

static void run_model(nat_model *m, bool recompute, const nat_tensor *x0, model_run *r)
{
    nat_model_set_recompute(m, recompute);
    ck_assert(nat_model_get_recompute(m) == recompute);
    nat_model_zero_grad(m);
    nat_rng rng;
    nat_rng_seed(&rng, 99);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const size_t base = nat_mem_get_stats(NAT_CPU).current;
    nat_tensor *x, *y, *loss;
    TH_OK(nat_tensor_new(&x, NAT_F32, NAT_CPU, x0->ndim, x0->shape));
    memcpy(nat_tensor_f32(x), nat_tensor_f32(x0), sizeof(float) * (size_t)nat_tensor_numel(x0));
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &y));
    r->held = nat_mem_get_stats(NAT_CPU).current - base;
    r->tape = nat_ctx_tape_length(ctx);
    r->rng_after = rng;
    const int32_t labels[4] = {0, 3, 1, 4};
    TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
    r->loss = nat_tensor_f32(loss)[0];
    TH_OK(nat_backward(ctx, loss));
    const nat_param_list *pl = nat_model_params(m);
    int64_t n = 0;
    for (int p = 0; p < pl->count; p++)
        n += nat_tensor_numel(pl->items[p].tensor);
    r->grads = calloc((size_t)n, sizeof(float));
    n = 0;
    for (int p = 0; p < pl->count; p++) {
        const nat_tensor *t = pl->items[p].tensor;
        if (t->grad)
            memcpy(r->grads + n, nat_tensor_f32(t->grad), sizeof(float) * (size_t)nat_tensor_numel(t));
        n += nat_tensor_numel(t);
    }
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}

START_TEST(model_gradients_are_bitwise_equal)
{
    nat_model_desc d = small_nat();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    const int64_t s[4] = {4, 3, 32, 32};
    nat_tensor *x = th_randn(&rng, 4, s, 1.0f, false);
    model_run a, b;
    run_model(m, false, x, &a);
    run_model(m, true, x, &b);
    ck_assert_msg(a.loss == b.loss, "loss %.9g with recomputation vs %.9g", (double)b.loss, (double)a.loss);
    ck_assert_msg(!memcmp(&a.rng_after, &b.rng_after, sizeof a.rng_after),
                  "the generator ends in another state with recomputation");
    const nat_param_list *pl = nat_model_params(m);
    int64_t off = 0, nonzero = 0;
    for (int p = 0; p < pl->count; p++) {
        const int64_t n = nat_tensor_numel(pl->items[p].tensor);
        ck_assert_msg(!memcmp(a.grads + off, b.grads + off, sizeof(float) * (size_t)n),
                      "gradient of %s differs with recomputation", pl->items[p].name);
        for (int64_t i = 0; i < n; i++)
            nonzero += a.grads[off + i] != 0.0f;
        off += n;
    }
    ck_assert_int_gt(nonzero, off / 2); /* the comparison covers real gradients */
    /* one node per layer instead of every op of it */
    ck_assert_msg(b.tape < a.tape / 4, "tape %d with recomputation vs %d", b.tape, a.tape);
    free(a.grads), free(b.grads);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

START_TEST(model_forward_holds_less)
{
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 3));
    d.drop_path_rate = 0.0f;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 6);
    const int64_t s[4] = {2, 3, 64, 64};
    nat_tensor *x = th_randn(&rng, 4, s, 1.0f, false);
    model_run a, b;
    run_model(m, false, x, &a);
    run_model(m, true, x, &b);
    ck_assert_msg(b.held * 4 < a.held, "a training forward holds %zu bytes with recomputation against %zu without",
                  b.held, a.held);
    ck_assert_msg(fabsf(a.loss - b.loss) == 0.0f, "loss %.9g vs %.9g", (double)b.loss, (double)a.loss);
    free(a.grads), free(b.grads);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("recompute");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, checkpointed_call_matches_plain_call);
    tcase_add_test(tc, without_a_tape_it_runs_once);
    tcase_add_test(tc, model_gradients_are_bitwise_equal);
    tcase_add_test(tc, model_forward_holds_less);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return th_run_suite(s);
}
