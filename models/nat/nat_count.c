/* models/nat/nat_count.c — parameter and multiply-add counts of a description, computed analytically
 * (no model is built), with the conventions of fvcore's FlopCountAnalysis that NAT's paper used:
 * a multiply-add counts once; conv: output elements × Cin·kh·kw; linear: rows × in × out; biases and
 * elementwise ops (GELU, softmax, scale, residual adds, drop-path, pooling) count 0; LayerNorm 5 per
 * element (fvcore's norm_flop_counter with affine); NATTEN's handles for the NA op: QK+rpb
 * B·heads·H·W·k²·(hd+1) and AV B·heads·H·W·k²·hd over the padded map (docs/design.md §2). At 224² this
 * gives NAT-Mini/Tiny/Small/Base 2.7/4.3/7.8/13.7 GMACs; the LayerNorms add under 0.05 GMAC. */
#include "models/nat/nat_internal.h"
#include "core/check.h"

static int conv_out(int n, int stride) { return (n + 2 - 3) / stride + 1; } /* 3×3, pad 1 */

static int64_t conv_params(int64_t cin, int64_t cout, bool bias) { return cout * cin * 9 + (bias ? cout : 0); }

nat_status nat_model_desc_count(const nat_model_desc *d, int h, int w, nat_model_counts *out)
{
    NAT_CHECK_ARG(d, "nat_model_desc_count", "d");
    NAT_CHECK_ARG(out, "nat_model_desc_count", "out");
    NAT_TRY(nat_model_desc_check(d));
    if (h < 1 || w < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "model count: input %d x %d must be at least 1 x 1", h, w);
    nat_model_counts c = {0};
    const int64_t C = d->embed_dim, k2 = (int64_t)d->kernel_size * d->kernel_size;

    /* patch_embed: two convs, then LayerNorm(C). */
    const int s2 = nat_model_desc_patch_stride(d) / 2, L = nat_model_desc_levels(d);
    int h1 = conv_out(h, 2), w1 = conv_out(w, 2), h2 = conv_out(h1, s2), w2 = conv_out(w1, s2);
    c.params_tokenizer = conv_params(d->in_chans, C / 2, true) + conv_params(C / 2, C, true) + 2 * C;
    c.macs_tokenizer = (int64_t)h1 * w1 * (C / 2) * d->in_chans * 9 + (int64_t)h2 * w2 * C * (C / 2) * 9 +
                       5 * (int64_t)h2 * w2 * C;

    int H = h2, W = w2;
    for (int i = 0; i < L; i++) {
        const int64_t dim = C << i, heads = d->heads[i], hd = dim / heads;
        const int64_t hidden = (int64_t)((float)dim * d->mlp_ratio), n = (int64_t)H * W;
        c.map_h[i] = H;
        c.map_w[i] = W;
        c.dims[i] = (int)dim;
        for (int j = 0; j < d->depths[i]; j++) {
            /* NATTEN's module pads a map smaller than kernel·dilation before qkv and NA. */
            int64_t win = (int64_t)d->kernel_size * nat_model_desc_dilation(d, i, j);
            int64_t np = (H < win ? win : H) * (W < win ? win : W), nproj = n;
            int64_t bias = heads * (2 * d->kernel_size - 1) * (2 * d->kernel_size - 1); /* attn.rpb */
            int64_t attn = heads * np * k2 * (hd + 1) + heads * np * k2 * hd;
            if (d->attention == NAT_ATTN_WINDOW) {
                /* Swin: windows of ws² tokens over the map padded to multiples of ws (ws shrinks to the
                 * map's smaller side when that is not larger); QK and AV are bmm's of ws² x ws² x hd per
                 * window and head (fvcore counts a bmm's M·N·K), proj runs on the padded tokens. */
                int64_t ws = d->window_size > 0 ? d->window_size : 7, small = H < W ? H : W;
                ws = small <= ws ? small : ws;
                np = ((H + ws - 1) / ws * ws) * ((W + ws - 1) / ws * ws);
                nproj = np;
                int64_t wt = d->window_size > 0 ? d->window_size : 7;
                bias = heads * (2 * wt - 1) * (2 * wt - 1); /* attn.relative_position_bias_table */
                attn = 2 * heads * np * ws * ws * hd;
            }
            int64_t p = 2 * dim                                      /* norm1 */
                        + 3 * dim * dim + (d->qkv_bias ? 3 * dim : 0) /* attn.qkv */
                        + bias
                        + dim * dim + dim                                /* attn.proj */
                        + 2 * dim                                        /* norm2 */
                        + dim * hidden + hidden + hidden * dim + dim     /* mlp */
                        + (d->layer_scale > 0.0f ? 2 * dim : 0);         /* gamma1, gamma2 */
            int64_t macs = 5 * n * dim                    /* norm1 */
                           + np * dim * 3 * dim           /* qkv */
                           + attn + nproj * dim * dim      /* proj */
                           + 5 * n * dim                   /* norm2 */
                           + n * dim * hidden * 2;         /* fc1, fc2 */
            c.params_layers[i] += p;
            c.macs_layers[i] += macs;
            c.macs_attn[i] += attn;
        }
        if (i < L - 1) {
            int Ho = conv_out(H, 2), Wo = conv_out(W, 2);
            c.params_down[i] = conv_params(dim, 2 * dim, false) + 4 * dim;
            c.macs_down[i] = (int64_t)Ho * Wo * 2 * dim * dim * 9 + 5 * (int64_t)Ho * Wo * 2 * dim;
            H = Ho;
            W = Wo;
        }
    }
    const int64_t F = C << (L - 1);
    c.params_head = 2 * F + F * d->num_classes + d->num_classes;
    c.macs_head = 5 * (int64_t)H * W * F + F * d->num_classes;

    c.params = c.params_tokenizer + c.params_head;
    c.macs = c.macs_tokenizer + c.macs_head;
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        c.params += c.params_layers[i] + c.params_down[i];
        c.macs += c.macs_layers[i] + c.macs_down[i];
    }
    *out = c;
    return NAT_OK;
}
