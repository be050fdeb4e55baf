/* core/backend.h — the per-device kernel table: one function pointer per kernel, with the same
 * raw-pointer signature for every backend (CPU: core/cpu/, CUDA: core/cuda/).
 *
 * An op (core/ops_*.c) checks its arguments, makes its step tensors, records the tape and then runs its
 * kernel through the table of its tensors' device:
 *
 *     NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), softmax_forward, X, Y, rows, C));
 *
 * NAT_KERNEL looks the table up (nat_backend_for) and fails with NAT_ERR_UNSUPPORTED naming the kernel
 * and the device when the device has no table in this build or the table has no such entry.
 *
 * Conventions for every kernel (they were core/cuda/kernels.h's, and hold on the CPU too):
 *  - the first argument is the execution environment: the device (its ordinal for CUDA) and an optional
 *    context. A CPU kernel that needs scratch takes it from ex->ctx (nat_ctx_scratch, no heap call in a
 *    steady-state step) and falls back to malloc/free when ex->ctx is NULL (nat_exec_scratch);
 *  - pointers are the device's (host memory for the CPU); strides and sizes are in elements;
 *    "y +=" accumulates (autograd's rule), "y =" overwrites;
 *  - CUDA kernels queue on the device's one nat stream; only copies to the host wait.
 */
#ifndef NAT_CORE_BACKEND_H
#define NAT_CORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nat/autograd.h"
#include "nat/cuda.h" /* nat_cuda_built, nat_cuda_device_count: with the raw helpers below */
#include "nat/status.h"
#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nat_backend nat_backend;

/* Where and with what a kernel runs. Plain data: NAT_KERNEL may evaluate it more than once. */
typedef struct nat_exec {
    nat_device dev; /* the operands' device */
    nat_ctx *ctx;   /* optional: source of CPU scratch (may be NULL) */
} nat_exec;

/* A nat_exec * for the context's device (scratch from ctx), or for a device without a context. */
#define NAT_EXEC_CTX(ctx_) (&(nat_exec){nat_ctx_device(ctx_), (ctx_)})
#define NAT_EXEC_DEV(dev_) (&(nat_exec){(dev_), NULL})
#define NAT_EXEC_CUDA(index_) (&(nat_exec){{NAT_DEV_CUDA, (index_)}, NULL})

enum { NAT_CUDA_H2D = 0, NAT_CUDA_D2H = 1, NAT_CUDA_D2D = 2 };                /* memcpy kinds */
enum { NAT_CUDA_ADD = 0, NAT_CUDA_SUB = 1, NAT_CUDA_MUL = 2, NAT_CUDA_SCALE = 3 }; /* binary ops */

typedef struct nat_cuda_conv_geom {
    int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, Ho, Wo;
} nat_cuda_conv_geom;

struct nat_backend {
    const char *name; /* "cpu", "cuda" */

    /* ---- the device ---- */
    int (*device_count)(void);
    /* NAT_OK when dev can be used by this process, else NAT_ERR_UNSUPPORTED prefixed with op */
    nat_status (*check_device)(nat_device dev, const char *op);
    nat_status (*device_name)(int index, char *buf, size_t cap);
    nat_status (*set_tf32)(int index, bool on);
    bool (*tf32)(int index);
    nat_status (*synchronize)(int index);
    /* unpooled device memory for core/alloc.c, and a synchronous copy (kind: NAT_CUDA_H2D/D2H/D2D) */
    void *(*raw_malloc)(int index, size_t bytes);
    void (*raw_free)(int index, void *p);
    nat_status (*raw_copy)(int index, void *dst, const void *src, size_t bytes, int kind);

    /* ---- copies and fills ---- */
    /* copy on the device's stream; returns when dst may be read (D2H) or src reused (H2D) */
    nat_status (*copy_bytes)(const nat_exec *ex, void *dst, const void *src, size_t bytes, int kind);
    nat_status (*memset0)(const nat_exec *ex, void *p, size_t bytes);
    /* dst (+)= src over `shape`, both strided (dst must not overlap src) */
    nat_status (*strided_copy)(const nat_exec *ex, float *dst, const int64_t *dst_stride, const float *src,
                               const int64_t *src_stride, int ndim, const int64_t *shape, bool add);
    nat_status (*fill)(const nat_exec *ex, float *p, int64_t n, float v);

    /* ---- elementwise ---- */
    /* y (+)= s · (a op b) over shape (y contiguous); a, b strided (0 on broadcast dims); SCALE: s · a.
     * Only SCALE takes s != 1 (the CPU kernel refuses another factor); y may alias a at the same strides */
    nat_status (*binary)(const nat_exec *ex, int op, bool acc, float *y, int nd, const int64_t *shape,
                         const float *a, const int64_t *a_stride, const float *b, const int64_t *b_stride, float s);
    nat_status (*gelu_forward)(const nat_exec *ex, const float *x, float *y, int64_t n);
    /* gx += g · gelu'(x) when acc, gx = g · gelu'(x) otherwise */
    nat_status (*gelu_backward)(const nat_exec *ex, const float *x, const float *g, float *gx, int64_t n, bool acc);

    /* ---- reductions ---- */
    /* out (+)= alpha · Σ x over the dims where keep[d] is false; out contiguous over the kept dims */
    nat_status (*reduce)(const nat_exec *ex, float *out, bool acc, float alpha, int nd, const int64_t *shape,
                         const float *x, const int64_t *x_stride, const bool *keep);
    /* *y = alpha · Σ x[0..n) (squares: Σ x²), y one device float; alpha in double (the CPU multiplies the
     * double sum by it, CUDA rounds it to float) */
    nat_status (*sum)(const nat_exec *ex, const float *x, int64_t n, bool squares, double alpha, float *y);
    /* gb[c] += Σ over o and i of g[o, c, i]: a bias gradient, g dense [outer, C, inner] */
    nat_status (*bias_grad)(const nat_exec *ex, const float *g, int64_t outer, int64_t C, int64_t inner, float *gb);
    /* linear's bias gradient, gb[o] += Σ_r g[r, o] over g dense [M, outf]: the same sum as bias_grad with
     * inner = 1, a separate entry because the CPU has always summed it in another order (bits kept) */
    nat_status (*linear_bias_grad)(const nat_exec *ex, const float *g, int64_t M, int64_t outf, float *gb);
    /* *host_acc += Σ over tensors of Σ t_i², in double, on the host (waits for the device). The CPU adds
     * tensor by tensor into *host_acc, CUDA the batch's total: each keeps the order it always had */
    nat_status (*sum_squares)(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns,
                              double *host_acc);

    /* ---- normalisation, rows of C contiguous elements ---- */
    nat_status (*layernorm_forward)(const nat_exec *ex, const float *x, const float *w, const float *b, float *y,
                                    double *mean, double *rstd, int64_t rows, int64_t C, float eps);
    nat_status (*layernorm_backward)(const nat_exec *ex, const float *x, const double *mean, const double *rstd,
                                     const float *w, const float *g, float *gx, float *gw, float *gb, int64_t rows,
                                     int64_t C);
    nat_status (*softmax_forward)(const nat_exec *ex, const float *x, float *y, int64_t rows, int64_t C);
    nat_status (*softmax_backward)(const nat_exec *ex, const float *y, const float *g, float *gx, int64_t rows,
                                   int64_t C);

    /* ---- losses, logits z [N, C] ---- */
    nat_status (*cross_entropy_forward)(const nat_exec *ex, const float *z, const int32_t *labels,
                                        const float *targets, int64_t N, int64_t C, float smoothing, double *lse,
                                        float *loss);
    nat_status (*cross_entropy_backward)(const nat_exec *ex, const float *z, const int32_t *labels,
                                         const float *targets, const double *lse, const float *g, int64_t N,
                                         int64_t C, float smoothing, float *gz, float *gt);

    /* ---- GEMM: C_i = op(A_i) op(B_i) + beta·C_i for `batch` problems, row-major ---- */
    nat_status (*gemm)(const nat_exec *ex, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                       int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch);
    /* the same with A and B rounded to prec (NAT_PREC_BF16 / NAT_PREC_F16), C f32 */
    nat_status (*gemm_lowp)(const nat_exec *ex, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                            const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                            int64_t batch);

    /* ---- convolution: y = conv(x, w); gx += bwd_data(w, gy); gw += bwd_filter(x, gy) ---- */
    /* y = conv(x, w) + b (b [O] optional) */
    nat_status (*conv2d_forward)(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                 const float *b, float *y);
    nat_status (*conv2d_backward_data)(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *w,
                                       const float *gy, float *gx);
    nat_status (*conv2d_backward_filter)(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x,
                                         const float *gy, float *gw);
    nat_status (*conv2d_forward_lowp)(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                      const float *w, const float *b, float *y);
    nat_status (*conv2d_backward_data_lowp)(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                            const float *w, const float *gy, float *gx);
    nat_status (*conv2d_backward_filter_lowp)(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g,
                                              const float *x, const float *gy, float *gw);
    /* gb[o] += Σ over n and p of gy [N, O, P]: the bias gradient (its own entry: the CPU's summation order) */
    nat_status (*conv2d_bias_grad)(const nat_exec *ex, const float *gy, int64_t N, int64_t O, int64_t P, float *gb);

    /* ---- global average pooling: x [N, C, S] (channels_last: [N, S, C]) -> y [N, C] = mean over S ---- */
    nat_status (*avg_pool_forward)(const nat_exec *ex, const float *x, float *y, int64_t N, int64_t C, int64_t S,
                                   bool channels_last);
    /* gx += g / S, spread over S */
    nat_status (*avg_pool_backward)(const nat_exec *ex, const float *g, float *gx, int64_t N, int64_t C, int64_t S,
                                    bool channels_last);

    /* ---- dropout with a hashed mask: kept when hash(seed, i) >= threshold ---- */
    nat_status (*dropout)(const nat_exec *ex, const float *x, float *y, bool acc, int64_t n, uint64_t seed,
                          uint64_t threshold, float scale);

    /* ---- optimizer updates, contiguous, rules of core/optim.c ---- */
    nat_status (*sgd_update)(const nat_exec *ex, float *p, const float *g, float *buf, int64_t n, float lr, float wd,
                             float mu, bool nesterov);
    nat_status (*adamw_update)(const nat_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                               float decay_mul, float w1, float beta2, float one_minus_beta2, float neg_step_size,
                               float bc2_sqrt, float eps);
    /* weight averaging: m = decay·m + w·x, contiguous, n elements */
    nat_status (*ema_update)(const nat_exec *ex, float *m, const float *x, int64_t n, float decay, float w);
};

/* What every CUDA request of a build without CUDA says. */
#define NAT_NO_CUDA "nat was built without CUDA (configure with -DNAT_CUDA=ON on a machine with nvcc)"

/* The table of dev's kind: the CPU's, the CUDA one in a CUDA build, else NULL. */
const nat_backend *nat_backend_for(nat_device dev);
extern const nat_backend nat_backend_cpu;

/* Sets NAT_ERR_UNSUPPORTED "<kernel>: no kernel on cuda:0 (nat was built without CUDA ...)" and returns it:
 * what NAT_KERNEL gives when dev has no table in this build or the table has no such entry. */
nat_status nat_exec_missing(nat_device dev, const char *kernel);

/* Runs kernel `entry` on ex's device: a nat_status expression (NAT_ERR_UNSUPPORTED when the device has no
 * such kernel in this build). ex is a const nat_exec *, evaluated more than once. */
#define NAT_KERNEL(ex, entry, ...)                                                                             \
    (nat_backend_for((ex)->dev) && nat_backend_for((ex)->dev)->entry                                           \
         ? nat_backend_for((ex)->dev)->entry((ex), __VA_ARGS__)                                                \
         : nat_exec_missing((ex)->dev, #entry))

/* CPU scratch for a kernel: from ex->ctx when there is one (released by nat_ctx_reset), else malloc'd;
 * give it back with nat_exec_scratch_release, which frees only what was malloc'd. */
nat_status nat_exec_scratch(const nat_exec *ex, size_t bytes, void **out);
void nat_exec_scratch_release(const nat_exec *ex, void *p);

/* NAT_OK when dev is usable in this build and process, else NAT_ERR_UNSUPPORTED saying why ("nat was built
 * without CUDA", "no CUDA device present", "cuda:3 does not exist"), prefixed with op. */
nat_status nat_device_check(nat_device dev, const char *op);

/* Raw device helpers for tools and tests that handle device buffers themselves (kernel lab, NA tests);
 * CUDA ordinal `dev`, through the CUDA table ("nat was built without CUDA" without one). */
nat_status nat_cuda_memcpy(int dev, void *dst, const void *src, size_t bytes, int kind);
nat_status nat_cuda_fill(int dev, float *p, int64_t n, float v);
nat_status nat_cuda_raw_copy(int dev, void *dst, const void *src, size_t bytes, int kind);
void *nat_cuda_raw_malloc(int dev, size_t bytes);
void nat_cuda_raw_free(int dev, void *p);

#ifdef __cplusplus
}
#endif
#endif
