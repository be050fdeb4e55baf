/* core/ops_conv.c — 2-D convolution on the CPU: im2col + OpenBLAS sgemm, forward and backward.
 *
 * Layouts: x [N, C, H, W], weight [O, C, kh, kw] (PyTorch's), bias [O], out [N, O, Ho, Wo], all
 * row-major. The weight read as [O, K] with K = C·kh·kw matches the rows of the im2col matrix
 * col [K, Ho·Wo], so one sample's output is W·col. A 1x1, stride-1, unpadded conv skips im2col: the
 * sample itself is col.
 *
 * Threads: with at least as many samples as threads, each thread takes whole samples (own col buffer;
 * its sgemm runs single-threaded because OpenBLAS's OpenMP build goes serial inside a parallel region),
 * so im2col, sgemm and col2im of a sample need no synchronisation. With fewer samples than threads,
 * samples run one after another and im2col/col2im and sgemm use the threads instead.
 *
 * Backward recomputes col from the saved input rather than keeping it from forward: col is kh·kw times
 * the input, and rebuilding it is a memory-bound copy far cheaper than the sgemms around it. The weight
 * gradient of the sample-parallel path goes to per-thread buffers summed at the end, so results do not
 * depend on scheduling order beyond float rounding of that last sum.
 *
 * On a CUDA device the three convolutions go to cuDNN (core/cuda/conv.cu) and the bias to the
 * elementwise and reduction kernels; shapes, checks and the tape are the same.
 *
 * Autocast (nat_ctx_precision BF16 / F16): x, the weight and (backward) the output gradient are rounded
 * to the format before the convolutions, accumulation and results stay f32; the bias and its gradient
 * stay f32. The CPU rounds into scratch and runs the f32 path on it (exact emulation up to summation
 * order); CUDA runs cuDNN with 2-byte tensors (see core/cuda/kernels.h for its one extra rounding). The
 * precision is saved on the node for backward.
 */
#include <cblas.h> /* cblas_sgemm */
#include <inttypes.h>
#include <limits.h>
#include <omp.h>
#include <string.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
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

static conv_geom geom_of(const nat_tensor *x, const nat_tensor *w, const int64_t *attr)
{
    conv_geom g;
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.O = w->shape[0], g.kh = w->shape[2], g.kw = w->shape[3];
    g.sh = attr[0], g.sw = attr[1], g.ph = attr[2], g.pw = attr[3];
    g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    g.K = g.C * g.kh * g.kw;
    g.P = g.Ho * g.Wo;
    return g;
}

static nat_status conv2d_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *grad_out)
{
    nat_tensor *x = node->saved[0], *w = node->saved[1];
    conv_geom g = geom_of(x, w, node->i);
    nat_precision prec = (nat_precision)node->i[4];
    nat_tensor *gd, *gx, *gw, *gb;
    NAT_TRY(nat_dense(ctx, grad_out, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gw));
    NAT_TRY(nat_grad_get(ctx, node->in[2], &gb));
    if (g.N == 0 || g.O == 0)
        return NAT_OK;
    const float *G = nat_tensor_f32(gd);
    int dev = nat_ctx_cuda_index(ctx);
    if (dev >= 0) {
        nat_cuda_conv_geom cg = {g.N, g.C, g.H, g.W, g.O, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.Ho, g.Wo};
        if (gb) {
            int64_t shape[3] = {g.N, g.O, g.P}, stride[3] = {g.O * g.P, g.P, 1};
            bool keep[3] = {false, true, false};
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), reduce, nat_tensor_f32(gb), true, 1.0f, 3, shape, G, stride, keep));
        }
        if (gx && prec != NAT_PREC_F32)
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_backward_data_lowp, (int)prec, &cg, nat_tensor_f32(w), G, nat_tensor_f32(gx)));
        else if (gx)
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_backward_data, &cg, nat_tensor_f32(w), G, nat_tensor_f32(gx)));
        if (gw && prec != NAT_PREC_F32)
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_backward_filter_lowp, (int)prec, &cg, nat_tensor_f32(x), G, nat_tensor_f32(gw)));
        else if (gw)
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_backward_filter, &cg, nat_tensor_f32(x), G, nat_tensor_f32(gw)));
        return NAT_OK;
    }
    if (gb) {
        float *B = nat_tensor_f32(gb);
        const int64_t ys = g.O * g.P;
#pragma omp parallel for if (g.N * ys > 65536)
        for (int64_t o = 0; o < g.O; o++) {
            double s = 0.0;
            for (int64_t n = 0; n < g.N; n++) {
                const float *row = G + n * ys + o * g.P;
                float part = 0.0f;
                for (int64_t p = 0; p < g.P; p++)
                    part += row[p];
                s += part;
            }
            B[o] += (float)s;
        }
    }
    if (!gx && !gw)
        return NAT_OK;
    const float *ops[3] = {nat_tensor_f32(x), nat_tensor_f32(w), G};
    int64_t counts[3] = {g.N * g.C * g.H * g.W, g.O * g.K, g.N * g.O * g.P};
    float *block;
    size_t bytes;
    NAT_TRY(round_operands(prec, 3, ops, counts, &block, &bytes));
    nat_status s = conv_backward_all(&g, ops[0], ops[1], ops[2], gx ? nat_tensor_f32(gx) : NULL,
                                     gw ? nat_tensor_f32(gw) : NULL);
    if (block)
        nat_mem_free(NAT_CPU, block, bytes);
    return s;
}

static const nat_op_def conv2d_op = {"conv2d", conv2d_backward};

nat_status nat_conv2d(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, int stride_h, int stride_w,
                      int pad_h, int pad_w, nat_tensor **out)
{
    NAT_TRY(nat_check_f32_dev(ctx, x, "conv2d", "input"));
    NAT_TRY(nat_check_f32_dev(ctx, w, "conv2d", "weight"));
    char sx[96], sw[96];
    nat_shape_str(x, sx, sizeof sx);
    nat_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4)
        return nat_error(NAT_ERR_SHAPE, "conv2d: input %s must be [N, C, H, W] (weight %s)", sx, sw);
    if (w->ndim != 4 || w->shape[1] != x->shape[1])
        return nat_error(NAT_ERR_SHAPE, "conv2d: weight %s does not fit input %s (expected weight [O, %" PRId64 ", kh, kw])",
                         sw, sx, x->shape[1]);
    if (w->shape[1] == 0 || w->shape[2] == 0 || w->shape[3] == 0)
        return nat_error(NAT_ERR_SHAPE, "conv2d: weight %s has an empty dimension (input %s)", sw, sx);
    if (bias) {
        NAT_TRY(nat_check_f32_dev(ctx, bias, "conv2d", "bias"));
        if (bias->ndim != 1 || bias->shape[0] != w->shape[0]) {
            char sb[96];
            return nat_error(NAT_ERR_SHAPE, "conv2d: bias %s does not fit weight %s (expected [%" PRId64 "])",
                             nat_shape_str(bias, sb, sizeof sb), sw, w->shape[0]);
        }
    }
    if (stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0)
        return nat_error(NAT_ERR_INVALID_ARG, "conv2d: stride %dx%d, padding %dx%d: strides must be >= 1 and padding >= 0",
                         stride_h, stride_w, pad_h, pad_w);
    if (x->shape[2] + 2 * (int64_t)pad_h < w->shape[2] || x->shape[3] + 2 * (int64_t)pad_w < w->shape[3])
        return nat_error(NAT_ERR_SHAPE, "conv2d: kernel %" PRId64 "x%" PRId64 " of weight %s is larger than input %s padded by %dx%d",
                         w->shape[2], w->shape[3], sw, sx, pad_h, pad_w);
    int64_t attr[4] = {stride_h, stride_w, pad_h, pad_w};
    conv_geom g = geom_of(x, w, attr);
    if (g.K > INT_MAX || g.P > INT_MAX || g.O > INT_MAX)
        return nat_error(NAT_ERR_UNSUPPORTED, "conv2d: input %s with weight %s exceeds sgemm's int dimensions", sx, sw);

    nat_tensor *xd, *wd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_dense(ctx, w, &wd));
    const float *B = NULL;
    if (bias) {
        nat_tensor *bd;
        NAT_TRY(nat_dense(ctx, bias, &bd));
        B = nat_tensor_f32(bd);
    }
    int64_t shape[4] = {g.N, g.O, g.Ho, g.Wo};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 4, shape));
    int dev = nat_ctx_cuda_index(ctx);
    nat_precision prec = nat_ctx_precision(ctx);
    if (dev >= 0 && g.N > 0 && g.O > 0) {
        nat_cuda_conv_geom cg = {g.N, g.C, g.H, g.W, g.O, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.Ho, g.Wo};
        if (prec != NAT_PREC_F32)
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_forward_lowp, (int)prec, &cg, nat_tensor_f32(xd), nat_tensor_f32(wd),
                                                 nat_tensor_f32(y)));
        else
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), conv2d_forward, &cg, nat_tensor_f32(xd), nat_tensor_f32(wd), nat_tensor_f32(y)));
        if (B) {
            /* y [N, O, P] += bias read with strides (0, 1, 0). */
            int64_t s3[3] = {g.N, g.O, g.P}, bs[3] = {0, 1, 0};
            NAT_TRY(NAT_KERNEL(NAT_EXEC_CUDA(dev), binary, NAT_CUDA_SCALE, true, nat_tensor_f32(y), 3, s3, B, bs, NULL, NULL, 1.0f));
        }
    } else if (g.N > 0 && g.O > 0) {
        const float *ops[2] = {nat_tensor_f32(xd), nat_tensor_f32(wd)};
        int64_t counts[2] = {g.N * g.C * g.H * g.W, g.O * g.K};
        float *block;
        size_t bytes;
        NAT_TRY(round_operands(prec, 2, ops, counts, &block, &bytes));
        nat_status s = conv_forward_all(&g, ops[0], ops[1], B, nat_tensor_f32(y));
        if (block)
            nat_mem_free(NAT_CPU, block, bytes);
        NAT_TRY(s);
    }

    nat_node *node;
    nat_tensor *ins[3] = {x, w, bias};
    NAT_TRY(nat_ctx_record(ctx, &conv2d_op, y, 3, ins, &node));
    if (node) {
        node->saved[0] = xd;
        node->saved[1] = wd;
        node->n_saved = 2;
        memcpy(node->i, attr, sizeof attr);
        node->i[4] = prec;
    }
    *out = y;
    return NAT_OK;
}
