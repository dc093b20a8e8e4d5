/* The asynchronous queue on a Redis stream (server.async_queue: redis://…):
 * events run and reach their destinations, retries keep their attempts in
 * Redis, an idle entry of a dead instance is taken over with its state,
 * puts fail fast while Redis is down or frozen and work again once it is
 * back, a SIGKILLed sluice resumes what it held, and two sluice processes
 * share one queue (one of them SIGKILLed in the middle).
 *
 * Real Redis: SLUICE_TEST_REDIS from eval "$(tests/services env)"; tests
 * that stop Redis start a redis-server of their own. Every test uses its
 * own stream key. Real handlers in real sandboxes; destinations are file
 * sinks. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "sluice/api.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/dispatch.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/pool.h"

extern char **environ;

static char root[1024], dir[256], key[160], url[200];
static char rhost[128];
static int rport;
static struct event_base *base;
static struct sl_config *conf;
static struct sl_pool *pool;
static struct sl_metrics *metrics;
static struct sl_functions *fns;
static struct sl_dispatcher *disp;
static pid_t own_redis = -1;           /* a redis-server of this test's, if any */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rm_dir(void)
{
    char cmd[400];

    if (strncmp(dir, "/tmp/sluice-test-aredis-", 24) == 0) {
        th_scan_logs(dir);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

/* Blocking client for checks; waits up to 10 s for the server. */
static redisContext *client(int port, const char *password, int db)
{
    double deadline = now_ms() + 10000;
    redisContext *rc;

    for (;;) {
        struct timeval tv = { 5, 0 };

        rc = redisConnectWithTimeout(rhost, port, tv);
        if (rc && !rc->err)
            break;
        if (rc)
            redisFree(rc);
        cr_assert_lt(now_ms(), deadline, "cannot connect to redis at %s:%d", rhost, port);
        usleep(50000);
    }
    if (password) {
        redisReply *r = redisCommand(rc, "AUTH %s", password);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "AUTH failed");
        freeReplyObject(r);
    }
    if (db >= 0) {
        redisReply *r = redisCommand(rc, "SELECT %d", db);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "SELECT failed");
        freeReplyObject(r);
    }
    return rc;
}

static long long rint_cmd(redisContext *rc, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(rc, fmt, arg);
    long long v;

    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s %s: %s", fmt, arg,
              r && r->str ? r->str : rc->errstr);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

/* Entries pending in group sluice (XPENDING summary). */
static long long pending_count(redisContext *rc, const char *k)
{
    redisReply *r = redisCommand(rc, "XPENDING %s sluice", k);
    long long v;

    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1, "XPENDING %s", k);
    v = r->element[0]->integer;
    freeReplyObject(r);
    return v;
}

static size_t state_keys(redisContext *rc, const char *k)
{
    redisReply *r = redisCommand(rc, "KEYS %s:state:*", k);
    size_t n;

    cr_assert(r && r->type == REDIS_REPLY_ARRAY);
    n = r->elements;
    freeReplyObject(r);
    return n;
}

static void drop_keys(redisContext *rc, const char *k)
{
    redisReply *r = redisCommand(rc, "KEYS %s*", k);

    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        freeReplyObject(redisCommand(rc, "DEL %s", r->element[i]->str));
    if (r)
        freeReplyObject(r);
}

static void setup(void)
{
    char rt[1100];
    static int seq;

    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport),
              "SLUICE_TEST_REDIS is not set or not redis://[PASSWORD@]HOST:PORT: run "
              "tests/services start and eval \"$(tests/services env)\"");
    th_redis_url(url, sizeof(url), rhost, rport);
    snprintf(key, sizeof(key), "sluice:test:asyncq:%d:%lld:%d", (int)getpid(), wall_ms(), ++seq);

    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(rt, sizeof(rt), "%s/runtime", root);
    setenv("SLUICE_RUNTIME_DIR", rt, 1);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-aredis-%d", (int)getpid());
    rm_dir();
    cr_assert_eq(mkdir(dir, 0755), 0);
    sl_log_set_level(getenv("SLUICE_TEST_LOG") ? SL_LOG_DEBUG : SL_LOG_ERROR);
    base = event_base_new();
}

static void stop_dispatcher(void)
{
    sl_functions_free(fns); /* in-flight invocations end (and report) first */
    fns = NULL;
    sl_pool_free(pool); /* queued queue and sink work finishes while its owners live */
    pool = NULL;
    sl_dispatcher_free(disp);
    disp = NULL;
    sl_metrics_free(metrics);
    metrics = NULL;
    sl_config_free(conf);
    conf = NULL;
}

static void teardown(void)
{
    redisContext *rc;

    stop_dispatcher();
    if (base)
        event_base_free(base);
    base = NULL;
    if (own_redis > 0) {
        kill(own_redis, SIGCONT);
        kill(own_redis, SIGKILL);
        waitpid(own_redis, NULL, 0);
        own_redis = -1;
    }
    rc = redisConnect(rhost, rport);
    if (rc && !rc->err && th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    if (rc && !rc->err)
        drop_keys(rc, key);
    if (rc)
        redisFree(rc);
    rm_dir();
}

/* Copy `in` to `out` with @DIR@, @ROOT@, @BUILD@ ($BUILD under the
 * repository), @URL@ and @KEY@ replaced. */
static void expand(const char *in, char *out, size_t n)
{
    char build[1200];
    size_t o = 0;

    th_build_path(build, sizeof(build), root, "");
    build[strlen(build) - 1] = '\0'; /* the trailing slash */

    while (*in && o + 1 < n) {
        const char *rep = NULL;
        if (strncmp(in, "@DIR@", 5) == 0)
            rep = dir, in += 5;
        else if (strncmp(in, "@ROOT@", 6) == 0)
            rep = root, in += 6;
        else if (strncmp(in, "@BUILD@", 7) == 0)
            rep = build, in += 7;
        else if (strncmp(in, "@URL@", 5) == 0)
            rep = url, in += 5;
        else if (strncmp(in, "@KEY@", 5) == 0)
            rep = key, in += 5;
        if (rep) {
            while (*rep && o + 1 < n)
                out[o++] = *rep++;
        } else {
            out[o++] = *in++;
        }
    }
    out[o] = '\0';
}

static int load(const char *tmpl, struct sl_config **out, char **diag)
{
    char yaml[8192];
    struct sl_diags d;
    size_t dl = 0;
    int rc;

    expand(tmpl, yaml, sizeof(yaml));
    sl_diags_init(&d, "async.yaml");
    rc = sl_config_load_buffer("async.yaml", dir, yaml, strlen(yaml), &sl_registry, out, &d);
    *diag = NULL;
    if (rc != 0) {
        FILE *m = open_memstream(diag, &dl);
        sl_diags_print(&d, m);
        fclose(m);
    }
    sl_diags_destroy(&d);
    return rc;
}

/* Load `tmpl` and start the dispatcher in this process. */
static void start(const char *tmpl)
{
    struct sl_err err;
    char *diag;
    int rc = load(tmpl, &conf, &diag);

    cr_assert_eq(rc, 0, "%s", diag);
    cr_assert_eq(sl_pool_new(base, 2, &pool, &err), 0);
    metrics = sl_metrics_new();
    cr_assert_eq(sl_functions_new(base, conf, NULL, &fns, &err), 0, "%s", err.msg);
    cr_assert_eq(sl_dispatcher_new(base, conf, fns, metrics, pool, &disp, &err), 0, "%s",
                 err.msg);
}

static size_t read_records(const char *name, json_t **out, size_t max)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return th_read_jsonl(path, out, max);
}

static size_t count_records(const char *name)
{
    static json_t *recs[4096];
    size_t n = read_records(name, recs, 4096);

    for (size_t i = 0; i < n; i++)
        json_decref(recs[i]);
    return n;
}

static const char *request_id(json_t *rec)
{
    return json_string_value(json_object_get(json_object_get(rec, "requestContext"),
                                             "requestId"));
}

static void pump_until_records(const char *name, size_t want, int timeout_ms)
{
    double end = now_ms() + timeout_ms;

    while (count_records(name) < want && now_ms() < end)
        th_pump(base, 20);
}

struct accepted {
    int  done, rc;
    char id[40];
};

static void on_accept(void *arg, int rc, const char *id)
{
    struct accepted *a = arg;

    a->done = 1;
    a->rc = rc;
    snprintf(a->id, sizeof(a->id), "%s", id ? id : "");
}

/* Put one event; wait up to `ms` for its outcome (0 or a code). */
static int try_enqueue(const char *fn, const char *payload, struct accepted *a, int ms)
{
    double end = now_ms() + ms;

    memset(a, 0, sizeof(*a));
    cr_assert_eq(sl_dispatcher_enqueue(disp, fn, payload, strlen(payload), on_accept, a), 0);
    while (!a->done && now_ms() < end)
        th_pump(base, 5);
    cr_assert(a->done, "the put neither succeeded nor failed within %d ms", ms);
    return a->rc;
}

static void enqueue(const char *fn, const char *payload, struct accepted *a)
{
    cr_assert_eq(try_enqueue(fn, payload, a, 5000), 0);
}

static char *metrics_text(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;

    sl_prom_render(metrics, b);
    n = evbuffer_get_length(b);
    s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

#define SINKS "sinks:\n  dlq: { type: file, path: @DIR@/dlq.jsonl }\n" \
              "  ok: { type: file, path: @DIR@/ok.jsonl }\n"
#define QUEUE "async_queue: '@URL@', async_queue_key: '@KEY@'"

/* ------------------------------------------------------------------ */
/* One dispatcher in this process                                      */

Test(async_redis, events_run_and_leave_the_stream, .init = setup, .fini = teardown,
     .timeout = 60)
{
    enum { N = 20 };
    struct accepted a[N];
    static json_t *recs[64];
    char payload[64], path[512], id[32] = "", host[256] = "", want[300];
    redisContext *rc;
    redisReply *r;
    size_t n;
    FILE *f;

    start("server: { data_dir: @DIR@, " QUEUE " }\n"
          "functions:\n  echo:\n    handler: @BUILD@/handlers/echo\n"
          "    async: { on_success: ok, on_failure: dlq }\n" SINKS);
    for (int i = 0; i < N; i++) {
        snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
        enqueue("echo", payload, &a[i]);
    }
    pump_until_records("ok.jsonl", N, 20000);
    th_pump(base, 300); /* nothing more may arrive */
    n = read_records("ok.jsonl", recs, 64);
    cr_assert_eq(n, N, "%zu destination records for %d events", n, N);
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (size_t k = 0; k < n; k++)
            if (strcmp(request_id(recs[k]), a[i].id) == 0) {
                seen++;
                cr_expect_eq(json_integer_value(json_object_get(json_object_get(recs[k],
                             "requestPayload"), "n")), i);
                cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[k],
                                 "requestContext"), "condition")), "Success");
            }
        cr_expect_eq(seen, 1, "event %d (%s) has %d records", i, a[i].id, seen);
    }
    for (size_t k = 0; k < n; k++)
        json_decref(recs[k]);
    cr_expect_eq(count_records("dlq.jsonl"), 0);

    /* acknowledged and deleted: nothing left in Redis */
    rc = client(rport, th_redis_password(), -1);
    cr_expect_eq(rint_cmd(rc, "XLEN %s", key), 0, "entries left in the stream");
    cr_expect_eq(pending_count(rc, key), 0, "entries left pending");
    cr_expect_eq(state_keys(rc, key), 0, "state hashes left");

    /* the consumer is <hostname>-<id kept in data_dir> */
    snprintf(path, sizeof(path), "%s/async-consumer", dir);
    f = fopen(path, "r");
    cr_assert(f, "no %s", path);
    cr_assert(fgets(id, sizeof(id), f));
    fclose(f);
    id[strcspn(id, "\n")] = '\0';
    cr_expect_eq(strlen(id), 12, "consumer id '%s'", id);
    gethostname(host, sizeof(host));
    snprintf(want, sizeof(want), "%s-%s", host, id);
    r = redisCommand(rc, "XINFO CONSUMERS %s sluice", key);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1, "want one consumer");
    cr_expect_str_eq(r->element[0]->element[1]->str, want);
    freeReplyObject(r);
    redisFree(rc);
}

Test(async_redis, failing_event_is_retried_then_dead_lettered_once, .init = setup,
     .fini = teardown, .timeout = 60)
{
    struct accepted a;
    json_t *recs[8], *ctx;
    redisContext *rc;
    redisReply *r;
    char *m, hkey[300];
    size_t n;

    start("server: { data_dir: @DIR@, " QUEUE " }\n"
          "functions:\n  fail:\n    handler: @BUILD@/handlers/fail\n"
          "    async: { maximum_retry_attempts: 2, backoff_initial_ms: 1000, backoff_max_ms: 2000,"
          " on_failure: dlq }\n" SINKS);
    enqueue("fail", "{\"order\":7}", &a);

    /* between attempts, the state is in Redis for whoever holds the entry next */
    rc = client(rport, th_redis_password(), -1);
    snprintf(hkey, sizeof(hkey), "%s:state:%s", key, a.id);
    {
        double end = now_ms() + 10000;
        bool seen = false;

        while (!seen && now_ms() < end && count_records("dlq.jsonl") == 0) {
            th_pump(base, 5);
            r = redisCommand(rc, "HGET %s attempts", hkey);
            seen = r && r->type == REDIS_REPLY_STRING && atoi(r->str) >= 1;
            freeReplyObject(r);
        }
        cr_expect(seen, "no attempts recorded in %s", hkey);
    }
    pump_until_records("dlq.jsonl", 1, 20000);
    th_pump(base, 500);
    n = read_records("dlq.jsonl", recs, 8);
    cr_assert_eq(n, 1, "%zu destination records", n);
    ctx = json_object_get(recs[0], "requestContext");
    cr_expect_str_eq(json_string_value(json_object_get(ctx, "condition")), "RetriesExhausted");
    cr_expect_eq(json_integer_value(json_object_get(ctx, "approximateInvokeCount")), 3);
    cr_expect_str_eq(json_string_value(json_object_get(ctx, "requestId")), a.id);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(recs[0], "requestPayload"),
                                                    "order")), 7);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[0],
                     "responsePayload"), "errorType")), "OrderError");
    json_decref(recs[0]);
    m = metrics_text();
    cr_expect(strstr(m, "sluice_invocations_total{function=\"fail\"} 3\n") != NULL, "%s", m);
    cr_expect(strstr(m, "sluice_dlq_writes_total{function=\"fail\"} 1\n") != NULL, "%s", m);
    free(m);
    cr_expect_eq(rint_cmd(rc, "XLEN %s", key), 0);
    cr_expect_eq(rint_cmd(rc, "EXISTS %s", hkey), 0, "state hash left after the delete");
    redisFree(rc);
}

/* An entry a dead instance held, with two attempts recorded: this one takes
 * it over after async_queue_reclaim_s and tries it once more only. */
Test(async_redis, idle_entry_of_a_dead_instance_is_taken_over_with_its_attempts,
     .init = setup, .fini = teardown, .timeout = 60)
{
    const char *id = "11111111-2222-4333-8444-555555555555";
    redisContext *rc = client(rport, th_redis_password(), -1);
    char enq[32], hkey[300], *m;
    json_t *recs[8], *ctx;
    redisReply *r;
    double t0;

    snprintf(enq, sizeof(enq), "%lld", wall_ms());
    snprintf(hkey, sizeof(hkey), "%s:state:%s", key, id);
    freeReplyObject(redisCommand(rc, "XGROUP CREATE %s sluice 0 MKSTREAM", key));
    r = redisCommand(rc, "XADD %s * id %s fn fail payload {\"order\":9} enqueued_ms %s", key, id,
                     enq);
    cr_assert(r && r->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    r = redisCommand(rc, "XREADGROUP GROUP sluice dead-host-1 COUNT 10 STREAMS %s >", key);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "the dead instance's read");
    freeReplyObject(r);
    freeReplyObject(redisCommand(rc, "HSET %s attempts 2 next_ms %s last_error %s", hkey, enq,
                                 "OrderError: earlier"));

    t0 = now_ms();
    start("server: { data_dir: @DIR@, " QUEUE ", async_queue_reclaim_s: 1 }\n"
          "functions:\n  fail:\n    handler: @BUILD@/handlers/fail\n"
          "    async: { maximum_retry_attempts: 2, backoff_initial_ms: 10, backoff_max_ms: 40,"
          " on_failure: dlq }\n" SINKS);
    pump_until_records("dlq.jsonl", 1, 20000);
    cr_expect_geq(now_ms() - t0, 900, "taken over before it was idle for 1 s");
    th_pump(base, 300);
    cr_assert_eq(read_records("dlq.jsonl", recs, 8), 1);
    ctx = json_object_get(recs[0], "requestContext");
    cr_expect_str_eq(json_string_value(json_object_get(ctx, "requestId")), id);
    cr_expect_str_eq(json_string_value(json_object_get(ctx, "condition")), "RetriesExhausted");
    cr_expect_eq(json_integer_value(json_object_get(ctx, "approximateInvokeCount")), 3,
                 "the attempts recorded in Redis were not carried over");
    json_decref(recs[0]);
    m = metrics_text();
    cr_expect(strstr(m, "sluice_invocations_total{function=\"fail\"} 1\n") != NULL,
              "want exactly one more attempt here:\n%s", m);
    free(m);
    cr_expect_eq(rint_cmd(rc, "XLEN %s", key), 0);
    cr_expect_eq(pending_count(rc, key), 0);
    redisFree(rc);
}

/* ------------------------------------------------------------------ */
/* Outages: a redis-server of our own, with a password and a database  */

static void start_own_redis(int port, const char *data)
{
    char portstr[16];
    char *argv[] = { "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes", "--appendfsync", "always", "--dir", (char *)data,
                     "--requirepass", "pa@ss:w0rd", "--daemonize", "no", NULL };
    posix_spawn_file_actions_t fa;

    snprintf(portstr, sizeof(portstr), "%d", port);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    cr_assert_eq(posix_spawnp(&own_redis, "redis-server", &fa, NULL, argv, environ), 0,
                 "cannot start redis-server");
    posix_spawn_file_actions_destroy(&fa);
}

static bool phase_ran(int phase)
{
    json_t *recs[64];
    size_t n = read_records("ok.jsonl", recs, 64);
    bool found = false;

    for (size_t i = 0; i < n; i++) {
        found |= json_integer_value(json_object_get(json_object_get(recs[i], "requestPayload"),
                                                    "phase")) == phase;
        json_decref(recs[i]);
    }
    return found;
}

Test(async_redis, puts_fail_fast_while_redis_is_down_or_frozen_and_work_once_it_is_back,
     .init = setup, .fini = teardown, .timeout = 120)
{
    int port = th_free_port();
    char data[300];
    struct accepted a;
    redisContext *rc;
    double t;
    int rc_put = -1;

    snprintf(data, sizeof(data), "%s/redis", dir);
    mkdir(data, 0755);
    start_own_redis(port, data);
    rc = client(port, "pa@ss:w0rd", 3); /* waits until it is up */
    /* '@' in the password: the last '@' ends the userinfo */
    snprintf(url, sizeof(url), "redis://:pa@ss:w0rd@127.0.0.1:%d/3", port);
    start("server: { data_dir: @DIR@, " QUEUE " }\n"
          "functions:\n  echo:\n    handler: @BUILD@/handlers/echo\n"
          "    async: { on_success: ok }\n" SINKS);
    enqueue("echo", "{\"phase\":1}", &a);
    pump_until_records("ok.jsonl", 1, 10000);
    cr_assert(phase_ran(1), "no record with AUTH and SELECT");
    cr_expect_eq(rint_cmd(rc, "EXISTS %s", key), 1, "the stream is not in database 3");
    t = now_ms();
    while (rint_cmd(rc, "XLEN %s", key) > 0 && now_ms() - t < 5000)
        th_pump(base, 10); /* the delete lands before the freeze */
    cr_expect_eq(rint_cmd(rc, "XLEN %s", key), 0, "the event ran but stays in the stream");
    redisFree(rc);

    /* frozen: the put must fail within the command timeout, not hang */
    kill(own_redis, SIGSTOP);
    t = now_ms();
    rc_put = try_enqueue("echo", "{\"phase\":2}", &a, 9000);
    cr_expect_neq(rc_put, 0, "a put succeeded while redis was frozen");
    cr_expect_lt(now_ms() - t, 8000, "the put took %.0f ms to fail", now_ms() - t);
    kill(own_redis, SIGCONT);

    /* gone: puts fail at once (after the frozen put, which may have
     * reached Redis after all, ran and left) */
    th_pump(base, 1500);
    kill(own_redis, SIGKILL);
    waitpid(own_redis, NULL, 0);
    own_redis = -1;
    th_pump(base, 200);
    t = now_ms();
    rc_put = try_enqueue("echo", "{\"phase\":3}", &a, 5000);
    cr_expect_eq(rc_put, SL_ECONN, "want SL_ECONN while redis is down, got %d", rc_put);
    cr_expect_lt(now_ms() - t, 1000, "a put took %.0f ms to fail while redis was down",
                 now_ms() - t);

    /* back (same data, appendonly): the queue reconnects with backoff */
    start_own_redis(port, data);
    redisFree(client(port, "pa@ss:w0rd", 3));
    t = now_ms();
    do {
        rc_put = try_enqueue("echo", "{\"phase\":4}", &a, 8000);
        if (rc_put != 0)
            th_pump(base, 200);
    } while (rc_put != 0 && now_ms() - t < 15000);
    cr_assert_eq(rc_put, 0, "puts still fail 15 s after redis came back");
    {
        double stop = now_ms() + 15000;
        bool back = false;

        while (!back && now_ms() < stop) {
            th_pump(base, 50);
            back = phase_ran(4);
        }
        cr_expect(back, "the event put after the outage did not run (the reader did not come "
                  "back)");
    }
    cr_expect(phase_ran(1));
    cr_expect(!phase_ran(3), "an event whose put failed ran");
    /* phase 2 may have run: a put that timed out can still have reached
     * Redis (a 500 promises nothing either way) */
}

Test(async_redis, bad_queue_values_are_refused_at_load, .init = setup, .fini = teardown)
{
    static const char *const bad[] = {
        "postgres://x", "redis", "rediss://h:1", "redis://h:notaport", "redis://h:1/x",
        "redis://:s3cret@:1",
    };
    struct sl_config *c = NULL;
    char tmpl[512], *diag;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tmpl, sizeof(tmpl), "server: { async_queue: '%s' }\n", bad[i]);
        cr_expect_neq(load(tmpl, &c, &diag), 0, "'%s' was accepted", bad[i]);
        cr_expect(diag && strstr(diag, "\"sqlite\"") && strstr(diag, "redis://"),
                  "'%s': the message should name both forms: %s", bad[i], diag);
        cr_expect(diag && !strstr(diag, "s3cret"), "the message shows the password: %s", diag);
        free(diag);
    }
    cr_expect_eq(load("server: { async_queue: 'redis://:pw@localhost:6380/2' }\n", &c, &diag),
                 0, "%s", diag);
    sl_config_free(c);
    cr_expect_eq(load("server: { async_queue: sqlite }\n", &c, &diag), 0, "%s", diag);
    sl_config_free(c);
}

/* ------------------------------------------------------------------ */
/* sluice processes                                                    */

static void wait_healthy(int port)
{
    double end = now_ms() + 20000;

    while (!th_healthy(port) && now_ms() < end)
        usleep(50000);
    cr_assert(th_healthy(port), "sluice on port %d did not come up", port);
}

/* Write a sluice config named `name` (in the test dir) from `tmpl`. */
static void write_config(const char *name, const char *tmpl, char *path, size_t n)
{
    char yaml[4096];
    FILE *f;

    expand(tmpl, yaml, sizeof(yaml));
    snprintf(path, n, "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert(f);
    fputs(yaml, f);
    fclose(f);
}

/* POST `count` asynchronous invokes of `fn` to `port` through one curl
 * (keep-alive); fills ids[] with the request ids of the 202s. */
static int submit(int port, const char *fn, int count, int sleep_ms, int from,
                  char (*ids)[40])
{
    char curlcfg[600], ids_path[600], cmd[1400], line[128];
    int nids = 0;
    FILE *f;

    snprintf(curlcfg, sizeof(curlcfg), "%s/curl-%d.cfg", dir, from);
    f = fopen(curlcfg, "w");
    for (int i = 0; i < count; i++)
        fprintf(f, "url = \"http://127.0.0.1:%d/2015-03-31/functions/%s/invocations\"\n"
                   "header = \"X-Amz-Invocation-Type: Event\"\n"
                   "data = \"{\\\"sleep_ms\\\":%d,\\\"n\\\":%d}\"\n"
                   "output = \"/dev/null\"\n"
                   "write-out = \"%%{http_code} %%header{x-amzn-requestid}\\n\"\n%s",
                port, fn, sleep_ms, from + i, i + 1 < count ? "next\n" : "");
    fclose(f);
    snprintf(ids_path, sizeof(ids_path), "%s/ids-%d.txt", dir, from);
    snprintf(cmd, sizeof(cmd), "curl -s -K '%s' > '%s'", curlcfg, ids_path);
    cr_assert_eq(system(cmd), 0);
    f = fopen(ids_path, "r");
    while (fgets(line, sizeof(line), f)) {
        int code;
        char id[40];
        if (sscanf(line, "%d %39s", &code, id) == 2 && code == 202 && nids < count)
            memcpy(ids[nids++], id, sizeof(id));
    }
    fclose(f);
    return nids;
}

/* How many of ids[0..n) have no record in any of the files; *dups gets the
 * records beyond one per id. */
static int missing_in(char (*ids)[40], int n, const char *const *files, int nfiles, int *dups)
{
    static json_t *recs[8192];
    static char seen[8192][40];
    size_t nseen = 0;
    int missing = 0;

    for (int fi = 0; fi < nfiles; fi++) {
        size_t nrec = read_records(files[fi], recs, 8192 - nseen);
        for (size_t k = 0; k < nrec; k++) {
            const char *rid = recs[k] ? request_id(recs[k]) : NULL;
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", rid ? rid : "");
            json_decref(recs[k]);
        }
    }
    *dups = 0;
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (size_t k = 0; k < nseen; k++)
            found += strcmp(seen[k], ids[i]) == 0;
        missing += found == 0;
        *dups += found > 1 ? found - 1 : 0;
    }
    return missing;
}

static bool log_has(const char *log, const char *what)
{
    char cmd[900];

    snprintf(cmd, sizeof(cmd), "grep -q '%s' '%s'", what, log);
    return system(cmd) == 0;
}

Test(async_redis, accepted_events_survive_sigkill, .init = setup, .fini = teardown,
     .timeout = 180)
{
    enum { N = 1000 };
    static char ids[N][40];
    static const char *const files[] = { "ok.jsonl" };
    char cfg[600], log[600];
    int port = th_free_port(), nids, missing = 0, dups = 0;
    size_t nrec;
    double end, t;
    pid_t pid;
    char tmpl[2048];

    /* the default async_queue_reclaim_s (60): a resume within it is the
     * restarted instance reading its own pending entries */
    snprintf(tmpl, sizeof(tmpl),
             "server: { listen: '127.0.0.1:%d', data_dir: @DIR@/data, " QUEUE " }\n"
             "functions:\n  slow:\n    handler: @BUILD@/handlers/slow\n"
             "    reserved_concurrency: 4\n    timeout_s: 10\n"
             "    async: { backoff_initial_ms: 10, backoff_max_ms: 200, on_success: ok }\n"
             "sinks:\n  ok: { type: file, path: @DIR@/ok.jsonl, fsync: false }\n"
             "log: { level: info }\n", port);
    write_config("run.yaml", tmpl, cfg, sizeof(cfg));
    snprintf(log, sizeof(log), "%s/sluice.log", dir);

    pid = th_run_sluice(root, cfg, log);
    wait_healthy(port);
    nids = submit(port, "slow", N, 20, 0, ids);
    cr_assert_eq(nids, N, "only %d of %d events were accepted", nids, N);

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    nrec = count_records("ok.jsonl");
    cr_log_info("%zu of %d events done before SIGKILL", nrec, N);
    cr_expect_lt(nrec, (size_t)N, "everything ran before the kill: the test proves nothing");
    pid = th_run_sluice(root, cfg, log);
    t = now_ms();

    end = now_ms() + 45000;
    for (;;) {
        missing = missing_in(ids, N, files, 1, &dups);
        if (missing == 0 || now_ms() > end)
            break;
        usleep(500000);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cr_assert_eq(missing, 0, "%d accepted events never ran (see %s)", missing, log);
    cr_expect_lt(now_ms() - t, 45000, "resumed only by the 60 s reclaim, not on restart");
    cr_expect(log_has(log, "resuming [0-9]* asynchronous events this instance held before"),
              "the restart did not resume its own pending entries (see %s)", log);
    cr_log_info("%d events ran twice (in flight at the kill)", dups);
    cr_expect_leq(dups, 20, "%d duplicates: more than the events in flight at the kill", dups);
}

Test(async_redis, two_instances_share_a_queue_and_one_takes_over_from_a_dead_one,
     .init = setup, .fini = teardown, .timeout = 240)
{
    enum { N1 = 100, N2 = 200 };
    static char ids1[N1][40], ids2[N2][40];
    static const char *const both[] = { "ok-a.jsonl", "ok-b.jsonl" };
    char cfg_a[600], cfg_b[600], log_a[600], log_b[600], tmpl[2048];
    int port_a = th_free_port(), port_b = th_free_port(), missing, dups;
    size_t before_kill;
    redisContext *rc;
    pid_t a, b;
    double end;

    while (port_b == port_a)
        port_b = th_free_port();
    for (int i = 0; i < 2; i++) {
        snprintf(tmpl, sizeof(tmpl),
                 "server: { listen: '127.0.0.1:%d', data_dir: @DIR@/data-%c, " QUEUE ", "
                 "async_queue_reclaim_s: 2 }\n"
                 "functions:\n  slow:\n    handler: @BUILD@/handlers/slow\n"
                 "    reserved_concurrency: 2\n    timeout_s: 10\n"
                 "    async: { backoff_initial_ms: 10, backoff_max_ms: 200, on_success: ok }\n"
                 "sinks:\n  ok: { type: file, path: @DIR@/ok-%c.jsonl, fsync: false }\n"
                 "log: { level: info }\n", i ? port_b : port_a, i ? 'b' : 'a', i ? 'b' : 'a');
        write_config(i ? "b.yaml" : "a.yaml", tmpl, i ? cfg_b : cfg_a, sizeof(cfg_a));
    }
    snprintf(log_a, sizeof(log_a), "%s/sluice-a.log", dir);
    snprintf(log_b, sizeof(log_b), "%s/sluice-b.log", dir);
    a = th_run_sluice(root, cfg_a, log_a);
    b = th_run_sluice(root, cfg_b, log_b);
    wait_healthy(port_a);
    wait_healthy(port_b);

    /* both alive: events put through A run once, some of them on B */
    cr_assert_eq(submit(port_a, "slow", N1, 50, 0, ids1), N1);
    end = now_ms() + 60000;
    while ((missing = missing_in(ids1, N1, both, 2, &dups)) > 0 && now_ms() < end)
        usleep(300000);
    cr_assert_eq(missing, 0, "%d of %d events never ran (see %s, %s)", missing, N1, log_a,
                 log_b);
    usleep(500000);
    missing_in(ids1, N1, both, 2, &dups);
    cr_expect_eq(dups, 0, "%d events ran twice while both instances were alive", dups);
    cr_expect_gt(count_records("ok-b.jsonl"), 0, "B ran none of the events put through A");
    cr_expect_gt(count_records("ok-a.jsonl"), 0, "A ran none of its own events");
    cr_log_info("shared: A ran %zu, B ran %zu", count_records("ok-a.jsonl"),
                count_records("ok-b.jsonl"));

    /* A dies right after its 202s: B runs everything, A's share too */
    cr_assert_eq(submit(port_a, "slow", N2, 100, 1000, ids2), N2);
    kill(a, SIGKILL);
    waitpid(a, NULL, 0);
    before_kill = (size_t)(N2 - missing_in(ids2, N2, both, 2, &dups));
    cr_expect_lt(before_kill, (size_t)N2 / 2, "%zu of %d done before the kill: the test proves "
                 "little", before_kill, N2);
    end = now_ms() + 90000;
    while ((missing = missing_in(ids2, N2, both, 2, &dups)) > 0 && now_ms() < end)
        usleep(500000);
    kill(b, SIGTERM);
    waitpid(b, NULL, 0);
    cr_expect_eq(missing, 0, "%d of %d events accepted by the killed instance never ran "
                 "(see %s)", missing, N2, log_b);
    cr_expect(log_has(log_b, "took over [0-9]* asynchronous events"),
              "B never took over A's entries (see %s)", log_b);
    cr_log_info("%zu of the second batch done before the kill; %d ran twice", before_kill,
                dups);

    rc = client(rport, th_redis_password(), -1);
    cr_expect_eq(rint_cmd(rc, "XLEN %s", key), 0, "entries left in the stream");
    cr_expect_eq(pending_count(rc, key), 0, "entries left pending");
    redisFree(rc);
}
