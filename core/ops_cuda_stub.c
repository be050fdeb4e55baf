/* core/ops_cuda_stub.c — stand-ins for core/ops_cuda_*.cu in a build without CUDA: every CUDA entry point
 * of core/ops_cuda.h and include/nat/cuda.h exists and says "nat was built without CUDA", so the op
 * dispatchers need no #ifdef. Compiled only when NAT_CUDA is off. */
#include "core/ops_cuda.h"
#include "nat/cuda.h"

#define NO_CUDA "nat was built without CUDA (configure with -DNAT_CUDA=ON on a machine with nvcc)"

static nat_status no_cuda(const char *what) { return nat_error(NAT_ERR_UNSUPPORTED, "%s: " NO_CUDA, what); }

nat_status nat_cuda_check_device(nat_device dev, const char *op)
{
    return nat_error(NAT_ERR_UNSUPPORTED, "%s: tensors are on %s but " NO_CUDA, op, nat_device_name(dev));
}

nat_status nat_cuda_memcpy(int dev, void *dst, const void *src, size_t bytes, int kind)
{
    (void)dev, (void)dst, (void)src, (void)bytes, (void)kind;
    return no_cuda("cuda memcpy");
}
nat_status nat_cuda_memset0(int dev, void *p, size_t bytes)
{
    (void)dev, (void)p, (void)bytes;
    return no_cuda("cuda memset");
}
nat_status nat_cuda_sync(int dev)
{
    (void)dev;
    return no_cuda("cuda synchronize");
}

nat_status nat_cuda_strided_copy(int dev, float *dst, const int64_t *dst_stride, const float *src,
                                 const int64_t *src_stride, int ndim, const int64_t *shape, bool add)
{
    (void)dev, (void)dst, (void)dst_stride, (void)src, (void)src_stride, (void)ndim, (void)shape, (void)add;
    return no_cuda("cuda strided copy");
}
nat_status nat_cuda_fill(int dev, float *p, int64_t n, float v)
{
    (void)dev, (void)p, (void)n, (void)v;
    return no_cuda("cuda fill");
}

nat_status nat_cuda_binary(int dev, int op, bool acc, float *y, int nd, const int64_t *shape, const float *a,
                           const int64_t *a_stride, const float *b, const int64_t *b_stride, float s)
{
    (void)dev, (void)op, (void)acc, (void)y, (void)nd, (void)shape, (void)a, (void)a_stride, (void)b, (void)b_stride,
        (void)s;
    return no_cuda("cuda elementwise");
}
nat_status nat_cuda_gelu_forward(int dev, const float *x, float *y, int64_t n)
{
    (void)dev, (void)x, (void)y, (void)n;
    return no_cuda("cuda gelu");
}
nat_status nat_cuda_gelu_backward(int dev, const float *x, const float *g, float *gx, int64_t n)
{
    (void)dev, (void)x, (void)g, (void)gx, (void)n;
    return no_cuda("cuda gelu backward");
}

nat_status nat_cuda_reduce(int dev, float *out, bool acc, float alpha, int nd, const int64_t *shape, const float *x,
                           const int64_t *x_stride, const bool *keep)
{
    (void)dev, (void)out, (void)acc, (void)alpha, (void)nd, (void)shape, (void)x, (void)x_stride, (void)keep;
    return no_cuda("cuda reduce");
}
nat_status nat_cuda_sum(int dev, const float *x, int64_t n, bool squares, float alpha, float *y)
{
    (void)dev, (void)x, (void)n, (void)squares, (void)alpha, (void)y;
    return no_cuda("cuda sum");
}
nat_status nat_cuda_sum_squares(int dev, int count, const float *const *xs, const int64_t *ns, double *host_out)
{
    (void)dev, (void)count, (void)xs, (void)ns;
    *host_out = 0.0;
    return no_cuda("cuda sum of squares");
}

nat_status nat_cuda_layernorm_forward(int dev, const float *x, const float *w, const float *b, float *y, double *mean,
                                      double *rstd, int64_t rows, int64_t C, float eps)
{
    (void)dev, (void)x, (void)w, (void)b, (void)y, (void)mean, (void)rstd, (void)rows, (void)C, (void)eps;
    return no_cuda("cuda layernorm");
}
nat_status nat_cuda_layernorm_backward(int dev, const float *x, const double *mean, const double *rstd,
                                       const float *w, const float *g, float *gx, float *gw, float *gb, int64_t rows,
                                       int64_t C)
{
    (void)dev, (void)x, (void)mean, (void)rstd, (void)w, (void)g, (void)gx, (void)gw, (void)gb, (void)rows, (void)C;
    return no_cuda("cuda layernorm backward");
}
nat_status nat_cuda_softmax_forward(int dev, const float *x, float *y, int64_t rows, int64_t C)
{
    (void)dev, (void)x, (void)y, (void)rows, (void)C;
    return no_cuda("cuda softmax");
}
nat_status nat_cuda_softmax_backward(int dev, const float *y, const float *g, float *gx, int64_t rows, int64_t C)
{
    (void)dev, (void)y, (void)g, (void)gx, (void)rows, (void)C;
    return no_cuda("cuda softmax backward");
}

nat_status nat_cuda_cross_entropy_forward(int dev, const float *z, const int32_t *labels, const float *targets,
                                          int64_t N, int64_t C, float smoothing, double *lse, float *loss)
{
    (void)dev, (void)z, (void)labels, (void)targets, (void)N, (void)C, (void)smoothing, (void)lse, (void)loss;
    return no_cuda("cuda cross_entropy");
}
nat_status nat_cuda_cross_entropy_backward(int dev, const float *z, const int32_t *labels, const float *targets,
                                           const double *lse, const float *g, int64_t N, int64_t C, float smoothing,
                                           float *gz, float *gt)
{
    (void)dev, (void)z, (void)labels, (void)targets, (void)lse, (void)g, (void)N, (void)C, (void)smoothing, (void)gz,
        (void)gt;
    return no_cuda("cuda cross_entropy backward");
}

nat_status nat_cuda_gemm(int dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t sa,
                         const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch)
{
    (void)dev, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)sa, (void)B, (void)sb, (void)beta, (void)C,
        (void)sc, (void)batch;
    return no_cuda("cuda gemm");
}

nat_status nat_cuda_gemm_lowp(int dev, int prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                              int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc, int64_t batch)
{
    (void)dev, (void)prec, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)sa, (void)B, (void)sb,
        (void)beta, (void)C, (void)sc, (void)batch;
    return no_cuda("cuda gemm (mixed precision)");
}
nat_status nat_cuda_round_to(int dev, int prec, const float *x, void *y, int64_t n)
{
    (void)dev, (void)prec, (void)x, (void)y, (void)n;
    return no_cuda("cuda round");
}
nat_status nat_cuda_widen(int dev, int prec, const void *x, float *y, int64_t n, bool acc)
{
    (void)dev, (void)prec, (void)x, (void)y, (void)n, (void)acc;
    return no_cuda("cuda widen");
}
nat_status nat_cuda_conv2d_forward_lowp(int dev, int prec, const nat_cuda_conv_geom *g, const float *x,
                                        const float *w, float *y)
{
    (void)dev, (void)prec, (void)g, (void)x, (void)w, (void)y;
    return no_cuda("cuda conv2d (mixed precision)");
}
nat_status nat_cuda_conv2d_backward_data_lowp(int dev, int prec, const nat_cuda_conv_geom *g, const float *w,
                                              const float *gy, float *gx)
{
    (void)dev, (void)prec, (void)g, (void)w, (void)gy, (void)gx;
    return no_cuda("cuda conv2d backward data (mixed precision)");
}
nat_status nat_cuda_conv2d_backward_filter_lowp(int dev, int prec, const nat_cuda_conv_geom *g, const float *x,
                                                const float *gy, float *gw)
{
    (void)dev, (void)prec, (void)g, (void)x, (void)gy, (void)gw;
    return no_cuda("cuda conv2d backward filter (mixed precision)");
}
nat_status nat_cuda_conv2d_forward(int dev, const nat_cuda_conv_geom *g, const float *x, const float *w, float *y)
{
    (void)dev, (void)g, (void)x, (void)w, (void)y;
    return no_cuda("cuda conv2d");
}
nat_status nat_cuda_conv2d_backward_data(int dev, const nat_cuda_conv_geom *g, const float *w, const float *gy,
                                         float *gx)
{
    (void)dev, (void)g, (void)w, (void)gy, (void)gx;
    return no_cuda("cuda conv2d backward data");
}
nat_status nat_cuda_conv2d_backward_filter(int dev, const nat_cuda_conv_geom *g, const float *x, const float *gy,
                                           float *gw)
{
    (void)dev, (void)g, (void)x, (void)gy, (void)gw;
    return no_cuda("cuda conv2d backward filter");
}

nat_status nat_cuda_dropout(int dev, const float *x, float *y, bool acc, int64_t n, uint64_t seed, uint64_t threshold,
                            float scale)
{
    (void)dev, (void)x, (void)y, (void)acc, (void)n, (void)seed, (void)threshold, (void)scale;
    return no_cuda("cuda dropout");
}

nat_status nat_cuda_sgd_update(int dev, float *p, const float *g, float *buf, int64_t n, float lr, float wd, float mu,
                               bool nesterov)
{
    (void)dev, (void)p, (void)g, (void)buf, (void)n, (void)lr, (void)wd, (void)mu, (void)nesterov;
    return no_cuda("cuda sgd");
}
nat_status nat_cuda_adamw_update(int dev, float *p, const float *g, float *m, float *v, int64_t n, float decay_mul,
                                 float w1, float beta2, float one_minus_beta2, float neg_step_size, float bc2_sqrt,
                                 float eps)
{
    (void)dev, (void)p, (void)g, (void)m, (void)v, (void)n, (void)decay_mul, (void)w1, (void)beta2,
        (void)one_minus_beta2, (void)neg_step_size, (void)bc2_sqrt, (void)eps;
    return no_cuda("cuda adamw");
}

/* ---- include/nat/cuda.h ---- */

int nat_cuda_available(void) { return 0; }
nat_status nat_cuda_device_name(int index, char *buf, size_t cap)
{
    if (buf && cap)
        buf[0] = '\0';
    (void)index;
    return no_cuda("cuda_device_name");
}
nat_status nat_cuda_set_tf32(int index, bool on)
{
    (void)index, (void)on;
    return no_cuda("cuda_set_tf32");
}
bool nat_cuda_tf32(int index)
{
    (void)index;
    return false;
}
nat_status nat_cuda_synchronize(int index)
{
    (void)index;
    return no_cuda("cuda_synchronize");
}
