/* models/nat/nat_trace.c — per-part tracing of the NAT forward and backward for profilers
 * (nat_model_set_trace in include/nat/model.h).
 *
 * The backward has no hooks of its own: the tape is walked in reverse recording order. So the forward
 * records a pass-through "marker" node on each part's output (a view of the same storage); everything
 * recorded after the marker belongs to later parts, so when the walk reaches the marker the backward of
 * all later parts is done and this part's is about to start. The marker hands its gradient on
 * unchanged (one copy).
 */
#include "models/nat/nat_internal.h"

static nat_status marker_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    const nat_model *m = node->extra;
    if (m->trace) {
        nat_model_part_event ev = {(nat_model_part_kind)node->i[0], (int)node->i[1], (int)node->i[2], true};
        m->trace(m->trace_user, &ev);
    }
    return nat_grad_accumulate(ctx, node->in[0], g);
}

static const nat_op_def marker_op = {"trace_marker", marker_backward};

nat_status nat_model_trace_part(const nat_model *m, nat_ctx *ctx, nat_model_part_kind kind, int level, int layer,
                                nat_tensor **h)
{
    if (!m->trace)
        return NAT_OK;
    nat_model_part_event ev = {kind, level, layer, false};
    m->trace(m->trace_user, &ev);
    nat_tensor *x = *h, *y;
    if (!nat_ctx_needs_grad(ctx, 1, &x))
        return NAT_OK;
    NAT_TRY(nat_ctx_view(ctx, &y, x, x->ndim, x->shape, x->stride, x->offset));
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &marker_op, y, 1, &x, &node));
    if (node) {
        node->extra = (void *)m;
        node->i[0] = kind, node->i[1] = level, node->i[2] = layer;
    }
    *h = y;
    return NAT_OK;
}

void nat_model_set_trace(nat_model *m, nat_model_trace_fn fn, void *user)
{
    m->trace = fn;
    m->trace_user = user;
}

void nat_model_set_na_fn(nat_model *m, nat_na_fn fn) { m->na_fn = fn; }
nat_na_fn nat_model_get_na_fn(const nat_model *m) { return m->na_fn; }
void nat_model_set_recompute(nat_model *m, bool on) { m->recompute = on; }
bool nat_model_get_recompute(const nat_model *m) { return m->recompute; }
