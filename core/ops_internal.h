/* core/ops_internal.h — helpers shared by op implementations in core/: in-place fills and
 * accumulation used by autograd, shape checks with messages, and the contiguous-input helper.
 * Not part of the public API. */
#ifndef NAT_CORE_OPS_INTERNAL_H
#define NAT_CORE_OPS_INTERNAL_H

#include "nat/ops.h"

nat_status nat_fill_zero(nat_tensor *t);
nat_status nat_fill_value(nat_tensor *t, float v);
/* dst += src, same shape; dst contiguous, src any strides. */
nat_status nat_add_into(nat_tensor *dst, const nat_tensor *src);

/* Fails with a clear message unless t is an f32 tensor on ctx's device, and that device is the CPU: for
 * ops that have no CUDA kernel yet (a CUDA tensor gets "no CUDA kernel for <op> yet"). */
nat_status nat_check_f32(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg);
/* The same for ops with a CUDA path (core/ops_cuda.h): t may be on a CUDA device when ctx runs there, and
 * that device must be usable in this build and process ("nat was built without CUDA", "no CUDA device
 * present", ...). */
nat_status nat_check_f32_dev(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg);
/* The CUDA ordinal ctx runs on, or -1 for the CPU: the one device test each dispatcher makes. */
int nat_ctx_cuda_index(const nat_ctx *ctx);
/* Returns x itself when contiguous, else a contiguous copy made in ctx WITHOUT recording on the tape
 * (for kernels that need dense input; the op records the original x). */
nat_status nat_dense(nat_ctx *ctx, const nat_tensor *x, nat_tensor **out);
/* The gradient `g` of an op's output reduced (summed) to `shape` (undoing broadcasting). */
nat_status nat_reduce_to_shape(nat_ctx *ctx, const nat_tensor *g, int ndim, const int64_t *shape, nat_tensor **out);

#endif
