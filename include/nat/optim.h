/* nat/optim.h — optimizers (SGD with momentum/Nesterov, AdamW) over parameter groups, and gradient-norm
 * clipping.
 *
 * The update rules are PyTorch's, operation for operation, so a run can be compared with (or resumed
 * from) a PyTorch run:
 *  - SGD (torch.optim.SGD, dampening 0): d = g + wd·p (coupled decay); with momentum μ:
 *    buf = μ·buf + d (buf = d on the first step), d = nesterov ? d + μ·buf : buf; then p -= lr·d.
 *  - AdamW (torch.optim.AdamW, amsgrad off): t += 1; p *= 1 - lr·wd (decoupled decay);
 *    m = lerp(m, g, 1-β1); v = β2·v + (1-β2)·g²; p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 *    t is counted per parameter, as PyTorch's state['step'] is, so a parameter that had no gradient on
 *    some steps gets the same bias correction PyTorch would give it.
 *
 * Parameters are persistent f32 tensors with requires_grad, on the CPU or a CUDA device (borrowed: they
 * must outlive the optimizer); each is updated on its own device, with the same rules. A parameter is
 * skipped by a step while it has no gradient buffer at all (backward never
 * reached it). nat_optim_zero_grad zeroes the buffers and keeps them, as PyTorch's
 * zero_grad(set_to_none=False) does: from then on an unreached parameter counts as having a zero
 * gradient (it still decays and its momentum still moves).
 *
 * The optimizer owns its state tensors (moments, momentum buffers, per-parameter step counts). They are
 * made with nat_tensor_new when a group is added, so a step allocates nothing; checkpoints reach them
 * through nat_optim_state_count / nat_optim_state_get and restore them by writing into the tensors.
 */
#ifndef NAT_OPTIM_H
#define NAT_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nat_optim_kind { NAT_OPTIM_SGD = 0, NAT_OPTIM_ADAMW = 1 } nat_optim_kind;

/* Hyper-parameters fixed for the optimizer's life (the learning rate is passed to each step, and weight
 * decay is set per group). Fields that do not apply to `kind` are ignored. */
typedef struct nat_optim_config {
    nat_optim_kind kind;
    float momentum; /* SGD: in [0, 1); 0 = plain SGD, no buffer kept */
    bool nesterov;  /* SGD: needs momentum > 0 */
    float beta1;    /* AdamW: in [0, 1); PyTorch default 0.9 */
    float beta2;    /* AdamW: in [0, 1); PyTorch default 0.999 */
    float eps;      /* AdamW: >= 0; PyTorch default 1e-8 */
} nat_optim_config;

/* Ready configs. */
nat_optim_config nat_optim_sgd_config(float momentum, bool nesterov);
nat_optim_config nat_optim_adamw_config(float beta1, float beta2, float eps);

typedef struct nat_optim nat_optim;

/* New optimizer with no parameters. Fails with NAT_ERR_INVALID_ARG on hyper-parameters out of range.
 * Owned by the caller: free with nat_optim_free. */
nat_status nat_optim_new(nat_optim **out, const nat_optim_config *cfg);
/* Frees the optimizer and its state tensors (not the parameters). NULL is ignored. */
void nat_optim_free(nat_optim *opt);

nat_optim_kind nat_optim_get_kind(const nat_optim *opt);

/* Adds a group of n parameters sharing one weight decay (>= 0; e.g. 0 for biases, norms and rpb) and
 * makes their state tensors. params[0..n) are borrowed; each must be a persistent, contiguous f32
 * tensor (CPU or CUDA) with requires_grad, and appear in no other group. On failure the optimizer is unchanged. */
nat_status nat_optim_add_group(nat_optim *opt, nat_tensor **params, int n, float weight_decay);
int nat_optim_group_count(const nat_optim *opt);

/* One update of every parameter that has a gradient, with learning rate lr (finite, >= 0); adds one to
 * the step count. Allocates nothing. */
nat_status nat_optim_step(nat_optim *opt, float lr);
/* Zeroes the gradient of every parameter (keeping the buffers). */
void nat_optim_zero_grad(nat_optim *opt);

/* Number of nat_optim_step calls made (or the value last set, for a resumed run). */
int64_t nat_optim_step_count(const nat_optim *opt);
/* Sets the step count (>= 0) when resuming from a checkpoint. Per-parameter AdamW step counts are state
 * tensors and are restored with the others. */
nat_status nat_optim_set_step_count(nat_optim *opt, int64_t steps);

/* State tensors, for checkpoints. Entries are listed group by group, parameter by parameter, and named
 * "group<g>.param<i>.<what>" with i the parameter's index inside its group and <what> one of
 * "momentum_buffer" (SGD with momentum), "step", "exp_avg", "exp_avg_sq" (AdamW). "step" is an f32 [1]
 * CPU tensor like PyTorch's state['step'] (exact up to 2^24 steps); the others have the parameter's shape
 * and device.
 * The name and tensor are owned by the optimizer; write into the tensor to restore it. */
int nat_optim_state_count(const nat_optim *opt);
nat_status nat_optim_state_get(const nat_optim *opt, int i, const char **name, nat_tensor **tensor);

/* Clips gradients as PyTorch's clip_grad_norm_ (L2): the norm is taken over the gradients of all
 * params[0..n) together (params without a gradient are skipped); when it exceeds max_norm (> 0), every
 * gradient is scaled by max_norm / (norm + 1e-6). The norm before clipping goes to *total_norm_out (may
 * be NULL). A non-finite norm (inf/NaN in some gradient) is reported and the gradients are left as they
 * are: the caller should skip that step. */
nat_status nat_clip_grad_norm(nat_tensor **params, int n, float max_norm, float *total_norm_out);

/* Exponential moving average of weights: avg[i] = decay·avg[i] + (1 - decay)·params[i] for i < n, each
 * pair contiguous f32 of one shape on one device (updated there). Both arrays are borrowed. */
nat_status nat_params_ema_update(nat_tensor *const *avg, nat_tensor *const *params, int n, float decay);

/* ---- dynamic loss scaling (core/loss_scale.c), for f16 autocast ----
 *
 * f16's smallest subnormal is 2^-24, so small gradients flush to zero in f16 GEMMs. The loss is
 * multiplied by `scale` before backward (every gradient scales with it), the gradients are divided by
 * it again before clipping and the update, and the scale adapts (torch.cuda.amp.GradScaler's rules):
 *   - a step with any non-finite gradient is skipped and the scale halves;
 *   - after growth_interval consecutive clean steps the scale doubles.
 * Use per optimizer step:
 *     nat_scale(ctx, loss, nat_loss_scaler_scale(&ls), &loss); nat_backward(ctx, loss);   (each micro-batch)
 *     bool finite; nat_loss_scaler_unscale(&ls, params, n, &finite);
 *     if (nat_loss_scaler_update(&ls, finite)) { clip; nat_optim_step(...); }
 *     nat_optim_zero_grad(...);
 * A plain struct: copy it, and save its fields in checkpoints to resume exactly. */
typedef struct nat_loss_scaler {
    float scale;         /* current loss scale (initially 2^16) */
    int growth_interval; /* clean steps before the scale doubles (2000) */
    int good_steps;      /* clean steps since the last change */
    int64_t skipped;     /* steps skipped for non-finite gradients */
} nat_loss_scaler;

/* init_scale <= 0 or growth_interval <= 0 take the defaults (65536, 2000). */
void nat_loss_scaler_init(nat_loss_scaler *s, float init_scale, int growth_interval);
float nat_loss_scaler_scale(const nat_loss_scaler *s);
/* Divides every gradient of params[0..n) (those that have one; any device) by the scale, and sets
 * *finite to whether all of them are finite afterwards. */
nat_status nat_loss_scaler_unscale(const nat_loss_scaler *s, nat_tensor *const *params, int n, bool *finite);
/* Records the step's outcome: returns true when the step should be taken (finite), and adapts the
 * scale (halve on a non-finite step, double after growth_interval clean steps). */
bool nat_loss_scaler_update(nat_loss_scaler *s, bool finite);

#ifdef __cplusplus
}
#endif
#endif
