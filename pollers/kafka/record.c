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
#include "sluice/mem.h"
#include "internal.h"

struct buf {
    char  *p;
    size_t n, cap;
};

static inline void grow(struct buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    b->cap = (b->n + more) * 2;
    b->p = sl_realloc(b->p, b->cap);
}

static inline void put(struct buf *b, const char *s, size_t n)
{
    grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

/* Decimal digits of v into t (at least 21 bytes), two at a time; returns
 * the length. */
static size_t fmt_i64(char *t, int64_t v)
{
    static const char d2[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                             "34353637383940414243444546474849505152535455565758596061626364656667"
                             "6869707172737475767778798081828384858687888990919293949596979899";
    char r[24], *e = r + sizeof(r), *q = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t len = 0;

    while (u >= 100) {
        q -= 2;
        memcpy(q, d2 + (u % 100) * 2, 2);
        u /= 100;
    }
    if (u >= 10) {
        q -= 2;
        memcpy(q, d2 + u * 2, 2);
    } else {
        *--q = (char)('0' + u);
    }
    if (v < 0)
        t[len++] = '-';
    memcpy(t + len, q, (size_t)(e - q));
    return len + (size_t)(e - q);
}

static void putf_i64(struct buf *b, int64_t v)
{
    grow(b, 24);
    b->n += fmt_i64(b->p + b->n, v);
}

/* Base64 of s as a JSON string, 12 bits per table look-up. */
static void put_b64(struct buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static char pair[4096 * 2];
    static bool ready;
    char *o;
    size_t i;

    if (!ready) {
        for (int x = 0; x < 4096; x++) {
            pair[x * 2] = tab[x >> 6];
            pair[x * 2 + 1] = tab[x & 63];
        }
        ready = true;
    }
    grow(b, (n + 2) / 3 * 4 + 2);
    o = b->p + b->n;
    *o++ = '"';
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        memcpy(o, pair + (v >> 12) * 2, 2);
        memcpy(o + 2, pair + (v & 4095) * 2, 2);
        o += 4;
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
}

/* A JSON string; invalid UTF-8 bytes become U+FFFD. */
static void put_str(struct buf *b, const char *s, size_t n)
{
    json_t *j = json_stringn_nocheck(s, n);
    char *t;

    if (!j) {
        PUTS(b, "\"\"");
        return;
    }
    t = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    if (t) {
        put(b, t, strlen(t));
        free(t);
    } else {
        PUTS(b, "\"\"");
    }
}

char *kr_json_string(const char *s)
{
    struct buf b = { 0 };

    put_str(&b, s, strlen(s));
    put(&b, "", 1);
    return b.p;
}

struct krec *kr_new(const rd_kafka_message_t *m)
{
    struct buf b = { 0 };
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    rd_kafka_headers_t *hdrs = NULL;
    const char *topic = rd_kafka_topic_name(m->rkt);
    size_t tlen = strlen(topic);
    struct krec *kr;
    char off[24];
    size_t off_len = fmt_i64(off, m->offset);

    /* the krec first, its JSON right after: one allocation; room for
     * everything but headers, which grow it */
    grow(&b, sizeof(*kr) + 200 + tlen + (m->len + 2) / 3 * 4 + (m->key_len + 2) / 3 * 4);
    b.n = sizeof(*kr);
    PUTS(&b, "{\"topic\":\"");
    put(&b, topic, tlen); /* topic names are [A-Za-z0-9._-] */
    PUTS(&b, "\",\"partition\":");
    putf_i64(&b, m->partition);
    PUTS(&b, ",\"offset\":");
    put(&b, off, off_len);
    PUTS(&b, ",\"timestamp\":");
    putf_i64(&b, ts);
    if (tt == RD_KAFKA_TIMESTAMP_CREATE_TIME)
        PUTS(&b, ",\"timestampType\":\"CREATE_TIME\",\"key\":");
    else if (tt == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)
        PUTS(&b, ",\"timestampType\":\"LOG_APPEND_TIME\",\"key\":");
    else
        PUTS(&b, ",\"timestampType\":\"NO_TIMESTAMP_TYPE\",\"key\":");
    if (m->key)
        put_b64(&b, m->key, m->key_len);
    else
        PUTS(&b, "null");
    PUTS(&b, ",\"value\":");
    if (m->payload)
        put_b64(&b, m->payload, m->len);
    else
        PUTS(&b, "null");
    PUTS(&b, ",\"headers\":[");
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        const char *name;
        const void *val;
        size_t vlen;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
            if (i)
                PUTS(&b, ",");
            PUTS(&b, "{");
            put_str(&b, name, strlen(name));
            PUTS(&b, ":[");
            for (size_t k = 0; k < vlen; k++) {
                if (k)
                    PUTS(&b, ",");
                /* Java's signed bytes, as Lambda sends them */
                putf_i64(&b, (int8_t)((const unsigned char *)val)[k]);
            }
            PUTS(&b, "]}");
        }
    }
    PUTS(&b, "]}");
    put(&b, "", 1);
    kr = (struct krec *)b.p;
    memset(kr, 0, sizeof(*kr));
    kr->r.json = b.p + sizeof(*kr);
    kr->r.len = b.n - 1 - sizeof(*kr);
    kr->r.timestamp_ms = ts >= 0 ? ts : sl_wall_ms();
    kr->offset = m->offset;
    memcpy(kr->id, off, off_len);
    kr->id[off_len] = '\0';
    kr->r.id = kr->id;
    return kr;
}

char *kr_event(const char *bootstrap_json, struct sl_record *const *r, size_t n, size_t *len)
{
    const struct krec *k0 = (const struct krec *)r[0];
    size_t cap = 128 + strlen(bootstrap_json) + strlen(k0->p->lane);
    struct buf b = { 0 };

    for (size_t i = 0; i < n; i++)
        cap += r[i]->len + 1;
    grow(&b, cap);
    PUTS(&b, "{\"eventSource\":\"SelfManagedKafka\",\"bootstrapServers\":");
    put(&b, bootstrap_json, strlen(bootstrap_json));
    PUTS(&b, ",\"records\":{\"");
    put(&b, k0->p->lane, strlen(k0->p->lane));
    PUTS(&b, "\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            PUTS(&b, ",");
        put(&b, r[i]->json, r[i]->len);
    }
    PUTS(&b, "]}}");
    put(&b, "", 1);
    *len = b.n - 1;
    return b.p;
}

bool kr_filter_pass(const struct sl_filter *f, bool parse_value, const char *json, size_t len,
                    const rd_kafka_message_t *m)
{
    json_t *doc = json_loadb(json, len, 0, NULL);
    bool pass;

    if (!doc)
        return false;
    json_object_del(doc, "value");
    if (parse_value && m->payload) {
        json_t *v = json_loadb(m->payload, m->len, JSON_DECODE_ANY, NULL);
        if (v)
            json_object_set_new(doc, "value", v);
    }
    pass = sl_filter_match(f, doc);
    json_decref(doc);
    return pass;
}
