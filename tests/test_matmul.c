/* tests/test_matmul.c — matmul, batched matmul and linear against plain loops, gradient checks of every
 * input, shape errors, and a self-test showing the gradient checker catches a wrong backward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h> /* dnnl_version: the CPU runtime */

#include "nat/op.h"
#include "support/harness.h"

/* Reference: C[b] = A[b] @ B[b or shared], double accumulation. */
static void ref_matmul(const float *A, const float *B, double *C, int64_t batch, int64_t M, int64_t K, int64_t N,
                       int shared_b)
{
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)A[(b * M + i) * K + k] * B[(shared_b ? 0 : b * K * N) + k * N + j];
                C[(b * M + i) * N + j] = s;
            }
}

static nat_status f_matmul(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_matmul(ctx, in[0], in[1], out);
}

static nat_status f_linear(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_linear(ctx, in[0], in[1], in[2], out);
}

/* h = 1.5 x feeds a linear and h*h; out = linear(h) + h*h. `u` non-NULL: h*h is recorded after the
 * linear, so its backward runs first and the linear's backward must add to h's gradient (beta 1);
 * otherwise the linear's backward writes h's new gradient buffer (beta 0) and h*h's adds to it. */
static nat_status f_linear_shared_input(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    nat_tensor *h, *a, *hh;
    NAT_TRY(nat_scale(ctx, in[0], 1.5f, &h));
    if (u) {
        NAT_TRY(nat_linear(ctx, h, in[1], in[2], &a));
        NAT_TRY(nat_mul(ctx, h, h, &hh));
    } else {
        NAT_TRY(nat_mul(ctx, h, h, &hh));
        NAT_TRY(nat_linear(ctx, h, in[1], in[2], &a));
    }
    return nat_add(ctx, a, hh, out);
}

static const int64_t mm_shapes[][4] = {
    /* batch, M, K, N (batch 0 = plain 2-D) */
    {0, 1, 1, 1}, {0, 3, 5, 7}, {0, 17, 33, 9}, {2, 4, 3, 5}, {3, 1, 19, 2}, {1, 16, 16, 16},
};

START_TEST(matmul_reference)
{
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    for (size_t c = 0; c < sizeof mm_shapes / sizeof *mm_shapes; c++) {
        int64_t batch = mm_shapes[c][0], M = mm_shapes[c][1], K = mm_shapes[c][2], N = mm_shapes[c][3];
        for (int shared = 0; shared <= (batch ? 1 : 0); shared++) {
            int64_t as[3] = {batch, M, K}, bs[3] = {batch, K, N};
            int nd = batch ? 3 : 2;
            nat_tensor *a = th_randn(&rng, nd, batch ? as : as + 1, 1, false);
            nat_tensor *b = th_randn(&rng, (batch && !shared) ? 3 : 2, (batch && !shared) ? bs : bs + 1, 1, false);
            nat_ctx *ctx;
            nat_tensor *y;
            TH_OK(nat_ctx_new(&ctx, NAT_CPU));
            TH_OK(nat_matmul(ctx, a, b, &y));
            int64_t nb = batch ? batch : 1;
            double *want = malloc((size_t)(nb * M * N) * sizeof *want);
            ref_matmul(nat_tensor_f32(a), nat_tensor_f32(b), want, nb, M, K, N, !batch || shared);
            char what[64];
            snprintf(what, sizeof what, "matmul case %zu shared %d", c, shared);
            th_assert_close(nat_tensor_f32(y), want, nb * M * N, 1e-5, what);
            free(want);
            nat_ctx_free(ctx);
            nat_tensor_free(a);
            nat_tensor_free(b);
        }
    }
}
END_TEST

START_TEST(matmul_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 2);
    int64_t as[3] = {2, 3, 4}, bs[3] = {2, 4, 5};
    nat_tensor *in[2] = {th_randn(&rng, 3, as, 1, true), th_randn(&rng, 3, bs, 1, true)};
    th_gradcheck("batched matmul", f_matmul, NULL, 2, in, 1e-2, 2e-3);
    nat_tensor *b2 = th_randn(&rng, 2, bs + 1, 1, true);
    nat_tensor *in2[2] = {in[0], b2};
    th_gradcheck("matmul with shared b", f_matmul, NULL, 2, in2, 1e-2, 2e-3);
    nat_tensor_free(in[0]);
    nat_tensor_free(in[1]);
    nat_tensor_free(b2);
}
END_TEST

START_TEST(linear_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 3);
    const int64_t cases[][3] = {{1, 1, 1}, {5, 7, 3}, {33, 17, 19}, {6, 9, 9}};
    for (size_t c = 0; c < 4; c++) {
        int64_t M = cases[c][0], in = cases[c][1], outf = cases[c][2];
        int64_t xs[2] = {M, in}, ws[2] = {outf, in}, bs[1] = {outf};
        nat_tensor *x = th_randn(&rng, 2, xs, 1, true), *w = th_randn(&rng, 2, ws, 1, true),
                   *b = th_randn(&rng, 1, bs, 1, true);
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_linear(ctx, x, w, b, &y));
        double *want = malloc((size_t)(M * outf) * sizeof *want);
        for (int64_t i = 0; i < M; i++)
            for (int64_t o = 0; o < outf; o++) {
                double s = nat_tensor_f32(b)[o];
                for (int64_t k = 0; k < in; k++)
                    s += (double)nat_tensor_f32(x)[i * in + k] * nat_tensor_f32(w)[o * in + k];
                want[i * outf + o] = s;
            }
        th_assert_close(nat_tensor_f32(y), want, M * outf, 1e-5, "linear forward");
        free(want);
        nat_ctx_free(ctx);
        nat_tensor *ins[3] = {x, w, b};
        if (M * in < 200)
            th_gradcheck("linear", f_linear, NULL, 3, ins, 1e-2, 2e-3);
        nat_tensor *ins_nob[3] = {x, w, NULL};
        if (M * in < 200)
            th_gradcheck("linear without bias", f_linear, NULL, 3, ins_nob, 1e-2, 2e-3);
        if (in == outf) { /* an input with a second use: both orders of the two backwards */
            th_gradcheck("linear, input used after it too", f_linear_shared_input, (void *)1, 3, ins, 1e-2, 2e-3);
            th_gradcheck("linear, input used before it too", f_linear_shared_input, NULL, 3, ins, 1e-2, 2e-3);
        }
        nat_tensor_free(x);
        nat_tensor_free(w);
        nat_tensor_free(b);
    }
}
END_TEST

START_TEST(shape_errors_name_both_shapes)
{
    nat_rng rng;
    nat_rng_seed(&rng, 4);
    int64_t as[2] = {3, 4}, bs[2] = {5, 6};
    nat_tensor *a = th_randn(&rng, 2, as, 1, false), *b = th_randn(&rng, 2, bs, 1, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    ck_assert_int_eq(nat_matmul(ctx, a, b, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[3, 4]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, 6]"));
    ck_assert_int_eq(nat_linear(ctx, a, b, NULL, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[3, 4]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, 6]"));
    nat_ctx_free(ctx);
    nat_tensor_free(a);
    nat_tensor_free(b);
}
END_TEST

/* An op whose backward is deliberately wrong (doubles the gradient): the checker must flag it. */
static nat_status wrong_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    NAT_TRY(nat_grad_accumulate(ctx, node->in[0], g));
    return nat_grad_accumulate(ctx, node->in[0], g);
}
static const nat_op_def wrong_op = {"wrong_identity", wrong_backward};
static nat_status f_wrong(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    nat_tensor *y;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, in[0]->ndim, in[0]->shape));
    memcpy(nat_tensor_f32(y), nat_tensor_f32(in[0]), (size_t)nat_tensor_numel(y) * 4);
    nat_node *node;
    NAT_TRY(nat_ctx_record(ctx, &wrong_op, y, 1, in, &node));
    *out = y;
    return NAT_OK;
}

START_TEST(gradcheck_catches_wrong_backward)
{
    nat_rng rng;
    nat_rng_seed(&rng, 5);
    int64_t s[1] = {6};
    nat_tensor *x = th_randn(&rng, 1, s, 1, true);
    double e = th_gradcheck_err(f_wrong, NULL, 1, &x, 1e-2, 7);
    ck_assert_msg(e > 0.1, "a doubled gradient went unnoticed (error %.3g)", e);
    nat_tensor_free(x);
}
END_TEST

START_TEST(record_without_backward_fails)
{
    static const nat_op_def no_bwd = {"no_backward", NULL};
    nat_rng rng;
    nat_rng_seed(&rng, 6);
    int64_t s[1] = {3};
    nat_tensor *x = th_randn(&rng, 1, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y;
    nat_node *node;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_ctx_empty(ctx, &y, NAT_F32, 1, s));
    ck_assert_int_eq(nat_ctx_record(ctx, &no_bwd, y, 1, &x, &node), NAT_ERR_INTERNAL);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "no_backward"));
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}
END_TEST

/* oneDNN and nat's loops must share libgomp's pool: a oneDNN built on TBB or its own threads would run
 * a second pool beside ours (4 threads on 2 cores). */
START_TEST(onednn_shares_the_openmp_pool)
{
    ck_assert_msg(dnnl_version()->cpu_runtime == DNNL_RUNTIME_OMP, "oneDNN CPU runtime %u, not OpenMP (%u)",
                  dnnl_version()->cpu_runtime, (unsigned)DNNL_RUNTIME_OMP);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("matmul");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"matmul_reference", matmul_reference},
        {"matmul_gradcheck", matmul_gradcheck},
        {"linear_reference_and_grad", linear_reference_and_grad},
        {"shape_errors_name_both_shapes", shape_errors_name_both_shapes},
        {"gradcheck_catches_wrong_backward", gradcheck_catches_wrong_backward},
        {"record_without_backward_fails", record_without_backward_fails},
        {"onednn_shares_the_openmp_pool", onednn_shares_the_openmp_pool},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
