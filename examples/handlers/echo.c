/* echo: answers every event with the event itself.
 *
 * The smallest useful handler: shows the calling convention of
 * runtime/c/sluice_runtime.h and prints one line per invocation, which
 * sluice logs under the invocation's request id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_runtime.h"

static int echo(const char *event, size_t len, const struct slr_context *ctx, char **out,
                size_t *out_len, void *arg)
{
    (void)arg;
    printf("echo: got %zu bytes (%lld ms left)\n", len, (long long)slr_remaining_ms(ctx));
    /* The library frees *out, so hand it a copy, never `event`. */
    *out = malloc(len ? len : 1);
    if (!*out)
        return slr_set_error("OutOfMemory", "cannot copy %zu bytes", len);
    memcpy(*out, event, len);
    *out_len = len;
    return 0;
}

int main(void)
{
    return slr_start(echo, NULL);
}
