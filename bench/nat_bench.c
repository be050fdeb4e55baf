/* bench/nat_bench.c — nat-bench: micro-benchmarks that print medians and ratios.
 *   nat-bench gemm     GEMM GFLOP/s, f32 and bf16 (the CPU roofline)
 *   nat-bench conv2d   conv2d forward/backward GFLOP/s
 *   nat-bench na2d     neighborhood attention (see nat-bench na2d --help)
 *   nat-bench data     data loader throughput
 *   nat-bench isa      peak f32 FMA against bf16 vdpbf16ps rates of one core (why bf16 pays or not)
 */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: nat-bench <benchmark> [options]\n"
               "benchmarks:\n"
               "  gemm     oneDNN GEMM GFLOP/s, f32 and bf16, square and NAT-shaped (the CPU roofline)\n"
               "  conv2d   conv2d forward and backward GFLOP/s on NAT's tokenizer and downsampler shapes\n"
               "  na2d     2-D neighborhood attention kernels (nat-bench na2d --help)\n"
               "  data     data loader images/s (Fashion-MNIST and a 224² JPEG folder)\n"
               "  isa      peak f32 FMA and bf16 vdpbf16ps rates of one core, and the bf16 paths nat picks\n"
               "Every benchmark takes --help.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const struct {
        const char *name;
        int (*run)(int, char **);
    } benches[] = {
        {"gemm", nat_bench_gemm},
        {"conv2d", nat_bench_conv2d},
        {"na2d", nat_bench_na},
        {"data", nat_bench_data},
        {"isa", nat_bench_isa},
    };
    for (size_t i = 0; i < sizeof benches / sizeof *benches; i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].run(argc - 1, argv + 1);
    fprintf(stderr, "nat-bench: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
