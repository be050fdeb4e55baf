/* nat/cuda.h — CUDA devices and explicit tensor copies between devices.
 *
 * A model lives on one device, named by a nat_device value ({NAT_DEV_CUDA, index}); its contexts are
 * made for that device (nat_ctx_new) and its parameters with nat_tensor_new on it. There is no "current
 * device" in nat: every call that touches a GPU sets the device it needs and restores the caller's
 * before returning, so two models on two devices in one process do not interfere.
 *
 * Data moves between devices only when you ask: nat_tensor_to / nat_tensor_copy. Ops never copy behind
 * your back; mixing devices in one op is an error naming both devices.
 *
 * In a build without CUDA every function here exists: the queries say "no devices" and the rest return
 * NAT_ERR_UNSUPPORTED "nat was built without CUDA".
 */
#ifndef NAT_CUDA_H
#define NAT_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "nat/autograd.h"
#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this library was built with CUDA (1) or not (0). */
int nat_cuda_built(void);
/* Number of CUDA devices present (0 without a CUDA build, a driver or a device). */
int nat_cuda_device_count(void);
/* 1 when nat was built with CUDA and at least one device is present. */
int nat_cuda_available(void);
/* The device's marketing name (e.g. "NVIDIA H100 80GB HBM3") into buf (always NUL-terminated). */
nat_status nat_cuda_device_name(int index, char *buf, size_t cap);
/* TF32 tensor-core math for this device's GEMMs and convolutions (off by default: full f32). It is a
 * property of the device's handle bundle, so it applies to every model on that device. */
nat_status nat_cuda_set_tf32(int index, bool on);
bool nat_cuda_tf32(int index);
/* Waits until all work nat queued on the device has finished (for timing). */
nat_status nat_cuda_synchronize(int index);

/* A copy of src on `dev`, contiguous, same dtype and shape. With ctx (which must run on `dev`) the copy
 * is a step tensor owned by ctx; with ctx NULL it is a persistent tensor owned by the caller
 * (nat_tensor_free). The copy is not recorded on the tape: no gradient flows back through it, and
 * *dst does not require a gradient. src may be strided. */
nat_status nat_tensor_to(nat_ctx *ctx, const nat_tensor *src, nat_device dev, nat_tensor **dst);
/* dst = src, element for element in row-major order, across any two devices. Same dtype and shape; dst
 * must be contiguous; src may be strided (then it must be f32). Returns when dst may be read. */
nat_status nat_tensor_copy(nat_tensor *dst, const nat_tensor *src);
/* Moves a persistent tensor to `dev` in place, with its gradient when it has one: the handle stays
 * valid (modules and optimizers keep pointers to their parameters), its data becomes a contiguous copy
 * on dev, and its old storage is released. Other views of that storage keep the old data. Fails, and
 * changes nothing, for a step tensor or an unusable device. */
nat_status nat_tensor_move(nat_tensor *t, nat_device dev);

#ifdef __cplusplus
}
#endif
#endif
