/* layers/natten/cpu/na_cpu_bf16_rows.c — the lane kernels of the CPU's bf16 fused neighborhood
 * attention: up to 16 queries (or keys) of one line in the 16 lanes of each vector (declared, with the
 * positions and packs they read, in cpu/na_cpu_bf16_rows.h; the drivers are in cpu/na_cpu.c).
 *
 * Why lanes. The per-query micro-kernels of na_cpu_bf16.c put the head dim in the lanes, so every dot
 * product ends in a horizontal reduction, and the softmax runs on one query's 49 values. For queries
 * whose windows are unclamped along axis 2 (all but k2/2 per side of each line and dilation group) the
 * keys of neighbour (t0, t1, t2) of 16 consecutive queries are 16 consecutive positions of one key
 * line, so with the keys packed as channel pairs per position one vdpbf16ps gives 16 queries' partial
 * sums over two channels: no reductions, the queries' channel pairs stay in registers, and the max,
 * exp, sum and dS are vertical, one lane per query. Weighted sums (out, dq) take pairs of neighbours
 * (t2, t2+1): the values packed as column pairs (x[u][c], x[u+1][c]) times the lane's bf16 weight pair;
 * the 16 x 16 accumulator tiles are transposed back to rows at the end. The key side of the backward
 * (dk, dv) is the same with keys in lanes: key u is neighbour t2 of the query at u + k2/2 - t2, so a row
 * of the ring (P or dS of one slot at every position of a query line) read at u + k2/2 - t2 gives the
 * 16 keys' weights, paired (t2 + 1, t2) against column pairs of q and d_out.
 *
 * Rounding points are the bf16 kernels' (na_cpu.h): logits fmadd(sum, scale, bias); P = exp(logit -
 * max) from the f32 logits (the same exp as na_cpu.c); out = (sum bf16(P) v) * (1 / l); dS in f32 and
 * rounded to bf16 only as a product weight. Only the order of the f32 sums differs from the per-query
 * kernels. Lanes past m are loaded as zeros (masked loads: nothing past a line is read) and never
 * stored; an odd k2 pairs its last neighbour with a zero weight.
 *
 * Cost (Zen 4, D 32, k 7, one 16-query forward block): 784 vdpbf16ps for the logits, 896 for the
 * weighted sum, ~750 operations of exp, 4 16 x 16 transposes. The key and value loads start at
 * u0 - k2/2 + t2, so all but one in 16 cross a 64-byte line; measured in isolation, the block takes
 * about twice as long as the same block with aligned loads (each half, logits and weighted sum, about
 * a quarter longer), and a vpermt2d from two aligned loads costs as much as the split load. Aligned
 * loads would need the lanes to follow the keys rather than the queries (the logits of one aligned
 * key chunk against the queries shifted by each t2, written to a [slot][position] line buffer; the
 * weighted sums accumulated per shift): not done yet.
 *
 * Every function is compiled for AVX-512 F/BW/VL/DQ + BF16 by a target attribute (callers check
 * nat_cpu_isa_avx512_bf16()); nothing here runs inside an OpenMP region of its own.
 */
#include "layers/natten/cpu/na_cpu_bf16_rows.h"

#include <math.h>

#include <immintrin.h> /* AVX-512 F/BW/VL/DQ, AVX512_BF16 (through the target attribute) */

#include "layers/natten/cpu/na_cpu_exp.h"

#define NA_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))
#define NA_TI static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

NA_DEFINE_VEXP512(NA_TI, vexp16)

/* The n lowest bits (n clamped to [0, 16]). */
NA_TI __mmask16 lanes(int64_t n) { return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* r[c][j] <- r[j][c] (16 x 16 floats): 32-bit, 64-bit, then two 128-bit-lane stages. */
NA_TI void transpose16(__m512 *r)
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* u[4i + k], 128-bit lane L: rows 4i .. 4i+3 of column 4L + k */
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int h = 0; h < 2; h++) /* t: 128-bit lanes (0, 2) / (1, 3) of row groups 2h, 2h + 1 */
        for (int k = 0; k < 4; k++) {
            t[8 * h + k] = _mm512_shuffle_f32x4(u[8 * h + k], u[8 * h + 4 + k], 0x88);
            t[8 * h + 4 + k] = _mm512_shuffle_f32x4(u[8 * h + k], u[8 * h + 4 + k], 0xDD);
        }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);      /* column k:      lane 0 of each group */
        r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xDD);  /* column 8 + k:  lane 2 */
        r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);  /* column 4 + k:  lane 1 */
        r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xDD); /* column 12 + k: lane 3 */
    }
}

/* Lane j = bf16(lo_j) | bf16(hi_j) << 16 (round to nearest even). */
NA_TI __m512i pair_bf16(__m512 lo, __m512 hi)
{
    static const uint16_t inter[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(inter), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* 16 floats of row x from channel c (cnt valid), rounded to bf16, as the low / high halves of 32 words. */
NA_TI __m512i row_bf16(const float *x, int64_t cnt)
{
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(lanes(cnt - 16), x + 16), _mm512_maskz_loadu_ps(lanes(cnt), x));
}

NA_T void na_rows_pack(const float *x, const int64_t *order, int64_t L2, int64_t D, uint16_t *rm, const uint8_t *need,
                       uint32_t *ch, uint32_t *col)
{
    for (int64_t u0 = 0; u0 < L2; u0 += 16) {
        const int m = L2 - u0 < 16 ? (int)(L2 - u0) : 16;
        const __mmask16 km = lanes(m);
        for (int64_t c0 = 0; c0 < D; c0 += 32) {
            /* R[j]: row u0 + j as 32 bf16 channels c0 .. (16 channel pairs); R[16] for the last column pair */
            __m512i R[17];
            for (int j = 0; j < 17; j++) { /* row 16: only for the column pairs */
                R[j] = u0 + j < L2 && j <= m && (j < 16 || col) ? row_bf16(x + order[u0 + j] * D + c0, D - c0)
                                                                : _mm512_setzero_si512();
                if (rm && j < m && need[u0 + j])
                    _mm512_mask_storeu_epi16(rm + order[u0 + j] * D + c0,
                                             D - c0 >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (D - c0)) - 1u), R[j]);
            }
            if (ch) { /* a 32-bit transpose: row p = channel pair c0/2 + p at positions u0 .. */
                __m512 T[16];
                for (int j = 0; j < 16; j++)
                    T[j] = _mm512_castsi512_ps(R[j]);
                transpose16(T);
                for (int p = 0; p < 16 && 2 * (c0 / 2 + p) < D; p++)
                    _mm512_mask_storeu_ps(ch + (c0 / 2 + p) * L2 + u0, km, T[p]);
            }
            if (col) { /* (row u, row u + 1) word pairs; unpack{lo,hi} leave channel 8L + e / 8L + 4 + e in lane 4L + e */
                __m512 A[16], B[16];
                for (int j = 0; j < 16; j++) {
                    A[j] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(R[j], R[j + 1]));
                    B[j] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(R[j], R[j + 1]));
                }
                transpose16(A);
                transpose16(B);
                for (int i = 0; i < 16; i++) {
                    const int64_t c = c0 + 8 * (i / 4) + i % 4;
                    if (c < D)
                        _mm512_mask_storeu_ps(col + c * L2 + u0, km, A[i]);
                    if (c + 4 < D)
                        _mm512_mask_storeu_ps(col + (c + 4) * L2 + u0, km, B[i]);
                }
            }
        }
    }
}

/* The channel pairs of the m query rows x + j * xs (f32, rounded to bf16 here: exact on the grid, the
 * rounding of d_out otherwise) as np vectors, lane j = row j. */
NA_TI void load_lanes(const float *x, int64_t xs, int m, int64_t D, __m512i *xp, const int np)
{
    for (int64_t c0 = 0; c0 < D; c0 += 32) {
        const __mmask16 klo = lanes(D - c0), khi = lanes(D - c0 - 16);
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = j < m ? (__m512)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(khi, x + j * xs + c0 + 16),
                                                       _mm512_maskz_loadu_ps(klo, x + j * xs + c0))
                         : _mm512_setzero_ps();
        transpose16(r);
        for (int c = 0; c < 16 && c0 / 2 + c < np; c++)
            xp[c0 / 2 + c] = _mm512_castps_si512(r[c]);
    }
}

/* S[(o * k2 + t2) * 16 + j] = scale * (x_j . row (u0 + j - k2/2 + t2) of line o of pk) + bias[o * k2 + t2];
 * returns the lanes' max. NB neighbours at a time (independent vdpbf16ps chains; past k2 the last one is
 * recomputed, not stored). */
NA_TI __m512 lane_dots(const na_rows_geo *g, __mmask16 lm, int64_t u0, const __m512i *xp, const uint32_t *pk,
                       float scale, const float *bias, float *S, const int np, const int NB)
{
    const int k2 = g->k2;
    const int64_t L2 = g->L2;
    const __m512 sc = _mm512_set1_ps(scale);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int o = 0; o < g->n01; o++) {
        const uint32_t *kl = pk + g->line[o] * np * L2 + u0 - k2 / 2;
        for (int t0 = 0; t0 < k2; t0 += NB) {
            __m512 acc[8];
            int tt[8];
            for (int t = 0; t < NB; t++) {
                acc[t] = _mm512_setzero_ps();
                tt[t] = t0 + t < k2 ? t0 + t : k2 - 1;
            }
            for (int c = 0; c < np; c++)
                for (int t = 0; t < NB; t++)
                    acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)xp[c],
                                              (__m512bh)_mm512_maskz_loadu_epi32(lm, kl + c * L2 + tt[t]));
            for (int t = 0; t < NB && t0 + t < k2; t++) {
                const int s = o * k2 + t0 + t;
                const __m512 v = bias ? _mm512_fmadd_ps(acc[t], sc, _mm512_set1_ps(bias[s])) : _mm512_mul_ps(acc[t], sc);
                _mm512_storeu_ps(S + 16 * s, v);
                vmax = _mm512_max_ps(vmax, v);
            }
        }
    }
    return vmax;
}

/* W[(o * npp + p) * 16 ..] = the pair (X[slot 2p], X[slot 2p + 1]) of line o, rounded to bf16. */
NA_TI void pairs_of(const float *X, int n01, int k2, uint32_t *W)
{
    const int npp = (k2 + 1) / 2;
    for (int o = 0; o < n01; o++)
        for (int p = 0; p < npp; p++) {
            const float *x = X + 16 * (o * k2 + 2 * p);
            const __m512 hi = 2 * p + 1 < k2 ? _mm512_loadu_ps(x + 16) : _mm512_setzero_ps();
            _mm512_storeu_si512(W + 16 * (o * npp + p), pair_bf16(_mm512_loadu_ps(x), hi));
        }
}

/* Rows j < m of out (stride os) = factor_j * sum over lines o and pairs p of the weight pair
 * W[o * npp + p] times the column pairs of line o of pc at position cb + cs * p + j, channel by channel. */
NA_TI void lane_axpys_impl(const na_rows_geo *g, int m, __mmask16 lm, const uint32_t *W, int npp, const uint32_t *pc,
                           int64_t cb, int64_t cs, __m512 factor, float *out, int64_t os, const int full)
{
    const int64_t D = g->D, L2 = g->L2;
    for (int64_t c0 = 0; c0 < D; c0 += 16) {
        const int nc = full || D - c0 >= 16 ? 16 : (int)(D - c0);
        __m512 acc[16];
        for (int c = 0; c < 16; c++)
            acc[c] = _mm512_setzero_ps();
        for (int o = 0; o < g->n01; o++) {
            const uint32_t *cl = pc + (g->line[o] * D + c0) * L2 + cb;
            for (int p = 0; p < npp; p++) {
                const __m512bh w = (__m512bh)_mm512_loadu_si512(W + 16 * (o * npp + p));
                const uint32_t *cp = cl + cs * p;
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++)
                    if (c < nc)
                        acc[c] = _mm512_dpbf16_ps(acc[c], (__m512bh)_mm512_maskz_loadu_epi32(lm, cp + c * L2), w);
            }
        }
        for (int c = 0; c < 16; c++)
            acc[c] = _mm512_mul_ps(acc[c], factor);
        transpose16(acc);
        for (int j = 0; j < m; j++)
            _mm512_mask_storeu_ps(out + j * os + c0, lanes(nc), acc[j]);
    }
}

/* The channel count is a multiple of 16 (the common case) or not: no per-channel test in the first. */
NA_TI void lane_axpys(const na_rows_geo *g, int m, __mmask16 lm, const uint32_t *W, int npp, const uint32_t *pc,
                      int64_t cb, int64_t cs, __m512 factor, float *out, int64_t os)
{
    if (g->D % 16 == 0)
        lane_axpys_impl(g, m, lm, W, npp, pc, cb, cs, factor, out, os, 1);
    else
        lane_axpys_impl(g, m, lm, W, npp, pc, cb, cs, factor, out, os, 0);
}

NA_TI void fwd_impl(const na_rows_geo *g, int m, int64_t u0, const float *q, int64_t qs, const uint32_t *kch,
                    const uint32_t *vcol, float scale, const float *bias, float *scratch, float *out, int64_t os,
                    float *lse, int64_t ls, const int np, const int NB)
{
    const int k2 = g->k2, K = g->n01 * k2, npp = (k2 + 1) / 2;
    const __mmask16 lm = lanes(m);
    float *S = scratch;
    uint32_t *W = (uint32_t *)(scratch + 16 * (int64_t)K);
    __m512i qp[NA_ROWS_MAX_DIM / 2];
    load_lanes(q, qs, m, g->D, qp, np);
    const __m512 vmax = lane_dots(g, lm, u0, qp, kch, scale, bias, S, np, NB);
    __m512 sum = _mm512_setzero_ps();
    for (int s = 0; s < K; s++) { /* P relative to the max, f32; its sum too */
        const __m512 p = vexp16(_mm512_sub_ps(_mm512_loadu_ps(S + 16 * s), vmax));
        _mm512_storeu_ps(S + 16 * s, p);
        sum = _mm512_add_ps(sum, p);
    }
    pairs_of(S, g->n01, k2, W);
    lane_axpys(g, m, lm, W, npp, vcol, u0 - k2 / 2, 2, _mm512_div_ps(_mm512_set1_ps(1.0f), sum), out, os);
    float mx[16], l[16];
    _mm512_storeu_ps(mx, vmax);
    _mm512_storeu_ps(l, sum);
    for (int j = 0; j < m; j++)
        lse[j * ls] = mx[j] + logf(l[j]);
}

NA_T void na_rows_fwd(const na_rows_geo *g, int m, int64_t u0, const float *q, int64_t qs, const uint32_t *kch,
                      const uint32_t *vcol, float scale, const float *bias, float *scratch, float *out, int64_t os,
                      float *lse, int64_t ls)
{
    const int np = (int)((g->D + 1) / 2);
    if (np == 16 && g->k2 == 7) /* NAT-Mini: D 32, kernel 7 */
        fwd_impl(g, m, u0, q, qs, kch, vcol, scale, bias, scratch, out, os, lse, ls, 16, 7);
    else if (np == 16)
        fwd_impl(g, m, u0, q, qs, kch, vcol, scale, bias, scratch, out, os, lse, ls, 16, 8);
    else
        fwd_impl(g, m, u0, q, qs, kch, vcol, scale, bias, scratch, out, os, lse, ls, np, 8);
}

NA_TI void bwd_q_impl(const na_rows_geo *g, int m, int64_t u0, const float *q, const float *go, int64_t qs,
                      const uint32_t *kch, const uint32_t *vch, const uint32_t *kcol, float scale, const float *bias,
                      const float *lse, const float *delta, float *scratch, float *rp, float *rd, float *dr,
                      float *dq, const int np, const int NB)
{
    const int k2 = g->k2, K = g->n01 * k2, npp = (k2 + 1) / 2;
    const int64_t L2 = g->L2;
    const __mmask16 lm = lanes(m);
    float *S = scratch, *X = scratch + 16 * (int64_t)K;
    uint32_t *W = (uint32_t *)(scratch + 32 * (int64_t)K);
    __m512i xp[NA_ROWS_MAX_DIM / 2];
    load_lanes(q, qs, m, g->D, xp, np);
    lane_dots(g, lm, u0, xp, kch, scale, bias, S, np, NB);
    load_lanes(go, qs, m, g->D, xp, np);
    lane_dots(g, lm, u0, xp, vch, 1.0f, NULL, X, np, NB); /* dP = bf16(d_out) . v */
    const __m512 lv = _mm512_maskz_loadu_ps(lm, lse), dv = _mm512_maskz_loadu_ps(lm, delta);
    for (int o = 0; o < g->n01; o++)
        for (int t = 0; t < k2; t++) {
            const int s = o * k2 + t;
            const int64_t r = (g->sbase[o] + t) * L2 + u0;
            const __m512 p = vexp16(_mm512_sub_ps(_mm512_loadu_ps(S + 16 * s), lv));
            const __m512 ds = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(X + 16 * s), dv));
            _mm512_mask_storeu_ps(rp + r, lm, p);
            _mm512_mask_storeu_ps(rd + r, lm, ds);
            _mm512_storeu_ps(X + 16 * s, ds);
            if (dr) {
                const __m512 a = _mm512_loadu_ps(dr + 16 * s);
                _mm512_storeu_ps(dr + 16 * s, _mm512_mask_add_ps(a, lm, a, ds));
            }
        }
    pairs_of(X, g->n01, k2, W);
    lane_axpys(g, m, lm, W, npp, kcol, u0 - k2 / 2, 2, _mm512_set1_ps(scale), dq, qs);
}

NA_T void na_rows_bwd_q(const na_rows_geo *g, int m, int64_t u0, const float *q, const float *go, int64_t qs,
                        const uint32_t *kch, const uint32_t *vch, const uint32_t *kcol, float scale, const float *bias,
                        const float *lse, const float *delta, float *scratch, float *rp, float *rd, float *dr, float *dq)
{
    const int np = (int)((g->D + 1) / 2);
    if (np == 16 && g->k2 == 7)
        bwd_q_impl(g, m, u0, q, go, qs, kch, vch, kcol, scale, bias, lse, delta, scratch, rp, rd, dr, dq, 16, 7);
    else if (np == 16)
        bwd_q_impl(g, m, u0, q, go, qs, kch, vch, kcol, scale, bias, lse, delta, scratch, rp, rd, dr, dq, 16, 8);
    else
        bwd_q_impl(g, m, u0, q, go, qs, kch, vch, kcol, scale, bias, lse, delta, scratch, rp, rd, dr, dq, np, 8);
}

NA_T void na_rows_bwd_k(const na_rows_geo *g, int m, int64_t u0, const float *rp, const float *rd, const uint32_t *qcol,
                        const uint32_t *gcol, float scale, float *scratch, float *dk, float *dv, int64_t ks)
{
    const int k2 = g->k2, npp = (k2 + 1) / 2;
    const int64_t L2 = g->L2;
    const __mmask16 lm = lanes(m);
    uint32_t *Wd = (uint32_t *)scratch, *Wp = Wd + 16 * (int64_t)g->n01 * npp;
    /* Pair p: neighbours (2p + 1, 2p) of the queries at c0 + j and c0 + j + 1, c0 = u0 + k2/2 - 2p - 1
     * (neighbour k2 of an odd k2 does not exist: weight zero). */
    for (int o = 0; o < g->n01; o++) {
        const float *pl = rp + g->rline[o], *dl = rd + g->rline[o];
        for (int p = 0; p < npp; p++) {
            const int64_t c0 = u0 + k2 / 2 - 2 * p - 1;
            const int64_t rhi = (g->sbase[o] + 2 * p + 1) * L2 + c0, rlo = (g->sbase[o] + 2 * p) * L2 + c0 + 1;
            const int has = 2 * p + 1 < k2;
            const __m512 z = _mm512_setzero_ps();
            _mm512_storeu_si512(Wd + 16 * (o * npp + p), pair_bf16(has ? _mm512_maskz_loadu_ps(lm, dl + rhi) : z,
                                                                   _mm512_maskz_loadu_ps(lm, dl + rlo)));
            _mm512_storeu_si512(Wp + 16 * (o * npp + p), pair_bf16(has ? _mm512_maskz_loadu_ps(lm, pl + rhi) : z,
                                                                   _mm512_maskz_loadu_ps(lm, pl + rlo)));
        }
    }
    lane_axpys(g, m, lm, Wd, npp, qcol, u0 + k2 / 2 - 1, -2, _mm512_set1_ps(scale), dk, ks);
    lane_axpys(g, m, lm, Wp, npp, gcol, u0 + k2 / 2 - 1, -2, _mm512_set1_ps(1.0f), dv, ks);
}
