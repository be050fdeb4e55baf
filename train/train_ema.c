/* train/train_ema.c — see train/train_ema.h. Parameters are matched by position: both models come from
 * one description, so their parameter lists have the same names, order and shapes. */
#include "train/train_ema.h"

#include <string.h>

nat_status nat_ema_init(nat_ema *e, const nat_model *src, float decay)
{
    memset(e, 0, sizeof *e);
    NAT_TRY(nat_model_new(&e->model, nat_model_get_desc(src)));
    const nat_param_list *a = nat_model_params(src), *b = nat_model_params(e->model);
    for (int i = 0; i < a->count; i++) {
        nat_tensor *t = b->items[i].tensor;
        memcpy(nat_tensor_f32(t), nat_tensor_f32(a->items[i].tensor), (size_t)nat_tensor_numel(t) * sizeof(float));
        nat_set_requires_grad(t, false);
    }
    e->decay = decay;
    return NAT_OK;
}

void nat_ema_update(nat_ema *e, const nat_model *src)
{
    double t = (double)e->updates;
    float d = (float)((1.0 + t) / (10.0 + t));
    if (d > e->decay)
        d = e->decay;
    const nat_param_list *a = nat_model_params(src), *b = nat_model_params(e->model);
    for (int i = 0; i < a->count; i++) {
        const float *w = nat_tensor_f32(a->items[i].tensor);
        float *m = nat_tensor_f32(b->items[i].tensor);
        int64_t n = nat_tensor_numel(b->items[i].tensor);
        for (int64_t j = 0; j < n; j++)
            m[j] = d * m[j] + (1.0f - d) * w[j];
    }
    e->updates++;
}

void nat_ema_free(nat_ema *e)
{
    nat_model_free(e->model);
    e->model = NULL;
}
