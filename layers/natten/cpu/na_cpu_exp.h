/* layers/natten/cpu/na_cpu_exp.h — internal: the single-precision exp of the CPU's neighborhood-attention
 * kernels, written once for na_cpu.c (built for whatever the compiler targets) and na_cpu_bf16_rows.c
 * (AVX-512 through a target attribute), so that both paths give the softmax weights the same bits.
 * Include <immintrin.h> first. */
#ifndef NAT_NA_CPU_EXP_H
#define NAT_NA_CPU_EXP_H

/* exp(r) for |r| <= ln2/2 as 1 + r + r^2 * (c0 r^5 + ... + c5), the inner polynomial evaluated in
 * Estrin form (a r^4 + b r^2 + c) to shorten the dependency chain. */
#define NA_EXP_POLY(T, MUL, ADD, FMA, SET1, r, y)                      \
    do {                                                               \
        T r2_ = MUL(r, r), r4_ = MUL(r2_, r2_);                        \
        T a_ = FMA(SET1(1.9875691500e-4f), r, SET1(1.3981999507e-3f)); \
        T b_ = FMA(SET1(8.3334519073e-3f), r, SET1(4.1665795894e-2f)); \
        T c_ = FMA(SET1(1.6666665459e-1f), r, SET1(5.0000001201e-1f)); \
        T p_ = FMA(a_, r4_, FMA(b_, r2_, c_));                         \
        y = FMA(p_, r2_, ADD(r, SET1(1.0f)));                          \
    } while (0)

/* Defines `ATTR __m512 NAME(__m512 x)`: exp in AVX-512F. Below -104 the result is 0 (scalef
 * underflows); overflow gives +inf. */
#define NA_DEFINE_VEXP512(ATTR, NAME)                                                                \
    ATTR __m512 NAME(__m512 x)                                                                       \
    {                                                                                                \
        x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));                                               \
        __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),      \
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);              \
        __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);                             \
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);                                 \
        __m512 y;                                                                                    \
        NA_EXP_POLY(__m512, _mm512_mul_ps, _mm512_add_ps, _mm512_fmadd_ps, _mm512_set1_ps, r, y);    \
        return _mm512_scalef_ps(y, n); /* y * 2^n */                                                 \
    }

#endif
