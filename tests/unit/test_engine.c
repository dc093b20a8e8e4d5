/* The outcome engine with a source fed from memory, a scripted function
 * (the fake functions of sandbox/fake.c answering as tests/handlers/batch.py
 * does) and a capture sink as the dead-letter destination: batching,
 * ordered checkpoints, retries, bisect, partial batch failures, record
 * age, redrive, and the dead-letter envelope written before anything is
 * checkpointed. No sandbox and no service: a unit test. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "sluice/capture_sink.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/dispatch.h"
#include "sluice/env.h"
#include "sluice/fake_functions.h"
#include "sluice/log.h"
#include "sluice/memory_poller.h"
#include "sluice/metrics.h"
#include "sluice/poller.h"
#include "sluice/pool.h"
#include "sluice/sink.h"

static char root[1024], dir[256];
static struct event_base *base;
static struct sl_config *conf;
static struct sl_pool *pool;
static struct sl_metrics *metrics;
static struct sl_functions *fns;
static struct sl_dispatcher *disp;
static struct sl_engine *engine;
static struct sl_source *src;
static struct sl_capture_sink *dlq;
static json_t *seen; /* id -> times the handler saw it */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* tests/handlers/batch.py as a script. Each record is {"id": "...",
 * "poison": bool, "fail_times": n, "mode": "partial"|"error",
 * "sleep_ms": n}. A record fails while it is poison or has been seen at
 * most fail_times times. Failing records are reported through
 * batchItemFailures when any of them asks for mode "partial", else the
 * whole invocation raises a RuntimeError. */
static void batch_handler(void *arg, const struct sl_fake_call *c, struct sl_fake_answer *a)
{
    json_t *ev = json_loads(c->event, 0, NULL), *recs, *rec, *failing = json_array();
    bool partial = false;
    size_t i, n = 0;
    char msg[1024] = "records failed: ";

    (void)arg;
    /* a warm invocation takes a while: the tests pump the loop in 10 ms
     * steps and look at the checkpoints between two invocations */
    a->delay_ms = 20;
    recs = json_object_get(ev, "Records");
    json_array_foreach(recs, i, rec) {
        const char *id = json_string_value(json_object_get(rec, "id"));
        const char *mode = json_string_value(json_object_get(rec, "mode"));

        n++;
        a->delay_ms += (int)json_integer_value(json_object_get(rec, "sleep_ms"));
        if (!id)
            id = "";
        json_object_set_new(seen, id, json_integer(json_integer_value(json_object_get(seen, id)) + 1));
        if (json_is_true(json_object_get(rec, "poison")) ||
            json_integer_value(json_object_get(seen, id)) <=
                json_integer_value(json_object_get(rec, "fail_times"))) {
            json_array_append_new(failing, json_string(id));
            partial = partial || (mode && strcmp(mode, "partial") == 0);
        }
    }
    if (json_array_size(failing) && partial) {
        json_t *out = json_object(), *items = json_array(), *id;
        char *text;
        json_array_foreach(failing, i, id)
            json_array_append_new(items, json_pack("{sO}", "itemIdentifier", id));
        json_object_set_new(out, "batchItemFailures", items);
        text = json_dumps(out, JSON_COMPACT);
        sl_fake_answer_ok(a, text);
        free(text);
        json_decref(out);
    } else if (json_array_size(failing)) {
        json_t *id;
        json_array_foreach(failing, i, id)
            snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s%s", i ? "," : "",
                     json_string_value(id));
        sl_fake_answer_error(a, "RuntimeError", msg);
    } else {
        char ok[64];
        snprintf(ok, sizeof(ok), "{\"ok\":%zu}", n);
        sl_fake_answer_ok(a, ok);
    }
    json_decref(failing);
    json_decref(ev);
}

static void setup(void)
{
    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-engine-%d", (int)getpid());
    mkdir(dir, 0755);
    sl_log_set_level(getenv("SLUICE_TEST_LOG") ? SL_LOG_DEBUG : SL_LOG_ERROR);
    base = event_base_new();
    seen = json_object();
}

static void teardown(void)
{
    char cmd[300];

    sl_functions_free(fns); /* in-flight invocations end (and report) first */
    fns = NULL;
    sl_engine_free(engine);
    engine = NULL;
    sl_pool_free(pool); /* queued queue and sink work finishes while its owners live */
    pool = NULL;
    sl_dispatcher_free(disp);
    disp = NULL;
    sl_metrics_free(metrics);
    sl_config_free(conf);
    event_base_free(base);
    json_decref(seen);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

/* `source` holds the source's keys (type redis = queue, kafka = stream). */
static void start(const char *source, int klass)
{
    static const char *const names[] = { "batch", NULL };
    char yaml[4096];
    struct sl_diags d;
    struct sl_err err;

    /* the handler never runs (the fake answers), but the loader wants a file */
    snprintf(yaml, sizeof(yaml),
             "server: { data_dir: %s }\n"
             "functions:\n  batch: { handler: %s/tests/handlers/batch.py, memory_mb: 1769,"
             " timeout_s: 20 }\n"
             "sources:\n  src:\n    function: batch\n%s"
             "sinks:\n  dlq: { type: file, path: %s/dlq.jsonl, fsync: false }\n",
             dir, root, source, dir);
    sl_diags_init(&d, "engine.yaml");
    cr_assert_eq(sl_config_load_buffer("engine.yaml", dir, yaml, strlen(yaml), &sl_registry,
                                       &conf, &d), 0,
                 "%s: %s", yaml, d.n ? d.v[0].msg : "");
    sl_diags_destroy(&d);
    cr_assert_eq(sl_pool_new(base, 2, &pool, &err), 0);
    metrics = sl_metrics_new();
    fns = sl_fake_functions_new(base, names);
    sl_fake_functions_script(fns, "batch", batch_handler, NULL);
    cr_assert_eq(sl_dispatcher_new(base, conf, fns, metrics, pool, &disp,
                                   &err), 0, "%s", err.msg);
    dlq = sl_capture_sink_attach(sl_dispatcher_sink(disp, "dlq"));
    cr_assert_not_null(dlq);
    cr_assert_eq(sl_engine_new(base, conf, disp, NULL, &engine, &err), 0);
    src = sl_memory_source(engine, &conf->sources[0], klass);
}

static void pump_until(size_t checkpoints, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    struct timeval tick = { 0, 10000 };
    const char *const *ids;

    while (sl_memory_checkpointed(src, &ids) < checkpoints && now_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

static void push(const char *lane, const char *id, const char *extra)
{
    char json[256];

    snprintf(json, sizeof(json), "{\"id\":\"%s\"%s%s}", id, extra ? "," : "", extra ? extra : "");
    sl_memory_push(src, lane, id, json, 0);
}

static char *checkpoints(void)
{
    static char buf[4096];
    const char *const *ids;
    size_t n = sl_memory_checkpointed(src, &ids), o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && o < sizeof(buf) - 40; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", i ? " " : "", ids[i]);
    return buf;
}

/* The envelopes the dead-letter sink confirmed, parsed; the caller
 * decrefs them. */
static size_t dead_letters(json_t **out, size_t max)
{
    size_t n = sl_capture_sink_count(dlq);

    for (size_t i = 0; i < n && i < max; i++)
        out[i] = sl_capture_sink_json(dlq, i);
    return n < max ? n : max;
}

/* An on-failure record's condition (requestContext.condition). */
static const char *condition(json_t *dl)
{
    return json_string_value(json_object_get(json_object_get(dl, "requestContext"), "condition"));
}

/* The records of the event an on-failure record carries (payload.Records:
 * the memory source's events are SQS/DynamoDB-shaped). */
static json_t *payload_records(json_t *dl)
{
    return json_object_get(json_object_get(dl, "payload"), "Records");
}

/* ------------------------------------------------------------------ */

Test(engine, batches_respect_size_and_checkpoint_in_order, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char id[16];

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 4\n"
          "    maximum_batching_window_ms: 50\n", SL_CLASS_STREAM);
    for (int i = 1; i <= 10; i++) {
        snprintf(id, sizeof(id), "%d", i);
        push("p0", id, NULL);
    }
    pump_until(10, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5 6 7 8 9 10");
    cr_expect_eq(sl_memory_events(src), 3, "10 records in batches of 4 make 3 invocations");
    cr_expect_eq(sl_source_outstanding(src), 0);
}

Test(engine, stream_error_retries_the_same_batch_until_it_succeeds, .init = setup,
     .fini = teardown, .timeout = 60)
{
    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 10\n"
          "    maximum_batching_window_ms: 20\n", SL_CLASS_STREAM);
    push("p0", "a", NULL);
    push("p0", "b", "\"fail_times\":2");
    push("p0", "c", NULL);
    pump_until(3, 20000);
    cr_expect_str_eq(checkpoints(), "a b c");
    cr_expect_eq(sl_memory_events(src), 3, "one batch, tried three times");
    cr_expect_eq(src->retried, 2);
}

Test(engine, exhausted_retries_dead_letter_the_batch_then_the_lane_moves_on, .init = setup,
     .fini = teardown, .timeout = 60)
{
    json_t *dl[4], *recs;
    size_t n;

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 2\n"
          "    maximum_batching_window_ms: 20\n    maximum_retry_attempts: 2\n"
          "    on_failure: dlq\n", SL_CLASS_STREAM);
    push("p0", "1", "\"poison\":true");
    push("p0", "2", NULL);
    push("p0", "3", NULL);
    pump_until(3, 30000);
    cr_expect_str_eq(checkpoints(), "1 2 3");
    n = dead_letters(dl, 4);
    cr_assert_eq(n, 1);
    /* Lambda's on-failure record (lambda-spec.md 1.3) ... */
    {
        json_t *rc = json_object_get(dl[0], "requestContext");
        json_t *resp = json_object_get(dl[0], "responseContext");
        const char *rid = json_string_value(json_object_get(rc, "requestId"));
        cr_expect_str_eq(condition(dl[0]), "RetryAttemptsExhausted");
        cr_expect_eq(json_integer_value(json_object_get(rc, "approximateInvokeCount")), 3);
        cr_expect_str_eq(json_string_value(json_object_get(rc, "functionArn")),
                         "arn:aws:lambda:us-east-1:000000000000:function:batch");
        cr_expect(rid && strlen(rid) > 0, "requestId");
        cr_expect_eq(json_integer_value(json_object_get(resp, "statusCode")), 200);
        cr_expect_str_eq(json_string_value(json_object_get(resp, "executedVersion")), "$LATEST");
        cr_expect_str_eq(json_string_value(json_object_get(resp, "functionError")), "Unhandled");
        cr_expect_str_eq(json_string_value(json_object_get(dl[0], "version")), "1.0");
        cr_expect(json_string_length(json_object_get(dl[0], "timestamp")) == 24,
                  "timestamp as 2019-11-14T00:38:06.021Z");
        cr_expect_null(json_object_get(dl[0], "condition"), "the old envelope's keys are gone");
        cr_expect_null(json_object_get(dl[0], "batchInfo"));
    }
    /* ... with sluice's extras: the last error and the event the function got */
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(dl[0], "error"), "type")),
                     "RuntimeError");
    recs = payload_records(dl[0]);
    cr_assert_eq(json_array_size(recs), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "id")), "1");
    cr_expect(json_is_true(json_object_get(json_array_get(recs, 0), "poison")));
    json_decref(dl[0]);
}

Test(engine, bisect_isolates_the_poison_record, .init = setup, .fini = teardown, .timeout = 90)
{
    json_t *dl[8], *recs;
    size_t n;
    char id[16];

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 8\n"
          "    maximum_batching_window_ms: 20\n    maximum_retry_attempts: 4\n"
          "    bisect_batch_on_function_error: true\n    on_failure: dlq\n", SL_CLASS_STREAM);
    for (int i = 1; i <= 8; i++) {
        snprintf(id, sizeof(id), "%d", i);
        push("p0", id, i == 6 ? "\"poison\":true" : NULL);
    }
    pump_until(8, 60000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5 6 7 8");
    n = dead_letters(dl, 8);
    cr_assert_eq(n, 1, "%zu envelopes", n);
    recs = payload_records(dl[0]);
    cr_expect_eq(json_array_size(recs), 1, "bisect should narrow the batch to the poison record");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "id")), "6");
    json_decref(dl[0]);
}

Test(engine, stream_partial_failure_checkpoints_up_to_the_lowest_failed, .init = setup,
     .fini = teardown, .timeout = 60)
{
    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 5\n"
          "    maximum_batching_window_ms: 20\n    report_batch_item_failures: true\n",
          SL_CLASS_STREAM);
    push("p0", "1", NULL);
    push("p0", "2", NULL);
    push("p0", "3", "\"fail_times\":1,\"mode\":\"partial\"");
    push("p0", "4", NULL);
    push("p0", "5", NULL);
    pump_until(2, 20000);
    cr_expect_str_eq(checkpoints(), "1 2", "checkpointed past the failed record");
    pump_until(5, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5");
    cr_expect_eq(sl_memory_events(src), 2, "retry starts from record 3");
}

/* Answers in turn: the i-th invocation gets replies[i] as its response
 * (the last one repeats); "!" answers a function error. */
struct replies {
    const char *const *v;
    size_t             n, calls;
};

static void reply_handler(void *arg, const struct sl_fake_call *c, struct sl_fake_answer *a)
{
    struct replies *r = arg;
    const char *text = r->v[r->calls < r->n ? r->calls : r->n - 1];

    (void)c;
    r->calls++;
    a->delay_ms = 20;
    if (strcmp(text, "!") == 0)
        sl_fake_answer_error(a, "RuntimeError", "failed");
    else
        sl_fake_answer_ok(a, text);
}

/* Five records 1..5 on lane "t-0" of a Kafka-typed source answered by
 * `replies`; `extra` is more source keys. */
static void start_replies(struct replies *r, const char *extra)
{
    char keys[1024];

    snprintf(keys, sizeof(keys),
             "    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 5\n"
             "    maximum_batching_window_ms: 20\n%s", extra);
    start(keys, SL_CLASS_STREAM);
    sl_fake_functions_script(fns, "batch", reply_handler, r);
    for (int i = 1; i <= 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i);
        push("t-0", id, NULL);
    }
}

/* The whole batch went to on_failure once, failed with `etype`. */
static void expect_whole_batch_dead_lettered(const char *etype)
{
    json_t *dl[4];

    pump_until(5, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5");
    cr_assert_eq(dead_letters(dl, 4), 1);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(dl[0], "error"), "type")),
                     etype);
    cr_expect_eq(json_array_size(payload_records(dl[0])), 5);
    /* the function answered: a response, but no function error */
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(dl[0], "responseContext"),
                                                    "statusCode")), 200);
    cr_expect_null(json_object_get(json_object_get(dl[0], "responseContext"), "functionError"));
    json_decref(dl[0]);
}

Test(engine, kafka_composite_item_identifier_resumes_from_the_named_record, .init = setup,
     .fini = teardown, .timeout = 60)
{
    static const char *const v[] = {
        "{\"batchItemFailures\":[{\"itemIdentifier\":{\"partition\":\"t-0\",\"offset\":3}},"
        "{\"itemIdentifier\":{\"partition\":\"t-0\",\"offset\":\"4\"}}]}",
        "{}",
    };
    struct replies r = { v, 2, 0 };

    start_replies(&r, "    report_batch_item_failures: true\n    on_failure: dlq\n");
    pump_until(2, 20000);
    cr_expect_str_eq(checkpoints(), "1 2", "checkpointed up to the record named");
    pump_until(5, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5");
    cr_expect_eq(sl_memory_events(src), 2, "the retry starts from record 3");
    cr_expect_eq(sl_capture_sink_count(dlq), 0);
}

Test(engine, composite_identifier_of_another_partition_fails_the_whole_batch, .init = setup,
     .fini = teardown, .timeout = 60)
{
    static const char *const v[] = {
        "{\"batchItemFailures\":[{\"itemIdentifier\":{\"partition\":\"t-1\",\"offset\":3}}]}",
    };
    struct replies r = { v, 1, 0 };

    start_replies(&r, "    report_batch_item_failures: true\n    maximum_retry_attempts: 0\n"
                      "    on_failure: dlq\n");
    expect_whole_batch_dead_lettered("Runtime.InvalidResponse");
}

Test(engine, identifier_ending_in_a_record_id_is_not_a_match, .init = setup, .fini = teardown,
     .timeout = 60)
{
    /* once accepted as "<topic>-<partition>-<offset>", and as anything
     * ending in "-3": an identifier must name a record exactly */
    static const char *const v[] = {
        "{\"batchItemFailures\":[{\"itemIdentifier\":\"t-0-3\"}]}",
        "{}",
    };
    struct replies r = { v, 2, 0 };

    start_replies(&r, "    report_batch_item_failures: true\n    maximum_retry_attempts: 0\n"
                      "    on_failure: dlq\n");
    expect_whole_batch_dead_lettered("Runtime.InvalidResponse");
}

Test(engine, invalid_json_response_fails_the_batch_when_reporting_item_failures,
     .init = setup, .fini = teardown, .timeout = 60)
{
    static const char *const v[] = { "{\"batchItemFailures\":[", "{}" };
    struct replies r = { v, 2, 0 };

    start_replies(&r, "    report_batch_item_failures: true\n    maximum_retry_attempts: 0\n"
                      "    on_failure: dlq\n");
    expect_whole_batch_dead_lettered("Runtime.InvalidResponse");
}

Test(engine, invalid_json_response_is_a_success_without_item_failure_reporting,
     .init = setup, .fini = teardown, .timeout = 60)
{
    static const char *const v[] = { "{\"batchItemFailures\":[" };
    struct replies r = { v, 1, 0 };

    start_replies(&r, "    maximum_retry_attempts: 0\n    on_failure: dlq\n");
    pump_until(5, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5");
    cr_expect_eq(sl_memory_events(src), 1);
    cr_expect_eq(sl_capture_sink_count(dlq), 0);
}

Test(engine, empty_response_is_a_success_when_reporting_item_failures, .init = setup,
     .fini = teardown, .timeout = 60)
{
    static const char *const v[] = { "" };
    struct replies r = { v, 1, 0 };

    start_replies(&r, "    report_batch_item_failures: true\n    maximum_retry_attempts: 0\n"
                      "    on_failure: dlq\n");
    pump_until(5, 20000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5");
    cr_expect_eq(sl_capture_sink_count(dlq), 0);
}

Test(engine, kafka_unlimited_retries_with_on_failure_are_capped_at_10, .init = setup,
     .fini = teardown, .timeout = 60)
{
    static const char *const yaml =
        "functions:\n  f: { handler: /bin/true }\n"
        "sinks:\n  dlq: { type: file, path: /tmp/x.jsonl }\n"
        "sources:\n"
        "  capped:   { type: kafka, function: f, brokers: x:1, topics: t, on_failure: dlq }\n"
        "  nodest:   { type: kafka, function: f, brokers: x:1, topics: t }\n"
        "  set:      { type: kafka, function: f, brokers: x:1, topics: t, on_failure: dlq,"
        " maximum_retry_attempts: 50 }\n"
        "  pg:       { type: postgres, function: f, dsn: 'host=x', publication: p, slot: s,"
        " on_failure: dlq }\n";
    struct sl_diags d;

    sl_diags_init(&d, "caps.yaml");
    cr_assert_eq(sl_config_load_buffer("caps.yaml", dir, yaml, strlen(yaml), &sl_registry,
                                       &conf, &d), 0, "%s", d.n ? d.v[0].msg : "");
    sl_diags_destroy(&d);
    cr_assert_eq(conf->nsources, 4);
    cr_expect_eq(sl_source_max_retries(&conf->sources[0]), 10);
    cr_expect_eq(sl_source_max_retries(&conf->sources[1]), -1, "no destination: until success");
    cr_expect_eq(sl_source_max_retries(&conf->sources[2]), 50, "a set limit is kept");
    cr_expect_eq(sl_source_max_retries(&conf->sources[3]), -1, "Postgres is not capped");
}

Test(engine, queue_partial_failure_acks_the_rest_and_redrives_after_max_receives,
     .init = setup, .fini = teardown, .timeout = 60)
{
    json_t *dl[4];

    start("    type: redis\n    url: redis://x\n    key: q\n    batch_size: 3\n"
          "    maximum_batching_window_ms: 20\n    report_batch_item_failures: true\n"
          "    visibility_timeout_s: 0\n    max_receive_count: 2\n    on_failure: dlq\n",
          SL_CLASS_QUEUE);
    push("", "m1", NULL);
    push("", "m2", "\"poison\":true,\"mode\":\"partial\"");
    push("", "m3", NULL);
    pump_until(3, 20000);
    cr_expect_str_eq(checkpoints(), "m1 m3 m2",
                     "m1 and m3 acked first, m2 acked only after its redrive");
    cr_assert_eq(dead_letters(dl, 4), 1);
    /* as an SQS dead-letter queue holds it: the original message, unwrapped */
    {
        json_t *orig = json_loads("{\"id\":\"m2\",\"poison\":true,\"mode\":\"partial\"}", 0,
                                  NULL);
        cr_expect(json_equal(dl[0], orig), "the sink holds the message as it was");
        json_decref(orig);
    }
    cr_expect_eq(sl_memory_events(src), 2, "m2 ran twice (receives 1 and 2), then was redriven");
    json_decref(dl[0]);
}

Test(engine, old_records_are_dead_lettered_by_age, .init = setup, .fini = teardown,
     .timeout = 60)
{
    json_t *dl[4];
    struct timespec ts;

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 5\n"
          "    maximum_batching_window_ms: 0\n    maximum_record_age_s: 60\n"
          "    on_failure: dlq\n", SL_CLASS_STREAM);
    clock_gettime(CLOCK_REALTIME, &ts);
    sl_memory_push(src, "p0", "old", "{\"id\":\"old\",\"poison\":true}",
                   (int64_t)ts.tv_sec * 1000 - 3600 * 1000);
    pump_until(1, 20000);
    cr_expect_str_eq(checkpoints(), "old");
    cr_assert_eq(dead_letters(dl, 4), 1);
    cr_expect_str_eq(condition(dl[0]), "RecordAgeExceeded");
    json_decref(dl[0]);
}

Test(engine, lanes_run_in_parallel_but_each_in_order, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *const *ids;
    size_t n;
    int last_a = 0, last_b = 0, ok = 1;

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 1\n"
          "    maximum_batching_window_ms: 0\n", SL_CLASS_STREAM);
    for (int i = 1; i <= 5; i++) {
        char a[16], b[16];
        snprintf(a, sizeof(a), "a%d", i);
        snprintf(b, sizeof(b), "b%d", i);
        push("pa", a, i == 2 ? "\"fail_times\":1" : NULL);
        push("pb", b, NULL);
    }
    pump_until(10, 30000);
    n = sl_memory_checkpointed(src, &ids);
    cr_assert_eq(n, 10, "%s", checkpoints());
    for (size_t i = 0; i < n; i++) {
        int k = atoi(ids[i] + 1);
        if (ids[i][0] == 'a')
            ok &= k == ++last_a;
        else
            ok &= k == ++last_b;
    }
    cr_expect(ok, "a lane checkpointed out of order: %s", checkpoints());
}

static int drained;

static void on_drained(void *arg)
{
    (void)arg;
    drained++;
}

Test(engine, graceful_stop_finishes_the_batch_in_flight_and_starts_no_other, .init = setup,
     .fini = teardown, .timeout = 60)
{
    double end;
    struct timeval tick = { 0, 10000 };

    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 2\n"
          "    maximum_batching_window_ms: 50\n", SL_CLASS_STREAM);
    push("p0", "1", "\"sleep_ms\":800");
    push("p0", "2", NULL);
    push("p0", "3", NULL);
    push("p0", "4", NULL);
    /* the first batch (1, 2) is in flight once the environment is up */
    end = now_ms() + 20000;
    while (sl_memory_events(src) < 1 && now_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    cr_assert_eq(sl_memory_events(src), 1);
    sl_engine_stop(engine, on_drained, NULL);
    cr_expect_eq(drained, 0, "a batch is still in flight");
    end = now_ms() + 20000;
    while (!drained && now_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    cr_assert_eq(drained, 1, "the stop never completed");
    cr_expect_str_eq(checkpoints(), "1 2", "the batch in flight is final; 3 and 4 never ran: %s", checkpoints());
    cr_expect_eq(sl_memory_events(src), 1);
    cr_expect_eq(sl_source_outstanding(src), 2, "3 and 4 stay for redelivery: %zu", sl_source_outstanding(src));
}

Test(engine, freeing_the_engine_with_a_batch_in_flight_leaves_its_reply_harmless, .init = setup,
     .fini = teardown, .timeout = 60)
{
    double end = now_ms() + 20000;
    struct timeval tick = { 0, 10000 };

    /* what a second SIGTERM does: the engine goes before the functions
     * whose invocation still holds the batch; run under SANITIZE=1 */
    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 1\n"
          "    maximum_batching_window_ms: 0\n", SL_CLASS_STREAM);
    push("p0", "1", "\"sleep_ms\":300");
    while (sl_memory_events(src) < 1 && now_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    cr_assert_eq(sl_memory_events(src), 1);
    sl_engine_free(engine);
    engine = NULL;
    src = NULL;
    /* the invocation ends and reports to the orphaned batch: before the
     * fix that was a use after free (ASan) or a glibc double-free abort */
    sl_functions_free(fns);
    fns = NULL;
}

Test(engine, splitting_a_batch_does_not_spend_the_retry_quota, .init = setup, .fini = teardown,
     .timeout = 90)
{
    json_t *dl[8], *recs;
    size_t n;
    char id[16];

    /* no retries at all: only the poison record, once alone, is given up */
    start("    type: kafka\n    brokers: x:1\n    topics: t\n    batch_size: 8\n"
          "    maximum_batching_window_ms: 20\n    maximum_retry_attempts: 0\n"
          "    bisect_batch_on_function_error: true\n    on_failure: dlq\n", SL_CLASS_STREAM);
    for (int i = 1; i <= 8; i++) {
        snprintf(id, sizeof(id), "%d", i);
        push("p0", id, i == 3 ? "\"poison\":true" : NULL);
    }
    pump_until(8, 60000);
    cr_expect_str_eq(checkpoints(), "1 2 3 4 5 6 7 8");
    n = dead_letters(dl, 8);
    cr_assert_eq(n, 1, "%zu envelopes", n);
    recs = payload_records(dl[0]);
    cr_expect_eq(json_array_size(recs), 1, "good records were dead-lettered with the poison one");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "id")), "3");
    json_decref(dl[0]);
}
