/* tests/support/harness.h — shared test helpers: random tensors, closeness assertions against plain-loop
 * references, and the central-difference gradient checker every op test uses.
 *
 * The gradient check: loss = Σ out ⊙ R for a fixed random R (so every output element matters with a
 * different weight); the analytic gradient of each input that requires one comes from nat_backward, the
 * numeric one from (loss(x+eps) - loss(x-eps)) / 2eps per element, with the loss summed in double.
 */
#ifndef NAT_TEST_HARNESS_H
#define NAT_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>

#include "nat/autograd.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "nat/rng.h"

/* Persistent f32 CPU tensor of N(0,1) values (times `scale`); the caller frees it. */
nat_tensor *th_randn(nat_rng *rng, int ndim, const int64_t *shape, float scale, bool requires_grad);
/* Persistent tensor from values. */
nat_tensor *th_from(const float *v, int ndim, const int64_t *shape, bool requires_grad);

/* max |got - want| / max(1, max |want|): the error measure of the reference comparisons. */
double th_max_rel_err(const float *got, const double *want, int64_t n);
double th_max_rel_err_f(const float *got, const float *want, int64_t n);
/* Fails the running Check test with `what`, the error and the tolerance when the error exceeds tol. */
void th_assert_close(const float *got, const double *want, int64_t n, double tol, const char *what);
void th_assert_close_f(const float *got, const float *want, int64_t n, double tol, const char *what);

/* Asserts `got == want` and that the thread's error message contains s1 and (when not NULL) s2. */
void th_expect_error(nat_status got, nat_status want, const char *s1, const char *s2);

/* Backward of loss = sum(y * r), r ~ N(0, 1) from `seed`, made on y's device `dev`: every input of y
 * gets the gradient of a random projection of y (asserts each step succeeds). Returns the loss. */
float th_backward_random_projection(nat_ctx *ctx, nat_tensor *y, nat_device dev, uint64_t seed);

/* A tiny NAT description (1 level of 1 block, dim 8, kernel 3, 3 classes of 8 x 8 one-channel images)
 * for tests of checkpoints and metadata. */
nat_model_desc th_tiny_nat_desc(void);

/* Builds the op's output from `inputs` in ctx. */
typedef nat_status (*th_fn)(nat_ctx *ctx, nat_tensor **inputs, void *user, nat_tensor **out);

/* Returns the largest relative gradient error over every input with requires_grad (the error of an
 * element: |analytic - numeric| / max(1, |numeric|)). Parameter grads are zeroed before use. Returns a
 * negative value when the forward or backward itself failed. */
double th_gradcheck_err(th_fn f, void *user, int n_inputs, nat_tensor **inputs, double eps, uint64_t seed);
/* Asserts th_gradcheck_err(...) <= tol, naming `what`. */
void th_gradcheck(const char *what, th_fn f, void *user, int n_inputs, nat_tensor **inputs, double eps, double tol);

/* Asserts a nat call succeeded, printing the library's message otherwise. */
#define TH_OK(expr)                                                                                 \
    do {                                                                                            \
        nat_status th_s_ = (expr);                                                                  \
        ck_assert_msg(th_s_ == NAT_OK, "%s failed: %s: %s", #expr, nat_status_name(th_s_),         \
                      nat_error_message());                                                         \
    } while (0)

/* Runs a suite with CK_ENV-style selection (CK_RUN_CASE=<case> reruns one case) and returns the exit code. */
int th_run_suite(Suite *s);
/* Leaves a case out of the suite and prints why ("SKIPPED case: reason"); th_run_suite then returns 77
 * (ctest: Skipped, never Passed) when every case that ran passed. Call from main, before running. */
void th_skip_case(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether Fashion-MNIST (Debian's dataset-fashion-mnist) is readable at `dir`; when it is not, the case
 * `name` is skipped with the path it looked for. */
bool th_need_fashion_mnist(const char *name, const char *dir);

/* A named test case; th_run_cases makes one TCase per entry (timeout in seconds) and runs them as th_run_suite. */
typedef struct th_case {
    const char *name;
    const TTest *test;
} th_case;
int th_run_cases(const char *suite, const th_case *cases, size_t n, double timeout);

#endif
