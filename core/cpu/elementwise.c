/* core/cpu/elementwise.c — the CPU's elementwise kernels: add, sub and mul with NumPy broadcasting (each
 * operand read through its own strides, 0 on broadcast dims), scale by a host factor, and GELU in its erf
 * form, forward and backward.
 *
 * The binary kernel merges the dims that are contiguous in every operand first, so the inner loop is as
 * long as the layouts allow and a plain same-shape add is one flat loop. */
#include <math.h>
#include <stdint.h>

#include "core/cpu/kernels.h"
#include "core/tensor_internal.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* Inner rows are cut into chunks of this many elements so one long row still spreads over threads. */
#define CHUNK 4096

/* The table's NAT_CUDA_ADD, _SUB, _MUL: one numbering on every device. */
enum { OP_ADD = NAT_CUDA_ADD, OP_SUB = NAT_CUDA_SUB, OP_MUL = NAT_CUDA_MUL };

/* One operand of the binary kernel: element 0 and a stride per dim of the iteration space. */
typedef struct operand {
    const float *p;
    int64_t s[NAT_MAX_DIMS];
} operand;

/* y (op)= a (op) b over one row; y has unit stride. The four stride cases are written out so the common
 * ones (both unit, or one operand fixed) compile to vector loops. */
#define ROW_LOOPS(EXPR, ASSIGN)                                                                                        \
    do {                                                                                                               \
        if (sa == 1 && sb == 1) {                                                                                      \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float av = a[i], bv = b[i];                                                                      \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else if (sa == 1 && sb == 0) {                                                                               \
            const float bv = b[0];                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float av = a[i];                                                                                 \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else if (sa == 0 && sb == 1) {                                                                               \
            const float av = a[0];                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                        \
            {                                                                                                          \
                const float bv = b[i];                                                                                 \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        } else {                                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                                          \
                const float av = a[i * sa], bv = b[i * sb];                                                            \
                y[i] ASSIGN(EXPR);                                                                                     \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

static void row_op(int op, bool acc, int64_t n, float *restrict y, const float *restrict a, int64_t sa,
                   const float *restrict b, int64_t sb)
{
    switch (op * 2 + (acc ? 1 : 0)) {
    case OP_ADD * 2: ROW_LOOPS(av + bv, =); break;
    case OP_ADD * 2 + 1: ROW_LOOPS(av + bv, +=); break;
    case OP_SUB * 2: ROW_LOOPS(av - bv, =); break;
    case OP_SUB * 2 + 1: ROW_LOOPS(av - bv, +=); break;
    case OP_MUL * 2: ROW_LOOPS(av * bv, =); break;
    default: ROW_LOOPS(av * bv, +=); break;
    }
}

/* y = a (op) b, or y += a (op) b when acc, over `shape` (nd dims); y is contiguous in that shape and does
 * not overlap a or b. */
static void apply(int op, bool acc, float *y, int nd, const int64_t *shape, operand a, operand b)
{
    int64_t n_all = nat_shape_numel(nd, shape);
    if (n_all == 0)
        return;
    int64_t ys[NAT_MAX_DIMS];
    nat_contiguous_strides(nd, shape, ys);
    /* Drop size-1 dims and merge neighbours that are contiguous in all three operands. */
    int64_t sh[NAT_MAX_DIMS], sy[NAT_MAX_DIMS], sa[NAT_MAX_DIMS], sb[NAT_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1)
            continue;
        if (m > 0 && sy[m - 1] == ys[d] * shape[d] && sa[m - 1] == a.s[d] * shape[d] &&
            sb[m - 1] == b.s[d] * shape[d]) {
            sh[m - 1] *= shape[d];
            sy[m - 1] = ys[d], sa[m - 1] = a.s[d], sb[m - 1] = b.s[d];
            continue;
        }
        sh[m] = shape[d], sy[m] = ys[d], sa[m] = a.s[d], sb[m] = b.s[d];
        m++;
    }
    if (m == 0) {
        sh[0] = 1, sy[0] = sa[0] = sb[0] = 0;
        m = 1;
    }
    int64_t inner = sh[m - 1];
    int64_t rows = n_all / inner, nchunk = (inner + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (n_all > PAR_MIN)
    for (int64_t w = 0; w < rows * nchunk; w++) {
        int64_t r = w / nchunk, c0 = (w % nchunk) * CHUNK;
        int64_t len = inner - c0 < CHUNK ? inner - c0 : CHUNK;
        int64_t oy = c0 * sy[m - 1], oa = c0 * sa[m - 1], ob = c0 * sb[m - 1];
        for (int d = m - 2; d >= 0; d--) {
            int64_t i = r % sh[d];
            r /= sh[d];
            oy += i * sy[d], oa += i * sa[d], ob += i * sb[d];
        }
        row_op(op, acc, len, y + oy, a.p + oa, sa[m - 1], b.p + ob, sb[m - 1]);
    }
}

/* y (+)= a op b over `shape`; NAT_CUDA_SCALE: y (+)= a · s, s seen as a stride-0 operand (the same
 * products as a tensor of s). The CPU kernel applies s only to SCALE: every other caller passes 1. */
nat_status nat_cpu_binary(const nat_exec *ex, int op, bool acc, float *y, int nd, const int64_t *shape,
                          const float *a, const int64_t *a_stride, const float *b, const int64_t *b_stride, float s)
{
    (void)ex;
    operand oa = {a, {0}}, ob = {b, {0}};
    for (int d = 0; d < nd; d++) {
        oa.s[d] = a_stride[d];
        ob.s[d] = b_stride ? b_stride[d] : 0;
    }
    if (op == NAT_CUDA_SCALE) {
        ob.p = &s;
        op = OP_MUL;
    } else if (s != 1.0f) {
        return nat_error(NAT_ERR_INTERNAL, "cpu binary: op %d with a factor %g (only SCALE takes one)", op, (double)s);
    }
    apply(op, acc, y, nd, shape, oa, ob);
    return NAT_OK;
}

/* ---- GELU (erf form) ---- */

/* GELU's loops call exp and erf on every element. glibc has vector versions of expf/erff only under
 * -ffast-math, and the scalar calls cost about 8 ns an element (more than the MLP's two matmuls spend per
 * hidden element), so both are written here from +, *, / and a bit shift, which vectorise. */

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

/* exp(x): x = k·ln2 + r with |r| <= ln2/2 (ln2 split in two so k·ln2 is exact), exp(r) by its Taylor
 * series to r^7 (truncation below 1e-8 relative), times 2^k built in the exponent bits. x is clamped to
 * [-87, 88], where 2^k stays a normal float: the results there (1.6e-38, 1.7e38) are as good as 0 and
 * inf for GELU, which multiplies them by bounded factors; a NaN stays NaN. k is rounded by adding
 * 1.5·2^23, which leaves k in the low mantissa bits: those bits give 2^k with integer arithmetic only
 * (floorf and float-to-int conversion would not vectorise, and the conversion is undefined for NaN). */
static inline float vexp(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    union {
        float f;
        uint32_t u;
    } m = {x * 1.44269504088896341f + 12582912.0f};
    float k = m.f - 12582912.0f;
    float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } two_k = {(m.u - 0x4B400000u + 127u) << 23}; /* 0x4B400000: the bits of 1.5·2^23 */
    return p * two_k.f;
}

/* Φ(x) = 0.5·erfc(-x/√2), with erfc(z), z >= 0, from the Chebyshev fit of Numerical Recipes (2nd ed.,
 * §6.2, erfcc): relative error below 1.2e-7 for every z, so the tail x << 0, where Φ is tiny, keeps its
 * relative precision too. */
static inline float normal_cdf(float x)
{
    float z = fabsf(x) * INV_SQRT2;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    float half_erfc = 0.5f * t * vexp(-z * z - 1.26551223f + t * p);
    return x >= 0.0f ? 1.0f - half_erfc : half_erfc;
}

/* d/dx x·Φ(x) = Φ(x) + x·φ(x) */
static inline float gelu_slope(float x)
{
    float pdf = INV_SQRT_2PI * vexp(-0.5f * x * x);
    return normal_cdf(x) + x * pdf;
}

nat_status nat_cpu_gelu_forward(const nat_exec *ex, const float *X, float *Y, int64_t n)
{
    (void)ex;
#pragma omp parallel for simd if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        Y[i] = X[i] * normal_cdf(X[i]);
    return NAT_OK;
}

nat_status nat_cpu_gelu_backward(const nat_exec *ex, const float *X, const float *G, float *GX, int64_t n, bool acc)
{
    (void)ex;
    /* Two loops: a select on acc inside one would make GX's load conditional, and GCC then leaves the
     * loop scalar. */
    if (acc) {
#pragma omp parallel for simd if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            GX[i] += G[i] * gelu_slope(X[i]);
    } else {
#pragma omp parallel for simd if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            GX[i] = G[i] * gelu_slope(X[i]);
    }
    return NAT_OK;
}
