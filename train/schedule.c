/* train/schedule.c — see train/train.h (section schedule). */
#include "train/train.h"

#include <math.h>

double nat_lr_at(const nat_lr_schedule *s, int64_t step)
{
    if (step < 0)
        step = 0;
    if (step < s->warmup_steps)
        return s->warmup_lr + (s->lr - s->warmup_lr) * (double)(step + 1) / (double)s->warmup_steps;
    int64_t span = s->total_steps - s->warmup_steps;
    if (span <= 0 || step >= s->total_steps)
        return span <= 0 && step < s->total_steps ? s->lr : s->min_lr;
    double p = (double)(step - s->warmup_steps) / (double)span;
    return s->min_lr + 0.5 * (s->lr - s->min_lr) * (1.0 + cos(3.14159265358979323846 * p));
}
