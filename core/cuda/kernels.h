/* core/cuda/kernels.h — the CUDA kernels of the core ops (the entries of the CUDA kernel table), behind a
 * plain C interface.
 *
 * The ops in core/ check shapes, make step tensors and record the tape, then run their kernels through the
 * table of their device (core/backend.h), which for a CUDA device holds these functions. Implementations:
 * the .cu files of core/cuda/ (one job per file), reached through the CUDA kernel table (core/cuda/backend_cuda.c,
 * core/backend.h); a build without CUDA has no such table.
 *
 * Conventions, for every function here:
 *  - `ex->dev.index` is the CUDA ordinal. Each call sets that device for its own work and restores the caller's
 *    current device before returning: there is no "current device" state in nat.
 *  - All work is queued on the device's one nat stream (core/cuda/device.cu), so work of one device
 *    runs in call order, and a block freed to the caching allocator may be reused by the next call
 *    without a synchronisation. Only copies to the host wait.
 *  - Pointers are device pointers unless said otherwise; strides and sizes are in elements; "y +=" means
 *    the result is accumulated into y (autograd's gradient rule), "y =" that y is overwritten.
 *  - A failing CUDA, cuBLAS or cuDNN call becomes NAT_ERR_CUDA with the call and the library's error
 *    text in the message.
 */
#ifndef NAT_CORE_CUDA_KERNELS_H
#define NAT_CORE_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h" /* memcpy kinds, binary ops, conv geometry */
#include "nat/alloc.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device, copies, fills (device.cu) ---- */

/* NAT_OK when `dev` is a CUDA device this process can use; otherwise NAT_ERR_UNSUPPORTED saying why
 * ("nat was built without CUDA", "no CUDA device present", "cuda:3 does not exist (2 devices)"), prefixed
 * with `op`. Creates the device's stream on first use. */
nat_status nat_cu_check_device(nat_device dev, const char *op);

/* The device entries of the CUDA table (core/backend.h; public face: include/nat/cuda.h via core/device.c). */
int nat_cu_device_count(void);
nat_status nat_cu_device_name(int index, char *buf, size_t cap);
nat_status nat_cu_set_tf32(int index, bool on);
bool nat_cu_tf32(int index);
nat_status nat_cu_synchronize(int index);
void *nat_cu_raw_malloc(int device, size_t bytes);
void nat_cu_raw_free(int device, void *p);
nat_status nat_cu_raw_copy(int device, void *dst, const void *src, size_t bytes, int kind);

/* Copy on the device's stream; returns when dst may be read (D2H) or src reused (H2D). */
nat_status nat_cu_memcpy(const nat_exec *ex, void *dst, const void *src, size_t bytes, int kind);
nat_status nat_cu_memset0(const nat_exec *ex, void *p, size_t bytes);
/* Waits for all of nat's work queued on the device. */
nat_status nat_cuda_sync(int dev);

/* ---- shape (copy.cu) ---- */

/* dst = src, or dst += src when add, elementwise over `shape`; both strided (any strides, dst must not
 * overlap src). Covers dense copies of views, accumulation, pad and crop. */
nat_status nat_cu_strided_copy(const nat_exec *ex, float *dst, const int64_t *dst_stride, const float *src,
                                 const int64_t *src_stride, int ndim, const int64_t *shape, bool add);
/* p[0..n) = v */
nat_status nat_cu_fill(const nat_exec *ex, float *p, int64_t n, float v);

/* ---- elementwise (elementwise.cu) ---- */

/* y (+)= s · (a op b) over `shape` (nd dims, y contiguous in it); a and b are read through their own
 * strides (0 on broadcast dims). NAT_CUDA_SCALE: y (+)= s · a, b unused. y may alias a or b only when
 * it is elementwise the same position (y = a, same strides). */
nat_status nat_cu_binary(const nat_exec *ex, int op, bool acc, float *y, int nd, const int64_t *shape, const float *a,
                           const int64_t *a_stride, const float *b, const int64_t *b_stride, float s);
/* y = gelu(x) (erf form); gx += g · gelu'(x) (acc) or gx = g · gelu'(x); all contiguous, n elements. */
nat_status nat_cu_gelu_forward(const nat_exec *ex, const float *x, float *y, int64_t n);
nat_status nat_cu_gelu_backward(const nat_exec *ex, const float *x, const float *g, float *gx, int64_t n, bool acc);

/* ---- reductions (reduce.cu) ---- */

/* out (+)= alpha · Σ x over the dims where keep[d] is false. x is read through its strides over `shape`;
 * out is contiguous over the kept dims in their order. Sums in double, in a fixed order. */
nat_status nat_cu_reduce(const nat_exec *ex, float *out, bool acc, float alpha, int nd, const int64_t *shape, const float *x,
                           const int64_t *x_stride, const bool *keep);
/* *y = alpha · Σ x[0..n) (squares: Σ x²), a two-pass deterministic reduction in double; y is one device
 * float. */
nat_status nat_cu_sum(const nat_exec *ex, const float *x, int64_t n, bool squares, float alpha, float *y);
/* Σ over tensors of Σ t_i², summed in double, returned on the host (waits for the device). */
nat_status nat_cu_sum_squares(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns, double *host_out);

/* ---- normalisation (norm.cu); rows of C contiguous elements ---- */

/* y = (x - mean)·rstd·w + b per row; w, b may be NULL; mean and rstd (f64 [rows]) are saved. */
nat_status nat_cu_layernorm_forward(const nat_exec *ex, const float *x, const float *w, const float *b, float *y, double *mean,
                                      double *rstd, int64_t rows, int64_t C, float eps);
/* gx += ..., gw += Σ g·xhat, gb += Σ g; any of gx, gw, gb may be NULL; w may be NULL. */
nat_status nat_cu_layernorm_backward(const nat_exec *ex, const float *x, const double *mean, const double *rstd,
                                       const float *w, const float *g, float *gx, float *gw, float *gb, int64_t rows,
                                       int64_t C);
nat_status nat_cu_softmax_forward(const nat_exec *ex, const float *x, float *y, int64_t rows, int64_t C);
/* gx += y ⊙ (g - Σ g ⊙ y) */
nat_status nat_cu_softmax_backward(const nat_exec *ex, const float *y, const float *g, float *gx, int64_t rows, int64_t C);

/* ---- losses (loss.cu); logits z [N, C] contiguous ---- */

/* Exactly one of labels (int32 [N], already validated) and targets (f32 [N, C]) is non-NULL. Writes
 * lse (f64 [N]) and *loss = mean over rows (one device float). */
nat_status nat_cu_cross_entropy_forward(const nat_exec *ex, const float *z, const int32_t *labels, const float *targets,
                                          int64_t N, int64_t C, float smoothing, double *lse, float *loss);
/* gz += ..., gt += ... (either may be NULL; gt only with targets); g is the loss gradient (one device float). */
nat_status nat_cu_cross_entropy_backward(const nat_exec *ex, const float *z, const int32_t *labels, const float *targets,
                                           const double *lse, const float *g, int64_t N, int64_t C, float smoothing,
                                           float *gz, float *gt);

/* ---- GEMM (gemm.cu, cuBLAS) ---- */

/* For each of `batch` problems i: C_i[M,N] = op(A_i) op(B_i) + beta·C_i, row-major and dense, with
 * A_i = A + i·sa (likewise B, C; a stride of 0 shares the operand). TF32 when the device's flag is on. */
nat_status nat_cu_gemm(const nat_exec *ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t sa,
                         const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch);
/* The same product under autocast: A and B are rounded to bf16 (prec NAT_PREC_BF16) or f16
 * (NAT_PREC_F16) into scratch from the caching allocator, multiplied by cublasGemm(StridedBatched)Ex
 * with CUBLAS_COMPUTE_32F, and C stays f32 (accumulated with beta as above). */
nat_status nat_cu_gemm_lowp(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                              int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch);

/* ---- bf16 / f16 conversions (half.cu) ---- */

/* y[0..n) = x rounded to prec (2-byte elements: __nv_bfloat16 or __half, round to nearest even). */
nat_status nat_cuda_round_to(int dev, int prec, const float *x, void *y, int64_t n);
/* y[0..n) (+)= x widened from prec to f32. */
nat_status nat_cuda_widen(int dev, int prec, const void *x, float *y, int64_t n, bool acc);

/* ---- convolution (conv.cu, cuDNN) ---- */

/* x [N,C,H,W], w [O,C,kh,kw], y [N,O,Ho,Wo]: y = conv(x, w); gx += conv_bwd_data(w, gy);
 * gw += conv_bwd_filter(x, gy). Bias is the caller's (nat_cuda_binary / nat_cuda_reduce). */
nat_status nat_cu_conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w, float *y);
nat_status nat_cu_conv2d_backward_data(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *w, const float *gy,
                                         float *gx);
nat_status nat_cu_conv2d_backward_filter(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *gy,
                                           float *gw);
/* The three under autocast (prec NAT_PREC_BF16 / NAT_PREC_F16): the operands are rounded into 2-byte
 * scratch and cuDNN runs with bf16 / half tensors and float compute (its PSEUDO_HALF / PSEUDO_BFLOAT16
 * configurations). cuDNN's legacy API wants x, w and y of one type, so its result is 2-byte too and is
 * widened into the f32 output (y =, gx +=, gw +=): one more rounding than the CPU emulation, which keeps
 * the f32 accumulator (docs/cuda.md). */
nat_status nat_cu_conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                        const float *w, float *y);
nat_status nat_cu_conv2d_backward_data_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *w,
                                              const float *gy, float *gx);
nat_status nat_cu_conv2d_backward_filter_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                                const float *gy, float *gw);

/* ---- dropout (dropout.cu) ---- */

/* Element i is kept when hash(seed, i) >= threshold (32-bit), so the mask needs no memory and backward
 * regenerates it. Forward: y = kept ? x·scale : 0. Backward (acc): y += kept ? x·scale : 0 with x = g. */
nat_status nat_cu_dropout(const nat_exec *ex, const float *x, float *y, bool acc, int64_t n, uint64_t seed, uint64_t threshold,
                            float scale);

/* ---- optimizer updates (optim.cu); contiguous, n elements; rules of core/optim.c ---- */

nat_status nat_cu_sgd_update(const nat_exec *ex, float *p, const float *g, float *buf, int64_t n, float lr, float wd, float mu,
                               bool nesterov);
nat_status nat_cu_adamw_update(const nat_exec *ex, float *p, const float *g, float *m, float *v, int64_t n, float decay_mul,
                                 float w1, float beta2, float one_minus_beta2, float neg_step_size, float bc2_sqrt,
                                 float eps);

#ifdef __cplusplus
}
#endif
#endif
