/* data/mixup.c — batch-level mixup and cutmix with soft targets, timm's Mixup in mode 'batch'
 * (timm/data/mixup.py): one lambda per batch, sample i mixed with sample n-1-i (x.flip(0)).
 *
 *   if U < prob:                       (else lam = 1: targets are smoothed one-hots, images unchanged)
 *       both alphas on: cutmix = U < switch_prob, lam ~ Beta(α, α) of the chosen mode
 *       only one on:    that mode, lam ~ Beta(α, α)
 *   cutmix: cut = int(H·sqrt(1-lam)) x int(W·sqrt(1-lam)), centre cy ~ U{0..H-1}, cx ~ U{0..W-1},
 *           box clipped to the image, pasted from the partner; with correct_lam, lam = 1 - box area / (H·W)
 *   mixup:  x_i = lam·x_i + (1-lam)·x_{n-1-i}
 *   target_i = lam·onehot(y_i) + (1-lam)·onehot(y_{n-1-i}), one-hots with on = 1-ε+ε/K, off = ε/K.
 * Beta(α, α) = G1 / (G1 + G2) with Gamma(α) draws (Marsaglia–Tsang; α < 1 through Gamma(α+1)·U^(1/α)).
 */
#include <math.h>
#include <string.h>

#include "nat/data.h"
#include "core/check.h"

static double u01_open(nat_rng *r) { return ((double)(nat_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double u01(nat_rng *r) { return (double)(nat_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

static double normal(nat_rng *r)
{
    return sqrt(-2.0 * log(u01_open(r))) * cos(6.283185307179586 * u01(r));
}

static double gamma_draw(nat_rng *r, double a)
{
    if (a < 1.0)
        return gamma_draw(r, a + 1.0) * pow(u01_open(r), 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = u01_open(r);
        if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

static double beta_draw(nat_rng *r, double a)
{
    double g1 = gamma_draw(r, a), g2 = gamma_draw(r, a);
    return g1 + g2 > 0.0 ? g1 / (g1 + g2) : (u01(r) < 0.5 ? 0.0 : 1.0);
}

nat_mixup nat_mixup_defaults(void)
{
    return (nat_mixup){.mixup_alpha = 0.0f, .cutmix_alpha = 0.0f, .prob = 1.0f, .switch_prob = 0.5f,
                       .label_smoothing = 0.1f, .correct_lam = true};
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

nat_status nat_mixup_apply(const nat_mixup *m, nat_rng *rng, float *x, int64_t n, int c, int h, int w,
                           const int32_t *labels, int classes, float *targets, nat_mixup_result *res)
{
    NAT_CHECK_ARG(m, "nat_mixup_apply", "m");
    NAT_CHECK_ARG(x, "nat_mixup_apply", "x");
    NAT_CHECK_ARG(labels, "nat_mixup_apply", "labels");
    NAT_CHECK_ARG(targets, "nat_mixup_apply", "targets");
    if (!(m->mixup_alpha >= 0.0f && m->cutmix_alpha >= 0.0f && m->prob >= 0.0f && m->prob <= 1.0f &&
          m->switch_prob >= 0.0f && m->switch_prob <= 1.0f && m->label_smoothing >= 0.0f && m->label_smoothing < 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG,
                         "mixup: alphas (%g, %g) must be >= 0, prob %g and switch_prob %g in [0, 1], label smoothing "
                         "%g in [0, 1)",
                         m->mixup_alpha, m->cutmix_alpha, m->prob, m->switch_prob, m->label_smoothing);
    if (n < 1 || c < 1 || h < 1 || w < 1 || classes < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "mixup: batch [%lld, %d, %d, %d] with %d classes", (long long)n, c, h, w,
                         classes);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return nat_error(NAT_ERR_INVALID_ARG, "mixup: label %d of sample %lld is not in [0, %d)", labels[i],
                             (long long)i, classes);

    double lam = 1.0;
    bool cutmix = false;
    if (nat_mixup_enabled(m) && u01(rng) < m->prob) {
        if (m->mixup_alpha > 0.0f && m->cutmix_alpha > 0.0f) {
            cutmix = u01(rng) < m->switch_prob;
            lam = beta_draw(rng, cutmix ? m->cutmix_alpha : m->mixup_alpha);
        } else if (m->mixup_alpha > 0.0f) {
            lam = beta_draw(rng, m->mixup_alpha);
        } else {
            cutmix = true;
            lam = beta_draw(rng, m->cutmix_alpha);
        }
    }
    nat_mixup_result r = {.lam = 1.0f, .cutmix = false, .box = {0, 0, 0, 0}};
    const size_t plane = (size_t)h * w, img = (size_t)c * plane;
    if (lam != 1.0 && cutmix) {
        double ratio = sqrt(1.0 - lam);
        int cut_h = (int)(h * ratio), cut_w = (int)(w * ratio);
        int cy = (int)nat_rng_below(rng, (uint32_t)h), cx = (int)nat_rng_below(rng, (uint32_t)w);
        int yl = clampi(cy - cut_h / 2, 0, h), yh = clampi(cy + cut_h / 2, 0, h);
        int xl = clampi(cx - cut_w / 2, 0, w), xh = clampi(cx + cut_w / 2, 0, w);
        if (m->correct_lam)
            lam = 1.0 - (double)(yh - yl) * (xh - xl) / ((double)h * w);
        /* pasting the partner's box into each of a pair is a swap of the two boxes */
        for (int64_t i = 0; i < n / 2; i++) {
            float *a = x + (size_t)i * img, *b = x + (size_t)(n - 1 - i) * img;
            for (int ch = 0; ch < c; ch++)
                for (int y = yl; y < yh; y++) {
                    float *ra = a + ch * plane + (size_t)y * w, *rb = b + ch * plane + (size_t)y * w;
                    for (int xx = xl; xx < xh; xx++) {
                        float t = ra[xx];
                        ra[xx] = rb[xx];
                        rb[xx] = t;
                    }
                }
        }
        r.cutmix = true;
        r.box[0] = yl;
        r.box[1] = yh;
        r.box[2] = xl;
        r.box[3] = xh;
    } else if (lam != 1.0) {
        const float l = (float)lam, l1 = (float)(1.0 - lam);
        for (int64_t i = 0; i < n / 2; i++) {
            float *a = x + (size_t)i * img, *b = x + (size_t)(n - 1 - i) * img;
            for (size_t k = 0; k < img; k++) {
                float va = a[k], vb = b[k];
                a[k] = va * l + vb * l1;
                b[k] = vb * l + va * l1;
            }
        }
        if (n % 2) { /* the middle sample is its own partner */
            float *a = x + (size_t)(n / 2) * img;
            for (size_t k = 0; k < img; k++)
                a[k] = a[k] * l + a[k] * l1;
        }
    }
    r.lam = (float)lam;

    const double eps = m->label_smoothing, off = eps / classes, on = 1.0 - eps + off;
    for (int64_t i = 0; i < n; i++) {
        float *t = targets + (size_t)i * classes;
        for (int k = 0; k < classes; k++)
            t[k] = (float)off;
        t[labels[i]] += (float)(lam * (on - off));
        t[labels[n - 1 - i]] += (float)((1.0 - lam) * (on - off));
    }
    if (res)
        *res = r;
    return NAT_OK;
}
