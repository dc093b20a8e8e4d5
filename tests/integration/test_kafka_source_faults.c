/* Kafka source when things break: sluice killed with SIGKILL three times
 * in a 100,000-record run, two instances sharing one consumer group, and
 * the broker stopped and started mid-stream (a private broker, so the
 * shared one stays up). Every record must be processed at least once;
 * duplicates are counted and printed. */
#include "test_kafka_source.h"

static struct kt t;
static struct kline lines[400000];

static void teardown(void)
{
    kt_cleanup(&t);
}

TestSuite(kafka_faults, .fini = teardown, .timeout = 170);

/* Distinct records in a and b together; `both`: how many are in each. */
static size_t union_count(const struct kline *a, size_t na, const struct kline *b, size_t nb,
                          int per_part, size_t *both)
{
    char *seen = calloc(16 * (size_t)per_part, 1);
    size_t n = 0, two = 0;

    for (size_t i = 0; i < na; i++)
        if (a[i].partition < 16 && a[i].offset < per_part)
            seen[a[i].partition * per_part + a[i].offset] |= 1;
    for (size_t i = 0; i < nb; i++)
        if (b[i].partition < 16 && b[i].offset < per_part)
            seen[b[i].partition * per_part + b[i].offset] |= 2;
    for (size_t i = 0; i < 16 * (size_t)per_part; i++) {
        n += seen[i] != 0;
        two += seen[i] == 3;
    }
    free(seen);
    if (both)
        *both = two;
    return n;
}

static void produce_n(const char *topic, int parts, int per_part, int width)
{
    rd_kafka_t *rk = kt_producer(&t);
    char v[256];

    for (int i = 0; i < per_part; i++)
        for (int p = 0; p < parts; p++) {
            snprintf(v, sizeof(v), "{\"i\":%d,\"pad\":\"%.*s\"}", i, width,
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            kt_produce(rk, topic, p, NULL, v, 0);
        }
    kt_flush(rk);
}

Test(kafka_faults, sigkill_three_times_loses_nothing)
{
    const int parts = 4, per_part = 25000, total = parts * per_part;
    size_t n, d, dups;
    /* per kill: the batch in flight in each lane, and those that finished
     * while their commit was on its way (at most as many again) */
    const size_t inflight_bound = 3 * 2 * (size_t)parts * 500;

    kt_init(&t, "kill");
    kt_create_topic(&t, t.topic, parts);
    produce_n(t.topic, parts, per_part, 20);
    /* a killed member holds its partitions until its session times out */
    kt_config(&t, t.cfg, t.out, NULL,
              "    batch_size: 500\n    maximum_batching_window_ms: 50ms\n"
              "    kafka: { session.timeout.ms: \"6000\", heartbeat.interval.ms: \"1000\" }\n");
    for (int k = 0; k < 3; k++) {
        size_t before = kt_distinct(lines, kt_lines(t.out, lines, 400000), per_part);
        t.sluice = kt_start(&t, t.cfg);
        /* let it get some way in, then kill it mid-stream */
        kt_wait(t.out, before + (size_t)total / 6, per_part, 60);
        kt_stop(t.sluice, SIGKILL);
        t.sluice = 0;
    }
    t.sluice = kt_start(&t, t.cfg);
    d = kt_wait(t.out, (size_t)total, per_part, 100);
    n = kt_lines(t.out, lines, sizeof(lines) / sizeof(lines[0]));
    dups = n - d;
    cr_log_info("sigkill x3: %d records, %zu processed, %zu distinct, %zu duplicates", total, n, d,
                dups);
    fprintf(stderr, "kafka sigkill x3: %d records, %zu handler lines, %zu distinct, %zu duplicates "
            "(bound %zu)\n", total, n, d, dups, inflight_bound);
    cr_assert_eq(d, (size_t)total, "records lost: %zu of %d processed", d, total);
    /* a kill repeats what was in flight plus what finished since the last commit */
    cr_assert_leq(dups, inflight_bound, "%zu duplicates for 3 kills", dups);
}

Test(kafka_faults, two_instances_share_the_group)
{
    const int parts = 4, per_part = 500;
    char cfg2[400], out2[400];
    static struct kline a[4000], b[4000];
    size_t na, nb;
    pid_t second;

    kt_init(&t, "group");
    kt_create_topic(&t, t.topic, parts);
    produce_n(t.topic, parts, per_part, 10);
    snprintf(cfg2, sizeof(cfg2), "%s/second.yaml", t.dir);
    snprintf(out2, sizeof(out2), "%s/out2.txt", t.dir);
    kt_config(&t, t.cfg, t.out, "SLEEP_MS: 100, ",
              "    batch_size: 10\n    maximum_batching_window_ms: 20ms\n");
    kt_config(&t, cfg2, out2, "SLEEP_MS: 100, ",
              "    batch_size: 10\n    maximum_batching_window_ms: 20ms\n");
    t.sluice = kt_start(&t, t.cfg);
    kt_wait(t.out, 100, per_part, 30);
    second = kt_start(&t, cfg2);
    for (double end = kt_now() + 120; kt_now() < end;) {
        na = kt_lines(t.out, a, 4000);
        nb = kt_lines(out2, b, 4000);
        if (union_count(a, na, b, nb, per_part, NULL) >= (size_t)(parts * per_part))
            break;
        usleep(200000);
    }
    kt_stop(second, SIGTERM);
    na = kt_lines(t.out, a, 4000);
    nb = kt_lines(out2, b, 4000);
    fprintf(stderr, "kafka two instances: first %zu records, second %zu\n", na, nb);
    cr_assert_gt(nb, 0, "the second instance got no partition");
    cr_assert_gt(na, 0, "the first instance got no partition");
    {
        size_t both = 0, all = union_count(a, na, b, nb, per_part, &both);
        cr_assert_eq(all, (size_t)(parts * per_part), "%zu of %d records processed", all,
                     parts * per_part);
        /* a partition read by both at once would repeat most of its 500
         * records; a handover repeats what finished after the last commit
         * that reached the broker (commits racing the rebalance fail) */
        fprintf(stderr, "kafka two instances: %zu records processed by both\n", both);
        cr_assert_leq(both, 300, "%zu records processed by both instances", both);
    }
}

/* The broker goes away mid-stream and comes back on the same port with
 * its data: sluice reconnects, nothing is lost. A private broker. */
Test(kafka_faults, broker_stopped_and_started_loses_nothing)
{
    const char *priv = "/tmp/sluice-kafka-priv";
    char cmd[2400], port[32] = "", brokers[64];
    const int per_part = 2000;
    FILE *f;
    size_t d;

    kt_init(&t, "broker");
    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR=%s %s/tests/services start kafka >%s/services.log 2>&1",
             priv, t.root, t.dir);
    cr_assert_eq(system(cmd), 0, "private kafka did not start (see %s/services.log)", t.dir);
    snprintf(cmd, sizeof(cmd), "%s/kafka/port", priv);
    f = fopen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(port, sizeof(port), f));
    fclose(f);
    port[strcspn(port, "\n")] = '\0';
    snprintf(brokers, sizeof(brokers), "127.0.0.1:%s", port);
    t.brokers = brokers;
    kt_create_topic(&t, t.topic, 2);
    produce_n(t.topic, 2, per_part / 2, 10);
    kt_config(&t, t.cfg, t.out, "SLEEP_MS: 5, ",
              "    batch_size: 50\n    maximum_batching_window_ms: 20ms\n");
    t.sluice = kt_start(&t, t.cfg);
    kt_wait(t.out, per_part / 4, per_part, 60);
    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR=%s %s/tests/services restart kafka >>%s/services.log 2>&1",
             priv, t.root, t.dir);
    cr_assert_eq(system(cmd), 0, "restart failed (see %s/services.log)", t.dir);
    /* a restarted broker answers metadata before it leads its partitions
     * again; on a loaded machine that can take a while */
    snprintf(cmd, sizeof(cmd), "for i in $(seq 120); do [ \"$(kcat -L -b %s -t %s 2>/dev/null |"
             " grep -c 'leader 1,')\" = 2 ] && exit 0; sleep 0.5; done; exit 1", brokers, t.topic);
    cr_assert_eq(system(cmd), 0, "the restarted broker never led both partitions again");
    produce_n(t.topic, 2, per_part / 2, 10);
    d = kt_wait(t.out, (size_t)per_part * 2, per_part, 120);
    fprintf(stderr, "kafka broker restart: %zu of %d processed\n", d, per_part * 2);
    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR=%s %s/tests/services stop >>%s/services.log 2>&1",
             priv, t.root, t.dir);
    kt_stop(t.sluice, SIGTERM);
    t.sluice = 0;
    if (system(cmd) != 0) {
        /* a leftover private broker only costs memory */
    }
    cr_assert_eq(d, (size_t)per_part * 2, "records lost across the broker restart");
}
