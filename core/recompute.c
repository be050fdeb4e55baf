/* core/recompute.c — activation checkpointing (nat_recompute in include/nat/autograd.h).
 *
 * Forward: fn runs with the tape off; every step tensor it made except its output is released
 * (nat_ctx_release_since), and one node is recorded with x (and the anchor) as inputs. Backward: fn runs
 * again on a fresh leaf view of x with the tape on, the nodes it records are walked by
 * nat_backward_since (which drops them from the tape), x's gradient is taken from the leaf, and all the
 * recomputation made is released before the outer walk goes on — so the backward holds one
 * recomputed call's activations at a time.
 */
#include <string.h>

#include "nat/op.h" /* nat_add_into */
#include "nat/nat.h"
#include "core/check.h"

typedef struct recompute_state {
    nat_recompute_fn fn;
    nat_precision precision; /* the forward's: autocast must round the same way */
    size_t user_size;        /* the user copy follows the struct */
} recompute_state;

static nat_status recompute_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    const recompute_state *st = node->extra;
    nat_tensor *x = node->in[0], *gx = NULL;
    /* x's gradient buffer is made before the mark: the release below must not take it */
    NAT_TRY(nat_grad_get(ctx, x, &gx));
    const int64_t mark = nat_ctx_mark(ctx);
    const int from = nat_ctx_tape_length(ctx);
    nat_tensor *leaf, *y = NULL;
    NAT_TRY(nat_ctx_view(ctx, &leaf, x, x->ndim, x->shape, x->stride, x->offset));
    nat_set_requires_grad(leaf, true);
    const bool grad_was = nat_ctx_set_grad_enabled(ctx, true);
    const nat_precision prec_was = nat_ctx_set_precision(ctx, st->precision);
    nat_status s = st->fn(ctx, leaf, (void *)(st + 1), true, &y);
    nat_ctx_set_precision(ctx, prec_was);
    nat_ctx_set_grad_enabled(ctx, grad_was);
    if (s == NAT_OK && !y->requires_grad)
        s = nat_error(NAT_ERR_INTERNAL, "recompute: the recomputed output needs no gradient (fn ignores x and every "
                                        "parameter?)");
    if (s == NAT_OK)
        s = nat_backward_since(ctx, from, y, g);
    if (s == NAT_OK && gx && leaf->grad)
        s = nat_add_into(gx, leaf->grad);
    const nat_status r = nat_ctx_release_since(ctx, mark, NULL);
    return s != NAT_OK ? s : r;
}

static const nat_op_def recompute_op = {"recompute", recompute_backward};

nat_status nat_recompute(nat_ctx *ctx, nat_recompute_fn fn, void *user, size_t user_size, nat_tensor *x,
                         nat_tensor *anchor, nat_tensor **y)
{
    NAT_CHECK_ARG(ctx, "nat_recompute", "ctx");
    NAT_CHECK_ARG(fn, "nat_recompute", "fn");
    NAT_CHECK_ARG(x, "nat_recompute", "x");
    NAT_CHECK_ARG(y, "nat_recompute", "y");
    *y = NULL;
    nat_tensor *ins[2] = {x, anchor};
    const int n_in = anchor ? 2 : 1;
    if (!nat_ctx_needs_grad(ctx, n_in, ins))
        return fn(ctx, x, user, false, y);
    recompute_state *st;
    NAT_TRY(nat_ctx_scratch(ctx, sizeof *st + user_size, (void **)&st));
    st->fn = fn;
    st->precision = nat_ctx_precision(ctx);
    st->user_size = user_size;
    if (user_size) /* user may be NULL then */
        memcpy(st + 1, user, user_size);
    const int64_t mark = nat_ctx_mark(ctx);
    const bool grad_was = nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *out = NULL;
    nat_status s = fn(ctx, x, user, false, &out);
    if (s == NAT_OK && out == x)
        s = nat_error(NAT_ERR_INVALID_ARG, "recompute: fn returned its input (nothing to checkpoint)");
    if (s == NAT_OK)
        s = nat_ctx_release_since(ctx, mark, out);
    nat_ctx_set_grad_enabled(ctx, grad_was);
    NAT_TRY(s);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &recompute_op, out, n_in, ins, &node));
    if (node)
        node->extra = st;
    *y = out;
    return NAT_OK;
}
