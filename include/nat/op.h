/* nat/op.h — for op authors: what an op implementation needs besides the public API. In-place fills and
 * accumulation used by autograd, argument checks with messages, the contiguous-input helper, broadcast
 * reduction, and the kernel table of a device (core/backend.h: NAT_EXEC_CTX + NAT_KERNEL).
 *
 * An op checks its arguments (nat_check_f32_dev), makes its step tensors, records the tape, and runs
 * its kernels through the table of the context's device; it never branches on the device itself.
 * This header belongs to the source tree (it includes core/ headers), not to an installed API. */
#ifndef NAT_OP_H
#define NAT_OP_H

#include "core/tensor_internal.h" /* nat_fill_zero, nat_fill_value, nat_add_into */
#include "nat/ops.h"

/* Fails with a clear message unless t is an f32 tensor on ctx's device, and that device is the CPU: for
 * ops that have no CUDA kernel yet (a CUDA tensor gets "no CUDA kernel for <op> yet"). */
nat_status nat_check_f32(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg);
/* The same for ops with kernels on several devices: t may be on a CUDA device when ctx runs there, and
 * that device must be usable in this build and process ("nat was built without CUDA", "no CUDA device
 * present", ...). */
nat_status nat_check_f32_dev(const nat_ctx *ctx, const nat_tensor *t, const char *op, const char *arg);
/* The CUDA ordinal ctx runs on, or -1 for the CPU (for layers that pick their own path by device). */
int nat_ctx_cuda_index(const nat_ctx *ctx);
/* Returns x itself when contiguous, else a contiguous copy made in ctx WITHOUT recording on the tape
 * (for kernels that need dense input; the op records the original x). */
nat_status nat_dense(nat_ctx *ctx, const nat_tensor *x, nat_tensor **out);
/* The gradient `g` of an op's output reduced (summed) to `shape` (undoing broadcasting). */
nat_status nat_reduce_to_shape(nat_ctx *ctx, const nat_tensor *g, int ndim, const int64_t *shape, nat_tensor **out);

#endif
