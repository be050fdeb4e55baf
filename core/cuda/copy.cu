/* core/cuda/copy.cu — strided copy / accumulate between any two layouts (dense copies of views,
 * permute and slice backward, pad and crop, gradient accumulation) and constant fill, on the device.
 * One index space walked by a grid-stride loop; dims are merged first (nat_iter_make). */
#include "core/cuda/common.cuh"

template <bool ADD>
__global__ void strided_copy_kernel(float *__restrict__ dst, const float *__restrict__ src, nat_iter it, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[3];
        nat_iter_offsets(it, i, 2, off);
        if (ADD)
            dst[off[0]] += src[off[1]];
        else
            dst[off[0]] = src[off[1]];
    }
}

__global__ void fill_kernel(float *p, int64_t n, float v)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = v;
}

extern "C" nat_status nat_cu_strided_copy(const nat_exec *ex, float *dst, const int64_t *dst_stride, const float *src,
                                            const int64_t *src_stride, int ndim, const int64_t *shape, bool add)
{
    const int dev = ex->dev.index;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (n == 0)
        return NAT_OK;
    const int64_t *st[2] = {dst_stride, src_stride};
    nat_iter it = nat_iter_make(ndim, shape, 2, st);
    NAT_CUDA_ENTER(dev);
    if (add)
        strided_copy_kernel<true><<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(dst, src, it, n);
    else
        strided_copy_kernel<false><<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(dst, src, it, n);
    NAT_CUDA_LAUNCHED("strided_copy_kernel");
    return NAT_OK;
}

extern "C" nat_status nat_cu_fill(const nat_exec *ex, float *p, int64_t n, float v)
{
    const int dev = ex->dev.index;
    if (n <= 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    fill_kernel<<<nat_cuda_blocks(n, 256), 256, 0, hb->stream>>>(p, n, v);
    NAT_CUDA_LAUNCHED("fill_kernel");
    return NAT_OK;
}
