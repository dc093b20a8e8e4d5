/* bench redis: messages per second through a Redis stream source, end to
 * end.
 *
 * A redis-server of the benchmark's own (no persistence, a free port, a
 * temporary directory) holds two streams of N = 1,000,000 entries each
 * (`body {"n":<i>}`), added before anything is timed.
 *
 * Baseline: a minimal hiredis consumer in this process, the fastest loop a
 * program can run against a consumer group with no work per message:
 * XREADGROUP COUNT 100 pipelined with the XACK of the previous 100 ids,
 * until the stream is drained and acknowledged.
 *
 * sluice: `sluice run` with a `type: redis` stream source on the other
 * stream (batch_size 100, maximum_concurrency 4, visibility 60 s) and the
 * no-op C handler tests/handlers/redis_noop.c in its sandbox; timed from
 * the start of the process until the group's lag and pending count are 0,
 * so every message was read, shaped into an SQS event, invoked and
 * acknowledged. Target: ratio >= 0.5.
 *
 * The temporary directory (/tmp/sluice-bench-redis-XXXXXX, with Redis's
 * and sluice's logs) is removed on success, kept and named on failure. */
#include "redisbench.h"

#define NAME   "redis"
#define N      1000000
#define BATCH  100
#define CONC   4

/* XREADGROUP COUNT 100 pipelined with the XACK of the previous batch. */
static double baseline(redisContext *c, const char *key)
{
    const char *ids[BATCH + 3];
    size_t lens[BATCH + 3];
    redisReply *prev = NULL;
    long done = 0;
    double t0;

    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0", key));
    t0 = now_us();
    for (;;) {
        redisReply *r = NULL, *entries;
        size_t n = 0;

        if (prev) {
            entries = prev->element[0]->element[1];
            ids[0] = "XACK", ids[1] = key, ids[2] = "g";
            for (size_t i = 0; i < entries->elements; i++)
                ids[3 + i] = entries->element[i]->element[0]->str;
            for (size_t i = 0; i < entries->elements + 3; i++)
                lens[i] = strlen(ids[i]);
            redisAppendCommandArgv(c, (int)entries->elements + 3, ids, lens);
        }
        redisAppendCommand(c, "XREADGROUP GROUP g c COUNT %d STREAMS %s >", BATCH, key);
        if (prev) {
            if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_INTEGER)
                return -1;
            done += r->integer;
            freeReplyObject(r);
            freeReplyObject(prev);
            prev = NULL;
        }
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return -1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1)
            n = r->element[0]->element[1]->elements;
        if (n == 0) {
            freeReplyObject(r);
            break;
        }
        prev = r;
    }
    if (done != N)
        return -1;
    return N / ((now_us() - t0) / 1e6);
}

int main(void)
{
    struct sb_bench b;
    int port = bench_free_port();
    redisContext *c;
    double base, mine;

    if (sb_open(&b, NAME, "redis", "redis_noop") != 0)
        return 1;
    if (rb_start_redis(&b, port, NULL) != 0)
        return sb_fail(&b, "cannot start redis-server");
    if (!(c = rb_connect(port)))
        return sb_fail(&b, "redis-server does not answer");
    printf("%s: adding 2 x %d entries\n", NAME, N);
    fflush(stdout);
    if (!rb_fill(c, "base", N) || !rb_fill(c, "src", N))
        return sb_fail(&b, "cannot fill the streams");
    base = baseline(c, "base");
    if (base <= 0)
        return sb_fail(&b, "the hiredis consumer failed");
    printf("%s: hiredis XREADGROUP COUNT %d + XACK: %.0f messages/s\n", NAME, BATCH, base);
    fflush(stdout);
    mine = rb_through_sluice(&b, c, port, "src", N, BATCH, CONC);
    if (mine <= 0)
        return sb_fail(&b, "sluice did not drain the stream: see sluice.log");
    printf("%s: sluice (batch %d, %d lanes, no-op C handler): %.0f messages/s\n", NAME, BATCH,
           CONC, mine);
    redisFree(c);
    sb_reap(&b.aux, SIGTERM);
    sb_report(&b, mine, "messages/s", "hiredis-xreadgroup-xack", base);
    return 0;
}
