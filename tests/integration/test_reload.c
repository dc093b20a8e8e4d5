/* Live reload under load: one `sluice run` reads a Kafka topic, a Redis
 * stream and a Postgres slot while records flow on all three (and on a
 * second Redis stream, "b", that a reload adds, removes and adds again),
 * and its configuration is reloaded ten times with a change of every kind:
 * a source added, removed and added back, batch sizes changed (Redis,
 * Postgres, Kafka: each restarts that source alone), a function's
 * environment and memory changed (its pool is replaced), a function added
 * and removed, the dead-letter sink moved, an invalid file in between
 * (nothing changes; the failure is counted and shown on /readyz, and
 * `sluice reload` exits 1 with file:line:col), and a reload of an
 * unchanged file. Then every record must have been processed (nothing
 * fails, so nothing is dead-lettered) and the duplicates are reported;
 * an unchanged function keeps its environment across reloads (the same
 * one answers), a changed one does not.
 *
 * The handler (tests/handlers/multi_rec.c) appends
 * "<src> <id> <ms> <where> <env>" per record. Needs tests/services. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define NREC      20000
#define PRODUCE_S 35
#define CHUNK     500
#define SOURCES   "krpb"

static char top[1024], dir[256], names[64], cfg[400], rhost[128], rurl[300], logp[400];
static const char *brokers, *pgdsn;
static int rport, port;
static pid_t sluice;
static atomic_int producing, prod_errors;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void setup(void)
{
    brokers = getenv("SLUICE_TEST_KAFKA");
    pgdsn = getenv("SLUICE_TEST_PG");
    cr_assert(brokers && *brokers && pgdsn && *pgdsn, "run eval \"$(tests/services env)\"");
    cr_assert(th_redis_env(rhost, sizeof(rhost), &rport), "SLUICE_TEST_REDIS is not set");
    th_redis_url(rurl, sizeof(rurl), rhost, rport);
    cr_assert_not_null(getcwd(top, sizeof(top)));
    snprintf(names, sizeof(names), "trl%d_%ld", (int)getpid(), (long)time(NULL) % 100000);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-%s", names);
    cr_assert_eq(mkdir(dir, 0755), 0);
    chmod(dir, 01777); /* the relaxed handler runs as its function's uid */
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char q[400];
    PGconn *c = NULL;

    if (sluice > 0) {
        kill(sluice, SIGKILL);
        waitpid(sluice, NULL, 0);
    }
    th_scan_logs(dir);
    if (pgdsn && (c = PQconnectdb(pgdsn)) && PQstatus(c) == CONNECTION_OK) {
        PQclear(PQexec(c, "SET client_min_messages = warning"));
        for (int i = 0; i < 100; i++) {
            PGresult *r;
            bool busy;
            snprintf(q, sizeof(q), "SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s' "
                     "AND active", names);
            r = PQexec(c, q);
            busy = PQntuples(r) > 0;
            PQclear(r);
            if (!busy)
                break;
            usleep(100000);
        }
        snprintf(q, sizeof(q), "SELECT pg_drop_replication_slot(slot_name) FROM "
                 "pg_replication_slots WHERE slot_name = '%s'", names);
        PQclear(PQexec(c, q));
        snprintf(q, sizeof(q), "DROP PUBLICATION IF EXISTS %s", names);
        PQclear(PQexec(c, q));
        snprintf(q, sizeof(q), "DROP TABLE IF EXISTS public.%s", names);
        PQclear(PQexec(c, q));
    }
    if (c)
        PQfinish(c);
    if (!getenv("SLUICE_TEST_KEEP")) {
        snprintf(q, sizeof(q), "rm -rf '%s'", dir);
        if (system(q) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
}

TestSuite(reload, .init = setup, .fini = teardown, .timeout = 400);

/* ------------------------------------------------------------------ */
/* The configuration, step by step                                     */

struct shape {
    bool b;                 /* source b (a second Redis stream) */
    int  r_batch, k_batch, p_batch;
    int  foo, memory;       /* function rec's environment FOO and memory_mb */
    bool rec2;              /* function rec2 */
    int  dlq;               /* the dead-letter file: dlq-<n>.jsonl */
    bool invalid;           /* a broken file */
};

static void write_cfg(const struct shape *s)
{
    char tmp[420];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", cfg);
    f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  rec:\n"
            "    handler: %s/%s/test-handlers/multi_rec\n"
            "    sandbox: relaxed\n"
            "    timeout_s: 30\n"
            "    memory_mb: %d\n"
            "    environment: { OUT: \"%s/out.txt\", FOO: \"%d\" }\n"
            "  probe:\n"
            "    handler: %s/%s/test-handlers/multi_rec\n"
            "    sandbox: relaxed\n"
            "    environment: { OUT: \"%s/probe.txt\" }\n",
            top, th_build(), s->memory, dir, s->foo, top, th_build(), dir);
    if (s->rec2)
        fprintf(f,
                "  rec2:\n"
                "    handler: %s/%s/test-handlers/multi_rec\n"
                "    sandbox: relaxed\n"
                "    environment: { OUT: \"%s/rec2.txt\" }\n",
                top, th_build(), dir);
    fprintf(f,
            "sources:\n"
            "  k:\n"
            "    type: kafka\n"
            "    function: rec\n"
            "    brokers: %s\n"
            "    topics: [%s]\n"
            "    consumer_group_id: %s\n"
            "    starting_position: TRIM_HORIZON\n"
            "    batch_size: %d\n"
            "    on_failure: dlq\n"
            "    kafka: { session.timeout.ms: \"6000\", heartbeat.interval.ms: \"1000\" }\n"
            "  r:\n"
            "    type: redis\n"
            "    function: rec\n"
            "    url: %s\n"
            "    key: %s\n"
            "    batch_size: %d\n"
            "    visibility_timeout_s: 5\n"
            "    on_failure: dlq\n"
            "  p:\n"
            "    type: postgres\n"
            "    function: rec\n"
            "    dsn: \"%s\"\n"
            "    slot: %s\n"
            "    publication: %s\n"
            "    tables: [public.%s]\n"
            "    batch_size: %d\n"
            "    on_failure: dlq\n",
            brokers, names, names, s->k_batch, rurl, names, s->r_batch, pgdsn, names, names,
            names, s->p_batch);
    if (s->b)
        fprintf(f,
                "  b:\n"
                "    type: redis\n"
                "    function: rec\n"
                "    url: %s\n"
                "    key: %s_b\n"
                "    batch_size: 100\n"
                "    visibility_timeout_s: 5\n"
                "    on_failure: dlq\n",
                rurl, names);
    fprintf(f,
            "sinks:\n"
            "  dlq: { type: file, path: \"%s/dlq-%d.jsonl\" }\n"
            "server:\n"
            "  listen: \"127.0.0.1:%d\"\n"
            "  data_dir: \"%s/data\"\n",
            dir, s->dlq, port, dir);
    if (s->invalid)
        fprintf(f, "  max_connections: lots\n  bogus_key: 1\n");
    fclose(f);
    cr_assert_eq(rename(tmp, cfg), 0);
}

/* ------------------------------------------------------------------ */
/* HTTP through curl                                                   */

/* The body of `curl -s ARGS`, malloc'd (NULL: curl failed). */
static char *curl(const char *args)
{
    char cmd[1200], *out = NULL;
    size_t len = 0;
    FILE *p, *m;
    int c;

    snprintf(cmd, sizeof(cmd), "curl -s --max-time 30 %s", args);
    p = popen(cmd, "r");
    if (!p)
        return NULL;
    m = open_memstream(&out, &len);
    while ((c = fgetc(p)) != EOF)
        fputc(c, m);
    fclose(m);
    if (pclose(p) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* One series of /metrics, -1 when absent. */
static double metric(const char *name)
{
    char args[200], *body, *p;
    double v = -1;

    snprintf(args, sizeof(args), "http://127.0.0.1:%d/metrics", port);
    body = curl(args);
    for (p = body; p && (p = strstr(p, name)); p += strlen(name))
        if ((p == body || p[-1] == '\n') && p[strlen(name)] == ' ')
            v = atof(p + strlen(name) + 1);
    free(body);
    return v;
}

/* A synchronous invocation of `fn` with {"async": n}; the HTTP status. */
static int invoke(const char *fn, int n)
{
    char args[400], *out;
    int code = -1;

    snprintf(args, sizeof(args), "-o /dev/null -w '%%{http_code}' -d '{\"async\":%d}' "
             "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations", n, port, fn);
    out = curl(args);
    if (out)
        code = atoi(out);
    free(out);
    return code;
}

/* The environment that ran probe's invocation n (from probe.txt). */
static char *probe_env(int n)
{
    char path[400], line[400], *env = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "%s/probe.txt", dir);
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        char src, where[64], e[256];
        long id;
        double ms;
        if (sscanf(line, "%c %ld %lf %63s %255s", &src, &id, &ms, where, e) == 5 && id == n) {
            free(env);
            env = strdup(e);
        }
    }
    if (f)
        fclose(f);
    return env;
}

/* SIGHUP, then wait for the reload's line in the log (the count of
 * "reload: " summaries or "reload failed" lines grows). */
static size_t count_in_log(const char *what)
{
    char line[4096];
    size_t n = 0;
    FILE *f = fopen(logp, "r");

    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return n;
}

static void hup(void)
{
    size_t before = count_in_log("[reload] reload: ") + count_in_log("reload failed");
    double deadline = now_ms() + 20000;

    cr_assert_eq(kill(sluice, SIGHUP), 0);
    while (count_in_log("[reload] reload: ") + count_in_log("reload failed") == before) {
        cr_assert_lt(now_ms(), deadline, "no reload line after SIGHUP; see %s", logp);
        usleep(50000);
    }
}

/* `sluice reload CONFIG`: its exit code, stdout+stderr in *out. */
static int reload_cmd(char **out)
{
    char cmd[1700], exe[1200];

    th_build_path(exe, sizeof(exe), top, "sluice");
    snprintf(cmd, sizeof(cmd), "%s reload %s 2>&1", exe, cfg);
    {
        FILE *p = popen(cmd, "r");
        size_t len = 0;
        FILE *m = open_memstream(out, &len);
        int c, st;
        while ((c = fgetc(p)) != EOF)
            fputc(c, m);
        fclose(m);
        st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
}

/* ------------------------------------------------------------------ */
/* Producers                                                           */

static void pace(double t0, int done, int total)
{
    double due = t0 + (double)done / total * PRODUCE_S * 1000.0, now = now_ms();

    if (due > now)
        usleep((useconds_t)((due - now) * 1000));
}

static void *kafka_producer(void *arg)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char errstr[256], v[16];
    rd_kafka_t *rk;
    double t0 = now_ms();

    (void)arg;
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "linger.ms", "5", errstr, sizeof(errstr));
    rd_kafka_conf_set(c, "enable.idempotence", "true", errstr, sizeof(errstr));
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    if (!rk) {
        atomic_fetch_add(&prod_errors, 1);
        return NULL;
    }
    for (int i = 0; i < NREC; i++) {
        rd_kafka_resp_err_t e;
        int n = snprintf(v, sizeof(v), "%d", i);
        do {
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(names), RD_KAFKA_V_VALUE(v, (size_t)n),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 50);
        } while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL);
        if (e)
            atomic_fetch_add(&prod_errors, 1);
        if (i % CHUNK == CHUNK - 1) {
            rd_kafka_poll(rk, 0);
            pace(t0, i + 1, NREC);
        }
    }
    if (rd_kafka_flush(rk, 60000) != 0)
        atomic_fetch_add(&prod_errors, 1);
    rd_kafka_destroy(rk);
    atomic_fetch_sub(&producing, 1);
    return NULL;
}

static void *redis_producer(void *arg)
{
    redisContext *rc = redisConnect(rhost, rport);
    const char *suffix = arg;
    double t0 = now_ms();

    if (!rc || rc->err) {
        atomic_fetch_add(&prod_errors, 1);
        return NULL;
    }
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    for (int i = 0; i < NREC; i += CHUNK) {
        for (int j = i; j < i + CHUNK; j++)
            redisAppendCommand(rc, "XADD %s%s * body %d", names, suffix, j);
        for (int j = i; j < i + CHUNK; j++) {
            redisReply *r = NULL;
            if (redisGetReply(rc, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR)
                atomic_fetch_add(&prod_errors, 1);
            if (r)
                freeReplyObject(r);
        }
        pace(t0, i + CHUNK, NREC);
    }
    redisFree(rc);
    atomic_fetch_sub(&producing, 1);
    return NULL;
}

static void *pg_producer(void *arg)
{
    PGconn *c = PQconnectdb(pgdsn);
    double t0 = now_ms();
    char q[300];

    (void)arg;
    if (PQstatus(c) != CONNECTION_OK) {
        atomic_fetch_add(&prod_errors, 1);
        return NULL;
    }
    for (int i = 0; i < NREC; i += CHUNK) {
        PGresult *r;
        snprintf(q, sizeof(q), "INSERT INTO public.%s SELECT g, 'v' FROM generate_series(%d, %d) g",
                 names, i, i + CHUNK - 1);
        r = PQexec(c, q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            atomic_fetch_add(&prod_errors, 1);
        PQclear(r);
        pace(t0, i + CHUNK, NREC);
    }
    PQfinish(c);
    atomic_fetch_sub(&producing, 1);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Reading what the handler wrote                                      */

struct tally {
    unsigned char *seen[4];        /* per source (k, r, p, b), per id: times processed */
    size_t         dups[4], missing[4];
};

/* Records of both Redis streams carry "r": b's producer writes ids offset
 * by NREC, so the tally tells them apart. */
static void tally_read(struct tally *t)
{
    char path[400], line[512];
    FILE *f;

    for (int s = 0; s < 4; s++) {
        if (!t->seen[s])
            t->seen[s] = calloc(NREC, 1);
        memset(t->seen[s], 0, NREC);
        t->dups[s] = t->missing[s] = 0;
    }
    snprintf(path, sizeof(path), "%s/out.txt", dir);
    if ((f = fopen(path, "r"))) {
        while (fgets(line, sizeof(line), f)) {
            char src;
            long id;
            double ms;
            int s;
            if (sscanf(line, "%c %ld %lf", &src, &id, &ms) != 3)
                continue;
            s = src == 'k' ? 0 : src == 'p' ? 2 : src == 'r' ? (id >= NREC ? 3 : 1) : -1;
            if (s == 3)
                id -= NREC;
            if (s < 0 || id < 0 || id >= NREC)
                continue;
            if (t->seen[s][id] < 255)
                t->seen[s][id]++;
        }
        fclose(f);
    }
    for (int s = 0; s < 4; s++)
        for (int id = 0; id < NREC; id++) {
            if (t->seen[s][id] > 1)
                t->dups[s] += t->seen[s][id] - 1u;
            if (!t->seen[s][id])
                t->missing[s]++;
        }
}

/* The environments (tokens) that ran records of rec at or after `from`
 * (Unix ms), or before `until`: how many of them are in `set` (n). */
static size_t envs_of_rec(double from, double until, char set[][128], size_t max)
{
    char path[400], line[512];
    size_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/out.txt", dir);
    if (!(f = fopen(path, "r")))
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char src, where[64], e[128];
        long id;
        double ms;
        bool have = false;
        if (sscanf(line, "%c %ld %lf %63s %127s", &src, &id, &ms, where, e) != 5 || ms < from ||
            ms >= until)
            continue;
        for (size_t i = 0; i < n && !have; i++)
            have = strcmp(set[i], e) == 0;
        if (!have && n < max)
            snprintf(set[n++], 128, "%s", e);
    }
    fclose(f);
    return n;
}

/* A redis producer for b writes ids NREC..2*NREC-1 so the tally can tell. */
static void *redis_b_producer(void *arg)
{
    redisContext *rc = redisConnect(rhost, rport);
    double t0 = now_ms();

    (void)arg;
    if (!rc || rc->err) {
        atomic_fetch_add(&prod_errors, 1);
        return NULL;
    }
    if (th_redis_password())
        freeReplyObject(redisCommand(rc, "AUTH %s", th_redis_password()));
    for (int i = 0; i < NREC; i += CHUNK) {
        for (int j = i; j < i + CHUNK; j++)
            redisAppendCommand(rc, "XADD %s_b * body %d", names, NREC + j);
        for (int j = i; j < i + CHUNK; j++) {
            redisReply *r = NULL;
            if (redisGetReply(rc, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR)
                atomic_fetch_add(&prod_errors, 1);
            if (r)
                freeReplyObject(r);
        }
        pace(t0, i + CHUNK, NREC);
    }
    redisFree(rc);
    atomic_fetch_sub(&producing, 1);
    return NULL;
}

/* ------------------------------------------------------------------ */

Test(reload, ten_reloads_under_load_lose_nothing)
{
    pthread_t th[4];
    struct shape sh = { .b = false, .r_batch = 100, .k_batch = 500, .p_batch = 500, .foo = 1,
                        .memory = 128, .rec2 = false, .dlq = 1 };
    struct tally t = { 0 };
    char q[400], errstr[256], *out = NULL, *body, args[200];
    char before[64][128], after[64][128];
    char *p1, *p2;
    double deadline, t4;
    size_t nb, na;
    int rc;
    PGconn *c;

    c = PQconnectdb(pgdsn);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    {
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        rd_kafka_t *rk;
        rd_kafka_NewTopic_t *nt;
        rd_kafka_queue_t *kq;
        rd_kafka_event_t *ev;

        rd_kafka_conf_set(kc, "bootstrap.servers", brokers, errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
        cr_assert_not_null(rk, "%s", errstr);
        nt = rd_kafka_NewTopic_new(names, 3, 1, errstr, sizeof(errstr));
        kq = rd_kafka_queue_new(rk);
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, kq);
        ev = rd_kafka_queue_poll(kq, 30000);
        cr_assert_not_null(ev, "no CreateTopics result");
        rd_kafka_event_destroy(ev);
        rd_kafka_NewTopic_destroy(nt);
        rd_kafka_queue_destroy(kq);
        rd_kafka_destroy(rk);
    }
    snprintf(q, sizeof(q), "CREATE TABLE public.%s (id int PRIMARY KEY, v text)", names);
    PQclear(PQexec(c, q));

    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(logp, sizeof(logp), "%s/sluice.log", dir);
    port = th_free_port();
    write_cfg(&sh);
    sluice = th_run_sluice(top, cfg, logp);
    cr_assert_gt(sluice, 0);
    deadline = now_ms() + 60000;
    while (!th_healthy(port)) {
        cr_assert_lt(now_ms(), deadline, "not healthy; see %s", logp);
        usleep(100000);
    }
    for (;;) {
        PGresult *r;
        bool have;
        snprintf(q, sizeof(q), "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication "
                 "r ON r.pid = s.active_pid WHERE s.slot_name = '%s'", names);
        r = PQexec(c, q);
        have = PQntuples(r) > 0;
        PQclear(r);
        if (have)
            break;
        cr_assert_lt(now_ms(), deadline, "nothing streams the slot; see %s", logp);
        usleep(100000);
    }
    cr_expect_eq(metric("sluice_config_reloads_total"), 0);
    cr_expect_eq(metric("sluice_config_reload_failures_total"), 0);

    atomic_store(&producing, 4);
    cr_assert_eq(pthread_create(&th[0], NULL, kafka_producer, NULL), 0);
    cr_assert_eq(pthread_create(&th[1], NULL, redis_producer, ""), 0);
    cr_assert_eq(pthread_create(&th[2], NULL, pg_producer, NULL), 0);
    cr_assert_eq(pthread_create(&th[3], NULL, redis_b_producer, NULL), 0);
    sleep(3);
    cr_assert_eq(invoke("probe", 1), 200);

    /* 1: a source added */
    sh.b = true;
    write_cfg(&sh);
    hup();
    cr_expect_eq(count_in_log("+1 source: b"), 1, "the summary names the added source");
    sleep(3);

    /* 2: a batch size (Redis), through `sluice reload` */
    sh.r_batch = 50;
    write_cfg(&sh);
    rc = reload_cmd(&out);
    cr_expect_eq(rc, 0, "sluice reload: %s", out);
    cr_expect(strstr(out, "~1 source: r (batch_size)") != NULL, "%s", out);
    free(out);
    sleep(3);

    /* 3: an invalid file changes nothing */
    sh.invalid = true;
    write_cfg(&sh);
    rc = reload_cmd(&out);
    cr_expect_eq(rc, 1, "sluice reload of an invalid file: %s", out);
    cr_expect(strstr(out, "sluice.yaml:") && strstr(out, "max_connections") &&
              strstr(out, "bogus_key"), "every problem with file:line:col: %s", out);
    free(out);
    cr_expect_eq(metric("sluice_config_reload_failures_total"), 1);
    snprintf(args, sizeof(args), "-w ' %%{http_code}' http://127.0.0.1:%d/readyz", port);
    body = curl(args);
    cr_assert_not_null(body);
    cr_expect(strstr(body, "\"status\":\"ready\"") && strstr(body, "\"ok\":false") &&
              strstr(body, "bogus_key") && strstr(body, " 200"), "/readyz: %s", body);
    free(body);
    sh.invalid = false;
    sleep(2);

    /* 4: a function's environment and memory: its pool is replaced; the
     * probe function, unchanged, keeps its environment */
    nb = envs_of_rec(0, now_ms(), before, 64);
    sh.foo = 2;
    sh.memory = 256;
    write_cfg(&sh);
    t4 = now_ms();
    hup();
    cr_expect_eq(count_in_log("~1 function: rec (memory_mb, environment)"), 1,
                 "the summary names the changed function and keys");
    cr_assert_eq(invoke("probe", 2), 200);
    p1 = probe_env(1);
    p2 = probe_env(2);
    cr_assert(p1 && p2, "probe wrote no environment");
    cr_expect_str_eq(p1, p2, "an unchanged function keeps its warm environment");
    free(p2);
    sleep(3);

    /* 5: a function added */
    sh.rec2 = true;
    write_cfg(&sh);
    hup();
    cr_expect_eq(invoke("rec2", 1), 200, "an added function answers");
    sleep(2);

    /* 6: a source removed (its stream keeps filling) */
    sh.b = false;
    write_cfg(&sh);
    hup();
    cr_expect_eq(count_in_log("-1 source: b"), 1);
    sleep(3);

    /* 7: the dead-letter sink moved, and a Postgres batch size */
    sh.dlq = 2;
    sh.p_batch = 250;
    write_cfg(&sh);
    hup();
    cr_expect_eq(count_in_log("~1 sink: dlq (path)"), 1);
    sleep(3);

    /* 8: a function removed */
    sh.rec2 = false;
    write_cfg(&sh);
    hup();
    cr_expect_eq(invoke("rec2", 2), 404, "a removed function is gone");
    sleep(2);

    /* 9: the source back, and a Kafka batch size */
    sh.b = true;
    sh.k_batch = 200;
    write_cfg(&sh);
    hup();
    sleep(3);

    /* 10: nothing changed */
    hup();
    cr_expect_eq(count_in_log("reload: no change"), 1);
    cr_assert_eq(invoke("probe", 3), 200);
    p2 = probe_env(3);
    cr_expect(p2 && strcmp(p1, p2) == 0, "probe's environment survived ten reloads: %s, %s", p1,
              p2 ? p2 : "(none)");
    free(p1);
    free(p2);

    cr_expect_eq(metric("sluice_config_reloads_total"), 9);
    cr_expect_eq(metric("sluice_config_reload_failures_total"), 1);

    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_expect_eq(atomic_load(&prod_errors), 0);

    /* every record processed */
    deadline = now_ms() + 120000;
    for (;;) {
        size_t missing = 0;
        tally_read(&t);
        for (int s = 0; s < 4; s++)
            missing += t.missing[s];
        if (missing == 0 || now_ms() > deadline)
            break;
        sleep(1);
    }
    for (int s = 0; s < 4; s++) {
        cr_log_info("source %c: %d records, %zu missing, %zu duplicates", SOURCES[s], NREC,
                    t.missing[s], t.dups[s]);
        cr_expect_eq(t.missing[s], 0, "source %c: %zu of %d records never processed; see %s",
                     SOURCES[s], t.missing[s], NREC, logp);
    }
    {
        char path[400];
        snprintf(path, sizeof(path), "%s/dlq-1.jsonl", dir);
        cr_expect_eq(th_count_jsonl(path), 0, "nothing fails, so nothing is dead-lettered");
        snprintf(path, sizeof(path), "%s/dlq-2.jsonl", dir);
        cr_expect_eq(th_count_jsonl(path), 0);
    }

    /* the changed function: records after the old pool's last invocation
     * ran in new environments only */
    na = envs_of_rec(t4 + 5000, now_ms() + 1, after, 64);
    cr_expect_gt(nb, 0);
    cr_expect_gt(na, 0);
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            cr_expect(strcmp(after[i], before[j]) != 0, "environment %s of rec ran before its "
                      "change and after it", after[i]);

    /* stops cleanly */
    kill(sluice, SIGTERM);
    cr_expect_eq(waitpid(sluice, &rc, 0), sluice);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "exit status %d", rc);
    sluice = 0;
    for (int s = 0; s < 4; s++)
        free(t.seen[s]);
    PQfinish(c);
}
