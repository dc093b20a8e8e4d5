/* The Postgres client connection (see sluice/pgconn.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/backoff.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pgconn.h"

#define CONNECT_TIMEOUT_MS 10000
#define COPY_BURST         2000       /* copy messages per wakeup before yielding */
#define RETRY_BASE_MS      200
#define RETRY_CAP_MS       5000
#define KW_MAX             16

struct sl_pgconn_query {
    char                   *sql;
    int                     n;        /* parameters; -1: PQsendQuery */
    Oid                    *types;
    const char            **values;   /* borrowed */
    int                    *lengths, *formats;
    sl_pgconn_result_fn     cb;
    void                   *arg;
    struct sl_pgconn_query *next;
};

static void on_sock(evutil_socket_t fd, short what, void *arg);
static void on_again(evutil_socket_t fd, short what, void *arg);
static void on_timeout(evutil_socket_t fd, short what, void *arg);
static void on_retry(evutil_socket_t fd, short what, void *arg);

const char *sl_pgconn_error(struct sl_pgconn *c, char *buf, size_t n)
{
    const char *m = c->conn ? PQerrorMessage(c->conn) : "";
    size_t i = 0;

    while (m[i] && m[i] != '\n' && i + 1 < n) {
        buf[i] = m[i];
        i++;
    }
    buf[i] = '\0';
    return buf;
}

char *sl_pgconn_where(const char *dsn)
{
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *db = NULL, *user = NULL;
    char *out;

    if (!opts)
        return sl_strdup("?");
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !o->val[0])
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            db = o->val;
        else if (!strcmp(o->keyword, "user"))
            user = o->val;
    }
    out = sl_asprintf("%s:%s/%s", host ? host : hostaddr ? hostaddr : "local",
                      port ? port : "5432", db ? db : user ? user : "postgres");
    PQconninfoFree(opts);
    return out;
}

/* ------------------------------------------------------------------ */
/* DSN errors                                                          */

/* Scrub [p, p+n) and its percent-decoded form out of msg. */
static void scrub_span(char *msg, size_t mn, const char *p, size_t n)
{
    char *raw, *dec;

    if (n == 0)
        return;
    raw = sl_strndup(p, n);
    dec = sl_pct_decode(p, n, false, NULL);
    sl_log_scrub(msg, mn, raw);
    sl_log_scrub(msg, mn, dec);
    explicit_bzero(raw, n);
    explicit_bzero(dec, strlen(dec));
    free(raw);
    free(dec);
}

/* libpq quotes parts of a DSN it cannot parse, the password among them
 * ('invalid percent-encoded token: "hun%zzter2"'), with no keyword near it
 * for sl_log_redact to find: take every password the DSN spells out (URI
 * userinfo, `password` keyword or query parameter, raw and decoded) out of
 * the message by value. */
static void scrub_dsn(char *msg, size_t mn, const char *dsn)
{
    const char *sep = strstr(dsn, "://");

    if (sep) {
        const char *auth = sep + 3, *end = auth + strcspn(auth, "/?"), *at = NULL, *colon;

        for (const char *q = auth; q < end; q++)
            if (*q == '@')
                at = q;
        if (at && (colon = memchr(auth, ':', (size_t)(at - auth))))
            scrub_span(msg, mn, colon + 1, (size_t)(at - colon - 1));
    }
    for (const char *q = dsn; *q; q++) {
        const char *v;

        if (strncasecmp(q, "password", 8) != 0)
            continue;
        v = q + 8 + strspn(q + 8, " \t");
        if (*v != '=')
            continue;
        v += 1 + strspn(v + 1, " \t");
        if (*v == '\'') {
            const char *e = ++v;
            char *unq = sl_malloc(strlen(v) + 1), *u = unq;

            while (*e && *e != '\'') {
                if (*e == '\\' && e[1])
                    e++;
                *u++ = *e++;
            }
            *u = '\0';
            scrub_span(msg, mn, v, (size_t)(e - v));
            sl_log_scrub(msg, mn, unq);
            explicit_bzero(unq, strlen(unq));
            free(unq);
        } else {
            scrub_span(msg, mn, v, strcspn(v, " \t&"));
        }
    }
}

int sl_pgconn_dsn_check(const char *dsn, char *why, size_t n)
{
    char *perr = NULL, msg[512];
    PQconninfoOption *opts = PQconninfoParse(dsn ? dsn : "", &perr);
    size_t i = 0;

    if (opts) {
        PQconninfoFree(opts);
        return 0;
    }
    for (const char *m = perr ? perr : "out of memory"; m[i] && m[i] != '\n' && i + 1 < sizeof(msg);
         i++)
        msg[i] = m[i];
    msg[i] = '\0';
    PQfreemem(perr);
    scrub_dsn(msg, sizeof(msg), dsn ? dsn : "");
    sl_log_redact(msg, why, n);
    explicit_bzero(msg, sizeof(msg));
    return -1;
}

static void on_notice(void *arg, const char *message)
{
    struct sl_pgconn *c = arg;

    SL_DEBUG(SL_DBG_POSTGRES, c->inst, "postgres (%s connection): %.*s", c->what,
             (int)strcspn(message, "\n"), message);
}

void sl_pgconn_init(struct sl_pgconn *c, struct event_base *base, const char *inst,
                    const char *what)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
    c->inst = inst;
    c->what = what;
    c->ev_fd = -1;
    c->retry_base_ms = RETRY_BASE_MS;
    c->retry_cap_ms = RETRY_CAP_MS;
    c->timeout = evtimer_new(base, on_timeout, c);
    c->again = event_new(base, -1, 0, on_again, c);
    c->retry = evtimer_new(base, on_retry, c);
    sl_resolver_init(&c->res, base);
}

static void query_free(struct sl_pgconn_query *q)
{
    if (!q)
        return;
    free(q->sql);
    free(q->types);
    free(q->values);
    free(q->lengths);
    free(q->formats);
    free(q);
}

static void drop_queue(struct sl_pgconn *c)
{
    struct sl_pgconn_query *q = c->qhead;

    while (q) {
        struct sl_pgconn_query *next = q->next;
        query_free(q);
        q = next;
    }
    c->qhead = c->qtail = NULL;
    query_free(c->cur);
    c->cur = NULL;
    if (c->first) {
        PQclear(c->first);
        c->first = NULL;
    }
}

/* Everything but the retry timer and the saved parameters. */
static void shut(struct sl_pgconn *c)
{
    c->gen++;
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    c->ev_fd = -1;
    if (c->timeout)
        evtimer_del(c->timeout);
    if (c->again)
        event_del(c->again);
    sl_resolve_cancel(&c->res);
    drop_queue(c);
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->state = SL_PGCONN_DOWN;
    c->read_paused = false;
    c->want_write = false;
    c->fail[0] = '\0';
}

void sl_pgconn_close(struct sl_pgconn *c)
{
    shut(c);
    if (c->retry)
        evtimer_del(c->retry);
}

static void forget_params(struct sl_pgconn *c)
{
    free(c->dsn);
    c->dsn = NULL;
    for (size_t i = 0; i < KW_MAX; i++) {
        free(c->kw[i]);
        free(c->val[i]);
        c->kw[i] = c->val[i] = NULL;
    }
}

void sl_pgconn_destroy(struct sl_pgconn *c)
{
    if (!c->base)
        return;
    sl_pgconn_close(c);
    sl_resolver_destroy(&c->res);
    if (c->timeout)
        event_free(c->timeout);
    if (c->again)
        event_free(c->again);
    if (c->retry)
        event_free(c->retry);
    c->timeout = c->again = c->retry = NULL;
    forget_params(c);
    free(c->where);
    c->where = NULL;
}

static void watch(struct sl_pgconn *c)
{
    short what = 0;
    int fd;

    if (!c->conn)
        return;
    fd = PQsocket(c->conn);
    if (c->state == SL_PGCONN_CONNECTING)
        what = c->ev_what; /* set by the connect poll */
    else {
        if (!(c->state == SL_PGCONN_COPY && c->read_paused))
            what |= EV_READ;
        if (c->want_write)
            what |= EV_WRITE;
    }
    if (c->ev && (c->ev_fd != fd || (short)(event_get_events(c->ev) & (EV_READ | EV_WRITE)) != what)) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (!c->ev && what && fd >= 0) {
        c->ev = event_new(c->base, fd, what | EV_PERSIST, on_sock, c);
        c->ev_fd = fd;
        event_add(c->ev, NULL);
    }
}

/* The connection is gone: tell the owner (after cleaning up). */
static void down(struct sl_pgconn *c, const char *what)
{
    char msg[300], why[400];

    if (c->fail[0])
        snprintf(msg, sizeof(msg), "%s", c->fail);
    else
        sl_pgconn_error(c, msg, sizeof(msg));
    snprintf(why, sizeof(why), "%s%s%s", what, msg[0] ? ": " : "", msg);
    shut(c);
    if (c->on_down)
        c->on_down(c, why, c->arg);
}

static bool flush_out(struct sl_pgconn *c)
{
    int r = PQflush(c->conn);

    if (r < 0)
        return false;
    c->want_write = r == 1;
    watch(c);
    return true;
}

static void pump(struct sl_pgconn *c)
{
    struct sl_pgconn_query *q;
    int sent;

    if (c->state != SL_PGCONN_READY || c->cur || !c->qhead)
        return;
    q = c->cur = c->qhead;
    c->qhead = q->next;
    if (!c->qhead)
        c->qtail = NULL;
    sent = q->n < 0 ? PQsendQuery(c->conn, q->sql)
                    : PQsendQueryParams(c->conn, q->sql, q->n, q->types, q->values, q->lengths,
                                        q->formats, 0);
    if (!sent || !flush_out(c))
        down(c, "cannot send a query");
}

static void enqueue(struct sl_pgconn *c, struct sl_pgconn_query *q)
{
    if (c->qtail)
        c->qtail->next = q;
    else
        c->qhead = q;
    c->qtail = q;
    pump(c);
}

void sl_pgconn_query(struct sl_pgconn *c, const char *sql, sl_pgconn_result_fn cb, void *arg)
{
    struct sl_pgconn_query *q = sl_calloc(1, sizeof(*q));

    q->sql = sl_strdup(sql);
    q->n = -1;
    q->cb = cb;
    q->arg = arg;
    enqueue(c, q);
}

void sl_pgconn_query_params(struct sl_pgconn *c, const char *sql, int n, const Oid *types,
                            const char *const *values, const int *lengths, const int *formats,
                            sl_pgconn_result_fn cb, void *arg)
{
    struct sl_pgconn_query *q = sl_calloc(1, sizeof(*q));
    size_t k = n > 0 ? (size_t)n : 1;

    q->sql = sl_strdup(sql);
    q->n = n;
    q->types = sl_calloc(k, sizeof(*q->types));
    q->values = sl_calloc(k, sizeof(*q->values));
    q->lengths = sl_calloc(k, sizeof(*q->lengths));
    q->formats = sl_calloc(k, sizeof(*q->formats));
    for (int i = 0; i < n; i++) {
        q->types[i] = types ? types[i] : 0;
        q->values[i] = values[i];
        q->lengths[i] = lengths ? lengths[i] : 0;
        q->formats[i] = formats ? formats[i] : 0;
    }
    q->cb = cb;
    q->arg = arg;
    enqueue(c, q);
}

/* libpq's handshake, once the address is known (`ip`: hostaddr, or NULL
 * to leave the DSN's as it is). */
static void begin(struct sl_pgconn *c, const char *ip)
{
    const char *k[KW_MAX + 2], *v[KW_MAX + 2];
    size_t n = 0;

    k[n] = "dbname";
    v[n++] = c->dsn;
    for (size_t i = 0; i < KW_MAX && c->kw[i]; i++) {
        k[n] = c->kw[i];
        v[n++] = c->val[i];
    }
    if (ip) {
        /* later pairs win: libpq never resolves on the loop thread */
        k[n] = "hostaddr";
        v[n++] = ip;
    }
    k[n] = v[n] = NULL;
    c->conn = PQconnectStartParams(k, v, 1);
    c->ev_what = EV_WRITE;
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        /* reported from the loop, as every other outcome */
        c->ev_what = 0;
        event_active(c->timeout, EV_TIMEOUT, 0);
        return;
    }
    PQsetNoticeProcessor(c->conn, on_notice, c);
    watch(c);
}

static void on_resolved(const char *ip, const char *why, void *arg)
{
    struct sl_pgconn *c = arg;

    if (ip) {
        begin(c, ip);
        return;
    }
    snprintf(c->fail, sizeof(c->fail), "%s", why);
    event_active(c->timeout, EV_TIMEOUT, 0); /* maybe inside sl_pgconn_connect */
}

/* The one host name libpq would look up, or NULL: an address, a socket
 * directory, several hosts (left to libpq), or `hostaddr` given. */
static char *host_to_resolve(const struct sl_pgconn *c)
{
    PQconninfoOption *opts = PQconninfoParse(c->dsn, NULL);
    const char *host = NULL, *hostaddr = NULL;
    char ip[SL_IP_MAX], *out = NULL;

    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (o->val && o->val[0] && !strcmp(o->keyword, "host"))
            host = o->val;
        else if (o->val && o->val[0] && !strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
    }
    for (size_t i = 0; i < KW_MAX && c->kw[i]; i++) {
        if (!strcmp(c->kw[i], "host"))
            host = c->val[i];
        else if (!strcmp(c->kw[i], "hostaddr"))
            hostaddr = c->val[i];
    }
    if (!host || !host[0])
        host = getenv("PGHOST");
    if (host && host[0] && host[0] != '/' && host[0] != '@' && !strchr(host, ',') &&
        !(hostaddr && hostaddr[0]) && !sl_resolve_literal(host, ip))
        out = sl_strdup(host);
    if (opts)
        PQconninfoFree(opts);
    return out;
}

static void start(struct sl_pgconn *c)
{
    struct timeval tv = { CONNECT_TIMEOUT_MS / 1000, 0 };
    char *host;

    shut(c);
    c->state = SL_PGCONN_CONNECTING;
    evtimer_add(c->timeout, &tv);
    host = host_to_resolve(c);
    if (host)
        sl_resolve(&c->res, host, on_resolved, c);
    else
        begin(c, NULL);
    free(host);
}

void sl_pgconn_connect(struct sl_pgconn *c, const char *dsn, const char *const *kw,
                       const char *const *val)
{
    sl_pgconn_close(c);
    forget_params(c);
    c->dsn = sl_strdup(dsn ? dsn : "");
    for (size_t i = 0; kw && kw[i] && i < KW_MAX - 1; i++) {
        c->kw[i] = sl_strdup(kw[i]);
        c->val[i] = sl_strdup(val[i] ? val[i] : "");
    }
    free(c->where);
    c->where = sl_pgconn_where(c->dsn);
    start(c);
}

uint64_t sl_pgconn_retry(struct sl_pgconn *c)
{
    uint64_t delay = sl_backoff_ms(c->attempt++, c->retry_base_ms, c->retry_cap_ms);
    struct timeval tv = { (time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000 };

    evtimer_add(c->retry, &tv);
    SL_DEBUG(SL_DBG_POSTGRES, c->inst, "reconnecting the %s connection to %s in %llu ms",
             c->what, c->where ? c->where : "?", (unsigned long long)delay);
    return delay;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct sl_pgconn *c = arg;

    (void)fd, (void)what;
    if (c->dsn)
        start(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sl_pgconn *c = arg;

    (void)fd, (void)what;
    if (c->state == SL_PGCONN_CONNECTING)
        down(c, c->fail[0] ? "cannot connect"
                : c->conn && PQstatus(c->conn) != CONNECTION_BAD ? "connect timed out"
                : "cannot connect");
}

static void connect_poll(struct sl_pgconn *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        c->ev_what = EV_READ;
        watch(c);
        return;
    case PGRES_POLLING_WRITING:
        c->ev_what = EV_WRITE;
        watch(c);
        return;
    case PGRES_POLLING_OK:
        evtimer_del(c->timeout);
        if (PQsetnonblocking(c->conn, 1) != 0) {
            down(c, "cannot make the connection non-blocking");
            return;
        }
        c->state = SL_PGCONN_READY;
        if (c->ev) {
            event_free(c->ev);
            c->ev = NULL;
        }
        watch(c);
        if (c->attempt > 0)
            SL_INFO(c->inst, "%s connection to %s is back after %u retries", c->what,
                    c->where ? c->where : "?", c->attempt);
        c->attempt = 0;
        if (c->on_up) {
            unsigned g = c->gen;
            c->on_up(c, c->arg);
            if (g != c->gen)
                return;
        }
        pump(c);
        return;
    default:
        down(c, "cannot connect");
        return;
    }
}

/* A query finished: hand its first result over. */
static void finished(struct sl_pgconn *c)
{
    struct sl_pgconn_query *q = c->cur;
    PGresult *res = c->first;
    unsigned g = c->gen;

    c->cur = NULL;
    c->first = NULL;
    if (q->cb)
        q->cb(c, res, res ? NULL : "no result", q->arg);
    query_free(q);
    if (res)
        PQclear(res);
    if (g == c->gen)
        pump(c);
}

static void read_results(struct sl_pgconn *c)
{
    unsigned g = c->gen;

    while (g == c->gen && c->state == SL_PGCONN_READY && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);

        if (!res) {
            if (c->cur)
                finished(c);
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_BOTH) {
            /* START_REPLICATION: the stream begins; no NULL result follows */
            struct sl_pgconn_query *q = c->cur;
            c->cur = NULL;
            c->state = SL_PGCONN_COPY;
            if (q && q->cb)
                q->cb(c, res, NULL, q->arg);
            PQclear(res);
            query_free(q);
            if (g == c->gen) {
                watch(c);
                event_active(c->again, EV_TIMEOUT, 0);
            }
            return;
        }
        if (!c->cur) {
            PQclear(res); /* nobody asked for it */
            continue;
        }
        if (!c->first)
            c->first = res;
        else
            PQclear(res);
    }
}

/* Copy-both: hand each message over until libpq has no whole one left. */
static void read_copy(struct sl_pgconn *c)
{
    unsigned g = c->gen;

    for (int i = 0; i < COPY_BURST; i++) {
        char *buf = NULL;
        int n;

        if (c->read_paused)
            return;
        n = PQgetCopyData(c->conn, &buf, 1);
        if (n > 0) {
            bool more = c->on_copy ? c->on_copy(c, buf, (size_t)n, c->arg) : true;
            PQfreemem(buf);
            if (g != c->gen)
                return;
            if (!more) {
                c->read_paused = true;
                watch(c);
                return;
            }
            continue;
        }
        if (n == 0)
            return; /* wait for the socket */
        if (n == -1) {
            PGresult *res = PQgetResult(c->conn);
            char msg[300];
            snprintf(msg, sizeof(msg), "the server ended the stream%s%s",
                     res && PQresultErrorMessage(res)[0] ? ": " : "",
                     res ? PQresultErrorMessage(res) : "");
            if (res)
                PQclear(res);
            msg[strcspn(msg, "\n")] = '\0';
            down(c, msg);
            return;
        }
        down(c, "the stream broke");
        return;
    }
    /* more may be buffered: continue from the loop, letting others run */
    event_active(c->again, EV_TIMEOUT, 0);
}

static void on_again(evutil_socket_t fd, short what, void *arg)
{
    struct sl_pgconn *c = arg;

    (void)fd, (void)what;
    if (c->state == SL_PGCONN_COPY && c->conn && !c->read_paused)
        read_copy(c);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct sl_pgconn *c = arg;
    unsigned g = c->gen;

    (void)fd;
    if (c->state == SL_PGCONN_CONNECTING) {
        connect_poll(c);
        return;
    }
    if ((what & EV_WRITE) && !flush_out(c)) {
        down(c, "connection lost");
        return;
    }
    if (!(what & EV_READ) || g != c->gen)
        return;
    if (!PQconsumeInput(c->conn)) {
        down(c, "connection lost");
        return;
    }
    if (c->state == SL_PGCONN_COPY)
        read_copy(c);
    else
        read_results(c);
    if (g == c->gen && c->conn && PQstatus(c->conn) == CONNECTION_BAD)
        down(c, "connection lost");
}

bool sl_pgconn_put_copy(struct sl_pgconn *c, const char *buf, size_t len)
{
    if (c->state != SL_PGCONN_COPY || !c->conn)
        return false;
    if (PQputCopyData(c->conn, buf, (int)len) != 1)
        return false;
    return flush_out(c);
}

void sl_pgconn_pause_read(struct sl_pgconn *c, bool paused)
{
    if (c->read_paused == paused)
        return;
    c->read_paused = paused;
    if (!c->conn)
        return;
    watch(c);
    if (!paused && c->state == SL_PGCONN_COPY)
        event_active(c->again, EV_TIMEOUT, 0); /* what libpq already holds */
}
