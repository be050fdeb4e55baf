/* train/dist.c — see train/dist.h: the engine choice, the collectives built on a backend's exchange
 * (fixed-order all-reduce, all-gather, broadcast, barrier) and nat-train's use of them (gradients,
 * metrics). A "star" backend (TCP: every connection goes through rank 0) gets its collectives through
 * rank 0: gather there, then broadcast. */
#define _POSIX_C_SOURCE 200809L
#include "train/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/autograd.h"

struct nat_dist {
    const nat_dist_backend *be; /* NULL: a one-rank job */
    void *impl;
    const char *engine;
    int rank, size;
    double timeout;
    bool star; /* the backend connects rank 0 to each other rank only */
    /* per-peer tables of exchange(), [size] each */
    void **send, **recv;
    size_t *send_bytes, *recv_bytes;
};

const char *nat_dist_detect(void)
{
    const char *ompi = getenv("OMPI_COMM_WORLD_SIZE"), *pmi = getenv("PMI_SIZE"), *pmix = getenv("PMIX_RANK");
    if ((ompi && atoi(ompi) > 0) || (pmi && atoi(pmi) > 0) || pmix)
        return "mpi";
    if (getenv("WORLD_SIZE") && getenv("RANK"))
        return "tcp";
    return "single";
}

nat_status nat_dist_init(nat_dist **out, double timeout_s)
{
    *out = NULL;
    nat_dist *d = calloc(1, sizeof *d);
    if (!d)
        return nat_error(NAT_ERR_OOM, "distributed: out of memory");
    d->engine = nat_dist_detect();
    d->timeout = timeout_s > 0 ? timeout_s : 300;
    d->size = 1;
    nat_status s = NAT_OK;
    if (!strcmp(d->engine, "mpi"))
        s = nat_dist_mpi_open(&d->impl, &d->be, &d->rank, &d->size);
    else if (!strcmp(d->engine, "tcp")) {
        s = nat_dist_tcp_open(&d->impl, &d->be, &d->rank, &d->size, d->timeout);
        d->star = true;
    }
    if (s == NAT_OK && d->size > 1) {
        const size_t n = (size_t)d->size;
        d->send = calloc(n, sizeof *d->send);
        d->recv = calloc(n, sizeof *d->recv);
        d->send_bytes = calloc(n, sizeof *d->send_bytes);
        d->recv_bytes = calloc(n, sizeof *d->recv_bytes);
        if (!d->send || !d->recv || !d->send_bytes || !d->recv_bytes)
            s = nat_error(NAT_ERR_OOM, "distributed: out of memory");
    }
    if (s != NAT_OK) {
        nat_dist_free(d);
        return s;
    }
    *out = d;
    return NAT_OK;
}

void nat_dist_free(nat_dist *d)
{
    if (!d)
        return;
    if (d->be)
        d->be->finalize(d->impl);
    free(d->send);
    free(d->recv);
    free(d->send_bytes);
    free(d->recv_bytes);
    free(d);
}

int nat_dist_rank(const nat_dist *d) { return d ? d->rank : 0; }
int nat_dist_size(const nat_dist *d) { return d ? d->size : 1; }
const char *nat_dist_engine(const nat_dist *d) { return d ? d->engine : "single"; }
double nat_dist_timeout(const nat_dist *d) { return d ? d->timeout : 0; }

_Noreturn void nat_dist_abort(nat_dist *d, int code, const char *message)
{
    fprintf(stderr, "nat-train: rank %d of %d: %s\n", nat_dist_rank(d), nat_dist_size(d), message);
    fflush(stderr);
    if (d && d->be)
        d->be->abort(d->impl, code);
    exit(code);
}

static void clear_tables(nat_dist *d)
{
    for (int p = 0; p < d->size; p++) {
        d->send[p] = d->recv[p] = NULL;
        d->send_bytes[p] = d->recv_bytes[p] = 0;
    }
}

static nat_status exchange(nat_dist *d)
{
    return d->be->exchange(d->impl, d->send, d->send_bytes, d->recv, d->recv_bytes, d->timeout);
}

nat_status nat_dist_broadcast(nat_dist *d, void *buf, size_t bytes, int root)
{
    if (!d || d->size == 1 || !bytes)
        return NAT_OK;
    if (d->star && root != 0) { /* to rank 0 first, then from it */
        clear_tables(d);
        if (d->rank == root)
            d->send[0] = buf, d->send_bytes[0] = bytes;
        if (d->rank == 0)
            d->recv[root] = buf, d->recv_bytes[root] = bytes;
        NAT_TRY(exchange(d));
        root = 0;
    }
    clear_tables(d);
    for (int p = 0; p < d->size; p++) {
        if (d->rank == root)
            d->send[p] = buf, d->send_bytes[p] = bytes;
        else if (p == root)
            d->recv[p] = buf, d->recv_bytes[p] = bytes;
    }
    return exchange(d);
}

nat_status nat_dist_allgather(nat_dist *d, const void *mine, void *all, size_t bytes)
{
    const int me = nat_dist_rank(d);
    memmove((char *)all + (size_t)me * bytes, mine, bytes);
    if (!d || d->size == 1 || !bytes)
        return NAT_OK;
    clear_tables(d);
    for (int p = 0; p < d->size; p++) {
        if (p == me || (d->star && me != 0 && p != 0))
            continue;
        if (!d->star || me != 0) /* a star gathers at rank 0 first */
            d->send[p] = (char *)all + (size_t)me * bytes, d->send_bytes[p] = bytes;
        if (!d->star || me == 0)
            d->recv[p] = (char *)all + (size_t)p * bytes, d->recv_bytes[p] = bytes;
    }
    NAT_TRY(exchange(d));
    return d->star ? nat_dist_broadcast(d, all, (size_t)d->size * bytes, 0) : NAT_OK;
}

nat_status nat_dist_barrier(nat_dist *d)
{
    if (!d || d->size == 1)
        return NAT_OK;
    char one = 1, *all = calloc((size_t)d->size, 1);
    if (!all)
        return nat_error(NAT_ERR_OOM, "distributed: out of memory");
    nat_status s = nat_dist_allgather(d, &one, all, 1);
    free(all);
    return s;
}

/* Elements [lo, hi) of chunk k of n split over `parts`. */
static void chunk(int64_t n, int parts, int k, int64_t *lo, int64_t *hi)
{
    *lo = n * k / parts;
    *hi = n * (k + 1) / parts;
}

nat_status nat_dist_allreduce_f32(nat_dist *d, float *buf, int64_t n)
{
    if (!d || d->size == 1 || n <= 0)
        return NAT_OK;
    const int W = d->size, me = d->rank;
    if (d->star) { /* everything through rank 0: gather, sum there in rank order, broadcast */
        float *all = malloc((size_t)W * (size_t)n * sizeof *all);
        if (!all)
            return nat_error(NAT_ERR_OOM, "distributed: all-reduce of %lld floats: out of memory", (long long)n);
        nat_status s = nat_dist_allgather(d, buf, all, (size_t)n * sizeof *buf);
        if (s == NAT_OK) {
            memcpy(buf, all, (size_t)n * sizeof *buf);
            for (int r = 1; r < W; r++)
                for (int64_t e = 0; e < n; e++)
                    buf[e] += all[(size_t)r * (size_t)n + (size_t)e];
        }
        free(all);
        return s;
    }
    int64_t mlo, mhi;
    chunk(n, W, me, &mlo, &mhi);
    const int64_t mine = mhi - mlo;
    float *in = malloc((size_t)(W * (mine > 0 ? mine : 1)) * sizeof *in); /* [W][mine]: my chunk from each rank */
    if (!in)
        return nat_error(NAT_ERR_OOM, "distributed: all-reduce of %lld floats: out of memory", (long long)n);
    /* reduce-scatter: chunk p of my buffer to rank p */
    clear_tables(d);
    for (int p = 0; p < W; p++) {
        int64_t lo, hi;
        chunk(n, W, p, &lo, &hi);
        d->send[p] = buf + lo, d->send_bytes[p] = (size_t)(hi - lo) * sizeof *buf;
        d->recv[p] = in + (size_t)p * (size_t)mine, d->recv_bytes[p] = (size_t)mine * sizeof *buf;
    }
    memcpy(in + (size_t)me * (size_t)mine, buf + mlo, (size_t)mine * sizeof *buf); /* exchange skips self */
    nat_status s = exchange(d);
    if (s == NAT_OK) { /* Σ in rank order: ((in[0] + in[1]) + in[2]) + ... */
        float *acc = buf + mlo;
        memcpy(acc, in, (size_t)mine * sizeof *acc);
        for (int r = 1; r < W; r++) {
            const float *src = in + (size_t)r * (size_t)mine;
            for (int64_t e = 0; e < mine; e++)
                acc[e] += src[e];
        }
    }
    free(in);
    if (s != NAT_OK)
        return s;
    /* all-gather: my summed chunk to everyone, theirs into place */
    clear_tables(d);
    for (int p = 0; p < W; p++) {
        int64_t lo, hi;
        chunk(n, W, p, &lo, &hi);
        d->send[p] = buf + mlo, d->send_bytes[p] = (size_t)mine * sizeof *buf;
        d->recv[p] = buf + lo, d->recv_bytes[p] = (size_t)(hi - lo) * sizeof *buf;
    }
    return exchange(d);
}

/* ---- nat-train's use ---- */

void nat_dist_grads_begin(nat_dist *d, nat_tensor *const *params, int n_params)
{
    if (nat_dist_size(d) == 1 || d->rank == 0)
        return;
    for (int i = 0; i < n_params; i++)
        nat_zero_grad(params[i]);
}

nat_status nat_dist_grads_reduce(nat_dist *d, nat_ctx *ctx, nat_tensor *const *params, int n_params, float **scratch,
                                 int64_t *scratch_cap)
{
    if (nat_dist_size(d) == 1)
        return NAT_OK;
    /* [every parameter's gradient, flattened (zeros where it has none)][one flag per parameter: has one] */
    int64_t n = n_params;
    for (int i = 0; i < n_params; i++)
        n += nat_tensor_numel(params[i]);
    if (n > *scratch_cap) {
        float *p = realloc(*scratch, (size_t)n * sizeof *p);
        if (!p)
            return nat_error(NAT_ERR_OOM, "distributed: gradient buffer of %lld floats: out of memory", (long long)n);
        *scratch = p;
        *scratch_cap = n;
    }
    float *flat = *scratch, *flags = flat + (n - n_params);
    int64_t at = 0;
    for (int i = 0; i < n_params; i++) {
        const nat_tensor *g = params[i]->grad;
        const int64_t m = nat_tensor_numel(params[i]);
        if (g && g->device.kind != NAT_DEV_CPU)
            return nat_error(NAT_ERR_UNSUPPORTED, "distributed: CPU gradient reduction given a %s gradient",
                             nat_device_name(g->device));
        if (g)
            memcpy(flat + at, nat_tensor_f32(g), (size_t)m * sizeof *flat);
        else
            memset(flat + at, 0, (size_t)m * sizeof *flat);
        flags[i] = g ? 1.0f : 0.0f;
        at += m;
    }
    NAT_TRY(nat_dist_allreduce_f32(d, flat, n));
    at = 0;
    for (int i = 0; i < n_params; i++) {
        const int64_t m = nat_tensor_numel(params[i]);
        if (flags[i] > 0) {
            nat_tensor *g;
            NAT_TRY(nat_grad_get(ctx, params[i], &g)); /* persistent: made on first use */
            if (g)
                memcpy(nat_tensor_f32(g), flat + at, (size_t)m * sizeof *flat);
        }
        at += m;
    }
    return NAT_OK;
}

nat_status nat_dist_nccl_open(nat_dist *d, int device, bool bf16, nat_nccl **out)
{
    unsigned char id[NAT_NCCL_ID_BYTES] = {0};
    *out = NULL;
    if (nat_dist_rank(d) == 0)
        NAT_TRY(nat_nccl_unique_id(id));
    NAT_TRY(nat_dist_broadcast(d, id, sizeof id, 0));
    return nat_nccl_new(id, nat_dist_rank(d), nat_dist_size(d), device, bf16, nat_dist_timeout(d), out);
}

int nat_dist_local_device(const nat_dist *d, int count)
{
    static const char *const vars[] = {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
    int local = nat_dist_rank(d);
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            local = atoi(v);
            break;
        }
    }
    return count > 0 ? local % count : 0;
}

nat_status nat_dist_metrics_reduce(nat_dist *d, nat_metrics *m)
{
    if (nat_dist_size(d) == 1)
        return NAT_OK;
    /* one record per rank: n, top1, top5, the loss's bits, then the confusion matrix */
    const size_t cells = (size_t)m->classes * (size_t)m->classes, rec = (4 + cells) * sizeof(int64_t);
    int64_t *all = malloc(rec * (size_t)d->size), *mine = malloc(rec);
    if (!all || !mine) {
        free(all);
        free(mine);
        return nat_error(NAT_ERR_OOM, "distributed: metrics of %d classes: out of memory", m->classes);
    }
    mine[0] = m->n, mine[1] = m->top1, mine[2] = m->top5;
    memcpy(&mine[3], &m->loss_sum, sizeof m->loss_sum);
    memcpy(&mine[4], m->confusion, cells * sizeof *m->confusion);
    nat_status s = nat_dist_allgather(d, mine, all, rec);
    if (s == NAT_OK) {
        nat_metrics_reset(m);
        for (int r = 0; r < d->size; r++) {
            const int64_t *x = all + (size_t)r * (rec / sizeof *all);
            double loss;
            memcpy(&loss, &x[3], sizeof loss);
            m->n += x[0], m->top1 += x[1], m->top5 += x[2], m->loss_sum += loss;
            for (size_t c = 0; c < cells; c++)
                m->confusion[c] += x[4 + c];
        }
    }
    free(all);
    free(mine);
    return s;
}
