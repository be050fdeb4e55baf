/* bench/gemm.c — nat-bench gemm: GFLOP/s of the CPU GEMMs nat's ops run (core/cpu/gemm.c on oneDNN),
 * f32 and bf16 (autocast: f32 operands rounded to bf16 by oneDNN, f32 accumulation and result), on square
 * sizes (the peak) and on every distinct GEMM of NAT-Mini's linear layers at 224², batch 8, forward and
 * backward (what the model can expect). Prints the ISA oneDNN runs and the kernel each precision uses, so
 * a slow path shows at once. The square 2048 f32 figure is the CPU roofline other benchmarks quote. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "core/cpu/kernels.h"
#include "core/cpu/onednn.h"
#include "nat/alloc.h"
#include "nat/half.h" /* nat_f32_to_bf16_bits */
#include "train/train.h"

typedef struct gemm_case {
    char what[48];
    int M, N, K;
    bool ta, tb;
} gemm_case;

enum { RUN_F32, RUN_BF16_AUTOCAST, RUN_BF16_OPERANDS };

/* Median GFLOP/s of C = op(A) op(B) over reps runs after a warm-up; 0 on failure (message printed).
 * RUN_BF16_OPERANDS hands the GEMM operands already in bf16 (the kernel alone, as a library's bf16 GEMM
 * on bf16 tensors); RUN_BF16_AUTOCAST hands f32 operands, rounded inside, as nat's ops do. */
static double bench_one(const gemm_case *c, int run, int reps)
{
    const int prec = run == RUN_F32 ? NAT_PREC_F32 : NAT_PREC_BF16;
    const size_t na = (size_t)c->M * c->K, nb = (size_t)c->K * c->N, nc = (size_t)c->M * c->N;
    float *A = NULL, *B = NULL, *C = NULL;
    double *t = malloc((size_t)reps * sizeof *t);
    double gf = 0.0;
    if (!t || nat_mem_alloc(NAT_CPU, na * 4, (void **)&A) || nat_mem_alloc(NAT_CPU, nb * 4, (void **)&B) ||
        nat_mem_alloc(NAT_CPU, nc * 4, (void **)&C)) {
        fprintf(stderr, "nat-bench gemm: out of memory for %s\n", c->what);
        goto done;
    }
    for (size_t i = 0; i < na; i++)
        A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < nb; i++)
        B[i] = (float)(i % 5) * 0.1f;
    uint16_t *A16 = (uint16_t *)A, *B16 = (uint16_t *)B; /* in place: the first half of each f32 buffer */
    if (run == RUN_BF16_OPERANDS) {
        for (size_t i = 0; i < na; i++)
            A16[i] = nat_f32_to_bf16_bits(A[i]);
        for (size_t i = 0; i < nb; i++)
            B16[i] = nat_f32_to_bf16_bits(B[i]);
    }
    const nat_exec *ex = NAT_EXEC_DEV(NAT_CPU);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up (and the plan's build) */
        double t0 = nat_wall_now();
        nat_status st = run == RUN_BF16_OPERANDS
                            ? nat_cpu_gemm_bf16_operands(c->ta, c->tb, c->M, c->N, c->K, A16, B16, C)
                            : nat_cpu_gemm_lowp(ex, prec, c->ta, c->tb, c->M, c->N, c->K, A, 0, B, 0, 0.0f, C, 0, 1);
        if (st != NAT_OK) {
            fprintf(stderr, "nat-bench gemm: %s: %s\n", c->what, nat_error_message());
            goto done;
        }
        if (r >= 0)
            t[r] = nat_wall_now() - t0;
    }
    gf = 2.0 * c->M * c->N * (double)c->K / nat_bench_median(t, reps) * 1e-9;
done:
    free(t);
    if (A)
        nat_mem_free(NAT_CPU, A, na * 4);
    if (B)
        nat_mem_free(NAT_CPU, B, nb * 4);
    if (C)
        nat_mem_free(NAT_CPU, C, nc * 4);
    return gf;
}

/* The squares, then NAT-Mini's linear GEMMs at 224², batch 8 (levels of C = 64·2^i channels on
 * 8·(56/2^i)² tokens; linears C→3C (qkv, fc1), C→C (proj), 3C→C (fc2)): forward y = x·Wᵀ, data gradient
 * G·W, weight gradient Gᵀ·x. Shapes that repeat are listed once. */
static int make_cases(gemm_case *cs, int cap, bool squares, bool nat_mini)
{
    int n = 0;
    if (squares)
        for (int s = 512; s <= 2048 && n < cap; s *= 2, n++)
            cs[n] = (gemm_case){.M = s, .N = s, .K = s}, snprintf(cs[n].what, sizeof cs[n].what, "square %d", s);
    for (int lv = 0; nat_mini && lv < 4; lv++) {
        const int C = 64 << lv, side = 56 >> lv, T = 8 * side * side;
        const int io[3][2] = {{C, 3 * C}, {C, C}, {3 * C, C}};
        for (int l = 0; l < 3; l++) {
            const int in = io[l][0], out = io[l][1];
            const gemm_case three[3] = {{"", T, out, in, false, true}, {"", T, in, out, false, false},
                                        {"", out, in, T, true, false}};
            static const char *pass[3] = {"fwd", "dX", "dW"};
            for (int p = 0; p < 3 && n < cap; p++) {
                bool seen = false;
                for (int j = 0; j < n; j++)
                    seen |= cs[j].M == three[p].M && cs[j].N == three[p].N && cs[j].K == three[p].K &&
                            cs[j].ta == three[p].ta && cs[j].tb == three[p].tb;
                if (seen)
                    continue;
                cs[n] = three[p];
                snprintf(cs[n].what, sizeof cs[n].what, "L%d %d->%d %s", lv + 1, in, out, pass[p]);
                n++;
            }
        }
    }
    return n;
}

int nat_bench_gemm(int argc, char **argv)
{
    int reps = 20;
    bool f32 = true, bf16 = true, squares = true, nat_mini = true;
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) {
                fprintf(stderr, "nat-bench gemm: --reps must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            f32 = !strcmp(d, "f32") || !strcmp(d, "both");
            bf16 = !strcmp(d, "bf16") || !strcmp(d, "both");
            if (!f32 && !bf16) {
                fprintf(stderr, "nat-bench gemm: --dtype must be f32, bf16 or both, not '%s'\n", d);
                return 2;
            }
        } else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) {
            const char *s = argv[++i];
            squares = !strcmp(s, "square") || !strcmp(s, "all");
            nat_mini = !strcmp(s, "nat_mini") || !strcmp(s, "all");
            if (!squares && !nat_mini) {
                fprintf(stderr, "nat-bench gemm: --shapes must be square, nat_mini or all, not '%s'\n", s);
                return 2;
            }
        } else if (!strcmp(argv[i], "--csv") && i + 1 < argc) {
            csv = argv[++i];
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: nat-bench gemm [--reps N] [--dtype f32|bf16|both] [--shapes square|nat_mini|all] [--csv FILE]\n"
                   "Median GFLOP/s (2·M·N·K flops) over N runs (default 20) after a warm-up of nat's CPU GEMM\n"
                   "(oneDNN): f32, and bf16 as autocast runs it (f32 operands rounded to bf16, f32 result).\n"
                   "Shapes: 512², 1024², 2048², and every distinct GEMM of NAT-Mini's linear layers at 224²,\n"
                   "batch 8 (forward x·Wᵀ, data gradient G·W, weight gradient Gᵀ·x). --csv appends one row per\n"
                   "problem and precision. The ISA oneDNN runs (ONEDNN_MAX_CPU_ISA caps it) is printed first.\n");
            return 0;
        } else {
            fprintf(stderr, "nat-bench gemm: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    printf("threads: OpenMP %d (oneDNN %s runs on the same OpenMP pool)\n", omp_get_max_threads(),
           nat_dnn_version_string());
    printf("ISA: %s; f32 GEMM: %s; bf16 GEMM: %s\n", nat_dnn_isa_name(), nat_dnn_gemm_impl(false),
           nat_dnn_gemm_impl(true));
    const char *kern = nat_dnn_bf16_matmul_impl();
    printf("oneDNN's bf16 matmul ('kernel' column): %s\n", kern ? kern : "none at this ISA");
    FILE *out = NULL;
    if (csv) {
        out = fopen(csv, "a");
        if (!out) {
            fprintf(stderr, "nat-bench gemm: cannot open %s for appending\n", csv);
            return 1;
        }
        if (ftell(out) == 0)
            fprintf(out, "impl,dtype,M,N,K,ta,tb,gflops,threads,isa\n");
    }
    gemm_case cs[64];
    const int n = make_cases(cs, 64, squares, nat_mini);
    double best = 0.0;
    printf("bf16 columns: 'autocast' takes f32 operands and rounds them (what nat's ops run), 'kernel' takes\n"
           "operands already in bf16 (the GEMM alone, as a bf16 GEMM on bf16 tensors); both write f32.\n");
    printf("%-26s %6s %6s %6s %3s %10s %10s %10s %8s\n", "problem", "M", "N", "K", "op", f32 ? "f32 GF/s" : "",
           bf16 ? "bf16 autoc" : "", bf16 ? "bf16 kern" : "", f32 && bf16 ? "auto/f32" : "");
    for (int c = 0; c < n; c++) {
        double g32 = 0, g16 = 0, gk = 0;
        if (f32 && (g32 = bench_one(&cs[c], RUN_F32, reps)) == 0.0)
            return 1;
        if (bf16 && (g16 = bench_one(&cs[c], RUN_BF16_AUTOCAST, reps)) == 0.0)
            return 1;
        if (bf16 && nat_dnn_bf16_matmul_impl() != NULL &&
            (gk = bench_one(&cs[c], RUN_BF16_OPERANDS, reps)) == 0.0)
            return 1;
        if (!strncmp(cs[c].what, "square", 6) && g32 > best)
            best = g32;
        char op[4] = {cs[c].ta ? 'T' : 'N', cs[c].tb ? 'T' : 'N', 0};
        printf("%-26s %6d %6d %6d %3s", cs[c].what, cs[c].M, cs[c].N, cs[c].K, op);
        if (f32)
            printf(" %10.1f", g32);
        else
            printf(" %10s", "");
        if (bf16)
            printf(" %10.1f %10.1f", g16, gk);
        if (f32 && bf16)
            printf(" %8.2f", g16 / g32);
        printf("\n");
        static const char *dname[3] = {"f32", "bf16", "bf16-operands"};
        const double gs[3] = {g32, g16, gk};
        for (int d = 0; out && d < 3; d++)
            if ((d == 0 ? f32 : bf16) && gs[d] > 0)
                fprintf(out, "nat,%s,%d,%d,%d,%d,%d,%.2f,%d,%s\n", dname[d], cs[c].M, cs[c].N, cs[c].K, cs[c].ta,
                        cs[c].tb, gs[d], omp_get_max_threads(), nat_dnn_isa_name());
    }
    if (out)
        fclose(out);
    if (squares && f32)
        printf("RESULT bench=gemm roofline_gflops=%.1f threads=%d isa=%s\n", best, omp_get_max_threads(),
               nat_dnn_isa_name());
    return 0;
}
