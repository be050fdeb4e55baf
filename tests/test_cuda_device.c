/* tests/test_cuda_device.c — device memory through the caching allocator and host<->device copies.
 * Without a CUDA build or device it prints why and exits 77, which ctest reports as "skipped"
 * (never as passed). */
#include <stdio.h>
#include <string.h>

#include "core/backend.h" /* nat_cuda_raw_copy */
#include "support/harness.h"

START_TEST(device_round_trip)
{
    nat_device dev = {NAT_DEV_CUDA, 0};
    float host[1000], back[1000];
    for (int i = 0; i < 1000; i++)
        host[i] = (float)i * 0.5f;
    void *d;
    TH_OK(nat_mem_alloc(dev, sizeof host, &d));
    TH_OK(nat_cuda_raw_copy(0, d, host, sizeof host, 0));
    TH_OK(nat_cuda_raw_copy(0, back, d, sizeof back, 1));
    ck_assert_int_eq(memcmp(host, back, sizeof host), 0);
    nat_mem_stats s = nat_mem_get_stats(dev);
    ck_assert_uint_ge(s.current, sizeof host);
    nat_mem_free(dev, d, sizeof host);
    uint64_t before = nat_mem_get_stats(dev).sys_allocs;
    TH_OK(nat_mem_alloc(dev, sizeof host, &d));
    ck_assert_uint_eq(nat_mem_get_stats(dev).sys_allocs, before); /* served from the cache */
    nat_mem_free(dev, d, sizeof host);
}
END_TEST

int main(void)
{
    if (!nat_cuda_built()) {
        printf("SKIPPED: nat was built without CUDA; no GPU test ran\n");
        return 77;
    }
    if (nat_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device present; no GPU test ran\n");
        return 77;
    }
    Suite *s = suite_create("cuda_device");
    TCase *tc = tcase_create("device_round_trip");
    tcase_add_test(tc, device_round_trip);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA must not be initialised before a fork */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
