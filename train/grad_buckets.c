/* train/grad_buckets.c — train/grad_buckets.h. */
#include "train/grad_buckets.h"

#include <stdbool.h>
#include <stdlib.h>

struct nat_grad_buckets {
    int n, nb;
    int *members;    /* parameter indices, n-1 down to 0, bucket after bucket */
    int *start;      /* bucket k: members[start[k] .. start[k+1]) */
    int64_t *elems;  /* per bucket */
    int *bucket_of;  /* per parameter */
    int *pending;    /* per bucket: parameters not final yet */
    bool *final_;    /* per parameter, this backward */
    int next;        /* buckets 0..next-1 launched */
};

nat_status nat_grad_buckets_new(const int64_t *numel, int n, int64_t cap, nat_grad_buckets **out)
{
    *out = NULL;
    if (n <= 0 || cap <= 0)
        return nat_error(NAT_ERR_INVALID_ARG, "gradient buckets: %d parameters, capacity %lld", n, (long long)cap);
    nat_grad_buckets *b = calloc(1, sizeof *b);
    if (!b)
        return nat_error(NAT_ERR_OOM, "gradient buckets: out of memory");
    b->n = n;
    b->members = malloc((size_t)n * sizeof *b->members);
    b->start = malloc((size_t)(n + 1) * sizeof *b->start);
    b->elems = malloc((size_t)n * sizeof *b->elems);
    b->bucket_of = malloc((size_t)n * sizeof *b->bucket_of);
    b->pending = malloc((size_t)n * sizeof *b->pending);
    b->final_ = malloc((size_t)n * sizeof *b->final_);
    if (!b->members || !b->start || !b->elems || !b->bucket_of || !b->pending || !b->final_) {
        nat_grad_buckets_free(b);
        return nat_error(NAT_ERR_OOM, "gradient buckets: out of memory");
    }
    int64_t fill = 0;
    for (int j = 0; j < n; j++) {
        const int i = n - 1 - j;
        if (numel[i] <= 0) {
            nat_grad_buckets_free(b);
            return nat_error(NAT_ERR_INVALID_ARG, "gradient buckets: parameter %d has %lld elements", i,
                             (long long)numel[i]);
        }
        /* a new bucket when this one would overflow (a parameter above cap gets one alone) */
        if (j == 0 || fill + numel[i] > cap) {
            b->start[b->nb] = j;
            b->elems[b->nb] = 0;
            b->nb++;
            fill = 0;
        }
        b->members[j] = i;
        b->bucket_of[i] = b->nb - 1;
        b->elems[b->nb - 1] += numel[i];
        fill += numel[i];
    }
    b->start[b->nb] = n;
    nat_grad_buckets_begin(b);
    *out = b;
    return NAT_OK;
}

void nat_grad_buckets_free(nat_grad_buckets *b)
{
    if (!b)
        return;
    free(b->members), free(b->start), free(b->elems), free(b->bucket_of), free(b->pending), free(b->final_);
    free(b);
}

int nat_grad_buckets_count(const nat_grad_buckets *b) { return b->nb; }
int nat_grad_buckets_launched(const nat_grad_buckets *b) { return b->next; }

const int *nat_grad_buckets_params(const nat_grad_buckets *b, int k, int *count, int64_t *elems)
{
    *count = b->start[k + 1] - b->start[k];
    *elems = b->elems[k];
    return b->members + b->start[k];
}

void nat_grad_buckets_begin(nat_grad_buckets *b)
{
    for (int k = 0; k < b->nb; k++)
        b->pending[k] = b->start[k + 1] - b->start[k];
    for (int i = 0; i < b->n; i++)
        b->final_[i] = false;
    b->next = 0;
}

nat_status nat_grad_buckets_ready(nat_grad_buckets *b, int i, nat_bucket_launch_fn launch, void *user)
{
    if (i < 0 || i >= b->n)
        return nat_error(NAT_ERR_INTERNAL, "gradient buckets: parameter %d of %d", i, b->n);
    if (b->final_[i])
        return nat_error(NAT_ERR_INTERNAL, "gradient buckets: parameter %d reported final twice in one backward", i);
    b->final_[i] = true;
    b->pending[b->bucket_of[i]]--;
    while (b->next < b->nb && b->pending[b->next] == 0)
        NAT_TRY(launch(user, b->next++));
    return NAT_OK;
}

nat_status nat_grad_buckets_finish(nat_grad_buckets *b, nat_bucket_launch_fn launch, void *user)
{
    while (b->next < b->nb)
        NAT_TRY(launch(user, b->next++));
    return NAT_OK;
}
