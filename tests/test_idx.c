/* tests/test_idx.c — the IDX reader on files the test writes itself: plain and gzipped, and every
 * malformed case (missing file, wrong magic, unsupported type, truncated data) with its message. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "nat/idx.h"
#include "support/harness.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/nat_test_idx_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Writes an IDX file of `n` bytes of header+payload; gz selects gzip. */
static void write_file(const char *path, const uint8_t *bytes, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, bytes, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
        fclose(f);
    }
}

/* 3 images of 2x4: magic 0x00000803, dims 3, 2, 4, then 24 bytes 0..23. */
static size_t sample(uint8_t *b)
{
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4};
    memcpy(b, hdr, 16);
    for (int i = 0; i < 24; i++)
        b[16 + i] = (uint8_t)i;
    return 40;
}

START_TEST(reads_plain_and_gzipped)
{
    make_dir();
    uint8_t b[64];
    size_t n = sample(b);
    for (int gz = 0; gz <= 1; gz++) {
        char path[300];
        snprintf(path, sizeof path, "%s/x%d.idx", dir, gz);
        write_file(path, b, n, gz);
        nat_idx idx;
        TH_OK(nat_idx_load(path, &idx));
        ck_assert_int_eq(idx.ndim, 3);
        ck_assert_int_eq(idx.dims[0], 3);
        ck_assert_int_eq(idx.dims[1], 2);
        ck_assert_int_eq(idx.dims[2], 4);
        ck_assert_uint_eq(idx.size, 24);
        for (int i = 0; i < 24; i++)
            ck_assert_int_eq(idx.data[i], i);
        nat_idx_free(&idx);
        unlink(path);
    }
    rmdir(dir);
}
END_TEST

static void expect_error(const uint8_t *b, size_t n, nat_status want, const char *needle)
{
    char path[300];
    snprintf(path, sizeof path, "%s/bad.idx.gz", dir);
    write_file(path, b, n, 1);
    nat_idx idx;
    ck_assert_int_eq(nat_idx_load(path, &idx), want);
    ck_assert_msg(strstr(nat_error_message(), needle) && strstr(nat_error_message(), path),
                  "message '%s' should name the file and contain '%s'", nat_error_message(), needle);
    ck_assert_ptr_null(idx.data);
    unlink(path);
}

START_TEST(malformed_files_are_clear_errors)
{
    make_dir();
    uint8_t b[64];
    size_t n = sample(b);
    expect_error(b, n - 5, NAT_ERR_FORMAT, "truncated");
    expect_error(b, 6, NAT_ERR_FORMAT, "truncated");
    b[0] = 0x1f;
    expect_error(b, n, NAT_ERR_FORMAT, "not an IDX file");
    b[0] = 0;
    b[2] = 0x0d; /* float elements */
    expect_error(b, n, NAT_ERR_FORMAT, "0x0d");
    nat_idx idx;
    char path[300];
    snprintf(path, sizeof path, "%s/missing.idx", dir);
    ck_assert_int_eq(nat_idx_load(path, &idx), NAT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "missing.idx"));
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("idx");
    TCase *a = tcase_create("reads_plain_and_gzipped");
    tcase_add_test(a, reads_plain_and_gzipped);
    suite_add_tcase(s, a);
    TCase *b = tcase_create("malformed_files_are_clear_errors");
    tcase_add_test(b, malformed_files_are_clear_errors);
    suite_add_tcase(s, b);
    return th_run_suite(s);
}
