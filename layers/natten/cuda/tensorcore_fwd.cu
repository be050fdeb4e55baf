/* layers/natten/cuda/tensorcore_fwd.cu — kernel lab v3: the fused neighborhood-attention forward on tensor cores
 * (mma.sync m16n8k16, bfloat16 or float16 operands, f32 accumulation, online softmax, lse saved), 1-D
 * and 2-D, head dim 32 or 64; and the autocast helpers (f32 -> rounded f32, f32 -> 2-byte bits).
 *
 * Idea and host model: cuda/tensorcore.h (the kernel below is its block sequence with __syncthreads between
 * the shared-memory load and the warps' compute). Needs sm_80 or newer (mma.sync with bf16). The
 * backward (cuda/tensorcore_bwd.cu) rebuilds the weights from this kernel's lse. Layouts and conventions:
 * cuda/na_cuda.h.
 */
#include "layers/natten/cuda/tensorcore.h"

namespace {

template <int D>
__global__ void __launch_bounds__(NA_V3_THREADS)
    v3_fwd_kernel(const na_geom g, const na_v2_plan pl, int f16, const uint16_t *__restrict__ q,
                  const uint16_t *__restrict__ k, const uint16_t *__restrict__ v, const float *__restrict__ rpb,
                  float *__restrict__ out, float *__restrict__ lse)
{
    __shared__ __align__(16) uint16_t ks[NA_V3_PIECE * (D + NA_V3_PAD)];
    __shared__ __align__(16) uint16_t vts[D * NA_V3_VS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int64_t blk = blockIdx.x; blk < pl.nblocks; blk += gridDim.x) {
        na_v2_tile t;
        na_v2_tile_at(&g, &pl, blk, &t);
        if (t.nq[0] == 0 || t.nq[1] == 0) /* the same for the whole block */
            continue;
        na_v3_warp W;
        na_v3_warp_init(&g, &t, q, f16, warp, &W, lane, D);
        const int nh = t.he[0] * t.he[1];
        for (int pb = 0; pb < nh; pb += NA_V3_PIECE) {
            __syncthreads(); /* the previous piece is no longer read */
            na_v3_load_body(&g, &t, k, v, pb, ks, vts, threadIdx.x, blockDim.x, D);
            __syncthreads();
            na_v3_piece(&g, &t, f16, ks, vts, pb, rpb, &W, lane, D);
        }
        na_v3_store(&g, &W, out, lse, lane, D);
    }
}

struct Round { /* y = x rounded to the 2-byte type, as float */
    const float *x;
    float *y;
    int f16;
    __device__ void operator()(int64_t i) const { y[i] = f16 ? half_round_f16(x[i]) : half_round_bf16(x[i]); }
};

struct ToHalf { /* y = bits of x in the 2-byte type */
    const float *x;
    uint16_t *y;
    int f16;
    __device__ void operator()(int64_t i) const { y[i] = half_from_f32(x[i], f16); }
};

} // namespace

extern "C" nat_status na_cuda_round(int device, int f16, const float *x, float *y, int64_t n)
{
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, "na_cuda_round (autocast)", Round{x, y, f16}, n);
}

/* bits of x (n floats) in the 2-byte type; queued. */
extern "C" nat_status na_cuda_to_half(int device, int f16, const float *x, uint16_t *y, int64_t n)
{
    NAT_CUDA_ENTER(device);
    return na_launch(hb->stream, "na_cuda_to_half (autocast)", ToHalf{x, y, f16}, n);
}

extern "C" nat_status na_cuda_fused_forward_v3(const na_problem *pb, int f16, const uint16_t *q,
                                               const uint16_t *k, const uint16_t *v, const float *rpb, float *out,
                                               float *lse)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_forward_v3";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    if (!na_v3_plan_init(&g, &pl))
        return na_v3_refuse(op, &g);
    NAT_CUDA_ENTER(device);
    const int grid = (int)(pl.nblocks < (1 << 30) ? pl.nblocks : (1 << 30));
    if (g.dim == 32)
        v3_fwd_kernel<32><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, rpb, out, lse);
    else
        v3_fwd_kernel<64><<<grid, NA_V3_THREADS, 0, hb->stream>>>(g, pl, f16, q, k, v, rpb, out, lse);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? NAT_OK
                            : nat_cuda_fail("na_cuda_fused_forward (v3 tensor cores)", __FILE__, __LINE__,
                                            cudaGetErrorString(e));
}
