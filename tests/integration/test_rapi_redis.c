/* runtime lambda on a real Redis queue: the unchanged Powertools function
 * of test_powertools_redis.c (fixtures/powertools/app.py), but run by the
 * stock awslambdaric from PyPI over the Runtime API instead of by runtime
 * python: its partial batch responses (batchItemFailures) come back
 * through POST /invocation/{id}/response, the poison messages are redriven
 * to the on_failure sink after max_receive_count, every good message is
 * handled once. Needs root, tests/services and tests/deps. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "powertools.h"

static char top[1024], dir[256], rhost[128];
static int rport;
static pid_t kid = -1;

static void setup(void)
{
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport),
              "SLUICE_TEST_REDIS is not set: run eval \"$(tests/services env)\"");
    cr_assert(getcwd(top, sizeof(top)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-rapiredis-%d-%ld", (int)getpid(),
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

TestSuite(rapi_redis, .init = setup, .fini = teardown, .timeout = 240);

static redisContext *client(void)
{
    struct timeval tv = { 5, 0 };
    redisContext *rc = redisConnectWithTimeout(rhost, rport, tv);

    cr_assert(rc && !rc->err, "cannot connect to redis at %s:%d", rhost, rport);
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    return rc;
}

static void run_queue(bool list)
{
    static bool poison[PT_MAX_ID];
    static int total[PT_MAX_ID], first[PT_MAX_ID], dead[PT_MAX_ID];
    const int n = 60;
    char fns[4096], cfg[400], log[400], dlq[400], key[128], url[400];
    redisContext *rc = client();
    int handled = 0, dl = 0, good = 0;
    FILE *f;

    pt_require_layer(top);
    memset(poison, 0, sizeof(poison));
    poison[7] = poison[31] = poison[52] = poison[53] = true;
    snprintf(key, sizeof(key), "rapiq-%s-%d-%ld", list ? "list" : "stream", (int)getpid(),
             (long)time(NULL));
    for (int i = 0; i < n; i++) {
        char body[128];
        redisReply *r;
        snprintf(body, sizeof(body), "{\"id\":%d,\"order\":\"o-%d\"%s}", i, i,
                 poison[i] ? ",\"poison\":true" : "");
        r = list ? redisCommand(rc, "LPUSH %s %s", key, body)
                 : redisCommand(rc, "XADD %s * body %s origin powertools", key, body);
        cr_assert(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
        good += !poison[i];
    }

    snprintf(cfg, sizeof(cfg), "%s/pt-%s.yaml", dir, list ? "list" : "stream");
    snprintf(log, sizeof(log), "%s/sluice-%s.log", dir, list ? "list" : "stream");
    snprintf(dlq, sizeof(dlq), "%s/dlq-%s.jsonl", dir, list ? "list" : "stream");
    /* the app beside a bootstrap that starts awslambdaric (a second layer) */
    {
        char cmd[3000];
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/fn && cp %s/tests/integration/fixtures/powertools/app.py "
                 "%s/fn/ && printf '#!/bin/sh\\nexport PYTHONPATH=/opt/python\\n"
                 "exec /usr/bin/python3 -m awslambdaric app.lambda_handler\\n' > %s/fn/bootstrap && "
                 "chmod 755 %s/fn %s/fn/bootstrap && chmod 644 %s/fn/app.py", dir, top, dir, dir,
                 dir, dir, dir);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        snprintf(cmd, sizeof(cmd), "%s/tests/.layers/awslambdaric/.done", top);
        cr_assert_eq(access(cmd, F_OK), 0, "no awslambdaric at tests/.layers: run tests/deps");
    }
    snprintf(fns, sizeof(fns),
             "functions:\n"
             "  pt:\n"
             "    runtime: lambda\n"
             "    handler: %s/fn/bootstrap\n"
             "    layers: [%s/tests/.layers/powertools, %s/tests/.layers/awslambdaric]\n"
             "    memory_mb: 512\n"
             "    timeout_s: 30\n"
             "    init_timeout_s: 30\n"
             "    environment: { POWERTOOLS_SOURCE: sqs, POWERTOOLS_SERVICE_NAME: sluice-test }\n",
             dir, top, top);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "%s"
            "sources:\n"
            "  src:\n"
            "    type: redis\n"
            "    function: pt\n"
            "    url: %s\n"
            "    key: %s\n"
            "    mode: %s\n"
            "    batch_size: 10\n"
            "    visibility_timeout_s: 1\n"
            "    max_receive_count: 2\n"
            "    report_batch_item_failures: true\n"
            "    on_failure: dlq\n"
            "sinks:\n"
            "  dlq: { type: file, path: %s, fsync: false }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data-%s }\n",
            fns, th_redis_url(url, sizeof(url), rhost, rport), key, list ? "list" : "stream",
            dlq, th_free_port(), dir, list ? "list" : "stream");
    fclose(f);
    kid = th_run_sluice(top, cfg, log);
    cr_assert_gt(kid, 0);

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
    cr_assert_eq(handled, good, "%d of %d good messages handled; log %s", handled, good, log);
    cr_assert_eq(dl, 4, "%d of 4 poison messages dead-lettered", dl);
    pt_assert_outcome(log, dlq, n, poison);
    for (int id = 0; id < n; id++)
        cr_expect(poison[id] || total[id] == 1, "good message %d handled %d times", id,
                  total[id]);
    {
        /* the sink holds the original SQS messages, which SqsRecordModel reads */
        json_t *m[8];
        size_t k = th_read_jsonl(dlq, m, 8);
        cr_assert_eq(k, 4, "%zu messages in the sink", k);
        for (size_t i = 0; i < k; i++) {
            cr_expect_str_eq(json_string_value(json_object_get(m[i], "eventSource")), "aws:sqs");
            cr_expect_str_eq(json_string_value(json_object_get(
                                 json_object_get(m[i], "attributes"), "ApproximateReceiveCount")),
                             "3", "redriven on the receive after max_receive_count");
            json_decref(m[i]);
        }
    }
    cr_expect(!pt_log_has(log, "ValidationError"), "a parser model rejected an event");
    cr_expect(!pt_log_has(log, "Runtime.InvalidResponse"),
              "sluice refused Powertools' partial batch response");
    cr_expect(pt_log_has(log, "POWERTOOLS-BATCH"), "no batch was parsed");
    freeReplyObject(redisCommand(rc, "DEL %s", key));
    redisFree(rc);
}

Test(rapi_redis, awslambdaric_partial_failures_redrive_exactly_the_poison_messages)
{
    run_queue(false);
}
