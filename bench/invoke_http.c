/* bench invoke-http: synchronous Invoke API throughput over HTTP.
 *
 * `build/sluice run` serves one function, the C echo handler
 * (build/handlers/echo) with memory_mb 1769 (a full CPU of quota), no
 * reserved concurrency, the default server.concurrency_limit. wrk (-t2,
 * 64 connections, keep-alive) POSTs a `{}` event to
 * /2015-03-31/functions/echo/invocations with X-Amz-Invocation-Type:
 * RequestResponse: every request is a full warm invocation in a sandboxed
 * environment, answered 200 with the handler's result. A warm-up run
 * first creates the environments (one per connection in flight), then
 * the measured run; value is sluice's 2xx answers per second.
 *
 * Baseline, in the same run: a minimal evhttp server (one thread, one
 * event loop, like sluice's API) in a forked child, answering the same
 * request 200 with a small JSON body and invoking nothing; same wrk
 * settings. Target: ratio >= 0.5.
 *
 * Answers other than 2xx (429 throttles, 500s) and socket errors fail
 * the benchmark: sluice's are counted from its /metrics
 * (sluice_http_requests_total by code), wrk's "Non-2xx" line checks both
 * sides. Environments started during the measured run (cold starts,
 * the REPORT lines with an Init Duration in sluice's log) are reported.
 *
 * Everything (configuration, data_dir, sluice's log, wrk's output) is in
 * /tmp/sluice-bench-invoke-http-XXXXXX, removed on success, kept and
 * named on failure. */
#include "httpbench.h"

#define NAME         "invoke-http"
#define CONNS        64
#define WARMUP_S     3
#define MEASURE_S    10
#define BASE_WARM_S  1
#define TARGET_RATIO 0.5

int main(void)
{
    struct hb_sluice s = { 0 };
    struct hb_wrk warm, sw, bw;
    struct hb_codes c0, cw, c1;
    struct hb_answer ans = { 200, "{}" };
    char dir[PATH_MAX], script[PATH_MAX + 32];
    char werr[512], merr[512];
    char *yaml = NULL;
    double werrs, merrs, value, base_value;
    long cold_warm, cold_run;
    off_t off;
    pid_t bpid = -1;
    int code = 1, bport = 0, stop_rc;

    if (hb_echo_setup(NAME, dir, sizeof(dir), &s.port, &yaml) != 0)
        return 1;
    if (hb_wrk_script(dir, "invoke", "RequestResponse", script, sizeof(script)) != 0)
        goto out;

    /* sluice */
    if (hb_sluice_start(&s, NAME, dir, yaml, 15) != 0)
        goto out;
    hb_codes_scrape(s.port, &c0);
    if (hb_wrk_run(NAME, dir, "wrk-sluice-warmup", script, s.port, CONNS, WARMUP_S, &warm) != 0)
        goto out;
    hb_codes_scrape(s.port, &cw);
    cold_warm = hb_count_in_file(s.log, 0, "Init Duration:");
    off = hb_file_size(s.log);
    if (hb_wrk_run(NAME, dir, "wrk-sluice", script, s.port, CONNS, MEASURE_S, &sw) != 0)
        goto out;
    hb_codes_scrape(s.port, &c1);
    cold_run = hb_count_in_file(s.log, off, "Init Duration:");
    stop_rc = hb_sluice_stop(&s, 20);
    werrs = hb_codes_errors(&c0, &cw, werr, sizeof(werr));
    merrs = hb_codes_errors(&cw, &c1, merr, sizeof(merr));

    /* baseline */
    bpid = hb_baseline_start(&ans, &bport);
    if (bpid < 0)
        goto out;
    if (hb_wrk_run(NAME, dir, "wrk-baseline-warmup", script, bport, CONNS, BASE_WARM_S, &bw) != 0 ||
        hb_wrk_run(NAME, dir, "wrk-baseline", script, bport, CONNS, MEASURE_S, &bw) != 0)
        goto out;
    hb_baseline_stop(bpid);
    bpid = -1;

    hb_wrk_print(NAME, "sluice (echo, RequestResponse)", &sw);
    printf(NAME ": sluice: environments started: %ld in the %d s warm-up, %ld during the run\n",
           cold_warm, WARMUP_S, cold_run);
    hb_wrk_print(NAME, "baseline evhttp 200", &bw);

    if (!hb_judge(NAME, "req/s", stop_rc, werrs, werr, merrs, merr, &warm, &sw, &bw, &value,
                  &base_value))
        goto out;

    printf(NAME ": target ratio >= %.2f: %s\n", TARGET_RATIO,
           value / base_value >= TARGET_RATIO ? "met" : "MISSED");
    bench_report(&(struct bench_result){ .name = NAME, .value = value, .unit = "req/s",
                                         .baseline = "evhttp-200", .baseline_value = base_value,
                                         .digits = { 0, 0, 3 } });
    code = 0;

out:
    hb_baseline_stop(bpid);
    if (s.pid > 0)
        hb_sluice_stop(&s, 20);
    free(yaml);
    if (code == 0)
        rm_tree(dir);
    else
        fprintf(stderr, NAME ": sluice's log, its configuration and wrk's output are in %s\n",
                dir);
    return code;
}
