/* tests/test_model.c — the NAT / DiNAT classifier (include/nat/model.h): parameter and GMAC counts of
 * the eight variants equal the papers' (and the built models' own parameter counts), the variants'
 * configs (DiNAT dilations, drop-path schedule), output shapes at 224² (nat_mini and dinat_mini run;
 * the others by shape inference) and at small inputs (32², and 28² with one channel), init rules, a
 * finite-difference spot check of every parameter tensor's gradient through the whole network, a tiny
 * NAT learning on random data, and errors that name the bad value. */
#include <math.h>
#include <omp.h> /* omp_set_num_threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/nat/nat_internal.h" /* per-layer drop-path rates */
#include "nat/model.h"
#include "nat/optim.h"
#include "nat/safetensors.h"
#include "support/harness.h"

/* A small custom network exercising every feature: layer scale, dilation with padding, qkv bias. */
static nat_model_desc tiny_desc(void)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "tiny_test");
    d.in_chans = 3;
    d.num_classes = 5;
    d.img_size = 16;
    d.embed_dim = 8;
    const int depths[4] = {2, 1, 1, 1}, heads[4] = {1, 2, 2, 4};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    d.kernel_size = 3;
    d.dilations[0][1] = 2;
    d.mlp_ratio = 2.0f;
    d.drop_path_rate = 0.0f;
    d.layer_scale = 0.5f;
    d.seed = 7;
    return d;
}

static nat_tensor *images(nat_rng *rng, int64_t B, int64_t C, int64_t H, int64_t W)
{
    int64_t s[4] = {B, C, H, W};
    return th_randn(rng, 4, s, 1.0f, false);
}

/* ---- counts ---- */

START_TEST(variant_counts_match_the_papers)
{
    static const struct {
        const char *name;
        int64_t params;   /* exact, ours */
        int params_10k;   /* the paper's, in units of 0.01M */
        int gmacs_tenths; /* the paper's GMACs x 10 */
    } v[] = {
        {"nat_mini", 19984174, 1998, 27},    {"nat_tiny", 27901582, 2790, 43},
        {"nat_small", 50743297, 5074, 78},   {"nat_base", 89769652, 8977, 137},
        {"dinat_mini", 19984174, 1998, 27},  {"dinat_tiny", 27901582, 2790, 43},
        {"dinat_small", 50743297, 5074, 78}, {"dinat_base", 89769652, 8977, 137},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        nat_model_desc d;
        nat_model_counts c;
        TH_OK(nat_model_desc_variant(&d, v[i].name, 1000, 3));
        TH_OK(nat_model_desc_count(&d, 224, 224, &c));
        ck_assert_msg(c.params == v[i].params, "%s: %lld parameters, expected %lld", v[i].name, (long long)c.params,
                      (long long)v[i].params);
        ck_assert_msg(llround((double)c.params / 1e4) == v[i].params_10k, "%s: %.2fM parameters, paper %.2fM", v[i].name,
                      (double)c.params / 1e6, v[i].params_10k / 100.0);
        ck_assert_msg(llround((double)c.macs / 1e8) == v[i].gmacs_tenths, "%s: %.3f GMACs, paper %.1f", v[i].name,
                      (double)c.macs / 1e9, v[i].gmacs_tenths / 10.0);
        /* Dilation changes no MACs: DiNAT equals NAT. */
        int64_t sum = c.macs_tokenizer + c.macs_head, psum = c.params_tokenizer + c.params_head;
        for (int l = 0; l < NAT_MODEL_LEVELS; l++) {
            sum += c.macs_layers[l] + c.macs_down[l];
            psum += c.params_layers[l] + c.params_down[l];
            /* Shape inference: 224 -> 56, 28, 14, 7 with C·2^l channels. */
            ck_assert_int_eq(c.map_h[l], 56 >> l);
            ck_assert_int_eq(c.map_w[l], 56 >> l);
            ck_assert_int_eq(c.dims[l], d.embed_dim << l);
        }
        ck_assert(sum == c.macs && psum == c.params);
    }
    /* The parts of NAT-Mini, by hand: tokenizer 3·32·9+32 + 32·64·9+64 + 128; head 2·512 + 512·1000+1000. */
    nat_model_desc d;
    nat_model_counts c;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 1000, 3));
    TH_OK(nat_model_desc_count(&d, 224, 224, &c));
    ck_assert_int_eq(c.params_tokenizer, 19520);
    ck_assert_int_eq(c.params_head, 514024);
    ck_assert_int_eq(c.params_down[0], 64 * 128 * 9 + 256);
    ck_assert_int_eq(c.params_down[3], 0);
    /* NA op of level 0: 3 layers x 2 heads x 56² queries x 49 x (32 + 1 + 32). */
    ck_assert_int_eq(c.macs_attn[0], 3LL * 2 * 3136 * 49 * 65);
}
END_TEST

START_TEST(built_models_have_the_counted_parameters)
{
    /* (dinat_mini's built count is checked in forward_224_inference.) */
    nat_model *m;
    nat_model_counts c;
    TH_OK(nat_model_new_variant(&m, "nat_mini", 1000, 3));
    TH_OK(nat_model_desc_count(nat_model_get_desc(m), 224, 224, &c));
    ck_assert_int_eq(nat_model_param_count(m), c.params);
    ck_assert_int_eq(nat_model_param_count(m), 19984174);
    ck_assert_int_eq(nat_model_params(m)->count, 6 + 18 * 13 + 3 * 3 + 4);
    nat_model_free(m);
    /* A custom network with layer scale and without qkv bias, at another class count. */
    nat_model_desc d = tiny_desc();
    d.qkv_bias = false;
    TH_OK(nat_model_new(&m, &d));
    TH_OK(nat_model_desc_count(&d, 16, 16, &c));
    ck_assert_int_eq(nat_model_param_count(m), c.params);
    ck_assert_ptr_null(nat_param_list_find(nat_model_params(m), "levels.0.blocks.0.attn.qkv.bias"));
    ck_assert_ptr_nonnull(nat_param_list_find(nat_model_params(m), "levels.3.blocks.0.gamma2"));
    nat_model_free(m);
}
END_TEST

/* ---- configs ---- */

START_TEST(variant_configs)
{
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "dinat_mini", 1000, 3));
    /* DiNAT-Mini's published dilations. */
    static const int mini[4][6] = {{1, 8, 1}, {1, 4, 1, 4}, {1, 2, 1, 2, 1, 2}, {1, 1, 1, 1, 1}};
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < d.depths[l]; j++)
            ck_assert_msg(nat_model_desc_dilation(&d, l, j) == mini[l][j], "dinat_mini level %d layer %d: dilation %d", l,
                          j, nat_model_desc_dilation(&d, l, j));
    TH_OK(nat_model_desc_variant(&d, "dinat_tiny", 1000, 3));
    ck_assert_int_eq(d.depths[2], 18);
    for (int j = 0; j < 18; j++)
        ck_assert_int_eq(nat_model_desc_dilation(&d, 2, j), j % 2 ? 2 : 1);
    TH_OK(nat_model_desc_variant(&d, "nat_base", 1000, 3));
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < d.depths[l]; j++)
            ck_assert_int_eq(nat_model_desc_dilation(&d, l, j), 1);
    ck_assert(d.embed_dim == 128 && d.heads[3] == 32 && d.mlp_ratio == 2.0f && d.layer_scale == 1e-5f &&
              d.drop_path_rate == 0.5f);
    TH_OK(nat_model_desc_variant(&d, "dinat_small", 1000, 3));
    ck_assert(d.embed_dim == 96 && d.heads[0] == 3 && d.drop_path_rate == 0.3f && d.layer_scale == 1e-5f);

    /* Drop-path rates: torch.linspace(0, 0.2, 18) over NAT-Mini's layers (depths and rate are what
     * matter; narrow channels keep the build quick). */
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 3));
    d.embed_dim = 8;
    for (int l = 0; l < 4; l++)
        d.heads[l] = 1;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    int k = 0;
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < d.depths[l]; j++, k++) {
            float want = (float)k * (0.2f / 17.0f);
            ck_assert_msg(fabsf(m->levels[l].blocks[j].drop_path - want) < 1e-7f, "layer %d: drop path %g, expected %g", k,
                          (double)m->levels[l].blocks[j].drop_path, (double)want);
        }
    ck_assert_float_eq(m->levels[3].blocks[4].drop_path, 0.2f);
    ck_assert_float_eq(m->levels[0].blocks[0].drop_path, 0.0f);
    nat_model_free(m);
}
END_TEST

/* ---- forward shapes ---- */

/* NAT-Mini and DiNAT-Mini at 224² (their init from seed 0, one random image) against the logits PyTorch
 * computes in float64 for the same weights and input (tests/data/forward224_logits.safetensors, made by
 * tests/golden/make_forward224_ref.py from what this case writes when NAT_DUMP_FORWARD224=DIR is set). */
static const char *data_file(const char *name)
{
    static char p[1024];
    const char *dir = getenv("NAT_TEST_DATA");
    if (dir && *dir) {
        snprintf(p, sizeof p, "%s/%s", dir, name);
    } else { /* tests/data next to this source file */
        const char *slash = strrchr(__FILE__, '/');
        snprintf(p, sizeof p, "%.*sdata/%s", slash ? (int)(slash - __FILE__) + 1 : 0, __FILE__, name);
    }
    return p;
}

START_TEST(forward_224_inference)
{
    const char *names[2] = {"nat_mini", "dinat_mini"};
    nat_rng rng;
    nat_rng_seed(&rng, 11);
    nat_tensor *x = images(&rng, 1, 3, 224, 224);
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    const char *dump = getenv("NAT_DUMP_FORWARD224");
    char path[1024];
    if (dump) {
        nat_st_writer *w;
        TH_OK(nat_st_writer_new(&w));
        TH_OK(nat_st_writer_add(w, "input", x));
        snprintf(path, sizeof path, "%s/input.safetensors", dump);
        TH_OK(nat_st_writer_save(w, path));
        nat_st_writer_free(w);
    }
    nat_st_file *ref = NULL;
    if (!dump)
        TH_OK(nat_st_open(&ref, data_file("forward224_logits.safetensors")));
    for (int i = 0; i < 2; i++) {
        nat_model *m;
        TH_OK(nat_model_new_variant(&m, names[i], 1000, 3));
        ck_assert_int_eq(nat_model_param_count(m), 19984174);
        if (dump) {
            snprintf(path, sizeof path, "%s/%s.safetensors", dump, names[i]);
            TH_OK(nat_model_save(m, path, 0, NULL, NULL));
        }
        nat_tensor *y;
        TH_OK(nat_model_forward(m, ctx, x, false, NULL, &y));
        ck_assert_int_eq(y->ndim, 2);
        ck_assert(y->shape[0] == 1 && y->shape[1] == 1000);
        ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
        const float *v = nat_tensor_f32(y);
        if (ref) {
            float want[1000];
            char name[64];
            snprintf(name, sizeof name, "%s.logits", names[i]);
            TH_OK(nat_st_read_f32(ref, name, want, 1000));
            /* relative to the logits' max-abs (about 0.35 with NAT's init), not to 1 */
            double err = 0, scale = 0;
            for (int j = 0; j < 1000; j++) {
                err = fmax(err, fabs((double)v[j] - want[j]));
                scale = fmax(scale, fabs(want[j]));
            }
            fprintf(stderr, "forward_224_inference: %s logits within %.3g of PyTorch's (max-abs %.3g)\n", names[i],
                    err / scale, scale);
            ck_assert_msg(err <= 1e-4 * scale, "%s: logits off PyTorch's float64 ones by %.3g of their max-abs %.3g",
                          names[i], err / scale, scale);
        }
        nat_ctx_reset(ctx);
        nat_model_free(m);
    }
    nat_st_close(ref);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}
END_TEST

/* Small inputs with gradients: every parameter gets a finite, non-zero gradient. */
START_TEST(forward_backward_small_inputs)
{
    static const struct {
        int res, in_chans, classes;
        int maps[4];
    } cases[] = {{32, 3, 10, {8, 4, 2, 1}}, {28, 1, 10, {7, 4, 2, 1}}};
    nat_rng rng;
    nat_rng_seed(&rng, 12);
    for (int i = 0; i < 2; i++) {
        nat_model_desc d;
        nat_model_counts c;
        TH_OK(nat_model_desc_variant(&d, "nat_mini", cases[i].classes, cases[i].in_chans));
        d.img_size = cases[i].res;
        d.drop_path_rate = 0.0f; /* a dropped branch would leave its parameters without gradient */
        TH_OK(nat_model_desc_count(&d, cases[i].res, cases[i].res, &c));
        for (int l = 0; l < 4; l++)
            ck_assert_int_eq(c.map_h[l], cases[i].maps[l]);
        nat_model *m;
        TH_OK(nat_model_new(&m, &d));
        nat_tensor *x = images(&rng, 2, cases[i].in_chans, cases[i].res, cases[i].res), *y, *loss;
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_model_forward(m, ctx, x, true, &rng, &y));
        ck_assert(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == cases[i].classes);
        int32_t labels[2] = {1, 7};
        TH_OK(nat_cross_entropy(ctx, y, labels, 0.1f, &loss));
        TH_OK(nat_backward(ctx, loss));
        const nat_param_list *pl = nat_model_params(m);
        for (int p = 0; p < pl->count; p++) {
            const nat_tensor *g = pl->items[p].tensor->grad;
            ck_assert_msg(g, "%dx%d: %s got no gradient", cases[i].res, cases[i].res, pl->items[p].name);
            const float *gv = nat_tensor_f32(g);
            int64_t n = nat_tensor_numel(g), nonzero = 0;
            int64_t bad = 0;
            for (int64_t j = 0; j < n; j++) {
                bad += !isfinite(gv[j]);
                nonzero += gv[j] != 0.0f;
            }
            ck_assert_msg(!bad, "%s: %ld gradient values are not finite", pl->items[p].name, (long)bad);
            ck_assert_msg(nonzero > 0, "%dx%d: gradient of %s is all zero", cases[i].res, cases[i].res,
                          pl->items[p].name);
        }
        nat_ctx_free(ctx);
        nat_tensor_free(x);
        nat_model_free(m);
    }
}
END_TEST

/* train.precision = bf16 on the CPU: the GEMMs, convolutions and NA of a NAT-Mini forward and backward
 * run on bf16 operands with f32 accumulation. The logits and the gradients must really differ from f32
 * (more than 1e-5 relative: rounding happened) and stay close (within 1e-2 relative to their size). */
START_TEST(bf16_autocast_rounds_and_stays_close)
{
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 1));
    d.img_size = 28;
    d.drop_path_rate = 0.0f;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 31);
    nat_tensor *x = images(&rng, 2, 1, 28, 28);
    float *logits[2], *grads[2];
    int64_t nl = 0, ng = 0;
    const nat_param_list *pl = nat_model_params(m);
    const nat_tensor *w = NULL; /* a GEMM's weight: the first level's qkv */
    for (int p = 0; p < pl->count; p++)
        if (strstr(pl->items[p].name, "levels.0.blocks.0.attn.qkv.weight"))
            w = pl->items[p].tensor;
    ck_assert_msg(w != NULL, "no levels.0.blocks.0.attn.qkv.weight among the parameters");
    for (int run = 0; run < 2; run++) {
        nat_ctx *ctx;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        nat_ctx_set_precision(ctx, run ? NAT_PREC_BF16 : NAT_PREC_F32);
        for (int p = 0; p < pl->count; p++)
            nat_zero_grad(pl->items[p].tensor);
        nat_tensor *y, *loss;
        TH_OK(nat_model_forward(m, ctx, x, true, &rng, &y));
        int32_t labels[2] = {3, 8};
        TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
        TH_OK(nat_backward(ctx, loss));
        nl = nat_tensor_numel(y), ng = nat_tensor_numel(w->grad);
        logits[run] = malloc((size_t)nl * sizeof(float));
        grads[run] = malloc((size_t)ng * sizeof(float));
        memcpy(logits[run], nat_tensor_f32(y), (size_t)nl * sizeof(float));
        memcpy(grads[run], nat_tensor_f32(w->grad), (size_t)ng * sizeof(float));
        nat_ctx_free(ctx);
    }
    double dl = th_max_rel_err_f(logits[1], logits[0], nl), dg = 0, gmax = 0;
    for (int64_t i = 0; i < ng; i++) {
        gmax = fmax(gmax, fabs(grads[0][i]));
        dg = fmax(dg, fabs((double)grads[1][i] - grads[0][i]));
    }
    dg /= gmax > 0 ? gmax : 1;
    printf("bf16 autocast against f32 (NAT-Mini, 28x28): logits %.3g, qkv weight gradient %.3g (relative)\n", dl, dg);
    ck_assert_msg(dl > 1e-5 && dl < 1e-2, "logits: bf16 against f32 %.3g, expected in (1e-5, 1e-2)", dl);
    ck_assert_msg(dg > 1e-5 && dg < 1e-2, "qkv gradient: bf16 against f32 %.3g, expected in (1e-5, 1e-2)", dg);
    for (int r = 0; r < 2; r++)
        free(logits[r]), free(grads[r]);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

/* An inference forward (gradients off) gives each block's temporaries back as soon as the block is done:
 * the same logits, bit for bit, as a forward that keeps everything, at a fraction of the step memory;
 * and the release is refused when a tape may need the tensors. */
START_TEST(inference_releases_block_temporaries)
{
    nat_rng rng;
    nat_rng_seed(&rng, 21);
    nat_model_desc d;
    TH_OK(nat_model_desc_variant(&d, "nat_mini", 10, 3));
    d.drop_path_rate = 0.0f;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_tensor *x = images(&rng, 2, 3, 64, 64), *keep_all, *released;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    /* Gradients on: nothing released (every activation may be saved). */
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &keep_all));
    const size_t held_all = nat_mem_get_stats(NAT_CPU).current;
    float ref[20];
    memcpy(ref, nat_tensor_f32(keep_all), sizeof ref);
    th_expect_error(nat_ctx_release_since(ctx, 0, keep_all), NAT_ERR_INVALID_ARG, "gradients disabled", NULL);
    nat_ctx_reset(ctx);
    const size_t base = nat_mem_get_stats(NAT_CPU).current;
    nat_ctx_set_grad_enabled(ctx, false);
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &released));
    const size_t held_released = nat_mem_get_stats(NAT_CPU).current;
    ck_assert_int_eq(released->shape[0], 2);
    ck_assert_int_eq(released->shape[1], 10);
    ck_assert_msg(!memcmp(ref, nat_tensor_f32(released), sizeof ref), "logits differ when temporaries are released");
    ck_assert_msg(held_released - base < (held_all - base) / 3,
                  "after the forward %zu bytes are held with release against %zu without", held_released - base,
                  held_all - base);
    th_expect_error(nat_ctx_release_since(ctx, nat_ctx_mark(ctx) + 1, NULL), NAT_ERR_INVALID_ARG, "release mark", NULL);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

/* ---- init ---- */

START_TEST(init_rules)
{
    nat_model_desc d = tiny_desc();
    d.layer_scale = 1e-5f;
    nat_model *a, *b;
    TH_OK(nat_model_new(&a, &d));
    TH_OK(nat_model_new(&b, &d));
    const nat_param_list *pa = nat_model_params(a), *pb = nat_model_params(b);
    ck_assert_int_eq(pa->count, pb->count);
    for (int i = 0; i < pa->count; i++) {
        const nat_tensor *t = pa->items[i].tensor;
        const char *n = pa->items[i].name;
        int64_t numel = nat_tensor_numel(t);
        const float *v = nat_tensor_f32(t);
        /* Same seed, same model. */
        ck_assert_msg(!memcmp(v, nat_tensor_f32(pb->items[i].tensor), (size_t)numel * sizeof(float)), "%s differs", n);
        bool conv = strstr(n, "patch_embed.proj") || strstr(n, "reduction");
        bool norm = strstr(n, "norm") != NULL, gamma = strstr(n, "gamma") != NULL;
        bool bias = strstr(n, ".bias") != NULL, weight = strstr(n, ".weight") != NULL;
        double maxabs = 0;
        for (int64_t j = 0; j < numel; j++)
            maxabs = fmax(maxabs, fabs(v[j]));
        if (conv) {
            /* PyTorch's default: weight and bias uniform(±1/sqrt(fan_in)), fan_in from the weight. */
            char wn[128];
            snprintf(wn, sizeof wn, "%.*s.weight", (int)(strlen(n) - (bias ? 5 : 7)), n);
            const nat_tensor *w = nat_param_list_find(pa, wn)->tensor;
            double bound = 1.0 / sqrt((double)(w->shape[1] * w->shape[2] * w->shape[3]));
            ck_assert_msg(maxabs <= bound && maxabs > 0.3 * bound, "%s: max %g, bound %g", n, maxabs, bound);
        } else if (norm && weight) {
            int64_t off = 0;
            for (int64_t j = 0; j < numel; j++)
                off += v[j] != 1.0f;
            ck_assert_msg(!off, "%s: %ld values differ from 1", n, (long)off);
        } else if (gamma) {
            int64_t off = 0;
            for (int64_t j = 0; j < numel; j++)
                off += v[j] != 1e-5f;
            ck_assert_msg(!off, "%s: %ld values differ from 1e-5", n, (long)off);
        } else if (bias) {
            ck_assert_msg(maxabs == 0.0, "%s should start at 0 (max %g)", n, maxabs);
        } else { /* linear weights and rpb: truncated normal 0.02 at ±2σ */
            ck_assert_msg(maxabs <= 0.04 + 1e-7 && maxabs > 0.01, "%s: max %g", n, maxabs);
        }
        /* timm's no-decay rule: 1-D tensors, biases, rpb. */
        bool want_no_decay = t->ndim <= 1 || bias || strstr(n, "rpb");
        ck_assert_msg(pa->items[i].no_decay == want_no_decay, "%s: no_decay %d", n, pa->items[i].no_decay);
    }
    nat_model_free(b);
    d.seed = 8;
    TH_OK(nat_model_new(&b, &d));
    ck_assert(memcmp(nat_tensor_f32(pa->items[0].tensor), nat_tensor_f32(nat_model_params(b)->items[0].tensor),
                     sizeof(float) * 4));
    nat_model_free(a);
    nat_model_free(b);
}
END_TEST

/* ---- gradients through the whole network ---- */

static double model_loss(nat_model *m, nat_tensor *x, const float *R, int64_t n)
{
    nat_ctx *ctx;
    nat_ctx_new(&ctx, NAT_CPU);
    nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *y;
    nat_status s = nat_model_forward(m, ctx, x, false, NULL, &y);
    ck_assert_msg(s == NAT_OK, "forward: %s", nat_error_message());
    double loss = 0;
    for (int64_t i = 0; i < n; i++)
        loss += (double)nat_tensor_f32(y)[i] * R[i];
    nat_ctx_free(ctx);
    return loss;
}

START_TEST(gradient_spot_check_every_parameter)
{
    /* Hundreds of tiny forwards: OpenMP fork/join would cost more than the work (see test_layers.c). */
    omp_set_num_threads(1);
    nat_model_desc d = tiny_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 13);
    /* Lively parameters, so no gradient is negligible. */
    const nat_param_list *pl = nat_model_params(m);
    for (int i = 0; i < pl->count; i++) {
        nat_tensor *t = pl->items[i].tensor;
        bool scale1 = strstr(pl->items[i].name, "norm") && strstr(pl->items[i].name, "weight");
        nat_rng_fill_normal(&rng, nat_tensor_f32(t), (size_t)nat_tensor_numel(t), scale1 ? 1.0f : 0.0f,
                            t->ndim >= 2 && !strstr(pl->items[i].name, "rpb") ? 0.3f : 0.2f);
    }
    nat_tensor *x = images(&rng, 2, 3, 16, 16);
    const int64_t n = 2 * d.num_classes;
    float R[10];
    nat_rng_fill_normal(&rng, R, (size_t)n, 0.0f, 1.0f);

    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *y, *r;
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &y));
    TH_OK(nat_ctx_empty(ctx, &r, NAT_F32, 2, y->shape));
    TH_OK(nat_tensor_copy_from(r, R, n));
    nat_model_zero_grad(m);
    TH_OK(nat_backward_from(ctx, y, r));
    nat_ctx_free(ctx);

    const float eps = 1e-2f;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < pl->count; i++) {
        nat_tensor *t = pl->items[i].tensor;
        ck_assert_msg(t->grad, "%s has no gradient", pl->items[i].name);
        int64_t numel = nat_tensor_numel(t);
        float *v = nat_tensor_f32(t);
        for (int s = 0; s < 3; s++) {
            int64_t j = (int64_t)nat_rng_below(&rng, (uint32_t)numel);
            float keep = v[j];
            v[j] = keep + eps;
            double lp = model_loss(m, x, R, n);
            v[j] = keep - eps;
            double lm = model_loss(m, x, R, n);
            v[j] = keep;
            double num = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
            double ana = nat_tensor_f32(t->grad)[j];
            double err = fabs(ana - num) / (fabs(num) + 0.05);
            if (err > worst) {
                worst = err;
                worst_name = pl->items[i].name;
            }
        }
    }
    ck_assert_msg(worst < 2e-2, "worst gradient error %.3g at %s", worst, worst_name);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

/* ---- training ---- */

START_TEST(tiny_nat_learns)
{
    omp_set_num_threads(1); /* a tiny network: fork/join would dominate */
    nat_model_desc d = tiny_desc();
    d.num_classes = 4;
    d.embed_dim = 16;
    d.drop_path_rate = 0.1f;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 14);
    const int B = 16;
    nat_tensor *x = images(&rng, B, 3, 16, 16);
    int32_t labels[16];
    for (int i = 0; i < B; i++)
        labels[i] = (int32_t)nat_rng_below(&rng, 4);

    const nat_param_list *pl = nat_model_params(m);
    nat_tensor **decay = malloc((size_t)pl->count * sizeof *decay), **no_decay = malloc((size_t)pl->count * sizeof *no_decay);
    int nd = 0, nn = 0;
    for (int i = 0; i < pl->count; i++) {
        if (pl->items[i].no_decay)
            no_decay[nn++] = pl->items[i].tensor;
        else
            decay[nd++] = pl->items[i].tensor;
    }
    nat_optim *opt;
    nat_optim_config cfg = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    TH_OK(nat_optim_new(&opt, &cfg));
    TH_OK(nat_optim_add_group(opt, decay, nd, 0.05f));
    TH_OK(nat_optim_add_group(opt, no_decay, nn, 0.0f));
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    float first = 0, last = 0;
    const int steps = 30;
    for (int s = 0; s < steps; s++) {
        nat_tensor *y, *loss;
        nat_optim_zero_grad(opt);
        TH_OK(nat_model_forward(m, ctx, x, true, &rng, &y));
        TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
        TH_OK(nat_backward(ctx, loss));
        TH_OK(nat_optim_step(opt, 3e-3f));
        float l = nat_tensor_f32(loss)[0];
        ck_assert_msg(isfinite(l), "step %d: loss %g", s, l);
        if (s == 0)
            first = l;
        last = l;
        nat_ctx_reset(ctx);
    }
    /* Evaluation loss after training, without drop-path. */
    nat_ctx_set_grad_enabled(ctx, false);
    nat_tensor *y, *loss;
    TH_OK(nat_model_forward(m, ctx, x, false, NULL, &y));
    TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
    float eval = nat_tensor_f32(loss)[0];
    ck_assert_msg(eval < 0.5f * first, "loss %g -> %g (last training step %g): not learning", first, eval, last);
    nat_ctx_free(ctx);
    nat_optim_free(opt);
    free(decay);
    free(no_decay);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

/* ---- errors ---- */

START_TEST(errors_name_the_value)
{
    nat_model *m = (nat_model *)1;
    nat_model_desc d = tiny_desc();
    d.depths[2] = 0;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "depth 0", "level 2");
    ck_assert_ptr_null(m);
    d = tiny_desc();
    d.heads[1] = 3;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "3 heads", "dim 16");
    d = tiny_desc();
    d.kernel_size = 6;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "kernel size 6", NULL);
    d = tiny_desc();
    d.img_size = 3;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "input size 3", "stride 4");
    d = tiny_desc();
    d.embed_dim = 7;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "embed_dim 7", NULL);
    d = tiny_desc();
    d.drop_path_rate = 1.0f;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "drop_path_rate 1", NULL);
    d = tiny_desc();
    d.dilations[1][0] = -2;
    th_expect_error(nat_model_new(&m, &d), NAT_ERR_INVALID_ARG, "dilation -2", "level 1");
    th_expect_error(nat_model_new_variant(&m, "nat_huge", 1000, 3), NAT_ERR_INVALID_ARG, "nat_huge", NULL);
    th_expect_error(nat_model_new_variant(&m, "nat_mini", 0, 3), NAT_ERR_INVALID_ARG, "num_classes 0", NULL);

    d = tiny_desc();
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 15);
    nat_tensor *x = images(&rng, 1, 1, 16, 16), *y;
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    th_expect_error(nat_model_forward(m, ctx, x, false, NULL, &y), NAT_ERR_SHAPE, "[1, 1, 16, 16]", "[B, 3, H, W]");
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"variant_counts_match_the_papers", variant_counts_match_the_papers},
        {"built_models_have_the_counted_parameters", built_models_have_the_counted_parameters},
        {"variant_configs", variant_configs},
        {"forward_224_inference", forward_224_inference},
        {"forward_backward_small_inputs", forward_backward_small_inputs},
        {"bf16_autocast_rounds_and_stays_close", bf16_autocast_rounds_and_stays_close},
        {"inference_releases_block_temporaries", inference_releases_block_temporaries},
        {"init_rules", init_rules},
        {"gradient_spot_check_every_parameter", gradient_spot_check_every_parameter},
        {"tiny_nat_learns", tiny_nat_learns},
        {"errors_name_the_value", errors_name_the_value},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 240);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
