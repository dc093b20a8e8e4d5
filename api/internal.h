/* Internal to api/: what the HTTP server (http.c: evhttp, routing, auth,
 * health) and the Invoke API (invoke.c) share. */
#ifndef SLUICE_API_INTERNAL_H
#define SLUICE_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <jansson.h>

#include "sluice/api.h"
#include "sluice/invoke.h"            /* Lambda's payload limits (lambda-spec 4.3) */

#define INST "api"

#define INVOKE_PREFIX  "/2015-03-31/functions/"
#define INVOKE_SUFFIX  "/invocations"

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

/* ------------------------------------------------------------------ */
/* Answers (http.c): every response goes through sl__api_respond.      */

/* Send `code` with an optional body (or what is already in the output
 * buffer). `id` (may be NULL) goes out as X-Amzn-RequestId. */
void sl__api_respond(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                     const char *ctype, const void *body, size_t len);

/* Lambda's error shape. `extra` (stolen, may be NULL) adds members. */
void sl__api_respond_error(struct sl_api *a, struct evhttp_request *req, const char *id,
                           int code, const char *type, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* 405 naming the method that is allowed. */
void sl__api_respond_method(struct sl_api *a, struct evhttp_request *req, const char *id,
                            const char *allow);

/* A JSON string for `s` (NULL: ""); bad UTF-8 bytes become '?'. New reference. */
json_t *sl__api_json_text(const char *s);

/* ------------------------------------------------------------------ */
/* Authentication (http.c)                                             */

/* server.auth: true when the request may go on; otherwise it was
 * answered (401) and false returned. *tokidx: the token's index, or -1
 * when authentication is off. */
bool sl__api_check_token(struct sl_api *a, struct evhttp_request *req, const char *id,
                         int *tokidx);

/* Whether token `tokidx` (from sl__api_check_token, >= 0) may invoke `fn`. */
bool sl__api_token_allows(const struct sl_api *a, int tokidx, const char *fn);

/* ------------------------------------------------------------------ */
/* The Invoke API (invoke.c)                                           */

/* POST INVOKE_PREFIX{raw_name}INVOKE_SUFFIX[?query]: answers `req`, now
 * or when the invocation ends. `raw_name` is still URI-encoded. */
void sl__invoke_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const char *raw_name, const char *query);

/* The loop is over: every call still waiting gets a 503 now. */
void sl__invoke_abandon(struct sl_api *a);

/* After evhttp_free: the calls still pending finish without anyone to
 * answer (their invocations hold them until the callback). */
void sl__invoke_orphan(struct sl_api *a);

#endif
