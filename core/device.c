/* core/device.c — include/nat/cuda.h's device queries and the device check of every op, implemented once
 * through the CUDA kernel table (core/backend.h): without a CUDA table (a build without CUDA) there are
 * no devices and every request says "nat was built without CUDA". */
#include "core/backend.h"
#include "nat/cuda.h"

static const nat_backend *cuda_table(void) { return nat_backend_for((nat_device){NAT_DEV_CUDA, 0}); }

static nat_status no_cuda(const char *what) { return nat_error(NAT_ERR_UNSUPPORTED, "%s: " NAT_NO_CUDA, what); }

int nat_cuda_built(void) { return cuda_table() != NULL; }

int nat_cuda_device_count(void)
{
    const nat_backend *b = cuda_table();
    return b ? b->device_count() : 0;
}

int nat_cuda_available(void) { return nat_cuda_device_count() > 0; }

nat_status nat_device_check(nat_device dev, const char *op)
{
    if (dev.kind == NAT_DEV_CPU)
        return NAT_OK;
    const nat_backend *b = nat_backend_for(dev);
    if (!b)
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: tensors are on %s but " NAT_NO_CUDA, op, nat_device_name(dev));
    return b->check_device(dev, op);
}

nat_status nat_cuda_device_name(int index, char *buf, size_t cap)
{
    const nat_backend *b = cuda_table();
    if (!b) {
        if (buf && cap)
            buf[0] = '\0';
        return no_cuda("cuda_device_name");
    }
    return b->device_name(index, buf, cap);
}

nat_status nat_cuda_set_tf32(int index, bool on)
{
    const nat_backend *b = cuda_table();
    return b ? b->set_tf32(index, on) : no_cuda("cuda_set_tf32");
}

bool nat_cuda_tf32(int index)
{
    const nat_backend *b = cuda_table();
    return b ? b->tf32(index) : false;
}

nat_status nat_cuda_synchronize(int index)
{
    const nat_backend *b = cuda_table();
    return b ? b->synchronize(index) : no_cuda("cuda_synchronize");
}

/* ---- raw device buffers (tools, tests, core/alloc.c) ---- */

nat_status nat_cuda_memcpy(int dev, void *dst, const void *src, size_t bytes, int kind)
{
    return NAT_KERNEL(NAT_EXEC_CUDA(dev), copy_bytes, dst, src, bytes, kind);
}

nat_status nat_cuda_fill(int dev, float *p, int64_t n, float v)
{
    return NAT_KERNEL(NAT_EXEC_CUDA(dev), fill, p, n, v);
}

nat_status nat_cuda_raw_copy(int dev, void *dst, const void *src, size_t bytes, int kind)
{
    const nat_backend *b = cuda_table();
    return b ? b->raw_copy(dev, dst, src, bytes, kind) : no_cuda("cuda copy");
}

void *nat_cuda_raw_malloc(int dev, size_t bytes)
{
    const nat_backend *b = cuda_table();
    if (!b) {
        no_cuda("cuda malloc");
        return NULL;
    }
    return b->raw_malloc(dev, bytes);
}

void nat_cuda_raw_free(int dev, void *p)
{
    const nat_backend *b = cuda_table();
    if (b)
        b->raw_free(dev, p);
}
