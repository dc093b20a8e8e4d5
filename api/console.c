/* The web console at /console: static pages embedded in the binary
 * (api/assets.h, generated from console/), the ring of metric samples
 * behind its charts (sluice/mring.h), and the JSON it reads:
 *
 *   GET    /console, /console/...             the pages (no credential: they hold no data)
 *   GET    /console/api/overview              functions, sources, sinks, their state
 *   GET    /console/api/series?names=&key=&points=   the ring (charts, figures)
 *   GET    /console/api/sources/{name}        lanes, state, the source's current gauges
 *   GET    /console/api/dlq/{sink}            the sink's dead letters
 *   GET    /console/api/dlq/{sink}/{id}       one, whole
 *   POST   /console/api/dlq/{sink}/{id}/redrive   send it back (as `sluice dlq redrive`)
 *   POST   /console/api/dlq/{sink}/redrive        all of them
 *   DELETE /console/api/dlq/{sink}/{id}       drop it
 *
 * Enabling, disabling and batch sizes go through the management API
 * (UpdateEventSourceMapping); the live tail is GET /logs/tail.
 *
 * With server.auth set, the API needs a credential with the `read` scope,
 * and redrive and delete `admin`; a credential sees only the functions it
 * names (and their sources and dead letters). Every answer carries a
 * Content-Security-Policy of default-src 'self' and nosniff: the pages
 * build their DOM from text nodes only, so a payload or a handler's output
 * is never markup.
 *
 * The ring is sampled every 10 s on the loop (a walk of the registry, as
 * a /metrics scrape); the invoke path does not see the console at all.
 * The dead-letter stores are read with blocking clients on the worker
 * pool (sinks/dlqops.c); a redrive of an asynchronous record is an
 * sl_dispatcher_enqueue, of a queue message a requeue on the worker; an
 * entry is deleted only after it was taken. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "assets.h"
#include "internal.h"
#include "sluice/clock.h"
#include "sluice/dlqops.h"
#include "sluice/jbuf.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/mring.h"
#include "sluice/overrides.h"
#include "sluice/poller.h"
#include "sluice/pool.h"
#include "sluice/sink.h"

#define PREFIX          "/console"
#define RING_SERIES_MAX 2048
#define DLQ_LIST_MAX    1000      /* entries one listing returns */
#define SUMMARY_MAX     300       /* characters of an entry's summary */
#define LANES_MAX       512
#define SEGS_MAX        6

#define CSP "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

/* What the charts and figures are made of. */
static const struct sl_mring_rule rules[] = {
    { "source.records_per_s", "sluice_source_records_total", SL_MRING_RATE, "source",
      "outcome=received" },
    { "source.succeeded_per_s", "sluice_source_records_total", SL_MRING_RATE, "source",
      "outcome=succeeded" },
    { "source.dlq_per_s", "sluice_source_records_total", SL_MRING_RATE, "source",
      "outcome=dead_lettered" },
    { "source.errors_per_s", "sluice_source_failed_batches_total", SL_MRING_RATE, "source",
      NULL },
    { "source.outstanding", "sluice_source_outstanding_records", SL_MRING_SUM, "source", NULL },
    { "source.kafka_lag", "sluice_kafka_offset_lag", SL_MRING_SUM, "source", NULL },
    { "source.iterator_age_s", "sluice_kafka_iterator_age_seconds", SL_MRING_MAX, "source", NULL },
    { "source.iterator_age_s", "sluice_pg_iterator_age_seconds", SL_MRING_MAX, "source", NULL },
    { "source.redis_pending", "sluice_redis_pending", SL_MRING_SUM, "source", NULL },
    { "source.redis_oldest_age_s", "sluice_redis_oldest_message_age_seconds", SL_MRING_MAX,
      "source", NULL },
    { "source.pg_slot_lag_bytes", "sluice_pg_slot_lag_bytes", SL_MRING_SUM, "source", NULL },
    { "function.invocations_per_s", "sluice_invocations_total", SL_MRING_RATE, "function", NULL },
    { "function.errors_per_s", "sluice_invocation_errors_total", SL_MRING_RATE, "function",
      NULL },
    { "function.throttles_per_s", "sluice_throttles_total", SL_MRING_RATE, "function", NULL },
    { "function.cold_starts_per_s", "sluice_cold_starts_total", SL_MRING_RATE, "function", NULL },
    { "function.dlq_per_s", "sluice_dlq_writes_total", SL_MRING_RATE, "function", NULL },
    { "function.duration_p50_s", "sluice_invocation_duration_seconds", SL_MRING_P50, "function",
      NULL },
    { "function.duration_p99_s", "sluice_invocation_duration_seconds", SL_MRING_P99, "function",
      NULL },
    { "function.concurrency", "sluice_function_concurrent_executions", SL_MRING_SUM, "function",
      NULL },
    { "all.concurrency", "sluice_concurrent_executions", SL_MRING_SUM, NULL, NULL },
    { "all.async_depth", "sluice_async_queue_depth", SL_MRING_SUM, NULL, NULL },
};

/* A dead-letter request in flight: worker and loop phases. */
enum dverb { D_LIST, D_SHOW, D_REDRIVE, D_DELETE };

struct djob {
    LIST_ENTRY(djob)          link;
    struct sl_api            *a;          /* NULL: the API is gone */
    const struct sl_config   *conf;       /* the API's, for the worker */
    struct evhttp_request    *req;        /* NULL: the client went away */
    struct evhttp_connection *evcon;
    char                      id[37];
    enum dverb                verb;
    const struct sl_sink_conf *sink;
    char                     *entry;      /* one entry's id, NULL: all */
    json_t                   *cred;       /* server.auth entry (borrowed), NULL: auth off */
    struct sl_dlq_entries     e;
    char                     *sel;        /* redrive: entries chosen */
    char                     *drop;       /* taken: delete them */
    char                     *requeue;    /* queue messages to put back on the worker */
    size_t                    next;       /* redrive: the next entry to enqueue */
    size_t                    redriven, kept;
    json_t                   *problems;   /* [{"id","message"}] */
    struct sl_err             err;
    int                       status;     /* answer status when err is set */
};

struct sl__console {
    struct sl_mring *ring;
    struct event    *tick;
    LIST_HEAD(, djob) jobs;
};

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static void headers(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Security-Policy", CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Cache-Control", "no-store");
}

static void send_json(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                      json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);

    json_decref(j);
    headers(req);
    sl__api_respond(a, req, id, code, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

static void send_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                       const char *type, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void send_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                       const char *type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    headers(req);
    sl__api_respond_error(a, req, id, code, type, NULL, "%s", msg);
}

/* The credential, or an answer (401/403) and false. `scope` SL_SCOPE_*. */
static bool allowed(struct sl_api *a, struct evhttp_request *req, const char *id, int scope,
                    json_t **cred)
{
    if (!sl__api_check_token(a, req, id, cred))
        return false;
    if (*cred && !(sl__api_scopes(*cred) & (scope == SL_SCOPE_READ ? SL_SCOPE_READ | SL_SCOPE_ADMIN
                                                                   : scope))) {
        send_error(a, req, id, 403, "AccessDeniedException",
                   "this credential has no '%s' scope (server.auth scopes)",
                   scope == SL_SCOPE_ADMIN ? "admin" : "read");
        return false;
    }
    return true;
}

static bool covers(const json_t *cred, const char *fn)
{
    return !cred || sl__api_token_covers(cred, fn ? fn : "?");
}

static const struct sl_source_conf *source_conf(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsources; i++)
        if (strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    return NULL;
}

static json_t *num_or_null(double v)
{
    return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

/* ------------------------------------------------------------------ */
/* The ring                                                            */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sl_api *a = arg;

    (void)fd;
    (void)what;
    sl_mring_sample(a->console->ring, a->metrics, sl_wall_ms());
}

struct keep_ctx {
    const struct sl_config *c;
    const json_t           *cred;
};

/* A limited credential sees the series of its functions and their sources. */
static bool keep_series(void *arg, const char *name, const char *key)
{
    struct keep_ctx *k = arg;
    const struct sl_source_conf *sc;

    if (!k->cred)
        return true;
    if (strncmp(name, "function.", 9) == 0)
        return covers(k->cred, key);
    if (strncmp(name, "source.", 7) == 0)
        return (sc = source_conf(k->c, key)) && covers(k->cred, sc->function);
    return covers(k->cred, "*"); /* the totals: for credentials of every function */
}

static void get_series(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const char *query, json_t *cred)
{
    struct evkeyvalq q;
    const char *names, *key, *points;
    struct sl_jbuf b = { 0 };
    struct keep_ctx k = { a->conf, cred };

    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) != 0) {
        send_error(a, req, id, 400, "InvalidParameterValueException",
                   "cannot parse the query string");
        return;
    }
    names = evhttp_find_header(&q, "names");
    key = evhttp_find_header(&q, "key");
    points = evhttp_find_header(&q, "points");
    sl_mring_json(a->console->ring, names, key, points ? strtoul(points, NULL, 10) : 0,
                  keep_series, &k, &b);
    evhttp_clear_headers(&q);
    headers(req);
    sl__api_respond(a, req, id, 200, "application/json", b.p, b.n);
    free(b.p);
}

/* ------------------------------------------------------------------ */
/* Overview and a source                                               */

static const char *runtime_name(int r)
{
    /* enum sl_runtime_kind ("provided" is lambda's alias) */
    static const char *const names[] = { "native", "lambda", "python", "lambda" };

    return r >= 0 && (size_t)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

static json_t *source_json(struct sl_api *a, const struct sl_source_conf *sc)
{
    struct sl_source *s = a->engine ? sl_engine_source(a->engine, sc->name) : NULL;
    json_t *j = json_object();
    char uuid[37];

    sl_mapping_uuid(a->conf, sc, uuid);
    json_object_set_new(j, "name", sl__api_json_text(sc->name));
    json_object_set_new(j, "type", json_string(sl_conf_type_name(sc->type)));
    json_object_set_new(j, "function", sl__api_json_text(sc->function));
    json_object_set_new(j, "uuid", json_string(uuid));
    json_object_set_new(j, "state", json_string(s ? sl_source_state(s)
                                                   : sc->enabled ? "Enabling" : "Disabled"));
    json_object_set_new(j, "batch_size", json_integer(sc->batch_size));
    json_object_set_new(j, "maximum_batching_window_ms",
                        json_integer(sc->maximum_batching_window_ms));
    json_object_set_new(j, "on_failure", sc->on_failure ? sl__api_json_text(sc->on_failure)
                                                        : json_null());
    json_object_set_new(j, "outstanding", json_integer(s ? (json_int_t)sl_source_outstanding(s)
                                                         : 0));
    json_object_set_new(j, "paused", json_boolean(s && s->paused));
    return j;
}

static void get_overview(struct sl_api *a, struct evhttp_request *req, const char *id,
                         json_t *cred)
{
    const struct sl_config *c = a->conf;
    json_t *o = json_object(), *fns = json_array(), *srcs = json_array(), *sinks = json_array();

    for (size_t i = 0; i < c->nfunctions; i++) {
        const struct sl_function_conf *fn = &c->functions[i];
        json_t *j;

        if (!covers(cred, fn->name))
            continue;
        j = json_object();
        json_object_set_new(j, "name", sl__api_json_text(fn->name));
        json_object_set_new(j, "runtime", json_string(runtime_name(fn->runtime)));
        json_object_set_new(j, "memory_mb", json_integer(fn->memory_mb));
        json_object_set_new(j, "timeout_s", json_real((double)fn->timeout_ms / 1000.0));
        json_object_set_new(j, "reserved_concurrency",
                            fn->reserved_concurrency >= 0 ? json_integer(fn->reserved_concurrency)
                                                          : json_null());
        json_object_set_new(j, "provisioned_concurrency",
                            json_integer(fn->provisioned_concurrency));
        json_object_set_new(j, "state", json_string("Active"));
        json_array_append_new(fns, j);
    }
    for (size_t i = 0; i < c->nsources; i++)
        if (covers(cred, c->sources[i].function))
            json_array_append_new(srcs, source_json(a, &c->sources[i]));
    for (size_t i = 0; i < c->nsinks; i++) {
        const struct sl_sink_conf *sk = &c->sinks[i];
        json_t *j = json_object();

        json_object_set_new(j, "name", sl__api_json_text(sk->name));
        json_object_set_new(j, "type", json_string(sl_conf_type_name(sk->type)));
        json_object_set_new(j, "readable", json_boolean(sl_dlq_readable(sk)));
        /* a running sluice keeps appending to the file it opened */
        json_object_set_new(j, "writable", json_boolean(sl_dlq_readable(sk) &&
                                                        sk->type != &sl_file_sink.conf));
        json_array_append_new(sinks, j);
    }
    json_object_set_new(o, "functions", fns);
    json_object_set_new(o, "sources", srcs);
    json_object_set_new(o, "sinks", sinks);
    json_object_set_new(o, "concurrency_limit", json_integer(c->server.concurrency_limit));
    json_object_set_new(o, "auth", json_boolean(c->server.auth &&
                                                json_object_size(c->server.auth) > 0));
    json_object_set_new(o, "step_s", json_integer(SL_MRING_STEP_MS / 1000));
    send_json(a, req, id, 200, o);
}

/* The registry's series of one source (gauges and counters), as they
 * are now: Kafka partitions' lag and age, Redis depths, the slot lag. */
struct gauges_ctx {
    const char *source;
    json_t     *out;
};

static void collect_gauges(const struct sl_metric_view *f, void *arg)
{
    struct gauges_ctx *g = arg;

    if (!f->label || f->type == SL_METRIC_HISTOGRAM)
        return;
    for (size_t i = 0; i < f->n; i++) {
        const char *lv = f->s[i].lv, *n = f->label, *v = lv;
        json_t *labels, *j;
        bool mine = false;

        if (!lv)
            continue;
        labels = json_object();
        while (*n) {
            size_t nl = strcspn(n, ","), vl = v ? strcspn(v, SL_METRIC_LV_SEP) : 0;
            char *name = sl_strndup(n, nl), *val = sl_strndup(v ? v : "", vl);

            if (strcmp(name, "source") == 0 && strcmp(val, g->source) == 0)
                mine = true;
            json_object_set_new(labels, name, sl__api_json_text(val));
            free(name);
            free(val);
            n += nl + (n[nl] == ',');
            if (v)
                v = v[vl] ? v + vl + 1 : NULL;
        }
        if (!mine) {
            json_decref(labels);
            continue;
        }
        j = json_object();
        json_object_set_new(j, "name", json_string(f->name));
        json_object_set_new(j, "labels", labels);
        json_object_set_new(j, "value", num_or_null(f->s[i].value));
        json_array_append_new(g->out, j);
    }
}

static void get_source(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const char *name, json_t *cred)
{
    const struct sl_source_conf *sc = source_conf(a->conf, name);
    struct sl_source *s;
    struct sl_lane_info *lanes;
    struct gauges_ctx g;
    json_t *j, *jl;
    size_t n;

    if (!sc || !covers(cred, sc->function)) {
        send_error(a, req, id, 404, "ResourceNotFoundException", "no source named %.200s",
                   name);
        return;
    }
    j = source_json(a, sc);
    s = a->engine ? sl_engine_source(a->engine, sc->name) : NULL;
    jl = json_array();
    lanes = sl_calloc(LANES_MAX, sizeof(*lanes));
    n = s ? sl_source_lanes(s, lanes, LANES_MAX) : 0;
    for (size_t i = 0; i < n && i < LANES_MAX; i++) {
        json_t *l = json_object();

        json_object_set_new(l, "key", sl__api_json_text(lanes[i].key));
        json_object_set_new(l, "waiting", json_integer((json_int_t)lanes[i].waiting));
        json_object_set_new(l, "running", json_integer((json_int_t)lanes[i].running));
        json_object_set_new(l, "attempts", json_integer(lanes[i].attempts));
        json_object_set_new(l, "error", lanes[i].error ? sl__api_json_text(lanes[i].error)
                                                       : json_null());
        json_array_append_new(jl, l);
    }
    free(lanes);
    json_object_set_new(j, "lanes", jl);
    json_object_set_new(j, "lanes_total", json_integer((json_int_t)n));
    g.source = sc->name;
    g.out = json_array();
    sl_metrics_each(a->metrics, collect_gauges, &g);
    json_object_set_new(j, "metrics", g.out);
    send_json(a, req, id, 200, j);
}

/* ------------------------------------------------------------------ */
/* Dead letters                                                        */

static void djob_free(struct djob *w)
{
    if (w->a)
        LIST_REMOVE(w, link);
    sl_dlq_entries_free(&w->e);
    free(w->entry);
    free(w->sel);
    free(w->drop);
    free(w->requeue);
    json_decref(w->problems);
    free(w);
}

static void on_djob_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct djob *w = arg;

    (void)evcon;
    w->req = NULL;
    w->evcon = NULL;
}

/* Whether the job may go on (else it was answered or dropped and freed).
 * A client that leaves does not stop it: what was taken is deleted. */
static bool djob_alive(struct djob *w)
{
    if (w->a && w->a->accepting)
        return true;
    if (w->evcon)
        evhttp_connection_set_closecb(w->evcon, NULL, NULL);
    if (w->a && w->req)
        send_error(w->a, w->req, w->id, 503, "ServiceException", "sluice is stopping");
    djob_free(w);
    return false;
}

/* Answer and free. */
static void djob_answer(struct djob *w, int code, json_t *body)
{
    if (w->evcon)
        evhttp_connection_set_closecb(w->evcon, NULL, NULL);
    if (w->a && w->req) {
        if (w->err.code)
            send_error(w->a, w->req, w->id, w->status ? w->status : 502, w->status == 404
                       ? "ResourceNotFoundException" : "ServiceException", "%s", w->err.msg);
        else
            send_json(w->a, w->req, w->id, code, body);
        body = NULL;
    }
    json_decref(body);
    djob_free(w);
}

static json_t *entry_brief(const struct sl_config *c, const struct sl_dlq_entry *en, bool whole)
{
    struct sl_dlq_target t;
    json_t *j = json_object();
    const char *error;
    long long attempts;
    char *sum;

    sl_dlq_classify(c, en->record, &t);
    sl_dlq_error(&t, &error, &attempts);
    json_object_set_new(j, "id", sl__api_json_text(en->id));
    json_object_set_new(j, "kind", json_string(sl_dlq_kind_name(t.kind)));
    json_object_set_new(j, "function", sl__api_json_text(t.fn));
    json_object_set_new(j, "condition", sl__api_json_text(t.cond));
    json_object_set_new(j, "error", error ? sl__api_json_text(error) : json_null());
    json_object_set_new(j, "attempts", attempts >= 0 ? json_integer(attempts) : json_null());
    if (whole) {
        json_object_set_new(j, "record", t.doc ? json_incref(t.doc) : sl__api_json_text(en->record));
        json_object_set_new(j, "payload", t.send ? json_incref(t.send)
                                        : t.kind == SL_DLQ_MESSAGE
                                            ? json_incref(json_object_get(t.doc, "body"))
                                            : json_null());
    } else {
        sum = sl_dlq_summary(&t);
        if (sum && strlen(sum) > SUMMARY_MAX) {
            /* cut on a UTF-8 boundary */
            size_t k = SUMMARY_MAX;
            while (k > 0 && ((unsigned char)sum[k] & 0xc0) == 0x80)
                k--;
            sum[k] = '\0';
        }
        json_object_set_new(j, "summary", sl__api_json_text(sum ? sum : en->record));
        free(sum);
    }
    sl_dlq_target_free(&t);
    return j;
}

/* worker */
static void dlq_load_work(void *arg)
{
    struct djob *w = arg;

    sl_err_clear(&w->err);
    if (sl_dlq_load(w->sink, &w->e, &w->err) != 0)
        w->status = 502;
}

static void redrive_next(struct djob *w);

static void list_or_show_done(void *arg)
{
    struct djob *w = arg;
    const struct sl_config *c;
    json_t *o, *arr;
    size_t shown = 0, hidden = 0;

    if (!djob_alive(w))
        return;
    if (w->err.code) {
        djob_answer(w, 0, NULL);
        return;
    }
    c = w->a->conf;
    if (w->verb == D_SHOW) {
        for (size_t i = 0; i < w->e.n; i++) {
            json_t *j;

            if (strcmp(w->e.v[i].id, w->entry) != 0)
                continue;
            j = entry_brief(c, &w->e.v[i], true);
            if (!covers(w->cred, json_string_value(json_object_get(j, "function")))) {
                json_decref(j);
                break;
            }
            json_object_set_new(j, "sink", sl__api_json_text(w->sink->name));
            djob_answer(w, 200, j);
            return;
        }
        w->status = 404;
        sl_err_set(&w->err, SL_ENOTFOUND, false, "no entry %.100s in sink %s", w->entry,
                   w->sink->name);
        djob_answer(w, 0, NULL);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < w->e.n; i++) {
        json_t *j = entry_brief(c, &w->e.v[i], false);

        if (!covers(w->cred, json_string_value(json_object_get(j, "function")))) {
            hidden++;
            json_decref(j);
        } else if (shown < DLQ_LIST_MAX) {
            json_array_append_new(arr, j);
            shown++;
        } else {
            json_decref(j);
        }
    }
    o = json_object();
    json_object_set_new(o, "sink", sl__api_json_text(w->sink->name));
    json_object_set_new(o, "type", json_string(sl_conf_type_name(w->sink->type)));
    json_object_set_new(o, "total", json_integer((json_int_t)(w->e.n - hidden)));
    json_object_set_new(o, "entries", arr);
    json_object_set_new(o, "truncated", json_boolean(w->e.n - hidden > shown));
    djob_answer(w, 200, o);
}

static void problem(struct djob *w, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct djob *w, const char *id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *j = json_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_set_new(j, "id", sl__api_json_text(id));
    json_object_set_new(j, "message", sl__api_json_text(msg));
    json_array_append_new(w->problems, j);
    w->kept++;
}

/* worker: queue messages back on their queues, then delete what was
 * taken */
static void redrive_finish_work(void *arg)
{
    struct djob *w = arg;
    for (size_t i = 0; i < w->e.n; i++) {
        struct sl_dlq_target t;
        json_t *msgs[64];
        size_t n;
        bool ok = true;

        if (!w->requeue[i])
            continue;
        sl_dlq_classify(w->conf, w->e.v[i].record, &t);
        n = sl_dlq_messages(&t, msgs, sizeof(msgs) / sizeof(msgs[0]));
        for (size_t k = 0; ok && k < n; k++) {
            struct sl_err err;
            const struct sl_source_conf *s;

            sl_err_clear(&err);
            if (!(s = sl_dlq_message_source(w->conf, msgs[k], NULL, &err)) ||
                sl_dlq_requeue(s, msgs[k], &err) != 0) {
                problem(w, w->e.v[i].id, "%s", err.msg);
                ok = false;
            }
        }
        sl_dlq_target_free(&t);
        if (ok) {
            w->drop[i] = 1;
            w->redriven++;
        }
    }
    for (size_t i = 0; i < w->e.n; i++) {
        struct sl_err err;

        sl_err_clear(&err);
        if (w->drop[i] && sl_dlq_delete(w->sink, w->e.v[i].id, &err) != 0)
            problem(w, w->e.v[i].id, "taken, but not deleted from the sink: %s", err.msg);
    }
}

static void redrive_finish_done(void *arg)
{
    struct djob *w = arg;
    json_t *o;

    if (!w->a) {
        djob_free(w);
        return;
    }
    o = json_object();
    json_object_set_new(o, "redriven", json_integer((json_int_t)w->redriven));
    json_object_set_new(o, "kept", json_integer((json_int_t)w->kept));
    json_object_set_new(o, "problems", json_incref(w->problems));
    djob_answer(w, 200, o);
}

static void on_accepted(void *arg, int rc, const char *request_id)
{
    struct djob *w = arg;
    size_t i = w->next - 1;

    (void)request_id;
    if (!w->a) {
        djob_free(w);
        return;
    }
    if (rc == 0) {
        w->drop[i] = 1;
        w->redriven++;
    } else {
        problem(w, w->e.v[i].id, "the asynchronous queue did not take it: %s", sl_strerror(rc));
        w->next = w->e.n; /* as sluice dlq: stop at a refusal */
    }
    redrive_next(w);
}

/* Loop: enqueue the next asynchronous record, one at a time (each
 * waits for its commit); queue messages are collected for the worker. */
static void redrive_next(struct djob *w)
{
    while (w->next < w->e.n) {
        size_t i = w->next++;
        struct sl_dlq_target t;
        char *payload;
        int rc;

        if (!w->sel[i])
            continue;
        sl_dlq_classify(w->a->conf, w->e.v[i].record, &t);
        if (!covers(w->cred, t.fn)) {
            problem(w, w->e.v[i].id, "this credential does not cover function %s", t.fn);
        } else if (t.kind == SL_DLQ_MESSAGE || t.kind == SL_DLQ_OLD_QUEUE) {
            w->requeue[i] = 1;
        } else if (t.kind == SL_DLQ_ASYNC || t.kind == SL_DLQ_BATCH) {
            payload = json_dumps(t.send, JSON_COMPACT | JSON_ENCODE_ANY);
            rc = payload && strcmp(t.fn, "?") != 0
                     ? sl_dispatcher_enqueue(w->a->d, t.fn, payload, strlen(payload), on_accepted, w)
                     : SL_EINVAL;
            free(payload);
            if (rc == 0) {
                sl_dlq_target_free(&t);
                return; /* on_accepted goes on */
            }
            problem(w, w->e.v[i].id, "cannot invoke %s: %s", t.fn, sl_strerror(rc));
        } else if (t.kind == SL_DLQ_LOST) {
            problem(w, w->e.v[i].id, "records the source lost before delivery: nothing to "
                    "redrive");
        } else {
            problem(w, w->e.v[i].id, "not a record sluice can redrive");
        }
        sl_dlq_target_free(&t);
    }
    if (!djob_alive(w))
        return;
    sl_pool_submit(w->a->pool, redrive_finish_work, redrive_finish_done, w);
}

static void redrive_loaded(void *arg)
{
    struct djob *w = arg;
    size_t n;

    if (!djob_alive(w))
        return;
    if (w->err.code) {
        djob_answer(w, 0, NULL);
        return;
    }
    n = w->e.n ? w->e.n : 1;
    w->sel = sl_calloc(n, 1);
    w->drop = sl_calloc(n, 1);
    w->requeue = sl_calloc(n, 1);
    for (size_t i = 0; i < w->e.n; i++)
        w->sel[i] = !w->entry || strcmp(w->e.v[i].id, w->entry) == 0;
    if (w->entry && !memchr(w->sel, 1, w->e.n)) {
        w->status = 404;
        sl_err_set(&w->err, SL_ENOTFOUND, false, "no entry %.100s in sink %s", w->entry,
                   w->sink->name);
        djob_answer(w, 0, NULL);
        return;
    }
    redrive_next(w);
}

/* worker: one entry's function must be covered; the delete itself */
static void delete_work(void *arg)
{
    struct djob *w = arg;

    sl_err_clear(&w->err);
    if (w->cred) {
        /* a limited credential deletes only its functions' entries */
        if (sl_dlq_load(w->sink, &w->e, &w->err) != 0) {
            w->status = 502;
            return;
        }
        for (size_t i = 0; i < w->e.n; i++)
            if (strcmp(w->e.v[i].id, w->entry) == 0) {
                struct sl_dlq_target t;
                bool ok;

                sl_dlq_classify(w->conf, w->e.v[i].record, &t);
                ok = covers(w->cred, t.fn);
                sl_dlq_target_free(&t);
                if (!ok) {
                    w->status = 404;
                    sl_err_set(&w->err, SL_ENOTFOUND, false, "no entry %.100s", w->entry);
                    return;
                }
            }
    }
    if (sl_dlq_delete(w->sink, w->entry, &w->err) != 0)
        w->status = w->err.code == SL_ENOTFOUND ? 404 : 502;
}

static void delete_done(void *arg)
{
    struct djob *w = arg;
    json_t *o;

    if (!w->a) {
        djob_free(w);
        return;
    }
    o = json_object();
    json_object_set_new(o, "deleted", json_integer(w->err.code ? 0 : 1));
    djob_answer(w, 200, o);
}

static void dlq_request(struct sl_api *a, struct evhttp_request *req, const char *id,
                        enum dverb verb, const char *sink, const char *entry, json_t *cred)
{
    const struct sl_sink_conf *sk = sl_config_sink(a->conf, sink);
    struct djob *w;

    if (!sk) {
        send_error(a, req, id, 404, "ResourceNotFoundException", "no sink named %.200s", sink);
        return;
    }
    if (!sl_dlq_readable(sk)) {
        send_error(a, req, id, 400, "InvalidParameterValueException",
                   "a %s sink cannot be read back; read the topic with a Kafka consumer",
                   sl_conf_type_name(sk->type));
        return;
    }
    if ((verb == D_REDRIVE || verb == D_DELETE) && sk->type == &sl_file_sink.conf) {
        send_error(a, req, id, 409, "ResourceConflictException",
                   "sink %s is a file the running sluice appends to: redrive and delete it "
                   "with `sluice dlq` while sluice is stopped", sk->name);
        return;
    }
    if (!a->pool) {
        send_error(a, req, id, 503, "ServiceException", "no worker pool to read the sink with");
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->a = a;
    w->conf = a->conf;
    w->req = req;
    w->evcon = evhttp_request_get_connection(req);
    snprintf(w->id, sizeof(w->id), "%s", id);
    w->verb = verb;
    w->sink = sk;
    w->entry = entry ? sl_strdup(entry) : NULL;
    w->cred = cred;
    w->problems = json_array();
    LIST_INSERT_HEAD(&a->console->jobs, w, link);
    if (w->evcon)
        evhttp_connection_set_closecb(w->evcon, on_djob_conn_close, w);
    switch (verb) {
    case D_LIST:
    case D_SHOW:
        sl_pool_submit(a->pool, dlq_load_work, list_or_show_done, w);
        break;
    case D_REDRIVE:
        sl_pool_submit(a->pool, dlq_load_work, redrive_loaded, w);
        break;
    case D_DELETE:
        sl_pool_submit(a->pool, delete_work, delete_done, w);
        break;
    }
}

static void get_sinks(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    json_t *arr = json_array();

    for (size_t i = 0; i < a->conf->nsinks; i++) {
        const struct sl_sink_conf *sk = &a->conf->sinks[i];
        json_t *j = json_object();

        json_object_set_new(j, "name", sl__api_json_text(sk->name));
        json_object_set_new(j, "type", json_string(sl_conf_type_name(sk->type)));
        json_object_set_new(j, "readable", json_boolean(sl_dlq_readable(sk)));
        json_object_set_new(j, "writable", json_boolean(sl_dlq_readable(sk) &&
                                                        sk->type != &sl_file_sink.conf));
        json_array_append_new(arr, j);
    }
    send_json(a, req, id, 200, arr);
}

/* ------------------------------------------------------------------ */
/* Routing                                                             */

static void serve_asset(struct sl_api *a, struct evhttp_request *req, const char *id,
                        const char *rel)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *inm = evhttp_find_header(in, "If-None-Match");

    if (!*rel)
        rel = "index.html";
    for (size_t i = 0; i < sl__console_nassets; i++) {
        const struct sl__asset *as = &sl__console_assets[i];
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);

        if (strcmp(as->path, rel) != 0)
            continue;
        evhttp_add_header(h, "Content-Security-Policy", CSP);
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "X-Frame-Options", "DENY");
        evhttp_add_header(h, "Referrer-Policy", "no-referrer");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_add_header(h, "ETag", as->etag);
        if (inm && strcmp(inm, as->etag) == 0) {
            sl__api_respond(a, req, id, 304, NULL, NULL, 0);
            return;
        }
        if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
            sl__api_respond(a, req, id, 200, as->ctype, NULL, 0);
        else
            sl__api_respond(a, req, id, 200, as->ctype, as->data, as->len);
        return;
    }
    send_error(a, req, id, 404, "ResourceNotFoundException", "no console page %.200s", rel);
}

/* Split "a/b/c" into decoded segments; -1 when too many or malformed. */
static int split(const char *p, char **seg, size_t max, size_t *n)
{
    *n = 0;
    while (*p) {
        size_t l = strcspn(p, "/");
        char *raw, *dec;

        if (l == 0 || *n == max)
            return -1;
        raw = sl_strndup(p, l);
        dec = evhttp_uridecode(raw, 0, NULL);
        free(raw);
        if (!dec || !*dec || strlen(dec) > 512) {
            free(dec);
            return -1;
        }
        seg[(*n)++] = dec;
        p += l;
        if (*p == '/')
            p++;
    }
    return 0;
}

bool sl__console_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                        const char *path, const char *query)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    char *seg[SEGS_MAX] = { 0 };
    size_t nseg = 0;
    json_t *cred = NULL;
    const char *rest;

    if (strncmp(path, PREFIX, strlen(PREFIX)) != 0 ||
        (path[strlen(PREFIX)] != '\0' && path[strlen(PREFIX)] != '/'))
        return false;
    rest = path + strlen(PREFIX);
    if (*rest == '/')
        rest++;
    if (strncmp(rest, "api/", 4) != 0 && strcmp(rest, "api") != 0) {
        /* the pages: no credential, nothing but the embedded files */
        if (!get)
            sl__api_respond_method(a, req, id, "GET");
        else if (strstr(rest, ".."))
            send_error(a, req, id, 404, "ResourceNotFoundException", "no such page");
        else
            serve_asset(a, req, id, rest);
        return true;
    }
    rest += 3;
    if (*rest == '/')
        rest++;
    if (split(rest, seg, SEGS_MAX, &nseg) != 0 || nseg == 0) {
        send_error(a, req, id, 404, "ResourceNotFoundException", "no console API at %.200s",
                   path);
        goto done;
    }
    if (strcmp(seg[0], "dlq") == 0 && nseg >= 3 &&
        ((nseg == 3 && strcmp(seg[2], "redrive") == 0 && cmd == EVHTTP_REQ_POST) ||
         (nseg == 4 && strcmp(seg[3], "redrive") == 0 && cmd == EVHTTP_REQ_POST) ||
         (nseg == 3 && cmd == EVHTTP_REQ_DELETE))) {
        if (!allowed(a, req, id, SL_SCOPE_ADMIN, &cred))
            goto done;
        if (cmd == EVHTTP_REQ_DELETE)
            dlq_request(a, req, id, D_DELETE, seg[1], seg[2], cred);
        else
            dlq_request(a, req, id, D_REDRIVE, seg[1], nseg == 4 ? seg[2] : NULL, cred);
        goto done;
    }
    if (!get) {
        sl__api_respond_method(a, req, id, strcmp(seg[0], "dlq") == 0 && nseg == 3
                                               ? "GET, DELETE" : "GET");
        goto done;
    }
    if (!allowed(a, req, id, SL_SCOPE_READ, &cred))
        goto done;
    if (nseg == 1 && strcmp(seg[0], "overview") == 0)
        get_overview(a, req, id, cred);
    else if (nseg == 1 && strcmp(seg[0], "series") == 0)
        get_series(a, req, id, query, cred);
    else if (nseg == 2 && strcmp(seg[0], "sources") == 0)
        get_source(a, req, id, seg[1], cred);
    else if (nseg == 1 && strcmp(seg[0], "dlq") == 0)
        get_sinks(a, req, id);
    else if (nseg == 2 && strcmp(seg[0], "dlq") == 0)
        dlq_request(a, req, id, D_LIST, seg[1], NULL, cred);
    else if (nseg == 3 && strcmp(seg[0], "dlq") == 0)
        dlq_request(a, req, id, D_SHOW, seg[1], seg[2], cred);
    else
        send_error(a, req, id, 404, "ResourceNotFoundException", "no console API at %.200s",
                   path);
done:
    for (size_t i = 0; i < nseg; i++)
        free(seg[i]);
    return true;
}

/* ------------------------------------------------------------------ */

void sl__console_init(struct sl_api *a)
{
    struct timeval tv = { SL_MRING_STEP_MS / 1000, (SL_MRING_STEP_MS % 1000) * 1000 };

    a->console = sl_calloc(1, sizeof(*a->console));
    LIST_INIT(&a->console->jobs);
    a->console->ring = sl_mring_new(rules, sizeof(rules) / sizeof(rules[0]), RING_SERIES_MAX);
    a->console->tick = event_new(a->base, -1, EV_PERSIST, on_tick, a);
    if (a->console->tick)
        event_add(a->console->tick, &tv);
    sl_mring_sample(a->console->ring, a->metrics, sl_wall_ms());
}

void sl__console_free(struct sl_api *a)
{
    struct djob *w;

    if (!a->console)
        return;
    /* jobs still waiting on the dispatcher answer nobody */
    while ((w = LIST_FIRST(&a->console->jobs))) {
        LIST_REMOVE(w, link);
        if (w->evcon)
            evhttp_connection_set_closecb(w->evcon, NULL, NULL);
        w->a = NULL;
        w->req = NULL;
        w->evcon = NULL;
    }
    if (a->console->tick)
        event_free(a->console->tick);
    sl_mring_free(a->console->ring);
    free(a->console);
    a->console = NULL;
}
