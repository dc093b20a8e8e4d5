/* bench postgres: row changes per second through a Postgres change-stream
 * source, end to end.
 *
 * A private Postgres from tests/services (its own directory, so the shared
 * one used by tests is not disturbed) gets a table and a publication, then
 * four logical slots created in one statement (so all start at the same
 * point), then N = 1,000,000 single-row inserts
 * committed in 1,000 transactions of 1,000 rows, then a transactional
 * logical message "bench-end". Nothing is timed until here.
 *
 * Baseline: pg_recvlogical reading a slot with pgoutput
 * (proto_version 1, the publication, binary, messages) and writing the
 * stream to a pipe this program drains without looking at it until the
 * end marker shows up: the fastest a client can take the stream.
 *
 * sluice: `sluice run` with a `type: postgres` source on another slot
 * (batch_size 1,000) and the no-op C handler tests/handlers/pg_record.c
 * (no PG_OUT: it answers {} at once) in its sandbox; timed from the start
 * of the process until the slot's confirmed_flush_lsn passed the end of
 * the last transaction, so every change was read, decoded, shaped into a
 * DynamoDB-Streams record, invoked and flushed. Two rounds alternate the
 * two (a fresh slot each time) and the best of each side is compared, as
 * the machine is shared. Target: ratio >= 0.9.
 *
 * Image formats: the BENCH line measures the default, DynamoDB
 * AttributeValue images (`image_format: attribute_values`); each round
 * also runs sluice with `image_format: json` (plain images) on a slot of
 * its own and prints its rate and ratio on a line before the BENCH line.
 * BENCH_PG_IMAGE_FORMAT=json swaps the two (the BENCH line is then json).
 *
 * The temporary directory (/tmp/sluice-bench-pg-XXXXXX, with the server's
 * and sluice's logs) is removed on success, kept and named on failure. */
#include <libpq-fe.h>
#include <poll.h>
#include <sys/stat.h>

#include "srcbench.h"

#define NAME  "postgres"
#define TXNS  1000
#define ROWS  1000
#define N     (TXNS * ROWS)
#define BATCH 1000
#define ROUNDS 2

/* The run: pg_recvlogical is its aux child. */
static struct sb_bench sb;

static void services(const char *what)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR=%s/services tests/services %s >>%s/services.log 2>&1",
             sb.dir, what, sb.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench %s: tests/services %s failed (see %s/services.log)\n", NAME, what,
                sb.dir);
}

/* sb_fail, and the private postgres stopped. */
static int fail(const char *what)
{
    sb_fail(&sb, what);
    services("stop");
    return 1;
}

static bool exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        fprintf(stderr, "bench %s: %s: %s", NAME, sql, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

static bool value(PGconn *c, const char *sql, char *out, size_t n)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0);

    if (ok)
        snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok;
}

/* pg_recvlogical into a pipe, until the end marker went through it. */
static double baseline(const char *dsn, const char *slot)
{
    int fds[2];
    char buf[1 << 16], tail[16] = { 0 };
    const char *marker = "bench-end";
    double t0;
    bool seen = false;

    if (pipe(fds) != 0)
        return -1;
    t0 = now_us();
    sb.aux = fork();
    if (sb.aux == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp("pg_recvlogical", "pg_recvlogical", "-d", dsn, "--slot", slot, "--start",
               "-o", "proto_version=1", "-o", "publication_names=bench_pub", "-o", "binary=true",
               "-o", "messages=true", "-f", "-", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (!seen) {
        struct pollfd p = { .fd = fds[0], .events = POLLIN };
        ssize_t n;
        char scan[sizeof(tail) + sizeof(buf)];
        size_t tl = strlen(tail);

        if (poll(&p, 1, 120000) <= 0)
            break;
        n = read(fds[0], buf, sizeof(buf));
        if (n <= 0)
            break;
        /* the marker may straddle two reads: keep the last bytes */
        memcpy(scan, tail, tl);
        memcpy(scan + tl, buf, (size_t)n);
        seen = memmem(scan, tl + (size_t)n, marker, strlen(marker)) != NULL;
        {
            size_t keep = (size_t)n < sizeof(tail) - 1 ? (size_t)n : sizeof(tail) - 1;
            memcpy(tail, buf + n - keep, keep);
            tail[keep] = '\0';
            for (size_t i = 0; i < keep; i++)
                if (!tail[i])
                    tail[i] = ' ';
        }
    }
    {
        double secs = (now_us() - t0) / 1e6;
        sb_reap(&sb.aux, SIGTERM);
        close(fds[0]);
        return seen ? N / secs : -1;
    }
}

struct flushed {
    PGconn *c;
    char    q[256];  /* true once the slot's confirmed_flush_lsn passed the end */
};

static bool slot_flushed(void *arg)
{
    struct flushed *f = arg;
    char v[16];

    return value(f->c, f->q, v, sizeof(v)) && strcmp(v, "t") == 0;
}

static double through_sluice(PGconn *c, const char *dsn, const char *slot, const char *end_lsn,
                             const char *images)
{
    struct flushed f = { .c = c };
    double secs;

    if (sb_config(&sb, "memory_mb: 1769", "postgres",
                  "    dsn: \"%s\"\n    slot: %s\n    publication: bench_pub\n"
                  "    batch_size: %d\n    image_format: %s\n",
                  dsn, slot, BATCH, images) != 0)
        return -1;
    snprintf(f.q, sizeof(f.q), "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM "
             "pg_replication_slots WHERE slot_name = '%s'", end_lsn, slot);
    secs = sb_run_sluice(&sb, slot_flushed, &f, 20, 300);
    return secs > 0 ? N / secs : -1;
}

int main(void)
{
    char dsn[320], path[128], end_lsn[64], fill[256], pw[128];
    double base, mine, other, t0;
    const char *env = getenv("BENCH_PG_IMAGE_FORMAT");
    const char *images = env && strcmp(env, "json") == 0 ? "json" : "attribute_values";
    const char *images2 = strcmp(images, "json") == 0 ? "attribute_values" : "json";
    int port = 0;
    FILE *f;
    PGconn *c;

    if (sb_open(&sb, NAME, "pg", "pg_record") != 0)
        return 1;
    if (chmod(sb.dir, 0755) != 0) /* the server runs as user postgres */
        return sb_fail(&sb, "cannot make the temporary directory readable");
    services("start pg");
    snprintf(path, sizeof(path), "%s/services/pg/port", sb.dir);
    f = fopen(path, "r");
    if (!f || fscanf(f, "%d", &port) != 1)
        return fail("the private postgres did not start");
    fclose(f);
    /* tests/services gives the server a password, kept beside its port */
    snprintf(path, sizeof(path), "%s/services/pg/password", sb.dir);
    f = fopen(path, "r");
    if (!f || !fgets(pw, sizeof(pw), f))
        return fail("the private postgres has no password file");
    fclose(f);
    pw[strcspn(pw, "\r\n")] = '\0';
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d user=postgres dbname=sluice password=%s",
             port, pw);
    c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        return fail("cannot connect to the private postgres");
    if (!exec_ok(c, "CREATE TABLE bench (id int PRIMARY KEY, v text)") ||
        !exec_ok(c, "CREATE PUBLICATION bench_pub FOR TABLE bench") ||
        !exec_ok(c, "SELECT pg_create_logical_replication_slot(s, 'pgoutput') FROM "
                    "unnest(ARRAY['base_1', 'sluice_1', 'other_1', 'base_2', 'sluice_2', "
                    "'other_2']) s"))
        return fail("setup failed");
    t0 = now_us();
    snprintf(fill, sizeof(fill),
             "DO $$ BEGIN FOR t IN 0..%d LOOP INSERT INTO bench SELECT g, 'row ' || g FROM "
             "generate_series(t * %d + 1, (t + 1) * %d) g; COMMIT; END LOOP; END $$",
             TXNS - 1, ROWS, ROWS);
    if (!exec_ok(c, fill) ||
        !exec_ok(c, "SELECT pg_logical_emit_message(true, 'bench-end', 'x')") ||
        !value(c, "SELECT pg_current_wal_lsn()::text", end_lsn, sizeof(end_lsn)))
        return fail("cannot write the rows");
    printf("%s: %d rows in %d transactions written in %.1f s\n", NAME, N, TXNS,
           (now_us() - t0) / 1e6);

    /* two rounds, alternating, each on its own slot: the best of each side
     * (the machine is shared and noisy) */
    base = mine = other = 0;
    for (int round = 1; round <= ROUNDS; round++) {
        char slot[32];
        double b, m, o;

        snprintf(slot, sizeof(slot), "base_%d", round);
        b = baseline(dsn, slot);
        if (b <= 0)
            return fail("pg_recvlogical did not reach the end of the stream");
        snprintf(slot, sizeof(slot), "sluice_%d", round);
        m = through_sluice(c, dsn, slot, end_lsn, images);
        if (m <= 0)
            return fail("sluice did not flush the slot to the end: see sluice.log");
        snprintf(slot, sizeof(slot), "other_%d", round);
        o = through_sluice(c, dsn, slot, end_lsn, images2);
        if (o <= 0)
            return fail("sluice did not flush the slot to the end: see sluice.log");
        printf("%s: round %d: pg_recvlogical (pgoutput, binary, to a pipe) %.0f changes/s, "
               "sluice (batch %d, no-op C handler, image_format %s) %.0f changes/s, "
               "(image_format %s) %.0f changes/s\n", NAME, round, b, BATCH, images, m, images2, o);
        base = b > base ? b : base;
        mine = m > mine ? m : mine;
        other = o > other ? o : other;
    }
    PQfinish(c);
    services("stop");
    printf("%s: image_format %s: %.0f changes/s, ratio %.2f to pg_recvlogical (not the BENCH "
           "line; BENCH_PG_IMAGE_FORMAT=%s makes it so)\n", NAME, images2, other,
           base > 0 ? other / base : 0, images2);
    sb_report(&sb, mine, "changes/s", "pg_recvlogical", base);
    return 0;
}
