/* tests/test_onednn.c — the CPU's GEMMs and convolutions on oneDNN (core/cpu/gemm.c, core/cpu/conv.c)
 * against plain double loops: every transpose, batched and shared operands, beta = 0 / 1; the bf16
 * (autocast) path against the loops run on bf16-rounded operands, and proof that it rounds; convolution
 * forward, backward data and backward weights on an odd geometry in f32 and bf16; concurrent use from
 * several threads (train.replicas); no plan built in a steady state; and the ISA cap.
 *
 * ctest runs this suite three times: as is, and with ONEDNN_MAX_CPU_ISA=AVX2 and =AVX512_CORE
 * (tests/CMakeLists.txt), where oneDNN must run at most the capped ISA and every result must still
 * agree with the loops (at AVX2 the bf16 path is nat's emulation: the operands rounded, the f32 GEMM). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h> /* strcasecmp */

#include "core/cpu/isa.h"
#include "core/cpu/kernels.h"
#include "core/cpu/onednn.h"
#include "core/half.h"
#include "nat/half.h" /* nat_round_array */
#include "nat/rng.h"
#include "support/harness.h"

static float *randv(nat_rng *r, int64_t n)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = nat_rng_normal(r);
    return v;
}

static float rnd(float x, bool bf16) { return bf16 ? half_round_bf16(x) : x; }

/* want = op(A) op(B) + beta·C0 in double, operands rounded to bf16 first when bf16. */
static void gemm_ref(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                     float beta, const float *C0, double *want)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = beta != 0.0f ? (double)beta * C0[i * N + j] : 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)rnd(ta ? A[k * M + i] : A[i * K + k], bf16) * rnd(tb ? B[j * K + k] : B[k * N + j], bf16);
            want[i * N + j] = s;
        }
}

/* Every (ta, tb), beta 0 and 1, a batch of 3 with A shared, B shared or neither: f32 and bf16. */
static void check_gemm(bool bf16)
{
    nat_rng r;
    nat_rng_seed(&r, bf16 ? 11 : 7);
    const int64_t M = 37, N = 19, K = 53, batch = 3;
    const int prec = bf16 ? NAT_PREC_BF16 : NAT_PREC_F32;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int share = 0; share < 3; share++)
                for (int acc = 0; acc < 2; acc++) {
                    const int64_t sa = share == 1 ? 0 : M * K, sb = share == 2 ? 0 : K * N;
                    float *A = randv(&r, M * K * batch), *B = randv(&r, K * N * batch), *C = randv(&r, M * N * batch);
                    float *C0 = malloc((size_t)(M * N * batch) * sizeof *C0);
                    memcpy(C0, C, (size_t)(M * N * batch) * sizeof *C0);
                    const float beta = acc ? 1.0f : 0.0f;
                    for (int64_t i = 0; !acc && i < M * N * batch; i++) /* beta 0: C must not be read (backwards
                                                                         write new, uninitialised buffers) */
                        C[i] = NAN;
                    TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), prec, ta, tb, M, N, K, A, sa, B, sb, beta, C, M * N,
                                            batch));
                    double *want = malloc((size_t)(M * N) * sizeof *want);
                    for (int64_t b = 0; b < batch; b++) {
                        gemm_ref(bf16, ta, tb, M, N, K, A + b * sa, B + b * sb, beta, C0 + b * M * N, want);
                        char what[96];
                        snprintf(what, sizeof what, "%s gemm ta %d tb %d share %d beta %d item %lld", bf16 ? "bf16" : "f32",
                                 ta, tb, share, acc, (long long)b);
                        /* f32 sums of 53 products of N(0,1) values: about 1e-6 of the sum's size */
                        th_assert_close(C + b * M * N, want, M * N, 2e-5, what);
                    }
                    free(want), free(A), free(B), free(C), free(C0);
                }
}

START_TEST(gemm_f32_every_transpose_batch_and_beta) { check_gemm(false); }
END_TEST

START_TEST(gemm_bf16_equals_the_loops_on_rounded_operands) { check_gemm(true); }
END_TEST

/* Autocast must really round: the bf16 result differs from the f32 one by more than 1e-5 (relative to
 * the result's size) and stays within 1e-2 of it. */
START_TEST(gemm_bf16_actually_rounds)
{
    nat_rng r;
    nat_rng_seed(&r, 3);
    const int64_t M = 64, N = 48, K = 96;
    float *A = randv(&r, M * K), *B = randv(&r, K * N), *c32 = calloc((size_t)(M * N), 4), *c16 = calloc((size_t)(M * N), 4);
    TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_F32, false, true, M, N, K, A, 0, B, 0, 0.0f, c32, 0, 1));
    TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, false, true, M, N, K, A, 0, B, 0, 0.0f, c16, 0, 1));
    double d = th_max_rel_err_f(c16, c32, M * N);
    printf("bf16 GEMM (%s) against f32: max relative difference %.3g\n", nat_dnn_gemm_impl(true), d);
    ck_assert_msg(d > 1e-5 && d < 1e-2, "bf16 against f32: %.3g, expected in (1e-5, 1e-2)", d);
    free(A), free(B), free(c32), free(c16);
}
END_TEST

/* Autocast's GEMM takes oneDNN's bf16 matmul only where bf16 outruns f32 (nat_cpu_bf16_gemm_native: AMX,
 * or an AMD core's vdpbf16ps); elsewhere it is the f32 GEMM on rounded operands, bit for bit. */
START_TEST(gemm_bf16_path_follows_the_cpu_rule)
{
    const bool native = nat_dnn_bf16_matmul_impl() != NULL && nat_cpu_bf16_gemm_native();
    printf("bf16 GEMM path: %s (oneDNN's bf16 matmul: %s; %s CPU at %s)\n", nat_dnn_gemm_impl(true),
           nat_dnn_bf16_matmul_impl() ? nat_dnn_bf16_matmul_impl() : "none", nat_cpu_vendor_amd() ? "AMD" : "non-AMD",
           nat_cpu_isa_name());
    ck_assert_msg(native == (strstr(nat_dnn_gemm_impl(true), "emulated") == NULL), "reported path %s, rule says %s",
                  nat_dnn_gemm_impl(true), native ? "native" : "emulated");
    if (native)
        return;
    nat_rng r;
    nat_rng_seed(&r, 5);
    const int64_t M = 33, N = 40, K = 57;
    float *A = randv(&r, M * K), *B = randv(&r, K * N), *ra = malloc((size_t)(M * K) * 4), *rb = malloc((size_t)(K * N) * 4);
    float *c16 = calloc((size_t)(M * N), 4), *c32 = calloc((size_t)(M * N), 4);
    nat_round_array(NAT_PREC_BF16, A, ra, M * K);
    nat_round_array(NAT_PREC_BF16, B, rb, K * N);
    TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, false, true, M, N, K, A, 0, B, 0, 0.0f, c16, 0, 1));
    TH_OK(nat_cpu_gemm(NAT_EXEC_DEV(NAT_CPU), false, true, M, N, K, ra, 0, rb, 0, 0.0f, c32, 0, 1));
    ck_assert_msg(memcmp(c16, c32, (size_t)(M * N) * 4) == 0, "emulated bf16 GEMM differs from the f32 GEMM on rounded operands");
    free(A), free(B), free(ra), free(rb), free(c16), free(c32);
}
END_TEST

/* The benchmarks' bf16 GEMM on operands already in bf16 (every transpose) equals the loops on them. */
START_TEST(gemm_bf16_operands_equals_the_loops)
{
    if (!nat_dnn_bf16_matmul_impl()) {
        printf("gemm_bf16_operands_equals_the_loops: no bf16 matmul at this ISA: checks the error instead\n");
        uint16_t a = 0, b = 0;
        float c = 0;
        th_expect_error(nat_cpu_gemm_bf16_operands(false, false, 1, 1, 1, &a, &b, &c), NAT_ERR_UNSUPPORTED, "bf16", NULL);
        return;
    }
    nat_rng r;
    nat_rng_seed(&r, 17);
    const int64_t M = 29, N = 23, K = 41;
    float *A = randv(&r, M * K), *B = randv(&r, K * N), *C = calloc((size_t)(M * N), 4);
    uint16_t *a = malloc((size_t)(M * K) * 2), *b = malloc((size_t)(K * N) * 2);
    for (int64_t i = 0; i < M * K; i++)
        a[i] = half_f32_to_bf16(A[i]);
    for (int64_t i = 0; i < K * N; i++)
        b[i] = half_f32_to_bf16(B[i]);
    double *want = malloc((size_t)(M * N) * sizeof *want);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            TH_OK(nat_cpu_gemm_bf16_operands(ta, tb, M, N, K, a, b, C));
            gemm_ref(true, ta, tb, M, N, K, A, B, 0.0f, NULL, want);
            char what[64];
            snprintf(what, sizeof what, "bf16-operand gemm ta %d tb %d", ta, tb);
            th_assert_close(C, want, M * N, 2e-5, what);
        }
    free(A), free(B), free(C), free(a), free(b), free(want);
}
END_TEST

/* ---- convolution ---- */

static const nat_cuda_conv_geom GEOM = {.N = 2, .C = 3, .H = 7, .W = 9, .O = 5, .kh = 3, .kw = 2, .sh = 2, .sw = 1,
                                        .ph = 1, .pw = 0, .Ho = 4, .Wo = 8};

static int64_t xi(const nat_cuda_conv_geom *g, int64_t n, int64_t c, int64_t y, int64_t x)
{
    return ((n * g->C + c) * g->H + y) * g->W + x;
}

/* y, gx (given gy) and gw (given gy) of the direct convolution, in double on rounded operands. */
static void conv_ref(const nat_cuda_conv_geom *g, bool bf16, const float *x, const float *w, const float *b,
                     const float *gy, double *y, double *gx, double *gw)
{
    const int64_t nx = g->N * g->C * g->H * g->W, nw = g->O * g->C * g->kh * g->kw;
    memset(gx, 0, (size_t)nx * sizeof *gx);
    memset(gw, 0, (size_t)nw * sizeof *gw);
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t o = 0; o < g->O; o++)
            for (int64_t oy = 0; oy < g->Ho; oy++)
                for (int64_t ox = 0; ox < g->Wo; ox++) {
                    const int64_t yi = ((n * g->O + o) * g->Ho + oy) * g->Wo + ox;
                    double s = b[o];
                    for (int64_t c = 0; c < g->C; c++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t iy = oy * g->sh - g->ph + i, ix = ox * g->sw - g->pw + j;
                                if (iy < 0 || iy >= g->H || ix < 0 || ix >= g->W)
                                    continue;
                                const int64_t wi = ((o * g->C + c) * g->kh + i) * g->kw + j;
                                const double xv = rnd(x[xi(g, n, c, iy, ix)], bf16), wv = rnd(w[wi], bf16);
                                const double gv = rnd(gy[yi], bf16);
                                s += xv * wv;
                                gx[xi(g, n, c, iy, ix)] += gv * wv;
                                gw[wi] += gv * xv;
                            }
                    y[yi] = s;
                }
}

static void check_conv(bool bf16)
{
    const nat_cuda_conv_geom *g = &GEOM;
    nat_rng r;
    nat_rng_seed(&r, bf16 ? 5 : 9);
    const int64_t nx = g->N * g->C * g->H * g->W, nw = g->O * g->C * g->kh * g->kw, ny = g->N * g->O * g->Ho * g->Wo;
    float *x = randv(&r, nx), *w = randv(&r, nw), *b = randv(&r, g->O), *gy = randv(&r, ny);
    float *y = randv(&r, ny), *gx = randv(&r, nx), *gw = randv(&r, nw); /* garbage / a prior gradient */
    float *gx0 = malloc((size_t)nx * 4), *gw0 = malloc((size_t)nw * 4);
    memcpy(gx0, gx, (size_t)nx * 4);
    memcpy(gw0, gw, (size_t)nw * 4);
    double *wy = malloc((size_t)ny * 8), *wgx = malloc((size_t)nx * 8), *wgw = malloc((size_t)nw * 8);
    conv_ref(g, bf16, x, w, b, gy, wy, wgx, wgw);
    for (int64_t i = 0; i < nx; i++) /* the backward adds into the gradients it is given */
        wgx[i] += gx0[i];
    for (int64_t i = 0; i < nw; i++)
        wgw[i] += gw0[i];
    const int prec = bf16 ? NAT_PREC_BF16 : NAT_PREC_F32;
    const nat_exec *ex = NAT_EXEC_DEV(NAT_CPU);
    TH_OK(nat_cpu_conv2d_forward_lowp(ex, prec, g, x, w, b, y));
    TH_OK(nat_cpu_conv2d_backward_data_lowp(ex, prec, g, w, gy, gx));
    TH_OK(nat_cpu_conv2d_backward_filter_lowp(ex, prec, g, x, gy, gw));
    th_assert_close(y, wy, ny, 1e-5, bf16 ? "bf16 conv forward" : "f32 conv forward");
    th_assert_close(gx, wgx, nx, 1e-5, bf16 ? "bf16 conv backward data" : "f32 conv backward data");
    th_assert_close(gw, wgw, nw, 1e-5, bf16 ? "bf16 conv backward weights" : "f32 conv backward weights");
    free(x), free(w), free(b), free(gy), free(y), free(gx), free(gw), free(gx0), free(gw0), free(wy), free(wgx), free(wgw);
}

/* Where bf16 does not outrun f32 (nat_cpu_bf16_gemm_native false: an Intel core without AMX, or an ISA
 * without bf16), autocast's convolution is the f32 one on rounded operands, bit for bit. */
START_TEST(conv_bf16_path_follows_the_cpu_rule)
{
    if (nat_cpu_bf16_gemm_native()) {
        printf("conv_bf16_path_follows_the_cpu_rule: bf16 convolutions run natively on this CPU (%s)\n",
               nat_cpu_isa_name());
        return;
    }
    const nat_cuda_conv_geom *g = &GEOM;
    nat_rng r;
    nat_rng_seed(&r, 21);
    const int64_t nx = g->N * g->C * g->H * g->W, nw = g->O * g->C * g->kh * g->kw, ny = g->N * g->O * g->Ho * g->Wo;
    float *x = randv(&r, nx), *w = randv(&r, nw), *rx = malloc((size_t)nx * 4), *rw = malloc((size_t)nw * 4);
    float *y16 = calloc((size_t)ny, 4), *y32 = calloc((size_t)ny, 4);
    nat_round_array(NAT_PREC_BF16, x, rx, nx);
    nat_round_array(NAT_PREC_BF16, w, rw, nw);
    const nat_exec *ex = NAT_EXEC_DEV(NAT_CPU);
    TH_OK(nat_cpu_conv2d_forward_lowp(ex, NAT_PREC_BF16, g, x, w, NULL, y16));
    TH_OK(nat_cpu_conv2d_forward_lowp(ex, NAT_PREC_F32, g, rx, rw, NULL, y32));
    ck_assert_msg(memcmp(y16, y32, (size_t)ny * 4) == 0, "emulated bf16 convolution differs from the f32 one on rounded operands");
    free(x), free(w), free(rx), free(rw), free(y16), free(y32);
}
END_TEST

/* The im2col weight gradient (nat's route where oneDNN has no direct kernel) against the loops, adding
 * into a prior gradient, on geometries with padding, stride, non-square maps and kernels, a 1x1 output
 * (the main job's last downsampling, where AVX2's oneDNN has none) and a 1x1 kernel; and the dispatched
 * weight gradient on that last shape, whichever route this CPU takes. */
START_TEST(conv_weight_gradient_im2col)
{
    static const nat_cuda_conv_geom geoms[] = {
        /* N  C  H  W  O kh kw sh sw ph pw Ho Wo */
        {3, 5, 7, 6, 4, 3, 3, 2, 2, 1, 1, 4, 3},
        {2, 3, 5, 9, 6, 3, 2, 1, 2, 0, 1, 3, 5},
        {4, 16, 2, 2, 24, 3, 3, 2, 2, 1, 1, 1, 1},
        {2, 4, 3, 5, 3, 1, 1, 1, 1, 0, 0, 3, 5},
    };
    nat_rng r;
    nat_rng_seed(&r, 21);
    for (size_t i = 0; i < sizeof geoms / sizeof *geoms; i++) {
        const nat_cuda_conv_geom *g = &geoms[i];
        const int64_t nx = g->N * g->C * g->H * g->W, nw = g->O * g->C * g->kh * g->kw,
                      ny = g->N * g->O * g->Ho * g->Wo;
        float *x = randv(&r, nx), *w = randv(&r, nw), *b = randv(&r, g->O), *gy = randv(&r, ny);
        float *gw = randv(&r, nw), *gw2 = malloc((size_t)nw * 4);
        memcpy(gw2, gw, (size_t)nw * 4);
        double *wy = malloc((size_t)ny * 8), *wgx = malloc((size_t)nx * 8), *wgw = malloc((size_t)nw * 8);
        conv_ref(g, false, x, w, b, gy, wy, wgx, wgw);
        for (int64_t j = 0; j < nw; j++)
            wgw[j] += gw[j];
        TH_OK(nat_cpu_conv2d_backward_filter_im2col(NAT_EXEC_DEV(NAT_CPU), g, x, gy, gw));
        char what[96];
        snprintf(what, sizeof what, "im2col weight gradient, geometry %zu", i);
        th_assert_close(gw, wgw, nw, 1e-5, what);
        bool direct;
        TH_OK(nat_cpu_conv2d_backward_filter_direct(g, &direct));
        TH_OK(nat_cpu_conv2d_backward_filter_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_F32, g, x, gy, gw2));
        snprintf(what, sizeof what, "dispatched weight gradient (%s), geometry %zu", direct ? "oneDNN" : "im2col", i);
        th_assert_close(gw2, wgw, nw, 1e-5, what);
        if (i == 2)
            printf("weight gradient of the 2x2 -> 1x1 downsampling: %s\n",
                   direct ? "oneDNN's direct kernel" : "im2col GEMM (oneDNN has no direct kernel here)");
        free(x), free(w), free(b), free(gy), free(gw), free(gw2), free(wy), free(wgx), free(wgw);
    }
}
END_TEST

START_TEST(conv_f32_forward_and_backward) { check_conv(false); }
END_TEST

START_TEST(conv_bf16_forward_and_backward_on_rounded_operands) { check_conv(true); }
END_TEST

/* ---- threads, plans and the ISA ---- */

typedef struct job {
    const float *A, *B;
    float *C;
    nat_status s;
} job;

static void *run_job(void *p)
{
    job *j = p;
    for (int i = 0; i < 20 && j->s == NAT_OK; i++)
        j->s = nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, false, true, 96, 80, 64, j->A, 0, j->B, 0, 0.0f,
                                 j->C, 0, 1);
    return NULL;
}

/* train.replicas runs kernels from several threads at once, each on a thread made for the step: the
 * same plan run concurrently must give every thread the single-threaded bits. */
START_TEST(plans_run_concurrently_from_new_threads)
{
    nat_rng r;
    nat_rng_seed(&r, 21);
    float *A = randv(&r, 96 * 64), *B = randv(&r, 80 * 64), *want = calloc(96 * 80, 4);
    TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, false, true, 96, 80, 64, A, 0, B, 0, 0.0f, want, 0, 1));
    enum { T = 4 };
    job jobs[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (job){A, B, calloc(96 * 80, 4), NAT_OK};
        ck_assert_int_eq(pthread_create(&th[t], NULL, run_job, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ck_assert_msg(jobs[t].s == NAT_OK, "thread %d: %s", t, nat_status_name(jobs[t].s));
        ck_assert_msg(memcmp(jobs[t].C, want, 96 * 80 * 4) == 0, "thread %d's result differs", t);
        free(jobs[t].C);
    }
    free(A), free(B), free(want);
}
END_TEST

START_TEST(steady_state_builds_no_plan)
{
    nat_rng r;
    nat_rng_seed(&r, 4);
    const nat_cuda_conv_geom *g = &GEOM;
    float *x = randv(&r, 2 * 3 * 7 * 9), *w = randv(&r, 5 * 3 * 3 * 2), *y = malloc(2 * 5 * 4 * 8 * 4);
    float *A = randv(&r, 40 * 24), *B = randv(&r, 24 * 16), *C = malloc(40 * 16 * 4);
    long built = 0;
    for (int step = 0; step < 3; step++) {
        if (step == 2)
            built = nat_dnn_plans_built();
        TH_OK(nat_cpu_conv2d_forward_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, g, x, w, NULL, y));
        TH_OK(nat_cpu_gemm_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_BF16, false, false, 40, 16, 24, A, 0, B, 0, 0.0f, C, 0, 1));
        TH_OK(nat_cpu_conv2d_forward_lowp(NAT_EXEC_DEV(NAT_CPU), NAT_PREC_F32, g, x, w, NULL, y));
    }
    ck_assert_msg(nat_dnn_plans_built() == built, "%ld plans built in a repeated step", nat_dnn_plans_built() - built);
    free(x), free(w), free(y), free(A), free(B), free(C);
}
END_TEST

/* The bits of oneDNN's ISA values: a capped ISA's bits are a subset of the cap's. */
static const struct {
    const char *name;
    dnnl_cpu_isa_t isa;
} ISAS[] = {{"SSE41", dnnl_cpu_isa_sse41},
            {"AVX", dnnl_cpu_isa_avx},
            {"AVX2", dnnl_cpu_isa_avx2},
            {"AVX512_CORE", dnnl_cpu_isa_avx512_core},
            {"AVX512_CORE_VNNI", dnnl_cpu_isa_avx512_core_vnni},
            {"AVX512_CORE_BF16", dnnl_cpu_isa_avx512_core_bf16},
            {"AVX512_CORE_AMX", dnnl_cpu_isa_avx512_core_amx}};

START_TEST(isa_cap_is_honoured)
{
    const char *cap = getenv("ONEDNN_MAX_CPU_ISA");
    const dnnl_cpu_isa_t eff = dnnl_get_effective_cpu_isa();
    printf("oneDNN %s: ISA %s (cap %s); f32 GEMM %s; bf16 GEMM %s\n", nat_dnn_version_string(), nat_dnn_isa_name(),
           cap ? cap : "none", nat_dnn_gemm_impl(false), nat_dnn_gemm_impl(true));
    ck_assert_msg(strcmp(nat_dnn_isa_name(), "unknown") != 0, "oneDNN's ISA %#x has no name", (unsigned)eff);
    if (!cap || !*cap) /* unset, or set empty: oneDNN ignores it */
        return;
    for (size_t i = 0; i < sizeof ISAS / sizeof *ISAS; i++)
        if (!strcasecmp(cap, ISAS[i].name)) {
            ck_assert_msg(((unsigned)eff & ~(unsigned)ISAS[i].isa) == 0, "effective ISA %s exceeds the cap %s",
                          nat_dnn_isa_name(), cap);
            if (ISAS[i].isa == dnnl_cpu_isa_avx2)
                ck_assert_msg(strstr(nat_dnn_gemm_impl(true), "emulated") != NULL,
                              "at AVX2 the bf16 GEMM should be nat's emulation, not %s", nat_dnn_gemm_impl(true));
            if (ISAS[i].isa == dnnl_cpu_isa_avx512_core_bf16 && !nat_cpu_vendor_amd())
                ck_assert_msg(strstr(nat_dnn_gemm_impl(true), "emulated") != NULL,
                              "an Intel core at AVX512_CORE_BF16 should emulate, not run %s", nat_dnn_gemm_impl(true));
            return;
        }
    ck_abort_msg("ONEDNN_MAX_CPU_ISA=%s is not one this test knows", cap);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("onednn");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"gemm_f32_every_transpose_batch_and_beta", gemm_f32_every_transpose_batch_and_beta},
        {"gemm_bf16_equals_the_loops_on_rounded_operands", gemm_bf16_equals_the_loops_on_rounded_operands},
        {"gemm_bf16_actually_rounds", gemm_bf16_actually_rounds},
        {"gemm_bf16_path_follows_the_cpu_rule", gemm_bf16_path_follows_the_cpu_rule},
        {"conv_bf16_path_follows_the_cpu_rule", conv_bf16_path_follows_the_cpu_rule},
        {"gemm_bf16_operands_equals_the_loops", gemm_bf16_operands_equals_the_loops},
        {"conv_f32_forward_and_backward", conv_f32_forward_and_backward},
        {"conv_weight_gradient_im2col", conv_weight_gradient_im2col},
        {"conv_bf16_forward_and_backward_on_rounded_operands", conv_bf16_forward_and_backward_on_rounded_operands},
        {"plans_run_concurrently_from_new_threads", plans_run_concurrently_from_new_threads},
        {"steady_state_builds_no_plan", steady_state_builds_no_plan},
        {"isa_cap_is_honoured", isa_cap_is_honoured},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
