/* More of the Postgres source's promises against the real Postgres from
 * tests/services: per-primary-key lanes (parallelization_factor 4) keep
 * the order of each row's changes while the flush position waits for the
 * slowest lane; maximum_retry_attempts with bisect narrows a failing
 * transaction down to the poison change, which reaches the on_failure
 * file sink with its record while the slot moves past it; an idle
 * publication on a busy database still lets the slot advance; a tiny
 * slot_lag_warning_mb gives the warning, and the all-clear once the slot
 * catches up.
 *
 * Handler: tests/handlers/cov_pg_gate.c (appends every record it accepts
 * to a file; fails batches holding a marker while a gate file exists, or
 * holding a poison value always). Each test has its own tables, slot and
 * publication and drops them at the end. */
#include "test_pg_source.h"

static void fini(void)
{
    pg_cleanup();
}

TestSuite(pg_source_more, .timeout = 120);

/* pg_config's file with the gate handler instead of pg_record and a
 * file sink `dlq` at <tdir>/dlq.jsonl. `env` adds handler variables
 * (", K: v" each). */
static const char *gate_config(const char *tables, const char *extra, const char *env)
{
    const char *path = pg_config("c.yaml", th_free_port(), tables, extra, env, NULL);
    char *text, *at;
    size_t len;
    FILE *f = fopen(path, "r");

    cr_assert_not_null(f);
    text = calloc(1, 16384);
    len = fread(text, 1, 16383, f);
    fclose(f);
    cr_assert_lt(len, 16383);
    at = strstr(text, "test-handlers/pg_record");
    cr_assert_not_null(at);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "%.*stest-handlers/cov_pg_gate%s", (int)(at - text), text,
            at + strlen("test-handlers/pg_record"));
    fprintf(f, "sinks:\n  dlq: { type: file, path: %s/dlq.jsonl, fsync: false }\n", tdir);
    fclose(f);
    free(text);
    return path;
}

/* Powertools for AWS Lambda's DynamoDBStreamLambdaOnFailureDestinationModel
 * (tests/deps installs it) accepts the on-failure record `rec`. */
static void powertools_accepts(json_t *rec)
{
    char path[400], cmd[4096];
    FILE *f;
    int rc;

    snprintf(path, sizeof(path), "%s/onfailure.json", tdir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(json_dumpf(rec, f, JSON_COMPACT), 0);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "test -d '%s/tests/.layers/powertools/python' || "
             "{ echo 'run tests/deps: no Powertools layer' >&2; exit 3; }; "
             "PYTHONPATH='%s/tests/.layers/powertools/python' /usr/bin/python3 -c '"
             "import json, sys\n"
             "from aws_lambda_powertools.utilities.parser.models import "
             "DynamoDBStreamLambdaOnFailureDestinationModel as M\n"
             "m = M.model_validate(json.load(open(sys.argv[1])))\n"
             "assert m.ddb_stream_batch_info.batch_size >= 1\n"
             "' '%s' >&2", root, root, path);
    rc = system(cmd);
    cr_assert_eq(rc, 0, "Powertools' on-failure model rejects %s (exit %d)", path, rc);
}

/* SELECT a <= b for two LSNs given as text (or SQL expressions). */
static bool lsn_le(const char *a, const char *b)
{
    char *v = sql_value("SELECT (%s)::pg_lsn <= (%s)::pg_lsn", a, b);
    bool le = v && strcmp(v, "t") == 0;

    free(v);
    return le;
}

static char *confirmed_flush(void)
{
    return sql_value("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                     "WHERE slot_name = '%s'", names);
}

/* Wait until the slot's confirmed_flush_lsn reaches `lsn`. */
static void wait_flushed_past(const char *lsn, int timeout_ms, const char *what)
{
    double deadline = now_ms() + timeout_ms;

    for (;;) {
        char *f = confirmed_flush(), q[80];
        bool done;

        snprintf(q, sizeof(q), "'%s'", f ? f : "0/0");
        {
            char l[80];
            snprintf(l, sizeof(l), "'%s'", lsn);
            done = f && lsn_le(l, q);
        }
        if (!done && now_ms() > deadline) {
            cr_assert_fail("%s: confirmed_flush_lsn %s, not past %s after %d ms", what,
                           f ? f : "(none)", lsn, timeout_ms);
        }
        free(f);
        if (done)
            return;
        usleep(100000);
    }
}


static bool wait_file(const char *path, const char *needle, int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;

    while (!file_has(path, needle)) {
        if (now_ms() > deadline)
            return false;
        usleep(100000);
    }
    return true;
}

/* ------------------------------------------------------------------ */

#define PF_KEYS   8
#define PF_ROUNDS 50          /* updates per key before the marker, and after it */
#define PF_MARKED 3           /* the key whose change is held back */

struct lanes {
    long long last[PF_KEYS + 1];     /* last v seen per key */
    size_t    count[PF_KEYS + 1];
    size_t    records, out_of_order, after_marker, marked_late;
    char      marker_commit[32];
    int       pids[16], npids;
    char      why[160];
};

static void per_key(json_t *r, void *arg)
{
    struct lanes *l = arg;
    long long id = av_int(ddb(r, "Keys"), "id");
    json_t *img = ddb(r, "NewImage");
    long long v = av_int(img, "v");
    const char *tag = av_str(img, "tag");
    int pid = (int)json_integer_value(json_object_get(r, "_pid")), known = 0;

    l->records++;
    if (id < 1 || id > PF_KEYS)
        return;
    if (l->count[id] && v <= l->last[id]) {
        l->out_of_order++;
        if (!l->why[0])
            snprintf(l->why, sizeof(l->why), "key %lld: v %lld after %lld", id, v, l->last[id]);
    }
    l->last[id] = v;
    l->count[id]++;
    if (v > PF_ROUNDS + 1)
        l->after_marker++;
    if (id == PF_MARKED && v > PF_ROUNDS)
        l->marked_late++;
    if (tag && strcmp(tag, "gate-marker") == 0)
        snprintf(l->marker_commit, sizeof(l->marker_commit), "%s", str(r, "commitLsn"));
    for (int i = 0; i < l->npids; i++)
        known |= l->pids[i] == pid;
    if (!known && l->npids < 16)
        l->pids[l->npids++] = pid;
}

static void scan(struct lanes *l)
{
    memset(l, 0, sizeof(*l));
    each_record(per_key, l);
}

/* One transaction per UPDATE: every key's v set to each of from..to. */
static void update_rounds(const char *qual, int from, int to)
{
    sql("DO $$ BEGIN FOR i IN %d..%d LOOP FOR k IN 1..%d LOOP "
        "UPDATE %s SET v = i WHERE id = k; COMMIT; END LOOP; END LOOP; END $$",
        from, to, PF_KEYS, qual);
}

Test(pg_source_more, lanes_keep_order_per_key_and_flush_waits_for_the_slowest, .fini = fini)
{
    char qual[120], env[1000], gate[300], fails[300], held[8][32];
    char *before, *end;
    static struct lanes l;
    double deadline;
    pid_t pid;
    size_t want = PF_KEYS + 2 * PF_ROUNDS * PF_KEYS + 1;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_lanes", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    snprintf(gate, sizeof(gate), "%s/gate", tdir);
    snprintf(fails, sizeof(fails), "%s/fails.txt", tdir);
    cr_assert_eq(close(open(gate, O_WRONLY | O_CREAT, 0644)), 0);
    sql("CREATE TABLE %s (id int PRIMARY KEY, v int, tag text)", qual);
    snprintf(env, sizeof(env), ", GATE_KEY: gate-marker, GATE_FILE: %s, FAILS: %s", gate, fails);
    pid = run_sluice(gate_config(qual, "    batch_size: 10\n    maximum_batching_window_ms: 50ms\n"
                                       "    parallelization_factor: 4\n", env), NULL);
    wait_streaming(pid, 30000);
    sql("INSERT INTO %s SELECT g, 0, 'row' FROM generate_series(1, %d) g", qual, PF_KEYS);
    update_rounds(qual, 1, PF_ROUNDS);
    /* the flush position can reach at most the end of what came before
     * (the insert position: the write position may still be behind it) */
    before = sql_value("SELECT pg_current_wal_insert_lsn()::text");
    sql("UPDATE %s SET v = %d, tag = 'gate-marker' WHERE id = %d", qual, PF_ROUNDS + 1,
        PF_MARKED);
    update_rounds(qual, PF_ROUNDS + 2, 2 * PF_ROUNDS + 1);
    end = sql_value("SELECT pg_current_wal_lsn()::text");

    /* the marked key's lane retries; the other lanes go on past it */
    deadline = now_ms() + 30000;
    for (;;) {
        scan(&l);
        if (count_lines(fails) >= 3 && l.after_marker >= PF_ROUNDS)
            break;
        cr_assert_lt(now_ms(), deadline, "while one lane failed: %zu failures, %zu changes "
                     "after the marker delivered by the other lanes", count_lines(fails),
                     l.after_marker);
        usleep(100000);
    }
    cr_assert_eq(l.marked_late, 0, "key %d got past its failing change", PF_MARKED);
    /* over several status checks, the slot stays before the held transaction (the
     * retries back off exponentially: keep the failing period short) */
    for (int i = 0; i < 8; i++) {
        char *f = confirmed_flush(), q[80], b[80];
        cr_assert_not_null(f);
        snprintf(held[i], sizeof(held[i]), "%s", f);
        snprintf(q, sizeof(q), "'%s'", f);
        snprintf(b, sizeof(b), "'%s'", before);
        cr_assert(lsn_le(q, b), "confirmed_flush_lsn %s passed %s while a change after it "
                  "was failing", f, before);
        free(f);
        usleep(60000);
    }
    cr_log_info("lanes: %zu changes after the marker delivered while it failed (%zu failures), "
                "slot held at %s", l.after_marker, count_lines(fails), held[7]);

    unlink(gate);
    wait_lines(want, 60000);
    usleep(300000);
    scan(&l);
    cr_assert_eq(l.records, want, "%zu records, want %zu: each change once", l.records, want);
    cr_assert_eq(l.out_of_order, 0, "order per key broken: %s", l.why);
    for (int k = 1; k <= PF_KEYS; k++)
        cr_assert_eq(l.count[k], k == PF_MARKED ? 2 * PF_ROUNDS + 2 : 2 * PF_ROUNDS + 1,
                     "key %d: %zu changes", k, l.count[k]);
    cr_assert(l.marker_commit[0], "the marked change was delivered");
    for (int i = 0; i < 8; i++) {
        char q[300], m[300];
        snprintf(q, sizeof(q), "'%s'", held[i]);
        snprintf(m, sizeof(m), "'%s'", l.marker_commit);
        cr_assert(lsn_le(q, m) && strcmp(held[i], l.marker_commit) != 0,
                  "flush %s not below the held transaction's commit %s", held[i],
                  l.marker_commit);
    }
    wait_flushed_past(l.marker_commit, 15000, "after the held change succeeded");
    wait_flushed_past(end, 15000, "once every lane was done");
    cr_log_info("lanes: %zu records, %d handler processes", l.records, l.npids);
    free(before);
    free(end);
    stop_sluice(pid);
    pg_cleanup();
}

/* ------------------------------------------------------------------ */

Test(pg_source_more, bisect_sends_exactly_the_poison_change_to_on_failure, .fini = fini)
{
    char qual[120], dlq[300], env[400];
    json_t *dl[8], *recs, *rec;
    size_t n;
    char *lsn;
    double deadline;
    pid_t pid;

    pg_setup();
    snprintf(qual, sizeof(qual), "public.%s_dlq", names);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    snprintf(dlq, sizeof(dlq), "%s/dlq.jsonl", tdir);
    sql("CREATE TABLE %s (id int PRIMARY KEY, note text)", qual);
    snprintf(env, sizeof(env), ", POISON: poison-row, FAILS: %s/fails.txt", tdir);
    pid = run_sluice(gate_config(qual, "    batch_size: 10\n    maximum_batching_window_ms: 1s\n"
                                       "    maximum_retry_attempts: 1\n"
                                       "    bisect_batch_on_function_error: true\n"
                                       "    on_failure: dlq\n", env), NULL);
    wait_streaming(pid, 30000);
    /* one transaction, one batch of ten, the seventh change poisoned */
    sql("INSERT INTO %s SELECT g, CASE WHEN g = 7 THEN 'poison-row' ELSE 'fine' END "
        "FROM generate_series(1, 10) g", qual);
    lsn = sql_value("SELECT pg_current_wal_lsn()::text");
    deadline = now_ms() + 30000;
    while (count_lines(dlq) == 0) {
        cr_assert_lt(now_ms(), deadline, "nothing reached the on_failure sink");
        usleep(100000);
    }
    /* the stream goes on past it */
    sql("INSERT INTO %s VALUES (11, 'after')", qual);
    wait_flushed_past(lsn, 15000, "past the dead-lettered change");
    n = th_read_jsonl(dlq, dl, 8);
    cr_assert_eq(n, 1, "%zu dead-letter envelopes", n);
    cr_assert_str_eq(str(json_object_get(dl[0], "requestContext"), "condition"),
                     "RetryAttemptsExhausted");
    recs = json_object_get(json_object_get(dl[0], "payload"), "Records");
    cr_log_info("dlq: the record holds %zu record(s) after %lld attempt(s)",
                json_array_size(recs), (long long)json_integer_value(json_object_get(
                    json_object_get(dl[0], "requestContext"), "approximateInvokeCount")));
    cr_assert_eq(json_array_size(recs), 1, "bisect narrows the batch to the poison change: the "
                 "envelope holds %zu records (splitting must not use up the retry attempts)",
                 json_array_size(recs));
    wait_lines(10, 20000);
    usleep(300000);
    cr_assert_eq(count_lines(out_path), 10, "the nine good changes and the one after, once each");
    cr_assert(!file_has(out_path, "poison-row"));
    rec = json_array_get(recs, 0);
    cr_assert_str_eq(str(rec, "eventName"), "INSERT");
    cr_assert_str_eq(str(rec, "tableName"), qual);
    cr_assert_eq(av_int(ddb(rec, "NewImage"), "id"), 7);
    cr_assert_str_eq(av_str(ddb(rec, "NewImage"), "note"), "poison-row");
    /* Lambda's DDBStreamBatchInfo: the slot is the shard, the change's
     * SequenceNumber starts and ends the batch, its commit time is the
     * arrival, the stream ARN names the table and the slot */
    {
        json_t *bi = json_object_get(dl[0], "DDBStreamBatchInfo");
        char arn[300], when[64];
        time_t sec = (time_t)json_integer_value(ddb(rec, "ApproximateCreationDateTime"));
        struct tm tm;
        cr_assert(json_is_object(bi), "no DDBStreamBatchInfo");
        cr_assert_str_eq(str(bi, "shardId"), names);
        cr_assert_str_eq(str(bi, "startSequenceNumber"), json_string_value(ddb(rec, "SequenceNumber")));
        cr_assert_str_eq(str(bi, "endSequenceNumber"), json_string_value(ddb(rec, "SequenceNumber")));
        cr_assert_eq(json_integer_value(json_object_get(bi, "batchSize")), 1);
        snprintf(arn, sizeof(arn), "arn:aws:dynamodb:us-east-1:000000000000:table/%s/stream/%s",
                 qual, names);
        cr_assert_str_eq(str(bi, "streamArn"), arn);
        gmtime_r(&sec, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S.", &tm);
        cr_assert(strncmp(str(bi, "approximateArrivalOfFirstRecord"), when, strlen(when)) == 0,
                  "arrival %s, commit %s", str(bi, "approximateArrivalOfFirstRecord"), when);
        cr_assert_str_eq(str(bi, "approximateArrivalOfLastRecord"),
                         str(bi, "approximateArrivalOfFirstRecord"));
    }
    powertools_accepts(dl[0]);
    json_decref(dl[0]);
    free(lsn);
    stop_sluice(pid);
    pg_cleanup();
}

/* ------------------------------------------------------------------ */

Test(pg_source_more, idle_publication_on_a_busy_database_advances, .fini = fini)
{
    char pub[120], busy[120], tables[260];
    char *lsn, *f0;
    double t0;
    pid_t pid;

    pg_setup();
    snprintf(pub, sizeof(pub), "public.%s_idle", names);
    snprintf(busy, sizeof(busy), "public.%s_busy", names);
    snprintf(tables, sizeof(tables), "%s, %s", pub, busy);
    snprintf(drop_tables, sizeof(drop_tables), "%s", tables);
    sql("CREATE TABLE %s (id int PRIMARY KEY)", pub);
    sql("CREATE TABLE %s (id int PRIMARY KEY, pad text)", busy);
    pid = run_sluice(gate_config(pub, "    heartbeat_interval_s: 1\n    status_interval_s: 1\n",
                                 NULL), NULL);
    wait_streaming(pid, 30000);
    f0 = confirmed_flush();
    /* about 40 MB of WAL on a table the publication does not hold */
    for (int i = 0; i < 4; i++)
        sql("INSERT INTO %s SELECT g, repeat('x', 200) FROM generate_series(%d, %d) g", busy,
            i * 25000 + 1, (i + 1) * 25000);
    lsn = sql_value("SELECT pg_current_wal_lsn()::text");
    {
        char *mb = sql_value("SELECT ((%s::pg_lsn - '%s'::pg_lsn) / 1048576)::int",
                             "pg_current_wal_lsn()", f0);
        cr_log_info("idle: %s MB of WAL written past the slot's %s", mb, f0);
        cr_assert(mb && atoi(mb) >= 10, "the busy table wrote too little WAL (%s MB)", mb);
        free(mb);
    }
    t0 = now_ms();
    wait_flushed_past(lsn, 20000, "an idle publication pinned the WAL of a busy database");
    cr_log_info("idle: slot past the busy writes %.0f ms after them", now_ms() - t0);
    cr_assert_eq(count_lines(out_path), 0, "changes of an unpublished table were delivered");
    free(lsn);
    free(f0);
    stop_sluice(pid);
    pg_cleanup();
}

Test(pg_source_more, slot_lag_warning_and_all_clear, .fini = fini, .timeout = 180)
{
    char pub[120], busy[120], tables[260], env[600], gate[300], log[300];
    char *lsn;
    pid_t pid;

    pg_setup();
    snprintf(pub, sizeof(pub), "public.%s_lagpub", names);
    snprintf(busy, sizeof(busy), "public.%s_lagbusy", names);
    snprintf(tables, sizeof(tables), "%s, %s", pub, busy);
    snprintf(drop_tables, sizeof(drop_tables), "%s", tables);
    snprintf(gate, sizeof(gate), "%s/gate", tdir);
    snprintf(log, sizeof(log), "%s/sluice.log", tdir);
    cr_assert_eq(close(open(gate, O_WRONLY | O_CREAT, 0644)), 0);
    sql("CREATE TABLE %s (id int PRIMARY KEY, tag text)", pub);
    sql("CREATE TABLE %s (id int PRIMARY KEY, pad text)", busy);
    snprintf(env, sizeof(env), ", GATE_KEY: lag-gate, GATE_FILE: %s", gate);
    pid = run_sluice(gate_config(pub, "    slot_lag_warning_mb: 1\n    heartbeat_interval_s: 1\n"
                                      "    status_interval_s: 1\n", env), NULL);
    wait_streaming(pid, 30000);
    /* a change the handler fails holds the slot while the database writes on */
    sql("INSERT INTO %s VALUES (1, 'lag-gate')", pub);
    sql("INSERT INTO %s SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g", busy);
    cr_assert(wait_file(log, "MB of WAL (warning above 1 MB)", 35000),
              "no slot lag warning within 35 s; see %s", log);
    cr_assert(!wait_file(log, "lag back to", 0), "all-clear while still held");
    unlink(gate);
    /* the batch has been retried for 10 s or more by now: the next retry can
     * be up to a minute away (200 ms doubling, capped at 60 s, full jitter) */
    wait_lines(1, 65000);
    lsn = sql_value("SELECT pg_current_wal_lsn()::text");
    wait_flushed_past(lsn, 15000, "after the held change succeeded");
    cr_assert(wait_file(log, "lag back to", 25000), "no all-clear once the slot caught up");
    free(lsn);
    stop_sluice(pid);
    /* the shared header's kill_sluice is for tests that crash sluice */
    (void)kill_sluice;
    pg_cleanup();
}
