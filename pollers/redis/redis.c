/* Redis queue source (type: redis): Redis as SQS. At-least-once delivery,
 * visibility timeouts, receive counts and redrive, for a stream (consumer
 * group) or a plain list (reliable fetch into leases). The modes are in
 * stream.c and list.c; this file is what both share:
 *
 *   flow     one read at a time on the reader connection, COUNT batch_size,
 *            while fewer than `limit` records are held (fetched, not yet
 *            final): 2 x maximum_concurrency x batch_size. Messages held are
 *            invisible to others, so the poller never takes more than it can
 *            start soon.
 *   lanes    maximum_concurrency engine lanes "0".."N-1"; each fetch goes
 *            to the lane holding the fewest records. The engine runs one
 *            batch per lane at a time: N batches at once.
 *   acks     checkpoints are acknowledged in one command per batch. An ack
 *            whose reply was lost with the connection is sent again after
 *            the reconnect (acks are idempotent), so a success is never
 *            processed again because of a dropped connection.
 *   reclaim  every min(1 s, visibility / 4): expired messages (failed ones,
 *            and those of instances that died) come back with their receive
 *            count; the engine redrives those past max_receive_count.
 *   beat     every visibility / 3, the leases of records still held here
 *            are extended: a slow batch is not handed to another instance
 *            while this one works on it (Lambda's SQS does not do this;
 *            Celery and BullMQ duplicate jobs there).
 *   filter   filter_criteria are matched against the SQS record with its
 *            body parsed (left out when not JSON); a message that matches
 *            none is acknowledged and counted as filtered, never invoked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sluice/clock.h"
#include "sluice/filter.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/pollers.h"

#include "internal.h"

#define STATS_EVERY_MS 5000
#define RECONNECT_BASE_MS 100
#define RECONNECT_CAP_MS  5000
#define ACK_CHUNK      1000   /* ids per ack command */

struct held {                  /* sl_record.handle */
    struct rq_rec   rec;
    struct sl_record *r;
    struct held     *prev, *next;
};

struct rq_ack {
    char              **ids;
    size_t              n;
    bool                cleanup;
    TAILQ_ENTRY(rq_ack) link;
};

static void fetch_more(struct rq *q);

/* ------------------------------------------------------------------ */
/* Acks                                                                */

static void ack_send(struct rq *q, struct rq_ack *a);

static void ack_free(struct rq_ack *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->ids[i]);
    free(a->ids);
    free(a);
}

static void on_acked(struct rq *q, bool ok, void *arg)
{
    struct rq_ack *a = arg;

    TAILQ_REMOVE(&q->acks, a, link);
    if (ok || q->closing) {
        if (!ok)
            SL_WARN(q->inst, "%zu acknowledgement(s) not confirmed at shutdown: those "
                    "messages come back after the visibility timeout", a->n);
        ack_free(a);
        return;
    }
    /* the connection went away: send again once it is back */
    TAILQ_INSERT_TAIL(&q->unsent, a, link);
}

static void ack_send(struct rq *q, struct rq_ack *a)
{
    if (!sl_redis_conn_ready(q->cmd)) {
        TAILQ_INSERT_TAIL(&q->unsent, a, link);
        return;
    }
    TAILQ_INSERT_TAIL(&q->acks, a, link);
    q->mode->ack(q, (const char **)a->ids, a->n, a->cleanup, on_acked, a);
}

static void ack_ids(struct rq *q, const char **ids, size_t n, bool cleanup)
{
    for (size_t off = 0; off < n; off += ACK_CHUNK) {
        size_t k = n - off < ACK_CHUNK ? n - off : ACK_CHUNK;
        struct rq_ack *a = sl_calloc(1, sizeof(*a));

        a->ids = sl_malloc(k * sizeof(*a->ids));
        for (size_t i = 0; i < k; i++)
            a->ids[i] = sl_strdup(ids[off + i]);
        a->n = k;
        a->cleanup = cleanup;
        ack_send(q, a);
    }
}

static void flush_unsent(struct rq *q)
{
    struct rq_ack_list todo = TAILQ_HEAD_INITIALIZER(todo);
    struct rq_ack *a;

    if (TAILQ_EMPTY(&q->unsent))
        return;
    TAILQ_CONCAT(&todo, &q->unsent, link);
    while ((a = TAILQ_FIRST(&todo))) {
        TAILQ_REMOVE(&todo, a, link);
        ack_send(q, a);
    }
}

/* ------------------------------------------------------------------ */
/* Records                                                             */

static struct held *held_of(struct sl_record *r)
{
    return r->handle;
}

static size_t pick_lane(const struct rq *q)
{
    size_t best = 0;

    for (size_t i = 1; i < q->nlanes; i++)
        if (q->lane_load[i] < q->lane_load[best])
            best = i;
    return best;
}

static void push_one(struct rq *q, const struct rq_msg *m, size_t lane)
{
    struct sl_source *s = q->s;
    struct sl_record *r = sl_calloc(1, sizeof(*r));
    struct held *h = sl_calloc(1, sizeof(*h));

    r->id = sl_strndup(m->id, m->idlen);
    r->json = sl__rq_record_json(q, m, &r->len);
    r->timestamp_ms = m->sent_ms;
    r->receive_count = m->receive_count;
    r->handle = h;
    h->r = r;
    h->rec.lane = (int)lane;
    h->rec.first_ms = m->first_ms;
    /* held list: for the lease refresh */
    h->next = q->held_list;
    if (q->held_list)
        q->held_list->prev = h;
    q->held_list = h;
    q->held++;
    q->lane_load[lane]++;
    sl_source_push(s, q->lane_name[lane], r);
}

static bool filtered_out(struct rq *q, const struct rq_msg *m)
{
    size_t len;
    char *json;
    json_t *doc;
    bool pass;

    if (!q->filter)
        return false;
    json = sl__rq_record_json(q, m, &len);
    doc = sl__rq_filter_doc(json, len);
    pass = doc && sl_filter_match(q->filter, doc);
    json_decref(doc);
    free(json);
    return !pass;
}

void sl__rq_fetched(struct rq *q, bool reclaim, const struct rq_msg *m, size_t n, int64_t retry_ms)
{
    const char **drop = NULL;
    size_t ndrop = 0, lane;

    if (reclaim)
        q->reclaiming = false;
    else
        q->reading = false;
    if (q->closing)
        return;
    if (q->stopping) {
        if (n > 0) {
            const char **ids = sl_malloc(n * sizeof(*ids));
            char **own = sl_malloc(n * sizeof(*own));
            for (size_t i = 0; i < n; i++)
                ids[i] = own[i] = sl_strndup(m[i].id, m[i].idlen);
            q->mode->handback(q, ids, n);
            for (size_t i = 0; i < n; i++)
                free(own[i]);
            free(own);
            free(ids);
        }
        if (!q->reading && !q->reclaiming && !q->stop_reported) {
            q->stop_reported = true;
            sl_source_stopped(q->s);
        }
        return;
    }
    if (!m) {
        if (!reclaim) {
            struct timeval tv = { (time_t)(retry_ms / 1000), (suseconds_t)(retry_ms % 1000) * 1000 };
            q->read_wait = true;
            evtimer_add(q->rd_wait, &tv);
        }
        return;
    }
    if (reclaim) {
        q->n_reclaimed += n;
        if (n > 0)
            SL_DEBUG(SL_DBG_REDIS, q->inst, "reclaimed %zu message(s)", n);
    }
    q->n_received += n;
    lane = pick_lane(q);
    for (size_t i = 0; i < n; i++) {
        if (m[i].blen > RQ_MSG_MAX)
            SL_WARN(q->inst, "message %.*s has %zu bytes, more than an event can carry; it "
                    "fails and is redriven after max_receive_count", (int)m[i].idlen, m[i].id,
                    m[i].blen);
        if (filtered_out(q, &m[i])) {
            if (!drop)
                drop = sl_malloc(n * sizeof(*drop));
            drop[ndrop++] = sl_strndup(m[i].id, m[i].idlen);
            continue;
        }
        push_one(q, &m[i], lane);
    }
    if (ndrop) {
        q->s->filtered += ndrop;
        ack_ids(q, drop, ndrop, true);
        for (size_t i = 0; i < ndrop; i++)
            free((char *)drop[i]);
        free(drop);
    }
    if (reclaim && n > 0)
        q->next_reclaim = 0; /* a full page may have more behind it */
    fetch_more(q);
}

static char *rq_event(struct sl_source *s, struct sl_record *const *r, size_t n, size_t *len)
{
    (void)s;
    return sl_records_event(r, n, len);
}

static void rq_checkpoint(struct sl_source *s, struct sl_record *const *r, size_t n)
{
    struct rq *q = s->ctx;
    const char **ids = sl_malloc((n ? n : 1) * sizeof(*ids));
    bool cleanup = false;

    for (size_t i = 0; i < n; i++) {
        ids[i] = r[i]->id;
        held_of(r[i])->rec.done = true;
        if (r[i]->receive_count > 1)
            cleanup = true;
        if (r[i]->receive_count > s->conf->max_receive_count)
            q->n_redriven++;
        else
            q->n_deleted++;
    }
    ack_ids(q, ids, n, cleanup);
    free(ids);
}

static void rq_release(struct sl_source *s, struct sl_record *const *r, size_t n,
                       int64_t delay_ms)
{
    struct rq *q = s->ctx;
    const char **ids = sl_malloc((n ? n : 1) * sizeof(*ids));
    int64_t *delay = sl_malloc((n ? n : 1) * sizeof(*delay));
    int64_t *first = sl_malloc((n ? n : 1) * sizeof(*first));

    for (size_t i = 0; i < n; i++) {
        ids[i] = r[i]->id;
        held_of(r[i])->rec.done = true;
        /* the default visibility counts from the receive, as in SQS */
        delay[i] = delay_ms == s->conf->visibility_timeout_ms ? -1 : delay_ms;
        first[i] = held_of(r[i])->rec.first_ms;
    }
    q->n_released += n;
    if (sl_redis_conn_ready(q->cmd))
        q->mode->release(q, ids, delay, first, n);
    free(ids);
    free(delay);
    free(first);
}

static void rq_free_record(struct sl_source *s, struct sl_record *r)
{
    struct rq *q = s->ctx;
    struct held *h = held_of(r);

    if (h) {
        if (h->prev)
            h->prev->next = h->next;
        else
            q->held_list = h->next;
        if (h->next)
            h->next->prev = h->prev;
        q->held--;
        q->lane_load[h->rec.lane]--;
        free(h);
    }
    free(r->id);
    free(r->json);
    free(r);
    if (!q->closing && !q->reading)
        event_active(q->kick, 0, 0);
}

/* ------------------------------------------------------------------ */
/* Fetching                                                            */

/* Messages held at most: 2 x lanes x batch_size, read each time, since
 * the management API may change batch_size while the source runs. */
static size_t room(const struct rq *q)
{
    size_t limit = 2 * q->nlanes * (size_t)q->conf->batch_size;

    return q->held < limit ? limit - q->held : 0;
}

static void fetch_more(struct rq *q)
{
    size_t want = (size_t)q->conf->batch_size;

    if (!q->started || q->stopping || q->closing || q->paused || q->reading || q->read_wait)
        return;
    if (!sl_redis_conn_ready(q->rd))
        return;
    if (room(q) < want)
        return;
    q->reading = true;
    q->mode->fetch(q, want);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    fetch_more(arg);
}

static void on_rd_wait(evutil_socket_t fd, short what, void *arg)
{
    struct rq *q = arg;

    (void)fd, (void)what;
    q->read_wait = false;
    fetch_more(q);
}

static void beat(struct rq *q)
{
    const char *ids[500];
    size_t n = 0;

    for (struct held *h = q->held_list; h; h = h->next) {
        if (h->rec.done)
            continue;
        ids[n++] = h->r->id;
        if (n == sizeof(ids) / sizeof(ids[0])) {
            q->mode->beat(q, ids, n);
            n = 0;
        }
    }
    if (n)
        q->mode->beat(q, ids, n);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rq *q = arg;
    int64_t now = (int64_t)sl_mono_ms();

    (void)fd, (void)what;
    if (!q->started || q->stopping || q->closing || !sl_redis_conn_ready(q->cmd))
        return;
    if (!q->reclaiming && !q->paused && now >= q->next_reclaim && room(q) > 0) {
        size_t n = room(q) < (size_t)q->conf->batch_size ? room(q) : (size_t)q->conf->batch_size;
        q->next_reclaim = now + q->reclaim_every;
        q->reclaiming = true;
        q->mode->reclaim(q, n);
    }
    if (now >= q->next_beat) {
        q->next_beat = now + q->beat_every;
        beat(q);
    }
    if (!q->statting && now >= q->next_stats) {
        q->next_stats = now + STATS_EVERY_MS;
        q->mode->stats(q);
    }
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static int cmd_setup(struct sl_redis_conn *c, void *arg)
{
    struct rq *q = arg;

    return q->mode->setup(q, c);
}

static void cmd_up(struct sl_redis_conn *c, void *arg)
{
    struct rq *q = arg;

    (void)c;

    q->next_reclaim = 0;
    q->next_stats = 0;
    flush_unsent(q);
    fetch_more(q);
}

static void rd_up(struct sl_redis_conn *c, void *arg)
{
    (void)c;
    fetch_more(arg);
}

/* ------------------------------------------------------------------ */
/* Scripts (both modes)                                                */

void sl__rq_script_loaded(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    struct sl_redis_conn *c = priv;

    if (!r)
        return;
    /* replies arrive in the order the scripts were sent */
    if (r->type == REDIS_REPLY_STRING && q->sha_next < 8)
        snprintf(q->sha[q->sha_next++], sizeof(q->sha[0]), "%.*s", (int)r->len, r->str);
    sl_redis_conn_setup_done(c, r->type == REDIS_REPLY_STRING, "SCRIPT LOAD", r);
}

bool sl__rq_script_error(struct rq *q, struct sl_redis_conn *c, const redisReply *r,
                         const char *what)
{
    if (r->type != REDIS_REPLY_ERROR)
        return false;
    SL_WARN(q->inst, "%s on %s failed: %s", what, q->o->key, r->str ? r->str : "");
    /* scripts load with the command connection's setup: once it is ready,
     * NOSCRIPT means the cache was flushed */
    if (r->str && strncmp(r->str, "NOSCRIPT", 8) == 0 && sl_redis_conn_ready(c))
        sl_redis_conn_drop(c, "script cache flushed: loading the scripts again");
    return true;
}

bool sl__rq_stats_reply(struct rq *q, const redisReply *r)
{
    q->statting = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return false;
    q->g_depth = (double)r->element[0]->integer;
    q->g_pending = (double)r->element[1]->integer;
    return true;
}

struct ackcb {
    void (*done)(struct rq *q, bool ok, void *arg);
    void *arg;
};

static void on_script_ack(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    struct ackcb cb = *(struct ackcb *)priv;

    free(priv);
    /* NOSCRIPT: nothing was deleted, the ack goes again once the scripts
     * are back; any other error reply is final */
    if (r && sl__rq_script_error(q, q->cmd, r, "acknowledging")) {
        cb.done(q, !(r->str && strncmp(r->str, "NOSCRIPT", 8) == 0), cb.arg);
        return;
    }
    cb.done(q, r != NULL, cb.arg);
}

void sl__rq_script_ack(struct rq *q, int argc, const char **argv,
                   void (*done)(struct rq *q, bool ok, void *arg), void *arg)
{
    struct ackcb *cb = sl_malloc(sizeof(*cb));

    cb->done = done;
    cb->arg = arg;
    if (rq_cmd(q->cmd, on_script_ack, cb, argc, argv, NULL) != 0) {
        free(cb);
        done(q, false, arg);
    }
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */

static void collect(void *arg, struct sl_metrics *m)
{
    struct rq *q = arg;
    const char *name = q->conf->name;
    char lv[200];
    static const char *const kinds[] = { "received", "deleted", "redriven", "released",
                                         "reclaimed", "filtered" };
    const uint64_t v[] = { q->n_received, q->n_deleted, q->n_redriven, q->n_released,
                           q->n_reclaimed, q->s->filtered };

    (void)m;
    sl_metric_set(q->m_depth, name, q->g_depth);
    sl_metric_set(q->m_pending, name, q->g_pending);
    sl_metric_set(q->m_oldest, name, q->g_oldest_s);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        snprintf(lv, sizeof(lv), "%s" SL_METRIC_LV_SEP "%s", name, kinds[i]);
        sl_metric_set(q->m_msgs, lv, (double)v[i]);
    }
}

static void metrics_init(struct rq *q)
{
    struct sl_metrics *m = sl_engine_metrics(q->e);

    if (!m)
        return;
    q->m_depth = sl_metrics_family(m, "sluice_redis_queue_depth", SL_METRIC_GAUGE,
                                   "Messages waiting in a Redis queue, not yet received.",
                                   "source");
    q->m_pending = sl_metrics_family(m, "sluice_redis_pending", SL_METRIC_GAUGE,
                                     "Messages received from a Redis queue and not yet "
                                     "deleted (in flight, failed or delayed).", "source");
    q->m_oldest = sl_metrics_family(m, "sluice_redis_oldest_message_age_seconds",
                                    SL_METRIC_GAUGE, "Age of the oldest message not yet "
                                    "deleted from a Redis queue.", "source");
    q->m_msgs = sl_metrics_family(m, "sluice_redis_messages_total", SL_METRIC_COUNTER,
                                  "Messages per Redis source since start, by outcome "
                                  "(received, deleted, redriven, released, reclaimed, "
                                  "filtered).", "source,outcome");
    sl_metrics_on_collect(m, collect, q);
}

/* ------------------------------------------------------------------ */
/* Ops                                                                 */

static int rq_start(struct sl_source *s, struct sl_err *err)
{
    struct rq *q = s->ctx;
    char shown[512];

    (void)err;
    q->started = true;
    sl_redis_conn_start(q->cmd);
    sl_redis_conn_start(q->rd);
    {
        struct timeval tv = { 0, RQ_TICK_MS * 1000 };
        evtimer_add(q->tick, &tv);
    }
    sl_redis_url_show(&q->u, shown, sizeof(shown));
    if (q->mode == &sl__rq_stream_mode)
        SL_INFO(q->inst, "reading stream %s at %s as %s in group %s (%zu lanes)", q->o->key,
                shown, q->consumer, q->o->group, q->nlanes);
    else
        SL_INFO(q->inst, "reading list %s at %s as %s (%zu lanes)", q->o->key, shown,
                q->consumer, q->nlanes);
    return 0;
}

static void rq_stop(struct sl_source *s)
{
    struct rq *q = s->ctx;

    q->stopping = true;
    if (!q->reading && !q->reclaiming && !q->stop_reported) {
        q->stop_reported = true;
        sl_source_stopped(s);
    }
}

static void rq_pause(struct sl_source *s)
{
    struct rq *q = s->ctx;

    q->paused = true;
}

static void rq_resume(struct sl_source *s)
{
    struct rq *q = s->ctx;

    q->paused = false;
    fetch_more(q);
}

static void rq_free(struct sl_source *s)
{
    struct rq *q = s ? s->ctx : NULL;
    struct rq_ack *a;

    if (!q)
        return;
    if (sl_engine_metrics(q->e))
        sl_metrics_off_collect(sl_engine_metrics(q->e), collect, q);
    q->closing = true;
    sl_redis_conn_free(q->cmd); /* what is due sees NULL: the source is closing */
    sl_redis_conn_free(q->rd);
    q->cmd = q->rd = NULL;
    while ((a = TAILQ_FIRST(&q->acks))) {
        TAILQ_REMOVE(&q->acks, a, link);
        ack_free(a);
    }
    if (!TAILQ_EMPTY(&q->unsent))
        SL_WARN(q->inst, "redis was unreachable at shutdown: some acknowledgements were not "
                "sent; those messages come back after the visibility timeout");
    while ((a = TAILQ_FIRST(&q->unsent))) {
        TAILQ_REMOVE(&q->unsent, a, link);
        ack_free(a);
    }
    while (q->held_list) {
        struct held *h = q->held_list;
        q->held_list = h->next;
        h->r->handle = NULL;
        free(h);
    }
    if (q->tick)
        event_free(q->tick);
    if (q->kick)
        event_free(q->kick);
    if (q->rd_wait)
        event_free(q->rd_wait);
    sl_filter_free(q->filter);
    sl_redis_url_destroy(&q->u);
    free(q->lane_load);
    free(q->lane_name);
    free(q);
    s->ctx = NULL;
}

static const struct sl_poller_ops redis_ops = {
    .name = "redis",
    .klass = SL_CLASS_QUEUE,
    .start = rq_start,
    .stop = rq_stop,
    .event = rq_event,
    .checkpoint = rq_checkpoint,
    .release = rq_release,
    .pause = rq_pause,
    .resume = rq_resume,
    .free_record = rq_free_record,
    .free = rq_free,
};

int sl_redis_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                        struct sl_source **out, struct sl_err *err)
{
    struct rq *q;
    char why[SL_ERR_MSG_MAX], host[128];
    const struct sl_redis_opts *o = sl__redis_opts(c);

    if (!o->key || !o->key[0])
        return sl_err_set(err, SL_ECONFIG, false, "source %s: a redis source needs a key",
                          c->name);
    q = sl_calloc(1, sizeof(*q));
    if (sl_redis_url_parse(o->url, &q->u, why, sizeof(why)) != 0) {
        bool tls = o->url && strncasecmp(o->url, "rediss://", 9) == 0;
        sl_redis_url_destroy(&q->u);
        free(q);
        return sl_err_set(err, tls ? SL_EUNSUPPORTED : SL_ECONFIG, false, "source %s: %s",
                          c->name, why);
    }
    q->e = e;
    q->base = sl__engine_base(e);
    q->conf = c;
    q->o = o;
    q->mode = o->mode == SL_REDIS_LIST ? &sl__rq_list_mode : &sl__rq_stream_mode;
    q->starting_latest = c->starting_position == SL_START_LATEST;
    snprintf(q->inst, sizeof(q->inst), "source:%s", c->name);
    if (o->consumer && o->consumer[0]) {
        snprintf(q->consumer, sizeof(q->consumer), "%s", o->consumer);
    } else {
        uint32_t rnd = (uint32_t)sl_wall_ms() ^ ((uint32_t)getpid() << 16);
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "sluice");
        host[sizeof(host) - 1] = '\0';
        /* unique per run: a restarted instance is a new consumer, and the
         * old one's entries are reclaimed like any dead consumer's */
        snprintf(q->consumer, sizeof(q->consumer), "%s-%d-%04x", host, (int)getpid(),
                 rnd & 0xffff);
    }
    snprintf(q->region, sizeof(q->region), "%s", c->server->region);
    /* SQS's queue ARN: the key stands for the queue name (not the db) */
    snprintf(q->arn, sizeof(q->arn), "arn:aws:sqs:%s:%s:%s", q->region, c->server->account_id,
             o->key);
    if (c->filter_criteria) {
        char msg[512];
        if (sl_filter_compile(c->filter_criteria, &q->filter, msg, sizeof(msg)) != 0) {
            sl_redis_url_destroy(&q->u);
            free(q);
            return sl_err_set(err, SL_ECONFIG, false, "source %s: filter_criteria: %s", c->name,
                              msg);
        }
    }
    q->nlanes = o->maximum_concurrency > 0 ? (size_t)o->maximum_concurrency : 1;
    q->lane_load = sl_calloc(q->nlanes, sizeof(*q->lane_load));
    q->lane_name = sl_calloc(q->nlanes, sizeof(*q->lane_name));
    for (size_t i = 0; i < q->nlanes; i++)
        snprintf(q->lane_name[i], sizeof(q->lane_name[i]), "%u", (unsigned)(i % 100000));
    q->reclaim_every = c->visibility_timeout_ms / 4;
    if (q->reclaim_every > 1000)
        q->reclaim_every = 1000;
    if (q->reclaim_every < RQ_TICK_MS)
        q->reclaim_every = RQ_TICK_MS;
    q->beat_every = c->visibility_timeout_ms / 3;
    if (q->beat_every < 1000)
        q->beat_every = 1000;
    q->next_beat = (int64_t)sl_mono_ms() + q->beat_every;
    TAILQ_INIT(&q->acks);
    TAILQ_INIT(&q->unsent);
    q->tick = event_new(q->base, -1, EV_PERSIST, on_tick, q);
    q->kick = event_new(q->base, -1, 0, on_kick, q);
    q->rd_wait = evtimer_new(q->base, on_rd_wait, q);
    {
        struct sl_redis_conn_conf cc = {
            .base = q->base, .url = &q->u, .inst = q->inst, .name = "command connection",
            .dbg = SL_DBG_REDIS, .connect_timeout_ms = RQ_CONNECT_MS,
            .reply_timeout_ms = RQ_CMD_TIMEOUT_MS, .backoff_base_ms = RECONNECT_BASE_MS,
            .backoff_cap_ms = RECONNECT_CAP_MS, .setup = cmd_setup, .up = cmd_up, .arg = q,
        };
        q->cmd = sl_redis_conn_new(&cc);
        cc.name = "reader connection";
        cc.reply_timeout_ms = RQ_BLOCK_MS + RQ_CMD_TIMEOUT_MS;
        cc.setup = NULL;
        cc.up = rd_up;
        q->rd = sl_redis_conn_new(&cc);
    }
    q->s = sl_engine_add_source(e, c, &redis_ops, q);
    metrics_init(q);
    *out = q->s;
    return 0;
}
