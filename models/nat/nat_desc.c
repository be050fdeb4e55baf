/* models/nat/nat_desc.c — network descriptions: the default, the published NAT and DiNAT variants
 * (docs/design.md §3; dilations from DiNAT's configs), and the checks whose messages name the bad value. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/nat/nat_internal.h"
#include "core/check.h"

nat_model_desc nat_model_desc_default(void)
{
    nat_model_desc d;
    memset(&d, 0, sizeof d);
    d.in_chans = 3;
    d.num_classes = 1000;
    d.img_size = 224;
    d.embed_dim = 64;
    const int depths[4] = {3, 4, 6, 5}, heads[4] = {2, 4, 8, 16};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    d.kernel_size = 7;
    d.mlp_ratio = 3.0f;
    d.drop_path_rate = 0.2f;
    d.qkv_bias = true;
    d.num_levels = NAT_MODEL_LEVELS;
    d.patch_stride = 4;
    return d;
}

static const char *const variant_names[] = {"nat_mini",   "nat_tiny",   "nat_small",   "nat_base",
                                            "dinat_mini", "dinat_tiny", "dinat_small", "dinat_base", NULL};

const char *const *nat_model_variant_names(void) { return variant_names; }

nat_status nat_model_desc_variant(nat_model_desc *out, const char *name, int num_classes, int in_chans)
{
    NAT_CHECK_ARG(out, "nat_model_desc_variant", "out");
    NAT_CHECK_ARG(name, "nat_model_desc_variant", "name");
    static const struct {
        const char *size;
        int dim, depth3, heads0;
        float mlp, dpr, ls;
    } sizes[] = {
        {"mini", 64, 6, 2, 3.0f, 0.2f, 0.0f},
        {"tiny", 64, 18, 2, 3.0f, 0.2f, 0.0f},
        {"small", 96, 18, 3, 2.0f, 0.3f, 1e-5f},
        {"base", 128, 18, 4, 2.0f, 0.5f, 1e-5f},
    };
    bool dinat = name && !strncmp(name, "dinat_", 6), nat = name && !strncmp(name, "nat_", 4);
    const char *size = !name ? "" : dinat ? name + 6 : nat ? name + 4 : "";
    for (size_t i = 0; (dinat || nat) && i < sizeof sizes / sizeof *sizes; i++) {
        if (strcmp(size, sizes[i].size))
            continue;
        nat_model_desc d = nat_model_desc_default();
        snprintf(d.name, sizeof d.name, "%s", name);
        d.num_classes = num_classes;
        d.in_chans = in_chans;
        d.embed_dim = sizes[i].dim;
        d.depths[2] = sizes[i].depth3;
        for (int l = 0; l < NAT_MODEL_LEVELS; l++)
            d.heads[l] = sizes[i].heads0 << l;
        d.mlp_ratio = sizes[i].mlp;
        d.drop_path_rate = sizes[i].dpr;
        d.layer_scale = sizes[i].ls;
        /* DiNAT: levels 1-3 alternate dilation 1 and 8 / 4 / 2 (56² / 28² / 14² maps at 224, so each
         * dilated layer sees the whole map), starting with 1; level 4 stays at 1. */
        static const int big[3] = {8, 4, 2};
        for (int l = 0; dinat && l < 3; l++)
            for (int j = 0; j < d.depths[l]; j++)
                d.dilations[l][j] = j % 2 ? big[l] : 1;
        *out = d;
        return nat_model_desc_check(out);
    }
    return nat_error(NAT_ERR_INVALID_ARG,
                     "model: unknown variant '%s' (nat_mini, nat_tiny, nat_small, nat_base, dinat_mini, dinat_tiny, "
                     "dinat_small, dinat_base)",
                     name ? name : "(null)");
}

int nat_model_desc_dilation(const nat_model_desc *d, int level, int layer)
{
    if (level < 0 || level >= NAT_MODEL_LEVELS || layer < 0 || layer >= NAT_MODEL_MAX_DEPTH)
        return 1;
    int v = d->dilations[level][layer];
    return v > 0 ? v : 1;
}

int nat_model_desc_levels(const nat_model_desc *d) { return d->num_levels > 0 ? d->num_levels : NAT_MODEL_LEVELS; }

int nat_model_desc_patch_stride(const nat_model_desc *d) { return d->patch_stride > 0 ? d->patch_stride : 4; }

static bool prob_ok(float p) { return p >= 0.0f && p < 1.0f; }

nat_status nat_model_desc_check(const nat_model_desc *d)
{
    NAT_CHECK_ARG(d, "nat_model_desc_check", "d");
    const char *n = d->name[0] ? d->name : "custom";
    /* Upper bounds too: a description can come from a file's metadata, and sizes computed from absurd
     * values (embed_dim << level, kernel_size * dilation padding, (2k - 1)² biases) must not overflow. */
    if (d->in_chans < 1 || d->in_chans > 4096)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: in_chans %d must be in 1..4096", n, d->in_chans);
    if (d->num_classes < 1 || d->num_classes > (1 << 24))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: num_classes %d must be in 1..%d", n, d->num_classes, 1 << 24);
    if (d->img_size > 16384 || d->embed_dim > 8192 || d->kernel_size > 63)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: img_size %d / embed_dim %d / kernel_size %d exceed 16384 / 8192 / 63",
                         n, d->img_size, d->embed_dim, d->kernel_size);
    if (d->num_levels < 0 || d->num_levels > NAT_MODEL_LEVELS)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: num_levels %d must be in 1..%d (0 means %d)", n, d->num_levels,
                         NAT_MODEL_LEVELS, NAT_MODEL_LEVELS);
    if (d->patch_stride != 0 && d->patch_stride != 2 && d->patch_stride != 4)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: patch_stride %d must be 4 or 2 (0 means 4)", n, d->patch_stride);
    const int stride = nat_model_desc_patch_stride(d), levels = nat_model_desc_levels(d);
    if (d->img_size < stride)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: input size %d is smaller than the tokenizer's total stride %d", n,
                         d->img_size, stride);
    if (d->embed_dim < 2 || d->embed_dim % 2)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: embed_dim %d must be even and >= 2 (the tokenizer's first conv has embed_dim/2 channels)",
                         n, d->embed_dim);
    if (d->kernel_size < 3 || d->kernel_size % 2 == 0)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: kernel size %d must be odd and >= 3", n, d->kernel_size);
    if (!(d->mlp_ratio > 0.0f) || !isfinite(d->mlp_ratio))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: mlp_ratio %g must be finite and > 0", n, (double)d->mlp_ratio);
    for (int i = 0; i < levels; i++) {
        int dim = d->embed_dim << i;
        if (d->depths[i] < 1 || d->depths[i] > NAT_MODEL_MAX_DEPTH)
            return nat_error(NAT_ERR_INVALID_ARG, "model %s: depth %d at level %d must be in 1..%d", n, d->depths[i], i,
                             NAT_MODEL_MAX_DEPTH);
        if (d->heads[i] < 1 || dim % d->heads[i])
            return nat_error(NAT_ERR_INVALID_ARG, "model %s: %d heads at level %d do not divide its dim %d", n, d->heads[i],
                             i, dim);
        if ((int)(d->mlp_ratio * (float)dim) < 1)
            return nat_error(NAT_ERR_INVALID_ARG, "model %s: mlp_ratio %g gives an empty Mlp at level %d (dim %d)", n,
                             (double)d->mlp_ratio, i, dim);
        for (int j = 0; j < d->depths[i]; j++)
            if (d->dilations[i][j] < 0 || d->dilations[i][j] > 16384 / d->kernel_size)
                return nat_error(NAT_ERR_INVALID_ARG,
                                 "model %s: dilation %d of layer %d at level %d must be in 1..%d (0 means 1; kernel size x "
                                 "dilation at most 16384)",
                                 n, d->dilations[i][j], j, i, 16384 / d->kernel_size);
    }
    if (!prob_ok(d->drop_path_rate))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: drop_path_rate %g must be in [0, 1)", n, (double)d->drop_path_rate);
    if (!prob_ok(d->drop) || !prob_ok(d->attn_drop))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: drop %g / attn_drop %g must be in [0, 1)", n, (double)d->drop,
                         (double)d->attn_drop);
    if (!(d->layer_scale >= 0.0f) || !isfinite(d->layer_scale))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: layer_scale %g must be finite and >= 0 (0 = off)", n,
                         (double)d->layer_scale);
    if (!isfinite(d->qk_scale))
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: qk_scale %g is not finite", n, (double)d->qk_scale);
    if (d->attention != NAT_ATTN_NEIGHBORHOOD && d->attention != NAT_ATTN_WINDOW)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: attention %d must be %d (neighborhood) or %d (window)", n,
                         d->attention, NAT_ATTN_NEIGHBORHOOD, NAT_ATTN_WINDOW);
    if (d->window_size < 0 || d->window_size > 64)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: window_size %d must be in 1..64 (0 means 7)", n, d->window_size);
    if (d->attention == NAT_ATTN_WINDOW && d->attn_drop > 0.0f)
        return nat_error(NAT_ERR_INVALID_ARG, "model %s: attn_drop %g is not supported with window attention", n,
                         (double)d->attn_drop);
    return NAT_OK;
}

float nat_model_linspace(float end, int n, int i)
{
    if (n <= 1)
        return 0.0f;
    float step = end / (float)(n - 1);
    return i < n / 2 ? step * (float)i : end - step * (float)(n - 1 - i);
}
