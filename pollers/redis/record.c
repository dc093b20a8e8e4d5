/* The SQS-shaped record of a Redis message (Lambda's SQS event, record
 * part), built once when the message is fetched:
 *
 *   {"messageId":..., "receiptHandle":..., "body":"...",
 *    "attributes":{"ApproximateReceiveCount":"1","SentTimestamp":"...",
 *                  "SenderId":"sluice","ApproximateFirstReceiveTimestamp":"..."},
 *    "messageAttributes":{<stream field>:{"stringValue":...,"dataType":"String"},...},
 *    "md5OfBody":"...", "eventSource":"sluice:redis",
 *    "eventSourceARN":"arn:sluice:redis:<region>:<db>:<key>", "awsRegion":"<region>"}
 *
 * The body is text: bytes that are not UTF-8 are sent as U+FFFD (md5OfBody
 * is computed over the bytes as stored). A stream field whose value is not
 * UTF-8 becomes a Binary attribute (base64). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

void rq_md5_hex(const void *data, size_t len, char out[33])
{
    struct md5 m = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0, { 0 } };
    const unsigned char *p = data;
    unsigned char tail[128];
    size_t rest = len % 64, tl;
    uint64_t bits = (uint64_t)len * 8;

    for (size_t i = 0; i + 64 <= len; i += 64)
        md5_block(&m, p + i);
    memcpy(tail, p + len - rest, rest);
    tail[rest] = 0x80;
    tl = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, tl - rest - 1);
    for (int i = 0; i < 8; i++)
        tail[tl - 8 + i] = (unsigned char)(bits >> (8 * i));
    md5_block(&m, tail);
    if (tl == 128)
        md5_block(&m, tail + 64);
    {
        static const char hex[] = "0123456789abcdef";
        uint32_t v[4] = { m.a, m.b, m.c, m.d };
        for (int i = 0; i < 16; i++) {
            unsigned byte = (v[i / 4] >> (8 * (i % 4))) & 0xff;
            out[i * 2] = hex[byte >> 4];
            out[i * 2 + 1] = hex[byte & 15];
        }
        out[32] = '\0';
    }
}

/* ------------------------------------------------------------------ */
/* JSON text                                                           */

struct buf {
    char  *p;
    size_t n, cap;
};

static void grow(struct buf *b, size_t more)
{
    if (b->n + more + 1 <= b->cap)
        return;
    while (b->n + more + 1 > b->cap)
        b->cap = b->cap ? b->cap * 2 : 512;
    b->p = sl_realloc(b->p, b->cap);
}

static void put(struct buf *b, const char *s, size_t n)
{
    grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at p (0: not valid). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t need;
    uint32_t cp;

    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        need = 2, cp = p[0] & 0x1f;
    else if ((p[0] & 0xf0) == 0xe0)
        need = 3, cp = p[0] & 0x0f;
    else if ((p[0] & 0xf8) == 0xf0)
        need = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

static bool is_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(p + i, n - i);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

/* A JSON string of s[0..n), quotes included. */
static void put_str(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    static const char hex[] = "0123456789abcdef";

    grow(b, n + 2);
    b->p[b->n++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char ch = p[i];
        size_t l;

        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch < 0x80) {
            size_t j = i;
            while (j < n && p[j] >= 0x20 && p[j] != '"' && p[j] != '\\' && p[j] < 0x80)
                j++;
            put(b, s + i, j - i);
            i = j;
            continue;
        }
        if (ch >= 0x80) {
            l = utf8_len(p + i, n - i);
            if (l) {
                put(b, s + i, l);
                i += l;
            } else {
                puts_(b, "\\ufffd");
                i++;
            }
            continue;
        }
        switch (ch) {
        case '"': puts_(b, "\\\""); break;
        case '\\': puts_(b, "\\\\"); break;
        case '\n': puts_(b, "\\n"); break;
        case '\r': puts_(b, "\\r"); break;
        case '\t': puts_(b, "\\t"); break;
        default: {
            char e[7] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15], 0 };
            puts_(b, e);
        }
        }
        i++;
    }
    grow(b, 1);
    b->p[b->n++] = '"';
}

static void put_base64(struct buf *b, const unsigned char *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    grow(b, (n + 2) / 3 * 4 + 2);
    b->p[b->n++] = '"';
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        b->p[b->n++] = tbl[v >> 18 & 63];
        b->p[b->n++] = tbl[v >> 12 & 63];
        b->p[b->n++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        b->p[b->n++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    b->p[b->n++] = '"';
}

/* Decimal text of v into buf (at least 24 bytes); returns buf. */
static const char *itoa_(long long v, char *buf)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t n;

    *--p = '\0';
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(buf, p, n);
    return buf;
}

static void put_attr(struct buf *b, const char *name, const char *v)
{
    puts_(b, "\"");
    puts_(b, name);
    puts_(b, "\":\"");
    puts_(b, v);
    puts_(b, "\"");
}

char *rq_record_json(const struct rq *q, const struct rq_msg *m, size_t *len)
{
    struct buf b = { 0 };
    char md5[33], num[32];

    grow(&b, m->blen + 512);
    puts_(&b, "{\"messageId\":");
    put_str(&b, m->id, m->idlen);
    puts_(&b, ",\"receiptHandle\":\"");
    puts_(&b, q->mode->name);
    puts_(&b, ":");
    put(&b, m->id, m->idlen); /* stream ids and list ids need no escaping */
    puts_(&b, ":");
    puts_(&b, itoa_(m->receive_count, num));
    puts_(&b, "\"");
    puts_(&b, ",\"body\":");
    put_str(&b, m->body, m->blen);
    puts_(&b, ",\"attributes\":{");
    put_attr(&b, "ApproximateReceiveCount", itoa_(m->receive_count, num));
    puts_(&b, ",");
    put_attr(&b, "SentTimestamp", itoa_(m->sent_ms, num));
    puts_(&b, ",");
    put_attr(&b, "SenderId", "sluice");
    puts_(&b, ",");
    put_attr(&b, "ApproximateFirstReceiveTimestamp", itoa_(m->first_ms, num));
    puts_(&b, "},\"messageAttributes\":{");
    if (m->fields) {
        bool first = true;
        for (size_t i = 0; i + 1 < m->fields->elements; i += 2) {
            const redisReply *f = m->fields->element[i], *v = m->fields->element[i + 1];
            if ((int)i == m->skip || f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            if (!first)
                puts_(&b, ",");
            first = false;
            put_str(&b, f->str, f->len);
            if (is_utf8(v->str, v->len)) {
                puts_(&b, ":{\"stringValue\":");
                put_str(&b, v->str, v->len);
                puts_(&b, ",\"stringListValues\":[],\"binaryListValues\":[],"
                          "\"dataType\":\"String\"}");
            } else {
                puts_(&b, ":{\"binaryValue\":");
                put_base64(&b, (const unsigned char *)v->str, v->len);
                puts_(&b, ",\"stringListValues\":[],\"binaryListValues\":[],"
                          "\"dataType\":\"Binary\"}");
            }
        }
    }
    rq_md5_hex(m->body, m->blen, md5);
    puts_(&b, "},\"md5OfBody\":\"");
    puts_(&b, md5);
    puts_(&b, "\",\"eventSource\":\"sluice:redis\",\"eventSourceARN\":");
    put_str(&b, q->arn, strlen(q->arn));
    puts_(&b, ",\"awsRegion\":");
    put_str(&b, q->region, strlen(q->region));
    puts_(&b, "}");
    b.p[b.n] = '\0';
    *len = b.n;
    return b.p;
}

json_t *rq_filter_doc(const char *json, size_t len)
{
    json_t *doc = json_loadb(json, len, 0, NULL), *body, *parsed;

    if (!doc)
        return NULL;
    body = json_object_get(doc, "body");
    parsed = json_is_string(body) ? json_loadb(json_string_value(body), json_string_length(body),
                                               JSON_DECODE_ANY, NULL)
                                  : NULL;
    if (parsed)
        json_object_set_new(doc, "body", parsed);
    else
        json_object_del(doc, "body");
    return doc;
}
