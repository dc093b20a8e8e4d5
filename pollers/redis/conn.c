/* One hiredis async connection of the Redis poller, on the loop.
 *
 * DOWN (the reconnect timer runs, capped backoff with full jitter) ->
 * RESOLVING (a host name, through evdns) -> CONNECTING (AUTH, SELECT and
 * the owner's setup are pipelined; commands are refused until READY) ->
 * READY. A connection that leaves a command unanswered for its timeout is
 * dropped and reconnects, so nothing waits forever on a frozen server.
 *
 * hiredis calls every pending reply callback with a NULL reply when a
 * context goes away; each request's callback then sees NULL and decides
 * (an ack is sent again, a read is simply issued again). */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>

#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define RECONNECT_BASE_MS 100
#define RECONNECT_CAP_MS  5000

struct rq_req {
    struct rq_conn    *c;
    redisAsyncContext *ac;            /* the context it was sent on */
    rq_reply_fn        fn;
    void              *priv;
};

int64_t rq_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rq_req *rq = privdata;
    struct rq_conn *c = rq->c;

    if (c->ac == ac && ac == rq->ac) {
        if (c->pending > 0)
            c->pending--;
        c->progress = rq_mono_ms();
    }
    /* a reply of a context we already left counts as lost */
    rq->fn(c->q, (c->ac == rq->ac && !c->q->closing) ? reply : NULL, rq->priv);
    free(rq);
}

static struct rq_req *req_new(struct rq_conn *c, rq_reply_fn fn, void *priv)
{
    struct rq_req *rq = sl_malloc(sizeof(*rq));

    rq->c = c;
    rq->ac = c->ac;
    rq->fn = fn;
    rq->priv = priv;
    return rq;
}

/* `rc`: what hiredis said to the request `rq` just queued on c. */
static int req_queued(struct rq_conn *c, struct rq_req *rq, int rc)
{
    if (rc != REDIS_OK) {
        free(rq);
        return -1;
    }
    if (c->pending++ == 0)
        c->progress = rq_mono_ms();
    return 0;
}

static int sendv(struct rq_conn *c, rq_reply_fn fn, void *priv, int argc, const char **argv,
                 const size_t *lens)
{
    struct rq_req *rq;

    if (!c->ac || (c->state != RQ_CONNECTING && c->state != RQ_READY) || c->q->closing)
        return -1;
    rq = req_new(c, fn, priv);
    return req_queued(c, rq, redisAsyncCommandArgv(c->ac, on_reply, rq, argc, argv, lens));
}

static int sendf(struct rq_conn *c, rq_reply_fn fn, void *priv, const char *fmt, va_list ap)
{
    struct rq_req *rq = req_new(c, fn, priv);

    return req_queued(c, rq, redisvAsyncCommand(c->ac, on_reply, rq, fmt, ap));
}

bool rq_conn_ready(const struct rq_conn *c)
{
    return c->ac && c->state == RQ_READY && !c->q->closing;
}

int rq_cmd(struct rq_conn *c, rq_reply_fn fn, void *priv, int argc, const char **argv,
           const size_t *lens)
{
    if (!rq_conn_ready(c))
        return -1;
    return sendv(c, fn, priv, argc, argv, lens);
}

int rq_cmdf(struct rq_conn *c, rq_reply_fn fn, void *priv, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (!rq_conn_ready(c))
        return -1;
    va_start(ap, fmt);
    rc = sendf(c, fn, priv, fmt, ap);
    va_end(ap);
    return rc;
}

static void schedule_retry(struct rq_conn *c)
{
    uint64_t cap = (uint64_t)RECONNECT_BASE_MS << (c->attempt < 16 ? c->attempt : 16);
    uint32_t rnd = 0;
    struct timeval tv;

    if (cap > RECONNECT_CAP_MS)
        cap = RECONNECT_CAP_MS;
    if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = (uint32_t)random();
    cap = cap * rnd / UINT32_MAX;
    c->attempt++;
    c->state = RQ_DOWN;
    tv.tv_sec = (time_t)(cap / 1000);
    tv.tv_usec = (suseconds_t)(cap % 1000) * 1000;
    evtimer_add(c->retry, &tv);
    SL_DEBUG(SL_DBG_REDIS, c->q->inst, "reconnecting the %s connection to %s in %llu ms",
             c->name, c->q->where, (unsigned long long)cap);
}

static void lost(struct rq_conn *c)
{
    bool was_ready = c->state == RQ_READY;

    c->ac = NULL;
    c->pending = 0;
    c->state = RQ_DOWN;
    if (c->q->closing)
        return;
    schedule_retry(c);
    if (was_ready && c->down)
        c->down(c);
}

void rq_conn_drop(struct rq_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    if (!ac)
        return;
    snprintf(c->why, sizeof(c->why), "%s", why);
    SL_WARN(c->q->inst, "%s connection to redis at %s: %s; reconnecting", c->name, c->q->where,
            why);
    ac->data = NULL;
    c->ac = NULL;
    redisAsyncFree(ac); /* pending callbacks see NULL (now, or after the running one) */
    lost(c);
}

static void set_ready(struct rq_conn *c)
{
    c->state = RQ_READY;
    if (c->attempt > 0)
        SL_INFO(c->q->inst, "%s connection to redis at %s is back after %u retries", c->name,
                c->q->where, c->attempt);
    c->attempt = 0;
    c->why[0] = '\0';
    if (c->up)
        c->up(c);
}

void rq_conn_setup_done(struct rq_conn *c, bool ok, const char *what, const redisReply *r)
{
    if (!c->ac || c->state != RQ_CONNECTING)
        return;
    if (!ok) {
        char why[300];
        snprintf(why, sizeof(why), "%s failed: %s", what,
                 r && r->type == REDIS_REPLY_ERROR && r->str ? r->str : "no reply");
        SL_ERROR(c->q->inst, "redis at %s: %s", c->q->where, why);
        rq_conn_drop(c, why);
        return;
    }
    if (--c->setup_left == 0 && (c->ac->c.flags & REDIS_CONNECTED))
        set_ready(c);
}

static void on_setup_reply(struct rq *q, redisReply *r, void *priv)
{
    struct rq_conn *c = priv;

    (void)q;
    if (!r)
        return; /* the connection went away: lost() handles it */
    rq_conn_setup_done(c, r->type != REDIS_REPLY_ERROR, "AUTH/SELECT", r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rq_conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (status != REDIS_OK) {
        snprintf(c->why, sizeof(c->why), "%s", ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        if (c->attempt == 0)
            SL_WARN(c->q->inst, "cannot connect the %s connection to redis at %s: %s", c->name,
                    c->q->where, c->why);
        lost(c);
        return;
    }
    if (c->setup_left == 0)
        set_ready(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rq_conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    snprintf(c->why, sizeof(c->why), "%s", status == REDIS_OK ? "disconnected"
             : ac->c.errstr[0] ? ac->c.errstr : "connection lost");
    if (!c->q->closing)
        SL_WARN(c->q->inst, "%s connection to redis at %s lost: %s", c->name, c->q->where,
                c->why);
    lost(c);
}

static void connect_ip(struct rq_conn *c, const char *ip)
{
    struct rq *q = c->q;
    redisAsyncContext *ac = redisAsyncConnect(ip, q->u.port);

    if (!ac || ac->err || redisLibeventAttach(ac, q->base) != REDIS_OK) {
        snprintf(c->why, sizeof(c->why), "%s", ac && ac->err ? ac->errstr
                 : ac ? "cannot attach to the event loop" : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        if (c->attempt == 0)
            SL_WARN(q->inst, "cannot connect the %s connection to redis at %s: %s", c->name,
                    q->where, c->why);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = RQ_CONNECTING;
    c->started = rq_mono_ms();
    c->pending = 0;
    c->setup_left = 0;
    if (q->u.pass) {
        if ((q->u.user ? rq_setup_cmdf(c, on_setup_reply, "AUTH %s %s", q->u.user, q->u.pass)
                       : rq_setup_cmdf(c, on_setup_reply, "AUTH %s", q->u.pass)) == 0)
            c->setup_left++;
    }
    if (q->u.db >= 0 && rq_setup_cmdf(c, on_setup_reply, "SELECT %d", q->u.db) == 0)
        c->setup_left++;
    if (c->setup)
        c->setup_left += c->setup(c);
}

/* Setup commands go out while CONNECTING (pipelined behind the handshake). */
int rq_setup_cmdf(struct rq_conn *c, rq_reply_fn fn, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (!c->ac)
        return -1;
    va_start(ap, fmt);
    rc = sendf(c, fn, c, fmt, ap);
    va_end(ap);
    return rc;
}

int rq_setup_cmd(struct rq_conn *c, rq_reply_fn fn, void *priv, int argc, const char **argv,
                 const size_t *lens)
{
    return sendv(c, fn, priv, argc, argv, lens);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct rq_conn *c = arg;
    char ip[INET6_ADDRSTRLEN];

    if (result == EVUTIL_EAI_CANCEL)
        return;
    c->dns = NULL;
    if (result != 0 || !res) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: %s", c->q->u.host,
                 result ? evutil_gai_strerror(result) : "no address");
        if (c->attempt == 0)
            SL_WARN(c->q->inst, "cannot connect the %s connection to redis: %s", c->name, c->why);
        schedule_retry(c);
    } else {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof(ip));
        connect_ip(c, ip);
    }
    if (res)
        evutil_freeaddrinfo(res);
}

static bool is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void start_connect(struct rq_conn *c)
{
    struct rq *q = c->q;
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };

    if (is_numeric(q->u.host)) {
        connect_ip(c, q->u.host);
        return;
    }
    if (strcmp(q->u.host, "localhost") == 0) {
        connect_ip(c, "127.0.0.1");
        return;
    }
    if (!q->dns_base)
        q->dns_base = evdns_base_new(q->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!q->dns_base) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: no DNS resolver", q->u.host);
        schedule_retry(c);
        return;
    }
    c->state = RQ_RESOLVING;
    c->dns = evdns_getaddrinfo(q->dns_base, q->u.host, NULL, &hints, on_resolved, c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_connect(arg);
}

void rq_conn_init(struct rq_conn *c, struct rq *q, const char *name, int64_t timeout_ms)
{
    c->q = q;
    c->name = name;
    c->timeout_ms = timeout_ms;
    c->state = RQ_DOWN;
    c->retry = evtimer_new(q->base, on_retry, c);
    snprintf(c->why, sizeof(c->why), "not connected yet");
}

void rq_conn_start(struct rq_conn *c)
{
    start_connect(c);
}

void rq_conn_watch(struct rq_conn *c, int64_t now)
{
    char why[128];

    if (!c->ac)
        return;
    if (c->state == RQ_CONNECTING && now - c->started > RQ_CONNECT_MS) {
        snprintf(why, sizeof(why), "connect or setup timed out after %d ms", RQ_CONNECT_MS);
        rq_conn_drop(c, why);
    } else if (c->pending > 0 && now - c->progress > c->timeout_ms) {
        snprintf(why, sizeof(why), "no reply for %lld ms", (long long)(now - c->progress));
        rq_conn_drop(c, why);
    }
}

void rq_conn_close(struct rq_conn *c)
{
    redisAsyncContext *ac = c->ac;

    if (c->dns) {
        evdns_getaddrinfo_cancel(c->dns);
        c->dns = NULL;
    }
    if (c->retry) {
        event_free(c->retry);
        c->retry = NULL;
    }
    c->ac = NULL;
    c->state = RQ_DOWN;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* pending callbacks see NULL: the source is closing */
    }
}
