/* nat/model.h — the NAT / DiNAT image classifier (Hassani et al.), its variants, its analytic parameter
 * and MAC counts, and its checkpoints.
 *
 * Network (docs/design.md §3), input x [B, in_chans, H, W] (NCHW, f32):
 *   patch_embed  conv 3×3 s2 p1 (in -> C/2, bias), conv 3×3 s(patch_stride/2) p1 (C/2 -> C, bias),
 *                channels-last, LayerNorm(C); then dropout(drop). patch_stride 4 is NAT's (224² -> 56²);
 *                2 keeps small inputs (28² -> 14²) from shrinking too fast
 *   levels.i     (i = 0..L-1, L = num_levels, dim C·2^i) depths[i] NAT layers, each pre-norm:
 *                  x += drop_path(γ1 · NA(norm1(x)));  x += drop_path(γ2 · Mlp(norm2(x)))
 *                (γ only with layer_scale > 0), then for i < L-1 the downsampler: conv 3×3 s2 p1
 *                C·2^i -> C·2^(i+1) without bias (NCHW) and LayerNorm
 *   norm, global average pool, head Linear(C·2^(L-1) -> classes) -> logits [B, classes]
 * (PyTorch's NAT takes L = len(depths) the same way; the published variants have L = 4.)
 * Drop-path rates rise linearly from 0 to drop_path_rate over all layers (torch.linspace). DiNAT is the
 * same network with per-layer dilations.
 *
 * Parameter names are PyTorch's NAT state_dict keys, in its order (patch_embed.proj.0.weight, ...,
 * levels.{i}.blocks.{j}.attn.rpb, ..., head.bias); shapes are PyTorch's ([out, in] linear weights,
 * [out, in, kh, kw] conv weights), so weights move both ways through safetensors.
 *
 * The model owns its parameters (persistent f32 CPU tensors with requires_grad) and their gradients.
 * It keeps no activations: forward runs in the caller's step context. Not thread-safe; two models are
 * independent.
 */
#ifndef NAT_MODEL_H
#define NAT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "nat/autograd.h"
#include "nat/layers.h"
#include "nat/rng.h"
#include "nat/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NAT_MODEL_LEVELS 4
#define NAT_MODEL_MAX_DEPTH 64 /* layers per level */

/* A network, as a plain value. Start from nat_model_desc_default() or a variant and change fields. */
typedef struct nat_model_desc {
    char name[32];                   /* label for messages and checkpoint metadata (e.g. "nat_mini") */
    int in_chans;                    /* input channels (3 RGB, 1 grey) */
    int num_classes;                 /* >= 1 */
    int img_size;                    /* nominal (square) input size: counts and checks; forward takes any */
    int embed_dim;                   /* C: channels of level 0; even (the tokenizer's first conv has C/2) */
    int depths[NAT_MODEL_LEVELS];    /* layers per level, 1..NAT_MODEL_MAX_DEPTH */
    int heads[NAT_MODEL_LEVELS];     /* attention heads per level; each divides C·2^i */
    int kernel_size;                 /* odd, >= 3 */
    int dilations[NAT_MODEL_LEVELS][NAT_MODEL_MAX_DEPTH]; /* per layer; 0 means 1 (plain NAT) */
    float mlp_ratio;                 /* Mlp hidden = (int)(mlp_ratio · dim) */
    float drop_path_rate;            /* stochastic depth of the last layer, in [0, 1) */
    float layer_scale;               /* initial γ; 0 = no layer scale (no gamma tensors) */
    bool qkv_bias;
    float qk_scale;                  /* <= 0: head_dim^-0.5 */
    float drop;                      /* NAT's drop_rate: after the tokenizer, NA proj and Mlp; [0, 1) */
    float attn_drop;                 /* dropout of the attention weights; [0, 1) */
    uint64_t seed;                   /* weight init: every value is drawn from nat_rng_seed(seed) */
    int num_levels;                  /* levels used, 1..NAT_MODEL_LEVELS (depths/heads/dilations past it
                                        are ignored); 0 means NAT_MODEL_LEVELS */
    int patch_stride;                /* the tokenizer's total stride: 4 (NAT's) or 2 (second conv stride 1);
                                        0 means 4 */
    int attention;                   /* nat_attention_kind of every layer: NAT_ATTN_NEIGHBORHOOD (0, NAT and
                                        DiNAT) or NAT_ATTN_WINDOW (Swin's window attention as the baseline) */
    int window_size;                 /* NAT_ATTN_WINDOW: window side, shifted by half on odd layers (Swin's
                                        SW-MSA); 0 means 7. Dilations and kernel_size are then unused */
} nat_model_desc;

/* The attention of a NAT layer. NAT_ATTN_WINDOW replaces NA by nat_window_attn_layer (nat/layers.h):
 * layer j of a level is W-MSA for even j and SW-MSA (shift window_size/2) for odd j, as in Swin; its
 * parameters are levels.{i}.blocks.{j}.attn.relative_position_bias_table / qkv / proj. */
typedef enum nat_attention_kind { NAT_ATTN_NEIGHBORHOOD = 0, NAT_ATTN_WINDOW = 1 } nat_attention_kind;

/* NAT-Mini's shape without its name: C 64, depths 3,4,6,5, heads 2,4,8,16, kernel 7, mlp 3, drop-path
 * 0.2, qkv bias, 3 input channels, 1000 classes, 224², seed 0, 4 levels, patch stride 4. */
nat_model_desc nat_model_desc_default(void);
/* The named variant: nat_mini, nat_tiny, nat_small, nat_base, dinat_mini, dinat_tiny, dinat_small,
 * dinat_base (the published configs; img_size 224). NAT_ERR_INVALID_ARG naming the name otherwise. */
nat_status nat_model_desc_variant(nat_model_desc *out, const char *name, int num_classes, int in_chans);
/* Names of the variants, NULL-terminated (static). */
const char *const *nat_model_variant_names(void);
/* Checks a description; errors name the value (depth 0 at level 2, 6 heads do not divide 128, ...). */
nat_status nat_model_desc_check(const nat_model_desc *d);
/* Dilation of layer j of level i (1 where unset). */
int nat_model_desc_dilation(const nat_model_desc *d, int level, int layer);
/* Levels in use (num_levels, or NAT_MODEL_LEVELS where it is 0). */
int nat_model_desc_levels(const nat_model_desc *d);
/* The tokenizer's total stride (patch_stride, or 4 where it is 0). */
int nat_model_desc_patch_stride(const nat_model_desc *d);

/* ---- analytic counts ---- */

/* Multiply-adds count once (fvcore's convention, which NAT's paper used): conv Cout·Cin·kh·kw per
 * output pixel, linear in·out per row, NA QK+rpb heads·k²·(hd+1) and AV heads·k²·hd per query of the
 * (padded) map, LayerNorm 5 per element; biases, GELU, softmax, pooling and residual adds count 0. */
typedef struct nat_model_counts {
    int64_t params;                          /* every parameter */
    int64_t params_tokenizer;                /* patch_embed */
    int64_t params_layers[NAT_MODEL_LEVELS]; /* the NAT layers of level i */
    int64_t params_down[NAT_MODEL_LEVELS];   /* the downsampler after level i (0 for the last) */
    /* entries of levels past num_levels are 0 */
    int64_t params_head;                     /* norm and head */
    int64_t macs;                            /* per image at the given resolution */
    int64_t macs_tokenizer;
    int64_t macs_layers[NAT_MODEL_LEVELS];
    int64_t macs_attn[NAT_MODEL_LEVELS];     /* of which the NA op itself (QK+rpb and AV) */
    int64_t macs_down[NAT_MODEL_LEVELS];
    int64_t macs_head;
    int map_h[NAT_MODEL_LEVELS], map_w[NAT_MODEL_LEVELS]; /* feature map of level i */
    int dims[NAT_MODEL_LEVELS];                           /* channels of level i */
} nat_model_counts;

/* Counts for one image of h × w (>= 1). Checks the description first. */
nat_status nat_model_desc_count(const nat_model_desc *d, int h, int w, nat_model_counts *out);

/* ---- the model ---- */

typedef struct nat_model nat_model;

/* Checks a description, builds the model (the description is copied) and initialises it from a nat_rng
 * seeded with d->seed (docs/design.md §3: truncated normal 0.02 at ±2σ for linear weights and rpb, zero
 * linear biases, LayerNorm 1/0, convs PyTorch's default kaiming-uniform, γ = layer_scale), module by
 * module in state_dict order. Owned by the caller: nat_model_free. On failure *out is NULL. */
nat_status nat_model_new(nat_model **out, const nat_model_desc *d);
/* nat_model_desc_variant (seed 0) + nat_model_new. */
nat_status nat_model_new_variant(nat_model **out, const char *name, int num_classes, int in_chans);
/* NULL is ignored. */
void nat_model_free(nat_model *m);

/* Moves every parameter (and gradient) to `dev` in place (nat_tensor_move): a model is built and
 * initialised on the CPU, then moved once; forward then needs a context on dev and inputs copied there
 * (nat_tensor_to). Parameter pointers stay valid. On failure some parameters may have moved: move
 * the model again or free it. */
nat_status nat_model_to(nat_model *m, nat_device dev);
/* The device of the model's parameters. */
nat_device nat_model_device(const nat_model *m);

/* The description the model was built from (borrowed). */
const nat_model_desc *nat_model_get_desc(const nat_model *m);

/* Logits [B, num_classes] of images x [B, in_chans, H, W] (f32, any strides; H, W >= 1) in ctx, as a step
 * tensor. Records on ctx's tape when its gradients are enabled (nat_backward then fills every
 * parameter's grad, accumulating); for inference pass a ctx with gradients disabled and training false.
 * training turns on dropout and drop-path, which draw from rng (may be NULL when they are all 0). */
nat_status nat_model_forward(nat_model *m, nat_ctx *ctx, nat_tensor *x, bool training, nat_rng *rng,
                             nat_tensor **logits);

/* Called by nat_model_forward after each part of the network with the part's name ("patch_embed",
 * "levels.<i>", "levels.<i>.downsample", "head"), for per-part timings (nat-profile) or trace ranges.
 * fn NULL removes the hook. */
typedef void (*nat_model_part_fn)(void *user, const char *part);
void nat_model_set_part_hook(nat_model *m, nat_model_part_fn fn, void *user);

/* Finer tracing for profilers (nat-profile's per-layer table). With a trace function set, the forward
 * calls it after each part (backward false), and when the forward records a tape it also puts a
 * pass-through marker on each part's output whose backward calls it (backward true) just before that
 * part's backward runs, i.e. once the backward of everything after the part is done. The parts, in
 * order: the tokenizer; per layer norm1, attn (attention + its residual), norm2, mlp (Mlp + its
 * residual); per level but the last the downsampler; the head (norm, pool, Linear). A marker costs
 * one copy of the part's output gradient in backward; with fn NULL (the default) nothing is added. */
typedef enum nat_model_part_kind {
    NAT_PART_TOKENIZER = 0,
    NAT_PART_NORM1,
    NAT_PART_ATTN,
    NAT_PART_NORM2,
    NAT_PART_MLP,
    NAT_PART_DOWNSAMPLE,
    NAT_PART_HEAD
} nat_model_part_kind;
typedef struct nat_model_part_event {
    nat_model_part_kind kind;
    int level, layer; /* -1 where they do not apply */
    bool backward;
} nat_model_part_event;
typedef void (*nat_model_trace_fn)(void *user, const nat_model_part_event *ev);
void nat_model_set_trace(nat_model *m, nat_model_trace_fn fn, void *user);

/* Activation checkpointing of every NAT layer (nat_recompute): a training forward keeps only each
 * layer's input, and the backward recomputes the layer before backpropagating through it — the step's
 * memory drops to about one layer's activations plus one input per layer, for one more forward of the
 * layers (25-55% more time per step on NAT-Mini at 224²). Off by default; results are the same (the recomputation draws the
 * same drop-path masks). With it on, the per-part trace reports no backward events inside the layers
 * (their backward, recomputation included, is counted in the part before them). */
void nat_model_set_recompute(nat_model *m, bool on);
bool nat_model_get_recompute(const nat_model *m);

/* Every parameter with its PyTorch name and no-weight-decay flag, in state_dict order (borrowed, valid
 * until nat_model_free). */
const nat_param_list *nat_model_params(const nat_model *m);
/* Total parameter elements. */
int64_t nat_model_param_count(const nat_model *m);
/* Zeroes every parameter gradient. */
void nat_model_zero_grad(nat_model *m);

/* ---- checkpoints (safetensors) ---- */

/* Adds every parameter under its name to w (for a checkpoint that also holds other state), and the
 * description as "nat.*" metadata keys (nat.depths, nat.heads and nat.dilations list num_levels levels;
 * nat.patch_stride is written too, and read as 4 when a file lacks it). */
nat_status nat_model_write(const nat_model *m, nat_st_writer *w);
/* Writes the parameters to `path` crash-safe, with the description and n_meta extra metadata
 * key/value strings (keys[i] -> values[i]; keys must not start with "nat."). */
nat_status nat_model_save(const nat_model *m, const char *path, int n_meta, const char *const *keys,
                          const char *const *values);
/* Loads every parameter from an open file. strict: the file may hold no other tensor. Every
 * parameter must be present with its exact shape and finite values; errors name the tensor and the
 * file, and on error no parameter changes. */
nat_status nat_model_read(nat_model *m, nat_st_file *f, bool strict);
/* Opens `path` and loads strictly. */
nat_status nat_model_load(nat_model *m, const char *path);
/* The description stored in a file written by nat_model_save / nat_model_write (its "nat.*" metadata),
 * checked; NAT_ERR_FORMAT naming the key when one is missing or malformed. Pair with nat_model_new and
 * nat_model_read to rebuild a model from a checkpoint alone. */
nat_status nat_model_desc_read(const nat_st_file *f, nat_model_desc *out);

#ifdef __cplusplus
}
#endif
#endif
