/* train/ema.c — see train/train.h (section ema). Parameters are matched by position: both models come from
 * one description, so their parameter lists have the same names, order and shapes. The average lives on
 * the source model's device and is updated there (nat_params_ema_update). */
#include "train/train.h"

#include <string.h>

#include "nat/cuda.h"
#include "nat/optim.h"

nat_status nat_ema_init(nat_ema *e, const nat_model *src, float decay)
{
    memset(e, 0, sizeof *e);
    NAT_TRY(nat_model_new(&e->model, nat_model_get_desc(src)));
    NAT_TRY(nat_model_to(e->model, nat_model_device(src)));
    const nat_param_list *a = nat_model_params(src), *b = nat_model_params(e->model);
    for (int i = 0; i < a->count; i++) {
        nat_tensor *t = b->items[i].tensor;
        NAT_TRY(nat_tensor_copy(t, a->items[i].tensor));
        nat_set_requires_grad(t, false);
    }
    e->decay = decay;
    return NAT_OK;
}

nat_status nat_ema_update(nat_ema *e, const nat_model *src)
{
    double t = (double)e->updates;
    float d = (float)((1.0 + t) / (10.0 + t));
    if (d > e->decay)
        d = e->decay;
    const nat_param_list *a = nat_model_params(src), *b = nat_model_params(e->model);
    for (int i = 0; i < a->count; i++) /* pair by pair: no pointer arrays to allocate per step */
        NAT_TRY(nat_params_ema_update(&b->items[i].tensor, &a->items[i].tensor, 1, d));
    e->updates++;
    return NAT_OK;
}

void nat_ema_free(nat_ema *e)
{
    nat_model_free(e->model);
    e->model = NULL;
}
