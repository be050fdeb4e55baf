/* layers/natten/dev/na_lab.c — the NA kernel lab's benchmark (executable `na-lab`): every kernel version
 * of layers/natten/cuda/na_cuda.h, validated and timed on one device.
 *
 * For each problem — NAT-Mini's four levels at batch 128 (56², 28², 14², 7² maps with 2, 4, 8, 16
 * heads; head dim 32; kernel 7; rpb), one 256² map with 4 heads of 64 channels at kernel 13, a 3-D
 * problem — and each (op, version):
 *   1. validation: the version on the same problem at batch --vbatch (default 2: the same tiles and
 *      blocks per image, a smaller grid) against the fp32 CPU kernels (cpu/na_cpu.h) on the same inputs,
 *      max |gpu - cpu| / max |cpu| <= 1e-4 (v3: against the CPU kernels on the bf16 / f16-rounded inputs,
 *      2e-2);
 *   2. timing at the full batch: one warm-up, then --reps runs (default 10), each after writing a
 *      256 MiB device buffer (larger than any L2, so no run finds the previous one's data cached) and a
 *      device synchronisation; wall clock from just before the launch to the synchronisation after it;
 *      the median is printed with its ratio to the op's baseline (v0 for the unfused ops, v1 for the
 *      fused ones) measured in the same run.
 * Ops: qk, av, qk_bwd, av_bwd (v0, v2), fused_fwd and fused_bwd (v1; v3 bf16; v3 f16; v3's backward is
 * timed after, and validated against the CPU backward on, its own forward's out and lse).
 * A version that does not apply prints "n/a" (its entry point says why).
 *
 * Usage: na-lab [--reps N] [--vbatch N] [--case NAME] [--no-validate]
 * Without a usable device it prints "no CUDA device" and exits 77.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h" /* nat_cuda_memcpy, nat_cuda_fill */
#include "layers/natten/cpu/na_cpu.h"
#include "core/half.h"
#include "layers/natten/na_backend.h" /* every version through the CUDA table: links without CUDA too */
#include "nat/nat.h"
#include "nat/cuda.h"

typedef struct lab_case {
    const char *name;
    int ndim;
    int64_t batch, heads, len[3], dim;
    int kernel, rpb;
} lab_case;

static const lab_case CASES[] = {
    {"mini-56", 2, 128, 2, {56, 56}, 32, 7, 1},   {"mini-28", 2, 128, 4, {28, 28}, 32, 7, 1},
    {"mini-14", 2, 128, 8, {14, 14}, 32, 7, 1},   {"mini-7", 2, 128, 16, {7, 7}, 32, 7, 1},
    {"map-256", 2, 1, 4, {256, 256}, 64, 13, 1},  {"3d-16x28x28", 3, 2, 4, {16, 28, 28}, 32, 5, 1},
};

enum { QK, AV, QK_BWD, AV_BWD, FWD, BWD, NOPS };
static const char *OP_NAMES[NOPS] = {"qk", "av", "qk_bwd", "av_bwd", "fused_fwd", "fused_bwd"};
/* versions per op: 0, 1, 2; 3 = v3 bf16, 4 = v3 f16 */
static const int OP_VERS[NOPS][3] = {{0, 2, -1}, {0, 2, -1}, {0, 2, -1}, {0, 2, -1}, {1, 3, 4}, {1, 3, 4}};
static const char *VER_NAMES[5] = {"v0", "v1", "v2", "v3-bf16", "v3-f16"};

static const nat_device GPU = {NAT_DEV_CUDA, 0};

/* One problem: device buffers (and, for validation, host copies of the inputs). */
typedef struct prob {
    nat_na_params p;
    na_problem pb;  /* p against the sizes, validated once (what the CPU reference kernels take) */
    na_problem gpb; /* the same problem on cuda:0 */
    int64_t B, H, sp[3], D, nqkv, natt, nrpb, nlse;
    float *q, *k, *v, *rpb, *attn, *out, *lse, *dout, *dattn, *dq, *dk, *dv, *drpb;
    uint16_t *h16[2]; /* q, k, v as bf16 [0] and f16 [1] bits, 3*nqkv each */
    float *hq, *hk, *hv, *hrpb, *hattn, *hdout, *hdattn; /* host inputs (validation only) */
} prob;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static void die(const char *what)
{
    fprintf(stderr, "na-lab: %s: %s\n", what, nat_error_message());
    exit(1);
}

#define CK(x)         \
    do {              \
        if ((x) != NAT_OK) \
            die(#x);  \
    } while (0)

/* cuda:0's kernels and their versions (set in main once a device is known to be there). */
static const na_backend *g_lab;
#define LAB g_lab
#define LAB_V (g_lab->versions)

static float *dalloc(int64_t n)
{
    void *p;
    CK(nat_mem_alloc(GPU, sizeof(float) * (size_t)(n > 0 ? n : 1), &p));
    return p;
}

static float *hrand(nat_rng *r, int64_t n, float lo, float hi)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    nat_rng_fill_uniform(r, x, (size_t)n, lo, hi);
    return x;
}

static void up(float *d, const float *h, int64_t n) { CK(nat_cuda_memcpy(0, d, h, sizeof(float) * (size_t)n, NAT_CUDA_H2D)); }

static void prob_init(prob *P, const lab_case *c, int64_t batch, int with_host)
{
    memset(P, 0, sizeof *P);
    P->p = nat_na_params_make(c->ndim, c->kernel, 1);
    P->B = batch;
    P->H = c->heads;
    P->D = c->dim;
    int64_t npix = 1, K = 1, R = c->heads;
    for (int a = 0; a < c->ndim; a++) {
        P->sp[a] = c->len[a];
        npix *= c->len[a];
        K *= c->kernel;
        R *= 2 * c->kernel - 1;
    }
    CK(na_problem_init(&P->pb, &P->p, P->B, P->H, P->sp, P->D, c->rpb, "na-lab"));
    P->gpb = P->pb;
    P->gpb.device = 0;
    P->nqkv = batch * c->heads * npix * c->dim;
    P->natt = batch * c->heads * npix * K;
    P->nrpb = R;
    P->nlse = batch * c->heads * npix;
    float **dev[] = {&P->q, &P->k, &P->v, &P->out, &P->dout, &P->dq, &P->dk, &P->dv};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        *dev[i] = dalloc(P->nqkv);
    P->attn = dalloc(P->natt);
    P->dattn = dalloc(P->natt);
    P->lse = dalloc(P->nlse);
    P->rpb = c->rpb ? dalloc(R) : NULL;
    P->drpb = c->rpb ? dalloc(R) : NULL;
    for (int t = 0; t < 2; t++)
        CK(nat_mem_alloc(GPU, sizeof(uint16_t) * (size_t)(3 * P->nqkv), (void **)&P->h16[t]));
    if (with_host) {
        nat_rng r;
        nat_rng_seed(&r, 1234);
        P->hq = hrand(&r, P->nqkv, -2, 2), P->hk = hrand(&r, P->nqkv, -2, 2), P->hv = hrand(&r, P->nqkv, -2, 2);
        P->hrpb = hrand(&r, R, -1, 1), P->hattn = hrand(&r, P->natt, 0, 0.05f);
        P->hdout = hrand(&r, P->nqkv, -1, 1), P->hdattn = hrand(&r, P->natt, -1, 1);
        up(P->q, P->hq, P->nqkv), up(P->k, P->hk, P->nqkv), up(P->v, P->hv, P->nqkv);
        if (P->rpb)
            up(P->rpb, P->hrpb, R);
        up(P->attn, P->hattn, P->natt), up(P->dout, P->hdout, P->nqkv), up(P->dattn, P->hdattn, P->natt);
    } else { /* timing only: values do not change the work */
        CK(nat_cuda_fill(0, P->q, P->nqkv, 0.01f)); CK(nat_cuda_fill(0, P->k, P->nqkv, 0.02f));
        CK(nat_cuda_fill(0, P->v, P->nqkv, 0.03f)); CK(nat_cuda_fill(0, P->attn, P->natt, 0.02f));
        CK(nat_cuda_fill(0, P->dout, P->nqkv, 0.01f)); CK(nat_cuda_fill(0, P->dattn, P->natt, 0.01f));
        if (P->rpb)
            CK(nat_cuda_fill(0, P->rpb, R, 0.1f));
    }
    for (int t = 0; t < 2; t++) {
        const float *src[3] = {P->q, P->k, P->v};
        for (int i = 0; i < 3; i++)
            CK(LAB_V->to_half(0, t, src[i], P->h16[t] + i * P->nqkv, P->nqkv));
    }
    CK(nat_cuda_synchronize(0));
}

static void prob_free(prob *P)
{
    float *dev[] = {P->q, P->k, P->v, P->out, P->dout, P->dq, P->dk, P->dv};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        nat_mem_free(GPU, dev[i], sizeof(float) * (size_t)P->nqkv);
    nat_mem_free(GPU, P->attn, sizeof(float) * (size_t)P->natt);
    nat_mem_free(GPU, P->dattn, sizeof(float) * (size_t)P->natt);
    nat_mem_free(GPU, P->lse, sizeof(float) * (size_t)P->nlse);
    if (P->rpb) {
        nat_mem_free(GPU, P->rpb, sizeof(float) * (size_t)P->nrpb);
        nat_mem_free(GPU, P->drpb, sizeof(float) * (size_t)P->nrpb);
    }
    for (int t = 0; t < 2; t++)
        nat_mem_free(GPU, P->h16[t], sizeof(uint16_t) * (size_t)(3 * P->nqkv));
    free(P->hq), free(P->hk), free(P->hv), free(P->hrpb), free(P->hattn), free(P->hdout), free(P->hdattn);
}

#define PA(P) (&(P)->gpb) /* the problem on cuda:0 */

static nat_status run(int op, int ver, prob *P)
{
    switch (op) {
    case QK:
        return ver == 2 ? LAB_V->qk_v2(PA(P), P->q, P->k, P->rpb, P->attn)
                        : LAB_V->qk_v0(PA(P), P->q, P->k, P->rpb, P->attn);
    case AV:
        return ver == 2 ? LAB_V->av_v2(PA(P), P->attn, P->v, P->out) : LAB_V->av_v0(PA(P), P->attn, P->v, P->out);
    case QK_BWD:
        return ver == 2 ? LAB_V->qk_backward_v2(PA(P), P->dattn, P->q, P->k, P->dq, P->dk, P->drpb)
                        : LAB_V->qk_backward_v0(PA(P), P->dattn, P->q, P->k, P->dq, P->dk, P->drpb);
    case AV_BWD:
        return ver == 2 ? LAB_V->av_backward_v2(PA(P), P->dout, P->attn, P->v, P->dattn, P->dv)
                        : LAB_V->av_backward_v0(PA(P), P->dout, P->attn, P->v, P->dattn, P->dv);
    case FWD:
        if (ver >= 3) {
            const uint16_t *h = P->h16[ver - 3];
            return LAB_V->fused_forward_v3(PA(P), ver - 3, h, h + P->nqkv, h + 2 * P->nqkv, P->rpb, P->out, P->lse);
        }
        return LAB->fused_forward(PA(P), P->q, P->k, P->v, P->rpb, P->out, P->lse);
    default:
        if (ver >= 3) {
            const uint16_t *h = P->h16[ver - 3];
            return LAB_V->fused_backward_v3(PA(P), ver - 3, h, h + P->nqkv, h + 2 * P->nqkv, P->rpb, P->out, P->lse,
                                             P->dout, P->dq, P->dk, P->dv, P->drpb);
        }
        return LAB->fused_backward(PA(P), P->q, P->k, P->v, P->rpb, P->out, P->lse, P->dout, P->dq, P->dk,
                                      P->dv, P->drpb);
    }
}

static float *down(const float *d, int64_t n)
{
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    CK(nat_cuda_memcpy(0, h, d, sizeof(float) * (size_t)n, NAT_CUDA_D2H));
    return h;
}

static double rel(const float *got, const float *ref, int64_t n)
{
    double mx = 0, err = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isinf(ref[i]) && got[i] == ref[i])
            continue;
        mx = fmax(mx, fabs(ref[i]));
        err = fmax(err, fabs((double)got[i] - ref[i]));
        if (!isfinite(got[i]))
            return INFINITY;
    }
    return mx > 0 ? err / mx : err;
}

/* Worst relative error of (op, ver) on P against the CPU kernels. */
static double validate(int op, int ver, prob *P)
{
    const int64_t n = P->nqkv;
    float *o1 = calloc((size_t)(P->natt > n ? P->natt : n), sizeof(float)), *o2 = calloc((size_t)n, sizeof(float));
    float *o3 = calloc((size_t)n, sizeof(float)), *o4 = calloc((size_t)(P->nrpb + 1), sizeof(float));
    float *lse = calloc((size_t)P->nlse, sizeof(float));
    const float *hr = P->rpb ? P->hrpb : NULL;
    float *q = P->hq, *k = P->hk, *v = P->hv, *rq = NULL, *rk = NULL, *rv = NULL;
    if ((op == FWD || op == BWD) && ver >= 3) { /* the CPU kernels on the rounded inputs */
        rq = malloc(sizeof(float) * (size_t)n), rk = malloc(sizeof(float) * (size_t)n), rv = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            rq[i] = ver == 4 ? half_round_f16(q[i]) : half_round_bf16(q[i]);
            rk[i] = ver == 4 ? half_round_f16(k[i]) : half_round_bf16(k[i]);
            rv[i] = ver == 4 ? half_round_f16(v[i]) : half_round_bf16(v[i]);
        }
        q = rq, k = rk, v = rv;
    }
    if (op == BWD) /* out and lse from the same version's forward (validated before) */
        CK(run(FWD, ver >= 3 ? ver : 1, P));
    CK(run(op, ver, P));
    double e = 0;
    float *g1, *g2, *g3, *g4 = NULL;
    switch (op) {
    case QK:
        CK(na_cpu_qk(&P->pb, q, k, hr, o1));
        g1 = down(P->attn, P->natt);
        e = rel(g1, o1, P->natt);
        free(g1);
        break;
    case AV:
        CK(na_cpu_av(&P->pb, P->hattn, v, o2));
        g1 = down(P->out, n);
        e = rel(g1, o2, n);
        free(g1);
        break;
    case QK_BWD:
        CK(na_cpu_qk_backward(&P->pb, P->hdattn, q, k, o2, o3, P->rpb ? o4 : NULL));
        g1 = down(P->dq, n), g2 = down(P->dk, n);
        e = fmax(rel(g1, o2, n), rel(g2, o3, n));
        if (P->rpb)
            g4 = down(P->drpb, P->nrpb), e = fmax(e, rel(g4, o4, P->nrpb));
        free(g1), free(g2), free(g4);
        break;
    case AV_BWD:
        CK(na_cpu_av_backward(&P->pb, P->hdout, P->hattn, v, o1, o2));
        g1 = down(P->dattn, P->natt), g2 = down(P->dv, n);
        e = fmax(rel(g1, o1, P->natt), rel(g2, o2, n));
        free(g1), free(g2);
        break;
    case FWD:
        CK(na_cpu_fused_forward(&P->pb, q, k, v, hr, o2, lse));
        g1 = down(P->out, n), g2 = down(P->lse, P->nlse);
        e = fmax(rel(g1, o2, n), rel(g2, lse, P->nlse));
        free(g1), free(g2);
        break;
    default: {
        float *out = down(P->out, n), *l = down(P->lse, P->nlse);
        CK(na_cpu_fused_backward(&P->pb, q, k, v, hr, out, l, P->hdout, o1, o2, o3, P->rpb ? o4 : NULL));
        g1 = down(P->dq, n), g2 = down(P->dk, n), g3 = down(P->dv, n);
        e = fmax(fmax(rel(g1, o1, n), rel(g2, o2, n)), rel(g3, o3, n));
        if (P->rpb)
            g4 = down(P->drpb, P->nrpb), e = fmax(e, rel(g4, o4, P->nrpb));
        free(out), free(l), free(g1), free(g2), free(g3), free(g4);
    }
    }
    free(o1), free(o2), free(o3), free(o4), free(lse), free(rq), free(rk), free(rv);
    return e;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double time_op(int op, int ver, prob *P, float *flush, int64_t nflush, int reps)
{
    if (op == BWD)
        CK(run(FWD, ver >= 3 ? ver : 1, P));
    CK(run(op, ver, P)); /* warm-up (and the dispatch-free entry point's first launch) */
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        CK(nat_cuda_fill(0, flush, nflush, (float)r)); /* evict L2 */
        CK(nat_cuda_synchronize(0));
        const double t0 = now_ms();
        CK(run(op, ver, P));
        CK(nat_cuda_synchronize(0));
        t[r] = now_ms() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    const double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    free(t);
    return med;
}

int main(int argc, char **argv)
{
    int reps = 10, vbatch = 2, do_validate = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vbatch") && i + 1 < argc)
            vbatch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--case") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--no-validate"))
            do_validate = 0;
        else {
            fprintf(stderr, "usage: na-lab [--reps N] [--vbatch N] [--case NAME] [--no-validate]\n");
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    if (!nat_cuda_available()) {
        printf("na-lab: no CUDA device (%s): nothing to measure\n",
               nat_cuda_built() ? "none present" : "nat was built without CUDA");
        return 77;
    }
    CK(na_backend_get(0, "na-lab", &g_lab));
    char dev[128] = "";
    nat_cuda_device_name(0, dev, sizeof dev);
    printf("na-lab on cuda:0 (%s); median of %d runs, L2 flushed (256 MiB written) before each; validation "
           "at batch %d against the CPU kernels\n",
           dev, reps, vbatch);
    const int64_t nflush = 64ll << 20;
    float *flush = dalloc(nflush);
    int failures = 0;
    printf("%-12s %-10s %-8s %10s %8s  %s\n", "case", "op", "version", "ms", "ratio", "validation");
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const lab_case *c = &CASES[ci];
        if (only && strcmp(only, c->name))
            continue;
        prob V, T;
        if (do_validate)
            prob_init(&V, c, c->batch < vbatch ? c->batch : vbatch, 1);
        prob_init(&T, c, c->batch, 0);
        for (int op = 0; op < NOPS; op++) {
            double base = 0;
            for (int vi = 0; vi < 3 && OP_VERS[op][vi] >= 0; vi++) {
                const int ver = OP_VERS[op][vi];
                if (run(op, ver, &T) != NAT_OK) {
                    printf("%-12s %-10s %-8s %10s %8s  %s\n", c->name, OP_NAMES[op], VER_NAMES[ver], "n/a", "",
                           nat_error_message());
                    continue;
                }
                char vmsg[64] = "skipped";
                if (do_validate) {
                    const double e = validate(op, ver, &V), tol = ver >= 3 ? 2e-2 : 1e-4;
                    snprintf(vmsg, sizeof vmsg, "%s (rel err %.2g, tol %.0e)", e <= tol ? "ok" : "FAILED", e, tol);
                    failures += !(e <= tol);
                }
                const double ms = time_op(op, ver, &T, flush, nflush, reps);
                if (vi == 0)
                    base = ms;
                printf("%-12s %-10s %-8s %10.3f %7.2fx  %s\n", c->name, OP_NAMES[op], VER_NAMES[ver], ms,
                       ms > 0 ? base / ms : 0.0, vmsg);
                fflush(stdout);
            }
        }
        if (do_validate)
            prob_free(&V);
        prob_free(&T);
    }
    nat_mem_free(GPU, flush, sizeof(float) * (size_t)nflush);
    if (failures)
        printf("na-lab: %d validation failure(s)\n", failures);
    return failures ? 1 : 0;
}
