/* layers/natten/na_problem.h — internal: the neighborhood-attention descriptor, its validation and the
 * per-axis window arithmetic shared by the reference (tests/ref/na_ref.c) and the fast CPU kernels (na_cpu*.c).
 *
 * Layouts (all contiguous, row-major):
 *   q, k, v, out and their gradients   [B, heads, *spatial, D]
 *   attention logits / weights         [B, heads, *spatial, K]   K = prod(kernel); slot order is
 *                                      row-major over the kernel axes (a*k1 + b in 2-D, a along axis 0)
 *   rpb (relative positional bias)     [heads, 2k0-1 (, 2k1-1 (, 2k2-1))]   optional (NULL)
 *   lse (log-sum-exp of the logits)    [B, heads, *spatial]
 *
 * Window rules (docs/design.md §2, NATTEN's): per axis of length L, kernel k (odd), dilation d, the query i
 * lives in dilation group g = i mod d at position p = i div d of a sub-grid of length
 * Lg = (L - g + d - 1) div d; its k keys are (s + t)*d + g, t = 0..k-1, with
 *   non-causal  s = clamp(p - k/2, 0, Lg - k)
 *   causal      s = max(p - k + 1, 0) and key t valid only when s + t <= p
 * and the rpb index of key t is (k - 1) + s + t - p.
 *
 * The reference and the fast kernels each code these rules themselves (tests/ref/na_ref.c from docs/design.md, cpu/na_cpu.c
 * for speed), so the tests compare two independent readings of them.
 *
 * Inside the kernels every problem is seen as 3-D: a 1-D or 2-D problem gets leading axes of length 1
 * with kernel 1 and dilation 1 (one key, rpb extent 1), which the same formulas handle exactly.
 */
#ifndef NAT_NA_PROBLEM_H
#define NAT_NA_PROBLEM_H

#include <stdint.h>

#include "nat/natten.h"
#include "nat/status.h"

/* nat_na_params, the public descriptor, comes from nat/natten.h. */

/* Checks the descriptor against a problem size. `spatial` holds p->ndim lengths; `has_rpb` says whether
 * an rpb tensor is given; `opname` ("na2d", "na2d_qk", ...) prefixes the message. Returns NAT_OK, or
 * NAT_ERR_INVALID_ARG (bad kernel/dilation/causal/ndim/sizes, rpb with causal) or NAT_ERR_SHAPE (a
 * feature map smaller than kernel x dilation) with a message naming the numbers. */
nat_status na_validate(const nat_na_params *p, int64_t batch, int64_t heads, const int64_t *spatial,
                       int64_t dim, int has_rpb, const char *opname);

/* Writes the rpb shape [heads, 2k0-1, ...] into out_shape (room for 4) and returns its rank, ndim + 1. */
int na_rpb_shape(const nat_na_params *p, int64_t heads, int64_t *out_shape);

/* The scale actually used: p->scale, or 1/sqrt(dim) when p->scale <= 0. */
float na_effective_scale(const nat_na_params *p, int64_t dim);

/* One neighborhood-attention problem: the descriptor checked against the sizes, seen as 3-D (see the
 * header comment; axis 3 - ndim is the first real one). Built and validated once, where an op is called
 * (na_problem_init, layers/natten/na_ops.c), then handed by const pointer to the kernels, CPU and CUDA, which trust it. */
typedef struct na_problem {
    nat_na_params params;    /* the descriptor as given */
    int device;              /* where the kernels run: -1 the CPU, else the CUDA ordinal (set by the op) */
    int64_t spatial[3];      /* the op's own spatial lengths, params.ndim of them */
    int64_t batch, heads, dim;
    int64_t len[3];          /* spatial lengths (1 for the added axes) */
    int kernel[3], dilation[3], causal[3];
    int64_t nkeys;           /* K = kernel[0]*kernel[1]*kernel[2] */
    int64_t npix;            /* len[0]*len[1]*len[2] */
    int64_t rpb_ext[3];      /* 2*kernel-1 per axis */
    int64_t rpb_size;        /* per head: rpb_ext[0]*rpb_ext[1]*rpb_ext[2] */
    float scale;
} na_problem;

/* Validates (na_validate, same messages, `opname` first) and fills *pb. Returns na_validate's status. */
nat_status na_problem_init(na_problem *pb, const nat_na_params *p, int64_t batch, int64_t heads,
                           const int64_t *spatial, int64_t dim, int has_rpb, const char *opname);

/* Fills *pb from a descriptor already validated against these sizes (a backward rebuilding the
 * forward's problem, the test oracle). */
void na_problem_fill(na_problem *pb, const nat_na_params *p, int64_t batch, int64_t heads,
                     const int64_t *spatial, int64_t dim);

#endif
