/* train/checkpoint.c — see train/train.h (section checkpoint). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <dirent.h>
#include <signal.h> /* kill(pid, 0): is the process alive */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nat/cuda.h" /* nat_tensor_copy: device tensors */
#include "nat/safetensors.h"

static nat_status meta_i64(nat_st_writer *w, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return nat_st_writer_set_metadata(w, key, buf);
}

static nat_status write_all(nat_st_writer *w, const nat_model *m, const nat_optim *opt, const nat_ema *ema,
                            const nat_train_state *st, const char *config_text)
{
    NAT_TRY(nat_model_write(m, w));
    for (int i = 0; i < nat_optim_state_count(opt); i++) {
        const char *name;
        nat_tensor *t;
        NAT_TRY(nat_optim_state_get(opt, i, &name, &t));
        char key[256];
        snprintf(key, sizeof key, "optim.%s", name);
        NAT_TRY(nat_st_writer_add(w, key, t));
    }
    if (ema && ema->model) {
        const nat_param_list *l = nat_model_params(ema->model);
        for (int i = 0; i < l->count; i++) {
            char key[300];
            snprintf(key, sizeof key, "ema.%s", l->items[i].name);
            NAT_TRY(nat_st_writer_add(w, key, l->items[i].tensor));
        }
        NAT_TRY(meta_i64(w, "train.ema_updates", ema->updates));
    }
    char buf[160];
    NAT_TRY(nat_st_writer_set_metadata(w, "train.format", "nat-train 1"));
    NAT_TRY(meta_i64(w, "train.step", st->step));
    NAT_TRY(meta_i64(w, "train.optim_steps", nat_optim_step_count(opt)));
    snprintf(buf, sizeof buf, "%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64, st->rng.s[0], st->rng.s[1],
             st->rng.s[2], st->rng.s[3]);
    NAT_TRY(nat_st_writer_set_metadata(w, "train.rng", buf));
    snprintf(buf, sizeof buf, "%" PRIu64 ",%" PRId64 ",%" PRId64, st->loader.seed, st->loader.epoch, st->loader.batch);
    NAT_TRY(nat_st_writer_set_metadata(w, "train.loader", buf));
    NAT_TRY(meta_i64(w, "train.images", st->images));
    NAT_TRY(meta_i64(w, "train.skipped", st->skipped));
    snprintf(buf, sizeof buf, "%.17g", st->elapsed);
    NAT_TRY(nat_st_writer_set_metadata(w, "train.elapsed", buf));
    snprintf(buf, sizeof buf, "%.17g", st->best_top1);
    NAT_TRY(nat_st_writer_set_metadata(w, "train.best_top1", buf));
    if (st->loss_scale > 0) {
        snprintf(buf, sizeof buf, "%.9g", (double)st->loss_scale);
        NAT_TRY(nat_st_writer_set_metadata(w, "train.loss_scale", buf));
        NAT_TRY(meta_i64(w, "train.loss_scale_good", st->loss_scale_good));
    }
    return nat_st_writer_set_metadata(w, "train.config", config_text ? config_text : "");
}

nat_status nat_checkpoint_save(const char *path, const nat_model *m, const nat_optim *opt, const nat_ema *ema,
                               const nat_train_state *st, const char *config_text)
{
    nat_st_writer *w;
    NAT_TRY(nat_st_writer_new(&w));
    nat_status s = write_all(w, m, opt, ema, st, config_text);
    if (s == NAT_OK)
        s = nat_st_writer_save(w, path);
    nat_st_writer_free(w);
    if (s != NAT_OK) /* the writer's messages name the file already: not twice */
        return strstr(nat_error_message(), path) ? nat_error_context(s, "checkpoint") : nat_error_context(s, "checkpoint %s", path);
    return NAT_OK;
}

static nat_status need(const nat_st_file *f, const char *key, const char **out)
{
    *out = nat_st_metadata(f, key);
    if (!*out)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata '%s' is missing (not a nat-train checkpoint?)",
                         nat_st_path(f), key);
    return NAT_OK;
}

static nat_status need_i64(const nat_st_file *f, const char *key, int64_t *out)
{
    const char *s;
    NAT_TRY(need(f, key, &s));
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is not an integer", nat_st_path(f), key, s);
    *out = v;
    return NAT_OK;
}

static nat_status need_f64(const nat_st_file *f, const char *key, double *out)
{
    const char *s;
    NAT_TRY(need(f, key, &s));
    char *end;
    *out = strtod(s, &end);
    if (end == s || *end)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata %s = '%s' is not a number", nat_st_path(f), key, s);
    return NAT_OK;
}

/* Reads n tensors named prefix + names[i] (or "" when names is NULL: their own names in keys) into
 * tensors[i] with the checks model weights get (nat_st_load_into): the file's shape exactly, a float
 * dtype, and every value finite, all checked before any tensor is written. A NaN in the AdamW moments
 * or an EMA tensor of transposed shape is an error naming the tensor, not a silently ruined run. */
static nat_status load_checked(nat_st_file *f, const char *prefix, const char *const *names, nat_tensor **tensors,
                               int n)
{
    char **keys = calloc((size_t)n + 1, sizeof *keys);
    nat_status s = keys ? NAT_OK : nat_error(NAT_ERR_OOM, "checkpoint %s: out of memory", nat_st_path(f));
    for (int i = 0; s == NAT_OK && i < n; i++) {
        size_t len = strlen(prefix) + strlen(names[i]) + 1;
        if (!(keys[i] = malloc(len)))
            s = nat_error(NAT_ERR_OOM, "checkpoint %s: out of memory", nat_st_path(f));
        else
            snprintf(keys[i], len, "%s%s", prefix, names[i]);
    }
    if (s == NAT_OK)
        s = nat_st_load_into(f, tensors, (const char **)keys, n, 0);
    for (int i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    return s;
}

/* The optimizer state tensors, or the parameters of a model, as name and tensor arrays (malloc'ed). */
static nat_status optim_lists(const nat_optim *opt, const char ***names, nat_tensor ***tensors, int *n)
{
    *n = nat_optim_state_count(opt);
    *names = calloc((size_t)*n + 1, sizeof **names);
    *tensors = calloc((size_t)*n + 1, sizeof **tensors);
    if (!*names || !*tensors)
        return nat_error(NAT_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; i < *n; i++)
        NAT_TRY(nat_optim_state_get(opt, i, &(*names)[i], &(*tensors)[i]));
    return NAT_OK;
}

static nat_status param_lists(const nat_model *m, const char ***names, nat_tensor ***tensors, int *n)
{
    const nat_param_list *l = nat_model_params(m);
    *n = l->count;
    *names = calloc((size_t)*n + 1, sizeof **names);
    *tensors = calloc((size_t)*n + 1, sizeof **tensors);
    if (!*names || !*tensors)
        return nat_error(NAT_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; i < *n; i++) {
        (*names)[i] = l->items[i].name;
        (*tensors)[i] = l->items[i].tensor;
    }
    return NAT_OK;
}

/* Loads the optimizer state (ema NULL) or the EMA model's parameters ("ema." names). */
static nat_status load_group(nat_st_file *f, const nat_optim *opt, const nat_model *ema)
{
    const char **names = NULL;
    nat_tensor **tensors = NULL;
    int n = 0;
    nat_status s = ema ? param_lists(ema, &names, &tensors, &n) : optim_lists(opt, &names, &tensors, &n);
    if (s == NAT_OK)
        s = load_checked(f, ema ? "ema." : "optim.", names, tensors, n);
    free(names);
    free(tensors);
    return s;
}

static nat_status load_all(nat_st_file *f, nat_model *m, nat_optim *opt, nat_ema *ema, nat_train_state *st)
{
    const char *s;
    NAT_TRY(need(f, "train.format", &s));
    nat_train_state t = {0};
    NAT_TRY(need_i64(f, "train.step", &t.step));
    int64_t optim_steps;
    NAT_TRY(need_i64(f, "train.optim_steps", &optim_steps));
    NAT_TRY(need(f, "train.rng", &s));
    unsigned long long r[4];
    if (sscanf(s, "%llx,%llx,%llx,%llx", &r[0], &r[1], &r[2], &r[3]) != 4)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata train.rng = '%s' is malformed", nat_st_path(f), s);
    for (int i = 0; i < 4; i++)
        t.rng.s[i] = r[i];
    NAT_TRY(need(f, "train.loader", &s));
    unsigned long long seed;
    long long ep, b;
    if (sscanf(s, "%llu,%lld,%lld", &seed, &ep, &b) != 3)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s: metadata train.loader = '%s' is malformed", nat_st_path(f), s);
    t.loader = (nat_loader_state){seed, ep, b};
    NAT_TRY(need_i64(f, "train.images", &t.images));
    NAT_TRY(need_i64(f, "train.skipped", &t.skipped));
    NAT_TRY(need_f64(f, "train.elapsed", &t.elapsed));
    NAT_TRY(need_f64(f, "train.best_top1", &t.best_top1));
    if (nat_st_metadata(f, "train.loss_scale")) { /* only f16 runs write it */
        double ls;
        int64_t good;
        NAT_TRY(need_f64(f, "train.loss_scale", &ls));
        NAT_TRY(need_i64(f, "train.loss_scale_good", &good));
        t.loss_scale = (float)ls;
        t.loss_scale_good = (int)good;
    }

    /* The metadata is all read: now the tensors (on an error some objects may already be restored; the
     * caller gives up on them). */
    NAT_TRY(nat_model_read(m, f, false));
    NAT_TRY(load_group(f, opt, NULL));
    NAT_TRY(nat_optim_set_step_count(opt, optim_steps));
    if (ema && ema->model) {
        const nat_param_list *l = nat_model_params(ema->model), *lm = nat_model_params(m);
        if (nat_st_metadata(f, "train.ema_updates")) {
            NAT_TRY(load_group(f, NULL, ema->model));
            NAT_TRY(need_i64(f, "train.ema_updates", &ema->updates));
        } else {
            for (int i = 0; i < l->count; i++)
                NAT_TRY(nat_tensor_copy(l->items[i].tensor, lm->items[i].tensor));
            ema->updates = 0;
        }
    }
    *st = t;
    return NAT_OK;
}

nat_status nat_checkpoint_load(const char *path, nat_model *m, nat_optim *opt, nat_ema *ema, nat_train_state *st)
{
    nat_st_file *f;
    NAT_TRY(nat_st_open(&f, path));
    nat_status s = load_all(f, m, opt, ema, st);
    nat_st_close(f);
    return s;
}

nat_status nat_checkpoint_read_weights(nat_model *m, nat_st_file *f, bool ema)
{
    if (!ema)
        return nat_model_read(m, f, false);
    const nat_param_list *l = nat_model_params(m);
    char key[300];
    snprintf(key, sizeof key, "ema.%s", l->count ? l->items[0].name : "");
    if (l->count && nat_st_find(f, key) < 0)
        return nat_error(NAT_ERR_FORMAT, "checkpoint %s holds no EMA weights ('%s' is missing; was train.ema on?)",
                         nat_st_path(f), key);
    return load_group(f, NULL, m); /* the same shape and finite checks as the model's own weights */
}

nat_status nat_checkpoint_read_config(const char *path, char **text)
{
    *text = NULL;
    nat_st_file *f;
    NAT_TRY(nat_st_open(&f, path));
    const char *s = nat_st_metadata(f, "train.config");
    nat_status st = NAT_OK;
    if (!s)
        st = nat_error(NAT_ERR_FORMAT, "checkpoint %s holds no training config (metadata 'train.config'): pass --config",
                       path);
    else if (!(*text = strdup(s)))
        st = nat_error(NAT_ERR_OOM, "checkpoint %s: out of memory", path);
    nat_st_close(f);
    return st;
}

nat_status nat_checkpoint_config(nat_config *cfg, const char *config, const char *ckpt, bool need, bool *stored)
{
    nat_config_defaults(cfg);
    if (stored)
        *stored = false;
    if (config)
        return nat_config_load(cfg, config);
    if (!ckpt)
        return NAT_OK;
    char *text = NULL;
    nat_status s = nat_checkpoint_read_config(ckpt, &text);
    if (s == NAT_OK) {
        s = nat_config_parse_string(cfg, text, ckpt);
        if (stored)
            *stored = true;
    } else if (!need) {
        s = NAT_OK;
    }
    free(text);
    return s;
}

bool nat_checkpoint_path(char *buf, size_t cap, const char *dir, int64_t step)
{
    int n = snprintf(buf, cap, "%s/ckpt-%08" PRId64 ".safetensors", dir, step);
    return n >= 0 && (size_t)n < cap;
}

nat_status nat_checkpoint_link_last(const char *dir, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char tmp[1200], last[1200];
    snprintf(tmp, sizeof tmp, "%s/.last.safetensors.%ld", dir, (long)getpid());
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    unlink(tmp);
    if (symlink(base, tmp) != 0 || rename(tmp, last) != 0) {
        int e = errno;
        unlink(tmp);
        return nat_error(NAT_ERR_IO, "checkpoint: cannot point %s at %s: %s", last, base, strerror(e));
    }
    return NAT_OK;
}

/* Steps of the ckpt-*.safetensors files in dir, sorted ascending; malloc'ed. */
static nat_status list_steps(const char *dir, int64_t **steps, int *n)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return nat_error(NAT_ERR_IO, "checkpoint: cannot read directory %s: %s", dir, strerror(errno));
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long long step;
        char tail[32];
        if (sscanf(e->d_name, "ckpt-%lld%31s", &step, tail) != 2 || strcmp(tail, ".safetensors"))
            continue;
        if (*n == cap) {
            int64_t *t = realloc(*steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *t);
            if (!t) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return nat_error(NAT_ERR_OOM, "checkpoint: out of memory");
            }
            *steps = t;
        }
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort: a handful of files */
        for (int j = i; j > 0 && (*steps)[j - 1] > (*steps)[j]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return NAT_OK;
}

nat_status nat_checkpoint_prune(const char *dir, int keep)
{
    if (keep <= 0)
        return NAT_OK;
    int64_t *steps;
    int n;
    NAT_TRY(list_steps(dir, &steps, &n));
    for (int i = 0; i + keep < n; i++) {
        char p[1200];
        nat_checkpoint_path(p, sizeof p, dir, steps[i]);
        unlink(p);
    }
    free(steps);
    return NAT_OK;
}

nat_status nat_checkpoint_resolve(const char *path, char *buf, size_t cap)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return nat_error(NAT_ERR_IO, "checkpoint %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        int len = snprintf(buf, cap, "%s", path);
        if (len < 0 || (size_t)len >= cap)
            return nat_error(NAT_ERR_INVALID_ARG, "checkpoint %.80s...: the path is %d characters, longer than %zu",
                             path, len, cap - 1);
        return NAT_OK;
    }
    int64_t *steps;
    int n;
    NAT_TRY(list_steps(path, &steps, &n));
    if (n == 0) {
        free(steps);
        return nat_error(NAT_ERR_IO, "checkpoint: directory %s holds no ckpt-*.safetensors", path);
    }
    bool fits = nat_checkpoint_path(buf, cap, path, steps[n - 1]);
    free(steps);
    if (!fits)
        return nat_error(NAT_ERR_INVALID_ARG, "checkpoint directory %.80s...: the checkpoint's path is longer than %zu",
                         path, cap - 1);
    return NAT_OK;
}

/* The pid of a temporary file's name (<anything>.tmp.<pid> or .last.safetensors.<pid>), or 0. */
static long tmp_pid(const char *name)
{
    const char *tail = NULL;
    if (!strncmp(name, ".last.safetensors.", 18))
        tail = name + 18;
    else if ((tail = strstr(name, ".tmp.")))
        tail += 5;
    if (!tail || !*tail)
        return 0;
    char *end;
    long pid = strtol(tail, &end, 10);
    return *end || pid <= 0 ? 0 : pid;
}

nat_status nat_checkpoint_remove_stale(const char *dir, FILE *out)
{
    DIR *d = opendir(dir);
    if (!d)
        return nat_error(NAT_ERR_IO, "run directory %s: cannot read: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        long pid = tmp_pid(e->d_name);
        /* kill(pid, 0) fails with ESRCH only when no such process exists (EPERM: alive, someone else's). */
        if (!pid || !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name); /* dir < NAT_CFG_STR, a name < 256: fits */
        if (unlink(p) == 0 && out)
            fprintf(out, "note: removed %s, left by process %ld, which is gone\n", p, pid);
    }
    closedir(d);
    return NAT_OK;
}

nat_status nat_checkpoint_clear_run(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return nat_error(NAT_ERR_IO, "run directory %s: cannot read: %s", dir, strerror(errno));
    nat_status s = NAT_OK;
    for (struct dirent *e; (e = readdir(d));) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        bool ours = (!strncmp(n, "ckpt-", 5) && len > 17 && !strcmp(n + len - 12, ".safetensors")) ||
                    !strcmp(n, "last.safetensors") || !strcmp(n, "train_log.csv") || !strcmp(n, "eval_log.csv") ||
                    !strcmp(n, "config.cfg");
        if (!ours)
            continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, n);
        if (unlink(p) != 0 && s == NAT_OK)
            s = nat_error(NAT_ERR_IO, "--overwrite: cannot remove %s: %s", p, strerror(errno));
    }
    closedir(d);
    return s;
}
