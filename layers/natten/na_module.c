/* layers/natten/na_module.c — the NeighborhoodAttention module in 1-D, 2-D and 3-D, exactly NATTEN's
 * NeighborhoodAttention{1,2,3}D as NAT and DiNAT use it (see include/nat/layers.h):
 *
 *   x [B, *spatial, C] --pad each short axis at its end up to kernel·dilation (zeros)-->
 *   qkv Linear(C, 3C) --read as [B, S, 3, heads, hd], S = prod(spatial); one copy--> q, k, v stacked
 *   [3, B, heads, *spatial, hd] --NA (scale·q·k + rpb, softmax, attn_drop, ·v; nat_na_packed)-->
 *   [B, heads, *spatial, hd] --one copy--> [B, *spatial, C]
 *   --crop to the input's size--> proj Linear(C, C) --> proj_drop
 *
 * NATTEN multiplies q by the scale before the QK op; the ops here take the scale instead (same values).
 * The padding happens before the qkv projection, so padded tokens are the qkv bias, not zeros: that is
 * what checkpoints trained with NATTEN expect. The fused op keeps no attention weights; attention
 * dropout needs them, so training with attn_drop > 0 takes the unfused qk -> softmax -> dropout -> av.
 * nat_na_layer_forward_with takes another NA algorithm (layers/layers_internal.h: nat-profile's
 * unfused and the legacy gather of bench/na_gather.c) for measurements; everything around it is the
 * same code.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/layers_internal.h"
#include "nat/natten.h"
#include "nat/ops.h"
#include "core/check.h"

nat_na_layer_desc nat_na_layer_desc_make(int ndim, int dim, int heads, int kernel, int dilation)
{
    nat_na_layer_desc d = {0};
    d.ndim = ndim;
    d.dim = dim;
    d.heads = heads;
    for (int a = 0; a < 3; a++) {
        d.kernel[a] = kernel;
        d.dilation[a] = dilation;
    }
    d.qkv_bias = true;
    d.rpb = true;
    return d;
}

static nat_status check_desc(const nat_na_layer_desc *d)
{
    if (d->ndim < 1 || d->ndim > 3)
        return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: ndim %d (1, 2 or 3 spatial axes)", d->ndim);
    if (d->dim < 1 || d->heads < 1 || d->dim % d->heads != 0)
        return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: %d heads do not divide dim %d", d->heads, d->dim);
    bool causal = false;
    for (int a = 0; a < d->ndim; a++) {
        if (d->kernel[a] < 3 || d->kernel[a] % 2 == 0)
            return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: kernel size %d on axis %d must be odd and >= 3",
                             d->kernel[a], a);
        if (d->dilation[a] < 1)
            return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: dilation %d on axis %d must be >= 1",
                             d->dilation[a], a);
        if (d->causal[a] != 0 && d->causal[a] != 1)
            return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: causal %d on axis %d must be 0 or 1",
                             d->causal[a], a);
        causal |= d->causal[a] != 0;
    }
    if (causal && d->rpb)
        return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: relative positional bias cannot be used with a causal axis");
    if (!(d->attn_drop >= 0.0f && d->attn_drop < 1.0f) || !(d->proj_drop >= 0.0f && d->proj_drop < 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "neighborhood attention: attn_drop %g / proj_drop %g must be in [0, 1)",
                         (double)d->attn_drop, (double)d->proj_drop);
    return NAT_OK;
}

nat_status nat_na_layer_init(nat_na_layer *m, const nat_na_layer_desc *d, float std, nat_rng *rng)
{
    NAT_CHECK_ARG(m, "nat_na_layer_init", "m");
    NAT_CHECK_ARG(d, "nat_na_layer_init", "d");
    *m = (nat_na_layer){0};
    NAT_TRY(check_desc(d));
    m->desc = *d;
    nat_status s = nat_linear_layer_init(&m->qkv, d->dim, 3 * d->dim, d->qkv_bias, std, rng);
    if (s == NAT_OK && d->rpb) {
        int64_t rs[4] = {d->heads, 2 * d->kernel[0] - 1, 2 * d->kernel[1] - 1, 2 * d->kernel[2] - 1};
        s = nat_layers_param_new(&m->rpb, d->ndim + 1, rs);
        if (s == NAT_OK)
            nat_layers_fill_trunc_normal(m->rpb, 0.02f, rng);
    }
    if (s == NAT_OK)
        s = nat_linear_layer_init(&m->proj, d->dim, d->dim, true, std, rng);
    if (s != NAT_OK) {
        nat_na_layer_free(m);
        return nat_error_context(s, "neighborhood attention (dim %d, heads %d)", d->dim, d->heads);
    }
    return NAT_OK;
}

nat_status nat_na_layer_forward(nat_ctx *ctx, const nat_na_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                nat_tensor **out)
{
    NAT_CHECK_ARG(ctx, "nat_na_layer_forward", "ctx");
    NAT_CHECK_ARG(m, "nat_na_layer_forward", "m");
    NAT_CHECK_ARG(out, "nat_na_layer_forward", "out");
    return nat_na_layer_forward_with(ctx, m, x, training, rng, NULL, out);
}

nat_status nat_na_unfused(nat_ctx *ctx, nat_tensor *q, nat_tensor *k, nat_tensor *v, nat_tensor *rpb,
                          const nat_na_params *p, float attn_drop, bool training, nat_rng *rng, nat_tensor **out)
{
    nat_tensor *attn;
    NAT_TRY(nat_na_qk(ctx, q, k, rpb, p, &attn));
    NAT_TRY(nat_softmax(ctx, attn, &attn));
    NAT_TRY(nat_dropout(ctx, attn, attn_drop, training, rng, &attn));
    return nat_na_av(ctx, attn, v, p, out);
}

nat_status nat_na_layer_forward_with(nat_ctx *ctx, const nat_na_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                     nat_na_fn fn, nat_tensor **out)
{
    const nat_na_layer_desc *d = &m->desc;
    const int nd = d->ndim;
    const int64_t C = d->dim, heads = d->heads, hd = C / heads;
    if (x->ndim != nd + 2 || x->shape[nd + 1] != C) {
        char sx[96];
        return nat_error(NAT_ERR_SHAPE, "neighborhood attention %dd: input %s; expected [B, %s, %" PRId64 "] (channels last)",
                         nd, nat_shape_str(x, sx, sizeof sx), nd == 1 ? "L" : nd == 2 ? "H, W" : "T, H, W", C);
    }
    const int64_t B = x->shape[0];
    int64_t before[NAT_MAX_DIMS] = {0}, after[NAT_MAX_DIMS] = {0}, sp[3], S = 1;
    bool padded = false;
    for (int a = 0; a < nd; a++) {
        int64_t window = (int64_t)d->kernel[a] * d->dilation[a], L = x->shape[1 + a];
        after[1 + a] = L < window ? window - L : 0;
        padded |= after[1 + a] > 0;
        sp[a] = L + after[1 + a];
        S *= sp[a];
    }
    nat_tensor *qkv, *t, *qkv3[3];
    if (padded) {
        /* NATTEN pads x with zeros before qkv, so a padded token's q, k, v are qkv's bias. The product
         * runs on the map's own tokens only, and the bias is added after the zero padding: the same
         * values, without multiplying the padding (a 1x1 map under kernel 3 would cost 9x). */
        NAT_TRY(nat_linear(ctx, x, m->qkv.weight, NULL, &qkv));
        NAT_TRY(nat_pad(ctx, qkv, before, after, 0.0f, &qkv));
        if (m->qkv.bias)
            NAT_TRY(nat_bias_add(ctx, qkv, m->qkv.bias, -1, &qkv));
    } else {
        NAT_TRY(nat_linear_layer_forward(ctx, &m->qkv, x, &qkv));
    }
    /* [B, *spatial, 3C] read as [B, S, 3, heads, hd] -> [3, B, heads, *spatial, hd]: one copy each way.
     * 3-D would need 7 dims (tensors have 6): there the copy is [3, B, heads, S, hd], and q, k, v are
     * views of its thirds for the unpacked op. */
    const bool packed = nd + 4 <= NAT_MAX_DIMS;
    int64_t s5[5] = {B, S, 3, heads, hd}, ps[NAT_MAX_DIMS] = {3, B, heads, S, hd}, qs[NAT_MAX_DIMS] = {B, heads};
    static const int to_3bhsd[5] = {2, 0, 3, 1, 4};
    for (int a = 0; a < nd; a++)
        qs[2 + a] = sp[a];
    qs[2 + nd] = hd;
    if (packed)
        memcpy(ps + 1, qs, (size_t)(nd + 3) * sizeof *qs);
    NAT_TRY(nat_contiguous(ctx, qkv, &qkv));
    NAT_TRY(nat_permute_reshape(ctx, qkv, 5, s5, to_3bhsd, packed ? nd + 4 : 5, ps, &t));

    nat_na_params p = {nd, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, d->scale};
    for (int a = 0; a < nd; a++) {
        p.kernel[a] = d->kernel[a];
        p.dilation[a] = d->dilation[a];
        p.causal[a] = d->causal[a];
    }
    nat_tensor *o;
    if (!fn && training && d->attn_drop > 0.0f)
        fn = nat_na_unfused;
    if (fn || !packed) { /* q, k, v as views of the thirds */
        for (int i = 0; i < 3; i++) {
            nat_tensor *one;
            NAT_TRY(nat_slice(ctx, t, 0, i, i + 1, &one));
            NAT_TRY(nat_reshape(ctx, one, nd + 3, qs, &qkv3[i]));
        }
        if (fn)
            NAT_TRY(fn(ctx, qkv3[0], qkv3[1], qkv3[2], m->rpb, &p, d->attn_drop, training, rng, &o));
        else
            NAT_TRY(nat_na(ctx, qkv3[0], qkv3[1], qkv3[2], m->rpb, &p, &o));
        NAT_TRY(nat_contiguous(ctx, o, &o));
    } else {
        NAT_TRY(nat_na_packed(ctx, t, m->rpb, &p, &o));
    }

    /* [B, heads, S, hd] -> [B, *spatial, C], one copy each way */
    int64_t s4[4] = {B, heads, S, hd}, xs[NAT_MAX_DIMS] = {B};
    static const int to_bshd[4] = {0, 2, 1, 3};
    for (int a = 0; a < nd; a++)
        xs[1 + a] = sp[a];
    xs[1 + nd] = C;
    NAT_TRY(nat_permute_reshape(ctx, o, 4, s4, to_bshd, nd + 2, xs, &o));
    for (int a = 0; a < nd; a++)
        if (after[1 + a] > 0)
            NAT_TRY(nat_slice(ctx, o, 1 + a, 0, x->shape[1 + a], &o));

    NAT_TRY(nat_linear_layer_forward(ctx, &m->proj, o, &o));
    return nat_dropout(ctx, o, d->proj_drop, training, rng, out);
}

nat_status nat_na_layer_params(const nat_na_layer *m, nat_param_list *l, const char *prefix)
{
    NAT_CHECK_ARG(m, "nat_na_layer_params", "m");
    NAT_CHECK_ARG(l, "nat_na_layer_params", "l");
    char p[256];
    const char *pre = prefix ? prefix : "", *dot = prefix && *prefix ? "." : "";
    if (m->rpb)
        NAT_TRY(nat_param_list_add(l, prefix, "rpb", m->rpb, true));
    snprintf(p, sizeof p, "%s%sqkv", pre, dot);
    NAT_TRY(nat_linear_layer_params(&m->qkv, l, p));
    snprintf(p, sizeof p, "%s%sproj", pre, dot);
    return nat_linear_layer_params(&m->proj, l, p);
}

void nat_na_layer_free(nat_na_layer *m)
{
    nat_linear_layer_free(&m->qkv);
    nat_tensor_free(m->rpb);
    m->rpb = NULL;
    nat_linear_layer_free(&m->proj);
}
