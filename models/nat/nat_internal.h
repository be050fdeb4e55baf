/* models/nat/nat_internal.h — the NAT model's structure, shared by the files of models/nat/ (build,
 * forward, counts, checkpoints). Not part of the public API (include/nat/model.h). */
#ifndef NAT_MODELS_NAT_INTERNAL_H
#define NAT_MODELS_NAT_INTERNAL_H

#include "layers/layers_internal.h" /* nat_na_fn */
#include "nat/layers.h"
#include "nat/model.h"

/* One NAT layer (NATLayer): pre-norm NA and Mlp residual branches. */
typedef struct nat_block_layer {
    nat_layernorm_layer norm1, norm2;
    nat_na_layer attn;              /* NAT_ATTN_NEIGHBORHOOD */
    nat_window_attn_layer wattn;    /* NAT_ATTN_WINDOW */
    nat_mlp_layer mlp;
    nat_tensor *gamma1, *gamma2; /* [dim] layer scale, or NULL */
    float drop_path;
} nat_block_layer;

/* One level (NATBlock): depth layers, then the ConvDownsampler unless it is the last level. */
typedef struct nat_level {
    int depth, dim;
    nat_block_layer *blocks;
    bool has_down;
    nat_conv2d_layer reduction; /* dim -> 2·dim, 3×3 s2 p1, no bias */
    nat_layernorm_layer down_norm;
} nat_level;

struct nat_model {
    nat_model_desc desc;
    nat_conv2d_layer embed0, embed1; /* patch_embed.proj.0 / .1 */
    nat_layernorm_layer embed_norm;  /* patch_embed.norm */
    nat_level levels[NAT_MODEL_LEVELS];
    nat_layernorm_layer norm;
    nat_linear_layer head;
    nat_param_list params;
    nat_model_part_fn part_hook;
    void *part_user;
    nat_model_trace_fn trace;
    void *trace_user;
    nat_na_fn na_fn; /* NULL: nat's NA op; another algorithm only for measurements (nat_model_set_na_fn) */
    bool recompute; /* activation checkpointing per layer (nat_model_set_recompute) */
};

/* With a trace function set: reports the end of a part's forward and, when *h is recorded on the tape,
 * replaces it by a pass-through marker whose backward reports the start of the part's backward
 * (nat_trace.c). Does nothing otherwise. */
/* How the NA layers compute the NA op (layers/layers_internal.h; NULL, nat's own, by default): a
 * runtime switch for measurements (nat-profile --na-impl), not part of the description, not saved. */
void nat_model_set_na_fn(nat_model *m, nat_na_fn fn);
nat_na_fn nat_model_get_na_fn(const nat_model *m);

nat_status nat_model_trace_part(const nat_model *m, nat_ctx *ctx, nat_model_part_kind kind, int level, int layer,
                                nat_tensor **h);

/* NAT's per-layer drop-path rates: torch.linspace(0, rate, n) in float32, as PyTorch computes it. */
float nat_model_linspace(float end, int n, int i);

#endif
