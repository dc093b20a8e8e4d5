/* bench invoke-warm: round trip of one warm invocation.
 *
 * A 1 KB JSON event goes through the C echo handler (build/handlers/echo)
 * in its sandboxed environment, driven through the library as the server
 * does: sl_fnpool_invoke, then the event loop until the callback. After a
 * warm-up, N sequential invocations are timed from the call to the
 * callback. Baseline, in the same run: a bare AF_UNIX socketpair round
 * trip of the same 1 KB message with a forked child that reads it and
 * writes it back, same count. value and baseline are p50 in microseconds.
 * For the breakdown it also times the same echo binary started bare (no
 * sandbox, no pool: frames written and read by hand, its stdout drained),
 * which is the floor the handler and its runtime library set.
 *
 * sluice's log (the handler's output lines and one REPORT line per
 * invocation, at the usual info level) goes to a file in the data
 * directory, kept when the benchmark fails. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/frame.h"
#include "sluice/log.h"

#define EVENT_SIZE   1024
#define N_MAX        20000          /* timed invocations, at most */
#define MEASURE_US   5e6            /* ... and at most this long */
#define WARMUP       2000
#define TARGET_P50   30.0           /* us */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* v sorted ascending; nearest-rank percentile */
static double pct(const double *v, size_t n, double p)
{
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* A JSON object of exactly `size` bytes. */
static char *make_event(size_t size)
{
    char *e = malloc(size + 1);
    int head = snprintf(e, size + 1, "{\"id\":\"bench-invoke-warm\",\"seq\":42,\"data\":\"");

    memset(e + head, 'x', size - (size_t)head - 2);
    memcpy(e + size - 2, "\"}", 3);
    return e;
}

/* ------------------------------------------------------------------ */
/* sluice                                                              */

struct call {
    bool   done, ok, cold, echoed;
    double t_end;
    double duration_ms;
    char   what[400];
};

static const char *g_event;

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct call *c = arg;

    c->t_end = now_us();
    c->done = true;
    c->ok = r->ok;
    c->cold = r->cold;
    c->duration_ms = r->duration_ms;
    c->echoed = r->ok && r->payload_len == EVENT_SIZE && memcmp(r->payload, g_event,
                                                                EVENT_SIZE) == 0;
    if (!r->ok)
        snprintf(c->what, sizeof(c->what), "%s: %s", r->error_type ? r->error_type : "?",
                 r->error_message ? r->error_message : "");
}

/* One invocation; returns its round trip in us, or -1 (message printed). */
static double invoke_once(struct event_base *base, struct sl_fnpool *pool, const char *event,
                          struct call *c)
{
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    double t0;
    int rc;

    memset(c, 0, sizeof(*c));
    t0 = now_us();
    rc = sl_fnpool_invoke(pool, &req, on_result, c);
    if (rc != 0) {
        fprintf(stderr, "invoke-warm: sl_fnpool_invoke: %s\n", sl_strerror(rc));
        return -1;
    }
    while (!c->done)
        event_base_loop(base, EVLOOP_ONCE);
    if (!c->ok || !c->echoed) {
        fprintf(stderr, "invoke-warm: invocation failed: %s\n",
                c->ok ? "payload differs from the event" : c->what);
        return -1;
    }
    return c->t_end - t0;
}

/* ------------------------------------------------------------------ */
/* Baseline: socketpair round trip with a forked child                 */

static int read_full(int fd, char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const char *buf, size_t n)
{
    size_t put = 0;

    while (put < n) {
        ssize_t k = write(fd, buf + put, n - put);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        put += (size_t)k;
    }
    return 0;
}

static int baseline(const char *event, int n, double *lat)
{
    char buf[EVENT_SIZE];
    int sv[2], st;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return perror("socketpair"), -1;
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        close(sv[0]);
        while (read_full(sv[1], buf, sizeof(buf)) == 0)
            if (write_full(sv[1], buf, sizeof(buf)) != 0)
                break;
        _exit(0);
    }
    close(sv[1]);
    for (int i = -WARMUP; i < n; i++) {
        double t0 = now_us();
        if (write_full(sv[0], event, EVENT_SIZE) != 0 || read_full(sv[0], buf, sizeof(buf)) != 0 ||
            memcmp(buf, event, EVENT_SIZE) != 0) {
            fprintf(stderr, "invoke-warm: baseline round trip failed\n");
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        if (i >= 0)
            lat[i] = now_us() - t0;
    }
    close(sv[0]);
    waitpid(pid, &st, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Breakdown: the echo binary bare, the protocol spoken by hand        */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read one frame and decode it; 0 or -1. */
static int read_msg(int fd, struct sl_msg *m)
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
        fprintf(stderr, "invoke-warm: bare handler: bad frame: %s\n", why);
        return -1;
    }
    return 0;
}

static int bare_handler(const char *handler, const char *event, int n, double *lat)
{
    struct sl_invoke_msg im = {
        .request_id = "00000000-0000-4000-8000-000000000000",
        .function_name = "echo", .function_version = "$LATEST", .memory_mb = 1769,
        .invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:echo",
        .event = event, .event_len = EVENT_SIZE,
    };
    char *envp[] = { "SLUICE_RUNTIME_FD=3", "LANG=C.UTF-8", "TZ=:UTC", NULL };
    char *argv[] = { (char *)handler, NULL }, *frame = NULL, sink[4096];
    int sv[2], outp[2], st, rc = -1;
    struct sl_msg m;
    size_t flen;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 ||
        pipe2(outp, O_CLOEXEC) != 0)
        return perror("invoke-warm: bare handler"), -1;
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        if (dup2(sv[1], 3) < 0 || dup2(outp[1], 1) < 0)
            _exit(127);
        execve(handler, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    close(outp[1]);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    if (read_msg(sv[0], &m) != 0 || m.type != SL_MSG_READY) {
        fprintf(stderr, "invoke-warm: bare handler: no `ready`\n");
        goto done;
    }
    sl_msg_destroy(&m);
    im.deadline_ms = wall_ms() + 3600 * 1000;
    if (sl_frame_invoke(&im, &frame, &flen) != 0)
        goto done;
    for (int i = -WARMUP; i < n; i++) {
        double t0 = now_us();
        bool same;
        if (write_full(sv[0], frame, flen) != 0 || read_msg(sv[0], &m) != 0) {
            fprintf(stderr, "invoke-warm: bare handler: round trip failed\n");
            goto done;
        }
        same = m.type == SL_MSG_RESULT && m.ok && m.payload.n == EVENT_SIZE &&
               memcmp(m.payload.p, event, EVENT_SIZE) == 0;
        sl_msg_destroy(&m);
        while (read(outp[0], sink, sizeof(sink)) > 0)
            ;
        if (!same) {
            fprintf(stderr, "invoke-warm: bare handler: wrong result\n");
            goto done;
        }
        if (i >= 0)
            lat[i] = now_us() - t0;
    }
    rc = 0;
done:
    free(frame);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    close(sv[0]);
    close(outp[0]);
    return rc;
}

/* ------------------------------------------------------------------ */

int main(void)
{
    char dir[] = "/tmp/sluice-bench-invoke-warm-XXXXXX";
    char handler[PATH_MAX], logpath[PATH_MAX + 16], *yaml = NULL, *event;
    struct sl_config *conf = NULL;
    struct sl_functions *fns = NULL;
    struct sl_fnpool *pool;
    struct event_base *base = NULL;
    struct sl_diags d;
    struct sl_err err;
    struct call c;
    double *lat = calloc(N_MAX, sizeof(double)), *blat = calloc(N_MAX, sizeof(double));
    double t0, p50, p99, mean = 0, b50, b99, dur50;
    double *dur = calloc(N_MAX, sizeof(double)), *hlat = calloc(N_MAX, sizeof(double)), h50;
    int n = 0, logfd, code = 1, cold = 0;
    size_t nenvs;

    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SLUICE_RUNTIME_DIR")) {
        char *rt = realpath("runtime", NULL);
        if (rt)
            setenv("SLUICE_RUNTIME_DIR", rt, 1);
        free(rt);
    }
    if (!realpath("build/handlers/echo", handler)) {
        fprintf(stderr, "invoke-warm: build/handlers/echo: %s (run `make` first)\n",
                strerror(errno));
        return 1;
    }
    if (!mkdtemp(dir))
        return perror("mkdtemp"), 1;
    snprintf(logpath, sizeof(logpath), "%s/sluice.log", dir);
    logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0644);
    if (logfd < 0)
        return perror(logpath), 1;
    sl_log_set_fd(logfd);
    sl_log_set_level(SL_LOG_INFO);

    event = make_event(EVENT_SIZE);
    g_event = event;
    if (asprintf(&yaml,
                 "functions:\n"
                 "  echo:\n"
                 "    handler: %s\n"
                 "    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "server:\n"
                 "  data_dir: %s/data\n", handler, dir) < 0)
        return 1;
    sl_diags_init(&d, "invoke-warm.yaml");
    if (sl_config_load_buffer("invoke-warm.yaml", dir, yaml, strlen(yaml), &conf, &d) != 0) {
        sl_diags_print(&d, stderr);
        sl_diags_destroy(&d);
        goto out;
    }
    sl_diags_destroy(&d);

    base = event_base_new();
    sl_err_clear(&err);
    if (sl_functions_new(base, conf, NULL, &fns, &err) != 0) {
        fprintf(stderr, "invoke-warm: sl_functions_new: %s\n", err.msg);
        goto out;
    }
    pool = sl_functions_pool(fns, "echo");

    /* the cold start, then warm-up */
    for (int i = 0; i < WARMUP; i++)
        if (invoke_once(base, pool, event, &c) < 0)
            goto out;

    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double us = invoke_once(base, pool, event, &c);
        if (us < 0)
            goto out;
        cold += c.cold;
        dur[n] = c.duration_ms * 1000.0;
        lat[n++] = us;
    }
    nenvs = sl_fnpool_envs(pool);
    sl_functions_free(fns);
    fns = NULL;
    if (cold || nenvs != 1) {
        fprintf(stderr, "invoke-warm: %d timed invocations were cold, %zu environments "
                "(expected 0 and 1)\n", cold, nenvs);
        goto out;
    }

    if (baseline(event, n, blat) != 0 || bare_handler(handler, event, n, hlat) != 0)
        goto out;

    for (int i = 0; i < n; i++)
        mean += lat[i] / n;
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    qsort(blat, (size_t)n, sizeof(double), cmp_double);
    qsort(dur, (size_t)n, sizeof(double), cmp_double);
    qsort(hlat, (size_t)n, sizeof(double), cmp_double);
    h50 = pct(hlat, (size_t)n, 50);
    p50 = pct(lat, (size_t)n, 50);
    p99 = pct(lat, (size_t)n, 99);
    b50 = pct(blat, (size_t)n, 50);
    b99 = pct(blat, (size_t)n, 99);
    dur50 = pct(dur, (size_t)n, 50);

    printf("invoke-warm: %d invokes of a %d-byte event, p50 %.1f us, p99 %.1f us, mean %.1f us, "
           "max %.1f us (pool's own duration p50 %.1f us); socketpair round trip p50 %.1f us, "
           "p99 %.1f us\n", n, EVENT_SIZE, p50, p99, mean, lat[n - 1], dur50, b50, b99);
    printf("invoke-warm: breakdown: the echo binary bare (no sandbox, no pool, protocol by "
           "hand) p50 %.1f us\n", h50);
    printf("invoke-warm: target p50 <= %.0f us: %s\n", TARGET_P50,
           p50 <= TARGET_P50 ? "met" : "MISSED");
    printf("invoke-warm: p99 %.1f us\n", p99);
    printf("BENCH name=invoke-warm value=%.1f unit=us baseline=socketpair-round-trip "
           "baseline_value=%.1f ratio=%.2f\n", p50, b50, p50 / b50);
    code = 0;

out:
    sl_functions_free(fns);
    if (base)
        event_base_free(base);
    sl_config_free(conf);
    if (code == 0)
        rm_tree(dir);
    else
        fprintf(stderr, "invoke-warm: sluice's log is in %s\n", logpath);
    free(yaml);
    free(event);
    free(lat);
    free(blat);
    free(dur);
    free(hlat);
    return code;
}
