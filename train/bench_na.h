/* train/bench_na.h — nat-bench na2d: 2-D neighborhood-attention kernels, fused vs unfused vs the legacy
 * gather + batched-GEMM algorithm vs the reference (see `nat-bench na2d --help`). */
#ifndef NAT_TRAIN_BENCH_NA_H
#define NAT_TRAIN_BENCH_NA_H

/* argv[0] is the benchmark's name ("na2d"); returns 0, or non-zero after printing what was wrong. */
int nat_bench_na(int argc, char **argv);

#endif
