/* core/cpu/copy.c — the CPU's copies and fills: bytes, zeroes, a strided copy / accumulate between any
 * two layouts (dense copies of views, permute and slice backward, pad and crop, gradient accumulation)
 * and a constant fill. */
#include <string.h>

#include "core/cpu/kernels.h"
#include "core/tensor_internal.h"

/* Host memory only: `kind` (H2D, D2H, D2D) is a CUDA notion; on the CPU every copy is host to host. */
nat_status nat_cpu_copy_bytes(const nat_exec *ex, void *dst, const void *src, size_t bytes, int kind)
{
    (void)ex, (void)kind;
    memmove(dst, src, bytes);
    return NAT_OK;
}

nat_status nat_cpu_memset0(const nat_exec *ex, void *p, size_t bytes)
{
    (void)ex;
    memset(p, 0, bytes);
    return NAT_OK;
}

/* A flat dst += src over n elements, both dense: the accumulation of a gradient into a buffer of the
 * same layout, split over threads (one long row would run on one thread in the strided loop below). */
static void dense_add(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
}

static bool dense(int ndim, const int64_t *shape, const int64_t *stride)
{
    int64_t expect = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] != 1 && stride[d] != expect)
            return false;
        expect *= shape[d];
    }
    return true;
}

/* Rows [o0, o1) of a strided copy: each row's offsets come from an odometer over the outer dims, stepped
 * once per row, so a row of a few dozen floats (a permute's head dim) costs no divisions. */
static void copy_rows(float *dst, const int64_t *ds, const float *src, const int64_t *ss, int ndim,
                      const int64_t *shape, bool add, int64_t o0, int64_t o1)
{
    const int64_t inner = shape[ndim - 1], di = ds[ndim - 1], si = ss[ndim - 1];
    int64_t idx[NAT_MAX_DIMS] = {0}, doff = 0, soff = 0, rem = o0;
    for (int d = ndim - 2; d >= 0; d--) {
        idx[d] = rem % shape[d];
        rem /= shape[d];
        doff += idx[d] * ds[d];
        soff += idx[d] * ss[d];
    }
    for (int64_t o = o0; o < o1; o++) {
        float *dp = dst + doff;
        const float *sp = src + soff;
        if (di == 1 && si == 1) {
            if (add)
                for (int64_t i = 0; i < inner; i++)
                    dp[i] += sp[i];
            else
                for (int64_t i = 0; i < inner; i++)
                    dp[i] = sp[i];
        } else if (add) {
            for (int64_t i = 0; i < inner; i++)
                dp[i * di] += sp[i * si];
        } else {
            for (int64_t i = 0; i < inner; i++)
                dp[i * di] = sp[i * si];
        }
        for (int d = ndim - 2; d >= 0; d--) { /* next row */
            doff += ds[d], soff += ss[d];
            if (++idx[d] < shape[d])
                break;
            doff -= shape[d] * ds[d], soff -= shape[d] * ss[d];
            idx[d] = 0;
        }
    }
}

/* dst = src (or dst += src) elementwise over `shape`, both strided (strides in elements). The innermost
 * dim is the tight loop; rows are split over threads in contiguous ranges when large. */
nat_status nat_cpu_strided_copy(const nat_exec *ex, float *dst, const int64_t *ds, const float *src, const int64_t *ss,
                                int ndim, const int64_t *shape, bool add)
{
    (void)ex;
    if (ndim == 0) {
        dst[0] = add ? dst[0] + src[0] : src[0];
        return NAT_OK;
    }
    if (add && dense(ndim, shape, ds) && dense(ndim, shape, ss)) {
        dense_add(dst, src, nat_shape_numel(ndim, shape));
        return NAT_OK;
    }
    const int64_t inner = shape[ndim - 1], outer = nat_shape_numel(ndim - 1, shape);
    if (inner == 0 || outer == 0)
        return NAT_OK;
    const int64_t chunks = outer * inner > 65536 ? 64 : 1; /* contiguous row ranges, a few per thread */
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; c++)
        copy_rows(dst, ds, src, ss, ndim, shape, add, outer * c / chunks, outer * (c + 1) / chunks);
    return NAT_OK;
}

nat_status nat_cpu_fill(const nat_exec *ex, float *p, int64_t n, float v)
{
    (void)ex;
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
    return NAT_OK;
}
