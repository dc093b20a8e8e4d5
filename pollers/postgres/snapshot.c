/* The initial snapshot (`snapshot: initial`).
 *
 * The slot is created on the replication connection with an exported
 * snapshot; a third connection imports it (REPEATABLE READ, SET
 * TRANSACTION SNAPSHOT) and reads every published table through a cursor,
 * 1,000 rows per FETCH, only while the engine is not paused. Each row is
 * turned into the pgoutput Relation and Insert messages the server would
 * have sent and run through the same decoder as the stream, so snapshot
 * rows and streamed rows have exactly the same JSON. They are pushed as
 * INSERTs of one pseudo-transaction ahead of everything the stream brings
 * afterwards (the slot's consistent point), so the flush position cannot
 * pass them until every row is final.
 *
 * Restart safety: a row in sluice_snapshot_state says 'started' before
 * the slot is created and 'done' once every snapshot row is final. A slot
 * found with 'started' was left by an interrupted snapshot: it is dropped
 * and the snapshot taken again (rows may be delivered twice, never lost). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define FETCH_ROWS 1000

void sl__pg_snapshot_row(struct pg *p, struct pgo_msg *m);

static void next_table(struct pg *p);

static void fail(struct pg *p, const char *what, PGresult *res, const char *why)
{
    char msg[300];
    const char *m = res ? PQresultErrorMessage(res) : why;

    snprintf(msg, sizeof(msg), "%s: %s", what, m && *m ? m : "no result");
    msg[strcspn(msg, "\n")] = '\0';
    sl__pg_repl_restart(p, msg, false);
}

void sl__pg_snapshot_free(struct pg *p)
{
    for (size_t i = 0; i < p->ntables; i++) {
        free(p->tables[i].schema);
        free(p->tables[i].name);
    }
    free(p->tables);
    p->tables = NULL;
    p->ntables = p->table_i = 0;
    if (p->snap_dec)
        sl__pgo_free(p->snap_dec);
    p->snap_dec = NULL;
    p->snap_fetching = false;
    if (p->snap_txn && !p->snap_all_read) {
        /* interrupted: its rows still run, but it never completes */
        p->snap_txn->dead = true;
        p->snap_txn = NULL;
    }
}

/* A growable byte buffer for synthesised pgoutput messages. */
struct bb {
    uint8_t *p;
    size_t   n, cap;
};

static void bb_put(struct bb *b, const void *v, size_t n)
{
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->p = sl_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}

static void bb_u8(struct bb *b, uint8_t v)
{
    bb_put(b, &v, 1);
}

static void bb_u16(struct bb *b, uint16_t v)
{
    v = htons(v);
    bb_put(b, &v, 2);
}

static void bb_u32(struct bb *b, uint32_t v)
{
    v = htonl(v);
    bb_put(b, &v, 4);
}

static void bb_str(struct bb *b, const char *s)
{
    bb_put(b, s, strlen(s) + 1);
}

/* ------------------------------------------------------------------ */

static void on_fetch(struct sl_pgconn *c, PGresult *res, const char *why, void *arg);

void sl__pg_snapshot_pump(struct pg *p)
{
    if (p->phase != PH_SNAPSHOT || p->snap_fetching || p->paused || p->stopping || p->throttled ||
        p->snap.state != SL_PGCONN_READY || p->table_i >= p->ntables)
        return;
    p->snap_fetching = true;
    sl_pgconn_query(&p->snap, "FETCH 1000 FROM sluice_snapshot", on_fetch, p);
}

static void on_fetch(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    const struct pg_table *t = &p->tables[p->table_i];
    int rows, cols;
    struct bb b = { 0 };

    (void)c;
    p->snap_fetching = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(p, "cannot read the snapshot", res, why);
        return;
    }
    rows = PQntuples(res);
    cols = PQnfields(res);
    for (int r = 0; r < rows; r++) {
        struct pgo_msg m;
        struct sl_err err;

        b.n = 0;
        bb_u8(&b, 'I');
        bb_u32(&b, t->oid);
        bb_u8(&b, 'N');
        bb_u16(&b, (uint16_t)cols);
        for (int f = 0; f < cols; f++) {
            if (PQgetisnull(res, r, f)) {
                bb_u8(&b, 'n');
                continue;
            }
            bb_u8(&b, 't');
            bb_u32(&b, (uint32_t)PQgetlength(res, r, f));
            bb_put(&b, PQgetvalue(res, r, f), (size_t)PQgetlength(res, r, f));
        }
        if (sl__pgo_decode(p->snap_dec, b.p, b.n, &m, &err) != 0) {
            SL_ERROR(p->s->inst, "snapshot of %s.%s: cannot convert a row: %s", t->schema,
                     t->name, err.msg);
            free(b.p);
            sl__pg_repl_restart(p, "snapshot row conversion failed", false);
            return;
        }
        sl__pg_snapshot_row(p, &m);
        sl__pgo_msg_destroy(&m);
    }
    free(b.p);
    if (rows < FETCH_ROWS) {
        sl_pgconn_query(&p->snap, "CLOSE sluice_snapshot", NULL, NULL);
        p->table_i++;
        next_table(p);
        return;
    }
    sl__pg_snapshot_pump(p);
}

/* Columns of the table in attribute order, as pgoutput lists them:
 * name, type, typmod, part of the replica identity. */
static void on_columns(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    const struct pg_table *t = &p->tables[p->table_i];
    struct bb b = { 0 };
    struct pgo_msg m;
    struct sl_err err;
    int n;
    size_t cap = 64;
    char *list, *sql, *qt;

    (void)c;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        fail(p, "cannot list the snapshot columns", res, why);
        return;
    }
    n = PQntuples(res);
    bb_u8(&b, 'R');
    bb_u32(&b, t->oid);
    bb_str(&b, t->schema);
    bb_str(&b, t->name);
    bb_u8(&b, (uint8_t)PQgetvalue(res, 0, 4)[0]);
    bb_u16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        bb_u8(&b, strcmp(PQgetvalue(res, i, 3), "t") == 0 ? 1 : 0);
        bb_str(&b, PQgetvalue(res, i, 0));
        bb_u32(&b, (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10));
        bb_u32(&b, (uint32_t)strtol(PQgetvalue(res, i, 2), NULL, 10));
        cap += 2 * strlen(PQgetvalue(res, i, 0)) + 4;
    }
    if (sl__pgo_decode(p->snap_dec, b.p, b.n, &m, &err) != 0) {
        free(b.p);
        SL_ERROR(p->s->inst, "snapshot of %s.%s: %s", t->schema, t->name, err.msg);
        sl__pg_repl_restart(p, "snapshot relation failed", false);
        return;
    }
    sl__pgo_msg_destroy(&m);
    free(b.p);
    list = sl_malloc(cap);
    list[0] = '\0';
    for (int i = 0; i < n; i++) {
        char *q = sl__pg_quote_ident(PQgetvalue(res, i, 0));
        if (i)
            strcat(list, ", ");
        strcat(list, q);
        free(q);
    }
    {
        char *full = sl_asprintf("%s.%s", t->schema, t->name);
        qt = sl__pg_quote_qualified(full);
        free(full);
    }
    sql = sl_asprintf("DECLARE sluice_snapshot NO SCROLL CURSOR FOR SELECT %s FROM ONLY %s",
                      list, qt);
    sl_pgconn_query(&p->snap, sql, NULL, NULL);
    free(sql);
    free(list);
    free(qt);
    sl__pg_snapshot_pump(p);
}

static void on_committed(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;

    (void)c, (void)res, (void)why;
    sl_pgconn_close(&p->snap);
    if (p->snap_dec)
        sl__pgo_free(p->snap_dec);
    p->snap_dec = NULL;
    sl__pg_snapshot_done(p);
}

static void next_table(struct pg *p)
{
    const struct pg_table *t;
    char *sql;

    if (p->table_i >= p->ntables) {
        sl_pgconn_query(&p->snap, "COMMIT", on_committed, p);
        return;
    }
    t = &p->tables[p->table_i];
    SL_DEBUG(SL_DBG_POSTGRES, p->s->inst, "snapshot of %s.%s", t->schema, t->name);
    sql = sl_asprintf(
        "SELECT a.attname, a.atttypid, a.atttypmod, "
        /* keys as the stream's (session.c): FULL uses the primary key when there is one */
        "CASE WHEN c.relreplident = 'f' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE "
        "i.indrelid = c.oid AND i.indisprimary) THEN true ELSE coalesce(a.attnum = ANY ((SELECT "
        "i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid AND ((c.relreplident IN "
        "('d', 'f') AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)) "
        "LIMIT 1)::int2[]), false) END, c.relreplident "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE a.attrelid = %" PRIu32 " AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' ORDER BY a.attnum",
        t->oid);
    sl_pgconn_query(&p->snap, sql, on_columns, p);
    free(sql);
}

static void on_tables(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    int n;

    (void)c;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(p, "cannot list the published tables", res, why);
        return;
    }
    n = PQntuples(res);
    p->tables = sl_calloc((size_t)(n ? n : 1), sizeof(*p->tables));
    for (int i = 0; i < n; i++) {
        p->tables[i].oid = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        p->tables[i].schema = sl_strdup(PQgetvalue(res, i, 1));
        p->tables[i].name = sl_strdup(PQgetvalue(res, i, 2));
    }
    p->ntables = (size_t)n;
    p->table_i = 0;
    next_table(p);
}

static void on_imported(struct sl_pgconn *c, PGresult *res, const char *why, void *arg)
{
    struct pg *p = arg;
    char *lit, *sql;

    (void)c;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail(p, "cannot import the snapshot", res, why);
        return;
    }
    lit = sl__pg_quote_literal(p->publication);
    sql = sl_asprintf("SELECT c.oid, n.nspname, c.relname FROM pg_publication_tables pt "
                      "JOIN pg_namespace n ON n.nspname = pt.schemaname "
                      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
                      "WHERE pt.pubname = %s AND c.relname <> 'sluice_snapshot_state' "
                      "ORDER BY 2, 3", lit);
    sl_pgconn_query(&p->snap, sql, on_tables, p);
    free(sql);
    free(lit);
}

static void snap_up(struct sl_pgconn *c, void *arg)
{
    struct pg *p = arg;
    char *lit = sl__pg_quote_literal(p->snapshot_name);
    char *sql = sl_asprintf("SET TRANSACTION SNAPSHOT %s", lit);

    sl_pgconn_query(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, NULL);
    sl_pgconn_query(c, sql, on_imported, p);
    free(sql);
    free(lit);
}

static void snap_down(struct sl_pgconn *c, const char *why, void *arg)
{
    struct pg *p = arg;

    (void)c;
    if (p->phase == PH_SNAPSHOT)
        sl__pg_repl_restart(p, why, false);
}

void sl__pg_snapshot_begin(struct pg *p)
{
    static const char *const kw[] = { "options", "application_name", NULL };
    const char *val[] = { "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3",
                          "sluice-snapshot", NULL };

    if (p->snap_txn) {
        /* an earlier snapshot of this process that never completed */
        p->snap_txn->dead = true;
        p->snap_txn = NULL;
    }
    p->snap_all_read = false;
    p->snap_marking = false;
    p->snap_txn = sl__pg_txn_new(p, p->consistent_lsn ? p->consistent_lsn - 1 : 0, sl_wall_ms(), 0);
    p->snap_txn->snapshot = true;
    p->snap_dec = sl__pgo_new();
    sl__pgo_set_images(p->snap_dec, p->o->image_format == SL_IMAGES_JSON ? PGO_IMAGES_JSON
                                                                         : PGO_IMAGES_AV);
    p->snap.on_up = snap_up;
    p->snap.on_down = snap_down;
    p->snap.on_copy = NULL;
    p->snap.arg = p;
    sl_pgconn_connect(&p->snap, p->o->dsn, kw, val);
}
