/* bench/srcbench.h: what the source benchmarks (kafka, redis, bullmq,
 * postgres) share, on top of bench.h: a temporary directory kept on
 * failure, the sluice configuration written into it, `$BUILD/sluice run`
 * as a child timed until a condition of the benchmark's own holds, and
 * the children killed when anything fails.
 *
 * Everything is static inline, as in bench.h. */
#ifndef SLUICE_BENCH_SRCBENCH_H
#define SLUICE_BENCH_SRCBENCH_H

#include "bench.h"

#include <stdarg.h>

/* One source benchmark's run: what its failure path has to clean up. */
struct sb_bench {
    const char *name;       /* the benchmark's name, as in its BENCH line */
    char        dir[64];    /* /tmp/sluice-bench-<tag>-XXXXXX: logs, config, data */
    char        root[PATH_MAX]; /* the repository (the working directory) */
    const char *build;      /* $BUILD, or "build" */
    const char *handler;    /* tests/handlers/<handler>.c, the function's code */
    pid_t       sluice;     /* `sluice run`, -1 when not running */
    pid_t       aux;        /* the other child (redis-server, pg_recvlogical), or -1 */
};

/* Kills (with sig) and reaps *pid unless it is <= 0, then marks it gone. */
static inline void sb_reap(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
    }
    *pid = -1;
}

/* Says what failed and where the temporary directory was kept, kills the
 * children; returns 1, the benchmark's exit status. */
static inline int sb_fail(struct sb_bench *b, const char *what)
{
    fprintf(stderr, "bench %s: %s (kept %s)\n", b->name, what, b->dir);
    sb_reap(&b->sluice, SIGKILL);
    sb_reap(&b->aux, SIGKILL);
    return 1;
}

/* `make` of the test handler tests/handlers/<handler>.c, which the
 * configuration names as <root>/<build>/test-handlers/<handler>. */
static inline int sb_build_handler(const struct sb_bench *b, const char *handler)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "make -s BUILD=%s %s/test-handlers/%s >/dev/null", b->build,
             b->build, handler);
    return system(cmd) == 0 ? 0 : -1;
}

/* Fills *b, makes /tmp/sluice-bench-<tag>-XXXXXX and builds the test
 * handler; 0, or -1 once it said what failed on stderr. */
static inline int sb_open(struct sb_bench *b, const char *name, const char *tag,
                          const char *handler)
{
    const char *build = getenv("BUILD");

    *b = (struct sb_bench){ .name = name, .build = build && *build ? build : "build",
                            .handler = handler, .sluice = -1, .aux = -1 };
    snprintf(b->dir, sizeof(b->dir), "/tmp/sluice-bench-%s-XXXXXX", tag);
    if (!getcwd(b->root, sizeof(b->root)) || !mkdtemp(b->dir)) {
        fprintf(stderr, "bench %s: cannot make a temporary directory: %s\n", name,
                strerror(errno));
        return -1;
    }
    if (sb_build_handler(b, handler) != 0) {
        fprintf(stderr, "bench %s: cannot build tests/handlers/%s.c (kept %s)\n", name, handler,
                b->dir);
        return -1;
    }
    return 0;
}

/* <dir>/sluice.yaml: the server on a free port with its data in <dir>,
 * log level warn, the function noop running the test handler with
 * fn_opts (flow-style keys), and the source bench of the type with the
 * keys of fmt (block style, indented by four); 0 or -1. */
__attribute__((format(printf, 4, 5)))
static inline int sb_config(const struct sb_bench *b, const char *fn_opts, const char *type,
                            const char *fmt, ...)
{
    char path[128];
    va_list ap;
    FILE *f;
    int rc;

    snprintf(path, sizeof(path), "%s/sluice.yaml", b->dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f,
            "server: { listen: 127.0.0.1:%d, data_dir: %s }\n"
            "log: { level: warn }\n"
            "functions:\n  noop: { handler: %s/%s/test-handlers/%s, %s }\n"
            "sources:\n  bench:\n    type: %s\n    function: noop\n",
            bench_free_port(), b->dir, b->root, b->build, b->handler, fn_opts, type);
    va_start(ap, fmt);
    rc = vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f) == 0 && rc >= 0 ? 0 : -1;
}

/* Runs `<root>/<build>/sluice run <dir>/sluice.yaml` (output to
 * <dir>/sluice.log) and calls done(arg) every poll_ms until it returns
 * true; then stops sluice with SIGTERM. Returns the seconds from the start
 * of the process until done held, or -1 when sluice exited first or
 * timeout_s passed (sluice is then left to sb_fail). */
static inline double sb_run_sluice(struct sb_bench *b, bool (*done)(void *arg), void *arg,
                                   int poll_ms, int timeout_s)
{
    char cfg[128], log[128], exe[PATH_MAX + 64];
    double t0, secs;

    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", b->dir);
    snprintf(log, sizeof(log), "%s/sluice.log", b->dir);
    snprintf(exe, sizeof(exe), "%s/%s/sluice", b->root, b->build);
    t0 = now_us();
    b->sluice = fork();
    if (b->sluice < 0)
        return -1;
    if (b->sluice == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        execl(exe, "sluice", "run", cfg, (char *)NULL);
        _exit(127);
    }
    while (!done(arg)) {
        if (waitpid(b->sluice, NULL, WNOHANG) == b->sluice) {
            b->sluice = -1;
            return -1;
        }
        if (now_us() - t0 > timeout_s * 1e6)
            return -1;
        usleep((useconds_t)poll_ms * 1000);
    }
    secs = (now_us() - t0) / 1e6;
    sb_reap(&b->sluice, SIGTERM);
    return secs;
}

/* Removes the temporary directory and prints the BENCH line. */
static inline void sb_report(struct sb_bench *b, double value, const char *unit,
                             const char *baseline, double baseline_value)
{
    rm_tree(b->dir);
    bench_report(&(struct bench_result){ .name = b->name, .value = value, .unit = unit,
                                         .baseline = baseline, .baseline_value = baseline_value,
                                         .digits = { 0, 0, 2 } });
}

#endif
