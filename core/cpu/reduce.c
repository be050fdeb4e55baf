/* core/cpu/reduce.c — the CPU's sums: bias gradients (a sum over all dims but one). */
#include <omp.h> /* per-thread partial sums */
#include <string.h>

#include "core/cpu/kernels.h"

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
