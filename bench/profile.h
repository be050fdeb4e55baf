/* bench/profile.h — nat-profile's measurement core: one run (a model, a batch, a resolution, train or
 * inference, an NA implementation) timed over several steps, with the allocator's peak, the process's
 * RSS, GMACs, model FLOP utilisation against a GEMM roofline, and a per-layer table whose rows add up
 * to the step they were taken from; and the CSV row nat-profile --csv appends.
 *
 * A training step is what nat-train does per batch: forward with drop-path, label-smoothed (0.1)
 * cross-entropy, backward, AdamW (weight decay 0.05, none on norms/biases/rpb), zero_grad, context
 * reset. An inference step is a forward with gradients off. Inputs are N(0, 1) images and uniform
 * labels from a fixed seed.
 *
 * The per-layer table comes from separate traced steps (nat_model_set_trace): every interval between
 * two consecutive events of the step is charged to exactly one row, so the rows sum to the traced
 * step's total by construction. Rows: tokenizer; per level its norms (norm1 + norm2 of every layer),
 * attention (NA or window attention, with the residual add), Mlp (with its residual add) and
 * downsampler; head; loss (cross-entropy forward and backward); optimizer (AdamW step and zero_grad);
 * other (context reset). "act" memory is what the part's forward leaves allocated for backward (the
 * rise of the allocator's current bytes across it); "params" are the part's parameter elements.
 */
#ifndef NAT_TRAIN_PROFILE_H
#define NAT_TRAIN_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nat/autograd.h"
#include "nat/model.h"

#define NAT_PROFILE_ROOFLINE_DEFAULT 197.0 /* GFLOP/s: `nat-bench gemm`, square 2048, docs/benchmarks.md */
#define NAT_PROFILE_MAX_ROWS 24

/* How the model's NA layers compute the NA op (docs/profile.md): nat's fused op (the default), the
 * unfused qk -> softmax -> av that keeps the weights, or the legacy gather of bench/na_gather.c. */
typedef enum nat_profile_na_impl {
    NAT_PROFILE_NA_FUSED = 0,
    NAT_PROFILE_NA_UNFUSED = 1,
    NAT_PROFILE_NA_GATHER = 2
} nat_profile_na_impl;
/* "fused", "unfused", "gather" (static strings); "?" otherwise. */
const char *nat_profile_na_impl_name(nat_profile_na_impl impl);
/* Switches the model's NA layers to impl (nat_model_set_na_fn, models/nat/nat_internal.h). */
void nat_profile_set_na_impl(nat_model *m, nat_profile_na_impl impl);

typedef struct nat_profile_opts {
    nat_model_desc desc; /* checked by the run */
    char label[64];      /* model label in output and CSV (variant name, or the config file) */
    int batch, res;      /* images per step, input height = width */
    int steps;           /* timed steps (median), >= 1 */
    int warmup;          /* untimed steps first, >= 0 (the first step allocates) */
    int trace_steps;     /* traced steps for the per-layer table; 0: no table */
    bool train;
    nat_profile_na_impl na_impl;
    nat_device dev;          /* where the model runs (NAT_CPU or a CUDA device) */
    nat_precision precision; /* the context's autocast (bf16/f16 on the CPU: emulated rounding) */
    bool recompute;          /* activation checkpointing of the layers (nat_model_set_recompute) */
    double roofline_gflops; /* > 0 */
    uint64_t seed;
} nat_profile_opts;

/* Defaults: batch 8, 224², 5 steps, 1 warm-up, 3 traced steps, train, fused, roofline 197, seed 1. */
nat_profile_opts nat_profile_opts_default(void);

typedef struct nat_profile_row {
    char name[40];
    double fwd_s, bwd_s; /* in the traced step */
    int64_t act_bytes;   /* left allocated by the forward of this part */
    int64_t params;      /* parameter elements of this part */
} nat_profile_row;

typedef struct nat_profile_result {
    int64_t params, macs_per_image;     /* analytic (nat_model_desc_count) */
    double flop_per_image;              /* 2·MACs, ×3 for a training step (forward + backward) */
    double step_median_s, step_min_s, step_max_s;
    double images_per_s, gflops, mfu;   /* mfu = gflops / roofline */
    double first_step_s;                /* the first warm-up step (allocations included) */
    size_t alloc_peak;                  /* allocator peak over the timed steps, persistent tensors included */
    size_t alloc_persistent;            /* parameters, gradients, optimizer state */
    size_t rss_peak, rss;               /* bytes: VmHWM and VmRSS of the process after the run */
    int n_rows;                         /* 0 without traced steps */
    nat_profile_row rows[NAT_PROFILE_MAX_ROWS];
    double traced_total_s;              /* the traced step the table comes from (median of trace_steps) */
    double traced_overhead;             /* traced_total / step_median - 1 (the markers' cost, and noise) */
} nat_profile_result;

/* Builds the model and runs it. Prints nothing. Errors name what failed (the model's message). */
nat_status nat_profile_run(const nat_profile_opts *o, nat_profile_result *r);

/* Prints the summary and the per-layer table. */
void nat_profile_print(FILE *f, const nat_profile_opts *o, const nat_profile_result *r);

/* CSV: one header line and one row per run, comma-separated, no quoting needed (labels are checked). */
void nat_profile_csv_header(FILE *f);
void nat_profile_csv_row(FILE *f, const nat_profile_opts *o, const nat_profile_result *r);
/* Appends a row to `path`, writing the header first when the file is new or empty. */
nat_status nat_profile_csv_append(const char *path, const nat_profile_opts *o, const nat_profile_result *r);

/* Peak and current resident set of this process, bytes (0 where /proc is missing). */
void nat_profile_rss(size_t *peak, size_t *current);
/* GFLOP/s of one square 2048 sgemm on this machine's threads (best of 3 after a warm-up; ~1 s). */
double nat_profile_measure_roofline(void);

#endif
