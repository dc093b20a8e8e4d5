/* bench runtime-api: a stock aws-lambda-go function through sluice's
 * Runtime API (runtime lambda) against AWS's Runtime Interface Emulator
 * running the same binary, in one run.
 *
 * The function is tests/handlers/rapi_go (lambda.Start, echoes the event's
 * "value" with its context), built by tests/deps into
 * tests/.layers/go-rapi/bootstrap; the emulator is tests/.layers/rie/
 * aws-lambda-rie (also tests/deps). Both serve it over HTTP:
 *
 *   sluice  `build/sluice run`, one function `echo` (runtime lambda,
 *           memory_mb 1769: a full CPU of quota), POST
 *           /2015-03-31/functions/echo/invocations
 *   RIE     `aws-lambda-rie bootstrap` with its invoke endpoint and its
 *           Runtime API on free loopback ports, POST
 *           /2015-03-31/functions/function/invocations
 *
 * Both log at their default level to a file. One keep-alive connection to
 * each (TCP_NODELAY); a 1 KB event ({"value":"xxx..."}). After a warm-up,
 * sequential invocations alternate between the two (ABBA order, so neither
 * always goes first) until N_MAX each or MEASURE_US: each is timed from the
 * first byte of the request written to the last byte of the answer read,
 * checked (200, no X-Amz-Function-Error, the value echoed). Invocations/s
 * is taken in blocks of BLOCK consecutive pairs (BLOCK over the summed time
 * of that side's invocations in the block) and is the median over blocks,
 * so that a burst of other load on the machine spoils a few blocks and not
 * the figure (the whole-run rate is printed too). value is sluice's
 * invocations/s, baseline the RIE's; target ratio >= 1.
 *
 * Extra lines, each measured in this run, through the library as the
 * server does (sl_fnpool_invoke, then the loop until the callback):
 *   - warm: the Go function under runtime lambda against the C echo handler
 *     on the native protocol (build/handlers/echo), alternating;
 *   - cold: p50/p99 over COLD_N cold starts of the Go function (a pool of
 *     its own with no environment each time, as bench cold-start does):
 *     from the call to the callback, i.e. sandbox spawn, the Go runtime's
 *     start up to its first GET /next, the invocation; target p50 <= 10 ms;
 *   - for the breakdown, interleaved with those: cold starts of a C custom
 *     runtime (build/test-handlers/rapi_echo) under runtime lambda, of the
 *     C echo on the native protocol, and of the same Go bootstrap under
 *     the RIE: a new aws-lambda-rie process each time (its HTTP server up
 *     first, untimed), its first invoke timed (it starts the bootstrap
 *     then).
 *
 * Everything is in /tmp/sluice-bench-runtime-api-XXXXXX, removed on
 * success, kept and named on failure. */
#include "httpbench.h"

#include <netinet/tcp.h>

#define NAME         "runtime-api"
#define EVENT_SIZE   1024
#define WARMUP       300
#define N_MAX        20000          /* timed invocations of each, at most */
#define MEASURE_US   10e6           /* ... and at most this long in all */
#define LIB_N_MAX    20000
#define LIB_MEASURE  5e6
#define COLD_WARMUP  3
#define COLD_N       40
#define BLOCK        100            /* pairs per block for invocations/s */
#define TARGET_RATIO 1.0
#define TARGET_COLD  10.0           /* ms */

static const char go_layer[] = "tests/.layers/go-rapi/bootstrap";
static const char rie_bin[] = "tests/.layers/rie/aws-lambda-rie";

/* ------------------------------------------------------------------ */
/* A keep-alive HTTP/1.1 client, blocking, one request at a time       */

struct kc {
    int    port, fd;
    char  *buf;                    /* the last answer: head, then body */
    size_t len, cap;
    int    status;
    const char *body;              /* into buf */
    size_t body_len;
    bool   fn_error;               /* X-Amz-Function-Error present */
};

static int kc_connect(struct kc *k)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)k->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { 30, 0 };
    int one = 1;

    if (k->fd >= 0)
        close(k->fd);
    k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (k->fd < 0)
        return -1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(k->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(k->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(k->fd);
        k->fd = -1;
        return -1;
    }
    return 0;
}

/* POST body to path; fills status, body, fn_error. Returns the
 * microseconds from the request's write to the answer's last byte, or -1
 * (connection failed or closed, or a malformed answer). */
static double kc_post(struct kc *k, const char *path, const char *body, size_t n)
{
    char head[512];
    size_t hl, need = 0;
    double t0;
    char *end;

    if (k->fd < 0 && kc_connect(k) != 0)
        return -1;
    hl = (size_t)snprintf(head, sizeof(head),
                          "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                          path, k->port, n);
    if (hl + n > k->cap) {
        k->cap = (hl + n) * 2 + 65536;
        k->buf = realloc(k->buf, k->cap + 1);
    }
    memcpy(k->buf, head, hl);
    memcpy(k->buf + hl, body, n);
    t0 = now_us();
    if (write_full(k->fd, k->buf, hl + n) != 0)
        return -1;
    k->len = 0;
    end = NULL;
    for (;;) {
        ssize_t r;
        if (k->cap - k->len < 16384) {
            k->cap *= 2;
            k->buf = realloc(k->buf, k->cap + 1);
        }
        r = read(k->fd, k->buf + k->len, k->cap - k->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        k->len += (size_t)r;
        k->buf[k->len] = '\0';
        if (!end && (end = strstr(k->buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(k->buf, "\r\ncontent-length:");
            if (!cl || cl > end || sscanf(k->buf, "HTTP/1.%*d %d", &k->status) != 1)
                return -1; /* both servers answer with a length here */
            need = (size_t)(end + 4 - k->buf) + strtoul(cl + 17, NULL, 10);
            k->fn_error = strcasestr(k->buf, "\r\nx-amz-function-error:") != NULL &&
                          strcasestr(k->buf, "\r\nx-amz-function-error:") < end;
        }
        if (end && k->len >= need)
            break;
    }
    k->body = end + 4;
    k->body_len = need - (size_t)(end + 4 - k->buf);
    return now_us() - t0;
}

/* One invocation of the Go function; microseconds or -1 (message). */
static double go_invoke(struct kc *k, const char *who, const char *path, const char *event,
                        const char *value)
{
    double us = kc_post(k, path, event, EVENT_SIZE);

    if (us < 0) {
        fprintf(stderr, NAME ": %s: no answer to POST %s\n", who, path);
        return -1;
    }
    if (k->status != 200 || k->fn_error || !memmem(k->body, k->body_len, value, strlen(value))) {
        fprintf(stderr, NAME ": %s: answer %d%s: %.300s\n", who, k->status,
                k->fn_error ? " (function error)" : "", k->body);
        return -1;
    }
    return us;
}

/* ------------------------------------------------------------------ */
/* The emulator as a child                                             */

/* Starts the RIE serving `bootstrap` (its directory as cwd) with its
 * invoke endpoint on *port and its Runtime API on another free port,
 * output appended to `log`; waits (at most 10 s) until the invoke port
 * accepts. The pid, or -1 (message printed). */
static pid_t rie_start(const char *rie, const char *bootstrap, const char *log, int *port)
{
    char addr[64], api[64], bdir[PATH_MAX];
    pid_t pid;
    double end;

    *port = bench_free_port();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", *port);
    snprintf(api, sizeof(api), "127.0.0.1:%d", bench_free_port());
    snprintf(bdir, sizeof(bdir), "%s", bootstrap);
    *strrchr(bdir, '/') = '\0';
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        char *argv[] = { (char *)rie, "--runtime-interface-emulator-address", addr,
                         "--runtime-api-address", api, (char *)bootstrap, NULL };
        char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=:UTC",
                         "HOME=/tmp", "AWS_LAMBDA_FUNCTION_NAME=echo",
                         "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769",
                         "AWS_LAMBDA_FUNCTION_TIMEOUT=10", "AWS_REGION=us-east-1", NULL };
        hb_child_setup(log, SIGKILL);
        setpgid(0, 0); /* its bootstrap too: rie_stop kills the group */
        if (chdir(bdir) != 0)
            _exit(127);
        execve(rie, argv, envp);
        _exit(127);
    }
    for (end = now_us() + 10e6; now_us() < end; usleep(2000)) {
        struct kc k = { .port = *port, .fd = -1 };
        int st;
        if (kc_connect(&k) == 0) {
            close(k.fd);
            return pid;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, NAME ": the RIE exited at start\n");
            hb_tail(log, 20);
            return -1;
        }
    }
    fprintf(stderr, NAME ": the RIE did not listen within 10 s\n");
    hb_tail(log, 20);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void rie_stop(pid_t pid)
{
    if (pid > 0) {
        kill(-pid, SIGKILL); /* the emulator and its bootstrap */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

/* ------------------------------------------------------------------ */
/* Through the library: warm against native, cold starts               */

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    bench_call_fill(arg, r);
}

static double lib_invoke(struct event_base *base, struct sl_fnpool *pool, const char *event,
                         struct bench_call *c)
{
    struct sl_invoke_req req = { .event = event, .event_len = EVENT_SIZE };
    double us = bench_invoke(NAME, base, pool, &req, on_result, c, 30e6);

    if (us >= 0 && !c->ok) {
        fprintf(stderr, NAME ": invocation failed: %s\n", c->what);
        return -1;
    }
    return us;
}

static int new_pool(struct bench_host *h, const char *fn, struct sl_fnpool **pool)
{
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = 64 };
    struct sl_err err;

    sl_err_clear(&err);
    if (sl_fnpool_new(h->base, h->sb, sl_config_function(h->conf, fn), &po, pool, &err) != 0) {
        fprintf(stderr, NAME ": sl_fnpool_new %s: %s\n", fn, err.msg);
        return -1;
    }
    return 0;
}

/* The library part; 0 or -1. *cold_p50 is the Go function's cold p50. */
static int lib_part(const char *gobin, const char *rie, const char *rlog, const char *event,
                    const char *value, double *cold_p50)
{
    struct bench_host h;
    struct sl_fnpool *pn = NULL, *pg = NULL;
    struct bench_call c;
    static const char *const cold_fns[3] = { "go", "crapi", "native" };
    struct bench_stats sn, sg, sc[4], si[3];
    struct kc kr = { .fd = -1 };
    double *nat = calloc(LIB_N_MAX, sizeof(double)), *gol = calloc(LIB_N_MAX, sizeof(double));
    double cold[4][COLD_N], cinit[3][COLD_N], t0;
    char crapi[PATH_MAX];
    int n = 0, code = 1, warm_cold = 0;

    if (bench_host_open(&h, NAME, "build/handlers/echo", " (run `make` first)") != 0)
        return -1;
    if (!realpath("build/test-handlers/rapi_echo", crapi)) {
        fprintf(stderr, NAME ": build/test-handlers/rapi_echo: %s\n", strerror(errno));
        goto out;
    }
    if (asprintf(&h.yaml,
                 "functions:\n"
                 "  native:\n    handler: %s\n    memory_mb: 1769\n    timeout_s: 10\n"
                 "  go:\n    runtime: lambda\n    handler: %s\n    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "  crapi:\n    runtime: lambda\n    handler: %s\n    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "server:\n  data_dir: %s/data\n", h.handler, gobin, crapi, h.dir) < 0) {
        h.yaml = NULL;
        goto out;
    }
    if (bench_host_config(&h) != 0)
        goto out;
    h.base = event_base_new();
    if (bench_host_sandbox(&h, false) != 0)
        goto out;

    /* warm, alternating */
    if (new_pool(&h, "native", &pn) != 0 || new_pool(&h, "go", &pg) != 0)
        goto out;
    for (int i = 0; i < WARMUP; i++)
        if (lib_invoke(h.base, pn, event, &c) < 0 || lib_invoke(h.base, pg, event, &c) < 0)
            goto out;
    t0 = now_us();
    while (n < LIB_N_MAX && now_us() - t0 < LIB_MEASURE) {
        double a = lib_invoke(h.base, pn, event, &c), b;
        warm_cold += c.cold;
        b = lib_invoke(h.base, pg, event, &c);
        warm_cold += c.cold;
        if (a < 0 || b < 0)
            goto out;
        nat[n] = a;
        gol[n++] = b;
    }
    if (warm_cold || sl_fnpool_envs(pn) != 1 || sl_fnpool_envs(pg) != 1) {
        fprintf(stderr, NAME ": %d timed warm invocations were cold\n", warm_cold);
        goto out;
    }
    sl_fnpool_free(pn);
    sl_fnpool_free(pg);
    pn = pg = NULL;
    sn = bench_stats(nat, n);
    sg = bench_stats(gol, n);
    printf(NAME ": warm, in-process, %d invokes each of a %d-byte event: runtime lambda "
           "(aws-lambda-go) p50 %.1f us, p99 %.1f us; native protocol (C echo) p50 %.1f us, "
           "p99 %.1f us; ratio %.2f\n", n, EVENT_SIZE, sg.p50, sg.p99, sn.p50, sn.p99,
           sg.p50 / sn.p50);

    /* cold starts, a new pool each time, alternating: the Go function,
     * and for the breakdown the C custom runtime under runtime lambda and
     * the C echo on the native protocol */
    for (int i = 0; i < COLD_WARMUP + COLD_N; i++) {
        for (int f = 0; f < 4; f++) {
            struct sl_fnpool *p;
            double us;
            if (f == 3) {
                /* the emulator: a new process, its HTTP server up (untimed),
                 * then its first invoke, which starts the bootstrap */
                pid_t rp = rie_start(rie, gobin, rlog, &kr.port);
                if (rp < 0)
                    goto out;
                us = go_invoke(&kr, "RIE", "/2015-03-31/functions/function/invocations",
                               event, value);
                close(kr.fd);
                kr.fd = -1;
                rie_stop(rp);
                if (us < 0)
                    goto out;
                if (i >= COLD_WARMUP)
                    cold[f][i - COLD_WARMUP] = us / 1000.0;
                continue;
            }
            if (new_pool(&h, cold_fns[f], &p) != 0)
                goto out;
            us = lib_invoke(h.base, p, event, &c);
            sl_fnpool_free(p);
            if (us < 0)
                goto out;
            if (!c.cold) {
                fprintf(stderr, NAME ": a new pool's first invocation was not cold\n");
                goto out;
            }
            if (i >= COLD_WARMUP) {
                cold[f][i - COLD_WARMUP] = us / 1000.0;
                cinit[f][i - COLD_WARMUP] = c.init_ms;
            }
        }
    }
    for (int f = 0; f < 3; f++)
        si[f] = bench_stats(cinit[f], COLD_N);
    for (int f = 0; f < 4; f++)
        sc[f] = bench_stats(cold[f], COLD_N);
    *cold_p50 = sc[0].p50;
    printf(NAME ": cold start of the aws-lambda-go bootstrap (runtime lambda, %d starts, "
           "cgroups %s): p50 %.2f ms, p99 %.2f ms (init, spawn to its first GET /next: p50 "
           "%.2f ms); target p50 <= %.0f ms: %s\n", COLD_N, sl_sandbox_cgroups(h.sb),
           sc[0].p50, sc[0].p99, si[0].p50, TARGET_COLD,
           sc[0].p50 <= TARGET_COLD ? "met" : "MISSED");
    printf(NAME ": cold start breakdown, same run: C custom runtime (runtime lambda, "
           "rapi_echo) p50 %.2f ms (init %.2f ms); C echo on the native protocol p50 %.2f ms "
           "(init %.2f ms)\n", sc[1].p50, si[1].p50, sc[2].p50, si[2].p50);
    printf(NAME ": cold start of the same bootstrap under the RIE, interleaved with those (a "
           "new aws-lambda-rie process each time, its first invoke; no sandbox): p50 %.2f ms, "
           "p99 %.2f ms\n", sc[3].p50, sc[3].p99);
    code = 0;
out:
    sl_fnpool_free(pn);
    sl_fnpool_free(pg);
    free(kr.buf);
    free(nat);
    free(gol);
    return bench_host_close(&h, code) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */

int main(void)
{
    struct hb_sluice s = { 0 };
    struct kc ks = { .fd = -1 }, kr = { .fd = -1 };
    struct bench_stats ss, sr;
    char dir[PATH_MAX], gobin[PATH_MAX], rie[PATH_MAX], rlog[PATH_MAX + 16], spath[128];
    const char *rpath = "/2015-03-31/functions/function/invocations";
    char *yaml = NULL, *event, value[EVENT_SIZE];
    double *sl = calloc(N_MAX, sizeof(double)), *rl = calloc(N_MAX, sizeof(double));
    double sum_s = 0, sum_r = 0, t0, ips_s, ips_r, cold_p50 = 0;
    pid_t rpid = -1;
    double *bs = NULL, *br = NULL;
    int code = 1, n = 0, nb;
    long cold_inits;
    off_t off;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (hb_make(NAME) != 0 ||
        system("make -s --no-print-directory build/test-handlers/rapi_echo >&2") != 0)
        return 1;
    if (!realpath(go_layer, gobin) || !realpath(rie_bin, rie)) {
        fprintf(stderr, NAME ": %s or %s missing (run tests/deps)\n", go_layer, rie_bin);
        return 1;
    }
    /* {"value":"xxx...x"}: 1024 bytes */
    event = malloc(EVENT_SIZE + 1);
    memset(value, 'x', EVENT_SIZE - 12);
    value[EVENT_SIZE - 12] = '\0';
    memcpy(event, "{\"value\":\"", 10);
    memcpy(event + 10, value, EVENT_SIZE - 12);
    memcpy(event + EVENT_SIZE - 2, "\"}", 3);

    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-" NAME "-XXXXXX");
    if (!mkdtemp(dir))
        return perror("mkdtemp"), 1;
    s.port = bench_free_port();
    if (asprintf(&yaml,
                 "functions:\n"
                 "  echo:\n    runtime: lambda\n    handler: %s\n    memory_mb: 1769\n"
                 "    timeout_s: 10\n"
                 "server:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data\n"
                 "  shutdown_grace_s: 10\n", gobin, s.port, dir) < 0) {
        yaml = NULL;
        goto out;
    }
    if (hb_sluice_start(&s, NAME, dir, yaml, 15) != 0)
        goto out;
    snprintf(rlog, sizeof(rlog), "%s/rie.log", dir);
    if ((rpid = rie_start(rie, gobin, rlog, &kr.port)) < 0)
        goto out;
    ks.port = s.port;
    snprintf(spath, sizeof(spath), "/2015-03-31/functions/echo/invocations");

    for (int i = 0; i < WARMUP; i++)
        if (go_invoke(&ks, "sluice", spath, event, value) < 0 ||
            go_invoke(&kr, "RIE", rpath, event, value) < 0)
            goto out;
    off = hb_file_size(s.log);
    t0 = now_us();
    while (n < N_MAX && now_us() - t0 < MEASURE_US) {
        double a, b;
        if (n % 2 == 0) {
            a = go_invoke(&ks, "sluice", spath, event, value);
            b = go_invoke(&kr, "RIE", rpath, event, value);
        } else {
            b = go_invoke(&kr, "RIE", rpath, event, value);
            a = go_invoke(&ks, "sluice", spath, event, value);
        }
        if (a < 0 || b < 0)
            goto out;
        sl[n] = a;
        rl[n++] = b;
        sum_s += a;
        sum_r += b;
    }
    cold_inits = hb_count_in_file(s.log, off, "Init Duration");
    /* invocations/s in blocks of BLOCK consecutive pairs, the median over
     * blocks: both sides of a block share its time on the machine, and a
     * burst of other load spoils a few blocks, not the figure */
    nb = n / BLOCK;
    if (nb < 5) {
        fprintf(stderr, NAME ": only %d invokes each in the time given\n", n);
        goto out;
    }
    bs = calloc((size_t)nb, sizeof(double));
    br = calloc((size_t)nb, sizeof(double));
    for (int b = 0; b < nb; b++) {
        double ts = 0, tr = 0;
        for (int i = b * BLOCK; i < (b + 1) * BLOCK; i++)
            ts += sl[i], tr += rl[i];
        bs[b] = BLOCK / (ts / 1e6);
        br[b] = BLOCK / (tr / 1e6);
    }
    sort_doubles(bs, nb);
    sort_doubles(br, nb);
    ips_s = pct(bs, nb, 50);
    ips_r = pct(br, nb, 50);
    ss = bench_stats(sl, n);
    sr = bench_stats(rl, n);
    rie_stop(rpid);
    rpid = -1;
    if (hb_sluice_stop(&s, 15) != 0)
        fprintf(stderr, NAME ": sluice did not stop cleanly\n");
    printf(NAME ": %d warm sequential invokes each over HTTP, keep-alive, %d-byte event, "
           "aws-lambda-go bootstrap: sluice (runtime lambda) %.0f inv/s, p50 %.1f us, p99 %.1f "
           "us; RIE %.0f inv/s, p50 %.1f us, p99 %.1f us (inv/s: median over %d blocks of %d; "
           "over the whole run %.0f and %.0f; %ld cold starts in sluice during the run)\n", n,
           EVENT_SIZE, ips_s, ss.p50, ss.p99, ips_r, sr.p50, sr.p99, nb, BLOCK,
           n / (sum_s / 1e6), n / (sum_r / 1e6), cold_inits);

    if (lib_part(gobin, rie, rlog, event, value, &cold_p50) != 0)
        goto out;
    printf(NAME ": target sluice/RIE invocations/s >= %.1f: %s\n", TARGET_RATIO,
           ips_s / ips_r >= TARGET_RATIO ? "met" : "MISSED");
    bench_report(&(struct bench_result){ .name = NAME, .value = ips_s, .unit = "inv/s",
                                         .baseline = "aws-lambda-rie", .baseline_value = ips_r,
                                         .digits = { 0, 0, 2 } });
    code = 0;
out:
    rie_stop(rpid);
    if (s.pid > 0)
        hb_sluice_stop(&s, 15);
    if (code != 0)
        fprintf(stderr, NAME ": logs are in %s\n", dir);
    else
        rm_tree(dir);
    if (ks.fd >= 0)
        close(ks.fd);
    if (kr.fd >= 0)
        close(kr.fd);
    free(ks.buf);
    free(kr.buf);
    free(sl);
    free(rl);
    free(bs);
    free(br);
    free(yaml);
    free(event);
    return code;
}
