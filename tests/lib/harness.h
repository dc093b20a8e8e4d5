/* Helpers shared by the unit and integration tests: ports, the build
 * directory, a `sluice run` child, health checks, JSON-lines files, the
 * loop. The test doubles are in the library: sluice/capture_sink.h and
 * sluice/fake_functions.h. */
#ifndef SLUICE_TEST_HARNESS_H
#define SLUICE_TEST_HARNESS_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

/* The test Redis, SLUICE_TEST_REDIS from tests/services env
 * (redis://[PASSWORD@]HOST:PORT), split into host (size n) and *port;
 * false when it is unset or malformed. Its password: th_redis_password. */
static inline bool th_redis_env(char *host, size_t n, int *port)
{
    const char *url = getenv("SLUICE_TEST_REDIS"), *p, *at, *colon;

    if (!url || strncmp(url, "redis://", 8) != 0)
        return false;
    p = url + 8;
    if ((at = strrchr(p, '@')))
        p = at + 1;
    colon = strrchr(p, ':');
    if (!colon || colon == p || (size_t)(colon - p) >= n)
        return false;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536;
}

/* The test Redis's password (SLUICE_TEST_REDIS_PASSWORD), NULL without. */
static inline const char *th_redis_password(void)
{
    const char *v = getenv("SLUICE_TEST_REDIS_PASSWORD");

    return v && *v ? v : NULL;
}

/* "redis://[PASSWORD@]host:port" of the test Redis's password and the
 * given server, in buf (size n). */
static inline const char *th_redis_url(char *buf, size_t n, const char *host, int port)
{
    const char *pw = th_redis_password();

    snprintf(buf, n, "redis://%s%s%s:%d", pw ? pw : "", pw ? "@" : "", host, port);
    return buf;
}

/* The name of the test services' password (SLUICE_TEST_REDIS_PASSWORD,
 * SLUICE_TEST_PG_PASSWORD) that `text` shows, or NULL: for tests that
 * keep their log in memory. */
static inline const char *th_secret_in(const char *text)
{
    static const char *const vars[] = { "SLUICE_TEST_REDIS_PASSWORD", "SLUICE_TEST_PG_PASSWORD" };

    for (size_t i = 0; text && i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);

        if (v && *v && strstr(text, v))
            return vars[i];
    }
    return NULL;
}

/* Before a test removes its scratch directory: when tests/run asked for it
 * (SLUICE_TEST_LEAKS names a directory), every *.log under `dir` that
 * shows a password of the test services (SLUICE_TEST_REDIS_PASSWORD,
 * SLUICE_TEST_PG_PASSWORD from tests/services env) is copied there, and
 * tests/run fails the run on any. The passwords reach grep through the
 * environment, not the command line. */
static inline void th_scan_logs(const char *dir)
{
    static const char *const vars[] = { "SLUICE_TEST_REDIS_PASSWORD", "SLUICE_TEST_PG_PASSWORD" };
    const char *leaks = getenv("SLUICE_TEST_LEAKS");
    char cmd[2048];
    size_t o;
    int n = 0;

    if (!leaks || !*leaks || strchr(leaks, '\'') || !dir || !*dir || strchr(dir, '\''))
        return;
    o = (size_t)snprintf(cmd, sizeof(cmd), "find '%s' -type f -name '*.log' -exec grep -lF", dir);
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);

        if (v && *v && o < sizeof(cmd)) {
            o += (size_t)snprintf(cmd + o, sizeof(cmd) - o, " -e \"$%s\"", vars[i]);
            n++;
        }
    }
    if (n == 0 || o >= sizeof(cmd))
        return;
    snprintf(cmd + o, sizeof(cmd) - o,
             " {} + 2>/dev/null | while IFS= read -r f; do "
             "cp \"$f\" '%s'/\"$(printf %%s \"$f\" | tr / _)\"; done", leaks);
    if (system(cmd) != 0) {
        /* a copy that failed shows as a missing report, not a pass: cp
         * complains on stderr, which tests/run scans too */
    }
}

/* A loopback port nothing listens on right now. */
static inline int th_free_port(void)
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

/* The build directory the tests run from: $BUILD, or "build". Helpers that
 * build in parallel use their own (make BUILD=build-x; BUILD=build-x tests/run). */
static inline const char *th_build(void)
{
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* `<root>/$BUILD/<rel>` in `out` (just `$BUILD/<rel>` when $BUILD is an
 * absolute path); returns `out`. Every path into the build goes through
 * here, so `make SANITIZE=1 BUILD=build-asan test` tests that build. */
static inline char *th_build_path(char *out, size_t n, const char *root, const char *rel)
{
    const char *b = th_build();

    if (b[0] == '/' || !root || !*root)
        snprintf(out, n, "%s/%s", b, rel);
    else
        snprintf(out, n, "%s/%s/%s", root, b, rel);
    return out;
}

/* `<root>/$BUILD/sluice run cfg` (BUILD defaults to build) as a child,
 * stderr appended to `log`. */
static inline pid_t th_run_sluice(const char *root, const char *cfg, const char *log)
{
    pid_t pid = fork();

    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        char exe[1200];
        dup2(fd, 2);
        th_build_path(exe, sizeof(exe), root, "sluice");
        execl(exe, "sluice", "run", cfg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static inline bool th_healthy(int port)
{
    char cmd[200];

    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null http://127.0.0.1:%d/healthz", port);
    return system(cmd) == 0;
}

/* The lines of a JSON-lines file, parsed (NULL for a bad line); the
 * caller decrefs them. A missing file has none. */
static inline size_t th_read_jsonl(const char *path, json_t **out, size_t max)
{
    char *line = NULL;
    size_t cap = 0, n = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        return 0;
    while (getline(&line, &cap, f) > 0 && n < max)
        out[n++] = json_loads(line, 0, NULL);
    free(line);
    fclose(f);
    return n;
}

/* How many lines a JSON-lines file has (up to 64), for waiting loops. */
static inline size_t th_count_jsonl(const char *path)
{
    json_t *v[64];
    size_t n = th_read_jsonl(path, v, 64);

    for (size_t i = 0; i < n; i++)
        json_decref(v[i]);
    return n;
}

/* Run the loop for `ms`. */
static inline void th_pump(struct event_base *base, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

#endif
