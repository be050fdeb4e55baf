/* train/train_schedule.h — the learning-rate schedule of nat-train: per-step linear warm-up from
 * warmup_lr to lr, then cosine decay to min_lr at the last step (timm's CosineLRScheduler with
 * t_in_epochs off, warm-up counted in optimizer steps). */
#ifndef NAT_TRAIN_SCHEDULE_H
#define NAT_TRAIN_SCHEDULE_H

#include <stdint.h>

typedef struct nat_lr_schedule {
    double lr, min_lr, warmup_lr;
    int64_t warmup_steps; /* >= 0 */
    int64_t total_steps;  /* >= 1 */
} nat_lr_schedule;

/* The learning rate of optimizer step `step` (0-based: the first update uses step 0). Warm-up steps
 * t < W get warmup_lr + (lr - warmup_lr)·(t+1)/W, so the last warm-up step reaches lr; then
 * min_lr + (lr - min_lr)·(1 + cos(π·(t-W)/(T-W)))/2. Steps past the end get min_lr. */
double nat_lr_at(const nat_lr_schedule *s, int64_t step);

#endif
