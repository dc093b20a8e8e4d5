/* The HTTP API: Lambda's Invoke API, health, readiness and metrics, on
 * libevent's evhttp in the one loop.
 *
 *   POST /2015-03-31/functions/{name}/invocations[?Qualifier=...]
 *   GET  /healthz   200 "ok" while the process runs
 *   GET  /readyz    200 while accepting, 503 once stopping
 *   GET  /metrics   Prometheus text
 *
 * Errors look like Lambda's: an X-Amzn-ErrorType header naming the
 * exception (what the AWS CLI and SDKs read) and a JSON body
 * {"Type":"User"|"Service","message":...}. Every response carries
 * X-Amzn-RequestId.
 *
 * An invocation waits for the dispatcher in a `struct call`, which owns
 * a copy of the payload (the pool borrows it until the callback). The
 * evhttp request it answers may go away first: evhttp frees it with its
 * connection (sl_api_free, or a connection error on libevent versions
 * that watch the socket while a request is pending). The connection's
 * close callback tells the call, which then drops its answer; the
 * invocation itself always runs to the end. Answers are tracked until
 * evhttp has written them, so sl_api_free can still push out the last
 * ones when the loop stopped right behind them (graceful stop). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "sluice/api.h"
#include "sluice/clock.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define INST "api"

/* Lambda's payload limits (lambda-spec 4.3). */
#define SYNC_MAX       (6 * 1024 * 1024)         /* RequestResponse: 6291456 bytes */
#define ASYNC_MAX      (1024 * 1024)             /* Event: 1048576 bytes */
/* evhttp refuses bodies over this before reading them into memory (it
 * answers a plain 413 itself); up to it, the answer is Lambda's 413. */
#define BODY_CAP       (SYNC_MAX + 2 * 1024 * 1024)
#define HEADERS_MAX    (64 * 1024)               /* request line and headers */
#define IO_TIMEOUT_S   60                        /* idle read or write on a connection */
#define CLIENT_CONTEXT_MAX 3583                  /* base64 bytes of X-Amz-Client-Context */
#define FN_NAME_MAX    64
#define QUALIFIER_MAX  128
#define FN_ARG_MAX     256                       /* the whole FunctionName (ARN forms) */
#define INVOKE_PREFIX  "/2015-03-31/functions/"
#define INVOKE_SUFFIX  "/invocations"
#define ARN_PREFIX     "arn:aws:lambda:us-east-1:000000000000:function:"

struct call;

/* A response being written: tracked so sl_api_free can still deliver it
 * when the loop stopped right after it was sent (graceful stop). */
struct reply {
    LIST_ENTRY(reply)         link;
    struct evhttp_connection *evcon;
};

struct sl_api {
    struct event_base          *base;
    const struct sl_config     *conf;
    struct sl_dispatcher       *d;
    struct sl_metrics          *metrics;
    struct evhttp              *http;
    bool                        accepting;
    LIST_HEAD(, call)           calls;       /* invocations waiting for the dispatcher */
    LIST_HEAD(, reply)          replies;     /* responses not yet fully written */
    struct sl_metric           *m_req;
};

/* One invocation between the dispatcher call and its callback. */
struct call {
    LIST_ENTRY(call)          link;          /* in a->calls while `a` is set */
    struct sl_api            *a;             /* NULL once the API was freed */
    struct evhttp_request    *req;           /* NULL once evhttp freed it */
    struct evhttp_connection *evcon;         /* whose close callback points here */
    bool                      detached;      /* req outlived its connection: ours to free */
    bool                      tail;          /* X-Amz-Log-Type: Tail */
    char                      id[40];        /* request id */
    char                      fn[FN_NAME_MAX + 1];
    char                     *payload;       /* owned; borrowed by the pool until the callback */
    size_t                    len;
    char                     *client_context; /* owned JSON text or NULL */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Request Entity Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return NULL;
    }
}

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:     return "GET";
    case EVHTTP_REQ_POST:    return "POST";
    case EVHTTP_REQ_HEAD:    return "HEAD";
    case EVHTTP_REQ_PUT:     return "PUT";
    case EVHTTP_REQ_DELETE:  return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE:   return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH:   return "PATCH";
    default:                 return "?";
    }
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; caller frees. */
static char *b64_encode(const unsigned char *in, size_t n)
{
    char *out = sl_malloc((n + 2) / 3 * 4 + 1), *o = out;

    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;

        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        *o++ = b64_alphabet[(v >> 18) & 63];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64_alphabet, c) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

/* Standard base64, padding optional; NULL when malformed. The result is
 * NUL-terminated; caller frees. */
static char *b64_decode(const char *in, size_t *out_len)
{
    size_t n = strlen(in), o = 0;
    unsigned acc = 0;
    int bits = 0;
    char *out;

    while (n > 0 && in[n - 1] == '=')
        n--;
    if (strlen(in) - n > 2 || n % 4 == 1)
        return NULL;
    out = sl_malloc(n / 4 * 3 + 3);
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(in[i]);

        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* A JSON string for `s`; text that is not UTF-8 has its bad bytes
 * replaced, so an answer never fails over a handler's odd message. */
static json_t *json_text(const char *s)
{
    json_t *j;
    char *clean, *o;

    if (!s)
        s = "";
    if ((j = json_string(s)))
        return j;
    clean = o = sl_malloc(strlen(s) + 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        *o++ = *p < 0x80 ? (char)*p : '?';
    *o = '\0';
    j = json_string(clean);
    free(clean);
    return j;
}

/* Token-length-independent comparison of a secret. */
static bool ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;

    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)(i < blen ? b[i] : 0);
    return diff == 0;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static void reply_forget(struct reply *w)
{
    evhttp_connection_set_closecb(w->evcon, NULL, NULL);
    LIST_REMOVE(w, link);
    free(w);
}

/* Written in full: evhttp may now close or reuse the connection. */
static void on_reply_written(struct evhttp_request *req, void *arg)
{
    (void)req;
    reply_forget(arg);
}

/* The connection failed before the response was out. */
static void on_reply_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct reply *w = arg;

    (void)evcon;
    LIST_REMOVE(w, link);
    free(w);
}

/* Push out what is still buffered, within `ms`: the loop has stopped, and
 * evhttp_free would otherwise close connections on unsent answers. */
static void flush_replies(struct sl_api *a, int ms)
{
    double end = sl_mono_ms() + ms;
    struct reply *w;

    LIST_FOREACH(w, &a->replies, link) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(w->evcon);
        struct evbuffer *out = bev ? bufferevent_get_output(bev) : NULL;
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

        size_t before = out ? evbuffer_get_length(out) : 0;

        if (!out || fd < 0 || before == 0)
            continue;
        /* a socket bufferevent keeps the start of its output frozen */
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
        SL_DEBUG(SL_DBG_API, INST, "wrote %zu of %zu bytes still queued at shutdown",
                 before - evbuffer_get_length(out), before);
    }
}

/* Send `code` with an optional body (or what is already in the output
 * buffer); every answer goes through here. */
static void respond(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                    const char *ctype, const void *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char cs[8];

    if (id)
        evhttp_add_header(h, "X-Amzn-RequestId", id);
    if (ctype)
        evhttp_add_header(h, "Content-Type", ctype);
    if (len)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    snprintf(cs, sizeof(cs), "%d", code);
    sl_metric_add(a->m_req, cs, 1);
    SL_DEBUG(SL_DBG_API, INST, "%s %.200s -> %d (%s)",
             method_name(evhttp_request_get_command(req)), evhttp_request_get_uri(req), code,
             id ? id : "-");
    if (evcon) {
        struct reply *w = sl_calloc(1, sizeof(*w));

        w->evcon = evcon;
        LIST_INSERT_HEAD(&a->replies, w, link);
        evhttp_connection_set_closecb(evcon, on_reply_conn_close, w);
        evhttp_request_set_on_complete_cb(req, on_reply_written, w);
    }
    evhttp_send_reply(req, code, reason_phrase(code), NULL);
}

/* Lambda's error shape. `extra` (stolen, may be NULL) adds members. */
static void respond_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                          const char *type, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void respond_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                          const char *type, json_t *extra, const char *fmt, ...)
{
    json_t *body = json_object();
    char msg[1024], *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_set_new(body, "Type", json_string(code >= 500 ? "Service" : "User"));
    json_object_set_new(body, "message", json_text(msg));
    if (extra) {
        json_object_update(body, extra);
        json_decref(extra);
    }
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amzn-ErrorType", type);
    respond(a, req, id, code, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

static void respond_unavailable(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    respond_error(a, req, id, 503, "ServiceException",
                  NULL, "sluice is shutting down and accepts no new invocations");
}

static void respond_throttled(struct sl_api *a, struct evhttp_request *req, const char *id,
                              const struct sl_throttle *t)
{
    char ra[16];

    if (t->reason && strcmp(t->reason, "ServiceShuttingDown") == 0) {
        respond_unavailable(a, req, id);
        return;
    }
    snprintf(ra, sizeof(ra), "%d", t->retry_after_s > 0 ? t->retry_after_s : 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
    respond_error(a, req, id, 429, "TooManyRequestsException",
                  json_pack("{s:s}", "Reason",
                            t->reason ? t->reason : "ConcurrentInvocationLimitExceeded"),
                  "Rate Exceeded.");
}

static void respond_method(struct sl_api *a, struct evhttp_request *req, const char *id,
                           const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    respond_error(a, req, id, 405, "MethodNotAllowedException", NULL,
                  "%s is not allowed here; use %s",
                  method_name(evhttp_request_get_command(req)), allow);
}

/* ------------------------------------------------------------------ */
/* Calls waiting for the dispatcher                                    */

static void call_free(struct call *c)
{
    free(c->payload);
    free(c->client_context);
    free(c);
}

/* The connection goes away with the call's request still unanswered. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct call *c = arg;

    /* A request still on the connection is freed with it; one evhttp
     * detached first (client gone) stays alive and is ours to free. */
    if (c->req && evhttp_request_get_connection(c->req) != evcon)
        c->detached = true;
    else
        c->req = NULL;
    c->evcon = NULL;
    SL_DEBUG(SL_DBG_API, INST, "%s: the client is gone; %s %s continues without it", c->id,
             c->fn, c->payload ? "invocation" : "event");
}

/* Take the call off the API and its connection. Returns the request to
 * answer, or NULL when nobody is listening any more. */
static struct evhttp_request *call_release(struct call *c)
{
    struct evhttp_request *req = c->req;

    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    if (c->a)
        LIST_REMOVE(c, link);
    if (req && c->detached) {
        evhttp_request_free(req);
        req = NULL;
    }
    c->req = NULL;
    c->evcon = NULL;
    return req;
}

static void call_hold(struct sl_api *a, struct call *c, struct evhttp_request *req)
{
    c->a = a;
    c->req = req;
    c->evcon = evhttp_request_get_connection(req);
    LIST_INSERT_HEAD(&a->calls, c, link);
    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
}

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct call *c = arg;
    struct sl_api *a = c->a;
    struct evhttp_request *req = call_release(c);
    struct evkeyvalq *h;

    if (!req) {
        SL_DEBUG(SL_DBG_API, INST, "%s: result of %s dropped: nobody is waiting", c->id, c->fn);
        call_free(c);
        return;
    }
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "X-Amz-Executed-Version", "$LATEST");
    if (c->tail) {
        const char *t = r->log_tail ? r->log_tail : "";
        char *b = b64_encode((const unsigned char *)t, strlen(t));

        evhttp_add_header(h, "X-Amz-Log-Result", b);
        free(b);
    }
    if (r->ok) {
        respond(a, req, c->id, 200, "application/json", r->payload, r->payload_len);
    } else {
        json_t *e = json_object();
        char *text;

        json_object_set_new(e, "errorMessage", json_text(r->error_message));
        json_object_set_new(e, "errorType", json_text(r->error_type ? r->error_type
                                                                  : "Runtime.Unknown"));
        json_object_set_new(e, "stackTrace", r->stack && json_is_array(r->stack)
                                                 ? json_incref(r->stack) : json_array());
        text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        evhttp_add_header(h, "X-Amz-Function-Error", "Unhandled");
        respond(a, req, c->id, 200, "application/json", text, text ? strlen(text) : 0);
        free(text);
    }
    call_free(c);
}

static void on_accepted(void *arg, int rc, const char *request_id)
{
    struct call *c = arg;
    struct sl_api *a = c->a;
    struct evhttp_request *req = call_release(c);

    if (!req) {
        SL_DEBUG(SL_DBG_API, INST, "%s: event for %s %s; nobody is waiting", c->id, c->fn,
                 rc == 0 ? "queued" : "not queued");
        call_free(c);
        return;
    }
    if (rc == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amz-Executed-Version",
                          "$LATEST");
        respond(a, req, request_id ? request_id : c->id, 202, NULL, NULL, 0);
    } else {
        SL_WARN(INST, "cannot queue an event for %s: %s", c->fn, sl_strerror(rc));
        respond_error(a, req, c->id, 500, "ServiceException", NULL,
                      "cannot queue the event: %s", sl_strerror(rc));
    }
    call_free(c);
}

/* ------------------------------------------------------------------ */
/* The Invoke API                                                      */

/* Lambda's FunctionName forms, by its pattern:
 * (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?
 * (function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?
 * Fills name and qualifier (empty when none); -1 when it does not match. */
static int parse_function_name(const char *s, char name[FN_NAME_MAX + 1],
                               char qual[QUALIFIER_MAX + 1])
{
    const char *p = s, *q, *n0;
    size_t len;
    int i;

    name[0] = qual[0] = '\0';
    if (strlen(s) > FN_ARG_MAX)
        return -1;
    if (strncmp(p, "arn:", 4) == 0) {
        p += 4;
        if (strncmp(p, "aws", 3) == 0)
            for (p += 3; isalpha((unsigned char)*p) || *p == '-'; p++)
                ;
        if (strncmp(p, ":lambda:", 8) != 0)
            return -1;
        p += 8;
    }
    /* region */
    q = p;
    if (islower((unsigned char)q[0]) && islower((unsigned char)q[1])) {
        q += 2;
        if (strncmp(q, "-gov", 4) == 0)
            q += 4;
        if (*q == '-') {
            const char *w = ++q;
            while (islower((unsigned char)*q))
                q++;
            if (q > w && q[0] == '-' && isdigit((unsigned char)q[1]) && q[2] == ':')
                p = q + 3;
        }
    }
    /* account */
    for (i = 0; i < 12 && isdigit((unsigned char)p[i]); i++)
        ;
    if (i == 12 && p[12] == ':')
        p += 13;
    if (strncmp(p, "function:", 9) == 0)
        p += 9;
    for (n0 = p; isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'; p++)
        ;
    len = (size_t)(p - n0);
    if (len == 0 || len > FN_NAME_MAX)
        return -1;
    memcpy(name, n0, len);
    name[len] = '\0';
    if (*p == ':') {
        n0 = ++p;
        if (strncmp(p, "$LATEST", 7) == 0)
            p += 7;
        else
            for (; isalnum((unsigned char)*p) || *p == '-' || *p == '_'; p++)
                ;
        len = (size_t)(p - n0);
        if (len == 0 || len > QUALIFIER_MAX)
            return -1;
        memcpy(qual, n0, len);
        qual[len] = '\0';
    }
    return *p == '\0' ? 0 : -1;
}

static bool valid_qualifier(const char *q)
{
    size_t n = strlen(q);

    if (n == 0 || n > QUALIFIER_MAX)
        return false;
    for (; *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '$' || *q == '_' || *q == '-'))
            return false;
    return true;
}

/* The configured token the request presents: its index, -1 when there is
 * no Authorization header, -2 when the token is not configured. Accepts
 * "Bearer <token>", and SigV4 ("AWS4-HMAC-SHA256 Credential=<token>/...")
 * so the AWS CLI and SDKs work with AWS_ACCESS_KEY_ID=<token>; the
 * signature is not checked: the key id is the secret. */
static int request_token(const struct sl_api *a, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const struct sl_kvlist *auth = &a->conf->server.auth;
    const char *tok = NULL;
    size_t len = 0;
    int found = -2;

    if (!h)
        return -1;
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        for (tok = h + 7; *tok == ' '; tok++)
            ;
        len = strcspn(tok, " \t");
    } else if (strncmp(h, "AWS4-HMAC-SHA256 ", 17) == 0 && (tok = strstr(h, "Credential="))) {
        tok += 11;
        len = strcspn(tok, "/, \t");
    }
    if (!tok || len == 0)
        return -2;
    /* compare with every token, so the time taken does not say which */
    for (size_t i = 0; i < auth->n; i++)
        if (ct_equal(tok, len, auth->v[i].key, strlen(auth->v[i].key)) && found < 0)
            found = (int)i;
    return found;
}

/* "*" or a comma-separated list of function names. */
static bool token_allows(const char *spec, const char *fn)
{
    size_t fl = strlen(fn);

    while (*spec) {
        const char *s, *e;

        while (*spec == ' ' || *spec == ',')
            spec++;
        s = spec;
        while (*spec && *spec != ',')
            spec++;
        for (e = spec; e > s && e[-1] == ' '; e--)
            ;
        if ((e - s == 1 && *s == '*') || ((size_t)(e - s) == fl && memcmp(s, fn, fl) == 0))
            return true;
    }
    return false;
}

/* Each step below either passes or answers the request itself and
 * returns false (NULL); the order is Lambda's: who you are, what you
 * name, how you invoke, what you send. */

/* server.auth: 401 without a known token. *tokidx: the token's index, or
 * -1 when authentication is off. */
static bool check_token(struct sl_api *a, struct evhttp_request *req, const char *id, int *tokidx)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    *tokidx = -1;
    if (a->conf->server.auth.n == 0)
        return true;
    *tokidx = request_token(a, req);
    if (*tokidx == -1) {
        evhttp_add_header(out, "WWW-Authenticate", "Bearer");
        respond_error(a, req, id, 401, "MissingAuthenticationTokenException", NULL,
                      "Missing Authentication Token: send Authorization: Bearer <token>");
        return false;
    }
    if (*tokidx < 0) {
        evhttp_add_header(out, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        respond_error(a, req, id, 401, "UnrecognizedClientException", NULL,
                      "The security token included in the request is invalid.");
        return false;
    }
    return true;
}

/* The function the path and ?Qualifier= name, into `name`: 400 when
 * malformed, 403 when the token does not cover it, 404 when it does not
 * exist or names a version other than $LATEST. */
static bool resolve_function(struct sl_api *a, struct evhttp_request *req, const char *id,
                             const char *raw_name, const char *query, int tokidx,
                             char name[FN_NAME_MAX + 1])
{
    char qual[QUALIFIER_MAX + 1], *decoded;
    const char *qparam;
    struct evkeyvalq params;
    size_t dlen = 0;
    bool ok = false;

    decoded = evhttp_uridecode(raw_name, 0, &dlen);
    if (!decoded || strlen(decoded) != dlen || parse_function_name(decoded, name, qual) != 0) {
        respond_error(a, req, id, 400, "ValidationException", NULL,
                      "1 validation error detected: Value '%.256s' at 'functionName' failed "
                      "to satisfy constraint: Member must satisfy regular expression pattern: "
                      "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                      "(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?",
                      decoded && strlen(decoded) == dlen ? decoded : "(not text)");
        free(decoded);
        return false;
    }
    free(decoded);
    if (tokidx >= 0 && !token_allows(a->conf->server.auth.v[tokidx].value, name)) {
        respond_error(a, req, id, 403, "AccessDeniedException", NULL,
                      "this token is not allowed to invoke %s", name);
        return false;
    }

    TAILQ_INIT(&params);
    if (query && *query && evhttp_parse_query_str(query, &params) != 0) {
        respond_error(a, req, id, 400, "ValidationException", NULL,
                      "cannot parse the query string");
        return false;
    }
    qparam = evhttp_find_header(&params, "Qualifier");
    if (qparam && !valid_qualifier(qparam)) {
        respond_error(a, req, id, 400, "ValidationException", NULL,
                      "1 validation error detected: Value '%.128s' at 'qualifier' failed to "
                      "satisfy constraint: Member must satisfy regular expression pattern: "
                      "(|[a-zA-Z0-9$_-]+)", qparam);
    } else if (qparam && qual[0] && strcmp(qparam, qual) != 0) {
        respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
                      "The derived qualifier from the function name does not match the "
                      "specified qualifier.");
    } else {
        if (qparam)
            snprintf(qual, sizeof(qual), "%s", qparam);
        /* no versions or aliases here: $LATEST is all there is */
        ok = sl_dispatch_has_function(a->d, name) && (!qual[0] || strcmp(qual, "$LATEST") == 0);
        if (!ok)
            respond_error(a, req, id, 404, "ResourceNotFoundException", NULL,
                          "Function not found: " ARN_PREFIX "%s%s%s", name,
                          qual[0] ? ":" : "", qual);
    }
    evhttp_clear_headers(&params);
    return ok;
}

/* The payload as a NUL-terminated copy the caller owns ("{}" when there
 * is none): 413 over Lambda's limit, 400 when it is not JSON. */
static char *read_payload(struct sl_api *a, struct evhttp_request *req, const char *id,
                          bool sync, size_t *out_len)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body), max = sync ? SYNC_MAX : ASYNC_MAX;
    json_error_t jerr;
    char *payload;
    json_t *j;

    if (len > max) {
        respond_error(a, req, id, 413, "RequestTooLargeException", NULL,
                      "Request must be smaller than %zu bytes for the %s operation", max,
                      sync ? "InvokeFunction" : "InvokeAsync");
        return NULL;
    }
    if (len == 0) {
        *out_len = 2;
        return sl_strdup("{}"); /* Lambda's event when no payload is sent */
    }
    payload = sl_malloc(len + 1);
    evbuffer_remove(body, payload, len);
    payload[len] = '\0';
    j = json_loadb(payload, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j) {
        respond_error(a, req, id, 400, "InvalidRequestContentException", NULL,
                      "Could not parse request body into json: %s (line %d, column %d)",
                      jerr.text, jerr.line, jerr.column);
        free(payload);
        return NULL;
    }
    json_decref(j);
    *out_len = len;
    return payload;
}

/* X-Amz-Client-Context: base64 of a JSON object; *cc gets the JSON text
 * (caller frees) or NULL when absent. 400 when malformed. */
static bool read_client_context(struct sl_api *a, struct evhttp_request *req, const char *id,
                                char **cc)
{
    const char *b64 = evhttp_find_header(evhttp_request_get_input_headers(req),
                                         "X-Amz-Client-Context");
    size_t len = 0;
    json_t *j = NULL;

    *cc = NULL;
    if (!b64)
        return true;
    if (strlen(b64) <= CLIENT_CONTEXT_MAX && (*cc = b64_decode(b64, &len)))
        j = json_loadb(*cc, len, 0, NULL);
    if (!j || !json_is_object(j)) {
        respond_error(a, req, id, 400, "InvalidRequestContentException", NULL,
                      "Client context must be a valid Base64-encoded JSON object of at most "
                      "%d bytes.", CLIENT_CONTEXT_MAX);
        json_decref(j);
        free(*cc);
        *cc = NULL;
        return false;
    }
    json_decref(j);
    return true;
}

/* Hand the invocation to the dispatcher; the call answers when it ends
 * (RequestResponse) or once the event is stored (Event). Takes
 * `payload` and `cc`. */
static void dispatch(struct sl_api *a, struct evhttp_request *req, const char *id,
                     const char *name, bool sync, bool tail, char *payload, size_t len, char *cc)
{
    struct call *c = sl_calloc(1, sizeof(*c));
    struct sl_throttle t = { NULL, 0 };
    int rc;

    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->fn, sizeof(c->fn), "%s", name);
    c->tail = tail;
    if (sync) {
        struct sl_invoke_req ir = { 0 };

        c->payload = payload;
        c->len = len;
        c->client_context = cc;
        ir.event = c->payload;
        ir.event_len = c->len;
        ir.client_context = c->client_context;
        ir.request_id = c->id;
        call_hold(a, c, req);
        rc = sl_dispatch_invoke(a->d, c->fn, &ir, on_result, c, &t);
    } else {
        free(cc); /* Lambda passes a client context to synchronous calls only */
        call_hold(a, c, req);
        rc = sl_dispatch_enqueue(a->d, c->fn, payload, len, on_accepted, c);
        free(payload); /* copied */
    }
    if (rc == 0)
        return; /* `c` belongs to the callback, which may already have run */
    req = call_release(c);
    if (rc == SL_EAGAIN)
        respond_throttled(a, req, id, &t);
    else if (rc == SL_ESTOPPED)
        respond_unavailable(a, req, id);
    else if (rc == SL_ENOTFOUND)
        respond_error(a, req, id, 404, "ResourceNotFoundException", NULL,
                      "Function not found: " ARN_PREFIX "%s", name);
    else
        respond_error(a, req, id, 500, "ServiceException", NULL, "cannot invoke %s: %s", name,
                      sl_strerror(rc));
    call_free(c);
}

static void handle_invoke(struct sl_api *a, struct evhttp_request *req, const char *id,
                          const char *raw_name, const char *query)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *itype = evhttp_find_header(in, "X-Amz-Invocation-Type");
    const char *ltype = evhttp_find_header(in, "X-Amz-Log-Type");
    char name[FN_NAME_MAX + 1], *payload, *cc;
    bool sync = true, dry = false;
    size_t len = 0;
    int tokidx;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        respond_method(a, req, id, "POST");
        return;
    }
    if (!check_token(a, req, id, &tokidx))
        return;
    if (!a->accepting) {
        respond_unavailable(a, req, id);
        return;
    }
    if (!resolve_function(a, req, id, raw_name, query, tokidx, name))
        return;
    if (itype && strcmp(itype, "Event") == 0) {
        sync = false;
    } else if (itype && strcmp(itype, "DryRun") == 0) {
        dry = true;
    } else if (itype && strcmp(itype, "RequestResponse") != 0) {
        respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
                      "Unsupported invocation type '%.64s': use RequestResponse, Event or "
                      "DryRun", itype);
        return;
    }
    if (ltype && strcmp(ltype, "Tail") != 0 && strcmp(ltype, "None") != 0) {
        respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
                      "Unsupported log type '%.64s': use None or Tail", ltype);
        return;
    }
    if (!(payload = read_payload(a, req, id, sync, &len)))
        return;
    if (!read_client_context(a, req, id, &cc)) {
        free(payload);
        return;
    }
    if (dry) {
        /* parameters and permissions checked; nothing runs */
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amz-Executed-Version",
                          "$LATEST");
        respond(a, req, id, 204, NULL, NULL, 0);
        free(cc);
        free(payload);
        return;
    }
    dispatch(a, req, id, name, sync, sync && ltype && strcmp(ltype, "Tail") == 0, payload, len,
             cc);
}

/* ------------------------------------------------------------------ */
/* Routing                                                             */

static void on_request(struct evhttp_request *req, void *arg)
{
    struct sl_api *a = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    size_t plen, pre = strlen(INVOKE_PREFIX), suf = strlen(INVOKE_SUFFIX);
    char id[37];

    sl_uuid(id);
    if (!path)
        path = "";
    plen = strlen(path);
    if (plen > pre + suf && strncmp(path, INVOKE_PREFIX, pre) == 0 &&
        strcmp(path + plen - suf, INVOKE_SUFFIX) == 0 &&
        !memchr(path + pre, '/', plen - pre - suf)) {
        char *raw = sl_strndup(path + pre, plen - pre - suf);

        handle_invoke(a, req, id, raw, evhttp_uri_get_query(u));
        free(raw);
    } else if (strcmp(path, "/healthz") == 0) {
        if (get)
            respond(a, req, id, 200, "text/plain; charset=utf-8", "ok\n", 3);
        else
            respond_method(a, req, id, "GET");
    } else if (strcmp(path, "/readyz") == 0) {
        if (!get)
            respond_method(a, req, id, "GET");
        else if (a->accepting)
            respond(a, req, id, 200, "text/plain; charset=utf-8", "ready\n", 6);
        else
            respond(a, req, id, 503, "text/plain; charset=utf-8", "stopping\n", 9);
    } else if (strcmp(path, "/metrics") == 0) {
        if (get) {
            sl_prom_render(a->metrics, evhttp_request_get_output_buffer(req));
            respond(a, req, id, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0);
        } else {
            respond_method(a, req, id, "GET");
        }
    } else {
        respond_error(a, req, id, 404, "UnknownOperationException", NULL,
                      "no operation at %s %.200s: sluice serves POST " INVOKE_PREFIX
                      "{name}" INVOKE_SUFFIX ", GET /healthz, /readyz and /metrics",
                      method_name(cmd), path);
    }
}

/* ------------------------------------------------------------------ */

/* "host:port", "[v6]:port" or ":port" (all addresses). */
static int parse_listen(const char *s, char *host, size_t hn, int *port, struct sl_err *err)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    const char *h = s;
    size_t hl;
    char *end;
    long p;

    if (!colon)
        return sl_err_set(err, SL_ECONFIG, false, "server.listen '%s' is not host:port",
                          s ? s : "");
    hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && colon[-1] == ']') {
        h = s + 1;
        hl -= 2;
    }
    p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end || p < 0 || p > 65535)
        return sl_err_set(err, SL_ECONFIG, false, "server.listen '%s': bad port", s);
    if (hl == 0) {
        h = "0.0.0.0";
        hl = strlen(h);
    }
    if (hl >= hn)
        return sl_err_set(err, SL_ECONFIG, false, "server.listen '%s': host too long", s);
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

int sl_api_new(struct event_base *base, const struct sl_config *conf, struct sl_dispatcher *d,
               struct sl_metrics *m, struct sl_api **out, struct sl_err *err)
{
    struct sl_api *a = sl_calloc(1, sizeof(*a));
    struct evhttp_bound_socket *sock;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], shown[INET6_ADDRSTRLEN] = "";
    bool loopback = false;
    int port = 0, rc;

    a->base = base;
    a->conf = conf;
    a->d = d;
    a->metrics = m;
    a->accepting = true;
    LIST_INIT(&a->calls);
    LIST_INIT(&a->replies);
    a->m_req = sl_metrics_family(m, "sluice_http_requests_total", SL_METRIC_COUNTER,
                                 "HTTP requests answered by the API, by status code.", "code");

    rc = parse_listen(conf->server.listen, host, sizeof(host), &port, err);
    if (rc != 0)
        goto fail;
    a->http = evhttp_new(base);
    if (!a->http) {
        rc = sl_err_set(err, SL_ENOMEM, false, "cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_max_body_size(a->http, BODY_CAP);
    evhttp_set_max_headers_size(a->http, HEADERS_MAX);
    evhttp_set_timeout(a->http, IO_TIMEOUT_S);
    /* read (and drop) an oversized body before answering 413, so a client
     * still sending it sees the answer instead of a reset connection */
    evhttp_set_flags(a->http, EVHTTP_SERVER_LINGERING_CLOSE);
    /* every method reaches on_request, which answers 405 Lambda's way */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_default_content_type(a->http, "application/json");

    errno = 0;
    sock = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (!sock) {
        rc = sl_err_set(err, SL_EIO, false, "cannot listen on %s (server.listen): %s",
                        conf->server.listen,
                        errno ? strerror(errno) : "cannot resolve or bind the address");
        goto fail;
    }
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, shown, sizeof(shown));
            port = ntohs(s6->sin6_port);
            loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, shown, sizeof(shown));
            port = ntohs(s4->sin_port);
            loopback = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
        }
    }
    SL_INFO(INST, "listening on http://%s%s%s:%d (Invoke API, /healthz, /readyz, /metrics)%s",
            strchr(shown, ':') ? "[" : "", shown[0] ? shown : host,
            strchr(shown, ':') ? "]" : "", port,
            conf->server.auth.n ? "; invocations need a token (server.auth)" : "");
    if (!loopback && conf->server.auth.n == 0)
        SL_WARN(INST, "%s is not a loopback address and server.auth is empty: whoever reaches "
                "it can invoke every function", conf->server.listen);
    *out = a;
    return 0;

fail:
    sl_api_free(a);
    return rc;
}

void sl_api_stop_accepting(struct sl_api *a)
{
    if (!a || !a->accepting)
        return;
    a->accepting = false;
    SL_INFO(INST, "not accepting new invocations; /readyz answers 503");
}

void sl_api_free(struct sl_api *a)
{
    struct call *c;
    struct reply *w;

    if (!a)
        return;
    /* the loop is over: whoever still waits for a result gets a 503 now */
    LIST_FOREACH(c, &a->calls, link) {
        struct evhttp_request *req = c->req;

        if (!req || c->detached)
            continue;
        if (c->evcon)
            evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        c->req = NULL;
        c->evcon = NULL;
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        respond_error(a, req, c->id, 503, "ServiceException", NULL,
                      "sluice stopped before the invocation finished (shutdown_grace_s); "
                      "it may have run in part");
    }
    flush_replies(a, 1000);
    /* frees every connection with the requests on it; their calls hear
     * it through on_conn_close, their replies through on_reply_conn_close */
    if (a->http)
        evhttp_free(a->http);
    while ((w = LIST_FIRST(&a->replies))) {
        LIST_REMOVE(w, link);
        free(w);
    }
    /* what is still pending finishes without anyone to answer */
    while ((c = LIST_FIRST(&a->calls))) {
        LIST_REMOVE(c, link);
        if (c->req && c->detached)
            evhttp_request_free(c->req);
        c->req = NULL;
        c->evcon = NULL;
        c->a = NULL;
    }
    free(a);
}
