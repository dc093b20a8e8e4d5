/* bench redis: messages per second through a Redis stream source, end to
 * end.
 *
 * A redis-server of the benchmark's own (no persistence, a free port, a
 * temporary directory) holds two streams of N = 1,000,000 entries each
 * (`body {"n":<i>}`), added before anything is timed.
 *
 * Baseline: a minimal hiredis consumer in this process, the fastest loop a
 * program can run against a consumer group with no work per message:
 * XREADGROUP COUNT 100 pipelined with the XACK of the previous 100 ids,
 * until the stream is drained and acknowledged.
 *
 * sluice: `sluice run` with a `type: redis` stream source on the other
 * stream (batch_size 100, maximum_concurrency 4, visibility 60 s) and the
 * no-op C handler tests/handlers/redis_noop.c in its sandbox; timed from
 * the start of the process until the group's lag and pending count are 0,
 * so every message was read, shaped into an SQS event, invoked and
 * acknowledged. Target: ratio >= 0.5.
 *
 * The temporary directory (/tmp/sluice-bench-redis-XXXXXX, with Redis's
 * and sluice's logs) is removed on success, kept and named on failure. */
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/stat.h>

#include "bench.h"

#define NAME   "redis"
#define N      1000000
#define BATCH  100
#define CONC   4

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

/* XREADGROUP COUNT 100 pipelined with the XACK of the previous batch. */
static double baseline(redisContext *c, const char *key)
{
    const char *ids[BATCH + 3];
    size_t lens[BATCH + 3];
    redisReply *prev = NULL;
    long done = 0;
    double t0;

    freeReplyObject(redisCommand(c, "XGROUP CREATE %s g 0", key));
    t0 = now_us();
    for (;;) {
        redisReply *r = NULL, *entries;
        size_t n = 0;

        if (prev) {
            entries = prev->element[0]->element[1];
            ids[0] = "XACK", ids[1] = key, ids[2] = "g";
            for (size_t i = 0; i < entries->elements; i++)
                ids[3 + i] = entries->element[i]->element[0]->str;
            for (size_t i = 0; i < entries->elements + 3; i++)
                lens[i] = strlen(ids[i]);
            redisAppendCommandArgv(c, (int)entries->elements + 3, ids, lens);
        }
        redisAppendCommand(c, "XREADGROUP GROUP g c COUNT %d STREAMS %s >", BATCH, key);
        if (prev) {
            if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type != REDIS_REPLY_INTEGER)
                return -1;
            done += r->integer;
            freeReplyObject(r);
            freeReplyObject(prev);
            prev = NULL;
        }
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r)
            return -1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1)
            n = r->element[0]->element[1]->elements;
        if (n == 0) {
            freeReplyObject(r);
            break;
        }
        prev = r;
    }
    if (done != N)
        return -1;
    return N / ((now_us() - t0) / 1e6);
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

int main(void)
{
    const char *build = getenv("BUILD") && *getenv("BUILD") ? getenv("BUILD") : "build";
    char portstr[16], cmd[256];
    int port = free_port();
    redisContext *c;
    double base, mine;

    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-redis-XXXXXX");
    if (!mkdtemp(dir))
        return fail("cannot create a temporary directory");
    snprintf(cmd, sizeof(cmd), "make -s BUILD=%s %s/test-handlers/redis_noop >/dev/null", build,
             build);
    if (system(cmd) != 0)
        return fail("cannot build tests/handlers/redis_noop.c");
    snprintf(portstr, sizeof(portstr), "%d", port);
    {
        char *argv[] = { "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", dir, "--logfile", "redis.log", NULL };
        if (posix_spawnp(&redis_pid, "redis-server", NULL, NULL, argv, environ) != 0)
            return fail("cannot start redis-server");
    }
    if (!(c = connect_redis(port)))
        return fail("redis-server does not answer");
    printf("%s: adding 2 x %d entries\n", NAME, N);
    fflush(stdout);
    if (!fill(c, "base") || !fill(c, "src"))
        return fail("cannot fill the streams");
    base = baseline(c, "base");
    if (base <= 0)
        return fail("the hiredis consumer failed");
    printf("%s: hiredis XREADGROUP COUNT %d + XACK: %.0f messages/s\n", NAME, BATCH, base);
    fflush(stdout);
    mine = through_sluice(c, port, "src");
    if (mine <= 0)
        return fail("sluice did not drain the stream: see sluice.log");
    printf("%s: sluice (batch %d, %d lanes, no-op C handler): %.0f messages/s\n", NAME, BATCH,
           CONC, mine);
    redisFree(c);
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    rm_tree(dir);
    bench_report(&(struct bench_result){ .name = NAME, .value = mine, .unit = "messages/s",
                                         .baseline = "hiredis-xreadgroup-xack",
                                         .baseline_value = base, .digits = { 0, 0, 2 } });
    return 0;
}
