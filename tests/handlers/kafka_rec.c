/* kafka_rec: the Kafka source tests' handler. For each self-managed Kafka
 * event it appends one line per record it accepts to $OUT, in one write:
 *
 *     <topic> <partition> <offset> <key> <pid>\n
 *
 * Record values are JSON text. A record whose value contains "poison"
 * fails; so does any record while $FAIL_FILE exists (the test removes it
 * to let things through), and a record whose value has "flaky" fails the
 * first time this process sees its offset. With $PARTIAL set, failures are
 * reported as batchItemFailures (the first failing record's offset: the
 * records before it are accepted and logged; with PARTIAL=composite as
 * Lambda's {"partition":"<topic>-<partition>","offset":N}); otherwise the whole
 * invocation fails and nothing is logged. $SLEEP_MS slows each batch;
 * $FAILS, when set, gets the failing offset of each failed invocation. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sluice_runtime.h"

#define SEEN_MAX 65536

static long long seen[SEEN_MAX];
static size_t nseen;

static size_t b64dec(const char *in, unsigned char *out, size_t cap)
{
    static signed char t[256];
    size_t n = 0;
    unsigned v = 0;
    int bits = 0;

    if (!t['B'])
        for (int i = 0; i < 64; i++)
            t[(unsigned char)"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i]] =
                (signed char)(i + 1);
    for (; *in && *in != '='; in++) {
        if (!t[(unsigned char)*in])
            continue;
        v = v << 6 | (unsigned)(t[(unsigned char)*in] - 1);
        bits += 6;
        if (bits >= 8 && n + 1 < cap) {
            bits -= 8;
            out[n++] = (unsigned char)(v >> bits);
        }
    }
    out[n] = '\0';
    return n;
}

static int first_time(long long key)
{
    for (size_t i = 0; i < nseen; i++)
        if (seen[i] == key)
            return 0;
    if (nseen < SEEN_MAX)
        seen[nseen++] = key;
    return 1;
}

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    json_t *ev = json_loadb(event, len, 0, NULL), *recs, *arr;
    const char *path = getenv("OUT"), *failf = getenv("FAIL_FILE"), *sleep_ms = getenv("SLEEP_MS");
    int partial = getenv("PARTIAL") != NULL;
    char *log = NULL, failed_id[32] = "", failed_lane[320] = "";
    size_t loglen = 0, logcap = 0;
    const char *lane;
    int fail_all = failf && access(failf, F_OK) == 0;

    (void)ctx, (void)arg;
    if (!ev || !(recs = json_object_get(ev, "records")) || !json_is_object(recs))
        return slr_set_error("BadEvent", "not a Kafka event");
    if (sleep_ms) {
        struct timespec ts = { atoi(sleep_ms) / 1000, (atoi(sleep_ms) % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    json_object_foreach(recs, lane, arr) {
        size_t i;
        json_t *r;
        json_array_foreach(arr, i, r) {
            const char *topic = json_string_value(json_object_get(r, "topic"));
            long long part = json_integer_value(json_object_get(r, "partition"));
            long long off = json_integer_value(json_object_get(r, "offset"));
            const char *kb = json_string_value(json_object_get(r, "key"));
            const char *vb = json_string_value(json_object_get(r, "value"));
            unsigned char key[256] = "-", val[4096] = "";
            char line[512];
            int n;

            if (kb)
                b64dec(kb, key, sizeof(key));
            if (vb)
                b64dec(vb, val, sizeof(val));
            if (fail_all || strstr((char *)val, "poison") ||
                (strstr((char *)val, "flaky") && first_time(part << 40 | off))) {
                snprintf(failed_id, sizeof(failed_id), "%lld", off);
                snprintf(failed_lane, sizeof(failed_lane), "%s", lane);
                goto done;
            }
            n = snprintf(line, sizeof(line), "%s %lld %lld %s %d\n", topic ? topic : "?", part,
                         off, key, (int)getpid());
            if (loglen + (size_t)n + 1 > logcap) {
                logcap = (loglen + (size_t)n + 1) * 2;
                log = realloc(log, logcap);
            }
            memcpy(log + loglen, line, (size_t)n);
            loglen += (size_t)n;
        }
    }
done:
    json_decref(ev);
    if (failed_id[0] && getenv("FAILS")) {
        /* one line per failed invocation, so tests can see retries happened */
        FILE *f = fopen(getenv("FAILS"), "a");
        if (f) {
            fprintf(f, "%s\n", failed_id);
            fclose(f);
        }
    }
    if (failed_id[0] && !partial) {
        free(log);
        return slr_set_error("RecordFailed", "record at offset %s failed", failed_id);
    }
    if (path && loglen > 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0 || write(fd, log, loglen) != (ssize_t)loglen) {
            free(log);
            return slr_set_error("OutputError", "cannot append to %s", path);
        }
        close(fd);
    }
    free(log);
    if (failed_id[0] && strcmp(getenv("PARTIAL"), "composite") == 0) {
        json_t *o = json_pack("{s:[{s:{s:s,s:I}}]}", "batchItemFailures", "itemIdentifier",
                              "partition", failed_lane, "offset", (json_int_t)atoll(failed_id));
        *out = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    } else if (failed_id[0]) {
        *out = malloc(96);
        snprintf(*out, 96, "{\"batchItemFailures\":[{\"itemIdentifier\":\"%s\"}]}", failed_id);
    } else {
        *out = strdup("{}");
    }
    *out_len = strlen(*out);
    return 0;
}

int main(void)
{
    return slr_start(handle, NULL);
}
