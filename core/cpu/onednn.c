/* core/cpu/onednn.c — the engine, execution slots, plans and the plan cache of core/cpu/onednn.h. */
#include "core/cpu/onednn.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/alloc.h"

nat_status nat_dnn_check(dnnl_status_t s, const char *what)
{
    switch (s) {
    case dnnl_success: return NAT_OK;
    case dnnl_out_of_memory: return nat_error(NAT_ERR_OOM, "%s: oneDNN is out of memory", what);
    case dnnl_unimplemented:
        return nat_error(NAT_ERR_UNSUPPORTED, "%s: oneDNN %s has no implementation at ISA %s", what,
                         nat_dnn_version_string(), nat_dnn_isa_name());
    default: return nat_error(NAT_ERR_INTERNAL, "%s: oneDNN call failed (dnnl_status_t %d)", what, (int)s);
    }
}

#define DNN_TRY(call_, what_) NAT_TRY(nat_dnn_check((call_), (what_)))

/* ---- the engine and the execution slots ---- */

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_status_t engine_status;

static void engine_make(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

nat_status nat_dnn_engine(dnnl_engine_t *out)
{
    pthread_once(&engine_once, engine_make);
    *out = engine;
    return nat_dnn_check(engine_status, "oneDNN CPU engine");
}

/* A slot is owned by one run at a time; its stream and the memory objects of every primitive for that
 * slot are made on first use and kept. */
static atomic_flag slot_busy[NAT_DNN_SLOTS];
static dnnl_stream_t slot_stream[NAT_DNN_SLOTS];

static int slot_acquire(void)
{
    for (;;) {
        for (int s = 0; s < NAT_DNN_SLOTS; s++)
            if (!atomic_flag_test_and_set_explicit(&slot_busy[s], memory_order_acquire))
                return s;
        sched_yield(); /* more concurrent runs than slots: wait for one to end */
    }
}

static void slot_release(int s) { atomic_flag_clear_explicit(&slot_busy[s], memory_order_release); }

nat_status nat_dnn_attr(dnnl_primitive_attr_t *out, bool sum)
{
    *out = NULL;
    dnnl_primitive_attr_t a;
    DNN_TRY(dnnl_primitive_attr_create(&a), "oneDNN attribute");
    dnnl_status_t s = dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && sum) {
        dnnl_post_ops_t po;
        s = dnnl_post_ops_create(&po);
        if (s == dnnl_success) {
            s = dnnl_post_ops_append_sum(po, 1.0f);
            if (s == dnnl_success)
                s = dnnl_primitive_attr_set_post_ops(a, po);
            dnnl_post_ops_destroy(po);
        }
    }
    if (s != dnnl_success) {
        dnnl_primitive_attr_destroy(a);
        return nat_dnn_check(s, "oneDNN attribute");
    }
    *out = a;
    return NAT_OK;
}

/* ---- primitives ---- */

static nat_status prim_init(nat_dnn_prim *p, const_dnnl_primitive_desc_t pd, int n, const int *args)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < n; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i]);
        if (!md)
            return nat_error(NAT_ERR_INTERNAL, "oneDNN primitive has no argument %d", args[i]);
        p->arg[i] = args[i];
        p->md[i] = *md;
    }
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
    if (p->scratch_bytes) {
        p->arg[n] = DNNL_ARG_SCRATCHPAD;
        p->md[n] = *sp;
        n++;
    }
    p->n = n;
    return nat_dnn_check(dnnl_primitive_create(&p->prim, pd), "oneDNN primitive");
}

/* Runs p in slot s on ptrs (one per argument but the scratchpad) and scratch. */
static nat_status prim_run(const nat_dnn_prim *cp, int s, void *const *ptrs, void *scratch)
{
    nat_dnn_prim *p = (nat_dnn_prim *)cp; /* the slot's memory objects are made lazily: slot s is ours */
    dnnl_engine_t eng;
    NAT_TRY(nat_dnn_engine(&eng));
    dnnl_exec_arg_t args[NAT_DNN_MAX_ARGS];
    for (int i = 0; i < p->n; i++) {
        void *h = p->arg[i] == DNNL_ARG_SCRATCHPAD ? scratch : ptrs[i];
        if (!p->mem[s][i])
            DNN_TRY(dnnl_memory_create(&p->mem[s][i], &p->md[i], eng, DNNL_MEMORY_NONE), "oneDNN memory");
        DNN_TRY(dnnl_memory_set_data_handle(p->mem[s][i], h), "oneDNN memory handle");
        args[i].arg = p->arg[i];
        args[i].memory = p->mem[s][i];
    }
    if (!slot_stream[s])
        DNN_TRY(dnnl_stream_create(&slot_stream[s], eng, dnnl_stream_default_flags), "oneDNN stream");
    DNN_TRY(dnnl_primitive_execute(p->prim, slot_stream[s], p->n, args), "oneDNN execute");
    return nat_dnn_check(dnnl_stream_wait(slot_stream[s]), "oneDNN stream wait");
}

/* A reorder from `from` to `to` (adding into the destination when sum). */
static nat_status reorder_init(nat_dnn_prim *p, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, bool sum)
{
    dnnl_engine_t eng;
    NAT_TRY(nat_dnn_engine(&eng));
    dnnl_primitive_attr_t attr;
    NAT_TRY(nat_dnn_attr(&attr, sum));
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, attr);
    dnnl_primitive_attr_destroy(attr);
    NAT_TRY(nat_dnn_check(st, "oneDNN reorder"));
    const int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    nat_status s = prim_init(p, pd, 2, args);
    dnnl_primitive_desc_destroy(pd);
    return s;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

nat_status nat_dnn_plan_init(nat_dnn_plan *pl, const_dnnl_primitive_desc_t pd, int n_in, const int *in_arg,
                             const dnnl_memory_desc_t *in_user, int out_arg, const dnnl_memory_desc_t *out_user,
                             bool accumulate, int pass_arg)
{
    memset(pl, 0, sizeof *pl);
    if (n_in > NAT_DNN_MAX_IN)
        return nat_error(NAT_ERR_INTERNAL, "oneDNN plan: %d inputs (at most %d)", n_in, NAT_DNN_MAX_IN);
    pl->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        pl->in_arg[i] = in_arg[i];
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, in_arg[i]);
        if (!want)
            return nat_error(NAT_ERR_INTERNAL, "oneDNN plan: no input argument %d", in_arg[i]);
        if (!dnnl_memory_desc_equal(&in_user[i], want)) {
            pl->in_reorder[i] = true;
            pl->in_bytes[i] = dnnl_memory_desc_get_size(want);
            NAT_TRY(reorder_init(&pl->in_re[i], &in_user[i], want, false));
        }
    }
    pl->out_arg = out_arg;
    const dnnl_memory_desc_t *have = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, out_arg);
    if (!have)
        return nat_error(NAT_ERR_INTERNAL, "oneDNN plan: no output argument %d", out_arg);
    if (accumulate || !dnnl_memory_desc_equal(out_user, have)) {
        pl->out_reorder = true;
        pl->out_bytes = dnnl_memory_desc_get_size(have);
        NAT_TRY(reorder_init(&pl->out_re, have, out_user, accumulate));
    }
    pl->pass_arg = pass_arg;
    int args[NAT_DNN_MAX_ARGS], n = 0;
    for (int i = 0; i < n_in; i++)
        args[n++] = in_arg[i];
    if (pass_arg)
        args[n++] = pass_arg;
    args[n++] = out_arg;
    NAT_TRY(prim_init(&pl->main, pd, n, args));
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(pl->impl, sizeof pl->impl, "%s", impl);
    return NAT_OK;
}

nat_status nat_dnn_plan_run(const nat_dnn_plan *pl, const void *const *in, const void *pass, void *out)
{
    /* one block: the reordered inputs, the primitive's output, and the largest scratchpad */
    size_t scratch = pl->main.scratch_bytes;
    size_t bytes = align64(pl->out_bytes);
    for (int i = 0; i < pl->n_in; i++) {
        bytes += align64(pl->in_bytes[i]);
        if (pl->in_reorder[i] && pl->in_re[i].scratch_bytes > scratch)
            scratch = pl->in_re[i].scratch_bytes;
    }
    if (pl->out_reorder && pl->out_re.scratch_bytes > scratch)
        scratch = pl->out_re.scratch_bytes;
    bytes += align64(scratch);
    char *block = NULL;
    if (bytes)
        NAT_TRY(nat_mem_alloc(NAT_CPU, bytes, (void **)&block));
    char *at = block;
    void *sp = block ? block + bytes - align64(scratch) : NULL; /* the scratchpad, shared by the runs below */
    void *ptrs[NAT_DNN_MAX_ARGS];
    int n = 0;
    const int s = slot_acquire();
    nat_status st = NAT_OK;
    for (int i = 0; i < pl->n_in && st == NAT_OK; i++) {
        if (pl->in_reorder[i]) {
            void *re[2] = {(void *)in[i], at};
            ptrs[n++] = at;
            at += align64(pl->in_bytes[i]);
            st = prim_run(&pl->in_re[i], s, re, sp);
        } else {
            ptrs[n++] = (void *)in[i];
        }
    }
    if (pl->pass_arg)
        ptrs[n++] = (void *)pass;
    void *dst = pl->out_reorder ? at : out;
    ptrs[n++] = dst;
    if (st == NAT_OK)
        st = prim_run(&pl->main, s, ptrs, sp);
    if (st == NAT_OK && pl->out_reorder) {
        void *re[2] = {dst, out};
        st = prim_run(&pl->out_re, s, re, sp);
    }
    slot_release(s);
    if (block)
        nat_mem_free(NAT_CPU, block, bytes);
    return st;
}

/* ---- the plan cache ---- */

typedef struct plan_entry {
    struct plan_entry *next;
    const char *kind;
    size_t key_bytes;
    nat_dnn_plan plan;
    unsigned char key[]; /* key_bytes */
} plan_entry;

#define PLAN_BUCKETS 256
static plan_entry *buckets[PLAN_BUCKETS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_long plans_built;

static unsigned bucket_of(const char *kind, const void *key, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *k = (const unsigned char *)kind; *k; k++)
        h = (h ^ *k) * 1099511628211ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)key)[i]) * 1099511628211ull;
    return (unsigned)(h % PLAN_BUCKETS);
}

nat_status nat_dnn_plan_get(const char *kind, const void *key, size_t key_bytes, nat_dnn_build_fn build,
                            const nat_dnn_plan **out)
{
    unsigned b = bucket_of(kind, key, key_bytes);
    pthread_mutex_lock(&cache_lock);
    for (plan_entry *e = buckets[b]; e; e = e->next)
        if (!strcmp(e->kind, kind) && e->key_bytes == key_bytes && memcmp(e->key, key, key_bytes) == 0) {
            pthread_mutex_unlock(&cache_lock);
            *out = &e->plan;
            return NAT_OK;
        }
    /* built under the lock: two threads asking for the same new plan build it once */
    plan_entry *e = calloc(1, sizeof *e + key_bytes);
    nat_status s = e ? build(key, &e->plan) : nat_error(NAT_ERR_OOM, "oneDNN plan cache: out of memory");
    if (s == NAT_OK) {
        e->kind = kind;
        e->key_bytes = key_bytes;
        memcpy(e->key, key, key_bytes);
        e->next = buckets[b];
        buckets[b] = e;
        atomic_fetch_add(&plans_built, 1);
        *out = &e->plan;
    } else {
        free(e); /* a half-built plan's primitives leak; builds fail only on unsupported problems */
    }
    pthread_mutex_unlock(&cache_lock);
    return s;
}

long nat_dnn_plans_built(void) { return atomic_load(&plans_built); }

/* ---- what runs ---- */

const char *nat_dnn_isa_name(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_all: return "all";
    default: return "unknown";
    }
}

static char version_buf[48];
static pthread_once_t version_once = PTHREAD_ONCE_INIT;

static void version_make(void)
{
    const dnnl_version_t *v = dnnl_version();
    snprintf(version_buf, sizeof version_buf, "%d.%d.%d", v->major, v->minor, v->patch);
}

const char *nat_dnn_version_string(void)
{
    pthread_once(&version_once, version_make);
    return version_buf;
}
