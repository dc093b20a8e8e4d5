/* logc: a native C handler that writes log lines on stdout: a plain line,
 * a JSON object with a level of its own, one at DEBUG, and one that is a
 * JSON object without level or timestamp. For tests/unit/test_logs.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_runtime.h"

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    (void)event, (void)len, (void)arg;
    printf("c plain line %s\n", ctx->request_id);
    printf("{\"level\":\"WARN\",\"msg\":\"c warn object\"}\n");
    printf("{\"level\":\"debug\",\"msg\":\"c debug object\"}\n");
    printf("{\"cobject\":true}\n");
    fflush(stdout);
    *out = strdup("{\"c\":true}");
    *out_len = strlen(*out);
    return *out ? 0 : slr_set_error("OutOfMemory", "no memory");
}

int main(void)
{
    return slr_start(handle, NULL);
}
