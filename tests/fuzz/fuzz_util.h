/* tests/fuzz/fuzz_util.h — what the harnesses share: nat's readers take paths, so each input is written
 * to a file of this process (under one temporary directory) first. */
#ifndef NAT_FUZZ_UTIL_H
#define NAT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The process's scratch directory (made on first use, removed at exit). */
const char *fuzz_dir(void);
/* Writes data to fuzz_dir()/name (made or replaced); returns the full path (static storage). */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);

#endif
