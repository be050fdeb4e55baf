/* bench/profile_run.c — one nat-profile run: build, warm up, time steps, trace steps for the per-layer
 * table, read the allocator and the process's RSS (see bench/profile.h). */
#define _POSIX_C_SOURCE 200809L
#include <oneapi/dnnl/dnnl.h> /* dnnl_sgemm (the roofline) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/cuda.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "nat/optim.h"
#include "bench/bench.h"
#include "train/train.h"
#include "bench/profile.h"
#include "models/nat/nat_internal.h" /* nat_model_set_na_fn */

#define MAX_EVENTS 1024

const char *nat_profile_na_impl_name(nat_profile_na_impl impl)
{
    switch (impl) {
    case NAT_PROFILE_NA_FUSED: return "fused";
    case NAT_PROFILE_NA_UNFUSED: return "unfused";
    case NAT_PROFILE_NA_GATHER: return "gather";
    }
    return "?";
}

void nat_profile_set_na_impl(nat_model *m, nat_profile_na_impl impl)
{
    nat_model_set_na_fn(m, impl == NAT_PROFILE_NA_UNFUSED  ? nat_na_unfused
                           : impl == NAT_PROFILE_NA_GATHER ? nat_bench_na_by_gather
                                                           : NULL);
}

nat_profile_opts nat_profile_opts_default(void)
{
    nat_profile_opts o;
    memset(&o, 0, sizeof o);
    o.desc = nat_model_desc_default();
    snprintf(o.desc.name, sizeof o.desc.name, "nat_mini");
    snprintf(o.label, sizeof o.label, "nat_mini");
    o.dev = NAT_CPU;
    o.precision = NAT_PREC_F32;
    o.batch = 8;
    o.res = 224;
    o.steps = 5;
    o.warmup = 1;
    o.trace_steps = 3;
    o.train = true;
    o.na_impl = NAT_PROFILE_NA_FUSED;
    o.roofline_gflops = NAT_PROFILE_ROOFLINE_DEFAULT;
    o.seed = 1;
    return o;
}

void nat_profile_rss(size_t *peak, size_t *current)
{
    *peak = *current = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned long kb;
        if (sscanf(line, "VmHWM: %lu kB", &kb) == 1)
            *peak = (size_t)kb * 1024;
        else if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
            *current = (size_t)kb * 1024;
    }
    fclose(f);
}

double nat_profile_measure_roofline(void)
{
    const int n = 2048;
    float *a = malloc(sizeof *a * (size_t)n * n), *b = malloc(sizeof *b * (size_t)n * n),
          *c = malloc(sizeof *c * (size_t)n * n);
    double best = 0;
    if (a && b && c) {
        for (size_t i = 0; i < (size_t)n * n; i++)
            a[i] = b[i] = (float)(i % 7) * 0.1f;
        for (int r = 0; r < 4; r++) {
            double t0 = nat_wall_now();
            dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double g = 2.0 * n * n * (double)n / (nat_wall_now() - t0) / 1e9;
            if (r > 0 && g > best)
                best = g;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* ---- the traced step's events ---- */

typedef struct trace_log {
    int n;
    nat_device dev; /* where the step runs: read its clock after a device synchronize */
    nat_model_part_event ev[MAX_EVENTS];
    double t[MAX_EVENTS];
    size_t mem[MAX_EVENTS];
} trace_log;

static void on_event(void *user, const nat_model_part_event *ev)
{
    trace_log *l = user;
    if (l->n < MAX_EVENTS) {
        /* On a GPU the part's kernels must be done before its time is read: traced steps synchronize at
         * every part boundary (the table's step is printed with its overhead against the median). */
        if (l->dev.kind == NAT_DEV_CUDA)
            (void)nat_cuda_synchronize(l->dev.index);
        l->ev[l->n] = *ev;
        l->t[l->n] = nat_wall_now();
        l->mem[l->n] = nat_mem_get_stats(l->dev).current;
        l->n++;
    }
}

/* Row names, in table order. Level rows exist for levels in use; downsamplers for all but the last. */
typedef struct row_map {
    int n;
    nat_profile_row rows[NAT_PROFILE_MAX_ROWS];
    int tokenizer, norms[NAT_MODEL_LEVELS], attn[NAT_MODEL_LEVELS], mlp[NAT_MODEL_LEVELS], down[NAT_MODEL_LEVELS];
    int head, loss, optim, other;
} row_map;

static int add_row(row_map *m, const char *name)
{
    snprintf(m->rows[m->n].name, sizeof m->rows[m->n].name, "%s", name);
    return m->n++;
}

static void build_rows(row_map *m, const nat_model_desc *d, bool train)
{
    memset(m, 0, sizeof *m);
    const int L = nat_model_desc_levels(d);
    const char *attn = d->attention == NAT_ATTN_WINDOW ? "window attn" : "NA";
    char name[40];
    m->tokenizer = add_row(m, "tokenizer");
    for (int i = 0; i < L; i++) {
        snprintf(name, sizeof name, "levels.%d norms", i);
        m->norms[i] = add_row(m, name);
        snprintf(name, sizeof name, "levels.%d %s", i, attn);
        m->attn[i] = add_row(m, name);
        snprintf(name, sizeof name, "levels.%d mlp", i);
        m->mlp[i] = add_row(m, name);
        m->down[i] = -1;
        if (i < L - 1) {
            snprintf(name, sizeof name, "levels.%d downsample", i);
            m->down[i] = add_row(m, name);
        }
    }
    m->head = add_row(m, "head");
    m->loss = train ? add_row(m, "loss") : -1;
    m->optim = train ? add_row(m, "optimizer") : -1;
    m->other = add_row(m, "other (ctx reset)");
}

static int row_of(const row_map *m, const nat_model_part_event *e)
{
    switch (e->kind) {
    case NAT_PART_TOKENIZER: return m->tokenizer;
    case NAT_PART_NORM1:
    case NAT_PART_NORM2: return m->norms[e->level];
    case NAT_PART_ATTN: return m->attn[e->level];
    case NAT_PART_MLP: return m->mlp[e->level];
    case NAT_PART_DOWNSAMPLE: return m->down[e->level];
    case NAT_PART_HEAD: return m->head;
    }
    return m->other;
}

/* The part a parameter belongs to, from its PyTorch name. */
static int row_of_param(const row_map *m, const char *name)
{
    int level = -1;
    if (!strncmp(name, "patch_embed.", 12))
        return m->tokenizer;
    if (sscanf(name, "levels.%d.", &level) != 1 || level < 0 || level >= NAT_MODEL_LEVELS)
        return m->head; /* norm.*, head.* */
    if (strstr(name, ".downsample."))
        return m->down[level] >= 0 ? m->down[level] : m->other;
    if (strstr(name, ".norm1.") || strstr(name, ".norm2."))
        return m->norms[level];
    if (strstr(name, ".attn.") || strstr(name, ".gamma1"))
        return m->attn[level];
    return m->mlp[level]; /* mlp.*, gamma2 */
}

/* ---- a run ---- */

typedef struct runner {
    const nat_profile_opts *o;
    nat_model *m;
    nat_ctx *ctx;
    nat_optim *opt;
    nat_tensor *x;
    int32_t *labels;
    nat_rng rng;
} runner;

/* Timestamps of one step's phases, for the accounting of a traced step. */
typedef struct step_marks {
    double start, fwd_end, bwd_start, bwd_end, opt_end, end;
    size_t loss_mem; /* allocator bytes in use after the loss's forward */
} step_marks;

/* Host clock after the device's queued work is done (GPU work is asynchronous). */
static double now(const runner *r)
{
    if (r->o->dev.kind == NAT_DEV_CUDA)
        (void)nat_cuda_synchronize(r->o->dev.index); /* an error shows up in the next op */
    return nat_wall_now();
}

static nat_status step(runner *r, step_marks *mk)
{
    nat_tensor *logits, *loss;
    mk->start = now(r);
    if (r->o->train) {
        NAT_TRY(nat_model_forward(r->m, r->ctx, r->x, true, &r->rng, &logits));
        mk->fwd_end = now(r);
        NAT_TRY(nat_cross_entropy(r->ctx, logits, r->labels, 0.1f, &loss));
        mk->bwd_start = now(r);
        mk->loss_mem = nat_mem_get_stats(r->o->dev).current;
        NAT_TRY(nat_backward(r->ctx, loss));
        mk->bwd_end = now(r);
        NAT_TRY(nat_optim_step(r->opt, 1e-4f));
        nat_optim_zero_grad(r->opt);
        mk->opt_end = now(r);
    } else {
        NAT_TRY(nat_model_forward(r->m, r->ctx, r->x, false, NULL, &logits));
        mk->fwd_end = mk->bwd_start = mk->bwd_end = mk->opt_end = now(r);
    }
    nat_ctx_reset(r->ctx);
    mk->end = now(r);
    return NAT_OK;
}

static nat_status setup(runner *r)
{
    const nat_profile_opts *o = r->o;
    NAT_TRY(nat_model_new(&r->m, &o->desc));
    nat_profile_set_na_impl(r->m, o->na_impl);
    nat_model_set_recompute(r->m, o->recompute);
    if (o->dev.kind != NAT_DEV_CPU)
        NAT_TRY(nat_model_to(r->m, o->dev));
    NAT_TRY(nat_ctx_new(&r->ctx, o->dev));
    nat_ctx_set_grad_enabled(r->ctx, o->train);
    nat_ctx_set_precision(r->ctx, o->precision);
    int64_t xs[4] = {o->batch, o->desc.in_chans, o->res, o->res};
    NAT_TRY(nat_tensor_new(&r->x, NAT_F32, NAT_CPU, 4, xs));
    nat_rng_seed(&r->rng, o->seed);
    nat_rng_fill_normal(&r->rng, nat_tensor_f32(r->x), (size_t)nat_tensor_numel(r->x), 0.0f, 1.0f);
    if (o->dev.kind != NAT_DEV_CPU)
        NAT_TRY(nat_tensor_move(r->x, o->dev)); /* one upload: the timed steps measure the model only */
    r->labels = malloc(sizeof *r->labels * (size_t)o->batch);
    if (!r->labels)
        return nat_error(NAT_ERR_OOM, "profile: out of memory");
    for (int i = 0; i < o->batch; i++)
        r->labels[i] = (int32_t)nat_rng_below(&r->rng, (uint32_t)o->desc.num_classes);
    if (!o->train)
        return NAT_OK;
    nat_optim_config oc = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    NAT_TRY(nat_optim_new(&r->opt, &oc));
    const nat_param_list *l = nat_model_params(r->m);
    nat_tensor **decay = malloc(sizeof *decay * (size_t)l->count), **keep = malloc(sizeof *keep * (size_t)l->count);
    int nd = 0, nk = 0;
    nat_status s = decay && keep ? NAT_OK : nat_error(NAT_ERR_OOM, "profile: out of memory");
    for (int i = 0; s == NAT_OK && i < l->count; i++) {
        if (l->items[i].no_decay)
            keep[nk++] = l->items[i].tensor;
        else
            decay[nd++] = l->items[i].tensor;
    }
    if (s == NAT_OK && nd)
        s = nat_optim_add_group(r->opt, decay, nd, 0.05f);
    if (s == NAT_OK && nk)
        s = nat_optim_add_group(r->opt, keep, nk, 0.0f);
    free(decay);
    free(keep);
    return s;
}

static void teardown(runner *r)
{
    nat_optim_free(r->opt);
    nat_tensor_free(r->x);
    nat_ctx_free(r->ctx);
    nat_model_free(r->m);
    free(r->labels);
}

/* Charges every interval of a traced step to one row: a forward event closes its part, a backward
 * event opens its part (the backward of everything after it is done). */
static void account(row_map *rm, const trace_log *l, const step_marks *mk, size_t mem0)
{
    double t = mk->start;
    size_t mem = mem0;
    int i = 0;
    for (; i < l->n && !l->ev[i].backward; i++) {
        int r = row_of(rm, &l->ev[i]);
        rm->rows[r].fwd_s += l->t[i] - t;
        rm->rows[r].act_bytes += (int64_t)l->mem[i] - (int64_t)mem;
        t = l->t[i];
        mem = l->mem[i];
    }
    if (rm->loss < 0) { /* inference: from the head's event to the forward's return */
        rm->rows[rm->head].fwd_s += mk->fwd_end - t;
        rm->rows[rm->other].fwd_s += mk->end - mk->fwd_end;
        return;
    }
    rm->rows[rm->loss].fwd_s += mk->bwd_start - t;
    rm->rows[rm->loss].act_bytes += (int64_t)mk->loss_mem - (int64_t)mem;
    t = mk->bwd_start;
    int open = rm->loss; /* whose backward is running: first the loss's */
    for (; i < l->n; i++) {
        rm->rows[open].bwd_s += l->t[i] - t;
        t = l->t[i];
        open = row_of(rm, &l->ev[i]);
    }
    rm->rows[open].bwd_s += mk->bwd_end - t;
    rm->rows[rm->optim].fwd_s += mk->opt_end - mk->bwd_end;
    rm->rows[rm->other].fwd_s += mk->end - mk->opt_end;
}

nat_status nat_profile_run(const nat_profile_opts *o, nat_profile_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->batch < 1 || o->res < 1 || o->steps < 1 || o->warmup < 0 || o->trace_steps < 0 || !(o->roofline_gflops > 0))
        return nat_error(NAT_ERR_INVALID_ARG, "profile: batch %d, res %d, steps %d, warmup %d, trace steps %d, roofline %g",
                         o->batch, o->res, o->steps, o->warmup, o->trace_steps, o->roofline_gflops);
    nat_model_counts c;
    NAT_TRY(nat_model_desc_count(&o->desc, o->res, o->res, &c));
    res->params = c.params;
    res->macs_per_image = c.macs;
    res->flop_per_image = 2.0 * (double)c.macs * (o->train ? 3.0 : 1.0);

    runner r = {o, NULL, NULL, NULL, NULL, NULL, {{0}}};
    nat_status s = setup(&r);
    double *times = calloc((size_t)(o->steps > o->trace_steps ? o->steps : o->trace_steps) + 1, sizeof *times);
    trace_log *logs = o->trace_steps ? calloc((size_t)o->trace_steps, sizeof *logs) : NULL;
    step_marks *marks = o->trace_steps ? calloc((size_t)o->trace_steps, sizeof *marks) : NULL;
    size_t *mem0 = o->trace_steps ? calloc((size_t)o->trace_steps, sizeof *mem0) : NULL;
    if (s == NAT_OK && (!times || (o->trace_steps && (!logs || !marks || !mem0))))
        s = nat_error(NAT_ERR_OOM, "profile: out of memory");
    step_marks mk;
    for (int i = 0; s == NAT_OK && i < o->warmup; i++) {
        s = step(&r, &mk);
        if (i == 0)
            res->first_step_s = mk.end - mk.start;
    }
    if (s == NAT_OK) {
        nat_mem_reset_peak(o->dev);
        res->alloc_persistent = nat_mem_get_stats(o->dev).current;
    }
    for (int i = 0; s == NAT_OK && i < o->steps; i++) {
        s = step(&r, &mk);
        times[i] = mk.end - mk.start;
        if (o->warmup == 0 && i == 0)
            res->first_step_s = times[i];
    }
    if (s == NAT_OK) {
        res->alloc_peak = nat_mem_get_stats(o->dev).peak;
        res->step_min_s = res->step_max_s = times[0];
        for (int i = 1; i < o->steps; i++) {
            res->step_min_s = times[i] < res->step_min_s ? times[i] : res->step_min_s;
            res->step_max_s = times[i] > res->step_max_s ? times[i] : res->step_max_s;
        }
        res->step_median_s = nat_bench_median(times, o->steps);
        res->images_per_s = o->batch / res->step_median_s;
        res->gflops = res->flop_per_image * o->batch / res->step_median_s / 1e9;
        res->mfu = res->gflops / o->roofline_gflops;
    }
    for (int i = 0; s == NAT_OK && i < o->trace_steps; i++) {
        logs[i].dev = o->dev;
        nat_model_set_trace(r.m, on_event, &logs[i]);
        mem0[i] = nat_mem_get_stats(o->dev).current;
        s = step(&r, &marks[i]);
        nat_model_set_trace(r.m, NULL, NULL);
        times[i] = marks[i].end - marks[i].start;
    }
    if (s == NAT_OK && o->trace_steps) {
        /* The table comes from the traced step of median total. */
        int pick = 0;
        double *sorted = calloc((size_t)o->trace_steps, sizeof *sorted);
        if (sorted) {
            memcpy(sorted, times, sizeof *sorted * (size_t)o->trace_steps);
            double med = nat_bench_median(sorted, o->trace_steps);
            for (int i = 0; i < o->trace_steps; i++)
                if (times[i] == med || (o->trace_steps % 2 == 0 && times[i] >= med && times[pick] < med))
                    pick = i;
            free(sorted);
        }
        row_map rm;
        build_rows(&rm, &o->desc, o->train);
        account(&rm, &logs[pick], &marks[pick], mem0[pick]);
        const nat_param_list *pl = nat_model_params(r.m);
        for (int i = 0; i < pl->count; i++)
            rm.rows[row_of_param(&rm, pl->items[i].name)].params += nat_tensor_numel(pl->items[i].tensor);
        res->n_rows = rm.n;
        memcpy(res->rows, rm.rows, sizeof rm.rows);
        res->traced_total_s = marks[pick].end - marks[pick].start;
        res->traced_overhead = res->traced_total_s / res->step_median_s - 1.0;
    }
    nat_profile_rss(&res->rss_peak, &res->rss);
    free(times);
    free(logs);
    free(marks);
    free(mem0);
    teardown(&r);
    return s;
}
