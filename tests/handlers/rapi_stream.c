/* A custom runtime in C (runtime lambda's `bootstrap`) that streams its
 * responses the way Lambda's streaming runtimes do (awslambda's
 * streamifyResponse, lambda_runtime's run_with_streaming_response):
 * POST .../response with Lambda-Runtime-Function-Response-Mode: streaming,
 * Transfer-Encoding: chunked, and mid-stream errors in the trailers
 * Lambda-Runtime-Function-Error-Type and -Body. The event says what to do
 * ({"do":"..."}); some actions misbehave on purpose. Blocking sockets,
 * one connection per request. What the Runtime API answered goes to
 * /tmp/r, returned by {"do":"report"}.
 *
 *   stream   "parts": [..] chunks; "wait": a file under /var/task that
 *            must exist before the second chunk goes (the test creates it
 *            once it has the first: causality, not timing)
 *   trailer-error  a chunk, then the error trailers
 *   other-trailer  a chunk, then a trailer that is not an error
 *   flood    "bytes" in 64 KB chunks ('x'), then the last chunk
 *   die      a chunk, then exit(5) mid-stream
 *   close    a chunk, then the connection closes with the body unfinished
 *   bad-chunk / huge-chunk   malformed chunked framing after a chunk
 *   length   mode streaming with a Content-Length body
 *   headers  a plain response: the /next answer's headers
 *   report   a plain response: /tmp/r */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char host[64] = "127.0.0.1";
static int port = 9001;
static char id[128];
static char nexthead[16384];
static int served;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    FILE *f = fopen("/tmp/r", "a");
    va_list ap;

    if (!f)
        return;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int dial(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("rapi_stream: connect");
        exit(2);
    }
    return fd;
}

/* false when the peer is gone (a cut stream) */
static int put(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        s += w;
        n -= (size_t)w;
    }
    return 1;
}

static int puts_fd(int fd, const char *s)
{
    return put(fd, s, strlen(s));
}

static int chunk(int fd, const void *p, size_t n)
{
    char line[32];

    snprintf(line, sizeof(line), "%zx\r\n", n);
    return puts_fd(fd, line) && put(fd, p, n) && puts_fd(fd, "\r\n");
}

/* The answer's status line (the first line), "closed" if none. */
static void status(int fd, char *out, size_t n)
{
    size_t len = 0;

    while (len + 1 < n) {
        ssize_t r = recv(fd, out + len, 1, 0);
        if (r <= 0 || out[len] == '\n')
            break;
        len++;
    }
    while (len && (out[len - 1] == '\r' || out[len - 1] == '\n'))
        len--;
    out[len] = '\0';
    if (!len)
        snprintf(out, n, "closed");
}

/* Read an answer whole (Connection: close): its status line and body. */
static void answer(int fd, char *st, size_t n)
{
    char buf[4096];

    status(fd, st, n);
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
}

static int stream_head(int fd, const char *extra)
{
    char h[1024];

    snprintf(h, sizeof(h), "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
             "Host: %s:%d\r\nConnection: close\r\nContent-Type: text/plain\r\n"
             "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
             "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
             "%s\r\n", id, host, port, extra);
    return puts_fd(fd, h);
}

static void respond(const char *body, size_t n)
{
    int fd = dial();
    char h[512], st[256];

    snprintf(h, sizeof(h), "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
             "Host: %s:%d\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n", id, host, port,
             n);
    if (puts_fd(fd, h) && put(fd, body, n))
        answer(fd, st, sizeof(st));
    close(fd);
}

/* GET /next: the event (caller frees) and the id in `id`. */
static char *next(void)
{
    int fd = dial();
    size_t len = 0, cl = 0, got;
    char *end, *body, *p;

    puts_fd(fd, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n"
                "Connection: close\r\n\r\n");
    for (;;) {
        ssize_t r = recv(fd, nexthead + len, sizeof(nexthead) - 1 - len, 0);
        if (r <= 0) {
            fprintf(stderr, "rapi_stream: /next closed\n");
            exit(3);
        }
        len += (size_t)r;
        nexthead[len] = '\0';
        if ((end = strstr(nexthead, "\r\n\r\n")))
            break;
    }
    *end = '\0';
    id[0] = '\0';
    for (p = strstr(nexthead, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "Content-Length:", 15) == 0)
            cl = strtoul(p + 17, NULL, 10);
        if (strncasecmp(p + 2, "Lambda-Runtime-Aws-Request-Id: ", 31) == 0)
            sscanf(p + 33, "%127[^\r\n]", id);
    }
    body = calloc(1, cl + 1);
    got = len - (size_t)(end + 4 - nexthead);
    memcpy(body, end + 4, got < cl ? got : cl);
    while (got < cl) {
        ssize_t r = recv(fd, body + got, cl - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    return body;
}

/* Whether /var/task/NAME appeared within 20 s. */
static int wait_file(const char *name)
{
    char path[300];
    struct stat st;

    snprintf(path, sizeof(path), "/var/task/%s", name);
    for (int i = 0; i < 20 * 50; i++) {
        if (stat(path, &st) == 0)
            return 1;
        usleep(20000);
    }
    return 0;
}

static void act(json_t *ev)
{
    const char *what = json_string_value(json_object_get(ev, "do"));
    char st[256], buf[65536];
    int fd;

    what = what ? what : "";
    if (strcmp(what, "headers") == 0) {
        char out[20000];
        int n = snprintf(out, sizeof(out), "served: %d\n%s\n", served, nexthead);
        respond(out, (size_t)n);
        return;
    }
    if (strcmp(what, "report") == 0) {
        FILE *f = fopen("/tmp/r", "r");
        size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
        if (f)
            fclose(f);
        respond(buf, n);
        return;
    }
    if (strcmp(what, "length") == 0) {
        const char *b = "all at once";
        char h[128];
        fd = dial();
        snprintf(h, sizeof(h), "Content-Length: %zu\r\n", strlen(b));
        if (stream_head(fd, h) && puts_fd(fd, b))
            answer(fd, st, sizeof(st));
        close(fd);
        return;
    }
    fd = dial();
    stream_head(fd, "Transfer-Encoding: chunked\r\n");
    if (strcmp(what, "stream") == 0) {
        json_t *parts = json_object_get(ev, "parts");
        const char *w = json_string_value(json_object_get(ev, "wait"));
        for (size_t i = 0; i < json_array_size(parts); i++) {
            const char *s = json_string_value(json_array_get(parts, i));
            if (i == 1 && w && !wait_file(w))
                s = "[the first chunk did not reach the client while this ran] ";
            chunk(fd, s, strlen(s));
        }
        puts_fd(fd, "0\r\n\r\n");
    } else if (strcmp(what, "trailer-error") == 0) {
        chunk(fd, "partial ", 8);
        /* base64 of {"errorMessage":"boom mid-stream","errorType":"StreamError"} */
        puts_fd(fd, "0\r\nLambda-Runtime-Function-Error-Type: StreamError\r\n"
                    "Lambda-Runtime-Function-Error-Body: eyJlcnJvck1lc3NhZ2UiOiJib29tIG1pZC1zdHJl"
                    "YW0iLCJlcnJvclR5cGUiOiJTdHJlYW1FcnJvciJ9\r\n\r\n");
    } else if (strcmp(what, "other-trailer") == 0) {
        chunk(fd, "fine", 4);
        puts_fd(fd, "0\r\nX-Checksum: abc\r\n\r\n");
    } else if (strcmp(what, "flood") == 0) {
        long long total = json_integer_value(json_object_get(ev, "bytes")), sent = 0;
        memset(buf, 'x', sizeof(buf));
        while (sent < total) {
            size_t n = total - sent < (long long)sizeof(buf) ? (size_t)(total - sent)
                                                              : sizeof(buf);
            if (!chunk(fd, buf, n))
                break;
            sent += (long long)n;
        }
        puts_fd(fd, "0\r\n\r\n");
        answer(fd, st, sizeof(st));
        note("flood: sent %lld %s", sent, st);
        close(fd);
        return;
    } else if (strcmp(what, "die") == 0) {
        chunk(fd, "before dying", 12);
        usleep(100000);
        _exit(5);
    } else if (strcmp(what, "close") == 0) {
        chunk(fd, "half", 4);
        close(fd);
        note("close: done");
        return;
    } else if (strcmp(what, "bad-chunk") == 0) {
        chunk(fd, "ok", 2);
        puts_fd(fd, "zz\r\nnot a chunk\r\n");
    } else if (strcmp(what, "huge-chunk") == 0) {
        chunk(fd, "ok", 2);
        puts_fd(fd, "ffffffffffffffffffffff\r\n");
    } else {
        chunk(fd, "unknown action", 14);
        puts_fd(fd, "0\r\n\r\n");
    }
    answer(fd, st, sizeof(st));
    note("%s: %s", what, st);
    close(fd);
}

int main(void)
{
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");

    signal(SIGPIPE, SIG_IGN);
    if (api && strchr(api, ':')) {
        snprintf(host, sizeof(host), "%.*s", (int)(strchr(api, ':') - api), api);
        port = atoi(strchr(api, ':') + 1);
    }
    for (;;) {
        char *raw = next();
        json_t *ev = json_loads(raw, 0, NULL);

        served++;
        act(ev);
        json_decref(ev);
        free(raw);
    }
}
