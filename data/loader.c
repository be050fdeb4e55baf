/* data/loader.c — the threaded batch loader (see include/nat/data.h).
 *
 * Batches are numbered by one absolute sequence number seq = epoch * per_epoch + index. Everything
 * random about batch seq is a pure function of (seed, seq): the epoch's order is a shuffle seeded from
 * (seed, epoch); sample k of the epoch draws its transforms from a generator seeded from (seed, epoch, k);
 * the batch's mixup/cutmix from (seed, epoch, index). So batches do not depend on which worker builds
 * them or when, and repositioning to (epoch, index) reproduces what follows exactly.
 *
 * Slots: a ring of prefetch + 1 batch buffers; batch seq lives in slot seq % nslots. A worker claims the
 * next unclaimed seq when its slot is FREE (so at most `prefetch` batches are being built or waiting,
 * plus the one the consumer holds), fills it without the lock, and marks it READY. The consumer takes
 * slots strictly in seq order and hands its previous one back at its next call. set_state bumps a
 * generation counter: workers check it (and the stop flag) between samples and drop stale work.
 *
 * Unreadable or corrupt samples (NAT_ERR_IO / NAT_ERR_FORMAT from the dataset) are replaced by the next
 * dataset index that reads (deterministic, so still independent of threads), counted, and reported once
 * per sample through opts.warn; in strict mode they fail the batch instead.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/data.h"
#include "core/check.h"

#define LOADER_MSG_CAP 1024
#define LOADER_MAX_SUBSTITUTES 64

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD };
enum { DOMAIN_ORDER = 1, DOMAIN_SAMPLE = 2, DOMAIN_BATCH = 3 };

typedef struct slot {
    int state;
    int64_t seq, n;
    float lam;
    float *x;
    int32_t *labels;
    float *targets;
    nat_status err;
    char msg[LOADER_MSG_CAP];
} slot;

typedef struct worker {
    struct nat_loader *L;
    pthread_t thread;
    bool started;
    nat_image img, tmp;
    uint32_t *order; /* the order of order_epoch under order_seed, or NULL */
    int64_t order_epoch;
    uint64_t order_seed;
} worker;

struct nat_loader {
    const nat_dataset *ds;
    nat_loader_opts o;
    nat_transform *tfs; /* owned copy of o.transforms */
    int c, h, w, classes;
    int64_t count, per_epoch, end;
    size_t sample_floats;

    pthread_mutex_t mu;
    pthread_cond_t work_cv, ready_cv;
    int nslots;
    slot *slots;
    int64_t next_claim, next_deliver;
    int held; /* slot the consumer holds, or -1 */
    uint64_t seed;
    bool paused;
    atomic_uint_fast64_t gen;
    atomic_bool stop;
    atomic_int_fast64_t skipped;
    atomic_uchar *warned; /* per dataset index: reported already */

    int nworkers;
    worker *workers; /* nworkers, or 1 used by the consumer when nworkers == 0 */
};

nat_loader_opts nat_loader_defaults(void)
{
    return (nat_loader_opts){.batch_size = 32, .workers = 2, .prefetch = 0, .shuffle = true, .drop_last = false,
                             .seed = 0, .epochs = 0, .strict = false, .transforms = NULL, .n_transforms = 0,
                             .mixup = nat_mixup_defaults(), .warn = NULL, .warn_user = NULL};
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static nat_rng derive_rng(uint64_t seed, uint64_t domain, int64_t epoch, int64_t i)
{
    uint64_t h = mix64(seed + 0x9E3779B97F4A7C15ull * domain);
    h = mix64(h ^ ((uint64_t)epoch * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull));
    h = mix64(h ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull + 0x8CB92BA72F3D8DD7ull));
    nat_rng r;
    nat_rng_seed(&r, h);
    return r;
}

/* The dataset order of `epoch` (identity without shuffling), cached per worker. */
static const uint32_t *epoch_order(nat_loader *L, worker *wk, uint64_t seed, int64_t epoch)
{
    if (wk->order_epoch == epoch && wk->order_seed == seed)
        return wk->order;
    for (int64_t i = 0; i < L->count; i++)
        wk->order[i] = (uint32_t)i;
    if (L->o.shuffle) {
        nat_rng r = derive_rng(seed, DOMAIN_ORDER, epoch, 0);
        nat_rng_shuffle(&r, wk->order, (size_t)L->count);
    }
    wk->order_epoch = epoch;
    wk->order_seed = seed;
    return wk->order;
}

static void warn_skip(nat_loader *L, int64_t idx, const char *msg)
{
    if (atomic_exchange(&L->warned[idx], 1))
        return;
    char buf[LOADER_MSG_CAP + 96];
    snprintf(buf, sizeof buf, "skipping unreadable sample %lld (replaced by the next readable one): %s",
             (long long)idx, msg);
    if (L->o.warn)
        L->o.warn(L->o.warn_user, buf);
    else
        fprintf(stderr, "nat: warning: %s\n", buf);
}

static bool abandoned(nat_loader *L, uint64_t gen)
{
    return atomic_load_explicit(&L->stop, memory_order_relaxed) ||
           atomic_load_explicit(&L->gen, memory_order_relaxed) != gen;
}

/* Reads dataset sample idx, or the next readable one after it when it cannot be read (non-strict). */
static nat_status read_sample(nat_loader *L, worker *wk, int64_t idx, int32_t *label)
{
    const int64_t tries = L->count < LOADER_MAX_SUBSTITUTES ? L->count : LOADER_MAX_SUBSTITUTES;
    for (int64_t k = 0; k < tries; k++) {
        int64_t j = (idx + k) % L->count;
        nat_status s = nat_dataset_get(L->ds, j, &wk->img, label);
        if (s == NAT_OK) {
            if (*label < 0 || *label >= L->classes)
                return nat_error(NAT_ERR_FORMAT, "dataset %s: sample %lld has label %d, not in [0, %d)",
                                 nat_dataset_name(L->ds), (long long)j, *label, L->classes);
            return NAT_OK;
        }
        if (L->o.strict || (s != NAT_ERR_IO && s != NAT_ERR_FORMAT))
            return s;
        atomic_fetch_add(&L->skipped, 1);
        warn_skip(L, j, nat_error_message());
    }
    char last[LOADER_MSG_CAP]; /* nat_error writes the buffer nat_error_message() points to */
    snprintf(last, sizeof last, "%s", nat_error_message());
    return nat_error(NAT_ERR_FORMAT, "dataset %s: %lld samples in a row from sample %lld are all unreadable (last: %s)",
                     nat_dataset_name(L->ds), (long long)tries, (long long)idx, last);
}

/* Builds batch seq into sl. Returns false when the work went stale (set_state or free); sl->err holds
 * the outcome otherwise. */
static bool fill_batch(nat_loader *L, worker *wk, slot *sl, int64_t seq, uint64_t seed, uint64_t gen)
{
    const int64_t epoch = seq / L->per_epoch, index = seq % L->per_epoch, B = L->o.batch_size;
    const int64_t start = index * B, n = L->count - start < B ? L->count - start : B;
    const uint32_t *order = epoch_order(L, wk, seed, epoch);
    nat_status s = NAT_OK;
    int64_t k = 0;
    for (; k < n; k++) {
        if (abandoned(L, gen))
            return false;
        nat_rng rng = derive_rng(seed, DOMAIN_SAMPLE, epoch, start + k);
        int32_t label = 0;
        s = read_sample(L, wk, order[start + k], &label);
        if (s == NAT_OK)
            s = nat_transforms_apply(L->tfs, L->o.n_transforms, &wk->img, &wk->tmp, &rng);
        if (s == NAT_OK && (wk->img.c != L->c || wk->img.h != L->h || wk->img.w != L->w))
            s = nat_error(NAT_ERR_SHAPE, "sample is %dx%dx%d after the transforms, the batch needs %dx%dx%d",
                          wk->img.c, wk->img.h, wk->img.w, L->c, L->h, L->w);
        if (s != NAT_OK)
            break;
        memcpy(sl->x + (size_t)k * L->sample_floats, wk->img.data, L->sample_floats * sizeof(float));
        sl->labels[k] = label;
    }
    sl->lam = 1.0f;
    if (s == NAT_OK && nat_mixup_enabled(&L->o.mixup)) {
        nat_rng rng = derive_rng(seed, DOMAIN_BATCH, epoch, index);
        nat_mixup_result r;
        s = nat_mixup_apply(&L->o.mixup, &rng, sl->x, n, L->c, L->h, L->w, sl->labels, L->classes, sl->targets, &r);
        sl->lam = r.lam;
    }
    sl->n = n;
    sl->err = s;
    sl->msg[0] = '\0';
    if (s != NAT_OK) { /* error messages are per thread: carry this one to the consumer */
        char where[64] = "";
        if (k < n)
            snprintf(where, sizeof where, " sample %lld", (long long)k);
        snprintf(sl->msg, sizeof sl->msg, "loader: epoch %lld batch %lld%s: %s", (long long)epoch, (long long)index,
                 where, nat_error_message());
    }
    return true;
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    nat_loader *L = wk->L;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!atomic_load(&L->stop) &&
               (L->paused || L->next_claim >= L->end || L->slots[L->next_claim % L->nslots].state != SLOT_FREE))
            pthread_cond_wait(&L->work_cv, &L->mu);
        if (atomic_load(&L->stop))
            break;
        int64_t seq = L->next_claim++;
        slot *sl = &L->slots[seq % L->nslots];
        sl->state = SLOT_FILLING;
        sl->seq = seq;
        uint64_t gen = atomic_load(&L->gen), seed = L->seed;
        pthread_mutex_unlock(&L->mu);
        bool done = fill_batch(L, wk, sl, seq, seed, gen);
        pthread_mutex_lock(&L->mu);
        sl->state = done && atomic_load(&L->gen) == gen ? SLOT_READY : SLOT_FREE;
        pthread_cond_broadcast(&L->ready_cv);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static void worker_release(worker *wk)
{
    nat_image_free(&wk->img);
    nat_image_free(&wk->tmp);
    free(wk->order);
}

void nat_loader_free(nat_loader *L)
{
    if (!L)
        return;
    pthread_mutex_lock(&L->mu);
    atomic_store(&L->stop, true);
    pthread_cond_broadcast(&L->work_cv);
    pthread_mutex_unlock(&L->mu);
    int nw = L->nworkers ? L->nworkers : 1;
    for (int i = 0; i < nw && L->workers; i++) {
        if (L->workers[i].started)
            pthread_join(L->workers[i].thread, NULL);
        worker_release(&L->workers[i]);
    }
    for (int i = 0; i < L->nslots && L->slots; i++) {
        free(L->slots[i].x);
        free(L->slots[i].labels);
        free(L->slots[i].targets);
    }
    pthread_cond_destroy(&L->work_cv);
    pthread_cond_destroy(&L->ready_cv);
    pthread_mutex_destroy(&L->mu);
    free(L->slots);
    free(L->workers);
    free(L->warned);
    free(L->tfs);
    free(L);
}

static nat_status check_opts(const nat_dataset *ds, const nat_loader_opts *o)
{
    if (o->batch_size < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: batch size %d must be >= 1", o->batch_size);
    if (o->workers < 0 || o->workers > 256)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: %d workers (0 to 256)", o->workers);
    if (o->prefetch < 0 || o->prefetch > 1024)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: prefetch %d (0 for the default, up to 1024)", o->prefetch);
    if (o->epochs < 0)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: epochs %lld is negative", (long long)o->epochs);
    if (o->n_transforms < 0 || (o->n_transforms > 0 && !o->transforms))
        return nat_error(NAT_ERR_INVALID_ARG, "loader: %d transforms but no array", o->n_transforms);
    if (nat_dataset_count(ds) > (int64_t)UINT32_MAX)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: %lld samples (at most 2^32 - 1)",
                         (long long)nat_dataset_count(ds));
    return NAT_OK;
}

nat_status nat_loader_new(const nat_dataset *ds, const nat_loader_opts *opts, nat_loader **out)
{
    NAT_CHECK_ARG(ds, "nat_loader_new", "ds");
    NAT_CHECK_ARG(out, "nat_loader_new", "out");
    *out = NULL;
    if (!ds || !opts)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: dataset and options are required");
    NAT_TRY(check_opts(ds, opts));
    int c, h, w;
    nat_dataset_shape(ds, &c, &h, &w);
    int oh, ow;
    nat_status s = nat_transforms_shape(opts->transforms, opts->n_transforms, c, h, w, &oh, &ow);
    if (s != NAT_OK)
        return nat_error_context(s, "loader on %s", nat_dataset_name(ds));
    if (oh == 0)
        return nat_error(NAT_ERR_SHAPE,
                         "loader on %s: image sizes vary, so the transforms must end in a fixed size (a center crop, "
                         "random-resized crop or random crop)",
                         nat_dataset_name(ds));
    const int64_t count = nat_dataset_count(ds), B = opts->batch_size;
    const int64_t per_epoch = opts->drop_last ? count / B : (count + B - 1) / B;
    if (per_epoch == 0)
        return nat_error(NAT_ERR_INVALID_ARG, "loader on %s: %lld samples make no full batch of %lld (drop_last)",
                         nat_dataset_name(ds), (long long)count, (long long)B);
    if (nat_mixup_enabled(&opts->mixup)) {
        /* validate the mixup options now rather than at the first batch */
        nat_mixup_result r;
        float x = 0.0f, t[1];
        int32_t lab = 0;
        nat_rng rng;
        nat_rng_seed(&rng, 0);
        nat_mixup m = opts->mixup;
        NAT_TRY(nat_mixup_apply(&m, &rng, &x, 1, 1, 1, 1, &lab, 1, t, &r));
    }

    nat_loader *L = calloc(1, sizeof *L);
    if (!L)
        return nat_error(NAT_ERR_OOM, "loader: no memory");
    L->ds = ds;
    L->o = *opts;
    L->c = c;
    L->h = oh;
    L->w = ow;
    L->classes = nat_dataset_classes(ds);
    L->count = count;
    L->per_epoch = per_epoch;
    L->end = opts->epochs > 0 ? opts->epochs * per_epoch : INT64_MAX;
    L->sample_floats = (size_t)c * (size_t)oh * (size_t)ow;
    L->seed = opts->seed;
    L->held = -1;
    L->nworkers = opts->workers;
    int prefetch = opts->prefetch ? opts->prefetch : (2 * opts->workers > 2 ? 2 * opts->workers : 2);
    L->nslots = opts->workers ? prefetch + 1 : 1;
    L->o.prefetch = prefetch;
    atomic_init(&L->gen, 0);
    atomic_init(&L->stop, false);
    atomic_init(&L->skipped, 0);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work_cv, NULL);
    pthread_cond_init(&L->ready_cv, NULL);

    s = NAT_OK;
    if (opts->n_transforms > 0) {
        L->tfs = malloc((size_t)opts->n_transforms * sizeof *L->tfs);
        if (L->tfs)
            memcpy(L->tfs, opts->transforms, (size_t)opts->n_transforms * sizeof *L->tfs);
        else
            s = nat_error(NAT_ERR_OOM, "loader: no memory");
    }
    L->o.transforms = L->tfs;
    L->warned = calloc((size_t)count, sizeof *L->warned);
    L->slots = calloc((size_t)L->nslots, sizeof *L->slots);
    int nw = L->nworkers ? L->nworkers : 1;
    L->workers = calloc((size_t)nw, sizeof *L->workers);
    if (!L->warned || !L->slots || !L->workers)
        s = nat_error(NAT_ERR_OOM, "loader: no memory");
    const bool mix = nat_mixup_enabled(&opts->mixup);
    for (int i = 0; s == NAT_OK && i < L->nslots; i++) {
        slot *sl = &L->slots[i];
        sl->x = malloc((size_t)B * L->sample_floats * sizeof *sl->x);
        sl->labels = malloc((size_t)B * sizeof *sl->labels);
        sl->targets = mix ? malloc((size_t)B * (size_t)L->classes * sizeof *sl->targets) : NULL;
        if (!sl->x || !sl->labels || (mix && !sl->targets))
            s = nat_error(NAT_ERR_OOM, "loader: no memory for %d batches of [%lld, %d, %d, %d]", L->nslots,
                          (long long)B, c, oh, ow);
    }
    for (int i = 0; s == NAT_OK && i < nw; i++) {
        worker *wk = &L->workers[i];
        wk->L = L;
        wk->order_epoch = -1;
        wk->order = malloc((size_t)count * sizeof *wk->order);
        if (!wk->order)
            s = nat_error(NAT_ERR_OOM, "loader: no memory for the sample order");
    }
    for (int i = 0; s == NAT_OK && i < L->nworkers; i++) {
        if (pthread_create(&L->workers[i].thread, NULL, worker_main, &L->workers[i]) != 0)
            s = nat_error(NAT_ERR_INTERNAL, "loader: cannot start worker thread %d", i);
        else
            L->workers[i].started = true;
    }
    if (s != NAT_OK) {
        nat_loader_free(L);
        return s;
    }
    *out = L;
    return NAT_OK;
}

nat_status nat_loader_next(nat_loader *L, nat_batch *out)
{
    NAT_CHECK_ARG(L, "nat_loader_next", "L");
    NAT_CHECK_ARG(out, "nat_loader_next", "out");
    memset(out, 0, sizeof *out);
    out->c = L->c;
    out->h = L->h;
    out->w = L->w;
    out->classes = L->classes;
    out->lam = 1.0f;
    pthread_mutex_lock(&L->mu);
    if (L->held >= 0) {
        L->slots[L->held].state = SLOT_FREE;
        L->held = -1;
        pthread_cond_broadcast(&L->work_cv);
    }
    const int64_t seq = L->next_deliver;
    if (seq >= L->end) {
        out->epoch = L->end / L->per_epoch;
        pthread_mutex_unlock(&L->mu);
        return NAT_OK;
    }
    const int idx = (int)(seq % L->nslots);
    slot *sl = &L->slots[idx];
    if (L->nworkers == 0) {
        sl->state = SLOT_FILLING;
        sl->seq = seq;
        uint64_t gen = atomic_load(&L->gen), seed = L->seed;
        pthread_mutex_unlock(&L->mu);
        fill_batch(L, &L->workers[0], sl, seq, seed, gen);
        pthread_mutex_lock(&L->mu);
        sl->state = SLOT_READY;
    }
    while (!(sl->state == SLOT_READY && sl->seq == seq))
        pthread_cond_wait(&L->ready_cv, &L->mu);
    sl->state = SLOT_HELD;
    L->held = idx;
    L->next_deliver++;
    pthread_mutex_unlock(&L->mu);

    out->epoch = seq / L->per_epoch;
    out->index = seq % L->per_epoch;
    if (sl->err != NAT_OK)
        return nat_error(sl->err, "%s", sl->msg);
    out->n = sl->n;
    out->x = sl->x;
    out->labels = sl->labels;
    out->targets = nat_mixup_enabled(&L->o.mixup) ? sl->targets : NULL;
    out->lam = sl->lam;
    return NAT_OK;
}

int64_t nat_loader_batches_per_epoch(const nat_loader *L) { return L->per_epoch; }

void nat_loader_sample_shape(const nat_loader *L, int *c, int *h, int *w)
{
    if (c)
        *c = L->c;
    if (h)
        *h = L->h;
    if (w)
        *w = L->w;
}

int64_t nat_loader_skipped(const nat_loader *L) { return atomic_load(&((nat_loader *)L)->skipped); }

nat_loader_state nat_loader_get_state(const nat_loader *L)
{
    nat_loader *m = (nat_loader *)L; /* the mutex is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    nat_loader_state st = {.seed = m->seed, .epoch = m->next_deliver / m->per_epoch,
                           .batch = m->next_deliver % m->per_epoch};
    pthread_mutex_unlock(&m->mu);
    return st;
}

nat_status nat_loader_set_state(nat_loader *L, const nat_loader_state *st)
{
    NAT_CHECK_ARG(L, "nat_loader_set_state", "L");
    NAT_CHECK_ARG(st, "nat_loader_set_state", "st");
    if (st->epoch < 0 || st->batch < 0 || st->batch >= L->per_epoch)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "loader: state epoch %lld batch %lld is out of range (%lld batches per epoch)",
                         (long long)st->epoch, (long long)st->batch, (long long)L->per_epoch);
    if (st->epoch > (INT64_MAX - st->batch) / L->per_epoch)
        return nat_error(NAT_ERR_INVALID_ARG, "loader: state epoch %lld is too large", (long long)st->epoch);
    pthread_mutex_lock(&L->mu);
    L->paused = true;
    atomic_fetch_add(&L->gen, 1);
    for (;;) { /* wait for workers to drop what they were building */
        bool filling = false;
        for (int i = 0; i < L->nslots; i++)
            filling |= L->slots[i].state == SLOT_FILLING;
        if (!filling)
            break;
        pthread_cond_wait(&L->ready_cv, &L->mu);
    }
    for (int i = 0; i < L->nslots; i++)
        L->slots[i].state = SLOT_FREE;
    L->held = -1;
    L->seed = st->seed;
    L->next_claim = L->next_deliver = st->epoch * L->per_epoch + st->batch;
    L->paused = false;
    pthread_cond_broadcast(&L->work_cv);
    pthread_mutex_unlock(&L->mu);
    return NAT_OK;
}
