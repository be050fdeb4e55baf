/* core/backend.c — the lookup of a device's kernel table (core/backend.h), the check that an entry
 * exists, and CPU scratch for kernels. This is the one place that knows whether the CUDA table was built. */
#include <stdlib.h>

#include "core/backend.h"
#include "nat/alloc.h"
#include "nat/op.h" /* nat_ctx_cuda_index */

#ifdef NAT_WITH_CUDA
extern const nat_backend nat_backend_cuda; /* core/cuda/backend_cuda.c */
#define CUDA_TABLE (&nat_backend_cuda)
#else
#define CUDA_TABLE NULL
#endif

const nat_backend *nat_backend_for(nat_device dev)
{
    switch (dev.kind) {
    case NAT_DEV_CPU: return &nat_backend_cpu;
    case NAT_DEV_CUDA: return CUDA_TABLE;
    }
    return NULL;
}

nat_status nat_exec_missing(nat_device dev, const char *kernel)
{
    return nat_error(NAT_ERR_UNSUPPORTED, "%s: no kernel on %s%s", kernel, nat_device_name(dev),
                     nat_backend_for(dev) ? "" : " (" NAT_NO_CUDA ")");
}

/* For layers that still pick their own path by device (layers/natten); core ops go through the table. */
int nat_ctx_cuda_index(const nat_ctx *ctx)
{
    nat_device d = nat_ctx_device(ctx);
    return d.kind == NAT_DEV_CUDA ? d.index : -1;
}

nat_status nat_exec_scratch(const nat_exec *ex, size_t bytes, void **out)
{
    if (ex->ctx)
        return nat_ctx_scratch(ex->ctx, bytes, out);
    *out = malloc(bytes ? bytes : 1);
    return *out ? NAT_OK : nat_error(NAT_ERR_OOM, "kernel scratch: out of memory (%zu bytes)", bytes);
}

void nat_exec_scratch_release(const nat_exec *ex, void *p)
{
    if (!ex->ctx)
        free(p);
}
