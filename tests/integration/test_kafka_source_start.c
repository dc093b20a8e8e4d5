/* Where a new consumer group starts: AT_TIMESTAMP (with
 * starting_position_timestamp) delivers exactly the records whose
 * timestamp is at or after it, and a partition with none starts at its
 * end; LATEST delivers only what was produced after sluice started. */
#include "test_kafka_source.h"

static struct kt t;
static struct kline lines[4000];

static void teardown(void)
{
    kt_cleanup(&t);
}

TestSuite(kafka_source_start, .fini = teardown, .timeout = 90);

/* Records per partition before and after the starting point. */
#define OLD 40
#define NEW 30

Test(kafka_source_start, at_timestamp_delivers_from_that_time)
{
    rd_kafka_t *rk;
    char v[64], extra[200];
    int64_t start_s = (int64_t)time(NULL) - 3600;
    size_t n;
    long long per[2] = { 0, 0 };

    kt_init(&t, "atts");
    kt_create_topic(&t, t.topic, 2);
    rk = kt_producer(&t);
    /* partition 0: OLD records an hour and more before start_s, then NEW from it on;
     * partition 1: only old records, so it starts at its end */
    for (int i = 0; i < OLD; i++) {
        snprintf(v, sizeof(v), "{\"old\":%d}", i);
        kt_produce(rk, t.topic, 0, NULL, v, (start_s - 3600 + i) * 1000);
        kt_produce(rk, t.topic, 1, NULL, v, (start_s - 3600 + i) * 1000);
    }
    /* the last old one a millisecond before the starting time */
    kt_produce(rk, t.topic, 0, NULL, "{\"old\":-1}", start_s * 1000 - 1);
    for (int i = 0; i < NEW; i++) {
        snprintf(v, sizeof(v), "{\"new\":%d}", i);
        kt_produce(rk, t.topic, 0, NULL, v, (start_s + i) * 1000);
    }
    kt_flush(rk);
    snprintf(extra, sizeof(extra),
             "    starting_position: AT_TIMESTAMP\n"
             "    starting_position_timestamp: \"%lld\"\n"
             "    batch_size: 10\n    maximum_batching_window_ms: 50ms\n", (long long)start_s);
    kt_config(&t, t.cfg, t.out, NULL, extra);
    t.sluice = kt_start(&t, t.cfg);
    cr_assert_eq(kt_wait(t.out, NEW, OLD + 1 + NEW, 60), NEW, "the records from the time on "
                 "were not delivered; see %s", t.log);
    /* and nothing else: produce one more to each partition, wait for both */
    rk = kt_producer(&t);
    kt_produce(rk, t.topic, 0, NULL, "{\"late\":0}", 0);
    kt_produce(rk, t.topic, 1, NULL, "{\"late\":1}", 0);
    kt_flush(rk);
    cr_assert_eq(kt_wait(t.out, NEW + 2, OLD + 2 + NEW, 30), NEW + 2,
                 "records produced after start were not delivered; see %s", t.log);
    usleep(300000);
    n = kt_lines(t.out, lines, 4000);
    for (size_t i = 0; i < n; i++) {
        if (lines[i].partition == 0)
            cr_assert_geq(lines[i].offset, OLD + 1, "partition 0: offset %lld is older than "
                          "the starting time", lines[i].offset);
        else
            cr_assert_eq(lines[i].offset, OLD, "partition 1: offset %lld delivered, only the "
                         "one produced after start should be", lines[i].offset);
        per[lines[i].partition]++;
    }
    cr_assert_eq(per[0], NEW + 1, "partition 0: %lld records", per[0]);
    cr_assert_eq(per[1], 1, "partition 1: %lld records", per[1]);
}

Test(kafka_source_start, latest_delivers_only_what_comes_after_start)
{
    rd_kafka_t *rk;
    char v[64];
    size_t n;

    kt_init(&t, "latest");
    kt_create_topic(&t, t.topic, 2);
    rk = kt_producer(&t);
    for (int i = 0; i < OLD; i++) {
        snprintf(v, sizeof(v), "{\"old\":%d}", i);
        kt_produce(rk, t.topic, i % 2, NULL, v, 0);
    }
    kt_flush(rk);
    kt_config(&t, t.cfg, t.out, NULL,
              "    starting_position: LATEST\n"
              "    batch_size: 10\n    maximum_batching_window_ms: 50ms\n");
    t.sluice = kt_start(&t, t.cfg);
    cr_assert(kt_log_has(t.log, "rebalance: assigned", 30), "no partitions assigned; see %s",
              t.log);
    /* the end offsets are looked up once the partitions are fetched */
    sleep(3);
    rk = kt_producer(&t);
    for (int i = 0; i < NEW; i++) {
        snprintf(v, sizeof(v), "{\"new\":%d}", i);
        kt_produce(rk, t.topic, i % 2, NULL, v, 0);
    }
    kt_flush(rk);
    cr_assert_eq(kt_wait(t.out, NEW, OLD + NEW, 60), NEW, "the records produced after start "
                 "were not all delivered; see %s", t.log);
    usleep(500000);
    n = kt_lines(t.out, lines, 4000);
    cr_assert_eq(n, NEW, "%zu records delivered, want the %d produced after start", n, NEW);
    for (size_t i = 0; i < n; i++)
        cr_assert_geq(lines[i].offset, OLD / 2, "partition %d: offset %lld was there before "
                      "start", lines[i].partition, lines[i].offset);
}
