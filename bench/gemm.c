/* bench/gemm.c — nat-bench gemm: OpenBLAS sgemm GFLOP/s, our CPU roofline.
 * Square sizes show the peak; the NAT-shaped ones (tokens × channels of NAT-Mini's levels at 224²,
 * batch 8) show what the model's linear layers can expect. Prints thread counts so a mismatch between
 * OpenMP and OpenBLAS pools (4 threads on 2 cores) shows at once. */
#include <cblas.h> /* cblas_sgemm, openblas_get_num_threads */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/alloc.h"
#include "bench/bench.h"
#include "train/train.h"

int openblas_get_num_threads(void);

static double bench_one(int M, int N, int K, int reps)
{
    float *A, *B, *C;
    if (nat_mem_alloc(NAT_CPU, (size_t)M * K * 4, (void **)&A) || nat_mem_alloc(NAT_CPU, (size_t)K * N * 4, (void **)&B) ||
        nat_mem_alloc(NAT_CPU, (size_t)M * N * 4, (void **)&C))
        return 0.0;
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        B[i] = (float)(i % 5) * 0.1f;
    double *t = malloc((size_t)reps * sizeof *t);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = nat_wall_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        t[r] = nat_wall_now() - t0;
    }
    double med = nat_bench_median(t, reps);
    free(t);
    nat_mem_free(NAT_CPU, A, (size_t)M * K * 4);
    nat_mem_free(NAT_CPU, B, (size_t)K * N * 4);
    nat_mem_free(NAT_CPU, C, (size_t)M * N * 4);
    return 2.0 * M * N * K / med * 1e-9;
}

int nat_bench_gemm(int argc, char **argv)
{
    int reps = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) {
                fprintf(stderr, "nat-bench gemm: --reps must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: nat-bench gemm [--reps N]\n"
                   "Median sgemm GFLOP/s (2·M·N·K flops) over N runs after a warm-up, for square sizes and\n"
                   "the shapes of NAT-Mini's linear layers at 224², batch 8.\n");
            return 0;
        } else {
            fprintf(stderr, "nat-bench gemm: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    printf("threads: OpenMP %d, OpenBLAS %d\n", omp_get_max_threads(), openblas_get_num_threads());
    static const struct {
        const char *what;
        int M, N, K;
    } cases[] = {
        {"square 512", 512, 512, 512},
        {"square 1024", 1024, 1024, 1024},
        {"square 2048", 2048, 2048, 2048},
        {"NAT-Mini L1 qkv  (25088x64 -> 192)", 25088, 192, 64},
        {"NAT-Mini L1 fc1  (25088x64 -> 192)", 25088, 192, 64},
        {"NAT-Mini L2 fc1  (6272x128 -> 384)", 6272, 384, 128},
        {"NAT-Mini L3 fc1  (1568x256 -> 768)", 1568, 768, 256},
        {"NAT-Mini L4 fc1  (392x512 -> 1536)", 392, 1536, 512},
    };
    double best = 0.0;
    printf("%-38s %10s\n", "problem (M x K -> N)", "GFLOP/s");
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        double g = bench_one(cases[c].M, cases[c].N, cases[c].K, reps);
        if (g == 0.0) {
            fprintf(stderr, "nat-bench gemm: out of memory for %s\n", cases[c].what);
            return 1;
        }
        if (c < 3 && g > best)
            best = g;
        printf("%-38s %10.1f\n", cases[c].what, g);
    }
    printf("RESULT bench=gemm roofline_gflops=%.1f threads=%d\n", best, omp_get_max_threads());
    return 0;
}
