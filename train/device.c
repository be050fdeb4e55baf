/* train/device.c — see train/train.h (section device). */
#include "train/train.h"

#include <string.h>

#include "nat/cuda.h"

nat_status nat_train_device(const nat_config *c, nat_device *out)
{
    nat_device d = nat_config_device(c);
    *out = NAT_CPU;
    const char *src = c->source[0] ? c->source : "(defaults)";
    if (d.kind == NAT_DEV_CUDA) {
        if (!nat_cuda_built())
            return nat_error(NAT_ERR_UNSUPPORTED,
                             "config %s: train.device = %s, but nat was built without CUDA (configure with "
                             "-DNAT_CUDA=ON on a machine with nvcc), and nat does not fall back to the CPU; set "
                             "train.device = cpu",
                             src, c->train.device);
        int count = nat_cuda_device_count();
        if (count == 0)
            return nat_error(NAT_ERR_UNSUPPORTED,
                             "config %s: train.device = %s, but no CUDA device is available (no GPU or driver "
                             "found), and nat does not fall back to the CPU; set train.device = cpu",
                             src, c->train.device);
        if (d.index >= count)
            return nat_error(NAT_ERR_UNSUPPORTED, "config %s: train.device = %s, but this machine has %d CUDA device(s) (cuda:0 to cuda:%d)",
                             src, c->train.device, count, count - 1);
    }
    *out = d;
    return NAT_OK;
}

nat_status nat_train_upload(nat_ctx *ctx, const float *host, int ndim, const int64_t *shape, nat_tensor **out)
{
    nat_device dev = nat_ctx_device(ctx);
    if (dev.kind == NAT_DEV_CPU) {
        NAT_TRY(nat_ctx_empty(ctx, out, NAT_F32, ndim, shape));
        memcpy(nat_tensor_f32(*out), host, (size_t)nat_tensor_numel(*out) * sizeof(float));
        return NAT_OK;
    }
    nat_tensor *h;
    NAT_TRY(nat_tensor_wrap(&h, (void *)host, NAT_F32, NAT_CPU, ndim, shape));
    nat_status s = nat_tensor_to(ctx, h, dev, out);
    nat_tensor_free(h);
    return s;
}

nat_status nat_train_download(const nat_tensor *t, float *host, int64_t n)
{
    if (t->device.kind == NAT_DEV_CPU) {
        memcpy(host, nat_tensor_f32(t), (size_t)n * sizeof(float));
        return NAT_OK;
    }
    nat_tensor *h;
    NAT_TRY(nat_tensor_wrap(&h, host, NAT_F32, NAT_CPU, t->ndim, t->shape));
    nat_status s = nat_tensor_copy(h, t);
    nat_tensor_free(h);
    return s;
}
