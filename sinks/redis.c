/* Redis sink: XADD <key> * record <json>, on the shared Redis connection
 * (sluice/redis.h): a host name resolves on the loop, writes made
 * meanwhile are held, and writes made while it connects are pipelined
 * behind AUTH and SELECT. While it is down (waiting to reconnect), writes
 * fail at once with a retriable error; a lost connection fails what was
 * in flight, retriably, and reconnects with backoff.
 *
 * The connection answers every command exactly once; a write already
 * reported when the sink closed is orphaned (w->c = NULL) and only freed
 * there. */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/redis.h"

#include "internal.h"

static const struct sl_redis_sink_opts *opts_of(const struct sl_sink *s)
{
    return s->conf->opts;
}

#define RECONNECT_BASE_MS   100
#define RECONNECT_CAP_MS    5000
#define CONNECT_TIMEOUT_MS  5000

struct rctx;

struct rwrite {
    struct rctx     *c;        /* NULL once reported (orphaned) */
    sl_sink_done_fn  done;
    void            *arg;
    TAILQ_ENTRY(rwrite) link;
};

TAILQ_HEAD(rwrite_list, rwrite);

struct rctx {
    struct sl_sink       *s;
    struct sl_redis_url   u;
    char                  where[300];  /* host:port, for messages */
    struct sl_redis_conn *conn;
    struct rwrite_list    writes;      /* in flight, in order */
};

static void on_reply(void *arg, redisReply *r, void *priv)
{
    struct rwrite *w = priv;
    struct rctx *c = w->c;
    struct sl_err err;
    int rc = 0;

    (void)arg;
    if (!c) {
        free(w);
        return;
    }
    TAILQ_REMOVE(&c->writes, w, link);
    if (!r) {
        const char *why = sl_redis_conn_why(c->conn);

        rc = sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: %s",
                        opts_of(c->s)->key, c->where, why[0] ? why : "connection closed");
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc = sl_err_set(&err, SL_EPROTO, true, "cannot add to stream %s at %s: %s",
                        opts_of(c->s)->key, c->where, r->str ? r->str : "error reply");
    } else if (r->type != REDIS_REPLY_STRING) {
        rc = sl_err_set(&err, SL_EPROTO, true,
                        "cannot add to stream %s at %s: unexpected reply type %d",
                        opts_of(c->s)->key, c->where, r->type);
    }
    /* nothing of `c` is touched after done: it may free the sink */
    sl__sink_done(c->s, w->done, w->arg, rc, rc ? &err : NULL);
    free(w);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static int redis_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_redis_sink_opts *conf = s->conf->opts;
    struct rctx *c;
    char shown[512], why[SL_ERR_MSG_MAX];

    if (!conf->key || !conf->key[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: redis sink needs a key",
                          s->inst);
    c = sl_calloc(1, sizeof(*c));
    if (sl_redis_url_parse(conf->url, &c->u, why, sizeof(why)) != 0) {
        bool tls = strncmp(conf->url, "rediss://", 9) == 0;

        sl_redis_url_destroy(&c->u);
        free(c);
        return sl_err_set(err, tls ? SL_EUNSUPPORTED : SL_ECONFIG, false, "%s", why);
    }
    c->s = s;
    TAILQ_INIT(&c->writes);
    sl_redis_url_where(&c->u, c->where, sizeof(c->where));
    {
        struct sl_redis_conn_conf cc = {
            .base = s->base, .url = &c->u, .inst = s->inst, .dbg = SL_DBG_SINK,
            .connect_timeout_ms = CONNECT_TIMEOUT_MS, .backoff_base_ms = RECONNECT_BASE_MS,
            .backoff_cap_ms = RECONNECT_CAP_MS, .arg = c,
        };
        c->conn = sl_redis_conn_new(&cc);
    }
    s->ctx = c;
    sl_redis_url_show(&c->u, shown, sizeof(shown));
    SL_INFO(s->inst, "adding records to stream %s at %s", conf->key, shown);
    sl_redis_conn_start(c->conn);
    return 0;
}

static void redis_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                        void *arg)
{
    struct rctx *c = s->ctx;
    struct rwrite *w;
    struct sl_err err;

    if (sl_redis_conn_state(c->conn) == SL_REDIS_DOWN) {
        sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: not connected (%s)",
                   opts_of(s)->key, c->where, sl_redis_conn_why(c->conn));
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->done = done;
    w->arg = arg;
    w->c = c;
    TAILQ_INSERT_TAIL(&c->writes, w, link);
    /* the command is formatted (json copied) here, held or sent */
    if (sl_redis_conn_cmdf(c->conn, on_reply, w, "XADD %s * record %b", opts_of(s)->key, json,
                           len) != 0) {
        TAILQ_REMOVE(&c->writes, w, link);
        free(w);
        sl_err_set(&err, SL_ECONN, true, "cannot add to stream %s at %s: connection closing",
                   opts_of(s)->key, c->where);
        sl__sink_fail_soon(s, done, arg, &err);
    }
}

static void redis_close(struct sl_sink *s)
{
    struct rctx *c = s->ctx;
    struct rwrite *w;
    struct sl_err err;

    if (!c)
        return;
    s->ctx = NULL;
    sl_err_set(&err, SL_ESTOPPED, false, "add to stream %s at %s not confirmed: sink stopped",
               opts_of(s)->key, c->where);
    while ((w = TAILQ_FIRST(&c->writes))) {
        TAILQ_REMOVE(&c->writes, w, link);
        w->c = NULL; /* freed when the connection answers it */
        sl__sink_done(s, w->done, w->arg, SL_ESTOPPED, &err);
    }
    sl_redis_conn_free(c->conn); /* safe inside its own callback */
    sl_redis_url_destroy(&c->u);
    free(c);
}

static const struct sl_sink_ops redis_ops = {
    .name = "redis",
    .open = redis_open,
    .write = redis_write,
    .close = redis_close,
};

/* ------------------------------------------------------------------ */
/* Configuration: the keys of a `type: redis` sink                        */

#define F(field) offsetof(struct sl_redis_sink_opts, field)
static const struct sl_conf_key redis_keys[] = {
    { .name = "url", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(url),
      .check = sl_conf_check_redis_url, .desc = "Redis URL." },
    { .name = "key", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(key),
      .desc = "Stream the records are added to (XADD)." },
};
#undef F

const struct sl_sink_type sl_redis_sink = {
    .conf = {
        .name = "redis",
        .keys = redis_keys,
        .nkeys = sizeof(redis_keys) / sizeof(redis_keys[0]),
        .size = sizeof(struct sl_redis_sink_opts),
    },
    .ops = &redis_ops,
};
