/* layers/natten/cuda/tensorcore_bwd.h — kernel lab v3, backward: the fused backward on tensor cores (bf16 / f16
 * operands, f32 accumulation), 1-D and 2-D, head dim 32 or 64, written once for the device and for a
 * host model (the conventions of cuda/tensorcore.h: NA_NL lanes per call, na_mma16816, fragment maps).
 *
 * Idea: FlashAttention-2's backward over a neighbourhood, in two kernels so that every output has one
 * writer (no atomics, the same bits on every run, like v1):
 *   dq kernel (query tiles, v3's forward tiles): a warp owns 16 queries with Q and dO as A fragments;
 *     per 16 halo keys S = Q K^T and dP = dO V^T (mma), the window mask, P = exp(scale S + rpb - lse),
 *     dS = P (dP - delta); dQ += dS K (dS rounded to the operand type, as P is in the forward; its
 *     A fragment is S's accumulator layout). dS is also stored per (query, slot) when drpb is wanted,
 *     for v1's fixed-order reduction.
 *   dk/dv kernel (key tiles of the same shape): a warp owns 16 keys with K and V as A fragments and
 *     streams the tile's halo of queries — the union of the keys' inverse neighbourhoods, monotone in
 *     the key position like windows are in the query position — through shared memory with, per
 *     query, its window, lse and delta. Per 16 halo queries S^T = K Q^T and dP^T = V dO^T, the mask
 *     "this key lies in that query's window", P^T and dS^T as above; dV += P^T dO and dK += dS^T Q.
 * delta = rowsum(dO * O) is computed in f32 from the f32 dO and O before both; the mma operands are
 * q, k, v (already 2-byte values), dO rounded once to the operand type, and P / dS rounded per step.
 * dk = scale * (dS^T Q), dq = scale * (dS K).
 *
 * Host model: for the dq kernel a block is na_v2_tile_at, na_v3q_warp_init per warp, per piece of 64
 * halo keys na_v3q_load_body for every thread then na_v3q_piece for every warp, then na_v3q_store;
 * for the dk/dv kernel na_v3k_tile_at, na_v3k_warp_init, per piece of 64 halo queries
 * na_v3k_load_body then na_v3k_piece, then na_v3k_store. cuda/tensorcore_bwd.cu runs these on the device
 * with __syncthreads between the phases; tests/test_na_cuda.c runs them on the host.
 * Plain C11 and CUDA C++.
 */
#ifndef NAT_NA_CUDA_V3B_H
#define NAT_NA_CUDA_V3B_H

#include "layers/natten/cuda/tensorcore.h"

/* s[nt] += A1 * M1^T and dp[nt] += A2 * M2^T over the head dim for the 16 columns [cb, cb + 16) (two 8-wide
 * tiles nt), M1 and M2 row-major with stride kst: the two products every backward step starts with. */
NA_HD void na_v3_two_products(int f16, float (*s)[2][4], float (*dp)[2][4], uint32_t (*a1)[NA_V3_DMAX / 16][4],
                              uint32_t (*a2)[NA_V3_DMAX / 16][4], const uint16_t *NA_RESTRICT m1,
                              const uint16_t *NA_RESTRICT m2, int kst, int cb, int lane0, int D)
{
    uint32_t b[NA_NL][2];
    for (int L = 0; L < NA_NL; L++)
        for (int nt = 0; nt < 2; nt++)
            for (int e = 0; e < 4; e++)
                s[L][nt][e] = dp[L][nt][e] = 0.0f;
    NA_UNROLL
    for (int st = 0; st < NA_V3_DMAX / 16; st++) {
        if (st * 16 < D) {
            NA_UNROLL
            for (int nt = 0; nt < 2; nt++) {
                na_v3_ldb(b, m1, kst, cb + nt * 8, st * 16, lane0);
                na_mma16816(f16, &s[0][nt][0], 8, &a1[0][st][0], (NA_V3_DMAX / 16) * 4, &b[0][0], 2);
                na_v3_ldb(b, m2, kst, cb + nt * 8, st * 16, lane0);
                na_mma16816(f16, &dp[0][nt][0], 8, &a2[0][st][0], (NA_V3_DMAX / 16) * 4, &b[0][0], 2);
            }
        }
    }
}

/* ================================ dq kernel (query tiles) ================================ */

typedef struct na_v3q_warp {
    uint32_t qa[NA_NL][NA_V3_DMAX / 16][4], da[NA_NL][NA_V3_DMAX / 16][4]; /* Q, dO as A fragments */
    float acc[NA_NL][NA_V3_DMAX / 8][4];                                   /* dS K */
    float lse[NA_NL][2], delta[NA_NL][2];
    int64_t n[NA_NL][2];
    int off[NA_NL][2][2], cnt[NA_NL][2][2], rpb0[NA_NL][2][2]; /* as na_v3_warp */
} na_v3q_warp;

NA_HD void na_v3q_warp_init(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT q,
                            const uint16_t *NA_RESTRICT dout, const float *NA_RESTRICT lse,
                            const float *NA_RESTRICT delta, int warp, na_v3q_warp *W, int lane0, int D)
{
    na_v3_query_rows(g, t, warp, W->n, W->off, W->cnt, W->rpb0, lane0);
    for (int L = 0; L < NA_NL; L++) {
        for (int h = 0; h < 2; h++) {
            const int64_t n = W->n[L][h];
            W->lse[L][h] = n >= 0 ? lse[n] : 0.0f;
            W->delta[L][h] = n >= 0 ? delta[n] : 0.0f;
        }
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++)
            for (int e = 0; e < 4; e++)
                W->acc[L][j][e] = 0.0f;
    }
    na_v3_lda_rows(W->qa, q, (const int64_t(*)[2])W->n, lane0, D);
    na_v3_lda_rows(W->da, dout, (const int64_t(*)[2])W->n, lane0, D);
}

/* Load: halo keys [pb, pb + NA_V3_PIECE): K and V row-major (ks, vs: row stride D + NA_V3_PAD), K
 * transposed (kts: kts[c * NA_V3_VS + j]); zeros past the halo. */
NA_HD void na_v3q_load_body(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT k,
                            const uint16_t *NA_RESTRICT v, int pb, uint16_t *NA_RESTRICT ks,
                            uint16_t *NA_RESTRICT vs, uint16_t *NA_RESTRICT kts, int tid, int nthreads, int D)
{
    na_v3_load_pair(g, t, k, v, pb, ks, vs, kts, 0, tid, nthreads, D);
}

/* One piece of halo keys for warp W: S, dP, mask, dS (stored to ds[n * K + slot] when ds != NULL),
 * dQ += dS K. */
NA_HD void na_v3q_piece(const na_geom *g, const na_v2_tile *t, int f16, const uint16_t *NA_RESTRICT ks,
                        const uint16_t *NA_RESTRICT vs, const uint16_t *NA_RESTRICT kts, int pb,
                        const float *NA_RESTRICT rpb, float *NA_RESTRICT ds, na_v3q_warp *W, int lane0, int D)
{
    const int nh = t->he[0] * t->he[1], kst = D + NA_V3_PAD;
    const float *rb = rpb ? rpb + (int64_t)(t->bh % g->heads) * g->rpb_size : 0;
    for (int cb = 0; cb < NA_V3_PIECE && pb + cb < nh; cb += 16) {
        float s[NA_NL][2][4], dp[NA_NL][2][4];
        uint32_t b[NA_NL][2];
        na_v3_two_products(f16, s, dp, W->qa, W->da, ks, vs, kst, cb, lane0, D); /* S = Q K^T, dP = dO V^T */
        for (int L = 0; L < NA_NL; L++) {
            const int lane = lane0 + L;
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    int r, c;
                    na_mma_c_rc(lane, e, &r, &c);
                    const int h = e >> 1, hk = pb + cb + nt * 8 + c;
                    float dsv = 0.0f;
                    if (W->n[L][h] >= 0 && hk < nh) {
                        const int ky = hk / t->he[1], kx = hk - ky * t->he[1];
                        const int t1 = ky - W->off[L][h][0], t2 = kx - W->off[L][h][1];
                        if (t1 >= 0 && t1 < W->cnt[L][h][0] && t2 >= 0 && t2 < W->cnt[L][h][1]) {
                            float x = g->scale * s[L][nt][e];
                            if (rb)
                                x += rb[(W->rpb0[L][h][0] + t1) * g->rpb_ext[2] + W->rpb0[L][h][1] + t2];
                            dsv = NA_EXPF(x - W->lse[L][h]) * (dp[L][nt][e] - W->delta[L][h]);
                            if (ds)
                                ds[W->n[L][h] * g->nkeys + t1 * g->kernel[2] + t2] = dsv;
                        }
                    }
                    s[L][nt][e] = dsv;
                }
        }
        uint32_t a[NA_NL][4];
        na_v3_c2a(a, s, f16);
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++) {
            if (j * 8 < D) {
                na_v3_ldb(b, kts, NA_V3_VS, j * 8, cb, lane0);
                na_mma16816(f16, &W->acc[0][j][0], (NA_V3_DMAX / 8) * 4, &a[0][0], 4, &b[0][0], 2);
            }
        }
    }
}

/* out[n * D + c] = factor * acc for the 16 rows of a warp (indices n[L][h]; -1: none). */
NA_HD void na_v3_store_rows(const float (*acc)[NA_V3_DMAX / 8][4], const int64_t (*n)[2], float factor,
                            float *NA_RESTRICT out, int lane0, int D)
{
    for (int L = 0; L < NA_NL; L++) {
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++)
            if (j * 8 < D)
                for (int e = 0; e < 4; e++) {
                    int r, c;
                    na_mma_c_rc(lane0 + L, e, &r, &c);
                    const int64_t row = n[L][e >> 1];
                    if (row >= 0)
                        out[row * D + j * 8 + c] = factor * acc[L][j][e];
                }
    }
}

NA_HD void na_v3q_store(const na_geom *g, const na_v3q_warp *W, float *NA_RESTRICT dq, int lane0, int D)
{
    na_v3_store_rows(W->acc, W->n, g->scale, dq, lane0, D);
}

/* ================================ dk/dv kernel (key tiles) ================================ */

/* Block blk's tile of keys (pa, nq: the keys, as na_v2_tile_at lays out v3's tiles) and its halo of
 * queries (hs, he): from the first key's inverse neighbourhood start to the last key's end, per axis. */
NA_HD void na_v3k_tile_at(const na_geom *g, const na_v2_plan *pl, int64_t blk, na_v2_tile *t)
{
    na_v2_tile_at(g, pl, blk, t);
    for (int a = 0; a < 2; a++) {
        t->hs[a] = t->he[a] = 0;
        if (t->nq[a] > 0) {
            const int L = g->len[1 + a], k = g->kernel[1 + a], d = g->dilation[1 + a], c = g->causal[1 + a];
            const int gr = t->grp[a];
            const na_span s0 = na_axis_inverse(t->pa[a] * d + gr, L, k, d, c);
            const na_span s1 = na_axis_inverse((t->pa[a] + t->nq[a] - 1) * d + gr, L, k, d, c);
            t->hs[a] = (s0.lo - gr) / d;
            t->he[a] = (s1.hi - gr + d - 1) / d - t->hs[a];
        }
    }
}

/* What the dk/dv kernel needs of one halo query (shared memory). */
typedef struct na_v3k_query {
    float lse, delta;
    int ok;                       /* 0: past the halo */
    int off[2], cnt[2], rpb0[2];  /* window start (sub-grid position), valid keys, rpb index of key 0 */
} na_v3k_query;

typedef struct na_v3k_warp {
    uint32_t ka[NA_NL][NA_V3_DMAX / 16][4], va[NA_NL][NA_V3_DMAX / 16][4]; /* K, V as A fragments */
    float dk[NA_NL][NA_V3_DMAX / 8][4], dv[NA_NL][NA_V3_DMAX / 8][4];
    int64_t n[NA_NL][2];  /* rows g and g + 8: key index (-1: past the tile) */
    int pos[NA_NL][2][2]; /* their sub-grid positions */
} na_v3k_warp;

NA_HD void na_v3k_warp_init(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT k,
                            const uint16_t *NA_RESTRICT v, int warp, na_v3k_warp *W, int lane0, int D)
{
    const int nkt = t->nq[0] * t->nq[1];
    for (int L = 0; L < NA_NL; L++) {
        const int lane = lane0 + L;
        for (int h = 0; h < 2; h++) {
            const int ki = 16 * warp + (lane >> 2) + 8 * h;
            W->n[L][h] = -1;
            W->pos[L][h][0] = W->pos[L][h][1] = 0;
            if (ki < nkt) {
                const int p0 = t->pa[0] + ki / t->nq[1], p1 = t->pa[1] + ki % t->nq[1];
                W->pos[L][h][0] = p0;
                W->pos[L][h][1] = p1;
                W->n[L][h] = t->bh * g->npix + (int64_t)(p0 * g->dilation[1] + t->grp[0]) * g->len[2] +
                             p1 * g->dilation[2] + t->grp[1];
            }
        }
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++)
            for (int e = 0; e < 4; e++)
                W->dk[L][j][e] = W->dv[L][j][e] = 0.0f;
    }
    na_v3_lda_rows(W->ka, k, (const int64_t(*)[2])W->n, lane0, D);
    na_v3_lda_rows(W->va, v, (const int64_t(*)[2])W->n, lane0, D);
}

/* Load: halo queries [pb, pb + NA_V3_PIECE): Q and dO row-major (qs, dos) and transposed (qts, dots), and
 * each query's window, lse and delta (qi[j]); zeros (ok = 0) past the halo. */
NA_HD void na_v3k_load_body(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT q,
                            const uint16_t *NA_RESTRICT dout, const float *NA_RESTRICT lse,
                            const float *NA_RESTRICT delta, int pb, uint16_t *NA_RESTRICT qs,
                            uint16_t *NA_RESTRICT dos, uint16_t *NA_RESTRICT qts, uint16_t *NA_RESTRICT dots,
                            na_v3k_query *NA_RESTRICT qi, int tid, int nthreads, int D)
{
    const int nh = t->he[0] * t->he[1];
    na_v3_load_pair(g, t, q, dout, pb, qs, dos, qts, dots, tid, nthreads, D);
    for (int j = tid; j < NA_V3_PIECE; j += nthreads) {
        const int hq = pb + j;
        na_v3k_query x;
        x.lse = x.delta = 0.0f;
        x.ok = hq < nh;
        for (int a = 0; a < 2; a++)
            x.off[a] = x.cnt[a] = x.rpb0[a] = 0;
        if (x.ok) {
            const int hy = hq / t->he[1], hx = hq - hy * t->he[1];
            const int ii[2] = {(t->hs[0] + hy) * g->dilation[1] + t->grp[0], (t->hs[1] + hx) * g->dilation[2] + t->grp[1]};
            const int64_t n = na_v3_halo_index(g, t, hq);
            for (int a = 0; a < 2; a++) {
                const na_win w = na_axis_window(ii[a], g->len[1 + a], g->kernel[1 + a], g->dilation[1 + a],
                                                g->causal[1 + a]);
                x.off[a] = (w.key0 - t->grp[a]) / g->dilation[1 + a];
                x.cnt[a] = w.n;
                x.rpb0[a] = w.rpb0;
            }
            x.lse = lse[n];
            x.delta = delta[n];
        }
        qi[j] = x;
    }
}

/* One piece of halo queries for warp W: S^T, dP^T, mask, P^T and dS^T; dV += P^T dO, dK += dS^T Q. */
NA_HD void na_v3k_piece(const na_geom *g, const na_v2_tile *t, int f16, const uint16_t *NA_RESTRICT qs,
                        const uint16_t *NA_RESTRICT dos, const uint16_t *NA_RESTRICT qts,
                        const uint16_t *NA_RESTRICT dots, const na_v3k_query *NA_RESTRICT qi, int pb,
                        const float *NA_RESTRICT rpb, na_v3k_warp *W, int lane0, int D)
{
    const int nh = t->he[0] * t->he[1], kst = D + NA_V3_PAD;
    const float *rb = rpb ? rpb + (int64_t)(t->bh % g->heads) * g->rpb_size : 0;
    for (int cb = 0; cb < NA_V3_PIECE && pb + cb < nh; cb += 16) {
        float s[NA_NL][2][4], dp[NA_NL][2][4];
        uint32_t b[NA_NL][2];
        na_v3_two_products(f16, s, dp, W->ka, W->va, qs, dos, kst, cb, lane0, D); /* S^T = K Q^T, dP^T = V dO^T */
        for (int L = 0; L < NA_NL; L++) {
            const int lane = lane0 + L;
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    int r, c;
                    na_mma_c_rc(lane, e, &r, &c);
                    const int h = e >> 1;
                    const na_v3k_query *x = &qi[cb + nt * 8 + c];
                    float p = 0.0f, dsv = 0.0f;
                    if (W->n[L][h] >= 0 && x->ok) {
                        const int t1 = W->pos[L][h][0] - x->off[0], t2 = W->pos[L][h][1] - x->off[1];
                        if (t1 >= 0 && t1 < x->cnt[0] && t2 >= 0 && t2 < x->cnt[1]) {
                            float y = g->scale * s[L][nt][e];
                            if (rb)
                                y += rb[(x->rpb0[0] + t1) * g->rpb_ext[2] + x->rpb0[1] + t2];
                            p = NA_EXPF(y - x->lse);
                            dsv = p * (dp[L][nt][e] - x->delta);
                        }
                    }
                    s[L][nt][e] = p;
                    dp[L][nt][e] = dsv;
                }
        }
        uint32_t pa[NA_NL][4], da[NA_NL][4];
        na_v3_c2a(pa, s, f16);
        na_v3_c2a(da, dp, f16);
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++) {
            if (j * 8 < D) {
                na_v3_ldb(b, dots, NA_V3_VS, j * 8, cb, lane0);
                na_mma16816(f16, &W->dv[0][j][0], (NA_V3_DMAX / 8) * 4, &pa[0][0], 4, &b[0][0], 2);
                na_v3_ldb(b, qts, NA_V3_VS, j * 8, cb, lane0);
                na_mma16816(f16, &W->dk[0][j][0], (NA_V3_DMAX / 8) * 4, &da[0][0], 4, &b[0][0], 2);
            }
        }
    }
}

NA_HD void na_v3k_store(const na_geom *g, const na_v3k_warp *W, float *NA_RESTRICT dk, float *NA_RESTRICT dv,
                        int lane0, int D)
{
    na_v3_store_rows(W->dk, W->n, g->scale, dk, lane0, D);
    na_v3_store_rows(W->dv, W->n, 1.0f, dv, lane0, D);
}

#endif
