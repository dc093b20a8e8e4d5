/* `sluice invoke` against a running service: one Invoke API request with
 * evhttp's client, the way the AWS CLI would send it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "sluice/client.h"

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

int sl_client_invoke(const char *endpoint, const char *fn, const char *payload, size_t len,
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
