/* core/cpu/reduce.c — the CPU's sums: a reduction over any set of dims (undoing broadcasting), bias
 * gradients (a sum over all dims but one), the full sum of a
 * tensor (sum, mean) and the sum of squares of a list of tensors (gradient norm, overflow check). */
#include <omp.h> /* per-thread partial sums */
#include <string.h>

#include "core/cpu/kernels.h"
#include "core/tensor_internal.h"

/* out (+)= alpha · Σ x over the dims where keep[d] is false; out is contiguous over the kept dims. Each
 * element of x is added to its place in out in row-major order (alpha, when not 1, multiplies each
 * element). */
nat_status nat_cpu_reduce(const nat_exec *ex, float *rp, bool acc, float alpha, int nd, const int64_t *shape,
                          const float *gp, const int64_t *gstride, const bool *keep)
{
    (void)ex;
    /* Map each element of x to its place in out (stride 0 along a summed dim). */
    int64_t gs[NAT_MAX_DIMS], nout = 1;
    for (int d = nd - 1; d >= 0; d--) {
        gs[d] = keep[d] ? nout : 0;
        nout *= keep[d] ? shape[d] : 1;
    }
    if (!acc)
        memset(rp, 0, (size_t)nout * sizeof *rp);
    int64_t idx[NAT_MAX_DIMS] = {0}, n = nat_shape_numel(nd, shape);
    for (int64_t i = 0; i < n; i++) {
        int64_t go = 0, ro = 0;
        for (int d = 0; d < nd; d++) {
            go += idx[d] * gstride[d];
            ro += idx[d] * gs[d];
        }
        if (alpha == 1.0f)
            rp[ro] += gp[go];
        else
            rp[ro] += alpha * gp[go];
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < shape[d])
                break;
            idx[d] = 0;
        }
    }
    return NAT_OK;
}

/* g viewed as [outer, C, inner]; gb[c] += Σ over outer and inner. Each thread sums its own static block of
 * `outer` into a private row of partial sums; the rows are added in thread order, so a given thread count
 * always gives the same bits. */
nat_status nat_cpu_bias_grad(const nat_exec *ex, const float *G, int64_t outer, int64_t C, int64_t inner, float *gb)
{
    int nt = outer * C * inner > NAT_CPU_PAR_MIN ? omp_get_max_threads() : 1;
    float *part;
    NAT_TRY(nat_exec_scratch(ex, (size_t)nt * (size_t)C * sizeof *part, (void **)&part));
    memset(part, 0, (size_t)nt * (size_t)C * sizeof *part);
#pragma omp parallel num_threads(nt)
    {
        float *mine = part + (int64_t)omp_get_thread_num() * C;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < outer; o++) {
            const float *row = G + o * C * inner;
            if (inner == 1) {
#pragma omp simd
                for (int64_t c = 0; c < C; c++)
                    mine[c] += row[c];
            } else {
                for (int64_t c = 0; c < C; c++) {
                    float s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t i = 0; i < inner; i++)
                        s += row[c * inner + i];
                    mine[c] += s;
                }
            }
        }
    }
    for (int t = 0; t < nt; t++)
        for (int64_t c = 0; c < C; c++)
            gb[c] += part[(int64_t)t * C + c];
    nat_exec_scratch_release(ex, part);
    return NAT_OK;
}

/* Σ x in double over fixed blocks, then the block sums in order: the same bits for any thread count.
 * *y = alpha · Σ x (squares: Σ x²), alpha in double as the ops compute it (1/n for mean). */
#define SUM_BLOCK 4096

nat_status nat_cpu_sum(const nat_exec *ex, const float *X, int64_t n, bool squares, double alpha, float *y)
{
    int64_t nb = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part;
    NAT_TRY(nat_exec_scratch(ex, (size_t)(nb ? nb : 1) * sizeof *part, (void **)&part));
#pragma omp parallel for if (n > NAT_CPU_PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * SUM_BLOCK, hi = lo + SUM_BLOCK < n ? lo + SUM_BLOCK : n;
        double s = 0;
        if (squares) {
#pragma omp simd reduction(+ : s)
            for (int64_t i = lo; i < hi; i++)
                s += (double)X[i] * X[i];
        } else {
#pragma omp simd reduction(+ : s)
            for (int64_t i = lo; i < hi; i++)
                s += X[i];
        }
        part[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++)
        s += part[b];
    nat_exec_scratch_release(ex, part);
    *y = (float)(s * alpha);
    return NAT_OK;
}

/* *acc += Σ_i Σ x_i², each tensor's squares summed in double (millions of float squares would otherwise
 * lose the small ones) and added to *acc in list order. */
nat_status nat_cpu_sum_squares(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns, double *acc)
{
    (void)ex;
    for (int k = 0; k < count; k++) {
        const float *g = xs[k];
        int64_t m = ns[k];
        double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) if (m > NAT_CPU_PAR_MIN)
        for (int64_t j = 0; j < m; j++)
            s += (double)g[j] * g[j];
        *acc += s;
    }
    return NAT_OK;
}
