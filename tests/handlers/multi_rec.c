/* multi_rec: the several-instances test's handler. For every record of a
 * Kafka, SQS-shaped (Redis queue) or DynamoDB-shaped (Postgres) event,
 * and for an asynchronous event {"async": n}, it appends one line to
 * $OUT, all lines of an invocation in one write:
 *
 *     <k|r|p|a> <id> <unix ms> <where> <env>\n
 *
 * The id is a Kafka record's value, a queue message's body, the `id`
 * column of a Postgres row (NewImage), or an async event's `async`;
 * <where> is a Kafka record's <partition>:<offset>, "-" for the others;
 * <env> names the environment that ran it (its log stream name, fresh for
 * every environment), so a test can tell whether an environment survived
 * a reload. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "sluice_runtime.h"

struct out {
    char  *p;
    size_t n, cap;
};

static void line(struct out *o, char src, const char *id, size_t idlen, long long ms,
                 const char *where)
{
    char buf[256];
    int n;

    if (idlen > 40)
        idlen = 40;
    const char *env = getenv("AWS_LAMBDA_LOG_STREAM_NAME");

    n = snprintf(buf, sizeof(buf), "%c %.*s %lld %s %.80s\n", src, (int)idlen, id, ms, where,
                 env && *env ? env : "-");
    if (o->n + (size_t)n + 1 > o->cap) {
        o->cap = (o->n + (size_t)n + 1) * 2;
        o->p = realloc(o->p, o->cap);
    }
    memcpy(o->p + o->n, buf, (size_t)n);
    o->n += (size_t)n;
}

static int b64(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Base64 text to bytes in `out` (at most n - 1), NUL-terminated. */
static size_t unb64(const char *s, char *out, size_t n)
{
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;

    for (; *s && o + 1 < n; s++) {
        int v = b64((unsigned char)*s);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return o;
}

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    json_t *ev = json_loadb(event, len, 0, NULL), *v, *r;
    const char *path = getenv("OUT"), *key;
    struct out o = { 0 };
    struct timeval tv;
    long long ms;
    size_t i;

    (void)ctx, (void)arg;
    gettimeofday(&tv, NULL);
    ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    if (!ev)
        return slr_set_error("BadEvent", "not JSON");
    if ((v = json_object_get(ev, "async")) && json_is_integer(v)) {
        char id[32];
        line(&o, 'a', id, (size_t)snprintf(id, sizeof(id), "%lld",
                                           (long long)json_integer_value(v)), ms, "-");
    } else if ((v = json_object_get(ev, "records")) && json_is_object(v)) {
        json_t *list;
        json_object_foreach(v, key, list) {
            json_array_foreach(list, i, r) {
                char id[64], where[48];
                const char *val = json_string_value(json_object_get(r, "value"));
                snprintf(where, sizeof(where), "%lld:%lld",
                         (long long)json_integer_value(json_object_get(r, "partition")),
                         (long long)json_integer_value(json_object_get(r, "offset")));
                if (val)
                    line(&o, 'k', id, unb64(val, id, sizeof(id)), ms, where);
            }
        }
    } else if ((v = json_object_get(ev, "Records")) && json_is_array(v)) {
        json_array_foreach(v, i, r) {
            const char *src = json_string_value(json_object_get(r, "eventSource"));
            const char *id = NULL;
            if (src && strcmp(src, "aws:sqs") == 0)
                id = json_string_value(json_object_get(r, "body"));
            else if (src && strcmp(src, "aws:dynamodb") == 0) {
                json_t *img = json_object_get(json_object_get(r, "dynamodb"), "NewImage");
                id = json_string_value(json_object_get(json_object_get(img, "id"), "N"));
            }
            if (id)
                line(&o, src[4] == 's' ? 'r' : 'p', id, strlen(id), ms, "-");
        }
    }
    json_decref(ev);
    if (path && o.n) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
        ssize_t w = fd >= 0 ? write(fd, o.p, o.n) : -1;
        if (fd >= 0)
            close(fd);
        if (w != (ssize_t)o.n) {
            free(o.p);
            return slr_set_error("WriteFailed", "cannot append to $OUT");
        }
    }
    free(o.p);
    *out = strdup("{}");
    *out_len = 2;
    return *out ? 0 : slr_set_error("OutOfMemory", "no memory");
}

int main(void)
{
    return slr_start(handle, NULL);
}
