/* bench/bench.h — entry points of nat-bench's benchmarks and the helpers they share.
 * Each run function takes (argc, argv) with argv[0] the benchmark's name ("gemm", "conv2d", "na2d",
 * "data") and returns an exit code (0, or non-zero after printing what was wrong). The wall clock is
 * train/train.h's nat_wall_now. */
#ifndef NAT_BENCH_BENCH_H
#define NAT_BENCH_BENCH_H

int nat_bench_gemm(int argc, char **argv);
int nat_bench_conv2d(int argc, char **argv);
/* 2-D neighborhood-attention kernels: fused vs unfused vs the legacy gather algorithm vs the reference. */
int nat_bench_na(int argc, char **argv);
/* images/s of the data loader. */
int nat_bench_data(int argc, char **argv);

/* Median of n values (sorts v in place). */
double nat_bench_median(double *v, int n);

#endif
