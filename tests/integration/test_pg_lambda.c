/* The Postgres source is a DynamoDB Streams event source, judged by code we
 * did not write, against the real Postgres from tests/services:
 *
 * - every type the decoder knows (scalars, arrays, json/jsonb nested, NULLs,
 *   edge values) goes row -> AttributeValue image -> boto3's TypeDeserializer
 *   -> the row as Postgres' row_to_json gives it, column by column, through
 *   the snapshot (text form) and the stream (binary form), for INSERT,
 *   MODIFY (old and new images) and REMOVE; every record parses with
 *   Powertools' DynamoDBStreamModel and its data class
 *   (tests/integration/pg_lambda_check.py, run with /usr/bin/python3 and
 *   the layer tests/deps installs);
 * - Lambda filter patterns on DynamoDB typed attributes and eventSource
 *   deliver only the matching rows;
 * - TRUNCATE is counted (sluice_pg_truncates_total) and logged, not
 *   delivered, and the slot moves past it.
 *
 * Handler: tests/handlers/pg_record.c (appends every record it sees to a
 * file). */
#include "test_pg_source.h"

static void fini(void)
{
    pg_cleanup();
}

TestSuite(pg_lambda, .timeout = 170);

#define REGION_EXTRA ", region: eu-west-3, account_id: \"123456789012\""

/* Column name, type, and three rows' values (SQL literals). */
static const struct {
    const char *name, *type, *v[3];
} cols[] = {
    { "c_bool", "bool", { "true", "NULL", "false" } },
    { "c_bytea", "bytea", { "'\\xdeadbeef00'", "NULL", "''" } },
    { "c_char", "\"char\"", { "'x'", "NULL", "'A'" } },
    { "c_name", "name", { "'nm'", "NULL", "''" } },
    { "c_text", "text", { "'h\xc3\xa9 \"q\" \\ \n\t\xf0\x9f\x98\x80'", "NULL", "''" } },
    { "c_bpchar", "char(5)", { "'ab'", "NULL", "'abcde'" } },
    { "c_varchar", "varchar(20)", { "'v'", "NULL", "''" } },
    { "c_int2", "int2", { "-32768", "NULL", "32767" } },
    { "c_int4", "int4", { "2147483647", "NULL", "-1" } },
    { "c_int8", "int8", { "9007199254740993", "NULL", "-9223372036854775808" } },
    { "c_oid", "oid", { "4294967295", "NULL", "0" } },
    { "c_float4", "float4", { "0.1", "NULL", "'-Infinity'" } },
    { "c_float8", "float8", { "1.0/3", "NULL", "1e300" } },
    { "c_float8b", "float8", { "'NaN'", "NULL", "-2.5e-7" } },
    { "c_numeric", "numeric", { "12345.678", "NULL", "'NaN'" } },
    { "c_numbig", "numeric", { "12345678901234567890.12345678901234567890", "NULL",
                               "-0.000000000000000000000000000000000001" } },
    { "c_numscale", "numeric(40,20)", { "1.5", "NULL", "0" } },
    { "c_numinf", "numeric", { "'Infinity'", "NULL", "1e125" } },
    { "c_date", "date", { "'2024-02-03'", "NULL", "'infinity'" } },
    { "c_time", "time", { "'04:05:06.789'", "NULL", "'24:00:00'" } },
    { "c_timetz", "timetz", { "'04:05:06+02:30'", "NULL", "'23:59:59.5-11'" } },
    { "c_ts", "timestamp", { "'2024-02-03 04:05:06.789'", "NULL", "'-infinity'" } },
    { "c_tstz", "timestamptz", { "'2024-02-03 04:05:06.789+00'", "NULL",
                                 "'1999-12-31 23:59:59.999999-05:30'" } },
    { "c_interval", "interval", { "'1 year 2 mons 3 days 04:05:06.7'", "NULL",
                                  "'-1 days +02:00:00'" } },
    { "c_uuid", "uuid", { "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "NULL",
                          "'00000000-0000-0000-0000-000000000000'" } },
    { "c_json", "json", { "'{\"a\": [1, \"x\", true, null, {\"b\": 2.50}], \"c\": {}}'", "NULL",
                          "'\"just a string\"'" } },
    { "c_jsonb", "jsonb", { "'{\"a\": [1, \"x\", false, null, {\"b\": -2.5e3}], \"c\": []}'",
                            "NULL", "'null'" } },
    { "c_jsonb2", "jsonb", { "'[[], {}, \"\", 0]'", "NULL", "'123.456'" } },
    { "a_bool", "bool[]", { "'{t,f,NULL}'", "NULL", "'{}'" } },
    { "a_bytea", "bytea[]", { "ARRAY['\\x6162'::bytea, NULL, '']", "NULL", "'{}'" } },
    { "a_char", "\"char\"[]", { "'{a,b}'", "NULL", "'{}'" } },
    { "a_name", "name[]", { "'{n1,n2}'", "NULL", "'{}'" } },
    { "a_int2", "int2[]", { "'{{1,2},{3,4}}'", "NULL", "'{}'" } },
    { "a_int4", "int4[]", { "'{1,NULL,-2}'", "NULL", "'{{{1}},{{2}}}'" } },
    { "a_int8", "int8[]", { "'{9223372036854775807}'", "NULL", "'{}'" } },
    { "a_oid", "oid[]", { "'{1,2}'", "NULL", "'{}'" } },
    { "a_text", "text[]", { "'{\"x\",\"y z\",\"\",NULL,\"NULL\",\"a,b\"}'", "NULL",
                            "'{{a,b},{c,d}}'" } },
    { "a_bpchar", "char(2)[]", { "'{a,bb}'", "NULL", "'{}'" } },
    { "a_varchar", "varchar(9)[]", { "'{v,w}'", "NULL", "'{}'" } },
    { "a_float4", "float4[]", { "'{0.5,NaN}'", "NULL", "'{}'" } },
    { "a_float8", "float8[]", { "'{1.5,-Infinity,1e-300}'", "NULL", "'{}'" } },
    { "a_numeric", "numeric[]", { "'{1.5,NaN,100.00}'", "NULL", "'{}'" } },
    { "a_json", "json[]", { "ARRAY['{\"a\":1}'::json, '[1, \"s\"]']", "NULL", "'{}'" } },
    { "a_jsonb", "jsonb[]", { "ARRAY['{\"a\":{\"b\":[true]}}'::jsonb, 'null']", "NULL", "'{}'" } },
    { "a_date", "date[]", { "'{2024-02-03,infinity}'", "NULL", "'{}'" } },
    { "a_time", "time[]", { "'{04:05:06,23:59:59.999999}'", "NULL", "'{}'" } },
    { "a_timetz", "timetz[]", { "'{04:05:06+02}'", "NULL", "'{}'" } },
    { "a_ts", "timestamp[]", { "'{\"2024-02-03 04:05:06\",infinity}'", "NULL", "'{}'" } },
    { "a_tstz", "timestamptz[]", { "'{\"2024-02-03 04:05:06.5+01\"}'", "NULL", "'{}'" } },
    { "a_interval", "interval[]", { "'{\"1 day\",\"-00:00:01\"}'", "NULL", "'{}'" } },
    { "a_uuid", "uuid[]", { "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", "NULL", "'{}'" } },
};
#define NCOLS (sizeof(cols) / sizeof(cols[0]))

/* `SELECT json_object_agg(id, row_to_json(t))` as Postgres gives it, UTC. */
static char *rows_json(const char *qual)
{
    char *v = sql_value("SELECT json_object_agg(id, row_to_json(t) ORDER BY id) FROM %s t", qual);

    cr_assert_not_null(v, "no rows in %s", qual);
    return v;
}

static void run_check(const char *expect_path, const char *want_seen)
{
    char cmd[8192], outp[400];
    FILE *f;
    char line[4096];
    int rc;
    bool seen_ok = false;

    snprintf(outp, sizeof(outp), "%s/check.out", tdir);
    snprintf(cmd, sizeof(cmd),
             "test -d '%s/tests/.layers/powertools/python/aws_lambda_powertools' || "
             "{ echo 'run tests/deps: the Powertools layer is missing' > '%s'; exit 2; }; "
             "PYTHONPATH='%s/tests/.layers/powertools/python' /usr/bin/python3 "
             "'%s/tests/integration/pg_lambda_check.py' '%s' '%s' > '%s' 2>&1",
             root, outp, root, root, out_path, expect_path, outp);
    rc = system(cmd);
    f = fopen(outp, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "{\"snapshot\"", 11) == 0)
            seen_ok = strstr(line, want_seen) != NULL;
        if (rc != 0)
            cr_log_error("%s", line);
    }
    fclose(f);
    cr_assert_eq(rc, 0, "pg_lambda_check.py found problems (above)");
    cr_assert(seen_ok, "records by kind are not %s", want_seen);
}

Test(pg_lambda, every_type_round_trips_through_type_deserializer, .fini = fini)
{
    char table[96], qual[120], q[8192], expect_path[400];
    char *types, *before, *after;
    size_t o;
    pid_t pid;
    FILE *f;

    pg_setup();
    server_extra = REGION_EXTRA;
    snprintf(table, sizeof(table), "%s_all", names);
    snprintf(qual, sizeof(qual), "public.%s", table);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("SET TimeZone = 'UTC'");
    o = (size_t)snprintf(q, sizeof(q), "CREATE TABLE %s (id int PRIMARY KEY", qual);
    for (size_t i = 0; i < NCOLS; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, ", %s %s", cols[i].name, cols[i].type);
    snprintf(q + o, sizeof(q) - o, ")");
    sql("%s", q);
    sql("ALTER TABLE %s REPLICA IDENTITY FULL", qual);
    /* rows 1..3 before the slot exists: the snapshot reads them in text form */
    for (int r = 0; r < 3; r++) {
        o = (size_t)snprintf(q, sizeof(q), "INSERT INTO %s VALUES (%d", qual, r + 1);
        for (size_t i = 0; i < NCOLS; i++)
            o += (size_t)snprintf(q + o, sizeof(q) - o, ", %s", cols[i].v[r]);
        snprintf(q + o, sizeof(q) - o, ")");
        sql("%s", q);
    }

    pid = run_sluice(pg_config("c.yaml", th_free_port(), qual, "    snapshot: initial\n", NULL,
                               NULL), "/dev/null");
    wait_lines(3, 30000);
    wait_streaming(pid, 20000);
    /* the same rows again, streamed (binary form), then changed and removed */
    sql("INSERT INTO %s SELECT id + 100, %s FROM %s WHERE id < 100", qual,
        "c_bool, c_bytea, c_char, c_name, c_text, c_bpchar, c_varchar, c_int2, c_int4, c_int8, "
        "c_oid, c_float4, c_float8, c_float8b, c_numeric, c_numbig, c_numscale, c_numinf, c_date, "
        "c_time, c_timetz, c_ts, c_tstz, c_interval, c_uuid, c_json, c_jsonb, c_jsonb2, a_bool, "
        "a_bytea, a_char, a_name, a_int2, a_int4, a_int8, a_oid, a_text, a_bpchar, a_varchar, "
        "a_float4, a_float8, a_numeric, a_json, a_jsonb, a_date, a_time, a_timetz, a_ts, a_tstz, "
        "a_interval, a_uuid", qual);
    before = rows_json(qual);
    sql("UPDATE %s SET c_text = 'changed', c_int4 = c_int4 - 1, a_int4 = '{7}' WHERE id = 101",
        qual);
    sql("UPDATE %s SET c_bool = true, c_jsonb = '{\"now\": \"set\"}' WHERE id = 102", qual);
    sql("DELETE FROM %s WHERE id = 103", qual);
    after = rows_json(qual);
    types = sql_value("SELECT json_object_agg(attname, format_type(atttypid, atttypmod)) "
                      "FROM pg_attribute WHERE attrelid = '%s'::regclass AND attnum > 0 AND "
                      "NOT attisdropped", qual);
    cr_assert_not_null(types);
    wait_lines(9, 30000);
    usleep(500000);    /* nothing more may come */
    stop_sluice(pid);
    cr_assert_eq(count_lines(out_path), 9, "3 snapshot rows, 3 inserts, 2 updates, 1 delete");

    snprintf(expect_path, sizeof(expect_path), "%s/expect.json", tdir);
    f = fopen(expect_path, "w");
    cr_assert_not_null(f);
    fprintf(f, "{\"types\":%s,\"before\":%s,\"after\":%s,\"table\":\"%s\",\"slot\":\"%s\","
            "\"region\":\"eu-west-3\",\"account\":\"123456789012\"}\n", types, before, after,
            qual, names);
    fclose(f);
    free(types);
    free(before);
    free(after);
    run_check(expect_path, "{\"snapshot\": 3, \"INSERT\": 3, \"MODIFY\": 2, \"REMOVE\": 1}");
    server_extra = "";
    pg_cleanup();
}

/* Lambda filter patterns against the DynamoDB shapes: typed attribute
 * values and eventSource. */
Test(pg_lambda, filter_on_typed_attributes, .fini = fini)
{
    char table[96], qual[120];
    const char *extra =
        "    filter_criteria:\n"
        "      - { eventSource: [aws:dynamodb], dynamodb: { NewImage: { status: { S: [active] } } } }\n"
        "      - { eventName: [REMOVE], dynamodb: { OldImage: { n: { N: [\"7\"] } } } }\n";
    long long want[] = { 1, 3, 2, 7 };
    const char *want_ev[] = { "INSERT", "INSERT", "MODIFY", "REMOVE" };
    json_t *recs[16];
    size_t n = 0;
    pid_t pid;
    FILE *f;
    char *line = NULL;
    size_t cap = 0;

    pg_setup();
    snprintf(table, sizeof(table), "%s_flt", names);
    snprintf(qual, sizeof(qual), "public.%s", table);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    sql("CREATE TABLE %s (id int PRIMARY KEY, status text, n int)", qual);
    sql("ALTER TABLE %s REPLICA IDENTITY FULL", qual);
    pid = run_sluice(pg_config("c.yaml", th_free_port(), qual, extra, NULL, NULL), "/dev/null");
    wait_streaming(pid, 20000);
    sql("INSERT INTO %s VALUES (1, 'active', 1), (2, 'inactive', 2), (3, 'active', 3), "
        "(4, NULL, 4), (5, 'ACTIVE', 5), (7, 'gone', 7)", qual);
    sql("UPDATE %s SET status = 'active' WHERE id = 2", qual);
    sql("UPDATE %s SET n = 40 WHERE id = 4", qual);
    sql("DELETE FROM %s WHERE id IN (5, 7)", qual);
    sql("INSERT INTO %s VALUES (8, 'active-ish', 8)", qual);
    wait_lines(4, 20000);
    usleep(1500000);    /* the rows after the last match had time to come */
    stop_sluice(pid);

    f = fopen(out_path, "r");
    cr_assert_not_null(f);
    while (getline(&line, &cap, f) > 0 && n < 16) {
        recs[n] = json_loads(line, 0, NULL);
        cr_assert_not_null(recs[n]);
        n++;
    }
    free(line);
    fclose(f);
    cr_assert_eq(n, 4, "only the matching changes are delivered, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(str(recs[i], "eventName"), want_ev[i]);
        cr_assert_eq(av_int(ddb(recs[i], "Keys"), "id"), want[i], "record %zu", i);
        json_decref(recs[i]);
    }
    pg_cleanup();
}

/* TRUNCATE: no such DynamoDB event. Counted and logged, never delivered;
 * the changes after it in the same and later transactions are. */
Test(pg_lambda, truncate_is_counted_not_delivered, .fini = fini)
{
    char table[96], qual[120], cmd[800], metrics[400], log[400];
    int port = th_free_port();
    pid_t pid;

    pg_setup();
    snprintf(table, sizeof(table), "%s_tr", names);
    snprintf(qual, sizeof(qual), "public.%s", table);
    snprintf(drop_tables, sizeof(drop_tables), "%s", qual);
    snprintf(log, sizeof(log), "%s/tr.log", tdir);
    sql("CREATE TABLE %s (id int PRIMARY KEY)", qual);
    pid = run_sluice(pg_config("c.yaml", port, qual, NULL, NULL, NULL), log);
    wait_streaming(pid, 20000);
    sql("INSERT INTO %s VALUES (1)", qual);
    sql("BEGIN; TRUNCATE %s; INSERT INTO %s VALUES (2); COMMIT", qual, qual);
    sql("TRUNCATE %s", qual);
    sql("INSERT INTO %s VALUES (3)", qual);
    wait_lines(3, 20000);
    snprintf(metrics, sizeof(metrics), "%s/metrics.txt", tdir);
    snprintf(cmd, sizeof(cmd), "curl -s -o '%s' http://127.0.0.1:%d/metrics", metrics, port);
    cr_assert_eq(system(cmd), 0, "cannot read /metrics");
    stop_sluice(pid);
    cr_assert_eq(count_lines(out_path), 3, "the three INSERTs and nothing else");
    cr_assert(!file_has(out_path, "TRUNCATE"), "a TRUNCATE was delivered");
    snprintf(cmd, sizeof(cmd), "sluice_pg_truncates_total{source=\"%s\"} 2", names);
    cr_assert(file_has(metrics, cmd), "no '%s' in /metrics", cmd);
    snprintf(cmd, sizeof(cmd), "TRUNCATE of %s not delivered", qual);
    cr_assert(file_has(log, cmd), "the log does not say '%s'", cmd);
    pg_cleanup();
}
