/* layers/natten/cuda/body.h — the NA CUDA kernels' per-thread bodies and the window arithmetic they
 * use, written once as __host__ __device__ code: cuda/naive.cu and cuda/fused.cu wrap each body
 * in a grid-stride kernel (na_launch, at the end), and tests/test_na_cuda.c runs the very same bodies
 * on the host, thread index by thread index, against the double reference (tests/ref/na_ref.h) — so the index
 * arithmetic and the maths of every kernel are checked on machines without a GPU. Keep the bodies
 * free of shared memory, warp intrinsics and synchronisation, or the host run stops meaning anything;
 * the cooperative versions keep the property with host models of their own: v2 (shared-memory tiles)
 * in cuda/tiled.h, v3 (tensor cores) in cuda/tensorcore.h.
 *
 * A body computes one output element (or one query's chunk of NA_FCH head-dim channels) from its
 * thread index `idx`; the index space of each kernel is given next to its body. Layouts are those of
 * cuda/na_cuda.h; every problem is 3-D (na_geom). Windows follow docs/design.md §2 (per axis, inside the dilation
 * group; see na_axis_window / na_axis_inverse in layers/natten/na_window.h).
 *
 * Plain C11 and CUDA C++ at once: no C++ features above the `__CUDACC__` section, no VLAs.
 */
#ifndef NAT_NA_CUDA_BODY_H
#define NAT_NA_CUDA_BODY_H

#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "layers/natten/cuda/na_cuda.h"
#include "layers/natten/na_window.h" /* NA_HD, na_axis_window, na_axis_inverse */

#ifdef __CUDACC__
#define NA_RESTRICT __restrict__
#else
#define NA_RESTRICT restrict
#endif
#if defined(__CUDA_ARCH__) /* the device pass only: the host compiler would warn about the pragma */
#define NA_UNROLL _Pragma("unroll")
#else
#define NA_UNROLL
#endif

/* Head-dim channels one thread of a fused kernel owns (registers); D > NA_FCH takes several threads
 * per query, each recomputing the logits. */
#define NA_FCH 32
/* Pixels per partial sum of the drpb reduction. */
#define NA_DRPB_CHUNK 64

/* ---- host: problem set-up ---- */

/* The kernels' int view of a validated problem (na_problem_init ran where the op was called). Only
 * checks what is CUDA's own limit: sizes must fit in int where one axis or one head is indexed (flat
 * indices are int64). `op` names the entry point in that message. */
static inline nat_status na_geom_init(na_geom *g, const na_problem *pb, const char *op)
{
    const na_geom zero = {0};
    *g = zero; /* filled on success only; defined either way */
    const int64_t batch = pb->batch, heads = pb->heads, dim = pb->dim;
    const int64_t lim = INT_MAX / 4;
    int fits = batch <= lim && heads <= lim && dim <= lim && pb->nkeys <= lim && heads * pb->rpb_size <= lim;
    for (int a = 0; a < 3; a++)
        fits = fits && pb->len[a] <= lim;
    if (!fits)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "%s: a size (batch %lld, heads %lld, head dim %lld, spatial %lldx%lldx%lld, %lld slots) "
                         "exceeds the CUDA kernels' 32-bit per-axis range",
                         op, (long long)batch, (long long)heads, (long long)dim, (long long)pb->len[0],
                         (long long)pb->len[1], (long long)pb->len[2], (long long)pb->nkeys);
    for (int a = 0; a < 3; a++) {
        g->len[a] = (int)pb->len[a];
        g->kernel[a] = pb->kernel[a];
        g->dilation[a] = pb->dilation[a];
        g->causal[a] = pb->causal[a];
        g->rpb_ext[a] = (int)pb->rpb_ext[a];
    }
    g->batch = (int)batch;
    g->heads = (int)heads;
    g->dim = (int)dim;
    g->nkeys = (int)pb->nkeys;
    g->rpb_size = (int)pb->rpb_size;
    g->npix = pb->npix;
    g->nquery = batch * heads * pb->npix;
    g->scale = pb->scale;
    return NAT_OK;
}

/* Threads per query in the fused kernels. */
static inline int64_t na_fused_chunks(const na_geom *g) { return (g->dim + NA_FCH - 1) / NA_FCH; }
/* Partial sums per (head, rpb entry) in the drpb reduction. */
static inline int64_t na_drpb_chunks(const na_geom *g) { return (g->npix + NA_DRPB_CHUNK - 1) / NA_DRPB_CHUNK; }

/* ---- 3-D helpers ---- */

NA_HD void na_pixel(const na_geom *g, int64_t pix, int i[3])
{
    i[2] = (int)(pix % g->len[2]);
    pix /= g->len[2];
    i[1] = (int)(pix % g->len[1]);
    i[0] = (int)(pix / g->len[1]);
}

NA_HD void na_windows(const na_geom *g, const int i[3], na_win w[3])
{
    for (int a = 0; a < 3; a++)
        w[a] = na_axis_window(i[a], g->len[a], g->kernel[a], g->dilation[a], g->causal[a]);
}

/* Key pixel (within a head) and rpb index (within a head) of window keys (t0, t1, t2). */
NA_HD int64_t na_key_pixel(const na_geom *g, const na_win w[3], int t0, int t1, int t2)
{
    return ((int64_t)(w[0].key0 + t0 * g->dilation[0]) * g->len[1] + w[1].key0 + t1 * g->dilation[1]) * g->len[2] +
           w[2].key0 + t2 * g->dilation[2];
}

NA_HD int na_rpb_index(const na_geom *g, const na_win w[3], int t0, int t1, int t2)
{
    return ((w[0].rpb0 + t0) * g->rpb_ext[1] + w[1].rpb0 + t1) * g->rpb_ext[2] + w[2].rpb0 + t2;
}

NA_HD float na_dot(const float *NA_RESTRICT a, const float *NA_RESTRICT b, int n)
{
    float s = 0.0f;
    for (int c = 0; c < n; c++)
        s += a[c] * b[c];
    return s;
}

/* ================================================================================================
 * v0 — naive kernels (cuda/naive.cu): one thread per output element, windows recomputed by every
 * thread, no shared memory. The GPU reference the faster versions are checked against.
 * ================================================================================================ */

/* v0 slot dots. idx in [0, nquery*K): out[n, s] = scale * a[n].b[key(n, s)] + rpb[h, rpb(n, s)], or
 * `masked` on a causally masked slot. qk: (q, k, scale, rpb, -inf); av backward's d_attn:
 * (d_out, v, 1, NULL, 0). */
NA_HD void na_slot_dot_body(const na_geom *g, const float *NA_RESTRICT a, const float *NA_RESTRICT b, float scale,
                            const float *NA_RESTRICT rpb, float masked, float *NA_RESTRICT out, int64_t idx)
{
    const int K = g->nkeys, D = g->dim;
    const int64_t n = idx / K, bh = n / g->npix;
    const int s = (int)(idx - n * K);
    const int t2 = s % g->kernel[2], t1 = s / g->kernel[2] % g->kernel[1], t0 = s / (g->kernel[2] * g->kernel[1]);
    int i[3];
    na_win w[3];
    na_pixel(g, n - bh * g->npix, i);
    na_windows(g, i, w);
    if (t0 >= w[0].n || t1 >= w[1].n || t2 >= w[2].n) {
        out[idx] = masked;
        return;
    }
    const int64_t key = bh * g->npix + na_key_pixel(g, w, t0, t1, t2);
    float x = scale * na_dot(a + n * D, b + key * D, D);
    if (rpb)
        x += rpb[(int64_t)(bh % g->heads) * g->rpb_size + na_rpb_index(g, w, t0, t1, t2)];
    out[idx] = x;
}

/* v0 window sums. idx in [0, nquery*D): out[n, c] = factor * sum over valid slots s of
 * coef[n, s] * src[key(n, s), c]. av: (attn, v, 1); qk backward's dq: (d_attn, k, scale). */
NA_HD void na_window_sum_body(const na_geom *g, const float *NA_RESTRICT coef, const float *NA_RESTRICT src,
                              float factor, float *NA_RESTRICT out, int64_t idx)
{
    const int K = g->nkeys, D = g->dim;
    const int64_t n = idx / D, bh = n / g->npix;
    const int c = (int)(idx - n * D);
    int i[3];
    na_win w[3];
    na_pixel(g, n - bh * g->npix, i);
    na_windows(g, i, w);
    const float *cr = coef + n * K;
    const float *sb = src + bh * g->npix * D + c;
    float acc = 0.0f;
    for (int t0 = 0; t0 < w[0].n; t0++)
        for (int t1 = 0; t1 < w[1].n; t1++)
            for (int t2 = 0; t2 < w[2].n; t2++)
                acc += cr[(t0 * g->kernel[1] + t1) * g->kernel[2] + t2] * sb[na_key_pixel(g, w, t0, t1, t2) * D];
    out[idx] = factor * acc;
}

/* v0 inverse-neighbourhood gathers. idx in [0, nquery*D), over keys y: out[y, c] = factor * sum over
 * the queries n whose window holds y of coef[n, slot of y] * src[n, c]. No atomics: each output element
 * is one thread's sum, in a fixed order. qk backward's dk: (d_attn, q, scale); av backward's dv:
 * (attn, d_out, 1). */
NA_HD void na_gather_body(const na_geom *g, const float *NA_RESTRICT coef, const float *NA_RESTRICT src,
                          float factor, float *NA_RESTRICT out, int64_t idx)
{
    const int K = g->nkeys, D = g->dim;
    const int64_t y = idx / D, bh = y / g->npix, base = bh * g->npix;
    const int c = (int)(idx - y * D);
    int j[3];
    na_span r[3];
    na_pixel(g, y - base, j);
    for (int a = 0; a < 3; a++)
        r[a] = na_axis_inverse(j[a], g->len[a], g->kernel[a], g->dilation[a], g->causal[a]);
    float acc = 0.0f;
    na_win w[3];
    for (int i0 = r[0].lo; i0 < r[0].hi; i0 += g->dilation[0]) {
        w[0] = na_axis_window(i0, g->len[0], g->kernel[0], g->dilation[0], g->causal[0]);
        const int t0 = (j[0] - w[0].key0) / g->dilation[0];
        for (int i1 = r[1].lo; i1 < r[1].hi; i1 += g->dilation[1]) {
            w[1] = na_axis_window(i1, g->len[1], g->kernel[1], g->dilation[1], g->causal[1]);
            const int t1 = (j[1] - w[1].key0) / g->dilation[1];
            for (int i2 = r[2].lo; i2 < r[2].hi; i2 += g->dilation[2]) {
                w[2] = na_axis_window(i2, g->len[2], g->kernel[2], g->dilation[2], g->causal[2]);
                const int t2 = (j[2] - w[2].key0) / g->dilation[2];
                const int64_t qn = base + ((int64_t)i0 * g->len[1] + i1) * g->len[2] + i2;
                acc += coef[qn * K + (t0 * g->kernel[1] + t1) * g->kernel[2] + t2] * src[qn * D + c];
            }
        }
    }
    out[idx] = factor * acc;
}

/* drpb, pass 1. idx in [0, heads*R*nchunk), nchunk = na_drpb_chunks: part[(h*R + r)*nchunk + ch] =
 * sum over the pixels of chunk ch (in order), then the batch (in order), of src[(b, h, pix), slot] over
 * the slot whose rpb index is r (when the pixel's window has one). Double. */
NA_HD void na_drpb_part_body(const na_geom *g, const float *NA_RESTRICT src, double *NA_RESTRICT part, int64_t idx)
{
    const int64_t nchunk = (g->npix + NA_DRPB_CHUNK - 1) / NA_DRPB_CHUNK;
    const int64_t hr = idx / nchunk, ch = idx - hr * nchunk;
    const int h = (int)(hr / g->rpb_size), r = (int)(hr - (int64_t)h * g->rpb_size);
    const int r2 = r % g->rpb_ext[2], r1 = r / g->rpb_ext[2] % g->rpb_ext[1], r0 = r / (g->rpb_ext[2] * g->rpb_ext[1]);
    const int K = g->nkeys;
    const int64_t p1 = (ch + 1) * NA_DRPB_CHUNK < g->npix ? (ch + 1) * NA_DRPB_CHUNK : g->npix;
    const int64_t bstride = (int64_t)g->heads * g->npix * K;
    double acc = 0.0;
    for (int64_t pix = ch * NA_DRPB_CHUNK; pix < p1; pix++) {
        int i[3];
        na_win w[3];
        na_pixel(g, pix, i);
        na_windows(g, i, w);
        const int t0 = r0 - w[0].rpb0, t1 = r1 - w[1].rpb0, t2 = r2 - w[2].rpb0;
        if (t0 < 0 || t0 >= w[0].n || t1 < 0 || t1 >= w[1].n || t2 < 0 || t2 >= w[2].n)
            continue;
        const float *sp = src + ((int64_t)h * g->npix + pix) * K + (t0 * g->kernel[1] + t1) * g->kernel[2] + t2;
        for (int b = 0; b < g->batch; b++)
            acc += (double)sp[b * bstride];
    }
    part[idx] = acc;
}

/* drpb, pass 2. idx in [0, heads*R): drpb[idx] = the partials of idx, in chunk order. */
NA_HD void na_drpb_final_body(const na_geom *g, const double *NA_RESTRICT part, float *NA_RESTRICT drpb, int64_t idx)
{
    const int64_t nchunk = (g->npix + NA_DRPB_CHUNK - 1) / NA_DRPB_CHUNK;
    double s = 0.0;
    for (int64_t ch = 0; ch < nchunk; ch++)
        s += part[idx * nchunk + ch];
    drpb[idx] = (float)s;
}

/* ================================================================================================
 * v1 — fused kernels (cuda/fused.cu): one thread per (query, chunk of NA_FCH channels); the
 * thread's channels live in registers. Forward: online softmax over the window (running max and sum,
 * rescaled when the max grows), so no [.., K] buffer; lse saved. Backward: delta = rowsum(d_out * out)
 * first; then per query dq (recomputing each weight from lse) and, only when drpb is wanted, dS into a
 * [N, K] scratch for the fixed-order drpb reduction; then per key dk and dv gathered over its inverse
 * neighbourhood, recomputing each query's weight and dS from its lse and delta. No atomics anywhere.
 * ================================================================================================ */

/* v1 fused forward. idx in [0, nchunk*nquery), query n = idx mod nquery (consecutive threads, consecutive
 * queries), channels from c0 = (idx div nquery) * NA_FCH. The chunk-0 thread writes lse. */
NA_HD void na_fused_fwd_body(const na_geom *g, const float *NA_RESTRICT q, const float *NA_RESTRICT k,
                             const float *NA_RESTRICT v, const float *NA_RESTRICT rpb, float *NA_RESTRICT out,
                             float *NA_RESTRICT lse, int64_t idx)
{
    const int D = g->dim;
    const int64_t n = idx % g->nquery, bh = n / g->npix;
    const int c0 = (int)(idx / g->nquery) * NA_FCH, dc = D - c0 < NA_FCH ? D - c0 : NA_FCH;
    int i[3];
    na_win w[3];
    na_pixel(g, n - bh * g->npix, i);
    na_windows(g, i, w);
    const float *qr = q + n * D, *kb = k + bh * g->npix * D, *vb = v + bh * g->npix * D + c0;
    const float *rb = rpb ? rpb + (int64_t)(bh % g->heads) * g->rpb_size : 0;
    float acc[NA_FCH];
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int t0 = 0; t0 < w[0].n; t0++)
        for (int t1 = 0; t1 < w[1].n; t1++)
            for (int t2 = 0; t2 < w[2].n; t2++) {
                const int64_t key = na_key_pixel(g, w, t0, t1, t2);
                float x = g->scale * na_dot(qr, kb + key * D, D);
                if (rb)
                    x += rb[na_rpb_index(g, w, t0, t1, t2)];
                if (x > m) { /* first key: exp(-inf) = 0 clears l and acc (both 0 anyway) */
                    const float corr = expf(m - x);
                    l *= corr;
                    NA_UNROLL
                    for (int j = 0; j < NA_FCH; j++)
                        acc[j] *= corr;
                    m = x;
                }
                const float pw = expf(x - m);
                l += pw;
                const float *vr = vb + key * D;
                NA_UNROLL
                for (int j = 0; j < NA_FCH; j++)
                    if (j < dc)
                        acc[j] += pw * vr[j];
            }
    /* Every window holds at least the query's own position (valid on causal axes too): l >= 1. */
    const float inv = 1.0f / l;
    float *orow = out + n * D + c0;
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        if (j < dc)
            orow[j] = acc[j] * inv;
    if (c0 == 0)
        lse[n] = m + logf(l);
}

/* v1 fused backward, pass 0. idx in [0, nquery): delta[n] = d_out[n] . out[n]. */
NA_HD void na_fused_delta_body(const na_geom *g, const float *NA_RESTRICT d_out, const float *NA_RESTRICT out,
                               float *NA_RESTRICT delta, int64_t idx)
{
    delta[idx] = na_dot(d_out + idx * g->dim, out + idx * g->dim, g->dim);
}

/* v1 fused backward, pass 1. idx as in the forward. Per valid slot: logit rebuilt, P = exp(logit - lse),
 * dS = P * (d_out . v[key] - delta); dq[n, c] = scale * sum dS * k[key, c]. When ds is not NULL the
 * chunk-0 thread stores dS at [n, slot] (valid slots only; drpb never comes with causal masks). */
NA_HD void na_fused_dq_body(const na_geom *g, const float *NA_RESTRICT q, const float *NA_RESTRICT k,
                            const float *NA_RESTRICT v, const float *NA_RESTRICT rpb, const float *NA_RESTRICT lse,
                            const float *NA_RESTRICT delta, const float *NA_RESTRICT d_out, float *NA_RESTRICT dq,
                            float *NA_RESTRICT ds, int64_t idx)
{
    const int D = g->dim, K = g->nkeys;
    const int64_t n = idx % g->nquery, bh = n / g->npix;
    const int c0 = (int)(idx / g->nquery) * NA_FCH, dc = D - c0 < NA_FCH ? D - c0 : NA_FCH;
    int i[3];
    na_win w[3];
    na_pixel(g, n - bh * g->npix, i);
    na_windows(g, i, w);
    const float *qr = q + n * D, *gr = d_out + n * D, *kb = k + bh * g->npix * D, *vb = v + bh * g->npix * D;
    const float *rb = rpb ? rpb + (int64_t)(bh % g->heads) * g->rpb_size : 0;
    const float ln = lse[n], dn = delta[n];
    float acc[NA_FCH];
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        acc[j] = 0.0f;
    for (int t0 = 0; t0 < w[0].n; t0++)
        for (int t1 = 0; t1 < w[1].n; t1++)
            for (int t2 = 0; t2 < w[2].n; t2++) {
                const int64_t key = na_key_pixel(g, w, t0, t1, t2);
                float x = g->scale * na_dot(qr, kb + key * D, D);
                if (rb)
                    x += rb[na_rpb_index(g, w, t0, t1, t2)];
                const float pw = expf(x - ln);
                const float dsv = pw * (na_dot(gr, vb + key * D, D) - dn);
                if (ds && c0 == 0)
                    ds[n * K + (t0 * g->kernel[1] + t1) * g->kernel[2] + t2] = dsv;
                const float *kr = kb + key * D + c0;
                NA_UNROLL
                for (int j = 0; j < NA_FCH; j++)
                    if (j < dc)
                        acc[j] += dsv * kr[j];
            }
    float *dqr = dq + n * D + c0;
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        if (j < dc)
            dqr[j] = g->scale * acc[j];
}

/* v1 fused backward, pass 2. idx in [0, nchunk*nquery), over keys y (y = idx mod nquery): for every
 * query n whose window holds y, P and dS rebuilt from lse[n] and delta[n]; dk[y, c] = scale * sum dS *
 * q[n, c], dv[y, c] = sum P * d_out[n, c]. */
NA_HD void na_fused_dkdv_body(const na_geom *g, const float *NA_RESTRICT q, const float *NA_RESTRICT k,
                              const float *NA_RESTRICT v, const float *NA_RESTRICT rpb, const float *NA_RESTRICT lse,
                              const float *NA_RESTRICT delta, const float *NA_RESTRICT d_out, float *NA_RESTRICT dk,
                              float *NA_RESTRICT dv, int64_t idx)
{
    const int D = g->dim;
    const int64_t y = idx % g->nquery, bh = y / g->npix, base = bh * g->npix;
    const int c0 = (int)(idx / g->nquery) * NA_FCH, dc = D - c0 < NA_FCH ? D - c0 : NA_FCH;
    int j3[3];
    na_span r[3];
    na_pixel(g, y - base, j3);
    for (int a = 0; a < 3; a++)
        r[a] = na_axis_inverse(j3[a], g->len[a], g->kernel[a], g->dilation[a], g->causal[a]);
    const float *kr = k + y * D, *vr = v + y * D;
    const float *rb = rpb ? rpb + (int64_t)(bh % g->heads) * g->rpb_size : 0;
    float ak[NA_FCH], av[NA_FCH];
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        ak[j] = av[j] = 0.0f;
    na_win w[3];
    for (int i0 = r[0].lo; i0 < r[0].hi; i0 += g->dilation[0]) {
        w[0] = na_axis_window(i0, g->len[0], g->kernel[0], g->dilation[0], g->causal[0]);
        const int t0 = (j3[0] - w[0].key0) / g->dilation[0];
        for (int i1 = r[1].lo; i1 < r[1].hi; i1 += g->dilation[1]) {
            w[1] = na_axis_window(i1, g->len[1], g->kernel[1], g->dilation[1], g->causal[1]);
            const int t1 = (j3[1] - w[1].key0) / g->dilation[1];
            for (int i2 = r[2].lo; i2 < r[2].hi; i2 += g->dilation[2]) {
                w[2] = na_axis_window(i2, g->len[2], g->kernel[2], g->dilation[2], g->causal[2]);
                const int t2 = (j3[2] - w[2].key0) / g->dilation[2];
                const int64_t qn = base + ((int64_t)i0 * g->len[1] + i1) * g->len[2] + i2;
                const float *qr = q + qn * D, *gr = d_out + qn * D;
                float x = g->scale * na_dot(qr, kr, D);
                if (rb)
                    x += rb[na_rpb_index(g, w, t0, t1, t2)];
                const float pw = expf(x - lse[qn]);
                const float dsv = pw * (na_dot(gr, vr, D) - delta[qn]);
                NA_UNROLL
                for (int j = 0; j < NA_FCH; j++)
                    if (j < dc) {
                        ak[j] += dsv * qr[c0 + j];
                        av[j] += pw * gr[c0 + j];
                    }
            }
        }
    }
    NA_UNROLL
    for (int j = 0; j < NA_FCH; j++)
        if (j < dc) {
            dk[y * D + c0 + j] = g->scale * ak[j];
            dv[y * D + c0 + j] = av[j];
        }
}

/* ---- CUDA only: the grid-stride wrapper every kernel is ---- */
#ifdef __CUDACC__
#include "core/cuda/common.cuh"

/* F is a functor holding the body's arguments; f(idx) runs the body for one index. */
template <class F>
__global__ void na_grid_kernel(const F f, int64_t total)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        f(i);
}

/* Queues f over [0, total) on `stream` and checks the launch; `name` goes into the error message. */
template <class F>
static nat_status na_launch(cudaStream_t stream, const char *name, const F &f, int64_t total)
{
    if (total <= 0)
        return NAT_OK;
    const int block = 128;
    na_grid_kernel<F><<<nat_cuda_blocks(total, block), block, 0, stream>>>(f, total);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return nat_cuda_fail(name, __FILE__, __LINE__, cudaGetErrorString(e));
    return NAT_OK;
}
#endif

#endif
