/* tests/test_train.c — nat-train's machinery (train/train_*.h) on tiny runs, and the model's tokenizer
 * stride and level count that small images need:
 *  - patch_stride 2 and num_levels 3: feature maps, parameter and MAC counts, forward, checkpoint
 *    metadata, description errors;
 *  - the learning-rate schedule;
 *  - a run stopped by SIGINT (raise() from the step callback) writes a checkpoint that loads, and resuming
 *    from it gives losses bit-identical to an uninterrupted run (with gradient accumulation, EMA, mixup,
 *    cutmix, random erasing, drop-path and two loader workers), on a small synthetic IDX dataset;
 *  - a short training on a Fashion-MNIST subset (when Debian's dataset-fashion-mnist is installed):
 *    the loss falls and test accuracy is far above chance;
 *  - train.precision = bf16 and f16 (emulated on the CPU): every step's loss finite and close to the f32
 *    run's, and the f16 run's loss scaler saved in and restored from its checkpoint;
 *  - train.device = cuda on a machine (or build) without CUDA: an early error naming the key, no run;
 *  - test-time augmentation: the views, the mean softmax, and flip invariance end to end. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nat/cuda.h"
#include "nat/model.h"
#include "nat/safetensors.h"
#include "support/harness.h"
#include "train/train.h"

/* ---- fixtures ---- */

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/nat_test_train_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

static void remove_dir(void) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void put_be32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* An MNIST-layout IDX set in root: n images of s x s whose class (0..9) is the position of a bright
 * 3 x 3 blob on a noisy background, so a small network can learn it; `mirror`: each image mirrored
 * left-right (the same set otherwise). */
static void write_idx_in(const char *root, const char *split, int n, int s, uint64_t seed, bool mirror)
{
    char p[200];
    nat_rng r;
    nat_rng_seed(&r, seed);
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", root, split);
    FILE *fi = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", root, split);
    FILE *fl = fopen(p, "wb");
    ck_assert(fi && fl);
    put_be32(fi, 0x803), put_be32(fi, (uint32_t)n), put_be32(fi, (uint32_t)s), put_be32(fi, (uint32_t)s);
    put_be32(fl, 0x801), put_be32(fl, (uint32_t)n);
    unsigned char *img = malloc((size_t)s * s);
    for (int i = 0; i < n; i++) {
        unsigned char y = (unsigned char)(i % 10);
        for (int k = 0; k < s * s; k++)
            img[k] = (unsigned char)nat_rng_below(&r, 60);
        int cy = 1 + (y / 5) * (s - 5), cx = 1 + (y % 5) * (s - 4) / 4;
        for (int dy = 0; dy < 3; dy++)
            for (int dx = 0; dx < 3; dx++)
                img[(cy + dy) * s + cx + dx] = 255;
        for (int row = 0; mirror && row < s; row++)
            for (int x = 0; x < s / 2; x++) {
                unsigned char t = img[row * s + x];
                img[row * s + x] = img[row * s + s - 1 - x];
                img[row * s + s - 1 - x] = t;
            }
        fwrite(img, 1, (size_t)s * s, fi);
        fputc(y, fl);
    }
    free(img);
    fclose(fi);
    fclose(fl);
}

static void write_idx(const char *split, int n, int s, uint64_t seed) { write_idx_in(dir, split, n, s, seed, false); }

/* ---- model: tokenizer stride and level count ---- */

START_TEST(model_patch_stride_and_levels)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "small");
    d.in_chans = 1, d.num_classes = 10, d.img_size = 28, d.embed_dim = 16, d.kernel_size = 3, d.mlp_ratio = 2;
    d.num_levels = 3, d.patch_stride = 2;
    const int depths[3] = {1, 2, 1}, heads[3] = {1, 2, 4};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    nat_model_counts c;
    TH_OK(nat_model_desc_count(&d, 28, 28, &c));
    ck_assert_int_eq(c.map_h[0], 14);
    ck_assert_int_eq(c.map_w[0], 14);
    ck_assert_int_eq(c.map_h[1], 7);
    ck_assert_int_eq(c.map_h[2], 4);
    ck_assert_int_eq(c.map_h[3], 0);
    ck_assert_int_eq(c.dims[2], 64);
    ck_assert_int_eq(c.dims[3], 0);
    ck_assert_int_eq(c.params_down[2], 0);
    ck_assert_int_eq(c.params_layers[3], 0);
    /* conv 1->8 s2 at 14x14, conv 8->16 s1 at 14x14, LayerNorm(16) at 14x14 */
    ck_assert_int_eq(c.macs_tokenizer, 14 * 14 * 8 * 1 * 9 + 14 * 14 * 16 * 8 * 9 + 5 * 14 * 14 * 16);
    ck_assert_int_eq(c.params_tokenizer, (8 * 9 + 8) + (16 * 8 * 9 + 16) + 32);
    ck_assert_int_eq(c.params_head, 2 * 64 + 64 * 10 + 10);
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    ck_assert_int_eq(nat_model_param_count(m), c.params);
    const nat_param_list *l = nat_model_params(m);
    ck_assert_ptr_nonnull(nat_param_list_find(l, "levels.2.blocks.0.attn.rpb"));
    ck_assert_ptr_null(nat_param_list_find(l, "levels.2.downsample.reduction.weight"));
    ck_assert_ptr_null(nat_param_list_find(l, "levels.3.blocks.0.norm1.weight"));
    ck_assert_int_eq(nat_param_list_find(l, "patch_embed.proj.1.weight")->tensor->shape[1], 8);

    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_rng r;
    nat_rng_seed(&r, 1);
    int64_t xs[4] = {2, 1, 28, 28};
    nat_tensor *x = th_randn(&r, 4, xs, 1.0f, false), *y;
    TH_OK(nat_model_forward(m, ctx, x, true, &r, &y));
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 2);
    ck_assert_int_eq(y->shape[1], 10);
    nat_tensor *loss;
    int32_t labels[2] = {3, 7};
    TH_OK(nat_cross_entropy(ctx, y, labels, 0.0f, &loss));
    TH_OK(nat_backward(ctx, loss));
    ck_assert_ptr_nonnull(nat_param_list_find(l, "head.weight")->tensor->grad);
    nat_ctx_reset(ctx);

    /* The description survives a checkpoint: depths lists 3 levels, patch_stride 2. */
    char path[128];
    make_dir();
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    TH_OK(nat_model_save(m, path, 0, NULL, NULL));
    nat_st_file *f;
    TH_OK(nat_st_open(&f, path));
    ck_assert_str_eq(nat_st_metadata(f, "nat.depths"), "1,2,1");
    ck_assert_str_eq(nat_st_metadata(f, "nat.patch_stride"), "2");
    nat_model_desc back;
    TH_OK(nat_model_desc_read(f, &back));
    ck_assert_int_eq(back.num_levels, 3);
    ck_assert_int_eq(back.patch_stride, 2);
    ck_assert_int_eq(back.depths[1], 2);
    nat_st_close(f);
    nat_model *m2;
    TH_OK(nat_model_new(&m2, &back));
    TH_OK(nat_model_load(m2, path));
    nat_model_free(m2);
    remove_dir();

    /* patch_stride 4 (and 0, its default spelling) is NAT's tokenizer: 28 -> 7. */
    nat_model_counts c4, c0;
    d.patch_stride = 4;
    TH_OK(nat_model_desc_count(&d, 28, 28, &c4));
    d.patch_stride = 0;
    TH_OK(nat_model_desc_count(&d, 28, 28, &c0));
    ck_assert_int_eq(c4.map_h[0], 7);
    ck_assert_int_eq(c4.params, c.params);
    ck_assert(c4.macs < c.macs);
    ck_assert(memcmp(&c4, &c0, sizeof c4) == 0);
    nat_model_desc mini = nat_model_desc_default(), mini0 = mini;
    mini0.num_levels = 0, mini0.patch_stride = 0;
    TH_OK(nat_model_desc_count(&mini, 224, 224, &c4));
    TH_OK(nat_model_desc_count(&mini0, 224, 224, &c0));
    ck_assert(memcmp(&c4, &c0, sizeof c4) == 0);
    ck_assert_int_eq(c4.map_h[0], 56);

    d.patch_stride = 3;
    th_expect_error(nat_model_desc_check(&d), NAT_ERR_INVALID_ARG, "patch_stride 3", "4 or 2");
    d.patch_stride = 2, d.num_levels = 5;
    th_expect_error(nat_model_desc_check(&d), NAT_ERR_INVALID_ARG, "num_levels 5", NULL);
    d.num_levels = 3, d.img_size = 1;
    th_expect_error(nat_model_desc_check(&d), NAT_ERR_INVALID_ARG, "tokenizer's total stride 2", NULL);
    nat_tensor_free(x);
    nat_ctx_free(ctx);
    nat_model_free(m);
}
END_TEST

/* ---- schedule ---- */

START_TEST(lr_schedule_warmup_cosine)
{
    nat_lr_schedule s = {1e-3, 1e-5, 1e-6, 10, 110};
    ck_assert_double_eq_tol(nat_lr_at(&s, 0), 1e-6 + (1e-3 - 1e-6) * 0.1, 1e-12);
    ck_assert_double_eq_tol(nat_lr_at(&s, 9), 1e-3, 1e-12);
    ck_assert_double_eq_tol(nat_lr_at(&s, 10), 1e-3, 1e-12);
    ck_assert_double_eq_tol(nat_lr_at(&s, 60), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-12);
    ck_assert(nat_lr_at(&s, 109) > 1e-5 && nat_lr_at(&s, 109) < 1.05e-5);
    ck_assert_double_eq(nat_lr_at(&s, 500), 1e-5);
    for (int64_t t = 11; t < 110; t++)
        ck_assert(nat_lr_at(&s, t) < nat_lr_at(&s, t - 1));
    nat_lr_schedule flat = {2e-3, 0, 0, 0, 1};
    ck_assert_double_eq(nat_lr_at(&flat, 0), 2e-3);
}
END_TEST

/* ---- stop, checkpoint, resume ---- */

#define RUN_STEPS 12
#define STOP_AT 5

typedef struct recorder {
    double loss[RUN_STEPS + 1];
    int64_t last;
    int64_t raise_at; /* raise SIGINT after this step; 0 = never */
} recorder;

static void record(void *user, int64_t step, double loss)
{
    recorder *r = user;
    ck_assert_int_le(step, RUN_STEPS);
    r->loss[step] = loss;
    r->last = step;
    if (step == r->raise_at)
        raise(SIGINT);
}

/* The EMA against its formula, warm-up included: after update t (0-based), ema = d_t·ema + (1-d_t)·w with
 * d_t = min(decay, (1+t)/(10+t)); the weights change between updates, so a wrong decay, a missing
 * warm-up or a skipped parameter shows. The reference runs in double. */
START_TEST(ema_update_follows_its_formula)
{
    nat_model_desc d = nat_model_desc_default();
    d.embed_dim = 8, d.num_levels = 2, d.depths[0] = d.depths[1] = 1, d.heads[0] = 1, d.heads[1] = 2;
    d.kernel_size = 3, d.img_size = 16, d.in_chans = 1, d.num_classes = 3;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    const nat_param_list *pl = nat_model_params(m);
    int64_t total = nat_param_list_numel(pl);
    double *ref = malloc((size_t)total * sizeof *ref);
    for (int i = 0, o = 0; i < pl->count; o += (int)nat_tensor_numel(pl->items[i].tensor), i++)
        for (int64_t j = 0; j < nat_tensor_numel(pl->items[i].tensor); j++)
            ref[o + j] = nat_tensor_f32(pl->items[i].tensor)[j];
    nat_ema e;
    const float decay = 0.6f; /* reached at t = 4: (1+4)/(10+4) = 0.357 < 0.6 < (1+t)/(10+t) for t >= 13 */
    TH_OK(nat_ema_init(&e, m, decay));
    for (int t = 0; t < 20; t++) {
        double dt = fmin((double)decay, (1.0 + t) / (10.0 + t));
        for (int i = 0, o = 0; i < pl->count; o += (int)nat_tensor_numel(pl->items[i].tensor), i++) {
            float *w = nat_tensor_f32(pl->items[i].tensor);
            for (int64_t j = 0; j < nat_tensor_numel(pl->items[i].tensor); j++) {
                w[j] = sinf(0.37f * (float)(t + 1) + 0.011f * (float)(o + j)); /* new weights each step */
                ref[o + j] = dt * ref[o + j] + (1.0 - dt) * w[j];
            }
        }
        TH_OK(nat_ema_update(&e, m));
        ck_assert_int_eq(e.updates, t + 1);
        const nat_param_list *el = nat_model_params(e.model);
        double worst = 0;
        for (int i = 0, o = 0; i < el->count; o += (int)nat_tensor_numel(el->items[i].tensor), i++)
            for (int64_t j = 0; j < nat_tensor_numel(el->items[i].tensor); j++)
                worst = fmax(worst, fabs(nat_tensor_f32(el->items[i].tensor)[j] - ref[o + j]));
        ck_assert_msg(worst < 1e-6, "update %d: EMA off its formula by %g", t, worst);
    }
    nat_ema_free(&e);
    nat_model_free(m);
    free(ref);
}
END_TEST

/* Every ema.* tensor of two checkpoints, bit for bit. */
static void assert_same_ema(const char *pa, const char *pb)
{
    nat_st_file *fa, *fb;
    TH_OK(nat_st_open(&fa, pa));
    TH_OK(nat_st_open(&fb, pb));
    int compared = 0;
    for (int i = 0; i < nat_st_count(fa); i++) {
        const char *name = nat_st_name(fa, i);
        if (strncmp(name, "ema.", 4) != 0)
            continue;
        int nd;
        int64_t shape[8], n = 1;
        TH_OK(nat_st_info(fa, i, NULL, &nd, shape));
        for (int a = 0; a < nd; a++)
            n *= shape[a];
        float *va = malloc((size_t)n * sizeof *va), *vb = malloc((size_t)n * sizeof *vb);
        TH_OK(nat_st_read_f32(fa, name, va, n));
        TH_OK(nat_st_read_f32(fb, name, vb, n));
        ck_assert_msg(memcmp(va, vb, (size_t)n * sizeof *va) == 0, "%s differs between %s and %s", name, pa, pb);
        free(va);
        free(vb);
        compared++;
    }
    ck_assert_int_gt(compared, 10);
    nat_st_close(fa);
    nat_st_close(fb);
}

static void tiny_config(nat_config *c, const char *run)
{
    char text[1400];
    snprintf(text, sizeof text,
             "[model]\nembed_dim = 8\ndepths = 1,1\nheads = 1,2\nkernel_size = 3\nmlp_ratio = 2\ndrop_path = 0.2\n"
             "patch_stride = 2\n"
             "[data]\nformat = mnist\nroot = %s\nworkers = 2\n"
             "[aug]\npadding = 1\nerasing = 0.25\nmixup = 0.8\ncutmix = 1.0\n"
             "[optim]\nlr = 3e-3\nwarmup_epochs = 0.5\nclip_grad = 1.0\n"
             "[train]\nepochs = 2\nbatch_size = 8\naccum_steps = 2\nema = true\nema_decay = 0.99\n"
             "checkpoint_every = 3\nkeep_checkpoints = 2\nthreads = 1\n"
             "[log]\ndir = %s/%s\nprint_every = 100\n",
             dir, dir, run);
    nat_config_defaults(c);
    TH_OK(nat_config_parse_string(c, text, "tiny.cfg"));
}

static FILE *devnull(void)
{
    FILE *f = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(f);
    return f;
}

static int count_files(const char *sub, const char *prefix)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    int n = 0;
    for (int64_t s = 0; s <= RUN_STEPS; s++) {
        char f[200];
        snprintf(f, sizeof f, "%s/%s%08lld.safetensors", p, prefix, (long long)s);
        n += access(f, F_OK) == 0;
    }
    return n;
}

START_TEST(sigint_checkpoint_and_exact_resume)
{
    make_dir();
    write_idx("train", 96, 12, 1); /* 12 batches of 8 per epoch = 6 steps of 2 micro-batches */
    write_idx("t10k", 40, 12, 2);
    FILE *quiet = devnull();
    nat_config c;
    nat_train_result res;

    /* A: uninterrupted. */
    recorder a = {0};
    tiny_config(&c, "a");
    nat_train_opts o = {.on_step = record, .user = &a, .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    ck_assert_int_eq(res.steps, RUN_STEPS);
    ck_assert_int_eq(res.total_steps, RUN_STEPS);
    ck_assert(!res.interrupted && res.evaluated && res.has_ema);
    ck_assert_int_eq(a.last, RUN_STEPS);
    ck_assert_int_eq(count_files("a", "ckpt-"), 2); /* keep_checkpoints = 2 */
    double top1 = res.top1, ema_top1 = res.ema_top1;

    /* B: SIGINT after step STOP_AT (the handler sets the flag; the loop stops and checkpoints). */
    nat_train_signals_install(NAT_SIGNAL_CHECKPOINT);
    recorder b = {.raise_at = STOP_AT};
    tiny_config(&c, "b");
    o = (nat_train_opts){.on_step = record, .user = &b, .stop = nat_train_stop_flag(), .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    ck_assert(res.interrupted && !res.evaluated);
    ck_assert_int_eq(res.steps, STOP_AT);
    ck_assert_int_eq(b.last, STOP_AT);
    ck_assert_int_eq(*nat_train_stop_flag(), SIGINT);
    for (int s = 1; s <= STOP_AT; s++)
        ck_assert_msg(a.loss[s] == b.loss[s], "step %d: loss %.9g vs %.9g", s, a.loss[s], b.loss[s]);

    /* The checkpoint loads: a model rebuilt from its metadata alone, and the config it holds. */
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, "%s/b/ckpt-%08d.safetensors", dir, STOP_AT);
    ck_assert_str_eq(res.checkpoint, ckpt);
    nat_st_file *f;
    TH_OK(nat_st_open(&f, ckpt));
    nat_model_desc d;
    TH_OK(nat_model_desc_read(f, &d));
    ck_assert_int_eq(d.num_levels, 2);
    ck_assert_int_eq(d.patch_stride, 2);
    ck_assert_int_eq(d.img_size, 12);
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    TH_OK(nat_model_read(m, f, false));
    ck_assert_str_eq(nat_st_metadata(f, "train.step"), "5");
    ck_assert_int_ge(nat_st_find(f, "ema.head.weight"), 0);
    ck_assert_int_ge(nat_st_find(f, "optim.group0.param0.exp_avg"), 0);
    nat_st_close(f);
    nat_model_free(m);
    char *text;
    TH_OK(nat_checkpoint_read_config(ckpt, &text));
    nat_config back;
    nat_config_defaults(&back);
    TH_OK(nat_config_parse_string(&back, text, ckpt));
    free(text);
    ck_assert_int_eq(nat_config_diff(&back, &c, NULL), 0);
    char last[256], target[256] = "";
    snprintf(last, sizeof last, "%s/b/last.safetensors", dir);
    ck_assert_int_gt(readlink(last, target, sizeof target - 1), 0);
    ck_assert_str_eq(target, "ckpt-00000005.safetensors");

    /* C: resume run B's directory; the following losses are those of A, bit for bit. */
    recorder r = {0};
    for (int s = 1; s <= STOP_AT; s++)
        r.loss[s] = b.loss[s];
    tiny_config(&c, "b");
    char run_b[128];
    snprintf(run_b, sizeof run_b, "%s/b", dir);
    o = (nat_train_opts){.resume = run_b, .on_step = record, .user = &r, .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    ck_assert(!res.interrupted && res.evaluated);
    ck_assert_int_eq(res.steps, RUN_STEPS);
    for (int s = 1; s <= RUN_STEPS; s++)
        ck_assert_msg(a.loss[s] == r.loss[s], "step %d after resuming at %d: loss %.9g vs %.9g", s, STOP_AT, r.loss[s],
                      a.loss[s]);
    ck_assert_double_eq(res.top1, top1);
    ck_assert_double_eq(res.ema_top1, ema_top1);
    /* The averaged weights themselves, not only their accuracy on 40 images. */
    char final_a[256], final_b[256];
    snprintf(final_a, sizeof final_a, "%s/a/ckpt-%08d.safetensors", dir, RUN_STEPS);
    snprintf(final_b, sizeof final_b, "%s/b/ckpt-%08d.safetensors", dir, RUN_STEPS);
    assert_same_ema(final_a, final_b);

    /* The resumed run's CSV reads as one run: a header and one row per step. */
    char p[256], line[256];
    snprintf(p, sizeof p, "%s/b/train_log.csv", dir);
    FILE *csv = fopen(p, "r");
    ck_assert_ptr_nonnull(csv);
    int rows = 0;
    while (fgets(line, sizeof line, csv))
        rows++;
    fclose(csv);
    ck_assert_int_eq(rows, RUN_STEPS + 1);
    fclose(quiet);
    remove_dir();
}
END_TEST

/* nat_replicas_step over 3 copies (shards of 3, 2, 2 images) gives the gradient of every parameter and the
 * loss of one backward over the whole batch of 7, up to float rounding; mul scales the gradients. */
START_TEST(replicas_sum_the_whole_batch_gradient)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "replicas_test");
    d.in_chans = 1, d.num_classes = 4, d.img_size = 12, d.embed_dim = 8, d.num_levels = 2;
    const int depths[4] = {1, 1, 1, 1}, heads[4] = {1, 2, 2, 2};
    memcpy(d.depths, depths, sizeof depths);
    memcpy(d.heads, heads, sizeof heads);
    d.kernel_size = 3, d.patch_stride = 2, d.drop_path_rate = 0.0f, d.seed = 3;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_rng rng;
    nat_rng_seed(&rng, 8);
    enum { N = 7 };
    float x[N * 144];
    int32_t labels[N];
    for (int i = 0; i < N * 144; i++)
        x[i] = nat_rng_normal(&rng);
    for (int i = 0; i < N; i++)
        labels[i] = i % 4;
    nat_batch b = {.n = N, .c = 1, .h = 12, .w = 12, .x = x, .labels = labels, .classes = 4, .lam = 1};
    /* one backward over the batch */
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    nat_tensor *xt, *logits, *loss;
    const int64_t xs[4] = {N, 1, 12, 12};
    TH_OK(nat_ctx_empty(ctx, &xt, NAT_F32, 4, xs));
    memcpy(nat_tensor_f32(xt), x, sizeof x);
    TH_OK(nat_model_forward(m, ctx, xt, true, &rng, &logits));
    TH_OK(nat_cross_entropy(ctx, logits, labels, 0.1f, &loss));
    const float whole = nat_tensor_f32(loss)[0];
    TH_OK(nat_backward(ctx, loss));
    nat_ctx_reset(ctx);
    const nat_param_list *pl = nat_model_params(m);
    int64_t total = 0;
    for (int i = 0; i < pl->count; i++)
        total += nat_tensor_numel(pl->items[i].tensor);
    float *ref = malloc(sizeof(float) * (size_t)total);
    int64_t off = 0;
    for (int i = 0; i < pl->count; i++) {
        const int64_t n = nat_tensor_numel(pl->items[i].tensor);
        memcpy(ref + off, nat_tensor_f32(pl->items[i].tensor->grad), sizeof(float) * (size_t)n);
        off += n;
    }
    /* the same over three copies, gradients doubled by mul */
    nat_model_zero_grad(m);
    nat_replicas R;
    TH_OK(nat_replicas_init(&R, m, ctx, 3));
    float split;
    TH_OK(nat_replicas_step(&R, &b, 0.1f, &rng, 2.0f, &split));
    ck_assert_msg(fabsf(split - whole) <= 1e-6f * fabsf(whole), "loss %.9g over 3 copies, %.9g whole", (double)split,
                  (double)whole);
    off = 0;
    double worst = 0, scale = 0;
    for (int i = 0; i < pl->count; i++) {
        const float *g = nat_tensor_f32(pl->items[i].tensor->grad);
        const int64_t n = nat_tensor_numel(pl->items[i].tensor);
        for (int64_t e = 0; e < n; e++) {
            worst = fmax(worst, fabs((double)g[e] - 2.0 * ref[off + e]));
            scale = fmax(scale, fabs(2.0 * ref[off + e]));
        }
        off += n;
    }
    ck_assert_msg(scale > 0 && worst <= 1e-5 * scale, "gradients over 3 copies differ by %.3g (max |g| %.3g)", worst,
                  scale);
    nat_replicas_free(&R);
    nat_ctx_free(ctx);
    nat_model_free(m);
    free(ref);
}
END_TEST

/* train.replicas = 2: two single-threaded copies of the model share each micro-batch. The losses are the
 * same bits on a second run and after a SIGINT + resume; without drop-path the first step's loss is the
 * single-copy run's up to float rounding, and the run stays close to it. */
START_TEST(replicas_deterministic_resumable_and_close)
{
    make_dir();
    write_idx("train", 96, 12, 1);
    write_idx("t10k", 40, 12, 2);
    FILE *quiet = devnull();
    nat_config c;
    nat_train_result res;
    recorder a = {0}, a2 = {0}, b = {.raise_at = STOP_AT}, r = {0}, one = {0}, two = {0};
    nat_train_opts o;
    const char *runs[2] = {"ra", "ra2"};
    recorder *recs[2] = {&a, &a2};
    for (int k = 0; k < 2; k++) {
        tiny_config(&c, runs[k]);
        TH_OK(nat_config_set(&c, "train.replicas=2"));
        o = (nat_train_opts){.on_step = record, .user = recs[k], .out = quiet, .progress = quiet};
        TH_OK(nat_train(&c, &o, &res));
        ck_assert_int_eq(res.steps, RUN_STEPS);
    }
    for (int s = 1; s <= RUN_STEPS; s++)
        ck_assert_msg(a.loss[s] == a2.loss[s], "step %d: loss %.9g, then %.9g", s, a.loss[s], a2.loss[s]);
    /* interrupted and resumed */
    nat_train_signals_install(NAT_SIGNAL_CHECKPOINT);
    tiny_config(&c, "rb");
    TH_OK(nat_config_set(&c, "train.replicas=2"));
    o = (nat_train_opts){.on_step = record, .user = &b, .stop = nat_train_stop_flag(), .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    ck_assert(res.interrupted);
    for (int s = 1; s <= STOP_AT; s++)
        r.loss[s] = b.loss[s];
    char run_b[128];
    snprintf(run_b, sizeof run_b, "%s/rb", dir);
    o = (nat_train_opts){.resume = run_b, .on_step = record, .user = &r, .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    ck_assert_int_eq(res.steps, RUN_STEPS);
    for (int s = 1; s <= RUN_STEPS; s++)
        ck_assert_msg(a.loss[s] == r.loss[s], "step %d after resuming at %d: loss %.9g vs %.9g", s, STOP_AT, r.loss[s],
                      a.loss[s]);
    /* the copies did run: with drop-path one copy's losses are not those of two */
    recorder single = {0};
    tiny_config(&c, "rs");
    o = (nat_train_opts){.on_step = record, .user = &single, .out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    int differ = 0;
    for (int s = 1; s <= RUN_STEPS; s++)
        differ += single.loss[s] != a.loss[s];
    ck_assert_msg(differ > 0, "train.replicas = 2 gave exactly the single-copy losses: the copies did not run");
    /* against one copy, without drop-path (the copies draw their own masks) */
    const char *assign[2] = {"train.replicas=1", "train.replicas=2"};
    recorder *cmp[2] = {&one, &two};
    const char *cruns[2] = {"r1", "r2"};
    for (int k = 0; k < 2; k++) {
        tiny_config(&c, cruns[k]);
        TH_OK(nat_config_set(&c, "model.drop_path=0"));
        TH_OK(nat_config_set(&c, assign[k]));
        o = (nat_train_opts){.on_step = record, .user = cmp[k], .out = quiet, .progress = quiet};
        TH_OK(nat_train(&c, &o, &res));
    }
    ck_assert_msg(fabs(one.loss[1] - two.loss[1]) <= 1e-5 * fabs(one.loss[1]), "first step: loss %.9g with 2 copies, %.9g with one",
                  two.loss[1], one.loss[1]);
    for (int s = 2; s <= RUN_STEPS; s++)
        ck_assert_msg(fabs(one.loss[s] - two.loss[s]) <= 1e-3 * fabs(one.loss[s]),
                      "step %d: loss %.9g with 2 copies, %.9g with one", s, two.loss[s], one.loss[s]);
    /* out of range */
    tiny_config(&c, "rx");
    th_expect_error(nat_config_set(&c, "train.replicas=17"), NAT_ERR_FORMAT, "train.replicas", "out of range");
    /* CPU only: nat-train refuses it before any data or model is made, naming the file */
    TH_OK(nat_config_set(&c, "train.replicas=2"));
    TH_OK(nat_config_set(&c, "train.device=cuda"));
    o = (nat_train_opts){.out = quiet, .progress = quiet};
    th_expect_error(nat_train(&c, &o, &res), NAT_ERR_FORMAT, "config tiny.cfg: train.replicas = 2", "train.device = cuda:0");
    fclose(quiet);
    remove_dir();
}
END_TEST

/* ---- a short real training ---- */

START_TEST(fashion_mnist_smoke)
{
    make_dir();
    nat_config c;
    nat_config_defaults(&c);
    char text[800];
    snprintf(text, sizeof text,
             "[model]\nembed_dim = 16\ndepths = 1,1\nheads = 1,2\nkernel_size = 3\nmlp_ratio = 2\ndrop_path = 0\n"
             "patch_stride = 2\n"
             "[data]\ntrain_limit = 3072\ntest_limit = 1000\nworkers = 1\n"
             "[aug]\npadding = 2\n"
             "[optim]\nlr = 5e-3\nwarmup_epochs = 0.2\n"
             "[train]\nepochs = 2\nbatch_size = 16\neval_every = 0\ncheckpoint_every = 0\nthreads = 1\n"
             "[log]\ndir = %s/run\n",
             dir);
    TH_OK(nat_config_parse_string(&c, text, "smoke.cfg"));
    FILE *quiet = devnull();
    nat_train_result res;
    nat_train_opts o = {.out = quiet, .progress = quiet};
    TH_OK(nat_train(&c, &o, &res));
    fclose(quiet);
    /* Loss: the first and last 20 steps of train_log.csv. */
    char p[160], line[256];
    snprintf(p, sizeof p, "%s/run/train_log.csv", dir);
    FILE *csv = fopen(p, "r");
    ck_assert_ptr_nonnull(csv);
    double first = 0, last[20] = {0};
    int n = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, csv));
    while (fgets(line, sizeof line, csv)) {
        double loss = strtod(strchr(strchr(line, ',') + 1, ',') + 1, NULL);
        if (n < 20)
            first += loss / 20;
        last[n % 20] = loss;
        n++;
    }
    fclose(csv);
    double tail = 0;
    for (int i = 0; i < 20; i++)
        tail += last[i] / 20;
    ck_assert_int_eq(n, 384);
    fprintf(stderr, "fashion_mnist_smoke: loss %.3f -> %.3f, test top-1 %.1f%% (chance 10%%), %.0f img/s\n", first, tail,
            res.top1, res.images_per_s);
    ck_assert_msg(tail < first - 0.5, "loss fell only from %.3f to %.3f", first, tail);
    ck_assert_msg(res.top1 > 45.0, "test top-1 %.1f%% (chance: 10%%)", res.top1);
    remove_dir();
}
END_TEST

/* ---- precision and device ---- */

START_TEST(precision_bf16_f16_close_to_f32)
{
    make_dir();
    write_idx("train", 96, 12, 1);
    write_idx("t10k", 40, 12, 2);
    FILE *quiet = devnull();
    const char *precs[3] = {"f32", "bf16", "f16"};
    recorder rec[3];
    nat_train_result res[3];
    for (int i = 0; i < 3; i++) {
        nat_config c;
        char set[64];
        rec[i] = (recorder){0};
        tiny_config(&c, precs[i]);
        snprintf(set, sizeof set, "train.precision=%s", precs[i]);
        TH_OK(nat_config_set(&c, set));
        nat_train_opts o = {.on_step = record, .user = &rec[i], .out = quiet, .progress = quiet};
        TH_OK(nat_train(&c, &o, &res[i]));
        ck_assert_int_eq(res[i].steps, RUN_STEPS);
    }
    for (int i = 1; i < 3; i++) {
        double worst = 0, sum = 0;
        for (int st = 1; st <= RUN_STEPS; st++) {
            ck_assert_msg(isfinite(rec[i].loss[st]), "%s step %d: loss %g", precs[i], st, rec[i].loss[st]);
            double d = fabs(rec[i].loss[st] - rec[0].loss[st]);
            worst = fmax(worst, d);
            sum += d;
        }
        fprintf(stderr, "precision %s vs f32 over %d steps: max |loss difference| %.5f, mean %.5f (f32 loss %.4f -> %.4f); "
                        "test top-1 %.1f%% vs %.1f%%\n",
                precs[i], RUN_STEPS, worst, sum / RUN_STEPS, rec[0].loss[1], rec[0].loss[RUN_STEPS], res[i].top1,
                res[0].top1);
        ck_assert_msg(fabs(rec[i].loss[1] - rec[0].loss[1]) < 5e-3, "%s: first loss %.6f vs f32 %.6f", precs[i],
                      rec[i].loss[1], rec[0].loss[1]);
        ck_assert_msg(worst < 0.01, "%s: a step's loss differs from f32 by %.4f", precs[i], worst);
        /* ... and autocast did round: measured 2.2e-4 (bf16) and 2e-5 (f16); an f32 run under another
         * name would give 0. The floors are a tenth of those. */
        const double floor = i == 1 ? 2e-5 : 2e-6;
        ck_assert_msg(worst > floor, "%s: losses within %.2g of f32 at every step: was the precision applied?", precs[i],
                      worst);
    }
    /* The f16 run's checkpoint holds its loss scaler, and nothing else changed in the format. */
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, "%s/f16/ckpt-%08d.safetensors", dir, RUN_STEPS);
    nat_st_file *f;
    TH_OK(nat_st_open(&f, ckpt));
    const char *ls = nat_st_metadata(f, "train.loss_scale");
    ck_assert_ptr_nonnull(ls);
    ck_assert_ptr_nonnull(nat_st_metadata(f, "train.loss_scale_good"));
    ck_assert_double_eq(strtod(ls, NULL), 65536.0); /* 12 clean steps: no change from the initial 2^16 */
    nat_st_close(f);
    snprintf(ckpt, sizeof ckpt, "%s/bf16/ckpt-%08d.safetensors", dir, RUN_STEPS);
    TH_OK(nat_st_open(&f, ckpt));
    ck_assert_ptr_null(nat_st_metadata(f, "train.loss_scale"));
    nat_st_close(f);
    fclose(quiet);
    remove_dir();
}
END_TEST

START_TEST(device_cuda_refused_without_device)
{
    nat_config c;
    nat_config_defaults(&c);
    ck_assert_str_eq(c.train.device, "cpu");
    ck_assert_str_eq(c.train.precision, "f32");
    TH_OK(nat_config_set(&c, "train.device=cuda"));
    ck_assert_str_eq(c.train.device, "cuda:0");
    TH_OK(nat_config_set(&c, "train.device=cuda:3"));
    ck_assert_str_eq(c.train.device, "cuda:3");
    th_expect_error(nat_config_set(&c, "train.device=gpu"), NAT_ERR_FORMAT, "train.device", "cpu, cuda or cuda:N");
    th_expect_error(nat_config_set(&c, "train.device=cuda:x"), NAT_ERR_FORMAT, "train.device", NULL);
    th_expect_error(nat_config_set(&c, "train.precision=fp8"), NAT_ERR_FORMAT, "train.precision", NULL);
    if (nat_cuda_available()) {
        fprintf(stderr, "device_cuda_refused_without_device: a CUDA device is present; only the parsing was checked\n");
        return;
    }
    make_dir();
    write_idx("train", 96, 12, 1);
    write_idx("t10k", 40, 12, 2);
    FILE *quiet = devnull();
    tiny_config(&c, "cuda");
    TH_OK(nat_config_set(&c, "train.device=cuda"));
    nat_train_opts o = {.out = quiet, .progress = quiet};
    nat_train_result res;
    nat_status s = nat_train(&c, &o, &res);
    th_expect_error(s, NAT_ERR_UNSUPPORTED, "train.device = cuda:0",
                    nat_cuda_built() ? "no CUDA device is available" : "nat was built without CUDA");
    ck_assert_msg(strstr(nat_error_message(), "does not fall back to the CPU"), "message: %s", nat_error_message());
    ck_assert_int_eq(res.steps, 0);
    char p[160];
    snprintf(p, sizeof p, "%s/cuda", dir);
    ck_assert_msg(access(p, F_OK) != 0, "the refused run made its directory %s", p);
    fclose(quiet);
    remove_dir();
}
END_TEST

/* ---- misuse and bad input (docs/reliability.md) ---- */

/* A fresh dir holding the small IDX train and test sets; returns a FILE for quiet output. */
static FILE *idx_run_dir(void)
{
    make_dir();
    write_idx("train", 96, 12, 1);
    write_idx("t10k", 40, 12, 2);
    return devnull();
}

static void quick_config(nat_config *c, const char *run, int max_steps);

/* idx_run_dir, then a run of `steps` steps into dir/run with o's output quiet; returns the quiet FILE. */
static FILE *first_run(const char *run, int steps, nat_train_opts *o)
{
    FILE *quiet = idx_run_dir();
    *o = (nat_train_opts){.out = quiet, .progress = quiet};
    nat_config c;
    nat_train_result res;
    quick_config(&c, run, steps);
    TH_OK(nat_train(&c, o, &res));
    return quiet;
}

static void quick_config(nat_config *c, const char *run, int max_steps)
{
    tiny_config(c, run);
    char set[64];
    snprintf(set, sizeof set, "train.max_steps=%d", max_steps);
    TH_OK(nat_config_set(c, set));
    TH_OK(nat_config_set(c, "data.workers=0"));
}

/* A new run into an old run's directory overwrote its logs, and pruning (which keeps the highest steps,
 * the old run's) deleted the new run's own checkpoints; two processes with one --out clobbered each other. */
START_TEST(run_dir_not_empty_refused_locked_overwrite)
{
    nat_train_opts o;
    FILE *quiet = first_run("r", 6, &o);
    nat_config c;
    nat_train_result res;
    ck_assert_int_eq(count_files("r", "ckpt-"), 2); /* steps 3 and 6 */

    quick_config(&c, "r", 3);
    nat_status s = nat_train(&c, &o, &res);
    ck_assert_msg(s != NAT_OK, "a second new run into %s/r succeeded", dir);
    th_expect_error(s, NAT_ERR_INVALID_ARG, "is not empty", "--overwrite");

    /* Another process holds the run directory: a clear error, even with overwrite. */
    char rd[128];
    snprintf(rd, sizeof rd, "%s/r", dir);
    int fd = open(rd, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    o.overwrite = true;
    quick_config(&c, "r", 3);
    th_expect_error(nat_train(&c, &o, &res), NAT_ERR_IO, "in use by another", rd);
    close(fd);

    /* Overwrite: the old run's checkpoints go; last.safetensors points at the new run's. */
    quick_config(&c, "r", 3);
    TH_OK(nat_train(&c, &o, &res));
    ck_assert_int_eq(count_files("r", "ckpt-"), 1);
    char last[160];
    snprintf(last, sizeof last, "%s/r/last.safetensors", dir);
    ck_assert_msg(access(last, R_OK) == 0, "%s dangles", last);
    nat_st_file *f;
    TH_OK(nat_st_open(&f, last));
    ck_assert_str_eq(nat_st_metadata(f, "train.step"), "3");
    nat_st_close(f);
    fclose(quiet);
    remove_dir();
}
END_TEST

/* --out longer than the path buffer was cut silently and the run went elsewhere. */
START_TEST(long_paths_are_errors_not_cut)
{
    FILE *quiet = idx_run_dir();
    char out[700];
    int n = snprintf(out, sizeof out, "%s/", dir);
    while (n < 600)
        out[n++] = 'd';
    out[n] = 0;
    nat_config c;
    tiny_config(&c, "x");
    nat_train_opts o = {.out_dir = out, .out = quiet, .progress = quiet, .dry_run = true};
    nat_train_result res;
    th_expect_error(nat_train(&c, &o, &res), NAT_ERR_INVALID_ARG, "longer than", NULL);
    /* An existing file named by a long path: refused, not cut to another name. */
    char file[160], longp[800];
    snprintf(file, sizeof file, "%s/ckpt.safetensors", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    n = snprintf(longp, sizeof longp, "%s", dir);
    while (n < 640)
        n += snprintf(longp + n, sizeof longp - (size_t)n, "/.");
    snprintf(longp + n, sizeof longp - (size_t)n, "/ckpt.safetensors");
    char buf[NAT_CFG_STR + 64];
    th_expect_error(nat_checkpoint_resolve(longp, buf, sizeof buf), NAT_ERR_INVALID_ARG, "longer than", NULL);
    fclose(quiet);
    remove_dir();
}
END_TEST

/* A kill left ckpt-*.tmp.PID files behind for good, and one after the last checkpoint but before the
 * final evaluation's rows made the resumed run write those rows twice. */
START_TEST(resume_removes_stale_tmp_and_duplicate_eval_rows)
{
    nat_train_opts o;
    FILE *quiet = first_run("h", 3, &o);
    nat_config c;
    nat_train_result res;
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    ck_assert_int_gt(dead, 0);
    waitpid(dead, NULL, 0);
    char stale[200], live[200];
    snprintf(stale, sizeof stale, "%s/h/ckpt-00000002.safetensors.tmp.%ld", dir, (long)dead);
    snprintf(live, sizeof live, "%s/h/ckpt-00000002.safetensors.tmp.%ld", dir, (long)getppid());
    FILE *f = fopen(stale, "w");
    FILE *g = fopen(live, "w");
    ck_assert(f && g);
    fclose(f);
    fclose(g);

    /* The run had finished; resuming it evaluates step 3 again (as after a kill during that evaluation). */
    char rd[128];
    snprintf(rd, sizeof rd, "%s/h", dir);
    quick_config(&c, "h", 3);
    o.resume = rd;
    TH_OK(nat_train(&c, &o, &res));
    ck_assert_msg(access(stale, F_OK) != 0, "stale %s is still there", stale);
    ck_assert_msg(access(live, F_OK) == 0, "%s of a live process was removed", live);
    char p[160], line[256];
    snprintf(p, sizeof p, "%s/h/eval_log.csv", dir);
    f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    int at3 = 0;
    while (fgets(line, sizeof line, f))
        at3 += strncmp(line, "3,", 2) == 0;
    fclose(f);
    ck_assert_msg(at3 == 2, "eval_log.csv has %d rows of step 3, expected 2 (model and ema)", at3);
    fclose(quiet);
    remove_dir();
}
END_TEST

/* CSV log rows on a full device were lost without a word (exit 0, empty logs). */
START_TEST(log_write_errors_are_reported)
{
    make_dir();
    nat_train_log log;
    TH_OK(nat_train_log_open(&log, dir, -1, -1));
    fclose(log.steps);
    log.steps = fopen("/dev/full", "w");
    ck_assert_ptr_nonnull(log.steps);
    th_expect_error(nat_train_log_step(&log, 1, 0.1, 2.0, 1e-3, 1.0, 100, 1, 1), NAT_ERR_IO, "train_log.csv",
                    "No space left");
    fclose(log.evals);
    log.evals = fopen("/dev/full", "w");
    ck_assert_ptr_nonnull(log.evals);
    th_expect_error(nat_train_log_eval(&log, 1, 0.1, "model", 10, 50, 90, 1.5, 0.1), NAT_ERR_IO, "eval_log.csv",
                    "No space left");
    nat_train_log_close(&log);
    remove_dir();
}
END_TEST

/* Resume and nat-eval --ema read optimizer and EMA tensors unchecked: a NaN in the AdamW moments went
 * on to ruin the run, and an EMA tensor of transposed shape (same element count) loaded. */
START_TEST(optimizer_and_ema_tensors_checked_like_weights)
{
    make_dir();
    nat_model_desc d = th_tiny_nat_desc();
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_ema ema = {0};
    TH_OK(nat_ema_init(&ema, m, 0.9f));
    nat_optim_config oc = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    nat_optim *opt;
    TH_OK(nat_optim_new(&opt, &oc));
    const nat_param_list *l = nat_model_params(m);
    nat_tensor **ps = malloc((size_t)l->count * sizeof *ps);
    for (int i = 0; i < l->count; i++)
        ps[i] = l->items[i].tensor;
    TH_OK(nat_optim_add_group(opt, ps, l->count, 0.01f));
    ck_assert_int_gt(nat_optim_state_count(opt), 0);
    const char *name;
    nat_tensor *t;
    TH_OK(nat_optim_state_get(opt, 0, &name, &t));
    nat_tensor_f32(t)[0] = NAN;
    nat_train_state st = {.best_top1 = -1};
    char path[160];
    snprintf(path, sizeof path, "%s/nan.safetensors", dir);
    TH_OK(nat_checkpoint_save(path, m, opt, &ema, &st, ""));
    nat_tensor_f32(t)[0] = 0;
    th_expect_error(nat_checkpoint_load(path, m, opt, &ema, &st), NAT_ERR_FORMAT, "non-finite", name);

    /* A checkpoint whose ema.head.weight is [classes, dim] transposed: refused by nat-eval --ema. */
    nat_st_writer *w;
    TH_OK(nat_st_writer_new(&w));
    TH_OK(nat_model_write(m, w));
    for (int i = 0; i < l->count; i++) {
        char key[300];
        snprintf(key, sizeof key, "ema.%s", l->items[i].name);
        nat_tensor *e = l->items[i].tensor, *tr = NULL;
        if (!strcmp(l->items[i].name, "head.weight")) {
            int64_t sh[2] = {e->shape[1], e->shape[0]};
            TH_OK(nat_tensor_new(&tr, NAT_F32, NAT_CPU, 2, sh));
            e = tr;
        }
        TH_OK(nat_st_writer_add(w, key, e));
        nat_tensor_free(tr);
    }
    snprintf(path, sizeof path, "%s/ema.safetensors", dir);
    TH_OK(nat_st_writer_save(w, path));
    nat_st_writer_free(w);
    nat_st_file *f;
    TH_OK(nat_st_open(&f, path));
    th_expect_error(nat_checkpoint_read_weights(m, f, true), NAT_ERR_SHAPE, "ema.head.weight", "[8, 3]");
    nat_st_close(f);
    free(ps);
    nat_optim_free(opt);
    nat_ema_free(&ema);
    nat_model_free(m);
    remove_dir();
}
END_TEST

/* ---- tta: test-time augmentation (nat-eval --tta) ---- */

/* The views against values worked out by hand, the mean of softmax, the fill value, and end to end: a
 * flip-TTA evaluation of a test set and of its mirror image gives the same metrics (the views are the
 * same two images), where a plain evaluation does not. */
START_TEST(tta_views_mean_softmax_and_flip_invariance)
{
    nat_tta_kind k;
    TH_OK(nat_tta_parse("flip-shift", &k));
    ck_assert_int_eq(k, NAT_TTA_FLIP_SHIFT);
    ck_assert_int_eq(nat_tta_views(k), 10);
    TH_OK(nat_tta_parse("flip", &k));
    ck_assert_int_eq(nat_tta_views(k), 2);
    TH_OK(nat_tta_parse("none", &k));
    ck_assert_int_eq(nat_tta_views(k), 1);
    th_expect_error(nat_tta_parse("flips", &k), NAT_ERR_INVALID_ARG, "'flips'", "flip-shift");

    /* One 2 x 3 image [[1 2 3] [4 5 6]], fill -9; mirror image [[3 2 1] [6 5 4]]. */
    const float img[6] = {1, 2, 3, 4, 5, 6};
    const struct {
        int v;
        float want[6];
    } cases[] = {
        {0, {1, 2, 3, 4, 5, 6}},
        {1, {3, 2, 1, 6, 5, 4}},
        {2, {4, 5, 6, -9, -9, -9}}, /* (dy, dx) = (+1, 0): out(y, x) = in(y + 1, x) */
        {3, {6, 5, 4, -9, -9, -9}},
        {4, {-9, -9, -9, 1, 2, 3}}, /* (-1, 0) */
        {5, {-9, -9, -9, 3, 2, 1}},
        {6, {2, 3, -9, 5, 6, -9}}, /* (0, +1) */
        {7, {2, 1, -9, 5, 4, -9}},
        {8, {-9, 1, 2, -9, 4, 5}}, /* (0, -1) */
        {9, {-9, 3, 2, -9, 6, 5}},
    };
    nat_tta t = {.kind = NAT_TTA_FLIP_SHIFT, .fill = {-9}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float got[6];
        nat_tta_view(&t, cases[i].v, img, 1, 1, 2, 3, got);
        for (int j = 0; j < 6; j++)
            ck_assert_msg(got[j] == cases[i].want[j], "view %d, value %d: %g, want %g", cases[i].v, j, got[j],
                          cases[i].want[j]);
    }
    /* Two images of two channels: each plane with its own channel's fill. */
    float two[24], got[24];
    for (int i = 0; i < 24; i++)
        two[i] = (float)(i + 1);
    t.fill[0] = -1, t.fill[1] = -2;
    nat_tta_view(&t, 4, two, 2, 2, 2, 3, got); /* shifted down: the first row is fill */
    for (int plane = 0; plane < 4; plane++) {
        for (int x = 0; x < 3; x++) {
            ck_assert_float_eq(got[plane * 6 + x], plane % 2 ? -2.0f : -1.0f);
            ck_assert_float_eq(got[plane * 6 + 3 + x], two[plane * 6 + x]);
        }
    }
    t.kind = NAT_TTA_FLIP; /* flip only: views 0 and 1, no shift */
    nat_tta_view(&t, 1, img, 1, 1, 2, 3, got);
    ck_assert(got[0] == 3 && got[2] == 1 && got[3] == 6 && got[5] == 4);

    /* Mean softmax: [0, ln 3] -> (1/4, 3/4) and [ln 3, 0] -> (3/4, 1/4): mean (1/2, 1/2). */
    const float la[2] = {0.0f, logf(3.0f)}, lb[2] = {logf(3.0f), 0.0f};
    double acc[2] = {0, 0};
    nat_tta_accumulate(la, 1, 2, acc);
    ck_assert_double_eq_tol(acc[0], 0.25, 1e-7);
    ck_assert_double_eq_tol(acc[1], 0.75, 1e-7);
    nat_tta_accumulate(lb, 1, 2, acc);
    float out[2];
    nat_tta_finish(acc, 1, 2, 2, out);
    ck_assert_float_eq_tol(out[0], logf(0.5f), 1e-6f);
    ck_assert_float_eq_tol(out[1], logf(0.5f), 1e-6f);
    acc[0] = 0.0; /* an underflowed probability stays finite */
    nat_tta_finish(acc, 1, 2, 2, out);
    ck_assert(isfinite(out[0]) && out[0] < -700.0f);

    /* The fill: a zero pixel after normalisation. */
    nat_config c;
    nat_config_defaults(&c);
    TH_OK(nat_config_parse_string(&c, "[data]\nmean = 0.5\nstd = 0.25\n", "fill.cfg"));
    float fill[NAT_TF_MAX_CHANNELS];
    nat_train_tta_fill(&c, 1, fill);
    ck_assert_float_eq_tol(fill[0], -2.0f, 1e-6f);

    /* End to end on a random network: a test set and its mirror image. */
    make_dir();
    char mdir[80];
    snprintf(mdir, sizeof mdir, "%s/mirror", dir);
    ck_assert_int_eq(mkdir(mdir, 0755), 0);
    write_idx_in(dir, "t10k", 40, 12, 5, false);
    write_idx_in(mdir, "t10k", 40, 12, 5, true);
    nat_model_desc d = th_tiny_nat_desc();
    d.num_classes = 10, d.img_size = 12;
    nat_model *m;
    TH_OK(nat_model_new(&m, &d));
    nat_ctx *ctx;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    double loss[2][3], top1[2][3];
    const nat_tta_kind kinds[3] = {NAT_TTA_NONE, NAT_TTA_FLIP, NAT_TTA_FLIP_SHIFT};
    for (int side = 0; side < 2; side++) {
        char text[300];
        snprintf(text, sizeof text, "[data]\nformat = mnist\nroot = %s\nworkers = 0\n[train]\neval_batch_size = 16\n",
                 side ? mdir : dir);
        nat_config_defaults(&c);
        TH_OK(nat_config_parse_string(&c, text, "tta.cfg"));
        TH_OK(nat_config_resolve(&c));
        nat_dataset *ds;
        nat_loader *L;
        nat_metrics met = {0};
        TH_OK(nat_train_open_dataset(&c, NAT_SPLIT_TEST, &ds));
        TH_OK(nat_train_resolve_data(&c, ds));
        TH_OK(nat_train_loader_new(&c, ds, false, &L));
        TH_OK(nat_metrics_init(&met, 10));
        for (int i = 0; i < 3; i++) {
            nat_tta tt = {.kind = kinds[i]};
            nat_train_tta_fill(&c, 1, tt.fill);
            bool complete;
            TH_OK(nat_evaluate(m, ctx, L, &met, &tt, NULL, NULL, &complete));
            ck_assert(complete);
            ck_assert_int_eq(met.n, 40);
            loss[side][i] = nat_metrics_loss(&met);
            top1[side][i] = nat_metrics_top1(&met);
        }
        nat_metrics_free(&met);
        nat_loader_free(L);
        nat_dataset_free(ds);
    }
    ck_assert_msg(loss[0][0] != loss[1][0], "plain: the mirror set's loss %.9g equals the set's", loss[0][0]);
    ck_assert_msg(loss[0][1] == loss[1][1], "flip: loss %.12g vs the mirror set's %.12g", loss[0][1], loss[1][1]);
    ck_assert(top1[0][1] == top1[1][1]);
    /* flip-shift: the same ten views in another order, so equal up to the order of the sums */
    ck_assert_msg(fabs(loss[0][2] - loss[1][2]) <= 1e-9 * loss[0][2], "flip-shift: loss %.12g vs %.12g", loss[0][2],
                  loss[1][2]);
    ck_assert(loss[0][2] != loss[0][1] && loss[0][1] != loss[0][0]); /* the views changed the predictions */
    nat_ctx_free(ctx);
    nat_model_free(m);
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"model_patch_stride_and_levels", model_patch_stride_and_levels},
        {"lr_schedule_warmup_cosine", lr_schedule_warmup_cosine},
        {"ema_update_follows_its_formula", ema_update_follows_its_formula},
        {"sigint_checkpoint_and_exact_resume", sigint_checkpoint_and_exact_resume},
        {"fashion_mnist_smoke", fashion_mnist_smoke},
        {"precision_bf16_f16_close_to_f32", precision_bf16_f16_close_to_f32},
        {"device_cuda_refused_without_device", device_cuda_refused_without_device},
        {"replicas_sum_the_whole_batch_gradient", replicas_sum_the_whole_batch_gradient},
        {"replicas_deterministic_resumable_and_close", replicas_deterministic_resumable_and_close},
        {"run_dir_not_empty_refused_locked_overwrite", run_dir_not_empty_refused_locked_overwrite},
        {"long_paths_are_errors_not_cut", long_paths_are_errors_not_cut},
        {"resume_removes_stale_tmp_and_duplicate_eval_rows", resume_removes_stale_tmp_and_duplicate_eval_rows},
        {"log_write_errors_are_reported", log_write_errors_are_reported},
        {"optimizer_and_ema_tensors_checked_like_weights", optimizer_and_ema_tensors_checked_like_weights},
        {"tta_views_mean_softmax_and_flip_invariance", tta_views_mean_softmax_and_flip_invariance},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].test == fashion_mnist_smoke && !th_need_fashion_mnist(cases[i].name, NAT_FASHION_MNIST_DIR))
            continue;
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
