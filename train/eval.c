/* train/eval.c — see train/train.h (section eval). On a CUDA context each batch is copied to the device and
 * the logits back to the host for the metrics. */
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

/* Host buffers of a test-time-augmented pass, grown to the largest batch. */
typedef struct views_buf {
    float *view, *logits;
    double *acc;
    size_t view_n, out_n;
} views_buf;

static nat_status grow(views_buf *vb, size_t view_n, size_t out_n)
{
    if (view_n > vb->view_n) {
        float *p = realloc(vb->view, view_n * sizeof *p);
        if (!p)
            return nat_error(NAT_ERR_OOM, "evaluate: out of memory for a test-time view of %zu values", view_n);
        vb->view = p, vb->view_n = view_n;
    }
    if (out_n > vb->out_n) {
        float *l = realloc(vb->logits, out_n * sizeof *l);
        if (l)
            vb->logits = l;
        double *a = l ? realloc(vb->acc, out_n * sizeof *a) : NULL;
        if (!a)
            return nat_error(NAT_ERR_OOM, "evaluate: out of memory for %zu test-time outputs", out_n);
        vb->acc = a, vb->out_n = out_n;
    }
    return NAT_OK;
}

/* The logits of one forward pass of x (n x c x h x w on the host) into host (n x classes); *classes set. */
static nat_status forward(nat_model *m, nat_ctx *ctx, const float *x, const int64_t shape[4], float **host_logits,
                          views_buf *vb, int *classes)
{
    nat_tensor *xt, *logits;
    NAT_TRY(nat_train_upload(ctx, x, 4, shape, &xt));
    NAT_TRY(nat_model_forward(m, ctx, xt, false, NULL, &logits));
    *classes = (int)logits->shape[1];
    int64_t n = nat_tensor_numel(logits);
    if (logits->device.kind == NAT_DEV_CPU) {
        *host_logits = nat_tensor_f32(logits);
        return NAT_OK;
    }
    NAT_TRY(grow(vb, 0, (size_t)n));
    NAT_TRY(nat_train_download(logits, vb->logits, n));
    *host_logits = vb->logits;
    return NAT_OK;
}

static nat_status run(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, const nat_tta *tta,
                      volatile sig_atomic_t *stop, int part, int parts, bool *complete, views_buf *vb)
{
    const int64_t per = nat_loader_batches_per_epoch(L);
    const int views = tta ? nat_tta_views(tta->kind) : 1;
    nat_loader_state st = nat_loader_get_state(L);
    st.epoch = 0;
    st.batch = 0;
    for (int64_t k = part; k < per; k += parts) {
        if (k == part || parts > 1) { /* skips the other parts' batches (the loader prefetches from there) */
            st.batch = k;
            NAT_TRY(nat_loader_set_state(L, &st));
        }
        if (stop && *stop) {
            *complete = false;
            return NAT_OK;
        }
        nat_batch b;
        NAT_TRY(nat_loader_next(L, &b));
        if (b.n == 0)
            return NAT_OK;
        int64_t shape[4] = {b.n, b.c, b.h, b.w};
        float *logits;
        int classes;
        nat_status s = NAT_OK;
        if (views == 1) {
            s = forward(m, ctx, b.x, shape, &logits, vb, &classes);
            if (s == NAT_OK)
                s = nat_metrics_add(met, logits, b.labels, b.n);
        } else {
            s = grow(vb, (size_t)b.n * b.c * b.h * b.w, 0);
            for (int v = 0; s == NAT_OK && v < views; v++) {
                nat_tta_view(tta, v, b.x, b.n, b.c, b.h, b.w, vb->view);
                s = forward(m, ctx, vb->view, shape, &logits, vb, &classes);
                if (s == NAT_OK && v == 0)
                    s = grow(vb, 0, (size_t)b.n * classes);
                if (s == NAT_OK && v == 0)
                    memset(vb->acc, 0, (size_t)b.n * classes * sizeof *vb->acc);
                if (s == NAT_OK)
                    nat_tta_accumulate(logits, b.n, classes, vb->acc);
                nat_ctx_reset(ctx); /* logits (step memory) are consumed: the next view reuses it */
            }
            if (s == NAT_OK) {
                nat_tta_finish(vb->acc, b.n, classes, views, vb->logits);
                s = nat_metrics_add(met, vb->logits, b.labels, b.n);
            }
        }
        nat_ctx_reset(ctx);
        NAT_TRY(s);
    }
    return NAT_OK;
}

nat_status nat_evaluate(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, const nat_tta *tta,
                        volatile sig_atomic_t *stop, double *seconds, bool *complete)
{
    return nat_evaluate_part(m, ctx, L, met, tta, stop, 0, 1, seconds, complete);
}

nat_status nat_evaluate_part(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, const nat_tta *tta,
                             volatile sig_atomic_t *stop, int part, int parts, double *seconds, bool *complete)
{
    double t0 = nat_wall_now();
    bool done = true;
    views_buf vb = {0};
    nat_metrics_reset(met);
    bool grad = nat_ctx_set_grad_enabled(ctx, false);
    nat_status s = run(m, ctx, L, met, tta, stop, part, parts, &done, &vb);
    nat_ctx_reset(ctx);
    nat_ctx_set_grad_enabled(ctx, grad);
    free(vb.view);
    free(vb.logits);
    free(vb.acc);
    if (seconds)
        *seconds = nat_wall_now() - t0;
    if (complete)
        *complete = done;
    return s;
}
