/* train/dist_nccl.c — the stubs of train/dist_nccl.h for builds without NCCL (no CUDA, or no libnccl):
 * each says what the build lacks. With NCCL, train/dist_nccl.cu is compiled instead of these. */
#include "train/dist_nccl.h"

#ifndef NAT_HAVE_NCCL
static nat_status missing(void)
{
    return nat_error(NAT_ERR_UNSUPPORTED, "multi-GPU training needs NCCL: this nat-train was built without it "
                                          "(a CUDA build finds libnccl in the CUDA toolkit; docs/distributed.md)");
}

bool nat_nccl_built(void) { return false; }
nat_status nat_nccl_unique_id(unsigned char id[NAT_NCCL_ID_BYTES])
{
    (void)id;
    return missing();
}
nat_status nat_nccl_new(const unsigned char id[NAT_NCCL_ID_BYTES], int rank, int size, int device, bool bf16,
                        double timeout_s, nat_nccl **out)
{
    (void)id, (void)rank, (void)size, (void)device, (void)bf16, (void)timeout_s;
    *out = NULL;
    return missing();
}
void nat_nccl_free(nat_nccl *n) { (void)n; }
nat_status nat_nccl_plan(nat_nccl *n, nat_tensor *const *params, int count)
{
    (void)n, (void)params, (void)count;
    return missing();
}
nat_status nat_nccl_begin(nat_nccl *n)
{
    (void)n;
    return missing();
}
nat_status nat_nccl_grad_ready(void *user, int i)
{
    (void)user, (void)i;
    return missing();
}
nat_status nat_nccl_finish(nat_nccl *n)
{
    (void)n;
    return missing();
}
#endif
