/* bench python-runtimes: a Python function under `runtime: python`
 * (sluice's own bootstrap, runtime/python, on the native protocol) against
 * the same function under the stock awslambdaric from PyPI over the
 * Runtime API (`runtime: lambda`, `python3 -m awslambdaric
 * app.lambda_handler`, the layer tests/deps puts in
 * tests/.layers/awslambdaric), in one run.
 *
 * The function is bench/handlers/pyecho/app.py (returns the event and its
 * request id); its directory is /var/task for both. Two pools in one
 * configuration, memory_mb 1769 each, driven through the library as the
 * server does (sl_fnpool_invoke, then the loop until the callback):
 *   - warm: a 1 KB event, sequential invocations alternating between the
 *     two, from the call to the callback, after a warm-up;
 *   - cold: COLD_N starts of each, alternating, each on a pool of its own
 *     with no environment (sandbox spawn, interpreter start and imports,
 *     up to the result), as bench cold-start does.
 * value is runtime python's warm p50 in microseconds, baseline
 * awslambdaric's; a ratio under 1 means the native bootstrap is faster. */
#include "bench.h"

#define NAME         "python-runtimes"
#define EVENT_SIZE   1024
#define WARMUP       200
#define N_MAX        20000
#define MEASURE_US   6e6
#define COLD_WARMUP  2
#define COLD_N       20

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct bench_call *c = arg;

    bench_call_fill(c, r);
    /* the answer holds the event's data (json.dumps may space it out) */
    c->echoed = r->ok && r->payload_len >= c->event_len - 16 &&
                memmem(r->payload, r->payload_len, c->event + c->event_len - 200, 198);
}

static double invoke_once(struct event_base *base, struct sl_fnpool *pool, const char *event,
                          struct bench_call *c)
{
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    double us = bench_invoke(NAME, base, pool, &req, on_result, c, 60e6);

    if (us >= 0 && (!c->ok || !c->echoed)) {
        fprintf(stderr, NAME ": invocation failed: %s\n",
                c->ok ? "the answer does not hold the event" : c->what);
        return -1;
    }
    return us;
}

static int new_pool(struct bench_host *h, const char *fn, struct sl_fnpool **pool)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 64 };
    struct sl_err err;

    sl_err_clear(&err);
    if (sl_fnpool_new(h->base, h->sb, sl_config_function(h->conf, fn), &po, pool, &err) != 0) {
        fprintf(stderr, NAME ": sl_fnpool_new %s: %s\n", fn, err.msg);
        return -1;
    }
    return 0;
}

/* One cold start of fn on a new pool: ms, or -1. *init_ms its init. */
static double cold_once(struct bench_host *h, const char *fn, const char *event,
                        double *init_ms)
{
    struct sl_fnpool *p;
    struct bench_call c;
    double us;

    if (new_pool(h, fn, &p) != 0)
        return -1;
    us = invoke_once(h->base, p, event, &c);
    sl_fnpool_free(p);
    if (us >= 0 && !c.cold) {
        fprintf(stderr, NAME ": a new pool's first invocation was not cold\n");
        return -1;
    }
    *init_ms = c.init_ms;
    return us < 0 ? -1 : us / 1000.0;
}

int main(void)
{
    struct bench_host h;
    struct sl_fnpool *pn = NULL, *pr = NULL;
    struct bench_call c;
    struct bench_stats wn, wr, cn, cr, in, ir;
    char ric[PATH_MAX], code_dir[PATH_MAX];
    double *nat = calloc(N_MAX, sizeof(double)), *rl = calloc(N_MAX, sizeof(double));
    double coldn[COLD_N], coldr[COLD_N], initn[COLD_N], initr[COLD_N], t0, x;
    char *event = NULL;
    int n = 0, code = 1, cold = 0;

    if (bench_host_open(&h, NAME, "bench/handlers/pyecho/bootstrap", "") != 0)
        return 1;
    if (!realpath("tests/.layers/awslambdaric", ric) ||
        !realpath("bench/handlers/pyecho", code_dir)) {
        fprintf(stderr, NAME ": tests/.layers/awslambdaric: %s (run tests/deps)\n",
                strerror(errno));
        goto out;
    }
    event = make_event(NAME, EVENT_SIZE);
    if (asprintf(&h.yaml,
                 "functions:\n"
                 "  native:\n    runtime: python\n    code: %s\n"
                 "    handler: app.lambda_handler\n    memory_mb: 1769\n    timeout_s: 30\n"
                 "  ric:\n    runtime: lambda\n    handler: %s\n    layers: [%s]\n"
                 "    memory_mb: 1769\n    timeout_s: 30\n"
                 "server:\n  data_dir: %s/data\n", code_dir, h.handler, ric, h.dir) < 0) {
        h.yaml = NULL;
        goto out;
    }
    if (bench_host_config(&h) != 0)
        goto out;
    h.base = event_base_new();
    if (bench_host_sandbox(&h, true) != 0)
        goto out;

    if (new_pool(&h, "native", &pn) != 0 || new_pool(&h, "ric", &pr) != 0)
        goto out;
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
        rl[n++] = b;
    }
    if (cold || sl_fnpool_envs(pn) != 1 || sl_fnpool_envs(pr) != 1) {
        fprintf(stderr, NAME ": %d timed warm invocations were cold\n", cold);
        goto out;
    }
    sl_fnpool_free(pn);
    sl_fnpool_free(pr);
    pn = pr = NULL;

    for (int i = 0; i < COLD_WARMUP; i++)
        if (cold_once(&h, "native", event, &x) < 0 || cold_once(&h, "ric", event, &x) < 0)
            goto out;
    for (int i = 0; i < COLD_N; i++) {
        bool ric_first = i % 2;
        if (ric_first && (coldr[i] = cold_once(&h, "ric", event, &initr[i])) < 0)
            goto out;
        if ((coldn[i] = cold_once(&h, "native", event, &initn[i])) < 0)
            goto out;
        if (!ric_first && (coldr[i] = cold_once(&h, "ric", event, &initr[i])) < 0)
            goto out;
    }

    wn = bench_stats(nat, n);
    wr = bench_stats(rl, n);
    cn = bench_stats(coldn, COLD_N);
    cr = bench_stats(coldr, COLD_N);
    in = bench_stats(initn, COLD_N);
    ir = bench_stats(initr, COLD_N);
    printf(NAME ": warm, %d invokes each of a %d-byte event: runtime python (native "
           "protocol) p50 %.1f us, p99 %.1f us; awslambdaric (runtime lambda) p50 %.1f us, "
           "p99 %.1f us\n", n, EVENT_SIZE, wn.p50, wn.p99, wr.p50, wr.p99);
    printf(NAME ": cold, %d starts each: runtime python p50 %.2f ms, p99 %.2f ms (init p50 "
           "%.2f ms); awslambdaric p50 %.2f ms, p99 %.2f ms (init p50 %.2f ms); ratio %.2f\n",
           COLD_N, cn.p50, cn.p99, in.p50, cr.p50, cr.p99, ir.p50, cn.p50 / cr.p50);
    bench_report(&(struct bench_result){ .name = NAME, .value = wn.p50, .p99 = &wn.p99,
                                         .unit = "us", .baseline = "awslambdaric",
                                         .baseline_value = wr.p50, .digits = { 1, 1, 2 } });
    code = 0;
out:
    sl_fnpool_free(pn);
    sl_fnpool_free(pr);
    free(event);
    free(nat);
    free(rl);
    return bench_host_close(&h, code);
}
