/* tests/test_reliability.c — regression tests for defects found by feeding nat bad input and misusing it
 * (docs/reliability.md): each case names the defect it pins down. Cases that need a training run live in
 * tests/test_train.c (its fixtures), config-parser ones in tests/test_config.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>

#include "support/harness.h"
#include "nat/data.h"
#include "nat/idx.h"
#include "nat/model.h"
#include "nat/nat.h"
#include "nat/safetensors.h"
#include "train/train.h"

/* Ties and NaN used to count as correct: no other logit is *strictly* greater than a tied or NaN label
 * logit, so a zeroed head scored top-1 100%. */
START_TEST(metrics_ties_are_wrong_and_nan_is_an_error)
{
    nat_metrics m;
    TH_OK(nat_metrics_init(&m, 10));
    float zeros[2 * 10] = {0};
    int32_t labels[2] = {3, 0};
    TH_OK(nat_metrics_add(&m, zeros, labels, 2));
    ck_assert_int_eq(m.n, 2);
    ck_assert_msg(m.top1 == 0 && m.top5 == 0, "all-tied logits: top-1 %lld, top-5 %lld of 2 counted correct",
                  (long long)m.top1, (long long)m.top5);
    /* A strict winner still counts, and a tie below the top does not spoil top-5. */
    float one[10] = {0, 0, 0, 2, 1, 1, 0, 0, 0, 0};
    nat_metrics_reset(&m);
    TH_OK(nat_metrics_add(&m, one, labels, 1));
    ck_assert_int_eq(m.top1, 1);
    ck_assert_int_eq(m.top5, 1);
    float nan_row[10] = {0};
    nan_row[3] = NAN;
    nat_metrics_reset(&m);
    th_expect_error(nat_metrics_add(&m, nan_row, labels, 1), NAT_ERR_INVALID_ARG, "non-finite logit", "class 3");
    float inf_row[10] = {0};
    inf_row[7] = INFINITY;
    th_expect_error(nat_metrics_add(&m, inf_row, labels, 1), NAT_ERR_INVALID_ARG, "non-finite logit", "class 7");
    nat_metrics_free(&m);
}
END_TEST

/* Size products overflowed (UB) where a tensor's size is computed: shape [2^62 + 1, 4] gave a tensor of
 * 4 elements; checkpoint metadata reached them too (nat.dilations = 99999999 asked for ~1.8e19 bytes), and
 * metadata integers were cut to int (nat.embed_dim = 4294967312 became 16). */
START_TEST(size_overflow_and_metadata_ranges)
{
    nat_tensor *t = NULL;
    int64_t big[2] = {((int64_t)1 << 62) + 1, 4};
    th_expect_error(nat_tensor_new(&t, NAT_F32, NAT_CPU, 2, big), NAT_ERR_INVALID_ARG, "overflow", NULL);
    ck_assert_ptr_null(t);
    int64_t big2[3] = {(int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 2}; /* 2^64 elements */
    th_expect_error(nat_tensor_new(&t, NAT_F32, NAT_CPU, 3, big2), NAT_ERR_INVALID_ARG, "overflow", NULL);
    int64_t bytes[1] = {(int64_t)1 << 62}; /* the count fits, its bytes do not */
    th_expect_error(nat_tensor_new(&t, NAT_F32, NAT_CPU, 1, bytes), NAT_ERR_INVALID_ARG, "overflow", NULL);

    nat_model_desc d = th_tiny_nat_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    char path[64];
    snprintf(path, sizeof path, "/tmp/nat_test_rel_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    static const struct {
        const char *key, *value, *want;
    } bad[] = {
        {"nat.embed_dim", "4294967312", "nat.embed_dim"},
        {"nat.num_classes", "-4294967293", "nat.num_classes"},
        {"nat.dilations", "99999999", "dilation 99999999"},
        {"nat.depths", "4294967297", "nat.depths"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        nat_st_writer *w;
        TH_OK(nat_st_writer_new(&w));
        TH_OK(nat_model_write(m, w));
        TH_OK(nat_st_writer_set_metadata(w, bad[i].key, bad[i].value));
        TH_OK(nat_st_writer_save(w, path));
        nat_st_writer_free(w);
        nat_st_file *f;
        TH_OK(nat_st_open(&f, path));
        nat_model_desc back;
        nat_status s = nat_model_desc_read(f, &back);
        nat_model *m2 = NULL;
        if (s == NAT_OK) /* what a caller does next: it must fail cleanly, not overflow */
            s = nat_model_new(&m2, &back);
        nat_model_free(m2);
        ck_assert_msg(s != NAT_OK, "%s = %s was accepted (embed_dim %d)", bad[i].key, bad[i].value, back.embed_dim);
        ck_assert_msg(strstr(nat_error_message(), bad[i].want), "%s = %s: message '%s'", bad[i].key, bad[i].value,
                      nat_error_message());
        nat_st_close(f);
    }
    unlink(path);
    nat_model_free(m);
}
END_TEST

/* Writes a w x h gray PNG (via stb_image_write) to path. */
static void write_png(const char *path, int w, int h)
{
    unsigned char *px = calloc((size_t)w * h, 1);
    ck_assert_ptr_nonnull(px);
    ck_assert(stbi_write_png(path, w, h, 1, px, w));
    free(px);
}

/* Sets the width and height in a PNG's IHDR (bytes 16..23; stb_image does not check the CRC). */
static void patch_png_size(const char *path, uint32_t w, uint32_t h)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    unsigned char b[8] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h};
    ck_assert_int_eq(fseek(f, 16, SEEK_SET), 0);
    ck_assert_int_eq(fwrite(b, 1, 8, f), 8);
    fclose(f);
}

/* A 5x4 PNG of 181 bytes whose second IDAT chunk declares 2.3 GB: stb_image grew its buffer to the
 * declared length before reading, 2 GB per decode (tests/fuzz/fuzz_image.c found it). Every chunk must
 * now fit in the file; the image is a format error the loader can skip. */
START_TEST(png_chunk_longer_than_the_file_is_refused)
{
    static const unsigned char png[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
        0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x63, 0x58, 0xaa,
        0x9c, 0x00, 0x00, 0x00, 0x13, 0x49, 0x44, 0x41, 0x54, 0x78, 0x5e, 0x63, 0x64, 0xe0, 0x06, 0x02,
        0x46, 0x73, 0x10, 0xc9, 0x82, 0x44, 0x02, 0x00, 0x0f, 0x89, 0x01, 0x60, 0xaa, 0x0b, 0x89, 0x50,
        0x4e, 0x47, 0x0d, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x5e, 0x63, 0x64, 0xe0, 0x06, 0x02, 0x46,
        0x73, 0x10, 0xc9, 0x82, 0x44, 0x02, 0x00, 0x0f, 0x0e, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
        0x4e, 0x89, 0x01, 0x60, 0xaa, 0x0b, 0x0e, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x44, 0xae, 0x42, 0x60,
        0x49, 0xc9, 0x82, 0x44, 0x02, 0x00, 0x0f, 0x0e, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
        0x89, 0x01, 0x60, 0xaa, 0x0b, 0x0e, 0xb6, 0x00, 0x00, 0x00, 0x00, 0x44, 0xae, 0x42, 0x60, 0x49,
        0x45, 0x4e, 0x82, 0x44, 0xae, 0x42, 0x60, 0x82,
    };
    char path[64];
    snprintf(path, sizeof path, "/tmp/nat_test_rel_png_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, png, sizeof png), (ssize_t)sizeof png);
    close(fd);
    nat_image im = {0};
    th_expect_error(nat_image_load(path, 1, &im), NAT_ERR_FORMAT, "corrupt PNG", "past the end of the file");
    nat_image_free(&im);
    unlink(path);
}
END_TEST

/* An 18000 x 18000 PNG of under 1 MB was decoded (~6 GB per loader worker) and aborted the run even in
 * non-strict mode: the size is read from the header first, and a larger image than the limit is a
 * format error the loader can skip. */
START_TEST(image_size_bomb_refused_before_decoding)
{
    char root[64], p[160];
    snprintf(root, sizeof root, "/tmp/nat_test_rel_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(p, sizeof p, "%s/cls", root);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    snprintf(p, sizeof p, "%s/cls/a_small.png", root);
    write_png(p, 16, 16);
    snprintf(p, sizeof p, "%s/cls/b_bomb.png", root);
    write_png(p, 64, 64);
    patch_png_size(p, 18000, 18000);
    int64_t old = nat_data_set_max_pixels(1000 * 1000);
    nat_dataset *ds;
    TH_OK(nat_dataset_open_folder(root, 3, &ds));
    nat_image im = {0};
    int32_t y;
    TH_OK(nat_dataset_get(ds, 0, &im, &y));
    th_expect_error(nat_dataset_get(ds, 1, &im, &y), NAT_ERR_FORMAT, "18000x18000", "max_pixels");
    /* A truncated JPEG is named as such (it was reported as "bad png sig"). */
    snprintf(p, sizeof p, "%s/cls/c_trunc.jpg", root);
    {
        unsigned char px[64 * 64 * 3] = {0};
        ck_assert(stbi_write_jpg(p, 64, 64, 3, px, 90));
        struct stat sb;
        ck_assert_int_eq(stat(p, &sb), 0);
        ck_assert_int_eq(truncate(p, sb.st_size / 2), 0);
    }
    nat_dataset_free(ds);
    TH_OK(nat_dataset_open_folder(root, 3, &ds));
    nat_status s = nat_dataset_get(ds, 2, &im, &y);
    ck_assert_int_ne(s, NAT_OK);
    ck_assert_msg(strstr(nat_error_message(), "JPEG"), "truncated JPEG reported as: %s", nat_error_message());
    nat_data_set_max_pixels(old);
    nat_image_free(&im);
    nat_dataset_free(ds);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Makes root/<split>/<class>/img.png for each class named in the comma-separated list. */
static void make_split(const char *root, const char *split, const char *classes)
{
    char p[300], list[200];
    snprintf(list, sizeof list, "%s", classes);
    snprintf(p, sizeof p, "%s/%s", root, split);
    mkdir(p, 0777);
    for (char *save, *c = strtok_r(list, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
        snprintf(p, sizeof p, "%s/%s/%s", root, split, c);
        ck_assert_int_eq(mkdir(p, 0777), 0);
        snprintf(p, sizeof p, "%s/%s/%s/img.png", root, split, c);
        write_png(p, 16, 16);
    }
}

static nat_status train_folder_k(const char *root, const char *train, const char *val, int kernel, FILE *out)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s/train %s/val", root, root);
    ck_assert_int_eq(system(cmd), 0);
    make_split(root, "train", train);
    make_split(root, "val", val);
    char text[600];
    snprintf(text, sizeof text,
             "[model]\nembed_dim = 8\ndepths = 1\nheads = 1\nkernel_size = %d\nmlp_ratio = 2\npatch_stride = 2\n"
             "[data]\nformat = folder\nroot = %s\nimg_size = 8\nworkers = 0\n"
             "[train]\nepochs = 1\nbatch_size = 1\nthreads = 1\n[log]\ndir = %s/run\n",
             kernel, root, root);
    nat_config c;
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, text, "folder.cfg"));
    nat_train_opts o = {.out = out, .progress = out, .dry_run = true};
    nat_train_result res;
    return nat_train(&c, &o, &res);
}

static nat_status train_folder(const char *root, const char *train, const char *val, FILE *out)
{
    return train_folder_k(root, train, val, 3, out);
}

/* A kernel far larger than the token map (k 63 on 7x7) ran hundreds of times slower than the map needs,
 * silently: NA pads each layer's map up to kernel x dilation. A 4x4 map (8x8 images, stride 2) with
 * kernel 21 pads to 21x21, 28x the work: warned about, naming the level and the sizes; kernel 3
 * (3x3 <= 4x4, no padding) is not. */
START_TEST(kernel_far_larger_than_the_map_is_warned_about)
{
    char root[64];
    snprintf(root, sizeof root, "/tmp/nat_test_rel_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    for (int k = 3; k <= 21; k += 18) {
        FILE *out = tmpfile();
        ck_assert_ptr_nonnull(out);
        TH_OK(train_folder_k(root, "cat,dog", "cat,dog", k, out));
        char text[8192] = "";
        rewind(out);
        text[fread(text, 1, sizeof text - 1, out)] = 0;
        fclose(out);
        const char *w = strstr(text, "warning: level 0");
        if (k == 3)
            ck_assert_msg(!w, "kernel 3 on a 4x4 map warned: %s", text);
        else
            ck_assert_msg(w && strstr(w, "kernel 21") && strstr(w, "4x4") && strstr(w, "21x21"),
                          "no warning naming level 0, kernel 21, the 4x4 map and its 21x21 padding: %s", text);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* val/{aardvark,cat} against train/{cat,dog} was evaluated with mismatched labels (exit 0); a different
 * class count failed only after training. Both are refused before training, naming both lists; a single
 * class (top-1 trivially 100%) is warned about. */
START_TEST(train_val_class_lists_compared_before_training)
{
    char root[64];
    snprintf(root, sizeof root, "/tmp/nat_test_rel_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    FILE *out = tmpfile();
    ck_assert_ptr_nonnull(out);
    nat_status s = train_folder(root, "cat,dog", "aardvark,cat", out);
    ck_assert_msg(s != NAT_OK, "train {cat,dog} with val {aardvark,cat} was accepted");
    th_expect_error(s, NAT_ERR_FORMAT, "aardvark, cat", "cat, dog");
    th_expect_error(train_folder(root, "cat,dog", "cat,dog,emu", out), NAT_ERR_FORMAT, "cat, dog, emu", "cat, dog");
    TH_OK(train_folder(root, "cat,dog", "cat,dog", out));
    TH_OK(train_folder(root, "cat", "cat", out));
    char text[8192] = "";
    rewind(out);
    size_t n = fread(text, 1, sizeof text - 1, out);
    text[n] = 0;
    ck_assert_msg(strstr(text, "warning: one class"), "no warning for a one-class dataset");
    fclose(out);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A data.root with non-UTF-8 bytes went into the checkpoint header as is: JSON that other safetensors
 * readers refuse. The writer refuses it, and --set (which skips the config file's UTF-8 check) too. */
START_TEST(checkpoint_metadata_must_be_utf8)
{
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    th_expect_error(nat_st_writer_set_metadata(w, "train.config", "[data]\nroot = /data/caf\xe9\n"), NAT_ERR_INVALID_ARG,
                    "train.config", "UTF-8");
    th_expect_error(nat_st_writer_set_metadata(w, "k\xff", "v"), NAT_ERR_INVALID_ARG, "UTF-8", NULL);
    TH_OK(nat_st_writer_set_metadata(w, "train.config", "[data]\nroot = /data/caf\xc3\xa9\n"));
    nat_st_writer_free(w);
    nat_config c;
    nat_config_defaults(&c);
    th_expect_error(nat_config_set(&c, "data.root=/data/caf\xe9"), NAT_ERR_FORMAT, "UTF-8", NULL);
    ck_assert_int_eq(nat_utf8_invalid_at("ok \xe2\x82\xac"), -1);
    ck_assert_int_eq(nat_utf8_invalid_at("ab\xed\xa0\x80"), 2); /* a UTF-16 surrogate */
}
END_TEST

/* Found by fuzz_idx: an 11-byte IDX file declaring 3.9e9 elements made the reader allocate 3.9 GB before
 * reading a byte of data. Memory now grows with the data actually read. (The address-space limit makes
 * the old behaviour fail here; ASan reserves more than that limit for itself, so it is off there.) */
START_TEST(idx_declared_size_not_allocated_up_front)
{
#ifndef __SANITIZE_ADDRESS__
    struct rlimit rl = {(rlim_t)1 << 30, (rlim_t)1 << 30};
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
#endif
    static const unsigned char bytes[] = {0, 0, 8, 1, 0xea, 0, 0, 3, 0, 1, 2};
    char path[64];
    snprintf(path, sizeof path, "/tmp/nat_test_rel_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, sizeof bytes), (ssize_t)sizeof bytes);
    close(fd);
    nat_idx idx;
    nat_status s = nat_idx_load(path, &idx);
    unlink(path);
    th_expect_error(s, NAT_ERR_FORMAT, "truncated", NULL);
}
END_TEST

/* Asserts that `s` is NAT_ERR_INVALID_ARG and the message names `fn` and says "<arg> is NULL". */
static void expect_null_arg(nat_status s, const char *fn, const char *arg)
{
    char want[64];
    snprintf(want, sizeof want, "%s is NULL", arg);
    th_expect_error(s, NAT_ERR_INVALID_ARG, fn, want);
}

/* Calls op i of include/nat/ops.h and natten.h with x for every tensor argument (first_null: the first
 * tensor argument is NULL instead). Returns the status; *name and *arg get the op's and the first
 * argument's names as its messages spell them; *n is set to the number of ops. */
static nat_status call_op(int i, nat_ctx *ctx, nat_tensor *x, bool first_null, nat_tensor **out, const char **name,
                          const char **arg, int *n)
{
    static const int perm[2] = {1, 0};
    static const int64_t shape[2] = {4, 2}, before[2] = {0, 0}, after[2] = {0, 1};
    static const int32_t labels[2] = {0, 1};
    nat_tensor *a = first_null ? NULL : x;
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_na_params p = nat_na_params_make(2, 3, 1);
    *n = 31;
    switch (i) {
    case 0: *name = "matmul", *arg = "a"; return nat_matmul(ctx, a, x, out);
    case 1: *name = "linear", *arg = "x"; return nat_linear(ctx, a, x, NULL, out);
    case 2: *name = "add", *arg = "a"; return nat_add(ctx, a, x, out);
    case 3: *name = "sub", *arg = "a"; return nat_sub(ctx, a, x, out);
    case 4: *name = "mul", *arg = "a"; return nat_mul(ctx, a, x, out);
    case 5: *name = "scale", *arg = "a"; return nat_scale(ctx, a, 2.0f, out);
    case 6: *name = "bias_add", *arg = "x"; return nat_bias_add(ctx, a, x, 0, out);
    case 7: *name = "gelu", *arg = "x"; return nat_gelu(ctx, a, out);
    case 8: *name = "layernorm", *arg = "x"; return nat_layernorm(ctx, a, NULL, NULL, 1e-5f, out);
    case 9: *name = "softmax", *arg = "x"; return nat_softmax(ctx, a, out);
    case 10: *name = "conv2d", *arg = "input"; return nat_conv2d(ctx, a, x, NULL, 1, 1, 0, 0, out);
    case 11: *name = "global_avg_pool", *arg = "input"; return nat_global_avg_pool(ctx, a, 1, out);
    case 12: *name = "permute", *arg = "input"; return nat_permute(ctx, a, perm, out);
    case 13: *name = "reshape", *arg = "input"; return nat_reshape(ctx, a, 2, shape, out);
    case 14: *name = "contiguous", *arg = "input"; return nat_contiguous(ctx, a, out);
    case 15: *name = "slice", *arg = "input"; return nat_slice(ctx, a, 0, 0, 1, out);
    case 16: *name = "pad", *arg = "input"; return nat_pad(ctx, a, before, after, 0.0f, out);
    case 17: *name = "dropout", *arg = "input"; return nat_dropout(ctx, a, 0.5f, true, &rng, out);
    case 18: *name = "drop_path", *arg = "input"; return nat_drop_path(ctx, a, 0.5f, true, &rng, out);
    case 19: *name = "cross_entropy", *arg = "logits"; return nat_cross_entropy(ctx, a, labels, 0.0f, out);
    case 20: *name = "cross_entropy_soft", *arg = "logits"; return nat_cross_entropy_soft(ctx, a, x, out);
    case 21: *name = "sum", *arg = "x"; return nat_sum(ctx, a, out);
    case 22: *name = "mean", *arg = "x"; return nat_mean(ctx, a, out);
    case 23: *name = "na_qk", *arg = "q"; return nat_na_qk(ctx, a, x, NULL, &p, out);
    case 24: *name = "na_av", *arg = "attn"; return nat_na_av(ctx, a, x, &p, out);
    case 25: *name = "na2d", *arg = "q"; return nat_na(ctx, a, x, x, NULL, &p, out);
    case 26: *name = "na_qk" /* the rank spellings report as the op */, *arg = "q"; return nat_na2d_qk(ctx, a, x, NULL, &p, out);
    case 27: *name = "na_av", *arg = "attn"; return nat_na2d_av(ctx, a, x, &p, out);
    case 28: *name = "na2d", *arg = "q"; return nat_na2d(ctx, a, x, x, NULL, &p, out);
    case 29: p.ndim = 1; *name = "na1d", *arg = "q"; return nat_na1d(ctx, a, x, x, NULL, &p, out);
    default: p.ndim = 3; *name = "na3d", *arg = "q"; return nat_na3d(ctx, a, x, x, NULL, &p, out);
    }
}

/* NULL arguments crashed the C API (nat_ctx_new(NULL), nat_tensor_new with a NULL shape, nat_na2d with a
 * NULL ctx or params, nat_backward(ctx, NULL), ...): each is an invalid-argument error naming the
 * function and the argument. */
START_TEST(null_arguments_are_errors_naming_the_argument)
{
    int64_t shape[2] = {2, 4};
    nat_tensor *t = NULL;
    expect_null_arg(nat_ctx_new(NULL, NAT_CPU), "nat_ctx_new", "out");
    expect_null_arg(nat_tensor_new(NULL, NAT_F32, NAT_CPU, 2, shape), "nat_tensor_new", "out");
    expect_null_arg(nat_tensor_new(&t, NAT_F32, NAT_CPU, 2, NULL), "nat_tensor_new", "shape");
    ck_assert_ptr_null(t);
    expect_null_arg(nat_model_new_variant(NULL, "nat_mini", 10, 3), "nat_model_new_variant", "out");
    nat_dataset *ds = NULL;
    expect_null_arg(nat_dataset_open(NULL, "/tmp", NAT_SPLIT_TRAIN, &ds), "nat_dataset_open", "format");

    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    expect_null_arg(nat_backward(ctx, NULL), "nat_backward", "loss");
    expect_null_arg(nat_backward(NULL, NULL), "nat_backward", "ctx");
    nat_tensor *q, *out = NULL;
    int64_t qs[5] = {1, 1, 4, 4, 2};
    TH_OK(nat_ctx_zeros(ctx, &q, NAT_F32, 5, qs));
    nat_na_params p = nat_na_params_make(2, 3, 1);
    expect_null_arg(nat_na2d(NULL, q, q, q, NULL, &p, &out), "na2d", "ctx");
    expect_null_arg(nat_na2d(ctx, q, q, q, NULL, NULL, &out), "na2d", "params");
    expect_null_arg(nat_na2d(ctx, q, q, q, NULL, &p, NULL), "na2d", "out");
    TH_OK(nat_na2d(ctx, q, q, q, NULL, &p, &out)); /* and the same call with every argument is fine */

    /* Every op: a NULL out, a NULL first input and a NULL ctx. */
    nat_tensor *x;
    TH_OK(nat_ctx_zeros(ctx, &x, NAT_F32, 2, shape));
    int n = 1;
    for (int i = 0; i < n; i++) {
        const char *name = "", *arg = "";
        nat_status s = call_op(i, ctx, x, false, NULL, &name, &arg, &n);
        expect_null_arg(s, name, strstr(name, "_qk") ? "attn" : "out"); /* the qk ops name their output attn */
        out = NULL;
        expect_null_arg(call_op(i, ctx, x, true, &out, &name, &arg, &n), name, arg);
        expect_null_arg(call_op(i, NULL, x, false, &out, &name, &arg, &n), name, "ctx");
    }
    nat_ctx_free(ctx);
}
END_TEST

/* A second nat_backward over a tape already walked returned OK and did nothing (the gradients silently
 * stayed those of one pass). It is an error now; a new forward on the same context (accumulation over
 * micro-batches) still back-propagates and accumulates. */
START_TEST(second_backward_on_a_spent_tape_is_an_error)
{
    int64_t shape[1] = {3};
    const float wv[3] = {1, 2, 3};
    nat_tensor *w;
    TH_OK(nat_tensor_new(&w, NAT_F32, NAT_CPU, 1, shape));
    TH_OK(nat_tensor_copy_from(w, wv, 3));
    nat_set_requires_grad(w, true);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *y, *loss;
    TH_OK(nat_mul(ctx, w, w, &y));
    TH_OK(nat_sum(ctx, y, &loss));
    TH_OK(nat_backward(ctx, loss));
    th_expect_error(nat_backward(ctx, loss), NAT_ERR_INVALID_ARG, "backward", "already");
    /* a second micro-batch in the same step accumulates */
    TH_OK(nat_mul(ctx, w, w, &y));
    TH_OK(nat_sum(ctx, y, &loss));
    TH_OK(nat_backward(ctx, loss));
    float g[3];
    TH_OK(nat_tensor_copy_to(w->grad, g, 3));
    for (int i = 0; i < 3; i++)
        ck_assert_float_eq(g[i], 4 * wv[i]);
    nat_ctx_free(ctx);
    nat_tensor_free(w);
}
END_TEST

/* A step tensor kept across nat_ctx_reset was computed on when its pool slot had been handed out again
 * (it then aliased the new step's tensor). Ops refuse it, naming the op and the reset; persistent tensors
 * and the new step's tensors work. */
START_TEST(step_tensor_after_reset_is_an_error)
{
    int64_t shape[1] = {4};
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *old, *fresh, *out, *pers;
    TH_OK(nat_ctx_zeros(ctx, &old, NAT_F32, 1, shape));
    nat_ctx_reset(ctx);
    TH_OK(nat_ctx_zeros(ctx, &fresh, NAT_F32, 1, shape)); /* the first slot again */
    th_expect_error(nat_gelu(ctx, old, &out), NAT_ERR_INVALID_ARG, "gelu", "reset");
    th_expect_error(nat_add(ctx, fresh, old, &out), NAT_ERR_INVALID_ARG, "add", "reset");
    TH_OK(nat_gelu(ctx, fresh, &out));
    nat_ctx_reset(ctx);
    th_expect_error(nat_gelu(ctx, old, &out), NAT_ERR_INVALID_ARG, "gelu", "reset");
    th_expect_error(nat_gelu(ctx, fresh, &out), NAT_ERR_INVALID_ARG, "gelu", "reset");
    TH_OK(nat_tensor_new(&pers, NAT_F32, NAT_CPU, 1, shape));
    TH_OK(nat_tensor_fill(pers, 1.0f));
    TH_OK(nat_gelu(ctx, pers, &out));
    nat_tensor_free(pers);
    nat_ctx_free(ctx);
}
END_TEST

int main(void)
{
    const th_case cases[] = {
        {"metrics_ties_are_wrong_and_nan_is_an_error", metrics_ties_are_wrong_and_nan_is_an_error},
        {"size_overflow_and_metadata_ranges", size_overflow_and_metadata_ranges},
        {"image_size_bomb_refused_before_decoding", image_size_bomb_refused_before_decoding},
        {"train_val_class_lists_compared_before_training", train_val_class_lists_compared_before_training},
        {"png_chunk_longer_than_the_file_is_refused", png_chunk_longer_than_the_file_is_refused},
        {"kernel_far_larger_than_the_map_is_warned_about", kernel_far_larger_than_the_map_is_warned_about},
        {"checkpoint_metadata_must_be_utf8", checkpoint_metadata_must_be_utf8},
        {"idx_declared_size_not_allocated_up_front", idx_declared_size_not_allocated_up_front},
        {"null_arguments_are_errors_naming_the_argument", null_arguments_are_errors_naming_the_argument},
        {"second_backward_on_a_spent_tape_is_an_error", second_backward_on_a_spent_tape_is_an_error},
        {"step_tensor_after_reset_is_an_error", step_tensor_after_reset_is_an_error},
    };
    return th_run_cases("reliability", cases, sizeof cases / sizeof *cases, 120);
}
