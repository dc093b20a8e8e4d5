/* Lambda's Invoke API:
 *
 *   POST /2015-03-31/functions/{name}/invocations[?Qualifier=...]
 *
 * Request checks in Lambda's order (who you are, what you name, how you
 * invoke, what you send), RequestResponse / Event / DryRun, Tail logs
 * (X-Amz-Log-Result) and Lambda's error shapes for function errors.
 *
 * An invocation waits for the dispatcher in a `struct call`, which owns
 * a copy of the payload (the pool borrows it until the callback). The
 * evhttp request it answers may go away first: evhttp frees it with its
 * connection (sl_api_free, or a connection error on libevent versions
 * that watch the socket while a request is pending). The connection's
 * close callback tells the call, which then drops its answer; the
 * invocation itself always runs to the end. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "internal.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define CLIENT_CONTEXT_MAX 3583                  /* base64 bytes of X-Amz-Client-Context */

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
/* Base64 (X-Amz-Log-Result, X-Amz-Client-Context)                     */

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

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static void respond_unavailable(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    sl__api_respond_error(a, req, id, 503, "ServiceException",
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
    sl__api_respond_error(a, req, id, 429, "TooManyRequestsException",
                          json_pack("{s:s}", "Reason",
                                    t->reason ? t->reason : "ConcurrentInvocationLimitExceeded"),
                          "Rate Exceeded.");
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
        sl__api_respond(a, req, c->id, 200, "application/json", r->payload, r->payload_len);
    } else {
        json_t *e = json_object();
        char *text;

        json_object_set_new(e, "errorMessage", sl__api_json_text(r->error_message));
        json_object_set_new(e, "errorType", sl__api_json_text(r->error_type ? r->error_type
                                                                           : "Runtime.Unknown"));
        json_object_set_new(e, "requestId", sl__api_json_text(r->request_id ? r->request_id : ""));
        json_object_set_new(e, "stackTrace", r->stack && json_is_array(r->stack)
                                                 ? json_incref(r->stack) : json_array());
        text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        evhttp_add_header(h, "X-Amz-Function-Error", "Unhandled");
        sl__api_respond(a, req, c->id, 200, "application/json", text, text ? strlen(text) : 0);
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
        sl__api_respond(a, req, request_id ? request_id : c->id, 202, NULL, NULL, 0);
    } else {
        SL_WARN(INST, "cannot queue an event for %s: %s", c->fn, sl_strerror(rc));
        sl__api_respond_error(a, req, c->id, 500, "ServiceException", NULL,
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
int sl__api_parse_function_name(const char *s, char name[FN_NAME_MAX + 1],
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

/* Each step below either passes or answers the request itself and
 * returns false (NULL); the order is Lambda's: who you are
 * (sl__api_check_token), what you name, how you invoke, what you send. */

/* The function the path and ?Qualifier= name, into `name`: 400 when
 * malformed, 403 when the token does not cover it, 404 when it does not
 * exist or names a version other than $LATEST. */
static bool resolve_function(struct sl_api *a, struct evhttp_request *req, const char *id,
                             const char *raw_name, const char *query, const json_t *entry,
                             char name[FN_NAME_MAX + 1])
{
    char qual[QUALIFIER_MAX + 1], *decoded;
    const char *qparam;
    struct evkeyvalq params;
    size_t dlen = 0;
    bool ok = false;

    decoded = evhttp_uridecode(raw_name, 0, &dlen);
    if (!decoded || strlen(decoded) != dlen || sl__api_parse_function_name(decoded, name, qual) != 0) {
        sl__api_respond_error(a, req, id, 400, "ValidationException", NULL,
                              "1 validation error detected: Value '%.256s' at 'functionName' "
                              "failed to satisfy constraint: Member must satisfy regular "
                              "expression pattern: "
                              "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                              "(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)"
                              "(:(\\$LATEST|[a-zA-Z0-9-_]+))?",
                              decoded && strlen(decoded) == dlen ? decoded : "(not text)");
        free(decoded);
        return false;
    }
    free(decoded);
    if (entry && !sl__api_token_allows(entry, name)) {
        sl__api_respond_error(a, req, id, 403, "AccessDeniedException", NULL,
                              "this token is not allowed to invoke %s", name);
        return false;
    }

    TAILQ_INIT(&params);
    if (query && *query && evhttp_parse_query_str(query, &params) != 0) {
        sl__api_respond_error(a, req, id, 400, "ValidationException", NULL,
                              "cannot parse the query string");
        return false;
    }
    qparam = evhttp_find_header(&params, "Qualifier");
    if (qparam && !valid_qualifier(qparam)) {
        sl__api_respond_error(a, req, id, 400, "ValidationException", NULL,
                              "1 validation error detected: Value '%.128s' at 'qualifier' "
                              "failed to satisfy constraint: Member must satisfy regular "
                              "expression pattern: "
                              "(|[a-zA-Z0-9$_-]+)", qparam);
    } else if (qparam && qual[0] && strcmp(qparam, qual) != 0) {
        sl__api_respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
                              "The derived qualifier from the function name does not match the "
                              "specified qualifier.");
    } else {
        if (qparam)
            snprintf(qual, sizeof(qual), "%s", qparam);
        /* no versions or aliases here: $LATEST is all there is */
        ok = sl_dispatcher_has_function(a->d, name) && (!qual[0] || strcmp(qual, "$LATEST") == 0);
        if (!ok)
            sl__api_respond_error(a, req, id, 404, "ResourceNotFoundException", NULL,
                                  "Function not found: arn:aws:lambda:%s:%s:function:%s%s%s",
                                  a->conf->server.region, a->conf->server.account_id, name,
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
    size_t len = evbuffer_get_length(body), max = sync ? SL_PAYLOAD_MAX : SL_ASYNC_PAYLOAD_MAX;
    json_error_t jerr;
    char *payload;
    json_t *j;

    if (len > max) {
        sl__api_respond_error(a, req, id, 413, "RequestTooLargeException", NULL,
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
        sl__api_respond_error(a, req, id, 400, "InvalidRequestContentException", NULL,
                              "Could not parse request body into json: %s (line %d, column %d)",
                              jerr.text, jerr.line, jerr.column);
        free(payload);
        return NULL;
    }
    json_decref(j);
    *out_len = len;
    return payload;
}

bool sl__invoke_client_context(const char *b64, char **cc)
{
    size_t len = 0;
    json_t *j = NULL;

    *cc = NULL;
    if (!b64)
        return true;
    if (strlen(b64) <= CLIENT_CONTEXT_MAX && (*cc = b64_decode(b64, &len)))
        j = json_loadb(*cc, len, 0, NULL);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        free(*cc);
        *cc = NULL;
        return false;
    }
    json_decref(j);
    return true;
}

/* X-Amz-Client-Context: base64 of a JSON object; *cc gets the JSON text
 * (caller frees) or NULL when absent. 400 when malformed. */
static bool read_client_context(struct sl_api *a, struct evhttp_request *req, const char *id,
                                char **cc)
{
    const char *b64 = evhttp_find_header(evhttp_request_get_input_headers(req),
                                         "X-Amz-Client-Context");

    if (sl__invoke_client_context(b64, cc))
        return true;
    sl__api_respond_error(a, req, id, 400, "InvalidRequestContentException", NULL,
                          "Client context must be a valid Base64-encoded JSON object of "
                          "at most %d bytes.", CLIENT_CONTEXT_MAX);
    return false;
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
        rc = sl_dispatcher_invoke(a->d, c->fn, &ir, on_result, c, &t);
    } else {
        free(cc); /* Lambda passes a client context to synchronous calls only */
        call_hold(a, c, req);
        rc = sl_dispatcher_enqueue(a->d, c->fn, payload, len, on_accepted, c);
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
        sl__api_respond_error(a, req, id, 404, "ResourceNotFoundException", NULL,
                              "Function not found: arn:aws:lambda:%s:%s:function:%s",
                              a->conf->server.region, a->conf->server.account_id, name);
    else
        sl__api_respond_error(a, req, id, 500, "ServiceException", NULL, "cannot invoke %s: %s",
                              name, sl_strerror(rc));
    call_free(c);
}

void sl__invoke_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const char *raw_name, const char *query)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *itype = evhttp_find_header(in, "X-Amz-Invocation-Type");
    const char *ltype = evhttp_find_header(in, "X-Amz-Log-Type");
    char name[FN_NAME_MAX + 1], *payload, *cc;
    bool sync = true, dry = false;
    size_t len = 0;
    json_t *entry;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        sl__api_respond_method(a, req, id, "POST");
        return;
    }
    if (!sl__api_check_token(a, req, id, &entry))
        return;
    if (!a->accepting) {
        respond_unavailable(a, req, id);
        return;
    }
    if (!resolve_function(a, req, id, raw_name, query, entry, name))
        return;
    if (itype && strcmp(itype, "Event") == 0) {
        sync = false;
    } else if (itype && strcmp(itype, "DryRun") == 0) {
        dry = true;
    } else if (itype && strcmp(itype, "RequestResponse") != 0) {
        sl__api_respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
                              "Unsupported invocation type '%.64s': use RequestResponse, Event or "
                              "DryRun", itype);
        return;
    }
    if (ltype && strcmp(ltype, "Tail") != 0 && strcmp(ltype, "None") != 0) {
        sl__api_respond_error(a, req, id, 400, "InvalidParameterValueException", NULL,
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
        sl__api_respond(a, req, id, 204, NULL, NULL, 0);
        free(cc);
        free(payload);
        return;
    }
    dispatch(a, req, id, name, sync, sync && ltype && strcmp(ltype, "Tail") == 0, payload, len,
             cc);
}

/* ------------------------------------------------------------------ */
/* Stopping                                                            */

void sl__invoke_abandon(struct sl_api *a)
{
    struct call *c;

    LIST_FOREACH(c, &a->calls, link) {
        struct evhttp_request *req = c->req;

        if (!req || c->detached)
            continue;
        if (c->evcon)
            evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        c->req = NULL;
        c->evcon = NULL;
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        sl__api_respond_error(a, req, c->id, 503, "ServiceException", NULL,
                              "sluice stopped before the invocation finished (shutdown_grace_s); "
                              "it may have run in part");
    }
}

void sl__invoke_orphan(struct sl_api *a)
{
    struct call *c;

    while ((c = LIST_FIRST(&a->calls))) {
        LIST_REMOVE(c, link);
        if (c->req && c->detached)
            evhttp_request_free(c->req);
        c->req = NULL;
        c->evcon = NULL;
        c->a = NULL;
    }
}
