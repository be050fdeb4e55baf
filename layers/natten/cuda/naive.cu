/* layers/natten/cuda/naive.cu — kernel lab v0: naive neighborhood-attention kernels (fp32, 1-D/2-D/3-D
 * through the 3-D view), the GPU reference every faster version is checked against. Also the
 * deterministic drpb reduction the fused backward shares.
 *
 * Idea (v0): one thread per output element, grid-stride; each thread recomputes its query's window (or
 * its key's inverse neighbourhood) from docs/design.md §2 and loops over it in a fixed order. No shared
 * memory, no atomics: dk and dv are gathered per key over its inverse neighbourhood, drpb is a two-pass
 * reduction in double (per (head, rpb entry, 64-pixel block) partials, then the partials in order).
 * The bodies live in cuda/body.h, where tests/test_na_cuda.c also runs them on the host.
 *
 * Layouts and conventions: cuda/na_cuda.h. Work per op is that of the CPU reference; nothing is tuned.
 * Entry points na_cuda_*_v0; cuda/dispatch.cu decides when they run (always where v2 does not apply,
 * or with NAT_NA_KERNEL=v0).
 */
#include "layers/natten/cuda/body.h"

namespace {

struct SlotDot { /* v0 qk / av-backward d_attn: na_slot_dot_body */
    na_geom g;
    const float *a, *b, *rpb;
    float scale, masked;
    float *out;
    __device__ void operator()(int64_t i) const { na_slot_dot_body(&g, a, b, scale, rpb, masked, out, i); }
};

struct WindowSum { /* v0 av / qk-backward dq: na_window_sum_body */
    na_geom g;
    const float *coef, *src;
    float factor;
    float *out;
    __device__ void operator()(int64_t i) const { na_window_sum_body(&g, coef, src, factor, out, i); }
};

struct Gather { /* v0 qk-backward dk / av-backward dv: na_gather_body */
    na_geom g;
    const float *coef, *src;
    float factor;
    float *out;
    __device__ void operator()(int64_t i) const { na_gather_body(&g, coef, src, factor, out, i); }
};

struct DrpbPart { /* drpb pass 1: na_drpb_part_body */
    na_geom g;
    const float *src;
    double *part;
    __device__ void operator()(int64_t i) const { na_drpb_part_body(&g, src, part, i); }
};

struct DrpbFinal { /* drpb pass 2: na_drpb_final_body */
    na_geom g;
    const double *part;
    float *drpb;
    __device__ void operator()(int64_t i) const { na_drpb_final_body(&g, part, drpb, i); }
};

nat_status queue_drpb(int device, const na_geom *g, const float *src, double *part, float *drpb)
{
    NAT_CUDA_ENTER(device);
    const int64_t nhr = (int64_t)g->heads * g->rpb_size;
    NAT_TRY(na_launch(hb->stream, "na drpb partials (v0)", DrpbPart{*g, src, part}, nhr * na_drpb_chunks(g)));
    return na_launch(hb->stream, "na drpb sum (v0)", DrpbFinal{*g, part, drpb}, nhr);
}

} // namespace

extern "C" nat_status na_cuda_drpb_reduce(int device, const na_geom *g, const float *src, float *drpb)
{
    const nat_device d = {NAT_DEV_CUDA, device};
    const size_t bytes = sizeof(double) * (size_t)((int64_t)g->heads * g->rpb_size * na_drpb_chunks(g));
    double *part;
    NAT_TRY(nat_mem_alloc(d, bytes, (void **)&part));
    nat_status s = queue_drpb(device, g, src, part, drpb);
    nat_mem_free(d, part, bytes); /* stream order: the next user of the block runs after pass 2 */
    return s;
}

extern "C" nat_status na_cuda_gather_v0(int device, const na_geom *g, const float *coef, const float *src,
                                        float factor, float *out, const char *name)
{
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, name, Gather{*g, coef, src, factor, out}, g->nquery * g->dim);
}

extern "C" nat_status na_cuda_qk_v0(const na_problem *pb, const float *q, const float *k, const float *rpb,
                                 float *attn)
{
    const int device = pb->device;
    const char *op = "na_cuda_qk_v0";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, "na_cuda_qk (v0 slot dots)", SlotDot{g, q, k, rpb, g.scale, -INFINITY, attn},
                     g.nquery * g.nkeys);
}

extern "C" nat_status na_cuda_av_v0(const na_problem *pb, const float *attn, const float *v, float *out)
{
    const int device = pb->device;
    const char *op = "na_cuda_av_v0";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, "na_cuda_av (v0 window sums)", WindowSum{g, attn, v, 1.0f, out}, g.nquery * g.dim);
}

extern "C" nat_status na_cuda_qk_backward_v0(const na_problem *pb, const float *d_attn, const float *q,
                                          const float *k, float *dq, float *dk, float *drpb)
{
    const int device = pb->device;
    const char *op = "na_cuda_qk_backward_v0";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    {
        NAT_CUDA_ENTER(device);
        const int64_t n = g.nquery * g.dim;
        NAT_TRY(na_launch(hb->stream, "na_cuda_qk_backward dq (v0 window sums)",
                          WindowSum{g, d_attn, k, g.scale, dq}, n));
        NAT_TRY(na_launch(hb->stream, "na_cuda_qk_backward dk (v0 gather)", Gather{g, d_attn, q, g.scale, dk}, n));
    }
    return drpb ? na_cuda_drpb_reduce(device, &g, d_attn, drpb) : NAT_OK;
}

extern "C" nat_status na_cuda_av_backward_v0(const na_problem *pb, const float *d_out, const float *attn,
                                          const float *v, float *d_attn, float *dv)
{
    const int device = pb->device;
    const char *op = "na_cuda_av_backward_v0";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    NAT_CUDA_ENTER(device);
    NAT_TRY(na_launch(hb->stream, "na_cuda_av_backward d_attn (v0 slot dots)",
                      SlotDot{g, d_out, v, nullptr, 1.0f, 0.0f, d_attn}, g.nquery * g.nkeys));
    return na_launch(hb->stream, "na_cuda_av_backward dv (v0 gather)", Gather{g, attn, d_out, 1.0f, dv},
                     g.nquery * g.dim);
}
