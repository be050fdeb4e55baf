/* train/dist_nccl.c — the NCCL engine of train/dist.h (placeholder until the CUDA part lands). */
#include "train/dist.h"

bool nat_dist_have_nccl(void) { return false; }
