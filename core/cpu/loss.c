/* core/cpu/loss.c — cross-entropy on the CPU, forward and backward: against integer labels (with label
 * smoothing) or soft targets (mixup/cutmix). Log-sum-exp subtracts the row max and is saved per row in
 * f64; per-row losses are added in row order in double, so results do not depend on the number of
 * threads. */
#include <math.h>

#include "core/cpu/kernels.h"

#define PAR_MIN NAT_CPU_PAR_MIN

/* log Σ_c exp(z_c), stable. */
static double row_logsumexp(const float *z, int64_t C)
{
    float mx = z[0];
    for (int64_t c = 1; c < C; c++)
        mx = z[c] > mx ? z[c] : mx;
    double s = 0;
    for (int64_t c = 0; c < C; c++)
        s += expf(z[c] - mx);
    return (double)mx + log(s);
}

/* lse as a float plus its rounding residual: z - hi is exact for logits near lse, so (z - hi) - lo keeps
 * full float precision where the probabilities are large. */
static void split(double lse, float *hi, float *lo)
{
    *hi = (float)lse;
    *lo = (float)(lse - (double)*hi);
}

/* Writes lse [N] and *loss = mean over rows of the row losses; labels (validated) or targets. */
nat_status nat_cpu_cross_entropy_forward(const nat_exec *ex, const float *logits, const int32_t *labels,
                                         const float *targets, int64_t N, int64_t C, float smoothing,
                                         double *lse_rows, float *loss)
{
    double *row_loss;
    NAT_TRY(nat_exec_scratch(ex, (size_t)N * sizeof *row_loss, (void **)&row_loss));
    if (labels) {
        const float *Z = logits;
        double *L = lse_rows;
        const double off = (double)smoothing / (double)C, on = 1.0 - (double)smoothing;
        /* loss_i = lse_i - Σ_c target_c z_c, target = (1 - eps)·onehot + eps/C */
#pragma omp parallel for if (N * C > PAR_MIN)
        for (int64_t i = 0; i < N; i++) {
            const float *z = Z + i * C;
            double lse = row_logsumexp(z, C);
            double zsum = 0;
            for (int64_t c = 0; c < C; c++)
                zsum += z[c];
            L[i] = lse;
            row_loss[i] = lse - on * z[labels[i]] - off * zsum;
        }
        double total = 0;
        for (int64_t i = 0; i < N; i++)
            total += row_loss[i];
        *loss = (float)(total / (double)N);
    } else {
        const float *Z = logits, *T = targets;
        double *L = lse_rows;
#pragma omp parallel for if (N * C > PAR_MIN)
        for (int64_t i = 0; i < N; i++) {
            const float *z = Z + i * C, *t = T + i * C;
            double lse = row_logsumexp(z, C);
            double ts = 0, tz = 0;
            for (int64_t c = 0; c < C; c++) {
                ts += t[c];
                tz += (double)t[c] * z[c];
            }
            L[i] = lse;
            row_loss[i] = lse * ts - tz;
        }
        double total = 0;
        for (int64_t i = 0; i < N; i++)
            total += row_loss[i];
        *loss = (float)(total / (double)N);
    }
    nat_exec_scratch_release(ex, row_loss);
    return NAT_OK;
}

/* gz += ..., gt += ... (either may be NULL; gt only with targets); g is the loss gradient. */
nat_status nat_cpu_cross_entropy_backward(const nat_exec *ex, const float *logits, const int32_t *labels,
                                          const float *targets, const double *lse_rows, const float *g, int64_t N,
                                          int64_t C, float smoothing, float *gz, float *gt)
{
    (void)ex;
    if (labels) {
        if (!gz)
            return NAT_OK;
        const float *Z = logits;
        const double *L = lse_rows;
        float eps = smoothing;
        float g0 = g[0] / (float)N;
        float off = eps / (float)C, on = 1.0f - eps + off;
        float *GZ = gz;
        /* d/dz_c = (softmax(z)_c - target_c) / N */
#pragma omp parallel for if (N * C > PAR_MIN)
        for (int64_t i = 0; i < N; i++) {
            const float *z = Z + i * C;
            float *gr = GZ + i * C;
            float hi, lo;
            split(L[i], &hi, &lo);
            for (int64_t c = 0; c < C; c++)
                gr[c] += g0 * (expf((z[c] - hi) - lo) - off);
            gr[labels[i]] -= g0 * (on - off);
        }
        return NAT_OK;
    }
    const float *Z = logits, *T = targets;
    const double *L = lse_rows;
    float g0 = g[0] / (float)N;
    float *GZ = gz, *GT = gt;
    /* loss_i = lse_i·Σt - Σ t⊙z:  d/dz = softmax(z)·Σt - t (Σt = 1 for proper targets, kept for exactness),
     * d/dt = lse - z = -log_softmax(z). */
#pragma omp parallel for if (N * C > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *z = Z + i * C, *t = T + i * C;
        float hi, lo;
        split(L[i], &hi, &lo);
        if (GZ) {
            double ts = 0;
            for (int64_t c = 0; c < C; c++)
                ts += t[c];
            const float tsum = (float)ts;
            float *gr = GZ + i * C;
            for (int64_t c = 0; c < C; c++)
                gr[c] += g0 * (expf((z[c] - hi) - lo) * tsum - t[c]);
        }
        if (GT) {
            float *gr = GT + i * C;
            for (int64_t c = 0; c < C; c++)
                gr[c] += g0 * ((hi - z[c]) + lo);
        }
    }
    return NAT_OK;
}
