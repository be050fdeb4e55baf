/* layers/natten/cuda/tensorcore.h — kernel lab v3: the fused forward on tensor cores (bf16 / f16 operands, f32
 * accumulation), 1-D and 2-D, head dim 32 or 64, written once for the device and for a host model.
 *
 * Idea (v3): FlashAttention-2 over a neighbourhood. A block of 4 warps takes a tile of 64 queries in one
 * dilation group (8x8 in 2-D, 64 in 1-D; v2's tiles, cuda/tiled.h) and streams the tile's halo of keys
 * and values (the union of its windows) through shared memory in pieces of 64 keys (K row-major, V
 * transposed so both B operands are pairs of adjacent 16-bit values). Each warp owns 16 queries: per 16
 * halo keys it computes S = Q K^T with mma.sync m16n8k16 (f32 accumulators), scales, adds rpb, masks
 * every key outside the query's own window (and causal keys) with -inf, updates the running row max
 * and sum (online softmax; the max is reduced over the 4 lanes that share a row), rounds P to the
 * operand type and accumulates O += P V with a second mma, reusing S's accumulator registers as P's A
 * fragment (the m16n8k16 C layout of two 8-key tiles is the A layout of one 16-key step). The output
 * (f32) is O / l and lse = m + log l. About (tile + k - 1)^2 / k^2 of the keys a block touches are
 * masked (4x at k 7): tensor cores make that cheaper than v1's exact windows.
 *
 * Host model. Fragment coordinates come from three functions (na_mma_a_rc, na_mma_b_rc, na_mma_c_rc:
 * PTX ISA, "matrix fragments for mma.m16n8k16" for 16-bit A/B and f32 C). Warp-level code is written
 * over the lanes it runs for: on the device NA_NL = 1 (the calling lane), on the host NA_NL = 32 (all
 * lanes of the warp, in order), so the same source does the per-lane work; the three cooperative
 * operations have two implementations: na_mma16816 (device: the mma.sync instruction; host: the
 * 16x16 x 16x8 product assembled from the 32 lanes' fragments through the coordinate functions, inputs
 * widened from their 16-bit bits, products and sums in f32), and the quad max / sum (device:
 * __shfl_xor_sync; host: over lanes 4q..4q+3). A block is na_v2_tile_at, na_v3_warp_init per warp, then
 * per piece the load body for every thread and na_v3_piece for every warp (the kernel's two
 * __syncthreads sit between them), then na_v3_store per warp. tests/test_na_cuda.c runs that sequence
 * on the host; cuda/tensorcore_fwd.cu runs it on the device.
 *
 * Layouts: q, k, v [B, heads, *spatial, D] as 16-bit bits (bfloat16, or float16 when f16 != 0); rpb,
 * out, lse as cuda/na_cuda.h. Plain C11 and CUDA C++.
 */
#ifndef NAT_NA_CUDA_V3_H
#define NAT_NA_CUDA_V3_H

#include "layers/natten/cuda/tiled.h"
#include "core/half.h"

#define NA_V3_WARPS 4
#define NA_V3_THREADS (32 * NA_V3_WARPS)
#define NA_V3_TQ (16 * NA_V3_WARPS) /* queries per block */
#define NA_V3_PIECE 64              /* halo keys per shared-memory piece */
#define NA_V3_DMAX 64
#define NA_V3_PAD 8                 /* 16-bit elements of padding per shared-memory row */
#define NA_V3_KS (NA_V3_DMAX + NA_V3_PAD)   /* K piece row stride (max) */
#define NA_V3_VS (NA_V3_PIECE + NA_V3_PAD)  /* transposed V piece row stride */

#ifdef __CUDA_ARCH__
#define NA_NL 1
#define NA_EXPF __expf
#else
#define NA_NL 32
#define NA_EXPF expf
#endif

/* ---- m16n8k16 fragment coordinates (lane 0..31, element e) ---- */

/* A (16x16, row-major), e in 0..7 (register e/2, half e%2): row, column (k). */
NA_HD void na_mma_a_rc(int lane, int e, int *r, int *c)
{
    *r = (lane >> 2) + ((e >> 1) & 1) * 8;
    *c = (lane & 3) * 2 + (e & 1) + (e >> 2) * 8;
}

/* B (16x8, "col"), e in 0..3 (register e/2, half e%2): row (k), column (n). */
NA_HD void na_mma_b_rc(int lane, int e, int *k, int *n)
{
    *k = (lane & 3) * 2 + (e & 1) + (e >> 1) * 8;
    *n = lane >> 2;
}

/* C / D (16x8, f32), e in 0..3: row, column. */
NA_HD void na_mma_c_rc(int lane, int e, int *r, int *c)
{
    *r = (lane >> 2) + (e >> 1) * 8;
    *c = (lane & 3) * 2 + (e & 1);
}

NA_HD uint32_t na_pack2(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }

/* c += a * b for one m16n8k16 step over the warp. Lane L (of the NA_NL this call runs for) has its C
 * fragment at c + L*cs (4 floats), A at a + L*as (4 registers), B at b + L*bs (2 registers). */
NA_HD void na_mma16816(int f16, float *c, int cs, const uint32_t *a, int as, const uint32_t *b, int bs)
{
#ifdef __CUDA_ARCH__
    (void)cs, (void)as, (void)bs;
    if (f16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    float A[16][16], B[16][8], C[16][8];
    int r, k;
    for (int L = 0; L < 32; L++) {
        for (int e = 0; e < 8; e++) {
            na_mma_a_rc(L, e, &r, &k);
            A[r][k] = half_to_f32((uint16_t)(a[L * as + e / 2] >> (16 * (e & 1))), f16);
        }
        for (int e = 0; e < 4; e++) {
            na_mma_b_rc(L, e, &k, &r);
            B[k][r] = half_to_f32((uint16_t)(b[L * bs + e / 2] >> (16 * (e & 1))), f16);
            na_mma_c_rc(L, e, &r, &k);
            C[r][k] = c[L * cs + e];
        }
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++)
            for (int kk = 0; kk < 16; kk++)
                C[i][j] += A[i][kk] * B[kk][j];
    for (int L = 0; L < 32; L++)
        for (int e = 0; e < 4; e++) {
            na_mma_c_rc(L, e, &r, &k);
            c[L * cs + e] = C[r][k];
        }
#endif
}

/* v[L*vs] of every lane becomes the max (sum) over its quad, lanes 4q..4q+3 (the lanes sharing a row
 * of a C fragment). */
NA_HD void na_quad_reduce(float *v, int vs, int is_max)
{
#ifdef __CUDA_ARCH__
    (void)vs;
    float x = v[0];
    for (int o = 1; o <= 2; o <<= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    v[0] = x;
#else
    for (int q = 0; q < 32; q += 4) {
        /* the butterfly's order: (l0 + l1) + (l2 + l3) for every lane of the quad */
        float a = v[q * vs], b = v[(q + 1) * vs], c = v[(q + 2) * vs], d = v[(q + 3) * vs];
        const float x = is_max ? fmaxf(fmaxf(a, b), fmaxf(c, d)) : (a + b) + (c + d);
        for (int i = 0; i < 4; i++)
            v[(q + i) * vs] = x;
    }
#endif
}

/* ---- fragment helpers ---- */

/* B fragments (16 x 8) of every lane from a 16-bit matrix stored m[n * stride + k]: B(k0 + kk, n0 + nn). */
NA_HD void na_v3_ldb(uint32_t (*b)[2], const uint16_t *NA_RESTRICT m, int stride, int n0, int k0, int lane0)
{
    for (int L = 0; L < NA_NL; L++)
        for (int i = 0; i < 2; i++) {
            int kk, nn;
            na_mma_b_rc(lane0 + L, 2 * i, &kk, &nn); /* elements 2i, 2i+1: rows kk, kk + 1 */
            const uint16_t *p = m + (n0 + nn) * stride + k0 + kk;
            b[L][i] = na_pack2(p[0], p[1]);
        }
}

/* A fragments of every 16-channel step for 16 rows of src[n * D + c] (rows g and g + 8 of each lane:
 * indices n[L][0], n[L][1]; -1 gives zeros). */
NA_HD void na_v3_lda_rows(uint32_t (*a)[NA_V3_DMAX / 16][4], const uint16_t *NA_RESTRICT src,
                          const int64_t (*n)[2], int lane0, int D)
{
    for (int L = 0; L < NA_NL; L++) {
        NA_UNROLL
        for (int s = 0; s < NA_V3_DMAX / 16; s++) {
            if (s * 16 < D) {
                uint16_t x[8];
                for (int e = 0; e < 8; e++) {
                    int r, c;
                    na_mma_a_rc(lane0 + L, e, &r, &c);
                    const int64_t row = n[L][(e >> 1) & 1]; /* r = g + 8 * ((e >> 1) & 1) */
                    x[e] = row >= 0 ? src[row * D + s * 16 + c] : (uint16_t)0;
                }
                for (int i = 0; i < 4; i++)
                    a[L][s][i] = na_pack2(x[2 * i], x[2 * i + 1]);
            }
        }
    }
}

/* The A fragment of one 16-wide k step from the f32 accumulators of two 8-column C tiles (rounded to
 * the operand type): A element e = C element (e & 3) of tile e / 4 (checked by v3_fragment_maps). */
NA_HD void na_v3_c2a(uint32_t (*a)[4], float (*c)[2][4], int f16)
{
    for (int L = 0; L < NA_NL; L++) {
        uint16_t h[2][4];
        for (int nt = 0; nt < 2; nt++)
            for (int e = 0; e < 4; e++)
                h[nt][e] = half_from_f32(c[L][nt][e], f16);
        a[L][0] = na_pack2(h[0][0], h[0][1]);
        a[L][1] = na_pack2(h[0][2], h[0][3]);
        a[L][2] = na_pack2(h[1][0], h[1][1]);
        a[L][3] = na_pack2(h[1][2], h[1][3]);
    }
}

/* ---- plan and per-warp state ---- */

/* v3's tiles (na_v2_plan's tq / ntile / nblocks; hmax and smem_bytes unused). Returns 1 when v3
 * applies: 1-D or 2-D, head dim 32 or 64. */
static inline int na_v3_plan_init(const na_geom *g, na_v2_plan *pl)
{
    if (g->len[0] != 1 || (g->dim != 32 && g->dim != 64))
        return 0;
    const int want[2] = {g->len[1] == 1 ? 1 : 8, g->len[1] == 1 ? NA_V3_TQ : 8};
    for (int a = 0; a < 2; a++) {
        const int lmax = (g->len[1 + a] + g->dilation[1 + a] - 1) / g->dilation[1 + a];
        pl->tq[a] = want[a];
        pl->ntile[a] = (lmax + want[a] - 1) / want[a];
        pl->hmax[a] = 0;
    }
    pl->smem_bytes = 0;
    pl->nblocks = (int64_t)g->batch * g->heads * g->dilation[1] * g->dilation[2] * pl->ntile[0] * pl->ntile[1];
    return 1;
}

typedef struct na_v3_warp {
    uint32_t qa[NA_NL][NA_V3_DMAX / 16][4]; /* Q as A fragments, one per 16-channel step */
    float o[NA_NL][NA_V3_DMAX / 8][4];       /* O accumulators, one C fragment per 8 channels */
    float m[NA_NL][2], l[NA_NL][2];          /* rows g and g+8: running max; this lane's part of the sum */
    int64_t n[NA_NL][2];                     /* the rows' query indices (-1: past the tile) */
    int off[NA_NL][2][2], cnt[NA_NL][2][2], rpb0[NA_NL][2][2]; /* per row and axis: window start in the
                                                                  halo, valid keys, rpb index of key 0 */
} na_v3_warp;

/* Rows g and g + 8 of every lane of warp `warp` in a query tile: the query index (-1: past the tile)
 * and, per axis, its window's start in halo coordinates, its valid keys and the rpb index of its key 0. */
NA_HD void na_v3_query_rows(const na_geom *g, const na_v2_tile *t, int warp, int64_t (*n)[2], int (*off)[2][2],
                            int (*cnt)[2][2], int (*rpb0)[2][2], int lane0)
{
    const int nqt = t->nq[0] * t->nq[1];
    for (int L = 0; L < NA_NL; L++)
        for (int h = 0; h < 2; h++) {
            const int qi = 16 * warp + ((lane0 + L) >> 2) + 8 * h;
            n[L][h] = -1;
            for (int a = 0; a < 2; a++)
                off[L][h][a] = cnt[L][h][a] = rpb0[L][h][a] = 0;
            if (qi < nqt) {
                na_win w[3];
                n[L][h] = na_v2_query(g, t, qi, w);
                for (int a = 0; a < 2; a++) {
                    off[L][h][a] = (w[1 + a].key0 - t->grp[a]) / g->dilation[1 + a] - t->hs[a];
                    cnt[L][h][a] = w[1 + a].n;
                    rpb0[L][h][a] = w[1 + a].rpb0;
                }
            }
        }
}

/* Warp `warp` of the block: its queries, their windows and their Q fragments (from global memory). */
NA_HD void na_v3_warp_init(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT q, int f16, int warp,
                           na_v3_warp *W, int lane0, int D)
{
    na_v3_query_rows(g, t, warp, W->n, W->off, W->cnt, W->rpb0, lane0);
    for (int L = 0; L < NA_NL; L++) {
        for (int h = 0; h < 2; h++) {
            W->m[L][h] = -INFINITY;
            W->l[L][h] = 0.0f;
        }
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++)
            for (int e = 0; e < 4; e++)
                W->o[L][j][e] = 0.0f;
    }
    na_v3_lda_rows(W->qa, q, (const int64_t(*)[2])W->n, lane0, D);
    (void)f16;
}

/* Index in [0, nquery) of halo position h (row-major over the halo extents he) of tile t. */
NA_HD int64_t na_v3_halo_index(const na_geom *g, const na_v2_tile *t, int h)
{
    const int hy = h / t->he[1], hx = h - hy * t->he[1];
    return t->bh * g->npix + (int64_t)((t->hs[0] + hy) * g->dilation[1] + t->grp[0]) * g->len[2] +
           (t->hs[1] + hx) * g->dilation[2] + t->grp[1];
}

/* Load rows [pb, pb + NA_V3_PIECE) of the tile's halo of two [B, heads, *spatial, D] arrays a and b into
 * shared memory, each row-major (a_rows, b_rows: row stride D + NA_V3_PAD) and/or transposed (a_cols,
 * b_cols: [c * NA_V3_VS + j]) — the layouts the mma B fragments read; NULL skips one. Zeros past the
 * halo. */
NA_HD void na_v3_load_pair(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT a,
                           const uint16_t *NA_RESTRICT b, int pb, uint16_t *NA_RESTRICT a_rows,
                           uint16_t *NA_RESTRICT b_rows, uint16_t *NA_RESTRICT a_cols, uint16_t *NA_RESTRICT b_cols,
                           int tid, int nthreads, int D)
{
    const int nh = t->he[0] * t->he[1], kst = D + NA_V3_PAD;
    for (int e = tid; e < NA_V3_PIECE * D; e += nthreads) {
        const int j = e / D, c = e - j * D, hr = pb + j;
        uint16_t av = 0, bv = 0;
        if (hr < nh) {
            const int64_t at = na_v3_halo_index(g, t, hr) * D + c;
            av = a[at];
            bv = b[at];
        }
        if (a_rows)
            a_rows[j * kst + c] = av;
        if (b_rows)
            b_rows[j * kst + c] = bv;
        if (a_cols)
            a_cols[c * NA_V3_VS + j] = av;
        if (b_cols)
            b_cols[c * NA_V3_VS + j] = bv;
    }
}

/* Load: halo keys [pb, pb + NA_V3_PIECE) of k into ks[j*(D + NA_V3_PAD) + c] and of v into
 * vts[c*NA_V3_VS + j] (zeros past the halo). */
NA_HD void na_v3_load_body(const na_geom *g, const na_v2_tile *t, const uint16_t *NA_RESTRICT k,
                           const uint16_t *NA_RESTRICT v, int pb, uint16_t *NA_RESTRICT ks, uint16_t *NA_RESTRICT vts,
                           int tid, int nthreads, int D)
{
    na_v3_load_pair(g, t, k, v, pb, ks, 0, 0, vts, tid, nthreads, D);
}

/* One piece of halo keys [pb, pb + NA_V3_PIECE) for warp W: S, mask, online softmax, O += P V. */
NA_HD void na_v3_piece(const na_geom *g, const na_v2_tile *t, int f16, const uint16_t *NA_RESTRICT ks,
                       const uint16_t *NA_RESTRICT vts, int pb, const float *NA_RESTRICT rpb, na_v3_warp *W, int lane0,
                       int D)
{
    const int nh = t->he[0] * t->he[1], kst = D + NA_V3_PAD;
    const float *rb = rpb ? rpb + (int64_t)(t->bh % g->heads) * g->rpb_size : 0;
    for (int cb = 0; cb < NA_V3_PIECE && pb + cb < nh; cb += 16) {
        float s[NA_NL][2][4];
        uint32_t b[NA_NL][2];
        for (int L = 0; L < NA_NL; L++)
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++)
                    s[L][nt][e] = 0.0f;
        /* S = Q K^T over this chunk's 16 keys (two 8-key tiles) */
        NA_UNROLL
        for (int st = 0; st < NA_V3_DMAX / 16; st++) {
            if (st * 16 < D) {
                NA_UNROLL
                for (int nt = 0; nt < 2; nt++) {
                    na_v3_ldb(b, ks, kst, cb + nt * 8, st * 16, lane0);
                    na_mma16816(f16, &s[0][nt][0], 8, &W->qa[0][st][0], (NA_V3_DMAX / 16) * 4, &b[0][0], 2);
                }
            }
        }
        /* logits: scale, rpb, the query's window (else -inf); row maxima */
        float mx[NA_NL][2];
        for (int L = 0; L < NA_NL; L++) {
            const int lane = lane0 + L;
            mx[L][0] = mx[L][1] = -INFINITY;
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    int r, c;
                    na_mma_c_rc(lane, e, &r, &c);
                    const int h = e >> 1, hk = pb + cb + nt * 8 + c; /* row r = g + 8 * h */
                    float x = 0.0f; /* rows past the tile: finite, never stored */
                    if (W->n[L][h] >= 0) {
                        x = -INFINITY;
                        if (hk < nh) {
                            const int ky = hk / t->he[1], kx = hk - ky * t->he[1];
                            const int t1 = ky - W->off[L][h][0], t2 = kx - W->off[L][h][1];
                            if (t1 >= 0 && t1 < W->cnt[L][h][0] && t2 >= 0 && t2 < W->cnt[L][h][1]) {
                                x = g->scale * s[L][nt][e];
                                if (rb)
                                    x += rb[(W->rpb0[L][h][0] + t1) * g->rpb_ext[2] + W->rpb0[L][h][1] + t2];
                            }
                        }
                    }
                    s[L][nt][e] = x;
                    mx[L][h] = fmaxf(mx[L][h], x);
                }
        }
        na_quad_reduce(&mx[0][0], 2, 1);
        na_quad_reduce(&mx[0][1], 2, 1);
        /* online softmax: new max, rescale, P (rounded to the operand type as P's A fragment) */
        uint32_t pa[NA_NL][4];
        for (int L = 0; L < NA_NL; L++) {
            float corr[2];
            for (int h = 0; h < 2; h++) {
                const float mn = fmaxf(W->m[L][h], mx[L][h]);
                corr[h] = mn == -INFINITY ? 1.0f : NA_EXPF(W->m[L][h] - mn);
                W->m[L][h] = mn;
                W->l[L][h] *= corr[h];
            }
            NA_UNROLL
            for (int j = 0; j < NA_V3_DMAX / 8; j++)
                for (int e = 0; e < 4; e++)
                    W->o[L][j][e] *= corr[e >> 1];
            uint16_t ph[2][4];
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    const int h = e >> 1;
                    const float p = s[L][nt][e] == -INFINITY ? 0.0f : NA_EXPF(s[L][nt][e] - W->m[L][h]);
                    W->l[L][h] += p;
                    ph[nt][e] = half_from_f32(p, f16);
                }
            /* A element e of the 16-key step = C element (e & 3) of 8-key tile e / 4 (na_v3_c2a's map,
             * inline: rounding after the loop kept all of S live and made the D 32 kernel spill) */
            pa[L][0] = na_pack2(ph[0][0], ph[0][1]);
            pa[L][1] = na_pack2(ph[0][2], ph[0][3]);
            pa[L][2] = na_pack2(ph[1][0], ph[1][1]);
            pa[L][3] = na_pack2(ph[1][2], ph[1][3]);
        }
        /* O += P V: B element (key kk, channel nn) from the transposed piece */
        NA_UNROLL
        for (int j = 0; j < NA_V3_DMAX / 8; j++) {
            if (j * 8 < D) {
                na_v3_ldb(b, vts, NA_V3_VS, j * 8, cb, lane0);
                na_mma16816(f16, &W->o[0][j][0], (NA_V3_DMAX / 8) * 4, &pa[0][0], 4, &b[0][0], 2);
            }
        }
    }
}

/* After the last piece: out = O / l (f32), lse = m + log l (written by the quad's first lane). */
NA_HD void na_v3_store(const na_geom *g, na_v3_warp *W, float *NA_RESTRICT out, float *NA_RESTRICT lse, int lane0,
                       int D)
{
    na_quad_reduce(&W->l[0][0], 2, 0);
    na_quad_reduce(&W->l[0][1], 2, 0);
    for (int L = 0; L < NA_NL; L++) {
        const int lane = lane0 + L;
        for (int h = 0; h < 2; h++) {
            const int64_t n = W->n[L][h];
            if (n < 0)
                continue;
            const float inv = 1.0f / W->l[L][h];
            NA_UNROLL
            for (int j = 0; j < NA_V3_DMAX / 8; j++)
                if (j * 8 < D)
                    for (int e = 2 * h; e < 2 * h + 2; e++) {
                        int r, c;
                        na_mma_c_rc(lane, e, &r, &c);
                        out[n * D + j * 8 + c] = W->o[L][j][e] * inv;
                    }
            if ((lane & 3) == 0)
                lse[n] = W->m[L][h] + logf(W->l[L][h]);
        }
    }
    (void)g;
}

/* The "does not apply" error of the v3 entry points (host). */
static inline nat_status na_v3_refuse(const char *op, const na_geom *g)
{
    return nat_error(NAT_ERR_UNSUPPORTED,
                     "%s: v3 does not apply (it takes 1-D or 2-D problems with head dim 32 or 64; got %s, head dim %d)",
                     op, g->len[0] != 1 ? "3-D" : g->len[1] == 1 ? "1-D" : "2-D", g->dim);
}

#endif
