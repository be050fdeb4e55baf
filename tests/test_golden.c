/* tests/test_golden.c — the NAT classifier against PyTorch: tests/data/nat_golden.safetensors holds a small
 * DiNAT-style network's parameters, an input batch, labels, and the logits, label-smoothed cross-entropy
 * and every parameter gradient PyTorch computed in float64 (tests/golden/make_nat_golden.py; see
 * tests/golden/README.md). This suite builds the network the file's metadata describes with the C model
 * API, loads the parameters (the file's parameter names must be exactly the model's), runs forward, loss
 * and backward with nat's ops and compares logits, loss and every gradient within 1e-4 of each expected
 * tensor's max-abs. Also: inference without a tape, two accumulated micro-batches equal the batch, a
 * checkpoint round trip, and strict loading's errors.
 *
 * The file is found through NAT_TEST_DATA (ctest sets it to tests/data), else next to this source.
 * Set NAT_GOLDEN_SAVE=<path> to keep the checkpoint the round-trip case writes (for
 * tests/golden/check_nat_checkpoint.py). No Python is needed to run it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nat/model.h"
#include "nat/safetensors.h"
#include "support/harness.h"

#define GOLDEN_TOL 1e-4

/* Tensors in the file that are data, not parameters or their gradients. */
static const char *const DATA_NAMES[] = {"input", "labels", "logits", "loss"};
#define N_DATA_NAMES ((int)(sizeof DATA_NAMES / sizeof *DATA_NAMES))

/* The golden files, each a case of make_nat_golden.py: kernel 3 with dilation 2 on odd maps, padded
 * levels and layer scale; kernel 7 with DiNAT's dilations 8 and 4 (L mod d != 0). Every case below runs
 * on each (the loop index _i). */
static const char *const GOLDEN_FILES[] = {"nat_golden.safetensors", "nat_golden_k7_dilated.safetensors"};
#define N_GOLDEN ((int)(sizeof GOLDEN_FILES / sizeof *GOLDEN_FILES))

static const char *golden_path(int which)
{
    static char p[1024];
    const char *dir = getenv("NAT_TEST_DATA");
    if (dir && *dir) {
        snprintf(p, sizeof p, "%s/%s", dir, GOLDEN_FILES[which]);
    } else { /* tests/data next to this source file (CMake compiles it by absolute path) */
        const char *slash = strrchr(__FILE__, '/');
        int len = slash ? (int)(slash - __FILE__) + 1 : 0;
        snprintf(p, sizeof p, "%.*sdata/%s", len, __FILE__, GOLDEN_FILES[which]);
    }
    return p;
}

/* ---- the golden file and the network it describes ---- */

typedef struct golden {
    nat_st_file *f;
    nat_model *m;
    nat_tensor *x;   /* input [B, in_chans, H, W] */
    int32_t *labels; /* [B] */
    int batch, classes;
    float smoothing;
} golden;

static const char *meta(const nat_st_file *f, const char *key)
{
    const char *v = nat_st_metadata(f, key);
    ck_assert_msg(v != NULL, "%s: metadata '%s' missing", nat_st_path(f), key);
    return v;
}

/* Parses "a,b,c" into at most cap ints; returns the count. Fails the test on anything else. */
static int parse_ints(const char *key, const char *s, int *out, int cap)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        ck_assert_msg(end != p && n < cap, "metadata %s: bad list '%s'", key, s);
        out[n++] = (int)v;
        if (*end == '\0')
            return n;
        ck_assert_msg(*end == ',', "metadata %s: bad list '%s'", key, s);
        p = end + 1;
    }
}

static int meta_int(const nat_st_file *f, const char *key)
{
    int v;
    parse_ints(key, meta(f, key), &v, 1);
    return v;
}

static float meta_float(const nat_st_file *f, const char *key)
{
    const char *s = meta(f, key);
    char *end;
    float v = strtof(s, &end);
    ck_assert_msg(end != s && *end == '\0', "metadata %s: bad number '%s'", key, s);
    return v;
}

/* The model description from the file's metadata (make_nat_golden.py writes it). */
static nat_model_desc golden_desc(const nat_st_file *f)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "golden");
    d.in_chans = meta_int(f, "in_chans");
    d.num_classes = meta_int(f, "num_classes");
    int hw[2];
    ck_assert_int_eq(parse_ints("input_size", meta(f, "input_size"), hw, 2), 2);
    d.img_size = hw[0];
    d.embed_dim = meta_int(f, "embed_dim");
    /* The number of levels is the length of depths, as in PyTorch's NAT. */
    d.num_levels = parse_ints("depths", meta(f, "depths"), d.depths, NAT_MODEL_LEVELS);
    ck_assert_int_ge(d.num_levels, 1);
    ck_assert_int_eq(parse_ints("num_heads", meta(f, "num_heads"), d.heads, NAT_MODEL_LEVELS), d.num_levels);
    d.kernel_size = meta_int(f, "kernel_size");
    /* "1,2;1,2;1,2;1": one comma list per level */
    char dil[512];
    snprintf(dil, sizeof dil, "%s", meta(f, "dilations"));
    char *save = NULL, *tok = strtok_r(dil, ";", &save);
    for (int i = 0; i < d.num_levels; i++) {
        ck_assert_msg(tok != NULL, "metadata dilations: fewer than %d levels", d.num_levels);
        ck_assert_int_eq(parse_ints("dilations", tok, d.dilations[i], NAT_MODEL_MAX_DEPTH), d.depths[i]);
        tok = strtok_r(NULL, ";", &save);
    }
    ck_assert_msg(tok == NULL, "metadata dilations: more than %d levels", d.num_levels);
    d.mlp_ratio = meta_float(f, "mlp_ratio");
    d.layer_scale = meta_float(f, "layer_scale");
    ck_assert_msg(meta_float(f, "drop_path_rate") == 0.0f, "the golden step has no stochastic depth");
    ck_assert_msg(meta_float(f, "layernorm_eps") == 1e-5f, "nat's LayerNorm eps is 1e-5");
    d.drop_path_rate = 0;
    d.drop = 0;
    d.attn_drop = 0;
    d.qkv_bias = true;
    d.qk_scale = 0;
    return d;
}

/* Reads tensor `name` as floats after checking its shape is `want`'s. The caller frees. */
static float *read_expected(nat_st_file *f, const char *name, const nat_tensor *want)
{
    int i = nat_st_find(f, name);
    ck_assert_msg(i >= 0, "%s: no tensor '%s'", nat_st_path(f), name);
    int ndim;
    int64_t shape[NAT_MAX_DIMS];
    TH_OK(nat_st_info(f, i, NULL, &ndim, shape));
    char a[96], b[96];
    nat_dims_str(ndim, shape, a, sizeof a);
    nat_shape_str(want, b, sizeof b);
    ck_assert_msg(ndim == want->ndim && !memcmp(shape, want->shape, (size_t)ndim * sizeof *shape),
                  "%s: expected '%s' is %s, nat's is %s", nat_st_path(f), name, a, b);
    int64_t n = nat_tensor_numel(want);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    TH_OK(nat_st_read_f32(f, name, v, n));
    return v;
}

/* max |got - want| / max |want|: relative to the expected tensor's own scale (no floor at 1, so
 * small gradients are held to the same relative standard as large ones). */
static double rel_err(const nat_tensor *got, const float *want)
{
    int64_t n = nat_tensor_numel(got);
    float *g = malloc((size_t)(n > 0 ? n : 1) * sizeof *g);
    ck_assert_ptr_nonnull(g);
    TH_OK(nat_tensor_copy_to(got, g, n));
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - (double)want[i]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
        scale = fmax(scale, fabs((double)want[i]));
    }
    free(g);
    return scale > 0 ? diff / scale : diff;
}

/* Compares `got` with the file's `name`; returns the error (failing the test above tol). */
static double check_tensor(nat_st_file *f, const char *name, const nat_tensor *got, double tol)
{
    ck_assert_msg(got != NULL, "no tensor to compare with '%s' (a gradient never computed?)", name);
    float *want = read_expected(f, name, got);
    double e = rel_err(got, want);
    free(want);
    ck_assert_msg(e <= tol, "%s: max error %.3g of its max-abs > tolerance %.3g", name, e, tol);
    return e;
}

static bool is_data_name(const char *n)
{
    for (int i = 0; i < N_DATA_NAMES; i++)
        if (!strcmp(n, DATA_NAMES[i]))
            return true;
    return false;
}

/* The file's parameters are exactly the model's, and so are its gradients: every file tensor is a data
 * tensor, a model parameter or "grad." + a model parameter, and every parameter has both. */
static void check_names_match(nat_st_file *f, const nat_model *m)
{
    const nat_param_list *pl = nat_model_params(m);
    int n_file = nat_st_count(f), n_params = 0, n_grads = 0;
    for (int i = 0; i < n_file; i++) {
        const char *n = nat_st_name(f, i);
        if (is_data_name(n))
            continue;
        bool grad = !strncmp(n, "grad.", 5);
        ck_assert_msg(nat_param_list_find(pl, grad ? n + 5 : n) != NULL,
                      "%s: tensor '%s' has no parameter '%s' in nat's model", nat_st_path(f), n, grad ? n + 5 : n);
        grad ? n_grads++ : n_params++;
    }
    for (int i = 0; i < pl->count; i++) {
        char g[300];
        snprintf(g, sizeof g, "grad.%s", pl->items[i].name);
        ck_assert_msg(nat_st_find(f, pl->items[i].name) >= 0, "%s: nat's parameter '%s' is not in the file",
                      nat_st_path(f), pl->items[i].name);
        ck_assert_msg(nat_st_find(f, g) >= 0, "%s: no '%s'", nat_st_path(f), g);
    }
    ck_assert_int_eq(n_params, pl->count);
    ck_assert_int_eq(n_grads, pl->count);
    for (int i = 0; i < N_DATA_NAMES; i++)
        ck_assert_msg(nat_st_find(f, DATA_NAMES[i]) >= 0, "%s: no '%s'", nat_st_path(f), DATA_NAMES[i]);
}

/* Opens the file, builds the model, checks the names and loads the parameters and data. */
static void golden_open(golden *g, int which)
{
    memset(g, 0, sizeof *g);
    nat_status s = nat_st_open(&g->f, golden_path(which));
    ck_assert_msg(s == NAT_OK, "cannot open the golden file (set NAT_TEST_DATA to tests/data): %s",
                  nat_error_message());
    nat_model_desc d = golden_desc(g->f);
    TH_OK(nat_model_new(&g->m, &d));
    check_names_match(g->f, g->m);
    /* Every parameter present (checked above), shapes exact, values finite; strict is off only
     * because the file also holds the data and gradients, which check_names_match accounts for. */
    TH_OK(nat_model_read(g->m, g->f, false));

    int i = nat_st_find(g->f, "input");
    int ndim;
    int64_t shape[NAT_MAX_DIMS];
    TH_OK(nat_st_info(g->f, i, NULL, &ndim, shape));
    ck_assert_int_eq(ndim, 4);
    ck_assert_int_eq(shape[1], d.in_chans);
    int hw[2];
    parse_ints("input_size", meta(g->f, "input_size"), hw, 2);
    ck_assert_int_eq(shape[2], hw[0]);
    ck_assert_int_eq(shape[3], hw[1]);
    ck_assert_int_eq(shape[0], meta_int(g->f, "batch"));
    TH_OK(nat_tensor_new(&g->x, NAT_F32, NAT_CPU, 4, shape));
    TH_OK(nat_st_read_f32(g->f, "input", nat_tensor_f32(g->x), nat_tensor_numel(g->x)));
    g->batch = (int)shape[0];
    g->classes = d.num_classes;
    g->labels = malloc((size_t)g->batch * sizeof *g->labels);
    ck_assert_ptr_nonnull(g->labels);
    TH_OK(nat_st_read_i32(g->f, "labels", g->labels, g->batch));
    g->smoothing = meta_float(g->f, "label_smoothing");
}

static void golden_close(golden *g)
{
    nat_model_free(g->m);
    nat_tensor_free(g->x);
    free(g->labels);
    nat_st_close(g->f);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Every parameter gradient against grad.<name>; returns the largest error and its name. */
static double check_grads(golden *g, const char **worst_name)
{
    const nat_param_list *pl = nat_model_params(g->m);
    double worst = 0;
    *worst_name = "";
    for (int i = 0; i < pl->count; i++) {
        char name[300];
        snprintf(name, sizeof name, "grad.%s", pl->items[i].name);
        double e = check_tensor(g->f, name, pl->items[i].tensor->grad, GOLDEN_TOL);
        if (e >= worst) {
            worst = e;
            *worst_name = pl->items[i].name;
        }
    }
    return worst;
}

/* ---- cases ---- */

START_TEST(golden_step)
{
    golden g;
    golden_open(&g, _i);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_model_zero_grad(g.m);
    double t0 = now();
    nat_tensor *logits, *loss;
    TH_OK(nat_model_forward(g.m, ctx, g.x, true, NULL, &logits));
    TH_OK(nat_cross_entropy(ctx, logits, g.labels, g.smoothing, &loss));
    TH_OK(nat_backward(ctx, loss));
    double t1 = now();

    double e_logits = check_tensor(g.f, "logits", logits, GOLDEN_TOL);
    double e_loss = check_tensor(g.f, "loss", loss, GOLDEN_TOL);
    const char *wn;
    double e_grad = check_grads(&g, &wn);
    printf("golden_step: %d parameters (%lld values), step %.3f s; max relative error: logits %.3g, loss %.3g, "
           "gradients %.3g (%s)\n",
           nat_model_params(g.m)->count, (long long)nat_model_param_count(g.m), t1 - t0, e_logits, e_loss, e_grad,
           wn);
    nat_ctx_free(ctx);
    golden_close(&g);
}
END_TEST

/* Inference: no tape, training off, the same logits. */
START_TEST(golden_inference)
{
    golden g;
    golden_open(&g, _i);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *logits;
    TH_OK(nat_model_forward(g.m, ctx, g.x, false, NULL, &logits));
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    double e = check_tensor(g.f, "logits", logits, GOLDEN_TOL);
    printf("golden_inference: logits max relative error %.3g\n", e);
    nat_ctx_free(ctx);
    golden_close(&g);
}
END_TEST

/* The batch's mean loss is the mean of the per-sample losses, so backward of loss_b / B on each sample
 * in turn, accumulating, must give the batch's gradients. */
START_TEST(golden_micro_batches)
{
    golden g;
    golden_open(&g, _i);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_model_zero_grad(g.m);
    double total = 0;
    for (int b = 0; b < g.batch; b++) {
        nat_tensor *xb, *logits, *loss, *scaled;
        TH_OK(nat_slice(ctx, g.x, 0, b, b + 1, &xb));
        TH_OK(nat_model_forward(g.m, ctx, xb, true, NULL, &logits));
        TH_OK(nat_cross_entropy(ctx, logits, g.labels + b, g.smoothing, &loss));
        TH_OK(nat_scale(ctx, loss, 1.0f / (float)g.batch, &scaled));
        TH_OK(nat_backward(ctx, scaled));
        total += nat_tensor_f32(scaled)[0];
        nat_ctx_reset(ctx);
    }
    nat_tensor *loss;
    int64_t one = 1;
    TH_OK(nat_tensor_new(&loss, NAT_F32, NAT_CPU, 1, &one));
    nat_tensor_f32(loss)[0] = (float)total;
    double e_loss = check_tensor(g.f, "loss", loss, GOLDEN_TOL);
    const char *wn;
    double e_grad = check_grads(&g, &wn);
    printf("golden_micro_batches: %d micro-batches of 1; max relative error: loss %.3g, gradients %.3g (%s)\n",
           g.batch, e_loss, e_grad, wn);
    nat_tensor_free(loss);
    nat_ctx_free(ctx);
    golden_close(&g);
}
END_TEST

/* nat_model_save, then a model rebuilt from the checkpoint alone (nat_model_desc_read + strict
 * nat_model_read) gives bit-identical logits. */
START_TEST(golden_checkpoint_round_trip)
{
    golden g;
    golden_open(&g, _i);
    const char *keep = getenv("NAT_GOLDEN_SAVE");
    char path[256];
    snprintf(path, sizeof path, "/tmp/nat_golden_ckpt_%ld.safetensors", (long)getpid());
    const char *dst = keep && *keep ? keep : path;
    const char *keys[] = {"source"}, *values[] = {"tests/test_golden.c: the golden parameters"};
    TH_OK(nat_model_save(g.m, dst, 1, keys, values));

    nat_st_file *f;
    TH_OK(nat_st_open(&f, dst));
    ck_assert_int_eq(nat_st_count(f), nat_model_params(g.m)->count);
    nat_model_desc d;
    TH_OK(nat_model_desc_read(f, &d));
    nat_model *m2;
    TH_OK(nat_model_new(&m2, &d));
    TH_OK(nat_model_read(m2, f, true));
    nat_st_close(f);
    if (dst == path)
        unlink(path);

    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *a, *b;
    TH_OK(nat_model_forward(g.m, ctx, g.x, false, NULL, &a));
    TH_OK(nat_model_forward(m2, ctx, g.x, false, NULL, &b));
    int64_t n = nat_tensor_numel(a);
    ck_assert_int_eq(nat_tensor_numel(b), n);
    float *va = malloc((size_t)n * sizeof *va), *vb = malloc((size_t)n * sizeof *vb);
    TH_OK(nat_tensor_copy_to(a, va, n));
    TH_OK(nat_tensor_copy_to(b, vb, n));
    ck_assert_msg(!memcmp(va, vb, (size_t)n * sizeof *va), "logits differ after a checkpoint round trip");
    free(va);
    free(vb);
    nat_ctx_free(ctx);
    nat_model_free(m2);
    golden_close(&g);
}
END_TEST

/* Strict loading names what does not fit. */
START_TEST(golden_strict_errors)
{
    golden g;
    golden_open(&g, _i);
    /* the golden file also holds data and gradients: a strict load names an extra tensor */
    nat_status s = nat_model_read(g.m, g.f, true);
    ck_assert_int_eq(s, NAT_ERR_FORMAT);
    ck_assert_msg(strstr(nat_error_message(), "grad.") || strstr(nat_error_message(), "input") ||
                      strstr(nat_error_message(), "labels") || strstr(nat_error_message(), "logits") ||
                      strstr(nat_error_message(), "loss"),
                  "message '%s' names no extra tensor", nat_error_message());

    /* a checkpoint with layer scale into a model without: the gammas are extra */
    char path[256];
    snprintf(path, sizeof path, "/tmp/nat_golden_strict_%ld.safetensors", (long)getpid());
    TH_OK(nat_model_save(g.m, path, 0, NULL, NULL));
    nat_model_desc d = *nat_model_get_desc(g.m);
    d.layer_scale = 0;
    nat_model *m2;
    TH_OK(nat_model_new(&m2, &d));
    ck_assert_ptr_null(nat_param_list_find(nat_model_params(m2), "levels.0.blocks.0.gamma1"));
    s = nat_model_load(m2, path);
    unlink(path);
    ck_assert_int_eq(s, NAT_ERR_FORMAT);
    ck_assert_msg(strstr(nat_error_message(), "gamma"), "message '%s' does not name a gamma", nat_error_message());
    nat_model_free(m2);

    /* one more layer in the last level: its blocks.<depth>.* are missing from the file */
    d = *nat_model_get_desc(g.m);
    const int last = d.num_levels - 1;
    char missing[64];
    snprintf(missing, sizeof missing, "levels.%d.blocks.%d.", last, d.depths[last]);
    d.depths[last] += 1;
    TH_OK(nat_model_new(&m2, &d));
    s = nat_model_read(m2, g.f, false);
    ck_assert_int_eq(s, NAT_ERR_FORMAT);
    ck_assert_msg(strstr(nat_error_message(), missing), "message '%s' does not name the missing tensor %s*",
                  nat_error_message(), missing);
    nat_model_free(m2);

    /* a wider head: the shape error names the tensor */
    d = *nat_model_get_desc(g.m);
    d.num_classes += 1;
    TH_OK(nat_model_new(&m2, &d));
    s = nat_model_read(m2, g.f, false);
    ck_assert_int_eq(s, NAT_ERR_SHAPE);
    ck_assert_msg(strstr(nat_error_message(), "head."), "message '%s' does not name the head", nat_error_message());
    nat_model_free(m2);
    golden_close(&g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("nat_vs_pytorch");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, golden_step, 0, N_GOLDEN);
    tcase_add_loop_test(tc, golden_inference, 0, N_GOLDEN);
    tcase_add_loop_test(tc, golden_micro_batches, 0, N_GOLDEN);
    tcase_add_loop_test(tc, golden_checkpoint_round_trip, 0, N_GOLDEN);
    tcase_add_loop_test(tc, golden_strict_errors, 0, N_GOLDEN);
    suite_add_tcase(s, tc);
    return th_run_suite(s);
}
