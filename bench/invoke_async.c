/* bench invoke-async: asynchronous Invoke API accept rate over HTTP.
 *
 * `build/sluice run` serves one function, the C echo handler
 * (build/handlers/echo) with memory_mb 1769, no reserved concurrency, the
 * default server.concurrency_limit, its data_dir in a temporary
 * directory. wrk (-t2, 64 connections, keep-alive) POSTs a `{}` event to
 * /2015-03-31/functions/echo/invocations with X-Amz-Invocation-Type:
 * Event for MEASURE_S seconds, after a short warm-up. sluice answers 202
 * once the event is committed to its SQLite queue (one transaction, WAL
 * with synchronous=FULL, on a worker thread); the events also run in the
 * background meanwhile, as they would in service. value is the 202
 * answers per second; the latency percentiles are wrk's, and p99 is
 * printed.
 *
 * Baseline, in the same run: a minimal evhttp server (one thread, one
 * event loop, like sluice's API) in a forked child, answering the same
 * request 202 without storing or invoking anything; same wrk settings.
 * No target: the ratio shows what durability and the background work
 * cost.
 *
 * Answers other than 2xx and socket errors fail the benchmark (sluice's
 * counted from its /metrics). Also reported: how many events ran during
 * the run (sluice_invocations_total), the queue depth at its end, and the
 * environments started for them. The queued events stay in the queue
 * when sluice stops; the temporary directory
 * (/tmp/sluice-bench-invoke-async-XXXXXX, with data_dir, sluice's log and
 * wrk's output) is removed on success, kept and named on failure. */
#include "httpbench.h"

#define NAME         "invoke-async"
#define CONNS        64
#define WARMUP_S     2
#define MEASURE_S    10
#define BASE_WARM_S  1

int main(void)
{
    struct hb_sluice s = { 0 };
    struct hb_wrk warm, sw, bw;
    struct hb_codes c0, cw, c1;
    struct hb_answer ans = { 202, NULL };
    char dir[PATH_MAX], script[PATH_MAX + 32];
    char werr[512], merr[512];
    char *yaml = NULL, *m0 = NULL, *m1 = NULL;
    static const char inv[] = "sluice_invocations_total{function=\"echo\"}";
    double werrs, merrs, value, base_value, accepted, ran, depth;
    long cold_warm, cold_run;
    off_t off;
    pid_t bpid = -1;
    int code = 1, bport = 0, stop_rc;

    if (hb_echo_setup(NAME, dir, sizeof(dir), &s.port, &yaml) != 0)
        return 1;
    if (hb_wrk_script(dir, "invoke", "Event", script, sizeof(script)) != 0)
        goto out;

    /* sluice */
    if (hb_sluice_start(&s, NAME, dir, yaml, 15) != 0)
        goto out;
    hb_codes_scrape(s.port, &c0);
    if (hb_wrk_run(NAME, dir, "wrk-sluice-warmup", script, s.port, CONNS, WARMUP_S, &warm) != 0)
        goto out;
    m0 = hb_metrics(s.port);
    hb_codes_parse(m0, &cw);
    cold_warm = hb_count_in_file(s.log, 0, "Init Duration:");
    off = hb_file_size(s.log);
    if (hb_wrk_run(NAME, dir, "wrk-sluice", script, s.port, CONNS, MEASURE_S, &sw) != 0)
        goto out;
    m1 = hb_metrics(s.port);
    hb_codes_parse(m1, &c1);
    cold_run = hb_count_in_file(s.log, off, "Init Duration:");
    stop_rc = hb_sluice_stop(&s, 20);
    werrs = hb_codes_errors(&c0, &cw, werr, sizeof(werr));
    merrs = hb_codes_errors(&cw, &c1, merr, sizeof(merr));
    accepted = hb_codes_delta(&cw, &c1, 202);
    ran = hb_metric(m1 ? m1 : "", inv) - hb_metric(m0 ? m0 : "", inv);
    depth = hb_metric(m1 ? m1 : "", "sluice_async_queue_depth");

    /* baseline */
    bpid = hb_baseline_start(&ans, &bport);
    if (bpid < 0)
        goto out;
    if (hb_wrk_run(NAME, dir, "wrk-baseline-warmup", script, bport, CONNS, BASE_WARM_S, &bw) != 0 ||
        hb_wrk_run(NAME, dir, "wrk-baseline", script, bport, CONNS, MEASURE_S, &bw) != 0)
        goto out;
    hb_baseline_stop(bpid);
    bpid = -1;

    hb_wrk_print(NAME, "sluice (echo, Event)", &sw);
    printf(NAME ": sluice: %.0f answered 202 (its /metrics); %.0f events ran during the run, "
           "%.0f still queued at its end; environments started: %ld in the %d s warm-up, %ld "
           "during the run\n", accepted, ran, depth, cold_warm, WARMUP_S, cold_run);
    hb_wrk_print(NAME, "baseline evhttp 202", &bw);

    if (!hb_judge(NAME, "accepted/s", stop_rc, werrs, werr, merrs, merr, &warm, &sw, &bw, &value,
                  &base_value))
        goto out;

    printf(NAME ": p99 %.3f ms (baseline %.3f ms)\n", sw.p99_ms, bw.p99_ms);
    bench_report(&(struct bench_result){ .name = NAME, .value = value, .unit = "req/s",
                                         .baseline = "evhttp-202", .baseline_value = base_value,
                                         .digits = { 0, 0, 3 } });
    code = 0;

out:
    hb_baseline_stop(bpid);
    if (s.pid > 0)
        hb_sluice_stop(&s, 20);
    free(yaml);
    free(m0);
    free(m1);
    if (code == 0)
        rm_tree(dir);
    else
        fprintf(stderr, NAME ": sluice's log, its configuration and wrk's output are in %s\n",
                dir);
    return code;
}
