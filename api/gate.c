/* The gate: what a network client meets before evhttp does.
 *
 * sluice owns the TCP listener. Each connection's bytes are read here on a
 * plain socket bufferevent: a request's line and headers are held until
 * they are complete (within server.header_timeout_s), parsed
 * (sl__gate_parse) and decided (sl__gate_decide). An invocation without a
 * valid credential, /metrics without server.metrics_auth's token, a body
 * on a route that takes none, or a malformed head is answered here and the
 * connection closed, before one byte of its body is read. A head that
 * passes goes on to evhttp with exactly its body (Content-Length or
 * chunked framing, within server.body_timeout_s), then the next head is
 * held again; evhttp still authenticates every invocation once its body is
 * in (a signature covers the body).
 *
 * evhttp listens on a Unix socket in a private (0700) directory; the gate
 * connects to it when a connection's first head passes and relays both
 * ways. A later head that is refused ends the connection after evhttp has
 * answered the earlier ones (its answers must stay in order), so that
 * request gets no answer of its own; a client retries it on a new
 * connection and hears why.
 *
 * Also here: server.max_connections (beyond it the oldest connection
 * without a request makes room, else the new one gets 503
 * TooManyRequestsException), and the accept error callback that, out of
 * file descriptors, accepts and closes with a reserved one instead of
 * letting the listener spin. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define HEAD_MAX       (64 * 1024)       /* request line and headers */
#define HEADERS_N      100               /* header lines in one head */
#define NOBODY_MAX     (64 * 1024)       /* body on routes that take none */
#define CHUNK_LINE_MAX 1024
#define LINGER_MS      2000              /* after the last answer, for the client to read it */
#define UP_HIGH        (1024 * 1024)     /* relayed to evhttp and not yet taken: stop reading */

enum cstate { C_HEAD, C_BODY, C_CHUNK_SIZE, C_CHUNK_DATA, C_TRAILER, C_SHUT };

struct conn {
    LIST_ENTRY(conn)    link;
    struct sl_api      *a;
    struct bufferevent *cli;        /* the client's socket */
    struct bufferevent *up;         /* to evhttp, once a head passed */
    struct event       *timer;      /* header, body or linger deadline */
    enum cstate         st;
    uint64_t            left;       /* body or chunk bytes still to let through */
    size_t              scan;       /* head bytes known to hold no end of head */
    bool                timing;     /* the header timer runs */
    bool                up_shut;    /* evhttp was told no more requests come */
    bool                cli_eof;    /* the client sends no more */
    bool                cli_shut;   /* our answers are all out: write side shut */
    bool                adopted;    /* the live tail took the client's connection */
    unsigned            passed;     /* requests let through to evhttp */
};

/* ------------------------------------------------------------------ */
/* The head                                                            */

static bool tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *head_get(const void *ctx, const char *name, size_t idx)
{
    const struct sl_gate_head *h = ctx;

    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->name[i], name) == 0 && idx-- == 0)
            return h->value[i];
    return NULL;
}

void sl__gate_hdrs(const struct sl_gate_head *h, struct sl_hdrs *out)
{
    out->get = head_get;
    out->ctx = h;
}

/* Parse a head (request line, header lines, the empty line) in place. */
int sl__gate_parse(char *buf, size_t len, struct sl_gate_head *h, const char **why)
{
    char *p = buf, *end = buf + len, *line, *eol;

    memset(h, 0, sizeof(*h));
    h->clen = -1;
    if (memchr(buf, '\0', len)) {
        *why = "a NUL byte in the request head";
        return -1;
    }
    /* request line */
    eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) {
        *why = "no request line";
        return -1;
    }
    *eol = '\0';
    if (eol > p && eol[-1] == '\r')
        eol[-1] = '\0';
    line = p;
    p = eol + 1;
    h->method = line;
    while (tchar((unsigned char)*line))
        line++;
    if (line == h->method || *line != ' ') {
        *why = "a malformed request line";
        return -1;
    }
    *line++ = '\0';
    h->target = line;
    while (*line && *line != ' ' && (unsigned char)*line > 0x20 && *line != 0x7f)
        line++;
    if (line == h->target || *line != ' ') {
        *why = "a malformed request line";
        return -1;
    }
    *line++ = '\0';
    h->version = line;
    if (strcmp(line, "HTTP/1.1") != 0 && strcmp(line, "HTTP/1.0") != 0) {
        *why = "not HTTP/1.0 or HTTP/1.1";
        return -1;
    }
    /* header lines up to the empty one */
    for (;;) {
        char *colon, *v, *ve;

        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) {
            *why = "the head does not end";
            return -1;
        }
        *eol = '\0';
        if (eol > p && eol[-1] == '\r')
            eol[-1] = '\0';
        line = p;
        p = eol + 1;
        if (!*line)
            break;
        if (*line == ' ' || *line == '\t') {
            *why = "a folded header line";
            return -1;
        }
        for (colon = line; tchar((unsigned char)*colon); colon++)
            ;
        if (colon == line || *colon != ':') {
            *why = "a malformed header line";
            return -1;
        }
        if (h->n == HEADERS_N) {
            *why = "more than 100 header lines";
            return -1;
        }
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        for (ve = v + strlen(v); ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        *ve = '\0';
        for (char *c = v; *c; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t') {
                *why = "a control character in a header value";
                return -1;
            }
        h->name[h->n] = line;
        h->value[h->n] = v;
        h->n++;
        if (strcasecmp(line, "Content-Length") == 0) {
            int64_t n = 0;

            if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 15) {
                *why = "a malformed Content-Length";
                return -1;
            }
            n = strtoll(v, NULL, 10);
            if (h->clen >= 0 && h->clen != n) {
                *why = "two different Content-Length headers";
                return -1;
            }
            h->clen = n;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            if (strcasecmp(v, "chunked") != 0 || h->chunked) {
                *why = "a Transfer-Encoding other than one chunked";
                return -1;
            }
            h->chunked = true;
        }
    }
    if (p != end) {
        *why = "bytes after the head";
        return -1;
    }
    if (h->chunked && h->clen >= 0) {
        *why = "both Content-Length and Transfer-Encoding";
        return -1;
    }
    return 0;
}

/* Whether `path` is the Invoke API's. */
bool sl__api_is_invoke_path(const char *path, size_t plen)
{
    size_t pre = strlen(INVOKE_PREFIX), suf = strlen(INVOKE_SUFFIX);

    return plen > pre + suf && strncmp(path, INVOKE_PREFIX, pre) == 0 &&
           memcmp(path + plen - suf, INVOKE_SUFFIX, suf) == 0 &&
           !memchr(path + pre, '/', plen - pre - suf);
}

int sl__gate_decide(const struct sl_server_conf *sc, const struct sl_gate_head *h,
                    long long now, struct sl_authn *out)
{
    const char *path = h->target;
    struct sl_hdrs hd;
    size_t plen;

    memset(out, 0, sizeof(*out));
    sl__gate_hdrs(h, &hd);
    /* absolute form: http://host/path */
    if (strncasecmp(path, "http://", 7) == 0 || strncasecmp(path, "https://", 8) == 0) {
        path = strchr(path + 8 - (path[4] == ':'), '/');
        if (!path)
            path = "/";
    }
    plen = strcspn(path, "?#");
    if (sl__api_is_invoke_path(path, plen)) {
        sl__api_authenticate(sc, h->method, h->target, &hd, NULL, now, out);
        return out->code;
    }
    if (sl__logs_is_path(path, plen))
        return sl__logs_authorize(sc, h->method, h->target, &hd, now, out);
    if (plen == 8 && strncmp(path, "/metrics", 8) == 0 && !sl__api_metrics_allowed(sc, &hd)) {
        out->code = 401;
        out->type = "MissingAuthenticationTokenException";
        out->www = "Bearer";
        out->msg = "/metrics needs the token of server.metrics_auth: send Authorization: "
                   "Bearer <token>";
        return out->code;
    }
    if (h->chunked || h->clen > NOBODY_MAX) {
        out->code = 413;
        out->type = "RequestTooLargeException";
        out->msg = "only invocations take a body of this size";
        return out->code;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static const char *reason(int code)
{
    switch (code) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Request Entity Too Large";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default:  return "Error";
    }
}

/* Lambda's error shape as raw HTTP, for the gate's own answers. */
static char *error_text(int code, const char *type, const char *www, const char *msg)
{
    json_t *b = json_pack("{s:s, s:o}", "Type", code >= 500 ? "Service" : "User", "message",
                          sl__api_json_text(msg));
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL, *text = NULL, id[37];

    json_decref(b);
    sl_uuid(id);
    if (asprintf(&text,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "X-Amzn-RequestId: %s\r\nX-Amzn-ErrorType: %s\r\n%s%s%s%s"
                 "Connection: close\r\n\r\n%s",
                 code, reason(code), body ? strlen(body) : 0, id, type,
                 www ? "WWW-Authenticate: " : "", www ? www : "", www ? "\r\n" : "",
                 code == 503 ? "Retry-After: 1\r\n" : "", body ? body : "") < 0)
        text = NULL;
    free(body);
    return text;
}

static void arm(struct conn *c, int64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    evtimer_add(c->timer, &tv);
}

static void conn_free(struct conn *c)
{
    LIST_REMOVE(c, link);
    c->a->nconns--;
    if (c->up)
        bufferevent_free(c->up);
    if (c->cli)
        bufferevent_free(c->cli);
    event_free(c->timer);
    free(c);
}

static void shut_cli(struct conn *c)
{
    if (!c->cli_shut && bufferevent_getfd(c->cli) >= 0)
        shutdown(bufferevent_getfd(c->cli), SHUT_WR);
    c->cli_shut = true;
}

/* Every answer the client will get is in its output: write it out, drop
 * what the client still sends (closing on unread data would reset the
 * connection and lose the answer), close when it is out or the client
 * goes. Frees c when that is now: the caller must not touch it after. */
static void finish(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->cli);

    c->st = C_SHUT;
    if (c->up) {
        evbuffer_add_buffer(out, bufferevent_get_input(c->up));
        bufferevent_free(c->up);
        c->up = NULL;
    }
    bufferevent_enable(c->cli, c->cli_eof ? EV_WRITE : EV_READ | EV_WRITE);
    evtimer_del(c->timer);
    c->left = evbuffer_get_length(out);
    arm(c, LINGER_MS);
    if (evbuffer_get_length(out) == 0) {
        shut_cli(c);
        if (c->cli_eof)
            conn_free(c);
    }
}

/* No more requests go to evhttp: it answers those it has, then closes
 * its side (up_event), and then the connection finishes. */
static void up_end(struct conn *c)
{
    c->st = C_SHUT;
    evtimer_del(c->timer);
    if (!c->cli_eof)
        bufferevent_enable(c->cli, EV_READ);
    if (!c->up) {
        finish(c);
        return;
    }
    c->up_shut = true;
    if (evbuffer_get_length(bufferevent_get_output(c->up)) == 0)
        shutdown(bufferevent_getfd(c->up), SHUT_WR);
}

/* Answer from the gate and close. A connection that already has requests
 * at evhttp cannot be answered out of their order: it just ends. */
static void conn_reject(struct conn *c, int code, const char *type, const char *www,
                        const char *msg)
{
    char cs[8];

    snprintf(cs, sizeof(cs), "%d", code);
    SL_DEBUG(SL_DBG_API, INST, "gate: %d %s (%s)%s", code, type, msg,
             c->up ? "; ending the connection after the answers before it" : "");
    if (c->up) {
        up_end(c);
        return;
    }
    sl_metric_add(c->a->m_req, cs, 1);
    {
        char *text = error_text(code, type, www, msg);

        if (text)
            evbuffer_add(bufferevent_get_output(c->cli), text, strlen(text));
        free(text);
    }
    finish(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    size_t pending;

    (void)fd;
    (void)what;
    switch (c->st) {
    case C_SHUT:
        pending = evbuffer_get_length(bufferevent_get_output(c->cli));
        if (c->up) {
            /* evhttp still answers (an invocation runs): its own timeouts
             * bound that */
            return;
        }
        if (pending > 0 && pending < c->left) {
            /* a slow reader that still reads */
            c->left = pending;
            arm(c, LINGER_MS);
            return;
        }
        conn_free(c);
        return;
    case C_HEAD:
        if (c->up) {
            SL_DEBUG(SL_DBG_API, INST, "gate: next request head incomplete within "
                     "header_timeout_s; ending the connection");
            up_end(c);
        } else {
            conn_reject(c, 408, "RequestTimeoutException", NULL,
                        "the request line and headers took longer than "
                        "server.header_timeout_s");
        }
        return;
    default:
        SL_DEBUG(SL_DBG_API, INST, "gate: body not complete within body_timeout_s; closing");
        conn_free(c);
        return;
    }
}

/* Where the head in `src` ends (its length), 0 while it does not: the
 * first empty line, "\n\n" or "\n\r\n". c->scan remembers how far there
 * is none, so a head arriving byte by byte is searched once. */
static size_t head_end(struct conn *c, struct evbuffer *src)
{
    size_t len = evbuffer_get_length(src);
    struct evbuffer_ptr pos;

    if (c->scan >= len || evbuffer_ptr_set(src, &pos, c->scan, EVBUFFER_PTR_SET) != 0)
        return 0;
    for (;;) {
        char nx[2];
        size_t at, have;
        struct evbuffer_ptr q;

        pos = evbuffer_search(src, "\n", 1, &pos);
        if (pos.pos < 0) {
            c->scan = len;
            return 0;
        }
        at = (size_t)pos.pos;
        have = len - at - 1 < 2 ? len - at - 1 : 2;
        q = pos;
        if (have > 0 && evbuffer_ptr_set(src, &q, 1, EVBUFFER_PTR_ADD) == 0)
            evbuffer_copyout_from(src, &q, nx, have);
        if (have >= 1 && nx[0] == '\n')
            return at + 2;
        if (have == 2 && nx[0] == '\r' && nx[1] == '\n')
            return at + 3;
        if (have == 0 || (have == 1 && nx[0] == '\r')) {
            c->scan = at;
            return 0;
        }
        if (evbuffer_ptr_set(src, &pos, 1, EVBUFFER_PTR_ADD) != 0) {
            c->scan = len;
            return 0;
        }
    }
}

static void up_read(struct bufferevent *bev, void *arg);
static void up_write(struct bufferevent *bev, void *arg);
static void up_event(struct bufferevent *bev, short what, void *arg);

/* The connection to evhttp's socket. */
static bool up_connect(struct conn *c)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", c->a->sock_path);
    if (fd < 0)
        return false;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 && errno != EINPROGRESS) {
        SL_DEBUG(SL_DBG_API, INST, "gate: cannot reach the HTTP server: %s", strerror(errno));
        close(fd);
        return false;
    }
    c->up = bufferevent_socket_new(c->a->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->up) {
        close(fd);
        return false;
    }
    bufferevent_setcb(c->up, up_read, up_write, up_event, c);
    bufferevent_setwatermark(c->up, EV_WRITE, UP_HIGH / 2, 0);
    bufferevent_enable(c->up, EV_READ | EV_WRITE);
    return true;
}

/* A head is complete in `src`: decide, and let it through or answer. */
static bool take_head(struct conn *c, struct evbuffer *src, size_t n)
{
    const struct sl_server_conf *sc = &c->a->conf->server;
    char *buf = sl_malloc(n + 1);
    struct sl_gate_head h;
    struct sl_authn r;
    const char *why = NULL;

    evbuffer_copyout(src, buf, n);
    buf[n] = '\0';
    c->scan = 0;
    if (sl__gate_parse(buf, n, &h, &why) != 0) {
        conn_reject(c, 400, "BadRequestException", NULL, why);
        free(buf);
        return false;
    }
    if (sl__gate_decide(sc, &h, (long long)time(NULL), &r) != 0) {
        conn_reject(c, r.code, r.type, r.www, r.msg);
        free(buf);
        return false;
    }
    if (sl__logs_is_path(h.target, strcspn(h.target, "?#"))) {
        const char *type = NULL;
        char msg[320];
        int code;

        if (c->up) {
            /* its answers would have to wait for the earlier ones */
            conn_reject(c, 400, "InvalidRequestException",  NULL, "open /logs/tail on a "
                        "connection of its own");
            free(buf);
            return false;
        }
        evbuffer_drain(src, evbuffer_get_length(src));
        code = sl__logs_open(c->a, c->cli, &h, r.entry, &type, msg, sizeof(msg));
        free(buf);
        if (code != 0) {
            conn_reject(c, code, type, NULL, msg);
            return false;
        }
        c->cli = NULL;
        c->adopted = true;
        return false;
    }
    free(buf);
    if (!c->up && (!c->a->sock_path[0] || !up_connect(c))) {
        conn_reject(c, 503, "ServiceException", NULL, "the HTTP server is not reachable");
        return false;
    }
    evbuffer_remove_buffer(src, bufferevent_get_output(c->up), n);
    c->passed++;
    c->timing = false;
    evtimer_del(c->timer);
    if (h.chunked) {
        c->st = C_CHUNK_SIZE;
    } else if (h.clen > 0) {
        c->st = C_BODY;
        c->left = (uint64_t)h.clen;
    } else {
        c->st = C_HEAD;
    }
    if (c->st != C_HEAD)
        arm(c, sc->body_timeout_ms);
    return true;
}

/* One line (up to and with its '\n') of `src` through to `dst`, or false
 * when it is not complete (*ok false: too long, answered). */
static bool pass_line(struct conn *c, struct evbuffer *src, struct evbuffer *dst, char *line,
                      size_t cap, bool *ok)
{
    struct evbuffer_ptr e = evbuffer_search(src, "\n", 1, NULL);
    size_t n;

    *ok = true;
    if (e.pos < 0) {
        if (evbuffer_get_length(src) > CHUNK_LINE_MAX) {
            conn_reject(c, 400, "BadRequestException", NULL, "a chunk line is too long");
            *ok = false;
        }
        return false;
    }
    n = (size_t)e.pos + 1;
    if (n > cap) {
        conn_reject(c, 400, "BadRequestException", NULL, "a chunk line is too long");
        *ok = false;
        return false;
    }
    evbuffer_copyout(src, line, n);
    line[n - 1] = '\0';
    if (n >= 2 && line[n - 2] == '\r')
        line[n - 2] = '\0';
    evbuffer_remove_buffer(src, dst, n);
    return true;
}

/* What the client sent: heads decided, bodies framed through to evhttp. */
static void gate_run(struct conn *c)
{
    struct evbuffer *src = bufferevent_get_input(c->cli);

    for (;;) {
        size_t len = evbuffer_get_length(src), n;
        struct evbuffer *dst = c->up ? bufferevent_get_output(c->up) : NULL;
        char line[CHUNK_LINE_MAX + 1];
        bool ok;

        if (c->st == C_SHUT) {
            evbuffer_drain(src, len);
            return;
        }
        if (len == 0)
            break;
        if (dst && evbuffer_get_length(dst) > UP_HIGH) {
            /* evhttp takes it slower than it comes: up_write resumes */
            bufferevent_disable(c->cli, EV_READ);
            return;
        }
        switch (c->st) {
        case C_HEAD:
            if (!c->timing) {
                c->timing = true;
                arm(c, c->a->conf->server.header_timeout_ms);
            }
            n = head_end(c, src);
            if (n == 0 || n > HEAD_MAX) {
                if (n > HEAD_MAX || len > HEAD_MAX) {
                    conn_reject(c, 431, "RequestHeaderFieldsTooLargeException", NULL,
                                "the request line and headers exceed 64 KB");
                    continue;
                }
                return;
            }
            take_head(c, src, n);
            if (c->adopted) {
                conn_free(c); /* the tail has its connection */
                return;
            }
            break;
        case C_BODY:
        case C_CHUNK_DATA:
            n = len < c->left ? len : (size_t)c->left;
            evbuffer_remove_buffer(src, dst, n);
            c->left -= n;
            if (c->left == 0) {
                if (c->st == C_CHUNK_DATA) {
                    c->st = C_CHUNK_SIZE;
                } else {
                    c->st = C_HEAD;
                    evtimer_del(c->timer);
                }
            }
            break;
        case C_CHUNK_SIZE: {
            char *end;
            unsigned long long sz;

            if (!pass_line(c, src, dst, line, sizeof(line), &ok)) {
                if (!ok)
                    continue;
                return;
            }
            errno = 0;
            sz = strtoull(line, &end, 16);
            if (end == line || errno || (*end && *end != ';' && *end != ' ') ||
                sz > SL_PAYLOAD_MAX * 2ULL) {
                conn_reject(c, 400, "BadRequestException", NULL, "a malformed chunk size");
                continue;
            }
            if (sz == 0) {
                c->st = C_TRAILER;
            } else {
                c->st = C_CHUNK_DATA;
                c->left = sz + 2; /* and its CRLF */
            }
            break;
        }
        case C_TRAILER:
            if (!pass_line(c, src, dst, line, sizeof(line), &ok)) {
                if (!ok)
                    continue;
                return;
            }
            if (!line[0]) {
                c->st = C_HEAD;
                evtimer_del(c->timer);
            }
            break;
        case C_SHUT:
            break;
        }
    }
}

static void cli_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    gate_run(arg);
}

/* The client's output is out. */
static void cli_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->st == C_SHUT && !c->up && evbuffer_get_length(bufferevent_get_output(c->cli)) == 0) {
        shut_cli(c);
        if (c->cli_eof)
            conn_free(c);
    }
}

static void cli_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING)) {
        c->cli_eof = true;
        bufferevent_disable(c->cli, EV_READ);
        if (c->st != C_SHUT && c->up) {
            up_end(c); /* evhttp still answers what it has */
            return;
        }
        if (c->up || evbuffer_get_length(bufferevent_get_output(c->cli)) > 0)
            return; /* finish() or cli_write closes */
    }
    conn_free(c);
}

static void up_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    evbuffer_add_buffer(bufferevent_get_output(c->cli), bufferevent_get_input(bev));
}

static void up_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 && c->up_shut)
        shutdown(bufferevent_getfd(bev), SHUT_WR);
    if (c->st != C_SHUT && !c->cli_eof &&
        !(bufferevent_get_enabled(c->cli) & EV_READ)) {
        bufferevent_enable(c->cli, EV_READ);
        gate_run(c); /* what is already buffered */
    }
}

/* evhttp closed its side: what it answered goes out, then the client's
 * connection closes. */
static void up_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    finish(arg);
}

/* ------------------------------------------------------------------ */
/* Accepting                                                           */

static void refuse_full(struct sl_api *a, evutil_socket_t fd)
{
    char *text = error_text(503, "TooManyRequestsException", NULL,
                            "too many connections (server.max_connections); retry later");
    double now = sl_mono_ms();
    char sink[4096];

    sl_metric_add(a->m_req, "503", 1);
    if (now - a->full_logged_ms > 10000) {
        a->full_logged_ms = now;
        SL_WARN(INST, "%" PRId64 " connections open (server.max_connections) with a request "
                "each: new ones get 503 until some close", a->max_conns);
    }
    if (text && send(fd, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        SL_DEBUG(SL_DBG_API, INST, "gate: 503 not sent: %s", strerror(errno));
    free(text);
    shutdown(fd, SHUT_WR);
    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
    close(fd);
}

/* Close the oldest connection without a request at evhttp. */
static bool evict_idle(struct sl_api *a)
{
    struct conn *v, *victim = NULL;

    LIST_FOREACH(v, &a->conns, link)
        if (!v->up && (v->st == C_SHUT || (v->st == C_HEAD && v->passed == 0)))
            victim = v; /* the list runs newest first */
    if (!victim)
        return false;
    SL_DEBUG(SL_DBG_API, INST, "gate: at %" PRId64 " connections; closing the oldest one "
             "without a request", a->max_conns);
    conn_free(victim);
    return true;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lev;
    (void)sa;
    (void)salen;
    sl__gate_adopt(arg, fd);
}

void sl__gate_adopt(struct sl_api *a, int fd)
{
    struct conn *c;

    /* the oldest connection without a request makes room: idle clients
     * cannot lock the others out */
    while (a->nconns >= a->max_conns && evict_idle(a))
        ;
    if (a->nconns >= a->max_conns) {
        refuse_full(a, fd);
        return;
    }
    c = sl_calloc(1, sizeof(*c));
    c->a = a;
    c->cli = bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(a->base, on_timer, c);
    if (!c->cli || !c->timer) {
        if (c->cli)
            bufferevent_free(c->cli);
        else
            close(fd);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return;
    }
    LIST_INSERT_HEAD(&a->conns, c, link);
    a->nconns++;
    bufferevent_setcb(c->cli, cli_read, cli_write, cli_event, c);
    bufferevent_enable(c->cli, EV_READ | EV_WRITE);
    c->timing = true;
    arm(c, a->conf->server.header_timeout_ms);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct sl_api *a = arg;

    (void)fd;
    (void)what;
    if (a->listener)
        evconnlistener_enable(a->listener);
}

/* accept failed with something other than EAGAIN. Out of descriptors
 * (EMFILE, ENFILE) the pending connection would stay and the listener
 * fire again at once: give up the reserved descriptor, accept and close
 * with it, take the reserve back. Anything still failing pauses the
 * listener for 100 ms. Logged once per 10 s. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct sl_api *a = arg;
    int err = EVUTIL_SOCKET_ERROR(), fd = -1;
    double now = sl_mono_ms();

    a->accept_errors++;
    if ((err == EMFILE || err == ENFILE) && a->nconns > 16) {
        /* the rest of sluice holds more than the cap assumed: the cap
         * comes down to leave room, and the oldest idle connections make
         * it (the next accept then works) */
        int64_t cap = a->nconns - 8;
        bool freed = false;

        if (cap < a->max_conns) {
            SL_WARN(INST, "out of file descriptors at %" PRId64 " connections: "
                    "server.max_connections lowered to %" PRId64, a->nconns, cap);
            a->max_conns = cap;
        }
        while (a->nconns > a->max_conns && evict_idle(a))
            freed = true;
        if (freed)
            return;
    }
    if ((err == EMFILE || err == ENFILE) && a->spare_fd >= 0) {
        close(a->spare_fd);
        a->spare_fd = -1;
        fd = accept4(evconnlistener_get_fd(lev), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            refuse_full(a, fd);
        a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        struct timeval tv = { 0, 100 * 1000 };

        evconnlistener_disable(lev);
        evtimer_add(a->accept_pause, &tv);
    }
    if (now - a->accept_logged_ms > 10000) {
        a->accept_logged_ms = now;
        SL_WARN(INST, "cannot accept connections: %s (%" PRIu64 " times so far)%s",
                strerror(err), a->accept_errors,
                err == EMFILE || err == ENFILE
                    ? "; closing new ones until descriptors free up (raise ulimit -n or lower "
                      "server.max_connections)"
                    : "");
    }
}

/* evhttp's own socket: a Unix socket in a directory only this user enters. */
static int inner_listen(struct sl_api *a, struct sl_err *err)
{
    const char *tmp = getenv("TMPDIR");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd;

    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(a->sock_dir, sizeof(a->sock_dir), "%s/sluice-http.XXXXXX", tmp);
    if (!mkdtemp(a->sock_dir)) {
        a->sock_dir[0] = '\0';
        return sl_err_set(err, SL_EIO, false, "cannot make a directory in %s: %s", tmp,
                          strerror(errno));
    }
    snprintf(a->sock_path, sizeof(a->sock_path), "%s/http.sock", a->sock_dir);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", a->sock_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        return sl_err_set(err, SL_EIO, false, "cannot listen on %s: %s", a->sock_path,
                          strerror(e));
    }
    if (!evhttp_accept_socket_with_handle(a->http, fd)) {
        close(fd);
        return sl_err_set(err, SL_ENOMEM, false, "cannot set up the HTTP server");
    }
    return 0;
}

int sl__gate_start(struct sl_api *a, const char *host, int port, struct sl_err *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    struct rlimit rl;
    char ps[16];
    int fd = -1, rc, one = 1, e = 0;

    /* connections must leave descriptors for everything else (handlers,
     * sinks, queues), and one that reached evhttp takes three */
    a->max_conns = a->conf->server.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        int64_t cur = (int64_t)rl.rlim_cur;
        int64_t room = (cur - (cur / 4 > 64 ? cur / 4 : 64)) / 3;

        if (room < 8)
            room = 8;
        if (room < a->max_conns) {
            SL_WARN(INST, "server.max_connections %" PRId64 " lowered to %" PRId64 " for the "
                    "open-file limit %" PRId64 " (ulimit -n)", a->max_conns, room, cur);
            a->max_conns = room;
        }
    }
    if ((rc = inner_listen(a, err)) != 0)
        return rc;
    snprintf(ps, sizeof(ps), "%d", port);
    if ((rc = getaddrinfo(host, ps, &hints, &ai)) != 0)
        return sl_err_set(err, SL_EIO, false, "cannot listen on %s (server.listen): %s",
                          a->conf->server.listen, gai_strerror(rc));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0)
        e = errno;
    freeaddrinfo(ai);
    if (e) {
        if (fd >= 0)
            close(fd);
        return sl_err_set(err, SL_EIO, false, "cannot listen on %s (server.listen): %s",
                          a->conf->server.listen, strerror(e));
    }
    a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    a->accept_pause = evtimer_new(a->base, on_accept_resume, a);
    a->listener = evconnlistener_new(a->base, on_accept, a,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (!a->accept_pause || !a->listener) {
        if (!a->listener)
            close(fd);
        return sl_err_set(err, SL_ENOMEM, false, "cannot set up the HTTP listener");
    }
    evconnlistener_set_error_cb(a->listener, on_accept_error);
    return 0;
}

/* The loop has stopped: what evhttp wrote for clients (flush_replies put
 * it on its sockets) goes out to them, within `ms`. */
void sl__gate_flush(struct sl_api *a, int ms)
{
    double end = sl_mono_ms() + ms;
    struct conn *c;

    LIST_FOREACH(c, &a->conns, link) {
        struct evbuffer *out = bufferevent_get_output(c->cli);
        evutil_socket_t fd = bufferevent_getfd(c->cli);

        if (c->up) {
            evbuffer_add_buffer(out, bufferevent_get_input(c->up));
            while (evbuffer_read(out, bufferevent_getfd(c->up), -1) > 0)
                ;
        }
        if (fd < 0 || evbuffer_get_length(out) == 0)
            continue;
        evbuffer_unfreeze(out, 1);
        while (evbuffer_get_length(out) > 0) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            int left = (int)(end - sl_mono_ms());

            if (evbuffer_write(out, fd) < 0 && errno != EAGAIN && errno != EINTR)
                break;
            if (evbuffer_get_length(out) == 0 || left <= 0 || poll(&pfd, 1, left) <= 0)
                break;
        }
        evbuffer_freeze(out, 1);
    }
}

void sl__gate_init(struct sl_api *a)
{
    LIST_INIT(&a->conns);
    a->spare_fd = -1;
}

void sl__gate_free(struct sl_api *a)
{
    struct conn *c;

    while ((c = LIST_FIRST(&a->conns)))
        conn_free(c);
    if (a->listener)
        evconnlistener_free(a->listener);
    a->listener = NULL;
    if (a->accept_pause)
        event_free(a->accept_pause);
    a->accept_pause = NULL;
    if (a->spare_fd >= 0)
        close(a->spare_fd);
    a->spare_fd = -1;
    if (a->sock_path[0])
        unlink(a->sock_path);
    if (a->sock_dir[0])
        rmdir(a->sock_dir);
    a->sock_path[0] = a->sock_dir[0] = '\0';
}
