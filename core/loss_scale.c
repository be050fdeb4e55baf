/* core/loss_scale.c — dynamic loss scaling for f16 autocast (include/nat/optim.h): scale, unscale with a
 * finiteness check, and the skip / halve / double rule of torch.cuda.amp.GradScaler.
 *
 * Unscaling multiplies by 1/scale: the scale is a power of two, so that is exact (barring subnormal
 * results) and the same as a division. The finiteness check reuses the gradient-norm reduction of the
 * gradients' device (a sum of squares in double is finite exactly when every element is: float squares
 * cannot overflow a double); on CUDA it costs one read-back per batch of gradients. */
#include <math.h>

#include "core/backend.h"
#include "nat/optim.h"
#include "core/check.h"

void nat_loss_scaler_init(nat_loss_scaler *s, float init_scale, int growth_interval)
{
    s->scale = init_scale > 0.0f ? init_scale : 65536.0f;
    s->growth_interval = growth_interval > 0 ? growth_interval : 2000;
    s->good_steps = 0;
    s->skipped = 0;
}

float nat_loss_scaler_scale(const nat_loss_scaler *s) { return s->scale; }

/* The pending gradients of one device, checked together (on CUDA: one read-back per batch). */
typedef struct pending {
    nat_device dev;
    int k;
    const float *xs[64];
    int64_t ns[64];
} pending;

static nat_status flush(pending *p, bool *finite)
{
    if (p->k == 0)
        return NAT_OK;
    double sq = 0.0;
    NAT_TRY(NAT_KERNEL(NAT_EXEC_DEV(p->dev), sum_squares, p->k, p->xs, p->ns, &sq));
    if (!isfinite(sq)) /* a float square cannot overflow a double: only inf or NaN make sq non-finite */
        *finite = false;
    p->k = 0;
    return NAT_OK;
}

nat_status nat_loss_scaler_unscale(const nat_loss_scaler *s, nat_tensor *const *params, int n, bool *finite)
{
    NAT_CHECK_ARG(s, "nat_loss_scaler_unscale", "s");
    if (n > 0)
        NAT_CHECK_ARG(params, "nat_loss_scaler_unscale", "params");
    *finite = true;
    if (!(s->scale > 0.0f) || isinf(s->scale))
        return nat_error(NAT_ERR_INVALID_ARG, "loss_scaler: scale %g must be finite and > 0", (double)s->scale);
    const float inv = 1.0f / s->scale;
    pending p = {.k = 0};
    for (int i = 0; i < n; i++) {
        nat_tensor *gr = params[i] ? params[i]->grad : NULL;
        if (!gr)
            continue;
        if (gr->dtype != NAT_F32 || !nat_tensor_is_contiguous(gr))
            return nat_error(NAT_ERR_UNSUPPORTED, "loss_scaler: param %d's gradient is not a contiguous f32 tensor", i);
        float *g = nat_tensor_f32(gr);
        int64_t m = nat_tensor_numel(gr), unit = 1;
        NAT_TRY(nat_device_check(gr->device, "loss_scaler"));
        NAT_TRY(NAT_KERNEL(NAT_EXEC_DEV(gr->device), binary, NAT_CUDA_SCALE, false, g, 1, &m, g, &unit, NULL, NULL, inv));
        if (p.k == 64 || (p.k > 0 && (p.dev.kind != gr->device.kind || p.dev.index != gr->device.index)))
            NAT_TRY(flush(&p, finite));
        p.dev = gr->device;
        p.xs[p.k] = g;
        p.ns[p.k++] = m;
    }
    return flush(&p, finite);
}

bool nat_loss_scaler_update(nat_loss_scaler *s, bool finite)
{
    if (!finite) {
        s->scale *= 0.5f;
        s->good_steps = 0;
        s->skipped++;
        return false;
    }
    if (++s->good_steps >= s->growth_interval) {
        float grown = s->scale * 2.0f;
        if (isfinite(grown)) /* as GradScaler: never grow into inf */
            s->scale = grown;
        s->good_steps = 0;
    }
    return true;
}
