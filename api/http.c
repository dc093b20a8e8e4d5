/* The HTTP API's server: libevent's evhttp in the one loop, routing,
 * authentication (server.auth), health, readiness and metrics. The Invoke
 * API itself is in invoke.c.
 *
 *   POST /2015-03-31/functions/{name}/invocations   (invoke.c)
 *   POST /2021-11-15/functions/{name}/response-streaming-invocations   (invoke.c)
 *   Lambda's management paths                        (mgmt.c)
 *   GET  /healthz   200 "ok" while the process runs
 *   GET  /readyz    200 while accepting, 503 once stopping
 *   GET  /metrics   Prometheus text
 *
 * Errors look like Lambda's: an X-Amzn-ErrorType header naming the
 * exception (what the AWS CLI and SDKs read) and a JSON body
 * {"Type":"User"|"Service","message":...}. Every response carries
 * X-Amzn-RequestId. Answers are tracked until evhttp has written them,
 * so sl_api_free can still push out the last ones when the loop stopped
 * right behind them (graceful stop). */
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

#include "internal.h"
#include "sluice/api.h"
#include "sluice/clock.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

/* evhttp refuses bodies over this before reading them into memory (it
 * answers a plain 413 itself); up to it, the answer is Lambda's 413. */
#define BODY_CAP       (SL_PAYLOAD_MAX + 2 * 1024 * 1024)
#define HEADERS_MAX    (64 * 1024)               /* request line and headers */
#define IO_TIMEOUT_S   60                        /* idle read or write on a connection */

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


/* A JSON string for `s`; text that is not UTF-8 has its bad bytes
 * replaced, so an answer never fails over a handler's odd message. */
json_t *sl__api_json_text(const char *s)
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

/* Every answer goes through here. */
void sl__api_respond(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
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

void sl__api_respond_error(struct sl_api *a, struct evhttp_request *req, const char *id,
                           int code, const char *type, json_t *extra, const char *fmt, ...)
{
    json_t *body = json_object();
    char msg[1024], *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_set_new(body, "Type", json_string(code >= 500 ? "Service" : "User"));
    json_object_set_new(body, "message", sl__api_json_text(msg));
    if (extra) {
        json_object_update(body, extra);
        json_decref(extra);
    }
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amzn-ErrorType", type);
    sl__api_respond(a, req, id, code, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

void sl__api_held(struct sl_api *a, const char *where, size_t n)
{
    size_t *max = strcmp(where, "gate") == 0 ? &a->held_gate : &a->held_evhttp;

    if (n <= *max || !a->m_held)
        return;
    *max = n;
    sl_metric_set(a->m_held, where, (double)n);
}

void sl__api_respond_method(struct sl_api *a, struct evhttp_request *req, const char *id,
                            const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    sl__api_respond_error(a, req, id, 405, "MethodNotAllowedException", NULL,
                          "%s is not allowed here; use %s",
                          method_name(evhttp_request_get_command(req)), allow);
}

/* ------------------------------------------------------------------ */
/* Authentication                                                      */

static const char *scheme_value(const char *h, const char *scheme)
{
    size_t n = strlen(scheme);

    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, scheme, n) != 0 || h[n] != ' ')
        return NULL;
    for (h += n; *h == ' '; h++)
        ;
    return h;
}

static void authn_fail(struct sl_authn *out, int code, const char *type, const char *www,
                       const char *msg)
{
    out->code = code;
    out->type = type;
    out->www = www;
    out->msg = msg;
    out->entry = NULL;
}

void sl__api_authenticate(const struct sl_server_conf *sc, const char *method, const char *target,
                          const struct sl_hdrs *h, const char *payload_sha256, long long now,
                          struct sl_authn *out)
{
    const json_t *auth = sc->auth;
    const char *hv = h->get(h->ctx, "authorization", 0), *tok, *why = NULL, *key;
    json_t *e, *found = NULL;

    memset(out, 0, sizeof(*out));
    if (!auth || json_object_size(auth) == 0)
        return;
    if (!hv || h->get(h->ctx, "authorization", 1)) {
        authn_fail(out, 401, "MissingAuthenticationTokenException", "Bearer",
                   hv ? "Send one Authorization header"
                      : "Missing Authentication Token: send Authorization: Bearer <token> or "
                        "sign the request (AWS Signature Version 4)");
        return;
    }
    if ((tok = scheme_value(hv, "Bearer"))) {
        size_t len = strcspn(tok, " \t");

        /* compare with every token, so the time taken does not say which;
         * key pairs' ids are not secrets and never match */
        json_object_foreach((json_t *)auth, key, e)
            if (ct_equal(tok, len, key, strlen(key)) && !found &&
                !json_object_get(e, "secret") && tok[len] == '\0')
                found = e;
        if (!found) {
            authn_fail(out, 401, "UnrecognizedClientException", "Bearer error=\"invalid_token\"",
                       "The security token included in the request is invalid.");
            return;
        }
        out->entry = found;
        return;
    }
    if (strncmp(hv, "AWS4-HMAC-SHA256 ", 17) == 0) {
        struct sl_sigv4 sv;
        const char *secret, *hdr_hash = h->get(h->ctx, "x-amz-content-sha256", 0);
        int rc;

        if (sl__sigv4_parse(hv, &sv) != 0) {
            authn_fail(out, 400, "IncompleteSignatureException", NULL,
                       "The Authorization header is not a well-formed AWS4-HMAC-SHA256 "
                       "signature (Credential, SignedHeaders, Signature).");
            return;
        }
        found = json_object_get(auth, sv.key_id);
        secret = found ? json_string_value(json_object_get(found, "secret")) : NULL;
        if (!secret) {
            /* unknown, or a bearer token: a key id is not a secret */
            authn_fail(out, 401, "UnrecognizedClientException", NULL,
                       found ? "The security token included in the request is invalid: this "
                               "is a bearer token, not an access key id with a secret "
                               "(server.auth)."
                             : "The security token included in the request is invalid.");
            return;
        }
        if (hdr_hash && payload_sha256 && strcasecmp(hdr_hash, payload_sha256) != 0) {
            authn_fail(out, 400, "InvalidSignatureException", NULL,
                       "X-Amz-Content-Sha256 is not the SHA-256 of the body.");
            return;
        }
        if (!payload_sha256)
            payload_sha256 = hdr_hash;
        if (payload_sha256) {
            rc = sl__sigv4_verify(&sv, secret, method, target, h, payload_sha256, now, &why);
        } else {
            /* before the body: everything but the signature itself */
            rc = sl__sigv4_verify(&sv, secret, method, target, h,
                                  "0000000000000000000000000000000000000000000000000000000000000000",
                                  now, &why);
            if (rc == -3)
                rc = 0;
        }
        if (rc != 0) {
            authn_fail(out, 403, "InvalidSignatureException", NULL, why);
            return;
        }
        out->entry = found;
        return;
    }
    authn_fail(out, 401, "UnrecognizedClientException", "Bearer error=\"invalid_token\"",
               "The security token included in the request is invalid.");
}

bool sl__api_metrics_allowed(const struct sl_server_conf *sc, const struct sl_hdrs *h)
{
    const char *want = sc->metrics_auth, *hv, *tok;
    size_t len;

    if (!want || !*want)
        return true;
    hv = h->get(h->ctx, "authorization", 0);
    if (!hv || h->get(h->ctx, "authorization", 1) || !(tok = scheme_value(hv, "Bearer")))
        return false;
    len = strcspn(tok, " \t");
    return tok[len] == '\0' && ct_equal(tok, len, want, strlen(want));
}

/* A server.auth entry's scopes (SL_SCOPE_*); invoke when not given. */
int sl__api_scopes(const json_t *entry)
{
    const json_t *v = json_object_get(entry, "scopes");

    return v ? (int)json_integer_value(v) : SL_SCOPE_INVOKE;
}

bool sl__api_token_allows(const json_t *entry, const char *fn)
{
    return (sl__api_scopes(entry) & SL_SCOPE_INVOKE) && sl__api_token_covers(entry, fn);
}

/* A server.auth entry's functions: "*" or a comma-separated list. */
bool sl__api_token_covers(const json_t *entry, const char *fn)
{
    const char *spec = json_string_value(json_object_get(entry, "functions"));
    size_t fl = strlen(fn);

    while (spec && *spec) {
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

/* evhttp's headers through struct sl_hdrs. */
static const char *evhdr_get(const void *ctx, const char *name, size_t idx)
{
    const struct evkeyvalq *q = ctx;
    const struct evkeyval *kv;

    TAILQ_FOREACH(kv, q, next)
        if (strcasecmp(kv->key, name) == 0 && idx-- == 0)
            return kv->value;
    return NULL;
}

void sl__api_evhdrs(struct evhttp_request *req, struct sl_hdrs *h)
{
    h->get = evhdr_get;
    h->ctx = evhttp_request_get_input_headers(req);
}

/* The body's SHA-256 in hex. */
static void body_sha256(struct evhttp_request *req, char out[65])
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(b);

    sl__sha256_hex(n ? evbuffer_pullup(b, -1) : (const unsigned char *)"", n, out);
}

bool sl__api_check_token(struct sl_api *a, struct evhttp_request *req, const char *id,
                         json_t **entry)
{
    struct sl_authn r;
    struct sl_hdrs h;
    char hash[65];

    *entry = NULL;
    if (!a->conf->server.auth || json_object_size(a->conf->server.auth) == 0)
        return true;
    sl__api_evhdrs(req, &h);
    body_sha256(req, hash);
    sl__api_authenticate(&a->conf->server, method_name(evhttp_request_get_command(req)),
                         evhttp_request_get_uri(req), &h, hash, (long long)time(NULL), &r);
    if (r.code) {
        if (r.www)
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", r.www);
        sl__api_respond_error(a, req, id, r.code, r.type, NULL, "%s", r.msg);
        return false;
    }
    *entry = r.entry;
    return true;
}

/* ------------------------------------------------------------------ */
/* Health and live reload                                              */

/* {"status":"ready"|"stopping"} and, after a reload, "last_reload". */
static void respond_ready(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    json_t *b = json_pack("{s:s}", "status", a->accepting ? "ready" : "stopping");
    char *text;

    if (b && a->last_reload)
        json_object_set(b, "last_reload", a->last_reload);
    text = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    sl__api_respond(a, req, id, a->accepting ? 200 : 503, "application/json", text ? text : "{}",
                    text ? strlen(text) : 2);
    free(text);
}

/* POST /admin/reload, body {"config": PATH} or empty. The management API's
 * admin scope, when there is one, is checked here; until then a credential
 * must be allowed every function ("*"), the widest invocation right. */
static void handle_reload(struct sl_api *a, struct evhttp_request *req, const char *id,
                          enum evhttp_cmd_type cmd)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    json_t *entry, *body = NULL, *ans;
    const char *config = NULL;
    char *msg = NULL, *text;
    int rc;

    if (cmd != EVHTTP_REQ_POST) {
        sl__api_respond_method(a, req, id, "POST");
        return;
    }
    if (!sl__api_check_token(a, req, id, &entry))
        return;
    if (entry && (!(sl__api_scopes(entry) & SL_SCOPE_ADMIN) ||
                  !sl__api_token_covers(entry, "*"))) {
        sl__api_respond_error(a, req, id, 403, "AccessDeniedException", NULL,
                              "reloading needs a credential with the admin scope for every "
                              "function (\"*\")");
        return;
    }
    if (!a->reload) {
        sl__api_respond_error(a, req, id, 501, "ServiceException", NULL,
                              "this server cannot reload");
        return;
    }
    if (evbuffer_get_length(in) > 0) {
        size_t n = evbuffer_get_length(in);
        body = json_loadb((const char *)evbuffer_pullup(in, -1), n, 0, NULL);
        if (!json_is_object(body) ||
            (json_object_get(body, "config") && !json_is_string(json_object_get(body, "config")))) {
            json_decref(body);
            sl__api_respond_error(a, req, id, 400, "InvalidRequestContentException", NULL,
                                  "the body must be a JSON object {\"config\": PATH}");
            return;
        }
        config = json_string_value(json_object_get(body, "config"));
    }
    rc = a->reload(a->reload_arg, config, &msg);
    ans = json_pack("{s:b, s:o}", "ok", rc == 0, rc == 0 ? "summary" : "errors",
                    sl__api_json_text(msg));
    text = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
    json_decref(ans);
    json_decref(body);
    free(msg);
    sl__api_respond(a, req, id, rc == 0 ? 200 : 400, "application/json", text ? text : "{}",
                    text ? strlen(text) : 2);
    free(text);
}

void sl_api_on_reload(struct sl_api *a, sl_api_reload_fn fn, void *arg)
{
    a->reload = fn;
    a->reload_arg = arg;
}

void sl_api_reload_status(struct sl_api *a, bool ok, const char *msg, int64_t at_ms)
{
    char at[40];
    time_t sec = (time_t)(at_ms / 1000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(at + strlen(at), sizeof(at) - strlen(at), ".%03dZ", (int)(at_ms % 1000));
    json_decref(a->last_reload);
    a->last_reload = json_pack("{s:b, s:o, s:s}", "ok", ok, ok ? "summary" : "error",
                               sl__api_json_text(msg), "at", at);
}

void sl_api_set_config(struct sl_api *a, const struct sl_config *conf)
{
    a->conf = conf;
    sl__gate_set_limits(a);
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
    size_t plen, name = 0, nlen = 0;
    int route;
    char id[37];

    sl_uuid(id);
    if (!path)
        path = "";
    plen = strlen(path);
    if ((route = sl__api_invoke_route(path, plen, &name, &nlen)) != 0) {
        char *raw = sl_strndup(path + name, nlen);

        sl__invoke_handle(a, req, id, raw, evhttp_uri_get_query(u), route == 2);
        free(raw);
    } else if (strcmp(path, "/healthz") == 0) {
        if (get)
            sl__api_respond(a, req, id, 200, "text/plain; charset=utf-8", "ok\n", 3);
        else
            sl__api_respond_method(a, req, id, "GET");
    } else if (strcmp(path, "/readyz") == 0) {
        if (!get)
            sl__api_respond_method(a, req, id, "GET");
        else
            respond_ready(a, req, id);
    } else if (strcmp(path, RELOAD_PATH) == 0) {
        handle_reload(a, req, id, cmd);
    } else if (strcmp(path, "/metrics") == 0) {
        struct sl_hdrs h;

        sl__api_evhdrs(req, &h);
        if (get && !sl__api_metrics_allowed(&a->conf->server, &h)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                              "Bearer");
            sl__api_respond_error(a, req, id, 401, "MissingAuthenticationTokenException", NULL,
                                  "/metrics needs the token of server.metrics_auth: send "
                                  "Authorization: Bearer <token>");
        } else if (get) {
            sl_prom_render(a->metrics, evhttp_request_get_output_buffer(req));
            sl__api_respond(a, req, id, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0);
        } else {
            sl__api_respond_method(a, req, id, "GET");
        }
    } else if (!sl__console_handle(a, req, id, path, evhttp_uri_get_query(u)) &&
               !sl__mgmt_handle(a, req, id, path, evhttp_uri_get_query(u))) {
        sl__api_respond_error(a, req, id, 404, "UnknownOperationException", NULL,
                              "no operation at %s %.200s: sluice serves POST " INVOKE_PREFIX
                              "{name}" INVOKE_SUFFIX ", POST " STREAM_PREFIX "{name}"
                              STREAM_SUFFIX ", POST " RELOAD_PATH ", the management API "
                              "(README), GET /healthz, /readyz, /metrics, /logs/tail and "
                              "/console",
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
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], shown[INET6_ADDRSTRLEN] = "";
    bool loopback = false, auth_on = conf->server.auth && json_object_size(conf->server.auth);
    int port = 0, rc;

    sl__gate_init(a);
    a->base = base;
    a->conf = conf;
    a->d = d;
    a->metrics = m;
    a->accepting = true;
    a->started_ms = sl_wall_ms();
    LIST_INIT(&a->calls);
    LIST_INIT(&a->replies);
    sl__logs_init(a);
    a->m_req = sl_metrics_family(m, "sluice_http_requests_total", SL_METRIC_COUNTER,
                                 "HTTP requests answered by the API, by status code.", "code");
    a->m_held = sl_metrics_family(m, "sluice_api_stream_held_bytes_max", SL_METRIC_GAUGE,
                                  "The most bytes of an answer held for a client that reads "
                                  "slower than the function streams, by where they wait.",
                                  "where");
    a->m_pauses = sl_metrics_family(m, "sluice_api_stream_pauses_total", SL_METRIC_COUNTER,
                                    "Times a streamed response stopped reading the function "
                                    "until its client caught up.", NULL);
    sl__console_init(a);

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

    rc = sl__gate_start(a, host, port, err);
    if (rc != 0)
        goto fail;
    if (getsockname(evconnlistener_get_fd(a->listener), (struct sockaddr *)&ss, &sl) == 0) {
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
    SL_INFO(INST, "listening on http://%s%s%s:%d (Invoke API, /healthz, /readyz, /metrics, "
            "/logs/tail)%s",
            strchr(shown, ':') ? "[" : "", shown[0] ? shown : host,
            strchr(shown, ':') ? "]" : "", port,
            auth_on ? "; invocations need a credential (server.auth)" : "");
    if (!loopback && !auth_on)
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
    struct reply *w;

    if (!a)
        return;
    sl__logs_free(a);
    /* the loop is over: whoever still waits for a result gets a 503 now */
    sl__invoke_abandon(a);
    flush_replies(a, 1000);
    sl__gate_flush(a, 1000);
    /* frees every connection with the requests on it; their calls hear
     * it through their close callback, their replies through
     * on_reply_conn_close */
    if (a->http)
        evhttp_free(a->http);
    sl__gate_free(a);
    while ((w = LIST_FIRST(&a->replies))) {
        LIST_REMOVE(w, link);
        free(w);
    }
    /* what is still pending finishes without anyone to answer */
    sl__invoke_orphan(a);
    sl__mgmt_free(a);
    json_decref(a->last_reload);
    sl__console_free(a);
    free(a);
}
