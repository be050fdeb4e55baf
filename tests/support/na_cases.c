/* tests/support/na_cases.c — see na_cases.h. */
#include "support/na_cases.h"

#include "tests/ref/na_ref.h" /* na_ref_fused_forward */

#include <check.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nat_na_params na_case_params(const na_case *c)
{
    nat_na_params p = {.ndim = c->ndim, .scale = 0.0f};
    for (int a = 0; a < 3; a++) {
        p.kernel[a] = c->kernel[a];
        p.dilation[a] = c->dilation[a];
        p.causal[a] = c->causal[a];
    }
    return p;
}

void na_case_describe(const na_case *c, char *buf, size_t cap)
{
    char shape[64] = "", ks[32] = "", ds[32] = "", cs[32] = "";
    for (int a = 0; a < c->ndim; a++) {
        const char *sep = a ? "x" : "";
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%" PRId64, sep, c->len[a]);
        snprintf(ks + strlen(ks), sizeof ks - strlen(ks), "%s%d", sep, c->kernel[a]);
        snprintf(ds + strlen(ds), sizeof ds - strlen(ds), "%s%d", sep, c->dilation[a]);
        snprintf(cs + strlen(cs), sizeof cs - strlen(cs), "%s%d", a ? "," : "", c->causal[a]);
    }
    snprintf(buf, cap, "seed=%" PRIu64 " ndim=%d shape=%s k=%s d=%s causal=%s D=%" PRId64 " B=%" PRId64
             " heads=%" PRId64 " rpb=%d",
             na_test_seed, c->ndim, shape, ks, ds, cs, c->dim, c->batch, c->heads, c->rpb);
}

int64_t na_case_pixels(const na_case *c)
{
    int64_t n = 1;
    for (int a = 0; a < c->ndim; a++)
        n *= c->len[a];
    return n;
}

int64_t na_case_slots(const na_case *c)
{
    int64_t n = 1;
    for (int a = 0; a < c->ndim; a++)
        n *= c->kernel[a];
    return n;
}

int64_t na_case_rpb_size(const na_case *c)
{
    int64_t n = c->heads;
    for (int a = 0; a < c->ndim; a++)
        n *= 2 * c->kernel[a] - 1;
    return n;
}

na_case na_cases[NA_MAX_CASES];
int na_ncases;
uint64_t na_test_seed = 20240611;

const int na_case_kernels[] = {3, 5, 7, 9, 11, 13, 21};
const int64_t na_case_dims[] = {8, 16, 20, 32, 64};

/* The sweep: every kernel size, dilation 1-3 (lengths not divisible by d included), 4 and 8 at kernel 7, every length from
 * k*d to k*d+9 on some axis, non-square maps, every causal combination in 2-D and 3-D, rpb on and off,
 * batch/heads 1 and >1, every head dim -- spread over the cases instead of a Cartesian product, with the
 * work per case bounded so that the whole file stays fast. */
static void add_case(na_case c)
{
    /* Keep the reference's work (pixels * slots * D, per op) bounded. */
    while (c.batch * c.heads * na_case_pixels(&c) * na_case_slots(&c) * c.dim > 3000000 && c.dim > 8)
        c.dim = c.dim == 20 ? 16 : c.dim / 2;
    while (c.batch * c.heads * na_case_pixels(&c) * na_case_slots(&c) * c.dim > 3000000 &&
           c.batch * c.heads > 1) {
        if (c.batch > 1)
            c.batch = 1;
        else
            c.heads = 1;
    }
    if (na_ncases < NA_MAX_CASES)
        na_cases[na_ncases++] = c;
}

/* The table itself is fixed; na_test_seed drives the data. */
void na_cases_build(void)
{
    int n = 0;
    na_ncases = 0;
    /* 1-D: every kernel size x dilation, lengths k*d + 0..9, both causal settings. */
    for (size_t ki = 0; ki < sizeof na_case_kernels / sizeof na_case_kernels[0]; ki++)
        for (int d = 1; d <= 3; d++) {
            na_case c = {.ndim = 1};
            c.kernel[0] = na_case_kernels[ki];
            c.dilation[0] = d;
            c.causal[0] = n % 3 == 1;
            c.len[0] = (int64_t)na_case_kernels[ki] * d + n % 10;
            c.batch = 1 + n % 2;
            c.heads = 1 + (n / 2) % 3;
            c.dim = na_case_dims[n % 5];
            c.rpb = !c.causal[0] && n % 2 == 0;
            add_case(c);
            n++;
        }
    /* 2-D: the model's case, plus every kernel size with each dilation, offsets 0..9 per axis,
     * non-square, all four causal combinations. */
    for (size_t ki = 0; ki < sizeof na_case_kernels / sizeof na_case_kernels[0]; ki++)
        for (int d = 1; d <= 3; d++) {
            if (na_case_kernels[ki] >= 13 && d > 1)
                continue;
            if (na_case_kernels[ki] >= 9 && d == 3)
                continue;
            na_case c = {.ndim = 2};
            for (int a = 0; a < 2; a++) {
                c.kernel[a] = a == 1 && n % 4 == 3 && na_case_kernels[ki] > 3 ? na_case_kernels[ki] - 2 : na_case_kernels[ki];
                c.dilation[a] = a == 1 && n % 5 == 2 ? (d % 3) + 1 : d;
                c.len[a] = (int64_t)c.kernel[a] * c.dilation[a] + (n * (a + 3) + a) % 10;
            }
            c.causal[0] = n % 4 == 1 || n % 4 == 3;
            c.causal[1] = n % 4 == 2 || n % 4 == 3;
            c.batch = 1 + n % 2;
            c.heads = 1 + (n / 2) % 3;
            c.dim = na_case_dims[(n + 3) % 5];
            c.rpb = !c.causal[0] && !c.causal[1];
            add_case(c);
            n++;
        }
    /* 2-D NAT levels (k 7, D 32, rpb) at reduced size, with and without dilation. */
    {
        na_case c = {.ndim = 2, .batch = 2, .heads = 2, .len = {14, 14}, .dim = 32,
                     .kernel = {7, 7}, .dilation = {1, 1}, .rpb = 1};
        add_case(c);
        c.len[0] = c.len[1] = 7;
        c.heads = 4;
        add_case(c);
        c.len[0] = 16;
        c.len[1] = 17;
        c.dilation[0] = c.dilation[1] = 2;
        c.heads = 2;
        add_case(c);
    }
    /* Head dims off the usual list: wider than the SIMD kernels (plain loops) and tiny. */
    {
        na_case c = {.ndim = 2, .batch = 1, .heads = 2, .len = {9, 10}, .dim = 96, .kernel = {3, 5},
                     .dilation = {2, 1}, .rpb = 1};
        add_case(c);
        c = (na_case){.ndim = 1, .batch = 2, .heads = 2, .len = {17}, .dim = 3, .kernel = {5},
                      .dilation = {3}, .rpb = 1};
        add_case(c);
    }
    /* Short axes (k*d <= L < 2k*d): a key near the middle is in every query's window, so inverse
     * neighbourhoods reach 2k - 1 -- the deepest ring the fused backward keeps. */
    {
        na_case c = {.ndim = 2, .batch = 1, .heads = 2, .len = {9, 7}, .dim = 16, .kernel = {5, 5},
                     .dilation = {1, 1}, .rpb = 1};
        add_case(c);
        c = (na_case){.ndim = 2, .batch = 2, .heads = 1, .len = {26, 15}, .dim = 32, .kernel = {7, 5},
                      .dilation = {2, 1}, .rpb = 1};
        add_case(c);
        c = (na_case){.ndim = 2, .batch = 2, .heads = 1, .len = {7, 9}, .dim = 20, .kernel = {5, 5},
                      .dilation = {1, 1}, .causal = {1, 0}};
        add_case(c);
        c = (na_case){.ndim = 3, .batch = 1, .heads = 2, .len = {9, 6, 7}, .dim = 8, .kernel = {5, 3, 3},
                      .dilation = {1, 1, 2}, .rpb = 1};
        add_case(c);
    }
    /* 3-D: all eight causal combinations, small kernels, mixed dilations. */
    for (int cm = 0; cm < 8; cm++) {
        na_case c = {.ndim = 3};
        for (int a = 0; a < 3; a++) {
            c.kernel[a] = (cm + a) % 3 == 0 ? 5 : 3;
            c.dilation[a] = (cm + 2 * a) % 4 == 1 ? 2 : 1;
            c.causal[a] = (cm >> a) & 1;
            c.len[a] = (int64_t)c.kernel[a] * c.dilation[a] + (cm * 3 + a * 4) % 10;
        }
        if (cm == 5)
            c.dilation[2] = 3, c.len[2] = 3 * c.kernel[2] + 2;
        c.batch = 1 + cm % 2;
        c.heads = 1 + (cm / 2) % 2;
        c.dim = na_case_dims[cm % 5];
        c.rpb = cm == 0;
        add_case(c);
    }
    {
        na_case c = {.ndim = 3, .batch = 1, .heads = 2, .len = {7, 9, 8}, .dim = 16,
                     .kernel = {7, 3, 5}, .dilation = {1, 3, 1}, .rpb = 1};
        add_case(c);
        /* More than 512 slots: the rpb is gathered per query instead of read from a bias table. */
        c = (na_case){.ndim = 3, .batch = 1, .heads = 1, .len = {9, 10, 7}, .dim = 8,
                      .kernel = {9, 9, 7}, .dilation = {1, 1, 1}, .rpb = 1};
        add_case(c);
        /* Head dim 65: three fused chunks (of the CPU and CUDA fused kernels), the last one channel wide. */
        c = (na_case){.ndim = 2, .batch = 2, .heads = 1, .len = {8, 9}, .dim = 65, .kernel = {3, 3},
                      .dilation = {2, 1}, .causal = {0, 1}};
        add_case(c);
    }
    /* DiNAT's large dilations at NAT's kernel 7: d 4 and 8, lengths k*d .. k*d+9 (L mod d != 0 in most,
     * so the dilation groups differ in length), 1-D causal and not, 2-D with rpb on maps like DiNAT's
     * first two levels, 3-D with one dilated axis. */
    for (int i = 0; i < 6; i++) {
        const int d = i % 2 ? 8 : 4;
        na_case c = {.ndim = 1, .batch = 1 + i % 2, .heads = 2, .dim = 16, .kernel = {7}, .dilation = {d}};
        c.len[0] = 7 * d + (i * 3 + 1) % 10;
        c.causal[0] = i >= 4;
        c.rpb = !c.causal[0];
        add_case(c);
    }
    {
        na_case c = {.ndim = 2, .batch = 1, .heads = 2, .len = {30, 29}, .dim = 16, .kernel = {7, 7},
                     .dilation = {4, 4}, .rpb = 1};
        add_case(c);
        c = (na_case){.ndim = 2, .batch = 1, .heads = 1, .len = {58, 61}, .dim = 8, .kernel = {7, 7},
                      .dilation = {8, 8}, .rpb = 1};
        add_case(c);
        c = (na_case){.ndim = 2, .batch = 1, .heads = 1, .len = {60, 31}, .dim = 8, .kernel = {7, 7},
                      .dilation = {8, 4}, .causal = {1, 0}};
        add_case(c);
        c = (na_case){.ndim = 3, .batch = 1, .heads = 1, .len = {9, 30, 8}, .dim = 8, .kernel = {3, 7, 3},
                      .dilation = {1, 4, 2}, .rpb = 1};
        add_case(c);
    }
}



double *na_to_double(const float *x, int64_t n)
{
    double *d = calloc((size_t)(n ? n : 1), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

float *na_randn(nat_rng *r, int64_t n, float std)
{
    float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    nat_rng_fill_normal(r, x, (size_t)n, 0.0f, std);
    return x;
}

void na_data_init(na_data *dt, const na_case *c, uint64_t salt)
{
    nat_rng r;
    nat_rng_seed(&r, na_test_seed * 1000003u + salt);
    int64_t bhn = c->batch * c->heads * na_case_pixels(c);
    dt->nqkv = bhn * c->dim;
    dt->natt = bhn * na_case_slots(c);
    dt->nrpb = na_case_rpb_size(c);
    dt->nlse = bhn;
    dt->q = na_randn(&r, dt->nqkv, 1.0f);
    dt->k = na_randn(&r, dt->nqkv, 1.0f);
    dt->v = na_randn(&r, dt->nqkv, 1.0f);
    dt->rpb = na_randn(&r, dt->nrpb, 0.5f);
    dt->g_out = na_randn(&r, dt->nqkv, 1.0f);
    dt->g_att = na_randn(&r, dt->natt, 1.0f);
    dt->att = malloc(sizeof(float) * (size_t)dt->natt);
    nat_rng_fill_uniform(&r, dt->att, (size_t)dt->natt, 0.0f, 0.2f);
    dt->qd = na_to_double(dt->q, dt->nqkv);
    dt->kd = na_to_double(dt->k, dt->nqkv);
    dt->vd = na_to_double(dt->v, dt->nqkv);
    dt->rpbd = na_to_double(dt->rpb, dt->nrpb);
    dt->g_outd = na_to_double(dt->g_out, dt->nqkv);
    dt->g_attd = na_to_double(dt->g_att, dt->natt);
    dt->attd = na_to_double(dt->att, dt->natt);
}

void na_data_free(na_data *dt)
{
    float *f[] = {dt->q, dt->k, dt->v, dt->rpb, dt->g_out, dt->g_att, dt->att};
    double *d[] = {dt->qd, dt->kd, dt->vd, dt->rpbd, dt->g_outd, dt->g_attd, dt->attd};
    for (int i = 0; i < 7; i++) {
        free(f[i]);
        free(d[i]);
    }
}

/* max |fast - ref| / max |ref| over finite entries; -inf must sit at the same places. Returns the
 * relative error, or INFINITY on a mismatch of infinities / a non-finite fast value. */
double na_rel_err(const float *fast, const double *ref, int64_t n)
{
    double mx = 0.0, err = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isinf(ref[i]) || isinf(fast[i])) {
            if (!(isinf(ref[i]) && isinf(fast[i]) && (ref[i] < 0) == (fast[i] < 0)))
                return INFINITY;
            continue;
        }
        if (!isfinite(fast[i]))
            return INFINITY;
        mx = fmax(mx, fabs(ref[i]));
        err = fmax(err, fabs((double)fast[i] - ref[i]));
    }
    return mx > 0.0 ? err / mx : err;
}
const na_problem *na_case_problem(const na_case *c, const nat_na_params *p)
{
    static na_problem pb;
    if (na_problem_init(&pb, p, c->batch, c->heads, c->len, c->dim, c->rpb, "na_case") != NAT_OK)
        ck_abort_msg("case does not validate: %s", nat_error_message());
    return &pb;
}

double na_expect_close(const char *what, const float *fast, const double *ref, int64_t n, double tol,
                       const na_case *c, double *worst)
{
    const double e = na_rel_err(fast, ref, n);
    if (worst && e > *worst)
        *worst = e;
    if (!(e <= tol)) {
        char d[256];
        na_case_describe(c, d, sizeof d);
        ck_abort_msg("%s: relative error %.3g > %.1g [%s]", what, e, tol, d);
    }
    return e;
}

void na_ref_fused_saved(const na_case *c, const na_data *dt, double *orf, double *lr, float *of, float *lf)
{
    const nat_na_params p = na_case_params(c);
    nat_status s = na_ref_fused_forward(&p, c->batch, c->heads, c->len, c->dim, dt->qd, dt->kd, dt->vd,
                                        c->rpb ? dt->rpbd : NULL, orf, lr);
    na_expect_ok(s, "na_ref_fused_forward", c);
    for (int64_t i = 0; i < dt->nqkv; i++)
        of[i] = (float)orf[i];
    for (int64_t i = 0; i < dt->nlse; i++)
        lf[i] = (float)lr[i];
}

void na_expect_ok(nat_status s, const char *call, const na_case *c)
{
    if (s == NAT_OK)
        return;
    char d[256];
    na_case_describe(c, d, sizeof d);
    ck_abort_msg("%s failed: %s [%s]", call, nat_error_message(), d);
}

float *na_fbuf(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
double *na_dbuf(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }
