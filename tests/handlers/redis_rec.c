/* redis_rec: the Redis source tests' handler. For each SQS-shaped event it
 * appends one line per record to $OUT, in one write per invocation:
 *
 *     <messageId> <body n> <ApproximateReceiveCount> <ok|fail> <pid> <unix ms>\n
 *
 * A record's body is JSON: {"n": <int>, "fail_until": k, "poison": true,
 * "delay_s": d}. It fails while its receive count is below fail_until, or
 * when poison, until a file "$OUT.fixed" exists (the bug fixed, for
 * redrive tests). With $PARTIAL set, failures are reported in
 * batchItemFailures (with "visibilityTimeoutSeconds": d when the body has
 * delay_s); otherwise one failure fails the whole invocation. $SLEEP_MS
 * slows each invocation. Without $OUT it records nothing. With $EVENTS,
 * each event is also appended to that file as it came, one line each
 * (the event is compact JSON: no newline inside). */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sluice_runtime.h"

static long long now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
}

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    json_t *ev = json_loadb(event, len, 0, NULL), *recs, *r;
    const char *path = getenv("OUT"), *sleep_ms = getenv("SLEEP_MS");
    int partial = getenv("PARTIAL") != NULL, failed = 0, fixed = 0;
    char fixed_path[600];
    char *log = NULL, *resp = NULL;
    size_t loglen = 0, logcap = 0, rlen = 0, rcap = 0, i;
    long long t = now_ms();

    (void)ctx, (void)arg;
    if (path) {
        snprintf(fixed_path, sizeof(fixed_path), "%s.fixed", path);
        fixed = access(fixed_path, F_OK) == 0;
    }
    if (!ev || !(recs = json_object_get(ev, "Records")) || !json_is_array(recs)) {
        json_decref(ev);
        return slr_set_error("BadEvent", "not an SQS-shaped event");
    }
    if (sleep_ms) {
        long ms = atol(sleep_ms);
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    append(&resp, &rlen, &rcap, "{\"batchItemFailures\":[", 22);
    json_array_foreach(recs, i, r) {
        const char *id = json_string_value(json_object_get(r, "messageId"));
        const char *rcs = json_string_value(
            json_object_get(json_object_get(r, "attributes"), "ApproximateReceiveCount"));
        const char *bs = json_string_value(json_object_get(r, "body"));
        json_t *body = bs ? json_loads(bs, JSON_DECODE_ANY, NULL) : NULL;
        long long n = json_integer_value(json_object_get(body, "n"));
        int rc = rcs ? atoi(rcs) : 0;
        int fail = (!fixed && json_is_true(json_object_get(body, "poison"))) ||
                   rc < json_integer_value(json_object_get(body, "fail_until"));
        char line[256];
        int k = snprintf(line, sizeof(line), "%s %lld %d %s %d %lld\n", id ? id : "?", n, rc,
                         fail ? "fail" : "ok", (int)getpid(), t);

        append(&log, &loglen, &logcap, line, (size_t)k);
        if (fail) {
            json_t *d = json_object_get(body, "delay_s");
            if (d)
                k = snprintf(line, sizeof(line),
                             "%s{\"itemIdentifier\":\"%s\",\"visibilityTimeoutSeconds\":%lld}",
                             failed ? "," : "", id ? id : "", json_integer_value(d));
            else
                k = snprintf(line, sizeof(line), "%s{\"itemIdentifier\":\"%s\"}",
                             failed ? "," : "", id ? id : "");
            append(&resp, &rlen, &rcap, line, (size_t)k);
            failed++;
        }
        json_decref(body);
    }
    json_decref(ev);
    append(&resp, &rlen, &rcap, "]}", 2);
    resp[rlen] = '\0';
    if (path && loglen > 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0 || write(fd, log, loglen) != (ssize_t)loglen) {
            free(log);
            free(resp);
            if (fd >= 0)
                close(fd);
            return slr_set_error("OutputError", "cannot append to %s", path);
        }
        close(fd);
    }
    free(log);
    if (getenv("EVENTS")) {
        int fd = open(getenv("EVENTS"), O_WRONLY | O_CREAT | O_APPEND, 0644);
        char *line = malloc(len + 1);

        memcpy(line, event, len);
        line[len] = '\n';
        if (fd < 0 || write(fd, line, len + 1) != (ssize_t)(len + 1)) {
            free(line);
            free(resp);
            if (fd >= 0)
                close(fd);
            return slr_set_error("OutputError", "cannot append to %s", getenv("EVENTS"));
        }
        free(line);
        close(fd);
    }
    if (failed && !partial) {
        free(resp);
        return slr_set_error("RecordFailed", "%d record(s) failed", failed);
    }
    *out = resp;
    *out_len = rlen;
    return 0;
}

int main(void)
{
    return slr_start(handle, NULL);
}
