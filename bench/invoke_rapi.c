/* bench invoke-rapi: round trip of one warm invocation through the Lambda
 * Runtime API (runtime lambda) against the native protocol.
 *
 * Two functions in one configuration, both with memory_mb 1769: `native`,
 * the C echo handler (build/handlers/echo) on the native protocol (frames
 * on fd 3), and `rapi`, a minimal C custom runtime
 * (build/test-handlers/rapi_echo: one keep-alive HTTP connection to
 * 127.0.0.1:9001 inside its env, GET /next then POST /response) under
 * runtime lambda. A 1 KB JSON event goes through each in its sandboxed
 * environment, driven through the library as the server does
 * (sl_fnpool_invoke, then the loop until the callback). After a warm-up,
 * sequential invocations are timed from the call to the callback,
 * alternating between the two so both see the same machine. value is the
 * Runtime API's p50 in microseconds, baseline the native protocol's. */
#include "bench.h"

#define NAME         "invoke-rapi"
#define EVENT_SIZE   1024
#define N_MAX        20000          /* timed invocations of each, at most */
#define MEASURE_US   8e6            /* ... and at most this long in all */
#define WARMUP       1000

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

int main(void)
{
    struct bench_host h;
    struct sl_functions *fns = NULL;
    struct sl_fnpool *pn, *pr;
    struct sl_err err;
    struct bench_call c;
    struct bench_stats ln, lr;
    double *nat = calloc(N_MAX, sizeof(double)), *rap = calloc(N_MAX, sizeof(double));
    double t0;
    char *event = NULL, rapi_echo[PATH_MAX];
    int n = 0, code = 1, cold = 0;

    if (bench_host_open(&h, NAME, "build/handlers/echo", " (run `make` first)") != 0)
        return 1;
    if (!realpath("build/test-handlers/rapi_echo", rapi_echo)) {
        fprintf(stderr, NAME ": build/test-handlers/rapi_echo: %s (make it first)\n",
                strerror(errno));
        goto out;
    }
    event = make_event(NAME, EVENT_SIZE);
    if (asprintf(&h.yaml,
                 "functions:\n"
                 "  native:\n    handler: %s\n    memory_mb: 1769\n    timeout_s: 10\n"
                 "  rapi:\n    runtime: lambda\n    handler: %s\n    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "server:\n  data_dir: %s/data\n", h.handler, rapi_echo, h.dir) < 0) {
        h.yaml = NULL;
        goto out;
    }
    if (bench_host_config(&h) != 0)
        goto out;
    h.base = event_base_new();
    sl_err_clear(&err);
    if (sl_functions_new(h.base, h.conf, NULL, &fns, &err) != 0) {
        fprintf(stderr, NAME ": sl_functions_new: %s\n", err.msg);
        goto out;
    }
    pn = sl_functions_pool(fns, "native");
    pr = sl_functions_pool(fns, "rapi");
    for (int i = 0; i < WARMUP; i++)
        if (invoke_once(h.base, pn, event, &c) < 0 || invoke_once(h.base, pr, event, &c) < 0)
            goto out;
    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double a = invoke_once(h.base, pn, event, &c), b;
        cold += c.cold;
        b = invoke_once(h.base, pr, event, &c);
        cold += c.cold;
        if (a < 0 || b < 0)
            goto out;
        nat[n] = a;
        rap[n++] = b;
    }
    if (cold || sl_fnpool_envs(pn) != 1 || sl_fnpool_envs(pr) != 1) {
        fprintf(stderr, NAME ": %d timed invocations were cold (expected 0, one env each)\n",
                cold);
        goto out;
    }
    ln = bench_stats(nat, n);
    lr = bench_stats(rap, n);
    printf(NAME ": %d warm invokes each of a %d-byte event: Runtime API (runtime lambda, C "
           "bootstrap) p50 %.1f us, p99 %.1f us, mean %.1f us; native protocol (C echo) p50 "
           "%.1f us, p99 %.1f us, mean %.1f us\n", n, EVENT_SIZE, lr.p50, lr.p99, lr.mean,
           ln.p50, ln.p99, ln.mean);
    bench_report(&(struct bench_result){ .name = NAME, .value = lr.p50, .p99 = &lr.p99,
                                         .unit = "us", .baseline = "native-protocol",
                                         .baseline_value = ln.p50, .digits = { 1, 1, 2 } });
    code = 0;

out:
    sl_functions_free(fns);
    free(event);
    free(nat);
    free(rap);
    return bench_host_close(&h, code);
}
