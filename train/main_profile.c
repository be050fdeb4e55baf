/* train/main_profile.c — nat-profile: parameter and multiply-add counts of NAT / DiNAT variants, with a
 * per-level breakdown, and optionally the CPU time of one inference forward.
 *
 * Counts are analytic (nat_model_desc_count: fvcore's conventions, as NAT's paper used); --forward
 * builds the model and times nat_model_forward with gradients off (median of --repeat runs after one
 * warm-up), reporting the allocator's peak bytes of the step as well.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/model.h"
#include "nat/ops.h"
#include "train/bench.h"

typedef struct options {
    const char *model;
    int params, flops, forward;
    int res, classes, in_chans, batch, repeat;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-profile --model NAME [--params] [--flops] [--forward] [options]\n"
            "Counts a NAT / DiNAT classifier's parameters and multiply-adds (fvcore's convention: a multiply-add\n"
            "counts once), level by level; with --forward also times one inference forward on the CPU.\n"
            "  --model NAME     nat_mini, nat_tiny, nat_small, nat_base, dinat_mini, dinat_tiny, dinat_small,\n"
            "                   dinat_base, or 'all' for a one-line summary of every variant\n"
            "  --params         print parameter counts (default when none of --params/--flops/--forward is given)\n"
            "  --flops          print GMACs per image (default likewise)\n"
            "  --forward        time nat_model_forward (gradients off), median of --repeat runs\n"
            "  --res N          input height and width (default 224)\n"
            "  --classes N      classifier outputs (default 1000)\n"
            "  --in-chans N     input channels (default 3)\n"
            "  --batch N        images per forward for --forward (default 1)\n"
            "  --repeat N       timed forwards for --forward (default 5)\n"
            "  --help           this text\n"
            "Threads: OMP_NUM_THREADS.\n");
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
    *o = (options){NULL, 0, 0, 0, 224, 1000, 3, 1, 5};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int *target = NULL, lo = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--model")) {
            if (!next) {
                fprintf(stderr, "nat-profile: --model needs a name\n");
                return -1;
            }
            o->model = next;
            i++;
            continue;
        } else if (!strcmp(a, "--params")) {
            o->params = 1;
            continue;
        } else if (!strcmp(a, "--flops")) {
            o->flops = 1;
            continue;
        } else if (!strcmp(a, "--forward")) {
            o->forward = 1;
            continue;
        } else if (!strcmp(a, "--res")) {
            target = &o->res;
        } else if (!strcmp(a, "--classes")) {
            target = &o->classes;
        } else if (!strcmp(a, "--in-chans")) {
            target = &o->in_chans;
        } else if (!strcmp(a, "--batch")) {
            target = &o->batch;
        } else if (!strcmp(a, "--repeat")) {
            target = &o->repeat;
        } else {
            fprintf(stderr, "nat-profile: unknown option '%s'\n", a);
            return -1;
        }
        if (parse_int(a, next, lo, target))
            return -1;
        i++;
    }
    if (!o->model) {
        fprintf(stderr, "nat-profile: --model is required\n");
        return -1;
    }
    if (!o->params && !o->flops && !o->forward)
        o->params = o->flops = 1;
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
        printf("  GMACs per image: %.1f (%s multiply-adds)\n", (double)c.macs / 1e9, grouped(c.macs, g, sizeof g));
    printf("  %-14s %-9s %5s %13s %9s %9s\n", "part", "map", "dim", o->params ? "params" : "",
           o->flops ? "GMACs" : "", o->flops ? "NA op" : "");
    snprintf(map, sizeof map, "%dx%d", c.map_h[0], c.map_w[0]);
    row(o, "patch_embed", map, d->embed_dim, c.params_tokenizer, c.macs_tokenizer, -1);
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        char part[32];
        snprintf(part, sizeof part, "levels.%d x%d", i, d->depths[i]);
        snprintf(map, sizeof map, "%dx%d", c.map_h[i], c.map_w[i]);
        row(o, part, map, c.dims[i], c.params_layers[i], c.macs_layers[i], c.macs_attn[i]);
        if (i < NAT_MODEL_LEVELS - 1) {
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
    double now = nat_bench_now();
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
        double t0 = nat_bench_now();
        pc.n = 0;
        pc.last = t0;
        if (nat_model_forward(m, ctx, x, false, NULL, &logits) != NAT_OK) {
            fprintf(stderr, "nat-profile: forward: %s\n", nat_error_message());
            free(t);
            goto done;
        }
        double dt = nat_bench_now() - t0;
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

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "try 'nat-profile --help'\n");
        return 2;
    }
    if (!strcmp(o.model, "all")) {
        if (o.forward) {
            fprintf(stderr, "nat-profile: --forward takes one model, not 'all'\n");
            return 2;
        }
        return summary(&o);
    }
    nat_model_desc d;
    if (nat_model_desc_variant(&d, o.model, o.classes, o.in_chans) != NAT_OK) {
        fprintf(stderr, "nat-profile: %s\n", nat_error_message());
        return 2;
    }
    d.img_size = o.res;
    if ((o.params || o.flops) && print_counts(&o, &d))
        return 1;
    if (o.forward)
        return time_forward(&o, &d);
    return 0;
}
