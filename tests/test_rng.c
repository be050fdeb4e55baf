/* tests/test_rng.c — the seeded generator: reproducible streams, distinct seeds and split streams,
 * and the moments and ranges of uniform, normal, truncated normal, bounded integers and shuffles
 * (1e5 draws each, fixed seeds, so the tolerances are several standard errors wide yet never flaky). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/harness.h"

#define N_DRAWS 100000
/* math.h's M_ constants are not C11. */
#define PI 3.14159265358979323846
#define SQRT1_2 0.70710678118654752440

START_TEST(same_seed_same_stream)
{
    nat_rng a, b;
    nat_rng_seed(&a, 1234);
    nat_rng_seed(&b, 1234);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(nat_rng_u64(&a), nat_rng_u64(&b));
    /* Every derived draw follows the state, and a copied state (a checkpoint) continues the stream. */
    nat_rng saved = a;
    float u = nat_rng_uniform(&a), n = nat_rng_normal(&a);
    uint32_t k = nat_rng_below(&a, 10);
    ck_assert(u == nat_rng_uniform(&saved));
    ck_assert(n == nat_rng_normal(&saved));
    ck_assert_uint_eq(k, nat_rng_below(&saved, 10));
    ck_assert(memcmp(&a, &saved, sizeof a) == 0);
}
END_TEST

START_TEST(different_seeds_differ)
{
    /* Small neighbouring seeds are the case splitmix64 seeding exists for. */
    const uint64_t seeds[4] = {0, 1, 2, 0x8000000000000000ull};
    uint64_t first[4][64];
    for (int s = 0; s < 4; s++) {
        nat_rng r;
        nat_rng_seed(&r, seeds[s]);
        for (int i = 0; i < 64; i++)
            first[s][i] = nat_rng_u64(&r);
    }
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++) {
            int same = 0;
            for (int i = 0; i < 64; i++)
                same += first[a][i] == first[b][i];
            ck_assert_msg(same == 0, "seeds %d and %d share %d of 64 outputs", a, b, same);
        }
    /* Seed 0 must not give a stuck all-zero state. */
    for (int i = 1; i < 64; i++)
        ck_assert(first[0][i] != first[0][0]);
}
END_TEST

START_TEST(split_streams_differ)
{
    nat_rng parent, parent2;
    nat_rng_seed(&parent, 7);
    nat_rng_seed(&parent2, 7);
    nat_rng c1 = nat_rng_split(&parent), c2 = nat_rng_split(&parent);
    nat_rng c1b = nat_rng_split(&parent2);
    /* Splitting is deterministic. */
    ck_assert(memcmp(&c1, &c1b, sizeof c1) == 0);
    /* And the children, and the parent's continuation, are three different streams. */
    int same12 = 0, same1p = 0, same2p = 0;
    for (int i = 0; i < 256; i++) {
        uint64_t a = nat_rng_u64(&c1), b = nat_rng_u64(&c2), p = nat_rng_u64(&parent);
        same12 += a == b;
        same1p += a == p;
        same2p += b == p;
    }
    ck_assert_msg(same12 == 0 && same1p == 0 && same2p == 0, "split streams overlap: %d %d %d", same12, same1p,
                  same2p);
}
END_TEST

START_TEST(uniform_range_and_moments)
{
    nat_rng r;
    nat_rng_seed(&r, 11);
    double s = 0, s2 = 0;
    float lo = 1, hi = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        float u = nat_rng_uniform(&r);
        ck_assert_msg(u >= 0.0f && u < 1.0f, "uniform draw %d = %.9g outside [0, 1)", i, u);
        s += u;
        s2 += (double)u * u;
        lo = fminf(lo, u);
        hi = fmaxf(hi, u);
    }
    double mean = s / N_DRAWS, var = s2 / N_DRAWS - mean * mean;
    /* Standard error of the mean: sqrt(1/12 / 1e5) = 9e-4. */
    ck_assert_msg(fabs(mean - 0.5) < 5e-3, "uniform mean %g", mean);
    ck_assert_msg(fabs(var - 1.0 / 12) < 2e-3, "uniform variance %g, want %g", var, 1.0 / 12);
    ck_assert_msg(lo < 1e-3 && hi > 0.999, "uniform draws span only [%g, %g]", lo, hi);

    /* Ten equal bins, each near 10%. */
    int bins[10] = {0};
    for (int i = 0; i < N_DRAWS; i++)
        bins[(int)(nat_rng_uniform(&r) * 10)]++;
    for (int b = 0; b < 10; b++)
        ck_assert_msg(abs(bins[b] - N_DRAWS / 10) < 600, "uniform bin %d holds %d of %d", b, bins[b], N_DRAWS);

    float x[1000];
    nat_rng_fill_uniform(&r, x, 1000, -3.0f, 5.0f);
    for (int i = 0; i < 1000; i++)
        ck_assert_msg(x[i] >= -3.0f && x[i] < 5.0f, "fill_uniform value %g outside [-3, 5)", x[i]);
}
END_TEST

START_TEST(normal_moments)
{
    nat_rng r;
    nat_rng_seed(&r, 12);
    double s = 0, s2 = 0, s3 = 0, s4 = 0;
    int within1 = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        double x = nat_rng_normal(&r);
        ck_assert(isfinite(x));
        s += x;
        s2 += x * x;
        s3 += x * x * x;
        s4 += x * x * x * x;
        within1 += fabs(x) < 1.0;
    }
    double mean = s / N_DRAWS, var = s2 / N_DRAWS - mean * mean;
    /* Standard errors: mean 3.2e-3, std 2.2e-3, skewness 7.7e-3, kurtosis 1.5e-2. */
    ck_assert_msg(fabs(mean) < 0.015, "normal mean %g", mean);
    ck_assert_msg(fabs(sqrt(var) - 1) < 0.01, "normal std %g", sqrt(var));
    ck_assert_msg(fabs(s3 / N_DRAWS) < 0.04, "normal skewness %g", s3 / N_DRAWS);
    ck_assert_msg(fabs(s4 / N_DRAWS - 3) < 0.08, "normal kurtosis %g, want 3", s4 / N_DRAWS);
    /* P(|x| < 1) = erf(1/sqrt 2) = 0.6827. */
    ck_assert_msg(fabs((double)within1 / N_DRAWS - erf(SQRT1_2)) < 5e-3, "P(|x|<1) = %g", (double)within1 / N_DRAWS);

    float x[N_DRAWS / 10];
    nat_rng_fill_normal(&r, x, N_DRAWS / 10, 3.0f, 0.5f);
    s = s2 = 0;
    for (int i = 0; i < N_DRAWS / 10; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    mean = s / (N_DRAWS / 10);
    var = s2 / (N_DRAWS / 10) - mean * mean;
    ck_assert_msg(fabs(mean - 3) < 0.02 && fabs(sqrt(var) - 0.5) < 0.015, "fill_normal(3, 0.5): mean %g std %g", mean,
                  sqrt(var));
}
END_TEST

START_TEST(trunc_normal_bounds_and_std)
{
    nat_rng r;
    nat_rng_seed(&r, 13);
    const float std = 0.02f, lo = -2 * std, hi = 2 * std;
    double s = 0, s2 = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        float x = nat_rng_trunc_normal(&r, std, lo, hi);
        ck_assert_msg(x >= lo && x <= hi, "trunc_normal draw %g outside [%g, %g]", x, lo, hi);
        s += x;
        s2 += (double)x * x;
    }
    double mean = s / N_DRAWS, sd = sqrt(s2 / N_DRAWS - mean * mean);
    /* Std of N(0,1) truncated to [-a, a]: sqrt(1 - 2a·φ(a) / (Φ(a) - Φ(-a))) = 0.8796 for a = 2. */
    double a = 2, phi = exp(-a * a / 2) / sqrt(2 * PI), mass = erf(a * SQRT1_2);
    double want = std * sqrt(1 - 2 * a * phi / mass);
    ck_assert_msg(fabs(want / std - 0.8796) < 1e-3, "reference factor %g", want / std);
    ck_assert_msg(fabs(mean) < 2e-4, "trunc_normal mean %g", mean);
    ck_assert_msg(fabs(sd - want) < 0.01 * want, "trunc_normal std %g, want %g", sd, want);

    /* One-sided bounds: everything lands in [0, 0.01]. */
    for (int i = 0; i < 1000; i++) {
        float x = nat_rng_trunc_normal(&r, 0.02f, 0.0f, 0.01f);
        ck_assert_msg(x >= 0.0f && x <= 0.01f, "trunc_normal(0.02, [0, 0.01]) gave %g", x);
    }
}
END_TEST

START_TEST(below_in_range_and_unbiased)
{
    nat_rng r;
    nat_rng_seed(&r, 14);
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(nat_rng_below(&r, 1), 0);

    /* n = 7: chi-square over 7 bins (6 degrees of freedom; 30 has p ~ 4e-5). */
    int bins[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint32_t k = nat_rng_below(&r, 7);
        ck_assert_uint_lt(k, 7);
        bins[k]++;
    }
    double chi2 = 0;
    for (int b = 0; b < 7; b++)
        chi2 += (bins[b] - 10000.0) * (bins[b] - 10000.0) / 10000.0;
    ck_assert_msg(chi2 < 30, "below(7) chi-square %g (bins %d %d %d %d %d %d %d)", chi2, bins[0], bins[1], bins[2],
                  bins[3], bins[4], bins[5], bins[6]);

    /* n = 3·2^30: a plain `u32 % n` would put half the draws below 2^30 instead of a third. */
    const uint32_t n = 3u << 30;
    int low = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        uint32_t k = nat_rng_below(&r, n);
        ck_assert_uint_lt(k, n);
        low += k < (1u << 30);
    }
    ck_assert_msg(fabs((double)low / N_DRAWS - 1.0 / 3) < 0.01, "below(3*2^30): %g of draws below 2^30, want 1/3",
                  (double)low / N_DRAWS);

    /* The largest n still stays below n. */
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_lt(nat_rng_below(&r, UINT32_MAX), UINT32_MAX);
}
END_TEST

START_TEST(shuffle_is_a_permutation)
{
    nat_rng r;
    nat_rng_seed(&r, 15);
    enum { N = 1000 };
    uint32_t idx[N];
    int seen[N];
    for (int i = 0; i < N; i++)
        idx[i] = (uint32_t)i;
    nat_rng_shuffle(&r, idx, N);
    memset(seen, 0, sizeof seen);
    int fixed = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_uint_lt(idx[i], N);
        seen[idx[i]]++;
        fixed += idx[i] == (uint32_t)i;
    }
    for (int i = 0; i < N; i++)
        ck_assert_msg(seen[i] == 1, "value %d appears %d times after the shuffle", i, seen[i]);
    /* A uniform permutation has about one fixed point. */
    ck_assert_msg(fixed < 10, "%d of %d elements did not move", fixed, N);

    /* Every position equally likely: element 0 of a 4-shuffle lands in each slot ~1/4 of the time. */
    int where[4] = {0};
    for (int t = 0; t < 40000; t++) {
        uint32_t s4[4] = {0, 1, 2, 3};
        nat_rng_shuffle(&r, s4, 4);
        for (int k = 0; k < 4; k++)
            if (s4[k] == 0)
                where[k]++;
    }
    for (int k = 0; k < 4; k++)
        ck_assert_msg(abs(where[k] - 10000) < 400, "element 0 landed in slot %d %d times of 40000", k, where[k]);

    /* Degenerate sizes are no-ops. */
    uint32_t one = 42;
    nat_rng_shuffle(&r, &one, 1);
    ck_assert_uint_eq(one, 42);
    nat_rng_shuffle(&r, NULL, 0);

    /* Same seed, same order (the data loader's epoch order depends on it). */
    nat_rng a, b;
    nat_rng_seed(&a, 99);
    nat_rng_seed(&b, 99);
    uint32_t x[50], y[50];
    for (int i = 0; i < 50; i++)
        x[i] = y[i] = (uint32_t)i;
    nat_rng_shuffle(&a, x, 50);
    nat_rng_shuffle(&b, y, 50);
    ck_assert(memcmp(x, y, sizeof x) == 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rng");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"same_seed_same_stream", same_seed_same_stream},
        {"different_seeds_differ", different_seeds_differ},
        {"split_streams_differ", split_streams_differ},
        {"uniform_range_and_moments", uniform_range_and_moments},
        {"normal_moments", normal_moments},
        {"trunc_normal_bounds_and_std", trunc_normal_bounds_and_std},
        {"below_in_range_and_unbiased", below_in_range_and_unbiased},
        {"shuffle_is_a_permutation", shuffle_is_a_permutation},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
