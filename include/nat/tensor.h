/* nat/tensor.h — n-dimensional tensors: dtype, shape (up to 6 dims), strides, device, storage.
 *
 * Two lifetimes:
 *  - persistent tensors (parameters, gradients, optimizer state, data buffers) from nat_tensor_new;
 *    the caller owns them and frees them with nat_tensor_free;
 *  - step tensors (activations, temporaries, non-leaf gradients) made by ops inside a nat_ctx
 *    (nat/autograd.h); the context owns them and recycles them all at nat_ctx_reset.
 * Storage is reference-counted, so a view (reshape/permute/slice) made in a context may point into a
 * persistent tensor's storage. Element offsets and strides are in elements, not bytes.
 *
 * The struct is public so kernels can read it; treat its fields as read-only outside core/.
 */
#ifndef NAT_TENSOR_H
#define NAT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nat/alloc.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NAT_MAX_DIMS 6

typedef enum nat_dtype {
    NAT_F32 = 0,
    NAT_F16 = 1,  /* CUDA mixed precision */
    NAT_BF16 = 2, /* CUDA mixed precision */
    NAT_F64 = 3,  /* references */
    NAT_I32 = 4   /* labels and indices */
} nat_dtype;

typedef struct nat_storage {
    void *data;
    size_t nbytes;
    nat_device device;
    int refs;
    bool pooled;   /* the struct itself belongs to a context's pool, not the heap */
    bool external; /* data belongs to the caller (nat_tensor_wrap): never freed by nat */
} nat_storage;

struct nat_node;
struct nat_ctx;

typedef struct nat_tensor {
    nat_storage *storage;
    int64_t offset; /* first element, in elements */
    int ndim;
    int64_t shape[NAT_MAX_DIMS];
    int64_t stride[NAT_MAX_DIMS];
    nat_dtype dtype;
    nat_device device;
    bool requires_grad;
    struct nat_tensor *grad; /* persistent leaves: persistent, made on first accumulation; else step */
    struct nat_node *node;   /* the op that made it, when recorded on a tape */
    struct nat_ctx *ctx;     /* owning context; NULL for persistent tensors */
    const char *name;        /* optional, borrowed (parameter names in checkpoints) */
    uint32_t gen;            /* step tensors: ctx's step (generation) when made, so ops can refuse one
                                kept past nat_ctx_reset; 0 and unused for persistent tensors */
} nat_tensor;

size_t nat_dtype_size(nat_dtype t);
const char *nat_dtype_name(nat_dtype t);

/* New persistent, contiguous, zero-filled tensor. Owned by the caller: free with nat_tensor_free. */
nat_status nat_tensor_new(nat_tensor **out, nat_dtype dtype, nat_device dev, int ndim, const int64_t *shape);
/* Persistent contiguous tensor over memory the caller owns (borrowed: it must outlive the tensor and
 * any step tensor viewing it; nat never frees it). For embedding nat in programs with their own buffers. */
nat_status nat_tensor_wrap(nat_tensor **out, void *data, nat_dtype dtype, nat_device dev, int ndim, const int64_t *shape);
/* Frees a persistent tensor and its gradient. NULL is ignored. Step tensors must not be passed. */
void nat_tensor_free(nat_tensor *t);

int64_t nat_tensor_numel(const nat_tensor *t);
bool nat_tensor_is_contiguous(const nat_tensor *t);
/* Whether two tensors have the same ndim and sizes. */
bool nat_tensor_same_shape(const nat_tensor *a, const nat_tensor *b);
/* Pointer to element 0 of an f32 tensor on the CPU (borrowed). */
float *nat_tensor_f32(const nat_tensor *t);
/* Pointer to element 0, any dtype (borrowed). */
void *nat_tensor_data(const nat_tensor *t);
/* Writes "[2, 3, 4]" into buf (always NUL-terminated); returns buf. */
char *nat_shape_str(const nat_tensor *t, char *buf, size_t cap);
char *nat_dims_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* Copies n floats from src into a contiguous f32 CPU tensor (n must equal numel). */
nat_status nat_tensor_copy_from(nat_tensor *t, const float *src, int64_t n);
/* Copies a tensor's values, in logical row-major order, into dst (n must equal numel). */
nat_status nat_tensor_copy_to(const nat_tensor *t, float *dst, int64_t n);
/* Fills an f32 tensor with a constant. */
nat_status nat_tensor_fill(nat_tensor *t, float value);

#ifdef __cplusplus
}
#endif
#endif
