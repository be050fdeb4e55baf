/* train/train_eval.c — see train/train_eval.h. */
#include "train/train_eval.h"

#include <string.h>

#include "train/bench.h" /* nat_bench_now */

static nat_status run(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                      bool *complete)
{
    nat_loader_state st = nat_loader_get_state(L);
    st.epoch = 0;
    st.batch = 0;
    NAT_TRY(nat_loader_set_state(L, &st));
    for (;;) {
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
        NAT_TRY(nat_ctx_empty(ctx, &x, NAT_F32, 4, shape));
        memcpy(nat_tensor_f32(x), b.x, (size_t)(b.n * b.c * b.h * b.w) * sizeof(float));
        NAT_TRY(nat_model_forward(m, ctx, x, false, NULL, &logits));
        nat_status s = nat_metrics_add(met, nat_tensor_f32(logits), b.labels, b.n);
        nat_ctx_reset(ctx);
        NAT_TRY(s);
    }
}

nat_status nat_evaluate(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, volatile sig_atomic_t *stop,
                        double *seconds, bool *complete)
{
    double t0 = nat_bench_now();
    bool done = true;
    nat_metrics_reset(met);
    bool grad = nat_ctx_set_grad_enabled(ctx, false);
    nat_status s = run(m, ctx, L, met, stop, &done);
    nat_ctx_reset(ctx);
    nat_ctx_set_grad_enabled(ctx, grad);
    if (seconds)
        *seconds = nat_bench_now() - t0;
    if (complete)
        *complete = done;
    return s;
}
