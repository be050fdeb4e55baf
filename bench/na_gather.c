/* bench/na_gather.c — the legacy NA algorithm of NATTEN's pure-PyTorch fallback, as a nat_na_fn a
 * NAT model can be switched to (nat-profile --na-impl gather) and as nat-bench na2d's `gather`, with the
 * two gather ops it needs. It exists to be measured against nat's kernels, so it lives with the
 * benchmarks, not in libnat.
 *
 * GATHER is what NATTEN's pure-PyTorch fallback (and tests/golden/nat_torch.py) does, through generic
 * ops: copy each query's K neighbour keys and values into [B, heads, S, K, D] tensors, one [1, D] x
 * [D, K] matmul per query for the logits, add the gathered rpb, softmax, one [1, K] x [K, D] matmul per
 * query for the output; autograd does the backward. It keeps K copies of k and v per layer, which is
 * why it needs ~K times the memory of the fused kernel, and is here to measure that.
 *
 * The module itself (pad, qkv, split, NA, merge, crop, proj) is layers/natten/na_module.c whatever the
 * NA algorithm. Windows and validation are the kernels' (layers/natten/na_window.h, na_problem_init); problems are seen as 3-D with leading axes of length 1. Non-causal only.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "bench/bench.h"
#include "layers/natten/na_problem.h"
#include "layers/natten/na_window.h"
#include "nat/op.h"
#include "nat/ops.h"

/* Flat key pixel and flat rpb index (per head) of every slot of pixel `pix` (non-causal), each axis's
 * window from na_axis_window (layers/natten/na_window.h): the kernels' one reading of the rule. */
static void slots(const na_problem *g, int64_t pix, int64_t *key, int64_t *ridx)
{
    int64_t c[3], k0[3], r0[3], rem = pix;
    for (int a = 2; a >= 0; a--) {
        c[a] = rem % g->len[a];
        rem /= g->len[a];
        const na_win w = na_axis_window((int)c[a], (int)g->len[a], g->kernel[a], g->dilation[a], 0);
        k0[a] = w.key0;
        r0[a] = w.rpb0;
    }
    int64_t s = 0;
    for (int a0 = 0; a0 < g->kernel[0]; a0++)
        for (int a1 = 0; a1 < g->kernel[1]; a1++)
            for (int a2 = 0; a2 < g->kernel[2]; a2++, s++) {
                int64_t y = k0[0] + (int64_t)a0 * g->dilation[0], x = k0[1] + (int64_t)a1 * g->dilation[1],
                        z = k0[2] + (int64_t)a2 * g->dilation[2];
                key[s] = (y * g->len[1] + x) * g->len[2] + z;
                ridx[s] = ((r0[0] + a0) * g->rpb_ext[1] + (r0[1] + a1)) * g->rpb_ext[2] + (r0[2] + a2);
            }
}

/* The problem of a gather op, validated as the NA ops validate theirs; the legacy algorithm has no
 * causal mask. */
static nat_status gather_problem(na_problem *g, const nat_na_params *p, int64_t heads, const int64_t *spatial,
                                 int64_t dim, int has_rpb, const char *op)
{
    if (p->ndim >= 1 && p->ndim <= 3)
        for (int a = 0; a < p->ndim; a++)
            if (p->causal[a])
                return nat_error(NAT_ERR_INVALID_ARG, "%s: causal axes are not supported", op);
    return na_problem_init(g, p, 1, heads, spatial, dim, has_rpb, op);
}

#define MAX_K 4096

/* A node keeps the descriptor and the map: i[0] ndim, i[1..3] kernel | dilation << 32, i[4..6] spatial. */
static void save_problem(nat_node *node, const nat_na_params *p, const int64_t *spatial)
{
    node->i[0] = p->ndim;
    for (int a = 0; a < 3; a++) {
        node->i[1 + a] = a < p->ndim ? (int64_t)p->kernel[a] | (int64_t)p->dilation[a] << 32 : 0;
        node->i[4 + a] = a < p->ndim ? spatial[a] : 1;
    }
}

/* The forward's problem again (validated then): sizes only, no check. */
static void load_problem(const nat_node *node, na_problem *g)
{
    nat_na_params p = nat_na_params_make((int)node->i[0], 3, 1);
    int64_t spatial[3];
    for (int a = 0; a < p.ndim; a++) {
        p.kernel[a] = (int)(node->i[1 + a] & 0xffffffff);
        p.dilation[a] = (int)(node->i[1 + a] >> 32);
        spatial[a] = node->i[4 + a];
    }
    na_problem_fill(g, &p, 1, 1, spatial, 1);
}

/* ---- neighbours of every query ---- */

static void gather_planes(const na_problem *g, int64_t planes, int64_t D, bool transpose, const float *src, float *dst,
                          bool backward)
{
    const int64_t K = g->nkeys;
    if (!backward) {
#pragma omp parallel
        {
            int64_t key[MAX_K], ridx[MAX_K];
#pragma omp for schedule(static)
            for (int64_t n = 0; n < planes * g->npix; n++) {
                slots(g, n % g->npix, key, ridx);
                const float *plane = src + (n / g->npix) * g->npix * D;
                float *o = dst + n * K * D;
                for (int64_t s = 0; s < K; s++)
                    if (transpose)
                        for (int64_t e = 0; e < D; e++)
                            o[e * K + s] = plane[key[s] * D + e];
                    else
                        memcpy(o + s * D, plane + key[s] * D, sizeof(float) * (size_t)D);
            }
        }
        return;
    }
    /* Scatter-add: one thread per (batch, head) plane, so no two threads touch the same rows. */
#pragma omp parallel
    {
        int64_t key[MAX_K], ridx[MAX_K];
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++)
            for (int64_t pix = 0; pix < g->npix; pix++) {
                slots(g, pix, key, ridx);
                const float *gi = src + (pl * g->npix + pix) * K * D;
                float *plane = dst + pl * g->npix * D;
                for (int64_t s = 0; s < K; s++)
                    for (int64_t e = 0; e < D; e++)
                        plane[key[s] * D + e] += transpose ? gi[e * K + s] : gi[s * D + e];
            }
    }
}

static nat_status gather_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gt, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gt));
    if (!gt)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    na_problem gp;
    load_problem(node, &gp);
    const nat_tensor *t = node->in[0];
    gather_planes(&gp, t->shape[0] * t->shape[1], t->shape[t->ndim - 1], node->i[7] != 0, nat_tensor_f32(gd),
                  nat_tensor_f32(gt), true);
    return NAT_OK;
}

static const nat_op_def gather_op = {"na_gather", gather_backward};

nat_status nat_bench_na_gather(nat_ctx *ctx, nat_tensor *t, const nat_na_params *p, int transpose, nat_tensor **out)
{
    NAT_TRY(nat_check_f32(ctx, t, "na_gather", "t"));
    if (p->ndim < 1 || p->ndim > 3 || t->ndim != p->ndim + 3) {
        char st[96];
        return nat_error(NAT_ERR_SHAPE, "na_gather: t %s; expected [B, heads, *spatial (%d axes), D]",
                         nat_shape_str(t, st, sizeof st), p->ndim);
    }
    na_problem g;
    NAT_TRY(gather_problem(&g, p, t->shape[1], t->shape + 2, t->shape[t->ndim - 1], 0, "na_gather"));
    if (g.nkeys > MAX_K)
        return nat_error(NAT_ERR_INVALID_ARG, "na_gather: %" PRId64 " keys per query (at most %d)", g.nkeys, MAX_K);
    const int64_t D = t->shape[t->ndim - 1], planes = t->shape[0] * t->shape[1];
    nat_tensor *td, *y;
    NAT_TRY(nat_dense(ctx, t, &td));
    int64_t s[5] = {t->shape[0], t->shape[1], g.npix, transpose ? D : g.nkeys, transpose ? g.nkeys : D};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 5, s));
    gather_planes(&g, planes, D, transpose != 0, nat_tensor_f32(td), nat_tensor_f32(y), false);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &gather_op, y, 1, &t, &node));
    if (node) {
        save_problem(node, p, t->shape + 2);
        node->i[7] = transpose != 0;
    }
    *out = y;
    return NAT_OK;
}

/* ---- rpb of every (query, slot) ---- */

static void rpb_planes(const na_problem *g, int64_t heads, int64_t per_head, const float *src, float *dst, bool backward)
{
    const int64_t K = g->nkeys;
#pragma omp parallel
    {
        int64_t key[MAX_K], ridx[MAX_K];
#pragma omp for schedule(static)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t pix = 0; pix < g->npix; pix++) {
                slots(g, pix, key, ridx);
                for (int64_t s = 0; s < K; s++) {
                    if (backward)
                        dst[h * per_head + ridx[s]] += src[(h * g->npix + pix) * K + s];
                    else
                        dst[(h * g->npix + pix) * K + s] = src[h * per_head + ridx[s]];
                }
            }
    }
}

static nat_status gather_rpb_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gr, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gr));
    if (!gr)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    const nat_tensor *rpb = node->in[0];
    na_problem gp;
    load_problem(node, &gp);
    rpb_planes(&gp, rpb->shape[0], nat_tensor_numel(rpb) / rpb->shape[0], nat_tensor_f32(gd), nat_tensor_f32(gr), true);
    return NAT_OK;
}

static const nat_op_def gather_rpb_op = {"na_gather_rpb", gather_rpb_backward};

nat_status nat_bench_na_gather_rpb(nat_ctx *ctx, nat_tensor *rpb, const nat_na_params *p, const int64_t *spatial,
                                   nat_tensor **out)
{
    NAT_TRY(nat_check_f32(ctx, rpb, "na_gather_rpb", "rpb"));
    na_problem g;
    NAT_TRY(gather_problem(&g, p, rpb->ndim >= 1 ? rpb->shape[0] : 1, spatial, 1, 1, "na_gather_rpb"));
    bool ok = rpb->ndim == p->ndim + 1 && g.nkeys <= MAX_K;
    for (int a = 0; ok && a < p->ndim; a++)
        ok = rpb->shape[1 + a] == 2 * p->kernel[a] - 1;
    if (!ok) {
        char sr[96];
        return nat_error(NAT_ERR_SHAPE, "na_gather_rpb: rpb %s does not fit kernel %d in %d dims", nat_shape_str(rpb, sr, sizeof sr),
                         p->kernel[0], p->ndim);
    }
    nat_tensor *rd, *y;
    NAT_TRY(nat_dense(ctx, rpb, &rd));
    int64_t s[3] = {rpb->shape[0], g.npix, g.nkeys};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 3, s));
    rpb_planes(&g, rpb->shape[0], nat_tensor_numel(rpb) / rpb->shape[0], nat_tensor_f32(rd), nat_tensor_f32(y), false);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &gather_rpb_op, y, 1, &rpb, &node));
    if (node)
        save_problem(node, p, spatial);
    *out = y;
    return NAT_OK;
}

/* ---- the NA op the legacy way (a nat_na_fn) ---- */

nat_status nat_bench_na_by_gather(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                                  const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out)
{
    const int nd = p->ndim;
    const int64_t B = q->shape[0], heads = q->shape[1], D = q->shape[nd + 2];
    int64_t S = 1, K = 1;
    for (int a = 0; a < nd; a++) {
        S *= q->shape[2 + a];
        K *= p->kernel[a];
    }
    float scale = p->scale > 0.0f ? p->scale : 1.0f / sqrtf((float)D);
    nat_tensor *qs, *kg, *vg, *logits, *o;
    NAT_TRY(nat_scale(ctx, q, scale, &qs));
    int64_t q3[3] = {B * heads * S, 1, D};
    NAT_TRY(nat_reshape(ctx, qs, 3, q3, &qs));
    NAT_TRY(nat_bench_na_gather(ctx, k, p, 1, &kg)); /* [B, heads, S, D, K] */
    int64_t k3[3] = {B * heads * S, D, K};
    NAT_TRY(nat_reshape(ctx, kg, 3, k3, &kg));
    NAT_TRY(nat_matmul(ctx, qs, kg, &logits)); /* [B·heads·S, 1, K] */
    int64_t l4[4] = {B, heads, S, K};
    NAT_TRY(nat_reshape(ctx, logits, 4, l4, &logits));
    if (rpb) {
        nat_tensor *bias;
        NAT_TRY(nat_bench_na_gather_rpb(ctx, rpb, p, q->shape + 2, &bias)); /* [heads, S, K] */
        NAT_TRY(nat_add(ctx, logits, bias, &logits));
    }
    NAT_TRY(nat_softmax(ctx, logits, &logits));
    NAT_TRY(nat_dropout(ctx, logits, attn_drop, training, rng, &logits));
    int64_t a3[3] = {B * heads * S, 1, K};
    NAT_TRY(nat_reshape(ctx, logits, 3, a3, &logits));
    NAT_TRY(nat_bench_na_gather(ctx, v, p, 0, &vg)); /* [B, heads, S, K, D] */
    int64_t v3[3] = {B * heads * S, K, D};
    NAT_TRY(nat_reshape(ctx, vg, 3, v3, &vg));
    NAT_TRY(nat_matmul(ctx, logits, vg, &o));
    return nat_reshape(ctx, o, q->ndim, q->shape, out);
}
