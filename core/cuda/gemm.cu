/* core/cuda/gemm.cu — row-major GEMMs through cuBLAS (column-major): C = op(A)·op(B) is computed as
 * Cᵀ = op(B)ᵀ·op(A)ᵀ, which is the same memory read column-major, so no transposes are made. Batches go
 * to one strided-batched call (a stride of 0 shares an operand). The device's TF32 flag selects
 * CUBLAS_TF32_TENSOR_OP_MATH; otherwise full-f32 math. */
#include <limits.h>

#include "core/cuda/common.cuh"
#include "nat/autograd.h" /* nat_precision */

extern "C" nat_status nat_cu_gemm(const nat_exec *ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                                    int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                                    int64_t batch)
{
    const int dev = ex->dev.index;
    if (M == 0 || N == 0 || batch == 0)
        return NAT_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || batch > INT_MAX)
        return nat_error(NAT_ERR_UNSUPPORTED, "cuda gemm: sizes M %lld, N %lld, K %lld, batch %lld exceed cuBLAS's int",
                         (long long)M, (long long)N, (long long)K, (long long)batch);
    NAT_CUDA_ENTER(dev);
    NAT_CUBLAS_CHECK(cublasSetMathMode(hb->cublas, hb->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    const float alpha = 1.0f;
    int lda = ta ? (int)M : (int)K, ldb = tb ? (int)K : (int)N;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (lda < 1)
        lda = 1;
    if (ldb < 1)
        ldb = 1;
    if (batch == 1)
        NAT_CUBLAS_CHECK(cublasSgemm(hb->cublas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, ldb, A, lda, &beta, C,
                                     (int)N));
    else
        NAT_CUBLAS_CHECK(cublasSgemmStridedBatched(hb->cublas, opb, opa, (int)N, (int)M, (int)K, &alpha, B, ldb, sb, A,
                                                   lda, sa, &beta, C, (int)N, sc, (int)batch));
    return NAT_OK;
}

/* Autocast: both operands rounded into one 2-byte scratch block (a shared operand, stride 0, is one
 * matrix), then cublasGemmEx / cublasGemmStridedBatchedEx with f32 C and CUBLAS_COMPUTE_32F. The block
 * goes back to the caching allocator once the GEMM is queued (stream order makes the reuse safe). */
extern "C" nat_status nat_cu_gemm_lowp(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                         const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C,
                                         int64_t sc, int64_t batch)
{
    const int dev = ex->dev.index;
    if (prec != NAT_PREC_BF16 && prec != NAT_PREC_F16)
        return nat_error(NAT_ERR_INTERNAL, "cuda gemm: precision %d is not bf16 or f16", prec);
    if (M == 0 || N == 0 || batch == 0)
        return NAT_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || batch > INT_MAX)
        return nat_error(NAT_ERR_UNSUPPORTED, "cuda gemm: sizes M %lld, N %lld, K %lld, batch %lld exceed cuBLAS's int",
                         (long long)M, (long long)N, (long long)K, (long long)batch);
    NAT_CUDA_ENTER(dev);
    int64_t na = sa * (batch - 1) + M * K, nb = sb * (batch - 1) + K * N;
    size_t bytes = (size_t)(na + nb) * 2;
    nat_device nd = {NAT_DEV_CUDA, dev};
    void *scratch = nullptr;
    if (bytes)
        NAT_TRY(nat_mem_alloc(nd, bytes, &scratch));
    char *Ah = (char *)scratch, *Bh = (char *)scratch + (size_t)na * 2;
    nat_status s = nat_cuda_round_to(dev, prec, A, Ah, na);
    if (s == NAT_OK)
        s = nat_cuda_round_to(dev, prec, B, Bh, nb);
    if (s != NAT_OK) {
        nat_mem_free(nd, scratch, bytes);
        return s;
    }
    cudaDataType_t dt = prec == NAT_PREC_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const float alpha = 1.0f;
    int lda = ta ? (int)M : (int)K, ldb = tb ? (int)K : (int)N;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (lda < 1)
        lda = 1;
    if (ldb < 1)
        ldb = 1;
    cublasStatus_t e = cublasSetMathMode(hb->cublas, CUBLAS_DEFAULT_MATH);
    const char *call = "cublasSetMathMode";
    if (e == CUBLAS_STATUS_SUCCESS && batch == 1) {
        call = "cublasGemmEx";
        e = cublasGemmEx(hb->cublas, opb, opa, (int)N, (int)M, (int)K, &alpha, Bh, dt, ldb, Ah, dt, lda, &beta, C,
                         CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    } else if (e == CUBLAS_STATUS_SUCCESS) {
        call = "cublasGemmStridedBatchedEx";
        e = cublasGemmStridedBatchedEx(hb->cublas, opb, opa, (int)N, (int)M, (int)K, &alpha, Bh, dt, ldb, sb, Ah, dt,
                                       lda, sa, &beta, C, CUDA_R_32F, (int)N, sc, (int)batch, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT);
    }
    nat_mem_free(nd, scratch, bytes); /* stream-ordered reuse */
    if (e != CUBLAS_STATUS_SUCCESS)
        return nat_cuda_fail(call, __FILE__, __LINE__, nat_cublas_error_string(e));
    return NAT_OK;
}
