/* core/tensor_internal.h — helpers shared by core/ files: storage reference counting, the
 * contiguous-stride computation and whole-tensor fills. Not part of the public API. */
#ifndef NAT_CORE_TENSOR_INTERNAL_H
#define NAT_CORE_TENSOR_INTERNAL_H

#include "nat/tensor.h"

void nat_storage_retain(nat_storage *s);
/* Drops one reference; frees the data (back to the allocator cache) at zero, and the struct itself
 * unless it belongs to a context pool. */
void nat_storage_release(nat_storage *s);
/* Row-major strides for `shape`. */
void nat_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
int64_t nat_shape_numel(int ndim, const int64_t *shape);
nat_status nat_check_dims(int ndim, const int64_t *shape, const char *what);

struct nat_ctx;
/* core/autograd.c: the context's current step (generation), advanced by every nat_ctx_reset. A step
 * tensor whose `gen` differs belongs to a step that has ended. */
uint32_t nat_ctx_generation(const struct nat_ctx *ctx);

/* core/tensor_fill.c: whole-tensor fills and accumulation on the tensor's device. */
nat_status nat_fill_zero(nat_tensor *t);
nat_status nat_fill_value(nat_tensor *t, float v);
/* dst += src, same shape; dst contiguous, src any strides. */
nat_status nat_add_into(nat_tensor *dst, const nat_tensor *src);
/* dst = src (same shape, dst contiguous, same device; f32). */
nat_status nat_copy_into(nat_tensor *dst, const nat_tensor *src);

#endif
