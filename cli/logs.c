/* `sluice logs CONFIG`: a running service's function logs, like `sam logs`,
 * read from its live tail (GET /logs/tail, server-sent events) at the
 * address of CONFIG's server.listen. Without --follow it prints what the
 * service's log ring holds for --since and exits; with --follow it goes on
 * printing lines as they happen until interrupted. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "sluice/config.h"
#include "sluice/log.h"

#include "internal.h"

#define LINE_CAP (1 << 20)  /* an SSE line longer than this ends the stream */

struct tailc {
    struct event_base *base;
    struct evbuffer   *acc;      /* stream bytes not yet a whole line */
    bool               json;     /* print the events' JSON as it came */
    int                status;   /* HTTP status, -1: no answer */
    bool               broken;   /* the stream was not what we expect */
    unsigned long      lines;
    char              *err_body;
};

/* One event's data: a line of text, or the JSON itself. */
static void print_event(struct tailc *t, const char *data, size_t n)
{
    json_t *e;
    const json_t *m;
    char *msg = NULL;

    t->lines++;
    if (t->json) {
        fwrite(data, 1, n, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        return;
    }
    e = json_loadb(data, n, 0, NULL);
    if (!json_is_object(e)) {
        json_decref(e);
        return;
    }
    m = json_object_get(e, "message");
    if (json_is_object(m))
        msg = json_dumps(m, JSON_COMPACT);
    printf("%s %s %s %s\n", json_string_value(json_object_get(e, "timestamp")) ?: "-",
           json_string_value(json_object_get(e, "function")) ?: "-",
           json_string_value(json_object_get(e, "requestId")) ?: "-",
           msg ? msg : json_string_value(m) ?: "");
    fflush(stdout);
    free(msg);
    json_decref(e);
}

/* Whole lines of the stream: `data:` lines are events (one line each:
 * sluice never splits one), comments and ids are skipped. */
static void take_lines(struct tailc *t)
{
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(t->acc, &n, EVBUFFER_EOL_LF);

        if (!line) {
            if (evbuffer_get_length(t->acc) > LINE_CAP)
                t->broken = true;
            return;
        }
        if (n > 0 && line[n - 1] == '\r')
            line[--n] = '\0';
        if (strncmp(line, "data:", 5) == 0)
            print_event(t, line + 5 + (line[5] == ' '), n - 5 - (line[5] == ' '));
        free(line);
    }
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct tailc *t = arg;

    evbuffer_add_buffer(t->acc, evhttp_request_get_input_buffer(req));
    if (evhttp_request_get_response_code(req) != 200)
        return; /* an error's body: on_done */
    take_lines(t);
    if (t->broken)
        event_base_loopbreak(t->base);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct tailc *t = arg;

    if (!req || evhttp_request_get_response_code(req) == 0) {
        t->status = t->status > 0 ? t->status : -1;
    } else {
        size_t n;

        evbuffer_add_buffer(t->acc, evhttp_request_get_input_buffer(req));
        n = evbuffer_get_length(t->acc);
        t->status = evhttp_request_get_response_code(req);
        if (t->status != 200 && n) {
            t->err_body = malloc(n + 1);
            if (t->err_body) {
                evbuffer_remove(t->acc, t->err_body, n);
                t->err_body[n] = '\0';
            }
        } else if (n) {
            take_lines(t);
        }
    }
    event_base_loopbreak(t->base);
}

/* The status is known once the headers are in: remember it, so a stream
 * the server ends later is told apart from one that never started. */
static int on_headers(struct evhttp_request *req, void *arg)
{
    struct tailc *t = arg;

    t->status = evhttp_request_get_response_code(req);
    return 0;
}

static void on_sigint(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

static void usage(void)
{
    fprintf(stderr, "usage: sluice logs CONFIG [--function F] [--source S] [--request-id ID] "
                    "[--level L] [--since 10m] [--follow] [--json]\n");
}

/* Append `&key=value` (value URI-encoded) to the query. */
static void add_param(char *q, size_t n, const char *key, const char *value)
{
    char *enc;
    size_t len = strlen(q);

    if (!value)
        return;
    enc = evhttp_uriencode(value, -1, 0);
    snprintf(q + len, n - len, "%s%s=%s", len ? "&" : "", key, enc ? enc : "");
    free(enc);
}

/* The bearer token to send: $SLUICE_TOKEN, else server.auth's first
 * bearer token (key pairs are for SigV4 clients), else none. */
static const char *pick_token(const struct sl_config *c)
{
    const char *env = getenv("SLUICE_TOKEN"), *key, *best = NULL;
    json_t *e;
    json_int_t pos = 0;

    if (env && *env)
        return env;
    json_object_foreach(c->server.auth, key, e) {
        json_int_t p = json_integer_value(json_object_get(e, "pos"));

        if (json_object_get(e, "secret"))
            continue;
        if (!best || p < pos) {
            best = key;
            pos = p;
        }
    }
    return best;
}

int sl__cmd_logs(int argc, char **argv)
{
    const char *fn = NULL, *src = NULL, *rid = NULL, *level = NULL, *since = "10m", *token;
    bool follow = false;
    struct tailc t = { .status = 0 };
    struct sl_config *c = NULL;
    struct evhttp_connection *conn = NULL;
    struct evhttp_request *req;
    struct event *sig = NULL;
    char host[256], query[2048] = "", path[2200], auth[600];
    const char *listen, *colon;
    int port, code = EXIT_FAIL;

    if (argc < 2) {
        usage();
        return EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        const char **slot = NULL;

        if (strcmp(argv[i], "--follow") == 0 || strcmp(argv[i], "-f") == 0) {
            follow = true;
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            t.json = true;
            continue;
        }
        if (strcmp(argv[i], "--function") == 0)
            slot = &fn;
        else if (strcmp(argv[i], "--source") == 0)
            slot = &src;
        else if (strcmp(argv[i], "--request-id") == 0)
            slot = &rid;
        else if (strcmp(argv[i], "--level") == 0)
            slot = &level;
        else if (strcmp(argv[i], "--since") == 0)
            slot = &since;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "sluice logs: %s '%s'\n", slot ? "a value must follow" : "unknown option",
                    argv[i]);
            usage();
            return EXIT_USAGE;
        }
        *slot = argv[++i];
    }
    if (sl__cli_load(argv[1], &c) != 0)
        return EXIT_FAIL;
    sl_log_set_level(SL_LOG_ERROR);

    listen = c->server.listen;
    colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        fprintf(stderr, "sluice logs: server.listen '%s' is not host:port\n", listen);
        goto out;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (host[0] == '[') { /* [v6] */
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    /* a wildcard address is reached on loopback */
    if (!host[0] || strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "::1");
    port = atoi(colon + 1);

    add_param(query, sizeof(query), "function", fn);
    add_param(query, sizeof(query), "source", src);
    add_param(query, sizeof(query), "request_id", rid);
    add_param(query, sizeof(query), "level", level);
    add_param(query, sizeof(query), "since", since);
    add_param(query, sizeof(query), "follow", follow ? "true" : "false");
    snprintf(path, sizeof(path), "/logs/tail?%s", query);

    t.base = event_base_new();
    t.acc = evbuffer_new();
    conn = evhttp_connection_base_new(t.base, NULL, host, (ev_uint16_t)port);
    /* the service sends a comment every 15 s: silence this long is a dead peer */
    evhttp_connection_set_timeout(conn, 60);
    req = evhttp_request_new(on_done, &t);
    evhttp_request_set_chunked_cb(req, on_chunk);
    evhttp_request_set_header_cb(req, on_headers);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Accept", "text/event-stream");
    if ((token = pick_token(c))) {
        snprintf(auth, sizeof(auth), "Bearer %s", token);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
    }
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) != 0) {
        fprintf(stderr, "sluice logs: cannot send the request to %s:%d\n", host, port);
        goto out;
    }
    sig = evsignal_new(t.base, SIGINT, on_sigint, t.base);
    event_add(sig, NULL);
    signal(SIGPIPE, SIG_IGN);
    event_base_dispatch(t.base);

    if (t.status <= 0) {
        fprintf(stderr, "sluice logs: no answer from %s:%d (is `sluice run %s` running?)\n",
                host, port, argv[1]);
    } else if (t.status != 200) {
        json_t *b = t.err_body ? json_loads(t.err_body, 0, NULL) : NULL;
        const char *m = json_string_value(json_object_get(b, "message"));

        fprintf(stderr, "sluice logs: %d: %s\n", t.status, m ? m : t.err_body ? t.err_body : "");
        json_decref(b);
    } else if (t.broken) {
        fprintf(stderr, "sluice logs: the service sent a line longer than 1 MB\n");
    } else {
        code = EXIT_OK;
    }
out:
    if (sig)
        event_free(sig);
    if (conn)
        evhttp_connection_free(conn);
    if (t.acc)
        evbuffer_free(t.acc);
    if (t.base)
        event_base_free(t.base);
    free(t.err_body);
    sl_config_free(c);
    return code;
}
