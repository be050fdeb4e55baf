/* tests/test_na_cpu.c — neighborhood attention on the CPU: the fast fp32 kernels (cpu/na_cpu.h) against the
 * double-precision reference (tests/ref/na_ref.h) on sweeps over ndim, lengths, kernel, dilation, causal masks, rpb,
 * batch, heads and head dim; fused against unfused; finite-difference checks of the reference backward;
 * the window rules on hand-worked examples; validation messages.
 *
 * One TCase per group, so one can be rerun alone: CK_RUN_CASE=fused_bwd ./test_na_cpu. The sweep seed
 * is printed at start and with every failure; NAT_TEST_SEED=<n> reruns with another one. A failure
 * names the case (ndim, shape, kernel, dilation, causal, D, batch, heads, rpb).
 */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/natten/cpu/na_cpu.h"
#include "layers/natten/na_problem.h"
#include "tests/ref/na_ref.h"
#include "nat/rng.h"
#include "nat/status.h"
#include "support/na_cases.h" /* the sweep (shared with test_na_cuda.c), its data, na_rel_err */

#ifdef _OPENMP
#include <omp.h>
#endif

#define TOL 1e-4 /* fp32 fast vs double reference, relative to the reference's max |value| */

#define EXPECT_CLOSE(what, fast, ref, n, tol, c) na_expect_close((what), (fast), (ref), (n), (tol), (c), NULL)

#define EXPECT_OK NA_EXPECT_OK

#define fbuf na_fbuf
#define dbuf na_dbuf

#define CASE_ARGS(c, p) &(p), (c)->batch, (c)->heads, (c)->len, (c)->dim
#define CASE_PB(c, p) na_case_problem((c), &(p)) /* what the fast CPU kernels take */

/* ------------------------------------------------------------------------------------------------ */
/* Fast vs reference, one op per TCase                                                               */

static void run_qk(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 1);
    float *a = fbuf(dt.natt);
    double *ar = dbuf(dt.natt);
    EXPECT_OK(na_ref_qk(CASE_ARGS(c, p), dt.qd, dt.kd, c->rpb ? dt.rpbd : NULL, ar), c);
    EXPECT_OK(na_cpu_qk(CASE_PB(c, p), dt.q, dt.k, c->rpb ? dt.rpb : NULL, a), c);
    EXPECT_CLOSE("qk logits", a, ar, dt.natt, TOL, c);
    free(a);
    free(ar);
    na_data_free(&dt);
}

static void run_av(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 2);
    float *o = fbuf(dt.nqkv);
    double *orf = dbuf(dt.nqkv);
    EXPECT_OK(na_ref_av(CASE_ARGS(c, p), dt.attd, dt.vd, orf), c);
    EXPECT_OK(na_cpu_av(CASE_PB(c, p), dt.att, dt.v, o), c);
    EXPECT_CLOSE("av out", o, orf, dt.nqkv, TOL, c);
    free(o);
    free(orf);
    na_data_free(&dt);
}

static void run_qk_bwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 3);
    float *dq = fbuf(dt.nqkv), *dk = fbuf(dt.nqkv), *dr = fbuf(dt.nrpb);
    double *dqr = dbuf(dt.nqkv), *dkr = dbuf(dt.nqkv), *drr = dbuf(dt.nrpb);
    /* Garbage in the outputs: they must be overwritten, not accumulated into. */
    for (int64_t i = 0; i < dt.nqkv; i++)
        dq[i] = dk[i] = 1e3f;
    EXPECT_OK(na_ref_qk_backward(CASE_ARGS(c, p), dt.g_attd, dt.qd, dt.kd, dqr, dkr,
                                 c->rpb ? drr : NULL), c);
    EXPECT_OK(na_cpu_qk_backward(CASE_PB(c, p), dt.g_att, dt.q, dt.k, dq, dk, c->rpb ? dr : NULL),
              c);
    EXPECT_CLOSE("qk_backward dq", dq, dqr, dt.nqkv, TOL, c);
    EXPECT_CLOSE("qk_backward dk", dk, dkr, dt.nqkv, TOL, c);
    if (c->rpb)
        EXPECT_CLOSE("qk_backward drpb", dr, drr, dt.nrpb, TOL, c);
    free(dq), free(dk), free(dr), free(dqr), free(dkr), free(drr);
    na_data_free(&dt);
}

static void run_av_bwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 4);
    float *da = fbuf(dt.natt), *dv = fbuf(dt.nqkv);
    double *dar = dbuf(dt.natt), *dvr = dbuf(dt.nqkv);
    for (int64_t i = 0; i < dt.natt; i++)
        da[i] = 1e3f;
    EXPECT_OK(na_ref_av_backward(CASE_ARGS(c, p), dt.g_outd, dt.attd, dt.vd, dar, dvr), c);
    EXPECT_OK(na_cpu_av_backward(CASE_PB(c, p), dt.g_out, dt.att, dt.v, da, dv), c);
    EXPECT_CLOSE("av_backward d_attn", da, dar, dt.natt, TOL, c);
    EXPECT_CLOSE("av_backward dv", dv, dvr, dt.nqkv, TOL, c);
    free(da), free(dv), free(dar), free(dvr);
    na_data_free(&dt);
}

static void run_fused_fwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 5);
    float *o = fbuf(dt.nqkv), *l = fbuf(dt.nlse);
    double *orf = dbuf(dt.nqkv), *lr = dbuf(dt.nlse);
    const double *rpbd = c->rpb ? dt.rpbd : NULL;
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr), c);
    EXPECT_OK(na_cpu_fused_forward(CASE_PB(c, p), dt.q, dt.k, dt.v, c->rpb ? dt.rpb : NULL, o, l),
              c);
    EXPECT_CLOSE("fused_forward out", o, orf, dt.nqkv, TOL, c);
    EXPECT_CLOSE("fused_forward lse", l, lr, dt.nlse, TOL, c);
    free(o), free(l), free(orf), free(lr);
    na_data_free(&dt);
}

static void run_fused_bwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 6);
    const int64_t n = dt.nqkv;
    double *orf = dbuf(n), *lr = dbuf(dt.nlse);
    const double *rpbd = c->rpb ? dt.rpbd : NULL;
    const float *rpbf = c->rpb ? dt.rpb : NULL;
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr), c);
    float *of = fbuf(n), *lf = fbuf(dt.nlse);
    for (int64_t i = 0; i < n; i++)
        of[i] = (float)orf[i];
    for (int64_t i = 0; i < dt.nlse; i++)
        lf[i] = (float)lr[i];
    double *dqr = dbuf(n), *dkr = dbuf(n), *dvr = dbuf(n), *drr = dbuf(dt.nrpb);
    float *dq = fbuf(n), *dk = fbuf(n), *dv = fbuf(n), *dr = fbuf(dt.nrpb);
    for (int64_t i = 0; i < n; i++)
        dq[i] = dk[i] = dv[i] = -7.0f;
    EXPECT_OK(na_ref_fused_backward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr, dt.g_outd,
                                    dqr, dkr, dvr, c->rpb ? drr : NULL), c);
    EXPECT_OK(na_cpu_fused_backward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, of, lf, dt.g_out, dq, dk,
                                    dv, c->rpb ? dr : NULL), c);
    EXPECT_CLOSE("fused_backward dq", dq, dqr, n, TOL, c);
    EXPECT_CLOSE("fused_backward dk", dk, dkr, n, TOL, c);
    EXPECT_CLOSE("fused_backward dv", dv, dvr, n, TOL, c);
    if (c->rpb)
        EXPECT_CLOSE("fused_backward drpb", dr, drr, dt.nrpb, TOL, c);
    free(orf), free(lr), free(of), free(lf), free(dqr), free(dkr), free(dvr), free(drr);
    free(dq), free(dk), free(dv), free(dr);
    na_data_free(&dt);
}

/* Fused == softmax(qk) then av, forward and backward, all fast kernels. */
static void run_fused_vs_unfused(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 7);
    const int64_t n = dt.nqkv, K = na_case_slots(c), nq = dt.nlse;
    const float *rpbf = c->rpb ? dt.rpb : NULL;
    float *logit = fbuf(dt.natt), *w = fbuf(dt.natt), *dw = fbuf(dt.natt);
    float *ou = fbuf(n), *of = fbuf(n), *lf = fbuf(nq);
    EXPECT_OK(na_cpu_qk(CASE_PB(c, p), dt.q, dt.k, rpbf, logit), c);
    double *lse_u = dbuf(nq);
    for (int64_t i = 0; i < nq; i++) {
        const float *row = logit + i * K;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t s = 0; s < K; s++)
            mx = fmax(mx, row[s]);
        for (int64_t s = 0; s < K; s++)
            sum += exp(row[s] - mx);
        for (int64_t s = 0; s < K; s++)
            w[i * K + s] = (float)(exp(row[s] - mx) / sum);
        lse_u[i] = mx + log(sum);
    }
    EXPECT_OK(na_cpu_av(CASE_PB(c, p), w, dt.v, ou), c);
    EXPECT_OK(na_cpu_fused_forward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, of, lf), c);
    double *oud = na_to_double(ou, n);
    EXPECT_CLOSE("fused vs unfused out", of, oud, n, TOL, c);
    EXPECT_CLOSE("fused vs unfused lse", lf, lse_u, nq, TOL, c);

    /* Backward: av_backward -> softmax backward -> qk_backward. */
    float *dvu = fbuf(n), *dqu = fbuf(n), *dku = fbuf(n), *dru = fbuf(dt.nrpb);
    EXPECT_OK(na_cpu_av_backward(CASE_PB(c, p), dt.g_out, w, dt.v, dw, dvu), c);
    for (int64_t i = 0; i < nq; i++) {
        double dot = 0.0;
        for (int64_t s = 0; s < K; s++)
            dot += (double)w[i * K + s] * dw[i * K + s];
        for (int64_t s = 0; s < K; s++)
            dw[i * K + s] = (float)(w[i * K + s] * (dw[i * K + s] - dot));
    }
    EXPECT_OK(na_cpu_qk_backward(CASE_PB(c, p), dw, dt.q, dt.k, dqu, dku, c->rpb ? dru : NULL), c);
    float *dqf = fbuf(n), *dkf = fbuf(n), *dvf = fbuf(n), *drf = fbuf(dt.nrpb);
    EXPECT_OK(na_cpu_fused_backward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, of, lf, dt.g_out, dqf,
                                    dkf, dvf, c->rpb ? drf : NULL), c);
    double *x;
    x = na_to_double(dqu, n);
    EXPECT_CLOSE("fused vs unfused dq", dqf, x, n, TOL, c);
    free(x);
    x = na_to_double(dku, n);
    EXPECT_CLOSE("fused vs unfused dk", dkf, x, n, TOL, c);
    free(x);
    x = na_to_double(dvu, n);
    EXPECT_CLOSE("fused vs unfused dv", dvf, x, n, TOL, c);
    free(x);
    if (c->rpb) {
        x = na_to_double(dru, dt.nrpb);
        EXPECT_CLOSE("fused vs unfused drpb", drf, x, dt.nrpb, TOL, c);
        free(x);
    }
    free(logit), free(w), free(dw), free(ou), free(of), free(lf), free(lse_u), free(oud);
    free(dvu), free(dqu), free(dku), free(dru), free(dqf), free(dkf), free(dvf), free(drf);
    na_data_free(&dt);
}

/* Every case, or every `step`-th one (the fast-vs-fast comparison needs less breadth). */
static void sweep_every(void (*fn)(const na_case *), int step)
{
    na_cases_build();
    for (int i = 0; i < na_ncases; i += step)
        fn(&na_cases[i]);
}

static void sweep(void (*fn)(const na_case *)) { sweep_every(fn, 1); }

START_TEST(test_qk) { sweep(run_qk); }
END_TEST
START_TEST(test_av) { sweep(run_av); }
END_TEST
START_TEST(test_qk_bwd) { sweep(run_qk_bwd); }
END_TEST
START_TEST(test_av_bwd) { sweep(run_av_bwd); }
END_TEST
START_TEST(test_fused_fwd) { sweep(run_fused_fwd); }
END_TEST
START_TEST(test_fused_bwd) { sweep(run_fused_bwd); }
END_TEST
START_TEST(test_fused_vs_unfused) { sweep_every(run_fused_vs_unfused, 2); }
END_TEST

/* Outputs do not depend on scheduling: two runs give the same bits, and dq, dk, dv are the same with
 * one thread as with the default team (each row is computed by one thread in a fixed order). With a
 * team larger than the work items the fused backward takes its recompute path instead of the ring:
 * same results up to rounding, whatever thread count the suite runs with. */
START_TEST(test_determinism)
{
    const na_case cases[] = {
        {.ndim = 2, .batch = 2, .heads = 3, .len = {15, 13}, .dim = 32, .kernel = {7, 7},
         .dilation = {1, 1}, .rpb = 1},
        {.ndim = 2, .batch = 1, .heads = 1, .len = {16, 12}, .dim = 16, .kernel = {5, 3},
         .dilation = {2, 3}, .rpb = 1},
        {.ndim = 1, .batch = 1, .heads = 2, .len = {40}, .dim = 20, .kernel = {9}, .dilation = {2},
         .causal = {1}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const na_case *c = &cases[ci];
        nat_na_params p = na_case_params(c);
        na_data dt;
        na_data_init(&dt, c, 9);
        const int64_t n = dt.nqkv;
        const float *rpbf = c->rpb ? dt.rpb : NULL;
        float *o = fbuf(n), *l = fbuf(dt.nlse);
        EXPECT_OK(na_cpu_fused_forward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, o, l), c);
        float *g[4][4];
        for (int run = 0; run < 4; run++) {
            for (int i = 0; i < 3; i++)
                g[run][i] = fbuf(n);
            g[run][3] = fbuf(dt.nrpb);
#ifdef _OPENMP
            int saved = omp_get_max_threads();
            if (run == 2)
                omp_set_num_threads(1);
            if (run == 3)
                omp_set_num_threads(64);
#endif
            EXPECT_OK(na_cpu_fused_backward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, o, l, dt.g_out,
                                            g[run][0], g[run][1], g[run][2], c->rpb ? g[run][3] : NULL),
                      c);
#ifdef _OPENMP
            omp_set_num_threads(saved);
#endif
        }
        char d[256];
        na_case_describe(c, d, sizeof d);
        for (int i = 0; i < 4; i++) {
            size_t bytes = sizeof(float) * (size_t)(i < 3 ? n : dt.nrpb);
            ck_assert_msg(!memcmp(g[0][i], g[1][i], bytes), "fused_backward output %d differs between "
                          "two identical calls [%s]", i, d);
            if (i < 3)
                ck_assert_msg(!memcmp(g[0][i], g[2][i], bytes), "fused_backward output %d differs "
                              "between 1 thread and the default team [%s]", i, d);
            if (i < 3 || c->rpb) {
                double *ref = na_to_double(g[0][i], i < 3 ? n : dt.nrpb);
                EXPECT_CLOSE("fused_backward, recompute path vs ring", g[3][i], ref, i < 3 ? n : dt.nrpb,
                             1e-5, c);
                free(ref);
            }
        }
        for (int run = 0; run < 4; run++)
            for (int i = 0; i < 4; i++)
                free(g[run][i]);
        free(o), free(l);
        na_data_free(&dt);
    }
}
END_TEST

/* The sweep covers what it claims to. */
START_TEST(test_sweep_coverage)
{
    na_cases_build();
    int kseen[32] = {0}, dseen[4] = {0}, offs[10] = {0}, c2[4] = {0}, c3[8] = {0};
    int dims[65] = {0}, rpb_on = 0, rpb_off = 0, bh1 = 0, bhn = 0, nondiv = 0, nonsq = 0;
    for (int i = 0; i < na_ncases; i++) {
        const na_case *c = &na_cases[i];
        for (int a = 0; a < c->ndim; a++) {
            int64_t off = c->len[a] - (int64_t)c->kernel[a] * c->dilation[a];
            if (c->kernel[a] < 32)
                kseen[c->kernel[a]] = 1;
            if (c->dilation[a] < 4)
                dseen[c->dilation[a]] = 1;
            if (off >= 0 && off < 10)
                offs[off] = 1;
            nondiv |= c->dilation[a] > 1 && c->len[a] % c->dilation[a] != 0;
        }
        if (c->ndim == 2) {
            c2[c->causal[0] + 2 * c->causal[1]] = 1;
            nonsq |= c->len[0] != c->len[1];
        }
        if (c->ndim == 3)
            c3[c->causal[0] + 2 * c->causal[1] + 4 * c->causal[2]] = 1;
        if (c->dim <= 64)
            dims[c->dim] = 1;
        rpb_on |= c->rpb;
        rpb_off |= !c->rpb;
        bh1 |= c->batch == 1 && c->heads == 1;
        bhn |= c->batch > 1 && c->heads > 1;
    }
    for (size_t i = 0; i < sizeof na_case_kernels / sizeof na_case_kernels[0]; i++)
        ck_assert_msg(kseen[na_case_kernels[i]], "kernel %d not swept", na_case_kernels[i]);
    for (int d = 1; d <= 3; d++)
        ck_assert_msg(dseen[d], "dilation %d not swept", d);
    for (int o = 0; o < 10; o++)
        ck_assert_msg(offs[o], "length k*d+%d not swept", o);
    for (int m = 0; m < 4; m++)
        ck_assert_msg(c2[m], "2-D causal combination %d not swept", m);
    for (int m = 0; m < 8; m++)
        ck_assert_msg(c3[m], "3-D causal combination %d not swept", m);
    for (size_t i = 0; i < sizeof na_case_dims / sizeof na_case_dims[0]; i++)
        ck_assert_msg(dims[na_case_dims[i]], "head dim %d not swept", (int)na_case_dims[i]);
    ck_assert(rpb_on && rpb_off && bh1 && bhn && nondiv && nonsq);
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* Windows on hand-worked 1-D and 2-D examples (docs/design.md §2), for both implementations               */

/* With D = 1, q = 1, k[j] = j, scale 1 and no rpb the logit of a slot is its key index (or -inf when
 * masked); with k = 0 and rpb[r] = r it is the rpb index. */
static void window_logits(int ndim, const int64_t *len, int k, int d, int causal, int use_rpb,
                          double *ref, float *fast)
{
    nat_na_params p = {.ndim = ndim, .kernel = {k, k, k}, .dilation = {d, d, d},
                       .causal = {causal, 0, 0}, .scale = 1.0f};
    int64_t npix = 1, K = 1, R = 1;
    for (int a = 0; a < ndim; a++)
        npix *= len[a], K *= k, R *= 2 * k - 1;
    double *qd = dbuf(npix), *kd = dbuf(npix), *rd = dbuf(R);
    float *qf = fbuf(npix), *kf = fbuf(npix), *rf = fbuf(R);
    for (int64_t i = 0; i < npix; i++) {
        qd[i] = qf[i] = 1.0f;
        kd[i] = kf[i] = use_rpb ? 0.0f : (float)i;
    }
    for (int64_t i = 0; i < R; i++)
        rd[i] = rf[i] = (float)i;
    ck_assert_int_eq(na_ref_qk(&p, 1, 1, len, 1, qd, kd, use_rpb ? rd : NULL, ref), NAT_OK);
    na_problem pb;
    ck_assert_int_eq(na_problem_init(&pb, &p, 1, 1, len, 1, use_rpb, "na1d"), NAT_OK);
    ck_assert_int_eq(na_cpu_qk(&pb, qf, kf, use_rpb ? rf : NULL, fast), NAT_OK);
    (void)K;
    free(qd), free(kd), free(rd), free(qf), free(kf), free(rf);
}

static void expect_window(int64_t L, int k, int d, int causal, int use_rpb, int64_t i,
                          const int *want /* k entries, -1 = masked */)
{
    double ref[64 * 16];
    float fast[64 * 16];
    window_logits(1, &L, k, d, causal, use_rpb, ref, fast);
    for (int t = 0; t < k; t++) {
        double r = ref[i * k + t];
        float f = fast[i * k + t];
        if (want[t] < 0) {
            ck_assert_msg(isinf(r) && r < 0 && isinf(f) && f < 0,
                          "L=%d k=%d d=%d causal=%d rpb=%d query %d slot %d: want masked, ref %g fast %g",
                          (int)L, k, d, causal, use_rpb, (int)i, t, r, (double)f);
        } else {
            ck_assert_msg(r == want[t] && f == (float)want[t],
                          "L=%d k=%d d=%d causal=%d rpb=%d query %d slot %d: want %d, ref %g fast %g",
                          (int)L, k, d, causal, use_rpb, (int)i, t, want[t], r, (double)f);
        }
    }
}

START_TEST(test_windows)
{
    /* L 7, k 3: windows shift inward at the borders. */
    expect_window(7, 3, 1, 0, 0, 0, (int[]){0, 1, 2});
    expect_window(7, 3, 1, 0, 0, 3, (int[]){2, 3, 4});
    expect_window(7, 3, 1, 0, 0, 6, (int[]){4, 5, 6});
    /* rpb index (k-1) + key - query: 2,3,4 at the left border, 1,2,3 centred, 0,1,2 at the right. */
    expect_window(7, 3, 1, 0, 1, 0, (int[]){2, 3, 4});
    expect_window(7, 3, 1, 0, 1, 3, (int[]){1, 2, 3});
    expect_window(7, 3, 1, 0, 1, 6, (int[]){0, 1, 2});
    /* Dilation 2 on L 7: groups {0,2,4,6} and {1,3,5} (7 mod 2 != 0: unequal group lengths). */
    expect_window(7, 3, 2, 0, 0, 0, (int[]){0, 2, 4});
    expect_window(7, 3, 2, 0, 0, 4, (int[]){2, 4, 6});
    expect_window(7, 3, 2, 0, 0, 6, (int[]){2, 4, 6});
    expect_window(7, 3, 2, 0, 0, 1, (int[]){1, 3, 5});
    expect_window(7, 3, 2, 0, 0, 5, (int[]){1, 3, 5});
    expect_window(7, 3, 2, 0, 1, 6, (int[]){0, 1, 2}); /* query 6 at p 3, keys p 1..3 */
    /* Dilation 3 on L 11: group 2 is {2,5,8} only. */
    expect_window(11, 3, 3, 0, 0, 8, (int[]){2, 5, 8});
    expect_window(11, 3, 3, 0, 0, 9, (int[]){3, 6, 9});
    expect_window(11, 3, 3, 0, 0, 4, (int[]){1, 4, 7});
    /* Causal: trailing window, future keys masked. */
    expect_window(7, 3, 1, 1, 0, 0, (int[]){0, -1, -1});
    expect_window(7, 3, 1, 1, 0, 1, (int[]){0, 1, -1});
    expect_window(7, 3, 1, 1, 0, 4, (int[]){2, 3, 4});
    expect_window(8, 3, 2, 1, 0, 3, (int[]){1, 3, -1});
    expect_window(8, 3, 2, 1, 0, 7, (int[]){3, 5, 7});
    /* k 5 on L 9. */
    expect_window(9, 5, 1, 0, 0, 1, (int[]){0, 1, 2, 3, 4});
    expect_window(9, 5, 1, 0, 0, 5, (int[]){3, 4, 5, 6, 7});
    expect_window(9, 5, 1, 0, 0, 8, (int[]){4, 5, 6, 7, 8});

    /* 2-D: slot a*k + b, a along axis 0. Map 5x6, k 3: query (0, 5) sees rows 0..2, cols 3..5. */
    int64_t len[2] = {5, 6};
    double ref[30 * 9];
    float fast[30 * 9];
    window_logits(2, len, 3, 1, 0, 0, ref, fast);
    int64_t qpix = 0 * 6 + 5;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double want = (double)(a * 6 + 3 + b);
            ck_assert_msg(ref[qpix * 9 + a * 3 + b] == want && fast[qpix * 9 + a * 3 + b] == want,
                          "2-D slot (%d,%d): want key %g, ref %g fast %g", a, b, want,
                          ref[qpix * 9 + a * 3 + b], (double)fast[qpix * 9 + a * 3 + b]);
        }
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* Finite differences of the reference backward (double)                                             */

typedef struct fd_case {
    int ndim;
    int64_t len[3];
    int k, d[3], causal[3], rpb;
} fd_case;

static const fd_case FD_CASES[] = {
    {1, {9}, 3, {2}, {0}, 1},
    {1, {8}, 3, {1}, {1}, 0},
    {2, {7, 8}, 3, {1, 2}, {0, 0}, 1},
    {2, {6, 5}, 3, {2, 1}, {1, 0}, 0},
    {2, {5, 7}, 5, {1, 1}, {0, 1}, 0},
    {3, {4, 5, 6}, 3, {1, 1, 2}, {0, 1, 1}, 0},
    {3, {3, 4, 3}, 3, {1, 1, 1}, {0, 0, 0}, 1},
};

typedef struct fd_problem {
    nat_na_params p;
    int64_t batch, heads, len[3], dim, nqkv, natt, nrpb, nq;
    double *q, *k, *v, *rpb, *g_out, *g_att, *att;
} fd_problem;

/* loss = sum(g_out * fused_forward(q, k, v, rpb)) */
static double fd_loss_fused(fd_problem *f)
{
    double *out = dbuf(f->nqkv), *lse = dbuf(f->nq), s = 0.0;
    ck_assert_int_eq(na_ref_fused_forward(&f->p, f->batch, f->heads, f->len, f->dim, f->q, f->k, f->v,
                                          f->rpb, out, lse), NAT_OK);
    for (int64_t i = 0; i < f->nqkv; i++)
        s += f->g_out[i] * out[i];
    free(out), free(lse);
    return s;
}

/* loss = sum(g_att * qk(q, k, rpb)) over unmasked slots */
static double fd_loss_qk(fd_problem *f)
{
    double *a = dbuf(f->natt), s = 0.0;
    ck_assert_int_eq(na_ref_qk(&f->p, f->batch, f->heads, f->len, f->dim, f->q, f->k, f->rpb, a),
                     NAT_OK);
    for (int64_t i = 0; i < f->natt; i++)
        if (isfinite(a[i]))
            s += f->g_att[i] * a[i];
    free(a);
    return s;
}

/* loss = sum(g_out * av(att, v)) */
static double fd_loss_av(fd_problem *f)
{
    double *o = dbuf(f->nqkv), s = 0.0;
    ck_assert_int_eq(na_ref_av(&f->p, f->batch, f->heads, f->len, f->dim, f->att, f->v, o), NAT_OK);
    for (int64_t i = 0; i < f->nqkv; i++)
        s += f->g_out[i] * o[i];
    free(o);
    return s;
}

/* Central differences on up to `samples` entries of x against the analytic gradient g. */
static void fd_check(fd_problem *f, double (*loss)(fd_problem *), double *x, const double *g,
                     int64_t n, const char *what, const fd_case *fc, const int64_t *skip_mask_att)
{
    const double eps = 1e-5;
    double gmax = 0.0;
    for (int64_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(g[i]));
    int64_t step = n > 40 ? n / 40 : 1;
    for (int64_t i = 0; i < n; i += step) {
        if (skip_mask_att && skip_mask_att[i])
            continue;
        double x0 = x[i];
        x[i] = x0 + eps;
        double lp = loss(f);
        x[i] = x0 - eps;
        double lm = loss(f);
        x[i] = x0;
        double num = (lp - lm) / (2 * eps);
        ck_assert_msg(fabs(num - g[i]) <= 1e-6 * fmax(1.0, gmax),
                      "finite differences, %s[%lld]: numeric %.9g analytic %.9g (ndim %d, k %d, "
                      "causal %d,%d,%d, rpb %d)",
                      what, (long long)i, num, g[i], fc->ndim, fc->k, fc->causal[0], fc->causal[1],
                      fc->causal[2], fc->rpb);
    }
}

START_TEST(test_fd_grad)
{
    for (size_t ci = 0; ci < sizeof FD_CASES / sizeof FD_CASES[0]; ci++) {
        const fd_case *fc = &FD_CASES[ci];
        fd_problem f = {.batch = 2, .heads = 2, .dim = 5};
        f.p.ndim = fc->ndim;
        f.p.scale = 0.0f;
        int64_t npix = 1, K = 1;
        f.nrpb = f.heads;
        for (int a = 0; a < fc->ndim; a++) {
            f.p.kernel[a] = fc->k;
            f.p.dilation[a] = fc->d[a];
            f.p.causal[a] = fc->causal[a];
            f.len[a] = fc->len[a];
            npix *= fc->len[a];
            K *= fc->k;
            f.nrpb *= 2 * fc->k - 1;
        }
        f.nq = f.batch * f.heads * npix;
        f.nqkv = f.nq * f.dim;
        f.natt = f.nq * K;
        nat_rng r;
        nat_rng_seed(&r, na_test_seed + ci);
        double **bufs[] = {&f.q, &f.k, &f.v, &f.rpb, &f.g_out, &f.g_att, &f.att};
        int64_t sizes[] = {f.nqkv, f.nqkv, f.nqkv, f.nrpb, f.nqkv, f.natt, f.natt};
        for (int b = 0; b < 7; b++) {
            *bufs[b] = dbuf(sizes[b]);
            for (int64_t i = 0; i < sizes[b]; i++)
                (*bufs[b])[i] = nat_rng_normal(&r);
        }
        double *rpb_saved = f.rpb;
        if (!fc->rpb)
            f.rpb = NULL;

        /* fused: dq, dk, dv, drpb */
        double *out = dbuf(f.nqkv), *lse = dbuf(f.nq);
        double *dq = dbuf(f.nqkv), *dk = dbuf(f.nqkv), *dv = dbuf(f.nqkv), *dr = dbuf(f.nrpb);
        ck_assert_int_eq(na_ref_fused_forward(&f.p, f.batch, f.heads, f.len, f.dim, f.q, f.k, f.v,
                                              f.rpb, out, lse), NAT_OK);
        ck_assert_int_eq(na_ref_fused_backward(&f.p, f.batch, f.heads, f.len, f.dim, f.q, f.k, f.v,
                                               f.rpb, out, lse, f.g_out, dq, dk, dv,
                                               f.rpb ? dr : NULL), NAT_OK);
        fd_check(&f, fd_loss_fused, f.q, dq, f.nqkv, "fused dq", fc, NULL);
        fd_check(&f, fd_loss_fused, f.k, dk, f.nqkv, "fused dk", fc, NULL);
        fd_check(&f, fd_loss_fused, f.v, dv, f.nqkv, "fused dv", fc, NULL);
        if (f.rpb)
            fd_check(&f, fd_loss_fused, f.rpb, dr, f.nrpb, "fused drpb", fc, NULL);

        /* qk: dq, dk, drpb */
        ck_assert_int_eq(na_ref_qk_backward(&f.p, f.batch, f.heads, f.len, f.dim, f.g_att, f.q, f.k,
                                            dq, dk, f.rpb ? dr : NULL), NAT_OK);
        fd_check(&f, fd_loss_qk, f.q, dq, f.nqkv, "qk dq", fc, NULL);
        fd_check(&f, fd_loss_qk, f.k, dk, f.nqkv, "qk dk", fc, NULL);
        if (f.rpb)
            fd_check(&f, fd_loss_qk, f.rpb, dr, f.nrpb, "qk drpb", fc, NULL);

        /* av: d_attn, dv (masked slots have no gradient by definition: skip them) */
        double *da = dbuf(f.natt), *logit = dbuf(f.natt);
        int64_t *masked = calloc((size_t)f.natt, sizeof(int64_t));
        ck_assert_int_eq(na_ref_qk(&f.p, f.batch, f.heads, f.len, f.dim, f.q, f.k, f.rpb, logit),
                         NAT_OK);
        for (int64_t i = 0; i < f.natt; i++)
            masked[i] = isinf(logit[i]);
        ck_assert_int_eq(na_ref_av_backward(&f.p, f.batch, f.heads, f.len, f.dim, f.g_out, f.att, f.v,
                                            da, dv), NAT_OK);
        fd_check(&f, fd_loss_av, f.att, da, f.natt, "av d_attn", fc, masked);
        fd_check(&f, fd_loss_av, f.v, dv, f.nqkv, "av dv", fc, NULL);
        for (int64_t i = 0; i < f.natt; i++)
            if (masked[i])
                ck_assert_msg(da[i] == 0.0, "masked slot %lld has gradient %g", (long long)i, da[i]);

        free(out), free(lse), free(dq), free(dk), free(dv), free(dr), free(da), free(logit);
        free(masked);
        f.rpb = rpb_saved;
        for (int b = 0; b < 7; b++)
            free(*bufs[b]);
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* Validation                                                                                        */

static void expect_error(nat_status got, nat_status want, const char *const *needles)
{
    ck_assert_msg(got == want, "status %s, want %s (message: %s)", nat_status_name(got),
                  nat_status_name(want), nat_error_message());
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(nat_error_message(), needles[i]), "message \"%s\" lacks \"%s\"",
                      nat_error_message(), needles[i]);
}

START_TEST(test_validation)
{
    nat_na_params p = {.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}};
    int64_t s55[2] = {5, 5};
    expect_error(na_validate(&p, 1, 1, s55, 32, 1, "na2d"), NAT_ERR_SHAPE,
                 (const char *[]){"na2d", "5x5", "kernel 7", "dilation 1", "axis 0", ">= 7", NULL});
    ck_assert_str_eq(nat_error_message(),
                     "na2d: feature map 5x5 is smaller than kernel 7 x dilation 1 on axis 0 (needs >= 7)");

    /* Dilation: 13 < 7*2 on axis 0; 14 on axis 1 is enough. */
    nat_na_params pd = {.ndim = 2, .kernel = {7, 7}, .dilation = {2, 2}};
    int64_t s1314[2] = {13, 14};
    expect_error(na_validate(&pd, 1, 1, s1314, 32, 0, "na2d"), NAT_ERR_SHAPE,
                 (const char *[]){"13x14", "dilation 2", "axis 0", ">= 14", NULL});
    int64_t s1413[2] = {14, 13};
    expect_error(na_validate(&pd, 1, 1, s1413, 32, 0, "na2d"), NAT_ERR_SHAPE,
                 (const char *[]){"14x13", "axis 1", ">= 14", NULL});
    int64_t s1414[2] = {14, 14};
    ck_assert_int_eq(na_validate(&pd, 1, 1, s1414, 32, 0, "na2d"), NAT_OK);

    nat_na_params pe = {.ndim = 1, .kernel = {4}, .dilation = {1}};
    int64_t s20[1] = {20};
    expect_error(na_validate(&pe, 1, 1, s20, 8, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"na1d", "kernel size 4", "even", NULL});
    pe.kernel[0] = 1;
    expect_error(na_validate(&pe, 1, 1, s20, 8, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"kernel size 1", "smaller than 3", NULL});
    pe.kernel[0] = 3;
    pe.dilation[0] = 0;
    expect_error(na_validate(&pe, 1, 1, s20, 8, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"dilation 0", NULL});
    pe.dilation[0] = 1;
    pe.causal[0] = 1;
    expect_error(na_validate(&pe, 1, 1, s20, 8, 1, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"causal", "positional bias", NULL});
    ck_assert_int_eq(na_validate(&pe, 1, 1, s20, 8, 0, "na1d"), NAT_OK);
    pe.causal[0] = 2;
    expect_error(na_validate(&pe, 1, 1, s20, 8, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"causal flag 2", NULL});
    pe.causal[0] = 0;
    expect_error(na_validate(&pe, 1, 0, s20, 8, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"heads 0", NULL});
    expect_error(na_validate(&pe, 1, 1, s20, 0, 0, "na1d"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"head dim 0", NULL});
    pe.ndim = 4;
    expect_error(na_validate(&pe, 1, 1, s20, 8, 0, "na"), NAT_ERR_INVALID_ARG,
                 (const char *[]){"ndim 4", NULL});

    nat_na_params p3 = {.ndim = 3, .kernel = {3, 5, 7}, .dilation = {1, 1, 1}};
    int64_t shape[4];
    ck_assert_int_eq(na_rpb_shape(&p3, 4, shape), 4);
    ck_assert(shape[0] == 4 && shape[1] == 5 && shape[2] == 9 && shape[3] == 13);

    /* The problem the kernels get is validated once, where it is built (na_problem_init, as the ops do),
     * with the same messages; the fast kernels trust it (no second check), the oracle validates itself. */
    na_problem pb;
    int64_t s33[2] = {3, 3};
    expect_error(na_problem_init(&pb, &p, 1, 1, s33, 1, 0, "na_cpu_fused_forward"), NAT_ERR_SHAPE,
                 (const char *[]){"na_cpu_fused_forward", "3x3", NULL});
    expect_error(na_problem_init(&pb, &p, 1, 1, s33, 1, 0, "na_cpu_qk"), NAT_ERR_SHAPE,
                 (const char *[]){"3x3", NULL});
    double dbuf_[64] = {0};
    expect_error(na_ref_qk(&p, 1, 1, s33, 1, dbuf_, dbuf_, NULL, dbuf_), NAT_ERR_SHAPE,
                 (const char *[]){"3x3", NULL});
    int64_t s77[2] = {7, 7};
    ck_assert_int_eq(na_problem_init(&pb, &p, 1, 1, s77, 1, 0, "na_cpu_av"), NAT_OK);
    ck_assert(pb.nkeys == 49 && pb.npix == 49 && pb.len[0] == 1 && pb.kernel[0] == 1 && pb.params.ndim == 2);
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */

static Suite *na_suite(void)
{
    Suite *s = suite_create("na_cpu");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"validation", test_validation}, {"windows", test_windows},
        {"sweep_coverage", test_sweep_coverage}, {"fd_grad", test_fd_grad},
        {"qk", test_qk}, {"av", test_av}, {"qk_bwd", test_qk_bwd}, {"av_bwd", test_av_bwd},
        {"fused_fwd", test_fused_fwd}, {"fused_bwd", test_fused_bwd},
        {"fused_vs_unfused", test_fused_vs_unfused}, {"determinism", test_determinism},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    const char *env = getenv("NAT_TEST_SEED");
    if (env && *env)
        na_test_seed = strtoull(env, NULL, 10);
    printf("test_na_cpu: seed %" PRIu64 " (set NAT_TEST_SEED to change)\n", na_test_seed);
    SRunner *sr = srunner_create(na_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
