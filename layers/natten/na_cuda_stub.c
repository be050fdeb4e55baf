/* layers/natten/na_cuda_stub.c — stand-ins for the kernel lab's .cu files (cuda/naive.cu, cuda/fused.cu,
 * cuda/tiled.cu, cuda/tensorcore_fwd.cu, cuda/tensorcore_bwd.cu, cuda/dispatch.cu) in a build without
 * CUDA: every entry point of cuda/na_cuda.h exists and returns NAT_ERR_UNSUPPORTED "nat was built without
 * CUDA", so na_ops.c needs no #ifdef. Compiled only when NAT_CUDA is off (CMake drops *_stub.c from CUDA
 * builds). */
#include "layers/natten/cuda/na_cuda.h"

#define NO_CUDA "nat was built without CUDA (configure with -DNAT_CUDA=ON on a machine with nvcc)"

static nat_status no_cuda(const char *op, int device)
{
    return nat_error(NAT_ERR_UNSUPPORTED, "%s: cannot run on cuda:%d: " NO_CUDA, op, device);
}

nat_status na_cuda_qk(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *q, const float *k, const float *rpb, float *attn)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)rpb, (void)attn;
    return no_cuda("na_cuda_qk", device);
}

nat_status na_cuda_av(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *attn, const float *v, float *out)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)attn, (void)v, (void)out;
    return no_cuda("na_cuda_av", device);
}

nat_status na_cuda_qk_backward(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_attn, const float *q,
                               const float *k, float *dq, float *dk, float *drpb)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_attn, (void)q, (void)k, (void)dq, (void)dk,
        (void)drpb;
    return no_cuda("na_cuda_qk_backward", device);
}

nat_status na_cuda_av_backward(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_out, const float *attn,
                               const float *v, float *d_attn, float *dv)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_out, (void)attn, (void)v, (void)d_attn,
        (void)dv;
    return no_cuda("na_cuda_av_backward", device);
}

nat_status na_cuda_fused_forward(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                                 const int64_t *spatial, int64_t dim, const float *q, const float *k,
                                 const float *v, const float *rpb, float *out, float *lse)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb, (void)out,
        (void)lse;
    return no_cuda("na_cuda_fused_forward", device);
}

nat_status na_cuda_fused_backward(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                                  const int64_t *spatial, int64_t dim, const float *q, const float *k,
                                  const float *v, const float *rpb, const float *out, const float *lse,
                                  const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb, (void)out,
        (void)lse, (void)d_out, (void)dq, (void)dk, (void)dv, (void)drpb;
    return no_cuda("na_cuda_fused_backward", device);
}

nat_status na_cuda_drpb_reduce(int device, const na_geom *g, const float *src, float *drpb)
{
    (void)g, (void)src, (void)drpb;
    return no_cuda("na_cuda_drpb_reduce", device);
}

nat_status na_cuda_qk_v0(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *q, const float *k, const float *rpb, float *attn)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)rpb, (void)attn;
    return no_cuda("na_cuda_qk_v0", device);
}

nat_status na_cuda_av_v0(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *attn, const float *v, float *out)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)attn, (void)v, (void)out;
    return no_cuda("na_cuda_av_v0", device);
}

nat_status na_cuda_qk_backward_v0(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_attn, const float *q,
                               const float *k, float *dq, float *dk, float *drpb)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_attn, (void)q, (void)k, (void)dq, (void)dk,
        (void)drpb;
    return no_cuda("na_cuda_qk_backward_v0", device);
}

nat_status na_cuda_av_backward_v0(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_out, const float *attn,
                               const float *v, float *d_attn, float *dv)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_out, (void)attn, (void)v, (void)d_attn,
        (void)dv;
    return no_cuda("na_cuda_av_backward_v0", device);
}

nat_status na_cuda_qk_v2(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *q, const float *k, const float *rpb, float *attn)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)rpb, (void)attn;
    return no_cuda("na_cuda_qk_v2", device);
}

nat_status na_cuda_av_v2(int device, const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                      int64_t dim, const float *attn, const float *v, float *out)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)attn, (void)v, (void)out;
    return no_cuda("na_cuda_av_v2", device);
}

nat_status na_cuda_qk_backward_v2(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_attn, const float *q,
                               const float *k, float *dq, float *dk, float *drpb)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_attn, (void)q, (void)k, (void)dq, (void)dk,
        (void)drpb;
    return no_cuda("na_cuda_qk_backward_v2", device);
}

nat_status na_cuda_av_backward_v2(int device, const nat_na_params *p, int64_t batch, int64_t heads,
                               const int64_t *spatial, int64_t dim, const float *d_out, const float *attn,
                               const float *v, float *d_attn, float *dv)
{
    (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)d_out, (void)attn, (void)v, (void)d_attn,
        (void)dv;
    return no_cuda("na_cuda_av_backward_v2", device);
}

nat_status na_cuda_round(int device, int f16, const float *x, float *y, int64_t n)
{
    (void)f16, (void)x, (void)y, (void)n;
    return no_cuda("na_cuda_round", device);
}

nat_status na_cuda_delta(int device, const na_geom *g, const float *d_out, const float *out, float *delta,
                         const char *name)
{
    (void)g, (void)d_out, (void)out, (void)delta, (void)name;
    return no_cuda("na_cuda_delta", device);
}

nat_status na_cuda_to_half(int device, int f16, const float *x, uint16_t *y, int64_t n)
{
    (void)f16, (void)x, (void)y, (void)n;
    return no_cuda("na_cuda_to_half", device);
}

nat_status na_cuda_fused_forward_autocast(int device, int f16, const nat_na_params *p, int64_t batch, int64_t heads,
                                          const int64_t *spatial, int64_t dim, const float *q, const float *k,
                                          const float *v, const float *rpb, float *out, float *lse)
{
    (void)f16, (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb,
        (void)out, (void)lse;
    return no_cuda("na_cuda_fused_forward_autocast", device);
}

nat_status na_cuda_fused_forward_v3(int device, int f16, const nat_na_params *p, int64_t batch, int64_t heads,
                                    const int64_t *spatial, int64_t dim, const uint16_t *q, const uint16_t *k,
                                    const uint16_t *v, const float *rpb, float *out, float *lse)
{
    (void)f16, (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb,
        (void)out, (void)lse;
    return no_cuda("na_cuda_fused_forward_v3", device);
}

nat_status na_cuda_fused_backward_autocast(int device, int f16, const nat_na_params *p, int64_t batch, int64_t heads,
                                           const int64_t *spatial, int64_t dim, const float *q, const float *k,
                                           const float *v, const float *rpb, const float *out, const float *lse,
                                           const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    (void)f16, (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb,
        (void)out, (void)lse, (void)d_out, (void)dq, (void)dk, (void)dv, (void)drpb;
    return no_cuda("na_cuda_fused_backward_autocast", device);
}

nat_status na_cuda_fused_backward_v3(int device, int f16, const nat_na_params *p, int64_t batch, int64_t heads,
                                     const int64_t *spatial, int64_t dim, const uint16_t *q, const uint16_t *k,
                                     const uint16_t *v, const float *rpb, const float *out, const float *lse,
                                     const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    (void)f16, (void)p, (void)batch, (void)heads, (void)spatial, (void)dim, (void)q, (void)k, (void)v, (void)rpb,
        (void)out, (void)lse, (void)d_out, (void)dq, (void)dk, (void)dv, (void)drpb;
    return no_cuda("na_cuda_fused_backward_v3", device);
}

nat_status na_cuda_gather_v0(int device, const na_geom *g, const float *coef, const float *src, float factor,
                             float *out, const char *name)
{
    (void)g, (void)coef, (void)src, (void)factor, (void)out, (void)name;
    return no_cuda("na_cuda_gather_v0", device);
}
