/* One non-blocking libpq connection driven by the loop: connect with
 * PQconnectStartParams/PQconnectPoll, queries one at a time with
 * PQsendQuery, and copy-both streaming with PQgetCopyData(async) and
 * PQputCopyData/PQflush, waiting for write readiness when libpq's output
 * buffer is not empty. The owner gets on_up, on_down, per-query callbacks
 * and copy data; every callback may close the connection (the generation
 * counter tells the helper to stop touching it).
 *
 * Limitation: libpq resolves host names inside PQconnectPoll, blocking
 * the loop for that lookup; use an address (hostaddr=) where that matters. */
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/mem.h"

#include "pg.h"

#define CONNECT_TIMEOUT_MS 10000
#define COPY_BURST         2000       /* copy messages per wakeup before yielding */

static void on_sock(evutil_socket_t fd, short what, void *arg);
static void on_again(evutil_socket_t fd, short what, void *arg);

const char *pgc_error(struct pgc *c, char *buf, size_t n)
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

static void on_timeout(evutil_socket_t fd, short what, void *arg);

void pgc_init(struct pgc *c, struct event_base *base, const char *inst, const char *what)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
    c->inst = inst;
    c->what = what;
    c->ev_fd = -1;
    c->timeout = evtimer_new(base, on_timeout, c);
    c->again = event_new(base, -1, 0, on_again, c);
}

static void drop_queue(struct pgc *c)
{
    struct pgc_query *q = c->qhead;

    while (q) {
        struct pgc_query *next = q->next;
        free(q->sql);
        free(q);
        q = next;
    }
    c->qhead = c->qtail = NULL;
    if (c->cur) {
        free(c->cur->sql);
        free(c->cur);
        c->cur = NULL;
    }
    if (c->first) {
        PQclear(c->first);
        c->first = NULL;
    }
}

void pgc_close(struct pgc *c)
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
    drop_queue(c);
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->state = PGC_DOWN;
    c->read_paused = false;
    c->want_write = false;
}

void pgc_destroy(struct pgc *c)
{
    if (!c->base)
        return;
    pgc_close(c);
    if (c->timeout)
        event_free(c->timeout);
    if (c->again)
        event_free(c->again);
    c->timeout = c->again = NULL;
}

static void watch(struct pgc *c)
{
    short what = 0;
    int fd;

    if (!c->conn)
        return;
    fd = PQsocket(c->conn);
    if (c->state == PGC_CONNECTING)
        what = c->ev_what; /* set by the connect poll */
    else {
        if (!(c->state == PGC_COPY && c->read_paused))
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
static void down(struct pgc *c, const char *what)
{
    char msg[300], why[400];

    pgc_error(c, msg, sizeof(msg));
    snprintf(why, sizeof(why), "%s%s%s", what, msg[0] ? ": " : "", msg);
    pgc_close(c);
    if (c->on_down)
        c->on_down(c, why, c->arg);
}

static bool flush_out(struct pgc *c)
{
    int r = PQflush(c->conn);

    if (r < 0)
        return false;
    c->want_write = r == 1;
    watch(c);
    return true;
}

static void pump(struct pgc *c)
{
    if (c->state != PGC_READY || c->cur || !c->qhead)
        return;
    c->cur = c->qhead;
    c->qhead = c->cur->next;
    if (!c->qhead)
        c->qtail = NULL;
    if (!PQsendQuery(c->conn, c->cur->sql) || !flush_out(c))
        down(c, "cannot send a query");
}

void pgc_query(struct pgc *c, const char *sql, pgc_result_fn cb, void *arg)
{
    struct pgc_query *q = sl_calloc(1, sizeof(*q));

    q->sql = sl_strdup(sql);
    q->cb = cb;
    q->arg = arg;
    if (c->qtail)
        c->qtail->next = q;
    else
        c->qhead = q;
    c->qtail = q;
    pump(c);
}

void pgc_connect(struct pgc *c, const char *dsn, const char *const *kw, const char *const *val)
{
    const char *k[16], *v[16];
    size_t n = 0;
    struct timeval tv = { CONNECT_TIMEOUT_MS / 1000, 0 };

    pgc_close(c);
    k[n] = "dbname";
    v[n++] = dsn;
    for (size_t i = 0; kw && kw[i] && n < 15; i++) {
        k[n] = kw[i];
        v[n++] = val[i];
    }
    k[n] = v[n] = NULL;
    c->conn = PQconnectStartParams(k, v, 1);
    c->state = PGC_CONNECTING;
    c->ev_what = EV_WRITE;
    evtimer_add(c->timeout, &tv);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        /* reported from the loop, as every other outcome */
        c->ev_what = 0;
        event_active(c->timeout, EV_TIMEOUT, 0);
        return;
    }
    watch(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pgc *c = arg;

    (void)fd, (void)what;
    if (c->state == PGC_CONNECTING)
        down(c, c->conn && PQstatus(c->conn) != CONNECTION_BAD ? "connect timed out"
                                                                : "cannot connect");
}

static void connect_poll(struct pgc *c)
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
        c->state = PGC_READY;
        if (c->ev) {
            event_free(c->ev);
            c->ev = NULL;
        }
        watch(c);
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
static void finished(struct pgc *c)
{
    struct pgc_query *q = c->cur;
    PGresult *res = c->first;
    unsigned g = c->gen;

    c->cur = NULL;
    c->first = NULL;
    if (q->cb)
        q->cb(c, res, res ? NULL : "no result", q->arg);
    free(q->sql);
    free(q);
    if (res)
        PQclear(res);
    if (g == c->gen)
        pump(c);
}

static void read_results(struct pgc *c)
{
    unsigned g = c->gen;

    while (g == c->gen && c->state == PGC_READY && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);

        if (!res) {
            if (c->cur)
                finished(c);
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_BOTH) {
            /* START_REPLICATION: the stream begins; no NULL result follows */
            struct pgc_query *q = c->cur;
            c->cur = NULL;
            c->state = PGC_COPY;
            if (q && q->cb)
                q->cb(c, res, NULL, q->arg);
            PQclear(res);
            if (q) {
                free(q->sql);
                free(q);
            }
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
static void read_copy(struct pgc *c)
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
    struct pgc *c = arg;

    (void)fd, (void)what;
    if (c->state == PGC_COPY && c->conn && !c->read_paused)
        read_copy(c);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct pgc *c = arg;
    unsigned g = c->gen;

    (void)fd;
    if (c->state == PGC_CONNECTING) {
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
    if (c->state == PGC_COPY)
        read_copy(c);
    else
        read_results(c);
    if (g == c->gen && c->conn && PQstatus(c->conn) == CONNECTION_BAD)
        down(c, "connection lost");
}

bool pgc_put_copy(struct pgc *c, const char *buf, size_t len)
{
    if (c->state != PGC_COPY || !c->conn)
        return false;
    if (PQputCopyData(c->conn, buf, (int)len) != 1)
        return false;
    return flush_out(c);
}

void pgc_pause_read(struct pgc *c, bool paused)
{
    if (c->read_paused == paused)
        return;
    c->read_paused = paused;
    if (!c->conn)
        return;
    watch(c);
    if (!paused && c->state == PGC_COPY)
        event_active(c->again, EV_TIMEOUT, 0); /* what libpq already holds */
}
