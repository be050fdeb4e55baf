/* tests/test_na_cuda_autocast.c — neighborhood attention under autocast (nat_ctx_precision BF16 / F16):
 * the CPU emulation on every build, the CUDA path (v3 tensor cores forward and backward, v1 on rounded
 * values) with a device.
 *
 * CPU (suite "na_autocast_cpu"):
 *  - fused nat_na and nat_na_qk -> softmax -> nat_na_av under BF16 and F16 match the F32 ops within
 *    2e-2 relative (forward and the gradient of every input) on 2-D (rpb, dilation, non-square), 1-D
 *    causal and 3-D problems;
 *  - on inputs that are already bf16 / f16 values the fused autocast op IS the f32 op: forward and
 *    gradients bitwise equal (gradients go straight through the rounding to the unrounded inputs) --
 *    except under BF16 on a CPU with AVX512_BF16, where the fused op runs the vdpbf16ps kernels
 *    (cpu/na_cpu.h), which also round the softmax weights and dS as the CUDA kernels do: there it is
 *    within 2e-2 (tests/test_na_cpu_bf16.c checks those kernels against the reference), and
 *    the f32 op's finite-difference gradient check passes at those rounded inputs (the unfused path
 *    also rounds av's other operand, the softmax weights, so it is only close);
 *  - F32 leaves the op untouched (bitwise the same as a context that never set a precision).
 * GPU (suite "na_autocast_gpu", only with a device): nat_na under BF16 / F16 on CUDA tensors against the
 * CPU emulation, forward and every gradient within 2e-2, with NAT_NA_KERNEL=v3 (tensor-core forward and
 * backward where they apply; v1 elsewhere), =v1, and measured dispatch; 2-D k 7 at head dims 32 and 64, 1-D k 13, 3-D (v1).
 * Without a device it prints "SKIPPED: no CUDA device ..." after the CPU part and exits 77.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "layers/natten/cpu/na_cpu.h" /* na_cpu_autocast_path */
#include "nat/cuda.h"
#include "nat/natten.h"
#include "support/harness.h"

#define TOL16 2e-2

typedef struct ac_case {
    const char *name;
    nat_na_params p;
    int64_t shape[6]; /* q's shape */
    int fused;
} ac_case;

static const ac_case CASES[] = {
    {"2d k5 rpb", {.ndim = 2, .kernel = {5, 5}, .dilation = {1, 1}}, {2, 2, 9, 10, 16}, 1},
    {"2d k3x5 dilated rpb", {.ndim = 2, .kernel = {3, 5}, .dilation = {2, 1}}, {1, 2, 8, 7, 32}, 1},
    {"2d k5 unfused", {.ndim = 2, .kernel = {5, 5}, .dilation = {1, 1}}, {1, 2, 7, 9, 16}, 0},
    {"1d k7 causal", {.ndim = 1, .kernel = {7}, .dilation = {2}, .causal = {1}}, {2, 1, 20, 8}, 1},
    {"3d k3 rpb", {.ndim = 3, .kernel = {3, 3, 3}, .dilation = {1, 1, 1}}, {1, 1, 4, 5, 3, 8}, 1},
};

static bool is_causal(const nat_na_params *p) { return p->causal[0] || p->causal[1] || p->causal[2]; }

static nat_status run_op(nat_ctx *ctx, nat_tensor **x, const ac_case *c, nat_tensor **out)
{
    nat_tensor *rpb = is_causal(&c->p) ? NULL : x[3];
    if (c->fused)
        return nat_na(ctx, x[0], x[1], x[2], rpb, &c->p, out);
    nat_tensor *a, *w;
    NAT_TRY(nat_na_qk(ctx, x[0], x[1], rpb, &c->p, &a));
    NAT_TRY(nat_softmax(ctx, a, &w));
    return nat_na_av(ctx, w, x[2], &c->p, out);
}

static void make_inputs(const ac_case *c, uint64_t seed, nat_tensor **in)
{
    nat_rng r;
    nat_rng_seed(&r, seed);
    const int nd = c->p.ndim + 3;
    int64_t rs[4] = {c->shape[1], 0, 0, 0};
    for (int a = 0; a < c->p.ndim; a++)
        rs[1 + a] = 2 * c->p.kernel[a] - 1;
    for (int i = 0; i < 3; i++)
        in[i] = th_randn(&r, nd, c->shape, 1.0f, false);
    in[3] = th_randn(&r, c->p.ndim + 1, rs, 0.5f, false);
}

static void round_inputs(nat_tensor **in, int f16)
{
    for (int i = 0; i < 3; i++) {
        float *x = nat_tensor_f32(in[i]);
        for (int64_t j = 0; j < nat_tensor_numel(in[i]); j++)
            x[j] = f16 ? half_round_f16(x[j]) : half_round_bf16(x[j]);
    }
}

static float *host_copy(const nat_tensor *t)
{
    nat_tensor *h;
    TH_OK(nat_tensor_to(NULL, t, NAT_CPU, &h));
    const int64_t n = nat_tensor_numel(h);
    float *v = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(v, nat_tensor_f32(h), sizeof(float) * (size_t)n);
    nat_tensor_free(h);
    return v;
}

/* The op on `dev` at precision prec (-1: never set) from copies of in; loss = sum(out * R). Returns the
 * forward values and the gradients of the inputs (host arrays, caller frees). */
static void run_at(nat_device dev, int prec, const ac_case *c, nat_tensor **in, float **y, int64_t *ny,
                   float **grads)
{
    const int n_in = is_causal(&c->p) ? 3 : 4;
    nat_tensor *x[4];
    for (int i = 0; i < n_in; i++) {
        TH_OK(nat_tensor_to(NULL, in[i], dev, &x[i]));
        nat_set_requires_grad(x[i], true);
    }
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, dev));
    if (prec >= 0)
        nat_ctx_set_precision(ctx, (nat_precision)prec);
    nat_tensor *out;
    TH_OK(run_op(ctx, x, c, &out));
    *y = host_copy(out);
    *ny = nat_tensor_numel(out);
    th_backward_random_projection(ctx, out, dev, 99);
    for (int i = 0; i < n_in; i++) {
        ck_assert_msg(x[i]->grad != NULL, "%s: input %d got no gradient", c->name, i);
        grads[i] = host_copy(x[i]->grad);
    }
    nat_ctx_free(ctx);
    for (int i = 0; i < n_in; i++)
        nat_tensor_free(x[i]);
}

/* (dev_a, prec_a) against (dev_b, prec_b): tol < 0 means bitwise. Returns the forward's error. */
static double compare(const ac_case *c, nat_tensor **in, nat_device da, int pa, nat_device db, int pb, double tol,
                    const char *what)
{
    float *ya, *yb, *ga[4], *gb[4];
    int64_t na, nb;
    run_at(da, pa, c, in, &ya, &na, ga);
    run_at(db, pb, c, in, &yb, &nb, gb);
    ck_assert_int_eq(na, nb);
    const int n_in = is_causal(&c->p) ? 3 : 4;
    const double forward_err = th_max_rel_err_f(ya, yb, na);
    char msg[160];
    for (int i = -1; i < n_in; i++) {
        const float *a = i < 0 ? ya : ga[i], *b = i < 0 ? yb : gb[i];
        const int64_t n = i < 0 ? na : nat_tensor_numel(in[i]);
        snprintf(msg, sizeof msg, "%s [%s]: %s", what, c->name, i < 0 ? "forward" : i == 3 ? "drpb" : "dq/dk/dv");
        if (tol < 0)
            ck_assert_msg(!memcmp(a, b, sizeof(float) * (size_t)n), "%s (input %d) not bitwise equal", msg, i);
        else
            th_assert_close_f(a, b, n, tol, msg);
    }
    free(ya), free(yb);
    for (int i = 0; i < n_in; i++)
        free(ga[i]), free(gb[i]);
    return forward_err;
}

static void free_inputs(nat_tensor **in)
{
    for (int i = 0; i < 4; i++)
        nat_tensor_free(in[i]);
}

START_TEST(cpu_matches_f32)
{
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++)
        for (int f16 = 0; f16 <= 1; f16++) {
            nat_tensor *in[4];
            make_inputs(&CASES[ci], 11 + ci, in);
            double e = compare(&CASES[ci], in, NAT_CPU, f16 ? NAT_PREC_F16 : NAT_PREC_BF16, NAT_CPU, NAT_PREC_F32,
                               TOL16, f16 ? "cpu f16 vs f32" : "cpu bf16 vs f32");
            /* ... and the rounding happened: an op that ignored the precision would match f32 exactly.
             * bf16 keeps 8 bits, f16 11: the forward moves by ~1e-3 and ~1e-4 of its max-abs; the
             * floors are ten times below. */
            const double floor = f16 ? 1e-5 : 1e-4;
            ck_assert_msg(e > floor, "[%s] %s autocast differs from f32 by only %.3g (floor %.3g): was it applied?",
                          CASES[ci].name, f16 ? "f16" : "bf16", e, floor);
            free_inputs(in);
        }
}
END_TEST

/* The autocast difference is the rounding, nothing else (and F32 changes nothing). */
START_TEST(cpu_rounded_inputs_exact)
{
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++)
        for (int f16 = 0; f16 <= 1 && CASES[ci].fused; f16++) {
            nat_tensor *in[4];
            make_inputs(&CASES[ci], 21 + ci, in);
            round_inputs(in, f16);
            const double tol = na_cpu_autocast_path(f16) == NA_CPU_AUTOCAST_BF16 ? TOL16 : -1;
            compare(&CASES[ci], in, NAT_CPU, f16 ? NAT_PREC_F16 : NAT_PREC_BF16, NAT_CPU, NAT_PREC_F32, tol,
                    "autocast on rounded inputs vs f32");
            compare(&CASES[ci], in, NAT_CPU, NAT_PREC_F32, NAT_CPU, -1, -1, "explicit F32 vs default");
            free_inputs(in);
        }
}
END_TEST

static nat_status gc_fn(nat_ctx *ctx, nat_tensor **x, void *user, nat_tensor **out)
{
    return run_op(ctx, x, (const ac_case *)user, out);
}

/* Finite differences of the f32 op at bf16-rounded inputs (where the autocast op's gradients are the
 * f32 op's, by the test above). */
START_TEST(cpu_gradcheck_rounded)
{
    static const ac_case small[] = { /* finite differences cost two forwards per input element */
        {"2d k3 d2 rpb", {.ndim = 2, .kernel = {3, 3}, .dilation = {1, 2}}, {1, 1, 5, 7, 4}, 1},
        {"2d k3 unfused", {.ndim = 2, .kernel = {3, 3}, .dilation = {1, 1}}, {1, 2, 4, 3, 3}, 0},
        {"1d k3 causal", {.ndim = 1, .kernel = {3}, .dilation = {2}, .causal = {1}}, {1, 2, 9, 4}, 1},
        {"3d k3 rpb", {.ndim = 3, .kernel = {3, 3, 3}, .dilation = {1, 1, 1}}, {1, 1, 3, 4, 3, 2}, 1},
    };
    for (size_t ci = 0; ci < sizeof small / sizeof *small; ci++) {
        nat_tensor *in[4];
        make_inputs(&small[ci], 31 + ci, in);
        for (int i = 0; i < 4; i++)
            nat_set_requires_grad(in[i], true);
        round_inputs(in, 0);
        char what[96];
        snprintf(what, sizeof what, "na at bf16-rounded inputs [%s]", small[ci].name);
        th_gradcheck(what, gc_fn, (void *)&small[ci], is_causal(&small[ci].p) ? 3 : 4, in, 1e-2, 3e-3);
        free_inputs(in);
    }
}
END_TEST

START_TEST(gpu_matches_cpu_emulation)
{
    const nat_device gpu = {NAT_DEV_CUDA, 0};
    const ac_case big[] = {
        {"2d 14x14 k7 D32 rpb", {.ndim = 2, .kernel = {7, 7}, .dilation = {1, 1}}, {2, 4, 14, 14, 32}, 1},
        {"2d 20x17 k7 d2 D64 rpb", {.ndim = 2, .kernel = {7, 7}, .dilation = {2, 2}}, {1, 2, 20, 17, 64}, 1},
        {"1d 200 k13 D64 rpb", {.ndim = 1, .kernel = {13}, .dilation = {1}}, {2, 2, 200, 64}, 1},
        {"2d 15x16 k5 causal D32", {.ndim = 2, .kernel = {5, 5}, .dilation = {1, 1}, .causal = {1, 0}},
         {1, 2, 15, 16, 32}, 1},
    };
    const char *vers[] = {"v3", "v1", ""};
    for (size_t vi = 0; vi < 3; vi++) {
        if (*vers[vi])
            setenv("NAT_NA_KERNEL", vers[vi], 1);
        else
            unsetenv("NAT_NA_KERNEL");
        for (int f16 = 0; f16 <= 1; f16++) {
            const int prec = f16 ? NAT_PREC_F16 : NAT_PREC_BF16;
            for (size_t ci = 0; ci < sizeof big / sizeof *big; ci++) {
                nat_tensor *in[4];
                make_inputs(&big[ci], 41 + ci, in);
                char what[64];
                snprintf(what, sizeof what, "cuda %s (%s) vs cpu emulation", f16 ? "f16" : "bf16",
                         *vers[vi] ? vers[vi] : "measured");
                compare(&big[ci], in, gpu, prec, NAT_CPU, prec, TOL16, what);
                free_inputs(in);
            }
            nat_tensor *in[4];
            make_inputs(&CASES[4], 51, in); /* 3-D: v1 on the rounded values */
            compare(&CASES[4], in, gpu, prec, NAT_CPU, prec, TOL16, "cuda 3-D autocast vs cpu emulation");
            free_inputs(in);
        }
    }
    unsetenv("NAT_NA_KERNEL");
}
END_TEST

static int run_suite(const char *name, TTest const *const *t, const char *const *names, size_t n)
{
    Suite *s = suite_create(name);
    for (size_t i = 0; i < n; i++) {
        TCase *tc = tcase_create(names[i]);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, t[i]);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA must not be initialised before a fork */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

int main(void)
{
    TTest const *const cpu[] = {cpu_matches_f32, cpu_rounded_inputs_exact, cpu_gradcheck_rounded};
    const char *const cpu_names[] = {"cpu_matches_f32", "cpu_rounded_inputs_exact", "cpu_gradcheck_rounded"};
    if (run_suite("na_autocast_cpu", cpu, cpu_names, 3))
        return EXIT_FAILURE;
    if (!nat_cuda_available()) {
        printf("SKIPPED: no CUDA device (%s); NA autocast ran only as the CPU emulation above\n",
               nat_cuda_built() ? "none present" : "nat was built without CUDA");
        return 77;
    }
    TTest const *const gpu[] = {gpu_matches_cpu_emulation};
    const char *const gpu_names[] = {"gpu_matches_cpu_emulation"};
    return run_suite("na_autocast_gpu", gpu, gpu_names, 1) ? EXIT_FAILURE : EXIT_SUCCESS;
}
