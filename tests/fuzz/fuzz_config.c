/* tests/fuzz/fuzz_config.c — nat-train's config parser on arbitrary bytes, through nat_config_load (the
 * file path: NUL bytes, UTF-8 checks, long lines), then resolution and the text round trip of a config
 * that parsed. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "train/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("in.cfg", data, size);
    nat_config c;
    nat_config_defaults(&c);
    if (nat_config_load(&c, path) != NAT_OK)
        return 0;
    (void)nat_config_resolve(&c);
    char *text = nat_config_to_string(&c);
    if (text) { /* what nat-train stores in a checkpoint must read back */
        nat_config back;
        nat_config_defaults(&back);
        if (nat_config_parse_string(&back, text, "round-trip") != NAT_OK)
            abort();
        free(text);
    }
    return 0;
}
