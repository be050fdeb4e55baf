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

typedef struct nat_mlp_layer {
    nat_linear_layer fc1, fc2;
    float drop;
} nat_mlp_layer;

/* in -> hidden -> out (NAT: hidden = (int)(mlp_ratio·C), out = in). */
nat_status nat_mlp_layer_init(nat_mlp_layer *m, int in_features, int hidden_features, int out_features, float drop, float std,
                              nat_rng *rng);
nat_status nat_mlp_layer_forward(nat_ctx *ctx, const nat_mlp_layer *m, nat_tensor *x, bool training, nat_rng *rng,
                                 nat_tensor **out);
/* fc1.weight, fc1.bias, fc2.weight, fc2.bias. */
nat_status nat_mlp_layer_params(const nat_mlp_layer *m, nat_param_list *l, const char *prefix);
void nat_mlp_layer_free(nat_mlp_layer *m);

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

/* ---- Window attention (Swin's W-MSA / SW-MSA), the baseline NA is measured against ----
 *
 * Swin Transformer's WindowAttention inside its block's pad / cyclic shift / partition steps, for
 * x [B, H, W, C] channels-last (layers/window_attention.c):
 *   1. window side ws and shift: ws = window; when min(H, W) <= window, ws = min(H, W) and no shift (as
 *      Swin sets window_size = min(input_resolution) and shift_size = 0 there); else shift = `shift`.
 *   2. zero-pad H, W at their ends up to multiples of ws (Hp, Wp); padded tokens carry the qkv bias;
 *   3. cyclic shift: rolled[y, x] = padded[(y + shift) mod Hp, (x + shift) mod Wp] (torch.roll by -shift);
 *   4. partition into nW = (Hp/ws)(Wp/ws) windows of N = ws² tokens, row-major windows, row-major tokens;
 *   5. per window and head: softmax(scale·q·kᵀ + B + M)·v with B[i, j] = table[idx(i, j), head],
 *      idx = (dy + ws_max - 1)·(2·ws_max - 1) + (dx + ws_max - 1), (dy, dx) = pos(i) - pos(j), and the
 *      shift mask M (0 or -100, Swin's value) that keeps tokens of different regions of the rolled map
 *      apart: per axis, regions [0, Hp - ws), [Hp - ws, Hp - shift), [Hp - shift, Hp);
 *   6. proj, reverse partition, roll back, crop to H x W, proj_drop.
 * Parameters (Swin's names and order): relative_position_bias_table [(2·window-1)², heads] (truncated
 * normal 0.02), qkv.weight/bias, proj.weight/bias. The attention weights of each window are kept for
 * backward ([B·nW, heads, N, N]), as PyTorch's implementation keeps them. */
typedef struct nat_window_attn_desc {
    int dim, heads;  /* heads divides dim */
    int window;      /* window side, >= 1 (Swin: 7) */
    int shift;       /* 0 (W-MSA) or in [1, window) (SW-MSA; Swin: window / 2 on every other layer) */
    bool qkv_bias;
    float scale;     /* <= 0: head_dim^-0.5 */
    float proj_drop; /* dropout after proj; attention dropout is not supported */
} nat_window_attn_desc;

typedef struct nat_window_attn_layer {
    nat_window_attn_desc desc;
    nat_linear_layer qkv;  /* C -> 3C */
    nat_tensor *table;     /* relative_position_bias_table [(2·window-1)², heads] */
    nat_linear_layer proj; /* C -> C */
} nat_window_attn_layer;

nat_status nat_window_attn_layer_init(nat_window_attn_layer *m, const nat_window_attn_desc *d, float std, nat_rng *rng);
/* x [B, H, W, C] (H, W >= 1) -> [B, H, W, C]. */
nat_status nat_window_attn_layer_forward(nat_ctx *ctx, const nat_window_attn_layer *m, nat_tensor *x, bool training,
                                         nat_rng *rng, nat_tensor **out);
/* relative_position_bias_table, qkv.weight, qkv.bias, proj.weight, proj.bias. */
nat_status nat_window_attn_layer_params(const nat_window_attn_layer *m, nat_param_list *l, const char *prefix);
void nat_window_attn_layer_free(nat_window_attn_layer *m);

/* The steps of the module as ops, for tests and other layers:
 * x [B, H, W, C] -> windows [B·nW, ws², C] (steps 2-4: padded tokens are zeros). */
nat_status nat_window_partition(nat_ctx *ctx, nat_tensor *x, int ws, int shift, nat_tensor **out);
/* windows [B·nW, ws², C] -> [B, H, W, C] (the inverse: roll back, crop to H x W). */
nat_status nat_window_reverse(nat_ctx *ctx, nat_tensor *windows, int64_t H, int64_t W, int ws, int shift,
                              nat_tensor **out);
/* Swin's attention mask of the rolled, padded Hp x Wp map: out [nW, N, N] (a step tensor without
 * gradient; 0 or -100). All zeros when shift is 0. */
nat_status nat_window_mask(nat_ctx *ctx, int64_t Hp, int64_t Wp, int ws, int shift, nat_tensor **out);
/* Attention inside windows: qkv [B·nW, N, 3C] (q, k, v along the last dim, each [heads, hd]), table
 * [(2·window-1)², heads], mask [nW, N, N] or NULL -> out [B·nW, N, C] = softmax(scale·q·kᵀ + B + M)·v
 * with heads concatenated (N = ws², ws <= window). */
nat_status nat_window_attention(nat_ctx *ctx, nat_tensor *qkv, nat_tensor *table, nat_tensor *mask, int heads,
                                int ws, int window, float scale, nat_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
