/* The HTTP API end to end: `$BUILD/sluice run` as a child process with real
 * handlers ($BUILD/handlers/echo and fail, examples/handlers/slow.py, a
 * Python handler written here), driven over real HTTP by a small socket
 * client, by curl, and by the AWS CLI unchanged (`aws lambda invoke`).
 *
 * Needs root (sandboxes), $BUILD (make; "build" by default), curl and the AWS CLI (tests/deps
 * installs Debian's awscli). Run from the repository root. Every test has
 * its own directory (/tmp/sluice-test-api-<pid>) and a free port, so tests
 * run in parallel; most end with SIGTERM and check a clean exit 0. Set
 * SLUICE_TEST_LOG=1 to copy sluice's log to stderr when a test ends, and
 * SLUICE_TEST_BIN to run another binary instead of $BUILD/sluice. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "harness.h"
#include "sluice/api.h"
#include "sluice/metrics.h"

#define INVOKE(fn) "/2015-03-31/functions/" fn "/invocations"
#define MB (1024 * 1024)

/* ------------------------------------------------------------------ */
/* Per-test state (each Criterion test runs in its own process)        */

static char root_dir[PATH_MAX];
static char dir[256];                /* /tmp/sluice-test-api-<pid> */
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

    if (strncmp(d, "/tmp/sluice-test-api-", 21) != 0)
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
    char echo[PATH_MAX + 64];

    cr_assert_not_null(getcwd(root_dir, sizeof(root_dir)));
    cr_assert_eq(access(sluice_bin(), X_OK), 0, "run from the repository root after make");
    cr_assert_eq(access(th_build_path(echo, sizeof(echo), root_dir, "handlers/echo"), X_OK), 0,
                 "%s missing: make", echo);
    setenv("SLUICE_RUNTIME_DIR", fmt("%s/runtime", root_dir), 1);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-api-%d", (int)getpid());
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

/* An error answer: status, X-Amzn-ErrorType and Lambda's JSON body. */
static void expect_error(const struct resp *r, int status, const char *type, const char *what)
{
    json_t *j;

    cr_expect_eq(r->status, status, "%s: status %d, want %d; body %.300s", what, r->status,
                 status, r->body ? r->body : "");
    cr_expect_str_eq(str_or(header(r, "X-Amzn-ErrorType")), type, "%s", what);
    cr_expect_not_null(header(r, "X-Amzn-RequestId"), "%s: no X-Amzn-RequestId", what);
    j = r->body ? json_loadb(r->body, r->blen, 0, NULL) : NULL;
    cr_expect(j && json_is_string(json_object_get(j, "message")) &&
                  json_is_string(json_object_get(j, "Type")),
              "%s: body is not {\"Type\",\"message\"}: %.300s", what, r->body ? r->body : "");
    json_decref(j);
}

/* ------------------------------------------------------------------ */
/* The server                                                          */

static const char *functions_yaml(void)
{
    char echo[PATH_MAX + 64], fail[PATH_MAX + 64];

    return fmt("functions:\n"
               "  echo:\n    handler: %s\n"
               "  fail:\n    handler: %s\n"
               "  slow:\n    handler: %s/examples/handlers/slow.py\n"
               "    reserved_concurrency: 1\n    timeout_s: 20\n",
               th_build_path(echo, sizeof(echo), root_dir, "handlers/echo"),
               th_build_path(fail, sizeof(fail), root_dir, "handlers/fail"), root_dir);
}

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

static void start_default(void)
{
    start_server(write_config("api.yaml", functions_yaml(), NULL));
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

/* The value of one sample (exact name with labels) in a /metrics text, or -1. */
static double metric_in(const char *text, const char *sample)
{
    const char *p = text;
    size_t n = strlen(sample);

    while (p && (p = strstr(p, sample))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

static double metric(const char *sample)
{
    return metric_in(get("/metrics").body, sample);
}

/* Wait until a sample reaches `want` (within `ms`); returns the last value. */
static double wait_metric(const char *sample, double want, int ms)
{
    double end = now_ms() + ms, v = -1;

    while (now_ms() < end) {
        v = metric(sample);
        if (v >= want)
            break;
        usleep(50000);
    }
    return v;
}

/* ------------------------------------------------------------------ */
/* Commands (curl, the AWS CLI)                                        */

/* Run `cmd` through the shell with a deadline; output (stdout+stderr) in
 * *out; returns the exit code (124 on timeout). */
static int sh(const char *cmd, char **out)
{
    FILE *p = popen(fmt("timeout 120 %s 2>&1", cmd), "r");
    size_t cap = 65536, len = 0;
    char *buf = keep(malloc(cap));
    int st;

    cr_assert_not_null(p);
    while (len + 1 < cap && fgets(buf + len, (int)(cap - len), p))
        len += strlen(buf + len);
    buf[len] = '\0';
    st = pclose(p);
    if (out)
        *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *aws_cli(void)
{
    if (access("/usr/bin/aws", X_OK) == 0)
        return "/usr/bin/aws"; /* Debian's awscli (v2) before any other on PATH */
    cr_assert_eq(sh("command -v aws", NULL), 0, "the AWS CLI is missing: run tests/deps");
    return "aws";
}

/* `aws lambda invoke ... ARGS OUTFILE` against this server; returns the
 * exit code, the CLI's output in *out. */
static void aws_env(void)
{
    setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
    setenv("AWS_PAGER", "", 1);
    setenv("AWS_CONFIG_FILE", "/dev/null", 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null", 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_MAX_ATTEMPTS", "1", 1);
}

static int aws_invoke(const char *args, const char *outfile, char **out)
{
    setenv("AWS_ACCESS_KEY_ID", "x", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "x", 1);
    aws_env();
    return sh(fmt("%s lambda invoke --endpoint-url http://127.0.0.1:%d %s '%s'", aws_cli(), port,
                  args, outfile),
              out);
}

/* The CLI prints a JSON object; parse it. */
static json_t *cli_json(const char *out)
{
    const char *brace = strchr(out, '{');
    json_t *j = brace ? json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

    cr_assert_not_null(j, "the CLI printed no JSON: %s", out);
    return j;
}

static char *b64decode(const char *in)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = keep(calloc(1, strlen(in) + 1));
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;

    for (const char *p = in; *p && *p != '='; p++) {
        const char *c = strchr(a, *p);
        if (!c)
            return NULL;
        acc = (acc << 6) | (unsigned)(c - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* The AWS CLI, unchanged                                              */

Test(api, aws_cli_invoke_returns_the_payload, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *outfile = fmt("%s/out.json", dir);
    char *out;
    json_t *j;
    int code;

    start_default();
    code = aws_invoke("--function-name echo --cli-binary-format raw-in-base64-out "
                      "--payload '{\"a\":1}'", outfile, &out);
    cr_assert_eq(code, 0, "aws lambda invoke exited %d: %s\nlog:\n%s", code, out, server_log());
    cr_expect_str_eq(slurp(outfile), "{\"a\":1}");
    j = cli_json(out);
    cr_expect_eq(json_integer_value(json_object_get(j, "StatusCode")), 200, "%s", out);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "ExecutedVersion"))), "$LATEST");
    cr_expect_null(json_object_get(j, "FunctionError"), "%s", out);
    json_decref(j);
    stop_server(5000);
}

Test(api, aws_cli_shows_a_function_error, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *outfile = fmt("%s/out.json", dir);
    char *out;
    json_t *j, *e;
    int code;

    start_default();
    code = aws_invoke("--function-name fail --cli-binary-format raw-in-base64-out "
                      "--payload '{\"order\":7}'", outfile, &out);
    cr_assert_eq(code, 0, "aws lambda invoke exited %d: %s", code, out);
    j = cli_json(out);
    cr_expect_eq(json_integer_value(json_object_get(j, "StatusCode")), 200, "%s", out);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "FunctionError"))), "Unhandled",
                     "%s", out);
    json_decref(j);
    e = json_loads(slurp(outfile), 0, NULL);
    cr_assert_not_null(e, "error body is not JSON: %s", slurp(outfile));
    cr_expect_str_eq(str_or(json_string_value(json_object_get(e, "errorType"))), "OrderError");
    cr_expect(strstr(str_or(json_string_value(json_object_get(e, "errorMessage"))),
                     "order rejected") != NULL, "%s", slurp(outfile));
    cr_expect(json_is_array(json_object_get(e, "stackTrace")), "%s", slurp(outfile));
    json_decref(e);
    stop_server(5000);
}

Test(api, aws_cli_event_is_accepted_and_runs, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *outfile = fmt("%s/out.json", dir);
    char *out;
    json_t *j;
    int code;

    start_default();
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), -1,
                 "echo ran before it was invoked");
    code = aws_invoke("--function-name echo --invocation-type Event "
                      "--cli-binary-format raw-in-base64-out --payload '{\"async\":true}'",
                      outfile, &out);
    cr_assert_eq(code, 0, "aws lambda invoke exited %d: %s", code, out);
    j = cli_json(out);
    cr_expect_eq(json_integer_value(json_object_get(j, "StatusCode")), 202, "%s", out);
    json_decref(j);
    cr_expect_eq(wait_metric("sluice_invocations_total{function=\"echo\"}", 1, 10000), 1,
                 "the event did not run within 10 s; log:\n%s", server_log());
    stop_server(5000);
}

Test(api, aws_cli_log_tail_has_the_report, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *outfile = fmt("%s/out.json", dir);
    const char *tail;
    char *out, *text;
    json_t *j;
    int code;

    start_default();
    code = aws_invoke("--function-name echo --log-type Tail", outfile, &out);
    cr_assert_eq(code, 0, "aws lambda invoke exited %d: %s", code, out);
    j = cli_json(out);
    tail = json_string_value(json_object_get(j, "LogResult"));
    cr_assert_not_null(tail, "no LogResult: %s", out);
    text = b64decode(tail);
    cr_assert_not_null(text, "LogResult is not base64: %s", tail);
    cr_expect(strstr(text, "REPORT RequestId: ") != NULL, "log tail: %s", text);
    cr_expect(strstr(text, "echo: got 2 bytes") != NULL, "the handler's own line: %s", text);
    json_decref(j);
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Lambda's answers over plain HTTP                                    */

Test(api, invoke_answers_like_lambda, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;
    json_t *j;

    start_default();

    r = post(INVOKE("echo"), NULL, "{\"k\":[1,2,3]}");
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.blen, 13);
    cr_expect(r.body && memcmp(r.body, "{\"k\":[1,2,3]}", 13) == 0, "%s", r.body);
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Executed-Version")), "$LATEST");
    cr_expect_eq(strlen(str_or(header(&r, "X-Amzn-RequestId"))), 36);
    cr_expect_null(header(&r, "X-Amz-Function-Error"));

    /* no payload: the event is {} */
    r = post(INVOKE("echo"), NULL, "");
    cr_expect_eq(r.status, 200);
    cr_expect(r.body && strcmp(r.body, "{}") == 0, "%s", r.body);

    /* the function by ARN, partial ARN, with $LATEST */
    r = post(INVOKE("arn:aws:lambda:eu-west-1:123456789012:function:echo"), NULL, "[1]");
    cr_expect_eq(r.status, 200, "full ARN: %s", r.body);
    r = post(INVOKE("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aecho%3A%24LATEST"),
             NULL, "[2]");
    cr_expect_eq(r.status, 200, "encoded ARN with qualifier: %s", r.body);
    cr_expect(r.body && strcmp(r.body, "[2]") == 0);
    r = post(INVOKE("123456789012:function:echo"), NULL, "[3]");
    cr_expect_eq(r.status, 200, "partial ARN: %s", r.body);
    r = post(INVOKE("echo") "?Qualifier=%24LATEST", NULL, "\"s\"");
    cr_expect_eq(r.status, 200, "?Qualifier=$LATEST: %s", r.body);
    cr_expect(r.body && strcmp(r.body, "\"s\"") == 0);

    /* errors */
    r = post(INVOKE("nope"), NULL, "{}");
    expect_error(&r, 404, "ResourceNotFoundException", "unknown function");
    cr_expect(r.body && strstr(r.body, "function:nope") != NULL, "%s", r.body);
    r = post(INVOKE("echo") "?Qualifier=v1", NULL, "{}");
    expect_error(&r, 404, "ResourceNotFoundException", "qualifier v1");
    r = post(INVOKE("echo:v2"), NULL, "{}");
    expect_error(&r, 404, "ResourceNotFoundException", "qualifier in the name");
    r = post(INVOKE("echo:v2") "?Qualifier=v3", NULL, "{}");
    expect_error(&r, 400, "InvalidParameterValueException", "qualifiers that disagree");
    r = post(INVOKE("bad%20name"), NULL, "{}");
    expect_error(&r, 400, "ValidationException", "invalid function name");
    r = post(INVOKE("echo"), NULL, "{\"a\":");
    expect_error(&r, 400, "InvalidRequestContentException", "truncated JSON");
    cr_expect(r.body && strstr(r.body, "Could not parse request body into json") != NULL, "%s",
              r.body);
    r = post(INVOKE("echo"), "X-Amz-Invocation-Type: Sometimes\r\n", "{}");
    expect_error(&r, 400, "InvalidParameterValueException", "bad invocation type");
    r = post(INVOKE("echo"), "X-Amz-Log-Type: Everything\r\n", "{}");
    expect_error(&r, 400, "InvalidParameterValueException", "bad log type");
    r = post(INVOKE("echo"), "X-Amz-Client-Context: not*base64\r\n", "{}");
    expect_error(&r, 400, "InvalidRequestContentException", "client context not base64");
    r = post(INVOKE("echo"), "X-Amz-Client-Context: WzFd\r\n", "{}"); /* [1]: not an object */
    expect_error(&r, 400, "InvalidRequestContentException", "client context not an object");
    r = get(INVOKE("echo"));
    expect_error(&r, 405, "MethodNotAllowedException", "GET on invocations");
    r = get("/2015-03-31/functions/echo/aliases"); /* ListAliases: not served */
    expect_error(&r, 404, "UnknownOperationException", "unknown path");
    r = post("/", NULL, "{}");
    expect_error(&r, 404, "UnknownOperationException", "POST /");

    /* DryRun: validated, not run */
    r = post(INVOKE("echo"), "X-Amz-Invocation-Type: DryRun\r\n", "{}");
    cr_expect_eq(r.status, 204);
    cr_expect_not_null(header(&r, "X-Amzn-RequestId"));
    r = post(INVOKE("nope"), "X-Amz-Invocation-Type: DryRun\r\n", "{}");
    expect_error(&r, 404, "ResourceNotFoundException", "DryRun of an unknown function");

    /* function error: 200 with X-Amz-Function-Error */
    r = post(INVOKE("fail"), NULL, "{}");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    j = r.body ? json_loadb(r.body, r.blen, 0, NULL) : NULL;
    cr_expect(j && json_is_string(json_object_get(j, "errorMessage")) &&
                  json_is_array(json_object_get(j, "stackTrace")),
              "%s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))), "OrderError");
    /* as Lambda's Python runtime: the invocation's request id */
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "requestId"))),
                     str_or(header(&r, "X-Amzn-RequestId")), "%s", r.body);
    json_decref(j);

    /* six echo invocations ran, nothing else did */
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 6);
    stop_server(5000);
}

Test(api, client_context_reaches_the_handler, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *handler = fmt("%s/ctx.py", dir);
    const char *cc = "{\"custom\":{\"tenant\":\"t-42\"},\"env\":{\"locale\":\"fr\"}}";
    char *b64;
    struct resp r;
    json_t *j;

    put_file(handler,
             "#!/usr/bin/python3\n"
             "import sluice_runtime\n\n"
             "def handler(event, context):\n"
             "    cc = context.client_context  # Lambda's ClientContext object\n"
             "    return {\"cc\": cc and {\"custom\": cc.custom, \"env\": cc.env},\n"
             "            \"event\": event}\n\n"
             "sluice_runtime.start(handler)\n",
             0755);
    start_server(write_config("ctx.yaml",
                              fmt("functions:\n  ctx:\n    handler: %s\n", handler), NULL));
    cr_assert_eq(sh(fmt("printf '%%s' '%s' | base64 -w0", cc), &b64), 0);
    r = post(INVOKE("ctx"), fmt("X-Amz-Client-Context: %s\r\n", b64), "{\"n\":1}");
    cr_assert_eq(r.status, 200, "%s\nlog:\n%s", r.body ? r.body : "", server_log());
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(
                         json_object_get(json_object_get(j, "cc"), "custom"), "tenant"))),
                     "t-42", "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "event"), "n")), 1);
    json_decref(j);
    /* without the header there is none */
    r = post(INVOKE("ctx"), NULL, "{}");
    cr_expect(r.body && strstr(r.body, "\"cc\": null") != NULL, "%s", r.body);
    stop_server(5000);
}

Test(api, payload_limits, .init = setup, .fini = teardown, .timeout = 180)
{
    size_t big = 7 * MB, mid = 1536 * 1024;
    char *body = keep(malloc(big + 16)), *out;
    const char *file = fmt("%s/100mb.bin", dir);
    struct resp r;
    int fd;

    /* {"x":"aaa..."} of exactly n bytes */
#define FILL(n)                                                               \
    do {                                                                      \
        memcpy(body, "{\"x\":\"", 6);                                         \
        memset(body + 6, 'a', (n) - 8);                                       \
        memcpy(body + (n) - 2, "\"}", 2);                                     \
    } while (0)

    start_default();

    FILL(big);
    r = http("POST", INVOKE("echo"), NULL, body, big);
    expect_error(&r, 413, "RequestTooLargeException", "7 MB synchronous payload");

    FILL(mid);
    r = http("POST", INVOKE("echo"), "X-Amz-Invocation-Type: Event\r\n", body, mid);
    expect_error(&r, 413, "RequestTooLargeException", "1.5 MB event");
    /* the same is fine synchronously, and comes back whole */
    r = http("POST", INVOKE("echo"), NULL, body, mid);
    cr_expect_eq(r.status, 200, "1.5 MB synchronous payload: %d", r.status);
    cr_expect_eq(r.blen, mid);
    cr_expect(r.body && r.blen == mid && memcmp(r.body, body, mid) == 0);
    /* exactly 6 MB (6291456 bytes) is still allowed */
    FILL((size_t)6 * MB);
    r = http("POST", INVOKE("echo") , "X-Amz-Invocation-Type: DryRun\r\n", body, 6 * MB);
    cr_expect_eq(r.status, 204, "6291456 bytes: %d %s", r.status, r.body ? r.body : "");
    FILL((size_t)6 * MB + 1);
    r = http("POST", INVOKE("echo"), "X-Amz-Invocation-Type: DryRun\r\n", body, 6 * MB + 1);
    expect_error(&r, 413, "RequestTooLargeException", "6291457 bytes");

    /* 100 MB streamed without Expect: the server reads and drops it, answers
     * 413, and stays up */
    {
        const size_t total = 100 * MB;
        int s = connect_server();
        const char *h = fmt("POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\n"
                            "Content-Length: %zu\r\n\r\n", total);
        size_t sent = 0;
        double t0 = now_ms();

        cr_assert_geq(s, 0);
        cr_assert_eq(send_all(s, h, strlen(h)), 0);
        memset(body, '0', MB);
        while (sent < total && send_all(s, body, MB) == 0)
            sent += MB;
        read_resp(s, &r, 30000);
        close(s);
        cr_expect_eq(r.status, 413, "100 MB streamed: status %d after %zu bytes in %.0f ms",
                     r.status, sent, now_ms() - t0);
    }
    cr_expect_eq(get("/healthz").status, 200, "not alive after the 100 MB body");

    /* 100 MB from curl, which asks Expect: 100-continue */
    fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 100 * MB), 0);
    close(fd);
    cr_assert_eq(sh(fmt("curl -s -o /dev/null -w '%%{http_code}' -X POST -T '%s' "
                        "http://127.0.0.1:%d" INVOKE("echo"), file, port), &out), 0,
                 "curl: %s", out);
    cr_expect_str_eq(out, "413");
    unlink(file);

    r = post(INVOKE("echo"), NULL, "{\"after\":true}");
    cr_expect_eq(r.status, 200, "an invocation after the big bodies");
    stop_server(5000);
#undef FILL
}

Test(api, reserved_concurrency_throttles_with_429, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *b1 = "{\"sleep_ms\":2500}";
    const char *h1 = fmt("POST " INVOKE("slow") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n%s", strlen(b1), b1);
    struct resp r, r1;
    json_t *j;
    int s;

    start_default();
    s = connect_server();
    cr_assert_geq(s, 0);
    cr_assert_eq(send_all(s, h1, strlen(h1)), 0);
    cr_assert_eq(wait_metric("sluice_function_concurrent_executions{function=\"slow\"}", 1,
                             10000), 1, "the first invocation did not start");

    r = post(INVOKE("slow"), NULL, "{\"sleep_ms\":10}");
    expect_error(&r, 429, "TooManyRequestsException", "second concurrent invocation");
    cr_expect_not_null(header(&r, "Retry-After"), "no Retry-After");
    j = r.body ? json_loadb(r.body, r.blen, 0, NULL) : NULL;
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "Reason"))),
                     "ReservedFunctionConcurrentInvocationLimitExceeded", "%s", r.body);
    json_decref(j);
    cr_expect_eq(metric("sluice_throttles_total{function=\"slow\"}"), 1);
    /* other functions are not affected */
    cr_expect_eq(post(INVOKE("echo"), NULL, "{}").status, 200);

    read_resp(s, &r1, 30000);
    close(s);
    cr_expect_eq(r1.status, 200, "the first invocation: %d %s", r1.status,
                 r1.body ? r1.body : "");
    cr_expect(r1.body && strstr(r1.body, "\"slept_ms\": 2500") != NULL, "%s", r1.body);
    /* and the function takes invocations again */
    r = post(INVOKE("slow"), NULL, "{\"sleep_ms\":10}");
    cr_expect_eq(r.status, 200, "%s", r.body ? r.body : "");
    stop_server(5000);
}

Test(api, metrics_count_what_ran, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;

    start_default();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(post(INVOKE("echo"), NULL, "{}").status, 200);
    cr_assert_eq(post(INVOKE("fail"), NULL, "{}").status, 200);
    cr_assert_eq(post(INVOKE("nope"), NULL, "{}").status, 404);

    r = get("/metrics");
    cr_assert_eq(r.status, 200);
    cr_expect(strstr(str_or(header(&r, "Content-Type")), "text/plain") != NULL);
    cr_expect(strstr(r.body, "# HELP sluice_invocations_total ") != NULL, "%s", r.body);
    cr_expect(strstr(r.body, "# TYPE sluice_invocations_total counter\n") != NULL);
    cr_expect(strstr(r.body, "# TYPE sluice_invocation_duration_seconds histogram\n") != NULL);
    cr_expect(strstr(r.body, "# TYPE sluice_http_requests_total counter\n") != NULL);
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 3);
    cr_expect_eq(metric("sluice_invocations_total{function=\"fail\"}"), 1);
    cr_expect_eq(metric("sluice_invocation_errors_total{function=\"fail\"}"), 1);
    cr_expect_eq(metric("sluice_invocation_errors_total{function=\"echo\"}"), -1);
    /* the first invocation of each started its environment; the rest were warm */
    cr_expect_eq(metric("sluice_cold_starts_total{function=\"echo\"}"), 1);
    cr_expect_eq(metric("sluice_cold_starts_total{function=\"fail\"}"), 1);
    cr_expect_eq(metric("sluice_invocation_duration_seconds_count{function=\"echo\"}"), 3);
    cr_expect_eq(metric("sluice_invocation_duration_seconds_bucket{function=\"echo\","
                        "le=\"+Inf\"}"), 3);
    cr_expect_eq(metric("sluice_invocation_duration_seconds_bucket{function=\"echo\","
                        "le=\"60\"}"), 3);
    cr_expect_eq(metric("sluice_concurrent_executions"), 0);
    /* one /healthz (start_server) and 4 invocations; a scrape counts once sent */
    cr_expect_eq(metric_in(r.body, "sluice_http_requests_total{code=\"200\"}"), 5, "%s", r.body);
    cr_expect_eq(metric_in(r.body, "sluice_http_requests_total{code=\"404\"}"), 1);
    stop_server(5000);
}

Test(api, malformed_http_leaves_the_server_up, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;
    int s;

    start_default();

    /* garbage bytes */
    s = connect_server();
    cr_assert_geq(s, 0);
    send_all(s, "\x00\xff\xfe garbage \x01\x02\r\n\r\n", 18);
    read_resp(s, &r, 5000);
    close(s);
    cr_expect_eq(r.status, 400, "garbage: %d", r.status);
    cr_expect_eq(post(INVOKE("echo"), NULL, "{\"n\":1}").status, 200, "after garbage");

    /* garbage without a line end, then close */
    s = connect_server();
    send_all(s, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11); /* a TLS hello */
    close(s);
    cr_expect_eq(get("/healthz").status, 200, "after a TLS hello");

    /* a request line of 100 KB */
    {
        size_t n = 100 * 1024;
        char *line = keep(malloc(n + 64));

        s = connect_server();
        memcpy(line, "GET /", 5);
        memset(line + 5, 'a', n);
        strcpy(line + 5 + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
        send_all(s, line, strlen(line));
        read_resp(s, &r, 5000);
        close(s);
        cr_expect(r.status == 400 || r.status == 413 || r.status == 414 || r.status == 431 ||
                  r.status == 0, "100 KB request line: %d", r.status);
    }
    cr_expect_eq(post(INVOKE("echo"), NULL, "{\"n\":2}").status, 200, "after a long line");

    /* a body shorter than its Content-Length, then close */
    s = connect_server();
    {
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 1000\r\n\r\n{\"a\":";
        send_all(s, h, strlen(h));
    }
    usleep(100000);
    close(s);
    cr_expect_eq(post(INVOKE("echo"), NULL, "{\"n\":3}").status, 200, "after a truncated body");

    /* a header line that never ends */
    s = connect_server();
    {
        char junk[8192];
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nX-Big: ";

        send_all(s, h, strlen(h));
        memset(junk, 'x', sizeof(junk));
        for (int i = 0; i < 16; i++)
            if (send_all(s, junk, sizeof(junk)) != 0)
                break;
        read_resp(s, &r, 5000);
        close(s);
        cr_expect(r.status == 400 || r.status == 431 || r.status == 0, "endless header: %d",
                  r.status);
    }

    /* two requests on one keep-alive connection */
    s = connect_server();
    {
        const char *two = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                          "\r\n[]"
                          "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        send_all(s, two, strlen(two));
        read_resp(s, &r, 10000);
        close(s);
        cr_expect_eq(r.status, 200);
        cr_expect(r.body && strstr(r.body, "HTTP/1.1 200 OK") && strstr(r.body, "\r\n\r\nok\n"),
                  "the second answer: %s", r.body ? r.body : "");
    }

    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 4,
                 "only the complete requests ran");
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Hardening item 2: a handler flooding stdout freezes nothing          */

/* GET /healthz, waiting at most `ms` for the whole answer. */
static int healthz_within(int ms)
{
    const char *req = fmt("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                          "Connection: close\r\n\r\n", port);
    struct resp r;
    int fd = connect_server();

    if (fd < 0)
        return 0;
    if (send_all(fd, req, strlen(req)) != 0) {
        close(fd);
        return 0;
    }
    read_resp(fd, &r, ms);
    close(fd);
    return r.status;
}

Test(api, output_flood_freezes_nothing_else, .init = setup, .fini = teardown, .timeout = 120)
{
    char echo[PATH_MAX + 64];
    const char *fns = fmt("functions:\n"
                          "  echo:\n    handler: %s\n"
                          "  flood:\n    handler: %s/tests/handlers/hostile_io.py\n"
                          "    timeout_s: 4\n",
                          th_build_path(echo, sizeof(echo), root_dir, "handlers/echo"),
                          root_dir);
    const char *b = "{\"action\":\"flood\"}";
    const char *h = fmt("POST " INVOKE("flood") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: %zu\r\n\r\n%s", strlen(b), b);
    double end;
    struct resp r;
    int s;

    start_server(write_config("flood.yaml", fns, NULL));
    s = connect_server();
    cr_assert_geq(s, 0);
    cr_assert_eq(send_all(s, h, strlen(h)), 0);
    /* the flood is on once its lines reach the log */
    end = now_ms() + 20000;
    while (!strstr(server_log(), "[function:flood] [") || !strstr(server_log(), "] x\n")) {
        cr_assert_lt(now_ms(), end, "the flood did not start; log:\n%.3000s", server_log());
        usleep(50000);
    }

    /* while it floods: /healthz answers within a second, echo answers */
    for (int i = 0; i < 3; i++) {
        int st = healthz_within(1000);
        cr_assert_eq(st, 200, "/healthz (try %d) did not answer within 1 s during the flood", i);
        usleep(200000);
    }
    r = post(INVOKE("echo"), NULL, "{\"during\":\"flood\"}");
    cr_expect_eq(r.status, 200, "echo during the flood: %d", r.status);
    cr_expect(r.body && strcmp(r.body, "{\"during\":\"flood\"}") == 0, "echo: %s", str_or(r.body));

    /* and the flood's own timeout still fires */
    read_resp(s, &r, 30000);
    close(s);
    cr_expect_eq(r.status, 200, "flood invocation: status %d", r.status);
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    cr_expect(r.body && strstr(r.body, "\"Sandbox.Timedout\"") != NULL, "flood: %s",
              str_or(r.body));
    /* the excess was dropped, counted and said so */
    cr_expect(strstr(server_log(), "bytes of output in ") &&
                  strstr(server_log(), " lines dropped (over output_kb_per_s: 1024)"),
              "no drop report in the log (%zu bytes)", strlen(server_log()));
    stop_server(5000);
}

Test(api, client_that_leaves_does_not_stop_the_invocation, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *b = "{\"sleep_ms\":1000}";
    const char *h = fmt("POST " INVOKE("slow") " HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: %zu\r\n\r\n%s", strlen(b), b);
    int s;

    start_default();
    s = connect_server();
    cr_assert_geq(s, 0);
    cr_assert_eq(send_all(s, h, strlen(h)), 0);
    cr_assert_eq(wait_metric("sluice_function_concurrent_executions{function=\"slow\"}", 1,
                             10000), 1, "the invocation did not start");
    close(s);
    cr_expect_eq(wait_metric("sluice_invocations_total{function=\"slow\"}", 1, 10000), 1,
                 "the invocation did not finish; log:\n%s", server_log());
    cr_expect_eq(metric("sluice_function_concurrent_executions{function=\"slow\"}"), 0);
    /* the function and the server go on */
    cr_expect_eq(post(INVOKE("slow"), NULL, "{\"sleep_ms\":1}").status, 200);
    cr_expect_eq(get("/healthz").status, 200);
    stop_server(5000);
}

Test(api, sigterm_finishes_in_flight_and_refuses_new, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *b = "{\"sleep_ms\":2000}";
    const char *h = fmt("POST " INVOKE("slow") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: %zu\r\n\r\n%s", strlen(b), b);
    struct resp r;
    double end;
    int s, st = 0;
    pid_t w = 0;

    start_default();
    cr_expect_eq(get("/readyz").status, 200);
    s = connect_server();
    cr_assert_geq(s, 0);
    cr_assert_eq(send_all(s, h, strlen(h)), 0);
    cr_assert_eq(wait_metric("sluice_function_concurrent_executions{function=\"slow\"}", 1,
                             10000), 1, "the invocation did not start");

    cr_assert_eq(kill(server, SIGTERM), 0);
    usleep(200000);
    r = get("/readyz");
    cr_expect_eq(r.status, 503, "/readyz while stopping: %d", r.status);
    r = post(INVOKE("echo"), NULL, "{}");
    expect_error(&r, 503, "ServiceException", "an invocation while stopping");
    cr_expect_not_null(header(&r, "Retry-After"));
    cr_expect_eq(get("/healthz").status, 200, "/healthz while stopping");

    read_resp(s, &r, 15000);
    close(s);
    cr_expect_eq(r.status, 200, "the in-flight invocation got %d", r.status);
    cr_expect(r.body && strstr(r.body, "\"slept_ms\": 2000") != NULL, "%s",
              r.body ? r.body : "");

    end = now_ms() + 5000;
    while (now_ms() < end && (w = waitpid(server, &st, WNOHANG)) == 0)
        usleep(20000);
    cr_assert_eq(w, server, "still running 5 s after the invocation ended");
    server = -1;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}

Test(api, invocations_cut_by_shutdown_grace_get_503, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *b = "{\"sleep_ms\":8000}";
    const char *h = fmt("POST " INVOKE("slow") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: %zu\r\n\r\n%s", strlen(b), b);
    struct resp r;
    double end;
    int s, st = 0;
    pid_t w = 0;

    start_server(write_config("grace.yaml", functions_yaml(), "  shutdown_grace_s: 1\n"));
    s = connect_server();
    cr_assert_geq(s, 0);
    cr_assert_eq(send_all(s, h, strlen(h)), 0);
    cr_assert_eq(wait_metric("sluice_function_concurrent_executions{function=\"slow\"}", 1,
                             10000), 1, "the invocation did not start");
    cr_assert_eq(kill(server, SIGTERM), 0);
    read_resp(s, &r, 10000);
    close(s);
    expect_error(&r, 503, "ServiceException", "an invocation still running after the grace");
    cr_expect(r.body && strstr(r.body, "shutdown_grace_s") != NULL, "%s", r.body ? r.body : "");

    end = now_ms() + 5000;
    while (now_ms() < end && (w = waitpid(server, &st, WNOHANG)) == 0)
        usleep(20000);
    cr_assert_eq(w, server, "still running 5 s after the grace ran out");
    server = -1;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d; log:\n%s", st,
              server_log());
}

Test(api, busy_port_is_a_clear_error, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *cfg2 = write_config("second.yaml", functions_yaml(), NULL);
    const char *log2 = fmt("%s/second.log", dir);
    double end = now_ms() + 15000;
    pid_t two;
    int st = 0;
    pid_t w = 0;

    start_default();
    two = spawn_sluice(cfg2, log2);
    while (now_ms() < end && (w = waitpid(two, &st, WNOHANG)) == 0)
        usleep(50000);
    if (w == 0) {
        kill(two, SIGKILL);
        waitpid(two, NULL, 0);
    }
    cr_assert_eq(w, two, "a second sluice on the same port kept running");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
    cr_expect(strstr(slurp(log2), fmt("cannot listen on 127.0.0.1:%d (server.listen): Address "
                                      "already in use", port)) != NULL,
              "log:\n%s", slurp(log2));
    cr_expect_eq(get("/healthz").status, 200, "the first one is unharmed");
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Tokens                                                              */

Test(api, auth_tokens, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *all = "tok-all-5f2b9c1e7d";
    const char *outfile = fmt("%s/out.json", dir);
    struct resp r;
    char *out;
    int code;

    setenv("SLUICE_TEST_TOKEN_ALL", all, 1);
    start_server(write_config("auth.yaml", functions_yaml(),
                              "  auth:\n"
                              "    ${SLUICE_TEST_TOKEN_ALL}: \"*\"\n"
                              "    tok-fail-only-8a7e: \"fail, slow\"\n"));

    r = post(INVOKE("echo"), NULL, "{}");
    expect_error(&r, 401, "MissingAuthenticationTokenException", "no token");
    cr_expect_not_null(header(&r, "WWW-Authenticate"));
    r = post(INVOKE("echo"), "Authorization: Bearer wrong-token\r\n", "{}");
    expect_error(&r, 401, "UnrecognizedClientException", "unknown token");
    r = post(INVOKE("echo"), "Authorization: Basic dXNlcjpwYXNz\r\n", "{}");
    expect_error(&r, 401, "UnrecognizedClientException", "basic auth");
    r = post(INVOKE("echo"), fmt("Authorization: Bearer %.8s\r\n", all), "{}");
    expect_error(&r, 401, "UnrecognizedClientException", "a prefix of a token");
    r = post(INVOKE("echo"), "Authorization: Bearer tok-fail-only-8a7e\r\n", "{}");
    expect_error(&r, 403, "AccessDeniedException", "token for other functions");
    r = post(INVOKE("nope"), "Authorization: Bearer tok-fail-only-8a7e\r\n", "{}");
    expect_error(&r, 403, "AccessDeniedException", "token, unknown function");

    r = post(INVOKE("fail"), "Authorization: Bearer tok-fail-only-8a7e\r\n", "{}");
    cr_expect_eq(r.status, 200, "allowed function: %d %s", r.status, r.body ? r.body : "");
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    r = post(INVOKE("echo"), fmt("Authorization: Bearer %s\r\n", all), "{\"ok\":1}");
    cr_expect_eq(r.status, 200, "token from ${VAR}: %d %s", r.status, r.body ? r.body : "");
    r = post(INVOKE("nope"), fmt("Authorization: bearer %s\r\n", all), "{}");
    expect_error(&r, 404, "ResourceNotFoundException", "'*' token, unknown function");

    /* health and metrics stay open */
    cr_expect_eq(get("/healthz").status, 200);
    cr_expect_eq(get("/readyz").status, 200);
    cr_expect_eq(get("/metrics").status, 200);

    /* a bearer token is not an access key id: the old "key id is the
     * secret" way is refused */
    code = aws_invoke("--function-name echo --cli-binary-format raw-in-base64-out "
                      "--payload '{\"cli\":1}'", outfile, &out);
    cr_expect_neq(code, 0, "the CLI with key id x was let in: %s", out);
    cr_expect(strstr(out, "UnrecognizedClientException") != NULL, "%s", out);
    code = sh(fmt("env AWS_ACCESS_KEY_ID=%s %s lambda invoke --endpoint-url http://127.0.0.1:%d "
                  "--function-name echo --cli-binary-format raw-in-base64-out "
                  "--payload '{\"cli\":2}' '%s'", all, aws_cli(), port, outfile), &out);
    cr_expect_neq(code, 0, "the CLI with a bearer token as key id was let in: %s", out);
    cr_expect(strstr(out, "UnrecognizedClientException") != NULL, "%s", out);

    cr_expect(strstr(server_log(), all) == NULL, "a token was logged:\n%s", server_log());
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 1);
    stop_server(5000);
}

/* server.auth key pairs: AWS Signature Version 4 verified for real. */
Test(api, auth_sigv4_key_pairs, .init = setup, .fini = teardown, .timeout = 180)
{
    const char *key = "AKIDSLUICETEST0001", *secret = "s3cr3t/Key+9b1fe0c2d7a4";
    const char *outfile = fmt("%s/out.json", dir), *secret_file = fmt("%s/secret", dir);
    char *out;
    int code;

    aws_env();
    put_file(secret_file, "file-secret-7d1e\n", 0600);
    setenv("SLUICE_TEST_SECRET", secret, 1);
    start_server(write_config("sigv4.yaml", functions_yaml(),
                              fmt("  auth:\n"
                                  "    tok-bearer-3c9a: \"*\"\n"
                                  "    %s:\n"
                                  "      secret_access_key: ${SLUICE_TEST_SECRET}\n"
                                  "      functions: \"echo, slow\"\n"
                                  "    AKIDFROMFILE0002:\n"
                                  "      secret_access_key_file: %s\n"
                                  "      functions: \"*\"\n", key, secret_file)));

    /* the AWS CLI with the right secret */
    code = sh(fmt("env AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY='%s' %s lambda invoke "
                  "--endpoint-url http://127.0.0.1:%d --function-name echo "
                  "--cli-binary-format raw-in-base64-out --payload '{\"sig\":1}' '%s'",
                  key, secret, aws_cli(), port, outfile), &out);
    cr_expect_eq(code, 0, "signed with the right secret: %s\nlog:\n%s", out, server_log());
    cr_expect_str_eq(slurp(outfile), "{\"sig\":1}");
    /* an ARN as the name (percent-encoded in the path) and a qualifier in the query */
    code = sh(fmt("env AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY='%s' %s lambda invoke "
                  "--endpoint-url http://127.0.0.1:%d "
                  "--function-name arn:aws:lambda:us-east-1:000000000000:function:echo "
                  "--qualifier '$LATEST' --cli-binary-format raw-in-base64-out "
                  "--payload '{\"sig\":2}' '%s'", key, secret, aws_cli(), port, outfile), &out);
    cr_expect_eq(code, 0, "ARN and qualifier: %s", out);
    /* the secret from a file */
    code = sh(fmt("env AWS_ACCESS_KEY_ID=AKIDFROMFILE0002 AWS_SECRET_ACCESS_KEY=file-secret-7d1e "
                  "%s lambda invoke --endpoint-url http://127.0.0.1:%d --function-name fail "
                  "--cli-binary-format raw-in-base64-out --payload '{}' '%s'", aws_cli(), port,
                  outfile), &out);
    cr_expect_eq(code, 0, "secret_access_key_file: %s", out);
    /* curl's own SigV4 */
    code = sh(fmt("curl -s -o '%s' -w '%%{http_code}' --aws-sigv4 aws:amz:eu-west-1:lambda "
                  "--user '%s:%s' -H 'Content-Type: application/json' --data '{\"curl\":1}' "
                  "http://127.0.0.1:%d" INVOKE("echo"), outfile, key, secret, port), &out);
    cr_expect_eq(code, 0, "%s", out);
    cr_expect_str_eq(out, "200", "curl --aws-sigv4: %s", slurp(outfile));

    /* the wrong secret, a key for other functions, a bearer token as key id */
    code = sh(fmt("env AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=wrong %s lambda invoke "
                  "--endpoint-url http://127.0.0.1:%d --function-name echo "
                  "--cli-binary-format raw-in-base64-out --payload '{}' '%s'", key, aws_cli(),
                  port, outfile), &out);
    cr_expect_neq(code, 0, "the wrong secret was let in: %s", out);
    cr_expect(strstr(out, "InvalidSignatureException") != NULL, "%s", out);
    code = sh(fmt("env AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY='%s' %s lambda invoke "
                  "--endpoint-url http://127.0.0.1:%d --function-name fail "
                  "--cli-binary-format raw-in-base64-out --payload '{}' '%s'", key, secret,
                  aws_cli(), port, outfile), &out);
    cr_expect_neq(code, 0, "%s", out);
    cr_expect(strstr(out, "AccessDeniedException") != NULL, "%s", out);
    code = sh(fmt("env AWS_ACCESS_KEY_ID=tok-bearer-3c9a AWS_SECRET_ACCESS_KEY=x %s lambda "
                  "invoke --endpoint-url http://127.0.0.1:%d --function-name echo "
                  "--cli-binary-format raw-in-base64-out --payload '{}' '%s'", aws_cli(), port,
                  outfile), &out);
    cr_expect_neq(code, 0, "a bearer token as key id was let in: %s", out);
    cr_expect(strstr(out, "UnrecognizedClientException") != NULL, "%s", out);
    /* a key pair's id is not a bearer token */
    {
        struct resp r = post(INVOKE("echo"), fmt("Authorization: Bearer %s\r\n", key), "{}");
        expect_error(&r, 401, "UnrecognizedClientException", "key id as bearer token");
    }
    /* a signature a day old */
    {
        struct resp r = post(INVOKE("echo"),
                             fmt("X-Amz-Date: 20200101T000000Z\r\nAuthorization: "
                                 "AWS4-HMAC-SHA256 Credential=%s/20200101/us-east-1/lambda/"
                                 "aws4_request, SignedHeaders=host;x-amz-date, Signature=%064d\r\n",
                                 key, 0), "{}");
        expect_error(&r, 403, "InvalidSignatureException", "old signature");
        cr_expect(r.body && strstr(r.body, "expired"), "%s", r.body ? r.body : "");
    }
    cr_expect(strstr(server_log(), secret) == NULL, "a secret was logged");
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 3);
    cr_expect_eq(metric("sluice_invocations_total{function=\"fail\"}"), 1);
    stop_server(5000);
}

/* An unauthenticated invocation is answered on its headers: its body is
 * never waited for nor read. */
Test(api, auth_is_checked_before_the_body, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;
    int s;

    start_server(write_config("gate.yaml", functions_yaml(),
                              "  auth:\n    tok-gate-1f: \"*\"\n"));
    /* 6 MB announced, none sent: the answer comes anyway */
    s = connect_server();
    cr_assert_geq(s, 0);
    {
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 6000000\r\n\r\n";
        send_all(s, h, strlen(h));
    }
    read_resp(s, &r, 10000);
    close(s);
    expect_error(&r, 401, "MissingAuthenticationTokenException", "no token, body withheld");
    /* a wrong token, the body still coming */
    s = connect_server();
    {
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\n"
                        "Authorization: Bearer nope\r\nContent-Length: 6000000\r\n\r\n{\"a\":";
        send_all(s, h, strlen(h));
    }
    read_resp(s, &r, 10000);
    close(s);
    expect_error(&r, 401, "UnrecognizedClientException", "wrong token, body withheld");
    /* routes that take no body refuse a big one at once */
    s = connect_server();
    {
        const char *h = "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\n";
        send_all(s, h, strlen(h));
    }
    read_resp(s, &r, 10000);
    close(s);
    expect_error(&r, 413, "RequestTooLargeException", "a body for /healthz");
    /* ambiguous framing is refused */
    r = http("POST", INVOKE("echo"), "Transfer-Encoding: chunked\r\n"
             "Authorization: Bearer tok-gate-1f\r\n", "{}", 2);
    expect_error(&r, 400, "BadRequestException", "Content-Length and chunked");
    /* and the rightful one still goes through, chunked too */
    r = post(INVOKE("echo"), "Authorization: Bearer tok-gate-1f\r\n", "{\"ok\":1}");
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body ? r.body : "");
    s = connect_server();
    {
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Authorization: Bearer tok-gate-1f\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "4\r\n{\"c\"\r\n3\r\n:2}\r\n0\r\n\r\n";
        send_all(s, h, strlen(h));
    }
    read_resp(s, &r, 10000);
    close(s);
    cr_expect_eq(r.status, 200, "chunked: %d", r.status);
    cr_expect(r.body && strstr(r.body, "{\"c\":2}"), "%s", r.body ? r.body : "");
    cr_expect_eq(metric("sluice_invocations_total{function=\"echo\"}"), 2);
    stop_server(5000);
}

/* Idle connections neither exhaust descriptors nor lock out a client:
 * with the open-file limit at 256, 300 connections that send nothing,
 * then an authorized invocation is answered (the old server spun on
 * EMFILE and never accepted it). */
Test(api, idle_connections_do_not_lock_out, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *cfg = write_config("idle.yaml", functions_yaml(),
                                   "  auth:\n    tok-idle-77: \"*\"\n");
    struct rlimit rl = { 256, 256 }, old;
    int idle[300], n = 0;
    struct resp r;

    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* the child inherits the soft limit; the test takes its own back */
    rl.rlim_max = old.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    start_server(cfg);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    for (int i = 0; i < 300; i++) {
        int s = connect_server();
        if (s >= 0)
            idle[n++] = s;
    }
    cr_expect_eq(n, 300);
    usleep(200000);
    {
        int s = connect_server();
        const char *req = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Authorization: Bearer tok-idle-77\r\nContent-Length: 7\r\n\r\n{\"i\":1}";

        cr_assert_geq(s, 0);
        send_all(s, req, strlen(req));
        read_resp(s, &r, 2000);
        close(s);
    }
    cr_expect_eq(r.status, 200, "the invocation after 300 idle connections: %d; log:\n%.3000s",
                 r.status, server_log());
    for (int i = 0; i < n; i++)
        close(idle[i]);
    cr_expect(strlen(server_log()) < 200000, "the log grew to %zu bytes",
              strlen(server_log()));
    stop_server(5000);
}

/* server.max_connections: beyond it, with every connection busy on a
 * request, a new one is answered 503 TooManyRequestsException. */
Test(api, connections_beyond_the_cap_get_503, .init = setup, .fini = teardown, .timeout = 120)
{
    int busy[3];
    struct resp r;

    start_server(write_config("cap.yaml", functions_yaml(),
                              "  max_connections: 3\n  header_timeout_s: 1\n"));
    /* three connections with a request head in and a body pending */
    for (int i = 0; i < 3; i++) {
        const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
        busy[i] = connect_server();
        cr_assert_geq(busy[i], 0);
        send_all(busy[i], h, strlen(h));
    }
    usleep(200000);
    r = get("/healthz");
    expect_error(&r, 503, "TooManyRequestsException", "the fourth connection");
    cr_expect_not_null(header(&r, "Retry-After"));
    for (int i = 0; i < 3; i++)
        close(busy[i]);
    usleep(300000);
    cr_expect_eq(get("/healthz").status, 200, "after they closed");
    /* a connection that sends no head within header_timeout_s is closed */
    {
        int s = connect_server();
        double t0 = now_ms();

        read_resp(s, &r, 10000);
        close(s);
        cr_expect_eq(r.status, 408, "a silent connection: %d", r.status);
        cr_expect_lt(now_ms() - t0, 9000);
    }
    stop_server(5000);
}

/* server.body_timeout_s: a client that stops sending its body is cut off
 * once the timeout runs out, not after evhttp's minute. */
Test(api, a_stalled_body_is_cut_off, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *h = "POST " INVOKE("echo") " HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a";
    char buf[512];
    double t0;
    ssize_t n = 1;
    int s;

    start_server(write_config("body.yaml", functions_yaml(), "  body_timeout_s: 1\n"));
    s = connect_server();
    cr_assert_geq(s, 0);
    send_all(s, h, strlen(h));
    t0 = now_ms();
    /* nothing more is sent: the gate closes the connection (EOF, or a reset) */
    while (n > 0 && now_ms() - t0 < 20000) {
        struct pollfd pfd = { .fd = s, .events = POLLIN };

        if (poll(&pfd, 1, 500) > 0)
            n = recv(s, buf, sizeof(buf), 0);
    }
    close(s);
    cr_expect_leq(n, 0, "the connection is still open after 20 s");
    cr_expect_geq(now_ms() - t0, 800, "closed before the body timeout");
    cr_expect_lt(now_ms() - t0, 10000, "closed only after %.0f ms", now_ms() - t0);
    cr_expect_eq(get("/healthz").status, 200, "the server goes on");
    stop_server(5000);
}

/* server.metrics_auth */
Test(api, metrics_can_require_a_token, .init = setup, .fini = teardown, .timeout = 60)
{
    struct resp r;

    setenv("SLUICE_TEST_METRICS", "tok-metrics-e3", 1);
    start_server(write_config("metrics.yaml", functions_yaml(),
                              "  metrics_auth: ${SLUICE_TEST_METRICS}\n"));
    r = get("/metrics");
    expect_error(&r, 401, "MissingAuthenticationTokenException", "/metrics without the token");
    r = http("GET", "/metrics", "Authorization: Bearer wrong\r\n", "", 0);
    cr_expect_eq(r.status, 401);
    r = http("GET", "/metrics", "Authorization: Bearer tok-metrics-e3\r\n", "", 0);
    cr_expect_eq(r.status, 200);
    cr_expect(r.body && strstr(r.body, "sluice_http_requests_total"), "%s",
              r.body ? r.body : "");
    cr_expect_eq(get("/healthz").status, 200, "health stays open");
    /* invocations stay open: no server.auth */
    cr_expect_eq(post(INVOKE("echo"), NULL, "{}").status, 200);
    stop_server(5000);
}

Test(api, auth_config_is_checked, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *cfg;
    char *out;
    int code;

    unsetenv("SLUICE_TEST_UNSET_TOKEN");
    cfg = write_config("badauth.yaml", functions_yaml(),
                       "  auth:\n"
                       "    secret-one-77: \"echo, nosuch\"\n"
                       "    ${SLUICE_TEST_UNSET_TOKEN}: \"*\"\n"
                       "    \"${SLUICE_TEST_UNSET_TOKEN:-}\": \"*\"\n"
                       "    secret two: \"echo\"\n"
                       "    secret-three-99: \",\"\n");
    code = sh(fmt("%s lint '%s'", sluice_bin(), cfg), &out);
    cr_expect_eq(code, 1, "%s", out);
    cr_expect(strstr(out, "token 1 allows 'nosuch', which is not a function") != NULL, "%s", out);
    cr_expect(strstr(out, "token 2: ") != NULL && strstr(out, "SLUICE_TEST_UNSET_TOKEN") != NULL,
              "%s", out);
    cr_expect(strstr(out, "token 3 is empty") != NULL, "%s", out);
    cr_expect(strstr(out, "token 4 contains a space") != NULL, "%s", out);
    cr_expect(strstr(out, "token 5 allows no function") != NULL, "%s", out);
    cr_expect(strstr(out, "secret") == NULL, "a token is in the output:\n%s", out);

    setenv("SLUICE_TEST_DUP", "same-token-1", 1);
    cfg = write_config("dupauth.yaml", functions_yaml(),
                       "  auth:\n"
                       "    same-token-1: \"echo\"\n"
                       "    ${SLUICE_TEST_DUP}: \"fail\"\n");
    code = sh(fmt("%s lint '%s'", sluice_bin(), cfg), &out);
    cr_expect_eq(code, 1, "%s", out);
    cr_expect(strstr(out, "tokens 1 and 2 are the same") != NULL, "%s", out);
    cr_expect(strstr(out, "same-token") == NULL, "a token is in the output:\n%s", out);
}

/* A family with two labels renders one label per dimension, values escaped,
 * in the text format Prometheus parses; bad label specs are refused. */
Test(api, metrics_render_several_labels)
{
    struct sl_metrics *m = sl_metrics_new();
    struct sl_metric *f = sl_metrics_family(m, "sluice_t_total", SL_METRIC_COUNTER, "t.",
                                            "source,outcome");
    struct sl_metric *h = sl_metrics_family(m, "sluice_t_seconds", SL_METRIC_HISTOGRAM, "h.",
                                            "source,kind");
    struct evbuffer *b = evbuffer_new();
    char *text;

    cr_assert_not_null(f);
    cr_assert_not_null(h);
    sl_metric_add(f, "jobs" SL_METRIC_LV_SEP "received", 3);
    sl_metric_add(f, "a\"b" SL_METRIC_LV_SEP "x\\y", 1);
    sl_metric_add(f, "only-one-part", 2);
    sl_metric_observe(h, "jobs" SL_METRIC_LV_SEP "cold", 0.002);
    cr_assert_null(sl_metrics_family(m, "sluice_u", SL_METRIC_GAUGE, "u.", "a,a"));
    cr_assert_null(sl_metrics_family(m, "sluice_v", SL_METRIC_GAUGE, "v.", "a,,b"));
    cr_assert_null(sl_metrics_family(m, "sluice_w", SL_METRIC_GAUGE, "w.", "a,"));
    cr_assert_null(sl_metrics_family(m, "sluice_x", SL_METRIC_HISTOGRAM, "x.", "a,le"));
    cr_assert_null(sl_metrics_family(m, "sluice_y", SL_METRIC_GAUGE, "y.", "a,b,c,d,e"));
    sl_prom_render(m, b);
    evbuffer_add(b, "", 1);
    text = (char *)evbuffer_pullup(b, -1);
    cr_expect(strstr(text, "sluice_t_total{source=\"jobs\",outcome=\"received\"} 3\n"), "%s", text);
    cr_expect(strstr(text, "sluice_t_total{source=\"a\\\"b\",outcome=\"x\\\\y\"} 1\n"), "%s", text);
    cr_expect(strstr(text, "sluice_t_total{source=\"only-one-part\",outcome=\"\"} 2\n"), "%s",
              text);
    cr_expect(strstr(text, "sluice_t_seconds_bucket{source=\"jobs\",kind=\"cold\",le=\"0.0025\"} 1\n"),
              "%s", text);
    cr_expect(strstr(text, "sluice_t_seconds_count{source=\"jobs\",kind=\"cold\"} 1\n"), "%s",
              text);
    cr_expect_null(strstr(text, "\x1f"), "%s", text);
    evbuffer_free(b);
    sl_metrics_free(m);
}
