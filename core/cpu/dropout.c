/* core/cpu/dropout.c — dropout on the CPU: element i is kept when its 32-bit uniform is >= threshold,
 * scaled by `scale`. The uniforms are drawn in fixed chunks of CHUNK elements, chunk c from a nat_rng
 * seeded with seed + c (two uniforms per 64-bit draw): the chunks fill in parallel, yet the mask depends
 * only on the seed and the element count, never on the thread count. The mask is a pure function of the
 * seed, so backward draws it again instead of keeping it (no mask memory, as on CUDA, whose hashed mask is
 * a different one). */
#include "core/cpu/kernels.h"
#include "nat/rng.h"

#define CHUNK ((int64_t)1 << 16)

/* y = kept ? x·scale : 0, or (acc) y += kept ? x·scale : 0. */
nat_status nat_cpu_dropout(const nat_exec *ex, const float *X, float *Y, bool acc, int64_t n, uint64_t seed,
                           uint64_t thresh, float scale)
{
    (void)ex;
    int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > CHUNK)
    for (int64_t c = 0; c < nchunks; c++) {
        nat_rng r;
        nat_rng_seed(&r, seed + (uint64_t)c);
        int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        uint8_t mask[CHUNK];
        /* Two 32-bit uniforms per draw. */
        for (int64_t i = lo; i < hi; i += 2) {
            uint64_t bits = nat_rng_u64(&r);
            mask[i - lo] = (bits >> 32) >= thresh;
            if (i + 1 < hi)
                mask[i + 1 - lo] = (bits & 0xffffffffu) >= thresh;
        }
        if (acc)
            for (int64_t i = lo; i < hi; i++)
                Y[i] += mask[i - lo] ? X[i] * scale : 0.0f;
        else
            for (int64_t i = lo; i < hi; i++)
                Y[i] = mask[i - lo] ? X[i] * scale : 0.0f;
    }
    return NAT_OK;
}
