/* models/nat/nat_checkpoint.c — model checkpoints in safetensors (include/nat/safetensors.h): every
 * parameter under its PyTorch name, plus the description as "nat.*" metadata strings so a file says
 * which network it holds (nat_model_desc_read rebuilds the description from them). Loading is strict
 * through nat_st_load_into: a missing, extra or mis-shaped tensor is an error naming it and the file,
 * and nothing changes on error. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/nat/nat_internal.h"
#include "core/check.h"

/* "a,b,c" of n ints into buf. */
static void join_ints(char *buf, size_t cap, const int *v, int n)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%d", i ? "," : "", v[i]);
}

nat_status nat_model_write(const nat_model *m, nat_st_writer *w)
{
    NAT_CHECK_ARG(m, "nat_model_write", "m");
    NAT_CHECK_ARG(w, "nat_model_write", "w");
    const nat_model_desc *d = &m->desc;
    for (int i = 0; i < m->params.count; i++)
        NAT_TRY(nat_st_writer_add(w, m->params.items[i].name, m->params.items[i].tensor));
    char v[NAT_MODEL_LEVELS * NAT_MODEL_MAX_DEPTH * 4 + 64];
    const struct {
        const char *key;
        double value;
        bool is_float;
    } nums[] = {
        {"nat.in_chans", d->in_chans, false},       {"nat.num_classes", d->num_classes, false},
        {"nat.img_size", d->img_size, false},       {"nat.embed_dim", d->embed_dim, false},
        {"nat.kernel_size", d->kernel_size, false}, {"nat.qkv_bias", d->qkv_bias, false},
        {"nat.mlp_ratio", d->mlp_ratio, true},      {"nat.drop_path_rate", d->drop_path_rate, true},
        {"nat.layer_scale", d->layer_scale, true},  {"nat.qk_scale", d->qk_scale, true},
        {"nat.drop", d->drop, true},                {"nat.attn_drop", d->attn_drop, true},
        {"nat.patch_stride", nat_model_desc_patch_stride(d), false},
    };
    const int L = nat_model_desc_levels(d);
    NAT_TRY(nat_st_writer_set_metadata(w, "nat.name", d->name[0] ? d->name : "custom"));
    snprintf(v, sizeof v, "%" PRIu64, d->seed);
    NAT_TRY(nat_st_writer_set_metadata(w, "nat.seed", v));
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        if (nums[i].is_float)
            snprintf(v, sizeof v, "%.9g", nums[i].value);
        else
            snprintf(v, sizeof v, "%d", (int)nums[i].value);
        NAT_TRY(nat_st_writer_set_metadata(w, nums[i].key, v));
    }
    if (d->attention == NAT_ATTN_WINDOW) { /* only then, so NA files stay as they were */
        NAT_TRY(nat_st_writer_set_metadata(w, "nat.attention", "window"));
        snprintf(v, sizeof v, "%d", d->window_size > 0 ? d->window_size : 7);
        NAT_TRY(nat_st_writer_set_metadata(w, "nat.window_size", v));
    }
    join_ints(v, sizeof v, d->depths, L);
    NAT_TRY(nat_st_writer_set_metadata(w, "nat.depths", v));
    join_ints(v, sizeof v, d->heads, L);
    NAT_TRY(nat_st_writer_set_metadata(w, "nat.heads", v));
    /* Dilations level by level, levels separated by ';'. */
    size_t at = 0;
    for (int i = 0; i < L; i++) {
        int dil[NAT_MODEL_MAX_DEPTH];
        for (int j = 0; j < d->depths[i]; j++)
            dil[j] = nat_model_desc_dilation(d, i, j);
        if (i)
            v[at++] = ';';
        join_ints(v + at, sizeof v - at, dil, d->depths[i]);
        at += strlen(v + at);
    }
    return nat_st_writer_set_metadata(w, "nat.dilations", v);
}

nat_status nat_model_save(const nat_model *m, const char *path, int n_meta, const char *const *keys,
                          const char *const *values)
{
    NAT_CHECK_ARG(m, "nat_model_save", "m");
    NAT_CHECK_ARG(path, "nat_model_save", "path");
    if (n_meta > 0)
        NAT_CHECK_ARG(keys, "nat_model_save", "keys");
    if (n_meta > 0)
        NAT_CHECK_ARG(values, "nat_model_save", "values");
    for (int i = 0; i < n_meta; i++)
        if (!keys || !values || !keys[i] || !values[i] || !strncmp(keys[i], "nat.", 4))
            return nat_error(NAT_ERR_INVALID_ARG, "model save %s: metadata key %d ('%s') is NULL or uses the reserved prefix 'nat.'",
                             path, i, keys && keys[i] ? keys[i] : "(null)");
    nat_st_writer *w;
    NAT_TRY(nat_st_writer_new(&w));
    nat_status s = nat_model_write(m, w);
    for (int i = 0; s == NAT_OK && i < n_meta; i++)
        s = nat_st_writer_set_metadata(w, keys[i], values[i]);
    if (s == NAT_OK)
        s = nat_st_writer_save(w, path);
    nat_st_writer_free(w);
    return s;
}

nat_status nat_model_read(nat_model *m, nat_st_file *f, bool strict)
{
    NAT_CHECK_ARG(m, "nat_model_read", "m");
    NAT_CHECK_ARG(f, "nat_model_read", "f");
    int n = m->params.count;
    nat_tensor **tensors = malloc((size_t)n * sizeof *tensors);
    const char **names = malloc((size_t)n * sizeof *names);
    if (!tensors || !names) {
        free(tensors);
        free(names);
        return nat_error(NAT_ERR_OOM, "model load %s: out of memory", nat_st_path(f));
    }
    for (int i = 0; i < n; i++) {
        tensors[i] = m->params.items[i].tensor;
        names[i] = m->params.items[i].name;
    }
    nat_status s = nat_st_load_into(f, tensors, names, n, strict);
    free(tensors);
    free(names);
    return s;
}

nat_status nat_model_load(nat_model *m, const char *path)
{
    NAT_CHECK_ARG(m, "nat_model_load", "m");
    NAT_CHECK_ARG(path, "nat_model_load", "path");
    nat_st_file *f;
    NAT_TRY(nat_st_open(&f, path));
    nat_status s = nat_model_read(m, f, true);
    nat_st_close(f);
    return s;
}

/* ---- the description back from metadata ---- */

static nat_status meta(const nat_st_file *f, const char *key, const char **out)
{
    *out = nat_st_metadata(f, key);
    if (!*out)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata '%s' is missing (not written by nat_model_save?)",
                         nat_st_path(f), key);
    return NAT_OK;
}

static nat_status meta_int(const nat_st_file *f, const char *key, int *out)
{
    const char *s;
    NAT_TRY(meta(f, key, &s));
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is not an integer", nat_st_path(f), key, s);
    /* Range-checked, not cut: 4294967312 must not become 16. */
    if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is out of range", nat_st_path(f), key, s);
    *out = (int)v;
    return NAT_OK;
}

static nat_status meta_float(const nat_st_file *f, const char *key, float *out)
{
    const char *s;
    NAT_TRY(meta(f, key, &s));
    char *end;
    float v = strtof(s, &end);
    if (end == s || *end)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is not a number", nat_st_path(f), key, s);
    *out = v;
    return NAT_OK;
}

/* Parses up to `max` comma-separated ints from s, stopping at sep_end (';' or NUL); returns the count
 * and advances *s past them, or -1 on a malformed list. */
static int parse_ints(const char **s, int *v, int max)
{
    int n = 0;
    const char *p = *s;
    for (;;) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || n == max || errno == ERANGE || x < INT_MIN || x > INT_MAX) /* not cut to int */
            return -1;
        v[n++] = (int)x;
        p = end;
        if (*p != ',')
            break;
        p++;
    }
    *s = p;
    return n;
}

nat_status nat_model_desc_read(const nat_st_file *f, nat_model_desc *out)
{
    NAT_CHECK_ARG(f, "nat_model_desc_read", "f");
    NAT_CHECK_ARG(out, "nat_model_desc_read", "out");
    nat_model_desc d;
    memset(&d, 0, sizeof d);
    const char *s;
    NAT_TRY(meta(f, "nat.name", &s));
    snprintf(d.name, sizeof d.name, "%s", s);
    int qkv_bias;
    NAT_TRY(meta_int(f, "nat.in_chans", &d.in_chans));
    NAT_TRY(meta_int(f, "nat.num_classes", &d.num_classes));
    NAT_TRY(meta_int(f, "nat.img_size", &d.img_size));
    NAT_TRY(meta_int(f, "nat.embed_dim", &d.embed_dim));
    NAT_TRY(meta_int(f, "nat.kernel_size", &d.kernel_size));
    NAT_TRY(meta_int(f, "nat.qkv_bias", &qkv_bias));
    d.qkv_bias = qkv_bias != 0;
    NAT_TRY(meta_float(f, "nat.mlp_ratio", &d.mlp_ratio));
    NAT_TRY(meta_float(f, "nat.drop_path_rate", &d.drop_path_rate));
    NAT_TRY(meta_float(f, "nat.layer_scale", &d.layer_scale));
    NAT_TRY(meta_float(f, "nat.qk_scale", &d.qk_scale));
    NAT_TRY(meta_float(f, "nat.drop", &d.drop));
    NAT_TRY(meta_float(f, "nat.attn_drop", &d.attn_drop));
    NAT_TRY(meta(f, "nat.seed", &s));
    char *end;
    d.seed = strtoull(s, &end, 10);
    if (end == s || *end)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata nat.seed = '%s' is not an integer", nat_st_path(f), s);
    /* Files written before patch_stride existed hold NAT's tokenizer. */
    d.patch_stride = 4;
    if (nat_st_metadata(f, "nat.patch_stride"))
        NAT_TRY(meta_int(f, "nat.patch_stride", &d.patch_stride));
    /* Without nat.attention the file holds neighborhood attention. */
    const char *attn = nat_st_metadata(f, "nat.attention");
    if (attn && strcmp(attn, "window") && strcmp(attn, "neighborhood"))
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata nat.attention = '%s' is not 'neighborhood' or 'window'",
                         nat_st_path(f), attn);
    d.attention = attn && !strcmp(attn, "window") ? NAT_ATTN_WINDOW : NAT_ATTN_NEIGHBORHOOD;
    if (nat_st_metadata(f, "nat.window_size"))
        NAT_TRY(meta_int(f, "nat.window_size", &d.window_size));
    /* The number of levels is the length of nat.depths (as len(depths) in PyTorch's NAT). */
    const char *keys[2] = {"nat.depths", "nat.heads"};
    int *dst[2] = {d.depths, d.heads};
    for (int k = 0; k < 2; k++) {
        NAT_TRY(meta(f, keys[k], &s));
        const char *p = s;
        int got = parse_ints(&p, dst[k], NAT_MODEL_LEVELS);
        if (got < 1 || *p || (k == 1 && got != d.num_levels))
            return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is not 1 to %d integers%s", nat_st_path(f),
                             keys[k], s, NAT_MODEL_LEVELS, k ? " matching nat.depths" : "");
        if (k == 0)
            d.num_levels = got;
    }
    NAT_TRY(meta(f, "nat.dilations", &s));
    const char *p = s;
    for (int i = 0; i < d.num_levels; i++) {
        int got = parse_ints(&p, d.dilations[i], NAT_MODEL_MAX_DEPTH);
        if (got != d.depths[i] || (i < d.num_levels - 1 ? *p != ';' : *p != 0))
            return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata nat.dilations = '%s' does not match nat.depths",
                             nat_st_path(f), s);
        if (*p == ';')
            p++;
    }
    NAT_TRY(nat_model_desc_check(&d));
    *out = d;
    return NAT_OK;
}
