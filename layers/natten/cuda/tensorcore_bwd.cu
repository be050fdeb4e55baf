/* layers/natten/cuda/tensorcore_bwd.cu — kernel lab v3, backward: the fused neighborhood-attention backward on
 * tensor cores (mma.sync m16n8k16, bfloat16 or float16 operands, f32 accumulation), 1-D and 2-D, head
 * dim 32 or 64: delta, then a dq kernel over query tiles and a dk/dv kernel over key tiles, then (with
 * drpb) v1's fixed-order reduction of the dS the dq kernel stored. No atomics.
 *
 * Idea and host model: cuda/tensorcore_bwd.h (each kernel below is its block sequence with __syncthreads
 * between the shared-memory loads and the warps' compute). Needs sm_80 or newer. Layouts and
 * conventions: cuda/na_cuda.h.
 */
#include "layers/natten/cuda/tensorcore_bwd.h"

namespace {

template <int D>
__global__ void __launch_bounds__(NA_V3_THREADS)
    v3_dq_kernel(const na_geom g, const na_v2_plan pl, int f16, const uint16_t *__restrict__ q,
                 const uint16_t *__restrict__ k, const uint16_t *__restrict__ v, const uint16_t *__restrict__ dout,
                 const float *__restrict__ rpb, const float *__restrict__ lse, const float *__restrict__ delta,
                 float *__restrict__ dq, float *__restrict__ ds)
{
    __shared__ __align__(16) uint16_t ks[NA_V3_PIECE * (D + NA_V3_PAD)];
    __shared__ __align__(16) uint16_t vs[NA_V3_PIECE * (D + NA_V3_PAD)];
    __shared__ __align__(16) uint16_t kts[D * NA_V3_VS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int64_t blk = blockIdx.x; blk < pl.nblocks; blk += gridDim.x) {
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0) /* the same for the whole block */
            continue;
        na_v3q_warp W;
        na_v3q_warp_init(&g, &t, q, dout, lse, delta, warp, &W, lane, D);
        const int nh = t.he[0] * t.he[1];
        for (int pb = 0; pb < nh; pb += NA_V3_PIECE) {
            __syncthreads(); /* the previous piece is no longer read */
            na_v3q_load_body(&g, &t, k, v, pb, ks, vs, kts, threadIdx.x, blockDim.x, D);
            __syncthreads();
            na_v3q_piece(&g, &t, f16, ks, vs, kts, pb, rpb, ds, &W, lane, D);
        }
        na_v3q_store(&g, &W, dq, lane, D);
    }
}

template <int D>
__global__ void __launch_bounds__(NA_V3_THREADS)
    v3_dkdv_kernel(const na_geom g, const na_v2_plan pl, int f16, const uint16_t *__restrict__ q,
                   const uint16_t *__restrict__ k, const uint16_t *__restrict__ v,
                   const uint16_t *__restrict__ dout, const float *__restrict__ rpb, const float *__restrict__ lse,
                   const float *__restrict__ delta, float *__restrict__ dk, float *__restrict__ dv)
{
    __shared__ __align__(16) uint16_t qs[NA_V3_PIECE * (D + NA_V3_PAD)];
    __shared__ __align__(16) uint16_t dos[NA_V3_PIECE * (D + NA_V3_PAD)];
    __shared__ __align__(16) uint16_t qts[D * NA_V3_VS];
    __shared__ __align__(16) uint16_t dots[D * NA_V3_VS];
    __shared__ na_v3k_query qi[NA_V3_PIECE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int64_t blk = blockIdx.x; blk < pl.nblocks; blk += gridDim.x) {
        na_v2_tile t;
        na_v3k_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0)
            continue;
        na_v3k_warp W;
        na_v3k_warp_init(&g, &t, k, v, warp, &W, lane, D);
        const int nh = t.he[0] * t.he[1];
        for (int pb = 0; pb < nh; pb += NA_V3_PIECE) {
            __syncthreads();
            na_v3k_load_body(&g, &t, q, dout, lse, delta, pb, qs, dos, qts, dots, qi, threadIdx.x, blockDim.x, D);
            __syncthreads();
            na_v3k_piece(&g, &t, f16, qs, dos, qts, dots, qi, pb, rpb, &W, lane, D);
        }
        na_v3k_store(&g, &W, dk, dv, lane, D);
    }
}

} // namespace

extern "C" nat_status na_cuda_fused_backward_v3(const na_problem *pb, int f16, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                                const float *rpb, const float *out, const float *lse,
                                                const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_backward_v3";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v3_plan_init(&g, &pl))
        return na_v3_refuse(op, &g);
    NAT_CUDA_ENTER(device);
    /* Scratch: delta [N] f32, dO [N, D] in the 2-byte type, then dS [N, K] f32 when drpb is wanted. */
    const nat_device d = {NAT_DEV_CUDA, device};
    const int64_t nq = g.nquery, nqd = nq * g.dim;
    const size_t b_delta = sizeof(float) * (size_t)nq, b_do = (sizeof(uint16_t) * (size_t)nqd + 15) & ~(size_t)15;
    const size_t bytes = b_delta + b_do + (drpb ? sizeof(float) * (size_t)(nq * g.nkeys) : 0);
    char *scratch;
    NAT_TRY(nat_mem_alloc(d, bytes, (void **)&scratch));
    float *delta = (float *)scratch;
    uint16_t *dout16 = (uint16_t *)(scratch + b_delta);
    float *ds = drpb ? (float *)(scratch + b_delta + b_do) : nullptr;
    nat_status s = na_cuda_delta(device, &g, d_out, out, delta, "na_cuda_fused_backward delta (v3)");
    if (s == NAT_OK)
        s = na_cuda_to_half(device, f16, d_out, dout16, nqd);
    if (s == NAT_OK) {
        const int grid = (int)(pl.nblocks < (1 << 30) ? pl.nblocks : (1 << 30));
        if (g.dim == 32) {
            v3_dq_kernel<32><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, dout16, rpb, lse, delta,
                                                                    dq, ds);
            v3_dkdv_kernel<32><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, dout16, rpb, lse,
                                                                      delta, dk, dv);
        } else {
            v3_dq_kernel<64><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, dout16, rpb, lse, delta,
                                                                    dq, ds);
            v3_dkdv_kernel<64><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, dout16, rpb, lse,
                                                                      delta, dk, dv);
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            s = nat_cuda_fail("na_cuda_fused_backward (v3 tensor cores)", __FILE__, __LINE__, cudaGetErrorString(e));
    }
    if (s == NAT_OK && drpb)
        s = na_cuda_drpb_reduce(device, &g, ds, drpb);
    nat_mem_free(d, scratch, bytes); /* stream order: the next user of the block runs after these kernels */
    return s;
}
