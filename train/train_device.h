/* train/train_device.h — the device nat-train and nat-eval run on (train.device) and the explicit copies
 * between the loader's host batches and that device.
 *
 * A CUDA device is checked once, before anything is built: a config asking for cuda on a machine (or a
 * build) without one is an error naming the key, never a silent run on the CPU. */
#ifndef NAT_TRAIN_DEVICE_H
#define NAT_TRAIN_DEVICE_H

#include "nat/autograd.h"
#include "train/config.h"

/* train.device of c as a usable device. NAT_ERR_UNSUPPORTED when it names CUDA and nat was built
 * without CUDA, no CUDA device is available, or the index does not exist; the message names the key,
 * its value and the config file. */
nat_status nat_train_device(const nat_config *c, nat_device *out);

/* A step tensor of ctx, on ctx's device, holding host[0 .. numel(shape)) (copied; host stays the
 * caller's). On the CPU a plain copy into step memory, so the CPU path allocates nothing new. */
nat_status nat_train_upload(nat_ctx *ctx, const float *host, int ndim, const int64_t *shape, nat_tensor **out);
/* host[0..n) = t (contiguous f32 with n elements, on any device); waits for the device. */
nat_status nat_train_download(const nat_tensor *t, float *host, int64_t n);

#endif
