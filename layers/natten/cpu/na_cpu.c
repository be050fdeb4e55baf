/* layers/natten/cpu/na_cpu.c — fast CPU neighborhood attention (fp32): qk, av, their backwards, fused
 * forward and fused backward, for 1-D, 2-D and 3-D. Layouts and conventions: cpu/na_cpu.h.
 *
 * How it works.
 *  - A query is handled whole. Its valid window slots are listed (row offsets into k/v, slot, rpb
 *    index); along a line of queries the list only shifts, so it is built once per line. Head-dim-
 *    vectorised micro-kernels do the arithmetic: `dots` (8 keys at a time, the query in registers, one
 *    transpose-reduce per 8 dot products; scale, bias and the running max in the epilogue) for logits
 *    and d_out.v, `axpys` (weights broadcast, D-wide FMAs) for weighted sums. Queries are visited line
 *    by line, dilation group by group, so the ~2K key/value rows a query needs are mostly the previous
 *    query's and come from L1/L2; with dilation, rows are prefetched explicitly.
 *  - rpb: per head, a table with one contiguous K-vector of biases for each of the K window offsets
 *    (the query's position inside its clamped window), so logits get their bias without a gather.
 *  - dk and dv are computed per key over its inverse neighbourhood (the queries whose window holds
 *    it): no atomics, no scatter. drpb is summed per thread in double (slot-wise in float over runs of
 *    queries with the same window offset first), then the thread partials are added in thread order.
 *    With the static schedule every output is deterministic for a given thread count; dq, dk, dv and
 *    all forward outputs do not depend on the thread count at all.
 *  - Fused forward: one query's K logits live in a per-thread scratch row; softmax, weighted sum, lse.
 *  - Fused backward, ring mode (the usual case): per (batch, head, dilation group along the outermost
 *    axis) the query slabs (rows in 2-D, planes in 3-D, the whole line in 1-D) are visited in order;
 *    pass A rebuilds each query's weights from lse, dS = P * (d_out.v - delta) with
 *    delta = d_out.out, writes dq and drpb, and keeps P and dS of the last few slabs in a per-thread
 *    ring; as soon as a key slab's inverse neighbourhood is complete, pass B gathers its dk and dv from
 *    the ring. Nothing is recomputed and no [.., K] buffer exceeds the ring (< 2k slabs). When the
 *    ring would be too large or there are fewer work items than threads, the fallback recomputes P and
 *    dS per key instead (pass B then costs two more dot products per pair).
 *
 *  - bf16 (autocast, na_cpu.h): the same drivers with f->bf16 set; the products (op_dots, op_axpys, the
 *    ring's kgrad) then run the AVX512-BF16 micro-kernels of na_cpu_bf16.c on bf16 copies of q, k, v and
 *    d_out, while the softmax, lse, delta, dS and drpb stay in f32 here.
 *  - bf16 rows mode (rows_init; kernels in na_cpu_bf16_rows.c): the per-query micro-kernels spend much
 *    of their time on horizontal sums and one-query softmaxes, so wherever 8 to 16 consecutive queries
 *    of a line (one dilation group) have windows unclamped along axis 2 (qrun), they go through the lane
 *    kernels, one query per vector lane; in the backward the ring then keeps P and dS as [slot][position]
 *    rows, so that the keys seen only by such queries (krun) gather dk and dv in lanes too. Border
 *    queries and keys, and shorter runs, stay on the per-query path. A work item is a whole head (the
 *    forward: run_heads; the backward: the ring's items), whose lines the thread packs (channel pairs,
 *    column pairs, bf16 rows) just before the first query line that reads them (rows_need), into its own
 *    scratch: no global bf16 copies, and the lines in use stay in its cache.
 *
 * Every problem is seen as 3-D (na_problem.h). Windows are coded here from docs/design.md §2, independently
 * of the reference that the tests compare against. AVX-512 or AVX2+FMA intrinsics when the compiler
 * targets them, plain (auto-vectorised) loops otherwise.
 */
#include "layers/natten/cpu/na_cpu.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h> /* AVX-512F */
#define NA_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h> /* AVX2, FMA */
#define NA_AVX2 1
#endif

#include "core/cpu/isa.h"
#include "layers/natten/cpu/na_cpu_bf16.h"
#include "layers/natten/cpu/na_cpu_bf16_rows.h"
#include "layers/natten/cpu/na_cpu_exp.h"
#include "layers/natten/na_backend.h"
#include "layers/natten/na_window.h"
#include "nat/alloc.h"
#include "nat/half.h" /* nat_round_array */

#if defined(__GNUC__)
#define NA_INLINE static inline __attribute__((always_inline))
#else
#define NA_INLINE static inline
#endif

/* ---------------------------------------------------------------------------------------------------
 * Head-dim micro-kernels, on rows given as base + off[j]:
 *   dots   out[j] = scale * (x . row_j) + bias[j] (or bias[bidx[j]]), returns max_j out[j]
 *   axpys  out = factor * sum_j coef[j] * row_j                           (weighted sums)
 * The head dim D is split into nv vectors of VL floats (VL = 16 with AVX-512, 8 with AVX2), the last
 * one masked when VL does not divide D. The *_impl functions are inlined with constant (nv, full) so
 * that x and the accumulators stay in registers; a switch on D picks the instance. dots works on 8 rows
 * at a time and turns the 8 vector accumulators into 8 sums with one transpose-reduce. D > 4*VL (and
 * builds without AVX2) take the plain loops.
 * ------------------------------------------------------------------------------------------------- */

#if defined(NA_AVX512)
#define NA_VL 16
#elif defined(NA_AVX2)
#define NA_VL 8
#else
#define NA_VL 1
#endif

typedef struct na_dvec {
    int64_t dim;
    int code; /* 2*nv + full when a SIMD instance exists, 0 for the plain path */
#if defined(NA_AVX512)
    __mmask16 tail;
#elif defined(NA_AVX2)
    __m256i tail; /* lanes < D - 8*(nv-1) */
#endif
} na_dvec;

static void dvec_init(na_dvec *dv, int64_t dim)
{
    dv->dim = dim;
    dv->code = 0;
#if defined(NA_AVX512) || defined(NA_AVX2)
    if (dim <= 64) {
        int nv = (int)((dim + NA_VL - 1) / NA_VL);
        int rem = (int)(dim - NA_VL * (nv - 1));
        dv->code = 2 * nv + (rem == NA_VL);
#if defined(NA_AVX512)
        dv->tail = (__mmask16)((1u << rem) - 1u);
#else
        int lanes[8];
        for (int i = 0; i < 8; i++)
            lanes[i] = i < rem ? -1 : 0;
        dv->tail = _mm256_loadu_si256((const __m256i *)lanes);
#endif
    }
#endif
}

static float dots_plain(int64_t D, const float *x, const float *base, const int64_t *off, int n,
                        float scale, const float *bias, const int32_t *bidx, float *out)
{
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *row = base + off[j];
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < D; c++)
            s += x[c] * row[c];
        out[j] = scale * s + (bias ? bias[bidx ? bidx[j] : j] : 0.0f);
        mx = out[j] > mx ? out[j] : mx;
    }
    return mx;
}

static void axpys_plain(int64_t D, const float *coef, const float *base, const int64_t *off, int n,
                        float factor, float *out)
{
    for (int64_t c = 0; c < D; c++)
        out[c] = 0.0f;
    for (int j = 0; j < n; j++) {
        const float *row = base + off[j];
        const float cf = coef[j];
#pragma omp simd
        for (int64_t c = 0; c < D; c++)
            out[c] += cf * row[c];
    }
    for (int64_t c = 0; c < D; c++)
        out[c] *= factor;
}

#if defined(NA_AVX512) || defined(NA_AVX2)
/* Stores m < 4 leading lanes of a 4-sum tail group and folds them into the max. */
static float store_tail(const float *sums4, int m, float mx, float *out)
{
    for (int r = 0; r < m; r++) {
        out[r] = sums4[r];
        mx = sums4[r] > mx ? sums4[r] : mx;
    }
    return mx;
}
#endif

#if defined(NA_AVX512)
NA_INLINE __m512 ld(const float *p, int v, const int nv, const int full, __mmask16 tail)
{
    if (!full && v == nv - 1)
        return _mm512_maskz_loadu_ps(tail, p + 16 * v);
    return _mm512_loadu_ps(p + 16 * v);
}

/* Lane j of the result = horizontal sum of a[j], j < 8: halves, then quarters, then within lanes. */
NA_INLINE __m256 reduce8(const __m512 *a)
{
    __m512 u[4], v[2];
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; i++) /* 128-bit lane j of v[i]: four partial sums of a[4i + j] */
        v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 w = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 z = _mm512_add_ps(_mm512_shuffle_ps(w, w, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(w, w, _MM_SHUFFLE(3, 1, 3, 1)));
    /* lane j of z: [a_j, a_{j+4}, a_j, a_{j+4}] */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, z));
}

NA_INLINE __m128 reduce4(const __m512 *a)
{
    __m512 u0 = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a[0], a[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 u1 = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a[2], a[3], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
    v = _mm512_add_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm512_add_ps(v, _mm512_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, v));
}

typedef __mmask16 na_tail;
typedef __m512 na_vec;
#define NA_ZERO() _mm512_setzero_ps()
#define NA_SET1(x) _mm512_set1_ps(x)
#define NA_MUL(a, b) _mm512_mul_ps(a, b)
#define NA_ADD(a, b) _mm512_add_ps(a, b)
#define NA_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define NA_STORE(p, v) _mm512_storeu_ps(p, v)
#define NA_STORE_TAIL(p, tail, v) _mm512_mask_storeu_ps(p, tail, v)

#elif defined(NA_AVX2)
NA_INLINE __m256 ld(const float *p, int v, const int nv, const int full, __m256i tail)
{
    if (!full && v == nv - 1)
        return _mm256_maskload_ps(p + 8 * v, tail);
    return _mm256_loadu_ps(p + 8 * v);
}

/* Lane j of the result = horizontal sum of a[j]. */
NA_INLINE __m256 reduce8(const __m256 *a)
{
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
    __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]);
    __m256 t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1); /* lanes 0-3: partial sums of a0..a3 (low half), 4-7 high */
    __m256 u1 = _mm256_hadd_ps(t2, t3);
    __m256 lo = _mm256_permute2f128_ps(u0, u1, 0x20);
    __m256 hi = _mm256_permute2f128_ps(u0, u1, 0x31);
    return _mm256_add_ps(lo, hi);
}

NA_INLINE __m128 reduce4(const __m256 *a)
{
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
    __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 u = _mm256_hadd_ps(t0, t1);
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

typedef __m256i na_tail;
typedef __m256 na_vec;
#define NA_ZERO() _mm256_setzero_ps()
#define NA_SET1(x) _mm256_set1_ps(x)
#define NA_MUL(a, b) _mm256_mul_ps(a, b)
#define NA_ADD(a, b) _mm256_add_ps(a, b)
#define NA_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define NA_STORE(p, v) _mm256_storeu_ps(p, v)
#define NA_STORE_TAIL(p, tail, v) _mm256_maskstore_ps(p, tail, v)
#endif

#if defined(NA_AVX512) || defined(NA_AVX2)
NA_INLINE float dots_impl(const float *x, const float *base, const int64_t *off, int n, float scale,
                          const float *bias, const int32_t *bidx, float *out, const int nv,
                          const int full, na_tail tail)
{
    na_vec xr[8];
    for (int v = 0; v < nv; v++)
        xr[v] = ld(x, v, nv, full, tail);
    const __m256 sc = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        na_vec acc[8];
        for (int r = 0; r < 8; r++) {
            const float *row = base + off[j + r];
            acc[r] = NA_MUL(xr[0], ld(row, 0, nv, full, tail));
            for (int v = 1; v < nv; v++)
                acc[r] = NA_FMA(xr[v], ld(row, v, nv, full, tail), acc[r]);
        }
        __m256 s = reduce8(acc);
        if (bias) {
            __m256 b = bidx ? _mm256_i32gather_ps(bias, _mm256_loadu_si256((const __m256i *)(bidx + j)), 4)
                            : _mm256_loadu_ps(bias + j);
            s = _mm256_fmadd_ps(s, sc, b);
        } else {
            s = _mm256_mul_ps(s, sc);
        }
        vmax = _mm256_max_ps(vmax, s);
        _mm256_storeu_ps(out + j, s);
    }
    float lanes[8], mx = -INFINITY;
    _mm256_storeu_ps(lanes, vmax);
    for (int i = 0; i < 8; i++)
        mx = lanes[i] > mx ? lanes[i] : mx;
    for (; j < n; j += 4) {
        na_vec acc[4];
        for (int r = 0; r < 4; r++) {
            const float *row = base + off[j + r < n ? j + r : n - 1];
            acc[r] = NA_MUL(xr[0], ld(row, 0, nv, full, tail));
            for (int v = 1; v < nv; v++)
                acc[r] = NA_FMA(xr[v], ld(row, v, nv, full, tail), acc[r]);
        }
        float s4[4];
        _mm_storeu_ps(s4, reduce4(acc));
        int m = n - j < 4 ? n - j : 4;
        for (int r = 0; r < m; r++)
            s4[r] = scale * s4[r] + (bias ? bias[bidx ? bidx[j + r] : j + r] : 0.0f);
        mx = store_tail(s4, m, mx, out + j);
    }
    return mx;
}

NA_INLINE void axpys_impl(const float *coef, const float *base, const int64_t *off, int n,
                          float factor, float *out, const int nv, const int full, na_tail tail)
{
    /* Enough independent accumulator sets that >= 4 vector FMA chains are in flight. */
    const int ns = nv >= 3 ? 1 : 4 / nv;
    na_vec a[4][8];
    for (int s = 0; s < ns; s++)
        for (int v = 0; v < nv; v++)
            a[s][v] = NA_ZERO();
    int j = 0;
    for (; j + ns <= n; j += ns)
        for (int s = 0; s < ns; s++) {
            const float *row = base + off[j + s];
            na_vec c = NA_SET1(coef[j + s]);
            for (int v = 0; v < nv; v++)
                a[s][v] = NA_FMA(c, ld(row, v, nv, full, tail), a[s][v]);
        }
    for (; j < n; j++) {
        const float *row = base + off[j];
        na_vec c = NA_SET1(coef[j]);
        for (int v = 0; v < nv; v++)
            a[0][v] = NA_FMA(c, ld(row, v, nv, full, tail), a[0][v]);
    }
    na_vec f = NA_SET1(factor);
    for (int v = 0; v < nv; v++) {
        na_vec r = a[0][v];
        for (int s = 1; s < ns; s++)
            r = NA_ADD(r, a[s][v]);
        r = NA_MUL(r, f);
        if (!full && v == nv - 1)
            NA_STORE_TAIL(out + NA_VL * v, tail, r);
        else
            NA_STORE(out + NA_VL * v, r);
    }
}

/* dk = scale * sum dS * q_row and dv = sum P * dO_row over a two-level inverse list: row offsets
 * ooff[o] + ioff[i] in q and d_out, weights rd/rp[ocix[o] + icix[i]] read from the ring. */
NA_INLINE void kgrad_impl(const float *qb, const float *gb, const float *rp, const float *rd,
                          const int64_t *ooff, const int64_t *ocix, int no, const int64_t *ioff,
                          const int64_t *icix, int ni, float scale, float *dk, float *dv, const int nv,
                          const int full, na_tail tail)
{
    na_vec a[8], b[8];
    for (int v = 0; v < nv; v++)
        a[v] = b[v] = NA_ZERO();
    for (int o = 0; o < no; o++) {
        const float *qo = qb + ooff[o], *go = gb + ooff[o], *rpo = rp + ocix[o], *rdo = rd + ocix[o];
        for (int i = 0; i < ni; i++) {
            const float *r1 = qo + ioff[i], *r2 = go + ioff[i];
            na_vec x1 = NA_SET1(rdo[icix[i]]), x2 = NA_SET1(rpo[icix[i]]);
            for (int v = 0; v < nv; v++) {
                a[v] = NA_FMA(x1, ld(r1, v, nv, full, tail), a[v]);
                b[v] = NA_FMA(x2, ld(r2, v, nv, full, tail), b[v]);
            }
        }
    }
    na_vec g1 = NA_SET1(scale);
    for (int v = 0; v < nv; v++) {
        na_vec r1 = NA_MUL(a[v], g1);
        if (!full && v == nv - 1) {
            NA_STORE_TAIL(dk + NA_VL * v, tail, r1);
            NA_STORE_TAIL(dv + NA_VL * v, tail, b[v]);
        } else {
            NA_STORE(dk + NA_VL * v, r1);
            NA_STORE(dv + NA_VL * v, b[v]);
        }
    }
}

/* AVX2 covers D <= 64 with up to 8 vectors; AVX-512 needs 4. */
#if defined(NA_AVX512)
#define NA_DISPATCH_WIDE(FN)
#else
#define NA_DISPATCH_WIDE(FN)                          \
    case 10: FN(5, 0); break;                         \
    case 11: FN(5, 1); break;                         \
    case 12: FN(6, 0); break;                         \
    case 13: FN(6, 1); break;                         \
    case 14: FN(7, 0); break;                         \
    case 15: FN(7, 1); break;                         \
    case 16: FN(8, 0); break;                         \
    case 17: FN(8, 1); break;
#endif

/* Expands to a switch over dv->code calling FN(nv, full) with constants; default: plain path. */
#define NA_DISPATCH(dv, FN, PLAIN)                    \
    switch ((dv)->code) {                             \
    case 2: FN(1, 0); break;                          \
    case 3: FN(1, 1); break;                          \
    case 4: FN(2, 0); break;                          \
    case 5: FN(2, 1); break;                          \
    case 6: FN(3, 0); break;                          \
    case 7: FN(3, 1); break;                          \
    case 8: FN(4, 0); break;                          \
    case 9: FN(4, 1); break;                          \
    NA_DISPATCH_WIDE(FN)                              \
    default: PLAIN; break;                            \
    }
#endif

static float dots(const na_dvec *dv, const float *x, const float *base, const int64_t *off, int n,
                  float scale, const float *bias, const int32_t *bidx, float *out)
{
#if defined(NA_AVX512) || defined(NA_AVX2)
    float mx = -INFINITY;
#define NA_DOTS(nv, full) mx = dots_impl(x, base, off, n, scale, bias, bidx, out, nv, full, dv->tail)
    NA_DISPATCH(dv, NA_DOTS, mx = dots_plain(dv->dim, x, base, off, n, scale, bias, bidx, out))
#undef NA_DOTS
    return mx;
#else
    return dots_plain(dv->dim, x, base, off, n, scale, bias, bidx, out);
#endif
}

static void axpys(const na_dvec *dv, const float *coef, const float *base, const int64_t *off, int n,
                  float factor, float *out)
{
#if defined(NA_AVX512) || defined(NA_AVX2)
#define NA_AXPYS(nv, full) axpys_impl(coef, base, off, n, factor, out, nv, full, dv->tail)
    NA_DISPATCH(dv, NA_AXPYS, axpys_plain(dv->dim, coef, base, off, n, factor, out))
#undef NA_AXPYS
#else
    axpys_plain(dv->dim, coef, base, off, n, factor, out);
#endif
}

static void kgrad_plain(int64_t D, const float *qb, const float *gb, const float *rp, const float *rd,
                        const int64_t *ooff, const int64_t *ocix, int no, const int64_t *ioff,
                        const int64_t *icix, int ni, float scale, float *dk, float *dv)
{
    for (int64_t c = 0; c < D; c++)
        dk[c] = dv[c] = 0.0f;
    for (int o = 0; o < no; o++)
        for (int i = 0; i < ni; i++) {
            const float *r1 = qb + ooff[o] + ioff[i], *r2 = gb + ooff[o] + ioff[i];
            const float x1 = rd[ocix[o] + icix[i]], x2 = rp[ocix[o] + icix[i]];
#pragma omp simd
            for (int64_t c = 0; c < D; c++) {
                dk[c] += x1 * r1[c];
                dv[c] += x2 * r2[c];
            }
        }
    for (int64_t c = 0; c < D; c++)
        dk[c] *= scale;
}

static void kgrad(const na_dvec *dv, const float *qb, const float *gb, const float *rp, const float *rd,
                  const int64_t *ooff, const int64_t *ocix, int no, const int64_t *ioff,
                  const int64_t *icix, int ni, float scale, float *dk, float *dvo)
{
#if defined(NA_AVX512) || defined(NA_AVX2)
#define NA_KGRAD(nv, full) \
    kgrad_impl(qb, gb, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk, dvo, nv, full, dv->tail)
    NA_DISPATCH(dv, NA_KGRAD,
                kgrad_plain(dv->dim, qb, gb, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk, dvo))
#undef NA_KGRAD
#else
    kgrad_plain(dv->dim, qb, gb, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk, dvo);
#endif
}

static float dot1(int64_t D, const float *a, const float *b)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < D; c++)
        s += a[c] * b[c];
    return s;
}

/* ---------------------------------------------------------------------------------------------------
 * exp over a row: x[j] = exp(x[j] - shift) (one shift, or one per element). Cephes-style range
 * reduction (x = n ln2 + r, |r| <= ln2/2) and a degree-6 polynomial; relative error ~1e-7. Arguments
 * below -87 give ~1e-38, not 0 (masked slots never reach these loops).
 * ------------------------------------------------------------------------------------------------- */
#if defined(NA_AVX512)
NA_DEFINE_VEXP512(NA_INLINE, vexp)
#elif defined(NA_AVX2)
NA_INLINE __m256 vexp(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y;
    NA_EXP_POLY(__m256, _mm256_mul_ps, _mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, r, y);
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
#endif

/* x[j] = exp(x[j] - shift); returns the sum. */
static float exp_row(float *x, int n, float shift)
{
    int j = 0;
    float sum = 0.0f;
#if defined(NA_AVX512)
    __m512 acc = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    for (; j + 16 <= n; j += 16) {
        __m512 e = vexp(_mm512_sub_ps(_mm512_loadu_ps(x + j), sh));
        _mm512_storeu_ps(x + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1u);
        __m512 e = vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), sh));
        _mm512_mask_storeu_ps(x + j, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
        j = n;
    }
    sum = _mm512_reduce_add_ps(acc);
#elif defined(NA_AVX2)
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    for (; j + 8 <= n; j += 8) {
        __m256 e = vexp(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
        _mm256_storeu_ps(x + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int i = 0; i < 8; i++)
        sum += lanes[i];
#endif
    for (; j < n; j++) {
        x[j] = expf(x[j] - shift);
        sum += x[j];
    }
    return sum;
}

/* x[j] = exp(x[j] - shift[j]). */
static void exp_row_shifts(float *x, const float *shift, int n)
{
    int j = 0;
#if defined(NA_AVX512)
    for (; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        __m512 e = vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, shift + j)));
        _mm512_mask_storeu_ps(x + j, m, e);
    }
#elif defined(NA_AVX2)
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(x + j, vexp(_mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(shift + j))));
#endif
    for (; j < n; j++)
        x[j] = expf(x[j] - shift[j]);
}

/* ---------------------------------------------------------------------------------------------------
 * Problem context: per-axis window tables, work split, per-thread scratch.
 * ------------------------------------------------------------------------------------------------- */

typedef struct na_fast {
    na_problem pb;
    na_dvec dv;
    int64_t D, K, N;      /* head dim, slots, pixels per head */
    /* Per axis, per index i: first key (wkey0), window start in the sub-grid (wstart), rpb index of key
     * t = 0 (wrpb0), number of valid keys (wcnt: k, or fewer on a causal axis), sub-grid position
     * (sub = i / d), inverse neighbourhood [ilo, ihi), and the visiting order (dilation group first). */
    int64_t *wkey0[3], *wstart[3], *wrpb0[3], *wcnt[3], *sub[3], *ilo[3], *ihi[3], *order[3];
    int64_t nlines;       /* batch * heads * len0 * len1 */
    int64_t nchunks;      /* chunks per line */
    int64_t chunk;        /* indices of axis 2 per chunk */
    int64_t maxlist;      /* longest slot or inverse-neighbourhood list */
    int dilated;          /* some dilation > 1 */
    int nthreads;
    int want_drpb;        /* per-thread drpb partials are needed */
    int bf16;             /* fused kernels: products on bf16 operands (na_args' *16 pointers) */
    /* bf16 mode's lane kernels (na_cpu_bf16_rows.h; rows_init), when rows is set: per position u of
     * axis 2 (the visiting order), the number of queries (qrun) / keys (krun) from u on, in u's
     * dilation group, whose windows (inverse neighbourhoods) along axis 2 are unclamped, 0 for a border
     * one (the per-query path); upos[i2]: the position of index i2. The ring of the backward then keeps
     * each query line's P and dS as [slot][position] rows. Per thread: one head's packs. */
    int rows;
    int64_t *upos, *qrun, *krun;
    uint8_t *need_kv, *need_qg; /* positions whose bf16 rows of k, v / q, d_out the per-query kernels read */
    int64_t pack_ch, pack_col; /* uint32 per head of a channel-pair / column-pair pack */
    size_t rows_thread_bytes, rows_bytes;
    void *rows_mem;
    /* Ring mode of the fused backward (see run_ring): axis A, slab geometry, ring depth. */
    int ring;             /* 1: P and dS of the last `ring_depth` query slabs kept per thread */
    int ring_axis;        /* 0 for 3-D problems, 1 otherwise */
    int64_t slab_lines;   /* lines per slab: len[1] when ring_axis is 0, else 1 */
    int64_t ring_depth;   /* slabs in the ring: the longest inverse neighbourhood along ring_axis */
    int64_t ring_items;   /* batch * heads * dilation[ring_axis] */
    /* rpb rearranged per head and per window offset (rb0, rb1, rb2), each a contiguous row of K biases
     * in slot order: the bias of a query's logits without a gather. NULL when absent or too large. */
    float *btab;
    size_t btab_bytes;
    size_t tables_bytes, thread_bytes, total_bytes;
    void *mem;
} na_fast;

/* Per-thread scratch. */
typedef struct na_thread {
    int64_t *off;   /* row offsets (elements) within a head */
    int64_t *pix;   /* query pixels (inverse lists) */
    int32_t *slot;  /* slot index */
    int32_t *ridx;  /* rpb index within a head */
    float *b0, *b1, *b2;
    int64_t acc_rb;    /* drpb accumulation in b2 at this rb; INT64_MIN: none */
    double *drpb;   /* [heads, rpb_size] partial sums */
    int32_t *sig;   /* axis-2 shape of the current inverse list (key_queries) */
    int64_t *cix;   /* ring mode: index of each inverse-list entry in the ring (relative to y2*K) */
    int64_t *in_cix; /* ring mode: axis-2 part of the ring index, per key */
    float *ring_p, *ring_ds; /* ring mode: [ring_depth, slab_lines, len2, K] weights and dS */
    int sig_len;    /* -1: no list yet */
    int64_t cached_n2; /* -1: no query list yet (query_slots) */
    int n;          /* length of the current list */
    /* rows mode (rows_init): the head's packs (forward: k channel pairs, v column pairs; backward: k, v
     * channel pairs, k, q, d_out column pairs) and its bf16 rows for the per-query kernels (h16: q, k,
     * v, d_out; the forward: k, v in h16[1], h16[2]), the lane kernels' scratch, the current line's
     * geometry (lines, slot bases, ring rows, rpb bases, the bias of each window slot) and drpb partials
     * [K][16]. */
    uint32_t *pk[5];
    uint16_t *h16[4];
    float *lane, *lbias, *dracc, *lse16, *delta16;
    int64_t *gline, *gsbase, *grline, *grb;
    na_rows_geo geo;
    int64_t pk_bh, pk_next; /* packs hold head pk_bh's lines below pk_next (of the item's group) */
    int pk_axis;
    int64_t pk_d, pk_g;
} na_thread;

/* Per-axis tables of the window rule (layers/natten/na_window.h, docs/design.md §2): window start s in
 * the dilation sub-grid (key0 = s·d + g, so s = key0 div d), first key, rpb index, valid keys, and the
 * inverse neighbourhood. Axes are shorter than 2^31 (na_problem_init). */
static void axis_tables(na_fast *f, int a)
{
    const int L = (int)f->pb.len[a];
    const int k = f->pb.kernel[a], d = f->pb.dilation[a], causal = f->pb.causal[a];
    for (int i = 0; i < L; i++) {
        const na_win w = na_axis_window(i, L, k, d, causal);
        f->wkey0[a][i] = w.key0;
        f->wstart[a][i] = w.key0 / d;
        f->wrpb0[a][i] = w.rpb0;
        f->wcnt[a][i] = w.n;
        f->sub[a][i] = i / d;
    }
    /* Inverse neighbourhood: the queries q (same group) with wstart[q] <= sub[y] < wstart[q] + wcnt[q];
     * wstart is non-decreasing along a group, so it is a contiguous run of the group. */
    for (int y = 0; y < L; y++) {
        const na_span sp = na_axis_inverse(y, L, k, d, causal);
        f->ilo[a][y] = sp.lo;
        f->ihi[a][y] = sp.hi;
    }
    /* Visiting order: all of group 0, then group 1, ... */
    int64_t u = 0;
    for (int64_t g = 0; g < d && g < L; g++)
        for (int64_t i = g; i < L; i += d)
            f->order[a][u++] = i;
}

static na_thread thread_scratch(const na_fast *f, int tid);
static void fast_free(na_fast *f);

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* Largest ring (both buffers, per thread) the fused backward may keep before it falls back to
 * recomputing the weights per key. */
#define NA_RING_MAX_BYTES ((size_t)16 << 20)

/* Largest bias table (heads * K * K floats) built for the query side; beyond it (or beyond 512 slots,
 * where a table row is no longer cheap next to its query's work) the bias is gathered per query. */
#define NA_BTAB_MAX_BYTES ((size_t)8 << 20)
#define NA_BTAB_MAX_SLOTS 512

static nat_status fast_init(na_fast *f, const na_problem *pb, int want_drpb, int want_ring, const float *rpb)
{
    memset(f, 0, sizeof *f);
    f->pb = *pb;
    const int64_t batch = pb->batch, heads = pb->heads, dim = pb->dim;
    dvec_init(&f->dv, dim);
    f->D = dim;
    f->K = f->pb.nkeys;
    f->N = f->pb.npix;
    f->want_drpb = want_drpb;
    f->dilated = f->pb.dilation[0] > 1 || f->pb.dilation[1] > 1 || f->pb.dilation[2] > 1;
    int64_t inv = 1;
    for (int a = 0; a < 3; a++) {
        int64_t per = 2 * (int64_t)f->pb.kernel[a];
        inv *= f->pb.len[a] < per ? f->pb.len[a] : per;
    }
    f->maxlist = inv > f->K ? inv : f->K;
#ifdef _OPENMP
    f->nthreads = omp_get_max_threads();
#else
    f->nthreads = 1;
#endif
    f->nlines = batch * heads * f->pb.len[0] * f->pb.len[1];
    /* Enough work items for load balance; chunks of a line only when lines are few. */
    int64_t want = 8 * (int64_t)f->nthreads;
    f->nchunks = 1;
    if (f->nlines < want) {
        int64_t c = (want + f->nlines - 1) / f->nlines;
        int64_t maxc = (f->pb.len[2] + 15) / 16;
        f->nchunks = c < maxc ? c : maxc;
        if (f->nchunks < 1)
            f->nchunks = 1;
    }
    f->chunk = (f->pb.len[2] + f->nchunks - 1) / f->nchunks;

    /* Ring geometry; the depth is the longest inverse neighbourhood along the ring axis (< 2k). */
    f->ring_axis = pb->params.ndim == 3 ? 0 : 1;
    {
        const int A = f->ring_axis;
        const int64_t L = f->pb.len[A], kA = f->pb.kernel[A], dA = f->pb.dilation[A];
        f->slab_lines = A == 0 ? f->pb.len[1] : 1;
        /* Up to 2k - 1 on short axes, where a key near the middle is seen by every query. */
        f->ring_depth = 1;
        for (int64_t y = 0; y < L; y++) {
            const na_span sp = na_axis_inverse((int)y, (int)L, (int)kA, (int)dA, f->pb.causal[A]);
            int64_t cnt = (sp.hi - sp.lo + dA - 1) / dA;
            f->ring_depth = cnt > f->ring_depth ? cnt : f->ring_depth;
        }
        f->ring_items = batch * heads * dA;
        size_t ring_bytes = 2 * sizeof(float) * (size_t)(f->ring_depth * f->slab_lines * f->pb.len[2] * f->K);
        f->ring = want_ring && ring_bytes <= NA_RING_MAX_BYTES && f->ring_items >= f->nthreads;
    }

    int64_t tab = 0;
    for (int a = 0; a < 3; a++)
        tab += 8 * f->pb.len[a];
    f->tables_bytes = align64(sizeof(int64_t) * (size_t)tab);
    size_t m = (size_t)f->maxlist + 8;
    f->thread_bytes = align64(sizeof(int64_t) * m) * 2 + align64(sizeof(int32_t) * m) * 2 +
                      align64(sizeof(float) * m) * 3 +
                      align64(sizeof(int32_t) * (size_t)(2 * f->pb.kernel[2] + 4)) +
                      (want_drpb ? align64(sizeof(double) * (size_t)(heads * f->pb.rpb_size)) : 0);
    if (f->ring)
        f->thread_bytes += align64(sizeof(int64_t) * m) + align64(sizeof(int64_t) * m) +
                           2 * align64(sizeof(float) * (size_t)(f->ring_depth * f->slab_lines *
                                                                f->pb.len[2] * f->K));
    f->total_bytes = f->tables_bytes + f->thread_bytes * (size_t)f->nthreads;
    NAT_TRY(nat_mem_alloc(NAT_CPU, f->total_bytes, &f->mem));
    int64_t *t = (int64_t *)f->mem;
    for (int a = 0; a < 3; a++) {
        int64_t L = f->pb.len[a];
        int64_t **dst[8] = {&f->wkey0[a], &f->wstart[a], &f->wrpb0[a], &f->wcnt[a],
                            &f->sub[a],   &f->ilo[a],    &f->ihi[a],   &f->order[a]};
        for (int j = 0; j < 8; j++) {
            *dst[j] = t;
            t += L;
        }
        axis_tables(f, a);
    }
    if (want_drpb)
        for (int th = 0; th < f->nthreads; th++)
            memset(thread_scratch(f, th).drpb, 0, sizeof(double) * (size_t)(heads * f->pb.rpb_size));
    /* Window offsets rb_a = (k-1) + s - p lie in [0, k-1] on every axis: k0*k1*k2 = K rows per head. */
    f->btab_bytes = sizeof(float) * (size_t)(heads * f->K * f->K);
    if (rpb && f->K <= NA_BTAB_MAX_SLOTS && f->btab_bytes <= NA_BTAB_MAX_BYTES) {
        nat_status st = nat_mem_alloc(NAT_CPU, f->btab_bytes, (void **)&f->btab);
        if (st != NAT_OK) {
            fast_free(f);
            return st;
        }
        const int k0 = f->pb.kernel[0], k1 = f->pb.kernel[1], k2 = f->pb.kernel[2];
        const int64_t E1 = f->pb.rpb_ext[1], E2 = f->pb.rpb_ext[2], K = f->K;
        float *dst = f->btab;
        for (int64_t h = 0; h < heads; h++)
            for (int r0 = 0; r0 < k0; r0++)
                for (int r1 = 0; r1 < k1; r1++)
                    for (int r2 = 0; r2 < k2; r2++, dst += K) {
                        const float *src = rpb + h * f->pb.rpb_size;
                        int64_t j = 0;
                        for (int t0 = 0; t0 < k0; t0++)
                            for (int t1 = 0; t1 < k1; t1++)
                                for (int t2 = 0; t2 < k2; t2++)
                                    dst[j++] = src[((r0 + t0) * E1 + r1 + t1) * E2 + r2 + t2];
                    }
    }
    return NAT_OK;
}

static void fast_free(na_fast *f)
{
    nat_mem_free(NAT_CPU, f->mem, f->total_bytes);
    if (f->btab)
        nat_mem_free(NAT_CPU, f->btab, f->btab_bytes);
    if (f->rows_mem)
        nat_mem_free(NAT_CPU, f->rows_mem, f->rows_bytes);
    f->mem = NULL;
    f->btab = NULL;
    f->rows_mem = NULL;
}

/* Lane kernels on (1) or off (0): na_cpu_bf16_set_rows, for the tests and nat-bench. */
static int na_rows_on = 1;

void na_cpu_bf16_set_rows(int on) { na_rows_on = on; }

int na_cpu_bf16_rows(void) { return na_rows_on; }

/* Per-thread bytes of rows mode (see na_thread). */
static size_t rows_thread_size(const na_fast *f, int backward)
{
    const int64_t m = f->maxlist + 8;
    const size_t packs = backward ? 2 * (size_t)f->pack_ch + 3 * (size_t)f->pack_col
                                  : (size_t)f->pack_ch + (size_t)f->pack_col;
    return align64(sizeof(uint32_t) * packs) + 4 * align64(sizeof(uint16_t) * (size_t)(f->N * f->D)) +
           align64(sizeof(float) * (size_t)NA_ROWS_SCRATCH(m)) + align64(sizeof(float) * (size_t)(f->K + 16)) +
           align64(sizeof(float) * (size_t)(16 * f->K)) + 2 * align64(sizeof(float) * 16) +
           4 * align64(sizeof(int64_t) * (size_t)m);
}

static void rows_scratch(const na_fast *f, int tid, na_thread *t)
{
    char *c = (char *)f->rows_mem + align64(sizeof(int64_t) * (size_t)(3 * f->pb.len[2])) +
              align64((size_t)(2 * f->pb.len[2])) + f->rows_thread_bytes * (size_t)tid;
    const int64_t m = f->maxlist + 8;
    const int npk = f->rows == 2 ? 5 : 2; /* forward: k channel pairs, v column pairs */
    size_t off = 0;
    for (int i = 0; i < 5; i++) {
        t->pk[i] = (uint32_t *)(c + off);
        if (i < npk)
            off += sizeof(uint32_t) * (size_t)(i == 0 || (i == 1 && npk == 5) ? f->pack_ch : f->pack_col);
    }
    c += align64(off);
    for (int i = 0; i < 4; i++) {
        t->h16[i] = (uint16_t *)c;
        c += align64(sizeof(uint16_t) * (size_t)(f->N * f->D));
    }
    t->lane = (float *)c;
    c += align64(sizeof(float) * (size_t)NA_ROWS_SCRATCH(m));
    t->lbias = (float *)c;
    c += align64(sizeof(float) * (size_t)(f->K + 16));
    t->dracc = (float *)c;
    c += align64(sizeof(float) * (size_t)(16 * f->K));
    t->lse16 = (float *)c;
    c += align64(sizeof(float) * 16);
    t->delta16 = (float *)c;
    c += align64(sizeof(float) * 16);
    int64_t **g[4] = {&t->gline, &t->gsbase, &t->grline, &t->grb};
    for (int i = 0; i < 4; i++) {
        *g[i] = (int64_t *)c;
        c += align64(sizeof(int64_t) * (size_t)m);
    }
    t->geo.D = f->D;
    t->geo.L2 = f->pb.len[2];
    t->geo.k2 = f->pb.kernel[2];
    t->geo.n01 = 0;
    t->geo.line = t->gline;
    t->geo.sbase = t->gsbase;
    t->geo.rline = t->grline;
}

/* Smallest block for the lane kernels: a block costs about the same whatever its size, as much as
 * ~8 queries through the per-query kernels, so a shorter remainder goes through those. */
#define NA_ROWS_MIN_BLOCK 8

/* rows mode: the block of queries (keys) unclamped along axis 2 that starts at position u of a line,
 * up to 16 and u1; 0 when u holds a border query (key) or the run left is too short. */
static int rows_block(const int64_t *run, int64_t u, int64_t u1)
{
    int64_t m = run[u] < 16 ? run[u] : 16;
    m = m < u1 - u ? m : u1 - u;
    return m >= NA_ROWS_MIN_BLOCK ? (int)m : 0;
}

/* Largest per-thread rows scratch; beyond it the per-query kernels do all the work. */
#define NA_ROWS_MAX_BYTES ((size_t)64 << 20)

/* bf16 mode: turns on the lane kernels (f->rows: 1 forward, 2 backward) for the blocks of queries /
 * keys whose windows are unclamped along axis 2. They need a non-causal axis 2, D <= NA_ROWS_MAX_DIM and
 * work items of whole heads (the forward: batch * heads >= threads; the backward: ring mode), so that a
 * thread packs a head's operands once (rows_pack) and keeps them in its cache. */
static nat_status rows_init(na_fast *f, int backward)
{
    const na_problem *pb = &f->pb;
    const int64_t L2 = pb->len[2], D = f->D, k2 = pb->kernel[2], d2 = pb->dilation[2];
    f->rows = 0;
    if (!na_rows_on || !f->bf16 || pb->causal[2] || D > NA_ROWS_MAX_DIM ||
        (backward ? !f->ring : pb->batch * pb->heads < f->nthreads))
        return NAT_OK;
    f->pack_ch = pb->len[0] * pb->len[1] * ((D + 1) / 2) * L2;
    f->pack_col = pb->len[0] * pb->len[1] * D * L2;
    f->rows_thread_bytes = rows_thread_size(f, backward);
    if (f->rows_thread_bytes > NA_ROWS_MAX_BYTES)
        return NAT_OK;
    f->rows_bytes = align64(sizeof(int64_t) * (size_t)(3 * L2)) + align64((size_t)(2 * L2)) +
                    f->rows_thread_bytes * (size_t)f->nthreads;
    NAT_TRY(nat_mem_alloc(NAT_CPU, f->rows_bytes, &f->rows_mem));
    f->upos = (int64_t *)f->rows_mem;
    f->qrun = f->upos + L2;
    f->krun = f->qrun + L2;
    const int64_t *ord = f->order[2];
    for (int64_t u = 0; u < L2; u++)
        f->upos[ord[u]] = u;
    for (int64_t u = L2 - 1; u >= 0; u--) {
        const int64_t y = ord[u];
        const int next = u + 1 < L2 && ord[u + 1] == y + d2; /* same dilation group */
        const int qin = f->wstart[2][y] == f->sub[2][y] - k2 / 2;
        /* a key whose queries are exactly the k2 unclamped ones at u + k2/2 - t2 */
        int kin = (f->ihi[2][y] - f->ilo[2][y] + d2 - 1) / d2 == k2;
        for (int64_t i = f->ilo[2][y]; kin && i < f->ihi[2][y]; i += d2)
            kin = f->wstart[2][i] == f->sub[2][i] - k2 / 2;
        f->qrun[u] = qin ? 1 + (next ? f->qrun[u + 1] : 0) : 0;
        f->krun[u] = kin ? 1 + (next ? f->krun[u + 1] : 0) : 0;
    }
    /* The per-query kernels' rows: the keys of the queries outside lane blocks, the queries of the keys
     * outside them (the same walk as the line functions'). */
    f->need_kv = (uint8_t *)(f->krun + L2);
    f->need_qg = f->need_kv + L2;
    memset(f->need_kv, 0, (size_t)(2 * L2));
    for (int64_t u = 0; u < L2; u++) {
        const int m = rows_block(f->qrun, u, L2);
        if (m) {
            u += m - 1;
            continue;
        }
        const int64_t i = ord[u];
        for (int64_t t2 = 0; t2 < f->wcnt[2][i]; t2++)
            f->need_kv[f->upos[f->wkey0[2][i] + t2 * d2]] = 1;
    }
    for (int64_t u = 0; backward && u < L2; u++) {
        const int m = rows_block(f->krun, u, L2);
        if (m) {
            u += m - 1;
            continue;
        }
        const int64_t y = ord[u];
        for (int64_t i = f->ilo[2][y]; i < f->ihi[2][y]; i += d2)
            f->need_qg[f->upos[i]] = 1;
    }
    f->rows = backward ? 2 : 1;
    return NAT_OK;
}

static na_thread thread_scratch(const na_fast *f, int tid)
{
    na_thread t;
    char *c = (char *)f->mem + f->tables_bytes + f->thread_bytes * (size_t)tid;
    size_t m = (size_t)f->maxlist + 8;
    t.off = (int64_t *)c;
    c += align64(sizeof(int64_t) * m);
    t.pix = (int64_t *)c;
    c += align64(sizeof(int64_t) * m);
    t.slot = (int32_t *)c;
    c += align64(sizeof(int32_t) * m);
    t.ridx = (int32_t *)c;
    c += align64(sizeof(int32_t) * m);
    t.b0 = (float *)c;
    c += align64(sizeof(float) * m);
    t.b1 = (float *)c;
    c += align64(sizeof(float) * m);
    t.b2 = (float *)c;
    c += align64(sizeof(float) * m);
    t.sig = (int32_t *)c;
    c += align64(sizeof(int32_t) * (size_t)(2 * f->pb.kernel[2] + 4));
    t.drpb = f->want_drpb ? (double *)c : NULL;
    if (f->want_drpb)
        c += align64(sizeof(double) * (size_t)(f->pb.heads * f->pb.rpb_size));
    t.cix = t.in_cix = NULL;
    t.ring_p = t.ring_ds = NULL;
    if (f->ring) {
        size_t rb = align64(sizeof(float) * (size_t)(f->ring_depth * f->slab_lines * f->pb.len[2] * f->K));
        t.cix = (int64_t *)c;
        c += align64(sizeof(int64_t) * m);
        t.in_cix = (int64_t *)c;
        c += align64(sizeof(int64_t) * m);
        t.ring_p = (float *)c;
        c += rb;
        t.ring_ds = (float *)c;
    }
    t.sig_len = -1;
    t.cached_n2 = -1;
    t.n = 0;
    if (f->rows)
        rows_scratch(f, tid, &t);
    return t;
}

/* Lists the valid slots of the queries of line (i0, i1) that have n2 valid keys on axis 2: row offsets
 * (elements, relative to the query's first key on axis 2), slot, and rpb index (relative to the
 * query's rpb index of key 0 on axis 2). Along a line only n2 changes the list (on a causal axis 2),
 * so it is built once per line and reused with a shifted base. Returns its length. */
static int line_list(const na_fast *f, int64_t i0, int64_t i1, int64_t n2, int64_t *off, int32_t *slot,
                     int32_t *ridx)
{
    const na_problem *pb = &f->pb;
    const int64_t D = f->D, L1 = pb->len[1], L2 = pb->len[2];
    const int k1 = pb->kernel[1], k2 = pb->kernel[2];
    const int64_t d0 = pb->dilation[0], d1 = pb->dilation[1], dd2 = pb->dilation[2] * D;
    const int64_t E1 = pb->rpb_ext[1], E2 = pb->rpb_ext[2];
    const int64_t n0 = f->wcnt[0][i0], n1 = f->wcnt[1][i1];
    const int64_t y00 = f->wkey0[0][i0], y10 = f->wkey0[1][i1];
    const int64_t r00 = f->wrpb0[0][i0], r10 = f->wrpb0[1][i1];
    int n = 0;
    for (int64_t t0 = 0; t0 < n0; t0++) {
        for (int64_t t1 = 0; t1 < n1; t1++) {
            int64_t o = ((y00 + t0 * d0) * L1 + y10 + t1 * d1) * L2 * D;
            int32_t s = (int32_t)((t0 * k1 + t1) * k2);
            int32_t r = (int32_t)(((r00 + t0) * E1 + r10 + t1) * E2);
            for (int64_t t2 = 0; t2 < n2; t2++) {
                off[n + t2] = o + t2 * dd2;
                slot[n + t2] = s + (int32_t)t2;
                ridx[n + t2] = r + (int32_t)t2;
            }
            n += (int)n2;
        }
    }
    return n;
}

/* The slot list of query (i0, i1, i2), reusing the thread's list while it fits; the caller adds
 * wkey0[2][i2]*D to row offsets and wrpb0[2][i2] to rpb indices. */
static int query_slots(const na_fast *f, na_thread *t, int64_t i0, int64_t i1, int64_t i2)
{
    int64_t n2 = f->wcnt[2][i2];
    if (n2 != t->cached_n2) {
        t->n = line_list(f, i0, i1, n2, t->off, t->slot, t->ridx);
        t->cached_n2 = n2;
    }
    return t->n;
}

/* Bias of query (i0, i1, i2) of head bh for dots: a contiguous row of the bias table, or (without
 * one) the head's rpb at offset rb gathered through the list's rpb indices. */
typedef struct na_bias {
    const float *base;
    const int32_t *idx;
} na_bias;

static na_bias query_bias(const na_fast *f, const na_thread *t, const float *rpb, int64_t bh, int64_t i0,
                          int64_t i1, int64_t i2)
{
    na_bias b = {NULL, NULL};
    if (!rpb)
        return b;
    const int64_t h = bh % f->pb.heads;
    if (f->btab) {
        int64_t combo = (f->wrpb0[0][i0] * f->pb.kernel[1] + f->wrpb0[1][i1]) * f->pb.kernel[2] +
                        f->wrpb0[2][i2];
        b.base = f->btab + (h * f->K + combo) * f->K;
    } else {
        b.base = rpb + h * f->pb.rpb_size + f->wrpb0[2][i2];
        b.idx = t->ridx;
    }
    return b;
}

/* Lists the queries whose window holds key pixel (y0, y1, y2): pixel (relative to y2 on axis 2), row
 * offset (pixel * D), the slot the key takes in their window, and its rpb index (which depends only on
 * the key-query displacement). Returns their number. */
static int key_list(const na_fast *f, int64_t y0, int64_t y1, int64_t y2, int64_t *pix, int64_t *off,
                    int32_t *slot, int32_t *ridx, int64_t *cix)
{
    const int64_t R = f->ring_depth, lines = f->slab_lines, dA = f->pb.dilation[f->ring_axis];
    const na_problem *pb = &f->pb;
    const int64_t D = f->D, L1 = pb->len[1], L2 = pb->len[2];
    const int k1 = pb->kernel[1], k2 = pb->kernel[2];
    const int64_t d0 = pb->dilation[0], d1 = pb->dilation[1], d2 = pb->dilation[2];
    const int64_t E1 = pb->rpb_ext[1], E2 = pb->rpb_ext[2];
    const int64_t p0 = f->sub[0][y0], p1 = f->sub[1][y1], p2 = f->sub[2][y2];
    int n = 0;
    for (int64_t i0 = f->ilo[0][y0]; i0 < f->ihi[0][y0]; i0 += d0) {
        int64_t t0 = p0 - f->wstart[0][i0], r0 = f->wrpb0[0][i0] + t0;
        for (int64_t i1 = f->ilo[1][y1]; i1 < f->ihi[1][y1]; i1 += d1) {
            int64_t t1 = p1 - f->wstart[1][i1], r1 = f->wrpb0[1][i1] + t1;
            int64_t base = (i0 * L1 + i1) * L2;
            int32_t s01 = (int32_t)((t0 * k1 + t1) * k2);
            int32_t r01 = (int32_t)((r0 * E1 + r1) * E2);
            /* Ring mode: where this query line's P and dS sit in the thread's ring. */
            const int64_t iA = f->ring_axis == 0 ? i0 : i1;
            const int64_t rrow = ((iA / dA) % R * lines + (f->ring_axis == 0 ? i1 : 0)) * L2;
            for (int64_t i2 = f->ilo[2][y2]; i2 < f->ihi[2][y2]; i2 += d2) {
                int64_t t2 = p2 - f->wstart[2][i2];
                pix[n] = base + i2 - y2;
                off[n] = pix[n] * D;
                slot[n] = s01 + (int32_t)t2;
                ridx[n] = r01 + (int32_t)(f->wrpb0[2][i2] + t2);
                if (cix)
                    cix[n] = (rrow + i2 - y2) * f->K + slot[n];
                n++;
            }
        }
    }
    return n;
}

/* The inverse list of key (y0, y1, y2), reusing the thread's list when the axis-2 part has the same
 * shape (same relative queries, same slots): true for all interior keys of a line. The caller adds y2
 * to pixels and y2*D to offsets. */
static int key_queries(const na_fast *f, na_thread *t, int64_t y0, int64_t y1, int64_t y2)
{
    const int64_t d2 = f->pb.dilation[2], p2 = f->sub[2][y2];
    const int64_t lo = f->ilo[2][y2], hi = f->ihi[2][y2];
    int len = 1, same = t->sig_len >= 0;
    int32_t first = (int32_t)(lo - y2);
    same = same && t->sig[0] == first;
    for (int64_t i2 = lo; i2 < hi; i2 += d2, len++) {
        int32_t t2 = (int32_t)(p2 - f->wstart[2][i2]);
        same = same && len < t->sig_len && t->sig[len] == t2;
        t->sig[len] = t2;
    }
    same = same && len == t->sig_len;
    t->sig[0] = first;
    t->sig_len = len;
    if (!same)
        t->n = key_list(f, y0, y1, y2, t->pix, t->off, t->slot, t->ridx, t->cix);
    return t->n;
}

/* drpb partial sums: dS of consecutive queries that share a slot list and an axis-2 rpb offset rb
 * are added slot-wise in float (t->b2), then flushed into the thread's double partials. */
static void drpb_begin(na_thread *t) { t->acc_rb = INT64_MIN; }

static void drpb_flush(na_thread *t, double *dr)
{
    if (t->acc_rb == INT64_MIN)
        return;
    for (int j = 0; j < t->n; j++)
        dr[t->acc_rb + t->ridx[j]] += t->b2[j];
    t->acc_rb = INT64_MIN;
}

/* Before query i2: flush when its list (n2) or rb differs from the accumulated ones. */
static void drpb_flush_if(const na_fast *f, na_thread *t, double *dr, int64_t i2, int64_t rb)
{
    if (t->acc_rb != INT64_MIN && (rb != t->acc_rb || f->wcnt[2][i2] != t->cached_n2))
        drpb_flush(t, dr);
}

static void drpb_add(na_thread *t, const float *ds, int n, int64_t rb)
{
    if (t->acc_rb == INT64_MIN) {
        for (int j = 0; j < n; j++)
            t->b2[j] = 0.0f;
        t->acc_rb = rb;
    }
#pragma omp simd
    for (int j = 0; j < n; j++)
        t->b2[j] += ds[j];
}

/* The calling thread's number in its OpenMP team (0 without OpenMP). */
static int this_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* One work item: the pixels (i0, i1, order2[u]) for u in [u0, u1) of head bh. */
typedef void (*na_line_fn)(const na_fast *f, const void *args, na_thread *t, int64_t bh, int64_t i0,
                           int64_t i1, int64_t u0, int64_t u1);

static void run_lines(const na_fast *f, na_line_fn fn, const void *args)
{
    const int64_t L0 = f->pb.len[0], L1 = f->pb.len[1], L2 = f->pb.len[2];
    const int64_t nitems = f->nlines * f->nchunks;
#pragma omp parallel num_threads(f->nthreads)
    {
        na_thread t = thread_scratch(f, this_thread());
#pragma omp for schedule(static)
        for (int64_t it = 0; it < nitems; it++) {
            int64_t line = it / f->nchunks, ch = it % f->nchunks;
            int64_t bh = line / (L0 * L1), rest = line % (L0 * L1);
            int64_t i0 = f->order[0][rest / L1], i1 = f->order[1][rest % L1];
            int64_t u0 = ch * f->chunk, u1 = u0 + f->chunk < L2 ? u0 + f->chunk : L2;
            t.sig_len = -1;
            t.cached_n2 = -1;
            if (u0 < u1)
                fn(f, args, &t, bh, i0, i1, u0, u1);
        }
    }
}

/* drpb = sum of the per-thread partials (thread order: deterministic for a given thread count). */
static void reduce_drpb(const na_fast *f, float *drpb)
{
    const int64_t n = f->pb.heads * f->pb.rpb_size;
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int th = 0; th < f->nthreads; th++)
            s += thread_scratch(f, th).drpb[i];
        drpb[i] = (float)s;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * The ops.
 * ------------------------------------------------------------------------------------------------- */

typedef struct na_args {
    const float *q, *k, *v, *rpb, *attn, *out, *lse, *d_out, *d_attn, *delta;
    float *o_out, *o_lse, *o_attn, *o_dq, *o_dk, *o_dv, *o_delta;
    /* bf16 mode (f->bf16): the bits of q, k, v and d_out rounded to bf16, same layout; the products read
     * these, delta still reads the f32 d_out and out. */
    const uint16_t *q16, *k16, *v16, *g16;
} na_args;

/* The products of the fused kernels on operand x (f32 values x, or in bf16 mode their bits x16; both
 * at the same element offsets): f32 micro-kernels, or the AVX512-BF16 ones of na_cpu_bf16.c. */
#define NA_OPND(name) a->name, a->name##16

static float op_dots(const na_fast *f, const float *x, const uint16_t *x16, int64_t xo, const float *rows,
                     const uint16_t *rows16, int64_t ro, const int64_t *off, int n, float scale, const float *bias,
                     const int32_t *bidx, float *out)
{
    if (f->bf16)
        return na_bf16_dots(f->D, x + xo, rows16 + ro, off, n, scale, bias, bidx, out); /* x: f32 */
    return dots(&f->dv, x + xo, rows + ro, off, n, scale, bias, bidx, out);
}

static void op_axpys(const na_fast *f, const float *coef, const float *rows, const uint16_t *rows16, int64_t ro,
                     const int64_t *off, int n, float factor, float *out)
{
    if (f->bf16)
        na_bf16_axpys(f->D, coef, rows16 + ro, off, n, factor, out);
    else
        axpys(&f->dv, coef, rows + ro, off, n, factor, out);
}

/* Loop over the pixels of a work item. Inside: D, K, N, h, i2, qi (query row index within the whole
 * tensor), and for the query side qb (the query's first key on axis 2, in elements) and rb (its rpb
 * index of key 0 on axis 2). */
#define NA_LINE_BEGIN                                                                   \
    const int64_t D = f->D, K = f->K, N = f->N;                                         \
    const int64_t line0 = bh * N + (i0 * f->pb.len[1] + i1) * f->pb.len[2];             \
    (void)K;                                                                            \
    for (int64_t u = u0; u < u1; u++) {                                                 \
        const int64_t i2 = f->order[2][u];                                              \
        const int64_t qi = line0 + i2;                                                  \
        const int64_t qn = line0 + f->order[2][u + 2 < u1 ? u + 2 : u];                 \
        const int64_t qb = f->wkey0[2][i2] * D, rb = f->wrpb0[2][i2];                   \
        (void)qb, (void)rb, (void)qn;

#define NA_LINE_END }

/* Prefetches a row of n floats. With dilation the rows of one sub-grid are far apart in memory, and
 * the hardware prefetchers miss them: each line function prefetches its next rows two queries ahead. */
static inline void prefetch_row(const float *p, int64_t n)
{
#if defined(__GNUC__)
    for (int64_t c = 0; c < n; c += 16)
        __builtin_prefetch(p + c);
#else
    (void)p, (void)n;
#endif
}

/* Same, for a row about to be written. */
static inline void prefetch_row_w(float *p, int64_t n)
{
#if defined(__GNUC__)
    for (int64_t c = 0; c < n; c += 16)
        __builtin_prefetch(p + c, 1);
#else
    (void)p, (void)n;
#endif
}

/* With dilation, key rows are first touched in a scattered order that the hardware prefetchers do not
 * follow: prefetch the last key line of the window of a query two steps ahead (the line that is new
 * to the rows visited so far). */
static void prefetch_keys(const na_fast *f, const na_thread *t, const na_args *a, int64_t kvo, int64_t i2n, int n)
{
    const int64_t base = kvo + f->wkey0[2][i2n] * f->D;
    for (int j = n - (int)t->cached_n2 > 0 ? n - (int)t->cached_n2 : 0; j < n; j++) {
        if (f->bf16) { /* half the bytes: every other 64-byte line of a float row */
            prefetch_row((const float *)(a->k16 + base + t->off[j]), (f->D + 1) / 2);
            prefetch_row((const float *)(a->v16 + base + t->off[j]), (f->D + 1) / 2);
        } else {
            prefetch_row(a->k + base + t->off[j], f->D);
            prefetch_row(a->v + base + t->off[j], f->D);
        }
    }
}

/* rpb of head bh, or NULL. */
static const float *head_rpb(const na_fast *f, const float *rpb, int64_t bh)
{
    return rpb ? rpb + (bh % f->pb.heads) * f->pb.rpb_size : NULL;
}

/* rows mode, the query side of line (i0, i1) of head bh: its window's key lines (as pack lines), slot
 * bases, rpb bases and, with rpb, the bias of each slot for the queries unclamped along axis 2 (rpb
 * index k2/2 + t2 there). */
static void rows_line_q(const na_fast *f, na_thread *t, const float *rpb, int64_t bh, int64_t i0, int64_t i1)
{
    const na_problem *pb = &f->pb;
    const int64_t L1 = pb->len[1], k1 = pb->kernel[1], k2 = pb->kernel[2], E1 = pb->rpb_ext[1], E2 = pb->rpb_ext[2];
    const int64_t d0 = pb->dilation[0], d1 = pb->dilation[1];
    const float *rh = head_rpb(f, rpb, bh);
    int o = 0;
    for (int64_t t0 = 0; t0 < f->wcnt[0][i0]; t0++)
        for (int64_t t1 = 0; t1 < f->wcnt[1][i1]; t1++, o++) {
            t->gline[o] = (f->wkey0[0][i0] + t0 * d0) * L1 + f->wkey0[1][i1] + t1 * d1;
            t->gsbase[o] = (t0 * k1 + t1) * k2;
            t->grb[o] = ((f->wrpb0[0][i0] + t0) * E1 + f->wrpb0[1][i1] + t1) * E2 + k2 / 2;
            for (int64_t t2 = 0; rh && t2 < k2; t2++)
                t->lbias[o * k2 + t2] = rh[t->grb[o] + t2];
        }
    t->geo.n01 = o;
}

/* rows mode: packs line r of head bh into the thread's packs and bf16 rows (na_rows_pack), from the
 * f32 operands. */
static void rows_pack_line(const na_fast *f, const na_args *a, na_thread *t, int64_t bh, int64_t r)
{
    const int64_t L2 = f->pb.len[2], D = f->D, nl = f->pb.len[0] * f->pb.len[1];
    const int64_t chl = (D + 1) / 2 * L2, coll = D * L2, x = (bh * nl + r) * L2 * D, h = r * L2 * D;
    const int64_t *ord = f->order[2];
    const uint8_t *nkv = f->need_kv, *nqg = f->need_qg;
    if (f->rows == 1) {
        na_rows_pack(a->k + x, ord, L2, D, t->h16[1] + h, nkv, t->pk[0] + r * chl, NULL);
        na_rows_pack(a->v + x, ord, L2, D, t->h16[2] + h, nkv, NULL, t->pk[1] + r * coll);
    } else {
        na_rows_pack(a->q + x, ord, L2, D, t->h16[0] + h, nqg, NULL, t->pk[3] + r * coll);
        na_rows_pack(a->k + x, ord, L2, D, t->h16[1] + h, nkv, t->pk[0] + r * chl, t->pk[2] + r * coll);
        na_rows_pack(a->v + x, ord, L2, D, t->h16[2] + h, nkv, t->pk[1] + r * chl, NULL);
        na_rows_pack(a->d_out + x, ord, L2, D, t->h16[3] + h, nqg, NULL, t->pk[4] + r * coll);
    }
}

/* rows mode: a new work item, head bh, lines whose index along axis A is g modulo dA. */
static void rows_item(na_thread *t, int64_t bh, int A, int64_t dA, int64_t g)
{
    t->pk_bh = bh;
    t->pk_next = 0;
    t->pk_axis = A;
    t->pk_d = dA;
    t->pk_g = g;
}

/* rows mode: packs (in line order) the item's lines up to the last key line of query line (i0, i1)'s
 * window, just before they are needed: a line is packed when the first query line that reads it comes,
 * and the ~k lines in use stay in the cache instead of a whole head packed ahead. */
static void rows_need(const na_fast *f, const na_args *a, na_thread *t, int64_t i0, int64_t i1)
{
    const int64_t L1 = f->pb.len[1];
    const int64_t y0 = f->wkey0[0][i0] + (f->wcnt[0][i0] - 1) * f->pb.dilation[0];
    const int64_t y1 = f->wkey0[1][i1] + (f->wcnt[1][i1] - 1) * f->pb.dilation[1];
    const int64_t nl = f->pb.len[0] * L1, last = y0 * L1 + y1;
    if (t->pk_next > last)
        return;
    for (; t->pk_next <= last; t->pk_next++) {
        const int64_t r = t->pk_next;
        if ((t->pk_axis == 0 ? r / L1 : r % L1) % t->pk_d == t->pk_g)
            rows_pack_line(f, a, t, t->pk_bh, r);
    }
    /* the next line's rows, likely packed for the next query line, come in meanwhile */
    const int64_t n = f->pb.len[2] * f->D, x = (t->pk_bh * nl + t->pk_next) * n;
    const float *src[4] = {a->q, a->k, a->v, a->d_out};
    for (int i = f->rows == 1 ? 1 : 0; t->pk_next < nl && i < (f->rows == 1 ? 3 : 4); i++)
        prefetch_row(src[i] + x, n);
}

static void qk_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                    int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *kh = a->k + bh * f->N * f->D;
    const float scale = f->pb.scale;
    NA_LINE_BEGIN
    prefetch_row(a->q + qn * D, D);
    prefetch_row_w(a->o_attn + qn * K, K);
    int n = query_slots(f, t, i0, i1, i2);
    na_bias bias = query_bias(f, t, a->rpb, bh, i0, i1, i2);
    dots(&f->dv, a->q + qi * D, kh + qb, t->off, n, scale, bias.base, bias.idx, t->b0);
    float *arow = a->o_attn + qi * K;
    if (n < K)
        for (int64_t s = 0; s < K; s++)
            arow[s] = -INFINITY;
    for (int j = 0; j < n; j++)
        arow[t->slot[j]] = t->b0[j];
    NA_LINE_END
}

static void av_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                    int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *vh = a->v + bh * f->N * f->D;
    NA_LINE_BEGIN
    prefetch_row(a->attn + qn * K, K);
    prefetch_row_w(a->o_out + qn * D, D);
    int n = query_slots(f, t, i0, i1, i2);
    const float *arow = a->attn + qi * K;
    for (int j = 0; j < n; j++)
        t->b0[j] = arow[t->slot[j]];
    axpys(&f->dv, t->b0, vh + qb, t->off, n, 1.0f, a->o_out + qi * D);
    NA_LINE_END
}

/* Query side of the qk backward: dq and drpb. */
static void qk_bwd_q_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                          int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *kh = a->k + bh * f->N * f->D;
    double *dr = t->drpb ? t->drpb + (bh % f->pb.heads) * f->pb.rpb_size : NULL;
    drpb_begin(t);
    NA_LINE_BEGIN
    prefetch_row(a->d_attn + qn * K, K);
    if (dr)
        drpb_flush_if(f, t, dr, i2, rb);
    int n = query_slots(f, t, i0, i1, i2);
    const float *grow = a->d_attn + qi * K;
    for (int j = 0; j < n; j++)
        t->b0[j] = grow[t->slot[j]];
    axpys(&f->dv, t->b0, kh + qb, t->off, n, f->pb.scale, a->o_dq + qi * D);
    if (dr)
        drpb_add(t, t->b0, n, rb);
    NA_LINE_END
    if (dr)
        drpb_flush(t, dr);
}

/* Key side of the qk backward: dk over the inverse neighbourhood. */
static void qk_bwd_k_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                          int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *qh = a->q + bh * f->N * f->D;
    const float *gh = a->d_attn + bh * f->N * f->K;
    NA_LINE_BEGIN
    int n = key_queries(f, t, i0, i1, i2);
    const float *g = gh + i2 * K;
    for (int j = 0; j < n; j++)
        t->b0[j] = g[t->pix[j] * K + t->slot[j]];
    axpys(&f->dv, t->b0, qh + i2 * D, t->off, n, f->pb.scale, a->o_dk + qi * D);
    NA_LINE_END
}

/* Query side of the av backward: d_attn = d_out . v[key]. */
static void av_bwd_q_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                          int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *vh = a->v + bh * f->N * f->D;
    NA_LINE_BEGIN
    prefetch_row(a->d_out + qn * D, D);
    int n = query_slots(f, t, i0, i1, i2);
    dots(&f->dv, a->d_out + qi * D, vh + qb, t->off, n, 1.0f, NULL, NULL, t->b0);
    float *grow = a->o_attn + qi * K;
    if (n < K)
        memset(grow, 0, sizeof(float) * (size_t)K);
    for (int j = 0; j < n; j++)
        grow[t->slot[j]] = t->b0[j];
    NA_LINE_END
}

/* Key side of the av backward: dv over the inverse neighbourhood. */
static void av_bwd_k_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                          int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const float *goh = a->d_out + bh * f->N * f->D;
    const float *wh = a->attn + bh * f->N * f->K;
    NA_LINE_BEGIN
    int n = key_queries(f, t, i0, i1, i2);
    const float *w = wh + i2 * K;
    for (int j = 0; j < n; j++)
        t->b0[j] = w[t->pix[j] * K + t->slot[j]];
    axpys(&f->dv, t->b0, goh + i2 * D, t->off, n, 1.0f, a->o_dv + qi * D);
    NA_LINE_END
}

static void fused_fwd_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                           int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const int64_t kvo = bh * f->N * f->D; /* the head's first key / value row */
    const float scale = f->pb.scale;
    const int64_t qs = f->pb.dilation[2] * f->D; /* consecutive positions of a dilation group */
    float *s = t->b0;
    if (f->rows) {
        rows_need(f, a, t, i0, i1);
        rows_line_q(f, t, a->rpb, bh, i0, i1);
    }
    NA_LINE_BEGIN
    const int m = f->rows ? rows_block(f->qrun, u, u1) : 0;
    if (m) { /* queries in lanes; the next block's rows on their way */
        for (int j = 0; j < 16 && u + m + j < u1; j++) {
            prefetch_row(a->q + (qi + (m + j) * (qs / D)) * D, D);
            prefetch_row_w(a->o_out + (qi + (m + j) * (qs / D)) * D, D);
        }
        na_rows_fwd(&t->geo, m, u, a->q + qi * D, qs, t->pk[0], t->pk[1], scale, a->rpb ? t->lbias : NULL, t->lane,
                    a->o_out + qi * D, qs, a->o_lse + qi, qs / D);
        u += m - 1;
        continue;
    }
    prefetch_row(a->q + qn * D, D);
    prefetch_row_w(a->o_out + qn * D, D);
    int n = query_slots(f, t, i0, i1, i2);
    if (f->dilated && !f->rows)
        prefetch_keys(f, t, a, kvo, qn - line0, n);
    na_bias bias = query_bias(f, t, a->rpb, bh, i0, i1, i2);
    /* rows mode: the head's bf16 rows are the thread's (h16), at offsets within the head */
    const int64_t ko = f->rows ? qb : kvo + qb;
    float mx = op_dots(f, NA_OPND(q), qi * D, a->k, f->rows ? t->h16[1] : a->k16, ko, t->off, n, scale, bias.base,
                       bias.idx, s);
    float sum = exp_row(s, n, mx); /* P relative to the row max, f32; its sum too */
    op_axpys(f, s, a->v, f->rows ? t->h16[2] : a->v16, ko, t->off, n, 1.0f / sum, a->o_out + qi * D);
    a->o_lse[qi] = mx + logf(sum);
    NA_LINE_END
}

/* delta = rowsum(d_out * out) per query. */
static void delta_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                       int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    (void)t;
    NA_LINE_BEGIN
    a->o_delta[qi] = dot1(D, a->d_out + qi * D, a->out + qi * D);
    NA_LINE_END
}

/* Pass A of the fused backward (per query): weights from lse, dS = P * (d_out.v - delta), dq, drpb. */
static void fused_bwd_q_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                             int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const int64_t kvo = bh * f->N * f->D;
    double *dr = t->drpb ? t->drpb + (bh % f->pb.heads) * f->pb.rpb_size : NULL;
    const float scale = f->pb.scale;
    float *s = t->b0, *dp = t->b1;
    drpb_begin(t);
    NA_LINE_BEGIN
    prefetch_row(a->q + qn * D, D);
    prefetch_row(a->d_out + qn * D, D);
    prefetch_row_w(a->o_dq + qn * D, D);
    if (dr)
        drpb_flush_if(f, t, dr, i2, rb);
    int n = query_slots(f, t, i0, i1, i2);
    if (f->dilated)
        prefetch_keys(f, t, a, kvo, qn - line0, n);
    na_bias bias = query_bias(f, t, a->rpb, bh, i0, i1, i2);
    op_dots(f, NA_OPND(q), qi * D, NA_OPND(k), kvo + qb, t->off, n, scale, bias.base, bias.idx, s);
    exp_row(s, n, a->lse[qi]);
    op_dots(f, a->d_out, a->g16, qi * D, NA_OPND(v), kvo + qb, t->off, n, 1.0f, NULL, NULL, dp);
    const float delta = a->delta[qi];
#pragma omp simd
    for (int j = 0; j < n; j++)
        dp[j] = s[j] * (dp[j] - delta);
    op_axpys(f, dp, NA_OPND(k), kvo + qb, t->off, n, scale, a->o_dq + qi * D);
    if (dr)
        drpb_add(t, dp, n, rb);
    NA_LINE_END
    if (dr)
        drpb_flush(t, dr);
}

/* Pass B of the fused backward (per key): rebuild P and dS over the inverse neighbourhood; dk, dv. */
static void fused_bwd_k_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh, int64_t i0,
                             int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const int64_t hoff = bh * f->N, ho = hoff * f->D;
    const float *rpbh = head_rpb(f, a->rpb, bh);
    const float scale = f->pb.scale;
    float *s = t->b0, *dp = t->b1, *sh = t->b2;
    NA_LINE_BEGIN
    prefetch_row(a->k + qn * D, D);
    prefetch_row(a->v + qn * D, D);
    prefetch_row_w(a->o_dk + qn * D, D);
    prefetch_row_w(a->o_dv + qn * D, D);
    int n = key_queries(f, t, i0, i1, i2);
    const float *lse = a->lse + hoff + i2, *delta = a->delta + hoff + i2;
    op_dots(f, NA_OPND(k), qi * D, NA_OPND(q), ho + i2 * D, t->off, n, scale, rpbh, t->ridx, s);
    for (int j = 0; j < n; j++)
        sh[j] = lse[t->pix[j]];
    exp_row_shifts(s, sh, n);
    op_dots(f, NA_OPND(v), qi * D, a->d_out, a->g16, ho + i2 * D, t->off, n, 1.0f, NULL, NULL, dp);
    for (int j = 0; j < n; j++)
        dp[j] = s[j] * (dp[j] - delta[t->pix[j]]);
    op_axpys(f, dp, NA_OPND(q), ho + i2 * D, t->off, n, scale, a->o_dk + qi * D);
    op_axpys(f, s, a->d_out, a->g16, ho + i2 * D, t->off, n, 1.0f, a->o_dv + qi * D);
    NA_LINE_END
}

/* Ring mode of the fused backward. A work item is one (batch, head, dilation group along the ring
 * axis A: rows in 2-D, planes in 3-D, the whole line in 1-D). Its query slabs are visited in order; each
 * one's weights P and dS go into a per-thread ring of `ring_depth` slabs (pass A, which also gives dq
 * and drpb), and as soon as the last query slab of a key slab's inverse neighbourhood is done, that key
 * slab's dk and dv are gathered from the ring (pass B) -- no recomputation of the logits, and no
 * [.., K] tensor larger than the ring. */
static void ring_slot_base(const na_fast *f, int64_t i0, int64_t i1, int64_t *base)
{
    const int64_t iA = f->ring_axis == 0 ? i0 : i1, dA = f->pb.dilation[f->ring_axis];
    *base = ((iA / dA) % f->ring_depth * f->slab_lines + (f->ring_axis == 0 ? i1 : 0)) * f->pb.len[2] * f->K;
}

static void fused_bwd_q_ring_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh,
                                  int64_t i0, int64_t i1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const int64_t kvo = bh * f->N * f->D, D0 = f->D;
    double *dr = t->drpb ? t->drpb + (bh % f->pb.heads) * f->pb.rpb_size : NULL;
    const float scale = f->pb.scale;
    int64_t rbase;
    ring_slot_base(f, i0, i1, &rbase);
    drpb_begin(t);
    /* rows mode: the ring holds this line's P and dS as [slot][position] rows; the bf16 rows of the
     * per-query kernels are the thread's, at offsets within the head */
    const int64_t qs = f->pb.dilation[2] * D0, ko = f->rows ? 0 : kvo;
    const uint16_t *k16 = f->rows ? t->h16[1] : a->k16, *v16 = f->rows ? t->h16[2] : a->v16;
    if (f->rows) {
        rows_need(f, a, t, i0, i1);
        rows_line_q(f, t, a->rpb, bh, i0, i1);
        if (dr)
            memset(t->dracc, 0, sizeof(float) * 16 * (size_t)(t->geo.n01 * f->pb.kernel[2]));
    }
    NA_LINE_BEGIN
    const int m = f->rows ? rows_block(f->qrun, u, u1) : 0;
    if (m) { /* queries in lanes; the next block's rows on their way */
        for (int j = 0; j < 16 && u + m + j < u1; j++) {
            const int64_t qj = qi + (m + j) * (qs / D);
            prefetch_row(a->q + qj * D, D);
            prefetch_row(a->d_out + qj * D, D);
            prefetch_row(a->out + qj * D, D);
            prefetch_row_w(a->o_dq + qj * D, D);
        }
        for (int j = 0; j < m; j++) {
            const int64_t qj = qi + j * (qs / D);
            t->lse16[j] = a->lse[qj];
            t->delta16[j] = dot1(D, a->d_out + qj * D, a->out + qj * D);
        }
        na_rows_bwd_q(&t->geo, m, u, a->q + qi * D, a->d_out + qi * D, qs, t->pk[0], t->pk[1], t->pk[2], scale,
                      a->rpb ? t->lbias : NULL, t->lse16, t->delta16, t->lane, t->ring_p + rbase, t->ring_ds + rbase,
                      dr ? t->dracc : NULL, a->o_dq + qi * D);
        u += m - 1;
        continue;
    }
    prefetch_row(a->q + qn * D, D);
    prefetch_row(a->d_out + qn * D, D);
    prefetch_row(a->out + qn * D, D);
    prefetch_row_w(a->o_dq + qn * D, D);
    if (dr)
        drpb_flush_if(f, t, dr, i2, rb);
    int n = query_slots(f, t, i0, i1, i2);
    if (f->dilated && !f->rows)
        prefetch_keys(f, t, a, kvo, qn - line0, n);
    /* Full windows (slot j at list position j) go straight into the ring; masked ones (and all in rows
     * mode) via scratch. */
    float *rp = t->ring_p + rbase + (f->rows ? 0 : i2 * K), *rd = t->ring_ds + rbase + (f->rows ? 0 : i2 * K);
    const int direct = n == K && !f->rows;
    float *s = direct ? rp : t->b0, *dp = direct ? rd : t->b1;
    na_bias bias = query_bias(f, t, a->rpb, bh, i0, i1, i2);
    op_dots(f, NA_OPND(q), qi * D, a->k, k16, ko + qb, t->off, n, scale, bias.base, bias.idx, s);
    exp_row(s, n, a->lse[qi]);
    op_dots(f, a->d_out, a->g16, qi * D, a->v, v16, ko + qb, t->off, n, 1.0f, NULL, NULL, dp);
    const float delta = dot1(D, a->d_out + qi * D, a->out + qi * D); /* f32 d_out and out, always */
#pragma omp simd
    for (int j = 0; j < n; j++)
        dp[j] = s[j] * (dp[j] - delta);
    if (f->rows) {
        const int64_t L2 = f->pb.len[2], pu = f->upos[i2];
        for (int j = 0; j < n; j++) {
            rp[t->slot[j] * L2 + pu] = s[j];
            rd[t->slot[j] * L2 + pu] = dp[j];
        }
    } else if (!direct) {
        for (int j = 0; j < n; j++) {
            rp[t->slot[j]] = s[j];
            rd[t->slot[j]] = dp[j];
        }
    }
    op_axpys(f, dp, a->k, k16, ko + qb, t->off, n, scale, a->o_dq + qi * D);
    if (dr)
        drpb_add(t, dp, n, rb); /* drpb from the f32 dS */
    NA_LINE_END
    if (dr)
        drpb_flush(t, dr);
    if (f->rows && dr) /* the lane blocks' partials, slot by slot (lanes in order: deterministic) */
        for (int o = 0; o < t->geo.n01; o++)
            for (int t2 = 0; t2 < f->pb.kernel[2]; t2++) {
                const float *acc = t->dracc + 16 * (o * f->pb.kernel[2] + t2);
                double sum = 0.0;
                for (int j = 0; j < 16; j++)
                    sum += acc[j];
                dr[t->grb[o] + t2] += sum;
            }
}

/* Pass B in ring mode for the keys of line (y0, y1): the outer part of the inverse list (query lines,
 * with their ring rows and slot offsets) is built once per line, the axis-2 part per key. */
static void fused_bwd_k_ring_line(const na_fast *f, const void *vargs, na_thread *t, int64_t bh,
                                  int64_t y0, int64_t y1, int64_t u0, int64_t u1)
{
    const na_args *a = vargs;
    const na_problem *pb = &f->pb;
    const int64_t D = f->D, K = f->K, L1 = pb->len[1], L2 = pb->len[2];
    const int64_t d0 = pb->dilation[0], d1 = pb->dilation[1], d2 = pb->dilation[2];
    const int k1 = pb->kernel[1], k2 = pb->kernel[2];
    const int64_t R = f->ring_depth, dA = pb->dilation[f->ring_axis];
    const int64_t ho = bh * f->N * D;
    int64_t *ooff = t->off, *ocix = t->cix, *ioff = t->pix, *icix = t->in_cix;
    int no = 0;
    for (int64_t i0 = f->ilo[0][y0]; i0 < f->ihi[0][y0]; i0 += d0) {
        const int64_t t0 = f->sub[0][y0] - f->wstart[0][i0];
        for (int64_t i1 = f->ilo[1][y1]; i1 < f->ihi[1][y1]; i1 += d1) {
            const int64_t t1 = f->sub[1][y1] - f->wstart[1][i1];
            const int64_t iA = f->ring_axis == 0 ? i0 : i1;
            const int64_t rrow = ((iA / dA) % R * f->slab_lines + (f->ring_axis == 0 ? i1 : 0)) * L2;
            ooff[no] = (i0 * L1 + i1) * L2 * D;
            /* rows mode: the ring's [slot][position] rows of that query line */
            ocix[no] = rrow * K + (t0 * k1 + t1) * k2 * (f->rows ? L2 : 1);
            if (f->rows) {
                t->gline[no] = i0 * L1 + i1;
                t->gsbase[no] = (t0 * k1 + t1) * k2;
                t->grline[no] = rrow * K;
            }
            no++;
        }
    }
    t->geo.n01 = no;
    const int64_t kbase = (bh * f->N + (y0 * L1 + y1) * L2) * D, ks = d2 * D;
    for (int64_t u = u0; u < u1; u++) {
        const int64_t y2 = f->order[2][u], p2 = f->sub[2][y2];
        const int m = f->rows ? rows_block(f->krun, u, u1) : 0;
        if (m) { /* keys in lanes */
            na_rows_bwd_k(&t->geo, m, u, t->ring_p, t->ring_ds, t->pk[3], t->pk[4], pb->scale, t->lane,
                          a->o_dk + kbase + y2 * D, a->o_dv + kbase + y2 * D, ks);
            u += m - 1;
            continue;
        }
        const int64_t yn = f->order[2][u + 2 < u1 ? u + 2 : u];
        prefetch_row_w(a->o_dk + kbase + yn * D, D);
        prefetch_row_w(a->o_dv + kbase + yn * D, D);
        int ni = 0;
        for (int64_t i2 = f->ilo[2][y2]; i2 < f->ihi[2][y2]; i2 += d2, ni++) {
            ioff[ni] = (i2 - y2) * D;
            icix[ni] = f->rows ? (p2 - f->wstart[2][i2]) * L2 + f->upos[i2] - u : (i2 - y2) * K + p2 - f->wstart[2][i2];
        }
        if (f->rows) /* the thread's bf16 rows of the head; the ring's rows at position u */
            na_bf16_kgrad(D, t->h16[0] + y2 * D, t->h16[3] + y2 * D,
                          t->ring_p + u, t->ring_ds + u, ooff, ocix, no, ioff, icix, ni, pb->scale,
                          a->o_dk + kbase + y2 * D, a->o_dv + kbase + y2 * D);
        else if (f->bf16)
            na_bf16_kgrad(D, a->q16 + ho + y2 * D, a->g16 + ho + y2 * D, t->ring_p + y2 * K, t->ring_ds + y2 * K,
                          ooff, ocix, no, ioff, icix, ni, pb->scale, a->o_dk + kbase + y2 * D,
                          a->o_dv + kbase + y2 * D);
        else
            kgrad(&f->dv, a->q + ho + y2 * D, a->d_out + ho + y2 * D, t->ring_p + y2 * K, t->ring_ds + y2 * K,
                  ooff, ocix, no, ioff, icix, ni, pb->scale, a->o_dk + kbase + y2 * D, a->o_dv + kbase + y2 * D);
    }
}

/* All lines of slab iA (index along the ring axis) through fn. */
static void ring_slab(const na_fast *f, na_line_fn fn, const na_args *a, na_thread *t, int64_t bh,
                      int64_t iA)
{
    for (int64_t l = 0; l < f->slab_lines; l++) {
        t->sig_len = -1;
        t->cached_n2 = -1;
        if (f->ring_axis == 0)
            fn(f, a, t, bh, iA, l, 0, f->pb.len[2]);
        else
            fn(f, a, t, bh, 0, iA, 0, f->pb.len[2]);
    }
}

static void run_ring(const na_fast *f, const na_args *a)
{
    const int A = f->ring_axis;
    const int64_t L = f->pb.len[A], dA = f->pb.dilation[A];
#pragma omp parallel num_threads(f->nthreads)
    {
        na_thread t = thread_scratch(f, this_thread());
#pragma omp for schedule(static) /* static: drpb partials per thread stay deterministic */
        for (int64_t it = 0; it < f->ring_items; it++) {
            const int64_t bh = it / dA, g = it % dA;
            if (f->rows)
                rows_item(&t, bh, A, dA, g);
            int64_t y = g; /* next key slab to finish */
            for (int64_t iq = g; iq < L; iq += dA) {
                ring_slab(f, fused_bwd_q_ring_line, a, &t, bh, iq);
                for (; y < L; y += dA) {
                    /* last query slab of y's inverse neighbourhood */
                    int64_t lo = f->ilo[A][y], hi = f->ihi[A][y];
                    if (lo + (hi - 1 - lo) / dA * dA > iq)
                        break;
                    ring_slab(f, fused_bwd_k_ring_line, a, &t, bh, y);
                }
            }
        }
    }
}

/* rows mode's forward: one head per work item, its lines in order through fn (which packs them as
 * they are needed: rows_need). */
static void run_heads(const na_fast *f, na_line_fn fn, const na_args *a)
{
    const int64_t L1 = f->pb.len[1], nl = f->pb.len[0] * L1, nbh = f->pb.batch * f->pb.heads;
#pragma omp parallel num_threads(f->nthreads)
    {
        na_thread t = thread_scratch(f, this_thread());
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < nbh; bh++) {
            rows_item(&t, bh, 0, 1, 0);
            for (int64_t r = 0; r < nl; r++) {
                t.sig_len = -1;
                t.cached_n2 = -1;
                fn(f, a, &t, bh, r / L1, r % L1, 0, f->pb.len[2]);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------------
 * Entry points.
 * ------------------------------------------------------------------------------------------------- */

nat_status na_cpu_qk(const na_problem *pb, const float *q, const float *k, const float *rpb, float *attn)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, 0, 0, rpb));
    na_args a = {.q = q, .k = k, .rpb = rpb, .o_attn = attn};
    run_lines(&f, qk_line, &a);
    fast_free(&f);
    return NAT_OK;
}

nat_status na_cpu_av(const na_problem *pb, const float *attn, const float *v, float *out)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, 0, 0, NULL));
    na_args a = {.attn = attn, .v = v, .o_out = out};
    run_lines(&f, av_line, &a);
    fast_free(&f);
    return NAT_OK;
}

nat_status na_cpu_qk_backward(const na_problem *pb, const float *d_attn,
                              const float *q, const float *k, float *dq, float *dk, float *drpb)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, drpb != NULL, 0, NULL));
    na_args a = {.d_attn = d_attn, .q = q, .k = k, .o_dq = dq, .o_dk = dk};
    run_lines(&f, qk_bwd_q_line, &a);
    run_lines(&f, qk_bwd_k_line, &a);
    if (drpb)
        reduce_drpb(&f, drpb);
    fast_free(&f);
    return NAT_OK;
}

nat_status na_cpu_av_backward(const na_problem *pb, const float *d_out,
                              const float *attn, const float *v, float *d_attn, float *dv)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, 0, 0, NULL));
    na_args a = {.d_out = d_out, .attn = attn, .v = v, .o_attn = d_attn, .o_dv = dv};
    run_lines(&f, av_bwd_q_line, &a);
    run_lines(&f, av_bwd_k_line, &a);
    fast_free(&f);
    return NAT_OK;
}

nat_status na_cpu_fused_forward(const na_problem *pb, const float *q, const float *k,
                                const float *v, const float *rpb, float *out, float *lse)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, 0, 0, rpb));
    na_args a = {.q = q, .k = k, .v = v, .rpb = rpb, .o_out = out, .o_lse = lse};
    run_lines(&f, fused_fwd_line, &a);
    fast_free(&f);
    return NAT_OK;
}

static nat_status pack_operands(const na_problem *pb, const float *const *x, int m, uint16_t **h, size_t *bytes);

/* The fused backward on a's operands: f32, or (bf16) the vdpbf16ps kernels, on the lane kernels' packs
 * made per head by the threads (rows mode) or on bf16 copies of q, k, v and d_out made here. */
static nat_status fused_backward_run(const na_problem *pb, na_args *ap, int bf16, float *drpb)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, drpb != NULL, 1, ap->rpb));
    f.bf16 = bf16;
    na_args a = *ap;
    size_t dbytes = 0, hbytes = 0;
    float *delta = NULL;
    uint16_t *h = NULL;
    nat_status st = bf16 ? rows_init(&f, 1) : NAT_OK;
    if (st == NAT_OK && bf16 && !f.rows) {
        const int64_t n = pb->batch * pb->heads * pb->npix * pb->dim;
        const float *x[4] = {a.q, a.k, a.v, a.d_out};
        st = pack_operands(pb, x, 4, &h, &hbytes);
        if (st == NAT_OK) {
            a.q16 = h;
            a.k16 = h + n;
            a.v16 = h + 2 * n;
            a.g16 = h + 3 * n;
        }
    }
    if (st == NAT_OK && f.ring) {
        run_ring(&f, &a); /* delta per query inside pass A */
    } else if (st == NAT_OK) {
        dbytes = sizeof(float) * (size_t)(pb->batch * pb->heads * f.N);
        st = nat_mem_alloc(NAT_CPU, dbytes, (void **)&delta);
        if (st == NAT_OK) {
            a.delta = a.o_delta = delta;
            run_lines(&f, delta_line, &a);
            run_lines(&f, fused_bwd_q_line, &a);
            run_lines(&f, fused_bwd_k_line, &a);
        }
    }
    if (st == NAT_OK && drpb)
        reduce_drpb(&f, drpb);
    if (delta)
        nat_mem_free(NAT_CPU, delta, dbytes);
    if (h)
        nat_mem_free(NAT_CPU, h, hbytes);
    fast_free(&f);
    return st;
}

nat_status na_cpu_fused_backward(const na_problem *pb, const float *q, const float *k,
                                 const float *v, const float *rpb, const float *out, const float *lse,
                                 const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    na_args a = {.q = q, .k = k, .v = v, .rpb = rpb, .out = out, .lse = lse, .d_out = d_out,
                 .o_dq = dq, .o_dk = dk, .o_dv = dv};
    return fused_backward_run(pb, &a, 0, drpb);
}

/* ---------------------------------------------------------------------------------------------------
 * Autocast (bf16) fused kernels: the drivers above with the products on bf16 operands (f->bf16, the
 * micro-kernels of na_cpu_bf16.c). The operands are packed to bf16 bits in scratch first (the values
 * come already rounded, so packing is exact; d_out is rounded here, once). Semantics: na_cpu.h.
 * ------------------------------------------------------------------------------------------------- */

na_cpu_autocast_kernel na_cpu_autocast_path(int f16)
{
    return !f16 && nat_cpu_bf16_vector_native() ? NA_CPU_AUTOCAST_BF16 : NA_CPU_AUTOCAST_EMULATED;
}

/* bf16 bits of the m q-shaped operands x[0..m) in one scratch block (*bytes long), x[i]'s at i * n. */
static nat_status pack_operands(const na_problem *pb, const float *const *x, int m, uint16_t **h, size_t *bytes)
{
    const int64_t n = pb->batch * pb->heads * pb->npix * pb->dim;
    *bytes = (size_t)m * sizeof(uint16_t) * (size_t)n;
    NAT_TRY(nat_mem_alloc(NAT_CPU, *bytes, (void **)h));
    na_bf16_pack(x, *h, m, n);
    return NAT_OK;
}

nat_status na_cpu_fused_forward_bf16(const na_problem *pb, const float *q, const float *k, const float *v,
                                     const float *rpb, float *out, float *lse)
{
    na_fast f;
    NAT_TRY(fast_init(&f, pb, 0, 0, rpb));
    f.bf16 = 1;
    na_args a = {.q = q, .k = k, .v = v, .rpb = rpb, .o_out = out, .o_lse = lse};
    nat_status st = rows_init(&f, 0);
    if (st == NAT_OK && f.rows) { /* packed per head by the threads */
        run_heads(&f, fused_fwd_line, &a);
    } else if (st == NAT_OK) {
        const int64_t n = pb->batch * pb->heads * pb->npix * pb->dim;
        const float *x[2] = {k, v}; /* q is only ever the x of a dot product: rounded there, not packed */
        uint16_t *h;
        size_t bytes;
        st = pack_operands(pb, x, 2, &h, &bytes);
        if (st == NAT_OK) {
            a.k16 = h;
            a.v16 = h + n;
            run_lines(&f, fused_fwd_line, &a);
            nat_mem_free(NAT_CPU, h, bytes);
        }
    }
    fast_free(&f);
    return st;
}

nat_status na_cpu_fused_backward_bf16(const na_problem *pb, const float *q, const float *k, const float *v,
                                      const float *rpb, const float *out, const float *lse, const float *d_out,
                                      float *dq, float *dk, float *dv, float *drpb)
{
    na_args a = {.q = q, .k = k, .v = v, .rpb = rpb, .out = out, .lse = lse, .d_out = d_out,
                 .o_dq = dq, .o_dk = dk, .o_dv = dv};
    return fused_backward_run(pb, &a, 1, drpb);
}

nat_status na_cpu_fused_forward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                         const float *v, const float *rpb, float *out, float *lse)
{
    if (na_cpu_autocast_path(f16) == NA_CPU_AUTOCAST_BF16)
        return na_cpu_fused_forward_bf16(pb, q, k, v, rpb, out, lse);
    return na_cpu_fused_forward(pb, q, k, v, rpb, out, lse);
}

nat_status na_cpu_fused_backward_autocast(const na_problem *pb, int f16, const float *q, const float *k,
                                          const float *v, const float *rpb, const float *out, const float *lse,
                                          const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    if (na_cpu_autocast_path(f16) == NA_CPU_AUTOCAST_BF16)
        return na_cpu_fused_backward_bf16(pb, q, k, v, rpb, out, lse, d_out, dq, dk, dv, drpb);
    return na_cpu_fused_backward(pb, q, k, v, rpb, out, lse, d_out, dq, dk, dv, drpb);
}

/* ---------------------------------------------------------------------------------------------------
 * The CPU table (na_backend.h). The ops round autocast operands with the GEMMs' rounding
 * (nat_round_array, core/half.c); the fused op then takes the autocast entries above.
 * ------------------------------------------------------------------------------------------------- */

static nat_status cpu_round(int device, int f16, const float *x, float *y, int64_t n)
{
    (void)device;
    nat_round_array(f16 ? NAT_PREC_F16 : NAT_PREC_BF16, x, y, n);
    return NAT_OK;
}

const na_backend na_cpu_backend = {
    .name = "cpu",
    .qk = na_cpu_qk,
    .av = na_cpu_av,
    .qk_backward = na_cpu_qk_backward,
    .av_backward = na_cpu_av_backward,
    .fused_forward = na_cpu_fused_forward,
    .fused_backward = na_cpu_fused_backward,
    .fused_forward_autocast = na_cpu_fused_forward_autocast,
    .fused_backward_autocast = na_cpu_fused_backward_autocast,
    .round = cpu_round,
    .versions = NULL,
};
