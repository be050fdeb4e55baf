/* train/train_ema.h — an exponential moving average of a model's weights (timm's ModelEmaV3 without
 * buffers): after each optimizer step, ema = d·ema + (1-d)·w with d = min(decay, (1+t)/(10+t)) for the
 * t-th update, so a short run's average is not dominated by the random init. The average lives in a
 * second nat_model of the same description, so it is evaluated like any model. */
#ifndef NAT_TRAIN_EMA_H
#define NAT_TRAIN_EMA_H

#include <stdint.h>

#include "nat/model.h"

typedef struct nat_ema {
    nat_model *model; /* owned: the averaged weights */
    float decay;
    int64_t updates;  /* t: updates made (restored from checkpoints) */
} nat_ema;

/* Builds the average as a copy of src's weights, on src's device. */
nat_status nat_ema_init(nat_ema *e, const nat_model *src, float decay);
/* One update from src's current weights (on their device). */
nat_status nat_ema_update(nat_ema *e, const nat_model *src);
/* NULL model is ignored (a zeroed struct may be freed). */
void nat_ema_free(nat_ema *e);

#endif
