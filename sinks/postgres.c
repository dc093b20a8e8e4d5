/* Postgres sink: each record is one row, INSERT INTO <table> (record)
 * VALUES ($1::jsonb), on a non-blocking libpq connection driven by the
 * loop (PQconnectStart/PQconnectPoll, then PQsendQueryParams and
 * PQconsumeInput/PQgetResult when the socket is readable).
 *
 * On every new connection the table is created if missing. One query is
 * in flight at a time; writes wait in a FIFO behind it. A lost or refused
 * connection fails what is queued (retriably) and reconnects with backoff;
 * while down, writes fail at once.
 *
 * Limitation: libpq resolves host names inside PQconnectPoll, blocking
 * the loop for that lookup; use an address (hostaddr=) where that matters. */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "sluice/backoff.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define RECONNECT_BASE_MS  100
#define RECONNECT_CAP_MS   5000
#define CONNECT_TIMEOUT_MS 10000
#define TEXTOID            25

enum pstate { P_DOWN, P_CONNECTING, P_SETUP, P_READY };

struct pwrite {
    const char      *json;     /* borrowed until done */
    size_t           len;
    sl_sink_done_fn  done;
    void            *arg;
    struct pwrite   *next;
};

struct pctx {
    struct sl_sink *s;
    char           *schema;       /* NULL: search_path */
    char           *table;
    char           *where;        /* host:port/dbname, for messages (no secrets) */
    PGconn         *conn;
    enum pstate     state;
    char           *create_sql;   /* built per connection (identifier quoting) */
    char           *insert_sql;
    struct event   *ev;           /* on PQsocket */
    int             ev_fd;
    short           ev_what;
    struct event   *retry;
    struct event   *conn_timer;
    struct event   *kick;         /* pump from the loop, not from inside write */
    unsigned        attempt;
    struct pwrite  *qhead, *qtail;
    struct pwrite  *inflight;
    bool            got_result;   /* first result of the running query seen */
    struct sl_err   result;       /* its outcome (code 0: ok) */
    bool            recreate;     /* table vanished: create it again */
    char            why[SL_ERR_MSG_MAX]; /* why we are down */
    int             busy;
    bool            closed;
};

static void disconnect(struct pctx *c)
{
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    free(c->create_sql);
    free(c->insert_sql);
    c->create_sql = c->insert_sql = NULL;
    c->got_result = false;
}

static void pctx_free(struct pctx *c)
{
    disconnect(c);
    if (c->retry)
        event_free(c->retry);
    if (c->conn_timer)
        event_free(c->conn_timer);
    if (c->kick)
        event_free(c->kick);
    free(c->schema);
    free(c->table);
    free(c->where);
    free(c);
}

static void release(struct pctx *c)
{
    if (--c->busy == 0 && c->closed)
        pctx_free(c);
}

static void on_sock(evutil_socket_t fd, short what, void *arg);

static void watch(struct pctx *c, short what)
{
    int fd = PQsocket(c->conn);

    if (c->ev && (c->ev_fd != fd || c->ev_what != what)) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (!c->ev) {
        c->ev = event_new(c->s->base, fd, what | EV_PERSIST, on_sock, c);
        c->ev_fd = fd;
        c->ev_what = what;
        event_add(c->ev, NULL);
    }
}

/* Fail the running and the queued writes. Caller holds busy. */
static void fail_all(struct pctx *c, int code, bool retriable, const char *why)
{
    struct sl_err err;

    sl_err_set(&err, code, retriable, "cannot insert into %s at %s: %s", c->table, c->where,
               why);
    if (c->inflight) {
        struct pwrite *w = c->inflight;

        c->inflight = NULL;
        sl__sink_done(c->s, w->done, w->arg, code, &err);
        free(w);
    }
    while (c->qhead && !c->closed) {
        struct pwrite *w = c->qhead;

        c->qhead = w->next;
        if (!c->qhead)
            c->qtail = NULL;
        sl__sink_done(c->s, w->done, w->arg, code, &err);
        free(w);
    }
}

static void schedule_retry(struct pctx *c)
{
    uint64_t delay = sl_backoff_ms(c->attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
    struct timeval tv = sl__tv_ms(delay);

    c->attempt++;
    c->state = P_DOWN;
    evtimer_del(c->conn_timer);
    evtimer_add(c->retry, &tv);
    SL_DEBUG(SL_DBG_SINK, c->s->inst, "reconnecting to %s in %llu ms", c->where,
             (unsigned long long)delay);
}

/* The connection failed or broke: log, drop it, fail what waits, retry
 * later. Caller holds busy. */
static void lost(struct pctx *c, const char *what)
{
    char msg[256];

    sl__sink_first_line(msg, sizeof(msg), c->conn ? PQerrorMessage(c->conn) : "");
    snprintf(c->why, sizeof(c->why), "%s%s%s", what, msg[0] ? ": " : "", msg);
    if (c->attempt == 0)
        SL_WARN(c->s->inst, "postgres at %s: %s", c->where, c->why);
    else
        SL_DEBUG(SL_DBG_SINK, c->s->inst, "postgres at %s: %s", c->where, c->why);
    disconnect(c);
    schedule_retry(c);
    fail_all(c, SL_ECONN, true, c->why);
}

static bool flush_out(struct pctx *c)
{
    int r = PQflush(c->conn);

    if (r < 0)
        return false;
    watch(c, r == 1 ? EV_READ | EV_WRITE : EV_READ);
    return true;
}

static void send_create(struct pctx *c)
{
    c->state = P_SETUP;
    c->got_result = false;
    if (!PQsendQuery(c->conn, c->create_sql) || !flush_out(c))
        lost(c, "cannot create table");
}

/* Send the next queued write. Caller holds busy. */
static void pump(struct pctx *c)
{
    struct pwrite *w;
    const char *values[1];
    int lengths[1], formats[1] = { 1 };
    Oid types[1] = { TEXTOID };

    if (c->closed || c->state != P_READY || c->inflight || !c->qhead)
        return;
    w = c->qhead;
    c->qhead = w->next;
    if (!c->qhead)
        c->qtail = NULL;
    c->inflight = w;
    c->got_result = false;
    /* text in binary format: the bytes as they are, no terminator needed */
    values[0] = w->json;
    lengths[0] = (int)w->len;
    if (!PQsendQueryParams(c->conn, c->insert_sql, 1, types, values, lengths, formats, 0) ||
        !flush_out(c))
        lost(c, "cannot send insert");
}

static char *quote_ident(PGconn *conn, const char *name)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));
    char *copy;

    if (!q)
        return NULL;
    copy = sl_strdup(q);
    PQfreemem(q);
    return copy;
}

static bool build_sql(struct pctx *c)
{
    char *t = quote_ident(c->conn, c->table);
    char *sch = c->schema ? quote_ident(c->conn, c->schema) : NULL;
    char *full;

    if (!t || (c->schema && !sch)) {
        free(t);
        free(sch);
        return false;
    }
    full = sch ? sl_asprintf("%s.%s", sch, t) : sl_strdup(t);
    c->create_sql = sl_asprintf("CREATE TABLE IF NOT EXISTS %s (id bigserial primary key, "
                                "created_at timestamptz not null default now(), "
                                "record jsonb not null)",
                                full);
    c->insert_sql = sl_asprintf("INSERT INTO %s (record) VALUES ($1::jsonb)", full);
    free(full);
    free(t);
    free(sch);
    return true;
}

static void connected(struct pctx *c)
{
    evtimer_del(c->conn_timer);
    if (PQsetnonblocking(c->conn, 1) != 0 || !build_sql(c)) {
        lost(c, "cannot prepare the connection");
        return;
    }
    send_create(c);
}

/* A query's last result arrived. Caller holds busy. */
static void finished(struct pctx *c)
{
    struct sl_err res = c->result;

    c->got_result = false;
    if (c->state == P_SETUP) {
        if (res.code != 0) {
            snprintf(c->why, sizeof(c->why), "%s", res.msg);
            SL_ERROR(c->s->inst, "%s", res.msg);
            disconnect(c);
            schedule_retry(c);
            fail_all(c, SL_ECONN, true, c->why);
            return;
        }
        c->state = P_READY;
        c->recreate = false;
        if (c->attempt > 0)
            SL_INFO(c->s->inst, "connected to postgres at %s after %u retries", c->where,
                    c->attempt);
        else
            SL_DEBUG(SL_DBG_SINK, c->s->inst, "connected to postgres at %s", c->where);
        c->attempt = 0;
        c->why[0] = '\0';
        pump(c);
        return;
    }
    if (c->inflight) {
        struct pwrite *w = c->inflight;

        c->inflight = NULL;
        sl__sink_done(c->s, w->done, w->arg, res.code, res.code ? &res : NULL);
        free(w);
        if (c->closed)
            return;
    }
    if (c->recreate)
        send_create(c);
    else
        pump(c);
}

static void take_result(struct pctx *c, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    const char *what = c->state == P_SETUP ? "cannot create table" : "cannot insert into";
    char msg[256];
    const char *state;

    if (c->got_result)
        return; /* only the first result of a query counts */
    c->got_result = true;
    sl_err_clear(&c->result);
    if (st == PGRES_COMMAND_OK)
        return;
    sl__sink_first_line(msg, sizeof(msg), PQresultErrorMessage(res));
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    /* data exceptions (22xxx: bad JSON for jsonb) will not go away by
     * retrying; an undefined table (42P01) will, once it is created again */
    sl_err_set(&c->result, SL_EIO, !(state && strncmp(state, "22", 2) == 0),
               "%s %s at %s: %s%s%s", what, c->table, c->where, msg[0] ? msg : PQresStatus(st),
               state ? " (sqlstate " : "", state ? state : "");
    if (state)
        strncat(c->result.msg, ")", sizeof(c->result.msg) - strlen(c->result.msg) - 1);
    if (state && strcmp(state, "42P01") == 0)
        c->recreate = true;
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct pctx *c = arg;

    (void)fd;
    c->busy++;
    if (c->state == P_CONNECTING) {
        switch (PQconnectPoll(c->conn)) {
        case PGRES_POLLING_READING:
            watch(c, EV_READ);
            break;
        case PGRES_POLLING_WRITING:
            watch(c, EV_WRITE);
            break;
        case PGRES_POLLING_OK:
            connected(c);
            break;
        default:
            lost(c, "cannot connect");
            break;
        }
        release(c);
        return;
    }
    if ((what & EV_WRITE) && !flush_out(c)) {
        lost(c, "connection lost");
        release(c);
        return;
    }
    if (what & EV_READ) {
        if (!PQconsumeInput(c->conn)) {
            lost(c, "connection lost");
            release(c);
            return;
        }
        while (!c->closed && c->conn && !PQisBusy(c->conn)) {
            PGresult *res = PQgetResult(c->conn);

            if (!res) {
                if (c->got_result)
                    finished(c);
                break;
            }
            take_result(c, res);
            PQclear(res);
        }
        if (!c->closed && c->conn && PQstatus(c->conn) == CONNECTION_BAD)
            lost(c, "connection lost");
    }
    release(c);
}

static void on_notice(void *arg, const char *message)
{
    struct pctx *c = arg;
    char msg[256];

    sl__sink_first_line(msg, sizeof(msg), message);
    SL_DEBUG(SL_DBG_POSTGRES, c->s->inst, "postgres: %s", msg);
}

static void start_connect(struct pctx *c)
{
    c->conn = PQconnectStart(c->s->conf->dsn);
    if (!c->conn) {
        snprintf(c->why, sizeof(c->why), "cannot connect: out of memory");
        schedule_retry(c);
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        lost(c, "cannot connect");
        return;
    }
    c->state = P_CONNECTING;
    PQsetNoticeProcessor(c->conn, on_notice, c);
    watch(c, EV_WRITE);
    {
        struct timeval tv = sl__tv_ms(CONNECT_TIMEOUT_MS);
        evtimer_add(c->conn_timer, &tv);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct pctx *c = arg;

    (void)fd;
    (void)what;
    c->busy++;
    start_connect(c);
    release(c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct pctx *c = arg;

    (void)fd;
    (void)what;
    c->busy++;
    pump(c);
    release(c);
}

static void on_conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pctx *c = arg;

    (void)fd;
    (void)what;
    if (c->state != P_CONNECTING)
        return;
    c->busy++;
    lost(c, "connect timed out");
    release(c);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static char *describe(const char *dsn)
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

static int postgres_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_sink_conf *conf = s->conf;
    const char *table = conf->table && conf->table[0] ? conf->table : "sluice_dlq";
    const char *dot;
    char *perr = NULL;
    PQconninfoOption *opts;
    struct pctx *c;

    if (!conf->dsn || !conf->dsn[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: postgres sink needs a dsn",
                          s->inst);
    opts = PQconninfoParse(conf->dsn, &perr);
    if (!opts) {
        char msg[256], shown[256];
        int rc;

        sl__sink_first_line(msg, sizeof(msg), perr ? perr : "out of memory");
        sl_log_redact(msg, shown, sizeof(shown));
        rc = sl_err_set(err, SL_ECONFIG, false, "bad postgres dsn for %s: %s", s->inst, shown);
        PQfreemem(perr);
        return rc;
    }
    PQconninfoFree(opts);
    dot = strchr(table, '.');
    if (dot && (dot == table || !dot[1]))
        return sl_err_set(err, SL_ECONFIG, false, "bad table name '%s' for %s", table, s->inst);
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    c->schema = dot ? sl_strndup(table, (size_t)(dot - table)) : NULL;
    c->table = sl_strdup(dot ? dot + 1 : table);
    c->where = describe(conf->dsn);
    c->retry = evtimer_new(s->base, on_retry, c);
    c->conn_timer = evtimer_new(s->base, on_conn_timeout, c);
    c->kick = event_new(s->base, -1, 0, on_kick, c);
    if (!c->retry || !c->conn_timer || !c->kick) {
        pctx_free(c);
        return sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create timers", s->inst);
    }
    snprintf(c->why, sizeof(c->why), "not connected yet");
    s->ctx = c;
    SL_INFO(s->inst, "inserting records into %s%s%s at %s", c->schema ? c->schema : "",
            c->schema ? "." : "", c->table, c->where);
    /* nothing can call back into the caller yet: no writes exist */
    c->busy++;
    start_connect(c);
    c->busy--;
    return 0;
}

static void postgres_write(struct sl_sink *s, const char *json, size_t len,
                           sl_sink_done_fn done, void *arg)
{
    struct pctx *c = s->ctx;
    struct pwrite *w;
    struct sl_err err;

    if (c->state == P_DOWN) {
        sl_err_set(&err, SL_ECONN, true, "cannot insert into %s at %s: not connected (%s)",
                   c->table, c->where, c->why);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    if (len > 0x7fffffff) {
        sl_err_set(&err, SL_ETOOBIG, false, "cannot insert into %s: record of %zu bytes",
                   c->table, len);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->json = json;
    w->len = len;
    w->done = done;
    w->arg = arg;
    if (c->qtail)
        c->qtail->next = w;
    else
        c->qhead = w;
    c->qtail = w;
    if (c->state == P_READY && !c->inflight)
        event_active(c->kick, EV_TIMEOUT, 0);
}

static void postgres_close(struct sl_sink *s)
{
    struct pctx *c = s->ctx;

    if (!c)
        return;
    c->busy++;
    c->closed = true;
    evtimer_del(c->retry);
    evtimer_del(c->conn_timer);
    {
        struct sl_err err;

        sl_err_set(&err, SL_ESTOPPED, false,
                   "insert into %s at %s not confirmed: sink stopped", c->table, c->where);
        if (c->inflight) {
            struct pwrite *w = c->inflight;

            c->inflight = NULL;
            sl__sink_done(s, w->done, w->arg, SL_ESTOPPED, &err);
            free(w);
        }
        while (c->qhead) {
            struct pwrite *w = c->qhead;

            c->qhead = w->next;
            sl__sink_done(s, w->done, w->arg, SL_ESTOPPED, &err);
            free(w);
        }
        c->qtail = NULL;
    }
    disconnect(c);
    s->ctx = NULL;
    release(c);
}

const struct sl_sink_ops sl__sink_postgres_ops = {
    .name = "postgres",
    .open = postgres_open,
    .write = postgres_write,
    .close = postgres_close,
};
