/* The Lambda Runtime API of a `runtime: lambda` env: an adapter beside
 * the native frame reader (env.c) that drives the same env state machine.
 *
 * sluice listens on 127.0.0.1:9001 inside the env's own network namespace
 * (spawn.c opened the socket before the handler ran) and serves
 *   GET  /2018-06-01/runtime/invocation/next            the first one is "ready"
 *   POST /2018-06-01/runtime/invocation/{id}/response   "result", ok (or streamed)
 *   POST /2018-06-01/runtime/invocation/{id}/error      "result", failed
 *   POST /2018-06-01/runtime/init/error                 "init_error"
 * with a small HTTP/1.1 request parser of our own on bufferevents: hard
 * caps on the request head and bodies, Content-Length and chunked
 * bodies, keep-alive and pipelining, a few connections at once. Answers
 * to misbehaviour are the Runtime Interface Emulator's (docs/RUNTIME-API.md).
 * A streamed response (Lambda-Runtime-Function-Response-Mode: streaming)
 * for an invocation with an `on_chunk` goes there as it is read, pausing
 * the socket while the receiver holds too much; its error trailers end it,
 * passing SL_STREAM_MAX cuts it (413), and one that breaks off (malformed
 * chunks, EOF before the last chunk) ends as Runtime.TruncatedResponse.
 * /next carries Lambda-Runtime-Trace-Id (the caller's Root kept).
 * Everything here runs on the loop; an env destroyed under a callback is
 * noticed through `gone`. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define HEAD_MAX      16384            /* request line and headers */
#define HEADERS_MAX   64
#define CHUNK_LINE_MAX 1024
#define BODY_MAX      SL_PAYLOAD_MAX   /* a response or error body */
#define CONNS_MAX     8                /* the runtime needs one or two */
#define READ_HIGH     (256 * 1024)     /* stop reading while this much waits unparsed */
#define LINGER_MAX    (8 * 1024 * 1024) /* dropped after a closing answer, at most */
#define LINGER_S      1
#define RESUME_MS     10               /* a paused stream asks its receiver again */

#define PREFIX "/2018-06-01/runtime/"

enum conn_state { C_HEAD, C_BODY, C_CHUNK_SIZE, C_CHUNK_DATA, C_CHUNK_CRLF, C_TRAILERS,
                  C_PARKED, C_CLOSING };

struct rapi_conn {
    struct sl__rapi    *ra;
    struct bufferevent *bev;
    int                 state;          /* enum conn_state */
    /* the request being read */
    char                method[8];
    char                path[256];
    char                etype[128];     /* Lambda-Runtime-Function-Error-Type */
    char                mode[32];       /* Lambda-Runtime-Function-Response-Mode */
    bool                keepalive;
    bool                chunked;
    bool                over;           /* body past BODY_MAX: its bytes are dropped */
    bool                expect;         /* Expect: 100-continue */
    size_t              left;           /* Content-Length or chunk bytes still to read */
    size_t              total;          /* body bytes seen */
    struct evbuffer    *body;
    struct sl__ext_hdrs xh;             /* Lambda-Extension-* (extensions.c) */
    /* a streamed response (mode "streaming" for the running invocation) */
    bool                stream;
    bool                forward;        /* its bytes go to the invocation's on_chunk */
    bool                paused;         /* reading stopped: the receiver is full */
    char                sid[40];        /* the invocation it answers */
    char                tr_etype[128];  /* trailer Lambda-Runtime-Function-Error-Type */
    char               *tr_ebody;       /* trailer Lambda-Runtime-Function-Error-Body (base64) */
    struct event       *ev_resume;
    LIST_ENTRY(rapi_conn) link;
};

struct sl__rapi {
    struct sl_env      *env;
    struct event       *ev_accept;
    LIST_HEAD(, rapi_conn) conns;
    size_t              nconns;
    struct rapi_conn   *waiter;         /* a parked /next */
    bool                delivered;      /* env->inv went to the runtime */
    int64_t             deadline_ms;    /* of the current invocation, Unix ms */
    char                done[40];       /* the request id last answered */
    bool               *gone;           /* set when freed under a callback */
    /* a streamed response that broke off (EOF, malformed chunks): the
     * invocation fails as truncated unless the runtime's exit says more */
    struct event       *ev_trunc;
    char                trunc_sid[40];
    char                trunc_why[96];
};

static void conn_free(struct rapi_conn *c);
static void conn_read(struct bufferevent *bev, void *arg);
static void conn_event(struct bufferevent *bev, short what, void *arg);
static void stream_broken(struct rapi_conn *c, const char *why);

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static const char *status_text(int st)
{
    switch (st) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default:  return "Internal Server Error";
    }
}

/* After a closing answer: read and drop what the client still sends (up
 * to LINGER_MAX, for at most LINGER_S idle) before closing, so that the
 * answer is not lost to a reset of a connection with unread bytes. */
static void on_linger_read(struct bufferevent *bev, void *arg)
{
    struct rapi_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    c->total += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->total > LINGER_MAX)
        conn_free(c);
}

static void on_flushed_close(struct bufferevent *bev, void *arg)
{
    struct rapi_conn *c = arg;
    struct timeval tv = { LINGER_S, 0 };

    shutdown(bufferevent_getfd(bev), SHUT_WR);
    c->total = 0;
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    bufferevent_setcb(bev, on_linger_read, NULL, conn_event, c);
    bufferevent_set_timeouts(bev, &tv, NULL);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_enable(bev, EV_READ);
}

/* Write an answer; `close`: nothing more is read and the connection goes
 * once the answer is out. Written at once when the socket takes it (an
 * answer before the env is destroyed must not wait for the loop). */
static void reply(struct rapi_conn *c, int st, const char *body, bool close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char head[256];
    size_t blen = strlen(body);
    int n;

    if (!c->keepalive)
        close = true;
    n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n%s\r\n", st, status_text(st), blen,
                 close ? "Connection: close\r\n" : "");
    if (evbuffer_get_length(out) == 0) {
        char msg[1024];
        if ((size_t)n + blen <= sizeof(msg)) {
            ssize_t w;
            memcpy(msg, head, (size_t)n);
            memcpy(msg + n, body, blen);
            w = send(bufferevent_getfd(c->bev), msg, (size_t)n + blen,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0)
                w = 0;
            if ((size_t)w < (size_t)n + blen)
                evbuffer_add(out, msg + w, (size_t)n + blen - (size_t)w);
            goto sent;
        }
    }
    evbuffer_add(out, head, (size_t)n);
    evbuffer_add(out, body, blen);
sent:
    if (close) {
        /* freed from the loop, never under the caller: it may still read `c` */
        c->state = C_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_setcb(c->bev, NULL, on_flushed_close, conn_event, c);
        if (evbuffer_get_length(out) == 0)
            bufferevent_trigger(c->bev, EV_WRITE,
                                BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void reply_error(struct rapi_conn *c, int st, const char *etype, const char *msg,
                        bool close)
{
    json_t *o = json_pack("{s:s, s:s}", "errorMessage", msg, "errorType", etype);
    char *s = json_dumps(o, JSON_COMPACT);

    reply(c, st, s ? s : "{}", close);
    free(s);
    json_decref(o);
}

static void reply_bad(struct rapi_conn *c, int st, const char *msg)
{
    SL_DEBUG(SL_DBG_SANDBOX, c->ra->env->pool->inst, "runtime api: %d: %s", st, msg);
    stream_broken(c, msg);
    reply_error(c, st, "InvalidRequest", msg, true);
}

static void reply_transition(struct rapi_conn *c, const char *from, const char *to)
{
    char msg[256];

    snprintf(msg, sizeof(msg), "State transition from %s to %s failed for runtime. Error: "
             "State transition is not allowed", from, to);
    reply_error(c, 403, "InvalidStateTransition", msg, false);
}

/* ------------------------------------------------------------------ */
/* Handing an invocation to /next                                      */

/* Header values come from the outside (the client context): one line. */
static void add_header(struct evbuffer *out, const char *name, const char *v)
{
    evbuffer_add_printf(out, "%s: ", name);
    for (const char *p = v; *p; p++) {
        char ch = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
        evbuffer_add(out, &ch, 1);
    }
    evbuffer_add(out, "\r\n", 2);
}

static void rand_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    size_t i;

    for (i = 0; i < n; i++) {
        if (i % 32 == 0 && getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            for (size_t k = 0; k < sizeof(r); k++)
                r[k] = (unsigned char)((unsigned long)ts.tv_nsec >> (k % 4 * 8)) ^
                       (unsigned char)(k * 131 + i);
        }
        out[i] = hex[(r[i % 32 / 2] >> (i % 2 * 4)) & 15];
    }
    out[n] = '\0';
}

/* `s` is exactly n lowercase hex digits. */
static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    return true;
}

/* Lambda-Runtime-Trace-Id: X-Ray's Root=1-<epoch hex>-<24 hex>;Parent=<16
 * hex>;Sampled=<0|1>. The caller's X-Amzn-Trace-Id (`in`, may be NULL)
 * gives Root and Sampled when well formed; Parent is this invocation's own
 * segment, as Lambda's is; the rest is generated. */
static void trace_id(const char *in, char out[96])
{
    char root[36] = "", parent[17], sampled = '0';
    const char *p = in;

    while (p && *p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        while (len && *p == ' ')
            p++, len--;
        if (len == 5 + 35 && strncmp(p, "Root=1-", 7) == 0 && is_hex(p + 7, 8) &&
            p[15] == '-' && is_hex(p + 16, 24))
            snprintf(root, sizeof(root), "%.35s", p + 5);
        else if (len == 9 && strncmp(p, "Sampled=", 8) == 0 && (p[8] == '0' || p[8] == '1'))
            sampled = p[8];
        p = end ? end + 1 : NULL;
    }
    if (!root[0]) {
        char r24[25];
        rand_hex(r24, 24);
        snprintf(root, sizeof(root), "1-%08llx-%s", (long long)time(NULL) & 0xffffffffLL, r24);
    }
    rand_hex(parent, 16);
    snprintf(out, 96, "Root=%s;Parent=%s;Sampled=%c", root, parent, sampled);
}

void sl__rapi_deliver(struct sl_env *env)
{
    struct sl__rapi *ra = env->rapi;
    const struct sl_function_conf *fn = env->pool->fn;
    struct rapi_conn *c;
    struct evbuffer *out;
    char num[32], trace[96];

    if (!ra || !ra->waiter || !env->inv || env->state != ENV_BUSY || ra->delivered)
        return;
    c = ra->waiter;
    ra->waiter = NULL;
    ra->delivered = true;
    out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n", env->inv->event_len);
    add_header(out, "Lambda-Runtime-Aws-Request-Id", env->inv->request_id);
    snprintf(num, sizeof(num), "%lld", (long long)ra->deadline_ms);
    add_header(out, "Lambda-Runtime-Deadline-Ms", num);
    if (fn->arn)
        add_header(out, "Lambda-Runtime-Invoked-Function-Arn", fn->arn);
    trace_id(env->inv->trace_id, trace);
    add_header(out, "Lambda-Runtime-Trace-Id", trace);
    if (env->inv->client_context && env->inv->client_context[0])
        add_header(out, "Lambda-Runtime-Client-Context", env->inv->client_context);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, env->inv->event, env->inv->event_len);
    /* out now rather than on the next loop turn: the runtime is waiting;
     * the bufferevent writes whatever the socket did not take */
    if (evbuffer_write(out, bufferevent_getfd(c->bev)) < 0 && errno != EAGAIN)
        SL_DEBUG(SL_DBG_SANDBOX, env->pool->inst, "runtime api: write: %s", strerror(errno));
    c->state = C_HEAD;
    /* requests pipelined behind the /next */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
}

void sl__rapi_invoke(struct sl_env *env, int64_t deadline_ms)
{
    if (!env->rapi)
        return;
    env->rapi->delivered = false;
    env->rapi->deadline_ms = deadline_ms;
    sl__ext_invoke(env, deadline_ms);
    sl__rapi_deliver(env);
}

/* ------------------------------------------------------------------ */
/* Streamed responses                                                  */

/* A response head for the running invocation in mode "streaming": mark
 * the request, and send its bytes on as they come when the invocation
 * takes them (else they are collected as any response, up to 6 MB). */
static void stream_begin(struct rapi_conn *c)
{
    struct sl__rapi *ra = c->ra;
    struct sl_env *env = ra->env;
    const char *id, *slash;
    size_t idlen;

    if (strcmp(c->method, "POST") != 0 || strcmp(c->mode, "streaming") != 0 || !env->inv ||
        !ra->delivered || env->state != ENV_BUSY ||
        strncmp(c->path, PREFIX "invocation/", strlen(PREFIX) + 11) != 0)
        return;
    id = c->path + strlen(PREFIX) + 11;
    slash = strchr(id, '/');
    if (!slash || strncmp(slash, "/response", 9) != 0 || (slash[9] && slash[9] != '?'))
        return;
    idlen = (size_t)(slash - id);
    if (idlen != strlen(env->inv->request_id) || memcmp(id, env->inv->request_id, idlen) != 0)
        return;
    c->stream = true;
    c->forward = env->inv->on_chunk != NULL;
    snprintf(c->sid, sizeof(c->sid), "%s", env->inv->request_id);
    if (c->forward && !c->chunked)
        c->over = c->left > SL_STREAM_MAX;
}

/* The invocation this stream answers is still running. */
static bool stream_live(const struct rapi_conn *c)
{
    const struct sl_env *env = c->ra->env;

    return env->inv && env->state == ENV_BUSY && strcmp(env->inv->request_id, c->sid) == 0;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct rapi_conn *c = arg;
    struct sl_env *env = c->ra->env;
    struct timeval tv = { 0, RESUME_MS * 1000 };

    (void)fd, (void)what;
    if (stream_live(c) && env->inv->on_chunk(NULL, 0, env->inv->chunk_arg) >= SL_STREAM_LOW) {
        evtimer_add(c->ev_resume, &tv);
        return;
    }
    c->paused = false;
    bufferevent_enable(c->bev, EV_READ);
    conn_read(c->bev, c); /* what waits in the input */
}

/* The receiver holds too much: stop reading the runtime's socket (it
 * blocks in its writes, as in Lambda) and ask again every RESUME_MS. */
static void stream_pause(struct rapi_conn *c)
{
    struct timeval tv = { 0, RESUME_MS * 1000 };

    if (!c->ev_resume)
        c->ev_resume = evtimer_new(c->ra->env->pool->base, on_resume, c);
    if (!c->ev_resume)
        return; /* cannot wait: go on reading */
    c->paused = true;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_add(c->ev_resume, &tv);
}

/* The stream passed SL_STREAM_MAX: the invocation ends now with Lambda's
 * Function.ResponseSizeTooLarge and the runtime gets its 413 (the
 * connection closes: the rest of its body is not read). Returns true
 * when `c` may be gone. */
static bool stream_cut(struct rapi_conn *c)
{
    struct sl__rapi *ra = c->ra;
    struct sl_env *env = ra->env;
    char msg[160];
    bool gone = false;

    c->over = true;
    if (!stream_live(c))
        return false; /* dropped until the body ends, as any late bytes */
    c->stream = false; /* not a truncation */
    snprintf(ra->done, sizeof(ra->done), "%s", c->sid);
    snprintf(msg, sizeof(msg), "Exceeded maximum allowed payload size (%d bytes).",
             SL_STREAM_MAX);
    reply_error(c, 413, "RequestEntityTooLarge", msg, true);
    snprintf(msg, sizeof(msg), "Response payload size exceeded maximum allowed payload "
             "size (%d bytes).", SL_STREAM_MAX);
    ra->gone = &gone;
    sl__env_result(env, false, NULL, 0, "Function.ResponseSizeTooLarge", msg, NULL);
    if (!gone)
        ra->gone = NULL;
    return true;
}

/* `n` streamed body bytes at the front of `in`: to the invocation's
 * on_chunk up to SL_STREAM_MAX; past it the stream is cut. Returns true
 * when reading stops (`c` may be gone). */
static bool stream_take(struct rapi_conn *c, struct evbuffer *in, size_t n)
{
    struct sl_env *env = c->ra->env;
    size_t room = c->total < SL_STREAM_MAX ? SL_STREAM_MAX - c->total : 0, give;

    c->total += n;
    give = n < room ? n : room;
    if (give && stream_live(c)) {
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)give);
        if (env->inv->on_chunk(p, give, env->inv->chunk_arg) >= SL_STREAM_HIGH)
            stream_pause(c);
    }
    evbuffer_drain(in, n);
    return c->total > SL_STREAM_MAX && !c->over && stream_cut(c);
}

static void on_truncated(evutil_socket_t fd, short what, void *arg)
{
    struct sl__rapi *ra = arg;
    struct sl_env *env = ra->env;
    char msg[200];

    (void)fd, (void)what;
    if (!env->inv || env->state != ENV_BUSY || strcmp(env->inv->request_id, ra->trunc_sid) != 0)
        return; /* it ended otherwise (the runtime's exit, a timeout) */
    snprintf(ra->done, sizeof(ra->done), "%s", ra->trunc_sid);
    snprintf(msg, sizeof(msg), "The runtime's streamed response ended before its last chunk "
             "(%s).", ra->trunc_why);
    sl__env_result(env, false, NULL, 0, "Runtime.TruncatedResponse", msg, NULL);
}

/* A streamed response broke off (the connection closed, or its chunks are
 * malformed): the invocation fails as Runtime.TruncatedResponse after
 * EOF_GRACE_MS, unless it ends otherwise first (a runtime that died gets
 * Runtime.ExitError). */
static void stream_broken(struct rapi_conn *c, const char *why)
{
    struct sl__rapi *ra = c->ra;
    struct timeval tv = { 0, EOF_GRACE_MS * 1000 };

    if (!c->stream || !stream_live(c))
        return;
    c->stream = false;
    if (!ra->ev_trunc)
        ra->ev_trunc = evtimer_new(ra->env->pool->base, on_truncated, ra);
    if (!ra->ev_trunc)
        return; /* the invocation's timeout ends it */
    snprintf(ra->trunc_sid, sizeof(ra->trunc_sid), "%s", c->sid);
    snprintf(ra->trunc_why, sizeof(ra->trunc_why), "%s", why);
    evtimer_add(ra->ev_trunc, &tv);
}

/* A trailer line of a chunked body (NUL-terminated, no CRLF). */
static void stream_trailer(struct rapi_conn *c, char *line)
{
    char *colon = strchr(line, ':'), *v, *end;

    if (!colon)
        return;
    *colon = '\0';
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    if (strcasecmp(line, "Lambda-Runtime-Function-Error-Type") == 0) {
        snprintf(c->tr_etype, sizeof(c->tr_etype), "%s", v);
    } else if (strcasecmp(line, "Lambda-Runtime-Function-Error-Body") == 0) {
        free(c->tr_ebody);
        c->tr_ebody = sl_strdup(v);
    }
}

static int b64_value(char ch)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = ch ? strchr(alphabet, ch) : NULL;

    return p ? (int)(p - alphabet) : -1;
}

/* Standard base64, padding optional, into `out`; false when malformed. */
static bool b64_decode(const char *s, struct evbuffer *out)
{
    size_t n = strlen(s);
    unsigned acc = 0;
    int bits = 0;

    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            unsigned char b;
            bits -= 8;
            b = (unsigned char)((acc >> bits) & 0xff);
            evbuffer_add(out, &b, 1);
        }
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */

static void on_next(struct rapi_conn *c)
{
    struct sl__rapi *ra = c->ra;
    struct sl_env *env = ra->env;

    if (ra->waiter && ra->waiter != c) {
        reply_transition(c, "Ready", "Ready");
        return;
    }
    /* Lambda's runtime may call /next with an invocation unanswered (the
     * RIE allows it): that invocation then runs into its timeout */
    c->state = C_PARKED;
    ra->waiter = c;
    if (env->state == ENV_STARTING && env->kind == ENV_COLD)
        sl__ext_runtime_next(env); /* ready, now or with the extensions; may deliver */
    else
        sl__rapi_deliver(env);
}

/* Parse Lambda's error body; what is missing comes from the header. */
static void finish_error(struct sl_env *env, struct rapi_conn *c, bool init)
{
    size_t len = evbuffer_get_length(c->body);
    const char *b = len ? (const char *)evbuffer_pullup(c->body, -1) : "";
    json_t *doc = len ? json_loadb(b, len, 0, NULL) : NULL, *stack = NULL;
    const char *etype = NULL, *emsg = "";

    if (json_is_object(doc)) {
        json_t *t = json_object_get(doc, "errorType"), *m = json_object_get(doc, "errorMessage"),
               *st = json_object_get(doc, "stackTrace");
        /* Node's runtime calls its stack `trace` */
        if (!json_is_array(st))
            st = json_object_get(doc, "trace");
        if (json_is_string(t) && json_string_length(t)) {
            etype = json_string_value(t);
            /* Lambda answers the runtime's error document as it is */
            json_decref(env->err_doc);
            env->err_doc = json_incref(doc);
        }
        if (json_is_string(m))
            emsg = json_string_value(m);
        if (json_is_array(st)) {
            size_t i;
            json_t *v;
            stack = json_array();
            json_array_foreach(st, i, v)
                if (i < 256 && json_is_string(v))
                    json_array_append(stack, v);
        }
    }
    if (!etype)
        etype = c->etype[0] ? c->etype : init ? "Runtime.Unknown" : "Unhandled";
    if (init) {
        sl__env_finish(env, false, NULL, 0, etype, emsg, stack);
        sl__env_destroy(env);
    } else {
        sl__env_result(env, false, NULL, 0, etype, emsg, stack);
    }
    json_decref(doc);
}

/* POST …/invocation/{id}/response or /error */
static void on_answer(struct rapi_conn *c, const char *id, size_t idlen, bool error)
{
    struct sl__rapi *ra = c->ra;
    struct sl_env *env = ra->env;
    const char *to = error ? "InvocationErrorResponse" : "InvocationResponse";

    if (!env->inv || !ra->delivered || env->state != ENV_BUSY ||
        idlen != strlen(env->inv->request_id) || memcmp(id, env->inv->request_id, idlen) != 0) {
        if (ra->done[0] && idlen == strlen(ra->done) && memcmp(id, ra->done, idlen) == 0)
            reply_transition(c, "RuntimeResponseSentState", to);
        else
            reply_error(c, 400, "InvalidRequestID", "Invalid request ID", c->over);
        return;
    }
    snprintf(ra->done, sizeof(ra->done), "%s", env->inv->request_id);
    if (c->over) {
        char msg[160];
        int max = c->forward ? SL_STREAM_MAX : BODY_MAX;
        snprintf(msg, sizeof(msg), "Exceeded maximum allowed payload size (%d bytes).", max);
        reply_error(c, 413, "RequestEntityTooLarge", msg, true);
        snprintf(msg, sizeof(msg), "Response payload size exceeded maximum allowed payload "
                 "size (%d bytes).", max);
        sl__env_result(env, false, NULL, 0, "Function.ResponseSizeTooLarge", msg, NULL);
        return;
    }
    if (!error && c->mode[0] && strcmp(c->mode, "streaming") != 0) {
        reply_error(c, 400, "InvalidFunctionResponseMode", "Invalid function response mode",
                    false);
        sl__env_result(env, false, NULL, 0, "Runtime.InvalidResponseModeHeader",
                       "invalid Lambda-Runtime-Function-Response-Mode", NULL);
        return;
    }
    reply(c, 202, "{\"status\":\"OK\"}", false);
    if (error) {
        finish_error(env, c, false);
    } else if (c->stream && (c->tr_etype[0] || c->tr_ebody)) {
        /* an error in the trailers: what was streamed stays sent; the
         * error body (base64 of Lambda's error JSON) is the result */
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
        if (c->tr_ebody && !b64_decode(c->tr_ebody, c->body))
            evbuffer_drain(c->body, evbuffer_get_length(c->body));
        snprintf(c->etype, sizeof(c->etype), "%s", c->tr_etype);
        finish_error(env, c, false);
    } else if (c->forward) {
        sl__env_result(env, true, NULL, 0, NULL, NULL, NULL); /* the bytes went on_chunk */
    } else {
        size_t len = evbuffer_get_length(c->body);
        const char *p = len ? (const char *)evbuffer_pullup(c->body, -1) : "";
        sl__env_result(env, true, p, len, NULL, NULL, NULL);
    }
}

static void on_init_error(struct rapi_conn *c)
{
    struct sl_env *env = c->ra->env;

    if (env->state != ENV_STARTING) {
        reply_transition(c, env->state == ENV_BUSY ? "Running" : "Ready", "InitError");
        return;
    }
    if (c->over) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Exceeded maximum allowed payload size (%d bytes).", BODY_MAX);
        reply_error(c, 413, "RequestEntityTooLarge", msg, true);
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
    } else {
        reply(c, 202, "{\"status\":\"OK\"}", false);
    }
    finish_error(env, c, true); /* destroys the env */
}

static void route(struct rapi_conn *c)
{
    const char *p = c->path;
    char *q = strchr(c->path, '?');

    if (q)
        *q = '\0'; /* a query string changes nothing, as with the emulator's router */
    bool get = strcmp(c->method, "GET") == 0, post = strcmp(c->method, "POST") == 0;

    if (strncmp(p, "/2020-01-01/extension/", 22) == 0 || strcmp(p, "/2022-07-01/telemetry") == 0) {
        size_t len = evbuffer_get_length(c->body);
        sl__ext_route(c->ra->env, c, c->method, p, &c->xh,
                      len ? (const char *)evbuffer_pullup(c->body, -1) : "", len, c->over);
        return;
    }
    if (strncmp(p, PREFIX, strlen(PREFIX)) != 0) {
        reply_error(c, 404, "InvalidRequest", "no such path", c->over);
        return;
    }
    p += strlen(PREFIX);
    if (strcmp(p, "invocation/next") == 0) {
        if (!get)
            reply_error(c, 405, "InvalidRequest", "method not allowed", c->over);
        else if (c->over)
            reply_bad(c, 413, "body too large");
        else
            on_next(c);
        return;
    }
    if (strcmp(p, "init/error") == 0) {
        if (!post)
            reply_error(c, 405, "InvalidRequest", "method not allowed", c->over);
        else
            on_init_error(c);
        return;
    }
    if (strncmp(p, "invocation/", 11) == 0) {
        const char *id = p + 11, *slash = strchr(id, '/');
        if (slash && slash > id && (strcmp(slash, "/response") == 0 ||
                                    strcmp(slash, "/error") == 0)) {
            if (!post)
                reply_error(c, 405, "InvalidRequest", "method not allowed", c->over);
            else
                on_answer(c, id, (size_t)(slash - id), strcmp(slash, "/error") == 0);
            return;
        }
    }
    reply_error(c, 404, "InvalidRequest", "no such path", c->over);
}

/* ------------------------------------------------------------------ */
/* HTTP/1.1 requests                                                   */

static bool is_tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The request line and headers, NUL-terminated, without the blank line.
 * Returns 0, or an HTTP status to answer with (and close). */
static int parse_head(struct rapi_conn *c, char *h, const char **why)
{
    char *line = h, *eol, *sp1, *sp2;
    bool have_cl = false, have_te = false;
    unsigned long long cl = 0;
    int nh = 0;

    eol = strstr(line, "\r\n");
    if (eol)
        *eol = '\0';
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == line || (size_t)(sp1 - line) >= sizeof(c->method))
        return *why = "malformed request line", 400;
    *sp1 = *sp2 = '\0';
    for (char *p = line; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return *why = "malformed method", 400;
    snprintf(c->method, sizeof(c->method), "%s", line);
    if (sp1[1] != '/' || strlen(sp1 + 1) >= sizeof(c->path))
        return *why = "malformed or too long request target", 400;
    for (char *p = sp1 + 1; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return *why = "malformed request target", 400;
    snprintf(c->path, sizeof(c->path), "%s", sp1 + 1);
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        c->keepalive = true;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        c->keepalive = false;
    else
        return *why = "unsupported HTTP version", 400;

    for (line = eol ? eol + 2 : NULL; line && *line; line = eol ? eol + 2 : NULL) {
        char *colon, *v, *end;

        eol = strstr(line, "\r\n");
        if (eol)
            *eol = '\0';
        if (++nh > HEADERS_MAX)
            return *why = "too many headers", 431;
        colon = strchr(line, ':');
        if (!colon || colon == line)
            return *why = "malformed header", 400;
        for (char *p = line; p < colon; p++)
            if (!is_tchar((unsigned char)*p))
                return *why = "malformed header name", 400;
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        for (char *p = v; *p; p++)
            if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                return *why = "control character in a header", 400;
        if (strcasecmp(line, "Content-Length") == 0) {
            unsigned long long n = 0;
            if (!*v || strlen(v) > 18)
                return *why = "bad Content-Length", 400;
            for (char *p = v; *p; p++) {
                if (!isdigit((unsigned char)*p))
                    return *why = "bad Content-Length", 400;
                n = n * 10 + (unsigned)(*p - '0');
            }
            if (have_cl && n != cl)
                return *why = "conflicting Content-Length", 400;
            have_cl = true;
            cl = n;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            if (strcasecmp(v, "chunked") != 0 || have_te)
                return *why = "unsupported Transfer-Encoding", 501;
            have_te = true;
        } else if (strcasecmp(line, "Connection") == 0) {
            if (strcasecmp(v, "close") == 0)
                c->keepalive = false;
            else if (strcasecmp(v, "keep-alive") == 0)
                c->keepalive = true;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(v, "100-continue") != 0)
                return *why = "unsupported Expect", 417;
            c->expect = true;
        } else if (strcasecmp(line, "Lambda-Runtime-Function-Error-Type") == 0) {
            snprintf(c->etype, sizeof(c->etype), "%s", v);
        } else if (strcasecmp(line, "Lambda-Runtime-Function-Response-Mode") == 0) {
            snprintf(c->mode, sizeof(c->mode), "%s", v);
        } else if (strncasecmp(line, "Lambda-Extension-", 17) == 0) {
            sl__ext_header(&c->xh, line, v);
        }
    }
    if (have_cl && have_te)
        return *why = "both Content-Length and Transfer-Encoding", 400;
    c->chunked = have_te;
    c->left = (size_t)cl;
    c->over = cl > BODY_MAX;
    return 0;
}

static void request_reset(struct rapi_conn *c)
{
    c->method[0] = c->path[0] = c->etype[0] = c->mode[0] = '\0';
    c->chunked = c->over = c->expect = false;
    c->stream = c->forward = c->paused = false;
    c->sid[0] = c->tr_etype[0] = '\0';
    free(c->tr_ebody);
    c->tr_ebody = NULL;
    c->left = c->total = 0;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    memset(&c->xh, 0, sizeof(c->xh));
    c->state = C_HEAD;
}

/* Body bytes: kept up to BODY_MAX, past it counted and dropped (a
 * forwarded stream: stream_take). Returns true when reading stops and
 * `c` may be gone. */
static bool body_take(struct rapi_conn *c, struct evbuffer *in, size_t n)
{
    if (c->forward)
        return stream_take(c, in, n);
    c->total += n;
    if (c->total > BODY_MAX)
        c->over = true;
    if (c->over) {
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
        evbuffer_drain(in, n);
    } else {
        evbuffer_remove_buffer(in, c->body, n);
    }
    return false;
}

/* One step of the request in `in`. Returns 1 when it can go on, 0 when it
 * needs more bytes or stopped (parked, closing, the conn gone). */
static int conn_step(struct rapi_conn *c, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in);

    if (c->paused)
        return 0; /* on_resume goes on */
    switch (c->state) {
    case C_HEAD: {
        struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        const char *why = "";
        char *h;
        int st;

        if (e.pos < 0) {
            if (avail > HEAD_MAX) {
                reply_bad(c, 431, "request head too large");
                return 0;
            }
            /* a bare-LF head never ends in CRLF CRLF: refuse it early */
            if (avail >= 2 && evbuffer_search(in, "\n\n", 2, NULL).pos >= 0) {
                reply_bad(c, 400, "malformed request head");
                return 0;
            }
            return 0;
        }
        if ((size_t)e.pos + 4 > HEAD_MAX) {
            reply_bad(c, 431, "request head too large");
            return 0;
        }
        h = sl_malloc((size_t)e.pos + 1);
        evbuffer_remove(in, h, (size_t)e.pos);
        h[e.pos] = '\0';
        evbuffer_drain(in, 4);
        if (memchr(h, '\0', (size_t)e.pos)) {
            free(h);
            reply_bad(c, 400, "NUL in the request head");
            return 0;
        }
        st = parse_head(c, h, &why);
        free(h);
        if (st) {
            reply_bad(c, st, why);
            return 0;
        }
        stream_begin(c);
        c->state = c->chunked ? C_CHUNK_SIZE : C_BODY;
        if (c->over && !c->chunked) {
            /* Content-Length says too much: answer now, read nothing more */
            c->keepalive = false;
            break;
        }
        if (c->expect && (c->chunked || c->left) && evbuffer_get_length(in) == 0) {
            /* the client waits for this before it sends the body (curl: past 1 MB) */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            bufferevent_write(c->bev, cont, sizeof(cont) - 1);
        }
        return 1;
    }
    case C_BODY: {
        size_t n = avail < c->left ? avail : c->left;
        if (body_take(c, in, n))
            return 0;
        c->left -= n;
        if (c->left)
            return 0;
        break;
    }
    case C_CHUNK_SIZE: {
        size_t n = 0;
        char line[CHUNK_LINE_MAX + 1], *p, *end;
        struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &n, EVBUFFER_EOL_CRLF_STRICT);
        unsigned long long sz;

        if (e.pos < 0) {
            if (avail > CHUNK_LINE_MAX) {
                reply_bad(c, 400, "chunk size line too long");
                return 0;
            }
            return 0;
        }
        if ((size_t)e.pos > CHUNK_LINE_MAX) {
            reply_bad(c, 400, "chunk size line too long");
            return 0;
        }
        evbuffer_remove(in, line, (size_t)e.pos);
        line[e.pos] = '\0';
        evbuffer_drain(in, n);
        if ((p = strchr(line, ';')))
            *p = '\0';
        errno = 0;
        sz = strtoull(line, &end, 16);
        if (!isxdigit((unsigned char)line[0]) || (*end && *end != ' ' && *end != '\t') ||
            errno || sz > (unsigned long long)BODY_MAX * 16) {
            reply_bad(c, 400, "malformed chunk size");
            return 0;
        }
        c->left = (size_t)sz;
        c->state = sz ? C_CHUNK_DATA : C_TRAILERS;
        return 1;
    }
    case C_CHUNK_DATA: {
        size_t n = avail < c->left ? avail : c->left;
        if (body_take(c, in, n))
            return 0;
        c->left -= n;
        if (c->left)
            return 0;
        c->state = C_CHUNK_CRLF;
        return 1;
    }
    case C_CHUNK_CRLF: {
        char crlf[2];
        if (avail < 2)
            return 0;
        evbuffer_remove(in, crlf, 2);
        if (crlf[0] != '\r' || crlf[1] != '\n') {
            reply_bad(c, 400, "malformed chunk");
            return 0;
        }
        c->state = C_CHUNK_SIZE;
        return 1;
    }
    case C_TRAILERS: {
        /* trailers: a stream's error ones are kept, the blank line ends the body */
        size_t n = 0;
        struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &n, EVBUFFER_EOL_CRLF_STRICT);
        if (e.pos < 0) {
            if (avail > HEAD_MAX) {
                reply_bad(c, 431, "trailers too large");
                return 0;
            }
            return 0;
        }
        c->left += (size_t)e.pos + n; /* trailer bytes (left is 0 after the last chunk) */
        if (c->left > HEAD_MAX) {
            reply_bad(c, 431, "trailers too large");
            return 0;
        }
        if (e.pos > 0) {
            char *line = sl_malloc((size_t)e.pos + 1);
            evbuffer_remove(in, line, (size_t)e.pos);
            line[e.pos] = '\0';
            evbuffer_drain(in, n);
            if (c->stream && !memchr(line, '\0', (size_t)e.pos))
                stream_trailer(c, line);
            free(line);
            return 1;
        }
        evbuffer_drain(in, n);
        break;
    }
    default:
        return 0; /* parked or closing: the input waits */
    }

    /* the request is whole */
    {
        struct sl__rapi *ra = c->ra;
        bool gone = false;

        ra->gone = &gone;
        route(c);
        if (gone)
            return 0;
        ra->gone = NULL;
        if (c->state == C_CLOSING)
            return 0;
        if (c->state == C_PARKED) {
            c->method[0] = c->path[0] = '\0';
            evbuffer_drain(c->body, evbuffer_get_length(c->body));
            return 0;
        }
        request_reset(c);
        return 1;
    }
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct rapi_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (conn_step(c, in))
        ;
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        stream_broken(arg, "the connection closed");
        conn_free(arg);
    }
}

static void conn_free(struct rapi_conn *c)
{
    struct sl__rapi *ra = c->ra;

    if (ra->waiter == c)
        ra->waiter = NULL;
    sl__ext_conn_gone(ra->env, c);
    LIST_REMOVE(c, link);
    ra->nconns--;
    bufferevent_free(c->bev);
    evbuffer_free(c->body);
    if (c->ev_resume)
        event_free(c->ev_resume);
    free(c->tr_ebody);
    free(c);
}

/* Serve one accepted connection `s` (non-blocking; taken in every case). */
static void conn_new(struct sl__rapi *ra, int s)
{
    struct rapi_conn *c;

    if (ra->nconns >= CONNS_MAX + sl__ext_conns(ra->env)) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        if (send(s, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            SL_DEBUG(SL_DBG_SANDBOX, ra->env->pool->inst, "runtime api: busy: %s",
                     strerror(errno));
        close(s);
        return;
    }
    c = sl_calloc(1, sizeof(*c));
    c->ra = ra;
    c->body = evbuffer_new();
    c->bev = bufferevent_socket_new(ra->env->pool->base, s, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev || !c->body) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(s);
        if (c->body)
            evbuffer_free(c->body);
        free(c);
        return;
    }
    c->keepalive = true;
    LIST_INSERT_HEAD(&ra->conns, c, link);
    ra->nconns++;
    bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH);
    bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct sl__rapi *ra = arg;
    int s;

    (void)what;
    for (int i = 0; i < 16; i++) {
        if ((s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0)
            return;
        conn_new(ra, s);
    }
}

/* ------------------------------------------------------------------ */
/* Lifetime                                                            */

static struct sl__rapi *rapi_get(struct sl_env *env)
{
    if (!env->rapi) {
        env->rapi = sl_calloc(1, sizeof(*env->rapi));
        env->rapi->env = env;
        LIST_INIT(&env->rapi->conns);
    }
    return env->rapi;
}

int sl__rapi_attach(struct sl_env *env)
{
    struct sl__rapi *ra = rapi_get(env);

    ra->ev_accept = event_new(env->pool->base, env->proc.rapi, EV_READ | EV_PERSIST, on_accept,
                              ra);
    if (!ra->ev_accept || event_add(ra->ev_accept, NULL) != 0) {
        sl__rapi_free(env);
        return -1;
    }
    return 0;
}

void sl__rapi_adopt(struct sl_env *env, int fd)
{
    conn_new(rapi_get(env), fd);
}

void sl__rapi_free(struct sl_env *env)
{
    struct sl__rapi *ra = env->rapi;

    if (!ra)
        return;
    if (ra->gone)
        *ra->gone = true;
    while (!LIST_EMPTY(&ra->conns))
        conn_free(LIST_FIRST(&ra->conns));
    sl__ext_free(env);
    if (ra->ev_accept)
        event_free(ra->ev_accept);
    if (ra->ev_trunc)
        event_free(ra->ev_trunc);
    free(ra);
    env->rapi = NULL;
}

/* ------------------------------------------------------------------ */
/* For extensions.c                                                    */

void sl__rapi_send(struct rapi_conn *c, int st, const char *headers, const char *body)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool parked = c->state == C_PARKED;

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n%s%s\r\n", st, status_text(st), strlen(body),
                        headers ? headers : "", c->keepalive ? "" : "Connection: close\r\n");
    evbuffer_add(out, body, strlen(body));
    if (evbuffer_write(out, bufferevent_getfd(c->bev)) < 0 && errno != EAGAIN)
        SL_DEBUG(SL_DBG_SANDBOX, c->ra->env->pool->inst, "runtime api: write: %s",
                 strerror(errno));
    if (!c->keepalive) {
        c->state = C_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_setcb(c->bev, NULL, on_flushed_close, conn_event, c);
        bufferevent_trigger(c->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
        return;
    }
    if (parked) {
        request_reset(c);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)))
            bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
    }
}

void sl__rapi_send_error(struct rapi_conn *c, int st, const char *etype, const char *msg)
{
    reply_error(c, st, etype, msg, c->over);
}

void sl__rapi_park(struct rapi_conn *c)
{
    c->state = C_PARKED;
}
