/* layers/natten/na_ops.c — neighborhood attention as autograd ops (include/nat/natten.h) over the kernel
 * table of the tensors' device (na_backend.h): the fast CPU kernels of cpu/na_cpu.c or, when the context
 * runs on a CUDA device, the CUDA kernels of cuda/ (nat_na_qk / nat_na_av: v0 or the tiled v2, chosen by
 * measurement; nat_na: the fused v1, or under autocast the tensor-core v3 where it applies —
 * layers/natten/dev/README.md). Checks the tensor shapes against each other and the descriptor, builds
 * and validates the problem once (na_problem_init; the kernels trust it), makes strided inputs dense (on
 * their device), records the backward. Every tensor must be on the context's device; nothing is moved between devices. Kernels
 * overwrite their outputs, so gradients are computed into step temporaries and then accumulated. The
 * fused op saves only out and the log-sum-exp.
 *
 * Autocast (nat_ctx_precision BF16 / F16): the operands of the products (q, k, v; attn, v) are rounded
 * to bfloat16 / float16 (to nearest even: nat_round_array on the CPU, core/half.h on a device) into f32
 * step tensors, and the ops run on the rounded values with f32 accumulation; rpb, outputs and
 * gradients stay f32, and the gradients flow to the unrounded inputs unchanged (straight through the
 * rounding). On the CPU the fused op runs the table's autocast entries (cpu/na_cpu.h): under BF16 on a
 * CPU where they pay (an AMD core with AVX512_BF16, no ONEDNN_MAX_CPU_ISA cap below it) the vdpbf16ps
 * kernels, which also round
 * the softmax weights, dO and dS for their products as the CUDA kernels do (docs/design.md §2);
 * otherwise the emulation, the f32 kernels on the rounded values. On CUDA
 * the fused forward runs the tensor-core v3 kernel on 2-byte copies of them instead
 * (na_cuda_fused_forward_autocast; v1 on the rounded f32 values where v3 does not apply), and its
 * backward the tensor-core v3 backward likewise (na_cuda_fused_backward_autocast; the precision is kept
 * on the tape node).
 *
 * Layouts: see include/nat/natten.h. */
#include <inttypes.h>
#include <string.h>

#include "nat/op.h"
#include "layers/natten/na_backend.h"
#include "nat/natten.h"
#include "core/check.h"

/* The kernels of `device`. The one place that knows whether this build has a CUDA table. */
nat_status na_backend_get(int device, const char *op, const na_backend **out)
{
    *out = NULL;
    if (device < 0)
        *out = &na_cpu_backend;
#ifdef NAT_WITH_CUDA
    else
        *out = &na_cuda_backend;
#endif
    if (*out)
        return NAT_OK;
    return nat_error(NAT_ERR_UNSUPPORTED, "%s: cannot run on cuda:%d: nat was built without CUDA (configure with "
                     "-DNAT_CUDA=ON on a machine with nvcc)", op, device);
}

nat_na_params nat_na_params_make(int ndim, int kernel, int dilation)
{
    nat_na_params p = {ndim, {kernel, kernel, kernel}, {dilation, dilation, dilation}, {0, 0, 0}, 0.0f};
    return p;
}

/* Checks that a q-shaped tensor [B, heads, *spatial, D] has the descriptor's rank. */
static nat_status check_qshape(const nat_na_params *p, const nat_tensor *t, const char *op, const char *arg)
{
    if (p->ndim < 1 || p->ndim > 3)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: ndim %d (1, 2 or 3 spatial axes)", op, p->ndim);
    if (t->ndim != p->ndim + 3) {
        char b[96];
        return nat_error(NAT_ERR_SHAPE, "%s: %s has shape %s; expected %d dims [B, heads, %s, D]", op, arg,
                         nat_shape_str(t, b, sizeof b), p->ndim + 3,
                         p->ndim == 1 ? "L" : p->ndim == 2 ? "H, W" : "T, H, W");
    }
    return NAT_OK;
}

/* The problem of q-shaped t under p, validated once here (na_problem_init): the kernels trust it. */
static nat_status make_problem(const nat_ctx *ctx, const nat_na_params *p, const nat_tensor *t, int has_rpb,
                               const char *op, na_problem *pb)
{
    NAT_TRY(na_problem_init(pb, p, t->shape[0], t->shape[1], t->shape + 2, t->shape[t->ndim - 1], has_rpb, op));
    pb->device = nat_ctx_cuda_index(ctx);
    return NAT_OK;
}

static nat_status check_same(const nat_tensor *a, const nat_tensor *b, const char *op, const char *na, const char *nb)
{
    if (nat_tensor_same_shape(a, b))
        return NAT_OK;
    char x[96], y[96];
    return nat_error(NAT_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", op, na, nat_shape_str(a, x, sizeof x),
                     nb, nat_shape_str(b, y, sizeof y));
}

static nat_status check_rpb(const nat_na_params *p, const nat_tensor *rpb, int64_t heads, const char *op)
{
    int64_t want[4] = {heads, 2 * p->kernel[0] - 1, 2 * p->kernel[1] - 1, 2 * p->kernel[2] - 1};
    bool ok = rpb->ndim == p->ndim + 1;
    for (int d = 0; ok && d <= p->ndim; d++)
        ok = rpb->shape[d] == want[d];
    if (ok)
        return NAT_OK;
    char g[96], w[96];
    return nat_error(NAT_ERR_SHAPE, "%s: rpb has shape %s; kernel %d with %" PRId64 " heads needs %s", op,
                     nat_shape_str(rpb, g, sizeof g), p->kernel[0], heads, nat_dims_str(p->ndim + 1, want, w, sizeof w));
}

static nat_status check_ndim(const nat_na_params *p, int want, const char *op)
{
    if (!p)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: params is NULL", op);
    if (p->ndim != want)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: descriptor has ndim %d", op, p->ndim);
    return NAT_OK;
}

static int64_t n_keys(const nat_na_params *p)
{
    int64_t K = 1;
    for (int a = 0; a < p->ndim; a++)
        K *= p->kernel[a];
    return K;
}

/* Keeps a copy of the descriptor in a node (its f/i slots). */
static void save_params(nat_node *node, const nat_na_params *p)
{
    node->i[0] = p->ndim;
    for (int a = 0; a < 3; a++) {
        node->i[1 + a] = p->kernel[a];
        node->i[4 + a] = p->dilation[a] | (p->causal[a] ? (int64_t)1 << 32 : 0);
    }
    node->f[0] = p->scale;
}

static nat_na_params load_params(const nat_node *node)
{
    nat_na_params p = {(int)node->i[0], {0}, {0}, {0}, (float)node->f[0]};
    for (int a = 0; a < 3; a++) {
        p.kernel[a] = (int)node->i[1 + a];
        p.dilation[a] = (int)(node->i[4 + a] & 0xffffffff);
        p.causal[a] = (int)(node->i[4 + a] >> 32);
    }
    return p;
}

/* A backward's problem: the forward's, validated when the forward ran. */
static void problem_of_node(const nat_ctx *ctx, const nat_node *node, const nat_tensor *q, na_problem *pb)
{
    const nat_na_params p = load_params(node);
    na_problem_fill(pb, &p, q->shape[0], q->shape[1], q->shape + 2, q->shape[q->ndim - 1]);
    pb->device = nat_ctx_cuda_index(ctx);
}

/* A step tensor shaped like `like`, uninitialised (kernels overwrite). */
static nat_status empty_like(nat_ctx *ctx, const nat_tensor *like, nat_tensor **out)
{
    return nat_ctx_empty(ctx, out, NAT_F32, like->ndim, like->shape);
}

/* Under autocast, a step copy of the dense x with every value rounded to bf16 / f16 (kept in f32);
 * under F32, x itself. */
static nat_status autocast_round(nat_ctx *ctx, nat_tensor *x, nat_tensor **out)
{
    const nat_precision prec = nat_ctx_precision(ctx);
    if (prec == NAT_PREC_F32) {
        *out = x;
        return NAT_OK;
    }
    const int f16 = prec == NAT_PREC_F16;
    nat_tensor *r;
    NAT_TRY(empty_like(ctx, x, &r));
    const int64_t n = nat_tensor_numel(x);
    const float *src = nat_tensor_f32(x);
    float *dst = nat_tensor_f32(r);
    const int dev = nat_ctx_cuda_index(ctx);
    const na_backend *be;
    NAT_TRY(na_backend_get(dev, "na autocast", &be));
    NAT_TRY(be->round(dev, f16, src, dst, n));
    *out = r;
    return NAT_OK;
}

/* Where the backward writes an input's gradient: straight into the input's gradient buffer when that
 * buffer is new (the usual case: q, k, v and attn are the layer's own step tensors, with no other consumer),
 * which saves a copy of every gradient; otherwise into a step tensor that is then accumulated. The
 * buffer is dense with the input's shape, as the kernels write. */
static nat_status grad_target(nat_ctx *ctx, nat_tensor *in, const nat_tensor *like, nat_tensor **out, bool *direct)
{
    *direct = false;
    nat_tensor *buf = NULL;
    bool fresh = false;
    if (in->requires_grad && nat_tensor_same_shape(in, like))
        NAT_TRY(nat_grad_buffer(ctx, in, &buf, &fresh));
    if (fresh) {
        *out = buf;
        *direct = true;
        return NAT_OK;
    }
    return empty_like(ctx, like, out);
}

/* ---- qk ---- */

static nat_status qk_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *q = node->saved[0], *k = node->saved[1], *rpb_in = node->in[2];
    na_problem pb;
    problem_of_node(ctx, node, q, &pb);
    nat_tensor *gd, *dq, *dk, *drpb = NULL;
    bool direct[2];
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(grad_target(ctx, node->in[0], q, &dq, &direct[0]));
    NAT_TRY(grad_target(ctx, node->in[1], k, &dk, &direct[1]));
    if (rpb_in && rpb_in->requires_grad)
        NAT_TRY(empty_like(ctx, rpb_in, &drpb));
    const na_backend *be;
    NAT_TRY(na_backend_get(pb.device, "na_qk backward", &be));
    NAT_TRY(be->qk_backward(&pb, nat_tensor_f32(gd), nat_tensor_f32(q),
                                   nat_tensor_f32(k), nat_tensor_f32(dq), nat_tensor_f32(dk),
                                   drpb ? nat_tensor_f32(drpb) : NULL));
    if (!direct[0])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[0], dq));
    if (!direct[1])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[1], dk));
    if (drpb)
        NAT_TRY(nat_grad_accumulate(ctx, rpb_in, drpb));
    return NAT_OK;
}

static const nat_op_def qk_op = {"na_qk", qk_backward};

nat_status nat_na_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p,
                     nat_tensor **attn)
{
    NAT_CHECK_ARG(p, "na_qk", "params");
    NAT_CHECK_ARG(attn, "na_qk", "attn");
    const char *op = "na_qk";
    NAT_TRY(nat_check_f32_dev(ctx, q, op, "q"));
    NAT_TRY(nat_check_f32_dev(ctx, k, op, "k"));
    na_problem pb;
    NAT_TRY(check_qshape(p, q, op, "q"));
    NAT_TRY(check_same(q, k, op, "q", "k"));
    if (rpb)
        NAT_TRY(nat_check_f32_dev(ctx, rpb, op, "rpb"));
    NAT_TRY(make_problem(ctx, p, q, rpb != NULL, op, &pb));
    if (rpb)
        NAT_TRY(check_rpb(p, rpb, pb.heads, op));
    nat_tensor *qd, *kd, *rd = NULL, *a;
    NAT_TRY(nat_dense(ctx, q, &qd));
    NAT_TRY(nat_dense(ctx, k, &kd));
    NAT_TRY(autocast_round(ctx, qd, &qd));
    NAT_TRY(autocast_round(ctx, kd, &kd));
    if (rpb)
        NAT_TRY(nat_dense(ctx, rpb, &rd));
    int64_t shape[NAT_MAX_DIMS];
    memcpy(shape, q->shape, sizeof shape);
    shape[q->ndim - 1] = n_keys(p);
    NAT_TRY(nat_ctx_empty(ctx, &a, NAT_F32, q->ndim, shape));
    const na_backend *be;
    NAT_TRY(na_backend_get(pb.device, "na_qk", &be));
    NAT_TRY(be->qk(&pb, nat_tensor_f32(qd), nat_tensor_f32(kd),
                          rd ? nat_tensor_f32(rd) : NULL, nat_tensor_f32(a)));
    nat_node *node;
    nat_tensor *ins[3] = {q, k, rpb};
    NAT_TRY(nat_ctx_record(ctx, &qk_op, a, 3, ins, &node));
    if (node) {
        node->saved[0] = qd;
        node->saved[1] = kd;
        node->n_saved = 2;
        save_params(node, p);
    }
    *attn = a;
    return NAT_OK;
}

/* ---- av ---- */

static nat_status av_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *a = node->saved[0], *v = node->saved[1];
    na_problem pb;
    problem_of_node(ctx, node, v, &pb);
    nat_tensor *gd, *da, *dv;
    bool direct[2];
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(grad_target(ctx, node->in[0], a, &da, &direct[0]));
    NAT_TRY(grad_target(ctx, node->in[1], v, &dv, &direct[1]));
    const na_backend *be;
    NAT_TRY(na_backend_get(pb.device, "na_av backward", &be));
    NAT_TRY(be->av_backward(&pb, nat_tensor_f32(gd), nat_tensor_f32(a),
                                   nat_tensor_f32(v), nat_tensor_f32(da), nat_tensor_f32(dv)));
    if (!direct[0])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[0], da));
    return direct[1] ? NAT_OK : nat_grad_accumulate(ctx, node->in[1], dv);
}

static const nat_op_def av_op = {"na_av", av_backward};

nat_status nat_na_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p, nat_tensor **out)
{
    NAT_CHECK_ARG(p, "na_av", "params");
    NAT_CHECK_ARG(out, "na_av", "out");
    const char *op = "na_av";
    NAT_TRY(nat_check_f32_dev(ctx, attn, op, "attn"));
    NAT_TRY(nat_check_f32_dev(ctx, v, op, "v"));
    NAT_TRY(check_qshape(p, v, op, "v"));
    int64_t want[NAT_MAX_DIMS];
    memcpy(want, v->shape, sizeof want);
    want[v->ndim - 1] = n_keys(p);
    bool ok = attn->ndim == v->ndim;
    for (int d = 0; ok && d < v->ndim; d++)
        ok = attn->shape[d] == want[d];
    if (!ok) {
        char g[96], w[96];
        return nat_error(NAT_ERR_SHAPE, "%s: attn has shape %s; with v %s and kernel %d it must be %s", op,
                         nat_shape_str(attn, g, sizeof g), nat_shape_str(v, w, sizeof w), p->kernel[0],
                         nat_dims_str(v->ndim, want, w, sizeof w));
    }
    na_problem pb;
    NAT_TRY(make_problem(ctx, p, v, 0, op, &pb));
    nat_tensor *ad, *vd, *y;
    NAT_TRY(nat_dense(ctx, attn, &ad));
    NAT_TRY(nat_dense(ctx, v, &vd));
    NAT_TRY(autocast_round(ctx, ad, &ad));
    NAT_TRY(autocast_round(ctx, vd, &vd));
    NAT_TRY(empty_like(ctx, v, &y));
    const na_backend *be;
    NAT_TRY(na_backend_get(pb.device, "na_av", &be));
    NAT_TRY(be->av(&pb, nat_tensor_f32(ad), nat_tensor_f32(vd),
                          nat_tensor_f32(y)));
    nat_node *node;
    nat_tensor *ins[2] = {attn, v};
    NAT_TRY(nat_ctx_record(ctx, &av_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = ad;
        node->saved[1] = vd;
        node->n_saved = 2;
        save_params(node, p);
    }
    *out = y;
    return NAT_OK;
}

/* ---- fused ---- */

/* The device's fused kernels (autocast's entries under BF16 / F16 where the table has them). */
static nat_status fused_forward_call(const na_problem *pb, const char *op, nat_precision prec, const float *q,
                                     const float *k, const float *v, const float *rpb, float *y, float *lse)
{
    const na_backend *be;
    NAT_TRY(na_backend_get(pb->device, op, &be));
    if (prec != NAT_PREC_F32 && be->fused_forward_autocast)
        return be->fused_forward_autocast(pb, prec == NAT_PREC_F16, q, k, v, rpb, y, lse);
    return be->fused_forward(pb, q, k, v, rpb, y, lse);
}

static nat_status fused_backward_call(const na_problem *pb, nat_precision prec, const float *q, const float *k,
                                      const float *v, const float *rpb, const float *out, const float *lse,
                                      const float *d_out, float *dq, float *dk, float *dv, float *drpb)
{
    const na_backend *be;
    NAT_TRY(na_backend_get(pb->device, "na_fused backward", &be));
    if (prec != NAT_PREC_F32 && be->fused_backward_autocast)
        return be->fused_backward_autocast(pb, prec == NAT_PREC_F16, q, k, v, rpb, out, lse, d_out, dq, dk, dv, drpb);
    return be->fused_backward(pb, q, k, v, rpb, out, lse, d_out, dq, dk, dv, drpb);
}

static nat_status fused_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *q = node->saved[0], *k = node->saved[1], *v = node->saved[2], *rpb = node->saved[3],
               *out = node->saved[4], *lse = node->saved[5], *rpb_in = node->in[3];
    na_problem pb;
    problem_of_node(ctx, node, q, &pb);
    nat_tensor *gd, *dq, *dk, *dv, *drpb = NULL;
    bool direct[3];
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(grad_target(ctx, node->in[0], q, &dq, &direct[0]));
    NAT_TRY(grad_target(ctx, node->in[1], k, &dk, &direct[1]));
    NAT_TRY(grad_target(ctx, node->in[2], v, &dv, &direct[2]));
    if (rpb_in && rpb_in->requires_grad)
        NAT_TRY(empty_like(ctx, rpb_in, &drpb));
    const nat_precision prec = (nat_precision)node->i[7]; /* the forward's: autocast rounds the same way */
    NAT_TRY(fused_backward_call(&pb, prec, nat_tensor_f32(q), nat_tensor_f32(k), nat_tensor_f32(v),
                                rpb ? nat_tensor_f32(rpb) : NULL, nat_tensor_f32(out), nat_tensor_f32(lse),
                                nat_tensor_f32(gd), nat_tensor_f32(dq), nat_tensor_f32(dk), nat_tensor_f32(dv),
                                drpb ? nat_tensor_f32(drpb) : NULL));
    if (!direct[0])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[0], dq));
    if (!direct[1])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[1], dk));
    if (!direct[2])
        NAT_TRY(nat_grad_accumulate(ctx, node->in[2], dv));
    if (drpb)
        NAT_TRY(nat_grad_accumulate(ctx, rpb_in, drpb));
    return NAT_OK;
}

static const nat_op_def fused_op = {"na_fused", fused_backward};

nat_status nat_na(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb, const nat_na_params *p,
                  nat_tensor **out)
{
    NAT_CHECK_ARG(p, "na", "params");
    const char *op = p->ndim == 1 ? "na1d" : p->ndim == 2 ? "na2d" : "na3d";
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: out is NULL", op);
    NAT_TRY(nat_check_f32_dev(ctx, q, op, "q"));
    NAT_TRY(nat_check_f32_dev(ctx, k, op, "k"));
    NAT_TRY(nat_check_f32_dev(ctx, v, op, "v"));
    na_problem pb;
    NAT_TRY(check_qshape(p, q, op, "q"));
    NAT_TRY(check_same(q, k, op, "q", "k"));
    NAT_TRY(check_same(q, v, op, "q", "v"));
    if (rpb)
        NAT_TRY(nat_check_f32_dev(ctx, rpb, op, "rpb"));
    NAT_TRY(make_problem(ctx, p, q, rpb != NULL, op, &pb));
    if (rpb)
        NAT_TRY(check_rpb(p, rpb, pb.heads, op));
    nat_tensor *qd, *kd, *vd, *rd = NULL, *y, *lse;
    NAT_TRY(nat_dense(ctx, q, &qd));
    NAT_TRY(nat_dense(ctx, k, &kd));
    NAT_TRY(nat_dense(ctx, v, &vd));
    NAT_TRY(autocast_round(ctx, qd, &qd));
    NAT_TRY(autocast_round(ctx, kd, &kd));
    NAT_TRY(autocast_round(ctx, vd, &vd));
    if (rpb)
        NAT_TRY(nat_dense(ctx, rpb, &rd));
    NAT_TRY(empty_like(ctx, q, &y));
    NAT_TRY(nat_ctx_empty(ctx, &lse, NAT_F32, q->ndim - 1, q->shape));
    const nat_precision prec = nat_ctx_precision(ctx);
    NAT_TRY(fused_forward_call(&pb, op, prec, nat_tensor_f32(qd), nat_tensor_f32(kd), nat_tensor_f32(vd),
                               rd ? nat_tensor_f32(rd) : NULL, nat_tensor_f32(y), nat_tensor_f32(lse)));
    nat_node *node;
    nat_tensor *ins[4] = {q, k, v, rpb};
    NAT_TRY(nat_ctx_record(ctx, &fused_op, y, 4, ins, &node));
    if (node) {
        nat_tensor *saved[6] = {qd, kd, vd, rd, y, lse};
        memcpy(node->saved, saved, sizeof saved);
        node->n_saved = 6;
        save_params(node, p);
        node->i[7] = (int64_t)prec;
    }
    *out = y;
    return NAT_OK;
}

/* ---- fused, on q, k, v packed in one tensor [3, B, heads, *spatial, D] ---- */

static nat_status packed_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *qkv = node->saved[0], *rpb = node->saved[1], *out = node->saved[2], *lse = node->saved[3],
               *rpb_in = node->in[1];
    na_problem pb;
    problem_of_node(ctx, node, out, &pb); /* out has q's shape */
    nat_tensor *gd, *dqkv, *drpb = NULL;
    bool direct;
    NAT_TRY(nat_dense(ctx, g, &gd));
    /* dq, dk, dv are the three thirds of one buffer: qkv's own gradient when it is new (no add) */
    NAT_TRY(grad_target(ctx, node->in[0], qkv, &dqkv, &direct));
    if (rpb_in && rpb_in->requires_grad)
        NAT_TRY(empty_like(ctx, rpb_in, &drpb));
    const int64_t n = nat_tensor_numel(out);
    const float *b = nat_tensor_f32(qkv);
    float *d = nat_tensor_f32(dqkv);
    NAT_TRY(fused_backward_call(&pb, (nat_precision)node->i[7], b, b + n, b + 2 * n, rpb ? nat_tensor_f32(rpb) : NULL,
                                nat_tensor_f32(out), nat_tensor_f32(lse), nat_tensor_f32(gd), d, d + n, d + 2 * n,
                                drpb ? nat_tensor_f32(drpb) : NULL));
    if (!direct)
        NAT_TRY(nat_grad_accumulate(ctx, node->in[0], dqkv));
    if (drpb)
        NAT_TRY(nat_grad_accumulate(ctx, rpb_in, drpb));
    return NAT_OK;
}

static const nat_op_def packed_op = {"na_fused_packed", packed_backward};

nat_status nat_na_packed(nat_ctx *ctx, nat_tensor *qkv, nat_tensor *rpb, const nat_na_params *p, nat_tensor **out)
{
    NAT_CHECK_ARG(p, "na_packed", "params");
    const char *op = p->ndim == 1 ? "na1d packed" : p->ndim == 2 ? "na2d packed" : "na3d packed";
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: out is NULL", op);
    NAT_TRY(nat_check_f32_dev(ctx, qkv, op, "qkv"));
    if (p->ndim < 1 || p->ndim > 3 || qkv->ndim != p->ndim + 4 || qkv->shape[0] != 3) {
        char sq[96];
        return nat_error(NAT_ERR_SHAPE, "%s: qkv %s; expected [3, B, heads, %s, D] (q, k, v stacked)", op,
                         nat_shape_str(qkv, sq, sizeof sq), p->ndim == 1 ? "L" : p->ndim == 2 ? "H, W" : "T, H, W");
    }
    nat_tensor *qkvd, *q, *rd = NULL, *y, *lse;
    NAT_TRY(nat_dense(ctx, qkv, &qkvd));
    NAT_TRY(autocast_round(ctx, qkvd, &qkvd));
    /* q's shape over the first third of the storage: what the checks and the problem read */
    NAT_TRY(nat_ctx_view(ctx, &q, qkvd, qkvd->ndim - 1, qkvd->shape + 1, qkvd->stride + 1, qkvd->offset));
    na_problem pb;
    NAT_TRY(check_qshape(p, q, op, "q"));
    if (rpb)
        NAT_TRY(nat_check_f32_dev(ctx, rpb, op, "rpb"));
    NAT_TRY(make_problem(ctx, p, q, rpb != NULL, op, &pb));
    if (rpb) {
        NAT_TRY(check_rpb(p, rpb, pb.heads, op));
        NAT_TRY(nat_dense(ctx, rpb, &rd));
    }
    NAT_TRY(empty_like(ctx, q, &y));
    NAT_TRY(nat_ctx_empty(ctx, &lse, NAT_F32, q->ndim - 1, q->shape));
    const nat_precision prec = nat_ctx_precision(ctx);
    const int64_t n = nat_tensor_numel(q);
    const float *b = nat_tensor_f32(qkvd);
    NAT_TRY(fused_forward_call(&pb, op, prec, b, b + n, b + 2 * n, rd ? nat_tensor_f32(rd) : NULL, nat_tensor_f32(y),
                               nat_tensor_f32(lse)));
    nat_node *node;
    nat_tensor *ins[2] = {qkv, rpb};
    NAT_TRY(nat_ctx_record(ctx, &packed_op, y, 2, ins, &node));
    if (node) {
        nat_tensor *saved[4] = {qkvd, rd, y, lse};
        memcpy(node->saved, saved, sizeof saved);
        node->n_saved = 4;
        save_params(node, p);
        node->i[7] = (int64_t)prec;
    }
    *out = y;
    return NAT_OK;
}

/* ---- per-rank spellings ---- */

#define NA_RANK(n)                                                                                               \
    nat_status nat_na##n##d_qk(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *rpb, const nat_na_params *p, \
                               nat_tensor **attn)                                                                \
    {                                                                                                            \
        NAT_TRY(check_ndim(p, n, "na" #n "d_qk"));                                                               \
        return nat_na_qk(ctx, q, k, rpb, p, attn);                                                               \
    }                                                                                                            \
    nat_status nat_na##n##d_av(nat_ctx *ctx, nat_tensor *attn, nat_tensor *v, const nat_na_params *p,            \
                               nat_tensor **out)                                                                 \
    {                                                                                                            \
        NAT_TRY(check_ndim(p, n, "na" #n "d_av"));                                                               \
        return nat_na_av(ctx, attn, v, p, out);                                                                  \
    }                                                                                                            \
    nat_status nat_na##n##d(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,          \
                            const nat_na_params *p, nat_tensor **out)                                            \
    {                                                                                                            \
        NAT_TRY(check_ndim(p, n, "na" #n "d"));                                                                  \
        return nat_na(ctx, q, k, v, rpb, p, out);                                                                \
    }

NA_RANK(1)
NA_RANK(2)
NA_RANK(3)
