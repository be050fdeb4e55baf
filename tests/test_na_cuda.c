/* tests/test_na_cuda.c — neighborhood attention's CUDA kernels (layers/natten/cuda/na_cuda.h).
 *
 * Host part, on every build and machine (suite "na_cuda_host"):
 *  - the window arithmetic the kernels use (cuda/body.h: window start, valid keys, rpb index, inverse
 *    neighbourhood, slot of a key) against the double reference's windows (na_ref_qk), exhaustively over
 *    kernel sizes 3..21, dilations 1..4, every length from k*d to 3*k*d + 3, causal and not;
 *  - the kernels' own per-thread bodies run on the host, thread index by thread index ("emulated"), on
 *    the sweep of tests/test_na_cpu.c, against na_ref_* (and na_cpu_*): qk, av, both backwards, fused
 *    forward and backward, drpb — fp32 within 1e-4 relative;
 *  - v2 (tiled, cuda/tiled.h) emulated block by block — tile, then per channel chunk the shared-memory
 *    load for every thread and the compute for every thread, then the stores — with shared memory
 *    sized by the plan and refilled with NaN before each load (a read outside the loaded halo shows):
 *    qk, av and both backwards on the sweep (falling back to v0 where v2 does not apply, as the
 *    dispatcher does; most 1-D/2-D cases do apply), 1e-4;
 *  - v3 (tensor cores, cuda/tensorcore.h / cuda/tensorcore_bwd.h) emulated warp by warp with the host model of
 *    mma.sync (fragments interpreted through the coordinate functions, 16-bit inputs, f32 products and
 *    sums) and of the quad shuffles: the fused forward, and the backward's dq and dk/dv kernels (dq, dk,
 *    dv, drpb), on the sweep's 1-D/2-D cases with head dims 32 and 64, bf16 and f16, against the double
 *    reference on the rounded inputs, 2e-2 relative; the fragment coordinate
 *    functions cover each matrix exactly once;
 *  - the kernel tables: no CUDA table without CUDA ("built without CUDA"), or (CUDA builds) the table and
 *    validation of the problem before any device work; the autograd ops refuse an unusable device.
 * GPU part, when a device is present (suite "na_cuda_gpu"): every version's kernels (v0, v2, the dispatcher;
 * v1; v3 forward and backward in bf16 and f16) on the device against na_ref_*
 * and na_cpu_* on the same sweep (1e-4 relative), garbage-filled outputs (overwritten, not accumulated),
 * bitwise determinism of the backward passes, and the autograd ops (fused nat_na; nat_na_qk -> softmax ->
 * nat_na_av; a strided input) end to end on CUDA tensors against the CPU, for each forced version
 * (NAT_NA_KERNEL), plus kernels 13 and 21 and a 128x128 map with the gradient of every input.
 *
 * Without a usable device the host part still runs; when it passes the program prints
 * "SKIPPED: no CUDA device ..." and exits 77 (ctest: Skipped), never "passed". Runs with CK_NOFORK
 * (CUDA must be initialised in the process that uses it). One case: CK_RUN_CASE=<name>; another data
 * seed: NAT_TEST_SEED=<n> (printed with every failure).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"                 /* nat_cuda_memcpy: raw device buffers */
#include "layers/natten/cpu/na_cpu.h"
#include "layers/natten/na_backend.h"
#include "layers/natten/cuda/body.h"   /* the kernels' bodies, run here on the host */
#include "layers/natten/cuda/tensorcore_bwd.h"    /* v3's forward and backward warp bodies (and v2's via them) */
#include "tests/ref/na_ref.h"
#include "nat/cuda.h"
#include "nat/natten.h"
#include "support/harness.h"
#include "support/na_cases.h"                /* the sweep of both NA tests, its data, na_rel_err */

#define TOL 1e-4 /* fp32 vs double reference, relative to the reference's max |value| */
#define TOL16 2e-2 /* v3 (bf16 / f16 operands) vs the double reference on the rounded inputs */

static const nat_device GPU = {NAT_DEV_CUDA, 0};

static void expect_close(const char *impl, const char *what, const float *got, const double *ref, int64_t n,
                         const na_case *c)
{
    double e = na_rel_err(got, ref, n);
    if (!(e <= TOL)) {
        char d[256];
        na_case_describe(c, d, sizeof d);
        ck_abort_msg("%s %s: relative error %.3g > %.1g [%s]", impl, what, e, TOL, d);
    }
}

/* got against the fp32 CPU kernels' result too (same measure, the CPU result as reference). */
static void expect_close_f(const char *impl, const char *what, const float *got, const float *cpu, int64_t n,
                           const na_case *c)
{
    double *x = na_to_double(cpu, n);
    char w[96];
    snprintf(w, sizeof w, "%s (vs na_cpu)", what);
    expect_close(impl, w, got, x, n, c);
    free(x);
}

#define EXPECT_OK(call, c)                                                                        \
    do {                                                                                          \
        nat_status s_ = (call);                                                                   \
        if (s_ != NAT_OK) {                                                                       \
            char d_[256];                                                                         \
            na_case_describe((c), d_, sizeof d_);                                                         \
            ck_abort_msg("%s failed: %s [%s]", #call, nat_error_message(), d_);                   \
        }                                                                                         \
    } while (0)

static float *fbuf(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double *dbuf(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }

static float *garbage(int64_t n, float v)
{
    float *x = fbuf(n);
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
    return x;
}

#define CASE_ARGS(c, p) &(p), (c)->batch, (c)->heads, (c)->len, (c)->dim
#define CASE_PB(c, p) na_case_problem((c), &(p)) /* what the fast CPU kernels take */

/* The kernels' view of a problem as the ops build it: validated once (na_problem_init, its messages),
 * then na_geom_init (the CUDA range check). */
static nat_status test_geom(na_geom *g, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                            int has_rpb, const char *op)
{
    na_problem pb;
    NAT_TRY(na_problem_init(&pb, p, B, H, sp, D, has_rpb, op));
    return na_geom_init(g, &pb, op);
}

/* ------------------------------------------------------------------------------------------------ */
/* Implementations under test, behind cpu/na_cpu.h's signatures (host pointers in and out)               */

typedef struct na_impl {
    const char *name;
    nat_status (*qk)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *, const float *,
                     const float *, float *);
    nat_status (*av)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *, const float *,
                     float *);
    nat_status (*qk_bwd)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *,
                         const float *, const float *, float *, float *, float *);
    nat_status (*av_bwd)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *,
                         const float *, const float *, float *, float *);
    nat_status (*fused_fwd)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *,
                            const float *, const float *, const float *, float *, float *);
    nat_status (*fused_bwd)(const nat_na_params *, int64_t, int64_t, const int64_t *, int64_t, const float *,
                            const float *, const float *, const float *, const float *, const float *, const float *,
                            float *, float *, float *, float *);
} na_impl;

/* ---- the kernels' bodies on the host: the same index spaces and sequences as the .cu wrappers ---- */

static void emu_drpb(const na_geom *g, const float *src, float *drpb)
{
    const int64_t nhr = (int64_t)g->heads * g->rpb_size, np = nhr * na_drpb_chunks(g);
    double *part = dbuf(np);
    for (int64_t i = 0; i < np; i++)
        na_drpb_part_body(g, src, part, i);
    for (int64_t i = 0; i < nhr; i++)
        na_drpb_final_body(g, part, drpb, i);
    free(part);
}

static nat_status emu_qk(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D, const float *q,
                         const float *k, const float *rpb, float *attn)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL, "emu_qk"));
    for (int64_t i = 0; i < g.nquery * g.nkeys; i++)
        na_slot_dot_body(&g, q, k, g.scale, rpb, -INFINITY, attn, i);
    return NAT_OK;
}

static nat_status emu_av(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                         const float *attn, const float *v, float *out)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, 0, "emu_av"));
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_window_sum_body(&g, attn, v, 1.0f, out, i);
    return NAT_OK;
}

static nat_status emu_qk_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                             const float *d_attn, const float *q, const float *k, float *dq, float *dk, float *drpb)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, drpb != NULL, "emu_qk_bwd"));
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_window_sum_body(&g, d_attn, k, g.scale, dq, i);
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_gather_body(&g, d_attn, q, g.scale, dk, i);
    if (drpb)
        emu_drpb(&g, d_attn, drpb);
    return NAT_OK;
}

static nat_status emu_av_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                             const float *d_out, const float *attn, const float *v, float *d_attn, float *dv)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, 0, "emu_av_bwd"));
    for (int64_t i = 0; i < g.nquery * g.nkeys; i++)
        na_slot_dot_body(&g, d_out, v, 1.0f, NULL, 0.0f, d_attn, i);
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_gather_body(&g, attn, d_out, 1.0f, dv, i);
    return NAT_OK;
}

static nat_status emu_fused_fwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                                const float *q, const float *k, const float *v, const float *rpb, float *out,
                                float *lse)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL, "emu_fused_fwd"));
    for (int64_t i = 0; i < na_fused_chunks(&g) * g.nquery; i++)
        na_fused_fwd_body(&g, q, k, v, rpb, out, lse, i);
    return NAT_OK;
}

static nat_status emu_fused_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                                const float *q, const float *k, const float *v, const float *rpb, const float *out,
                                const float *lse, const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    na_geom g;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL || drpb != NULL, "emu_fused_bwd"));
    const int64_t nq = g.nquery, nt = na_fused_chunks(&g) * nq;
    float *delta = fbuf(nq), *ds = drpb ? garbage(nq * g.nkeys, NAN) : NULL;
    for (int64_t i = 0; i < nq; i++)
        na_fused_delta_body(&g, d_out, out, delta, i);
    for (int64_t i = 0; i < nt; i++)
        na_fused_dq_body(&g, q, k, v, rpb, lse, delta, d_out, dq, ds, i);
    for (int64_t i = 0; i < nt; i++)
        na_fused_dkdv_body(&g, q, k, v, rpb, lse, delta, d_out, dk, dv, i);
    if (drpb)
        emu_drpb(&g, ds, drpb);
    free(delta);
    free(ds);
    return NAT_OK;
}

static const na_impl EMU = {"emulated", emu_qk, emu_av, emu_qk_bwd, emu_av_bwd, emu_fused_fwd, emu_fused_bwd};

/* ---- v2 on the host: block by block, in the kernel's phase order ---- */

static int g_v2_applied; /* cases v2 applied to (the sweep must exercise it) */

static void emu_v2_dot(const na_geom *g, const na_v2_plan *pl, const float *a, const float *b, const float *rpb,
                       float scale, float masked, float *out)
{
    const int nt = NA_V2_THREADS;
    const int nsm = (int)((unsigned)pl->smem_bytes / sizeof(float));
    float *sm = fbuf(nsm), *acc = fbuf(nt * NA_V2_PER);
    for (int64_t blk = 0; blk < pl->nblocks; blk++) {
        na_v2_tile t;
        na_v2_tile_at(g, pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        ck_assert(t.he[0] <= pl->hmax[0] && t.he[1] <= pl->hmax[1]);
        memset(acc, 0, sizeof(float) * (size_t)(nt * NA_V2_PER));
        for (int c0 = 0; c0 < g->dim; c0 += NA_V2_CH) {
            const int dc = g->dim - c0 < NA_V2_CH ? g->dim - c0 : NA_V2_CH;
            for (int i = 0; i < nsm; i++)
                sm[i] = NAN;
            for (int tid = 0; tid < nt; tid++)
                na_v2_load_body(g, &t, b, c0, dc, sm, tid, nt);
            for (int tid = 0; tid < nt; tid++)
                na_v2_dot_chunk_body(g, &t, a, c0, dc, sm, acc + tid * NA_V2_PER, tid, nt);
        }
        for (int tid = 0; tid < nt; tid++)
            na_v2_dot_store_body(g, &t, scale, rpb, masked, acc + tid * NA_V2_PER, out, tid, nt);
    }
    free(sm), free(acc);
}

static void emu_v2_sum(const na_geom *g, const na_v2_plan *pl, const float *coef, const float *src, float factor,
                       float *out)
{
    const int nt = NA_V2_THREADS;
    const int nsm = (int)((unsigned)pl->smem_bytes / sizeof(float));
    float *sm = fbuf(nsm);
    for (int64_t blk = 0; blk < pl->nblocks; blk++) {
        na_v2_tile t;
        na_v2_tile_at(g, pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        for (int c0 = 0; c0 < g->dim; c0 += NA_V2_CH) {
            const int dc = g->dim - c0 < NA_V2_CH ? g->dim - c0 : NA_V2_CH;
            for (int i = 0; i < nsm; i++)
                sm[i] = NAN;
            for (int tid = 0; tid < nt; tid++)
                na_v2_load_body(g, &t, src, c0, dc, sm, tid, nt);
            for (int tid = 0; tid < nt; tid++)
                na_v2_sum_chunk_body(g, &t, coef, factor, c0, dc, sm, out, tid, nt);
        }
    }
    free(sm);
}

static nat_status emu2_qk(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D, const float *q,
                          const float *k, const float *rpb, float *attn)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL, "emu2_qk"));
    if (!na_v2_plan_init(&g, 1, &pl))
        return emu_qk(p, B, H, sp, D, q, k, rpb, attn);
    g_v2_applied++;
    emu_v2_dot(&g, &pl, q, k, rpb, g.scale, -INFINITY, attn);
    return NAT_OK;
}

static nat_status emu2_av(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                          const float *attn, const float *v, float *out)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, 0, "emu2_av"));
    if (!na_v2_plan_init(&g, 0, &pl))
        return emu_av(p, B, H, sp, D, attn, v, out);
    g_v2_applied++;
    emu_v2_sum(&g, &pl, attn, v, 1.0f, out);
    return NAT_OK;
}

static nat_status emu2_qk_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                              const float *d_attn, const float *q, const float *k, float *dq, float *dk, float *drpb)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, drpb != NULL, "emu2_qk_bwd"));
    if (!na_v2_plan_init(&g, 0, &pl))
        return emu_qk_bwd(p, B, H, sp, D, d_attn, q, k, dq, dk, drpb);
    g_v2_applied++;
    emu_v2_sum(&g, &pl, d_attn, k, g.scale, dq);
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_gather_body(&g, d_attn, q, g.scale, dk, i);
    if (drpb)
        emu_drpb(&g, d_attn, drpb);
    return NAT_OK;
}

static nat_status emu2_av_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                              const float *d_out, const float *attn, const float *v, float *d_attn, float *dv)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, 0, "emu2_av_bwd"));
    if (!na_v2_plan_init(&g, 1, &pl))
        return emu_av_bwd(p, B, H, sp, D, d_out, attn, v, d_attn, dv);
    g_v2_applied++;
    emu_v2_dot(&g, &pl, d_out, v, NULL, 1.0f, 0.0f, d_attn);
    for (int64_t i = 0; i < g.nquery * g.dim; i++)
        na_gather_body(&g, attn, d_out, 1.0f, dv, i);
    return NAT_OK;
}

static const na_impl EMU_V2 = {"emulated v2", emu2_qk, emu2_av, emu2_qk_bwd, emu2_av_bwd, emu_fused_fwd,
                               emu_fused_bwd};

/* ---- v3 on the host: warps emulated with all 32 lanes, blocks in the kernel's phase order ---- */

static uint16_t *to_half(const float *x, int64_t n, int f16)
{
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        h[i] = half_from_f32(x[i], f16);
    return h;
}

static nat_status emu3_fwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, float *out,
                           float *lse)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL, "emu3_fwd"));
    if (!na_v3_plan_init(&g, &pl))
        return nat_error(NAT_ERR_UNSUPPORTED, "emu3_fwd: v3 does not apply");
    const int dim = g.dim;
    uint16_t *ks = malloc(sizeof(uint16_t) * NA_V3_PIECE * (size_t)(dim + NA_V3_PAD));
    uint16_t *vts = malloc(sizeof(uint16_t) * (size_t)dim * NA_V3_VS);
    na_v3_warp *W = malloc(sizeof(na_v3_warp) * NA_V3_WARPS);
    for (int64_t blk = 0; blk < pl.nblocks; blk++) {
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3_warp_init(&g, &t, q, f16, w, &W[w], 0, dim);
        const int nh = t.he[0] * t.he[1];
        for (int pb = 0; pb < nh; pb += NA_V3_PIECE) {
            memset(ks, 0xff, sizeof(uint16_t) * NA_V3_PIECE * (size_t)(dim + NA_V3_PAD)); /* NaN bits */
            memset(vts, 0xff, sizeof(uint16_t) * (size_t)dim * NA_V3_VS);
            for (int tid = 0; tid < NA_V3_THREADS; tid++)
                na_v3_load_body(&g, &t, k, v, pb, ks, vts, tid, NA_V3_THREADS, dim);
            for (int w = 0; w < NA_V3_WARPS; w++)
                na_v3_piece(&g, &t, f16, ks, vts, pb, rpb, &W[w], 0, dim);
        }
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3_store(&g, &W[w], out, lse, 0, dim);
    }
    free(ks), free(vts), free(W);
    return NAT_OK;
}

/* v3's backward on the host: delta, the dq kernel's blocks, the dk/dv kernel's blocks, drpb. */
static nat_status emu3_bwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, const float *out,
                           const float *lse, const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    na_geom g;
    na_v2_plan pl;
    NAT_TRY(test_geom(&g, p, B, H, sp, D, rpb != NULL || drpb != NULL, "emu3_bwd"));
    if (!na_v3_plan_init(&g, &pl))
        return nat_error(NAT_ERR_UNSUPPORTED, "emu3_bwd: v3 does not apply");
    const int dim = g.dim;
    const int64_t nq = g.nquery;
    float *delta = fbuf(nq), *ds = drpb ? garbage(nq * g.nkeys, NAN) : NULL;
    for (int64_t i = 0; i < nq; i++)
        na_fused_delta_body(&g, d_out, out, delta, i);
    uint16_t *dout16 = malloc(sizeof(uint16_t) * (size_t)(nq * dim));
    for (int64_t i = 0; i < nq * dim; i++)
        dout16[i] = half_from_f32(d_out[i], f16);
    const size_t nrow = (size_t)NA_V3_PIECE * (size_t)(dim + NA_V3_PAD), ncol = (size_t)dim * NA_V3_VS;
    uint16_t *s1 = malloc(sizeof(uint16_t) * nrow), *s2 = malloc(sizeof(uint16_t) * nrow);
    uint16_t *s3 = malloc(sizeof(uint16_t) * ncol), *s4 = malloc(sizeof(uint16_t) * ncol);
    na_v3k_query *qi = malloc(sizeof(na_v3k_query) * NA_V3_PIECE);
    na_v3q_warp *WQ = malloc(sizeof(na_v3q_warp) * NA_V3_WARPS);
    na_v3k_warp *WK = malloc(sizeof(na_v3k_warp) * NA_V3_WARPS);
    for (int64_t blk = 0; blk < pl.nblocks; blk++) { /* the dq kernel */
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3q_warp_init(&g, &t, q, dout16, lse, delta, w, &WQ[w], 0, dim);
        for (int pb = 0; pb < t.he[0] * t.he[1]; pb += NA_V3_PIECE) {
            memset(s1, 0xff, sizeof(uint16_t) * nrow); /* NaN bits: a read outside the load shows */
            memset(s2, 0xff, sizeof(uint16_t) * nrow);
            memset(s3, 0xff, sizeof(uint16_t) * ncol);
            for (int tid = 0; tid < NA_V3_THREADS; tid++)
                na_v3q_load_body(&g, &t, k, v, pb, s1, s2, s3, tid, NA_V3_THREADS, dim);
            for (int w = 0; w < NA_V3_WARPS; w++)
                na_v3q_piece(&g, &t, f16, s1, s2, s3, pb, rpb, ds, &WQ[w], 0, dim);
        }
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3q_store(&g, &WQ[w], dq, 0, dim);
    }
    for (int64_t blk = 0; blk < pl.nblocks; blk++) { /* the dk/dv kernel */
        na_v2_tile t;
        na_v3k_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3k_warp_init(&g, &t, k, v, w, &WK[w], 0, dim);
        for (int pb = 0; pb < t.he[0] * t.he[1]; pb += NA_V3_PIECE) {
            memset(s1, 0xff, sizeof(uint16_t) * nrow);
            memset(s2, 0xff, sizeof(uint16_t) * nrow);
            memset(s3, 0xff, sizeof(uint16_t) * ncol);
            memset(s4, 0xff, sizeof(uint16_t) * ncol);
            memset(qi, 0xff, sizeof(na_v3k_query) * NA_V3_PIECE);
            for (int tid = 0; tid < NA_V3_THREADS; tid++)
                na_v3k_load_body(&g, &t, q, dout16, lse, delta, pb, s1, s2, s3, s4, qi, tid, NA_V3_THREADS, dim);
            for (int w = 0; w < NA_V3_WARPS; w++)
                na_v3k_piece(&g, &t, f16, s1, s2, s3, s4, qi, pb, rpb, &WK[w], 0, dim);
        }
        for (int w = 0; w < NA_V3_WARPS; w++)
            na_v3k_store(&g, &WK[w], dk, dv, 0, dim);
    }
    if (drpb)
        emu_drpb(&g, ds, drpb);
    free(delta), free(ds), free(dout16), free(s1), free(s2), free(s3), free(s4), free(qi), free(WQ), free(WK);
    return NAT_OK;
}

static nat_status dev3_bwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, const float *out,
                           const float *lse, const float *d_out, float *dq, float *dk, float *dv, float *drpb);

/* The device's v3, from 2-byte host buffers (set only with a device). */
static nat_status dev3_fwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, float *out,
                           float *lse);

/* v3 (emulated or on the device) on case c with head dim D, inputs rounded to bf16 / f16, against the
 * double reference on the rounded inputs: the forward, and with bwd the backward from the reference's
 * out and lse (dq, dk, dv, and drpb when the case has a bias). Returns 0 when v3 does not apply. */
static int run_v3(int on_device, const na_case *c0, int64_t D, int f16, int bwd)
{
    na_case cc = *c0;
    cc.dim = D;
    const na_case *c = &cc;
    nat_na_params p = na_case_params(c);
    na_geom g;
    na_v2_plan pl;
    if (test_geom(&g, &p, c->batch, c->heads, c->len, D, c->rpb, "t") != NAT_OK || !na_v3_plan_init(&g, &pl))
        return 0;
    na_data dt;
    na_data_init(&dt, c, 7);
    for (int64_t i = 0; i < dt.nqkv; i++) {
        float *x[3] = {dt.q, dt.k, dt.v};
        double *xd[3] = {dt.qd, dt.kd, dt.vd};
        for (int j = 0; j < 3; j++) {
            x[j][i] = f16 ? half_round_f16(x[j][i]) : half_round_bf16(x[j][i]);
            xd[j][i] = x[j][i];
        }
    }
    uint16_t *qh = to_half(dt.q, dt.nqkv, f16), *kh = to_half(dt.k, dt.nqkv, f16), *vh = to_half(dt.v, dt.nqkv, f16);
    double *orf = dbuf(dt.nqkv), *lr = dbuf(dt.nlse);
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, c->rpb ? dt.rpbd : NULL, orf, lr), c);
    const char *name = on_device ? (f16 ? "cuda v3 f16" : "cuda v3 bf16") : (f16 ? "emulated v3 f16" : "emulated v3 bf16");
    char d[256];
    na_case_describe(c, d, sizeof d);
    if (!bwd) {
        float *o = garbage(dt.nqkv, 1e3f), *l = garbage(dt.nlse, 1e3f);
        if (on_device)
            EXPECT_OK(dev3_fwd(f16, CASE_ARGS(c, p), qh, kh, vh, c->rpb ? dt.rpb : NULL, o, l), c);
        else
            EXPECT_OK(emu3_fwd(f16, CASE_ARGS(c, p), qh, kh, vh, c->rpb ? dt.rpb : NULL, o, l), c);
        double eo = na_rel_err(o, orf, dt.nqkv), el = na_rel_err(l, lr, dt.nlse);
        if (!(eo <= TOL16 && el <= TOL16))
            ck_abort_msg("%s fused_forward: relative error out %.3g, lse %.3g > %.1g [%s]", name, eo, el, TOL16, d);
        free(o), free(l);
    } else {
        float *o = fbuf(dt.nqkv), *l = fbuf(dt.nlse);
        for (int64_t i = 0; i < dt.nqkv; i++)
            o[i] = (float)orf[i];
        for (int64_t i = 0; i < dt.nlse; i++)
            l[i] = (float)lr[i];
        const int want_drpb = c->rpb;
        double *dqr = dbuf(dt.nqkv), *dkr = dbuf(dt.nqkv), *dvr = dbuf(dt.nqkv), *drr = dbuf(dt.nrpb);
        EXPECT_OK(na_ref_fused_backward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, c->rpb ? dt.rpbd : NULL, orf, lr,
                                        dt.g_outd, dqr, dkr, dvr, want_drpb ? drr : NULL),
                  c);
        float *gq = garbage(dt.nqkv, 1e3f), *gk = garbage(dt.nqkv, 1e3f), *gv = garbage(dt.nqkv, 1e3f);
        float *gr = garbage(dt.nrpb, 1e3f);
        if (on_device)
            EXPECT_OK(dev3_bwd(f16, CASE_ARGS(c, p), qh, kh, vh, c->rpb ? dt.rpb : NULL, o, l, dt.g_out, gq, gk, gv,
                               want_drpb ? gr : NULL),
                      c);
        else
            EXPECT_OK(emu3_bwd(f16, CASE_ARGS(c, p), qh, kh, vh, c->rpb ? dt.rpb : NULL, o, l, dt.g_out, gq, gk, gv,
                               want_drpb ? gr : NULL),
                      c);
        const double eq = na_rel_err(gq, dqr, dt.nqkv), ek = na_rel_err(gk, dkr, dt.nqkv),
                     ev = na_rel_err(gv, dvr, dt.nqkv), er = want_drpb ? na_rel_err(gr, drr, dt.nrpb) : 0.0;
        if (!(eq <= TOL16 && ek <= TOL16 && ev <= TOL16 && er <= TOL16))
            ck_abort_msg("%s fused_backward: relative error dq %.3g, dk %.3g, dv %.3g, drpb %.3g > %.1g [%s]", name,
                         eq, ek, ev, er, TOL16, d);
        free(o), free(l), free(dqr), free(dkr), free(dvr), free(drr), free(gq), free(gk), free(gv), free(gr);
    }
    free(qh), free(kh), free(vh), free(orf), free(lr);
    na_data_free(&dt);
    return 1;
}

/* The sweep's 1-D / 2-D cases at head dims 32 and 64 (batch*heads at most 2 to keep the emulation
 * short), both 2-byte types; plus maps smaller than a tile and several tiles with dilation. */
static void sweep_v3(int on_device, int bwd)
{
    na_cases_build();
    int ran = 0;
    for (int i = 0; i < na_ncases; i++) {
        na_case c = na_cases[i];
        if (c.ndim > 2)
            continue;
        if (!on_device && c.batch * c.heads > 2)
            c.batch = 1, c.heads = c.heads > 2 ? 2 : c.heads;
        ran += run_v3(on_device, &c, i % 2 ? 64 : 32, i % 3 == 0, bwd);
        if (on_device)
            ran += run_v3(on_device, &c, i % 2 ? 32 : 64, i % 3 != 0, bwd);
    }
    const na_case extra[] = {
        {.ndim = 2, .batch = 1, .heads = 2, .len = {7, 7}, .kernel = {7, 7}, .dilation = {1, 1}, .rpb = 1},
        {.ndim = 2, .batch = 1, .heads = 1, .len = {19, 21}, .kernel = {5, 7}, .dilation = {2, 3}, .rpb = 1},
        {.ndim = 2, .batch = 1, .heads = 1, .len = {17, 18}, .kernel = {7, 5}, .dilation = {1, 2}, .causal = {1, 1}},
        {.ndim = 1, .batch = 2, .heads = 1, .len = {150}, .kernel = {13}, .dilation = {3}, .rpb = 1},
        {.ndim = 1, .batch = 1, .heads = 1, .len = {140}, .kernel = {9}, .dilation = {1}, .causal = {1}},
    };
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        for (int f16 = 0; f16 <= 1; f16++)
            ran += run_v3(on_device, &extra[i], f16 ? 32 : 64, f16, bwd);
    ck_assert_int_ge(ran, 40);
}

/* ---- the CUDA entry points, through device copies of the host buffers (outputs too: their garbage
 * must be overwritten on the device) ---- */

typedef struct dev_sizes {
    int64_t nqkv, natt, nrpb, nlse;
} dev_sizes;

static dev_sizes sizes_of(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D)
{
    int64_t npix = 1, K = 1, R = H;
    for (int a = 0; a < p->ndim; a++) {
        npix *= sp[a];
        K *= p->kernel[a];
        R *= 2 * p->kernel[a] - 1;
    }
    dev_sizes s = {B * H * npix * D, B * H * npix * K, R, B * H * npix};
    return s;
}

static float *up(const float *h, int64_t n)
{
    if (!h)
        return NULL;
    float *d;
    TH_OK(nat_mem_alloc(GPU, sizeof(float) * (size_t)n, (void **)&d));
    TH_OK(nat_cuda_memcpy(0, d, h, sizeof(float) * (size_t)n, NAT_CUDA_H2D));
    return d;
}

/* Copies a device output back to the host and frees the device buffer. */
static void down(float *h, float *d, int64_t n)
{
    if (!d)
        return;
    TH_OK(nat_cuda_memcpy(0, h, d, sizeof(float) * (size_t)n, NAT_CUDA_D2H));
    nat_mem_free(GPU, d, sizeof(float) * (size_t)n);
}

static void drop(const float *d, int64_t n)
{
    if (d)
        nat_mem_free(GPU, (void *)d, sizeof(float) * (size_t)n);
}

/* Which entry points the dev_* wrappers call: 0 the dispatcher (na_cuda_qk, ...), 1 v0's, 2 v2's (v0's
 * where v2 does not apply). */
/* cuda:0's kernels: the CUDA table and its versions (na_backend.h; no direct CUDA symbols, so the file
 * links in a build without CUDA, where the GPU part never runs). */
static const na_backend *cuda_table(void)
{
    const na_backend *be = NULL;
    TH_OK(na_backend_get(0, "test_na_cuda", &be));
    return be;
}
#define CUDA (cuda_table())
#define CUDA_V (cuda_table()->versions)

/* The problem of a device call on cuda:0 (the sweep's cases are valid; the CPU side validated them). */
static const na_problem *dev_pb(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D)
{
    static na_problem pb;
    na_problem_fill(&pb, p, B, H, sp, D);
    pb.device = 0;
    return &pb;
}

static int g_dev_ver;

static int v2_applies(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D, int slot_dot)
{
    na_geom g;
    na_v2_plan pl;
    return test_geom(&g, p, B, H, sp, D, 0, "t") == NAT_OK && na_v2_plan_init(&g, slot_dot, &pl);
}

/* In the dev_* wrappers below (p, B, H, sp, D in scope). */
#define DEV_PICK(name, slot_dot, ...)                                                                        \
    (g_dev_ver == 1   ? CUDA_V->name##_v0(__VA_ARGS__)                                                       \
     : g_dev_ver == 2 ? (v2_applies(p, B, H, sp, D, slot_dot) ? CUDA_V->name##_v2(__VA_ARGS__)                  \
                                                              : CUDA_V->name##_v0(__VA_ARGS__))                 \
                      : CUDA->name(__VA_ARGS__))

static nat_status dev_qk(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D, const float *q,
                         const float *k, const float *rpb, float *attn)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *dq = up(q, z.nqkv), *dk = up(k, z.nqkv), *dr = up(rpb, z.nrpb), *da = up(attn, z.natt);
    nat_status s = DEV_PICK(qk, 1, dev_pb(p, B, H, sp, D), dq, dk, dr, da);
    down(attn, da, z.natt);
    drop(dq, z.nqkv), drop(dk, z.nqkv), drop(dr, z.nrpb);
    return s;
}

static nat_status dev_av(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                         const float *attn, const float *v, float *out)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *da = up(attn, z.natt), *dv = up(v, z.nqkv), *dout = up(out, z.nqkv);
    nat_status s = DEV_PICK(av, 0, dev_pb(p, B, H, sp, D), da, dv, dout);
    down(out, dout, z.nqkv);
    drop(da, z.natt), drop(dv, z.nqkv);
    return s;
}

static nat_status dev_qk_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                             const float *d_attn, const float *q, const float *k, float *dq, float *dk, float *drpb)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *dga = up(d_attn, z.natt), *dq_in = up(q, z.nqkv), *dk_in = up(k, z.nqkv);
    float *odq = up(dq, z.nqkv), *odk = up(dk, z.nqkv), *odr = up(drpb, z.nrpb);
    nat_status s = DEV_PICK(qk_backward, 0, dev_pb(p, B, H, sp, D), dga, dq_in, dk_in, odq, odk, odr);
    down(dq, odq, z.nqkv), down(dk, odk, z.nqkv), down(drpb, odr, z.nrpb);
    drop(dga, z.natt), drop(dq_in, z.nqkv), drop(dk_in, z.nqkv);
    return s;
}

static nat_status dev_av_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                             const float *d_out, const float *attn, const float *v, float *d_attn, float *dv)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *dgo = up(d_out, z.nqkv), *da = up(attn, z.natt), *dvi = up(v, z.nqkv);
    float *oda = up(d_attn, z.natt), *odv = up(dv, z.nqkv);
    nat_status s = DEV_PICK(av_backward, 1, dev_pb(p, B, H, sp, D), dgo, da, dvi, oda, odv);
    down(d_attn, oda, z.natt), down(dv, odv, z.nqkv);
    drop(dgo, z.nqkv), drop(da, z.natt), drop(dvi, z.nqkv);
    return s;
}

static nat_status dev_fused_fwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                                const float *q, const float *k, const float *v, const float *rpb, float *out,
                                float *lse)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *dq = up(q, z.nqkv), *dk = up(k, z.nqkv), *dv = up(v, z.nqkv), *dr = up(rpb, z.nrpb);
    float *dout = up(out, z.nqkv), *dl = up(lse, z.nlse);
    nat_status s = CUDA->fused_forward(dev_pb(p, B, H, sp, D), dq, dk, dv, dr, dout, dl);
    down(out, dout, z.nqkv), down(lse, dl, z.nlse);
    drop(dq, z.nqkv), drop(dk, z.nqkv), drop(dv, z.nqkv), drop(dr, z.nrpb);
    return s;
}

static nat_status dev_fused_bwd(const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                                const float *q, const float *k, const float *v, const float *rpb, const float *out,
                                const float *lse, const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    float *iq = up(q, z.nqkv), *ik = up(k, z.nqkv), *iv = up(v, z.nqkv), *ir = up(rpb, z.nrpb);
    float *io = up(out, z.nqkv), *il = up(lse, z.nlse), *ig = up(d_out, z.nqkv);
    float *odq = up(dq, z.nqkv), *odk = up(dk, z.nqkv), *odv = up(dv, z.nqkv), *odr = up(drpb, z.nrpb);
    nat_status s = CUDA->fused_backward(dev_pb(p, B, H, sp, D), iq, ik, iv, ir, io, il, ig, odq, odk, odv, odr);
    down(dq, odq, z.nqkv), down(dk, odk, z.nqkv), down(dv, odv, z.nqkv), down(drpb, odr, z.nrpb);
    drop(iq, z.nqkv), drop(ik, z.nqkv), drop(iv, z.nqkv), drop(ir, z.nrpb), drop(io, z.nqkv), drop(il, z.nlse);
    drop(ig, z.nqkv);
    return s;
}

static const na_impl GPU_IMPL = {"cuda", dev_qk, dev_av, dev_qk_bwd, dev_av_bwd, dev_fused_fwd, dev_fused_bwd};

/* Device copy of three 2-byte host arrays of n values, one after the other (free 3n values). */
static uint16_t *up_qkv16(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t n)
{
    uint16_t *dh;
    const size_t hb = sizeof(uint16_t) * (size_t)n;
    TH_OK(nat_mem_alloc(GPU, 3 * hb, (void **)&dh));
    TH_OK(nat_cuda_memcpy(0, dh, q, hb, NAT_CUDA_H2D));
    TH_OK(nat_cuda_memcpy(0, dh + n, k, hb, NAT_CUDA_H2D));
    TH_OK(nat_cuda_memcpy(0, dh + 2 * n, v, hb, NAT_CUDA_H2D));
    return dh;
}

static nat_status dev3_fwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, float *out,
                           float *lse)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    const size_t hb = sizeof(uint16_t) * (size_t)z.nqkv;
    uint16_t *dh = up_qkv16(q, k, v, z.nqkv);
    float *dr = up(rpb, z.nrpb), *dout = up(out, z.nqkv), *dl = up(lse, z.nlse);
    nat_status s = CUDA_V->fused_forward_v3(dev_pb(p, B, H, sp, D), f16, dh, dh + z.nqkv, dh + 2 * z.nqkv, dr, dout, dl);
    down(out, dout, z.nqkv), down(lse, dl, z.nlse);
    drop(dr, z.nrpb);
    nat_mem_free(GPU, dh, 3 * hb);
    return s;
}

static nat_status dev3_bwd(int f16, const nat_na_params *p, int64_t B, int64_t H, const int64_t *sp, int64_t D,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *rpb, const float *out,
                           const float *lse, const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    dev_sizes z = sizes_of(p, B, H, sp, D);
    const size_t hb = sizeof(uint16_t) * (size_t)z.nqkv;
    uint16_t *dh = up_qkv16(q, k, v, z.nqkv);
    float *dr = up(rpb, z.nrpb), *io = up(out, z.nqkv), *il = up(lse, z.nlse), *ig = up(d_out, z.nqkv);
    float *odq = up(dq, z.nqkv), *odk = up(dk, z.nqkv), *odv = up(dv, z.nqkv), *odr = up(drpb, z.nrpb);
    nat_status s = CUDA_V->fused_backward_v3(dev_pb(p, B, H, sp, D), f16, dh, dh + z.nqkv, dh + 2 * z.nqkv, dr, io, il, ig,
                                             odq, odk, odv, odr);
    down(dq, odq, z.nqkv), down(dk, odk, z.nqkv), down(dv, odv, z.nqkv), down(drpb, odr, z.nrpb);
    drop(dr, z.nrpb), drop(io, z.nqkv), drop(il, z.nlse), drop(ig, z.nqkv);
    nat_mem_free(GPU, dh, 3 * hb);
    return s;
}

/* ------------------------------------------------------------------------------------------------ */
/* One check per op: an implementation against na_ref (double) and na_cpu (fp32), outputs garbage-filled */

static void run_qk(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 1);
    float *a = garbage(dt.natt, 1e3f), *ac = fbuf(dt.natt);
    double *ar = dbuf(dt.natt);
    EXPECT_OK(na_ref_qk(CASE_ARGS(c, p), dt.qd, dt.kd, c->rpb ? dt.rpbd : NULL, ar), c);
    EXPECT_OK(na_cpu_qk(CASE_PB(c, p), dt.q, dt.k, c->rpb ? dt.rpb : NULL, ac), c);
    EXPECT_OK(im->qk(CASE_ARGS(c, p), dt.q, dt.k, c->rpb ? dt.rpb : NULL, a), c);
    expect_close(im->name, "qk logits", a, ar, dt.natt, c);
    expect_close_f(im->name, "qk logits", a, ac, dt.natt, c);
    free(a), free(ac), free(ar);
    na_data_free(&dt);
}

static void run_av(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 2);
    float *o = garbage(dt.nqkv, 1e3f), *oc = fbuf(dt.nqkv);
    double *orf = dbuf(dt.nqkv);
    EXPECT_OK(na_ref_av(CASE_ARGS(c, p), dt.attd, dt.vd, orf), c);
    EXPECT_OK(na_cpu_av(CASE_PB(c, p), dt.att, dt.v, oc), c);
    EXPECT_OK(im->av(CASE_ARGS(c, p), dt.att, dt.v, o), c);
    expect_close(im->name, "av out", o, orf, dt.nqkv, c);
    expect_close_f(im->name, "av out", o, oc, dt.nqkv, c);
    free(o), free(oc), free(orf);
    na_data_free(&dt);
}

static void run_qk_bwd(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 3);
    float *dq = garbage(dt.nqkv, 1e3f), *dk = garbage(dt.nqkv, 1e3f), *dr = garbage(dt.nrpb, 1e3f);
    float *dqc = fbuf(dt.nqkv), *dkc = fbuf(dt.nqkv), *drc = fbuf(dt.nrpb);
    double *dqr = dbuf(dt.nqkv), *dkr = dbuf(dt.nqkv), *drr = dbuf(dt.nrpb);
    EXPECT_OK(na_ref_qk_backward(CASE_ARGS(c, p), dt.g_attd, dt.qd, dt.kd, dqr, dkr, c->rpb ? drr : NULL), c);
    EXPECT_OK(na_cpu_qk_backward(CASE_PB(c, p), dt.g_att, dt.q, dt.k, dqc, dkc, c->rpb ? drc : NULL), c);
    EXPECT_OK(im->qk_bwd(CASE_ARGS(c, p), dt.g_att, dt.q, dt.k, dq, dk, c->rpb ? dr : NULL), c);
    expect_close(im->name, "qk_backward dq", dq, dqr, dt.nqkv, c);
    expect_close(im->name, "qk_backward dk", dk, dkr, dt.nqkv, c);
    expect_close_f(im->name, "qk_backward dq", dq, dqc, dt.nqkv, c);
    expect_close_f(im->name, "qk_backward dk", dk, dkc, dt.nqkv, c);
    if (c->rpb) {
        expect_close(im->name, "qk_backward drpb", dr, drr, dt.nrpb, c);
        expect_close_f(im->name, "qk_backward drpb", dr, drc, dt.nrpb, c);
    }
    free(dq), free(dk), free(dr), free(dqc), free(dkc), free(drc), free(dqr), free(dkr), free(drr);
    na_data_free(&dt);
}

static void run_av_bwd(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 4);
    float *da = garbage(dt.natt, 1e3f), *dv = garbage(dt.nqkv, 1e3f), *dac = fbuf(dt.natt), *dvc = fbuf(dt.nqkv);
    double *dar = dbuf(dt.natt), *dvr = dbuf(dt.nqkv);
    EXPECT_OK(na_ref_av_backward(CASE_ARGS(c, p), dt.g_outd, dt.attd, dt.vd, dar, dvr), c);
    EXPECT_OK(na_cpu_av_backward(CASE_PB(c, p), dt.g_out, dt.att, dt.v, dac, dvc), c);
    EXPECT_OK(im->av_bwd(CASE_ARGS(c, p), dt.g_out, dt.att, dt.v, da, dv), c);
    expect_close(im->name, "av_backward d_attn", da, dar, dt.natt, c);
    expect_close(im->name, "av_backward dv", dv, dvr, dt.nqkv, c);
    expect_close_f(im->name, "av_backward d_attn", da, dac, dt.natt, c);
    expect_close_f(im->name, "av_backward dv", dv, dvc, dt.nqkv, c);
    for (int64_t i = 0; i < dt.natt; i++)
        if (dar[i] == 0.0 && da[i] != 0.0f) { /* masked slots: exactly zero */
            char d[256];
            na_case_describe(c, d, sizeof d);
            ck_abort_msg("%s av_backward: d_attn[%" PRId64 "] = %g on a masked slot [%s]", im->name, i, (double)da[i], d);
        }
    free(da), free(dv), free(dac), free(dvc), free(dar), free(dvr);
    na_data_free(&dt);
}

static void run_fused_fwd(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 5);
    float *o = garbage(dt.nqkv, 1e3f), *l = garbage(dt.nlse, 1e3f), *oc = fbuf(dt.nqkv), *lc = fbuf(dt.nlse);
    double *orf = dbuf(dt.nqkv), *lr = dbuf(dt.nlse);
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, c->rpb ? dt.rpbd : NULL, orf, lr), c);
    EXPECT_OK(na_cpu_fused_forward(CASE_PB(c, p), dt.q, dt.k, dt.v, c->rpb ? dt.rpb : NULL, oc, lc), c);
    EXPECT_OK(im->fused_fwd(CASE_ARGS(c, p), dt.q, dt.k, dt.v, c->rpb ? dt.rpb : NULL, o, l), c);
    expect_close(im->name, "fused_forward out", o, orf, dt.nqkv, c);
    expect_close(im->name, "fused_forward lse", l, lr, dt.nlse, c);
    expect_close_f(im->name, "fused_forward out", o, oc, dt.nqkv, c);
    expect_close_f(im->name, "fused_forward lse", l, lc, dt.nlse, c);
    free(o), free(l), free(oc), free(lc), free(orf), free(lr);
    na_data_free(&dt);
}

static void run_fused_bwd(const na_impl *im, const na_case *c)
{
    nat_na_params p = na_case_params(c);
    na_data dt;
    na_data_init(&dt, c, 6);
    const int64_t n = dt.nqkv;
    const double *rpbd = c->rpb ? dt.rpbd : NULL;
    const float *rpbf = c->rpb ? dt.rpb : NULL;
    double *orf = dbuf(n), *lr = dbuf(dt.nlse);
    EXPECT_OK(na_ref_fused_forward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr), c);
    float *of = fbuf(n), *lf = fbuf(dt.nlse);
    for (int64_t i = 0; i < n; i++)
        of[i] = (float)orf[i];
    for (int64_t i = 0; i < dt.nlse; i++)
        lf[i] = (float)lr[i];
    double *dqr = dbuf(n), *dkr = dbuf(n), *dvr = dbuf(n), *drr = dbuf(dt.nrpb);
    float *dq = garbage(n, -7.0f), *dk = garbage(n, -7.0f), *dv = garbage(n, -7.0f), *dr = garbage(dt.nrpb, -7.0f);
    float *dqc = fbuf(n), *dkc = fbuf(n), *dvc = fbuf(n), *drc = fbuf(dt.nrpb);
    EXPECT_OK(na_ref_fused_backward(CASE_ARGS(c, p), dt.qd, dt.kd, dt.vd, rpbd, orf, lr, dt.g_outd, dqr, dkr, dvr,
                                    c->rpb ? drr : NULL), c);
    EXPECT_OK(na_cpu_fused_backward(CASE_PB(c, p), dt.q, dt.k, dt.v, rpbf, of, lf, dt.g_out, dqc, dkc, dvc,
                                    c->rpb ? drc : NULL), c);
    EXPECT_OK(im->fused_bwd(CASE_ARGS(c, p), dt.q, dt.k, dt.v, rpbf, of, lf, dt.g_out, dq, dk, dv,
                            c->rpb ? dr : NULL), c);
    expect_close(im->name, "fused_backward dq", dq, dqr, n, c);
    expect_close(im->name, "fused_backward dk", dk, dkr, n, c);
    expect_close(im->name, "fused_backward dv", dv, dvr, n, c);
    expect_close_f(im->name, "fused_backward dq", dq, dqc, n, c);
    expect_close_f(im->name, "fused_backward dk", dk, dkc, n, c);
    expect_close_f(im->name, "fused_backward dv", dv, dvc, n, c);
    if (c->rpb) {
        expect_close(im->name, "fused_backward drpb", dr, drr, dt.nrpb, c);
        expect_close_f(im->name, "fused_backward drpb", dr, drc, dt.nrpb, c);
    }
    free(orf), free(lr), free(of), free(lf), free(dqr), free(dkr), free(dvr), free(drr);
    free(dq), free(dk), free(dv), free(dr), free(dqc), free(dkc), free(dvc), free(drc);
    na_data_free(&dt);
}

static void sweep(const na_impl *im, void (*fn)(const na_impl *, const na_case *))
{
    na_cases_build();
    for (int i = 0; i < na_ncases; i++)
        fn(im, &na_cases[i]);
}

/* ------------------------------------------------------------------------------------------------ */
/* Host: window arithmetic against the reference's windows                                           */

/* Per query i of a 1-D axis and slot t: the key index na_ref_qk uses (-1 when masked), and its rpb
 * index (non-causal only). With D = 1, q = 1, k[j] = j, scale 1 and no rpb a logit is its key index;
 * with k = 0 and rpb[r] = r it is the rpb index. */
static void ref_windows(int L, int k, int d, int causal, int *key, int *ridx)
{
    nat_na_params p = {.ndim = 1, .kernel = {k}, .dilation = {d}, .causal = {causal}, .scale = 1.0f};
    int64_t len = L;
    double *q = dbuf(L), *kk = dbuf(L), *zero = dbuf(L), *r = dbuf(2 * k - 1), *out = dbuf((int64_t)L * k);
    for (int i = 0; i < L; i++)
        q[i] = 1.0, kk[i] = i;
    for (int i = 0; i < 2 * k - 1; i++)
        r[i] = i;
    ck_assert_int_eq(na_ref_qk(&p, 1, 1, &len, 1, q, kk, NULL, out), NAT_OK);
    for (int i = 0; i < L * k; i++)
        key[i] = isinf(out[i]) ? -1 : (int)out[i];
    if (!causal) {
        ck_assert_int_eq(na_ref_qk(&p, 1, 1, &len, 1, q, zero, r, out), NAT_OK);
        for (int i = 0; i < L * k; i++)
            ridx[i] = (int)out[i];
    }
    free(q), free(kk), free(zero), free(r), free(out);
}

/* Calls fn(L, k, d, causal) over kernel sizes 3..21 (odd), dilations 1..4, lengths k*d .. 3*k*d + 3. */
static void for_each_axis(void (*fn)(int L, int k, int d, int causal))
{
    for (int k = 3; k <= 21; k += 2)
        for (int d = 1; d <= 4; d++) {
            if (k > 13 && d > 2)
                continue;
            for (int L = k * d; L <= 3 * k * d + 3; L++)
                for (int causal = 0; causal <= 1; causal++)
                    fn(L, k, d, causal);
        }
}

static void check_window(int L, int k, int d, int causal)
{
    int *key = malloc(sizeof(int) * (size_t)(L * k)), *ridx = malloc(sizeof(int) * (size_t)(L * k));
    ref_windows(L, k, d, causal, key, ridx);
    for (int i = 0; i < L; i++) {
        na_win w = na_axis_window(i, L, k, d, causal);
        for (int t = 0; t < k; t++) {
            int want = key[i * k + t], got = t < w.n ? w.key0 + t * d : -1;
            if (got != want)
                ck_abort_msg("window L=%d k=%d d=%d causal=%d query %d slot %d: key %d, reference %d", L, k,
                             d, causal, i, t, got, want);
            if (!causal && w.rpb0 + t != ridx[i * k + t])
                ck_abort_msg("window L=%d k=%d d=%d query %d slot %d: rpb index %d, reference %d", L, k, d, i, t,
                             w.rpb0 + t, ridx[i * k + t]);
        }
    }
    free(key), free(ridx);
}

/* The inverse neighbourhood of every key, and the slot the kernels derive, equal what the forward
 * windows say: exactly the (query, slot) pairs whose key is y. */
static void check_inverse(int L, int k, int d, int causal)
{
    int *key = malloc(sizeof(int) * (size_t)(L * k)), *ridx = malloc(sizeof(int) * (size_t)(L * k));
    ref_windows(L, k, d, causal, key, ridx);
    for (int y = 0; y < L; y++) {
        na_span s = na_axis_inverse(y, L, k, d, causal);
        if (!(s.lo >= 0 && s.hi <= L && s.lo % d == y % d))
            ck_abort_msg("inverse L=%d k=%d d=%d causal=%d key %d: range [%d, %d) leaves the axis or the group", L, k, d,
                         causal, y, s.lo, s.hi);
        int count = 0;
        for (int i = s.lo; i < s.hi; i += d) {
            na_win w = na_axis_window(i, L, k, d, causal);
            int t = (y - w.key0) / d;
            if (!((y - w.key0) % d == 0 && t >= 0 && t < k && key[i * k + t] == y))
                ck_abort_msg("inverse L=%d k=%d d=%d causal=%d key %d: query %d (in [%d, %d)) does not hold it at slot %d",
                             L, k, d, causal, y, i, s.lo, s.hi, t);
            count++;
        }
        int want = 0;
        for (int i = 0; i < L * k; i++)
            want += key[i] == y;
        if (count != want)
            ck_abort_msg("inverse L=%d k=%d d=%d causal=%d key %d: %d queries in [%d, %d), reference %d", L,
                         k, d, causal, y, count, s.lo, s.hi, want);
    }
    free(key), free(ridx);
}

START_TEST(index_window) { for_each_axis(check_window); }
END_TEST

START_TEST(index_inverse) { for_each_axis(check_inverse); }
END_TEST

/* na_geom: 1-D and 2-D problems become 3-D with leading unit axes of kernel 1 (na_problem's view). */
START_TEST(index_geom)
{
    nat_na_params p = {.ndim = 2, .kernel = {5, 3}, .dilation = {2, 1}, .causal = {0, 1}};
    int64_t sp[2] = {11, 7};
    na_geom g;
    ck_assert_int_eq(test_geom(&g, &p, 3, 2, sp, 40, 0, "t"), NAT_OK);
    ck_assert(g.len[0] == 1 && g.len[1] == 11 && g.len[2] == 7);
    ck_assert(g.kernel[0] == 1 && g.kernel[1] == 5 && g.kernel[2] == 3);
    ck_assert(g.dilation[0] == 1 && g.dilation[1] == 2 && g.causal[2] == 1 && g.causal[1] == 0);
    ck_assert(g.rpb_ext[0] == 1 && g.rpb_ext[1] == 9 && g.rpb_ext[2] == 5 && g.rpb_size == 45);
    ck_assert(g.nkeys == 15 && g.npix == 77 && g.nquery == 3 * 2 * 77 && g.batch == 3 && g.heads == 2);
    ck_assert(fabsf(g.scale - 1.0f / sqrtf(40.0f)) < 1e-7f);
    ck_assert_int_eq(na_fused_chunks(&g), 2);
    ck_assert_int_eq(na_drpb_chunks(&g), 2);
    /* A unit axis: one key, at the query, rpb index 0. */
    na_win w = na_axis_window(0, 1, 1, 1, 0);
    ck_assert(w.key0 == 0 && w.rpb0 == 0 && w.n == 1);
    na_span s = na_axis_inverse(0, 1, 1, 1, 0);
    ck_assert(s.lo == 0 && s.hi == 1);
    /* Validation is the CPU kernels' (same message, the op's name). */
    int64_t s55[2] = {5, 5};
    nat_na_params p7 = {.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}};
    th_expect_error(test_geom(&g, &p7, 1, 1, s55, 8, 0, "na_cuda_qk"), NAT_ERR_SHAPE,
                    "na_cuda_qk: feature map 5x5 is smaller than kernel 7 x dilation 1", NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* Host: the kernels' bodies, emulated, on the sweep                                                  */

START_TEST(emu_qk_sweep) { sweep(&EMU, run_qk); }
END_TEST
START_TEST(emu_av_sweep) { sweep(&EMU, run_av); }
END_TEST
START_TEST(emu_qk_bwd_sweep) { sweep(&EMU, run_qk_bwd); }
END_TEST
START_TEST(emu_av_bwd_sweep) { sweep(&EMU, run_av_bwd); }
END_TEST
START_TEST(emu_fused_fwd_sweep) { sweep(&EMU, run_fused_fwd); }
END_TEST
START_TEST(emu_fused_bwd_sweep) { sweep(&EMU, run_fused_bwd); }
END_TEST

START_TEST(emu_v2_qk_sweep)
{
    g_v2_applied = 0;
    sweep(&EMU_V2, run_qk);
    ck_assert_int_ge(g_v2_applied, 30);
}
END_TEST
START_TEST(emu_v2_av_sweep)
{
    g_v2_applied = 0;
    sweep(&EMU_V2, run_av);
    ck_assert_int_ge(g_v2_applied, 30);
}
END_TEST
START_TEST(emu_v2_qk_bwd_sweep) { sweep(&EMU_V2, run_qk_bwd); }
END_TEST
START_TEST(emu_v2_av_bwd_sweep) { sweep(&EMU_V2, run_av_bwd); }
END_TEST
START_TEST(emu_v3_fwd_sweep) { sweep_v3(0, 0); }
END_TEST

START_TEST(emu_v3_bwd_sweep) { sweep_v3(0, 1); }
END_TEST

/* The PTX ISA's figures for mma.sync.aligned.m16n8k16 (.bf16/.f16 inputs, .f32 accumulators),
 * transcribed as tables: which lane T0..T31 holds each element of A (16x16, row-major), B (16x8, K x N)
 * and C/D (16x8), and as which of its fragment elements (a0..a7, b0..b3, c0..c3). An independent
 * statement of the layout the coordinate functions of cuda/tensorcore.h encode: a swapped pair or a
 * wrong half in them puts an element where the hardware does not. */
static const unsigned char PTX_A_LANE[16][16] = {
    { 0,  0,  1,  1,  2,  2,  3,  3,  0,  0,  1,  1,  2,  2,  3,  3},
    { 4,  4,  5,  5,  6,  6,  7,  7,  4,  4,  5,  5,  6,  6,  7,  7},
    { 8,  8,  9,  9, 10, 10, 11, 11,  8,  8,  9,  9, 10, 10, 11, 11},
    {12, 12, 13, 13, 14, 14, 15, 15, 12, 12, 13, 13, 14, 14, 15, 15},
    {16, 16, 17, 17, 18, 18, 19, 19, 16, 16, 17, 17, 18, 18, 19, 19},
    {20, 20, 21, 21, 22, 22, 23, 23, 20, 20, 21, 21, 22, 22, 23, 23},
    {24, 24, 25, 25, 26, 26, 27, 27, 24, 24, 25, 25, 26, 26, 27, 27},
    {28, 28, 29, 29, 30, 30, 31, 31, 28, 28, 29, 29, 30, 30, 31, 31},
    { 0,  0,  1,  1,  2,  2,  3,  3,  0,  0,  1,  1,  2,  2,  3,  3},
    { 4,  4,  5,  5,  6,  6,  7,  7,  4,  4,  5,  5,  6,  6,  7,  7},
    { 8,  8,  9,  9, 10, 10, 11, 11,  8,  8,  9,  9, 10, 10, 11, 11},
    {12, 12, 13, 13, 14, 14, 15, 15, 12, 12, 13, 13, 14, 14, 15, 15},
    {16, 16, 17, 17, 18, 18, 19, 19, 16, 16, 17, 17, 18, 18, 19, 19},
    {20, 20, 21, 21, 22, 22, 23, 23, 20, 20, 21, 21, 22, 22, 23, 23},
    {24, 24, 25, 25, 26, 26, 27, 27, 24, 24, 25, 25, 26, 26, 27, 27},
    {28, 28, 29, 29, 30, 30, 31, 31, 28, 28, 29, 29, 30, 30, 31, 31},
};
static const unsigned char PTX_A_ELEM[16][16] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
    {2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, 7, 6, 7},
};
static const unsigned char PTX_B_LANE[16][8] = {
    { 0,  4,  8, 12, 16, 20, 24, 28},
    { 0,  4,  8, 12, 16, 20, 24, 28},
    { 1,  5,  9, 13, 17, 21, 25, 29},
    { 1,  5,  9, 13, 17, 21, 25, 29},
    { 2,  6, 10, 14, 18, 22, 26, 30},
    { 2,  6, 10, 14, 18, 22, 26, 30},
    { 3,  7, 11, 15, 19, 23, 27, 31},
    { 3,  7, 11, 15, 19, 23, 27, 31},
    { 0,  4,  8, 12, 16, 20, 24, 28},
    { 0,  4,  8, 12, 16, 20, 24, 28},
    { 1,  5,  9, 13, 17, 21, 25, 29},
    { 1,  5,  9, 13, 17, 21, 25, 29},
    { 2,  6, 10, 14, 18, 22, 26, 30},
    { 2,  6, 10, 14, 18, 22, 26, 30},
    { 3,  7, 11, 15, 19, 23, 27, 31},
    { 3,  7, 11, 15, 19, 23, 27, 31},
};
static const unsigned char PTX_B_ELEM[16][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0},
    {1, 1, 1, 1, 1, 1, 1, 1},
    {0, 0, 0, 0, 0, 0, 0, 0},
    {1, 1, 1, 1, 1, 1, 1, 1},
    {0, 0, 0, 0, 0, 0, 0, 0},
    {1, 1, 1, 1, 1, 1, 1, 1},
    {0, 0, 0, 0, 0, 0, 0, 0},
    {1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2},
    {3, 3, 3, 3, 3, 3, 3, 3},
    {2, 2, 2, 2, 2, 2, 2, 2},
    {3, 3, 3, 3, 3, 3, 3, 3},
    {2, 2, 2, 2, 2, 2, 2, 2},
    {3, 3, 3, 3, 3, 3, 3, 3},
    {2, 2, 2, 2, 2, 2, 2, 2},
    {3, 3, 3, 3, 3, 3, 3, 3},
};
static const unsigned char PTX_C_LANE[16][8] = {
    { 0,  0,  1,  1,  2,  2,  3,  3},
    { 4,  4,  5,  5,  6,  6,  7,  7},
    { 8,  8,  9,  9, 10, 10, 11, 11},
    {12, 12, 13, 13, 14, 14, 15, 15},
    {16, 16, 17, 17, 18, 18, 19, 19},
    {20, 20, 21, 21, 22, 22, 23, 23},
    {24, 24, 25, 25, 26, 26, 27, 27},
    {28, 28, 29, 29, 30, 30, 31, 31},
    { 0,  0,  1,  1,  2,  2,  3,  3},
    { 4,  4,  5,  5,  6,  6,  7,  7},
    { 8,  8,  9,  9, 10, 10, 11, 11},
    {12, 12, 13, 13, 14, 14, 15, 15},
    {16, 16, 17, 17, 18, 18, 19, 19},
    {20, 20, 21, 21, 22, 22, 23, 23},
    {24, 24, 25, 25, 26, 26, 27, 27},
    {28, 28, 29, 29, 30, 30, 31, 31},
};
static const unsigned char PTX_C_ELEM[16][8] = {
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {0, 1, 0, 1, 0, 1, 0, 1},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
    {2, 3, 2, 3, 2, 3, 2, 3},
};

START_TEST(v3_fragment_maps_match_ptx)
{
    int r, c;
    for (int lane = 0; lane < 32; lane++) {
        for (int e = 0; e < 8; e++) {
            na_mma_a_rc(lane, e, &r, &c);
            ck_assert_msg(PTX_A_LANE[r][c] == lane && PTX_A_ELEM[r][c] == e,
                          "A: lane %d a%d maps to (%d, %d), which the PTX layout gives to T%d a%d", lane, e, r, c,
                          PTX_A_LANE[r][c], PTX_A_ELEM[r][c]);
        }
        for (int e = 0; e < 4; e++) {
            na_mma_b_rc(lane, e, &r, &c);
            ck_assert_msg(PTX_B_LANE[r][c] == lane && PTX_B_ELEM[r][c] == e,
                          "B: lane %d b%d maps to (k %d, n %d), which the PTX layout gives to T%d b%d", lane, e, r, c,
                          PTX_B_LANE[r][c], PTX_B_ELEM[r][c]);
            na_mma_c_rc(lane, e, &r, &c);
            ck_assert_msg(PTX_C_LANE[r][c] == lane && PTX_C_ELEM[r][c] == e,
                          "C: lane %d c%d maps to (%d, %d), which the PTX layout gives to T%d c%d", lane, e, r, c,
                          PTX_C_LANE[r][c], PTX_C_ELEM[r][c]);
        }
    }
}
END_TEST

/* The three fragment maps each cover their matrix exactly once (16x16 A, 16x8 B and C), and a P
 * fragment built from two C tiles is the A fragment of the 16-key step (what na_v3_piece relies on). */
START_TEST(v3_fragment_maps)
{
    int a[16][16] = {{0}}, b[16][8] = {{0}}, c[16][8] = {{0}};
    for (int lane = 0; lane < 32; lane++) {
        int r, k;
        for (int e = 0; e < 8; e++) {
            na_mma_a_rc(lane, e, &r, &k);
            a[r][k]++;
            /* A element e at (r, k) = C element (e & 3) of tile e / 4 at (r, k - 8 * (e / 4)) */
            int rc, cc;
            na_mma_c_rc(lane, e & 3, &rc, &cc);
            ck_assert(rc == r && cc + 8 * (e / 4) == k);
        }
        for (int e = 0; e < 4; e++) {
            na_mma_b_rc(lane, e, &k, &r);
            b[k][r]++;
            na_mma_c_rc(lane, e, &r, &k);
            c[r][k]++;
        }
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            ck_assert(a[i][j] == 1 && (j >= 8 || (b[i][j] == 1 && c[i][j] == 1)));
}
END_TEST

/* core/half.h: round to nearest even, ties, subnormals, overflow, NaN. */
START_TEST(half_rounding)
{
    ck_assert_uint_eq(half_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(half_f32_to_bf16(half_bits_f32(0x3f808000u)), 0x3f80); /* tie, even stays */
    ck_assert_uint_eq(half_f32_to_bf16(half_bits_f32(0x3f818000u)), 0x3f82); /* tie, odd rounds up */
    ck_assert_uint_eq(half_f32_to_bf16(half_bits_f32(0x3f808001u)), 0x3f81);
    ck_assert(isnan(half_round_bf16(NAN)));
    ck_assert_uint_eq(half_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(half_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(half_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(half_f32_to_f16(65520.0f), 0x7c00);
    ck_assert_uint_eq(half_f32_to_f16(-1e9f), 0xfc00);
    ck_assert_uint_eq(half_f32_to_f16(5.9604644775390625e-8f), 0x0001);      /* 2^-24 */
    ck_assert_uint_eq(half_f32_to_f16(2.98023223876953125e-8f), 0x0000);     /* 2^-25: tie to even 0 */
    ck_assert_uint_eq(half_f32_to_f16(8.940696716308594e-8f), 0x0002);       /* 1.5 * 2^-24: tie to even 2 */
    ck_assert_uint_eq(half_f32_to_f16(6.103515625e-05f), 0x0400);            /* 2^-14 */
    ck_assert_uint_eq(half_f32_to_f16(half_bits_f32(0x3f801000u)), 0x3c00);    /* tie at the 10th bit, even */
    ck_assert_uint_eq(half_f32_to_f16(half_bits_f32(0x3f803000u)), 0x3c02);
    ck_assert(isnan(half_round_f16(NAN)));
    /* every f16 value survives the round trip; every bf16 too */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff))
            continue; /* NaNs */
        ck_assert_uint_eq(half_f32_to_f16(half_f16_to_f32((uint16_t)h)), h);
        if (!isnan(half_bf16_to_f32((uint16_t)h)))
            ck_assert_uint_eq(half_f32_to_bf16(half_bf16_to_f32((uint16_t)h)), h);
    }
    /* the rounding is to the nearest: the neighbours of x's rounding are farther from x */
    nat_rng r;
    nat_rng_seed(&r, 5);
    for (int i = 0; i < 20000; i++) {
        float x;
        nat_rng_fill_normal(&r, &x, 1, 0.0f, i % 2 ? 1e-5f : 100.0f);
        const uint16_t h = half_f32_to_f16(x);
        const double e = fabs((double)half_f16_to_f32(h) - x);
        ck_assert(e <= fabs((double)half_f16_to_f32((uint16_t)(h + 1)) - x));
        if ((h & 0x7fff) != 0)
            ck_assert(e <= fabs((double)half_f16_to_f32((uint16_t)(h - 1)) - x));
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* Host: entry points and dispatch without a usable device                                           */

START_TEST(entry_points)
{
    const na_backend *be = NULL;
    if (!nat_cuda_built()) {
        /* No CUDA table in this build: asking for one names the op and says why. */
        const char *why = "nat was built without CUDA";
        const char *ops[] = {"na_cuda_qk", "na_cuda_av", "na_cuda_qk_backward", "na_cuda_av_backward",
                             "na_cuda_fused_forward", "na_cuda_fused_backward"};
        for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
            th_expect_error(na_backend_get(0, ops[i], &be), NAT_ERR_UNSUPPORTED, ops[i], why);
        ck_assert_ptr_null(be);
        TH_OK(na_backend_get(-1, "na_cpu", &be));
        ck_assert_str_eq(be->name, "cpu");
        return;
    }
    /* CUDA build: the arguments are checked before any device work, once, where the problem is built
     * (na_problem_init, as the ops do; the kernels trust it). */
    TH_OK(na_backend_get(0, "na_cuda_qk", &be));
    ck_assert_str_eq(be->name, "cuda");
    ck_assert(be->qk && be->av && be->qk_backward && be->av_backward && be->fused_forward && be->fused_backward &&
              be->fused_forward_autocast && be->fused_backward_autocast && be->round);
    na_problem pb;
    nat_na_params p7 = {.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}};
    int64_t s55[2] = {5, 5};
    th_expect_error(na_problem_init(&pb, &p7, 1, 1, s55, 4, 0, "na_cuda_qk"), NAT_ERR_SHAPE,
                    "na_cuda_qk: feature map 5x5 is smaller than kernel 7", NULL);
    th_expect_error(na_problem_init(&pb, &p7, 1, 1, s55, 4, 0, "na_cuda_fused_backward"), NAT_ERR_SHAPE,
                    "na_cuda_fused_backward: feature map 5x5", NULL);
    nat_na_params pc = {.ndim = 1, .kernel = {3}, .dilation = {1}, .causal = {1}};
    int64_t s9[1] = {9};
    th_expect_error(na_problem_init(&pb, &pc, 1, 1, s9, 4, 1, "na_cuda_fused_forward"), NAT_ERR_INVALID_ARG,
                    "na_cuda_fused_forward", "positional bias");
    th_expect_error(na_problem_init(&pb, &pc, 1, 1, s9, 4, 1, "na_cuda_qk_backward"), NAT_ERR_INVALID_ARG,
                    "na_cuda_qk_backward", "causal");
}
END_TEST

/* On a CUDA context whose device cannot be used (no CUDA build, or no device), the NA ops fail with the
 * reason before any kernel could read the (here: host) memory. */
START_TEST(ops_refuse_unusable_device)
{
    if (nat_cuda_available())
        return; /* covered by the GPU suite */
    static float data[1 * 1 * 7 * 7 * 9];
    int64_t s5[5] = {1, 1, 7, 7, 4}, sa[5] = {1, 1, 7, 7, 9};
    nat_tensor *q, *a;
    TH_OK(nat_tensor_wrap(&q, data, NAT_F32, GPU, 5, s5));
    TH_OK(nat_tensor_wrap(&a, data, NAT_F32, GPU, 5, sa));
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, GPU));
    nat_na_params p = nat_na_params_make(2, 3, 1);
    nat_tensor *out = NULL;
    const char *why = nat_cuda_built() ? "no CUDA device" : "nat was built without CUDA";
    th_expect_error(nat_na(ctx, q, q, q, NULL, &p, &out), NAT_ERR_UNSUPPORTED, "na2d", why);
    th_expect_error(nat_na_qk(ctx, q, q, NULL, &p, &out), NAT_ERR_UNSUPPORTED, "na_qk", why);
    th_expect_error(nat_na_av(ctx, a, q, &p, &out), NAT_ERR_UNSUPPORTED, "na_av", why);
    ck_assert_ptr_null(out);
    /* A CPU tensor on a CUDA context is a device mismatch, named as such. */
    nat_tensor *h;
    TH_OK(nat_tensor_new(&h, NAT_F32, NAT_CPU, 5, s5));
    th_expect_error(nat_na(ctx, h, h, h, NULL, &p, &out), NAT_ERR_INVALID_ARG, "q is on cpu",
                    "the context runs on cuda:0");
    nat_tensor_free(h);
    nat_tensor_free(q);
    nat_tensor_free(a);
    nat_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */
/* GPU                                                                                                */

START_TEST(gpu_qk) { sweep(&GPU_IMPL, run_qk); }
END_TEST
START_TEST(gpu_av) { sweep(&GPU_IMPL, run_av); }
END_TEST
START_TEST(gpu_qk_bwd) { sweep(&GPU_IMPL, run_qk_bwd); }
END_TEST
START_TEST(gpu_av_bwd) { sweep(&GPU_IMPL, run_av_bwd); }
END_TEST
START_TEST(gpu_fused_fwd) { sweep(&GPU_IMPL, run_fused_fwd); }
END_TEST
START_TEST(gpu_fused_bwd) { sweep(&GPU_IMPL, run_fused_bwd); }
END_TEST

/* v0 and v2 entry points one by one (the cases above go through the dispatcher). */
static void sweep_ver(int ver, void (*fn)(const na_impl *, const na_case *))
{
    g_dev_ver = ver;
    sweep(&GPU_IMPL, fn);
    g_dev_ver = 0;
}

START_TEST(gpu_v0_all)
{
    sweep_ver(1, run_qk), sweep_ver(1, run_av), sweep_ver(1, run_qk_bwd), sweep_ver(1, run_av_bwd);
}
END_TEST
START_TEST(gpu_v2_all)
{
    sweep_ver(2, run_qk), sweep_ver(2, run_av), sweep_ver(2, run_qk_bwd), sweep_ver(2, run_av_bwd);
}
END_TEST
START_TEST(gpu_v3_fwd) { sweep_v3(1, 0); }
END_TEST

START_TEST(gpu_v3_bwd) { sweep_v3(1, 1); }
END_TEST

/* Two identical calls give the same bits: dk/dv gathers and the drpb reduction have a fixed order. */
START_TEST(gpu_determinism)
{
    const na_case cases[] = {
        {.ndim = 2, .batch = 2, .heads = 3, .len = {15, 13}, .dim = 32, .kernel = {7, 7}, .dilation = {1, 1},
         .rpb = 1},
        {.ndim = 2, .batch = 1, .heads = 1, .len = {16, 12}, .dim = 48, .kernel = {5, 3}, .dilation = {2, 3},
         .rpb = 1},
        {.ndim = 3, .batch = 2, .heads = 1, .len = {6, 7, 8}, .dim = 16, .kernel = {3, 3, 5}, .dilation = {1, 2, 1},
         .rpb = 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const na_case *c = &cases[ci];
        nat_na_params p = na_case_params(c);
        na_data dt;
        na_data_init(&dt, c, 9);
        const int64_t n = dt.nqkv;
        float *o = fbuf(n), *l = fbuf(dt.nlse);
        EXPECT_OK(dev_fused_fwd(CASE_ARGS(c, p), dt.q, dt.k, dt.v, dt.rpb, o, l), c);
        float *g[2][7];
        for (int run = 0; run < 2; run++) {
            for (int i = 0; i < 7; i++)
                g[run][i] = fbuf(i == 3 || i == 6 ? dt.nrpb : n);
            EXPECT_OK(dev_fused_bwd(CASE_ARGS(c, p), dt.q, dt.k, dt.v, dt.rpb, o, l, dt.g_out, g[run][0], g[run][1],
                                    g[run][2], g[run][3]), c);
            EXPECT_OK(dev_qk_bwd(CASE_ARGS(c, p), dt.g_att, dt.q, dt.k, g[run][4], g[run][5], g[run][6]), c);
        }
        char d[256];
        na_case_describe(c, d, sizeof d);
        for (int i = 0; i < 7; i++)
            ck_assert_msg(!memcmp(g[0][i], g[1][i], sizeof(float) * (size_t)(i == 3 || i == 6 ? dt.nrpb : n)),
                          "backward output %d differs between two identical calls [%s]", i, d);
        for (int run = 0; run < 2; run++)
            for (int i = 0; i < 7; i++)
                free(g[run][i]);
        free(o), free(l);
        na_data_free(&dt);
    }
}
END_TEST

/* ---- the autograd ops end to end: CUDA tensors against the CPU ---- */

typedef nat_status (*op_fn)(nat_ctx *ctx, nat_tensor **in, const nat_na_params *p, nat_tensor **out);

static float *host_values(const nat_tensor *t)
{
    nat_tensor *h;
    TH_OK(nat_tensor_to(NULL, t, NAT_CPU, &h));
    int64_t n = nat_tensor_numel(h);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    memcpy(v, nat_tensor_f32(h), (size_t)n * sizeof *v);
    nat_tensor_free(h);
    return v;
}

/* f on `dev` from copies of `in` (all requiring gradients); loss = sum(out * R), R fixed. */
static void run_on(nat_device dev, op_fn f, const nat_na_params *p, int n_in, nat_tensor **in, float **out_v,
                   int64_t *out_n, float **grads)
{
    nat_tensor *x[4];
    for (int i = 0; i < n_in; i++) {
        TH_OK(nat_tensor_to(NULL, in[i], dev, &x[i]));
        nat_set_requires_grad(x[i], true);
    }
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, dev));
    nat_tensor *y;
    TH_OK(f(ctx, x, p, &y));
    *out_v = host_values(y);
    *out_n = nat_tensor_numel(y);
    th_backward_random_projection(ctx, y, dev, 77);
    for (int i = 0; i < n_in; i++) {
        ck_assert_msg(x[i]->grad != NULL, "input %d got no gradient on %s", i, nat_device_name(dev));
        grads[i] = host_values(x[i]->grad);
    }
    nat_ctx_free(ctx);
    for (int i = 0; i < n_in; i++)
        nat_tensor_free(x[i]);
}

static void compare_op(const char *what, op_fn f, const nat_na_params *p, int n_in, nat_tensor **in)
{
    float *yc, *yg, *gc[4], *gg[4];
    int64_t nc, ng;
    run_on(NAT_CPU, f, p, n_in, in, &yc, &nc, gc);
    run_on(GPU, f, p, n_in, in, &yg, &ng, gg);
    ck_assert_int_eq(nc, ng);
    char msg[160];
    snprintf(msg, sizeof msg, "%s: forward", what);
    th_assert_close_f(yg, yc, nc, TOL, msg);
    for (int i = 0; i < n_in; i++) {
        snprintf(msg, sizeof msg, "%s: gradient of input %d", what, i);
        th_assert_close_f(gg[i], gc[i], nat_tensor_numel(in[i]), TOL, msg);
        free(gc[i]), free(gg[i]);
    }
    free(yc), free(yg);
}

static nat_status f_fused(nat_ctx *c, nat_tensor **x, const nat_na_params *p, nat_tensor **o)
{
    return nat_na(c, x[0], x[1], x[2], p->causal[0] || p->causal[1] || p->causal[2] ? NULL : x[3], p, o);
}

static nat_status f_unfused(nat_ctx *c, nat_tensor **x, const nat_na_params *p, nat_tensor **o)
{
    nat_tensor *a, *w;
    NAT_TRY(nat_na_qk(c, x[0], x[1], p->causal[0] || p->causal[1] || p->causal[2] ? NULL : x[3], p, &a));
    NAT_TRY(nat_softmax(c, a, &w));
    return nat_na_av(c, w, x[2], p, o);
}

/* q arrives as a transposed (strided) view [B, heads, W, H, D] -> [B, heads, H, W, D]: dense on the device. */
static nat_status f_strided(nat_ctx *c, nat_tensor **x, const nat_na_params *p, nat_tensor **o)
{
    const int perm[5] = {0, 1, 3, 2, 4};
    nat_tensor *qt;
    NAT_TRY(nat_permute(c, x[0], perm, &qt));
    return nat_na(c, qt, x[1], x[2], x[3], p, o);
}

START_TEST(gpu_autograd)
{
    struct {
        nat_na_params p;
        int64_t shape[6];
        op_fn f;
        const char *what;
    } cases[] = {
        {{.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}}, {2, 2, 14, 13, 32}, f_fused, "na2d k7 rpb (fused)"},
        {{.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}}, {2, 2, 14, 13, 32}, f_unfused, "na2d k7 rpb (unfused)"},
        {{.ndim = 2, .kernel = {5, 3}, .dilation = {2, 3}}, {1, 3, 13, 11, 40}, f_fused, "na2d dilated (fused)"},
        {{.ndim = 1, .kernel = {9}, .dilation = {2}, .causal = {1}}, {2, 2, 40, 20}, f_fused, "na1d causal (fused)"},
        {{.ndim = 1, .kernel = {9}, .dilation = {2}, .causal = {1}}, {2, 2, 40, 20}, f_unfused,
         "na1d causal (unfused)"},
        {{.ndim = 3, .kernel = {3, 5, 3}, .dilation = {1, 1, 2}, .causal = {1, 0, 0}}, {1, 2, 5, 6, 7, 16}, f_fused,
         "na3d causal (fused)"},
        {{.ndim = 2, .kernel = {5, 5}, .dilation = {1, 1}}, {1, 2, 9, 8, 16}, f_strided, "na2d strided q (fused)"},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const nat_na_params *p = &cases[ci].p;
        int nd = p->ndim + 3;
        int64_t qs[6], rs[4] = {cases[ci].shape[1], 0, 0, 0};
        memcpy(qs, cases[ci].shape, sizeof qs);
        for (int a = 0; a < p->ndim; a++)
            rs[1 + a] = 2 * p->kernel[a] - 1;
        nat_rng r;
        nat_rng_seed(&r, na_test_seed + ci);
        nat_tensor *in[4];
        if (cases[ci].f == f_strided) {
            int64_t t = qs[2]; /* q stored as [B, heads, W, H, D] */
            qs[2] = qs[3], qs[3] = t;
            in[0] = th_randn(&r, nd, qs, 1.0f, false);
            qs[3] = qs[2], qs[2] = t;
        } else {
            in[0] = th_randn(&r, nd, qs, 1.0f, false);
        }
        in[1] = th_randn(&r, nd, qs, 1.0f, false);
        in[2] = th_randn(&r, nd, qs, 1.0f, false);
        in[3] = th_randn(&r, p->ndim + 1, rs, 0.5f, false);
        bool causal = p->causal[0] || p->causal[1] || p->causal[2];
        compare_op(cases[ci].what, cases[ci].f, p, causal ? 3 : 4, in);
        for (int i = 0; i < 4; i++)
            nat_tensor_free(in[i]);
    }
}
END_TEST

/* Large maps and kernels, every version forced in turn (NAT_NA_KERNEL), forward and every gradient
 * against the CPU: 128x128 at k 7, 40x36 at k 13 and 21 (dilated once), 1-D causal k 21. */
START_TEST(gpu_large)
{
    struct {
        nat_na_params p;
        int64_t shape[6];
    } cases[] = {
        {{.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}}, {1, 2, 128, 128, 32}},
        {{.ndim = 2, .kernel = {13, 13}, .dilation = {1, 1}}, {1, 2, 40, 36, 32}},
        {{.ndim = 2, .kernel = {21, 21}, .dilation = {1, 1}}, {1, 1, 40, 36, 64}},
        {{.ndim = 2, .kernel = {21, 9}, .dilation = {1, 3}}, {1, 1, 44, 40, 32}},
        {{.ndim = 1, .kernel = {21}, .dilation = {1}, .causal = {1}}, {2, 2, 300, 64}},
    };
    const char *vers[] = {"v0", "v1", "v2"};
    for (size_t vi = 0; vi < sizeof vers / sizeof *vers; vi++) {
        setenv("NAT_NA_KERNEL", vers[vi], 1);
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            const nat_na_params *p = &cases[ci].p;
            int nd = p->ndim + 3;
            int64_t rs[4] = {cases[ci].shape[1], 0, 0, 0};
            for (int a = 0; a < p->ndim; a++)
                rs[1 + a] = 2 * p->kernel[a] - 1;
            nat_rng r;
            nat_rng_seed(&r, na_test_seed + 100 + ci);
            nat_tensor *in[4];
            for (int i = 0; i < 3; i++)
                in[i] = th_randn(&r, nd, cases[ci].shape, 1.0f, false);
            in[3] = th_randn(&r, p->ndim + 1, rs, 0.5f, false);
            const bool causal = p->causal[0];
            char what[96];
            snprintf(what, sizeof what, "%s large case %zu (unfused)", vers[vi], ci);
            compare_op(what, f_unfused, p, causal ? 3 : 4, in);
            snprintf(what, sizeof what, "%s large case %zu (fused)", vers[vi], ci);
            compare_op(what, f_fused, p, causal ? 3 : 4, in);
            for (int i = 0; i < 4; i++)
                nat_tensor_free(in[i]);
        }
    }
    unsetenv("NAT_NA_KERNEL");
}
END_TEST

/* ------------------------------------------------------------------------------------------------ */

typedef struct named_test {
    const char *name;
    const TTest *fn;
} named_test;

static int run_suite(const char *name, const named_test *t, size_t n)
{
    Suite *s = suite_create(name);
    for (size_t i = 0; i < n; i++) {
        TCase *tc = tcase_create(t[i].name);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, t[i].fn);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA must not be initialised before a fork */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

int main(void)
{
    const char *env = getenv("NAT_TEST_SEED");
    if (env && *env)
        na_test_seed = strtoull(env, NULL, 10);
    printf("test_na_cuda: seed %" PRIu64 " (set NAT_TEST_SEED to change); CUDA built: %s; devices: %d\n", na_test_seed,
           nat_cuda_built() ? "yes" : "no", nat_cuda_device_count());
    const named_test host[] = {
        {"index_window", index_window},
        {"index_inverse", index_inverse},
        {"index_geom", index_geom},
        {"emu_qk", emu_qk_sweep},
        {"emu_av", emu_av_sweep},
        {"emu_qk_bwd", emu_qk_bwd_sweep},
        {"emu_av_bwd", emu_av_bwd_sweep},
        {"emu_fused_fwd", emu_fused_fwd_sweep},
        {"emu_fused_bwd", emu_fused_bwd_sweep},
        {"emu_v2_qk", emu_v2_qk_sweep},
        {"emu_v2_av", emu_v2_av_sweep},
        {"emu_v2_qk_bwd", emu_v2_qk_bwd_sweep},
        {"emu_v2_av_bwd", emu_v2_av_bwd_sweep},
        {"emu_v3_fwd", emu_v3_fwd_sweep},
        {"emu_v3_bwd", emu_v3_bwd_sweep},
        {"v3_fragment_maps", v3_fragment_maps},
        {"v3_fragment_maps_match_ptx", v3_fragment_maps_match_ptx},
        {"half_rounding", half_rounding},
        {"entry_points", entry_points},
        {"ops_refuse_unusable_device", ops_refuse_unusable_device},
    };
    int failed = run_suite("na_cuda_host", host, sizeof host / sizeof *host);
    if (failed)
        return EXIT_FAILURE;
    if (!nat_cuda_available()) {
        printf("SKIPPED: no CUDA device (%s); the NA kernels did not run on a GPU -- only the host checks above "
               "(window arithmetic, the v0-v3 kernels' bodies emulated on the CPU, entry-point errors) ran\n",
               nat_cuda_built() ? "none present" : "nat was built without CUDA");
        return 77;
    }
    char name[128] = "";
    nat_cuda_device_name(0, name, sizeof name);
    printf("test_na_cuda: GPU checks on cuda:0 (%s)\n", name);
    const named_test gpu[] = {
        {"gpu_qk", gpu_qk},
        {"gpu_av", gpu_av},
        {"gpu_qk_bwd", gpu_qk_bwd},
        {"gpu_av_bwd", gpu_av_bwd},
        {"gpu_fused_fwd", gpu_fused_fwd},
        {"gpu_fused_bwd", gpu_fused_bwd},
        {"gpu_determinism", gpu_determinism},
        {"gpu_autograd", gpu_autograd},
        {"gpu_v0_all", gpu_v0_all},
        {"gpu_v2_all", gpu_v2_all},
        {"gpu_v3_fwd", gpu_v3_fwd},
        {"gpu_v3_bwd", gpu_v3_bwd},
        {"gpu_large", gpu_large},
    };
    failed = run_suite("na_cuda_gpu", gpu, sizeof gpu / sizeof *gpu);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
