/* Kafka poller: a librdkafka consumer group member feeding the outcome
 * engine, one lane per partition (or per partition and key hash with
 * parallelization_factor).
 *
 * Loop integration: the main queue is forwarded to the consumer queue,
 * which writes a byte to a pipe when it becomes non-empty
 * (rd_kafka_queue_io_event_enable); the pipe's read event drains it with
 * rd_kafka_consume_batch_queue, which also serves rebalances, errors and
 * logs on the loop thread. A 1 s timer keeps serving the queue while
 * every partition is paused (max.poll.interval.ms).
 *
 * Flow control: the loop stops draining the consumer queue while the
 * partitions that flow hold hold_max records not yet final each on
 * average, or one of them twice part_max (librdkafka keeps prefetching up to
 * its queued.* limits, so the next records are already there when
 * draining resumes). Each freed record while held re-checks, from the
 * loop: the queue's wake-up pipe is only written when the queue goes from
 * empty to non-empty, so nothing else would resume the draining. The
 * budget is shared because librdkafka hands out a partition's records in
 * fetch-sized runs: a per-partition limit would stop everything while one
 * partition is ahead and the others are starving.
 * Pausing a partition in librdkafka costs about a second after each
 * resume before the next fetch (librdkafka 2.0), which capped throughput
 * at one burst per second; it is kept for a partition that is full
 * (hold_max) and has had no record final for STUCK_MS (its batch keeps
 * failing), so that the others keep flowing: draining stops when the
 * flowing partitions hold hold_max each on average, so a stuck one
 * reaches hold_max before the others starve.
 *
 * Offsets: enable.auto.offset.store=false; a position is stored and
 * committed (asynchronously, as it moves; auto-commit and the close flush
 * stay as a backstop) only up to the first record whose outcome is not
 * final, per partition (offsets.c).
 *
 * Rebalance: cooperative-sticky, so a rebalance only stops the partitions
 * that move while the others keep flowing. A revoked partition stops
 * fetching, its waiting records are dropped, batches in flight get a
 * bounded time to finish, what finished is committed, and only then is
 * the partition released (the group waits for the unassign call). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sluice/clock.h"
#include "sluice/filter.h"
#include "sluice/hash.h"
#include "sluice/invoke.h"
#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/pollers.h"
#include "conf.h"
#include "internal.h"

#define MSGS_MAX        1000     /* messages per rd_kafka_consume_batch_queue */
#define ROUNDS          2        /* batches per wake-up before yielding to the loop: results
                                    * and frame writes wait while records are built */
#define REVOKE_WAIT_MS  30000    /* longest a revoke waits for batches in flight */
#define PART_BYTES_MAX  (16u * 1024 * 1024) /* outstanding bytes that make one partition full */
#define STUCK_MS        1000     /* full this long: paused in librdkafka */
#define ERR_EVERY_MS    30000    /* repeat the same broker/topic error at most this often */

struct kafka;

/* A release in progress (one rebalance revoke). */
struct revoke {
    struct kafka                    *k;
    rd_kafka_topic_partition_list_t *list;
    size_t                           waiting;   /* partitions with work in flight, +1 while arming */
    bool                             lost;      /* the group says they are gone: commit nothing */
    bool                             finished;  /* released; freed once `waiting` is 0 */
    struct event                    *timer;
    struct revoke                   *next;      /* finished ones still waiting */
};

/* AT_TIMESTAMP: committed offsets and offsets for the time, looked up on a
 * thread (both are blocking librdkafka calls) before the assign. */
struct seek_job {
    struct kafka                    *k;
    rd_kafka_topic_partition_list_t *list;
    pthread_t                        thread;
    char                             why[256];  /* non-empty: lookup failed */
};

struct kafka {
    struct sl_source            *s;
    const struct sl_source_conf *c;
    const struct sl_kafka_opts  *o;             /* c->opts */
    struct event_base           *base;
    rd_kafka_t                  *rk;
    rd_kafka_queue_t            *q;
    int                          wake[2];       /* consumer queue wake-ups */
    int                          jobfd[2];      /* seek job finished */
    struct event                *ev_wake, *ev_more, *ev_tick, *ev_job, *ev_stuck;
    struct sl_filter            *filter;
    bool                         filter_value;  /* a pattern reads the value */
    bool                         filter_key;    /* a pattern reads the key */
    char                        *bootstrap_json;
    char                         group[256];
    int64_t                      start_ts_ms;   /* AT_TIMESTAMP */
    size_t                       part_max;      /* twice this held by one partition: hold */
    size_t                       hold_max;      /* per flowing partition: stop draining */
    bool                         stopping, engine_paused;
    bool                         held;          /* a partition is full: queue not drained */
    struct kpart               **parts;
    size_t                       nparts;
    struct revoke               *rv;            /* the release in progress */
    struct revoke               *rv_done;       /* released on timeout, lanes still busy */
    struct seek_job             *job;
    int64_t                      err_ms;        /* last broker/topic error logged */
    char                         err_last[512];
    struct sl_metric            *m_lag, *m_age;
    rd_kafka_message_t          *msgs[MSGS_MAX];
};

static void consume(struct kafka *k);

/* ------------------------------------------------------------------ */
/* Partitions                                                          */

static const char *conf_topic(struct kafka *k, const char *name)
{
    for (size_t i = 0; i < k->o->topics.n; i++)
        if (strcmp(k->o->topics.v[i], name) == 0)
            return k->o->topics.v[i];
    return NULL;
}

static struct kpart *part_find(struct kafka *k, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i]->partition == partition && strcmp(k->parts[i]->topic, topic) == 0)
            return k->parts[i];
    return NULL;
}

static struct kpart *part_get(struct kafka *k, const char *topic, int32_t partition)
{
    struct kpart *p = part_find(k, topic, partition);
    const char *t;

    if (p || !(t = conf_topic(k, topic)))
        return p;
    p = sl_calloc(1, sizeof(*p));
    p->topic = t;
    p->partition = partition;
    snprintf(p->lane, sizeof(p->lane), "%s-%d", t, (int)partition);
    p->last_ts = -1;
    sl__kp_reset(p);
    k->parts = sl_realloc(k->parts, (k->nparts + 1) * sizeof(*k->parts));
    k->parts[k->nparts++] = p;
    return p;
}

static void part_pause(struct kafka *k, struct kpart *p, bool pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    if (pause)
        rd_kafka_pause_partitions(k->rk, l);
    else
        rd_kafka_resume_partitions(k->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Hand librdkafka the committable position when it moved. */
static void part_store(struct kafka *k, struct kpart *p)
{
    int64_t pos = sl__kp_position(p);
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t e;

    if (!p->assigned || pos < 0 || pos <= p->stored)
        return;
    l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = pos;
    e = rd_kafka_offsets_store(k->rk, l);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && l->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->stored = pos;
        /* committed now rather than at the next auto-commit: after a
         * crash only the batches that were in flight come again */
        rd_kafka_commit(k->rk, l, 1);
    } else
        SL_DEBUG(SL_DBG_KAFKA, k->s->inst, "cannot store offset %lld for %s: %s",
                 (long long)pos, p->lane,
                 rd_kafka_err2str(e ? e : l->elems[0].err));
    rd_kafka_topic_partition_list_destroy(l);
}

/* Full: holds its share of what stops draining. A full partition with no
 * record final for STUCK_MS is paused (on_stuck), so it cannot keep the
 * others from being drained. */
static bool part_full(const struct kafka *k, const struct kpart *p)
{
    return p->outstanding >= k->hold_max || p->out_bytes >= PART_BYTES_MAX / 2;
}

/* ------------------------------------------------------------------ */
/* Records lost before they could be read                              */

struct lost {
    struct kafka *k;
    struct kpart *p;
    uint32_t      gen;
    int64_t       offset;
};

static void on_lost_reported(void *arg, int rc)
{
    struct lost *l = arg;

    if (rc == 0 && l->p->gen == l->gen && l->p->assigned) {
        sl__kp_finish(l->p, l->offset);
        part_store(l->k, l->p);
    }
    free(l);
}

/* Offsets [from, to] will never be delivered: tell on_failure; the
 * position passes them once that write is confirmed. `ts` is their
 * timestamp and `size` their size as JSON when known (one record), else
 * -1 and 0. */
static void report_lost(struct kafka *k, struct kpart *p, int64_t from, int64_t to, int64_t ts,
                        size_t size, const char *condition, const char *why)
{
    struct lost *l = sl_calloc(1, sizeof(*l));
    char a[24], b[24];

    l->k = k;
    l->p = p;
    l->gen = p->gen;
    l->offset = from;
    sl__kp_track(p, from);
    if (to + 1 > p->next)
        p->next = to + 1;
    snprintf(a, sizeof(a), "%lld", (long long)from);
    snprintf(b, sizeof(b), "%lld", (long long)to);
    sl_source_report_lost(k->s, p->lane, a, b, (size_t)(to - from + 1), condition, why,
                          sl__kr_batch_info(k->o->brokers ? k->o->brokers : "", p->lane, a, b,
                                            ts, ts, (size_t)(to - from + 1), size),
                          on_lost_reported, l);
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */

static void log_err(struct kafka *k, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Errors repeat while a broker or topic stays bad: the same text is
 * logged once per ERR_EVERY_MS. */
static void log_err(struct kafka *k, bool error, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int64_t now = sl_wall_ms();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, k->err_last) == 0 && now - k->err_ms < ERR_EVERY_MS)
        return;
    snprintf(k->err_last, sizeof(k->err_last), "%s", msg);
    k->err_ms = now;
    if (error)
        SL_ERROR(k->s->inst, "%s", msg);
    else
        SL_WARN(k->s->inst, "%s", msg);
}

static void on_message_error(struct kafka *k, const rd_kafka_message_t *m)
{
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;

    switch (m->err) {
    case RD_KAFKA_RESP_ERR__PARTITION_EOF:
        return;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        log_err(k, true, "topic %s does not exist on %s (create it first: brokers here do not "
                "auto-create): %s", topic ? topic : "?", k->o->brokers,
                rd_kafka_message_errstr(m));
        return;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
        log_err(k, true, "not authorized: %s", rd_kafka_message_errstr(m));
        return;
    default:
        log_err(k, false, "consumer: %s%s%s", topic ? topic : "", topic ? ": " : "",
                rd_kafka_message_errstr(m));
    }
}

static void on_message(struct kafka *k, rd_kafka_message_t *m)
{
    struct kpart *p;
    struct krec *kr;
    size_t len;

    if (m->err) {
        on_message_error(k, m);
        return;
    }
    p = part_find(k, rd_kafka_topic_name(m->rkt), m->partition);
    if (!p || !p->assigned || p->revoking)
        return; /* fetched before a release: not ours any more */
    if (p->lost_from >= 0) {
        if (m->offset > p->lost_from)
            report_lost(k, p, p->lost_from, m->offset - 1, -1, 0, "RecordExpired",
                        "deleted by the broker's retention before it was read");
        p->lost_from = -1;
    }
    if (m->offset < p->next)
        return; /* already seen (a fetch repeated after a pause) */
    kr = sl__kr_new(m);
    len = kr->r.len;
    if (k->filter && !sl__kr_filter_pass(k->filter, k->filter_value, k->filter_key, kr->r.json, len,
                                         m)) {
        free(kr);
        k->s->filtered++;
        p->next = m->offset + 1;
        return;
    }
    if (len > SL_PAYLOAD_MAX - SL_EVENT_SLACK) {
        char why[128];
        int64_t ts = kr->r.timestamp_ms;
        free(kr);
        snprintf(why, sizeof(why), "the record is %zu bytes as JSON; an invocation takes at most "
                 "%d", len, SL_PAYLOAD_MAX);
        report_lost(k, p, m->offset, m->offset, ts, len, "MaximumPayloadSizeExceeded", why);
        return;
    }
    kr->p = p;
    kr->r.partition = p->lane;
    kr->gen = p->gen;
    kr->r.receive_count = 1;
    sl__kp_track(p, m->offset);
    p->outstanding++;
    p->out_bytes += len;
    if (k->c->parallelization_factor > 1) {
        char lane[sizeof(p->lane) + 16];
        uint32_t h = m->key ? sl_fnv1a32(SL_FNV32_INIT, m->key, m->key_len) : 0;
        snprintf(lane, sizeof(lane), "%s#%u", p->lane,
                 (unsigned)(h % (uint32_t)k->c->parallelization_factor));
        sl_source_push(k->s, lane, &kr->r);
    } else {
        sl_source_push(k->s, p->lane, &kr->r);
    }
    if (!p->full && p->assigned && part_full(k, p)) {
        struct timeval tv = { STUCK_MS / 1000, (STUCK_MS % 1000) * 1000 };
        p->full = true;
        p->since_ms = (int64_t)sl_mono_ms();
        if (!evtimer_pending(k->ev_stuck, NULL))
            evtimer_add(k->ev_stuck, &tv);
    }
}

/* True when the partitions that flow hold enough: draining waits. */
static bool hold_needed(const struct kafka *k)
{
    size_t total = 0, flowing = 0;

    for (size_t i = 0; i < k->nparts; i++) {
        const struct kpart *p = k->parts[i];
        if (!p->assigned || p->revoking || p->stuck)
            continue;
        if (p->outstanding >= 2 * k->part_max || p->out_bytes >= PART_BYTES_MAX)
            return true;
        total += p->outstanding;
        flowing++;
    }
    return total >= k->hold_max * (flowing ? flowing : 1);
}

/* Something that decides the hold changed: re-check from the loop (no
 * wake-up comes for what is already queued). */
static void hold_update(struct kafka *k)
{
    if (k->held && !k->stopping && k->ev_more)
        event_active(k->ev_more, 0, 0);
}

/* A full partition with no record final for STUCK_MS is not just behind:
 * its batch keeps failing. Pause it in librdkafka; the others flow. */
static void on_stuck(evutil_socket_t fd, short what, void *arg)
{
    struct kafka *k = arg;
    int64_t now = (int64_t)sl_mono_ms(), next = -1;

    (void)fd, (void)what;
    if (k->stopping || !k->rk)
        return;
    for (size_t i = 0; i < k->nparts; i++) {
        struct kpart *p = k->parts[i];
        if (!p->assigned || p->revoking || !p->full || p->stuck)
            continue;
        if (now - p->since_ms >= STUCK_MS) {
            p->stuck = true;
            if (!k->engine_paused)
                part_pause(k, p, true);
            SL_INFO(k->s->inst, "paused %s: %zu records not yet final", p->lane, p->outstanding);
        } else if (next < 0 || p->since_ms + STUCK_MS - now < next) {
            next = p->since_ms + STUCK_MS - now;
        }
    }
    if (next >= 0) {
        struct timeval tv = { (time_t)(next / 1000), (suseconds_t)(next % 1000) * 1000 };
        evtimer_add(k->ev_stuck, &tv);
    }
    hold_update(k);
}

static void consume(struct kafka *k)
{
    for (int round = 0; round < ROUNDS; round++) {
        ssize_t n;

        if (!k->rk || k->stopping)
            return;
        k->held = hold_needed(k);
        if (k->held)
            return;
        n = rd_kafka_consume_batch_queue(k->q, 0, k->msgs, MSGS_MAX);
        if (n < 0) {
            log_err(k, false, "consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            on_message(k, k->msgs[i]);
            rd_kafka_message_destroy(k->msgs[i]);
        }
        /* filtered records move positions too */
        if (n > 0)
            for (size_t i = 0; i < k->nparts; i++)
                part_store(k, k->parts[i]);
        if (n < MSGS_MAX)
            return;
    }
    /* more is queued: come back after the loop served others */
    event_active(k->ev_more, 0, 0);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    consume(arg);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    consume(arg);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    consume(arg);
}

/* ------------------------------------------------------------------ */
/* Rebalance                                                           */

static bool cooperative(struct kafka *k)
{
    return strcmp(rd_kafka_rebalance_protocol(k->rk), "COOPERATIVE") == 0;
}

static void list_names(const rd_kafka_topic_partition_list_t *l, char *buf, size_t n)
{
    size_t o = 0;

    buf[0] = '\0';
    for (int i = 0; i < l->cnt && o + 1 < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s-%d", i ? " " : "", l->elems[i].topic,
                              (int)l->elems[i].partition);
    if (o >= n && n > 4)
        memcpy(buf + n - 4, "...", 4);
}

static void do_assign(struct kafka *k, rd_kafka_topic_partition_list_t *l)
{
    char names[512];

    for (int i = 0; i < l->cnt; i++) {
        struct kpart *p = part_get(k, l->elems[i].topic, l->elems[i].partition);
        if (!p)
            continue;
        p->gen++;
        sl__kp_reset(p);
        p->assigned = true;
        p->revoking = false;
    }
    if (cooperative(k)) {
        rd_kafka_error_t *e = rd_kafka_incremental_assign(k->rk, l);
        if (e) {
            SL_ERROR(k->s->inst, "cannot take partitions: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_assign(k->rk, l);
    }
    if (k->engine_paused)
        rd_kafka_pause_partitions(k->rk, l);
    hold_update(k);
    list_names(l, names, sizeof(names));
    SL_INFO(k->s->inst, "rebalance: assigned %d partition(s): %s", l->cnt, names);
}

static void *seek_lookup(void *arg)
{
    struct seek_job *j = arg;
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(j->list->cnt);
    rd_kafka_resp_err_t e;

    e = rd_kafka_committed(j->k->rk, j->list, 10000);
    if (e) {
        snprintf(j->why, sizeof(j->why), "cannot read committed offsets: %s", rd_kafka_err2str(e));
        goto out;
    }
    for (int i = 0; i < j->list->cnt; i++)
        if (j->list->elems[i].offset < 0)
            rd_kafka_topic_partition_list_add(t, j->list->elems[i].topic,
                                              j->list->elems[i].partition)->offset =
                j->k->start_ts_ms;
    if (t->cnt > 0) {
        e = rd_kafka_offsets_for_times(j->k->rk, t, 10000);
        if (e) {
            snprintf(j->why, sizeof(j->why), "cannot look up offsets for the starting time: %s",
                     rd_kafka_err2str(e));
            goto out;
        }
        for (int i = 0; i < t->cnt; i++) {
            rd_kafka_topic_partition_t *d = rd_kafka_topic_partition_list_find(
                j->list, t->elems[i].topic, t->elems[i].partition);
            int64_t lo, hi;
            /* no record at or after the time: start at the end as it is
             * now, not as it will be when fetching starts, or a record
             * produced in between would be skipped */
            if (t->elems[i].offset >= 0)
                d->offset = t->elems[i].offset;
            else if (rd_kafka_query_watermark_offsets(j->k->rk, d->topic, d->partition, &lo,
                                                      &hi, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
                d->offset = hi;
            else
                d->offset = RD_KAFKA_OFFSET_END;
        }
    }
out:
    rd_kafka_topic_partition_list_destroy(t);
    if (write(j->k->jobfd[1], "j", 1) < 0) {
        /* the loop also polls for the job at stop */
    }
    return NULL;
}

static void on_job(evutil_socket_t fd, short what, void *arg)
{
    struct kafka *k = arg;
    struct seek_job *j = k->job;
    char c;

    (void)what;
    while (read(fd, &c, 1) > 0) {
    }
    if (!j)
        return;
    pthread_join(j->thread, NULL);
    k->job = NULL;
    if (j->why[0]) {
        /* committed offsets or the stored ones apply */
        SL_WARN(k->s->inst, "AT_TIMESTAMP: %s; starting from the committed or earliest offsets",
                j->why);
        for (int i = 0; i < j->list->cnt; i++)
            j->list->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    }
    if (!k->stopping)
        do_assign(k, j->list);
    rd_kafka_topic_partition_list_destroy(j->list);
    free(j);
}

static void revoke_free(struct revoke *rv)
{
    rd_kafka_topic_partition_list_destroy(rv->list);
    free(rv);
}

static void revoke_finish(struct revoke *rv)
{
    struct kafka *k = rv->k;
    rd_kafka_topic_partition_list_t *commit = rd_kafka_topic_partition_list_new(rv->list->cnt);
    char names[512];

    if (rv->timer)
        event_free(rv->timer);
    rv->timer = NULL;
    rv->finished = true;
    for (int i = 0; i < rv->list->cnt; i++) {
        struct kpart *p = part_find(k, rv->list->elems[i].topic, rv->list->elems[i].partition);
        if (!p)
            continue;
        if (!rv->lost) {
            part_store(k, p);
            if (p->stored >= 0)
                rd_kafka_topic_partition_list_add(commit, p->topic, p->partition)->offset =
                    p->stored;
        }
        /* batches still running end unheard: their records come again */
        p->gen++;
        p->assigned = false;
        p->revoking = false;
        sl__kp_reset(p);
    }
    if (commit->cnt > 0)
        rd_kafka_commit(k->rk, commit, 1);
    rd_kafka_topic_partition_list_destroy(commit);
    /* pausing is a property of the partition, not of this assignment */
    rd_kafka_resume_partitions(k->rk, rv->list);
    if (cooperative(k)) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(k->rk, rv->list);
        if (e) {
            SL_ERROR(k->s->inst, "cannot release partitions: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_assign(k->rk, NULL);
    }
    hold_update(k);
    list_names(rv->list, names, sizeof(names));
    SL_INFO(k->s->inst, "rebalance: %s %d partition(s): %s", rv->lost ? "lost" : "released",
            rv->list->cnt, names);
    if (k->rv == rv)
        k->rv = NULL;
    if (rv->waiting > 0) {
        /* batches still running will report to it: keep it until then */
        rv->next = k->rv_done;
        k->rv_done = rv;
        return;
    }
    revoke_free(rv);
}

static void revoke_lane_done(void *arg)
{
    struct revoke *rv = arg;
    struct kafka *k = rv->k;

    if (--rv->waiting > 0)
        return;
    if (!rv->finished) {
        revoke_finish(rv);
        return;
    }
    for (struct revoke **pp = &k->rv_done; *pp; pp = &(*pp)->next)
        if (*pp == rv) {
            *pp = rv->next;
            break;
        }
    revoke_free(rv);
}

static void on_revoke_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct revoke *rv = arg;

    (void)fd, (void)what;
    SL_WARN(rv->k->s->inst, "rebalance: batches still running after the wait; releasing "
            "anyway (their records are delivered again)");
    revoke_finish(rv);
}

static void do_revoke(struct kafka *k, const rd_kafka_topic_partition_list_t *l, bool lost)
{
    struct revoke *rv = sl_calloc(1, sizeof(*rv));
    int64_t wait_ms = k->s->fn ? k->s->fn->timeout_ms + 2000 : REVOKE_WAIT_MS;
    struct timeval tv;

    if (wait_ms > REVOKE_WAIT_MS)
        wait_ms = REVOKE_WAIT_MS;
    rv->k = k;
    rv->list = rd_kafka_topic_partition_list_copy(l);
    rv->lost = lost;
    rv->waiting = 1;
    k->rv = rv;
    rd_kafka_pause_partitions(k->rk, rv->list);
    for (int i = 0; i < rv->list->cnt; i++) {
        struct kpart *p = part_find(k, rv->list->elems[i].topic, rv->list->elems[i].partition);
        if (!p || !p->assigned)
            continue;
        p->revoking = true;
        rv->waiting++;
        sl_source_drop_lanes(k->s, p->lane, revoke_lane_done, rv);
    }
    hold_update(k);
    if (--rv->waiting == 0 || k->stopping) {
        revoke_finish(rv);
        return;
    }
    tv.tv_sec = (time_t)(wait_ms / 1000);
    tv.tv_usec = (suseconds_t)(wait_ms % 1000) * 1000;
    rv->timer = evtimer_new(k->base, on_revoke_timeout, rv);
    evtimer_add(rv->timer, &tv);
    SL_INFO(k->s->inst, "rebalance: releasing %d partition(s) once their batches in flight end",
            rv->list->cnt);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *l, void *opaque)
{
    struct kafka *k = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (k->c->starting_position == SL_START_AT_TIMESTAMP && !k->stopping && !k->job) {
            struct seek_job *j = sl_calloc(1, sizeof(*j));
            j->k = k;
            j->list = rd_kafka_topic_partition_list_copy(l);
            if (pthread_create(&j->thread, NULL, seek_lookup, j) == 0) {
                k->job = j;
                return; /* the assign follows when the lookup is done */
            }
            rd_kafka_topic_partition_list_destroy(j->list);
            free(j);
        }
        do_assign(k, l);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        do_revoke(k, l, rd_kafka_assignment_lost(k->rk));
    } else {
        SL_ERROR(k->s->inst, "rebalance: %s", rd_kafka_err2str(err));
        if (cooperative(k))
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(k->rk, l));
        else
            rd_kafka_assign(k->rk, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* librdkafka callbacks (served on the loop by consume)                 */

static void on_error(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
    struct kafka *k = opaque;

    (void)rk;
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[256];
        rd_kafka_fatal_error(k->rk, buf, sizeof(buf));
        SL_ERROR(k->s->inst, "fatal consumer error: %s", buf);
        return;
    }
    log_err(k, e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || e == RD_KAFKA_RESP_ERR__AUTHENTICATION,
            "kafka %s: %s", rd_kafka_err2name(e), reason);
}

/* An offset reset after "offset out of range": the records between the
 * old position and where fetching resumes are gone (retention). The log
 * line is the only place librdkafka says where it was. */
static void note_offset_reset(struct kafka *k, const char *buf)
{
    const char *br, *at = strstr(buf, "(at ");
    char topic[256];
    struct kpart *p;
    long part;
    long long off;

    if (buf[0] == '[' && strstr(buf, "]: "))
        buf = strstr(buf, "]: ") + 3; /* "[thrd:main]: " */
    br = strstr(buf, " [");
    if (!br || !at || (size_t)(br - buf) >= sizeof(topic) || !strstr(buf, "out of range"))
        return;
    memcpy(topic, buf, (size_t)(br - buf));
    topic[br - buf] = '\0';
    part = strtol(br + 2, NULL, 10);
    at += 4;
    while (*at && (*at < '0' || *at > '9'))
        at++;
    if (!*at)
        return;
    off = strtoll(at, NULL, 10);
    p = part_find(k, topic, (int32_t)part);
    if (p && p->assigned && off >= 0 && p->lost_from < 0)
        p->lost_from = off;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct kafka *k = rd_kafka_opaque(rk);

    if (!k)
        return;
    if (strcmp(fac, "OFFSET") == 0 && strstr(buf, "offset reset"))
        note_offset_reset(k, buf);
    if (level <= 3)
        SL_ERROR(k->s->inst, "kafka %s: %s", fac, buf);
    else if (level == 4)
        SL_WARN(k->s->inst, "kafka %s: %s", fac, buf);
    else
        SL_DEBUG(SL_DBG_KAFKA, k->s->inst, "kafka %s: %s", fac, buf);
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *l, void *opaque)
{
    struct kafka *k = opaque;

    (void)rk, (void)l;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_err(k, false, "offset commit failed (retried at the next interval): %s",
                rd_kafka_err2str(err));
}

/* ------------------------------------------------------------------ */
/* Metrics                                                             */

static void collect(void *arg, struct sl_metrics *m)
{
    struct kafka *k = arg;
    int64_t now = sl_wall_ms();
    char lv[400];

    (void)m;
    for (size_t i = 0; i < k->nparts; i++) {
        struct kpart *p = k->parts[i];
        int64_t lo = -1, hi = -1, pos;
        snprintf(lv, sizeof(lv), "%s" SL_METRIC_LV_SEP "%s", k->c->name, p->lane);
        if (!p->assigned || !k->rk) {
            sl_metric_set(k->m_lag, lv, 0);
            continue;
        }
        rd_kafka_get_watermark_offsets(k->rk, p->topic, p->partition, &lo, &hi);
        pos = sl__kp_position(p);
        if (pos < 0)
            pos = lo;
        sl_metric_set(k->m_lag, lv, hi >= 0 && pos >= 0 && hi > pos ? (double)(hi - pos) : 0);
        sl_metric_set(k->m_age, lv, p->last_ts >= 0 ? (double)(now - p->last_ts) / 1000.0 : 0);
    }
}

/* ------------------------------------------------------------------ */
/* Poller ops                                                          */

static char *k_event(struct sl_source *s, struct sl_record *const *r, size_t n, size_t *len)
{
    struct kafka *k = s->ctx;
    return n ? sl__kr_event(k->bootstrap_json, r, n, len) : NULL;
}

static void k_checkpoint(struct sl_source *s, struct sl_record *const *r, size_t n)
{
    struct kafka *k = s->ctx;
    struct kpart *p = NULL;

    for (size_t i = 0; i < n; i++) {
        struct krec *kr = (struct krec *)r[i];
        if (kr->gen != kr->p->gen || !kr->p->assigned)
            continue; /* released meanwhile: another member has it now */
        sl__kp_finish(kr->p, kr->offset);
        kr->p->last_ts = kr->r.timestamp_ms;
        p = kr->p;
    }
    if (p && p->full)
        p->since_ms = (int64_t)sl_mono_ms();
    if (p && k->rk)
        part_store(k, p);
}

static void k_release(struct sl_source *s, struct sl_record *const *r, size_t n, int64_t delay)
{
    /* streams are never released record by record */
    (void)s, (void)r, (void)n, (void)delay;
}

/* Lambda's KafkaBatchInfo: a batch is one partition's (its lanes are). */
static void k_batch_info(struct sl_source *s, const char *lane, struct sl_record *const *r,
                         size_t n, size_t payload_size, json_t *rec)
{
    struct kafka *k = s->ctx;

    json_object_update_new(rec, sl__kr_batch_info(k->o->brokers ? k->o->brokers : "",
                                                  r[0]->partition ? r[0]->partition : lane,
                                                  r[0]->id, r[n - 1]->id,
                                                  r[0]->timestamp_ms, r[n - 1]->timestamp_ms, n,
                                                  payload_size));
}

static void k_free_record(struct sl_source *s, struct sl_record *r)
{
    struct kafka *k = s->ctx;
    struct krec *kr = (struct krec *)r;
    struct kpart *p = kr->p;

    if (kr->gen == p->gen && p->outstanding > 0) {
        p->outstanding--;
        p->out_bytes -= r->len < p->out_bytes ? r->len : p->out_bytes;
        if (p->full && p->outstanding <= k->hold_max / 2 && p->out_bytes <= PART_BYTES_MAX / 4 &&
            p->assigned && !p->revoking && k->rk) {
            p->full = false;
            if (p->stuck) {
                p->stuck = false;
                if (!k->engine_paused && !k->stopping) {
                    part_pause(k, p, false);
                    SL_INFO(k->s->inst, "resumed %s: %zu records not yet final", p->lane,
                            p->outstanding);
                }
            }
        }
        hold_update(k);
    }
    free(kr); /* its JSON with it */
}

static void k_pause(struct sl_source *s)
{
    struct kafka *k = s->ctx;
    rd_kafka_topic_partition_list_t *l = NULL;

    k->engine_paused = true;
    if (k->rk && rd_kafka_assignment(k->rk, &l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_pause_partitions(k->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    SL_INFO(s->inst, "paused: %zu bytes of records not yet final", s->pending_bytes);
}

static void k_resume(struct sl_source *s)
{
    struct kafka *k = s->ctx;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);

    k->engine_paused = false;
    for (size_t i = 0; i < k->nparts; i++) {
        struct kpart *p = k->parts[i];
        if (p->assigned && !p->revoking && !p->stuck)
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    }
    if (k->rk && !k->stopping)
        rd_kafka_resume_partitions(k->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    SL_INFO(s->inst, "resumed: %zu bytes of records not yet final", s->pending_bytes);
}

static int conf_set(rd_kafka_conf_t *kc, const char *inst, const char *key, const char *val,
                    struct sl_err *err)
{
    char why[768];

    if (sl_kafka_conf_set(kc, key, val, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "%s: %s", inst, why);
    return 0;
}

/* librdkafka's configuration for this source; NULL with `err` set. */
static rd_kafka_conf_t *make_conf(struct kafka *k, struct sl_err *err)
{
    const struct sl_source_conf *c = k->c;
    const struct sl_kafka_opts *o = k->o;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char client[300];
    const char *const fixed[][2] = {
        { "bootstrap.servers", o->brokers },
        { "group.id", k->group },
        { "client.id", client },
        { "enable.auto.offset.store", "false" },
        { "enable.auto.commit", "true" },
        /* short: after a crash, what finished since the last commit comes again */
        { "auto.commit.interval.ms", "200" },
        { "auto.offset.reset", c->starting_position == SL_START_LATEST ? "latest" : "earliest" },
        { "partition.assignment.strategy", "cooperative-sticky" },
        { "enable.partition.eof", "false" },
        { "log.queue", "true" },
        { "max.poll.interval.ms", "300000" },
        /* a partition resumed after backpressure waits for the fetch the
         * broker is holding: keep that short */
        { "fetch.wait.max.ms", "100" },
        /* librdkafka 2.0 counts this on the shared consumer queue and,
         * once it is reached, looks again only about a second later: the
         * prefetch must hold more than a second of what sluice processes
         * (about 300,000 records/s here), or the pipeline runs dry every
         * second. queued.max.messages.kbytes (64 MB) still bounds it. */
        { "queued.min.messages", "500000" },
    };

    snprintf(client, sizeof(client), "sluice-%s", c->name);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (conf_set(kc, k->s->inst, fixed[i][0], fixed[i][1], err))
            goto fail;
    for (size_t i = 0; i < o->kafka.n; i++) {
        const char *key = o->kafka.v[i].key;
        if (strcmp(key, "enable.auto.offset.store") == 0 || strcmp(key, "group.id") == 0 ||
            strcmp(key, "bootstrap.servers") == 0) {
            sl_err_set(err, SL_ECONFIG, false, "%s: kafka property %s is set by sluice (use "
                       "brokers / consumer_group_id)", k->s->inst, key);
            goto fail;
        }
        if (conf_set(kc, k->s->inst, key, o->kafka.v[i].value, err))
            goto fail;
    }
    rd_kafka_conf_set_opaque(kc, k);
    rd_kafka_conf_set_rebalance_cb(kc, on_rebalance);
    rd_kafka_conf_set_error_cb(kc, on_error);
    rd_kafka_conf_set_log_cb(kc, on_log);
    rd_kafka_conf_set_offset_commit_cb(kc, on_commit);
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

static int k_start(struct sl_source *s, struct sl_err *err)
{
    struct kafka *k = s->ctx;
    rd_kafka_conf_t *kc = make_conf(k, err);
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t e;
    char errstr[512];
    struct timeval sec = { 1, 0 };

    if (!kc)
        return err->code;
    k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr));
    if (!k->rk) {
        rd_kafka_conf_destroy(kc);
        return sl_err_set(err, SL_ECONFIG, false, "%s: cannot create the consumer: %s", s->inst,
                          errstr);
    }
    rd_kafka_set_log_queue(k->rk, NULL);
    rd_kafka_poll_set_consumer(k->rk);
    k->q = rd_kafka_queue_get_consumer(k->rk);
    if (pipe2(k->wake, O_NONBLOCK | O_CLOEXEC) != 0 || pipe2(k->jobfd, O_NONBLOCK | O_CLOEXEC) != 0)
        return sl_err_set(err, SL_EIO, true, "%s: pipe: %s", s->inst, strerror(errno));
    rd_kafka_queue_io_event_enable(k->q, k->wake[1], "w", 1);
    k->ev_wake = event_new(k->base, k->wake[0], EV_READ | EV_PERSIST, on_wake, k);
    k->ev_job = event_new(k->base, k->jobfd[0], EV_READ | EV_PERSIST, on_job, k);
    k->ev_more = event_new(k->base, -1, 0, on_more, k);
    k->ev_tick = event_new(k->base, -1, EV_PERSIST, on_tick, k);
    k->ev_stuck = evtimer_new(k->base, on_stuck, k);
    event_add(k->ev_wake, NULL);
    event_add(k->ev_job, NULL);
    event_add(k->ev_tick, &sec);
    topics = rd_kafka_topic_partition_list_new((int)k->o->topics.n);
    for (size_t i = 0; i < k->o->topics.n; i++)
        rd_kafka_topic_partition_list_add(topics, k->o->topics.v[i], RD_KAFKA_PARTITION_UA);
    e = rd_kafka_subscribe(k->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e)
        return sl_err_set(err, SL_ECONFIG, false, "%s: cannot subscribe: %s", s->inst,
                          rd_kafka_err2str(e));
    SL_INFO(s->inst, "consuming %zu topic(s) from %s as group %s (%s)", k->o->topics.n,
            k->o->brokers, k->group,
            k->c->starting_position == SL_START_LATEST ? "LATEST"
            : k->c->starting_position == SL_START_AT_TIMESTAMP ? "AT_TIMESTAMP" : "TRIM_HORIZON");
    return 0;
}

static void k_stop(struct sl_source *s)
{
    struct kafka *k = s->ctx;

    k->stopping = true;
    if (k->ev_wake)
        event_del(k->ev_wake);
    if (k->ev_tick)
        event_del(k->ev_tick);
    if (k->ev_more)
        event_del(k->ev_more);
    if (k->ev_stuck)
        event_del(k->ev_stuck);
    sl_source_stopped(s);
}

static void k_free(struct sl_source *s)
{
    struct kafka *k = s->ctx;

    if (sl_engine_metrics(s->engine))
        sl_metrics_off_collect(sl_engine_metrics(s->engine), collect, k);
    k->stopping = true;
    if (k->job) {
        pthread_join(k->job->thread, NULL);
        rd_kafka_topic_partition_list_destroy(k->job->list);
        free(k->job);
        k->job = NULL;
    }
    if (k->rv)
        revoke_finish(k->rv);
    if (k->rk) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
        rd_kafka_resp_err_t e;
        for (size_t i = 0; i < k->nparts; i++) {
            struct kpart *p = k->parts[i];
            part_store(k, p);
            if (p->assigned && p->stored >= 0)
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->stored;
        }
        /* the last positions, synchronously: nothing runs after this */
        if (l->cnt > 0 && (e = rd_kafka_commit(k->rk, l, 0)) != RD_KAFKA_RESP_ERR_NO_ERROR &&
            e != RD_KAFKA_RESP_ERR__NO_OFFSET)
            SL_WARN(s->inst, "final offset commit failed: %s (records after the last "
                    "commit are delivered again)", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_queue_io_event_enable(k->q, -1, NULL, 0);
        rd_kafka_consumer_close(k->rk);
        rd_kafka_queue_destroy(k->q);
        rd_kafka_destroy(k->rk);
        k->rk = NULL;
    }
    if (k->ev_wake)
        event_free(k->ev_wake);
    if (k->ev_job)
        event_free(k->ev_job);
    if (k->ev_more)
        event_free(k->ev_more);
    if (k->ev_tick)
        event_free(k->ev_tick);
    if (k->ev_stuck)
        event_free(k->ev_stuck);
    k->ev_more = NULL;
    for (int i = 0; i < 2; i++) {
        if (k->wake[i] >= 0)
            close(k->wake[i]);
        if (k->jobfd[i] >= 0)
            close(k->jobfd[i]);
    }
    /* records the engine still holds reference their partitions until
     * sl_engine_free frees them, which happens before this */
    while (k->rv_done) {
        struct revoke *rv = k->rv_done;
        k->rv_done = rv->next;
        revoke_free(rv);
    }
    for (size_t i = 0; i < k->nparts; i++)
        sl__kp_free(k->parts[i]);
    free(k->parts);
    sl_filter_free(k->filter);
    free(k->bootstrap_json);
    free(k);
}

static const struct sl_poller_ops kafka_ops = {
    .name = "kafka", .klass = SL_CLASS_STREAM, .start = k_start, .stop = k_stop,
    .event = k_event, .checkpoint = k_checkpoint, .release = k_release, .pause = k_pause,
    .resume = k_resume, .free_record = k_free_record, .free = k_free,
    .batch_info = k_batch_info,
};

/* Unix ms from starting_position_timestamp: ISO-8601 UTC or Unix seconds. */
static int parse_start_ts(const char *s, int64_t *ms)
{
    struct tm tm;
    char *end;
    long long v;

    if (!s)
        return -1;
    v = strtoll(s, &end, 10);
    if (end != s && *end == '\0' && v >= 0) {
        *ms = (int64_t)v * 1000;
        return 0;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || (*end != 'Z' && *end != '\0'))
        return -1;
    *ms = (int64_t)timegm(&tm) * 1000;
    return 0;
}

int sl_kafka_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                        struct sl_source **out, struct sl_err *err)
{
    struct kafka *k = sl_calloc(1, sizeof(*k));
    struct sl_metrics *m = sl_engine_metrics(e);
    char msg[512];

    k->c = c;
    k->o = sl__kafka_opts(c);
    k->base = sl__engine_base(e);
    k->wake[0] = k->wake[1] = k->jobfd[0] = k->jobfd[1] = -1;
    if (c->filter_criteria && sl_filter_compile(c->filter_criteria, &k->filter, msg,
                                                sizeof(msg)) != 0) {
        free(k);
        return sl_err_set(err, SL_ECONFIG, false, "source %s: filter_criteria: %s", c->name, msg);
    }
    k->filter_value = k->filter && sl_filter_targets(k->filter, "value");
    k->filter_key = k->filter && sl_filter_targets(k->filter, "key");
    if (c->starting_position == SL_START_AT_TIMESTAMP &&
        parse_start_ts(c->starting_position_timestamp, &k->start_ts_ms) != 0) {
        sl_filter_free(k->filter);
        free(k);
        return sl_err_set(err, SL_ECONFIG, false, "source %s: AT_TIMESTAMP needs "
                          "starting_position_timestamp (ISO-8601 UTC or Unix seconds)", c->name);
    }
    if (k->o->consumer_group_id)
        snprintf(k->group, sizeof(k->group), "%s", k->o->consumer_group_id);
    else
        snprintf(k->group, sizeof(k->group), "sluice-%s", c->name);
    k->bootstrap_json = sl__kr_json_string(k->o->brokers ? k->o->brokers : "");
    /* a partition retrying one batch queues this much, then stops fetching */
    k->part_max = (size_t)(8 * c->batch_size * c->parallelization_factor);
    if (k->part_max < 10000)
        k->part_max = 10000;
    /* enough for the next batches of every lane; more only spreads the
     * records over memory, and building an event from them then waits on
     * cache misses */
    k->hold_max = (size_t)(4 * c->batch_size * c->parallelization_factor);
    if (k->hold_max < 1000)
        k->hold_max = 1000;
    if (k->hold_max > k->part_max)
        k->hold_max = k->part_max;
    k->s = sl_engine_add_source(e, c, &kafka_ops, k);
    if (m) {
        k->m_lag = sl_metrics_family(m, "sluice_kafka_offset_lag", SL_METRIC_GAUGE,
                                     "Records in the partition after the committable position.",
                                     "source,partition");
        k->m_age = sl_metrics_family(m, "sluice_kafka_iterator_age_seconds", SL_METRIC_GAUGE,
                                     "Now minus the timestamp of the last record checkpointed.",
                                     "source,partition");
        sl_metrics_on_collect(m, collect, k);
    }
    *out = k->s;
    return 0;
}
