/* tests/test_window_attention.c — Swin's (shifted-)window attention (layers/window_attention.c) and the
 * NAT skeleton with it (nat_model_desc.attention = NAT_ATTN_WINDOW):
 *  - the module against a double-precision reference written in source coordinates, without the
 *    partition/roll machinery: a token attends to the tokens of its window in the rolled map that were
 *    also within ws of it, per axis, in the unrolled map (the same set Swin's region mask leaves; true
 *    whenever a shift is used, since Swin shifts only maps larger than the window, so Hp >= 2·ws);
 *  - the shift mask on tiny maps against that criterion and against a hand-written 4x4 case;
 *  - partition / reverse as exact inverses, and the roll direction (torch.roll by -shift);
 *  - finite-difference gradients of the input and every parameter, with and without shift and padding;
 *  - the model: parameter names and counts, forward + backward, checkpoint round trip, errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h> /* omp_set_num_threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nat/layers.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "support/harness.h"

static void fill_randn(nat_rng *rng, nat_tensor *t, float scale)
{
    nat_rng_fill_normal(rng, nat_tensor_f32(t), (size_t)nat_tensor_numel(t), 0.0f, scale);
}

typedef struct wa_case {
    const char *name;
    int B, H, W, C, heads, window, shift;
    bool qkv_bias;
} wa_case;

static const wa_case cases[] = {
    {"8x8 w4 shift2", 2, 8, 8, 8, 2, 4, 2, true},
    {"8x8 w4 no shift", 1, 8, 8, 8, 2, 4, 0, true},
    {"7x9 w3 shift1 padded", 1, 7, 9, 6, 3, 3, 1, true},
    {"5x6 w4 shift2 padded", 2, 5, 6, 4, 1, 4, 2, false},
    {"4x6 w7: window shrinks to 4, no shift", 1, 4, 6, 4, 2, 7, 3, true},
    {"14x14 w7 shift3 (Swin's level 3)", 1, 14, 14, 8, 2, 7, 3, true},
};

/* The window and shift the module uses for an H x W map (Swin's rule). */
static void effective(const wa_case *c, int *ws, int *shift)
{
    int small = c->H < c->W ? c->H : c->W;
    *ws = c->window;
    *shift = c->shift;
    if (small <= *ws) {
        *ws = small;
        *shift = 0;
    }
}

static void make_wa(const wa_case *c, uint64_t seed, nat_window_attn_layer *m, nat_tensor **x)
{
    nat_rng rng;
    nat_rng_seed(&rng, seed);
    nat_window_attn_desc d = {c->C, c->heads, c->window, c->shift, c->qkv_bias, 0.0f, 0.0f};
    TH_OK(nat_window_attn_layer_init(m, &d, 0.0f, &rng));
    fill_randn(&rng, m->qkv.weight, 0.6f);
    if (m->qkv.bias)
        fill_randn(&rng, m->qkv.bias, 0.4f);
    fill_randn(&rng, m->table, 0.5f);
    int64_t xs[4] = {c->B, c->H, c->W, c->C};
    *x = th_randn(&rng, 4, xs, 1.0f, true);
}

/* Double-precision reference, in source coordinates. */
static void ref_module(const wa_case *c, const nat_window_attn_layer *m, const nat_tensor *x, double *y)
{
    int ws, shift;
    effective(c, &ws, &shift);
    const int64_t C = c->C, hd = C / c->heads, Hp = (c->H + ws - 1) / ws * ws, Wp = (c->W + ws - 1) / ws * ws;
    const int tw = 2 * c->window - 1;
    const float *X = nat_tensor_f32(x), *Wq = nat_tensor_f32(m->qkv.weight), *T = nat_tensor_f32(m->table),
                *Wp_ = nat_tensor_f32(m->proj.weight), *bp = nat_tensor_f32(m->proj.bias);
    const float *bq = m->qkv.bias ? nat_tensor_f32(m->qkv.bias) : NULL;
    const double scale = 1.0 / sqrt((double)hd);
    double *qkv = malloc(sizeof *qkv * (size_t)(Hp * Wp * 3 * C)), *o = malloc(sizeof *o * (size_t)C),
           *lg = malloc(sizeof *lg * (size_t)(Hp * Wp));
    for (int b = 0; b < c->B; b++) {
        for (int64_t p = 0; p < Hp * Wp; p++) { /* padded tokens are zeros before qkv */
            int64_t ys = p / Wp, xs = p % Wp;
            for (int64_t j = 0; j < 3 * C; j++) {
                double acc = bq ? bq[j] : 0.0;
                if (ys < c->H && xs < c->W)
                    for (int64_t k = 0; k < C; k++)
                        acc += (double)X[((b * c->H + ys) * c->W + xs) * C + k] * Wq[j * C + k];
                qkv[p * 3 * C + j] = acc;
            }
        }
        for (int64_t ys = 0; ys < c->H; ys++)
            for (int64_t xs = 0; xs < c->W; xs++) {
                const int64_t yr = (ys - shift + Hp) % Hp, xr = (xs - shift + Wp) % Wp, qp = ys * Wp + xs;
                for (int h = 0; h < c->heads; h++) {
                    double mx = -1e300, sum = 0;
                    for (int64_t kp = 0; kp < Hp * Wp; kp++) {
                        int64_t ky = kp / Wp, kx = kp % Wp, kyr = (ky - shift + Hp) % Hp, kxr = (kx - shift + Wp) % Wp;
                        lg[kp] = -INFINITY;
                        if (kyr / ws != yr / ws || kxr / ws != xr / ws)
                            continue; /* another window */
                        double dot = 0;
                        for (int64_t e = 0; e < hd; e++)
                            dot += qkv[qp * 3 * C + h * hd + e] * qkv[kp * 3 * C + C + h * hd + e];
                        int64_t dy = yr % ws - kyr % ws, dx = xr % ws - kxr % ws;
                        double v = scale * dot + T[((dy + c->window - 1) * tw + dx + c->window - 1) * c->heads + h];
                        if (llabs(ys - ky) >= ws || llabs(xs - kx) >= ws)
                            v += -100.0; /* not neighbours before the roll: Swin's mask */
                        lg[kp] = v;
                        mx = v > mx ? v : mx;
                    }
                    for (int64_t kp = 0; kp < Hp * Wp; kp++)
                        if (lg[kp] != -INFINITY)
                            sum += exp(lg[kp] - mx);
                    for (int64_t e = 0; e < hd; e++) {
                        double acc = 0;
                        for (int64_t kp = 0; kp < Hp * Wp; kp++)
                            if (lg[kp] != -INFINITY)
                                acc += exp(lg[kp] - mx) / sum * qkv[kp * 3 * C + 2 * C + h * hd + e];
                        o[h * hd + e] = acc;
                    }
                }
                for (int64_t j = 0; j < C; j++) {
                    double acc = bp[j];
                    for (int64_t k = 0; k < C; k++)
                        acc += o[k] * Wp_[j * C + k];
                    y[((b * c->H + ys) * c->W + xs) * C + j] = acc;
                }
            }
    }
    free(qkv);
    free(o);
    free(lg);
}

static nat_status f_wa(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_window_attn_layer_forward(ctx, u, in[0], false, NULL, out);
}

START_TEST(module_vs_reference)
{
    const wa_case *c = &cases[_i];
    nat_window_attn_layer m;
    nat_tensor *x;
    make_wa(c, 100 + (uint64_t)_i, &m, &x);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_window_attn_layer_forward(ctx, &m, x, false, NULL, &y));
    ck_assert_int_eq(nat_tensor_numel(y), nat_tensor_numel(x));
    int64_t n = nat_tensor_numel(y);
    double *want = malloc(sizeof *want * (size_t)n);
    ref_module(c, &m, x, want);
    float *got = malloc(sizeof *got * (size_t)n);
    TH_OK(nat_tensor_copy_to(y, got, n));
    th_assert_close(got, want, n, 2e-5, c->name);
    free(got);
    free(want);
    nat_ctx_free(ctx);
    nat_window_attn_layer_free(&m);
    nat_tensor_free(x);
}
END_TEST

START_TEST(module_gradcheck)
{
    omp_set_num_threads(1);
    static const wa_case small[] = {
        {"6x6 w3 shift1", 2, 6, 6, 4, 2, 3, 1, true},
        {"5x4 w3 shift1 padded", 1, 5, 4, 4, 2, 3, 1, true},
        {"3x5 w4: window 3, no shift, padded", 1, 3, 5, 2, 1, 4, 2, false},
    };
    const wa_case *c = &small[_i];
    nat_window_attn_layer m;
    nat_tensor *x;
    make_wa(c, 200 + (uint64_t)_i, &m, &x);
    nat_tensor *in[6] = {x, m.table, m.qkv.weight, m.proj.weight, m.proj.bias, m.qkv.bias};
    char what[96];
    snprintf(what, sizeof what, "window attention %s (x, table, qkv, proj)", c->name);
    th_gradcheck(what, f_wa, &m, m.qkv.bias ? 6 : 5, in, 5e-3, 4e-3);
    nat_window_attn_layer_free(&m);
    nat_tensor_free(x);
}
END_TEST

/* ---- the mask ---- */

START_TEST(shift_mask)
{
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    /* Against "were neighbours before the roll" on maps of one to four windows per axis. */
    const int maps[][4] = {{8, 8, 4, 2}, {8, 12, 4, 1}, {12, 8, 4, 3}, {6, 9, 3, 1}, {14, 14, 7, 3}, {4, 4, 2, 1}};
    for (size_t t = 0; t < sizeof maps / sizeof *maps; t++) {
        const int Hp = maps[t][0], Wp = maps[t][1], ws = maps[t][2], shift = maps[t][3], N = ws * ws;
        nat_tensor *mask;
        TH_OK(nat_window_mask(ctx, Hp, Wp, ws, shift, &mask));
        ck_assert_int_eq(mask->shape[0], (Hp / ws) * (Wp / ws));
        const float *M = nat_tensor_f32(mask);
        for (int w = 0; w < (Hp / ws) * (Wp / ws); w++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    /* source coordinates of tokens i, j of window w */
                    int wy = w / (Wp / ws), wx = w % (Wp / ws);
                    int yi = (wy * ws + i / ws + shift) % Hp, xi = (wx * ws + i % ws + shift) % Wp;
                    int yj = (wy * ws + j / ws + shift) % Hp, xj = (wx * ws + j % ws + shift) % Wp;
                    float want = abs(yi - yj) < ws && abs(xi - xj) < ws ? 0.0f : -100.0f;
                    ck_assert_msg(M[(w * N + i) * N + j] == want, "mask %dx%d ws %d shift %d: window %d, (%d, %d) is %g, want %g",
                                  Hp, Wp, ws, shift, w, i, j, (double)M[(w * N + i) * N + j], (double)want);
                }
        TH_OK(nat_window_mask(ctx, Hp, Wp, ws, 0, &mask));
        for (int64_t e = 0; e < nat_tensor_numel(mask); e++)
            ck_assert(nat_tensor_f32(mask)[e] == 0.0f);
    }
    /* 4x4, window 2, shift 1, written out: window 3 (bottom right) holds source pixels (3,3), (3,0),
     * (0,3), (0,0), four regions; window 1 (top right) holds (1,3), (1,0), (2,3), (2,0): two regions. */
    nat_tensor *mask;
    TH_OK(nat_window_mask(ctx, 4, 4, 2, 1, &mask));
    const float *M = nat_tensor_f32(mask);
    static const float w0[16] = {0};
    static const float w1[16] = {0, -100, 0, -100, -100, 0, -100, 0, 0, -100, 0, -100, -100, 0, -100, 0};
    static const float w3[16] = {0, -100, -100, -100, -100, 0, -100, -100, -100, -100, 0, -100, -100, -100, -100, 0};
    for (int e = 0; e < 16; e++) {
        ck_assert(M[0 * 16 + e] == w0[e]);
        ck_assert(M[1 * 16 + e] == w1[e]);
        ck_assert(M[3 * 16 + e] == w3[e]);
    }
    th_expect_error(nat_window_mask(ctx, 6, 8, 4, 2, &mask), NAT_ERR_INVALID_ARG, "not a multiple of window 4", NULL);
    th_expect_error(nat_window_mask(ctx, 8, 8, 4, 4, &mask), NAT_ERR_INVALID_ARG, "shift 4", NULL);
    nat_ctx_free(ctx);
}
END_TEST

/* ---- partition / reverse ---- */

static int g_ws, g_shift;
static int64_t g_H, g_W;

static nat_status f_partition(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_window_partition(ctx, in[0], g_ws, g_shift, out);
}

static nat_status f_reverse(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_window_reverse(ctx, in[0], g_H, g_W, g_ws, g_shift, out);
}

START_TEST(partition_reverse)
{
    nat_rng rng;
    nat_rng_seed(&rng, 7);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    int64_t xs[4] = {2, 5, 7, 3};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, true), *w, *back;
    TH_OK(nat_window_partition(ctx, x, 3, 1, &w)); /* padded to 6x9: 2x3 windows per image */
    ck_assert_int_eq(w->shape[0], 2 * 6);
    ck_assert_int_eq(w->shape[1], 9);
    /* roll by -1: token 0 of window 0 is source pixel (1, 1); the last token of the last window of image 0
     * is source (6 mod 6, 9 mod 9) = (0, 0) */
    const float *X = nat_tensor_f32(x), *Wd = nat_tensor_f32(w);
    for (int c = 0; c < 3; c++) {
        ck_assert(Wd[c] == X[(1 * 7 + 1) * 3 + c]);
        ck_assert(Wd[(5 * 9 + 8) * 3 + c] == X[c]);
    }
    /* source (5, 2) is padding (H = 5): rolled (4, 1) = window 3 (row 1, col 0), token 1*3+1 */
    for (int c = 0; c < 3; c++)
        ck_assert(Wd[(3 * 9 + 4) * 3 + c] == 0.0f);
    TH_OK(nat_window_reverse(ctx, w, 5, 7, 3, 1, &back));
    th_assert_close_f(nat_tensor_f32(back), X, nat_tensor_numel(x), 0.0, "reverse(partition(x))");
    nat_ctx_free(ctx);
    omp_set_num_threads(1);
    g_ws = 3, g_shift = 1, g_H = 5, g_W = 7;
    nat_tensor *in[1] = {x};
    th_gradcheck("window_partition", f_partition, NULL, 1, in, 1e-2, 1e-3);
    int64_t wsz[3] = {12, 9, 3};
    nat_tensor *wt = th_randn(&rng, 3, wsz, 1.0f, true);
    in[0] = wt;
    th_gradcheck("window_reverse", f_reverse, NULL, 1, in, 1e-2, 1e-3);
    nat_tensor_free(wt);
    nat_tensor_free(x);
}
END_TEST

/* ---- the model ---- */

static nat_model_desc tiny_window_desc(void)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "swin_tiny_test");
    d.in_chans = 1, d.num_classes = 5, d.img_size = 32, d.embed_dim = 8;
    d.depths[0] = 2, d.depths[1] = 2, d.num_levels = 2;
    d.heads[0] = 1, d.heads[1] = 2;
    d.mlp_ratio = 2.0f;
    d.drop_path_rate = 0.0f;
    d.attention = NAT_ATTN_WINDOW;
    d.window_size = 4;
    return d;
}

START_TEST(model_window_attention)
{
    nat_model_desc d = tiny_window_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    const nat_param_list *pl = nat_model_params(m);
    ck_assert_ptr_nonnull(nat_param_list_find(pl, "levels.0.blocks.1.attn.relative_position_bias_table"));
    ck_assert_ptr_null(nat_param_list_find(pl, "levels.0.blocks.1.attn.rpb"));
    const nat_param *t = nat_param_list_find(pl, "levels.1.blocks.0.attn.relative_position_bias_table");
    ck_assert_int_eq(t->tensor->shape[0], 49);
    ck_assert_int_eq(t->tensor->shape[1], 2);
    ck_assert(t->no_decay);
    nat_model_counts c;
    TH_OK(nat_model_desc_count(&d, 32, 32, &c));
    ck_assert_int_eq(c.params, nat_model_param_count(m));
    /* 8x8 map, window 4: 4 windows of 16 tokens, QK and AV 2·heads·64·16·hd */
    ck_assert_int_eq(c.macs_attn[0], 2 * 2 * 1 * 64 * 16 * 8);

    nat_rng rng;
    nat_rng_seed(&rng, 3);
    int64_t xs[4] = {2, 1, 32, 32};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, false);
    nat_ctx *ctx;
    nat_tensor *logits, *loss;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    const int32_t labels[2] = {1, 4};
    TH_OK(nat_model_forward(m, ctx, x, true, &rng, &logits));
    ck_assert_int_eq(logits->shape[1], 5);
    TH_OK(nat_cross_entropy(ctx, logits, labels, 0.0f, &loss));
    TH_OK(nat_backward(ctx, loss));
    for (int i = 0; i < pl->count; i++) {
        const nat_tensor *g = pl->items[i].tensor->grad;
        ck_assert_msg(g != NULL, "%s has no gradient", pl->items[i].name);
        double s = 0;
        for (int64_t e = 0; e < nat_tensor_numel(g); e++)
            s += fabs(nat_tensor_f32(g)[e]);
        ck_assert_msg(s > 0 && isfinite(s), "%s: gradient sum %g", pl->items[i].name, s);
    }
    float before[10];
    nat_ctx_reset(ctx);
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &logits));
    TH_OK(nat_tensor_copy_to(logits, before, 10));

    /* checkpoint round trip: the description (attention, window) and the values */
    char path[] = "/tmp/nat_wa_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    TH_OK(nat_model_save(m, path, 0, NULL, NULL));
    nat_st_file *f;
    TH_OK(nat_st_open(&f, path));
    nat_model_desc back;
    TH_OK(nat_model_desc_read(f, &back));
    ck_assert_int_eq(back.attention, NAT_ATTN_WINDOW);
    ck_assert_int_eq(back.window_size, 4);
    nat_model *m2;
    TH_OK(nat_model_new(&m2, &back));
    TH_OK(nat_model_read(m2, f, true));
    nat_st_close(f);
    unlink(path);
    float after[10];
    nat_ctx_reset(ctx);
    TH_OK(nat_model_forward(m2, ctx, x, false, NULL, &logits));
    TH_OK(nat_tensor_copy_to(logits, after, 10));
    for (int i = 0; i < 10; i++)
        ck_assert(before[i] == after[i]);
    nat_model_free(m2);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

START_TEST(errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_window_attn_layer m;
    nat_window_attn_desc d = {8, 3, 4, 2, true, 0.0f, 0.0f};
    th_expect_error(nat_window_attn_layer_init(&m, &d, 0.02f, &rng), NAT_ERR_INVALID_ARG, "3 heads do not divide dim 8", NULL);
    d.heads = 2, d.shift = 4;
    th_expect_error(nat_window_attn_layer_init(&m, &d, 0.02f, &rng), NAT_ERR_INVALID_ARG, "shift 4", NULL);
    d.shift = 2;
    TH_OK(nat_window_attn_layer_init(&m, &d, 0.02f, &rng));
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    int64_t xs[4] = {1, 8, 8, 6};
    nat_tensor *x = th_randn(&rng, 4, xs, 1.0f, false), *y;
    th_expect_error(nat_window_attn_layer_forward(ctx, &m, x, false, NULL, &y), NAT_ERR_SHAPE, "[1, 8, 8, 6]", "[B, H, W, 8]");
    nat_tensor_free(x);
    nat_ctx_free(ctx);
    nat_window_attn_layer_free(&m);
    nat_model_desc md = tiny_window_desc();
    md.attn_drop = 0.1f;
    nat_model *mm;
    th_expect_error(nat_model_new(&mm, &md), NAT_ERR_INVALID_ARG, "attn_drop", "window attention");
    md = tiny_window_desc();
    md.attention = 2;
    th_expect_error(nat_model_new(&mm, &md), NAT_ERR_INVALID_ARG, "attention 2", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("window_attention");
    struct {
        const char *name;
        const TTest *fn;
        int loop;
    } tc_list[] = {
        {"module_vs_reference", module_vs_reference, (int)(sizeof cases / sizeof *cases)},
        {"module_gradcheck", module_gradcheck, 3},
        {"shift_mask", shift_mask, 0},
        {"partition_reverse", partition_reverse, 0},
        {"model_window_attention", model_window_attention, 0},
        {"errors", errors, 0},
    };
    for (size_t i = 0; i < sizeof tc_list / sizeof *tc_list; i++) {
        TCase *tc = tcase_create(tc_list[i].name);
        if (tc_list[i].loop)
            tcase_add_loop_test(tc, tc_list[i].fn, 0, tc_list[i].loop);
        else
            tcase_add_test(tc, tc_list[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
