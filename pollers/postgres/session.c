/* The session: who streams the slot, and how.
 *
 * A management connection takes pg_try_advisory_lock(key of the slot
 * name); while another instance holds it this one asks again every
 * second, so it takes over within about a second of the holder's
 * connection dropping (the server releases a session lock with its
 * session). The holder makes sure the publication and the slot exist,
 * then opens the replication connection (replication=database) and runs
 * START_REPLICATION from the position it has flushed (the slot's own
 * confirmed_flush_lsn the first time). Losing the management connection
 * means losing the lock: the stream is closed at once, so two instances
 * never read one slot.
 *
 * The holder also reports slot lag (WAL held) every 10 s, writes a
 * heartbeat logical message on a schedule so an idle publication on a
 * busy database still lets the slot advance, and sends standby status
 * updates (flushed position) at least every status_interval_s, when the
 * position moved (checked every 200 ms: a restart then repeats little) and when the server asks. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/backoff.h"
#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"

#include "internal.h"

#define LOCK_POLL_MS     1000
#define LAG_EVERY_MS     10000
#define RETRY_BASE_MS    200
#define RETRY_CAP_MS     5000
#define PG_EPOCH_OFFSET_S 946684800LL   /* 2000-01-01 in Unix seconds */

static const char *const conn_options = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3";

static void setup(struct pg *p);
static void setup_failed(struct pg *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void repl_connect(struct pg *p);
static void mgmt_connect(struct pg *p);

/* Reconnect delay after `attempt` failures: full jitter up to
 * min(RETRY_CAP_MS, RETRY_BASE_MS * 2^attempt). */
static int64_t backoff(int attempt)
{
    return (int64_t)sl_backoff_ms((unsigned)attempt, RETRY_BASE_MS, RETRY_CAP_MS);
}

static void arm(struct event *ev, int64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    evtimer_add(ev, &tv);
}

static bool ok(PGresult *res, ExecStatusType want)
{
    return res && PQresultStatus(res) == want;
}

static const char *res_error(PGresult *res, const char *why, char *buf, size_t n)
{
    const char *m = res ? PQresultErrorMessage(res) : why;

    snprintf(buf, n, "%s", m && *m ? m : (why ? why : "unknown error"));
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* ------------------------------------------------------------------ */
/* Standby status                                                      */

static void put64(char *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        b[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get64(const char *b)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)b[i];
    return v;
}

void sl__pg_send_status(struct pg *p, bool reply)
{
    char msg[34];
    int64_t now_us = sl_wall_ms() * 1000 - PG_EPOCH_OFFSET_S * 1000000LL;
    uint64_t written = p->received_lsn > p->flushed ? p->received_lsn : p->flushed;

    if (p->repl.state != SL_PGCONN_COPY)
        return;
    msg[0] = 'r';
    put64(msg + 1, written);
    put64(msg + 9, p->flushed);
    put64(msg + 17, p->flushed);
    put64(msg + 25, (uint64_t)now_us);
    msg[33] = reply ? 1 : 0;
    if (!sl_pgconn_put_copy(&p->repl, msg, sizeof(msg))) {
        sl__pg_repl_restart(p, "cannot send a status update", false);
        return;
    }
    p->sent_flush = p->flushed;
    p->last_status_ms = sl_wall_ms();
}

static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg *p = arg;

    (void)fd, (void)what;
    if (p->repl.state != SL_PGCONN_COPY)
        return;
    if (p->flushed != p->sent_flush ||
        sl_wall_ms() - p->last_status_ms >= p->o->status_interval_ms)
        sl__pg_send_status(p, false);
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */

static bool on_copy(struct sl_pgconn *c, const char *buf, size_t len, void *arg)
{
    struct pg *p = arg;

    (void)c;
    if (len >= 25 && buf[0] == 'w') {
        uint64_t start = get64(buf + 1);
        struct pgo_msg m;
        struct sl_err err;
        int rc;

        sl_err_clear(&err);
        rc = sl__pgo_decode(p->dec, (const uint8_t *)buf + 25, len - 25, &m, &err);
        if (rc == SL_EUNSUPPORTED && !p->text_mode) {
            SL_WARN(p->s->inst, "%s; reading the slot again in text mode", err.msg);
            p->text_mode = true;
            sl__pg_repl_restart(p, "switching to text mode", true);
            return false;
        }
        if (rc != 0) {
            char l[32];
            sl__pg_lsn_text(start, l, sizeof(l));
            SL_ERROR(p->s->inst, "cannot decode the change at %s: %s; the stream stops there "
                     "(nothing past it is flushed) and is read again", l, err.msg);
            sl__pg_repl_restart(p, "undecodable message", false);
            return false;
        }
        if (start > p->received_lsn)
            p->received_lsn = start;
        switch (m.kind) {
        case PGO_BEGIN:
            sl__pg_begin(p, &m);
            break;
        case PGO_COMMIT:
            sl__pg_commit(p, &m);
            break;
        case PGO_INSERT:
        case PGO_UPDATE:
        case PGO_DELETE:
        case PGO_TRUNCATE:
            sl__pg_change(p, &m);
            break;
        case PGO_MESSAGE:
            if (!m.transactional)
                sl__pg_idle_advance(p, m.message_lsn);
            break;
        case PGO_RELATION:
        case PGO_TYPE:
        case PGO_ORIGIN:
            break;
        default:
            /* streaming and two-phase are not requested, so not expected */
            SL_WARN(p->s->inst, "unexpected %s message ignored", sl__pgo_kind_name(m.kind));
            break;
        }
        sl__pgo_msg_destroy(&m);
        return !p->paused && !p->stopping && !p->throttled;
    }
    if (len >= 18 && buf[0] == 'k') {
        uint64_t end = get64(buf + 1);
        if (end > p->received_lsn && !p->cur && !p->skipping)
            p->received_lsn = end;
        sl__pg_idle_advance(p, end);
        if (buf[17])
            sl__pg_send_status(p, false);
        return !p->paused && !p->stopping && !p->throttled;
    }
    SL_WARN(p->s->inst, "unknown replication message '%c' (%zu bytes) ignored", buf[0], len);
    return true;
}

static void on_started(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300], l[32];

    (void)c;
    if (!ok(res, PGRES_COPY_BOTH)) {
        sl__pg_repl_restart(p, res_error(res, why, msg, sizeof(msg)), false);
        return;
    }
    p->phase = PH_STREAMING;
    p->rattempt = 0;
    sl__pg_lsn_text(p->flushed, l, sizeof(l));
    SL_INFO(p->s->inst, "streaming slot %s (publication %s) from %s on %s%s", p->slot,
            p->publication, p->flushed ? l : "its confirmed position", p->where,
            p->text_mode ? " in text mode" : "");
    sl__pg_reading(p);
    sl__pg_send_status(p, false);
}

/* Under REPLICA IDENTITY FULL the server marks every column as identity,
 * but a DynamoDB record's Keys is the table's key (and the lanes hash it):
 * the published FULL tables' primary keys, one row per column in key order. */
#define FULL_KEYS_SQL                                                                          \
    "SELECT c.oid, a.attname FROM pg_publication_tables pt "                                   \
    "JOIN pg_namespace n ON n.nspname = pt.schemaname "                                        \
    "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "                  \
    "JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "                                \
    "JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) ON true "            \
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "                       \
    "WHERE pt.pubname = %s AND c.relreplident = 'f' ORDER BY c.oid, k.ord"

static void start_replication(struct pg *p);

static void on_full_keys(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!p->keys_pending)
        return;          /* a later start asked again; its answer starts the stream */
    p->keys_pending = false;
    if (!p->holder || p->stopping || p->repl.state != SL_PGCONN_READY)
        return;          /* lost meanwhile: a reconnect starts over */
    if (!ok(res, PGRES_TUPLES_OK)) {
        /* Keys then stay the server's identity columns (the whole row) */
        SL_WARN(p->s->inst, "cannot read the primary keys of REPLICA IDENTITY FULL tables: %s",
                res_error(res, why, msg, sizeof(msg)));
    } else {
        int n = PQntuples(res);
        const char **names = sl_calloc((size_t)n + 1, sizeof(*names));

        for (int r = 0, from = 0; r < n; r++) {
            names[r - from] = PQgetvalue(res, r, 1);
            if (r + 1 == n || strcmp(PQgetvalue(res, r + 1, 0), PQgetvalue(res, r, 0)) != 0) {
                sl__pgo_set_key_columns(p->dec, (uint32_t)strtoul(PQgetvalue(res, r, 0), NULL, 10),
                                        names, (size_t)(r + 1 - from));
                from = r + 1;
            }
        }
        free(names);
    }
    start_replication(p);
}

void sl__pg_start_streaming(struct pg *p)
{
    char *lit = sl__pg_quote_literal(p->publication), *sql;

    if (p->dec)
        sl__pgo_free(p->dec);
    p->dec = sl__pgo_new();
    sl__pgo_set_images(p->dec, p->o->image_format == SL_IMAGES_JSON ? PGO_IMAGES_JSON
                                                                    : PGO_IMAGES_AV);
    sql = sl_asprintf(FULL_KEYS_SQL, lit);
    p->keys_pending = true;
    sl_pgconn_query(&p->mgmt, sql, on_full_keys, p);
    free(sql);
    free(lit);
}

static void start_replication(struct pg *p)
{
    char l[32], *pub_ident = sl__pg_quote_ident(p->publication);
    char *pubs = sl__pg_quote_literal(pub_ident);
    char *sql, *slot = sl__pg_quote_ident(p->slot);
    bool modern = p->server_version >= 140000;

    sl__pg_lsn_text(p->flushed, l, sizeof(l));
    sql = sl_asprintf("START_REPLICATION SLOT %s LOGICAL %s (proto_version '1', "
                      "publication_names %s%s%s)",
                      slot, l, pubs, modern ? ", messages 'true'" : "",
                      modern && !p->text_mode ? ", binary 'true'" : "");
    SL_DEBUG(SL_DBG_POSTGRES, p->s->inst, "%s", sql);
    sl_pgconn_query(&p->repl, sql, on_started, p);
    free(sql);
    free(slot);
    free(pubs);
    free(pub_ident);
}

static void on_slot_exported(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK) || PQntuples(res) != 1 || PQnfields(res) < 3) {
        sl__pg_repl_restart(p, res_error(res, why, msg, sizeof(msg)), false);
        return;
    }
    if (sl__pg_lsn_parse(PQgetvalue(res, 0, 1), &p->consistent_lsn) != 0 ||
        PQgetisnull(res, 0, 2)) {
        sl__pg_repl_restart(p, "CREATE_REPLICATION_SLOT gave no snapshot", false);
        return;
    }
    free(p->snapshot_name);
    p->snapshot_name = sl_strdup(PQgetvalue(res, 0, 2));
    p->created_slot = true;
    p->create_export = false;
    p->flushed = p->consistent_lsn;
    SL_INFO(p->s->inst, "created slot %s at %s with snapshot %s; reading the existing rows",
            p->slot, PQgetvalue(res, 0, 1), p->snapshot_name);
    p->phase = PH_SNAPSHOT;
    sl__pg_snapshot_begin(p);
}

static void repl_up(struct sl_pgconn *c, void *arg)
{
    struct pg *p = arg;

    if (p->create_export) {
        char *slot = sl__pg_quote_ident(p->slot);
        char *sql = p->server_version >= 150000
                        ? sl_asprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput "
                                      "(SNAPSHOT 'export')", slot)
                        : sl_asprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput "
                                      "EXPORT_SNAPSHOT", slot);
        sl_pgconn_query(c, sql, on_slot_exported, p);
        free(sql);
        free(slot);
        return;
    }
    sl__pg_start_streaming(p);
}

static void repl_down(struct sl_pgconn *c, const char *why, void *arg)
{
    (void)c;
    sl__pg_repl_restart(arg, why, false);
}

static void on_repl_retry(evutil_socket_t fd, short what, void *arg)
{
    struct pg *p = arg;

    (void)fd, (void)what;
    if (p->stopping || !p->holder || p->mgmt.state != SL_PGCONN_READY)
        return; /* the lock (management connection) comes first */
    setup(p);
}

void sl__pg_repl_restart(struct pg *p, const char *why, bool quick)
{
    bool was = p->repl.state != SL_PGCONN_DOWN || p->phase >= PH_SNAPSHOT;

    sl_pgconn_close(&p->repl);
    sl_pgconn_close(&p->snap);
    sl__pg_snapshot_free(p);
    sl__pg_stream_lost(p);
    if (p->phase > PH_STANDBY)
        p->phase = PH_SETUP;
    if (p->stopping || !p->holder)
        return;
    if (was || p->rattempt == 0) {
        if (p->rattempt == 0 || !quick)
            SL_WARN(p->s->inst, "replication on %s: %s; %s", p->where, why,
                    quick ? "reconnecting" : "retrying");
    }
    arm(p->repl_retry, quick ? 50 : backoff(p->rattempt++));
}

static void repl_connect(struct pg *p)
{
    static const char *const kw[] = { "replication", "options", "application_name", NULL };
    const char *val[] = { "database", conn_options, "sluice", NULL };

    p->repl.on_up = repl_up;
    p->repl.on_down = repl_down;
    p->repl.on_copy = on_copy;
    p->repl.arg = p;
    sl_pgconn_connect(&p->repl, p->o->dsn, kw, val);
}

/* ------------------------------------------------------------------ */
/* Setup on the management connection                                  */

static void setup_failed(struct pg *p, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sl_pgconn_close(&p->repl);
    sl_pgconn_close(&p->snap);
    sl__pg_snapshot_free(p);
    sl__pg_stream_lost(p);
    p->phase = PH_SETUP;
    if (p->stopping)
        return;
    if (p->rattempt == 0)
        SL_WARN(p->s->inst, "%s; retrying", msg);
    else
        SL_DEBUG(SL_DBG_POSTGRES, p->s->inst, "%s; retrying", msg);
    arm(p->repl_retry, backoff(p->rattempt) + (p->rattempt > 3 ? 2000 : 0));
    p->rattempt++;
}

static void on_slot_created(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK) || PQntuples(res) != 1) {
        setup_failed(p, "cannot create slot %s: %s", p->slot,
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    p->created_slot = true;
    sl__pg_lsn_parse(PQgetvalue(res, 0, 0), &p->start_lsn);
    SL_INFO(p->s->inst, "created slot %s at %s", p->slot, PQgetvalue(res, 0, 0));
    /* a new slot starts at its creation point: TRIM_HORIZON and LATEST agree there */
    p->flushed = p->flushed > p->start_lsn ? p->flushed : p->start_lsn;
    repl_connect(p);
}

static void on_state_started(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_COMMAND_OK)) {
        setup_failed(p, "cannot record the snapshot state: %s",
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    p->create_export = true;
    repl_connect(p);
}

static void create_slot(struct pg *p)
{
    char *lit = sl__pg_quote_literal(p->slot), *sql;

    if (p->snapshot_wanted) {
        sql = sl_asprintf("INSERT INTO sluice_snapshot_state (slot_name, state) VALUES (%s, "
                          "'started') ON CONFLICT (slot_name) DO UPDATE SET state = 'started', "
                          "updated_at = now()", lit);
        sl_pgconn_query(&p->mgmt, sql, on_state_started, p);
    } else {
        sql = sl_asprintf("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, "
                          "'pgoutput')", lit);
        sl_pgconn_query(&p->mgmt, sql, on_slot_created, p);
    }
    free(sql);
    free(lit);
}

static void on_slot_dropped(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK)) {
        setup_failed(p, "cannot drop slot %s to redo its snapshot: %s", p->slot,
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    create_slot(p);
}

/* Row: plugin, confirmed_flush_lsn, same database, snapshot state. */
static void on_slot(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];
    const char *state;

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK)) {
        setup_failed(p, "cannot look up slot %s: %s", p->slot,
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    state = PQntuples(res) == 1 && !PQgetisnull(res, 0, 3) ? PQgetvalue(res, 0, 3) : NULL;
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        create_slot(p);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "pgoutput") != 0) {
        setup_failed(p, "slot %s uses the %s plugin, not pgoutput", p->slot,
                     PQgetvalue(res, 0, 0));
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        setup_failed(p, "slot %s belongs to another database", p->slot);
        return;
    }
    if (p->snapshot_wanted && state && strcmp(state, "started") == 0 &&
        !(p->snap_txn && p->snap_all_read)) {
        char *lit = sl__pg_quote_literal(p->slot);
        char *sql = sl_asprintf("SELECT pg_drop_replication_slot(%s)", lit);
        SL_WARN(p->s->inst, "the initial snapshot of slot %s never completed; dropping the slot "
                "and taking the snapshot again", p->slot);
        sl_pgconn_query(&p->mgmt, sql, on_slot_dropped, p);
        free(sql);
        free(lit);
        return;
    }
    {
        uint64_t confirmed = 0;
        if (!PQgetisnull(res, 0, 1))
            sl__pg_lsn_parse(PQgetvalue(res, 0, 1), &confirmed);
        if (!p->start_lsn)
            p->start_lsn = confirmed;
        if (confirmed > p->flushed)
            p->flushed = confirmed;
    }
    repl_connect(p);
}

static void check_slot(struct pg *p)
{
    char *lit = sl__pg_quote_literal(p->slot), *sql;

    if (p->snapshot_wanted)
        sql = sl_asprintf("SELECT s.plugin, s.confirmed_flush_lsn::text, "
                          "s.database = current_database(), st.state "
                          "FROM (SELECT %s AS name) n "
                          "LEFT JOIN pg_replication_slots s ON s.slot_name = n.name "
                          "LEFT JOIN sluice_snapshot_state st ON st.slot_name = n.name", lit);
    else
        sql = sl_asprintf("SELECT plugin, confirmed_flush_lsn::text, "
                          "database = current_database(), NULL FROM pg_replication_slots "
                          "WHERE slot_name = %s", lit);
    sl_pgconn_query(&p->mgmt, sql, on_slot, p);
    free(sql);
    free(lit);
}

static void on_state_table(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_COMMAND_OK)) {
        setup_failed(p, "cannot create table sluice_snapshot_state: %s",
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    check_slot(p);
}

static void after_publication(struct pg *p)
{
    if (p->snapshot_wanted)
        sl_pgconn_query(&p->mgmt,
                  "CREATE TABLE IF NOT EXISTS sluice_snapshot_state (slot_name text PRIMARY KEY, "
                  "state text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
                  on_state_table, p);
    else
        check_slot(p);
}

static void on_pub_created(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_COMMAND_OK)) {
        setup_failed(p, "cannot create publication %s: %s", p->publication,
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    SL_INFO(p->s->inst, "created publication %s", p->publication);
    after_publication(p);
}

static void on_pub(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    const struct sl_pg_opts *conf = p->o;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK)) {
        setup_failed(p, "cannot look up publication %s: %s", p->publication,
                     res_error(res, why, msg, sizeof(msg)));
        return;
    }
    if (PQntuples(res) > 0) {
        after_publication(p);
        return;
    }
    {
        char *pub = sl__pg_quote_ident(p->publication), *sql;
        if (conf->tables.n == 0) {
            sql = sl_asprintf("CREATE PUBLICATION %s FOR ALL TABLES", pub);
        } else {
            size_t cap = 64 + strlen(pub);
            char **q = sl_calloc(conf->tables.n, sizeof(char *));
            for (size_t i = 0; i < conf->tables.n; i++) {
                q[i] = sl__pg_quote_qualified(conf->tables.v[i]);
                cap += strlen(q[i]) + 2;
            }
            sql = sl_malloc(cap);
            snprintf(sql, cap, "CREATE PUBLICATION %s FOR TABLE ", pub);
            for (size_t i = 0; i < conf->tables.n; i++) {
                if (i)
                    strcat(sql, ", ");
                strcat(sql, q[i]);
                free(q[i]);
            }
            free(q);
        }
        sl_pgconn_query(&p->mgmt, sql, on_pub_created, p);
        free(sql);
        free(pub);
    }
}

static void setup(struct pg *p)
{
    char *lit = sl__pg_quote_literal(p->publication);
    char *sql = sl_asprintf("SELECT 1 FROM pg_publication WHERE pubname = %s", lit);

    p->phase = PH_SETUP;
    sl_pgconn_close(&p->repl);
    sl_pgconn_query(&p->mgmt, sql, on_pub, p);
    free(sql);
    free(lit);
}

/* ------------------------------------------------------------------ */
/* The lock                                                            */

static void on_lock(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK) || PQntuples(res) != 1) {
        SL_WARN(p->s->inst, "cannot take the slot lock on %s: %s", p->where,
                res_error(res, why, msg, sizeof(msg)));
        arm(p->lock_timer, LOCK_POLL_MS);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "logical") != 0) {
        SL_ERROR(p->s->inst, "%s has wal_level=%s; logical replication needs wal_level=logical "
                 "(set it in postgresql.conf and restart the server)", p->where,
                 PQgetvalue(res, 0, 1));
        if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
            sl_pgconn_query(&p->mgmt, "SELECT pg_advisory_unlock_all()", NULL, NULL);
        arm(p->lock_timer, 30000);
        return;
    }
    p->server_version = atoi(PQgetvalue(res, 0, 2));
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        if (!p->standing_by) {
            SL_INFO(p->s->inst, "another instance streams slot %s; standing by", p->slot);
            p->standing_by = true;
        }
        p->phase = PH_STANDBY;
        arm(p->lock_timer, LOCK_POLL_MS);
        return;
    }
    p->holder = true;
    p->standing_by = false;
    p->rattempt = 0;
    SL_INFO(p->s->inst, "holding the lock of slot %s on %s", p->slot, p->where);
    setup(p);
}

static void ask_lock(struct pg *p)
{
    char *sql = sl_asprintf("SELECT pg_try_advisory_lock(%" PRId64 "), "
                            "current_setting('wal_level'), current_setting('server_version_num')",
                            p->lock_key);

    sl_pgconn_query(&p->mgmt, sql, on_lock, p);
    free(sql);
}

static void on_lock_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg *p = arg;

    (void)fd, (void)what;
    if (!p->stopping && !p->holder && p->mgmt.state == SL_PGCONN_READY)
        ask_lock(p);
}

static void mgmt_up(struct sl_pgconn *c, void *arg)
{
    struct pg *p = arg;

    (void)c;
    ask_lock(p);
}

static void mgmt_down(struct sl_pgconn *c, const char *why, void *arg)
{
    struct pg *p = arg;

    (void)c;
    if (p->holder) {
        /* the server released the lock with the session: stop streaming now */
        SL_WARN(p->s->inst, "lost the connection holding the slot lock (%s); stopping the "
                "stream", why);
        p->holder = false;
        sl_pgconn_close(&p->repl);
        sl_pgconn_close(&p->snap);
        sl__pg_snapshot_free(p);
        sl__pg_stream_lost(p);
    } else if (p->mgmt.attempt == 0) {
        SL_WARN(p->s->inst, "cannot connect to %s: %s; retrying", p->where, why);
    }
    p->lag_pending = false;
    p->phase = PH_STANDBY;
    if (p->stopping)
        return;
    sl_pgconn_retry(&p->mgmt); /* the lock is asked for again once it is back */
}

static void mgmt_connect(struct pg *p)
{
    static const char *const kw[] = { "options", "application_name", NULL };
    const char *val[] = { conn_options, "sluice", NULL };

    if (p->stopping)
        return;
    p->mgmt.on_up = mgmt_up;
    p->mgmt.on_down = mgmt_down;
    p->mgmt.arg = p;
    sl_pgconn_connect(&p->mgmt, p->o->dsn, kw, val);
}

/* ------------------------------------------------------------------ */
/* Lag and heartbeat                                                   */

static void on_lag(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    double lag, limit = (double)p->o->slot_lag_warning_mb * 1024 * 1024;

    (void)c, (void)why;
    p->lag_pending = false;
    if (!ok(res, PGRES_TUPLES_OK) || PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        return;
    lag = atof(PQgetvalue(res, 0, 0));
    p->lag_bytes = lag;
    if (p->m_lag)
        sl_metric_set(p->m_lag, p->conf->name, lag);
    if (!PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 1), "lost") == 0)
        SL_ERROR(p->s->inst, "slot %s is lost: the server removed WAL it still needed "
                 "(max_slot_wal_keep_size); drop it and let sluice create it again", p->slot);
    if (lag > limit && !p->warned_lag) {
        SL_WARN(p->s->inst, "slot %s holds %.0f MB of WAL (warning above %" PRId64 " MB): "
                "the handler is behind or the stream is stopped", p->slot, lag / 1048576.0,
                p->o->slot_lag_warning_mb);
        p->warned_lag = true;
    } else if (lag <= limit / 2 && p->warned_lag) {
        SL_INFO(p->s->inst, "slot %s lag back to %.0f MB", p->slot, lag / 1048576.0);
        p->warned_lag = false;
    }
}

static void on_lag_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg *p = arg;
    char *lit, *sql;

    (void)fd, (void)what;
    /* queued behind a heartbeat or setup query if need be, never twice */
    if (p->mgmt.state != SL_PGCONN_READY || p->lag_pending)
        return;
    p->lag_pending = true;
    lit = sl__pg_quote_literal(p->slot);
    sql = sl_asprintf("SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, wal_status "
                      "FROM pg_replication_slots WHERE slot_name = %s", lit);
    sl_pgconn_query(&p->mgmt, sql, on_lag, p);
    free(sql);
    free(lit);
}

static void on_heartbeat_done(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    if (!ok(res, PGRES_TUPLES_OK))
        SL_DEBUG(SL_DBG_POSTGRES, p->s->inst, "heartbeat failed: %s",
                 res_error(res, why, msg, sizeof(msg)));
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct pg *p = arg;

    (void)fd, (void)what;
    if (p->holder && p->phase == PH_STREAMING && p->mgmt.state == SL_PGCONN_READY && !p->mgmt.cur)
        sl_pgconn_query(&p->mgmt, "SELECT pg_logical_emit_message(false, 'sluice-heartbeat', '')",
                  on_heartbeat_done, p);
}

/* ------------------------------------------------------------------ */
/* Snapshot state                                                      */

static void on_snapshot_marked(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char msg[300];

    (void)c;
    p->snap_marking = false;
    if (!ok(res, PGRES_COMMAND_OK)) {
        SL_WARN(p->s->inst, "cannot record the snapshot as complete: %s",
                res_error(res, why, msg, sizeof(msg)));
        return; /* tried again at the next checkpoint or reconnect */
    }
    if (p->snap_txn) {
        p->snap_txn->committed = true;
        sl__pg_advance(p);
    }
}

void sl__pg_mark_snapshot_complete(struct pg *p)
{
    char *lit, *sql;

    if (p->mgmt.state != SL_PGCONN_READY || !p->holder)
        return;
    p->snap_marking = true;
    lit = sl__pg_quote_literal(p->slot);
    sql = sl_asprintf("UPDATE sluice_snapshot_state SET state = 'done', updated_at = now() "
                      "WHERE slot_name = %s", lit);
    sl_pgconn_query(&p->mgmt, sql, on_snapshot_marked, p);
    free(sql);
    free(lit);
}

void sl__pg_snapshot_done(struct pg *p)
{
    p->snap_all_read = true;
    SL_INFO(p->s->inst, "initial snapshot read (%u rows); streaming from %s",
            p->snap_txn ? p->snap_txn->changes : 0, p->slot);
    sl__pg_start_streaming(p);
    sl__pg_advance(p);
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

int sl__pg_session_start(struct pg *p)
{
    struct event_base *b = p->base;
    int64_t hb = p->o->heartbeat_interval_ms;

    sl_pgconn_init(&p->mgmt, b, p->s->inst, "management");
    sl_pgconn_init(&p->repl, b, p->s->inst, "replication");
    sl_pgconn_init(&p->snap, b, p->s->inst, "snapshot");
    p->lock_timer = evtimer_new(b, on_lock_timer, p);
    p->repl_retry = evtimer_new(b, on_repl_retry, p);
    p->status_timer = event_new(b, -1, EV_PERSIST, on_status_timer, p);
    p->lag_timer = event_new(b, -1, EV_PERSIST, on_lag_timer, p);
    arm(p->status_timer, 200);
    arm(p->lag_timer, LAG_EVERY_MS);
    if (hb > 0) {
        p->heartbeat_timer = event_new(b, -1, EV_PERSIST, on_heartbeat, p);
        arm(p->heartbeat_timer, hb);
    }
    p->snapshot_wanted = p->o->snapshot == SL_SNAPSHOT_INITIAL;
    p->phase = PH_STANDBY;
    mgmt_connect(p);
    return 0;
}

void sl__pg_session_stop(struct pg *p)
{
    sl_pgconn_pause_read(&p->repl, true);
    evtimer_del(p->lock_timer);
    evtimer_del(p->repl_retry);
    if (p->mgmt.state == SL_PGCONN_DOWN)
        sl_pgconn_close(&p->mgmt); /* no reconnect after the stop */
    if (p->heartbeat_timer)
        event_del(p->heartbeat_timer);
    if (p->phase == PH_SNAPSHOT || p->phase == PH_SETUP) {
        /* not streaming yet: nothing more to read, nothing to tell the server */
        sl_pgconn_close(&p->snap);
        sl__pg_snapshot_free(p);
    }
}

void sl__pg_session_free(struct pg *p)
{
    char l[32];

    if (!p->mgmt.base)
        return;
    if (p->repl.state == SL_PGCONN_COPY) {
        /* the last word on what is final: the next reader starts after it */
        sl__pg_send_status(p, false);
        if (p->repl.conn)
            PQflush(p->repl.conn);
    }
    if (p->holder) {
        sl__pg_lsn_text(p->flushed, l, sizeof(l));
        SL_WARN(p->s->inst, "slot %s stays on %s and holds WAL from %s until sluice runs again%s; "
                "if this source is gone for good, drop it: SELECT pg_drop_replication_slot('%s')",
                p->slot, p->where, p->flushed ? l : "its confirmed position",
                p->created_slot ? " (sluice created it)" : "", p->slot);
    }
    sl_pgconn_destroy(&p->repl);
    sl_pgconn_destroy(&p->snap);
    sl_pgconn_destroy(&p->mgmt);
    sl__pg_snapshot_free(p);
    if (p->dec)
        sl__pgo_free(p->dec);
    p->dec = NULL;
    struct event *evs[] = { p->lock_timer, p->repl_retry, p->status_timer,
                            p->lag_timer, p->heartbeat_timer };
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    free(p->snapshot_name);
}
