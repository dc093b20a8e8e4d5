/* Kafka source against the real broker: order per partition under
 * retries, order per key with parallelization_factor, bisect down to a
 * poison record, partial batch failure, record age, records lost to
 * retention, filters, and clear errors for bad patterns and topics.
 * The broker-restart, SIGKILL and two-instance tests are in
 * test_kafka_source_faults.c. */
#include "test_kafka_source.h"

static struct kt t;
static struct kline lines[20000];

static void teardown(void)
{
    kt_cleanup(&t);
}

TestSuite(kafka_source, .fini = teardown, .timeout = 150);

/* ms as Lambda writes times in on-failure records: 2019-11-14T00:38:04.835Z */
static void iso_ms(int64_t ms, char *buf, size_t n)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + strlen(buf), n - strlen(buf), ".%03dZ", (int)(ms % 1000));
}

/* An on-failure record in Lambda's shape for Kafka (lambda-spec.md 1.7,
 * the SQS/SNS/S3 variant): requestContext, responseContext, version,
 * timestamp and KafkaBatchInfo whose recordsInfo names `part` and agrees
 * with the records of the event in `payload`, which must be `part`'s
 * only. Returns the payload's records. */
static json_t *check_kafka_record(json_t *dl, const char *part, const char *brokers)
{
    json_t *rc = json_object_get(dl, "requestContext"), *info = json_object_get(dl, "KafkaBatchInfo");
    json_t *ri = json_object_get(json_object_get(info, "recordsInfo"), part);
    json_t *payload = json_object_get(dl, "payload");
    json_t *recs = json_object_get(json_object_get(payload, "records"), part), *first, *last;
    char off[32], ts[64], *text;

    cr_assert(json_is_object(rc) && json_is_object(info) && json_is_object(ri),
              "not Lambda's Kafka on-failure record");
    cr_assert(json_string_length(json_object_get(rc, "requestId")) > 0);
    cr_assert(strstr(json_string_value(json_object_get(rc, "functionArn")), ":function:rec"));
    cr_assert_str_eq(json_string_value(json_object_get(dl, "version")), "1.0");
    cr_assert(json_is_string(json_object_get(dl, "timestamp")));
    cr_assert_eq(json_object_size(json_object_get(info, "recordsInfo")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(info, "bootstrapServers")), brokers);
    cr_assert_str_eq(json_string_value(json_object_get(payload, "eventSource")),
                     "SelfManagedKafka");
    cr_assert(json_array_size(recs) > 0, "no records of %s in the payload", part);
    cr_assert_eq(json_integer_value(json_object_get(info, "batchSize")),
                 (json_int_t)json_array_size(recs));
    /* payloadSize: the bytes of the event the function got */
    text = json_dumps(payload, JSON_COMPACT);
    cr_assert_eq(json_integer_value(json_object_get(info, "payloadSize")),
                 (json_int_t)strlen(text), "payloadSize %lld, event %zu bytes",
                 (long long)json_integer_value(json_object_get(info, "payloadSize")), strlen(text));
    free(text);
    first = json_array_get(recs, 0);
    last = json_array_get(recs, json_array_size(recs) - 1);
    snprintf(off, sizeof(off), "%lld", (long long)json_integer_value(json_object_get(first, "offset")));
    cr_assert_str_eq(json_string_value(json_object_get(ri, "firstRecordOffset")), off);
    snprintf(off, sizeof(off), "%lld", (long long)json_integer_value(json_object_get(last, "offset")));
    cr_assert_str_eq(json_string_value(json_object_get(ri, "lastRecordOffset")), off);
    iso_ms(json_integer_value(json_object_get(first, "timestamp")), ts, sizeof(ts));
    cr_assert_str_eq(json_string_value(json_object_get(ri, "firstRecordTimestamp")), ts);
    iso_ms(json_integer_value(json_object_get(last, "timestamp")), ts, sizeof(ts));
    cr_assert_str_eq(json_string_value(json_object_get(ri, "lastRecordTimestamp")), ts);
    return recs;
}

/* Per partition: offsets strictly increasing and exactly 0..n-1. */
static void assert_in_order(const struct kline *v, size_t n, int parts, long long per_part)
{
    long long next[16] = { 0 };

    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(v[i].partition, parts);
        cr_assert_eq(v[i].offset, next[v[i].partition],
                     "partition %d: offset %lld after %lld (line %zu)", v[i].partition,
                     v[i].offset, next[v[i].partition] - 1, i);
        next[v[i].partition]++;
    }
    for (int p = 0; p < parts; p++)
        cr_assert_eq(next[p], per_part, "partition %d: %lld records, want %lld", p, next[p],
                     per_part);
}

Test(kafka_source, order_per_partition_holds_under_retries)
{
    rd_kafka_t *rk;
    char v[64];
    size_t n;

    kt_init(&t, "order");
    kt_create_topic(&t, t.topic, 4);
    rk = kt_producer(&t);
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 150; i++) {
            /* every 25th record fails its first delivery to a process */
            snprintf(v, sizeof(v), "{\"i\":%d%s}", i, i % 25 == 7 ? ",\"flaky\":1" : "");
            kt_produce(rk, t.topic, p, NULL, v, 0);
        }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, "FAILS: @DIR@/fails.txt, ",
              "    batch_size: 20\n    maximum_batching_window_ms: 50ms\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 600, 150, 90), 600, "not every record was processed; see %s",
                 t.log);
    usleep(300000);
    n = kt_lines(t.out, lines, 20000);
    /* a failed batch logs nothing, so every record appears once, in order */
    assert_in_order(lines, n, 4, 150);
    cr_assert_geq(kt_count_lines(t.dir, "fails.txt"), 24, "fewer failed invocations than flaky "
                  "records: the test proves nothing");
}

Test(kafka_source, parallelization_factor_keeps_order_per_key)
{
    rd_kafka_t *rk;
    char v[64], k[16];
    long long last[16];
    size_t n, count[16] = { 0 };
    int pids[64], npids = 0;

    kt_init(&t, "pf");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 640; i++) {
        snprintf(k, sizeof(k), "k%d", i % 16);
        snprintf(v, sizeof(v), "{\"i\":%d%s}", i, i % 50 == 3 ? ",\"flaky\":1" : "");
        kt_produce(rk, t.topic, 0, k, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, "SLEEP_MS: 30, FAILS: @DIR@/fails.txt, ",
              "    batch_size: 10\n    maximum_batching_window_ms: 20ms\n"
              "    parallelization_factor: 4\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 640, 640, 120), 640, "not every record was processed; see %s",
                 t.log);
    n = kt_lines(t.out, lines, 20000);
    cr_assert_eq(n, 640, "%zu lines: duplicates without a crash", n);
    for (int i = 0; i < 16; i++)
        last[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int key = atoi(lines[i].key + 1), seen = 0;
        cr_assert_gt(lines[i].offset, last[key], "key %s: offset %lld after %lld", lines[i].key,
                     lines[i].offset, last[key]);
        cr_assert_eq(lines[i].offset % 16, key, "record %lld under key %s", lines[i].offset,
                     lines[i].key);
        last[key] = lines[i].offset;
        count[key]++;
        for (int p = 0; p < npids; p++)
            seen |= pids[p] == lines[i].pid;
        if (!seen && npids < 64)
            pids[npids++] = lines[i].pid;
    }
    for (int i = 0; i < 16; i++)
        cr_assert_eq(count[i], 40, "key k%d: %zu records", i, count[i]);
    cr_assert_gt(npids, 1, "one environment did everything: the lanes never ran in parallel");
    cr_assert_geq(kt_count_lines(t.dir, "fails.txt"), 13, "no retries: the test proves nothing");
}

Test(kafka_source, poison_record_is_bisected_out_to_the_dlq)
{
    rd_kafka_t *rk;
    char v[64];
    json_t *dl[8];
    size_t n, ndl;
    json_t *recs, *resp, *info;
    char part[300], ts[64];
    int64_t ts37 = (int64_t)time(NULL) * 1000 - 5123;

    kt_init(&t, "poison");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 100; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d%s}", i, i == 37 ? ",\"poison\":true" : "");
        kt_produce(rk, t.topic, 0, NULL, v, i == 37 ? ts37 : 0);
    }
    kt_flush(rk);
    /* 100 -> 50 -> 25 -> 13 -> 7 -> 4 -> 2 -> 1: the halvings do not spend
     * the retry quota, so one retry of the record alone is all it gets */
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 100\n    maximum_batching_window_ms: 2s\n"
              "    bisect_batch_on_function_error: true\n    maximum_retry_attempts: 1\n"
              "    on_failure: dlq\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 99, 100, 100), 99, "the 99 good records were not processed");
    for (int i = 0; i < 600 && th_count_jsonl(t.dlq) == 0; i++)
        usleep(100000);
    usleep(500000);
    ndl = th_read_jsonl(t.dlq, dl, 8);
    cr_assert_eq(ndl, 1, "%zu dead-letter envelopes", ndl);
    snprintf(part, sizeof(part), "%s-0", t.topic);
    recs = check_kafka_record(dl[0], part, t.brokers);
    cr_assert_eq(json_array_size(recs), 1, "the record holds %zu records",
                 json_array_size(recs));
    /* the payload itself is in the record: offset 37, produced at ts37 */
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(recs, 0), "offset")), 37);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(recs, 0), "partition")), 0);
    info = json_object_get(json_object_get(json_object_get(dl[0], "KafkaBatchInfo"),
                                           "recordsInfo"), part);
    cr_assert_str_eq(json_string_value(json_object_get(info, "firstRecordOffset")), "37");
    cr_assert_str_eq(json_string_value(json_object_get(info, "lastRecordOffset")), "37");
    iso_ms(ts37, ts, sizeof(ts));
    cr_assert_str_eq(json_string_value(json_object_get(info, "firstRecordTimestamp")), ts);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(dl[0], "KafkaBatchInfo"),
                                                    "batchSize")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(dl[0], "requestContext"),
                                                       "condition")), "RetryAttemptsExhausted");
    /* at least the record alone and its one retry */
    cr_assert_geq(json_integer_value(json_object_get(json_object_get(dl[0], "requestContext"),
                                                     "approximateInvokeCount")), 2);
    resp = json_object_get(dl[0], "responseContext");
    cr_assert_eq(json_integer_value(json_object_get(resp, "statusCode")), 200);
    cr_assert_str_eq(json_string_value(json_object_get(resp, "executedVersion")), "$LATEST");
    cr_assert_str_eq(json_string_value(json_object_get(resp, "functionError")), "Unhandled");
    json_decref(dl[0]);
    n = kt_lines(t.out, lines, 20000);
    cr_assert_eq(n, 99, "%zu lines for 99 good records", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq(lines[i].offset, 37);
}

Test(kafka_source, partial_batch_failure_resumes_from_the_first_failed_record)
{
    rd_kafka_t *rk;
    char v[64];
    size_t n;

    kt_init(&t, "partial");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 50; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d%s}", i, i == 20 || i == 30 ? ",\"flaky\":1" : "");
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, "PARTIAL: 1, ",
              "    batch_size: 50\n    maximum_batching_window_ms: 2s\n"
              "    report_batch_item_failures: true\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 50, 50, 60), 50, "not every record was processed");
    usleep(300000);
    n = kt_lines(t.out, lines, 20000);
    /* records before the failed one are never redelivered */
    assert_in_order(lines, n, 1, 50);
}

Test(kafka_source, composite_item_identifier_resumes_from_the_named_record)
{
    rd_kafka_t *rk;
    json_t *dl[8];
    char v[64];
    size_t n;

    /* {"itemIdentifier":{"partition":"<topic>-0","offset":N}}, as Powertools'
     * BatchProcessor(EventType.Kafka) answers; with maximum_retry_attempts 0
     * and on_failure, a response sluice did not understand would send the
     * batch to the dead-letter file instead */
    kt_init(&t, "composite");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 50; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d%s}", i, i == 20 ? ",\"flaky\":1" : "");
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, "PARTIAL: composite, ",
              "    batch_size: 50\n    maximum_batching_window_ms: 2s\n"
              "    report_batch_item_failures: true\n    maximum_retry_attempts: 1\n"
              "    on_failure: dlq\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 50, 50, 60), 50, "not every record was processed");
    usleep(300000);
    n = kt_lines(t.out, lines, 20000);
    assert_in_order(lines, n, 1, 50);
    cr_assert_eq(th_read_jsonl(t.dlq, dl, 8), 0, "nothing was dead-lettered");
}

Test(kafka_source, records_older_than_maximum_record_age_go_to_on_failure)
{
    rd_kafka_t *rk;
    char v[64];
    json_t *dl[8];
    size_t ndl, total = 0;
    int64_t old = (int64_t)time(NULL) * 1000 - 3600 * 1000;

    kt_init(&t, "age");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 10; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d,\"poison\":true}", i);
        kt_produce(rk, t.topic, 0, NULL, v, old);
    }
    for (int i = 10; i < 20; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d}", i);
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 10\n    maximum_batching_window_ms: 1s\n"
              "    maximum_record_age_s: 60\n    on_failure: dlq\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 10, 20, 60), 10, "the fresh records were not processed");
    ndl = th_read_jsonl(t.dlq, dl, 8);
    cr_assert_geq(ndl, 1);
    for (size_t i = 0; i < ndl; i++) {
        char part[300];
        json_t *recs;
        snprintf(part, sizeof(part), "%s-0", t.topic);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(dl[i],
                         "requestContext"), "condition")), "RecordAgeExceeded");
        recs = check_kafka_record(dl[i], part, t.brokers);
        total += json_array_size(recs);
        json_decref(dl[i]);
    }
    cr_assert_eq(total, 10, "%zu old records dead-lettered", total);
}

/* Records deleted (as retention would) while sluice was down are reported
 * to on_failure, not skipped silently. */
Test(kafka_source, records_lost_to_retention_are_reported)
{
    rd_kafka_t *rk;
    rd_kafka_conf_t *c;
    char v[64], errstr[256];
    json_t *dl[8];
    size_t ndl;

    kt_init(&t, "expired");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 20; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d}", i);
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 10\n    maximum_batching_window_ms: 100ms\n    on_failure: dlq\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 20, 100, 60), 20);
    kt_stop(t.sluice, SIGTERM);
    t.sluice = 0;
    /* 30 more, of which the first 25 are deleted before sluice comes back */
    rk = kt_producer(&t);
    for (int i = 20; i < 50; i++) {
        snprintf(v, sizeof(v), "{\"i\":%d}", i);
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    c = rd_kafka_conf_new();
    kt_conf_set(c, "bootstrap.servers", t.brokers);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_DeleteRecords_t *dr;
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_event_t *ev;
        rd_kafka_topic_partition_list_add(l, t.topic, 0)->offset = 45;
        dr = rd_kafka_DeleteRecords_new(l);
        rd_kafka_DeleteRecords(rk, &dr, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 30000);
        cr_assert(ev && !rd_kafka_event_error(ev), "DeleteRecords: %s",
                  ev ? rd_kafka_event_error_string(ev) : "timeout");
        rd_kafka_event_destroy(ev);
        rd_kafka_DeleteRecords_destroy(dr);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_queue_destroy(q);
    }
    rd_kafka_destroy(rk);
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 25, 100, 60), 25, "records after the deleted ones not processed");
    for (int i = 0; i < 100 && th_count_jsonl(t.dlq) == 0; i++)
        usleep(100000);
    ndl = th_read_jsonl(t.dlq, dl, 8);
    cr_assert_eq(ndl, 1, "%zu envelopes for the deleted range", ndl);
    {
        char part[300];
        json_t *info = json_object_get(dl[0], "KafkaBatchInfo"), *ri;
        snprintf(part, sizeof(part), "%s-0", t.topic);
        ri = json_object_get(json_object_get(info, "recordsInfo"), part);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(dl[0],
                         "requestContext"), "condition")), "RecordExpired");
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(dl[0],
                     "requestContext"), "approximateInvokeCount")), 0);
        cr_assert(json_is_null(json_object_get(dl[0], "responseContext")),
                  "the function never ran: responseContext null, as Lambda's "
                  "MaximumPayloadSizeExceeded");
        cr_assert_str_eq(json_string_value(json_object_get(ri, "firstRecordOffset")), "20");
        cr_assert_str_eq(json_string_value(json_object_get(ri, "lastRecordOffset")), "44");
        cr_assert_eq(json_integer_value(json_object_get(info, "batchSize")), 25);
        cr_assert_str_eq(json_string_value(json_object_get(info, "bootstrapServers")), t.brokers);
        cr_assert_null(json_object_get(dl[0], "payload"), "the records are gone");
    }
    json_decref(dl[0]);
}

Test(kafka_source, filter_skips_records_and_moves_the_offset_past_them)
{
    rd_kafka_t *rk;
    char v[64];
    size_t n;

    kt_init(&t, "filter");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 60; i++) {
        if (i % 3 == 2)
            snprintf(v, sizeof(v), "not json %d", i);
        else
            snprintf(v, sizeof(v), "{\"type\":\"%s\",\"i\":%d}", i % 3 ? "order" : "other", i);
        kt_produce(rk, t.topic, 0, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 10\n    maximum_batching_window_ms: 100ms\n"
              "    filter_criteria: [ { value: { type: [order] } } ]\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 20, 100, 60), 20);
    sleep(2);
    n = kt_lines(t.out, lines, 20000);
    cr_assert_eq(n, 20);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(lines[i].offset % 3, 1, "offset %lld passed the filter", lines[i].offset);
    /* a restart starts after the last (filtered) record: nothing again */
    kt_stop(t.sluice, SIGTERM);
    t.sluice = kt_start(&t, t.cfg);
    sleep(4);
    cr_assert_eq(kt_lines(t.out, lines, 20000), 20, "records delivered again after a restart");
}

/* Lambda's Kafka data keys: `key` and `value` are matched decoded, parsed
 * when JSON, as the plain string when text. Offsets 4k: key "user-42" and
 * an order (pattern 1), 4k+1: a JSON key {"tenant":"a"} (pattern 2), 4k+2:
 * key "user-7" and an order (no pattern), 4k+3: no key and a plain-text
 * value (pattern 3). The old filter matched `key` against its base64 and
 * left a plain-text value out: it delivered none of them. */
Test(kafka_source, filter_matches_decoded_key_and_plain_text_value)
{
    rd_kafka_t *rk;
    size_t n;

    kt_init(&t, "filterkey");
    kt_create_topic(&t, t.topic, 1);
    rk = kt_producer(&t);
    for (int i = 0; i < 59; i++) {
        static const char *keys[] = { "user-42", "{\"tenant\":\"a\"}", "user-7", NULL };
        static const char *values[] = { "{\"type\":\"order\"}", "plain text",
                                        "{\"type\":\"order\"}", "keep me" };
        kt_produce(rk, t.topic, 0, keys[i % 4], values[i % 4], 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 10\n    maximum_batching_window_ms: 100ms\n"
              "    filter_criteria:\n"
              "      - { key: [ user-42 ], value: { type: [ order ] } }\n"
              "      - '{\"key\": {\"tenant\": [\"a\"]}}'\n"
              "      - { value: [ keep me ] }\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, 44, 100, 60), 44);
    sleep(2);
    n = kt_lines(t.out, lines, 20000);
    cr_assert_eq(n, 44, "%zu records delivered, want the 44 matches", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq(lines[i].offset % 4, 2, "offset %lld passed the filter", lines[i].offset);
    /* the last record (58) was filtered: a restart delivers nothing again,
     * so the committed offset moved past the skipped records */
    kt_stop(t.sluice, SIGTERM);
    t.sluice = kt_start(&t, t.cfg);
    sleep(4);
    cr_assert_eq(kt_lines(t.out, lines, 20000), 44, "records delivered again after a restart");
}

Test(kafka_source, bad_filter_patterns_and_topics_are_clear_errors)
{
    char cmd[2000], buf[4096];
    FILE *p;
    size_t n;
    int rc;

    kt_init(&t, "bad");
    kt_config(&t, t.cfg, t.out, NULL,
              "    filter_criteria: [ { value: { price: [ { numeric: [\">\", \"x\"] } ] } } ]\n");
    snprintf(cmd, sizeof(cmd), "%s/%s/sluice lint %s 2>&1", t.root, th_build(), t.cfg);
    p = popen(cmd, "r");
    n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    rc = pclose(p);
    cr_assert_neq(rc, 0, "lint accepted a bad pattern: %s", buf);
    cr_assert(strstr(buf, "filter_criteria"), "lint output does not name the key: %s", buf);

    /* a topic name Kafka would refuse */
    {
        FILE *f = fopen(t.cfg, "r");
        char yaml[4096], *at;
        n = fread(yaml, 1, sizeof(yaml) - 1, f);
        yaml[n] = '\0';
        fclose(f);
        kt_config(&t, t.cfg, t.out, NULL, NULL);
        f = fopen(t.cfg, "r");
        n = fread(yaml, 1, sizeof(yaml) - 1, f);
        yaml[n] = '\0';
        fclose(f);
        at = strstr(yaml, "topics: [");
        cr_assert_not_null(at);
        f = fopen(t.cfg, "w");
        fwrite(yaml, 1, (size_t)(at - yaml), f);
        fprintf(f, "topics: [\"bad topic!\"]%s", strchr(at, '\n'));
        fclose(f);
    }
    p = popen(cmd, "r");
    n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    rc = pclose(p);
    cr_assert_neq(rc, 0, "lint accepted a bad topic name: %s", buf);
    cr_assert(strstr(buf, "bad topic!"), "lint output does not name the topic: %s", buf);

    /* a well-formed topic that does not exist: a clear error in the log */
    kt_config(&t, t.cfg, t.out, NULL, NULL);
    t.sluice = kt_start(&t, t.cfg);
    cr_assert(kt_log_has(t.log, "does not exist", 30), "no clear error for an unknown topic");
}
