/* nat/idx.h — IDX files (the MNIST family's format), gzipped or not.
 *
 * Format: 4-byte big-endian magic 0x0000TTNN (TT = element type, NN = number of dims), NN big-endian
 * 32-bit sizes, then the elements. nat reads unsigned-byte files (type 0x08), which is what MNIST,
 * Fashion-MNIST and KMNIST ship. Compression is detected by zlib, so .gz and plain files both work.
 */
#ifndef NAT_IDX_H
#define NAT_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "nat/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NAT_IDX_MAX_DIMS 4

typedef struct nat_idx {
    int ndim;
    int64_t dims[NAT_IDX_MAX_DIMS];
    uint8_t *data; /* owned; dims[0] * ... * dims[ndim-1] bytes, row-major */
    size_t size;
} nat_idx;

/* Reads a whole IDX file. On failure *out is left empty and the message names the file and the problem
 * (missing, truncated, wrong magic, unsupported element type). Free with nat_idx_free. */
nat_status nat_idx_load(const char *path, nat_idx *out);
void nat_idx_free(nat_idx *idx);

#ifdef __cplusplus
}
#endif
#endif
