/* Fuzz target: the configuration loader on arbitrary bytes. Every input
 * must give a config or diagnostics, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>

#include "sluice/config.h"
#include "sluice/pollers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sl_diags d;
    struct sl_config *c = NULL;

    sl_diags_init(&d, "fuzz.yaml");
    if (sl_config_load_buffer("fuzz.yaml", "/nonexistent", (const char *)data, size,
                              &sl_registry, &c, &d) == 0)
        sl_config_free(c);
    sl_diags_destroy(&d);
    return 0;
}
