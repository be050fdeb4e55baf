/* train/bench.h — entry points of nat-bench's benchmarks and the timing helpers they share.
 * Each run function takes (argc, argv) with argv[0] the benchmark's name and returns an exit code. */
#ifndef NAT_TRAIN_BENCH_H
#define NAT_TRAIN_BENCH_H

int nat_bench_gemm(int argc, char **argv);
int nat_bench_conv2d(int argc, char **argv);
int nat_bench_na(int argc, char **argv);

/* Monotonic wall clock in seconds. */
double nat_bench_now(void);
/* Median of n values (sorts v in place). */
double nat_bench_median(double *v, int n);

#endif
