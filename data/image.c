/* data/image.c — decoding one image file (nat_image_load) and timm's evaluation preprocessing of one
 * file (nat_image_preprocess_eval).
 *
 * stb_image keeps its failure reason per thread, so concurrent decodes (the loader's workers) are safe.
 * A file that cannot be opened is NAT_ERR_IO; one stb_image cannot decode (corrupt, truncated, not
 * really a JPEG/PNG) NAT_ERR_FORMAT; both messages start with the path.
 */
#include <errno.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h> /* stbi_load_from_file (linked from Debian's libstb) */

#include "nat/data.h"
#include "core/check.h"

static _Atomic int64_t max_pixels = NAT_DEFAULT_MAX_PIXELS; /* read by loader workers: atomic */

int64_t nat_data_set_max_pixels(int64_t n) { return atomic_exchange(&max_pixels, n); }

/* Every chunk of a PNG must fit in the file. stb_image grows its buffer to a chunk's declared length
 * before reading it, so a 200-byte file that declares a 2 GB chunk cost a 2 GB allocation per loader
 * worker (found by tests/fuzz/fuzz_image.c). Walks the chunk headers (length, type) from byte 8 up to
 * IEND; f is left at its start. */
static nat_status png_chunks_fit(FILE *f, const char *path)
{
    if (fseek(f, 0, SEEK_END) != 0)
        return NAT_OK; /* not seekable: stb_image decides */
    const long size = ftell(f);
    long at = 8;
    nat_status st = NAT_OK;
    while (st == NAT_OK && at + 8 <= size) {
        unsigned char h[8];
        if (fseek(f, at, SEEK_SET) != 0 || fread(h, 1, 8, f) != 8)
            break;
        const uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > 0x7fffffffu || (long)len > size - at - 12)
            st = nat_error(NAT_ERR_FORMAT,
                           "%s: corrupt PNG: chunk '%c%c%c%c' at byte %ld declares %lu bytes, past the end of the "
                           "file (%ld bytes)",
                           path, h[4] >= 32 && h[4] < 127 ? h[4] : '?', h[5] >= 32 && h[5] < 127 ? h[5] : '?',
                           h[6] >= 32 && h[6] < 127 ? h[6] : '?', h[7] >= 32 && h[7] < 127 ? h[7] : '?', at,
                           (unsigned long)len, size);
        if (!memcmp(h + 4, "IEND", 4))
            break;
        at += 12 + (long)len;
    }
    rewind(f);
    return st;
}

nat_status nat_image_load(const char *path, int channels, nat_image *img)
{
    NAT_CHECK_ARG(path, "nat_image_load", "path");
    NAT_CHECK_ARG(img, "nat_image_load", "img");
    if (channels != 1 && channels != 3)
        return nat_error(NAT_ERR_INVALID_ARG, "%s: images are read as 1 or 3 channels, not %d", path, channels);
    FILE *f = fopen(path, "rb");
    if (!f)
        return nat_error(NAT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* The format by its first bytes, for messages: stb_image's own reason is that of the last decoder it
     * tried, so a truncated JPEG came out as "bad png sig". */
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    rewind(f);
    const char *kind = got >= 3 && magic[0] == 0xff && magic[1] == 0xd8 && magic[2] == 0xff ? "JPEG"
                       : got == 4 && !memcmp(magic, "\x89PNG", 4)                            ? "PNG"
                                                                                            : "image";
    if (!strcmp(kind, "PNG")) {
        nat_status st = png_chunks_fit(f, path);
        if (st != NAT_OK) {
            fclose(f);
            return st;
        }
    }
    int w = 0, h = 0, n = 0;
    /* The size from the header before decoding: a small file can declare a huge image. */
    const int64_t limit = atomic_load(&max_pixels);
    if (stbi_info_from_file(f, &w, &h, &n) && (int64_t)w * (int64_t)h > limit) {
        fclose(f);
        return nat_error(NAT_ERR_FORMAT, "%s: the %s is %dx%d = %lld pixels, more than data.max_pixels = %lld", path,
                         kind, w, h, (long long)w * h, (long long)limit);
    }
    unsigned char *px = stbi_load_from_file(f, &w, &h, &n, channels);
    fclose(f);
    if (!px)
        return nat_error(NAT_ERR_FORMAT, "%s: cannot decode the %s (truncated or corrupt?): %s", path, kind,
                         stbi_failure_reason());
    nat_status st = nat_image_reserve(img, channels, h, w);
    if (st == NAT_OK) {
        const size_t plane = (size_t)h * (size_t)w;
        for (int c = 0; c < channels; c++) {
            float *dst = img->data + (size_t)c * plane;
            const unsigned char *src = px + c;
            for (size_t p = 0; p < plane; p++)
                dst[p] = (float)src[p * (size_t)channels] / 255.0f;
        }
    }
    stbi_image_free(px);
    return st;
}

nat_status nat_image_preprocess_eval(const char *path, int channels, int img_size, float crop_pct, nat_interp interp,
                                     const float *mean, const float *std, nat_image *img)
{
    NAT_CHECK_ARG(path, "nat_image_preprocess_eval", "path");
    NAT_CHECK_ARG(img, "nat_image_preprocess_eval", "img");
    nat_transform tf[3];
    int n = nat_tf_eval_preset(tf, img_size, crop_pct, interp, channels, mean, std);
    for (int i = 0; i < n; i++) {
        nat_status s = nat_transform_check(&tf[i]);
        if (s != NAT_OK)
            return nat_error_context(s, "%s: preprocessing", path);
    }
    NAT_TRY(nat_image_load(path, channels, img));
    nat_image tmp = {0};
    nat_status s = nat_transforms_apply(tf, n, img, &tmp, NULL);
    nat_image_free(&tmp);
    return s == NAT_OK ? NAT_OK : nat_error_context(s, "%s", path);
}
