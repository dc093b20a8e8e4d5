/* bench cold-start: from an invocation to its result on a new environment.
 *
 * Each iteration gives the C echo handler (build/handlers/echo) a pool of
 * its own with no environment in it, so sl_fnpool_invoke starts one: the
 * sandbox spawn (namespaces, root, cgroups, seccomp), the handler's exec
 * and init up to `ready`, then the invocation. Timed from the call to the
 * callback; the pool is freed (environment killed) outside the timing.
 * The host preparation (sl_sandbox_new) is made once, as the server does.
 *
 * Baseline, in the same run: the same binary started bare with fork and
 * exec, no sandbox, with a socketpair on fd 3 and pipes on stdout and
 * stderr, speaking the protocol: wait for `ready`, send one `invoke`, read
 * the `result`. Same count. value and baseline are p50 in milliseconds.
 *
 * The timed starts run back to back. A few more, each after the host has
 * been idle for a while, are reported on the side: on cgroup v1, moving a
 * process into a cgroup can wait for an RCU grace period when no other
 * move happened just before, which back-to-back starts never see. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
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
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/sandbox.h"

#define EVENT_SIZE   1024
#define N_MAX        200            /* iterations, at most */
#define MEASURE_US   25e6           /* ... and at most this long, each side */
#define WARMUP       5
#define SPACED_N     20             /* starts after an idle pause, on the side */
#define SPACED_US    100000
#define TARGET_P50   5.0            /* ms */
#define TARGET_RATIO 3.0

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    int head = snprintf(e, size + 1, "{\"id\":\"bench-cold-start\",\"seq\":42,\"data\":\"");

    memset(e + head, 'x', size - (size_t)head - 2);
    memcpy(e + size - 2, "\"}", 3);
    return e;
}

/* ------------------------------------------------------------------ */
/* sluice                                                              */

struct call {
    bool   done, ok, cold, echoed;
    double t_end, init_ms, duration_ms;
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
    c->init_ms = r->init_ms;
    c->duration_ms = r->duration_ms;
    c->echoed = r->ok && r->payload_len == EVENT_SIZE && memcmp(r->payload, g_event,
                                                                EVENT_SIZE) == 0;
    if (!r->ok)
        snprintf(c->what, sizeof(c->what), "%s: %s", r->error_type ? r->error_type : "?",
                 r->error_message ? r->error_message : "");
}

/* One cold invocation on a new pool. Returns its time in ms, or -1. */
static double cold_once(struct event_base *base, struct sl_sandbox *sb,
                        const struct sl_function_conf *fn, const char *event, struct call *c,
                        double *teardown_ms)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 64 };
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    struct sl_fnpool *pool = NULL;
    struct sl_err err;
    double t0, t1;
    int rc;

    sl_err_clear(&err);
    if (sl_fnpool_new(base, sb, fn, &po, &pool, &err) != 0) {
        fprintf(stderr, "cold-start: sl_fnpool_new: %s\n", err.msg);
        return -1;
    }
    memset(c, 0, sizeof(*c));
    t0 = now_us();
    rc = sl_fnpool_invoke(pool, &req, on_result, c);
    if (rc != 0) {
        fprintf(stderr, "cold-start: sl_fnpool_invoke: %s\n", sl_strerror(rc));
        sl_fnpool_free(pool);
        return -1;
    }
    while (!c->done)
        event_base_loop(base, EVLOOP_ONCE);
    t1 = now_us();
    sl_fnpool_free(pool);
    *teardown_ms = (now_us() - t1) / 1000.0;
    if (!c->ok || !c->echoed || !c->cold) {
        fprintf(stderr, "cold-start: invocation failed: %s\n",
                !c->ok ? c->what : !c->echoed ? "payload differs from the event"
                                              : "the invocation was not cold");
        return -1;
    }
    return (c->t_end - t0) / 1000.0;
}

/* ------------------------------------------------------------------ */
/* Baseline: fork + exec of the same binary, no sandbox                */

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
        fprintf(stderr, "cold-start: baseline: bad frame: %s\n", why);
        return -1;
    }
    return 0;
}

static char **g_envp;

/* One bare start + invoke; returns ms, or -1. */
static double bare_once(const char *handler, const char *hdir, const char *event)
{
    struct sl_invoke_msg im = {
        .request_id = "00000000-0000-4000-8000-000000000000",
        .function_name = "echo", .function_version = "$LATEST", .memory_mb = 1769,
        .invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:echo",
        .event = event, .event_len = EVENT_SIZE,
    };
    char *argv[] = { (char *)handler, NULL }, *frame = NULL;
    int sv[2], outp[2], errp[2], st;
    struct sl_msg m;
    double t0, ms = -1;
    size_t flen;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe2(outp, O_CLOEXEC) ||
        pipe2(errp, O_CLOEXEC))
        return perror("cold-start: baseline"), -1;
    t0 = now_us();
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        /* the fds are all close-on-exec; dup2 clears that on the copies */
        if (dup2(sv[1], 3) < 0 || dup2(outp[1], 1) < 0 || dup2(errp[1], 2) < 0 ||
            chdir(hdir) != 0)
            _exit(127);
        execve(handler, argv, g_envp);
        _exit(127);
    }
    close(sv[1]);
    close(outp[1]);
    close(errp[1]);
    if (read_msg(sv[0], &m) != 0 || m.type != SL_MSG_READY) {
        fprintf(stderr, "cold-start: baseline: no `ready` from %s\n", handler);
        goto done;
    }
    sl_msg_destroy(&m);
    im.deadline_ms = wall_ms() + 10000;
    if (sl_frame_invoke(&im, &frame, &flen) != 0 || write_full(sv[0], frame, flen) != 0) {
        fprintf(stderr, "cold-start: baseline: cannot send `invoke`\n");
        goto done;
    }
    if (read_msg(sv[0], &m) != 0 || m.type != SL_MSG_RESULT) {
        fprintf(stderr, "cold-start: baseline: no `result` from %s\n", handler);
        goto done;
    }
    if (m.ok && m.payload.n == EVENT_SIZE && memcmp(m.payload.p, event, EVENT_SIZE) == 0)
        ms = (now_us() - t0) / 1000.0;
    else
        fprintf(stderr, "cold-start: baseline: wrong result\n");
    sl_msg_destroy(&m);
done:
    free(frame);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    close(sv[0]);
    close(outp[0]);
    close(errp[0]);
    return ms;
}

/* ------------------------------------------------------------------ */

int main(void)
{
    char dir[] = "/tmp/sluice-bench-cold-start-XXXXXX";
    char handler[PATH_MAX], hdir[PATH_MAX], logpath[PATH_MAX + 16], *yaml = NULL, *event;
    char *state = NULL, *rt;
    const struct sl_function_conf *fn;
    struct sl_config *conf = NULL;
    struct sl_sandbox *sb = NULL;
    struct sl_sandbox_opts so;
    struct event_base *base = NULL;
    struct sl_diags d;
    struct sl_err err;
    struct call c;
    double lat[N_MAX], blat[N_MAX], init[N_MAX], dur[N_MAX], tear[N_MAX];
    double t0, p50, p99, b50, b99, i50, d50, td50, mean = 0, slat[SPACED_N], s50, s99;
    int n = 0, nb = 0, ns = 0, logfd, code = 1;
    char *envp[] = {
        "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=:UTC",
        "SLUICE_RUNTIME_FD=3", "AWS_LAMBDA_FUNCTION_NAME=echo",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE=on-demand", "AWS_REGION=us-east-1", "HOME=/tmp", NULL,
    };

    g_envp = envp;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SLUICE_RUNTIME_DIR")) {
        rt = realpath("runtime", NULL);
        if (rt)
            setenv("SLUICE_RUNTIME_DIR", rt, 1);
        free(rt);
    }
    if (!realpath("build/handlers/echo", handler)) {
        fprintf(stderr, "cold-start: build/handlers/echo: %s (run `make` first)\n",
                strerror(errno));
        return 1;
    }
    snprintf(hdir, sizeof(hdir), "%s", handler);
    *strrchr(hdir, '/') = '\0';
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
    sl_diags_init(&d, "cold-start.yaml");
    if (sl_config_load_buffer("cold-start.yaml", dir, yaml, strlen(yaml), &conf, &d) != 0) {
        sl_diags_print(&d, stderr);
        sl_diags_destroy(&d);
        goto out;
    }
    sl_diags_destroy(&d);
    fn = sl_config_function(conf, "echo");

    /* the host preparation, once (what sl_functions_new does) */
    rt = sl_runtime_dir();
    state = NULL;
    if (asprintf(&state, "%s/sandbox", conf->server.data_dir) < 0)
        goto out;
    so.state_dir = state;
    so.runtime_dir = rt;
    so.relaxed_only = false;
    sl_err_clear(&err);
    if (sl_sandbox_new(&so, &sb, &err) != 0) {
        fprintf(stderr, "cold-start: sl_sandbox_new: %s\n", err.msg);
        free(rt);
        goto out;
    }
    free(rt);
    base = event_base_new();

    for (int i = 0; i < WARMUP; i++) {
        double td;
        if (cold_once(base, sb, fn, event, &c, &td) < 0)
            goto out;
    }
    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double ms = cold_once(base, sb, fn, event, &c, &tear[n]);
        if (ms < 0)
            goto out;
        init[n] = c.init_ms;
        dur[n] = c.duration_ms;
        lat[n++] = ms;
    }

    while (ns < SPACED_N) {
        double td, ms;
        usleep(SPACED_US);
        ms = cold_once(base, sb, fn, event, &c, &td);
        if (ms < 0)
            goto out;
        slat[ns++] = ms;
    }

    for (int i = 0; i < WARMUP; i++)
        if (bare_once(handler, hdir, event) < 0)
            goto out;
    t0 = now_us();
    while (nb < n && now_us() - t0 < MEASURE_US) {
        double ms = bare_once(handler, hdir, event);
        if (ms < 0)
            goto out;
        blat[nb++] = ms;
    }

    for (int i = 0; i < n; i++)
        mean += lat[i] / n;
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    qsort(blat, (size_t)nb, sizeof(double), cmp_double);
    qsort(init, (size_t)n, sizeof(double), cmp_double);
    qsort(dur, (size_t)n, sizeof(double), cmp_double);
    qsort(tear, (size_t)n, sizeof(double), cmp_double);
    qsort(slat, (size_t)ns, sizeof(double), cmp_double);
    s50 = pct(slat, (size_t)ns, 50);
    s99 = pct(slat, (size_t)ns, 99);
    p50 = pct(lat, (size_t)n, 50);
    p99 = pct(lat, (size_t)n, 99);
    b50 = pct(blat, (size_t)nb, 50);
    b99 = pct(blat, (size_t)nb, 99);
    i50 = pct(init, (size_t)n, 50);
    d50 = pct(dur, (size_t)n, 50);
    td50 = pct(tear, (size_t)n, 50);

    printf("cold-start: %d cold invokes (sandbox: cgroups %s), p50 %.2f ms, p99 %.2f ms, "
           "mean %.2f ms (init p50 %.2f ms, invoke p50 %.3f ms; pool teardown p50 %.2f ms); "
           "bare fork+exec %d runs, p50 %.2f ms, p99 %.2f ms\n", n, sl_sandbox_cgroups(sb), p50,
           p99, mean, i50, d50, td50, nb, b50, b99);
    printf("cold-start: on the side, %d cold invokes each after %.0f ms idle: p50 %.2f ms, "
           "p99 %.2f ms\n", ns, SPACED_US / 1000.0, s50, s99);
    printf("cold-start: target p50 <= %.0f ms: %s; target <= %.0fx bare (%.1fx): %s\n",
           TARGET_P50, p50 <= TARGET_P50 ? "met" : "MISSED", TARGET_RATIO, p50 / b50,
           p50 <= TARGET_RATIO * b50 ? "met" : "MISSED");
    printf("cold-start: p99 %.2f ms\n", p99);
    printf("BENCH name=cold-start value=%.2f unit=ms baseline=fork-exec baseline_value=%.2f "
           "ratio=%.2f\n", p50, b50, p50 / b50);
    code = 0;

out:
    sl_sandbox_free(sb);
    if (base)
        event_base_free(base);
    sl_config_free(conf);
    if (code == 0)
        rm_tree(dir);
    else
        fprintf(stderr, "cold-start: sluice's log is in %s\n", logpath);
    free(state);
    free(yaml);
    free(event);
    return code;
}
