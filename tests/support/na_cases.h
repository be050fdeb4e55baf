/* tests/support/na_cases.h — the neighborhood-attention sweep shared by tests/test_na_cpu.c (the fast CPU
 * kernels) and tests/test_na_cuda.c (the CUDA kernels, host-emulated and on a device), so both check the
 * same cases: every kernel size, dilation 1-3 (lengths not divisible by d included), every length from
 * k*d to k*d+9 on some axis, non-square maps, every causal combination in 2-D and 3-D, rpb on and off,
 * batch/heads 1 and > 1, head dims 3 to 96 — spread over the cases instead of a Cartesian product, with
 * the work per case bounded so that each file stays fast. Also the inputs of a case (float, and the same
 * values in double for the reference) and the relative error the tests compare with. */
#ifndef NAT_TESTS_NA_CASES_H
#define NAT_TESTS_NA_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "layers/natten/na_problem.h"
#include "nat/rng.h"
#include "nat/status.h"

typedef struct na_case {
    int ndim;
    int64_t batch, heads, len[3], dim;
    int kernel[3], dilation[3], causal[3];
    int rpb;
} na_case;

#define NA_MAX_CASES 160
extern na_case na_cases[NA_MAX_CASES]; /* filled by na_cases_build */
extern int na_ncases;
extern uint64_t na_test_seed;          /* drives the data (NAT_TEST_SEED); the table itself is fixed */
extern const int na_case_kernels[7];   /* every kernel size the sweep covers */
extern const int64_t na_case_dims[5];  /* the usual head dims */

void na_cases_build(void);
nat_na_params na_case_params(const na_case *c);
/* The validated problem of case c under p (na_problem_init; a case that does not validate aborts the
 * test): what the fast kernels take. Points into static storage, overwritten by the next call. */
const na_problem *na_case_problem(const na_case *c, const nat_na_params *p);
/* "seed=... ndim=... shape=... k=... d=... causal=... D=... B=... heads=... rpb=..." for failure messages. */
void na_case_describe(const na_case *c, char *buf, size_t cap);
int64_t na_case_pixels(const na_case *c);
int64_t na_case_slots(const na_case *c);
int64_t na_case_rpb_size(const na_case *c);

typedef struct na_data {
    int64_t nqkv, natt, nrpb, nlse;
    float *q, *k, *v, *rpb, *g_out, *g_att, *att; /* inputs (float) */
    double *qd, *kd, *vd, *rpbd, *g_outd, *g_attd, *attd;
} na_data;

/* Inputs of case c from na_test_seed and salt: q, k, v, g_out ~ N(0, 1), rpb ~ N(0, 0.5), g_att ~
 * N(0, 1), att ~ U(0, 0.2), each also in double. */
void na_data_init(na_data *dt, const na_case *c, uint64_t salt);
void na_data_free(na_data *dt);
double *na_to_double(const float *x, int64_t n);  /* malloc'd */
float *na_randn(nat_rng *r, int64_t n, float std); /* malloc'd */
/* max |fast - ref| / max |ref| over finite entries; -inf must sit at the same places. Returns the
 * relative error, or INFINITY on a mismatch of infinities / a non-finite fast value. */
double na_rel_err(const float *fast, const double *ref, int64_t n);

/* na_rel_err(fast, ref, n), aborting the running Check test with case c's description when it exceeds
 * tol; raises *worst (if not NULL) to the error. */
double na_expect_close(const char *what, const float *fast, const double *ref, int64_t n, double tol,
                       const na_case *c, double *worst);

/* Aborts the running Check test with case c's description when `call` does not return NAT_OK. */
void na_expect_ok(nat_status s, const char *call, const na_case *c);
#define NA_EXPECT_OK(call, c) na_expect_ok((call), #call, (c))

/* Zeroed buffers of n (at least 1) values; free() them. */
float *na_fbuf(int64_t n);
double *na_dbuf(int64_t n);

/* The reference's fused forward of case c on dt's double inputs: out and lse in double (orf, lr) and
 * rounded to float (of, lf), the saved tensors a backward takes. Aborts the test on an error. */
void na_ref_fused_saved(const na_case *c, const na_data *dt, double *orf, double *lr, float *of, float *lf);

#endif
