/* Asynchronous invocations through the dispatcher and its durable queue:
 * retries with backoff, destinations (Lambda's destination record), event
 * expiry, and a SIGKILLed sluice that resumes its queue after a restart.
 * Real handlers in real sandboxes; the destinations are file sinks. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "harness.h"
#include "sluice/api.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/dispatch.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/pool.h"

static char root[1024], dir[256];
static struct event_base *base;
static struct sl_config *conf;
static struct sl_pool *pool;
static struct sl_metrics *metrics;
static struct sl_functions *fns;
static struct sl_dispatcher *disp;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void rm_dir(void)
{
    char cmd[400];

    if (strncmp(dir, "/tmp/sluice-test-async-", 23) == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

static void setup(void)
{
    char rt[1100];

    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(rt, sizeof(rt), "%s/runtime", root);
    setenv("SLUICE_RUNTIME_DIR", rt, 1);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-async-%d", (int)getpid());
    rm_dir();
    cr_assert_eq(mkdir(dir, 0755), 0);
    sl_log_set_level(getenv("SLUICE_TEST_LOG") ? SL_LOG_DEBUG : SL_LOG_ERROR);
    base = event_base_new();
}

static void teardown(void)
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
    if (base)
        event_base_free(base);
    base = NULL;
    rm_dir();
}

/* Copy `in` to `out` with @DIR@, @ROOT@ and @BUILD@ ($BUILD under the
 * repository) replaced. */
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
        if (rep) {
            while (*rep && o + 1 < n)
                out[o++] = *rep++;
        } else {
            out[o++] = *in++;
        }
    }
    out[o] = '\0';
}

/* Load `tmpl` (@DIR@: the test's data dir, @ROOT@: the repository) and
 * start the dispatcher. */
static void start(const char *tmpl)
{
    char yaml[8192], *diag = NULL;
    struct sl_diags d;
    struct sl_err err;
    size_t dl = 0;
    int rc;

    expand(tmpl, yaml, sizeof(yaml));
    sl_diags_init(&d, "async.yaml");
    rc = sl_config_load_buffer("async.yaml", dir, yaml, strlen(yaml), &sl_registry, &conf, &d);
    if (rc != 0) {
        FILE *m = open_memstream(&diag, &dl);
        sl_diags_print(&d, m);
        fclose(m);
    }
    sl_diags_destroy(&d);
    cr_assert_eq(rc, 0, "%s\n%s", yaml, diag);
    cr_assert_eq(sl_pool_new(base, 2, &pool, &err), 0);
    metrics = sl_metrics_new();
    cr_assert_eq(sl_functions_new(base, conf, NULL, &fns, &err), 0, "%s", err.msg);
    cr_assert_eq(sl_dispatcher_new(base, conf, fns, metrics, pool, &disp, &err), 0, "%s",
                 err.msg);
}

/* Lines of a JSON-lines file, parsed; NULL entries for bad lines. */
static size_t read_records(const char *name, json_t **out, size_t max)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return th_read_jsonl(path, out, max);
}

static size_t count_records(const char *name)
{
    json_t *recs[2048];
    size_t n = read_records(name, recs, 2048);

    for (size_t i = 0; i < n; i++)
        json_decref(recs[i]);
    return n;
}

static void pump_until_records(const char *name, size_t want, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    struct timeval tick = { 0, 20000 };

    while (count_records(name) < want && now_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
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

static void enqueue(const char *fn, const char *payload, struct accepted *a)
{
    double end = now_ms() + 5000;

    memset(a, 0, sizeof(*a));
    cr_assert_eq(sl_dispatcher_enqueue(disp, fn, payload, strlen(payload), on_accept, a), 0);
    while (!a->done && now_ms() < end)
        th_pump(base, 5);
    cr_assert(a->done, "the event was never committed");
    cr_assert_eq(a->rc, 0);
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

/* ------------------------------------------------------------------ */

Test(async, failing_event_is_retried_then_dead_lettered_once, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct accepted a;
    json_t *recs[8], *rc;
    char *m;
    size_t n;

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  fail:\n    handler: @BUILD@/handlers/fail\n"
          "    async: { maximum_retry_attempts: 2, backoff_initial_ms: 10, backoff_max_ms: 40,"
          " on_failure: dlq }\n"
          "sinks:\n  dlq: { type: file, path: @DIR@/dlq.jsonl }\n");
    enqueue("fail", "{\"order\":7}", &a);
    pump_until_records("dlq.jsonl", 1, 20000);
    th_pump(base, 300); /* nothing more may arrive */
    n = read_records("dlq.jsonl", recs, 8);
    cr_assert_eq(n, 1, "%zu destination records", n);
    rc = json_object_get(recs[0], "requestContext");
    cr_expect_str_eq(json_string_value(json_object_get(rc, "condition")), "RetriesExhausted");
    cr_expect_eq(json_integer_value(json_object_get(rc, "approximateInvokeCount")), 3);
    cr_expect_str_eq(json_string_value(json_object_get(rc, "requestId")), a.id);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(recs[0], "requestPayload"),
                                                    "order")), 7);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[0],
                     "responseContext"), "functionError")), "Unhandled");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[0],
                     "responsePayload"), "errorType")), "OrderError");
    /* the whole runtime error, as Lambda puts it there: a handler that gives
     * no stack still has an (empty) stackTrace, and the requestId */
    {
        json_t *rp = json_object_get(recs[0], "responsePayload");
        const char *msg = json_string_value(json_object_get(rp, "errorMessage"));
        cr_expect(msg && strncmp(msg, "order rejected", 14) == 0, "errorMessage %s", msg);
        cr_expect(json_is_array(json_object_get(rp, "stackTrace")), "stackTrace");
        cr_expect_str_eq(json_string_value(json_object_get(rp, "requestId")), a.id);
    }
    m = metrics_text();
    cr_expect(strstr(m, "sluice_invocations_total{function=\"fail\"} 3\n") != NULL, "%s", m);
    cr_expect(strstr(m, "sluice_dlq_writes_total{function=\"fail\"} 1\n") != NULL, "%s", m);
    free(m);
    json_decref(recs[0]);
}

/* A Python handler's exception: responsePayload is Lambda's error response,
 * errorMessage, errorType, stackTrace (the traceback's lines) and requestId. */
Test(async, failure_record_carries_the_whole_runtime_error, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct accepted a;
    json_t *recs[8], *rp, *st, *v;
    size_t n, i;
    bool names_handler = false;

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  pyfail:\n    handler: @ROOT@/examples/handlers/fail.py\n"
          "    memory_mb: 1769\n"
          "    async: { maximum_retry_attempts: 0, on_failure: dlq }\n" SINKS);
    enqueue("pyfail", "{\"order\":8}", &a);
    pump_until_records("dlq.jsonl", 1, 20000);
    n = read_records("dlq.jsonl", recs, 8);
    cr_assert_eq(n, 1, "%zu destination records", n);
    rp = json_object_get(recs[0], "responsePayload");
    cr_expect_str_eq(json_string_value(json_object_get(rp, "errorType")), "OrderError");
    cr_expect_str_eq(json_string_value(json_object_get(rp, "errorMessage")), "order rejected");
    cr_expect_str_eq(json_string_value(json_object_get(rp, "requestId")), a.id);
    st = json_object_get(rp, "stackTrace");
    cr_assert(json_is_array(st) && json_array_size(st) > 0, "a traceback in stackTrace");
    json_array_foreach(st, i, v) {
        cr_expect(json_is_string(v), "stackTrace entries are strings");
        if (json_is_string(v) && strstr(json_string_value(v), "fail.py"))
            names_handler = true;
    }
    cr_expect(names_handler, "the traceback names the handler's file");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[0],
                     "responseContext"), "functionError")), "Unhandled");
    json_decref(recs[0]);
}

Test(async, event_that_succeeds_on_a_retry_goes_to_on_success, .init = setup,
     .fini = teardown, .timeout = 60)
{
    struct accepted a;
    json_t *recs[8], *rc;
    size_t n;

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  flaky:\n    handler: @ROOT@/tests/handlers/flaky.py\n"
          "    memory_mb: 1769\n"
          "    async: { maximum_retry_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 40,"
          " on_success: ok, on_failure: dlq }\n" SINKS);
    enqueue("flaky", "{\"key\":\"k1\",\"fail_times\":2}", &a);
    pump_until_records("ok.jsonl", 1, 20000);
    th_pump(base, 200);
    n = read_records("ok.jsonl", recs, 8);
    cr_assert_eq(n, 1);
    cr_expect_eq(count_records("dlq.jsonl"), 0);
    rc = json_object_get(recs[0], "requestContext");
    cr_expect_str_eq(json_string_value(json_object_get(rc, "condition")), "Success");
    cr_expect_eq(json_integer_value(json_object_get(rc, "approximateInvokeCount")), 3);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(recs[0], "responsePayload"),
                                                    "attempt")), 3);
    cr_expect_null(json_object_get(json_object_get(recs[0], "responseContext"),
                                   "functionError"));
    json_decref(recs[0]);
}

Test(async, expired_event_goes_to_on_failure_without_running, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char path[512], *sql;
    sqlite3 *db;
    json_t *recs[8], *rc;
    size_t n;
    long long old = (long long)time(NULL) * 1000 - 2 * 3600 * 1000;

    /* an event accepted two hours ago, left in the queue by a stopped sluice */
    snprintf(path, sizeof(path), "%s/async.db", dir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sql = sqlite3_mprintf("CREATE TABLE events (id TEXT PRIMARY KEY, function TEXT NOT NULL, "
                          "payload BLOB NOT NULL, enqueued_ms INTEGER NOT NULL, attempts INTEGER "
                          "NOT NULL, next_ms INTEGER NOT NULL, last_error TEXT NOT NULL);"
                          "INSERT INTO events VALUES ('11111111-2222-4333-8444-555555555555', "
                          "'echo', '{\"late\":true}', %lld, 0, %lld, '');", old, old);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_free(sql);
    sqlite3_close(db);

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  echo:\n    handler: @BUILD@/handlers/echo\n"
          "    async: { maximum_event_age_s: 1h, on_success: ok, on_failure: dlq }\n" SINKS);
    pump_until_records("dlq.jsonl", 1, 10000);
    n = read_records("dlq.jsonl", recs, 8);
    cr_assert_eq(n, 1);
    rc = json_object_get(recs[0], "requestContext");
    cr_expect_str_eq(json_string_value(json_object_get(rc, "condition")), "EventAgeExceeded");
    cr_expect_eq(json_integer_value(json_object_get(rc, "approximateInvokeCount")), 0);
    cr_expect_str_eq(json_string_value(json_object_get(rc, "requestId")),
                     "11111111-2222-4333-8444-555555555555");
    cr_expect(json_is_true(json_object_get(json_object_get(recs[0], "requestPayload"), "late")));
    cr_expect_eq(count_records("ok.jsonl"), 0, "an expired event ran");
    json_decref(recs[0]);
}

Test(async, zero_reserved_concurrency_goes_straight_to_on_failure, .init = setup,
     .fini = teardown, .timeout = 60)
{
    struct accepted a;
    json_t *recs[8];

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  off:\n    handler: @BUILD@/handlers/echo\n"
          "    reserved_concurrency: 0\n"
          "    async: { on_failure: dlq }\n" SINKS);
    enqueue("off", "{}", &a);
    pump_until_records("dlq.jsonl", 1, 10000);
    cr_assert_eq(read_records("dlq.jsonl", recs, 8), 1);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(recs[0], "requestContext"),
                                                    "approximateInvokeCount")), 0);
    json_decref(recs[0]);
}

Test(async, unknown_function_is_refused, .init = setup, .fini = teardown)
{
    struct accepted a;

    start("server: { data_dir: @DIR@ }\n"
          "functions:\n  echo:\n    handler: @BUILD@/handlers/echo\n");
    cr_expect_eq(sl_dispatcher_enqueue(disp, "nope", "{}", 2, on_accept, &a), SL_ENOTFOUND);
}

/* ------------------------------------------------------------------ */
/* A SIGKILLed sluice resumes its queue                                */

Test(async, accepted_events_survive_sigkill, .init = setup, .fini = teardown, .timeout = 180)
{
    enum { N = 1000 };
    char cfg[600], tmpl[2048], yaml[4096], curlcfg[600], ids_path[600], log[600], cmd[1400];
    static char ids[N][40];
    static json_t *recs[4 * N];
    int port = th_free_port(), nids = 0, missing = 0;
    size_t nrec;
    pid_t pid;
    FILE *f;
    double end;

    snprintf(tmpl, sizeof(tmpl),
             "server: { listen: '127.0.0.1:%d', data_dir: @DIR@ }\n"
             "functions:\n  slow:\n    handler: @BUILD@/handlers/slow\n"
             "    reserved_concurrency: 4\n    timeout_s: 10\n"
             "    async: { backoff_initial_ms: 10, backoff_max_ms: 200, on_success: ok }\n"
             "sinks:\n  ok: { type: file, path: @DIR@/ok.jsonl, fsync: false }\n"
             "log: { level: warn }\n", port);
    expand(tmpl, yaml, sizeof(yaml));
    snprintf(cfg, sizeof(cfg), "%s/run.yaml", dir);
    f = fopen(cfg, "w");
    fputs(yaml, f);
    fclose(f);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);

    pid = th_run_sluice(root, cfg, log);
    end = now_ms() + 20000;
    while (!th_healthy(port) && now_ms() < end)
        usleep(50000);
    cr_assert(th_healthy(port), "sluice did not come up");

    /* N asynchronous invokes through one curl (keep-alive), each 202 is
     * the promise that the event is on disk */
    snprintf(curlcfg, sizeof(curlcfg), "%s/curl.cfg", dir);
    f = fopen(curlcfg, "w");
    for (int i = 0; i < N; i++)
        fprintf(f, "url = \"http://127.0.0.1:%d/2015-03-31/functions/slow/invocations\"\n"
                   "header = \"X-Amz-Invocation-Type: Event\"\n"
                   "data = \"{\\\"sleep_ms\\\":20,\\\"n\\\":%d}\"\n"
                   "output = \"/dev/null\"\n"
                   "write-out = \"%%{http_code} %%header{x-amzn-requestid}\\n\"\n%s",
                port, i, i + 1 < N ? "next\n" : "");
    fclose(f);
    snprintf(ids_path, sizeof(ids_path), "%s/ids.txt", dir);
    snprintf(cmd, sizeof(cmd), "curl -s -K '%s' > '%s'", curlcfg, ids_path);
    cr_assert_eq(system(cmd), 0);
    f = fopen(ids_path, "r");
    {
        char line[128];
        while (fgets(line, sizeof(line), f)) {
            int code;
            char id[40];
            if (sscanf(line, "%d %39s", &code, id) == 2 && code == 202 && nids < N)
                memcpy(ids[nids++], id, sizeof(id));
        }
    }
    fclose(f);
    cr_assert_eq(nids, N, "only %d of %d events were accepted", nids, N);

    /* kill it while most events still wait, then start it again */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    nrec = count_records("ok.jsonl");
    cr_log_info("%zu of %d events done before SIGKILL", nrec, N);
    cr_expect_lt(nrec, (size_t)N, "everything ran before the kill: the test proves nothing");
    pid = th_run_sluice(root, cfg, log);

    end = now_ms() + 120000;
    for (;;) {
        missing = 0;
        nrec = read_records("ok.jsonl", recs, 4 * N);
        for (int i = 0; i < N; i++) {
            int found = 0;
            for (size_t k = 0; k < nrec && !found; k++) {
                const char *rid = json_string_value(json_object_get(
                    json_object_get(recs[k], "requestContext"), "requestId"));
                found = rid && strcmp(rid, ids[i]) == 0;
            }
            missing += !found;
        }
        for (size_t k = 0; k < nrec; k++)
            json_decref(recs[k]);
        if (missing == 0 || now_ms() > end)
            break;
        usleep(500000);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    cr_expect_eq(missing, 0, "%d accepted events never ran (see %s)", missing, log);
}

Test(async, dlq_redrive_resubmits_and_removes_only_accepted_entries, .init = setup,
     .fini = teardown, .timeout = 90)
{
    char cfg[600], tmpl[2048], yaml[4096], log[600], cmd[2000], path[600], out[4096];
    char exe[1200];
    int port = th_free_port();
    json_t *recs[8];
    pid_t pid;
    FILE *f;
    double end;

    snprintf(tmpl, sizeof(tmpl),
             "server: { listen: '127.0.0.1:%d', data_dir: @DIR@ }\n"
             "functions:\n  echo:\n    handler: @BUILD@/handlers/echo\n"
             "    async: { on_success: ok }\n"
             "sinks:\n  ok: { type: file, path: @DIR@/ok.jsonl }\n"
             "  dlq: { type: file, path: @DIR@/dlq.jsonl }\n", port);
    expand(tmpl, yaml, sizeof(yaml));
    snprintf(cfg, sizeof(cfg), "%s/run.yaml", dir);
    f = fopen(cfg, "w");
    fputs(yaml, f);
    fclose(f);
    /* an event for a function that exists; a stream batch's on-failure
     * record (its event in payload); an envelope of the old shape, which
     * is read but cannot be redriven; records a source lost (nothing to
     * send); an event for a function that is gone */
    snprintf(path, sizeof(path), "%s/dlq.jsonl", dir);
    f = fopen(path, "w");
    fputs("{\"requestContext\":{\"requestId\":\"r1\",\"functionArn\":\"arn:aws:lambda:us-east-1:"
          "000000000000:function:echo:$LATEST\",\"condition\":\"RetriesExhausted\"},"
          "\"requestPayload\":{\"again\":1}}\n"
          "{\"requestContext\":{\"requestId\":\"r3\",\"functionArn\":\"arn:aws:lambda:us-east-1:"
          "000000000000:function:echo\",\"condition\":\"RetryAttemptsExhausted\","
          "\"approximateInvokeCount\":3},\"responseContext\":{\"statusCode\":200,"
          "\"executedVersion\":\"$LATEST\",\"functionError\":\"Unhandled\"},\"version\":\"1.0\","
          "\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"DDBStreamBatchInfo\":{\"shardId\":\"s\"},"
          "\"payload\":{\"Records\":[{\"again\":3}]}}\n"
          "{\"version\":\"1.0\",\"condition\":\"RetryAttemptsExhausted\",\"source\":{\"name\":\"s\","
          "\"type\":\"kafka\",\"lane\":\"t-0\"},\"function\":\"echo\",\"attempts\":3,"
          "\"batchInfo\":{\"firstId\":\"5\",\"lastId\":\"5\",\"size\":1},"
          "\"records\":[{\"id\":\"5\",\"record\":{\"offset\":5},\"receiveCount\":1}]}\n"
          "{\"requestContext\":{\"requestId\":\"r4\",\"functionArn\":\"arn:aws:lambda:us-east-1:"
          "000000000000:function:echo\",\"condition\":\"RecordExpired\",\"approximateInvokeCount\":0},"
          "\"responseContext\":null,\"KafkaBatchInfo\":{\"batchSize\":2},"
          "\"error\":{\"type\":\"RecordExpired\",\"message\":\"deleted\"}}\n"
          "{\"requestContext\":{\"requestId\":\"r2\",\"functionArn\":\"arn:aws:lambda:us-east-1:"
          "000000000000:function:gone:$LATEST\",\"condition\":\"RetriesExhausted\"},"
          "\"requestPayload\":{\"again\":2}}\n", f);
    fclose(f);

    /* nothing listens yet: nothing may be removed */
    th_build_path(exe, sizeof(exe), root, "sluice");
    snprintf(cmd, sizeof(cmd), "'%s' dlq redrive '%s' dlq --endpoint "
             "http://127.0.0.1:%d >/dev/null 2>&1", exe, cfg, port);
    cr_expect_neq(system(cmd), 0);
    cr_expect_eq(count_records("dlq.jsonl"), 5, "entries removed without a redrive");

    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    pid = th_run_sluice(root, cfg, log);
    end = now_ms() + 20000;
    while (!th_healthy(port) && now_ms() < end)
        usleep(50000);
    cr_assert(th_healthy(port));
    snprintf(cmd, sizeof(cmd), "'%s' dlq list '%s' dlq 2>/dev/null", exe, cfg);
    f = popen(cmd, "r");
    out[fread(out, 1, sizeof(out) - 1, f)] = '\0';
    pclose(f);
    cr_expect(strstr(out, "1\techo\tRetriesExhausted\t{\"again\":1}") != NULL, "%s", out);
    cr_expect(strstr(out, "2\techo\tRetryAttemptsExhausted\t{\"Records\":[{\"again\":3}]}") != NULL,
              "%s", out);
    cr_expect(strstr(out, "3\techo\tRetryAttemptsExhausted\t[{\"id\":\"5\"") != NULL, "%s", out);
    cr_expect(strstr(out, "4\techo\tRecordExpired\tdeleted") != NULL, "%s", out);

    snprintf(cmd, sizeof(cmd), "'%s' dlq redrive '%s' dlq --endpoint "
             "http://127.0.0.1:%d >/dev/null 2>&1", exe, cfg, port);
    cr_expect_neq(system(cmd), 0, "the entry for a missing function cannot be accepted");
    pump_until_records("ok.jsonl", 2, 10000);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);

    cr_assert_eq(read_records("ok.jsonl", recs, 8), 2);
    for (int i = 0; i < 2; i++) {
        json_t *req = json_object_get(recs[i], "requestPayload");
        json_int_t again = json_integer_value(json_object_get(req, "again"));
        if (!again) /* the batch's event, sent as it was */
            again = json_integer_value(json_object_get(json_array_get(json_object_get(req,
                                       "Records"), 0), "again"));
        cr_expect(again == 1 || again == 3, "redriven payload %d", (int)again);
        json_decref(recs[i]);
    }
    cr_assert_eq(read_records("dlq.jsonl", recs, 8), 3, "accepted entries kept or others removed");
    cr_expect_str_eq(json_string_value(json_object_get(recs[0], "condition")),
                     "RetryAttemptsExhausted", "the old-shape envelope is kept");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[1],
                     "requestContext"), "requestId")), "r4");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(recs[2],
                     "requestContext"), "requestId")), "r2");
    for (int i = 0; i < 3; i++)
        json_decref(recs[i]);
}

/* data_dir made by sluice is 0700, async.db and its WAL files 0600, whatever
 * the umask: another local user reads no queued event. */
Test(async, data_dir_and_queue_files_are_private, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static const char *const files[] = { "async.db", "async.db-wal", "async.db-shm" };
    struct accepted a;
    struct stat st;
    char p[600];
    mode_t old = umask(0);

    start("server: { data_dir: @DIR@/data }\n"
          "functions:\n  fail:\n    handler: @BUILD@/handlers/fail\n"
          "    async: { maximum_retry_attempts: 0 }\n");
    umask(old);
    enqueue("fail", "{\"order\":7}", &a);
    snprintf(p, sizeof(p), "%s/data", dir);
    cr_assert_eq(lstat(p, &st), 0, "%s: %s", p, strerror(errno));
    cr_expect_eq(st.st_mode & 07777, 0700, "%s is %04o", p, st.st_mode & 07777);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/data/%s", dir, files[i]);
        cr_assert_eq(lstat(p, &st), 0, "%s: %s", p, strerror(errno));
        cr_expect_eq(st.st_mode & 07777, 0600, "%s is %04o", p, st.st_mode & 07777);
    }
}

/* async.db planted as a link (to a file another user could read) is
 * refused, not followed. */
Test(async, queue_file_behind_a_symlink_is_refused, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char yaml[1024], target[400], link_[400];
    struct sl_diags d;
    struct sl_err err;
    int rc;

    snprintf(target, sizeof(target), "%s/elsewhere.db", dir);
    snprintf(link_, sizeof(link_), "%s/data", dir);
    cr_assert_eq(mkdir(link_, 0700), 0);
    snprintf(link_, sizeof(link_), "%s/data/async.db", dir);
    cr_assert_eq(symlink(target, link_), 0);
    expand("server: { data_dir: @DIR@/data }\n"
           "functions:\n  fail:\n    handler: @BUILD@/handlers/fail\n", yaml, sizeof(yaml));
    sl_diags_init(&d, "t.yaml");
    rc = sl_config_load_buffer("t.yaml", dir, yaml, strlen(yaml), &sl_registry, &conf, &d);
    sl_diags_destroy(&d);
    cr_assert_eq(rc, 0);
    metrics = sl_metrics_new();
    cr_assert_eq(sl_pool_new(base, 2, &pool, &err), 0);
    cr_assert_eq(sl_functions_new(base, conf, NULL, &fns, &err), 0, "%s", err.msg);
    rc = sl_dispatcher_new(base, conf, fns, metrics, pool, &disp, &err);
    cr_expect_neq(rc, 0, "the dispatcher opened a queue through a symbolic link");
    cr_expect(strstr(err.msg, "symbolic link") != NULL, "%s", err.msg);
    cr_expect_eq(access(target, F_OK), -1, "the link's target was created");
}
