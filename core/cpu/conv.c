/* core/cpu/conv.c — 2-D convolution on the CPU: oneDNN convolution primitives (core/cpu/onednn.h),
 * forward (with the bias), backward data and backward weights, in f32 or in bf16 (autocast).
 *
 * Layouts: x [N, C, H, W], weight [O, C, kh, kw], bias [O], out [N, O, Ho, Wo], all row-major (nchw,
 * oihw). The primitives choose their own layouts (format "any": blocked nChw16c and the like, where the
 * fast kernels live); a plan reorders nat's tensors into them and back, and the reorders also round f32
 * to bf16. The backward kernels add into gx / gw (autograd's rule) through their output reorder's sum.
 *
 * bf16 (autocast): x, the weight and (backward) the output gradient are rounded to bf16, products are
 * accumulated in f32, the result and the bias are f32 — as the CUDA path defines it. Where oneDNN has no
 * bf16 convolution at the effective ISA, and for f16, the operands are rounded into f32 scratch and the
 * f32 convolution runs on them (the same result up to summation order).
 *
 * Threads: oneDNN's OpenMP team is the caller's (both sides use libgomp). Results do not depend on
 * scheduling for a given thread count. The bias gradient stays nat's own loop (a sum in a fixed order).
 */
#include <pthread.h>
#include <string.h>

#include "core/cpu/isa.h" /* nat_cpu_bf16_gemm_native */
#include "core/cpu/kernels.h"
#include "core/cpu/onednn.h"
#include "nat/alloc.h"
#include "nat/half.h" /* nat_round_array */

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHTS };

typedef struct conv_key {
    int64_t kind, bf16, bias;
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, Ho, Wo;
} conv_key;

static nat_status md4(dnnl_memory_desc_t *md, int64_t a, int64_t b, int64_t c, int64_t d, dnnl_data_type_t dt,
                      dnnl_format_tag_t tag)
{
    dnnl_dims_t dims = {a, b, c, d};
    return nat_dnn_check(dnnl_memory_desc_init_by_tag(md, 4, dims, dt, tag), "convolution tensor");
}

static nat_status conv_build(const void *vkey, nat_dnn_plan *pl)
{
    const conv_key *k = vkey;
    dnnl_engine_t eng;
    NAT_TRY(nat_dnn_engine(&eng));
    const dnnl_data_type_t dt = k->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t ux, uw, uy, ub, px, pw, py, pxf;
    NAT_TRY(md4(&ux, k->N, k->C, k->H, k->W, dnnl_f32, dnnl_nchw));
    NAT_TRY(md4(&uw, k->O, k->C, k->kh, k->kw, dnnl_f32, dnnl_oihw));
    NAT_TRY(md4(&uy, k->N, k->O, k->Ho, k->Wo, dnnl_f32, dnnl_nchw));
    NAT_TRY(md4(&px, k->N, k->C, k->H, k->W, dt, dnnl_format_tag_any));
    NAT_TRY(md4(&pxf, k->N, k->C, k->H, k->W, dnnl_f32, dnnl_format_tag_any));
    NAT_TRY(md4(&pw, k->O, k->C, k->kh, k->kw, dt, dnnl_format_tag_any));
    dnnl_memory_desc_t pwf;
    NAT_TRY(md4(&pwf, k->O, k->C, k->kh, k->kw, dnnl_f32, dnnl_format_tag_any));
    /* the forward's output is f32; the backward's output gradient is an operand, rounded like x */
    NAT_TRY(md4(&py, k->N, k->O, k->Ho, k->Wo, k->kind == CONV_FWD ? dnnl_f32 : dt, dnnl_format_tag_any));
    dnnl_dims_t o1 = {k->O};
    NAT_TRY(nat_dnn_check(dnnl_memory_desc_init_by_tag(&ub, 1, o1, dnnl_f32, dnnl_a), "convolution bias"));
    dnnl_dims_t strides = {k->sh, k->sw}, pad_l = {k->ph, k->pw};
    /* oneDNN wants the right padding that makes the output size come out: what floor division dropped */
    dnnl_dims_t pad_r = {(k->Ho - 1) * k->sh + k->kh - k->H - k->ph, (k->Wo - 1) * k->sw + k->kw - k->W - k->pw};

    /* the forward descriptor: the operation itself, and the hint the backward ones need */
    dnnl_convolution_desc_t fd;
    NAT_TRY(nat_dnn_check(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &px,
                                                             &pw, k->kind == CONV_FWD && k->bias ? &ub : NULL, &py,
                                                             strides, pad_l, pad_r),
                          "convolution"));
    dnnl_primitive_attr_t attr;
    NAT_TRY(nat_dnn_attr(&attr, false));
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    dnnl_status_t st = dnnl_primitive_desc_create(&fpd, &fd, attr, eng, NULL);
    nat_status s = nat_dnn_check(st, "convolution forward");
    if (s == NAT_OK && k->kind == CONV_FWD) {
        const int in_arg[2] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS};
        const dnnl_memory_desc_t in_user[2] = {ux, uw};
        s = nat_dnn_plan_init(pl, fpd, 2, in_arg, in_user, DNNL_ARG_DST, &uy, false, k->bias ? DNNL_ARG_BIAS : 0);
    } else if (s == NAT_OK && k->kind == CONV_BWD_DATA) {
        dnnl_convolution_desc_t bd;
        s = nat_dnn_check(dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &pxf, &pw, &py,
                                                                    strides, pad_l, pad_r),
                          "convolution backward data");
        if (s == NAT_OK)
            s = nat_dnn_check(dnnl_primitive_desc_create(&pd, &bd, attr, eng, fpd), "convolution backward data");
        if (s == NAT_OK) {
            const int in_arg[2] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS};
            const dnnl_memory_desc_t in_user[2] = {uy, uw};
            s = nat_dnn_plan_init(pl, pd, 2, in_arg, in_user, DNNL_ARG_DIFF_SRC, &ux, true, 0);
        }
    } else if (s == NAT_OK) {
        dnnl_convolution_desc_t wd;
        s = nat_dnn_check(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &px, &pwf, NULL,
                                                                       &py, strides, pad_l, pad_r),
                          "convolution backward weights");
        if (s == NAT_OK)
            s = nat_dnn_check(dnnl_primitive_desc_create(&pd, &wd, attr, eng, fpd), "convolution backward weights");
        if (s == NAT_OK) {
            const int in_arg[2] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST};
            const dnnl_memory_desc_t in_user[2] = {ux, uy};
            s = nat_dnn_plan_init(pl, pd, 2, in_arg, in_user, DNNL_ARG_DIFF_WEIGHTS, &uw, true, 0);
        }
    }
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (fpd)
        dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_attr_destroy(attr);
    return s;
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

static conv_key key_of(int kind, bool bf16, bool bias, const nat_cuda_conv_geom *g)
{
    conv_key k;
    memset(&k, 0, sizeof k);
    k.kind = kind, k.bf16 = bf16, k.bias = bias;
    k.N = g->N, k.C = g->C, k.H = g->H, k.W = g->W, k.O = g->O, k.kh = g->kh, k.kw = g->kw;
    k.sh = g->sh, k.sw = g->sw, k.ph = g->ph, k.pw = g->pw, k.Ho = g->Ho, k.Wo = g->Wo;
    return k;
}

/* Whether autocast's convolutions run on oneDNN's bf16 kernels: it has them at the effective ISA (probed
 * once on a small problem) and they outrun f32 on this CPU (nat_cpu_bf16_gemm_native). */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool bf16_native;

static void probe(void)
{
    const nat_cuda_conv_geom g = {2, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 8, 8};
    conv_key k = key_of(CONV_BWD_WEIGHTS, true, false, &g);
    const nat_dnn_plan *pl;
    bf16_native = nat_dnn_plan_get("convolution", &k, sizeof k, conv_build, &pl) == NAT_OK && nat_cpu_bf16_gemm_native();
    nat_error_clear();
}

/* Whether a plan's main primitive is one of oneDNN's direct kernels (jit, brgemm) rather than its
 * gemm-based or reference fallback. */
static bool plan_direct(const nat_dnn_plan *pl)
{
    return strncmp(pl->impl, "jit", 3) == 0 || strncmp(pl->impl, "brg", 3) == 0;
}

/* gw += the weight gradient as one GEMM over the whole batch: gw [O, C·kh·kw] += Gᵀ·X, where row
 * r = (n, ho, wo) of X [N·Ho·Wo, C·kh·kw] is the receptive field of output pixel r (zeros in the
 * padding) and row r of G [N·Ho·Wo, O] its output gradient. The two are gathered first (im2col); the
 * GEMM then has the whole batch as its inner dimension, where the gemm-based fallback multiplies one
 * image at a time. */
static nat_status bwd_weights_im2col(const nat_cuda_conv_geom *g, const float *x, const float *gy, float *gw)
{
    const int64_t P = g->Ho * g->Wo, R = g->N * P, CKK = g->C * g->kh * g->kw, O = g->O;
    const size_t bytes = (size_t)(R * CKK + R * O) * sizeof(float);
    float *X, *G;
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&X));
    G = X + R * CKK;
#pragma omp parallel for schedule(static) if (R * (CKK + O) > 65536)
    for (int64_t r = 0; r < R; r++) {
        const int64_t n = r / P, ho = r % P / g->Wo, wo = r % g->Wo;
        float *row = X + r * CKK;
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t i = 0; i < g->kh; i++) {
                const int64_t hi = ho * g->sh - g->ph + i;
                const float *xr = x + ((n * g->C + c) * g->H + hi) * g->W;
                for (int64_t j = 0; j < g->kw; j++) {
                    const int64_t wi = wo * g->sw - g->pw + j;
                    *row++ = hi >= 0 && hi < g->H && wi >= 0 && wi < g->W ? xr[wi] : 0.0f;
                }
            }
        for (int64_t o = 0; o < O; o++)
            G[r * O + o] = gy[(n * O + o) * P + ho * g->Wo + wo];
    }
    nat_status s = nat_cpu_gemm(NAT_EXEC_DEV(NAT_CPU), true, false, O, CKK, R, G, 0, X, 0, 1.0f, gw, 0, 1);
    nat_mem_free(NAT_CPU, X, bytes);
    return s;
}

/* Runs convolution `kind` on inputs in[0..2) (x and w, gy and w, x and gy), operands rounded to prec. */
static nat_status conv_run(int kind, int prec, const nat_cuda_conv_geom *g, const float *a, const float *b,
                           const float *bias, float *out)
{
    pthread_once(&probe_once, probe);
    const bool native = prec == NAT_PREC_F32 || (prec == NAT_PREC_BF16 && bf16_native);
    const float *ops[2] = {a, b};
    const int64_t x_n = g->N * g->C * g->H * g->W, w_n = g->O * g->C * g->kh * g->kw, y_n = g->N * g->O * g->Ho * g->Wo;
    const int64_t counts[3][2] = {{x_n, w_n}, {y_n, w_n}, {x_n, y_n}};
    float *block = NULL;
    size_t bytes = 0;
    if (!native) /* emulation: round into f32 scratch, then the f32 convolution */
        NAT_TRY(round_operands((nat_precision)prec, 2, ops, counts[kind], &block, &bytes));
    conv_key k = key_of(kind, native && prec == NAT_PREC_BF16, bias != NULL, g);
    const nat_dnn_plan *pl;
    nat_status s = nat_dnn_plan_get("convolution", &k, sizeof k, conv_build, &pl);
    if (s == NAT_OK && kind == CONV_BWD_WEIGHTS && prec == NAT_PREC_F32 && !plan_direct(pl)) {
        /* oneDNN would fall back to its gemm-based convolution, which computes the weight gradient image
         * by image: on the 2x2 -> 1x1 downsampling of the main job's last level (128 -> 256 channels,
         * batch 64, AVX2) it took 5.5 ms, a tenth of a training step, at 7 GFLOP/s */
        s = bwd_weights_im2col(g, a, b, out);
    } else if (s == NAT_OK) {
        const void *in[2] = {ops[0], ops[1]};
        s = nat_dnn_plan_run(pl, in, bias, out);
    }
    if (block)
        nat_mem_free(NAT_CPU, block, bytes);
    return s;
}

nat_status nat_cpu_conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                       const float *w, const float *b, float *y)
{
    (void)ex;
    return conv_run(CONV_FWD, prec, g, x, w, b, y);
}

nat_status nat_cpu_conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                  const float *b, float *y)
{
    return nat_cpu_conv2d_forward_lowp(ex, NAT_PREC_F32, g, x, w, b, y);
}

nat_status nat_cpu_conv2d_backward_data_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                             const float *w, const float *gy, float *gx)
{
    (void)ex;
    return conv_run(CONV_BWD_DATA, prec, g, gy, w, NULL, gx);
}

nat_status nat_cpu_conv2d_backward_filter_direct(const nat_cuda_conv_geom *g, bool *direct)
{
    conv_key k = key_of(CONV_BWD_WEIGHTS, false, false, g);
    const nat_dnn_plan *pl;
    NAT_TRY(nat_dnn_plan_get("convolution", &k, sizeof k, conv_build, &pl));
    *direct = plan_direct(pl);
    return NAT_OK;
}

nat_status nat_cpu_conv2d_backward_filter_im2col(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                                 const float *gy, float *gw)
{
    (void)ex;
    return bwd_weights_im2col(g, x, gy, gw);
}

nat_status nat_cpu_conv2d_backward_filter_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                               const float *x, const float *gy, float *gw)
{
    (void)ex;
    return conv_run(CONV_BWD_WEIGHTS, prec, g, x, gy, NULL, gw);
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
