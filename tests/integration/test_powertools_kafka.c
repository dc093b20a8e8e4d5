/* An unchanged Powertools for AWS Lambda (Python) function on a real Kafka
 * source: KafkaSelfManagedEventModel validates every event, BatchProcessor
 * (EventType.Kafka, KafkaRecordModel) answers with Lambda's composite
 * partial-failure identifiers, and poison records end in the on_failure
 * sink while every good record is handled (tests/integration/powertools.h,
 * fixtures/powertools/app.py). Needs root, tests/services and tests/deps. */
#include "test_kafka_source.h"
#include "powertools.h"

static struct kt t;

static void fini(void)
{
    kt_cleanup(&t);
}

TestSuite(powertools_kafka, .fini = fini, .timeout = 240);

Test(powertools_kafka, partial_failures_dead_letter_exactly_the_poison_records)
{
    static bool poison[PT_MAX_ID];
    static int total[PT_MAX_ID], first[PT_MAX_ID], dead[PT_MAX_ID];
    const int n = 60;
    char fns[4096], v[96];
    rd_kafka_t *rk;
    FILE *f;
    int good = 0, handled = 0, dl = 0;

    kt_init(&t, "powertools");
    pt_require_layer(t.root);
    poison[7] = poison[31] = poison[52] = poison[53] = true;
    kt_create_topic(&t, t.topic, 2);
    rk = kt_producer(&t);
    for (int i = 0; i < n; i++) {
        snprintf(v, sizeof(v), "{\"id\":%d,\"order\":\"o-%d\"%s}", i, i,
                 poison[i] ? ",\"poison\":true" : "");
        kt_produce(rk, t.topic, i % 2, NULL, v, 0);
        good += !poison[i];
    }
    kt_flush(rk);

    pt_function_yaml(fns, sizeof(fns), t.root, "kafka", NULL);
    f = fopen(t.cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "%s"
            "sources:\n"
            "  src:\n"
            "    type: kafka\n"
            "    function: pt\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s-group\n"
            "    batch_size: 100\n"
            "    maximum_batching_window_ms: 1s\n"
            "    report_batch_item_failures: true\n"
            "    bisect_batch_on_function_error: true\n"
            "    maximum_retry_attempts: 1\n"
            "    on_failure: dlq\n"
            "sinks:\n"
            "  dlq: { type: file, path: %s, fsync: false }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            fns, t.brokers, t.topic, t.topic, t.dlq, th_free_port(), t.dir);
    fclose(f);
    t.sluice = kt_start(&t, t.cfg);

    /* until every good record was handled and every poison one is in the sink */
    for (int i = 0; i < 1800; i++) {
        handled = dl = 0;
        pt_handled(t.log, total, first);
        pt_dead_letters(t.dlq, dead);
        for (int id = 0; id < n; id++) {
            handled += !poison[id] && total[id] > 0;
            dl += poison[id] && dead[id] > 0;
        }
        if (handled == good && dl == 4)
            break;
        usleep(100000);
    }
    usleep(500000); /* anything more that would come */
    cr_assert_eq(handled, good, "%d of %d good records handled; log %s", handled, good, t.log);
    cr_assert_eq(dl, 4, "%d of 4 poison records dead-lettered", dl);
    pt_assert_outcome(t.log, t.dlq, n, poison);
    /* the parser accepted every event: no invocation failed validation */
    cr_expect(!kt_log_has(t.log, "ValidationError", 0), "a parser model rejected an event");
    cr_expect(!kt_log_has(t.log, "Runtime.InvalidResponse", 0),
              "sluice refused Powertools' partial batch response");
    cr_expect(kt_log_has(t.log, "POWERTOOLS-BATCH", 0), "no batch was parsed");
}
