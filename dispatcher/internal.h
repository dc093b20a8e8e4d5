/* Internal to dispatcher/: the durable asynchronous event queue, with two backends behind
 * one interface: SQLite in data_dir (asyncq.c, WAL mode, the default) and
 * a Redis stream that several instances share (asyncq_redis.c). The loop
 * keeps an in-memory index of the events this instance holds and hears
 * about stores, updates and deletes through callbacks. */
#ifndef SLUICE_DISPATCHER_INTERNAL_H
#define SLUICE_DISPATCHER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/pool.h"

struct sl__asyncq;

struct sl__aevent {
    char                 id[40];          /* request id, the primary key */
    char                 function[72];
    char                *payload;         /* JSON text */
    size_t               len;
    int64_t              enqueued_ms;     /* Unix ms */
    int64_t              next_ms;         /* not before */
    int                  attempts;        /* invocations started */
    int                  throttles;       /* refused by a limit, not counted as attempts */
    char                 last_error[256];
    bool                 busy;            /* running or being settled */
    int                  bstate;          /* backend's own: Redis reads its state, deletes */
    char                 ref[48];         /* backend: Redis stream entry id */
    struct sl__asyncq   *q;
    TAILQ_ENTRY(sl__aevent) link;
    struct sl__aevent   *hnext;           /* in the index's hash by id */
};

/* Open the queue `conf->async_queue` names ("sqlite": data_dir/async.db;
 * redis://…: the stream `conf->async_queue_key`). SQLite loads what it
 * holds, so a restart resumes every event accepted before; Redis connects
 * and reads in the background. `ready(arg)` runs on the loop whenever
 * events join the index other than through a put of ours (another
 * instance's put, a resume, a reclaim); it may be NULL. Blocking: startup
 * only. */
int sl__asyncq_open(struct event_base *base, struct sl_pool *pool,
                    const struct sl_server_conf *conf, void (*ready)(void *arg), void *arg,
                    struct sl__asyncq **out, struct sl_err *err);
void sl__asyncq_close(struct sl__asyncq *q);

/* Store a new event; done(arg, 0, id) once it is durable, or a code
 * (never before put returned). */
void sl__asyncq_put(struct sl__asyncq *q, const char *fn, const char *payload, size_t len,
                    int64_t now_ms, void (*done)(void *arg, int rc, const char *id), void *arg);

/* The oldest event due at `now` that is not busy (marked busy), or NULL;
 * *next is lowered to the earliest time a waiting event becomes due. */
struct sl__aevent *sl__asyncq_next_due(struct sl__asyncq *q, int64_t now, int64_t *next);
void sl__asyncq_release(struct sl__aevent *ev);

/* Persist attempts, next_ms and last_error (best effort: a lost update
 * means an extra attempt after a crash, never a lost event). */
void sl__asyncq_update(struct sl__asyncq *q, struct sl__aevent *ev);

/* Delete for good; then done(arg, rc) and the caller forgets the event. */
void sl__asyncq_delete(struct sl__asyncq *q, struct sl__aevent *ev,
                       void (*done)(void *arg, int rc), void *arg);
void sl__asyncq_forget(struct sl__aevent *ev);

/* Events this instance holds (with Redis: not the whole stream). */
size_t  sl__asyncq_depth(const struct sl__asyncq *q);
int64_t sl__asyncq_oldest_ms(const struct sl__asyncq *q);

/* ------------------------------------------------------------------ */
/* Backends: what asyncq.c shares with asyncq_redis.c                  */

struct sl__aput {                         /* one put in flight */
    struct sl__asyncq   *q;
    struct sl__aevent   *ev;              /* the new event; owned until put_done */
    void               (*done)(void *arg, int rc, const char *id);
    void                *arg;
};

struct sl__asyncq_ops {
    const char *name;
    /* store p->ev; then sl__asyncq_put_done(p, ...) on the loop */
    void (*put)(struct sl__asyncq *q, struct sl__aput *p);
    void (*update)(struct sl__asyncq *q, struct sl__aevent *ev);
    void (*remove)(struct sl__asyncq *q, struct sl__aevent *ev, void (*done)(void *arg, int rc),
                   void *arg);
    /* q->closing is set; pending callbacks end now (SL_ESTOPPED) or are
     * finished; frees q->ctx. The index is freed after. */
    void (*close)(struct sl__asyncq *q);
};

TAILQ_HEAD(sl__aevent_list, sl__aevent);

struct sl__asyncq {
    const struct sl__asyncq_ops *ops;
    void                  *ctx;           /* the backend's */
    struct event_base     *base;
    struct sl_pool        *pool;
    struct sl__aevent_list events;        /* held, oldest enqueued first */
    struct sl__aevent    **buckets;       /* hash of `events` by id */
    size_t                 nbuckets;      /* power of two */
    size_t                 depth;
    void                 (*ready)(void *arg);
    void                  *ready_arg;
    bool                   closing;
};

/* A new event (not indexed yet), its payload copied. */
struct sl__aevent *sl__aevent_new(struct sl__asyncq *q, const char *id, const char *fn,
                                  const char *payload, size_t len, int64_t enqueued_ms);
void sl__aevent_free(struct sl__aevent *ev);

/* Add to the index (takes `ev`); look up by request id. */
void sl__asyncq_index(struct sl__asyncq *q, struct sl__aevent *ev);
struct sl__aevent *sl__asyncq_find(const struct sl__asyncq *q, const char *id);

/* Events joined the index from elsewhere: tell the dispatcher. */
void sl__asyncq_arrived(struct sl__asyncq *q);

/* Report a put: `index` keeps the event in the index on success (SQLite);
 * otherwise it is freed (Redis: it comes back through the reader). Frees p. */
void sl__asyncq_put_done(struct sl__aput *p, int rc, bool index);

int sl__asyncq_redis_open(struct sl__asyncq *q, const struct sl_server_conf *conf,
                          struct sl_err *err);

#endif
