/* core/cuda/raw.cu — raw CUDA runtime calls for the core (entries of the CUDA table, core/cuda/kernels.h). Device memory is
 * requested on the device given by index each time, so no "current device" is left behind for another
 * model to trip over. */
#include <cuda_runtime.h>

#include "core/cuda/kernels.h"

extern "C" int nat_cu_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver/no device" error */
        return 0;
    }
    return n;
}

extern "C" void *nat_cu_raw_malloc(int device, size_t bytes)
{
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    cudaSetDevice(prev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        nat_error(NAT_ERR_CUDA, "cudaMalloc(%zu bytes) on cuda:%d failed: %s", bytes, device, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void nat_cu_raw_free(int device, void *p)
{
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    cudaFree(p);
    cudaSetDevice(prev);
}

extern "C" nat_status nat_cu_raw_copy(int device, void *dst, const void *src, size_t bytes, int kind)
{
    static const cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice};
    if (kind < 0 || kind > 2)
        return nat_error(NAT_ERR_INVALID_ARG, "cuda copy: bad direction %d", kind);
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    cudaError_t e = cudaMemcpy(dst, src, bytes, kinds[kind]);
    cudaSetDevice(prev);
    if (e != cudaSuccess)
        return nat_error(NAT_ERR_CUDA, "cudaMemcpy(%zu bytes) on cuda:%d failed: %s", bytes, device, cudaGetErrorString(e));
    return NAT_OK;
}
