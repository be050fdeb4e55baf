/* layers/natten/cpu/na_cpu_bf16.c — AVX512-BF16 micro-kernels of the CPU's bf16 fused neighborhood
 * attention (declared in cpu/na_cpu_bf16.h; the drivers, entry points and the autocast semantics are in
 * cpu/na_cpu.c and docs/design.md §2).
 *
 * Every function here is compiled for AVX-512 F/BW/VL/DQ + BF16 by a target attribute, so the rest of
 * the build stays generic x86-64 (NAT_NATIVE=OFF) and a caller must check nat_cpu_isa_avx512_bf16()
 * first. vdpbf16ps multiplies pairs of adjacent bf16 values and adds both products to one f32 lane:
 *  - dots: the pairs run along the head dim (x and a key row, 16 channels per 256-bit instruction);
 *    each key leaves a vector of 8 partial sums, and 8 keys are reduced together (unpack / shuffle
 *    tree, 21 instructions) into one vector of 8 dot products. x is f32 (on the bf16 grid, or rounded
 *    here: d_out), so that only the rows need bf16 copies.
 *  - axpys / kgrad: the pairs run along the keys: rows j and j+1 are interleaved (vpunpck{l,h}wd) and
 *    multiplied by the broadcast pair (w_j, w_{j+1}) of weights rounded to bf16; the channel order the
 *    unpacks leave is undone once at the end (vpermt2ps). An odd last row pairs with zeros.
 * The head dim is covered in chunks of 32 channels, the last one masked (any D works; odd D pairs
 * the last channel with a zero).
 * These per-query kernels serve the border queries and keys (clamped windows), causal last axes and
 * D > 64; the other queries and keys run 16 per vector in the lane kernels of na_cpu_bf16_rows.c, which
 * need no horizontal sums.
 */
#include "layers/natten/cpu/na_cpu_bf16.h"

#include <math.h>
#include <string.h>

#include <immintrin.h> /* AVX-512 F/BW/VL/DQ, AVX512_BF16 (through the target attribute) */

#define NA_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))
#define NA_TI static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

/* Values [i, end) of one operand. A function of its own (not inlined) so that the OpenMP region below
 * holds no vector type: clang outlines a region's body without the target attribute. */
static NA_T __attribute__((noinline)) void pack_range(const float *x, uint16_t *y, int64_t i, int64_t end)
{
    for (; i < end; i += 16) {
        const int64_t cnt = end - i < 16 ? end - i : 16;
        const __mmask16 k = (__mmask16)((1u << cnt) - 1u);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, x + i));
        _mm256_mask_storeu_epi16(y + i, k, (__m256i)h);
    }
}

NA_T void na_bf16_pack(const float *const *x, uint16_t *y, int m, int64_t n)
{
    const int64_t chunk = 1024, nb = (n + chunk - 1) / chunk; /* chunks per operand; one region for all m */
#pragma omp parallel for schedule(static) if (m * n > 65536)
    for (int64_t b = 0; b < m * nb; b++) {
        const int64_t op = b / nb, i = chunk * (b % nb), end = i + chunk < n ? i + chunk : n;
        pack_range(x[op], y + op * n, i, end);
    }
}

/* Chunk c of a row of D bf16 values (32 per chunk, the last one masked by tail). */
NA_TI __m512bh ldc(const uint16_t *p, int c, int nch, __mmask32 tail)
{
    if (c == nch - 1)
        return (__m512bh)_mm512_maskz_loadu_epi16(tail, p + 32 * c);
    return (__m512bh)_mm512_loadu_si512(p + 32 * c);
}

NA_TI __mmask32 tail_mask(int64_t D, int nch)
{
    const int64_t rem = D - 32 * (int64_t)(nch - 1);
    return rem >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << rem) - 1u);
}

/* Lane r of the result = the sum of the 8 lanes of a[r]. */
NA_TI __m256 reduce8(const __m256 *a)
{
    __m256 u[4], v[2];
    for (int i = 0; i < 4; i++) /* per 128-bit lane: (x0+x2, y0+y2, x1+x3, y1+y3) of a[2i], a[2i+1] */
        u[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++) /* per 128-bit lane L: the lane-L partials of a[4i .. 4i+3] */
        v[i] = _mm256_add_ps(
            _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(u[2 * i]), _mm256_castps_pd(u[2 * i + 1]))),
            _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(u[2 * i]), _mm256_castps_pd(u[2 * i + 1]))));
    return _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20), _mm256_permute2f128_ps(v[0], v[1], 0x31));
}

/* Chunk c (16 channels) of a bf16 row, the last one masked by tail. */
NA_TI __m256bh ldh(const uint16_t *p, int c, int nch, __mmask16 tail)
{
    if (c == nch - 1)
        return (__m256bh)_mm256_maskz_loadu_epi16(tail, p + 16 * c);
    return (__m256bh)_mm256_loadu_si256((const __m256i *)(p + 16 * c));
}

/* 256-bit vectors on purpose: Zen 4 runs a 512-bit instruction as two 256-bit halves, and a dot
 * product ends in a horizontal sum whose cost grows with the width (8 keys x 8 lanes: 21 instructions,
 * against 45 for 16 x 16), while vdpbf16ps itself costs the same per product at either width. nch:
 * 16-channel chunks of the head dim, a constant in the instances below (x then stays in registers). */
NA_TI float dots_impl(const float *x, const uint16_t *base, const int64_t *off, int n, float scale,
                      const float *bias, const int32_t *bidx, float *out, const int nch, __mmask16 tail)
{
    __m256bh xr[8];
    for (int c = 0; c < nch && c < 8; c++) /* x rounded to bf16 here (exact when it is on the grid) */
        xr[c] = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(c == nch - 1 ? tail : (__mmask16)0xFFFF, x + 16 * c));
    const __m256 sc = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 8) {
        const int m = n - j < 8 ? n - j : 8;
        const __mmask8 k = (__mmask8)((1u << m) - 1u);
        __m256 acc[8];
        for (int r = 0; r < 8; r++) {
            acc[r] = _mm256_setzero_ps();
            if (r < m) { /* rows past n (the last block) stay zero */
                const uint16_t *row = base + off[j + r];
                for (int c = 0; c < nch; c++) {
                    __m256bh xc = c < 8 ? xr[c]
                                        : _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(
                                              c == nch - 1 ? tail : (__mmask16)0xFFFF, x + 16 * c));
                    acc[r] = _mm256_dpbf16_ps(acc[r], xc, ldh(row, c, nch, tail));
                }
            }
        }
        __m256 s = reduce8(acc);
        if (bias) {
            __m256 b = bidx ? _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), k, _mm256_maskz_loadu_epi32(k, bidx + j),
                                                        bias, 4)
                            : _mm256_maskz_loadu_ps(k, bias + j);
            s = _mm256_fmadd_ps(s, sc, b);
        } else {
            s = _mm256_mul_ps(s, sc);
        }
        _mm256_mask_storeu_ps(out + j, k, s);
        vmax = _mm256_mask_max_ps(vmax, k, vmax, s);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

NA_T float na_bf16_dots(int64_t D, const float *x, const uint16_t *base, const int64_t *off, int n, float scale,
                        const float *bias, const int32_t *bidx, float *out)
{
    const int nch = (int)((D + 15) / 16);
    const int64_t rem = D - 16 * (int64_t)(nch - 1);
    const __mmask16 tail = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
    switch (nch) {
    case 1: return dots_impl(x, base, off, n, scale, bias, bidx, out, 1, tail);
    case 2: return dots_impl(x, base, off, n, scale, bias, bidx, out, 2, tail);
    case 4: return dots_impl(x, base, off, n, scale, bias, bidx, out, 4, tail);
    default: return dots_impl(x, base, off, n, scale, bias, bidx, out, nch, tail);
    }
}

/* out[32c .. 32c + 32) = factor * the accumulators lo / hi of chunk c, in channel order: the unpacks
 * left channels 8L + e (lo) and 8L + 4 + e (hi) in lane 4L + e of 128-bit lane L. */
NA_TI void store_pairs(float *out, __m512 lo, __m512 hi, float factor, int64_t D, int c)
{
    const __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i i1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    const __m512 f = _mm512_set1_ps(factor);
    const int64_t rem = D - 32 * (int64_t)c;
    const __mmask16 k0 = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
    const __mmask16 k1 = rem >= 32 ? (__mmask16)0xFFFF : rem <= 16 ? 0 : (__mmask16)((1u << (rem - 16)) - 1u);
    _mm512_mask_storeu_ps(out + 32 * c, k0, _mm512_mul_ps(_mm512_permutex2var_ps(lo, i0, hi), f));
    if (k1)
        _mm512_mask_storeu_ps(out + 32 * c + 16, k1, _mm512_mul_ps(_mm512_permutex2var_ps(lo, i1, hi), f));
}

/* acc_lo / acc_hi += (r0, r1) interleaved, times the broadcast weight pair w. */
NA_TI void pair_fma(__m512 *lo, __m512 *hi, __m512bh a, __m512bh b, __m512bh w)
{
    *lo = _mm512_dpbf16_ps(*lo, (__m512bh)_mm512_unpacklo_epi16((__m512i)a, (__m512i)b), w);
    *hi = _mm512_dpbf16_ps(*hi, (__m512bh)_mm512_unpackhi_epi16((__m512i)a, (__m512i)b), w);
}

/* Rows r0 and r1 (r1 NULL: zeros) times the weight pair w into the accumulators lo / hi. */
NA_TI void axpy_pair(__m512 *lo, __m512 *hi, const uint16_t *r0, const uint16_t *r1, uint32_t w, const int nch,
                     __mmask32 tail)
{
    const __m512bh wv = (__m512bh)_mm512_set1_epi32((int)w);
    for (int c = 0; c < nch; c++) {
        __m512bh a = ldc(r0, c, nch, tail);
        __m512bh b = r1 ? ldc(r1, c, nch, tail) : (__m512bh)_mm512_setzero_si512();
        pair_fma(&lo[c], &hi[c], a, b, wv);
    }
}

NA_TI void axpys_impl(const float *coef, const uint16_t *base, const int64_t *off, int n, float factor, float *out,
                      int64_t D, const int nch, __mmask32 tail)
{
    /* Two accumulator sets (consecutive pairs alternate, named so that they stay in registers) keep
     * 4 * nch independent vdpbf16ps chains. */
    __m512 lo0[8], hi0[8], lo1[8], hi1[8];
    for (int c = 0; c < nch; c++)
        lo0[c] = hi0[c] = lo1[c] = hi1[c] = _mm512_setzero_ps();
    uint32_t pairs[16];
    for (int j = 0; j < n; j += 32) {
        const int m = n - j < 32 ? n - j : 32;
        const __mmask16 k0 = m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1u);
        const __mmask16 k1 = m <= 16 ? 0 : m >= 32 ? (__mmask16)0xFFFF : (__mmask16)((1u << (m - 16)) - 1u);
        /* bf16 of coef[j + i] in element i (zeros past n): pairs[p] = (coef[j+2p], coef[j+2p+1]) */
        __m512bh cb = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(k1, coef + j + 16), _mm512_maskz_loadu_ps(k0, coef + j));
        _mm512_storeu_si512(pairs, (__m512i)cb);
        const int64_t *o = off + j;
        int p = 0;
        for (; 2 * p + 4 <= m; p += 2) { /* two full pairs */
            axpy_pair(lo0, hi0, base + o[2 * p], base + o[2 * p + 1], pairs[p], nch, tail);
            axpy_pair(lo1, hi1, base + o[2 * p + 2], base + o[2 * p + 3], pairs[p + 1], nch, tail);
        }
        for (; 2 * p < m; p++) /* the rest: a full pair, then maybe a single row */
            axpy_pair(lo0, hi0, base + o[2 * p], 2 * p + 1 < m ? base + o[2 * p + 1] : NULL, pairs[p], nch, tail);
    }
    for (int c = 0; c < nch; c++)
        store_pairs(out, _mm512_add_ps(lo0[c], lo1[c]), _mm512_add_ps(hi0[c], hi1[c]), factor, D, c);
}

NA_T void na_bf16_axpys(int64_t D, const float *coef, const uint16_t *base, const int64_t *off, int n, float factor,
                        float *out)
{
    const int nch = (int)((D + 31) / 32);
    const __mmask32 tail = tail_mask(D, nch);
    switch (nch) {
    case 1: axpys_impl(coef, base, off, n, factor, out, D, 1, tail); break;
    case 2: axpys_impl(coef, base, off, n, factor, out, D, 2, tail); break;
    default: {
        /* wide heads: chunks of 8 (256 channels) at a time */
        for (int c0 = 0; c0 < nch; c0 += 8) {
            const int64_t Dc = D - 32 * (int64_t)c0 < 256 ? D - 32 * (int64_t)c0 : 256;
            const int nc = (int)((Dc + 31) / 32);
            /* rows shifted by 32*c0 channels: the same offsets on base + 32*c0 */
            axpys_impl(coef, base + 32 * c0, off, n, factor, out + 32 * c0, Dc, nc, tail_mask(Dc, nc));
        }
        break;
    }
    }
}

NA_TI void kgrad_impl(const uint16_t *qb, const uint16_t *gb, const float *rp, const float *rd, const int64_t *ooff,
                      const int64_t *ocix, int no, const int64_t *ioff, const int64_t *icix, int ni, float scale,
                      float *dk, float *dv, int64_t D, const int nch, __mmask32 tail)
{
    __m512 klo[8], khi[8], vlo[8], vhi[8];
    for (int c = 0; c < nch; c++)
        klo[c] = khi[c] = vlo[c] = vhi[c] = _mm512_setzero_ps();
    /* The (o, i) entries taken two at a time across o boundaries; an odd last one pairs with zeros. */
    const int64_t total = (int64_t)no * ni;
    int o = 0, i = 0;
    for (int64_t e = 0; e < total; e += 2) {
        const int64_t row0 = ooff[o] + ioff[i], ix0 = ocix[o] + icix[i];
        if (++i == ni)
            i = 0, o++;
        const int has1 = e + 1 < total;
        int64_t row1 = row0, ix1 = ix0;
        if (has1) {
            row1 = ooff[o] + ioff[i];
            ix1 = ocix[o] + icix[i];
            if (++i == ni)
                i = 0, o++;
        }
        const __m128 w4 = _mm_setr_ps(rd[ix0], has1 ? rd[ix1] : 0.0f, rp[ix0], has1 ? rp[ix1] : 0.0f);
        const __m128i wb = (__m128i)_mm_cvtneps_pbh(w4);
        const __m512bh wd = (__m512bh)_mm512_set1_epi32(_mm_extract_epi32(wb, 0));
        const __m512bh wp = (__m512bh)_mm512_set1_epi32(_mm_extract_epi32(wb, 1));
        for (int c = 0; c < nch; c++) {
            const __m512bh z = (__m512bh)_mm512_setzero_si512();
            __m512bh q0 = ldc(qb + row0, c, nch, tail), q1 = has1 ? ldc(qb + row1, c, nch, tail) : z;
            __m512bh g0 = ldc(gb + row0, c, nch, tail), g1 = has1 ? ldc(gb + row1, c, nch, tail) : z;
            pair_fma(&klo[c], &khi[c], q0, q1, wd);
            pair_fma(&vlo[c], &vhi[c], g0, g1, wp);
        }
    }
    for (int c = 0; c < nch; c++) {
        store_pairs(dk, klo[c], khi[c], scale, D, c);
        store_pairs(dv, vlo[c], vhi[c], 1.0f, D, c);
    }
}

NA_T void na_bf16_kgrad(int64_t D, const uint16_t *qb, const uint16_t *gb, const float *rp, const float *rd,
                        const int64_t *ooff, const int64_t *ocix, int no, const int64_t *ioff, const int64_t *icix,
                        int ni, float scale, float *dk, float *dv)
{
    const int nch = (int)((D + 31) / 32);
    switch (nch) {
    case 1: kgrad_impl(qb, gb, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk, dv, D, 1, tail_mask(D, 1)); break;
    case 2: kgrad_impl(qb, gb, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk, dv, D, 2, tail_mask(D, 2)); break;
    default:
        for (int c0 = 0; c0 < nch; c0 += 8) {
            const int64_t Dc = D - 32 * (int64_t)c0 < 256 ? D - 32 * (int64_t)c0 : 256;
            const int nc = (int)((Dc + 31) / 32);
            kgrad_impl(qb + 32 * c0, gb + 32 * c0, rp, rd, ooff, ocix, no, ioff, icix, ni, scale, dk + 32 * c0,
                       dv + 32 * c0, Dc, nc, tail_mask(Dc, nc));
        }
        break;
    }
}
