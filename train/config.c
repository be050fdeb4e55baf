/* train/config.c — see train/train.h (section config). One table describes every key (section, name, type, place in
 * nat_config, range, default, one-line doc): defaults, parsing, printing, diffs and the key listing all
 * come from it, so a new key is one line here plus its row in docs/configs.md (a test checks that).
 *
 * libinih does the INI syntax. Its handler is not told the line number, so the text is fed to it through
 * ini_parse_stream with a reader that counts lines: when the handler runs, the reader has just delivered
 * the line of that key. The reader also checks [section] headers, which reach no handler call when the
 * section is empty.
 *
 * inih reads a line into a fixed buffer (INI_MAX_LINE, 200 bytes in Debian's build) and parses what does
 * not fit as a new line, so a long comment could set a key. The reader therefore never hands it more
 * than fits: a longer comment goes over as a bare ";", and a longer "key = value" as "key =" with the
 * value kept aside for the handler (which strips an inline comment and blanks as inih would). Before
 * parsing, the text is checked to be UTF-8 (a config is text; other bytes are an error naming the line),
 * and nat_config_load refuses a NUL byte, which would end the C string early and drop the rest. */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h> /* ini_parse_stream */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h> /* strcasecmp */
#include <sys/stat.h>

#include "nat/data.h"
#include "nat/safetensors.h" /* nat_utf8_invalid_at */

typedef enum ktype { T_INT, T_I64, T_U64, T_FLOAT, T_BOOL, T_STR, T_ENUM, T_INTS, T_FLOATS, T_DEVICE } ktype;

typedef struct key_def {
    const char *section, *key;
    ktype type;
    size_t off, size; /* place in nat_config; size of a string field */
    double lo, hi;    /* inclusive range (of every element of a list) */
    bool hi_open;     /* hi itself is excluded */
    const char *choices; /* T_ENUM: "a|b|c"; T_INT: the allowed values, or NULL for the whole range */
    const char *def;
    const char *doc;
} key_def;

#define OFF(f) offsetof(nat_config, f), sizeof(((nat_config *)0)->f)
#define BIG 1e18
#define VARIANTS "nat_mini|nat_tiny|nat_small|nat_base|dinat_mini|dinat_tiny|dinat_small|dinat_base"

static const key_def keys[] = {
    /* [model] */
    {"model", "variant", T_ENUM, OFF(model.variant), 0, 0, false, VARIANTS, "nat_mini",
     "published network whose values the shape keys below default to"},
    {"model", "name", T_STR, OFF(model.name), 0, 0, false, NULL, "", "label in logs and checkpoints; empty = the variant's name"},
    {"model", "embed_dim", T_INT, OFF(model.embed_dim), 2, 4096, false, NULL, "64", "channels C of level 0 (even); default: the variant's"},
    {"model", "depths", T_INTS, OFF(model.depths), 1, NAT_MODEL_MAX_DEPTH, false, NULL, "3,4,6,5",
     "NAT layers per level; the list's length (1-4) is the number of levels; default: the variant's"},
    {"model", "heads", T_INTS, OFF(model.heads), 1, 1024, false, NULL, "2,4,8,16",
     "attention heads per level (as many as depths); default: the variant's, cut to the levels"},
    {"model", "kernel_size", T_INT, OFF(model.kernel_size), 3, 63, false, NULL, "7", "neighbourhood size (odd)"},
    {"model", "dilations", T_STR, OFF(model.dilations), 0, 0, false, NULL, "",
     "per-layer dilations, levels separated by '/', e.g. 1,8,1/1,4/...; empty = all 1 (DiNAT variants: theirs)"},
    {"model", "mlp_ratio", T_FLOAT, OFF(model.mlp_ratio), 1e-3, 64, false, NULL, "3", "Mlp hidden = ratio x dim; default: the variant's"},
    {"model", "drop_path", T_FLOAT, OFF(model.drop_path), 0, 1, true, NULL, "0.2",
     "stochastic depth of the last layer (rising linearly from 0); default: the variant's"},
    {"model", "layer_scale", T_FLOAT, OFF(model.layer_scale), 0, 1e3, false, NULL, "0",
     "initial layer-scale gamma; 0 = off; default: the variant's"},
    {"model", "qkv_bias", T_BOOL, OFF(model.qkv_bias), 0, 0, false, NULL, "true", "bias of the qkv projection"},
    {"model", "qk_scale", T_FLOAT, OFF(model.qk_scale), 0, 1e3, false, NULL, "0", "attention scale; 0 = head_dim^-0.5"},
    {"model", "drop", T_FLOAT, OFF(model.drop), 0, 1, true, NULL, "0", "dropout after the tokenizer, NA projection and Mlp"},
    {"model", "attn_drop", T_FLOAT, OFF(model.attn_drop), 0, 1, true, NULL, "0", "dropout of the attention weights"},
    {"model", "patch_stride", T_INT, OFF(model.patch_stride), 2, 4, false, "4|2", "4",
     "tokenizer stride: 4 = two stride-2 convs (NAT's), 2 = second conv stride 1 (small images)"},
    /* [data] */
    {"data", "format", T_ENUM, OFF(data.format), 0, 0, false, "fashion-mnist|mnist|cifar10|cifar100|cifar100-coarse|folder",
     "fashion-mnist", "dataset reader (docs/data.md)"},
    {"data", "root", T_STR, OFF(data.root), 0, 0, false, NULL, "",
     "dataset directory; empty = " NAT_FASHION_MNIST_DIR " for fashion-mnist, required for the others"},
    {"data", "img_size", T_INT, OFF(data.img_size), 0, 4096, false, NULL, "0",
     "training and evaluation resolution; 0 = the dataset's own (folders: 224)"},
    {"data", "crop_pct", T_FLOAT, OFF(data.crop_pct), 0.05, 1, false, NULL, "0.875",
     "folders, evaluation: resize the shorter side to img_size / crop_pct, then centre-crop img_size"},
    {"data", "interpolation", T_ENUM, OFF(data.interpolation), 0, 0, false, "bilinear|bicubic", "bilinear",
     "filter of every resize and random_resized_crop: PIL's bilinear, or PIL's bicubic (timm's NAT/DiNAT; stb_image_resize's Catmull-Rom)"},
    {"data", "train_limit", T_I64, OFF(data.train_limit), 0, BIG, false, NULL, "0", "use only the first N training samples; 0 = all"},
    {"data", "test_limit", T_I64, OFF(data.test_limit), 0, BIG, false, NULL, "0", "use only the first N test samples; 0 = all"},
    {"data", "workers", T_INT, OFF(data.workers), 0, 256, false, NULL, "2", "loader threads; 0 = build batches in the training thread"},
    {"data", "mean", T_FLOATS, OFF(data.mean), -1e3, 1e3, false, NULL, "",
     "normalisation mean per channel; empty = the dataset's usual constants"},
    {"data", "std", T_FLOATS, OFF(data.std), 1e-6, 1e3, false, NULL, "", "normalisation std per channel; empty = the dataset's usual constants"},
    {"data", "strict", T_BOOL, OFF(data.strict), 0, 0, false, NULL, "false",
     "an unreadable or corrupt image stops the run instead of being skipped with a warning"},
    {"data", "max_pixels", T_I64, OFF(data.max_pixels), 1, BIG, false, NULL, "67108864",
     "largest image (width x height, read from its header before decoding) an image folder decodes; larger ones are skipped as corrupt (strict: an error)"},
    /* [aug] */
    {"aug", "crop", T_ENUM, OFF(aug.crop), 0, 0, false, "random_crop|random_resized_crop|none", "random_crop",
     "training crop: pad + random window, torchvision's RandomResizedCrop, or none (folders need a crop)"},
    {"aug", "padding", T_INT, OFF(aug.padding), 0, 1024, false, NULL, "4", "random_crop: zero padding on each side"},
    {"aug", "scale_min", T_FLOAT, OFF(aug.scale_min), 1e-3, 1, false, NULL, "0.08", "random_resized_crop: smallest area fraction"},
    {"aug", "hflip", T_FLOAT, OFF(aug.hflip), 0, 1, false, NULL, "0.5", "probability of a horizontal flip"},
    {"aug", "erasing", T_FLOAT, OFF(aug.erasing), 0, 1, false, NULL, "0", "random-erasing probability (after normalisation)"},
    {"aug", "mixup", T_FLOAT, OFF(aug.mixup), 0, 100, false, NULL, "0", "mixup Beta alpha; 0 = off"},
    {"aug", "cutmix", T_FLOAT, OFF(aug.cutmix), 0, 100, false, NULL, "0", "cutmix Beta alpha; 0 = off"},
    {"aug", "mixup_prob", T_FLOAT, OFF(aug.mixup_prob), 0, 1, false, NULL, "1", "probability that a batch is mixed at all"},
    {"aug", "switch_prob", T_FLOAT, OFF(aug.switch_prob), 0, 1, false, NULL, "0.5", "with both on: probability of cutmix rather than mixup"},
    {"aug", "label_smoothing", T_FLOAT, OFF(aug.label_smoothing), 0, 1, true, NULL, "0.1", "label smoothing epsilon"},
    /* [optim] */
    {"optim", "name", T_ENUM, OFF(optim.name), 0, 0, false, "adamw|sgd", "adamw", "optimizer"},
    {"optim", "lr", T_FLOAT, OFF(optim.lr), 0, 100, false, NULL, "0.001", "peak learning rate (after warm-up)"},
    {"optim", "lr_batch", T_INT, OFF(optim.lr_batch), 0, 1 << 24, false, NULL, "0",
     "> 0: lr is for this many images per step and scales linearly with batch_size x accum_steps"},
    {"optim", "min_lr", T_FLOAT, OFF(optim.min_lr), 0, 100, false, NULL, "1e-05", "end of the cosine decay"},
    {"optim", "warmup_lr", T_FLOAT, OFF(optim.warmup_lr), 0, 100, false, NULL, "1e-06", "start of the linear warm-up"},
    {"optim", "warmup_epochs", T_FLOAT, OFF(optim.warmup_epochs), 0, 1e6, false, NULL, "0",
     "linear warm-up length in epochs (per-step increments, fractions allowed)"},
    {"optim", "weight_decay", T_FLOAT, OFF(optim.weight_decay), 0, 10, false, NULL, "0.05",
     "decay of weights; never of biases, norms, rpb or layer-scale gamma"},
    {"optim", "momentum", T_FLOAT, OFF(optim.momentum), 0, 1, true, NULL, "0.9", "sgd: momentum"},
    {"optim", "nesterov", T_BOOL, OFF(optim.nesterov), 0, 0, false, NULL, "false", "sgd: Nesterov momentum"},
    {"optim", "beta1", T_FLOAT, OFF(optim.beta1), 0, 1, true, NULL, "0.9", "adamw: beta1"},
    {"optim", "beta2", T_FLOAT, OFF(optim.beta2), 0, 1, true, NULL, "0.999", "adamw: beta2"},
    {"optim", "eps", T_FLOAT, OFF(optim.eps), 0, 1, false, NULL, "1e-08", "adamw: epsilon"},
    {"optim", "clip_grad", T_FLOAT, OFF(optim.clip_grad), 0, 1e9, false, NULL, "0", "largest global gradient L2 norm; 0 = no clipping"},
    /* [train] */
    {"train", "epochs", T_INT, OFF(train.epochs), 1, 1 << 20, false, NULL, "10", "passes over the training set"},
    {"train", "batch_size", T_INT, OFF(train.batch_size), 1, 1 << 20, false, NULL, "128", "images per micro-batch"},
    {"train", "accum_steps", T_INT, OFF(train.accum_steps), 1, 1 << 16, false, NULL, "1",
     "micro-batches whose gradients add up to one optimizer step"},
    {"train", "max_steps", T_I64, OFF(train.max_steps), 0, BIG, false, NULL, "0",
     "stop after this many optimizer steps (the schedule still spans all epochs); 0 = all"},
    {"train", "seed", T_U64, OFF(train.seed), 0, 0, false, NULL, "0", "seed of the weights, data order, augmentation and drop-path"},
    {"train", "threads", T_INT, OFF(train.threads), 0, 1024, false, NULL, "0", "OpenMP threads; 0 = OMP_NUM_THREADS or all cores"},
    {"train", "ema", T_BOOL, OFF(train.ema), 0, 0, false, NULL, "false", "keep an exponential moving average of the weights (evaluated too)"},
    {"train", "ema_decay", T_FLOAT, OFF(train.ema_decay), 0, 1, true, NULL, "0.9998",
     "EMA decay per optimizer step (min(decay, (1+t)/(10+t)) early on)"},
    {"train", "eval_every", T_INT, OFF(train.eval_every), 0, 1 << 20, false, NULL, "1", "evaluate every N epochs; 0 = only at the end"},
    {"train", "eval_batch_size", T_INT, OFF(train.eval_batch_size), 1, 1 << 20, false, NULL, "256", "images per evaluation batch"},
    {"train", "checkpoint_every", T_I64, OFF(train.checkpoint_every), 0, BIG, false, NULL, "1000",
     "write a checkpoint every N optimizer steps; 0 = only at the end (and on Ctrl-C)"},
    {"train", "keep_checkpoints", T_INT, OFF(train.keep_checkpoints), 0, 1 << 20, false, NULL, "3", "how many recent checkpoints to keep; 0 = all"},
    {"train", "device", T_DEVICE, OFF(train.device), 0, 0, false, NULL, "cpu",
     "where the model trains and evaluates: cpu, cuda (= cuda:0) or cuda:N; no fallback to the CPU"},
    {"train", "precision", T_ENUM, OFF(train.precision), 0, 0, false, "f32|bf16|f16", "f32",
     "autocast of GEMMs, convolutions and NA: f32, bf16, or f16 (with dynamic loss scaling); weights stay f32"},
    {"train", "replicas", T_INT, OFF(train.replicas), 1, 16, false, NULL, "1",
     "CPU data parallelism: each micro-batch is split over N copies of the model, one thread each (for networks "
     "too small to keep several OpenMP threads busy); gradients summed in a fixed order"},
    {"train", "dist_timeout", T_FLOAT, OFF(train.dist_timeout), 1, 1e6, false, NULL, "300",
     "multi-process runs (mpirun, RANK/WORLD_SIZE): seconds a rank waits for the others before it names the ranks "
     "that did not answer and aborts the job"},
    {"train", "allreduce_dtype", T_ENUM, OFF(train.allreduce_dtype), 0, 0, false, "f32|bf16", "f32",
     "multi-GPU runs (NCCL): the gradients' type on the wire; bf16 halves the traffic (CPU ranks always send f32)"},
    {"train", "recompute", T_BOOL, OFF(train.recompute), 0, 0, false, NULL, "false",
     "activation checkpointing: keep each layer's input only and recompute the layer in the backward (far less "
     "memory, 25-55% more time per step on NAT-Mini at 224², the same results)"},
    /* [log] */
    {"log", "dir", T_STR, OFF(log.dir), 0, 0, false, NULL, "", "run directory; empty = runs/<config name>-<date>-<time>"},
    {"log", "print_every", T_INT, OFF(log.print_every), 1, 1 << 30, false, NULL, "50", "progress lines every N steps when not on a terminal"},
    {"log", "csv_every", T_INT, OFF(log.csv_every), 1, 1 << 30, false, NULL, "1", "a train_log.csv row every N steps"},
};
#define N_KEYS ((int)(sizeof keys / sizeof *keys))
static const char *const sections[] = {"model", "data", "aug", "optim", "train", "log"};
#define N_SECTIONS 6

_Static_assert(N_KEYS <= 128, "nat_config.set[] is too small");

int nat_config_key_count(void) { return N_KEYS; }

bool nat_config_parse_device(const char *s, nat_device *out)
{
    if (!strcmp(s, "cpu")) {
        *out = NAT_CPU;
        return true;
    }
    if (strncmp(s, "cuda", 4))
        return false;
    int index = 0;
    if (s[4] == ':') {
        char *end;
        errno = 0;
        long v = strtol(s + 5, &end, 10);
        if (end == s + 5 || *end || errno || v < 0 || v > 1023 || !isdigit((unsigned char)s[5]))
            return false;
        index = (int)v;
    } else if (s[4]) {
        return false;
    }
    *out = (nat_device){NAT_DEV_CUDA, index};
    return true;
}

nat_device nat_config_device(const nat_config *c)
{
    nat_device d = NAT_CPU;
    if (!nat_config_parse_device(c->train.device, &d))
        d = NAT_CPU; /* not reached: the value was checked when it was set */
    return d;
}

nat_precision nat_config_precision(const nat_config *c)
{
    return !strcmp(c->train.precision, "bf16") ? NAT_PREC_BF16 : !strcmp(c->train.precision, "f16") ? NAT_PREC_F16
                                                                                                  : NAT_PREC_F32;
}

nat_config_key_info nat_config_key(int i)
{
    nat_config_key_info r = {0};
    if (i >= 0 && i < N_KEYS)
        r = (nat_config_key_info){keys[i].section, keys[i].key, keys[i].def, keys[i].doc};
    return r;
}

static int find_key(const char *section, const char *key)
{
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].key, key))
            return i;
    return -1;
}

static bool known_section(const char *s)
{
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(sections[i], s))
            return true;
    return false;
}

/* ---- values ---- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

static void *field(nat_config *c, const key_def *k) { return (char *)c + k->off; }
static const void *cfield(const nat_config *c, const key_def *k) { return (const char *)c + k->off; }

static bool in_range(const key_def *k, double v) { return v >= k->lo && (k->hi_open ? v < k->hi : v <= k->hi); }

static void range_text(const key_def *k, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%g, %g%s", "[", k->lo, k->hi, k->hi_open ? ")" : "]");
}

/* Parses one number of a key's type; *err gets a message (without location) on failure. */
static bool parse_number(const key_def *k, const char *s, bool integer, double *out, char *err, size_t cap)
{
    char *end;
    errno = 0;
    double v;
    if (integer) {
        long long x = strtoll(s, &end, 10);
        v = (double)x;
    } else {
        v = strtod(s, &end);
    }
    if (end == s || *end || errno == ERANGE || !isfinite(v)) {
        snprintf(err, cap, "'%s' is not %s", s, integer ? "an integer" : "a number");
        return false;
    }
    if (!in_range(k, v)) {
        char r[64];
        range_text(k, r, sizeof r);
        snprintf(err, cap, "%s is out of range %s", s, r);
        return false;
    }
    *out = v;
    return true;
}

/* Whether s is one of "a|b|c". */
static bool in_choices(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, s, n))
            return true;
        p += len + (bar ? 1 : 0);
    }
    return false;
}

/* Sets key k of c from text; false with a message in err. */
static bool set_value(nat_config *c, const key_def *k, const char *text, char *err, size_t cap)
{
    char buf[NAT_CFG_STR + 8];
    if (strlen(text) >= sizeof buf) {
        snprintf(err, cap, "value is too long (%zu characters)", strlen(text));
        return false;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *s = trim(buf);
    double v;
    switch (k->type) {
    case T_INT:
        if (!parse_number(k, s, true, &v, err, cap))
            return false;
        if (k->choices) {
            char canon[32];
            snprintf(canon, sizeof canon, "%d", (int)v);
            if (!in_choices(k->choices, canon)) {
                snprintf(err, cap, "%s is not one of %s", s, k->choices);
                return false;
            }
        }
        *(int *)field(c, k) = (int)v;
        return true;
    case T_I64:
        if (!parse_number(k, s, true, &v, err, cap))
            return false;
        *(int64_t *)field(c, k) = strtoll(s, NULL, 10);
        return true;
    case T_U64: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (end == s || *end || errno || s[0] == '-') {
            snprintf(err, cap, "'%s' is not a non-negative integer", s);
            return false;
        }
        *(uint64_t *)field(c, k) = (uint64_t)x;
        return true;
    }
    case T_FLOAT:
        if (!parse_number(k, s, false, &v, err, cap))
            return false;
        *(float *)field(c, k) = (float)v;
        return true;
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
                *(bool *)field(c, k) = !strcasecmp(s, yes[i]);
                return true;
            }
        }
        snprintf(err, cap, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", s);
        return false;
    }
    case T_STR:
        if (strlen(s) >= k->size) {
            snprintf(err, cap, "value is too long (%zu characters, at most %zu)", strlen(s), k->size - 1);
            return false;
        }
        memcpy(field(c, k), s, strlen(s) + 1);
        return true;
    case T_DEVICE: {
        nat_device d;
        if (!nat_config_parse_device(s, &d)) {
            snprintf(err, cap, "'%s' is not a device (cpu, cuda or cuda:N)", s);
            return false;
        }
        /* Stored canonically: "cuda" reads back as "cuda:0", so diffs and checkpoints agree. */
        if (d.kind == NAT_DEV_CPU)
            snprintf(field(c, k), k->size, "cpu");
        else
            snprintf(field(c, k), k->size, "cuda:%d", d.index);
        return true;
    }
    case T_ENUM:
        if (!in_choices(k->choices, s) || strlen(s) >= k->size) {
            snprintf(err, cap, "'%s' is not one of %s", s, k->choices);
            return false;
        }
        memcpy(field(c, k), s, strlen(s) + 1);
        return true;
    case T_INTS:
    case T_FLOATS: {
        bool ints = k->type == T_INTS;
        int n = 0;
        float fv[NAT_CFG_LIST];
        int iv[NAT_CFG_LIST];
        if (*s) {
            for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                tok = trim(tok);
                if (n == NAT_CFG_LIST) {
                    snprintf(err, cap, "more than %d values", NAT_CFG_LIST);
                    return false;
                }
                if (!parse_number(k, tok, ints, &v, err, cap))
                    return false;
                iv[n] = (int)v;
                fv[n++] = (float)v;
            }
        }
        if (ints && n == 0) {
            snprintf(err, cap, "needs 1 to %d comma-separated integers", NAT_CFG_LIST);
            return false;
        }
        if (ints) {
            nat_cfg_ints *l = field(c, k);
            l->n = n;
            memcpy(l->v, iv, sizeof iv);
        } else {
            nat_cfg_floats *l = field(c, k);
            l->n = n;
            memcpy(l->v, fv, sizeof fv);
        }
        return true;
    }
    }
    return false;
}

/* Shortest text that reads back as the same float. */
static void format_float(float f, char *buf, size_t cap)
{
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, cap, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f)
            return;
    }
}

static void format_value(const nat_config *c, const key_def *k, char *buf, size_t cap)
{
    switch (k->type) {
    case T_INT:
        snprintf(buf, cap, "%d", *(const int *)cfield(c, k));
        return;
    case T_I64:
        snprintf(buf, cap, "%lld", (long long)*(const int64_t *)cfield(c, k));
        return;
    case T_U64:
        snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)cfield(c, k));
        return;
    case T_FLOAT:
        format_float(*(const float *)cfield(c, k), buf, cap);
        return;
    case T_BOOL:
        snprintf(buf, cap, "%s", *(const bool *)cfield(c, k) ? "true" : "false");
        return;
    case T_STR:
        snprintf(buf, cap, "%s", (const char *)cfield(c, k));
        return;
    case T_ENUM:
    case T_DEVICE:
        snprintf(buf, cap, "%s", (const char *)cfield(c, k));
        return;
    case T_INTS:
    case T_FLOATS: {
        size_t at = 0;
        buf[0] = 0;
        int n = k->type == T_INTS ? ((const nat_cfg_ints *)cfield(c, k))->n : ((const nat_cfg_floats *)cfield(c, k))->n;
        for (int i = 0; i < n && at < cap; i++) {
            char one[32];
            if (k->type == T_INTS)
                snprintf(one, sizeof one, "%d", ((const nat_cfg_ints *)cfield(c, k))->v[i]);
            else
                format_float(((const nat_cfg_floats *)cfield(c, k))->v[i], one, sizeof one);
            at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? "," : "", one);
        }
        return;
    }
    }
}

void nat_config_defaults(nat_config *c)
{
    memset(c, 0, sizeof *c);
    char err[256];
    for (int i = 0; i < N_KEYS; i++) {
        bool ok = set_value(c, &keys[i], keys[i].def, err, sizeof err);
        (void)ok; /* the table's defaults are valid (tests/test_config.c checks them) */
    }
}

/* ---- parsing ---- */

typedef struct parse_ctx {
    nat_config *c;
    const char *name; /* file name for messages */
    const char *text;
    size_t pos;
    int line;         /* line of the chunk the reader delivered last */
    bool at_line_start;
    uint8_t seen[N_KEYS];
    int err_line;     /* first error of ours, 0 = none */
    char err[768];
    int long_line;    /* the line whose value is long_value (too long for inih's buffer); 0 = none */
    char *long_value; /* malloc'ed raw text after the '=' or ':' of that line */
} parse_ctx;

static void fail_at(parse_ctx *p, int line, const char *fmt, const char *a, const char *b, const char *c)
{
    if (p->err_line)
        return;
    p->err_line = line;
    char msg[600];
    snprintf(msg, sizeof msg, fmt, a, b, c);
    snprintf(p->err, sizeof p->err, "%s:%d: %s", p->name, line, msg);
}

/* A line too long for inih's buffer of num bytes (starting at text, len bytes without the newline) goes
 * over shortened into str: see the file comment. */
static void shorten_long_line(parse_ctx *p, const char *text, size_t len, char *str, int num)
{
    snprintf(str, (size_t)num, ";\n"); /* a comment, or harmless filler after an error */
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t'))
        i++;
    if (i < len && strchr(INI_START_COMMENT_PREFIXES, text[i]))
        return;
    /* The separator, as inih finds it: the first '=' or ':' before an inline comment (";" after a blank). */
    size_t sep = i;
    while (sep < len && text[sep] != '=' && text[sep] != ':' &&
           !(text[sep] == ';' && sep > 0 && isspace((unsigned char)text[sep - 1])))
        sep++;
    if (i == len || text[i] == '[' || sep >= len || text[sep] == ';' || sep + 3 > (size_t)num) {
        char n[24], head[48];
        snprintf(n, sizeof n, "%zu", len);
        snprintf(head, sizeof head, "%.40s", text + i);
        fail_at(p, p->line, "a line of %s characters that is not 'key = value' with a short key ('%s...')%s", n, head,
                "");
        return;
    }
    free(p->long_value);
    if (!(p->long_value = malloc(len - sep))) {
        fail_at(p, p->line, "out of memory for a long line%s%s%s", "", "", "");
        return;
    }
    memcpy(p->long_value, text + sep + 1, len - sep - 1);
    p->long_value[len - sep - 1] = 0;
    p->long_line = p->line;
    snprintf(str, (size_t)num, "%.*s\n", (int)(sep + 1), text);
}

/* fgets over the text, counting lines and checking section headers. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *p = stream;
    if (!p->text[p->pos] || num < 2)
        return NULL;
    if (p->at_line_start)
        p->line++;
    const char *line = p->text + p->pos, *nl = strchr(line, '\n');
    size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
    if (line_len + 2 > (size_t)num) { /* with its newline and NUL it does not fit */
        p->pos += line_len + (nl ? 1 : 0);
        p->at_line_start = true;
        shorten_long_line(p, line, line_len, str, num);
        return str;
    }
    int n = 0;
    while (n < num - 1 && p->text[p->pos]) {
        char ch = p->text[p->pos++];
        str[n++] = ch;
        if (ch == '\n')
            break;
    }
    str[n] = 0;
    p->at_line_start = n > 0 && str[n - 1] == '\n';
    /* A section header on a fresh line: check the name. */
    const char *s = str;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close) {
            char sec[64];
            size_t len = (size_t)(close - s - 1);
            snprintf(sec, sizeof sec, "%.*s", (int)(len < sizeof sec ? len : sizeof sec - 1), s + 1);
            char *t = trim(sec);
            if (!known_section(t))
                fail_at(p, p->line, "unknown section [%s] (sections: [model] [data] [aug] [optim] [train] [log])%s%s", t, "",
                        "");
        }
    }
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *p = user;
    if (!section[0]) {
        fail_at(p, p->line, "'%s' is outside any [section]%s%s", name, "", "");
        return 0;
    }
    if (!known_section(section))
        return 1; /* reported by the reader at the header */
    int k = find_key(section, name);
    if (k < 0) {
        fail_at(p, p->line, "unknown key '%s' in [%s]%s", name, section, "");
        return 0;
    }
    if (p->seen[k]) {
        fail_at(p, p->line, "%s.%s is set twice%s (an indented line continues the previous value)", section, name, "");
        return 0;
    }
    p->seen[k] = 1;
    char err[400];
    if (p->long_line == p->line && p->long_value) { /* the whole value of a long line, as inih would give it */
        char *v = p->long_value;
        for (char *q = v; *q; q++)
            if (*q == ';' && q > v && isspace((unsigned char)q[-1])) {
                *q = 0;
                break;
            }
        value = trim(v);
    }
    if (!set_value(p->c, &keys[k], value, err, sizeof err)) {
        char key[96];
        snprintf(key, sizeof key, "%s.%s", section, name);
        fail_at(p, p->line, "%s: %s%s", key, err, "");
        return 0;
    }
    p->c->set[k] = 1;
    return 1;
}

/* The 1-based line of the first byte sequence of text that is not UTF-8, or 0 when all of it is. */
static int utf8_bad_line(const char *text)
{
    int64_t at = nat_utf8_invalid_at(text);
    int line = 1;
    for (int64_t i = 0; i < at; i++)
        line += text[i] == '\n';
    return at < 0 ? 0 : line;
}

nat_status nat_config_parse_string(nat_config *c, const char *text, const char *name)
{
    parse_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return nat_error(NAT_ERR_OOM, "config %s: out of memory", name);
    if (name != c->source && strlen(name) >= sizeof c->source) { /* a cut name would be a different file */
        free(p);
        return nat_error(NAT_ERR_INVALID_ARG, "config %.80s...: the path is longer than %zu characters", name,
                         sizeof c->source - 1);
    }
    if (name != c->source)
        snprintf(c->source, sizeof c->source, "%s", name);
    p->c = c;
    p->name = name;
    p->text = text;
    p->at_line_start = true;
    int bad_line = utf8_bad_line(text);
    if (bad_line) {
        free(p);
        return nat_error(NAT_ERR_FORMAT, "config %s:%d: not valid UTF-8 text (a config is UTF-8; other bytes, e.g. "
                         "Latin-1, are refused)", name, bad_line);
    }
    int r = ini_parse_stream(reader, p, handler, p);
    free(p->long_value);
    nat_status s = NAT_OK;
    if (p->err_line && (r <= 0 || p->err_line <= r))
        s = nat_error(NAT_ERR_FORMAT, "config %s", p->err);
    else if (r > 0)
        s = nat_error(NAT_ERR_FORMAT, "config %s:%d: syntax error (expected '[section]', 'key = value' or a comment)", name,
                      r);
    else if (r < 0)
        s = nat_error(NAT_ERR_OOM, "config %s: out of memory while parsing", name);
    free(p);
    return s;
}

nat_status nat_config_load(nat_config *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return nat_error(NAT_ERR_IO, "config %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) { /* fopen accepts one; fread then fails */
        fclose(f);
        return nat_error(NAT_ERR_IO, "config %s: is a directory, not a config file", path);
    }
    size_t cap = 4096, n = 0;
    char *text = malloc(cap);
    for (size_t got; text && (got = fread(text + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *t = realloc(text, cap *= 2);
            if (!t)
                free(text);
            text = t;
        }
    }
    bool rerr = ferror(f);
    fclose(f);
    if (!text)
        return nat_error(NAT_ERR_OOM, "config %s: out of memory", path);
    if (rerr) {
        free(text);
        return nat_error(NAT_ERR_IO, "config %s: read error", path);
    }
    text[n] = 0;
    const char *nul = memchr(text, 0, n);
    if (nul) { /* the text is handed on as a C string: it would end here and the rest be dropped */
        int line = 1;
        for (const char *q = text; q < nul; q++)
            line += *q == '\n';
        free(text);
        return nat_error(NAT_ERR_FORMAT, "config %s:%d: a NUL byte (a config is text)", path, line);
    }
    nat_status s = nat_config_parse_string(c, text, path);
    free(text);
    return s;
}

nat_status nat_config_set_all(nat_config *c, const char *const *assignments, int n)
{
    for (int i = 0; i < n; i++)
        NAT_TRY(nat_config_set(c, assignments[i]));
    return NAT_OK;
}

nat_status nat_config_set(nat_config *c, const char *assignment)
{
    if (nat_utf8_invalid_at(assignment) >= 0) /* as in a config file: checkpoints store the values as JSON */
        return nat_error(NAT_ERR_FORMAT, "--set %s: not valid UTF-8 text", assignment);
    const char *eq = strchr(assignment, '=');
    char key[128];
    if (!eq || (size_t)(eq - assignment) >= sizeof key)
        return nat_error(NAT_ERR_FORMAT, "--set %s: expected section.key=value", assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - assignment), assignment);
    char *k = trim(key), *dot = strchr(k, '.');
    if (!dot)
        return nat_error(NAT_ERR_FORMAT, "--set %s: expected section.key=value", assignment);
    *dot = 0;
    char *sec = trim(k), *name = trim(dot + 1);
    if (!known_section(sec))
        return nat_error(NAT_ERR_FORMAT, "--set %s: unknown section [%s] (sections: [model] [data] [aug] [optim] [train] [log])",
                         assignment, sec);
    int i = find_key(sec, name);
    if (i < 0)
        return nat_error(NAT_ERR_FORMAT, "--set %s: unknown key '%s' in [%s]", assignment, name, sec);
    char err[400];
    if (!set_value(c, &keys[i], eq + 1, err, sizeof err))
        return nat_error(NAT_ERR_FORMAT, "--set %s: %s.%s: %s", assignment, sec, name, err);
    c->set[i] = 1;
    return NAT_OK;
}

/* ---- resolution ---- */

static bool is_set(const nat_config *c, const char *section, const char *key) { return c->set[find_key(section, key)]; }

/* Parses "a,b/c,d" dilations against the depths; writes them into d. */
static nat_status parse_dilations(const nat_config *c, nat_model_desc *d)
{
    const char *s = c->model.dilations;
    for (int i = 0; i < NAT_MODEL_LEVELS; i++)
        for (int j = 0; j < NAT_MODEL_MAX_DEPTH; j++)
            d->dilations[i][j] = 0;
    if (!*s)
        return NAT_OK;
    const char *p = s;
    for (int i = 0; i < c->model.depths.n; i++) {
        int j = 0;
        for (;;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 1 || v > 1024 || j == c->model.depths.v[i])
                return nat_error(NAT_ERR_FORMAT,
                                 "config %s: model.dilations '%s' must list %d level(s) of dilations >= 1 separated by '/', as "
                                 "many per level as model.depths (%s)",
                                 c->source[0] ? c->source : "(defaults)", s, c->model.depths.n, "e.g. 1,2/1,2/1,1");
            d->dilations[i][j++] = (int)v;
            p = end;
            while (*p == ' ')
                p++;
            if (*p != ',')
                break;
            p++;
        }
        bool last = i == c->model.depths.n - 1;
        if (j != c->model.depths.v[i] || (last ? *p != 0 : *p != '/'))
            return nat_error(NAT_ERR_FORMAT,
                             "config %s: model.dilations '%s' must list %d level(s) of dilations >= 1 separated by '/', as "
                             "many per level as model.depths (%s)",
                             c->source[0] ? c->source : "(defaults)", s, c->model.depths.n, "e.g. 1,2/1,2/1,1");
        if (!last)
            p++;
    }
    return NAT_OK;
}

nat_status nat_config_resolve(nat_config *c)
{
    const char *src = c->source[0] ? c->source : "(defaults)";
    nat_model_desc v;
    NAT_TRY(nat_model_desc_variant(&v, c->model.variant, 10, 1));
    if (!c->model.name[0])
        snprintf(c->model.name, sizeof c->model.name, "%s", c->model.variant);
    if (!is_set(c, "model", "embed_dim"))
        c->model.embed_dim = v.embed_dim;
    if (!is_set(c, "model", "depths")) {
        c->model.depths.n = NAT_MODEL_LEVELS;
        memcpy(c->model.depths.v, v.depths, sizeof v.depths);
    }
    if (!is_set(c, "model", "heads")) {
        c->model.heads.n = c->model.depths.n;
        memcpy(c->model.heads.v, v.heads, sizeof v.heads);
    }
    if (!is_set(c, "model", "kernel_size"))
        c->model.kernel_size = v.kernel_size;
    if (!is_set(c, "model", "mlp_ratio"))
        c->model.mlp_ratio = v.mlp_ratio;
    if (!is_set(c, "model", "drop_path"))
        c->model.drop_path = v.drop_path_rate;
    if (!is_set(c, "model", "layer_scale"))
        c->model.layer_scale = v.layer_scale;
    if (!is_set(c, "model", "dilations") && !is_set(c, "model", "depths")) {
        /* The variant's dilations, written out when any differs from 1. */
        bool any = false;
        char buf[NAT_CFG_STR];
        size_t at = 0;
        for (int i = 0; i < NAT_MODEL_LEVELS; i++)
            for (int j = 0; j < v.depths[i]; j++) {
                int dil = nat_model_desc_dilation(&v, i, j);
                any |= dil != 1;
                at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%d", j ? "," : i ? "/" : "", dil);
            }
        snprintf(c->model.dilations, sizeof c->model.dilations, "%s", any ? buf : "");
    }
    if (c->model.heads.n != c->model.depths.n)
        return nat_error(NAT_ERR_FORMAT, "config %s: model.heads has %d value(s) but model.depths has %d (one per level)", src,
                         c->model.heads.n, c->model.depths.n);
    nat_model_desc d;
    NAT_TRY(nat_config_model_desc(c, 1, 10, c->data.img_size > 0 ? c->data.img_size : 224, &d));
    if (!c->data.root[0]) {
        if (!strcmp(c->data.format, "fashion-mnist"))
            snprintf(c->data.root, sizeof c->data.root, "%s", NAT_FASHION_MNIST_DIR);
        else if (!strcmp(c->data.format, "folder"))
            return nat_error(NAT_ERR_INVALID_ARG,
                             "config %s: data.root is not set: point it at the image folder that holds train/<class>/*.jpg and "
                             "val/<class>/*.jpg (for ImageNet, the usual ILSVRC2012 train/ and val/ folders), e.g. "
                             "--set data.root=/data/imagenet",
                             src);
        else
            return nat_error(NAT_ERR_INVALID_ARG, "config %s: data.root is not set: the %s files' directory is needed", src,
                             c->data.format);
    }
    if (!strcmp(c->data.format, "folder") && c->data.img_size == 0)
        c->data.img_size = 224;
    if (c->data.mean.n != c->data.std.n)
        return nat_error(NAT_ERR_FORMAT, "config %s: data.mean has %d value(s) but data.std has %d", src, c->data.mean.n,
                         c->data.std.n);
    if (!strcmp(c->optim.name, "sgd") && c->optim.nesterov && c->optim.momentum <= 0.0f)
        return nat_error(NAT_ERR_FORMAT, "config %s: optim.nesterov needs optim.momentum > 0", src);
    if (c->optim.min_lr > c->optim.lr)
        return nat_error(NAT_ERR_FORMAT, "config %s: optim.min_lr %g is above optim.lr %g", src, (double)c->optim.min_lr,
                         (double)c->optim.lr);
    return NAT_OK;
}

nat_status nat_config_model_desc(const nat_config *c, int in_chans, int classes, int img_size, nat_model_desc *out)
{
    nat_model_desc d = nat_model_desc_default();
    snprintf(d.name, sizeof d.name, "%s", c->model.name[0] ? c->model.name : c->model.variant);
    d.in_chans = in_chans;
    d.num_classes = classes;
    d.img_size = img_size;
    d.embed_dim = c->model.embed_dim;
    d.num_levels = c->model.depths.n;
    for (int i = 0; i < NAT_MODEL_LEVELS; i++) {
        d.depths[i] = i < c->model.depths.n ? c->model.depths.v[i] : 0;
        d.heads[i] = i < c->model.heads.n ? c->model.heads.v[i] : 0;
    }
    d.kernel_size = c->model.kernel_size;
    d.mlp_ratio = c->model.mlp_ratio;
    d.drop_path_rate = c->model.drop_path;
    d.layer_scale = c->model.layer_scale;
    d.qkv_bias = c->model.qkv_bias;
    d.qk_scale = c->model.qk_scale;
    d.drop = c->model.drop;
    d.attn_drop = c->model.attn_drop;
    d.patch_stride = c->model.patch_stride;
    d.seed = c->train.seed;
    if (c->model.heads.n != c->model.depths.n)
        return nat_error(NAT_ERR_FORMAT, "config %s: model.heads has %d value(s) but model.depths has %d (one per level)",
                         c->source[0] ? c->source : "(defaults)", c->model.heads.n, c->model.depths.n);
    NAT_TRY(parse_dilations(c, &d));
    nat_status s = nat_model_desc_check(&d);
    if (s != NAT_OK)
        return nat_error_context(s, "config %s: [model]", c->source[0] ? c->source : "(defaults)");
    *out = d;
    return NAT_OK;
}

/* ---- printing ---- */

char *nat_config_to_string(const nat_config *c)
{
    size_t cap = 8192, at = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = 0;
    for (int s = 0; s < N_SECTIONS; s++) {
        at += (size_t)snprintf(out + at, cap - at, "%s[%s]\n", s ? "\n" : "", sections[s]);
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(keys[i].section, sections[s]))
                continue;
            char v[NAT_CFG_STR + 64];
            format_value(c, &keys[i], v, sizeof v);
            size_t need = strlen(keys[i].key) + strlen(v) + 8;
            if (at + need >= cap) {
                char *t = realloc(out, cap = 2 * cap + need);
                if (!t) {
                    free(out);
                    return NULL;
                }
                out = t;
            }
            at += (size_t)snprintf(out + at, cap - at, "%s = %s\n", keys[i].key, v);
        }
    }
    return out;
}

int nat_config_diff(const nat_config *a, const nat_config *b, FILE *out)
{
    int n = 0;
    for (int i = 0; i < N_KEYS; i++) {
        char va[NAT_CFG_STR + 64], vb[NAT_CFG_STR + 64];
        format_value(a, &keys[i], va, sizeof va);
        format_value(b, &keys[i], vb, sizeof vb);
        if (strcmp(va, vb)) {
            if (out)
                fprintf(out, "  %s.%s: %s -> %s\n", keys[i].section, keys[i].key, va[0] ? va : "(empty)",
                        vb[0] ? vb : "(empty)");
            n++;
        }
    }
    return n;
}

void nat_config_print_keys(FILE *out)
{
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(out, "[%s]\n", sections[s]);
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(keys[i].section, sections[s]))
                continue;
            char def[80];
            snprintf(def, sizeof def, "%s = %s", keys[i].key, keys[i].def[0] ? keys[i].def : "");
            fprintf(out, "  %-28s %s\n", def, keys[i].doc);
        }
    }
}
