/* train/train_data.h — the datasets, transforms and loaders a config describes ([data] and [aug]).
 *
 * Training: [resize to img_size when the dataset's own size differs], the crop of aug.crop (random_crop
 * with aug.padding, random_resized_crop with (aug.scale_min, 1), or for folders with `none` a resize and
 * centre crop), horizontal flip, normalisation, random erasing; batches drop the last partial one and
 * mixup/cutmix (with label smoothing folded into soft targets) when either alpha is set.
 * Evaluation: folders resize to img_size / crop_pct and centre-crop img_size; fixed-size datasets are
 * resized only when img_size differs; then normalisation. */
#ifndef NAT_TRAIN_DATA_H
#define NAT_TRAIN_DATA_H

#include "nat/data.h"
#include "train/config.h"

/* Opens the config's dataset split, cut to data.train_limit / data.test_limit samples when set. */
nat_status nat_train_open_dataset(const nat_config *c, nat_split split, nat_dataset **out);
/* Sets data.img_size to the dataset's own size where it is 0 (folders got 224 from nat_config_resolve),
 * and checks that mean/std match the channels. */
nat_status nat_train_resolve_data(nat_config *c, const nat_dataset *ds);
/* The loader of a training (train = true) or evaluation pass. ds is borrowed and must outlive it.
 * Evaluation loaders run one epoch in dataset order; reposition them with nat_loader_set_state to
 * evaluate again. */
nat_status nat_train_loader_new(const nat_config *c, const nat_dataset *ds, bool train, nat_loader **out);

#endif
