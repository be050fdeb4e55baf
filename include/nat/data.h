/* nat/data.h — datasets, per-sample transforms, batch mixup/cutmix and the threaded data loader.
 *
 * Images are float CHW planes with values in [0, 1] (bytes / 255) until a normalisation transform
 * changes them. Every random choice comes from a nat_rng the loader derives from (seed, epoch, position
 * in the epoch) for samples and (seed, epoch, batch index) for mixup/cutmix, so a batch does not depend
 * on the number of worker threads or their scheduling, and a run resumed from a saved loader state sees
 * the same batches as one that never stopped.
 *
 * Formats (docs/data.md has the details):
 *  - IDX image/label pairs (MNIST, Fashion-MNIST, KMNIST), gzipped or plain: 1 x H x W images;
 *  - CIFAR-10 / CIFAR-100 binary batches: 3 x 32 x 32;
 *  - image folders, one sub-folder per class: JPEG and PNG, decoded by stb_image on demand (in the
 *    loader's worker threads); sizes vary per image, so the transforms must end in a fixed size.
 * Datasets of your own plug in through nat_dataset_new.
 *
 * Thread safety: nat_dataset_get may be called from several threads at once on one dataset. A loader is
 * used from one thread (the one calling nat_loader_next); its workers are internal.
 */
#ifndef NAT_DATA_H
#define NAT_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nat/rng.h"
#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Debian's dataset-fashion-mnist package installs here. */
#define NAT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* ---------------------------------------------------------------------------------------------------
 * Images
 * ------------------------------------------------------------------------------------------------- */

/* A float image, planar CHW, row-major: data[(ch * h + y) * w + x]. Caller-owned, growable: start from
 * `nat_image im = {0};`, reuse it for any number of images (it only grows), free with nat_image_free. */
typedef struct nat_image {
    int c, h, w;
    float *data; /* owned; cap floats */
    size_t cap;
} nat_image;

/* Sets the image to c x h x w, growing its buffer when needed (contents are then undefined). */
nat_status nat_image_reserve(nat_image *im, int c, int h, int w);
void nat_image_free(nat_image *im);

/* Decodes a JPEG or PNG file (stb_image) into img as `channels` (1 or 3) planes of bytes / 255, the way
 * PIL's convert("RGB") / convert("L") would: alpha is dropped (not composited), grey is replicated to
 * RGB, RGB is reduced to grey with stb_image's integer weights. A file that cannot be opened is
 * NAT_ERR_IO; one that does not decode, or declares more pixels than nat_data_set_max_pixels allows,
 * is NAT_ERR_FORMAT; the message names the file. Thread-safe (image folders decode with it). */
nat_status nat_image_load(const char *path, int channels, nat_image *img);

/* ---------------------------------------------------------------------------------------------------
 * Datasets
 * ------------------------------------------------------------------------------------------------- */

typedef struct nat_dataset nat_dataset; /* opaque */

typedef enum nat_split { NAT_SPLIT_TRAIN = 0, NAT_SPLIT_TEST = 1 } nat_split;

/* What a dataset of your own provides (nat_dataset_new). */
typedef struct nat_dataset_desc {
    int64_t count;   /* samples, >= 1 */
    int classes;     /* labels are 0 .. classes-1 */
    int c, h, w;     /* sample shape; h = w = 0 when sizes vary per sample (c is always fixed) */
    /* Fills img (resized with nat_image_reserve) and *label with sample i (0 <= i < count). Must be safe
     * to call from several threads at once. A sample that cannot be read returns NAT_ERR_IO (unreadable)
     * or NAT_ERR_FORMAT (corrupt) with a message naming it: the loader may then skip it (see strict). */
    nat_status (*get)(void *user, int64_t i, nat_image *img, int32_t *label);
    void (*free)(void *user); /* called by nat_dataset_free; may be NULL */
    void *user;               /* transferred to the dataset when `free` is set (freed also when
                                 nat_dataset_new fails), else borrowed */
    const char *name;         /* describes the data in messages, e.g. a path; copied; may be NULL */
} nat_dataset_desc;

/* A dataset from callbacks. Class names default to "0", "1", ... (nat_dataset_set_class_names). */
nat_status nat_dataset_new(const nat_dataset_desc *desc, nat_dataset **out);

/* An IDX pair: images [N, H, W] and labels [N] (unsigned bytes, .gz or plain). Fails when the counts
 * differ (naming both files) or a file is malformed. classes = largest label + 1, at least 10 (the MNIST
 * family's); class names "0" .. "9". */
nat_status nat_dataset_open_idx(const char *images_path, const char *labels_path, nat_dataset **out);

/* The MNIST file layout in `dir`: {train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz].
 * fashion selects Fashion-MNIST's class names ("T-shirt/top", "Trouser", ...) instead of digits. */
nat_status nat_dataset_open_mnist(const char *dir, nat_split split, bool fashion, nat_dataset **out);

/* Fashion-MNIST's ten class names, "T-shirt/top" .. "Ankle boot" (static). */
const char *const *nat_fashion_mnist_class_names(void);

/* CIFAR-10 binary version: dir holds data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin
 * (test); records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32 x 32). A file whose size is
 * not a multiple of 3073 bytes, or a label >= 10, is an error naming the file. */
nat_status nat_dataset_open_cifar10(const char *dir, nat_split split, nat_dataset **out);

/* CIFAR-100 binary version: dir holds train.bin and test.bin; records of a coarse and a fine label byte
 * + 3072 pixel bytes. coarse selects the 20 super-classes as labels, else the 100 fine classes. */
nat_status nat_dataset_open_cifar100(const char *dir, nat_split split, bool coarse, nat_dataset **out);

/* An image folder: dir/<class>/.../<name>.{jpg,jpeg,png} (case-insensitive extensions; other files, hidden
 * files and hidden folders are ignored; sub-folders inside a class are searched recursively, following
 * symbolic links). Classes are the sub-folder names in byte order (torchvision's ImageFolder order);
 * files within a class are sorted too. channels (1 or 3) is what every image is converted to. A missing
 * dir is NAT_ERR_IO; a dir without class folders, or a class folder without images, is NAT_ERR_FORMAT
 * naming it. Only paths are read here: images are decoded by nat_dataset_get. */
nat_status nat_dataset_open_folder(const char *dir, int channels, nat_dataset **out);
/* The largest image (width x height, from the file's header, before decoding) an image folder decodes;
 * a larger one is NAT_ERR_FORMAT naming its size, so the loader skips it (or, strict, stops): a small
 * file can declare a huge image (an 18000 x 18000 PNG of 945 KB decodes to ~1 GB of bytes and ~4 GB of
 * floats). Process-wide, for datasets opened before or after; returns the previous value. Default
 * NAT_DEFAULT_MAX_PIXELS. */
#define NAT_DEFAULT_MAX_PIXELS 67108864LL /* 8192 x 8192 */
int64_t nat_data_set_max_pixels(int64_t max_pixels);

/* One entry point for configs. format is "mnist", "fashion-mnist" (path: the IDX directory),
 * "cifar10", "cifar100", "cifar100-coarse" (path: the directory of .bin files) or "folder" (path/train
 * for the train split, path/val for test — or path/test when there is no val — 3 channels). */
nat_status nat_dataset_open(const char *format, const char *path, nat_split split, nat_dataset **out);

void nat_dataset_free(nat_dataset *ds);

int64_t nat_dataset_count(const nat_dataset *ds);
int nat_dataset_classes(const nat_dataset *ds);
/* Sample shape; *h = *w = 0 when sizes vary (image folders). Any pointer may be NULL. */
void nat_dataset_shape(const nat_dataset *ds, int *c, int *h, int *w);
/* Name of class k (borrowed, valid while ds lives); "?" when k is out of range. */
const char *nat_dataset_class_name(const nat_dataset *ds, int k);
/* What the data is (a path or the desc's name); borrowed. */
const char *nat_dataset_name(const nat_dataset *ds);
/* Replaces the class names (n must equal the class count; the strings are copied). */
nat_status nat_dataset_set_class_names(nat_dataset *ds, int n, const char *const *names);

/* Sample i as a float CHW image in [0, 1] (bytes / 255) and its label. Thread-safe. Out-of-range i is
 * NAT_ERR_INVALID_ARG; an unreadable or corrupt image file NAT_ERR_IO / NAT_ERR_FORMAT naming it. */
nat_status nat_dataset_get(const nat_dataset *ds, int64_t i, nat_image *img, int32_t *label);

/* ---------------------------------------------------------------------------------------------------
 * Per-sample transforms (torchvision / timm semantics; build them with the nat_tf_* helpers, which fill
 * in the defaults, then change fields as needed). Applied in array order.
 * ------------------------------------------------------------------------------------------------- */

/* Resampling filter of NAT_TF_RESIZE and NAT_TF_RANDOM_RESIZED_CROP. */
typedef enum nat_interp {
    NAT_INTERP_BILINEAR = 0, /* PIL's bilinear: triangle filter, widened when shrinking (antialiased) */
    NAT_INTERP_BICUBIC = 1   /* PIL's bicubic (Catmull-Rom, a = -0.5), widened when shrinking: timm's
                                evaluation of NAT/DiNAT; computed by stb_image_resize; results are
                                clipped to [0, 1] when the input lies in [0, 1], as PIL clips bytes */
} nat_interp;

typedef enum nat_transform_kind {
    NAT_TF_RESIZE,              /* shorter side to `size`, the other int(size * long / short); `interp` */
    NAT_TF_CENTER_CROP,         /* height x width from the centre (zero padding when the image is smaller) */
    NAT_TF_RANDOM_RESIZED_CROP, /* torchvision RandomResizedCrop: area `scale`, aspect `ratio`, to height x width */
    NAT_TF_RANDOM_CROP,         /* zero-pad every side by `padding`, then a random height x width window */
    NAT_TF_HFLIP,               /* mirror left-right with probability p */
    NAT_TF_NORMALIZE,           /* (x - mean[ch]) / std[ch] */
    NAT_TF_RANDOM_ERASING       /* timm RandomErasing, 'const' mode: with probability p, one box := value */
} nat_transform_kind;

#define NAT_TF_MAX_CHANNELS 4

typedef struct nat_transform {
    nat_transform_kind kind;
    int size;           /* RESIZE: target of the shorter side */
    int height, width;  /* crops: output size */
    int padding;        /* RANDOM_CROP */
    float p;            /* HFLIP, RANDOM_ERASING: probability */
    float scale[2];     /* RANDOM_RESIZED_CROP: (0.08, 1); RANDOM_ERASING: (0.02, 1/3) — area fractions */
    float ratio[2];     /* RANDOM_RESIZED_CROP: (3/4, 4/3) as w/h; RANDOM_ERASING: (0.3, 1/0.3) as h/w */
    float value;        /* RANDOM_ERASING: fill value, 0 */
    int channels;       /* NORMALIZE: how many mean/std entries are set (must match the image) */
    float mean[NAT_TF_MAX_CHANNELS], std[NAT_TF_MAX_CHANNELS];
    int interp;         /* RESIZE, RANDOM_RESIZED_CROP: a nat_interp; 0 (bilinear) by default */
} nat_transform;

nat_transform nat_tf_resize(int size);
nat_transform nat_tf_center_crop(int height, int width);
nat_transform nat_tf_random_resized_crop(int height, int width);
nat_transform nat_tf_random_crop(int height, int width, int padding);
nat_transform nat_tf_hflip(float p);
nat_transform nat_tf_normalize(int channels, const float *mean, const float *std);
nat_transform nat_tf_random_erasing(float p);

/* timm's evaluation transform (transforms_factory, crop_mode 'center'): resize the shorter side to
 * floor(img_size / crop_pct) with `interp`, centre-crop img_size x img_size, normalise with mean/std
 * (`channels` values each). Fills out[0..3) and returns 3. NAT/DiNAT on ImageNet: 224, 0.875 (so
 * 256), NAT_INTERP_BICUBIC, NAT_IMAGENET_MEAN/STD. crop_pct 1 resizes straight to img_size. */
int nat_tf_eval_preset(nat_transform out[3], int img_size, float crop_pct, nat_interp interp, int channels,
                       const float *mean, const float *std);

/* nat_image_load + nat_tf_eval_preset applied: one file as the evaluation of an image folder sees it
 * (nat-classify, nat-eval with configs/imagenet/nat_*.cfg). img ends channels x img_size x img_size. */
nat_status nat_image_preprocess_eval(const char *path, int channels, int img_size, float crop_pct, nat_interp interp,
                                     const float *mean, const float *std, nat_image *img);

/* Common normalisation constants (torchvision/timm's). */
#define NAT_IMAGENET_MEAN {0.485f, 0.456f, 0.406f}
#define NAT_IMAGENET_STD {0.229f, 0.224f, 0.225f}
#define NAT_CIFAR10_MEAN {0.4914f, 0.4822f, 0.4465f}
#define NAT_CIFAR10_STD {0.2470f, 0.2435f, 0.2616f}
#define NAT_FASHION_MNIST_MEAN {0.2860f}
#define NAT_FASHION_MNIST_STD {0.3530f}

/* Checks a transform's parameters (sizes > 0, probabilities in [0, 1], ranges ordered, ...). */
nat_status nat_transform_check(const nat_transform *tf);
/* The output shape of n transforms for an input of c x h x w (h = w = 0: varying). Fails when a
 * normalisation does not match the channels. *oh = *ow = 0 when the output size still varies. */
nat_status nat_transforms_shape(const nat_transform *tfs, int n, int c, int h, int w, int *oh, int *ow);
/* Applies transforms tfs[0 .. n) to img in place, drawing from rng; tmp is scratch (both caller-owned,
 * both may be reallocated and swapped). */
nat_status nat_transforms_apply(const nat_transform *tfs, int n, nat_image *img, nat_image *tmp, nat_rng *rng);

/* The crop box RandomResizedCrop picks for an h x w image (torchvision's get_params: 10 tries, then the
 * central crop with the ratio clamped): top, left, height, width. Exposed for tests and tools. */
void nat_tf_rrc_box(nat_rng *rng, int h, int w, const float scale[2], const float ratio[2], int box[4]);

/* ---------------------------------------------------------------------------------------------------
 * Batch mixup / cutmix (timm's Mixup, mode 'batch': sample i is mixed with sample n-1-i)
 * ------------------------------------------------------------------------------------------------- */

typedef struct nat_mixup {
    float mixup_alpha;     /* Beta(α, α) for mixup; 0 = off */
    float cutmix_alpha;    /* Beta(α, α) for cutmix; 0 = off */
    float prob;            /* probability that a batch is mixed at all (timm's mixup_prob): 1 */
    float switch_prob;     /* with both on: probability of cutmix rather than mixup: 0.5 */
    float label_smoothing; /* folded into the targets: 0.1 */
    bool correct_lam;      /* cutmix: lambda from the clipped box's area (timm's default): true */
} nat_mixup;

/* mixup_alpha = cutmix_alpha = 0 (off) and the defaults above. */
nat_mixup nat_mixup_defaults(void);
static inline bool nat_mixup_enabled(const nat_mixup *m) { return m->mixup_alpha > 0.0f || m->cutmix_alpha > 0.0f; }

typedef struct nat_mixup_result {
    float lam;      /* weight of each sample's own image and label (1: not mixed) */
    bool cutmix;    /* a box was pasted rather than a blend */
    int box[4];     /* cutmix: rows [box[0], box[1]), columns [box[2], box[3]) */
} nat_mixup_result;

/* Mixes x [n, c, h, w] in place and writes soft targets [n, classes]: row i = lam·onehot(labels[i]) +
 * (1-lam)·onehot(labels[n-1-i]) with smoothing ε folded in (on = 1-ε+ε/classes, off = ε/classes), so
 * every row sums to 1. Draws from rng. res may be NULL. Odd n is allowed: the middle sample pairs with
 * itself. */
nat_status nat_mixup_apply(const nat_mixup *m, nat_rng *rng, float *x, int64_t n, int c, int h, int w,
                           const int32_t *labels, int classes, float *targets, nat_mixup_result *res);

/* ---------------------------------------------------------------------------------------------------
 * Loader
 * ------------------------------------------------------------------------------------------------- */

typedef struct nat_loader nat_loader; /* opaque */

typedef struct nat_loader_opts {
    int batch_size;       /* 32 */
    int workers;          /* threads building batches: 2; 0 builds them in the nat_loader_next call */
    int prefetch;         /* batches built ahead of the consumer (queue depth): 2 x workers, at least 2 */
    bool shuffle;         /* a new order every epoch from (seed, epoch): true */
    bool drop_last;       /* drop the last partial batch of an epoch: false */
    uint64_t seed;        /* 0 */
    int64_t epochs;       /* stop after this many epochs; 0 = never stop: 0 */
    bool strict;          /* an unreadable/corrupt sample is an error instead of skipped: false */
    const nat_transform *transforms; /* borrowed at nat_loader_new, copied; may be NULL */
    int n_transforms;
    nat_mixup mixup;      /* off by default (see nat_mixup_defaults) */
    /* Receives each skipped sample's message (once per sample); NULL prints "nat: warning: ..." to
     * stderr. Called from worker threads. */
    void (*warn)(void *user, const char *message);
    void *warn_user;
} nat_loader_opts;

/* The defaults above. Start from these rather than from a zeroed struct (mixup.prob would be 0). */
nat_loader_opts nat_loader_defaults(void);

/* One batch. The arrays are borrowed from the loader: valid until the next nat_loader_next,
 * nat_loader_set_state or nat_loader_free. */
typedef struct nat_batch {
    int64_t n;         /* samples (< batch_size only for a last partial batch); 0 after the last epoch */
    int c, h, w;
    float *x;          /* [n, c, h, w], contiguous */
    int32_t *labels;   /* [n]: each sample's own label (before mixing) */
    float *targets;    /* [n, classes] soft targets when mixup or cutmix is on, else NULL */
    int classes;
    int64_t epoch;     /* which epoch, from 0 */
    int64_t index;     /* which batch of that epoch, from 0 */
    float lam;         /* mixup/cutmix lambda of this batch (1 when not mixed) */
} nat_batch;

/* Where a loader stands: the next batch it delivers is batch `batch` of epoch `epoch`. */
typedef struct nat_loader_state {
    uint64_t seed;
    int64_t epoch;
    int64_t batch;
} nat_loader_state;

/* Starts the workers at epoch 0, batch 0. The dataset is borrowed and must outlive the loader. Fails
 * when the options are out of range, when the transforms do not give every sample the same shape, or
 * when the dataset gives no batch at all. */
nat_status nat_loader_new(const nat_dataset *ds, const nat_loader_opts *opts, nat_loader **out);
/* Stops the workers (they abandon a half-built batch) and joins them. NULL is ignored. */
void nat_loader_free(nat_loader *L);

/* The next batch, in order. After the last epoch (opts.epochs > 0) it returns NAT_OK with out->n = 0.
 * A sample error (strict mode, or an error other than an unreadable/corrupt sample) fails with that
 * sample's message; the loader then goes on with the following batch. */
nat_status nat_loader_next(nat_loader *L, nat_batch *out);

int64_t nat_loader_batches_per_epoch(const nat_loader *L);
/* The shape of one sample of a batch. */
void nat_loader_sample_shape(const nat_loader *L, int *c, int *h, int *w);
/* Samples skipped so far because they could not be read (each replaced by the next readable one). */
int64_t nat_loader_skipped(const nat_loader *L);

/* For a checkpoint: take it after the step that used the current batch. */
nat_loader_state nat_loader_get_state(const nat_loader *L);
/* Repositions the loader (discarding prefetched batches): the batches that follow are those an
 * uninterrupted loader with the same options would deliver from that point. */
nat_status nat_loader_set_state(nat_loader *L, const nat_loader_state *st);

#ifdef __cplusplus
}
#endif
#endif
