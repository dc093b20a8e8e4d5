/* The Redis client connection (see sluice/redis.h) and redis:// URLs.
 *
 * hiredis calls every pending reply callback with a NULL reply when a
 * context goes away, at once or (inside one of its callbacks) once that
 * callback returns. Each command is a `struct req` listed on its
 * connection; freeing the connection answers them all with NULL and
 * orphans them (req->c = NULL), so that what hiredis calls later only
 * frees them. A callback may free the connection: handlers that call
 * back hold it (busy) and stop once `freeing` is set; the memory goes
 * when the last of them returns. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "sluice/backoff.h"
#include "sluice/clock.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/redis.h"
#include "sluice/resolve.h"

#define WATCH_MS 100                  /* timeouts are checked this often */

/* ------------------------------------------------------------------ */
/* URLs                                                                */

void sl_redis_url_destroy(struct sl_redis_url *u)
{
    if (!u)
        return;
    free(u->host);
    free(u->user);
    if (u->pass) {
        explicit_bzero(u->pass, strlen(u->pass));
        free(u->pass);
    }
    memset(u, 0, sizeof(*u));
}

int sl_redis_url_parse(const char *url, struct sl_redis_url *u, char *why, size_t n)
{
    char shown[512];
    const char *p, *end, *at = NULL, *host, *hend, *port = NULL, *what;
    long v;
    char *e;

    memset(u, 0, sizeof(*u));
    u->db = -1;
    u->port = 6379;
    sl_log_redact(url ? url : "", shown, sizeof(shown));
    if (!url || strncasecmp(url, "redis://", 8) != 0) {
        what = url && strncasecmp(url, "rediss://", 9) == 0 ? "tls (rediss://) is not supported"
                                                             : "not a redis:// url";
        goto bad;
    }
    p = url + 8;
    end = p + strcspn(p, "/?#");
    if (*end == '?' || *end == '#') {
        what = "query and fragment are not supported";
        goto bad;
    }
    /* the last '@' before the path ends the userinfo: passwords may hold '@' */
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        what = "broken %-escape in the password";
        if (colon) {
            if (colon > p && !(u->user = sl_pct_decode(p, (size_t)(colon - p), true, NULL)))
                goto bad;
            if (!(u->pass = sl_pct_decode(colon + 1, (size_t)(at - colon - 1), true, NULL)))
                goto bad;
        } else if (at > p && !(u->pass = sl_pct_decode(p, (size_t)(at - p), true, NULL))) {
            goto bad;
        }
        if (u->pass && !u->pass[0]) {
            free(u->pass);
            u->pass = NULL;
        }
        if (u->user && !u->user[0]) {
            free(u->user);
            u->user = NULL;
        }
        p = at + 1;
    }
    what = "missing or malformed host";
    if (*p == '[') {
        host = p + 1;
        hend = memchr(host, ']', (size_t)(end - host));
        if (!hend || (hend + 1 < end && hend[1] != ':'))
            goto bad;
        if (hend + 1 < end)
            port = hend + 2;
    } else {
        host = p;
        hend = memchr(p, ':', (size_t)(end - p));
        if (hend)
            port = hend + 1;
        else
            hend = end;
    }
    if (hend == host)
        goto bad;
    u->host = sl_strndup(host, (size_t)(hend - host));
    if (port) {
        errno = 0;
        v = strtol(port, &e, 10);
        what = "port must be a number in 1..65535";
        if (port == end || e != end || errno || v < 1 || v > 65535 ||
            !(*port >= '0' && *port <= '9'))
            goto bad;
        u->port = (int)v;
    }
    if (*end == '/' && end[1]) {
        errno = 0;
        v = strtol(end + 1, &e, 10);
        what = "database must be a number";
        if (*e || errno || v < 0 || v > INT_MAX || !(end[1] >= '0' && end[1] <= '9'))
            goto bad;
        u->db = (int)v;
    }
    return 0;

bad:
    sl_redis_url_destroy(u);
    snprintf(why, n, "bad redis url '%s': %s", shown, what);
    return -1;
}

/* A Redis URL the source or sink can connect with, checked at lint. */
void sl_redis_url_where(const struct sl_redis_url *u, char *buf, size_t n)
{
    if (strchr(u->host, ':'))
        snprintf(buf, n, "[%s]:%d", u->host, u->port);
    else
        snprintf(buf, n, "%s:%d", u->host, u->port);
}

/* The one place a Redis URL is written for people: from the parsed URL,
 * so the password never reaches a log line whatever form it came in. */
void sl_redis_url_show(const struct sl_redis_url *u, char *buf, size_t n)
{
    char where[300], db[16] = "";
    int w;

    if (n < 4)
        return;
    sl_redis_url_where(u, where, sizeof(where));
    if (u->db >= 0)
        snprintf(db, sizeof(db), "/%d", u->db);
    w = snprintf(buf, n, "redis://%s%s%s%s%s", u->user ? u->user : "", u->pass ? ":***" : "",
                 u->user || u->pass ? "@" : "", where, db);
    if (w >= (int)n)  /* a very long user or host: cut, and say so */
        memcpy(buf + n - 4, "...", 4);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

struct req {
    struct sl_redis_conn *c;          /* NULL: orphaned, the reply only frees */
    redisAsyncContext    *ac;         /* the context it went out on; NULL: held */
    sl_redis_reply_fn     fn;
    void                 *priv;
    char                 *cmd;        /* held: the formatted command */
    long long             len;
    TAILQ_ENTRY(req)      link;
};

TAILQ_HEAD(req_list, req);

struct sl_redis_conn {
    struct sl_redis_conn_conf conf;
    char                shown[320];   /* redis://[user:***@]host:port[/db] */
    redisAsyncContext  *ac;
    enum sl_redis_state state;
    unsigned            attempt;      /* reconnects since the last success */
    int                 setup_left;   /* setup replies due before READY */
    int                 pending;      /* replies due on ac */
    int64_t             started;      /* connect began (mono ms) */
    int64_t             progress;     /* last reply, or first send when idle */
    struct event       *retry;        /* reconnect timer */
    struct event       *watch;        /* timeouts, while a context exists */
    struct sl_resolver  res;
    struct req_list     sent;         /* reply due */
    struct req_list     held;         /* waiting for a context (RESOLVING) */
    char                why[256];     /* why it is not READY */
    int                 busy;         /* our handlers on the stack */
    bool                freeing;      /* sl_redis_conn_free ran: no more callbacks */
};

static int64_t now_ms(void)
{
    return (int64_t)sl_mono_ms();
}

static void show_url(struct sl_redis_conn *c)
{
    sl_redis_url_show(c->conf.url, c->shown, sizeof(c->shown));
}

static void hold(struct sl_redis_conn *c)
{
    c->busy++;
}

static void release(struct sl_redis_conn *c)
{
    if (--c->busy == 0 && c->freeing)
        free(c);
}

/* Answer `rq` (taken off its list) with `reply` and free it. */
static void answer(struct sl_redis_conn *c, struct req *rq, redisReply *reply)
{
    sl_redis_reply_fn fn = rq->fn;
    void *priv = rq->priv;

    if (rq->ac) {
        rq->c = NULL; /* hiredis still holds it: its call frees it */
    } else {
        free(rq->cmd);
        free(rq);
    }
    if (fn)
        fn(c->conf.arg, reply, priv);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *rq = privdata;
    struct sl_redis_conn *c = rq->c;
    sl_redis_reply_fn fn = rq->fn;
    void *priv = rq->priv;
    bool current = c && c->ac == ac && rq->ac == ac;

    if (c)
        TAILQ_REMOVE(&c->sent, rq, link);
    free(rq);
    if (!c)
        return;
    if (current) {
        if (c->pending > 0)
            c->pending--;
        c->progress = now_ms();
    }
    /* a reply of a context we already left counts as lost */
    if (fn)
        fn(c->conf.arg, current ? reply : NULL, priv);
}

static void sent(struct sl_redis_conn *c, struct req *rq)
{
    rq->ac = c->ac;
    TAILQ_INSERT_TAIL(&c->sent, rq, link);
    if (c->pending++ == 0)
        c->progress = now_ms();
}

static struct req *req_new(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv)
{
    struct req *rq = sl_calloc(1, sizeof(*rq));

    rq->c = c;
    rq->fn = fn;
    rq->priv = priv;
    return rq;
}

/* Send (a context exists) or hold (resolving) a formatted command. */
static int submit(struct sl_redis_conn *c, struct req *rq, char *cmd, long long len)
{
    if (len < 0) {
        free(rq);
        return SL_ENOMEM;
    }
    if (c->state == SL_REDIS_RESOLVING) {
        rq->cmd = cmd;
        rq->len = len;
        TAILQ_INSERT_TAIL(&c->held, rq, link);
        return 0;
    }
    if (redisAsyncFormattedCommand(c->ac, on_reply, rq, cmd, (size_t)len) != REDIS_OK) {
        redisFreeCommand(cmd);
        free(rq);
        return SL_ECONN;
    }
    redisFreeCommand(cmd);
    sent(c, rq);
    return 0;
}

static bool takes_commands(const struct sl_redis_conn *c)
{
    return !c->freeing && (c->state == SL_REDIS_RESOLVING ||
                           (c->ac && (c->state == SL_REDIS_CONNECTING ||
                                      c->state == SL_REDIS_READY)));
}

int sl_redis_conn_cmd(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv, int argc,
                      const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    long long len;

    if (!takes_commands(c))
        return SL_ECONN;
    len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    return submit(c, req_new(c, fn, priv), cmd, len);
}

int sl_redis_conn_vcmdf(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv,
                        const char *fmt, va_list ap)
{
    char *cmd = NULL;
    int len;

    if (!takes_commands(c))
        return SL_ECONN;
    len = redisvFormatCommand(&cmd, fmt, ap);
    return submit(c, req_new(c, fn, priv), cmd, len);
}

int sl_redis_conn_cmdf(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv,
                       const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sl_redis_conn_vcmdf(c, fn, priv, fmt, ap);
    va_end(ap);
    return rc;
}

/* Commands held for a context that will not come: answered with NULL. */
static void fail_held(struct sl_redis_conn *c)
{
    struct req *rq;

    while (!c->freeing && (rq = TAILQ_FIRST(&c->held))) {
        TAILQ_REMOVE(&c->held, rq, link);
        answer(c, rq, NULL);
    }
}

static void start_connect(struct sl_redis_conn *c);

static void schedule_retry(struct sl_redis_conn *c)
{
    uint64_t delay = sl_backoff_ms(c->attempt, c->conf.backoff_base_ms, c->conf.backoff_cap_ms);
    struct timeval tv = { .tv_sec = (time_t)(delay / 1000),
                          .tv_usec = (suseconds_t)(delay % 1000) * 1000 };

    c->attempt++;
    c->state = SL_REDIS_DOWN;
    evtimer_add(c->retry, &tv);
    SL_DEBUG(c->conf.dbg, c->conf.inst, "reconnecting the %s to %s in %llu ms", c->conf.name,
             c->shown, (unsigned long long)delay);
}

/* The context is gone (hiredis answers its commands with NULL). */
static void lost(struct sl_redis_conn *c)
{
    bool was_ready = c->state == SL_REDIS_READY;

    c->ac = NULL;
    c->pending = 0;
    c->state = SL_REDIS_DOWN;
    evtimer_del(c->watch);
    if (c->freeing)
        return;
    schedule_retry(c);
    fail_held(c);
    if (was_ready && c->conf.down && !c->freeing)
        c->conf.down(c, c->conf.arg);
}

/* Could not get a context: say so on the first attempt only. */
static void cannot_connect(struct sl_redis_conn *c, const char *why)
{
    snprintf(c->why, sizeof(c->why), "%s", why);
    if (c->attempt == 0)
        SL_WARN(c->conf.inst, "cannot connect the %s to %s: %s", c->conf.name, c->shown, why);
    else
        SL_DEBUG(c->conf.dbg, c->conf.inst, "cannot connect the %s to %s: %s", c->conf.name,
                 c->shown, why);
}

void sl_redis_conn_drop(struct sl_redis_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    if (!ac)
        return;
    snprintf(c->why, sizeof(c->why), "%s", why);
    SL_WARN(c->conf.inst, "%s to %s: %s; reconnecting", c->conf.name, c->shown, why);
    hold(c);
    ac->data = NULL;
    c->ac = NULL;
    redisAsyncFree(ac); /* replies due see NULL (now, or after the running callback) */
    if (!c->freeing)
        lost(c);
    release(c);
}

static void set_ready(struct sl_redis_conn *c)
{
    c->state = SL_REDIS_READY;
    if (c->attempt > 0)
        SL_INFO(c->conf.inst, "%s to %s is back after %u retries", c->conf.name, c->shown,
                c->attempt);
    else
        SL_DEBUG(c->conf.dbg, c->conf.inst, "%s to %s is up", c->conf.name, c->shown);
    c->attempt = 0;
    c->why[0] = '\0';
    if (c->conf.up)
        c->conf.up(c, c->conf.arg);
}

void sl_redis_conn_setup_done(struct sl_redis_conn *c, bool ok, const char *what,
                              const redisReply *r)
{
    if (!c->ac || c->state != SL_REDIS_CONNECTING)
        return;
    if (!ok) {
        char why[300];

        snprintf(why, sizeof(why), "%s failed: %s", what,
                 r && r->type == REDIS_REPLY_ERROR && r->str ? r->str : "no reply");
        SL_ERROR(c->conf.inst, "redis at %s: %s", c->shown, why);
        sl_redis_conn_drop(c, why);
        return;
    }
    if (--c->setup_left == 0 && (c->ac->c.flags & REDIS_CONNECTED))
        set_ready(c);
}

static void on_auth_select(void *arg, redisReply *r, void *priv)
{
    (void)arg;
    if (!r)
        return; /* the connection went away: lost() handles it */
    sl_redis_conn_setup_done(priv, r->type != REDIS_REPLY_ERROR, "AUTH/SELECT", r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct sl_redis_conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    hold(c);
    if (status != REDIS_OK) {
        cannot_connect(c, ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        lost(c); /* hiredis frees the context after this */
    } else if (c->setup_left == 0) {
        set_ready(c);
    }
    release(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct sl_redis_conn *c = ac->data;

    if (!c || ac != c->ac)
        return;
    snprintf(c->why, sizeof(c->why), "%s", status == REDIS_OK ? "disconnected"
             : ac->c.errstr[0] ? ac->c.errstr : "connection lost");
    SL_WARN(c->conf.inst, "%s to %s lost: %s", c->conf.name, c->shown, c->why);
    hold(c);
    lost(c);
    release(c);
}

static void connect_ip(struct sl_redis_conn *c, const char *ip)
{
    const struct sl_redis_url *u = c->conf.url;
    redisAsyncContext *ac = redisAsyncConnect(ip, u->port);
    struct timeval tv = { .tv_sec = WATCH_MS / 1000, .tv_usec = (WATCH_MS % 1000) * 1000 };
    struct req *rq;

    if (!ac || ac->err || redisLibeventAttach(ac, c->conf.base) != REDIS_OK) {
        cannot_connect(c, ac && ac->err ? ac->errstr
                          : ac ? "cannot attach to the event loop" : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(c);
        fail_held(c);
        return;
    }
    ac->data = c; /* the callers hold c */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = SL_REDIS_CONNECTING;
    c->started = now_ms();
    c->pending = 0;
    c->setup_left = 0;
    evtimer_add(c->watch, &tv);
    if (u->pass && (u->user ? sl_redis_conn_cmdf(c, on_auth_select, c, "AUTH %s %s", u->user,
                                                 u->pass)
                            : sl_redis_conn_cmdf(c, on_auth_select, c, "AUTH %s", u->pass)) == 0)
        c->setup_left++;
    if (u->db >= 0 && sl_redis_conn_cmdf(c, on_auth_select, c, "SELECT %d", u->db) == 0)
        c->setup_left++;
    if (c->conf.setup)
        c->setup_left += c->conf.setup(c, c->conf.arg);
    if (c->freeing)
        return;
    /* what was held while resolving follows the setup */
    while (c->ac == ac && (rq = TAILQ_FIRST(&c->held))) {
        TAILQ_REMOVE(&c->held, rq, link);
        if (redisAsyncFormattedCommand(ac, on_reply, rq, rq->cmd, (size_t)rq->len) != REDIS_OK) {
            answer(c, rq, NULL);
            continue;
        }
        redisFreeCommand(rq->cmd);
        rq->cmd = NULL;
        sent(c, rq);
    }
}

static void on_resolved(const char *ip, const char *why, void *arg)
{
    struct sl_redis_conn *c = arg;

    hold(c);
    if (ip) {
        connect_ip(c, ip);
    } else {
        cannot_connect(c, why);
        schedule_retry(c);
        fail_held(c);
    }
    release(c);
}

static void start_connect(struct sl_redis_conn *c)
{
    hold(c);
    c->state = SL_REDIS_RESOLVING;
    sl_resolve(&c->res, c->conf.url->host, on_resolved, c);
    release(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_connect(arg);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct sl_redis_conn *c = arg;
    int64_t now = now_ms();
    char why[128];

    (void)fd, (void)what;
    if (!c->ac)
        return;
    if (c->state == SL_REDIS_CONNECTING && now - c->started > c->conf.connect_timeout_ms) {
        snprintf(why, sizeof(why), "connect or setup timed out after %lld ms",
                 (long long)c->conf.connect_timeout_ms);
        sl_redis_conn_drop(c, why);
    } else if (c->conf.reply_timeout_ms > 0 && c->pending > 0 &&
               now - c->progress > c->conf.reply_timeout_ms) {
        snprintf(why, sizeof(why), "no reply for %lld ms", (long long)(now - c->progress));
        sl_redis_conn_drop(c, why);
    }
}

struct sl_redis_conn *sl_redis_conn_new(const struct sl_redis_conn_conf *conf)
{
    struct sl_redis_conn *c = sl_calloc(1, sizeof(*c));

    c->conf = *conf;
    if (!c->conf.name)
        c->conf.name = "connection";
    if (c->conf.connect_timeout_ms <= 0)
        c->conf.connect_timeout_ms = 5000;
    if (!c->conf.backoff_base_ms)
        c->conf.backoff_base_ms = 100;
    if (!c->conf.backoff_cap_ms)
        c->conf.backoff_cap_ms = 5000;
    show_url(c);
    TAILQ_INIT(&c->sent);
    TAILQ_INIT(&c->held);
    sl_resolver_init(&c->res, conf->base);
    c->retry = evtimer_new(conf->base, on_retry, c);
    c->watch = event_new(conf->base, -1, EV_PERSIST, on_watch, c);
    if (!c->retry || !c->watch) {
        /* only malloc fails there: out of memory, as sl_malloc treats it */
        fprintf(stderr, "sluice: fatal: out of memory creating timers\n");
        abort();
    }
    snprintf(c->why, sizeof(c->why), "not connected yet");
    return c;
}

void sl_redis_conn_start(struct sl_redis_conn *c)
{
    if (c->state == SL_REDIS_DOWN && !evtimer_pending(c->retry, NULL))
        start_connect(c);
}

void sl_redis_conn_free(struct sl_redis_conn *c)
{
    redisAsyncContext *ac;
    struct req *rq;

    if (!c || c->freeing)
        return;
    hold(c);
    c->freeing = true;
    sl_resolver_destroy(&c->res);
    if (c->retry)
        event_free(c->retry);
    if (c->watch)
        event_free(c->watch);
    c->retry = c->watch = NULL;
    while ((rq = TAILQ_FIRST(&c->held))) {
        TAILQ_REMOVE(&c->held, rq, link);
        answer(c, rq, NULL);
    }
    while ((rq = TAILQ_FIRST(&c->sent))) {
        TAILQ_REMOVE(&c->sent, rq, link);
        answer(c, rq, NULL);
    }
    ac = c->ac;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* deferred by hiredis inside its callback; orphans only free */
    }
    release(c);
}

enum sl_redis_state sl_redis_conn_state(const struct sl_redis_conn *c)
{
    return c->state;
}

bool sl_redis_conn_ready(const struct sl_redis_conn *c)
{
    return c->ac && c->state == SL_REDIS_READY && !c->freeing;
}

const char *sl_redis_conn_why(const struct sl_redis_conn *c)
{
    return c->why;
}

void sl_redis_conn_flush(struct sl_redis_conn *c, int64_t ms)
{
    int64_t end = now_ms() + ms;

    while (c->ac && c->state == SL_REDIS_READY && c->pending > 0) {
        redisAsyncContext *ac = c->ac;
        struct pollfd pfd = { .fd = ac->c.fd, .events = POLLIN };
        int64_t left = end - now_ms();

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
