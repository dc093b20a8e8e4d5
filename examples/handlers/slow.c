/* slow: sleeps event.sleep_ms milliseconds (default 5000), then answers
 * {"slept_ms": n}.
 *
 * For testing timeouts and concurrency. The event is scanned for the one
 * key by hand to keep the example free of a JSON library; a real handler
 * would parse it (jansson, cJSON). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice_runtime.h"

#define DEFAULT_SLEEP_MS 5000

/* The integer after "sleep_ms": in the event's top level or anywhere
 * else; good enough for test events. */
static long sleep_ms_of(const char *event)
{
    const char *p = strstr(event, "\"sleep_ms\"");
    char *end;
    long v;

    if (!p)
        return DEFAULT_SLEEP_MS;
    p += strlen("\"sleep_ms\"");
    p += strspn(p, " \t\r\n");
    if (*p++ != ':')
        return DEFAULT_SLEEP_MS;
    errno = 0;
    v = strtol(p, &end, 10);
    if (end == p || errno || v < 0)
        return DEFAULT_SLEEP_MS;
    return v;
}

static int slow(const char *event, size_t len, const struct slr_context *ctx, char **out,
                size_t *out_len, void *arg)
{
    long ms = sleep_ms_of(event); /* the library NUL-terminates the event */
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    char buf[64];
    int n;

    (void)len;
    (void)ctx;
    (void)arg;
    printf("slow: sleeping %ld ms\n", ms);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    n = snprintf(buf, sizeof buf, "{\"slept_ms\":%ld}", ms);
    *out = malloc((size_t)n + 1);
    if (!*out)
        return slr_set_error("OutOfMemory", "cannot build the result");
    memcpy(*out, buf, (size_t)n + 1);
    *out_len = (size_t)n;
    return 0;
}

int main(void)
{
    return slr_start(slow, NULL);
}
