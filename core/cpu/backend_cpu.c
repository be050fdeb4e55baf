/* core/cpu/backend_cpu.c — the CPU kernel table (core/backend.h): every entry is one of the nat_cpu_*
 * kernels of the files of core/cpu/ (declared in core/cpu/kernels.h). The CPU has no device entries: they are
 * reached only through the CUDA table (core/device.c). */
#include "core/backend.h"

const nat_backend nat_backend_cpu = {
    .name = "cpu",
};
