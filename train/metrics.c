/* train/metrics.c — see train/train.h (section metrics). The loss is log-sum-exp minus the label's logit,
 * in double. A sample counts as correct within k when fewer than k other classes score higher than or
 * the same as its label: a tie counts as wrong, so a dead (zeroed) head scores 0%, not 100%. A
 * non-finite logit is an error: NaN compares false with everything, so it would otherwise count as
 * correct and turn the loss into nan unnoticed. */
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

nat_status nat_metrics_init(nat_metrics *m, int classes)
{
    memset(m, 0, sizeof *m);
    m->classes = classes;
    m->confusion = calloc((size_t)classes * (size_t)classes, sizeof *m->confusion);
    if (!m->confusion)
        return nat_error(NAT_ERR_OOM, "metrics: out of memory for %d classes", classes);
    return NAT_OK;
}

void nat_metrics_reset(nat_metrics *m)
{
    m->n = m->top1 = m->top5 = 0;
    m->loss_sum = 0;
    memset(m->confusion, 0, (size_t)m->classes * (size_t)m->classes * sizeof *m->confusion);
}

void nat_metrics_free(nat_metrics *m)
{
    free(m->confusion);
    m->confusion = NULL;
}

nat_status nat_metrics_add(nat_metrics *m, const float *logits, const int32_t *labels, int64_t n)
{
    const int C = m->classes, k5 = C < 5 ? C : 5;
    for (int64_t i = 0; i < n; i++) {
        const float *l = logits + i * C;
        int y = labels[i];
        if (y < 0 || y >= C)
            return nat_error(NAT_ERR_INVALID_ARG, "metrics: label %d out of range for %d classes", y, C);
        int best = 0, above = 0;
        double mx = l[0];
        for (int c = 0; c < C; c++) {
            if (!isfinite(l[c]))
                return nat_error(NAT_ERR_INVALID_ARG,
                                 "metrics: sample %lld of the batch has a non-finite logit (%g) for class %d (diverged or "
                                 "corrupt weights?)",
                                 (long long)i, (double)l[c], c);
            if (l[c] > l[best])
                best = c;
            if (l[c] > mx)
                mx = l[c];
            if (c != y && l[c] >= l[y])
                above++;
        }
        double se = 0;
        for (int c = 0; c < C; c++)
            se += exp((double)l[c] - mx);
        m->loss_sum += mx + log(se) - (double)l[y];
        m->top1 += above == 0;
        m->top5 += above < k5;
        m->confusion[(size_t)y * C + best]++;
        m->n++;
    }
    return NAT_OK;
}

double nat_metrics_top1(const nat_metrics *m) { return m->n ? 100.0 * (double)m->top1 / (double)m->n : 0.0; }
double nat_metrics_top5(const nat_metrics *m) { return m->n ? 100.0 * (double)m->top5 / (double)m->n : 0.0; }
double nat_metrics_loss(const nat_metrics *m) { return m->n ? m->loss_sum / (double)m->n : 0.0; }

void nat_metrics_print(const nat_metrics *m, const nat_dataset *ds, FILE *out)
{
    const int C = m->classes;
    fprintf(out, "per-class accuracy:\n");
    for (int c = 0; c < C; c++) {
        int64_t total = 0;
        for (int p = 0; p < C; p++)
            total += m->confusion[(size_t)c * C + p];
        const char *name = ds ? nat_dataset_class_name(ds, c) : "";
        if (total)
            fprintf(out, "  %4d %-24.24s %7.2f%%  (%lld/%lld)\n", c, name,
                    100.0 * (double)m->confusion[(size_t)c * C + c] / (double)total,
                    (long long)m->confusion[(size_t)c * C + c], (long long)total);
        else
            fprintf(out, "  %4d %-24.24s       -   (no samples)\n", c, name);
    }
    if (C > 100) {
        fprintf(out, "confusion matrix: %d classes, too many to print\n", C);
        return;
    }
    int64_t mx = 1;
    for (size_t i = 0; i < (size_t)C * C; i++)
        if (m->confusion[i] > mx)
            mx = m->confusion[i];
    int w = 1;
    for (int64_t v = mx; v >= 10; v /= 10)
        w++;
    if (w < 3)
        w = 3;
    fprintf(out, "confusion matrix (rows: true class, columns: predicted):\n%6s", "");
    for (int p = 0; p < C; p++)
        fprintf(out, " %*d", w, p);
    fputc('\n', out);
    for (int c = 0; c < C; c++) {
        fprintf(out, "  %4d", c);
        for (int p = 0; p < C; p++)
            fprintf(out, " %*lld", w, (long long)m->confusion[(size_t)c * C + p]);
        fputc('\n', out);
    }
}
