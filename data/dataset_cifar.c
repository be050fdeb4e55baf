/* data/dataset_cifar.c — CIFAR-10 and CIFAR-100 "binary version" batches as a nat_dataset.
 *
 * A record is the label byte(s) then 3072 pixel bytes: the red, green and blue 32x32 planes, row-major,
 * which is already CHW. CIFAR-10: 1 label byte (record 3073 bytes), train = data_batch_1..5.bin, test =
 * test_batch.bin. CIFAR-100: coarse then fine label byte (record 3074 bytes), train.bin and test.bin.
 * All records are read into memory at open (150 MB for CIFAR-10's train split). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"
#include "core/check.h"

#define CIFAR_PIXELS 3072

typedef struct cifar_set {
    uint8_t *pixels; /* [count, 3072] */
    uint8_t *labels; /* [count] */
    int64_t count;
} cifar_set;

static void cifar_free(void *user)
{
    cifar_set *s = user;
    free(s->pixels);
    free(s->labels);
    free(s);
}

static nat_status cifar_get(void *user, int64_t i, nat_image *img, int32_t *label)
{
    const cifar_set *s = user;
    NAT_TRY(nat_image_reserve(img, 3, 32, 32));
    nat_data_bytes_to_float(s->pixels + (size_t)i * CIFAR_PIXELS, img->data, CIFAR_PIXELS);
    *label = s->labels[i];
    return NAT_OK;
}

/* Appends the records of one file; label_at is which label byte to keep (0 or 1), label_bytes 1 or 2. */
static nat_status read_batch(cifar_set *s, const char *path, int label_bytes, int label_at, int classes)
{
    const size_t rec = (size_t)label_bytes + CIFAR_PIXELS;
    FILE *f = fopen(path, "rb");
    if (!f)
        return nat_error(NAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    nat_status st = NAT_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
        st = nat_error(NAT_ERR_IO, "%s: cannot determine the file size", path);
    else if (size == 0 || (size_t)size % rec != 0)
        st = nat_error(NAT_ERR_FORMAT,
                       "%s: size %ld bytes is not a positive multiple of the %zu-byte CIFAR-%d record (%d label "
                       "byte%s + 3072 pixels)",
                       path, size, rec, label_bytes == 1 ? 10 : 100, label_bytes, label_bytes == 1 ? "" : "s");
    int64_t n = st == NAT_OK ? (int64_t)((size_t)size / rec) : 0;
    uint8_t *buf = NULL;
    if (st == NAT_OK) {
        uint8_t *px = realloc(s->pixels, (size_t)(s->count + n) * CIFAR_PIXELS);
        if (px)
            s->pixels = px;
        uint8_t *lb = realloc(s->labels, (size_t)(s->count + n));
        if (lb)
            s->labels = lb;
        buf = malloc(rec);
        if (!px || !lb || !buf)
            st = nat_error(NAT_ERR_OOM, "%s: no memory for %lld records", path, (long long)n);
    }
    for (int64_t r = 0; r < n && st == NAT_OK; r++) {
        if (fread(buf, 1, rec, f) != rec) {
            st = nat_error(NAT_ERR_IO, "%s: read failed at record %lld", path, (long long)r);
            break;
        }
        if (buf[label_at] >= classes) {
            st = nat_error(NAT_ERR_FORMAT, "%s: record %lld has label %d (CIFAR-%d%s has %d classes)", path,
                           (long long)r, buf[label_at], label_bytes == 1 ? 10 : 100,
                           label_bytes == 1 ? "" : (label_at == 0 ? " coarse" : " fine"), classes);
            break;
        }
        s->labels[s->count + r] = buf[label_at];
        memcpy(s->pixels + (size_t)(s->count + r) * CIFAR_PIXELS, buf + label_bytes, CIFAR_PIXELS);
    }
    if (st == NAT_OK)
        s->count += n;
    free(buf);
    fclose(f);
    return st;
}

static nat_status open_files(const char *dir, const char *const *files, int nfiles, int label_bytes, int label_at,
                             int classes, const char *const *names, nat_dataset **out)
{
    *out = NULL;
    cifar_set *s = calloc(1, sizeof *s);
    if (!s)
        return nat_error(NAT_ERR_OOM, "cifar dataset: no memory");
    size_t plen = strlen(dir) + 32;
    char *path = malloc(plen);
    nat_status st = path ? NAT_OK : nat_error(NAT_ERR_OOM, "cifar dataset: no memory");
    for (int i = 0; i < nfiles && st == NAT_OK; i++) {
        snprintf(path, plen, "%s/%s", dir, files[i]);
        st = read_batch(s, path, label_bytes, label_at, classes);
    }
    free(path);
    if (st != NAT_OK) {
        cifar_free(s);
        return st;
    }
    nat_dataset_desc d = {
        .count = s->count, .classes = classes, .c = 3, .h = 32, .w = 32,
        .get = cifar_get, .free = cifar_free, .user = s, .name = dir,
    };
    st = nat_dataset_new(&d, out);
    if (st == NAT_OK && (st = nat_dataset_set_class_names(*out, classes, names)) != NAT_OK) {
        nat_dataset_free(*out);
        *out = NULL;
    }
    return st;
}

static const char *const cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

static const char *const cifar100_coarse[20] = {
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees", "vehicles_1",
    "vehicles_2"};

static const char *const cifar100_fine[100] = {
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm"};

nat_status nat_dataset_open_cifar10(const char *dir, nat_split split, nat_dataset **out)
{
    NAT_CHECK_ARG(dir, "nat_dataset_open_cifar10", "dir");
    NAT_CHECK_ARG(out, "nat_dataset_open_cifar10", "out");
    static const char *const train[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                        "data_batch_4.bin", "data_batch_5.bin"};
    static const char *const test[] = {"test_batch.bin"};
    return split == NAT_SPLIT_TRAIN ? open_files(dir, train, 5, 1, 0, 10, cifar10_names, out)
                                    : open_files(dir, test, 1, 1, 0, 10, cifar10_names, out);
}

nat_status nat_dataset_open_cifar100(const char *dir, nat_split split, bool coarse, nat_dataset **out)
{
    NAT_CHECK_ARG(dir, "nat_dataset_open_cifar100", "dir");
    NAT_CHECK_ARG(out, "nat_dataset_open_cifar100", "out");
    static const char *const train[] = {"train.bin"};
    static const char *const test[] = {"test.bin"};
    return open_files(dir, split == NAT_SPLIT_TRAIN ? train : test, 1, 2, coarse ? 0 : 1, coarse ? 20 : 100,
                      coarse ? cifar100_coarse : cifar100_fine, out);
}
