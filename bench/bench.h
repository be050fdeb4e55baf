/* bench/bench.h — entry points of nat-bench's benchmarks and the helpers they share.
 * Each run function takes (argc, argv) with argv[0] the benchmark's name ("gemm", "conv2d", "na2d",
 * "data") and returns an exit code (0, or non-zero after printing what was wrong). The wall clock is
 * train/train.h's nat_wall_now. */
#ifndef NAT_BENCH_BENCH_H
#define NAT_BENCH_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "nat/natten.h"
#include "nat/rng.h"

int nat_bench_gemm(int argc, char **argv);
int nat_bench_conv2d(int argc, char **argv);
/* 2-D neighborhood-attention kernels: fused vs unfused vs the legacy gather algorithm vs the reference. */
int nat_bench_na(int argc, char **argv);
/* images/s of the data loader. */
int nat_bench_data(int argc, char **argv);
/* Peak f32 FMA and bf16 vdpbf16ps rates of one core, and the bf16 paths nat takes from them. */
int nat_bench_isa(int argc, char **argv);

/* The legacy NA algorithm of NATTEN's pure-PyTorch fallback (bench/na_gather.c), measured against nat's
 * kernels by nat-profile --na-impl gather and nat-bench na2d --impl gather: q, k, v [B, heads, *spatial,
 * D], rpb optional, non-causal; a nat_na_fn (layers/layers_internal.h), autograd does the backward. */
nat_status nat_bench_na_by_gather(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                                  const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out);
/* Neighbours of every query: t [B, heads, *spatial, D] -> out [B, heads, S, K, D] (transpose 0) or
 * [B, heads, S, D, K] (transpose 1), S = prod(spatial) row-major, K = prod(kernel), slot order as
 * natten.h. Backward scatter-adds into t. */
nat_status nat_bench_na_gather(nat_ctx *ctx, nat_tensor *t, const nat_na_params *p, int transpose, nat_tensor **out);
/* The rpb entry of every (query, slot): rpb [heads, 2k0-1, ...] -> out [heads, S, K] for a map of
 * `spatial` (p->ndim lengths). Backward scatter-adds into rpb. */
nat_status nat_bench_na_gather_rpb(nat_ctx *ctx, nat_tensor *rpb, const nat_na_params *p, const int64_t *spatial,
                                   nat_tensor **out);

/* Median of n values (sorts v in place). */
double nat_bench_median(double *v, int n);

#endif
