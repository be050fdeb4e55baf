/* core/cpu/gemm.c — the CPU's GEMMs on oneDNN (core/cpu/onednn.h), and linear's bias gradient.
 *
 *  - f32: dnnl_sgemm, one call per product of a batch. It is BLAS-like (row-major here), needs no
 *    primitive, is safe to call from any thread and runs on the caller's OpenMP team (one thread inside
 *    a parallel region or a replica thread). Its kernels follow oneDNN's effective ISA.
 *  - bf16 (autocast): a matmul primitive with bf16 operands, f32 accumulation and an f32 result written
 *    (or added, beta = 1) straight into C. The operands arrive as f32 and are rounded to bf16 by oneDNN
 *    reorders (round to nearest even, as core/half.h). A product of two bf16 values is exact in f32, so
 *    this equals the f32 GEMM of the rounded operands up to summation order. One plan per problem.
 *  - where bf16 does not outrun f32 on this CPU (nat_cpu_bf16_gemm_native, core/cpu/isa.h: an Intel core
 *    without AMX, whose vdpbf16ps peak is half its f32 FMA peak), where oneDNN has no bf16
 *    matmul (an ISA capped below AVX-512, or an old CPU), and for f16 (oneDNN
 *    has f16 GEMMs only on AVX512-FP16 CPUs): the operands are rounded into f32 scratch and the f32 GEMM
 *    runs on them — the same result up to summation order, at f32 speed. */
#include <pthread.h>
#include <stdio.h>

#include "core/cpu/isa.h" /* nat_cpu_bf16_gemm_native */
#include "core/cpu/kernels.h"
#include "core/cpu/onednn.h"
#include "nat/alloc.h"
#include "nat/half.h" /* nat_round_array */

/* C[M,N] = op(A) op(B) + beta·C, row-major and dense. */
static nat_status sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float beta,
                        float *C)
{
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, beta, C, N);
    if (s == dnnl_success)
        return NAT_OK;
    char what[96];
    snprintf(what, sizeof what, "sgemm %lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
    return nat_dnn_check(s, what);
}

/* ---- bf16 matmul plans ---- */

typedef struct bf16_key {
    int64_t M, N, K, batch, sa, sb, sc;
    int64_t ta, tb, accumulate;
    int64_t operands_bf16; /* the operands arrive as bf16 bits (no rounding reorder): benchmarks */
} bf16_key;

/* A user operand [b, rows, cols] of op(X) with batch stride s (b = 1: shared) stored transposed when t. */
static dnnl_status_t user_md(dnnl_memory_desc_t *md, int64_t b, int64_t rows, int64_t cols, int64_t s, bool t,
                             dnnl_data_type_t dt)
{
    dnnl_dims_t dims = {b, rows, cols};
    dnnl_dims_t strides = {b > 1 ? s : rows * cols, t ? 1 : cols, t ? rows : 1};
    return dnnl_memory_desc_init_by_strides(md, 3, dims, dt, strides);
}

static nat_status bf16_build(const void *vkey, nat_dnn_plan *pl)
{
    const bf16_key *k = vkey;
    dnnl_engine_t eng;
    NAT_TRY(nat_dnn_engine(&eng));
    const int64_t ba = k->sa ? k->batch : 1, bb = k->sb ? k->batch : 1;
    dnnl_memory_desc_t ua, ub, a, b, c;
    dnnl_dims_t da = {ba, k->M, k->K}, db = {bb, k->K, k->N}, dc = {k->batch, k->M, k->N};
    dnnl_dims_t sc = {k->batch > 1 ? k->sc : k->M * k->N, k->N, 1};
    const dnnl_data_type_t udt = k->operands_bf16 ? dnnl_bf16 : dnnl_f32;
    NAT_TRY(nat_dnn_check(user_md(&ua, ba, k->M, k->K, k->sa, k->ta, udt), "bf16 GEMM operand A"));
    NAT_TRY(nat_dnn_check(user_md(&ub, bb, k->K, k->N, k->sb, k->tb, udt), "bf16 GEMM operand B"));
    /* operands already in bf16 are taken in their own layout (transposed ones too): no reorder */
    if (k->operands_bf16)
        a = ua, b = ub;
    else {
        NAT_TRY(nat_dnn_check(dnnl_memory_desc_init_by_tag(&a, 3, da, dnnl_bf16, dnnl_abc), "bf16 GEMM A"));
        NAT_TRY(nat_dnn_check(dnnl_memory_desc_init_by_tag(&b, 3, db, dnnl_bf16, dnnl_abc), "bf16 GEMM B"));
    }
    NAT_TRY(nat_dnn_check(dnnl_memory_desc_init_by_strides(&c, 3, dc, dnnl_f32, sc), "bf16 GEMM C"));
    dnnl_matmul_desc_t md;
    NAT_TRY(nat_dnn_check(dnnl_matmul_desc_init(&md, &a, &b, NULL, &c), "bf16 matmul"));
    dnnl_primitive_attr_t attr;
    NAT_TRY(nat_dnn_attr(&attr, k->accumulate != 0));
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    NAT_TRY(nat_dnn_check(st, "bf16 matmul"));
    const int in_arg[2] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS};
    const dnnl_memory_desc_t in_user[2] = {ua, ub};
    nat_status s = nat_dnn_plan_init(pl, pd, 2, in_arg, in_user, DNNL_ARG_DST, &c, false, 0);
    dnnl_primitive_desc_destroy(pd);
    return s;
}

/* Whether oneDNN has a bf16 matmul at the effective ISA, probed once; its implementation's name; and the
 * path autocast takes: that matmul where bf16 outruns f32 on this CPU (nat_cpu_bf16_gemm_native:
 * AMX, or an AMD core's vdpbf16ps), the emulation otherwise. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool bf16_available, bf16_native;
static char bf16_kernel[64];
static char bf16_impl[160] = "emulated (bf16-rounded operands, f32 GEMM)";

static void probe(void)
{
    bf16_key k = {.M = 64, .N = 64, .K = 64, .batch = 1};
    const nat_dnn_plan *pl; /* cached like any plan: its primitives stay the process's */
    if (nat_dnn_plan_get("bf16 GEMM", &k, sizeof k, bf16_build, &pl) == NAT_OK) {
        bf16_available = true;
        snprintf(bf16_kernel, sizeof bf16_kernel, "%s", pl->impl);
        bf16_native = nat_cpu_bf16_gemm_native();
        if (bf16_native)
            snprintf(bf16_impl, sizeof bf16_impl, "%s", pl->impl);
        else /* e.g. an Intel core without AMX: its vdpbf16ps peak is half its f32 FMA peak */
            snprintf(bf16_impl, sizeof bf16_impl,
                     "emulated (bf16-rounded operands, f32 GEMM: faster on this CPU than oneDNN's %s)", pl->impl);
    }
    nat_error_clear();
}

static bool have_bf16_matmul(void)
{
    pthread_once(&probe_once, probe);
    return bf16_available;
}

static char f32_impl[64];
static pthread_once_t f32_once = PTHREAD_ONCE_INIT;

static void f32_name(void) { snprintf(f32_impl, sizeof f32_impl, "jit sgemm, %s", nat_dnn_isa_name()); }

const char *nat_dnn_gemm_impl(bool bf16)
{
    if (bf16) {
        have_bf16_matmul();
        return bf16_impl;
    }
    pthread_once(&f32_once, f32_name);
    return f32_impl;
}

const char *nat_dnn_bf16_matmul_impl(void) { return have_bf16_matmul() ? bf16_kernel : NULL; }

/* `batch` products C_i = op(A_i) op(B_i) + beta·C_i with operand strides sa, sb, sc (0: shared), the
 * operands rounded to prec first (NAT_PREC_BF16 / F16; see the file's comment for how). */
nat_status nat_cpu_gemm_lowp(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                             int64_t batch)
{
    (void)ex;
    if (batch <= 0 || M <= 0 || N <= 0)
        return NAT_OK;
    if (prec == NAT_PREC_BF16 && K > 0 && (beta == 0.0f || beta == 1.0f) && have_bf16_matmul() && bf16_native) {
        bf16_key k = {.M = M, .N = N, .K = K, .batch = batch, .sa = sa, .sb = sb, .sc = batch > 1 ? sc : 0,
                      .ta = ta, .tb = tb, .accumulate = beta != 0.0f};
        const nat_dnn_plan *pl;
        NAT_TRY(nat_dnn_plan_get("bf16 GEMM", &k, sizeof k, bf16_build, &pl));
        const void *in[2] = {A, B};
        return nat_dnn_plan_run(pl, in, NULL, C);
    }
    float *scratch = NULL;
    size_t bytes = 0;
    if (prec != NAT_PREC_F32) {
        /* Elements each operand spans over the batch (a shared operand: one matrix). */
        int64_t na = sa * (batch - 1) + M * K, nb = sb * (batch - 1) + K * N;
        bytes = (size_t)(na + nb) * sizeof(float);
        NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&scratch));
        nat_round_array((nat_precision)prec, A, scratch, na);
        nat_round_array((nat_precision)prec, B, scratch + na, nb);
        A = scratch;
        B = scratch + na;
    }
    nat_status s = NAT_OK;
    for (int64_t i = 0; i < batch && s == NAT_OK; i++)
        s = sgemm(ta, tb, M, N, K, A + i * sa, B + i * sb, beta, C + i * sc);
    if (scratch)
        nat_mem_free(NAT_CPU, scratch, bytes);
    return s;
}

nat_status nat_cpu_gemm_bf16_operands(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                                      const uint16_t *B, float *C)
{
    if (!have_bf16_matmul())
        return nat_error(NAT_ERR_UNSUPPORTED, "bf16 GEMM on bf16 operands: oneDNN has no bf16 matmul at ISA %s",
                         nat_dnn_isa_name());
    bf16_key k = {.M = M, .N = N, .K = K, .batch = 1, .ta = ta, .tb = tb, .operands_bf16 = 1};
    const nat_dnn_plan *pl;
    NAT_TRY(nat_dnn_plan_get("bf16 GEMM", &k, sizeof k, bf16_build, &pl));
    const void *in[2] = {A, B};
    return nat_dnn_plan_run(pl, in, NULL, C);
}

nat_status nat_cpu_gemm(const nat_exec *ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                        int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch)
{
    return nat_cpu_gemm_lowp(ex, NAT_PREC_F32, ta, tb, M, N, K, A, sa, B, sb, beta, C, sc, batch);
}

/* gb[o] += Σ_r G[r, o] over the rows of G [M, outf]: one column per thread, summed in row order. */
nat_status nat_cpu_linear_bias_grad(const nat_exec *ex, const float *G, int64_t M, int64_t outf, float *B)
{
    (void)ex;
    /* Blocks of columns, rows in order inside: G is read row by row (a column at a time would stream all
     * of G once per column), and each sum adds its rows in the same order whatever the thread count. */
    enum { BLK = 64 };
    const int64_t nb = (outf + BLK - 1) / BLK;
#pragma omp parallel for if (M * outf > 65536 && nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t o0 = b * BLK, w = outf - o0 < BLK ? outf - o0 : BLK;
        float acc[BLK] = {0};
        for (int64_t r = 0; r < M; r++) {
            const float *g = G + r * outf + o0;
#pragma omp simd
            for (int64_t j = 0; j < w; j++)
                acc[j] += g[j];
        }
        for (int64_t j = 0; j < w; j++)
            B[o0 + j] += acc[j];
    }
    return NAT_OK;
}
