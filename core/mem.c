/* Allocation wrappers: abort with a log line instead of returning NULL. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

static void oom(size_t n) __attribute__((noreturn));

static void oom(size_t n)
{
    /* No sl_log here: it may allocate. */
    fprintf(stderr, "sluice: fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *sl_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *sl_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *sl_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *sl_strdup(const char *s)
{
    return sl_strndup(s, strlen(s));
}

char *sl_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = sl_malloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

int sl_hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

char *sl_pct_decode(const char *p, size_t n, bool strict, size_t *outn)
{
    char *out = sl_malloc(n + 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        int hi = -1, lo = -1;

        if (p[i] == '%' && i + 2 < n) {
            hi = sl_hexval((unsigned char)p[i + 1]);
            lo = sl_hexval((unsigned char)p[i + 2]);
        }
        if (hi >= 0 && lo >= 0) {
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else if (p[i] == '%' && strict) {
            free(out);
            return NULL;
        } else {
            *o++ = p[i];
        }
    }
    *o = '\0';
    if (outn)
        *outn = (size_t)(o - out);
    return out;
}

char *sl_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return s;
}
