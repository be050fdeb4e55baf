/* core/autograd.c — step contexts (pooled tensors, nodes, scratch) and the tape walk
 * (see include/nat/autograd.h).
 *
 * Pools grow in chunks taken from the counting allocator and are never shrunk, so after the first step
 * of a given shape every header, node and buffer is reused: the no-allocation test relies on it.
 *
 * Tensor headers come from two banks used on alternate steps, and every step tensor is stamped with the
 * step (generation) it was made in: a tensor kept past nat_ctx_reset is then still a header of its own,
 * not the next step's tensor in the same slot, and ops refuse it (nat_check_f32_dev). A tensor kept past
 * two resets shares a slot again and cannot be told apart; one reset is the common mistake (a loss or
 * logits kept for logging). The second bank costs headers only; it grows with the first, so the first
 * step still sizes everything (tests measure that the second step allocates nothing).
 */
#include "nat/autograd.h"

#include <string.h>

#include "core/check.h"
#include "core/grad_watch.h"
#include "core/tensor_internal.h"

#define POOL_CHUNK 256

typedef struct pool {
    void **chunks;
    int n_chunks, cap_chunks;
    size_t elem;
    int64_t used;
} pool;

typedef struct scratch_block {
    void *p;
    size_t n;
} scratch_block;

struct nat_ctx {
    nat_device dev;
    bool grad_enabled;
    nat_precision precision;
    pool tensors, storages, nodes;
    pool tensors_prev; /* the other bank: the headers of the previous step, left untouched */
    uint32_t gen;      /* the current step; stamped on step tensors */
    nat_node **tape;
    int tape_len, tape_cap;
    scratch_block *scratch;
    int n_scratch, cap_scratch;
    nat_grad_watch *watch; /* nat_ctx_watch_grads, or NULL */
    int walk_depth;        /* nested walks (nat_recompute) do not call the watch */
};

/* Grows an array through the counting allocator (so the no-allocation test sees it). */
static nat_status grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return NAT_OK;
    int ncap = *cap ? *cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    void *p;
    NAT_TRY(nat_mem_alloc(NAT_CPU, (size_t)ncap * elem, &p));
    if (*arr) {
        memcpy(p, *arr, (size_t)*cap * elem);
        nat_mem_free(NAT_CPU, *arr, (size_t)*cap * elem);
    }
    *arr = p;
    *cap = ncap;
    return NAT_OK;
}

static nat_status pool_add_chunk(pool *p)
{
    NAT_TRY(grow((void **)&p->chunks, &p->cap_chunks, p->n_chunks + 1, sizeof(void *)));
    NAT_TRY(nat_mem_alloc(NAT_CPU, p->elem * POOL_CHUNK, &p->chunks[p->n_chunks]));
    p->n_chunks++;
    return NAT_OK;
}

static nat_status pool_get(pool *p, void **out)
{
    int chunk = (int)(p->used / POOL_CHUNK), slot = (int)(p->used % POOL_CHUNK);
    if (chunk == p->n_chunks)
        NAT_TRY(pool_add_chunk(p));
    void *e = (char *)p->chunks[chunk] + (size_t)slot * p->elem;
    memset(e, 0, p->elem);
    p->used++;
    *out = e;
    return NAT_OK;
}

/* Gives `p` as many chunks as `like` has (the second tensor bank keeps pace with the first). */
static nat_status pool_match(pool *p, const pool *like)
{
    while (p->n_chunks < like->n_chunks)
        NAT_TRY(pool_add_chunk(p));
    return NAT_OK;
}

static void *pool_at(const pool *p, int64_t i)
{
    return (char *)p->chunks[i / POOL_CHUNK] + (size_t)(i % POOL_CHUNK) * p->elem;
}

static void pool_free(pool *p)
{
    for (int i = 0; i < p->n_chunks; i++)
        nat_mem_free(NAT_CPU, p->chunks[i], p->elem * POOL_CHUNK);
    nat_mem_free(NAT_CPU, p->chunks, (size_t)p->cap_chunks * sizeof(void *));
    memset(p, 0, sizeof *p);
}

nat_status nat_ctx_new(nat_ctx **out, nat_device dev)
{
    NAT_CHECK_ARG(out, "nat_ctx_new", "out");
    *out = NULL;
    nat_ctx *ctx;
    NAT_TRY(nat_mem_alloc(NAT_CPU, sizeof *ctx, (void **)&ctx));
    memset(ctx, 0, sizeof *ctx);
    ctx->dev = dev;
    ctx->grad_enabled = true;
    ctx->tensors.elem = ctx->tensors_prev.elem = sizeof(nat_tensor);
    ctx->storages.elem = sizeof(nat_storage);
    ctx->nodes.elem = sizeof(nat_node);
    *out = ctx;
    return NAT_OK;
}

void nat_ctx_reset(nat_ctx *ctx)
{
    if (!ctx) /* like free(NULL) */
        return;
    for (int64_t i = 0; i < ctx->tensors.used; i++) {
        nat_tensor *t = pool_at(&ctx->tensors, i);
        nat_storage_release(t->storage);
        t->storage = NULL;
    }
    for (int i = 0; i < ctx->n_scratch; i++)
        nat_mem_free(NAT_CPU, ctx->scratch[i].p, ctx->scratch[i].n);
    ctx->n_scratch = 0;
    /* Swap the banks: the next step hands out the other bank's headers, so this step's stay as they are
     * (storage NULL, stamped with this generation) for the staleness check. */
    pool ended = ctx->tensors;
    ctx->tensors = ctx->tensors_prev;
    ctx->tensors_prev = ended;
    ctx->tensors.used = ctx->storages.used = ctx->nodes.used = 0;
    ctx->tape_len = 0;
    ctx->gen++;
}

uint32_t nat_ctx_generation(const nat_ctx *ctx) { return ctx->gen; }

int64_t nat_ctx_mark(const nat_ctx *ctx) { return ctx->tensors.used; }

nat_status nat_ctx_release_since(nat_ctx *ctx, int64_t mark, const nat_tensor *keep)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_release_since", "ctx");
    if (ctx->grad_enabled)
        return nat_error(NAT_ERR_INVALID_ARG, "ctx: releasing step tensors needs gradients disabled (a recorded op "
                                              "may have saved them for backward)");
    if (mark < 0 || mark > ctx->tensors.used)
        return nat_error(NAT_ERR_INVALID_ARG, "ctx: release mark %lld outside 0..%lld", (long long)mark,
                         (long long)ctx->tensors.used);
    for (int64_t i = mark; i < ctx->tensors.used; i++) {
        nat_tensor *t = pool_at(&ctx->tensors, i);
        if (t == keep || !t->storage)
            continue;
        nat_storage_release(t->storage); /* freed once no view of it (keep's included) holds it */
        t->storage = NULL;
    }
    return NAT_OK;
}

void nat_ctx_free(nat_ctx *ctx)
{
    if (!ctx)
        return;
    nat_ctx_reset(ctx);
    pool_free(&ctx->tensors);
    pool_free(&ctx->tensors_prev);
    pool_free(&ctx->storages);
    pool_free(&ctx->nodes);
    nat_mem_free(NAT_CPU, ctx->tape, (size_t)ctx->tape_cap * sizeof(nat_node *));
    nat_mem_free(NAT_CPU, ctx->scratch, (size_t)ctx->cap_scratch * sizeof(scratch_block));
    nat_grad_watch_free(ctx->watch);
    nat_mem_free(NAT_CPU, ctx, sizeof *ctx);
}

nat_device nat_ctx_device(const nat_ctx *ctx) { return ctx->dev; }

bool nat_ctx_set_grad_enabled(nat_ctx *ctx, bool enabled)
{
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool nat_ctx_grad_enabled(const nat_ctx *ctx) { return ctx->grad_enabled; }

nat_precision nat_ctx_set_precision(nat_ctx *ctx, nat_precision p)
{
    nat_precision prev = ctx->precision;
    ctx->precision = p;
    return prev;
}

nat_precision nat_ctx_precision(const nat_ctx *ctx) { return ctx->precision; }
int nat_ctx_tape_length(const nat_ctx *ctx) { return ctx->tape_len; }

static nat_status new_header(nat_ctx *ctx, nat_tensor **out, nat_dtype dtype, int ndim, const int64_t *shape)
{
    NAT_TRY(nat_check_dims(ndim, shape, "tensor"));
    nat_tensor *t;
    NAT_TRY(pool_get(&ctx->tensors, (void **)&t));
    NAT_TRY(pool_match(&ctx->tensors_prev, &ctx->tensors));
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    nat_contiguous_strides(ndim, shape, t->stride);
    t->dtype = dtype;
    t->device = ctx->dev;
    t->ctx = ctx;
    t->gen = ctx->gen;
    *out = t;
    return NAT_OK;
}

nat_status nat_ctx_empty(nat_ctx *ctx, nat_tensor **out, nat_dtype dtype, int ndim, const int64_t *shape)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_empty", "ctx");
    NAT_CHECK_ARG(out, "nat_ctx_empty", "out");
    if (ndim > 0)
        NAT_CHECK_ARG(shape, "nat_ctx_empty", "shape");
    nat_tensor *t;
    NAT_TRY(new_header(ctx, &t, dtype, ndim, shape));
    nat_storage *s;
    NAT_TRY(pool_get(&ctx->storages, (void **)&s));
    s->nbytes = (size_t)nat_shape_numel(ndim, shape) * nat_dtype_size(dtype);
    s->device = ctx->dev;
    s->pooled = true;
    NAT_TRY(nat_mem_alloc(ctx->dev, s->nbytes, &s->data));
    s->refs = 1;
    t->storage = s;
    *out = t;
    return NAT_OK;
}

nat_status nat_ctx_zeros(nat_ctx *ctx, nat_tensor **out, nat_dtype dtype, int ndim, const int64_t *shape)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_zeros", "ctx");
    NAT_CHECK_ARG(out, "nat_ctx_zeros", "out");
    NAT_TRY(nat_ctx_empty(ctx, out, dtype, ndim, shape));
    return nat_fill_zero(*out);
}

nat_status nat_ctx_view(nat_ctx *ctx, nat_tensor **out, const nat_tensor *base, int ndim, const int64_t *shape,
                        const int64_t *stride, int64_t offset)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_view", "ctx");
    NAT_CHECK_ARG(out, "nat_ctx_view", "out");
    NAT_CHECK_ARG(base, "nat_ctx_view", "base");
    if (ndim > 0)
        NAT_CHECK_ARG(shape, "nat_ctx_view", "shape");
    if (ndim > 0)
        NAT_CHECK_ARG(stride, "nat_ctx_view", "stride");
    nat_tensor *t;
    NAT_TRY(new_header(ctx, &t, base->dtype, ndim, shape));
    memcpy(t->stride, stride, (size_t)ndim * sizeof *stride);
    t->offset = offset;
    t->device = base->device;
    t->storage = base->storage;
    nat_storage_retain(t->storage);
    *out = t;
    return NAT_OK;
}

nat_status nat_ctx_scratch(nat_ctx *ctx, size_t bytes, void **out)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_scratch", "ctx");
    NAT_CHECK_ARG(out, "nat_ctx_scratch", "out");
    NAT_TRY(grow((void **)&ctx->scratch, &ctx->cap_scratch, ctx->n_scratch + 1, sizeof(scratch_block)));
    NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, out));
    ctx->scratch[ctx->n_scratch++] = (scratch_block){*out, bytes};
    return NAT_OK;
}

bool nat_ctx_needs_grad(const nat_ctx *ctx, int n, nat_tensor *const *inputs)
{
    if (!ctx->grad_enabled)
        return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad)
            return true;
    return false;
}

nat_status nat_ctx_record(nat_ctx *ctx, const nat_op_def *op, nat_tensor *out, int n_in, nat_tensor *const *inputs,
                          nat_node **node_out)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_record", "ctx");
    NAT_CHECK_ARG(out, "nat_ctx_record", "out");
    NAT_CHECK_ARG(node_out, "nat_ctx_record", "node_out");
    *node_out = NULL;
    if (!op || !op->backward)
        return nat_error(NAT_ERR_INTERNAL, "op '%s' has no backward and cannot be recorded on the tape",
                         op && op->name ? op->name : "?");
    if (n_in > NAT_NODE_MAX_IN)
        return nat_error(NAT_ERR_INTERNAL, "op '%s' records %d inputs (at most %d)", op->name, n_in, NAT_NODE_MAX_IN);
    if (!nat_ctx_needs_grad(ctx, n_in, inputs))
        return NAT_OK;
    nat_node *node;
    NAT_TRY(pool_get(&ctx->nodes, (void **)&node));
    NAT_TRY(grow((void **)&ctx->tape, &ctx->tape_cap, ctx->tape_len + 1, sizeof(nat_node *)));
    node->op = op;
    node->out = out;
    node->n_in = n_in;
    for (int i = 0; i < n_in; i++)
        node->in[i] = inputs[i];
    ctx->tape[ctx->tape_len++] = node;
    out->requires_grad = true;
    out->node = node;
    *node_out = node;
    return NAT_OK;
}

void nat_set_requires_grad(nat_tensor *t, bool on)
{
    if (t)
        t->requires_grad = on;
}

void nat_zero_grad(nat_tensor *t)
{
    if (t && t->grad)
        nat_fill_zero(t->grad);
}

nat_status nat_grad_get(nat_ctx *ctx, nat_tensor *t, nat_tensor **grad)
{
    NAT_CHECK_ARG(grad, "nat_grad_get", "grad");
    *grad = NULL;
    if (!t || !t->requires_grad)
        return NAT_OK;
    if (!t->grad) {
        if (t->ctx)
            NAT_TRY(nat_ctx_zeros(ctx, &t->grad, t->dtype, t->ndim, t->shape));
        else
            NAT_TRY(nat_tensor_new(&t->grad, t->dtype, t->device, t->ndim, t->shape));
    }
    *grad = t->grad;
    return NAT_OK;
}

nat_status nat_grad_buffer(nat_ctx *ctx, nat_tensor *t, nat_tensor **grad, bool *fresh)
{
    NAT_CHECK_ARG(fresh, "nat_grad_buffer", "fresh");
    *fresh = false;
    if (t && t->requires_grad && !t->grad && t->ctx) {
        NAT_CHECK_ARG(grad, "nat_grad_buffer", "grad");
        NAT_TRY(nat_ctx_empty(ctx, &t->grad, t->dtype, t->ndim, t->shape));
        *grad = t->grad;
        *fresh = true;
        return NAT_OK;
    }
    return nat_grad_get(ctx, t, grad);
}

nat_status nat_grad_accumulate(nat_ctx *ctx, nat_tensor *t, const nat_tensor *g)
{
    NAT_CHECK_ARG(ctx, "nat_grad_accumulate", "ctx");
    NAT_CHECK_ARG(g, "nat_grad_accumulate", "g");
    if (!t || !t->requires_grad)
        return NAT_OK;
    if (!nat_tensor_same_shape(t, g)) {
        char a[96], b[96];
        return nat_error(NAT_ERR_INTERNAL, "gradient of shape %s for a tensor of shape %s", nat_shape_str(g, a, sizeof a),
                         nat_shape_str(t, b, sizeof b));
    }
    /* The first contribution to a step tensor's gradient is copied into a new buffer rather than added
     * to zeros: one pass instead of a fill and a read-modify-write (most intermediate gradients have
     * exactly one contribution). */
    nat_tensor *grad;
    bool fresh;
    NAT_TRY(nat_grad_buffer(ctx, t, &grad, &fresh));
    return fresh ? nat_copy_into(grad, g) : nat_add_into(grad, g);
}

nat_status nat_backward_since(nat_ctx *ctx, int from, nat_tensor *out, const nat_tensor *grad_out)
{
    NAT_CHECK_ARG(ctx, "nat_backward_since", "ctx");
    NAT_CHECK_ARG(out, "nat_backward_since", "out");
    NAT_CHECK_ARG(grad_out, "nat_backward_since", "grad_out");
    if (from < 0 || from > ctx->tape_len)
        return nat_error(NAT_ERR_INVALID_ARG, "backward: tape position %d outside 0..%d", from, ctx->tape_len);
    if (!out->requires_grad)
        return nat_error(NAT_ERR_INVALID_ARG, "backward: the output does not require a gradient (no parameter "
                                              "with requires_grad reached it, or it was computed with grad off)");
    if (out->ctx && out->gen != nat_ctx_generation(out->ctx))
        return nat_error(NAT_ERR_INVALID_ARG, "backward: the output belongs to a step that nat_ctx_reset has ended");
    if (out->node) {
        /* Its node must still be on the unwalked part of the tape. Each walk pops what it walked, so a
         * node missing there was consumed by an earlier backward; walking nothing and returning OK would
         * leave the gradients of one pass silently. Searched from the end: the output is usually last. */
        int i = ctx->tape_len - 1;
        while (i >= from && ctx->tape[i] != out->node)
            i--;
        if (i < from)
            return nat_error(NAT_ERR_INVALID_ARG, "backward: the tape that computed this output was already used by "
                                                  "a backward (a tape is walked once; run the forward again)");
    }
    nat_grad_watch *watch = ctx->walk_depth == 0 ? ctx->watch : NULL;
    if (watch)
        nat_grad_watch_plan(watch, ctx->tape + from, ctx->tape_len - from);
    ctx->walk_depth++;
    bool prev = nat_ctx_set_grad_enabled(ctx, false);
    nat_status s = nat_grad_accumulate(ctx, out, grad_out);
    for (int i = ctx->tape_len - 1; i >= from && s == NAT_OK; i--) {
        nat_node *node = ctx->tape[i];
        nat_tensor *t = node->out;
        if (t->grad) {
            s = node->op->backward(ctx, node, t->grad);
            if (s != NAT_OK) {
                nat_error_context(s, "backward of %s", node->op->name);
                break;
            }
            /* An intermediate's gradient is dead once its producer has consumed it: recycle the memory
             * now rather than at the end of the step, which keeps backward's peak near forward's. */
            nat_storage_release(t->grad->storage);
            t->grad->storage = NULL;
            t->grad = NULL;
        }
        if (watch)
            s = nat_grad_watch_passed(watch, i - from);
    }
    if (watch && s == NAT_OK)
        s = nat_grad_watch_finish(watch);
    /* The tape is spent: a second backward over it would double-count. */
    ctx->tape_len = from;
    ctx->walk_depth--;
    nat_ctx_set_grad_enabled(ctx, prev);
    return s;
}

nat_status nat_ctx_watch_grads(nat_ctx *ctx, nat_tensor *const *params, int n, nat_grad_ready_fn fn, void *user)
{
    NAT_CHECK_ARG(ctx, "nat_ctx_watch_grads", "ctx");
    if (ctx->walk_depth)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_ctx_watch_grads: called during a backward walk");
    nat_grad_watch *w;
    NAT_TRY(nat_grad_watch_new(params, n, fn, user, &w));
    nat_grad_watch_free(ctx->watch);
    ctx->watch = w;
    return NAT_OK;
}

nat_status nat_backward_from(nat_ctx *ctx, nat_tensor *out, const nat_tensor *grad_out)
{
    NAT_CHECK_ARG(ctx, "nat_backward_from", "ctx");
    NAT_CHECK_ARG(out, "nat_backward_from", "out");
    NAT_CHECK_ARG(grad_out, "nat_backward_from", "grad_out");
    return nat_backward_since(ctx, 0, out, grad_out);
}

nat_status nat_backward(nat_ctx *ctx, nat_tensor *loss)
{
    NAT_CHECK_ARG(ctx, "nat_backward", "ctx");
    NAT_CHECK_ARG(loss, "nat_backward", "loss");
    if (nat_tensor_numel(loss) != 1) {
        char b[96];
        return nat_error(NAT_ERR_SHAPE, "backward: loss must have one element, got shape %s",
                         nat_shape_str(loss, b, sizeof b));
    }
    nat_tensor *one;
    NAT_TRY(nat_ctx_empty(ctx, &one, loss->dtype, loss->ndim, loss->shape));
    NAT_TRY(nat_fill_value(one, 1.0f));
    return nat_backward_from(ctx, loss, one);
}
