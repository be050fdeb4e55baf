/* layers/natten/cuda/dispatch.cu — which NA kernel version runs (kernel lab, dev/README.md).
 *
 * na_cuda_qk / av / qk_backward / av_backward choose between v0 (naive) and v2 (tiled, 1-D/2-D when
 * its tiles fit); na_cuda_fused_forward_autocast and na_cuda_fused_backward_autocast between v3 (tensor
 * cores, bf16/f16 operands) and v1 on the rounded f32 values. The f32 fused op has one version (v1, cuda/fused.cu).
 *
 * Choice, in order:
 *  1. NAT_NA_KERNEL=v0|v1|v2|v3 in the environment forces that version wherever it applies (read on
 *     every call, so tests and benchmarks can switch it); an op it does not apply to runs its default.
 *  2. Only one version applies: that one.
 *  3. Otherwise, by measurement: on the first call for a (device, op, dtype, exact problem shape) each
 *     applicable version runs once to warm up and then three times between cudaEvents on the device's
 *     stream; the one with the smallest median wins and is cached (128 entries, oldest replaced, behind
 *     a mutex: several devices and models share the table, which holds only facts about the hardware).
 *     Every version overwrites the same outputs completely, so the call's result is valid whichever ran
 *     last. The first call therefore waits for the device once.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "layers/natten/cuda/tensorcore.h"
#include "layers/natten/na_backend.h"

namespace {

enum { OP_QK, OP_AV, OP_QK_BWD, OP_AV_BWD, OP_FWD_AUTOCAST, OP_BWD_AUTOCAST };

struct choice_key {
    int device, op, dtype, has_rpb;
    int len[3], kernel[3], dilation[3], causal[3];
    int batch, heads, dim;
};

struct choice_entry {
    bool used;
    choice_key key;
    int version;
};

#define NA_CHOICES 128
choice_entry g_choices[NA_CHOICES];
int g_next;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

choice_key make_key(int device, int op, int dtype, const na_geom &g, bool has_rpb)
{
    choice_key k;
    memset(&k, 0, sizeof k); /* padding too: keys are compared with memcmp */
    k.device = device;
    k.op = op;
    k.dtype = dtype;
    k.has_rpb = has_rpb;
    for (int a = 0; a < 3; a++) {
        k.len[a] = g.len[a];
        k.kernel[a] = g.kernel[a];
        k.dilation[a] = g.dilation[a];
        k.causal[a] = g.causal[a];
    }
    k.batch = g.batch;
    k.heads = g.heads;
    k.dim = g.dim;
    return k;
}

int cached(const choice_key &k)
{
    int v = -1;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < NA_CHOICES && v < 0; i++)
        if (g_choices[i].used && !memcmp(&g_choices[i].key, &k, sizeof k))
            v = g_choices[i].version;
    pthread_mutex_unlock(&g_lock);
    return v;
}

void remember(const choice_key &k, int version)
{
    pthread_mutex_lock(&g_lock);
    choice_entry &e = g_choices[g_next];
    e.used = true;
    e.key = k;
    e.version = version;
    g_next = (g_next + 1) % NA_CHOICES;
    pthread_mutex_unlock(&g_lock);
}

/* NAT_NA_KERNEL as a version number, or -1. */
int forced_version(void)
{
    const char *s = getenv("NAT_NA_KERNEL");
    if (s && (s[0] == 'v' || s[0] == 'V') && s[1] >= '0' && s[1] <= '3' && s[2] == '\0')
        return s[1] - '0';
    return -1;
}

/* Median of three timed runs of run(v) after one warm-up, in ms; a failed run is +inf (never chosen,
 * its error kept for the caller when every version fails). */
template <class F>
nat_status time_version(int device, F &run, int v, float *ms)
{
    NAT_TRY(run(v));
    NAT_CUDA_ENTER(device);
    cudaEvent_t a, b;
    NAT_CUDA_CHECK(cudaEventCreate(&a));
    cudaError_t e = cudaEventCreate(&b);
    if (e != cudaSuccess) {
        cudaEventDestroy(a);
        NAT_CUDA_CHECK(e);
    }
    float t[3] = {0, 0, 0};
    nat_status s = NAT_OK;
    for (int r = 0; r < 3 && s == NAT_OK; r++) {
        cudaEventRecord(a, hb->stream);
        s = run(v);
        cudaEventRecord(b, hb->stream);
        if (s == NAT_OK && (e = cudaEventSynchronize(b)) == cudaSuccess)
            e = cudaEventElapsedTime(&t[r], a, b);
        if (s == NAT_OK && e != cudaSuccess)
            s = nat_cuda_fail("cudaEventElapsedTime", __FILE__, __LINE__, cudaGetErrorString(e));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    NAT_TRY(s);
    float lo = fminf(t[0], fminf(t[1], t[2])), hi = fmaxf(t[0], fmaxf(t[1], t[2]));
    *ms = t[0] + t[1] + t[2] - lo - hi;
    return NAT_OK;
}

/* Runs run(version) for the chosen version among the two candidates (alt applies or not). */
template <class F>
nat_status dispatch(int device, const choice_key &key, int dflt, int alt, bool alt_applies, F run)
{
    const int f = forced_version();
    if (f == dflt || (f == alt && alt_applies))
        return run(f);
    if (f >= 0 || !alt_applies)
        return run(dflt);
    int v = cached(key);
    if (v >= 0)
        return run(v);
    float t0 = 0, t1 = 0;
    NAT_TRY(time_version(device, run, dflt, &t0));
    NAT_TRY(time_version(device, run, alt, &t1));
    remember(key, t1 < t0 ? alt : dflt);
    return NAT_OK;
}

} // namespace

extern "C" nat_status na_cuda_qk(const na_problem *pb, const float *q, const float *k, const float *rpb,
                                 float *attn)
{
    const int device = pb->device;
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, "na_cuda_qk"));
    na_v2_plan pl;
    const bool v2 = na_v2_plan_init(&g, 1, &pl);
    auto run = [&](int v) {
        return v == 2 ? na_cuda_qk_v2(pb, q, k, rpb, attn)
                      : na_cuda_qk_v0(pb, q, k, rpb, attn);
    };
    return dispatch(device, make_key(device, OP_QK, 0, g, rpb != NULL), 0, 2, v2, run);
}

extern "C" nat_status na_cuda_av(const na_problem *pb, const float *attn, const float *v, float *out)
{
    const int device = pb->device;
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, "na_cuda_av"));
    na_v2_plan pl;
    const bool v2 = na_v2_plan_init(&g, 0, &pl);
    auto run = [&](int ver) {
        return ver == 2 ? na_cuda_av_v2(pb, attn, v, out)
                        : na_cuda_av_v0(pb, attn, v, out);
    };
    return dispatch(device, make_key(device, OP_AV, 0, g, false), 0, 2, v2, run);
}

extern "C" nat_status na_cuda_qk_backward(const na_problem *pb, const float *d_attn, const float *q,
                                          const float *k, float *dq, float *dk, float *drpb)
{
    const int device = pb->device;
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, "na_cuda_qk_backward"));
    na_v2_plan pl;
    const bool v2 = na_v2_plan_init(&g, 0, &pl);
    auto run = [&](int v) {
        return v == 2 ? na_cuda_qk_backward_v2(pb, d_attn, q, k, dq, dk, drpb)
                      : na_cuda_qk_backward_v0(pb, d_attn, q, k, dq, dk, drpb);
    };
    return dispatch(device, make_key(device, OP_QK_BWD, 0, g, drpb != NULL), 0, 2, v2, run);
}

extern "C" nat_status na_cuda_av_backward(const na_problem *pb, const float *d_out, const float *attn,
                                          const float *v, float *d_attn, float *dv)
{
    const int device = pb->device;
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, "na_cuda_av_backward"));
    na_v2_plan pl;
    const bool v2 = na_v2_plan_init(&g, 1, &pl);
    auto run = [&](int ver) {
        return ver == 2 ? na_cuda_av_backward_v2(pb, d_out, attn, v, d_attn, dv)
                        : na_cuda_av_backward_v0(pb, d_out, attn, v, d_attn, dv);
    };
    return dispatch(device, make_key(device, OP_AV_BWD, 0, g, false), 0, 2, v2, run);
}

/* v3 on 2-byte copies of the (already rounded) q, k, v: scratch from the caching allocator, given back
 * once the kernels are queued (stream order). */
/* h = 2-byte copies of q, k, v (n values each, in that order) from the caching allocator; the caller
 * frees 3n values with nat_mem_free once its kernels are queued. */
static nat_status qkv_to_half(int device, int f16, const float *q, const float *k, const float *v, int64_t n,
                              uint16_t **h)
{
    const nat_device d = {NAT_DEV_CUDA, device};
    NAT_TRY(nat_mem_alloc(d, sizeof(uint16_t) * (size_t)(3 * n), (void **)h));
    nat_status s = na_cuda_to_half(device, f16, q, *h, n);
    if (s == NAT_OK)
        s = na_cuda_to_half(device, f16, k, *h + n, n);
    if (s == NAT_OK)
        s = na_cuda_to_half(device, f16, v, *h + 2 * n, n);
    if (s != NAT_OK)
        nat_mem_free(d, *h, sizeof(uint16_t) * (size_t)(3 * n));
    return s;
}

static nat_status run_v3(const na_problem *pb, int f16, const float *q, const float *k, const float *v,
                         const float *rpb, float *out, float *lse, int64_t n)
{
    const int device = pb->device;
    const nat_device d = {NAT_DEV_CUDA, device};
    const size_t bytes = sizeof(uint16_t) * (size_t)(3 * n);
    uint16_t *h;
    NAT_TRY(qkv_to_half(device, f16, q, k, v, n, &h));
    nat_status s =
        na_cuda_fused_forward_v3(pb, f16, h, h + n, h + 2 * n, rpb, out, lse);
    nat_mem_free(d, h, bytes);
    return s;
}

extern "C" nat_status na_cuda_fused_forward_autocast(const na_problem *pb, int f16, const float *q, const float *k, const float *v, const float *rpb,
                                                     float *out, float *lse)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_forward_autocast";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    const bool v3 = na_v3_plan_init(&g, &pl);
    auto run = [&](int ver) {
        return ver == 3 ? run_v3(pb, f16, q, k, v, rpb, out, lse, g.nquery * g.dim)
                        : na_cuda_fused_forward(pb, q, k, v, rpb, out, lse);
    };
    return dispatch(device, make_key(device, OP_FWD_AUTOCAST, f16 ? 1 : 2, g, rpb != NULL), 1, 3, v3, run);
}

/* v3's backward on 2-byte copies of the (already rounded) q, k, v. */
static nat_status run_v3_backward(const na_problem *pb, int f16, const float *q, const float *k, const float *v,
                                  const float *rpb, const float *out, const float *lse, const float *d_out, float *dq,
                                  float *dk, float *dv, float *drpb, int64_t n)
{
    const int device = pb->device;
    const nat_device d = {NAT_DEV_CUDA, device};
    const size_t bytes = sizeof(uint16_t) * (size_t)(3 * n);
    uint16_t *h;
    NAT_TRY(qkv_to_half(device, f16, q, k, v, n, &h));
    nat_status s = na_cuda_fused_backward_v3(pb, f16, h, h + n, h + 2 * n, rpb, out,
                                             lse, d_out, dq, dk, dv, drpb);
    nat_mem_free(d, h, bytes);
    return s;
}

extern "C" nat_status na_cuda_fused_backward_autocast(const na_problem *pb, int f16, const float *q, const float *k, const float *v,
                                                      const float *rpb, const float *out, const float *lse,
                                                      const float *d_out, float *dq, float *dk, float *dv,
                                                      float *drpb)
{
    const int device = pb->device;
    const char *op = "na_cuda_fused_backward_autocast";
    na_geom g;
    NAT_TRY(na_geom_init(&g, pb, op));
    na_v2_plan pl;
    const bool v3 = na_v3_plan_init(&g, &pl);
    auto run = [&](int ver) {
        return ver == 3 ? run_v3_backward(pb, f16, q, k, v, rpb, out, lse, d_out,
                                          dq, dk, dv, drpb, g.nquery * g.dim)
                        : na_cuda_fused_backward(pb, q, k, v, rpb, out, lse,
                                                 d_out, dq, dk, dv, drpb);
    };
    return dispatch(device, make_key(device, OP_BWD_AUTOCAST, f16 ? 1 : 2, g, drpb != NULL), 1, 3, v3, run);
}

static const na_backend_versions cuda_versions = {
    na_cuda_qk_v0,         na_cuda_av_v0,         na_cuda_qk_backward_v0,   na_cuda_av_backward_v0,
    na_cuda_qk_v2,         na_cuda_av_v2,         na_cuda_qk_backward_v2,   na_cuda_av_backward_v2,
    na_cuda_fused_forward_v3, na_cuda_fused_backward_v3, na_cuda_to_half,
};

/* The CUDA table (na_backend.h): na_ops.c reaches every kernel above through it, the tests and the lab
 * every version. */
extern "C" const na_backend na_cuda_backend = {
    "cuda",
    na_cuda_qk,
    na_cuda_av,
    na_cuda_qk_backward,
    na_cuda_av_backward,
    na_cuda_fused_forward,
    na_cuda_fused_backward,
    na_cuda_fused_forward_autocast,
    na_cuda_fused_backward_autocast,
    na_cuda_round,
    &cuda_versions,
};
