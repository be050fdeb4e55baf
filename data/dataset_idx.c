/* data/dataset_idx.c — IDX image/label pairs (MNIST, Fashion-MNIST, KMNIST) as a nat_dataset: both files
 * are read whole by nat_idx_load (data/idx.c); samples are byte planes converted on get. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "nat/idx.h"
#include "core/check.h"

typedef struct idx_set {
    nat_idx images, labels;
    int h, w;
} idx_set;

static void idx_set_free(void *user)
{
    idx_set *s = user;
    nat_idx_free(&s->images);
    nat_idx_free(&s->labels);
    free(s);
}

static nat_status idx_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    const idx_set *s = user;
    NAT_TRY(nat_image_reserve(img, 1, s->h, s->w));
    size_t plane = (size_t)s->h * (size_t)s->w;
    nat_data_bytes_to_float(s->images.data + (size_t)i * plane, img->data, plane);
    *label = s->labels.data[i];
    return NAT_OK;
}

nat_status nat_dataset_open_idx(const char *images_path, const char *labels_path, nat_dataset **out)
{
    NAT_CHECK_ARG(images_path, "nat_dataset_open_idx", "images_path");
    NAT_CHECK_ARG(labels_path, "nat_dataset_open_idx", "labels_path");
    NAT_CHECK_ARG(out, "nat_dataset_open_idx", "out");
    *out = NULL;
    idx_set *s = calloc(1, sizeof *s);
    if (!s)
        return nat_error(NAT_ERR_OOM, "idx dataset: no memory");
    nat_status st = nat_idx_load(images_path, &s->images);
    if (st == NAT_OK)
        st = nat_idx_load(labels_path, &s->labels);
    if (st == NAT_OK && s->images.ndim != 3)
        st = nat_error(NAT_ERR_FORMAT, "%s: images must be a 3-D IDX array [N, H, W], this one has %d dimensions",
                       images_path, s->images.ndim);
    if (st == NAT_OK && s->labels.ndim != 1)
        st = nat_error(NAT_ERR_FORMAT, "%s: labels must be a 1-D IDX array [N], this one has %d dimensions",
                       labels_path, s->labels.ndim);
    if (st == NAT_OK && s->images.dims[0] != s->labels.dims[0])
        st = nat_error(NAT_ERR_FORMAT, "IDX pair does not match: %s has %lld images but %s has %lld labels",
                       images_path, (long long)s->images.dims[0], labels_path, (long long)s->labels.dims[0]);
    int classes = 10;
    for (size_t i = 0; st == NAT_OK && i < s->labels.size; i++)
        if (s->labels.data[i] + 1 > classes)
            classes = s->labels.data[i] + 1;
    if (st != NAT_OK) {
        idx_set_free(s);
        return st;
    }
    s->h = (int)s->images.dims[1];
    s->w = (int)s->images.dims[2];
    nat_dataset_desc d = {
        .count = s->images.dims[0], .classes = classes, .c = 1, .h = s->h, .w = s->w,
        .get = idx_get, .free = idx_set_free, .user = s, .name = images_path,
    };
    return nat_dataset_new(&d, out);
}

/* dir/<stem> with ".gz" when that file exists, else the plain name. Returns a malloc'd path. */
static char *find_file(const char *dir, const char *stem)
{
    size_t n = strlen(dir) + strlen(stem) + 8;
    char *p = malloc(n);
    if (!p)
        return NULL;
    snprintf(p, n, "%s/%s.gz", dir, stem);
    if (access(p, F_OK) != 0)
        snprintf(p, n, "%s/%s", dir, stem);
    return p;
}

static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

const char *const *nat_fashion_mnist_class_names(void) { return fashion_names; }

nat_status nat_dataset_open_mnist(const char *dir, nat_split split, bool fashion, nat_dataset **out)
{
    NAT_CHECK_ARG(dir, "nat_dataset_open_mnist", "dir");
    NAT_CHECK_ARG(out, "nat_dataset_open_mnist", "out");
    *out = NULL;
    const char *prefix = split == NAT_SPLIT_TRAIN ? "train" : "t10k";
    char stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", prefix);
    char *images = find_file(dir, stem);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", prefix);
    char *labels = find_file(dir, stem);
    nat_status s = images && labels ? nat_dataset_open_idx(images, labels, out)
                                    : nat_error(NAT_ERR_OOM, "mnist dataset: no memory");
    free(images);
    free(labels);
    if (s == NAT_OK && fashion) {
        if (nat_dataset_classes(*out) != 10) {
            s = nat_error(NAT_ERR_FORMAT, "%s: Fashion-MNIST has 10 classes, these labels go up to %d", dir,
                          nat_dataset_classes(*out) - 1);
        } else {
            s = nat_dataset_set_class_names(*out, 10, fashion_names);
        }
        if (s != NAT_OK) {
            nat_dataset_free(*out);
            *out = NULL;
        }
    }
    return s;
}
