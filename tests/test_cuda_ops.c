/* tests/test_cuda_ops.c — every core op with a CUDA path, run on the GPU and on the CPU from the same
 * random inputs, forward and backward, compared element by element (max |gpu - cpu| / max(1, max |cpu|)):
 * 1e-5 for elementwise ops, norms, losses and reductions; 1e-4 for GEMMs and convolutions (TF32 off).
 * The loss each case backpropagates is Σ out ⊙ R for a fixed random R, so every output element matters.
 * Also: device copies, dropout's mask properties, the optimizers' fused updates and gradient clipping.
 *
 * Without a CUDA build or device it prints why and exits 77 (ctest: "Skipped"), never "passed". Runs with
 * CK_NOFORK: CUDA must be initialised in the process that uses it. One case: CK_RUN_CASE=<name>. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/cuda.h"
#include "nat/natten.h"
#include "nat/optim.h"
#include "support/harness.h"

static const nat_device GPU = {NAT_DEV_CUDA, 0};

typedef nat_status (*op_fn)(nat_ctx *ctx, nat_tensor **in, const void *user, nat_tensor **out);

static float *host_values(const nat_tensor *t)
{
    nat_tensor *h;
    TH_OK(nat_tensor_to(NULL, t, NAT_CPU, &h));
    int64_t n = nat_tensor_numel(h);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    memcpy(v, nat_tensor_f32(h), (size_t)n * sizeof *v);
    nat_tensor_free(h);
    return v;
}

/* Runs f on `dev` from copies of `in` (persistent, requires_grad as flagged); loss = Σ out ⊙ R. Returns
 * the output values, the loss and each input's gradient (NULL when it has none), all on the host. */
static void run_on(nat_device dev, op_fn f, const void *user, int n_in, nat_tensor **in, const bool *grad, uint64_t seed,
                   float **out_v, int64_t *out_n, float *loss_v, float **grads)
{
    nat_tensor *x[8];
    for (int i = 0; i < n_in; i++) {
        TH_OK(nat_tensor_to(NULL, in[i], dev, &x[i]));
        nat_set_requires_grad(x[i], grad[i]);
    }
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, dev));
    nat_tensor *y;
    TH_OK(f(ctx, x, user, &y));
    *out_v = host_values(y);
    *out_n = nat_tensor_numel(y);
    *loss_v = th_backward_random_projection(ctx, y, dev, seed);
    for (int i = 0; i < n_in; i++)
        grads[i] = x[i]->grad ? host_values(x[i]->grad) : NULL;
    nat_ctx_free(ctx);
    for (int i = 0; i < n_in; i++)
        nat_tensor_free(x[i]);
}

/* The comparison every case makes. */
static void compare(const char *what, op_fn f, const void *user, int n_in, nat_tensor **in, const bool *grad, double tol)
{
    float *yc, *yg, lc, lg, *gc[8], *gg[8];
    int64_t nc, ng;
    run_on(NAT_CPU, f, user, n_in, in, grad, 99, &yc, &nc, &lc, gc);
    run_on(GPU, f, user, n_in, in, grad, 99, &yg, &ng, &lg, gg);
    ck_assert_int_eq(nc, ng);
    char msg[160];
    snprintf(msg, sizeof msg, "%s: forward", what);
    th_assert_close_f(yg, yc, nc, tol, msg);
    snprintf(msg, sizeof msg, "%s: loss", what);
    th_assert_close_f(&lg, &lc, 1, tol, msg);
    for (int i = 0; i < n_in; i++) {
        ck_assert_msg((gc[i] == NULL) == (gg[i] == NULL), "%s: input %d has a gradient on one device only", what, i);
        if (gc[i]) {
            snprintf(msg, sizeof msg, "%s: gradient of input %d", what, i);
            th_assert_close_f(gg[i], gc[i], nat_tensor_numel(in[i]), tol, msg);
        }
        free(gc[i]);
        free(gg[i]);
    }
    free(yc);
    free(yg);
}

static nat_tensor *rnd(nat_rng *r, int nd, const int64_t *shape)
{
    return th_randn(r, nd, shape, 1.0f, false);
}

static void free_all(int n, nat_tensor **t)
{
    for (int i = 0; i < n; i++)
        nat_tensor_free(t[i]);
}

/* ---- op wrappers ---- */

static nat_status f_matmul(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_matmul(c, x[0], x[1], o); }
static nat_status f_linear(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_linear(c, x[0], x[1], x[2], o); }
static nat_status f_add(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_add(c, x[0], x[1], o); }
static nat_status f_sub(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_sub(c, x[0], x[1], o); }
static nat_status f_mul(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_mul(c, x[0], x[1], o); }
static nat_status f_scale(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_scale(c, x[0], -1.75f, o); }
static nat_status f_bias(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { return nat_bias_add(c, x[0], x[1], *(const int *)u, o); }
static nat_status f_gelu(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_gelu(c, x[0], o); }
static nat_status f_ln(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_layernorm(c, x[0], x[1], x[2], 1e-5f, o); }
static nat_status f_ln_plain(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_layernorm(c, x[0], NULL, NULL, 1e-5f, o); }
static nat_status f_softmax(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_softmax(c, x[0], o); }
static nat_status f_pool(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { return nat_global_avg_pool(c, x[0], *(const int *)u, o); }
static nat_status f_sum(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_sum(c, x[0], o); }
static nat_status f_mean(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_mean(c, x[0], o); }
static nat_status f_ce_soft(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o) { (void)u; return nat_cross_entropy_soft(c, x[0], x[1], o); }

typedef struct conv_args {
    int sh, sw, ph, pw;
    bool bias;
} conv_args;

static nat_status f_conv(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    const conv_args *a = u;
    return nat_conv2d(c, x[0], x[1], a->bias ? x[2] : NULL, a->sh, a->sw, a->ph, a->pw, o);
}

typedef struct ce_args {
    const int32_t *labels;
    float smoothing;
} ce_args;

static nat_status f_ce(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    const ce_args *a = u;
    return nat_cross_entropy(c, x[0], a->labels, a->smoothing, o);
}

/* permute → pad → slice → reshape (a copy: the slice is strided) → contiguous: every shape op and every
 * backward scatter in one chain. */
static nat_status f_shape_chain(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    (void)u;
    nat_tensor *p, *q, *s, *r;
    const int perm[3] = {2, 0, 1};
    const int64_t before[3] = {1, 0, 2}, after[3] = {0, 3, 1}, shape[2] = {-1, 4};
    NAT_TRY(nat_permute(c, x[0], perm, &p));
    NAT_TRY(nat_pad(c, p, before, after, 0.5f, &q));
    NAT_TRY(nat_slice(c, q, 2, 1, 5, &s));
    NAT_TRY(nat_reshape(c, s, 2, shape, &r));
    return nat_contiguous(c, r, o);
}

/* A transposed (strided) operand into matmul and add: the dense copies on the device. */
static nat_status f_strided(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    (void)u;
    nat_tensor *t, *m;
    const int perm[2] = {1, 0};
    NAT_TRY(nat_permute(c, x[0], perm, &t));
    NAT_TRY(nat_matmul(c, t, x[1], &m));
    return nat_add(c, m, t, o);
}

typedef struct drop_args {
    float p;
    uint64_t seed;
} drop_args;

static nat_status f_drop_path(nat_ctx *c, nat_tensor **x, const void *u, nat_tensor **o)
{
    const drop_args *a = u;
    nat_rng r;
    nat_rng_seed(&r, a->seed);
    return nat_drop_path(c, x[0], a->p, true, &r, o);
}

/* ---- cases ---- */

START_TEST(copies)
{
    nat_rng r;
    nat_rng_seed(&r, 1);
    int64_t shape[3] = {3, 5, 7};
    nat_tensor *h = rnd(&r, 3, shape), *d, *back;
    TH_OK(nat_tensor_to(NULL, h, GPU, &d));
    ck_assert_int_eq(d->device.kind, NAT_DEV_CUDA);
    TH_OK(nat_tensor_to(NULL, d, NAT_CPU, &back));
    ck_assert_int_eq(memcmp(nat_tensor_f32(h), nat_tensor_f32(back), 105 * sizeof(float)), 0);
    /* A strided device view copied out equals the same view on the host. */
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, GPU));
    const int perm[3] = {2, 0, 1};
    nat_tensor *pv, *ph;
    TH_OK(nat_permute(ctx, d, perm, &pv));
    TH_OK(nat_tensor_to(NULL, pv, NAT_CPU, &ph));
    float want[105];
    TH_OK(nat_tensor_copy_to(h, want, 105)); /* row-major of h, then permuted below */
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 5; k++)
                ck_assert(nat_tensor_f32(ph)[(i * 3 + j) * 5 + k] == want[(j * 5 + k) * 7 + i]);
    /* A new CUDA tensor is zero-filled. */
    nat_tensor *z, *zh;
    TH_OK(nat_tensor_new(&z, NAT_F32, GPU, 3, shape));
    TH_OK(nat_tensor_to(NULL, z, NAT_CPU, &zh));
    for (int i = 0; i < 105; i++)
        ck_assert(nat_tensor_f32(zh)[i] == 0.0f);
    char name[128];
    TH_OK(nat_cuda_device_name(0, name, sizeof name));
    ck_assert(name[0] != '\0');
    nat_tensor *all[] = {h, d, back, ph, z, zh};
    free_all(6, all);
    nat_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_linear)
{
    nat_rng r;
    nat_rng_seed(&r, 2);
    bool g2[2] = {true, true}, g3[3] = {true, true, true};
    int64_t a2[2] = {37, 19}, b2[2] = {19, 23};
    nat_tensor *in[3] = {rnd(&r, 2, a2), rnd(&r, 2, b2), NULL};
    compare("matmul 2-D", f_matmul, NULL, 2, in, g2, 1e-4);
    free_all(2, in);
    int64_t a3[3] = {4, 9, 17}, b3[3] = {4, 17, 6};
    in[0] = rnd(&r, 3, a3), in[1] = rnd(&r, 3, b3);
    compare("matmul batched", f_matmul, NULL, 2, in, g2, 1e-4);
    free_all(2, in);
    in[0] = rnd(&r, 3, a3), in[1] = rnd(&r, 2, (int64_t[]){17, 6});
    compare("matmul shared b", f_matmul, NULL, 2, in, g2, 1e-4);
    free_all(2, in);
    int64_t x[3] = {2, 13, 33}, w[2] = {21, 33}, b[1] = {21};
    in[0] = rnd(&r, 3, x), in[1] = rnd(&r, 2, w), in[2] = rnd(&r, 1, b);
    compare("linear", f_linear, NULL, 3, in, g3, 1e-4);
    free_all(3, in);
    int64_t t2[2] = {12, 8};
    in[0] = rnd(&r, 2, t2), in[1] = rnd(&r, 2, (int64_t[]){12, 12});
    compare("strided operands", f_strided, NULL, 2, in, g2, 1e-4);
    free_all(2, in);
}
END_TEST

START_TEST(elementwise)
{
    nat_rng r;
    nat_rng_seed(&r, 3);
    bool g2[2] = {true, true};
    int64_t a[4] = {2, 3, 4, 5}, b[2] = {4, 1}, c[3] = {3, 1, 5};
    op_fn fs[3] = {f_add, f_sub, f_mul};
    const char *names[3] = {"add", "sub", "mul"};
    for (int k = 0; k < 3; k++) {
        nat_tensor *in[2] = {rnd(&r, 4, a), rnd(&r, 2, b)};
        compare(names[k], fs[k], NULL, 2, in, g2, 1e-5);
        free_all(2, in);
        nat_tensor *in2[2] = {rnd(&r, 3, c), rnd(&r, 4, a)};
        compare(names[k], fs[k], NULL, 2, in2, g2, 1e-5);
        free_all(2, in2);
    }
    nat_tensor *one[1] = {rnd(&r, 4, a)};
    bool g1[1] = {true};
    compare("scale", f_scale, NULL, 1, one, g1, 1e-5);
    compare("gelu", f_gelu, NULL, 1, one, g1, 1e-5);
    nat_tensor_free(one[0]);
    int ax1 = 1, axl = -1;
    nat_tensor *in[2] = {rnd(&r, 4, a), rnd(&r, 1, (int64_t[]){3})};
    compare("bias_add axis 1", f_bias, &ax1, 2, in, g2, 1e-5);
    free_all(2, in);
    in[0] = rnd(&r, 4, a), in[1] = rnd(&r, 1, (int64_t[]){5});
    compare("bias_add axis -1", f_bias, &axl, 2, in, g2, 1e-5);
    free_all(2, in);
}
END_TEST

START_TEST(norms)
{
    nat_rng r;
    nat_rng_seed(&r, 4);
    bool g3[3] = {true, true, true}, g1[1] = {true};
    int64_t x[3] = {3, 70, 96}, c[1] = {96};
    nat_tensor *in[3] = {rnd(&r, 3, x), rnd(&r, 1, c), rnd(&r, 1, c)};
    compare("layernorm", f_ln, NULL, 3, in, g3, 1e-5);
    compare("layernorm, no affine", f_ln_plain, NULL, 1, in, g1, 1e-5);
    compare("softmax", f_softmax, NULL, 1, in, g1, 1e-5);
    free_all(3, in);
    int64_t wide[2] = {5, 1000};
    nat_tensor *w1[1] = {th_randn(&r, 2, wide, 4.0f, false)};
    compare("softmax, 1000 wide", f_softmax, NULL, 1, w1, g1, 1e-5);
    nat_tensor_free(w1[0]);
}
END_TEST

START_TEST(conv)
{
    nat_rng r;
    nat_rng_seed(&r, 5);
    bool g3[3] = {true, true, true};
    conv_args cases[4] = {{1, 1, 1, 1, true}, {2, 2, 1, 1, true}, {1, 2, 0, 1, false}, {1, 1, 0, 0, true}};
    int64_t k[4] = {3, 3, 2, 1};
    for (int i = 0; i < 4; i++) {
        int64_t x[4] = {2, 3, 11, 9}, w[4] = {5, 3, k[i], k[i]}, b[1] = {5};
        nat_tensor *in[3] = {rnd(&r, 4, x), rnd(&r, 4, w), rnd(&r, 1, b)};
        char what[64];
        snprintf(what, sizeof what, "conv2d case %d", i);
        compare(what, f_conv, &cases[i], cases[i].bias ? 3 : 2, in, g3, 1e-4);
        free_all(3, in);
    }
}
END_TEST

START_TEST(pool_shape_reduce)
{
    nat_rng r;
    nat_rng_seed(&r, 6);
    bool g1[1] = {true};
    int first = 0, last = 1;
    int64_t x[4] = {3, 6, 5, 7};
    nat_tensor *in[1] = {rnd(&r, 4, x)};
    compare("global_avg_pool NCHW", f_pool, &first, 1, in, g1, 1e-5);
    compare("global_avg_pool NHWC", f_pool, &last, 1, in, g1, 1e-5);
    compare("sum", f_sum, NULL, 1, in, g1, 1e-5);
    compare("mean", f_mean, NULL, 1, in, g1, 1e-5);
    nat_tensor_free(in[0]);
    int64_t s[3] = {3, 4, 5};
    in[0] = rnd(&r, 3, s);
    compare("permute/pad/slice/reshape/contiguous", f_shape_chain, NULL, 1, in, g1, 1e-5);
    nat_tensor_free(in[0]);
    int64_t big[1] = {1 << 20};
    in[0] = rnd(&r, 1, big);
    compare("sum of 2^20", f_sum, NULL, 1, in, g1, 1e-5);
    nat_tensor_free(in[0]);
}
END_TEST

START_TEST(losses)
{
    nat_rng r;
    nat_rng_seed(&r, 7);
    bool g1[1] = {true}, g2[2] = {true, true};
    int64_t z[2] = {17, 10};
    int32_t labels[17];
    for (int i = 0; i < 17; i++)
        labels[i] = (int32_t)nat_rng_below(&r, 10);
    ce_args plain = {labels, 0.0f}, smooth = {labels, 0.1f};
    nat_tensor *in[2] = {th_randn(&r, 2, z, 3.0f, false), NULL};
    compare("cross_entropy", f_ce, &plain, 1, in, g1, 1e-5);
    compare("cross_entropy, smoothing 0.1", f_ce, &smooth, 1, in, g1, 1e-5);
    float t[170];
    for (int i = 0; i < 17; i++) {
        float s = 0;
        for (int c = 0; c < 10; c++)
            s += t[i * 10 + c] = nat_rng_uniform(&r);
        for (int c = 0; c < 10; c++)
            t[i * 10 + c] /= s;
    }
    in[1] = th_from(t, 2, z, false);
    compare("cross_entropy_soft", f_ce_soft, NULL, 2, in, g2, 1e-5);
    free_all(2, in);
}
END_TEST

START_TEST(dropouts)
{
    nat_rng r;
    nat_rng_seed(&r, 8);
    bool g1[1] = {true};
    int64_t x[3] = {16, 9, 8};
    nat_tensor *in[1] = {rnd(&r, 3, x)};
    drop_args dp = {0.3f, 1234};
    compare("drop_path (same factors as the CPU)", f_drop_path, &dp, 1, in, g1, 1e-5);
    nat_tensor_free(in[0]);

    /* Dropout's GPU mask differs from the CPU's by design: check its properties instead. */
    int64_t n = 1 << 16;
    nat_tensor *h = th_randn(&r, 1, &n, 1.0f, false), *d;
    for (int64_t i = 0; i < n; i++)
        nat_tensor_f32(h)[i] = 1.0f + (float)(i % 7); /* never 0 */
    TH_OK(nat_tensor_to(NULL, h, GPU, &d));
    nat_set_requires_grad(d, true);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, GPU));
    nat_rng a, b;
    nat_rng_seed(&a, 77);
    nat_rng_seed(&b, 77);
    nat_tensor *y1, *y2, *s;
    TH_OK(nat_dropout(ctx, d, 0.25f, true, &a, &y1));
    TH_OK(nat_dropout(ctx, d, 0.25f, true, &b, &y2));
    float *v1 = host_values(y1), *v2 = host_values(y2);
    ck_assert_int_eq(memcmp(v1, v2, (size_t)n * sizeof *v1), 0); /* same rng state, same mask */
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        float xi = nat_tensor_f32(h)[i];
        ck_assert(v1[i] == 0.0f || fabsf(v1[i] - xi / 0.75f) <= 1e-6f * xi);
        dropped += v1[i] == 0.0f;
    }
    double frac = (double)dropped / (double)n;
    ck_assert_msg(fabs(frac - 0.25) < 0.01, "dropped fraction %g, expected 0.25", frac);
    TH_OK(nat_sum(ctx, y1, &s));
    TH_OK(nat_backward(ctx, s));
    float *gv = host_values(d->grad);
    for (int64_t i = 0; i < n; i++)
        ck_assert(gv[i] == (v1[i] == 0.0f ? 0.0f : 1.0f / 0.75f)); /* backward regenerates the same mask */
    free(v1), free(v2), free(gv);
    nat_ctx_free(ctx);
    nat_tensor_free(h);
    nat_tensor_free(d);
}
END_TEST

/* The fused updates against core/optim.c's loops: 5 steps of each optimizer on the same gradients. */
static void optim_case(nat_optim_config cfg, float wd, const char *what)
{
    nat_rng r;
    nat_rng_seed(&r, 9);
    int64_t shape[2] = {33, 65};
    nat_tensor *p0 = rnd(&r, 2, shape), *g0 = rnd(&r, 2, shape);
    nat_tensor *pc, *pg;
    TH_OK(nat_tensor_to(NULL, p0, NAT_CPU, &pc));
    TH_OK(nat_tensor_to(NULL, p0, GPU, &pg));
    nat_set_requires_grad(pc, true);
    nat_set_requires_grad(pg, true);
    TH_OK(nat_tensor_to(NULL, g0, NAT_CPU, &pc->grad));
    TH_OK(nat_tensor_to(NULL, g0, GPU, &pg->grad));
    nat_optim *oc, *og;
    TH_OK(nat_optim_new(&oc, &cfg));
    TH_OK(nat_optim_new(&og, &cfg));
    TH_OK(nat_optim_add_group(oc, &pc, 1, wd));
    TH_OK(nat_optim_add_group(og, &pg, 1, wd));
    for (int s = 0; s < 5; s++) {
        TH_OK(nat_optim_step(oc, 1e-2f));
        TH_OK(nat_optim_step(og, 1e-2f));
    }
    float *got = host_values(pg);
    th_assert_close_f(got, nat_tensor_f32(pc), nat_tensor_numel(pc), 1e-6, what);
    float nc, ng;
    nat_tensor *lc[1] = {pc}, *lg[1] = {pg};
    TH_OK(nat_clip_grad_norm(lc, 1, 1.0f, &nc));
    TH_OK(nat_clip_grad_norm(lg, 1, 1.0f, &ng));
    th_assert_close_f(&ng, &nc, 1, 1e-6, "clip_grad_norm: norm");
    float *gg = host_values(pg->grad);
    th_assert_close_f(gg, nat_tensor_f32(pc->grad), nat_tensor_numel(pc), 1e-6, "clip_grad_norm: clipped gradients");
    free(got), free(gg);
    nat_optim_free(oc), nat_optim_free(og);
    nat_tensor_free(pc), nat_tensor_free(pg), nat_tensor_free(p0), nat_tensor_free(g0);
}

START_TEST(optimizers)
{
    optim_case(nat_optim_adamw_config(0.9f, 0.999f, 1e-8f), 0.05f, "adamw");
    optim_case(nat_optim_sgd_config(0.9f, true), 1e-4f, "sgd nesterov");
    optim_case(nat_optim_sgd_config(0.0f, false), 0.0f, "sgd plain");
}
END_TEST

int main(void)
{
    if (!nat_cuda_built()) {
        printf("SKIPPED: nat was built without CUDA; no GPU test ran\n");
        return 77;
    }
    if (nat_cuda_device_count() == 0) {
        printf("SKIPPED: no CUDA device present; no GPU test ran (%s)\n", "test_cuda_ops compares every CUDA op with the CPU");
        return 77;
    }
    char name[128] = "";
    nat_cuda_device_name(0, name, sizeof name);
    printf("test_cuda_ops on cuda:0 (%s), TF32 %s\n", name, nat_cuda_tf32(0) ? "on" : "off");
    Suite *s = suite_create("cuda_ops");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {{"copies", copies},         {"matmul_linear", matmul_linear}, {"elementwise", elementwise},
                 {"norms", norms},           {"conv", conv},                   {"pool_shape_reduce", pool_shape_reduce},
                 {"losses", losses},         {"dropouts", dropouts},           {"optimizers", optimizers}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA must not be initialised before a fork */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
