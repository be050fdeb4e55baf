/* nat/layers.h — modules with persistent parameters: Linear, Conv2d, LayerNorm, Mlp, Dropout, DropPath
 * and NeighborhoodAttention (1-D, 2-D, 3-D), plus the parameter registry the model builds from them.
 *
 * A module is a plain struct the caller owns (usually embedded in a bigger module). `*_init` makes its
 * parameters as persistent f32 CPU tensors with requires_grad and fills them from the caller's nat_rng;
 * `*_free` frees them (a zero-filled or freed struct may be freed again). `*_forward` runs in a step
 * context and records on its tape like any op (include/nat/ops.h): inputs are borrowed, the output is a
 * step tensor owned by ctx. GELU has no state: nat_gelu (ops.h, the erf form) is its forward.
 *
 * Parameter names: `*_params(m, list, prefix)` appends each parameter under "<prefix>.<name>" with
 * PyTorch's attribute names (weight, bias, rpb, qkv.weight, fc1.bias, ...), so a model can list every
 * parameter with the exact dotted name its PyTorch original has in its state_dict, in the same order
 * (a module's own parameters first, then its children's, as named_parameters() walks them).
 *
 * Init, as PyTorch and NAT do it. `std` arguments: std > 0 draws linear weights from a normal(0, std)
 * truncated at ±2·std (timm's trunc_normal_ as NAT's _init_weights uses it) with zero biases; std == 0
 * gives PyTorch's nn.Linear default, uniform(±1/sqrt(in)) for weight and bias (kaiming-uniform a=√5).
 * Conv2d always takes PyTorch's default: weight and bias uniform(±1/sqrt(in·kh·kw)). LayerNorm: 1 and 0.
 */
#ifndef NAT_LAYERS_H
#define NAT_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "nat/autograd.h"
#include "nat/natten.h"
#include "nat/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- parameter registry ---- */

typedef struct nat_param {
    char *name;         /* full dotted name, e.g. "levels.0.blocks.1.attn.qkv.weight"; owned by the list */
    nat_tensor *tensor; /* borrowed: owned by its module */
    bool no_decay;      /* excluded from weight decay: biases, norms, rpb, layer-scale γ (timm's rule) */
} nat_param;

typedef struct nat_param_list {
    nat_param *items;
    int count;
    int cap;
} nat_param_list;

/* An empty list (no allocation). */
void nat_param_list_init(nat_param_list *l);
/* Frees the names and the array (not the tensors); the list is empty and reusable afterwards. */
void nat_param_list_clear(nat_param_list *l);
/* Appends t under "<prefix>.<name>" (just <name> when prefix is NULL or ""). The name is copied and
 * t->name is pointed at the copy (valid while the list holds it). Duplicate names are an error. */
nat_status nat_param_list_add(nat_param_list *l, const char *prefix, const char *name, nat_tensor *t, bool no_decay);
/* The entry called `name`, or NULL. */
const nat_param *nat_param_list_find(const nat_param_list *l, const char *name);
/* Total element count of all parameters. */
int64_t nat_param_list_numel(const nat_param_list *l);
/* Zeroes every parameter's gradient (keeping the buffers). */
void nat_param_list_zero_grad(const nat_param_list *l);

/* ---- Linear: y = x·Wᵀ + b over the last dim ---- */

typedef struct nat_linear_layer {
    int in_features, out_features;
    nat_tensor *weight; /* [out, in] */
    nat_tensor *bias;   /* [out], or NULL without bias */
} nat_linear_layer;

nat_status nat_linear_layer_init(nat_linear_layer *m, int in_features, int out_features, bool bias, float std,
                                 nat_rng *rng);
/* x [..., in] -> [..., out]. */
nat_status nat_linear_layer_forward(nat_ctx *ctx, const nat_linear_layer *m, nat_tensor *x, nat_tensor **out);
nat_status nat_linear_layer_params(const nat_linear_layer *m, nat_param_list *l, const char *prefix);
void nat_linear_layer_free(nat_linear_layer *m);

/* ---- Conv2d (NCHW) ---- */

typedef struct nat_conv2d_layer {
    int in_channels, out_channels, kernel, stride, pad;
    nat_tensor *weight; /* [out, in, kernel, kernel] */
    nat_tensor *bias;   /* [out], or NULL */
} nat_conv2d_layer;

nat_status nat_conv2d_layer_init(nat_conv2d_layer *m, int in_channels, int out_channels, int kernel, int stride,
                                 int pad, bool bias, nat_rng *rng);
/* x [N, in, H, W] -> [N, out, Ho, Wo], Ho = (H + 2·pad - kernel)/stride + 1. */
nat_status nat_conv2d_layer_forward(nat_ctx *ctx, const nat_conv2d_layer *m, nat_tensor *x, nat_tensor **out);
nat_status nat_conv2d_layer_params(const nat_conv2d_layer *m, nat_param_list *l, const char *prefix);
void nat_conv2d_layer_free(nat_conv2d_layer *m);

/* ---- LayerNorm over the last dim (eps 1e-5 is nn.LayerNorm's) ---- */

typedef struct nat_layernorm_layer {
    int dim;
    float eps;
    nat_tensor *weight; /* [dim], init 1 */
    nat_tensor *bias;   /* [dim], init 0 */
} nat_layernorm_layer;

nat_status nat_layernorm_layer_init(nat_layernorm_layer *m, int dim, float eps);
/* x [..., dim] (any strides) -> [..., dim]. */
nat_status nat_layernorm_layer_forward(nat_ctx *ctx, const nat_layernorm_layer *m, nat_tensor *x, nat_tensor **out);
nat_status nat_layernorm_layer_params(const nat_layernorm_layer *m, nat_param_list *l, const char *prefix);
void nat_layernorm_layer_free(nat_layernorm_layer *m);

/* ---- Dropout and DropPath (no parameters; identity when !training or p == 0) ---- */

typedef struct nat_dropout_layer {
    float p; /* [0, 1) */
} nat_dropout_layer;

typedef struct nat_drop_path_layer {
    float p; /* [0, 1): probability of dropping a whole sample (dim 0) */
} nat_drop_path_layer;

nat_status nat_dropout_layer_forward(nat_ctx *ctx, const nat_dropout_layer *m, nat_tensor *x, bool training,
                                     nat_rng *rng, nat_tensor **out);
nat_status nat_drop_path_layer_forward(nat_ctx *ctx, const nat_drop_path_layer *m, nat_tensor *x, bool training,
                                       nat_rng *rng, nat_tensor **out);

/* ---- Mlp: fc1 -> GELU -> dropout -> fc2 -> dropout (timm's Mlp, as NAT uses it) ---- */

typedef struct nat_mlp {
    nat_linear_layer fc1, fc2;
    float drop;
} nat_mlp;

/* in -> hidden -> out (NAT: hidden = (int)(mlp_ratio·C), out = in). */
nat_status nat_mlp_init(nat_mlp *m, int in_features, int hidden_features, int out_features, float drop, float std,
                        nat_rng *rng);
nat_status nat_mlp_forward(nat_ctx *ctx, const nat_mlp *m, nat_tensor *x, bool training, nat_rng *rng,
                           nat_tensor **out);
/* fc1.weight, fc1.bias, fc2.weight, fc2.bias. */
nat_status nat_mlp_params(const nat_mlp *m, nat_param_list *l, const char *prefix);
void nat_mlp_free(nat_mlp *m);

/* ---- NeighborhoodAttention 1-D / 2-D / 3-D (NATTEN's module) ---- */

/* Plain descriptor. Entries of per-axis arrays past ndim are ignored. */
typedef struct nat_na_layer_desc {
    int ndim;        /* 1, 2 or 3 spatial axes */
    int dim;         /* channels C */
    int heads;       /* divides C; head dim = C / heads */
    int kernel[3];   /* odd, >= 3 */
    int dilation[3]; /* >= 1 */
    int causal[3];   /* 0 or 1; no rpb with a causal axis */
    bool qkv_bias;   /* bias of the qkv projection (proj always has one) */
    bool rpb;        /* relative positional bias [heads, 2k0-1 (, 2k1-1 (, 2k2-1))] */
    float scale;     /* <= 0: head_dim^-0.5 */
    float attn_drop; /* dropout on the attention weights (training only; forces the unfused path) */
    float proj_drop; /* dropout after proj */
} nat_na_layer_desc;

/* ndim axes of the same kernel and dilation, qkv bias and rpb on, default scale, no dropout. */
nat_na_layer_desc nat_na_layer_desc_make(int ndim, int dim, int heads, int kernel, int dilation);

typedef struct nat_na_layer {
    nat_na_layer_desc desc;
    nat_linear_layer qkv;  /* C -> 3C */
    nat_tensor *rpb;       /* or NULL */
    nat_linear_layer proj; /* C -> C, with bias */
} nat_na_layer;

/* Checks the descriptor (errors name the value: heads not dividing C, even kernel, rpb with causal...)
 * and makes the parameters: qkv and proj as nat_linear_layer_init with `std`, rpb truncated normal
 * 0.02 at ±2σ. */
nat_status nat_na_layer_init(nat_na_layer *m, const nat_na_layer_desc *d, float std, nat_rng *rng);
/* x channels-last [B, *spatial, C] -> [B, *spatial, C], exactly NATTEN's NeighborhoodAttention{1,2,3}D:
 * an axis shorter than kernel·dilation is zero-padded at its end up to kernel·dilation before the qkv
 * projection (padded tokens carry the qkv bias) and the output is cropped back after attention;
 * q, k, v [B, heads, *spatial, hd]; softmax(scale·q·k + rpb); attn_drop; AV; proj; proj_drop.
 * The fused kernel (nat_na) runs unless attention dropout is active (training with attn_drop > 0). */
nat_status nat_na_layer_forward(nat_ctx *ctx, const nat_na_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                nat_tensor **out);
/* rpb (when on), qkv.weight, qkv.bias, proj.weight, proj.bias — NATTEN's order. */
nat_status nat_na_layer_params(const nat_na_layer *m, nat_param_list *l, const char *prefix);
void nat_na_layer_free(nat_na_layer *m);

#ifdef __cplusplus
}
#endif
#endif
