/* tests/test_checkpoint.c — model checkpoints (nat_model_save / nat_model_load over safetensors):
 * tensor names and order are PyTorch NAT's state_dict keys (spelled out below for a tiny network, from
 * docs/design.md §3); a save -> load round trip is bit-exact in every parameter and in the logits; the
 * description comes back from the metadata; strict loading rejects a missing, an unexpected and a
 * mis-shaped tensor and a truncated file, naming the tensor or the file, and leaves the model
 * untouched. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nat/model.h"
#include "nat/safetensors.h"
#include "support/harness.h"

/* Two layers in level 0 (block indices), layer scale (gamma1/gamma2), qkv bias, rpb. */
static nat_model_desc tiny_desc(uint64_t seed)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "tiny_ckpt");
    d.num_classes = 5;
    d.img_size = 16;
    d.embed_dim = 8;
    const int depths[4] = {2, 1, 1, 1}, heads[4] = {1, 2, 2, 4};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    d.kernel_size = 3;
    d.dilations[0][1] = 2;
    d.mlp_ratio = 2.0f;
    d.layer_scale = 1e-5f;
    d.seed = seed;
    return d;
}

static const char *const expected_names[] = {
    "patch_embed.proj.0.weight", "patch_embed.proj.0.bias", "patch_embed.proj.1.weight", "patch_embed.proj.1.bias",
    "patch_embed.norm.weight", "patch_embed.norm.bias",
    "levels.0.blocks.0.gamma1", "levels.0.blocks.0.gamma2", "levels.0.blocks.0.norm1.weight",
    "levels.0.blocks.0.norm1.bias", "levels.0.blocks.0.attn.rpb", "levels.0.blocks.0.attn.qkv.weight",
    "levels.0.blocks.0.attn.qkv.bias", "levels.0.blocks.0.attn.proj.weight", "levels.0.blocks.0.attn.proj.bias",
    "levels.0.blocks.0.norm2.weight", "levels.0.blocks.0.norm2.bias", "levels.0.blocks.0.mlp.fc1.weight",
    "levels.0.blocks.0.mlp.fc1.bias", "levels.0.blocks.0.mlp.fc2.weight", "levels.0.blocks.0.mlp.fc2.bias",
    "levels.0.blocks.1.gamma1", "levels.0.blocks.1.gamma2", "levels.0.blocks.1.norm1.weight",
    "levels.0.blocks.1.norm1.bias", "levels.0.blocks.1.attn.rpb", "levels.0.blocks.1.attn.qkv.weight",
    "levels.0.blocks.1.attn.qkv.bias", "levels.0.blocks.1.attn.proj.weight", "levels.0.blocks.1.attn.proj.bias",
    "levels.0.blocks.1.norm2.weight", "levels.0.blocks.1.norm2.bias", "levels.0.blocks.1.mlp.fc1.weight",
    "levels.0.blocks.1.mlp.fc1.bias", "levels.0.blocks.1.mlp.fc2.weight", "levels.0.blocks.1.mlp.fc2.bias",
    "levels.0.downsample.reduction.weight", "levels.0.downsample.norm.weight", "levels.0.downsample.norm.bias",
    "levels.1.blocks.0.gamma1", "levels.1.blocks.0.gamma2", "levels.1.blocks.0.norm1.weight",
    "levels.1.blocks.0.norm1.bias", "levels.1.blocks.0.attn.rpb", "levels.1.blocks.0.attn.qkv.weight",
    "levels.1.blocks.0.attn.qkv.bias", "levels.1.blocks.0.attn.proj.weight", "levels.1.blocks.0.attn.proj.bias",
    "levels.1.blocks.0.norm2.weight", "levels.1.blocks.0.norm2.bias", "levels.1.blocks.0.mlp.fc1.weight",
    "levels.1.blocks.0.mlp.fc1.bias", "levels.1.blocks.0.mlp.fc2.weight", "levels.1.blocks.0.mlp.fc2.bias",
    "levels.1.downsample.reduction.weight", "levels.1.downsample.norm.weight", "levels.1.downsample.norm.bias",
    "levels.2.blocks.0.gamma1", "levels.2.blocks.0.gamma2", "levels.2.blocks.0.norm1.weight",
    "levels.2.blocks.0.norm1.bias", "levels.2.blocks.0.attn.rpb", "levels.2.blocks.0.attn.qkv.weight",
    "levels.2.blocks.0.attn.qkv.bias", "levels.2.blocks.0.attn.proj.weight", "levels.2.blocks.0.attn.proj.bias",
    "levels.2.blocks.0.norm2.weight", "levels.2.blocks.0.norm2.bias", "levels.2.blocks.0.mlp.fc1.weight",
    "levels.2.blocks.0.mlp.fc1.bias", "levels.2.blocks.0.mlp.fc2.weight", "levels.2.blocks.0.mlp.fc2.bias",
    "levels.2.downsample.reduction.weight", "levels.2.downsample.norm.weight", "levels.2.downsample.norm.bias",
    "levels.3.blocks.0.gamma1", "levels.3.blocks.0.gamma2", "levels.3.blocks.0.norm1.weight",
    "levels.3.blocks.0.norm1.bias", "levels.3.blocks.0.attn.rpb", "levels.3.blocks.0.attn.qkv.weight",
    "levels.3.blocks.0.attn.qkv.bias", "levels.3.blocks.0.attn.proj.weight", "levels.3.blocks.0.attn.proj.bias",
    "levels.3.blocks.0.norm2.weight", "levels.3.blocks.0.norm2.bias", "levels.3.blocks.0.mlp.fc1.weight",
    "levels.3.blocks.0.mlp.fc1.bias", "levels.3.blocks.0.mlp.fc2.weight", "levels.3.blocks.0.mlp.fc2.bias",
    "norm.weight", "norm.bias", "head.weight", "head.bias",
};
#define N_EXPECTED ((int)(sizeof expected_names / sizeof *expected_names))

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nat_test_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", tmpdir, name); }

static void remove_tmpdir(const char *const *files, int n)
{
    char p[128];
    for (int i = 0; i < n; i++) {
        tmp_path(p, sizeof p, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

/* Copies of every parameter's values, to show a failed load changed nothing. */
static float *snapshot(const nat_model *m, int64_t *n)
{
    const nat_param_list *l = nat_model_params(m);
    *n = nat_param_list_numel(l);
    float *v = malloc((size_t)*n * sizeof *v), *at = v;
    for (int i = 0; i < l->count; i++) {
        int64_t k = nat_tensor_numel(l->items[i].tensor);
        memcpy(at, nat_tensor_f32(l->items[i].tensor), (size_t)k * sizeof *at);
        at += k;
    }
    return v;
}

static void assert_unchanged(const nat_model *m, const float *before, int64_t n, const char *what)
{
    int64_t k;
    float *now = snapshot(m, &k);
    ck_assert_msg(k == n && !memcmp(now, before, (size_t)n * sizeof *now), "%s: the model changed on a failed load", what);
    free(now);
}

static float *logits_of(nat_model *m, nat_tensor *x, int64_t *n)
{
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &y));
    *n = nat_tensor_numel(y);
    float *v = malloc((size_t)*n * sizeof *v);
    memcpy(v, nat_tensor_f32(y), (size_t)*n * sizeof *v);
    nat_ctx_free(ctx);
    return v;
}

static void assert_same_desc(const nat_model_desc *a, const nat_model_desc *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert(a->in_chans == b->in_chans && a->num_classes == b->num_classes && a->img_size == b->img_size);
    ck_assert(a->embed_dim == b->embed_dim && a->kernel_size == b->kernel_size && a->qkv_bias == b->qkv_bias);
    ck_assert(a->mlp_ratio == b->mlp_ratio && a->drop_path_rate == b->drop_path_rate && a->layer_scale == b->layer_scale);
    ck_assert(a->qk_scale == b->qk_scale && a->drop == b->drop && a->attn_drop == b->attn_drop && a->seed == b->seed);
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        ck_assert(a->depths[i] == b->depths[i] && a->heads[i] == b->heads[i]);
        for (int j = 0; j < a->depths[i]; j++)
            ck_assert(nat_model_desc_dilation(a, i, j) == nat_model_desc_dilation(b, i, j));
    }
}

START_TEST(names_follow_pytorch)
{
    nat_model_desc d = tiny_desc(1);
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    const nat_param_list *l = nat_model_params(m);
    ck_assert_int_eq(l->count, N_EXPECTED);
    for (int i = 0; i < N_EXPECTED; i++)
        ck_assert_msg(!strcmp(l->items[i].name, expected_names[i]), "parameter %d is '%s', expected '%s'", i,
                      l->items[i].name, expected_names[i]);
    /* PyTorch's shapes. */
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } shapes[] = {
        {"patch_embed.proj.0.weight", 4, {4, 3, 3, 3}},
        {"patch_embed.proj.1.weight", 4, {8, 4, 3, 3}},
        {"levels.0.blocks.1.attn.rpb", 3, {1, 5, 5}},
        {"levels.0.blocks.0.attn.qkv.weight", 2, {24, 8}},
        {"levels.1.blocks.0.mlp.fc1.weight", 2, {32, 16}},
        {"levels.2.blocks.0.gamma1", 1, {32}},
        {"levels.2.downsample.reduction.weight", 4, {64, 32, 3, 3}},
        {"levels.2.downsample.norm.bias", 1, {64}},
        {"head.weight", 2, {5, 64}},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const nat_param *p = nat_param_list_find(l, shapes[i].name);
        ck_assert_msg(p, "no parameter %s", shapes[i].name);
        ck_assert_int_eq(p->tensor->ndim, shapes[i].ndim);
        for (int k = 0; k < shapes[i].ndim; k++)
            ck_assert_msg(p->tensor->shape[k] == shapes[i].shape[k], "%s dim %d", shapes[i].name, k);
    }
    /* The file holds exactly these names. */
    make_tmpdir();
    char path[128];
    tmp_path(path, sizeof path, "names.safetensors");
    TH_OK(nat_model_save(m, path, 0, NULL, NULL));
    nat_st_file *f;
    TH_OK(nat_st_open(&f, path));
    ck_assert_int_eq(nat_st_count(f), N_EXPECTED);
    for (int i = 0; i < N_EXPECTED; i++)
        ck_assert_msg(nat_st_find(f, expected_names[i]) >= 0, "file lacks %s", expected_names[i]);
    nat_st_close(f);
    const char *files[1] = {"names.safetensors"};
    remove_tmpdir(files, 1);
    nat_model_free(m);
}
END_TEST

START_TEST(round_trip_is_bit_exact)
{
    nat_model_desc da = tiny_desc(1), db = tiny_desc(2);
    nat_model *a, *b;
    TH_OK(nat_model_new(&a, &da));
    TH_OK(nat_model_new(&b, &db));
    /* Make every parameter distinctive (not just init values). */
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    const nat_param_list *la = nat_model_params(a), *lb = nat_model_params(b);
    for (int i = 0; i < la->count; i++)
        nat_rng_fill_normal(&rng, nat_tensor_f32(la->items[i].tensor), (size_t)nat_tensor_numel(la->items[i].tensor),
                            0.0f, 0.3f);
    make_tmpdir();
    char path[128];
    tmp_path(path, sizeof path, "model.safetensors");
    const char *keys[2] = {"epoch", "note"}, *values[2] = {"12", "round trip"};
    TH_OK(nat_model_save(a, path, 2, keys, values));
    TH_OK(nat_model_load(b, path));
    for (int i = 0; i < la->count; i++) {
        int64_t n = nat_tensor_numel(la->items[i].tensor);
        ck_assert_msg(!memcmp(nat_tensor_f32(la->items[i].tensor), nat_tensor_f32(lb->items[i].tensor),
                              (size_t)n * sizeof(float)),
                      "%s differs after the round trip", la->items[i].name);
    }
    int64_t s[4] = {2, 3, 16, 16}, n1, n2;
    nat_tensor *x = th_randn(&rng, 4, s, 1.0f, false);
    float *ya = logits_of(a, x, &n1), *yb = logits_of(b, x, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert_msg(!memcmp(ya, yb, (size_t)n1 * sizeof(float)), "logits differ after the round trip");
    free(ya);
    free(yb);

    /* Metadata: ours and the description. */
    nat_st_file *f;
    TH_OK(nat_st_open(&f, path));
    ck_assert_str_eq(nat_st_metadata(f, "epoch"), "12");
    ck_assert_str_eq(nat_st_metadata(f, "note"), "round trip");
    ck_assert_str_eq(nat_st_metadata(f, "nat.depths"), "2,1,1,1");
    ck_assert_str_eq(nat_st_metadata(f, "nat.dilations"), "1,2;1;1;1");
    nat_model_desc back;
    TH_OK(nat_model_desc_read(f, &back));
    assert_same_desc(&back, &da);
    /* Rebuilt from the file alone, non-strict read. */
    nat_model *c;
    TH_OK(nat_model_new(&c, &back));
    TH_OK(nat_model_read(c, f, false));
    float *yc = logits_of(c, x, &n2);
    ya = logits_of(a, x, &n1);
    ck_assert(!memcmp(ya, yc, (size_t)n1 * sizeof(float)));
    free(ya);
    free(yc);
    nat_st_close(f);
    th_expect_error(nat_model_save(a, path, 1, (const char *[]){"nat.depths"}, (const char *[]){"1"}),
                    NAT_ERR_INVALID_ARG, "nat.depths", "reserved");

    const char *files[1] = {"model.safetensors"};
    remove_tmpdir(files, 1);
    nat_tensor_free(x);
    nat_model_free(a);
    nat_model_free(b);
    nat_model_free(c);
}
END_TEST

/* Writes the model's parameters to path, leaving out `skip`, replacing `reshape` by a [2, 2] tensor,
 * and adding `extra` (each may be NULL). */
static void write_variant(const nat_model *m, const char *path, const char *skip, const char *reshape, const char *extra)
{
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    const nat_param_list *l = nat_model_params(m);
    int64_t s2[2] = {2, 2};
    nat_tensor *small;
    TH_OK(nat_tensor_new(&small, NAT_F32, NAT_CPU, 2, s2));
    for (int i = 0; i < l->count; i++) {
        const char *n = l->items[i].name;
        if (skip && !strcmp(n, skip))
            continue;
        TH_OK(nat_st_writer_add(w, n, reshape && !strcmp(n, reshape) ? small : l->items[i].tensor));
    }
    if (extra)
        TH_OK(nat_st_writer_add(w, extra, small));
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    nat_tensor_free(small);
}

START_TEST(strict_load_errors)
{
    nat_model_desc d = tiny_desc(1);
    nat_model *src, *m;
    TH_OK(nat_model_new(&src, &d));
    d.seed = 2;
    TH_OK(nat_model_new(&m, &d));
    int64_t n;
    float *before = snapshot(m, &n);
    make_tmpdir();
    char p_missing[128], p_extra[128], p_shape[128], p_trunc[128], p_none[128];
    tmp_path(p_missing, sizeof p_missing, "missing.safetensors");
    tmp_path(p_extra, sizeof p_extra, "extra.safetensors");
    tmp_path(p_shape, sizeof p_shape, "shape.safetensors");
    tmp_path(p_trunc, sizeof p_trunc, "trunc.safetensors");
    tmp_path(p_none, sizeof p_none, "absent.safetensors");

    write_variant(src, p_missing, "levels.1.blocks.0.attn.rpb", NULL, NULL);
    th_expect_error(nat_model_load(m, p_missing), NAT_ERR_FORMAT, "levels.1.blocks.0.attn.rpb", "missing");
    ck_assert_msg(strstr(nat_error_message(), p_missing), "message '%s' lacks the file", nat_error_message());
    assert_unchanged(m, before, n, "missing tensor");

    write_variant(src, p_extra, NULL, NULL, "levels.0.blocks.0.attn.relative_bias");
    th_expect_error(nat_model_load(m, p_extra), NAT_ERR_FORMAT, "levels.0.blocks.0.attn.relative_bias", "unexpected");
    assert_unchanged(m, before, n, "unexpected tensor");
    /* Non-strict reading accepts extra tensors (a training checkpoint's optimizer state). */
    nat_st_file *f;
    TH_OK(nat_st_open(&f, p_extra));
    TH_OK(nat_model_read(m, f, false));
    nat_st_close(f);
    float *loaded = snapshot(m, &n), *want = snapshot(src, &n);
    ck_assert(!memcmp(loaded, want, (size_t)n * sizeof(float)));
    free(loaded);
    free(want);
    nat_model_free(m);
    TH_OK(nat_model_new(&m, &d));

    write_variant(src, p_shape, NULL, "head.weight", NULL);
    th_expect_error(nat_model_load(m, p_shape), NAT_ERR_SHAPE, "head.weight", "[2, 2]");
    ck_assert_msg(strstr(nat_error_message(), "[5, 64]"), "message '%s' lacks the expected shape", nat_error_message());
    assert_unchanged(m, before, n, "mis-shaped tensor");

    /* A file cut in the middle of its data. */
    TH_OK(nat_model_save(src, p_trunc, 0, NULL, NULL));
    FILE *fp = fopen(p_trunc, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    ck_assert_int_eq(truncate(p_trunc, size / 2), 0);
    nat_status st = nat_model_load(m, p_trunc);
    ck_assert_msg(st == NAT_ERR_FORMAT || st == NAT_ERR_IO, "truncated file: %s (%s)", nat_status_name(st),
                  nat_error_message());
    ck_assert_msg(strstr(nat_error_message(), p_trunc), "message '%s' lacks the file", nat_error_message());
    assert_unchanged(m, before, n, "truncated file");

    th_expect_error(nat_model_load(m, p_none), NAT_ERR_IO, p_none, NULL);

    /* A checkpoint of another network: the first mismatch is named. */
    nat_model_desc other = tiny_desc(1);
    other.embed_dim = 16;
    other.heads[0] = 2;
    nat_model *o;
    TH_OK(nat_model_new(&o, &other));
    th_expect_error(nat_model_load(o, p_shape), NAT_ERR_SHAPE, "patch_embed.proj.0.weight", "[8, 3, 3, 3]");
    nat_model_free(o);

    /* Without the nat.* metadata the description cannot be read back. */
    TH_OK(nat_st_open(&f, p_missing));
    nat_model_desc back;
    th_expect_error(nat_model_desc_read(f, &back), NAT_ERR_FORMAT, "nat.name", p_missing);
    nat_st_close(f);

    const char *files[4] = {"missing.safetensors", "extra.safetensors", "shape.safetensors", "trunc.safetensors"};
    remove_tmpdir(files, 4);
    free(before);
    nat_model_free(src);
    nat_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"names_follow_pytorch", names_follow_pytorch},
        {"round_trip_is_bit_exact", round_trip_is_bit_exact},
        {"strict_load_errors", strict_load_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
