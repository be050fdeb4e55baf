/* core/cuda_raw.h — the few raw CUDA runtime calls the core needs, behind a C interface.
 *
 * core/cuda_raw.cu implements them when nat is built with CUDA; core/cuda_raw_stub.c returns
 * "not built with CUDA" otherwise, so no #ifdef spreads through the core.
 */
#ifndef NAT_CORE_CUDA_RAW_H
#define NAT_CORE_CUDA_RAW_H

#include <stddef.h>

#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices present (0 without a driver, a device, or a CUDA build). */
int nat_cuda_device_count(void);
/* Whether this library was built with CUDA. */
int nat_cuda_built(void);
void *nat_cuda_raw_malloc(int device, size_t bytes);
void nat_cuda_raw_free(int device, void *p);
/* Copies between host and device (kind: 0 host->device, 1 device->host, 2 device->device). */
nat_status nat_cuda_raw_copy(int device, void *dst, const void *src, size_t bytes, int kind);

#ifdef __cplusplus
}
#endif
#endif
