/* Log sink: formats one line into a stack buffer, writes it with one
 * write(2) so lines from several threads or processes never interleave.
 * Every control character, and every byte that is not UTF-8, is written
 * escaped: a line is one line, and nothing in it (a handler's output, a
 * client's header) can move an operator's cursor or forge a line.
 *
 * The service moves writing to a thread of its own (sl_log_start_writer):
 * then a line is queued in a bounded buffer and the caller goes on, so a
 * slow or stopped stderr never blocks the event loop. A line that finds the
 * buffer full is dropped and counted, and the writer says how many. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Length of the valid UTF-8 sequence at s (1..4), 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* overlong forms, surrogates, past U+10FFFF */
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* Append `s` to buf[*len..n) with C0 and C1 controls, DEL and bytes that
 * are not UTF-8 escaped: as JSON string content (`json`) or as text, where
 * \n, \r, \t and \xNN stand for the bytes. Stops quietly at the cap. */
static void escape(char *buf, size_t n, size_t *len, const char *s, bool json)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    while (*p && *len + 13 < n) {
        unsigned char c = *p;
        size_t u = utf8_len(p);
        unsigned cp = u == 2 ? ((unsigned)(c & 0x1f) << 6) | (p[1] & 0x3f) : c;
        const char *e = NULL;

        if (c == '\n')
            e = "\\n";
        else if (c == '\r')
            e = "\\r";
        else if (c == '\t')
            e = "\\t";
        else if (json && (c == '"' || c == '\\'))
            e = c == '"' ? "\\\"" : "\\\\";
        if (e) {
            memcpy(buf + *len, e, 2);
            *len += 2;
            p++;
        } else if (u == 0 || (u == 1 && (c < 0x20 || c == 0x7f)) || (u == 2 && cp < 0xa0)) {
            /* a control (C1 ones are two bytes in UTF-8) or not UTF-8 */
            size_t k = u ? u : 1;
            for (size_t i = 0; i < k; i++) {
                if (json && u) {
                    unsigned v = u == 2 ? cp : c;
                    memcpy(buf + *len, "\\u00", 4);
                    buf[*len + 4] = hex[v >> 4];
                    buf[*len + 5] = hex[v & 15];
                    *len += 6;
                    break;
                }
                memcpy(buf + *len, json ? "\\\\x" : "\\x", json ? 3 : 2);
                *len += json ? 3 : 2;
                buf[(*len)++] = hex[p[i] >> 4];
                buf[(*len)++] = hex[p[i] & 15];
            }
            p += k;
        } else {
            memcpy(buf + *len, p, u);
            *len += u;
            p += u;
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

/* One whole line, '\n'-terminated, into `line`; returns its length. */
static size_t format_line(char *line, size_t size, int level, const char *inst, const char *msg)
{
    char ts[96];
    struct timespec now;
    struct tm tm;
    size_t len = 0;
    bool json = log_format == SL_LOG_JSON;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(now.tv_nsec / 1000000) % 1000);
    if (level < 0 || level > SL_LOG_DEBUG)
        level = SL_LOG_ERROR;

    if (json) {
        append(line, size, &len, "{\"ts\":\"%s\",\"level\":\"%s\"", ts,
               sl_log_level_names[level]);
        if (inst) {
            append(line, size, &len, ",\"instance\":\"");
            escape(line, size, &len, inst, true);
            append(line, size, &len, "\"");
        }
        append(line, size, &len, ",\"msg\":\"");
        escape(line, size, &len, msg, true);
        append(line, size, &len, "\"}\n");
    } else {
        append(line, size, &len, "%s %-5s ", ts, sl_log_level_names[level]);
        if (inst) {
            append(line, size, &len, "[");
            escape(line, size, &len, inst, false);
            append(line, size, &len, "] ");
        }
        escape(line, size, &len, msg, false);
        append(line, size, &len, "\n");
    }
    if (len > 0 && line[len - 1] != '\n')
        line[len - 1] = '\n';
    return len;
}

static void write_all(int fd, const char *p, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

/* ------------------------------------------------------------------ */
/* The writer thread                                                   */

/* The queue between sl__log and the writer: part of the log sink. */
static struct {
    pthread_mutex_t    lock;
    pthread_cond_t     more;        /* lines queued, or stop */
    pthread_cond_t     empty;       /* the queue was written out (CLOCK_MONOTONIC) */
    pthread_t          thread;
    char              *buf;         /* ring of `cap` bytes, owned */
    size_t             cap, head, len;
    bool               running;     /* sl__log queues */
    bool               stopping;
    unsigned long long dropped;     /* lines dropped since start */
    unsigned long long unreported;  /* of those, not yet written about */
} lq = { .lock = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER };

#define WRITER_GATHER_NS 1000000L  /* 1 ms */

static void *writer_main(void *arg)
{
    static char chunk[65536];

    (void)arg;
    pthread_mutex_lock(&lq.lock);
    for (;;) {
        unsigned long long lost;
        size_t n, first;
        int fd;

        if (lq.len == 0 && !lq.unreported && !lq.stopping) {
            while (lq.len == 0 && !lq.unreported && !lq.stopping)
                pthread_cond_wait(&lq.more, &lq.lock);
            /* woken by a first line: let a burst gather, so that a busy
             * loop pays one wake-up and one write per millisecond, not
             * one per line */
            if (!lq.stopping && lq.len < lq.cap / 4) {
                struct timespec gather = { 0, WRITER_GATHER_NS };

                pthread_mutex_unlock(&lq.lock);
                nanosleep(&gather, NULL);
                pthread_mutex_lock(&lq.lock);
            }
        }
        if (lq.len == 0 && !lq.unreported)
            break; /* stopping, and everything is out */
        n = lq.len < sizeof(chunk) ? lq.len : sizeof(chunk);
        first = lq.cap - lq.head < n ? lq.cap - lq.head : n;
        memcpy(chunk, lq.buf + lq.head, first);
        memcpy(chunk + first, lq.buf, n - first);
        lq.head = (lq.head + n) % lq.cap;
        lq.len -= n;
        lost = lq.len == 0 ? lq.unreported : 0;
        lq.unreported -= lost;
        fd = log_fd;
        pthread_mutex_unlock(&lq.lock);

        write_all(fd, chunk, n);
        if (lost) {
            char msg[160], line[512];
            snprintf(msg, sizeof(msg), "%llu log lines dropped: the log output could not keep "
                     "up", lost);
            write_all(fd, line, format_line(line, sizeof(line), SL_LOG_WARN, "log", msg));
        }
        pthread_mutex_lock(&lq.lock);
        if (lq.len == 0 && !lq.unreported)
            pthread_cond_broadcast(&lq.empty);
    }
    pthread_mutex_unlock(&lq.lock);
    return NULL;
}

int sl_log_start_writer(size_t cap)
{
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;

    pthread_mutex_lock(&lq.lock);
    if (lq.running || lq.buf) {
        pthread_mutex_unlock(&lq.lock);
        return -1;
    }
    lq.buf = malloc(cap);
    if (!lq.buf) {
        pthread_mutex_unlock(&lq.lock);
        return -1;
    }
    lq.cap = cap;
    lq.head = lq.len = 0;
    lq.dropped = lq.unreported = 0;
    lq.stopping = false;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&lq.empty, &ca);
    pthread_condattr_destroy(&ca);
    /* signals stay with the threads that handle them */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&lq.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(lq.buf);
        lq.buf = NULL;
        pthread_cond_destroy(&lq.empty);
    } else {
        lq.running = true;
    }
    pthread_mutex_unlock(&lq.lock);
    return rc == 0 ? 0 : -1;
}

void sl_log_stop_writer(int ms)
{
    struct timespec end;
    bool drained;

    pthread_mutex_lock(&lq.lock);
    if (!lq.running) {
        pthread_mutex_unlock(&lq.lock);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    while (lq.len > 0 || lq.unreported)
        if (pthread_cond_timedwait(&lq.empty, &lq.lock, &end) == ETIMEDOUT)
            break;
    drained = lq.len == 0 && !lq.unreported;
    lq.running = false; /* later lines are written directly */
    lq.stopping = true;
    pthread_cond_signal(&lq.more);
    pthread_mutex_unlock(&lq.lock);
    if (!drained) {
        /* the fd does not take what is left: the writer keeps trying on
         * its own, with its buffer, until the process exits */
        pthread_detach(lq.thread);
        return;
    }
    pthread_join(lq.thread, NULL);
    pthread_mutex_lock(&lq.lock);
    free(lq.buf);
    lq.buf = NULL;
    pthread_cond_destroy(&lq.empty);
    pthread_mutex_unlock(&lq.lock);
}

unsigned long long sl_log_dropped(void)
{
    unsigned long long n;

    pthread_mutex_lock(&lq.lock);
    n = lq.dropped;
    pthread_mutex_unlock(&lq.lock);
    return n;
}

/* One whole line out: queued for the writer, or written directly. */
static void emit(const char *line, size_t len)
{
    int saved = errno;

    pthread_mutex_lock(&lq.lock);
    if (lq.running) {
        bool was_empty = lq.len == 0;

        if (lq.cap - lq.len >= len) {
            size_t tail = (lq.head + lq.len) % lq.cap;
            size_t first = lq.cap - tail < len ? lq.cap - tail : len;
            memcpy(lq.buf + tail, line, first);
            memcpy(lq.buf, line + first, len - first);
            lq.len += len;
        } else {
            lq.dropped++;
            lq.unreported++;
        }
        if (was_empty) /* the writer waits only on an empty queue */
            pthread_cond_signal(&lq.more);
        pthread_mutex_unlock(&lq.lock);
        errno = saved;
        return;
    }
    pthread_mutex_unlock(&lq.lock);
    write_all(log_fd, line, len);
    errno = saved;
}

void sl__log(int level, const char *inst, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * 2 + 512];
    size_t len;
    va_list ap;
    int saved = errno;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    len = format_line(line, sizeof(line), level, inst, msg);
    emit(line, len);
    errno = saved;
}

void sl_log_json_line(const char *json, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char stack[LOG_LINE_MAX * 2], *line = stack;
    size_t cap = n * 6 + 2, len = 0; /* each byte at most \u00XX */

    if (cap > sizeof(stack))
        line = malloc(cap);
    if (!line)
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)json[i];
        unsigned v = 0x100;

        if (c == 0x7f || c == '\n' || c == '\r')
            v = c;
        else if (c == 0xc2 && i + 1 < n && (unsigned char)json[i + 1] >= 0x80 &&
                 (unsigned char)json[i + 1] <= 0x9f)
            v = (unsigned char)json[++i]; /* a C1 control, as UTF-8 */
        if (v == 0x100) {
            line[len++] = (char)c;
            continue;
        }
        memcpy(line + len, "\\u00", 4);
        line[len + 4] = hex[v >> 4];
        line[len + 5] = hex[v & 15];
        len += 6;
    }
    line[len++] = '\n';
    emit(line, len);
    if (line != stack)
        free(line);
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
