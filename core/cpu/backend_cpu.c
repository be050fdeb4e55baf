/* core/cpu/backend_cpu.c — the CPU kernel table (core/backend.h): every entry is one of the nat_cpu_*
 * kernels of the files of core/cpu/ (declared in core/cpu/kernels.h). The CPU has no device entries: they are
 * reached only through the CUDA table (core/device.c). */
#include "core/cpu/kernels.h"

const nat_backend nat_backend_cpu = {
    .name = "cpu",

    .copy_bytes = nat_cpu_copy_bytes,
    .memset0 = nat_cpu_memset0,
    .strided_copy = nat_cpu_strided_copy,
    .fill = nat_cpu_fill,

    .binary = nat_cpu_binary,
    .gelu_forward = nat_cpu_gelu_forward,
    .gelu_backward = nat_cpu_gelu_backward,

    .reduce = nat_cpu_reduce,
    .bias_grad = nat_cpu_bias_grad,
    .sum = nat_cpu_sum,
    .sum_squares = nat_cpu_sum_squares,

    .layernorm_forward = nat_cpu_layernorm_forward,
    .layernorm_backward = nat_cpu_layernorm_backward,
    .softmax_forward = nat_cpu_softmax_forward,
    .softmax_backward = nat_cpu_softmax_backward,

    .gemm = nat_cpu_gemm,
    .gemm_lowp = nat_cpu_gemm_lowp,
    .linear_bias_grad = nat_cpu_linear_bias_grad,

    .cross_entropy_forward = nat_cpu_cross_entropy_forward,
    .cross_entropy_backward = nat_cpu_cross_entropy_backward,

    .conv2d_forward = nat_cpu_conv2d_forward,
    .conv2d_backward_data = nat_cpu_conv2d_backward_data,
    .conv2d_backward_filter = nat_cpu_conv2d_backward_filter,
    .conv2d_forward_lowp = nat_cpu_conv2d_forward_lowp,
    .conv2d_backward_data_lowp = nat_cpu_conv2d_backward_data_lowp,
    .conv2d_backward_filter_lowp = nat_cpu_conv2d_backward_filter_lowp,
    .conv2d_bias_grad = nat_cpu_conv2d_bias_grad,

    .avg_pool_forward = nat_cpu_avg_pool_forward,
    .avg_pool_backward = nat_cpu_avg_pool_backward,

    .dropout = nat_cpu_dropout,

    .sgd_update = nat_cpu_sgd_update,
    .adamw_update = nat_cpu_adamw_update,
    .ema_update = nat_cpu_ema_update,
};
