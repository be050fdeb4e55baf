/* train/config.h — the training configuration of nat-train and nat-eval: a strict INI file (libinih)
 * with sections [model] [data] [aug] [optim] [train] [log], `--set section.key=value` overrides, and the
 * resolved config printed back as INI (for the log, the run directory and each checkpoint).
 *
 * Every key has a default (nat_config_defaults; docs/configs.md lists them all). Strict: an unknown
 * section or key, a key given twice, a value of the wrong type or out of range is NAT_ERR_FORMAT with a
 * message "FILE:LINE: ..." (or "--set KEY=VALUE: ..." for an override).
 *
 * The model's shape keys start from [model] variant (nat_mini by default): a key left out takes the
 * variant's value, a key given replaces it; nat_config_resolve fills them in. The number of levels is the
 * length of `depths` (as len(depths) in PyTorch's NAT).
 *
 * Plain data: copy it by value. Not thread-safe (messages go through nat_error).
 */
#ifndef NAT_TRAIN_CONFIG_H
#define NAT_TRAIN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "nat/autograd.h" /* nat_precision */
#include "nat/model.h"
#include "nat/status.h"

#define NAT_CFG_STR 512 /* paths and other strings */
#define NAT_CFG_LIST 4  /* longest list value (per-level lists, mean/std per channel) */

typedef struct nat_cfg_ints {
    int n;
    int v[NAT_CFG_LIST];
} nat_cfg_ints;

typedef struct nat_cfg_floats {
    int n;
    float v[NAT_CFG_LIST];
} nat_cfg_floats;

typedef struct nat_config {
    struct {
        char variant[32]; /* starting point for the shape keys: nat_mini, ..., dinat_base */
        char name[32];    /* label in messages and checkpoints; "" = the variant's name */
        int embed_dim;
        nat_cfg_ints depths; /* its length is the number of levels */
        nat_cfg_ints heads;  /* as many as depths */
        int kernel_size;
        char dilations[NAT_CFG_STR]; /* "1,2/1,2/1,1" (levels separated by '/'); "" = the variant's */
        float mlp_ratio, drop_path, layer_scale, qk_scale, drop, attn_drop;
        bool qkv_bias;
        int patch_stride; /* 4 or 2 */
    } model;
    struct {
        char format[32];       /* fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse, folder */
        char root[NAT_CFG_STR]; /* "" = Fashion-MNIST's Debian path for fashion-mnist; required otherwise */
        int img_size;          /* 0 = the dataset's own size (folders: 224) */
        float crop_pct;        /* folders, evaluation: resize to img_size / crop_pct, centre crop */
        int64_t train_limit, test_limit; /* use only the first N samples; 0 = all */
        int workers;
        nat_cfg_floats mean, std; /* empty = the dataset's usual constants */
        bool strict;             /* an unreadable image is an error rather than skipped */
        int64_t max_pixels;      /* larger images (by their header) are not decoded: skipped, or strict an error */
    } data;
    struct {
        char crop[32];   /* random_crop, random_resized_crop, none */
        int padding;     /* random_crop */
        float scale_min; /* random_resized_crop: smallest area fraction */
        float hflip;     /* probability */
        float erasing;   /* random erasing probability */
        float mixup, cutmix; /* Beta alphas; 0 = off */
        float mixup_prob, switch_prob;
        float label_smoothing;
    } aug;
    struct {
        char name[16]; /* adamw, sgd */
        float lr;      /* peak learning rate (for lr_batch images, when lr_batch > 0) */
        int lr_batch;  /* > 0: lr is per lr_batch images, scaled linearly to the effective batch */
        float min_lr, warmup_lr, warmup_epochs;
        float weight_decay;
        float momentum;
        bool nesterov;
        float beta1, beta2, eps;
        float clip_grad; /* max global gradient norm; 0 = no clipping */
    } optim;
    struct {
        int epochs;
        int batch_size;  /* images per micro-batch */
        int accum_steps; /* micro-batches per optimizer step */
        int64_t max_steps; /* stop early after this many optimizer steps; 0 = all */
        uint64_t seed;
        int threads;     /* OpenMP threads; 0 = the OpenMP default (OMP_NUM_THREADS or all cores) */
        bool ema;
        float ema_decay;
        int eval_every;       /* epochs; 0 = only at the end */
        int eval_batch_size;
        int64_t checkpoint_every; /* optimizer steps; 0 = only at the end (and on a signal) */
        int keep_checkpoints;     /* 0 = keep all */
        char device[16];          /* "cpu" or "cuda:N" (canonical; "cuda" is stored as "cuda:0") */
        char precision[8];        /* f32, bf16, f16 */
        bool recompute;           /* activation checkpointing of the NAT layers */
        int replicas;             /* CPU data-parallel copies of the model (train_replicas.h) */
    } train;
    struct {
        char dir[NAT_CFG_STR]; /* run directory; "" = runs/<config name>-<date>-<time> */
        int print_every;       /* progress lines when not on a terminal, in steps */
        int csv_every;         /* rows of train_log.csv, in steps */
    } log;
    char source[NAT_CFG_STR]; /* the file it came from ("" for defaults only) */
    uint8_t set[128];         /* per key (nat_config_key index): given in the file or by --set */
} nat_config;

/* The defaults of every key. */
void nat_config_defaults(nat_config *c);
/* Reads `path` over the current values of c. Errors: a missing or unreadable file (NAT_ERR_IO, naming
 * it), and NAT_ERR_FORMAT "path:line: ..." for an unknown section or key, a duplicate key, a bad value,
 * a syntax error. */
nat_status nat_config_load(nat_config *c, const char *path);
/* Parses INI text (errors name `name` as the file). */
nat_status nat_config_parse_string(nat_config *c, const char *text, const char *name);
/* Applies one override "section.key=value". */
nat_status nat_config_set(nat_config *c, const char *assignment);
/* Fills the variant's values into the model keys not given, and checks what single keys cannot:
 * heads and depths of one length, dilations matching depths, a data.root where the format needs one.
 * Messages name the keys (and the file). Idempotent. */
nat_status nat_config_resolve(nat_config *c);
/* The model description of a resolved config, for a dataset of in_chans channels and `classes` classes
 * at img_size (the config's data.img_size, resolved by the caller). */
nat_status nat_config_model_desc(const nat_config *c, int in_chans, int classes, int img_size, nat_model_desc *out);
/* The whole config as INI text, every key with its value; malloc'ed, owned by the caller (NULL when out
 * of memory). Parsing it back gives the same config. */
char *nat_config_to_string(const nat_config *c);
/* Prints the keys whose values differ between a and b ("section.key: A -> B"); returns how many. */
int nat_config_diff(const nat_config *a, const nat_config *b, FILE *out);

/* "cpu", "cuda" (cuda:0) or "cuda:N" -> *out; false for anything else. */
bool nat_config_parse_device(const char *s, nat_device *out);
/* train.device and train.precision as values. Whether the device exists is the tools' check
 * (train/train_device.h), not the parser's: a config stays valid on a machine without a GPU. */
nat_device nat_config_device(const nat_config *c);
nat_precision nat_config_precision(const nat_config *c);

/* The key table, for listings and tests: `section.key`, the default as text and a one-line description. */
typedef struct nat_config_key_info {
    const char *section, *key, *default_text, *doc;
} nat_config_key_info;
int nat_config_key_count(void);
nat_config_key_info nat_config_key(int i);
/* Prints every key with its default and description, section by section. */
void nat_config_print_keys(FILE *out);

#endif
