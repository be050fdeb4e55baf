/* tests/test_reliability.c — regression tests for defects found by feeding nat bad input and misusing it
 * (docs/reliability.md): each case names the defect it pins down. Cases that need a training run live in
 * tests/test_train.c (its fixtures), config-parser ones in tests/test_config.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/harness.h"
#include "nat/model.h"
#include "nat/safetensors.h"
#include "train/train_metrics.h"

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

    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "small");
    d.in_chans = 1, d.num_classes = 3, d.img_size = 8, d.embed_dim = 8, d.kernel_size = 3, d.mlp_ratio = 2;
    d.num_levels = 1, d.patch_stride = 2, d.depths[0] = 1, d.heads[0] = 1;
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

int main(void)
{
    Suite *s = suite_create("reliability");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"metrics_ties_are_wrong_and_nan_is_an_error", metrics_ties_are_wrong_and_nan_is_an_error},
        {"size_overflow_and_metadata_ranges", size_overflow_and_metadata_ranges},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
