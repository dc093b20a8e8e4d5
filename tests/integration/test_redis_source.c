/* The Redis queue source (type: redis), both modes, against real Redis and
 * real `sluice run` processes: every message handled at least once and
 * deleted; SIGKILLed sluice loses nothing; a failing message comes back
 * after the visibility timeout with its receive count rising, then goes to
 * the DLQ with its envelope; a partial batch failure deletes only the
 * successes (and honours a handler's per-message delay); two instances
 * share the work without doing a message twice; Redis killed and
 * restarted (AOF) loses nothing; a dead instance's messages are reclaimed
 * by the other.
 *
 * Redis: SLUICE_TEST_REDIS (eval "$(tests/services env)"); the restart
 * test runs a redis-server of its own. The handler is
 * tests/handlers/redis_rec.c, which appends one line per record it sees to
 * a file: the tests count those lines. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "harness.h"

extern char **environ;

#define NMAX 20000

static char root[1024], dir[256], rhost[128];
static int rport;
static pid_t kids[8];
static size_t nkids;
static pid_t own_redis = -1;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void setup(void)
{
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport),
              "SLUICE_TEST_REDIS is not set: run eval \"$(tests/services env)\"");
    cr_assert(getcwd(root, sizeof(root)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-rsrc-%d-%ld", (int)getpid(), (long)time(NULL));
    cr_assert_eq(mkdir(dir, 0755), 0);
    chmod(dir, 01777); /* the relaxed handler (its function's uid) writes here */
    signal(SIGPIPE, SIG_IGN);
}

static void stop_kid(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

static void teardown(void)
{
    char cmd[600];
    bool sanitizer;

    /* a graceful stop, so a SANITIZE=1 build also checks for leaks */
    for (size_t i = 0; i < nkids; i++)
        kill(kids[i], SIGTERM);
    for (size_t i = 0; i < nkids; i++) {
        double end = now_ms() + 15000;
        while (waitpid(kids[i], NULL, WNOHANG) == 0) {
            if (now_ms() > end) {
                stop_kid(kids[i], SIGKILL);
                break;
            }
            sleep_ms(50);
        }
    }
    nkids = 0;
    /* sluice built with SANITIZE=1 reports into its log: keep those */
    snprintf(cmd, sizeof(cmd), "grep -q -E 'AddressSanitizer|runtime error:' %s/*.log 2>/dev/null",
             dir);
    sanitizer = dir[0] && system(cmd) == 0;
    if (sanitizer) {
        snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s-kept'", dir, dir);
        if (system(cmd) != 0) {
            /* the assertion below still names the directory */
        }
    }
    if (own_redis > 0) {
        stop_kid(own_redis, SIGKILL);
        own_redis = -1;
    }
    if (strncmp(dir, "/tmp/sluice-test-rsrc-", 22) == 0) {
        th_scan_logs(dir);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
    cr_assert(!sanitizer, "sluice reported a sanitizer error: see %s-kept/*.log", dir);
}

TestSuite(redis_source, .init = setup, .fini = teardown, .timeout = 170);

/* ------------------------------------------------------------------ */
/* Redis                                                               */

static redisContext *client(int port)
{
    double deadline = now_ms() + 10000;
    redisContext *rc;

    for (;;) {
        struct timeval tv = { 5, 0 };
        rc = redisConnectWithTimeout(rhost, port, tv);
        if (rc && !rc->err && th_redis_password())
            freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
        if (rc && !rc->err) {
            redisReply *r = redisCommand(rc, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            if (ok)
                return rc;
        }
        if (rc)
            redisFree(rc);
        cr_assert_lt(now_ms(), deadline, "cannot connect to redis at %s:%d", rhost, port);
        sleep_ms(50);
    }
}

static long long rint_(redisContext *rc, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v;

    va_start(ap, fmt);
    r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s: %s", fmt,
              r && r->str ? r->str : rc->errstr);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

/* XPENDING summary count (0 when the group does not exist yet). */
static long long xpending(redisContext *rc, const char *key)
{
    redisReply *r = redisCommand(rc, "XPENDING %s sluice", key);
    long long v = 0;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1)
        v = r->element[0]->integer;
    freeReplyObject(r);
    return v;
}

static size_t nkeys(redisContext *rc, const char *pattern)
{
    redisReply *r = redisCommand(rc, "KEYS %s", pattern);
    size_t n;

    cr_assert(r && r->type == REDIS_REPLY_ARRAY);
    n = r->elements;
    freeReplyObject(r);
    return n;
}

/* Push messages with bodies {"n":i ...} for i in [from, to), pipelined. */
static void produce(redisContext *rc, bool list, const char *key, int from, int to,
                    const char *extra)
{
    for (int i = from; i < to; i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"n\":%d%s%s}", i, extra ? "," : "", extra ? extra : "");
        if (list)
            redisAppendCommand(rc, "LPUSH %s %s", key, body);
        else
            redisAppendCommand(rc, "XADD %s * body %s origin test", key, body);
    }
    for (int i = from; i < to; i++) {
        redisReply *r = NULL;
        cr_assert_eq(redisGetReply(rc, (void **)&r), REDIS_OK);
        cr_assert(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
}

/* Nothing of the queue is left: every message was deleted. */
static bool queue_clean(redisContext *rc, bool list, const char *key, bool deleted)
{
    char pat[300];

    if (list) {
        snprintf(pat, sizeof(pat), "%s:sluice:m:*", key);
        return rint_(rc, "LLEN %s", key) == 0 && nkeys(rc, pat) == 0 &&
               rint_(rc, "ZCARD %s:sluice:leases", key) == 0;
    }
    return xpending(rc, key) == 0 && (!deleted || rint_(rc, "XLEN %s", key) == 0);
}

/* ------------------------------------------------------------------ */
/* sluice and what the handler saw                                     */

struct opts {
    bool        list;
    const char *key;
    int         batch, concurrency, vis_s, max_receive;
    bool        partial, delete_on_ack;
    int         sleep_ms;
    const char *out;           /* handler's file */
    const char *dlq;           /* DLQ stream key, or NULL */
    int         port;          /* redis port; 0: the shared one */
    int         api_port;
    const char *extra;         /* more source keys, YAML lines */
    const char *events;        /* handler's file of whole events, or NULL */
    const char *server_extra;  /* more server keys, ", k: v" */
};

static char *write_config(const struct opts *o, const char *name)
{
    static char path[400];
    char url[400];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.yaml", dir, name);
    f = fopen(path, "w");
    cr_assert(f);
    fprintf(f,
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data-%s%s }\n"
            "functions:\n  rec:\n    handler: %s/%s/test-handlers/redis_rec\n"
            "    sandbox: relaxed\n    timeout_s: 60\n"
            "    environment: { OUT: %s%s%s%s, SLEEP_MS: \"%d\" }\n"
            "sources:\n  q:\n    type: redis\n    function: rec\n"
            "    url: %s\n    key: %s\n    mode: %s\n"
            "    batch_size: %d\n    maximum_concurrency: %d\n    visibility_timeout_s: %d\n"
            "    max_receive_count: %d\n    report_batch_item_failures: %s\n"
            "    delete_on_ack: %s\n%s%s%s",
            o->api_port ? o->api_port : th_free_port(), dir, name,
            o->server_extra ? o->server_extra : "", root, th_build(), o->out,
            o->partial ? ", PARTIAL: \"1\"" : "", o->events ? ", EVENTS: " : "",
            o->events ? o->events : "", o->sleep_ms,
            th_redis_url(url, sizeof(url), rhost, o->port ? o->port : rport),
            o->key, o->list ? "list" : "stream", o->batch ? o->batch : 10,
            o->concurrency ? o->concurrency : 2, o->vis_s ? o->vis_s : 30,
            o->max_receive ? o->max_receive : 5, o->partial ? "true" : "false",
            o->delete_on_ack ? "true" : "false", o->dlq ? "    on_failure: dlq\n" : "",
            o->extra ? o->extra : "", o->dlq ? "sinks:\n  dlq: { type: redis, url: " : "");
    if (o->dlq)
        fprintf(f, "%s, key: %s }\n", th_redis_url(url, sizeof(url), rhost, rport), o->dlq);
    fclose(f);
    return path;
}

static pid_t run(const struct opts *o, const char *name)
{
    char log[400];
    pid_t pid;

    snprintf(log, sizeof(log), "%s/%s.log", dir, name);
    pid = th_run_sluice(root, write_config(o, name), log);
    cr_assert_gt(pid, 0);
    kids[nkids++] = pid;
    return pid;
}

/* Wait until instance `name` logged that its poller reads the queue.
 * Each instance has a data_dir of its own, as two deployed ones would. */
static void wait_reading(const char *name, int timeout_ms)
{
    char path[400], buf[8192];

    snprintf(path, sizeof(path), "%s/%s.log", dir, name);
    for (double end = now_ms() + timeout_ms;;) {
        FILE *f = fopen(path, "r");
        bool found = false;

        while (f && !found && fgets(buf, sizeof(buf), f))
            found = strstr(buf, "reading ") != NULL;
        if (f)
            fclose(f);
        if (found)
            return;
        if (now_ms() > end) {
            char cmd[600];

            snprintf(cmd, sizeof(cmd), "tail -20 '%s' >&2", path);
            if (system(cmd) != 0)
                fprintf(stderr, "%s: no log\n", path);
            cr_assert_fail("instance %s never started reading (%s)", name, path);
        }
        sleep_ms(50);
    }
}

static void forget(pid_t pid)
{
    for (size_t i = 0; i < nkids; i++)
        if (kids[i] == pid)
            kids[i] = kids[--nkids];
}

struct seen {
    int  ok[NMAX];         /* successful handlings per n */
    int  fails[NMAX];
    int  maxrc[NMAX];
    long long first_t[NMAX], last_t[NMAX];
    size_t distinct_ok;    /* n with at least one ok */
    size_t lines;
};

static void read_seen(const char *path, struct seen *s)
{
    FILE *f = fopen(path, "r");
    char line[512];

    memset(s, 0, sizeof(*s));
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char id[64], st[16];
        int n, rc, pid;
        long long t;

        if (sscanf(line, "%63s %d %d %15s %d %lld", id, &n, &rc, st, &pid, &t) != 6 || n < 0 ||
            n >= NMAX)
            continue;
        s->lines++;
        if (strcmp(st, "ok") == 0) {
            if (s->ok[n]++ == 0)
                s->distinct_ok++;
        } else {
            s->fails[n]++;
        }
        if (rc > s->maxrc[n])
            s->maxrc[n] = rc;
        if (!s->first_t[n])
            s->first_t[n] = t;
        s->last_t[n] = t;
    }
    fclose(f);
}

/* Wait until `want` distinct messages were handled successfully. */
static void wait_ok(const char *out, size_t want, int timeout_ms, struct seen *s)
{
    double end = now_ms() + timeout_ms;

    for (;;) {
        read_seen(out, s);
        if (s->distinct_ok >= want)
            return;
        cr_assert_lt(now_ms(), end, "%zu of %zu messages handled after %d ms", s->distinct_ok,
                     want, timeout_ms);
        sleep_ms(200);
    }
}

static void wait_clean(redisContext *rc, bool list, const char *key, bool deleted, int timeout_ms)
{
    double end = now_ms() + timeout_ms;

    while (!queue_clean(rc, list, key, deleted)) {
        cr_assert_lt(now_ms(), end, "queue %s still holds messages after %d ms", key, timeout_ms);
        sleep_ms(200);
    }
}

static char *unique_key(const char *what, bool list)
{
    static char k[8][160];
    static int i;
    char *p = k[i++ % 8];

    snprintf(p, 160, "rsrc:%s:%s:%d:%lld", list ? "list" : "stream", what, (int)getpid(),
             (long long)time(NULL));
    return p;
}

static char *file(const char *name)
{
    static char p[8][400];
    static int i;
    char *s = p[i++ % 8];

    snprintf(s, 400, "%s/%s", dir, name);
    return s;
}

static struct seen seen, seen2;

/* ------------------------------------------------------------------ */
/* 10,000 messages                                                     */

static void ten_thousand(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("10k", list), .batch = 100,
                      .concurrency = 4, .delete_on_ack = true, .out = file("out") };

    produce(rc, list, o.key, 0, 10000, NULL);
    run(&o, "a");
    wait_ok(o.out, 10000, 90000, &seen);
    wait_clean(rc, list, o.key, true, 20000);
    for (int n = 0; n < 10000; n++)
        cr_assert_geq(seen.ok[n], 1, "message %d never handled", n);
    cr_assert_eq(seen.lines, 10000, "%zu handlings for 10000 messages, none failed or expired",
                 seen.lines);
    redisFree(rc);
}

Test(redis_source, stream_10000_handled_and_deleted) { ten_thousand(false); }
Test(redis_source, list_10000_handled_and_deleted) { ten_thousand(true); }

/* ------------------------------------------------------------------ */
/* SIGKILL three times                                                 */

static void sigkill(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("kill", list), .batch = 20,
                      .concurrency = 2, .vis_s = 2, .sleep_ms = 40, .out = file("out") };
    const int total = 3000;
    size_t before;

    produce(rc, list, o.key, 0, total, NULL);
    for (int k = 0; k < 3; k++) {
        pid_t pid = run(&o, "a");
        /* let it make progress, then kill it in the middle of batches */
        read_seen(o.out, &seen);
        before = seen.distinct_ok;
        wait_ok(o.out, before + 150, 30000, &seen);
        sleep_ms(300);
        stop_kid(pid, SIGKILL);
        forget(pid);
        read_seen(o.out, &seen);
        cr_assert_lt(seen.distinct_ok, (size_t)total, "finished before the kill %d", k + 1);
    }
    run(&o, "a");
    wait_ok(o.out, total, 120000, &seen);
    wait_clean(rc, list, o.key, false, 20000);
    for (int n = 0; n < total; n++)
        cr_assert_geq(seen.ok[n], 1, "message %d lost", n);
    redisFree(rc);
}

Test(redis_source, stream_sigkill_three_times_loses_nothing) { sigkill(false); }
Test(redis_source, list_sigkill_three_times_loses_nothing) { sigkill(true); }

/* ------------------------------------------------------------------ */
/* visibility timeout, receive count, redrive                          */

/* A dead-lettered queue message is the message itself, as the source
 * built it: SQS-shaped, its eventSourceARN ending in the queue's key, no
 * envelope around it. */
static void check_original_message(json_t *m, const char *key)
{
    const char *arn = json_string_value(json_object_get(m, "eventSourceARN"));
    const char *src = json_string_value(json_object_get(m, "eventSource"));

    cr_assert(json_string_length(json_object_get(m, "messageId")) > 0);
    cr_assert(json_is_string(json_object_get(m, "md5OfBody")));
    cr_assert(src && (strcmp(src, "aws:sqs") == 0 || strcmp(src, "sluice:redis") == 0), "%s", src);
    cr_assert(arn && strlen(arn) > strlen(key) + 1 &&
              strcmp(arn + strlen(arn) - strlen(key), key) == 0 &&
              arn[strlen(arn) - strlen(key) - 1] == ':', "eventSourceARN %s, key %s", arn, key);
    cr_assert_null(json_object_get(m, "requestContext"));
    cr_assert_null(json_object_get(m, "records"));
    cr_assert_null(json_object_get(m, "condition"));
}

static void redrive(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("redrive", list), .vis_s = 1,
                      .max_receive = 3, .out = file("out"), .dlq = unique_key("dlq", list) };
    redisReply *r;
    json_t *env, *rec;
    double end;

    produce(rc, list, o.key, 0, 1, "\"poison\":true");
    produce(rc, list, o.key, 1, 2, "\"fail_until\":2");
    run(&o, "a");
    end = now_ms() + 30000;
    while (rint_(rc, "XLEN %s", o.dlq) < 1) {
        cr_assert_lt(now_ms(), end, "nothing reached the DLQ");
        sleep_ms(100);
    }
    wait_ok(o.out, 1, 10000, &seen);
    cr_assert_eq(seen.fails[0], 3, "poison received %d times, want 3 (max_receive_count)",
                 seen.fails[0]);
    cr_assert_eq(seen.maxrc[0], 3);
    /* three receives, each after the visibility timeout */
    /* (measured from the handler's start, which lags the first delivery by a cold start) */
    cr_assert_geq(seen.last_t[0] - seen.first_t[0], 1500, "redelivered after %lld ms",
                  seen.last_t[0] - seen.first_t[0]);
    cr_assert_eq(seen.ok[1], 1);
    cr_assert_eq(seen.maxrc[1], 2, "second receive of the flaky message");
    r = redisCommand(rc, "XRANGE %s - +", o.dlq);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    env = json_loadb(r->element[0]->element[1]->element[1]->str,
                     r->element[0]->element[1]->element[1]->len, 0, NULL);
    freeReplyObject(r);
    cr_assert(env, "DLQ entry is not JSON");
    /* the original message, as an SQS dead-letter queue holds it */
    rec = env;
    check_original_message(rec, o.key);
    cr_assert_str_eq(json_string_value(json_object_get(rec, "body")), "{\"n\":0,\"poison\":true}");
    cr_assert_str_eq(json_string_value(json_object_get(rec, "eventSource")), "aws:sqs");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(rec, "attributes"),
                                                       "ApproximateReceiveCount")), "4");
    if (!list)
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(rec, "messageAttributes"), "origin"),
                             "stringValue")), "test", "stream fields become messageAttributes");
    json_decref(env);
    wait_clean(rc, list, o.key, false, 10000);
    redisFree(rc);
}

Test(redis_source, stream_visibility_receive_count_redrive) { redrive(false); }
Test(redis_source, list_visibility_receive_count_redrive) { redrive(true); }

/* A message redriven after max_receive_count sits in the on_failure sink
 * as the original message; once the handler is fixed, `sluice dlq
 * redrive` finds its queue from the eventSourceARN's key (keys here hold
 * ':'), puts it back as a new message, removes it from the sink, and it is
 * processed. */
static void dlq_redrive_back_to_the_queue(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("back", list), .vis_s = 1,
                      .max_receive = 2, .out = file("out"), .dlq = unique_key("dlq", list) };
    char cmd[2000], exe[1200], fixed[400];
    redisReply *r;
    json_t *m;
    double end;
    FILE *f;

    produce(rc, list, o.key, 0, 1, "\"poison\":true");
    run(&o, "a");
    end = now_ms() + 30000;
    while (rint_(rc, "XLEN %s", o.dlq) < 1) {
        cr_assert_lt(now_ms(), end, "nothing reached the DLQ");
        sleep_ms(100);
    }
    r = redisCommand(rc, "XRANGE %s - +", o.dlq);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    m = json_loadb(r->element[0]->element[1]->element[1]->str,
                   r->element[0]->element[1]->element[1]->len, 0, NULL);
    freeReplyObject(r);
    cr_assert(m, "DLQ entry is not JSON");
    check_original_message(m, o.key);
    cr_assert_str_eq(json_string_value(json_object_get(m, "body")), "{\"n\":0,\"poison\":true}");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "attributes"),
                                                       "ApproximateReceiveCount")), "3");
    read_seen(o.out, &seen);
    cr_assert_eq(seen.fails[0], 2);
    cr_assert_eq(seen.ok[0], 0);
    /* an entry of the shape sluice wrote before (the engine's envelope
     * around the message) is not stranded: it is redriven too */
    {
        json_t *old;
        char *text;
        json_object_set_new(m, "body", json_string("{\"n\":1,\"poison\":true}"));
        old = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:i, s:[{s:s, s:O, s:i}]}",
                        "version", "1.0", "condition", "MaxReceiveCountExceeded", "source",
                        "name", "q", "type", "redis", "lane", "", "function", "rec",
                        "attempts", 3, "records", "id", "old-1", "record", m,
                        "receiveCount", 3);
        text = json_dumps(old, JSON_COMPACT);
        r = redisCommand(rc, "XADD %s * record %s", o.dlq, text);
        cr_assert(r && r->type == REDIS_REPLY_STRING);
        freeReplyObject(r);
        free(text);
        json_decref(old);
    }
    json_decref(m);

    snprintf(fixed, sizeof(fixed), "%s.fixed", o.out);
    f = fopen(fixed, "w");
    cr_assert_not_null(f);
    fclose(f);
    th_build_path(exe, sizeof(exe), root, "sluice");
    snprintf(cmd, sizeof(cmd), "'%s' dlq redrive '%s/a.yaml' dlq >&2", exe, dir);
    cr_assert_eq(system(cmd), 0, "sluice dlq redrive failed");
    cr_assert_eq(rint_(rc, "XLEN %s", o.dlq), 0, "the redriven entries are still in the sink");
    wait_ok(o.out, 2, 20000, &seen);
    cr_assert_eq(seen.ok[0], 1, "the redriven message was handled %d times", seen.ok[0]);
    cr_assert_eq(seen.ok[1], 1, "the old-shape entry's message was handled %d times", seen.ok[1]);
    cr_assert_eq(seen.maxrc[0], 2, "receive counts: 1, 2 before; 1 after the redrive");
    if (!list) {
        /* its stream fields came back as fields */
        r = redisCommand(rc, "XREVRANGE %s + - COUNT 2", o.key);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        for (size_t i = 0; i < 2; i++) {
            cr_assert_eq(r->element[i]->element[1]->elements, 4, "body and origin");
            cr_assert_str_eq(r->element[i]->element[1]->element[3]->str, "test");
        }
        freeReplyObject(r);
    }
    wait_clean(rc, list, o.key, false, 10000);
    redisFree(rc);
}

Test(redis_source, stream_dlq_redrive_puts_the_message_back) { dlq_redrive_back_to_the_queue(false); }
Test(redis_source, list_dlq_redrive_puts_the_message_back) { dlq_redrive_back_to_the_queue(true); }

/* ------------------------------------------------------------------ */
/* partial batch failure, per-message delay                            */

static void partial(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("partial", list), .batch = 10,
                      .concurrency = 2, .vis_s = 4, .partial = true, .out = file("out") };

    produce(rc, list, o.key, 0, 7, NULL);
    produce(rc, list, o.key, 7, 9, "\"fail_until\":2");
    produce(rc, list, o.key, 9, 10, "\"fail_until\":2,\"delay_s\":0");
    run(&o, "a");
    wait_ok(o.out, 10, 30000, &seen);
    for (int n = 0; n < 7; n++) {
        cr_assert_eq(seen.ok[n], 1, "success %d handled %d times", n, seen.ok[n]);
        cr_assert_eq(seen.maxrc[n], 1, "success %d received again", n);
    }
    for (int n = 7; n < 10; n++)
        cr_assert(seen.fails[n] == 1 && seen.ok[n] == 1 && seen.maxrc[n] == 2,
                  "failed message %d: %d failures, %d successes", n, seen.fails[n], seen.ok[n]);
    /* default: after the visibility timeout; visibilityTimeoutSeconds 0: at once */
    cr_assert_geq(seen.last_t[7] - seen.first_t[7], 3500, "back after %lld ms",
                  seen.last_t[7] - seen.first_t[7]);
    cr_assert_lt(seen.last_t[9] - seen.first_t[9], 2500, "delay 0 came back after %lld ms",
                 seen.last_t[9] - seen.first_t[9]);
    wait_clean(rc, list, o.key, false, 10000);
    redisFree(rc);
}

Test(redis_source, stream_partial_failure_acks_only_successes) { partial(false); }
Test(redis_source, list_partial_failure_acks_only_successes) { partial(true); }

/* ------------------------------------------------------------------ */
/* two instances                                                       */

static void two(bool list)
{
    redisContext *rc = client(rport);
    struct opts a = { .list = list, .key = unique_key("two", list), .batch = 10,
                      .concurrency = 2, .vis_s = 60, .sleep_ms = 10, .out = file("out-a") };
    struct opts b = a;
    const int total = 3000;
    size_t both = 0;

    b.out = file("out-b");
    run(&a, "a");
    run(&b, "b");
    /* both read before anything is there, or a slow start leaves b nothing to share */
    wait_reading("a", 30000);
    wait_reading("b", 30000);
    produce(rc, list, a.key, 0, total, NULL);
    for (double end = now_ms() + 90000;;) {
        read_seen(a.out, &seen);
        read_seen(b.out, &seen2);
        both = 0;
        for (int n = 0; n < total; n++)
            both += seen.ok[n] + seen2.ok[n] > 0;
        if ((int)both == total)
            break;
        cr_assert_lt(now_ms(), end, "%zu of %d handled", both, total);
        sleep_ms(200);
    }
    cr_assert_gt(seen.lines, (size_t)total / 10, "instance a did %zu", seen.lines);
    cr_assert_gt(seen2.lines, (size_t)total / 10, "instance b did %zu", seen2.lines);
    for (int n = 0; n < total; n++)
        cr_assert_eq(seen.ok[n] + seen2.ok[n], 1, "message %d handled %d times", n,
                     seen.ok[n] + seen2.ok[n]);
    wait_clean(rc, list, a.key, false, 10000);
    redisFree(rc);
}

Test(redis_source, stream_two_instances_share_without_duplicates) { two(false); }
Test(redis_source, list_two_instances_share_without_duplicates) { two(true); }

/* ------------------------------------------------------------------ */
/* Redis killed and restarted (AOF)                                    */

static void start_own_redis(int port, const char *data)
{
    char portstr[16];
    /* the password of the shared one, so the same URLs and clients work */
    const char *pw = th_redis_password();
    char *argv[] = { "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes", "--appendfsync", "always", "--dir", (char *)data,
                     pw ? "--requirepass" : NULL, (char *)pw, NULL };
    posix_spawn_file_actions_t fa;

    snprintf(portstr, sizeof(portstr), "%d", port);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    cr_assert_eq(posix_spawnp(&own_redis, "redis-server", &fa, NULL, argv, environ), 0,
                 "cannot start redis-server");
    posix_spawn_file_actions_destroy(&fa);
}

static void restart(bool list)
{
    int port = th_free_port();
    char *data = file("redis-data");
    redisContext *rc;
    struct opts o = { .list = list, .key = unique_key("restart", list), .batch = 20,
                      .concurrency = 2, .vis_s = 3, .sleep_ms = 20, .out = file("out"),
                      .port = port };
    const int total = 3000;

    mkdir(data, 0755);
    start_own_redis(port, data);
    rc = client(port);
    produce(rc, list, o.key, 0, total, NULL);
    redisFree(rc);
    run(&o, "a");
    wait_ok(o.out, 500, 30000, &seen);
    stop_kid(own_redis, SIGKILL);
    own_redis = -1;
    sleep_ms(1500);
    read_seen(o.out, &seen);
    cr_assert_lt(seen.distinct_ok, (size_t)total, "done before Redis went away");
    start_own_redis(port, data);
    rc = client(port);
    wait_ok(o.out, total, 120000, &seen);
    wait_clean(rc, list, o.key, false, 20000);
    for (int n = 0; n < total; n++)
        cr_assert_geq(seen.ok[n], 1, "message %d lost", n);
    redisFree(rc);
}

Test(redis_source, stream_redis_restart_loses_nothing) { restart(false); }
Test(redis_source, list_redis_restart_loses_nothing) { restart(true); }

/* ------------------------------------------------------------------ */
/* a dead consumer's messages                                          */

static void dead_consumer(bool list)
{
    redisContext *rc = client(rport);
    struct opts a = { .list = list, .key = unique_key("dead", list), .batch = 10,
                      .concurrency = 2, .vis_s = 2, .sleep_ms = 100000, .out = file("out-a") };
    struct opts b = a;
    const int total = 200;
    pid_t pa;
    double end = now_ms() + 20000;
    int reclaimed = 0;

    b.sleep_ms = 0;
    b.out = file("out-b");
    produce(rc, list, a.key, 0, total, NULL);
    pa = run(&a, "a");
    /* a takes its fill (2 x lanes x batch) and sits on it */
    while ((list ? rint_(rc, "ZCARD %s:sluice:leases", a.key) : xpending(rc, a.key)) < 40) {
        cr_assert_lt(now_ms(), end, "instance a took nothing");
        sleep_ms(100);
    }
    stop_kid(pa, SIGKILL);
    forget(pa);
    run(&b, "b");
    wait_ok(b.out, total, 60000, &seen2);
    for (int n = 0; n < total; n++)
        reclaimed += seen2.maxrc[n] >= 2;
    cr_assert_geq(reclaimed, 40, "%d messages of the dead instance were reclaimed", reclaimed);
    wait_clean(rc, list, a.key, false, 10000);
    redisFree(rc);
}

Test(redis_source, stream_dead_consumer_reclaimed) { dead_consumer(false); }
Test(redis_source, list_dead_consumer_reclaimed) { dead_consumer(true); }

/* ------------------------------------------------------------------ */
/* filter criteria                                                     */

static void filter(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("filter", list), .out = file("out"),
                      .extra = "    filter_criteria: [ { body: { keep: [true] } } ]\n" };

    produce(rc, list, o.key, 0, 50, "\"keep\":true");
    produce(rc, list, o.key, 50, 100, "\"keep\":false");
    if (list)
        cr_assert_eq(rint_(rc, "LPUSH %s %s", o.key, "not json"), 101);
    run(&o, "a");
    wait_ok(o.out, 50, 30000, &seen);
    /* the others are deleted without an invocation */
    wait_clean(rc, list, o.key, false, 10000);
    for (int n = 0; n < 100; n++)
        cr_assert_eq(seen.ok[n], n < 50, "message %d handled %d times", n, seen.ok[n]);
    cr_assert_eq(seen.lines, 50);
    redisFree(rc);
}

Test(redis_source, stream_filtered_messages_deleted_not_invoked) { filter(false); }
Test(redis_source, list_filtered_messages_deleted_not_invoked) { filter(true); }

/* Lambda's patterns on the SQS shape: metadata (eventSource) and body
 * together, and a plain-string pattern against a body that is not JSON
 * (Lambda matches it; a JSON body with a plain-string pattern, or a plain
 * body with a JSON pattern, is dropped). Only matches are invoked; the
 * rest are deleted from the queue without an invocation. */
static void filter_lambda(bool list)
{
    redisContext *rc = client(rport);
    struct opts o = { .list = list, .key = unique_key("filter2", list), .out = file("out"),
                      .extra = "    filter_criteria:\n"
                               "      - '{\"eventSource\": [\"aws:sqs\"], "
                               "\"body\": {\"status\": [\"x\"]}}'\n"
                               "      - { body: [ plain keep ] }\n"
                               "      - { eventSource: [ \"sluice:redis\" ] }\n" };

    produce(rc, list, o.key, 1, 11, "\"status\":\"x\"");
    produce(rc, list, o.key, 11, 21, "\"status\":\"y\"");
    if (list) {
        cr_assert_eq(rint_(rc, "LPUSH %s %s", o.key, "plain keep"), 21);
        cr_assert_eq(rint_(rc, "LPUSH %s %s", o.key, "plain drop"), 22);
    } else {
        redisReply *r = redisCommand(rc, "XADD %s * body %s", o.key, "plain keep");
        cr_assert(r && r->type == REDIS_REPLY_STRING);
        freeReplyObject(r);
        r = redisCommand(rc, "XADD %s * body %s", o.key, "plain drop");
        cr_assert(r && r->type == REDIS_REPLY_STRING);
        freeReplyObject(r);
    }
    run(&o, "a");
    /* the plain "plain keep" body has no n: the handler logs it as 0 */
    wait_ok(o.out, 11, 30000, &seen);
    wait_clean(rc, list, o.key, false, 10000);
    for (int n = 0; n < 21; n++)
        cr_assert_eq(seen.ok[n], n <= 10, "message %d handled %d times", n, seen.ok[n]);
    cr_assert_eq(seen.lines, 11, "%zu handlings, want the 11 matches once each", seen.lines);
    redisFree(rc);
}

Test(redis_source, stream_lambda_filter_patterns_on_sqs_shape) { filter_lambda(false); }
Test(redis_source, list_lambda_filter_patterns_on_sqs_shape) { filter_lambda(true); }

/* ------------------------------------------------------------------ */
/* the event, judged by Powertools for AWS Lambda                      */

/* Every event parses with Powertools' SqsModel and reads through its
 * SQSEvent data class; md5OfBody and md5OfMessageAttributes are SQS's (a
 * Python implementation of SQS's algorithm recomputes them), the ARN and
 * awsRegion are SQS's in the configured region and account. Stream
 * entries: some with a String attribute, some with a Binary one (a value
 * that is not UTF-8) and a name out of order, some with the body alone
 * (no messageAttributes, no md5OfMessageAttributes). */
static void powertools(bool list)
{
    redisContext *rc = client(rport);
    static char key[160], cmd[4096];
    char arn[300];
    struct opts o = { .list = list, .key = key, .batch = 7, .out = file("out"),
                      .events = file("events"),
                      .server_extra = ", region: eu-west-3, account_id: \"123456789012\"" };
    int want = 20, want_attrs = list ? 0 : 10;

    /* SQS queue names have no ':' (a key with one is in the ARN as it is) */
    snprintf(key, sizeof(key), "rsrc-sqs-%s-%d-%lld", list ? "list" : "stream", (int)getpid(),
             (long long)time(NULL));
    produce(rc, list, key, 0, 5, NULL); /* stream: attribute origin=test */
    if (list) {
        produce(rc, list, key, 5, 20, NULL);
    } else {
        for (int i = 5; i < 20; i++) {
            char body[64];
            redisReply *r;

            snprintf(body, sizeof(body), "{\"n\":%d}", i);
            if (i < 10)
                r = redisCommand(rc, "XADD %s * zeta %s body %s blob %b", key, "last", body,
                                 "\xff\x00\x01", (size_t)3);
            else
                r = redisCommand(rc, "XADD %s * body %s", key, body);
            cr_assert(r && r->type == REDIS_REPLY_STRING);
            freeReplyObject(r);
        }
    }
    run(&o, "a");
    wait_ok(o.out, 20, 30000, &seen);
    wait_clean(rc, list, key, false, 10000);
    snprintf(arn, sizeof(arn), "arn:aws:sqs:eu-west-3:123456789012:%s", key);
    snprintf(cmd, sizeof(cmd),
             "PYTHONPATH='%s/tests/.layers/powertools/python' /usr/bin/python3 "
             "'%s/tests/integration/sqs_powertools.py' '%s' '%s' eu-west-3 %d %d >&2",
             root, root, o.events, arn, want, want_attrs);
    cr_assert_eq(system(cmd), 0, "Powertools or the digests rejected the events (above); "
                 "the layer comes from tests/deps");
    redisFree(rc);
}

Test(redis_source, stream_event_is_sqs_for_powertools) { powertools(false); }
Test(redis_source, list_event_is_sqs_for_powertools) { powertools(true); }
