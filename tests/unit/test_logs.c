/* Function logs end to end: `$BUILD/sluice run` as a child with runtime
 * python and native C handlers, as Lambda's LoggingConfig shapes their
 * lines (log_format json, application_log_level, system_log_level), the
 * live tail (GET /logs/tail, server-sent events, read with curl and raw
 * sockets) and `sluice logs`.
 *
 * Needs root (sandboxes), $BUILD (make; "build" by default, with
 * build/test-handlers/logc), python3 and curl. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

static char dir[256], root[1024], log_path[400], cfg_path[400];
static pid_t server = -1, cli = -1;
static int port;
static char *allocs[512];
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
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return fmt("%s", "");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = keep(calloc(1, (size_t)n + 1));
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

/* `cmd` through the shell (deadline 60 s): stdout+stderr, exit code. */
static int sh(const char *cmd, char **out)
{
    FILE *p = popen(fmt("timeout 60 %s 2>&1", cmd), "r");
    size_t cap = 1 << 22, len = 0, r;
    char *buf = keep(malloc(cap));
    int st;

    cr_assert_not_null(p);
    while (len + 1 < cap && (r = fread(buf + len, 1, cap - 1 - len, p)) > 0)
        len += r;
    buf[len] = '\0';
    st = pclose(p);
    if (out)
        *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup(void)
{
    cr_assert_not_null(getcwd(root, sizeof(root)));
    snprintf(dir, sizeof(dir), "/tmp/sluice-logs-%d", (int)getpid());
    mkdir(dir, 0755);
    chmod(dir, 0755);
    signal(SIGPIPE, SIG_IGN);
    port = th_free_port();
}

static void stop_child(pid_t *p)
{
    if (*p > 0) {
        kill(*p, SIGKILL);
        waitpid(*p, NULL, 0);
        *p = -1;
    }
}

static void teardown(void)
{
    stop_child(&cli);
    stop_child(&server);
    if (!getenv("SLUICE_TEST_KEEP") && dir[0]) {
        char *cmd = fmt("rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            /* leftovers in /tmp are harmless */
        }
    }
    for (int i = 0; i < nallocs; i++)
        free(allocs[i]);
    nallocs = 0;
}

TestSuite(logs, .init = setup, .fini = teardown, .timeout = 120);

/* Five functions: runtime python and the C handler logc, in JSON (py,
 * pywarn, cjson) and text (pytext, ctext). */
static void start(const char *server_extra)
{
    char logc[PATH_MAX + 64];
    const char *code = fmt("%s/tests/unit/fixtures/logfn", root);
    double end = now_ms() + 20000;

    th_build_path(logc, sizeof(logc), root, "test-handlers/logc");
    snprintf(cfg_path, sizeof(cfg_path), "%s/logs.yaml", dir);
    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    {
        FILE *f = fopen(cfg_path, "w");

        cr_assert_not_null(f);
        fprintf(f,
                "functions:\n"
                "  py:\n    runtime: python\n    handler: app.handler\n    code: %s\n"
                "    log_format: json\n    output_kb_per_s: 16384\n    timeout_s: 30\n"
                "  pywarn:\n    runtime: python\n    handler: app.handler\n    code: %s\n"
                "    log_format: json\n    application_log_level: WARN\n"
                "    system_log_level: WARN\n"
                "  pytext:\n    runtime: python\n    handler: app.handler\n    code: %s\n"
                "  cjson:\n    handler: %s\n    log_format: json\n"
                "  ctext:\n    handler: %s\n"
                "server:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data\n%s",
                code, code, code, logc, logc, port, dir, server_extra ? server_extra : "");
        fclose(f);
    }
    server = th_run_sluice(root, cfg_path, log_path);
    while (now_ms() < end && !th_healthy(port))
        usleep(50000);
    cr_assert(th_healthy(port), "sluice did not start; log:\n%s", slurp(log_path));
}

/* Invoke `fn` with `payload`: the request id (X-Amzn-RequestId). */
static const char *invoke(const char *fn, const char *payload)
{
    char *out;
    const char *hdr = fmt("%s/h.%d", dir, nallocs), *p;
    int rc = sh(fmt("curl -s -D '%s' -o /dev/null -w '%%{http_code}' -X POST "
                    "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations -d '%s'",
                    hdr, port, fn, payload), &out);

    cr_assert_eq(rc, 0, "curl: %s", out);
    cr_assert_str_eq(out, "200", "invoke %s: %s; log:\n%s", fn, out, slurp(log_path));
    p = strcasestr(slurp(hdr), "X-Amzn-RequestId: ");
    cr_assert_not_null(p);
    return fmt("%.36s", p + 18);
}

/* The JSON objects sluice wrote as lines of its log. */
static size_t json_lines(json_t **v, size_t max)
{
    char *text = slurp(log_path), *save = NULL;
    size_t n = 0;

    for (char *l = strtok_r(text, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
        if (l[0] == '{') {
            json_t *j = json_loads(l, 0, NULL);

            cr_assert_not_null(j, "a JSON line that does not parse: %s", l);
            v[n++] = j;
        }
    return n;
}

static bool wait_log(const char *needle, int ms)
{
    double end = now_ms() + ms;

    while (now_ms() < end) {
        if (strstr(slurp(log_path), needle))
            return true;
        usleep(50000);
    }
    return false;
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The first line whose field `k` is `v` (and requestId `rid` if given). */
static json_t *find(json_t **v, size_t n, const char *k, const char *val, const char *rid)
{
    for (size_t i = 0; i < n; i++)
        if (str(v[i], k) && strcmp(str(v[i], k), val) == 0 &&
            (!rid || (str(v[i], "requestId") && strcmp(str(v[i], "requestId"), rid) == 0)))
            return v[i];
    return NULL;
}

/* A platform record of `type` for request `rid`. */
static json_t *find_platform(json_t **v, size_t n, const char *type, const char *rid)
{
    for (size_t i = 0; i < n; i++) {
        const json_t *rec = json_object_get(v[i], "record");

        if (str(v[i], "type") && strcmp(str(v[i], "type"), type) == 0 && rec &&
            str(rec, "requestId") && strcmp(str(rec, "requestId"), rid) == 0)
            return v[i];
    }
    return NULL;
}

static void free_lines(json_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(v[i]);
}

static bool iso_ms(const char *ts)
{
    regex_t re;
    bool ok;

    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                         REG_EXTENDED | REG_NOSUB), 0);
    ok = ts && regexec(&re, ts, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* ------------------------------------------------------------------ */
/* log_format json, levels                                             */

Test(logs, json_lines_carry_request_id_and_function)
{
    json_t *v[512], *o;
    const char *rid, *crid;
    size_t n;

    start(NULL);
    rid = invoke("py", "{\"tag\":\"J1\"}");
    crid = invoke("cjson", "{}");
    cr_assert(wait_log("\"cobject\"", 5000), "%s", slurp(log_path));
    n = json_lines(v, 512);

    /* print: wrapped, with the invocation's request id and the function */
    o = find(v, n, "message", "print J1", NULL);
    cr_assert_not_null(o, "no JSON line for print; log:\n%s", slurp(log_path));
    cr_expect_str_eq(str(o, "requestId"), rid);
    cr_expect_str_eq(str(o, "function"), "py");
    cr_expect_str_eq(str(o, "level"), "INFO");
    cr_expect(iso_ms(str(o, "timestamp")), "timestamp %s", str(o, "timestamp"));
    /* logging.info: the runtime's JSON record, with the function added */
    o = find(v, n, "message", "info J1", rid);
    cr_assert_not_null(o, "no JSON line for logging.info");
    cr_expect_str_eq(str(o, "level"), "INFO");
    cr_expect_str_eq(str(o, "logger"), "root");
    cr_expect_str_eq(str(o, "function"), "py");
    /* a line that is a JSON object is kept as that object, completed */
    o = find(v, n, "custom", "J1", rid);
    cr_assert_not_null(o, "the handler's JSON object was not kept; log:\n%s", slurp(log_path));
    cr_expect_eq(json_integer_value(json_object_get(o, "n")), 1);
    cr_expect_null(json_object_get(o, "message"));
    cr_expect_str_eq(str(o, "function"), "py");
    cr_expect(iso_ms(str(o, "timestamp")));
    /* the C handler's stdout */
    o = find(v, n, "message", fmt("c plain line %s", crid), crid);
    cr_assert_not_null(o, "no JSON line for the C handler's printf");
    cr_expect_str_eq(str(o, "function"), "cjson");
    o = find(v, n, "msg", "c warn object", crid);
    cr_assert_not_null(o);
    cr_expect_str_eq(str(o, "level"), "WARN"); /* its own level kept */
    /* DEBUG is below the default INFO: dropped, as Lambda drops it */
    cr_expect_null(find(v, n, "msg", "c debug object", NULL), "a DEBUG line got through");
    /* sluice's own lines are platform records */
    o = find_platform(v, n, "platform.report", rid);
    cr_assert_not_null(o, "no platform.report; log:\n%s", slurp(log_path));
    cr_expect_str_eq(str(json_object_get(o, "record"), "status"), "success");
    {
        const json_t *m = json_object_get(json_object_get(o, "record"), "metrics");

        cr_expect(json_is_number(json_object_get(m, "durationMs")));
        cr_expect(json_is_integer(json_object_get(m, "billedDurationMs")));
        cr_expect(json_is_integer(json_object_get(m, "memorySizeMB")));
        cr_expect(json_is_integer(json_object_get(m, "maxMemoryUsedMB")));
    }
    cr_expect(iso_ms(str(o, "time")));
    cr_expect_not_null(find_platform(v, n, "platform.start", rid));
    cr_expect_not_null(find_platform(v, n, "platform.runtimeDone", crid));
    free_lines(v, n);
}

Test(logs, application_log_level_warn_filters_info_at_the_source)
{
    json_t *v[512];
    const char *rid;
    size_t n;

    start(NULL);
    rid = invoke("pywarn", "{\"tag\":\"W1\"}");
    cr_assert(wait_log("warn W1", 5000), "%s", slurp(log_path));
    n = json_lines(v, 512);
    cr_expect_not_null(find(v, n, "message", "warn W1", rid));
    cr_expect_null(find(v, n, "message", "info W1", NULL), "logging.info got through WARN");
    cr_expect_null(find(v, n, "message", "print W1", NULL), "print (INFO) got through WARN");
    cr_expect_null(find(v, n, "custom", "W1", NULL), "a level-less object got through WARN");
    free_lines(v, n);
}

Test(logs, system_log_level_warn_drops_start_end_report)
{
    json_t *v[512];
    const char *rid, *other;
    size_t n;

    start(NULL);
    rid = invoke("pywarn", "{\"tag\":\"W2\"}");
    other = invoke("py", "{\"tag\":\"W3\"}");
    cr_assert(wait_log("platform.report", 5000));
    cr_assert(wait_log("warn W2", 5000));
    n = json_lines(v, 512);
    cr_expect_null(find_platform(v, n, "platform.start", rid));
    cr_expect_null(find_platform(v, n, "platform.runtimeDone", rid));
    cr_expect_null(find_platform(v, n, "platform.report", rid));
    cr_expect_null(strstr(slurp(log_path), fmt("REPORT RequestId: %s", rid)));
    /* the default (INFO) keeps them */
    cr_expect_not_null(find_platform(v, n, "platform.report", other));
    free_lines(v, n);
}

Test(logs, text_format_stays_as_it_was)
{
    const char *rid;

    start(NULL);
    rid = invoke("ctext", "{}");
    cr_assert(wait_log(fmt("REPORT RequestId: %s", rid), 5000), "%s", slurp(log_path));
    cr_expect(wait_log(fmt("[function:ctext] [%s] c plain line %s", rid, rid), 1000),
              "%s", slurp(log_path));
    rid = invoke("pytext", "{\"tag\":\"T1\"}");
    cr_expect(wait_log(fmt("[function:pytext] [%s] print T1", rid), 5000), "%s",
              slurp(log_path));
    cr_expect_null(strstr(slurp(log_path), "platform.report"), "text functions wrote JSON");
}

/* ------------------------------------------------------------------ */
/* The live tail                                                       */

/* The events (data: lines) of a finished stream, parsed. */
static size_t events(const char *stream, json_t **v, size_t max)
{
    char *copy = fmt("%s", stream), *save = NULL;
    size_t n = 0;

    for (char *l = strtok_r(copy, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
        if (strncmp(l, "data: ", 6) == 0) {
            v[n] = json_loads(l + 6, 0, NULL);
            cr_assert_not_null(v[n], "an event that is not JSON: %s", l);
            n++;
        }
    return n;
}

static char *tail(const char *query)
{
    char *out;

    cr_assert_eq(sh(fmt("curl -s -N --max-time 20 'http://127.0.0.1:%d/logs/tail?%s'", port,
                        query), &out), 0, "%s", out);
    return out;
}

Test(logs, tail_backlog_with_since_and_filters)
{
    json_t *v[512];
    const char *rid, *crid;
    size_t n;
    bool saw_print = false, saw_object = false;

    start(NULL);
    rid = invoke("py", "{\"tag\":\"B1\"}");
    crid = invoke("ctext", "{}");

    n = events(tail("since=10m&follow=false&function=py"), v, 512);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_object_get(v[i], "message");

        cr_expect_str_eq(str(v[i], "function"), "py");
        cr_expect(iso_ms(str(v[i], "timestamp")));
        cr_expect(json_object_get(v[i], "source") != NULL, "no source member");
        saw_print |= json_is_string(m) && strcmp(json_string_value(m), "print B1") == 0 &&
                     strcmp(str(v[i], "requestId"), rid) == 0 &&
                     strcmp(str(v[i], "level"), "INFO") == 0;
        /* the handler's JSON object is the message, as an object */
        saw_object |= json_is_object(m) && str(m, "custom") && strcmp(str(m, "custom"), "B1") == 0;
    }
    cr_expect(saw_print, "print B1 not in the backlog");
    cr_expect(saw_object, "the JSON object line is not an object message");
    free_lines(v, n);

    /* by request id: only that invocation's lines, text functions too */
    n = events(tail(fmt("since=10m&follow=false&request_id=%s", crid)), v, 512);
    cr_assert_gt(n, 1);
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(str(v[i], "requestId"), crid);
    cr_expect_not_null(find(v, n, "type", "platform.report", crid),
                       "no REPORT event for the text function");
    free_lines(v, n);

    /* by level: WARN and above */
    n = events(tail("since=10m&follow=false&level=warn"), v, 512);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++)
        cr_expect(strcmp(str(v[i], "level"), "WARN") == 0 ||
                  strcmp(str(v[i], "level"), "ERROR") == 0, "%s", str(v[i], "level"));
    free_lines(v, n);

    /* since=0: no backlog */
    cr_expect_eq(events(tail("since=0&follow=false"), v, 512), 0);
}

Test(logs, tail_sends_lines_as_they_happen)
{
    const char *out = fmt("%s/live.out", dir);
    pid_t c;
    double end;
    bool got = false;

    start(NULL);
    c = fork();
    if (c == 0) {
        execlp("sh", "sh", "-c",
               fmt("curl -s -N --max-time 15 'http://127.0.0.1:%d/logs/tail?since=0&function=py'"
                   " > '%s'", port, out), (char *)NULL);
        _exit(127);
    }
    end = now_ms() + 10000;
    while (now_ms() < end && !strstr(slurp(out), ": sluice log tail"))
        usleep(20000);
    cr_assert(strstr(slurp(out), ": sluice log tail"), "the tail did not open");
    invoke("py", "{\"tag\":\"L1\"}");
    end = now_ms() + 10000;
    while (now_ms() < end && !(got = strstr(slurp(out), "\"print L1\"") != NULL))
        usleep(50000);
    kill(c, SIGTERM);
    waitpid(c, NULL, 0);
    cr_expect(got, "a line that happened after the connection did not arrive:\n%s", slurp(out));
    cr_expect(strstr(slurp(out), "\nid: ") != NULL, "events carry no id");
}

Test(logs, hostile_queries_get_400_with_a_reason)
{
    static const struct { const char *q, *code, *msg; } cases[] = {
        { "level=LOUD", "400", "level 'LOUD' is not one of" },
        { "since=99999999999999999999999h", "400", "is not 0 or a duration" },
        { "since=4000000h", "400", "at most 30 days" },
        { "since=10", "400", "with a unit" },
        { "since=-5m", "400", "is not 0 or a duration" },
        { "follow=maybe", "400", "follow is true or false" },
        { "colour=red", "400", "unknown parameter 'colour'" },
        { "function=py&function=py", "400", "function is given twice" },
        { "function=nope", "400", "no function named 'nope'" },
        { "source=nope", "400", "no source named 'nope'" },
        { "request_id=", "400", "request_id is empty" },
        { "%zz=1", "400", "" },
    };
    char *out;

    start(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh(fmt("curl -s -w '\\n%%{http_code}' 'http://127.0.0.1:%d/logs/tail?%s'", port,
               cases[i].q), &out);
        cr_expect(strstr(out, fmt("\n%s", cases[i].code)) != NULL, "%s: %s", cases[i].q, out);
        cr_expect(strstr(out, cases[i].msg) != NULL, "%s: %s", cases[i].q, out);
    }
    sh(fmt("curl -s -w '\\n%%{http_code}' 'http://127.0.0.1:%d/logs/tail?function=%s'", port,
           fmt("%0300d", 7)), &out);
    cr_expect(strstr(out, "longer than 256 bytes") && strstr(out, "\n400"), "%s", out);
    sh(fmt("curl -s -w '\\n%%{http_code}' -X POST 'http://127.0.0.1:%d/logs/tail'", port), &out);
    cr_expect(strstr(out, "\n405") && strstr(out, "use GET"), "%s", out);
    cr_assert(th_healthy(port), "sluice died: %s", slurp(log_path));
}

/* A raw connection to the tail with a tiny receive buffer: the response
 * head is read, then nothing more unless the caller reads. */
static int open_tail(const char *query, int rcvbuf, char *head, size_t hn)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    const char *req = fmt("GET /logs/tail?%s HTTP/1.1\r\nHost: x\r\n\r\n", query);
    size_t got = 0;

    cr_assert_geq(fd, 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (got + 1 < hn) {
        struct pollfd p = { fd, POLLIN, 0 };
        ssize_t r;

        cr_assert_gt(poll(&p, 1, 10000), 0, "no answer from the tail");
        r = read(fd, head + got, 1);
        if (r <= 0)
            break;
        got++;
        head[got] = '\0';
        if (got >= 4 && memcmp(head + got - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[got] = '\0';
    return fd;
}

static double metric(const char *sample)
{
    char *out;
    const char *p;

    sh(fmt("curl -s http://127.0.0.1:%d/metrics", port), &out);
    for (p = out; (p = strstr(p, sample)); p++)
        if ((p == out || p[-1] == '\n') && p[strlen(sample)] == ' ')
            return strtod(p + strlen(sample) + 1, NULL);
    return -1;
}

Test(logs, a_client_that_does_not_read_is_dropped_and_invocations_go_on)
{
    char head[2048];
    int fd;
    double end, dropped = 0;

    start(NULL);
    fd = open_tail("since=0", 4096, head, sizeof(head));
    cr_assert(strstr(head, "200 OK"), "%s", head);
    cr_expect_eq(metric("sluice_log_tail_clients"), 1);
    /* about 1.2 MB of log lines, far past what the client's socket and its
     * 256 KB in sluice hold: it is cut off, the invocation is not held */
    invoke("py", "{\"tag\":\"S1\",\"lines\":400,\"size\":3000}");
    invoke("py", "{\"tag\":\"S2\",\"lines\":400,\"size\":3000}");
    end = now_ms() + 10000;
    while (now_ms() < end && (dropped = metric("sluice_log_tail_clients_dropped_total")) < 1)
        usleep(50000);
    cr_expect_eq(dropped, 1, "the slow client was not dropped; log:\n%s", slurp(log_path));
    cr_expect_gt(metric("sluice_log_lines_dropped_total{reason=\"tail_client\"}"), 0);
    cr_expect_eq(metric("sluice_log_tail_clients"), 0);
    close(fd);
    /* the others still get everything */
    cr_expect(strstr(tail("since=10m&follow=false&function=py"), "bulk S2 399") != NULL);
}

Test(logs, the_33rd_client_gets_503)
{
    int fds[32];
    char head[2048], *out;
    double end;
    int code = 0;

    start(NULL);
    for (int i = 0; i < 32; i++) {
        fds[i] = open_tail("since=0", 0, head, sizeof(head));
        cr_assert(strstr(head, "200 OK"), "client %d: %s", i + 1, head);
    }
    sh(fmt("curl -s -i 'http://127.0.0.1:%d/logs/tail?since=0'", port), &out);
    cr_expect(strstr(out, "503 Service Unavailable") && strstr(out, "TooManyRequestsException")
              && strstr(out, "32 log tail clients"), "%s", out);
    /* a place freed is a place taken */
    close(fds[0]);
    end = now_ms() + 10000;
    while (now_ms() < end && code != 200) {
        sh(fmt("curl -s -o /dev/null -w '%%{http_code}' "
               "'http://127.0.0.1:%d/logs/tail?since=0&follow=false'", port), &out);
        code = atoi(out);
        usleep(50000);
    }
    cr_expect_eq(code, 200);
    for (int i = 1; i < 32; i++)
        close(fds[i]);
}

Test(logs, tail_takes_the_invoke_credentials)
{
    char *out;
    json_t *v[256];
    size_t n;

    start("  auth:\n    secret-token: \"*\"\n    c-only: cjson\n");
    sh(fmt("curl -s -w '\\n%%{http_code}' 'http://127.0.0.1:%d/logs/tail?follow=false'", port),
       &out);
    cr_expect(strstr(out, "\n401"), "%s", out);
    sh(fmt("curl -s -w '\\n%%{http_code}' -H 'Authorization: Bearer wrong' "
           "'http://127.0.0.1:%d/logs/tail?follow=false'", port), &out);
    cr_expect(strstr(out, "\n401"), "%s", out);
    sh(fmt("curl -s -w '\\n%%{http_code}' -H 'Authorization: Bearer c-only' "
           "'http://127.0.0.1:%d/logs/tail?follow=false&function=py'", port), &out);
    cr_expect(strstr(out, "\n403") && strstr(out, "may not read the logs of py"), "%s", out);

    sh(fmt("curl -s -H 'Authorization: Bearer secret-token' -o /dev/null -X POST "
           "http://127.0.0.1:%d/2015-03-31/functions/py/invocations -d '{}'", port), NULL);
    sh(fmt("curl -s -H 'Authorization: Bearer secret-token' -o /dev/null -X POST "
           "http://127.0.0.1:%d/2015-03-31/functions/cjson/invocations -d '{}'", port), NULL);
    /* a token for cjson alone sees cjson's lines alone */
    sh(fmt("curl -s -H 'Authorization: Bearer c-only' "
           "'http://127.0.0.1:%d/logs/tail?follow=false'", port), &out);
    n = events(out, v, 256);
    cr_expect_gt(n, 0, "%s", out);
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(str(v[i], "function"), "cjson");
    free_lines(v, n);
    sh(fmt("curl -s -H 'Authorization: Bearer secret-token' "
           "'http://127.0.0.1:%d/logs/tail?follow=false&function=py'", port), &out);
    cr_expect(strstr(out, "\"print t\""), "%s", out);
}

/* ------------------------------------------------------------------ */
/* sluice logs                                                         */

Test(logs, sluice_logs_follow_shows_a_print)
{
    const char *out = fmt("%s/cli.out", dir), *rid;
    char exe[PATH_MAX + 64], *text;
    double end;
    int rc;

    start(NULL);
    th_build_path(exe, sizeof(exe), root, "sluice");
    cli = fork();
    if (cli == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(exe, "sluice", "logs", cfg_path, "--follow", "--since", "0", "--function", "py",
              (char *)NULL);
        _exit(127);
    }
    end = now_ms() + 10000;
    while (now_ms() < end && metric("sluice_log_tail_clients") < 1)
        usleep(50000);
    cr_assert_eq(metric("sluice_log_tail_clients"), 1, "sluice logs did not connect: %s",
                 slurp(out));
    rid = invoke("py", "{\"tag\":\"F1\"}");
    invoke("cjson", "{}");
    end = now_ms() + 10000;
    while (now_ms() < end && !strstr(slurp(out), "print F1"))
        usleep(50000);
    text = slurp(out);
    cr_expect(strstr(text, fmt(" py %s print F1\n", rid)) != NULL,
              "`sluice logs --follow` did not show the print as TIMESTAMP FUNCTION ID MESSAGE:\n%s",
              text);
    cr_expect_null(strstr(text, "cjson"), "--function py showed another function:\n%s", text);
    stop_child(&cli);

    /* without --follow: the backlog, then exit 0 */
    rc = sh(fmt("'%s' logs '%s' --function py --since 10m", exe, cfg_path), &text);
    cr_expect_eq(rc, 0, "%s", text);
    cr_expect(strstr(text, "print F1"), "%s", text);
    rc = sh(fmt("'%s' logs '%s' --json --request-id %s", exe, cfg_path, rid), &text);
    cr_expect_eq(rc, 0, "%s", text);
    cr_expect(strstr(text, "{\"timestamp\":") && strstr(text, "\"type\":\"platform.report\""),
              "%s", text);
    rc = sh(fmt("'%s' logs '%s' --level LOUD", exe, cfg_path), &text);
    cr_expect_eq(rc, 1);
    cr_expect(strstr(text, "400: level 'LOUD'"), "%s", text);
}
