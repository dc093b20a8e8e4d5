/* Internal: the durable asynchronous event queue (SQLite, WAL mode). All
 * SQLite calls run on the worker pool; the loop keeps an in-memory index
 * of every queued event and hears about commits through callbacks. */
#ifndef SLUICE_ASYNCQ_H
#define SLUICE_ASYNCQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

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
    struct sl__asyncq   *q;
    TAILQ_ENTRY(sl__aevent) link;
};

/* Open (or create) the queue at `path` and load what it holds: a restart
 * resumes every event accepted before. Blocking: startup only. */
int sl__asyncq_open(struct event_base *base, struct sl_pool *pool, const char *path,
                    struct sl__asyncq **out, struct sl_err *err);
void sl__asyncq_close(struct sl__asyncq *q);

/* Commit a new event; done(arg, 0, id) after the commit, or a code. */
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

size_t  sl__asyncq_depth(const struct sl__asyncq *q);
int64_t sl__asyncq_oldest_ms(const struct sl__asyncq *q);

#endif
