/* `sluice status CONFIG`: against a running sluice with a Redis queue
 * whose function always fails (so messages are redriven to a file sink)
 * and a runtime override made through the management API, the report
 * names the function with its invocations and dead letters, the source
 * with its state, counts and lag, the sink with its entries, and the
 * override; human-readable and --json. A stopped service: exit 1, still
 * a report. Needs tests/services (Redis). */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

static char top[1024], dir[256], key[64], cfg[400], log_path[400], rhost[128];
static int rport, port;
static pid_t kid = -1;

static void setup(void)
{
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport), "SLUICE_TEST_REDIS is not set");
    cr_assert_not_null(getcwd(top, sizeof(top)));
    snprintf(key, sizeof(key), "tstatus%d_%ld", (int)getpid(), (long)time(NULL) % 100000);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-%s", key);
    cr_assert_eq(mkdir(dir, 0755), 0);
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char cmd[400];

    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
    }
    th_scan_logs(dir);
    if (!getenv("SLUICE_TEST_KEEP")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

TestSuite(status, .init = setup, .fini = teardown, .timeout = 120);

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

static json_t *find(json_t *arr, const char *k, const char *v)
{
    size_t i;
    json_t *o;

    json_array_foreach(arr, i, o)
        if (json_is_string(json_object_get(o, k)) &&
            strcmp(json_string_value(json_object_get(o, k)), v) == 0)
            return o;
    return NULL;
}

Test(status, reports_functions_sources_dead_letters_and_overrides)
{
    static char out[65536];
    char cmd[2400], rurl[300];
    redisContext *rc;
    json_t *j, *fn, *src, *sink, *maps;
    char uuid[40];
    FILE *f;
    int code;

    port = th_free_port();
    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  broken:\n"
            "    handler: %s/%s/handlers/fail\n"
            "    timeout_s: 10\n"
            "sources:\n"
            "  jobs:\n"
            "    type: redis\n"
            "    function: broken\n"
            "    url: %s\n"
            "    key: %s\n"
            "    visibility_timeout_s: 0\n"
            "    max_receive_count: 1\n"
            "    on_failure: dead\n"
            "sinks:\n"
            "  dead: { type: file, path: %s/dead.jsonl }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            top, th_build(), th_redis_url(rurl, sizeof(rurl), rhost, rport), key, dir, port, dir);
    fclose(f);
    kid = th_run_sluice(top, cfg, log_path);
    cr_assert_gt(kid, 0);
    for (int i = 0; i < 100 && !th_healthy(port); i++)
        usleep(100000);
    cr_assert(th_healthy(port), "sluice did not start; see %s", log_path);

    rc = redisConnect(rhost, rport);
    cr_assert(rc && !rc->err);
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    for (int i = 0; i < 3; i++)
        freeReplyObject(redisCommand(rc, "XADD %s * body poison-%d", key, i));
    redisFree(rc);

    /* an override through the management API: batch size 3 */
    snprintf(cmd, sizeof(cmd), "curl -s http://127.0.0.1:%d/2015-03-31/event-source-mappings/",
             port);
    cr_assert_eq(run(cmd, out, sizeof(out)), 0);
    j = json_loads(out, 0, NULL);
    maps = json_object_get(j, "EventSourceMappings");
    cr_assert_eq(json_array_size(maps), 1, "%s", out);
    cr_assert(json_is_string(json_object_get(json_array_get(maps, 0), "UUID")), "%s", out);
    snprintf(uuid, sizeof(uuid), "%s",
             json_string_value(json_object_get(json_array_get(maps, 0), "UUID")));
    snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -w '%%{http_code}' -X PUT -d "
             "'{\"BatchSize\":3}' http://127.0.0.1:%d/2015-03-31/event-source-mappings/%s",
             port, uuid);
    json_decref(j);
    cr_assert_eq(run(cmd, out, sizeof(out)), 0);
    cr_assert(strcmp(out, "200") == 0 || strcmp(out, "202") == 0, "UpdateEventSourceMapping: %s",
              out);

    /* the three messages fail and are redriven to the sink */
    for (int i = 0; i < 300; i++) {
        snprintf(cmd, sizeof(cmd), "wc -l < %s/dead.jsonl 2>/dev/null", dir);
        if (run(cmd, out, sizeof(out)) == 0 && atoi(out) >= 3)
            break;
        usleep(100000);
    }
    cr_assert_geq(atoi(out), 3, "only %d dead letters; see %s", atoi(out), log_path);

    /* --json */
    snprintf(cmd, sizeof(cmd), "%s/%s/sluice status '%s' --json 2>&1", top, th_build(), cfg);
    code = run(cmd, out, sizeof(out));
    cr_assert_eq(code, 0, "exit %d:\n%s", code, out);
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "not JSON:\n%s", out);
    cr_assert(json_is_true(json_object_get(j, "ready")), "%s", out);
    fn = find(json_object_get(j, "functions"), "name", "broken");
    cr_assert_not_null(fn, "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(fn, "state")), "Active");
    cr_assert_geq(json_number_value(json_object_get(fn, "invocations")), 1, "%s", out);
    cr_assert_geq(json_number_value(json_object_get(fn, "errors")), 1, "%s", out);
    src = find(json_object_get(j, "sources"), "name", "jobs");
    cr_assert_not_null(src, "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(src, "type")), "redis");
    cr_assert_str_eq(json_string_value(json_object_get(src, "state")), "Enabled", "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(src, "uuid")), uuid);
    cr_assert_eq(json_integer_value(json_object_get(src, "batch_size")), 3, "%s", out);
    cr_assert_geq(json_number_value(json_object_get(json_object_get(src, "records"),
                                                    "received")), 3, "%s", out);
    cr_assert(json_is_number(json_object_get(json_object_get(src, "lag"), "pending")), "%s",
              out);
    sink = find(json_object_get(j, "dead_letters"), "sink", "dead");
    cr_assert_not_null(sink, "%s", out);
    cr_assert_geq(json_integer_value(json_object_get(sink, "entries")), 3, "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_object_get(
                     json_object_get(j, "overrides"), "sources"), "jobs"), "batch_size")), 3,
                 "%s", out);
    json_decref(j);

    /* human-readable */
    snprintf(cmd, sizeof(cmd), "%s/%s/sluice status '%s' 2>&1", top, th_build(), cfg);
    cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, ": ready\n"), "%s", out);
    cr_assert(strstr(out, "FUNCTION") && strstr(out, "SOURCE") && strstr(out, "SINK"), "%s",
              out);
    cr_assert(strstr(out, "\nbroken "), "%s", out);
    cr_assert(strstr(out, "\njobs ") && strstr(out, " Enabled "), "%s", out);
    cr_assert(strstr(out, "pending="), "%s", out);
    cr_assert(strstr(out, "overrides in force"), "%s", out);

    /* stopped: exit 1, the parts it can read still printed */
    kill(kid, SIGTERM);
    waitpid(kid, NULL, 0);
    kid = -1;
    snprintf(cmd, sizeof(cmd), "%s/%s/sluice status '%s' 2>&1", top, th_build(), cfg);
    cr_assert_eq(run(cmd, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "not answering"), "%s", out);
    cr_assert(strstr(out, "no answer at"), "%s", out);
    cr_assert(strstr(out, "\ndead "), "the sink's entries are read without the service:\n%s", out);
}

Test(status, usage_errors)
{
    char cmd[2400], out[4096];

    snprintf(cmd, sizeof(cmd), "%s/%s/sluice status 2>&1", top, th_build());
    cr_assert_eq(run(cmd, out, sizeof(out)), 2, "%s", out);
    snprintf(cmd, sizeof(cmd), "%s/%s/sluice status /nonexistent.yaml 2>&1", top, th_build());
    cr_assert_eq(run(cmd, out, sizeof(out)), 1, "%s", out);
}
