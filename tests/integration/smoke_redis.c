/* Smoke test: the Redis started by tests/services answers real commands.
 * Reads SLUICE_TEST_REDIS (redis://[PASSWORD@]HOST:PORT) and
 * SLUICE_TEST_REDIS_PASSWORD, set by eval "$(tests/services env)".
 * Standalone: no project code, only the tests' harness.h. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static redisContext *ctx;
static char key[96];
static char list[128];

/* Parse redis://HOST:PORT[/DB]; a missing variable fails the test, since a
 * skipped smoke test would hide a broken harness. */
static void parse_url(char *host, size_t hostsz, int *port)
{
    cr_assert(th_redis_env(host, hostsz, port),
              "SLUICE_TEST_REDIS is not set or not redis://[PASSWORD@]HOST:PORT: run "
              "tests/services start and eval \"$(tests/services env)\"");
}

/* Called first in each test (not as .init) so a missing variable is an
 * ordinary assertion failure rather than a setup crash. */
static void setup(void)
{
    char host[256];
    int port;
    struct timespec ts;

    parse_url(host, sizeof host, &port);
    struct timeval tv = { .tv_sec = 10, .tv_usec = 0 };
    ctx = redisConnectWithTimeout(host, port, tv);
    cr_assert(ctx != NULL, "redisConnect: out of memory");
    cr_assert(ctx->err == 0, "connect to %s:%d: %s", host, port, ctx->errstr);
    cr_assert(redisSetTimeout(ctx, tv) == REDIS_OK, "redisSetTimeout: %s", ctx->errstr);
    if (th_redis_password()) {
        redisReply *r = redisCommand(ctx, "AUTH %s", th_redis_password());

        cr_assert(r && r->type != REDIS_REPLY_ERROR, "AUTH with $SLUICE_TEST_REDIS_PASSWORD failed");
        freeReplyObject(r);
    }

    /* Unique per run, so reused servers and parallel runs do not clash. */
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(key, sizeof key, "sluice:smoke:%ld:%lld.%09ld", (long)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec);
    snprintf(list, sizeof list, "%s:list", key);
}

static void teardown(void)
{
    if (ctx == NULL)
        return;
    redisReply *r = redisCommand(ctx, "DEL %s %s", key, list);
    if (r != NULL)
        freeReplyObject(r);
    redisFree(ctx);
    ctx = NULL;
}

/* Run a command and insist on a reply (NULL means the connection broke). */
static redisReply *cmd(const char *what, redisReply *r)
{
    cr_assert(r != NULL, "%s: %s", what, ctx->errstr);
    cr_assert(r->type != REDIS_REPLY_ERROR, "%s: server error: %s", what, r->str);
    return r;
}

TestSuite(smoke_redis, .fini = teardown, .timeout = 60);

Test(smoke_redis, set_get_round_trip)
{
    char value[128];

    setup();
    snprintf(value, sizeof value, "value-for-%s", key);

    redisReply *r = cmd("PING", redisCommand(ctx, "PING"));
    cr_assert_eq(r->type, REDIS_REPLY_STATUS);
    cr_assert_str_eq(r->str, "PONG");
    freeReplyObject(r);

    r = cmd("SET", redisCommand(ctx, "SET %s %s", key, value));
    cr_assert_eq(r->type, REDIS_REPLY_STATUS);
    cr_assert_str_eq(r->str, "OK");
    freeReplyObject(r);

    r = cmd("GET", redisCommand(ctx, "GET %s", key));
    cr_assert_eq(r->type, REDIS_REPLY_STRING, "GET %s: reply type %d", key, r->type);
    cr_assert_eq(r->len, strlen(value));
    cr_assert_str_eq(r->str, value);
    freeReplyObject(r);

    /* Binary-safe values survive too (queue payloads are arbitrary bytes). */
    static const char bin[] = { 'a', '\0', 'b', '\r', '\n', (char)0xff };
    r = cmd("SET bin", redisCommand(ctx, "SET %s %b", key, bin, sizeof bin));
    freeReplyObject(r);
    r = cmd("GET bin", redisCommand(ctx, "GET %s", key));
    cr_assert_eq(r->type, REDIS_REPLY_STRING);
    cr_assert_eq(r->len, sizeof bin);
    cr_assert(memcmp(r->str, bin, sizeof bin) == 0, "binary value changed on the way");
    freeReplyObject(r);
}

Test(smoke_redis, lpush_rpop_round_trip)
{
    static const char *const items[] = { "first", "second", "third" };
    const size_t n = sizeof items / sizeof items[0];

    setup();

    for (size_t i = 0; i < n; i++) {
        redisReply *r = cmd("LPUSH", redisCommand(ctx, "LPUSH %s %s", list, items[i]));
        cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
        cr_assert_eq(r->integer, (long long)(i + 1), "LPUSH returned length %lld", r->integer);
        freeReplyObject(r);
    }

    /* LPUSH + RPOP is a FIFO queue: items come back in push order. */
    for (size_t i = 0; i < n; i++) {
        redisReply *r = cmd("RPOP", redisCommand(ctx, "RPOP %s", list));
        cr_assert_eq(r->type, REDIS_REPLY_STRING, "RPOP #%zu: reply type %d", i, r->type);
        cr_assert_str_eq(r->str, items[i]);
        freeReplyObject(r);
    }

    redisReply *r = cmd("RPOP empty", redisCommand(ctx, "RPOP %s", list));
    cr_assert_eq(r->type, REDIS_REPLY_NIL, "list should be empty after %zu pops", n);
    freeReplyObject(r);
}
