/* fail: rejects every event with an "OrderError".
 *
 * For testing retries, bisection and dead-letter destinations: the
 * invocation always ends with ok:false and the handler's own error type. */
#include <stdio.h>

#include "sluice_runtime.h"

static int fail(const char *event, size_t len, const struct slr_context *ctx, char **out,
                size_t *out_len, void *arg)
{
    (void)event;
    (void)out;
    (void)out_len;
    (void)arg;
    printf("fail: rejecting %zu bytes\n", len);
    return slr_set_error("OrderError", "order rejected (request %s)", ctx->request_id);
}

int main(void)
{
    return slr_start(fail, NULL);
}
