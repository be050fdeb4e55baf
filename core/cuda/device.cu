/* core/cuda/device.cu — the per-device handle bundles (stream, cuBLAS, cuDNN, TF32 flag), device
 * checks, copies and fills on nat's stream, the error text of failed calls, and the device queries of
 * include/nat/cuda.h.
 *
 * The bundle table is process state by nature (handles belong to the process), guarded by a mutex and
 * filled lazily per device index; nothing in it selects a device. The stream is a blocking stream, so
 * work on the legacy default stream (core/cuda/raw.cu's cudaMemcpy) is still ordered with it.
 */
#include <pthread.h>
#include <stdio.h>

#include "core/cuda/common.cuh"

static nat_cuda_bundle bundles[NAT_MAX_CUDA_DEVICES];
static bool bundle_made[NAT_MAX_CUDA_DEVICES];
static pthread_mutex_t bundle_lock = PTHREAD_MUTEX_INITIALIZER;

nat_status nat_cuda_fail(const char *call, const char *file, int line, const char *err)
{
    return nat_error(NAT_ERR_CUDA, "%s failed: %s (%s:%d)", call, err ? err : "unknown error", file, line);
}

const char *nat_cublas_error_string(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no driver/device, or cublasCreate failed)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of device memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad size, stride or leading dimension)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH (feature missing on this GPU)";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED (kernel failed to launch or run)";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "unknown cuBLAS status";
}

static int device_count_once = -1;
static pthread_once_t count_once = PTHREAD_ONCE_INIT;
static void count_devices(void) { device_count_once = nat_cu_device_count(); }

static int devices(void)
{
    pthread_once(&count_once, count_devices);
    return device_count_once;
}

nat_status nat_cu_check_device(nat_device dev, const char *op)
{
    int n = devices();
    if (n == 0)
        return nat_error(NAT_ERR_UNSUPPORTED,
                         "%s: tensors are on %s but no CUDA device is present (no GPU or no driver); use the CPU",
                         op, nat_device_name(dev));
    if (dev.index < 0 || dev.index >= n || dev.index >= NAT_MAX_CUDA_DEVICES)
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: %s does not exist (%d CUDA device%s present)", op,
                         nat_device_name(dev), n, n == 1 ? "" : "s");
    return NAT_OK;
}

nat_status nat_cuda_bundle_get(int dev, nat_cuda_bundle **out)
{
    *out = nullptr;
    if (dev < 0 || dev >= NAT_MAX_CUDA_DEVICES)
        return nat_error(NAT_ERR_INVALID_ARG, "cuda: device index %d is out of range", dev);
    pthread_mutex_lock(&bundle_lock);
    nat_cuda_bundle *b = &bundles[dev];
    nat_status s = NAT_OK;
    if (!bundle_made[dev]) {
        *b = nat_cuda_bundle{};
        b->device = dev;
        cudaError_t e = cudaStreamCreate(&b->stream);
        if (e != cudaSuccess) {
            cudaGetLastError();
            s = nat_cuda_fail("cudaStreamCreate(&stream)", __FILE__, __LINE__, cudaGetErrorString(e));
        } else {
            cublasStatus_t be = cublasCreate(&b->cublas);
            if (be == CUBLAS_STATUS_SUCCESS)
                be = cublasSetStream(b->cublas, b->stream);
            if (be != CUBLAS_STATUS_SUCCESS) {
                s = nat_cuda_fail("cublasCreate/cublasSetStream", __FILE__, __LINE__, nat_cublas_error_string(be));
                if (b->cublas)
                    cublasDestroy(b->cublas);
                cudaStreamDestroy(b->stream);
                *b = nat_cuda_bundle{};
            } else {
                bundle_made[dev] = true;
            }
        }
    }
    pthread_mutex_unlock(&bundle_lock);
    if (s == NAT_OK)
        *out = b;
    return s;
}

nat_status nat_cuda_bundle_cudnn(nat_cuda_bundle *b)
{
    pthread_mutex_lock(&bundle_lock);
    nat_status s = NAT_OK;
    if (!b->cudnn) {
        cudnnHandle_t h = nullptr;
        cudnnStatus_t e = cudnnCreate(&h);
        if (e == CUDNN_STATUS_SUCCESS)
            e = cudnnSetStream(h, b->stream);
        if (e != CUDNN_STATUS_SUCCESS) {
            s = nat_cuda_fail("cudnnCreate/cudnnSetStream", __FILE__, __LINE__, cudnnGetErrorString(e));
            if (h)
                cudnnDestroy(h);
        } else {
            b->cudnn = h;
        }
    }
    pthread_mutex_unlock(&bundle_lock);
    return s;
}

extern "C" nat_status nat_cu_memcpy(const nat_exec *ex, void *dst, const void *src, size_t bytes, int kind)
{
    const int dev = ex->dev.index;
    static const cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice};
    if (kind < 0 || kind > 2)
        return nat_error(NAT_ERR_INTERNAL, "cuda memcpy: bad direction %d", kind);
    if (bytes == 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    NAT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kinds[kind], hb->stream));
    /* Host memory nat copies from or to is pageable and the caller's: wait until it is done with. */
    if (kind != NAT_CUDA_D2D)
        NAT_CUDA_CHECK(cudaStreamSynchronize(hb->stream));
    return NAT_OK;
}

extern "C" nat_status nat_cu_memset0(const nat_exec *ex, void *p, size_t bytes)
{
    const int dev = ex->dev.index;
    if (bytes == 0)
        return NAT_OK;
    NAT_CUDA_ENTER(dev);
    NAT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, hb->stream));
    return NAT_OK;
}

extern "C" nat_status nat_cuda_sync(int dev)
{
    NAT_CUDA_ENTER(dev);
    NAT_CUDA_CHECK(cudaStreamSynchronize(hb->stream));
    return NAT_OK;
}

/* ---- include/nat/cuda.h ---- */

static nat_status check_index(int index, const char *what)
{
    nat_device d = {NAT_DEV_CUDA, index};
    return nat_cu_check_device(d, what);
}

extern "C" nat_status nat_cu_device_name(int index, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return nat_error(NAT_ERR_INVALID_ARG, "cuda_device_name: no buffer");
    buf[0] = '\0';
    NAT_TRY(check_index(index, "cuda_device_name"));
    cudaDeviceProp prop;
    NAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    snprintf(buf, cap, "%s", prop.name);
    return NAT_OK;
}

extern "C" nat_status nat_cu_set_tf32(int index, bool on)
{
    NAT_TRY(check_index(index, "cuda_set_tf32"));
    NAT_CUDA_ENTER(index);
    pthread_mutex_lock(&bundle_lock);
    hb->tf32 = on;
    pthread_mutex_unlock(&bundle_lock);
    return NAT_OK;
}

extern "C" bool nat_cu_tf32(int index)
{
    if (index < 0 || index >= NAT_MAX_CUDA_DEVICES)
        return false;
    pthread_mutex_lock(&bundle_lock);
    bool on = bundle_made[index] && bundles[index].tf32;
    pthread_mutex_unlock(&bundle_lock);
    return on;
}

extern "C" nat_status nat_cu_synchronize(int index)
{
    NAT_TRY(check_index(index, "cuda_synchronize"));
    return nat_cuda_sync(index);
}
