/* train/data.c — see train/train.h (section data). A limited split is a nat_dataset of callbacks over the
 * first N samples of the full one, keeping its class names. */
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

typedef struct subset {
    nat_dataset *base;
} subset;

static nat_status subset_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    return nat_dataset_get(((subset *)user)->base, i, img, label);
}

static void subset_free(void *user)
{
    subset *s = user;
    nat_dataset_free(s->base);
    free(s);
}

nat_status nat_train_open_dataset(const nat_config *c, nat_split split, nat_dataset **out)
{
    *out = NULL;
    nat_dataset *ds;
    nat_data_set_max_pixels(c->data.max_pixels); /* before any image is decoded */
    nat_status st = nat_dataset_open(c->data.format, c->data.root, split, &ds);
    if (st != NAT_OK) {
        if (!strcmp(c->data.format, "fashion-mnist") && !strcmp(c->data.root, NAT_FASHION_MNIST_DIR))
            return nat_error_context(st, "data (install Debian's dataset-fashion-mnist, or set data.root)");
        return nat_error_context(st, "data.root %s", c->data.root);
    }
    int64_t limit = split == NAT_SPLIT_TRAIN ? c->data.train_limit : c->data.test_limit;
    if (limit <= 0 || limit >= nat_dataset_count(ds)) {
        *out = ds;
        return NAT_OK;
    }
    subset *s = malloc(sizeof *s);
    if (!s) {
        nat_dataset_free(ds);
        return nat_error(NAT_ERR_OOM, "data: out of memory");
    }
    s->base = ds;
    nat_dataset_desc d = {.count = limit, .classes = nat_dataset_classes(ds), .get = subset_get, .free = subset_free,
                          .user = s, .name = nat_dataset_name(ds)};
    nat_dataset_shape(ds, &d.c, &d.h, &d.w);
    nat_dataset *sub;
    NAT_TRY(nat_dataset_new(&d, &sub)); /* frees s (and ds) on failure */
    int n = nat_dataset_classes(ds);
    const char **names = malloc((size_t)n * sizeof *names);
    if (!names) {
        nat_dataset_free(sub);
        return nat_error(NAT_ERR_OOM, "data: out of memory");
    }
    for (int k = 0; k < n; k++)
        names[k] = nat_dataset_class_name(ds, k);
    st = nat_dataset_set_class_names(sub, n, names);
    free(names);
    if (st != NAT_OK) {
        nat_dataset_free(sub);
        return st;
    }
    *out = sub;
    return NAT_OK;
}

nat_status nat_train_resolve_data(nat_config *c, const nat_dataset *ds)
{
    int ch, h, w;
    nat_dataset_shape(ds, &ch, &h, &w);
    if (c->data.img_size == 0) {
        if (h <= 0 || h != w)
            return nat_error(NAT_ERR_INVALID_ARG, "config %s: data.img_size must be set for %s (its images are %s)",
                             c->source[0] ? c->source : "(defaults)", nat_dataset_name(ds), h <= 0 ? "of varying size" : "not square");
        c->data.img_size = h;
    }
    if (c->data.mean.n && c->data.mean.n != ch)
        return nat_error(NAT_ERR_INVALID_ARG, "config %s: data.mean/std have %d values but the images have %d channel(s)",
                         c->source[0] ? c->source : "(defaults)", c->data.mean.n, ch);
    return NAT_OK;
}

/* The dataset format's usual normalisation. */
static void default_norm(const nat_config *c, int ch, float *mean, float *std)
{
    static const float fm[1] = NAT_FASHION_MNIST_MEAN, fs[1] = NAT_FASHION_MNIST_STD;
    static const float mm[1] = {0.1307f}, ms[1] = {0.3081f};
    static const float c10m[3] = NAT_CIFAR10_MEAN, c10s[3] = NAT_CIFAR10_STD;
    static const float c100m[3] = {0.5071f, 0.4865f, 0.4409f}, c100s[3] = {0.2673f, 0.2564f, 0.2762f};
    static const float im[3] = NAT_IMAGENET_MEAN, is[3] = NAT_IMAGENET_STD;
    const float *m = im, *s = is;
    if (!strcmp(c->data.format, "fashion-mnist"))
        m = fm, s = fs;
    else if (!strcmp(c->data.format, "mnist"))
        m = mm, s = ms;
    else if (!strcmp(c->data.format, "cifar10"))
        m = c10m, s = c10s;
    else if (!strncmp(c->data.format, "cifar100", 8))
        m = c100m, s = c100s;
    for (int i = 0; i < ch && i < NAT_TF_MAX_CHANNELS; i++) {
        mean[i] = ch == 1 && (m == im) ? 0.5f : m[i % 3];
        std[i] = ch == 1 && (s == is) ? 0.25f : s[i % 3];
    }
}

nat_interp nat_config_interp(const nat_config *c)
{
    return !strcmp(c->data.interpolation, "bicubic") ? NAT_INTERP_BICUBIC : NAT_INTERP_BILINEAR;
}

/* data.mean/std, else the format's usual constants. */
static void norm_of(const nat_config *c, int ch, float *mean, float *std)
{
    default_norm(c, ch, mean, std);
    for (int i = 0; i < c->data.mean.n && i < NAT_TF_MAX_CHANNELS; i++) {
        mean[i] = c->data.mean.v[i];
        std[i] = c->data.std.v[i];
    }
}

void nat_train_eval_transforms(const nat_config *c, int ch, bool varying, int h, int w, nat_transform tf[4], int *n)
{
    const int S = c->data.img_size;
    const nat_interp interp = nat_config_interp(c);
    float mean[NAT_TF_MAX_CHANNELS] = {0}, std[NAT_TF_MAX_CHANNELS] = {0};
    norm_of(c, ch, mean, std);
    if (varying) { /* one code path for image folders and nat-classify's files */
        *n = nat_tf_eval_preset(tf, S, c->data.crop_pct, interp, ch, mean, std);
        return;
    }
    *n = 0;
    if (h != S || w != S) {
        tf[*n] = nat_tf_resize(S);
        tf[(*n)++].interp = interp;
        tf[(*n)++] = nat_tf_center_crop(S, S);
    }
    tf[(*n)++] = nat_tf_normalize(ch, mean, std);
}

nat_status nat_train_loader_new(const nat_config *c, const nat_dataset *ds, bool train, nat_loader **out)
{
    *out = NULL;
    int ch, h, w;
    nat_dataset_shape(ds, &ch, &h, &w);
    const int S = c->data.img_size;
    const bool fixed = h > 0 && w > 0, native = fixed && h == S && w == S;
    const nat_interp interp = nat_config_interp(c);
    nat_transform tf[8];
    int n = 0;
    if (train) {
        const char *crop = c->aug.crop;
        if (!native && strcmp(crop, "random_resized_crop")) {
            tf[n] = nat_tf_resize(S);
            tf[n++].interp = interp;
        }
        if (!strcmp(crop, "random_crop"))
            tf[n++] = nat_tf_random_crop(S, S, c->aug.padding);
        else if (!strcmp(crop, "random_resized_crop")) {
            tf[n] = nat_tf_random_resized_crop(S, S);
            tf[n].interp = interp;
            tf[n++].scale[0] = c->aug.scale_min;
        } else if (!native)
            tf[n++] = nat_tf_center_crop(S, S);
        if (c->aug.hflip > 0.0f)
            tf[n++] = nat_tf_hflip(c->aug.hflip);
        float mean[NAT_TF_MAX_CHANNELS] = {0}, std[NAT_TF_MAX_CHANNELS] = {0};
        norm_of(c, ch, mean, std);
        tf[n++] = nat_tf_normalize(ch, mean, std);
        if (c->aug.erasing > 0.0f)
            tf[n++] = nat_tf_random_erasing(c->aug.erasing);
    } else {
        nat_train_eval_transforms(c, ch, !fixed, h, w, tf, &n);
    }

    nat_loader_opts o = nat_loader_defaults();
    o.workers = c->data.workers;
    o.strict = c->data.strict;
    o.seed = c->train.seed;
    o.transforms = tf;
    o.n_transforms = n;
    if (train) {
        o.batch_size = c->train.batch_size;
        o.shuffle = true;
        o.drop_last = true;
        o.epochs = 0;
        o.mixup.mixup_alpha = c->aug.mixup;
        o.mixup.cutmix_alpha = c->aug.cutmix;
        o.mixup.prob = c->aug.mixup_prob;
        o.mixup.switch_prob = c->aug.switch_prob;
        o.mixup.label_smoothing = c->aug.label_smoothing;
    } else {
        o.batch_size = c->train.eval_batch_size;
        o.shuffle = false;
        o.drop_last = false;
        o.epochs = 1;
    }
    nat_status s = nat_loader_new(ds, &o, out);
    if (s != NAT_OK)
        return nat_error_context(s, "%s loader for %s", train ? "training" : "evaluation", nat_dataset_name(ds));
    return NAT_OK;
}
