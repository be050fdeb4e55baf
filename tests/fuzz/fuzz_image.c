/* tests/fuzz/fuzz_image.c — the image decode path of image folders (header size check, stb_image decode,
 * conversion to floats) on arbitrary bytes, as a .png and as a .jpg (the extension only selects the
 * file; stb_image decides by content), in 1 and 3 channels. The pixel limit is lowered so the fuzzer's
 * memory limit is not what stops large declared sizes. */
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "nat/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char root[256];
    if (!root[0]) {
        snprintf(root, sizeof root, "%s/folder", fuzz_dir());
        char cls[300];
        snprintf(cls, sizeof cls, "%s/c", root);
        mkdir(root, 0777);
        mkdir(cls, 0777);
        nat_data_set_max_pixels(4096 * 4096);
    }
    const char *name = size && (data[0] & 1) ? "folder/c/x.jpg" : "folder/c/x.png";
    (void)fuzz_file(name, data, size);
    for (int ch = 1; ch <= 3; ch += 2) {
        nat_dataset *ds;
        if (nat_dataset_open_folder(root, ch, &ds) != NAT_OK)
            continue;
        nat_image im = {0};
        int32_t y;
        (void)nat_dataset_get(ds, 0, &im, &y);
        nat_image_free(&im);
        nat_dataset_free(ds);
    }
    char other[300]; /* only one file in the class folder at a time */
    snprintf(other, sizeof other, "%s/c/x.%s", root, size && (data[0] & 1) ? "jpg" : "png");
    remove(other);
    return 0;
}
