/* core/cpu/kernels.h — the CPU kernels of the core ops: the entries of the CPU kernel table
 * (core/cpu/backend_cpu.c), one file of core/cpu/ per job. Each has the table's signature
 * (core/backend.h) and the loops the ops ran inline before the table existed, unchanged, so results keep
 * their bits. Pointers are host pointers; CPU scratch comes from ex->ctx when there is one. */
#ifndef NAT_CORE_CPU_KERNELS_H
#define NAT_CORE_CPU_KERNELS_H

#include "core/backend.h"

/* Below this many elements a parallel region costs more than it saves (elementwise kernels). */
#define NAT_CPU_PAR_MIN 32768

/* copy.c */
nat_status nat_cpu_copy_bytes(const nat_exec *ex, void *dst, const void *src, size_t bytes, int kind);
nat_status nat_cpu_memset0(const nat_exec *ex, void *p, size_t bytes);
nat_status nat_cpu_strided_copy(const nat_exec *ex, float *dst, const int64_t *dst_stride, const float *src,
                                const int64_t *src_stride, int ndim, const int64_t *shape, bool add);
nat_status nat_cpu_fill(const nat_exec *ex, float *p, int64_t n, float v);

/* elementwise.c */
nat_status nat_cpu_binary(const nat_exec *ex, int op, bool acc, float *y, int nd, const int64_t *shape,
                          const float *a, const int64_t *a_stride, const float *b, const int64_t *b_stride, float s);
nat_status nat_cpu_gelu_forward(const nat_exec *ex, const float *x, float *y, int64_t n);
nat_status nat_cpu_gelu_backward(const nat_exec *ex, const float *x, const float *g, float *gx, int64_t n, bool acc);

/* reduce.c */
nat_status nat_cpu_reduce(const nat_exec *ex, float *out, bool acc, float alpha, int nd, const int64_t *shape,
                          const float *x, const int64_t *x_stride, const bool *keep);
nat_status nat_cpu_bias_grad(const nat_exec *ex, const float *g, int64_t outer, int64_t C, int64_t inner, float *gb);
nat_status nat_cpu_sum(const nat_exec *ex, const float *x, int64_t n, bool squares, double alpha, float *y);
nat_status nat_cpu_sum_squares(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns, double *acc);

/* gemm.c */
nat_status nat_cpu_gemm(const nat_exec *ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                        int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch);
nat_status nat_cpu_gemm_lowp(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                             const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                             int64_t batch);
/* C[M,N] = op(A) op(B) with A and B already bf16 bits (row-major, dense), f32 result: the bf16 kernel
 * without autocast's rounding of f32 operands (benchmarks against libraries whose bf16 GEMMs take bf16
 * tensors). NAT_ERR_UNSUPPORTED where oneDNN has no bf16 matmul. */
nat_status nat_cpu_gemm_bf16_operands(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                                      const uint16_t *B, float *C);
nat_status nat_cpu_linear_bias_grad(const nat_exec *ex, const float *g, int64_t M, int64_t outf, float *gb);

/* conv.c */
nat_status nat_cpu_conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                  const float *b, float *y);
nat_status nat_cpu_conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                       const float *w, const float *b, float *y);
nat_status nat_cpu_conv2d_backward_data(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *w,
                                        const float *gy, float *gx);
/* conv2d's f32 weight gradient (gw +=) as one im2col GEMM over the batch: the route nat takes where
 * oneDNN has no direct (jit) kernel for the shape; *direct says whether it has one. Exposed for tests. */
nat_status nat_cpu_conv2d_backward_filter_im2col(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                                 const float *gy, float *gw);
nat_status nat_cpu_conv2d_backward_filter_direct(const nat_cuda_conv_geom *g, bool *direct);
nat_status nat_cpu_conv2d_backward_filter(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                          const float *gy, float *gw);
nat_status nat_cpu_conv2d_backward_data_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                             const float *w, const float *gy, float *gx);
nat_status nat_cpu_conv2d_backward_filter_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                               const float *x, const float *gy, float *gw);
nat_status nat_cpu_conv2d_bias_grad(const nat_exec *ex, const float *gy, int64_t N, int64_t O, int64_t P, float *gb);

/* loss.c */
nat_status nat_cpu_cross_entropy_forward(const nat_exec *ex, const float *logits, const int32_t *labels,
                                         const float *targets, int64_t N, int64_t C, float smoothing,
                                         double *lse_rows, float *loss);
nat_status nat_cpu_cross_entropy_backward(const nat_exec *ex, const float *logits, const int32_t *labels,
                                          const float *targets, const double *lse_rows, const float *g, int64_t N,
                                          int64_t C, float smoothing, float *gz, float *gt);

/* norm.c */
nat_status nat_cpu_layernorm_forward(const nat_exec *ex, const float *x, const float *w, const float *b, float *y,
                                     double *mean, double *rstd, int64_t rows, int64_t C, float eps);
nat_status nat_cpu_layernorm_backward(const nat_exec *ex, const float *x, const double *mean, const double *rstd,
                                      const float *w, const float *g, float *gx, float *gw, float *gb, int64_t rows,
                                      int64_t C);
nat_status nat_cpu_softmax_forward(const nat_exec *ex, const float *x, float *y, int64_t rows, int64_t C);
nat_status nat_cpu_softmax_backward(const nat_exec *ex, const float *y, const float *g, float *gx, int64_t rows,
                                    int64_t C);

/* pool.c */
nat_status nat_cpu_avg_pool_forward(const nat_exec *ex, const float *x, float *y, int64_t N, int64_t C, int64_t S,
                                    bool channels_last);
nat_status nat_cpu_avg_pool_backward(const nat_exec *ex, const float *g, float *gx, int64_t N, int64_t C, int64_t S,
                                     bool channels_last);

/* dropout.c */
nat_status nat_cpu_dropout(const nat_exec *ex, const float *x, float *y, bool acc, int64_t n, uint64_t seed,
                           uint64_t threshold, float scale);

/* optim.c */
nat_status nat_cpu_sgd_update(const nat_exec *ex, float *p, const float *g, float *buf, int64_t n, float lr, float wd,
                              float mu, bool nesterov);
nat_status nat_cpu_adamw_update(const nat_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                float decay_mul, float w1, float beta2, float one_minus_beta2, float neg_step_size,
                                float bc2_sqrt, float eps);
nat_status nat_cpu_ema_update(const nat_exec *ex, float *m, const float *x, int64_t n, float decay, float w);

#endif
