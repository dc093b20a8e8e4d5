/* The dispatcher: concurrency limits, metrics, and the asynchronous queue
 * with its retries and destinations.
 *
 * Synchronous invocations go straight to a function pool once the account
 * limit allows. Asynchronous ones are first committed to the durable
 * queue (asyncq.c), then run from it like any other invocation; their
 * outcome decides between delete, retry after backoff, or a destination
 * record written reliably before the event leaves the queue. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <jansson.h>

#include "internal.h"
#include "sluice/backoff.h"
#include "sluice/clock.h"
#include "sluice/dispatch.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/sink.h"

#define SCAN_MS 100              /* how often the queue looks for due events */

struct inflight {                /* a sync or async invocation the dispatcher counts */
    struct sl_dispatcher *d;
    char                  fn[72];  /* the function's name: its settings are looked up when
                                    * the result comes, as a reload may have changed them */
    sl_invoke_cb          cb;    /* sync: the caller's */
    void                 *arg;
    struct sl__aevent    *ev;    /* async: the queued event */
    double                started;
};

/* New environments per function: Lambda's 1,000 every 10 seconds, as a
 * token bucket (burst 1,000, refilled at 100 per second). */
#define SCALE_BURST 1000.0
#define SCALE_RATE  100.0    /* per second */

struct bucket {
    double tokens;
    double at_ms;
};

struct sl_dispatcher {
    struct event_base       *base;
    const struct sl_config  *conf;
    struct sl_functions     *fns;
    struct sl_metrics       *metrics;
    struct sl_pool          *pool;
    struct sl__asyncq       *q;
    struct sl_sink         **sinks;      /* parallel to conf->sinks */
    struct event            *scan;
    size_t                   running;    /* in-flight invocations, all functions */
    size_t                   settling;   /* destination writes not yet confirmed */
    struct bucket           *buckets;    /* scale-up rate, parallel to conf->functions */
    struct sl_sink         **retired;    /* replaced by a reload: freed once idle */
    size_t                   nretired;
    struct event            *retire_timer;
    bool                     draining;
    bool                     abandoned;  /* tearing down: results settle nothing */
    void                   (*drained)(void *);
    void                    *drained_arg;
    struct sl_metric        *m_inv, *m_err, *m_thr, *m_dur, *m_cold, *m_conc, *m_conc_fn, *m_dlq,
                            *m_depth, *m_age;
};

static const struct sl_function_conf *find_fn(const struct sl_dispatcher *d, const char *name)
{
    return sl_config_function(d->conf, name);
}

static struct sl_sink *find_sink(struct sl_dispatcher *d, const char *name)
{
    for (size_t i = 0; name && i < d->conf->nsinks; i++)
        if (strcmp(d->conf->sinks[i].name, name) == 0)
            return d->sinks[i];
    return NULL;
}

struct sl_sink *sl_dispatcher_sink(struct sl_dispatcher *d, const char *name)
{
    return find_sink(d, name);
}

bool sl_dispatcher_has_function(const struct sl_dispatcher *d, const char *fn)
{
    return find_fn(d, fn) != NULL;
}

/* ------------------------------------------------------------------ */
/* Running one invocation under the limits                             */

static void maybe_drained(struct sl_dispatcher *d)
{
    if (d->draining && d->running == 0 && d->settling == 0 && d->drained) {
        void (*cb)(void *) = d->drained;
        d->drained = NULL;
        cb(d->drained_arg);
    }
}

static void count_result(struct sl_dispatcher *d, const char *fn, const struct sl_invoke_result *r)
{
    sl_metric_add(d->m_inv, fn, 1);
    if (!r->ok)
        sl_metric_add(d->m_err, fn, 1);
    sl_metric_observe(d->m_dur, fn, r->duration_ms / 1000.0);
    if (r->cold)
        sl_metric_add(d->m_cold, fn, 1);
    sl_metric_add(d->m_conc, NULL, -1);
    sl_metric_add(d->m_conc_fn, fn, -1);
}

static void on_sync_result(const struct sl_invoke_result *r, void *arg)
{
    struct inflight *in = arg;
    struct sl_dispatcher *d = in->d;

    d->running--;
    count_result(d, in->fn, r);
    in->cb(r, in->arg);
    free(in);
    maybe_drained(d);
}

/* Start `req` on fn's pool with `cb`; 0, or SL_EAGAIN with `t` filled. */
static int start_invoke(struct sl_dispatcher *d, const struct sl_function_conf *fn,
                        const struct sl_invoke_req *req, sl_invoke_cb cb, void *arg,
                        struct sl_throttle *t)
{
    struct sl_fnpool *pool = sl_functions_pool(d->fns, fn->name);
    int rc;

    if (d->draining) {
        t->reason = "ServiceShuttingDown";
        t->retry_after_s = 1;
        return SL_EAGAIN;
    }
    if ((int64_t)d->running >= d->conf->server.concurrency_limit) {
        t->reason = "ConcurrentInvocationLimitExceeded";
        t->retry_after_s = 1;
        sl_metric_add(d->m_thr, fn->name, 1);
        return SL_EAGAIN;
    }
    if (!pool)
        return SL_ENOTFOUND;
    if (sl_fnpool_idle(pool) == 0) {
        /* this invocation may start a new environment: scale-up rate */
        struct bucket *b = &d->buckets[fn - d->conf->functions];
        double now = sl_mono_ms();
        b->tokens += (now - b->at_ms) / 1000.0 * SCALE_RATE;
        if (b->tokens > SCALE_BURST)
            b->tokens = SCALE_BURST;
        b->at_ms = now;
        if (b->tokens < 1.0) {
            t->reason = "FunctionInvocationRateLimitExceeded";
            t->retry_after_s = 1;
            sl_metric_add(d->m_thr, fn->name, 1);
            return SL_EAGAIN;
        }
        b->tokens -= 1.0;
    }
    d->running++;
    sl_metric_add(d->m_conc, NULL, 1);
    sl_metric_add(d->m_conc_fn, fn->name, 1);
    rc = sl_fnpool_invoke(pool, req, cb, arg);
    if (rc == SL_EAGAIN) {
        d->running--;
        sl_metric_add(d->m_conc, NULL, -1);
        sl_metric_add(d->m_conc_fn, fn->name, -1);
        t->reason = "ReservedFunctionConcurrentInvocationLimitExceeded";
        t->retry_after_s = 1;
        sl_metric_add(d->m_thr, fn->name, 1);
    }
    return rc;
}

int sl_dispatcher_invoke(struct sl_dispatcher *d, const char *name, const struct sl_invoke_req *req,
                       sl_invoke_cb cb, void *arg, struct sl_throttle *t)
{
    const struct sl_function_conf *fn = find_fn(d, name);
    struct inflight *in;
    int rc;

    if (!fn)
        return SL_ENOTFOUND;
    in = sl_calloc(1, sizeof(*in));
    in->d = d;
    snprintf(in->fn, sizeof(in->fn), "%s", fn->name);
    in->cb = cb;
    in->arg = arg;
    in->started = sl_mono_ms();
    rc = start_invoke(d, fn, req, on_sync_result, in, t);
    if (rc != 0)
        free(in);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Asynchronous events                                                 */

static void iso8601(int64_t ms, char *buf, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* The runtime's error response as Lambda puts it in responsePayload: the
 * runtime's own document when it sent one (Runtime API), else errorMessage,
 * errorType, stackTrace (a list of strings, empty when the runtime gave
 * none) and the invocation's requestId. */
static json_t *error_payload(const struct sl_invoke_result *r)
{
    json_t *stack, *v;
    size_t i;

    if (r->error_doc)
        return json_deep_copy(r->error_doc);
    stack = json_array();
    json_array_foreach(r->stack, i, v)
        if (json_is_string(v))
            json_array_append(stack, v);
    return json_pack("{s:s, s:s, s:o, s:s}", "errorMessage",
                     r->error_message ? r->error_message : "", "errorType",
                     r->error_type ? r->error_type : "", "stackTrace", stack, "requestId",
                     r->request_id ? r->request_id : "");
}

/* Lambda's destination record (docs: asynchronous invocation). */
static char *destination_record(const struct sl_function_conf *fn, const struct sl__aevent *ev,
                                const char *condition, const struct sl_invoke_result *r)
{
    json_t *rec, *payload, *resp = NULL;
    char ts[96], arn[200], *out;

    iso8601(sl_wall_ms(), ts, sizeof(ts));
    snprintf(arn, sizeof(arn), "%s:$LATEST", fn->arn);
    payload = json_loadb(ev->payload, ev->len, JSON_DECODE_ANY, NULL);
    if (!payload)
        payload = json_stringn_nocheck(ev->payload, ev->len);
    if (r && r->ok)
        resp = json_loadb(r->payload, r->payload_len, JSON_DECODE_ANY, NULL);
    else if (r)
        resp = error_payload(r);
    rec = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:I}, s:o, s:{s:i, s:s}, s:o}",
                    "version", "1.0", "timestamp", ts,
                    "requestContext", "requestId", ev->id, "functionArn", arn,
                    "condition", condition, "approximateInvokeCount", (json_int_t)ev->attempts,
                    "requestPayload", payload,
                    "responseContext", "statusCode", 200, "executedVersion", "$LATEST",
                    "responsePayload", resp ? resp : json_null());
    if (!rec)
        return NULL;
    if (r && !r->ok)
        json_object_set_new(json_object_get(rec, "responseContext"), "functionError",
                            json_string("Unhandled"));
    out = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    return out;
}

static void schedule_scan(struct sl_dispatcher *d, double ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)fmod(ms, 1000) * 1000 };
    evtimer_add(d->scan, &tv);
}

/* The event left the queue for good (committed delete). */
static void on_deleted(void *arg, int rc)
{
    struct sl__aevent *ev = arg;

    if (rc != 0)
        SL_ERROR("dispatch:async", "cannot delete event %s from the queue; it will run again "
                 "after a restart", ev->id);
    sl__asyncq_forget(ev);
}

struct dest_write {
    struct sl_dispatcher *d;
    struct sl__aevent    *ev;
    char                 *record;
    bool                  dlq;
};

static void on_destination_written(void *arg, int rc, const struct sl_err *err)
{
    struct dest_write *w = arg;

    (void)err;
    if (rc == 0) {
        if (w->dlq)
            sl_metric_add(w->d->m_dlq, w->ev->function, 1);
        sl__asyncq_delete(w->d->q, w->ev, on_deleted, w->ev);
    } else {
        /* the sink is going away with sluice: the event stays queued */
        SL_WARN("dispatch:async", "event %s kept in the queue: destination not written",
                w->ev->id);
        sl__asyncq_release(w->ev);
    }
    free(w->record);
    w->d->settling--;
    maybe_drained(w->d);
    free(w);
}

/* Final outcome of an event: record to `sink_name` if any, then delete. */
static void settle(struct sl_dispatcher *d, struct sl__aevent *ev, const char *sink_name,
                   const char *condition, const struct sl_invoke_result *r, bool dlq)
{
    const struct sl_function_conf *fn = find_fn(d, ev->function);
    struct sl_sink *sink = find_sink(d, sink_name);
    struct dest_write *w;

    if (!sink || !fn) {
        if (dlq)
            SL_WARN("dispatch:async", "event %s for %s dropped after %d attempts (%s); "
                    "no on_failure destination", ev->id, ev->function, ev->attempts, condition);
        sl__asyncq_delete(d->q, ev, on_deleted, ev);
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->d = d;
    w->ev = ev;
    w->dlq = dlq;
    w->record = destination_record(fn, ev, condition, r);
    if (!w->record) {
        SL_ERROR("dispatch:async", "cannot build the destination record of %s", ev->id);
        free(w);
        sl__asyncq_release(ev);
        return;
    }
    d->settling++;
    sl_sink_write_reliable(sink, w->record, strlen(w->record), on_destination_written, w);
}

/* Attempt n (from 1) waits up to backoff_initial_ms * 2^(n-1). */
static int64_t backoff_ms(const struct sl_async_conf *a, int attempts)
{
    return (int64_t)sl_backoff_ms(attempts > 1 ? (unsigned)attempts - 1 : 0,
                                  (uint64_t)a->backoff_initial_ms, (uint64_t)a->backoff_max_ms);
}

static void on_async_result(const struct sl_invoke_result *r, void *arg)
{
    struct inflight *in = arg;
    struct sl_dispatcher *d = in->d;
    struct sl__aevent *ev = in->ev;
    const struct sl_function_conf *fn = find_fn(d, in->fn);
    const struct sl_async_conf *a;
    int64_t now = sl_wall_ms();

    d->running--;
    count_result(d, in->fn, r);
    free(in);
    if (d->abandoned) {
        sl__asyncq_release(ev);
        return;
    }
    if (!fn) {
        /* removed by a reload while it ran: as on_scan does, kept */
        SL_WARN("dispatch:async", "event %s: function %s is no longer configured; kept in "
                "the queue", ev->id, ev->function);
        ev->next_ms = now + 60000;
        sl__asyncq_release(ev);
        maybe_drained(d);
        return;
    }
    a = &fn->async;
    if (r->ok) {
        settle(d, ev, a->on_success, "Success", r, false);
    } else if (ev->attempts > a->maximum_retry_attempts) {
        settle(d, ev, a->on_failure, "RetriesExhausted", r, true);
    } else if (now - ev->enqueued_ms >= a->maximum_event_age_ms) {
        settle(d, ev, a->on_failure, "EventAgeExceeded", r, true);
    } else {
        ev->next_ms = now + backoff_ms(a, ev->attempts);
        snprintf(ev->last_error, sizeof(ev->last_error), "%s: %s",
                 r->error_type ? r->error_type : "", r->error_message ? r->error_message : "");
        SL_DEBUG(SL_DBG_DISPATCH, "dispatch:async", "event %s attempt %d failed (%s); retry in "
                 "%lld ms", ev->id, ev->attempts, ev->last_error, (long long)(ev->next_ms - now));
        sl__asyncq_update(d->q, ev);
        sl__asyncq_release(ev);
        schedule_scan(d, (double)(ev->next_ms - now));
    }
    maybe_drained(d);
}

/* Run every due event the limits allow. */
static void on_scan(evutil_socket_t fd, short what, void *arg)
{
    struct sl_dispatcher *d = arg;
    struct sl__aevent *ev;
    int64_t now = sl_wall_ms(), next = INT64_MAX;

    (void)fd, (void)what;
    if (d->draining)
        return;
    while ((ev = sl__asyncq_next_due(d->q, now, &next))) {
        const struct sl_function_conf *fn = find_fn(d, ev->function);
        struct sl_invoke_req req = { 0 };
        struct sl_throttle t;
        struct inflight *in;
        int rc;

        if (!fn) {
            SL_WARN("dispatch:async", "event %s names function %s, which is no longer "
                    "configured; kept in the queue", ev->id, ev->function);
            ev->next_ms = now + 60000;
            sl__asyncq_release(ev);
            continue;
        }
        if (now - ev->enqueued_ms >= fn->async.maximum_event_age_ms) {
            settle(d, ev, fn->async.on_failure, "EventAgeExceeded", NULL, true);
            continue;
        }
        if (fn->reserved_concurrency == 0) {
            /* Lambda: straight to the destination, without retries */
            settle(d, ev, fn->async.on_failure, "RetriesExhausted", NULL, true);
            continue;
        }
        in = sl_calloc(1, sizeof(*in));
        in->d = d;
        snprintf(in->fn, sizeof(in->fn), "%s", fn->name);
        in->ev = ev;
        req.event = ev->payload;
        req.event_len = ev->len;
        req.request_id = ev->id;
        ev->attempts++;
        rc = start_invoke(d, fn, &req, on_async_result, in, &t);
        if (rc != 0) {
            /* throttled: wait and retry without using an attempt */
            ev->attempts--;
            ev->throttles++;
            ev->next_ms = now + backoff_ms(&fn->async, ev->throttles > 8 ? 8 : ev->throttles);
            sl__asyncq_release(ev);
            free(in);
            if (ev->next_ms < next)
                next = ev->next_ms;
            continue;
        }
    }
    schedule_scan(d, next == INT64_MAX ? SCAN_MS * 10 : (double)(next - now > SCAN_MS
                                                                     ? next - now : SCAN_MS));
}

struct accept_ctx {
    struct sl_dispatcher *d;
    sl_accept_fn          done;
    void                 *arg;
};

static void on_stored(void *arg, int rc, const char *id)
{
    struct accept_ctx *a = arg;

    a->done(a->arg, rc, id);
    if (rc == 0)
        schedule_scan(a->d, 0);
    free(a);
}

int sl_dispatcher_enqueue(struct sl_dispatcher *d, const char *fn, const char *payload, size_t len,
                        sl_accept_fn done, void *arg)
{
    struct accept_ctx *a;

    if (!find_fn(d, fn))
        return SL_ENOTFOUND;
    if (d->draining)
        return SL_ESTOPPED;
    a = sl_calloc(1, sizeof(*a));
    a->d = d;
    a->done = done;
    a->arg = arg;
    sl__asyncq_put(d->q, fn, payload, len, sl_wall_ms(), on_stored, a);
    return 0;
}

static void collect(void *arg, struct sl_metrics *m)
{
    struct sl_dispatcher *d = arg;
    int64_t oldest = sl__asyncq_oldest_ms(d->q);

    (void)m;
    sl_metric_set(d->m_depth, NULL, (double)sl__asyncq_depth(d->q));
    sl_metric_set(d->m_age, NULL, oldest > 0 ? (double)(sl_wall_ms() - oldest) / 1000.0 : 0);
}

/* Events joined the queue from elsewhere (a shared queue): look now. */
static void on_queue_ready(void *arg)
{
    struct sl_dispatcher *d = arg;

    if (d->scan && !d->draining)
        schedule_scan(d, 0);
}

/* ------------------------------------------------------------------ */

int sl_dispatcher_new(struct event_base *base, const struct sl_config *conf,
                      struct sl_functions *fns, struct sl_metrics *metrics, struct sl_pool *pool,
                      struct sl_dispatcher **out, struct sl_err *err)
{
    struct sl_dispatcher *d = sl_calloc(1, sizeof(*d));
    int rc;

    d->base = base;
    d->conf = conf;
    d->fns = fns;
    d->metrics = metrics;
    d->pool = pool;
    d->m_inv = sl_metrics_family(metrics, "sluice_invocations_total", SL_METRIC_COUNTER,
                                 "Invocations that ran, by function.", "function");
    d->m_err = sl_metrics_family(metrics, "sluice_invocation_errors_total", SL_METRIC_COUNTER,
                                 "Invocations that ended in an error, by function.", "function");
    d->m_thr = sl_metrics_family(metrics, "sluice_throttles_total", SL_METRIC_COUNTER,
                                 "Invocations refused by a concurrency limit.", "function");
    d->m_dur = sl_metrics_family(metrics, "sluice_invocation_duration_seconds",
                                 SL_METRIC_HISTOGRAM, "Invoke phase duration.", "function");
    d->m_conc = sl_metrics_family(metrics, "sluice_concurrent_executions", SL_METRIC_GAUGE,
                                  "Invocations running now, all functions.", NULL);
    d->m_conc_fn = sl_metrics_family(metrics, "sluice_function_concurrent_executions",
                                     SL_METRIC_GAUGE, "Invocations running now.", "function");
    d->m_cold = sl_metrics_family(metrics, "sluice_cold_starts_total", SL_METRIC_COUNTER,
                                  "Invocations that waited for an environment's init (cold "
                                  "starts; SnapStart restores included).", "function");
    d->m_dlq = sl_metrics_family(metrics, "sluice_dlq_writes_total", SL_METRIC_COUNTER,
                                 "Records written to an on_failure destination.", "function");
    d->m_depth = sl_metrics_family(metrics, "sluice_async_queue_depth", SL_METRIC_GAUGE,
                                   "Asynchronous events waiting or running.", NULL);
    d->m_age = sl_metrics_family(metrics, "sluice_async_oldest_event_age_seconds",
                                 SL_METRIC_GAUGE, "Age of the oldest queued event.", NULL);
    sl_metrics_on_collect(metrics, collect, d);

    d->buckets = sl_calloc(conf->nfunctions ? conf->nfunctions : 1, sizeof(*d->buckets));
    for (size_t i = 0; i < conf->nfunctions; i++) {
        d->buckets[i].tokens = SCALE_BURST;
        d->buckets[i].at_ms = sl_mono_ms();
    }
    d->sinks = sl_calloc(conf->nsinks ? conf->nsinks : 1, sizeof(*d->sinks));
    for (size_t i = 0; i < conf->nsinks; i++) {
        rc = sl_sink_new(base, pool, &conf->sinks[i], &d->sinks[i], err);
        if (rc != 0)
            goto fail;
    }
    rc = sl__asyncq_open(base, pool, &conf->server, on_queue_ready, d, &d->q, err);
    if (rc != 0)
        goto fail;
    d->scan = evtimer_new(base, on_scan, d);
    schedule_scan(d, 0);
    *out = d;
    return 0;

fail:
    sl_dispatcher_free(d);
    return rc;
}

void sl_dispatcher_drain(struct sl_dispatcher *d, void (*done)(void *arg), void *arg)
{
    d->draining = true;
    d->drained = done;
    d->drained_arg = arg;
    if (d->scan)
        event_del(d->scan);
    maybe_drained(d);
}

void sl_dispatcher_abandon(struct sl_dispatcher *d)
{
    if (d)
        d->abandoned = true;
}

void sl_dispatcher_free(struct sl_dispatcher *d)
{
    if (!d)
        return;
    if (d->scan)
        event_free(d->scan);
    /* sinks first: pending destination writes report SL_ESTOPPED and
     * leave their events in the queue, which is closed after */
    for (size_t i = 0; d->sinks && i < d->conf->nsinks; i++)
        sl_sink_free(d->sinks[i]);
    free(d->sinks);
    for (size_t i = 0; i < d->nretired; i++)
        sl_sink_free(d->retired[i]);
    free(d->retired);
    if (d->retire_timer)
        event_free(d->retire_timer);
    free(d->buckets);
    sl__asyncq_close(d->q);
    free(d);
}

/* ------------------------------------------------------------------ */
/* Live reload                                                         */

struct sl_dispatcher_stage {
    const struct sl_config *conf;
    struct sl_sink        **sinks;      /* parallel to conf->sinks */
    bool                   *kept;       /* sinks[i] is a running sink */
};

static void stage_free(struct sl_dispatcher_stage *st, bool free_new)
{
    if (!st)
        return;
    for (size_t i = 0; free_new && i < st->conf->nsinks; i++)
        if (!st->kept[i])
            sl_sink_free(st->sinks[i]);
    free(st->sinks);
    free(st->kept);
    free(st);
}

int sl_dispatcher_prepare(struct sl_dispatcher *d, const struct sl_config *conf,
                          bool (*keep)(void *arg, const char *name), void *arg,
                          struct sl_dispatcher_stage **out, struct sl_err *err)
{
    struct sl_dispatcher_stage *st = sl_calloc(1, sizeof(*st));
    size_t n = conf->nsinks ? conf->nsinks : 1;

    st->conf = conf;
    st->sinks = sl_calloc(n, sizeof(*st->sinks));
    st->kept = sl_calloc(n, sizeof(*st->kept));
    for (size_t i = 0; i < conf->nsinks; i++) {
        struct sl_sink *old = find_sink(d, conf->sinks[i].name);
        int rc;

        if (old && keep(arg, conf->sinks[i].name)) {
            st->sinks[i] = old;
            st->kept[i] = true;
            continue;
        }
        rc = sl_sink_new(d->base, d->pool, &conf->sinks[i], &st->sinks[i], err);
        if (rc != 0) {
            stage_free(st, true);
            return rc;
        }
    }
    *out = st;
    return 0;
}

static void on_retire_check(evutil_socket_t fd, short what, void *arg)
{
    struct sl_dispatcher *d = arg;
    size_t k = 0;

    (void)fd, (void)what;
    for (size_t i = 0; i < d->nretired; i++) {
        struct sl_sink *s = d->retired[i];
        if (!sl_sink_idle(s)) {
            d->retired[k++] = s;
            continue;
        }
        SL_INFO(s->inst, "replaced: its last write is confirmed; closed");
        sl_sink_free(s);
    }
    d->nretired = k;
    if (k == 0)
        event_del(d->retire_timer);
}

void sl_dispatcher_commit(struct sl_dispatcher *d, struct sl_dispatcher_stage *st)
{
    const struct sl_config *conf = st->conf;
    struct bucket *buckets = sl_calloc(conf->nfunctions ? conf->nfunctions : 1,
                                       sizeof(*buckets));

    /* a sink not kept keeps the writes it has until they are confirmed:
     * new writes go to the sink of that name in `conf` */
    for (size_t i = 0; i < d->conf->nsinks; i++) {
        bool kept = false;
        for (size_t j = 0; j < conf->nsinks; j++)
            kept |= st->kept[j] && st->sinks[j] == d->sinks[i];
        if (kept)
            continue;
        d->retired = sl_realloc(d->retired, (d->nretired + 1) * sizeof(*d->retired));
        d->retired[d->nretired++] = d->sinks[i];
    }
    /* scale-up buckets follow the functions by name */
    for (size_t i = 0; i < conf->nfunctions; i++) {
        const struct sl_function_conf *old = find_fn(d, conf->functions[i].name);
        if (old) {
            buckets[i] = d->buckets[old - d->conf->functions];
        } else {
            buckets[i].tokens = SCALE_BURST;
            buckets[i].at_ms = sl_mono_ms();
        }
    }
    free(d->buckets);
    d->buckets = buckets;
    free(d->sinks);
    d->sinks = st->sinks;
    d->conf = conf;
    st->sinks = NULL;
    stage_free(st, false);
    if (d->nretired > 0) {
        struct timeval tv = { 0, 100000 };
        if (!d->retire_timer)
            d->retire_timer = event_new(d->base, -1, EV_PERSIST, on_retire_check, d);
        event_add(d->retire_timer, &tv);
        on_retire_check(-1, 0, d);
    }
    if (d->scan && !d->draining)
        schedule_scan(d, 0);
}

void sl_dispatcher_abort(struct sl_dispatcher_stage *st)
{
    stage_free(st, true);
}

bool sl_dispatcher_uses(const struct sl_dispatcher *d, const struct sl_config *conf)
{
    const struct sl_sink_conf *lo = conf->sinks, *hi = conf->sinks + conf->nsinks;

    if (d->conf == conf)
        return true;
    for (size_t i = 0; i < d->conf->nsinks; i++)
        if (d->sinks[i]->conf >= lo && d->sinks[i]->conf < hi)
            return true;
    for (size_t i = 0; i < d->nretired; i++)
        if (d->retired[i]->conf >= lo && d->retired[i]->conf < hi)
            return true;
    return false;
}
