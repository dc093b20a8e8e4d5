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
 * Two connections: `cmd` carries everything but the blocking read, which
 * has `rd` to itself (a blocked XREADGROUP would hold up the puts behind
 * it). Each reconnects with capped backoff. A connection that leaves a
 * command unanswered for CMD_TIMEOUT_MS is dropped, so a put never hangs;
 * while `cmd` is down, puts fail at once (SL_ECONN: the API answers 500).
 *
 * hiredis calls every pending reply callback (with a NULL reply) when a
 * context goes away, even after we closed: a request that was already
 * reported is orphaned (rq->r = NULL) and only freed there. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

#include "asyncq.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

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

enum cstate { C_DOWN, C_RESOLVING, C_CONNECTING, C_READY };

struct rqueue;
struct rdns;

struct conn {
    struct rqueue      *r;
    const char         *name;         /* "command", "reader": for messages */
    redisAsyncContext  *ac;
    enum cstate         state;
    int                 setup_left;   /* AUTH/SELECT replies still due */
    unsigned            attempt;      /* reconnects since the last success */
    struct event       *retry;        /* reconnect timer */
    struct rdns        *dns;          /* lookup in flight */
    int                 pending;      /* replies due on ac */
    int64_t             started;      /* connect began (mono ms) */
    int64_t             progress;     /* last reply, or first send when idle */
    int64_t             timeout_ms;   /* pending and no reply for this long: drop */
    char                why[256];     /* why it is down */
    void              (*up)(struct conn *c);
    void              (*down)(struct conn *c);
};

struct rdns {
    struct conn *c;                   /* NULL when the queue closed meanwhile */
    char        *host;
    char         ip[INET6_ADDRSTRLEN];
    char         msg[256];
    int          rc;
};

enum rkind {
    K_SETUP, K_PUT, K_UPDATE, K_DELETE, K_GROUP, K_READ, K_STATE, K_CLAIM, K_BEAT, K_ACK,
    K_HANDBACK,
};

struct req {                          /* one command: sent, parked or failed */
    struct rqueue      *r;            /* NULL once orphaned: the reply only frees */
    struct conn        *c;
    int                 kind;         /* enum rkind */
    const char         *what;         /* K_SETUP: "AUTH", "SELECT" */
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
    struct conn         cmd, rd;
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

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_ms(int64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    return tv;
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
/* Connections                                                         */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void start_connect(struct conn *c);

static bool usable(const struct conn *c)
{
    return c->ac && (c->state == C_CONNECTING || c->state == C_READY);
}

static void sent(struct conn *c, struct req *rq)
{
    if (c->pending++ == 0)
        c->progress = mono_ms();
    rq->r = c->r;
    rq->c = c;
    TAILQ_INSERT_TAIL(&c->r->reqs, rq, link);
}

/* Send on `c` with `rq` as the reply's handler; false (rq untouched) when
 * `c` cannot take a command now. */
static bool sendv(struct conn *c, struct req *rq, int argc, const char **argv,
                  const size_t *lens)
{
    if (!usable(c) || redisAsyncCommandArgv(c->ac, on_reply, rq, argc, argv, lens) != REDIS_OK)
        return false;
    sent(c, rq);
    return true;
}

static bool sendf(struct conn *c, struct req *rq, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (!usable(c))
        return false;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(c->ac, on_reply, rq, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return false;
    sent(c, rq);
    return true;
}

static void schedule_retry(struct conn *c)
{
    uint64_t cap = (uint64_t)RECONNECT_BASE_MS << (c->attempt < 16 ? c->attempt : 16);
    uint32_t rnd = 0;
    uint64_t delay;
    struct timeval tv;

    if (cap > RECONNECT_CAP_MS)
        cap = RECONNECT_CAP_MS;
    if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = (uint32_t)random();
    delay = cap * rnd / UINT32_MAX; /* full jitter */
    c->attempt++;
    c->state = C_DOWN;
    tv = tv_ms((int64_t)delay);
    evtimer_add(c->retry, &tv);
    SL_DEBUG(SL_DBG_DISPATCH, INST, "reconnecting the %s connection to redis at %s in %llu ms",
             c->name, c->r->where, (unsigned long long)delay);
}

static void set_ready(struct conn *c)
{
    c->state = C_READY;
    if (c->attempt > 0)
        SL_INFO(INST, "%s connection to redis at %s is back after %u retries", c->name,
                c->r->where, c->attempt);
    c->attempt = 0;
    c->why[0] = '\0';
    c->up(c);
}

/* The connection is gone (hiredis failed its pending replies already). */
static void lost(struct conn *c)
{
    c->ac = NULL;
    c->pending = 0;
    if (c->r->closing)
        return;
    schedule_retry(c);
    c->down(c);
}

/* Drop a connection that stopped answering; its pending replies fail. */
static void drop(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void drop(struct conn *c, const char *fmt, ...)
{
    redisAsyncContext *ac = c->ac;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    SL_WARN(INST, "%s connection to redis at %s: %s", c->name, c->r->where, c->why);
    ac->data = NULL;
    c->ac = NULL;
    c->state = C_DOWN;
    redisAsyncFree(ac); /* pending replies fail now, seeing the connection down */
    lost(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (status != REDIS_OK) {
        snprintf(c->why, sizeof(c->why), "%s", ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        if (c->attempt == 0)
            SL_WARN(INST, "cannot connect the %s connection to redis at %s: %s", c->name,
                    c->r->where, c->why);
        c->state = C_DOWN;
        /* hiredis frees the context after this and fails its callbacks */
        lost(c);
        return;
    }
    if (c->setup_left == 0)
        set_ready(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "%s", status == REDIS_OK ? "disconnected"
                 : ac->c.errstr[0] ? ac->c.errstr : "connection lost");
    if (!c->r->closing)
        SL_WARN(INST, "%s connection to redis at %s lost: %s", c->name, c->r->where, c->why);
    c->state = C_DOWN;
    lost(c);
}

static void connect_ip(struct conn *c, const char *ip)
{
    struct rqueue *r = c->r;
    redisAsyncContext *ac = redisAsyncConnect(ip, r->u.port);
    struct req *rq;

    if (!ac || ac->err || redisLibeventAttach(ac, r->q->base) != REDIS_OK) {
        snprintf(c->why, sizeof(c->why), "%s", ac && ac->err ? ac->errstr
                 : ac ? "cannot attach to the event loop" : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        if (c->attempt == 0)
            SL_WARN(INST, "cannot connect the %s connection to redis at %s: %s", c->name,
                    r->where, c->why);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = C_CONNECTING;
    c->started = mono_ms();
    c->pending = 0;
    c->setup_left = 0;
    /* pipelined: commands sent meanwhile follow AUTH and SELECT */
    if (r->u.pass) {
        rq = req_new(K_SETUP);
        rq->what = "AUTH";
        if (r->u.user ? sendf(c, rq, "AUTH %s %s", r->u.user, r->u.pass)
                      : sendf(c, rq, "AUTH %s", r->u.pass))
            c->setup_left++;
        else
            req_free(rq);
    }
    if (r->u.db >= 0) {
        rq = req_new(K_SETUP);
        rq->what = "SELECT";
        if (sendf(c, rq, "SELECT %d", r->u.db))
            c->setup_left++;
        else
            req_free(rq);
    }
}

static void dns_work(void *arg)
{
    struct rdns *d = arg;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int e = getaddrinfo(d->host, NULL, &hints, &res);

    if (e != 0 || !res) {
        snprintf(d->msg, sizeof(d->msg), "cannot resolve %s: %s", d->host,
                 e ? gai_strerror(e) : "no address");
        d->rc = SL_ECONN;
    } else {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, d->ip, sizeof(d->ip));
    }
    if (res)
        freeaddrinfo(res);
}

static void dns_done(void *arg)
{
    struct rdns *d = arg;
    struct conn *c = d->c;

    if (c) {
        c->dns = NULL;
        if (d->rc != 0) {
            snprintf(c->why, sizeof(c->why), "%s", d->msg);
            schedule_retry(c);
        } else {
            connect_ip(c, d->ip);
        }
    }
    free(d->host);
    free(d);
}

static bool is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void start_connect(struct conn *c)
{
    struct rqueue *r = c->r;

    if (is_numeric(r->u.host) || !r->q->pool) {
        connect_ip(c, r->u.host);
        return;
    }
    c->state = C_RESOLVING;
    c->dns = sl_calloc(1, sizeof(*c->dns));
    c->dns->c = c;
    c->dns->host = sl_strdup(r->u.host);
    sl_pool_submit(r->q->pool, dns_work, dns_done, c->dns);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_connect(arg);
}

static void watch(struct conn *c, int64_t now)
{
    if (!c->ac)
        return;
    if (c->state == C_CONNECTING && now - c->started > CONNECT_TIMEOUT_MS)
        drop(c, "connect timed out after %d ms", CONNECT_TIMEOUT_MS);
    else if (c->pending > 0 && now - c->progress > c->timeout_ms)
        drop(c, "no reply for %lld ms; reconnecting", (long long)(now - c->progress));
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

    if (!sendf(&r->cmd, rq, "XACK %s " GROUP " %s", r->key, sid))
        req_free(rq);
}

static void fetch_state(struct rqueue *r, struct sl__aevent *ev)
{
    struct req *rq = req_new(K_STATE);

    snprintf(rq->id, sizeof(rq->id), "%s", ev->id);
    if (sendf(&r->cmd, rq, "HGETALL %s%s", r->state_prefix, ev->id)) {
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
    struct conn *c = &r->rd;
    struct req *rq;
    size_t room;
    bool ok = false;

    if (r->closing || r->reading || c->state != C_READY || evtimer_pending(r->rd_wait, NULL))
        return;
    switch (r->phase) {
    case P_GROUP:
        rq = req_new(K_GROUP);
        ok = sendf(c, rq, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", r->key);
        break;
    case P_HISTORY:
        rq = req_new(K_READ);
        rq->history = true;
        ok = sendf(c, rq, "XREADGROUP GROUP " GROUP " %s COUNT %d STREAMS %s %s", r->consumer,
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
        ok = sendf(c, rq, "XREADGROUP GROUP " GROUP " %s COUNT %d BLOCK %d STREAMS %s >",
                   r->consumer, (int)(room < READ_COUNT ? room : READ_COUNT), READ_BLOCK_MS,
                   r->key);
        break;
    }
    if (ok)
        r->reading = true;
    else
        req_free(rq);
}

static void rd_up(struct conn *c)
{
    struct rqueue *r = c->r;

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

static void rd_down(struct conn *c)
{
    struct rqueue *r = c->r;

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
        if (!sendv(&r->cmd, rq, argc, argv, lens)) {
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
    if (sendf(&r->cmd, rq, "XAUTOCLAIM %s " GROUP " %s %s %s COUNT %d", r->key, r->consumer,
              r->reclaim_arg, r->cursor, (int)(room < READ_COUNT ? room : READ_COUNT)))
        r->claiming = true;
    else
        req_free(rq);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct rqueue *r = arg;
    struct sl__aevent *ev;
    int64_t now = mono_ms();

    (void)fd, (void)what;
    watch(&r->cmd, now);
    watch(&r->rd, now);
    if (now < r->next_beat || r->cmd.state != C_READY)
        return;
    r->next_beat = now + r->beat_ms;
    beat(r);
    reclaim(r);
    TAILQ_FOREACH(ev, &r->q->events, link)
        if (ev->bstate == B_NEED_STATE)
            fetch_state(r, ev);
}

static bool send_delete(struct rqueue *r, struct req *rq);

static void cmd_up(struct conn *c)
{
    struct rqueue *r = c->r;
    struct req *rq;

    r->next_beat = 0; /* refresh at the next tick: we may have been away */
    while ((rq = TAILQ_FIRST(&r->parked))) {
        TAILQ_REMOVE(&r->parked, rq, link);
        if (!send_delete(r, rq)) {
            TAILQ_INSERT_HEAD(&r->parked, rq, link);
            break;
        }
    }
}

static void cmd_down(struct conn *c)
{
    (void)c;
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

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct req *rq = priv;
    struct rqueue *r = rq->r;
    struct conn *c = rq->c;
    const redisReply *x = reply;

    (void)ac;
    if (!r) {
        req_free(rq);
        return;
    }
    TAILQ_REMOVE(&r->reqs, rq, link);
    if (c->pending > 0)
        c->pending--;
    c->progress = mono_ms();
    switch (rq->kind) {
    case K_SETUP:
        if (!x || ac != c->ac)
            break;
        if (x->type == REDIS_REPLY_ERROR) {
            snprintf(c->why, sizeof(c->why), "%s failed: %s", rq->what, x->str ? x->str : "error");
            SL_ERROR(INST, "redis %s at %s failed: %s", rq->what, r->where,
                     x->str ? x->str : "error");
            redisAsyncDisconnect(ac); /* then reconnect, with backoff */
        } else if (--c->setup_left == 0 && c->state == C_CONNECTING &&
                   (ac->c.flags & REDIS_CONNECTED)) {
            set_ready(c);
        }
        break;
    case K_PUT:
        put_reply(r, rq, x);
        break;
    case K_UPDATE:
        if (!x || x->type == REDIS_REPLY_ERROR)
            SL_WARN(INST, "cannot record attempt %d of %s: %s", rq->attempts, rq->id,
                    x && x->str ? x->str : c->why[0] ? c->why : "connection lost");
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
    if (r->cmd.state == C_READY || r->cmd.state == C_CONNECTING) {
        if (sendv(&r->cmd, rq, 11, argv, lens))
            return;
    }
    /* down: fail at once, from the loop (never before put returns) */
    SL_DEBUG(SL_DBG_DISPATCH, INST, "cannot add an event to stream %s: redis at %s is "
             "unreachable (%s)", r->key, r->where, r->cmd.why[0] ? r->cmd.why : "not connected");
    fail_soon(r, rq, SL_ECONN);
}

static void redis_update(struct sl__asyncq *q, struct sl__aevent *ev)
{
    struct rqueue *r = q->ctx;
    struct req *rq = req_new(K_UPDATE);

    snprintf(rq->id, sizeof(rq->id), "%s", ev->id);
    rq->attempts = ev->attempts;
    if (!sendf(&r->cmd, rq, "HSET %s%s attempts %d next_ms %lld last_error %s", r->state_prefix,
               ev->id, ev->attempts, (long long)ev->next_ms, ev->last_error)) {
        SL_WARN(INST, "cannot record attempt %d of %s: redis at %s is unreachable (%s)",
                ev->attempts, ev->id, r->where, r->cmd.why[0] ? r->cmd.why : "not connected");
        req_free(rq);
    }
}

/* One transaction: an entry is never acked but left in the stream. */
static bool send_delete(struct rqueue *r, struct req *rq)
{
    struct conn *c = &r->cmd;
    struct sl__aevent *ev = rq->ev;

    return usable(c) && redisAsyncCommand(c->ac, NULL, NULL, "MULTI") == REDIS_OK &&
           redisAsyncCommand(c->ac, NULL, NULL, "XACK %s " GROUP " %s", r->key, ev->ref) ==
               REDIS_OK &&
           redisAsyncCommand(c->ac, NULL, NULL, "XDEL %s %s", r->key, ev->ref) == REDIS_OK &&
           redisAsyncCommand(c->ac, NULL, NULL, "DEL %s%s", r->state_prefix, ev->id) ==
               REDIS_OK &&
           sendf(c, rq, "EXEC");
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

/* Write and read `c` directly, without the loop, until its replies are in
 * or `ms` passed. Shutdown only. */
static void flush(struct conn *c, int64_t ms)
{
    int64_t end = mono_ms() + ms;

    while (c->ac && c->state == C_READY && c->pending > 0) {
        redisAsyncContext *ac = c->ac;
        struct pollfd pfd = { .fd = ac->c.fd, .events = POLLIN };
        int64_t left = end - mono_ms();

        if (left <= 0)
            break;
        if (sdslen(ac->c.obuf) > 0) {
            redisAsyncHandleWrite(ac);
            if (c->ac != ac)
                break;
            if (sdslen(ac->c.obuf) > 0)
                pfd.events |= POLLOUT;
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            break;
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
            redisAsyncHandleRead(ac);
    }
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
        if (!sendv(&r->cmd, rq, argc, argv, lens)) {
            req_free(rq);
            return;
        }
    }
}

static void conn_free(struct conn *c)
{
    redisAsyncContext *ac = c->ac;

    if (c->retry)
        event_free(c->retry);
    if (c->dns)
        c->dns->c = NULL;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* orphaned replies only free their requests */
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
    if (r->cmd.state == C_READY) {
        hand_back(r);
        flush(&r->cmd, CLOSE_FLUSH_MS); /* deletes in flight land */
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
    conn_free(&r->cmd);
    conn_free(&r->rd);
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
    ssize_t n;
    bool ok;

    if (gethostname(host, sizeof(host)) != 0 || !host[0])
        snprintf(host, sizeof(host), "sluice");
    host[sizeof(host) - 1] = '\0';
    sl__asyncq_mkdirs(path);
    r->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->lockfd < 0 || flock(r->lockfd, LOCK_EX | LOCK_NB) != 0) {
        SL_WARN(INST, "%s: %s; this process reads the queue as %s-%d, and what it holds when "
                "it stops is taken over by others after async_queue_reclaim_s", path,
                r->lockfd < 0 ? strerror(errno) : "held by another sluice", host, (int)getpid());
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

static void conn_init(struct rqueue *r, struct conn *c, const char *name, int64_t timeout_ms,
                      void (*up)(struct conn *), void (*down)(struct conn *))
{
    c->r = r;
    c->name = name;
    c->timeout_ms = timeout_ms;
    c->up = up;
    c->down = down;
    c->retry = evtimer_new(r->q->base, on_retry, c);
    snprintf(c->why, sizeof(c->why), "not connected yet");
}

/* The first connection: a host name is resolved here, blocking (startup),
 * so that puts right after the start do not fail; reconnects resolve on
 * the worker pool. */
static void first_connect(struct conn *c)
{
    struct rqueue *r = c->r;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    char ip[INET6_ADDRSTRLEN];
    int e;

    if (is_numeric(r->u.host)) {
        connect_ip(c, r->u.host);
        return;
    }
    e = getaddrinfo(r->u.host, NULL, &hints, &res);
    if (e != 0 || !res) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: %s", r->u.host,
                 e ? gai_strerror(e) : "no address");
        if (c == &r->cmd)
            SL_WARN(INST, "cannot connect to redis at %s: %s", r->where, c->why);
        schedule_retry(c);
    } else {
        inet_ntop(res->ai_family, res->ai_family == AF_INET6
                  ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                  : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof(ip));
        connect_ip(c, ip);
    }
    if (res)
        freeaddrinfo(res);
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
    if (strchr(r->u.host, ':'))
        snprintf(r->where, sizeof(r->where), "[%s]:%d", r->u.host, r->u.port);
    else
        snprintf(r->where, sizeof(r->where), "%s:%d", r->u.host, r->u.port);
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
    conn_init(r, &r->cmd, "command", CMD_TIMEOUT_MS, cmd_up, cmd_down);
    conn_init(r, &r->rd, "reader", READ_BLOCK_MS + CMD_TIMEOUT_MS, rd_up, rd_down);
    r->tick = event_new(q->base, -1, EV_PERSIST, on_tick, r);
    r->rd_wait = evtimer_new(q->base, on_rd_wait, r);
    r->soon = evtimer_new(q->base, on_soon, r);
    if (!r->cmd.retry || !r->rd.retry || !r->tick || !r->rd_wait || !r->soon)
        return sl_err_set(err, SL_ENOMEM, false, "cannot open the async queue: cannot create "
                          "timers");
    evtimer_add(r->tick, &tick);
    first_connect(&r->cmd);
    first_connect(&r->rd);
    return 0;
}
