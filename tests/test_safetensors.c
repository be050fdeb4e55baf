/* tests/test_safetensors.c — safetensors checkpoints on files the test writes itself: bit-exact round
 * trips (0-d, empty, 4-d, i32, strided and broadcast views), metadata, hand-assembled BF16/F16/F64
 * files, every malformed header and data layout with its status and message, strict model loading
 * (missing, unexpected, mis-shaped, non-finite, tensors untouched on error), and crash-safe saving
 * (a failed save leaves the old file as it was and no temporary file behind). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nat/half.h"
#include "nat/safetensors.h"
#include "support/harness.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/nat_test_st_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Removes dir and what is in it (one level of sub-directories). */
static void remove_dir(const char *d)
{
    DIR *dp = opendir(d);
    if (!dp)
        return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        if (unlink(p) != 0)
            remove_dir(p);
    }
    closedir(dp);
    rmdir(d);
}

/* Entries of d whose name holds ".tmp." (left-over temporary files). */
static int count_tmp(const char *d)
{
    DIR *dp = opendir(d);
    ck_assert_ptr_nonnull(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(dp);
    return n;
}

static char *in_dir(const char *name)
{
    static char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Reads a whole file; *n gets its size. The caller frees. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* A file of: 8-byte little-endian hlen, the JSON text, then dlen data bytes. */
static void write_st(const char *path, uint64_t hlen, const char *json, const void *data, size_t dlen)
{
    size_t jl = strlen(json);
    unsigned char *b = malloc(8 + jl + dlen + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, json, jl);
    if (dlen)
        memcpy(b + 8 + jl, data, dlen);
    write_bytes(path, b, 8 + jl + dlen);
    free(b);
}

static void assert_msg_has(const char *needle)
{
    ck_assert_msg(strstr(nat_error_message(), needle), "message '%s' should contain '%s'", nat_error_message(), needle);
}

/* Opening a file with this header and dlen zero bytes of data must fail with `want`; the message must
 * name the file and contain both needles (n2 may be NULL). */
static void expect_bad(const char *json, size_t dlen, nat_status want, const char *n1, const char *n2)
{
    static const unsigned char zeros[256];
    ck_assert_uint_le(dlen, sizeof zeros);
    const char *path = in_dir("bad.safetensors");
    write_st(path, strlen(json), json, zeros, dlen);
    nat_st_file *f = (nat_st_file *)1;
    nat_status st = nat_st_open(&f, path);
    ck_assert_msg(st == want, "header %s: got %s (%s), want %s", json, nat_status_name(st), nat_error_message(),
                  nat_status_name(want));
    ck_assert_ptr_null(f);
    assert_msg_has(path);
    assert_msg_has(n1);
    if (n2)
        assert_msg_has(n2);
    unlink(path);
}

static nat_tensor *new_f32(int ndim, const int64_t *shape, float start)
{
    nat_tensor *t;
    TH_OK(nat_tensor_new(&t, NAT_F32, NAT_CPU, ndim, shape));
    float *v = nat_tensor_f32(t);
    for (int64_t i = 0; i < nat_tensor_numel(t); i++)
        v[i] = start + (float)i * 0.37f - (float)(i % 5) * 1e-7f;
    return t;
}

static nat_st_file *open_ok(const char *path)
{
    nat_st_file *f = NULL;
    TH_OK(nat_st_open(&f, path));
    ck_assert_ptr_nonnull(f);
    return f;
}

/* ---- round trips ---- */

START_TEST(roundtrip_shapes_bit_exact)
{
    make_dir();
    const int64_t s0[1] = {0}, s1[1] = {1}, s2[2] = {3, 4}, s4[4] = {2, 3, 1, 5}, se[3] = {2, 0, 3};
    struct {
        const char *name;
        int ndim;
        const int64_t *shape;
    } cases[] = {
        {"scalar", 0, s0}, {"one", 1, s1}, {"mat", 2, s2}, {"levels.0.blocks.1.attn.rpb", 4, s4}, {"empty", 3, se}};
    enum { N = sizeof cases / sizeof cases[0] };
    nat_tensor *t[N];
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    for (int i = 0; i < N; i++)
        t[i] = new_f32(cases[i].ndim, cases[i].shape, -1.25f + (float)i);
    nat_tensor_f32(t[3])[7] = -0.0f;
    nat_tensor_f32(t[3])[8] = 1e-40f; /* subnormal */
    nat_tensor_f32(t[3])[9] = 3.4028235e38f;
    for (int i = 0; i < N; i++)
        TH_OK(nat_st_writer_add(w, cases[i].name, t[i]));
    /* The writer holds a copy: changing a tensor after adding it changes nothing in the file. */
    float keep = nat_tensor_f32(t[2])[5];
    nat_tensor_f32(t[2])[5] = 99.0f;
    const char *path = in_dir("rt.safetensors");
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    nat_tensor_f32(t[2])[5] = keep;

    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_count(f), N);
    ck_assert_str_eq(nat_st_path(f), path);
    for (int i = 1; i < N; i++)
        ck_assert_int_lt(strcmp(nat_st_name(f, i - 1), nat_st_name(f, i)), 0); /* name order */
    ck_assert_ptr_null(nat_st_name(f, N));
    ck_assert_int_eq(nat_st_find(f, "nope"), -1);
    for (int i = 0; i < N; i++) {
        int k = nat_st_find(f, cases[i].name);
        ck_assert_int_ge(k, 0);
        ck_assert_str_eq(nat_st_name(f, k), cases[i].name);
        ck_assert_str_eq(nat_st_dtype(f, k), "F32");
        nat_dtype dt;
        int ndim;
        int64_t shape[NAT_MAX_DIMS];
        TH_OK(nat_st_info(f, k, &dt, &ndim, shape));
        ck_assert_int_eq(dt, NAT_F32);
        ck_assert_int_eq(ndim, cases[i].ndim);
        for (int d = 0; d < ndim; d++)
            ck_assert_int_eq(shape[d], cases[i].shape[d]);
        int64_t n = nat_tensor_numel(t[i]);
        float *got = malloc((size_t)(n + 1) * sizeof *got);
        TH_OK(nat_st_read_f32(f, cases[i].name, got, n));
        ck_assert_msg(n == 0 || memcmp(got, nat_tensor_f32(t[i]), (size_t)n * 4) == 0, "tensor %s differs",
                      cases[i].name);
        free(got);
        nat_tensor_free(t[i]);
    }
    ck_assert_int_eq(nat_st_info(f, N, NULL, NULL, NULL), NAT_ERR_INVALID_ARG);
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

/* Views made by hand through the public struct are written in logical row-major order. */
START_TEST(roundtrip_strided_views)
{
    make_dir();
    const int64_t bs[2] = {5, 6};
    nat_tensor *base = new_f32(2, bs, 0.0f);
    const float *b = nat_tensor_f32(base);

    nat_tensor tr = *base; /* transpose: [6, 5] */
    tr.shape[0] = 6, tr.shape[1] = 5, tr.stride[0] = 1, tr.stride[1] = 6;
    nat_tensor sl = *base; /* rows 1 and 3, columns 1, 3, 5: [2, 3] */
    sl.offset = 7, sl.shape[0] = 2, sl.shape[1] = 3, sl.stride[0] = 12, sl.stride[1] = 2;
    nat_tensor bc = *base; /* row 2 broadcast to [3, 6] */
    bc.offset = 12, bc.shape[0] = 3, bc.stride[0] = 0;

    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "t", &tr));
    TH_OK(nat_st_writer_add(w, "s", &sl));
    TH_OK(nat_st_writer_add(w, "b", &bc));
    const char *path = in_dir("views.safetensors");
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);

    float want_t[30], want_s[6], want_b[18], got[30];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 5; j++)
            want_t[i * 5 + j] = b[j * 6 + i];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            want_s[i * 3 + j] = b[(1 + 2 * i) * 6 + 1 + 2 * j];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            want_b[i * 6 + j] = b[12 + j];
    nat_st_file *f = open_ok(path);
    TH_OK(nat_st_read_f32(f, "t", got, 30));
    ck_assert_mem_eq(got, want_t, sizeof want_t);
    TH_OK(nat_st_read_f32(f, "s", got, 6));
    ck_assert_mem_eq(got, want_s, sizeof want_s);
    TH_OK(nat_st_read_f32(f, "b", got, 18));
    ck_assert_mem_eq(got, want_b, sizeof want_b);
    int64_t shape[NAT_MAX_DIMS];
    int ndim;
    TH_OK(nat_st_info(f, nat_st_find(f, "t"), NULL, &ndim, shape));
    ck_assert_int_eq(ndim, 2);
    ck_assert_int_eq(shape[0], 6);
    ck_assert_int_eq(shape[1], 5);
    nat_st_close(f);
    nat_tensor_free(base);
    remove_dir(dir);
}
END_TEST

START_TEST(roundtrip_i32_and_read_errors)
{
    make_dir();
    const int64_t s[1] = {4};
    nat_tensor *t;
    TH_OK(nat_tensor_new(&t, NAT_I32, NAT_CPU, 1, s));
    int32_t *v = nat_tensor_data(t);
    v[0] = -7, v[1] = 2147483647, v[2] = -2147483647 - 1, v[3] = 42;
    nat_tensor *x = new_f32(1, s, 1.0f);
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "step", t));
    TH_OK(nat_st_writer_add(w, "x", x));
    const char *path = in_dir("i32.safetensors");
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);

    nat_st_file *f = open_ok(path);
    nat_dtype dt;
    TH_OK(nat_st_info(f, nat_st_find(f, "step"), &dt, NULL, NULL));
    ck_assert_int_eq(dt, NAT_I32);
    int32_t got[4];
    TH_OK(nat_st_read_i32(f, "step", got, 4));
    ck_assert_mem_eq(got, v, sizeof got);
    float fl[4];
    ck_assert_int_eq(nat_st_read_f32(f, "step", fl, 4), NAT_ERR_UNSUPPORTED);
    assert_msg_has("nat_st_read_i32");
    ck_assert_int_eq(nat_st_read_i32(f, "x", got, 4), NAT_ERR_UNSUPPORTED);
    assert_msg_has("'x' is F32");
    ck_assert_int_eq(nat_st_read_f32(f, "x", fl, 3), NAT_ERR_SHAPE);
    assert_msg_has("[4]");
    ck_assert_int_eq(nat_st_read_f32(f, "y", fl, 4), NAT_ERR_FORMAT);
    assert_msg_has("no tensor 'y'");
    assert_msg_has(path);
    nat_st_close(f);
    nat_tensor_free(t);
    nat_tensor_free(x);
    remove_dir(dir);
}
END_TEST

START_TEST(metadata_roundtrip)
{
    make_dir();
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_set_metadata(w, "format", "pt"));
    TH_OK(nat_st_writer_set_metadata(w, "config", "[model]\nvariant = \"mini\"\tk=7\\ ünï"));
    TH_OK(nat_st_writer_set_metadata(w, "step", "1"));
    TH_OK(nat_st_writer_set_metadata(w, "step", "12345")); /* replaces */
    TH_OK(nat_st_writer_set_metadata(w, "empty", ""));
    const char *path = in_dir("meta.safetensors");
    TH_OK(nat_st_writer_save(w, path)); /* no tensors at all is a valid file */
    nat_st_writer_free(w);

    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_count(f), 0);
    ck_assert_str_eq(nat_st_metadata(f, "format"), "pt");
    ck_assert_str_eq(nat_st_metadata(f, "config"), "[model]\nvariant = \"mini\"\tk=7\\ ünï");
    ck_assert_str_eq(nat_st_metadata(f, "step"), "12345");
    ck_assert_str_eq(nat_st_metadata(f, "empty"), "");
    ck_assert_ptr_null(nat_st_metadata(f, "missing"));
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

/* The header is padded with spaces so the data starts 8-byte aligned, and is plain JSON. */
START_TEST(header_layout)
{
    make_dir();
    const int64_t s[1] = {3};
    nat_tensor *t = new_f32(1, s, 2.0f);
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "b", t));
    TH_OK(nat_st_writer_add(w, "a", t));
    const char *path = in_dir("layout.safetensors");
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | b[i];
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq(n, 8 + hlen + 24);
    ck_assert_int_eq(b[8], '{');
    const char *want = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]}}";
    ck_assert_int_eq(memcmp(b + 8, want, strlen(want)), 0);
    for (size_t i = 8 + strlen(want); i < 8 + hlen; i++)
        ck_assert_int_eq(b[i], ' ');
    ck_assert_mem_eq(b + 8 + hlen, nat_tensor_f32(t), 12);
    free(b);
    nat_tensor_free(t);
    remove_dir(dir);
}
END_TEST

/* BF16, F16 and F64 files as PyTorch writes them, assembled byte by byte. */
START_TEST(reads_bf16_f16_f64)
{
    make_dir();
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                       "\"bf\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[20,44]}}";
    const unsigned char data[44] = {/* bf: 1.5, -2.25, 3e-5 (0x37fc), -0 */
                                    0xc0, 0x3f, 0x10, 0xc0, 0xfc, 0x37, 0x00, 0x80,
                                    /* h: 1.5, -2.25, 3e-5 (subnormal 0x01f7), 65504, inf, 2^-14 */
                                    0x00, 0x3e, 0x80, 0xc0, 0xf7, 0x01, 0xff, 0x7b, 0x00, 0x7c, 0x00, 0x04,
                                    /* d: 1.5, -2.25, 3e-5 */
                                    0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0x02, 0xc0, 0x69, 0x1d, 0x55, 0x4d,
                                    0x10, 0x75, 0xff, 0x3e};
    const char *path = in_dir("half.safetensors");
    write_st(path, strlen(json), json, data, sizeof data);
    nat_st_file *f = open_ok(path);
    ck_assert_str_eq(nat_st_metadata(f, "format"), "pt");
    nat_dtype dt;
    TH_OK(nat_st_info(f, nat_st_find(f, "bf"), &dt, NULL, NULL));
    ck_assert_int_eq(dt, NAT_BF16);
    TH_OK(nat_st_info(f, nat_st_find(f, "h"), &dt, NULL, NULL));
    ck_assert_int_eq(dt, NAT_F16);
    TH_OK(nat_st_info(f, nat_st_find(f, "d"), &dt, NULL, NULL));
    ck_assert_int_eq(dt, NAT_F64);

    float v[6];
    TH_OK(nat_st_read_f32(f, "bf", v, 4));
    ck_assert_float_eq(v[0], 1.5f);
    ck_assert_float_eq(v[1], -2.25f);
    ck_assert_float_eq(v[2], 3.0040740966796875e-05f);
    ck_assert_float_eq_tol(v[2], 3e-5f, 3e-5f / 256);
    ck_assert(v[3] == 0.0f && signbit(v[3]));
    TH_OK(nat_st_read_f32(f, "h", v, 6));
    ck_assert_float_eq(v[0], 1.5f);
    ck_assert_float_eq(v[1], -2.25f);
    ck_assert_float_eq(v[2], 503.0f * 0x1p-24f);
    ck_assert_float_eq_tol(v[2], 3e-5f, 0x1p-25f);
    ck_assert_float_eq(v[3], 65504.0f);
    ck_assert(isinf(v[4]) && v[4] > 0);
    ck_assert_float_eq(v[5], 0x1p-14f);
    TH_OK(nat_st_read_f32(f, "d", v, 3));
    ck_assert_float_eq(v[0], 1.5f);
    ck_assert_float_eq(v[1], -2.25f);
    ck_assert_float_eq(v[2], 3e-5f);
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

/* Reads of 2- and 8-byte dtypes are converted through a fixed-size buffer, chunk by chunk: tensors of
 * several chunks whose every value depends on its index catch a wrong chunk offset or a short last
 * chunk. The values are exact in their dtypes, so any mismatch is an indexing error. */
static float f16_value(int64_t i) { return (float)(i % 2047) * ((i / 2047) % 2 ? -1.0f : 1.0f); }
static float bf16_value(int64_t i) { return (float)(i % 255 + 1) * ldexpf(1.0f, (int)((i / 255) % 16) - 8); }
static double f64_value(int64_t i) { return (double)i + 0.25; }

START_TEST(reads_large_half_and_double_tensors)
{
    make_dir();
    enum { NH = 100003, NB = 70007, ND = 20011 };
    const size_t bytes = 2 * NH + 2 * NB + 8 * (size_t)ND;
    unsigned char *data = malloc(bytes), *o = data;
    for (int64_t i = 0; i < NH; i++, o += 2) {
        uint16_t h = nat_f32_to_f16_bits(f16_value(i));
        o[0] = (unsigned char)h, o[1] = (unsigned char)(h >> 8);
    }
    for (int64_t i = 0; i < NB; i++, o += 2) {
        uint16_t h = nat_f32_to_bf16_bits(bf16_value(i));
        o[0] = (unsigned char)h, o[1] = (unsigned char)(h >> 8);
    }
    for (int64_t i = 0; i < ND; i++, o += 8) {
        double d = f64_value(i);
        uint64_t u;
        memcpy(&u, &d, 8);
        for (int b = 0; b < 8; b++)
            o[b] = (unsigned char)(u >> (8 * b));
    }
    char json[512];
    snprintf(json, sizeof json,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]},"
             "\"bf\":{\"dtype\":\"BF16\",\"shape\":[7,%d],\"data_offsets\":[%d,%d]},"
             "\"d\":{\"dtype\":\"F64\",\"shape\":[%d],\"data_offsets\":[%d,%zu]}}",
             NH, 2 * NH, NB / 7, 2 * NH, 2 * NH + 2 * NB, ND, 2 * NH + 2 * NB, bytes);
    const char *path = in_dir("large.safetensors");
    write_st(path, strlen(json), json, data, bytes);
    free(data);
    nat_st_file *f = open_ok(path);
    float *v = malloc(NH * sizeof *v);
    int64_t bad = 0;
    TH_OK(nat_st_read_f32(f, "h", v, NH));
    for (int64_t i = 0; i < NH; i++)
        bad += v[i] != f16_value(i);
    TH_OK(nat_st_read_f32(f, "bf", v, NB));
    for (int64_t i = 0; i < NB; i++)
        bad += v[i] != bf16_value(i);
    TH_OK(nat_st_read_f32(f, "d", v, ND));
    for (int64_t i = 0; i < ND; i++)
        bad += v[i] != (float)f64_value(i);
    ck_assert_msg(bad == 0, "%" PRId64 " values read back wrong", bad);
    free(v);
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

/* ---- malformed files ---- */

START_TEST(missing_file_is_io_error)
{
    make_dir();
    nat_st_file *f = (nat_st_file *)1;
    const char *path = in_dir("missing.safetensors");
    ck_assert_int_eq(nat_st_open(&f, path), NAT_ERR_IO);
    ck_assert_ptr_null(f);
    assert_msg_has(path);
    assert_msg_has("cannot open");
    ck_assert_int_eq(nat_st_open(&f, dir), NAT_ERR_IO); /* a directory */
    assert_msg_has("not a regular file");
    remove_dir(dir);
}
END_TEST

START_TEST(truncated_files)
{
    make_dir();
    const char *path = in_dir("short.safetensors");
    nat_st_file *f = NULL;
    for (size_t n = 0; n < 8; n++) {
        write_bytes(path, "\x10\0\0\0\0\0\0", n);
        ck_assert_int_eq(nat_st_open(&f, path), NAT_ERR_FORMAT);
        assert_msg_has(path);
        assert_msg_has("truncated");
        assert_msg_has("8-byte header length");
    }
    /* Header length 100, but 10 bytes follow. */
    write_st(path, 100, "{\"a\":{\"dty", NULL, 0);
    ck_assert_int_eq(nat_st_open(&f, path), NAT_ERR_FORMAT);
    assert_msg_has("truncated: the header should be 100 bytes, but only 10 follow");
    ck_assert_ptr_null(f);
    /* Data shorter than the largest end offset (the last 4 bytes of a tensor are gone). */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}",
               16, NAT_ERR_FORMAT, "truncated", "tensor 'b' ends at byte 20 of the data, which has only 16");
    remove_dir(dir);
}
END_TEST

START_TEST(absurd_header_length)
{
    make_dir();
    const char *path = in_dir("absurd.safetensors");
    nat_st_file *f = NULL;
    const uint64_t lens[] = {100000001ull, 1ull << 40, UINT64_MAX};
    for (int i = 0; i < 3; i++) {
        write_st(path, lens[i], "{}", NULL, 0);
        ck_assert_int_eq(nat_st_open(&f, path), NAT_ERR_FORMAT);
        ck_assert_ptr_null(f);
        assert_msg_has(path);
        assert_msg_has("is absurd");
    }
    remove_dir(dir);
}
END_TEST

START_TEST(invalid_json)
{
    make_dir();
    expect_bad("{\"a\": {\"dtype\": \"F32\", ", 0, NAT_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("{\"a\" 1}", 0, NAT_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("", 0, NAT_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("\x01\xff\xfe", 0, NAT_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("[1, 2]", 0, NAT_ERR_FORMAT, "not a JSON object", NULL);
    expect_bad("\"str\"", 0, NAT_ERR_FORMAT, "not a JSON object", NULL);
    expect_bad("{} x", 0, NAT_ERR_FORMAT, "bytes after the JSON object", NULL);
    expect_bad("{}{}", 0, NAT_ERR_FORMAT, "bytes after the JSON object", NULL);
    /* Trailing spaces (the padding) and an empty object are fine. */
    const char *path = in_dir("ok.safetensors");
    write_st(path, 8, "{}      ", NULL, 0);
    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_count(f), 0);
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

START_TEST(missing_fields)
{
    make_dir();
    expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT, "tensor 'w' has no \"dtype\"",
               NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT, "tensor 'w' has no \"shape\"",
               NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, NAT_ERR_FORMAT, "tensor 'w' has no \"data_offsets\"",
               NULL);
    expect_bad("{\"w\":{}}", 0, NAT_ERR_FORMAT, "tensor 'w' has no", NULL);
    remove_dir(dir);
}
END_TEST

START_TEST(wrong_types)
{
    make_dir();
    expect_bad("{\"w\":[1]}", 0, NAT_ERR_FORMAT, "tensor 'w': entry is [1], not an object", NULL);
    expect_bad("{\"w\":null}", 0, NAT_ERR_FORMAT, "tensor 'w': entry is null", NULL);
    expect_bad("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': dtype 5 is not a string", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': shape \"1\" is not an array", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': dimension 0 of the shape is \"1\"", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': data_offsets [0] is not a pair", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, NAT_ERR_FORMAT,
               "not a pair of non-negative integers", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': data_offsets", "not a pair");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0}}}", 4, NAT_ERR_FORMAT, "not a pair",
               NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, NAT_ERR_FORMAT, "not a pair",
               NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 4, NAT_ERR_FORMAT, "not a pair",
               NULL);
    remove_dir(dir);
}
END_TEST

START_TEST(unknown_and_foreign_dtypes)
{
    make_dir();
    expect_bad("{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w' has unknown dtype 'Q7'", NULL);
    expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "unknown dtype 'f32'", NULL);
    /* I64 is valid safetensors (PyTorch buffers): the file opens, the tensor is listed, reading it as
     * f32 is refused. */
    const char *path = in_dir("i64.safetensors");
    const unsigned char data[16] = {3};
    const char *json = "{\"n\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}";
    write_st(path, strlen(json), json, data, 16);
    nat_st_file *f = open_ok(path);
    ck_assert_str_eq(nat_st_dtype(f, 0), "I64");
    int ndim = 0;
    int64_t shape[NAT_MAX_DIMS];
    ck_assert_int_eq(nat_st_info(f, 0, NULL, &ndim, shape), NAT_ERR_UNSUPPORTED);
    ck_assert_int_eq(ndim, 1);
    ck_assert_int_eq(shape[0], 2);
    assert_msg_has("'n' is I64");
    float v[2];
    ck_assert_int_eq(nat_st_read_f32(f, "n", v, 2), NAT_ERR_UNSUPPORTED);
    assert_msg_has("'n' is I64");
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

START_TEST(bad_shapes)
{
    make_dir();
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w': dimension 0 of the shape is -1, not a non-negative integer", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12, NAT_ERR_FORMAT,
               "dimension 1 of the shape is 1.5", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "not a non-negative integer", NULL);
    /* 2^32 cubed elements: the byte count overflows 64 bits. */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
               NAT_ERR_FORMAT, "tensor 'w': shape [4294967296, 4294967296, 4294967296] is too large", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[9007199254740992,1024],\"data_offsets\":[0,0]}}", 0,
               NAT_ERR_FORMAT, "too large", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, NAT_ERR_FORMAT,
               "tensor 'w' has 7 dimensions; nat supports at most 6", NULL);
    /* A zero anywhere makes an empty tensor, however large the other sizes. */
    const char *path = in_dir("z.safetensors");
    const char *json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,0,4294967296],\"data_offsets\":[0,0]}}";
    write_st(path, strlen(json), json, NULL, 0);
    nat_st_file *f = open_ok(path);
    TH_OK(nat_st_read_f32(f, "w", NULL, 0));
    nat_st_close(f);
    remove_dir(dir);
}
END_TEST

START_TEST(lying_offsets)
{
    make_dir();
    /* begin > end */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, NAT_ERR_FORMAT,
               "tensor 'w': data_offsets [8, 4] end before they begin", NULL);
    /* out of range */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[100,104]}}", 8, NAT_ERR_FORMAT,
               "tensor 'w' ends at byte 104 of the data, which has only 8", NULL);
    /* size does not match the shape */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, NAT_ERR_FORMAT,
               "tensor 'w': data_offsets [0, 20] hold 20 bytes, but shape [2, 3] of F32 needs 24", NULL);
    expect_bad("{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, NAT_ERR_FORMAT,
               "shape [4] of BF16 needs 8", NULL);
    /* overlap */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, NAT_ERR_FORMAT, "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, NAT_ERR_FORMAT, "overlaps", NULL);
    /* gap */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               20, NAT_ERR_FORMAT, "gap in the data: bytes [8, 12) before tensor 'b'", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, NAT_ERR_FORMAT,
               "bytes [0, 4) before tensor 'a'", NULL);
    /* trailing bytes */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, NAT_ERR_FORMAT,
               "8 trailing bytes after the last tensor", NULL);
    expect_bad("{}", 3, NAT_ERR_FORMAT, "3 trailing bytes", NULL);
    remove_dir(dir);
}
END_TEST

START_TEST(duplicate_names)
{
    make_dir();
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, NAT_ERR_FORMAT, "tensor 'w' appears twice", NULL);
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, NAT_ERR_FORMAT, "\"__metadata__\" appears twice", NULL);
    expect_bad("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, NAT_ERR_FORMAT, "metadata 'k' appears twice", NULL);
    remove_dir(dir);
}
END_TEST

START_TEST(bad_metadata)
{
    make_dir();
    expect_bad("{\"__metadata__\":{\"step\":12}}", 0, NAT_ERR_FORMAT, "metadata 'step' is 12, not a string", NULL);
    expect_bad("{\"__metadata__\":{\"a\":\"x\",\"cfg\":{\"k\":1}}}", 0, NAT_ERR_FORMAT, "metadata 'cfg'",
               "not a string");
    expect_bad("{\"__metadata__\":[\"x\"]}", 0, NAT_ERR_FORMAT, "\"__metadata__\" is not an object", NULL);
    expect_bad("{\"__metadata__\":\"x\"}", 0, NAT_ERR_FORMAT, "\"__metadata__\" is not an object", NULL);
    remove_dir(dir);
}
END_TEST

/* Every byte of a valid file's header replaced by a few troublesome values, and the file cut at every
 * length: opening never crashes and either succeeds (then every tensor reads) or reports FORMAT. */
START_TEST(mutated_files_never_crash)
{
    make_dir();
    const char *json = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"a\":{\"dtype\":\"F16\",\"shape\":[2,1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[4,12]}}";
    const unsigned char data[12] = {0, 0x3c, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
    const char *good = in_dir("good.safetensors"), *path = in_dir("mut.safetensors");
    write_st(good, strlen(json), json, data, sizeof data);
    size_t n;
    unsigned char *b = read_bytes(good, &n);
    const unsigned char vals[] = {0x00, 0xff, '"', '9', '-', '[', ']', '{', '}', ',', ' '};
    int opened = 0, cases = 0;
    for (size_t pos = 0; pos <= n; pos++)
        for (size_t v = 0; v <= sizeof vals; v++) {
            unsigned char saved = pos < n ? b[pos] : 0;
            size_t len = n;
            if (v == sizeof vals)
                len = pos; /* truncation */
            else if (pos < n)
                b[pos] = vals[v];
            else
                continue;
            write_bytes(path, b, len);
            if (pos < n)
                b[pos] = saved;
            nat_st_file *f = NULL;
            nat_status st = nat_st_open(&f, path);
            cases++;
            ck_assert_msg(st == NAT_OK || st == NAT_ERR_FORMAT, "byte %zu = %d, length %zu: %s", pos, (int)v, len,
                          nat_error_message());
            if (st != NAT_OK)
                continue;
            opened++;
            for (int i = 0; i < nat_st_count(f); i++) {
                float out[4];
                int ndim;
                int64_t shape[NAT_MAX_DIMS];
                nat_status si = nat_st_info(f, i, NULL, &ndim, shape);
                int64_t m = 1;
                for (int d = 0; d < ndim; d++)
                    m *= shape[d];
                if (si == NAT_OK && m <= 4)
                    (void)nat_st_read_f32(f, nat_st_name(f, i), out, m);
            }
            nat_st_close(f);
        }
    ck_assert_int_gt(opened, 0); /* some mutations are harmless (spaces, digits in metadata) */
    ck_assert_int_gt(cases, 1000);
    free(b);
    remove_dir(dir);
}
END_TEST

/* ---- strict loading ---- */

/* A checkpoint with tensors "a" [2, 3] and "levels.0.blocks.1.attn.rpb" [2, 13, 13], optionally
 * "extra" [1]; one value of a or rpb may be replaced by `bad` at flat index bad_at. */
static const char *make_ckpt(int with_extra, const char *bad_name, int64_t bad_at, float bad)
{
    const int64_t sa[2] = {2, 3}, sr[3] = {2, 13, 13}, se[1] = {1};
    nat_tensor *a = new_f32(2, sa, 0.5f), *r = new_f32(3, sr, -3.0f), *e = new_f32(1, se, 9.0f);
    if (bad_name)
        nat_tensor_f32(strcmp(bad_name, "a") == 0 ? a : r)[bad_at] = bad;
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "a", a));
    TH_OK(nat_st_writer_add(w, "levels.0.blocks.1.attn.rpb", r));
    if (with_extra)
        TH_OK(nat_st_writer_add(w, "extra", e));
    const char *path = in_dir("x.safetensors");
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    nat_tensor_free(a);
    nat_tensor_free(r);
    nat_tensor_free(e);
    return path;
}

/* The model side: tensors shaped like the checkpoint's (rpb's shape may differ), filled with 7. */
typedef struct {
    nat_tensor *t[2];
    const char *names[2];
} model;

static model make_model(int64_t rpb_k)
{
    const int64_t sa[2] = {2, 3}, sr[3] = {2, rpb_k, rpb_k};
    model m = {{NULL, NULL}, {"a", "levels.0.blocks.1.attn.rpb"}};
    TH_OK(nat_tensor_new(&m.t[0], NAT_F32, NAT_CPU, 2, sa));
    TH_OK(nat_tensor_new(&m.t[1], NAT_F32, NAT_CPU, 3, sr));
    TH_OK(nat_tensor_fill(m.t[0], 7.0f));
    TH_OK(nat_tensor_fill(m.t[1], 7.0f));
    return m;
}

static void assert_untouched(const model *m)
{
    for (int i = 0; i < 2; i++)
        for (int64_t j = 0; j < nat_tensor_numel(m->t[i]); j++)
            ck_assert_float_eq(nat_tensor_f32(m->t[i])[j], 7.0f);
}

static void free_model(model *m)
{
    nat_tensor_free(m->t[0]);
    nat_tensor_free(m->t[1]);
}

START_TEST(load_into_fills_model)
{
    make_dir();
    const char *path = make_ckpt(0, NULL, 0, 0);
    model m = make_model(13);
    nat_st_file *f = open_ok(path);
    TH_OK(nat_st_load_into(f, m.t, m.names, 2, 1));
    float want[338];
    TH_OK(nat_st_read_f32(f, "levels.0.blocks.1.attn.rpb", want, 338));
    ck_assert_mem_eq(nat_tensor_f32(m.t[1]), want, sizeof want);
    TH_OK(nat_st_read_f32(f, "a", want, 6));
    ck_assert_mem_eq(nat_tensor_f32(m.t[0]), want, 6 * sizeof(float));
    nat_st_close(f);
    free_model(&m);
    remove_dir(dir);
}
END_TEST

START_TEST(load_into_missing)
{
    make_dir();
    const char *path = make_ckpt(0, NULL, 0, 0);
    model m = make_model(13);
    const char *names[3] = {"a", "head.weight", "head.bias"};
    nat_tensor *t[3] = {m.t[0], m.t[1], m.t[1]};
    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_load_into(f, t, names, 2, 0), NAT_ERR_FORMAT);
    assert_msg_has(path);
    assert_msg_has("tensor 'head.weight' (shape [2, 13, 13]) is missing");
    ck_assert_int_eq(nat_st_load_into(f, t, names, 3, 0), NAT_ERR_FORMAT);
    assert_msg_has("(and 1 more of the model's 3 tensors)");
    assert_untouched(&m);
    nat_st_close(f);
    free_model(&m);
    remove_dir(dir);
}
END_TEST

START_TEST(load_into_unexpected)
{
    make_dir();
    const char *path = make_ckpt(1, NULL, 0, 0);
    model m = make_model(13);
    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_load_into(f, m.t, m.names, 2, 1), NAT_ERR_FORMAT);
    assert_msg_has(path);
    assert_msg_has("unexpected tensor 'extra' (not in the model)");
    assert_untouched(&m);
    /* Loading only "a" strictly: two tensors are unexpected. */
    ck_assert_int_eq(nat_st_load_into(f, m.t, m.names, 1, 1), NAT_ERR_FORMAT);
    assert_msg_has("and 1 more");
    assert_untouched(&m);
    TH_OK(nat_st_load_into(f, m.t, m.names, 2, 0)); /* not strict: extras are fine */
    ck_assert_float_eq(nat_tensor_f32(m.t[0])[0], 0.5f);
    nat_st_close(f);
    free_model(&m);
    remove_dir(dir);
}
END_TEST

START_TEST(load_into_misshaped)
{
    make_dir();
    const char *path = make_ckpt(0, NULL, 0, 0);
    model m = make_model(7);
    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_load_into(f, m.t, m.names, 2, 1), NAT_ERR_SHAPE);
    assert_msg_has(path);
    assert_msg_has("tensor 'levels.0.blocks.1.attn.rpb' has shape [2, 13, 13], the model expects [2, 7, 7]");
    assert_untouched(&m);
    /* A rank mismatch, and the same name twice in the model's list. */
    const int64_t s1[1] = {6};
    nat_tensor *flat;
    TH_OK(nat_tensor_new(&flat, NAT_F32, NAT_CPU, 1, s1));
    nat_tensor *t2[1] = {flat};
    ck_assert_int_eq(nat_st_load_into(f, t2, m.names, 1, 0), NAT_ERR_SHAPE);
    assert_msg_has("tensor 'a' has shape [2, 3], the model expects [6]");
    const char *twice[2] = {"a", "a"};
    nat_tensor *t3[2] = {m.t[0], m.t[0]};
    ck_assert_int_eq(nat_st_load_into(f, t3, twice, 2, 0), NAT_ERR_INVALID_ARG);
    assert_msg_has("'a' twice");
    assert_untouched(&m);
    nat_tensor_free(flat);
    nat_st_close(f);
    free_model(&m);
    remove_dir(dir);
}
END_TEST

START_TEST(load_into_nonfinite)
{
    make_dir();
    model m = make_model(13);
    /* A NaN in the second tensor: the first, already read, must not be written either. */
    const char *path = make_ckpt(0, "levels.0.blocks.1.attn.rpb", 13 * 13 + 2 * 13 + 4, NAN);
    nat_st_file *f = open_ok(path);
    ck_assert_int_eq(nat_st_load_into(f, m.t, m.names, 2, 1), NAT_ERR_FORMAT);
    assert_msg_has(path);
    assert_msg_has("tensor 'levels.0.blocks.1.attn.rpb' has a non-finite value (nan) at index [1, 2, 4] (flat 199)");
    assert_untouched(&m);
    nat_st_close(f);
    path = make_ckpt(0, "a", 5, -INFINITY);
    f = open_ok(path);
    ck_assert_int_eq(nat_st_load_into(f, m.t, m.names, 2, 1), NAT_ERR_FORMAT);
    assert_msg_has("tensor 'a' has a non-finite value (-inf) at index [1, 2] (flat 5)");
    assert_untouched(&m);
    nat_st_close(f);
    free_model(&m);
    remove_dir(dir);
}
END_TEST

/* ---- writing ---- */

START_TEST(writer_rejects_bad_input)
{
    const int64_t s[1] = {2};
    nat_tensor *t = new_f32(1, s, 0.0f), *d;
    TH_OK(nat_tensor_new(&d, NAT_F64, NAT_CPU, 1, s));
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "a", t));
    ck_assert_int_eq(nat_st_writer_add(w, "a", t), NAT_ERR_INVALID_ARG);
    assert_msg_has("tensor 'a' was already added");
    ck_assert_int_eq(nat_st_writer_add(w, "d", d), NAT_ERR_INVALID_ARG);
    assert_msg_has("tensor 'd' is f64");
    ck_assert_int_eq(nat_st_writer_add(w, "__metadata__", t), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_st_writer_add(w, "", t), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_st_writer_add(w, "x", NULL), NAT_ERR_INVALID_ARG);
    nat_st_writer_free(w);
    nat_tensor_free(t);
    nat_tensor_free(d);
}
END_TEST

static nat_st_writer *writer_with(float start, int64_t n)
{
    const int64_t s[1] = {n};
    nat_tensor *t = new_f32(1, s, start);
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_st_writer_add(w, "w", t));
    TH_OK(nat_st_writer_set_metadata(w, "start", start > 0 ? "new" : "old"));
    nat_tensor_free(t);
    return w;
}

START_TEST(save_into_missing_directory)
{
    make_dir();
    char path[400];
    snprintf(path, sizeof path, "%s/nope/x.safetensors", dir);
    nat_st_writer *w = writer_with(1.0f, 4);
    ck_assert_int_eq(nat_st_writer_save(w, path), NAT_ERR_IO);
    assert_msg_has(path);
    assert_msg_has("cannot create the temporary file");
    ck_assert_int_eq(count_tmp(dir), 0);
    ck_assert_int_ne(access(path, F_OK), 0);
    nat_st_writer_free(w);
    remove_dir(dir);
}
END_TEST

/* The write itself fails half-way (file size limit): the old checkpoint is byte-for-byte intact. */
START_TEST(failed_write_keeps_old_file)
{
    make_dir();
    const char *path = in_dir("ckpt.safetensors");
    nat_st_writer *w = writer_with(-1.0f, 16);
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    size_t n_old;
    unsigned char *old = read_bytes(path, &n_old);

    w = writer_with(1.0f, 1 << 16); /* 256 KB of data */
    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 16384;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG instead of a signal */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    nat_status st = nat_st_writer_save(w, path);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    ck_assert_int_eq(st, NAT_ERR_IO);
    assert_msg_has(path);
    assert_msg_has("writing the temporary file");
    ck_assert_int_eq(count_tmp(dir), 0);
    size_t n_now;
    unsigned char *now = read_bytes(path, &n_now);
    ck_assert_uint_eq(n_now, n_old);
    ck_assert_mem_eq(now, old, n_old);
    nat_st_file *f = open_ok(path);
    ck_assert_str_eq(nat_st_metadata(f, "start"), "old");
    nat_st_close(f);

    TH_OK(nat_st_writer_save(w, path)); /* the writer is still usable; the new file replaces the old */
    f = open_ok(path);
    ck_assert_str_eq(nat_st_metadata(f, "start"), "new");
    nat_st_close(f);
    ck_assert_int_eq(count_tmp(dir), 0);
    nat_st_writer_free(w);
    free(old);
    free(now);
    remove_dir(dir);
}
END_TEST

/* The rename fails (a directory is in the way): the temporary file is removed, the target kept. */
START_TEST(failed_rename_leaves_no_temp)
{
    make_dir();
    const char *path = in_dir("taken.safetensors");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    char inner[500];
    snprintf(inner, sizeof inner, "%s/keep", path);
    write_bytes(inner, "x", 1);
    nat_st_writer *w = writer_with(1.0f, 4);
    ck_assert_int_eq(nat_st_writer_save(w, path), NAT_ERR_IO);
    assert_msg_has(path);
    assert_msg_has("cannot rename");
    ck_assert_int_eq(count_tmp(dir), 0);
    ck_assert_int_eq(access(inner, F_OK), 0);
    nat_st_writer_free(w);
    remove_dir(dir);
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

int main(void)
{
    Suite *s = suite_create("safetensors");
#define CASE(fn) add_case(s, #fn, fn)
    CASE(roundtrip_shapes_bit_exact);
    CASE(roundtrip_strided_views);
    CASE(roundtrip_i32_and_read_errors);
    CASE(metadata_roundtrip);
    CASE(header_layout);
    CASE(reads_bf16_f16_f64);
    CASE(reads_large_half_and_double_tensors);
    CASE(missing_file_is_io_error);
    CASE(truncated_files);
    CASE(absurd_header_length);
    CASE(invalid_json);
    CASE(missing_fields);
    CASE(wrong_types);
    CASE(unknown_and_foreign_dtypes);
    CASE(bad_shapes);
    CASE(lying_offsets);
    CASE(duplicate_names);
    CASE(bad_metadata);
    CASE(mutated_files_never_crash);
    CASE(load_into_fills_model);
    CASE(load_into_missing);
    CASE(load_into_unexpected);
    CASE(load_into_misshaped);
    CASE(load_into_nonfinite);
    CASE(writer_rejects_bad_input);
    CASE(save_into_missing_directory);
    CASE(failed_write_keeps_old_file);
    CASE(failed_rename_leaves_no_temp);
#undef CASE
    return th_run_suite(s);
}
