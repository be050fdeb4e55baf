/* layers/natten/cuda/fused.cu — kernel lab v1: fused neighborhood attention (fp32, 1-D/2-D/3-D), forward
 * and backward, what nat_na calls on a CUDA device.
 *
 * Idea (v1): one thread per (query, chunk of 32 head-dim channels), the chunk's accumulators in
 * registers. Forward: online softmax over the window (running max and sum, the accumulators rescaled
 * when the max grows): no [.., K] weights in memory, lse saved. Backward: delta = rowsum(d_out * out)
 * first; per query, dq with each weight rebuilt as exp(logit - lse); per key, dk and dv gathered over
 * its inverse neighbourhood, rebuilding each query's weight and dS from that query's lse and delta —
 * no atomics, every output one thread's fixed-order sum. drpb: the dq pass also writes dS to a [N, K]
 * scratch (only when drpb is wanted), reduced in a fixed order by na_cuda_drpb_reduce (v0's).
 *
 * Known costs, the next versions' targets: with D > 32 each chunk recomputes the logits; the dk/dv pass
 * recomputes two dot products per (key, query) pair; k/v rows are read per thread through L1 (no
 * shared-memory tiles); the dS scratch is N*K floats while the backward runs.
 *
 * The bodies live in cuda/body.h, where tests/test_na_cuda.c also runs them on the host.
 * Layouts and conventions: cuda/na_cuda.h.
 */
#include "layers/natten/cuda/body.h"

namespace {

struct FusedFwd { /* v1 forward: na_fused_fwd_body */
    na_geom g;
    const float *q, *k, *v, *rpb;
    float *out, *lse;
    __device__ void operator()(int64_t i) const { na_fused_fwd_body(&g, q, k, v, rpb, out, lse, i); }
};

struct FusedDelta { /* v1 backward pass 0: na_fused_delta_body */
    na_geom g;
    const float *d_out, *out;
    float *delta;
    __device__ void operator()(int64_t i) const { na_fused_delta_body(&g, d_out, out, delta, i); }
};

struct FusedDq { /* v1 backward pass 1: na_fused_dq_body */
    na_geom g;
    const float *q, *k, *v, *rpb, *lse, *delta, *d_out;
    float *dq, *ds;
    __device__ void operator()(int64_t i) const { na_fused_dq_body(&g, q, k, v, rpb, lse, delta, d_out, dq, ds, i); }
};

struct FusedDkDv { /* v1 backward pass 2: na_fused_dkdv_body */
    na_geom g;
    const float *q, *k, *v, *rpb, *lse, *delta, *d_out;
    float *dk, *dv;
    __device__ void operator()(int64_t i) const { na_fused_dkdv_body(&g, q, k, v, rpb, lse, delta, d_out, dk, dv, i); }
};

nat_status queue_backward(int device, const na_geom &g, const float *q, const float *k, const float *v,
                          const float *rpb, const float *out, const float *lse, const float *d_out, float *dq,
                          float *dk, float *dv, float *delta, float *ds)
{
    NAT_CUDA_ENTER(device);
    const int64_t nq = g.nquery, nt = na_fused_chunks(&g) * nq;
    NAT_TRY(na_cuda_delta(device, &g, d_out, out, delta, "na_cuda_fused_backward delta (v1)"));
    NAT_TRY(na_launch(hb->stream, "na_cuda_fused_backward dq (v1)",
                      FusedDq{g, q, k, v, rpb, lse, delta, d_out, dq, ds}, nt));
    return na_launch(hb->stream, "na_cuda_fused_backward dk/dv (v1)",
                     FusedDkDv{g, q, k, v, rpb, lse, delta, d_out, dk, dv}, nt);
}

} // namespace

extern "C" nat_status na_cuda_delta(int device, const na_geom *g, const float *d_out, const float *out, float *delta,
                                    const char *name)
{
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, name, FusedDelta{*g, d_out, out, delta}, g->nquery);
}

extern "C" nat_status na_cuda_fused_forward(const na_problem *pb, const float *q, const float *k,
                                            const float *v, const float *rpb, float *out, float *lse)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_forward";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, "na_cuda_fused_forward (v1)", FusedFwd{g, q, k, v, rpb, out, lse},
                     na_fused_chunks(&g) * g.nquery);
}

extern "C" nat_status na_cuda_fused_backward(const na_problem *pb, const float *q, const float *k,
                                             const float *v, const float *rpb, const float *out, const float *lse,
                                             const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_backward";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    /* Scratch: delta [N], then dS [N, K] when drpb is wanted. */
    const nat_device d = {NAT_DEV_CUDA, device};
    const size_t bytes = sizeof(float) * (size_t)(g.nquery * (1 + (drpb ? (int64_t)g.nkeys : 0)));
    float *scratch;
    NAT_TRY(nat_mem_alloc(d, bytes, (void **)&scratch));
    float *ds = drpb ? scratch + g.nquery : nullptr;
    nat_status s = queue_backward(device, g, q, k, v, rpb, out, lse, d_out, dq, dk, dv, scratch, ds);
    if (s == NAT_OK && drpb)
        s = na_cuda_drpb_reduce(device, &g, ds, drpb);
    nat_mem_free(d, scratch, bytes); /* stream order: the next user of the block runs after these kernels */
    return s;
}
