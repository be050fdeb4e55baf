/* layers/natten/na_problem.c — validation of neighborhood-attention descriptors against a problem size,
 * the rpb shape, and the 3-D view of a problem that the kernels work on (see na_problem.h). */
#include "layers/natten/na_problem.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>

/* "5x5" for the spatial lengths, "3x5x7" for a list of ints. */
static void fmt_lengths(char *buf, size_t cap, const int64_t *v, int n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, i ? "x%lld" : "%lld", (long long)v[i]);
}

nat_status na_validate(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                       int64_t dim, int has_rpb, const char *opname)
{
    if (!opname)
        opname = "na";
    if (!p)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: NULL parameters", opname);
    if (p->ndim < 1 || p->ndim > 3)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: ndim %d is not 1, 2 or 3", opname, p->ndim);
    if (!spatial)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: NULL spatial shape", opname);
    if (batch < 1 || heads < 1 || dim < 1)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "%s: batch %lld, heads %lld and head dim %lld must all be >= 1", opname,
                         (long long)batch, (long long)heads, (long long)dim);
    if (!isfinite(p->scale))
        return nat_error(NAT_ERR_INVALID_ARG, "%s: scale %g is not finite", opname, (double)p->scale);
    int any_causal = 0;
    for (int a = 0; a < p->ndim; a++) {
        int k = p->kernel[a], d = p->dilation[a];
        if (k < 3)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: kernel size %d on axis %d is smaller than 3",
                             opname, k, a);
        if (k % 2 == 0)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: kernel size %d on axis %d is even (must be odd)",
                             opname, k, a);
        if (d < 1)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: dilation %d on axis %d is smaller than 1",
                             opname, d, a);
        if (p->causal[a] != 0 && p->causal[a] != 1)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: causal flag %d on axis %d is not 0 or 1", opname,
                             p->causal[a], a);
        any_causal |= p->causal[a];
    }
    for (int a = 0; a < p->ndim; a++) {
        int64_t need = (int64_t)p->kernel[a] * p->dilation[a];
        /* The window rule runs in int (layers/natten/na_window.h, shared with the CUDA kernels). */
        if (spatial[a] > INT_MAX || need > INT_MAX)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: axis %d of length %lld with kernel %d x dilation %d: axes "
                             "and windows must be shorter than 2^31", opname, a, (long long)spatial[a],
                             p->kernel[a], p->dilation[a]);
        if (spatial[a] < need) {
            char shape[96];
            fmt_lengths(shape, sizeof shape, spatial, p->ndim);
            return nat_error(NAT_ERR_SHAPE,
                             "%s: feature map %s is smaller than kernel %d x dilation %d on axis %d "
                             "(needs >= %lld)",
                             opname, shape, p->kernel[a], p->dilation[a], a, (long long)need);
        }
    }
    if (has_rpb && any_causal)
        return nat_error(NAT_ERR_INVALID_ARG,
                         "%s: relative positional bias cannot be combined with causal masking", opname);
    return NAT_OK;
}

int na_rpb_shape(const nat_na_params *p, int64_t heads, int64_t *out_shape)
{
    out_shape[0] = heads;
    for (int a = 0; a < p->ndim; a++)
        out_shape[1 + a] = 2 * (int64_t)p->kernel[a] - 1;
    return p->ndim + 1;
}

float na_effective_scale(const nat_na_params *p, int64_t dim)
{
    return p->scale > 0.0f ? p->scale : (float)(1.0 / sqrt((double)dim));
}

nat_status na_problem_init(na_problem *pb, const nat_na_params *p, int64_t batch, int64_t heads,
                           const int64_t *spatial, int64_t dim, int has_rpb, const char *opname)
{
    NAT_TRY(na_validate(p, batch, heads, spatial, dim, has_rpb, opname));
    na_problem_fill(pb, p, batch, heads, spatial, dim);
    return NAT_OK;
}

void na_problem_fill(na_problem *pb, const nat_na_params *p, int64_t batch, int64_t heads,
                     const int64_t *spatial, int64_t dim)
{
    int pad = 3 - p->ndim;
    pb->params = *p;
    pb->device = -1;
    for (int a = 0; a < 3; a++)
        pb->spatial[a] = a < p->ndim ? spatial[a] : 1;
    pb->batch = batch;
    pb->heads = heads;
    pb->dim = dim;
    pb->nkeys = 1;
    pb->npix = 1;
    pb->rpb_size = 1;
    for (int a = 0; a < 3; a++) {
        int real = a >= pad;
        pb->len[a] = real ? spatial[a - pad] : 1;
        pb->kernel[a] = real ? p->kernel[a - pad] : 1;
        pb->dilation[a] = real ? p->dilation[a - pad] : 1;
        pb->causal[a] = real ? p->causal[a - pad] : 0;
        pb->rpb_ext[a] = 2 * (int64_t)pb->kernel[a] - 1;
        pb->nkeys *= pb->kernel[a];
        pb->npix *= pb->len[a];
        pb->rpb_size *= pb->rpb_ext[a];
    }
    pb->scale = na_effective_scale(p, dim);
}
