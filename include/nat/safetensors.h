/* nat/safetensors.h — checkpoints in the safetensors format: writing, reading, strict loading.
 *
 * Format: an 8-byte little-endian u64 header length N, N bytes of JSON
 *   {"__metadata__": {"key": "string value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * then the raw little-endian data buffer. Offsets are relative to the start of the data buffer and the
 * tensors tile it exactly (no overlap, no gap, no trailing bytes). Tensor data is row-major.
 *
 * The reader validates the whole header at open (JSON shape, dtypes, shapes, offsets against the file
 * size), so a file that opens can be read without further surprises; every error names the file and,
 * where there is one, the tensor. It accepts every fixed-size dtype of the format (files written by
 * PyTorch may hold I64 or BOOL buffers) but converts only F32/F16/BF16/F64 to f32, and I32 to i32.
 * The writer writes F32 and I32, names in sorted order, the header padded with spaces to a multiple
 * of 8 bytes, crash-safe (temporary file, fsync, rename, fsync of the directory).
 *
 * Handles are opaque and not thread-safe; two handles on two threads are independent.
 */
#ifndef NAT_SAFETENSORS_H
#define NAT_SAFETENSORS_H

#include <stdint.h>

#include "nat/status.h"
#include "nat/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest JSON header the reader accepts (a NAT-Base header is ~40 KB). */
#define NAT_ST_MAX_HEADER (100u * 1000u * 1000u)

/* ---- writing ---- */

typedef struct nat_st_writer nat_st_writer;

/* New empty writer, owned by the caller: free with nat_st_writer_free. */
nat_status nat_st_writer_new(nat_st_writer **out);
/* Copies t's values (logical row-major order, any strides) under `name`. t must be an f32 or i32 CPU
 * tensor, or a CUDA tensor (copied to the host first: the file is the same); it is borrowed for the
 * call only. Names must be unique and not "__metadata__". */
nat_status nat_st_writer_add(nat_st_writer *w, const char *name, const nat_tensor *t);
/* Sets a metadata string (copied); setting a key again replaces its value. Keys and values must be UTF-8
 * (the header is JSON, which other readers parse strictly): other bytes are NAT_ERR_INVALID_ARG. */
nat_status nat_st_writer_set_metadata(nat_st_writer *w, const char *key, const char *value);
/* The byte offset of the first sequence of s that is not UTF-8 (stray continuation bytes, truncated,
 * overlong or surrogate encodings, code points past U+10FFFF), or -1 when s is all UTF-8. */
int64_t nat_utf8_invalid_at(const char *s);
/* Writes everything added so far to `path`, crash-safe: the data goes to "<path>.tmp.<pid>", is
 * flushed and fsynced, then renamed over `path`, and the directory is fsynced. On failure the
 * temporary file is removed and an existing `path` is left as it was. The writer stays usable. */
nat_status nat_st_writer_save(nat_st_writer *w, const char *path);
/* NULL is ignored. */
void nat_st_writer_free(nat_st_writer *w);

/* ---- reading ---- */

typedef struct nat_st_file nat_st_file;

/* Opens `path` and validates its header. NAT_ERR_IO when it cannot be opened or read, NAT_ERR_FORMAT
 * when it is malformed (the message says what is wrong). The data is read on demand: keep the file
 * in place until nat_st_close. Owned by the caller. On failure *out is NULL. */
nat_status nat_st_open(nat_st_file **out, const char *path);
/* NULL is ignored. */
void nat_st_close(nat_st_file *f);

/* The path given to nat_st_open (borrowed). */
const char *nat_st_path(const nat_st_file *f);
/* Number of tensors; they are indexed 0..count-1 in name order. */
int nat_st_count(const nat_st_file *f);
/* Name of tensor i (borrowed, valid until nat_st_close); NULL when i is out of range. */
const char *nat_st_name(const nat_st_file *f, int i);
/* Index of the tensor called `name`, or -1. */
int nat_st_find(const nat_st_file *f, const char *name);
/* The file's dtype string of tensor i ("F32", "BF16", "I64", ...; borrowed); NULL when out of range. */
const char *nat_st_dtype(const nat_st_file *f, int i);
/* dtype, ndim and shape (room for NAT_MAX_DIMS) of tensor i. Any argument but f may be NULL.
 * NAT_ERR_UNSUPPORTED when the file's dtype has no nat_dtype (I64, U8, BOOL, ...); ndim and shape
 * are still filled then. */
nat_status nat_st_info(const nat_st_file *f, int i, nat_dtype *dtype, int *ndim, int64_t *shape);

/* Reads tensor `name` into dst (n floats, n = its element count), row-major, converting F16, BF16
 * and F64 to f32 (F32 is copied bit-exact). */
nat_status nat_st_read_f32(nat_st_file *f, const char *name, float *dst, int64_t n);
/* Reads an I32 tensor into dst (n values). */
nat_status nat_st_read_i32(nat_st_file *f, const char *name, int32_t *dst, int64_t n);

/* The metadata value for `key` (borrowed, valid until nat_st_close), or NULL. */
const char *nat_st_metadata(const nat_st_file *f, const char *key);

/* Loads a model's tensors: tensors[i] (f32 CPU with any strides, or contiguous f32 on a CUDA device;
 * borrowed) gets the file's tensor
 * names[i], converted to f32. Every name must be present with exactly the tensor's shape
 * (NAT_ERR_FORMAT when missing, NAT_ERR_SHAPE naming both shapes), every value must be finite
 * (NAT_ERR_FORMAT naming the tensor and the first bad index), and with `strict` the file may hold no
 * other tensor (NAT_ERR_FORMAT naming the first extra one). Everything is read and checked before
 * anything is written: on error every tensor is unchanged. */
nat_status nat_st_load_into(nat_st_file *f, nat_tensor **tensors, const char **names, int n, int strict);

#ifdef __cplusplus
}
#endif
#endif
