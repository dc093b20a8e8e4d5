/* bench snapstart: a Python environment restored from a SnapStart
 * template against one started cold.
 *
 * The handler, bench/handlers/snap.py, imports a service's worth of the
 * standard library at init. Two pools of the same function, one with
 * `snapstart: false` and one with `snapstart: true`, each time N
 * invocations that each land on a new environment, from sl_fnpool_invoke
 * to the callback: a cold start (sandbox spawn, interpreter start, imports)
 * or a restore (the template forks, the child re-seeds and says `ready`).
 * To make every timed invocation need a new environment, the environment
 * that served it is then kept busy by a {"hold": s} invocation that sleeps
 * until the pool is freed. The first invocation of each pool is not timed
 * (for SnapStart it waits for the template's init and snapshot).
 * value = snapstart p50 (ms), baseline = cold p50 (ms). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/sandbox.h"

#define N_MAX        30             /* timed invocations per pool, at most */
#define MEASURE_US   20e6           /* ... and at most this long per pool */
#define FIRST_US     20e6           /* the untimed first invocation */
#define TARGET_RATIO 0.1

static const char EVENT[] = "{\"bench\":\"snapstart\"}";
static const char HOLD[] = "{\"hold\":120}";

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* v sorted ascending; nearest-rank percentile */
static double pct(const double *v, size_t n, double p)
{
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* ------------------------------------------------------------------ */

struct call {
    bool   done, ok, cold;
    double t_end, init_ms, duration_ms;
    char   init_type[32];
    char   what[600];
};

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct call *c = arg;

    c->t_end = now_us();
    c->done = true;
    c->ok = r->ok;
    c->cold = r->cold;
    c->init_ms = r->init_ms;
    c->duration_ms = r->duration_ms;
    if (r->ok) {
        /* {"init_type": "..."} says how the environment started */
        json_t *j = json_loadb(r->payload, r->payload_len, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "init_type"));
        snprintf(c->init_type, sizeof(c->init_type), "%s", t ? t : "?");
        json_decref(j);
    } else {
        snprintf(c->what, sizeof(c->what), "%s: %s", r->error_type ? r->error_type : "?",
                 r->error_message ? r->error_message : "");
    }
}

/* A {"hold"} invocation: only its end is noticed (when the pool is freed). */
static int g_held_ended_early;

static void on_hold(const struct sl_invoke_result *r, void *arg)
{
    bool *closing = arg;

    if (!*closing) {
        g_held_ended_early++;
        fprintf(stderr, "snapstart: a held invocation ended early: %s: %s\n",
                r->error_type ? r->error_type : "ok", r->error_message ? r->error_message : "");
    }
}

struct series {
    const char *label;
    int         n;
    double      lat[N_MAX], init[N_MAX];
    double      first_ms;          /* the untimed first invocation */
};

/* One invocation; returns ms from the call to the callback, or -1. */
static double invoke_once(struct event_base *base, struct sl_fnpool *pool, struct call *c,
                          double limit_us, const char *want_type)
{
    struct sl_invoke_req req = { .event = EVENT, .event_len = sizeof(EVENT) - 1 };
    double t0;
    int rc;

    memset(c, 0, sizeof(*c));
    t0 = now_us();
    rc = sl_fnpool_invoke(pool, &req, on_result, c);
    if (rc != 0) {
        fprintf(stderr, "snapstart: sl_fnpool_invoke: %s\n", sl_strerror(rc));
        return -1;
    }
    /* the pool's reaper ticks every second: the loop never blocks longer */
    while (!c->done && now_us() - t0 < limit_us)
        event_base_loop(base, EVLOOP_ONCE);
    if (!c->done) {
        fprintf(stderr, "snapstart: no result after %.0f s\n", limit_us / 1e6);
        return -1;
    }
    if (!c->ok) {
        fprintf(stderr, "snapstart: invocation failed: %s\n", c->what);
        return -1;
    }
    if (!c->cold || strcmp(c->init_type, want_type) != 0) {
        fprintf(stderr, "snapstart: expected a new %s environment, got a %s %s one\n",
                want_type, c->cold ? "new" : "warm", c->init_type);
        return -1;
    }
    return (c->t_end - t0) / 1000.0;
}

static int run_series(struct event_base *base, struct sl_sandbox *sb,
                      const struct sl_function_conf *fn, struct series *s)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 1000 };
    struct sl_invoke_req hold = { .event = HOLD, .event_len = sizeof(HOLD) - 1 };
    const char *want = fn->snapstart ? "snap-start" : "on-demand";
    struct sl_fnpool *pool = NULL;
    struct sl_err err;
    struct call c;
    bool closing = false;
    double t0, ms;
    int rc = -1;

    sl_err_clear(&err);
    if (sl_fnpool_new(base, sb, fn, &po, &pool, &err) != 0) {
        fprintf(stderr, "snapstart: %s: sl_fnpool_new: %s\n", s->label, err.msg);
        return -1;
    }
    s->first_ms = invoke_once(base, pool, &c, FIRST_US, want);
    if (s->first_ms < 0)
        goto out;
    t0 = now_us();
    while (s->n < N_MAX && now_us() - t0 < MEASURE_US) {
        /* the only idle env takes the hold: the next invocation needs a new one */
        if (sl_fnpool_idle(pool) != 1 || sl_fnpool_invoke(pool, &hold, on_hold, &closing) != 0 ||
            sl_fnpool_idle(pool) != 0) {
            fprintf(stderr, "snapstart: %s: cannot hold the idle environment\n", s->label);
            goto out;
        }
        ms = invoke_once(base, pool, &c, MEASURE_US, want);
        if (ms < 0 || g_held_ended_early)
            goto out;
        s->init[s->n] = c.init_ms;
        s->lat[s->n++] = ms;
    }
    rc = 0;
out:
    closing = true;
    sl_fnpool_free(pool);
    return rc;
}

int main(void)
{
    char dir[] = "/tmp/sluice-bench-snapstart-XXXXXX";
    char handler[PATH_MAX], logpath[PATH_MAX + 16], *yaml = NULL, *state = NULL, *rt;
    struct sl_config *conf = NULL;
    struct sl_sandbox *sb = NULL;
    struct sl_sandbox_opts so;
    struct event_base *base = NULL;
    struct sl_diags d;
    struct sl_err err;
    static struct series cold = { .label = "cold" }, snap = { .label = "snapstart" };
    double c50, c99, s50, s99, ci50, si50;
    int logfd, code = 1;

    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SLUICE_RUNTIME_DIR")) {
        rt = realpath("runtime", NULL);
        if (rt)
            setenv("SLUICE_RUNTIME_DIR", rt, 1);
        free(rt);
    }
    if (!realpath("bench/handlers/snap.py", handler)) {
        fprintf(stderr, "snapstart: bench/handlers/snap.py: %s\n", strerror(errno));
        return 1;
    }
    if (!mkdtemp(dir))
        return perror("mkdtemp"), 1;
    snprintf(logpath, sizeof(logpath), "%s/sluice.log", dir);
    logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0644);
    if (logfd < 0)
        return perror(logpath), 1;
    sl_log_set_fd(logfd);
    sl_log_set_level(SL_LOG_INFO);
    if (getenv("SLUICE_BENCH_DEBUG")) /* the sandbox's debug lines, in the log file */
        sl_log_set_debug(1u << SL_DBG_SANDBOX);

    if (asprintf(&yaml,
                 "functions:\n"
                 "  cold:\n"
                 "    handler: %s\n"
                 "    memory_mb: 1769\n"
                 "    timeout_s: 180\n"
                 "  snap:\n"
                 "    handler: %s\n"
                 "    memory_mb: 1769\n"
                 "    timeout_s: 180\n"
                 "    snapstart: true\n"
                 "server:\n"
                 "  data_dir: %s/data\n", handler, handler, dir) < 0)
        return 1;
    sl_diags_init(&d, "snapstart.yaml");
    if (sl_config_load_buffer("snapstart.yaml", dir, yaml, strlen(yaml), &conf, &d) != 0) {
        sl_diags_print(&d, stderr);
        sl_diags_destroy(&d);
        goto out;
    }
    sl_diags_destroy(&d);

    /* the host preparation, once (what sl_functions_new does) */
    rt = sl_runtime_dir();
    if (!rt) {
        fprintf(stderr, "snapstart: no runtime directory (set SLUICE_RUNTIME_DIR)\n");
        goto out;
    }
    if (asprintf(&state, "%s/sandbox", conf->server.data_dir) < 0)
        goto out;
    so.state_dir = state;
    so.runtime_dir = rt;
    so.relaxed_only = false;
    sl_err_clear(&err);
    if (sl_sandbox_new(&so, &sb, &err) != 0) {
        fprintf(stderr, "snapstart: sl_sandbox_new: %s\n", err.msg);
        free(rt);
        goto out;
    }
    free(rt);
    base = event_base_new();

    if (run_series(base, sb, sl_config_function(conf, "cold"), &cold) != 0 ||
        run_series(base, sb, sl_config_function(conf, "snap"), &snap) != 0)
        goto out;

    qsort(cold.lat, (size_t)cold.n, sizeof(double), cmp_double);
    qsort(snap.lat, (size_t)snap.n, sizeof(double), cmp_double);
    qsort(cold.init, (size_t)cold.n, sizeof(double), cmp_double);
    qsort(snap.init, (size_t)snap.n, sizeof(double), cmp_double);
    c50 = pct(cold.lat, (size_t)cold.n, 50);
    c99 = pct(cold.lat, (size_t)cold.n, 99);
    s50 = pct(snap.lat, (size_t)snap.n, 50);
    s99 = pct(snap.lat, (size_t)snap.n, 99);
    ci50 = pct(cold.init, (size_t)cold.n, 50);
    si50 = pct(snap.init, (size_t)snap.n, 50);

    printf("snapstart: python handler, %d cold starts p50 %.2f ms, p99 %.2f ms (init p50 %.2f "
           "ms); %d snapstart restores p50 %.2f ms, p99 %.2f ms (restore p50 %.2f ms; template "
           "init + snapshot + first restore %.1f ms)\n", cold.n, c50, c99, ci50, snap.n, s50,
           s99, si50, snap.first_ms);
    printf("snapstart: target <= %.1fx of cold (%.3fx, %.1f times faster): %s\n", TARGET_RATIO,
           s50 / c50, c50 / s50, s50 <= TARGET_RATIO * c50 ? "met" : "MISSED");
    printf("snapstart: p99 %.2f ms\n", s99);
    printf("BENCH name=snapstart value=%.2f unit=ms baseline=cold-start baseline_value=%.2f "
           "ratio=%.3f\n", s50, c50, s50 / c50);
    code = 0;

out:
    sl_sandbox_free(sb);
    if (base)
        event_base_free(base);
    sl_config_free(conf);
    if (code == 0)
        rm_tree(dir);
    else
        fprintf(stderr, "snapstart: sluice's log is in %s\n", logpath);
    free(state);
    free(yaml);
    return code;
}
