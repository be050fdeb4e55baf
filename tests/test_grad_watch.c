/* tests/test_grad_watch.c — nat_ctx_watch_grads (include/nat/autograd.h, core/grad_watch.c): each
 * watched parameter is called once per walk, only when its gradient is final (a copy taken in the call
 * equals the gradient at the end of the walk, bit for bit), and early: in a NAT model the classifier's
 * parameters are called while the patch embedding has no gradient yet. Parameters read only inside
 * nat_recompute blocks, or not at all, are called at the end in index order; nested walks do not call;
 * an error from the function stops the walk; duplicates and NULLs are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nat/model.h"
#include "support/harness.h"

typedef struct recorder {
    nat_tensor *const *params;
    int n;
    int calls[512];   /* per parameter */
    int order[512];   /* indices in call order */
    int n_calls;
    float *copy[512]; /* the gradient at the call (NULL: none then) */
    int fail_at;      /* return an error on this call (-1: never) */
    int watch_first;  /* index whose gradient must still be absent at the first call (-1: none) */
    bool first_saw_it;
} recorder;

static nat_status record(void *user, int i)
{
    recorder *r = user;
    ck_assert_int_ge(i, 0);
    ck_assert_int_lt(i, r->n);
    if (r->n_calls == 0 && r->watch_first >= 0) {
        const nat_tensor *g = r->params[r->watch_first]->grad;
        r->first_saw_it = g != NULL;
        for (int64_t j = 0; g && j < nat_tensor_numel(g); j++)
            r->first_saw_it = r->first_saw_it && nat_tensor_f32(g)[j] != 0.0f;
    }
    if (r->n_calls == r->fail_at)
        return nat_error(NAT_ERR_IO, "recorder: failing on call %d as told", r->n_calls);
    r->calls[i]++;
    r->order[r->n_calls++] = i;
    const nat_tensor *g = r->params[i]->grad;
    free(r->copy[i]);
    r->copy[i] = NULL;
    if (g) {
        const size_t bytes = (size_t)nat_tensor_numel(g) * sizeof(float);
        r->copy[i] = malloc(bytes);
        memcpy(r->copy[i], nat_tensor_f32(g), bytes);
    }
    return NAT_OK;
}

static void recorder_init(recorder *r, nat_tensor *const *params, int n)
{
    memset(r, 0, sizeof *r);
    ck_assert_int_le(n, 512);
    r->params = params, r->n = n, r->fail_at = -1, r->watch_first = -1;
}

static void recorder_free(recorder *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->copy[i]);
}

/* Every parameter called once, with the gradient it ends the walk with. */
static void check_final(const recorder *r, const char *what)
{
    ck_assert_msg(r->n_calls == r->n, "%s: %d calls for %d parameters", what, r->n_calls, r->n);
    for (int i = 0; i < r->n; i++) {
        ck_assert_msg(r->calls[i] == 1, "%s: parameter %d called %d times", what, i, r->calls[i]);
        const nat_tensor *g = r->params[i]->grad;
        ck_assert_msg((g == NULL) == (r->copy[i] == NULL), "%s: parameter %d: gradient %s at its call, %s at the end",
                      what, i, r->copy[i] ? "present" : "absent", g ? "present" : "absent");
        if (!g)
            continue;
        const int64_t n = nat_tensor_numel(g);
        int64_t diff = 0;
        for (int64_t j = 0; j < n; j++)
            diff += memcmp(&r->copy[i][j], &nat_tensor_f32(g)[j], sizeof(float)) != 0;
        ck_assert_msg(diff == 0, "%s: parameter %d (%s): %ld of %ld gradient values changed after its call", what, i,
                      r->params[i]->name ? r->params[i]->name : "?", (long)diff, (long)n);
    }
}

/* ---- a small graph: y = sum(((x a) + b) * c² + c), d unused ---- */

START_TEST(small_graph_calls_in_reverse_first_use)
{
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    const int64_t sx[2] = {3, 4}, sa[2] = {4, 5}, sb[2] = {3, 5};
    nat_tensor *x = th_randn(&rng, 2, sx, 1.0f, false);
    nat_tensor *p[4] = {th_randn(&rng, 2, sa, 1.0f, true), th_randn(&rng, 2, sb, 1.0f, true),
                        th_randn(&rng, 2, sb, 1.0f, true), th_randn(&rng, 2, sb, 1.0f, true)};
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    recorder r;
    recorder_init(&r, p, 4);
    TH_OK(nat_ctx_watch_grads(ctx, p, 4, record, &r));
    for (int step = 0; step < 2; step++) { /* the watch stays for later walks */
        for (int i = 0; i < 4; i++)
            nat_zero_grad(p[i]);
        memset(r.calls, 0, sizeof r.calls);
        r.n_calls = 0;
        nat_tensor *c2, *h, *y, *loss;
        TH_OK(nat_mul(ctx, p[2], p[2], &c2)); /* c's first use: tape position 0 */
        TH_OK(nat_matmul(ctx, x, p[0], &h));  /* a: 1 */
        TH_OK(nat_add(ctx, h, p[1], &h));     /* b: 2 */
        TH_OK(nat_mul(ctx, h, c2, &y));
        TH_OK(nat_add(ctx, y, p[2], &y)); /* c read again, later: its first use still decides */
        TH_OK(nat_sum(ctx, y, &loss));
        TH_OK(nat_backward(ctx, loss));
        check_final(&r, "small graph");
        /* b (first use 2), then a (1), then c (0), then d (never read: at the end, with no gradient) */
        const int want[4] = {1, 0, 2, 3};
        for (int k = 0; k < 4; k++)
            ck_assert_msg(r.order[k] == want[k], "step %d: call %d went to parameter %d, expected %d", step, k,
                          r.order[k], want[k]);
        ck_assert_ptr_null(p[3]->grad);
        nat_ctx_reset(ctx);
    }
    /* removing the watch: no more calls */
    TH_OK(nat_ctx_watch_grads(ctx, NULL, 0, NULL, NULL));
    r.n_calls = 0;
    nat_tensor *h, *loss;
    TH_OK(nat_matmul(ctx, x, p[0], &h));
    TH_OK(nat_sum(ctx, h, &loss));
    TH_OK(nat_backward(ctx, loss));
    ck_assert_int_eq(r.n_calls, 0);
    recorder_free(&r);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    for (int i = 0; i < 4; i++)
        nat_tensor_free(p[i]);
}
END_TEST

START_TEST(errors_stop_the_walk_and_bad_lists_are_refused)
{
    nat_rng rng;
    nat_rng_seed(&rng, 4);
    const int64_t sx[2] = {2, 3}, sa[2] = {3, 3};
    nat_tensor *x = th_randn(&rng, 2, sx, 1.0f, false);
    nat_tensor *p[2] = {th_randn(&rng, 2, sa, 1.0f, true), th_randn(&rng, 2, sa, 1.0f, true)};
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *dup[2] = {p[0], p[0]}, *hole[2] = {p[0], NULL};
    recorder r;
    recorder_init(&r, p, 2);
    ck_assert_int_eq(nat_ctx_watch_grads(ctx, dup, 2, record, &r), NAT_ERR_INVALID_ARG);
    ck_assert_msg(strstr(nat_error_message(), "params[0] and params[1] are the same tensor"), "%s", nat_error_message());
    ck_assert_int_eq(nat_ctx_watch_grads(ctx, hole, 2, record, &r), NAT_ERR_INVALID_ARG);
    ck_assert_msg(strstr(nat_error_message(), "params[1] is NULL"), "%s", nat_error_message());
    TH_OK(nat_ctx_watch_grads(ctx, p, 2, record, &r));
    r.fail_at = 0;
    nat_tensor *h, *loss;
    TH_OK(nat_matmul(ctx, x, p[0], &h));
    TH_OK(nat_matmul(ctx, h, p[1], &h));
    TH_OK(nat_sum(ctx, h, &loss));
    ck_assert_int_eq(nat_backward(ctx, loss), NAT_ERR_IO);
    ck_assert_msg(strstr(nat_error_message(), "failing on call 0"), "%s", nat_error_message());
    /* the walk stopped at p[1]'s call: p[0]'s backward (the first matmul's) never ran */
    ck_assert_ptr_null(p[0]->grad);
    ck_assert_int_eq(r.n_calls, 0);
    recorder_free(&r);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_tensor_free(p[0]);
    nat_tensor_free(p[1]);
}
END_TEST

/* ---- the NAT model, with and without per-layer recomputation ---- */

static void run_model(bool recompute)
{
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 1));
    d.img_size = 28;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_model_set_recompute(m, recompute);
    const nat_param_list *pl = nat_model_params(m);
    nat_tensor **params = malloc((size_t)pl->count * sizeof *params);
    int embed = -1, head = -1;
    for (int i = 0; i < pl->count; i++) {
        params[i] = pl->items[i].tensor;
        if (!strcmp(pl->items[i].name, "patch_embed.proj.0.weight"))
            embed = i;
        if (!strcmp(pl->items[i].name, "head.weight"))
            head = i;
    }
    ck_assert_msg(embed >= 0 && head >= 0, "no patch_embed.proj.0.weight or head.weight among the parameters");
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    recorder r;
    recorder_init(&r, params, pl->count);
    r.watch_first = embed;
    TH_OK(nat_ctx_watch_grads(ctx, params, pl->count, record, &r));
    nat_rng rng;
    nat_rng_seed(&rng, 9);
    const int64_t s[4] = {2, 1, 28, 28};
    nat_tensor *x = th_randn(&rng, 4, s, 1.0f, false), *y, *loss;
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &y));
    int32_t labels[2] = {2, 5};
    TH_OK(nat_cross_entropy(ctx, y, labels, 0.1f, &loss));
    TH_OK(nat_backward(ctx, loss));
    const char *what = recompute ? "NAT-Mini, every layer recomputed" : "NAT-Mini";
    check_final(&r, what);
    ck_assert_msg(!r.first_saw_it, "%s: the first call came after the patch embedding's gradient was made", what);
    /* the classifier comes first; the patch embedding, read first in the forward, comes late */
    int pos_head = -1, pos_embed = -1;
    for (int k = 0; k < r.n_calls; k++) {
        pos_head = r.order[k] == head ? k : pos_head;
        pos_embed = r.order[k] == embed ? k : pos_embed;
    }
    ck_assert_msg(pos_head < 3, "%s: head.weight called %d-th", what, pos_head);
    /* with recompute the blocks' parameters are called after it: they are read on nested tapes only */
    ck_assert_msg(recompute || pos_embed > r.n_calls / 2, "%s: patch_embed.proj.0.weight called %d-th of %d", what, pos_embed,
                  r.n_calls);
    if (recompute) { /* the layers' parameters are read inside recompute blocks: called at the end, in index order */
        int prev = -1, in_order = 0;
        for (int k = r.n_calls - 1; k >= 0 && strstr(pl->items[r.order[k]].name, "blocks."); k--)
            in_order += prev < 0 || r.order[k] < prev, prev = r.order[k];
        ck_assert_msg(in_order > pl->count / 2, "%s: only %d block parameters at the end in index order", what,
                      in_order);
    }
    recorder_free(&r);
    free(params);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
}

START_TEST(nat_model_gradients_are_final_when_called) { run_model(false); }
END_TEST

START_TEST(nat_model_with_recompute_is_called_after_the_blocks) { run_model(true); }
END_TEST

int main(void)
{
    Suite *s = suite_create("grad_watch");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, small_graph_calls_in_reverse_first_use);
    tcase_add_test(tc, errors_stop_the_walk_and_bad_lists_are_refused);
    tcase_add_test(tc, nat_model_gradients_are_final_when_called);
    tcase_add_test(tc, nat_model_with_recompute_is_called_after_the_blocks);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return th_run_suite(s);
}
