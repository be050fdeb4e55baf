/* tests/ref/na_ref.c — reference neighborhood attention, written from docs/design.md §2 alone (the window
 * and inverse-neighbourhood rules are coded here again on purpose, independently of the fast kernels).
 * Double precision, plain loops, one query or one key at a time. Every problem is viewed as 3-D
 * (na_problem): a 1-D or 2-D problem has leading axes of length 1 with kernel 1, which have exactly one
 * key and one rpb entry. Layouts and conventions: see tests/ref/na_ref.h.
 */
#include "tests/ref/na_ref.h"

#include <math.h>
#include <string.h>

#include "nat/alloc.h"

/* Per-axis window of query index i (docs/design.md §2): keys key0 + t*d, t = 0..k-1; rpb index rpb0 + t. */
static void axis_window(int64_t i, int64_t L, int k, int d, int causal, int64_t *key0, int64_t *rpb0)
{
    int64_t r = k / 2;
    int64_t g = i % d;
    int64_t p = i / d;
    int64_t lg = (L - g + d - 1) / d;
    int64_t s;
    if (causal) {
        s = p - k + 1 > 0 ? p - k + 1 : 0;
    } else {
        s = p - r;
        if (s < 0)
            s = 0;
        if (s > lg - k)
            s = lg - k;
    }
    *key0 = s * d + g;
    *rpb0 = (k - 1) + s - p;
}

/* Per-axis inverse neighbourhood of key index y: queries q0, q0 + d, ... below q1 (docs/design.md §2). */
static void axis_inverse(int64_t y, int64_t L, int k, int d, int causal, int64_t *q0, int64_t *q1)
{
    int64_t r = k / 2;
    if (causal) {
        *q0 = y;
        *q1 = y + (int64_t)k * d < L ? y + (int64_t)k * d : L;
    } else {
        *q0 = y < (int64_t)k * d ? y % d : y - r * d;
        *q1 = y >= L - (int64_t)k * d ? L : y + (r + 1) * d;
    }
}

/* The window of one query pixel on all three axes. */
typedef struct window {
    int64_t key0[3], rpb0[3];
} window;

static window query_window(const na_problem *pb, const int64_t i[3])
{
    window w;
    for (int a = 0; a < 3; a++)
        axis_window(i[a], pb->len[a], pb->kernel[a], pb->dilation[a], pb->causal[a], &w.key0[a],
                    &w.rpb0[a]);
    return w;
}

/* Slot -> key pixel (flat index within the head) and rpb index; returns 0 for a causally masked slot. */
static int slot_key(const na_problem *pb, const int64_t i[3], const window *w, int64_t slot,
                    int64_t *key, int64_t *rpb_idx)
{
    int64_t t[3];
    t[2] = slot % pb->kernel[2];
    t[1] = slot / pb->kernel[2] % pb->kernel[1];
    t[0] = slot / ((int64_t)pb->kernel[2] * pb->kernel[1]);
    int valid = 1;
    int64_t flat = 0, ridx = 0;
    for (int a = 0; a < 3; a++) {
        int64_t y = w->key0[a] + t[a] * pb->dilation[a];
        if (pb->causal[a] && y > i[a])
            valid = 0;
        flat = flat * pb->len[a] + y;
        ridx = ridx * pb->rpb_ext[a] + w->rpb0[a] + t[a];
    }
    *key = flat;
    *rpb_idx = ridx;
    return valid;
}

static void unflatten(const na_problem *pb, int64_t pix, int64_t i[3])
{
    i[2] = pix % pb->len[2];
    i[1] = pix / pb->len[2] % pb->len[1];
    i[0] = pix / (pb->len[2] * pb->len[1]);
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t c = 0; c < n; c++)
        s += a[c] * b[c];
    return s;
}

/* Loops over every query: bh = batch*heads + head index, pix = flat pixel index within the head. */
#define FOR_EACH_QUERY(pb, bh, pix)                                   \
    for (int64_t bh = 0; bh < (pb)->batch * (pb)->heads; bh++)      \
        for (int64_t pix = 0; pix < (pb)->npix; pix++)

nat_status na_ref_qk(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                     int64_t dim, const double *q, const double *k, const double *rpb, double *attn)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, rpb != NULL, "na_ref_qk"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, D = dim;
    FOR_EACH_QUERY(&pb, bh, pix) {
        int64_t i[3];
        unflatten(&pb, pix, i);
        window w = query_window(&pb, i);
        const double *qrow = q + (bh * pb.npix + pix) * D;
        double *arow = attn + (bh * pb.npix + pix) * K;
        for (int64_t s = 0; s < K; s++) {
            int64_t key, ridx;
            if (!slot_key(&pb, i, &w, s, &key, &ridx)) {
                arow[s] = -INFINITY;
                continue;
            }
            double logit = (double)pb.scale * dot(qrow, k + (bh * pb.npix + key) * D, D);
            if (rpb)
                logit += rpb[(bh % heads) * pb.rpb_size + ridx];
            arow[s] = logit;
        }
    }
    return NAT_OK;
}

nat_status na_ref_av(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                     int64_t dim, const double *attn, const double *v, double *out)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, 0, "na_ref_av"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, D = dim;
    FOR_EACH_QUERY(&pb, bh, pix) {
        int64_t i[3];
        unflatten(&pb, pix, i);
        window w = query_window(&pb, i);
        const double *arow = attn + (bh * pb.npix + pix) * K;
        double *orow = out + (bh * pb.npix + pix) * D;
        for (int64_t c = 0; c < D; c++)
            orow[c] = 0.0;
        for (int64_t s = 0; s < K; s++) {
            int64_t key, ridx;
            if (!slot_key(&pb, i, &w, s, &key, &ridx))
                continue;
            const double *vrow = v + (bh * pb.npix + key) * D;
            for (int64_t c = 0; c < D; c++)
                orow[c] += arow[s] * vrow[c];
        }
    }
    return NAT_OK;
}

/* For key pixel y (flat), visits every query whose window holds it, with the slot y occupies there:
 * the gather that computes dk and dv without scattering. coef(q, slot) scales row src[q]; the sum is
 * written to dst[y]. */
static void gather_inverse(const na_problem *pb, int64_t bh, int64_t ypix, const double *coef /*[N,K]*/,
                           const double *src /*[N,D]*/, double factor, double *dst /*[D]*/)
{
    const int64_t K = pb->nkeys, D = pb->dim;
    int64_t y[3], lo[3], hi[3];
    unflatten(pb, ypix, y);
    for (int a = 0; a < 3; a++)
        axis_inverse(y[a], pb->len[a], pb->kernel[a], pb->dilation[a], pb->causal[a], &lo[a], &hi[a]);
    for (int64_t c = 0; c < D; c++)
        dst[c] = 0.0;
    int64_t i[3];
    for (i[0] = lo[0]; i[0] < hi[0]; i[0] += pb->dilation[0])
        for (i[1] = lo[1]; i[1] < hi[1]; i[1] += pb->dilation[1])
            for (i[2] = lo[2]; i[2] < hi[2]; i[2] += pb->dilation[2]) {
                window w = query_window(pb, i);
                int64_t slot = 0;
                for (int a = 0; a < 3; a++)
                    slot = slot * pb->kernel[a] + (y[a] - w.key0[a]) / pb->dilation[a];
                int64_t qpix = (i[0] * pb->len[1] + i[1]) * pb->len[2] + i[2];
                double cf = factor * coef[(bh * pb->npix + qpix) * K + slot];
                const double *row = src + (bh * pb->npix + qpix) * D;
                for (int64_t c = 0; c < D; c++)
                    dst[c] += cf * row[c];
            }
}

nat_status na_ref_qk_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                              const int64_t *spatial, int64_t dim, const double *d_attn,
                              const double *q, const double *k, double *dq, double *dk, double *drpb)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, drpb != NULL, "na_ref_qk_backward"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, D = dim;
    const double scale = pb.scale;
    if (drpb)
        memset(drpb, 0, sizeof(double) * (size_t)(heads * pb.rpb_size));
    FOR_EACH_QUERY(&pb, bh, pix) {
        int64_t i[3];
        unflatten(&pb, pix, i);
        window w = query_window(&pb, i);
        const double *grow = d_attn + (bh * pb.npix + pix) * K;
        double *dqrow = dq + (bh * pb.npix + pix) * D;
        for (int64_t c = 0; c < D; c++)
            dqrow[c] = 0.0;
        for (int64_t s = 0; s < K; s++) {
            int64_t key, ridx;
            if (!slot_key(&pb, i, &w, s, &key, &ridx))
                continue;
            const double *krow = k + (bh * pb.npix + key) * D;
            for (int64_t c = 0; c < D; c++)
                dqrow[c] += scale * grow[s] * krow[c];
            if (drpb)
                drpb[(bh % heads) * pb.rpb_size + ridx] += grow[s];
        }
    }
    FOR_EACH_QUERY(&pb, bh, y)
        gather_inverse(&pb, bh, y, d_attn, q, scale, dk + (bh * pb.npix + y) * D);
    return NAT_OK;
}

nat_status na_ref_av_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                              const int64_t *spatial, int64_t dim, const double *d_out,
                              const double *attn, const double *v, double *d_attn, double *dv)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, 0, "na_ref_av_backward"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, D = dim;
    FOR_EACH_QUERY(&pb, bh, pix) {
        int64_t i[3];
        unflatten(&pb, pix, i);
        window w = query_window(&pb, i);
        const double *gorow = d_out + (bh * pb.npix + pix) * D;
        double *garow = d_attn + (bh * pb.npix + pix) * K;
        for (int64_t s = 0; s < K; s++) {
            int64_t key, ridx;
            garow[s] = slot_key(&pb, i, &w, s, &key, &ridx)
                           ? dot(gorow, v + (bh * pb.npix + key) * D, D)
                           : 0.0;
        }
    }
    FOR_EACH_QUERY(&pb, bh, y)
        gather_inverse(&pb, bh, y, attn, d_out, 1.0, dv + (bh * pb.npix + y) * D);
    return NAT_OK;
}

nat_status na_ref_fused_forward(const nat_na_params *p, int64_t batch, int64_t heads,
                                const int64_t *spatial, int64_t dim, const double *q, const double *k,
                                const double *v, const double *rpb, double *out, double *lse)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, rpb != NULL, "na_ref_fused_forward"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, N = batch * heads * pb.npix;
    size_t bytes = sizeof(double) * (size_t)(N * K);
    double *w = NULL;
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&w));
    na_ref_qk(p, batch, heads, spatial, dim, q, k, rpb, w);
    for (int64_t n = 0; n < N; n++) {
        double *row = w + n * K;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t s = 0; s < K; s++)
            mx = row[s] > mx ? row[s] : mx;
        for (int64_t s = 0; s < K; s++)
            sum += exp(row[s] - mx); /* exp(-inf) = 0 for masked slots */
        for (int64_t s = 0; s < K; s++)
            row[s] = exp(row[s] - mx) / sum;
        lse[n] = mx + log(sum);
    }
    na_ref_av(p, batch, heads, spatial, dim, w, v, out);
    nat_mem_free(NAT_CPU, w, bytes);
    return NAT_OK;
}

nat_status na_ref_fused_backward(const nat_na_params *p, int64_t batch, int64_t heads,
                                 const int64_t *spatial, int64_t dim, const double *q, const double *k,
                                 const double *v, const double *rpb, const double *out,
                                 const double *lse, const double *d_out, double *dq, double *dk,
                                 double *dv, double *drpb)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, rpb != NULL || drpb != NULL,
                        "na_ref_fused_backward"));
    na_problem pb;
    na_problem_fill(&pb, p, batch, heads, spatial, dim);
    const int64_t K = pb.nkeys, D = dim, N = batch * heads * pb.npix;
    size_t bytes = sizeof(double) * (size_t)(N * K);
    double *w = NULL, *g = NULL;
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&w));
    nat_status st = nat_mem_alloc(NAT_CPU, bytes, (void **)&g);
    if (st != NAT_OK) {
        nat_mem_free(NAT_CPU, w, bytes);
        return st;
    }
    /* Weights rebuilt from the saved lse, then dW = d_out . v[key] and dv. */
    na_ref_qk(p, batch, heads, spatial, dim, q, k, rpb, w);
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < K; s++)
            w[n * K + s] = exp(w[n * K + s] - lse[n]);
    na_ref_av_backward(p, batch, heads, spatial, dim, d_out, w, v, g, dv);
    /* Softmax backward: dLogit = w * (dW - delta), delta = sum_s w*dW = d_out . out. */
    for (int64_t n = 0; n < N; n++) {
        double delta = dot(d_out + n * D, out + n * D, D);
        for (int64_t s = 0; s < K; s++)
            g[n * K + s] = w[n * K + s] * (g[n * K + s] - delta);
    }
    na_ref_qk_backward(p, batch, heads, spatial, dim, g, q, k, dq, dk, drpb);
    nat_mem_free(NAT_CPU, g, bytes);
    nat_mem_free(NAT_CPU, w, bytes);
    return NAT_OK;
}
