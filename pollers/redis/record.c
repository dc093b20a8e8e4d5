/* The SQS-shaped record of a Redis message (Lambda's SQS event, record
 * part), built once when the message is fetched:
 *
 *   {"messageId":..., "receiptHandle":..., "body":"...",
 *    "attributes":{"ApproximateReceiveCount":"1","SentTimestamp":"...",
 *                  "SenderId":"sluice","ApproximateFirstReceiveTimestamp":"..."},
 *    "messageAttributes":{<stream field>:{"stringValue":...,"dataType":"String"},...},
 *    "md5OfBody":"...", "md5OfMessageAttributes":"..." (only with attributes),
 *    "eventSource":"aws:sqs",
 *    "eventSourceARN":"arn:aws:sqs:<region>:<account>:<key>", "awsRegion":"<region>"}
 *
 * The body is text: bytes that are not UTF-8 are sent as U+FFFD (md5OfBody
 * is computed over the bytes as stored). A stream field whose value is not
 * UTF-8 becomes a Binary attribute (base64). md5OfMessageAttributes is
 * SQS's digest of the attributes as sent (names sorted, each name, data
 * type, transport type and value length-prefixed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/jbuf.h"
#include "sluice/mem.h"

#include "internal.h"

/* ------------------------------------------------------------------ */
/* MD5 (RFC 1321), for md5OfBody                                       */

struct md5 {
    uint32_t a, b, c, d;
    uint64_t len;
    unsigned char buf[64];
};

static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
static const unsigned char md5_r[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9,  14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static void md5_block(struct md5 *m, const unsigned char *p)
{
    uint32_t w[16], a = m->a, b = m->b, c = m->c, d = m->d;

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[i * 4] | (uint32_t)p[i * 4 + 1] << 8 | (uint32_t)p[i * 4 + 2] << 16 |
               (uint32_t)p[i * 4 + 3] << 24;
    for (int i = 0; i < 64; i++) {
        uint32_t f, t;
        int g;

        if (i < 16)
            f = (b & c) | (~b & d), g = i;
        else if (i < 32)
            f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
        else if (i < 48)
            f = b ^ c ^ d, g = (3 * i + 5) % 16;
        else
            f = c ^ (b | ~d), g = (7 * i) % 16;
        t = d;
        d = c;
        c = b;
        f += a + md5_k[i] + w[g];
        b += (f << md5_r[i]) | (f >> (32 - md5_r[i]));
        a = t;
    }
    m->a += a, m->b += b, m->c += c, m->d += d;
}

static void md5_init(struct md5 *m)
{
    *m = (struct md5){ 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0, { 0 } };
}

static void md5_update(struct md5 *m, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t have = (size_t)(m->len % 64);

    m->len += len;
    if (have) {
        size_t take = 64 - have < len ? 64 - have : len;
        memcpy(m->buf + have, p, take);
        p += take;
        len -= take;
        if (have + take < 64)
            return;
        md5_block(m, m->buf);
    }
    for (; len >= 64; p += 64, len -= 64)
        md5_block(m, p);
    memcpy(m->buf, p, len);
}

static void md5_hex(struct md5 *m, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char pad[128] = { 0x80 };
    uint64_t bits = m->len * 8;
    size_t have = (size_t)(m->len % 64), padlen = have < 56 ? 56 - have : 120 - have;

    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (8 * i));
    md5_update(m, pad, padlen + 8);
    {
        uint32_t v[4] = { m->a, m->b, m->c, m->d };
        for (int i = 0; i < 16; i++) {
            unsigned byte = (v[i / 4] >> (8 * (i % 4))) & 0xff;
            out[i * 2] = hex[byte >> 4];
            out[i * 2 + 1] = hex[byte & 15];
        }
        out[32] = '\0';
    }
}

void sl__rq_md5_hex(const void *data, size_t len, char out[33])
{
    struct md5 m;

    md5_init(&m);
    md5_update(&m, data, len);
    md5_hex(&m, out);
}

/* ------------------------------------------------------------------ */
/* JSON text                                                           */

static bool is_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t l = sl_utf8_len(p + i, n - i);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

/* Decimal text of v into buf (at least 24 bytes); returns buf. */
static const char *itoa_(long long v, char *buf)
{
    buf[sl_fmt_i64(buf, v)] = '\0';
    return buf;
}

static void put_attr(struct sl_jbuf *b, const char *name, const char *v)
{
    sl_jbuf_puts(b, "\"");
    sl_jbuf_puts(b, name);
    sl_jbuf_puts(b, "\":\"");
    sl_jbuf_puts(b, v);
    sl_jbuf_puts(b, "\"");
}

/* ------------------------------------------------------------------ */
/* message attributes                                                  */

/* One message attribute: a stream field other than the body's. */
struct attr {
    const char *name;                 /* UTF-8: as the handler decodes it from the JSON */
    size_t      nlen;
    char       *own;                  /* name's storage when it had to be repaired */
    const char *v;
    size_t      vlen;
    bool        binary;               /* not UTF-8: dataType Binary, base64 in the JSON */
    size_t      idx;                  /* position in the entry */
};

/* s[0..n) with each byte that is not UTF-8 replaced by U+FFFD, as
 * sl_jbuf_str writes it; malloc'd, length in *out_len. */
static char *utf8_repair(const char *s, size_t n, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *o = sl_malloc(n * 3 + 1);
    size_t k = 0;

    for (size_t i = 0; i < n;) {
        size_t l = sl_utf8_len(p + i, n - i);
        if (l) {
            memcpy(o + k, s + i, l);
            k += l;
            i += l;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        }
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

/* By name (bytes, i.e. code points), then by position in the entry. */
static int attr_cmp(const void *x, const void *y)
{
    const struct attr *a = x, *b = y;
    size_t n = a->nlen < b->nlen ? a->nlen : b->nlen;
    int c = memcmp(a->name, b->name, n);

    if (c)
        return c;
    if (a->nlen != b->nlen)
        return a->nlen < b->nlen ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static void md5_be32(struct md5 *m, size_t n)
{
    unsigned char b[4] = { (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                           (unsigned char)(n >> 8), (unsigned char)n };
    md5_update(m, b, 4);
}

static size_t attrs_get(const redisReply *fields, int skip, struct attr **out)
{
    struct attr *a;
    size_t n = 0, k = 0;

    *out = NULL;
    if (!fields || fields->elements < 2 || (fields->elements < 4 && skip == 0))
        return 0; /* the body alone: the common case, no allocation */
    a = sl_calloc(fields->elements / 2, sizeof(*a));
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if ((int)i == skip || f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        a[n].idx = i;
        a[n].v = v->str;
        a[n].vlen = v->len;
        a[n].binary = !is_utf8(v->str, v->len);
        if (is_utf8(f->str, f->len)) {
            a[n].name = f->str;
            a[n].nlen = f->len;
        } else {
            a[n].own = utf8_repair(f->str, f->len, &a[n].nlen);
            a[n].name = a[n].own;
        }
        n++;
    }
    if (n == 0) {
        free(a);
        return 0;
    }
    qsort(a, n, sizeof(*a), attr_cmp);
    /* a repeated field name: the last one counts, as a JSON parser reads it */
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && a[i].nlen == a[i + 1].nlen && memcmp(a[i].name, a[i + 1].name, a[i].nlen) == 0) {
            free(a[i].own);
            continue;
        }
        a[k++] = a[i];
    }
    *out = a;
    return k;
}

static void attrs_free(struct attr *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i].own);
    free(a);
}

static void attrs_md5(const struct attr *a, size_t n, char out[33])
{
    struct md5 m;

    md5_init(&m);
    for (size_t i = 0; i < n; i++) {
        const char *type = a[i].binary ? "Binary" : "String";
        unsigned char transport = a[i].binary ? 2 : 1;

        md5_be32(&m, a[i].nlen);
        md5_update(&m, a[i].name, a[i].nlen);
        md5_be32(&m, 6);
        md5_update(&m, type, 6);
        md5_update(&m, &transport, 1);
        md5_be32(&m, a[i].vlen);
        md5_update(&m, a[i].v, a[i].vlen);
    }
    md5_hex(&m, out);
}

size_t sl__rq_attrs_md5(const redisReply *fields, int skip, char out[33])
{
    struct attr *a;
    size_t n = attrs_get(fields, skip, &a);

    out[0] = '\0';
    if (n)
        attrs_md5(a, n, out);
    attrs_free(a, n);
    return n;
}

char *sl__rq_record_json(const struct rq *q, const struct rq_msg *m, size_t *len)
{
    struct sl_jbuf b = { 0 };
    char md5[33], num[32];
    struct attr *a = NULL;
    size_t na = attrs_get(m->fields, m->skip, &a);

    sl_jbuf_grow(&b, m->blen + 512);
    sl_jbuf_puts(&b, "{\"messageId\":");
    sl_jbuf_str(&b, m->id, m->idlen);
    sl_jbuf_puts(&b, ",\"receiptHandle\":\"");
    sl_jbuf_puts(&b, q->mode->name);
    sl_jbuf_puts(&b, ":");
    sl_jbuf_put(&b, m->id, m->idlen); /* stream ids and list ids need no escaping */
    sl_jbuf_puts(&b, ":");
    sl_jbuf_puts(&b, itoa_(m->receive_count, num));
    sl_jbuf_puts(&b, "\"");
    sl_jbuf_puts(&b, ",\"body\":");
    sl_jbuf_str(&b, m->body, m->blen);
    sl_jbuf_puts(&b, ",\"attributes\":{");
    put_attr(&b, "ApproximateReceiveCount", itoa_(m->receive_count, num));
    sl_jbuf_puts(&b, ",");
    put_attr(&b, "SentTimestamp", itoa_(m->sent_ms, num));
    sl_jbuf_puts(&b, ",");
    put_attr(&b, "SenderId", "sluice");
    sl_jbuf_puts(&b, ",");
    put_attr(&b, "ApproximateFirstReceiveTimestamp", itoa_(m->first_ms, num));
    sl_jbuf_puts(&b, "},\"messageAttributes\":{");
    for (size_t i = 0; i < na; i++) {
        if (i)
            sl_jbuf_puts(&b, ",");
        sl_jbuf_str(&b, a[i].name, a[i].nlen);
        if (!a[i].binary) {
            sl_jbuf_puts(&b, ":{\"stringValue\":");
            sl_jbuf_str(&b, a[i].v, a[i].vlen);
            sl_jbuf_puts(&b, ",\"stringListValues\":[],\"binaryListValues\":[],"
                      "\"dataType\":\"String\"}");
        } else {
            sl_jbuf_puts(&b, ":{\"binaryValue\":");
            sl_jbuf_base64(&b, (const unsigned char *)a[i].v, a[i].vlen);
            sl_jbuf_puts(&b, ",\"stringListValues\":[],\"binaryListValues\":[],"
                      "\"dataType\":\"Binary\"}");
        }
    }
    sl__rq_md5_hex(m->body, m->blen, md5);
    sl_jbuf_puts(&b, "},\"md5OfBody\":\"");
    sl_jbuf_puts(&b, md5);
    if (na) {
        attrs_md5(a, na, md5);
        sl_jbuf_puts(&b, "\",\"md5OfMessageAttributes\":\"");
        sl_jbuf_puts(&b, md5);
    }
    attrs_free(a, na);
    sl_jbuf_puts(&b, "\",\"eventSource\":\"aws:sqs\",\"eventSourceARN\":");
    sl_jbuf_str(&b, q->arn, strlen(q->arn));
    sl_jbuf_puts(&b, ",\"awsRegion\":");
    sl_jbuf_str(&b, q->region, strlen(q->region));
    sl_jbuf_puts(&b, "}");
    *len = b.n;
    return b.p;
}

json_t *sl__rq_filter_doc(const char *json, size_t len)
{
    json_t *doc = json_loadb(json, len, 0, NULL), *body, *parsed;

    if (!doc)
        return NULL;
    body = json_object_get(doc, "body");
    parsed = json_is_string(body) ? json_loadb(json_string_value(body), json_string_length(body),
                                               JSON_DECODE_ANY, NULL)
                                  : NULL;
    /* a body that is not JSON stays the plain string: Lambda matches
     * plain-string patterns against it and drops it for JSON patterns */
    if (parsed)
        json_object_set_new(doc, "body", parsed);
    return doc;
}
