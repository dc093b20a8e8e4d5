/* kafka_noop: accepts every batch without looking at it; the Kafka
 * benchmark's handler, so the figure is sluice's cost, not the handler's. */
#include <stdlib.h>
#include <string.h>

#include "sluice_runtime.h"

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    (void)event, (void)len, (void)ctx, (void)arg;
    *out = strdup("{}");
    *out_len = 2;
    return *out ? 0 : slr_set_error("OutOfMemory", "no memory");
}

int main(void)
{
    return slr_start(handle, NULL);
}
