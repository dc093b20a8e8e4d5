/* /metrics against Prometheus' own tools, and the alert rules and the
 * Grafana dashboard in deploy/ against a live sluice.
 *
 * A sluice with a Kafka, a Redis-queue and a Postgres source (all on real
 * servers) handles one record from each; its /metrics then goes through
 * `promtool check metrics` (Prometheus' naming lint: `_total` on counters,
 * base units, no abbreviations, HELP text) and through checks of our own:
 * one label per dimension (not "source/outcome" in one value) and every
 * family of every source present. Every metric the alert rules and the
 * dashboard query must be one a live sluice exports. The rules pass
 * `promtool check rules` and their unit tests (deploy/prometheus/
 * alerts.test.yml). Needs tests/services and promtool (tests/deps). */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <regex.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "test_kafka_source.h"

static char dir[256], names[64];
static pid_t kid = -1;
static PGconn *db;

static void setup(void)
{
    snprintf(names, sizeof(names), "tprom%d_%ld", (int)getpid(), (long)time(NULL) % 100000);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-%s", names);
    cr_assert_eq(mkdir(dir, 01777), 0);
    chmod(dir, 01777);
    signal(SIGPIPE, SIG_IGN);
}

static void pgq(const char *q)
{
    PGresult *r = PQexec(db, q);

    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", q, PQerrorMessage(db));
    PQclear(r);
}

static void teardown(void)
{
    char q[400];

    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        kid = -1;
    }
    th_scan_logs(dir);
    if (db) {
        /* the walsender goes with sluice; wait for the slot to be free */
        for (int i = 0; i < 100; i++) {
            PGresult *r;
            snprintf(q, sizeof(q), "SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s' "
                     "AND active", names);
            r = PQexec(db, q);
            bool busy = PQntuples(r) > 0;
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

TestSuite(prometheus, .init = setup, .fini = teardown, .timeout = 180);

/* `cmd`'s exit status (0..255, or -1), its output in `out`. */
static int run(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    size_t got = 0;
    int st;

    cr_assert_not_null(p, "%s", cmd);
    while (got + 1 < n) {
        size_t r = fread(out + got, 1, n - 1 - got, p);
        if (r == 0)
            break;
        got += r;
    }
    out[got] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* GET /metrics into `path`; true when it answered 200. */
static bool scrape(int port, const char *path)
{
    char cmd[600], out[64];

    snprintf(cmd, sizeof(cmd), "curl -s -o '%s' -w '%%{http_code}' http://127.0.0.1:%d/metrics",
             path, port);
    return run(cmd, out, sizeof(out)) == 0 && strcmp(out, "200") == 0;
}

/* The sample's value in the text, or -1 when absent. */
static double sample(const char *text, const char *series)
{
    const char *p = text;
    size_t n = strlen(series);

    while ((p = strstr(p, series))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

Test(prometheus, live_metrics_pass_promtool_and_feed_the_rules_and_dashboard)
{
    const char *pgdsn = getenv("SLUICE_TEST_PG");
    char rhost[128], rurl[300], cfg[400], log[400], prom[400], q[600], out[16384], top[1024];
    char series[300];
    int rport, port = th_free_port();
    struct kt kt;
    redisContext *rc;
    rd_kafka_t *rk;
    FILE *f;
    char *text = NULL;
    regex_t re;
    regmatch_t m[2];

    cr_assert(pgdsn && *pgdsn, "SLUICE_TEST_PG is not set: eval \"$(tests/services env)\"");
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport), "SLUICE_TEST_REDIS is not set");
    cr_assert_not_null(getcwd(top, sizeof(top)));
    kt_init(&kt, "prom");
    kt_create_topic(&kt, kt.topic, 2);

    db = PQconnectdb(pgdsn);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s", PQerrorMessage(db));
    PQclear(PQexec(db, "SET client_min_messages = warning"));
    snprintf(q, sizeof(q), "CREATE TABLE public.%s (id int PRIMARY KEY, v text)", names);
    pgq(q);

    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    snprintf(prom, sizeof(prom), "%s/metrics.txt", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  noop:\n"
            "    handler: %s/%s/test-handlers/kafka_noop\n"
            "    timeout_s: 20\n"
            "sources:\n"
            "  k:\n"
            "    type: kafka\n"
            "    function: noop\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s-group\n"
            "    starting_position: TRIM_HORIZON\n"
            "  r:\n"
            "    type: redis\n"
            "    function: noop\n"
            "    url: %s\n"
            "    key: %s\n"
            "  p:\n"
            "    type: postgres\n"
            "    function: noop\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [public.%s]\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            top, th_build(), kt.brokers, kt.topic, kt.topic,
            th_redis_url(rurl, sizeof(rurl), rhost, rport), names, pgdsn, names, names, names,
            port, dir);
    fclose(f);
    kid = th_run_sluice(top, cfg, log);
    cr_assert_gt(kid, 0);

    /* one record per source, once sluice is streaming from the slot */
    rk = kt_producer(&kt);
    kt_produce(rk, kt.topic, 0, "k0", "{\"n\":1}", 0);
    kt_flush(rk);
    rc = redisConnect(rhost, rport);
    cr_assert(rc && !rc->err);
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    freeReplyObject(redisCommand(rc, "XADD %s * body hello", names));
    redisFree(rc);

    /* wait until every source says succeeded >= 1 (the Postgres insert is
     * repeated until the slot streams it: one made before the slot exists
     * is rightly never seen) */
    for (int i = 0, id = 0; i < 600; i++) {
        bool all = true;
        const char *srcs[] = { "k", "r", "p" };

        if (i % 10 == 0) {
            snprintf(q, sizeof(q), "INSERT INTO public.%s VALUES (%d, 'x')", names, ++id);
            pgq(q);
        }
        usleep(100000);
        if (!scrape(port, prom))
            continue;
        free(text);
        text = slurp(prom);
        for (size_t s = 0; s < 3; s++) {
            snprintf(series, sizeof(series),
                     "sluice_source_records_total{source=\"%s\",outcome=\"succeeded\"}", srcs[s]);
            if (sample(text, series) < 1)
                all = false;
        }
        if (all)
            break;
    }
    cr_assert_not_null(text, "no /metrics answer; see %s", log);
    for (size_t s = 0; s < 3; s++) {
        const char *srcs[] = { "k", "r", "p" };
        snprintf(series, sizeof(series),
                 "sluice_source_records_total{source=\"%s\",outcome=\"succeeded\"}", srcs[s]);
        cr_assert_geq(sample(text, series), 1, "%s not >= 1 in:\n%s", series, text);
    }

    /* Prometheus' lint: exit 0 and nothing said */
    snprintf(q, sizeof(q), "promtool check metrics < '%s' 2>&1", prom);
    cr_assert_eq(run(q, out, sizeof(out)), 0, "promtool check metrics:\n%s", out);
    cr_assert_eq(out[0], '\0', "promtool check metrics:\n%s", out);

    /* every source type's families, with a sample, one label per dimension */
    {
        static const char *const want[] = {
            "sluice_source_records_total{source=\"r\",outcome=\"received\"}",
            "sluice_source_failed_batches_total{source=\"k\"}",
            "sluice_source_outstanding_records{source=\"p\"}",
            "sluice_redis_messages_total{source=\"r\",outcome=\"deleted\"}",
            "sluice_redis_queue_depth{source=\"r\"}",
            "sluice_redis_pending{source=\"r\"}",
            "sluice_redis_oldest_message_age_seconds{source=\"r\"}",
            "sluice_pg_changes_total{source=\"p\"}",
            "sluice_pg_transactions_total{source=\"p\"}",
            "sluice_pg_iterator_age_seconds{source=\"p\"}",
            "sluice_pg_slot_lag_bytes{source=\"p\"}",
            "sluice_pg_truncates_total{source=\"p\"}",
            "sluice_invocations_total{function=\"noop\"}",
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
            cr_assert_geq(sample(text, want[i]), 0, "no sample %s in:\n%s", want[i], text);
        snprintf(series, sizeof(series),
                 "sluice_kafka_offset_lag{source=\"k\",partition=\"%s-0\"}", kt.topic);
        cr_assert_geq(sample(text, series), 0, "no sample %s in:\n%s", series, text);
        snprintf(series, sizeof(series),
                 "sluice_kafka_iterator_age_seconds{source=\"k\",partition=\"%s-0\"}", kt.topic);
        cr_assert_geq(sample(text, series), 0, "no sample %s in:\n%s", series, text);
        /* the iterator age is in seconds: the record is seconds old, not thousands */
        cr_assert_lt(sample(text, "sluice_pg_iterator_age_seconds{source=\"p\"}"), 600);
        /* no label value packs two dimensions ("r/received") */
        cr_assert_null(strstr(text, "=\"r/"), "a label value holds two dimensions:\n%s", text);
        cr_assert_null(strstr(text, "=\"k/"), "a label value holds two dimensions:\n%s", text);
    }

    /* every metric the rules and the dashboard read is one sluice exports */
    cr_assert_eq(regcomp(&re, "(sluice_[a-z_]+)", REG_EXTENDED), 0);
    {
        const char *files[] = { "deploy/prometheus/alerts.yml", "deploy/grafana/sluice.json" };
        int checked = 0;

        for (size_t i = 0; i < 2; i++) {
            char *src = slurp(files[i]), *p = src;

            while (regexec(&re, p, 2, m, 0) == 0) {
                char name[128], help[200];
                int len = (int)(m[1].rm_eo - m[1].rm_so);

                snprintf(name, sizeof(name), "%.*s", len, p + m[1].rm_so);
                /* a histogram's series are name_bucket, _sum, _count */
                if (len > 7 && strcmp(name + len - 7, "_bucket") == 0)
                    name[len - 7] = '\0';
                snprintf(help, sizeof(help), "# HELP %s ", name);
                cr_assert_not_null(strstr(text, help), "%s uses %s, which sluice does not "
                                   "export", files[i], name);
                checked++;
                p += m[1].rm_eo;
            }
            free(src);
        }
        cr_assert_gt(checked, 15, "only %d metric references found", checked);
    }
    regfree(&re);
    free(text);
    kt_cleanup(&kt);
}

Test(prometheus, dashboard_is_grafana_json_with_a_query_per_panel)
{
    json_error_t e;
    json_t *d = json_load_file("deploy/grafana/sluice.json", 0, &e), *p;
    size_t i, graphs = 0;

    cr_assert_not_null(d, "deploy/grafana/sluice.json: line %d: %s", e.line, e.text);
    cr_assert_str_eq(json_string_value(json_object_get(d, "uid")), "sluice");
    json_array_foreach(json_object_get(d, "panels"), i, p) {
        const char *type = json_string_value(json_object_get(p, "type"));
        json_t *t = json_object_get(p, "targets"), *g;
        size_t k;

        cr_assert_not_null(type);
        cr_assert_not_null(json_object_get(p, "gridPos"));
        if (strcmp(type, "row") == 0)
            continue;
        graphs++;
        cr_assert(json_array_size(t) > 0, "panel %s has no query",
                  json_string_value(json_object_get(p, "title")));
        json_array_foreach(t, k, g)
            cr_assert(strstr(json_string_value(json_object_get(g, "expr")), "sluice_"),
                      "panel %s queries no sluice metric",
                      json_string_value(json_object_get(p, "title")));
    }
    cr_assert_geq(graphs, 12);
    json_decref(d);
}

Test(prometheus, alert_rules_pass_promtool_and_their_unit_tests)
{
    char out[16384];

    cr_assert_eq(run("promtool check rules deploy/prometheus/alerts.yml 2>&1", out, sizeof(out)),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "SUCCESS: 8 rules found"), "%s", out);
    cr_assert_eq(run("cd deploy/prometheus && promtool test rules alerts.test.yml 2>&1", out,
                     sizeof(out)), 0, "%s", out);
    cr_assert_not_null(strstr(out, "SUCCESS"), "%s", out);
}
