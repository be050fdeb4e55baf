/* core/cpu/onednn.h — internal: nat's use of oneDNN (Debian's libdnnl, OpenMP runtime) for the CPU's
 * GEMMs and convolutions (core/cpu/gemm.c, core/cpu/conv.c).
 *
 * Why oneDNN: it picks its kernels from CPUID feature bits (AVX2, AVX-512, AVX512-BF16, AMX) instead of a
 * table of CPU models, so no CPU falls back to generic code for want of an entry, and no environment
 * variable is needed; it has real bf16 GEMMs and convolutions; its OpenMP runtime is libgomp, the pool
 * nat's own loops use (one pool, no oversubscription).
 *
 * A plan is a cached primitive with the reorders around it: inputs arrive as nat's plain row-major f32
 * (possibly strided: a transposed GEMM operand), are reordered into the layout and data type the
 * primitive chose (blocked layouts, bf16), and the output is reordered back, adding into the user's buffer
 * when the kernel accumulates. Reorders are skipped where the layouts already agree.
 *
 * Thread safety and heap calls: plans are built once per problem (key) and kept for the process; the
 * cache is locked. Every primitive uses a user-managed scratchpad (oneDNN's library scratchpad forbids
 * running a primitive from a thread other than its creator's, and train.replicas runs kernels from a new
 * thread each step). Concurrent runs each take one of NAT_DNN_SLOTS execution slots: a stream and the
 * memory objects of every primitive for that slot, created on the slot's first use. Intermediate buffers
 * and scratchpads come from nat_mem_alloc. So a steady-state step makes no heap call from nat's code and
 * creates no primitive, memory object or stream.
 */
#ifndef NAT_CORE_CPU_ONEDNN_H
#define NAT_CORE_CPU_ONEDNN_H

#include <oneapi/dnnl/dnnl.h>
#include <stdbool.h>
#include <stddef.h>

#include "nat/status.h"

#define NAT_DNN_MAX_ARGS 5 /* per primitive, the scratchpad included */
#define NAT_DNN_SLOTS 32   /* concurrent executions (replica threads); more wait for a free slot */
#define NAT_DNN_MAX_IN 3

/* One primitive and, per slot, the memory objects of its arguments (handles set at each run). */
typedef struct nat_dnn_prim {
    dnnl_primitive_t prim;
    int n;                                /* arguments, the scratchpad last when scratch_bytes > 0 */
    int arg[NAT_DNN_MAX_ARGS];            /* DNNL_ARG_* */
    dnnl_memory_desc_t md[NAT_DNN_MAX_ARGS];
    size_t scratch_bytes;
    dnnl_memory_t mem[NAT_DNN_SLOTS][NAT_DNN_MAX_ARGS];
} nat_dnn_prim;

/* The main primitive with reorders: inputs in[i] (arg in_arg[i]) from the user's f32 layout, one output
 * (arg out_arg) to the user's layout, optionally added into it, and an optional pass-through argument
 * (a bias already in the user's layout). */
typedef struct nat_dnn_plan {
    nat_dnn_prim main;
    int n_in;
    int in_arg[NAT_DNN_MAX_IN];
    bool in_reorder[NAT_DNN_MAX_IN];
    nat_dnn_prim in_re[NAT_DNN_MAX_IN];
    size_t in_bytes[NAT_DNN_MAX_IN]; /* the reordered copy (0: the user's buffer is used as is) */
    int out_arg;
    bool out_reorder;
    nat_dnn_prim out_re;
    size_t out_bytes;
    int pass_arg; /* 0: none */
    char impl[64]; /* the main primitive's implementation, e.g. "brg:avx512_core_bf16" (oneDNN's name) */
} nat_dnn_plan;

/* A dnnl status as nat's, with a message naming `what` (OOM, unsupported, else internal). */
nat_status nat_dnn_check(dnnl_status_t s, const char *what);

/* The process's CPU engine (made on first use). */
nat_status nat_dnn_engine(dnnl_engine_t *out);

/* A primitive attribute with the user scratchpad mode (and a sum post-op when sum != 0), for building
 * the descriptors a plan takes. The caller destroys it. */
nat_status nat_dnn_attr(dnnl_primitive_attr_t *out, bool sum);

/* Builds *pl from the main primitive's descriptor pd (made with nat_dnn_attr; the plan takes the
 * primitive, the caller still destroys pd): in_user[i] are the user's layouts of the inputs,
 * out_user the output's; accumulate adds the result into the user's output (through a reorder with a sum
 * post-op). pass_arg: an argument (DNNL_ARG_BIAS) passed through unchanged, or 0. */
nat_status nat_dnn_plan_init(nat_dnn_plan *pl, const_dnnl_primitive_desc_t pd, int n_in, const int *in_arg,
                             const dnnl_memory_desc_t *in_user, int out_arg, const dnnl_memory_desc_t *out_user,
                             bool accumulate, int pass_arg);

/* Runs the plan on the user's buffers (pass may be NULL when the plan has no pass-through argument). */
nat_status nat_dnn_plan_run(const nat_dnn_plan *pl, const void *const *in, const void *pass, void *out);

/* The plan of `key` (key_bytes bytes, compared bytewise: zero its padding), built with build(key, plan)
 * on first use and kept for the process. kind names the cache in errors. A failed build is not cached. */
typedef nat_status (*nat_dnn_build_fn)(const void *key, nat_dnn_plan *plan);
nat_status nat_dnn_plan_get(const char *kind, const void *key, size_t key_bytes, nat_dnn_build_fn build,
                            const nat_dnn_plan **out);

/* Plans built so far (tests: a steady-state step builds none). */
long nat_dnn_plans_built(void);

/* oneDNN's effective ISA as its name ("avx512_core_bf16", "avx2", ...) and its version string. */
const char *nat_dnn_isa_name(void);
const char *nat_dnn_version_string(void);

/* The implementation the GEMMs nat runs take: f32 (dnnl_sgemm, whose kernel follows the effective ISA)
 * and bf16 autocast (a matmul primitive; "emulated ..." when nat rounds the operands and runs the f32
 * GEMM instead: no bf16 matmul, or one that is slower than f32 on this CPU). Static strings. */
const char *nat_dnn_gemm_impl(bool bf16);

/* oneDNN's bf16 matmul kernel at the effective ISA ("brg:avx512_core_bf16", ...), whether or not autocast
 * uses it; NULL when oneDNN has none (nat_cpu_gemm_bf16_operands then fails). Static string. */
const char *nat_dnn_bf16_matmul_impl(void);

#endif
