/* tests/test_shape.c — permute, slice, reshape, permute_reshape, contiguous and pad: values against plain index loops,
 * views sharing storage where promised, finite-difference checks through each op and through chains of
 * views, and errors that name the shapes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/op.h"
#include "support/harness.h"

/* Logical (row-major) values of any tensor, strided or not; the caller frees them. */
static float *values(const nat_tensor *t)
{
    int64_t n = nat_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    TH_OK(nat_tensor_copy_to(t, v, n));
    return v;
}

/* Row-major multi-index of linear index i in `shape`. */
static void unravel(int64_t i, int ndim, const int64_t *shape, int64_t *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
}

static int64_t ravel(int ndim, const int64_t *shape, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * shape[d] + idx[d];
    return off;
}

/* ---- permute ---- */

static nat_status f_permute(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    return nat_permute(ctx, in[0], u, out);
}

START_TEST(permute_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 21);
    static const struct {
        int ndim;
        int64_t shape[4];
        int perm[4];
    } cases[] = {
        {4, {2, 3, 4, 5}, {0, 2, 3, 1}}, {3, {7, 1, 17}, {2, 0, 1}}, {2, {3, 5}, {1, 0}}, {1, {6}, {0}}, {4, {1, 2, 3, 2}, {3, 2, 1, 0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int nd = cases[k].ndim;
        const int *perm = cases[k].perm;
        nat_tensor *x = th_randn(&rng, nd, cases[k].shape, 1, true);
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_permute(ctx, x, perm, &y));
        ck_assert_ptr_eq(y->storage, x->storage); /* a view, no copy */
        ck_assert_int_eq(nat_ctx_tape_length(ctx), 1);
        float *got = values(y);
        const float *xv = nat_tensor_f32(x);
        int64_t n = nat_tensor_numel(x), idx[4], xi[4];
        for (int d = 0; d < nd; d++)
            ck_assert_int_eq(y->shape[d], x->shape[perm[d]]);
        for (int64_t i = 0; i < n; i++) {
            unravel(i, nd, y->shape, idx);
            for (int d = 0; d < nd; d++)
                xi[perm[d]] = idx[d];
            ck_assert_float_eq(got[i], xv[ravel(nd, x->shape, xi)]);
        }
        free(got);
        nat_ctx_free(ctx);
        char what[48];
        snprintf(what, sizeof what, "permute case %zu", k);
        th_gradcheck(what, f_permute, (void *)perm, 1, &x, 1e-2, 2e-3);
        nat_tensor_free(x);
    }
}
END_TEST

/* permute of a permute composes; the gradient goes back through both. */
static nat_status f_permute_twice(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int p1[3] = {1, 2, 0}, p2[3] = {0, 2, 1};
    nat_tensor *t;
    NAT_TRY(nat_permute(ctx, in[0], p1, &t));
    return nat_permute(ctx, t, p2, out);
}

START_TEST(permute_chain_and_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 22);
    int64_t s[3] = {2, 3, 4};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f_permute_twice(ctx, &x, NULL, &y));
    /* p2 ∘ p1: out dim i is x dim p1[p2[i]] = {1, 0, 2}. */
    ck_assert_int_eq(y->shape[0], 3);
    ck_assert_int_eq(y->shape[1], 2);
    ck_assert_int_eq(y->shape[2], 4);
    float *got = values(y);
    for (int64_t a = 0; a < 3; a++)
        for (int64_t b = 0; b < 2; b++)
            for (int64_t c = 0; c < 4; c++)
                ck_assert_float_eq(got[(a * 2 + b) * 4 + c], nat_tensor_f32(x)[(b * 3 + a) * 4 + c]);
    free(got);
    static const int dup[3] = {0, 0, 1}, range[3] = {0, 1, 3};
    ck_assert_int_eq(nat_permute(ctx, x, dup, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 4]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[0, 0, 1]"));
    ck_assert_int_eq(nat_permute(ctx, x, range, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[0, 1, 3]"));
    nat_ctx_free(ctx);
    th_gradcheck("permute twice", f_permute_twice, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

/* ---- slice ---- */

typedef struct slice_args {
    int dim;
    int64_t start, end;
} slice_args;

static nat_status f_slice(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const slice_args *a = u;
    return nat_slice(ctx, in[0], a->dim, a->start, a->end, out);
}

START_TEST(slice_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 23);
    int64_t s[3] = {3, 7, 5};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    static const slice_args cases[] = {{1, 2, 6}, {-1, 0, 1}, {0, 1, 3}, {2, 4, 5}, {1, 0, 7}, {1, 3, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const slice_args *a = &cases[k];
        int d = a->dim < 0 ? a->dim + 3 : a->dim;
        nat_ctx *ctx;
        nat_tensor *y;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(nat_slice(ctx, x, a->dim, a->start, a->end, &y));
        ck_assert_ptr_eq(y->storage, x->storage);
        ck_assert_int_eq(y->shape[d], a->end - a->start);
        float *got = values(y);
        int64_t n = nat_tensor_numel(y), idx[3];
        for (int64_t i = 0; i < n; i++) {
            unravel(i, 3, y->shape, idx);
            idx[d] += a->start;
            ck_assert_float_eq(got[i], nat_tensor_f32(x)[ravel(3, s, idx)]);
        }
        free(got);
        nat_ctx_free(ctx);
        char what[48];
        snprintf(what, sizeof what, "slice case %zu", k);
        th_gradcheck(what, f_slice, (void *)a, 1, &x, 1e-2, 2e-3);
    }
    nat_tensor_free(x);
}
END_TEST

/* A slice of a permuted view of a slice: offsets and strides compose, and the gradient lands in the right
 * band of the stored tensor (zero elsewhere). */
static nat_status f_slice_chain(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int perm[3] = {2, 0, 1};
    nat_tensor *a, *b;
    NAT_TRY(nat_slice(ctx, in[0], 0, 1, 4, &a)); /* [3, 6, 5] */
    NAT_TRY(nat_permute(ctx, a, perm, &b));      /* [5, 3, 6] */
    return nat_slice(ctx, b, 2, 2, 5, out);      /* [5, 3, 3] */
}

START_TEST(slice_chain_and_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 24);
    int64_t s[3] = {5, 6, 5};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f_slice_chain(ctx, &x, NULL, &y));
    float *got = values(y);
    for (int64_t c = 0; c < 5; c++)
        for (int64_t a = 0; a < 3; a++)
            for (int64_t b = 0; b < 3; b++)
                ck_assert_float_eq(got[(c * 3 + a) * 3 + b], nat_tensor_f32(x)[((a + 1) * 6 + b + 2) * 5 + c]);
    free(got);
    /* Backward with ones: 1 inside the band, 0 outside. */
    nat_tensor *ones;
    TH_OK(nat_ctx_empty(ctx, &ones, NAT_F32, y->ndim, y->shape));
    TH_OK(nat_fill_value(ones, 1.0f));
    TH_OK(nat_backward_from(ctx, y, ones));
    for (int64_t a = 0; a < 5; a++)
        for (int64_t b = 0; b < 6; b++)
            for (int64_t c = 0; c < 5; c++) {
                float want = (a >= 1 && a < 4 && b >= 2 && b < 5) ? 1.0f : 0.0f;
                ck_assert_float_eq(nat_tensor_f32(x->grad)[(a * 6 + b) * 5 + c], want);
            }
    ck_assert_int_eq(nat_slice(ctx, x, 1, 2, 7, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, 6, 5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2:7]"));
    ck_assert_int_eq(nat_slice(ctx, x, 0, 3, 2, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_slice(ctx, x, 0, -1, 2, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_slice(ctx, x, 3, 0, 1, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "dim 3"));
    ck_assert_int_eq(nat_slice(ctx, x, -4, 0, 1, &y), NAT_ERR_INVALID_ARG);
    nat_ctx_free(ctx);
    th_gradcheck("slice/permute/slice chain", f_slice_chain, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

/* ---- reshape ---- */

typedef struct reshape_args {
    int ndim;
    int64_t shape[4];
    int permute_first; /* reshape a transposed view (forces the copy path) */
} reshape_args;

static nat_status f_reshape(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const reshape_args *a = u;
    nat_tensor *x = in[0];
    if (a->permute_first) {
        static const int perm[3] = {2, 1, 0};
        NAT_TRY(nat_permute(ctx, in[0], perm, &x));
    }
    return nat_reshape(ctx, x, a->ndim, a->shape, out);
}

START_TEST(reshape_view_copy_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 25);
    int64_t s[3] = {2, 3, 4};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    static const reshape_args cases[] = {
        {2, {6, 4}, 0}, {2, {-1, 12}, 0}, {4, {2, -1, 2, 3}, 0}, {1, {-1}, 0},
        {2, {4, 6}, 1}, {3, {-1, 3, 1}, 1}, {4, {1, 24, 1, 1}, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const reshape_args *a = &cases[k];
        nat_ctx *ctx;
        nat_tensor *y, *src;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(f_reshape(ctx, &x, (void *)a, &y));
        ck_assert_int_eq(nat_tensor_numel(y), 24);
        ck_assert(nat_tensor_is_contiguous(y));
        for (int d = 0; d < a->ndim; d++)
            if (a->shape[d] != -1)
                ck_assert_int_eq(y->shape[d], a->shape[d]);
        if (a->permute_first) {
            ck_assert_ptr_ne(y->storage, x->storage); /* strided input: copied */
            static const int perm[3] = {2, 1, 0};
            TH_OK(nat_permute(ctx, x, perm, &src));
        } else {
            ck_assert_ptr_eq(y->storage, x->storage); /* contiguous input: a view */
            src = x;
        }
        float *want = values(src), *got = values(y);
        th_assert_close_f(got, want, 24, 0.0, "reshape keeps row-major order");
        free(want);
        free(got);
        nat_ctx_free(ctx);
        char what[48];
        snprintf(what, sizeof what, "reshape case %zu", k);
        th_gradcheck(what, f_reshape, (void *)a, 1, &x, 1e-2, 2e-3);
    }
    nat_tensor_free(x);
}
END_TEST

START_TEST(reshape_errors_name_shapes)
{
    nat_rng rng;
    nat_rng_seed(&rng, 26);
    int64_t s[3] = {2, 3, 4};
    nat_tensor *x = th_randn(&rng, 3, s, 1, false);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    int64_t bad[2] = {5, 5}, two[3] = {-1, 2, -1}, neg[2] = {-2, -12}, noinf[2] = {5, -1}, zero[2] = {0, -1};
    ck_assert_int_eq(nat_reshape(ctx, x, 2, bad, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 4]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, 5]"));
    ck_assert_int_eq(nat_reshape(ctx, x, 2, noinf, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 4]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[5, -1]"));
    ck_assert_int_eq(nat_reshape(ctx, x, 2, zero, &y), NAT_ERR_SHAPE);
    ck_assert_int_eq(nat_reshape(ctx, x, 3, two, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "more than one -1"));
    ck_assert_int_eq(nat_reshape(ctx, x, 2, neg, &y), NAT_ERR_INVALID_ARG);
    ck_assert_int_eq(nat_reshape(ctx, x, 7, bad, &y), NAT_ERR_INVALID_ARG);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
}
END_TEST

/* ---- permute_reshape ---- */

/* The NA layer's head split: [2, 3, 12] read as [2, 3, 3, 2, 2], perm {2, 0, 3, 1, 4}, stored [3, 2, 2, 3, 2]. */
static const int64_t PR_VIEW[5] = {2, 3, 3, 2, 2}, PR_OUT[5] = {3, 2, 2, 3, 2};
static const int PR_PERM[5] = {2, 0, 3, 1, 4};

static nat_status f_permute_reshape(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    return nat_permute_reshape(ctx, in[0], 5, PR_VIEW, PR_PERM, 5, PR_OUT, out);
}

/* The same through the view chain reshape -> permute -> reshape, which it replaces. */
static nat_status f_permute_reshape_chain(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    (void)u;
    nat_tensor *t;
    NAT_TRY(nat_reshape(ctx, in[0], 5, PR_VIEW, &t));
    NAT_TRY(nat_permute(ctx, t, PR_PERM, &t));
    return nat_reshape(ctx, t, 5, PR_OUT, out);
}

/* Used twice: the second backward must add to the gradient the first one wrote. */
static nat_status f_permute_reshape_twice(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    nat_tensor *a, *b;
    NAT_TRY(f_permute_reshape(ctx, in, u, &a));
    NAT_TRY(f_permute_reshape(ctx, in, u, &b));
    NAT_TRY(nat_mul(ctx, a, b, &a));
    return nat_add(ctx, a, b, out);
}

START_TEST(permute_reshape_reference_grad_and_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 31);
    int64_t s[3] = {2, 3, 12};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y, *z;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f_permute_reshape(ctx, &x, NULL, &y));
    ck_assert(nat_tensor_is_contiguous(y));
    ck_assert_int_eq(y->ndim, 5);
    float *got = values(y);
    const float *xv = nat_tensor_f32(x);
    for (int64_t i = 0; i < 72; i++) { /* out[o] = view[idx] with idx[perm[d]] = o's index d */
        int64_t oi[5], vi[5];
        unravel(i, 5, PR_OUT, oi);
        for (int d = 0; d < 5; d++)
            vi[PR_PERM[d]] = oi[d];
        ck_assert_float_eq(got[i], xv[ravel(5, PR_VIEW, vi)]);
    }
    TH_OK(f_permute_reshape_chain(ctx, &x, NULL, &z));
    float *want = values(z);
    ck_assert_mem_eq(got, want, 72 * sizeof(float));
    free(got), free(want);
    /* errors that name the shapes */
    int64_t wrong[5] = {3, 2, 2, 3, 3};
    ck_assert_int_eq(nat_permute_reshape(ctx, x, 5, PR_VIEW, PR_PERM, 5, wrong, &y), NAT_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[2, 3, 12]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[3, 2, 2, 3, 3]"));
    static const int dup[5] = {2, 0, 3, 1, 1};
    ck_assert_int_eq(nat_permute_reshape(ctx, x, 5, PR_VIEW, dup, 5, PR_OUT, &y), NAT_ERR_INVALID_ARG);
    static const int swap[3] = {0, 2, 1};
    TH_OK(nat_permute(ctx, x, swap, &z));
    int64_t v3[3] = {2, 12, 3};
    ck_assert_int_eq(nat_permute_reshape(ctx, z, 3, v3, swap, 3, s, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "contiguous"));
    nat_ctx_free(ctx);
    th_gradcheck("permute_reshape", f_permute_reshape, NULL, 1, &x, 1e-2, 2e-3);
    th_gradcheck("permute_reshape used twice", f_permute_reshape_twice, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

/* ---- contiguous ---- */

static nat_status f_contiguous_of_permute(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int perm[3] = {1, 2, 0};
    nat_tensor *t;
    NAT_TRY(nat_permute(ctx, in[0], perm, &t));
    return nat_contiguous(ctx, t, out);
}

START_TEST(contiguous_identity_copy_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 27);
    int64_t s[3] = {3, 1, 17};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y, *p;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(nat_contiguous(ctx, x, &y));
    ck_assert_ptr_eq(y, x);
    ck_assert_int_eq(nat_ctx_tape_length(ctx), 0);
    /* A contiguous slice (offset, no gaps) is returned as is too. */
    TH_OK(nat_slice(ctx, x, 0, 1, 3, &p));
    TH_OK(nat_contiguous(ctx, p, &y));
    ck_assert_ptr_eq(y, p);
    TH_OK(f_contiguous_of_permute(ctx, &x, NULL, &y));
    ck_assert(nat_tensor_is_contiguous(y));
    ck_assert_ptr_ne(y->storage, x->storage);
    static const int perm[3] = {1, 2, 0};
    TH_OK(nat_permute(ctx, x, perm, &p));
    float *want = values(p);
    th_assert_close_f(nat_tensor_f32(y), want, nat_tensor_numel(x), 0.0, "contiguous copy of a permuted view");
    free(want);
    nat_ctx_free(ctx);
    th_gradcheck("contiguous of a permuted view", f_contiguous_of_permute, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

/* ---- pad ---- */

typedef struct pad_args {
    int64_t before[4], after[4];
    float value;
    int permute_first;
} pad_args;

static nat_status f_pad(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    const pad_args *a = u;
    nat_tensor *x = in[0];
    if (a->permute_first) {
        static const int perm[3] = {1, 0, 2};
        NAT_TRY(nat_permute(ctx, in[0], perm, &x));
    }
    return nat_pad(ctx, x, a->before, a->after, a->value, out);
}

START_TEST(pad_reference_and_grad)
{
    nat_rng rng;
    nat_rng_seed(&rng, 28);
    int64_t s[3] = {2, 3, 4};
    nat_tensor *x = th_randn(&rng, 3, s, 1, true);
    static const pad_args cases[] = {
        {{0, 1, 2}, {1, 0, 3}, 0.5f, 0}, {{0, 0, 0}, {0, 0, 0}, 0.0f, 0}, {{2, 2, 2}, {2, 2, 2}, -1.0f, 0},
        {{1, 0, 0}, {0, 0, 5}, 0.0f, 1}, /* pad a permuted [3, 2, 4] view */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const pad_args *a = &cases[k];
        nat_ctx *ctx;
        nat_tensor *y, *src = x;
        TH_OK(nat_ctx_new(&ctx, NAT_CPU));
        TH_OK(f_pad(ctx, &x, (void *)a, &y));
        if (a->permute_first) {
            static const int perm[3] = {1, 0, 2};
            TH_OK(nat_permute(ctx, x, perm, &src));
        }
        float *xv = values(src);
        int64_t n = nat_tensor_numel(y), idx[3];
        for (int d = 0; d < 3; d++)
            ck_assert_int_eq(y->shape[d], src->shape[d] + a->before[d] + a->after[d]);
        for (int64_t i = 0; i < n; i++) {
            unravel(i, 3, y->shape, idx);
            bool inside = true;
            for (int d = 0; d < 3; d++) {
                idx[d] -= a->before[d];
                inside = inside && idx[d] >= 0 && idx[d] < src->shape[d];
            }
            float want = inside ? xv[ravel(3, src->shape, idx)] : a->value;
            ck_assert_float_eq(nat_tensor_f32(y)[i], want);
        }
        free(xv);
        nat_ctx_free(ctx);
        char what[48];
        snprintf(what, sizeof what, "pad case %zu", k);
        th_gradcheck(what, f_pad, (void *)a, 1, &x, 1e-2, 2e-3);
    }
    nat_tensor_free(x);
}
END_TEST

/* Padding then slicing the padding off gives x back, and the gradient of the round trip is the identity. */
static nat_status f_pad_crop(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int64_t before[2] = {3, 1}, after[2] = {2, 4};
    nat_tensor *p, *a;
    NAT_TRY(nat_pad(ctx, in[0], before, after, 9.0f, &p));
    NAT_TRY(nat_slice(ctx, p, 0, 3, 3 + in[0]->shape[0], &a));
    return nat_slice(ctx, a, 1, 1, 1 + in[0]->shape[1], out);
}

START_TEST(pad_crop_roundtrip_and_errors)
{
    nat_rng rng;
    nat_rng_seed(&rng, 29);
    int64_t s[2] = {7, 5};
    nat_tensor *x = th_randn(&rng, 2, s, 1, true);
    nat_ctx *ctx;
    nat_tensor *y;
    TH_OK(nat_ctx_new(&ctx, NAT_CPU));
    TH_OK(f_pad_crop(ctx, &x, NULL, &y));
    float *got = values(y);
    th_assert_close_f(got, nat_tensor_f32(x), 35, 0.0, "pad then crop");
    free(got);
    int64_t b_bad[2] = {0, -1}, a_ok[2] = {0, 0};
    ck_assert_int_eq(nat_pad(ctx, x, b_bad, a_ok, 0.0f, &y), NAT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "[7, 5]"));
    ck_assert_ptr_nonnull(strstr(nat_error_message(), "dim 1"));
    ck_assert_int_eq(nat_pad(ctx, x, NULL, a_ok, 0.0f, &y), NAT_ERR_INVALID_ARG);
    nat_ctx_free(ctx);
    th_gradcheck("pad then crop", f_pad_crop, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

/* A step of NAT's shape traffic: [N, C, H, W] -> [N, H, W, C] -> [N, H·W, C] (copy) -> pad tokens -> slice. */
static nat_status f_nat_traffic(nat_ctx *ctx, nat_tensor **in, void *u, nat_tensor **out)
{
    static const int perm[4] = {0, 2, 3, 1};
    nat_tensor *a, *b, *c;
    NAT_TRY(nat_permute(ctx, in[0], perm, &a));
    int64_t shape[3] = {in[0]->shape[0], -1, in[0]->shape[1]};
    NAT_TRY(nat_reshape(ctx, a, 3, shape, &b));
    static const int64_t before[3] = {0, 2, 0}, after[3] = {0, 1, 0};
    NAT_TRY(nat_pad(ctx, b, before, after, 0.0f, &c));
    return nat_slice(ctx, c, 1, 1, c->shape[1] - 2, out);
}

START_TEST(view_chain_gradcheck)
{
    nat_rng rng;
    nat_rng_seed(&rng, 30);
    int64_t s[4] = {2, 3, 3, 2};
    nat_tensor *x = th_randn(&rng, 4, s, 1, true);
    th_gradcheck("permute/reshape/pad/slice chain", f_nat_traffic, NULL, 1, &x, 1e-2, 2e-3);
    nat_tensor_free(x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shape");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"permute_reference_and_grad", permute_reference_and_grad},
        {"permute_chain_and_errors", permute_chain_and_errors},
        {"slice_reference_and_grad", slice_reference_and_grad},
        {"slice_chain_and_errors", slice_chain_and_errors},
        {"reshape_view_copy_and_grad", reshape_view_copy_and_grad},
        {"reshape_errors_name_shapes", reshape_errors_name_shapes},
        {"permute_reshape_reference_grad_and_errors", permute_reshape_reference_grad_and_errors},
        {"contiguous_identity_copy_and_grad", contiguous_identity_copy_and_grad},
        {"pad_reference_and_grad", pad_reference_and_grad},
        {"pad_crop_roundtrip_and_errors", pad_crop_roundtrip_and_errors},
        {"view_chain_gradcheck", view_chain_gradcheck},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
