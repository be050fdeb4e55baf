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

int main(void)
{
    Suite *s = suite_create("reliability");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"metrics_ties_are_wrong_and_nan_is_an_error", metrics_ties_are_wrong_and_nan_is_an_error},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
