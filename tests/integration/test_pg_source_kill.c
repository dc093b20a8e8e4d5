/* The Postgres source when things die: sluice SIGKILLed three times
 * during a 100,000-change run (every change processed at least once; the
 * duplicates are counted and printed), and Postgres itself restarted in
 * the middle of a stream (a private instance from tests/services, so the
 * shared one is never disturbed): the stream resumes and every change
 * arrives. */
#include "test_pg_source.h"

static char priv_dir[200];

static void fini(void)
{
    pg_cleanup();
    if (priv_dir[0]) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR='%s' tests/services stop >/dev/null 2>&1; "
                 "rm -f '%s.lock'", priv_dir, priv_dir);
        if (system(cmd) != 0) {
            /* nothing to stop */
        }
        priv_dir[0] = '\0';
    }
}

TestSuite(pg_source_kill, .timeout = 175);

struct count {
    unsigned char *seen;
    size_t max, distinct, dups, records;
};

static void tally(json_t *r, void *arg)
{
    struct count *c = arg;
    long long id = av_int(ddb(r, "Keys"), "id");

    c->records++;
    if (id < 1 || (size_t)id > c->max)
        return;
    if (c->seen[id]++ == 0)
        c->distinct++;
    else
        c->dups++;
    if (c->seen[id] == 0)
        c->seen[id] = 255;
}

static size_t distinct_now(size_t max, struct count *c)
{
    memset(c->seen, 0, max + 1);
    c->max = max;
    c->distinct = c->dups = c->records = 0;
    each_record(tally, c);
    return c->distinct;
}

/* A child inserting ids [from, from + txns * per) in `txns` transactions. */
static pid_t inserter(const char *conninfo, const char *qual, int from, int txns, int per,
                      int pause_us)
{
    pid_t pid = fork();

    if (pid == 0) {
        PGconn *c = PQconnectdb(conninfo);
        char q[300];

        for (int t = 0; t < txns; t++) {
            int a = from + t * per;
            snprintf(q, sizeof(q), "INSERT INTO %s SELECT g, 'v' || g FROM generate_series(%d, "
                     "%d) g", qual, a, a + per - 1);
            for (;;) {
                PGresult *r = PQexec(c, q);
                bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
                PQclear(r);
                if (ok)
                    break;
                /* the server is restarting: try again on a new connection */
                usleep(200000);
                PQreset(c);
            }
            if (pause_us)
                usleep((useconds_t)pause_us);
        }
        PQfinish(c);
        _exit(0);
    }
    return pid;
}

Test(pg_source_kill, sigkill_three_times_in_100000_changes, .fini = fini)
{
    char qual[120], log[300];
    const char *cfg;
    struct count c = { 0 };
    size_t marks[] = { 15000, 45000, 75000 };
    pid_t pid, w;
    int st, kills = 0;
    double deadline;
    size_t printed = 0;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_kill", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    snprintf(log, sizeof(log), "%s/sluice.log", tdir);
    sql("CREATE TABLE %s (id int PRIMARY KEY, v text)", qual);
    cfg = pg_config("c.yaml", th_free_port(), qual, "    batch_size: 500\n", NULL, NULL);
    c.seen = calloc(100001, 1);
    pid = run_sluice(cfg, log);
    wait_streaming(pid, 20000);
    /* 100 transactions of 1,000 rows, spread over about ten seconds */
    w = inserter(dsn, qual, 1, 100, 1000, 80000);
    deadline = now_ms() + 150000;
    /* kill at record counts (cheap to watch), then wait for every change */
    while (kills < 3) {
        size_t have = count_lines(out_path);
        if (have >= marks[kills]) {
            kill_sluice(pid);
            kills++;
            cr_log_info("SIGKILL %d at %zu records", kills, have);
            pid = run_sluice(cfg, log);
        }
        cr_assert_lt(now_ms(), deadline, "only %zu records after 150 s (%d kills)", have, kills);
        usleep(10000);
    }
    while (distinct_now(100000, &c) < 100000) {
        cr_assert_lt(now_ms(), deadline, "only %zu of 100000 changes after 150 s", c.distinct);
        usleep(200000);
    }
    waitpid(w, &st, 0);
    stop_sluice(pid);
    cr_assert_eq(kills, 3, "sluice was killed three times during the run");
    distinct_now(100000, &c);
    fprintf(stderr, "pg kill test: %zu records for 100000 changes: %zu duplicates after 3 "
            "SIGKILLs\n", c.records, c.dups);
    for (size_t id = 1; id <= 100000 && printed < 20; id++)
        if (c.seen[id] > 1) {
            fprintf(stderr, "  id %zu delivered %d times\n", id, c.seen[id]);
            printed++;
        }
    cr_assert_eq(c.distinct, 100000, "every change processed at least once");
    free(c.seen);
    pg_cleanup();
}

Test(pg_source_kill, postgres_restarted_mid_stream, .fini = fini)
{
    char qual[120], log[300], cmd[600], conninfo[300], portfile[300], pw[128];
    struct count c = { 0 };
    const char *cfg;
    FILE *f;
    int port = 0, st;
    pid_t pid, w;
    double deadline;

    pg_setup();
    snprintf(priv_dir, sizeof(priv_dir), "/tmp/sluice-pg-priv-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR='%s' tests/services start pg >/dev/null",
             priv_dir);
    cr_assert_eq(system(cmd), 0, "cannot start a private postgres");
    snprintf(portfile, sizeof(portfile), "%s/pg/port", priv_dir);
    f = fopen(portfile, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%d", &port), 1);
    fclose(f);
    snprintf(portfile, sizeof(portfile), "%s/pg/password", priv_dir);
    f = fopen(portfile, "r");
    cr_assert_not_null(f, "tests/services left no password in %s", portfile);
    cr_assert_eq(fscanf(f, "%127s", pw), 1);
    fclose(f);
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=postgres password=%s dbname=sluice", port, pw);
    /* everything below talks to the private server */
    PQfinish(db);
    db = connect_db(conninfo);
    snprintf(dsn, sizeof(dsn), "%s", conninfo);
    snprintf(qual, sizeof(qual), "public.%s_restart", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    snprintf(log, sizeof(log), "%s/sluice.log", tdir);
    sql("CREATE TABLE %s (id int PRIMARY KEY, v text)", qual);
    cfg = pg_config("c.yaml", th_free_port(), qual, "    batch_size: 200\n", NULL, conninfo);
    c.seen = calloc(20001, 1);
    pid = run_sluice(cfg, log);
    wait_streaming(pid, 20000);
    w = inserter(conninfo, qual, 1, 40, 500, 100000);
    deadline = now_ms() + 30000;
    while (distinct_now(20000, &c) < 3000) {
        cr_assert_lt(now_ms(), deadline, "the stream did not start");
        usleep(50000);
    }
    snprintf(cmd, sizeof(cmd), "SLUICE_SERVICES_DIR='%s' tests/services restart pg >/dev/null",
             priv_dir);
    cr_assert_eq(system(cmd), 0, "cannot restart the private postgres");
    cr_log_info("postgres restarted at %zu changes", c.distinct);
    waitpid(w, &st, 0);
    PQreset(db);
    deadline = now_ms() + 90000;
    while (distinct_now(20000, &c) < 20000) {
        cr_assert_lt(now_ms(), deadline, "only %zu of 20000 changes 90 s after the restart",
                     c.distinct);
        usleep(200000);
    }
    fprintf(stderr, "pg restart test: %zu records for 20000 changes (%zu duplicates)\n",
            c.records, c.dups);
    {
        char grep[500];
        snprintf(grep, sizeof(grep), "test $(grep -c 'streaming slot' '%s') -ge 2", log);
        cr_assert_eq(system(grep), 0, "sluice streamed again after the restart");
    }
    stop_sluice(pid);
    free(c.seen);
    pg_cleanup();
    fini();
}
