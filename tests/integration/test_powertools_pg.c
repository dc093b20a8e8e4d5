/* An unchanged Powertools for AWS Lambda (Python) function on a real
 * Postgres source, which sluice presents as a DynamoDB stream:
 * DynamoDBStreamModel validates every event (its images deserialised with
 * Powertools' own TypeDeserializer), BatchProcessor
 * (EventType.DynamoDBStreams) answers with the failed records'
 * SequenceNumbers, and the poison rows end in the on_failure sink while
 * every good row is handled once (tests/integration/powertools.h,
 * fixtures/powertools/app.py). Needs root, tests/services and tests/deps. */
#include "test_pg_source.h"
#include "powertools.h"

static void fini(void)
{
    pg_cleanup();
}

TestSuite(powertools_pg, .fini = fini, .timeout = 240);

Test(powertools_pg, partial_failures_dead_letter_exactly_the_poison_rows)
{
    static bool poison[PT_MAX_ID];
    static int total[PT_MAX_ID], first[PT_MAX_ID], dead[PT_MAX_ID];
    const int n = 60;
    char fns[4096], cfg[400], log[400], dlq[400], table[128];
    int handled = 0, dl = 0, good = 0;
    pid_t pid;
    FILE *f;

    pg_setup();
    pt_require_layer(root);
    poison[7] = poison[31] = poison[52] = poison[53] = true;
    snprintf(table, sizeof(table), "%s_orders", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", table);
    sql("CREATE TABLE %s (id int PRIMARY KEY, poison bool NOT NULL, item text)", table);

    snprintf(cfg, sizeof(cfg), "%s/pt.yaml", tdir);
    snprintf(log, sizeof(log), "%s/sluice.log", tdir);
    snprintf(dlq, sizeof(dlq), "%s/dlq.jsonl", tdir);
    pt_function_yaml(fns, sizeof(fns), root, "dynamodb", NULL);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "%s"
            "sources:\n"
            "  src:\n"
            "    type: postgres\n"
            "    function: pt\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [public.%s]\n"
            "    batch_size: 100\n"
            "    maximum_batching_window_ms: 1s\n"
            "    report_batch_item_failures: true\n"
            "    bisect_batch_on_function_error: true\n"
            "    maximum_retry_attempts: 1\n"
            "    on_failure: dlq\n"
            "sinks:\n"
            "  dlq: { type: file, path: %s, fsync: false }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            fns, dsn, names, names, table, dlq, th_free_port(), tdir);
    fclose(f);
    pid = run_sluice(cfg, log);
    wait_streaming(pid, 30000);

    /* a few transactions, so batches hold rows of several */
    for (int i = 0; i < n; i += 10) {
        char values[2048];
        size_t o = 0;
        for (int j = i; j < i + 10 && j < n; j++) {
            o += (size_t)snprintf(values + o, sizeof(values) - o, "%s(%d, %s, 'o-%d')",
                                  j > i ? ", " : "", j, poison[j] ? "true" : "false", j);
            good += !poison[j];
        }
        sql("INSERT INTO %s VALUES %s", table, values);
    }

    for (int i = 0; i < 1800; i++) {
        handled = dl = 0;
        pt_handled(log, total, first);
        pt_dead_letters(dlq, dead);
        for (int id = 0; id < n; id++) {
            handled += !poison[id] && total[id] > 0;
            dl += poison[id] && dead[id] > 0;
        }
        if (handled == good && dl == 4)
            break;
        usleep(100000);
    }
    usleep(500000); /* anything more that would come */
    cr_assert_eq(handled, good, "%d of %d good rows handled; log %s", handled, good, log);
    cr_assert_eq(dl, 4, "%d of 4 poison rows dead-lettered", dl);
    pt_assert_outcome(log, dlq, n, poison);
    cr_expect(!file_has(log, "ValidationError"), "a parser model rejected an event");
    cr_expect(!file_has(log, "Runtime.InvalidResponse"),
              "sluice refused Powertools' partial batch response");
    cr_expect(file_has(log, "POWERTOOLS-BATCH"), "no batch was parsed");
    stop_sluice(pid);
    pg_cleanup();
}
