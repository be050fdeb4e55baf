/* bench/isa_peak.c — nat-bench isa: the peak multiply-add rates of one core, f32 FMA against bf16
 * vdpbf16ps, and the bf16 code paths nat picks on this CPU from them (core/cpu/isa.h).
 *
 * Why: whether bf16 can beat f32 on a CPU without AMX is decided by one number, how many vdpbf16ps a
 * core issues per cycle against its f32 FMAs. Each does multiply-adds on a whole 512-bit register; a
 * vdpbf16ps does 32 (pairs of bf16), an FMA 16. Where both issue at the same rate (AMD Zen 4) bf16 has
 * twice the peak; on an Intel Xeon of family 6 model 207 vdpbf16ps issues at a quarter of the FMA's
 * rate, bf16's peak is half of f32's, and bf16 kernels lose to f32 ones. nat's rule (nat_cpu_bf16_native_rule)
 * is fixed by vendor and ISA rather than timed, so that a run's arithmetic does not depend on the load;
 * this benchmark is the measurement behind it, to run on any CPU.
 *
 * Method: 24 independent accumulator chains (more than latency x issue rate on any current core) in a
 * loop of register-only instructions, one thread, median over --reps runs of about 0.1 s. The kernels
 * are compiled with target attributes, so a portable build (NAT_NATIVE=OFF) has them too; each runs only
 * where CPUID says the instructions exist.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "core/cpu/isa.h"
#include "core/cpu/onednn.h"
#include "train/train.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ISA_X86 1
#endif

enum { CHAINS = 24 };

#if defined(ISA_X86)
/* `iters` rounds of CHAINS independent multiply-adds; returns a value that depends on every chain so
 * the loop cannot be dropped (and without -ffast-math the compiler may not fold a chain of FMAs). The
 * loops are unrolled so that the accumulators live in registers. The operands are tiny so nothing
 * overflows or becomes denormal. */
__attribute__((target("avx512f"))) static float run_fma512(long iters)
{
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    const __m512 x = _mm512_set1_ps(1e-3f), y = _mm512_set1_ps(1e-3f);
    for (long n = 0; n < iters; n++) {
#pragma GCC unroll 32 /* the chains must stay in registers */
        for (int i = 0; i < CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(x, y, acc[i]);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) static float run_dpbf16(long iters)
{
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    /* 0x3A83 is bf16 1.0e-3 (rounded); pairs of it */
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3A83), y = (__m512bh)_mm512_set1_epi16(0x3A83);
    for (long n = 0; n < iters; n++) {
#pragma GCC unroll 32
        for (int i = 0; i < CHAINS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float run_fma256(long iters)
{
    enum { C2 = 12 }; /* 16 ymm registers */
    __m256 acc[C2];
    for (int i = 0; i < C2; i++)
        acc[i] = _mm256_set1_ps((float)i);
    const __m256 x = _mm256_set1_ps(1e-3f), y = _mm256_set1_ps(1e-3f);
    for (long n = 0; n < iters; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < C2; i++)
            acc[i] = _mm256_fmadd_ps(x, y, acc[i]);
    }
    float out[8], t = 0;
    for (int i = 0; i < C2; i++) {
        _mm256_storeu_ps(out, acc[i]);
        t += out[0];
    }
    return t;
}
#endif

typedef struct peak_kernel {
    const char *name;
    float (*run)(long);
    int chains;
    int flop_per_instr; /* multiply-adds x 2 */
    nat_cpu_isa needs;
} peak_kernel;

/* Median GFLOP/s and G instructions/s of kernel `k` over `reps` runs of `iters` rounds. */
static void measure(const peak_kernel *k, long iters, int reps, double *gflops, double *ginstr)
{
    double *t = malloc((size_t)reps * sizeof *t);
    volatile float sink = k->run(iters / 10); /* warm-up: clocks up, code in cache */
    for (int r = 0; r < reps && t; r++) {
        const double t0 = nat_wall_now();
        sink += k->run(iters);
        t[r] = nat_wall_now() - t0;
    }
    (void)sink;
    const double instr = (double)iters * k->chains, s = t ? nat_bench_median(t, reps) : 0.0;
    *ginstr = s > 0 ? instr / s * 1e-9 : 0.0;
    *gflops = *ginstr * k->flop_per_instr;
    free(t);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: nat-bench isa [--reps N] [--iters N]\n"
               "Peak multiply-add rates of one core (one thread): f32 FMA (256- and 512-bit) against bf16\n"
               "vdpbf16ps (512-bit), median of N runs (default 7) of --iters rounds (default 4000000) of\n"
               "%d independent chains; then the bf16 code paths nat takes on this CPU (core/cpu/isa.h) and\n"
               "why. Instructions the CPU lacks are reported as such, not run.\n"
               "The last line is: RESULT bench=isa fma512_gflops=<v> dpbf16_gflops=<v> ratio=<v>\n",
            CHAINS);
}

int nat_bench_isa(int argc, char **argv)
{
    int reps = 7;
    long iters = 4000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = atol(argv[++i]);
        } else {
            fprintf(stderr, "nat-bench isa: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (reps < 1 || iters < 1000) {
        fprintf(stderr, "nat-bench isa: --reps must be >= 1 and --iters >= 1000\n");
        return 2;
    }
    const nat_cpu_isa det = nat_cpu_isa_detected();
    printf("CPU: %s vendor, ISA detected %s, usable %s (ONEDNN_MAX_CPU_ISA caps it)\n",
           nat_cpu_vendor_amd() ? "AMD" : "non-AMD", nat_cpu_isa_level_name(det), nat_cpu_isa_name());
    double g[3] = {0, 0, 0};
#if defined(ISA_X86)
    const peak_kernel ks[3] = {
        {"f32 FMA, 256-bit (vfmadd231ps ymm)", run_fma256, 12, 16, NAT_ISA_AVX2},
        {"f32 FMA, 512-bit (vfmadd231ps zmm)", run_fma512, CHAINS, 32, NAT_ISA_AVX512_CORE},
        {"bf16 dot, 512-bit (vdpbf16ps zmm)", run_dpbf16, CHAINS, 64, NAT_ISA_AVX512_CORE_BF16},
    };
    printf("%-36s %14s %10s\n", "one core, one thread", "G instr/s", "GFLOP/s");
    for (int i = 0; i < 3; i++) {
        if (det < ks[i].needs) {
            printf("%-36s %25s\n", ks[i].name, "(not on this CPU)");
            continue;
        }
        double gi;
        measure(&ks[i], iters, reps, &g[i], &gi);
        printf("%-36s %14.2f %10.1f\n", ks[i].name, gi, g[i]);
    }
#else
    printf("not an x86-64 build: no vector peaks to measure\n");
#endif
    const double ratio = g[1] > 0 && g[2] > 0 ? g[2] / g[1] : 0.0;
    if (ratio > 0)
        printf("bf16 / f32 peak: %.2fx (2.00x where vdpbf16ps issues at the FMA's rate; bf16 kernels pay only well above 1x)\n", ratio);
    printf("nat's bf16 paths here: NA kernels %s; GEMMs and convolutions %s\n",
           nat_cpu_bf16_vector_native() ? "vdpbf16ps" : "emulated (f32 kernels on bf16-rounded operands)",
           nat_dnn_gemm_impl(true));
    printf("RESULT bench=isa fma512_gflops=%.1f dpbf16_gflops=%.1f ratio=%.2f\n", g[1], g[2], ratio);
    return 0;
}
