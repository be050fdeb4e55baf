/* data/data_internal.h — helpers shared by the dataset readers in data/ (not part of the public API). */
#ifndef NAT_DATA_INTERNAL_H
#define NAT_DATA_INTERNAL_H

#include "nat/data.h"

/* Converts n bytes to floats in [0, 1]: x / 255, as torchvision's ToTensor (a division, not a multiply by
 * 1/255, so values match it bit for bit). */
void nat_data_bytes_to_float(const uint8_t *src, float *dst, size_t n);

#endif
