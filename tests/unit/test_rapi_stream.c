/* Response streaming end to end: `$BUILD/sluice run` as a child process, a
 * `runtime: lambda` function whose bootstrap streams its responses the way
 * Lambda's streaming runtimes do (tests/handlers/rapi_stream.c:
 * Lambda-Runtime-Function-Response-Mode: streaming, chunked, error
 * trailers, and hostile variants), read by boto3's
 * invoke_with_response_stream unchanged (the Powertools layer's boto3 from
 * tests/deps) and by a raw client here for what boto3 cannot do (read
 * slowly, hang up mid-stream).
 *
 * Needs root (sandboxes with a network namespace each), $BUILD (make) and
 * tests/deps. Run from the repository root. SLUICE_TEST_LOG=1 copies
 * sluice's log to stderr when a test ends. */
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
#include <stdint.h>
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
#define STREAM(fn) "/2021-11-15/functions/" fn "/response-streaming-invocations"
#define STREAM_MAX (20 * 1024 * 1024)     /* Lambda's streamed response limit */

#define RH_NAME "rapi-stream"
#include "rapi_harness.h"


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *fixture(const char *name)
{
    return fmt("%s/tests/unit/fixtures/rapi/%s", root_dir, name);
}

/* The streaming runtime, copied next to the configuration: its directory
 * is the function's code (/var/task), where the tests drop release files. */
static void start_stream_fn(const char *extra)
{
    char src[PATH_MAX + 64];
    const char *cfg;

    th_build_path(src, sizeof(src), root_dir, "test-handlers/rapi_stream");
    cr_assert_eq(access(src, X_OK), 0, "%s missing: make all", src);
    cr_assert_eq(system(fmt("cp '%s' '%s/rapi_stream'", src, dir)), 0);
    cfg = write_config("stream.yaml", fmt("functions:\n  st:\n    runtime: lambda\n"
                                          "    handler: %s/rapi_stream\n    timeout_s: 60\n%s",
                                          dir, extra ? extra : ""), NULL);
    start_server(cfg);
}

/* ------------------------------------------------------------------ */
/* boto3's invoke_with_response_stream (tests/unit/fixtures/rapi/      */
/* stream_client.py)                                                   */

struct streamed {
    json_t     *lines;      /* every line the client printed, parsed */
    int         status;     /* StatusCode */
    const char *request_id;
    const char *error;      /* what boto3 raised, or NULL */
    int         chunks;     /* PayloadChunk events */
    const char *first;      /* the first one's text */
    char        text[8192]; /* all of them (each cut at 4000 characters) */
    long long   total;      /* payload bytes */
    json_t     *complete;   /* InvokeComplete, NULL if none */
};

static struct streamed boto(const char *fn, const char *payload, const char *release)
{
    struct streamed s = { 0 };
    const char *layer = fmt("%s/tests/.layers/powertools/python", root_dir);
    const char *cmd;
    char line[16384];
    size_t tlen = 0;
    FILE *p;

    cr_assert_eq(access(fmt("%s/boto3", layer), R_OK), 0, "%s: run tests/deps", layer);
    cmd = fmt("PYTHONPATH='%s' /usr/bin/python3 '%s' http://127.0.0.1:%d '%s' '%s' %s 2>&1", layer,
              fixture("stream_client.py"), port, fn, payload, release ? release : "");
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    s.lines = json_array();
    while (fgets(line, sizeof(line), p)) {
        json_t *j = json_loads(line, 0, NULL), *v;

        cr_assert_not_null(j, "stream_client.py printed: %s; log:\n%s", line, server_log());
        json_array_append_new(s.lines, j);
        if ((v = json_object_get(j, "status"))) {
            s.status = (int)json_integer_value(v);
            s.request_id = json_string_value(json_object_get(j, "request_id"));
        } else if ((v = json_object_get(j, "chunk"))) {
            const char *t = json_string_value(v);
            s.chunks++;
            s.total += json_integer_value(json_object_get(j, "len"));
            if (!s.first)
                s.first = t;
            if (tlen + strlen(t) < sizeof(s.text)) {
                memcpy(s.text + tlen, t, strlen(t) + 1);
                tlen += strlen(t);
            }
        } else if ((v = json_object_get(j, "complete"))) {
            s.complete = v;
        } else if ((v = json_object_get(j, "error"))) {
            s.error = json_string_value(v);
        }
    }
    pclose(p);
    return s;
}

static const char *complete_str(const struct streamed *s, const char *key)
{
    return json_string_value(json_object_get(s->complete, key));
}

/* 200, InvokeComplete there, and no error in it. */
static void expect_ok(const struct streamed *s, const char *what)
{
    cr_assert_null(s->error, "%s: boto3 raised %s; log:\n%s", what, s->error, server_log());
    cr_assert_eq(s->status, 200, "%s: status %d", what, s->status);
    cr_assert_not_null(s->complete, "%s: no InvokeComplete; log:\n%s", what, server_log());
    cr_expect_null(complete_str(s, "ErrorCode"), "%s: ErrorCode %s: %s", what,
                   complete_str(s, "ErrorCode"), complete_str(s, "ErrorDetails"));
}

/* 200, the stream ended by InvokeComplete with `code`. */
static void expect_code(const struct streamed *s, const char *what, const char *code)
{
    cr_assert_null(s->error, "%s: boto3 raised %s; log:\n%s", what, s->error, server_log());
    cr_assert_eq(s->status, 200, "%s: status %d", what, s->status);
    cr_assert_not_null(s->complete, "%s: no InvokeComplete; log:\n%s", what, server_log());
    cr_expect_str_eq(complete_str(s, "ErrorCode") ? complete_str(s, "ErrorCode") : "(none)",
                     code, "%s: ErrorDetails %s; log:\n%s", what,
                     complete_str(s, "ErrorDetails") ? complete_str(s, "ErrorDetails") : "",
                     server_log());
}

/* The runtime's own record (/tmp/r in its sandbox) and how many
 * invocations its process has served (the same env all along). */
static const char *report(void)
{
    struct resp r = post(INVOKE("st"), NULL, "{\"do\":\"report\"}");

    cr_assert_eq(r.status, 200, "report: %d; log:\n%s", r.status, server_log());
    return fmt("%.*s", (int)r.blen, r.body);
}

static int served(void)
{
    struct resp r = post(INVOKE("st"), NULL, "{\"do\":\"headers\"}");

    cr_assert_eq(r.status, 200, "headers: %d; log:\n%s", r.status, server_log());
    cr_assert(r.blen > 8 && strncmp(r.body, "served: ", 8) == 0, "%.*s", (int)r.blen, r.body);
    return atoi(r.body + 8);
}

/* ------------------------------------------------------------------ */
/* A raw client: reads the event stream when the test says so          */

struct rd {
    int    fd;
    char   buf[65536];
    size_t off, len;
    char  *es;              /* event-stream bytes not yet decoded */
    size_t es_len, es_cap;
};

static int rd_fill(struct rd *r)
{
    struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
    ssize_t n;

    if (r->off == r->len)
        r->off = r->len = 0;
    if (r->len == sizeof(r->buf))
        return 1;
    if (poll(&pfd, 1, 30000) <= 0)
        return 0;
    n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
    if (n <= 0)
        return 0;
    r->len += (size_t)n;
    return 1;
}

/* One CRLF line into `out` (without it). */
static int rd_line(struct rd *r, char *out, size_t n)
{
    size_t k = 0;

    for (;;) {
        if (r->off == r->len && !rd_fill(r))
            return 0;
        char ch = r->buf[r->off++];
        if (ch == '\n') {
            if (k && out[k - 1] == '\r')
                k--;
            out[k] = '\0';
            return 1;
        }
        if (k + 1 < n)
            out[k++] = ch;
    }
}

/* POST `payload` to InvokeWithResponseStream; the answer's head read.
 * `rcvbuf`: the socket's receive buffer (small: a slow reader's kernel
 * holds little). */
static struct rd *stream_open(const char *fn, const char *payload, int rcvbuf, char *id,
                              size_t idn)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct rd *r = (struct rd *)(void *)keep(calloc(1, sizeof(*r)));
    const char *req = fmt("POST " STREAM("%s") " HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                          "Content-Length: %zu\r\n\r\n%s", fn, port, strlen(payload), payload);
    char line[1024];
    int status = 0;

    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(r->fd, 0);
    if (rcvbuf)
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(send_all(r->fd, req, strlen(req)), 0);
    cr_assert(rd_line(r, line, sizeof(line)), "no answer; log:\n%s", server_log());
    cr_assert(sscanf(line, "HTTP/1.1 %d", &status) == 1 && status == 200, "%s; log:\n%s", line,
              server_log());
    id[0] = '\0';
    while (rd_line(r, line, sizeof(line)) && line[0]) {
        if (strncasecmp(line, "X-Amzn-RequestId: ", 18) == 0)
            snprintf(id, idn, "%.60s", line + 18);
        if (strncasecmp(line, "Content-Type: ", 14) == 0)
            cr_expect_str_eq(line + 14, "application/vnd.amazon.eventstream");
    }
    return r;
}

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* The next event: its :event-type in `type`, its payload at *p (valid
 * until the next call), *n bytes. 0 at the end of the answer. */
static int next_event(struct rd *r, char *type, size_t tn, const char **p, size_t *n)
{
    static size_t consumed;

    if (consumed) {
        memmove(r->es, r->es + consumed, r->es_len - consumed);
        r->es_len -= consumed;
        consumed = 0;
    }
    while (r->es_len < 12 || r->es_len < be32(r->es)) {
        char line[128];
        size_t sz, got = 0;

        if (!rd_line(r, line, sizeof(line)))
            return 0;
        sz = strtoul(line, NULL, 16);
        if (sz == 0)
            return 0;
        if (r->es_len + sz > r->es_cap) {
            r->es_cap = (r->es_len + sz) * 2;
            r->es = realloc(r->es, r->es_cap);
            cr_assert_not_null(r->es);
        }
        while (got < sz) {
            size_t k;
            if (r->off == r->len && !rd_fill(r))
                return 0;
            k = r->len - r->off < sz - got ? r->len - r->off : sz - got;
            memcpy(r->es + r->es_len + got, r->buf + r->off, k);
            r->off += k;
            got += k;
        }
        r->es_len += sz;
        rd_line(r, line, sizeof(line)); /* the chunk's CRLF */
    }
    {
        uint32_t total = be32(r->es), hl = be32(r->es + 4);
        const char *h = r->es + 12, *end = h + hl;

        cr_assert(total >= 16 + hl, "a malformed event-stream message");
        type[0] = '\0';
        while (h < end) {
            size_t nl = (unsigned char)h[0], vl;
            const char *name = h + 1;
            vl = (size_t)((unsigned char)name[nl + 1] << 8 | (unsigned char)name[nl + 2]);
            if (nl == 11 && memcmp(name, ":event-type", 11) == 0)
                snprintf(type, tn, "%.*s", (int)vl, name + nl + 3);
            h = name + nl + 3 + vl;
        }
        *p = end;
        *n = total - 16 - hl;
        consumed = total;
    }
    return 1;
}

static void rd_close(struct rd *r)
{
    close(r->fd);
    free(r->es);
}

/* A sample of /metrics (`series` with its labels), -1 when absent. */
static double metric(const char *series)
{
    struct resp r = get("/metrics");
    const char *p = r.body;
    size_t n = strlen(series);

    cr_assert_eq(r.status, 200);
    while (p && *p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */

Test(rapi_stream, boto3_gets_each_chunk_while_the_function_still_runs, .init = setup,
     .fini = teardown, .timeout = 120)
{
    const char *release = fmt("%s/go-1", dir);
    struct streamed s;

    start_stream_fn(NULL);
    /* the runtime sends "second " only once go-1 exists, and the client
     * creates go-1 only once it has decoded the first PayloadChunk */
    s = boto("st", "{\"do\":\"stream\",\"parts\":[\"first \",\"second \",\"third\"],"
                   "\"wait\":\"go-1\"}", release);
    expect_ok(&s, "stream");
    cr_expect_str_eq(s.first ? s.first : "(none)", "first ");
    cr_expect_str_eq(s.text, "first second third", "every chunk, in order: %s",
                     json_dumps(s.lines, JSON_COMPACT));
    cr_expect_geq(s.chunks, 2, "the first chunk came alone");
    cr_expect_not_null(s.request_id);
    cr_expect_eq(access(release, F_OK), 0);
    cr_expect(strstr(report(), "stream: HTTP/1.1 202 Accepted"), "%s", report());
    stop_server(5000);
}

Test(rapi_stream, error_trailers_reach_invoke_complete, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct streamed s;
    struct resp r;
    json_t *j;

    start_stream_fn(NULL);
    s = boto("st", "{\"do\":\"trailer-error\"}", NULL);
    expect_code(&s, "trailer-error", "StreamError");
    cr_expect_str_eq(s.text, "partial ", "what was streamed stays delivered");
    cr_expect_str_eq(complete_str(&s, "ErrorDetails") ? complete_str(&s, "ErrorDetails") : "",
                     "boom mid-stream");
    /* trailers that are not the error ones change nothing */
    s = boto("st", "{\"do\":\"other-trailer\"}", NULL);
    expect_ok(&s, "other-trailer");
    cr_expect_str_eq(s.text, "fine");
    /* the same error through a plain Invoke: Lambda's function error */
    r = post(INVOKE("st"), NULL, "{\"do\":\"trailer-error\"}");
    cr_assert_eq(r.status, 200);
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))), "StreamError",
                     "%.*s", (int)r.blen, r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorMessage"))),
                     "boom mid-stream");
    json_decref(j);
    cr_expect(strstr(report(), "trailer-error: HTTP/1.1 202 Accepted"), "%s", report());
    cr_expect_eq(served(), 5, "one env served all");
    stop_server(5000);
}

Test(rapi_stream, over_20_mb_is_cut_with_response_size_too_large, .init = setup,
     .fini = teardown, .timeout = 180)
{
    struct streamed s;
    const char *rep;

    start_stream_fn(NULL);
    s = boto("st", "{\"do\":\"flood\",\"bytes\":50331648}", NULL);
    expect_code(&s, "flood 48 MB", "Function.ResponseSizeTooLarge");
    cr_expect_eq(s.total, STREAM_MAX, "the client gets 20 MB exactly, then the error: %lld",
                 s.total);
    cr_expect(strstr(complete_str(&s, "ErrorDetails") ? complete_str(&s, "ErrorDetails") : "",
                     "(20971520 bytes)"), "%s", complete_str(&s, "ErrorDetails"));
    /* the runtime heard 413 (Lambda's RequestEntityTooLarge) once it
     * passed the limit, not after its 48 MB: sluice stopped reading (at
     * most 8 MB more are drained for the answer to arrive) */
    rep = report();
    cr_expect(strstr(rep, "HTTP/1.1 413"), "%s", rep);
    {
        const char *f = strstr(rep, "flood: sent ");
        cr_assert_not_null(f, "%s", rep);
        cr_expect_lt(atoll(f + 12), 50331648LL, "the stream was not cut: %s", rep);
    }
    s = boto("st", "{\"do\":\"stream\",\"parts\":[\"after\"]}", NULL);
    expect_ok(&s, "after the cut");
    cr_expect_str_eq(s.text, "after");
    stop_server(5000);
}

Test(rapi_stream, plain_invoke_of_a_streaming_function_is_buffered, .init = setup,
     .fini = teardown, .timeout = 120)
{
    struct resp r;
    struct streamed s;

    start_stream_fn(NULL);
    r = post(INVOKE("st"), NULL, "{\"do\":\"stream\",\"parts\":[\"a\",\"b\",\"c\"]}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_null(header(&r, "X-Amz-Function-Error"));
    cr_expect(r.blen == 3 && memcmp(r.body, "abc", 3) == 0, "%.*s", (int)r.blen, r.body);
    /* streaming mode with a Content-Length body: taken, both ways */
    r = post(INVOKE("st"), NULL, "{\"do\":\"length\"}");
    cr_assert_eq(r.status, 200);
    cr_expect(r.blen == 11 && memcmp(r.body, "all at once", 11) == 0, "%.*s", (int)r.blen,
              r.body);
    s = boto("st", "{\"do\":\"length\"}", NULL);
    expect_ok(&s, "length");
    cr_expect_str_eq(s.text, "all at once");
    /* a function that does not stream: one PayloadChunk with its answer */
    s = boto("st", "{\"do\":\"headers\"}", NULL);
    expect_ok(&s, "headers");
    cr_expect_eq(s.chunks, 1);
    cr_expect(strncmp(s.text, "served: ", 8) == 0, "%s", s.text);
    stop_server(5000);
}

Test(rapi_stream, runtime_that_dies_mid_stream_is_exit_error_and_sluice_goes_on, .init = setup,
     .fini = teardown, .timeout = 120)
{
    struct streamed s;

    start_stream_fn(NULL);
    s = boto("st", "{\"do\":\"die\"}", NULL);
    expect_code(&s, "die", "Runtime.ExitError");
    cr_expect_str_eq(s.text, "before dying");
    cr_expect(strstr(complete_str(&s, "ErrorDetails") ? complete_str(&s, "ErrorDetails") : "",
                     "exit status 5"), "%s", complete_str(&s, "ErrorDetails"));
    s = boto("st", "{\"do\":\"stream\",\"parts\":[\"again\"]}", NULL);
    expect_ok(&s, "after the exit");
    cr_expect_str_eq(s.text, "again");
    cr_expect_eq(get("/healthz").status, 200);
    stop_server(5000);
}

Test(rapi_stream, malformed_or_cut_streams_are_truncated_responses, .init = setup,
     .fini = teardown, .timeout = 120)
{
    static const char *const cases[][2] = {
        { "bad-chunk", "ok" },        /* "zz" as a chunk size */
        { "huge-chunk", "ok" },       /* a chunk size past 64 bits */
        { "close", "half" },          /* the connection closes mid-body, the runtime lives */
    };
    const char *rep;

    start_stream_fn(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct streamed s = boto("st", fmt("{\"do\":\"%s\"}", cases[i][0]), NULL);

        expect_code(&s, cases[i][0], "Runtime.TruncatedResponse");
        cr_expect_str_eq(s.text, cases[i][1], "%s", cases[i][0]);
    }
    rep = report();
    cr_expect(strstr(rep, "bad-chunk: HTTP/1.1 400"), "%s", rep);
    cr_expect(strstr(rep, "huge-chunk: HTTP/1.1 400"), "%s", rep);
    cr_expect(strstr(rep, "close: done"), "%s", rep);
    /* one env took all of them and still works */
    cr_expect_eq(served(), 5);
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Slow and vanishing clients                                          */

Test(rapi_stream, slow_reader_holds_sluice_to_a_bound, .init = setup, .fini = teardown,
     .timeout = 180)
{
    const long long total = 16LL * 1024 * 1024;
    const double bound = 2.0 * 1024 * 1024; /* per place an answer waits */
    char id[64], type[64];
    const char *p;
    size_t n;
    long long got = 0;
    int chunks = 0;
    double end, gate, evh;
    struct rd *r;

    start_stream_fn(NULL);
    cr_expect_eq(metric("sluice_api_stream_pauses_total"), 0);
    r = stream_open("st", fmt("{\"do\":\"flood\",\"bytes\":%lld}", total), 65536, id,
                    sizeof(id));
    /* not a byte read: sluice must stop reading the runtime */
    for (end = now_ms() + 60000; now_ms() < end; usleep(100000))
        if (metric("sluice_api_stream_pauses_total") >= 1)
            break;
    cr_assert_geq(metric("sluice_api_stream_pauses_total"), 1,
                  "the stream never paused for the slow client; log:\n%s", server_log());
    gate = metric("sluice_api_stream_held_bytes_max{where=\"gate\"}");
    evh = metric("sluice_api_stream_held_bytes_max{where=\"evhttp\"}");
    cr_expect(gate > 0 && gate <= bound, "held for the client at the gate: %.0f", gate);
    cr_expect(evh > 0 && evh <= bound, "held in evhttp: %.0f", evh);
    /* now read it all */
    while (next_event(r, type, sizeof(type), &p, &n)) {
        if (strcmp(type, "PayloadChunk") == 0) {
            got += (long long)n;
            chunks++;
        } else {
            cr_expect_str_eq(type, "InvokeComplete");
            cr_expect(n == 2 && memcmp(p, "{}", 2) == 0, "%.*s", (int)n, p);
        }
    }
    rd_close(r);
    cr_expect_eq(got, total, "%lld of %lld bytes in %d chunks", got, total, chunks);
    /* the high-water marks over the whole 16 MB */
    gate = metric("sluice_api_stream_held_bytes_max{where=\"gate\"}");
    evh = metric("sluice_api_stream_held_bytes_max{where=\"evhttp\"}");
    cr_expect(gate <= bound && evh <= bound, "held at most %.0f (gate), %.0f (evhttp)", gate,
              evh);
    cr_expect(strstr(report(), "flood: sent 16777216 HTTP/1.1 202"), "%s", report());
    stop_server(5000);
}

Test(rapi_stream, client_that_hangs_up_mid_stream_releases_the_invocation, .init = setup,
     .fini = teardown, .timeout = 120)
{
    char id[64], type[64];
    const char *p;
    size_t n;
    double end;
    struct rd *r;

    start_stream_fn(NULL);
    r = stream_open("st", "{\"do\":\"flood\",\"bytes\":8388608}", 65536, id, sizeof(id));
    cr_assert_neq(id[0], '\0');
    cr_assert(next_event(r, type, sizeof(type), &p, &n));
    cr_expect_str_eq(type, "PayloadChunk");
    rd_close(r);
    /* the invocation ends (the rest of the stream is dropped) */
    for (end = now_ms() + 60000; now_ms() < end; usleep(100000))
        if (strstr(server_log(), fmt("REPORT RequestId: %s", id)))
            break;
    cr_assert(strstr(server_log(), fmt("REPORT RequestId: %s", id)),
              "the invocation did not end after its client left; log:\n%s", server_log());
    /* and its env takes the next one */
    cr_expect_eq(served(), 2);
    cr_expect(strstr(report(), "flood: sent 8388608 HTTP/1.1 202"), "%s", report());
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* What /next tells the runtime                                        */

/* The value of `name` in the runtime's copy of its /next headers. */
static const char *next_header(const struct resp *r, const char *name)
{
    const char *body = fmt("%.*s", (int)r->blen, r->body);
    const char *p = strcasestr(body, fmt("\r\n%s: ", name)), *e;

    if (!p)
        return NULL;
    p += strlen(name) + 4;
    e = p + strcspn(p, "\r\n");
    return fmt("%.*s", (int)(e - p), p);
}

/* Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>: its Root. */
static const char *check_trace(const char *t)
{
    const char *hex = "0123456789abcdef";

    cr_assert_not_null(t, "no Lambda-Runtime-Trace-Id");
    cr_assert_eq(strlen(t), 5 + 35 + 8 + 16 + 10, "%s", t);
    cr_expect(strncmp(t, "Root=1-", 7) == 0 && t[15] == '-' &&
              strncmp(t + 40, ";Parent=", 8) == 0 && strncmp(t + 64, ";Sampled=", 9) == 0 &&
              (t[73] == '0' || t[73] == '1'), "%s", t);
    cr_expect(strspn(t + 7, hex) == 8 && strspn(t + 16, hex) == 24 && strspn(t + 48, hex) == 16,
              "%s", t);
    return fmt("%.35s", t + 5);
}

Test(rapi_stream, next_carries_trace_id_client_context_and_no_identity, .init = setup,
     .fini = teardown, .timeout = 120)
{
    /* {"custom":{"k":"v"}} */
    const char *cc = "eyJjdXN0b20iOnsiayI6InYifX0=";
    const char *given = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;"
                        "Sampled=1";
    const char *t, *root1, *root2;
    struct resp r;
    long long secs;

    start_stream_fn(NULL);
    /* the caller's trace: its Root and Sampled, a Parent of the invocation's own */
    r = http("POST", INVOKE("st"), fmt("X-Amzn-Trace-Id: %s\r\nX-Amz-Client-Context: %s\r\n",
                                       given, cc), "{\"do\":\"headers\"}", 16);
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    t = next_header(&r, "Lambda-Runtime-Trace-Id");
    cr_expect_str_eq(check_trace(t), "1-5759e988-bd862e3fe1be46a994272793");
    cr_expect(strstr(t, ";Sampled=1"), "%s", t);
    cr_expect(!strstr(t, "53995c3f42cd8ad8"), "Parent is the invocation's segment: %s", t);
    cr_expect_str_eq(str_or(next_header(&r, "Lambda-Runtime-Client-Context")),
                     "{\"custom\":{\"k\":\"v\"}}");
    /* the Invoke API has no Cognito identity to give */
    cr_expect_null(next_header(&r, "Lambda-Runtime-Cognito-Identity"), "%.*s", (int)r.blen,
                   r.body);

    /* none given: one of its own per invocation, Root's time now */
    r = post(INVOKE("st"), NULL, "{\"do\":\"headers\"}");
    root1 = check_trace(next_header(&r, "Lambda-Runtime-Trace-Id"));
    cr_expect(strstr(next_header(&r, "Lambda-Runtime-Trace-Id"), ";Sampled=0"));
    cr_expect_null(next_header(&r, "Lambda-Runtime-Client-Context"));
    secs = strtoll(fmt("%.8s", root1 + 2), NULL, 16);
    cr_expect(llabs(secs - (long long)time(NULL)) < 86400, "Root's epoch %llx", secs);
    r = post(INVOKE("st"), NULL, "{\"do\":\"headers\"}");
    root2 = check_trace(next_header(&r, "Lambda-Runtime-Trace-Id"));
    cr_expect_str_neq(root1, root2);
    /* a malformed one is replaced */
    r = http("POST", INVOKE("st"), "X-Amzn-Trace-Id: Root=nope;Sampled=7\r\n",
             "{\"do\":\"headers\"}", 16);
    t = next_header(&r, "Lambda-Runtime-Trace-Id");
    check_trace(t);
    cr_expect(!strstr(t, "nope") && strstr(t, ";Sampled=0"), "%s", t);
    /* and a streamed invocation gets them too */
    {
        struct streamed s = boto("st", "{\"do\":\"headers\"}", NULL);
        expect_ok(&s, "headers");
        cr_expect(strstr(s.text, "Lambda-Runtime-Trace-Id: Root=1-"), "%s", s.text);
    }
    stop_server(5000);
}
