/* core/cuda/backend_cuda.c — the CUDA kernel table (core/backend.h): every entry is one of the nat_cu_*
 * functions of the .cu files of core/cuda/ (declared in core/cuda/kernels.h). Compiled only in a CUDA build; core/backend.c
 * hands this table out for NAT_DEV_CUDA devices. */
#include "core/backend.h"
#include "core/cuda/kernels.h"

/* A bias gradient is the general reduction keeping the middle dim. */
static nat_status bias_grad(const nat_exec *ex, const float *g, int64_t outer, int64_t C, int64_t inner, float *gb)
{
    int64_t shape[3] = {outer, C, inner}, stride[3] = {C * inner, inner, 1};
    bool keep[3] = {false, true, false};
    return nat_cu_reduce(ex, gb, true, 1.0f, 3, shape, g, stride, keep);
}

/* The table's alpha is double for the CPU's sake; the kernel scales in float. */
static nat_status sum(const nat_exec *ex, const float *x, int64_t n, bool squares, double alpha, float *y)
{
    return nat_cu_sum(ex, x, n, squares, (float)alpha, y);
}

/* The batch's total, added to the caller's running sum. */
static nat_status sum_squares(const nat_exec *ex, int count, const float *const *xs, const int64_t *ns, double *acc)
{
    double t = 0.0;
    NAT_TRY(nat_cu_sum_squares(ex, count, xs, ns, &t));
    *acc += t;
    return NAT_OK;
}

/* m = decay·m, then m += w·x: the CPU's two roundings (unless the kernel contracts to FMA). */
static nat_status ema_update(const nat_exec *ex, float *m, const float *x, int64_t n, float decay, float w)
{
    int64_t unit = 1;
    NAT_TRY(nat_cu_binary(ex, NAT_CUDA_SCALE, false, m, 1, &n, m, &unit, NULL, NULL, decay));
    return nat_cu_binary(ex, NAT_CUDA_SCALE, true, m, 1, &n, x, &unit, NULL, NULL, w);
}

static nat_status linear_bias_grad(const nat_exec *ex, const float *g, int64_t M, int64_t outf, float *gb)
{
    return bias_grad(ex, g, M, outf, 1, gb);
}

/* Pooling is a reduction over S (forward) and a stride-0 broadcast add (backward). */
static nat_status avg_pool_forward(const nat_exec *ex, const float *x, float *y, int64_t N, int64_t C, int64_t S,
                                   bool channels_last)
{
    int64_t dims[3] = {N, channels_last ? S : C, channels_last ? C : S};
    int64_t xs[3] = {S * C, dims[2], 1};
    bool keep[3] = {true, !channels_last, channels_last};
    return nat_cu_reduce(ex, y, false, 1.0f / (float)S, 3, dims, x, xs, keep);
}

static nat_status avg_pool_backward(const nat_exec *ex, const float *g, float *gx, int64_t N, int64_t C, int64_t S,
                                    bool last)
{
    /* gx viewed as [N, C, S] or [N, S, C] += inv · g [N, C] read with stride 0 along S. */
    int64_t shape[3] = {N, last ? S : C, last ? C : S};
    int64_t gs[3] = {C, last ? 0 : 1, last ? 1 : 0};
    return nat_cu_binary(ex, NAT_CUDA_SCALE, true, gx, 3, shape, g, gs, NULL, NULL, 1.0f / (float)S);
}

/* cuDNN convolves; the bias, y [N, O, P] += b read with strides (0, 1, 0), is the elementwise kernel. */
static nat_status conv_bias(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *b, float *y)
{
    if (!b)
        return NAT_OK;
    int64_t s3[3] = {g->N, g->O, g->Ho * g->Wo}, bs[3] = {0, 1, 0};
    return nat_cu_binary(ex, NAT_CUDA_SCALE, true, y, 3, s3, b, bs, NULL, NULL, 1.0f);
}

static nat_status conv2d_forward(const nat_exec *ex, const nat_cuda_conv_geom *g, const float *x, const float *w,
                                 const float *b, float *y)
{
    NAT_TRY(nat_cu_conv2d_forward(ex, g, x, w, y));
    return conv_bias(ex, g, b, y);
}

static nat_status conv2d_forward_lowp(const nat_exec *ex, int prec, const nat_cuda_conv_geom *g, const float *x,
                                      const float *w, const float *b, float *y)
{
    NAT_TRY(nat_cu_conv2d_forward_lowp(ex, prec, g, x, w, y));
    return conv_bias(ex, g, b, y);
}

static nat_status conv2d_bias_grad(const nat_exec *ex, const float *gy, int64_t N, int64_t O, int64_t P, float *gb)
{
    return bias_grad(ex, gy, N, O, P, gb);
}

const nat_backend nat_backend_cuda = {
    .name = "cuda",
    .device_count = nat_cu_device_count,
    .check_device = nat_cu_check_device,
    .device_name = nat_cu_device_name,
    .set_tf32 = nat_cu_set_tf32,
    .tf32 = nat_cu_tf32,
    .synchronize = nat_cu_synchronize,
    .raw_malloc = nat_cu_raw_malloc,
    .raw_free = nat_cu_raw_free,
    .raw_copy = nat_cu_raw_copy,

    .copy_bytes = nat_cu_memcpy,
    .memset0 = nat_cu_memset0,
    .strided_copy = nat_cu_strided_copy,
    .fill = nat_cu_fill,

    .binary = nat_cu_binary,
    .gelu_forward = nat_cu_gelu_forward,
    .gelu_backward = nat_cu_gelu_backward,

    .reduce = nat_cu_reduce,
    .bias_grad = bias_grad,
    .linear_bias_grad = linear_bias_grad,
    .sum = sum,
    .sum_squares = sum_squares,

    .layernorm_forward = nat_cu_layernorm_forward,
    .layernorm_backward = nat_cu_layernorm_backward,
    .softmax_forward = nat_cu_softmax_forward,
    .softmax_backward = nat_cu_softmax_backward,

    .cross_entropy_forward = nat_cu_cross_entropy_forward,
    .cross_entropy_backward = nat_cu_cross_entropy_backward,

    .gemm = nat_cu_gemm,
    .gemm_lowp = nat_cu_gemm_lowp,

    .conv2d_forward = conv2d_forward,
    .conv2d_backward_data = nat_cu_conv2d_backward_data,
    .conv2d_backward_filter = nat_cu_conv2d_backward_filter,
    .conv2d_forward_lowp = conv2d_forward_lowp,
    .conv2d_backward_data_lowp = nat_cu_conv2d_backward_data_lowp,
    .conv2d_backward_filter_lowp = nat_cu_conv2d_backward_filter_lowp,
    .conv2d_bias_grad = conv2d_bias_grad,

    .avg_pool_forward = avg_pool_forward,
    .avg_pool_backward = avg_pool_backward,

    .dropout = nat_cu_dropout,

    .sgd_update = nat_cu_sgd_update,
    .adamw_update = nat_cu_adamw_update,
    .ema_update = ema_update,
};
