/* core/grad_watch.c — core/grad_watch.h: when each watched leaf's gradient becomes final in a walk. */
#include "core/grad_watch.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "nat/alloc.h"

typedef struct watch_key {
    const nat_tensor *t;
    int index;
} watch_key;

struct nat_grad_watch {
    nat_grad_ready_fn fn;
    void *user;
    int n;
    watch_key *by_ptr; /* sorted by tensor address, for the lookup of node inputs */
    int *first_use;    /* per leaf: lowest tape index reading it in the planned walk, or INT_MAX */
    int *order;        /* leaves by first use, latest first (the order the walk reaches them) */
    int next;          /* order[0..next) have been called */
};

static int cmp_ptr(const void *a, const void *b)
{
    const uintptr_t x = (uintptr_t)((const watch_key *)a)->t, y = (uintptr_t)((const watch_key *)b)->t;
    return x < y ? -1 : x > y;
}

static size_t bytes_of(int n)
{
    return (size_t)n * (sizeof(watch_key) + 2 * sizeof(int));
}

nat_status nat_grad_watch_new(nat_tensor *const *params, int n, nat_grad_ready_fn fn, void *user,
                              nat_grad_watch **out)
{
    *out = NULL;
    if (n <= 0 || !fn)
        return NAT_OK;
    NAT_CHECK_ARG(params, "nat_ctx_watch_grads", "params");
    for (int i = 0; i < n; i++)
        if (!params[i])
            return nat_error(NAT_ERR_INVALID_ARG, "nat_ctx_watch_grads: params[%d] is NULL", i);
    nat_grad_watch *w;
    NAT_TRY(nat_mem_alloc(NAT_CPU, sizeof *w, (void **)&w));
    memset(w, 0, sizeof *w);
    void *block;
    nat_status s = nat_mem_alloc(NAT_CPU, bytes_of(n), &block);
    if (s != NAT_OK) {
        nat_mem_free(NAT_CPU, w, sizeof *w);
        return s;
    }
    w->fn = fn, w->user = user, w->n = n;
    w->by_ptr = block;
    w->first_use = (int *)(w->by_ptr + n);
    w->order = w->first_use + n;
    for (int i = 0; i < n; i++)
        w->by_ptr[i] = (watch_key){params[i], i};
    qsort(w->by_ptr, (size_t)n, sizeof *w->by_ptr, cmp_ptr);
    for (int i = 1; i < n; i++)
        if (w->by_ptr[i].t == w->by_ptr[i - 1].t) {
            const int a = w->by_ptr[i - 1].index, b = w->by_ptr[i].index;
            nat_grad_watch_free(w);
            return nat_error(NAT_ERR_INVALID_ARG, "nat_ctx_watch_grads: params[%d] and params[%d] are the same tensor",
                             a < b ? a : b, a < b ? b : a);
        }
    *out = w;
    return NAT_OK;
}

void nat_grad_watch_free(nat_grad_watch *w)
{
    if (!w)
        return;
    nat_mem_free(NAT_CPU, w->by_ptr, bytes_of(w->n));
    nat_mem_free(NAT_CPU, w, sizeof *w);
}

static int lookup(const nat_grad_watch *w, const nat_tensor *t)
{
    int lo = 0, hi = w->n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        if (w->by_ptr[mid].t == t)
            return w->by_ptr[mid].index;
        if ((uintptr_t)w->by_ptr[mid].t < (uintptr_t)t)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Sorts order[] by first use, latest first, ties by index (insertion sort on a nearly sorted list:
 * the model lists its parameters in forward order, so the walk meets them about in reverse). */
static void sort_order(nat_grad_watch *w)
{
    for (int i = 0; i < w->n; i++) {
        const int v = w->order[i], fv = w->first_use[v];
        int j = i - 1;
        while (j >= 0) {
            const int u = w->order[j], fu = w->first_use[u];
            /* unseen (INT_MAX) leaves go last, in index order */
            const bool after = fv == INT_MAX ? (fu == INT_MAX && u > v) : (fu == INT_MAX || fu < fv || (fu == fv && u > v));
            if (!after)
                break;
            w->order[j + 1] = u;
            j--;
        }
        w->order[j + 1] = v;
    }
}

void nat_grad_watch_plan(nat_grad_watch *w, nat_node *const *tape, int len)
{
    for (int i = 0; i < w->n; i++) {
        w->first_use[i] = INT_MAX;
        w->order[i] = w->n - 1 - i;
    }
    for (int p = 0; p < len; p++)
        for (int k = 0; k < tape[p]->n_in; k++) {
            const nat_tensor *t = tape[p]->in[k];
            const int i = t && !t->node ? lookup(w, t) : -1; /* leaves only: a recorded output is no parameter */
            if (i >= 0 && p < w->first_use[i])
                w->first_use[i] = p;
        }
    sort_order(w);
    w->next = 0;
}

nat_status nat_grad_watch_passed(nat_grad_watch *w, int pos)
{
    while (w->next < w->n) {
        const int i = w->order[w->next];
        if (w->first_use[i] == INT_MAX || w->first_use[i] < pos)
            return NAT_OK;
        w->next++;
        NAT_TRY(w->fn(w->user, i));
    }
    return NAT_OK;
}

nat_status nat_grad_watch_finish(nat_grad_watch *w)
{
    while (w->next < w->n)
        NAT_TRY(w->fn(w->user, w->order[w->next++]));
    return NAT_OK;
}
