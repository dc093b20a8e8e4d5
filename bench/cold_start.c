/* bench cold-start: from an invocation to its result on a new environment.
 *
 * Each iteration gives the C echo handler (build/handlers/echo) a pool of
 * its own with no environment in it, so sl_fnpool_invoke starts one: the
 * sandbox spawn (namespaces, root, cgroups, seccomp), the handler's exec
 * and init up to `ready`, then the invocation. Timed from the call to the
 * callback; the pool is freed (environment killed) outside the timing.
 * The host preparation (sl_sandbox_new) is made once, as the server does,
 * with the loop, so that network namespaces come from the pre-made pool
 * (refilled by a worker thread between starts).
 *
 * Baseline, in the same run: the same binary started bare with fork and
 * exec, no sandbox, with a socketpair on fd 3 and pipes on stdout and
 * stderr, speaking the protocol: wait for `ready`, send one `invoke`, read
 * the `result`. Same count. value and baseline are p50 in milliseconds.
 *
 * The timed starts run back to back. A few more, each after the host has
 * been idle for a while, are reported on the side: on cgroup v1, moving a
 * process into a cgroup can wait for an RCU grace period when no other
 * move happened just before, which back-to-back starts never see. */
#include "bench.h"

#define NAME         "cold-start"
#define EVENT_SIZE   1024
#define N_MAX        200            /* iterations, at most */
#define MEASURE_US   25e6           /* ... and at most this long, each side */
#define WARMUP       5
#define SPACED_N     20             /* starts after an idle pause, on the side */
#define SPACED_US    100000
#define TARGET_P50   5.0            /* ms */
#define TARGET_RATIO 3.0

/* ------------------------------------------------------------------ */
/* sluice                                                              */

/* One cold invocation on a new pool. Returns its time in ms, or -1. */
static double cold_once(struct event_base *base, struct sl_sandbox *sb,
                        const struct sl_function_conf *fn, const char *event,
                        struct bench_call *c, double *teardown_ms)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 64 };
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    struct sl_fnpool *pool = NULL;
    struct sl_err err;
    double us, t1;

    sl_err_clear(&err);
    if (sl_fnpool_new(base, sb, fn, &po, &pool, &err) != 0) {
        fprintf(stderr, NAME ": sl_fnpool_new: %s\n", err.msg);
        return -1;
    }
    us = bench_invoke(NAME, base, pool, &req, bench_on_echo, c, 0);
    t1 = now_us();
    sl_fnpool_free(pool);
    *teardown_ms = (now_us() - t1) / 1000.0;
    if (us < 0)
        return -1;
    if (!c->ok || !c->echoed || !c->cold) {
        fprintf(stderr, NAME ": invocation failed: %s\n",
                !c->ok ? c->what : !c->echoed ? "payload differs from the event"
                                              : "the invocation was not cold");
        return -1;
    }
    return us / 1000.0;
}

/* ------------------------------------------------------------------ */
/* Baseline: fork + exec of the same binary, no sandbox                */

static char **g_envp;

/* One bare start + invoke; returns ms, or -1. */
static double bare_once(const char *handler, const char *hdir, const char *event)
{
    static const char what[] = NAME ": baseline";
    char *frame = NULL;
    struct bench_bare b;
    struct sl_msg m;
    double t0, ms = -1;
    size_t flen;

    if (bench_bare_start(&b, what, handler, g_envp, hdir, true, &t0) != 0)
        return -1;
    if (read_msg(b.sock, &m, what) != 0 || m.type != SL_MSG_READY) {
        fprintf(stderr, "%s: no `ready` from %s\n", what, handler);
        goto done;
    }
    sl_msg_destroy(&m);
    if (bench_echo_frame(event, EVENT_SIZE, wall_ms() + 10000, &frame, &flen) != 0 ||
        write_full(b.sock, frame, flen) != 0) {
        fprintf(stderr, "%s: cannot send `invoke`\n", what);
        goto done;
    }
    if (read_msg(b.sock, &m, what) != 0 || m.type != SL_MSG_RESULT) {
        fprintf(stderr, "%s: no `result` from %s\n", what, handler);
        goto done;
    }
    if (m.ok && m.payload.n == EVENT_SIZE && memcmp(m.payload.p, event, EVENT_SIZE) == 0)
        ms = (now_us() - t0) / 1000.0;
    else
        fprintf(stderr, "%s: wrong result\n", what);
    sl_msg_destroy(&m);
done:
    free(frame);
    bench_bare_stop(&b);
    return ms;
}

/* ------------------------------------------------------------------ */

int main(void)
{
    struct bench_host h;
    char hdir[PATH_MAX], *event;
    const struct sl_function_conf *fn;
    struct bench_call c;
    struct bench_stats l, b, in, du, td, sp;
    double lat[N_MAX], blat[N_MAX], init[N_MAX], dur[N_MAX], tear[N_MAX], slat[SPACED_N];
    double t0;
    int n = 0, nb = 0, ns = 0, code = 1;
    char *envp[] = {
        "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=:UTC",
        "SLUICE_RUNTIME_FD=3", "AWS_LAMBDA_FUNCTION_NAME=echo",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE=on-demand", "AWS_REGION=us-east-1", "HOME=/tmp", NULL,
    };

    g_envp = envp;
    if (bench_host_open(&h, NAME, "build/handlers/echo", " (run `make` first)") != 0)
        return 1;
    snprintf(hdir, sizeof(hdir), "%s", h.handler);
    *strrchr(hdir, '/') = '\0';
    event = make_event(NAME, EVENT_SIZE);
    if (bench_host_echo_config(&h) != 0)
        goto out;
    fn = sl_config_function(h.conf, "echo");

    /* the host preparation, once (what sl_functions_new does) */
    h.base = event_base_new();
    if (bench_host_sandbox(&h, false) != 0)
        goto out;

    for (int i = 0; i < WARMUP; i++) {
        double tms;
        if (cold_once(h.base, h.sb, fn, event, &c, &tms) < 0)
            goto out;
    }
    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double ms = cold_once(h.base, h.sb, fn, event, &c, &tear[n]);
        if (ms < 0)
            goto out;
        init[n] = c.init_ms;
        dur[n] = c.duration_ms;
        lat[n++] = ms;
    }

    while (ns < SPACED_N) {
        double tms, ms;
        usleep(SPACED_US);
        ms = cold_once(h.base, h.sb, fn, event, &c, &tms);
        if (ms < 0)
            goto out;
        slat[ns++] = ms;
    }

    for (int i = 0; i < WARMUP; i++)
        if (bare_once(h.handler, hdir, event) < 0)
            goto out;
    t0 = now_us();
    while (nb < n && now_us() - t0 < MEASURE_US) {
        double ms = bare_once(h.handler, hdir, event);
        if (ms < 0)
            goto out;
        blat[nb++] = ms;
    }

    l = bench_stats(lat, n);
    b = bench_stats(blat, nb);
    in = bench_stats(init, n);
    du = bench_stats(dur, n);
    td = bench_stats(tear, n);
    sp = bench_stats(slat, ns);

    printf("cold-start: %d cold invokes (sandbox: cgroups %s), p50 %.2f ms, p99 %.2f ms, "
           "mean %.2f ms (init p50 %.2f ms, invoke p50 %.3f ms; pool teardown p50 %.2f ms); "
           "bare fork+exec %d runs, p50 %.2f ms, p99 %.2f ms\n", n, sl_sandbox_cgroups(h.sb),
           l.p50, l.p99, l.mean, in.p50, du.p50, td.p50, nb, b.p50, b.p99);
    {
        size_t pooled, made;
        sl_sandbox_netns_counts(h.sb, &pooled, &made);
        printf("cold-start: network namespace per environment: %zu from the pre-made pool, "
               "%zu made on the loop (pool empty)\n", pooled, made);
    }
    printf("cold-start: on the side, %d cold invokes each after %.0f ms idle: p50 %.2f ms, "
           "p99 %.2f ms\n", ns, SPACED_US / 1000.0, sp.p50, sp.p99);
    printf("cold-start: target p50 <= %.0f ms: %s; target <= %.0fx bare (%.1fx): %s\n",
           TARGET_P50, l.p50 <= TARGET_P50 ? "met" : "MISSED", TARGET_RATIO, l.p50 / b.p50,
           l.p50 <= TARGET_RATIO * b.p50 ? "met" : "MISSED");
    bench_report(&(struct bench_result){ .name = NAME, .value = l.p50, .p99 = &l.p99,
                                         .unit = "ms", .baseline = "fork-exec",
                                         .baseline_value = b.p50, .digits = { 2, 2, 2 } });
    code = 0;

out:
    free(event);
    return bench_host_close(&h, code);
}
