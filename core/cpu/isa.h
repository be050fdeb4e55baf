/* core/cpu/isa.h — internal (not installed): the x86-64 instruction sets this process may use, for nat's
 * own kernels (layers/natten/cpu/na_cpu_bf16.c) and for reporting what oneDNN's GEMMs may use.
 *
 * What the CPU and the OS support comes from CPUID and XGETBV (the OS must save the AVX, AVX-512 and,
 * for AMX, the tile state, XCR0), read once per process. The cap is the environment variable
 * ONEDNN_MAX_CPU_ISA, the knob oneDNN reads, so one setting caps oneDNN and nat alike; it is read once,
 * at the first query (set it before the process starts, as for oneDNN). Values, case-insensitive,
 * oneDNN's names mapped onto nat's levels:
 *   SSE41, AVX                                   generic    (no AVX2 kernels)
 *   AVX2, AVX2_VNNI, AVX2_VNNI_2                 avx2
 *   AVX512_CORE                                  avx512_core
 *   AVX512_CORE_VNNI                             avx512_core_vnni
 *   AVX512_CORE_BF16, AVX512_CORE_FP16,
 *   AVX10_1_512, AVX10_2_512                     avx512_core_bf16
 *   AVX512_CORE_AMX, AVX512_CORE_AMX_FP16,
 *   AVX10_1_512_AMX, AVX10_2_512_AMX_2, ALL      avx512_core_amx (no cap)
 * An unset, empty or unknown value is no cap: oneDNN ignores values it does not know, and nat does the
 * same so that the two never disagree (nat_cpu_isa_cap_parse tells a caller that wants to warn).
 * The cached answers are constant for the life of the process (the CPU and the environment variable do
 * not change under it), which is why they may live in static storage despite STYLE's "no mutable
 * globals": two models in one process see the same CPU.
 *
 * nat's kernels use at most avx512_core_bf16 today (vdpbf16ps); AMX is detected and reported, not
 * used (Linux also wants arch_prctl(ARCH_REQ_XCOMP_PERM) before the first tile instruction).
 * Non-x86 builds: every query answers generic / false.
 */
#ifndef NAT_CORE_CPU_ISA_H
#define NAT_CORE_CPU_ISA_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* nat's ISA levels, each including the ones below it. */
typedef enum nat_cpu_isa {
    NAT_ISA_GENERIC = 0,      /* x86-64 baseline (or not x86) */
    NAT_ISA_AVX2,             /* AVX2 + FMA */
    NAT_ISA_AVX512_CORE,      /* AVX-512 F, BW, VL, DQ */
    NAT_ISA_AVX512_CORE_VNNI, /* + AVX512_VNNI */
    NAT_ISA_AVX512_CORE_BF16, /* + AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16) */
    NAT_ISA_AVX512_CORE_AMX,  /* + AMX-TILE, AMX-BF16 with the OS's tile state */
} nat_cpu_isa;

/* What the CPU and the OS support, ignoring the cap. */
nat_cpu_isa nat_cpu_isa_detected(void);

/* The cap from ONEDNN_MAX_CPU_ISA; NAT_ISA_AVX512_CORE_AMX (no cap) when unset or not understood. */
nat_cpu_isa nat_cpu_isa_cap(void);

/* The level nat may use: the lower of detected and cap. */
nat_cpu_isa nat_cpu_isa_level(void);

/* The level's name in oneDNN's spelling, lower case: "generic", "avx2", "avx512_core",
 * "avx512_core_vnni", "avx512_core_bf16", "avx512_core_amx". */
const char *nat_cpu_isa_name(void);
const char *nat_cpu_isa_level_name(nat_cpu_isa level);

/* AVX512_BF16 (with AVX-512 core) present and allowed by the cap. */
bool nat_cpu_isa_avx512_bf16(void);

/* AMX-BF16 tiles present, enabled by the OS (XCR0) and allowed by the cap. */
bool nat_cpu_isa_amx_bf16(void);

/* Whether autocast's bf16 products should run on bf16 instructions ("native") or as the f32 kernels on
 * bf16-rounded operands ("emulated": the same products, exact in f32, summed in another order). Native
 * pays only where a bf16 multiply-add outruns an f32 FMA:
 *  - vector (vdpbf16ps, nat's bf16 NA kernels): on AMD cores (Zen 4 and later) a 512-bit vdpbf16ps issues
 *    at the rate of an f32 FMA and does twice its multiply-adds; on an Intel core (a Xeon of family 6
 *    model 207, measured) it issues at a quarter of the FMA's rate, so bf16's peak is half of f32's
 *    (nat-bench isa measures both rates on any CPU; docs/benchmarks.md has the figures). Native on AMD
 *    only.
 *  - GEMMs and convolutions (oneDNN): with AMX tiles (16x the vector rate), or where the vector path pays.
 * A fixed rule from CPUID (vendor and ISA level, the cap included), not a timing, so that a run's
 * arithmetic does not depend on the load of the moment. */
bool nat_cpu_bf16_vector_native(void);
bool nat_cpu_bf16_gemm_native(void);

/* The rule itself, pure (for tests): level is the usable ISA level, amd the CPU's vendor. */
bool nat_cpu_bf16_native_rule(nat_cpu_isa level, bool amd, bool gemm);

/* The CPU's vendor is AMD (or Hygon, its licensee): CPUID leaf 0. */
bool nat_cpu_vendor_amd(void);

/* The level a value of ONEDNN_MAX_CPU_ISA caps to, or -1 for a value oneDNN does not know (which both
 * ignore). NULL or "" is -1 too. Pure: for tests and for callers that want to warn. */
int nat_cpu_isa_cap_parse(const char *value);

#ifdef __cplusplus
}
#endif
#endif
