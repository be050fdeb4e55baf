/* bench/na_driver.c — a small shared library (libnat_na_driver.so) exposing nat's fused neighborhood
 * attention to Python through ctypes, for bench/na_vs_torch.py: run it once on given host arrays
 * (results copied back) to compare against PyTorch, or time it on a device.
 *
 * Layouts: q, k, v, out, dq, dk, dv [B, heads, *spatial, D] float32 contiguous host arrays; rpb
 * [heads, 2k-1, ...] or NULL. shape = {B, heads, spatial..., D} (ndim + 3 values). device: -1 for the
 * CPU, else a CUDA ordinal. prec: 0 f32, 1 bf16, 2 f16 (nat_precision, autocast). All pointers borrowed.
 * Functions return 0 (or a time) on success and -1 on failure; nat_na_driver_error() says why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nat/cuda.h"
#include "nat/nat.h"

static char g_err[512]; /* the driver is a benchmark helper used from one Python thread */

const char *nat_na_driver_error(void) { return g_err; }

#define DRV_TRY(x)                                                                       \
    do {                                                                                 \
        if ((x) != NAT_OK) {                                                             \
            snprintf(g_err, sizeof g_err, "%s: %s", #x, nat_error_message());            \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)

typedef struct drv {
    nat_device dev;
    nat_tensor *x[4]; /* q, k, v, rpb on the device */
    int n_in;
} drv;

static nat_status upload(const float *h, int ndim, const int64_t *shape, nat_device dev, nat_tensor **out)
{
    nat_tensor *t;
    NAT_TRY(nat_tensor_wrap(&t, (void *)h, NAT_F32, NAT_CPU, ndim, shape));
    nat_status s = nat_tensor_to(NULL, t, dev, out);
    nat_tensor_free(t);
    if (s == NAT_OK)
        nat_set_requires_grad(*out, true);
    return s;
}

static nat_status download(const nat_tensor *t, float *h)
{
    if (!h || !t)
        return NAT_OK;
    nat_tensor *c;
    NAT_TRY(nat_tensor_to(NULL, t, NAT_CPU, &c));
    memcpy(h, nat_tensor_f32(c), sizeof(float) * (size_t)nat_tensor_numel(c));
    nat_tensor_free(c);
    return NAT_OK;
}

/* One forward (and, if backward, a backward of sum(out * 1)) in a fresh context. */
static nat_status step(drv *d, int prec, const nat_na_params *p, int backward, nat_tensor **out, nat_ctx **pctx)
{
    nat_ctx *ctx;
    NAT_TRY(nat_ctx_new(&ctx, d->dev));
    *pctx = ctx;
    nat_ctx_set_precision(ctx, (nat_precision)prec);
    NAT_TRY(nat_na(ctx, d->x[0], d->x[1], d->x[2], d->n_in > 3 ? d->x[3] : NULL, p, out));
    if (backward) {
        nat_tensor *loss;
        NAT_TRY(nat_sum(ctx, *out, &loss));
        NAT_TRY(nat_backward(ctx, loss));
    }
    return NAT_OK;
}

static nat_status drv_init(drv *d, int device, int ndim, const int64_t *shape, int kernel, const float *q,
                           const float *k, const float *v, const float *rpb)
{
    memset(d, 0, sizeof *d);
    d->dev = device < 0 ? NAT_CPU : (nat_device){NAT_DEV_CUDA, device};
    const float *src[3] = {q, k, v};
    for (int i = 0; i < 3; i++)
        NAT_TRY(upload(src[i], ndim + 3, shape, d->dev, &d->x[i]));
    d->n_in = 3;
    if (rpb) {
        int64_t rs[4] = {shape[1], 2 * kernel - 1, 2 * kernel - 1, 2 * kernel - 1};
        NAT_TRY(upload(rpb, ndim + 1, rs, d->dev, &d->x[3]));
        d->n_in = 4;
    }
    return NAT_OK;
}

static void drv_free(drv *d)
{
    for (int i = 0; i < 4; i++)
        nat_tensor_free(d->x[i]);
}

static nat_na_params params(int ndim, int kernel, int dilation, int causal)
{
    nat_na_params p = nat_na_params_make(ndim, kernel, dilation);
    for (int a = 0; a < ndim; a++)
        p.causal[a] = causal;
    return p;
}

int nat_na_driver_run(int device, int prec, int ndim, const int64_t *shape, int kernel, int dilation, int causal,
                      const float *q, const float *k, const float *v, const float *rpb, float *out, float *dq,
                      float *dk, float *dv, float *drpb)
{
    drv d;
    nat_ctx *ctx = NULL;
    nat_tensor *y;
    const nat_na_params p = params(ndim, kernel, dilation, causal);
    const int backward = dq || dk || dv || drpb;
    DRV_TRY(drv_init(&d, device, ndim, shape, kernel, q, k, v, rpb));
    DRV_TRY(step(&d, prec, &p, backward, &y, &ctx));
    DRV_TRY(download(y, out));
    if (backward) {
        float *g[4] = {dq, dk, dv, drpb};
        for (int i = 0; i < d.n_in; i++)
            DRV_TRY(download(d.x[i]->grad, g[i]));
    }
    nat_ctx_free(ctx);
    drv_free(&d);
    return 0;
fail:
    nat_ctx_free(ctx);
    drv_free(&d);
    return -1;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ms of `reps` runs (after one warm-up) of the forward (backward != 0: forward + backward) on
 * random inputs, the device synchronised around each run; flush (n floats on the device, may be NULL:
 * nat allocates none) is not touched here — the caller evicts L2 through `flush_cb` between runs. */
double nat_na_driver_time(int device, int prec, int ndim, const int64_t *shape, int kernel, int dilation, int causal,
                          int with_rpb, int backward, int reps, void (*flush_cb)(void))
{
    if (reps < 1)
        reps = 1;
    int64_t n = 1, nr = shape[1];
    for (int i = 0; i < ndim + 3; i++)
        n *= shape[i];
    for (int a = 0; a < ndim; a++)
        nr *= 2 * kernel - 1;
    float *h = malloc(sizeof(float) * (size_t)(3 * n + nr));
    nat_rng r;
    nat_rng_seed(&r, 7);
    nat_rng_fill_normal(&r, h, (size_t)(3 * n + nr), 0.0f, 1.0f);
    double *t = malloc(sizeof(double) * (size_t)(reps > 0 ? reps : 1));
    drv d;
    nat_ctx *ctx = NULL;
    nat_tensor *y;
    double med = -1;
    const nat_na_params p = params(ndim, kernel, dilation, causal);
    DRV_TRY(drv_init(&d, device, ndim, shape, kernel, h, h + n, h + 2 * n, with_rpb ? h + 3 * n : NULL));
    for (int i = -1; i < reps; i++) {
        if (flush_cb)
            flush_cb();
        if (device >= 0)
            DRV_TRY(nat_cuda_synchronize(device));
        const double t0 = now_ms();
        DRV_TRY(step(&d, prec, &p, backward, &y, &ctx));
        if (device >= 0)
            DRV_TRY(nat_cuda_synchronize(device));
        if (i >= 0)
            t[i] = now_ms() - t0;
        nat_ctx_free(ctx);
        ctx = NULL;
        for (int j = 0; j < d.n_in; j++)
            nat_zero_grad(d.x[j]);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
fail:
    nat_ctx_free(ctx);
    drv_free(&d);
    free(h);
    free(t);
    return med;
}
