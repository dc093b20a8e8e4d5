/* bench/redisbench.h: what the benchmarks on a Redis stream (redis,
 * bullmq) share, on top of srcbench.h: a redis-server of the benchmark's
 * own, a stream filled before timing, and sluice draining it through a
 * `type: redis` source into the no-op C handler tests/handlers/redis_noop.c.
 *
 * Everything is static inline, as in bench.h. */
#ifndef SLUICE_BENCH_REDISBENCH_H
#define SLUICE_BENCH_REDISBENCH_H

#include "srcbench.h"

#include <hiredis/hiredis.h>
#include <spawn.h>
#include <sys/stat.h>

extern char **environ;

/* redis-server on port, no persistence, as b->aux, working in <dir>/<sub>
 * (<dir> when sub is NULL) with its log there; 0 or -1. */
static inline int rb_start_redis(struct sb_bench *b, int port, const char *sub)
{
    char portstr[16], d[128];
    char *argv[] = { "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", d, "--logfile", "redis.log", NULL };

    snprintf(portstr, sizeof(portstr), "%d", port);
    if (sub) {
        snprintf(d, sizeof(d), "%s/%s", b->dir, sub);
        mkdir(d, 0755);
    } else {
        snprintf(d, sizeof(d), "%s", b->dir);
    }
    return posix_spawnp(&b->aux, "redis-server", NULL, NULL, argv, environ) == 0 ? 0 : -1;
}

/* A connection to 127.0.0.1:port once it answers PING (up to 10 s). */
static inline redisContext *rb_connect(int port)
{
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        bool ok = r && r->type == REDIS_REPLY_STATUS;

        freeReplyObject(r);
        if (ok)
            return c;
        redisFree(c);
        usleep(50000);
    }
    return NULL;
}

/* n entries `body {"n":<i>}` added to the stream key, pipelined. */
static inline bool rb_fill(redisContext *c, const char *key, int n)
{
    const int chunk = 10000;

    for (int i = 0; i < n; i += chunk) {
        int end = i + chunk < n ? i + chunk : n;
        for (int k = i; k < end; k++)
            redisAppendCommand(c, "XADD %s * body {\"n\":%d}", key, k);
        for (int k = i; k < end; k++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR)
                return false;
            freeReplyObject(r);
        }
    }
    return true;
}

/* Lag plus pending of the stream's only consumer group; -1 on error (as
 * long as sluice has not created the group yet). */
static inline long rb_left(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "XINFO GROUPS %s", key);
    long v = -1;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        redisReply *g = r->element[0];
        long lag = -1, pending = -1;
        for (size_t i = 0; i + 1 < g->elements; i += 2) {
            if (strcmp(g->element[i]->str, "lag") == 0 &&
                g->element[i + 1]->type == REDIS_REPLY_INTEGER)
                lag = g->element[i + 1]->integer;
            if (strcmp(g->element[i]->str, "pending") == 0)
                pending = g->element[i + 1]->integer;
        }
        if (lag >= 0 && pending >= 0)
            v = lag + pending;
    }
    freeReplyObject(r);
    return v;
}

struct rb_stream {
    redisContext *c;   /* borrowed */
    const char   *key;
};

static inline bool rb_drained(void *arg)
{
    struct rb_stream *s = arg;
    return rb_left(s->c, s->key) == 0;
}

/* Messages per second of `sluice run` draining the n entries of the
 * stream key on 127.0.0.1:port (batch_size batch, maximum_concurrency
 * conc, visibility 60 s, the no-op handler): timed from the start of the
 * process until the group's lag and pending count are 0, so every message
 * was read, shaped into an SQS event, invoked and acknowledged. -1 on
 * failure (see <dir>/sluice.log). */
static inline double rb_through_sluice(struct sb_bench *b, redisContext *c, int port,
                                       const char *key, int n, int batch, int conc)
{
    struct rb_stream s = { .c = c, .key = key };
    double secs;

    if (sb_config(b, "memory_mb: 1769", "redis",
                  "    url: redis://127.0.0.1:%d\n    key: %s\n    batch_size: %d\n"
                  "    maximum_concurrency: %d\n    visibility_timeout_s: 60\n",
                  port, key, batch, conc) != 0)
        return -1;
    secs = sb_run_sluice(b, rb_drained, &s, 20, 600);
    return secs > 0 ? n / secs : -1;
}

#endif
