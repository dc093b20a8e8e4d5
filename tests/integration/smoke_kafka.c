/* Smoke test: the Kafka broker started by tests/services creates topics
 * through the Admin API, takes 100 produced messages and hands them back
 * to a consumer group in order. Reads SLUICE_TEST_KAFKA (HOST:PORT).
 * Standalone: no project code. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000
#define COUNT 100

static rd_kafka_t *producer;
static rd_kafka_t *consumer;
static const char *brokers;
static char topic[128];
static char group[160];
static int delivered, delivery_failed;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    char errstr[512];
    cr_assert_eq(rd_kafka_conf_set(conf, key, val, errstr, sizeof errstr), RD_KAFKA_CONF_OK,
                 "%s=%s: %s", key, val, errstr);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        delivered++;
    else
        delivery_failed++;
}

static void setup(void)
{
    brokers = getenv("SLUICE_TEST_KAFKA");
    cr_assert(brokers != NULL && *brokers != '\0',
              "SLUICE_TEST_KAFKA is not set: run tests/services start and "
              "eval \"$(tests/services env)\"");

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(topic, sizeof topic, "sluice-smoke-%ld-%lld-%ld", (long)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec / 1000);
    snprintf(group, sizeof group, "%s-group", topic);
}

static void teardown(void)
{
    if (consumer != NULL) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
        consumer = NULL;
    }
    if (producer != NULL) {
        rd_kafka_destroy(producer);
        producer = NULL;
    }
}

TestSuite(smoke_kafka, .fini = teardown, .timeout = 120);

static void create_topic(void)
{
    char errstr[512];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 1, 1, errstr, sizeof errstr);
    cr_assert(nt != NULL, "NewTopic: %s", errstr);

    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(producer, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    cr_assert_eq(rd_kafka_AdminOptions_set_request_timeout(opt, WAIT_MS, errstr, sizeof errstr),
                 RD_KAFKA_RESP_ERR_NO_ERROR, "%s", errstr);
    /* Wait until the controller has really created it, not just accepted. */
    cr_assert_eq(rd_kafka_AdminOptions_set_operation_timeout(opt, WAIT_MS, errstr, sizeof errstr),
                 RD_KAFKA_RESP_ERR_NO_ERROR, "%s", errstr);

    rd_kafka_queue_t *q = rd_kafka_queue_new(producer);
    rd_kafka_CreateTopics(producer, &nt, 1, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, WAIT_MS + 5000);
    cr_assert(ev != NULL, "CreateTopics: no answer within %d ms", WAIT_MS + 5000);
    cr_assert_eq(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR, "CreateTopics: %s",
                 rd_kafka_event_error_string(ev));

    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    cr_assert(res != NULL, "event is not a CreateTopics result");
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rd_kafka_topic_result_name(tr[0]), topic);
    cr_assert_eq(rd_kafka_topic_result_error(tr[0]), RD_KAFKA_RESP_ERR_NO_ERROR,
                 "create %s: %s", topic, rd_kafka_topic_result_error_string(tr[0]));

    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_NewTopic_destroy(nt);
}

static void produce_all(void)
{
    for (int i = 0; i < COUNT; i++) {
        char payload[32], key[16];
        int plen = snprintf(payload, sizeof payload, "smoke-message-%03d", i);
        int klen = snprintf(key, sizeof key, "k%d", i);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_VALUE(payload, (size_t)plen), RD_KAFKA_V_KEY(key, (size_t)klen),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce #%d: %s", i, rd_kafka_err2str(err));
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_resp_err_t err = rd_kafka_flush(producer, WAIT_MS);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s (%d still queued)",
                 rd_kafka_err2str(err), rd_kafka_outq_len(producer));
    cr_assert_eq(delivery_failed, 0, "%d deliveries failed", delivery_failed);
    cr_assert_eq(delivered, COUNT, "%d of %d delivered", delivered, COUNT);
}

Test(smoke_kafka, admin_produce_consume_in_order)
{
    char errstr[512];

    setup();

    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    set(pc, "bootstrap.servers", brokers);
    set(pc, "enable.idempotence", "true");
    set(pc, "message.timeout.ms", "30000");
    set(pc, "linger.ms", "5");
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    cr_assert(producer != NULL, "producer: %s", errstr);

    create_topic();
    produce_all();

    rd_kafka_conf_t *cc = rd_kafka_conf_new();
    set(cc, "bootstrap.servers", brokers);
    set(cc, "group.id", group);
    set(cc, "auto.offset.reset", "earliest");
    set(cc, "enable.auto.commit", "false");
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof errstr);
    cr_assert(consumer != NULL, "consumer: %s", errstr);
    rd_kafka_poll_set_consumer(consumer);

    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "subscribe: %s", rd_kafka_err2str(err));

    int got = 0;
    int64_t last_offset = -1;
    long long deadline = now_ms() + WAIT_MS;
    while (got < COUNT) {
        cr_assert_lt(now_ms(), deadline, "only %d of %d messages consumed within %d ms", got,
                     COUNT, WAIT_MS);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 200);
        if (m == NULL)
            continue;
        if (m->err) {
            /* Transient errors (e.g. group coordinator still loading) are
             * retried by librdkafka; only a fatal one ends the test. */
            int fatal = m->err == RD_KAFKA_RESP_ERR__FATAL;
            cr_log_warn("consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            cr_assert(!fatal, "fatal consumer error");
            continue;
        }
        char want[32];
        int wlen = snprintf(want, sizeof want, "smoke-message-%03d", got);
        cr_assert_str_eq(rd_kafka_topic_name(m->rkt), topic);
        cr_assert_eq(m->partition, 0);
        cr_assert_gt(m->offset, last_offset, "offsets went backwards");
        cr_assert_eq(m->len, (size_t)wlen, "message %d: length %zu", got, m->len);
        cr_assert(memcmp(m->payload, want, (size_t)wlen) == 0, "message %d: got '%.*s', want '%s'",
                  got, (int)m->len, (const char *)m->payload, want);
        last_offset = m->offset;
        got++;
        rd_kafka_message_destroy(m);
    }
    cr_assert_eq(got, COUNT);
    cr_assert_eq(last_offset, COUNT - 1, "fresh topic: offsets should be 0..%d", COUNT - 1);
}
