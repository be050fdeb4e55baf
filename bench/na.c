/* bench/na.c — nat-bench na2d: times 2-D neighborhood attention (with rpb, non-causal) on
 * q, k, v [B, heads, S, S, D], median over reps after a warm-up.
 *
 * Implementations:
 *   fused      na_cpu_fused_forward / na_cpu_fused_backward (saves only lse)
 *   unfused    na_cpu_qk -> softmax -> na_cpu_av, materialising the [.., K] weights; backward
 *              na_cpu_av_backward -> softmax backward -> na_cpu_qk_backward
 *   gather     the legacy algorithm of NATTEN's pure-PyTorch fallback (bench/na_gather.c, the one
 *              nat-profile runs inside models): each query's K keys and values copied into
 *              [.., K, D] tensors, batched matmuls per query, softmax; autograd's backward
 *              (matmuls and scatter-adds of the gathered gradients)
 *   reference  na_ref_fused_forward / na_ref_fused_backward (double precision)
 *   fused-bf16 na_cpu_fused_forward_bf16 / na_cpu_fused_backward_bf16: the autocast kernels in
 *              AVX512-BF16 (vdpbf16ps) on q, k, v rounded to bf16; the packing of the operands into
 *              bf16 (and the rounding of d_out) is inside the timed region, as in the op
 * --dtype bf16 times fused (f32) and fused-bf16, forward and forward + backward, in one run and prints
 * the ratios.
 * FLOPs counted per query: 2*K*D (QK) + 2*K*D (AV), K = k*k; x3 for forward + backward.
 * Every tensor and every intermediate goes through nat_mem_alloc; intermediates an op needs (weights,
 * gathered buffers) are allocated inside the timed region, as an autograd op would, and the peak is
 * reset just before it, so peak_mib = inputs + outputs + what the implementation holds at its worst.
 */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/isa.h"
#include "layers/natten/cpu/na_cpu.h"
#include "nat/half.h" /* nat_round_array */
#include "tests/ref/na_ref.h"
#include "nat/alloc.h"
#include "nat/rng.h"
#include "bench/bench.h"
#include "train/train.h"


typedef enum { IMPL_FUSED, IMPL_UNFUSED, IMPL_GATHER, IMPL_REFERENCE, IMPL_FUSED_BF16 } impl_kind;
static const char *const IMPL_NAMES[] = {"fused", "unfused", "gather", "reference", "fused-bf16"};
enum { N_IMPLS = sizeof IMPL_NAMES / sizeof *IMPL_NAMES };

typedef struct bench_cfg {
    int64_t batch, heads, size, dim;
    int kernel, dilation;
    impl_kind impl;
    int fwdbwd;
    int reps;
    int check; /* compare the outputs with another implementation after timing */
} bench_cfg;

typedef struct bench_result {
    double ms, gflops, peak_mib;
    double check_err; /* max |x - y| / max |y| over out (and dq, dk, dv, drpb); -1 if not checked */
    impl_kind check_against;
} bench_result;

/* One tensor from the counting allocator. */
typedef struct buf {
    void *p;
    size_t bytes;
} buf;

static nat_status buf_alloc(buf *b, size_t bytes)
{
    b->bytes = bytes;
    b->p = NULL;
    return nat_mem_alloc(NAT_CPU, bytes, &b->p);
}

static void buf_free(buf *b)
{
    if (b->p)
        nat_mem_free(NAT_CPU, b->p, b->bytes);
    b->p = NULL;
}

typedef struct bench_ctx {
    const bench_cfg *cfg;
    nat_na_params p;
    na_problem pb; /* p against the sizes, validated once (what the CPU kernels take) */
    int64_t spatial[2], nq, K, D, nrpb;
    float scale;
    buf q, k, v, rpb, d_out, out, lse, dq, dk, dv, drpb;
    buf qd, kd, vd, rpbd, d_outd, outd, lsed, dqd, dkd, dvd, drpbd; /* reference only */
    buf saved_w;                                                  /* unfused */
} bench_ctx;

#define F(b) ((float *)(b).p)
#define DB(b) ((double *)(b).p)

/* ---- softmax over the last axis (unfused) ---- */

static void softmax_rows(float *x, int64_t rows, int64_t K)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *row = x + r * K, mx = -INFINITY, sum = 0.0f;
        for (int64_t s = 0; s < K; s++)
            mx = row[s] > mx ? row[s] : mx;
        for (int64_t s = 0; s < K; s++) {
            row[s] = expf(row[s] - mx);
            sum += row[s];
        }
        for (int64_t s = 0; s < K; s++)
            row[s] /= sum;
    }
}

/* g <- w * (g - sum(w * g)) in place: softmax backward. */
static void softmax_backward_rows(const float *w, float *g, int64_t rows, int64_t K)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * K;
        float *gr = g + r * K, dot = 0.0f;
        for (int64_t s = 0; s < K; s++)
            dot += wr[s] * gr[s];
        for (int64_t s = 0; s < K; s++)
            gr[s] = wr[s] * (gr[s] - dot);
    }
}

/* ---- gather (legacy): nat_bench_na_by_gather (bench/na_gather.c) through autograd ---- */

/* The same algorithm nat-profile --na-impl gather runs inside a model, on the benchmark's buffers:
 * q, k, v and rpb wrapped as tensors, forward in a step context, backward from d_out; its gathered
 * copies and weights are the context's step tensors, so the allocator's peak shows what it holds. */
static nat_status gather_run(bench_ctx *c)
{
    const bench_cfg *cfg = c->cfg;
    const int64_t shape[5] = {cfg->batch, cfg->heads, cfg->size, cfg->size, c->D};
    const int64_t rshape[3] = {cfg->heads, 2 * cfg->kernel - 1, 2 * cfg->kernel - 1};
    nat_tensor *t[4] = {NULL, NULL, NULL, NULL}, *out = NULL, *g = NULL;
    nat_ctx *ctx = NULL;
    float *bufs[4] = {F(c->q), F(c->k), F(c->v), F(c->rpb)}, *grads[4] = {F(c->dq), F(c->dk), F(c->dv), F(c->drpb)};
    nat_status st = nat_ctx_new(&ctx, NAT_CPU);
    for (int i = 0; i < 4 && st == NAT_OK; i++) {
        st = nat_tensor_wrap(&t[i], bufs[i], NAT_F32, NAT_CPU, i < 3 ? 5 : 3, i < 3 ? shape : rshape);
        if (st == NAT_OK)
            nat_set_requires_grad(t[i], cfg->fwdbwd != 0);
    }
    nat_ctx_set_grad_enabled(ctx, cfg->fwdbwd != 0);
    if (st == NAT_OK)
        st = nat_bench_na_by_gather(ctx, t[0], t[1], t[2], t[3], &c->p, 0.0f, false, NULL, &out);
    if (st == NAT_OK)
        st = nat_tensor_copy_to(out, F(c->out), nat_tensor_numel(out));
    if (st == NAT_OK && cfg->fwdbwd) {
        st = nat_ctx_empty(ctx, &g, NAT_F32, 5, shape);
        if (st == NAT_OK)
            st = nat_tensor_copy_from(g, F(c->d_out), nat_tensor_numel(g));
        if (st == NAT_OK)
            st = nat_backward_from(ctx, out, g);
        for (int i = 0; i < 4 && st == NAT_OK; i++)
            st = nat_tensor_copy_to(t[i]->grad, grads[i], nat_tensor_numel(t[i]));
    }
    nat_ctx_free(ctx);
    for (int i = 0; i < 4; i++)
        nat_tensor_free(t[i]);
    return st;
}

/* ---- one timed iteration ---- */

#define CTX_ARGS(c) &(c)->p, (c)->cfg->batch, (c)->cfg->heads, (c)->spatial, (c)->D

static nat_status run_once(bench_ctx *c)
{
    const bench_cfg *cfg = c->cfg;
    nat_status st = NAT_OK;
    switch (cfg->impl) {
    case IMPL_FUSED:
        NAT_TRY(na_cpu_fused_forward(&c->pb, F(c->q), F(c->k), F(c->v), F(c->rpb), F(c->out),
                                     F(c->lse)));
        if (cfg->fwdbwd)
            NAT_TRY(na_cpu_fused_backward(&c->pb, F(c->q), F(c->k), F(c->v), F(c->rpb), F(c->out),
                                          F(c->lse), F(c->d_out), F(c->dq), F(c->dk), F(c->dv),
                                          F(c->drpb)));
        break;
    case IMPL_UNFUSED: {
        NAT_TRY(buf_alloc(&c->saved_w, sizeof(float) * (size_t)(c->nq * c->K)));
        float *w = F(c->saved_w);
        st = na_cpu_qk(&c->pb, F(c->q), F(c->k), F(c->rpb), w);
        if (st == NAT_OK) {
            softmax_rows(w, c->nq, c->K);
            st = na_cpu_av(&c->pb, w, F(c->v), F(c->out));
        }
        if (st == NAT_OK && cfg->fwdbwd) {
            buf g;
            st = buf_alloc(&g, sizeof(float) * (size_t)(c->nq * c->K));
            if (st == NAT_OK)
                st = na_cpu_av_backward(&c->pb, F(c->d_out), w, F(c->v), F(g), F(c->dv));
            if (st == NAT_OK) {
                softmax_backward_rows(w, F(g), c->nq, c->K);
                st = na_cpu_qk_backward(&c->pb, F(g), F(c->q), F(c->k), F(c->dq), F(c->dk),
                                        F(c->drpb));
            }
            buf_free(&g);
        }
        buf_free(&c->saved_w);
        break;
    }
    case IMPL_FUSED_BF16:
        NAT_TRY(na_cpu_fused_forward_bf16(&c->pb, F(c->q), F(c->k), F(c->v), F(c->rpb), F(c->out), F(c->lse)));
        if (cfg->fwdbwd)
            NAT_TRY(na_cpu_fused_backward_bf16(&c->pb, F(c->q), F(c->k), F(c->v), F(c->rpb), F(c->out),
                                               F(c->lse), F(c->d_out), F(c->dq), F(c->dk), F(c->dv),
                                               F(c->drpb)));
        break;
    case IMPL_GATHER:
        st = gather_run(c);
        break;
    case IMPL_REFERENCE:
        NAT_TRY(na_ref_fused_forward(CTX_ARGS(c), DB(c->qd), DB(c->kd), DB(c->vd), DB(c->rpbd),
                                     DB(c->outd), DB(c->lsed)));
        if (cfg->fwdbwd)
            NAT_TRY(na_ref_fused_backward(CTX_ARGS(c), DB(c->qd), DB(c->kd), DB(c->vd), DB(c->rpbd),
                                          DB(c->outd), DB(c->lsed), DB(c->d_outd), DB(c->dqd),
                                          DB(c->dkd), DB(c->dvd), DB(c->drpbd)));
        break;
    }
    return st;
}

static void ctx_free(bench_ctx *c)
{
    buf *all[] = {&c->q,   &c->k,   &c->v,   &c->rpb,    &c->d_out, &c->out,   &c->lse,   &c->dq,
                  &c->dk,  &c->dv,  &c->drpb, &c->qd,    &c->kd,    &c->vd,    &c->rpbd,  &c->d_outd,
                  &c->outd, &c->lsed, &c->dqd, &c->dkd,  &c->dvd,   &c->drpbd, &c->saved_w};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        buf_free(all[i]);
}

static nat_status ctx_init(bench_ctx *c, const bench_cfg *cfg)
{
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->p = (nat_na_params){.ndim = 2, .kernel = {cfg->kernel, cfg->kernel},
                           .dilation = {cfg->dilation, cfg->dilation}, .scale = 0.0f};
    c->spatial[0] = c->spatial[1] = cfg->size;
    c->D = cfg->dim;
    c->K = (int64_t)cfg->kernel * cfg->kernel;
    c->nq = cfg->batch * cfg->heads * cfg->size * cfg->size;
    c->nrpb = cfg->heads * (2 * cfg->kernel - 1) * (2 * cfg->kernel - 1);
    c->scale = na_effective_scale(&c->p, c->D);
    NAT_TRY(na_problem_init(&c->pb, &c->p, cfg->batch, cfg->heads, c->spatial, c->D, 1, "na2d"));
    if (cfg->impl == IMPL_GATHER && c->K > 1024)
        return nat_error(NAT_ERR_UNSUPPORTED, "na2d gather: kernel %d has more than 1024 slots",
                         cfg->kernel);
    const size_t nqd = (size_t)(c->nq * c->D);
    buf *fl[] = {&c->q, &c->k, &c->v, &c->d_out, &c->out, &c->dq, &c->dk, &c->dv};
    for (size_t i = 0; i < sizeof fl / sizeof *fl; i++)
        NAT_TRY(buf_alloc(fl[i], sizeof(float) * nqd));
    NAT_TRY(buf_alloc(&c->lse, sizeof(float) * (size_t)c->nq));
    NAT_TRY(buf_alloc(&c->rpb, sizeof(float) * (size_t)c->nrpb));
    NAT_TRY(buf_alloc(&c->drpb, sizeof(float) * (size_t)c->nrpb));
    nat_rng r;
    nat_rng_seed(&r, 1234);
    nat_rng_fill_normal(&r, F(c->q), nqd, 0.0f, 1.0f);
    nat_rng_fill_normal(&r, F(c->k), nqd, 0.0f, 1.0f);
    nat_rng_fill_normal(&r, F(c->v), nqd, 0.0f, 1.0f);
    nat_rng_fill_normal(&r, F(c->d_out), nqd, 0.0f, 1.0f);
    nat_rng_fill_normal(&r, F(c->rpb), (size_t)c->nrpb, 0.0f, 0.02f);
    if (cfg->impl == IMPL_FUSED_BF16) { /* what autocast hands the kernels: q, k, v on the bf16 grid */
        if (nat_cpu_isa_detected() < NAT_ISA_AVX512_CORE_BF16)
            return nat_error(NAT_ERR_UNSUPPORTED, "na2d fused-bf16: this CPU lacks avx512_bf16 (it has %s)",
                             nat_cpu_isa_level_name(nat_cpu_isa_detected()));
        buf *x[] = {&c->q, &c->k, &c->v};
        for (size_t i = 0; i < sizeof x / sizeof *x; i++)
            nat_round_array(NAT_PREC_BF16, F(*x[i]), F(*x[i]), (int64_t)nqd);
    }
    /* The backward needs the forward's out and lse. */
    NAT_TRY(na_cpu_fused_forward(&c->pb, F(c->q), F(c->k), F(c->v), F(c->rpb), F(c->out),
                                 F(c->lse)));
    if (cfg->impl == IMPL_REFERENCE) {
        buf *src[] = {&c->q, &c->k, &c->v, &c->d_out, &c->out, &c->rpb, &c->lse};
        buf *dst[] = {&c->qd, &c->kd, &c->vd, &c->d_outd, &c->outd, &c->rpbd, &c->lsed};
        for (size_t i = 0; i < sizeof src / sizeof *src; i++) {
            size_t n = src[i]->bytes / sizeof(float);
            NAT_TRY(buf_alloc(dst[i], sizeof(double) * n));
            for (size_t j = 0; j < n; j++)
                DB(*dst[i])[j] = F(*src[i])[j];
        }
        NAT_TRY(buf_alloc(&c->dqd, sizeof(double) * nqd));
        NAT_TRY(buf_alloc(&c->dkd, sizeof(double) * nqd));
        NAT_TRY(buf_alloc(&c->dvd, sizeof(double) * nqd));
        NAT_TRY(buf_alloc(&c->drpbd, sizeof(double) * (size_t)c->nrpb));
    }
    return NAT_OK;
}

static double flops_of(const bench_cfg *cfg)
{
    double K = (double)cfg->kernel * cfg->kernel;
    double nq = (double)cfg->batch * cfg->heads * cfg->size * cfg->size;
    return nq * (2.0 * K * cfg->dim) * 2.0 * (cfg->fwdbwd ? 3.0 : 1.0);
}

/* The outputs of the last run, as floats, one after the other: out, then dq, dk, dv, drpb. */
static size_t outputs_size(const bench_ctx *c)
{
    size_t n = (size_t)(c->nq * c->D);
    return c->cfg->fwdbwd ? 4 * n + (size_t)c->nrpb : n;
}

static void collect_outputs(const bench_ctx *c, float *dst)
{
    const size_t n = (size_t)(c->nq * c->D);
    const int ref = c->cfg->impl == IMPL_REFERENCE;
    const buf *fb[] = {&c->out, &c->dq, &c->dk, &c->dv, &c->drpb};
    const buf *db[] = {&c->outd, &c->dqd, &c->dkd, &c->dvd, &c->drpbd};
    const size_t len[] = {n, n, n, n, (size_t)c->nrpb};
    for (int i = 0; i < (c->cfg->fwdbwd ? 5 : 1); i++) {
        for (size_t j = 0; j < len[i]; j++)
            dst[j] = ref ? (float)DB(*db[i])[j] : F(*fb[i])[j];
        dst += len[i];
    }
}

/* Runs `other` on the same inputs and compares its outputs with the ones just timed. */
static nat_status check_outputs(bench_ctx *c, impl_kind other, double *err)
{
    const size_t n = outputs_size(c);
    buf mine, theirs;
    NAT_TRY(buf_alloc(&mine, sizeof(float) * n));
    nat_status st = buf_alloc(&theirs, sizeof(float) * n);
    if (st == NAT_OK) {
        collect_outputs(c, F(mine));
        const bench_cfg *saved = c->cfg;
        bench_cfg cfg2 = *saved;
        cfg2.impl = other;
        c->cfg = &cfg2;
        st = run_once(c);
        if (st == NAT_OK)
            collect_outputs(c, F(theirs));
        c->cfg = saved;
    }
    if (st == NAT_OK) {
        double mx = 0.0, e = 0.0;
        for (size_t i = 0; i < n; i++) {
            mx = fmax(mx, fabs((double)F(theirs)[i]));
            e = fmax(e, fabs((double)F(mine)[i] - (double)F(theirs)[i]));
        }
        *err = mx > 0.0 ? e / mx : e;
    }
    buf_free(&theirs);
    buf_free(&mine);
    return st;
}

static nat_status bench_run(const bench_cfg *cfg, bench_result *res)
{
    bench_ctx c;
    nat_status st = ctx_init(&c, cfg);
    double *t = calloc((size_t)cfg->reps, sizeof *t);
    if (st == NAT_OK && !t)
        st = nat_error(NAT_ERR_OOM, "na2d: no memory for %d timings", cfg->reps);
    if (st == NAT_OK)
        st = run_once(&c); /* warm-up: page faults, allocator cache, thread pool */
    if (st == NAT_OK) {
        nat_mem_reset_peak(NAT_CPU);
        for (int r = 0; r < cfg->reps && st == NAT_OK; r++) {
            double t0 = nat_wall_now();
            st = run_once(&c);
            t[r] = nat_wall_now() - t0;
        }
    }
    if (st == NAT_OK) {
        double med = nat_bench_median(t, cfg->reps);
        res->ms = 1e3 * med;
        res->gflops = flops_of(cfg) / med * 1e-9;
        res->peak_mib = (double)nat_mem_get_stats(NAT_CPU).peak / (1024.0 * 1024.0);
        res->check_err = -1.0;
        res->check_against = cfg->impl == IMPL_FUSED ? IMPL_UNFUSED : IMPL_FUSED; /* bf16: f32 on its inputs */
        if (cfg->check)
            st = check_outputs(&c, res->check_against, &res->check_err);
    }
    free(t);
    ctx_free(&c);
    return st;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-bench na2d [--batch B] [--heads H] [--size S] [--dim D] [--kernel K]\n"
            "                      [--dilation d] [--impl fused|unfused|gather|reference|fused-bf16]\n"
            "                      [--pass fwd|fwdbwd] [--dtype bf16] [--reps N] [--sweep] [--help]\n"
            "Times 2-D neighborhood attention with rpb on q, k, v [B, H, S, S, D] (defaults: B 8, H 2,\n"
            "S 56, D 32, K 7, d 1, fused, fwd, 10 reps): median ms over N runs after one warm-up,\n"
            "GFLOP/s counting 2*K*K*D flops per query for QK and as many for AV (x3 for fwdbwd), and\n"
            "the peak bytes allocated through nat_mem_alloc during the timed runs.\n"
            "  fused      logits, softmax and weighted sum per query in one pass; saves only lse\n"
            "  unfused    qk kernel -> softmax -> av kernel, materialising the [.., K*K] weights\n"
            "  gather     legacy: gather each query's keys/values into [.., K*K, D], GEMM per query\n"
            "  reference  the double-precision reference (slow)\n"
            "  fused-bf16 fused with bf16 operands in AVX512-BF16 (the autocast kernels; needs avx512_bf16)\n"
            "--dtype bf16 times fused and fused-bf16, fwd and fwdbwd, at the same shape in one run and\n"
            "prints the speed-ups of bf16 over f32: 5 rounds (N >= 5) of N/5 runs of each of the four, the\n"
            "median of each round's medians (so that a change of load hits all four alike).\n"
            "--sweep runs NAT-Mini's four levels at 224^2 (B 8, K 7, D 32: 56^2/2 heads, 28^2/4,\n"
            "14^2/8, 7^2/16) and DiNAT's dilated ones (56^2 d 8, 28^2 d 4, 14^2 d 2) with fused fwd,\n"
            "fused fwdbwd and gather fwdbwd, and prints fused-vs-gather speed-ups from the same run.\n"
            "The last line is: RESULT impl=<impl> pass=<pass> ms=<median> gflops=<value> peak_mib=<value>\n");
}

static int parse_int(const char *opt, const char *val, long lo, long hi, long *out)
{
    char *end = NULL;
    long x = val ? strtol(val, &end, 10) : 0;
    if (!val || *val == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "nat-bench na2d: %s needs an integer in [%ld, %ld], got '%s'\n", opt, lo, hi,
                val ? val : "(nothing)");
        return 0;
    }
    *out = x;
    return 1;
}

static void print_result(const bench_cfg *cfg, const bench_result *r)
{
    printf("RESULT impl=%s pass=%s ms=%.3f gflops=%.2f peak_mib=%.1f\n", IMPL_NAMES[cfg->impl],
           cfg->fwdbwd ? "fwdbwd" : "fwd", r->ms, r->gflops, r->peak_mib);
}

static int run_sweep(int reps)
{
    static const struct {
        const char *name;
        int size, heads, dilation;
    } levels[] = {
        {"NAT-Mini L1", 56, 2, 1},  {"NAT-Mini L2", 28, 4, 1}, {"NAT-Mini L3", 14, 8, 1},
        {"NAT-Mini L4", 7, 16, 1},  {"DiNAT L1 d8", 56, 2, 8}, {"DiNAT L2 d4", 28, 4, 4},
        {"DiNAT L3 d2", 14, 8, 2},
    };
    enum { NL = sizeof levels / sizeof *levels };
    static const struct {
        impl_kind impl;
        int fwdbwd;
    } runs[] = {{IMPL_FUSED, 0}, {IMPL_FUSED, 1}, {IMPL_GATHER, 1}};
    bench_result res[NL][3];
    printf("%-12s %5s %5s %3s | %9s %8s | %9s %8s %8s | %9s %8s %8s | %8s %8s\n", "level", "size", "heads",
           "d", "fused fwd", "GFLOP/s", "fused f+b", "GFLOP/s", "MiB", "gather fb", "GFLOP/s", "MiB",
           "speed-up", "mem x");
    fflush(stdout);
    for (int l = 0; l < NL; l++) {
        for (int r = 0; r < 3; r++) {
            bench_cfg cfg = {.batch = 8, .heads = levels[l].heads, .size = levels[l].size, .dim = 32,
                             .kernel = 7, .dilation = levels[l].dilation, .impl = runs[r].impl,
                             .fwdbwd = runs[r].fwdbwd, .reps = reps};
            /* The gather path is slow and memory-hungry: fewer repetitions; its results are checked
             * against the fused ones, so the speed-up compares two correct implementations. */
            if (runs[r].impl == IMPL_GATHER) {
                cfg.reps = reps > 3 ? (reps + 2) / 3 : reps;
                cfg.check = 1;
            }
            nat_status st = bench_run(&cfg, &res[l][r]);
            if (st != NAT_OK) {
                fprintf(stderr, "nat-bench na2d: %s %s: %s\n", levels[l].name, IMPL_NAMES[runs[r].impl],
                        nat_error_message());
                return 1;
            }
        }
        printf("%-12s %5d %5d %3d | %7.2fms %8.1f | %7.2fms %8.1f %8.1f | %7.1fms %8.1f %8.0f | %7.1fx %7.0fx\n",
               levels[l].name, levels[l].size, levels[l].heads, levels[l].dilation, res[l][0].ms,
               res[l][0].gflops, res[l][1].ms, res[l][1].gflops, res[l][1].peak_mib, res[l][2].ms,
               res[l][2].gflops, res[l][2].peak_mib, res[l][2].ms / res[l][1].ms,
               res[l][2].peak_mib / res[l][1].peak_mib);
        fflush(stdout);
    }
    double worst = 1e30, err = 0.0;
    for (int l = 0; l < NL; l++) {
        worst = res[l][2].ms / res[l][1].ms < worst ? res[l][2].ms / res[l][1].ms : worst;
        err = res[l][2].check_err > err ? res[l][2].check_err : err;
    }
    printf("fused fwd+bwd vs gather fwd+bwd: smallest speed-up %.1fx; gather's outputs and gradients "
           "match fused to %.2g (max |diff| / max |value|)\n", worst, err);
    for (int l = 0; l < NL; l++)
        for (int r = 0; r < 3; r++) {
            bench_cfg cfg = {.impl = runs[r].impl, .fwdbwd = runs[r].fwdbwd};
            printf("%-12s ", levels[l].name);
            print_result(&cfg, &res[l][r]);
        }
    return 0;
}

/* fused f32 vs fused-bf16, fwd and fwdbwd, at cfg's shape: `rounds` rounds of the four, each round
 * timing reps/rounds runs of every one (so a change of load hits all four alike); medians of all runs. */
static int run_bf16_compare(bench_cfg cfg)
{
    static const struct {
        impl_kind impl;
        int fwdbwd;
    } runs[4] = {{IMPL_FUSED, 0}, {IMPL_FUSED_BF16, 0}, {IMPL_FUSED, 1}, {IMPL_FUSED_BF16, 1}};
    const int rounds = cfg.reps >= 5 ? 5 : 1, per = (cfg.reps + rounds - 1) / rounds;
    double *ms[4], check[4] = {-1.0, -1.0, -1.0, -1.0};
    bench_result res[4];
    for (int r = 0; r < 4; r++)
        ms[r] = calloc((size_t)(rounds * per), sizeof(double));
    printf("na2d f32 vs bf16: B %lld, heads %lld, %lldx%lld, D %lld, kernel %d, dilation %d, %d x %d reps, ISA %s\n",
           (long long)cfg.batch, (long long)cfg.heads, (long long)cfg.size, (long long)cfg.size, (long long)cfg.dim,
           cfg.kernel, cfg.dilation, rounds, per, nat_cpu_isa_name());
    printf("'bf16' is the vdpbf16ps kernels; autocast on this CPU runs %s\n",
           na_cpu_autocast_path(0) == NA_CPU_AUTOCAST_BF16 ? "them" : "the f32 kernels on rounded operands instead (nat-bench isa)");
    for (int round = 0; round < rounds; round++)
        for (int r = 0; r < 4; r++) {
            bench_cfg c = cfg;
            c.impl = runs[r].impl;
            c.fwdbwd = runs[r].fwdbwd;
            c.reps = per;
            c.check = round == 0 && runs[r].impl == IMPL_FUSED_BF16;
            if (bench_run(&c, &res[r]) != NAT_OK) {
                fprintf(stderr, "nat-bench na2d: %s %s: %s\n", IMPL_NAMES[c.impl], c.fwdbwd ? "fwdbwd" : "fwd",
                        nat_error_message());
                return 1;
            }
            if (c.check)
                check[r] = res[r].check_err; /* bf16 vs f32 on the same (rounded) inputs */
            ms[r][round] = res[r].ms; /* median of this round's runs */
        }
    double med[4];
    for (int r = 0; r < 4; r++) {
        med[r] = nat_bench_median(ms[r], rounds);
        free(ms[r]);
    }
    const double fl[2] = {flops_of(&(bench_cfg){.batch = cfg.batch, .heads = cfg.heads, .size = cfg.size,
                                                .dim = cfg.dim, .kernel = cfg.kernel, .fwdbwd = 0}),
                          flops_of(&(bench_cfg){.batch = cfg.batch, .heads = cfg.heads, .size = cfg.size,
                                                .dim = cfg.dim, .kernel = cfg.kernel, .fwdbwd = 1})};
    printf("%-8s | %10s %8s | %10s %8s | %8s | %s\n", "pass", "f32 ms", "GFLOP/s", "bf16 ms", "GFLOP/s", "speed-up",
           "bf16 vs f32 (max |diff| / max |value|)");
    for (int p = 0; p < 2; p++)
        printf("%-8s | %10.3f %8.1f | %10.3f %8.1f | %7.2fx | %.2g\n", p ? "fwdbwd" : "fwd", med[2 * p],
               fl[p] / med[2 * p] * 1e-6, med[2 * p + 1], fl[p] / med[2 * p + 1] * 1e-6, med[2 * p] / med[2 * p + 1],
               check[2 * p + 1]);
    for (int p = 0; p < 2; p++)
        printf("RESULT pass=%s f32_ms=%.3f bf16_ms=%.3f speedup=%.3f\n", p ? "fwdbwd" : "fwd", med[2 * p],
               med[2 * p + 1], med[2 * p] / med[2 * p + 1]);
    return 0;
}

int nat_bench_na(int argc, char **argv)
{
    bench_cfg cfg = {.batch = 8, .heads = 2, .size = 56, .dim = 32, .kernel = 7, .dilation = 1,
                     .impl = IMPL_FUSED, .fwdbwd = 0, .reps = 10, .check = 1};
    int sweep = 0, reps_set = 0, bf16_compare = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long x = 0;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(o, "--sweep")) {
            sweep = 1;
        } else if (!strcmp(o, "--batch") || !strcmp(o, "--heads") || !strcmp(o, "--size") ||
                   !strcmp(o, "--dim") || !strcmp(o, "--kernel") || !strcmp(o, "--dilation") ||
                   !strcmp(o, "--reps")) {
            if (!parse_int(o, val, 1, 1 << 20, &x))
                return 2;
            i++;
            if (!strcmp(o, "--batch"))
                cfg.batch = x;
            else if (!strcmp(o, "--heads"))
                cfg.heads = x;
            else if (!strcmp(o, "--size"))
                cfg.size = x;
            else if (!strcmp(o, "--dim"))
                cfg.dim = x;
            else if (!strcmp(o, "--kernel"))
                cfg.kernel = (int)x;
            else if (!strcmp(o, "--dilation"))
                cfg.dilation = (int)x;
            else {
                cfg.reps = (int)x;
                reps_set = 1;
            }
        } else if (!strcmp(o, "--impl")) {
            int found = 0;
            for (int k = 0; k < N_IMPLS; k++)
                if (val && !strcmp(val, IMPL_NAMES[k])) {
                    cfg.impl = (impl_kind)k;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "nat-bench na2d: --impl must be fused, unfused, gather, reference or fused-bf16, "
                        "got '%s'\n",
                        val ? val : "(nothing)");
                return 2;
            }
            i++;
        } else if (!strcmp(o, "--dtype")) {
            if (!val || (strcmp(val, "bf16") && strcmp(val, "f32"))) {
                fprintf(stderr, "nat-bench na2d: --dtype must be bf16 or f32, got '%s'\n", val ? val : "(nothing)");
                return 2;
            }
            bf16_compare = !strcmp(val, "bf16");
            i++;
        } else if (!strcmp(o, "--pass")) {
            if (val && !strcmp(val, "fwd"))
                cfg.fwdbwd = 0;
            else if (val && !strcmp(val, "fwdbwd"))
                cfg.fwdbwd = 1;
            else {
                fprintf(stderr, "nat-bench na2d: --pass must be fwd or fwdbwd, got '%s'\n",
                        val ? val : "(nothing)");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "nat-bench na2d: unknown option '%s' (try --help)\n", o);
            return 2;
        }
    }
    if (!sweep) {
        nat_na_params p = {.ndim = 2, .kernel = {cfg.kernel, cfg.kernel},
                           .dilation = {cfg.dilation, cfg.dilation}};
        int64_t spatial[2] = {cfg.size, cfg.size};
        if (na_validate(&p, cfg.batch, cfg.heads, spatial, cfg.dim, 1, "na2d") != NAT_OK) {
            fprintf(stderr, "nat-bench: %s\n", nat_error_message());
            return 2;
        }
    }
    printf("threads: OpenMP %d\n", omp_get_max_threads());
    if (sweep)
        return run_sweep(reps_set ? cfg.reps : 10);
    if (cfg.impl == IMPL_REFERENCE && !reps_set)
        cfg.reps = 1;
    if (bf16_compare)
        return run_bf16_compare(cfg);
    printf("na2d: B %lld, heads %lld, %lldx%lld, D %lld, kernel %d, dilation %d, impl %s, pass %s, reps %d\n",
           (long long)cfg.batch, (long long)cfg.heads, (long long)cfg.size, (long long)cfg.size,
           (long long)cfg.dim, cfg.kernel, cfg.dilation, IMPL_NAMES[cfg.impl], cfg.fwdbwd ? "fwdbwd" : "fwd",
           cfg.reps);
    bench_result r;
    nat_status st = bench_run(&cfg, &r);
    if (st != NAT_OK) {
        fprintf(stderr, "nat-bench: %s\n", nat_error_message());
        return 1;
    }
    printf("median %.3f ms, %.2f GFLOP/s, peak %.1f MiB\n", r.ms, r.gflops, r.peak_mib);
    printf("check: outputs%s vs %s, max |diff| / max |value| = %.2g\n",
           cfg.fwdbwd ? " and gradients" : "", IMPL_NAMES[r.check_against], r.check_err);
    print_result(&cfg, &r);
    return 0;
}
