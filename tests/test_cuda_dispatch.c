/* tests/test_cuda_dispatch.c — the CUDA dispatch seen from the CPU: what a CUDA tensor meets in a build
 * or on a machine that cannot run it (a clear NAT_ERR_UNSUPPORTED naming the op and the reason, never a
 * crash or a silent CPU fallback), neighborhood attention's refusal of an unusable device, device mismatches,
 * and nat_tensor_to / nat_tensor_copy between CPU tensors. Runs everywhere; the "no usable device" cases
 * use a tensor wrapped around host memory and labelled cuda:0, which no kernel may touch, so they run only
 * where no CUDA device is present (with one, tests/test_cuda_ops.c covers the real paths). */
#include <stdio.h>
#include <string.h>

#include "nat/op.h"
#include "nat/cuda.h"
#include "nat/natten.h"
#include "nat/optim.h"
#include "support/harness.h"

static const nat_device GPU = {NAT_DEV_CUDA, 0};

/* What the library says about a CUDA device it cannot use, in this build. */
static const char *why(void) { return nat_cuda_built() ? "no CUDA device is present" : "nat was built without CUDA"; }

static float buf_a[4 * 6 * 5 * 5], buf_b[4 * 6 * 5 * 5], buf_c[64];

/* Host memory labelled cuda:0: it must be refused before any kernel could read it. */
static nat_tensor *fake_cuda(float *data, int nd, const int64_t *shape)
{
    nat_tensor *t;
    TH_OK(nat_tensor_wrap(&t, data, NAT_F32, GPU, nd, shape));
    return t;
}

START_TEST(queries)
{
    ck_assert_int_eq(nat_cuda_available(), nat_cuda_built() && nat_cuda_device_count() > 0);
    if (!nat_cuda_built())
        ck_assert_int_eq(nat_cuda_device_count(), 0);
    ck_assert(!nat_cuda_tf32(0));
}
END_TEST

START_TEST(ops_refuse_unusable_device)
{
    if (nat_cuda_available()) {
        printf("ops_refuse_unusable_device: a CUDA device is present; the real paths are in test_cuda_ops\n");
        return;
    }
    int64_t s4[4] = {4, 6, 5, 5}, s2[2] = {6, 25}, s1[1] = {6}, w4[4] = {2, 6, 3, 3};
    nat_tensor *x = fake_cuda(buf_a, 4, s4), *m = fake_cuda(buf_b, 2, s2), *b = fake_cuda(buf_c, 1, s1);
    nat_tensor *w = fake_cuda(buf_b, 4, w4);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, GPU));
    nat_tensor *y = NULL;
    int32_t labels[4] = {0, 1, 2, 3};
    const int perm[4] = {0, 2, 3, 1};
    const int64_t pad[4] = {0, 0, 1, 1}, rs[2] = {4, -1};
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_tensor *x2 = fake_cuda(buf_a, 2, (int64_t[]){4, 150});
    struct {
        const char *op;
        nat_status s;
    } calls[] = {
        {"add", nat_add(ctx, x, x, &y)},
        {"sub", nat_sub(ctx, x, b, &y)},
        {"mul", nat_mul(ctx, x, x, &y)},
        {"scale", nat_scale(ctx, x, 2.0f, &y)},
        {"bias_add", nat_bias_add(ctx, x, b, 1, &y)},
        {"gelu", nat_gelu(ctx, x, &y)},
        {"matmul", nat_matmul(ctx, m, m, &y)},
        {"linear", nat_linear(ctx, m, m, NULL, &y)},
        {"layernorm", nat_layernorm(ctx, x, NULL, NULL, 1e-5f, &y)},
        {"softmax", nat_softmax(ctx, x, &y)},
        {"conv2d", nat_conv2d(ctx, x, w, NULL, 1, 1, 1, 1, &y)},
        {"global_avg_pool", nat_global_avg_pool(ctx, x, 0, &y)},
        {"permute", nat_permute(ctx, x, perm, &y)},
        {"reshape", nat_reshape(ctx, x, 2, rs, &y)},
        {"contiguous", nat_contiguous(ctx, x, &y)},
        {"slice", nat_slice(ctx, x, 1, 0, 2, &y)},
        {"pad", nat_pad(ctx, x, pad, pad, 0.0f, &y)},
        {"dropout", nat_dropout(ctx, x, 0.5f, true, &rng, &y)},
        {"drop_path", nat_drop_path(ctx, x, 0.5f, true, &rng, &y)},
        {"cross_entropy", nat_cross_entropy(ctx, x2, labels, 0.1f, &y)},
        {"cross_entropy_soft", nat_cross_entropy_soft(ctx, x2, x2, &y)},
        {"sum", nat_sum(ctx, x, &y)},
        {"mean", nat_mean(ctx, x, &y)},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        ck_assert_msg(calls[i].s == NAT_ERR_UNSUPPORTED, "%s on cuda:0 returned %s", calls[i].op,
                      nat_status_name(calls[i].s));
    }
    /* The message of the last call, and one checked in full. */
    th_expect_error(nat_add(ctx, x, x, &y), NAT_ERR_UNSUPPORTED, "add: tensors are on cuda:0", why());
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);

    nat_tensor *t = NULL;
    th_expect_error(nat_tensor_new(&t, NAT_F32, GPU, 4, s4), NAT_ERR_UNSUPPORTED, "tensor_new", why());
    ck_assert_ptr_null(t);
    int64_t hs[1] = {6};
    nat_tensor *h;
    TH_OK(nat_tensor_new(&h, NAT_F32, NAT_CPU, 1, hs));
    th_expect_error(nat_tensor_to(NULL, h, GPU, &t), NAT_ERR_UNSUPPORTED, "tensor_to", why());
    th_expect_error(nat_tensor_copy(h, b), NAT_ERR_UNSUPPORTED, "tensor_copy", why());
    char name[64];
    ck_assert_int_eq(nat_cuda_device_name(0, name, sizeof name), NAT_ERR_UNSUPPORTED);
    ck_assert_str_eq(name, "");

    /* The optimizer refuses a parameter it could not update. */
    nat_optim *opt;
    nat_optim_config cfg = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    TH_OK(nat_optim_new(&opt, &cfg));
    nat_set_requires_grad(b, true);
    th_expect_error(nat_optim_add_group(opt, &b, 1, 0.0f), NAT_ERR_INVALID_ARG, "CUDA device",
                    "this build or machine cannot use");
    nat_optim_free(opt);

    nat_tensor_free(h);
    nat_tensor *all[] = {x, m, b, w, x2};
    for (int i = 0; i < 5; i++)
        nat_tensor_free(all[i]);
    nat_ctx_free(ctx);
}
END_TEST

/* NA on a CUDA context whose device cannot be used: refused with the reason before any tensor is read
 * (with a device, tests/test_na_cuda.c runs the real kernels). */
START_TEST(na_refuses_cuda)
{
    if (nat_cuda_available()) {
        printf("na_refuses_cuda: a CUDA device is present; the real NA paths are in test_na_cuda\n");
        return;
    }
    int64_t s5[5] = {1, 1, 5, 5, 6};
    nat_tensor *q = fake_cuda(buf_a, 5, s5);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, GPU));
    nat_na_params p = nat_na_params_make(2, 3, 1);
    nat_tensor *out = NULL, *attn = NULL;
    th_expect_error(nat_na(ctx, q, q, q, NULL, &p, &out), NAT_ERR_UNSUPPORTED, "na2d", why());
    th_expect_error(nat_na_qk(ctx, q, q, NULL, &p, &attn), NAT_ERR_UNSUPPORTED, "na_qk", why());
    th_expect_error(nat_na_av(ctx, q, q, &p, &out), NAT_ERR_UNSUPPORTED, "na_av", why());
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(attn);
    nat_tensor_free(q);
    nat_ctx_free(ctx);
}
END_TEST

/* A CUDA tensor given to a CPU context, and a CPU tensor to a CUDA one: a mismatch naming both devices. */
START_TEST(device_mismatch)
{
    int64_t s1[1] = {6};
    nat_tensor *g = fake_cuda(buf_c, 1, s1), *h;
    TH_OK(nat_tensor_new(&h, NAT_F32, NAT_CPU, 1, s1));
    nat_ctx *cpu;
    TH_OK(nat_ctx_new(&cpu, NAT_CPU));
    nat_tensor *y;
    th_expect_error(nat_add(cpu, h, g, &y), NAT_ERR_INVALID_ARG, "b is on cuda:0 but the context runs on cpu",
                    "nat_tensor_to");
    /* An op with no CUDA kernel names the device mismatch first, too. */
    th_expect_error(nat_check_f32(cpu, g, "window_partition", "x"), NAT_ERR_INVALID_ARG, "is on cuda:0", "runs on cpu");
    nat_tensor_free(g);
    nat_tensor_free(h);
    nat_ctx_free(cpu);
}
END_TEST

START_TEST(cpu_copies)
{
    nat_rng r;
    nat_rng_seed(&r, 3);
    int64_t s3[3] = {2, 3, 4};
    nat_tensor *a = th_randn(&r, 3, s3, 1.0f, true), *b;
    TH_OK(nat_tensor_to(NULL, a, NAT_CPU, &b));
    ck_assert(!b->requires_grad);
    ck_assert_int_eq(memcmp(nat_tensor_f32(a), nat_tensor_f32(b), 24 * sizeof(float)), 0);
    /* A strided source comes out in row-major order of the view. */
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const int perm[3] = {2, 1, 0};
    nat_tensor *v, *c;
    TH_OK(nat_permute(ctx, a, perm, &v));
    TH_OK(nat_tensor_to(ctx, v, NAT_CPU, &c));
    ck_assert_ptr_eq(c->ctx, ctx);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 2; k++)
                ck_assert(nat_tensor_f32(c)[(i * 3 + j) * 2 + k] == nat_tensor_f32(a)[(k * 3 + j) * 4 + i]);
    th_expect_error(nat_tensor_copy(b, v), NAT_ERR_SHAPE, "tensor_copy: source f32 [4, 3, 2]",
                    "destination f32 [2, 3, 4]");
    th_expect_error(nat_tensor_to(ctx, a, GPU, &c), nat_cuda_available() ? NAT_ERR_INVALID_ARG : NAT_ERR_UNSUPPORTED,
                    "tensor_to", NULL);
    nat_tensor_free(a);
    nat_tensor_free(b);
    nat_ctx_free(ctx);
}
END_TEST

int main(void)
{
    printf("CUDA built: %s; devices: %d\n", nat_cuda_built() ? "yes" : "no", nat_cuda_device_count());
    Suite *s = suite_create("cuda_dispatch");
    TCase *tc = tcase_create("dispatch");
    tcase_add_test(tc, queries);
    tcase_add_test(tc, ops_refuse_unusable_device);
    tcase_add_test(tc, na_refuses_cuda);
    tcase_add_test(tc, device_mismatch);
    tcase_add_test(tc, cpu_copies);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* a CUDA runtime may be initialised by the queries */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
