/* train/tta.c — see train/train.h (section tta). */
#include "train/train.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* The shifts of a flip-shift view, (dy, dx): out(y, x) = in(y + dy, x + dx). */
static const int shifts[5][2] = {{0, 0}, {1, 0}, {-1, 0}, {0, 1}, {0, -1}};

nat_status nat_tta_parse(const char *name, nat_tta_kind *out)
{
    if (!strcmp(name, "none"))
        *out = NAT_TTA_NONE;
    else if (!strcmp(name, "flip"))
        *out = NAT_TTA_FLIP;
    else if (!strcmp(name, "flip-shift"))
        *out = NAT_TTA_FLIP_SHIFT;
    else
        return nat_error(NAT_ERR_INVALID_ARG, "test-time augmentation '%s': expected none, flip or flip-shift", name);
    return NAT_OK;
}

const char *nat_tta_name(nat_tta_kind k)
{
    return k == NAT_TTA_FLIP ? "flip" : k == NAT_TTA_FLIP_SHIFT ? "flip-shift" : "none";
}

int nat_tta_views(nat_tta_kind k) { return k == NAT_TTA_FLIP ? 2 : k == NAT_TTA_FLIP_SHIFT ? 10 : 1; }

void nat_train_tta_fill(const nat_config *c, int ch, float fill[NAT_TF_MAX_CHANNELS])
{
    nat_transform tf[4];
    int n;
    nat_train_eval_transforms(c, ch, false, 0, 0, tf, &n);
    const nat_transform *norm = &tf[n - 1]; /* the normalisation is always the last */
    for (int i = 0; i < NAT_TF_MAX_CHANNELS; i++)
        fill[i] = i < ch && norm->std[i] != 0.0f ? -norm->mean[i] / norm->std[i] : 0.0f;
}

void nat_tta_view(const nat_tta *t, int v, const float *src, int64_t n, int c, int h, int w, float *dst)
{
    const bool flip = t->kind != NAT_TTA_NONE && v % 2 == 1;
    const int dy = t->kind == NAT_TTA_FLIP_SHIFT ? shifts[v / 2][0] : 0;
    const int dx = t->kind == NAT_TTA_FLIP_SHIFT ? shifts[v / 2][1] : 0;
    for (int64_t i = 0; i < n * c; i++) {
        const float *s = src + (size_t)i * h * w;
        float *d = dst + (size_t)i * h * w;
        const float fill = t->fill[i % c < NAT_TF_MAX_CHANNELS ? i % c : 0];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                /* the flipped image, shifted: flipped(y', x') = src(y', w - 1 - x') */
                int sy = y + dy, sx = x + dx;
                bool in = sy >= 0 && sy < h && sx >= 0 && sx < w;
                d[(size_t)y * w + x] = in ? s[(size_t)sy * w + (flip ? w - 1 - sx : sx)] : fill;
            }
    }
}

void nat_tta_accumulate(const float *logits, int64_t n, int k, double *acc)
{
    for (int64_t i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * k;
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < k; j++)
            mx = l[j] > mx ? l[j] : mx;
        for (int j = 0; j < k; j++)
            sum += exp((double)l[j] - mx);
        for (int j = 0; j < k; j++)
            acc[(size_t)i * k + j] += exp((double)l[j] - mx) / sum;
    }
}

void nat_tta_finish(const double *acc, int64_t n, int k, int views, float *out)
{
    /* log of the mean probability: its softmax is the mean itself, so the metrics' cross-entropy is
     * that of the averaged prediction. Clamped so a probability that underflowed stays finite. */
    for (int64_t i = 0; i < n * k; i++) {
        double p = acc[i] / views;
        out[i] = (float)log(p > DBL_MIN ? p : DBL_MIN);
    }
}
