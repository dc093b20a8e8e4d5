/* pgoutput decoder against bytes from the real Postgres: a scratch slot
 * on a table covering the common types, peeked through
 * pg_logical_slot_peek_binary_changes in text and in binary mode, decoded
 * and checked value by value; the two modes must give the same JSON.
 * Reads SLUICE_TEST_PG (tests/services env). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../pollers/postgres/pgoutput.h"

static PGconn *conn;
static char sfx[64];

static PGresult *sql(const char *q)
{
    PGresult *r = PQexec(conn, q);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", q, PQerrorMessage(conn));
    return r;
}

__attribute__((format(printf, 1, 2))) static void sqlf(const char *fmt, ...)
{
    char q[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof q, "query too long");
    PQclear(sql(q));
}

/* synchronous_commit=on: the peek reads only up to flushed WAL, and the
 * services may run with asynchronous commit */
static void setup(void)
{
    const char *ci = getenv("SLUICE_TEST_PG");
    cr_assert(ci && *ci, "SLUICE_TEST_PG is not set: run tests/services start and "
                         "eval \"$(tests/services env)\"");
    char full[1024];
    snprintf(full, sizeof full, "%s connect_timeout=10 options='-c DateStyle=ISO -c TimeZone=UTC -c synchronous_commit=on' "
             "client_encoding=UTF8", ci);
    conn = PQconnectdb(full);
    cr_assert(PQstatus(conn) == CONNECTION_OK, "connect: %s", PQerrorMessage(conn));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(sfx, sizeof sfx, "%ld_%ld", (long)getpid(), ts.tv_nsec / 1000);
}

static void teardown(void)
{
    if (!conn)
        return;
    char q[512];
    snprintf(q, sizeof q,
             "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
             "WHERE slot_name = 'pgo_s_%s'", sfx);
    PQclear(PQexec(conn, q));
    snprintf(q, sizeof q, "DROP PUBLICATION IF EXISTS pgo_p_%s", sfx);
    PQclear(PQexec(conn, q));
    snprintf(q, sizeof q, "DROP TABLE IF EXISTS pgo_t_%s, pgo_f_%s; DROP TYPE IF EXISTS pgo_mood_%s",
             sfx, sfx, sfx);
    PQclear(PQexec(conn, q));
    PQfinish(conn);
}

TestSuite(pgoutput_real, .init = setup, .fini = teardown, .timeout = 120);

/* One decoded change, flattened for checks. */
struct change {
    enum pgo_kind kind;
    char table[64];
    char *keys, *new_image, *old_image;
    size_t n_unchanged;
    char unchanged0[32];
    bool key_only;
};

struct run {
    struct change ch[64];
    size_t n, begins, commits, messages, truncates, types;
    char message[64];
};

static void decode_slot(bool binary, struct run *out)
{
    char q[512];
    snprintf(q, sizeof q,
             "SELECT data FROM pg_logical_slot_peek_binary_changes('pgo_s_%s', NULL, NULL, "
             "'proto_version', '1', 'publication_names', 'pgo_p_%s', 'messages', 'true'%s)",
             sfx, sfx, binary ? ", 'binary', 'true'" : "");
    PGresult *r = PQexecParams(conn, q, 0, NULL, NULL, NULL, NULL, 1);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));

    struct pgo_decoder *d = sl__pgo_new();
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < PQntuples(r); i++) {
        struct pgo_msg m;
        struct sl_err err;
        int rc = sl__pgo_decode(d, (const uint8_t *)PQgetvalue(r, i, 0),
                                (size_t)PQgetlength(r, i, 0), &m, &err);
        cr_assert_eq(rc, 0, "%s row %d: %s", binary ? "binary" : "text", i, err.msg);
        switch (m.kind) {
        case PGO_BEGIN: out->begins++; break;
        case PGO_COMMIT: out->commits++; cr_assert_gt(m.end_lsn, 0); break;
        case PGO_TRUNCATE: out->truncates++; break;
        case PGO_TYPE:
            /* the enum: a poller maps user types it learns about this way */
            out->types++;
            cr_assert(strstr(m.type_name, "pgo_mood_"), "%s", m.type_name);
            cr_assert_eq(sl__pgo_type_alias(d, m.type_oid, 25), 0);
            break;
        case PGO_MESSAGE:
            out->messages++;
            snprintf(out->message, sizeof out->message, "%s:%.*s", m.prefix, (int)m.content_len,
                     m.content);
            break;
        case PGO_INSERT:
        case PGO_UPDATE:
        case PGO_DELETE: {
            cr_assert_lt(out->n, 64);
            struct change *c = &out->ch[out->n++];
            c->kind = m.kind;
            snprintf(c->table, sizeof c->table, "%s", m.rel->name);
            c->keys = m.keys, m.keys = NULL;
            c->new_image = m.new_image, m.new_image = NULL;
            c->old_image = m.old_image, m.old_image = NULL;
            c->n_unchanged = m.n_unchanged;
            c->key_only = m.old_is_key_only;
            if (m.n_unchanged)
                snprintf(c->unchanged0, sizeof c->unchanged0, "%s", m.unchanged_toast[0]);
            break;
        }
        default:
            break;
        }
        sl__pgo_msg_destroy(&m);
    }
    sl__pgo_free(d);
    PQclear(r);
}

static void free_run(struct run *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ch[i].keys), free(r->ch[i].new_image), free(r->ch[i].old_image);
}

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &je);
    cr_assert(j, "invalid JSON (%s): %.300s", je.text, s);
    return j;
}

static void has(const char *image, const char *fragment)
{
    cr_assert(image && strstr(image, fragment), "'%s' not in %.600s", fragment, image);
}

Test(pgoutput_real, common_types_text_and_binary)
{
    sqlf("CREATE TYPE pgo_mood_%s AS ENUM ('happy', 'sad')", sfx);
    sqlf("CREATE TABLE pgo_t_%s (id int PRIMARY KEY, big bigint, num numeric(30,10), flag bool, "
         "txt text, vc varchar(20), doc jsonb, js json, raw bytea, at timestamptz, ts timestamp, "
         "d date, tm time, u uuid, ints int[], texts text[], grid int[], mood pgo_mood_%s, f8 float8, "
         "f4 float4, sm smallint, iv interval, long text)", sfx, sfx);
    sqlf("CREATE TABLE pgo_f_%s (id int PRIMARY KEY, v text)", sfx);
    sqlf("ALTER TABLE pgo_f_%s REPLICA IDENTITY FULL", sfx);
    sqlf("CREATE PUBLICATION pgo_p_%s FOR TABLE pgo_t_%s, pgo_f_%s", sfx, sfx, sfx);
    sqlf("SELECT pg_create_logical_replication_slot('pgo_s_%s', 'pgoutput')", sfx);

    sqlf("INSERT INTO pgo_t_%s VALUES (1, 9007199254740993, 12345678901234567890.0123456789, true, "
         "E'h\\u00e9 \"q\"\\n', 'vc', '{\"a\": [1, 2.5]}', '{\"b\" : null}', '\\x00ff', "
         "'2024-02-29 13:14:15.123456+05:30', '2024-02-29 13:14:15', '2024-02-29', '13:14:15.5', "
         "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{\"a b\",NULL,\"NULL\",\"q\\\"x\"}', "
         "'{{1,2},{3,4}}', 'happy', 0.1, 1.5, -2, '1 year 2 mons 3 days 04:05:06.25', "
         "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) i))", sfx);
    sqlf("INSERT INTO pgo_t_%s (id, num, at, d, f8) VALUES (2, 'NaN', 'infinity', '0044-03-15 BC', "
         "'-Infinity')", sfx);
    sqlf("UPDATE pgo_t_%s SET txt = 'changed' WHERE id = 1", sfx);   /* long: unchanged TOAST */
    sqlf("UPDATE pgo_t_%s SET id = 10 WHERE id = 2", sfx);           /* key change: 'K' */
    sqlf("DELETE FROM pgo_t_%s WHERE id = 10", sfx);
    sqlf("INSERT INTO pgo_f_%s VALUES (1, 'a')", sfx);
    sqlf("UPDATE pgo_f_%s SET v = 'b'", sfx);
    sqlf("DELETE FROM pgo_f_%s", sfx);
    sqlf("TRUNCATE pgo_f_%s", sfx);
    sqlf("SELECT pg_logical_emit_message(true, 'sluice', 'hello')");

    struct run text, bin;
    decode_slot(false, &text);
    decode_slot(true, &bin);

    for (struct run *r = &text; r; r = r == &text ? &bin : NULL) {
        cr_assert_eq(r->n, 8, "changes: %zu", r->n);
        cr_assert_eq(r->truncates, 1);
        cr_assert_eq(r->messages, 1, "messages: %zu (%s)", r->messages, r->message);
        cr_assert_str_eq(r->message, "sluice:hello");
        cr_assert_geq(r->types, 1);
        cr_assert_eq(r->begins, r->commits);

        const char *row1 = r->ch[0].new_image;
        has(row1, "\"id\":1,\"big\":9007199254740993,\"num\":12345678901234567890.0123456789,"
                  "\"flag\":true,\"txt\":\"h\xc3\xa9 \\\"q\\\"\\n\",\"vc\":\"vc\"");
        has(row1, "\"doc\":{\"a\": [1, 2.5]},\"js\":{\"b\" : null},\"raw\":\"AP8=\"");
        has(row1, "\"at\":\"2024-02-29T07:44:15.123456Z\",\"ts\":\"2024-02-29T13:14:15\","
                  "\"d\":\"2024-02-29\",\"tm\":\"13:14:15.5\"");
        has(row1, "\"u\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",\"ints\":[1,null,3],"
                  "\"texts\":[\"a b\",null,\"NULL\",\"q\\\"x\"],\"grid\":[[1,2],[3,4]],\"mood\":\"happy\"");
        has(row1, "\"f8\":0.1,\"f4\":1.5,\"sm\":-2,\"iv\":\"1 year 2 mons 3 days 04:05:06.25\"");
        cr_assert_str_eq(r->ch[0].keys, "{\"id\":1}");
        json_decref(parse(row1));

        has(r->ch[1].new_image, "\"num\":\"NaN\"");
        has(r->ch[1].new_image, "\"at\":\"infinity\"");
        has(r->ch[1].new_image, "\"d\":\"-0043-03-15\"");
        has(r->ch[1].new_image, "\"f8\":\"-Infinity\"");
        has(r->ch[1].new_image, "\"flag\":null");

        /* update leaving the TOASTed column alone: absent and listed */
        cr_assert_eq(r->ch[2].kind, PGO_UPDATE);
        has(r->ch[2].new_image, "\"txt\":\"changed\"");
        cr_assert_null(strstr(r->ch[2].new_image, "\"long\""));
        cr_assert_eq(r->ch[2].n_unchanged, 1);
        cr_assert_str_eq(r->ch[2].unchanged0, "long");
        cr_assert_null(r->ch[2].old_image);

        /* key change: old key only */
        cr_assert_eq(r->ch[3].kind, PGO_UPDATE);
        cr_assert(r->ch[3].key_only);
        cr_assert_str_eq(r->ch[3].old_image, "{\"id\":2}");
        cr_assert_str_eq(r->ch[3].keys, "{\"id\":10}");
        cr_assert_eq(r->ch[4].kind, PGO_DELETE);
        cr_assert_str_eq(r->ch[4].old_image, "{\"id\":10}");
        cr_assert_str_eq(r->ch[4].keys, "{\"id\":10}");

        /* REPLICA IDENTITY FULL: whole old rows */
        cr_assert_str_eq(r->ch[5].table, text.ch[5].table);
        cr_assert_str_eq(r->ch[6].old_image, "{\"id\":1,\"v\":\"a\"}");
        cr_assert_str_eq(r->ch[6].new_image, "{\"id\":1,\"v\":\"b\"}");
        cr_assert(!r->ch[6].key_only);
        cr_assert_str_eq(r->ch[7].old_image, "{\"id\":1,\"v\":\"b\"}");
        cr_assert_null(r->ch[7].new_image);
    }
    /* both forms render every value the same way */
    for (size_t i = 0; i < text.n; i++) {
        cr_assert_str_eq(bin.ch[i].new_image ? bin.ch[i].new_image : "-",
                         text.ch[i].new_image ? text.ch[i].new_image : "-", "change %zu", i);
        cr_assert_str_eq(bin.ch[i].old_image ? bin.ch[i].old_image : "-",
                         text.ch[i].old_image ? text.ch[i].old_image : "-", "change %zu", i);
    }
    free_run(&text);
    free_run(&bin);
}

Test(pgoutput_real, binary_enum_without_alias_is_unsupported)
{
    sqlf("CREATE TYPE pgo_mood_%s AS ENUM ('happy', 'sad')", sfx);
    sqlf("CREATE TABLE pgo_t_%s (id int PRIMARY KEY, mood pgo_mood_%s)", sfx, sfx);
    sqlf("CREATE PUBLICATION pgo_p_%s FOR TABLE pgo_t_%s", sfx, sfx);
    sqlf("SELECT pg_create_logical_replication_slot('pgo_s_%s', 'pgoutput')", sfx);
    sqlf("INSERT INTO pgo_t_%s VALUES (1, 'sad')", sfx);

    char q[512];
    snprintf(q, sizeof q,
             "SELECT data FROM pg_logical_slot_peek_binary_changes('pgo_s_%s', NULL, NULL, "
             "'proto_version', '1', 'publication_names', 'pgo_p_%s', 'binary', 'true')", sfx, sfx);
    PGresult *r = PQexecParams(conn, q, 0, NULL, NULL, NULL, NULL, 1);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
    struct pgo_decoder *d = sl__pgo_new();
    int unsupported = 0, inserts = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        struct pgo_msg m;
        struct sl_err err;
        int rc = sl__pgo_decode(d, (const uint8_t *)PQgetvalue(r, i, 0),
                                (size_t)PQgetlength(r, i, 0), &m, &err);
        if (rc == SL_EUNSUPPORTED) {
            unsupported++;
            cr_assert(strstr(err.msg, ".mood:"), "%s", err.msg);
            continue;
        }
        cr_assert_eq(rc, 0, "%s", err.msg);
        inserts += m.kind == PGO_INSERT;
        sl__pgo_msg_destroy(&m);
    }
    cr_assert_eq(unsupported, 1, "unsupported %d inserts %d rows %d", unsupported, inserts, PQntuples(r));
    cr_assert_eq(inserts, 0);
    sl__pgo_free(d);
    PQclear(r);
}
