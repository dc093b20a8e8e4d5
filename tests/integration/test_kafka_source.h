/* Shared by the Kafka source tests: topics and records through librdkafka,
 * a `sluice run` of a config written here, and the handler's output
 * (tests/handlers/kafka_rec.c: "<topic> <partition> <offset> <key> <pid>"
 * per accepted record) read back. */
#ifndef SLUICE_TEST_KAFKA_SOURCE_H
#define SLUICE_TEST_KAFKA_SOURCE_H

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

struct kt {
    char  root[1024];
    char  dir[256];
    char  topic[128];
    char  cfg[400], log[400], out[400], dlq[400];
    const char *brokers;
    pid_t sluice;
};

/* One accepted record, as the handler logged it. */
struct kline {
    int       partition;
    long long offset;
    char      key[64];
    int       pid;
};

static inline double kt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void kt_init(struct kt *t, const char *name)
{
    static int seq;
    struct timespec ts;

    memset(t, 0, sizeof(*t));
    t->brokers = getenv("SLUICE_TEST_KAFKA");
    cr_assert(t->brokers && *t->brokers, "SLUICE_TEST_KAFKA is not set: eval \"$(tests/services env)\"");
    cr_assert_not_null(getcwd(t->root, sizeof(t->root)));
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(t->topic, sizeof(t->topic), "kt-%s-%d-%ld-%d", name, (int)getpid(),
             (long)ts.tv_nsec, seq++);
    snprintf(t->dir, sizeof(t->dir), "/tmp/sluice-test-%s", t->topic);
    mkdir(t->dir, 0755);
    /* the relaxed handler runs as its function's uid, not root: it writes
     * its output here (sluice's data_dir is a private subdirectory) */
    chmod(t->dir, 01777);
    snprintf(t->cfg, sizeof(t->cfg), "%s/sluice.yaml", t->dir);
    snprintf(t->log, sizeof(t->log), "%s/sluice.log", t->dir);
    snprintf(t->out, sizeof(t->out), "%s/out.txt", t->dir);
    snprintf(t->dlq, sizeof(t->dlq), "%s/dlq.jsonl", t->dir);
}

static inline void kt_conf_set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char errstr[256];
    cr_assert_eq(rd_kafka_conf_set(c, k, v, errstr, sizeof(errstr)), RD_KAFKA_CONF_OK, "%s", errstr);
}

static inline void kt_create_topic(const struct kt *t, const char *topic, int partitions)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char errstr[256];
    rd_kafka_t *rk;
    rd_kafka_NewTopic_t *nt;
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **res;
    size_t n;

    kt_conf_set(c, "bootstrap.servers", t->brokers);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, 30000);
    cr_assert_not_null(ev, "no CreateTopics result");
    res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    cr_assert(n == 1 && (rd_kafka_topic_result_error(res[0]) == 0 ||
                         rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS),
              "create topic %s: %s", topic, rd_kafka_topic_result_error_string(res[0]));
    rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static inline rd_kafka_t *kt_producer(const struct kt *t)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char errstr[256];
    rd_kafka_t *rk;

    kt_conf_set(c, "bootstrap.servers", t->brokers);
    kt_conf_set(c, "linger.ms", "5");
    kt_conf_set(c, "enable.idempotence", "true");
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

/* One record to `partition` (-1: by key), value and key as text;
 * ts_ms 0 = now. */
static inline void kt_produce(rd_kafka_t *rk, const char *topic, int partition, const char *key,
                              const char *value, int64_t ts_ms)
{
    rd_kafka_resp_err_t e;

    do {
        e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                              RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
                              RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                              RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_TIMESTAMP(ts_ms), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 50);
    } while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    cr_assert_eq(e, 0, "produce: %s", rd_kafka_err2str(e));
}

static inline void kt_flush(rd_kafka_t *rk)
{
    cr_assert_eq(rd_kafka_flush(rk, 60000), 0, "flush timed out");
    rd_kafka_destroy(rk);
}

/* The config: function `rec` (kafka_rec, relaxed sandbox so it can write
 * $OUT), source `src` on the test topic with `source_extra` keys, a file
 * sink `dlq`. `env_extra` adds handler variables ("K: v, "). */
static inline void kt_config(struct kt *t, const char *path, const char *out, const char *env_extra,
                             const char *source_extra)
{
    FILE *f = fopen(path, "w");
    char env[1024] = "";
    const char *at;

    /* "@DIR@" in env_extra is the test's directory */
    if (env_extra && (at = strstr(env_extra, "@DIR@")))
        snprintf(env, sizeof(env), "%.*s%s%s", (int)(at - env_extra), env_extra, t->dir, at + 5);
    else if (env_extra)
        snprintf(env, sizeof(env), "%s", env_extra);

    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  rec:\n"
            "    handler: %s/%s/test-handlers/kafka_rec\n"
            "    sandbox: relaxed\n"
            "    timeout_s: 20\n"
            "    environment: { %sOUT: %s }\n"
            "sources:\n"
            "  src:\n"
            "    type: kafka\n"
            "    function: rec\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s-group\n"
            "%s"
            "sinks:\n"
            "  dlq: { type: file, path: %s, fsync: false }\n"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data }\n",
            t->root, th_build(), env, out, t->brokers, t->topic, t->topic,
            source_extra ? source_extra : "", t->dlq, th_free_port(), t->dir);
    fclose(f);
}

static inline pid_t kt_start(struct kt *t, const char *cfg)
{
    pid_t pid = th_run_sluice(t->root, cfg, t->log);
    cr_assert_gt(pid, 0);
    return pid;
}

static inline int kt_stop(pid_t pid, int sig)
{
    int st = 0;

    if (pid <= 0)
        return -1;
    kill(pid, sig);
    waitpid(pid, &st, 0);
    return st;
}

static inline size_t kt_count_lines(const char *dir, const char *name)
{
    char path[600], line[256];
    size_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (!(f = fopen(path, "r")))
        return 0;
    while (fgets(line, sizeof(line), f))
        n++;
    fclose(f);
    return n;
}

/* The handler's lines (at most `max`); returns how many. */
static inline size_t kt_lines(const char *path, struct kline *v, size_t max)
{
    FILE *f = fopen(path, "r");
    char topic[160];
    size_t n = 0;
    struct kline l;

    if (!f)
        return 0;
    while (n < max && fscanf(f, "%159s %d %lld %63s %d", topic, &l.partition, &l.offset, l.key,
                             &l.pid) == 5)
        v[n++] = l;
    fclose(f);
    return n;
}

/* Distinct (partition, offset) pairs among the lines, partitions < 16. */
static inline size_t kt_distinct(const struct kline *v, size_t n, long long per_part)
{
    size_t d = 0;
    char *seen = calloc(16 * (size_t)per_part, 1);

    for (size_t i = 0; i < n; i++) {
        size_t at = (size_t)v[i].partition * (size_t)per_part + (size_t)v[i].offset;
        if (v[i].partition < 16 && v[i].offset < per_part && !seen[at]) {
            seen[at] = 1;
            d++;
        }
    }
    free(seen);
    return d;
}

/* Wait until the handler accepted `want` distinct records (or timeout). */
static inline size_t kt_wait(const char *path, size_t want, long long per_part, double timeout_s)
{
    static struct kline v[400000];
    double end = kt_now() + timeout_s;
    size_t d = 0;

    while (kt_now() < end) {
        size_t n = kt_lines(path, v, sizeof(v) / sizeof(v[0]));
        d = kt_distinct(v, n, per_part);
        if (d >= want)
            break;
        usleep(100000);
    }
    return d;
}

/* True when `log` contains `what` (within `timeout_s`). */
static inline bool kt_log_has(const char *log, const char *what, double timeout_s)
{
    double end = kt_now() + timeout_s;
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' '%s'", what, log);
    do {
        if (system(cmd) == 0)
            return true;
        usleep(100000);
    } while (kt_now() < end);
    return false;
}

static inline void kt_cleanup(struct kt *t)
{
    char cmd[400];

    if (t->sluice > 0)
        kt_stop(t->sluice, SIGKILL);
    t->sluice = 0;
    th_scan_logs(t->dir);
    if (!getenv("SLUICE_TEST_KEEP")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

#endif
