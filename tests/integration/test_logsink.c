/* The log sink: function log lines shipped to a file sink (server.log_sink)
 * and to a real Redis stream (a function's own log_sink), one JSON event
 * per line, by a `sluice run` child. Needs tests/services (Redis), root,
 * curl and $BUILD/test-handlers/logc. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

static char dir[256], key[64], root[1024];
static pid_t kid = -1;
static redisContext *rc;

static void setup(void)
{
    char host[256];
    int rport;

    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-logsink-%d", (int)getpid());
    mkdir(dir, 0755);
    chmod(dir, 0755);
    snprintf(key, sizeof(key), "sluice:logs:%d:%ld", (int)getpid(), (long)time(NULL));
    cr_assert(th_redis_env(host, sizeof(host), &rport), "SLUICE_TEST_REDIS is not set "
              "(eval \"$(tests/services env)\")");
    rc = redisConnect(host, rport);
    cr_assert(rc && !rc->err, "redis: %s", rc ? rc->errstr : "no memory");
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
    }
    th_scan_logs(dir);
    if (rc) {
        freeReplyObject(redisCommand(rc, "DEL %s", key));
        redisFree(rc);
    }
    if (!getenv("SLUICE_TEST_KEEP")) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

TestSuite(logsink, .init = setup, .fini = teardown, .timeout = 90);

static void invoke(int port, const char *fn, const char *payload)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null -X POST "
             "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations -d '%s'", port, fn, payload);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

Test(logsink, lines_go_to_a_file_and_a_redis_stream)
{
    char cfg[400], log[400], file[400], logc[1200], host[256], url[400];
    int port = th_free_port(), rport = 0;
    json_t *v[64];
    size_t n = 0;
    double end;
    bool py_print = false, py_report = false, c_in_file = false, c_plain = false;
    redisReply *r = NULL;
    FILE *f;

    th_redis_env(host, sizeof(host), &rport);
    th_redis_url(url, sizeof(url), host, rport);
    th_build_path(logc, sizeof(logc), root, "test-handlers/logc");
    snprintf(cfg, sizeof(cfg), "%s/sink.yaml", dir);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    snprintf(file, sizeof(file), "%s/out/functions.jsonl", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  py:\n    runtime: python\n    handler: app.handler\n"
            "    code: %s/tests/unit/fixtures/logfn\n    log_format: json\n"
            "  cjson:\n    handler: %s\n    log_format: json\n    log_sink: stream\n"
            "sinks:\n"
            "  lines:\n    type: file\n    path: %s\n"
            "  stream:\n    type: redis\n    url: %s\n    key: %s\n"
            "server:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data\n  log_sink: lines\n",
            root, logc, file, url, key, port, dir);
    fclose(f);
    kid = th_run_sluice(root, cfg, log);
    end = now_ms() + 20000;
    while (now_ms() < end && !th_healthy(port))
        usleep(50000);
    cr_assert(th_healthy(port), "sluice did not start");

    invoke(port, "py", "{\"tag\":\"K1\"}");
    invoke(port, "cjson", "{}");

    /* the file sink: py's lines (server.log_sink), not cjson's (its own) */
    end = now_ms() + 10000;
    while (now_ms() < end && !py_report) {
        for (size_t i = 0; i < n; i++)
            json_decref(v[i]);
        n = th_read_jsonl(file, v, 64);
        py_print = py_report = c_in_file = false;
        for (size_t i = 0; i < n; i++) {
            const char *fn = json_string_value(json_object_get(v[i], "function"));
            const char *msg = json_string_value(json_object_get(v[i], "message"));
            const char *type = json_string_value(json_object_get(v[i], "type"));

            cr_assert_not_null(v[i], "a line of the file sink is not JSON");
            c_in_file |= fn && strcmp(fn, "cjson") == 0;
            py_print |= fn && strcmp(fn, "py") == 0 && msg && strcmp(msg, "print K1") == 0 &&
                        json_string_value(json_object_get(v[i], "requestId")) &&
                        json_string_value(json_object_get(v[i], "timestamp")) &&
                        json_string_value(json_object_get(v[i], "level"));
            py_report |= type && strcmp(type, "platform.report") == 0;
        }
        usleep(100000);
    }
    cr_expect(py_print, "no line for py's print in the file sink");
    cr_expect(py_report, "no platform.report in the file sink");
    cr_expect(!c_in_file, "cjson's lines went to server.log_sink despite its own log_sink");
    for (size_t i = 0; i < n; i++)
        json_decref(v[i]);

    /* the Redis stream: cjson's lines, each entry's record a JSON event */
    end = now_ms() + 10000;
    while (now_ms() < end && !c_plain) {
        freeReplyObject(r);
        r = redisCommand(rc, "XRANGE %s - +", key);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *fields = r->element[i]->element[1];
            json_t *e;
            const char *msg;

            cr_assert_eq(fields->elements, 2);
            cr_assert_str_eq(fields->element[0]->str, "record");
            e = json_loads(fields->element[1]->str, 0, NULL);
            cr_assert_not_null(e, "%s", fields->element[1]->str);
            cr_expect_str_eq(json_string_value(json_object_get(e, "function")), "cjson");
            msg = json_string_value(json_object_get(e, "message"));
            c_plain |= msg && strncmp(msg, "c plain line ", 13) == 0;
            json_decref(e);
        }
        if (!c_plain)
            usleep(100000);
    }
    cr_expect(c_plain, "the C handler's line is not in the Redis stream");
    freeReplyObject(r);
    {
        char cmd[500], out[64] = "";
        FILE *p;

        snprintf(cmd, sizeof(cmd), "curl -s http://127.0.0.1:%d/metrics | grep -c "
                 "'^sluice_log_lines_dropped_total{reason=\"sink\"}'", port);
        p = popen(cmd, "r");
        if (p) {
            if (!fgets(out, sizeof(out), p))
                out[0] = '\0';
            pclose(p);
        }
        cr_expect_eq(atoi(out), 0, "log lines were dropped on the way to the sinks");
    }
}
