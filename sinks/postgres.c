/* Postgres sink: each record is one row, INSERT INTO <table> (record)
 * VALUES ($1::jsonb), on the shared non-blocking Postgres connection
 * (sluice/pgconn.h: the host name resolves on the loop, the handshake and
 * the queries never block it).
 *
 * On every new connection the table is created if missing. One query is
 * in flight at a time; writes wait in a FIFO behind it. A lost or refused
 * connection fails what is queued (retriably) and reconnects with backoff;
 * while down, writes fail at once. */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pgconn.h"

#include "internal.h"

#define RECONNECT_BASE_MS  100
#define RECONNECT_CAP_MS   5000
#define TEXTOID            25

struct pwrite {
    const char      *json;     /* borrowed until done */
    size_t           len;
    sl_sink_done_fn  done;
    void            *arg;
    struct pwrite   *next;
};

struct pctx {
    struct sl_sink  *s;
    struct event_base *base;
    char            *schema;       /* NULL: search_path */
    char            *table;
    char            *where;        /* host:port/dbname, for messages (no secrets) */
    struct sl_pgconn pg;
    bool             ready;        /* connected and the table created */
    char            *create_sql;   /* built per connection (identifier quoting) */
    char            *insert_sql;
    struct event    *kick;         /* pump from the loop, not from inside write */
    struct pwrite   *qhead, *qtail;
    struct pwrite   *inflight;
    bool             creating;     /* the CREATE TABLE is in flight */
    bool             recreate;     /* table vanished: create it again */
    char             why[SL_ERR_MSG_MAX]; /* why we are down */
    int              busy;
    bool             closed;
};

static void forget_sql(struct pctx *c)
{
    free(c->create_sql);
    free(c->insert_sql);
    c->create_sql = c->insert_sql = NULL;
}

static void pctx_free(struct pctx *c)
{
    sl_pgconn_destroy(&c->pg);
    forget_sql(c);
    if (c->kick)
        event_free(c->kick);
    free(c->schema);
    free(c->table);
    free(c->where);
    free(c);
}

static void free_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pctx_free(arg);
}

/* Leaving one of our handlers. Those of the connection run inside its own
 * code, which reads c->pg after they return: a sink closed there is freed
 * from the loop. */
static void release(struct pctx *c)
{
    if (--c->busy == 0 && c->closed &&
        event_base_once(c->base, -1, EV_TIMEOUT, free_later, c, NULL) != 0)
        SL_ERROR(NULL, "cannot schedule the release of a closed postgres sink; leaking it");
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

/* Down (lost, refused, or the table cannot be made): log, fail what waits,
 * reconnect later. Caller holds busy. */
static void lost(struct pctx *c, const char *why)
{
    snprintf(c->why, sizeof(c->why), "%s", why);
    if (c->pg.attempt == 0)
        SL_WARN(c->s->inst, "postgres at %s: %s", c->where, c->why);
    else
        SL_DEBUG(SL_DBG_SINK, c->s->inst, "postgres at %s: %s", c->where, c->why);
    c->ready = false;
    c->creating = false;
    sl_pgconn_close(&c->pg);
    forget_sql(c);
    sl_pgconn_retry(&c->pg);
    fail_all(c, SL_ECONN, true, c->why);
}

static void on_down(struct sl_pgconn *pg, const char *why, void *arg)
{
    struct pctx *c = arg;

    (void)pg;
    c->busy++;
    lost(c, why);
    release(c);
}

/* The outcome of a query's first result: 0, or an error in `err`. */
static int outcome(struct pctx *c, PGresult *res, const char *why, const char *what,
                   struct sl_err *err)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    char msg[256];
    const char *state;

    sl_err_clear(err);
    if (res && st == PGRES_COMMAND_OK)
        return 0;
    if (!res)
        return sl_err_set(err, SL_EIO, true, "%s %s at %s: %s", what, c->table, c->where,
                          why ? why : "no result");
    sl__sink_first_line(msg, sizeof(msg), PQresultErrorMessage(res));
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    /* data exceptions (22xxx: bad JSON for jsonb) will not go away by
     * retrying; an undefined table (42P01) will, once it is created again */
    sl_err_set(err, SL_EIO, !(state && strncmp(state, "22", 2) == 0), "%s %s at %s: %s%s%s",
               what, c->table, c->where, msg[0] ? msg : PQresStatus(st),
               state ? " (sqlstate " : "", state ? state : "");
    if (state)
        strncat(err->msg, ")", sizeof(err->msg) - strlen(err->msg) - 1);
    if (state && strcmp(state, "42P01") == 0)
        c->recreate = true;
    return err->code;
}

static void pump(struct pctx *c);

static void on_created(struct sl_pgconn *pg, PGresult *res, const char *why, void *arg)
{
    struct pctx *c = arg;
    struct sl_err err;

    (void)pg;
    c->busy++;
    c->creating = false;
    if (outcome(c, res, why, "cannot create table", &err) != 0) {
        SL_ERROR(c->s->inst, "%s", err.msg);
        lost(c, err.msg);
        release(c);
        return;
    }
    c->recreate = false;
    if (!c->ready) {
        c->ready = true;
        SL_DEBUG(SL_DBG_SINK, c->s->inst, "connected to postgres at %s", c->where);
        c->why[0] = '\0';
    }
    pump(c);
    release(c);
}

static void send_create(struct pctx *c)
{
    c->creating = true;
    sl_pgconn_query(&c->pg, c->create_sql, on_created, c);
}

static void on_inserted(struct sl_pgconn *pg, PGresult *res, const char *why, void *arg)
{
    struct pctx *c = arg;
    struct pwrite *w = c->inflight;
    struct sl_err err;
    int rc;

    (void)pg;
    c->busy++;
    rc = outcome(c, res, why, "cannot insert into", &err);
    c->inflight = NULL;
    if (w) {
        sl__sink_done(c->s, w->done, w->arg, rc, rc ? &err : NULL);
        free(w);
    }
    if (!c->closed) {
        if (c->recreate)
            send_create(c);
        else
            pump(c);
    }
    release(c);
}

/* Send the next queued write. Caller holds busy. */
static void pump(struct pctx *c)
{
    struct pwrite *w;
    const char *values[1];
    int lengths[1], formats[1] = { 1 };
    Oid types[1] = { TEXTOID };

    if (c->closed || !c->ready || c->creating || c->inflight || !c->qhead)
        return;
    w = c->qhead;
    c->qhead = w->next;
    if (!c->qhead)
        c->qtail = NULL;
    c->inflight = w;
    /* text in binary format: the bytes as they are, no terminator needed */
    values[0] = w->json;
    lengths[0] = (int)w->len;
    sl_pgconn_query_params(&c->pg, c->insert_sql, 1, types, values, lengths, formats,
                           on_inserted, c);
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
    char *t = quote_ident(c->pg.conn, c->table);
    char *sch = c->schema ? quote_ident(c->pg.conn, c->schema) : NULL;
    char *full;

    if (!t || (c->schema && !sch)) {
        free(t);
        free(sch);
        return false;
    }
    full = sch ? sl_asprintf("%s.%s", sch, t) : sl_strdup(t);
    forget_sql(c);
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

static void on_up(struct sl_pgconn *pg, void *arg)
{
    struct pctx *c = arg;

    (void)pg;
    c->busy++;
    if (!build_sql(c))
        lost(c, "cannot prepare the connection");
    else
        send_create(c);
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

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static int postgres_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_pg_sink_opts *conf = s->conf->opts;
    const char *table = conf->table && conf->table[0] ? conf->table : "sluice_dlq";
    const char *dot;
    char why[256];
    struct pctx *c;

    if (!conf->dsn || !conf->dsn[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: postgres sink needs a dsn",
                          s->inst);
    if (sl_pgconn_dsn_check(conf->dsn, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "bad postgres dsn for %s: %s", s->inst, why);
    dot = strchr(table, '.');
    if (dot && (dot == table || !dot[1]))
        return sl_err_set(err, SL_ECONFIG, false, "bad table name '%s' for %s", table, s->inst);
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    c->schema = dot ? sl_strndup(table, (size_t)(dot - table)) : NULL;
    c->table = sl_strdup(dot ? dot + 1 : table);
    c->base = s->base;
    c->where = sl_pgconn_where(conf->dsn);
    sl_pgconn_init(&c->pg, s->base, s->inst, "sink");
    c->pg.retry_base_ms = RECONNECT_BASE_MS;
    c->pg.retry_cap_ms = RECONNECT_CAP_MS;
    c->pg.on_up = on_up;
    c->pg.on_down = on_down;
    c->pg.arg = c;
    c->kick = event_new(s->base, -1, 0, on_kick, c);
    if (!c->kick) {
        pctx_free(c);
        return sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create timers", s->inst);
    }
    snprintf(c->why, sizeof(c->why), "not connected yet");
    s->ctx = c;
    SL_INFO(s->inst, "inserting records into %s%s%s at %s", c->schema ? c->schema : "",
            c->schema ? "." : "", c->table, c->where);
    /* on_up or on_down follows from the loop */
    sl_pgconn_connect(&c->pg, conf->dsn, NULL, NULL);
    return 0;
}

static void postgres_write(struct sl_sink *s, const char *json, size_t len,
                           sl_sink_done_fn done, void *arg)
{
    struct pctx *c = s->ctx;
    struct pwrite *w;
    struct sl_err err;

    if (c->pg.state == SL_PGCONN_DOWN) {
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
    if (c->ready && !c->inflight)
        event_active(c->kick, EV_TIMEOUT, 0);
}

static void postgres_close(struct sl_sink *s)
{
    struct pctx *c = s->ctx;

    if (!c)
        return;
    c->busy++;
    c->closed = true;
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
    sl_pgconn_close(&c->pg); /* no callback runs: nothing of ours is left in it */
    s->ctx = NULL;
    if (--c->busy == 0)
        pctx_free(c); /* not inside a handler of ours: free now */
}

static const struct sl_sink_ops postgres_ops = {
    .name = "postgres",
    .open = postgres_open,
    .write = postgres_write,
    .close = postgres_close,
};

/* ------------------------------------------------------------------ */
/* Configuration: the keys of a `type: postgres` sink                        */

#define F(field) offsetof(struct sl_pg_sink_opts, field)
static const struct sl_conf_key postgres_keys[] = {
    { .name = "dsn", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(dsn),
      .desc = "libpq connection string." },
    { .name = "table", .type = SL_CK_STRING, .def = "sluice_dlq", .off = F(table),
      .desc = "Table the records are inserted into (created if missing)." },
};
#undef F

const struct sl_sink_type sl_postgres_sink = {
    .conf = {
        .name = "postgres",
        .keys = postgres_keys,
        .nkeys = sizeof(postgres_keys) / sizeof(postgres_keys[0]),
        .size = sizeof(struct sl_pg_sink_opts),
    },
    .ops = &postgres_ops,
};
