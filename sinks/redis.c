/* Redis sink: XADD <key> * record <json>, through hiredis's async API on
 * the loop (libevent adapter).
 *
 * States: DOWN (waiting for the reconnect timer; writes fail at once with
 * a retriable error), RESOLVING (a hostname is looked up on the worker
 * pool; writes are held), CONNECTING and READY (writes go to hiredis,
 * which pipelines them behind AUTH and SELECT). A lost connection fails
 * what was in flight, retriably, and reconnects with backoff.
 *
 * hiredis calls every pending reply callback (with a NULL reply) when a
 * context goes away, even after we closed: a write that was already
 * reported is orphaned (w->c = NULL) and only freed there. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

#include "sluice/backoff.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define RECONNECT_BASE_MS   100
#define RECONNECT_CAP_MS    5000
#define CONNECT_TIMEOUT_MS  5000

/* ------------------------------------------------------------------ */
/* state                                                               */

enum rstate { R_DOWN, R_RESOLVING, R_CONNECTING, R_READY };

struct rctx;

struct rwrite {
    struct rctx     *c;        /* NULL once reported (orphaned) */
    const char      *json;     /* borrowed, while held */
    size_t           len;
    bool             issued;   /* handed to hiredis: it owns the callback */
    sl_sink_done_fn  done;
    void            *arg;
    struct rwrite   *prev, *next;
};

struct rdns {
    struct rctx *c;            /* NULL when the sink closed meanwhile */
    char        *host;
    char         ip[INET6_ADDRSTRLEN];
    char         msg[256];     /* why it failed */
    int          rc;
};

struct rctx {
    struct sl_sink     *s;
    struct sl_redis_url u;
    char                where[300];   /* host:port, for messages */
    redisAsyncContext  *ac;
    enum rstate         state;
    int                 setup_left;   /* AUTH/SELECT replies still due */
    struct event       *retry;        /* reconnect timer */
    struct event       *conn_timer;   /* connect timeout */
    unsigned            attempt;      /* reconnects since the last success */
    struct rdns        *dns;          /* lookup in flight */
    struct rwrite      *head, *tail;  /* held and in-flight writes, in order */
    char                why[SL_ERR_MSG_MAX]; /* why we are down */
    int                 busy;         /* our handlers on the stack */
    bool                closed;
};

static void rctx_free(struct rctx *c)
{
    if (c->retry)
        event_free(c->retry);
    if (c->conn_timer)
        event_free(c->conn_timer);
    sl_redis_url_destroy(&c->u);
    free(c);
}

static void release(struct rctx *c)
{
    if (--c->busy == 0 && c->closed)
        rctx_free(c);
}

static void w_link(struct rctx *c, struct rwrite *w)
{
    w->c = c;
    w->prev = c->tail;
    w->next = NULL;
    if (c->tail)
        c->tail->next = w;
    else
        c->head = w;
    c->tail = w;
}

static void w_unlink(struct rctx *c, struct rwrite *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        c->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        c->tail = w->prev;
    w->prev = w->next = NULL;
}

static void start_connect(struct rctx *c);

static void schedule_retry(struct rctx *c)
{
    uint64_t delay = sl_backoff_ms(c->attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
    struct timeval tv = sl__tv_ms(delay);

    c->attempt++;
    c->state = R_DOWN;
    evtimer_del(c->conn_timer);
    evtimer_add(c->retry, &tv);
    SL_DEBUG(SL_DBG_SINK, c->s->inst, "reconnecting to %s in %llu ms", c->where,
             (unsigned long long)delay);
}

/* Fail every write not yet handed to hiredis. Caller holds busy. */
static void fail_held(struct rctx *c)
{
    struct sl_err err;

    sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: %s", c->s->conf->key,
               c->where, c->why);
    for (struct rwrite *w = c->head, *next; w && !c->closed; w = next) {
        next = w->next;
        if (w->issued)
            continue;
        w_unlink(c, w);
        sl__sink_done(c->s, w->done, w->arg, err.code, &err);
        free(w);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rwrite *w = priv;
    struct rctx *c = w->c;
    redisReply *r = reply;
    struct sl_err err;
    int rc = 0;

    if (!c) {
        free(w);
        return;
    }
    w_unlink(c, w);
    if (!r) {
        rc = sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: %s",
                        c->s->conf->key, c->where,
                        ac->c.err ? ac->c.errstr : "connection closed");
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc = sl_err_set(&err, SL_EPROTO, true, "cannot add to stream %s at %s: %s",
                        c->s->conf->key, c->where, r->str ? r->str : "error reply");
    } else if (r->type != REDIS_REPLY_STRING) {
        rc = sl_err_set(&err, SL_EPROTO, true,
                        "cannot add to stream %s at %s: unexpected reply type %d",
                        c->s->conf->key, c->where, r->type);
    }
    /* nothing of `c` is touched after done: it may free the sink */
    sl__sink_done(c->s, w->done, w->arg, rc, rc ? &err : NULL);
    free(w);
}

static void set_ready(struct rctx *c)
{
    c->state = R_READY;
    evtimer_del(c->conn_timer);
    if (c->attempt > 0)
        SL_INFO(c->s->inst, "connected to redis at %s after %u retries", c->where, c->attempt);
    else
        SL_DEBUG(SL_DBG_SINK, c->s->inst, "connected to redis at %s", c->where);
    c->attempt = 0;
    c->why[0] = '\0';
}

static void on_setup(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rctx *c = ac->data;
    redisReply *r = reply;
    const char *what = priv;

    if (!c || !r || ac != c->ac || (ac->c.flags & REDIS_DISCONNECTING))
        return; /* closed, going away, or an earlier setup step failed */
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(c->why, sizeof(c->why), "%s failed: %s", what, r->str ? r->str : "error");
        SL_ERROR(c->s->inst, "redis %s at %s failed: %s", what, c->where,
                 r->str ? r->str : "error reply");
        /* writes behind it fail on their own (NOAUTH); then reconnect */
        redisAsyncDisconnect(ac);
        return;
    }
    if (--c->setup_left == 0 && c->state == R_CONNECTING && (ac->c.flags & REDIS_CONNECTED))
        set_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rctx *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (status != REDIS_OK) {
        snprintf(c->why, sizeof(c->why), "%s", ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        if (c->attempt == 0)
            SL_WARN(c->s->inst, "cannot connect to redis at %s: %s", c->where, c->why);
        else
            SL_DEBUG(SL_DBG_SINK, c->s->inst, "cannot connect to redis at %s: %s", c->where,
                     c->why);
        /* hiredis frees the context after this and fails its callbacks */
        c->ac = NULL;
        schedule_retry(c);
        return;
    }
    if (c->setup_left == 0)
        set_ready(c);
    else
        evtimer_del(c->conn_timer); /* connected; setup replies will follow */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rctx *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "%s",
                 status == REDIS_OK ? "disconnected" : ac->c.errstr[0] ? ac->c.errstr : "connection lost");
    SL_WARN(c->s->inst, "connection to redis at %s lost: %s", c->where, c->why);
    c->ac = NULL;
    schedule_retry(c);
}

static void issue(struct rctx *c, struct rwrite *w)
{
    if (redisAsyncCommand(c->ac, on_reply, w, "XADD %s * record %b", c->s->conf->key, w->json,
                          w->len) == REDIS_OK) {
        w->issued = true;
        w->json = NULL;
        return;
    }
    /* The context is going away: fail like a held write. */
    w->issued = false;
}

/* Connect to a numeric address; held writes follow the handshake. Caller
 * holds busy. */
static void connect_ip(struct rctx *c, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, c->u.port);
    struct timeval tv = sl__tv_ms(CONNECT_TIMEOUT_MS);

    if (!ac || ac->err) {
        snprintf(c->why, sizeof(c->why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        if (c->attempt == 0)
            SL_WARN(c->s->inst, "cannot connect to redis at %s: %s", c->where, c->why);
        schedule_retry(c);
        fail_held(c);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->s->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        snprintf(c->why, sizeof(c->why), "cannot attach to the event loop");
        schedule_retry(c);
        fail_held(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = R_CONNECTING;
    c->setup_left = 0;
    if (c->u.pass) {
        if (c->u.user)
            redisAsyncCommand(ac, on_setup, "auth", "AUTH %s %s", c->u.user, c->u.pass);
        else
            redisAsyncCommand(ac, on_setup, "auth", "AUTH %s", c->u.pass);
        c->setup_left++;
    }
    if (c->u.db >= 0) {
        redisAsyncCommand(ac, on_setup, "select", "SELECT %d", c->u.db);
        c->setup_left++;
    }
    evtimer_add(c->conn_timer, &tv);
    for (struct rwrite *w = c->head; w; w = w->next)
        if (!w->issued)
            issue(c, w);
    fail_held(c);
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
        d->rc = 0;
    }
    if (res)
        freeaddrinfo(res);
}

static void dns_done(void *arg)
{
    struct rdns *d = arg;
    struct rctx *c = d->c;

    if (c) {
        c->dns = NULL;
        c->busy++;
        if (d->rc != 0) {
            snprintf(c->why, sizeof(c->why), "%s", d->msg);
            if (c->attempt == 0)
                SL_WARN(c->s->inst, "cannot connect to redis at %s: %s", c->where, c->why);
            schedule_retry(c);
            fail_held(c);
        } else {
            connect_ip(c, d->ip);
        }
        release(c);
    }
    free(d->host);
    free(d);
}

static bool is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void start_connect(struct rctx *c)
{
    if (is_numeric(c->u.host) || !c->s->pool) {
        c->busy++;
        connect_ip(c, c->u.host);
        release(c);
        return;
    }
    c->state = R_RESOLVING;
    c->dns = sl_calloc(1, sizeof(*c->dns));
    c->dns->c = c;
    c->dns->host = sl_strdup(c->u.host);
    sl_pool_submit(c->s->pool, dns_work, dns_done, c->dns);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

static void on_conn_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct rctx *c = arg;
    redisAsyncContext *ac = c->ac;

    (void)fd;
    (void)what;
    if (!ac || c->state != R_CONNECTING)
        return;
    snprintf(c->why, sizeof(c->why), "connect timed out after %d ms", CONNECT_TIMEOUT_MS);
    SL_WARN(c->s->inst, "cannot connect to redis at %s: %s", c->where, c->why);
    c->busy++;
    c->ac = NULL;
    ac->data = NULL;
    schedule_retry(c);
    redisAsyncFree(ac); /* fails the pending writes through on_reply */
    release(c);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static int redis_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_sink_conf *conf = s->conf;
    struct rctx *c;
    char shown[512];

    if (!conf->key || !conf->key[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: redis sink needs a key",
                          s->inst);
    c = sl_calloc(1, sizeof(*c));
    {
        char why[SL_ERR_MSG_MAX];
        if (sl_redis_url_parse(conf->url, &c->u, why, sizeof(why)) != 0) {
            bool tls = strncmp(conf->url, "rediss://", 9) == 0;
            sl_redis_url_destroy(&c->u);
            free(c);
            return sl_err_set(err, tls ? SL_EUNSUPPORTED : SL_ECONFIG, false, "%s", why);
        }
    }
    c->s = s;
    if (strchr(c->u.host, ':'))
        snprintf(c->where, sizeof(c->where), "[%s]:%d", c->u.host, c->u.port);
    else
        snprintf(c->where, sizeof(c->where), "%s:%d", c->u.host, c->u.port);
    c->retry = evtimer_new(s->base, on_retry, c);
    c->conn_timer = evtimer_new(s->base, on_conn_timeout, c);
    if (!c->retry || !c->conn_timer) {
        rctx_free(c);
        return sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create timers", s->inst);
    }
    snprintf(c->why, sizeof(c->why), "not connected yet");
    s->ctx = c;
    sl_log_redact(conf->url, shown, sizeof(shown));
    SL_INFO(s->inst, "adding records to stream %s at %s", conf->key, shown);
    start_connect(c);
    return 0;
}

static void redis_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                        void *arg)
{
    struct rctx *c = s->ctx;
    struct rwrite *w;
    struct sl_err err;

    if (c->state == R_DOWN) {
        sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: not connected (%s)",
                   s->conf->key, c->where, c->why);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->json = json;
    w->len = len;
    w->done = done;
    w->arg = arg;
    w_link(c, w);
    if (c->state == R_RESOLVING)
        return; /* held until the address is known */
    issue(c, w);
    if (!w->issued) {
        w_unlink(c, w);
        free(w);
        sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: connection closing",
                   s->conf->key, c->where);
        sl__sink_fail_soon(s, done, arg, &err);
    }
}

static void redis_close(struct sl_sink *s)
{
    struct rctx *c = s->ctx;
    struct sl_err err;
    redisAsyncContext *ac;

    if (!c)
        return;
    c->closed = true;
    c->busy++;
    evtimer_del(c->retry);
    evtimer_del(c->conn_timer);
    if (c->dns) {
        c->dns->c = NULL;
        c->dns = NULL;
    }
    sl_err_set(&err, SL_ESTOPPED, false, "add to stream %s at %s not confirmed: sink stopped",
               s->conf->key, c->where);
    while (c->head) {
        struct rwrite *w = c->head;

        w_unlink(c, w);
        w->c = NULL;
        sl__sink_done(s, w->done, w->arg, SL_ESTOPPED, &err);
        if (!w->issued)
            free(w); /* hiredis frees issued ones through on_reply */
    }
    ac = c->ac;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* deferred by hiredis when inside its callback */
    }
    s->ctx = NULL;
    release(c);
}

const struct sl_sink_ops sl__sink_redis_ops = {
    .name = "redis",
    .open = redis_open,
    .write = redis_write,
    .close = redis_close,
};
