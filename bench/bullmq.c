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
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/stat.h>

#include "bench.h"

#define NAME        "bullmq"
#define N           100000
#define BATCH       100
#define CONC        4
#define BULL_CONC   100

extern char **environ;

static char dir[64];
static pid_t redis_pid = -1, sluice_pid = -1;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);

    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench %s: %s (kept %s)\n", NAME, what, dir);
    if (sluice_pid > 0)
        kill(sluice_pid, SIGKILL), waitpid(sluice_pid, NULL, 0);
    if (redis_pid > 0)
        kill(redis_pid, SIGKILL), waitpid(redis_pid, NULL, 0);
    return 1;
}

static redisContext *connect_redis(int port)
{
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", port);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            if (ok)
                return c;
        }
        if (c)
            redisFree(c);
        usleep(50000);
    }
    return NULL;
}

static bool fill(redisContext *c, const char *key)
{
    const int chunk = 10000;

    for (int i = 0; i < N; i += chunk) {
        for (int k = i; k < i + chunk; k++)
            redisAppendCommand(c, "XADD %s * body {\"n\":%d}", key, k);
        for (int k = i; k < i + chunk; k++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR)
                return false;
            freeReplyObject(r);
        }
    }
    return true;
}

/* lag and pending of group sluice; -1 on error */
static long left(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "XINFO GROUPS %s", key);
    long v = -1;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        redisReply *g = r->element[0];
        long lag = -1, pending = -1;
        for (size_t i = 0; i + 1 < g->elements; i += 2) {
            if (strcmp(g->element[i]->str, "lag") == 0 && g->element[i + 1]->type == REDIS_REPLY_INTEGER)
                lag = g->element[i + 1]->integer;
            if (strcmp(g->element[i]->str, "pending") == 0)
                pending = g->element[i + 1]->integer;
        }
        if (lag >= 0 && pending >= 0)
            v = lag + pending;
    }
    freeReplyObject(r);
    return v;
}

static double through_sluice(redisContext *c, int port, const char *key)
{
    const char *build = getenv("BUILD") && *getenv("BUILD") ? getenv("BUILD") : "build";
    char cfg[128], log[128], root[PATH_MAX], exe[PATH_MAX + 64];
    FILE *f;
    double t0;
    long n;

    if (!getcwd(root, sizeof(root)))
        return -1;
    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(log, sizeof(log), "%s/sluice.log", dir);
    f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "server: { listen: 127.0.0.1:%d, data_dir: %s }\n"
            "log: { level: warn }\n"
            "functions:\n  noop: { handler: %s/%s/test-handlers/redis_noop, memory_mb: 1769 }\n"
            "sources:\n  bench:\n    type: redis\n    function: noop\n"
            "    url: redis://127.0.0.1:%d\n    key: %s\n    batch_size: %d\n"
            "    maximum_concurrency: %d\n    visibility_timeout_s: 60\n",
            free_port(), dir, root, build, port, key, BATCH, CONC);
    fclose(f);
    snprintf(exe, sizeof(exe), "%s/%s/sluice", root, build);
    t0 = now_us();
    sluice_pid = fork();
    if (sluice_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        execl(exe, "sluice", "run", cfg, (char *)NULL);
        _exit(127);
    }
    /* the group appears once sluice connected; then wait for lag + pending 0 */
    for (;;) {
        int st;
        usleep(20000);
        if (waitpid(sluice_pid, &st, WNOHANG) == sluice_pid) {
            sluice_pid = -1;
            return -1;
        }
        n = left(c, key);
        if (n == 0)
            break;
        if (now_us() - t0 > 600e6)
            return -1;
    }
    {
        double rate = N / ((now_us() - t0) / 1e6);
        kill(sluice_pid, SIGTERM);
        waitpid(sluice_pid, NULL, 0);
        sluice_pid = -1;
        return rate;
    }
}

static int start_redis(int port, const char *sub)
{
    char portstr[16], d[128];
    char *argv[] = { "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", d, "--logfile", "redis.log", NULL };

    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(d, sizeof(d), "%s/%s", dir, sub);
    mkdir(d, 0755);
    return posix_spawnp(&redis_pid, "redis-server", NULL, NULL, argv, environ);
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

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
    const char *build = getenv("BUILD") && *getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[256];
    int port;
    redisContext *c;
    double base, mine;

    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-bullmq-XXXXXX");
    if (!mkdtemp(dir))
        return fail("cannot create a temporary directory");
    snprintf(cmd, sizeof(cmd), "make -s BUILD=%s %s/test-handlers/redis_noop >/dev/null", build,
             build);
    if (system(cmd) != 0)
        return fail("cannot build tests/handlers/redis_noop.c");
    port = free_port();
    if (start_redis(port, "bullmq") != 0 || !(c = connect_redis(port)))
        return fail("cannot start redis-server");
    redisFree(c);
    base = bullmq(port);
    stop_redis();
    if (base <= 0)
        return fail("the BullMQ run failed");
    printf("%s: BullMQ (addBulk, concurrency %d): %.0f jobs/s\n", NAME, BULL_CONC, base);
    fflush(stdout);
    port = free_port();
    if (start_redis(port, "sluice") != 0 || !(c = connect_redis(port)))
        return fail("cannot start redis-server");
    if (!fill(c, "jobs"))
        return fail("cannot fill the stream");
    mine = through_sluice(c, port, "jobs");
    if (mine <= 0)
        return fail("sluice did not drain the stream: see sluice.log");
    printf("%s: sluice (stream, batch %d, %d lanes, no-op C handler): %.0f jobs/s\n", NAME,
           BATCH, CONC, mine);
    redisFree(c);
    stop_redis();
    rm_tree(dir);
    bench_report(&(struct bench_result){ .name = NAME, .value = mine, .unit = "jobs/s",
                                         .baseline = "bullmq", .baseline_value = base,
                                         .digits = { 0, 0, 2 } });
    return 0;
}
