/* layers/natten/cuda/tiled.cu — kernel lab v2: tiled neighborhood attention for the unfused ops (fp32,
 * 1-D and 2-D): qk logits, av, and the per-query halves of their backwards (qk backward's dq, av
 * backward's d_attn); the per-key halves (dk, dv) and drpb stay v0's.
 *
 * Idea (v2): a block takes a tile of queries in one dilation group and loads the haloed key (value)
 * tile covering all their windows into shared memory once, 32 channels at a time; every (query, slot)
 * or (query, channel) output of the tile is then computed from shared memory. The bodies and the plan
 * (tile sizes, halo bounds, when v2 applies) are in cuda/tiled.h, where tests/test_na_cuda.c runs them
 * on the host block by block in the same phase order. Layouts and conventions: cuda/na_cuda.h.
 */
#include "layers/natten/cuda/tiled.h"

namespace {

/* Slot dot: out[n, slot] = scale * a[n] . b[key] + rpb (masked slots: masked). */
__global__ void __launch_bounds__(NA_V2_THREADS)
    v2_dot_kernel(const na_geom g, const na_v2_plan pl, const float *__restrict__ a, const float *__restrict__ b,
                  const float *__restrict__ rpb, float scale, float masked, float *__restrict__ out)
{
    extern __shared__ float sm[];
    for (int64_t blk = blockIdx.x; blk < pl.nblocks; blk += gridDim.x) {
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0) /* the same for every thread of the block */
            continue;
        float acc[NA_V2_PER];
#pragma unroll
        for (int j = 0; j < NA_V2_PER; j++)
            acc[j] = 0.0f;
        for (int c0 = 0; c0 < g.dim; c0 += NA_V2_CH) {
            const int dc = g.dim - c0 < NA_V2_CH ? g.dim - c0 : NA_V2_CH;
            __syncthreads(); /* the previous chunk (or tile) is no longer read */
            na_v2_load_body(&g, &t, b, c0, dc, sm, threadIdx.x, blockDim.x);
            __syncthreads();
            na_v2_dot_chunk_body(&g, &t, a, c0, dc, sm, acc, threadIdx.x, blockDim.x);
        }
        na_v2_dot_store_body(&g, &t, scale, rpb, masked, acc, out, threadIdx.x, blockDim.x);
    }
}

/* Window sum: out[n, c] = factor * sum_slot coef[n, slot] * src[key, c]. */
__global__ void __launch_bounds__(NA_V2_THREADS)
    v2_sum_kernel(const na_geom g, const na_v2_plan pl, const float *__restrict__ coef, const float *__restrict__ src,
                  float factor, float *__restrict__ out)
{
    extern __shared__ float sm[];
    for (int64_t blk = blockIdx.x; blk < pl.nblocks; blk += gridDim.x) {
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        for (int c0 = 0; c0 < g.dim; c0 += NA_V2_CH) {
            const int dc = g.dim - c0 < NA_V2_CH ? g.dim - c0 : NA_V2_CH;
            __syncthreads();
            na_v2_load_body(&g, &t, src, c0, dc, sm, threadIdx.x, blockDim.x);
            __syncthreads();
            na_v2_sum_chunk_body(&g, &t, coef, factor, c0, dc, sm, out, threadIdx.x, blockDim.x);
        }
    }
}

int v2_grid(const na_v2_plan &pl) { return (int)(pl.nblocks < (1 << 30) ? pl.nblocks : (1 << 30)); }

nat_status not_applicable(const char *op, const na_geom &g)
{
    return nat_error(NAT_ERR_UNSUPPORTED,
                     "%s: v2 does not apply (3-D, or the halo of a %dx%d kernel with head dim %d does not fit "
                     "its shared memory): use v0",
                     op, g.kernel[1], g.kernel[2], g.dim);
}

nat_status queue_dot(int device, const na_geom &g, const na_v2_plan &pl, const float *a, const float *b,
                     const float *rpb, float scale, float masked, float *out, const char *name)
{
    NAT_CUDA_ENTER(device);
    v2_dot_kernel<<<v2_grid(pl), NA_V2_THREADS, pl.smem_bytes, hb->stream>>>(g, pl, a, b, rpb, scale, masked, out);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? NAT_OK : nat_cuda_fail(name, __FILE__, __LINE__, cudaGetErrorString(e));
}

nat_status queue_sum(int device, const na_geom &g, const na_v2_plan &pl, const float *coef, const float *src,
                     float factor, float *out, const char *name)
{
    NAT_CUDA_ENTER(device);
    v2_sum_kernel<<<v2_grid(pl), NA_V2_THREADS, pl.smem_bytes, hb->stream>>>(g, pl, coef, src, factor, out);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? NAT_OK : nat_cuda_fail(name, __FILE__, __LINE__, cudaGetErrorString(e));
}

} // namespace

extern "C" nat_status na_cuda_qk_v2(const na_problem *pb, const float *q, const float *k,
                                    const float *rpb, float *attn)
{
    const int device = pb->device;
    const char *op = "na_cuda_qk_v2";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v2_plan_init(&g, 1, &pl))
        return not_applicable(op, g);
    return queue_dot(device, g, pl, q, k, rpb, g.scale, -INFINITY, attn, "na_cuda_qk (v2 tiled slot dots)");
}

extern "C" nat_status na_cuda_av_v2(const na_problem *pb, const float *attn, const float *v, float *out)
{
    const int device = pb->device;
    const char *op = "na_cuda_av_v2";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v2_plan_init(&g, 0, &pl))
        return not_applicable(op, g);
    return queue_sum(device, g, pl, attn, v, 1.0f, out, "na_cuda_av (v2 tiled window sums)");
}

extern "C" nat_status na_cuda_qk_backward_v2(const na_problem *pb, const float *d_attn, const float *q,
                                             const float *k, float *dq, float *dk, float *drpb)
{
    const int device = pb->device;
    const char *op = "na_cuda_qk_backward_v2";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v2_plan_init(&g, 0, &pl))
        return not_applicable(op, g);
    NAT_TRY(queue_sum(device, g, pl, d_attn, k, g.scale, dq, "na_cuda_qk_backward dq (v2 tiled window sums)"));
    NAT_TRY(na_cuda_gather_v0(device, &g, d_attn, q, g.scale, dk, "na_cuda_qk_backward dk (v0 gather)"));
    return drpb ? na_cuda_drpb_reduce(device, &g, d_attn, drpb) : NAT_OK;
}

extern "C" nat_status na_cuda_av_backward_v2(const na_problem *pb, const float *d_out,
                                             const float *attn, const float *v, float *d_attn, float *dv)
{
    const int device = pb->device;
    const char *op = "na_cuda_av_backward_v2";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v2_plan_init(&g, 1, &pl))
        return not_applicable(op, g);
    NAT_TRY(queue_dot(device, g, pl, d_out, v, nullptr, 1.0f, 0.0f, d_attn,
                      "na_cuda_av_backward d_attn (v2 tiled slot dots)"));
    return na_cuda_gather_v0(device, &g, attn, d_out, 1.0f, dv, "na_cuda_av_backward dv (v0 gather)");
}
