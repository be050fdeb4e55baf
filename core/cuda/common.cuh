/* core/cuda/common.cuh — what every the .cu files of core/cuda/ file shares: the per-device handle bundle, the
 * device guard, and the checking macros that turn a failed CUDA, cuBLAS or cuDNN call into a nat_status
 * whose message holds the call's text and the library's error string. CUDA sources only.
 *
 * Use inside a function returning nat_status:
 *     nat_cuda_guard guard(dev);           // sets dev, restores the caller's device on return
 *     NAT_CUDA_TRY(guard.status);
 *     nat_cuda_bundle *hb;
 *     NAT_CUDA_TRY(nat_cuda_bundle_get(dev, &hb));
 *     kernel<<<grid, block, 0, hb->stream>>>(...);
 *     NAT_CUDA_LAUNCHED("kernel");          // checks the launch
 */
#ifndef NAT_CORE_CUDA_COMMON_CUH
#define NAT_CORE_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <stdint.h>

#include "core/cuda/kernels.h"
#include "nat/tensor.h" /* NAT_MAX_DIMS */

/* The handles nat keeps for one device: made on first use, kept for the process's life. */
typedef struct nat_cuda_bundle {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cudnnHandle_t cudnn; /* made on the first convolution: cudnnCreate loads large libraries */
    bool tf32;
} nat_cuda_bundle;

/* The bundle of `dev` (stream and cuBLAS handle ready); cuDNN with nat_cuda_bundle_cudnn. The device
 * must be current (a nat_cuda_guard). */
nat_status nat_cuda_bundle_get(int dev, nat_cuda_bundle **out);
nat_status nat_cuda_bundle_cudnn(nat_cuda_bundle *b);

nat_status nat_cuda_fail(const char *call, const char *file, int line, const char *err);
const char *nat_cublas_error_string(cublasStatus_t s);

#define NAT_CUDA_TRY(expr)                   \
    do {                                     \
        nat_status nat_ct_s_ = (expr);       \
        if (nat_ct_s_ != NAT_OK)             \
            return nat_ct_s_;                \
    } while (0)

#define NAT_CUDA_CHECK(call)                                                                  \
    do {                                                                                      \
        cudaError_t nat_ce_ = (call);                                                         \
        if (nat_ce_ != cudaSuccess) {                                                         \
            cudaGetLastError();                                                               \
            return nat_cuda_fail(#call, __FILE__, __LINE__, cudaGetErrorString(nat_ce_));     \
        }                                                                                     \
    } while (0)

#define NAT_CUBLAS_CHECK(call)                                                                \
    do {                                                                                      \
        cublasStatus_t nat_be_ = (call);                                                      \
        if (nat_be_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return nat_cuda_fail(#call, __FILE__, __LINE__, nat_cublas_error_string(nat_be_)); \
    } while (0)

#define NAT_CUDNN_CHECK(call)                                                                 \
    do {                                                                                      \
        cudnnStatus_t nat_de_ = (call);                                                       \
        if (nat_de_ != CUDNN_STATUS_SUCCESS)                                                  \
            return nat_cuda_fail(#call, __FILE__, __LINE__, cudnnGetErrorString(nat_de_));    \
    } while (0)

/* After a <<<>>> launch: a bad configuration shows up here, not at the next call. */
#define NAT_CUDA_LAUNCHED(name)                                                               \
    do {                                                                                      \
        cudaError_t nat_le_ = cudaGetLastError();                                             \
        if (nat_le_ != cudaSuccess)                                                           \
            return nat_cuda_fail("launch of " name, __FILE__, __LINE__, cudaGetErrorString(nat_le_)); \
    } while (0)

/* Sets `dev` as the calling thread's current device for a scope and restores the previous one. */
struct nat_cuda_guard {
    int prev = -1;
    nat_status status = NAT_OK;
    explicit nat_cuda_guard(int dev)
    {
        if (cudaGetDevice(&prev) != cudaSuccess) {
            cudaGetLastError();
            prev = -1;
        }
        if (prev != dev) {
            cudaError_t e = cudaSetDevice(dev);
            if (e != cudaSuccess) {
                cudaGetLastError();
                status = nat_cuda_fail("cudaSetDevice(dev)", __FILE__, __LINE__, cudaGetErrorString(e));
            }
        }
    }
    ~nat_cuda_guard()
    {
        int now = -1;
        if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev)
            cudaSetDevice(prev);
    }
    nat_cuda_guard(const nat_cuda_guard &) = delete;
    nat_cuda_guard &operator=(const nat_cuda_guard &) = delete;
};

/* Guard + bundle in one line, for entry points: declares `guard` and `hb`. */
#define NAT_CUDA_ENTER(dev)                              \
    nat_cuda_guard guard(dev);                           \
    NAT_CUDA_TRY(guard.status);                          \
    nat_cuda_bundle *hb = nullptr;                       \
    NAT_CUDA_TRY(nat_cuda_bundle_get(dev, &hb))

/* Up to three operands walked over one index space of at most NAT_MAX_DIMS dims (strides in elements).
 * nat_iter_make drops size-1 dims and merges neighbours that are contiguous in every operand, so a dense
 * problem becomes one flat dim and the per-element index arithmetic is as short as the layouts allow. */
typedef struct nat_iter {
    int nd;
    int64_t shape[NAT_MAX_DIMS];
    int64_t st[3][NAT_MAX_DIMS];
} nat_iter;

static inline nat_iter nat_iter_make(int nd, const int64_t *shape, int nops, const int64_t *const *strides)
{
    nat_iter it = {};
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1)
            continue;
        bool merge = m > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = it.st[k][m - 1] == strides[k][d] * shape[d];
        if (merge) {
            it.shape[m - 1] *= shape[d];
            for (int k = 0; k < nops; k++)
                it.st[k][m - 1] = strides[k][d];
            continue;
        }
        it.shape[m] = shape[d];
        for (int k = 0; k < nops; k++)
            it.st[k][m] = strides[k][d];
        m++;
    }
    if (m == 0) {
        it.shape[0] = 1;
        m = 1;
    }
    it.nd = m;
    return it;
}

/* Offsets of linear (row-major) index i in each of the first `nops` operands. */
__device__ __forceinline__ void nat_iter_offsets(const nat_iter &it, int64_t i, int nops, int64_t *off)
{
    off[0] = off[1] = off[2] = 0;
    for (int d = it.nd - 1; d >= 0; d--) {
        int64_t n = it.shape[d], k = i % n;
        i /= n;
        for (int o = 0; o < nops; o++)
            off[o] += k * it.st[o][d];
    }
}

/* Grid size for n elements with `block` threads each, capped for grid-stride loops. */
static inline unsigned nat_cuda_blocks(int64_t n, int block)
{
    int64_t b = (n + block - 1) / block;
    if (b < 1)
        b = 1;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : b);
}

/* Sum over a block of any multiple-of-32 size into all threads' return value; `scratch` holds
 * blockDim/32 doubles. Fixed tree: the same bits for the same launch. */
__device__ __forceinline__ double nat_block_sum(double v, double *scratch)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* scratch may still be read from a previous call */
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    double t = 0.0;
    if (warp == 0) {
        t = lane < nw ? scratch[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1)
            t += __shfl_down_sync(0xffffffffu, t, o);
        if (lane == 0)
            scratch[0] = t;
    }
    __syncthreads();
    return scratch[0];
}

__device__ __forceinline__ float nat_block_max(float v, float *scratch)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? scratch[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1)
            t = fmaxf(t, __shfl_down_sync(0xffffffffu, t, o));
        if (lane == 0)
            scratch[0] = t;
    }
    __syncthreads();
    return scratch[0];
}

#endif
