/* Shared by the Postgres source test handlers (pg_record, cov_pg_gate):
 * the records of an event as JSON lines, appended to a file in one write
 * so that what the file holds was seen whole. A header, not a .c, so the
 * Makefile does not build it as a handler of its own. */
#ifndef SLUICE_TEST_PG_HANDLER_H
#define SLUICE_TEST_PG_HANDLER_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sluice_runtime.h"

/* Every record of the event's "Records" array as one compact JSON line,
 * with "_pid" (this process) added when stamp_pid; the lines go to *buf
 * (malloc'd, *n bytes). Returns 0, or the runtime's error when the event
 * has no Records array (*buf is then NULL). */
static int pg_event_lines(const char *event, size_t len, bool stamp_pid, char **buf, size_t *n)
{
    json_t *ev = json_loadb(event, len, 0, NULL), *recs, *r;
    size_t i, cap = len + 64;

    *buf = NULL;
    *n = 0;
    recs = ev ? json_object_get(ev, "Records") : NULL;
    if (!json_is_array(recs)) {
        json_decref(ev);
        return slr_set_error("BadEvent", "no Records array");
    }
    *buf = malloc(cap);
    json_array_foreach(recs, i, r) {
        char *line;
        size_t l;

        if (stamp_pid)
            json_object_set_new(r, "_pid", json_integer(getpid()));
        line = json_dumps(r, JSON_COMPACT);
        l = strlen(line);
        if (*n + l + 2 > cap) {
            cap = (*n + l + 2) * 2;
            *buf = realloc(*buf, cap);
        }
        memcpy(*buf + *n, line, l);
        *n += l;
        (*buf)[(*n)++] = '\n';
        free(line);
    }
    json_decref(ev);
    return 0;
}

/* Appends n bytes to path in one write. */
static int pg_append(const char *path, const char *buf, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);

    if (fd < 0 || write(fd, buf, n) != (ssize_t)n) {
        if (fd >= 0)
            close(fd);
        return slr_set_error("WriteFailed", "cannot append to %s", path);
    }
    close(fd);
    return 0;
}

/* The handler's answer after the event's records went to path (when it
 * is set) as JSON lines: {} in *out, or the runtime's error. With
 * skip_empty a batch without records leaves the file alone (not even
 * created). */
static int pg_write_records(const char *event, size_t len, const char *path, bool stamp_pid,
                            bool skip_empty, char **out)
{
    size_t n;
    char *buf;
    int rc = pg_event_lines(event, len, stamp_pid, &buf, &n);

    if (rc == 0 && path && *path && (n > 0 || !skip_empty))
        rc = pg_append(path, buf, n);
    free(buf);
    if (rc != 0)
        return rc;
    *out = strdup("{}");
    return 0;
}

#endif
