/* core/cpu/isa.c — CPUID / XGETBV feature detection and the ONEDNN_MAX_CPU_ISA cap (core/cpu/isa.h).
 * Bits from Intel's SDM vol. 2A (CPUID) and vol. 1 §13 (XCR0); AMD follows the same leaves. */
#include "core/cpu/isa.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h> /* __get_cpuid_count */
#define NAT_ISA_X86 1
#endif

static const char *const LEVEL_NAMES[] = {"generic", "avx2", "avx512_core", "avx512_core_vnni",
                                          "avx512_core_bf16", "avx512_core_amx"};

#if defined(NAT_ISA_X86)
static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static nat_cpu_isa detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d))
        return NAT_ISA_GENERIC;
    const bool fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1;
    if (!osxsave || !avx)
        return NAT_ISA_GENERIC;
    const uint64_t x = xcr0();
    const bool ymm_os = (x & 0x6) == 0x6;           /* SSE + AVX state */
    const bool zmm_os = ymm_os && (x & 0xE0) == 0xE0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    const bool tile_os = (x & 0x60000) == 0x60000;  /* XTILECFG, XTILEDATA */
    unsigned maxleaf = __get_cpuid_max(0, NULL);
    if (maxleaf < 7 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return NAT_ISA_GENERIC;
    const unsigned b7 = b, c7 = c, d7 = d;
    unsigned a71 = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d))
        a71 = a;
    const bool avx2 = b7 >> 5 & 1;
    const bool avx512 = (b7 >> 16 & 1) && (b7 >> 17 & 1) && (b7 >> 30 & 1) && (b7 >> 31 & 1); /* F DQ BW VL */
    const bool vnni = c7 >> 11 & 1, bf16 = a71 >> 5 & 1;
    const bool amx = (d7 >> 24 & 1) && (d7 >> 22 & 1); /* AMX-TILE, AMX-BF16 */
    if (!(avx2 && fma && ymm_os))
        return NAT_ISA_GENERIC;
    if (!(avx512 && zmm_os))
        return NAT_ISA_AVX2;
    if (!vnni)
        return NAT_ISA_AVX512_CORE;
    if (!bf16)
        return NAT_ISA_AVX512_CORE_VNNI;
    if (!(amx && tile_os))
        return NAT_ISA_AVX512_CORE_BF16;
    return NAT_ISA_AVX512_CORE_AMX;
}
#else
static nat_cpu_isa detect(void) { return NAT_ISA_GENERIC; }
#endif

int nat_cpu_isa_cap_parse(const char *value)
{
    static const struct {
        const char *name;
        nat_cpu_isa level;
    } caps[] = {
        {"SSE41", NAT_ISA_GENERIC},
        {"AVX", NAT_ISA_GENERIC},
        {"AVX2", NAT_ISA_AVX2},
        {"AVX2_VNNI", NAT_ISA_AVX2},
        {"AVX2_VNNI_2", NAT_ISA_AVX2},
        {"AVX512_CORE", NAT_ISA_AVX512_CORE},
        {"AVX512_CORE_VNNI", NAT_ISA_AVX512_CORE_VNNI},
        {"AVX512_CORE_BF16", NAT_ISA_AVX512_CORE_BF16},
        {"AVX512_CORE_FP16", NAT_ISA_AVX512_CORE_BF16},
        {"AVX10_1_512", NAT_ISA_AVX512_CORE_BF16},
        {"AVX10_2_512", NAT_ISA_AVX512_CORE_BF16},
        {"AVX512_CORE_AMX", NAT_ISA_AVX512_CORE_AMX},
        {"AVX512_CORE_AMX_FP16", NAT_ISA_AVX512_CORE_AMX},
        {"AVX10_1_512_AMX", NAT_ISA_AVX512_CORE_AMX},
        {"AVX10_1_512_AMX_FP16", NAT_ISA_AVX512_CORE_AMX},
        {"AVX10_2_512_AMX_2", NAT_ISA_AVX512_CORE_AMX},
        {"ALL", NAT_ISA_AVX512_CORE_AMX},
    };
    if (!value)
        return -1;
    char up[32];
    size_t n = strlen(value);
    if (n == 0 || n >= sizeof up)
        return -1;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)toupper((unsigned char)value[i]);
    for (size_t i = 0; i < sizeof caps / sizeof *caps; i++)
        if (strcmp(up, caps[i].name) == 0)
            return (int)caps[i].level;
    return -1;
}

#if defined(NAT_ISA_X86)
static bool detect_amd(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return false;
    char v[13];
    memcpy(v, &b, 4), memcpy(v + 4, &d, 4), memcpy(v + 8, &c, 4); /* vendor string: EBX, EDX, ECX */
    v[12] = '\0';
    return strcmp(v, "AuthenticAMD") == 0 || strcmp(v, "HygonGenuine") == 0;
}
#else
static bool detect_amd(void) { return false; }
#endif

static struct {
    pthread_once_t once;
    nat_cpu_isa detected, cap;
    bool amd;
} isa_state = {PTHREAD_ONCE_INIT, NAT_ISA_GENERIC, NAT_ISA_AVX512_CORE_AMX, false};

static void isa_init(void)
{
    isa_state.detected = detect();
    isa_state.amd = detect_amd();
    const int c = nat_cpu_isa_cap_parse(getenv("ONEDNN_MAX_CPU_ISA"));
    isa_state.cap = c < 0 ? NAT_ISA_AVX512_CORE_AMX : (nat_cpu_isa)c;
}

nat_cpu_isa nat_cpu_isa_detected(void)
{
    pthread_once(&isa_state.once, isa_init);
    return isa_state.detected;
}

nat_cpu_isa nat_cpu_isa_cap(void)
{
    pthread_once(&isa_state.once, isa_init);
    return isa_state.cap;
}

nat_cpu_isa nat_cpu_isa_level(void)
{
    const nat_cpu_isa d = nat_cpu_isa_detected(), c = nat_cpu_isa_cap();
    return d < c ? d : c;
}

const char *nat_cpu_isa_level_name(nat_cpu_isa level)
{
    return (unsigned)level < sizeof LEVEL_NAMES / sizeof *LEVEL_NAMES ? LEVEL_NAMES[level] : "unknown";
}

const char *nat_cpu_isa_name(void) { return nat_cpu_isa_level_name(nat_cpu_isa_level()); }

bool nat_cpu_isa_avx512_bf16(void) { return nat_cpu_isa_level() >= NAT_ISA_AVX512_CORE_BF16; }

bool nat_cpu_isa_amx_bf16(void) { return nat_cpu_isa_level() >= NAT_ISA_AVX512_CORE_AMX; }

bool nat_cpu_vendor_amd(void)
{
    pthread_once(&isa_state.once, isa_init);
    return isa_state.amd;
}

bool nat_cpu_bf16_native_rule(nat_cpu_isa level, bool amd, bool gemm)
{
    const bool vector = level >= NAT_ISA_AVX512_CORE_BF16 && amd;
    return gemm ? vector || level >= NAT_ISA_AVX512_CORE_AMX : vector;
}

bool nat_cpu_bf16_vector_native(void) { return nat_cpu_bf16_native_rule(nat_cpu_isa_level(), nat_cpu_vendor_amd(), false); }

bool nat_cpu_bf16_gemm_native(void) { return nat_cpu_bf16_native_rule(nat_cpu_isa_level(), nat_cpu_vendor_amd(), true); }
