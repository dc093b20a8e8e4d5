/* bench bullmq: 100,000 no-op jobs through BullMQ and through sluice, in
 * the same run, on the same machine, against Redis servers of the
 * benchmark's own (no persistence).
 *
 * Baseline: BullMQ (npm `bullmq@5`, installed on first use into
 * ${SLUICE_BENCH_CACHE:-~/.cache/sluice-bench}/bullmq; needs node and npm,
 * Debian: apt-get install nodejs npm) with its documented fastest settings:
 * jobs added with Queue.addBulk in chunks of 1,000 (not timed),
 * removeOnComplete, one Worker with concurrency 100 and an empty async
 * processor (bench/bullmq/bench.js). Timed from the Worker's start until the
 * processor ran for the last job.
 *
 * sluice: the same 100,000 jobs as entries of a Redis stream (added before
 * timing), a `type: redis` stream source (batch_size 100,
 * maximum_concurrency 4) and the no-op C handler tests/handlers/redis_noop.c
 * in its sandbox; timed from `sluice run` until every message was
 * acknowledged. value = sluice jobs/s, baseline = BullMQ jobs/s. Target:
 * ratio >= 3.
 *
 * The temporary directory (/tmp/sluice-bench-bullmq-XXXXXX) is removed on
 * success, kept and named on failure. */
#include "redisbench.h"

#define NAME        "bullmq"
#define N           100000
#define BATCH       100
#define CONC        4
#define BULL_CONC   100

/* BullMQ's jobs/s, from bench/bullmq/bench.js; -1 on failure. */
static double bullmq(int port)
{
    const char *home = getenv("HOME"), *cache = getenv("SLUICE_BENCH_CACHE");
    char base[512], mods[600], cmd[4096], line[256];
    double rate = -1;
    FILE *p;

    if (system("command -v node >/dev/null && command -v npm >/dev/null") != 0 &&
        (geteuid() != 0 ||
         system("echo 'bench bullmq: installing nodejs and npm (apt-get)' >&2 && "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2") != 0 ||
         system("command -v node >/dev/null && command -v npm >/dev/null") != 0)) {
        fprintf(stderr, "bench %s: needs node and npm (Debian: apt-get install nodejs npm)\n",
                NAME);
        return -1;
    }
    if (cache && *cache)
        snprintf(base, sizeof(base), "%.500s", cache);
    else
        snprintf(base, sizeof(base), "%.400s/.cache/sluice-bench", home ? home : "/tmp");
    snprintf(mods, sizeof(mods), "%s/bullmq", base);
    snprintf(cmd, sizeof(cmd), "test -d '%s/node_modules/bullmq' || (mkdir -p '%s' && cd '%s' && "
             "echo '%s: installing bullmq@5 (npm) into %s' && "
             "npm install --no-audit --no-fund --silent bullmq@5 >&2)", mods, mods, mods, NAME,
             mods);
    if (system(cmd) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "NODE_PATH='%s/node_modules' node bench/bullmq/bench.js %d %d %d",
             mods, port, N, BULL_CONC);
    if (!(p = popen(cmd, "r")))
        return -1;
    while (fgets(line, sizeof(line), p))
        if (strncmp(line, "bullmq ", 7) == 0)
            rate = atof(line + 7);
    if (pclose(p) != 0)
        return -1;
    return rate;
}

int main(void)
{
    struct sb_bench b;
    int port;
    redisContext *c;
    double base, mine;

    if (sb_open(&b, NAME, "bullmq", "redis_noop") != 0)
        return 1;
    port = bench_free_port();
    if (rb_start_redis(&b, port, "bullmq") != 0 || !(c = rb_connect(port)))
        return sb_fail(&b, "cannot start redis-server");
    redisFree(c);
    base = bullmq(port);
    sb_reap(&b.aux, SIGTERM);
    if (base <= 0)
        return sb_fail(&b, "the BullMQ run failed");
    printf("%s: BullMQ (addBulk, concurrency %d): %.0f jobs/s\n", NAME, BULL_CONC, base);
    fflush(stdout);
    port = bench_free_port();
    if (rb_start_redis(&b, port, "sluice") != 0 || !(c = rb_connect(port)))
        return sb_fail(&b, "cannot start redis-server");
    if (!rb_fill(c, "jobs", N))
        return sb_fail(&b, "cannot fill the stream");
    mine = rb_through_sluice(&b, c, port, "jobs", N, BATCH, CONC);
    if (mine <= 0)
        return sb_fail(&b, "sluice did not drain the stream: see sluice.log");
    printf("%s: sluice (stream, batch %d, %d lanes, no-op C handler): %.0f jobs/s\n", NAME,
           BATCH, CONC, mine);
    redisFree(c);
    sb_reap(&b.aux, SIGTERM);
    sb_report(&b, mine, "jobs/s", "bullmq", base);
    return 0;
}
