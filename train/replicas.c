/* train/replicas.c — see train/train.h (section replicas). */
#include "train/train.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct shard_job {
    nat_model *model;
    nat_ctx *ctx;
    const nat_batch *b;
    int64_t lo, n; /* samples [lo, lo + n) of the batch */
    float label_smoothing, mul;
    nat_rng rng;
    nat_rng *rng_out; /* shard 0: the run's generator, advanced; others NULL */
    const nat_param_list *master; /* copies: the weights to start from (copied in the shard's thread) */
    float loss;       /* this shard's mean loss */
    nat_status status;
    char error[256];
} shard_job;

static nat_status shard_run(shard_job *j)
{
    const nat_batch *b = j->b;
    const int64_t per = (int64_t)b->c * b->h * b->w;
    nat_tensor *x, *logits, *loss;
    const int64_t xs[4] = {j->n, b->c, b->h, b->w};
    NAT_TRY(nat_ctx_empty(j->ctx, &x, NAT_F32, 4, xs));
    memcpy(nat_tensor_f32(x), b->x + j->lo * per, sizeof(float) * (size_t)(j->n * per));
    NAT_TRY(nat_model_forward(j->model, j->ctx, x, true, &j->rng, &logits));
    if (b->targets) {
        nat_tensor *t;
        const int64_t ts[2] = {j->n, b->classes};
        NAT_TRY(nat_ctx_empty(j->ctx, &t, NAT_F32, 2, ts));
        memcpy(nat_tensor_f32(t), b->targets + j->lo * b->classes, sizeof(float) * (size_t)(j->n * b->classes));
        NAT_TRY(nat_cross_entropy_soft(j->ctx, logits, t, &loss));
    } else {
        NAT_TRY(nat_cross_entropy(j->ctx, logits, b->labels + j->lo, j->label_smoothing, &loss));
    }
    j->loss = nat_tensor_f32(loss)[0];
    /* the shard's share of the batch mean, times the step's multiplier */
    NAT_TRY(nat_scale(j->ctx, loss, j->mul * (float)j->n / (float)b->n, &loss));
    NAT_TRY(nat_backward(j->ctx, loss));
    if (j->rng_out)
        *j->rng_out = j->rng;
    return NAT_OK;
}

/* A copy takes the master's weights and zeroes its gradients, in its own thread: the master's weights
 * do not change before every shard is done, and the copying then overlaps the master's forward. */
static nat_status copy_master(shard_job *j)
{
    const nat_param_list *pr = nat_model_params(j->model);
    for (int i = 0; i < j->master->count; i++) {
        NAT_TRY(nat_tensor_copy(pr->items[i].tensor, j->master->items[i].tensor));
        nat_zero_grad(pr->items[i].tensor);
    }
    return NAT_OK;
}

static void *shard_thread(void *arg)
{
    shard_job *j = arg;
    omp_set_num_threads(1); /* this thread's own OpenMP teams (and oneDNN's, an OpenMP build) */
    j->status = j->master ? copy_master(j) : NAT_OK;
    if (j->status == NAT_OK)
        j->status = shard_run(j);
    if (j->status != NAT_OK)
        snprintf(j->error, sizeof j->error, "%s", nat_error_message());
    nat_ctx_reset(j->ctx);
    return NULL;
}

nat_status nat_replicas_init(nat_replicas *R, nat_model *master, nat_ctx *ctx, int n)
{
    memset(R, 0, sizeof *R);
    if (n < 1 || n > NAT_MAX_REPLICAS)
        return nat_error(NAT_ERR_INVALID_ARG, "train.replicas = %d: must be 1..%d", n, NAT_MAX_REPLICAS);
    if (nat_model_device(master).kind != NAT_DEV_CPU)
        return nat_error(NAT_ERR_UNSUPPORTED, "train.replicas = %d: data-parallel replicas run on the CPU only "
                                              "(train.device = cpu)", n);
    R->n = 1;
    R->models[0] = master;
    R->ctxs[0] = ctx;
    for (int r = 1; r < n; r++) {
        nat_status s = nat_model_new(&R->models[r], nat_model_get_desc(master));
        if (s == NAT_OK)
            s = nat_ctx_new(&R->ctxs[r], NAT_CPU);
        if (s != NAT_OK) {
            if (R->models[r])
                nat_model_free(R->models[r]);
            R->models[r] = NULL;
            nat_replicas_free(R);
            return s;
        }
        nat_ctx_set_precision(R->ctxs[r], nat_ctx_precision(ctx));
        nat_model_set_recompute(R->models[r], nat_model_get_recompute(master));
        R->n++;
    }
    return NAT_OK;
}

void nat_replicas_free(nat_replicas *R)
{
    for (int r = 1; r < R->n; r++) {
        nat_ctx_free(R->ctxs[r]);
        nat_model_free(R->models[r]);
    }
    memset(R, 0, sizeof *R);
}

nat_status nat_replicas_step(nat_replicas *R, const nat_batch *b, float label_smoothing, nat_rng *rng, float mul,
                             float *loss)
{
    const int n = (int)(b->n < R->n ? b->n : R->n); /* a short last batch may have fewer samples */
    const nat_param_list *pm = nat_model_params(R->models[0]);
    shard_job jobs[NAT_MAX_REPLICAS];
    /* the copies' generators are split off first; shard 0 goes on with the run's generator after that */
    nat_rng child[NAT_MAX_REPLICAS];
    for (int r = 1; r < n; r++)
        child[r] = nat_rng_split(rng);
    int64_t lo = 0;
    for (int r = 0; r < n; r++) {
        shard_job *j = &jobs[r];
        memset(j, 0, sizeof *j);
        j->model = R->models[r];
        j->ctx = R->ctxs[r];
        j->b = b;
        j->lo = lo;
        j->n = b->n / n + (r < b->n % n);
        lo += j->n;
        j->label_smoothing = label_smoothing;
        j->mul = mul;
        if (r == 0) {
            j->rng = *rng;
            j->rng_out = rng;
        } else {
            j->rng = child[r];
            j->master = pm; /* the master's weights; gradients from zero */
        }
    }
    /* shard 0 is the master's and runs in this thread */
    pthread_t th[NAT_MAX_REPLICAS];
    bool started[NAT_MAX_REPLICAS] = {false};
    for (int r = 1; r < n; r++)
        started[r] = pthread_create(&th[r], NULL, shard_thread, &jobs[r]) == 0;
    const int threads_was = omp_get_max_threads();
    omp_set_num_threads(1);
    jobs[0].status = shard_run(&jobs[0]);
    if (jobs[0].status != NAT_OK)
        snprintf(jobs[0].error, sizeof jobs[0].error, "%s", nat_error_message());
    nat_ctx_reset(jobs[0].ctx);
    omp_set_num_threads(threads_was);
    for (int r = 1; r < n; r++) {
        if (started[r])
            pthread_join(th[r], NULL);
        else /* no thread: run it here */
            shard_thread(&jobs[r]);
    }
    omp_set_num_threads(threads_was); /* shard_thread above may have run in this thread */
    double sum = 0;
    for (int r = 0; r < n; r++) {
        if (jobs[r].status != NAT_OK)
            return nat_error(jobs[r].status, "replica %d of %d: %s", r, n, jobs[r].error);
        sum += (double)jobs[r].loss * (double)jobs[r].n;
    }
    /* the copies' gradients into the master's, in replica order */
    for (int r = 1; r < n; r++) {
        const nat_param_list *pr = nat_model_params(R->models[r]);
        for (int i = 0; i < pm->count; i++) {
            nat_tensor *src = pr->items[i].tensor->grad, *t = pm->items[i].tensor, *dst;
            if (!src)
                continue;
            NAT_TRY(nat_grad_get(R->ctxs[0], t, &dst)); /* persistent: made on first use */
            float *d = nat_tensor_f32(dst);
            const float *s = nat_tensor_f32(src);
            const int64_t m = nat_tensor_numel(t);
#pragma omp parallel for simd if (m > 32768) /* elementwise: the same bits whatever the thread count */
            for (int64_t e = 0; e < m; e++)
                d[e] += s[e];
        }
    }
    *loss = (float)(sum / (double)b->n);
    return NAT_OK;
}
