/* train/train_metrics.h — classification metrics accumulated batch by batch: top-1 and top-5 accuracy,
 * mean cross-entropy (no smoothing), per-class accuracy and the confusion matrix, and their report. */
#ifndef NAT_TRAIN_METRICS_H
#define NAT_TRAIN_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "nat/data.h"
#include "nat/status.h"

typedef struct nat_metrics {
    int classes;
    int64_t n;           /* samples seen */
    int64_t top1, top5;  /* correct within the best 1 / best min(5, classes) */
    double loss_sum;     /* Σ cross-entropy */
    int64_t *confusion;  /* [classes][classes]: row = true label, column = prediction; owned */
} nat_metrics;

nat_status nat_metrics_init(nat_metrics *m, int classes);
void nat_metrics_reset(nat_metrics *m);
void nat_metrics_free(nat_metrics *m);
/* Adds n samples: logits [n, classes] row-major, labels [n]. A sample is correct within k when fewer
 * than k other classes score >= its label's logit (ties count as wrong). Labels out of range and
 * non-finite logits are errors (NAT_ERR_INVALID_ARG; the evaluation is void, so callers stop). The
 * confusion matrix's prediction is the lowest-index class of the highest logit. */
nat_status nat_metrics_add(nat_metrics *m, const float *logits, const int32_t *labels, int64_t n);

double nat_metrics_top1(const nat_metrics *m); /* percent */
double nat_metrics_top5(const nat_metrics *m); /* percent */
double nat_metrics_loss(const nat_metrics *m);

/* Prints per-class accuracy (with the dataset's class names when ds is not NULL) and the confusion
 * matrix. */
void nat_metrics_print(const nat_metrics *m, const nat_dataset *ds, FILE *out);

#endif
