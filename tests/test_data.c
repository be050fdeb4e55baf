/* tests/test_data.c — datasets, transforms, mixup/cutmix and the loader, on fixtures the test writes into a
 * mkdtemp directory: a gzipped IDX pair, CIFAR-10 and CIFAR-100 batch files, an image folder of PNGs and
 * JPEGs (stb_image_write) with a corrupt .jpg and a truncated .png. Transforms are checked against values
 * worked out by hand on tiny images; the loader against itself across worker counts, runs and resumes. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <stb_image_write.h> /* stbi_write_png, stbi_write_jpg (Debian's libstb) */

#include "nat/data.h"
#include "support/harness.h"

/* ---- fixtures ---- */

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/nat_test_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

static void remove_dir(void) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static char *path_in(char *buf, size_t cap, const char *rel)
{
    snprintf(buf, cap, "%s/%s", dir, rel);
    return buf;
}

static void mkdir_in(const char *rel)
{
    char p[512];
    ck_assert_int_eq(mkdir(path_in(p, sizeof p, rel), 0755), 0);
}

static void write_bytes(const char *rel, const void *bytes, size_t n, int gz)
{
    char p[512];
    path_in(p, sizeof p, rel);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, bytes, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(p, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
        fclose(f);
    }
}

static void be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8), b[3] = (uint8_t)v;
}

/* IDX images [n, 3, 4] with pixel p of image i = (i * 12 + p) * 3 % 256, and labels i % 10 (+ extra). */
static void write_idx_pair(const char *images, const char *labels, int n_images, int n_labels)
{
    uint8_t b[16 + 64 * 12];
    be32(b, 0x0803), be32(b + 4, (uint32_t)n_images), be32(b + 8, 3), be32(b + 12, 4);
    for (int i = 0; i < n_images * 12; i++)
        b[16 + i] = (uint8_t)(i * 3 % 256);
    write_bytes(images, b, 16 + (size_t)n_images * 12, 1);
    be32(b, 0x0801), be32(b + 4, (uint32_t)n_labels);
    for (int i = 0; i < n_labels; i++)
        b[8 + i] = (uint8_t)(i % 10);
    write_bytes(labels, b, 8 + (size_t)n_labels, 1);
}

static void expect_error(nat_status got, nat_status want, const char *needle)
{
    ck_assert_msg(got == want, "expected %s, got %s: %s", nat_status_name(want), nat_status_name(got),
                  nat_error_message());
    ck_assert_msg(strstr(nat_error_message(), needle), "message '%s' should contain '%s'", nat_error_message(), needle);
}

/* ---- IDX ---- */

START_TEST(idx_pair_values_and_labels)
{
    make_dir();
    write_idx_pair("imgs.gz", "labs.gz", 5, 5);
    char pi[512], pl[512];
    nat_dataset *ds;
    TH_OK(nat_dataset_open_idx(path_in(pi, sizeof pi, "imgs.gz"), path_in(pl, sizeof pl, "labs.gz"), &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 5);
    ck_assert_int_eq(nat_dataset_classes(ds), 10);
    int c, h, w;
    nat_dataset_shape(ds, &c, &h, &w);
    ck_assert_int_eq(c, 1); ck_assert_int_eq(h, 3); ck_assert_int_eq(w, 4);
    ck_assert_str_eq(nat_dataset_class_name(ds, 7), "7");
    nat_image im = {0};
    for (int i = 0; i < 5; i++) {
        int32_t label;
        TH_OK(nat_dataset_get(ds, i, &im, &label));
        ck_assert_int_eq(label, i);
        ck_assert_int_eq(im.c, 1); ck_assert_int_eq(im.h, 3); ck_assert_int_eq(im.w, 4);
        for (int p = 0; p < 12; p++)
            ck_assert_float_eq(im.data[p], (float)((i * 12 + p) * 3 % 256) / 255.0f);
    }
    int32_t label;
    expect_error(nat_dataset_get(ds, 5, &im, &label), NAT_ERR_INVALID_ARG, "out of range");
    nat_dataset_free(ds);

    /* the MNIST directory layout, with Fashion-MNIST's names */
    write_idx_pair("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 4, 4);
    TH_OK(nat_dataset_open_mnist(dir, NAT_SPLIT_TEST, true, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 4);
    ck_assert_str_eq(nat_dataset_class_name(ds, 0), "T-shirt/top");
    ck_assert_str_eq(nat_dataset_class_name(ds, 9), "Ankle boot");
    nat_dataset_free(ds);
    expect_error(nat_dataset_open("fashion-mnist", dir, NAT_SPLIT_TRAIN, &ds), NAT_ERR_IO, "train-images-idx3-ubyte");

    /* mismatched counts name both files */
    write_idx_pair("imgs.gz", "labs.gz", 5, 4);
    nat_status s = nat_dataset_open_idx(pi, pl, &ds);
    expect_error(s, NAT_ERR_FORMAT, "5 images");
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "imgs.gz"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "labs.gz"));
    ck_assert_ptr_null(ds);
    nat_image_free(&im);
    remove_dir();
}
END_TEST

/* The real Fashion-MNIST test split (Debian's package; skipped, not passed, without it): counts agree,
 * labels in range. */
START_TEST(fashion_mnist_when_installed)
{
    nat_dataset *ds;
    TH_OK(nat_dataset_open("fashion-mnist", NAT_FASHION_MNIST_DIR, NAT_SPLIT_TEST, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 10000);
    ck_assert_int_eq(nat_dataset_classes(ds), 10);
    int c, h, w;
    nat_dataset_shape(ds, &c, &h, &w);
    ck_assert_int_eq(c * h * w, 784);
    nat_image im = {0};
    int32_t label;
    TH_OK(nat_dataset_get(ds, 9999, &im, &label));
    ck_assert(label >= 0 && label < 10);
    nat_image_free(&im);
    nat_dataset_free(ds);
}
END_TEST

/* ---- CIFAR ---- */

/* Record r of file f: pixel p = (f * 31 + r * 7 + p) % 251; labels given. */
static void cifar_record(uint8_t *rec, int label_bytes, const int *labels, int f, int r)
{
    for (int i = 0; i < label_bytes; i++)
        rec[i] = (uint8_t)labels[i];
    for (int p = 0; p < 3072; p++)
        rec[label_bytes + p] = (uint8_t)((f * 31 + r * 7 + p) % 251);
}

static void check_cifar_pixels(const nat_image *im, int f, int r)
{
    ck_assert_int_eq(im->c, 3); ck_assert_int_eq(im->h, 32); ck_assert_int_eq(im->w, 32);
    for (int p = 0; p < 3072; p += 97)
        ck_assert_float_eq(im->data[p], (float)((f * 31 + r * 7 + p) % 251) / 255.0f);
}

START_TEST(cifar10_values_and_labels)
{
    make_dir();
    static uint8_t buf[2 * 3073];
    for (int f = 0; f < 6; f++) {
        for (int r = 0; r < 2; r++) {
            int label = (f * 2 + r) % 10;
            cifar_record(buf + r * 3073, 1, &label, f, r);
        }
        char name[64];
        if (f < 5)
            snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        else
            snprintf(name, sizeof name, "test_batch.bin");
        write_bytes(name, buf, sizeof buf, 0);
    }
    nat_dataset *ds;
    TH_OK(nat_dataset_open_cifar10(dir, NAT_SPLIT_TRAIN, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 10);
    ck_assert_int_eq(nat_dataset_classes(ds), 10);
    ck_assert_str_eq(nat_dataset_class_name(ds, 0), "airplane");
    ck_assert_str_eq(nat_dataset_class_name(ds, 9), "truck");
    nat_image im = {0};
    for (int i = 0; i < 10; i++) {
        int32_t label;
        TH_OK(nat_dataset_get(ds, i, &im, &label));
        ck_assert_int_eq(label, i % 10);
        check_cifar_pixels(&im, i / 2, i % 2);
    }
    nat_dataset_free(ds);
    TH_OK(nat_dataset_open("cifar10", dir, NAT_SPLIT_TEST, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 2);
    int32_t label;
    TH_OK(nat_dataset_get(ds, 1, &im, &label));
    ck_assert_int_eq(label, 1);
    check_cifar_pixels(&im, 5, 1);
    nat_dataset_free(ds);
    nat_image_free(&im);

    /* a file cut short, a bad label, a missing file: errors naming the file */
    write_bytes("data_batch_3.bin", buf, sizeof buf - 5, 0);
    expect_error(nat_dataset_open_cifar10(dir, NAT_SPLIT_TRAIN, &ds), NAT_ERR_FORMAT, "data_batch_3.bin");
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "3073"));
    ck_assert_ptr_null(ds);
    buf[3073] = 10;
    write_bytes("data_batch_3.bin", buf, sizeof buf, 0);
    expect_error(nat_dataset_open_cifar10(dir, NAT_SPLIT_TRAIN, &ds), NAT_ERR_FORMAT,
                 "data_batch_3.bin: record 1 has label 10");
    char p[512];
    unlink(path_in(p, sizeof p, "data_batch_5.bin"));
    expect_error(nat_dataset_open_cifar10(dir, NAT_SPLIT_TRAIN, &ds), NAT_ERR_FORMAT, "data_batch_3.bin");
    write_bytes("data_batch_3.bin", buf, 3073, 0);
    expect_error(nat_dataset_open_cifar10(dir, NAT_SPLIT_TRAIN, &ds), NAT_ERR_IO, "data_batch_5.bin");
    remove_dir();
}
END_TEST

START_TEST(cifar100_values_and_labels)
{
    make_dir();
    static uint8_t buf[3 * 3074];
    for (int r = 0; r < 3; r++) {
        int labels[2] = {19 - r, 99 - r * 10};
        cifar_record(buf + r * 3074, 2, labels, 0, r);
    }
    write_bytes("train.bin", buf, sizeof buf, 0);
    nat_dataset *fine, *coarse;
    TH_OK(nat_dataset_open_cifar100(dir, NAT_SPLIT_TRAIN, false, &fine));
    TH_OK(nat_dataset_open("cifar100-coarse", dir, NAT_SPLIT_TRAIN, &coarse));
    ck_assert_int_eq(nat_dataset_classes(fine), 100);
    ck_assert_int_eq(nat_dataset_classes(coarse), 20);
    ck_assert_str_eq(nat_dataset_class_name(fine, 99), "worm");
    ck_assert_str_eq(nat_dataset_class_name(fine, 0), "apple");
    ck_assert_str_eq(nat_dataset_class_name(coarse, 19), "vehicles_2");
    nat_image im = {0};
    for (int r = 0; r < 3; r++) {
        int32_t lf, lc;
        TH_OK(nat_dataset_get(fine, r, &im, &lf));
        check_cifar_pixels(&im, 0, r);
        TH_OK(nat_dataset_get(coarse, r, &im, &lc));
        check_cifar_pixels(&im, 0, r);
        ck_assert_int_eq(lf, 99 - r * 10);
        ck_assert_int_eq(lc, 19 - r);
    }
    nat_image_free(&im);
    nat_dataset_free(fine);
    nat_dataset_free(coarse);
    /* a CIFAR-10-sized record in a CIFAR-100 file */
    write_bytes("test.bin", buf, 3073, 0);
    nat_dataset *ds;
    expect_error(nat_dataset_open_cifar100(dir, NAT_SPLIT_TEST, false, &ds), NAT_ERR_FORMAT, "test.bin");
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "3074"));
    remove_dir();
}
END_TEST

/* ---- image folders ---- */

/* A w x h RGB test pattern: smooth, so JPEG keeps it close; `seed` shifts it. */
static void pattern(uint8_t *px, int w, int h, int seed)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                px[(y * w + x) * 3 + c] = (uint8_t)(40 + seed * 20 + x * 6 + y * 3 + c * 30);
}

static void write_png(const char *rel, int w, int h, int seed)
{
    uint8_t px[64 * 64 * 3];
    pattern(px, w, h, seed);
    char p[512];
    ck_assert(stbi_write_png(path_in(p, sizeof p, rel), w, h, 3, px, w * 3));
}

static void write_jpg(const char *rel, int w, int h, int seed)
{
    uint8_t px[64 * 64 * 3];
    pattern(px, w, h, seed);
    char p[512];
    ck_assert(stbi_write_jpg(path_in(p, sizeof p, rel), w, h, 3, px, 95));
}

/* dir/img: classes "cat" (2 PNG + a nested JPEG), "ant" (1 PNG, 1 JPEG, a .txt), "bee" (1 JPEG); with
 * bad = true, "bee" also holds a corrupt .jpg and "cat" a truncated .png. */
static void write_folder(bool bad)
{
    mkdir_in("img");
    mkdir_in("img/cat");
    mkdir_in("img/cat/more");
    mkdir_in("img/ant");
    mkdir_in("img/bee");
    write_png("img/cat/1.png", 12, 10, 0);
    write_png("img/cat/2.PNG", 9, 7, 1);
    write_jpg("img/cat/more/3.jpg", 16, 16, 2);
    write_png("img/ant/a.png", 8, 8, 3);
    write_jpg("img/ant/b.jpeg", 20, 12, 4);
    write_bytes("img/ant/notes.txt", "hello", 5, 0);
    write_jpg("img/bee/x.jpg", 10, 10, 5);
    if (bad) {
        uint8_t junk[600];
        for (int i = 0; i < 600; i++)
            junk[i] = (uint8_t)(i * 131 + 7);
        junk[0] = 0xff, junk[1] = 0xd8; /* a JPEG start marker, then garbage */
        write_bytes("img/bee/y.jpg", junk, sizeof junk, 0);
        char p[512];
        FILE *f = fopen(path_in(p, sizeof p, "img/cat/1.png"), "rb");
        ck_assert_ptr_nonnull(f);
        static uint8_t full[8192];
        size_t n = fread(full, 1, sizeof full, f);
        fclose(f);
        write_bytes("img/cat/5_truncated.png", full, n / 2, 0);
    }
}

START_TEST(folder_values_and_labels)
{
    make_dir();
    write_folder(false);
    char p[512];
    nat_dataset *ds;
    TH_OK(nat_dataset_open_folder(path_in(p, sizeof p, "img"), 3, &ds));
    ck_assert_int_eq(nat_dataset_classes(ds), 3);
    ck_assert_str_eq(nat_dataset_class_name(ds, 0), "ant");
    ck_assert_str_eq(nat_dataset_class_name(ds, 1), "bee");
    ck_assert_str_eq(nat_dataset_class_name(ds, 2), "cat");
    ck_assert_int_eq(nat_dataset_count(ds), 6);
    int c, h, w;
    nat_dataset_shape(ds, &c, &h, &w);
    ck_assert_int_eq(c, 3); ck_assert_int_eq(h, 0); ck_assert_int_eq(w, 0);
    /* order: ant/a.png, ant/b.jpeg, bee/x.jpg, cat/1.png, cat/2.PNG, cat/more/3.jpg */
    const int labels[6] = {0, 0, 1, 2, 2, 2}, ws[6] = {8, 20, 10, 12, 9, 16}, hs[6] = {8, 12, 10, 10, 7, 16};
    const int seeds[6] = {3, 4, 5, 0, 1, 2};
    const bool png[6] = {true, false, false, true, true, false};
    nat_image im = {0};
    for (int i = 0; i < 6; i++) {
        int32_t label;
        TH_OK(nat_dataset_get(ds, i, &im, &label));
        ck_assert_int_eq(label, labels[i]);
        ck_assert_int_eq(im.c, 3); ck_assert_int_eq(im.h, hs[i]); ck_assert_int_eq(im.w, ws[i]);
        uint8_t px[64 * 64 * 3];
        pattern(px, ws[i], hs[i], seeds[i]);
        double err = 0.0;
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < hs[i]; y++)
                for (int x = 0; x < ws[i]; x++) {
                    float want = px[(y * ws[i] + x) * 3 + ch] / 255.0f;
                    float got = im.data[(ch * hs[i] + y) * ws[i] + x];
                    if (png[i])
                        ck_assert_float_eq(got, want); /* lossless, exact */
                    err += fabs(got - want);
                }
        err /= 3.0 * hs[i] * ws[i];
        ck_assert_msg(err < 0.03, "image %d: mean error %g after JPEG", i, err);
    }
    nat_dataset_free(ds);
    /* grayscale conversion, and the train/val layout of nat_dataset_open */
    TH_OK(nat_dataset_open_folder(p, 1, &ds));
    int32_t label;
    TH_OK(nat_dataset_get(ds, 0, &im, &label));
    ck_assert_int_eq(im.c, 1);
    nat_dataset_free(ds);
    char q[512];
    ck_assert_int_eq(rename(p, path_in(q, sizeof q, "val")), 0);
    TH_OK(nat_dataset_open("folder", dir, NAT_SPLIT_TEST, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 6);
    nat_dataset_free(ds);
    nat_image_free(&im);
    remove_dir();
}
END_TEST

START_TEST(folder_errors)
{
    make_dir();
    char p[512];
    nat_dataset *ds;
    expect_error(nat_dataset_open_folder(path_in(p, sizeof p, "nothere"), 3, &ds), NAT_ERR_IO, "nothere");
    mkdir_in("empty");
    expect_error(nat_dataset_open_folder(path_in(p, sizeof p, "empty"), 3, &ds), NAT_ERR_FORMAT,
                 "no class sub-folders");
    mkdir_in("empty/dog");
    write_bytes("empty/dog/readme.txt", "x", 1, 0);
    expect_error(nat_dataset_open_folder(p, 3, &ds), NAT_ERR_FORMAT, "empty/dog holds no");
    expect_error(nat_dataset_open_folder(p, 2, &ds), NAT_ERR_INVALID_ARG, "channels");
    remove_dir();
}
END_TEST

typedef struct warn_log {
    int calls;
    char last[1024];
} warn_log;

static void on_warn(void *user, const char *msg)
{
    warn_log *l = user; /* one loader's workers may call this concurrently; tests use one worker here */
    l->calls++;
    snprintf(l->last, sizeof l->last, "%s", msg);
}

START_TEST(folder_corrupt_skipped_or_strict)
{
    make_dir();
    write_folder(true);
    char p[512];
    nat_dataset *ds;
    TH_OK(nat_dataset_open_folder(path_in(p, sizeof p, "img"), 3, &ds));
    ck_assert_int_eq(nat_dataset_count(ds), 8);
    /* order: ant/a, ant/b, bee/x, bee/y (corrupt), cat/1, cat/2, cat/5_truncated, cat/more/3 */
    nat_image im = {0};
    int32_t label;
    expect_error(nat_dataset_get(ds, 3, &im, &label), NAT_ERR_FORMAT, "bee/y.jpg");
    expect_error(nat_dataset_get(ds, 6, &im, &label), NAT_ERR_FORMAT, "cat/5_truncated.png");
    nat_image_free(&im);

    nat_transform tf[2] = {nat_tf_center_crop(6, 6), nat_tf_hflip(0.5f)};
    warn_log log = {0};
    nat_loader_opts o = nat_loader_defaults();
    o.batch_size = 4;
    o.workers = 1;
    o.transforms = tf;
    o.n_transforms = 2;
    o.epochs = 2;
    o.warn = on_warn;
    o.warn_user = &log;
    nat_loader *L;
    TH_OK(nat_loader_new(ds, &o, &L));
    int batches = 0;
    for (;;) {
        nat_batch b;
        TH_OK(nat_loader_next(L, &b));
        if (b.n == 0)
            break;
        ck_assert_int_eq(b.n, 4);
        batches++;
    }
    ck_assert_int_eq(batches, 4);
    ck_assert_int_eq(nat_loader_skipped(L), 4); /* 2 bad files x 2 epochs */
    ck_assert_int_eq(log.calls, 2);            /* reported once per file */
    ck_assert_msg(strstr(log.last, ".jpg") || strstr(log.last, ".png"), "warning '%s' names no file", log.last);
    nat_loader_free(L);

    /* strict: the batch holding a bad file fails with its name */
    o.strict = true;
    o.shuffle = false;
    o.epochs = 1;
    TH_OK(nat_loader_new(ds, &o, &L));
    nat_batch b;
    expect_error(nat_loader_next(L, &b), NAT_ERR_FORMAT, "bee/y.jpg");
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "epoch 0 batch 0 sample 3"));
    expect_error(nat_loader_next(L, &b), NAT_ERR_FORMAT, "cat/5_truncated.png");
    TH_OK(nat_loader_next(L, &b));
    ck_assert_int_eq(b.n, 0);
    ck_assert_int_eq(nat_loader_skipped(L), 0);
    nat_loader_free(L);
    nat_dataset_free(ds);
    remove_dir();
}
END_TEST

/* ---- transforms ---- */

static nat_image tiny(int c, int h, int w)
{
    nat_image im = {0};
    TH_OK(nat_image_reserve(&im, c, h, w));
    for (int i = 0; i < c * h * w; i++)
        im.data[i] = (float)(i + 1);
    return im;
}

static void apply1(nat_transform t, nat_image *im, uint64_t seed)
{
    nat_image tmp = {0};
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    TH_OK(nat_transforms_apply(&t, 1, im, &tmp, &rng));
    nat_image_free(&tmp);
}

START_TEST(transform_flip_crop_normalize_exact)
{
    /* flip: p = 1 mirrors every row, p = 0 leaves the image alone */
    nat_image im = tiny(2, 2, 3);
    apply1(nat_tf_hflip(1.0f), &im, 1);
    const float flipped[12] = {3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10};
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(im.data[i], flipped[i]);
    apply1(nat_tf_hflip(0.0f), &im, 1);
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(im.data[i], flipped[i]);
    nat_image_free(&im);

    /* center crop 2x2 of 4x5: top = round(1.0) = 1, left = round(1.5) = 2 (halves to even, as Python) */
    im = tiny(1, 4, 5);
    apply1(nat_tf_center_crop(2, 2), &im, 1);
    ck_assert_int_eq(im.h, 2); ck_assert_int_eq(im.w, 2);
    const float cc[4] = {8, 9, 13, 14};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(im.data[i], cc[i]);
    /* larger than the image: zero padding, left (4-2)//2 = 1, top (3-2)//2 = 0 */
    apply1(nat_tf_center_crop(3, 4), &im, 1);
    const float pad[12] = {0, 8, 9, 0, 0, 13, 14, 0, 0, 0, 0, 0};
    ck_assert_int_eq(im.h, 3); ck_assert_int_eq(im.w, 4);
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(im.data[i], pad[i]);
    nat_image_free(&im);

    /* normalize: (x - mean) / std per channel */
    im = tiny(2, 1, 2);
    const float mean[2] = {1.0f, 2.0f}, std[2] = {2.0f, 0.5f};
    apply1(nat_tf_normalize(2, mean, std), &im, 1);
    const float norm[4] = {0.0f, 0.5f, 2.0f, 4.0f};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(im.data[i], norm[i]);
    nat_image tmp = {0};
    nat_rng rng;
    nat_rng_seed(&rng, 0);
    nat_transform n3 = nat_tf_normalize(3, (const float[])NAT_IMAGENET_MEAN, (const float[])NAT_IMAGENET_STD);
    expect_error(nat_transforms_apply(&n3, 1, &im, &tmp, &rng), NAT_ERR_SHAPE, "normalize");
    nat_image_free(&im);
    nat_image_free(&tmp);
}
END_TEST

START_TEST(transform_resize_bilinear)
{
    /* a constant image stays constant, enlarged or shrunk; shorter side to `size` */
    nat_image im = {0};
    TH_OK(nat_image_reserve(&im, 3, 13, 29));
    for (int i = 0; i < 3 * 13 * 29; i++)
        im.data[i] = 0.375f;
    apply1(nat_tf_resize(6), &im, 1);
    ck_assert_int_eq(im.h, 6); ck_assert_int_eq(im.w, 13); /* int(6 * 29 / 13) = 13 */
    for (int i = 0; i < 3 * 6 * 13; i++)
        ck_assert_float_eq_tol(im.data[i], 0.375f, 1e-6f);
    apply1(nat_tf_resize(40), &im, 1);
    ck_assert_int_eq(im.h, 40); ck_assert_int_eq(im.w, 86);
    for (int i = 0; i < 3 * 40 * 86; i++)
        ck_assert_float_eq_tol(im.data[i], 0.375f, 1e-6f);
    nat_image_free(&im);

    /* by hand: [0, 1] -> 4 wide is [0, .25, .75, 1] (half-pixel centres, edges clamped); [0, 1, 2, 3] ->
     * 2 wide takes the triangle of width 2 (PIL's antialias): (0·.75 + 1·.75 + 2·.25)/1.75 and
     * (1·.25 + 2·.75 + 3·.75)/1.75. A 1-pixel-high image keeps its height: resize(h) is the shorter side. */
    TH_OK(nat_image_reserve(&im, 1, 1, 2));
    im.data[0] = 0.0f, im.data[1] = 1.0f;
    nat_image tmp = {0};
    nat_rng rng;
    nat_rng_seed(&rng, 0);
    nat_transform r = nat_tf_resize(2); /* 1x2 -> 2x4 */
    TH_OK(nat_transforms_apply(&r, 1, &im, &tmp, &rng));
    ck_assert_int_eq(im.h, 2); ck_assert_int_eq(im.w, 4);
    const float up[4] = {0.0f, 0.25f, 0.75f, 1.0f};
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++)
            ck_assert_float_eq_tol(im.data[y * 4 + x], up[x], 1e-6f);
    TH_OK(nat_image_reserve(&im, 1, 2, 4));
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++)
            im.data[y * 4 + x] = (float)x;
    r = nat_tf_resize(1); /* 2x4 -> 1x2 */
    TH_OK(nat_transforms_apply(&r, 1, &im, &tmp, &rng));
    ck_assert_int_eq(im.h, 1); ck_assert_int_eq(im.w, 2);
    ck_assert_float_eq_tol(im.data[0], 1.25f / 1.75f, 1e-6f);
    ck_assert_float_eq_tol(im.data[1], 4.0f / 1.75f, 1e-6f);
    nat_image_free(&im);
    nat_image_free(&tmp);
}
END_TEST

START_TEST(transform_random_crop_within_bounds)
{
    /* 4x4 image of 1..16, padded by 2, cropped to 4x4: the result is the padded image's window at some
     * (i, j) in [0, 4]^2; over many seeds several windows appear. */
    bool seen[5][5] = {{false}};
    int distinct = 0;
    for (uint64_t seed = 0; seed < 100; seed++) {
        nat_image im = tiny(1, 4, 4);
        apply1(nat_tf_random_crop(4, 4, 2), &im, seed);
        ck_assert_int_eq(im.h, 4); ck_assert_int_eq(im.w, 4);
        int found = 0;
        for (int i = 0; i <= 4 && !found; i++)
            for (int j = 0; j <= 4 && !found; j++) {
                bool same = true;
                for (int y = 0; y < 4 && same; y++)
                    for (int x = 0; x < 4 && same; x++) {
                        int sy = i + y - 2, sx = j + x - 2;
                        float want = sy >= 0 && sy < 4 && sx >= 0 && sx < 4 ? (float)(sy * 4 + sx + 1) : 0.0f;
                        same = im.data[y * 4 + x] == want;
                    }
                if (same) {
                    found = 1;
                    distinct += !seen[i][j];
                    seen[i][j] = true;
                }
            }
        ck_assert_msg(found, "seed %llu: the crop is no window of the padded image", (unsigned long long)seed);
        nat_image_free(&im);
    }
    ck_assert_int_ge(distinct, 15);
}
END_TEST

START_TEST(transform_random_resized_crop_box)
{
    const float scale[2] = {0.08f, 1.0f}, ratio[2] = {0.75f, 4.0f / 3.0f};
    nat_rng rng;
    nat_rng_seed(&rng, 7);
    double area_sum = 0.0;
    for (int t = 0; t < 500; t++) {
        int b[4];
        nat_tf_rrc_box(&rng, 60, 80, scale, ratio, b);
        ck_assert(b[0] >= 0 && b[1] >= 0 && b[2] >= 1 && b[3] >= 1 && b[0] + b[2] <= 60 && b[1] + b[3] <= 80);
        double frac = (double)b[2] * b[3] / (60.0 * 80.0), ar = (double)b[3] / b[2];
        ck_assert_msg(frac > 0.06 && frac <= 1.0, "area fraction %g", frac);
        ck_assert_msg(ar > 0.6 && ar < 1.6, "aspect %g", ar);
        area_sum += frac;
    }
    ck_assert_msg(area_sum / 500 > 0.35 && area_sum / 500 < 0.65, "mean area fraction %g", area_sum / 500);
    /* fallback: a 10x100 strip admits no box with aspect <= 4/3 and area >= 0.99: the central crop with the
     * ratio clamped, h = 10, w = round(10 * 4/3) = 13, left = (100 - 13) / 2 = 43 */
    const float big[2] = {0.99f, 1.0f};
    int b[4];
    nat_tf_rrc_box(&rng, 10, 100, big, ratio, b);
    ck_assert_int_eq(b[0], 0); ck_assert_int_eq(b[1], 43); ck_assert_int_eq(b[2], 10); ck_assert_int_eq(b[3], 13);
    /* the transform: a constant image gives a constant crop of the requested size */
    nat_image im = {0};
    TH_OK(nat_image_reserve(&im, 3, 30, 50));
    for (int i = 0; i < 3 * 30 * 50; i++)
        im.data[i] = 0.5f;
    apply1(nat_tf_random_resized_crop(16, 24), &im, 3);
    ck_assert_int_eq(im.c, 3); ck_assert_int_eq(im.h, 16); ck_assert_int_eq(im.w, 24);
    for (int i = 0; i < 3 * 16 * 24; i++)
        ck_assert_float_eq_tol(im.data[i], 0.5f, 1e-6f);
    nat_image_free(&im);
}
END_TEST

START_TEST(transform_random_erasing_region)
{
    /* a constant image of ones, p = 1: the zeros form one rectangle, the same in every channel, with an area
     * fraction in [0.02, 1/3] and aspect h/w in [0.3, 1/0.3] up to the rounding of its sides */
    const int H = 40, W = 50;
    double frac_sum = 0.0;
    int erased = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        nat_image im = {0};
        TH_OK(nat_image_reserve(&im, 3, H, W));
        for (int i = 0; i < 3 * H * W; i++)
            im.data[i] = 1.0f;
        apply1(nat_tf_random_erasing(1.0f), &im, seed);
        int y0 = H, y1 = -1, x0 = W, x1 = -1, zeros = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if (im.data[y * W + x] == 0.0f) {
                    zeros++;
                    y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1, x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                }
        for (int c = 1; c < 3; c++)
            ck_assert_int_eq(memcmp(im.data, im.data + c * H * W, (size_t)H * W * sizeof(float)), 0);
        nat_image_free(&im);
        if (!zeros)
            continue;
        erased++;
        int eh = y1 - y0 + 1, ew = x1 - x0 + 1;
        ck_assert_int_eq(zeros, eh * ew);
        double frac = (double)zeros / (H * W), asp = (double)eh / ew;
        ck_assert_msg(frac >= 0.015 && frac <= 0.36, "seed %llu: erased fraction %g", (unsigned long long)seed, frac);
        ck_assert_msg(asp >= 0.25 && asp <= 4.0, "seed %llu: aspect %g", (unsigned long long)seed, asp);
        frac_sum += frac;
    }
    ck_assert_int_ge(erased, 190); /* rare failures: all 10 tries too tall or wide */
    ck_assert_msg(frac_sum / erased > 0.14 && frac_sum / erased < 0.21, "mean erased fraction %g", frac_sum / erased);
    /* p = 0.5 erases about half the images; p = 0 none */
    int hits = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        nat_image im = {0};
        TH_OK(nat_image_reserve(&im, 1, 10, 10));
        for (int i = 0; i < 100; i++)
            im.data[i] = 1.0f;
        apply1(nat_tf_random_erasing(0.5f), &im, seed);
        float mn = 1.0f;
        for (int i = 0; i < 100; i++)
            mn = im.data[i] < mn ? im.data[i] : mn;
        hits += mn == 0.0f;
        nat_image_free(&im);
    }
    ck_assert_msg(hits > 70 && hits < 130, "p = 0.5 erased %d of 200", hits);
}
END_TEST

/* ---- mixup / cutmix ---- */

static void check_targets(const float *t, const nat_mixup_result *r, const int32_t *labels, int n, int K, float eps)
{
    const float off = eps / K, on = 1.0f - eps + off;
    for (int i = 0; i < n; i++) {
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            float want = off + (labels[i] == k ? r->lam * (on - off) : 0.0f) +
                         (labels[n - 1 - i] == k ? (1.0f - r->lam) * (on - off) : 0.0f);
            ck_assert_float_eq_tol(t[i * K + k], want, 1e-6f);
            sum += t[i * K + k];
        }
        ck_assert_msg(fabs(sum - 1.0) < 1e-5, "row %d sums to %g", i, sum);
    }
}

START_TEST(mixup_blend_and_targets)
{
    enum { N = 5, C = 2, H = 3, W = 4, K = 6 };
    const int32_t labels[N] = {0, 3, 5, 1, 2};
    nat_mixup m = nat_mixup_defaults();
    m.mixup_alpha = 1.0f;
    int mixed = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        float x[N * C * H * W], t[N * K];
        for (int i = 0; i < N; i++)
            for (int p = 0; p < C * H * W; p++)
                x[i * C * H * W + p] = (float)(i + 1);
        nat_rng rng;
        nat_rng_seed(&rng, seed);
        nat_mixup_result r;
        TH_OK(nat_mixup_apply(&m, &rng, x, N, C, H, W, labels, K, t, &r));
        ck_assert(!r.cutmix);
        ck_assert(r.lam >= 0.0f && r.lam <= 1.0f);
        mixed += r.lam > 0.0f && r.lam < 1.0f;
        for (int i = 0; i < N; i++)
            for (int p = 0; p < C * H * W; p++)
                ck_assert_float_eq_tol(x[i * C * H * W + p], r.lam * (i + 1) + (1.0f - r.lam) * (N - i), 1e-5f);
        check_targets(t, &r, labels, N, K, 0.1f);
    }
    ck_assert_int_eq(mixed, 20);
    /* prob 0: nothing mixed, smoothed one-hot targets */
    m.prob = 0.0f;
    float x[N * C * H * W] = {0}, t[N * K];
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_mixup_result r;
    TH_OK(nat_mixup_apply(&m, &rng, x, N, C, H, W, labels, K, t, &r));
    ck_assert_float_eq(r.lam, 1.0f);
    check_targets(t, &r, labels, N, K, 0.1f);
    ck_assert_float_eq_tol(t[0], 1.0f - 0.1f + 0.1f / K, 1e-6f);
    /* both on: about half the batches use cutmix */
    m = nat_mixup_defaults();
    m.mixup_alpha = 0.8f;
    m.cutmix_alpha = 1.0f;
    int cut = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        nat_rng_seed(&rng, seed);
        TH_OK(nat_mixup_apply(&m, &rng, x, N, C, H, W, labels, K, t, &r));
        cut += r.cutmix;
    }
    ck_assert_msg(cut > 70 && cut < 130, "%d of 200 batches used cutmix", cut);
    int32_t bad[N] = {0, 1, 2, 3, 6};
    expect_error(nat_mixup_apply(&m, &rng, x, N, C, H, W, bad, K, t, &r), NAT_ERR_INVALID_ARG, "label 6");
}
END_TEST

START_TEST(cutmix_box_and_lambda)
{
    enum { N = 4, C = 3, H = 8, W = 10, K = 4 };
    const int32_t labels[N] = {0, 1, 2, 3};
    nat_mixup m = nat_mixup_defaults();
    m.cutmix_alpha = 1.0f;
    m.label_smoothing = 0.0f;
    int boxes = 0;
    for (uint64_t seed = 0; seed < 40; seed++) {
        float x[N * C * H * W], t[N * K];
        for (int i = 0; i < N; i++)
            for (int p = 0; p < C * H * W; p++)
                x[i * C * H * W + p] = (float)i;
        nat_rng rng;
        nat_rng_seed(&rng, seed);
        nat_mixup_result r;
        TH_OK(nat_mixup_apply(&m, &rng, x, N, C, H, W, labels, K, t, &r));
        ck_assert(r.cutmix);
        int area = (r.box[1] - r.box[0]) * (r.box[3] - r.box[2]);
        boxes += area > 0;
        /* lambda is the share of each image left unpasted */
        ck_assert_float_eq_tol(r.lam, 1.0f - (float)area / (H * W), 1e-6f);
        for (int i = 0; i < N; i++) {
            int pasted = 0;
            for (int c = 0; c < C; c++)
                for (int y = 0; y < H; y++)
                    for (int xx = 0; xx < W; xx++) {
                        float v = x[((i * C + c) * H + y) * W + xx];
                        bool in = y >= r.box[0] && y < r.box[1] && xx >= r.box[2] && xx < r.box[3];
                        ck_assert_float_eq(v, in ? (float)(N - 1 - i) : (float)i);
                        pasted += v != (float)i;
                    }
            ck_assert_int_eq(pasted, C * area);
        }
        check_targets(t, &r, labels, N, K, 0.0f);
    }
    ck_assert_int_ge(boxes, 30);
}
END_TEST

/* ---- the loader on a synthetic dataset: sample i is 2x5x7 with pixel (c, y, x) = i + (c*35 + y*7 + x)/1000 ---- */

enum { SYN_C = 2, SYN_H = 5, SYN_W = 7, SYN_CLASSES = 3 };

static nat_status syn_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    (void)user;
    NAT_TRY(nat_image_reserve(img, SYN_C, SYN_H, SYN_W));
    for (int p = 0; p < SYN_C * SYN_H * SYN_W; p++)
        img->data[p] = (float)i + (float)p / 1000.0f;
    *label = (int32_t)(i % SYN_CLASSES);
    return NAT_OK;
}

static nat_status bad_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    (void)user, (void)img, (void)label;
    return nat_error(NAT_ERR_FORMAT, "sample %lld is broken", (long long)i);
}

static nat_dataset *syn_dataset(int64_t count)
{
    nat_dataset_desc d = {.count = count, .classes = SYN_CLASSES, .c = SYN_C, .h = SYN_H, .w = SYN_W,
                          .get = syn_get, .name = "synthetic"};
    nat_dataset *ds;
    TH_OK(nat_dataset_new(&d, &ds));
    return ds;
}

/* Everything a run delivers, concatenated: x, labels, targets per batch. */
typedef struct run_log {
    float *x, *t;
    int32_t *labels;
    int64_t n, batches;
    int64_t sizes[64];
} run_log;

static void run_collect(nat_loader *L, int max_batches, run_log *log)
{
    memset(log, 0, sizeof *log);
    int c, h, w;
    nat_loader_sample_shape(L, &c, &h, &w);
    for (int b = 0; b < max_batches; b++) {
        nat_batch bt;
        TH_OK(nat_loader_next(L, &bt));
        if (bt.n == 0)
            break;
        size_t per = (size_t)c * h * w;
        log->x = realloc(log->x, (size_t)(log->n + bt.n) * per * sizeof(float));
        log->labels = realloc(log->labels, (size_t)(log->n + bt.n) * sizeof(int32_t));
        memcpy(log->x + (size_t)log->n * per, bt.x, (size_t)bt.n * per * sizeof(float));
        memcpy(log->labels + log->n, bt.labels, (size_t)bt.n * sizeof(int32_t));
        if (bt.targets) {
            log->t = realloc(log->t, (size_t)(log->n + bt.n) * bt.classes * sizeof(float));
            memcpy(log->t + (size_t)log->n * bt.classes, bt.targets, (size_t)bt.n * bt.classes * sizeof(float));
        }
        log->sizes[log->batches++] = bt.n;
        log->n += bt.n;
    }
}

static void log_free(run_log *l)
{
    free(l->x);
    free(l->t);
    free(l->labels);
}

static void assert_same(const run_log *a, const run_log *b, const char *what)
{
    ck_assert_msg(a->n == b->n && a->batches == b->batches, "%s: %lld vs %lld samples", what, (long long)a->n,
                  (long long)b->n);
    ck_assert_msg(!memcmp(a->x, b->x, (size_t)a->n * SYN_C * SYN_H * SYN_W * sizeof(float)), "%s: images differ", what);
    ck_assert_msg(!memcmp(a->labels, b->labels, (size_t)a->n * sizeof(int32_t)), "%s: labels differ", what);
    ck_assert_msg((a->t == NULL) == (b->t == NULL), "%s: targets", what);
    if (a->t)
        ck_assert_msg(!memcmp(a->t, b->t, (size_t)a->n * SYN_CLASSES * sizeof(float)), "%s: targets differ", what);
}

static nat_transform aug[3];

static nat_loader_opts aug_opts(int workers, uint64_t seed)
{
    aug[0] = nat_tf_random_crop(SYN_H, SYN_W, 1);
    aug[1] = nat_tf_hflip(0.5f);
    aug[2] = nat_tf_random_erasing(0.5f);
    nat_loader_opts o = nat_loader_defaults();
    o.batch_size = 6;
    o.workers = workers;
    o.seed = seed;
    o.transforms = aug;
    o.n_transforms = 3;
    o.mixup.mixup_alpha = 0.8f;
    o.mixup.cutmix_alpha = 1.0f;
    return o;
}

START_TEST(loader_deterministic_across_workers_and_runs)
{
    nat_dataset *ds = syn_dataset(37);
    run_log ref, other;
    const int workers[4] = {1, 0, 4, 2}, prefetch[4] = {0, 0, 1, 7};
    for (int k = 0; k < 4; k++) {
        nat_loader_opts o = aug_opts(workers[k], 42);
        o.prefetch = prefetch[k];
        nat_loader *L;
        TH_OK(nat_loader_new(ds, &o, &L));
        ck_assert_int_eq(nat_loader_batches_per_epoch(L), 7);
        run_collect(L, 14, k == 0 ? &ref : &other); /* two epochs */
        nat_loader_free(L);
        if (k > 0) {
            char what[64];
            snprintf(what, sizeof what, "%d workers, prefetch %d vs 1 worker", workers[k], prefetch[k]);
            assert_same(&ref, &other, what);
            log_free(&other);
        }
    }
    ck_assert_int_eq(ref.n, 74);
    ck_assert_ptr_nonnull(ref.t);
    for (int64_t i = 0; i < ref.n; i++) {
        double sum = 0.0;
        for (int k = 0; k < SYN_CLASSES; k++)
            sum += ref.t[i * SYN_CLASSES + k];
        ck_assert_msg(fabs(sum - 1.0) < 1e-5, "target row %lld sums to %g", (long long)i, sum);
    }
    /* another seed gives other batches */
    nat_loader_opts o = aug_opts(2, 43);
    nat_loader *L;
    TH_OK(nat_loader_new(ds, &o, &L));
    run_collect(L, 14, &other);
    nat_loader_free(L);
    ck_assert(memcmp(ref.x, other.x, (size_t)ref.n * SYN_C * SYN_H * SYN_W * sizeof(float)) != 0);
    log_free(&other);
    log_free(&ref);
    nat_dataset_free(ds);
}
END_TEST

/* With no transforms, pixel 0 of each sample is its dataset index. */
static void epoch_orders(nat_dataset *ds, bool shuffle, int workers, int epochs, int32_t *order)
{
    nat_loader_opts o = nat_loader_defaults();
    o.batch_size = 8;
    o.workers = workers;
    o.shuffle = shuffle;
    o.seed = 5;
    o.epochs = epochs;
    nat_loader *L;
    TH_OK(nat_loader_new(ds, &o, &L));
    run_log log;
    run_collect(L, 64, &log);
    ck_assert_int_eq(log.n, (int64_t)epochs * nat_dataset_count(ds));
    for (int64_t i = 0; i < log.n; i++) {
        order[i] = (int32_t)log.x[i * SYN_C * SYN_H * SYN_W];
        ck_assert_int_eq(log.labels[i], order[i] % SYN_CLASSES);
    }
    log_free(&log);
    nat_loader_free(L);
}

START_TEST(loader_shuffles_each_epoch)
{
    enum { N = 29 };
    nat_dataset *ds = syn_dataset(N);
    int32_t a[3 * N], b[3 * N];
    epoch_orders(ds, true, 2, 3, a);
    epoch_orders(ds, true, 3, 3, b);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0); /* same seed, same orders, whatever the workers */
    for (int e = 0; e < 3; e++) {
        bool seen[N] = {false};
        for (int i = 0; i < N; i++) {
            ck_assert(!seen[a[e * N + i]]);
            seen[a[e * N + i]] = true;
        }
    }
    ck_assert(memcmp(a, a + N, N * sizeof *a) != 0);
    ck_assert(memcmp(a + N, a + 2 * N, N * sizeof *a) != 0);
    epoch_orders(ds, false, 1, 2, a);
    for (int i = 0; i < 2 * N; i++)
        ck_assert_int_eq(a[i], i % N);
    nat_dataset_free(ds);
}
END_TEST

START_TEST(loader_drop_last_and_end)
{
    nat_dataset *ds = syn_dataset(37);
    nat_loader_opts o = nat_loader_defaults();
    o.batch_size = 8;
    o.epochs = 2;
    for (int drop = 0; drop <= 1; drop++) {
        o.drop_last = drop;
        nat_loader *L;
        TH_OK(nat_loader_new(ds, &o, &L));
        ck_assert_int_eq(nat_loader_batches_per_epoch(L), drop ? 4 : 5);
        run_log log;
        run_collect(L, 64, &log);
        ck_assert_int_eq(log.batches, drop ? 8 : 10);
        for (int b = 0; b < log.batches; b++)
            ck_assert_int_eq(log.sizes[b], (!drop && b % 5 == 4) ? 5 : 8);
        nat_batch bt;
        TH_OK(nat_loader_next(L, &bt)); /* still at the end */
        ck_assert_int_eq(bt.n, 0);
        log_free(&log);
        nat_loader_free(L);
    }
    o.batch_size = 40;
    o.drop_last = true;
    nat_loader *L;
    expect_error(nat_loader_new(ds, &o, &L), NAT_ERR_INVALID_ARG, "no full batch");
    nat_dataset_free(ds);
}
END_TEST

START_TEST(loader_resume_from_state)
{
    nat_dataset *ds = syn_dataset(37);
    nat_loader_opts o = aug_opts(2, 9);
    nat_loader *L;
    run_log full, head, tail;
    TH_OK(nat_loader_new(ds, &o, &L));
    run_collect(L, 17, &full); /* 2 epochs and 3 batches */
    nat_loader_free(L);

    /* stop after 10 batches (mid-epoch 1), save the state, resume in a new loader with other workers */
    TH_OK(nat_loader_new(ds, &o, &L));
    run_collect(L, 10, &head);
    nat_loader_state st = nat_loader_get_state(L);
    ck_assert_int_eq(st.epoch, 1); ck_assert_int_eq(st.batch, 3); ck_assert_uint_eq(st.seed, 9);
    nat_loader_free(L);
    o.workers = 3;
    o.seed = 12345; /* the state's seed wins */
    TH_OK(nat_loader_new(ds, &o, &L));
    TH_OK(nat_loader_set_state(L, &st));
    run_collect(L, 7, &tail);
    ck_assert_int_eq(head.n + tail.n, full.n);
    size_t per = SYN_C * SYN_H * SYN_W;
    ck_assert_int_eq(memcmp(full.x + head.n * per, tail.x, (size_t)tail.n * per * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(full.labels + head.n, tail.labels, (size_t)tail.n * sizeof(int32_t)), 0);
    ck_assert_int_eq(memcmp(full.t + head.n * SYN_CLASSES, tail.t, (size_t)tail.n * SYN_CLASSES * sizeof(float)), 0);
    log_free(&tail);

    /* rewinding a running loader to the start replays the run */
    st = (nat_loader_state){.seed = 9, .epoch = 0, .batch = 0};
    TH_OK(nat_loader_set_state(L, &st));
    run_collect(L, 17, &tail);
    assert_same(&full, &tail, "rewound");
    st.batch = 7;
    expect_error(nat_loader_set_state(L, &st), NAT_ERR_INVALID_ARG, "out of range");
    nat_loader_free(L);
    log_free(&full);
    log_free(&head);
    log_free(&tail);
    nat_dataset_free(ds);
}
END_TEST

START_TEST(loader_shutdown_and_errors)
{
    nat_dataset *ds = syn_dataset(500);
    nat_loader_opts o = aug_opts(4, 1);
    o.prefetch = 8;
    nat_loader *L;
    /* free right away, and after one batch with the workers still busy */
    TH_OK(nat_loader_new(ds, &o, &L));
    nat_loader_free(L);
    TH_OK(nat_loader_new(ds, &o, &L));
    nat_batch b;
    TH_OK(nat_loader_next(L, &b));
    ck_assert_int_eq(b.n, 6);
    ck_assert_int_eq(b.c, SYN_C); ck_assert_int_eq(b.h, SYN_H); ck_assert_int_eq(b.w, SYN_W);
    ck_assert_int_eq(b.epoch, 0); ck_assert_int_eq(b.index, 0);
    nat_loader_free(L);

    /* transforms that do not fit the data */
    nat_transform n3 = nat_tf_normalize(3, (const float[])NAT_IMAGENET_MEAN, (const float[])NAT_IMAGENET_STD);
    o = nat_loader_defaults();
    o.transforms = &n3;
    o.n_transforms = 1;
    expect_error(nat_loader_new(ds, &o, &L), NAT_ERR_SHAPE, "3 mean/std values for 2-channel");
    nat_transform big = nat_tf_random_crop(9, 9, 1);
    o.transforms = &big;
    expect_error(nat_loader_new(ds, &o, &L), NAT_ERR_SHAPE, "too small");
    o.n_transforms = 0;
    o.batch_size = 0;
    expect_error(nat_loader_new(ds, &o, &L), NAT_ERR_INVALID_ARG, "batch size");
    nat_dataset_free(ds);

    /* a dataset where nothing reads: skipping gives up with the last sample's message */
    nat_dataset_desc bad = {.count = 3, .classes = 2, .c = 1, .h = 2, .w = 2, .get = bad_get, .name = "broken"};
    TH_OK(nat_dataset_new(&bad, &ds));
    warn_log log = {0};
    o = nat_loader_defaults();
    o.workers = 1;
    o.shuffle = false;
    o.epochs = 1; /* one batch: nothing prefetched beyond it adds to the count */
    o.warn = on_warn;
    o.warn_user = &log;
    TH_OK(nat_loader_new(ds, &o, &L));
    expect_error(nat_loader_next(L, &b), NAT_ERR_FORMAT,
                 "3 samples in a row from sample 0 are all unreadable (last: sample 2 is broken)");
    ck_assert_int_eq(nat_loader_skipped(L), 3);
    ck_assert_int_eq(log.calls, 3);
    nat_loader_free(L);
    nat_dataset_free(ds);

    /* varying sizes need a fixed-size transform at the end */
    nat_dataset_desc d = {.count = 3, .classes = 2, .c = 3, .h = 0, .w = 0, .get = syn_get, .name = "varying"};
    TH_OK(nat_dataset_new(&d, &ds));
    o = nat_loader_defaults();
    nat_transform rs = nat_tf_resize(32);
    o.transforms = &rs;
    o.n_transforms = 1;
    expect_error(nat_loader_new(ds, &o, &L), NAT_ERR_SHAPE, "must end in a fixed size");
    nat_dataset_free(ds);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"idx_pair_values_and_labels", idx_pair_values_and_labels},
        {"fashion_mnist_when_installed", fashion_mnist_when_installed},
        {"cifar10_values_and_labels", cifar10_values_and_labels},
        {"cifar100_values_and_labels", cifar100_values_and_labels},
        {"folder_values_and_labels", folder_values_and_labels},
        {"folder_errors", folder_errors},
        {"folder_corrupt_skipped_or_strict", folder_corrupt_skipped_or_strict},
        {"transform_flip_crop_normalize_exact", transform_flip_crop_normalize_exact},
        {"transform_resize_bilinear", transform_resize_bilinear},
        {"transform_random_crop_within_bounds", transform_random_crop_within_bounds},
        {"transform_random_resized_crop_box", transform_random_resized_crop_box},
        {"transform_random_erasing_region", transform_random_erasing_region},
        {"mixup_blend_and_targets", mixup_blend_and_targets},
        {"cutmix_box_and_lambda", cutmix_box_and_lambda},
        {"loader_deterministic_across_workers_and_runs", loader_deterministic_across_workers_and_runs},
        {"loader_shuffles_each_epoch", loader_shuffles_each_epoch},
        {"loader_drop_last_and_end", loader_drop_last_and_end},
        {"loader_resume_from_state", loader_resume_from_state},
        {"loader_shutdown_and_errors", loader_shutdown_and_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].test == fashion_mnist_when_installed && !th_need_fashion_mnist(cases[i].name, NAT_FASHION_MNIST_DIR))
            continue;
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
