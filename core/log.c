/* Log sink: formats one line into a stack buffer, writes it with one
 * write(2) so lines from several threads or processes never interleave. */
#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sluice/log.h"

#define LOG_LINE_MAX 8192

const char *const sl_log_ctx_names[] = {
    "config", "kafka", "redis", "postgres", "sandbox", "dispatch", "api", "sink", NULL,
};
_Static_assert(sizeof(sl_log_ctx_names) / sizeof(sl_log_ctx_names[0]) == SL_DBG__COUNT + 1,
               "sl_log_ctx_names out of sync with enum sl_log_ctx");

const char *const sl_log_level_names[] = { "error", "warn", "info", "debug", NULL };

int      sl__log_level = SL_LOG_INFO;
unsigned sl__log_debug_mask;

static enum sl_log_format log_format = SL_LOG_TEXT;
static int log_fd = 2;

void sl_log_set_level(enum sl_log_level level) { sl__log_level = (int)level; }
void sl_log_set_format(enum sl_log_format format) { log_format = format; }
void sl_log_set_debug(unsigned mask) { sl__log_debug_mask = mask; }
void sl_log_set_fd(int fd) { log_fd = fd; }

long sl_log_ctx_parse(const char *name)
{
    if (strcmp(name, "all") == 0)
        return (long)((1u << SL_DBG__COUNT) - 1);
    for (int i = 0; sl_log_ctx_names[i]; i++)
        if (strcmp(name, sl_log_ctx_names[i]) == 0)
            return (long)(1u << i);
    return -1;
}

/* Append JSON-escaped `s` to buf[*len..n); stops quietly at the cap. */
static void json_escape(char *buf, size_t n, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    for (; *s && *len + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = (char)c;
        } else if (c == '\n') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = 'n';
        } else if (c == '\t') {
            buf[(*len)++] = '\\';
            buf[(*len)++] = 't';
        } else if (c < 0x20) {
            memcpy(buf + *len, "\\u00", 4);
            buf[*len + 4] = hex[c >> 4];
            buf[*len + 5] = hex[c & 15];
            *len += 6;
        } else {
            buf[(*len)++] = (char)c;
        }
    }
}

static void append(char *buf, size_t n, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (*len >= n)
        return;
    va_start(ap, fmt);
    w = vsnprintf(buf + *len, n - *len, fmt, ap);
    va_end(ap);
    if (w < 0)
        return;
    *len += (size_t)w < n - *len ? (size_t)w : n - *len - 1;
}

void sl__log(int level, const char *inst, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX + 512], ts[96];
    struct timespec now;
    struct tm tm;
    size_t len = 0;
    va_list ap;
    int saved = errno;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(now.tv_nsec / 1000000) % 1000);
    if (level < 0 || level > SL_LOG_DEBUG)
        level = SL_LOG_ERROR;

    if (log_format == SL_LOG_JSON) {
        append(line, sizeof(line), &len, "{\"ts\":\"%s\",\"level\":\"%s\"", ts,
               sl_log_level_names[level]);
        if (inst) {
            append(line, sizeof(line), &len, ",\"instance\":\"");
            json_escape(line, sizeof(line), &len, inst);
            append(line, sizeof(line), &len, "\"");
        }
        append(line, sizeof(line), &len, ",\"msg\":\"");
        json_escape(line, sizeof(line), &len, msg);
        append(line, sizeof(line), &len, "\"}\n");
    } else {
        append(line, sizeof(line), &len, "%s %-5s %s%s%s%s\n", ts,
               sl_log_level_names[level], inst ? "[" : "", inst ? inst : "",
               inst ? "] " : "", msg);
    }
    if (len > 0 && line[len - 1] != '\n')
        line[len - 1] = '\n';

    for (size_t off = 0; off < len;) {
        ssize_t w = write(log_fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved;
}

/* ------------------------------------------------------------------ */
/* Redaction                                                           */

static size_t put(char *out, size_t n, size_t o, const char *s, size_t len)
{
    for (size_t i = 0; i < len && o + 1 < n; i++)
        out[o++] = s[i];
    return o;
}

/* True when the scheme ending at `sep` ("://"), not before `start`, is
 * redis or rediss. */
static bool redis_scheme(const char *start, const char *sep)
{
    const char *b = sep;

    while (b > start && ((b[-1] >= 'a' && b[-1] <= 'z') || (b[-1] >= 'A' && b[-1] <= 'Z')))
        b--;
    return ((size_t)(sep - b) == 5 && strncasecmp(b, "redis", 5) == 0) ||
           ((size_t)(sep - b) == 6 && strncasecmp(b, "rediss", 6) == 0);
}

void sl_log_redact(const char *in, char *out, size_t n)
{
    size_t o = 0;
    const char *p = in;

    if (n == 0)
        return;
    while (*p) {
        const char *scheme = strstr(p, "://");
        const char *kw = NULL, *v = NULL;

        /* "password=" (libpq keywords, query strings), case-insensitive;
         * libpq allows blanks around the '=' */
        for (const char *q = p; *q && !kw; q++) {
            if (strncasecmp(q, "password", 8) == 0) {
                const char *r = q + 8;

                r += strspn(r, " \t");
                if (*r == '=') {
                    kw = q;
                    v = r + 1 + strspn(r + 1, " \t");
                }
            }
        }
        if (scheme && (!kw || scheme < kw)) {
            const char *auth = scheme + 3;
            const char *end = auth + strcspn(auth, "/?# \t");
            const char *at = memchr(auth, '@', (size_t)(end - auth));

            /* last '@' before the host wins: passwords may contain '@' */
            for (const char *a = at; a && a < end; a = memchr(a + 1, '@', (size_t)(end - a - 1)))
                at = a;
            o = put(out, n, o, p, (size_t)(auth - p));
            if (at) {
                const char *colon = memchr(auth, ':', (size_t)(at - auth));
                if (colon) {
                    o = put(out, n, o, auth, (size_t)(colon - auth));
                    o = put(out, n, o, ":***", 4);
                } else if (redis_scheme(p, scheme)) {
                    /* redis://SECRET@host: a lone userinfo is the password */
                    o = put(out, n, o, "***", 3);
                } else {
                    o = put(out, n, o, auth, (size_t)(at - auth));
                }
                auth = at;
            }
            p = auth;
            continue;
        }
        if (kw) {
            o = put(out, n, o, p, (size_t)(v - p));
            o = put(out, n, o, "***", 3);
            if (*v == '\'') {
                /* quoted libpq value: skip to the closing quote */
                v++;
                while (*v && *v != '\'') {
                    if (*v == '\\' && v[1])
                        v++;
                    v++;
                }
                if (*v)
                    v++;
            } else {
                v += strcspn(v, " \t&;");
            }
            p = v;
            continue;
        }
        o = put(out, n, o, p, strlen(p));
        break;
    }
    out[o] = '\0';
}

void sl_log_scrub(char *msg, size_t n, const char *secret)
{
    char tmp[LOG_LINE_MAX];
    size_t len, o = 0;
    const char *p, *hit;

    if (!msg || n == 0 || !secret || !secret[0])
        return;
    len = strlen(secret);
    if (!strstr(msg, secret))
        return;
    for (p = msg; (hit = strstr(p, secret)); p = hit + len) {
        o = put(tmp, sizeof(tmp), o, p, (size_t)(hit - p));
        o = put(tmp, sizeof(tmp), o, "***", 3);
    }
    o = put(tmp, sizeof(tmp), o, p, strlen(p));
    tmp[o] = '\0';
    snprintf(msg, n, "%s", tmp);
    explicit_bzero(tmp, sizeof(tmp));
}
