/* layers/natten/na_window.h — the window rule of docs/design.md §2 on one axis, written once for every
 * NA kernel: the CPU kernels (cpu/na_cpu.c builds its per-axis tables with it), the CUDA kernel bodies
 * (cuda/body.h, __host__ __device__) and nat-bench's legacy gather (bench/na_gather.c). The double
 * oracle in tests/ref/ keeps its own reading on purpose, and tests/test_na_natten_formulas.c compares
 * the kernels with NATTEN's formulas. Sizes are int: na_problem_init refuses axes of 2^31 or more.
 *
 * Plain C11 and CUDA C++ at once. */
#ifndef NAT_NA_WINDOW_H
#define NAT_NA_WINDOW_H

#ifdef __CUDACC__
#define NA_HD static __host__ __device__ __forceinline__
#else
#define NA_HD static inline
#endif

typedef struct na_win {
    int key0; /* index of key t = 0: s*d + g */
    int rpb0; /* rpb index of key t = 0: (k - 1) + s - p */
    int n;    /* valid keys t < n: k, or p - s + 1 near the start of a causal axis */
} na_win;

/* Window of query index i on an axis of length L: keys key0 + t*d, t = 0..k-1, valid for t < n. */
NA_HD na_win na_axis_window(int i, int L, int k, int d, int causal)
{
    const int g = i % d, p = i / d, lg = (L - g + d - 1) / d;
    int s;
    if (causal) {
        s = p - k + 1 > 0 ? p - k + 1 : 0;
    } else {
        s = p - k / 2;
        s = s > lg - k ? lg - k : s;
        s = s < 0 ? 0 : s;
    }
    na_win w;
    w.key0 = s * d + g;
    w.rpb0 = (k - 1) + s - p;
    w.n = causal && p - s + 1 < k ? p - s + 1 : k;
    return w;
}

/* Inverse neighbourhood of key index y: the queries lo, lo + d, ... below hi whose window holds y (as a
 * valid key); y is key (y - key0(i)) / d of query i. */
typedef struct na_span {
    int lo, hi;
} na_span;

NA_HD na_span na_axis_inverse(int y, int L, int k, int d, int causal)
{
    const int kd = k * d;
    na_span s;
    if (causal) {
        s.lo = y;
        s.hi = y + kd < L ? y + kd : L;
    } else {
        s.lo = y < kd ? y % d : y - (k / 2) * d;
        s.hi = y >= L - kd ? L : y + (k / 2 + 1) * d;
    }
    return s;
}

#endif
