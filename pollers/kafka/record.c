/* Records and events in Lambda's self-managed Kafka shape:
 *   {"eventSource":"SelfManagedKafka","bootstrapServers":"...",
 *    "records":{"<topic>-<partition>":[{"topic":..,"partition":..,"offset":..,
 *      "timestamp":..,"timestampType":"CREATE_TIME","key":"<base64>"|null,
 *      "value":"<base64>"|null,"headers":[{"<name>":[<signed bytes>]}]}]}}
 * Each record's JSON is built once, when it is fetched (the librdkafka
 * message is freed right away, so it pins no fetch buffer), in the same
 * allocation as its struct krec and without stdio: at a few hundred
 * thousand records a second the per-record allocations and printf calls
 * were the poller's largest CPU cost. An event is the concatenation of
 * its records' JSON. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/clock.h"
#include "sluice/filter.h"
#include "sluice/jbuf.h"
#include "sluice/mem.h"
#include "internal.h"

char *sl__kr_json_string(const char *s)
{
    struct sl_jbuf b = { 0 };

    sl_jbuf_str(&b, s, strlen(s));
    return b.p;
}

struct krec *sl__kr_new(const rd_kafka_message_t *m)
{
    struct sl_jbuf b = { 0 };
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    rd_kafka_headers_t *hdrs = NULL;
    const char *topic = rd_kafka_topic_name(m->rkt);
    size_t tlen = strlen(topic);
    struct krec *kr;
    char off[24];
    size_t off_len = sl_fmt_i64(off, m->offset);

    /* the krec first, its JSON right after: one allocation; room for
     * everything but headers, which grow it */
    sl_jbuf_grow(&b, sizeof(*kr) + 200 + tlen + (m->len + 2) / 3 * 4 + (m->key_len + 2) / 3 * 4);
    b.n = sizeof(*kr);
    SL_JBUF_LIT(&b, "{\"topic\":\"");
    sl_jbuf_put(&b, topic, tlen); /* topic names are [A-Za-z0-9._-] */
    SL_JBUF_LIT(&b, "\",\"partition\":");
    sl_jbuf_i64(&b, m->partition);
    SL_JBUF_LIT(&b, ",\"offset\":");
    sl_jbuf_put(&b, off, off_len);
    SL_JBUF_LIT(&b, ",\"timestamp\":");
    sl_jbuf_i64(&b, ts);
    if (tt == RD_KAFKA_TIMESTAMP_CREATE_TIME)
        SL_JBUF_LIT(&b, ",\"timestampType\":\"CREATE_TIME\",\"key\":");
    else if (tt == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)
        SL_JBUF_LIT(&b, ",\"timestampType\":\"LOG_APPEND_TIME\",\"key\":");
    else
        SL_JBUF_LIT(&b, ",\"timestampType\":\"NO_TIMESTAMP_TYPE\",\"key\":");
    if (m->key)
        sl_jbuf_base64(&b, m->key, m->key_len);
    else
        SL_JBUF_LIT(&b, "null");
    SL_JBUF_LIT(&b, ",\"value\":");
    if (m->payload)
        sl_jbuf_base64(&b, m->payload, m->len);
    else
        SL_JBUF_LIT(&b, "null");
    SL_JBUF_LIT(&b, ",\"headers\":[");
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        const char *name;
        const void *val;
        size_t vlen;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
            if (i)
                SL_JBUF_LIT(&b, ",");
            SL_JBUF_LIT(&b, "{");
            sl_jbuf_str(&b, name, strlen(name));
            SL_JBUF_LIT(&b, ":[");
            for (size_t k = 0; k < vlen; k++) {
                if (k)
                    SL_JBUF_LIT(&b, ",");
                /* Java's signed bytes, as Lambda sends them */
                sl_jbuf_i64(&b, (int8_t)((const unsigned char *)val)[k]);
            }
            SL_JBUF_LIT(&b, "]}");
        }
    }
    SL_JBUF_LIT(&b, "]}");
    kr = (struct krec *)b.p;
    memset(kr, 0, sizeof(*kr));
    kr->r.json = b.p + sizeof(*kr);
    kr->r.len = b.n - sizeof(*kr);
    kr->r.timestamp_ms = ts >= 0 ? ts : sl_wall_ms();
    kr->offset = m->offset;
    memcpy(kr->id, off, off_len);
    kr->id[off_len] = '\0';
    kr->r.id = kr->id;
    return kr;
}

char *sl__kr_event(const char *bootstrap_json, struct sl_record *const *r, size_t n, size_t *len)
{
    const struct krec *k0 = (const struct krec *)r[0];
    size_t cap = 128 + strlen(bootstrap_json) + strlen(k0->p->lane);
    struct sl_jbuf b = { 0 };

    for (size_t i = 0; i < n; i++)
        cap += r[i]->len + 1;
    sl_jbuf_grow(&b, cap);
    SL_JBUF_LIT(&b, "{\"eventSource\":\"SelfManagedKafka\",\"bootstrapServers\":");
    sl_jbuf_put(&b, bootstrap_json, strlen(bootstrap_json));
    SL_JBUF_LIT(&b, ",\"records\":{\"");
    sl_jbuf_put(&b, k0->p->lane, strlen(k0->p->lane));
    SL_JBUF_LIT(&b, "\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            SL_JBUF_LIT(&b, ",");
        sl_jbuf_put(&b, r[i]->json, r[i]->len);
    }
    SL_JBUF_LIT(&b, "]}}");
    *len = b.n;
    return b.p;
}

/* A payload as the filter sees it: parsed when it is JSON, the plain
 * string when it is UTF-8 text, else NULL (left out). */
static json_t *filter_payload(const void *p, size_t n)
{
    json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);

    return v ? v : json_stringn(p, n);
}

bool sl__kr_filter_pass(const struct sl_filter *f, bool parse_value, bool parse_key,
                        const char *json, size_t len, const rd_kafka_message_t *m)
{
    json_t *doc = json_loadb(json, len, 0, NULL), *v;
    bool pass;

    if (!doc)
        return false;
    json_object_del(doc, "value");
    if (parse_value && m->payload && (v = filter_payload(m->payload, m->len)))
        json_object_set_new(doc, "value", v);
    if (parse_key && m->key) {
        json_object_del(doc, "key");
        if ((v = filter_payload(m->key, m->key_len)))
            json_object_set_new(doc, "key", v);
    }
    pass = sl_filter_match(f, doc);
    json_decref(doc);
    return pass;
}

/* The shape of Lambda's on-failure record for Kafka sent to SQS, SNS or
 * S3: "recordsInfo" keyed by "<topic>-<partition>". A self-managed
 * cluster has no ARN, so "eventSourceArn" is left out. */
json_t *sl__kr_batch_info(const char *brokers, const char *partition, const char *first,
                          const char *last, int64_t first_ts, int64_t last_ts, size_t n,
                          size_t payload_size)
{
    json_t *part = json_pack("{s:s, s:s}", "firstRecordOffset", first, "lastRecordOffset", last);
    json_t *info;
    char ts[40];

    if (first_ts >= 0) {
        sl_iso8601(first_ts, ts, sizeof(ts));
        json_object_set_new(part, "firstRecordTimestamp", json_string(ts));
    }
    if (last_ts >= 0) {
        sl_iso8601(last_ts, ts, sizeof(ts));
        json_object_set_new(part, "lastRecordTimestamp", json_string(ts));
    }
    info = json_pack("{s:I, s:s}", "batchSize", (json_int_t)n, "bootstrapServers", brokers);
    if (payload_size)
        json_object_set_new(info, "payloadSize", json_integer((json_int_t)payload_size));
    json_object_set_new(info, "recordsInfo", json_pack("{s:o}", partition, part));
    return json_pack("{s:o}", "KafkaBatchInfo", info);
}
