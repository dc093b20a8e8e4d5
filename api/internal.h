/* Internal to api/: what the HTTP server (http.c: evhttp, routing, auth,
 * health) and the Invoke API (invoke.c) share. */
#ifndef SLUICE_API_INTERNAL_H
#define SLUICE_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>

#include <stdint.h>

#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

#include "sluice/api.h"
#include "sluice/invoke.h"            /* Lambda's payload limits (lambda-spec 4.3) */

#define INST "api"

#define FN_NAME_MAX    64
#define QUALIFIER_MAX  128
#define FN_ARG_MAX     256                       /* the whole FunctionName (ARN forms) */

#define INVOKE_PREFIX  "/2015-03-31/functions/"
#define RELOAD_PATH    "/admin/reload"
#define INVOKE_SUFFIX  "/invocations"
#define STREAM_PREFIX  "/2021-11-15/functions/"     /* InvokeWithResponseStream */
#define STREAM_SUFFIX  "/response-streaming-invocations"

struct call;
struct conn;
struct mwrite;
struct sl__console;
struct sl_engine;
struct sl_overrides;
struct sl_pool;
struct tail;
struct sl_logring;
struct sl_err;

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
    /* response streaming: the most bytes held for a slow client, where
     * (gate: relayed to it, evhttp: not yet relayed), and the pauses */
    struct sl_metric           *m_held;
    struct sl_metric           *m_pauses;
    size_t                      held_gate, held_evhttp;
    /* the gate (gate.c) */
    LIST_HEAD(, conn)           conns;       /* every client connection */
    int64_t                     nconns;
    int64_t                     max_conns;   /* server.max_connections, or less for ulimit -n */
    double                      full_logged_ms;
    struct evconnlistener      *listener;    /* server.listen */
    struct event               *accept_pause;
    int                         spare_fd;    /* given up to accept when out of fds */
    uint64_t                    accept_errors;
    double                      accept_logged_ms;
    char                        sock_dir[80];   /* evhttp's socket: private directory */
    char                        sock_path[108]; /* and the socket in it */
    /* the management API (mgmt.c) */
    struct sl_config           *conf_rw;     /* `conf`, writable (sl_api_manage); NULL: reads only */
    struct sl_overrides        *ov;          /* the overrides in force */
    struct sl_pool             *pool;        /* writes the overrides file */
    struct sl_engine           *engine;      /* the running sources; NULL: none */
    struct mwrite              *writing;     /* an overrides write in flight */
    int64_t                    *prov_started; /* provisioned_concurrency per function at start */
    int64_t                     started_ms;  /* wall clock at sl_api_new */
    /* the web console (console.c) */
    struct sl__console         *console;
    /* the live tail (logs.c) */
    struct sl_logring          *ring;        /* function logs, or NULL (borrowed) */
    LIST_HEAD(, tail)           tails;       /* clients of GET /logs/tail */
    size_t                      ntails;
    struct sl_metric           *m_tails, *m_tail_drop;
    /* live reload (POST /admin/reload, /readyz's details) */
    sl_api_reload_fn            reload;
    void                       *reload_arg;
    json_t                     *last_reload;  /* {"ok", "error"|"summary", "at"} or NULL */
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
/* Authentication (http.c, sigv4.c)                                    */

/* A request's headers, as evhttp parsed them or as the gate (gate.c) read
 * them before the body: the idx-th value of header `name` (any case), or
 * NULL. */
struct sl_hdrs {
    const char *(*get)(const void *ctx, const char *name, size_t idx);
    const void  *ctx;
};

/* The outcome of authenticating a request. */
struct sl_authn {
    int         code;         /* 0: may go on; else the HTTP status to answer */
    const char *type;         /* X-Amzn-ErrorType */
    const char *msg;
    const char *www;          /* WWW-Authenticate value, or NULL */
    json_t     *entry;        /* the server.auth entry (borrowed); NULL when auth is off */
};

/* Authenticate an invocation by server.auth: a bearer token, or an AWS
 * SigV4 signature by a configured key pair. `target` is the request
 * target as sent (path?query). `payload_sha256` is the body's SHA-256 in
 * hex, or NULL before the body is read: then a signature is checked only
 * when X-Amz-Content-Sha256 gives the hash; the key, scope and clock are
 * checked in any case. `now`: Unix seconds. */
void sl__api_authenticate(const struct sl_server_conf *sc, const char *method, const char *target,
                          const struct sl_hdrs *h, const char *payload_sha256, long long now,
                          struct sl_authn *out);

/* server.metrics_auth: whether the request carries its bearer token (true
 * when it is not set). */
bool sl__api_metrics_allowed(const struct sl_server_conf *sc, const struct sl_hdrs *h);

/* `req`'s input headers as struct sl_hdrs. */
void sl__api_evhdrs(struct evhttp_request *req, struct sl_hdrs *h);

/* After the body is read: authenticate `req` and answer it (401/403)
 * when it may not go on. *entry: its server.auth entry, NULL when
 * authentication is off. */
bool sl__api_check_token(struct sl_api *a, struct evhttp_request *req, const char *id,
                         json_t **entry);

/* Whether server.auth entry `entry` may invoke `fn` (scope invoke, and
 * `fn` among its functions). */
bool sl__api_token_allows(const json_t *entry, const char *fn);

/* Whether `fn` is among the entry's functions, whatever the scope. */
bool sl__api_token_covers(const json_t *entry, const char *fn);

/* The entry's scopes, SL_SCOPE_* bits. */
int sl__api_scopes(const json_t *entry);

/* AWS SigV4's Authorization header, parsed (sigv4.c). */
struct sl_sigv4 {
    char key_id[129];
    char date[9];             /* YYYYMMDD */
    char region[64];
    char service[32];
    char signed_headers[1024];
    char signature[65];
};

/* 0, or -1 when `authz` is not a well-formed AWS4-HMAC-SHA256 header. */
int sl__sigv4_parse(const char *authz, struct sl_sigv4 *s);

/* 0 when the signature is right; -1 malformed, -2 outside the 5-minute
 * clock skew, -3 wrong signature; *why says what. */
int sl__sigv4_verify(const struct sl_sigv4 *s, const char *secret, const char *method,
                     const char *target, const struct sl_hdrs *h, const char *payload_sha256,
                     long long now, const char **why);

/* SHA-256 of data in lowercase hex (libcrypto). */
void sl__sha256_hex(const void *data, size_t n, char out[65]);

/* ------------------------------------------------------------------ */
/* The gate (gate.c): heads checked before bodies, connection cap       */

/* A request head as the gate parsed it (pointers into its buffer). */
struct sl_gate_head {
    char   *method, *target, *version;
    char   *name[100], *value[100];
    size_t  n;
    int64_t clen;             /* Content-Length, -1 when none */
    bool    chunked;
};

/* Parse `buf` (len bytes: request line, header lines, empty line) in
 * place; -1 with *why when malformed or ambiguous (two lengths, chunked
 * and a length, a folded line, a NUL). */
int sl__gate_parse(char *buf, size_t len, struct sl_gate_head *h, const char **why);

/* The head's headers as struct sl_hdrs. */
void sl__gate_hdrs(const struct sl_gate_head *h, struct sl_hdrs *out);

/* Whether the head may go on to evhttp (0), else the answer in *out
 * (and its status returned). */
int sl__gate_decide(const struct sl_server_conf *sc, const struct sl_gate_head *h,
                    long long now, struct sl_authn *out);

/* Before anything else of the gate. */
void sl__gate_init(struct sl_api *a);
/* After evhttp_new: evhttp's private socket and the listener on
 * host:port (server.listen). */
int sl__gate_start(struct sl_api *a, const char *host, int port, struct sl_err *err);
/* server.max_connections, lowered to what ulimit -n leaves (start, reload). */
void sl__gate_set_limits(struct sl_api *a);
/* A client connection accepted on `fd` (nonblocking): the gate owns it
 * (also how the fuzz target feeds it bytes). */
void sl__gate_adopt(struct sl_api *a, int fd);
/* The loop has stopped: evhttp's last answers out to the clients. */
void sl__gate_flush(struct sl_api *a, int ms);
/* After evhttp_free. */
void sl__gate_free(struct sl_api *a);

/* `n` bytes wait for a client in `where` ("gate", "evhttp"): keeps the
 * high-water mark in sluice_api_stream_held_bytes_max (http.c). */
void sl__api_held(struct sl_api *a, const char *where, size_t n);

/* Whether path[0..plen) is INVOKE_PREFIX{name}INVOKE_SUFFIX or
 * STREAM_PREFIX{name}STREAM_SUFFIX. */
bool sl__api_is_invoke_path(const char *path, size_t plen);
/* 1 for the former (Invoke), 2 for the latter (InvokeWithResponseStream),
 * else 0; *name and *nlen: where the name is in `path`. */
int sl__api_invoke_route(const char *path, size_t plen, size_t *name, size_t *nlen);

/* ------------------------------------------------------------------ */
/* The management API (mgmt.c)                                         */

/* Answer `req` when `path` (still URI-encoded) is one of the management
 * API's (Lambda's REST paths for functions, event source mappings,
 * concurrency, event invoke configs, account settings and tags) and
 * return true; false when it is not, and nothing was sent. */
bool sl__mgmt_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                     const char *path, const char *query);

/* sl_api_free: an overrides write still in flight answers nobody. */
void sl__mgmt_free(struct sl_api *a);

/* ------------------------------------------------------------------ */
/* The web console (console.c)                                         */

/* Answer `req` when `path` is /console or under it and return true;
 * false when it is not, and nothing was sent. */
bool sl__console_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                        const char *path, const char *query);

/* In sl_api_new, after the metrics: the sample ring and its timer. */
void sl__console_init(struct sl_api *a);
/* In sl_api_free: requests still waiting answer nobody. */
void sl__console_free(struct sl_api *a);
/* The live tail (logs.c)                                              */

/* Whether path[0..plen) is the tail's (/logs/tail). */
bool sl__logs_is_path(const char *path, size_t plen);

/* Whether a request for the tail may go on (0), else the answer in *out
 * and its status returned; out->entry is the credential's server.auth
 * entry. The one check for reading logs: the Invoke API's credentials. */
int sl__logs_authorize(const struct sl_server_conf *sc, const char *method, const char *target,
                       const struct sl_hdrs *h, long long now, struct sl_authn *out);

/* The gate's head `h` for /logs/tail, authorized with server.auth entry
 * `entry` (NULL: auth off): 0 when the tail took over `bev` (the client's
 * connection, nothing of the request left in its input), else the HTTP
 * status to answer with *type and why (size wn); `bev` is then the
 * caller's still. */
int sl__logs_open(struct sl_api *a, struct bufferevent *bev, const struct sl_gate_head *h,
                  const json_t *entry, const char **type, char *why, size_t wn);

void sl__logs_init(struct sl_api *a);      /* after a->metrics */
void sl__logs_free(struct sl_api *a);      /* every client closed */

/* ------------------------------------------------------------------ */
/* The Invoke API (invoke.c)                                           */

/* Lambda's FunctionName forms (name, partial or full ARN, with an
 * optional :qualifier): fills name and qual (empty when none); -1 when
 * `s` does not match Lambda's pattern. */
int sl__api_parse_function_name(const char *s, char name[FN_NAME_MAX + 1],
                                char qual[QUALIFIER_MAX + 1]);

/* POST INVOKE_PREFIX{raw_name}INVOKE_SUFFIX[?query]: answers `req`, now
 * or when the invocation ends. `raw_name` is still URI-encoded. `stream`:
 * InvokeWithResponseStream (STREAM_PREFIX...), answered as an event
 * stream while the function's response arrives. */
void sl__invoke_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const char *raw_name, const char *query, bool stream);

/* evstream.c: one event-stream message (`type` an :event-type such as
 * "PayloadChunk", `ctype` its :content-type) with `n` payload bytes,
 * appended to `out`. */
void sl__evstream_event(struct evbuffer *out, const char *type, const char *ctype,
                        const void *payload, size_t n);

/* X-Amz-Client-Context's value `b64` (NULL: absent, true with *cc NULL):
 * true with *cc the decoded JSON object's text (caller frees), false when
 * it is not base64 of a JSON object within Lambda's size. */
bool sl__invoke_client_context(const char *b64, char **cc);

/* The loop is over: every call still waiting gets a 503 now. */
void sl__invoke_abandon(struct sl_api *a);

/* After evhttp_free: the calls still pending finish without anyone to
 * answer (their invocations hold them until the callback). */
void sl__invoke_orphan(struct sl_api *a);

#endif
