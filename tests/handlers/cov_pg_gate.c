/* cov_pg_gate: a change-stream handler for the Postgres source tests whose
 * failures the test controls from outside the process (a handler process
 * per lane, and processes recycled, so a counter inside one would not do).
 *
 * Every record of a successful batch is appended to $PG_OUT as one JSON
 * line, with "_pid" (this process) added, in one write per batch. A batch
 * fails, and writes nothing, while:
 *   - it holds a record whose JSON contains $GATE_KEY and the file
 *     $GATE_FILE exists (the test removes the file to let it through);
 *   - it holds a record whose JSON contains $POISON (always).
 * Each failed invocation appends one line to $FAILS when that is set. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_handler.h"
#include "sluice_runtime.h"

static bool holds(const char *event, const char *env)
{
    const char *v = getenv(env);

    return v && *v && strstr(event, v);
}

static int failed(const char *why)
{
    const char *path = getenv("FAILS");

    if (path && *path) {
        FILE *f = fopen(path, "a");
        if (f) {
            fprintf(f, "%s %d\n", why, (int)getpid());
            fclose(f);
        }
    }
    return slr_set_error("PlannedFailure", "batch holds the %s", why);
}

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    const char *gate = getenv("GATE_FILE");

    (void)ctx, (void)arg, (void)out_len;
    if (holds(event, "POISON"))
        return failed("poison");
    if (holds(event, "GATE_KEY") && gate && access(gate, F_OK) == 0)
        return failed("gate");
    return pg_write_records(event, len, getenv("PG_OUT"), true, true, out);
}

int main(void)
{
    return slr_start(handle, NULL);
}
