/* bench invoke-warm: round trip of one warm invocation.
 *
 * A 1 KB JSON event goes through the C echo handler (build/handlers/echo)
 * in its sandboxed environment, driven through the library as the server
 * does: sl_fnpool_invoke, then the event loop until the callback. After a
 * warm-up, N sequential invocations are timed from the call to the
 * callback. Baseline, in the same run: a bare AF_UNIX socketpair round
 * trip of the same 1 KB message with a forked child that reads it and
 * writes it back, same count. value and baseline are p50 in microseconds.
 * For the breakdown it also times the same echo binary started bare (no
 * sandbox, no pool: frames written and read by hand, its stdout drained),
 * which is the floor the handler and its runtime library set.
 *
 * sluice's log (the handler's output lines and one REPORT line per
 * invocation, at the usual info level) goes to a file in the data
 * directory, kept when the benchmark fails. */
#include "bench.h"

#define NAME         "invoke-warm"
#define EVENT_SIZE   1024
#define N_MAX        20000          /* timed invocations, at most */
#define MEASURE_US   5e6            /* ... and at most this long */
#define WARMUP       2000
#define TARGET_P50   30.0           /* us */

/* ------------------------------------------------------------------ */
/* sluice                                                              */

/* One invocation; returns its round trip in us, or -1 (message printed). */
static double invoke_once(struct event_base *base, struct sl_fnpool *pool, const char *event,
                          struct bench_call *c)
{
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    double us = bench_invoke(NAME, base, pool, &req, bench_on_echo, c, 0);

    if (us >= 0 && (!c->ok || !c->echoed)) {
        fprintf(stderr, NAME ": invocation failed: %s\n",
                c->ok ? "payload differs from the event" : c->what);
        return -1;
    }
    return us;
}

/* ------------------------------------------------------------------ */
/* Baseline: socketpair round trip with a forked child                 */

static int baseline(const char *event, int n, double *lat)
{
    char buf[EVENT_SIZE];
    int sv[2], st;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return perror("socketpair"), -1;
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        close(sv[0]);
        while (read_full(sv[1], buf, sizeof(buf)) == 0)
            if (write_full(sv[1], buf, sizeof(buf)) != 0)
                break;
        _exit(0);
    }
    close(sv[1]);
    for (int i = -WARMUP; i < n; i++) {
        double t0 = now_us();
        if (write_full(sv[0], event, EVENT_SIZE) != 0 || read_full(sv[0], buf, sizeof(buf)) != 0 ||
            memcmp(buf, event, EVENT_SIZE) != 0) {
            fprintf(stderr, NAME ": baseline round trip failed\n");
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        if (i >= 0)
            lat[i] = now_us() - t0;
    }
    close(sv[0]);
    waitpid(pid, &st, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Breakdown: the echo binary bare, the protocol spoken by hand        */

static int bare_handler(const char *handler, const char *event, int n, double *lat)
{
    static const char what[] = NAME ": bare handler";
    char *envp[] = { "SLUICE_RUNTIME_FD=3", "LANG=C.UTF-8", "TZ=:UTC", NULL };
    char *frame = NULL, sink[4096];
    struct bench_bare b;
    struct sl_msg m;
    size_t flen;
    int rc = -1;

    if (bench_bare_start(&b, what, handler, envp, NULL, false, NULL) != 0)
        return -1;
    fcntl(b.out, F_SETFL, O_NONBLOCK);
    if (read_msg(b.sock, &m, what) != 0 || m.type != SL_MSG_READY) {
        fprintf(stderr, "%s: no `ready`\n", what);
        goto done;
    }
    sl_msg_destroy(&m);
    if (bench_echo_frame(event, EVENT_SIZE, wall_ms() + 3600 * 1000, &frame, &flen) != 0)
        goto done;
    for (int i = -WARMUP; i < n; i++) {
        double t0 = now_us();
        bool same;
        if (write_full(b.sock, frame, flen) != 0 || read_msg(b.sock, &m, what) != 0) {
            fprintf(stderr, "%s: round trip failed\n", what);
            goto done;
        }
        same = m.type == SL_MSG_RESULT && m.ok && m.payload.n == EVENT_SIZE &&
               memcmp(m.payload.p, event, EVENT_SIZE) == 0;
        sl_msg_destroy(&m);
        while (read(b.out, sink, sizeof(sink)) > 0)
            ;
        if (!same) {
            fprintf(stderr, "%s: wrong result\n", what);
            goto done;
        }
        if (i >= 0)
            lat[i] = now_us() - t0;
    }
    rc = 0;
done:
    free(frame);
    bench_bare_stop(&b);
    return rc;
}

/* ------------------------------------------------------------------ */

int main(void)
{
    struct bench_host h;
    struct sl_functions *fns = NULL;
    struct sl_fnpool *pool;
    struct sl_err err;
    struct bench_call c;
    struct bench_stats l, b, du, hb;
    double *lat = calloc(N_MAX, sizeof(double)), *blat = calloc(N_MAX, sizeof(double));
    double *dur = calloc(N_MAX, sizeof(double)), *hlat = calloc(N_MAX, sizeof(double));
    double t0;
    char *event = NULL;
    int n = 0, code = 1, cold = 0;
    size_t nenvs;

    if (bench_host_open(&h, NAME, "build/handlers/echo", " (run `make` first)") != 0)
        return 1;
    event = make_event(NAME, EVENT_SIZE);
    if (bench_host_echo_config(&h) != 0)
        goto out;

    h.base = event_base_new();
    sl_err_clear(&err);
    if (sl_functions_new(h.base, h.conf, NULL, &fns, &err) != 0) {
        fprintf(stderr, NAME ": sl_functions_new: %s\n", err.msg);
        goto out;
    }
    pool = sl_functions_pool(fns, "echo");

    /* the cold start, then warm-up */
    for (int i = 0; i < WARMUP; i++)
        if (invoke_once(h.base, pool, event, &c) < 0)
            goto out;

    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double us = invoke_once(h.base, pool, event, &c);
        if (us < 0)
            goto out;
        cold += c.cold;
        dur[n] = c.duration_ms * 1000.0;
        lat[n++] = us;
    }
    nenvs = sl_fnpool_envs(pool);
    sl_functions_free(fns);
    fns = NULL;
    if (cold || nenvs != 1) {
        fprintf(stderr, NAME ": %d timed invocations were cold, %zu environments "
                "(expected 0 and 1)\n", cold, nenvs);
        goto out;
    }

    if (baseline(event, n, blat) != 0 || bare_handler(h.handler, event, n, hlat) != 0)
        goto out;

    l = bench_stats(lat, n);
    b = bench_stats(blat, n);
    du = bench_stats(dur, n);
    hb = bench_stats(hlat, n);

    printf("invoke-warm: %d invokes of a %d-byte event, p50 %.1f us, p99 %.1f us, mean %.1f us, "
           "max %.1f us (pool's own duration p50 %.1f us); socketpair round trip p50 %.1f us, "
           "p99 %.1f us\n", n, EVENT_SIZE, l.p50, l.p99, l.mean, l.max, du.p50, b.p50, b.p99);
    printf("invoke-warm: breakdown: the echo binary bare (no sandbox, no pool, protocol by "
           "hand) p50 %.1f us\n", hb.p50);
    printf("invoke-warm: target p50 <= %.0f us: %s\n", TARGET_P50,
           l.p50 <= TARGET_P50 ? "met" : "MISSED");
    bench_report(&(struct bench_result){ .name = NAME, .value = l.p50, .p99 = &l.p99,
                                         .unit = "us", .baseline = "socketpair-round-trip",
                                         .baseline_value = b.p50, .digits = { 1, 1, 2 } });
    code = 0;

out:
    sl_functions_free(fns);
    free(event);
    free(lat);
    free(blat);
    free(dur);
    free(hlat);
    return bench_host_close(&h, code);
}
