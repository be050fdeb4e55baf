/* data/idx.c — IDX reader over zlib's gzread, which passes uncompressed files through unchanged
 * (see include/nat/idx.h). */
#include "nat/idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h> /* gzopen/gzread: gzipped and plain files alike */
#include "core/check.h"

static nat_status read_exact(gzFile f, void *buf, size_t n, const char *path, const char *what)
{
    size_t got = 0;
    while (got < n) {
        unsigned chunk = (n - got) > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            return nat_error(NAT_ERR_FORMAT, "%s: cannot read %s: %s", path, what, msg);
        }
        if (r == 0)
            return nat_error(NAT_ERR_FORMAT, "%s: truncated: %s needs %zu bytes, file ended after %zu", path, what, n,
                             got);
        got += (size_t)r;
    }
    return NAT_OK;
}

/* Reads the `total` data bytes the header declares into a buffer that grows (doubling) with what the
 * file really holds: an 11-byte file declaring 3.9e9 elements must not cost 3.9 GB before it is found to
 * be truncated (found by tests/fuzz/fuzz_idx.c). A gzip stream's length is unknown up front, so the file
 * size cannot be checked instead. */
static nat_status read_growing(gzFile f, size_t total, const char *path, uint8_t **out)
{
    size_t cap = total < ((size_t)1 << 20) ? total : ((size_t)1 << 20), got = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    nat_status s = buf ? NAT_OK : nat_error(NAT_ERR_OOM, "%s: cannot allocate %zu bytes", path, cap);
    while (s == NAT_OK && got < total) {
        if (got == cap) {
            size_t next = cap > total / 2 ? total : 2 * cap;
            uint8_t *b = realloc(buf, next);
            if (!b) {
                s = nat_error(NAT_ERR_OOM, "%s: cannot allocate %zu bytes", path, next);
                break;
            }
            buf = b, cap = next;
        }
        size_t want = cap - got;
        s = read_exact(f, buf + got, want, path, "the data");
        if (s != NAT_OK && got + want < total) /* say how much the header promised */
            s = nat_error(NAT_ERR_FORMAT, "%s: truncated: the header declares %zu data bytes, the file holds fewer", path,
                          total);
        got += want;
    }
    if (s != NAT_OK) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    return s;
}

static uint32_t be32(const uint8_t *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }

nat_status nat_idx_load(const char *path, nat_idx *out)
{
    NAT_CHECK_ARG(path, "nat_idx_load", "path");
    NAT_CHECK_ARG(out, "nat_idx_load", "out");
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return nat_error(NAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    uint8_t hdr[4];
    nat_status s = read_exact(f, hdr, 4, path, "the magic number");
    if (s == NAT_OK && (hdr[0] != 0 || hdr[1] != 0))
        s = nat_error(NAT_ERR_FORMAT, "%s: not an IDX file (magic bytes %02x %02x, expected 00 00)", path, hdr[0], hdr[1]);
    if (s == NAT_OK && hdr[2] != 0x08)
        s = nat_error(NAT_ERR_FORMAT, "%s: IDX element type 0x%02x is not supported (nat reads unsigned bytes, 0x08)",
                      path, hdr[2]);
    if (s == NAT_OK && (hdr[3] < 1 || hdr[3] > NAT_IDX_MAX_DIMS))
        s = nat_error(NAT_ERR_FORMAT, "%s: IDX file with %d dimensions (1 to %d supported)", path, hdr[3],
                      NAT_IDX_MAX_DIMS);
    size_t total = 1;
    if (s == NAT_OK) {
        out->ndim = hdr[3];
        for (int d = 0; d < out->ndim && s == NAT_OK; d++) {
            uint8_t b[4];
            s = read_exact(f, b, 4, path, "the dimension sizes");
            if (s == NAT_OK) {
                out->dims[d] = be32(b);
                if (out->dims[d] == 0 || total > ((size_t)1 << 40) / (size_t)out->dims[d])
                    s = nat_error(NAT_ERR_FORMAT, "%s: implausible size %lld in dimension %d", path,
                                  (long long)out->dims[d], d);
                else
                    total *= (size_t)out->dims[d];
            }
        }
    }
    if (s == NAT_OK)
        s = read_growing(f, total, path, &out->data);
    gzclose(f);
    if (s != NAT_OK) {
        nat_idx_free(out);
        return s;
    }
    out->size = total;
    return NAT_OK;
}

void nat_idx_free(nat_idx *idx)
{
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}
