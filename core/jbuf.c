/* JSON text by appending: numbers, strings and base64 without stdio. */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "sluice/jbuf.h"

size_t sl_fmt_i64(char *t, int64_t v)
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

void sl_jbuf_i64(struct sl_jbuf *b, int64_t v)
{
    sl_jbuf_grow(b, 24);
    b->n += sl_fmt_i64(b->p + b->n, v);
    b->p[b->n] = '\0';
}

size_t sl_utf8_len(const unsigned char *p, size_t n)
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

void sl_jbuf_str(struct sl_jbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    static const char hex[] = "0123456789abcdef";

    sl_jbuf_grow(b, n + 2);
    b->p[b->n++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char ch = p[i];
        size_t l;

        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch < 0x80) {
            size_t j = i;
            while (j < n && p[j] >= 0x20 && p[j] != '"' && p[j] != '\\' && p[j] < 0x80)
                j++;
            sl_jbuf_put(b, s + i, j - i);
            i = j;
            continue;
        }
        if (ch >= 0x80) {
            l = sl_utf8_len(p + i, n - i);
            if (l) {
                sl_jbuf_put(b, s + i, l);
                i += l;
            } else {
                SL_JBUF_LIT(b, "\\ufffd");
                i++;
            }
            continue;
        }
        switch (ch) {
        case '"': SL_JBUF_LIT(b, "\\\""); break;
        case '\\': SL_JBUF_LIT(b, "\\\\"); break;
        case '\n': SL_JBUF_LIT(b, "\\n"); break;
        case '\r': SL_JBUF_LIT(b, "\\r"); break;
        case '\t': SL_JBUF_LIT(b, "\\t"); break;
        default: {
            char e[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
            sl_jbuf_put(b, e, sizeof(e));
        }
        }
        i++;
    }
    SL_JBUF_LIT(b, "\"");
}

/* Two base64 digits for every 12-bit value, built once. */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static char b64_pair[4096 * 2];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_init(void)
{
    for (int x = 0; x < 4096; x++) {
        b64_pair[x * 2] = b64[x >> 6];
        b64_pair[x * 2 + 1] = b64[x & 63];
    }
}

void sl_jbuf_base64(struct sl_jbuf *b, const unsigned char *s, size_t n)
{
    char *o;
    size_t i;

    pthread_once(&b64_once, b64_init);
    sl_jbuf_grow(b, (n + 2) / 3 * 4 + 2);
    o = b->p + b->n;
    *o++ = '"';
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        memcpy(o, b64_pair + (v >> 12) * 2, 2);
        memcpy(o + 2, b64_pair + (v & 4095) * 2, 2);
        o += 4;
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
    b->p[b->n] = '\0';
}

void sl_jbuf_printf(struct sl_jbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    sl_jbuf_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}
