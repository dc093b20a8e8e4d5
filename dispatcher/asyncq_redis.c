/* Asynchronous queue on a Redis stream, shared by every sluice instance
 * that names the same URL and key (server.async_queue, async_queue_key).
 *
 *   put      XADD <key> * id <uuid> fn <name> payload <json> enqueued_ms <n>;
 *            the 202 follows Redis's reply. The event is not indexed here:
 *            whichever instance reads it runs it.
 *   read     consumer group `sluice`, created at 0 with MKSTREAM (entries
 *            added before the group are kept). After every (re)connect the
 *            reader first reads its own pending entries (XREADGROUP ... 0),
 *            so a restart resumes them, then new ones (`>`, BLOCK).
 *   state    attempts, next_ms and last_error live in <key>:state:<id>
 *            (HSET on update), read (HGETALL) when an entry is resumed or
 *            reclaimed; the entry stays busy until then.
 *   delete   MULTI XACK XDEL DEL EXEC, once the destination write is
 *            confirmed (the dispatcher orders that). Idempotent, so a delete
 *            cut off by a lost connection is sent again after the reconnect
 *            (the entry is refreshed meanwhile) rather than run again.
 *   refresh  every min(5 s, reclaim / 4), each held entry, waiting or
 *            running, is XCLAIMed again with JUSTID so it never looks idle.
 *            A script claims only entries still ours and names the others:
 *            another instance took them over while we were cut off, and we
 *            drop them (a running one may then run twice: at least once).
 *   reclaim  XAUTOCLAIM of entries idle for async_queue_reclaim_s: those of
 *            an instance that died or lost Redis.
 *   close    held entries are handed back (XCLAIM IDLE: others may take
 *            them at once) and the deletes still in flight are flushed, for
 *            at most CLOSE_FLUSH_MS: the one blocking step, at shutdown.
 *
 * The consumer name is <hostname>-<id>, <id> kept in data_dir/async-consumer
 * under an flock: unique among live instances, and the same after a
 * restart, which XREADGROUP 0 needs to find what the last run held. When
 * another process holds the lock, <hostname>-<pid>.
 *
 * Two connections (sluice/redis.h): `cmd` carries everything but the
 * blocking read, which has `rd` to itself (a blocked XREADGROUP would hold
 * up the puts behind it). Each reconnects with capped backoff. A
 * connection that leaves a command unanswered for CMD_TIMEOUT_MS is
 * dropped, so a put never hangs; while `cmd` is down, puts fail at once
 * (SL_ECONN: the API answers 500). While a host name resolves, puts wait.
 *
 * The connection answers every command once, with NULL when it is lost or
 * closed: a request already reported at close is orphaned (rq->r = NULL)
 * and only freed there. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/datadir.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/redis.h"

#define INST "dispatch:async"
#define GROUP "sluice"

#define READ_COUNT         100     /* entries per XREADGROUP / XAUTOCLAIM */
#define READ_BLOCK_MS      2000
#define CMD_TIMEOUT_MS     5000    /* unanswered this long: the connection is dead */
#define CONNECT_TIMEOUT_MS 5000
#define RECONNECT_BASE_MS  100
#define RECONNECT_CAP_MS   5000
#define HOLD_MAX           10000   /* entries one instance holds at most */
#define BEAT_CHUNK         200     /* entries per refresh script */
#define TICK_MS            250     /* watchdog; maintenance runs every beat_ms */
#define PAUSE_MS           200     /* reader: wait while full */
#define ERROR_PAUSE_MS     1000    /* reader: wait after an error reply */
#define CLOSE_FLUSH_MS     2000
#define HANDBACK_IDLE      "86400000" /* ms: handed-back entries look a day idle */

/* KEYS[1] stream; ARGV group, consumer, entry ids. Claims again (JUSTID:
 * no delivery count) each entry still pending for this consumer; returns
 * the positions of the others. */
static const char beat_script[] =
    "local lost = {}\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])\n"
    "  if #p == 1 then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "  else\n"
    "    lost[#lost + 1] = i - 2\n"
    "  end\n"
    "end\n"
    "return lost\n";

/* sl__aevent.bstate. The event is busy while its state is read. */
enum { B_NONE = 0, B_NEED_STATE, B_READING_STATE, B_DELETING };

/* ------------------------------------------------------------------ */
/* State                                                               */

enum rkind {
    K_PUT, K_UPDATE, K_DELETE, K_GROUP, K_READ, K_STATE, K_CLAIM, K_BEAT, K_ACK,
    K_HANDBACK,
};

struct req {                          /* one command: sent, parked or failed */
    struct rqueue      *r;            /* NULL once orphaned: the reply only frees */
    int                 kind;         /* enum rkind */
    struct sl__aput    *put;          /* K_PUT */
    int                 rc;           /* failed before sending: its code */
    struct sl__aevent  *ev;           /* K_DELETE: alive until del_done */
    void              (*del_done)(void *arg, int rc);
    void               *arg;
    char                id[40];       /* K_UPDATE, K_STATE: request id */
    int                 attempts;     /* K_UPDATE */
    char              (*ids)[40];     /* K_BEAT: request ids by position */
    size_t              nids;
    bool                history;      /* K_READ: own pending entries, not `>` */
    TAILQ_ENTRY(req)    link;         /* in r->reqs, r->failed or r->parked */
};

TAILQ_HEAD(req_list, req);

enum rphase { P_GROUP, P_HISTORY, P_LIVE };

struct rqueue {
    struct sl__asyncq  *q;
    struct sl_redis_url u;
    char                where[300];     /* host:port, for messages */
    char               *key;
    char               *state_prefix;   /* "<key>:state:" */
    char                consumer[320];
    int                 lockfd;         /* flock on data_dir/async-consumer, or -1 */
    int64_t             reclaim_ms;
    char                reclaim_arg[24];
    int64_t             beat_ms;        /* refresh and reclaim period */
    int64_t             next_beat;      /* mono ms */
    struct sl_redis_conn *cmd, *rd;
    struct event       *tick;           /* TICK_MS, persistent */
    struct event       *rd_wait;        /* reader pause */
    struct event       *soon;           /* reports puts that failed before sending */
    enum rphase         phase;
    char                history[48];    /* next own-pending id to read after */
    size_t              resumed;        /* own pending entries found by this pass */
    bool                reading;        /* a read is in flight on rd */
    bool                claiming;       /* an XAUTOCLAIM is in flight */
    char                cursor[48];     /* XAUTOCLAIM's */
    int                 beats;          /* refresh scripts in flight */
    bool                announced;      /* the first connect was logged */
    bool                closing;
    struct req_list     reqs;           /* sent, reply due */
    struct req_list     failed;         /* puts to fail from the loop */
    struct req_list     parked;         /* deletes waiting for the command connection */
};

static struct timeval tv_ms(int64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    return tv;
}

/* Why the command connection cannot take commands, for messages. */
static const char *why_down(const struct rqueue *r)
{
    const char *why = sl_redis_conn_why(r->cmd);

    return why[0] ? why : "connection lost";
}

static struct req *req_new(int kind)
{
    struct req *rq = sl_calloc(1, sizeof(*rq));

    rq->kind = kind;
    return rq;
}

static void req_free(struct req *rq)
{
    free(rq->ids);
    free(rq);
}

/* ------------------------------------------------------------------ */
/* Connections (sluice/redis.h)                                        */

static void on_reply(void *arg, redisReply *reply, void *priv);

static void sent(struct rqueue *r, struct req *rq)
{
    rq->r = r;
    TAILQ_INSERT_TAIL(&r->reqs, rq, link);
}

/* Send on `c` with `rq` as the reply's handler; false (rq untouched) when
 * `c` cannot take a command now. */
static bool sendv(struct rqueue *r, struct sl_redis_conn *c, struct req *rq, int argc,
                  const char **argv, const size_t *lens)
{
    if (sl_redis_conn_cmd(c, on_reply, rq, argc, argv, lens) != 0)
        return false;
    sent(r, rq);
    return true;
}

static bool sendf(struct rqueue *r, struct sl_redis_conn *c, struct req *rq, const char *fmt,
                  ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sl_redis_conn_vcmdf(c, on_reply, rq, fmt, ap);
    va_end(ap);
    if (rc != 0)
        return false;
    sent(r, rq);
    return true;
}

/* ------------------------------------------------------------------ */
/* Entries                                                             */

static bool is_str(const redisReply *x)
{
    return x && (x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS);
}

static bool str_is(const redisReply *x, const char *s)
{
    return is_str(x) && x->len == strlen(s) && memcmp(x->str, s, x->len) == 0;
}

static int64_t str_int(const redisReply *x)
{
    char buf[32];

    if (x && x->type == REDIS_REPLY_INTEGER)
        return x->integer;
    if (!is_str(x) || x->len == 0 || x->len >= sizeof(buf))
        return -1;
    memcpy(buf, x->str, x->len);
    buf[x->len] = '\0';
    return strtoll(buf, NULL, 10);
}

static void send_ack(struct rqueue *r, const char *sid)
{
    struct req *rq = req_new(K_ACK);

    if (!sendf(r, r->cmd, rq, "XACK %s " GROUP " %s", r->key, sid))
        req_free(rq);
}

static void fetch_state(struct rqueue *r, struct sl__aevent *ev)
{
    struct req *rq = req_new(K_STATE);

    snprintf(rq->id, sizeof(rq->id), "%s", ev->id);
    if (sendf(r, r->cmd, rq, "HGETALL %s%s", r->state_prefix, ev->id)) {
        ev->bstate = B_READING_STATE;
    } else {
        ev->bstate = B_NEED_STATE; /* the next maintenance round asks again */
        req_free(rq);
    }
}

/* Take one stream entry [sid, [field, value, ...]] into the index. With
 * `state` the entry was delivered before: it stays busy until its state
 * hash is read. Returns 1 when indexed and due for a look, else 0. */
static int take_entry(struct rqueue *r, const redisReply *e, bool state)
{
    const redisReply *sid, *f, *id = NULL, *fn = NULL, *payload = NULL;
    struct sl__aevent *ev;
    int64_t enq = -1;
    char sidbuf[48], idbuf[40];

    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !is_str(sid = e->element[0]) ||
        sid->len >= sizeof(sidbuf))
        return 0;
    if (r->closing)
        return 0;
    memcpy(sidbuf, sid->str, sid->len);
    sidbuf[sid->len] = '\0';
    f = e->element[1];
    if (!f || f->type != REDIS_REPLY_ARRAY) {
        /* deleted from the stream while pending: nothing left to run */
        send_ack(r, sidbuf);
        return 0;
    }
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (str_is(k, "id"))
            id = v;
        else if (str_is(k, "fn"))
            fn = v;
        else if (str_is(k, "payload"))
            payload = v;
        else if (str_is(k, "enqueued_ms"))
            enq = str_int(v);
    }
    if (!is_str(id) || id->len == 0 || id->len >= sizeof(ev->id) || !is_str(fn) ||
        fn->len == 0 || fn->len >= sizeof(ev->function) || !is_str(payload) || enq <= 0) {
        /* not ours to run; acked so it is never delivered again, kept for a look */
        SL_WARN(INST, "stream %s: entry %s is not an asynchronous event (needs id, fn, payload, "
                "enqueued_ms); acknowledged and left in the stream", r->key, sidbuf);
        send_ack(r, sidbuf);
        return 0;
    }
    memcpy(idbuf, id->str, id->len);
    idbuf[id->len] = '\0';
    if (sl__asyncq_find(r->q, idbuf))
        return 0; /* held already (read again after a reconnect) */
    {
        char fnbuf[72];
        memcpy(fnbuf, fn->str, fn->len);
        fnbuf[fn->len] = '\0';
        ev = sl__aevent_new(r->q, idbuf, fnbuf, payload->str, payload->len, enq);
    }
    snprintf(ev->ref, sizeof(ev->ref), "%s", sidbuf);
    if (state) {
        ev->busy = true;
        sl__asyncq_index(r->q, ev);
        fetch_state(r, ev);
        return 0;
    }
    sl__asyncq_index(r->q, ev);
    return 1;
}

/* ------------------------------------------------------------------ */
/* The reader                                                          */

static void rd_next(struct rqueue *r);

static void rd_pause(struct rqueue *r, int64_t ms)
{
    struct timeval tv = tv_ms(ms);

    if (!r->closing)
        evtimer_add(r->rd_wait, &tv);
}

static void on_rd_wait(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    rd_next(arg);
}

static void rd_next(struct rqueue *r)
{
    struct sl_redis_conn *c = r->rd;
    struct req *rq;
    size_t room;
    bool ok = false;

    if (r->closing || r->reading || !sl_redis_conn_ready(c) || evtimer_pending(r->rd_wait, NULL))
        return;
    switch (r->phase) {
    case P_GROUP:
        rq = req_new(K_GROUP);
        ok = sendf(r, c, rq, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", r->key);
        break;
    case P_HISTORY:
        rq = req_new(K_READ);
        rq->history = true;
        ok = sendf(r, c, rq, "XREADGROUP GROUP " GROUP " %s COUNT %d STREAMS %s %s", r->consumer,
                   READ_COUNT, r->key, r->history);
        break;
    case P_LIVE:
    default:
        room = r->q->depth < HOLD_MAX ? HOLD_MAX - r->q->depth : 0;
        if (room == 0) {
            rd_pause(r, PAUSE_MS); /* full: the dispatcher catches up first */
            return;
        }
        rq = req_new(K_READ);
        ok = sendf(r, c, rq, "XREADGROUP GROUP " GROUP " %s COUNT %d BLOCK %d STREAMS %s >",
                   r->consumer, (int)(room < READ_COUNT ? room : READ_COUNT), READ_BLOCK_MS,
                   r->key);
        break;
    }
    if (ok)
        r->reading = true;
    else
        req_free(rq);
}

static void rd_up(struct sl_redis_conn *c, void *arg)
{
    struct rqueue *r = arg;

    (void)c;
    if (!r->announced) {
        r->announced = true;
        SL_INFO(INST, "asynchronous queue: stream %s at redis %s, consumer %s", r->key, r->where,
                r->consumer);
    }
    r->phase = P_GROUP;
    r->reading = false;
    evtimer_del(r->rd_wait);
    rd_next(r);
}

static void rd_down(struct sl_redis_conn *c, void *arg)
{
    struct rqueue *r = arg;

    (void)c;
    r->reading = false;
    evtimer_del(r->rd_wait);
}

static void on_group(struct rqueue *r, const redisReply *x)
{
    if (!x)
        return; /* the connection went away; it starts over when back */
    if (x->type == REDIS_REPLY_ERROR && !(x->str && strncmp(x->str, "BUSYGROUP", 9) == 0)) {
        SL_WARN(INST, "cannot create consumer group " GROUP " on stream %s at %s: %s", r->key,
                r->where, x->str ? x->str : "error");
        rd_pause(r, ERROR_PAUSE_MS);
        return;
    }
    r->phase = P_HISTORY;
    snprintf(r->history, sizeof(r->history), "0");
    r->resumed = 0;
    rd_next(r);
}

static void on_read(struct rqueue *r, struct req *rq, const redisReply *x)
{
    const redisReply *entries = NULL;
    int due = 0;

    if (!x)
        return;
    if (x->type == REDIS_REPLY_ERROR) {
        if (x->str && strncmp(x->str, "NOGROUP", 7) == 0) {
            SL_WARN(INST, "stream %s or its consumer group went away; creating them again",
                    r->key);
            r->phase = P_GROUP;
            rd_pause(r, ERROR_PAUSE_MS);
        } else {
            SL_WARN(INST, "cannot read stream %s at %s: %s", r->key, r->where,
                    x->str ? x->str : "error");
            rd_pause(r, ERROR_PAUSE_MS);
        }
        return;
    }
    /* [[key, [entry, ...]]], or nil when BLOCK ran out */
    if (x->type == REDIS_REPLY_ARRAY && x->elements > 0 && x->element[0]->type ==
        REDIS_REPLY_ARRAY && x->element[0]->elements == 2 &&
        x->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
        entries = x->element[0]->element[1];
    for (size_t i = 0; entries && i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        size_t before = r->q->depth;

        due += take_entry(r, e, rq->history);
        if (rq->history) {
            r->resumed += r->q->depth - before;
            if (e->type == REDIS_REPLY_ARRAY && e->elements > 0 && is_str(e->element[0]) &&
                e->element[0]->len < sizeof(r->history)) {
                memcpy(r->history, e->element[0]->str, e->element[0]->len);
                r->history[e->element[0]->len] = '\0';
            }
        }
    }
    if (rq->history && (!entries || entries->elements < READ_COUNT)) {
        if (r->resumed)
            SL_INFO(INST, "resuming %zu asynchronous events this instance held before",
                    r->resumed);
        r->phase = P_LIVE;
    }
    if (due)
        sl__asyncq_arrived(r->q);
    rd_next(r);
}

/* ------------------------------------------------------------------ */
/* Maintenance: state, refresh, reclaim                                */

static void on_state(struct rqueue *r, struct req *rq, const redisReply *x)
{
    struct sl__aevent *ev = sl__asyncq_find(r->q, rq->id);

    if (!ev || ev->bstate != B_READING_STATE)
        return; /* dropped meanwhile */
    if (!x || x->type != REDIS_REPLY_ARRAY) {
        if (x)
            SL_WARN(INST, "cannot read the state of event %s: %s", ev->id,
                    x->type == REDIS_REPLY_ERROR && x->str ? x->str : "unexpected reply");
        ev->bstate = B_NEED_STATE;
        return;
    }
    for (size_t i = 0; i + 1 < x->elements; i += 2) {
        const redisReply *k = x->element[i], *v = x->element[i + 1];
        if (str_is(k, "attempts"))
            ev->attempts = (int)str_int(v);
        else if (str_is(k, "next_ms"))
            ev->next_ms = str_int(v);
        else if (str_is(k, "last_error") && is_str(v))
            snprintf(ev->last_error, sizeof(ev->last_error), "%.*s", (int)v->len, v->str);
    }
    if (ev->attempts < 0)
        ev->attempts = 0;
    if (ev->next_ms < ev->enqueued_ms)
        ev->next_ms = ev->enqueued_ms;
    ev->bstate = B_NONE;
    ev->busy = false;
    sl__asyncq_arrived(r->q);
}

static void on_claim(struct rqueue *r, const redisReply *x)
{
    const redisReply *entries;
    size_t before = r->q->depth;

    r->claiming = false;
    if (!x)
        return;
    if (x->type == REDIS_REPLY_ERROR) {
        if (!(x->str && strncmp(x->str, "NOGROUP", 7) == 0)) /* the reader recreates it */
            SL_WARN(INST, "cannot reclaim idle entries of stream %s: %s", r->key,
                    x->str ? x->str : "error");
        return;
    }
    /* [next cursor, [entry, ...], [deleted id, ...] (Redis 7)] */
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 2 || !is_str(x->element[0]) ||
        x->element[0]->len >= sizeof(r->cursor))
        return;
    memcpy(r->cursor, x->element[0]->str, x->element[0]->len);
    r->cursor[x->element[0]->len] = '\0';
    entries = x->element[1];
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++)
        take_entry(r, entries->element[i], true);
    if (r->q->depth > before)
        SL_INFO(INST, "took over %zu asynchronous events idle for %lld s or more (their instance "
                "stopped or lost redis)", r->q->depth - before, (long long)(r->reclaim_ms / 1000));
}

static void on_beat(struct rqueue *r, struct req *rq, const redisReply *x)
{
    r->beats--;
    if (!x)
        return;
    if (x->type != REDIS_REPLY_ARRAY) {
        if (!(x->type == REDIS_REPLY_ERROR && x->str && strstr(x->str, "NOGROUP")))
            SL_WARN(INST, "cannot refresh the events this instance holds: %s",
                    x->type == REDIS_REPLY_ERROR && x->str ? x->str : "unexpected reply");
        return;
    }
    for (size_t i = 0; i < x->elements; i++) {
        int64_t pos = str_int(x->element[i]);
        struct sl__aevent *ev;

        if (pos < 1 || (size_t)pos > rq->nids ||
            !(ev = sl__asyncq_find(r->q, rq->ids[pos - 1])))
            continue;
        if (ev->bstate == B_DELETING)
            continue; /* acked by ourselves meanwhile, or about to be */
        if (ev->busy && ev->bstate == B_NONE) {
            SL_WARN(INST, "event %s was taken over by another instance while it runs here; it "
                    "may run twice", ev->id);
            continue;
        }
        SL_WARN(INST, "event %s was taken over by another instance (this one lost redis for "
                "too long); dropped here", ev->id);
        sl__asyncq_forget(ev);
    }
}

/* Claim every held entry again so that none looks idle to the others. */
static void beat(struct rqueue *r)
{
    struct sl__aevent *ev = TAILQ_FIRST(&r->q->events);

    if (r->beats > 0)
        return;
    while (ev) {
        const char *argv[6 + BEAT_CHUNK];
        size_t lens[6 + BEAT_CHUNK];
        struct req *rq = req_new(K_BEAT);
        int argc = 0;

        rq->ids = sl_calloc(BEAT_CHUNK, sizeof(*rq->ids));
        argv[argc++] = "EVAL";
        argv[argc++] = beat_script;
        argv[argc++] = "1";
        argv[argc++] = r->key;
        argv[argc++] = GROUP;
        argv[argc++] = r->consumer;
        for (; ev && rq->nids < BEAT_CHUNK; ev = TAILQ_NEXT(ev, link)) {
            memcpy(rq->ids[rq->nids++], ev->id, sizeof(ev->id));
            argv[argc++] = ev->ref;
        }
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        if (!sendv(r, r->cmd, rq, argc, argv, lens)) {
            req_free(rq);
            return;
        }
        r->beats++;
    }
}

static void reclaim(struct rqueue *r)
{
    size_t room = r->q->depth < HOLD_MAX ? HOLD_MAX - r->q->depth : 0;
    struct req *rq;

    if (r->claiming || room == 0)
        return;
    rq = req_new(K_CLAIM);
    if (sendf(r, r->cmd, rq, "XAUTOCLAIM %s " GROUP " %s %s %s COUNT %d", r->key, r->consumer,
              r->reclaim_arg, r->cursor, (int)(room < READ_COUNT ? room : READ_COUNT)))
        r->claiming = true;
    else
        req_free(rq);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rqueue *r = arg;
    struct sl__aevent *ev;
    int64_t now = (int64_t)sl_mono_ms();

    (void)fd, (void)what;
    if (now < r->next_beat || !sl_redis_conn_ready(r->cmd))
        return;
    r->next_beat = now + r->beat_ms;
    beat(r);
    reclaim(r);
    TAILQ_FOREACH(ev, &r->q->events, link)
        if (ev->bstate == B_NEED_STATE)
            fetch_state(r, ev);
}

static bool send_delete(struct rqueue *r, struct req *rq);

static void cmd_up(struct sl_redis_conn *c, void *arg)
{
    struct rqueue *r = arg;
    struct req *rq;

    (void)c;
    r->next_beat = 0; /* refresh at the next tick: we may have been away */
    while ((rq = TAILQ_FIRST(&r->parked))) {
        TAILQ_REMOVE(&r->parked, rq, link);
        if (!send_delete(r, rq)) {
            TAILQ_INSERT_HEAD(&r->parked, rq, link);
            break;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Replies                                                             */

static void put_reply(struct rqueue *r, struct req *rq, const redisReply *x)
{
    struct sl__aput *p = rq->put;
    int rc = 0;

    if (!x) {
        rc = SL_ECONN;
    } else if (x->type == REDIS_REPLY_ERROR) {
        SL_WARN(INST, "cannot add an event to stream %s at %s: %s", r->key, r->where,
                x->str ? x->str : "error");
        rc = SL_EIO;
    } else if (!is_str(x)) {
        rc = SL_EPROTO;
    }
    sl__asyncq_put_done(p, rc, false);
}

/* Returns true when `rq` was kept (parked until the reconnect). */
static bool delete_reply(struct rqueue *r, struct req *rq, const redisReply *x)
{
    int rc = 0;

    if (!x) {
        /* connection lost: applied or not, it is sent again */
        TAILQ_INSERT_TAIL(&r->parked, rq, link);
        return true;
    }
    /* EXEC: [acked, deleted, state deleted], or nil when the transaction
     * was discarded */
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 3)
        rc = SL_EIO;
    if (rc != 0)
        SL_WARN(INST, "cannot delete event %s (entry %s) from stream %s: %s", rq->ev->id,
                rq->ev->ref, r->key, x->type == REDIS_REPLY_ERROR && x->str ? x->str
                : "transaction discarded");
    rq->del_done(rq->arg, rc);
    return false;
}

static void on_reply(void *arg, redisReply *reply, void *priv)
{
    struct req *rq = priv;
    struct rqueue *r = rq->r;
    const redisReply *x = reply;

    (void)arg;
    if (!r) {
        req_free(rq);
        return;
    }
    TAILQ_REMOVE(&r->reqs, rq, link);
    switch (rq->kind) {
    case K_PUT:
        put_reply(r, rq, x);
        break;
    case K_UPDATE:
        if (!x || x->type == REDIS_REPLY_ERROR)
            SL_WARN(INST, "cannot record attempt %d of %s: %s", rq->attempts, rq->id,
                    x && x->str ? x->str : why_down(r));
        break;
    case K_DELETE:
        if (delete_reply(r, rq, x))
            return;
        break;
    case K_GROUP:
        r->reading = false;
        on_group(r, x);
        break;
    case K_READ:
        r->reading = false;
        on_read(r, rq, x);
        break;
    case K_STATE:
        on_state(r, rq, x);
        break;
    case K_CLAIM:
        on_claim(r, x);
        break;
    case K_BEAT:
        on_beat(r, rq, x);
        break;
    case K_ACK:
    case K_HANDBACK:
    default:
        break;
    }
    req_free(rq);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

/* Report the puts that failed before they were sent. */
static void on_soon(evutil_socket_t fd, short what, void *arg)
{
    struct rqueue *r = arg;
    struct req *rq;

    (void)fd, (void)what;
    while ((rq = TAILQ_FIRST(&r->failed))) {
        TAILQ_REMOVE(&r->failed, rq, link);
        sl__asyncq_put_done(rq->put, rq->rc, false);
        req_free(rq);
    }
}

/* Fail a put from the next loop iteration, so that its callback never
 * runs before the call returned. */
static void fail_soon(struct rqueue *r, struct req *rq, int rc)
{
    rq->rc = rc;
    TAILQ_INSERT_TAIL(&r->failed, rq, link);
    event_active(r->soon, EV_TIMEOUT, 0);
}

static void redis_put(struct sl__asyncq *q, struct sl__aput *p)
{
    struct rqueue *r = q->ctx;
    struct sl__aevent *ev = p->ev;
    struct req *rq = req_new(K_PUT);
    char enq[24];
    const char *argv[11] = { "XADD", r->key, "*", "id", ev->id, "fn", ev->function, "payload",
                             ev->payload, "enqueued_ms", enq };
    size_t lens[11];

    snprintf(enq, sizeof(enq), "%lld", (long long)ev->enqueued_ms);
    for (int i = 0; i < 11; i++)
        lens[i] = strlen(argv[i]);
    lens[8] = ev->len;
    rq->put = p;
    if (sendv(r, r->cmd, rq, 11, argv, lens))
        return;
    /* down: fail at once, from the loop (never before put returns) */
    SL_DEBUG(SL_DBG_DISPATCH, INST, "cannot add an event to stream %s: redis at %s is "
             "unreachable (%s)", r->key, r->where, why_down(r));
    fail_soon(r, rq, SL_ECONN);
}

static void redis_update(struct sl__asyncq *q, struct sl__aevent *ev)
{
    struct rqueue *r = q->ctx;
    struct req *rq = req_new(K_UPDATE);

    snprintf(rq->id, sizeof(rq->id), "%s", ev->id);
    rq->attempts = ev->attempts;
    if (!sendf(r, r->cmd, rq, "HSET %s%s attempts %d next_ms %lld last_error %s", r->state_prefix,
               ev->id, ev->attempts, (long long)ev->next_ms, ev->last_error)) {
        SL_WARN(INST, "cannot record attempt %d of %s: redis at %s is unreachable (%s)",
                ev->attempts, ev->id, r->where, why_down(r));
        req_free(rq);
    }
}

/* One transaction: an entry is never acked but left in the stream. */
static bool send_delete(struct rqueue *r, struct req *rq)
{
    struct sl_redis_conn *c = r->cmd;
    struct sl__aevent *ev = rq->ev;

    return sl_redis_conn_cmdf(c, NULL, NULL, "MULTI") == 0 &&
           sl_redis_conn_cmdf(c, NULL, NULL, "XACK %s " GROUP " %s", r->key, ev->ref) == 0 &&
           sl_redis_conn_cmdf(c, NULL, NULL, "XDEL %s %s", r->key, ev->ref) == 0 &&
           sl_redis_conn_cmdf(c, NULL, NULL, "DEL %s%s", r->state_prefix, ev->id) == 0 &&
           sendf(r, c, rq, "EXEC");
}

static void redis_remove(struct sl__asyncq *q, struct sl__aevent *ev,
                         void (*done)(void *arg, int rc), void *arg)
{
    struct rqueue *r = q->ctx;
    struct req *rq = req_new(K_DELETE);

    rq->ev = ev;
    rq->del_done = done;
    rq->arg = arg;
    ev->bstate = B_DELETING;
    if (!send_delete(r, rq))
        TAILQ_INSERT_TAIL(&r->parked, rq, link);
}

/* Entries this instance still holds: idle at once for the others. */
static void hand_back(struct rqueue *r)
{
    struct sl__aevent *ev = TAILQ_FIRST(&r->q->events);

    while (ev) {
        const char *argv[8 + BEAT_CHUNK];
        size_t lens[8 + BEAT_CHUNK];
        struct req *rq = req_new(K_HANDBACK);
        int argc = 0;

        argv[argc++] = "XCLAIM";
        argv[argc++] = r->key;
        argv[argc++] = GROUP;
        argv[argc++] = r->consumer;
        argv[argc++] = "0";
        /* an entry whose delete went before is no longer pending: a no-op */
        for (int n = 0; ev && n < BEAT_CHUNK; ev = TAILQ_NEXT(ev, link), n++)
            argv[argc++] = ev->ref;
        argv[argc++] = "IDLE";
        argv[argc++] = HANDBACK_IDLE;
        argv[argc++] = "JUSTID";
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        if (!sendv(r, r->cmd, rq, argc, argv, lens)) {
            req_free(rq);
            return;
        }
    }
}

static void redis_close(struct sl__asyncq *q)
{
    struct rqueue *r = q->ctx;
    struct req *rq;

    if (!r)
        return;
    r->closing = true;
    if (r->tick)
        event_free(r->tick);
    if (r->rd_wait)
        event_free(r->rd_wait);
    if (r->cmd && sl_redis_conn_ready(r->cmd)) {
        hand_back(r);
        sl_redis_conn_flush(r->cmd, CLOSE_FLUSH_MS); /* deletes in flight land */
    }
    if (r->soon) {
        on_soon(-1, 0, r);
        event_free(r->soon);
    }
    while ((rq = TAILQ_FIRST(&r->parked))) {
        TAILQ_REMOVE(&r->parked, rq, link);
        rq->del_done(rq->arg, SL_ESTOPPED);
        req_free(rq);
    }
    while ((rq = TAILQ_FIRST(&r->reqs))) {
        TAILQ_REMOVE(&r->reqs, rq, link);
        rq->r = NULL;
        if (rq->kind == K_PUT) {
            sl__asyncq_put_done(rq->put, SL_ESTOPPED, false);
            rq->put = NULL;
        } else if (rq->kind == K_DELETE) {
            rq->del_done(rq->arg, SL_ESTOPPED);
        }
    }
    sl_redis_conn_free(r->cmd); /* orphaned replies only free their requests */
    sl_redis_conn_free(r->rd);
    if (r->lockfd >= 0)
        close(r->lockfd); /* releases the flock */
    sl_redis_url_destroy(&r->u);
    free(r->key);
    free(r->state_prefix);
    free(r);
    q->ctx = NULL;
}

static const struct sl__asyncq_ops redis_ops = {
    .name = "redis",
    .put = redis_put,
    .update = redis_update,
    .remove = redis_remove,
    .close = redis_close,
};

/* <hostname>-<id>, <id> from data_dir/async-consumer, locked while we run. */
static void consumer_name(struct rqueue *r, const char *data_dir)
{
    char host[256] = "", id[32] = "", *path = sl_asprintf("%s/async-consumer", data_dir);
    char why[512];
    ssize_t n;
    bool ok;

    if (gethostname(host, sizeof(host)) != 0 || !host[0])
        snprintf(host, sizeof(host), "sluice");
    host[sizeof(host) - 1] = '\0';
    r->lockfd = -1;
    if (sl_data_dir_prepare(data_dir, why, sizeof(why)) == 0)
        r->lockfd = sl_data_file_open(data_dir, "async-consumer", O_RDWR | O_CREAT, why,
                                      sizeof(why));
    if (r->lockfd >= 0 && flock(r->lockfd, LOCK_EX | LOCK_NB) != 0)
        snprintf(why, sizeof(why), "%s: held by another sluice", path);
    else if (r->lockfd >= 0)
        why[0] = '\0';
    if (why[0]) {
        SL_WARN(INST, "%s; this process reads the queue as %s-%d, and what it holds when "
                "it stops is taken over by others after async_queue_reclaim_s", why, host,
                (int)getpid());
        if (r->lockfd >= 0)
            close(r->lockfd);
        r->lockfd = -1;
        snprintf(r->consumer, sizeof(r->consumer), "%s-%d", host, (int)getpid());
        free(path);
        return;
    }
    n = pread(r->lockfd, id, sizeof(id) - 1, 0);
    id[n > 0 ? n : 0] = '\0';
    id[strcspn(id, "\n")] = '\0';
    ok = strlen(id) == 12 && strspn(id, "0123456789abcdef") == 12;
    if (!ok) {
        char uuid[40];
        size_t k = 0;

        sl_uuid(uuid);
        for (const char *p = uuid; *p && k < 12; p++)
            if (*p != '-')
                id[k++] = *p;
        id[k] = '\0';
        if (ftruncate(r->lockfd, 0) != 0 || pwrite(r->lockfd, id, 12, 0) != 12 ||
            pwrite(r->lockfd, "\n", 1, 12) != 1 || fsync(r->lockfd) != 0)
            SL_WARN(INST, "cannot write %s: %s; a restart reads the queue under another name",
                    path, strerror(errno));
    }
    snprintf(r->consumer, sizeof(r->consumer), "%s-%s", host, id);
    free(path);
}

int sl__asyncq_redis_open(struct sl__asyncq *q, const struct sl_server_conf *conf,
                          struct sl_err *err)
{
    struct rqueue *r = sl_calloc(1, sizeof(*r));
    char why[700];
    struct timeval tick = tv_ms(TICK_MS);

    r->q = q;
    r->lockfd = -1;
    TAILQ_INIT(&r->reqs);
    TAILQ_INIT(&r->failed);
    TAILQ_INIT(&r->parked);
    q->ops = &redis_ops;
    q->ctx = r;
    if (sl_redis_url_parse(conf->async_queue, &r->u, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "cannot open the async queue: %s", why);
    sl_redis_url_where(&r->u, r->where, sizeof(r->where));
    r->key = sl_strdup(conf->async_queue_key && conf->async_queue_key[0] ? conf->async_queue_key
                                                                        : "sluice:async");
    r->state_prefix = sl_asprintf("%s:state:", r->key);
    r->reclaim_ms = conf->async_queue_reclaim_ms > 0 ? conf->async_queue_reclaim_ms : 60000;
    snprintf(r->reclaim_arg, sizeof(r->reclaim_arg), "%lld", (long long)r->reclaim_ms);
    r->beat_ms = r->reclaim_ms / 4 < 5000 ? r->reclaim_ms / 4 : 5000;
    if (r->beat_ms < TICK_MS)
        r->beat_ms = TICK_MS;
    snprintf(r->cursor, sizeof(r->cursor), "0-0");
    consumer_name(r, conf->data_dir);
    {
        struct sl_redis_conn_conf cc = {
            .base = q->base, .url = &r->u, .inst = INST, .name = "command connection",
            .dbg = SL_DBG_DISPATCH, .connect_timeout_ms = CONNECT_TIMEOUT_MS,
            .reply_timeout_ms = CMD_TIMEOUT_MS, .backoff_base_ms = RECONNECT_BASE_MS,
            .backoff_cap_ms = RECONNECT_CAP_MS, .up = cmd_up, .arg = r,
        };
        r->cmd = sl_redis_conn_new(&cc);
        cc.name = "reader connection";
        cc.reply_timeout_ms = READ_BLOCK_MS + CMD_TIMEOUT_MS;
        cc.up = rd_up;
        cc.down = rd_down;
        r->rd = sl_redis_conn_new(&cc);
    }
    r->tick = event_new(q->base, -1, EV_PERSIST, on_tick, r);
    r->rd_wait = evtimer_new(q->base, on_rd_wait, r);
    r->soon = evtimer_new(q->base, on_soon, r);
    if (!r->tick || !r->rd_wait || !r->soon)
        return sl_err_set(err, SL_ENOMEM, false, "cannot open the async queue: cannot create "
                          "timers");
    evtimer_add(r->tick, &tick);
    /* a host name resolves on the loop; puts meanwhile wait for the connection */
    sl_redis_conn_start(r->cmd);
    sl_redis_conn_start(r->rd);
    return 0;
}
