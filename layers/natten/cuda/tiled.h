/* layers/natten/cuda/tiled.h — kernel lab v2: tiled neighborhood attention for the unfused ops (fp32,
 * 1-D and 2-D), the cooperative parts written as host-callable bodies.
 *
 * Idea (v2): neighbouring queries share most of their keys. A block takes a tile of queries inside one
 * dilation group (tq[0] x tq[1] sub-grid positions of one (batch, head)), loads the haloed tile of keys
 * (or values) that covers every window of the tile into shared memory once — NA_V2_CH channels at a
 * time, rows padded to NA_V2_SD floats so a warp reading one channel of 32 rows hits 32 banks — and
 * computes from there:
 *   slot dot   (qk logits; av backward's d_attn): out[n, slot] = scale * q[n] . k[key] + rpb, each
 *              thread keeping NA_V2_PER register accumulators across the channel chunks;
 *   window sum (av out; qk backward's dq): out[n, c] = factor * sum_slot coef[n, slot] * v[key, c].
 * The halo of a tile along an axis runs from the first query's window start to the last one's end:
 * window starts are monotone in the query position (clamped at borders, shifted on causal axes), so
 * that interval covers every window of the tile and is at most tq + k - 1 long. A plan (na_v2_plan)
 * picks the largest tile whose halo fits in NA_V2_SMEM bytes (and, for the slot dot, whose outputs fit
 * the accumulators); when none does (3-D; very large kernels) v2 does not apply and v0 runs.
 *
 * Host model: a block is (1) na_v2_tile_at, (2) per channel chunk, the load body for every thread,
 * then the compute body for every thread (the two __syncthreads of the kernel sit between them), (3)
 * for the slot dot, the store body for every thread. cuda/tiled.cu runs exactly this sequence on
 * the device with tid = threadIdx.x, nthreads = blockDim.x; tests/test_na_cuda.c runs it on the host.
 * Layouts: cuda/na_cuda.h. Plain C11 and CUDA C++.
 */
#ifndef NAT_NA_CUDA_V2_H
#define NAT_NA_CUDA_V2_H

#include "layers/natten/cuda/body.h"

#define NA_V2_CH 32            /* channels per shared-memory chunk */
#define NA_V2_SD (NA_V2_CH + 1) /* shared-memory row stride in floats */
#define NA_V2_THREADS 256
#define NA_V2_PER 16           /* slot-dot outputs per thread (register accumulators) */
#define NA_V2_SMEM (48 * 1024) /* bytes of shared memory a block may use (no opt-in needed) */

typedef struct na_v2_plan {
    int tq[2];       /* queries per tile along axes 1 and 2 of the 3-D view (sub-grid positions) */
    int ntile[2];    /* tiles per dilation group along each axis (for the longest group) */
    int hmax[2];     /* the largest halo extent */
    int64_t nblocks; /* batch*heads * d1*d2 * ntile[0]*ntile[1] */
    int smem_bytes;  /* hmax[0]*hmax[1]*NA_V2_SD floats */
} na_v2_plan;

typedef struct na_v2_tile {
    int64_t bh;  /* batch*heads + head */
    int grp[2];  /* dilation group along each axis */
    int pa[2];   /* sub-grid position of the tile's first query */
    int nq[2];   /* queries along each axis (0: nothing to do for this block) */
    int hs[2];   /* sub-grid position of the halo's first key */
    int he[2];   /* halo extent */
} na_v2_tile;

/* Fills *pl and returns 1 when v2 applies to g (slot_dot: the qk / d_attn kernel; else the window sum). */
static inline int na_v2_plan_init(const na_geom *g, int slot_dot, na_v2_plan *pl)
{
    if (g->len[0] != 1)
        return 0;
    const int lmax[2] = {(g->len[1] + g->dilation[1] - 1) / g->dilation[1],
                         (g->len[2] + g->dilation[2] - 1) / g->dilation[2]};
    for (int T = 16; T >= 2; T /= 2) {
        int tq[2] = {g->len[1] == 1 ? 1 : T, g->len[1] == 1 ? T * T : T};
        for (int a = 0; a < 2; a++) {
            tq[a] = tq[a] < lmax[a] ? tq[a] : lmax[a];
            pl->tq[a] = tq[a];
            const int h = tq[a] + g->kernel[1 + a] - 1;
            pl->hmax[a] = h < lmax[a] ? h : lmax[a];
            pl->ntile[a] = (lmax[a] + tq[a] - 1) / tq[a];
        }
        const int64_t bytes = (int64_t)pl->hmax[0] * pl->hmax[1] * NA_V2_SD * (int64_t)sizeof(float);
        if (bytes > NA_V2_SMEM)
            continue;
        if (slot_dot && (int64_t)tq[0] * tq[1] * g->nkeys > (int64_t)NA_V2_PER * NA_V2_THREADS)
            continue;
        pl->smem_bytes = (int)bytes;
        pl->nblocks = (int64_t)g->batch * g->heads * g->dilation[1] * g->dilation[2] * pl->ntile[0] * pl->ntile[1];
        return 1;
    }
    return 0;
}

/* The tile of block blk: blocks run over (bh, group along axis 1, group along axis 2, tile along axis 1,
 * tile along axis 2), the last fastest. */
NA_HD void na_v2_tile_at(const na_geom *g, const na_v2_plan *pl, int64_t blk, na_v2_tile *t)
{
    int ti[2];
    ti[1] = (int)(blk % pl->ntile[1]);
    blk /= pl->ntile[1];
    ti[0] = (int)(blk % pl->ntile[0]);
    blk /= pl->ntile[0];
    t->grp[1] = (int)(blk % g->dilation[2]);
    blk /= g->dilation[2];
    t->grp[0] = (int)(blk % g->dilation[1]);
    t->bh = blk / g->dilation[1];
    for (int a = 0; a < 2; a++) {
        const int L = g->len[1 + a], k = g->kernel[1 + a], d = g->dilation[1 + a], c = g->causal[1 + a];
        const int gr = t->grp[a], lg = (L - gr + d - 1) / d;
        t->pa[a] = ti[a] * pl->tq[a];
        const int left = lg - t->pa[a];
        t->nq[a] = left <= 0 ? 0 : left < pl->tq[a] ? left : pl->tq[a];
        t->hs[a] = t->he[a] = 0;
        if (t->nq[a] > 0) {
            const na_win w0 = na_axis_window(t->pa[a] * d + gr, L, k, d, c);
            const na_win w1 = na_axis_window((t->pa[a] + t->nq[a] - 1) * d + gr, L, k, d, c);
            t->hs[a] = (w0.key0 - gr) / d;
            t->he[a] = (w1.key0 - gr) / d + k - t->hs[a];
        }
    }
}

/* Query qi of the tile (row-major over nq): its index n in [0, nquery), its pixel (i1, i2) and windows
 * (3-D view; axis 0 is the unit axis). */
NA_HD int64_t na_v2_query(const na_geom *g, const na_v2_tile *t, int qi, na_win w[3])
{
    const int i1 = (t->pa[0] + qi / t->nq[1]) * g->dilation[1] + t->grp[0];
    const int i2 = (t->pa[1] + qi % t->nq[1]) * g->dilation[2] + t->grp[1];
    w[0] = na_axis_window(0, 1, 1, 1, 0);
    w[1] = na_axis_window(i1, g->len[1], g->kernel[1], g->dilation[1], g->causal[1]);
    w[2] = na_axis_window(i2, g->len[2], g->kernel[2], g->dilation[2], g->causal[2]);
    return t->bh * g->npix + (int64_t)i1 * g->len[2] + i2;
}

/* Halo row of window key (t1, t2). */
NA_HD int na_v2_row(const na_geom *g, const na_v2_tile *t, const na_win w[3], int t1, int t2)
{
    return ((w[1].key0 - t->grp[0]) / g->dilation[1] + t1 - t->hs[0]) * t->he[1] +
           (w[2].key0 - t->grp[1]) / g->dilation[2] + t2 - t->hs[1];
}

/* Load: channels [c0, c0 + dc) of the tile's halo of src (k or v) into sm[row * NA_V2_SD + c]. */
NA_HD void na_v2_load_body(const na_geom *g, const na_v2_tile *t, const float *NA_RESTRICT src, int c0, int dc,
                           float *NA_RESTRICT sm, int tid, int nthreads)
{
    const int n = t->he[0] * t->he[1] * dc;
    const float *base = src + t->bh * g->npix * g->dim + c0;
    for (int e = tid; e < n; e += nthreads) {
        const int r = e / dc, c = e - r * dc, hy = r / t->he[1], hx = r - hy * t->he[1];
        const int64_t pix = (int64_t)((t->hs[0] + hy) * g->dilation[1] + t->grp[0]) * g->len[2] +
                            (t->hs[1] + hx) * g->dilation[2] + t->grp[1];
        sm[r * NA_V2_SD + c] = base[pix * g->dim + c];
    }
}

/* Slot dot, one channel chunk: thread tid owns outputs e = tid + j*nthreads (j < NA_V2_PER) of the
 * tile's nq*K (query, slot) pairs and adds q[n, c0..] . halo[key] to acc[j] (valid slots only). */
NA_HD void na_v2_dot_chunk_body(const na_geom *g, const na_v2_tile *t, const float *NA_RESTRICT q, int c0, int dc,
                                const float *NA_RESTRICT sm, float *NA_RESTRICT acc, int tid, int nthreads)
{
    const int K = g->nkeys, total = t->nq[0] * t->nq[1] * K;
    NA_UNROLL
    for (int j = 0; j < NA_V2_PER; j++) {
        const int e = tid + j * nthreads;
        if (e < total) {
            const int qi = e / K, s = e - qi * K, t1 = s / g->kernel[2], t2 = s - t1 * g->kernel[2];
            na_win w[3];
            const int64_t n = na_v2_query(g, t, qi, w);
            if (t1 < w[1].n && t2 < w[2].n)
                acc[j] += na_dot(q + n * g->dim + c0, sm + na_v2_row(g, t, w, t1, t2) * NA_V2_SD, dc);
        }
    }
}

/* Slot dot, after the last chunk: out[n, slot] = scale * acc + rpb (masked slots: `masked`). */
NA_HD void na_v2_dot_store_body(const na_geom *g, const na_v2_tile *t, float scale, const float *NA_RESTRICT rpb,
                                float masked, const float *NA_RESTRICT acc, float *NA_RESTRICT out, int tid,
                                int nthreads)
{
    const int K = g->nkeys, total = t->nq[0] * t->nq[1] * K;
    NA_UNROLL
    for (int j = 0; j < NA_V2_PER; j++) {
        const int e = tid + j * nthreads;
        if (e < total) {
            const int qi = e / K, s = e - qi * K, t1 = s / g->kernel[2], t2 = s - t1 * g->kernel[2];
            na_win w[3];
            const int64_t n = na_v2_query(g, t, qi, w);
            float x = masked;
            if (t1 < w[1].n && t2 < w[2].n) {
                x = scale * acc[j];
                if (rpb)
                    x += rpb[(int64_t)(t->bh % g->heads) * g->rpb_size + na_rpb_index(g, w, 0, t1, t2)];
            }
            out[n * K + s] = x;
        }
    }
}

/* Window sum, one channel chunk: out[n, c0 + c] = factor * sum over valid slots of coef[n, slot] *
 * halo[key, c], for the tile's nq*dc (query, channel) pairs. */
NA_HD void na_v2_sum_chunk_body(const na_geom *g, const na_v2_tile *t, const float *NA_RESTRICT coef, float factor,
                                int c0, int dc, const float *NA_RESTRICT sm, float *NA_RESTRICT out, int tid,
                                int nthreads)
{
    const int K = g->nkeys, total = t->nq[0] * t->nq[1] * dc;
    for (int e = tid; e < total; e += nthreads) {
        const int qi = e / dc, c = e - qi * dc;
        na_win w[3];
        const int64_t n = na_v2_query(g, t, qi, w);
        const float *cr = coef + n * K;
        float acc = 0.0f;
        for (int t1 = 0; t1 < w[1].n; t1++)
            for (int t2 = 0; t2 < w[2].n; t2++)
                acc += cr[t1 * g->kernel[2] + t2] * sm[na_v2_row(g, t, w, t1, t2) * NA_V2_SD + c];
        out[n * g->dim + c0 + c] = factor * acc;
    }
}

#endif
