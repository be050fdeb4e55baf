/* tests/fuzz/fuzz_safetensors.c — the safetensors reader on arbitrary bytes: open (header, JSON, offsets),
 * metadata, every tensor's info and data as f32 when small, the model description from nat.* metadata,
 * and nat_st_load_into of a small tensor. Errors are fine; crashes, leaks and UB are not. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "nat/model.h"
#include "nat/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("in.safetensors", data, size);
    nat_st_file *f;
    if (nat_st_open(&f, path) != NAT_OK)
        return 0;
    (void)nat_st_metadata(f, "train.config");
    for (int i = 0; i < nat_st_count(f); i++) {
        int ndim;
        int64_t shape[NAT_MAX_DIMS];
        nat_dtype dt;
        if (nat_st_info(f, i, &dt, &ndim, shape) != NAT_OK)
            continue;
        int64_t n = 1;
        for (int d = 0; d < ndim; d++)
            n = shape[d] && n <= (1 << 16) / shape[d] ? n * shape[d] : (1 << 17);
        if (n > (1 << 16))
            continue;
        float *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
        if (buf) {
            (void)nat_st_read_f32(f, nat_st_name(f, i), buf, n);
            if (ndim >= 1) {
                nat_tensor *t;
                if (nat_tensor_new(&t, NAT_F32, NAT_CPU, ndim, shape) == NAT_OK) {
                    const char *name = nat_st_name(f, i);
                    (void)nat_st_load_into(f, &t, &name, 1, 0);
                    nat_tensor_free(t);
                }
            }
        }
        free(buf);
    }
    nat_model_desc d;
    (void)nat_model_desc_read(f, &d);
    nat_st_close(f);
    return 0;
}
