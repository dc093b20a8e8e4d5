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
#include "bench.h"

#define NAME         "snapstart"
#define N_MAX        30             /* timed invocations per pool, at most */
#define MEASURE_US   20e6           /* ... and at most this long per pool */
#define FIRST_US     20e6           /* the untimed first invocation */
#define TARGET_RATIO 0.1

static const char EVENT[] = "{\"bench\":\"snapstart\"}";
static const char HOLD[] = "{\"hold\":120}";

/* ------------------------------------------------------------------ */

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct bench_call *c = arg;

    bench_call_fill(c, r);
    if (r->ok) {
        /* {"init_type": "..."} says how the environment started */
        json_t *j = json_loadb(r->payload, r->payload_len, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "init_type"));
        snprintf(c->init_type, sizeof(c->init_type), "%s", t ? t : "?");
        json_decref(j);
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
static double invoke_once(struct event_base *base, struct sl_fnpool *pool, struct bench_call *c,
                          double limit_us, const char *want_type)
{
    struct sl_invoke_req req = { .event = EVENT, .event_len = sizeof(EVENT) - 1 };
    /* the pool's reaper ticks every second: the loop never blocks longer */
    double us = bench_invoke(NAME, base, pool, &req, on_result, c, limit_us);

    if (us < 0)
        return -1;
    if (!c->ok) {
        fprintf(stderr, NAME ": invocation failed: %s\n", c->what);
        return -1;
    }
    if (!c->cold || strcmp(c->init_type, want_type) != 0) {
        fprintf(stderr, NAME ": expected a new %s environment, got a %s %s one\n",
                want_type, c->cold ? "new" : "warm", c->init_type);
        return -1;
    }
    return us / 1000.0;
}

static int run_series(struct event_base *base, struct sl_sandbox *sb,
                      const struct sl_function_conf *fn, struct series *s)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 1000 };
    struct sl_invoke_req hold = { .event = HOLD, .event_len = sizeof(HOLD) - 1 };
    const char *want = fn->snapstart ? "snap-start" : "on-demand";
    struct sl_fnpool *pool = NULL;
    struct sl_err err;
    struct bench_call c;
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
    struct bench_host h;
    static struct series cold = { .label = "cold" }, snap = { .label = "snapstart" };
    struct bench_stats cl, sl, ci, si;
    int code = 1;

    if (bench_host_open(&h, NAME, "bench/handlers/snap.py", "") != 0)
        return 1;
    if (getenv("SLUICE_BENCH_DEBUG")) /* the sandbox's debug lines, in the log file */
        sl_log_set_debug(1u << SL_DBG_SANDBOX);

    if (asprintf(&h.yaml,
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
                 "  data_dir: %s/data\n", h.handler, h.handler, h.dir) < 0)
        return 1;
    if (bench_host_config(&h) != 0)
        goto out;

    /* the host preparation, once (what sl_functions_new does) */
    h.base = event_base_new();
    if (bench_host_sandbox(&h, true) != 0)
        goto out;

    if (run_series(h.base, h.sb, sl_config_function(h.conf, "cold"), &cold) != 0 ||
        run_series(h.base, h.sb, sl_config_function(h.conf, "snap"), &snap) != 0)
        goto out;

    cl = bench_stats(cold.lat, cold.n);
    sl = bench_stats(snap.lat, snap.n);
    ci = bench_stats(cold.init, cold.n);
    si = bench_stats(snap.init, snap.n);

    printf("snapstart: python handler, %d cold starts p50 %.2f ms, p99 %.2f ms (init p50 %.2f "
           "ms); %d snapstart restores p50 %.2f ms, p99 %.2f ms (restore p50 %.2f ms; template "
           "init + snapshot + first restore %.1f ms)\n", cold.n, cl.p50, cl.p99, ci.p50, snap.n,
           sl.p50, sl.p99, si.p50, snap.first_ms);
    printf("snapstart: target <= %.1fx of cold (%.3fx, %.1f times faster): %s\n", TARGET_RATIO,
           sl.p50 / cl.p50, cl.p50 / sl.p50, sl.p50 <= TARGET_RATIO * cl.p50 ? "met" : "MISSED");
    bench_report(&(struct bench_result){ .name = NAME, .value = sl.p50, .p99 = &sl.p99,
                                         .unit = "ms", .baseline = "cold-start",
                                         .baseline_value = cl.p50, .digits = { 2, 2, 3 } });
    code = 0;

out:
    return bench_host_close(&h, code);
}
