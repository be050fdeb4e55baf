/* data/dataset.c — the nat_dataset handle (a table of callbacks plus class names), nat_image buffers
 * and nat_dataset_open, the string-keyed entry point configs use (see include/nat/data.h). The readers
 * live in dataset_idx.c, dataset_cifar.c and dataset_folder.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "core/check.h"

struct nat_dataset {
    nat_dataset_desc d;
    char *name;         /* owned copy of d.name */
    char **class_names; /* owned, d.classes entries */
};

nat_status nat_image_reserve(nat_image *im, int c, int h, int w)
{
    NAT_CHECK_ARG(im, "nat_image_reserve", "im");
    if (c < 1 || h < 1 || w < 1)
        return nat_error(NAT_ERR_INVALID_ARG, "image: size %dx%dx%d is not positive", c, h, w);
    size_t need = (size_t)c * (size_t)h * (size_t)w;
    if (need > im->cap) {
        float *p = realloc(im->data, need * sizeof *p);
        if (!p)
            return nat_error(NAT_ERR_OOM, "image: cannot allocate %dx%dx%d floats", c, h, w);
        im->data = p;
        im->cap = need;
    }
    im->c = c;
    im->h = h;
    im->w = w;
    return NAT_OK;
}

void nat_image_free(nat_image *im)
{
    free(im->data);
    memset(im, 0, sizeof *im);
}

void nat_data_bytes_to_float(const uint8_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i] / 255.0f;
}

static void free_names(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

nat_status nat_dataset_set_class_names(nat_dataset *ds, int n, const char *const *names)
{
    NAT_CHECK_ARG(ds, "nat_dataset_set_class_names", "ds");
    if (n > 0)
        NAT_CHECK_ARG(names, "nat_dataset_set_class_names", "names");
    if (!ds || !names || n != ds->d.classes)
        return nat_error(NAT_ERR_INVALID_ARG, "dataset %s: %d class names given for %d classes",
                         ds ? ds->name : "(null)", n, ds ? ds->d.classes : 0);
    char **copy = calloc((size_t)n, sizeof *copy);
    if (!copy)
        return nat_error(NAT_ERR_OOM, "dataset %s: no memory for class names", ds->name);
    for (int i = 0; i < n; i++) {
        copy[i] = strdup(names[i] ? names[i] : "");
        if (!copy[i]) {
            free_names(copy, n);
            return nat_error(NAT_ERR_OOM, "dataset %s: no memory for class names", ds->name);
        }
    }
    free_names(ds->class_names, ds->d.classes);
    ds->class_names = copy;
    return NAT_OK;
}

nat_status nat_dataset_new(const nat_dataset_desc *desc, nat_dataset **out)
{
    NAT_CHECK_ARG(desc, "nat_dataset_new", "desc");
    NAT_CHECK_ARG(out, "nat_dataset_new", "out");
    *out = NULL;
    nat_status s = NAT_OK;
    if (!desc || !desc->get)
        s = nat_error(NAT_ERR_INVALID_ARG, "dataset: a get callback is required");
    else if (desc->count < 1 || desc->classes < 1 || desc->c < 1 || desc->h < 0 || desc->w < 0 ||
             (desc->h == 0) != (desc->w == 0))
        s = nat_error(NAT_ERR_INVALID_ARG,
                      "dataset %s: %lld samples, %d classes, shape %dx%dx%d (need samples and classes >= 1, "
                      "channels >= 1, height and width both > 0 or both 0)",
                      desc->name ? desc->name : "", (long long)desc->count, desc->classes, desc->c, desc->h, desc->w);
    nat_dataset *ds = NULL;
    if (s == NAT_OK) {
        ds = calloc(1, sizeof *ds);
        if (ds) {
            ds->d = *desc;
            ds->name = strdup(desc->name ? desc->name : "(custom)");
        }
        if (!ds || !ds->name)
            s = nat_error(NAT_ERR_OOM, "dataset: no memory");
    }
    if (s == NAT_OK) {
        char **names = calloc((size_t)desc->classes, sizeof *names);
        for (int k = 0; names && k < desc->classes; k++) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", k);
            names[k] = strdup(buf);
            if (!names[k]) {
                free_names(names, desc->classes);
                names = NULL;
            }
        }
        ds->class_names = names;
        if (!names)
            s = nat_error(NAT_ERR_OOM, "dataset: no memory for class names");
    }
    if (s != NAT_OK) {
        if (ds) {
            free(ds->name);
            free(ds);
        }
        if (desc && desc->free)
            desc->free(desc->user);
        return s;
    }
    *out = ds;
    return NAT_OK;
}

void nat_dataset_free(nat_dataset *ds)
{
    if (!ds)
        return;
    if (ds->d.free)
        ds->d.free(ds->d.user);
    free_names(ds->class_names, ds->d.classes);
    free(ds->name);
    free(ds);
}

int64_t nat_dataset_count(const nat_dataset *ds) { return ds->d.count; }
int nat_dataset_classes(const nat_dataset *ds) { return ds->d.classes; }
const char *nat_dataset_name(const nat_dataset *ds) { return ds->name; }

void nat_dataset_shape(const nat_dataset *ds, int *c, int *h, int *w)
{
    if (c)
        *c = ds->d.c;
    if (h)
        *h = ds->d.h;
    if (w)
        *w = ds->d.w;
}

const char *nat_dataset_class_name(const nat_dataset *ds, int k)
{
    return k >= 0 && k < ds->d.classes ? ds->class_names[k] : "?";
}

nat_status nat_dataset_get(const nat_dataset *ds, int64_t i, nat_image *img, int32_t *label)
{
    NAT_CHECK_ARG(ds, "nat_dataset_get", "ds");
    NAT_CHECK_ARG(img, "nat_dataset_get", "img");
    NAT_CHECK_ARG(label, "nat_dataset_get", "label");
    if (i < 0 || i >= ds->d.count)
        return nat_error(NAT_ERR_INVALID_ARG, "dataset %s: sample %lld is out of range (%lld samples)", ds->name,
                         (long long)i, (long long)ds->d.count);
    return ds->d.get(ds->d.user, i, img, label);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

nat_status nat_dataset_open(const char *format, const char *path, nat_split split, nat_dataset **out)
{
    NAT_CHECK_ARG(format, "nat_dataset_open", "format");
    NAT_CHECK_ARG(path, "nat_dataset_open", "path");
    NAT_CHECK_ARG(out, "nat_dataset_open", "out");
    *out = NULL;
    if (!format || !path)
        return nat_error(NAT_ERR_INVALID_ARG, "dataset: format and path are required");
    if (!strcmp(format, "mnist") || !strcmp(format, "fashion-mnist"))
        return nat_dataset_open_mnist(path, split, !strcmp(format, "fashion-mnist"), out);
    if (!strcmp(format, "cifar10"))
        return nat_dataset_open_cifar10(path, split, out);
    if (!strcmp(format, "cifar100") || !strcmp(format, "cifar100-coarse"))
        return nat_dataset_open_cifar100(path, split, !strcmp(format, "cifar100-coarse"), out);
    if (!strcmp(format, "folder")) {
        size_t n = strlen(path) + 8;
        char *sub = malloc(n);
        if (!sub)
            return nat_error(NAT_ERR_OOM, "dataset: no memory");
        snprintf(sub, n, "%s/%s", path, split == NAT_SPLIT_TRAIN ? "train" : "val");
        if (split == NAT_SPLIT_TEST && !is_dir(sub))
            snprintf(sub, n, "%s/test", path);
        nat_status s = nat_dataset_open_folder(sub, 3, out);
        free(sub);
        return s;
    }
    return nat_error(NAT_ERR_INVALID_ARG,
                     "dataset: unknown format '%s' (mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse, folder)",
                     format);
}
