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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sluice_runtime.h"

static int fails;

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    const char *path = getenv("PG_OUT"), *fail_key = getenv("PG_FAIL_KEY");
    json_t *ev, *recs, *r;
    size_t i, cap = len + 64, n = 0;
    char *buf;
    int fd;

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
    ev = json_loadb(event, len, 0, NULL);
    recs = ev ? json_object_get(ev, "Records") : NULL;
    if (!json_is_array(recs)) {
        json_decref(ev);
        return slr_set_error("BadEvent", "no Records array");
    }
    buf = malloc(cap);
    json_array_foreach(recs, i, r) {
        char *line = json_dumps(r, JSON_COMPACT);
        size_t l = strlen(line);
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
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || write(fd, buf, n) != (ssize_t)n) {
        free(buf);
        if (fd >= 0)
            close(fd);
        return slr_set_error("WriteFailed", "cannot append to %s", path);
    }
    close(fd);
    free(buf);
    *out = strdup("{}");
    return 0;
}

int main(void)
{
    return slr_start(handle, NULL);
}
