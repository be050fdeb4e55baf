/* train/eval.c — see train/train.h (section eval). On a CUDA context each batch is copied to the device and
 * the logits back to the host for the metrics. */
#include "train/train.h"

#include <stdlib.h>
#include <string.h>


static nat_status run(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                      int part, int parts, bool *complete)
{
    const int64_t per = nat_loader_batches_per_epoch(L);
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
        nat_tensor *x, *logits;
        int64_t shape[4] = {b.n, b.c, b.h, b.w};
        NAT_TRY(nat_train_upload(ctx, b.x, 4, shape, &x));
        NAT_TRY(nat_model_forward(m, ctx, x, false, NULL, &logits));
        nat_status s;
        if (logits->device.kind == NAT_DEV_CPU) {
            s = nat_metrics_add(met, nat_tensor_f32(logits), b.labels, b.n);
        } else {
            int64_t n = nat_tensor_numel(logits);
            float *host = malloc((size_t)n * sizeof *host);
            s = host ? nat_train_download(logits, host, n) : nat_error(NAT_ERR_OOM, "evaluate: out of memory");
            if (s == NAT_OK)
                s = nat_metrics_add(met, host, b.labels, b.n);
            free(host);
        }
        nat_ctx_reset(ctx);
        NAT_TRY(s);
    }
    return NAT_OK;
}

nat_status nat_evaluate(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                        double *seconds, bool *complete)
{
    return nat_evaluate_part(m, ctx, L, met, stop, 0, 1, seconds, complete);
}

nat_status nat_evaluate_part(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                             int part, int parts, double *seconds, bool *complete)
{
    double t0 = nat_wall_now();
    bool done = true;
    nat_metrics_reset(met);
    bool grad = nat_ctx_set_grad_enabled(ctx, false);
    nat_status s = run(m, ctx, L, met, stop, part, parts, &done);
    nat_ctx_reset(ctx);
    nat_ctx_set_grad_enabled(ctx, grad);
    if (seconds)
        *seconds = nat_wall_now() - t0;
    if (complete)
        *complete = done;
    return s;
}
