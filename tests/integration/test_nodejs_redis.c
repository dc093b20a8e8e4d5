/* runtime nodejs on a real Redis queue: a Node.js function written for
 * Lambda's SQS event source (fixtures/nodejs/index.mjs) reports the poison
 * messages of each batch in batchItemFailures; only those are received
 * again and, after max_receive_count, redriven to the on_failure sink;
 * every good message is handled exactly once. Its console.log lines reach
 * sluice's log with the invocation's request id. Needs root,
 * tests/services and Debian's nodejs. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define N 40

static char top[1024], dir[256], rhost[128];
static int rport;
static pid_t kid = -1;

static void setup(void)
{
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport),
              "SLUICE_TEST_REDIS is not set: run eval \"$(tests/services env)\"");
    cr_assert(getcwd(top, sizeof(top)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-noderedis-%d-%ld", (int)getpid(),
             (long)time(NULL));
    cr_assert_eq(mkdir(dir, 0755), 0);
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char cmd[400];

    if (kid > 0) {
        kill(kid, SIGTERM);
        for (int i = 0; i < 300 && waitpid(kid, NULL, WNOHANG) == 0; i++)
            usleep(50000);
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        kid = -1;
    }
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

TestSuite(nodejs_redis, .init = setup, .fini = teardown, .timeout = 180);

/* Per id: how often the log shows the function handling it, as Lambda's
 * Node runtime writes console.log: "[<rid>] <time>\t<rid>\tINFO\tNODE-HANDLED <id>"
 * (tabs escaped in sluice's log), the same request id twice. */
static void handled(const char *log, int *total)
{
    FILE *f = fopen(log, "r");
    char line[4096];

    memset(total, 0, N * sizeof(int));
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\\tINFO\\tNODE-HANDLED "), *tag = strstr(line, "] [");
        int id;

        if (!p || !tag || p - tag < 3 + 36 + 2 + 24 + 2 + 36)
            continue;
        /* the request id sluice tags the line with is the one node wrote */
        if (strncmp(tag + 3, p - 36, 36) != 0 || tag[3 + 36] != ']')
            continue;
        id = atoi(p + strlen("\\tINFO\\tNODE-HANDLED "));
        if (id >= 0 && id < N)
            total[id]++;
    }
    fclose(f);
}

/* Per id: how often its message is in the dead-letter file. */
static void dead_letters(const char *path, int *count)
{
    json_t *m[N];
    size_t k = th_read_jsonl(path, m, N);

    memset(count, 0, N * sizeof(int));
    for (size_t i = 0; i < k; i++) {
        json_t *body = m[i] ? json_loads(json_string_value(json_object_get(m[i], "body")), 0,
                                         NULL) : NULL;
        int id = (int)json_integer_value(json_object_get(body, "id"));

        if (body && id >= 0 && id < N)
            count[id]++;
        json_decref(body);
        json_decref(m[i]);
    }
}

Test(nodejs_redis, batch_item_failures_redrive_exactly_the_poison_messages)
{
    static int total[N], dead[N];
    bool poison[N] = { false };
    char cfg[400], log[400], dlq[400], key[128], url[400];
    struct timeval tv = { 5, 0 };
    redisContext *rc = redisConnectWithTimeout(rhost, rport, tv);
    int good = 0, ok = 0, dl = 0;
    FILE *f;

    cr_assert(rc && !rc->err, "cannot connect to redis at %s:%d", rhost, rport);
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    poison[3] = poison[17] = poison[18] = true;
    snprintf(key, sizeof(key), "nodeq-%d-%ld", (int)getpid(), (long)time(NULL));
    for (int i = 0; i < N; i++) {
        char body[128];
        redisReply *r;

        snprintf(body, sizeof(body), "{\"id\":%d%s}", i, poison[i] ? ",\"poison\":true" : "");
        r = redisCommand(rc, "LPUSH %s %s", key, body);
        cr_assert(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
        good += !poison[i];
    }
    snprintf(cfg, sizeof(cfg), "%s/node.yaml", dir);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    snprintf(dlq, sizeof(dlq), "%s/dlq.jsonl", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  consumer:\n"
            "    runtime: nodejs\n"
            "    code: %s/tests/integration/fixtures/nodejs\n"
            "    handler: index.handler\n"
            "    timeout_s: 30\n"
            "sources:\n"
            "  q:\n"
            "    type: redis\n"
            "    function: consumer\n"
            "    url: %s\n"
            "    key: %s\n"
            "    mode: list\n"
            "    batch_size: 10\n"
            "    visibility_timeout_s: 1\n"
            "    max_receive_count: 2\n"
            "    report_batch_item_failures: true\n"
            "    on_failure: dlq\n"
            "sinks:\n"
            "  dlq: { type: file, path: %s, fsync: false }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            top, th_redis_url(url, sizeof(url), rhost, rport), key, dlq, th_free_port(), dir);
    fclose(f);
    kid = th_run_sluice(top, cfg, log);
    cr_assert_gt(kid, 0);

    for (int i = 0; i < 1200; i++) {
        ok = dl = 0;
        handled(log, total);
        dead_letters(dlq, dead);
        for (int id = 0; id < N; id++) {
            ok += !poison[id] && total[id] > 0;
            dl += poison[id] && dead[id] > 0;
        }
        if (ok == good && dl == 3)
            break;
        usleep(100000);
    }
    usleep(500000); /* anything more that would come */
    handled(log, total);
    dead_letters(dlq, dead);
    cr_assert_eq(ok, good, "%d of %d good messages handled; log %s", ok, good, log);
    cr_assert_eq(dl, 3, "%d of 3 poison messages dead-lettered; log %s", dl, log);
    for (int id = 0; id < N; id++) {
        if (poison[id]) {
            cr_expect_eq(total[id], 0, "poison message %d handled", id);
            cr_expect_eq(dead[id], 1, "poison message %d dead-lettered %d times", id, dead[id]);
        } else {
            /* a whole batch retried would handle its good messages again */
            cr_expect_eq(total[id], 1, "good message %d handled %d times", id, total[id]);
            cr_expect_eq(dead[id], 0, "good message %d dead-lettered", id);
        }
    }
    freeReplyObject(redisCommand(rc, "DEL %s", key));
    redisFree(rc);
}
