/* core/cuda_raw_stub.c — stand-ins for core/cuda_raw.cu in a build without CUDA: no devices, and every
 * request says so. Compiled only when NAT_CUDA is off. */
#include "core/cuda_raw.h"

int nat_cuda_device_count(void) { return 0; }
int nat_cuda_built(void) { return 0; }
void *nat_cuda_raw_malloc(int device, size_t bytes)
{
    (void)device;
    (void)bytes;
    nat_error(NAT_ERR_UNSUPPORTED, "nat was built without CUDA (configure with -DNAT_CUDA=ON)");
    return NULL;
}
void nat_cuda_raw_free(int device, void *p)
{
    (void)device;
    (void)p;
}
nat_status nat_cuda_raw_copy(int device, void *dst, const void *src, size_t bytes, int kind)
{
    (void)device, (void)dst, (void)src, (void)bytes, (void)kind;
    return nat_error(NAT_ERR_UNSUPPORTED, "nat was built without CUDA (configure with -DNAT_CUDA=ON)");
}
