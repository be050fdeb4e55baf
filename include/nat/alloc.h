/* nat/alloc.h — counting, caching memory allocator, one per device.
 *
 * All tensor storage goes through here. Freed blocks are kept in per-size free lists and handed out
 * again, so a training step that repeats the previous step's allocations makes no system allocation
 * (sys_allocs stays flat: tests check it). Counters are per device and thread-safe.
 */
#ifndef NAT_ALLOC_H
#define NAT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nat_device_kind { NAT_DEV_CPU = 0, NAT_DEV_CUDA = 1 } nat_device_kind;

/* A device: kind plus index (the CUDA ordinal; 0 for the CPU). Plain value, passed by copy. */
typedef struct nat_device {
    nat_device_kind kind;
    int index;
} nat_device;

#define NAT_CPU ((nat_device){NAT_DEV_CPU, 0})
#define NAT_MAX_CUDA_DEVICES 16

typedef struct nat_mem_stats {
    size_t current;      /* bytes handed out and not yet freed */
    size_t peak;         /* maximum of current since start or the last nat_mem_reset_peak */
    size_t cached;       /* bytes held in free lists, ready for reuse */
    uint64_t requests;   /* nat_mem_alloc calls */
    uint64_t sys_allocs; /* allocations that reached the system (malloc / cudaMalloc) */
} nat_mem_stats;

/* Returns a block of at least `bytes` (64-byte aligned on the CPU) or fails with NAT_ERR_OOM and a
 * message giving the request and the bytes in use. `bytes` may be 0 (a valid, unique pointer). */
nat_status nat_mem_alloc(nat_device dev, size_t bytes, void **out);
/* Returns a block to the cache; `bytes` must be the size it was allocated with. NULL is ignored. */
void nat_mem_free(nat_device dev, void *p, size_t bytes);

nat_mem_stats nat_mem_get_stats(nat_device dev);
void nat_mem_reset_peak(nat_device dev);
/* Gives every cached block back to the system. */
void nat_mem_release_cached(nat_device dev);

/* Human-readable device name, e.g. "cpu" or "cuda:0". Borrowed static string. */
const char *nat_device_name(nat_device dev);

#ifdef __cplusplus
}
#endif
#endif
