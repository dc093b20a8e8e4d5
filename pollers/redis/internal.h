/* The Redis queue poller's internals, shared by its files:
 *
 *   redis.c   the source: ops, flow control, lanes, checkpoints, metrics
 *   stream.c  mode stream: consumer group, XREADGROUP, reclaim script
 *   list.c    mode list: reliable fetch into leases, reaper script
 *   record.c  the SQS-shaped record JSON and the filter document
 *
 * Both modes look the same to redis.c: a fetch yields messages (id, body,
 * fields, receive count, timestamps); a checkpoint deletes them; a
 * release makes them visible again after a delay; a beat extends the lease
 * of those still held. */
#ifndef SLUICE_POLLERS_REDIS_INTERNAL_H
#define SLUICE_POLLERS_REDIS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "sluice/config.h"
#include "sluice/invoke.h"
#include "sluice/poller.h"
#include "sluice/redis.h"

#include "conf.h"

#define RQ_MSG_MAX        (SL_PAYLOAD_MAX - SL_EVENT_SLACK) /* body bytes a message may have */
#define RQ_BLOCK_MS       1000    /* a blocking read returns at least this often (stop) */
#define RQ_CMD_TIMEOUT_MS 10000   /* a command unanswered this long: the connection is dead */
#define RQ_CONNECT_MS     5000    /* connect, AUTH, SELECT and setup */
#define RQ_TICK_MS        100     /* watchdog, reclaim and beat scheduling */

struct rq;

/* ------------------------------------------------------------------ */
/* connections (sluice/redis.h)                                        */

/* A command on `c` once it is READY; nonzero (`fn` not called) before. */
static inline int rq_cmd(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv, int argc,
                         const char **argv, const size_t *lens)
{
    return sl_redis_conn_ready(c) ? sl_redis_conn_cmd(c, fn, priv, argc, argv, lens) : -1;
}

/* ------------------------------------------------------------------ */
/* messages                                                            */

/* One message as a fetch returns it; strings point into the reply. */
struct rq_msg {
    const char *id;
    size_t      idlen;
    const char *body;
    size_t      blen;
    const redisReply *fields;         /* stream: [f, v, f, v...], or NULL */
    int         skip;                 /* index in fields of the body's field, or -1 */
    int         receive_count;
    int64_t     sent_ms;              /* SentTimestamp */
    int64_t     first_ms;             /* ApproximateFirstReceiveTimestamp */
};

/* What the poller keeps in sl_record.handle. */
struct rq_rec {
    int     lane;
    int64_t first_ms;
    bool    done;                     /* checkpointed or released */
};

/* record.c: the record's part of the event (SQS record JSON), malloc'd. */
char *sl__rq_record_json(const struct rq *q, const struct rq_msg *m, size_t *len);
/* The filter document: the record JSON with "body" parsed when it is
 * JSON, else the plain string it is. New reference. */
json_t *sl__rq_filter_doc(const char *json, size_t len);
void sl__rq_md5_hex(const void *data, size_t len, char out[33]);
/* md5OfMessageAttributes of a stream entry's fields [f, v, f, v...] (skip:
 * the index of the body's field, or -1), as SQS computes it, into out;
 * returns the number of attributes (0: none, out is ""). */
size_t sl__rq_attrs_md5(const redisReply *fields, int skip, char out[33]);

/* ------------------------------------------------------------------ */
/* modes                                                               */

struct rq_mode {
    const char *name;
    /* command connection setup: scripts, group; returns replies awaited */
    int  (*setup)(struct rq *q, struct sl_redis_conn *c);
    /* one fetch on the reader connection; sl__rq_fetched() reports */
    void (*fetch)(struct rq *q, size_t count);
    /* one reclaim pass on the command connection; sl__rq_fetched() reports */
    void (*reclaim)(struct rq *q, size_t count);
    /* delete (ack) ids; `done(q, ok, arg)` when confirmed */
    void (*ack)(struct rq *q, const char **ids, size_t n, bool cleanup,
                void (*done)(struct rq *q, bool ok, void *arg), void *arg);
    /* make ids visible again after delay_ms (-1: the visibility timeout
     * counted from the receive, as SQS) */
    void (*release)(struct rq *q, const char **ids, const int64_t *delay_ms,
                    const int64_t *first_ms, size_t n);
    /* extend the leases of ids this instance still holds */
    void (*beat)(struct rq *q, const char **ids, size_t n);
    /* depth, pending, oldest age into q->g_* */
    void (*stats)(struct rq *q);
    /* fetched but handed back at stop: visible again now */
    void (*handback)(struct rq *q, const char **ids, size_t n);
};

extern const struct rq_mode sl__rq_stream_mode;
extern const struct rq_mode sl__rq_list_mode;

/* ------------------------------------------------------------------ */
/* the source                                                          */

struct rq_ack;
struct held;
TAILQ_HEAD(rq_ack_list, rq_ack);

struct rq {
    struct sl_source   *s;
    struct sl_engine   *e;
    struct event_base  *base;
    const struct sl_source_conf *conf;
    const struct sl_redis_opts *o;     /* conf->opts */
    const struct rq_mode *mode;
    struct sl_redis_url u;
    char                inst[96];
    char                consumer[256];
    char                arn[512];
    char                region[64];
    struct sl_filter   *filter;
    bool                filter_body;   /* some pattern reads "body" */
    struct sl_redis_conn *cmd, *rd;
    char                sha[8][41];    /* loaded scripts, in the mode's order */
    int                 sha_next;
    bool                starting_latest; /* a new group starts at $ */
    bool                started, stopping, paused, closing, stop_reported;
    bool                reading, reclaiming, statting, beating;
    char                cursor[64];    /* reclaim cursor (stream) */
    /* flow: records held (pushed, not yet freed by the engine) */
    size_t              held;          /* fetched, not yet final */
    size_t             *lane_load;
    size_t              nlanes;
    char              (*lane_name)[12];
    struct event       *tick, *kick, *rd_wait;
    bool                read_wait;     /* the reader pauses after an error */
    struct held        *held_list;     /* records held, for the lease refresh */
    int64_t             next_reclaim, next_beat, next_stats; /* mono ms */
    int64_t             reclaim_every, beat_every;
    struct rq_ack_list  acks;          /* sent, not yet confirmed */
    struct rq_ack_list  unsent;        /* waiting for the command connection */
    /* counters and gauges */
    uint64_t            n_received, n_deleted, n_redriven, n_released, n_reclaimed;
    double              g_depth, g_pending, g_oldest_s;
    struct sl_metric   *m_depth, *m_pending, *m_oldest, *m_msgs;
};

/* A fetch or reclaim returned messages (NULL/0 on error: `retry_ms` says
 * when to try again). Called by the modes. */
void sl__rq_fetched(struct rq *q, bool reclaim, const struct rq_msg *m, size_t n, int64_t retry_ms);

/* redis.c, for the modes' scripts. The setup callback of SCRIPT LOAD
 * (priv: the connection): the SHA1 goes to the next q->sha slot, so the
 * scripts must be loaded in the mode's order. */
void sl__rq_script_loaded(void *arg, redisReply *r, void *priv);
/* An error reply of a script on `c` (false: not an error): logged as
 * "<what> on <key> failed"; NOSCRIPT drops the connection so that its
 * setup loads the scripts again. */
bool sl__rq_script_error(struct rq *q, struct sl_redis_conn *c, const redisReply *r,
                     const char *what);
/* A stats script's reply {depth, pending, oldest} (NULL: lost): clears
 * q->statting and sets q->g_depth and q->g_pending; false when it is not
 * that shape (the gauges stay), else the mode reads the oldest itself. */
bool sl__rq_stats_reply(struct rq *q, const redisReply *r);
/* Send an ack script (argv, argc) on the command connection; `done(q, ok,
 * arg)` when it is confirmed, at once with ok false when it cannot be sent. */
void sl__rq_script_ack(struct rq *q, int argc, const char **argv,
                   void (*done)(struct rq *q, bool ok, void *arg), void *arg);

#endif
