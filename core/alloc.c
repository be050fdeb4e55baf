/* core/alloc.c — per-device counting, caching allocator (see include/nat/alloc.h).
 *
 * Blocks are rounded up to a size class (multiples of 64 bytes up to 4 KiB, then quarter steps between
 * powers of two) and kept on a free list per class when freed. A steady-state training step asks for the
 * same sizes as the step before, so every request is served from the lists and sys_allocs stays flat.
 * CPU free lists thread through the blocks themselves; CUDA blocks live in device memory, so their lists
 * are kept in host-side nodes (core/alloc_cuda.c provides the raw device malloc/free).
 */
#include "nat/alloc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h" /* raw device malloc/free (none without CUDA) */

typedef struct free_node {
    struct free_node *next;
    void *ptr; /* CUDA only: the device pointer; CPU nodes are the block itself */
} free_node;

typedef struct size_class {
    size_t size;
    free_node *head;
} size_class;

typedef struct device_pool {
    pthread_mutex_t lock;
    size_class *classes; /* sorted by size */
    int n_classes, cap_classes;
    free_node *spare_nodes; /* CUDA list nodes ready for reuse */
    nat_mem_stats stats;
} device_pool;

/* One pool per device is process state by nature (the memory is the process's); it is guarded by a
 * lock, and nothing in it is configuration that two models could fight over. */
static device_pool cpu_pool = {.lock = PTHREAD_MUTEX_INITIALIZER};
static device_pool cuda_pools[NAT_MAX_CUDA_DEVICES];
static pthread_once_t cuda_pools_once = PTHREAD_ONCE_INIT;

static void init_cuda_pools(void)
{
    for (int i = 0; i < NAT_MAX_CUDA_DEVICES; i++)
        pthread_mutex_init(&cuda_pools[i].lock, NULL);
}

static device_pool *pool_of(nat_device dev)
{
    if (dev.kind == NAT_DEV_CPU)
        return &cpu_pool;
    if (dev.index < 0 || dev.index >= NAT_MAX_CUDA_DEVICES)
        return NULL;
    pthread_once(&cuda_pools_once, init_cuda_pools);
    return &cuda_pools[dev.index];
}

static size_t round_size(size_t n)
{
    if (n <= 4096)
        return n == 0 ? 64 : (n + 63) & ~(size_t)63;
    size_t p = 4096;
    while (p * 2 < n)
        p *= 2;
    size_t step = p / 4;
    return (n + step - 1) / step * step;
}

/* Finds or inserts the class for `size`; returns NULL only when growing the table fails. */
static size_class *class_of(device_pool *pool, size_t size, bool create)
{
    int lo = 0, hi = pool->n_classes;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (pool->classes[mid].size < size)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < pool->n_classes && pool->classes[lo].size == size)
        return &pool->classes[lo];
    if (!create)
        return NULL;
    if (pool->n_classes == pool->cap_classes) {
        int cap = pool->cap_classes ? pool->cap_classes * 2 : 64;
        size_class *c = realloc(pool->classes, (size_t)cap * sizeof *c);
        if (!c)
            return NULL;
        pool->classes = c;
        pool->cap_classes = cap;
    }
    memmove(&pool->classes[lo + 1], &pool->classes[lo], (size_t)(pool->n_classes - lo) * sizeof(size_class));
    pool->classes[lo] = (size_class){size, NULL};
    pool->n_classes++;
    return &pool->classes[lo];
}

static void *sys_alloc(nat_device dev, size_t size)
{
    if (dev.kind == NAT_DEV_CPU)
        return aligned_alloc(64, size);
    return nat_cuda_raw_malloc(dev.index, size);
}

static void sys_free(nat_device dev, void *p)
{
    if (dev.kind == NAT_DEV_CPU)
        free(p);
    else
        nat_cuda_raw_free(dev.index, p);
}

static void release_cached_locked(nat_device dev, device_pool *pool)
{
    for (int i = 0; i < pool->n_classes; i++) {
        free_node *n = pool->classes[i].head;
        while (n) {
            free_node *next = n->next;
            if (dev.kind == NAT_DEV_CPU) {
                sys_free(dev, n);
            } else {
                sys_free(dev, n->ptr);
                n->next = pool->spare_nodes;
                pool->spare_nodes = n;
            }
            pool->stats.cached -= pool->classes[i].size;
            n = next;
        }
        pool->classes[i].head = NULL;
    }
}

nat_status nat_mem_alloc(nat_device dev, size_t bytes, void **out)
{
    *out = NULL;
    device_pool *pool = pool_of(dev);
    if (!pool)
        return nat_error(NAT_ERR_INVALID_ARG, "alloc: no such device %s", nat_device_name(dev));
    /* No device has a quarter of the address space; refusing here also keeps round_size from overflowing. */
    if (bytes > SIZE_MAX / 4)
        return nat_error(NAT_ERR_OOM, "out of memory on %s: asked for %zu bytes (%.1f MiB), more than any device has",
                         nat_device_name(dev), bytes, bytes / 1048576.0);
    size_t size = round_size(bytes);
    pthread_mutex_lock(&pool->lock);
    pool->stats.requests++;
    size_class *c = class_of(pool, size, true);
    void *p = NULL;
    if (c && c->head) {
        free_node *n = c->head;
        c->head = n->next;
        if (dev.kind == NAT_DEV_CPU) {
            p = n;
        } else {
            p = n->ptr;
            n->next = pool->spare_nodes;
            pool->spare_nodes = n;
        }
        pool->stats.cached -= size;
    } else if (c) {
        p = sys_alloc(dev, size);
        if (!p && pool->stats.cached > 0) {
            /* Memory may be pinned in other size classes: give it back and try once more. */
            release_cached_locked(dev, pool);
            p = sys_alloc(dev, size);
        }
        if (p)
            pool->stats.sys_allocs++;
    }
    if (!p) {
        size_t in_use = pool->stats.current;
        pthread_mutex_unlock(&pool->lock);
        return nat_error(NAT_ERR_OOM, "out of memory on %s: asked for %zu bytes (%.1f MiB) with %zu bytes (%.1f MiB) in use",
                         nat_device_name(dev), bytes, bytes / 1048576.0, in_use, in_use / 1048576.0);
    }
    pool->stats.current += size;
    if (pool->stats.current > pool->stats.peak)
        pool->stats.peak = pool->stats.current;
    pthread_mutex_unlock(&pool->lock);
    *out = p;
    return NAT_OK;
}

void nat_mem_free(nat_device dev, void *p, size_t bytes)
{
    if (!p)
        return;
    device_pool *pool = pool_of(dev);
    if (!pool)
        return;
    size_t size = round_size(bytes);
    pthread_mutex_lock(&pool->lock);
    size_class *c = class_of(pool, size, true);
    free_node *n = NULL;
    if (dev.kind == NAT_DEV_CPU) {
        n = p;
    } else if (pool->spare_nodes) {
        n = pool->spare_nodes;
        pool->spare_nodes = n->next;
    } else {
        n = malloc(sizeof *n);
    }
    pool->stats.current -= size;
    if (!c || !n) {
        /* Bookkeeping could not grow: hand the block straight back rather than lose it. */
        sys_free(dev, p);
    } else {
        n->ptr = p;
        n->next = c->head;
        c->head = n;
        pool->stats.cached += size;
    }
    pthread_mutex_unlock(&pool->lock);
}

nat_mem_stats nat_mem_get_stats(nat_device dev)
{
    nat_mem_stats s = {0};
    device_pool *pool = pool_of(dev);
    if (!pool)
        return s;
    pthread_mutex_lock(&pool->lock);
    s = pool->stats;
    pthread_mutex_unlock(&pool->lock);
    return s;
}

void nat_mem_reset_peak(nat_device dev)
{
    device_pool *pool = pool_of(dev);
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stats.peak = pool->stats.current;
    pthread_mutex_unlock(&pool->lock);
}

void nat_mem_release_cached(nat_device dev)
{
    device_pool *pool = pool_of(dev);
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    release_cached_locked(dev, pool);
    pthread_mutex_unlock(&pool->lock);
}

const char *nat_device_name(nat_device dev)
{
    static const char *names[NAT_MAX_CUDA_DEVICES] = {
        "cuda:0", "cuda:1", "cuda:2",  "cuda:3",  "cuda:4",  "cuda:5",  "cuda:6",  "cuda:7",
        "cuda:8", "cuda:9", "cuda:10", "cuda:11", "cuda:12", "cuda:13", "cuda:14", "cuda:15"};
    if (dev.kind == NAT_DEV_CPU)
        return "cpu";
    if (dev.index >= 0 && dev.index < NAT_MAX_CUDA_DEVICES)
        return names[dev.index];
    return "cuda:?";
}
