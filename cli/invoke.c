/* `sluice invoke`: one invocation, either locally in a sandbox (like `sam
 * local invoke`) or against a running service through the Invoke API, with
 * evhttp's client, the way the AWS CLI would send it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "sluice/config.h"
#include "sluice/env.h"
#include "sluice/log.h"

#include "internal.h"

/* ------------------------------------------------------------------ */
/* remote                                                              */

struct reply {
    int   status;
    char *body;
    size_t len;
    char  function_error[64];
    char  error_type[128];
    char  request_id[64];
    struct event_base *base;
};

static void on_reply(struct evhttp_request *req, void *arg)
{
    struct reply *r = arg;
    struct evbuffer *in;
    const char *h;

    if (!req) {
        r->status = -1;
    } else {
        r->status = evhttp_request_get_response_code(req);
        in = evhttp_request_get_input_buffer(req);
        r->len = evbuffer_get_length(in);
        r->body = malloc(r->len + 1);
        if (r->body) {
            evbuffer_remove(in, r->body, r->len);
            r->body[r->len] = '\0';
        }
        if ((h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Amz-Function-Error")))
            snprintf(r->function_error, sizeof(r->function_error), "%s", h);
        if ((h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Amzn-ErrorType")))
            snprintf(r->error_type, sizeof(r->error_type), "%s", h);
        if ((h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Amzn-RequestId")))
            snprintf(r->request_id, sizeof(r->request_id), "%s", h);
    }
    event_base_loopbreak(r->base);
}

int sl__cli_invoke_remote(const char *endpoint, const char *fn, const char *payload, size_t len,
                          bool async, const char *token)
{
    struct evhttp_uri *uri = evhttp_uri_parse(endpoint);
    struct reply r = { 0 };
    struct evhttp_connection *conn = NULL;
    struct evhttp_request *req;
    char path[512], auth[512];
    const char *host;
    int port, code = 1;

    if (!uri || !(host = evhttp_uri_get_host(uri))) {
        fprintf(stderr, "sluice: '%s' is not an http:// URL\n", endpoint);
        goto out;
    }
    port = evhttp_uri_get_port(uri);
    r.base = event_base_new();
    conn = evhttp_connection_base_new(r.base, NULL, host, (ev_uint16_t)(port > 0 ? port : 80));
    evhttp_connection_set_timeout(conn, 910);
    req = evhttp_request_new(on_reply, &r);
    {
        /* a name with '/', '?' or spaces must not reshape the path */
        char *enc = evhttp_uriencode(fn, -1, 0);
        snprintf(path, sizeof(path), "/2015-03-31/functions/%s/invocations", enc ? enc : "");
        free(enc);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amz-Invocation-Type",
                      async ? "Event" : "RequestResponse");
    if (token) {
        snprintf(auth, sizeof(auth), "Bearer %s", token);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), payload, len);
    if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, path) != 0) {
        fprintf(stderr, "sluice: cannot send the request to %s\n", endpoint);
        goto out;
    }
    event_base_dispatch(r.base);
    if (r.status <= 0) {
        fprintf(stderr, "sluice: no answer from %s (is `sluice run` listening there?)\n",
                endpoint);
        goto out;
    }
    if (async && r.status == 202) {
        printf("{\"StatusCode\":202,\"RequestId\":\"%s\"}\n", r.request_id);
        code = 0;
    } else if (r.status == 200) {
        printf("%s\n", r.body ? r.body : "");
        code = r.function_error[0] ? 1 : 0;
    } else {
        fprintf(stderr, "sluice: %d %s\n", r.status, r.error_type);
        printf("%s\n", r.body ? r.body : "");
    }
out:
    if (conn)
        evhttp_connection_free(conn);
    if (r.base)
        event_base_free(r.base);
    if (uri)
        evhttp_uri_free(uri);
    free(r.body);
    return code;
}

/* ------------------------------------------------------------------ */
/* local                                                               */

struct local_result {
    struct event_base *base;
    int    done, ok;
    char  *out;          /* what goes to stdout */
    double duration_ms, init_ms;
    long long max_memory_mb, memory_mb;
};

static void on_local_result(const struct sl_invoke_result *r, void *arg)
{
    struct local_result *lr = arg;

    lr->done = 1;
    lr->ok = r->ok;
    lr->duration_ms = r->duration_ms;
    lr->init_ms = r->init_ms;
    lr->max_memory_mb = (long long)r->max_memory_mb;
    if (r->ok) {
        lr->out = strndup(r->payload, r->payload_len);
    } else if (r->error_doc) {
        lr->out = json_dumps(r->error_doc, JSON_COMPACT); /* the runtime's own, as Lambda's */
    } else {
        json_t *e = json_pack("{s:s, s:s}", "errorMessage",
                              r->error_message ? r->error_message : "", "errorType",
                              r->error_type ? r->error_type : "Unknown");
        if (!e) /* the handler's text was not UTF-8 */
            e = json_pack("{s:s, s:s}", "errorMessage", "(not UTF-8)", "errorType",
                          "Runtime.InvalidResponse");
        json_object_set_new(e, "requestId", json_string(r->request_id ? r->request_id : ""));
        json_object_set_new(e, "stackTrace", r->stack && json_is_array(r->stack)
                                                 ? json_incref(r->stack) : json_array());
        lr->out = json_dumps(e, JSON_COMPACT);
        json_decref(e);
    }
    event_base_loopbreak(lr->base);
}

static char *read_payload(const char *arg)
{
    FILE *f;
    char *buf = NULL;
    size_t len = 0;

    if (arg[0] != '@')
        return strdup(arg);
    f = fopen(arg + 1, "rb");
    if (!f) {
        fprintf(stderr, "sluice: cannot open %s: %s\n", arg + 1, strerror(errno));
        return NULL;
    }
    {
        FILE *m = open_memstream(&buf, &len);
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && len < 7 * 1024 * 1024)
            fwrite(chunk, 1, n, m);
        fclose(m);
    }
    fclose(f);
    return buf;
}

int sl__cmd_invoke(int argc, char **argv)
{
    const char *config = NULL, *fname = NULL, *payload_arg = "{}", *endpoint = NULL;
    struct local_result lr = { 0 };
    struct sl_functions *fns = NULL;
    struct sl_invoke_req req = { 0 };
    struct sl_fnpool *pool;
    struct sl_config *c = NULL;
    struct sl_err err;
    json_error_t jerr;
    json_t *check;
    char *payload;
    int local = 0, async = 0, code = EXIT_FAIL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--local") == 0)
            local = 1;
        else if (strcmp(argv[i], "--async") == 0)
            async = 1;
        else if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
            payload_arg = argv[++i];
        else if (argv[i][0] == '-')
            return fprintf(stderr, "sluice invoke: unknown option %s\n", argv[i]), EXIT_USAGE;
        else if (!config)
            config = argv[i];
        else if (!fname)
            fname = argv[i];
        else
            return fprintf(stderr, "usage: sluice invoke --local CONFIG FUNCTION "
                                   "[--payload JSON|@FILE]\n"), EXIT_USAGE;
    }
    if (!local) {
        /* remote: the only positional argument is the function */
        if (fname) {
            fprintf(stderr, "sluice invoke: without --local, give only FUNCTION\n");
            return EXIT_USAGE;
        }
        fname = config;
    }
    if ((local && (!config || !fname)) || !fname || (local && async)) {
        fprintf(stderr, "usage: sluice invoke --local CONFIG FUNCTION [--payload JSON|@FILE]\n"
                        "       sluice invoke [--endpoint URL] FUNCTION [--payload JSON|@FILE] "
                        "[--async]\n");
        return EXIT_USAGE;
    }
    if (!(payload = read_payload(payload_arg)))
        return EXIT_FAIL;
    if (!local) {
        const char *ep = endpoint ? endpoint : getenv("SLUICE_ENDPOINT");
        code = sl__cli_invoke_remote(ep ? ep : "http://127.0.0.1:9001", fname, payload,
                                     strlen(payload), async, getenv("SLUICE_TOKEN"));
        free(payload);
        return code;
    }
    check = json_loads(payload, JSON_DECODE_ANY, &jerr);
    if (!check) {
        fprintf(stderr, "sluice: the payload is not JSON: %s (line %d, column %d)\n", jerr.text,
                jerr.line, jerr.column);
        free(payload);
        return EXIT_FAIL;
    }
    json_decref(check);
    if (sl__cli_load(config, &c) != 0) {
        free(payload);
        return EXIT_FAIL;
    }
    sl__cli_log_setup(c);
    if (sl_log_start_writer(SL__LOG_QUEUE) != 0)
        SL_WARN(NULL, "cannot start the log writer thread: writing the log on the loop");
    if (!sl_config_function(c, fname)) {
        fprintf(stderr, "sluice: %s has no function named '%s'\n", config, fname);
        goto out;
    }
    lr.base = event_base_new();
    sl_err_clear(&err);
    if (sl_functions_new(lr.base, c, fname, &fns, &err) != 0) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        goto out;
    }
    pool = sl_functions_pool(fns, fname);
    req.event = payload;
    req.event_len = strlen(payload);
    if (sl_fnpool_invoke(pool, &req, on_local_result, &lr) != 0) {
        fprintf(stderr, "sluice: function %s has no concurrency (reserved_concurrency: 0)\n",
                fname);
        goto out;
    }
    while (!lr.done)
        event_base_loop(lr.base, EVLOOP_ONCE);
    sl_log_stop_writer(SL__LOG_STOP_MS); /* the log before the result */
    printf("%s\n", lr.out ? lr.out : "");
    fprintf(stderr, "duration: %.2f ms, init: %.2f ms, max memory used: %lld MB of %lld MB\n",
            lr.duration_ms, lr.init_ms, lr.max_memory_mb,
            (long long)sl_config_function(c, fname)->memory_mb);
    code = lr.ok ? EXIT_OK : EXIT_FAIL;
out:
    sl_functions_free(fns);
    sl_log_stop_writer(SL__LOG_STOP_MS);
    if (lr.base)
        event_base_free(lr.base);
    free(lr.out);
    free(payload);
    sl_config_free(c);
    return code;
}
