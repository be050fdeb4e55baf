/* nat/autograd.h — step contexts and the define-by-run tape.
 *
 * A nat_ctx holds everything one forward/backward step makes: the step tensors (from a pool that is
 * kept across steps), their storage (from the caching allocator) and the tape of recorded ops. Ops take
 * the context as their first argument; when gradients are enabled in it and an input requires a
 * gradient, the op records a node (inputs, saved tensors, attributes, backward function) on the tape.
 * nat_backward walks the tape in reverse order, which is a valid topological order because ops are
 * recorded as they run. nat_ctx_reset recycles every step tensor and node: nothing of one step leaks into
 * the next, and a step that repeats the previous one's shapes makes no heap allocation.
 *
 * Parameter gradients accumulate (+=) across backward calls until zeroed (nat_zero_grad or the
 * optimizer's zero_grad), so micro-batches can be accumulated.
 */
#ifndef NAT_AUTOGRAD_H
#define NAT_AUTOGRAD_H

#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nat_ctx nat_ctx;
typedef struct nat_node nat_node;

/* Computes the gradients of a node's inputs from `grad_out` (the gradient of node->out) and adds them
 * with nat_grad_accumulate. Runs with gradient recording off. */
typedef nat_status (*nat_backward_fn)(nat_ctx *ctx, nat_node *node, const nat_tensor *grad_out);

/* What an op is, for the tape: a name for messages and its backward. Define one static const per op. */
typedef struct nat_op_def {
    const char *name;
    nat_backward_fn backward;
} nat_op_def;

#define NAT_NODE_MAX_IN 4
#define NAT_NODE_MAX_SAVED 6

struct nat_node {
    const nat_op_def *op;
    nat_tensor *out;
    int n_in;
    nat_tensor *in[NAT_NODE_MAX_IN];
    int n_saved;
    nat_tensor *saved[NAT_NODE_MAX_SAVED];
    double f[8];  /* float attributes (eps, scale, p, ...) */
    int64_t i[8]; /* integer attributes (axes, strides, ...) */
    void *extra;  /* op-owned pointer into step memory (e.g. a dropout mask), may be NULL */
};

/* New context for tensors on `dev`. Gradients are enabled by default. Owned by the caller. */
nat_status nat_ctx_new(nat_ctx **out, nat_device dev);
/* Frees the context and every step tensor it made. NULL is ignored. */
void nat_ctx_free(nat_ctx *ctx);
/* Ends a step: recycles every step tensor and node. Persistent tensors and their grads are untouched;
 * a persistent tensor's `node` link (never set) and `grad` stay valid. */
void nat_ctx_reset(nat_ctx *ctx);
nat_device nat_ctx_device(const nat_ctx *ctx);

/* Turns tape recording on or off (no-grad scope for evaluation); returns the previous setting. */
bool nat_ctx_set_grad_enabled(nat_ctx *ctx, bool enabled);
bool nat_ctx_grad_enabled(const nat_ctx *ctx);

/* Mixed precision of the GEMMs, convolutions and neighborhood attention a context runs (autocast):
 * F32 (the default) computes in float32; BF16 / F16 round those ops' inputs to bfloat16 / float16 and
 * accumulate in float32. Tensors, parameters (the master weights), reductions, norms and the loss stay
 * float32. F16 needs loss scaling (nat_loss_scaler in optim.h) to keep small gradients from flushing
 * to zero. Returns the previous setting. */
typedef enum nat_precision { NAT_PREC_F32 = 0, NAT_PREC_BF16 = 1, NAT_PREC_F16 = 2 } nat_precision;
nat_precision nat_ctx_set_precision(nat_ctx *ctx, nat_precision p);
nat_precision nat_ctx_precision(const nat_ctx *ctx);
/* Early release of step memory, for forwards that record nothing (inference): nat_ctx_mark returns a
 * mark; nat_ctx_release_since gives the memory of every step tensor made since that mark back to the
 * allocator, except `keep` (and whatever shares its storage, e.g. the tensor it is a view of). Those
 * tensors must not be used afterwards. With gradients enabled it refuses (NAT_ERR_INVALID_ARG): a
 * recorded op may have saved any of them for its backward. This is what keeps an inference forward's
 * peak near one block's activations instead of the whole network's. */
int64_t nat_ctx_mark(const nat_ctx *ctx);
nat_status nat_ctx_release_since(nat_ctx *ctx, int64_t mark, const nat_tensor *keep);
/* Number of nodes on the tape. */
int nat_ctx_tape_length(const nat_ctx *ctx);

/* New contiguous step tensor (uninitialised values) owned by ctx. */
nat_status nat_ctx_empty(nat_ctx *ctx, nat_tensor **out, nat_dtype dtype, int ndim, const int64_t *shape);
/* Same, filled with zeros. */
nat_status nat_ctx_zeros(nat_ctx *ctx, nat_tensor **out, nat_dtype dtype, int ndim, const int64_t *shape);
/* New step tensor header sharing `base`'s storage (a view); shape/stride/offset are the caller's. */
nat_status nat_ctx_view(nat_ctx *ctx, nat_tensor **out, const nat_tensor *base, int ndim, const int64_t *shape,
                        const int64_t *stride, int64_t offset);
/* Step memory that lives until nat_ctx_reset (for op-private buffers such as dropout masks). */
nat_status nat_ctx_scratch(nat_ctx *ctx, size_t bytes, void **out);

/* Whether an op with these inputs must be recorded (grad enabled and some input requires grad). */
bool nat_ctx_needs_grad(const nat_ctx *ctx, int n, nat_tensor *const *inputs);
/* Records `out` as made by `op` from `inputs`; marks out->requires_grad. Returns the node in *node_out
 * (to fill saved tensors and attributes), or NULL when no gradient is needed. Fails when op->backward
 * is NULL: an op cannot be recorded without its backward. */
nat_status nat_ctx_record(nat_ctx *ctx, const nat_op_def *op, nat_tensor *out, int n_in, nat_tensor *const *inputs,
                          nat_node **node_out);

/* Runs the backward pass from a scalar (one-element) `loss`, seeding d loss = 1. */
nat_status nat_backward(nat_ctx *ctx, nat_tensor *loss);
/* Same from an arbitrary output with a given gradient (same shape as `out`). */
nat_status nat_backward_from(nat_ctx *ctx, nat_tensor *out, const nat_tensor *grad_out);
/* The backward of only the nodes recorded since tape position `from` (nat_ctx_tape_length before they
 * were recorded), which are then dropped from the tape; the nodes before stay. For an op that records a
 * sub-graph inside its own backward (nat_recompute). */
nat_status nat_backward_since(nat_ctx *ctx, int from, nat_tensor *out, const nat_tensor *grad_out);

/* Gradient-ready notification, for data parallelism that sends gradients while the backward goes on
 * (train/dist_nccl.cu). From the next backward on, every outermost walk of ctx (nat_backward,
 * nat_backward_from; not the nested walks of nat_recompute) calls fn(user, i) once for each params[i],
 * as soon as no node left on the tape reads params[i]: its gradient is then final for this walk (or
 * absent: the parameter got none). Leaves read only inside a nat_recompute block, or not at all, are
 * called at the end of the walk, in index order. The order of the calls depends on the tape only, so
 * two processes running the same graph see the same order. A non-OK status from fn stops the walk and
 * is returned by it. params are borrowed (they must outlive the watch); n == 0 or fn NULL removes the
 * watch. The walk itself allocates nothing for it. */
typedef nat_status (*nat_grad_ready_fn)(void *user, int index);
nat_status nat_ctx_watch_grads(nat_ctx *ctx, nat_tensor *const *params, int n, nat_grad_ready_fn fn, void *user);

/* Activation checkpointing. y = fn(x) is computed with the tape off, everything fn made but y is given
 * back at once, and one node is recorded; its backward runs fn again on x with the tape on, under the
 * precision of the first run, backpropagates through that, and gives the recomputation's memory back.
 * A training step then holds one input per checkpointed call instead of every intermediate, for one
 * more forward of fn. fn must be a function of x, `user` and persistent tensors (parameters) only, and
 * draw the same random numbers both times (keep an RNG state in `user`; `recompute` tells the second
 * call, which must not advance anything outside). `user` (user_size bytes) is copied for the backward.
 * `anchor` (may be NULL): a parameter fn uses, so the call is recorded even when x needs no gradient.
 * Without a gradient to record (tape off, nothing requires one) fn simply runs once. */
typedef nat_status (*nat_recompute_fn)(nat_ctx *ctx, nat_tensor *x, void *user, bool recompute, nat_tensor **y);
nat_status nat_recompute(nat_ctx *ctx, nat_recompute_fn fn, void *user, size_t user_size, nat_tensor *x,
                         nat_tensor *anchor, nat_tensor **y);

/* t->grad += g (g has t's shape). Creates t->grad on first use: persistent for persistent tensors, a
 * step tensor otherwise. Does nothing when t does not require a gradient. */
nat_status nat_grad_accumulate(nat_ctx *ctx, nat_tensor *t, const nat_tensor *g);
/* The gradient buffer of t for a backward to accumulate into directly (e.g. sgemm with beta = 1),
 * created zero-filled on first use like nat_grad_accumulate does. *grad is NULL when t does not require
 * a gradient: the backward then skips that input. */
nat_status nat_grad_get(nat_ctx *ctx, nat_tensor *t, nat_tensor **grad);
/* Same, for a backward that can either write or accumulate (sgemm's beta): when t is a step tensor
 * without a gradient yet, the buffer is made uninitialised and *fresh is true — the backward must then
 * write every element (beta = 0), which saves a zero fill and a read. Otherwise *fresh is false. */
nat_status nat_grad_buffer(nat_ctx *ctx, nat_tensor *t, nat_tensor **grad, bool *fresh);
/* Zeroes a persistent tensor's gradient (keeps the buffer). */
void nat_zero_grad(nat_tensor *t);

/* Marks a persistent tensor as a parameter whose gradient is wanted. */
void nat_set_requires_grad(nat_tensor *t, bool on);

#ifdef __cplusplus
}
#endif
#endif
