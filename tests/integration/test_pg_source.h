/* Helpers shared by the Postgres source tests (test_pg_source*.c): a
 * blocking libpq connection for setup and checks, unique names per test,
 * a config with the pg_record handler (which appends every record it
 * sees to a JSON-lines file), `sluice run` children and cleanup of the
 * slots and publications a test made (a slot left behind holds WAL). */
#ifndef SLUICE_TEST_PG_SOURCE_H
#define SLUICE_TEST_PG_SOURCE_H

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "sluice/log.h"

#include "harness.h"

static char root[1024], tdir[256], out_path[320], names[64];
static char dsn[512];
static PGconn *db;
static int name_seq;
static pid_t kids[8];                  /* sluice children still running */
static char drop_tables[512];          /* what pg_cleanup drops */
static const char *server_extra = "";  /* more of pg_config's server block: ", region: x" */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static PGconn *connect_db(const char *conninfo)
{
    double deadline = now_ms() + 30000;

    for (;;) {
        PGconn *c = PQconnectdb(conninfo);
        if (PQstatus(c) == CONNECTION_OK)
            return c;
        if (now_ms() > deadline) {
            char where[512];

            sl_log_redact(conninfo, where, sizeof(where));
            cr_assert_fail("cannot connect to %s: %s", where, PQerrorMessage(c));
        }
        PQfinish(c);
        usleep(200000);
    }
}

/* Run SQL (printf-style); fails the test on an error. */
static void sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql(const char *fmt, ...)
{
    char q[8192];
    va_list ap;
    PGresult *r;

    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    r = PQexec(db, q);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
}

/* First column of the first row, malloc'd, or NULL (no row, NULL, error). */
static char *sql_value(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sql_value(const char *fmt, ...)
{
    char q[4096], *v = NULL;
    va_list ap;
    PGresult *r;

    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    r = PQexec(db, q);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void pg_setup(void)
{
    const char *env = getenv("SLUICE_TEST_PG");
    char rt[1100];

    cr_assert(env && *env, "SLUICE_TEST_PG is not set: run tests/services start and "
              "eval \"$(tests/services env)\"");
    snprintf(dsn, sizeof(dsn), "%s", env);
    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(rt, sizeof(rt), "%s/runtime", root);
    setenv("SLUICE_RUNTIME_DIR", rt, 1);
    snprintf(names, sizeof(names), "tpg%d_%d", (int)getpid(), ++name_seq);
    snprintf(tdir, sizeof(tdir), "/tmp/sluice-test-pg-%s", names);
    mkdir(tdir, 0755);
    chmod(tdir, 01777); /* the relaxed handler (its function's uid) writes here */
    snprintf(out_path, sizeof(out_path), "%s/out.jsonl", tdir);
    unlink(out_path);
    drop_tables[0] = '\0';
    db = connect_db(dsn);
    sql("SET client_min_messages = warning");
}

/* `sluice run cfg` as a child that pg_cleanup kills if the test ends first. */
static pid_t run_sluice(const char *cfg, const char *log)
{
    char deflog[300];
    pid_t pid;

    snprintf(deflog, sizeof(deflog), "%s/sluice.log", tdir);
    pid = th_run_sluice(root, cfg, log && strcmp(log, "/dev/null") != 0 ? log : deflog);

    for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
        if (kids[i] <= 0) {
            kids[i] = pid;
            break;
        }
    return pid;
}

static void forget(pid_t pid)
{
    for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
        if (kids[i] == pid)
            kids[i] = 0;
}

/* Stop leftover children, then drop the slot (once no walsender holds
 * it), the publication, the snapshot state row and the tables in
 * drop_tables (comma-separated). Runs at the end of each test and again
 * from .fini, where it finds nothing left after a passing test. */
static void pg_cleanup(void)
{
    char cmd[400];
    const char *tables = drop_tables;
    double deadline = now_ms() + 15000;

    for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
        if (kids[i] > 0) {
            int st;
            kill(kids[i], SIGKILL);
            waitpid(kids[i], &st, 0);
            kids[i] = 0;
        }
    if (!db)
        return;
    /* under SANITIZE=1, a report in any sluice log fails the test */
    snprintf(cmd, sizeof(cmd), "cat '%s'/*.log 2>/dev/null | grep -qE "
             "'AddressSanitizer|LeakSanitizer|runtime error:'", tdir);
    if (system(cmd) == 0) {
        PQfinish(db);
        db = NULL;
        cr_assert_fail("sanitizer report in a sluice log under %s", tdir);
    }
    for (;;) {
        char *active = sql_value("SELECT active FROM pg_replication_slots WHERE slot_name = "
                                 "'%s'", names);
        bool busy = active && strcmp(active, "t") == 0;
        free(active);
        if (!busy || now_ms() > deadline)
            break;
        usleep(100000);
    }
    free(sql_value("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   "WHERE slot_name = '%s'", names));
    free(sql_value("SELECT 1 FROM (SELECT 1) x WHERE false"));
    PQclear(PQexec(db, "SET client_min_messages = warning"));
    {
        char q[600];
        snprintf(q, sizeof(q), "DROP PUBLICATION IF EXISTS %s", names);
        PQclear(PQexec(db, q));
        snprintf(q, sizeof(q), "DELETE FROM sluice_snapshot_state WHERE slot_name = '%s'", names);
        PQclear(PQexec(db, q));
        if (tables && *tables) {
            snprintf(q, sizeof(q), "DROP TABLE IF EXISTS %s", tables);
            PQclear(PQexec(db, q));
        }
    }
    PQfinish(db);
    db = NULL;
    th_scan_logs(tdir);
    if (strncmp(tdir, "/tmp/sluice-test-pg-", 20) == 0 && !getenv("SLUICE_TEST_KEEP")) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

/* A config for one postgres source named after the test (slot and
 * publication too), delivering to pg_record; `extra` is YAML for the
 * source block (each line indented by 4). Returns the file's path. */
static __attribute__((unused)) const char *pg_config(const char *file, int port, const char *tables, const char *extra,
                             const char *fn_extra, const char *conninfo)
{
    static char path[400];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tdir, file);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  rec:\n"
            "    handler: %s/%s/test-handlers/pg_record\n"
            "    sandbox: relaxed\n"
            "    memory_mb: 1769\n"
            "    timeout_s: 30\n"
            "    environment: { PG_OUT: %s%s }\n"
            "sources:\n"
            "  %s:\n"
            "    type: postgres\n"
            "    function: rec\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [%s]\n"
            "%s"
            "server: { listen: 127.0.0.1:%d, data_dir: %s/data-%d%s }\n"
            "log: { level: info }\n",
            root, th_build(), out_path, fn_extra ? fn_extra : "", names,
            conninfo ? conninfo : dsn, names, names, tables, extra ? extra : "", port, tdir,
            port, server_extra);
    fclose(f);
    return path;
}

/* The slot is being streamed (a walsender holds it). */
/* Streamed by a WAL sender. `active` alone is not enough: a slot is active
 * while its creating backend waits for other sessions' transactions to
 * end, and a change committed before its consistent point is, rightly,
 * never streamed. */
static bool slot_active(void)
{
    char *v = sql_value("SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r "
                        "ON r.pid = s.active_pid WHERE s.slot_name = '%s'", names);
    bool a = v != NULL;
    free(v);
    return a;
}

static void wait_streaming(pid_t pid, int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;

    while (!slot_active()) {
        int st;
        cr_assert(waitpid(pid, &st, WNOHANG) == 0, "sluice exited before streaming");
        cr_assert_lt(now_ms(), deadline, "slot %s not streamed after %d ms", names, timeout_ms);
        usleep(50000);
    }
}

static size_t count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int c;

    if (!f)
        return 0;
    while ((c = getc_unlocked(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static __attribute__((unused)) void wait_lines(size_t n, int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    size_t have;

    while ((have = count_lines(out_path)) < n) {
        cr_assert_lt(now_ms(), deadline, "only %zu of %zu records after %d ms", have, n,
                     timeout_ms);
        usleep(50000);
    }
}

/* Call `fn` with each record the handler saw, in the order it saw them. */
static __attribute__((unused)) size_t each_record(void (*fn)(json_t *rec, void *arg), void *arg)
{
    FILE *f = fopen(out_path, "r");
    char *line = NULL;
    size_t cap = 0, n = 0;

    if (!f)
        return 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        cr_assert_not_null(r, "handler wrote a line that is not JSON: %s", line);
        fn(r, arg);
        json_decref(r);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

/* A DynamoDB AttributeValue's N as an integer (-1 when it is not one). */
static __attribute__((unused)) long long av_int(json_t *img, const char *col)
{
    const char *n = json_string_value(json_object_get(json_object_get(img, col), "N"));

    return n ? strtoll(n, NULL, 10) : -1;
}

/* A DynamoDB AttributeValue's S, or NULL. */
static __attribute__((unused)) const char *av_str(json_t *img, const char *col)
{
    return json_string_value(json_object_get(json_object_get(img, col), "S"));
}

/* A record's dynamodb.<field>. */
static __attribute__((unused)) json_t *ddb(json_t *rec, const char *field)
{
    return json_object_get(json_object_get(rec, "dynamodb"), field);
}

static __attribute__((unused)) const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void stop_sluice(pid_t pid)
{
    int st;
    double deadline = now_ms() + 20000;

    if (pid <= 0)
        return;
    forget(pid);
    kill(pid, SIGTERM);
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        usleep(50000);
    }
}

static __attribute__((unused)) void kill_sluice(pid_t pid)
{
    int st;

    forget(pid);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

static __attribute__((unused)) bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;

    if (!f)
        return false;
    while (!found && getline(&line, &cap, f) > 0)
        found = strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return found;
}

#endif
