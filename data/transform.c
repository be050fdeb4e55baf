/* data/transform.c — per-sample transforms on float CHW images (see include/nat/data.h).
 *
 * Semantics follow torchvision (Resize, CenterCrop, RandomResizedCrop, RandomCrop, RandomHorizontalFlip,
 * Normalize) and timm (RandomErasing, 'const' mode), with nat_rng in place of torch's and Python's
 * generators. Python's round() rounds halves to even: nearbyint() does the same in the default rounding
 * mode, so crop offsets and box sizes match torchvision's integer arithmetic.
 *
 * Bilinear resampling is PIL's (what torchvision uses on PIL images, and on tensors with antialias=True):
 * a separable triangle filter whose support widens by the scale factor when shrinking, so a downscale
 * averages every source pixel instead of aliasing; when enlarging it is plain bilinear with half-pixel
 * centres. Weights are normalised per output pixel, so a constant image stays constant. Written here
 * because PIL's exact taps (renormalised at the borders) are simple to reproduce in a few lines.
 *
 * Bicubic resampling (timm's evaluation of NAT/DiNAT: PIL's BICUBIC, Keys' cubic with a = -0.5, i.e.
 * Catmull-Rom, support widened when shrinking) is stb_image_resize's (Debian's libstb ships v0.97, the
 * stbir_resize_float_generic API; its Catmull-Rom filter is the same cubic and it widens the support by
 * the scale factor too). Each CHW plane is one single-channel image to stbir; a crop box is passed as a
 * sub-image (pointer + row stride), so the box is cropped before it is resized, as torchvision's
 * resized_crop does. stbir clamps at the borders where PIL renormalises the truncated filter: only
 * the outer ~2 output pixels can differ, which a centre crop removes. Measured against PIL on 50
 * images: docs/pretrained.md.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_resize.h> /* stbir_resize_float_generic (linked from Debian's libstb) */

#include "nat/data.h"
#include "core/check.h"

static double u01(nat_rng *r) { return (double)(nat_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static double uniform(nat_rng *r, double lo, double hi) { return lo + (hi - lo) * u01(r); }
static int pyround(double x) { return (int)nearbyint(x); }

/* ---- constructors with the torchvision/timm defaults ---- */

nat_transform nat_tf_resize(int size) { return (nat_transform){.kind = NAT_TF_RESIZE, .size = size}; }

nat_transform nat_tf_center_crop(int height, int width)
{
    return (nat_transform){.kind = NAT_TF_CENTER_CROP, .height = height, .width = width};
}

nat_transform nat_tf_random_resized_crop(int height, int width)
{
    return (nat_transform){.kind = NAT_TF_RANDOM_RESIZED_CROP, .height = height, .width = width,
                           .scale = {0.08f, 1.0f}, .ratio = {3.0f / 4.0f, 4.0f / 3.0f}};
}

nat_transform nat_tf_random_crop(int height, int width, int padding)
{
    return (nat_transform){.kind = NAT_TF_RANDOM_CROP, .height = height, .width = width, .padding = padding};
}

nat_transform nat_tf_hflip(float p) { return (nat_transform){.kind = NAT_TF_HFLIP, .p = p}; }

nat_transform nat_tf_normalize(int channels, const float *mean, const float *std)
{
    nat_transform t = {.kind = NAT_TF_NORMALIZE, .channels = channels};
    for (int c = 0; c < channels && c < NAT_TF_MAX_CHANNELS; c++) {
        t.mean[c] = mean[c];
        t.std[c] = std[c];
    }
    return t;
}

nat_transform nat_tf_random_erasing(float p)
{
    return (nat_transform){.kind = NAT_TF_RANDOM_ERASING, .p = p, .scale = {0.02f, 1.0f / 3.0f},
                           .ratio = {0.3f, 1.0f / 0.3f}, .value = 0.0f};
}

int nat_tf_eval_preset(nat_transform out[3], int img_size, float crop_pct, nat_interp interp, int channels,
                       const float *mean, const float *std)
{
    /* timm: scale_size = math.floor(img_size / crop_pct); the epsilon keeps 224 / 0.875 at 256 whatever
     * the float rounding of crop_pct. */
    double scale = crop_pct > 0.0f ? (double)img_size / (double)crop_pct : 0.0;
    out[0] = nat_tf_resize((int)floor(scale + 1e-6));
    out[0].interp = interp;
    out[1] = nat_tf_center_crop(img_size, img_size);
    out[2] = nat_tf_normalize(channels, mean, std);
    return 3;
}

static const char *kind_name(nat_transform_kind k)
{
    switch (k) {
    case NAT_TF_RESIZE: return "resize";
    case NAT_TF_CENTER_CROP: return "center crop";
    case NAT_TF_RANDOM_RESIZED_CROP: return "random resized crop";
    case NAT_TF_RANDOM_CROP: return "random crop";
    case NAT_TF_HFLIP: return "horizontal flip";
    case NAT_TF_NORMALIZE: return "normalize";
    case NAT_TF_RANDOM_ERASING: return "random erasing";
    }
    return "?";
}

static nat_status check_prob(const char *n, float p)
{
    if (!(p >= 0.0f && p <= 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "transform %s: probability %g is not in [0, 1]", n, p);
    return NAT_OK;
}

static nat_status check_ranges(const char *n, const float scale[2], const float ratio[2])
{
    if (!(scale[0] > 0.0f && scale[0] <= scale[1] && scale[1] <= 1.0f))
        return nat_error(NAT_ERR_INVALID_ARG, "transform %s: scale (%g, %g) must satisfy 0 < lo <= hi <= 1", n,
                         scale[0], scale[1]);
    if (!(ratio[0] > 0.0f && ratio[0] <= ratio[1]))
        return nat_error(NAT_ERR_INVALID_ARG, "transform %s: ratio (%g, %g) must satisfy 0 < lo <= hi", n, ratio[0],
                         ratio[1]);
    return NAT_OK;
}

static nat_status check_size(const char *n, int h, int w)
{
    if (h < 1 || w < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "transform %s: size %dx%d must be positive", n, h, w);
    return NAT_OK;
}

static nat_status check_interp(const char *n, int interp)
{
    if (interp != NAT_INTERP_BILINEAR && interp != NAT_INTERP_BICUBIC)
        return nat_error(NAT_ERR_INVALID_ARG, "transform %s: interpolation %d is not bilinear (0) or bicubic (1)", n,
                         interp);
    return NAT_OK;
}

nat_status nat_transform_check(const nat_transform *t)
{
    NAT_CHECK_ARG(t, "nat_transform_check", "t");
    const char *n = kind_name(t->kind);
    switch (t->kind) {
    case NAT_TF_RESIZE:
        if (t->size < 1)
            return nat_error(NAT_ERR_INVALID_ARG, "transform %s: size %d must be >= 1", n, t->size);
        return check_interp(n, t->interp);
    case NAT_TF_CENTER_CROP:
        return check_size(n, t->height, t->width);
    case NAT_TF_RANDOM_RESIZED_CROP:
        NAT_TRY(check_size(n, t->height, t->width));
        NAT_TRY(check_interp(n, t->interp));
        return check_ranges(n, t->scale, t->ratio);
    case NAT_TF_RANDOM_CROP:
        if (t->padding < 0)
            return nat_error(NAT_ERR_INVALID_ARG, "transform %s: padding %d is negative", n, t->padding);
        return check_size(n, t->height, t->width);
    case NAT_TF_HFLIP:
        return check_prob(n, t->p);
    case NAT_TF_RANDOM_ERASING:
        NAT_TRY(check_prob(n, t->p));
        return check_ranges(n, t->scale, t->ratio);
    case NAT_TF_NORMALIZE:
        if (t->channels < 1 || t->channels > NAT_TF_MAX_CHANNELS)
            return nat_error(NAT_ERR_INVALID_ARG, "transform %s: %d channels (1 to %d)", n, t->channels,
                             NAT_TF_MAX_CHANNELS);
        for (int c = 0; c < t->channels; c++)
            if (!(t->std[c] > 0.0f))
                return nat_error(NAT_ERR_INVALID_ARG, "transform %s: std[%d] = %g must be > 0", n, c, t->std[c]);
        return NAT_OK;
    }
    return nat_error(NAT_ERR_INVALID_ARG, "transform: unknown kind %d", (int)t->kind);
}

static void resize_size(int size, int h, int w, int *oh, int *ow)
{
    /* torchvision: the shorter side becomes size, the longer int(size * long / short) */
    if (h <= w) {
        *oh = size;
        *ow = (int)((double)size * w / h);
    } else {
        *ow = size;
        *oh = (int)((double)size * h / w);
    }
}

nat_status nat_transforms_shape(const nat_transform *tfs, int n, int c, int h, int w, int *oh, int *ow)
{
    if (n > 0)
        NAT_CHECK_ARG(tfs, "nat_transforms_shape", "tfs");
    NAT_CHECK_ARG(oh, "nat_transforms_shape", "oh");
    NAT_CHECK_ARG(ow, "nat_transforms_shape", "ow");
    for (int i = 0; i < n; i++) {
        const nat_transform *t = &tfs[i];
        NAT_TRY(nat_transform_check(t));
        switch (t->kind) {
        case NAT_TF_RESIZE:
            if (h > 0)
                resize_size(t->size, h, w, &h, &w);
            break;
        case NAT_TF_RANDOM_CROP:
            if (h > 0 && (h + 2 * t->padding < t->height || w + 2 * t->padding < t->width))
                return nat_error(NAT_ERR_SHAPE,
                                 "transform %d (random crop %dx%d, padding %d): image %dx%d is too small",
                                 i, t->height, t->width, t->padding, h, w);
            /* fall through */
        case NAT_TF_CENTER_CROP:
        case NAT_TF_RANDOM_RESIZED_CROP:
            h = t->height;
            w = t->width;
            break;
        case NAT_TF_NORMALIZE:
            if (t->channels != c)
                return nat_error(NAT_ERR_SHAPE, "transform %d (normalize): %d mean/std values for %d-channel images", i,
                                 t->channels, c);
            break;
        case NAT_TF_HFLIP:
        case NAT_TF_RANDOM_ERASING:
            break;
        }
    }
    *oh = h;
    *ow = w;
    return NAT_OK;
}

/* ---- resampling (PIL's bilinear: triangle filter, support scaled when shrinking) ---- */

typedef struct taps {
    int *lo, *n;  /* first source index and tap count per output index */
    float *w;     /* [out, k] */
    int k;
} taps;

static void taps_free(taps *t)
{
    free(t->lo);
    free(t->n);
    free(t->w);
}

static nat_status make_taps(int in, int out, taps *t)
{
    double scale = (double)in / out, fscale = scale > 1.0 ? scale : 1.0, support = fscale;
    t->k = (int)ceil(support) * 2 + 1;
    t->lo = malloc((size_t)out * sizeof *t->lo);
    t->n = malloc((size_t)out * sizeof *t->n);
    t->w = malloc((size_t)out * (size_t)t->k * sizeof *t->w);
    if (!t->lo || !t->n || !t->w) {
        taps_free(t);
        return nat_error(NAT_ERR_OOM, "resize: no memory for %d x %d filter taps", out, t->k);
    }
    for (int o = 0; o < out; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        int n = hi - lo;
        if (n > t->k)
            n = t->k;
        double sum = 0.0;
        float *dst = t->w + (size_t)o * t->k;
        for (int j = 0; j < n; j++) {
            double x = fabs((j + lo - center + 0.5) / fscale);
            dst[j] = (float)(x < 1.0 ? 1.0 - x : 0.0);
            sum += dst[j];
        }
        for (int j = 0; j < n && sum != 0.0; j++)
            dst[j] = (float)(dst[j] / sum);
        t->lo[o] = lo;
        t->n[o] = n;
    }
    return NAT_OK;
}

/* Resamples the box rows [y0, y0+bh) x columns [x0, x0+bw) of img to oh x ow, in place; tmp holds the
 * horizontally filtered rows in between. */
static nat_status resample_box(nat_image *img, nat_image *tmp, int y0, int x0, int bh, int bw, int oh, int ow)
{
    taps tx = {0}, ty = {0};
    nat_status s = make_taps(bw, ow, &tx);
    if (s == NAT_OK)
        s = make_taps(bh, oh, &ty);
    const int C = img->c, W = img->w;
    if (s == NAT_OK)
        s = nat_image_reserve(tmp, C, bh, ow);
    if (s == NAT_OK) {
        for (int c = 0; c < C; c++)
            for (int y = 0; y < bh; y++) {
                const float *src = img->data + ((size_t)c * img->h + y0 + y) * W + x0;
                float *dst = tmp->data + ((size_t)c * bh + y) * ow;
                for (int o = 0; o < ow; o++) {
                    const float *wv = tx.w + (size_t)o * tx.k, *sp = src + tx.lo[o];
                    float acc = 0.0f;
                    for (int j = 0; j < tx.n[o]; j++)
                        acc += wv[j] * sp[j];
                    dst[o] = acc;
                }
            }
        s = nat_image_reserve(img, C, oh, ow); /* the source is no longer needed */
    }
    if (s == NAT_OK) {
        for (int c = 0; c < C; c++)
            for (int o = 0; o < oh; o++) {
                float *dst = img->data + ((size_t)c * oh + o) * ow;
                const float *wv = ty.w + (size_t)o * ty.k;
                const float *sp = tmp->data + ((size_t)c * bh + ty.lo[o]) * ow;
                for (int x = 0; x < ow; x++)
                    dst[x] = 0.0f;
                for (int j = 0; j < ty.n[o]; j++) {
                    const float wj = wv[j], *row = sp + (size_t)j * ow;
                    for (int x = 0; x < ow; x++)
                        dst[x] += wj * row[x];
                }
            }
    }
    taps_free(&tx);
    taps_free(&ty);
    return s;
}

/* One pass of stb_image_resize's Catmull-Rom filter over a single-channel plane (strides in floats),
 * clipped to [0, 1] when `clip`. */
static nat_status cubic_pass(const float *src, int w, int h, int stride, float *dst, int ow, int oh, bool clip)
{
    if (!stbir_resize_float_generic(src, w, h, stride * (int)sizeof(float), dst, ow, oh, ow * (int)sizeof(float), 1,
                                    STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_CATMULLROM,
                                    STBIR_COLORSPACE_LINEAR, NULL))
        return nat_error(NAT_ERR_OOM, "bicubic resize %dx%d -> %dx%d: stb_image_resize failed (out of memory)", w, h, ow,
                         oh);
    if (clip)
        for (size_t k = 0; k < (size_t)oh * ow; k++)
            dst[k] = dst[k] < 0.0f ? 0.0f : dst[k] > 1.0f ? 1.0f : dst[k];
    return NAT_OK;
}

/* The box of img resized to oh x ow with stb_image_resize's Catmull-Rom filter, plane by plane, into
 * tmp, then swapped into img. PIL resizes bytes in two passes, horizontal then vertical, and clips the
 * cubic's overshoot to 0..255 after each; so when the box's values lie in [0, 1] (bytes / 255), this
 * runs the same two passes and clips after each (clipping only at the end differs by up to 8/255 next
 * to sharp edges of upscaled images). Other data (already normalised) keeps its overshoot. A pass along
 * an axis whose size does not change is the identity (the cubic is 1 at 0 and 0 at +-1), so it is
 * skipped. */
static nat_status resample_box_cubic(nat_image *img, nat_image *tmp, int y0, int x0, int bh, int bw, int oh, int ow)
{
    NAT_TRY(nat_image_reserve(tmp, img->c, oh, ow));
    float *mid = bw != ow && bh != oh ? malloc((size_t)ow * bh * sizeof *mid) : NULL;
    if (bw != ow && bh != oh && !mid)
        return nat_error(NAT_ERR_OOM, "bicubic resize: no memory for a %dx%d plane", ow, bh);
    const int W = img->w;
    nat_status s = NAT_OK;
    for (int c = 0; c < img->c && s == NAT_OK; c++) {
        const float *src = img->data + ((size_t)c * img->h + y0) * W + x0;
        float *dst = tmp->data + (size_t)c * oh * ow;
        float lo = src[0], hi = src[0];
        for (int y = 0; y < bh; y++)
            for (int x = 0; x < bw; x++) {
                float v = src[(size_t)y * W + x];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        const bool clip = lo >= 0.0f && hi <= 1.0f;
        if (bw != ow && bh != oh) {
            s = cubic_pass(src, bw, bh, W, mid, ow, bh, clip);
            if (s == NAT_OK)
                s = cubic_pass(mid, ow, bh, ow, dst, ow, oh, clip);
        } else if (bw != ow || bh != oh) {
            s = cubic_pass(src, bw, bh, W, dst, ow, oh, clip);
        } else {
            for (int y = 0; y < oh; y++)
                memcpy(dst + (size_t)y * ow, src + (size_t)y * W, (size_t)ow * sizeof *dst);
        }
    }
    free(mid);
    if (s != NAT_OK)
        return s;
    nat_image t = *img;
    *img = *tmp;
    *tmp = t;
    return NAT_OK;
}

static nat_status resample(const nat_transform *t, nat_image *img, nat_image *tmp, int y0, int x0, int bh, int bw,
                           int oh, int ow)
{
    if (t->interp == NAT_INTERP_BICUBIC)
        return resample_box_cubic(img, tmp, y0, x0, bh, bw, oh, ow);
    return resample_box(img, tmp, y0, x0, bh, bw, oh, ow);
}

/* out(y, x) = img(y + oy, x + ox), 0 outside the image; result oh x ow, swapped into img. */
static nat_status crop_pad(nat_image *img, nat_image *tmp, int oy, int ox, int oh, int ow)
{
    NAT_TRY(nat_image_reserve(tmp, img->c, oh, ow));
    for (int c = 0; c < img->c; c++)
        for (int y = 0; y < oh; y++) {
            float *dst = tmp->data + ((size_t)c * oh + y) * ow;
            int sy = y + oy;
            if (sy < 0 || sy >= img->h) {
                memset(dst, 0, (size_t)ow * sizeof *dst);
                continue;
            }
            const float *src = img->data + ((size_t)c * img->h + sy) * img->w;
            for (int x = 0; x < ow; x++) {
                int sx = x + ox;
                dst[x] = sx >= 0 && sx < img->w ? src[sx] : 0.0f;
            }
        }
    nat_image t = *img;
    *img = *tmp;
    *tmp = t;
    return NAT_OK;
}

void nat_tf_rrc_box(nat_rng *rng, int h, int w, const float scale[2], const float ratio[2], int box[4])
{
    double area = (double)h * w, lr0 = log(ratio[0]), lr1 = log(ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * uniform(rng, scale[0], scale[1]);
        double aspect = exp(uniform(rng, lr0, lr1));
        int cw = pyround(sqrt(target * aspect)), ch = pyround(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            box[0] = (int)nat_rng_below(rng, (uint32_t)(h - ch + 1));
            box[1] = (int)nat_rng_below(rng, (uint32_t)(w - cw + 1));
            box[2] = ch;
            box[3] = cw;
            return;
        }
    }
    /* fallback: the central crop, its aspect clamped into ratio */
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < ratio[0])
        ch = pyround(cw / (double)ratio[0]);
    else if (in_ratio > ratio[1])
        cw = pyround(ch * (double)ratio[1]);
    box[0] = (h - ch) / 2;
    box[1] = (w - cw) / 2;
    box[2] = ch;
    box[3] = cw;
}

static void erase(const nat_transform *t, nat_image *img, nat_rng *rng)
{
    /* timm RandomErasing with count 1: `if random() > p: skip`, then up to 10 tries of a box whose area
     * is U(scale) of the image and whose log aspect (h / w) is uniform in log(ratio). */
    if (u01(rng) > t->p)
        return;
    const int H = img->h, W = img->w;
    double area = (double)H * W, lr0 = log(t->ratio[0]), lr1 = log(t->ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = uniform(rng, t->scale[0], t->scale[1]) * area;
        double aspect = exp(uniform(rng, lr0, lr1));
        int eh = pyround(sqrt(target * aspect)), ew = pyround(sqrt(target / aspect));
        if (ew < W && eh < H) {
            int top = (int)nat_rng_below(rng, (uint32_t)(H - eh + 1));
            int left = (int)nat_rng_below(rng, (uint32_t)(W - ew + 1));
            for (int c = 0; c < img->c; c++)
                for (int y = top; y < top + eh; y++) {
                    float *row = img->data + ((size_t)c * H + y) * W;
                    for (int x = left; x < left + ew; x++)
                        row[x] = t->value;
                }
            return;
        }
    }
}

static nat_status apply_one(const nat_transform *t, nat_image *img, nat_image *tmp, nat_rng *rng)
{
    const int H = img->h, W = img->w;
    switch (t->kind) {
    case NAT_TF_RESIZE: {
        int oh, ow;
        resize_size(t->size, H, W, &oh, &ow);
        if (oh == H && ow == W)
            return NAT_OK;
        return resample(t, img, tmp, 0, 0, H, W, oh, ow);
    }
    case NAT_TF_CENTER_CROP: {
        int oy = t->height > H ? -((t->height - H) / 2) : pyround((H - t->height) / 2.0);
        int ox = t->width > W ? -((t->width - W) / 2) : pyround((W - t->width) / 2.0);
        return crop_pad(img, tmp, oy, ox, t->height, t->width);
    }
    case NAT_TF_RANDOM_RESIZED_CROP: {
        int b[4];
        nat_tf_rrc_box(rng, H, W, t->scale, t->ratio, b);
        return resample(t, img, tmp, b[0], b[1], b[2], b[3], t->height, t->width);
    }
    case NAT_TF_RANDOM_CROP: {
        int ph = H + 2 * t->padding, pw = W + 2 * t->padding;
        if (ph < t->height || pw < t->width)
            return nat_error(NAT_ERR_SHAPE, "random crop %dx%d: image %dx%d padded by %d is smaller", t->height,
                             t->width, H, W, t->padding);
        int i = 0, j = 0;
        if (ph != t->height || pw != t->width) {
            i = (int)nat_rng_below(rng, (uint32_t)(ph - t->height + 1));
            j = (int)nat_rng_below(rng, (uint32_t)(pw - t->width + 1));
        }
        return crop_pad(img, tmp, i - t->padding, j - t->padding, t->height, t->width);
    }
    case NAT_TF_HFLIP:
        if (u01(rng) < t->p)
            for (int c = 0; c < img->c; c++)
                for (int y = 0; y < H; y++) {
                    float *row = img->data + ((size_t)c * H + y) * W;
                    for (int a = 0, b = W - 1; a < b; a++, b--) {
                        float v = row[a];
                        row[a] = row[b];
                        row[b] = v;
                    }
                }
        return NAT_OK;
    case NAT_TF_NORMALIZE:
        if (t->channels != img->c)
            return nat_error(NAT_ERR_SHAPE, "normalize: %d mean/std values for a %d-channel image", t->channels,
                             img->c);
        for (int c = 0; c < img->c; c++) {
            float *p = img->data + (size_t)c * H * W;
            const float m = t->mean[c], sd = t->std[c];
            for (size_t k = 0; k < (size_t)H * W; k++)
                p[k] = (p[k] - m) / sd;
        }
        return NAT_OK;
    case NAT_TF_RANDOM_ERASING:
        erase(t, img, rng);
        return NAT_OK;
    }
    return nat_error(NAT_ERR_INVALID_ARG, "transform: unknown kind %d", (int)t->kind);
}

nat_status nat_transforms_apply(const nat_transform *tfs, int n, nat_image *img, nat_image *tmp, nat_rng *rng)
{
    if (n > 0)
        NAT_CHECK_ARG(tfs, "nat_transforms_apply", "tfs");
    NAT_CHECK_ARG(img, "nat_transforms_apply", "img");
    for (int i = 0; i < n; i++) {
        nat_status s = apply_one(&tfs[i], img, tmp, rng);
        if (s != NAT_OK)
            return nat_error_context(s, "transform %d (%s)", i, kind_name(tfs[i].kind));
    }
    return NAT_OK;
}
