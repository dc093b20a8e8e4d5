/* The Postgres change-stream source against the real Postgres from
 * tests/services: the DynamoDB-Streams record shape for insert, update and
 * delete over the common types with `image_format: json` (a TRUNCATE is
 * not delivered; AttributeValue images are test_pg_lambda's); REPLICA
 * IDENTITY DEFAULT and
 * FULL images; an unchanged TOASTed column; a 100,000-row transaction;
 * filtering with the flush position still moving; a standby instance
 * taking over within 10 s of the holder's SIGKILL; the initial snapshot
 * with concurrent writes, every row's final state observed.
 *
 * Each test has its own tables, slot and publication (named after the
 * test process) and drops them at the end. Handler: tests/handlers/
 * pg_record.c, which appends every record it sees to a file. */
#include "test_pg_source.h"

static void fini(void)
{
    pg_cleanup();
}

TestSuite(pg_source, .timeout = 170);

/* ------------------------------------------------------------------ */

struct seen {
    json_t *recs[64];
    size_t  n;
};

static void keep(json_t *rec, void *arg)
{
    struct seen *s = arg;

    if (s->n < 64) {
        json_incref(rec);
        s->recs[s->n++] = rec;
    }
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->recs[i]);
}

/* Common checks of one record. */
static void check_shape(json_t *r, const char *event, const char *table, const char *view)
{
    json_t *t = ddb(r, "ApproximateCreationDateTime");
    long long now = (long long)time(NULL);

    cr_assert_str_eq(str(r, "eventName"), event);
    cr_assert_str_eq(str(r, "eventSource"), "aws:dynamodb");
    cr_assert_str_eq(str(r, "awsRegion"), "us-east-1");
    cr_assert(strncmp(str(r, "eventSourceARN"), "arn:aws:dynamodb:us-east-1:000000000000:table/",
                      46) == 0, "%s", str(r, "eventSourceARN"));
    cr_assert_str_eq(str(r, "eventVersion"), "1.1");
    cr_assert_not_null(str(r, "awsRegion"));
    cr_assert_str_eq(str(r, "tableName"), table);
    cr_assert(json_is_integer(json_object_get(r, "transactionId")));
    cr_assert(strstr(str(r, "eventSourceARN"), table) != NULL);
    cr_assert_eq(strlen(str(r, "eventID")), 32);
    cr_assert(json_is_integer(t) && llabs((long long)json_integer_value(t) - now) < 600,
              "ApproximateCreationDateTime is the commit time in epoch seconds");
    cr_assert_str_eq(json_string_value(ddb(r, "StreamViewType")), view);
    cr_assert(json_is_integer(ddb(r, "SizeBytes")) && json_integer_value(ddb(r, "SizeBytes")) > 0);
    cr_assert_eq(strlen(json_string_value(ddb(r, "SequenceNumber"))), 30);
}

Test(pg_source, types_and_events, .fini = fini)
{
    char table[96], qual[120], cfg_tables[120];
    struct seen s = { 0 };
    json_t *img;
    pid_t pid;

    pg_setup();
    snprintf(table, sizeof(table), "%s_types", names);
    snprintf(qual, sizeof(qual), "public.%s", table);
    snprintf(cfg_tables, sizeof(cfg_tables), "%s", qual);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY, big bigint, num numeric(12,3), flag bool, t text, "
        "vc varchar(20), j jsonb, by bytea, ts timestamptz, u uuid, ia int[], ta text[])", qual);
    /* image_format json: today's plain images (the AttributeValue default is
     * test_pg_lambda's); the record around them is the same */
    pid = run_sluice(pg_config("c.yaml", th_free_port(), cfg_tables, "    image_format: json\n",
                               NULL, NULL), "/dev/null");
    wait_streaming(pid, 20000);
    sql("INSERT INTO %s VALUES (1, 9007199254740993, 12345.678, true, 'h\xc3\xa9 \"q\"', 'v', "
        "'{\"a\":[1,2],\"b\":null}', '\\xdeadbeef', '2024-02-03 04:05:06.789+00', "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '{\"x\",\"y z\"}')", qual);
    sql("INSERT INTO %s (id) VALUES (2)", qual);
    sql("UPDATE %s SET t = 'changed', big = -5 WHERE id = 1", qual);
    sql("DELETE FROM %s WHERE id = 2", qual);
    sql("TRUNCATE %s", qual);
    sql("INSERT INTO %s (id) VALUES (3)", qual);
    wait_lines(5, 20000);
    stop_sluice(pid);
    each_record(keep, &s);
    cr_assert_eq(s.n, 5, "one record per change but the TRUNCATE, got %zu", s.n);

    check_shape(s.recs[0], "INSERT", qual, "NEW_AND_OLD_IMAGES");
    img = ddb(s.recs[0], "NewImage");
    cr_assert_eq(json_integer_value(json_object_get(img, "id")), 1);
    cr_assert_eq(json_integer_value(json_object_get(img, "big")), 9007199254740993LL);
    cr_assert(json_is_number(json_object_get(img, "num")));
    cr_assert_float_eq(json_number_value(json_object_get(img, "num")), 12345.678, 1e-9);
    cr_assert(json_is_true(json_object_get(img, "flag")));
    cr_assert_str_eq(str(img, "t"), "h\xc3\xa9 \"q\"");
    cr_assert_str_eq(str(img, "vc"), "v");
    cr_assert(json_is_array(json_object_get(json_object_get(img, "j"), "a")), "jsonb as JSON");
    cr_assert(json_is_null(json_object_get(json_object_get(img, "j"), "b")));
    cr_assert_str_eq(str(img, "by"), "3q2+7w==", "bytea as base64");
    cr_assert_str_eq(str(img, "ts"), "2024-02-03T04:05:06.789Z");
    cr_assert_str_eq(str(img, "u"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    cr_assert_eq(json_array_size(json_object_get(img, "ia")), 3);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(img, "ia"), 2)), 3);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(img, "ta"), 1)), "y z");
    cr_assert_eq(json_integer_value(json_object_get(ddb(s.recs[0], "Keys"), "id")), 1);
    cr_assert_null(ddb(s.recs[0], "OldImage"), "an INSERT has no OldImage");

    check_shape(s.recs[1], "INSERT", qual, "NEW_AND_OLD_IMAGES");
    img = ddb(s.recs[1], "NewImage");
    cr_assert(json_is_null(json_object_get(img, "big")) && json_is_null(json_object_get(img, "ta")) &&
              json_is_null(json_object_get(img, "j")), "NULLs are JSON null");
    cr_assert_eq(json_object_size(img), 12);

    check_shape(s.recs[2], "MODIFY", qual, "NEW_AND_OLD_IMAGES");
    cr_assert_str_eq(str(ddb(s.recs[2], "NewImage"), "t"), "changed");
    cr_assert_eq(json_integer_value(json_object_get(ddb(s.recs[2], "NewImage"), "big")), -5);
    img = ddb(s.recs[2], "OldImage");
    cr_assert_eq(json_object_size(img), 1, "REPLICA IDENTITY DEFAULT: the old row is its key");
    cr_assert_eq(json_integer_value(json_object_get(img, "id")), 1);

    check_shape(s.recs[3], "REMOVE", qual, "NEW_AND_OLD_IMAGES");
    cr_assert_null(ddb(s.recs[3], "NewImage"));
    cr_assert_eq(json_integer_value(json_object_get(ddb(s.recs[3], "Keys"), "id")), 2);
    cr_assert_eq(json_integer_value(json_object_get(ddb(s.recs[3], "OldImage"), "id")), 2);

    /* TRUNCATE is no DynamoDB event: the next record is the INSERT after it */
    check_shape(s.recs[4], "INSERT", qual, "NEW_AND_OLD_IMAGES");
    cr_assert_eq(json_integer_value(json_object_get(ddb(s.recs[4], "Keys"), "id")), 3);

    for (size_t i = 1; i < s.n; i++)
        cr_assert_gt(strcmp(json_string_value(ddb(s.recs[i], "SequenceNumber")),
                            json_string_value(ddb(s.recs[i - 1], "SequenceNumber"))), 0,
                     "SequenceNumbers grow in delivery order");
    seen_free(&s);
    pg_cleanup();
}

Test(pg_source, replica_identity_full_and_toast, .fini = fini)
{
    char full[120], toast[120], tables[260], extra[200];
    struct seen s = { 0 };
    json_t *old, *img, *cols;
    pid_t pid;

    pg_setup();
    snprintf(full, sizeof(full), "public.%s_full", names);
    snprintf(toast, sizeof(toast), "public.%s_toast", names);
    snprintf(tables, sizeof(tables), "%s, %s", full, toast);
    snprintf(drop_tables, sizeof(drop_tables), "%s", tables);
    sql("CREATE TABLE %s (id int PRIMARY KEY, name text, n int)", full);
    sql("ALTER TABLE %s REPLICA IDENTITY FULL", full);
    sql("CREATE TABLE %s (id int PRIMARY KEY, big text, n int)", toast);
    sql("ALTER TABLE %s ALTER COLUMN big SET STORAGE EXTERNAL", toast);
    snprintf(extra, sizeof(extra), "    batch_size: 10\n");
    pid = run_sluice(pg_config("c.yaml", th_free_port(), tables, extra, NULL, NULL),
                        "/dev/null");
    wait_streaming(pid, 20000);
    sql("INSERT INTO %s VALUES (1, 'before', 10)", full);
    sql("UPDATE %s SET name = 'after', n = 11 WHERE id = 1", full);
    sql("DELETE FROM %s WHERE id = 1", full);
    sql("INSERT INTO %s VALUES (7, repeat('x', 10000), 1)", toast);
    sql("UPDATE %s SET n = 2 WHERE id = 7", toast);
    wait_lines(5, 20000);
    stop_sluice(pid);
    each_record(keep, &s);
    cr_assert_eq(s.n, 5);

    /* FULL: the whole old row on MODIFY and REMOVE */
    cr_assert_str_eq(str(s.recs[1], "eventName"), "MODIFY");
    old = ddb(s.recs[1], "OldImage");
    cr_assert_str_eq(av_str(old, "name"), "before");
    cr_assert_eq(av_int(old, "n"), 10);
    cr_assert_str_eq(av_str(ddb(s.recs[1], "NewImage"), "name"), "after");
    cr_assert_str_eq(str(s.recs[2], "eventName"), "REMOVE");
    old = ddb(s.recs[2], "OldImage");
    cr_assert_str_eq(av_str(old, "name"), "after");
    cr_assert_eq(av_int(old, "n"), 11);
    cr_assert_eq(av_int(ddb(s.recs[2], "Keys"), "id"), 1);
    cr_assert_eq(json_object_size(ddb(s.recs[2], "Keys")), 1,
                 "FULL: Keys is the primary key, as DynamoDB's, not the whole row");
    cr_assert_eq(json_object_size(ddb(s.recs[1], "Keys")), 1);

    /* TOAST: the unchanged big value is not sent, and not invented */
    img = ddb(s.recs[3], "NewImage");
    cr_assert_eq(strlen(av_str(img, "big")), 10000);
    cr_assert_str_eq(str(s.recs[4], "eventName"), "MODIFY");
    img = ddb(s.recs[4], "NewImage");
    cr_assert_eq(av_int(img, "n"), 2);
    cr_assert_null(json_object_get(img, "big"), "an unchanged TOAST value is left out");
    cols = json_object_get(s.recs[4], "unchangedToastColumns");
    cr_assert_eq(json_array_size(cols), 1);
    cr_assert_str_eq(json_string_value(json_array_get(cols, 0)), "big");
    seen_free(&s);
    pg_cleanup();
}

/* ------------------------------------------------------------------ */

struct bulk {
    unsigned char *ids;   /* times each id was seen */
    size_t         max, records, distinct, dups;
    char           commit[32];
    bool           one_commit;
    char           last_seq[40];
    bool           ordered;
};

static void tally(json_t *r, void *arg)
{
    struct bulk *b = arg;
    const char *seq = json_string_value(ddb(r, "SequenceNumber"));
    long long v = av_int(ddb(r, "Keys"), "id");

    b->records++;
    if (v >= 1 && (size_t)v <= b->max) {
        if (b->ids[v] == 0)
            b->distinct++;
        else
            b->dups++;
        if (b->ids[v] < 255)
            b->ids[v]++;
    }
    if (!b->commit[0])
        snprintf(b->commit, sizeof(b->commit), "%s", str(r, "commitLsn"));
    else if (strcmp(b->commit, str(r, "commitLsn")) != 0)
        b->one_commit = false;
    if (seq && strcmp(seq, b->last_seq) <= 0)
        b->ordered = false;
    snprintf(b->last_seq, sizeof(b->last_seq), "%s", seq ? seq : "");
}

Test(pg_source, transaction_of_100000_rows, .fini = fini)
{
    char qual[120];
    struct bulk b = { .max = 100000, .one_commit = true, .ordered = true };
    double t0;
    char *lsn, *flushed_ok;
    pid_t pid;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_bulk", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY, v text)", qual);
    pid = run_sluice(pg_config("c.yaml", th_free_port(), qual, "    batch_size: 1000\n",
                                        NULL, NULL), "/dev/null");
    wait_streaming(pid, 20000);
    t0 = now_ms();
    sql("INSERT INTO %s SELECT g, 'row ' || g FROM generate_series(1, 100000) g", qual);
    lsn = sql_value("SELECT pg_current_wal_lsn()::text");
    wait_lines(100000, 120000);
    cr_log_info("100,000-row transaction delivered in %.1f s", (now_ms() - t0) / 1000);
    b.ids = calloc(b.max + 1, 1);
    each_record(tally, &b);
    cr_assert_eq(b.distinct, 100000, "every row of the transaction, once");
    cr_assert_eq(b.dups, 0);
    cr_assert(b.one_commit, "all from one transaction");
    cr_assert(b.ordered, "SequenceNumbers unique and growing");
    /* everything is final: the slot is flushed past the commit */
    {
        double deadline = now_ms() + 15000;
        for (;;) {
            flushed_ok = sql_value("SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM "
                                   "pg_replication_slots WHERE slot_name = '%s'", lsn, names);
            if (flushed_ok && strcmp(flushed_ok, "t") == 0)
                break;
            free(flushed_ok);
            cr_assert_lt(now_ms(), deadline, "the slot was not flushed past the transaction");
            usleep(100000);
        }
        free(flushed_ok);
    }
    stop_sluice(pid);
    free(b.ids);
    free(lsn);
    pg_cleanup();
}

Test(pg_source, filtered_changes_are_final, .fini = fini)
{
    char qual[120], extra[300];
    struct seen s = { 0 };
    char *lsn, *ok = NULL;
    pid_t pid;
    double deadline;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_filt", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY, kind text)", qual);
    snprintf(extra, sizeof(extra),
             "    filter_criteria:\n"
             "      - { eventName: [INSERT], dynamodb: { NewImage: { kind: { S: [keep] } } } }\n");
    pid = run_sluice(pg_config("c.yaml", th_free_port(), qual, extra, NULL, NULL),
                        "/dev/null");
    wait_streaming(pid, 20000);
    for (int i = 1; i <= 10; i++)
        sql("INSERT INTO %s VALUES (%d, '%s')", qual, i, i % 2 ? "keep" : "drop");
    sql("UPDATE %s SET kind = 'keep' WHERE id = 2", qual);
    lsn = sql_value("SELECT pg_current_wal_lsn()::text");
    wait_lines(5, 20000);
    deadline = now_ms() + 15000;
    for (;;) {
        ok = sql_value("SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
                       "WHERE slot_name = '%s'", lsn, names);
        if (ok && strcmp(ok, "t") == 0)
            break;
        free(ok);
        cr_assert_lt(now_ms(), deadline, "filtered changes held the flush position back");
        usleep(100000);
    }
    free(ok);
    stop_sluice(pid);
    each_record(keep, &s);
    cr_assert_eq(s.n, 5, "only the INSERTs of kind keep, got %zu", s.n);
    for (size_t i = 0; i < s.n; i++) {
        cr_assert_str_eq(str(s.recs[i], "eventName"), "INSERT");
        cr_assert_str_eq(av_str(ddb(s.recs[i], "NewImage"), "kind"), "keep");
    }
    seen_free(&s);
    free(lsn);
    pg_cleanup();
}

/* ------------------------------------------------------------------ */

Test(pg_source, standby_takes_over_within_10s, .fini = fini)
{
    char qual[120], loga[300], logb[300];
    const char *cfg;
    pid_t a, b;
    double t0, took;
    int pa = th_free_port(), pb;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_ha", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY)", qual);
    snprintf(loga, sizeof(loga), "%s/a.log", tdir);
    snprintf(logb, sizeof(logb), "%s/b.log", tdir);
    cfg = pg_config("a.yaml", pa, qual, NULL, NULL, NULL);
    a = run_sluice(cfg, loga);
    wait_streaming(a, 20000);
    do
        pb = th_free_port();
    while (pb == pa);
    cfg = pg_config("b.yaml", pb, qual, NULL, NULL, NULL);
    b = run_sluice(cfg, logb);
    t0 = now_ms();
    while (!file_has(logb, "standing by")) {
        cr_assert_lt(now_ms() - t0, 20000, "the second instance never stood by");
        usleep(50000);
    }
    sql("INSERT INTO %s VALUES (1)", qual);
    wait_lines(1, 20000);
    kill_sluice(a);
    t0 = now_ms();
    sql("INSERT INTO %s VALUES (2)", qual);
    wait_lines(2, 10000);
    took = now_ms() - t0;
    cr_log_info("standby took over and delivered in %.0f ms", took);
    cr_assert_lt(took, 10000);
    cr_assert(file_has(logb, "holding the lock"));
    stop_sluice(b);
    pg_cleanup();
}

/* ------------------------------------------------------------------ */

#define SNAP_ROWS 20000
#define SNAP_KEYS 25000

struct last {
    long long v[SNAP_KEYS + 1];     /* last value seen per key; -1 removed, -2 never seen */
    size_t    snapshot_rows, records;
};

static void last_state(json_t *r, void *arg)
{
    struct last *l = arg;
    const char *ev = str(r, "eventName");
    long long id = av_int(ddb(r, "Keys"), "id");

    l->records++;
    cr_assert_str_eq(str(r, "eventSource"), "aws:dynamodb");
    if (json_is_true(json_object_get(r, "snapshot"))) {
        l->snapshot_rows++;
        cr_assert_str_eq(ev, "INSERT");
    }
    if (id < 1 || id > SNAP_KEYS)
        return;
    if (strcmp(ev, "REMOVE") == 0)
        l->v[id] = -1;
    else
        l->v[id] = av_int(ddb(r, "NewImage"), "v");
}

/* A child that keeps changing the table: updates, deletes, inserts. */
static pid_t writer(const char *qual, int ms)
{
    pid_t pid = fork();

    if (pid == 0) {
        PGconn *c = connect_db(dsn);
        double end = now_ms() + ms;
        unsigned seed = (unsigned)getpid();
        char q[400];
        int round = 0;

        while (now_ms() < end) {
            int k = 1 + (int)(rand_r(&seed) % SNAP_KEYS), op = (int)(rand_r(&seed) % 3);
            round++;
            if (op == 0)
                snprintf(q, sizeof(q), "UPDATE %s SET v = v + 1000000 WHERE id BETWEEN %d AND %d",
                         qual, k, k + 20);
            else if (op == 1)
                snprintf(q, sizeof(q), "DELETE FROM %s WHERE id = %d", qual, k);
            else
                snprintf(q, sizeof(q), "INSERT INTO %s VALUES (%d, %d) ON CONFLICT (id) DO "
                         "UPDATE SET v = excluded.v", qual, k, round);
            PQclear(PQexec(c, q));
            usleep(2000);
        }
        PQfinish(c);
        _exit(0);
    }
    return pid;
}

Test(pg_source, snapshot_then_stream_with_concurrent_writes, .fini = fini)
{
    char qual[120];
    static struct last l;
    PGresult *res;
    pid_t pid, w;
    int st, mismatched = 0, tries = 0;
    char *state;
    double deadline;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_snap", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY, v bigint)", qual);
    sql("INSERT INTO %s SELECT g, g FROM generate_series(1, %d) g", qual, SNAP_ROWS);
    w = writer(qual, 6000);
    usleep(300000);
    pid = run_sluice(pg_config("c.yaml", th_free_port(), qual,
                                        "    snapshot: initial\n    batch_size: 1000\n", NULL,
                                        NULL), "/dev/null");
    waitpid(w, &st, 0);
    sql("INSERT INTO %s VALUES (%d, 0) ON CONFLICT (id) DO UPDATE SET v = 0", qual, SNAP_KEYS);
    deadline = now_ms() + 90000;
    /* the final state of every row, as the table has it now */
    for (;;) {
        memset(&l, 0, sizeof(l));
        for (int i = 0; i <= SNAP_KEYS; i++)
            l.v[i] = -2;
        each_record(last_state, &l);
        res = PQexec(db, "SELECT 1");
        PQclear(res);
        {
            char q[200];
            snprintf(q, sizeof(q), "SELECT id, v FROM %s", qual);
            res = PQexec(db, q);
        }
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        {
            static char present[SNAP_KEYS + 1];
            memset(present, 0, sizeof(present));
            mismatched = 0;
            for (int i = 0; i < PQntuples(res); i++) {
                int id = atoi(PQgetvalue(res, i, 0));
                long long v = atoll(PQgetvalue(res, i, 1));
                present[id] = 1;
                if (l.v[id] != v)
                    mismatched++;
            }
            for (int id = 1; id <= SNAP_KEYS; id++)
                if (!present[id] && l.v[id] >= 0)
                    mismatched++; /* deleted, but the last event seen is not its REMOVE */
        }
        PQclear(res);
        tries++;
        if (mismatched == 0 && l.v[SNAP_KEYS] == 0)
            break;
        cr_assert_lt(now_ms(), deadline, "%d rows differ from their last event after 90 s "
                     "(%zu records, %zu from the snapshot)", mismatched, l.records,
                     l.snapshot_rows);
        usleep(500000);
    }
    cr_log_info("snapshot: %zu rows, %zu records in all", l.snapshot_rows, l.records);
    cr_assert_geq(l.snapshot_rows, SNAP_ROWS * 8 / 10, "the existing rows came as snapshot "
                  "INSERTs (%zu)", l.snapshot_rows);
    /* recorded complete once every snapshot row was final */
    deadline = now_ms() + 15000;
    while (!(state = sql_value("SELECT state FROM sluice_snapshot_state WHERE slot_name = '%s'",
                               names)) || strcmp(state, "done") != 0) {
        free(state);
        cr_assert_lt(now_ms(), deadline, "snapshot never recorded as done");
        usleep(100000);
    }
    free(state);
    stop_sluice(pid);
    pg_cleanup();
}
