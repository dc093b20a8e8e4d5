/* Extensions and Telemetry APIs end to end: `$BUILD/sluice run` as a child
 * process, a `runtime: lambda` function (tests/unit/fixtures/rapi/ext/fn.py,
 * a small Python runtime) with a layer holding an external extension
 * (fixtures/rapi/ext/layer/extensions/recorder) that registers for INVOKE
 * and SHUTDOWN, subscribes to telemetry and prints "EXT ..." for every
 * event and record it gets: sluice's log is where the test reads them.
 *
 * Needs root (sandboxes with a network namespace each), $BUILD (make) and
 * python3. Run from the repository root. SLUICE_TEST_LOG=1 copies sluice's
 * log to stderr when a test ends. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define INVOKE(fn) "/2015-03-31/functions/" fn "/invocations"

/* ------------------------------------------------------------------ */
/* Per-test state (each Criterion test runs in its own process)        */

static char root_dir[PATH_MAX];
static char dir[256];                /* /tmp/sluice-test-rapi-ext-<pid> */
static char log_path[300];
static pid_t server = -1;
static int port;

static const char *sluice_bin(void)
{
    static char exe[PATH_MAX + 64];
    const char *b = getenv("SLUICE_TEST_BIN");
    return b && *b ? b : th_build_path(exe, sizeof(exe), root_dir, "sluice");
}

static char *allocs[1024];
static int nallocs;

static char *keep(char *s)
{
    cr_assert_not_null(s);
    if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
        allocs[nallocs++] = s;
    return s;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return keep(s);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void put_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return fmt("(cannot read %s)", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = keep(calloc(1, (size_t)n + 1));
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

static const char *server_log(void)
{
    return log_path[0] ? slurp(log_path) : "";
}

static void rm_rf(const char *d)
{
    char cmd[400];

    if (strncmp(d, "/tmp/sluice-test-rapi-", 22) != 0)
        return; /* never anything else */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), p;

    cr_assert_geq(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    p = ntohs(sa.sin_port);
    close(fd);
    return p;
}

static void setup(void)
{
    cr_assert_not_null(getcwd(root_dir, sizeof(root_dir)));
    cr_assert_eq(access(sluice_bin(), X_OK), 0, "run from the repository root after make");
    setenv("SLUICE_RUNTIME_DIR", fmt("%s/runtime", root_dir), 1);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-rapi-ext-%d", (int)getpid());
    rm_rf(dir);
    cr_assert_eq(mkdir(dir, 0755), 0, "mkdir %s: %s", dir, strerror(errno));
    chmod(dir, 0755); /* handlers here are mounted for the sandbox user */
    port = free_port();
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
    }
    if (getenv("SLUICE_TEST_LOG") && log_path[0])
        fprintf(stderr, "---- sluice log ----\n%s\n", server_log());
    rm_rf(dir);
    while (nallocs > 0)
        free(allocs[--nallocs]);
}

/* ------------------------------------------------------------------ */
/* A small HTTP/1.1 client: one request per connection                 */

struct resp {
    int    status;          /* 0: no answer */
    char  *head;            /* status line and headers */
    char  *body;
    size_t blen;
};

static int connect_server(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { 30, 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static int send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read a whole response (the server closes: we send Connection: close). */
static void read_resp(int fd, struct resp *r, int timeout_ms)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1), *sep;
    double end = now_ms() + timeout_ms;

    memset(r, 0, sizeof(*r));
    cr_assert_not_null(buf);
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int left = (int)(end - now_ms());
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    keep(buf);
    sep = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || !sep)
        return;
    r->status = atoi(buf + 9);
    *sep = '\0';
    r->head = buf;
    r->body = sep + 4;
    r->blen = len - (size_t)(r->body - buf);
}

static struct resp http(const char *method, const char *path, const char *headers,
                        const char *body, size_t blen)
{
    struct resp r = { 0 };
    int fd = connect_server();
    char *req;

    if (fd < 0)
        return r;
    req = fmt("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
              "Content-Length: %zu\r\n%s\r\n", method, path, port, blen, headers ? headers : "");
    if (send_all(fd, req, strlen(req)) == 0 && (blen == 0 || send_all(fd, body, blen) == 0))
        read_resp(fd, &r, 30000);
    close(fd);
    return r;
}

static struct resp post(const char *path, const char *headers, const char *body)
{
    return http("POST", path, headers, body, strlen(body));
}

static struct resp get(const char *path)
{
    return http("GET", path, NULL, "", 0);
}

/* Value of a response header (case-insensitive name), or NULL. */
static const char *header(const struct resp *r, const char *name)
{
    size_t nl = strlen(name);

    for (const char *line = r->head ? strstr(r->head, "\r\n") : NULL; line;
         line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2, *e;

        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            for (l += nl + 1; *l == ' '; l++)
                ;
            e = strstr(l, "\r\n");
            return fmt("%.*s", (int)(e ? (size_t)(e - l) : strlen(l)), l);
        }
    }
    return NULL;
}

static const char *str_or(const char *s)
{
    return s ? s : "(none)";
}

/* ------------------------------------------------------------------ */
/* The server                                                          */

static const char *write_config(const char *name, const char *functions, const char *server_extra)
{
    const char *path = fmt("%s/%s", dir, name);

    put_file(path,
             fmt("%sserver:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data-%s\n%s",
                 functions, port, dir, name, server_extra ? server_extra : ""),
             0644);
    return path;
}

static pid_t spawn_sluice(const char *config, const char *logfile)
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(sluice_bin(), "sluice", "run", config, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Start `build/sluice run CONFIG` and wait until /healthz answers. */
static void start_server(const char *config)
{
    double end = now_ms() + 15000;
    int st;

    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    server = spawn_sluice(config, log_path);
    while (now_ms() < end) {
        struct resp r = get("/healthz");

        if (r.status == 200) {
            cr_assert_eq(r.blen, 3, "healthz body");
            cr_assert(memcmp(r.body, "ok\n", 3) == 0);
            return;
        }
        if (waitpid(server, &st, WNOHANG) == server) {
            server = -1;
            cr_assert_fail("sluice exited early (status %d); log:\n%s", st, server_log());
        }
        usleep(50000);
    }
    cr_assert_fail("/healthz did not answer within 15 s; log:\n%s", server_log());
}

/* SIGTERM, then exit code 0 within `ms`. */
static void stop_server(int ms)
{
    double end = now_ms() + ms;
    int st = 0;
    pid_t w = 0;

    cr_assert_gt(server, 0);
    cr_assert_eq(kill(server, SIGTERM), 0);
    while (now_ms() < end && (w = waitpid(server, &st, WNOHANG)) == 0)
        usleep(20000);
    cr_assert_eq(w, server, "sluice still running %d ms after SIGTERM; log:\n%s", ms,
                 server_log());
    server = -1;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after SIGTERM; log:\n%s",
              st, server_log());
}


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *fixture(const char *name)
{
    return fmt("%s/tests/unit/fixtures/rapi/ext/%s", root_dir, name);
}

/* The function: the Python runtime with the recorder extension's layer;
 * `mode`: the extension's EXT_MODE; `extra`: more YAML lines (indent 4). */
static void start_fn(const char *mode, const char *extra)
{
    const char *fn = fmt("functions:\n  fx:\n    runtime: lambda\n    handler: %s\n"
                         "    layers: [%s]\n    environment:\n      EXT_MODE: %s\n"
                         "      EXT_TAG: t%d\n%s",
                         fixture("fn.py"), fixture("layer"), mode, (int)getpid(),
                         extra ? extra : "");
    start_server(write_config("ext.yaml", fn, NULL));
}

/* Invoke fx synchronously; its request id (the runtime answers with it). */
static const char *invoke_fx(const char *event)
{
    struct resp r = post(INVOKE("fx"), NULL, event);
    json_t *j = r.body ? json_loadb(r.body, r.blen, 0, NULL) : NULL;
    const char *id;

    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.300s; log:\n%s", r.body, server_log());
    cr_assert_not_null(j, "%.300s", r.body);
    id = fmt("%s", str_or(json_string_value(json_object_get(j, "requestId"))));
    json_decref(j);
    return id;
}

/* The log line holding every one of the NULL-ended strings, or NULL. */
static const char *log_line_with(const char *log, ...)
{
    for (const char *l = log; l && *l;) {
        const char *eol = strchr(l, '\n');
        char *line = strndup(l, eol ? (size_t)(eol - l) : strlen(l));
        bool all = true;
        va_list ap;

        cr_assert_not_null(line);
        va_start(ap, log);
        for (const char *s = va_arg(ap, const char *); s && all; s = va_arg(ap, const char *))
            all = strstr(line, s) != NULL;
        va_end(ap);
        if (all)
            return keep(line);
        free(line);
        l = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static size_t count_lines_with(const char *log, const char *s)
{
    size_t n = 0;

    for (const char *p = log; (p = strstr(p, s)); p += strlen(s))
        n++;
    return n;
}

/* Wait up to `ms` for a log line with `a` and `b` (b may be NULL). */
static const char *wait_line(int ms, const char *a, const char *b)
{
    double end = now_ms() + ms;

    for (;;) {
        const char *l;
        int before = nallocs;

        l = log_line_with(server_log(), a, b, (const char *)NULL);
        if (l || now_ms() > end)
            return l;
        /* nothing found: what this round kept (the log's copy) goes */
        while (nallocs > before)
            free(allocs[--nallocs]);
        usleep(50000);
    }
}

/* The host processes whose environment holds EXT_TAG=t<our pid> and
 * EXT_MODE=`mode`: the extensions (and runtimes) this test started. */
static int count_tagged(void)
{
    char want[64];
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    snprintf(want, sizeof(want), "EXT_TAG=t%d", (int)getpid());
    cr_assert_not_null(d);
    while ((de = readdir(d))) {
        char path[300], buf[16384];
        ssize_t len;
        int fd;

        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/environ", de->d_name);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        for (char *p = buf; p < buf + len; p += strlen(p) + 1)
            if (strcmp(p, want) == 0) {
                n++;
                break;
            }
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

Test(rapi_ext, invoke_and_shutdown_events_and_telemetry_reach_the_extension, .init = setup,
     .fini = teardown, .timeout = 90)
{
    const char *ids[3], *l, *log;

    start_fn("normal", "    idle_timeout_s: 1\n    memory_mb: 256\n");
    for (int i = 0; i < 3; i++)
        ids[i] = invoke_fx(fmt("{\"n\":%d}", i));
    /* idle for a second: spindown, SHUTDOWN to the extension, which says bye */
    cr_assert_not_null(wait_line(20000, "EXT bye", NULL), "no SHUTDOWN handled; log:\n%s",
                       server_log());
    log = server_log();
    l = log_line_with(log, "EXT registered 200", "\"functionName\":\"fx\"",
                      "\"functionVersion\":\"$LATEST\"", "\"handler\":\"fn.py\"", (char *)NULL);
    cr_expect_not_null(l, "register's answer; log:\n%s", log);
    cr_expect_not_null(log_line_with(log, "EXT subscribed 200", (char *)NULL), "%s", log);
    for (int i = 0; i < 3; i++) {
        cr_expect_not_null(log_line_with(log, "EXT event ", "\"eventType\": \"INVOKE\"",
                                         fmt("\"requestId\": \"%s\"", ids[i]), "\"deadlineMs\": ",
                                         "\"invokedFunctionArn\": \"arn:aws:lambda:",
                                         "\"tracing\": {", (char *)NULL),
                           "INVOKE for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel function",
                                         fmt("\"FN handling %s\"", ids[i]), (char *)NULL),
                           "the function's line for %s by telemetry; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.start",
                                         fmt("\"requestId\": \"%s\"", ids[i]), (char *)NULL),
                           "platform.start for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.runtimeDone",
                                         fmt("\"requestId\": \"%s\"", ids[i]),
                                         "\"status\": \"success\"", (char *)NULL),
                           "platform.runtimeDone for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.report",
                                         fmt("\"requestId\": \"%s\"", ids[i]),
                                         "\"billedDurationMs\": ", "\"durationMs\": ",
                                         "\"maxMemoryUsedMB\": ", "\"memorySizeMB\": 256",
                                         "\"status\": \"success\"", (char *)NULL),
                           "platform.report for %s; log:\n%s", ids[i], log);
    }
    cr_expect_eq(count_lines_with(log, "\"eventType\": \"INVOKE\""), 3, "one INVOKE each:\n%s",
                 log);
    /* what happened before it subscribed reaches it too */
    cr_expect_not_null(log_line_with(log, "EXT tel platform.initStart", "\"phase\": \"init\"",
                                     (char *)NULL), "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT tel platform.initRuntimeDone", (char *)NULL),
                       "%s", log);
    l = log_line_with(log, "EXT event ", "\"eventType\": \"SHUTDOWN\"", (char *)NULL);
    cr_assert_not_null(l, "%s", log);
    cr_expect(strstr(l, "\"shutdownReason\": \"spindown\"") && strstr(l, "\"deadlineMs\": "),
              "%s", l);
    /* the env is gone with its processes; the next invoke starts a new one */
    ids[0] = invoke_fx("{}");
    cr_expect_not_null(wait_line(10000, "\"eventType\": \"INVOKE\"",
                                 fmt("\"requestId\": \"%s\"", ids[0])), "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, timeout_resets_the_env_with_shutdown_timeout, .init = setup, .fini = teardown,
     .timeout = 90)
{
    struct resp r;
    const char *l;

    start_fn("normal", "    timeout_s: 1\n");
    invoke_fx("{}");
    r = post(INVOKE("fx"), NULL, "{\"sleep\":30}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    cr_expect(r.body && strstr(r.body, "Task timed out after 1.00 seconds"), "%.300s", r.body);
    l = wait_line(10000, "\"eventType\": \"SHUTDOWN\"", "\"shutdownReason\": \"timeout\"");
    cr_expect_not_null(l, "SHUTDOWN (timeout); log:\n%s", server_log());
    /* the next invoke gets a fresh env, its extension registered anew */
    invoke_fx("{}");
    cr_expect_eq(count_lines_with(server_log(), "EXT registered 200"), 2, "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, extension_ignoring_shutdown_is_killed_after_the_budget, .init = setup,
     .fini = teardown, .timeout = 90)
{
    double t0;

    start_fn("stubborn", "    idle_timeout_s: 1\n");
    invoke_fx("{}");
    cr_expect_geq(count_tagged(), 2, "the runtime and the extension run");
    cr_assert_not_null(wait_line(20000, "\"eventType\": \"SHUTDOWN\"", NULL), "%s", server_log());
    t0 = now_ms();
    /* Lambda's budget with external extensions is 2 s; allow for a slow host */
    while (count_tagged() > 0 && now_ms() - t0 < 8000)
        usleep(50000);
    cr_expect_eq(count_tagged(), 0, "the stubborn extension still runs 8 s after SHUTDOWN");
    cr_expect_null(log_line_with(server_log(), "EXT bye", (char *)NULL));
    stop_server(10000);
}

Test(rapi_ext, slow_listener_costs_dropped_records_told_by_logs_dropped, .init = setup,
     .fini = teardown, .timeout = 90)
{
    const char *l;

    start_fn("slow", "    output_kb_per_s: 100000\n");
    /* ~2.2 MB of lines: far more than the 256 KiB queue while a batch waits */
    invoke_fx("{\"spam\":10000}");
    /* invocations never wait for telemetry */
    invoke_fx("{}");
    l = wait_line(20000, "EXT tel platform.logsDropped", "\"droppedRecords\": ");
    cr_expect_not_null(l, "no platform.logsDropped; log:\n%.3000s", server_log());
    cr_expect(l && strstr(l, "\"droppedBytes\": ") && strstr(l, "\"reason\": "), "%s", l);
    cr_expect_not_null(log_line_with(server_log(), "telemetry: events for a subscriber on port "
                                     "4243 dropped", (char *)NULL), "sluice logs the loss");
    stop_server(10000);
}

/* ------------------------------------------------------------------ */
/* Failing and hostile extensions                                      */

Test(rapi_ext, extension_that_never_calls_next_fails_the_init, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r = { 0 };
    json_t *j;

    start_fn("nonext", "    init_timeout_s: 2\n");
    r = post(INVOKE("fx"), NULL, "{}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%.300s", r.body);
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_assert_not_null(j, "%.300s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))),
                     "Sandbox.Timedout", "%.300s", r.body);
    cr_expect(strstr(str_or(json_string_value(json_object_get(j, "errorMessage"))), "recorder"),
              "the error names the extension: %.300s", r.body);
    json_decref(j);
    /* the runtime itself was ready: nothing ran the invocation */
    cr_expect_null(log_line_with(server_log(), "FN handling", (char *)NULL), "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, extension_crash_fails_the_init_and_resets, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r = { 0 };
    json_t *j;

    start_fn("initcrash", "    init_timeout_s: 10\n");
    r = post(INVOKE("fx"), NULL, "{}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%.300s", r.body);
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_assert_not_null(j, "%.300s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))),
                     "Extension.Crash", "%.300s; log:\n%s", r.body, server_log());
    cr_expect(strstr(str_or(json_string_value(json_object_get(j, "errorMessage"))),
                     "extension recorder exited"), "%.300s", r.body);
    json_decref(j);
    cr_expect_null(log_line_with(server_log(), "FN handling", (char *)NULL), "%s", server_log());
    cr_expect(count_tagged() == 0 || (usleep(3000000), count_tagged() == 0),
              "the env is gone with its runtime");
    stop_server(10000);
}

Test(rapi_ext, hostile_requests_get_lambdas_errors, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *log, *id;

    start_fn("probe", NULL);
    id = invoke_fx("{}");
    log = server_log();
    cr_expect_not_null(log_line_with(log, "EXT probe unknown-id 403",
                                     "Extension.UnknownExtensionIdentifier", (char *)NULL),
                       "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe no-id 403",
                                     "Extension.MissingExtensionIdentifier", (char *)NULL),
                       "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe bad-body 403", "InvalidRequestFormat",
                                     (char *)NULL), "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe bad-event 403", "Extension.InvalidEventType",
                                     (char *)NULL), "%s", log);
    cr_expect_eq(count_lines_with(log, "EXT probe uri "), 5, "%s", log);
    cr_expect_eq(count_lines_with(log, "EXT probe buffering "), 4, "%s", log);
    for (const char *p = log; (p = strstr(p, "EXT probe uri ")); p++) {
        const char *eol = strchr(p, '\n');
        const char *line = fmt("%.*s", (int)(eol ? eol - p : (long)strlen(p)), p);
        cr_expect(strstr(line, " 400 ") && strstr(line, "ValidationError"), "%s", line);
    }
    for (const char *p = log; (p = strstr(p, "EXT probe buffering ")); p++) {
        const char *eol = strchr(p, '\n');
        const char *line = fmt("%.*s", (int)(eol ? eol - p : (long)strlen(p)), p);
        cr_expect(strstr(line, " 400 ") && strstr(line, "ValidationError"), "%s", line);
    }
    /* and after all that it works */
    cr_expect_not_null(wait_line(5000, "\"eventType\": \"INVOKE\"",
                                 fmt("\"requestId\": \"%s\"", id)), "%s", server_log());
    stop_server(10000);
}
