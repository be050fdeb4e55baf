/* layers/window_attention.c — Swin Transformer's (shifted-)window self-attention, the baseline that
 * neighborhood attention is measured against inside the same NAT skeleton (include/nat/layers.h has the
 * module's steps; models/nat picks it with nat_model_desc.attention).
 *
 * Layouts: x [B, H, W, C] channels-last; windows [B·nW, N, C] with N = ws² tokens, windows row-major
 * over the padded, rolled map (window (wy, wx) of image b is row b·nW + wy·(Wp/ws) + wx) and tokens
 * row-major inside a window; qkv [B·nW, N, 3C] holds q, k, v along the last dim, each split into heads
 * of hd = C/heads channels ([3, heads, hd], PyTorch's reshape(B_, N, 3, heads, hd)); the relative
 * position bias table is [(2·window-1)², heads] as Swin's relative_position_bias_table.
 *
 * Three ops with hand-written backwards: partition (pad + roll + split into windows; a bijection
 * between padded positions and window slots, so its backward is a gather), reverse (its inverse) and
 * the attention of every (window, head) pair — per pair two small sgemms forward and four backward,
 * OpenMP over the pairs (oneDNN's sgemm runs single-threaded inside the parallel region). The attention
 * weights P [B·nW, heads, N, N] are saved for backward; the bias/mask gradient is summed per thread in
 * thread order, so a given thread count gives the same bits every run.
 */
#include <oneapi/dnnl/dnnl.h> /* dnnl_sgemm */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "nat/op.h"
#include "layers/layers_internal.h"
#include "nat/ops.h"
#include "core/check.h"

#define MASK_VALUE -100.0f /* Swin's */

/* Row of the windows tensor that holds source pixel (y, x) of image b (y < Hp, x < Wp). */
typedef struct win_geom {
    int64_t B, H, W, C, Hp, Wp, nwh, nww, N;
    int ws, shift;
} win_geom;

static win_geom geom(int64_t B, int64_t H, int64_t W, int64_t C, int ws, int shift)
{
    win_geom g = {B, H, W, C, 0, 0, 0, 0, (int64_t)ws * ws, ws, shift};
    g.nwh = (H + ws - 1) / ws;
    g.nww = (W + ws - 1) / ws;
    g.Hp = g.nwh * ws;
    g.Wp = g.nww * ws;
    return g;
}

static int64_t win_row(const win_geom *g, int64_t b, int64_t y, int64_t x)
{
    int64_t yr = (y - g->shift + g->Hp) % g->Hp, xr = (x - g->shift + g->Wp) % g->Wp;
    return ((b * g->nwh + yr / g->ws) * g->nww + xr / g->ws) * g->N + (yr % g->ws) * g->ws + xr % g->ws;
}

static nat_status check_window(int ws, int shift, const char *op)
{
    if (ws < 1 || shift < 0 || (shift > 0 && shift >= ws))
        return nat_error(NAT_ERR_INVALID_ARG, "%s: window %d with shift %d (need window >= 1, 0 <= shift < window)", op,
                         ws, shift);
    return NAT_OK;
}

/* ---- partition and reverse ---- */

/* dst rows <- src rows. to_windows: src is the image [B, H, W, C], dst the windows (padded slots are
 * zeroed); otherwise src is the windows and dst the image. add: dst += instead of =. */
static void move_rows(const win_geom *g, const float *src, float *dst, bool to_windows, bool add)
{
    const int64_t C = g->C;
    if (to_windows && !add)
        memset(dst, 0, sizeof(float) * (size_t)(g->B * g->nwh * g->nww * g->N * C));
#pragma omp parallel for collapse(2) schedule(static) if (g->B * g->H * g->W * C > 32768)
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t y = 0; y < g->H; y++)
            for (int64_t x = 0; x < g->W; x++) {
                int64_t r = win_row(g, b, y, x), p = (b * g->H + y) * g->W + x;
                const float *s = src + (to_windows ? p : r) * C;
                float *d = dst + (to_windows ? r : p) * C;
                if (add)
                    for (int64_t c = 0; c < C; c++)
                        d[c] += s[c];
                else
                    memcpy(d, s, sizeof(float) * (size_t)C);
            }
}

static win_geom node_geom(const nat_node *n)
{
    return geom(n->i[0], n->i[1], n->i[2], n->i[3], (int)n->i[4], (int)n->i[5]);
}

static void save_geom(nat_node *n, const win_geom *g)
{
    n->i[0] = g->B, n->i[1] = g->H, n->i[2] = g->W, n->i[3] = g->C, n->i[4] = g->ws, n->i[5] = g->shift;
}

static nat_status partition_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gx, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    if (!gx)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    win_geom wg = node_geom(node);
    move_rows(&wg, nat_tensor_f32(gd), nat_tensor_f32(gx), false, true);
    return NAT_OK;
}

static const nat_op_def partition_op = {"window_partition", partition_backward};

nat_status nat_window_partition(nat_ctx *ctx, nat_tensor *x, int ws, int shift, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_window_partition", "ctx");
    NAT_CHECK_ARG(out, "nat_window_partition", "out");
    NAT_TRY(nat_check_f32(ctx, x, "window_partition", "x"));
    NAT_TRY(check_window(ws, shift, "window_partition"));
    if (x->ndim != 4) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "window_partition: x %s; expected [B, H, W, C]", nat_shape_str(x, sx, sizeof sx));
    }
    win_geom g = geom(x->shape[0], x->shape[1], x->shape[2], x->shape[3], ws, shift);
    nat_tensor *xd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    int64_t s[3] = {g.B * g.nwh * g.nww, g.N, g.C};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 3, s));
    move_rows(&g, nat_tensor_f32(xd), nat_tensor_f32(y), true, false);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &partition_op, y, 1, &x, &node));
    if (node)
        save_geom(node, &g);
    *out = y;
    return NAT_OK;
}

static nat_status reverse_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *gw, *gd;
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gw));
    if (!gw)
        return NAT_OK;
    NAT_TRY(nat_dense(ctx, g, &gd));
    win_geom wg = node_geom(node);
    move_rows(&wg, nat_tensor_f32(gd), nat_tensor_f32(gw), true, true);
    return NAT_OK;
}

static const nat_op_def reverse_op = {"window_reverse", reverse_backward};

nat_status nat_window_reverse(nat_ctx *ctx, nat_tensor *windows, int64_t H, int64_t W, int ws, int shift,
                              nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_window_reverse", "ctx");
    NAT_CHECK_ARG(out, "nat_window_reverse", "out");
    NAT_TRY(nat_check_f32(ctx, windows, "window_reverse", "windows"));
    NAT_TRY(check_window(ws, shift, "window_reverse"));
    char sw[96];
    if (H < 1 || W < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "window_reverse: map %" PRId64 " x %" PRId64 " is empty", H, W);
    win_geom g = geom(1, H, W, windows->ndim == 3 ? windows->shape[2] : 0, ws, shift);
    int64_t nw = g.nwh * g.nww;
    if (windows->ndim != 3 || windows->shape[1] != g.N || windows->shape[0] % nw)
        return nat_error(NAT_ERR_SHAPE, "window_reverse: windows %s do not tile a %" PRId64 " x %" PRId64
                         " map with window %d ([B·%" PRId64 ", %" PRId64 ", C] expected)",
                         nat_shape_str(windows, sw, sizeof sw), H, W, ws, nw, g.N);
    g.B = windows->shape[0] / nw;
    nat_tensor *wd, *y;
    NAT_TRY(nat_dense(ctx, windows, &wd));
    int64_t s[4] = {g.B, H, W, g.C};
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 4, s));
    move_rows(&g, nat_tensor_f32(wd), nat_tensor_f32(y), false, false);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &reverse_op, y, 1, &windows, &node));
    if (node)
        save_geom(node, &g);
    *out = y;
    return NAT_OK;
}

/* ---- the shift mask ---- */

/* Swin's img_mask regions per axis: slices (0, -ws), (-ws, -shift), (-shift, None). */
static int region(int64_t i, int64_t L, int ws, int shift) { return i < L - ws ? 0 : i < L - shift ? 1 : 2; }

nat_status nat_window_mask(nat_ctx *ctx, int64_t Hp, int64_t Wp, int ws, int shift, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_window_mask", "ctx");
    NAT_CHECK_ARG(out, "nat_window_mask", "out");
    NAT_TRY(check_window(ws, shift, "window_mask"));
    if (Hp < ws || Wp < ws || Hp % ws || Wp % ws)
        return nat_error(NAT_ERR_INVALID_ARG, "window_mask: map %" PRId64 " x %" PRId64 " is not a multiple of window %d",
                         Hp, Wp, ws);
    const int64_t nwh = Hp / ws, nww = Wp / ws, N = (int64_t)ws * ws;
    int64_t s[3] = {nwh * nww, N, N};
    NAT_TRY(nat_ctx_empty(ctx, out, NAT_F32, 3, s));
    float *m = nat_tensor_f32(*out);
    for (int64_t wy = 0; wy < nwh; wy++)
        for (int64_t wx = 0; wx < nww; wx++) {
            float *mw = m + (wy * nww + wx) * N * N;
            for (int64_t i = 0; i < N; i++) {
                int ri = shift ? region(wy * ws + i / ws, Hp, ws, shift) * 3 + region(wx * ws + i % ws, Wp, ws, shift) : 0;
                for (int64_t j = 0; j < N; j++) {
                    int rj = shift ? region(wy * ws + j / ws, Hp, ws, shift) * 3 + region(wx * ws + j % ws, Wp, ws, shift)
                                   : 0;
                    mw[i * N + j] = ri == rj ? 0.0f : MASK_VALUE;
                }
            }
        }
    return NAT_OK;
}

/* ---- attention inside windows ---- */

/* Table row of the offset between tokens i and j of a ws x ws window, in a table made for `window`. */
static int64_t table_row(int64_t i, int64_t j, int ws, int window)
{
    int64_t dy = i / ws - j / ws + window - 1, dx = i % ws - j % ws + window - 1;
    return dy * (2 * window - 1) + dx;
}

static void softmax_row(float *r, int64_t n)
{
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t j = 0; j < n; j++)
        mx = r[j] > mx ? r[j] : mx;
    for (int64_t j = 0; j < n; j++) {
        r[j] = expf(r[j] - mx);
        sum += r[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; j++)
        r[j] *= inv;
}

static nat_status attention_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *qkv = node->saved[0], *P = node->saved[1];
    const int64_t heads = node->i[0], ws = node->i[1], window = node->i[2], Bw = node->i[3], C = node->i[4];
    const int64_t N = ws * ws, hd = C / heads, C3 = 3 * C;
    const float scale = (float)node->f[0];
    nat_tensor *gd, *gqkv, *gtab;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gqkv));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gtab));
    const int nt = omp_get_max_threads();
    float *scr, *dbias = NULL;
    NAT_TRY(nat_ctx_scratch(ctx, sizeof(float) * (size_t)(nt * (N * N + heads * N * N)), (void **)&scr));
    if (gtab) {
        dbias = scr + nt * N * N;
        memset(dbias, 0, sizeof(float) * (size_t)(nt * heads * N * N));
    }
    const float *Q = nat_tensor_f32(qkv), *Pw = nat_tensor_f32(P), *G = nat_tensor_f32(gd);
    float *GQ = gqkv ? nat_tensor_f32(gqkv) : NULL;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num();
        float *dP = scr + t * N * N, *db = dbias ? dbias + t * heads * N * N : NULL;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < Bw * heads; bh++) {
            const int64_t b = bh / heads, h = bh % heads;
            const float *q = Q + b * N * C3 + h * hd, *k = q + C, *v = q + 2 * C, *p = Pw + bh * N * N;
            const float *dO = G + b * N * C + h * hd;
            dnnl_sgemm('N', 'T', (int)N, (int)N, (int)hd, 1.0f, dO, (int)C, v, (int)C3,
                        0.0f, dP, (int)N);
            if (GQ) /* dV += Pᵀ dO */
                dnnl_sgemm('T', 'N', (int)N, (int)hd, (int)N, 1.0f, p, (int)N, dO,
                            (int)C, 1.0f, GQ + b * N * C3 + 2 * C + h * hd, (int)C3);
            for (int64_t i = 0; i < N; i++) { /* dS = P ⊙ (dP - Σ P ⊙ dP) */
                const float *pr = p + i * N;
                float *dr = dP + i * N, dot = 0.0f;
                for (int64_t j = 0; j < N; j++)
                    dot += pr[j] * dr[j];
                for (int64_t j = 0; j < N; j++)
                    dr[j] = pr[j] * (dr[j] - dot);
            }
            if (db)
                for (int64_t e = 0; e < N * N; e++)
                    db[h * N * N + e] += dP[e];
            if (GQ) {
                float *gq = GQ + b * N * C3 + h * hd;
                dnnl_sgemm('N', 'N', (int)N, (int)hd, (int)N, scale, dP, (int)N, k,
                            (int)C3, 1.0f, gq, (int)C3);
                dnnl_sgemm('T', 'N', (int)N, (int)hd, (int)N, scale, dP, (int)N, q,
                            (int)C3, 1.0f, gq + C, (int)C3);
            }
        }
    }
    if (gtab) {
        float *T = nat_tensor_f32(gtab);
        for (int t = 1; t < nt; t++)
            for (int64_t e = 0; e < heads * N * N; e++)
                dbias[e] += dbias[t * heads * N * N + e];
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < N; j++)
                    T[table_row(i, j, (int)ws, (int)window) * heads + h] += dbias[(h * N + i) * N + j];
    }
    return NAT_OK;
}

static const nat_op_def attention_op = {"window_attention", attention_backward};

nat_status nat_window_attention(nat_ctx *ctx, nat_tensor *qkv, nat_tensor *table, nat_tensor *mask, int heads,
                                int ws, int window, float scale, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_window_attention", "ctx");
    NAT_CHECK_ARG(out, "nat_window_attention", "out");
    const char *op = "window_attention";
    NAT_TRY(nat_check_f32(ctx, qkv, op, "qkv"));
    NAT_TRY(nat_check_f32(ctx, table, op, "table"));
    char s1[96], s2[96];
    if (ws < 1 || window < ws || heads < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: window %d in a table for window %d with %d heads", op, ws, window, heads);
    const int64_t N = (int64_t)ws * ws, tab = (int64_t)(2 * window - 1) * (2 * window - 1);
    if (qkv->ndim != 3 || qkv->shape[1] != N || qkv->shape[2] % (3 * heads))
        return nat_error(NAT_ERR_SHAPE, "%s: qkv %s; expected [windows, %" PRId64 ", 3·C] with C a multiple of %d heads",
                         op, nat_shape_str(qkv, s1, sizeof s1), N, heads);
    if (table->ndim != 2 || table->shape[0] != tab || table->shape[1] != heads)
        return nat_error(NAT_ERR_SHAPE, "%s: table %s; window %d with %d heads needs [%" PRId64 ", %d]", op,
                         nat_shape_str(table, s1, sizeof s1), window, heads, tab, heads);
    const int64_t Bw = qkv->shape[0], C = qkv->shape[2] / 3, hd = C / heads, C3 = 3 * C;
    int64_t nw = 1;
    if (mask) {
        NAT_TRY(nat_check_f32(ctx, mask, op, "mask"));
        nw = mask->ndim == 3 ? mask->shape[0] : 0;
        if (mask->ndim != 3 || mask->shape[1] != N || mask->shape[2] != N || nw < 1 || Bw % nw)
            return nat_error(NAT_ERR_SHAPE, "%s: mask %s does not fit qkv %s ([nW, %" PRId64 ", %" PRId64 "], nW dividing the windows)",
                             op, nat_shape_str(mask, s1, sizeof s1), nat_shape_str(qkv, s2, sizeof s2), N, N);
    }
    if (scale <= 0.0f)
        scale = 1.0f / sqrtf((float)hd);
    nat_tensor *qd, *td, *md = NULL, *P, *y;
    NAT_TRY(nat_dense(ctx, qkv, &qd));
    NAT_TRY(nat_dense(ctx, table, &td));
    if (mask)
        NAT_TRY(nat_dense(ctx, mask, &md));
    int64_t ps[4] = {Bw, heads, N, N}, ys[3] = {Bw, N, C};
    NAT_TRY(nat_ctx_empty(ctx, &P, NAT_F32, 4, ps));
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, 3, ys));
    float *bias;
    NAT_TRY(nat_ctx_scratch(ctx, sizeof(float) * (size_t)(heads * N * N), (void **)&bias));
    const float *T = nat_tensor_f32(td);
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++)
                bias[(h * N + i) * N + j] = T[table_row(i, j, ws, window) * heads + h];
    const float *Q = nat_tensor_f32(qd), *M = md ? nat_tensor_f32(md) : NULL;
    float *Pw = nat_tensor_f32(P), *Y = nat_tensor_f32(y);
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < Bw * heads; bh++) {
        const int64_t b = bh / heads, h = bh % heads;
        const float *q = Q + b * N * C3 + h * hd, *k = q + C, *v = q + 2 * C, *bh_bias = bias + h * N * N;
        const float *m = M ? M + (b % nw) * N * N : NULL;
        float *p = Pw + bh * N * N;
        dnnl_sgemm('N', 'T', (int)N, (int)N, (int)hd, scale, q, (int)C3, k, (int)C3,
                    0.0f, p, (int)N);
        for (int64_t i = 0; i < N; i++) {
            float *r = p + i * N;
            for (int64_t j = 0; j < N; j++)
                r[j] += bh_bias[i * N + j] + (m ? m[i * N + j] : 0.0f);
            softmax_row(r, N);
        }
        dnnl_sgemm('N', 'N', (int)N, (int)hd, (int)N, 1.0f, p, (int)N, v, (int)C3,
                    0.0f, Y + b * N * C + h * hd, (int)C);
    }
    nat_node *node;
    nat_tensor *ins[2] = {qkv, table};
    NAT_TRY(nat_ctx_record(ctx, &attention_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = qd;
        node->saved[1] = P;
        node->n_saved = 2;
        node->i[0] = heads, node->i[1] = ws, node->i[2] = window, node->i[3] = Bw, node->i[4] = C;
        node->f[0] = scale;
    }
    *out = y;
    return NAT_OK;
}

/* ---- the module ---- */

nat_status nat_window_attn_layer_init(nat_window_attn_layer *m, const nat_window_attn_desc *d, float std, nat_rng *rng)
{
    NAT_CHECK_ARG(m, "nat_window_attn_layer_init", "m");
    NAT_CHECK_ARG(d, "nat_window_attn_layer_init", "d");
    *m = (nat_window_attn_layer){0};
    if (d->dim < 1 || d->heads < 1 || d->dim % d->heads)
        return nat_error(NAT_ERR_INVALID_ARG, "window attention: %d heads do not divide dim %d", d->heads, d->dim);
    NAT_TRY(check_window(d->window, d->shift, "window attention"));
    if (!(d->proj_drop >= 0.0f && d->proj_drop < 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "window attention: proj_drop %g must be in [0, 1)", (double)d->proj_drop);
    m->desc = *d;
    int64_t ts[2] = {(int64_t)(2 * d->window - 1) * (2 * d->window - 1), d->heads};
    nat_status s = nat_layers_param_new(&m->table, 2, ts);
    if (s == NAT_OK) {
        nat_layers_fill_trunc_normal(m->table, 0.02f, rng);
        s = nat_linear_layer_init(&m->qkv, d->dim, 3 * d->dim, d->qkv_bias, std, rng);
    }
    if (s == NAT_OK)
        s = nat_linear_layer_init(&m->proj, d->dim, d->dim, true, std, rng);
    if (s != NAT_OK) {
        nat_window_attn_layer_free(m);
        return nat_error_context(s, "window attention (dim %d, heads %d, window %d)", d->dim, d->heads, d->window);
    }
    return NAT_OK;
}

nat_status nat_window_attn_layer_forward(nat_ctx *ctx, const nat_window_attn_layer *m, nat_tensor *x, bool training,
                                         nat_rng *rng, nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_window_attn_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_window_attn_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_window_attn_layer_forward", "out");
    const nat_window_attn_desc *d = &m->desc;
    if (x->ndim != 4 || x->shape[3] != d->dim || x->shape[1] < 1 || x->shape[2] < 1) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "window attention: input %s; expected [B, H, W, %d] (channels last)",
                         nat_shape_str(x, sx, sizeof sx), d->dim);
    }
    const int64_t H = x->shape[1], W = x->shape[2], small = H < W ? H : W;
    int ws = d->window, shift = d->shift;
    if (small <= ws) {
        ws = (int)small;
        shift = 0;
    }
    nat_tensor *w, *mask = NULL;
    NAT_TRY(nat_window_partition(ctx, x, ws, shift, &w));
    NAT_TRY(nat_linear_layer_forward(ctx, &m->qkv, w, &w));
    if (shift)
        NAT_TRY(nat_window_mask(ctx, (H + ws - 1) / ws * ws, (W + ws - 1) / ws * ws, ws, shift, &mask));
    NAT_TRY(nat_window_attention(ctx, w, m->table, mask, d->heads, ws, d->window, d->scale, &w));
    NAT_TRY(nat_linear_layer_forward(ctx, &m->proj, w, &w));
    NAT_TRY(nat_window_reverse(ctx, w, H, W, ws, shift, &w));
    return nat_dropout(ctx, w, d->proj_drop, training, rng, out);
}

nat_status nat_window_attn_layer_params(const nat_window_attn_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_window_attn_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_window_attn_layer_params", "l");
    char p[256];
    const char *pre = prefix ? prefix : "", *dot = prefix && *prefix ? "." : "";
    NAT_TRY(nat_param_list_add(l, prefix, "relative_position_bias_table", m->table, true));
    snprintf(p, sizeof p, "%s%sqkv", pre, dot);
    NAT_TRY(nat_linear_layer_params(&m->qkv, l, p));
    snprintf(p, sizeof p, "%s%sproj", pre, dot);
    return nat_linear_layer_params(&m->proj, l, p);
}

void nat_window_attn_layer_free(nat_window_attn_layer *m)
{
    nat_linear_layer_free(&m->qkv);
    nat_tensor_free(m->table);
    m->table = NULL;
    nat_linear_layer_free(&m->proj);
}
