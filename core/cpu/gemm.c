/* core/cpu/gemm.c — the CPU's GEMMs: row-major OpenBLAS sgemm, one call per product of a batch, in f32
 * or with the operands rounded to bf16 / f16 first (autocast), and linear's bias gradient. */
#include <cblas.h> /* cblas_sgemm */

#include "core/cpu/kernels.h"
#include "nat/half.h" /* nat_round_array */

/* C[M,N] = alpha * op(A) op(B) + beta * C, all row-major and dense. */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float beta, float *C)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0f, A, ta ? (int)M : (int)K, B, tb ? (int)K : (int)N, beta, C, (int)N);
}

/* `batch` products C_i = op(A_i) op(B_i) + beta·C_i with operand strides sa, sb, sc (0: shared), the
 * operands rounded to prec (NAT_PREC_BF16 / F16) into scratch first: exact emulation of a 2-byte GEMM
 * with f32 accumulation up to summation order (a product of two bf16 or two f16 values is exact in f32). */
nat_status nat_cpu_gemm_lowp(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                             int64_t batch)
{
    (void)ex;
    float *scratch = NULL;
    size_t bytes = 0;
    if (prec != NAT_PREC_F32 && batch > 0) {
        /* Elements each operand spans over the batch (a shared operand: one matrix). */
        int64_t na = sa * (batch - 1) + M * K, nb = sb * (batch - 1) + K * N;
        bytes = (size_t)(na + nb) * sizeof(float);
        NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&scratch));
        nat_round_array((nat_precision)prec, A, scratch, na);
        nat_round_array((nat_precision)prec, B, scratch + na, nb);
        A = scratch;
        B = scratch + na;
    }
    for (int64_t i = 0; i < batch; i++)
        gemm(ta, tb, M, N, K, A + i * sa, B + i * sb, beta, C + i * sc);
    if (scratch)
        nat_mem_free(NAT_CPU, scratch, bytes);
    return NAT_OK;
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
#pragma omp parallel for if (M * outf > 65536)
    for (int64_t o = 0; o < outf; o++) {
        float s = 0;
        for (int64_t r = 0; r < M; r++)
            s += G[r * outf + o];
        B[o] += s;
    }
    return NAT_OK;
}
