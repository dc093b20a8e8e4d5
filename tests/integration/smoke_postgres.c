/* Smoke test: the Postgres started by tests/services does logical
 * replication with pgoutput, the way the Postgres poller will use it:
 * publication + slot, then a replication=database connection streaming
 * XLogData that carries a pgoutput Insert of the row we wrote.
 * Reads SLUICE_TEST_PG (a libpq conninfo). Standalone: no project code. */
#include <criterion/criterion.h>
#include <libpq-fe.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define WAIT_S 30

static PGconn *conn;  /* ordinary SQL connection */
static PGconn *repl;  /* replication=database connection */
static char sfx[64];  /* unique per run: names of table, publication, slot */
static char table[96], pub[96], slot[96], value[128];
static int slot_made;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run SQL that must succeed; returns the result for the caller to clear. */
static PGresult *sql(const char *q)
{
    PGresult *r = PQexec(conn, q);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", q,
              PQerrorMessage(conn));
    return r;
}

__attribute__((format(printf, 1, 2))) static void sqlf(const char *fmt, ...)
{
    char q[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof q, "query too long");
    PQclear(sql(q));
}

static void setup(void)
{
    const char *ci = getenv("SLUICE_TEST_PG");
    cr_assert(ci != NULL && *ci != '\0',
              "SLUICE_TEST_PG is not set: run tests/services start and "
              "eval \"$(tests/services env)\"");

    char full[1024];
    snprintf(full, sizeof full, "%s connect_timeout=10", ci);
    conn = PQconnectdb(full);
    cr_assert(PQstatus(conn) == CONNECTION_OK, "connect to $SLUICE_TEST_PG: %s",
              PQerrorMessage(conn));

    /* Unique names: slots and publications outlive a crashed run on a
     * reused server, and max_replication_slots is finite. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(sfx, sizeof sfx, "%ld_%lld_%ld", (long)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec / 1000);
    snprintf(table, sizeof table, "smoke_t_%s", sfx);
    snprintf(pub, sizeof pub, "smoke_p_%s", sfx);
    snprintf(slot, sizeof slot, "smoke_s_%s", sfx);
    snprintf(value, sizeof value, "hello from %s", sfx);
}

static void teardown(void)
{
    if (repl != NULL) {
        PQfinish(repl);
        repl = NULL;
    }
    if (conn == NULL)
        return;
    if (slot_made) {
        /* The walsender may still hold the slot for a moment after the
         * replication connection closed: retry until it lets go. */
        char q[256];
        snprintf(q, sizeof q, "select pg_drop_replication_slot('%s')", slot);
        for (double end = now_s() + WAIT_S; now_s() < end; usleep(100 * 1000)) {
            PGresult *r = PQexec(conn, q);
            int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
            if (ok)
                break;
        }
    }
    char q[256];
    snprintf(q, sizeof q, "drop publication if exists %s", pub);
    PQclear(PQexec(conn, q));
    snprintf(q, sizeof q, "drop table if exists %s", table);
    PQclear(PQexec(conn, q));
    PQfinish(conn);
    conn = NULL;
}

TestSuite(smoke_postgres, .fini = teardown, .timeout = 90);

/* Big-endian readers over a bounded cursor; any overrun fails the test. */
struct cur {
    const unsigned char *p, *end;
};

static void need(const struct cur *c, size_t n)
{
    cr_assert((size_t)(c->end - c->p) >= n, "pgoutput message truncated");
}

static uint8_t get8(struct cur *c)
{
    need(c, 1);
    return *c->p++;
}

static uint32_t get32(struct cur *c)
{
    need(c, 4);
    uint32_t v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 |
                 c->p[3];
    c->p += 4;
    return v;
}

static uint16_t get16(struct cur *c)
{
    need(c, 2);
    uint16_t v = (uint16_t)(c->p[0] << 8 | c->p[1]);
    c->p += 2;
    return v;
}

static const char *getstr(struct cur *c)
{
    const char *s = (const char *)c->p;
    const unsigned char *nul = memchr(c->p, '\0', (size_t)(c->end - c->p));
    cr_assert(nul != NULL, "pgoutput string not terminated");
    c->p = nul + 1;
    return s;
}

/* Reply to a keepalive that asks for it, so the server never times us out. */
static void standby_status(void)
{
    char msg[1 + 8 * 4 + 1] = { 'r' };
    cr_assert(PQputCopyData(repl, msg, sizeof msg) == 1, "PQputCopyData: %s",
              PQerrorMessage(repl));
    cr_assert(PQflush(repl) == 0, "PQflush: %s", PQerrorMessage(repl));
}

Test(smoke_postgres, pgoutput_streams_insert)
{
    setup();

    /* A real server answers with a real version. */
    cr_assert_geq(PQserverVersion(conn), 100000, "server version %d", PQserverVersion(conn));
    PGresult *r = sql("show wal_level");
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "logical", "wal_level must be logical");
    PQclear(r);

    sqlf("create table %s (id int primary key, val text not null)", table);
    sqlf("create publication %s for table %s", pub, table);

    char q[512];
    snprintf(q, sizeof q, "select lsn from pg_create_logical_replication_slot('%s', 'pgoutput')",
             slot);
    r = sql(q);
    slot_made = 1;
    cr_assert_eq(PQntuples(r), 1);
    PQclear(r);

    /* Parameterised, so the value goes through the wire as data. */
    snprintf(q, sizeof q, "insert into %s (id, val) values (42, $1)", table);
    const char *params[1] = { value };
    r = PQexecParams(conn, q, 1, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "insert: %s", PQerrorMessage(conn));
    cr_assert_str_eq(PQcmdTuples(r), "1");
    PQclear(r);

    char ci[1024];
    snprintf(ci, sizeof ci, "%s replication=database connect_timeout=10", getenv("SLUICE_TEST_PG"));
    repl = PQconnectdb(ci);
    cr_assert(PQstatus(repl) == CONNECTION_OK, "replication connect: %s", PQerrorMessage(repl));

    snprintf(q, sizeof q,
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s')",
             slot, pub);
    r = PQexec(repl, q);
    cr_assert_eq(PQresultStatus(r), PGRES_COPY_BOTH, "%s: %s", q, PQerrorMessage(repl));
    PQclear(r);

    uint32_t relid = 0;
    int saw_relation = 0, saw_insert = 0, saw_begin = 0;
    double deadline = now_s() + WAIT_S;
    while (!saw_insert) {
        char *buf = NULL;
        int n = PQgetCopyData(repl, &buf, 1);
        if (n == 0) {
            /* Nothing buffered: wait for the socket, bounded by the deadline. */
            double left = deadline - now_s();
            cr_assert(left > 0, "no pgoutput Insert within %d s", WAIT_S);
            fd_set rd;
            FD_ZERO(&rd);
            FD_SET(PQsocket(repl), &rd);
            struct timeval tv = { .tv_sec = (long)left, .tv_usec = 100000 };
            int s = select(PQsocket(repl) + 1, &rd, NULL, NULL, &tv);
            cr_assert(s >= 0 || errno == EINTR, "select: %s", strerror(errno));
            cr_assert(PQconsumeInput(repl) == 1, "PQconsumeInput: %s", PQerrorMessage(repl));
            continue;
        }
        cr_assert(n > 0, "replication stream ended (%d): %s", n, PQerrorMessage(repl));

        struct cur c = { (const unsigned char *)buf, (const unsigned char *)buf + n };
        uint8_t kind = get8(&c);
        if (kind == 'k') {
            /* Primary keepalive: walEnd, sendTime, replyRequested. */
            need(&c, 17);
            if (c.p[16])
                standby_status();
        } else if (kind == 'w') {
            /* XLogData: dataStart, walEnd, sendTime, then one pgoutput message. */
            need(&c, 24);
            c.p += 24;
            uint8_t tag = get8(&c);
            if (tag == 'B') {
                saw_begin = 1;
            } else if (tag == 'R') {
                /* Relation: oid, namespace, name, replica identity, columns. */
                uint32_t oid = get32(&c);
                const char *nsp = getstr(&c);
                const char *rel = getstr(&c);
                cr_assert_str_eq(nsp, "public");
                cr_assert_str_eq(rel, table, "relation %s, expected %s", rel, table);
                get8(&c);
                cr_assert_eq(get16(&c), 2, "relation %s should have 2 columns", rel);
                relid = oid;
                saw_relation = 1;
            } else if (tag == 'I') {
                /* Insert: relation oid, 'N', TupleData. */
                uint32_t oid = get32(&c);
                cr_assert(saw_begin && saw_relation, "Insert before Begin/Relation");
                cr_assert_eq(oid, relid, "Insert for relation %u, expected %u", oid, relid);
                cr_assert_eq(get8(&c), 'N');
                uint16_t ncols = get16(&c);
                cr_assert_eq(ncols, 2, "tuple has %u columns", (unsigned)ncols);
                char cols[2][256];
                for (int i = 0; i < 2; i++) {
                    cr_assert_eq(get8(&c), 't', "column %d is not sent as text", i);
                    uint32_t len = get32(&c);
                    need(&c, len);
                    cr_assert_lt(len, sizeof cols[i], "column %d too long", i);
                    memcpy(cols[i], c.p, len);
                    cols[i][len] = '\0';
                    c.p += len;
                }
                cr_assert_str_eq(cols[0], "42");
                cr_assert_str_eq(cols[1], value, "streamed value '%s', inserted '%s'", cols[1],
                                 value);
                saw_insert = 1;
            }
        } else {
            cr_assert_fail("unexpected CopyData message '%c'", kind);
        }
        PQfreemem(buf);
    }
    cr_assert(saw_insert);
}
