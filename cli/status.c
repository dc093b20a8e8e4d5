/* `sluice status CONFIG [--json] [--endpoint URL]`: what a running
 * instance is doing.
 *
 * Everything comes from places a client can read: the service's API (the
 * management API's ListFunctions and ListEventSourceMappings for states,
 * /metrics for counts and lag, /readyz), the configuration's sinks for
 * their dead letters, and data_dir for the runtime overrides in force. A
 * mapping is matched to its source by the UUID both sides derive
 * (sl_mapping_uuid). Credentials: $SLUICE_TOKEN as a bearer token, else
 * the first bearer token of server.auth with the read (or admin) scope;
 * $SLUICE_METRICS_TOKEN for /metrics when server.metrics_auth is set
 * (else the same token). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "sluice/config.h"
#include "sluice/mem.h"
#include "sluice/overrides.h"

#include "internal.h"

/* ------------------------------------------------------------------ */
/* HTTP GET                                                            */

struct get {
    struct event_base *base;
    int                status;       /* -1: no answer */
    char              *body;
};

static void on_get(struct evhttp_request *req, void *arg)
{
    struct get *g = arg;

    g->status = -1;
    if (req && evhttp_request_get_response_code(req) > 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);

        g->status = evhttp_request_get_response_code(req);
        g->body = sl_malloc(n + 1);
        evbuffer_remove(in, g->body, n);
        g->body[n] = '\0';
    }
    event_base_loopbreak(g->base);
}

/* GET `path` from host:port: the status (-1: no answer) and the body
 * (malloc'd, NUL-terminated) in *body. */
static int http_get(const char *host, int port, const char *path, const char *token, char **body)
{
    struct get g = { .status = -1 };
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    char auth[600];

    *body = NULL;
    g.base = event_base_new();
    conn = evhttp_connection_base_new(g.base, NULL, host, (ev_uint16_t)port);
    evhttp_connection_set_timeout(conn, 10);
    req = evhttp_request_new(on_get, &g);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    if (token && *token) {
        snprintf(auth, sizeof(auth), "Bearer %s", token);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
    }
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) == 0)
        event_base_dispatch(g.base);
    evhttp_connection_free(conn);
    event_base_free(g.base);
    *body = g.body;
    return g.status;
}

/* A paged management-API list: every item of `field` across pages. */
static json_t *list_all(const char *host, int port, const char *path, const char *field,
                        const char *token, char *err, size_t errn)
{
    json_t *all = json_array();
    char *marker = NULL;

    for (int page = 0; page < 1000; page++) {
        char url[1024], *body;
        json_t *doc, *items, *next;
        int st;

        if (marker) {
            char *enc = evhttp_uriencode(marker, -1, 0);
            snprintf(url, sizeof(url), "%s?Marker=%s", path, enc ? enc : "");
            free(enc);
        } else {
            snprintf(url, sizeof(url), "%s", path);
        }
        st = http_get(host, port, url, token, &body);
        doc = body ? json_loads(body, 0, NULL) : NULL;
        if (st != 200 || !doc) {
            const char *msg = json_string_value(json_object_get(doc, "Message"));
            if (!msg)
                msg = json_string_value(json_object_get(doc, "message"));
            snprintf(err, errn, "GET %s: %s%s%s", path,
                     st < 0 ? "no answer" : st == 200 ? "not JSON" : "refused",
                     msg ? ": " : "", msg ? msg : "");
            json_decref(doc);
            free(body);
            free(marker);
            json_decref(all);
            return NULL;
        }
        items = json_object_get(doc, field);
        json_array_extend(all, json_is_array(items) ? items : json_array());
        next = json_object_get(doc, "NextMarker");
        free(marker);
        marker = json_is_string(next) && *json_string_value(next)
                     ? sl_strdup(json_string_value(next)) : NULL;
        json_decref(doc);
        free(body);
        if (!marker)
            break;
    }
    free(marker);
    return all;
}

/* ------------------------------------------------------------------ */
/* /metrics                                                            */

/* The value of label `name` in a sample's `{...}` text, into out. */
static bool label(const char *labels, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *p = labels;

    while (p && *p) {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=' && p[nl + 1] == '"') {
            size_t o = 0;
            for (p += nl + 2; *p && *p != '"' && o + 1 < n; p++) {
                if (*p == '\\' && p[1])
                    p++;
                out[o++] = *p;
            }
            out[o] = '\0';
            return true;
        }
        /* to the next label: past the closing quote of this value */
        p = strchr(p, '"');
        if (!p)
            break;
        for (p++; *p && *p != '"'; p++)
            if (*p == '\\' && p[1])
                p++;
        if (*p)
            p++;
        if (*p == ',')
            p++;
    }
    return false;
}

/* Sum (or max) of `metric` over the samples whose label `key` is `val`
 * (and, when given, label `k2` is `v2`); -1 when there is none. */
static double metric(const char *text, const char *name, const char *key, const char *val,
                     const char *k2, const char *v2, bool max)
{
    size_t nn = strlen(name);
    double acc = -1;

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        const char *end = strchr(p, '\n');
        char labels[512], v[256];
        const char *sp;
        size_t ll;
        double x;

        if (*p == '#' || strncmp(p, name, nn) != 0 || (p[nn] != '{' && p[nn] != ' '))
            continue;
        labels[0] = '\0';
        if (p[nn] == '{') {
            const char *close = strstr(p + nn, "} ");
            if (!close || (end && close > end))
                continue;
            ll = (size_t)(close - (p + nn + 1));
            if (ll >= sizeof(labels))
                continue;
            memcpy(labels, p + nn + 1, ll);
            labels[ll] = '\0';
            sp = close + 1;
        } else {
            sp = p + nn;
        }
        if (key && (!label(labels, key, v, sizeof(v)) || strcmp(v, val) != 0))
            continue;
        if (k2 && (!label(labels, k2, v, sizeof(v)) || strcmp(v, v2) != 0))
            continue;
        x = strtod(sp, NULL);
        if (acc < 0)
            acc = max ? x : 0;
        acc = max ? (x > acc ? x : acc) : acc + x;
    }
    return acc;
}

/* ------------------------------------------------------------------ */

static json_t *num(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static const char *type_of(const struct sl_source_conf *sc)
{
    return sc->type ? sl_conf_type_name(sc->type) : "?";
}

/* The lag figures of a source, by type, as a JSON object. */
static json_t *source_lag(const char *m, const struct sl_source_conf *sc)
{
    const char *t = type_of(sc);

    if (strcmp(t, "kafka") == 0)
        return json_pack("{s:o,s:o}",
                         "offset_lag", num(metric(m, "sluice_kafka_offset_lag", "source",
                                                  sc->name, NULL, NULL, false)),
                         "iterator_age_seconds",
                         num(metric(m, "sluice_kafka_iterator_age_seconds", "source", sc->name,
                                    NULL, NULL, true)));
    if (strcmp(t, "redis") == 0)
        return json_pack("{s:o,s:o,s:o}",
                         "queue_depth", num(metric(m, "sluice_redis_queue_depth", "source",
                                                   sc->name, NULL, NULL, false)),
                         "pending", num(metric(m, "sluice_redis_pending", "source", sc->name,
                                               NULL, NULL, false)),
                         "oldest_message_age_seconds",
                         num(metric(m, "sluice_redis_oldest_message_age_seconds", "source",
                                    sc->name, NULL, NULL, true)));
    if (strcmp(t, "postgres") == 0)
        return json_pack("{s:o,s:o}",
                         "slot_lag_bytes", num(metric(m, "sluice_pg_slot_lag_bytes", "source",
                                                      sc->name, NULL, NULL, true)),
                         "iterator_age_seconds",
                         num(metric(m, "sluice_pg_iterator_age_seconds", "source", sc->name,
                                    NULL, NULL, true)));
    return json_object();
}

static json_t *find_by(json_t *arr, const char *key, const char *val)
{
    size_t i;
    json_t *o;

    json_array_foreach(arr, i, o) {
        const char *v = json_string_value(json_object_get(o, key));
        if (v && strcmp(v, val) == 0)
            return o;
    }
    return NULL;
}

/* The whole report as JSON. `metrics` may be NULL (not readable). */
static json_t *report(const struct sl_config *c, const char *endpoint, int ready,
                      json_t *fns, json_t *maps, const char *m, const struct sl_overrides *ov)
{
    json_t *r = json_object(), *jf = json_array(), *js = json_array(), *jd = json_array();

    json_object_set_new(r, "endpoint", json_string(endpoint));
    json_object_set_new(r, "ready", ready < 0 ? json_null() : json_boolean(ready == 1));
    for (size_t i = 0; i < c->nfunctions; i++) {
        const struct sl_function_conf *fc = &c->functions[i];
        json_t *api = fns ? find_by(fns, "FunctionName", fc->name) : NULL;
        json_t *o = json_pack("{s:s,s:s}", "name", fc->name, "state",
                              api ? json_string_value(json_object_get(api, "State")) ?
                                  json_string_value(json_object_get(api, "State")) : "?"
                                  : "unknown");
        json_object_set_new(o, "invocations", num(m ? metric(m, "sluice_invocations_total",
                                                             "function", fc->name, NULL, NULL,
                                                             false) : -1));
        json_object_set_new(o, "errors", num(m ? metric(m, "sluice_invocation_errors_total",
                                                        "function", fc->name, NULL, NULL,
                                                        false) : -1));
        json_object_set_new(o, "throttles", num(m ? metric(m, "sluice_throttles_total",
                                                           "function", fc->name, NULL, NULL,
                                                           false) : -1));
        json_object_set_new(o, "running",
                            num(m ? metric(m, "sluice_function_concurrent_executions",
                                           "function", fc->name, NULL, NULL, false) : -1));
        json_object_set_new(o, "dead_letters",
                            num(m ? metric(m, "sluice_dlq_writes_total", "function", fc->name,
                                           NULL, NULL, false) : -1));
        json_array_append_new(jf, o);
    }
    for (size_t i = 0; i < c->nsources; i++) {
        const struct sl_source_conf *sc = &c->sources[i];
        char uuid[37];
        json_t *map, *o, *counts = json_object();
        static const char *const outcomes[] = { "received", "succeeded", "retried",
                                                "dead_lettered", "filtered" };

        sl_mapping_uuid(c, sc, uuid);
        map = maps ? find_by(maps, "UUID", uuid) : NULL;
        o = json_pack("{s:s,s:s,s:s,s:s}", "name", sc->name, "type", type_of(sc), "function",
                      sc->function ? sc->function : "", "uuid", uuid);
        json_object_set_new(o, "state",
                            json_string(map && json_string_value(json_object_get(map, "State"))
                                            ? json_string_value(json_object_get(map, "State"))
                                            : "unknown"));
        if (map && json_object_get(map, "BatchSize"))
            json_object_set(o, "batch_size", json_object_get(map, "BatchSize"));
        for (size_t k = 0; k < 5; k++)
            json_object_set_new(counts, outcomes[k],
                                num(m ? metric(m, "sluice_source_records_total", "source",
                                               sc->name, "outcome", outcomes[k], false) : -1));
        json_object_set_new(o, "records", counts);
        json_object_set_new(o, "in_flight",
                            num(m ? metric(m, "sluice_source_outstanding_records", "source",
                                           sc->name, NULL, NULL, false) : -1));
        json_object_set_new(o, "lag", m ? source_lag(m, sc) : json_object());
        if (map && json_object_get(map, "LastProcessingResult"))
            json_object_set(o, "last_processing_result",
                            json_object_get(map, "LastProcessingResult"));
        json_array_append_new(js, o);
    }
    for (size_t i = 0; i < c->nsinks; i++) {
        const struct sl_sink_conf *s = &c->sinks[i];
        size_t n = 0;
        int rc = sl__cli_dlq_count(s, &n);

        json_array_append_new(jd, json_pack("{s:s,s:s,s:o}", "sink", s->name, "type",
                                            sl_conf_type_name(s->type), "entries",
                                            rc == 0 ? json_integer((json_int_t)n)
                                                    : json_null()));
    }
    json_object_set_new(r, "functions", jf);
    json_object_set_new(r, "sources", js);
    json_object_set_new(r, "dead_letters", jd);
    json_object_set_new(r, "overrides",
                        ov && !sl_overrides_empty(ov) ? json_deep_copy(sl_overrides_doc(ov))
                                                      : json_object());
    if (ov)
        json_object_set_new(r, "overrides_file", json_string(sl_overrides_path(ov)));
    return r;
}

static void fmt_num(char *out, size_t n, json_t *v)
{
    if (!v || json_is_null(v))
        snprintf(out, n, "-");
    else
        snprintf(out, n, "%.15g", json_number_value(v));
}

static void print_text(json_t *r)
{
    size_t i;
    json_t *o;
    char a[32], b[32], cc[32], d[32], e[32];
    const char *ready = json_is_null(json_object_get(r, "ready")) ? "not answering"
                        : json_is_true(json_object_get(r, "ready")) ? "ready" : "not ready";

    printf("sluice at %s: %s\n\n", json_string_value(json_object_get(r, "endpoint")), ready);
    printf("%-20s %-8s %12s %8s %10s %8s %8s\n", "FUNCTION", "STATE", "INVOCATIONS", "ERRORS",
           "THROTTLES", "RUNNING", "DLQ");
    json_array_foreach(json_object_get(r, "functions"), i, o) {
        fmt_num(a, sizeof(a), json_object_get(o, "invocations"));
        fmt_num(b, sizeof(b), json_object_get(o, "errors"));
        fmt_num(cc, sizeof(cc), json_object_get(o, "throttles"));
        fmt_num(d, sizeof(d), json_object_get(o, "running"));
        fmt_num(e, sizeof(e), json_object_get(o, "dead_letters"));
        printf("%-20s %-8s %12s %8s %10s %8s %8s\n",
               json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "state")), a, b, cc, d, e);
    }
    printf("\n%-20s %-9s %-10s %-16s %10s %10s %8s %8s  %s\n", "SOURCE", "TYPE", "STATE",
           "FUNCTION", "RECEIVED", "SUCCEEDED", "RETRIED", "DLQ", "LAG");
    json_array_foreach(json_object_get(r, "sources"), i, o) {
        json_t *rec = json_object_get(o, "records"), *lag = json_object_get(o, "lag"), *lv;
        const char *lk;
        char lagtxt[256] = "";
        size_t off = 0;

        fmt_num(a, sizeof(a), json_object_get(rec, "received"));
        fmt_num(b, sizeof(b), json_object_get(rec, "succeeded"));
        fmt_num(cc, sizeof(cc), json_object_get(rec, "retried"));
        fmt_num(d, sizeof(d), json_object_get(rec, "dead_lettered"));
        json_object_foreach(lag, lk, lv) {
            fmt_num(e, sizeof(e), lv);
            off += (size_t)snprintf(lagtxt + off, off < sizeof(lagtxt) ? sizeof(lagtxt) - off : 0,
                                    "%s%s=%s", off ? " " : "", lk, e);
            if (off >= sizeof(lagtxt))
                break;
        }
        printf("%-20s %-9s %-10s %-16s %10s %10s %8s %8s  %s\n",
               json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "type")),
               json_string_value(json_object_get(o, "state")),
               json_string_value(json_object_get(o, "function")), a, b, cc, d, lagtxt);
    }
    printf("\n%-20s %-10s %s\n", "SINK", "TYPE", "ENTRIES");
    json_array_foreach(json_object_get(r, "dead_letters"), i, o) {
        fmt_num(a, sizeof(a), json_object_get(o, "entries"));
        printf("%-20s %-10s %s\n", json_string_value(json_object_get(o, "sink")),
               json_string_value(json_object_get(o, "type")), a);
    }
    if (json_object_size(json_object_get(r, "overrides")) > 0) {
        char *t = json_dumps(json_object_get(r, "overrides"), JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("\noverrides in force (%s, made through the management API):\n%s\n",
               json_string_value(json_object_get(r, "overrides_file")), t ? t : "");
        free(t);
    } else {
        printf("\nno overrides in force\n");
    }
}

/* The bearer token to send: $SLUICE_TOKEN, else the first bearer token in
 * server.auth with the read (or admin) scope, else none. */
static const char *pick_token(const struct sl_config *c)
{
    const char *env = getenv("SLUICE_TOKEN"), *key, *best = NULL;
    json_t *e;
    json_int_t pos = 0;

    if (env && *env)
        return env;
    json_object_foreach(c->server.auth, key, e) {
        json_int_t p = json_integer_value(json_object_get(e, "pos"));
        json_int_t sc = json_integer_value(json_object_get(e, "scopes"));

        if (json_object_get(e, "secret") || !(sc & (SL_SCOPE_READ | SL_SCOPE_ADMIN)))
            continue;
        if (!best || p < pos) {
            best = key;
            pos = p;
        }
    }
    return best;
}

int sl__cmd_status(int argc, char **argv)
{
    const char *cfg = NULL, *endpoint = NULL, *token = getenv("SLUICE_TOKEN");
    const char *mtoken = getenv("SLUICE_METRICS_TOKEN");
    bool as_json = false;
    struct sl_config *c = NULL;
    struct sl_overrides *ov = NULL;
    char host[256], url[300], err[600] = "", *body = NULL, *metrics = NULL;
    int port = 0, ready, rc = EXIT_FAIL;
    json_t *fns = NULL, *maps = NULL, *r;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            as_json = true;
        else if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (!cfg && argv[i][0] != '-')
            cfg = argv[i];
        else {
            fprintf(stderr, "usage: sluice status CONFIG [--json] [--endpoint URL]\n");
            return EXIT_USAGE;
        }
    }
    if (!cfg) {
        fprintf(stderr, "usage: sluice status CONFIG [--json] [--endpoint URL]\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(cfg, &c) != 0)
        return EXIT_FAIL;
    if (!token || !*token)
        token = pick_token(c);
    if (endpoint) {
        struct evhttp_uri *u = evhttp_uri_parse(endpoint);
        if (!u || !evhttp_uri_get_host(u)) {
            fprintf(stderr, "sluice: '%s' is not an http:// URL\n", endpoint);
            if (u)
                evhttp_uri_free(u);
            goto out;
        }
        snprintf(host, sizeof(host), "%s", evhttp_uri_get_host(u));
        port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
        evhttp_uri_free(u);
    } else {
        /* server.listen: host:port, [v6]:port; a wildcard is asked on loopback */
        const char *l = c->server.listen, *colon = strrchr(l, ':');
        size_t hl = colon ? (size_t)(colon - l) : 0;

        if (!colon || hl >= sizeof(host)) {
            fprintf(stderr, "sluice: cannot read server.listen '%s'\n", l);
            goto out;
        }
        memcpy(host, l, hl);
        host[hl] = '\0';
        if (host[0] == '[') {
            memmove(host, host + 1, strlen(host));
            host[strcspn(host, "]")] = '\0';
        }
        if (!host[0] || strcmp(host, "0.0.0.0") == 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        else if (strcmp(host, "::") == 0)
            snprintf(host, sizeof(host), "::1");
        port = atoi(colon + 1);
    }
    snprintf(url, sizeof(url), strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host,
             port);

    ready = http_get(host, port, "/readyz", NULL, &body);
    free(body);
    ready = ready < 0 ? -1 : ready == 200 ? 1 : 0;
    if (ready >= 0) {
        fns = list_all(host, port, "/2015-03-31/functions/", "Functions", token, err,
                       sizeof(err));
        if (fns)
            maps = list_all(host, port, "/2015-03-31/event-source-mappings/",
                            "EventSourceMappings", token, err, sizeof(err));
        if (http_get(host, port, "/metrics", mtoken ? mtoken : token, &metrics) != 200) {
            free(metrics);
            metrics = NULL;
            if (!err[0])
                snprintf(err, sizeof(err), "GET /metrics refused (server.metrics_auth: set "
                         "$SLUICE_METRICS_TOKEN)");
        }
    } else {
        snprintf(err, sizeof(err), "no answer at %s (is `sluice run` listening there?)", url);
    }
    {
        char why[300];
        if (sl_overrides_load(c->server.data_dir, &ov, why, sizeof(why)) != 0) {
            ov = NULL;
            if (!err[0])
                snprintf(err, sizeof(err), "%s", why);
        }
    }

    r = report(c, url, ready, fns, maps, metrics, ov);
    if (err[0])
        json_object_set_new(r, "problem", json_string(err));
    if (as_json) {
        char *t = json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", t ? t : "{}");
        free(t);
    } else {
        print_text(r);
        if (err[0])
            fprintf(stderr, "sluice: %s\n", err);
    }
    json_decref(r);
    rc = ready == 1 && !err[0] ? EXIT_OK : EXIT_FAIL;
out:
    json_decref(fns);
    json_decref(maps);
    free(metrics);
    sl_overrides_free(ov);
    sl_config_free(c);
    return rc;
}
