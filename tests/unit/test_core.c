/* Core: error codes, logging (text, JSON, levels, redaction), the worker
 * pool and the runtime's start/stop sequencing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/datadir.h"
#include "sluice/err.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pgconn.h"
#include "sluice/pool.h"
#include "sluice/runtime.h"

/* ------------------------------------------------------------------ */
/* errors                                                              */

Test(err, every_code_has_text_and_name)
{
    for (int code = -1; code >= SL_EINTERNAL; code--) {
        cr_expect_str_neq(sl_strerror(code), "unknown error", "code %d", code);
        cr_expect_eq(strncmp(sl_errname(code), "SL_E", 4), 0);
        cr_expect_str_neq(sl_errname(code), "SL_E?", "code %d", code);
    }
    cr_expect_str_eq(sl_strerror(SL_ENOMEM), "out of memory");
    cr_expect_str_eq(sl_errname(SL_ETIMEDOUT), "SL_ETIMEDOUT");
    cr_expect_str_eq(sl_strerror(0), "success");
    cr_expect_str_eq(sl_strerror(SL_EINTERNAL - 1), "unknown error");
    cr_expect_str_eq(sl_strerror(5), "unknown error");
}

Test(err, set_fills_detail_and_returns_code)
{
    struct sl_err e;

    sl_err_clear(&e);
    cr_expect_eq(sl_err_set(&e, SL_ECONN, true, "cannot connect to %s: %s", "127.0.0.1:1",
                            "connection refused"), SL_ECONN);
    cr_expect_eq(e.code, SL_ECONN);
    cr_expect(e.retriable);
    cr_expect_str_eq(e.msg, "cannot connect to 127.0.0.1:1: connection refused");
    cr_expect_eq(sl_err_set(NULL, SL_EIO, false, "x"), SL_EIO);
}

/* ------------------------------------------------------------------ */
/* logging: lines go to a pipe we read back                            */

static int logp[2];

static void log_setup(void)
{
    cr_assert_eq(pipe(logp), 0);
    sl_log_set_fd(logp[1]);
    sl_log_set_level(SL_LOG_INFO);
    sl_log_set_format(SL_LOG_TEXT);
    sl_log_set_debug(0);
}

static char *log_read(void)
{
    static char buf[65536];
    ssize_t n;

    close(logp[1]);
    n = read(logp[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(logp[0]);
    return buf;
}

Test(log, text_lines_have_level_and_instance, .init = log_setup)
{
    char *out;

    SL_INFO("source:orders", "started %d lanes", 4);
    SL_WARN(NULL, "plain");
    out = log_read();
    cr_expect(strstr(out, "info  [source:orders] started 4 lanes\n") != NULL, "got: %s", out);
    cr_expect(strstr(out, "warn  plain\n") != NULL, "got: %s", out);
    cr_expect_eq(out[4], '-'); /* starts with an ISO date */
    cr_expect_eq(out[23], 'Z');
}

static int evaluated;
static int side_effect(void)
{
    return ++evaluated;
}

Test(log, levels_filter_before_arguments_are_evaluated, .init = log_setup)
{
    char *out;

    sl_log_set_level(SL_LOG_WARN);
    SL_INFO(NULL, "hidden %d", side_effect());
    SL_DEBUG(SL_DBG_KAFKA, NULL, "hidden too %d", side_effect());
    sl_log_set_debug(1u << SL_DBG_KAFKA);
    SL_DEBUG(SL_DBG_KAFKA, "source:k", "kafka debug %d", side_effect());
    SL_DEBUG(SL_DBG_REDIS, NULL, "redis debug %d", side_effect());
    SL_ERROR(NULL, "shown");
    out = log_read();
    cr_expect_eq(evaluated, 1, "arguments of filtered lines were evaluated");
    cr_expect(strstr(out, "hidden") == NULL);
    cr_expect(strstr(out, "redis debug") == NULL);
    cr_expect(strstr(out, "debug [source:k] kafka debug 1\n") != NULL, "got: %s", out);
    cr_expect(strstr(out, "error shown\n") != NULL);
}

Test(log, json_lines_parse_and_escape, .init = log_setup)
{
    json_t *j;
    json_error_t jerr;
    char *out;

    sl_log_set_format(SL_LOG_JSON);
    SL_ERROR("sink:d\"q", "bad \"value\"\n\tand \x01 control");
    out = log_read();
    cr_expect_eq(out[strlen(out) - 1], '\n');
    j = json_loads(out, 0, &jerr);
    cr_assert_not_null(j, "not JSON: %s (%s)", out, jerr.text);
    cr_expect_str_eq(json_string_value(json_object_get(j, "level")), "error");
    cr_expect_str_eq(json_string_value(json_object_get(j, "instance")), "sink:d\"q");
    cr_expect_str_eq(json_string_value(json_object_get(j, "msg")), "bad \"value\"\n\tand \x01 control");
    cr_expect_not_null(json_object_get(j, "ts"));
    json_decref(j);
}

Test(log, long_lines_are_cut_but_stay_one_line, .init = log_setup)
{
    char *big = sl_malloc(20000), *out;

    memset(big, 'x', 19999);
    big[19999] = '\0';
    SL_INFO(NULL, "%s", big);
    out = log_read();
    cr_expect_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line only");
    cr_expect_lt(strlen(out), 9000);
    free(big);
}

Test(log, debug_context_names)
{
    cr_expect_eq(sl_log_ctx_parse("kafka"), 1L << SL_DBG_KAFKA);
    cr_expect_eq(sl_log_ctx_parse("sink"), 1L << SL_DBG_SINK);
    cr_expect_eq(sl_log_ctx_parse("all"), (1L << SL_DBG__COUNT) - 1);
    cr_expect_eq(sl_log_ctx_parse("disk"), -1);
}

Test(log, redaction_hides_passwords)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0" },
        { "redis://user:p@ss@host:1", "redis://user:***@host:1" },
        { "redis://127.0.0.1:6379", "redis://127.0.0.1:6379" },
        /* redis://SECRET@host: a userinfo without ':' is the password */
        { "redis://S3cretOnly@127.0.0.1:6379", "redis://***@127.0.0.1:6379" },
        { "rediss://alice@host", "rediss://***@host" },
        { "url REDIS://pw@h and postgresql://app@db/x", "url REDIS://***@h and postgresql://app@db/x" },
        { "host=db password = 'hunter2' port=1", "host=db password = *** port=1" },
        { "host=db PASSWORD=hunter2", "host=db PASSWORD=***" },
        { "host=db user=app password=hunter2 dbname=x", "host=db user=app password=*** dbname=x" },
        { "host=db password='a b\\' c' port=1", "host=db password=*** port=1" },
        { "postgresql://app:pw@db/x?password=two&sslmode=require",
          "postgresql://app:***@db/x?password=***&sslmode=require" },
        { "no secrets here", "no secrets here" },
    };
    char out[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_log_redact(cases[i].in, out, sizeof(out));
        cr_expect_str_eq(out, cases[i].out, "input %s", cases[i].in);
    }
    sl_log_redact("redis://:verylongpassword@h", out, 12);
    cr_expect_eq(strlen(out), 11);
    cr_expect(strstr(out, "verylong") == NULL);
}

/* Hardening item 15: what a handler prints (or a client sends) cannot end
 * a line, rewrite the screen or break the JSON of the line it is logged in. */
#define HOSTILE "[req] a\x1b[2Kb\rc\nFAKE error forged\td\x7f e\xc2\x9b f\xff g \xc3\xa9"

Test(log, text_escapes_controls_and_bytes_that_are_not_utf8, .init = log_setup)
{
    char *out;

    SL_INFO("function:x\x1b[1m", "%s", HOSTILE);
    out = log_read();
    cr_expect_eq(strchr(out, '\n'), out + strlen(out) - 1, "more than one line: %s", out);
    cr_expect(strchr(out, '\x1b') == NULL && strchr(out, '\r') == NULL &&
                  strchr(out, '\x7f') == NULL && strchr(out, '\t') == NULL,
              "raw control characters in: %s", out);
    cr_expect(strstr(out, "[function:x\\x1b[1m] [req] a\\x1b[2Kb\\rc\\nFAKE error forged\\td"
                          "\\x7f e\\xc2\\x9b f\\xff g \xc3\xa9\n") != NULL,
              "got: %s", out);
}

Test(log, json_escapes_c1_controls_and_bytes_that_are_not_utf8, .init = log_setup)
{
    json_error_t jerr;
    json_t *j;
    char *out;

    sl_log_set_format(SL_LOG_JSON);
    SL_INFO(NULL, "%s", HOSTILE);
    out = log_read();
    cr_expect(strchr(out, '\x1b') == NULL && strchr(out, '\x7f') == NULL, "raw: %s", out);
    j = json_loads(out, 0, &jerr);
    cr_assert_not_null(j, "not JSON: %s (%s)", out, jerr.text);
    cr_expect_str_eq(json_string_value(json_object_get(j, "msg")),
                     "[req] a\x1b[2Kb\rc\nFAKE error forged\td\x7f e\xc2\x9b f\\xff g \xc3\xa9");
    json_decref(j);
}

/* Reads logp[0] to its end, keeping the last bytes in drain_tail. */
static char drain_tail[4096];

static void *drain_pipe(void *arg)
{
    char chunk[8192];
    size_t have = 0;
    ssize_t n;

    (void)arg;
    while ((n = read(logp[0], chunk, sizeof(chunk))) > 0) {
        size_t k = (size_t)n;

        if (k >= sizeof(drain_tail) - 1) {
            memcpy(drain_tail, chunk + k - (sizeof(drain_tail) - 1), sizeof(drain_tail) - 1);
            have = sizeof(drain_tail) - 1;
        } else {
            if (have + k > sizeof(drain_tail) - 1) {
                size_t cut = have + k - (sizeof(drain_tail) - 1);
                memmove(drain_tail, drain_tail + cut, have - cut);
                have -= cut;
            }
            memcpy(drain_tail + have, chunk, k);
            have += k;
        }
        drain_tail[have] = '\0';
    }
    return NULL;
}

/* Hardening item 2: with the writer thread, a log fd that takes nothing
 * blocks no caller; what does not fit is dropped, counted and reported. */
Test(log, writer_thread_never_blocks_and_counts_drops, .init = log_setup, .timeout = 30)
{
    static char buf[1 << 16];
    char line[200];
    size_t got = 0;
    bool marker = false;

    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    cr_assert_eq(sl_log_start_writer(32 * 1024), 0);
    /* nobody reads the pipe yet: 4 MB of lines fill it and the queue */
    for (int i = 0; i < 20000; i++)
        SL_INFO(NULL, "%d %s", i, line);
    cr_expect_gt(sl_log_dropped(), 0, "nothing dropped with a pipe that is not read");
    /* once the pipe is read, the writer says how many were dropped */
    while (!marker) {
        /* keep the last 256 bytes read: the marker may straddle two reads */
        size_t keep = strlen(buf) > 256 ? 256 : strlen(buf);
        ssize_t n;

        memmove(buf, buf + strlen(buf) - keep, keep);
        n = read(logp[0], buf + keep, sizeof(buf) - 1 - keep);
        cr_assert_gt(n, 0);
        buf[keep + (size_t)n] = '\0';
        got += (size_t)n;
        marker = strstr(buf, "warn  [log] ") && strstr(buf, " log lines dropped: ");
    }
    /* the marker may come before the writer is through (drops go on while
     * it writes): drain the rest while the writer stops, so that neither it
     * nor the direct write below waits on a full pipe */
    {
        pthread_t t;

        drain_tail[0] = '\0';
        cr_assert_eq(pthread_create(&t, NULL, drain_pipe, NULL), 0);
        sl_log_stop_writer(5000);
        SL_INFO(NULL, "direct again");
        close(logp[1]);
        pthread_join(t, NULL);
    }
    close(logp[0]);
    cr_expect(strstr(drain_tail, "info  direct again\n") != NULL, "after stop: %s", drain_tail);
    cr_expect_lt(got, (size_t)20000 * 200, "nothing was dropped");
}

Test(log, scrub_takes_a_secret_out_by_value)
{
    char msg[64] = "invalid percent-encoded token: \"hun%zzter2\" (hun%zzter2)";
    char small[16] = "abcSECRETdef";

    sl_log_scrub(msg, sizeof(msg), "hun%zzter2");
    cr_expect_str_eq(msg, "invalid percent-encoded token: \"***\" (***)");
    sl_log_scrub(msg, sizeof(msg), "");
    sl_log_scrub(msg, sizeof(msg), NULL);
    cr_expect_str_eq(msg, "invalid percent-encoded token: \"***\" (***)");
    sl_log_scrub(small, sizeof(small), "SECRET");
    cr_expect_str_eq(small, "abc***def");
}

/* libpq quotes the part of a URI it cannot decode, password included, with
 * nothing around it that looks like a password: sl_pgconn_dsn_check takes
 * the DSN's passwords out by value. */
Test(log, pg_dsn_errors_hide_passwords)
{
    static const char *const dsns[] = {
        "postgresql://app:Hunter%zz2pw@db/x",
        "postgresql://app@db/x?password=Hunter%zz2pw",
        "postgresql://app:Hunter2pw@[::1/x",
        "postgresql://app:Hunter2pw@db/x?password=Hunter2pw&bogus=1",
        "host=db password='Hunter2pw' port",
        "host=db password = Hunter2pw bogus=1",
    };
    char why[256];

    for (size_t i = 0; i < sizeof(dsns) / sizeof(dsns[0]); i++) {
        cr_expect_eq(sl_pgconn_dsn_check(dsns[i], why, sizeof(why)), -1, "%zu", i);
        cr_expect(why[0] != '\0', "no message for dsn %zu", i);
        cr_expect(strstr(why, "Hunter") == NULL, "dsn %zu: password in '%s'", i, why);
    }
    cr_expect_eq(sl_pgconn_dsn_check("postgresql://app:pw@db/x", why, sizeof(why)), 0);
    cr_expect_eq(sl_pgconn_dsn_check("host=db password=pw", why, sizeof(why)), 0);
}

/* A mistyped property name may carry a secret ("sasl.pasword"); a secret's
 * name ("password", "secret", "key") never shows its value. */
Test(log, kafka_properties_hide_secret_values)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char why[768];

    cr_assert_eq(sl_kafka_conf_set(kc, "sasl.pasword", "Kafka-Secret-42", why, sizeof(why)), -1);
    cr_expect(strstr(why, "Kafka-Secret-42") == NULL, "%s", why);
    cr_expect(strstr(why, "sasl.pasword") != NULL, "%s", why);
    cr_assert_eq(sl_kafka_conf_set(kc, "ssl.key.password", "x", why, sizeof(why)), 0);
    /* a known non-secret property with a bad value still says which */
    cr_assert_eq(sl_kafka_conf_set(kc, "acks", "lots", why, sizeof(why)), -1);
    cr_expect(strstr(why, "acks=lots") != NULL, "%s", why);
    cr_assert_eq(sl_kafka_conf_set(kc, "sasl.oauthbearer.client.secret.x", "Kafka-Secret-42", why,
                                   sizeof(why)), -1);
    cr_expect(strstr(why, "Kafka-Secret-42") == NULL, "%s", why);
    cr_expect(sl_kafka_secret_property("SSL.KEY.PEM"));
    cr_expect(sl_kafka_secret_property("sasl.password"));
    cr_expect(!sl_kafka_secret_property("bootstrap.servers"));
    rd_kafka_conf_destroy(kc);
}

/* ------------------------------------------------------------------ */
/* worker pool                                                         */

struct pool_job {
    int              id;
    pthread_t        worker;
    struct event_base *base;
};

static atomic_int worked;
static int done_order[64], ndone;
static pthread_t loop_thread;
static int done_off_loop;

static void job_work(void *arg)
{
    struct pool_job *j = arg;

    j->worker = pthread_self();
    usleep(1000);
    atomic_fetch_add(&worked, 1);
}

static void job_done(void *arg)
{
    struct pool_job *j = arg;

    if (!pthread_equal(pthread_self(), loop_thread))
        done_off_loop++;
    done_order[ndone++] = j->id;
    if (ndone == 64)
        event_base_loopexit(j->base, NULL);
}

Test(pool, work_runs_on_workers_and_done_on_the_loop)
{
    struct event_base *base = event_base_new();
    struct pool_job jobs[64];
    struct sl_pool *pool;
    struct sl_err err;
    int off_loop = 0;

    loop_thread = pthread_self();
    cr_assert_eq(sl_pool_new(base, 3, &pool, &err), 0);
    for (int i = 0; i < 64; i++) {
        jobs[i].id = i;
        jobs[i].base = base;
        sl_pool_submit(pool, job_work, job_done, &jobs[i]);
    }
    cr_expect_gt(sl_pool_pending(pool), 0);
    event_base_dispatch(base);
    cr_expect_eq(atomic_load(&worked), 64);
    cr_expect_eq(ndone, 64);
    cr_expect_eq(done_off_loop, 0, "done callbacks ran off the loop thread");
    for (int i = 0; i < 64; i++)
        off_loop += !pthread_equal(jobs[i].worker, loop_thread);
    cr_expect_eq(off_loop, 64, "work ran on the loop thread");
    cr_expect_eq(sl_pool_pending(pool), 0);
    sl_pool_free(pool);
    event_base_free(base);
}

Test(pool, free_finishes_queued_work)
{
    struct event_base *base = event_base_new();
    struct pool_job jobs[10];
    struct sl_pool *pool;
    struct sl_err err;

    loop_thread = pthread_self();
    cr_assert_eq(sl_pool_new(base, 1, &pool, &err), 0);
    for (int i = 0; i < 10; i++) {
        jobs[i].id = i;
        jobs[i].base = base;
        sl_pool_submit(pool, job_work, job_done, &jobs[i]);
    }
    sl_pool_free(pool); /* no loop run: free must still run all of it */
    cr_expect_eq(atomic_load(&worked), 10);
    cr_expect_eq(ndone, 10);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(done_order[i], i, "done out of order");
    event_base_free(base);
}

/* ------------------------------------------------------------------ */
/* runtime                                                             */

struct comp {
    struct sl_runtime   *rt;
    const char          *name;
    int                  fail_start;
    int                  async_stop;   /* finish stop from a timer */
    int                  never_stop;
    struct event        *timer;
    struct sl_component *c;
    char                *trace;        /* shared trace buffer */
};

static void trace(struct comp *k, const char *what)
{
    strcat(k->trace, what);
    strcat(k->trace, ":");
    strcat(k->trace, k->name);
    strcat(k->trace, " ");
}

static int comp_start(void *ctx, struct sl_err *err)
{
    struct comp *k = ctx;

    trace(k, "start");
    if (k->fail_start)
        return sl_err_set(err, SL_ECONN, true, "cannot connect");
    return 0;
}

static void comp_timer(evutil_socket_t fd, short what, void *arg)
{
    struct comp *k = arg;

    (void)fd, (void)what;
    trace(k, "stopped");
    sl_component_stopped(k->c);
}

static void comp_stop(void *ctx, struct sl_component *c)
{
    struct comp *k = ctx;
    struct timeval tv = { 0, 20000 };

    trace(k, "stop");
    k->c = c;
    if (k->never_stop)
        return;
    if (k->async_stop) {
        k->timer = evtimer_new(k->rt->base, comp_timer, k);
        evtimer_add(k->timer, &tv);
        return;
    }
    sl_component_stopped(c);
}

static void comp_free(void *ctx)
{
    struct comp *k = ctx;

    if (k->timer)
        event_free(k->timer);
    trace(k, "free");
}

static const struct sl_component_ops comp_ops = {
    .kind = "test", .start = comp_start, .stop = comp_stop, .free = comp_free,
};

static struct sl_runtime *make_rt(int64_t shutdown_ms)
{
    struct sl_runtime_opts o = { .shutdown_grace_ms = shutdown_ms, .worker_threads = 1 };
    struct sl_runtime *rt;
    struct sl_err err;

    cr_assert_eq(sl_runtime_new(&o, &rt, &err), 0, "%s", err.msg);
    return rt;
}

static void send_term(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    kill(getpid(), SIGTERM);
}

Test(runtime, sigterm_stops_components_in_reverse_order, .init = log_setup)
{
    static char tr[512];
    struct sl_runtime *rt = make_rt(5000);
    struct comp a = { .rt = rt, .name = "a", .trace = tr };
    struct comp b = { .rt = rt, .name = "b", .async_stop = 1, .trace = tr };
    struct timeval tv = { 0, 10000 };
    struct event *t = evtimer_new(rt->base, send_term, NULL);

    tr[0] = '\0';
    sl_runtime_add(rt, "a", &comp_ops, &a);
    sl_runtime_add(rt, "b", &comp_ops, &b);
    evtimer_add(t, &tv);
    cr_expect_eq(sl_runtime_run(rt), 0);
    event_free(t);
    sl_runtime_free(rt);
    cr_expect_str_eq(tr, "start:a start:b stop:b stop:a stopped:b free:b free:a ");
    cr_expect(strstr(log_read(), "SIGTERM received: stopping") != NULL);
}

Test(runtime, stop_timeout_ends_a_stuck_stop, .init = log_setup)
{
    static char tr[512];
    struct sl_runtime *rt = make_rt(50);
    struct comp a = { .rt = rt, .name = "a", .never_stop = 1, .trace = tr };
    struct timeval tv = { 0, 1000 };
    struct event *t = evtimer_new(rt->base, send_term, NULL);

    tr[0] = '\0';
    sl_runtime_add(rt, "stuck", &comp_ops, &a);
    evtimer_add(t, &tv);
    cr_expect_eq(sl_runtime_run(rt), 0);
    event_free(t);
    sl_runtime_free(rt);
    cr_expect_str_eq(tr, "start:a stop:a free:a ");
    cr_expect(strstr(log_read(), "[test:stuck] did not stop within shutdown_grace_s") != NULL);
}

Test(runtime, failed_start_stops_what_started, .init = log_setup)
{
    static char tr[512];
    struct sl_runtime *rt = make_rt(1000);
    struct comp a = { .rt = rt, .name = "a", .trace = tr };
    struct comp b = { .rt = rt, .name = "b", .fail_start = 1, .trace = tr };
    struct comp c = { .rt = rt, .name = "c", .trace = tr };

    tr[0] = '\0';
    sl_runtime_add(rt, "a", &comp_ops, &a);
    sl_runtime_add(rt, "b", &comp_ops, &b);
    sl_runtime_add(rt, "c", &comp_ops, &c);
    cr_expect_eq(sl_runtime_run(rt), 1);
    sl_runtime_free(rt);
    cr_expect_str_eq(tr, "start:a start:b stop:a free:c free:b free:a ");
    cr_expect(strstr(log_read(), "[test:b] cannot start: cannot connect") != NULL);
}

/* ------------------------------------------------------------------ */
/* data_dir                                                            */

static char dd_base[128];

static void dd_setup(void)
{
    snprintf(dd_base, sizeof(dd_base), "/tmp/sluice-test-datadir-%d", (int)getpid());
    cr_assert_eq(mkdir(dd_base, 0700), 0, "%s: %s", dd_base, strerror(errno));
}

static void dd_teardown(void)
{
    char cmd[200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dd_base);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

static char *dd_path(const char *rel)
{
    static char p[4][256];
    static int k;

    k = (k + 1) % 4;
    snprintf(p[k], sizeof(p[k]), "%s/%s", dd_base, rel);
    return p[k];
}

static unsigned mode_of(const char *path)
{
    struct stat st;

    cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
    return (unsigned)(st.st_mode & 07777);
}

/* What sluice makes is private whatever the umask; what another user
 * could write to (or owns) is refused, and so is a symbolic link. */
Test(datadir, made_private_and_unsafe_ones_refused, .init = dd_setup, .fini = dd_teardown)
{
    char why[512];
    mode_t old = umask(0);
    int fd;

    cr_assert_eq(sl_data_dir_prepare(dd_path("a/b/data"), why, sizeof(why)), 0, "%s", why);
    cr_expect_eq(mode_of(dd_path("a")), 0700);
    cr_expect_eq(mode_of(dd_path("a/b/data")), 0700);
    fd = sl_data_file_open(dd_path("a/b/data"), "async-consumer", O_RDWR | O_CREAT, why,
                           sizeof(why));
    cr_assert_geq(fd, 0, "%s", why);
    close(fd);
    cr_expect_eq(mode_of(dd_path("a/b/data/async-consumer")), 0600);
    umask(old);

    /* one an older sluice made 0644 is made private */
    fd = open(dd_path("a/b/data/old"), O_CREAT | O_WRONLY, 0644);
    cr_assert_geq(fd, 0);
    fchmod(fd, 0644);
    close(fd);
    fd = sl_data_file_open(dd_path("a/b/data"), "old", O_RDWR, why, sizeof(why));
    cr_assert_geq(fd, 0, "%s", why);
    close(fd);
    cr_expect_eq(mode_of(dd_path("a/b/data/old")), 0600);

    /* a file planted as a link is not followed */
    cr_assert_eq(symlink(dd_path("target"), dd_path("a/b/data/planted")), 0);
    cr_expect_eq(sl_data_file_open(dd_path("a/b/data"), "planted", O_RDWR | O_CREAT, why,
                                   sizeof(why)), -1);
    cr_expect(strstr(why, "symbolic link") != NULL, "%s", why);
    cr_expect_eq(access(dd_path("target"), F_OK), -1, "the link's target was created");

    /* writable by others, by the group, a link, or someone else's */
    cr_assert_eq(mkdir(dd_path("open"), 0700), 0);
    chmod(dd_path("open"), 0777);
    cr_expect_eq(sl_data_dir_prepare(dd_path("open"), why, sizeof(why)), -1);
    cr_expect(strstr(why, "writable by other users (mode 0777)") != NULL, "%s", why);
    cr_expect_eq(sl_data_dir_check(dd_path("open"), why, sizeof(why)), -1);
    chmod(dd_path("open"), 0770);
    cr_expect_eq(sl_data_dir_check(dd_path("open"), why, sizeof(why)), -1);
    chmod(dd_path("open"), 0755);
    cr_expect_eq(sl_data_dir_check(dd_path("open"), why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(symlink(dd_path("open"), dd_path("link")), 0);
    cr_expect_eq(sl_data_dir_prepare(dd_path("link"), why, sizeof(why)), -1);
    cr_expect(strstr(why, "symbolic link") != NULL, "%s", why);
    cr_expect_eq(sl_data_dir_check(dd_path("missing"), why, sizeof(why)), 0, "%s", why);
    if (geteuid() == 0) {
        cr_assert_eq(chown(dd_path("open"), 65534, 65534), 0);
        cr_expect_eq(sl_data_dir_check(dd_path("open"), why, sizeof(why)), -1);
        cr_expect(strstr(why, "owned by uid 65534") != NULL, "%s", why);
    } else {
        cr_expect_eq(sl_data_dir_check("/", why, sizeof(why)), -1, "/ is root's");
        cr_expect(strstr(why, "owned by uid 0") != NULL, "%s", why);
    }
}
