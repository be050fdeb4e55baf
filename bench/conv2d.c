/* bench/conv2d.c — nat-bench conv2d: median GFLOP/s of nat_conv2d forward and forward+backward on
 * NAT's convolution shapes, next to one sgemm of the same M·N·K run in the same process (the ceiling an
 * im2col conv can reach on this machine; the ratio is the price of im2col, col2im and the per-sample split).
 *
 * Shapes (NCHW, batch 8 by default, 224² images): the tokenizer's two 3x3 stride-2 pad-1 convs 3→32 at
 * 224² and 32→64 at 112², and a downsampler's 3x3 stride-2 pad-1 conv 64→128 at 56². FLOPs: forward
 * 2·N·O·(C·kh·kw)·Ho·Wo; forward+backward three times that (input and weight gradients; every input
 * requires a gradient, the bias sum is not counted).
 */
#include <oneapi/dnnl/dnnl.h> /* dnnl_sgemm */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/autograd.h"
#include "nat/ops.h"
#include "bench/bench.h"
#include "train/train.h"

typedef struct conv_case {
    const char *key, *what;
    int64_t C, H, W, O, k;
    int s, p;
} conv_case;

typedef struct conv_result {
    double fwd, fwdbwd, gemm; /* GFLOP/s */
} conv_result;

static double sgemm_gflops(int M, int N, int K, int reps)
{
    size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
    float *A = calloc(na, sizeof *A), *B = calloc(nb, sizeof *B), *C = calloc(nc, sizeof *C);
    double *t = malloc((size_t)reps * sizeof *t);
    double g = 0.0;
    if (A && B && C && t) {
        for (size_t i = 0; i < na; i++)
            A[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < nb; i++)
            B[i] = (float)(i % 5) * 0.1f;
        dnnl_sgemm('N', 'N', M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        for (int r = 0; r < reps; r++) {
            double t0 = nat_wall_now();
            dnnl_sgemm('N', 'N', M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
            t[r] = nat_wall_now() - t0;
        }
        g = 2.0 * M * N * K / nat_bench_median(t, reps) * 1e-9;
    }
    free(A);
    free(B);
    free(C);
    free(t);
    return g;
}

static nat_status run_case(const conv_case *c, int64_t batch, int reps, conv_result *res)
{
    int64_t xs[4] = {batch, c->C, c->H, c->W}, ws[4] = {c->O, c->C, c->k, c->k}, bs[1] = {c->O};
    int64_t Ho = (c->H + 2 * c->p - c->k) / c->s + 1, Wo = (c->W + 2 * c->p - c->k) / c->s + 1;
    int64_t gs[4] = {batch, c->O, Ho, Wo};
    double flops = 2.0 * (double)batch * (double)c->O * (double)(c->C * c->k * c->k) * (double)(Ho * Wo);
    nat_tensor *x = NULL, *w = NULL, *b = NULL, *g = NULL;
    nat_ctx *ctx = NULL;
    double *t = malloc((size_t)reps * sizeof *t);
    nat_status s = t ? NAT_OK : nat_error(NAT_ERR_OOM, "bench conv2d: no memory for %d timings", reps);
    if (s == NAT_OK)
        s = nat_tensor_new(&x, NAT_F32, NAT_CPU, 4, xs);
    if (s == NAT_OK)
        s = nat_tensor_new(&w, NAT_F32, NAT_CPU, 4, ws);
    if (s == NAT_OK)
        s = nat_tensor_new(&b, NAT_F32, NAT_CPU, 1, bs);
    if (s == NAT_OK)
        s = nat_tensor_new(&g, NAT_F32, NAT_CPU, 4, gs);
    if (s == NAT_OK)
        s = nat_ctx_new(&ctx, NAT_CPU);
    if (s == NAT_OK) {
        nat_rng rng;
        nat_rng_seed(&rng, 1);
        nat_rng_fill_normal(&rng, nat_tensor_f32(x), (size_t)nat_tensor_numel(x), 0.0f, 1.0f);
        nat_rng_fill_normal(&rng, nat_tensor_f32(w), (size_t)nat_tensor_numel(w), 0.0f, 0.1f);
        nat_rng_fill_normal(&rng, nat_tensor_f32(g), (size_t)nat_tensor_numel(g), 0.0f, 1.0f);
    }
    /* pass 0: forward without a tape; pass 1: forward + backward with every input requiring a gradient.
     * Rep -1 is the warm-up (allocator cache, BLAS thread pool). */
    for (int pass = 0; pass < 2 && s == NAT_OK; pass++) {
        nat_set_requires_grad(x, pass == 1);
        nat_set_requires_grad(w, pass == 1);
        nat_set_requires_grad(b, pass == 1);
        for (int r = -1; r < reps && s == NAT_OK; r++) {
            nat_tensor *y;
            double t0 = nat_wall_now();
            s = nat_conv2d(ctx, x, w, b, c->s, c->s, c->p, c->p, &y);
            if (s == NAT_OK && pass == 1)
                s = nat_backward_from(ctx, y, g);
            if (r >= 0)
                t[r] = nat_wall_now() - t0;
            nat_ctx_reset(ctx);
        }
        if (s == NAT_OK) {
            double med = nat_bench_median(t, reps);
            if (pass == 0)
                res->fwd = flops / med * 1e-9;
            else
                res->fwdbwd = 3.0 * flops / med * 1e-9;
        }
    }
    if (s == NAT_OK)
        res->gemm = sgemm_gflops((int)c->O, (int)(batch * Ho * Wo), (int)(c->C * c->k * c->k), reps);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_tensor_free(w);
    nat_tensor_free(b);
    nat_tensor_free(g);
    free(t);
    return s;
}

int nat_bench_conv2d(int argc, char **argv)
{
    int reps = 10;
    int64_t batch = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) {
                fprintf(stderr, "nat-bench conv2d: --reps must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
            if (batch < 1) {
                fprintf(stderr, "nat-bench conv2d: --batch must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: nat-bench conv2d [--reps N] [--batch B]\n"
                   "Median GFLOP/s over N runs (default 10, after a warm-up) of nat_conv2d forward and\n"
                   "forward+backward (input, weight and bias gradients) on NAT's conv shapes at 224², batch B\n"
                   "(default 8): the tokenizer's 3x3 s2 p1 convs 3->32 (224²) and 32->64 (112²), and the\n"
                   "downsampler's 3x3 s2 p1 conv 64->128 (56²). FLOPs: 2·N·O·C·kh·kw·Ho·Wo forward, 3x that\n"
                   "forward+backward. 'sgemm' is one oneDNN sgemm of the same M·N·K, for scale.\n");
            return 0;
        } else {
            fprintf(stderr, "nat-bench conv2d: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    static const conv_case cases[] = {
        {"tok1", "tokenizer 3->32 3x3 s2 @224", 3, 224, 224, 32, 3, 2, 1},
        {"tok2", "tokenizer 32->64 3x3 s2 @112", 32, 112, 112, 64, 3, 2, 1},
        {"down", "downsampler 64->128 3x3 s2 @56", 64, 56, 56, 128, 3, 2, 1},
    };
    enum { NCASES = sizeof cases / sizeof *cases };
    conv_result res[NCASES];
    printf("threads: OpenMP %d; batch %lld, %d reps\n", omp_get_max_threads(), (long long)batch, reps);
    printf("%-32s %10s %10s %10s %8s\n", "conv (GFLOP/s)", "fwd", "fwd+bwd", "sgemm", "fwd/gemm");
    for (int c = 0; c < NCASES; c++) {
        nat_status s = run_case(&cases[c], batch, reps, &res[c]);
        if (s != NAT_OK) {
            fprintf(stderr, "nat-bench conv2d: %s: %s\n", cases[c].what, nat_error_message());
            return 1;
        }
        printf("%-32s %10.1f %10.1f %10.1f %8.2f\n", cases[c].what, res[c].fwd, res[c].fwdbwd, res[c].gemm,
               res[c].gemm > 0 ? res[c].fwd / res[c].gemm : 0.0);
    }
    printf("RESULT bench=conv2d");
    for (int c = 0; c < NCASES; c++)
        printf(" %s_fwd_gflops=%.1f %s_fwdbwd_gflops=%.1f", cases[c].key, res[c].fwd, cases[c].key, res[c].fwdbwd);
    printf(" batch=%lld threads=%d\n", (long long)batch, omp_get_max_threads());
    return 0;
}
