/* train/train.h — the training code behind nat-train and nat-eval (libnat_train.a), one header for all
 * of it: the INI config, progress and timing, the learning-rate schedule, signals, the OpenMP
 * environment, metrics, the weight EMA, CSV logs, datasets and loaders from a config, the device,
 * test-time augmentation, evaluation, checkpoints, CPU replicas and the training loop. Not part of
 * libnat or its installed API; tests/test_config.c, test_train.c, test_reliability.c and bench/ use it.
 * Sections follow in dependency order; the section "---- NAME:" is implemented in train/NAME.c. */
#ifndef NAT_TRAIN_TRAIN_H
#define NAT_TRAIN_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nat/autograd.h"
#include "nat/data.h"
#include "nat/model.h"
#include "nat/nat.h"
#include "nat/optim.h"
#include "nat/rng.h"
#include "nat/status.h"

/* ---- config: the training configuration of nat-train and nat-eval: a strict INI file (libinih)
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
        char interpolation[16]; /* bilinear or bicubic: every resize and random_resized_crop (timm's
                                   NAT/DiNAT: bicubic, configs/imagenet/nat_*.cfg) */
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
        int replicas;             /* CPU data-parallel copies of the model (section replicas) */
        float dist_timeout;       /* seconds a rank of a multi-process run waits for the others (train/dist.h) */
        char allreduce_dtype[8];  /* f32, bf16: NCCL's gradient type on the wire */
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
/* nat_config_set for each of n assignments in order (the tools' repeated --set); stops at the first
 * error. */
nat_status nat_config_set_all(nat_config *c, const char *const *assignments, int n);
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
 * (section device), not the parser's: a config stays valid on a machine without a GPU. */
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

/* ---- progress: the live progress line of long jobs: step/total, loss, lr, images/s, ETA.
 * On a terminal the line is redrawn in place; otherwise a plain line is printed every `every` steps. */

typedef struct nat_progress {
    FILE *out;
    bool tty;
    long total;
    int every;
    double t0, last_print;
} nat_progress;

void nat_progress_start(nat_progress *p, FILE *out, long total_steps, int every);
/* Draws the line for `step` (1-based); `epoch` < 0 leaves the epoch out. */
void nat_progress_update(nat_progress *p, long step, int epoch, double loss, double lr, double images_per_s);
/* Ends the line (newline on a terminal). */
void nat_progress_end(nat_progress *p);
/* Monotonic wall clock in seconds (training, evaluation and the benchmarks time with it). */
double nat_wall_now(void);
/* Formats seconds as "1h02m", "3m05s" or "12s". */
void nat_format_duration(double seconds, char *buf, size_t cap);

/* ---- schedule: the learning-rate schedule of nat-train: per-step linear warm-up from
 * warmup_lr to lr, then cosine decay to min_lr at the last step (timm's CosineLRScheduler with
 * t_in_epochs off, warm-up counted in optimizer steps). */

typedef struct nat_lr_schedule {
    double lr, min_lr, warmup_lr;
    int64_t warmup_steps; /* >= 0 */
    int64_t total_steps;  /* >= 1 */
} nat_lr_schedule;

/* The learning rate of optimizer step `step` (0-based: the first update uses step 0). Warm-up steps
 * t < W get warmup_lr + (lr - warmup_lr)·(t+1)/W, so the last warm-up step reaches lr; then
 * min_lr + (lr - min_lr)·(1 + cos(π·(t-W)/(T-W)))/2. Steps past the end get min_lr. */
double nat_lr_at(const nat_lr_schedule *s, int64_t step);

/* ---- signal: Ctrl-C handling of the command-line tools: SIGINT and SIGTERM set a flag that
 * the training loop polls after each step (it then writes a checkpoint and returns) and evaluation after
 * each batch (it then returns with *complete false). The handler only
 * stores the signal number and writes a one-line notice with write(2); it is reset by the first signal,
 * so a second Ctrl-C ends the process at once (checkpoint writes are crash-safe). Process-wide by
 * nature: the only global state of train/. */

/* What the first signal leads to, for the notice the handler prints: training writes a checkpoint
 * and returns, evaluation stops after the current batch and reports the part it finished. */
typedef enum { NAT_SIGNAL_CHECKPOINT, NAT_SIGNAL_STOP } nat_signal_action;
/* Installs the handlers for SIGINT and SIGTERM and clears the flag. */
void nat_train_signals_install(nat_signal_action action);
/* The flag: 0, or the number of the signal received. */
volatile sig_atomic_t *nat_train_stop_flag(void);

/* ---- env: process set-up shared by nat-train and nat-eval. */

/* Makes idle OpenMP threads sleep instead of spin: unless OMP_WAIT_POLICY is set, sets it to "passive"
 * and re-executes the program (libgomp reads it only at start-up). Spinning threads cost little on an
 * idle machine, but on a shared 2-core one a spinning thread whose partner was descheduled burns its
 * core at every barrier: a training step measured 4-10x slower with another job running, and no
 * slower than one thread with passive waiting. Call first thing in main; returns when nothing was
 * done or the re-exec failed. */
void nat_train_passive_omp(char **argv);

/* ---- metrics: classification metrics accumulated batch by batch: top-1 and top-5 accuracy,
 * mean cross-entropy (no smoothing), per-class accuracy and the confusion matrix, and their report. */

typedef struct nat_metrics {
    int classes;
    int64_t n;           /* samples seen */
    int64_t top1, top5;  /* correct within the best 1 / best min(5, classes) */
    double loss_sum;     /* Σ cross-entropy */
    int64_t *confusion;  /* [classes][classes]: row = true label, column = prediction; owned */
} nat_metrics;

nat_status nat_metrics_init(nat_metrics *m, int classes);
void nat_metrics_reset(nat_metrics *m);
void nat_metrics_free(nat_metrics *m);
/* Adds n samples: logits [n, classes] row-major, labels [n]. A sample is correct within k when fewer
 * than k other classes score >= its label's logit (ties count as wrong). Labels out of range and
 * non-finite logits are errors (NAT_ERR_INVALID_ARG; the evaluation is void, so callers stop). The
 * confusion matrix's prediction is the lowest-index class of the highest logit. */
nat_status nat_metrics_add(nat_metrics *m, const float *logits, const int32_t *labels, int64_t n);

double nat_metrics_top1(const nat_metrics *m); /* percent */
double nat_metrics_top5(const nat_metrics *m); /* percent */
double nat_metrics_loss(const nat_metrics *m);

/* Prints per-class accuracy (with the dataset's class names when ds is not NULL) and the confusion
 * matrix. */
void nat_metrics_print(const nat_metrics *m, const nat_dataset *ds, FILE *out);

/* ---- ema: an exponential moving average of a model's weights (timm's ModelEmaV3 without
 * buffers): after each optimizer step, ema = d·ema + (1-d)·w with d = min(decay, (1+t)/(10+t)) for the
 * t-th update, so a short run's average is not dominated by the random init. The average lives in a
 * second nat_model of the same description, so it is evaluated like any model. */

typedef struct nat_ema {
    nat_model *model; /* owned: the averaged weights */
    float decay;
    int64_t updates;  /* t: updates made (restored from checkpoints) */
} nat_ema;

/* Builds the average as a copy of src's weights, on src's device. */
nat_status nat_ema_init(nat_ema *e, const nat_model *src, float decay);
/* One update from src's current weights (on their device). */
nat_status nat_ema_update(nat_ema *e, const nat_model *src);
/* NULL model is ignored (a zeroed struct may be freed). */
void nat_ema_free(nat_ema *e);

/* ---- log: the CSV logs of a run directory:
 *   train_log.csv  step,epoch,loss,lr,grad_norm,images_per_s,mem_mib,peak_mib   (every log.csv_every steps)
 *   eval_log.csv   step,epoch,weights,images,top1,top5,loss,seconds           (weights: model or ema)
 * epoch is fractional (step / steps per epoch). A resumed run keeps the rows up to its checkpoint's step
 * and drops later ones (written after that checkpoint by the run that stopped), so each file reads as
 * one uninterrupted run. Rows are flushed as they are written. */

typedef struct nat_train_log {
    FILE *steps, *evals;
    char steps_path[1024], evals_path[1024]; /* for messages */
} nat_train_log;

/* Opens (creates) both files in dir. resume_step < 0: a new run (files truncated); otherwise rows of
 * train_log.csv past resume_step and of eval_log.csv past eval_keep are dropped and new rows are
 * appended. */
nat_status nat_train_log_open(nat_train_log *log, const char *dir, int64_t resume_step, int64_t eval_keep);
/* Write errors (a full disk) are returned, naming the file and the system's reason. */
nat_status nat_train_log_step(nat_train_log *log, int64_t step, double epoch, double loss, double lr, double grad_norm,
                        double images_per_s, double mem_mib, double peak_mib);
nat_status nat_train_log_eval(nat_train_log *log, int64_t step, double epoch, const char *weights, int64_t images, double top1,
                        double top5, double loss, double seconds);
nat_status nat_train_log_close(nat_train_log *log);

/* ---- data: the datasets, transforms and loaders a config describes ([data] and [aug]).
 *
 * Training: [resize to img_size when the dataset's own size differs], the crop of aug.crop (random_crop
 * with aug.padding, random_resized_crop with (aug.scale_min, 1), or for folders with `none` a resize and
 * centre crop), horizontal flip, normalisation, random erasing; batches drop the last partial one and
 * mixup/cutmix (with label smoothing folded into soft targets) when either alpha is set.
 * Evaluation: folders resize to floor(img_size / crop_pct) and centre-crop img_size (timm's eval
 * transform, nat_tf_eval_preset); fixed-size datasets are resized only when img_size differs; then
 * normalisation. Every resize uses data.interpolation. */

/* Opens the config's dataset split, cut to data.train_limit / data.test_limit samples when set. */
nat_status nat_train_open_dataset(const nat_config *c, nat_split split, nat_dataset **out);
/* Sets data.img_size to the dataset's own size where it is 0 (folders got 224 from nat_config_resolve),
 * and checks that mean/std match the channels. */
nat_status nat_train_resolve_data(nat_config *c, const nat_dataset *ds);
/* The loader of a training (train = true) or evaluation pass. ds is borrowed and must outlive it.
 * Evaluation loaders run one epoch in dataset order; reposition them with nat_loader_set_state to
 * evaluate again. */
nat_status nat_train_loader_new(const nat_config *c, const nat_dataset *ds, bool train, nat_loader **out);
/* The evaluation transforms of images of ch channels as the loader builds them: `varying` sizes (image
 * folders, or image files named on a command line: resize + centre crop by crop_pct), else a
 * fixed-size dataset whose samples are h x w (resized to img_size only when that differs). The
 * normalisation is data.mean/std, else the format's usual constants. Fills tf[0..*n), *n <= 4. */
void nat_train_eval_transforms(const nat_config *c, int ch, bool varying, int h, int w, nat_transform tf[4], int *n);
/* data.interpolation as a nat_interp. */
nat_interp nat_config_interp(const nat_config *c);

/* ---- device: the device nat-train and nat-eval run on (train.device) and the explicit copies
 * between the loader's host batches and that device.
 *
 * A CUDA device is checked once, before anything is built: a config asking for cuda on a machine (or a
 * build) without one is an error naming the key, never a silent run on the CPU. */

/* train.device of c as a usable device. NAT_ERR_UNSUPPORTED when it names CUDA and nat was built
 * without CUDA, no CUDA device is available, or the index does not exist; the message names the key,
 * its value and the config file. */
nat_status nat_train_device(const nat_config *c, nat_device *out);

/* A step tensor of ctx, on ctx's device, holding host[0 .. numel(shape)) (copied; host stays the
 * caller's). On the CPU a plain copy into step memory, so the CPU path allocates nothing new. */
nat_status nat_train_upload(nat_ctx *ctx, const float *host, int ndim, const int64_t *shape, nat_tensor **out);
/* host[0..n) = t (contiguous f32 with n elements, on any device); waits for the device. */
nat_status nat_train_download(const nat_tensor *t, float *host, int64_t n);

/* ---- tta: test-time augmentation of an evaluation: each image is classified from several views and the
 * prediction is the mean of their softmax probabilities. `flip`: the image and its mirror image (2 views);
 * `flip-shift`: those two, each also shifted by one pixel up, down, left and right (10 views). Pixels
 * shifted in are the value a zero pixel takes after normalisation, as random_crop's padding in training.
 * Views are built on the normalised batch, so every dataset and transform works unchanged. */

typedef enum nat_tta_kind { NAT_TTA_NONE = 0, NAT_TTA_FLIP, NAT_TTA_FLIP_SHIFT } nat_tta_kind;

typedef struct nat_tta {
    nat_tta_kind kind;
    float fill[NAT_TF_MAX_CHANNELS]; /* per channel: what shifts bring in (nat_train_tta_fill) */
} nat_tta;

/* "none", "flip" or "flip-shift"; anything else is NAT_ERR_INVALID_ARG naming the value. */
nat_status nat_tta_parse(const char *name, nat_tta_kind *out);
const char *nat_tta_name(nat_tta_kind k);
int nat_tta_views(nat_tta_kind k); /* 1, 2, 10 */
/* fill[c] = -mean[c] / std[c]: a zero pixel after the config's normalisation of ch channels. */
void nat_train_tta_fill(const nat_config *c, int ch, float fill[NAT_TF_MAX_CHANNELS]);
/* dst = view v (0 <= v < nat_tta_views) of the n x c x h x w batch src: for view v, the mirror image when
 * v is odd, shifted by the (v / 2)-th of (0, 0), (+1, 0), (-1, 0), (0, +1), (0, -1) as
 * dst(y, x) = view(y + dy, x + dx), t->fill outside. */
void nat_tta_view(const nat_tta *t, int v, const float *src, int64_t n, int c, int h, int w, float *dst);
/* acc[n x k] += softmax of each row of logits[n x k] (in double). */
void nat_tta_accumulate(const float *logits, int64_t n, int k, double *acc);
/* out = log(acc / views): logits whose softmax is the views' mean probability. */
void nat_tta_finish(const double *acc, int64_t n, int k, int views, float *out);

/* ---- eval: one evaluation pass of a model over an evaluation loader (section data), with
 * gradients off and dropout/drop-path off, into classification metrics. */

/* Repositions L to its first batch, runs m on every batch in ctx (recording nothing; ctx is reset after
 * each batch and its grad setting restored) and accumulates into met (reset first). tta (may be NULL:
 * none) classifies each image from its views (section tta). stop (may be NULL) is polled between
 * batches: when it is set the pass ends early and *complete is false. *seconds (may be NULL) gets the
 * wall time. */
nat_status nat_evaluate(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, const nat_tta *tta,
                        volatile sig_atomic_t *stop, double *seconds, bool *complete);
/* nat_evaluate over batches part, part + parts, part + 2·parts, ... only (0 <= part < parts): rank `part` of
 * a `parts`-process evaluation; summing the ranks' metrics gives the whole pass's. */
nat_status nat_evaluate_part(nat_model *m, nat_ctx *ctx, nat_loader *L, nat_metrics *met, const nat_tta *tta,
                             volatile sig_atomic_t *stop, int part, int parts, double *seconds, bool *complete);

/* ---- checkpoint: training checkpoints: one safetensors file (written crash-safe: temporary
 * file, fsync, rename) holding
 *   - the model's parameters under their PyTorch names, and its description as nat.* metadata
 *     (so nat_model_load / nat_model_desc_read and PyTorch read the weights directly);
 *   - the optimizer state as "optim.group<g>.param<i>.<what>" tensors;
 *   - the EMA weights, when kept, as "ema.<parameter name>";
 *   - metadata "train.*": step, optimizer step count, RNG state, loader position (seed, epoch, batch),
 *     EMA update count, images seen, elapsed seconds, best top-1, skipped steps, the f16 loss scaler's
 *     scale and clean-step count (train.loss_scale, train.loss_scale_good; only when training in f16),
 *     and the resolved config as INI text ("train.config").
 * Tensors on a CUDA device are copied to the host to be written and back to be restored; the file is
 * the same whatever the device.
 * Files are named ckpt-<step, 8 digits>.safetensors in the run directory, and last.safetensors is a
 * symbolic link to the newest. */

typedef struct nat_train_state {
    int64_t step;            /* optimizer steps done */
    nat_rng rng;             /* drop-path / dropout stream */
    nat_loader_state loader; /* the next batch to train on */
    int64_t images;          /* training images seen */
    double elapsed;          /* training seconds so far, over all runs */
    double best_top1;        /* best evaluation top-1 (percent), -1 before any */
    int64_t skipped;         /* optimizer steps skipped for a non-finite gradient */
    float loss_scale;        /* f16 training: the loss scaler's scale; 0 = no scaler (not saved) */
    int loss_scale_good;     /* f16 training: its clean steps since the last change */
} nat_train_state;

/* Writes a checkpoint to path. ema may be NULL. config_text is stored as metadata. */
nat_status nat_checkpoint_save(const char *path, const nat_model *m, const nat_optim *opt, const nat_ema *ema,
                               const nat_train_state *st, const char *config_text);
/* Restores model, optimizer (state tensors and step count), EMA (when ema is not NULL; a file without EMA
 * weights starts the average from the restored model) and state from path. Everything is checked
 * against the file's shapes; errors name the tensor and the file (after an error the objects may be partly
 * restored: do not train on). */
nat_status nat_checkpoint_load(const char *path, nat_model *m, nat_optim *opt, nat_ema *ema, nat_train_state *st);
/* Reads a checkpoint's model weights into m: its own names, or with ema the "ema." copies of a training
 * checkpoint (nat-eval --ema). */
nat_status nat_checkpoint_read_weights(nat_model *m, nat_st_file *f, bool ema);
/* The config text stored in a checkpoint (malloc'ed, owned by the caller); NAT_ERR_FORMAT when the file
 * has none (a plain weights file). */
nat_status nat_checkpoint_read_config(const char *path, char **text);
/* The config a tool starts from, before its --set overrides: the defaults, then the file `config` when
 * one is given, else the config stored in the checkpoint at `ckpt` (when not NULL). A checkpoint
 * without one is an error when `need` (resuming), else the defaults stay (a plain weights file).
 * *stored (may be NULL) says whether the checkpoint's config was used. */
nat_status nat_checkpoint_config(nat_config *cfg, const char *config, const char *ckpt, bool need, bool *stored);

/* dir/ckpt-<step>.safetensors; false (buf then holds a cut path: do not use it) when it does not fit. */
bool nat_checkpoint_path(char *buf, size_t cap, const char *dir, int64_t step);
/* Points dir/last.safetensors at `path` (atomically: a temporary link renamed over it). */
nat_status nat_checkpoint_link_last(const char *dir, const char *path);
/* Deletes all but the newest `keep` ckpt-*.safetensors of dir (keep 0: none deleted). */
nat_status nat_checkpoint_prune(const char *dir, int keep);
/* path may name a checkpoint or a run directory; a directory gives its newest ckpt-*.safetensors. A
 * result longer than cap - 1 is NAT_ERR_INVALID_ARG (never cut to another name). */
nat_status nat_checkpoint_resolve(const char *path, char *buf, size_t cap);
/* Removes the temporary files a killed run left in dir (<file>.tmp.<pid> of a checkpoint being written,
 * .last.safetensors.<pid> of last.safetensors being replaced) whose process is gone, noting each on
 * out (may be NULL). Those of a live process stay. */
nat_status nat_checkpoint_remove_stale(const char *dir, FILE *out);
/* Removes what a run writes into dir (checkpoints, last.safetensors, the CSV logs, config.cfg): an
 * explicit overwrite of an old run. Other files stay. */
nat_status nat_checkpoint_clear_run(const char *dir);

/* ---- replicas: data parallelism inside one process on the CPU (train.replicas).
 *
 * Why: a small network's ops (NAT on 28² Fashion-MNIST: 7×7 maps, C = 32) are too short for two OpenMP
 * threads to share — each op's fork/join costs as much as half its work — while two single-threaded
 * copies of the whole step run side by side at nearly twice the images/s. With N replicas a
 * micro-batch is cut into N consecutive shards; shard r runs forward, loss and backward on its own
 * model copy and context in its own thread with one OpenMP thread; the shards' losses are scaled by
 * their share of the batch, so the gradients add up to the whole batch's; replica r's gradients are
 * then added to the master's in replica order (the same bits on every run); the optimizer, EMA and
 * checkpoints see only the master. Before each micro-batch the copies take the master's weights.
 * Drop-path draws: shard 0 from the run's generator, shard r from a generator split off it per
 * micro-batch — a function of the run's state, so --resume stays exact.
 */

#define NAT_MAX_REPLICAS 16

typedef struct nat_replicas {
    int n;                                 /* 1: not in use */
    nat_model *models[NAT_MAX_REPLICAS];   /* [0] the master (borrowed), [1..n) copies */
    nat_ctx *ctxs[NAT_MAX_REPLICAS];       /* [0] the run's context (borrowed), [1..n) own */
} nat_replicas;

/* n copies of `master` (n - 1 made here) with contexts like `ctx` (CPU, same precision). n = 1: nothing
 * to do. */
nat_status nat_replicas_init(nat_replicas *R, nat_model *master, nat_ctx *ctx, int n);
void nat_replicas_free(nat_replicas *R);

/* Forward, loss and backward of one micro-batch (x [b->n, c, h, w] with labels or soft targets) split
 * over the replicas; gradients accumulate into the master's parameters, each multiplied by `mul` (loss
 * scale / accumulation steps) like a plain step's. *loss: the batch's mean loss (unscaled). The
 * contexts are reset before returning. */
nat_status nat_replicas_step(nat_replicas *R, const nat_batch *b, float label_smoothing, nat_rng *rng, float mul,
                             float *loss);

/* ---- loop: nat-train's run: from a config to a trained, evaluated and checkpointed model.
 *
 * One optimizer step = accum_steps micro-batches of batch_size images (losses scaled by 1/accum_steps,
 * gradients accumulating), global gradient-norm clipping, the scheduled learning rate, the optimizer
 * update (weight decay only on the parameters without the no_decay flag), the EMA update. An epoch is
 * floor(batches / accum_steps) steps; the loader position is a function of the step, so a run resumed
 * from a checkpoint sees exactly the batches, RNG draws and therefore the losses of a run that never
 * stopped.
 *
 * The run directory gets config.cfg (the resolved config), train_log.csv and eval_log.csv (section log),
 * and the checkpoints (section checkpoint): every train.checkpoint_every steps, at the end, and when the
 * stop flag is raised (the run then returns with `interrupted` set).
 */

typedef struct nat_dist nat_dist; /* train/dist.h */

typedef struct nat_train_opts {
    const char *resume;  /* checkpoint file or run directory to continue; NULL: a new run */
    const char *out_dir; /* run directory; NULL: log.dir, else the resumed checkpoint's directory, else
                            runs/<config file name>-<date>-<time> */
    volatile sig_atomic_t *stop; /* polled after every step and evaluation batch; NULL: never stops */
    /* Called after every optimizer step with its 1-based number and mean loss; may be NULL. */
    void (*on_step)(void *user, int64_t step, double loss);
    void *user;
    FILE *out;      /* config, summaries, evaluations; NULL: stdout */
    FILE *progress; /* the live progress line; NULL: stderr */
    bool dry_run;   /* build everything, print the config and the plan, train nothing */
    /* A new run (no resume) into a run directory that is not empty is refused, so an old run's logs and
     * checkpoints are not lost (nor taken for the new run's by pruning); overwrite deletes the old run's
     * checkpoints and logs instead (nat-train --overwrite). */
    bool overwrite;
    /* A multi-process job (train/dist.h; borrowed, may be NULL = one process): each rank trains its shard of
     * every batch, gradients are summed over the ranks in rank order, rank 0 alone writes the run directory
     * and prints (the others' out and progress are silenced), evaluation is split over the ranks. */
    nat_dist *dist;
} nat_train_opts;

typedef struct nat_train_result {
    int64_t steps, total_steps; /* steps done (over all runs) and planned */
    bool interrupted;           /* stopped by the flag; a checkpoint was written */
    bool evaluated;             /* a final evaluation ran */
    double top1, top5, loss;    /* final evaluation of the model */
    bool has_ema;
    double ema_top1, ema_top5, ema_loss;
    double best_top1;
    double seconds;      /* training time over all runs (evaluation excluded) */
    double images_per_s; /* training images per second over all runs */
    char run_dir[NAT_CFG_STR];
    char checkpoint[NAT_CFG_STR + 64]; /* the last checkpoint written */
} nat_train_result;

/* Runs the training the config describes (cfg is resolved in place: variant values, dataset size). res
 * may be NULL. */
nat_status nat_train(nat_config *cfg, const nat_train_opts *opts, nat_train_result *res);

#endif
