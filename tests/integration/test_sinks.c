/* Sinks against the real stores: every sink type writes 100 records that
 * are then read back from the store itself (file lines, XRANGE, a Kafka
 * consumer, SELECT from Postgres and from the SQLite file). Plus what the
 * delivery contract needs: a Redis sink that starts with nothing listening
 * keeps retrying reliable writes and delivers every one once a Redis
 * appears; a Postgres sink whose connection is killed reconnects; freeing
 * a sink ends pending writes with SL_ESTOPPED, once each; bad URLs and
 * DSNs give clear errors; passwords never reach the log.
 *
 * Reads SLUICE_TEST_REDIS, SLUICE_TEST_KAFKA and SLUICE_TEST_PG from
 * eval "$(tests/services env)". Every run uses its own keys, topics,
 * tables and files. Two tests start a redis-server of their own on a free
 * port (killed at the end). SLUICE_TEST_LOG=1 shows the log on stderr;
 * otherwise it goes to a memfd the tests read back. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/sink.h"

#include "harness.h"

#define COUNT   100
#define WAIT_MS 30000

extern char **environ;

/* ------------------------------------------------------------------ */
/* harness                                                             */

static struct event_base *base;
static struct sl_pool *pool;
static struct event *tick;
static int log_fd = -1;
static char run_id[96];
static pid_t redis_pid = -1;      /* our own redis-server, if any */
static bool in_write;             /* a sink call is on the stack */

struct slot {
    int  calls;
    int  rc;
    bool retriable;
    char msg[SL_ERR_MSG_MAX];
};

static struct slot slots[COUNT * 2];
static int ncalls;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void setup(void)
{
    struct sl_err err;
    struct timespec ts;
    struct timeval tv = { 0, 20000 };

    if (!getenv("SLUICE_TEST_LOG")) {
        log_fd = memfd_create("sluice-log", MFD_CLOEXEC);
        cr_assert(log_fd >= 0);
        sl_log_set_fd(log_fd);
    }
    base = event_base_new();
    cr_assert(base != NULL);
    cr_assert_eq(sl_pool_new(base, 2, &pool, &err), 0, "pool: %s", err.msg);
    tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    event_add(tick, &tv);
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(run_id, sizeof(run_id), "%ld_%lld_%ld", (long)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec / 1000);
    memset(slots, 0, sizeof(slots));
    ncalls = 0;
}

static char *read_log(void);

static void teardown(void)
{
    const char *leak = log_fd >= 0 ? th_secret_in(read_log()) : NULL;

    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
    if (tick)
        event_free(tick);
    tick = NULL;
    sl_pool_free(pool);
    pool = NULL;
    if (base)
        event_base_free(base);
    base = NULL;
    cr_assert_null(leak, "the log shows $%s", leak);
}

TestSuite(sinks, .init = setup, .fini = teardown, .timeout = 120);

static void on_done(void *arg, int rc, const struct sl_err *err)
{
    struct slot *sl = arg;

    cr_assert(!in_write, "done ran before write returned");
    sl->calls++;
    sl->rc = rc;
    sl->retriable = err ? err->retriable : false;
    snprintf(sl->msg, sizeof(sl->msg), "%s", err ? err->msg : "");
    ncalls++;
}

/* Run the loop until `n` done callbacks have been seen or `ms` passed. */
static bool run_until_calls(int n, long long ms)
{
    long long deadline = now_ms() + ms;

    while (ncalls < n && now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    return ncalls >= n;
}

static void run_for(long long ms)
{
    long long deadline = now_ms() + ms;

    while (now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
}

static int record(char *buf, size_t n, int i)
{
    return snprintf(buf, n,
                    "{\"i\":%d,\"run\":\"%s\",\"msg\":\"record %d: \\\"quoted\\\", caf\xc3\xa9\"}",
                    i, run_id, i);
}

static void write_all(struct sl_sink *s, int n, bool reliable)
{
    for (int i = 0; i < n; i++) {
        char json[256];
        int len = record(json, sizeof(json), i);

        in_write = true;
        if (reliable)
            sl_sink_write_reliable(s, json, (size_t)len, on_done, &slots[i]);
        else
            sl_sink_write(s, json, (size_t)len, on_done, &slots[i]);
        in_write = false;
    }
}

/* Plain writes borrow `json` until done: keep them alive here. */
static char borrowed[COUNT][256];

static void write_all_borrowed(struct sl_sink *s, int n)
{
    for (int i = 0; i < n; i++) {
        int len = record(borrowed[i], sizeof(borrowed[i]), i);

        in_write = true;
        sl_sink_write(s, borrowed[i], (size_t)len, on_done, &slots[i]);
        in_write = false;
    }
}

static void expect_all_ok(int n)
{
    cr_assert(run_until_calls(n, WAIT_MS), "only %d of %d writes done within %d ms", ncalls, n,
              WAIT_MS);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(slots[i].calls, 1, "record %d: done ran %d times", i, slots[i].calls);
        cr_assert_eq(slots[i].rc, 0, "record %d: %s (%s)", i, sl_errname(slots[i].rc),
                     slots[i].msg);
    }
}

static char *read_log(void)
{
    static char buf[1 << 20];
    ssize_t n;

    if (log_fd < 0)
        return strcpy(buf, "");
    n = pread(log_fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static const char *need_env(const char *name)
{
    const char *v = getenv(name);

    cr_assert(v && *v, "%s is not set: run tests/services start and eval \"$(tests/services env)\"",
              name);
    return v;
}

static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void start_redis(int port, const char *password)
{
    char portstr[16];
    char *argv[16];
    int n = 0;
    posix_spawn_file_actions_t fa;

    snprintf(portstr, sizeof(portstr), "%d", port);
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = portstr;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    if (password) {
        argv[n++] = "--requirepass";
        argv[n++] = (char *)password;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    cr_assert_eq(posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ), 0,
                 "cannot start redis-server");
    posix_spawn_file_actions_destroy(&fa);
}

/* Blocking client for checks; waits up to 10 s for the server. */
static redisContext *redis_client(const char *host, int port, const char *password, int db)
{
    long long deadline = now_ms() + 10000;
    redisContext *rc = NULL;

    for (;;) {
        struct timeval tv = { 5, 0 };

        rc = redisConnectWithTimeout(host, port, tv);
        if (rc && !rc->err)
            break;
        if (rc)
            redisFree(rc);
        cr_assert_lt(now_ms(), deadline, "cannot connect to redis at %s:%d", host, port);
        usleep(50000);
    }
    if (password) {
        redisReply *r = redisCommand(rc, "AUTH %s", password);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "AUTH failed");
        freeReplyObject(r);
    }
    if (db >= 0) {
        redisReply *r = redisCommand(rc, "SELECT %d", db);
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "SELECT failed");
        freeReplyObject(r);
    }
    return rc;
}

static void parse_redis_env(char *host, size_t n, int *port)
{
    need_env("SLUICE_TEST_REDIS");
    cr_assert(th_redis_env(host, n, port), "SLUICE_TEST_REDIS: want redis://[PASSWORD@]HOST:PORT");
}

/* XRANGE key - +: check the "record" fields are exactly records 0..n-1 in
 * order. */
static void expect_stream(redisContext *rc, const char *key, int n)
{
    redisReply *r = redisCommand(rc, "XRANGE %s - +", key);

    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "XRANGE failed");
    cr_assert_eq((int)r->elements, n, "stream %s holds %zu entries, want %d", key, r->elements, n);
    for (int i = 0; i < n; i++) {
        redisReply *e = r->element[i], *f;
        char want[256];

        cr_assert(e->type == REDIS_REPLY_ARRAY && e->elements == 2);
        f = e->element[1];
        cr_assert(f->type == REDIS_REPLY_ARRAY && f->elements == 2, "entry %d: %zu fields", i,
                  f->elements);
        cr_assert_str_eq(f->element[0]->str, "record");
        record(want, sizeof(want), i);
        cr_assert_str_eq(f->element[1]->str, want, "entry %d", i);
    }
    freeReplyObject(r);
}

static struct sl_sink *open_sink(struct sl_sink_conf *conf)
{
    struct sl_sink *s = NULL;
    struct sl_err err;

    sl_err_clear(&err);
    cr_assert_eq(sl_sink_new(base, pool, conf, &s, &err), 0, "sl_sink_new(%s): %s", conf->name,
                 err.msg);
    cr_assert(s != NULL);
    return s;
}

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-test-sinks-%s", run_id);
}

static void rm_tmpdir(void)
{
    char cmd[300];

    th_scan_logs(tmpdir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        cr_log_warn("cannot remove %s", tmpdir);
}

/* ------------------------------------------------------------------ */
/* file                                                                */

static void file_round_trip(bool fsync)
{
    char path[512];
    struct sl_file_sink_opts conf_o = { .path = path, .fsync = fsync };
    struct sl_sink_conf conf = { .name = "t-file", .type = &sl_file_sink.conf, .opts = &conf_o };
    struct sl_sink *s;
    FILE *f;
    char line[512];
    int n = 0;

    make_tmpdir();
    /* the parent directories do not exist yet */
    snprintf(path, sizeof(path), "%s/a/b/out.jsonl", tmpdir);
    s = open_sink(&conf);
    write_all(s, COUNT, false); /* file sinks copy: the stack buffer may go */
    expect_all_ok(COUNT);
    cr_assert_eq(s->writes, COUNT);
    cr_assert_eq(s->failures, 0);
    sl_sink_free(s);

    f = fopen(path, "r");
    cr_assert(f, "cannot open %s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char want[256];

        cr_assert(n < COUNT, "more than %d lines", COUNT);
        record(want, sizeof(want), n);
        cr_assert(strlen(line) > 0 && line[strlen(line) - 1] == '\n', "line %d unterminated", n);
        line[strlen(line) - 1] = '\0';
        cr_assert_str_eq(line, want, "line %d", n);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, COUNT, "%d lines, want %d", n, COUNT);
    {
        struct stat st;

        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0644, "mode %o", st.st_mode & 0777);
    }
    rm_tmpdir();
}

Test(sinks, file_fsync_round_trip)
{
    file_round_trip(true);
}

Test(sinks, file_no_fsync_round_trip)
{
    file_round_trip(false);
}

Test(sinks, file_appends_and_keeps_one_record_per_line)
{
    char path[512];
    struct sl_file_sink_opts conf_o = { .path = path, .fsync = true };
    struct sl_sink_conf conf = { .name = "t-file", .type = &sl_file_sink.conf, .opts = &conf_o };
    struct sl_sink *s;
    const char *pretty = "{\n  \"a\": 1,\r\n  \"b\": [2, 3]\n}";
    FILE *f;
    char line[256];

    make_tmpdir();
    cr_assert_eq(mkdir(tmpdir, 0755), 0);
    snprintf(path, sizeof(path), "%s/out.jsonl", tmpdir);
    f = fopen(path, "w");
    fputs("{\"old\":true}\n", f);
    fclose(f);

    s = open_sink(&conf);
    in_write = true;
    sl_sink_write(s, pretty, strlen(pretty), on_done, &slots[0]);
    in_write = false;
    expect_all_ok(1);
    sl_sink_free(s);

    f = fopen(path, "r");
    cr_assert(fgets(line, sizeof(line), f));
    cr_assert_str_eq(line, "{\"old\":true}\n", "existing content must stay");
    cr_assert(fgets(line, sizeof(line), f));
    cr_assert_str_eq(line, "{   \"a\": 1,    \"b\": [2, 3] }\n");
    cr_assert(!fgets(line, sizeof(line), f), "one record must be one line");
    fclose(f);
    rm_tmpdir();
}

/* ------------------------------------------------------------------ */
/* redis                                                               */

Test(sinks, redis_round_trip)
{
    char key[160], host[128];
    int port;
    struct sl_redis_sink_opts conf_o = { .key = key };
    struct sl_sink_conf conf = { .name = "t-redis", .type = &sl_redis_sink.conf, .opts = &conf_o };
    struct sl_sink *s;
    redisContext *rc;
    redisReply *r;

    conf_o.url = (char *)need_env("SLUICE_TEST_REDIS");
    snprintf(key, sizeof(key), "sluice:test:sinks:%s", run_id);
    s = open_sink(&conf);
    write_all(s, COUNT, false); /* hiredis copies at once */
    expect_all_ok(COUNT);
    cr_assert_eq(s->writes, COUNT);
    sl_sink_free(s);

    parse_redis_env(host, sizeof(host), &port);
    rc = redis_client(host, port, th_redis_password(), -1);
    expect_stream(rc, key, COUNT);
    r = redisCommand(rc, "DEL %s", key);
    freeReplyObject(r);
    redisFree(rc);
}

static int up_port;

static void on_start_redis(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    start_redis(up_port, NULL);
}

Test(sinks, redis_reliable_writes_survive_a_missing_server)
{
    char url[64], key[160];
    struct sl_redis_sink_opts conf_o = { .url = url, .key = key };
    struct sl_sink_conf conf = { .name = "t-redis-late", .type = &sl_redis_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    struct event *later;
    struct timeval tv = { 10, 0 };      /* the server is down for 10 s */
    redisContext *rc;
    const int n = 20;

    up_port = free_port();
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", up_port);
    snprintf(key, sizeof(key), "sluice:test:late:%s", run_id);
    s = open_sink(&conf);

    /* a plain write while nothing listens: a clear, retriable error */
    in_write = true;
    sl_sink_write(s, "{\"probe\":1}", 11, on_done, &slots[COUNT]);
    in_write = false;
    cr_assert(run_until_calls(1, 5000));
    cr_assert_eq(slots[COUNT].calls, 1);
    cr_assert_neq(slots[COUNT].rc, 0);
    cr_assert(slots[COUNT].retriable, "want a retriable error: %s", slots[COUNT].msg);
    cr_assert(strstr(slots[COUNT].msg, url + 8) != NULL, "error names the server: %s",
              slots[COUNT].msg);
    ncalls = 0;

    write_all(s, n, true);
    later = evtimer_new(base, on_start_redis, NULL);
    evtimer_add(later, &tv);
    run_for(9500);
    cr_assert_eq(ncalls, 0, "reliable writes confirmed while no server ran");
    cr_assert_gt(s->failures, 1, "the sink should have failed attempts by now");

    /* backoff is capped at 30 s: within that, every record lands */
    cr_assert(run_until_calls(n, 35000), "only %d of %d reliable writes confirmed", ncalls, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(slots[i].calls, 1, "record %d: done ran %d times", i, slots[i].calls);
        cr_assert_eq(slots[i].rc, 0, "record %d: %s", i, slots[i].msg);
    }
    run_for(200); /* nothing else may arrive */
    cr_assert_eq(ncalls, n);
    cr_assert_eq(s->writes, (uint64_t)n);
    event_free(later);
    sl_sink_free(s);

    rc = redis_client("127.0.0.1", up_port, NULL, -1);
    {
        redisReply *r = redisCommand(rc, "XRANGE %s - +", key);
        bool seen[20] = { false };

        cr_assert(r && r->type == REDIS_REPLY_ARRAY);
        cr_assert_eq((int)r->elements, n, "%zu entries, want %d: lost or duplicated",
                     r->elements, n);
        for (size_t i = 0; i < r->elements; i++) {
            const char *v = r->element[i]->element[1]->element[1]->str;
            int idx = -1;
            char want[256];

            cr_assert_eq(sscanf(v, "{\"i\":%d", &idx), 1, "bad record %s", v);
            cr_assert(idx >= 0 && idx < n && !seen[idx], "record %d twice or unknown", idx);
            record(want, sizeof(want), idx);
            cr_assert_str_eq(v, want);
            seen[idx] = true;
        }
        freeReplyObject(r);
    }
    redisFree(rc);
    /* the retries were logged, one line per failed attempt */
    if (log_fd >= 0)
        cr_assert(strstr(read_log(), "[sink:t-redis-late] write failed (attempt 1)") != NULL,
                  "log: %s", read_log());
}

Test(sinks, redis_auth_select_and_no_password_in_logs)
{
    const char *pw = "s3cr3t-Pw0rd";
    char url[128], bad[128], key[160];
    struct sl_redis_sink_opts conf_o = { .url = url, .key = key };
    struct sl_sink_conf conf = { .name = "t-redis-auth", .type = &sl_redis_sink.conf,
                                 .opts = &conf_o };
    struct sl_redis_sink_opts badconf_o = { .url = bad, .key = key };
    struct sl_sink_conf badconf = { .name = "t-redis-badpw", .type = &sl_redis_sink.conf,
                                 .opts = &badconf_o };
    struct sl_sink *s, *sb;
    redisContext *rc;
    redisReply *r;
    int port = free_port();

    start_redis(port, pw);
    rc = redis_client("127.0.0.1", port, pw, -1); /* wait until it is up */
    snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%d/3", pw, port);
    snprintf(bad, sizeof(bad), "redis://:not-%s@127.0.0.1:%d/3", pw, port);
    snprintf(key, sizeof(key), "sluice:test:auth:%s", run_id);

    s = open_sink(&conf);
    write_all(s, 10, false);
    expect_all_ok(10);
    sl_sink_free(s);

    ncalls = 0;
    memset(slots, 0, sizeof(slots));
    sb = open_sink(&badconf);
    in_write = true;
    sl_sink_write(sb, "{\"x\":1}", 7, on_done, &slots[0]);
    in_write = false;
    cr_assert(run_until_calls(1, 10000));
    cr_assert_neq(slots[0].rc, 0, "a wrong password must not write");
    cr_assert(strstr(slots[0].msg, "WRONGPASS") || strstr(slots[0].msg, "NOAUTH") ||
                  strstr(slots[0].msg, "invalid"),
              "error should say why: %s", slots[0].msg);
    cr_assert_eq(sb->failures, 1);
    sl_sink_free(sb);

    r = redisCommand(rc, "SELECT 3");
    freeReplyObject(r);
    expect_stream(rc, key, 10);
    redisFree(rc);

    if (log_fd >= 0) {
        const char *log = read_log();

        cr_assert(strstr(log, pw) == NULL, "the password reached the log:\n%s", log);
        cr_assert(strstr(log, ":***@127.0.0.1") != NULL, "want the redacted url in:\n%s", log);
        cr_assert(strstr(log, "auth") != NULL, "want the auth failure logged:\n%s", log);
    }
}

/* ------------------------------------------------------------------ */
/* kafka                                                               */

static void kset(rd_kafka_conf_t *kc, const char *k, const char *v)
{
    char errstr[512];

    cr_assert_eq(rd_kafka_conf_set(kc, k, v, errstr, sizeof(errstr)), RD_KAFKA_CONF_OK, "%s: %s",
                 k, errstr);
}

static void create_topic(const char *brokers, const char *topic)
{
    char errstr[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_NewTopic_t *nt;
    rd_kafka_AdminOptions_t *opt;
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **tr;
    size_t n = 0;

    kset(kc, "bootstrap.servers", brokers);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    nt = rd_kafka_NewTopic_new(topic, 1, 1, errstr, sizeof(errstr));
    cr_assert(nt, "%s", errstr);
    opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opt, WAIT_MS, errstr, sizeof(errstr));
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    ev = rd_kafka_queue_poll(q, WAIT_MS + 5000);
    cr_assert(ev, "CreateTopics: no answer");
    cr_assert_eq(rd_kafka_event_error(ev), 0, "CreateTopics: %s", rd_kafka_event_error_string(ev));
    tr = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(rd_kafka_topic_result_error(tr[0]), 0, "create %s: %s", topic,
                 rd_kafka_topic_result_error_string(tr[0]));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
}

Test(sinks, kafka_round_trip)
{
    const char *brokers = need_env("SLUICE_TEST_KAFKA");
    char topic[160], group[200], errstr[512];
    struct sl_kafka_sink_opts conf_o = { .topic = topic };
    struct sl_sink_conf conf = { .name = "t-kafka", .type = &sl_kafka_sink.conf, .opts = &conf_o };
    struct sl_sink *s;
    rd_kafka_conf_t *kc;
    rd_kafka_t *consumer;
    rd_kafka_topic_partition_list_t *parts;
    int got = 0;
    long long deadline;

    conf_o.brokers = (char *)brokers;
    snprintf(topic, sizeof(topic), "sluice-test-sinks-%s", run_id);
    snprintf(group, sizeof(group), "%s-check", topic);
    create_topic(brokers, topic);

    s = open_sink(&conf);
    write_all(s, COUNT, false); /* librdkafka copies (RD_KAFKA_MSG_F_COPY) */
    expect_all_ok(COUNT);
    cr_assert_eq(s->writes, COUNT);
    sl_sink_free(s);

    kc = rd_kafka_conf_new();
    kset(kc, "bootstrap.servers", brokers);
    kset(kc, "group.id", group);
    kset(kc, "enable.auto.commit", "false");
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr));
    cr_assert(consumer, "%s", errstr);
    parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(consumer, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    deadline = now_ms() + WAIT_MS;
    while (got < COUNT) {
        rd_kafka_message_t *m;
        char want[256];

        cr_assert_lt(now_ms(), deadline, "only %d of %d messages consumed", got, COUNT);
        m = rd_kafka_consumer_poll(consumer, 200);
        if (!m)
            continue;
        if (m->err) {
            cr_log_warn("consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        record(want, sizeof(want), got);
        cr_assert_eq(m->len, strlen(want), "message %d: length %zu", got, m->len);
        cr_assert(memcmp(m->payload, want, m->len) == 0, "message %d: '%.*s'", got, (int)m->len,
                  (const char *)m->payload);
        cr_assert_eq(m->offset, got, "message %d at offset %lld: duplicates?", got,
                     (long long)m->offset);
        got++;
        rd_kafka_message_destroy(m);
    }
    {
        /* nothing beyond the 100 */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 500);

        if (m) {
            cr_assert(m->err != 0, "an extra message at offset %lld", (long long)m->offset);
            rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
}

Test(sinks, kafka_free_with_broker_down_stops_pending_writes)
{
    char brokers[64];
    struct sl_kafka_sink_opts conf_o = { .brokers = brokers, .topic = "sluice-nowhere" };
    struct sl_sink_conf conf = { .name = "t-kafka-down", .type = &sl_kafka_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    long long t0;

    snprintf(brokers, sizeof(brokers), "127.0.0.1:%d", free_port());
    s = open_sink(&conf);
    write_all(s, 5, false);
    in_write = true;
    sl_sink_write_reliable(s, "{\"r\":1}", 7, on_done, &slots[5]);
    in_write = false;
    run_for(500);
    cr_assert_eq(ncalls, 0, "nothing can be confirmed without a broker");
    t0 = now_ms();
    sl_sink_free(s);
    cr_assert_lt(now_ms() - t0, 5000, "closing must be bounded");
    cr_assert_eq(ncalls, 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(slots[i].calls, 1, "write %d: done ran %d times", i, slots[i].calls);
        cr_assert_eq(slots[i].rc, SL_ESTOPPED, "write %d: %s", i, sl_errname(slots[i].rc));
    }
    run_for(200);
    cr_assert_eq(ncalls, 6, "callbacks after sl_sink_free");
}

/* ------------------------------------------------------------------ */
/* postgres                                                            */

static PGconn *pg_client(const char *dsn)
{
    PGconn *pg = PQconnectdb(dsn);

    cr_assert(PQstatus(pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg));
    return pg;
}

static void pg_exec(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);

    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(res));
    PQclear(res);
}

/* Rows of `table`: exactly records 0..n-1 (compared as jsonb), in order
 * when `ordered`, else each once. */
static void expect_rows(PGconn *pg, const char *table, int n, bool ordered)
{
    char sql[512];
    PGresult *res;
    bool seen[COUNT] = { false };

    snprintf(sql, sizeof(sql), "SELECT (record->>'i')::int, record::text, created_at IS NOT NULL "
                               "FROM \"%s\" ORDER BY id", table);
    res = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    cr_assert_eq(PQntuples(res), n, "%d rows, want %d", PQntuples(res), n);
    for (int row = 0; row < n; row++) {
        int i = atoi(PQgetvalue(res, row, 0));
        char want[256], q[600];
        const char *params[2];
        PGresult *eq;

        if (ordered)
            cr_assert_eq(i, row, "row %d holds record %d", row, i);
        cr_assert(i >= 0 && i < n && !seen[i], "record %d twice or unknown", i);
        seen[i] = true;
        cr_assert_str_eq(PQgetvalue(res, row, 2), "t");
        record(want, sizeof(want), i);
        params[0] = PQgetvalue(res, row, 1);
        params[1] = want;
        snprintf(q, sizeof(q), "SELECT $1::jsonb = $2::jsonb");
        eq = PQexecParams(pg, q, 2, NULL, params, NULL, NULL, 0);
        cr_assert_str_eq(PQgetvalue(eq, 0, 0), "t", "row %d: %s, want %s", row, params[0], want);
        PQclear(eq);
    }
    PQclear(res);
}

Test(sinks, postgres_round_trip)
{
    const char *dsn = need_env("SLUICE_TEST_PG");
    char table[128], sql[256];
    struct sl_pg_sink_opts conf_o = { .table = table };
    struct sl_sink_conf conf = { .name = "t-pg", .type = &sl_postgres_sink.conf, .opts = &conf_o };
    struct sl_sink *s;
    PGconn *pg;

    conf_o.dsn = (char *)dsn;
    /* mixed case: the identifier must be quoted to survive */
    snprintf(table, sizeof(table), "Sluice_Test_%s", run_id);
    s = open_sink(&conf);
    write_all_borrowed(s, COUNT); /* plain writes borrow json until done */
    expect_all_ok(COUNT);
    cr_assert_eq(s->writes, COUNT);
    sl_sink_free(s);

    pg = pg_client(dsn);
    expect_rows(pg, table, COUNT, true);
    snprintf(sql, sizeof(sql), "DROP TABLE \"%s\"", table);
    pg_exec(pg, sql);
    PQfinish(pg);
}

Test(sinks, postgres_reconnects_after_its_connection_is_killed)
{
    const char *env = need_env("SLUICE_TEST_PG");
    char dsn[512], table[128], sql[512];
    struct sl_pg_sink_opts conf_o = { .dsn = dsn, .table = table };
    struct sl_sink_conf conf = { .name = "t-pg-kill", .type = &sl_postgres_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    PGconn *pg;
    PGresult *res;

    snprintf(table, sizeof(table), "sluice_test_kill_%s", run_id);
    snprintf(dsn, sizeof(dsn), "%s application_name=%s", env, table);
    s = open_sink(&conf);
    write_all(s, COUNT / 2, true);
    cr_assert(run_until_calls(COUNT / 2, WAIT_MS));

    pg = pg_client(env);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = '%s') t",
             table);
    res = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "1", "the sink's connection should exist");
    PQclear(res);

    for (int i = COUNT / 2; i < COUNT; i++) {
        char json[256];
        int len = record(json, sizeof(json), i);

        in_write = true;
        sl_sink_write_reliable(s, json, (size_t)len, on_done, &slots[i]);
        in_write = false;
    }
    expect_all_ok(COUNT);
    cr_assert_gt(s->failures, 0, "the killed connection should have failed a write");
    sl_sink_free(s);

    expect_rows(pg, table, COUNT, false);
    snprintf(sql, sizeof(sql), "DROP TABLE \"%s\"", table);
    pg_exec(pg, sql);
    PQfinish(pg);
}

Test(sinks, postgres_bad_json_fails_without_retry_hint)
{
    const char *dsn = need_env("SLUICE_TEST_PG");
    char table[128], sql[256];
    struct sl_pg_sink_opts conf_o = { .table = table };
    struct sl_sink_conf conf = { .name = "t-pg-bad", .type = &sl_postgres_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    PGconn *pg;

    conf_o.dsn = (char *)dsn;
    snprintf(table, sizeof(table), "sluice_test_bad_%s", run_id);
    s = open_sink(&conf);
    in_write = true;
    sl_sink_write(s, "{not json", 9, on_done, &slots[0]);
    sl_sink_write(s, "{\"ok\":1}", 8, on_done, &slots[1]);
    in_write = false;
    cr_assert(run_until_calls(2, WAIT_MS));
    cr_assert_eq(slots[0].rc, SL_EIO, "%s", sl_errname(slots[0].rc));
    cr_assert(!slots[0].retriable);
    cr_assert(strstr(slots[0].msg, "json") != NULL, "error should say why: %s", slots[0].msg);
    cr_assert_eq(slots[1].rc, 0, "the next write still works: %s", slots[1].msg);
    cr_assert_eq(s->failures, 1);
    cr_assert_eq(s->writes, 1);
    sl_sink_free(s);
    pg = pg_client(dsn);
    snprintf(sql, sizeof(sql), "DROP TABLE \"%s\"", table);
    pg_exec(pg, sql);
    PQfinish(pg);
}

/* ------------------------------------------------------------------ */
/* sqlite                                                              */

Test(sinks, sqlite_round_trip)
{
    char path[512];
    struct sl_sqlite_sink_opts conf_o = { .path = path };
    struct sl_sink_conf conf = { .name = "t-sqlite", .type = &sl_sqlite_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    sqlite3 *db;
    sqlite3_stmt *st;
    int n = 0;

    make_tmpdir();
    snprintf(path, sizeof(path), "%s/dlq/dlq.db", tmpdir);
    s = open_sink(&conf);
    write_all(s, COUNT, false); /* copied for the worker */
    expect_all_ok(COUNT);
    cr_assert_eq(s->writes, COUNT);
    sl_sink_free(s);
    sl_pool_free(pool); /* let the close job finish */
    pool = NULL;

    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT id, created_at, record FROM dlq ORDER BY id", -1,
                                    &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        char want[256];

        cr_assert(n < COUNT);
        record(want, sizeof(want), n);
        cr_assert(sqlite3_column_text(st, 1) != NULL, "created_at is set");
        cr_assert_str_eq((const char *)sqlite3_column_text(st, 2), want, "row %d", n);
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    cr_assert_eq(n, COUNT, "%d rows, want %d", n, COUNT);
    rm_tmpdir();
}

Test(sinks, sqlite_not_a_database_fails_on_write)
{
    char path[512];
    struct sl_sqlite_sink_opts conf_o = { .path = path };
    struct sl_sink_conf conf = { .name = "t-sqlite-bad", .type = &sl_sqlite_sink.conf,
                                 .opts = &conf_o };
    struct sl_sink *s;
    FILE *f;

    make_tmpdir();
    cr_assert_eq(mkdir(tmpdir, 0755), 0);
    snprintf(path, sizeof(path), "%s/junk.db", tmpdir);
    f = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database\n", f);
    fclose(f);
    s = open_sink(&conf);
    in_write = true;
    sl_sink_write(s, "{\"x\":1}", 7, on_done, &slots[0]);
    in_write = false;
    cr_assert(run_until_calls(1, WAIT_MS));
    cr_assert_neq(slots[0].rc, 0);
    cr_assert(strstr(slots[0].msg, path) && strstr(slots[0].msg, "not a database"),
              "error should name the file and say why: %s", slots[0].msg);
    sl_sink_free(s);
    rm_tmpdir();
}

/* ------------------------------------------------------------------ */
/* errors and lifetimes                                                */

static void expect_new_fails(struct sl_sink_conf *conf, int code, const char *needle,
                             const char *secret)
{
    struct sl_sink *s = (struct sl_sink *)1;
    struct sl_err err;
    int rc;

    sl_err_clear(&err);
    rc = sl_sink_new(base, pool, conf, &s, &err);
    cr_assert_eq(rc, code, "%s: got %s (%s), want %s", conf->name, sl_errname(rc), err.msg,
                 sl_errname(code));
    cr_assert_eq(err.code, code);
    cr_assert(s == NULL, "*out must be NULL on failure");
    cr_assert(strstr(err.msg, needle) != NULL, "%s: '%s' should mention '%s'", conf->name,
              err.msg, needle);
    if (secret)
        cr_assert(strstr(err.msg, secret) == NULL, "secret in error: %s", err.msg);
}

Test(sinks, bad_configurations_fail_clearly)
{
    char dir[512];
    struct sl_redis_sink_opts ro = { .url = "http://x:1", .key = "k" };
    struct sl_pg_sink_opts po = { .dsn = "host=127.0.0.1 password=hunter2 bogus" };
    struct sl_kafka_sink_opts ko = { .brokers = "", .topic = "t" };
    struct sl_file_sink_opts fo = { .path = "/proc/sluice-no/such/dir/x.jsonl" };
    struct sl_sqlite_sink_opts so = { 0 };
    const struct sl_conf_type bogus = { .name = "bogus" };
    struct sl_sink_conf c;

    c = (struct sl_sink_conf){ .name = "r1", .type = &sl_redis_sink.conf, .opts = &ro };
    expect_new_fails(&c, SL_ECONFIG, "bad redis url 'http://x:1'", NULL);
    ro.url = "redis://127.0.0.1:port";
    expect_new_fails(&c, SL_ECONFIG, "port", NULL);
    ro.url = "redis://:hunter2@127.0.0.1:99999";
    expect_new_fails(&c, SL_ECONFIG, "port must be a number", "hunter2");
    ro.url = "redis://127.0.0.1:6379/db";
    expect_new_fails(&c, SL_ECONFIG, "database", NULL);
    ro.url = "redis://:pw@";
    expect_new_fails(&c, SL_ECONFIG, "host", NULL);
    ro.url = "rediss://127.0.0.1:6379";
    expect_new_fails(&c, SL_EUNSUPPORTED, "tls", NULL);
    ro.url = "redis://127.0.0.1:6379";
    ro.key = NULL;
    expect_new_fails(&c, SL_ECONFIG, "needs a key", NULL);

    c = (struct sl_sink_conf){ .name = "p1", .type = &sl_postgres_sink.conf, .opts = &po };
    expect_new_fails(&c, SL_ECONFIG, "bad postgres dsn", "hunter2");
    po.dsn = "";
    expect_new_fails(&c, SL_ECONFIG, "needs a dsn", NULL);

    c = (struct sl_sink_conf){ .name = "k1", .type = &sl_kafka_sink.conf, .opts = &ko };
    expect_new_fails(&c, SL_ECONFIG, "needs brokers", NULL);
    ko.brokers = "127.0.0.1:9092";
    ko.topic = NULL;
    expect_new_fails(&c, SL_ECONFIG, "needs a topic", NULL);

    c = (struct sl_sink_conf){ .name = "f1", .type = &sl_file_sink.conf, .opts = &fo };
    expect_new_fails(&c, SL_EIO, "cannot create directory /proc/sluice-no", NULL);

    make_tmpdir();
    snprintf(dir, sizeof(dir), "%s/adir", tmpdir);
    cr_assert_eq(mkdir(tmpdir, 0755), 0);
    cr_assert_eq(mkdir(dir, 0755), 0);
    so.path = dir;
    c = (struct sl_sink_conf){ .name = "s1", .type = &sl_sqlite_sink.conf, .opts = &so };
    expect_new_fails(&c, SL_ECONFIG, "not a regular file", NULL);
    fo.path = dir;
    c = (struct sl_sink_conf){ .name = "f2", .type = &sl_file_sink.conf, .opts = &fo };
    expect_new_fails(&c, SL_EIO, "cannot open", NULL);
    rm_tmpdir();

    c = (struct sl_sink_conf){ .name = "x1", .type = &bogus };
    expect_new_fails(&c, SL_ECONFIG, "unknown type", NULL);

    {
        struct sl_sink *s = NULL;
        struct sl_err err;

        fo.path = "/tmp/x.jsonl";
        c = (struct sl_sink_conf){ .name = "f3", .type = &sl_file_sink.conf, .opts = &fo };
        cr_assert_eq(sl_sink_new(base, NULL, &c, &s, &err), SL_EINVAL, "no pool: %s", err.msg);
    }
    sl_sink_free(NULL);
}

Test(sinks, unreachable_servers_fail_writes_retriably)
{
    char url[64], dsn[128];
    struct sl_redis_sink_opts rc_o = { .url = url, .key = "k" };
    struct sl_sink_conf rc = { .name = "r-down", .type = &sl_redis_sink.conf, .opts = &rc_o };
    struct sl_pg_sink_opts pc_o = { .dsn = dsn };
    struct sl_sink_conf pc = { .name = "p-down", .type = &sl_postgres_sink.conf, .opts = &pc_o };
    struct sl_sink *rs, *ps;
    int port = free_port();

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d dbname=x user=x password=hunter2", port);
    rs = open_sink(&rc);
    ps = open_sink(&pc);
    in_write = true;
    sl_sink_write(rs, "{\"a\":1}", 7, on_done, &slots[0]);
    sl_sink_write(ps, "{\"a\":1}", 7, on_done, &slots[1]);
    sl_sink_write(ps, "", 0, on_done, &slots[2]);
    in_write = false;
    cr_assert(run_until_calls(3, 15000), "%d of 3 writes reported", ncalls);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(slots[i].calls, 1);
        cr_assert(slots[i].rc == SL_ECONN, "write %d: %s %s", i, sl_errname(slots[i].rc),
                  slots[i].msg);
        cr_assert(slots[i].retriable, "write %d: %s", i, slots[i].msg);
        cr_assert(strstr(slots[i].msg, "refused") != NULL, "write %d should say why: %s", i,
                  slots[i].msg);
    }
    cr_assert_eq(slots[2].rc, SL_EINVAL, "empty record: %s", sl_errname(slots[2].rc));
    cr_assert_eq(rs->failures, 1);
    cr_assert_gt(ps->failures, 0);
    sl_sink_free(rs);
    sl_sink_free(ps);
    cr_assert(strstr(read_log(), "hunter2") == NULL, "password logged:\n%s", read_log());
}

Test(sinks, free_ends_pending_reliable_writes_once)
{
    char url[64];
    struct sl_redis_sink_opts conf_o = { .url = url, .key = "k" };
    struct sl_sink_conf conf = { .name = "r-stop", .type = &sl_redis_sink.conf, .opts = &conf_o };
    struct sl_sink *s;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    s = open_sink(&conf);
    write_all(s, 5, true);
    run_for(700);
    cr_assert_eq(ncalls, 0);
    cr_assert_gt(s->failures, 4, "each write should have failed at least once");
    sl_sink_free(s);
    cr_assert_eq(ncalls, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(slots[i].calls, 1, "write %d: done ran %d times", i, slots[i].calls);
        cr_assert_eq(slots[i].rc, SL_ESTOPPED, "write %d: %s", i, sl_errname(slots[i].rc));
        cr_assert(strstr(slots[i].msg, "stopped") != NULL, "%s", slots[i].msg);
    }
    run_for(300);
    cr_assert_eq(ncalls, 5, "callbacks after sl_sink_free");
}

/* A done callback that frees its own sink: the sink must survive its
 * own callbacks (no use after free under ASan) and end the rest once. */
static struct sl_sink *self_free_sink;

static void on_done_free(void *arg, int rc, const struct sl_err *err)
{
    on_done(arg, rc, err);
    if (self_free_sink) {
        struct sl_sink *s = self_free_sink;

        self_free_sink = NULL;
        sl_sink_free(s);
    }
}

static void free_from_callback(struct sl_sink_conf *conf, bool reliable, int n)
{
    self_free_sink = open_sink(conf);
    for (int i = 0; i < n; i++) {
        char json[256];
        int len = record(json, sizeof(json), i);

        record(borrowed[i], sizeof(borrowed[i]), i);
        in_write = true;
        if (reliable)
            sl_sink_write_reliable(self_free_sink, json, (size_t)len, on_done_free, &slots[i]);
        else
            sl_sink_write(self_free_sink, borrowed[i], (size_t)len, on_done_free, &slots[i]);
        in_write = false;
    }
    cr_assert(run_until_calls(n, WAIT_MS), "%s: %d of %d callbacks", conf->name, ncalls, n);
    cr_assert(self_free_sink == NULL);
    run_for(300);
    cr_assert_eq(ncalls, n, "%s: callbacks after the free", conf->name);
    for (int i = 0; i < n; i++)
        cr_assert_eq(slots[i].calls, 1, "%s: write %d ran %d times", conf->name, i,
                     slots[i].calls);
    ncalls = 0;
    memset(slots, 0, sizeof(slots));
}

Test(sinks, done_callbacks_may_free_the_sink)
{
    char path[512], key[160], table[128], sql[256];
    struct sl_file_sink_opts fc_o = { .path = path, .fsync = true };
    struct sl_sink_conf fc = { .name = "f-self", .type = &sl_file_sink.conf, .opts = &fc_o };
    struct sl_redis_sink_opts rc_o = { .key = key };
    struct sl_sink_conf rc = { .name = "r-self", .type = &sl_redis_sink.conf, .opts = &rc_o };
    struct sl_pg_sink_opts pc_o = { .table = table };
    struct sl_sink_conf pc = { .name = "p-self", .type = &sl_postgres_sink.conf, .opts = &pc_o };
    struct sl_sqlite_sink_opts sc_o = { 0 };
    struct sl_sink_conf sc = { .name = "s-self", .type = &sl_sqlite_sink.conf, .opts = &sc_o };
    char spath[512];
    char down[64];
    struct sl_redis_sink_opts dc_o = { .url = down, .key = key };
    struct sl_sink_conf dc = { .name = "r-self-down", .type = &sl_redis_sink.conf, .opts = &dc_o };
    PGconn *pg;

    make_tmpdir();
    snprintf(path, sizeof(path), "%s/self.jsonl", tmpdir);
    snprintf(spath, sizeof(spath), "%s/self.db", tmpdir);
    sc_o.path = spath;
    snprintf(key, sizeof(key), "sluice:test:self:%s", run_id);
    snprintf(table, sizeof(table), "sluice_test_self_%s", run_id);
    snprintf(down, sizeof(down), "redis://127.0.0.1:%d", free_port());
    rc_o.url = (char *)need_env("SLUICE_TEST_REDIS");
    pc_o.dsn = (char *)need_env("SLUICE_TEST_PG");

    free_from_callback(&fc, false, 50);
    free_from_callback(&rc, false, 50);
    free_from_callback(&rc, true, 50);
    free_from_callback(&pc, false, 50);
    free_from_callback(&sc, false, 50);
    free_from_callback(&dc, false, 20);

    pg = pg_client(pc_o.dsn);
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS \"%s\"", table);
    pg_exec(pg, sql);
    PQfinish(pg);
    {
        char host[128];
        int port;
        redisContext *c;
        redisReply *r;

        parse_redis_env(host, sizeof(host), &port);
        c = redis_client(host, port, th_redis_password(), -1);
        r = redisCommand(c, "DEL %s", key);
        freeReplyObject(r);
        redisFree(c);
    }
    rm_tmpdir();
}

/* The runtime frees the worker pool before the sinks: sinks that use the
 * pool must still end every write exactly once and free everything. */
Test(sinks, sinks_outlive_the_pool)
{
    char fpath[512], spath[512];
    struct sl_file_sink_opts fc_o = { .path = fpath, .fsync = true };
    struct sl_sink_conf fc = { .name = "f-nopool", .type = &sl_file_sink.conf, .opts = &fc_o };
    struct sl_sqlite_sink_opts sc_o = { .path = spath };
    struct sl_sink_conf sc = { .name = "s-nopool", .type = &sl_sqlite_sink.conf, .opts = &sc_o };
    struct sl_sink *fs, *ss;

    make_tmpdir();
    snprintf(fpath, sizeof(fpath), "%s/nopool.jsonl", tmpdir);
    snprintf(spath, sizeof(spath), "%s/nopool.db", tmpdir);
    fs = open_sink(&fc);
    ss = open_sink(&sc);
    for (int i = 0; i < 20; i++) {
        char json[256];
        int len = record(json, sizeof(json), i);

        in_write = true;
        sl_sink_write(i % 2 ? fs : ss, json, (size_t)len, on_done, &slots[i]);
        in_write = false;
    }
    cr_assert(run_until_calls(20, WAIT_MS));
    /* more writes, then the pool goes before the loop runs again */
    for (int i = 20; i < 60; i++) {
        char json[256];
        int len = record(json, sizeof(json), i);

        in_write = true;
        sl_sink_write(i % 2 ? fs : ss, json, (size_t)len, on_done, &slots[i]);
        in_write = false;
    }
    sl_pool_free(pool);
    pool = NULL;
    sl_sink_free(fs);
    sl_sink_free(ss);
    cr_assert_eq(ncalls, 60, "%d of 60 writes reported", ncalls);
    for (int i = 0; i < 60; i++) {
        cr_assert_eq(slots[i].calls, 1, "write %d: done ran %d times", i, slots[i].calls);
        cr_assert(slots[i].rc == 0 || slots[i].rc == SL_ESTOPPED, "write %d: %s", i,
                  sl_errname(slots[i].rc));
        if (i < 20)
            cr_assert_eq(slots[i].rc, 0);
    }
    rm_tmpdir();
}

Test(sinks, config_buffer_builds_sinks)
{
    char yaml[1024], path[512];
    struct sl_config *cfg = NULL;
    struct sl_diags d;
    struct sl_sink *s;
    const struct sl_sink_conf *sc;

    make_tmpdir();
    snprintf(path, sizeof(path), "%s/cfg.jsonl", tmpdir);
    snprintf(yaml, sizeof(yaml),
             "sinks:\n"
             "  audit: { type: file, path: %s }\n",
             path);
    sl_diags_init(&d, "test.yaml");
    if (sl_config_load_buffer("test.yaml", "/tmp", yaml, strlen(yaml), &sl_registry, &cfg,
                              &d) != 0) {
        sl_diags_print(&d, stderr);
        cr_assert_fail("the config should load");
    }
    sl_diags_destroy(&d);
    sc = sl_config_sink(cfg, "audit");
    cr_assert(sc);
    cr_assert(((const struct sl_file_sink_opts *)sc->opts)->fsync, "fsync defaults to true");
    s = open_sink((struct sl_sink_conf *)sc);
    cr_assert_str_eq(s->inst, "sink:audit");
    cr_assert_str_eq(s->ops->name, "file");
    write_all(s, 3, true);
    expect_all_ok(3);
    sl_sink_free(s);
    sl_config_free(cfg);
    rm_tmpdir();
}
