/* redis_noop: answers every event with an empty success, reading nothing.
 * The Redis benchmarks' handler: what is measured is sluice, not the
 * handler. */
#include <stdlib.h>
#include <string.h>

#include "sluice_runtime.h"

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    (void)event, (void)len, (void)ctx, (void)arg;
    *out = strdup("{}");
    *out_len = 2;
    return *out ? 0 : slr_set_error("OutOfMemory", "no memory for the answer");
}

int main(void)
{
    return slr_start(handle, NULL);
}
