/* tests/test_grad_buckets.c — the bucket schedule of the overlapped gradient all-reduce
 * (train/grad_buckets.h): buckets cut from the reversed parameter list at the capacity; over random
 * orders of "final" reports every bucket is launched once, in bucket order, only when all its
 * parameters are final and as soon as it may; the end launches the rest. Then on a NAT-Mini backward
 * driven by nat_ctx_watch_grads, as the NCCL engine runs it: most buckets go out before the walk ends,
 * and each one's gradients at launch are the final ones, bit for bit. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nat/model.h"
#include "support/harness.h"
#include "train/grad_buckets.h"

START_TEST(buckets_follow_the_reversed_list_and_the_capacity)
{
    const int64_t numel[5] = {10, 20, 5, 100, 7};
    nat_grad_buckets *b;
    TH_OK(nat_grad_buckets_new(numel, 5, 30, &b));
    /* reversed: 7 | 100 (above the capacity: alone) | 5 + 20 | 10 */
    ck_assert_int_eq(nat_grad_buckets_count(b), 4);
    const int want_n[4] = {1, 1, 2, 1}, want_first[4] = {4, 3, 2, 0};
    const int64_t want_e[4] = {7, 100, 25, 10};
    for (int k = 0; k < 4; k++) {
        int cnt;
        int64_t e;
        const int *p = nat_grad_buckets_params(b, k, &cnt, &e);
        ck_assert_msg(cnt == want_n[k] && e == want_e[k] && p[0] == want_first[k],
                      "bucket %d: %d parameters from %d, %lld elements", k, cnt, p[0], (long long)e);
    }
    nat_grad_buckets_free(b);
    nat_grad_buckets *bad;
    const int64_t zero[2] = {3, 0};
    ck_assert_int_eq(nat_grad_buckets_new(zero, 2, 30, &bad), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_grad_buckets_new(numel, 5, 0, &bad), NAT_ERR_INVALID_ARG);
}
END_TEST

typedef struct schedule {
    nat_grad_buckets *b;
    bool final_[64];
    int launched[64], n_launched;
} schedule;

static nat_status on_launch(void *user, int k)
{
    schedule *s = user;
    int cnt;
    int64_t e;
    const int *p = nat_grad_buckets_params(s->b, k, &cnt, &e);
    for (int j = 0; j < cnt; j++)
        ck_assert_msg(s->final_[p[j]], "bucket %d launched before parameter %d was final", k, p[j]);
    s->launched[s->n_launched++] = k;
    return NAT_OK;
}

START_TEST(random_orders_launch_in_order_as_soon_as_possible)
{
    enum { N = 40 };
    int64_t numel[N];
    nat_rng rng;
    nat_rng_seed(&rng, 17);
    for (int i = 0; i < N; i++)
        numel[i] = 1 + (int64_t)(nat_rng_uniform(&rng) * 50);
    schedule s;
    memset(&s, 0, sizeof s);
    TH_OK(nat_grad_buckets_new(numel, N, 60, &s.b));
    const int nb = nat_grad_buckets_count(s.b);
    ck_assert_int_gt(nb, 5);
    for (int trial = 0; trial < 200; trial++) {
        int perm[N];
        for (int i = 0; i < N; i++)
            perm[i] = i;
        for (int i = N - 1; i > 0; i--) { /* Fisher-Yates */
            const int j = (int)(nat_rng_uniform(&rng) * (i + 1)) % (i + 1), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        const int stop = trial % 2 ? N : (int)(nat_rng_uniform(&rng) * N); /* some backwards report only part */
        nat_grad_buckets_begin(s.b);
        memset(s.final_, 0, sizeof s.final_);
        s.n_launched = 0;
        for (int r = 0; r < stop; r++) {
            s.final_[perm[r]] = true;
            TH_OK(nat_grad_buckets_ready(s.b, perm[r], on_launch, &s));
            /* as soon as possible: the first bucket not launched has a parameter not final yet */
            const int next = nat_grad_buckets_launched(s.b);
            if (next < nb) {
                int cnt;
                int64_t e;
                const int *p = nat_grad_buckets_params(s.b, next, &cnt, &e);
                bool all = true;
                for (int j = 0; j < cnt; j++)
                    all = all && s.final_[p[j]];
                ck_assert_msg(!all, "trial %d: bucket %d could go but waits", trial, next);
            }
        }
        for (int i = 0; i < N; i++)
            s.final_[i] = true; /* the end: whatever was not reported goes as it is */
        TH_OK(nat_grad_buckets_finish(s.b, on_launch, &s));
        ck_assert_int_eq(s.n_launched, nb);
        for (int k = 0; k < nb; k++)
            ck_assert_msg(s.launched[k] == k, "trial %d: launch %d was bucket %d", trial, k, s.launched[k]);
    }
    /* a parameter reported twice, or out of range */
    nat_grad_buckets_begin(s.b);
    memset(s.final_, 1, sizeof s.final_);
    s.n_launched = 0;
    TH_OK(nat_grad_buckets_ready(s.b, 3, on_launch, &s));
    ck_assert_int_eq(nat_grad_buckets_ready(s.b, 3, on_launch, &s), NAT_ERR_INTERNAL);
    ck_assert_msg(strstr(nat_error_message(), "parameter 3 reported final twice"), "%s", nat_error_message());
    ck_assert_int_eq(nat_grad_buckets_ready(s.b, N, on_launch, &s), NAT_ERR_INTERNAL);
    nat_grad_buckets_free(s.b);
}
END_TEST

/* ---- on a NAT-Mini backward, as train/dist_nccl.cu drives it ---- */

typedef struct model_run {
    nat_grad_buckets *b;
    nat_tensor **params;
    float **copy; /* per parameter: its gradient when its bucket was launched */
    int first;  /* the patch embedding's first weight: the forward's first parameter */
    int early;  /* buckets launched while it had no gradient yet (the backward far from its end) */
} model_run;

static nat_status snapshot(void *user, int k)
{
    model_run *m = user;
    int cnt;
    int64_t e;
    const int *p = nat_grad_buckets_params(m->b, k, &cnt, &e);
    for (int j = 0; j < cnt; j++) {
        const nat_tensor *g = m->params[p[j]]->grad;
        ck_assert_msg(g, "bucket %d: parameter %s has no gradient at launch", k, m->params[p[j]]->name);
        const size_t bytes = (size_t)nat_tensor_numel(g) * sizeof(float);
        m->copy[p[j]] = malloc(bytes);
        memcpy(m->copy[p[j]], nat_tensor_f32(g), bytes);
    }
    m->early += m->params[m->first]->grad == NULL;
    return NAT_OK;
}

static nat_status param_final(void *user, int i)
{
    model_run *m = user;
    return nat_grad_buckets_ready(m->b, i, snapshot, m);
}

START_TEST(nat_backward_launches_most_buckets_before_it_ends)
{
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 1));
    d.img_size = 28;
    d.drop_path_rate = 0.0f; /* every parameter gets a gradient */
    nat_model *net;
    TH_OK(nat_model_new(&net, &d));
    const nat_param_list *pl = nat_model_params(net);
    const int n = pl->count;
    model_run m = {0};
    m.params = malloc((size_t)n * sizeof *m.params);
    m.copy = calloc((size_t)n, sizeof *m.copy);
    int64_t *numel = malloc((size_t)n * sizeof *numel), total = 0;
    m.first = -1;
    for (int i = 0; i < n; i++) {
        m.params[i] = pl->items[i].tensor;
        if (!strcmp(pl->items[i].name, "patch_embed.proj.0.weight"))
            m.first = i;
        numel[i] = nat_tensor_numel(m.params[i]);
        total += numel[i];
    }
    ck_assert_msg(m.first >= 0, "no patch_embed.proj.0.weight");
    TH_OK(nat_grad_buckets_new(numel, n, total / 12, &m.b)); /* about a dozen buckets */
    const int nb = nat_grad_buckets_count(m.b);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_watch_grads(ctx, m.params, n, param_final, &m));
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    const int64_t s[4] = {2, 1, 28, 28};
    nat_tensor *x = th_randn(&rng, 4, s, 1.0f, false), *y, *loss;
    TH_OK(nat_model_forward(net, ctx, x, true, &rng, &y));
    int32_t labels[2] = {4, 1};
    TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
    nat_grad_buckets_begin(m.b);
    TH_OK(nat_backward(ctx, loss));
    ck_assert_msg(nat_grad_buckets_launched(m.b) == nb, "%d of %d buckets launched by the end of the backward",
                  nat_grad_buckets_launched(m.b), nb);
    TH_OK(nat_grad_buckets_finish(m.b, snapshot, &m)); /* nothing left */
    ck_assert_msg(m.early * 2 > nb, "only %d of %d buckets launched before the patch embedding's backward", m.early, nb);
    for (int i = 0; i < n; i++) {
        const nat_tensor *g = m.params[i]->grad;
        ck_assert_msg(m.copy[i] != NULL, "%s never launched", pl->items[i].name);
        ck_assert_msg(!memcmp(m.copy[i], nat_tensor_f32(g), (size_t)numel[i] * sizeof(float)),
                      "%s: its gradient changed after its bucket was launched", pl->items[i].name);
        free(m.copy[i]);
    }
    nat_ctx_free(ctx);
    nat_grad_buckets_free(m.b);
    free(numel), free(m.copy), free(m.params);
    nat_tensor_free(x);
    nat_model_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("grad_buckets");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, buckets_follow_the_reversed_list_and_the_capacity);
    tcase_add_test(tc, random_orders_launch_in_order_as_soon_as_possible);
    tcase_add_test(tc, nat_backward_launches_most_buckets_before_it_ends);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return th_run_suite(s);
}
