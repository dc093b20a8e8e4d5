/* The outcome engine: batching per lane and Lambda's delivery contract
 * for streams and queues, shared by every poller.
 *
 * A lane runs one batch at a time. A batch's outcome is final only when
 * it succeeded, or when its records were dead-lettered and the sink
 * confirmed the write; only then are they checkpointed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sluice/backoff.h"
#include "sluice/invoke.h"
#include "sluice/log.h"
#include "sluice/clock.h"
#include "sluice/env.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/poller.h"

#define HIGH_WATER   (64u * 1024 * 1024)   /* pause a source above this many pending bytes */
#define LOW_WATER    (32u * 1024 * 1024)   /* and resume below this */
#define RETRY_BASE_MS 200                  /* batch retries: 200 ms doubling to 60 s */
#define RETRY_CAP_MS  60000
#define KAFKA_RETRY_CAP 10                 /* -1 retries with on_failure, types with SL_CONF_RETRY_CAP */

struct batch {
    struct sl__lane  *lane;
    struct sl_record **r;
    size_t            n;
    int               attempts;          /* invocations that ended in a function error */
    int               retries;           /* of those, the ones maximum_retry_attempts counts:
                                            a failure that splits the batch is not one */
    int               throttles;
    int64_t           first_ms, last_ms;  /* attempts, Unix ms */
    char              etype[128];
    char              emsg[512];
    /* the last invocation, for the on-failure record's responseContext */
    int               status;            /* its HTTP status; 0: the function never ran */
    bool              unhandled;         /* it ended in a function error */
    char              request_id[40];
    char             *event;             /* the last invocation's event, of records r[0..n):
                                            borrowed by the pool while in flight, then kept
                                            as the on-failure record's payload */
    size_t            event_len;
    struct event     *timer;             /* retry after backoff */
    struct batch     *after;             /* bisect: the next half waiting (a stack) */
    bool              dlq;               /* its on_failure write is in flight */
};

/* A sl_source_drop_lanes() call waiting for lanes with work in flight. */
struct sl__drop {
    size_t   lanes;                      /* still busy */
    void   (*done)(void *arg);
    void    *arg;
};

struct sl__lane {
    struct sl_source *s;
    char              key[96];
    struct sl_record *head, *tail;       /* waiting, in arrival order */
    size_t            n, bytes;
    struct batch     *cur;               /* running, or waiting to retry */
    struct batch     *rest;              /* bisect: halves waiting, next first */
    struct event     *window;
    struct sl__drop  *drop;              /* being dropped: finish in-flight work, then go */
    struct sl__lane  *next;
};

struct sl_engine {
    struct event_base      *base;
    const struct sl_config *conf;
    struct sl_dispatcher   *d;
    struct sl_metrics      *metrics;
    struct sl_source      **sources;
    size_t                  nsources;
    size_t                  inflight;     /* invocations and dead-letter writes */
    struct dlq_write       *writes;       /* dead-letter writes in flight */
    size_t                  fetching;     /* sources that have not reported stopped */
    bool                    draining;
    void                  (*drained)(void *arg);
    void                   *drained_arg;
    struct sl_metric       *m_records, *m_batches, *m_pending;
    sl_engine_maker         make;         /* a poller for a source enabled later */
};

static void lane_kick(struct sl__lane *l);
static void batch_run(struct batch *b);
static bool lane_drop_end(struct sl__lane *l);
static void drop_result(struct batch *b, const struct sl_invoke_result *res);

/* A graceful stop is over once no source fetches and nothing is in flight. */
static void drain_check(struct sl_engine *e)
{
    void (*done)(void *);

    if (!e->draining || e->fetching > 0 || e->inflight > 0 || !e->drained)
        return;
    done = e->drained;
    e->drained = NULL;
    done(e->drained_arg);
}

/* A source being retired (sl_source_stop) is over once its poller stopped
 * fetching and none of its work is in flight: say so from the loop, so
 * that the callback may free the source. */
static void source_drain_check(struct sl_source *s)
{
    if (s->retiring && s->fetch_stopped && s->inflight == 0 && s->retired_ev &&
        !evtimer_pending(s->retired_ev, NULL)) {
        struct timeval now = { 0, 0 };
        evtimer_add(s->retired_ev, &now);
    }
}

static void inflight_begin(struct sl_source *s)
{
    s->engine->inflight++;
    s->inflight++;
}

/* Without the drain checks: on_result runs them after its outcome. */
static void inflight_drop(struct sl_source *s)
{
    s->engine->inflight--;
    s->inflight--;
}

static void inflight_end(struct sl_source *s)
{
    struct sl_engine *e = s->engine;

    inflight_drop(s);
    source_drain_check(s);
    drain_check(e);
}

char *sl_records_event(struct sl_record *const *r, size_t n, size_t *len)
{
    size_t cap = 16, o;
    char *e;

    for (size_t i = 0; i < n; i++)
        cap += r[i]->len + 1;
    e = sl_malloc(cap);
    memcpy(e, "{\"Records\":[", 12);
    o = 12;
    for (size_t i = 0; i < n; i++) {
        if (i)
            e[o++] = ',';
        memcpy(e + o, r[i]->json, r[i]->len);
        o += r[i]->len;
    }
    memcpy(e + o, "]}", 3);
    *len = o + 2;
    return e;
}

/* Retry n (from 1) of a batch waits up to 200 ms * 2^(n-1), at most a minute. */
static int64_t retry_backoff_ms(int attempt)
{
    return (int64_t)sl_backoff_ms(attempt > 1 ? (unsigned)attempt - 1 : 0, RETRY_BASE_MS,
                                  RETRY_CAP_MS);
}

void sl_iso8601(int64_t ms, char *buf, size_t n)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&sec, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + strlen(buf), n - strlen(buf), ".%03dZ", (int)(ms % 1000));
}

/* ------------------------------------------------------------------ */
/* Records leaving the engine                                          */

static void account(struct sl_source *s, struct sl_record *const *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s->pending_bytes -= r[i]->len;
    if (s->paused && s->pending_bytes < LOW_WATER) {
        s->paused = false;
        if (s->ops->resume && !s->disabled)
            s->ops->resume(s);
    }
}

static void release_records(struct sl_source *s, struct sl_record **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s->ops->free_record(s, r[i]);
}

/* Final: tell the poller, then let go of the records. */
static void checkpoint(struct sl_source *s, struct sl_record **r, size_t n)
{
    if (n == 0)
        return;
    account(s, r, n);
    s->ops->checkpoint(s, r, n);
    release_records(s, r, n);
}

/* Queues: back to the queue for another receive. */
static void requeue(struct sl_source *s, struct sl_record **r, size_t n, int64_t delay)
{
    if (n == 0)
        return;
    account(s, r, n);
    s->ops->release(s, r, n, delay);
    release_records(s, r, n);
}

static void batch_free(struct batch *b)
{
    free(b->event);
    if (b->timer)
        event_free(b->timer);
    free(b->r);
    free(b);
}

/* The lane's current batch is over (its records are gone); next. */
static void lane_next(struct sl__lane *l)
{
    l->cur = NULL;
    if (l->rest) {
        l->cur = l->rest;
        l->rest = l->cur->after;
        l->cur->after = NULL;
        batch_run(l->cur);
        return;
    }
    lane_kick(l);
}

/* ------------------------------------------------------------------ */
/* Dead letters                                                        */

struct dlq_write {
    struct sl_source *s;       /* NULL: orphaned by sl_engine_free, only freed on reply */
    struct batch     *b;       /* NULL for a redriven queue record */
    struct sl_record *one;
    char             *envelope;
    struct dlq_write *prev, *next;  /* the engine's writes in flight */
};

/* The head of Lambda's on-failure record for an event source mapping:
 * requestContext, responseContext (null when the function never ran),
 * version and timestamp, plus sluice's "source". */
static json_t *failure_head(struct sl_source *s, const char *lane, const char *condition,
                            int invokes, const char *request_id, int status, bool unhandled)
{
    char now[40], uuid[37];
    json_t *resp = json_null();

    if (!request_id || !*request_id) {
        sl_uuid(uuid);
        request_id = uuid;
    }
    if (status) {
        resp = json_pack("{s:i, s:s}", "statusCode", status, "executedVersion", "$LATEST");
        if (unhandled)
            json_object_set_new(resp, "functionError", json_string("Unhandled"));
    }
    sl_iso8601(sl_wall_ms(), now, sizeof(now));
    return json_pack("{s:{s:s, s:s?, s:s, s:i}, s:o, s:s, s:s, s:{s:s, s:s, s:s}}",
                     "requestContext", "requestId", request_id, "functionArn", s->fn->arn,
                     "condition", condition, "approximateInvokeCount", invokes,
                     "responseContext", resp, "version", "1.0", "timestamp", now,
                     "source", "name", s->conf->name, "type", sl_conf_type_name(s->conf->type),
                     "lane", lane);
}

/* A batch's on-failure record: Lambda's fields, the type's batch info
 * (ops->batch_info), and sluice's extras: the event the function got
 * ("payload", as Lambda's Kafka and S3 destinations carry it), the last
 * error, the first and last attempt. `event` is the batch's event or NULL
 * (built here). */
static char *envelope(struct sl_source *s, struct batch *b, const char *condition)
{
    struct sl_record **r = b->r;
    size_t n = b->n, len = 0;
    char f[40], l[40], *ev = b->event, *out;
    json_t *rec, *payload = NULL;

    if (ev)
        len = b->event_len;
    else
        ev = s->ops->event(s, r, n, &len);
    if (ev)
        payload = json_loadb(ev, len, 0, NULL);
    if (!payload) {
        /* no event: the records as they are, so nothing is lost */
        payload = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *body = json_loadb(r[i]->json, r[i]->len, JSON_DECODE_ANY, NULL);
            json_array_append_new(payload, body ? body : json_stringn(r[i]->json, r[i]->len));
        }
    }
    if (ev != b->event)
        free(ev);
    rec = failure_head(s, b->lane->key, condition, b->attempts, b->request_id, b->status,
                       b->unhandled);
    if (!rec) {
        json_decref(payload);
        return NULL;
    }
    if (s->ops->batch_info && n)
        s->ops->batch_info(s, b->lane->key, r, n, len, rec);
    sl_iso8601(b->first_ms, f, sizeof(f));
    sl_iso8601(b->last_ms, l, sizeof(l));
    json_object_set_new(rec, "error", json_pack("{s:s, s:s}", "type", b->etype,
                                                "message", b->emsg));
    json_object_set_new(rec, "firstAttempt", json_string(f));
    json_object_set_new(rec, "lastAttempt", json_string(l));
    json_object_set_new(rec, "payload", payload);
    out = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    return out;
}

static void on_dlq_written(void *arg, int rc, const struct sl_err *err)
{
    struct dlq_write *w = arg;
    struct sl_source *s = w->s;
    struct sl_engine *e;

    (void)err;
    if (!s) {
        /* the engine went first (a hard stop); its records are long released */
        free(w->envelope);
        free(w);
        return;
    }
    e = s->engine;
    if (w->prev)
        w->prev->next = w->next;
    else
        e->writes = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (rc == 0) {
        if (w->b) {
            s->dead_lettered += w->b->n;
            checkpoint(s, w->b->r, w->b->n);
            {
                struct sl__lane *l = w->b->lane;
                batch_free(w->b);
                if (!lane_drop_end(l))
                    lane_next(l);
            }
        } else {
            s->dead_lettered++;
            checkpoint(s, &w->one, 1);
        }
    } else if (w->b) {
        /* sluice is stopping: nothing is checkpointed, the source delivers again */
        struct sl__lane *l = w->b->lane;
        account(s, w->b->r, w->b->n);
        release_records(s, w->b->r, w->b->n);
        l->cur = NULL;
        batch_free(w->b);
        lane_drop_end(l);
    } else {
        account(s, &w->one, 1);
        release_records(s, &w->one, 1);
    }
    free(w->envelope);
    free(w);
    (void)e;
    inflight_end(s);
}

/* Send to on_failure (if any), then checkpoint. `b` a batch, or NULL and
 * `one` a queue message received more than max_receive_count times. */
static void dead_letter(struct sl_source *s, struct batch *b, struct sl_record *one,
                        const char *condition)
{
    struct sl_sink *sink = s->conf->on_failure ? sl_dispatcher_sink(s->engine->d, s->conf->on_failure)
                                               : NULL;
    struct sl_record **r = b ? b->r : &one;
    size_t n = b ? b->n : 1;
    struct dlq_write *w;

    SL_WARN(s->inst, "%zu record(s) from %s to %s: %s after %d attempt(s)%s%s", n, r[0]->id,
            r[n - 1]->id, condition, b ? b->attempts : one->receive_count,
            sink ? "; writing to " : "; no on_failure destination, skipping them",
            sink ? s->conf->on_failure : "");
    w = sl_calloc(1, sizeof(*w));
    w->s = s;
    w->b = b;
    w->one = one;
    if (b)
        b->dlq = true;
    inflight_begin(s);
    w->next = s->engine->writes;
    if (w->next)
        w->next->prev = w;
    s->engine->writes = w;
    if (!sink) {
        on_dlq_written(w, 0, NULL);
        return;
    }
    /* a queue message goes as it is, as SQS moves the original message to
     * its dead-letter queue; a batch as Lambda's on-failure record */
    w->envelope = b ? envelope(s, b, condition) : sl_strndup(one->json, one->len);
    if (!w->envelope) {
        SL_ERROR(s->inst, "cannot encode the dead-letter envelope; records kept");
        on_dlq_written(w, SL_EINTERNAL, NULL);
        return;
    }
    sl_sink_write_reliable(sink, w->envelope, strlen(w->envelope), on_dlq_written, w);
}

/* ------------------------------------------------------------------ */
/* Running batches                                                     */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    batch_run(arg);
}

static void retry_later(struct batch *b, int64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

    if (!b->timer)
        b->timer = evtimer_new(b->lane->s->engine->base, on_retry, b);
    evtimer_add(b->timer, &tv);
}

static struct batch *batch_new(struct sl__lane *l, struct sl_record **r, size_t n)
{
    struct batch *b = sl_calloc(1, sizeof(*b));

    b->lane = l;
    b->r = sl_malloc((n ? n : 1) * sizeof(*b->r));
    memcpy(b->r, r, n * sizeof(*r));
    b->n = n;
    return b;
}

/* Does `idv`, one batchItemFailures entry's itemIdentifier, name record
 * `r` exactly? A string (or an integer) equal to the record's id, or, for
 * records with a partition (Kafka), Lambda's composite identifier
 * {"partition":"<topic>-<partition>","offset":N}, as Powertools'
 * BatchProcessor(EventType.Kafka) returns it. Nothing looser: an
 * identifier that only ends in a record's id names nothing. */
static bool names_record(json_t *idv, const struct sl_record *r)
{
    char buf[32];

    if (json_is_string(idv))
        return strcmp(json_string_value(idv), r->id) == 0;
    if (json_is_integer(idv)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(idv));
        return strcmp(buf, r->id) == 0;
    }
    if (json_is_object(idv) && r->partition) {
        json_t *pv = json_object_get(idv, "partition"), *ov = json_object_get(idv, "offset");
        if (!json_is_string(pv) || strcmp(json_string_value(pv), r->partition) != 0)
            return false;
        if (json_is_integer(ov)) {
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(ov));
            return strcmp(buf, r->id) == 0;
        }
        return json_is_string(ov) && strcmp(json_string_value(ov), r->id) == 0;
    }
    return false;
}

/* Parse {"batchItemFailures":[{"itemIdentifier":...}]}. Returns the number
 * of failed items marked in `failed`, 0 for a plain success, -1 when the
 * whole batch fails, as in Lambda, with the reason in *why: the response
 * is not JSON, or batchItemFailures is malformed or names a record that is
 * not in the batch. An empty response is a success (a handler that returns
 * nothing), as is valid JSON without batchItemFailures. */
static int item_failures(const struct batch *b, const char *payload, size_t len, char *failed,
                         const char **why)
{
    json_t *j, *arr, *it;
    size_t i, k;
    int n = 0;

    for (k = 0; k < len && payload[k] && strchr(" \t\r\n", payload[k]); k++)
        ;
    if (k == len)
        return 0;
    if (!(j = json_loadb(payload, len, JSON_DECODE_ANY, NULL))) {
        *why = "the response is not valid JSON";
        return -1;
    }
    if (!json_is_object(j) || !(arr = json_object_get(j, "batchItemFailures")) ||
        json_is_null(arr)) {
        json_decref(j);
        return 0;
    }
    *why = "batchItemFailures names records not in the batch, or is malformed";
    if (!json_is_array(arr)) {
        json_decref(j);
        return -1;
    }
    json_array_foreach(arr, i, it) {
        json_t *idv = json_object_get(it, "itemIdentifier");
        int found = 0;

        if (!idv || (json_is_string(idv) && !*json_string_value(idv))) {
            json_decref(j);
            return -1;
        }
        for (k = 0; k < b->n; k++) {
            if (names_record(idv, b->r[k])) {
                if (!failed[k])
                    n++;
                failed[k] = 1;
                found = 1;
            }
        }
        if (!found) {
            json_decref(j);
            return -1; /* an identifier that is not in the batch */
        }
    }
    json_decref(j);
    return n;
}

/* Queues: a batchItemFailures entry may carry "visibilityTimeoutSeconds"
 * (0..43200), the delay before that message is received again (SQS's
 * ChangeMessageVisibility, chosen by the handler). delay[k] is in ms, or
 * -1 for the source's visibility timeout. */
static void item_delays(const struct batch *b, const char *payload, size_t len, int64_t *delay)
{
    json_t *j = json_loadb(payload, len, JSON_DECODE_ANY, NULL), *arr, *it;
    size_t i;

    for (size_t k = 0; k < b->n; k++)
        delay[k] = -1;
    arr = json_is_object(j) ? json_object_get(j, "batchItemFailures") : NULL;
    json_array_foreach(arr, i, it) {
        json_t *v = json_object_get(it, "visibilityTimeoutSeconds");
        const char *id = json_string_value(json_object_get(it, "itemIdentifier"));

        if (!id || !json_is_number(v) || json_number_value(v) < 0 ||
            json_number_value(v) > 43200)
            continue;
        for (size_t k = 0; k < b->n; k++)
            if (strcmp(b->r[k]->id, id) == 0)
                delay[k] = (int64_t)(json_number_value(v) * 1000);
    }
    json_decref(j);
}

static void batch_failed(struct batch *b);

static void on_outcome(struct batch *b, const struct sl_invoke_result *res);

static void on_result(const struct sl_invoke_result *res, void *arg)
{
    struct batch *b = arg;
    struct sl__lane *l = b->lane;
    struct sl_source *s;

    if (!l) {
        /* orphaned by sl_engine_free on a hard stop: nothing is left to tell */
        batch_free(b);
        return;
    }
    s = l->s;
    b->last_ms = sl_wall_ms();   /* b->event is ours again: kept for an on-failure record */
    inflight_drop(s);
    if (s->stopping) {
        /* shutting down: not final, so not checkpointed; delivered again */
        account(s, b->r, b->n);
        release_records(s, b->r, b->n);
        l->cur = NULL;
        batch_free(b);
        drain_check(s->engine);
        return;
    }
    if (l->drop)
        drop_result(b, res);
    else
        on_outcome(b, res);
    source_drain_check(s);
    drain_check(s->engine);
}

static void on_outcome(struct batch *b, const struct sl_invoke_result *res)
{
    struct sl__lane *l = b->lane;
    struct sl_source *s = l->s;
    const char *why = "";
    char *failed;
    int nf;

    b->status = 200;
    b->unhandled = !res->ok;
    snprintf(b->request_id, sizeof(b->request_id), "%s", res->request_id ? res->request_id : "");
    if (!res->ok) {
        snprintf(b->etype, sizeof(b->etype), "%s", res->error_type ? res->error_type : "");
        snprintf(b->emsg, sizeof(b->emsg), "%s", res->error_message ? res->error_message : "");
        batch_failed(b);
        return;
    }
    failed = sl_calloc(b->n ? b->n : 1, 1);
    nf = s->conf->report_batch_item_failures
             ? item_failures(b, res->payload, res->payload_len, failed, &why) : 0;
    if (nf == 0) {
        s->last_ok_ms = sl_wall_ms();
        s->succeeded += b->n;
        checkpoint(s, b->r, b->n);
        free(failed);
        batch_free(b);
        lane_next(l);
        return;
    }
    if (nf < 0) {
        snprintf(b->etype, sizeof(b->etype), "Runtime.InvalidResponse");
        snprintf(b->emsg, sizeof(b->emsg), "%s", why);
        free(failed);
        batch_failed(b);
        return;
    }
    snprintf(b->etype, sizeof(b->etype), "PartialBatchFailure");
    snprintf(b->emsg, sizeof(b->emsg), "%d of %zu records failed", nf, b->n);
    if (s->ops->klass == SL_CLASS_QUEUE) {
        /* ack the others one by one; the failed ones come back */
        struct sl_record **ok = sl_malloc(b->n * sizeof(*ok)), **bad = sl_malloc(b->n * sizeof(*bad));
        int64_t *delay = sl_malloc(b->n * sizeof(*delay));
        size_t nok = 0, nbad = 0;
        item_delays(b, res->payload, res->payload_len, delay);
        for (size_t i = 0; i < b->n; i++) {
            if (!failed[i])
                ok[nok++] = b->r[i];
            else if (delay[i] < 0)
                bad[nbad++] = b->r[i];
        }
        s->succeeded += nok;
        checkpoint(s, ok, nok);
        for (size_t i = 0; i < b->n; i++)
            if (failed[i] && delay[i] >= 0)
                requeue(s, &b->r[i], 1, delay[i]); /* the handler chose its delay */
        requeue(s, bad, nbad, s->conf->visibility_timeout_ms);
        free(delay);
        free(ok);
        free(bad);
        free(failed);
        batch_free(b);
        lane_next(l);
        return;
    }
    /* streams: checkpoint up to the lowest failed record, retry from it */
    {
        size_t low = 0;
        while (low < b->n && !failed[low])
            low++;
        s->succeeded += low;
        checkpoint(s, b->r, low);
        memmove(b->r, b->r + low, (b->n - low) * sizeof(*b->r));
        b->n -= low;
        if (low) {
            free(b->event); /* it holds records that are gone now */
            b->event = NULL;
        }
        free(failed);
        batch_failed(b);
    }
}

/* A function error (or partial failure) on a batch: retry, bisect,
 * give up, or (queues) release. */
int64_t sl_source_max_retries(const struct sl_source_conf *c)
{
    /* Lambda's Kafka rule: "until success" with an on_failure destination
     * is at most 10 retries */
    if (c->maximum_retry_attempts < 0 && c->on_failure && c->type &&
        (c->type->traits & SL_CONF_RETRY_CAP))
        return KAFKA_RETRY_CAP;
    return c->maximum_retry_attempts;
}

static void batch_failed(struct batch *b)
{
    struct sl__lane *l = b->lane;
    struct sl_source *s = l->s;
    const struct sl_source_conf *c = s->conf;
    int64_t now = sl_wall_ms(), oldest = INT64_MAX, max_retries = sl_source_max_retries(c);

    s->failed_batches++;
    s->last_fail_ms = now;
    b->attempts++;
    if (s->ops->klass == SL_CLASS_QUEUE) {
        requeue(s, b->r, b->n, c->visibility_timeout_ms);
        batch_free(b);
        lane_next(l);
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->r[i]->timestamp_ms < oldest)
            oldest = b->r[i]->timestamp_ms;
    if (c->maximum_record_age_ms >= 0 && now - oldest > c->maximum_record_age_ms) {
        dead_letter(s, b, NULL, "RecordAgeExceeded");
        return;
    }
    /* as in Lambda, splitting a batch does not count towards the retry
     * quota: only a batch that cannot be split any further spends it */
    if (!(c->bisect_batch_on_function_error && b->n > 1) && ++b->retries > 0 &&
        max_retries >= 0 && b->retries > max_retries) {
        dead_letter(s, b, NULL, "RetryAttemptsExhausted");
        return;
    }
    s->retried++;
    if (c->bisect_batch_on_function_error && b->n > 1) {
        /* the second half waits in front of any earlier halves: order kept;
         * each half starts with the whole quota */
        size_t half = b->n / 2;
        struct batch *second = batch_new(l, b->r + half, b->n - half);
        second->attempts = b->attempts;
        second->first_ms = b->first_ms;
        second->status = b->status;
        second->unhandled = b->unhandled;
        free(b->event);
        b->event = NULL;
        second->after = l->rest;
        l->rest = second;
        b->n = half;
        b->retries = 0;
        /* a new, smaller batch: try it soon */
        retry_later(b, retry_backoff_ms(1));
        return;
    }
    retry_later(b, retry_backoff_ms(b->retries));
}

static void batch_run(struct batch *b)
{
    struct sl__lane *l = b->lane;
    struct sl_source *s = l->s;
    struct sl_invoke_req req = { 0 };
    struct sl_throttle t = { 0 };
    size_t len = 0;
    char *event;
    int rc;

    if (s->stopping || s->retiring || s->engine->draining)
        return; /* left as it is: freed, not checkpointed, at engine_free */
    free(b->event);
    b->event = NULL;
    event = s->ops->event(s, b->r, b->n, &len);
    if (!event) {
        snprintf(b->etype, sizeof(b->etype), "Sluice.EventEncoding");
        snprintf(b->emsg, sizeof(b->emsg), "the poller could not build the event");
        dead_letter(s, b, NULL, "RetryAttemptsExhausted");
        return;
    }
    if (!b->first_ms)
        b->first_ms = sl_wall_ms();
    req.event = event;
    req.event_len = len;
    req.source = s->conf->name;
    rc = sl_dispatcher_invoke(s->engine->d, s->fn->name, &req, on_result, b, &t);
    if (rc == 0) {
        b->event = event; /* borrowed by the pool until on_result */
        b->event_len = len;
        inflight_begin(s);
        return;
    }
    free(event);
    if (rc == SL_EAGAIN) {
        b->throttles++;
        retry_later(b, retry_backoff_ms(b->throttles > 8 ? 8 : b->throttles));
        return;
    }
    b->status = rc == SL_ENOTFOUND ? 404 : 500;  /* Lambda's answer to such an Invoke */
    b->unhandled = false;
    b->request_id[0] = '\0';
    snprintf(b->etype, sizeof(b->etype), "%s", sl_errname(rc));
    snprintf(b->emsg, sizeof(b->emsg), "cannot invoke %s: %s", s->fn->name, sl_strerror(rc));
    batch_failed(b);
}

/* ------------------------------------------------------------------ */
/* Lanes and batching                                                  */

static void on_window(evutil_socket_t fd, short what, void *arg)
{
    struct sl__lane *l = arg;

    (void)fd, (void)what;
    if (!l->cur && l->n) {
        size_t take = 0, bytes = 0;
        struct sl_record **r = sl_malloc(l->n * sizeof(*r)), *rec;

        while ((rec = l->head) && take < (size_t)l->s->conf->batch_size &&
               (take == 0 || bytes + rec->len <= SL_PAYLOAD_MAX - SL_EVENT_SLACK)) {
            l->head = rec->next;
            rec->next = NULL;
            bytes += rec->len;
            r[take++] = rec;
        }
        if (!l->head)
            l->tail = NULL;
        l->n -= take;
        l->bytes -= bytes;
        l->cur = batch_new(l, r, take);
        free(r);
        batch_run(l->cur);
    }
}

/* Start a batch now if one is full, else arm the batching window. */
static void lane_kick(struct sl__lane *l)
{
    const struct sl_source_conf *c = l->s->conf;

    if (l->cur || l->n == 0 || l->s->stopping || l->s->retiring || l->s->engine->draining)
        return;
    if ((int64_t)l->n >= c->batch_size || l->bytes >= SL_PAYLOAD_MAX - SL_EVENT_SLACK ||
        c->maximum_batching_window_ms == 0) {
        event_del(l->window);
        on_window(-1, 0, l);
        return;
    }
    if (!evtimer_pending(l->window, NULL)) {
        struct timeval tv = { (time_t)(c->maximum_batching_window_ms / 1000),
                              (suseconds_t)(c->maximum_batching_window_ms % 1000) * 1000 };
        evtimer_add(l->window, &tv);
    }
}

static struct sl__lane *lane_get(struct sl_source *s, const char *key)
{
    struct sl__lane *l;

    for (l = s->lanes; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l;
    l = sl_calloc(1, sizeof(*l));
    l->s = s;
    snprintf(l->key, sizeof(l->key), "%s", key);
    l->window = evtimer_new(s->engine->base, on_window, l);
    l->next = s->lanes;
    s->lanes = l;
    return l;
}

void sl_source_push(struct sl_source *s, const char *lane, struct sl_record *r)
{
    struct sl__lane *l;

    s->received++;
    s->pending_bytes += r->len;
    if (!s->paused && s->pending_bytes > HIGH_WATER) {
        s->paused = true;
        if (s->ops->pause && !s->disabled)
            s->ops->pause(s);
    }
    if (s->ops->klass == SL_CLASS_QUEUE && r->receive_count > s->conf->max_receive_count) {
        dead_letter(s, NULL, r, "MaxReceiveCountExceeded");
        return;
    }
    l = lane_get(s, lane ? lane : "");
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
    l->bytes += r->len;
    lane_kick(l);
}

size_t sl_source_outstanding(const struct sl_source *s)
{
    size_t n = 0;

    for (struct sl__lane *l = s->lanes; l; l = l->next)
    {
        n += l->n + (l->cur ? l->cur->n : 0);
        for (const struct batch *b = l->rest; b; b = b->after)
            n += b->n;
    }
    return n;
}

size_t sl_source_lanes(const struct sl_source *s, struct sl_lane_info *out, size_t max)
{
    size_t n = 0;

    for (struct sl__lane *l = s->lanes; l; l = l->next, n++) {
        if (n >= max)
            continue;
        out[n] = (struct sl_lane_info){ .key = l->key, .waiting = l->n };
        if (l->cur) {
            out[n].running = l->cur->n;
            out[n].attempts = l->cur->attempts;
            out[n].error = l->cur->attempts ? l->cur->emsg : NULL;
        }
        for (const struct batch *b = l->rest; b; b = b->after)
            out[n].waiting += b->n;
    }
    return n;
}

/* ------------------------------------------------------------------ */

/* Per-source counters as Prometheus series, refreshed at each scrape. */
static void collect(void *arg, struct sl_metrics *m)
{
    struct sl_engine *e = arg;
    char lv[160];

    (void)m;
    for (size_t i = 0; i < e->nsources; i++) {
        const struct sl_source *s = e->sources[i];
        static const char *const kinds[] = { "received", "succeeded", "retried",
                                             "dead_lettered", "filtered" };
        const uint64_t v[] = { s->received, s->succeeded, s->retried, s->dead_lettered,
                               s->filtered };
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
            snprintf(lv, sizeof(lv), "%s" SL_METRIC_LV_SEP "%s", s->conf->name, kinds[k]);
            sl_metric_set(e->m_records, lv, (double)v[k]);
        }
        sl_metric_set(e->m_batches, s->conf->name, (double)s->failed_batches);
        sl_metric_set(e->m_pending, s->conf->name, (double)sl_source_outstanding(s));
    }
}

int sl_engine_new(struct event_base *base, const struct sl_config *conf, struct sl_dispatcher *d,
                  struct sl_metrics *m, struct sl_engine **out, struct sl_err *err)
{
    struct sl_engine *e = sl_calloc(1, sizeof(*e));

    (void)err;
    e->base = base;
    e->conf = conf;
    e->d = d;
    e->metrics = m;
    if (m) {
        /* counters kept by the engine, exposed as gauges of their running totals */
        e->m_records = sl_metrics_family(m, "sluice_source_records_total", SL_METRIC_COUNTER,
                                         "Records per source since start, by outcome "
                                         "(received, succeeded, retried, dead_lettered, "
                                         "filtered).", "source,outcome");
        e->m_batches = sl_metrics_family(m, "sluice_source_failed_batches_total",
                                         SL_METRIC_COUNTER, "Batches per source that ended in "
                                         "a function error since start.", "source");
        e->m_pending = sl_metrics_family(m, "sluice_source_outstanding_records", SL_METRIC_GAUGE,
                                         "Records fetched and not yet final, per source.",
                                         "source");
        sl_metrics_on_collect(m, collect, e);
    }
    *out = e;
    return 0;
}

struct event_base *sl__engine_base(struct sl_engine *e)
{
    return e->base;
}

struct sl_metrics *sl_engine_metrics(struct sl_engine *e)
{
    return e->metrics;
}

void sl_engine_stop(struct sl_engine *e, void (*done)(void *arg), void *arg)
{
    if (e->draining)
        return;
    e->draining = true;
    e->drained = done;
    e->drained_arg = arg;
    e->fetching = 0;
    for (size_t i = 0; i < e->nsources; i++)
        e->fetching += !e->sources[i]->fetch_stopped;
    for (size_t i = 0; i < e->nsources; i++) {
        struct sl_source *s = e->sources[i];
        /* nothing new starts; retry timers that fire find the engine draining */
        for (struct sl__lane *l = s->lanes; l; l = l->next)
            event_del(l->window);
        if (s->fetch_stopped || s->retiring)
            continue; /* retired by a reload: already told to stop */
        if (s->ops->stop)
            s->ops->stop(s);
        else
            sl_source_stopped(s);
    }
    drain_check(e);
}

void sl_source_stopped(struct sl_source *s)
{
    struct sl_engine *e = s->engine;

    if (s->fetch_stopped)
        return;
    s->fetch_stopped = true;
    if (e->draining && e->fetching > 0)
        e->fetching--;
    source_drain_check(s);
    drain_check(e);
}

struct sl_source *sl_engine_add_source(struct sl_engine *e, const struct sl_source_conf *conf,
                                       const struct sl_poller_ops *ops, void *ctx)
{
    struct sl_source *s = sl_calloc(1, sizeof(*s));

    s->ops = ops;
    s->ctx = ctx;
    s->conf = conf;
    s->fn = sl_config_function(e->conf, conf->function);
    s->engine = e;
    snprintf(s->inst, sizeof(s->inst), "source:%s", conf->name);
    e->sources = sl_realloc(e->sources, (e->nsources + 1) * sizeof(*e->sources));
    e->sources[e->nsources++] = s;
    return s;
}

static void free_list(struct sl_source *s, struct sl_record *r)
{
    while (r) {
        struct sl_record *next = r->next;
        s->ops->free_record(s, r);
        r = next;
    }
}

/* A batch the pool or a sink still holds outlives the engine (a hard
 * stop, or a grace period that ran out): its records go back now, and
 * the reply, when it comes, only frees what is left. */
static void orphan_batch(struct sl_source *s, struct batch *b)
{
    release_records(s, b->r, b->n);
    b->n = 0;
    b->lane = NULL;
    if (b->timer) {
        event_free(b->timer);
        b->timer = NULL;
    }
}

/* Let go of dead-letter writes in flight for `only` (NULL: every source):
 * their records go back unfinished, the sink's reply only frees the write. */
static void orphan_writes(struct sl_engine *e, struct sl_source *only)
{
    struct dlq_write *w, *next;

    for (w = e->writes; w; w = next) {
        next = w->next;
        if (only && w->s != only)
            continue;
        if (w->prev)
            w->prev->next = w->next;
        else
            e->writes = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->prev = w->next = NULL;
        if (w->b) {
            struct sl__lane *l = w->b->lane;
            if (l->cur == w->b)
                l->cur = NULL;
            release_records(w->s, w->b->r, w->b->n);
            batch_free(w->b);
        } else {
            release_records(w->s, &w->one, 1);
        }
        w->s = NULL;
        w->b = NULL;
    }
}

/* Free one source, its lanes and the records they hold (not checkpointed). */
static void source_destroy(struct sl_source *s)
{
    s->stopping = true;
    while (s->lanes) {
        struct sl__lane *l = s->lanes;
        s->lanes = l->next;
        /* nothing here was checkpointed: the source delivers it again */
        free_list(s, l->head);
        if (l->cur && l->cur->event)
            orphan_batch(s, l->cur);
        else if (l->cur) {
            release_records(s, l->cur->r, l->cur->n);
            batch_free(l->cur);
        }
        while (l->rest) {
            struct batch *b = l->rest;
            l->rest = b->after;
            release_records(s, b->r, b->n);
            batch_free(b);
        }
        if (l->drop && --l->drop->lanes == 0)
            free(l->drop); /* the poller goes too: its callback is moot */
        event_free(l->window);
        free(l);
    }
    if (s->ops->free)
        s->ops->free(s);
    if (s->retired_ev)
        event_free(s->retired_ev);
    free(s);
}

void sl_engine_free(struct sl_engine *e)
{
    if (!e)
        return;
    if (e->metrics)
        sl_metrics_off_collect(e->metrics, collect, e);
    orphan_writes(e, NULL);
    for (size_t i = 0; i < e->nsources; i++)
        source_destroy(e->sources[i]);
    free(e->sources);
    free(e);
}

/* ------------------------------------------------------------------ */
/* One source at a time (live reload)                                  */

static void on_retired(evutil_socket_t fd, short what, void *arg)
{
    struct sl_source *s = arg;
    void (*done)(void *) = s->retired;

    (void)fd, (void)what;
    s->retired = NULL;
    if (done)
        done(s->retired_arg);
}

void sl_source_stop(struct sl_source *s, void (*done)(void *arg), void *arg)
{
    if (s->retiring)
        return;
    s->retiring = true;
    s->retired = done;
    s->retired_arg = arg;
    s->retired_ev = evtimer_new(s->engine->base, on_retired, s);
    for (struct sl__lane *l = s->lanes; l; l = l->next)
        event_del(l->window);
    if (s->fetch_stopped)
        source_drain_check(s);
    else if (s->ops->stop)
        s->ops->stop(s);
    else
        sl_source_stopped(s);
}

void sl_source_free(struct sl_source *s)
{
    struct sl_engine *e;

    if (!s)
        return;
    e = s->engine;
    for (size_t i = 0; i < e->nsources; i++)
        if (e->sources[i] == s) {
            memmove(&e->sources[i], &e->sources[i + 1],
                    (e->nsources - i - 1) * sizeof(*e->sources));
            e->nsources--;
            break;
        }
    if (e->metrics) {
        /* its series stop at their last values; a source of the same name
         * started later counts from zero again */
        const char *kinds[] = { "received", "succeeded", "retried", "dead_lettered",
                                "filtered" };
        char lv[160];
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            snprintf(lv, sizeof(lv), "%s" SL_METRIC_LV_SEP "%s", s->conf->name, kinds[k]);
            sl_metric_set(e->m_records, lv, 0);
        }
        sl_metric_set(e->m_pending, s->conf->name, 0);
    }
    orphan_writes(e, s);
    if (s->inflight > 0 && !s->stopping)
        SL_WARN(s->inst, "freed with %zu invocation(s) or write(s) in flight; their records "
                "will be delivered again", s->inflight);
    e->inflight -= s->inflight;
    source_destroy(s);
    drain_check(e);
}

void sl_engine_set_config(struct sl_engine *e, const struct sl_config *conf)
{
    e->conf = conf;
    for (size_t i = 0; i < e->nsources; i++) {
        struct sl_source *s = e->sources[i];
        const struct sl_function_conf *fn = sl_config_function(conf, s->conf->function);
        /* a source whose function is gone is being retired: keep the old */
        if (fn)
            s->fn = fn;
    }
}

/* ------------------------------------------------------------------ */
/* Dropping lanes (a Kafka partition revoked in a rebalance)           */

static void lane_unlink(struct sl__lane *l)
{
    struct sl_source *s = l->s;

    for (struct sl__lane **pp = &s->lanes; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    event_free(l->window);
    free(l);
}

/* A dropped lane's last in-flight work ended: the lane goes. Returns
 * false (nothing done) for a lane that is not being dropped. */
static bool lane_drop_end(struct sl__lane *l)
{
    struct sl__drop *d = l->drop;

    if (!d)
        return false;
    l->cur = NULL;
    lane_unlink(l);
    if (--d->lanes == 0) {
        d->done(d->arg);
        free(d);
    }
    return true;
}

/* The result of a batch whose lane is being dropped: what succeeded is
 * checkpointed, nothing is retried; the rest is let go, not final. */
static void drop_result(struct batch *b, const struct sl_invoke_result *res)
{
    struct sl__lane *l = b->lane;
    struct sl_source *s = l->s;
    size_t ok = 0;

    if (res->ok) {
        const char *why = "";
        char *failed = sl_calloc(b->n ? b->n : 1, 1);
        int nf = s->conf->report_batch_item_failures
                     ? item_failures(b, res->payload, res->payload_len, failed, &why) : 0;
        if (nf == 0)
            ok = b->n;
        else if (nf > 0)
            while (ok < b->n && !failed[ok])
                ok++;
        free(failed);
    }
    s->succeeded += ok;
    checkpoint(s, b->r, ok);
    account(s, b->r + ok, b->n - ok);
    release_records(s, b->r + ok, b->n - ok);
    batch_free(b);
    lane_drop_end(l);
}

void sl_source_drop_lanes(struct sl_source *s, const char *prefix, void (*done)(void *arg),
                          void *arg)
{
    struct sl__drop *d = sl_calloc(1, sizeof(*d));
    size_t plen = strlen(prefix);
    struct sl__lane *l, *next;

    d->done = done;
    d->arg = arg;
    for (l = s->lanes; l; l = next) {
        next = l->next;
        if (l->drop || strncmp(l->key, prefix, plen) != 0 ||
            (l->key[plen] != '\0' && l->key[plen] != '#'))
            continue;
        /* records not yet in a batch, and batches waiting, go now */
        event_del(l->window);
        while (l->head) {
            struct sl_record *r = l->head;
            l->head = r->next;
            account(s, &r, 1);
            s->ops->free_record(s, r);
        }
        l->tail = NULL;
        l->n = l->bytes = 0;
        while (l->rest) {
            struct batch *b = l->rest;
            l->rest = b->after;
            account(s, b->r, b->n);
            release_records(s, b->r, b->n);
            batch_free(b);
        }
        if (l->cur && !l->cur->event && !l->cur->dlq) {
            /* waiting for a retry: not in flight */
            account(s, l->cur->r, l->cur->n);
            release_records(s, l->cur->r, l->cur->n);
            batch_free(l->cur);
            l->cur = NULL;
        }
        if (!l->cur) {
            lane_unlink(l);
            continue;
        }
        /* new records for this key start a new lane */
        snprintf(l->key, sizeof(l->key), "\x01dropped");
        l->drop = d;
        d->lanes++;
    }
    if (d->lanes == 0) {
        free(d);
        done(arg);
    }
}

/* ------------------------------------------------------------------ */
/* Records the source lost                                             */

struct lost_write {
    struct sl_source *s;
    size_t            count;
    char             *envelope;
    void            (*done)(void *arg, int rc);
    void             *arg;
};

static void on_lost_written(void *arg, int rc, const struct sl_err *err)
{
    struct lost_write *w = arg;
    struct sl_source *s = w->s;

    (void)err;
    if (rc == 0)
        s->dead_lettered += w->count;
    w->done(w->arg, rc);
    free(w->envelope);
    free(w);
    inflight_end(s);
}

void sl_source_report_lost(struct sl_source *s, const char *lane, const char *first_id,
                           const char *last_id, size_t count, const char *condition,
                           const char *message, json_t *info, void (*done)(void *arg, int rc),
                           void *arg)
{
    struct sl_sink *sink = s->conf->on_failure ? sl_dispatcher_sink(s->engine->d, s->conf->on_failure)
                                               : NULL;
    struct lost_write *w = sl_calloc(1, sizeof(*w));
    json_t *env;

    SL_WARN(s->inst, "%zu record(s) from %s to %s in %s lost: %s (%s)%s%s", count, first_id,
            last_id, lane, condition, message,
            sink ? "; reporting to " : "; no on_failure destination to report them to",
            sink ? s->conf->on_failure : "");
    w->s = s;
    w->count = count;
    w->done = done;
    w->arg = arg;
    inflight_begin(s);
    if (!sink) {
        json_decref(info);
        on_lost_written(w, 0, NULL);
        return;
    }
    /* the function never saw them: no responseContext, no payload */
    env = failure_head(s, lane, condition, 0, NULL, 0, false);
    if (env && info)
        json_object_update(env, info);
    json_decref(info);
    if (env)
        json_object_set_new(env, "error", json_pack("{s:s, s:s}", "type", condition,
                                                    "message", message));
    w->envelope = env ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    if (!w->envelope) {
        SL_ERROR(s->inst, "cannot encode the lost-records envelope");
        on_lost_written(w, SL_EINTERNAL, NULL);
        return;
    }
    sl_sink_write_reliable(sink, w->envelope, strlen(w->envelope), on_lost_written, w);
}

/* ------------------------------------------------------------------ */
/* Steering (the management API)                                       */

void sl_source_set_enabled(struct sl_source *s, bool on)
{
    if (s->disabled == !on)
        return;
    s->disabled = !on;
    if (s->paused || s->stopping || s->engine->draining)
        return; /* backpressure or a stop already holds the poller */
    if (!on && s->ops->pause)
        s->ops->pause(s);
    else if (on && s->ops->resume)
        s->ops->resume(s);
    SL_INFO(s->inst, "%s by the management API", on ? "enabled" : "disabled: fetching stopped");
}

const char *sl_source_state(const struct sl_source *s)
{
    if (!s->disabled)
        return "Enabled";
    return sl_source_outstanding(s) > 0 ? "Disabling" : "Disabled";
}

struct sl_source *sl_engine_source(struct sl_engine *e, const char *name)
{
    for (size_t i = 0; e && i < e->nsources; i++)
        if (strcmp(e->sources[i]->conf->name, name) == 0)
            return e->sources[i];
    return NULL;
}

void sl_engine_set_maker(struct sl_engine *e, sl_engine_maker make)
{
    e->make = make;
}

int sl_engine_start_source(struct sl_engine *e, const struct sl_source_conf *c,
                           struct sl_err *err)
{
    struct sl_source *s = NULL;
    int rc;

    if (e->draining)
        return sl_err_set(err, SL_ESTOPPED, false, "sluice is stopping");
    if (!e->make)
        return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: no poller factory", c->name);
    if (sl_engine_source(e, c->name))
        return 0;
    rc = e->make(e, c, &s, err);
    if (rc == 0 && s->ops->start)
        rc = s->ops->start(s, err);
    if (rc == 0)
        SL_INFO(s->inst, "started (%s -> %s) by the management API", sl_conf_type_name(c->type),
                c->function);
    return rc;
}
