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
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

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
    const char *path = getenv("PG_OUT"), *gate = getenv("GATE_FILE");
    json_t *ev, *recs, *r;
    size_t i, cap = len + 64, n = 0;
    char *buf;
    int fd;

    (void)ctx, (void)arg, (void)out_len;
    if (holds(event, "POISON"))
        return failed("poison");
    if (holds(event, "GATE_KEY") && gate && access(gate, F_OK) == 0)
        return failed("gate");
    ev = json_loadb(event, len, 0, NULL);
    recs = ev ? json_object_get(ev, "Records") : NULL;
    if (!json_is_array(recs)) {
        json_decref(ev);
        return slr_set_error("BadEvent", "no Records array");
    }
    buf = malloc(cap);
    json_array_foreach(recs, i, r) {
        char *line;
        size_t l;

        json_object_set_new(r, "_pid", json_integer(getpid()));
        line = json_dumps(r, JSON_COMPACT);
        l = strlen(line);
        if (n + l + 2 > cap) {
            cap = (n + l + 2) * 2;
            buf = realloc(buf, cap);
        }
        memcpy(buf + n, line, l);
        n += l;
        buf[n++] = '\n';
        free(line);
    }
    json_decref(ev);
    if (path && *path && n > 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0 || write(fd, buf, n) != (ssize_t)n) {
            free(buf);
            if (fd >= 0)
                close(fd);
            return slr_set_error("WriteFailed", "cannot append to %s", path);
        }
        close(fd);
    }
    free(buf);
    *out = strdup("{}");
    return 0;
}

int main(void)
{
    return slr_start(handle, NULL);
}
