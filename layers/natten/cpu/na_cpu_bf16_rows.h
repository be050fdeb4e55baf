/* layers/natten/cpu/na_cpu_bf16_rows.h — internal: the lane kernels of the CPU's bf16 fused
 * neighborhood attention (cpu/na_cpu_bf16_rows.c), for blocks of up to 16 queries (or keys) of one line
 * whose windows along axis 2 are unclamped: one query (key) per vector lane. The drivers (which blocks,
 * windows along axes 0 and 1, the ring of the backward, border queries and keys) are na_cpu.c's.
 *
 * Call them only when nat_cpu_isa_avx512_bf16() (core/cpu/isa.h) is true. Semantics: those of the bf16
 * kernels (na_cpu.h), at the same rounding points.
 *
 * Positions. Along a line (fixed axes 0 and 1) position u is the u-th pixel in the visiting order of
 * axis 2 (dilation group 0, then 1, ...), so that the keys of consecutive queries of one group sit at
 * consecutive positions: an unclamped query at position u has key t2 at u - k2/2 + t2, and a key at u
 * whose queries all have unclamped windows is key t2 of the query at u + k2/2 - t2.
 *
 * Packs (uint32, per line of L2 positions; the line's rows are x[line][u]):
 *   channel pairs  ch[line][p][u]  = bf16(x[u][2p]) | bf16(x[u][2p+1]) << 16    p < ceil(D/2)
 *   column pairs  col[line][c][u]  = bf16(x[u][c]) | bf16(x[u+1][c]) << 16      c < D
 * (a missing channel or position pairs with a zero). With queries in lanes, vdpbf16ps on a channel pair
 * of 16 queries and a load of 16 consecutive positions of a channel-pair row gives 16 partial dot
 * products (logits, dP); a column-pair row times the pair of bf16 weights of neighbours (t2, t2+1) per
 * lane accumulates weighted sums over the neighbours (out, dq, and with keys in lanes dk, dv).
 */
#ifndef NAT_NA_CPU_BF16_ROWS_H
#define NAT_NA_CPU_BF16_ROWS_H

#include <stdint.h>

/* Largest head dim of the lane kernels (the query's channel pairs stay in a fixed array). */
#define NA_ROWS_MAX_DIM 64

/* Lines of a window (the query side) or of an inverse neighbourhood (the key side). */
typedef struct na_rows_geo {
    int64_t D, L2; /* head dim; positions per line */
    int k2;        /* kernel along axis 2 */
    int n01;       /* lines */
    const int64_t *line;  /* [n01] the line's index in the packs */
    const int64_t *sbase; /* [n01] the slot of its key t2 = 0: (t0 * k1 + t1) * k2 */
    const int64_t *rline; /* key side: [n01] offset of that query line's ring rows (elements) */
} na_rows_geo;

/* Scratch floats per thread for the kernels below: K = n01 * k2 slots. */
#define NA_ROWS_SCRATCH(K) (16 * (3 * (int64_t)(K) + 64))

/* Packs one line: x holds its L2 rows of D floats (row of position u at x + order[u] * D), rounded to
 * bf16 here (exact for values on the grid). ch, col and rm (the rounded rows, same layout as x, written
 * only at the positions u with need[u] != 0) may be NULL. */
void na_rows_pack(const float *x, const int64_t *order, int64_t L2, int64_t D, uint16_t *rm, const uint8_t *need,
                  uint32_t *ch, uint32_t *col);

/* Forward of the m <= 16 queries at positions u0 .. u0+m-1 (query j's row at q + j * qs, f32 on the
 * bf16 grid): logits scale * q.k + bias[o * k2 + t2] (bias NULL: none), softmax, out rows (stride os) and
 * lse (stride ls). kch: keys' channel pairs, vcol: values' column pairs. */
void na_rows_fwd(const na_rows_geo *g, int m, int64_t u0, const float *q, int64_t qs, const uint32_t *kch,
                 const uint32_t *vcol, float scale, const float *bias, float *scratch, float *out, int64_t os,
                 float *lse, int64_t ls);

/* Pass A of the fused backward for the same kind of block: P = exp(logit - lse[j]), dP = bf16(d_out).v,
 * dS = P (dP - delta[j]); P and dS into the ring rows rp / rd (slot s, position u at s * L2 + u); drpb
 * partials dr[(o * k2 + t2) * 16 + j] += dS (dr may be NULL); dq = scale * sum bf16(dS) k (stride qs as
 * q and go, the f32 d_out). */
void na_rows_bwd_q(const na_rows_geo *g, int m, int64_t u0, const float *q, const float *go, int64_t qs,
                   const uint32_t *kch, const uint32_t *vch, const uint32_t *kcol, float scale, const float *bias,
                   const float *lse, const float *delta, float *scratch, float *rp, float *rd, float *dr, float *dq);

/* Pass B for the m <= 16 keys at positions u0 .. of a key line whose queries (lines g->line, ring rows
 * at rp / rd + g->rline) all have unclamped windows along axis 2: dk = scale * sum bf16(dS) q,
 * dv = sum bf16(P) bf16(d_out) (qcol, gcol: column pairs of q and d_out); rows at stride ks. */
void na_rows_bwd_k(const na_rows_geo *g, int m, int64_t u0, const float *rp, const float *rd, const uint32_t *qcol,
                   const uint32_t *gcol, float scale, float *scratch, float *dk, float *dv, int64_t ks);

#endif
