/* The web console in a real browser (tests/integration/console_browser.py:
 * Debian's headless Chromium through chromedriver and Selenium) against a
 * sluice with a Kafka, a Redis-queue and a Postgres source on the real
 * services, server.auth on. The script signs in with the token, waits for
 * non-zero rates on the overview, disables and enables the Kafka source
 * from its page (nothing is processed in between, then everything is),
 * redrives a dead-lettered Redis message from its page once the handler
 * is fixed, follows the live tail, and checks that hostile payloads and
 * handler output stay text. This test prepares the services and the
 * configuration, runs the script, and checks what it reports.
 *
 * SLUICE_CONSOLE_SHOTS=DIR keeps the screenshots there (docs/console/ is
 * made that way); otherwise they stay in the test's directory. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "test_kafka_source.h"

#define TOKEN "console-admin-7f3a9c"

static char dir[256], names[64];
static pid_t kid = -1;
static PGconn *db;

static void pgq(const char *q)
{
    PGresult *r = PQexec(db, q);

    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", q, PQerrorMessage(db));
    PQclear(r);
}

static void setup(void)
{
    snprintf(names, sizeof(names), "tcons%d_%ld", (int)getpid(), (long)time(NULL) % 100000);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-%s", names);
    cr_assert_eq(mkdir(dir, 01777), 0);
    chmod(dir, 01777);
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char q[400];

    if (kid > 0) {
        kill(kid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(kid, NULL, WNOHANG) == 0; i++)
            usleep(100000);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        kid = -1;
    }
    th_scan_logs(dir);
    if (db) {
        for (int i = 0; i < 100; i++) {
            PGresult *r;
            bool busy;

            snprintf(q, sizeof(q), "SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s' "
                     "AND active", names);
            r = PQexec(db, q);
            busy = PQntuples(r) > 0;
            PQclear(r);
            if (!busy)
                break;
            usleep(100000);
        }
        snprintf(q, sizeof(q), "SELECT pg_drop_replication_slot(slot_name) FROM "
                 "pg_replication_slots WHERE slot_name = '%s'", names);
        PQclear(PQexec(db, q));
        snprintf(q, sizeof(q), "DROP PUBLICATION IF EXISTS %s", names);
        PQclear(PQexec(db, q));
        snprintf(q, sizeof(q), "DROP TABLE IF EXISTS public.%s", names);
        PQclear(PQexec(db, q));
        PQfinish(db);
        db = NULL;
    }
    if (!getenv("SLUICE_TEST_KEEP")) {
        snprintf(q, sizeof(q), "rm -rf '%s'", dir);
        if (system(q) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

TestSuite(console, .init = setup, .fini = teardown, .timeout = 600);

static const char handler_py[] =
    "import json, os\n"
    "\n"
    "def handler(event, context):\n"
    "    for rec in event.get('Records', []):\n"
    "        body = rec.get('body')\n"
    "        if body is None:\n"
    "            continue\n"
    "        if body.startswith('poison') and not os.path.exists('/var/task/healed'):\n"
    "            raise Exception('poison message')\n"
    "        if body.startswith('poison') or body.startswith('tailme'):\n"
    "            print('handled ' + body, flush=True)\n"
    "    return {}\n";

Test(console, browser_drives_overview_source_dead_letters_and_tail)
{
    const char *pgdsn = getenv("SLUICE_TEST_PG"), *shots = getenv("SLUICE_CONSOLE_SHOTS");
    char rhost[128], rurl[300], cfg[400], log[400], code[400], path[1400], q[4096], top[1024];
    char settings[400], result[400], rkey[96], dlqkey[96];
    int rport, port = th_free_port(), st;
    struct kt kt;
    FILE *f;
    json_t *s, *r;
    json_error_t je;

    cr_assert(pgdsn && *pgdsn, "SLUICE_TEST_PG is not set: eval \"$(tests/services env)\"");
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport), "SLUICE_TEST_REDIS is not set");
    cr_assert(access("/usr/bin/chromium", X_OK) == 0 && access("/usr/bin/chromedriver", X_OK) == 0,
              "chromium and chromium-driver are not installed (tests/deps)");
    cr_assert_not_null(getcwd(top, sizeof(top)));
    snprintf(path, sizeof(path), "%s/tests/.layers/selenium/selenium", top);
    cr_assert(access(path, R_OK) == 0, "selenium is not in tests/.layers (tests/deps)");
    kt_init(&kt, "console");
    kt_create_topic(&kt, kt.topic, 1);

    db = PQconnectdb(pgdsn);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PQclear(PQexec(db, "SET client_min_messages = warning"));
    snprintf(q, sizeof(q), "CREATE TABLE public.%s (id int PRIMARY KEY, v text)", names);
    pgq(q);

    snprintf(code, sizeof(code), "%s/code", dir);
    cr_assert_eq(mkdir(code, 0755), 0);
    chmod(code, 0755);
    snprintf(path, sizeof(path), "%s/handler.py", code);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(handler_py, f);
    fclose(f);
    chmod(path, 0644);

    snprintf(rkey, sizeof(rkey), "%s:q", names);
    snprintf(dlqkey, sizeof(dlqkey), "%s:dlq", names);
    th_redis_url(rurl, sizeof(rurl), rhost, rport);
    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  work:\n"
            "    runtime: python\n"
            "    handler: handler.handler\n"
            "    code: %s\n"
            "    timeout_s: 20\n"
            "sources:\n"
            "  k:\n"
            "    type: kafka\n"
            "    function: work\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s-group\n"
            "    starting_position: TRIM_HORIZON\n"
            "    maximum_batching_window_ms: 100\n"
            "  r:\n"
            "    type: redis\n"
            "    function: work\n"
            "    url: %s\n"
            "    key: %s\n"
            "    batch_size: 1\n"
            "    visibility_timeout_s: 1\n"
            "    max_receive_count: 1\n"
            "    on_failure: dlq\n"
            "  p:\n"
            "    type: postgres\n"
            "    function: work\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [public.%s]\n"
            "sinks:\n"
            "  dlq: { type: redis, url: %s, key: %s }\n"
            "server:\n"
            "  listen: 127.0.0.1:%d\n"
            "  data_dir: %s/data\n"
            "  auth:\n"
            "    " TOKEN ": { bearer: true, functions: \"*\", scopes: \"invoke, read, admin\" }\n",
            code, kt.brokers, kt.topic, kt.topic, rurl, rkey, pgdsn, names, names, names, rurl,
            dlqkey, port, dir);
    fclose(f);
    kid = th_run_sluice(top, cfg, log);
    cr_assert_gt(kid, 0);
    for (int i = 0; i < 100 && !th_healthy(port); i++)
        usleep(100000);
    cr_assert(th_healthy(port), "sluice did not start; see %s", log);

    snprintf(settings, sizeof(settings), "%s/settings.json", dir);
    snprintf(result, sizeof(result), "%s/result.json", dir);
    s = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s}, s:{s:s, s:s}, s:s, s:s, s:s}",
                  "url", "", "token", TOKEN,
                  "kafka", "brokers", kt.brokers, "topic", kt.topic,
                  "redis", "url", rurl, "key", rkey, "dlq", "dlq",
                  "pg", "dsn", pgdsn, "table", names,
                  "code_dir", code, "shots", shots && *shots ? shots : dir, "result", result);
    snprintf(q, sizeof(q), "http://127.0.0.1:%d", port);
    json_object_set_new(s, "url", json_string(q));
    /* redis-cli takes the URL; its DLQ stream key is the sink's */
    json_object_set_new(json_object_get(s, "redis"), "dlq_key", json_string(dlqkey));
    cr_assert_eq(json_dump_file(s, settings, 0), 0);
    json_decref(s);

    snprintf(q, sizeof(q), "/usr/bin/python3 '%s/tests/integration/console_browser.py' '%s' "
             ">'%s/browser.log' 2>&1", top, settings, dir);
    st = system(q);
    snprintf(path, sizeof(path), "%s/browser.log", dir);
    {
        char *out = NULL;
        size_t n = 0;
        FILE *lf = fopen(path, "r");

        if (lf) {
            out = calloc(1, 65536);
            n = fread(out, 1, 65535, lf);
            fclose(lf);
        }
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the browser script failed:\n%.*s",
                  (int)n, out ? out : "");
        free(out);
    }

    r = json_load_file(result, 0, &je);
    cr_assert_not_null(r, "%s: %s", result, je.text);
    cr_expect(json_is_true(json_object_get(r, "ok")));
    cr_expect(json_is_true(json_object_get(r, "token_kept_in_session")));
    {
        json_t *rates = json_object_get(r, "overview_rates");
        const char *src[] = { "k", "r", "p" };

        for (size_t i = 0; i < 3; i++)
            cr_expect_gt(json_number_value(json_object_get(rates, src[i])), 0,
                         "records/s of %s on the overview", src[i]);
    }
    cr_expect_gt(json_number_value(json_object_get(r, "overview_invocations_per_s")), 0);
    cr_expect_gt(json_integer_value(json_object_get(r, "charts")), 0);
    cr_expect_eq(json_number_value(json_object_get(r, "disabled_processed")), 0,
                 "records processed while the source was disabled");
    cr_expect_geq(json_number_value(json_object_get(r, "enabled_processed")), 5);
    cr_expect_eq(json_integer_value(json_object_get(r, "batch_size")), 7);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "dlq_entry"), "kind")),
                     "message");
    cr_expect_geq(json_number_value(json_object_get(r, "redriven_processed")), 1);
    cr_expect_eq(json_array_size(json_object_get(r, "console_errors")), 0);
    cr_expect_not_null(json_string_value(json_object_get(r, "tail")));
    json_decref(r);
    kt_cleanup(&kt);
}
