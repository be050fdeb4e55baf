/* train/loop.c — see train/train.h (section loop). The run is a struct `run` built by setup() and torn down
 * by teardown(), so every exit path frees everything (the tests run under ASan). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"
#include "train/dist.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h> /* flock */
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cpu/isa.h" /* the bf16 note */
#include "nat/alloc.h"
#include "nat/cuda.h"
#include "nat/data.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "nat/optim.h"

typedef struct run {
    nat_config *cfg;
    const nat_train_opts *o;
    FILE *out;
    nat_dataset *train_ds, *test_ds;
    nat_loader *train_L, *test_L;
    nat_model *model;
    nat_ema ema;
    nat_optim *opt;
    nat_tensor **params; /* every parameter, for clipping */
    int n_params;
    nat_ctx *ctx;
    nat_replicas reps;     /* train.replicas > 1: data-parallel copies of the model (CPU) */
    nat_dist *dist;        /* a multi-process job (borrowed; NULL: one process) */
    int rank, ranks;       /* this process's rank and the number of processes (1: alone) */
    float *flat;           /* ranks > 1 on the CPU: the gradients, flattened for the all-reduce */
    int64_t flat_cap;
    nat_nccl *nccl;        /* ranks > 1 on GPUs: the NCCL communicator (owned) */
    nat_device dev;        /* train.device: parameters, optimizer state, EMA and every step live there */
    nat_precision prec;    /* train.precision: the context's autocast */
    nat_loss_scaler scaler; /* f16 only */
    nat_metrics met;
    nat_train_log log;
    char *config_text;
    char dir[NAT_CFG_STR];
    int dir_lock;          /* the run directory, open and flock'ed for the life of the run; -1: none */
    char last_ckpt[NAT_CFG_STR + 64];
    int64_t last_ckpt_step;
    int64_t spe, total, stop_at; /* steps per epoch, planned steps, last step of this run */
    nat_lr_schedule sched;
    nat_train_state st;
} run;

static nat_status mkdirs(const char *path)
{
    char buf[NAT_CFG_STR];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return nat_error(NAT_ERR_IO, "run directory %s: cannot create %s: %s", path, buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return NAT_OK;
}

static void default_dir(const run *r, char *buf, size_t cap)
{
    char stem[128];
    const char *src = r->cfg->source, *base = strrchr(src, '/');
    snprintf(stem, sizeof stem, "%.100s", src[0] ? (base ? base + 1 : src) : r->cfg->model.name);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = 0;
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y%m%d-%H%M%S", &tm);
    snprintf(buf, cap, "runs/%s-%s", stem, when);
}

/* "a, b, c" of a dataset's class names (the first 12, then how many more). */
static void class_list(const nat_dataset *ds, char *buf, size_t cap)
{
    int n = nat_dataset_classes(ds);
    size_t at = 0;
    buf[0] = 0;
    for (int k = 0; k < n && at < cap; k++) {
        int w = k < 12 ? snprintf(buf + at, cap - at, "%s%s", k ? ", " : "", nat_dataset_class_name(ds, k))
                       : snprintf(buf + at, cap - at, " ... (%d more)", n - k);
        if (w < 0 || k >= 12)
            break;
        at += (size_t)w;
    }
}

/* The evaluation split must have the training split's classes, in the same order: labels are indices,
 * so val/{aardvark,cat} against train/{cat,dog} would be scored against the wrong classes, and a
 * different count failed only after training. Checked before anything is trained. */
static nat_status same_classes(const nat_dataset *train, const nat_dataset *test)
{
    int n = nat_dataset_classes(train);
    bool same = n == nat_dataset_classes(test);
    for (int k = 0; same && k < n; k++)
        same = !strcmp(nat_dataset_class_name(train, k), nat_dataset_class_name(test, k));
    if (same)
        return NAT_OK;
    char a[600], b[600];
    class_list(train, a, sizeof a);
    class_list(test, b, sizeof b);
    return nat_error(NAT_ERR_FORMAT,
                     "data: the evaluation split %s has %d classes (%s) but the training split %s has %d (%s); they must "
                     "be the same folders",
                     nat_dataset_name(test), nat_dataset_classes(test), b, nat_dataset_name(train), n, a);
}

/* Locks the run directory for the life of the run (flock on the directory itself: released by the
 * kernel when the process ends, however it ends), then makes sure a new run does not write over an
 * old one: a non-empty directory needs resume or overwrite. */
static nat_status claim_dir(run *r, bool resuming)
{
    r->dir_lock = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dir_lock < 0)
        return nat_error(NAT_ERR_IO, "run directory %s: cannot open: %s", r->dir, strerror(errno));
    if (flock(r->dir_lock, LOCK_EX | LOCK_NB) != 0)
        return nat_error(NAT_ERR_IO, "run directory %s is in use by another nat-train process (%s); give another --out",
                         r->dir, errno == EWOULDBLOCK ? "it holds the directory's lock" : strerror(errno));
    if (resuming)
        return NAT_OK;
    DIR *d = opendir(r->dir);
    if (!d)
        return nat_error(NAT_ERR_IO, "run directory %s: cannot read: %s", r->dir, strerror(errno));
    char first[256] = "";
    for (struct dirent *e; !first[0] && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(first, sizeof first, "%s", e->d_name);
    closedir(d);
    if (!first[0])
        return NAT_OK;
    if (r->o->overwrite)
        return nat_checkpoint_clear_run(r->dir);
    return nat_error(NAT_ERR_INVALID_ARG,
                     "run directory %s is not empty (it holds %s): continue that run with --resume %s, choose another "
                     "--out (or log.dir), or pass --overwrite to replace its checkpoints and logs",
                     r->dir, first, r->dir);
}

static nat_status save_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        if (f)
            fclose(f);
        return nat_error(NAT_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return NAT_OK;
}

static nat_status make_optimizer(run *r)
{
    const nat_config *c = r->cfg;
    nat_optim_config oc = !strcmp(c->optim.name, "sgd") ? nat_optim_sgd_config(c->optim.momentum, c->optim.nesterov)
                                                        : nat_optim_adamw_config(c->optim.beta1, c->optim.beta2, c->optim.eps);
    NAT_TRY(nat_optim_new(&r->opt, &oc));
    const nat_param_list *l = nat_model_params(r->model);
    r->params = malloc((size_t)l->count * sizeof *r->params);
    nat_tensor **decay = malloc((size_t)l->count * sizeof *decay), **no_decay = malloc((size_t)l->count * sizeof *no_decay);
    if (!r->params || !decay || !no_decay) {
        free(decay);
        free(no_decay);
        return nat_error(NAT_ERR_OOM, "optimizer: out of memory");
    }
    int nd = 0, nn = 0;
    for (int i = 0; i < l->count; i++) {
        r->params[i] = l->items[i].tensor;
        if (l->items[i].no_decay)
            no_decay[nn++] = l->items[i].tensor;
        else
            decay[nd++] = l->items[i].tensor;
    }
    r->n_params = l->count;
    nat_status s = nat_optim_add_group(r->opt, decay, nd, c->optim.weight_decay);
    if (s == NAT_OK)
        s = nat_optim_add_group(r->opt, no_decay, nn, 0.0f);
    free(decay);
    free(no_decay);
    return s;
}

static void teardown(run *r)
{
    nat_train_log_close(&r->log); /* on an error path: the first error is the one reported */
    if (r->dir_lock >= 0)
        close(r->dir_lock); /* releases the flock */
    nat_loader_free(r->train_L);
    nat_loader_free(r->test_L);
    nat_dataset_free(r->train_ds);
    nat_dataset_free(r->test_ds);
    nat_optim_free(r->opt);
    free(r->params);
    nat_ema_free(&r->ema);
    nat_replicas_free(&r->reps); /* before the master model and context it borrows */
    nat_model_free(r->model);
    nat_ctx_free(r->ctx);
    nat_metrics_free(&r->met);
    free(r->config_text);
    free(r->flat);
    nat_nccl_free(r->nccl);
}

/* The position of the loader before step `step` (0-based). */
static nat_loader_state position(const run *r, int64_t step)
{
    return (nat_loader_state){r->cfg->train.seed, step / r->spe, (step % r->spe) * r->cfg->train.accum_steps};
}

static nat_status checkpoint(run *r)
{
    char path[NAT_CFG_STR + 64];
    nat_checkpoint_path(path, sizeof path, r->dir, r->st.step);
    if (r->rank != 0) { /* the weights are the same on every rank: rank 0 alone writes them */
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
        r->last_ckpt_step = r->st.step;
        return NAT_OK;
    }
    r->st.loader = position(r, r->st.step);
    NAT_TRY(nat_checkpoint_save(path, r->model, r->opt, r->cfg->train.ema ? &r->ema : NULL, &r->st, r->config_text));
    NAT_TRY(nat_checkpoint_link_last(r->dir, path));
    NAT_TRY(nat_checkpoint_prune(r->dir, r->cfg->train.keep_checkpoints));
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
    r->last_ckpt_step = r->st.step;
    return NAT_OK;
}

/* Evaluates the model (and the EMA); fills the result's fields when res is not NULL. */
static nat_status evaluate(run *r, nat_train_result *res, bool *complete)
{
    FILE *out = r->out;
    double epoch = (double)r->st.step / (double)r->spe;
    for (int which = 0; which < (r->cfg->train.ema ? 2 : 1); which++) {
        double secs;
        /* Across ranks each evaluates every ranks-th batch and the metrics are summed; a stop request is
         * then honoured between steps only, so no rank leaves the pass the others are in. */
        NAT_TRY(nat_evaluate_part(which ? r->ema.model : r->model, r->ctx, r->test_L, &r->met, NULL,
                                  r->ranks > 1 ? NULL : r->o->stop, r->rank, r->ranks, &secs, complete));
        if (!*complete)
            return NAT_OK;
        NAT_TRY(nat_dist_metrics_reduce(r->dist, &r->met));
        double t1 = nat_metrics_top1(&r->met), t5 = nat_metrics_top5(&r->met), loss = nat_metrics_loss(&r->met);
        fprintf(out, "eval  epoch %.2f  step %lld  %-5s top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld images, %.1f s, %.0f img/s)\n",
                epoch, (long long)r->st.step, which ? "ema" : "model", t1, t5, loss, (long long)r->met.n, secs,
                (double)r->met.n / (secs > 0 ? secs : 1e-9));
        fflush(out);
        NAT_TRY(nat_train_log_eval(&r->log, r->st.step, epoch, which ? "ema" : "model", r->met.n, t1, t5, loss, secs));
        if (t1 > r->st.best_top1)
            r->st.best_top1 = t1;
        if (res && which == 0) {
            res->top1 = t1, res->top5 = t5, res->loss = loss;
        } else if (res) {
            res->has_ema = true;
            res->ema_top1 = t1, res->ema_top5 = t5, res->ema_loss = loss;
        }
    }
    return NAT_OK;
}

/* This rank's shard of micro-batch b in a multi-process run: the shard and the drop-path generator that
 * replica `rank` of train.replicas = ranks would get (section replicas), forward, loss scaled by the
 * shard's share of the batch, backward; then the gradients (rank 0's holding the earlier micro-batches
 * of the step, the others' their shard's alone) summed over the ranks in rank order, so every rank holds
 * what train.replicas' master does. The run's generator goes on from rank 0's. *loss: the batch's mean. */
static nat_status shard_step(run *r, const nat_batch *b, float mul, float *loss_out)
{
    const int W = r->ranks, n = (int)(b->n < W ? b->n : W); /* a short last batch may have fewer samples */
    nat_rng rng = {{0}}; /* the copies' generators are split off first; shard 0 goes on with the run's */
    for (int k = 1; k < n; k++) {
        nat_rng c = nat_rng_split(&r->st.rng);
        if (k == r->rank)
            rng = c;
    }
    if (r->rank == 0)
        rng = r->st.rng;
    typedef struct shard_result {
        float loss;
        int32_t n;
        nat_rng rng;
    } shard_result;
    shard_result mine = {0}, *all = malloc((size_t)W * sizeof *all);
    if (!all)
        return nat_error(NAT_ERR_OOM, "distributed: out of memory");
    nat_dist_grads_begin(r->dist, r->params, r->n_params);
    nat_status began = r->nccl ? nat_nccl_begin(r->nccl) : NAT_OK; /* GPUs: buckets go out during the backward
                                                                      (nat_ctx_watch_grads -> nat_nccl_grad_ready) */
    if (began != NAT_OK) {
        free(all);
        return began;
    }
    if (r->rank < n) {
        int64_t lo = 0;
        for (int k = 0; k < r->rank; k++)
            lo += b->n / n + (k < b->n % n);
        const int64_t sn = b->n / n + (r->rank < b->n % n);
        const int64_t per = (int64_t)b->c * b->h * b->w;
        nat_tensor *x, *logits, *loss;
        const int64_t xs[4] = {sn, b->c, b->h, b->w};
        nat_status s = nat_train_upload(r->ctx, b->x + lo * per, 4, xs, &x);
        if (s == NAT_OK)
            s = nat_model_forward(r->model, r->ctx, x, true, &rng, &logits);
        if (s == NAT_OK && b->targets) {
            nat_tensor *t;
            const int64_t ts[2] = {sn, b->classes};
            s = nat_train_upload(r->ctx, b->targets + lo * b->classes, 2, ts, &t);
            if (s == NAT_OK)
                s = nat_cross_entropy_soft(r->ctx, logits, t, &loss);
        } else if (s == NAT_OK) {
            s = nat_cross_entropy(r->ctx, logits, b->labels + lo, r->cfg->aug.label_smoothing, &loss);
        }
        if (s == NAT_OK)
            s = nat_train_download(loss, &mine.loss, 1);
        /* the expression train.replicas scales by, for the same bits */
        if (s == NAT_OK)
            s = nat_scale(r->ctx, loss, mul * (float)sn / (float)b->n, &loss);
        if (s == NAT_OK)
            s = nat_backward(r->ctx, loss);
        nat_ctx_reset(r->ctx);
        mine.n = (int32_t)sn;
        if (s != NAT_OK) {
            free(all);
            return s;
        }
    }
    mine.rng = rng;
    nat_status s = nat_dist_allgather(r->dist, &mine, all, sizeof mine);
    if (s == NAT_OK && r->nccl) /* the buckets not sent yet, then wait for every sum */
        s = nat_nccl_finish(r->nccl);
    else if (s == NAT_OK)
        s = nat_dist_grads_reduce(r->dist, r->ctx, r->params, r->n_params, &r->flat, &r->flat_cap);
    if (s == NAT_OK) {
        r->st.rng = all[0].rng;
        double sum = 0;
        for (int k = 0; k < n; k++)
            sum += (double)all[k].loss * (double)all[k].n;
        *loss_out = (float)(sum / (double)b->n);
    }
    free(all);
    return s;
}

/* *flag = whether it is set on any rank. */
static nat_status any_rank(run *r, bool *flag)
{
    char mine = *flag, *all = malloc((size_t)r->ranks);
    if (!all)
        return nat_error(NAT_ERR_OOM, "distributed: out of memory");
    nat_status s = nat_dist_allgather(r->dist, &mine, all, 1);
    for (int k = 0; s == NAT_OK && k < r->ranks; k++)
        *flag |= all[k] != 0;
    free(all);
    return s;
}

/* One optimizer step: accum_steps micro-batches, clipping, update, EMA. */
static nat_status step(run *r, double lr, double *loss_out, double *norm_out, int64_t *images)
{
    const nat_config *c = r->cfg;
    const int accum = c->train.accum_steps;
    double loss_sum = 0;
    *images = 0;
    for (int a = 0; a < accum; a++) {
        nat_batch b;
        NAT_TRY(nat_loader_next(r->train_L, &b));
        /* f16: the loss scale multiplies every gradient, so small ones survive f16's range. */
        const float mul = (r->prec == NAT_PREC_F16 ? nat_loss_scaler_scale(&r->scaler) : 1.0f) / (float)accum;
        if (r->reps.n > 1 || r->ranks > 1) {
            float lv;
            if (r->ranks > 1)
                NAT_TRY(shard_step(r, &b, mul, &lv));
            else
                NAT_TRY(nat_replicas_step(&r->reps, &b, c->aug.label_smoothing, &r->st.rng, mul, &lv));
            loss_sum += lv;
            *images += b.n;
            continue;
        }
        nat_tensor *x, *logits, *loss;
        int64_t xs[4] = {b.n, b.c, b.h, b.w};
        NAT_TRY(nat_train_upload(r->ctx, b.x, 4, xs, &x));
        NAT_TRY(nat_model_forward(r->model, r->ctx, x, true, &r->st.rng, &logits));
        if (b.targets) {
            nat_tensor *t;
            int64_t ts[2] = {b.n, b.classes};
            NAT_TRY(nat_train_upload(r->ctx, b.targets, 2, ts, &t));
            NAT_TRY(nat_cross_entropy_soft(r->ctx, logits, t, &loss));
        } else {
            NAT_TRY(nat_cross_entropy(r->ctx, logits, b.labels, c->aug.label_smoothing, &loss));
        }
        float lv;
        NAT_TRY(nat_train_download(loss, &lv, 1));
        loss_sum += lv;
        if (mul != 1.0f)
            NAT_TRY(nat_scale(r->ctx, loss, mul, &loss));
        NAT_TRY(nat_backward(r->ctx, loss));
        nat_ctx_reset(r->ctx);
        *images += b.n;
    }
    bool finite = true;
    if (r->prec == NAT_PREC_F16) /* unscale before clipping, so the clip sees the true norm */
        NAT_TRY(nat_loss_scaler_unscale(&r->scaler, r->params, r->n_params, &finite));
    float norm;
    NAT_TRY(nat_clip_grad_norm(r->params, r->n_params, c->optim.clip_grad > 0 ? c->optim.clip_grad : FLT_MAX, &norm));
    *loss_out = loss_sum / accum;
    *norm_out = norm;
    if (r->prec == NAT_PREC_F16 && !nat_loss_scaler_update(&r->scaler, finite)) {
        /* Expected now and then (mostly early, while the scale is too high): not a warning. */
        r->st.skipped++;
        fprintf(r->out, "note: step %lld: non-finite f16 gradient; update skipped, loss scale lowered to %g\n",
                (long long)r->st.step + 1, (double)nat_loss_scaler_scale(&r->scaler));
    } else if (!isfinite(norm) || !isfinite(*loss_out)) {
        r->st.skipped++;
        fprintf(r->out, "warning: step %lld: non-finite %s; update skipped\n", (long long)r->st.step + 1,
                isfinite(*loss_out) ? "gradient" : "loss");
    } else {
        NAT_TRY(nat_optim_step(r->opt, (float)lr));
        if (c->train.ema)
            NAT_TRY(nat_ema_update(&r->ema, r->model));
    }
    nat_optim_zero_grad(r->opt);
    if (r->prec == NAT_PREC_F16) {
        r->st.loss_scale = r->scaler.scale;
        r->st.loss_scale_good = r->scaler.good_steps;
    }
    return NAT_OK;
}

/* NA pads a token map smaller than kernel x dilation up to that size in every layer (NATTEN's module
 * does the same), so a kernel far larger than the map costs far more than the map needs (k 63 on a 7x7
 * map: 81x per layer) without changing what the layer can see. More than 16x the map's area is warned
 * about; the main job's 1x1 last level under kernel 3 (9x, on a map that small) is not. */
static void warn_padded_levels(FILE *out, const nat_model_desc *d, int img)
{
    const int levels = d->num_levels > 0 ? d->num_levels : NAT_MODEL_LEVELS;
    /* The tokenizer's convolutions and the downsamplers (3x3, stride 2, pad 1) halve a side rounding up. */
    int h = (img + 1) / 2;
    if (d->patch_stride != 2)
        h = (h + 1) / 2;
    for (int l = 0; l < levels; l++, h = (h + 1) / 2) {
        if (d->attention != NAT_ATTN_NEIGHBORHOOD)
            break;
        int dil = 1;
        for (int j = 0; j < d->depths[l]; j++)
            dil = nat_model_desc_dilation(d, l, j) > dil ? nat_model_desc_dilation(d, l, j) : dil;
        const int win = d->kernel_size * dil;
        if (h > 0 && (double)win * win > 16.0 * h * h)
            fprintf(out,
                    "warning: level %d: kernel %d x dilation %d on a %dx%d token map: each layer pads it to %dx%d, "
                    "%.0fx the work of the map itself (a kernel no larger than the map sees as much)\n",
                    l, d->kernel_size, dil, h, h, win, win, (double)win * win / ((double)h * h));
    }
}

static nat_status setup(run *r, nat_train_result *res)
{
    nat_config *c = r->cfg;
    FILE *out = r->out;
    if (c->train.threads > 0)
        omp_set_num_threads(c->train.threads);
    NAT_TRY(nat_config_resolve(c));
    if (c->train.replicas > 1 && strcmp(c->train.device, "cpu") != 0) /* before any data or model is made */
        return nat_error(NAT_ERR_FORMAT,
                         "config %s: train.replicas = %d splits batches over model copies on the CPU; with train.device = "
                         "%s set train.replicas = 1",
                         c->source[0] ? c->source : "(defaults)", c->train.replicas, c->train.device);
    if (r->ranks > 1 && c->train.replicas > 1)
        return nat_error(NAT_ERR_FORMAT,
                         "config %s: train.replicas = %d in a job of %d processes: each process is one shard of every "
                         "batch already; set train.replicas = 1 (and train.threads = 1 for the bits of train.replicas = %d)",
                         c->source[0] ? c->source : "(defaults)", c->train.replicas, r->ranks, r->ranks);
    if (r->ranks > 1 && nat_config_device(c).kind == NAT_DEV_CUDA) { /* one GPU per process: its local rank's */
        if (!nat_nccl_built())
            return nat_error(NAT_ERR_UNSUPPORTED, "train.device = %s in a job of %d processes needs NCCL, and this "
                                                  "nat-train was built without it (docs/distributed.md)",
                             c->train.device, r->ranks);
        snprintf(c->train.device, sizeof c->train.device, "cuda:%d",
                 nat_dist_local_device(r->dist, nat_cuda_device_count()));
    }
    /* Before anything is built: a device that is not there is the first error, not the last. */
    NAT_TRY(nat_train_device(c, &r->dev));
    r->prec = nat_config_precision(c);
    NAT_TRY(nat_train_open_dataset(c, NAT_SPLIT_TRAIN, &r->train_ds));
    NAT_TRY(nat_train_open_dataset(c, NAT_SPLIT_TEST, &r->test_ds));
    NAT_TRY(nat_train_resolve_data(c, r->train_ds));
    NAT_TRY(same_classes(r->train_ds, r->test_ds));
    int ch, classes = nat_dataset_classes(r->train_ds);
    if (classes == 1)
        fprintf(out, "warning: one class in %s: every prediction is that class, so accuracy is trivially 100%%\n",
                nat_dataset_name(r->train_ds));
    nat_dataset_shape(r->train_ds, &ch, NULL, NULL);
    nat_model_desc d;
    NAT_TRY(nat_config_model_desc(c, ch, classes, c->data.img_size, &d));
    warn_padded_levels(out, &d, c->data.img_size);
    NAT_TRY(nat_model_new(&r->model, &d));
    nat_model_set_recompute(r->model, c->train.recompute);
    if (r->dev.kind != NAT_DEV_CPU) /* initialised on the CPU (same weights as a CPU run), then moved */
        NAT_TRY(nat_model_to(r->model, r->dev));
    if (c->train.ema)
        NAT_TRY(nat_ema_init(&r->ema, r->model, c->train.ema_decay));
    NAT_TRY(make_optimizer(r));
    NAT_TRY(nat_ctx_new(&r->ctx, r->dev));
    nat_ctx_set_precision(r->ctx, r->prec);
    if (c->train.replicas > 1)
        NAT_TRY(nat_replicas_init(&r->reps, r->model, r->ctx, c->train.replicas));
    if (r->ranks > 1 && r->dev.kind == NAT_DEV_CUDA) {
        NAT_TRY(nat_dist_nccl_open(r->dist, r->dev.index, !strcmp(c->train.allreduce_dtype, "bf16"), &r->nccl));
        NAT_TRY(nat_nccl_plan(r->nccl, r->params, r->n_params));
        NAT_TRY(nat_ctx_watch_grads(r->ctx, r->params, r->n_params, nat_nccl_grad_ready, r->nccl));
    }
    nat_loss_scaler_init(&r->scaler, 0, 0);
    NAT_TRY(nat_metrics_init(&r->met, classes));
    NAT_TRY(nat_train_loader_new(c, r->train_ds, true, &r->train_L));
    NAT_TRY(nat_train_loader_new(c, r->test_ds, false, &r->test_L));

    int64_t bpe = nat_loader_batches_per_epoch(r->train_L);
    r->spe = bpe / c->train.accum_steps;
    if (r->spe < 1)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "config %s: one optimizer step needs train.batch_size x train.accum_steps = %d x %d images, but the "
                         "training set has %lld",
                         c->source, c->train.batch_size, c->train.accum_steps, (long long)nat_dataset_count(r->train_ds));
    r->total = r->spe * c->train.epochs;
    r->stop_at = c->train.max_steps > 0 && c->train.max_steps < r->total ? c->train.max_steps : r->total;
    const int64_t eff_batch = (int64_t)c->train.batch_size * c->train.accum_steps;
    double peak = c->optim.lr * (c->optim.lr_batch > 0 ? (double)eff_batch / c->optim.lr_batch : 1.0);
    r->sched = (nat_lr_schedule){peak, c->optim.min_lr < peak ? c->optim.min_lr : peak, c->optim.warmup_lr,
                                 (int64_t)llround(c->optim.warmup_epochs * (double)r->spe), r->total};
    if (r->sched.warmup_steps > r->total)
        r->sched.warmup_steps = r->total;

    /* The run directory and the state to start from. */
    char resume_path[NAT_CFG_STR + 64] = "";
    if (r->o->resume)
        NAT_TRY(nat_checkpoint_resolve(r->o->resume, resume_path, sizeof resume_path));
    const char *given = r->o->out_dir ? r->o->out_dir : c->log.dir[0] ? c->log.dir : NULL;
    if (given) { /* a cut path would send the run elsewhere */
        int n = snprintf(r->dir, sizeof r->dir, "%s", given);
        if (n < 0 || (size_t)n >= sizeof r->dir)
            return nat_error(NAT_ERR_INVALID_ARG, "run directory %.60s...: the path is %d characters, longer than %zu",
                             given, n, sizeof r->dir - 1);
    } else if (resume_path[0]) { /* the checkpoint's directory */
        int n = snprintf(r->dir, sizeof r->dir, "%s", resume_path);
        if (n < 0 || (size_t)n >= sizeof r->dir)
            return nat_error(NAT_ERR_INVALID_ARG, "--resume %s: the path is longer than %zu characters (give --out)",
                             resume_path, sizeof r->dir - 1);
        char *slash = strrchr(r->dir, '/');
        if (!slash)
            snprintf(r->dir, sizeof r->dir, ".");
        else
            slash[slash == r->dir ? 1 : 0] = 0;
    } else
        default_dir(r, r->dir, sizeof r->dir);
    snprintf(res->run_dir, sizeof res->run_dir, "%s", r->dir);

    r->st = (nat_train_state){.best_top1 = -1};
    nat_rng_seed(&r->st.rng, c->train.seed ^ 0x6e61742d74726169ull); /* "nat-trai": not the init stream */
    r->config_text = nat_config_to_string(c);
    if (!r->config_text)
        return nat_error(NAT_ERR_OOM, "config: out of memory");
    if (resume_path[0]) {
        char *old_text = NULL;
        if (nat_checkpoint_read_config(resume_path, &old_text) == NAT_OK) {
            nat_config old;
            nat_config_defaults(&old);
            if (nat_config_parse_string(&old, old_text, resume_path) == NAT_OK) {
                if (nat_config_diff(&old, c, NULL)) {
                    fprintf(out, "note: this config differs from the checkpoint's:\n");
                    nat_config_diff(&old, c, out);
                }
            }
            free(old_text);
        }
        nat_status s = nat_checkpoint_load(resume_path, r->model, r->opt, c->train.ema ? &r->ema : NULL, &r->st);
        if (s != NAT_OK)
            return nat_error_context(s, "resume");
        if (r->prec == NAT_PREC_F16 && r->st.loss_scale > 0) {
            r->scaler.scale = r->st.loss_scale;
            r->scaler.good_steps = r->st.loss_scale_good;
        }
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", resume_path);
        r->last_ckpt_step = r->st.step;
    }

    /* Print the resolved config once, then the plan. */
    nat_model_counts cnt;
    NAT_TRY(nat_model_desc_count(&d, c->data.img_size, c->data.img_size, &cnt));
    fprintf(out, "nat-train: config %s (resolved):\n%s\n", c->source[0] ? c->source : "(defaults)", r->config_text);
    fprintf(out, "model %s: %d level(s), embed %d, depths", d.name, nat_model_desc_levels(&d), d.embed_dim);
    for (int i = 0; i < nat_model_desc_levels(&d); i++)
        fprintf(out, "%s%d", i ? "," : " ", d.depths[i]);
    fprintf(out, ", kernel %d, maps", d.kernel_size);
    for (int i = 0; i < nat_model_desc_levels(&d); i++)
        fprintf(out, "%s%dx%d", i ? "," : " ", cnt.map_h[i], cnt.map_w[i]);
    fprintf(out, "; %.3fM parameters, %.1f MMACs per %dx%d image\n", (double)cnt.params / 1e6, (double)cnt.macs / 1e6,
            c->data.img_size, c->data.img_size);
    fprintf(out, "data %s: %lld training images (%d classes), %lld test images; %lld steps/epoch of %lld images, %lld steps",
            nat_dataset_name(r->train_ds), (long long)nat_dataset_count(r->train_ds), classes,
            (long long)nat_dataset_count(r->test_ds), (long long)r->spe, (long long)eff_batch, (long long)r->total);
    if (r->stop_at < r->total)
        fprintf(out, " (this run stops at %lld)", (long long)r->stop_at);
    fprintf(out, "\noptim %s: lr %.3g (warm-up %lld steps from %.3g, cosine to %.3g), weight decay %g; threads %d",
            c->optim.name, r->sched.lr, (long long)r->sched.warmup_steps, r->sched.warmup_lr, r->sched.min_lr,
            (double)c->optim.weight_decay, omp_get_max_threads());
    if (r->reps.n > 1)
        fprintf(out, " (training: %d data-parallel replicas of one thread each, %lld-%lld images per shard)", r->reps.n,
                (long long)(c->train.batch_size / r->reps.n), (long long)((c->train.batch_size + r->reps.n - 1) / r->reps.n));
    if (r->ranks > 1)
        fprintf(out, " per process\ndistributed: %d processes (%s), %lld-%lld images of each batch per process, gradients "
                "summed in rank order; rank 0 writes the run directory",
                r->ranks, nat_dist_engine(r->dist), (long long)(c->train.batch_size / r->ranks),
                (long long)((c->train.batch_size + r->ranks - 1) / r->ranks));
    fprintf(out, "\n");
    fprintf(out, "device %s, precision %s%s\n", nat_device_name(r->dev), c->train.precision,
            r->prec == NAT_PREC_F16 ? " (dynamic loss scaling from 65536)"
            : r->prec == NAT_PREC_BF16 ? " (GEMM/conv operands in bf16, f32 accumulation and weights)"
                                       : "");
    if (r->prec == NAT_PREC_BF16 && r->dev.kind == NAT_DEV_CPU && !nat_cpu_isa_avx512_bf16())
        fprintf(out, "note: bf16 with no AVX512-BF16 in use (ISA %s): where oneDNN and the NA kernels have no bf16 "
                "path, operands are rounded to bf16 and f32 kernels run, so bf16 is no faster than f32 here "
                "(on AVX2 it is slower; docs/benchmarks.md)\n", nat_cpu_isa_name());
    else if (r->prec == NAT_PREC_BF16 && r->dev.kind == NAT_DEV_CPU && !nat_cpu_bf16_gemm_native())
        fprintf(out, "note: bf16 on a CPU whose vdpbf16ps is no faster than its f32 FMAs (ISA %s, no AMX; "
                "`nat-bench isa` measures both): operands are rounded to bf16 and f32 kernels run, so bf16 "
                "has bf16's numerics and is slightly slower than f32 here (docs/benchmarks.md)\n",
                nat_cpu_isa_name());
    if (resume_path[0])
        fprintf(out, "resuming from %s at step %lld\n", resume_path, (long long)r->st.step);
    fprintf(out, "run directory: %s\n", r->dir);
    fflush(out);
    if (r->o->dry_run)
        return NAT_OK;

    nat_loader_state pos = position(r, r->st.step);
    if (r->rank != 0) /* rank 0 alone writes the run directory */
        return nat_loader_set_state(r->train_L, &pos);
    NAT_TRY(mkdirs(r->dir));
    NAT_TRY(claim_dir(r, resume_path[0] != 0));
    NAT_TRY(nat_checkpoint_remove_stale(r->dir, out));
    char path[NAT_CFG_STR + 32];
    snprintf(path, sizeof path, "%s/config.cfg", r->dir);
    NAT_TRY(save_text(path, r->config_text));
    /* The resumed step's evaluation rows stay, unless this run evaluates that step again (the final
     * evaluation, after the last checkpoint): then a kill between the two would leave them twice. */
    int64_t eval_keep = r->st.step < r->stop_at ? r->st.step : r->st.step - 1;
    NAT_TRY(nat_train_log_open(&r->log, r->dir, resume_path[0] ? r->st.step : -1, resume_path[0] ? eval_keep : -1));
    return nat_loader_set_state(r->train_L, &pos);
}

static nat_status train(run *r, nat_train_result *res)
{
    const nat_config *c = r->cfg;
    FILE *out = r->out;
    const int64_t start = r->st.step;
    nat_progress prog;
    nat_progress_start(&prog, r->o->progress ? r->o->progress : stderr, (long)(r->stop_at - start), c->log.print_every);
    double smooth = 0, smooth_w = 0, win_t = nat_wall_now(), win_img = 0, rate = 0;
    bool stopped = false;
    while (r->st.step < r->stop_at) {
        double t0 = nat_wall_now(), lr = nat_lr_at(&r->sched, r->st.step), loss, norm;
        int64_t images;
        NAT_TRY(step(r, lr, &loss, &norm, &images));
        r->st.step++;
        r->st.images += images;
        double now = nat_wall_now(), dt = now - t0;
        r->st.elapsed += dt;
        win_img += (double)images;
        if (now - win_t >= 1.0 || rate == 0) {
            rate = win_img / (now - win_t);
            win_t = now;
            win_img = 0;
        }
        if (isfinite(loss)) { /* display: bias-corrected running mean of the loss */
            smooth = 0.95 * smooth + 0.05 * loss;
            smooth_w = 0.95 * smooth_w + 0.05;
        }
        const int64_t s = r->st.step;
        const double epoch = (double)s / (double)r->spe;
        if (s % c->log.csv_every == 0 || s == r->stop_at) {
            nat_mem_stats ms = nat_mem_get_stats(r->dev);
            NAT_TRY(nat_train_log_step(&r->log, s, epoch, loss, lr, norm, (double)images / dt,
                                       (double)ms.current / 1048576.0, (double)ms.peak / 1048576.0));
        }
        nat_progress_update(&prog, (long)(s - start), (int)((s - 1) / r->spe) + 1, smooth_w > 0 ? smooth / smooth_w : loss,
                            lr, rate);
        if (r->o->on_step)
            r->o->on_step(r->o->user, s, loss);
        stopped = r->o->stop && *r->o->stop;
        if (r->ranks > 1) /* a stop on any rank stops them all, at the same step */
            NAT_TRY(any_rank(r, &stopped));
        if (s % r->spe == 0 && s < r->stop_at && !stopped) {
            int64_t ep = s / r->spe;
            if (c->train.eval_every > 0 && ep % c->train.eval_every == 0) {
                nat_progress_end(&prog);
                bool complete;
                NAT_TRY(evaluate(r, NULL, &complete));
                stopped = !complete;
            }
            /* Leftover micro-batches of the epoch (batches % accum_steps) are skipped. */
            nat_loader_state pos = position(r, s);
            if (c->train.accum_steps > 1)
                NAT_TRY(nat_loader_set_state(r->train_L, &pos));
        }
        if (stopped)
            break;
        if (c->train.checkpoint_every > 0 && s % c->train.checkpoint_every == 0 && s < r->stop_at)
            NAT_TRY(checkpoint(r));
    }
    nat_progress_end(&prog);
    if (r->last_ckpt_step != r->st.step || !r->last_ckpt[0])
        NAT_TRY(checkpoint(r));
    snprintf(res->checkpoint, sizeof res->checkpoint, "%s", r->last_ckpt);
    if (stopped) {
        res->interrupted = true;
        fprintf(out, "interrupted at step %lld: checkpoint %s (continue with --resume %s)\n", (long long)r->st.step,
                r->last_ckpt, r->last_ckpt);
        return NAT_OK;
    }
    bool complete;
    NAT_TRY(evaluate(r, res, &complete));
    res->evaluated = complete;
    res->interrupted = !complete;
    return NAT_OK;
}

nat_status nat_train(nat_config *cfg, const nat_train_opts *opts, nat_train_result *res_out)
{
    static const nat_train_opts none = {0};
    nat_train_result res = {0};
    run r = {0};
    r.cfg = cfg;
    r.o = opts ? opts : &none;
    r.out = r.o->out ? r.o->out : stdout;
    r.last_ckpt_step = -1;
    r.dir_lock = -1;
    r.dist = r.o->dist;
    r.rank = nat_dist_rank(r.dist);
    r.ranks = nat_dist_size(r.dist);
    FILE *quiet = NULL;
    if (r.rank != 0) { /* rank 0 alone prints */
        quiet = fopen("/dev/null", "w");
        if (quiet)
            r.out = quiet;
    }
    nat_train_opts local;
    if (quiet) {
        local = *r.o;
        local.progress = quiet;
        r.o = &local;
    }
    double t0 = nat_wall_now();
    nat_status s = setup(&r, &res);
    if (s == NAT_OK && !r.o->dry_run)
        s = train(&r, &res);
    if (s == NAT_OK) /* the logs' last buffered bytes reach the disk here: a full one is an error */
        s = nat_train_log_close(&r.log);
    res.steps = r.st.step;
    res.total_steps = r.total;
    res.best_top1 = r.st.best_top1;
    res.seconds = r.st.elapsed;
    res.images_per_s = r.st.elapsed > 0 ? (double)r.st.images / r.st.elapsed : 0;
    if (s == NAT_OK && !r.o->dry_run) {
        FILE *out = r.out;
        char t1[32], t2[32];
        nat_format_duration(res.seconds, t1, sizeof t1);
        nat_format_duration(nat_wall_now() - t0, t2, sizeof t2);
        nat_mem_stats ms = nat_mem_get_stats(r.dev);
        fprintf(out, "summary: %lld/%lld steps (%.2f epochs), %lld images in %s of training (%.0f img/s), this run %s wall; "
                "peak memory %.0f MiB",
                (long long)res.steps, (long long)res.total_steps, (double)res.steps / (double)r.spe, (long long)r.st.images,
                t1, res.images_per_s, t2, (double)ms.peak / 1048576.0);
        if (r.st.skipped)
            fprintf(out, "; %lld step(s) skipped (non-finite gradients)", (long long)r.st.skipped);
        fputc('\n', out);
        if (res.evaluated) {
            fprintf(out, "summary: test top-1 %.2f%%, top-5 %.2f%%, loss %.4f", res.top1, res.top5, res.loss);
            if (res.has_ema)
                fprintf(out, "; EMA top-1 %.2f%%, top-5 %.2f%%", res.ema_top1, res.ema_top5);
            fprintf(out, "; best top-1 %.2f%%\n", res.best_top1);
        }
        fprintf(out, "summary: checkpoint %s; logs %s/train_log.csv, %s/eval_log.csv\n", res.checkpoint, r.dir, r.dir);
        fflush(out);
    }
    teardown(&r);
    if (quiet)
        fclose(quiet);
    if (res_out)
        *res_out = res;
    return s;
}
