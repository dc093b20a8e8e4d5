/* sluice: a growable buffer for building JSON text by appending, without
 * stdio on the hot path: the record builders of the Kafka, Redis and
 * Postgres sources. The text is always NUL-terminated; p is malloc'd and
 * belongs to whoever takes it (or free(b.p)). Loop thread or any single
 * thread per buffer. */
#ifndef SLUICE_JBUF_H
#define SLUICE_JBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/mem.h"

struct sl_jbuf {
    char  *p;
    size_t n, cap;      /* cap counts the terminating NUL */
};

/* Room for `more` bytes and the NUL. */
static inline void sl_jbuf_grow(struct sl_jbuf *b, size_t more)
{
    if (b->n + more + 1 <= b->cap)
        return;
    b->cap = (b->n + more + 1) * 2;
    if (b->cap < 256)
        b->cap = 256;
    b->p = sl_realloc(b->p, b->cap);
}

static inline void sl_jbuf_put(struct sl_jbuf *b, const char *s, size_t n)
{
    sl_jbuf_grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static inline void sl_jbuf_puts(struct sl_jbuf *b, const char *s)
{
    sl_jbuf_put(b, s, strlen(s));
}

/* A string literal, its length known at compile time. */
#define SL_JBUF_LIT(b, lit) sl_jbuf_put((b), (lit), sizeof(lit) - 1)

/* Decimal digits of v into t (at least 21 bytes, not terminated), two
 * at a time; returns the length. */
size_t sl_fmt_i64(char *t, int64_t v);

void sl_jbuf_i64(struct sl_jbuf *b, int64_t v);

/* s[0..n) as a JSON string, quotes included; bytes that are not UTF-8
 * become U+FFFD, control characters are escaped. */
void sl_jbuf_str(struct sl_jbuf *b, const char *s, size_t n);

/* Base64 of s[0..n) as a JSON string, quotes included. */
void sl_jbuf_base64(struct sl_jbuf *b, const unsigned char *s, size_t n);

/* Appends like printf (not for hot paths). */
void sl_jbuf_printf(struct sl_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Length of the valid UTF-8 sequence at p[0..n), 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
size_t sl_utf8_len(const unsigned char *p, size_t n);

#endif
