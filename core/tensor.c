/* core/tensor.c — persistent tensors, storage reference counts, shape helpers, host copies
 * (see include/nat/tensor.h). */
#include "nat/tensor.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h" /* device check and zero fill */
#include "core/tensor_internal.h"
#include "core/check.h"

size_t nat_dtype_size(nat_dtype t)
{
    switch (t) {
    case NAT_F32: return 4;
    case NAT_F16: return 2;
    case NAT_BF16: return 2;
    case NAT_F64: return 8;
    case NAT_I32: return 4;
    }
    return 0;
}

const char *nat_dtype_name(nat_dtype t)
{
    switch (t) {
    case NAT_F32: return "f32";
    case NAT_F16: return "f16";
    case NAT_BF16: return "bf16";
    case NAT_F64: return "f64";
    case NAT_I32: return "i32";
    }
    return "?";
}

void nat_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        s *= shape[d];
    }
}

int64_t nat_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

nat_status nat_check_dims(int ndim, const int64_t *shape, const char *what)
{
    if (ndim < 0 || ndim > NAT_MAX_DIMS)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: %d dimensions requested; nat tensors have at most %d", what, ndim,
                         NAT_MAX_DIMS);
    /* The element count, checked: an overflowing product (UB) gave a tensor of a few elements for shape
     * [2^62 + 1, 4]. At most 2^60 elements, so the byte count of any dtype (<= 8 bytes) fits too. */
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return nat_error(NAT_ERR_INVALID_ARG, "%s: negative size %" PRId64 " in dimension %d", what, shape[d], d);
        if (__builtin_mul_overflow(n, shape[d], &n) || n > ((int64_t)1 << 60)) {
            char b[160];
            return nat_error(NAT_ERR_INVALID_ARG, "%s: shape %s overflows (more than 2^60 elements)", what,
                             nat_dims_str(ndim, shape, b, sizeof b));
        }
    }
    return NAT_OK;
}

void nat_storage_retain(nat_storage *s)
{
    if (s)
        s->refs++;
}

void nat_storage_release(nat_storage *s)
{
    if (!s || --s->refs > 0)
        return;
    if (!s->external)
        nat_mem_free(s->device, s->data, s->nbytes);
    s->data = NULL;
    if (!s->pooled)
        free(s);
}

/* A persistent header with its own storage struct over `data` (NULL: allocated here from the device's
 * allocator). `external` storage is never freed by nat. */
static nat_status new_persistent(nat_tensor **out, void *data, bool external, nat_dtype dtype, nat_device dev,
                                 int ndim, const int64_t *shape, const char *what)
{
    *out = NULL;
    NAT_TRY(nat_check_dims(ndim, shape, what));
    size_t bytes = (size_t)nat_shape_numel(ndim, shape) * nat_dtype_size(dtype);
    if (external && !data && bytes > 0)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: data is NULL", what);
    nat_tensor *t = calloc(1, sizeof *t);
    nat_storage *s = calloc(1, sizeof *s);
    if (!t || !s) {
        free(t);
        free(s);
        return nat_error(NAT_ERR_OOM, "%s: out of host memory for a tensor header", what);
    }
    if (!external) {
        nat_status st = nat_mem_alloc(dev, bytes, &data);
        if (st != NAT_OK) {
            free(t);
            free(s);
            return st;
        }
    }
    *s = (nat_storage){.data = data, .nbytes = bytes, .device = dev, .refs = 1, .external = external};
    t->storage = s;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    nat_contiguous_strides(ndim, shape, t->stride);
    t->dtype = dtype;
    t->device = dev;
    *out = t;
    return NAT_OK;
}

nat_status nat_tensor_new(nat_tensor **out, nat_dtype dtype, nat_device dev, int ndim, const int64_t *shape)
{
    NAT_CHECK_ARG(out, "nat_tensor_new", "out");
    if (ndim > 0)
        NAT_CHECK_ARG(shape, "nat_tensor_new", "shape");
    /* A CUDA tensor without that device (or without CUDA): say so, rather than "out of memory". */
    NAT_TRY(nat_device_check(dev, "tensor_new"));
    NAT_TRY(new_persistent(out, NULL, false, dtype, dev, ndim, shape, "tensor_new"));
    nat_status st = NAT_KERNEL(NAT_EXEC_DEV(dev), memset0, (*out)->storage->data, (*out)->storage->nbytes);
    if (st != NAT_OK) {
        nat_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

nat_status nat_tensor_wrap(nat_tensor **out, void *data, nat_dtype dtype, nat_device dev, int ndim, const int64_t *shape)
{
    NAT_CHECK_ARG(out, "nat_tensor_wrap", "out");
    NAT_CHECK_ARG(data, "nat_tensor_wrap", "data");
    if (ndim > 0)
        NAT_CHECK_ARG(shape, "nat_tensor_wrap", "shape");
    return new_persistent(out, data, true, dtype, dev, ndim, shape, "tensor_wrap");
}

void nat_tensor_free(nat_tensor *t)
{
    if (!t)
        return;
    nat_tensor_free(t->grad);
    nat_storage_release(t->storage);
    free(t);
}

int64_t nat_tensor_numel(const nat_tensor *t) { return nat_shape_numel(t->ndim, t->shape); }

bool nat_tensor_is_contiguous(const nat_tensor *t)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != s)
            return false;
        s *= t->shape[d];
    }
    return true;
}

bool nat_tensor_same_shape(const nat_tensor *a, const nat_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return false;
    return true;
}

void *nat_tensor_data(const nat_tensor *t)
{
    return (char *)t->storage->data + (size_t)t->offset * nat_dtype_size(t->dtype);
}

float *nat_tensor_f32(const nat_tensor *t) { return (float *)nat_tensor_data(t); }

char *nat_dims_str(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, d ? ", %" PRId64 : "%" PRId64, shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
    return buf;
}

char *nat_shape_str(const nat_tensor *t, char *buf, size_t cap) { return nat_dims_str(t->ndim, t->shape, buf, cap); }

/* Calls fn(user, linear_index, element_offset) for every element in row-major order. */
static void for_each_offset(const nat_tensor *t, void (*fn)(void *, int64_t, int64_t), void *user)
{
    int64_t idx[NAT_MAX_DIMS] = {0};
    int64_t n = nat_tensor_numel(t), off = 0;
    for (int64_t i = 0; i < n; i++) {
        fn(user, i, off);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) {
                off += t->stride[d];
                break;
            }
            off -= t->stride[d] * (t->shape[d] - 1);
            idx[d] = 0;
        }
    }
}

typedef struct {
    float *base;
    float *buf;
} copy_job;

static void copy_in(void *u, int64_t i, int64_t off) { ((copy_job *)u)->base[off] = ((copy_job *)u)->buf[i]; }
static void copy_out(void *u, int64_t i, int64_t off) { ((copy_job *)u)->buf[i] = ((copy_job *)u)->base[off]; }

static nat_status check_host_f32(const nat_tensor *t, int64_t n, const char *what)
{
    if (t->dtype != NAT_F32)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: tensor is %s, expected f32", what, nat_dtype_name(t->dtype));
    if (t->device.kind != NAT_DEV_CPU)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: tensor is on %s; copy it to the CPU first", what,
                         nat_device_name(t->device));
    if (n != nat_tensor_numel(t)) {
        char b[96];
        return nat_error(NAT_ERR_SHAPE, "%s: %" PRId64 " values given for a tensor of shape %s (%" PRId64 " elements)",
                         what, n, nat_shape_str(t, b, sizeof b), nat_tensor_numel(t));
    }
    return NAT_OK;
}

nat_status nat_tensor_copy_from(nat_tensor *t, const float *src, int64_t n)
{
    NAT_CHECK_ARG(t, "nat_tensor_copy_from", "t");
    if (n > 0)
        NAT_CHECK_ARG(src, "nat_tensor_copy_from", "src");
    NAT_TRY(check_host_f32(t, n, "tensor_copy_from"));
    copy_job j = {nat_tensor_f32(t), (float *)src};
    if (nat_tensor_is_contiguous(t))
        memcpy(j.base, src, (size_t)n * sizeof(float));
    else
        for_each_offset(t, copy_in, &j);
    return NAT_OK;
}

nat_status nat_tensor_copy_to(const nat_tensor *t, float *dst, int64_t n)
{
    NAT_CHECK_ARG(t, "nat_tensor_copy_to", "t");
    if (n > 0)
        NAT_CHECK_ARG(dst, "nat_tensor_copy_to", "dst");
    NAT_TRY(check_host_f32(t, n, "tensor_copy_to"));
    copy_job j = {nat_tensor_f32(t), dst};
    if (nat_tensor_is_contiguous(t))
        memcpy(dst, j.base, (size_t)n * sizeof(float));
    else
        for_each_offset(t, copy_out, &j);
    return NAT_OK;
}

static void fill_one(void *u, int64_t i, int64_t off)
{
    (void)i;
    copy_job *j = u;
    j->base[off] = j->buf[0];
}

nat_status nat_tensor_fill(nat_tensor *t, float value)
{
    NAT_CHECK_ARG(t, "nat_tensor_fill", "t");
    NAT_TRY(check_host_f32(t, nat_tensor_numel(t), "tensor_fill"));
    copy_job j = {nat_tensor_f32(t), &value};
    for_each_offset(t, fill_one, &j);
    return NAT_OK;
}
