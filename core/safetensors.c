/* core/safetensors.c — safetensors checkpoints: reader, writer, strict model loading
 * (see include/nat/safetensors.h for the format).
 *
 * Reading: nat_st_open parses the JSON header with cJSON into a table of entries sorted by name
 * (binary search for lookups; equal neighbours are duplicate names), then checks the offsets against
 * the file size and that the tensors tile the data buffer. All of that happens before any data is
 * touched, so every later read is in range; the data itself is read with pread when asked for.
 * Writing: nat_st_writer_add copies the values (a writer holds a snapshot, and the caller's tensors
 * may change or die afterwards); nat_st_writer_save streams them to a temporary file and renames it
 * over the target. Bytes on disk are little-endian whatever the host: values are stored and loaded
 * through explicit byte-order helpers, which compile to plain copies on little-endian machines.
 */
#define _POSIX_C_SOURCE 200809L
#include "nat/safetensors.h"

#include "nat/cuda.h" /* nat_tensor_to / nat_tensor_copy: device tensors in and out */
#include "core/half.h" /* f16 / bf16 payloads widened to f32 */

#include <cjson/cJSON.h> // header JSON
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/check.h"

/* Dimensions and offsets are JSON numbers, which cJSON holds as doubles: integers are exact to 2^53. */
#define ST_MAX_INT 9007199254740992.0
/* No tensor may claim more bytes than this (keeps every size computation far from overflow). */
#define ST_MAX_BYTES ((uint64_t)1 << 60)
/* Conversion chunk for the non-f32 dtypes, in bytes. */
#define ST_CHUNK 65536

/* The fixed-size dtypes of the format; nat = -1 where nat has no matching dtype. */
typedef struct {
    const char *name;
    int size;
    int nat;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4, NAT_F32}, {"F16", 2, NAT_F16}, {"BF16", 2, NAT_BF16}, {"F64", 8, NAT_F64}, {"I32", 4, NAT_I32},
    {"I64", 8, -1},      {"I16", 2, -1},      {"I8", 1, -1},         {"U8", 1, -1},       {"U16", 2, -1},
    {"U32", 4, -1},      {"U64", 8, -1},      {"BOOL", 1, -1},       {"F8_E4M3", 1, -1},  {"F8_E5M2", 1, -1},
};

static const st_dtype *st_dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return &st_dtypes[i];
    return NULL;
}

static const char *st_dtype_of(nat_dtype t) { return t == NAT_I32 ? "I32" : "F32"; }

/* ---- byte order ---- */

static int host_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

static uint64_t ld_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

static uint16_t ld_u16(const unsigned char *b) { return (uint16_t)(b[0] | (b[1] << 8)); }

static void st_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

/* Reverses the bytes of each `size`-byte element (little-endian file <-> big-endian host). */
static void swap_elems(void *p, size_t n, int size)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++, b += size)
        for (int j = 0; j < size / 2; j++) {
            unsigned char t = b[j];
            b[j] = b[size - 1 - j];
            b[size - 1 - j] = t;
        }
}

/* ---- reading ---- */

typedef struct {
    char *name;
    const st_dtype *dt;
    int ndim;
    int64_t shape[NAT_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* bytes, relative to the data buffer */
} st_entry;

struct nat_st_file {
    char *path;
    int fd;
    uint64_t data_start, data_size;
    int n;
    st_entry *e; /* sorted by name */
    int n_meta;
    char **meta_key, **meta_val;
};

/* "checkpoint <path>: <message>" with the given code. */
static nat_status st_err(nat_status code, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static nat_status st_err(nat_status code, const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nat_error(code, "checkpoint %s: %s", path, msg);
}

/* A short rendering of a JSON value for messages ("-1", "\"3\"", "[1, 2]"). */
static const char *json_str(const cJSON *j, char *buf, int cap)
{
    if (!cJSON_PrintPreallocated((cJSON *)j, buf, cap, 0))
        snprintf(buf, (size_t)cap, "(a long value)");
    return buf;
}

/* A non-negative integer that a double holds exactly. */
static int json_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return 0;
    double d = j->valuedouble;
    if (!(d >= 0) || d > ST_MAX_INT || d != floor(d))
        return 0;
    *v = (uint64_t)d;
    return 1;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int cmp_entry_offsets(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static nat_status parse_metadata(nat_st_file *f, const cJSON *meta)
{
    const char *p = f->path;
    if (f->meta_key)
        return st_err(NAT_ERR_FORMAT, p, "\"__metadata__\" appears twice in the header");
    if (!cJSON_IsObject(meta))
        return st_err(NAT_ERR_FORMAT, p, "\"__metadata__\" is not an object of strings");
    int n = cJSON_GetArraySize(meta);
    f->meta_key = calloc((size_t)n + 1, sizeof *f->meta_key);
    f->meta_val = calloc((size_t)n + 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val)
        return st_err(NAT_ERR_OOM, p, "out of memory reading the metadata");
    for (const cJSON *m = meta->child; m; m = m->next) {
        char b[64];
        if (!cJSON_IsString(m))
            return st_err(NAT_ERR_FORMAT, p, "metadata '%s' is %s, not a string (metadata values are strings only)",
                          m->string, json_str(m, b, sizeof b));
        for (int i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_key[i], m->string) == 0)
                return st_err(NAT_ERR_FORMAT, p, "metadata '%s' appears twice", m->string);
        f->meta_key[f->n_meta] = strdup(m->string);
        f->meta_val[f->n_meta] = strdup(m->valuestring);
        f->n_meta++;
        if (!f->meta_key[f->n_meta - 1] || !f->meta_val[f->n_meta - 1])
            return st_err(NAT_ERR_OOM, p, "out of memory reading the metadata");
    }
    return NAT_OK;
}

/* Fills e from the header entry j (name already set); checks it on its own. */
static nat_status parse_entry(const nat_st_file *f, st_entry *e, const cJSON *j)
{
    const char *p = f->path, *nm = e->name;
    char b[64], sb[160];
    if (!cJSON_IsObject(j))
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s': entry is %s, not an object", nm, json_str(j, b, sizeof b));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!dt || !sh || !of) {
        const char *what = !dt ? "dtype" : !sh ? "shape" : "data_offsets";
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s' has no \"%s\"", nm, what);
    }

    if (!cJSON_IsString(dt))
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s': dtype %s is not a string", nm, json_str(dt, b, sizeof b));
    e->dt = st_dtype_find(dt->valuestring);
    if (!e->dt)
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s' has unknown dtype '%s'", nm, dt->valuestring);

    if (!cJSON_IsArray(sh))
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s': shape %s is not an array", nm, json_str(sh, b, sizeof b));
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > NAT_MAX_DIMS)
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s' has %d dimensions; nat supports at most %d", nm, ndim,
                      NAT_MAX_DIMS);
    e->ndim = ndim;
    int d = 0;
    int zero = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v))
            return st_err(NAT_ERR_FORMAT, p, "tensor '%s': dimension %d of the shape is %s, not a non-negative integer",
                          nm, d, json_str(x, b, sizeof b));
        e->shape[d] = (int64_t)v;
        zero |= v == 0;
    }
    /* Element count and bytes, with overflow checked (a zero anywhere makes it 0 whatever the rest). */
    uint64_t numel = 1;
    for (d = 0; d < ndim && !zero; d++) {
        uint64_t v = (uint64_t)e->shape[d];
        if (numel > ST_MAX_BYTES / v / (uint64_t)e->dt->size)
            return st_err(NAT_ERR_FORMAT, p, "tensor '%s': shape %s is too large (the byte count overflows)", nm,
                          nat_dims_str(ndim, e->shape, sb, sizeof sb));
        numel *= v;
    }
    e->numel = zero ? 0 : (int64_t)numel;
    uint64_t bytes = (uint64_t)e->numel * (uint64_t)e->dt->size;

    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &e->begin) ||
        !json_uint(of->child->next, &e->end))
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s': data_offsets %s is not a pair of non-negative integers", nm,
                      json_str(of, b, sizeof b));
    if (e->begin > e->end)
        return st_err(NAT_ERR_FORMAT, p, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                      nm, e->begin, e->end);
    if (e->end - e->begin != bytes)
        return st_err(NAT_ERR_FORMAT, p,
                      "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                      " bytes, but shape %s of %s needs %" PRIu64,
                      nm, e->begin, e->end, e->end - e->begin, nat_dims_str(ndim, e->shape, sb, sizeof sb), e->dt->name,
                      bytes);
    if (e->end > f->data_size)
        return st_err(NAT_ERR_FORMAT, p,
                      "truncated: tensor '%s' ends at byte %" PRIu64 " of the data, which has only %" PRIu64 " bytes",
                      nm, e->end, f->data_size);
    return NAT_OK;
}

static nat_status parse_header(nat_st_file *f, const char *hdr, size_t len)
{
    const char *p = f->path, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, len, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        return st_err(NAT_ERR_FORMAT, p, "header is not valid JSON (error near byte %zu of %zu)", at, len);
    }
    nat_status st = NAT_OK;
    for (const char *c = end; c < hdr + len; c++)
        if (*c != ' ' && *c != '\n' && *c != '\r' && *c != '\t') {
            st = st_err(NAT_ERR_FORMAT, p, "header has bytes after the JSON object (at byte %zu of %zu)",
                        (size_t)(c - hdr), len);
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = st_err(NAT_ERR_FORMAT, p, "header is not a JSON object");
        goto done;
    }
    int n = 0;
    for (const cJSON *j = root->child; j; j = j->next)
        n += strcmp(j->string, "__metadata__") != 0;
    f->e = calloc((size_t)n + 1, sizeof *f->e);
    if (!f->e) {
        st = st_err(NAT_ERR_OOM, p, "out of memory for %d header entries", n);
        goto done;
    }
    for (const cJSON *j = root->child; j; j = j->next) {
        if (strcmp(j->string, "__metadata__") == 0) {
            if ((st = parse_metadata(f, j)) != NAT_OK)
                goto done;
            continue;
        }
        st_entry *e = &f->e[f->n++];
        if (!(e->name = strdup(j->string))) {
            st = st_err(NAT_ERR_OOM, p, "out of memory for tensor names");
            goto done;
        }
        if ((st = parse_entry(f, e, j)) != NAT_OK)
            goto done;
    }

    qsort(f->e, (size_t)f->n, sizeof *f->e, cmp_entry_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->e[i - 1].name, f->e[i].name) == 0) {
            st = st_err(NAT_ERR_FORMAT, p, "tensor '%s' appears twice in the header", f->e[i].name);
            goto done;
        }

    /* The tensors must tile the data buffer: sorted by offset, each begins where the last ended. */
    const st_entry **by_off = malloc(((size_t)f->n + 1) * sizeof *by_off);
    if (!by_off) {
        st = st_err(NAT_ERR_OOM, p, "out of memory checking offsets");
        goto done;
    }
    for (int i = 0; i < f->n; i++)
        by_off[i] = &f->e[i];
    qsort(by_off, (size_t)f->n, sizeof *by_off, cmp_entry_offsets);
    uint64_t at = 0;
    for (int i = 0; i < f->n && st == NAT_OK; i++) {
        const st_entry *e = by_off[i];
        if (e->begin < at)
            st = st_err(NAT_ERR_FORMAT, p,
                        "tensor '%s' (data_offsets [%" PRIu64 ", %" PRIu64
                        "]) overlaps tensor '%s' (which ends at %" PRIu64 ")",
                        e->name, e->begin, e->end, by_off[i - 1]->name, at);
        else if (e->begin > at)
            st = st_err(NAT_ERR_FORMAT, p,
                        "gap in the data: bytes [%" PRIu64 ", %" PRIu64 ") before tensor '%s' belong to no tensor", at,
                        e->begin, e->name);
        at = e->end;
    }
    if (st == NAT_OK && at != f->data_size)
        st = st_err(NAT_ERR_FORMAT, p,
                    "%" PRIu64 " trailing bytes after the last tensor's data (which ends at %" PRIu64 ")",
                    f->data_size - at, at);
    free(by_off);
done:
    cJSON_Delete(root);
    return st;
}

/* Reads exactly n bytes at offset off, or fails naming what was being read. */
static nat_status read_full(const nat_st_file *f, uint64_t off, void *buf, size_t n, const char *what)
{
    unsigned char *b = buf;
    while (n > 0) {
        ssize_t r = pread(f->fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return st_err(NAT_ERR_IO, f->path, "reading %s: %s", what, strerror(errno));
        if (r == 0)
            return st_err(NAT_ERR_IO, f->path, "reading %s: unexpected end of file (did the file change?)", what);
        b += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return NAT_OK;
}

nat_status nat_st_open(nat_st_file **out, const char *path)
{
    NAT_CHECK_ARG(out, "nat_st_open", "out");
    NAT_CHECK_ARG(path, "nat_st_open", "path");
    if (!out || !path)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_open: NULL %s", out ? "path" : "out");
    *out = NULL;
    nat_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return st_err(NAT_ERR_OOM, path, "out of memory");
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    nat_status st = NAT_OK;
    struct stat sb;
    unsigned char len8[8];
    char *hdr = NULL;
    if (f->fd < 0) {
        st = st_err(NAT_ERR_IO, path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    if (fstat(f->fd, &sb) != 0) {
        st = st_err(NAT_ERR_IO, path, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = st_err(NAT_ERR_IO, path, "not a regular file");
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        st = st_err(NAT_ERR_FORMAT, path,
                    "truncated: the file has %" PRIu64 " bytes, too few for the 8-byte header length", size);
        goto fail;
    }
    if ((st = read_full(f, 0, len8, 8, "the header length")) != NAT_OK)
        goto fail;
    uint64_t hlen = ld_u64(len8);
    if (hlen > NAT_ST_MAX_HEADER) {
        st = st_err(NAT_ERR_FORMAT, path,
                    "header length %" PRIu64 " is absurd (the limit is %u bytes): not a safetensors file?", hlen,
                    NAT_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        st = st_err(NAT_ERR_FORMAT, path,
                    "truncated: the header should be %" PRIu64 " bytes, but only %" PRIu64 " follow", hlen, size - 8);
        goto fail;
    }
    f->data_start = 8 + hlen;
    f->data_size = size - f->data_start;
    if (!(hdr = malloc((size_t)hlen + 1))) {
        st = st_err(NAT_ERR_OOM, path, "out of memory for a %" PRIu64 "-byte header", hlen);
        goto fail;
    }
    if ((st = read_full(f, 8, hdr, (size_t)hlen, "the header")) != NAT_OK)
        goto fail;
    hdr[hlen] = '\0';
    if ((st = parse_header(f, hdr, (size_t)hlen)) != NAT_OK)
        goto fail;
    free(hdr);
    *out = f;
    return NAT_OK;
fail:
    free(hdr);
    nat_st_close(f);
    return st;
}

void nat_st_close(nat_st_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    for (int i = 0; i < f->n; i++)
        free(f->e[i].name);
    free(f->e);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->meta_key);
    free(f->meta_val);
    free(f->path);
    free(f);
}

const char *nat_st_path(const nat_st_file *f) { return f->path; }

int nat_st_count(const nat_st_file *f) { return f->n; }

const char *nat_st_name(const nat_st_file *f, int i) { return i >= 0 && i < f->n ? f->e[i].name : NULL; }

int nat_st_find(const nat_st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->e[mid].name, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

const char *nat_st_dtype(const nat_st_file *f, int i) { return i >= 0 && i < f->n ? f->e[i].dt->name : NULL; }

nat_status nat_st_info(const nat_st_file *f, int i, nat_dtype *dtype, int *ndim, int64_t *shape)
{
    NAT_CHECK_ARG(f, "nat_st_info", "f");
    if (i < 0 || i >= f->n)
        return st_err(NAT_ERR_INVALID_ARG, f->path, "tensor index %d is out of range (the file has %d)", i, f->n);
    const st_entry *e = &f->e[i];
    if (ndim)
        *ndim = e->ndim;
    if (shape)
        memcpy(shape, e->shape, (size_t)e->ndim * sizeof *shape);
    if (e->dt->nat < 0)
        return st_err(NAT_ERR_UNSUPPORTED, f->path, "tensor '%s' is %s, which nat has no dtype for", e->name,
                      e->dt->name);
    if (dtype)
        *dtype = (nat_dtype)e->dt->nat;
    return NAT_OK;
}

const char *nat_st_metadata(const nat_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_key[i], key) == 0)
            return f->meta_val[i];
    return NULL;
}

/* The entry called `name` whose element count is n, or an error. */
static nat_status lookup(const nat_st_file *f, const char *name, int64_t n, const st_entry **out)
{
    int i = nat_st_find(f, name);
    if (i < 0)
        return st_err(NAT_ERR_FORMAT, f->path, "no tensor '%s'", name);
    const st_entry *e = &f->e[i];
    if (n != e->numel) {
        char sb[160];
        return st_err(NAT_ERR_SHAPE, f->path,
                      "tensor '%s' has shape %s (%" PRId64 " elements); %" PRId64 " were requested", name,
                      nat_dims_str(e->ndim, e->shape, sb, sizeof sb), e->numel, n);
    }
    *out = e;
    return NAT_OK;
}

/* Reads entry e (any float dtype) into dst as f32. */
static nat_status read_entry_f32(const nat_st_file *f, const st_entry *e, float *dst)
{
    char what[320];
    snprintf(what, sizeof what, "tensor '%s'", e->name);
    uint64_t off = f->data_start + e->begin;
    size_t n = (size_t)e->numel;
    int es = e->dt->size;
    if (e->dt->nat == NAT_F32) {
        NAT_TRY(read_full(f, off, dst, n * 4, what));
        if (!host_le())
            swap_elems(dst, n, 4);
        return NAT_OK;
    }
    unsigned char buf[ST_CHUNK];
    size_t per = ST_CHUNK / (size_t)es;
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        NAT_TRY(read_full(f, off + i * (size_t)es, buf, m * (size_t)es, what));
        for (size_t k = 0; k < m; k++) {
            const unsigned char *b = buf + k * (size_t)es;
            if (e->dt->nat == NAT_F16)
                dst[i + k] = half_f16_to_f32(ld_u16(b));
            else if (e->dt->nat == NAT_BF16)
                dst[i + k] = half_bf16_to_f32(ld_u16(b));
            else {
                uint64_t u = ld_u64(b);
                double d;
                memcpy(&d, &u, 8);
                dst[i + k] = (float)d;
            }
        }
    }
    return NAT_OK;
}

static int is_float_dtype(const st_dtype *dt)
{
    return dt->nat == NAT_F32 || dt->nat == NAT_F16 || dt->nat == NAT_BF16 || dt->nat == NAT_F64;
}

nat_status nat_st_read_f32(nat_st_file *f, const char *name, float *dst, int64_t n)
{
    NAT_CHECK_ARG(f, "nat_st_read_f32", "f");
    NAT_CHECK_ARG(name, "nat_st_read_f32", "name");
    if (n > 0)
        NAT_CHECK_ARG(dst, "nat_st_read_f32", "dst");
    const st_entry *e = NULL;
    NAT_TRY(lookup(f, name, n, &e));
    if (!is_float_dtype(e->dt))
        return st_err(NAT_ERR_UNSUPPORTED, f->path, "tensor '%s' is %s; nat_st_read_f32 reads F32, F16, BF16 and F64%s",
                      name, e->dt->name, e->dt->nat == NAT_I32 ? " (use nat_st_read_i32)" : "");
    return read_entry_f32(f, e, dst);
}

nat_status nat_st_read_i32(nat_st_file *f, const char *name, int32_t *dst, int64_t n)
{
    NAT_CHECK_ARG(f, "nat_st_read_i32", "f");
    NAT_CHECK_ARG(name, "nat_st_read_i32", "name");
    if (n > 0)
        NAT_CHECK_ARG(dst, "nat_st_read_i32", "dst");
    const st_entry *e = NULL;
    NAT_TRY(lookup(f, name, n, &e));
    if (e->dt->nat != NAT_I32)
        return st_err(NAT_ERR_UNSUPPORTED, f->path, "tensor '%s' is %s; nat_st_read_i32 reads I32", name, e->dt->name);
    char what[320];
    snprintf(what, sizeof what, "tensor '%s'", e->name);
    NAT_TRY(read_full(f, f->data_start + e->begin, dst, (size_t)n * 4, what));
    if (!host_le())
        swap_elems(dst, (size_t)n, 4);
    return NAT_OK;
}

/* ---- strict loading ---- */

nat_status nat_st_load_into(nat_st_file *f, nat_tensor **tensors, const char **names, int n, int strict)
{
    NAT_CHECK_ARG(f, "nat_st_load_into", "f");
    if (n > 0)
        NAT_CHECK_ARG(tensors, "nat_st_load_into", "tensors");
    if (n > 0)
        NAT_CHECK_ARG(names, "nat_st_load_into", "names");
    if (!f || n < 0 || (n > 0 && (!tensors || !names)))
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_load_into: NULL file, tensors or names, or n < 0");
    const char *p = f->path;
    char sa[160], sb[160];
    int *which = malloc(((size_t)n + 1) * sizeof *which);
    unsigned char *claimed = calloc((size_t)f->n + 1, 1);
    float *buf = NULL;
    nat_status st = NAT_OK;
    if (!which || !claimed) {
        st = st_err(NAT_ERR_OOM, p, "out of memory");
        goto done;
    }

    /* Pass 1: names, shapes and dtypes, all before reading any data. */
    int missing = 0, first_missing = -1;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const nat_tensor *t = tensors[i];
        if (!t || !names[i]) {
            st = nat_error(NAT_ERR_INVALID_ARG, "nat_st_load_into: tensors[%d] or names[%d] is NULL", i, i);
            goto done;
        }
        if (t->dtype != NAT_F32 || (t->device.kind != NAT_DEV_CPU && !nat_tensor_is_contiguous(t))) {
            st = st_err(NAT_ERR_INVALID_ARG, p,
                        "model tensor '%s' is %s on %s; loading needs f32 on the CPU, or contiguous f32 on a device",
                        names[i], nat_dtype_name(t->dtype), nat_device_name(t->device));
            goto done;
        }
        int k = which[i] = nat_st_find(f, names[i]);
        if (k < 0) {
            if (missing++ == 0)
                first_missing = i;
            continue;
        }
        const st_entry *e = &f->e[k];
        if (claimed[k]) {
            st = nat_error(NAT_ERR_INVALID_ARG, "nat_st_load_into: the model lists '%s' twice", names[i]);
            goto done;
        }
        claimed[k] = 1;
        int same = e->ndim == t->ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == t->shape[d];
        if (!same) {
            st = st_err(NAT_ERR_SHAPE, p, "tensor '%s' has shape %s, the model expects %s", names[i],
                        nat_dims_str(e->ndim, e->shape, sa, sizeof sa), nat_shape_str(t, sb, sizeof sb));
            goto done;
        }
        if (!is_float_dtype(e->dt)) {
            st = st_err(NAT_ERR_FORMAT, p, "tensor '%s' is %s, not a floating-point dtype", names[i], e->dt->name);
            goto done;
        }
        total += (size_t)e->numel;
    }
    if (missing) {
        char more[64] = "";
        if (missing > 1)
            snprintf(more, sizeof more, " (and %d more of the model's %d tensors)", missing - 1, n);
        st = st_err(NAT_ERR_FORMAT, p, "tensor '%s' (shape %s) is missing%s", names[first_missing],
                    nat_shape_str(tensors[first_missing], sa, sizeof sa), more);
        goto done;
    }
    if (strict) {
        int extra = 0, first_extra = -1;
        for (int k = 0; k < f->n; k++)
            if (!claimed[k] && extra++ == 0)
                first_extra = k;
        if (extra) {
            char more[48] = "";
            if (extra > 1)
                snprintf(more, sizeof more, ", and %d more", extra - 1);
            st = st_err(NAT_ERR_FORMAT, p, "unexpected tensor '%s' (not in the model)%s", f->e[first_extra].name, more);
            goto done;
        }
    }

    /* Pass 2: read and check every value. */
    if (total > 0 && !(buf = malloc(total * sizeof *buf))) {
        st = st_err(NAT_ERR_OOM, p, "out of memory for %zu values", total);
        goto done;
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const st_entry *e = &f->e[which[i]];
        float *v = buf + at;
        if ((st = read_entry_f32(f, e, v)) != NAT_OK)
            goto done;
        for (int64_t j = 0; j < e->numel; j++)
            if (!isfinite(v[j])) {
                int64_t idx[NAT_MAX_DIMS], r = j;
                for (int d = e->ndim - 1; d >= 0; d--) {
                    idx[d] = e->shape[d] ? r % e->shape[d] : 0;
                    r = e->shape[d] ? r / e->shape[d] : 0;
                }
                st = st_err(NAT_ERR_FORMAT, p, "tensor '%s' has a non-finite value (%g) at index %s (flat %" PRId64 ")",
                            names[i], (double)v[j], nat_dims_str(e->ndim, idx, sa, sizeof sa), j);
                goto done;
            }
        at += (size_t)e->numel;
    }

    /* Pass 3: everything checked; fill the tensors. */
    at = 0;
    for (int i = 0; i < n; i++) {
        int64_t m = f->e[which[i]].numel;
        if (tensors[i]->device.kind != NAT_DEV_CPU) {
            /* A device tensor: the checked host values go over in one explicit copy. */
            nat_tensor *h;
            if ((st = nat_tensor_wrap(&h, buf + at, NAT_F32, NAT_CPU, tensors[i]->ndim, tensors[i]->shape)) != NAT_OK)
                goto done;
            st = nat_tensor_copy(tensors[i], h);
            nat_tensor_free(h);
            if (st != NAT_OK)
                goto done;
        } else if ((st = nat_tensor_copy_from(tensors[i], buf + at, m)) != NAT_OK) {
            goto done; /* not reached: dtype, device and size were checked above */
        }
        at += (size_t)m;
    }
done:
    free(buf);
    free(claimed);
    free(which);
    return st;
}

/* ---- writing ---- */

typedef struct {
    char *name;
    nat_dtype dtype;
    int ndim;
    int64_t shape[NAT_MAX_DIMS];
    unsigned char *data; /* little-endian, row-major */
    size_t nbytes;
} st_wtensor;

struct nat_st_writer {
    st_wtensor *t;
    int n, cap;
    char **meta_key, **meta_val;
    int n_meta, meta_cap;
};

nat_status nat_st_writer_new(nat_st_writer **out)
{
    NAT_CHECK_ARG(out, "nat_st_writer_new", "out");
    if (!out)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_writer_new: NULL out");
    *out = calloc(1, sizeof **out);
    return *out ? NAT_OK : nat_error(NAT_ERR_OOM, "safetensors writer: out of memory");
}

void nat_st_writer_free(nat_st_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_key[i]);
        free(w->meta_val[i]);
    }
    free(w->meta_key);
    free(w->meta_val);
    free(w);
}

/* Copies t's elements (es bytes each) into dst in logical row-major order, whatever its strides. */
static void gather(const nat_tensor *t, size_t es, unsigned char *dst)
{
    const unsigned char *base = nat_tensor_data(t);
    int64_t n = nat_tensor_numel(t);
    if (n == 0)
        return;
    if (nat_tensor_is_contiguous(t)) {
        memcpy(dst, base, (size_t)n * es);
        return;
    }
    int64_t idx[NAT_MAX_DIMS] = {0}, off = 0;
    for (int64_t i = 0; i < n; i++) {
        memcpy(dst + (size_t)i * es, base + off * (int64_t)es, es);
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

static nat_status writer_add_host(nat_st_writer *w, const char *name, const nat_tensor *t);

nat_status nat_st_writer_add(nat_st_writer *w, const char *name, const nat_tensor *t)
{
    NAT_CHECK_ARG(w, "nat_st_writer_add", "w");
    NAT_CHECK_ARG(name, "nat_st_writer_add", "name");
    NAT_CHECK_ARG(t, "nat_st_writer_add", "t");
    if (!w || !name || !t)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_writer_add: NULL %s", !w ? "writer" : !name ? "name" : "tensor");
    if (!*name || strcmp(name, "__metadata__") == 0)
        return nat_error(NAT_ERR_INVALID_ARG, "safetensors writer: '%s' cannot name a tensor", name);
    if (t->dtype != NAT_F32 && t->dtype != NAT_I32)
        return nat_error(NAT_ERR_INVALID_ARG, "safetensors writer: tensor '%s' is %s; the writer takes f32 and i32",
                         name, nat_dtype_name(t->dtype));
    /* A device tensor is copied to the host first (the writer keeps a host snapshot anyway). */
    nat_tensor *host = NULL;
    if (t->device.kind != NAT_DEV_CPU) {
        nat_status cs = nat_tensor_to(NULL, t, NAT_CPU, &host);
        if (cs != NAT_OK)
            return nat_error_context(cs, "safetensors writer: tensor '%s'", name);
        t = host;
    }
    nat_status s = writer_add_host(w, name, t);
    nat_tensor_free(host);
    return s;
}

/* nat_st_writer_add for a CPU tensor. */
static nat_status writer_add_host(nat_st_writer *w, const char *name, const nat_tensor *t)
{
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return nat_error(NAT_ERR_INVALID_ARG, "safetensors writer: tensor '%s' was already added", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        st_wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt)
            return nat_error(NAT_ERR_OOM, "safetensors writer: out of memory");
        w->t = nt;
        w->cap = cap;
    }
    st_wtensor *e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    size_t es = nat_dtype_size(t->dtype);
    e->nbytes = (size_t)nat_tensor_numel(t) * es;
    e->name = strdup(name);
    e->data = malloc(e->nbytes ? e->nbytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return nat_error(NAT_ERR_OOM, "safetensors writer: out of memory copying tensor '%s' (%zu bytes)", name,
                         e->nbytes);
    }
    e->dtype = t->dtype;
    e->ndim = t->ndim;
    memcpy(e->shape, t->shape, (size_t)t->ndim * sizeof *e->shape);
    gather(t, es, e->data);
    if (!host_le())
        swap_elems(e->data, e->nbytes / es, (int)es);
    w->n++;
    return NAT_OK;
}

int64_t nat_utf8_invalid_at(const char *s)
{
    static const unsigned min[4] = {0, 0x80, 0x800, 0x10000}; /* smallest code point of each length */
    for (const unsigned char *q = (const unsigned char *)s; *q;) {
        unsigned c = *q;
        if (c < 0x80) {
            q++;
            continue;
        }
        int more = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
        if (more < 0)
            return (int64_t)(q - (const unsigned char *)s);
        unsigned cp = c & (0x3fu >> more);
        for (int k = 1; k <= more; k++) {
            if ((q[k] & 0xc0) != 0x80) /* also stops at the NUL: q[k] is never read past it */
                return (int64_t)(q - (const unsigned char *)s);
            cp = cp << 6 | (q[k] & 0x3fu);
        }
        if (cp < min[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (int64_t)(q - (const unsigned char *)s);
        q += more + 1;
    }
    return -1;
}

nat_status nat_st_writer_set_metadata(nat_st_writer *w, const char *key, const char *value)
{
    NAT_CHECK_ARG(w, "nat_st_writer_set_metadata", "w");
    NAT_CHECK_ARG(key, "nat_st_writer_set_metadata", "key");
    NAT_CHECK_ARG(value, "nat_st_writer_set_metadata", "value");
    if (!w || !key || !value)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_writer_set_metadata: NULL writer, key or value");
    /* The header is JSON: bytes that are not UTF-8 (a Latin-1 data.root) make it unreadable elsewhere. */
    int64_t bad_key = nat_utf8_invalid_at(key), bad = nat_utf8_invalid_at(value);
    if (bad_key >= 0 || bad >= 0)
        return nat_error(NAT_ERR_INVALID_ARG, "safetensors writer: metadata '%.60s' has a %s that is not UTF-8 (byte %lld)",
                         bad_key >= 0 ? "(bad key)" : key, bad_key >= 0 ? "key" : "value",
                         (long long)(bad_key >= 0 ? bad_key : bad));
    char *v = strdup(value);
    if (!v)
        return nat_error(NAT_ERR_OOM, "safetensors writer: out of memory");
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_key[i], key) == 0) {
            free(w->meta_val[i]);
            w->meta_val[i] = v;
            return NAT_OK;
        }
    if (w->n_meta == w->meta_cap) {
        int cap = w->meta_cap ? 2 * w->meta_cap : 16;
        char **nk = realloc(w->meta_key, (size_t)cap * sizeof *nk);
        if (nk)
            w->meta_key = nk;
        char **nv = nk ? realloc(w->meta_val, (size_t)cap * sizeof *nv) : NULL;
        if (nv)
            w->meta_val = nv;
        if (!nk || !nv) {
            free(v);
            return nat_error(NAT_ERR_OOM, "safetensors writer: out of memory");
        }
        w->meta_cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return nat_error(NAT_ERR_OOM, "safetensors writer: out of memory");
    }
    w->meta_key[w->n_meta] = k;
    w->meta_val[w->n_meta] = v;
    w->n_meta++;
    return NAT_OK;
}

static int cmp_wtensor(const void *a, const void *b)
{
    return strcmp(((const st_wtensor *)a)->name, ((const st_wtensor *)b)->name);
}

/* The header JSON for the writer's tensors (sorted by name first); NULL when out of memory. */
static char *build_header(nat_st_writer *w)
{
    if (w->n > 1)
        qsort(w->t, (size_t)w->n, sizeof *w->t, cmp_wtensor);
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    int ok = 1;
    if (w->n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; ok && i < w->n_meta; i++)
            ok = cJSON_AddStringToObject(meta, w->meta_key[i], w->meta_val[i]) != NULL;
    }
    uint64_t off = 0;
    for (int i = 0; ok && i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name), *shape = NULL, *offs = NULL;
        ok = e && cJSON_AddStringToObject(e, "dtype", st_dtype_of(t->dtype)) &&
             (shape = cJSON_AddArrayToObject(e, "shape")) != NULL;
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *x = cJSON_CreateNumber((double)t->shape[d]);
            ok = x && cJSON_AddItemToArray(shape, x);
        }
        if (ok)
            ok = (offs = cJSON_AddArrayToObject(e, "data_offsets")) != NULL;
        for (int k = 0; ok && k < 2; k++) {
            cJSON *x = cJSON_CreateNumber((double)(off + (k ? t->nbytes : 0)));
            ok = x && cJSON_AddItemToArray(offs, x);
        }
        off += t->nbytes;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return json;
}

/* fsync of the directory holding `path`, so the rename itself survives a crash. Best effort: some
 * filesystems refuse fsync on directories, and by now the new file is already in place. */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

nat_status nat_st_writer_save(nat_st_writer *w, const char *path)
{
    NAT_CHECK_ARG(w, "nat_st_writer_save", "w");
    NAT_CHECK_ARG(path, "nat_st_writer_save", "path");
    if (!w || !path)
        return nat_error(NAT_ERR_INVALID_ARG, "nat_st_writer_save: NULL %s", !w ? "writer" : "path");
    char *json = build_header(w);
    if (!json)
        return st_err(NAT_ERR_OOM, path, "out of memory building the header");
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    if (padded > NAT_ST_MAX_HEADER) {
        free(json);
        return st_err(NAT_ERR_INVALID_ARG, path, "the header would be %zu bytes, more than readers accept (%u)", padded,
                      NAT_ST_MAX_HEADER);
    }
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(json);
        return st_err(NAT_ERR_OOM, path, "out of memory");
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    nat_status st = NAT_OK;
    FILE *fp = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = st_err(NAT_ERR_IO, path, "cannot create the temporary file %s: %s", tmp, strerror(errno));
        goto done;
    }
    if (!(fp = fdopen(fd, "wb"))) {
        st = st_err(NAT_ERR_IO, path, "cannot open the temporary file %s: %s", tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    unsigned char len8[8];
    st_u64(len8, padded);
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(json, 1, len, fp) == len;
    for (size_t i = len; ok && i < padded; i++)
        ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < w->n; i++)
        ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, fp) == w->t[i].nbytes;
    if (!ok || fflush(fp) != 0) {
        st = st_err(NAT_ERR_IO, path, "writing the temporary file %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fsync(fileno(fp)) != 0) {
        st = st_err(NAT_ERR_IO, path, "fsync of the temporary file %s: %s", tmp, strerror(errno));
        goto fail;
    }
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) {
        st = st_err(NAT_ERR_IO, path, "closing the temporary file %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        st = st_err(NAT_ERR_IO, path, "cannot rename %s over it: %s", tmp, strerror(errno));
        goto fail;
    }
    sync_dir(path);
    goto done;
fail:
    if (fp)
        fclose(fp);
    unlink(tmp);
done:
    free(tmp);
    free(json);
    return st;
}
