/* The Lambda management API against a live sluice with a real Redis queue,
 * Kafka topic and Postgres change stream, driven by the real AWS CLI
 * (tests/.layers/awscli) and boto3 (tests/.layers/powertools) through
 * tests/integration/mgmt_api.py, which checks every answer:
 *   - every read operation, `aws lambda wait function-active`, paging,
 *     filters, the mappings' ARNs and UUIDs;
 *   - update-event-source-mapping --no-enabled on the Redis queue: messages
 *     sent meanwhile are not processed; --enabled: all of them are, once;
 *   - the writes (mapping settings, reserved and provisioned concurrency,
 *     event invoke config) and their refusals; after a restart they are
 *     still in force (data_dir/overrides.json, 0600);
 *   - scopes: a read-only key cannot write, an invoke-only key cannot read;
 *   - hostile requests get Lambda's errors and sluice stays up;
 *   - `sluice lint` and `sluice run` refuse overrides that no longer fit
 *     the file (a source removed, a type changed).
 * Needs root, tests/services and tests/deps. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

static char top[1024], dir[256], rhost[128], key[128], topic[128], table[64], slot[64];
static char cfg[400], slog[400], out[400], ctx[4096];
static int rport, port;
static pid_t kid = -1;

static void stop_sluice(void)
{
    if (kid <= 0)
        return;
    kill(kid, SIGTERM);
    for (int i = 0; i < 400 && waitpid(kid, NULL, WNOHANG) == 0; i++)
        usleep(50000);
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    kid = -1;
}

static void setup(void)
{
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport),
              "SLUICE_TEST_REDIS is not set: run eval \"$(tests/services env)\"");
    cr_assert(getenv("SLUICE_TEST_KAFKA") && getenv("SLUICE_TEST_PG"),
              "SLUICE_TEST_KAFKA / SLUICE_TEST_PG are not set: run eval \"$(tests/services env)\"");
    cr_assert(getcwd(top, sizeof(top)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-mgmt-%d-%ld", (int)getpid(), (long)time(NULL));
    cr_assert_eq(mkdir(dir, 0755), 0);
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char cmd[600];

    stop_sluice();
    th_scan_logs(dir);
    snprintf(cmd, sizeof(cmd), "grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error:' "
             "%s/*.log 2>/dev/null", dir);
    cr_assert(system(cmd) != 0, "sluice reported a sanitizer error: see %s/*.log", dir);
    if (!getenv("SLUICE_TEST_KEEP")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

TestSuite(mgmt_api, .init = setup, .fini = teardown, .timeout = 400);

static redisContext *redis(void)
{
    struct timeval tv = { 5, 0 };
    redisContext *rc = redisConnectWithTimeout(rhost, rport, tv);

    cr_assert(rc && !rc->err, "cannot connect to redis at %s:%d", rhost, rport);
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    return rc;
}

static void pg_exec(const char *sql)
{
    PGconn *c = PQconnectdb(getenv("SLUICE_TEST_PG"));
    PGresult *r;

    cr_assert(PQstatus(c) == CONNECTION_OK, "postgres: %s", PQerrorMessage(c));
    r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* The configuration; `with_redis` false leaves the Redis source out,
 * `redis_type` names the source "q"'s type (a changed type is stale). */
static void write_config(bool with_redis, bool q_as_kafka)
{
    char url[400];
    FILE *f = fopen(cfg, "w");

    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  rec:\n"
            "    handler: %s/%s/test-handlers/redis_rec\n"
            "    memory_mb: 256\n"
            "    timeout_s: 7\n"
            "    sandbox: relaxed\n" /* it writes OUT on the host */
            "    environment: { OUT: %s, API_SECRET: mgmt-very-secret-value }\n"
            "    async: { maximum_retry_attempts: 2, maximum_event_age_s: 3600 }\n"
            "  noop:\n"
            "    handler: %s/%s/test-handlers/redis_noop\n"
            "sources:\n",
            top, th_build(), out, top, th_build());
    if (with_redis && !q_as_kafka)
        fprintf(f,
                "  q:\n"
                "    type: redis\n"
                "    function: rec\n"
                "    url: %s\n"
                "    key: %s\n"
                "    batch_size: 10\n"
                "    visibility_timeout_s: 30\n",
                th_redis_url(url, sizeof(url), rhost, rport), key);
    if (q_as_kafka)
        fprintf(f,
                "  q:\n"
                "    type: kafka\n"
                "    function: rec\n"
                "    brokers: %s\n"
                "    topics: [%s]\n",
                getenv("SLUICE_TEST_KAFKA"), topic);
    fprintf(f,
            "  k:\n"
            "    type: kafka\n"
            "    function: noop\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s-group\n"
            "  pg:\n"
            "    type: postgres\n"
            "    function: noop\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [public.%s]\n"
            "server:\n"
            "  listen: 127.0.0.1:%d\n"
            "  data_dir: %s/data\n"
            "  concurrency_limit: 50\n"
            "  auth:\n"
            "    AKIAMGMTADMIN: { secret_access_key: admin-secret-1, functions: \"*\", "
            "scopes: \"invoke, admin\" }\n"
            "    AKIAMGMTREAD: { secret_access_key: read-secret-1, functions: \"*\", "
            "scopes: read }\n"
            "    AKIAMGMTINVOKE: { secret_access_key: invoke-secret-1, functions: \"*\" }\n"
            "    tok-reader: { bearer: true, functions: rec, scopes: read }\n",
            getenv("SLUICE_TEST_KAFKA"), topic, topic, getenv("SLUICE_TEST_PG"), slot, slot,
            table, port, dir);
    fclose(f);
}

static void start_sluice(void)
{
    kid = th_run_sluice(top, cfg, slog);
    cr_assert_gt(kid, 0);
    for (int i = 0; i < 200 && !th_healthy(port); i++)
        usleep(50000);
    cr_assert(th_healthy(port), "sluice did not come up: see %s", slog);
}

static void phase(const char *name)
{
    char cmd[8192], ep[64];
    int rc;

    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
    snprintf(cmd, sizeof(cmd),
             "PYTHONPATH='%s/tests/.layers/powertools/python' /usr/bin/python3 "
             "'%s/tests/integration/mgmt_api.py' '%s' '%s' '%s' >>'%s/client.log' 2>&1",
             top, top, ep, name, ctx, dir);
    rc = system(cmd);
    cr_assert_eq(rc, 0, "phase %s failed: see %s/client.log (and %s)", name, dir, slog);
}

static size_t lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int ch;

    if (!f)
        return 0;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* sluice lint's exit code, its output in `buf`. */
static int lint(char *buf, size_t n)
{
    char cmd[2400], bin[1100];
    FILE *p;
    size_t got;
    int st;

    snprintf(cmd, sizeof(cmd), "'%s' lint '%s' 2>&1",
             th_build_path(bin, sizeof(bin), top, "sluice"), cfg);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    got = fread(buf, 1, n - 1, p);
    buf[got] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(mgmt_api, the_aws_cli_and_boto3_read_and_steer_a_running_sluice)
{
    char path[600], text[8192], cmd[2400];
    redisContext *rc = redis();
    struct stat st;
    int n = 20;

    {
        char l1[1200], l2[1200];
        snprintf(l1, sizeof(l1), "%s/tests/.layers/awscli/.done", top);
        snprintf(l2, sizeof(l2), "%s/tests/.layers/powertools/.done", top);
        cr_assert(access(l1, F_OK) == 0 && access(l2, F_OK) == 0,
                  "no AWS CLI or boto3 layer in tests/.layers: run tests/deps");
    }
    snprintf(key, sizeof(key), "mgmtq-%d-%ld", (int)getpid(), (long)time(NULL));
    snprintf(topic, sizeof(topic), "mgmt-%d-%ld", (int)getpid(), (long)time(NULL));
    snprintf(table, sizeof(table), "mgmt_%d", (int)getpid());
    snprintf(slot, sizeof(slot), "mgmt_%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "tests/services kafka-topic %s 1 >/dev/null 2>&1", topic);
    cr_assert_eq(system(cmd), 0, "cannot create kafka topic %s", topic);
    snprintf(text, sizeof(text), "CREATE TABLE IF NOT EXISTS %s (id int primary key, v text)",
             table);
    pg_exec(text);
    snprintf(cfg, sizeof(cfg), "%s/mgmt.yaml", dir);
    snprintf(slog, sizeof(slog), "%s/sluice.log", dir);
    snprintf(out, sizeof(out), "%s/rec.out", dir);
    {
        /* the handler runs as the function's own uid */
        int fd = open(out, O_WRONLY | O_CREAT, 0666);

        cr_assert_geq(fd, 0);
        fchmod(fd, 0666);
        close(fd);
    }
    port = th_free_port();
    snprintf(ctx, sizeof(ctx),
             "{\"region\":\"us-east-1\",\"account\":\"000000000000\",\"redis_key\":\"%s\","
             "\"kafka_brokers\":\"%s\",\"kafka_topic\":\"%s\",\"pg_table\":\"%s\","
             "\"pg_slot\":\"%s\",\"layer_cli\":\"%s/tests/.layers/awscli\","
             "\"secret\":\"mgmt-very-secret-value\"}",
             key, getenv("SLUICE_TEST_KAFKA"), topic, table, slot, top);
    write_config(true, false);
    start_sluice();

    phase("read");

    /* disabled: nothing sent meanwhile is processed */
    phase("disable");
    for (int i = 0; i < n; i++) {
        char body[64];
        redisReply *r;

        snprintf(body, sizeof(body), "{\"n\":%d}", i);
        r = redisCommand(rc, "XADD %s * body %s", key, body);
        cr_assert(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    sleep(3);
    cr_assert_eq(lines(out), 0, "a disabled source processed %zu messages", lines(out));
    /* enabled: every one of them, once */
    phase("enable");
    for (int i = 0; i < 200 && lines(out) < (size_t)n; i++)
        usleep(50000);
    sleep(1);
    cr_assert_eq(lines(out), (size_t)n, "%zu of %d messages processed after enabling", lines(out),
                 n);
    {
        bool seen[20] = { false };
        FILE *f = fopen(out, "r");
        char line[512];

        cr_assert_not_null(f);
        while (fgets(line, sizeof(line), f)) {
            int k = -1;
            char *p = strstr(line, " ");

            if (p)
                k = atoi(p + 1);
            cr_assert(k >= 0 && k < n && !seen[k], "bad or repeated message: %s", line);
            seen[k] = true;
        }
        fclose(f);
    }

    phase("writes");
    snprintf(path, sizeof(path), "%s/data/overrides.json", dir);
    cr_assert_eq(stat(path, &st), 0, "no %s", path);
    cr_assert_eq(st.st_mode & 0777, 0600, "overrides.json is %o", (unsigned)(st.st_mode & 0777));

    /* a restart keeps them */
    stop_sluice();
    cr_assert_eq(lint(text, sizeof(text)), 0, "lint refuses fitting overrides: %s", text);
    cr_assert(strstr(text, "runtime overrides in force") && strstr(text, "\"batch_size\": 7"),
              "lint does not show the overrides: %s", text);
    start_sluice();
    phase("after-restart");
    phase("scopes");
    phase("hostile");
    cr_assert(th_healthy(port), "sluice went down under hostile requests");
    stop_sluice();

    /* overrides that no longer fit the file: lint and run refuse them */
    write_config(false, false);
    cr_assert_eq(lint(text, sizeof(text)), 1, "lint accepts an override of a removed source");
    cr_assert(strstr(text, "source 'q'") && strstr(text, "no such source"), "lint says: %s",
              text);
    write_config(true, true);
    cr_assert_eq(lint(text, sizeof(text)), 1, "lint accepts an override of a changed type");
    cr_assert(strstr(text, "now a kafka source"), "lint says: %s", text);
    {
        char bin[1100];
        int ws;

        snprintf(cmd, sizeof(cmd), "'%s' run '%s' >>'%s/refused.log' 2>&1",
                 th_build_path(bin, sizeof(bin), top, "sluice"), cfg, dir);
        ws = system(cmd);
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 1, "sluice run started with stale overrides");
    }
    freeReplyObject(redisCommand(rc, "DEL %s", key));
    redisFree(rc);
    snprintf(text, sizeof(text),
             "SELECT pg_drop_replication_slot('%s') FROM pg_replication_slots WHERE slot_name = "
             "'%s'", slot, slot);
    pg_exec(text);
    snprintf(text, sizeof(text), "DROP TABLE IF EXISTS %s; DROP PUBLICATION IF EXISTS %s", table,
             slot);
    pg_exec(text);
}
