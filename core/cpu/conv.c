/* core/cpu/conv.c — 2-D convolution on the CPU: im2col + OpenBLAS sgemm, forward (with the bias) and
 * backward data / filter, in f32 or with the operands rounded to bf16 / f16 first (autocast).
 *
 * Layouts: x [N, C, H, W], weight [O, C, kh, kw], bias [O], out [N, O, Ho, Wo], all row-major. The weight
 * read as [O, K] with K = C·kh·kw matches the rows of the im2col matrix col [K, Ho·Wo], so one sample's
 * output is W·col. A 1x1, stride-1, unpadded conv skips im2col: the sample itself is col.
 *
 * Threads: with at least as many samples as threads, each thread takes whole samples (own col buffer;
 * its sgemm runs single-threaded because OpenBLAS's OpenMP build goes serial inside a parallel region),
 * so im2col, sgemm and col2im of a sample need no synchronisation. With fewer samples than threads,
 * samples run one after another and im2col/col2im and sgemm use the threads instead.
 *
 * Backward recomputes col from the saved input rather than keeping it from forward: col is kh·kw times
 * the input, and rebuilding it is a memory-bound copy far cheaper than the sgemms around it. The weight
 * gradient of the sample-parallel path goes to per-thread buffers summed at the end, so results do not
 * depend on scheduling order beyond float rounding of that last sum. Data and filter gradients are
 * separate kernels; per sample they never depended on each other, so running them apart keeps the bits.
 */
#include <cblas.h> /* cblas_sgemm */
#include <omp.h>
#include <string.h>

#include "core/cpu/kernels.h"
#include "nat/half.h" /* nat_round_array */

typedef struct conv_geom {
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, Ho, Wo;
    int64_t K, P; /* K = C·kh·kw rows of col, P = Ho·Wo output pixels */
} conv_geom;

static bool is_pointwise(const conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* C[M,N] = op(A) op(B) + beta·C, row-major, dense. */
static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float beta, float *C)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0f, A, ta ? (int)M : (int)K, B, tb ? (int)K : (int)N, beta, C, (int)N);
}

/* Output columns ox whose input column ox·sw - pw + kj lies inside [0, W): [*lo, *hi). */
static void valid_cols(const conv_geom *g, int64_t kj, int64_t *lo, int64_t *hi)
{
    int64_t a = g->pw - kj; /* ix = ox·sw - a */
    int64_t l = a > 0 ? (a + g->sw - 1) / g->sw : 0;
    int64_t last = g->W - 1 + a; /* largest ox·sw allowed */
    int64_t h = last >= 0 ? last / g->sw + 1 : 0;
    if (l > g->Wo)
        l = g->Wo;
    if (h > g->Wo)
        h = g->Wo;
    if (h < l)
        h = l;
    *lo = l;
    *hi = h;
}

/* col[(c·kh + ki)·kw + kj][oy·Wo + ox] = x[c][oy·sh - ph + ki][ox·sw - pw + kj], zero outside. */
static void im2col(const conv_geom *g, const float *x, float *col, bool par)
{
    const int64_t kk = g->kh * g->kw, Wo = g->Wo, P = g->P;
#pragma omp parallel for if (par && g->K * P > 65536)
    for (int64_t r = 0; r < g->K; r++) {
        int64_t c = r / kk, ki = (r / g->kw) % g->kh, kj = r % g->kw;
        const float *xc = x + c * g->H * g->W;
        float *dst = col + r * P;
        int64_t lo, hi;
        valid_cols(g, kj, &lo, &hi);
        for (int64_t oy = 0; oy < g->Ho; oy++) {
            float *row = dst + oy * Wo;
            int64_t iy = oy * g->sh - g->ph + ki;
            if (iy < 0 || iy >= g->H) {
                memset(row, 0, (size_t)Wo * sizeof *row);
                continue;
            }
            const float *src = xc + iy * g->W - g->pw + kj;
            for (int64_t ox = 0; ox < lo; ox++)
                row[ox] = 0.0f;
            if (g->sw == 1)
                memcpy(row + lo, src + lo, (size_t)(hi - lo) * sizeof *row);
            else
                for (int64_t ox = lo; ox < hi; ox++)
                    row[ox] = src[ox * g->sw];
            for (int64_t ox = hi; ox < Wo; ox++)
                row[ox] = 0.0f;
        }
    }
}

/* The adjoint of im2col: dx[c][iy][ix] += col[...] for every window position that read it. Parallel over
 * channels because the kh·kw rows of one channel write to the same pixels. */
static void col2im(const conv_geom *g, const float *col, float *dx, bool par)
{
    const int64_t kk = g->kh * g->kw, Wo = g->Wo, P = g->P;
#pragma omp parallel for if (par && g->K * P > 65536)
    for (int64_t c = 0; c < g->C; c++) {
        float *dxc = dx + c * g->H * g->W;
        for (int64_t k = 0; k < kk; k++) {
            int64_t ki = k / g->kw, kj = k % g->kw;
            const float *src = col + (c * kk + k) * P;
            int64_t lo, hi;
            valid_cols(g, kj, &lo, &hi);
            for (int64_t oy = 0; oy < g->Ho; oy++) {
                int64_t iy = oy * g->sh - g->ph + ki;
                if (iy < 0 || iy >= g->H)
                    continue;
                const float *row = src + oy * Wo;
                float *dst = dxc + iy * g->W - g->pw + kj;
                if (g->sw == 1)
                    for (int64_t ox = lo; ox < hi; ox++)
                        dst[ox] += row[ox];
                else
                    for (int64_t ox = lo; ox < hi; ox++)
                        dst[ox * g->sw] += row[ox];
            }
        }
    }
}

/* y[O, P] = W[O, K]·col(x) + bias for one sample; col is a K·P buffer (unused for pointwise convs). */
static void forward_sample(const conv_geom *g, const float *x, const float *w, const float *bias, float *y, float *col,
                           bool par)
{
    const float *cm = x;
    if (!is_pointwise(g)) {
        im2col(g, x, col, par);
        cm = col;
    }
    float beta = 0.0f;
    if (bias) {
        for (int64_t o = 0; o < g->O; o++)
            for (int64_t p = 0; p < g->P; p++)
                y[o * g->P + p] = bias[o];
        beta = 1.0f;
    }
    sgemm(false, false, g->O, g->P, g->K, w, cm, beta, y);
}

/* One sample's backward: gw_acc[O, K] += gy·colᵀ (when gw_acc), gx[C, H, W] += col2im(Wᵀ·gy) (when gx).
 * col is a K·P work buffer. */
static void backward_sample(const conv_geom *g, const float *x, const float *w, const float *gy, float *gw_acc, float *gx,
                            float *col, bool par)
{
    bool pw = is_pointwise(g);
    if (gw_acc) {
        const float *cm = x;
        if (!pw) {
            im2col(g, x, col, par);
            cm = col;
        }
        sgemm(false, true, g->O, g->K, g->P, gy, cm, 1.0f, gw_acc);
    }
    if (gx) {
        if (pw) {
            sgemm(true, false, g->K, g->P, g->O, w, gy, 1.0f, gx);
        } else {
            sgemm(true, false, g->K, g->P, g->O, w, gy, 0.0f, col);
            col2im(g, col, gx, par);
        }
    }
}

static int thread_count(const conv_geom *g)
{
    int nt = omp_get_max_threads();
    if (omp_in_parallel() || nt < 1)
        nt = 1;
    return (int64_t)nt <= g->N ? nt : 1; /* 1: samples one after another, threads inside */
}

static nat_status conv_forward_all(const conv_geom *g, const float *X, const float *Wt, const float *B, float *Y)
{
    int nt = thread_count(g);
    size_t col_n = is_pointwise(g) ? 0 : (size_t)(g->K * g->P);
    size_t bytes = (size_t)nt * col_n * sizeof(float);
    float *cols;
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&cols));
    const int64_t xs = g->C * g->H * g->W, ys = g->O * g->P;
    if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t n = 0; n < g->N; n++)
            forward_sample(g, X + n * xs, Wt, B, Y + n * ys, cols + (size_t)omp_get_thread_num() * col_n, false);
    } else {
        for (int64_t n = 0; n < g->N; n++)
            forward_sample(g, X + n * xs, Wt, B, Y + n * ys, cols, true);
    }
    nat_mem_free(NAT_CPU, cols, bytes);
    return NAT_OK;
}

static nat_status conv_backward_all(const conv_geom *g, const float *X, const float *Wt, const float *G, float *GX,
                                    float *GW)
{
    int nt = thread_count(g);
    size_t col_n = is_pointwise(g) ? 0 : (size_t)(g->K * g->P);
    size_t wn = GW && nt > 1 ? (size_t)(g->O * g->K) : 0;
    size_t bytes = (size_t)nt * (col_n + wn) * sizeof(float);
    float *buf;
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&buf));
    const int64_t xs = g->C * g->H * g->W, ys = g->O * g->P;
    if (nt > 1) {
        float *gws = buf + (size_t)nt * col_n;
        memset(gws, 0, (size_t)nt * wn * sizeof(float));
        /* static: which samples a thread sums into its partial weight gradient, and so the rounding of
         * GW, is the same on every run (dynamic scheduling made GW differ in the last bit run to run) */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t n = 0; n < g->N; n++) {
            int t = omp_get_thread_num();
            backward_sample(g, X + n * xs, Wt, G + n * ys, GW ? gws + (size_t)t * wn : NULL, GX ? GX + n * xs : NULL,
                            buf + (size_t)t * col_n, false);
        }
        if (GW) {
            int64_t m = g->O * g->K;
#pragma omp parallel for if (m * nt > 65536)
            for (int64_t i = 0; i < m; i++) {
                float s = 0.0f;
                for (int t = 0; t < nt; t++)
                    s += gws[(size_t)t * wn + (size_t)i];
                GW[i] += s;
            }
        }
    } else {
        for (int64_t n = 0; n < g->N; n++)
            backward_sample(g, X + n * xs, Wt, G + n * ys, GW, GX ? GX + n * xs : NULL, buf, true);
    }
    nat_mem_free(NAT_CPU, buf, bytes);
    return NAT_OK;
}

/* Autocast on the CPU: ops[0..n) (counts[i] elements each) rounded to prec into one scratch block;
 * ops[i] then points into it. *bytes is what to give back with nat_mem_free (0: nothing was made). */
static nat_status round_operands(nat_precision prec, int n, const float **ops, const int64_t *counts, float **block,
                                 size_t *bytes)
{
    *block = NULL;
    *bytes = 0;
    if (prec == NAT_PREC_F32)
        return NAT_OK;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += ops[i] ? counts[i] : 0;
    *bytes = (size_t)total * sizeof(float);
    NAT_TRY(nat_mem_alloc(NAT_CPU, *bytes, (void **)block));
    float *at = *block;
    for (int i = 0; i < n; i++) {
        if (!ops[i])
            continue;
        nat_round_array(prec, ops[i], at, counts[i]);
        ops[i] = at;
        at += counts[i];
    }
    return NAT_OK;
}

static conv_geom geom_from(const nat_cuda_conv_geom *c)
{
    conv_geom g = {c->N, c->C, c->H, c->W, c->O, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->Ho, c->Wo, 0, 0};
    g.K = g.C * g.kh * g.kw;
    g.P = g.Ho * g.Wo;
    return g;
}

nat_status nat_cpu_conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *cg, const float *x,
                                       const float *w, const float *b, float *y)
{
    (void)ex;
    conv_geom g = geom_from(cg);
    const float *ops[2] = {x, w};
    int64_t counts[2] = {g.N * g.C * g.H * g.W, g.O * g.K};
    float *block;
    size_t bytes;
    NAT_TRY(round_operands((nat_precision)prec, 2, ops, counts, &block, &bytes));
    nat_status s = conv_forward_all(&g, ops[0], ops[1], b, y);
    if (block)
        nat_mem_free(NAT_CPU, block, bytes);
    return s;
}

nat_status nat_cpu_conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                  const float *b, float *y)
{
    return nat_cpu_conv2d_forward_lowp(ex, NAT_PREC_F32, g, x, w, b, y);
}

/* gx += bwd_data(w, gy) (x NULL) or gw += bwd_filter(x, gy) (w NULL), operands rounded to prec. */
static nat_status backward(int prec, const nat_cuda_conv_geom *cg, const float *x, const float *w, const float *gy,
                           float *gx, float *gw)
{
    conv_geom g = geom_from(cg);
    const float *ops[3] = {x, w, gy};
    int64_t counts[3] = {g.N * g.C * g.H * g.W, g.O * g.K, g.N * g.O * g.P};
    float *block;
    size_t bytes;
    NAT_TRY(round_operands((nat_precision)prec, 3, ops, counts, &block, &bytes));
    nat_status s = conv_backward_all(&g, ops[0], ops[1], ops[2], gx, gw);
    if (block)
        nat_mem_free(NAT_CPU, block, bytes);
    return s;
}

nat_status nat_cpu_conv2d_backward_data_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                             const float *w, const float *gy, float *gx)
{
    (void)ex;
    return backward(prec, g, NULL, w, gy, gx, NULL);
}

nat_status nat_cpu_conv2d_backward_filter_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                               const float *x, const float *gy, float *gw)
{
    (void)ex;
    return backward(prec, g, x, NULL, gy, NULL, gw);
}

nat_status nat_cpu_conv2d_backward_data(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *w,
                                        const float *gy, float *gx)
{
    return nat_cpu_conv2d_backward_data_lowp(ex, NAT_PREC_F32, g, w, gy, gx);
}

nat_status nat_cpu_conv2d_backward_filter(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                          const float *gy, float *gw)
{
    return nat_cpu_conv2d_backward_filter_lowp(ex, NAT_PREC_F32, g, x, gy, gw);
}

/* gb[o] += Σ over samples and pixels of G [N, O, P]: per (sample, channel) a float sum over pixels, the
 * samples added in double. */
nat_status nat_cpu_conv2d_bias_grad(const nat_exec *ex, const float *G, int64_t N, int64_t O, int64_t P, float *B)
{
    (void)ex;
    const int64_t ys = O * P;
#pragma omp parallel for if (N * ys > 65536)
    for (int64_t o = 0; o < O; o++) {
        double s = 0.0;
        for (int64_t n = 0; n < N; n++) {
            const float *row = G + n * ys + o * P;
            float part = 0.0f;
            for (int64_t p = 0; p < P; p++)
                part += row[p];
            s += part;
        }
        B[o] += (float)s;
    }
    return NAT_OK;
}
