/* pg_record: a change-stream handler for the Postgres source tests and
 * benchmark.
 *
 * With PG_OUT set (a file path; the function runs with `sandbox: relaxed`
 * so it can reach it), every record of every batch is appended to that
 * file as one JSON line, in one write per batch, before the handler
 * answers: what the file holds was seen at least once. Without PG_OUT it
 * does nothing (the benchmark's no-op). PG_FAIL_KEY=<text> makes a batch
 * fail while it holds a record whose JSON contains that text (the first
 * PG_FAIL_TIMES times, default 1). */
#include <stdlib.h>
#include <string.h>

#include "pg_handler.h"
#include "sluice_runtime.h"

static int fails;

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    const char *path = getenv("PG_OUT"), *fail_key = getenv("PG_FAIL_KEY");

    (void)ctx, (void)arg, (void)out_len;
    if (fail_key && *fail_key && strstr(event, fail_key)) {
        int times = getenv("PG_FAIL_TIMES") ? atoi(getenv("PG_FAIL_TIMES")) : 1;
        if (fails < times) {
            fails++;
            return slr_set_error("PlannedFailure", "batch holds %s", fail_key);
        }
    }
    if (!path || !*path) {
        *out = strdup("{}");
        return 0;
    }
    return pg_write_records(event, len, path, false, false, out);
}

int main(void)
{
    return slr_start(handle, NULL);
}
