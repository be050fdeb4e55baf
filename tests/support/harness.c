/* tests/support/harness.c — see harness.h. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "support/harness.h"

#include "nat/cuda.h" /* nat_tensor_to */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h> /* access */
#include <stdlib.h>
#include <string.h>

nat_tensor *th_randn(nat_rng *rng, int ndim, const int64_t *shape, float scale, bool requires_grad)
{
    nat_tensor *t;
    nat_status s = nat_tensor_new(&t, NAT_F32, NAT_CPU, ndim, shape);
    ck_assert_msg(s == NAT_OK, "tensor_new: %s", nat_error_message());
    nat_rng_fill_normal(rng, nat_tensor_f32(t), (size_t)nat_tensor_numel(t), 0.0f, scale);
    t->requires_grad = requires_grad;
    return t;
}

nat_tensor *th_from(const float *v, int ndim, const int64_t *shape, bool requires_grad)
{
    nat_tensor *t;
    nat_status s = nat_tensor_new(&t, NAT_F32, NAT_CPU, ndim, shape);
    ck_assert_msg(s == NAT_OK, "tensor_new: %s", nat_error_message());
    nat_tensor_copy_from(t, v, nat_tensor_numel(t));
    t->requires_grad = requires_grad;
    return t;
}

double th_max_rel_err(const float *got, const double *want, int64_t n)
{
    double scale = 1.0, err = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= err)) /* NaN counts as infinite error */
            err = isnan(e) ? INFINITY : e;
    }
    return err / scale;
}

double th_max_rel_err_f(const float *got, const float *want, int64_t n)
{
    double *w = malloc((size_t)(n ? n : 1) * sizeof *w);
    for (int64_t i = 0; i < n; i++)
        w[i] = want[i];
    double e = th_max_rel_err(got, w, n);
    free(w);
    return e;
}

void th_assert_close(const float *got, const double *want, int64_t n, double tol, const char *what)
{
    double e = th_max_rel_err(got, want, n);
    ck_assert_msg(e <= tol, "%s: max relative error %.3g > tolerance %.3g", what, e, tol);
}

void th_assert_close_f(const float *got, const float *want, int64_t n, double tol, const char *what)
{
    double e = th_max_rel_err_f(got, want, n);
    ck_assert_msg(e <= tol, "%s: max relative error %.3g > tolerance %.3g", what, e, tol);
}

void th_expect_error(nat_status got, nat_status want, const char *s1, const char *s2)
{
    ck_assert_msg(got == want, "expected %s, got %s (%s)", nat_status_name(want), nat_status_name(got),
                  nat_error_message());
    ck_assert_msg(strstr(nat_error_message(), s1), "message '%s' lacks '%s'", nat_error_message(), s1);
    if (s2)
        ck_assert_msg(strstr(nat_error_message(), s2), "message '%s' lacks '%s'", nat_error_message(), s2);
}

/* loss = Σ out ⊙ R in double; R drawn once per check from `seed`. */
static int eval_loss(th_fn f, void *user, nat_tensor **inputs, const float *R, int64_t *n_out, double *loss)
{
    nat_ctx *ctx;
    if (nat_ctx_new(&ctx, NAT_CPU) != NAT_OK)
        return -1;
    nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *out;
    int rc = 0;
    if (f(ctx, inputs, user, &out) != NAT_OK) {
        rc = -1;
    } else {
        int64_t n = nat_tensor_numel(out);
        float *v = malloc((size_t)n * sizeof *v);
        nat_tensor_copy_to(out, v, n);
        double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += (double)v[i] * (R ? R[i] : 0.0f);
        free(v);
        *n_out = n;
        *loss = s;
    }
    nat_ctx_free(ctx);
    return rc;
}

double th_gradcheck_err(th_fn f, void *user, int n_inputs, nat_tensor **inputs, double eps, uint64_t seed)
{
    int64_t n_out = 0;
    double loss;
    if (eval_loss(f, user, inputs, NULL, &n_out, &loss) != 0)
        return -1.0;
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    float *R = malloc((size_t)n_out * sizeof *R);
    nat_rng_fill_normal(&rng, R, (size_t)n_out, 0.0f, 1.0f);

    /* Analytic gradients. */
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i])
            nat_zero_grad(inputs[i]);
    nat_ctx *ctx;
    nat_ctx_new(&ctx, NAT_CPU);
    nat_tensor *out, *r;
    double worst = 0.0;
    if (f(ctx, inputs, user, &out) != NAT_OK || nat_ctx_empty(ctx, &r, NAT_F32, out->ndim, out->shape) != NAT_OK ||
        nat_tensor_copy_from(r, R, n_out) != NAT_OK || nat_backward_from(ctx, out, r) != NAT_OK) {
        worst = -1.0;
    }
    nat_ctx_free(ctx);

    for (int i = 0; i < n_inputs && worst >= 0; i++) {
        nat_tensor *x = inputs[i];
        if (!x || !x->requires_grad)
            continue;
        int64_t n = nat_tensor_numel(x);
        float *xv = nat_tensor_f32(x); /* inputs are contiguous persistent tensors */
        const float *g = x->grad ? nat_tensor_f32(x->grad) : NULL;
        for (int64_t j = 0; j < n; j++) {
            float keep = xv[j];
            double lp, lm;
            xv[j] = keep + (float)eps;
            int a = eval_loss(f, user, inputs, R, &n_out, &lp);
            xv[j] = keep - (float)eps;
            int b = eval_loss(f, user, inputs, R, &n_out, &lm);
            xv[j] = keep;
            if (a || b) {
                worst = -1.0;
                break;
            }
            /* The step actually taken, in float, divides the difference. */
            double h = (double)(keep + (float)eps) - (double)(keep - (float)eps);
            double num = (lp - lm) / h;
            double ana = g ? g[j] : 0.0;
            double e = fabs(ana - num) / fmax(1.0, fabs(num));
            if (!(e <= worst))
                worst = isnan(e) ? INFINITY : e;
        }
    }
    free(R);
    return worst;
}

void th_gradcheck(const char *what, th_fn f, void *user, int n_inputs, nat_tensor **inputs, double eps, double tol)
{
    double e = th_gradcheck_err(f, user, n_inputs, inputs, eps, 12345);
    ck_assert_msg(e >= 0, "%s: gradient check could not run: %s", what, nat_error_message());
    ck_assert_msg(e <= tol, "%s: gradient check error %.3g > tolerance %.3g", what, e, tol);
}

/* Check reads CK_DEFAULT_TIMEOUT when a test case is created, before main's first line could set it:
 * this runs at load time so a suite started by hand gets the same 120 s per case as under ctest
 * (tests/CMakeLists.txt), not Check's 4 s, which sanitizer and training cases exceed. An explicit
 * setting in the environment wins. */
__attribute__((constructor)) static void th_default_timeout(void) { setenv("CK_DEFAULT_TIMEOUT", "120", 0); }

static int th_skipped; /* cases left out by th_skip_case (main's process: Check forks only the cases) */

void th_skip_case(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("SKIPPED %s: ", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    th_skipped++;
}

bool th_need_fashion_mnist(const char *name, const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(p, R_OK) == 0)
        return true;
    th_skip_case(name, "Fashion-MNIST not found: %s is not readable (install Debian's dataset-fashion-mnist)", p);
    return false;
}

int th_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return 1;
    if (th_skipped)
        printf("%d case(s) skipped: reported as skipped, not passed\n", th_skipped);
    return th_skipped ? 77 : 0;
}

nat_model_desc th_tiny_nat_desc(void)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "small");
    d.in_chans = 1, d.num_classes = 3, d.img_size = 8, d.embed_dim = 8, d.kernel_size = 3, d.mlp_ratio = 2;
    d.num_levels = 1, d.patch_stride = 2, d.depths[0] = 1, d.heads[0] = 1;
    return d;
}

int th_run_cases(const char *suite, const th_case *cases, size_t n, double timeout)
{
    Suite *s = suite_create(suite);
    for (size_t i = 0; i < n; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, timeout);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}

float th_backward_random_projection(nat_ctx *ctx, nat_tensor *y, nat_device dev, uint64_t seed)
{
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    nat_tensor *rh = th_randn(&rng, y->ndim, y->shape, 1.0f, false), *r, *prod, *loss, *lh;
    TH_OK(nat_tensor_to(ctx, rh, dev, &r));
    TH_OK(nat_mul(ctx, y, r, &prod));
    TH_OK(nat_sum(ctx, prod, &loss));
    TH_OK(nat_tensor_to(NULL, loss, NAT_CPU, &lh)); /* persistent: ctx may run on another device */
    const float value = nat_tensor_f32(lh)[0];
    TH_OK(nat_backward(ctx, loss));
    nat_tensor_free(lh);
    nat_tensor_free(rh);
    return value;
}
