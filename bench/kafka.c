/* bench kafka: records per second through a Kafka source, end to end.
 *
 * A topic of 4 partitions on the broker of tests/services
 * ($SLUICE_TEST_KAFKA; started with `tests/services start kafka` when it
 * is not set) gets N = 1,000,000 records of 100 bytes, produced from here
 * before anything is timed.
 *
 * Baseline: `kcat -C -e -o beginning -q` reading the whole topic to
 * /dev/null: librdkafka's consumer with no work per record and nothing
 * committed.
 *
 * sluice: `sluice run` with a `type: kafka` source on the topic
 * (batch_size 1000, window 100 ms, its own consumer group) invoking the
 * no-op C handler tests/handlers/kafka_noop.c in its sandbox, with one
 * provisioned environment per partition lane (started with sluice, before
 * the consumer: the figure is the Kafka path, not cold starts); timed from
 * the start of the process until the group's committed offsets reach the
 * end of every partition, so every record was fetched, shaped into a
 * SelfManagedKafka event, invoked and committed. Target: ratio >= 0.5.
 *
 * The temporary directory (/tmp/sluice-bench-kafka-XXXXXX, with sluice's
 * log) is removed on success, kept and named on failure. */
#include <librdkafka/rdkafka.h>

#include "srcbench.h"

#define NAME   "kafka"
#define N      1000000
#define PARTS  4
#define VSIZE  100

static char brokers[128], topic[96], group[128];

static rd_kafka_t *client(rd_kafka_type_t type, const char *const *kv)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char errstr[256];
    rd_kafka_t *rk;

    rd_kafka_conf_set(c, "bootstrap.servers", brokers, errstr, sizeof(errstr));
    for (; kv && kv[0]; kv += 2)
        if (rd_kafka_conf_set(c, kv[0], kv[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "bench %s: %s\n", NAME, errstr);
            exit(1);
        }
    rk = rd_kafka_new(type, c, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench %s: %s\n", NAME, errstr);
        exit(1);
    }
    return rk;
}

static int create_topic(void)
{
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    char errstr[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, PARTS, 1, errstr, sizeof(errstr));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **res;
    size_t n;
    int rc = -1;

    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, 30000);
    if (ev) {
        res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        rc = n == 1 && rd_kafka_topic_result_error(res[0]) == 0 ? 0 : -1;
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

static int produce(void)
{
    static const char *const kv[] = { "linger.ms", "20", "batch.num.messages", "10000",
                                      "queue.buffering.max.messages", "1000000", "acks", "1",
                                      NULL };
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, kv);
    char v[VSIZE + 1];

    for (int i = 0; i < N; i++) {
        rd_kafka_resp_err_t e;
        snprintf(v, sizeof(v), "{\"n\":%09d,\"pad\":\"%0*d\"}", i, VSIZE - 24, 0);
        do {
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(i % PARTS),
                                  RD_KAFKA_V_VALUE(v, VSIZE), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 10);
        } while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL);
        if (e)
            return -1;
    }
    if (rd_kafka_flush(rk, 120000))
        return -1;
    rd_kafka_destroy(rk);
    return 0;
}

static double baseline(void)
{
    char cmd[400];
    double t0 = now_us();

    snprintf(cmd, sizeof(cmd), "kcat -C -b %s -t %s -e -o beginning -q >/dev/null", brokers,
             topic);
    if (system(cmd) != 0)
        return -1;
    return N / ((now_us() - t0) / 1e6);
}

/* Sum of committed offsets of the sluice group over the topic. */
static long long committed(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    long long sum = 0;

    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    if (rd_kafka_committed(rk, l, 5000) == 0)
        for (int p = 0; p < PARTS; p++)
            sum += l->elems[p].offset > 0 ? l->elems[p].offset : 0;
    rd_kafka_topic_partition_list_destroy(l);
    return sum;
}

static bool all_committed(void *rk)
{
    return committed(rk) >= N;
}

static double run_sluice(struct sb_bench *b)
{
    const char *kv[] = { "group.id", group, NULL };
    rd_kafka_t *rk;
    char fn[96];
    double secs;

    /* one provisioned environment per partition lane */
    snprintf(fn, sizeof(fn), "memory_mb: 256, timeout_s: 30, provisioned_concurrency: %d", PARTS);
    if (sb_config(b, fn, "kafka",
                  "    brokers: %s\n    topics: [%s]\n    consumer_group_id: %s\n"
                  "    batch_size: 1000\n    maximum_batching_window_ms: 100ms\n",
                  brokers, topic, group) != 0)
        return -1;
    rk = client(RD_KAFKA_CONSUMER, kv);
    secs = sb_run_sluice(b, all_committed, rk, 50, 600);
    rd_kafka_destroy(rk);
    return secs > 0 ? N / secs : -1;
}

int main(void)
{
    const char *b = getenv("SLUICE_TEST_KAFKA");
    struct sb_bench sb;
    double base, value;

    if (!b || !*b) {
        FILE *p;
        if (system("tests/services start kafka >/dev/null") != 0 ||
            !(p = popen("tests/services env 2>/dev/null | sed -n "
                        "'s/^export SLUICE_TEST_KAFKA=//p'", "r"))) {
            fprintf(stderr, "bench %s: no broker (tests/services start kafka failed)\n", NAME);
            return 1;
        }
        if (!fgets(brokers, sizeof(brokers), p))
            brokers[0] = '\0';
        pclose(p);
        brokers[strcspn(brokers, "\n")] = '\0';
    } else {
        snprintf(brokers, sizeof(brokers), "%s", b);
    }
    if (sb_open(&sb, NAME, "kafka", "kafka_noop") != 0)
        return 1;
    snprintf(topic, sizeof(topic), "bench-kafka-%d-%lld", (int)getpid(), (long long)wall_ms());
    snprintf(group, sizeof(group), "%s-sluice", topic);
    if (create_topic() != 0)
        return sb_fail(&sb, "cannot create the topic");
    {
        double t0 = now_us();
        if (produce() != 0)
            return sb_fail(&sb, "cannot produce the records");
        fprintf(stderr, "bench %s: produced %d records of %d bytes in %.1f s\n", NAME, N, VSIZE,
                (now_us() - t0) / 1e6);
    }
    if ((base = baseline()) <= 0)
        return sb_fail(&sb, "kcat failed");
    fprintf(stderr, "bench %s: kcat read them at %.0f records/s\n", NAME, base);
    if ((value = run_sluice(&sb)) <= 0)
        return sb_fail(&sb, "sluice did not commit every record (see sluice.log)");
    fprintf(stderr, "bench %s: sluice delivered and committed them at %.0f records/s\n", NAME,
            value);
    sb_report(&sb, value, "records/s", "kcat", base);
    return 0;
}
