/* models/nat/nat_model.c — building, initialising and running the NAT / DiNAT classifier
 * (include/nat/model.h; structure in nat_internal.h).
 *
 * Layouts: the input is NCHW; the tokenizer's convs run NCHW and everything after it is channels-last
 * [B, H, W, C] (LayerNorm, NA and Mlp work over the last dim), except the downsamplers' convs, which
 * see NCHW views (permutes; the conv op makes them dense). Init draws every value from one nat_rng
 * seeded with desc.seed, module by module in state_dict order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/nat/nat_internal.h"
#include "nat/cuda.h" /* nat_tensor_move */
#include "nat/ops.h"
#include "core/check.h"

#define LN_EPS 1e-5f
#define INIT_STD 0.02f

static nat_status build_layer(nat_block_layer *b, const nat_model_desc *d, int level, int j, float drop_path,
                              nat_rng *rng)
{
    int dim = d->embed_dim << level;
    b->drop_path = drop_path;
    if (d->layer_scale > 0.0f) {
        int64_t s[1] = {dim};
        NAT_TRY(nat_tensor_new(&b->gamma1, NAT_F32, NAT_CPU, 1, s));
        NAT_TRY(nat_tensor_new(&b->gamma2, NAT_F32, NAT_CPU, 1, s));
        nat_set_requires_grad(b->gamma1, true);
        nat_set_requires_grad(b->gamma2, true);
        NAT_TRY(nat_tensor_fill(b->gamma1, d->layer_scale));
        NAT_TRY(nat_tensor_fill(b->gamma2, d->layer_scale));
    }
    NAT_TRY(nat_layernorm_layer_init(&b->norm1, dim, LN_EPS));
    if (d->attention == NAT_ATTN_WINDOW) {
        int ws = d->window_size > 0 ? d->window_size : 7;
        nat_window_attn_desc wd = {dim, d->heads[level], ws, j % 2 ? ws / 2 : 0, d->qkv_bias,
                                   d->qk_scale > 0.0f ? d->qk_scale : 0.0f, d->drop};
        NAT_TRY(nat_window_attn_layer_init(&b->wattn, &wd, INIT_STD, rng));
    } else {
        nat_na_layer_desc nd = nat_na_layer_desc_make(2, dim, d->heads[level], d->kernel_size,
                                                      nat_model_desc_dilation(d, level, j));
        nd.qkv_bias = d->qkv_bias;
        nd.scale = d->qk_scale > 0.0f ? d->qk_scale : 0.0f;
        nd.attn_drop = d->attn_drop;
        nd.proj_drop = d->drop;
        NAT_TRY(nat_na_layer_init(&b->attn, &nd, INIT_STD, rng));
    }
    NAT_TRY(nat_layernorm_layer_init(&b->norm2, dim, LN_EPS));
    return nat_mlp_layer_init(&b->mlp, dim, (int)((float)dim * d->mlp_ratio), dim, d->drop, INIT_STD, rng);
}

static void free_layer(nat_block_layer *b)
{
    nat_tensor_free(b->gamma1);
    nat_tensor_free(b->gamma2);
    nat_layernorm_layer_free(&b->norm1);
    nat_na_layer_free(&b->attn);
    nat_window_attn_layer_free(&b->wattn);
    nat_layernorm_layer_free(&b->norm2);
    nat_mlp_layer_free(&b->mlp);
}

static nat_status layer_params(const nat_block_layer *b, nat_param_list *l, const char *prefix)
{
    char p[128];
    if (b->gamma1) {
        NAT_TRY(nat_param_list_add(l, prefix, "gamma1", b->gamma1, true));
        NAT_TRY(nat_param_list_add(l, prefix, "gamma2", b->gamma2, true));
    }
    snprintf(p, sizeof p, "%s.norm1", prefix);
    NAT_TRY(nat_layernorm_layer_params(&b->norm1, l, p));
    snprintf(p, sizeof p, "%s.attn", prefix);
    if (b->wattn.table)
        NAT_TRY(nat_window_attn_layer_params(&b->wattn, l, p));
    else
        NAT_TRY(nat_na_layer_params(&b->attn, l, p));
    snprintf(p, sizeof p, "%s.norm2", prefix);
    NAT_TRY(nat_layernorm_layer_params(&b->norm2, l, p));
    snprintf(p, sizeof p, "%s.mlp", prefix);
    return nat_mlp_layer_params(&b->mlp, l, p);
}

static nat_status list_params(nat_model *m)
{
    nat_param_list *l = &m->params;
    NAT_TRY(nat_conv2d_layer_params(&m->embed0, l, "patch_embed.proj.0"));
    NAT_TRY(nat_conv2d_layer_params(&m->embed1, l, "patch_embed.proj.1"));
    NAT_TRY(nat_layernorm_layer_params(&m->embed_norm, l, "patch_embed.norm"));
    char p[96];
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        const nat_level *lv = &m->levels[i];
        for (int j = 0; j < lv->depth; j++) {
            snprintf(p, sizeof p, "levels.%d.blocks.%d", i, j);
            NAT_TRY(layer_params(&lv->blocks[j], l, p));
        }
        if (lv->has_down) {
            snprintf(p, sizeof p, "levels.%d.downsample.reduction", i);
            NAT_TRY(nat_conv2d_layer_params(&lv->reduction, l, p));
            snprintf(p, sizeof p, "levels.%d.downsample.norm", i);
            NAT_TRY(nat_layernorm_layer_params(&lv->down_norm, l, p));
        }
    }
    NAT_TRY(nat_layernorm_layer_params(&m->norm, l, "norm"));
    return nat_linear_layer_params(&m->head, l, "head");
}

static nat_status build(nat_model *m, nat_rng *rng)
{
    const nat_model_desc *d = &m->desc;
    const int C = d->embed_dim;
    NAT_TRY(nat_conv2d_layer_init(&m->embed0, d->in_chans, C / 2, 3, 2, 1, true, rng));
    NAT_TRY(nat_conv2d_layer_init(&m->embed1, C / 2, C, 3, nat_model_desc_patch_stride(d) / 2, 1, true, rng));
    const int L = nat_model_desc_levels(d);
    NAT_TRY(nat_layernorm_layer_init(&m->embed_norm, C, LN_EPS));
    int total = 0, done = 0;
    for (int i = 0; i < L; i++)
        total += d->depths[i];
    for (int i = 0; i < L; i++) {
        nat_level *lv = &m->levels[i];
        lv->dim = C << i;
        lv->blocks = calloc((size_t)d->depths[i], sizeof *lv->blocks);
        if (!lv->blocks)
            return nat_error(NAT_ERR_OOM, "model: out of memory for %d layers", d->depths[i]);
        lv->depth = d->depths[i];
        for (int j = 0; j < lv->depth; j++, done++) {
            nat_status s = build_layer(&lv->blocks[j], d, i, j, nat_model_linspace(d->drop_path_rate, total, done), rng);
            if (s != NAT_OK)
                return nat_error_context(s, "levels.%d.blocks.%d", i, j);
        }
        lv->has_down = i < L - 1;
        if (lv->has_down) {
            NAT_TRY(nat_conv2d_layer_init(&lv->reduction, lv->dim, 2 * lv->dim, 3, 2, 1, false, rng));
            NAT_TRY(nat_layernorm_layer_init(&lv->down_norm, 2 * lv->dim, LN_EPS));
        }
    }
    int features = C << (L - 1);
    NAT_TRY(nat_layernorm_layer_init(&m->norm, features, LN_EPS));
    NAT_TRY(nat_linear_layer_init(&m->head, features, d->num_classes, true, INIT_STD, rng));
    return list_params(m);
}

nat_status nat_model_new(nat_model **out, const nat_model_desc *d)
{
    NAT_CHECK_ARG(out, "nat_model_new", "out");
    NAT_CHECK_ARG(d, "nat_model_new", "d");
    *out = NULL;
    if (!d)
        return nat_error(NAT_ERR_INVALID_ARG, "model: NULL description");
    NAT_TRY(nat_model_desc_check(d));
    nat_model *m = calloc(1, sizeof *m);
    if (!m)
        return nat_error(NAT_ERR_OOM, "model: out of memory");
    m->desc = *d;
    nat_param_list_init(&m->params);
    nat_rng rng;
    nat_rng_seed(&rng, d->seed);
    nat_status s = build(m, &rng);
    if (s != NAT_OK) {
        nat_model_free(m);
        return nat_error_context(s, "model %s", d->name[0] ? d->name : "custom");
    }
    *out = m;
    return NAT_OK;
}

nat_status nat_model_new_variant(nat_model **out, const char *name, int num_classes, int in_chans)
{
    NAT_CHECK_ARG(out, "nat_model_new_variant", "out");
    NAT_CHECK_ARG(name, "nat_model_new_variant", "name");
    *out = NULL;
    nat_model_desc d;
    NAT_TRY(nat_model_desc_variant(&d, name, num_classes, in_chans));
    return nat_model_new(out, &d);
}

void nat_model_free(nat_model *m)
{
    if (!m)
        return;
    nat_param_list_clear(&m->params);
    nat_conv2d_layer_free(&m->embed0);
    nat_conv2d_layer_free(&m->embed1);
    nat_layernorm_layer_free(&m->embed_norm);
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        nat_level *lv = &m->levels[i];
        for (int j = 0; j < lv->depth; j++)
            free_layer(&lv->blocks[j]);
        free(lv->blocks);
        nat_conv2d_layer_free(&lv->reduction);
        nat_layernorm_layer_free(&lv->down_norm);
    }
    nat_layernorm_layer_free(&m->norm);
    nat_linear_layer_free(&m->head);
    free(m);
}

const nat_model_desc *nat_model_get_desc(const nat_model *m) { return &m->desc; }

nat_status nat_model_to(nat_model *m, nat_device dev)
{
    NAT_CHECK_ARG(m, "nat_model_to", "m");
    for (int i = 0; i < m->params.count; i++) {
        nat_status s = nat_tensor_move(m->params.items[i].tensor, dev);
        if (s != NAT_OK)
            return nat_error_context(s, "model to %s: parameter %s", nat_device_name(dev), m->params.items[i].name);
    }
    return NAT_OK;
}

nat_device nat_model_device(const nat_model *m)
{
    return m->params.count > 0 ? m->params.items[0].tensor->device : NAT_CPU;
}

void nat_model_set_part_hook(nat_model *m, nat_model_part_fn fn, void *user)
{
    m->part_hook = fn;
    m->part_user = user;
}
const nat_param_list *nat_model_params(const nat_model *m) { return &m->params; }
int64_t nat_model_param_count(const nat_model *m) { return nat_param_list_numel(&m->params); }
void nat_model_zero_grad(nat_model *m) { nat_param_list_zero_grad(&m->params); }

/* ---- forward ---- */

static const int to_nhwc[4] = {0, 2, 3, 1};
static const int to_nchw[4] = {0, 3, 1, 2};

/* nat_model_trace_part, or nothing when tm is NULL. */
static nat_status trace_part(const nat_model *tm, nat_ctx *ctx, nat_model_part_kind kind, int level, int j,
                             nat_tensor **h)
{
    return tm ? nat_model_trace_part(tm, ctx, kind, level, j, h) : NAT_OK;
}

/* x + drop_path(γ · f), f already computed. */
static nat_status residual(nat_ctx *ctx, nat_tensor *x, nat_tensor *f, nat_tensor *gamma, float p, bool training,
                           nat_rng *rng, nat_tensor **out)
{
    if (gamma)
        NAT_TRY(nat_mul(ctx, f, gamma, &f));
    NAT_TRY(nat_drop_path(ctx, f, p, training, rng, &f));
    return nat_add(ctx, x, f, out);
}

/* One NAT layer. tm: the model whose trace hook to call (NULL: none — the recomputation of a
 * checkpointed layer must not report its parts a second time). */
static nat_status layer_forward(nat_ctx *ctx, const nat_model *m, const nat_model *tm, const nat_block_layer *b,
                                int level, int j, nat_tensor *x, bool training, nat_rng *rng, nat_tensor **out)
{
    nat_tensor *h;
    NAT_TRY(nat_layernorm_layer_forward(ctx, &b->norm1, x, &h));
    NAT_TRY(trace_part(tm, ctx, NAT_PART_NORM1, level, j, &h));
    if (b->wattn.table)
        NAT_TRY(nat_window_attn_layer_forward(ctx, &b->wattn, h, training, rng, &h));
    else if (m->na_fn)
        NAT_TRY(nat_na_layer_forward_with(ctx, &b->attn, h, training, rng, m->na_fn, &h));
    else
        NAT_TRY(nat_na_layer_forward(ctx, &b->attn, h, training, rng, &h));
    NAT_TRY(residual(ctx, x, h, b->gamma1, b->drop_path, training, rng, &x));
    NAT_TRY(trace_part(tm, ctx, NAT_PART_ATTN, level, j, &x));
    NAT_TRY(nat_layernorm_layer_forward(ctx, &b->norm2, x, &h));
    NAT_TRY(trace_part(tm, ctx, NAT_PART_NORM2, level, j, &h));
    NAT_TRY(nat_mlp_layer_forward(ctx, &b->mlp, h, training, rng, &h));
    NAT_TRY(residual(ctx, x, h, b->gamma2, b->drop_path, training, rng, out));
    return trace_part(tm, ctx, NAT_PART_MLP, level, j, out);
}

/* A checkpointed layer (nat_recompute): what its two runs need. */
typedef struct recompute_layer {
    const nat_model *m;
    const nat_block_layer *b;
    int level, j;
    bool training;
    nat_rng rng;   /* the state at the layer's start: both runs draw the same drop-path masks */
    nat_rng *live; /* the caller's generator, advanced by the first run only */
} recompute_layer;

static nat_status recompute_layer_fn(nat_ctx *ctx, nat_tensor *x, void *user, bool recompute, nat_tensor **y)
{
    const recompute_layer *u = user;
    nat_rng r = u->rng;
    NAT_TRY(layer_forward(ctx, u->m, recompute ? NULL : u->m, u->b, u->level, u->j, x, u->training,
                          u->live ? &r : NULL, y));
    if (!recompute && u->live)
        *u->live = r;
    return NAT_OK;
}

static nat_status run_layer(nat_ctx *ctx, const nat_model *m, const nat_block_layer *b, int level, int j,
                            nat_tensor *x, bool training, nat_rng *rng, nat_tensor **out)
{
    if (!m->recompute || !nat_ctx_grad_enabled(ctx))
        return layer_forward(ctx, m, m, b, level, j, x, training, rng, out);
    recompute_layer u = {m, b, level, j, training, {{0}}, rng};
    if (rng)
        u.rng = *rng;
    return nat_recompute(ctx, recompute_layer_fn, &u, sizeof u, x, b->norm1.weight, out);
}

static void part_done(const nat_model *m, const char *part)
{
    if (m->part_hook)
        m->part_hook(m->part_user, part);
}

nat_status nat_model_forward(nat_model *m, nat_ctx *ctx, nat_tensor *x, bool training, nat_rng *rng,
                             nat_tensor **logits)
{
    NAT_CHECK_ARG(m, "nat_model_forward", "m");
    NAT_CHECK_ARG(ctx, "nat_model_forward", "ctx");
    NAT_CHECK_ARG(logits, "nat_model_forward", "logits");
    const nat_model_desc *d = &m->desc;
    if (x->ndim != 4 || x->shape[1] != d->in_chans || x->shape[2] < 1 || x->shape[3] < 1) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "model %s: input %s; expected images [B, %d, H, W]", d->name[0] ? d->name : "custom",
                         nat_shape_str(x, sx, sizeof sx), d->in_chans);
    }
    nat_tensor *h;
    NAT_TRY(nat_conv2d_layer_forward(ctx, &m->embed0, x, &h));
    NAT_TRY(nat_conv2d_layer_forward(ctx, &m->embed1, h, &h));
    NAT_TRY(nat_permute(ctx, h, to_nhwc, &h));
    NAT_TRY(nat_layernorm_layer_forward(ctx, &m->embed_norm, h, &h));
    NAT_TRY(nat_dropout(ctx, h, d->drop, training, rng, &h));
    NAT_TRY(nat_model_trace_part(m, ctx, NAT_PART_TOKENIZER, -1, -1, &h));
    part_done(m, "patch_embed");
    static const char *const level_names[NAT_MODEL_LEVELS] = {"levels.0", "levels.1", "levels.2", "levels.3"};
    static const char *const down_names[NAT_MODEL_LEVELS] = {"levels.0.downsample", "levels.1.downsample",
                                                             "levels.2.downsample", "levels.3.downsample"};
    for (int i = 0; i < nat_model_desc_levels(d); i++) {
        const nat_level *lv = &m->levels[i];
        /* Without a tape nothing is saved for backward: after each block, everything the level made
         * so far (the block's temporaries, the previous block's output) is dead but the new output. */
        const bool release = !nat_ctx_grad_enabled(ctx);
        const int64_t mark = nat_ctx_mark(ctx);
        for (int j = 0; j < lv->depth; j++) {
            nat_status s = run_layer(ctx, m, &lv->blocks[j], i, j, h, training, rng, &h);
            if (s == NAT_OK && release)
                s = nat_ctx_release_since(ctx, mark, h);
            if (s != NAT_OK)
                return nat_error_context(s, "levels.%d.blocks.%d", i, j);
        }
        part_done(m, level_names[i]);
        if (lv->has_down) {
            NAT_TRY(nat_permute(ctx, h, to_nchw, &h));
            NAT_TRY(nat_conv2d_layer_forward(ctx, &lv->reduction, h, &h));
            NAT_TRY(nat_permute(ctx, h, to_nhwc, &h));
            NAT_TRY(nat_layernorm_layer_forward(ctx, &lv->down_norm, h, &h));
            NAT_TRY(nat_model_trace_part(m, ctx, NAT_PART_DOWNSAMPLE, i, -1, &h));
            part_done(m, down_names[i]);
        }
    }
    NAT_TRY(nat_layernorm_layer_forward(ctx, &m->norm, h, &h));
    NAT_TRY(nat_global_avg_pool(ctx, h, 1, &h));
    NAT_TRY(nat_linear_layer_forward(ctx, &m->head, h, logits));
    NAT_TRY(nat_model_trace_part(m, ctx, NAT_PART_HEAD, -1, -1, logits));
    part_done(m, "head");
    return NAT_OK;
}
