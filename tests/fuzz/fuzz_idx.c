/* tests/fuzz/fuzz_idx.c — the IDX reader (MNIST's format, plain or gzip) on arbitrary bytes, alone and as
 * the images file of a dataset (with a fixed valid labels file), reading the first samples. */
#include <stdio.h>

#include "fuzz_util.h"
#include "nat/data.h"
#include "nat/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4};
    char images[256], lab[256];
    snprintf(images, sizeof images, "%s", fuzz_file("images-idx3-ubyte", data, size));
    snprintf(lab, sizeof lab, "%s", fuzz_file("labels-idx1-ubyte", labels, sizeof labels));
    nat_idx idx;
    if (nat_idx_load(images, &idx) == NAT_OK)
        nat_idx_free(&idx);
    nat_dataset *ds;
    if (nat_dataset_open_idx(images, lab, &ds) != NAT_OK)
        return 0;
    nat_image im = {0};
    int32_t y;
    for (int64_t i = 0; i < nat_dataset_count(ds) && i < 4; i++)
        (void)nat_dataset_get(ds, i, &im, &y);
    nat_image_free(&im);
    nat_dataset_free(ds);
    return 0;
}
