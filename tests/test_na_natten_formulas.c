/* tests/test_na_natten_formulas.c — nat's neighbourhoods against NATTEN's own window formulas.
 *
 * nat's oracle (tests/ref/) and its fast kernels are both written from one description of the window
 * rule (docs/design.md §2), so a misreading shared by both would pass every other NA test. This suite
 * re-states the formulas NATTEN v0.14 evaluates in its naive CUDA kernels — get_window_start,
 * get_window_end, get_pb_start and the inverse-neighbourhood bounds get_backward_window_start/end, in
 * their piecewise form with the special cases for dilation 1, the borders and the dilation groups —
 * and compares them with what nat computes, observed through the public op alone:
 *
 *   keys   q = 1, k[j] = j + 1, scale 1, no rpb:  logit of slot t = 1 + index of its key (−inf if masked)
 *   rpb    k = 0, rpb[r] = r:                      logit of slot t = its rpb index
 *   dk     q = 1, d logits = 1:                    dk[y] = number of queries whose window holds y
 *
 * over kernels 3–13, dilations 1–8 and every length k·d … k·d+10, causal included (1-D), and for a
 * sample of 2-D problems with different kernels and dilations per axis (slot order a·k1 + b).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nat/natten.h"
#include "support/harness.h"

/* ---- NATTEN's formulas, per axis (length L, kernel k, radius r = k/2, dilation d) ---- */

static int natten_window_start(int i, int L, int k, int d, bool causal)
{
    const int r = k / 2;
    if (causal)
        return (i / d - k + 1 > 0 ? i / d - k + 1 : 0) * d + i % d;
    if (d <= 1)
        return (i - r > 0 ? i - r : 0) + (i + r >= L) * (L - i - r - 1);
    if (i - r * d < 0)
        return i % d;
    if (i + r * d >= L) {
        const int imodd = i % d, a = (L / d) * d, b = L - a;
        return imodd < b ? L - b + imodd - 2 * r * d : a + imodd - k * d;
    }
    return i - r * d;
}

/* One past the last key (keys run start, start + d, ... below it). */
static int natten_window_end(int i, int start, int L, int k, int d, bool causal)
{
    int end = causal ? i + d : start + k * d;
    return end < L ? end : L;
}

static int natten_pb_start(int i, int L, int k, int d)
{
    const int r = k / 2;
    if (d <= 1)
        return r + (i < r) * (r - i) + (i + r >= L) * (L - i - 1 - r);
    if (i - r * d < 0)
        return k - 1 - i / d;
    if (i + r * d >= L)
        return (L - i - 1) / d;
    return r;
}

/* The queries that may hold key y: [start, end) in steps of d. */
static int natten_backward_start(int y, int L, int k, int d, bool causal)
{
    if (causal)
        return y;
    return y < k * d ? y % d : y - (k / 2) * d;
}

static int natten_backward_end(int y, int L, int k, int d, bool causal)
{
    if (causal)
        return y + k * d < L ? y + k * d : L;
    return y >= L - k * d ? L : y + (k / 2 + 1) * d;
}

/* ---- nat, through the public op ---- */

static nat_tensor *line(int64_t L, float (*value)(int64_t j), bool requires_grad)
{
    int64_t s[4] = {1, 1, L, 1};
    float *v = malloc((size_t)L * sizeof *v);
    for (int64_t j = 0; j < L; j++)
        v[j] = value(j);
    nat_tensor *t = th_from(v, 4, s, requires_grad);
    free(v);
    return t;
}

static float one(int64_t j) { return (void)j, 1.0f; }
static float zero(int64_t j) { return (void)j, 0.0f; }
static float index_plus_one(int64_t j) { return (float)(j + 1); }

/* Checks one 1-D problem; returns the number of mismatches (the first few are printed). */
static int check_1d(int L, int k, int d, bool causal)
{
    nat_na_params p = nat_na_params_make(1, k, d);
    p.causal[0] = causal;
    p.scale = 1.0f;
    int bad = 0;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));

    /* Keys: the logit of slot t names its key. */
    nat_tensor *q = line(L, one, true), *kk = line(L, index_plus_one, false), *attn;
    TH_OK(nat_na1d_qk(ctx, q, kk, NULL, &p, &attn));
    const float *A = nat_tensor_f32(attn);
    for (int i = 0; i < L; i++) {
        int s = natten_window_start(i, L, k, d, causal), e = natten_window_end(i, s, L, k, d, causal);
        int nvalid = (e - s + d - 1) / d;
        for (int t = 0; t < k; t++) {
            float want = t < nvalid ? (float)(s + t * d + 1) : -INFINITY, got = A[(int64_t)i * k + t];
            if (got != want && bad++ < 4)
                fprintf(stderr, "L %d k %d d %d%s: query %d slot %d: nat key %g, NATTEN %g (start %d, end %d)\n", L, k,
                        d, causal ? " causal" : "", i, t, got - 1, want - 1, s, e);
        }
        if (!causal && nvalid != k && bad++ < 4)
            fprintf(stderr, "L %d k %d d %d: query %d: NATTEN window [%d, %d) does not hold k keys\n", L, k, d, i, s, e);
    }

    /* Inverse neighbourhood: dk[y] counts the queries whose window holds y. */
    nat_ctx_reset(ctx);
    nat_tensor *kg = line(L, one, true);
    TH_OK(nat_na1d_qk(ctx, q, kg, NULL, &p, &attn));
    /* d logits = 1 everywhere (a sum would make the loss −inf on masked slots); masked slots pass no
     * gradient by the op's contract. */
    nat_tensor *g;
    TH_OK(nat_ctx_empty(ctx, &g, NAT_F32, attn->ndim, attn->shape));
    for (int64_t n = 0; n < nat_tensor_numel(g); n++)
        nat_tensor_f32(g)[n] = 1.0f;
    TH_OK(nat_backward_from(ctx, attn, g));
    const float *DK = nat_tensor_f32(kg->grad);
    for (int y = 0; y < L; y++) {
        int bs = natten_backward_start(y, L, k, d, causal), be = natten_backward_end(y, L, k, d, causal), count = 0;
        for (int i = bs; i < be; i += d) {
            int s = natten_window_start(i, L, k, d, causal), e = natten_window_end(i, s, L, k, d, causal);
            count += y >= s && y < e && (y - s) % d == 0;
        }
        /* Every query that holds y must lie in NATTEN's backward range. */
        int all = 0;
        for (int i = 0; i < L; i++) {
            int s = natten_window_start(i, L, k, d, causal), e = natten_window_end(i, s, L, k, d, causal);
            all += y >= s && y < e && (y - s) % d == 0;
        }
        if ((DK[y] != (float)count || all != count) && bad++ < 4)
            fprintf(stderr, "L %d k %d d %d%s: key %d: nat dk %g, NATTEN inverse neighbourhood [%d, %d) holds %d of %d\n",
                    L, k, d, causal ? " causal" : "", y, DK[y], bs, be, count, all);
    }

    /* rpb indices (NATTEN has no rpb with causal masking). */
    if (!causal) {
        nat_ctx_reset(ctx);
        nat_tensor *kz = line(L, zero, false);
        int64_t rs[2] = {1, 2 * k - 1};
        float *rv = malloc((size_t)(2 * k - 1) * sizeof *rv);
        for (int r = 0; r < 2 * k - 1; r++)
            rv[r] = (float)r;
        nat_tensor *rpb = th_from(rv, 2, rs, false);
        free(rv);
        TH_OK(nat_na1d_qk(ctx, q, kz, rpb, &p, &attn));
        A = nat_tensor_f32(attn);
        for (int i = 0; i < L; i++)
            for (int t = 0; t < k; t++) {
                float want = (float)(natten_pb_start(i, L, k, d) + t), got = A[(int64_t)i * k + t];
                if (got != want && bad++ < 4)
                    fprintf(stderr, "L %d k %d d %d: query %d slot %d: nat rpb index %g, NATTEN %g\n", L, k, d, i, t, got,
                            want);
            }
        nat_tensor_free(rpb);
        nat_tensor_free(kz);
    }
    nat_ctx_free(ctx);
    nat_tensor_free(q);
    nat_tensor_free(kk);
    nat_tensor_free(kg);
    return bad;
}

START_TEST(windows_1d_match_natten)
{
    const bool causal = _i == 1;
    int problems = 0, bad = 0;
    for (int k = 3; k <= 13; k += 2)
        for (int d = 1; d <= 8; d++)
            for (int L = k * d; L <= k * d + 10; L++, problems++)
                bad += check_1d(L, k, d, causal);
    fprintf(stderr, "NATTEN formulas, 1-D%s: %d problems, %d mismatches\n", causal ? " causal" : "", problems, bad);
    ck_assert_int_eq(bad, 0);
}
END_TEST

/* 2-D: the key of slot a·k1 + b is (window row a, window column b), each axis by its own formula. */
START_TEST(windows_2d_match_natten)
{
    static const struct {
        int H, W, k0, k1, d0, d1;
    } cases[] = {{7, 9, 3, 5, 1, 1}, {14, 11, 7, 3, 2, 3}, {20, 17, 5, 5, 4, 3}, {29, 24, 7, 3, 4, 8}, {13, 13, 13, 13, 1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int H = cases[c].H, W = cases[c].W, k0 = cases[c].k0, k1 = cases[c].k1, d0 = cases[c].d0, d1 = cases[c].d1;
        nat_na_params p = nat_na_params_make(2, k0, d0);
        p.kernel[1] = k1, p.dilation[1] = d1, p.scale = 1.0f;
        int64_t s5[5] = {1, 1, H, W, 1};
        float *kv = malloc((size_t)H * W * sizeof *kv), *qv = malloc((size_t)H * W * sizeof *qv);
        for (int n = 0; n < H * W; n++)
            kv[n] = (float)(n + 1), qv[n] = 1.0f;
        nat_tensor *q = th_from(qv, 5, s5, false), *kk = th_from(kv, 5, s5, false), *attn;
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_na2d_qk(ctx, q, kk, NULL, &p, &attn));
        const float *A = nat_tensor_f32(attn);
        int bad = 0;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                int si = natten_window_start(i, H, k0, d0, false), sj = natten_window_start(j, W, k1, d1, false);
                for (int a = 0; a < k0; a++)
                    for (int b = 0; b < k1; b++) {
                        float want = (float)((si + a * d0) * W + sj + b * d1 + 1);
                        float got = A[((int64_t)i * W + j) * k0 * k1 + a * k1 + b];
                        if (got != want && bad++ < 4)
                            fprintf(stderr, "2-D %dx%d k %d,%d d %d,%d: query (%d,%d) slot (%d,%d): nat key %g, NATTEN %g\n",
                                    H, W, k0, k1, d0, d1, i, j, a, b, got - 1, want - 1);
                    }
            }
        ck_assert_int_eq(bad, 0);
        nat_ctx_free(ctx);
        nat_tensor_free(q);
        nat_tensor_free(kk);
        free(kv);
        free(qv);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("na_natten_formulas");
    TCase *tc = tcase_create("windows");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, windows_1d_match_natten, 0, 2);
    tcase_add_test(tc, windows_2d_match_natten);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
