/* train/train_checkpoint.h — training checkpoints: one safetensors file (written crash-safe: temporary
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
#ifndef NAT_TRAIN_CHECKPOINT_H
#define NAT_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nat/data.h"
#include "nat/model.h"
#include "nat/optim.h"
#include "nat/rng.h"
#include "train/train_ema.h"

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

#endif
