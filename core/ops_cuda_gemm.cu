/* core/ops_cuda_gemm.cu — row-major GEMMs through cuBLAS (column-major): C = op(A)·op(B) is computed as
 * Cᵀ = op(B)ᵀ·op(A)ᵀ, which is the same memory read column-major, so no transposes are made. Batches go
 * to one strided-batched call (a stride of 0 shares an operand). The device's TF32 flag selects
 * CUBLAS_TF32_TENSOR_OP_MATH; otherwise full-f32 math. */
#include <limits.h>

#include "core/cuda_common.cuh"

extern "C" nat_status nat_cuda_gemm(int dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                                    int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                                    int64_t batch)
{
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
