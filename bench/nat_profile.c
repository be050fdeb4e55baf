/* bench/nat_profile.c — nat-profile: how fast and how big a NAT / DiNAT (or the same skeleton with
 * Swin's window attention) runs here.
 *
 *   nat-profile --model NAME|--config FILE --mode train|infer [--batch N] [--res R] [--steps S] [--csv FILE]
 *       one run per (model, mode, --na-impl, --attention): median images/s, allocator peak and RSS,
 *       GMACs, model FLOP utilisation against the sgemm roofline, a per-layer table (bench/profile.h)
 *   nat-profile --sweep [--csv FILE]      every variant, train and infer, one CSV row per run
 *   nat-profile --model NAME|all [--params] [--flops] [--forward]
 *       analytic counts per level (nat_model_desc_count: fvcore's conventions, as NAT's paper used),
 *       and the per-part time of one inference forward
 *
 * Lists (--model a,b --mode train,infer --na-impl fused,gather --attention na,window) run every
 * combination; with more than one run each runs in its own process (this program again), so every run
 * starts from an empty allocator and its RSS peak is its own.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nat/cuda.h" /* nat_cuda_built */
#include "nat/model.h"
#include "nat/ops.h"
#include "bench/bench.h"
#include "train/train.h"
#include "bench/profile.h"

#define MAX_LIST 16

typedef struct options {
    /* counts and the legacy forward timing */
    const char *model;
    int params, flops, forward;
    int res, classes, in_chans, batch, repeat;
    /* runs */
    const char *config, *csv, *device, *dtype, *roofline, *label;
    const char *modes, *impls, *attentions;
    int sweep, run, batch_given, steps, warmup, trace_steps, window, child, recompute;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-profile --model NAME[,NAME...]|--config FILE --mode train|infer[,...] [options]\n"
            "       nat-profile --sweep [--csv FILE] [options]\n"
            "       nat-profile --model NAME|all [--params] [--flops] [--forward]\n"
            "Measures a NAT / DiNAT classifier (or the same network with Swin's window attention) on this machine:\n"
            "median images/s, peak memory (nat's allocator and the process's RSS), GMACs per image, model FLOP\n"
            "utilisation against the sgemm roofline and a per-layer table of time and memory. See docs/profile.md.\n"
            "Runs:\n"
            "  --model LIST     nat_mini, nat_tiny, nat_small, nat_base, dinat_mini, dinat_tiny, dinat_small, dinat_base\n"
            "  --config FILE    the [model] section of a nat-train config (docs/configs.md) instead of --model\n"
            "  --mode LIST      train (forward, loss, backward, AdamW step), infer (forward, no gradients), or both\n"
            "  --batch N        images per step (default 8; 1 with --forward)\n"
            "  --res R          input height and width (default 224)\n"
            "  --steps S        timed steps, median reported (default 5)\n"
            "  --warmup W       untimed steps before them (default 1)\n"
            "  --trace-steps T  traced steps for the per-layer table, the median one shown (default 3; 0 = no table)\n"
            "  --na-impl LIST   fused (default), unfused, gather (CPU); on a GPU NAT_NA_KERNEL=v0..v3 picks the kernel\n"
            "  --attention LIST na (default: NAT/DiNAT), window (Swin's shifted-window attention in the same network)\n"
            "  --window N       window attention's window (default 7)\n"
            "  --recompute      activation checkpointing: keep each layer's input only, recompute the layer in the\n"
            "                   backward (less memory, one more forward of the layers); the label gets '+recompute'\n"
            "  --device D       cpu (default), cuda or cuda:N\n"
            "  --dtype T        f32 (default), bf16, f16: autocast of GEMMs, convolutions and NA (on the CPU bf16\n"
            "                   runs oneDNN's bf16 kernels and AVX512-BF16 NA where the CPU has them; f16 is\n"
            "                   emulated: right values, no speed-up)\n"
            "  --roofline G     GFLOP/s that MFU is taken against: a number, or 'measure' for a quick sgemm here\n"
            "                   (default %.0f, the 2048² sgemm of `nat-bench gemm` in docs/benchmarks.md)\n"
            "  --csv FILE       append one row per run to FILE (a header first when it is new)\n"
            "  --label NAME     the model's name in the output and the CSV (default: the variant, or the config's\n"
            "                   model name)\n"
            "  --sweep          every variant above, train and infer (or --mode), one run each\n"
            "Counts (no run):\n"
            "  --params, --flops  parameter and GMAC counts per level (the default without --mode/--sweep)\n"
            "  --forward        time one inference forward per part, median of --repeat (default 5)\n"
            "  --classes N      classifier outputs (default 1000); --in-chans N  input channels (default 3)\n"
            "  --help           this text\n"
            "Threads: OMP_NUM_THREADS.\n",
            NAT_PROFILE_ROOFLINE_DEFAULT);
}

static int parse_int(const char *opt, const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end || errno || v < lo || v > INT_MAX) {
        fprintf(stderr, "nat-profile: %s needs an integer >= %d, got '%s'\n", opt, lo, s ? s : "(nothing)");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->res = 224, o->classes = 1000, o->in_chans = 3, o->batch = 8, o->repeat = 5;
    o->steps = 5, o->warmup = 1, o->trace_steps = 3, o->window = 7;
    o->device = "cpu", o->dtype = "f32", o->impls = "fused", o->attentions = "na";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int *target = NULL, lo = 1;
        const char **str = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--params")) {
            o->params = 1;
            continue;
        } else if (!strcmp(a, "--flops")) {
            o->flops = 1;
            continue;
        } else if (!strcmp(a, "--forward")) {
            o->forward = 1;
            continue;
        } else if (!strcmp(a, "--sweep")) {
            o->sweep = o->run = 1;
            continue;
        } else if (!strcmp(a, "--recompute")) {
            o->recompute = 1;
            continue;
        } else if (!strcmp(a, "--child")) { /* internal: one run of a list, started by the parent */
            o->child = 1;
            continue;
        } else if (!strcmp(a, "--model")) {
            str = &o->model;
        } else if (!strcmp(a, "--config")) {
            str = &o->config;
        } else if (!strcmp(a, "--label")) {
            str = &o->label;
        } else if (!strcmp(a, "--csv")) {
            str = &o->csv;
            o->run = 1;
        } else if (!strcmp(a, "--device")) {
            str = &o->device;
        } else if (!strcmp(a, "--dtype")) {
            str = &o->dtype;
        } else if (!strcmp(a, "--roofline")) {
            str = &o->roofline;
        } else if (!strcmp(a, "--mode")) {
            str = &o->modes;
            o->run = 1;
        } else if (!strcmp(a, "--na-impl")) {
            str = &o->impls;
        } else if (!strcmp(a, "--attention")) {
            str = &o->attentions;
        } else if (!strcmp(a, "--res")) {
            target = &o->res;
        } else if (!strcmp(a, "--classes")) {
            target = &o->classes;
        } else if (!strcmp(a, "--in-chans")) {
            target = &o->in_chans;
        } else if (!strcmp(a, "--batch")) {
            target = &o->batch;
            o->batch_given = 1;
        } else if (!strcmp(a, "--repeat")) {
            target = &o->repeat;
        } else if (!strcmp(a, "--steps")) {
            target = &o->steps;
        } else if (!strcmp(a, "--warmup")) {
            target = &o->warmup, lo = 0;
        } else if (!strcmp(a, "--trace-steps")) {
            target = &o->trace_steps, lo = 0;
        } else if (!strcmp(a, "--window")) {
            target = &o->window;
        } else {
            fprintf(stderr, "nat-profile: unknown option '%s'\n", a);
            return -1;
        }
        if (str) {
            if (!next || !*next) {
                fprintf(stderr, "nat-profile: %s needs a value\n", a);
                return -1;
            }
            *str = next;
            i++;
            continue;
        }
        if (parse_int(a, next, lo, target))
            return -1;
        i++;
    }
    if (!o->model && !o->config && !o->sweep) {
        fprintf(stderr, "nat-profile: --model, --config or --sweep is required\n");
        return -1;
    }
    if (o->model && o->config) {
        fprintf(stderr, "nat-profile: give --model or --config, not both\n");
        return -1;
    }
    if (o->run && (o->params || o->flops || o->forward)) {
        fprintf(stderr, "nat-profile: --params/--flops/--forward are counts; they do not mix with --mode/--sweep/--csv\n");
        return -1;
    }
    if (!o->run && !o->params && !o->flops && !o->forward)
        o->params = o->flops = 1;
    if (!o->batch_given && o->forward)
        o->batch = 1;
    return 0;
}

/* 19984174 -> "19,984,174" */
static const char *grouped(int64_t v, char *buf, size_t cap)
{
    char raw[32];
    snprintf(raw, sizeof raw, "%" PRId64, v);
    size_t n = strlen(raw), at = 0;
    for (size_t i = 0; i < n && at + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0)
            buf[at++] = ',';
        buf[at++] = raw[i];
    }
    buf[at] = 0;
    return buf;
}

static void row(const options *o, const char *part, const char *map, int dim, int64_t params, int64_t macs,
                int64_t attn)
{
    char p[32] = "", dims[16] = "", g[32] = "", na[32] = "";
    if (o->params)
        grouped(params, p, sizeof p);
    if (dim > 0)
        snprintf(dims, sizeof dims, "%d", dim);
    if (o->flops) {
        snprintf(g, sizeof g, "%.4f", (double)macs / 1e9);
        if (attn >= 0)
            snprintf(na, sizeof na, "%.4f", (double)attn / 1e9);
    }
    printf("  %-14s %-9s %5s %13s %9s %9s\n", part, map, dims, p, g, na);
}

static int print_counts(const options *o, const nat_model_desc *d)
{
    nat_model_counts c;
    if (nat_model_desc_count(d, o->res, o->res, &c) != NAT_OK) {
        fprintf(stderr, "nat-profile: %s\n", nat_error_message());
        return 1;
    }
    char g[32], map[32];
    printf("%s at %dx%d, %d input channels, %d classes\n", d->name, o->res, o->res, d->in_chans, d->num_classes);
    if (o->params)
        printf("  parameters: %.2fM (%s)\n", (double)c.params / 1e6, grouped(c.params, g, sizeof g));
    if (o->flops)
        printf(c.macs >= 1000000000 ? "  GMACs per image: %.1f (%s multiply-adds)\n" : "  GMACs per image: %.4f (%s multiply-adds)\n",
               (double)c.macs / 1e9, grouped(c.macs, g, sizeof g));
    printf("  %-14s %-9s %5s %13s %9s %9s\n", "part", "map", "dim", o->params ? "params" : "",
           o->flops ? "GMACs" : "", o->flops ? "NA op" : "");
    snprintf(map, sizeof map, "%dx%d", c.map_h[0], c.map_w[0]);
    row(o, "patch_embed", map, d->embed_dim, c.params_tokenizer, c.macs_tokenizer, -1);
    const int L = nat_model_desc_levels(d);
    for (int i = 0; i < L; i++) {
        char part[32];
        snprintf(part, sizeof part, "levels.%d x%d", i, d->depths[i]);
        snprintf(map, sizeof map, "%dx%d", c.map_h[i], c.map_w[i]);
        row(o, part, map, c.dims[i], c.params_layers[i], c.macs_layers[i], c.macs_attn[i]);
        if (i < L - 1) {
            snprintf(part, sizeof part, " downsample.%d", i);
            snprintf(map, sizeof map, "%dx%d", c.map_h[i + 1], c.map_w[i + 1]);
            row(o, part, map, 2 * c.dims[i], c.params_down[i], c.macs_down[i], -1);
        }
    }
    row(o, "norm + head", "", d->num_classes, c.params_head, c.macs_head, -1);
    return 0;
}

/* Per-part wall times of one forward, from the model's part hook. */
#define MAX_PARTS 16
typedef struct part_clock {
    double last;
    int n;
    const char *names[MAX_PARTS];
    double dt[MAX_PARTS];
} part_clock;

static void on_part(void *user, const char *part)
{
    part_clock *pc = user;
    double now = nat_wall_now();
    if (pc->n < MAX_PARTS) {
        pc->names[pc->n] = part;
        pc->dt[pc->n++] = now - pc->last;
    }
    pc->last = now;
}

static int64_t part_macs(const nat_model_counts *c, const char *part)
{
    if (!strcmp(part, "patch_embed"))
        return c->macs_tokenizer;
    if (!strcmp(part, "head"))
        return c->macs_head;
    int i = part[7] - '0';
    return strstr(part, "downsample") ? c->macs_down[i] : c->macs_layers[i];
}

static int time_forward(const options *o, const nat_model_desc *d)
{
    nat_model_counts c;
    nat_model *m = NULL;
    nat_ctx *ctx = NULL;
    nat_tensor *x = NULL;
    int rc = 1;
    int64_t xs[4] = {o->batch, d->in_chans, o->res, o->res};
    if (nat_model_desc_count(d, o->res, o->res, &c) != NAT_OK || nat_model_new(&m, d) != NAT_OK ||
        nat_ctx_new(&ctx, NAT_CPU) != NAT_OK || nat_tensor_new(&x, NAT_F32, NAT_CPU, 4, xs) != NAT_OK) {
        fprintf(stderr, "nat-profile: %s\n", nat_error_message());
        goto done;
    }
    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_rng_fill_normal(&rng, nat_tensor_f32(x), (size_t)nat_tensor_numel(x), 0.0f, 1.0f);
    nat_ctx_set_grad_enabled(ctx, false);
    double *t = calloc((size_t)o->repeat * (MAX_PARTS + 1), sizeof *t), first = 0, *pt = t + o->repeat;
    size_t peak = 0;
    part_clock pc = {0};
    nat_model_set_part_hook(m, on_part, &pc);
    for (int r = -1; r < o->repeat; r++) {
        nat_tensor *logits;
        size_t base = nat_mem_get_stats(NAT_CPU).current;
        nat_mem_reset_peak(NAT_CPU);
        double t0 = nat_wall_now();
        pc.n = 0;
        pc.last = t0;
        if (nat_model_forward(m, ctx, x, false, NULL, &logits) != NAT_OK) {
            fprintf(stderr, "nat-profile: forward: %s\n", nat_error_message());
            free(t);
            goto done;
        }
        double dt = nat_wall_now() - t0;
        if (r >= 0) {
            t[r] = dt;
            for (int p = 0; p < pc.n; p++)
                pt[p * o->repeat + r] = pc.dt[p];
        } else {
            first = dt;
        }
        peak = nat_mem_get_stats(NAT_CPU).peak - base;
        nat_ctx_reset(ctx);
    }
    double med = nat_bench_median(t, o->repeat);
    const char *threads = getenv("OMP_NUM_THREADS");
    printf("forward (inference, batch %d, %dx%d, OMP_NUM_THREADS=%s): median %.1f ms over %d runs, %.1f images/s, "
           "%.1f GMAC/s (first run %.1f ms), step peak %.1f MiB\n",
           o->batch, o->res, o->res, threads ? threads : "unset", med * 1e3, o->repeat, o->batch / med,
           (double)c.macs * o->batch / med / 1e9, first * 1e3, (double)peak / (1024.0 * 1024.0));
    printf("  %-20s %10s %7s %9s\n", "part", "median ms", "share", "GMAC/s");
    for (int p = 0; p < pc.n; p++) {
        double mp = nat_bench_median(pt + p * o->repeat, o->repeat);
        printf("  %-20s %10.2f %6.1f%% %9.1f\n", pc.names[p], mp * 1e3, 100.0 * mp / med,
               mp > 0 ? (double)part_macs(&c, pc.names[p]) * o->batch / mp / 1e9 : 0.0);
    }
    free(t);
    rc = 0;
done:
    nat_tensor_free(x);
    nat_ctx_free(ctx);
    nat_model_free(m);
    return rc;
}

static int summary(const options *o)
{
    printf("%-12s %12s %10s   (%dx%d, %d classes, %d input channels)\n", "variant", "params", "GMACs", o->res, o->res,
           o->classes, o->in_chans);
    for (const char *const *n = nat_model_variant_names(); *n; n++) {
        nat_model_desc d;
        nat_model_counts c;
        if (nat_model_desc_variant(&d, *n, o->classes, o->in_chans) != NAT_OK ||
            nat_model_desc_count(&d, o->res, o->res, &c) != NAT_OK) {
            fprintf(stderr, "nat-profile: %s\n", nat_error_message());
            return 1;
        }
        printf("%-12s %11.2fM %10.1f\n", *n, (double)c.params / 1e6, (double)c.macs / 1e9);
    }
    return 0;
}

/* ---- runs ---- */

/* Splits a comma list into at most MAX_LIST items (pointers into buf). */
static int split(const char *list, char *buf, size_t cap, const char **items)
{
    snprintf(buf, cap, "%s", list);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < MAX_LIST; t = strtok_r(NULL, ",", &save))
        items[n++] = t;
    return n;
}

/* --device and --dtype as a device and an autocast precision; 0, or the exit code after a message. */
static int parse_backend(const options *o, nat_device *dev, nat_precision *prec)
{
    *dev = NAT_CPU;
    *prec = NAT_PREC_F32;
    if (!strcmp(o->dtype, "bf16"))
        *prec = NAT_PREC_BF16;
    else if (!strcmp(o->dtype, "f16"))
        *prec = NAT_PREC_F16;
    else if (strcmp(o->dtype, "f32")) {
        fprintf(stderr, "nat-profile: --dtype '%s': f32, bf16 or f16\n", o->dtype);
        return 2;
    }
    if (!strcmp(o->device, "cpu"))
        return 0;
    int index = 0;
    if (strcmp(o->device, "cuda")) {
        char *end = NULL;
        long v = !strncmp(o->device, "cuda:", 5) ? strtol(o->device + 5, &end, 10) : -1;
        if (!end || end == o->device + 5 || *end || v < 0 || v > 1024) {
            fprintf(stderr, "nat-profile: --device '%s': cpu, cuda or cuda:N\n", o->device);
            return 2;
        }
        index = (int)v;
    }
    if (!nat_cuda_built()) {
        fprintf(stderr, "nat-profile: --device %s: nat was built without CUDA (no nvcc found, or NAT_CUDA=OFF)\n",
                o->device);
        return 1;
    }
    if (index >= nat_cuda_device_count()) {
        fprintf(stderr, "nat-profile: --device %s: no such CUDA device (%d present)\n", o->device,
                nat_cuda_device_count());
        return 1;
    }
    *dev = (nat_device){NAT_DEV_CUDA, index};
    return 0;
}

static int parse_impl(const char *s, nat_profile_na_impl *out)
{
    const nat_profile_na_impl all[3] = {NAT_PROFILE_NA_FUSED, NAT_PROFILE_NA_UNFUSED, NAT_PROFILE_NA_GATHER};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, nat_profile_na_impl_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    if (!strncmp(s, "cuda", 4)) {
        fprintf(stderr, "nat-profile: --na-impl %s: on a GPU, 'fused' and 'unfused' run the CUDA kernels; "
                        "NAT_NA_KERNEL=v0|v1|v2|v3 picks a kernel version (layers/natten/dev/README.md)\n", s);
        return 2;
    }
    fprintf(stderr, "nat-profile: --na-impl '%s': fused, unfused or gather\n", s);
    return 2;
}

/* The description of one run: a variant, or the [model] section of a config. */
static int make_desc(const options *o, const char *model, int window_attn, nat_profile_opts *po)
{
    nat_model_desc d;
    if (o->config) {
        nat_config c;
        nat_config_defaults(&c);
        if (nat_config_load(&c, o->config) != NAT_OK || nat_config_resolve(&c) != NAT_OK ||
            nat_config_model_desc(&c, o->in_chans, o->classes, o->res, &d) != NAT_OK) {
            fprintf(stderr, "nat-profile: %s\n", nat_error_message());
            return 2;
        }
        snprintf(po->label, sizeof po->label, "%s", d.name[0] ? d.name : "custom");
    } else {
        if (nat_model_desc_variant(&d, model, o->classes, o->in_chans) != NAT_OK) {
            fprintf(stderr, "nat-profile: %s\n", nat_error_message());
            return 2;
        }
        snprintf(po->label, sizeof po->label, "%s", model);
    }
    if (o->label)
        snprintf(po->label, sizeof po->label, "%s", o->label);
    d.img_size = o->res;
    if (window_attn) {
        d.attention = NAT_ATTN_WINDOW;
        d.window_size = o->window;
    }
    po->desc = d;
    return 0;
}

static double roofline_value(const options *o)
{
    if (!o->roofline) { /* fixed, so MFU compares across runs and machines; say so, since it is not this CPU's */
        printf("roofline: %.1f GFLOP/s, a fixed reference (an AVX-512 VM's 2048² sgemm; --roofline measure "
               "takes this CPU's)\n", NAT_PROFILE_ROOFLINE_DEFAULT);
        return NAT_PROFILE_ROOFLINE_DEFAULT;
    }
    if (!strcmp(o->roofline, "measure")) {
        double g = nat_profile_measure_roofline();
        printf("roofline: measured %.1f GFLOP/s (2048² sgemm, best of 3)\n", g);
        return g;
    }
    char *end;
    double g = strtod(o->roofline, &end);
    return end != o->roofline && !*end && g > 0 ? g : -1;
}

static int run_one(const options *o, const char *model, const char *mode, nat_profile_na_impl impl, int window_attn,
                   double roofline, nat_device dev, nat_precision prec)
{
    nat_profile_opts po = nat_profile_opts_default();
    int rc = make_desc(o, model, window_attn, &po);
    if (rc)
        return rc;
    po.batch = o->batch, po.res = o->res, po.steps = o->steps, po.warmup = o->warmup;
    po.trace_steps = o->trace_steps, po.train = !strcmp(mode, "train"), po.na_impl = impl;
    po.roofline_gflops = roofline;
    po.dev = dev;
    po.precision = prec;
    po.recompute = o->recompute;
    if (o->recompute && !o->label) {
        const size_t used = strlen(po.label);
        snprintf(po.label + used, sizeof po.label - used, "+recompute");
    }
    nat_profile_result r;
    if (nat_profile_run(&po, &r) != NAT_OK) {
        fprintf(stderr, "nat-profile: %s %s: %s\n", po.label, mode, nat_error_message());
        return 1;
    }
    nat_profile_print(stdout, &po, &r);
    fflush(stdout);
    if (o->csv && nat_profile_csv_append(o->csv, &po, &r) != NAT_OK) {
        fprintf(stderr, "nat-profile: %s\n", nat_error_message());
        return 1;
    }
    return 0;
}

/* Runs one combination in a fresh process of this program; returns its exit code. */
static int run_child(const options *o, const char *model, const char *mode, const char *impl, const char *attention,
                     double roofline)
{
    char num[8][32], roof[32];
    const char *args[48];
    int n = 0;
    args[n++] = "nat-profile";
    args[n++] = "--child";
    args[n++] = o->config ? "--config" : "--model";
    args[n++] = o->config ? o->config : model;
    args[n++] = "--mode", args[n++] = mode, args[n++] = "--na-impl", args[n++] = impl;
    args[n++] = "--attention", args[n++] = attention;
    args[n++] = "--device", args[n++] = o->device, args[n++] = "--dtype", args[n++] = o->dtype;
    const char *names[8] = {"--batch", "--res", "--steps", "--warmup", "--trace-steps", "--window", "--classes", "--in-chans"};
    const int values[8] = {o->batch, o->res, o->steps, o->warmup, o->trace_steps, o->window, o->classes, o->in_chans};
    for (int i = 0; i < 8; i++) {
        snprintf(num[i], sizeof num[i], "%d", values[i]);
        args[n++] = names[i];
        args[n++] = num[i];
    }
    snprintf(roof, sizeof roof, "%.3f", roofline);
    args[n++] = "--roofline", args[n++] = roof;
    if (o->csv)
        args[n++] = "--csv", args[n++] = o->csv;
    if (o->label)
        args[n++] = "--label", args[n++] = o->label;
    if (o->recompute)
        args[n++] = "--recompute";
    args[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "nat-profile: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        execv("/proc/self/exe", (char *const *)args);
        fprintf(stderr, "nat-profile: exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "nat-profile: the run of %s %s was killed by signal %d (out of memory?)\n",
                o->config ? o->config : model, mode, WTERMSIG(status));
        return 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int runs(const options *o)
{
    nat_device dev;
    nat_precision prec;
    int rc = parse_backend(o, &dev, &prec);
    if (rc)
        return rc;
    char mb[256], db[64], ib[128], ab[64];
    const char *models[MAX_LIST], *modes[MAX_LIST], *impls[MAX_LIST], *attns[MAX_LIST];
    int nm = 1, nd, ni, na;
    models[0] = NULL;
    if (o->sweep && !o->model && !o->config) {
        nm = 0;
        for (const char *const *v = nat_model_variant_names(); *v && nm < MAX_LIST; v++)
            models[nm++] = *v;
    } else if (o->model) {
        nm = split(o->model, mb, sizeof mb, models);
    }
    nd = split(o->modes ? o->modes : o->sweep ? "train,infer" : "train", db, sizeof db, modes);
    ni = split(o->impls, ib, sizeof ib, impls);
    na = split(o->attentions, ab, sizeof ab, attns);
    for (int i = 0; i < nd; i++) {
        if (!strcmp(modes[i], "both") && nd == 1) {
            nd = split("train,infer", db, sizeof db, modes);
            break;
        }
        if (strcmp(modes[i], "train") && strcmp(modes[i], "infer")) {
            fprintf(stderr, "nat-profile: --mode '%s': train, infer or both\n", modes[i]);
            return 2;
        }
    }
    nat_profile_na_impl impl_v[MAX_LIST];
    for (int i = 0; i < ni; i++)
        if ((rc = parse_impl(impls[i], &impl_v[i])))
            return rc;
    for (int i = 0; i < na; i++)
        if (strcmp(attns[i], "na") && strcmp(attns[i], "window")) {
            fprintf(stderr, "nat-profile: --attention '%s': na or window\n", attns[i]);
            return 2;
        }
    for (int i = 0; i < nm && models[i]; i++) {
        nat_model_desc d;
        if (nat_model_desc_variant(&d, models[i], o->classes, o->in_chans) != NAT_OK) {
            fprintf(stderr, "nat-profile: %s\n", nat_error_message());
            return 2;
        }
    }
    const double roofline = roofline_value(o);
    if (roofline <= 0) {
        fprintf(stderr, "nat-profile: --roofline '%s': a positive GFLOP/s value or 'measure'\n", o->roofline);
        return 2;
    }
    /* window attention does not depend on the NA implementation, and has no dilations */
    int total = 0;
    for (int m = 0; m < nm; m++)
        for (int a = 0; a < na; a++)
            for (int i = 0; i < ni; i++)
                total += !(!strcmp(attns[a], "window") && (i > 0 || (models[m] && !strncmp(models[m], "dinat", 5))));
    total *= nd;
    int failed = 0;
    for (int m = 0; m < nm; m++)
        for (int a = 0; a < na; a++)
            for (int i = 0; i < ni; i++) {
                int window = !strcmp(attns[a], "window");
                if (window && (i > 0 || (models[m] && !strncmp(models[m], "dinat", 5))))
                    continue;
                for (int d = 0; d < nd; d++) {
                    if (total == 1 || o->child)
                        rc = run_one(o, models[m], modes[d], impl_v[i], window, roofline, dev, prec);
                    else
                        rc = run_child(o, models[m], modes[d], impls[i], attns[a], roofline);
                    failed += rc != 0;
                    if (total > 1)
                        printf("\n");
                }
            }
    if (failed && total > 1)
        fprintf(stderr, "nat-profile: %d of %d runs failed\n", failed, total);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "try 'nat-profile --help'\n");
        return 2;
    }
    if (o.run)
        return runs(&o);
    if (o.model && !strcmp(o.model, "all")) {
        if (o.forward) {
            fprintf(stderr, "nat-profile: --forward takes one model, not 'all'\n");
            return 2;
        }
        return summary(&o);
    }
    nat_profile_opts po;
    int rc = make_desc(&o, o.model, !strcmp(o.attentions, "window"), &po);
    if (rc)
        return rc;
    if ((o.params || o.flops) && print_counts(&o, &po.desc))
        return 1;
    if (o.forward)
        return time_forward(&o, &po.desc);
    return 0;
}
