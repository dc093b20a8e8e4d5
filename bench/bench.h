/* bench/bench.h: what the benchmarks share.
 *
 * Each bench/NAME.c is a program of its own (the Makefile builds
 * build/bench/NAME from it alone and `#include "bench.h"` finds this file
 * next to it), so everything here is static inline: a program that does
 * not use a function gets no code and no warning for it.
 *
 * Every benchmark ends with one line, printed by bench_report:
 *   BENCH name=<name> value=<n> unit=<u> baseline=<name> baseline_value=<n> ratio=<r>
 * with ratio = value / baseline_value. */
#ifndef SLUICE_BENCH_H
#define SLUICE_BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/sandbox.h"

/* ------------------------------------------------------------------ */
/* Clocks and statistics                                               */

/* Monotonic time in microseconds, for measuring. */
static inline double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Wall-clock time in milliseconds, for deadlines in `invoke` frames. */
static inline int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback port nobody listens on right now; -1 on error. */
static inline int bench_free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) ascending, as pct wants it. */
static inline void sort_doubles(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
}

/* v sorted ascending; nearest-rank percentile */
static inline double pct(const double *v, int n, double p)
{
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

struct bench_stats {
    double mean, p50, p99, max;
};

/* The mean of v[0..n) (summed in the order given), then v sorted
 * ascending and its p50, p99 and maximum. */
static inline struct bench_stats bench_stats(double *v, int n)
{
    struct bench_stats st = { 0 };

    for (int i = 0; i < n; i++)
        st.mean += v[i] / n;
    sort_doubles(v, n);
    st.p50 = pct(v, n, 50);
    st.p99 = pct(v, n, 99);
    st.max = n > 0 ? v[n - 1] : 0;
    return st;
}

/* The final line; ratio = value / baseline_value. */
struct bench_result {
    const char   *name;
    double        value;
    const char   *unit;
    const char   *baseline;
    double        baseline_value;
    int           digits[3];     /* decimals of value, baseline_value, ratio */
    const double *p99;           /* unless NULL, "NAME: p99 P99 UNIT" first, as value */
};

static inline void bench_report(const struct bench_result *b)
{
    if (b->p99)
        printf("%s: p99 %.*f %s\n", b->name, b->digits[0], *b->p99, b->unit);
    printf("BENCH name=%s value=%.*f unit=%s baseline=%s baseline_value=%.*f ratio=%.*f\n",
           b->name, b->digits[0], b->value, b->unit, b->baseline, b->digits[1],
           b->baseline_value, b->digits[2], b->value / b->baseline_value);
}

/* ------------------------------------------------------------------ */
/* Files and events                                                    */

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static inline void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* A JSON object of exactly `size` bytes, {"id":"bench-NAME",...}. */
static inline char *make_event(const char *name, size_t size)
{
    char *e = malloc(size + 1);
    int head = snprintf(e, size + 1, "{\"id\":\"bench-%s\",\"seq\":42,\"data\":\"", name);

    memset(e + head, 'x', size - (size_t)head - 2);
    memcpy(e + size - 2, "\"}", 3);
    return e;
}

/* All n bytes read into buf (writing: written from it), retrying on
 * EINTR; 0, or -1 on an error or the end of the file. */
static inline int io_full(int fd, char *buf, size_t n, bool writing)
{
    size_t done = 0;

    while (done < n) {
        ssize_t k = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

static inline int read_full(int fd, char *buf, size_t n)
{
    return io_full(fd, buf, n, false);
}

static inline int write_full(int fd, const char *buf, size_t n)
{
    return io_full(fd, (char *)buf, n, true);
}

/* ------------------------------------------------------------------ */
/* Setting up: environment, log, configuration, sandbox                */

/* What a benchmark of pools sets up and tears down. */
struct bench_host {
    const char        *name;                 /* "cold-start": messages, file names */
    char               dir[PATH_MAX];        /* temporary: the log, the data */
    char               logpath[PATH_MAX + 16];
    char               handler[PATH_MAX];    /* absolute */
    char              *yaml;                 /* the configuration's text */
    struct sl_config  *conf;
    char              *state;                /* the sandbox's state directory */
    struct sl_sandbox *sb;
    struct event_base *base;
};

/* SIGPIPE ignored, SLUICE_RUNTIME_DIR defaulting to ./runtime, the
 * handler's absolute path (or "NAME: REL: why HINT"), the temporary
 * directory /tmp/sluice-bench-NAME-XXXXXX with sluice's log, at info
 * level, in DIR/sluice.log. 0, or -1 (message printed). */
static inline int bench_host_open(struct bench_host *h, const char *name, const char *handler,
                                  const char *hint)
{
    int fd;

    memset(h, 0, sizeof(*h));
    h->name = name;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SLUICE_RUNTIME_DIR")) {
        char *rt = realpath("runtime", NULL);
        if (rt)
            setenv("SLUICE_RUNTIME_DIR", rt, 1);
        free(rt);
    }
    if (!realpath(handler, h->handler)) {
        fprintf(stderr, "%s: %s: %s%s\n", name, handler, strerror(errno), hint);
        return -1;
    }
    snprintf(h->dir, sizeof(h->dir), "/tmp/sluice-bench-%s-XXXXXX", name);
    if (!mkdtemp(h->dir))
        return perror("mkdtemp"), -1;
    snprintf(h->logpath, sizeof(h->logpath), "%s/sluice.log", h->dir);
    fd = open(h->logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0644);
    if (fd < 0)
        return perror(h->logpath), -1;
    sl_log_set_fd(fd);
    sl_log_set_level(SL_LOG_INFO);
    return 0;
}

/* Loads h->yaml as the file NAME.yaml in the directory, into h->conf;
 * 0, or -1 after printing the diagnostics. */
static inline int bench_host_config(struct bench_host *h)
{
    struct sl_diags d;
    char file[128];
    int rc;

    snprintf(file, sizeof(file), "%s.yaml", h->name);
    sl_diags_init(&d, file);
    rc = sl_config_load_buffer(file, h->dir, h->yaml, strlen(h->yaml), &sl_registry, &h->conf,
                               &d);
    if (rc != 0)
        sl_diags_print(&d, stderr);
    sl_diags_destroy(&d);
    return rc != 0 ? -1 : 0;
}

/* The configuration of one function `echo`, the handler, data in
 * DIR/data (h->yaml), loaded as bench_host_config does; 0 or -1. */
static inline int bench_host_echo_config(struct bench_host *h)
{
    if (asprintf(&h->yaml,
                 "functions:\n"
                 "  echo:\n"
                 "    handler: %s\n"
                 "    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "server:\n"
                 "  data_dir: %s/data\n", h->handler, h->dir) < 0) {
        h->yaml = NULL;
        return -1;
    }
    return bench_host_config(h);
}

/* The host preparation, once, as sl_functions_new does it, into h->sb:
 * state in DATA_DIR/sandbox, the runtime directory from sl_runtime_dir
 * (when need_runtime, its absence is an error). 0, or -1 (message
 * printed). */
static inline int bench_host_sandbox(struct bench_host *h, bool need_runtime)
{
    struct sl_sandbox_opts so;
    struct sl_err err;
    char *rt = sl_runtime_dir();
    int rc;

    if (!rt && need_runtime) {
        fprintf(stderr, "%s: no runtime directory (set SLUICE_RUNTIME_DIR)\n", h->name);
        return -1;
    }
    if (asprintf(&h->state, "%s/sandbox", h->conf->server.data_dir) < 0) {
        h->state = NULL;
        free(rt);
        return -1;
    }
    so.state_dir = h->state;
    so.runtime_dir = rt;
    so.relaxed_only = false;
    so.base = h->base; /* NULL unless the caller made its loop first */
    so.uid_base = h->conf->server.sandbox_uid_base;
    so.functions = h->conf->functions;
    so.nfunctions = h->conf->nfunctions;
    sl_err_clear(&err);
    rc = sl_sandbox_new(&so, &h->sb, &err);
    if (rc != 0) {
        fprintf(stderr, "%s: sl_sandbox_new: %s\n", h->name, err.msg);
        h->sb = NULL;
    }
    free(rt);
    return rc != 0 ? -1 : 0;
}

/* Frees what the host holds; the directory is removed on success (code
 * 0), kept (and said) on failure. Returns code. */
static inline int bench_host_close(struct bench_host *h, int code)
{
    sl_sandbox_free(h->sb);
    if (h->base)
        event_base_free(h->base);
    sl_config_free(h->conf);
    if (code == 0)
        rm_tree(h->dir);
    else
        fprintf(stderr, "%s: sluice's log is in %s\n", h->name, h->logpath);
    free(h->state);
    free(h->yaml);
    return code;
}

/* ------------------------------------------------------------------ */
/* Invoking through a pool, as the server does                         */

/* One invocation. bench_call_fill sets the fields up to `what`; the rest
 * is for the benchmark's own callback. */
struct bench_call {
    const char *event;           /* the request's (set by bench_invoke) */
    size_t      event_len;
    bool        done, ok, cold;
    double      t_end, init_ms, duration_ms;
    char        what[600];       /* !ok: "type: message" */
    bool        echoed;          /* bench_on_echo: the payload is the event */
    char        init_type[32];
};

static inline void bench_call_fill(struct bench_call *c, const struct sl_invoke_result *r)
{
    c->t_end = now_us();
    c->done = true;
    c->ok = r->ok;
    c->cold = r->cold;
    c->init_ms = r->init_ms;
    c->duration_ms = r->duration_ms;
    if (!r->ok)
        snprintf(c->what, sizeof(c->what), "%s: %s", r->error_type ? r->error_type : "?",
                 r->error_message ? r->error_message : "");
}

/* The callback for an echo handler: the result, and whether the payload
 * is the event. */
static inline void bench_on_echo(const struct sl_invoke_result *r, void *arg)
{
    struct bench_call *c = arg;

    bench_call_fill(c, r);
    c->echoed = r->ok && r->payload_len == c->event_len &&
                memcmp(r->payload, c->event, c->event_len) == 0;
}

/* Invokes `req` on `pool` with the callback cb(result, c) and runs the
 * loop until the callback, or at most limit_us (0: no limit). Returns the
 * microseconds from the call to the callback, or -1 (message printed);
 * whether it succeeded is for the caller to see in *c. */
static inline double bench_invoke(const char *name, struct event_base *base,
                                  struct sl_fnpool *pool, const struct sl_invoke_req *req,
                                  sl_invoke_cb cb, struct bench_call *c, double limit_us)
{
    double t0;
    int rc;

    memset(c, 0, sizeof(*c));
    c->event = req->event;
    c->event_len = req->event_len;
    t0 = now_us();
    rc = sl_fnpool_invoke(pool, req, cb, c);
    if (rc != 0) {
        fprintf(stderr, "%s: sl_fnpool_invoke: %s\n", name, sl_strerror(rc));
        return -1;
    }
    while (!c->done && (limit_us <= 0 || now_us() - t0 < limit_us))
        event_base_loop(base, EVLOOP_ONCE);
    if (!c->done) {
        fprintf(stderr, "%s: no result after %.0f s\n", name, limit_us / 1e6);
        return -1;
    }
    return c->t_end - t0;
}

/* ------------------------------------------------------------------ */
/* A handler started bare: no sandbox, no pool, the protocol by hand   */

struct bench_bare {
    pid_t pid;
    int   sock;                  /* our end of its fd 3 */
    int   out, err;              /* read ends of its stdout, stderr (-1: not piped) */
};

/* Starts `handler` with envp, its fd 3 a socketpair, its stdout (and its
 * stderr when pipe_err) a pipe, in cwd unless NULL; *t_fork (unless NULL)
 * is the time just before the fork. 0, or -1 after perror(what). */
static inline int bench_bare_start(struct bench_bare *b, const char *what, const char *handler,
                                   char **envp, const char *cwd, bool pipe_err,
                                   double *t_fork)
{
    char *argv[] = { (char *)handler, NULL };
    int sv[2], outp[2], errp[2] = { -1, -1 };

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 ||
        pipe2(outp, O_CLOEXEC) != 0 || (pipe_err && pipe2(errp, O_CLOEXEC) != 0))
        return perror(what), -1;
    if (t_fork)
        *t_fork = now_us();
    b->pid = fork();
    if (b->pid < 0)
        return perror("fork"), -1;
    if (b->pid == 0) {
        /* the fds are all close-on-exec; dup2 clears that on the copies */
        if (dup2(sv[1], 3) < 0 || dup2(outp[1], 1) < 0 || (pipe_err && dup2(errp[1], 2) < 0) ||
            (cwd && chdir(cwd) != 0))
            _exit(127);
        execve(handler, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    close(outp[1]);
    if (pipe_err)
        close(errp[1]);
    b->sock = sv[0];
    b->out = outp[0];
    b->err = errp[0];
    return 0;
}

static inline void bench_bare_stop(struct bench_bare *b)
{
    int st;

    kill(b->pid, SIGKILL);
    waitpid(b->pid, &st, 0);
    close(b->sock);
    close(b->out);
    if (b->err >= 0)
        close(b->err);
}

/* Reads one frame and decodes it; 0, or -1 ("WHAT: bad frame: ..." when
 * it does not decode). */
static inline int read_msg(int fd, struct sl_msg *m, const char *what)
{
    unsigned char hdr[4];
    char why[256], *body;
    uint32_t len;

    if (read_full(fd, (char *)hdr, 4) != 0)
        return -1;
    len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len == 0 || len > SL_FRAME_MAX)
        return -1;
    body = malloc(len);
    if (read_full(fd, body, len) != 0) {
        free(body);
        return -1;
    }
    if (sl_msg_decode(body, len, m, why, sizeof(why)) != 0) {
        fprintf(stderr, "%s: bad frame: %s\n", what, why);
        return -1;
    }
    return 0;
}

/* The `invoke` frame the pool would send the echo function for `event`. */
static inline int bench_echo_frame(const char *event, size_t len, int64_t deadline_ms,
                                   char **frame, size_t *flen)
{
    struct sl_invoke_msg im = {
        .request_id = "00000000-0000-4000-8000-000000000000",
        .function_name = "echo", .function_version = "$LATEST", .memory_mb = 1769,
        .invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:echo",
        .event = event, .event_len = len, .deadline_ms = deadline_ms,
    };

    return sl_frame_invoke(&im, frame, flen);
}

#endif
