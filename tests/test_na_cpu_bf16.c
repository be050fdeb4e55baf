/* tests/test_na_cpu_bf16.c — the CPU's bf16 fused neighborhood attention (cpu/na_cpu.h: the vdpbf16ps
 * kernels behind na_backend's fused_*_autocast entries) and the ISA module (core/cpu/isa.h).
 *
 *  - fused_fwd / fused_bwd: the bf16 kernels against the double reference (tests/ref/na_ref.h) run on
 *    the same bf16-rounded q, k, v (and d_out), over the shared sweep (support/na_cases.h: 1-D, 2-D,
 *    3-D, every kernel size up to the map size, dilation 1-3, every causal combination, rpb on and off,
 *    odd non-square maps, head dims 3 to 96). Tolerances, relative to the reference's max |value|:
 *      lse 1e-4   the logits are exact products of bf16 values summed in f32 (vdpbf16ps), as in the
 *                 reference up to f32 summation: any window, bias or scale error shows here at O(1);
 *      out, dq, dk, dv, drpb 1e-2   the kernels also round the softmax weights P (out, dv) and dS (dq,
 *                 dk) to bf16 before their products, as the CUDA tensor-core kernels do, which the
 *                 reference does not: each such term moves by at most 2^-9 of itself (round to nearest,
 *                 8-bit significand), and the sums of terms with weights <= 1 stay within a few 2^-9
 *                 of the max |value| (the sweep's worst is printed; about 3e-3); a wrong key, slot,
 *                 bias, scale or lane order gives 1e-1 and more. The bf16 result must also differ from
 *                 the f32 kernels' on the same rounded inputs (the rounding of P happened).
 *  - lanes: the lane kernels (cpu/na_cpu_bf16_rows.h: 16 queries / keys per vector where the windows
 *    along the last axis are unclamped) on shapes chosen for their blocks and borders (widths 56, 23, 17
 *    and 9 with kernel 7: full blocks of 16, a remainder, border queries and keys, no block at all;
 *    non-square, dilation 2 on either axis, rpb on and off, 1-D and 3-D lines, head dims 32, 20, 36
 *    and 96 (past NA_ROWS_MAX_DIM: the per-query kernels)), forward and backward, against the double
 *    reference on the rounded inputs (tolerances as above) and against the same kernels with the lane
 *    path off (na_cpu_bf16_set_rows(0)): those differ only in the order of f32 sums, so lse agrees to
 *    1e-5 and everything else to TOL_LANES (a bf16 rounding of P or dS that lands on the other side of
 *    a tie moves one term by 2^-8 of itself); where no block exists (width 9, D 96) the two must be
 *    bitwise equal, and where blocks exist they must differ somewhere (the lane path ran).
 *  - autocast_op: nat_na2d under nat_ctx precision BF16 reaches na_cpu_fused_forward_autocast /
 *    _backward_autocast: forward and gradients bitwise equal to calling them directly on the rounded
 *    inputs, and the path taken is the one na_cpu_autocast_path reports (vdpbf16ps on an AMD core,
 *    emulated on an Intel one and under a cap); isa also checks the rule that decides it.
 *  - isa: ONEDNN_MAX_CPU_ISA's values (case-insensitive, oneDNN's names; unknown ones ignored), and
 *    the level = min(detected, cap).
 *  - capped: ctest runs this binary a second time with ONEDNN_MAX_CPU_ISA=AVX512_CORE
 *    (test_na_cpu_bf16_capped): there (and on an Intel core, uncapped) the autocast entries must take the
 *    emulated path (f32 kernels on the rounded values) and agree with the bf16 kernels (called directly)
 *    within 1e-2; where they take the bf16 kernels, bit for bit.
 * On a CPU without AVX512_BF16 the kernel cases cannot run: the ISA and emulated-path cases run, then
 * the binary prints "SKIPPED: ..." and exits 77 (ctest reports it skipped).
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/cpu/isa.h"
#include "layers/natten/cpu/na_cpu.h"
#include "layers/natten/na_problem.h"
#include "nat/half.h"
#include "nat/natten.h"
#include "support/harness.h"
#include "support/na_cases.h"
#include "tests/ref/na_ref.h"

#define TOL_LSE 1e-4
#define TOL_BF16 1e-2

static bool have_bf16(void) { return nat_cpu_isa_detected() >= NAT_ISA_AVX512_CORE_BF16; }

/* ONEDNN_MAX_CPU_ISA caps below avx512_core_bf16 (the second ctest registration). */
static bool capped(void) { return nat_cpu_isa_cap() < NAT_ISA_AVX512_CORE_BF16; }

#define EXPECT_CLOSE na_expect_close

#define EXPECT_OK NA_EXPECT_OK

#define fbuf na_fbuf
#define dbuf na_dbuf

/* x and its double copy rounded to bf16 in place. */
static void round_pair(float *x, double *xd, int64_t n)
{
    nat_round_array(NAT_PREC_BF16, x, x, n);
    for (int64_t i = 0; i < n; i++)
        xd[i] = x[i];
}

/* Case c's inputs with q, k, v and d_out on the bf16 grid. */
static void rounded_data(na_data *dt, const na_case *c, uint64_t salt)
{
    na_data_init(dt, c, salt);
    round_pair(dt->q, dt->qd, dt->nqkv);
    round_pair(dt->k, dt->kd, dt->nqkv);
    round_pair(dt->v, dt->vd, dt->nqkv);
    round_pair(dt->g_out, dt->g_outd, dt->nqkv);
}

#define CASE_ARGS(c, p) &(p), (c)->batch, (c)->heads, (c)->len, (c)->dim

static double worst_lse, worst_out, worst_grad, least_diff = INFINITY;

static void run_fwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    rounded_data(&dt, c, 31);
    float *o = fbuf(dt.nqkv), *l = fbuf(dt.nlse), *oe = fbuf(dt.nqkv), *le = fbuf(dt.nlse);
    double *orf = dbuf(dt.nqkv), *lr = dbuf(dt.nlse);
    const float *rpb = c->rpb ? dt.rpb : NULL;
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, c->rpb ? dt.rpbd : NULL, orf, lr), c);
    EXPECT_OK(na_cpu_fused_forward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, o, l), c);
    EXPECT_CLOSE("bf16 fused_forward lse", l, lr, dt.nlse, TOL_LSE, c, &worst_lse);
    EXPECT_CLOSE("bf16 fused_forward out", o, orf, dt.nqkv, TOL_BF16, c, &worst_out);
    /* The emulation (f32 kernels, nothing rounded past the inputs) differs: P was rounded. */
    EXPECT_OK(na_cpu_fused_forward(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, oe, le), c);
    double *oed = na_to_double(oe, dt.nqkv);
    const double diff = na_rel_err(o, oed, dt.nqkv);
    least_diff = diff < least_diff ? diff : least_diff;
    free(oed), free(o), free(l), free(oe), free(le), free(orf), free(lr);
    na_data_free(&dt);
}

static void run_bwd(const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    rounded_data(&dt, c, 32);
    const int64_t n = dt.nqkv;
    const double *rpbd = c->rpb ? dt.rpbd : NULL;
    const float *rpb = c->rpb ? dt.rpb : NULL;
    double *orf = dbuf(n), *lr = dbuf(dt.nlse);
    float *of = fbuf(n), *lf = fbuf(dt.nlse);
    na_ref_fused_saved(c, &dt, orf, lr, of, lf);
    double *dqr = dbuf(n), *dkr = dbuf(n), *dvr = dbuf(n), *drr = dbuf(dt.nrpb);
    float *dq = fbuf(n), *dk = fbuf(n), *dv = fbuf(n), *dr = fbuf(dt.nrpb);
    for (int64_t i = 0; i < n; i++) /* garbage: outputs are overwritten */
        dq[i] = dk[i] = dv[i] = -7.0f;
    EXPECT_OK(na_ref_fused_backward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr, dt.g_outd, dqr, dkr, dvr,
                                    c->rpb ? drr : NULL), c);
    EXPECT_OK(na_cpu_fused_backward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, of, lf, dt.g_out, dq, dk,
                                         dv, c->rpb ? dr : NULL), c);
    EXPECT_CLOSE("bf16 fused_backward dq", dq, dqr, n, TOL_BF16, c, &worst_grad);
    EXPECT_CLOSE("bf16 fused_backward dk", dk, dkr, n, TOL_BF16, c, &worst_grad);
    EXPECT_CLOSE("bf16 fused_backward dv", dv, dvr, n, TOL_BF16, c, &worst_grad);
    if (c->rpb)
        EXPECT_CLOSE("bf16 fused_backward drpb", dr, drr, dt.nrpb, TOL_BF16, c, &worst_grad);
    free(orf), free(lr), free(of), free(lf), free(dqr), free(dkr), free(dvr), free(drr);
    free(dq), free(dk), free(dv), free(dr);
    na_data_free(&dt);
}

START_TEST(fused_fwd)
{
    na_cases_build();
    worst_lse = worst_out = 0.0;
    least_diff = INFINITY;
    for (int i = 0; i < na_ncases; i++)
        run_fwd(&na_cases[i]);
    printf("bf16 fused forward, %d cases: worst lse error %.2g, worst out error %.2g (tolerance %.0g); "
           "smallest distance from the f32 emulation %.2g\n", na_ncases, worst_lse, worst_out, TOL_BF16, least_diff);
    ck_assert_msg(least_diff > 1e-5, "bf16 forward equals the f32 emulation to %.3g: were the weights rounded?",
                  least_diff);
}
END_TEST

START_TEST(fused_bwd)
{
    na_cases_build();
    worst_grad = 0.0;
    for (int i = 0; i < na_ncases; i++)
        run_bwd(&na_cases[i]);
    printf("bf16 fused backward, %d cases: worst gradient error %.2g (tolerance %.0g)\n", na_ncases, worst_grad,
           TOL_BF16);
}
END_TEST

/* ---- the lane kernels against the reference and against the per-query kernels ---- */

#define TOL_LANES 2e-3

/* Forward and backward of case c with the lane path on (na_cpu_bf16_set_rows(1)) and off; the on run
 * against the reference, and both runs against each other. blocks: the shape has lane blocks (the two
 * runs must differ) or not (bitwise equal). */
static void run_lanes(const na_case *c, int blocks, double *worst)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    rounded_data(&dt, c, 34);
    const int64_t n = dt.nqkv, nl = dt.nlse, nr = dt.nrpb;
    const float *rpb = c->rpb ? dt.rpb : NULL;
    const double *rpbd = c->rpb ? dt.rpbd : NULL;
    double *orf = dbuf(n), *lr = dbuf(nl), *dqr = dbuf(n), *dkr = dbuf(n), *dvr = dbuf(n), *drr = dbuf(nr);
    float *of = fbuf(n), *lf = fbuf(nl);
    na_ref_fused_saved(c, &dt, orf, lr, of, lf);
    EXPECT_OK(na_ref_fused_backward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr, dt.g_outd, dqr, dkr, dvr,
                                    c->rpb ? drr : NULL), c);
    /* [0]: lanes on, [1]: off; out, lse, then dq, dk, dv, drpb on the reference's saved out and lse */
    float *o[2], *l[2], *g[2][4];
    for (int r = 0; r < 2; r++) {
        o[r] = fbuf(n), l[r] = fbuf(nl);
        for (int j = 0; j < 4; j++)
            g[r][j] = fbuf(j < 3 ? n : nr);
        na_cpu_bf16_set_rows(r == 0);
        EXPECT_OK(na_cpu_fused_forward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, o[r], l[r]), c);
        EXPECT_OK(na_cpu_fused_backward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, of, lf, dt.g_out, g[r][0],
                                             g[r][1], g[r][2], c->rpb ? g[r][3] : NULL), c);
    }
    na_cpu_bf16_set_rows(1);
    EXPECT_CLOSE("lanes: fused_forward lse", l[0], lr, nl, TOL_LSE, c, worst);
    EXPECT_CLOSE("lanes: fused_forward out", o[0], orf, n, TOL_BF16, c, worst);
    const double *refs[4] = {dqr, dkr, dvr, drr};
    const char *names[4] = {"dq", "dk", "dv", "drpb"};
    const int ng = c->rpb ? 4 : 3;
    for (int j = 0; j < ng; j++) {
        char what[64];
        snprintf(what, sizeof what, "lanes: fused_backward %s", names[j]);
        EXPECT_CLOSE(what, g[0][j], refs[j], j < 3 ? n : nr, TOL_BF16, c, worst);
    }
    /* lanes on against lanes off */
    const float *on[6] = {o[0], l[0], g[0][0], g[0][1], g[0][2], g[0][3]};
    const float *off[6] = {o[1], l[1], g[1][0], g[1][1], g[1][2], g[1][3]};
    const int64_t len[6] = {n, nl, n, n, n, nr};
    const char *what[6] = {"out", "lse", "dq", "dk", "dv", "drpb"};
    int differ = 0;
    for (int j = 0; j < 2 + ng; j++) {
        double *w = na_to_double(off[j], len[j]);
        char msg[96];
        snprintf(msg, sizeof msg, "lanes on vs off: %s", what[j]);
        EXPECT_CLOSE(msg, on[j], w, len[j], j == 1 ? 1e-5 : TOL_LANES, c, NULL);
        differ |= memcmp(on[j], off[j], sizeof(float) * (size_t)len[j]) != 0;
        free(w);
    }
    char desc[256];
    na_case_describe(c, desc, sizeof desc);
    if (blocks)
        ck_assert_msg(differ, "lanes on and off give the same bits: the lane path did not run (%s)", desc);
    else
        ck_assert_msg(!differ, "no lane block in this shape, yet lanes on and off differ (%s)", desc);
    for (int r = 0; r < 2; r++) {
        free(o[r]), free(l[r]);
        for (int j = 0; j < 4; j++)
            free(g[r][j]);
    }
    free(orf), free(lr), free(dqr), free(dkr), free(dvr), free(drr), free(of), free(lf);
    na_data_free(&dt);
}

START_TEST(lanes)
{
    static const struct {
        na_case c;
        int blocks;
    } cases[] = {
        /* NAT-Mini level 1 (one image): blocks of 16, a remainder of 2 and 6 border queries per line */
        {{2, 1, 2, {56, 56, 1}, 32, {7, 7, 1}, {1, 1, 1}, {0, 0, 0}, 1}, 1},
        {{2, 2, 1, {12, 23, 1}, 32, {7, 7, 1}, {1, 1, 1}, {0, 0, 0}, 0}, 1},  /* one key block of 9 */
        {{2, 1, 3, {9, 17, 1}, 20, {7, 5, 1}, {1, 1, 1}, {0, 0, 0}, 1}, 1},   /* odd D, non-square */
        {{2, 2, 1, {9, 9, 1}, 32, {7, 7, 1}, {1, 1, 1}, {0, 0, 0}, 1}, 0},    /* k close to W: no block */
        {{2, 1, 2, {20, 41, 1}, 36, {5, 7, 1}, {1, 2, 1}, {0, 0, 0}, 1}, 1},  /* dilation 2 along the row */
        {{2, 2, 1, {30, 29, 1}, 32, {3, 9, 1}, {2, 1, 1}, {0, 0, 0}, 1}, 1},  /* dilation 2 across rows */
        {{2, 1, 2, {13, 40, 1}, 96, {7, 7, 1}, {1, 1, 1}, {0, 0, 0}, 1}, 0},  /* D 96: per-query kernels */
        {{1, 2, 2, {70, 1, 1}, 32, {9, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1}, 1},   /* 1-D */
        {{3, 1, 2, {5, 6, 30}, 16, {3, 3, 5}, {1, 2, 1}, {0, 0, 0}, 1}, 1},   /* 3-D, dilation on axis 1 */
        {{2, 2, 1, {11, 33, 1}, 32, {3, 7, 1}, {1, 1, 1}, {1, 0, 0}, 0}, 1},  /* causal rows, open columns */
        {{2, 1, 2, {10, 30, 1}, 32, {3, 7, 1}, {1, 1, 1}, {0, 1, 0}, 0}, 0},  /* causal columns: no lanes */
    };
    if (!na_cpu_bf16_rows())
        ck_abort_msg("the lane kernels are off by default");
    /* The lane path takes whole heads per thread: 2 threads, so that every shape above has enough heads
     * whatever OMP_NUM_THREADS says. */
#ifdef _OPENMP
    const int prev = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    double worst = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_lanes(&cases[i].c, cases[i].blocks, &worst);
#ifdef _OPENMP
    omp_set_num_threads(prev);
#endif
    printf("lane kernels, %zu shapes: worst error against the reference %.2g\n", sizeof cases / sizeof *cases, worst);
}
END_TEST

/* ---- the op under autocast reaches the autocast entries ---- */

static void op_case(int ndim, const int64_t *len, int kernel, int dilation, int causal, int rpb_on)
{
    const int64_t B = 2, H = 2, D = 32;
    int64_t shape[6] = {B, H};
    int64_t npix = 1;
    for (int a = 0; a < ndim; a++)
        shape[2 + a] = len[a], npix *= len[a];
    shape[2 + ndim] = D;
    const int64_t n = B * H * npix * D;
    nat_na_params p = nat_na_params_make(ndim, kernel, dilation);
    for (int a = 0; a < ndim; a++)
        p.causal[a] = causal;
    int64_t rshape[4];
    const int rr = na_rpb_shape(&p, H, rshape);
    int64_t nr = 1;
    for (int a = 0; a < rr; a++)
        nr *= rshape[a];
    nat_rng rng;
    nat_rng_seed(&rng, 41);
    float *q = na_randn(&rng, n, 1.0f), *k = na_randn(&rng, n, 1.0f), *v = na_randn(&rng, n, 1.0f);
    float *r = na_randn(&rng, nr, 0.5f), *g = na_randn(&rng, n, 1.0f);
    /* the op, BF16 */
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_precision(ctx, NAT_PREC_BF16);
    nat_tensor *tq, *tk, *tv, *tr = NULL, *y, *tg;
    TH_OK(nat_tensor_new(&tq, NAT_F32, NAT_CPU, ndim + 3, shape));
    TH_OK(nat_tensor_new(&tk, NAT_F32, NAT_CPU, ndim + 3, shape));
    TH_OK(nat_tensor_new(&tv, NAT_F32, NAT_CPU, ndim + 3, shape));
    TH_OK(nat_tensor_copy_from(tq, q, n));
    TH_OK(nat_tensor_copy_from(tk, k, n));
    TH_OK(nat_tensor_copy_from(tv, v, n));
    nat_set_requires_grad(tq, true);
    nat_set_requires_grad(tk, true);
    nat_set_requires_grad(tv, true);
    if (rpb_on) {
        TH_OK(nat_tensor_new(&tr, NAT_F32, NAT_CPU, rr, rshape));
        TH_OK(nat_tensor_copy_from(tr, r, nr));
        nat_set_requires_grad(tr, true);
    }
    TH_OK(nat_na(ctx, tq, tk, tv, tr, &p, &y));
    TH_OK(nat_ctx_empty(ctx, &tg, NAT_F32, ndim + 3, shape));
    TH_OK(nat_tensor_copy_from(tg, g, n));
    TH_OK(nat_backward_from(ctx, y, tg));
    /* the entries, directly, on the rounded inputs */
    nat_round_array(NAT_PREC_BF16, q, q, n);
    nat_round_array(NAT_PREC_BF16, k, k, n);
    nat_round_array(NAT_PREC_BF16, v, v, n);
    na_problem pb;
    TH_OK(na_problem_init(&pb, &p, B, H, len, D, rpb_on, "test"));
    pb.device = -1;
    float *o = fbuf(n), *l = fbuf(B * H * npix), *dq = fbuf(n), *dk = fbuf(n), *dv = fbuf(n), *dr = fbuf(nr);
    const float *rp = rpb_on ? r : NULL;
    TH_OK(na_cpu_fused_forward_autocast(&pb, 0, q, k, v, rp, o, l));
    TH_OK(na_cpu_fused_backward_autocast(&pb, 0, q, k, v, rp, o, l, g, dq, dk, dv, rpb_on ? dr : NULL));
    ck_assert_msg(!memcmp(o, nat_tensor_f32(y), sizeof(float) * (size_t)n), "nat_na under BF16 (%dd) is not the "
                  "autocast entry's forward", ndim);
    ck_assert_msg(!memcmp(dq, nat_tensor_f32(tq->grad), sizeof(float) * (size_t)n), "dq (%dd)", ndim);
    ck_assert_msg(!memcmp(dk, nat_tensor_f32(tk->grad), sizeof(float) * (size_t)n), "dk (%dd)", ndim);
    ck_assert_msg(!memcmp(dv, nat_tensor_f32(tv->grad), sizeof(float) * (size_t)n), "dv (%dd)", ndim);
    if (rpb_on)
        ck_assert_msg(!memcmp(dr, nat_tensor_f32(tr->grad), sizeof(float) * (size_t)nr), "drpb (%dd)", ndim);
    /* which kernel that was: the f32 kernels on the same values give other bits exactly when it was bf16 */
    float *oe = fbuf(n), *le = fbuf(B * H * npix);
    TH_OK(na_cpu_fused_forward(&pb, q, k, v, rp, oe, le));
    const bool same_as_f32 = !memcmp(o, oe, sizeof(float) * (size_t)n);
    const na_cpu_autocast_kernel path = na_cpu_autocast_path(0);
    ck_assert_msg(same_as_f32 == (path == NA_CPU_AUTOCAST_EMULATED),
                  "path %s but the forward %s the f32 kernels'", path == NA_CPU_AUTOCAST_BF16 ? "bf16" : "emulated",
                  same_as_f32 ? "equals" : "differs from");
    ck_assert_int_eq(na_cpu_autocast_path(1), NA_CPU_AUTOCAST_EMULATED); /* f16: always the emulation */
    nat_ctx_free(ctx);
    nat_tensor_free(tq), nat_tensor_free(tk), nat_tensor_free(tv);
    if (tr)
        nat_tensor_free(tr);
    free(q), free(k), free(v), free(r), free(g), free(o), free(l), free(dq), free(dk), free(dv), free(dr);
    free(oe), free(le);
}

START_TEST(autocast_op)
{
    const int64_t l1[1] = {37}, l2[2] = {13, 11}, l3[3] = {5, 6, 7};
    op_case(1, l1, 7, 2, 1, 0);  /* 1-D dilated causal */
    op_case(2, l2, 7, 1, 0, 1);  /* 2-D rpb, odd non-square */
    op_case(3, l3, 3, 1, 0, 1);  /* 3-D rpb */
    /* vdpbf16ps where it outruns the f32 FMAs: an AMD core with AVX512_BF16 under no lower cap */
    const bool pays = have_bf16() && !capped() && nat_cpu_vendor_amd();
    ck_assert_int_eq(na_cpu_autocast_path(0), pays ? NA_CPU_AUTOCAST_BF16 : NA_CPU_AUTOCAST_EMULATED);
    printf("autocast path: %s (%s CPU, ISA %s, detected %s, ONEDNN_MAX_CPU_ISA=%s)\n",
           na_cpu_autocast_path(0) == NA_CPU_AUTOCAST_BF16 ? "vdpbf16ps kernels" : "emulated (f32 kernels)",
           nat_cpu_vendor_amd() ? "AMD" : "non-AMD", nat_cpu_isa_name(), nat_cpu_isa_level_name(nat_cpu_isa_detected()),
           getenv("ONEDNN_MAX_CPU_ISA") ? getenv("ONEDNN_MAX_CPU_ISA") : "(unset)");
}
END_TEST

/* ---- ISA module ---- */

START_TEST(isa)
{
    static const struct {
        const char *v;
        int level;
    } cases[] = {
        {"ALL", NAT_ISA_AVX512_CORE_AMX},      {"all", NAT_ISA_AVX512_CORE_AMX},
        {"avx512_core_amx", NAT_ISA_AVX512_CORE_AMX},
        {"AVX512_CORE_BF16", NAT_ISA_AVX512_CORE_BF16}, {"Avx512_Core_Bf16", NAT_ISA_AVX512_CORE_BF16},
        {"AVX512_CORE_FP16", NAT_ISA_AVX512_CORE_BF16}, {"AVX10_1_512", NAT_ISA_AVX512_CORE_BF16},
        {"AVX512_CORE_VNNI", NAT_ISA_AVX512_CORE_VNNI}, {"AVX512_CORE", NAT_ISA_AVX512_CORE},
        {"avx2", NAT_ISA_AVX2},                {"AVX2_VNNI", NAT_ISA_AVX2},
        {"SSE41", NAT_ISA_GENERIC},            {"avx", NAT_ISA_GENERIC},
        {"", -1},                              {"AVX512", -1},
        {"avx512_core_bf17", -1},              {"AVX512_CORE ", -1},
        {"A_VERY_LONG_VALUE_THAT_IS_NO_ISA_AT_ALL", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ck_assert_msg(nat_cpu_isa_cap_parse(cases[i].v) == cases[i].level, "cap '%s' -> %d, expected %d", cases[i].v,
                      nat_cpu_isa_cap_parse(cases[i].v), cases[i].level);
    ck_assert_int_eq(nat_cpu_isa_cap_parse(NULL), -1);
    const int env = nat_cpu_isa_cap_parse(getenv("ONEDNN_MAX_CPU_ISA"));
    ck_assert_int_eq(nat_cpu_isa_cap(), env < 0 ? NAT_ISA_AVX512_CORE_AMX : env);
    const nat_cpu_isa d = nat_cpu_isa_detected(), c = nat_cpu_isa_cap();
    ck_assert_int_eq(nat_cpu_isa_level(), d < c ? d : c);
    ck_assert_str_eq(nat_cpu_isa_name(), nat_cpu_isa_level_name(nat_cpu_isa_level()));
    ck_assert(nat_cpu_isa_avx512_bf16() == (nat_cpu_isa_level() >= NAT_ISA_AVX512_CORE_BF16));
    ck_assert(nat_cpu_isa_amx_bf16() == (nat_cpu_isa_level() >= NAT_ISA_AVX512_CORE_AMX));
    ck_assert_str_eq(nat_cpu_isa_level_name(NAT_ISA_AVX512_CORE_BF16), "avx512_core_bf16");
#if defined(__AVX512BF16__)
    ck_assert_int_ge(d, NAT_ISA_AVX512_CORE_BF16); /* the compiler was told this CPU has it */
#endif
    /* the bf16 rule: vdpbf16ps only on AMD cores (on Intel's it issues at half the FMA rate), oneDNN's bf16
     * GEMMs there and with AMX tiles */
    static const struct {
        nat_cpu_isa level;
        bool amd, vector, gemm;
    } rules[] = {
        {NAT_ISA_AVX512_CORE_BF16, true, true, true},   /* Zen 4 */
        {NAT_ISA_AVX512_CORE_BF16, false, false, false}, /* Cooper Lake; Sapphire Rapids without AMX */
        {NAT_ISA_AVX512_CORE_AMX, false, false, true},   /* Sapphire / Emerald Rapids */
        {NAT_ISA_AVX512_CORE_VNNI, true, false, false},  /* capped below bf16 */
        {NAT_ISA_AVX512_CORE_VNNI, false, false, false},
        {NAT_ISA_AVX2, true, false, false},              /* Zen 3 */
        {NAT_ISA_GENERIC, false, false, false},
    };
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) {
        ck_assert_msg(nat_cpu_bf16_native_rule(rules[i].level, rules[i].amd, false) == rules[i].vector,
                      "vector rule at %s, amd %d", nat_cpu_isa_level_name(rules[i].level), rules[i].amd);
        ck_assert_msg(nat_cpu_bf16_native_rule(rules[i].level, rules[i].amd, true) == rules[i].gemm,
                      "gemm rule at %s, amd %d", nat_cpu_isa_level_name(rules[i].level), rules[i].amd);
    }
    ck_assert(nat_cpu_bf16_vector_native() == nat_cpu_bf16_native_rule(nat_cpu_isa_level(), nat_cpu_vendor_amd(), false));
    ck_assert(nat_cpu_bf16_gemm_native() == nat_cpu_bf16_native_rule(nat_cpu_isa_level(), nat_cpu_vendor_amd(), true));
    if (capped() && d >= NAT_ISA_AVX512_CORE) {
        ck_assert(!nat_cpu_isa_avx512_bf16());
        ck_assert_str_eq(nat_cpu_isa_name(), "avx512_core");
    }
}
END_TEST

/* ---- capped: the emulated path agrees with the bf16 kernels ---- */

START_TEST(capped_agrees)
{
    /* emulated under a cap, and on a CPU whose vdpbf16ps does not pay (an Intel core) */
    const bool emulated = na_cpu_autocast_path(0) == NA_CPU_AUTOCAST_EMULATED;
    ck_assert(emulated || !capped());
    na_cases_build();
    double worst = 0.0;
    for (int i = 0; i < na_ncases; i += 4) {
        const na_case *c = &na_cases[i];
        nat_na_params p = na_case_params(c);
        na_data dt;
        rounded_data(&dt, c, 33);
        const int64_t n = dt.nqkv;
        const float *rpb = c->rpb ? dt.rpb : NULL;
        float *oa = fbuf(n), *la = fbuf(dt.nlse), *ob = fbuf(n), *lb = fbuf(dt.nlse);
        float *ga[4], *gb[4];
        for (int j = 0; j < 4; j++)
            ga[j] = fbuf(j < 3 ? n : dt.nrpb), gb[j] = fbuf(j < 3 ? n : dt.nrpb);
        const na_problem *pb = na_case_problem(c, &p);
        EXPECT_OK(na_cpu_fused_forward_autocast(pb, 0, dt.q, dt.k, dt.v, rpb, oa, la), c);
        EXPECT_OK(na_cpu_fused_backward_autocast(na_case_problem(c, &p), 0, dt.q, dt.k, dt.v, rpb, oa, la, dt.g_out,
                                                 ga[0], ga[1], ga[2], c->rpb ? ga[3] : NULL), c);
        EXPECT_OK(na_cpu_fused_forward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, ob, lb), c);
        EXPECT_OK(na_cpu_fused_backward_bf16(na_case_problem(c, &p), dt.q, dt.k, dt.v, rpb, oa, la, dt.g_out, gb[0],
                                             gb[1], gb[2], c->rpb ? gb[3] : NULL), c);
        const float *got[5] = {oa, ga[0], ga[1], ga[2], ga[3]};
        const float *want[5] = {ob, gb[0], gb[1], gb[2], gb[3]};
        const int64_t len[5] = {n, n, n, n, dt.nrpb};
        const char *names[5] = {"out", "dq", "dk", "dv", "drpb"};
        for (int j = 0; j < (c->rpb ? 5 : 4); j++) {
            double *w = na_to_double(want[j], len[j]);
            char what[64];
            snprintf(what, sizeof what, "autocast entry vs bf16 kernels: %s", names[j]);
            EXPECT_CLOSE(what, got[j], w, len[j], emulated ? TOL_BF16 : 0.0, c, &worst);
            free(w);
        }
        free(oa), free(la), free(ob), free(lb);
        for (int j = 0; j < 4; j++)
            free(ga[j]), free(gb[j]);
        na_data_free(&dt);
    }
    printf("autocast entries (%s) vs the bf16 kernels: worst relative difference %.2g\n",
           emulated ? (capped() ? "capped: emulated" : "emulated on this CPU") : "bf16", worst);
    if (emulated)
        ck_assert_msg(worst > 0.0, "emulated, yet the autocast entries gave the bf16 kernels' bits");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("na_cpu_bf16");
    TCase *tc = tcase_create("isa");
    tcase_add_test(tc, isa);
    suite_add_tcase(s, tc);
    tc = tcase_create("autocast_op");
    tcase_add_test(tc, autocast_op);
    suite_add_tcase(s, tc);
    if (have_bf16()) {
        const struct {
            const char *name;
            const TTest *fn;
        } cases[] = {{"fused_fwd", fused_fwd}, {"fused_bwd", fused_bwd}, {"capped_agrees", capped_agrees},
                     {"lanes", lanes}};
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            tc = tcase_create(cases[i].name);
            tcase_set_timeout(tc, 300);
            tcase_add_test(tc, cases[i].fn);
            suite_add_tcase(s, tc);
        }
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return EXIT_FAILURE;
    if (!have_bf16()) {
        printf("SKIPPED: this CPU lacks avx512_bf16 (detected %s): the vdpbf16ps kernels cannot run here; only the "
               "ISA and emulated-path cases ran\n", nat_cpu_isa_level_name(nat_cpu_isa_detected()));
        return 77;
    }
    return EXIT_SUCCESS;
}
