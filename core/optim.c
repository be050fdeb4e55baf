/* core/optim.c — SGD (momentum, Nesterov, coupled weight decay) and AdamW (decoupled weight decay) over
 * parameter groups, and global-norm gradient clipping (see include/nat/optim.h for the exact rules).
 *
 * Parameters and gradients are contiguous f32 tensors on the CPU or a CUDA device (each parameter is
 * updated where it lives, through its device's kernel table: core/cpu/optim.c's loops, core/cuda/optim.cu's
 * fused kernels with the same operations, and a deterministic sum of squares for the gradient norm);
 * updated element by element; each update is
 * written in the order PyTorch's single-tensor kernels use (scalars computed in double, applied in
 * float) so results track a PyTorch run closely. State tensors are made at add_group time so that
 * nat_optim_step never allocates. AdamW's per-parameter step count stays on the host whatever the
 * parameter's device: the bias corrections are computed from it on the host.
 */
#include "nat/optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h" /* the updates and the gradient norm through the kernel table */
#include "nat/autograd.h"   /* nat_zero_grad */
#include "core/check.h"

typedef struct opt_param {
    nat_tensor *p;     /* borrowed */
    nat_tensor *m;     /* SGD: momentum buffer (NULL without momentum); AdamW: exp_avg */
    nat_tensor *v;     /* AdamW: exp_avg_sq */
    nat_tensor *steps; /* AdamW: f32 [1] per-parameter step count */
    int group;
} opt_param;

typedef struct opt_group {
    float weight_decay;
} opt_group;

typedef struct opt_state {
    char name[64];
    nat_tensor *t; /* points into an opt_param, not owned separately */
} opt_state;

struct nat_optim {
    nat_optim_config cfg;
    int64_t steps;
    opt_group *groups;
    int n_groups;
    opt_param *params;
    int n_params;
    opt_state *states;
    int n_states;
};

nat_optim_config nat_optim_sgd_config(float momentum, bool nesterov)
{
    return (nat_optim_config){.kind = NAT_OPTIM_SGD, .momentum = momentum, .nesterov = nesterov};
}

nat_optim_config nat_optim_adamw_config(float beta1, float beta2, float eps)
{
    return (nat_optim_config){.kind = NAT_OPTIM_ADAMW, .beta1 = beta1, .beta2 = beta2, .eps = eps};
}

static bool in_unit(float x) { return x >= 0.0f && x < 1.0f; } /* false for NaN */

nat_status nat_optim_new(nat_optim **out, const nat_optim_config *cfg)
{
    NAT_CHECK_ARG(out, "nat_optim_new", "out");
    NAT_CHECK_ARG(cfg, "nat_optim_new", "cfg");
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_new: out is NULL");
    *out = NULL;
    if (!cfg)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_new: config is NULL");
    switch (cfg->kind) {
    case NAT_OPTIM_SGD:
        if (!in_unit(cfg->momentum))
            return nat_error(NAT_ERR_INVALID_ARG, "sgd: momentum %g is outside [0, 1)", cfg->momentum);
        if (cfg->nesterov && cfg->momentum == 0.0f)
            return nat_error(NAT_ERR_INVALID_ARG, "sgd: nesterov needs a momentum > 0 (got %g)", cfg->momentum);
        break;
    case NAT_OPTIM_ADAMW:
        if (!in_unit(cfg->beta1))
            return nat_error(NAT_ERR_INVALID_ARG, "adamw: beta1 %g is outside [0, 1)", cfg->beta1);
        if (!in_unit(cfg->beta2))
            return nat_error(NAT_ERR_INVALID_ARG, "adamw: beta2 %g is outside [0, 1)", cfg->beta2);
        if (!(cfg->eps >= 0.0f) || isinf(cfg->eps))
            return nat_error(NAT_ERR_INVALID_ARG, "adamw: eps %g must be finite and >= 0", cfg->eps);
        break;
    default:
        return nat_error(NAT_ERR_INVALID_ARG, "optim_new: unknown optimizer kind %d", (int)cfg->kind);
    }
    nat_optim *opt = calloc(1, sizeof *opt);
    if (!opt)
        return nat_error(NAT_ERR_OOM, "optim_new: out of host memory");
    opt->cfg = *cfg;
    *out = opt;
    return NAT_OK;
}

static void free_param_state(opt_param *p)
{
    nat_tensor_free(p->m);
    nat_tensor_free(p->v);
    nat_tensor_free(p->steps);
    p->m = p->v = p->steps = NULL;
}

void nat_optim_free(nat_optim *opt)
{
    if (!opt)
        return;
    for (int i = 0; i < opt->n_params; i++)
        free_param_state(&opt->params[i]);
    free(opt->params);
    free(opt->groups);
    free(opt->states);
    free(opt);
}

nat_optim_kind nat_optim_get_kind(const nat_optim *opt) { return opt->cfg.kind; }
int nat_optim_group_count(const nat_optim *opt) { return opt->n_groups; }

/* Why a tensor cannot be optimised, or NULL when it can. */
static const char *param_problem(const nat_tensor *t)
{
    if (t->ctx)
        return "is a step tensor (made inside a nat_ctx); parameters must be persistent (nat_tensor_new)";
    if (t->dtype != NAT_F32)
        return "is not f32";
    if (nat_device_check(t->device, "optim") != NAT_OK)
        return "is on a CUDA device that this build or machine cannot use"; /* only a CUDA device can fail the check */
    if (!nat_tensor_is_contiguous(t))
        return "is not contiguous";
    if (!t->requires_grad)
        return "does not require a gradient (call nat_set_requires_grad first)";
    return NULL;
}

static nat_status param_error(int group, int i, const nat_tensor *t, const char *why)
{
    char b[96];
    return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: group %d, param %d%s%s%s (shape %s) %s", group, i,
                     t->name ? " '" : "", t->name ? t->name : "", t->name ? "'" : "", nat_shape_str(t, b, sizeof b),
                     why);
}

static nat_status new_like(nat_tensor **out, const nat_tensor *p)
{
    return nat_tensor_new(out, NAT_F32, p->device, p->ndim, p->shape);
}

nat_status nat_optim_add_group(nat_optim *opt, nat_tensor **params, int n, float weight_decay)
{
    NAT_CHECK_ARG(opt, "nat_optim_add_group", "opt");
    if (n > 0)
        NAT_CHECK_ARG(params, "nat_optim_add_group", "params");
    if (!opt)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: optimizer is NULL");
    int g = opt->n_groups;
    if (n < 0 || (n > 0 && !params))
        return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: group %d: %d params given with params %s", g, n,
                         params ? "set" : "NULL");
    if (!(weight_decay >= 0.0f) || isinf(weight_decay))
        return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: group %d: weight decay %g must be finite and >= 0", g,
                         weight_decay);
    for (int i = 0; i < n; i++) {
        nat_tensor *t = params[i];
        if (!t)
            return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: group %d, param %d is NULL", g, i);
        const char *why = param_problem(t);
        if (why)
            return param_error(g, i, t, why);
        for (int j = 0; j < i; j++)
            if (params[j] == t)
                return nat_error(NAT_ERR_INVALID_ARG, "optim_add_group: group %d lists the same tensor as param %d and %d",
                                 g, j, i);
        for (int j = 0; j < opt->n_params; j++)
            if (opt->params[j].p == t)
                return nat_error(NAT_ERR_INVALID_ARG,
                                 "optim_add_group: group %d, param %d is already in group %d; a parameter may be in one "
                                 "group only",
                                 g, i, opt->params[j].group);
    }

    bool adamw = opt->cfg.kind == NAT_OPTIM_ADAMW;
    int per_param = adamw ? 3 : (opt->cfg.momentum > 0.0f ? 1 : 0);
    opt_group *groups = realloc(opt->groups, (size_t)(g + 1) * sizeof *groups);
    if (groups)
        opt->groups = groups;
    opt_param *ps = realloc(opt->params, (size_t)(opt->n_params + n + 1) * sizeof *ps);
    if (ps)
        opt->params = ps;
    opt_state *ss = realloc(opt->states, (size_t)(opt->n_states + n * per_param + 1) * sizeof *ss);
    if (ss)
        opt->states = ss;
    if (!groups || !ps || !ss)
        return nat_error(NAT_ERR_OOM, "optim_add_group: out of host memory for group %d (%d params)", g, n);

    /* Make every state tensor first, so a failure part-way leaves the optimizer as it was. */
    nat_status st = NAT_OK;
    int made = 0;
    for (; made < n && st == NAT_OK; made++) {
        opt_param *q = &opt->params[opt->n_params + made];
        *q = (opt_param){.p = params[made], .group = g};
        if (adamw) {
            int64_t one = 1;
            st = new_like(&q->m, q->p);
            if (st == NAT_OK)
                st = new_like(&q->v, q->p);
            if (st == NAT_OK)
                st = nat_tensor_new(&q->steps, NAT_F32, NAT_CPU, 1, &one);
        } else if (per_param) {
            st = new_like(&q->m, q->p);
        }
    }
    if (st != NAT_OK) {
        for (int i = 0; i < made; i++)
            free_param_state(&opt->params[opt->n_params + i]);
        return nat_error_context(st, "optim_add_group: group %d", g);
    }

    for (int i = 0; i < n; i++) {
        opt_param *q = &opt->params[opt->n_params + i];
        struct {
            const char *what;
            nat_tensor *t;
        } entries[3] = {{"momentum_buffer", q->m}, {NULL, NULL}, {NULL, NULL}};
        if (adamw) {
            entries[0].what = "step", entries[0].t = q->steps;
            entries[1].what = "exp_avg", entries[1].t = q->m;
            entries[2].what = "exp_avg_sq", entries[2].t = q->v;
        }
        for (int k = 0; k < per_param; k++) {
            opt_state *s = &opt->states[opt->n_states++];
            snprintf(s->name, sizeof s->name, "group%d.param%d.%s", g, i, entries[k].what);
            s->t = entries[k].t;
        }
    }
    opt->groups[g].weight_decay = weight_decay;
    opt->n_groups++;
    opt->n_params += n;
    return NAT_OK;
}

/* ---- updates (contiguous f32, n elements) ---- */

static nat_status check_grad(const opt_param *q, int index_in_group)
{
    const nat_tensor *gr = q->p->grad;
    if (gr->dtype != NAT_F32 || gr->device.kind != q->p->device.kind || gr->device.index != q->p->device.index ||
        !nat_tensor_is_contiguous(gr) || !nat_tensor_same_shape(gr, q->p)) {
        char a[96], b[96];
        return nat_error(NAT_ERR_INTERNAL,
                         "optim_step: group %d, param %d (shape %s) has a gradient of shape %s (%s, %s) that is not a "
                         "contiguous f32 tensor of its shape on its device",
                         q->group, index_in_group, nat_shape_str(q->p, a, sizeof a), nat_shape_str(gr, b, sizeof b),
                         nat_dtype_name(gr->dtype), nat_device_name(gr->device));
    }
    return NAT_OK;
}

nat_status nat_optim_step(nat_optim *opt, float lr)
{
    NAT_CHECK_ARG(opt, "nat_optim_step", "opt");
    if (!opt)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_step: optimizer is NULL");
    if (!(lr >= 0.0f) || isinf(lr))
        return nat_error(NAT_ERR_INVALID_ARG, "optim_step: learning rate %g must be finite and >= 0", lr);
    /* Validate every gradient before touching any parameter, so a failed step changes nothing. */
    for (int i = 0, first = 0; i < opt->n_params; i++) {
        if (i > 0 && opt->params[i].group != opt->params[i - 1].group)
            first = i;
        if (opt->params[i].p->grad)
            NAT_TRY(check_grad(&opt->params[i], i - first));
    }
    const nat_optim_config *c = &opt->cfg;
    for (int i = 0; i < opt->n_params; i++) {
        opt_param *q = &opt->params[i];
        if (!q->p->grad)
            continue;
        float wd = opt->groups[q->group].weight_decay;
        float *p = nat_tensor_f32(q->p);
        const float *g = nat_tensor_f32(q->p->grad);
        int64_t n = nat_tensor_numel(q->p);
        const nat_exec *ex = NAT_EXEC_DEV(q->p->device);
        if (c->kind == NAT_OPTIM_SGD) {
            float *buf = q->m ? nat_tensor_f32(q->m) : NULL;
            NAT_TRY(NAT_KERNEL(ex, sgd_update, p, g, buf, n, lr, wd, c->momentum, c->nesterov));
            continue;
        }
        float *t = nat_tensor_f32(q->steps);
        t[0] += 1.0f;
        double step = t[0];
        double bc1 = 1.0 - pow((double)c->beta1, step);
        double bc2 = 1.0 - pow((double)c->beta2, step);
        double step_size = (double)lr / bc1;
        const float decay_mul = (float)(1.0 - (double)lr * wd), w1 = (float)(1.0 - (double)c->beta1);
        const float omb2 = (float)(1.0 - (double)c->beta2), neg_step = (float)-step_size, bc2s = (float)sqrt(bc2);
        NAT_TRY(NAT_KERNEL(ex, adamw_update, p, g, nat_tensor_f32(q->m), nat_tensor_f32(q->v), n, decay_mul, w1,
                           c->beta2, omb2, neg_step, bc2s, c->eps));
    }
    opt->steps++;
    return NAT_OK;
}

void nat_optim_zero_grad(nat_optim *opt)
{
    if (!opt)
        return;
    for (int i = 0; i < opt->n_params; i++)
        nat_zero_grad(opt->params[i].p);
}

int64_t nat_optim_step_count(const nat_optim *opt) { return opt->steps; }

nat_status nat_optim_set_step_count(nat_optim *opt, int64_t steps)
{
    NAT_CHECK_ARG(opt, "nat_optim_set_step_count", "opt");
    if (steps < 0)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_set_step_count: %" PRId64 " steps is negative", steps);
    opt->steps = steps;
    return NAT_OK;
}

int nat_optim_state_count(const nat_optim *opt) { return opt->n_states; }

nat_status nat_optim_state_get(const nat_optim *opt, int i, const char **name, nat_tensor **tensor)
{
    NAT_CHECK_ARG(opt, "nat_optim_state_get", "opt");
    if (i < 0 || i >= opt->n_states)
        return nat_error(NAT_ERR_INVALID_ARG, "optim_state_get: index %d is outside [0, %d)", i, opt->n_states);
    if (name)
        *name = opt->states[i].name;
    if (tensor)
        *tensor = opt->states[i].t;
    return NAT_OK;
}

/* ---- clipping ---- */

nat_status nat_clip_grad_norm(nat_tensor **params, int n, float max_norm, float *total_norm_out)
{
    if (n > 0)
        NAT_CHECK_ARG(params, "nat_clip_grad_norm", "params");
    if (total_norm_out)
        *total_norm_out = 0.0f;
    if (n < 0 || (n > 0 && !params))
        return nat_error(NAT_ERR_INVALID_ARG, "clip_grad_norm: %d params given with params %s", n,
                         params ? "set" : "NULL");
    if (!(max_norm > 0.0f) || isinf(max_norm))
        return nat_error(NAT_ERR_INVALID_ARG, "clip_grad_norm: max_norm %g must be finite and > 0", max_norm);
    for (int i = 0; i < n; i++) {
        if (!params[i])
            return nat_error(NAT_ERR_INVALID_ARG, "clip_grad_norm: param %d is NULL", i);
        const nat_tensor *gr = params[i]->grad;
        if (gr && (gr->dtype != NAT_F32 || !nat_tensor_is_contiguous(gr))) {
            char b[96];
            return nat_error(NAT_ERR_UNSUPPORTED,
                             "clip_grad_norm: param %d has a gradient of shape %s (%s on %s); only contiguous f32 "
                             "gradients are supported",
                             i, nat_shape_str(gr, b, sizeof b), nat_dtype_name(gr->dtype), nat_device_name(gr->device));
        }
        if (gr)
            NAT_TRY(nat_device_check(gr->device, "clip_grad_norm"));
    }
    /* Squares summed in double: millions of float squares would otherwise lose the small ones. Runs of
     * consecutive gradients on one device go to its kernel in one batch (on CUDA: one wait per batch). */
    double sq = 0.0;
    for (int i = 0; i < n; i++) {
        const nat_tensor *gr = params[i]->grad;
        if (!gr)
            continue;
        enum { BATCH = 64 };
        const float *xs[BATCH];
        int64_t ns[BATCH];
        int k = 0;
        nat_device dev = gr->device;
        for (; i < n && k < BATCH; i++) {
            const nat_tensor *gi = params[i]->grad;
            if (!gi)
                continue;
            if (gi->device.kind != dev.kind || gi->device.index != dev.index)
                break;
            xs[k] = nat_tensor_f32(gi);
            ns[k++] = nat_tensor_numel(gi);
        }
        i--; /* the loop's i++ moves to the first parameter not taken */
        NAT_TRY(NAT_KERNEL(NAT_EXEC_DEV(dev), sum_squares, k, xs, ns, &sq));
    }
    double norm = sqrt(sq);
    if (total_norm_out)
        *total_norm_out = (float)norm;
    if (!isfinite(norm) || norm <= max_norm)
        return NAT_OK;
    float coef = (float)((double)max_norm / (norm + 1e-6));
    if (!(coef < 1.0f))
        return NAT_OK;
    for (int i = 0; i < n; i++) {
        const nat_tensor *gr = params[i]->grad;
        if (!gr)
            continue;
        float *g = nat_tensor_f32(gr);
        int64_t m = nat_tensor_numel(gr);
        int64_t unit = 1;
        NAT_TRY(NAT_KERNEL(NAT_EXEC_DEV(gr->device), binary, NAT_CUDA_SCALE, false, g, 1, &m, g, &unit, NULL, NULL, coef));
    }
    return NAT_OK;
}

/* ---- weight averaging ---- */

nat_status nat_params_ema_update(nat_tensor *const *avg, nat_tensor *const *params, int n, float decay)
{
    if (n > 0)
        NAT_CHECK_ARG(avg, "nat_params_ema_update", "avg");
    if (n > 0)
        NAT_CHECK_ARG(params, "nat_params_ema_update", "params");
    for (int i = 0; i < n; i++) {
        const nat_tensor *a = avg[i], *p = params[i];
        if (!a || !p || a->dtype != NAT_F32 || p->dtype != NAT_F32 || !nat_tensor_same_shape(a, p) ||
            !nat_tensor_is_contiguous(a) || !nat_tensor_is_contiguous(p) || a->device.kind != p->device.kind ||
            (a->device.kind == NAT_DEV_CUDA && a->device.index != p->device.index))
            return nat_error(NAT_ERR_INVALID_ARG,
                             "params_ema_update: pair %d is not two contiguous f32 tensors of one shape on one device", i);
    }
    const float w = 1.0f - decay;
    for (int i = 0; i < n; i++) {
        float *m = nat_tensor_f32(avg[i]);
        const float *x = nat_tensor_f32(params[i]);
        int64_t count = nat_tensor_numel(avg[i]);
        NAT_TRY(NAT_KERNEL(NAT_EXEC_DEV(avg[i]->device), ema_update, m, x, count, decay, w));
    }
    return NAT_OK;
}
