/* Fuzz target: the HTTP request path a network client reaches before any
 * credential, on arbitrary bytes.
 *
 * Each input is what a client sends on one connection. Its head (up to
 * the first empty line) goes through the gate's parser and decision
 * (sl__gate_parse, sl__gate_decide: router, headers, bearer token and
 * SigV4 on the headers), then as evhttp would see it after the body:
 * sl__api_authenticate with the body's SHA-256, the Invoke API's path
 * check, X-Amz-Client-Context. Then the whole input goes through a real
 * gate connection (sl__gate_adopt on one end of a socketpair, in two
 * writes split where the first byte says, the loop run in between):
 * head framing, Content-Length and chunked bodies, the answers and the
 * connection's end. No evhttp behind it: a head that passes gets 503.
 * Every input must end without a crash, a leak or a sanitizer report. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "../api/internal.h"
#include "sluice/config.h"
#include "sluice/metrics.h"
#include "sluice/pollers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] =
    "functions:\n"
    "  echo:\n"
    "    handler: /bin/true\n"
    "server:\n"
    "  listen: 127.0.0.1:0\n"
    "  data_dir: /tmp/sluice-fuzz-http\n"
    "  metrics_auth: metrics-tok-1\n"
    "  auth:\n"
    "    tok-fuzz-1: \"echo\"\n"
    "    AKIDFUZZ00000001:\n"
    "      secret_access_key: fuzz-secret\n"
    "      functions: \"*\"\n";

static struct sl_config *conf;
static struct sl_metrics *metrics;
static struct event_base *base;

static void setup(void)
{
    struct sl_diags d;

    sl_diags_init(&d, "fuzz-http.yaml");
    if (sl_config_load_buffer("fuzz-http.yaml", "/nonexistent", yaml, sizeof(yaml) - 1,
                              &sl_registry, &conf, &d) != 0) {
        fprintf(stderr, "fuzz/http.c: the built-in configuration does not load\n");
        abort();
    }
    sl_diags_destroy(&d);
    metrics = sl_metrics_new();
    base = event_base_new();
    if (!base)
        abort();
}

/* The head alone, as the gate and then evhttp's handler see it. */
static void head_path(const uint8_t *data, size_t size)
{
    const uint8_t *end = NULL;
    struct sl_gate_head h;
    struct sl_authn r;
    struct sl_hdrs hd;
    const char *why = NULL;
    char *buf, hash[65], *cc = NULL;
    size_t n;

    for (size_t i = 0; i + 1 < size && !end; i++) {
        if (data[i] == '\n' && data[i + 1] == '\n')
            end = data + i + 2;
        else if (data[i] == '\n' && i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n')
            end = data + i + 3;
    }
    if (!end)
        return;
    n = (size_t)(end - data);
    buf = malloc(n + 1);
    memcpy(buf, data, n);
    buf[n] = '\0';
    if (sl__gate_parse(buf, n, &h, &why) == 0) {
        const char *path = h.target;

        sl__gate_decide(&conf->server, &h, 1700000000LL, &r);
        sl__gate_hdrs(&h, &hd);
        sl__sha256_hex(end, size - n, hash);
        sl__api_authenticate(&conf->server, h.method, h.target, &hd, hash, 1700000000LL, &r);
        if (r.code == 0 && r.entry)
            sl__api_token_allows(r.entry, "echo");
        sl__api_metrics_allowed(&conf->server, &hd);
        sl__api_is_invoke_path(path, strcspn(path, "?#"));
        if (sl__invoke_client_context(hd.get(hd.ctx, "x-amz-client-context", 0), &cc))
            free(cc);
    }
    free(buf);
}

/* The whole input through a gate connection. */
static void conn_path(const uint8_t *data, size_t size)
{
    struct sl_api *a = calloc(1, sizeof(*a));
    size_t split = size ? data[0] % (size + 1) : 0;
    char sink[65536];
    int sv[2];

    a->base = base;
    a->conf = conf;
    a->metrics = metrics;
    a->m_req = sl_metrics_family(metrics, "sluice_http_requests_total", SL_METRIC_COUNTER,
                                 "HTTP requests answered by the API, by status code.", "code");
    a->max_conns = 4;
    sl__gate_init(a);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    sl__gate_adopt(a, sv[0]);
    for (int part = 0; part < 2; part++) {
        const uint8_t *p = part ? data + split : data;
        size_t left = part ? size - split : split;

        while (left > 0) {
            ssize_t w = send(sv[1], p, left, MSG_NOSIGNAL);

            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
            event_base_loop(base, EVLOOP_NONBLOCK);
            while (recv(sv[1], sink, sizeof(sink), 0) > 0)
                ;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 3; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (recv(sv[1], sink, sizeof(sink), 0) > 0)
            ;
    }
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    sl__gate_free(a);
    free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!conf)
        setup();
    head_path(data, size);
    conn_path(data, size);
    return 0;
}
