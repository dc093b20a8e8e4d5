/* sluice: a small worker pool for blocking work (fsync, SQLite, DNS) that
 * must stay off the event loop. `work` runs on a worker thread; `done` runs
 * afterwards on the loop thread, where everything else lives. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <event2/event.h>

#include "sluice/err.h"

struct sl_pool;

typedef void (*sl_pool_work_fn)(void *arg);
typedef void (*sl_pool_done_fn)(void *arg);

/* Start `nthreads` workers whose completions are delivered on `base`. */
int sl_pool_new(struct event_base *base, int nthreads, struct sl_pool **out,
                struct sl_err *err);

/* Queue `work(arg)`; `done(arg)` (may be NULL) follows on the loop thread.
 * `arg` stays owned by the caller; it must live until `done` ran. Call from
 * the loop thread only. */
void sl_pool_submit(struct sl_pool *pool, sl_pool_work_fn work, sl_pool_done_fn done,
                    void *arg);

/* Jobs queued or running right now. */
size_t sl_pool_pending(const struct sl_pool *pool);

/* Finish every queued job, join the workers, run the remaining `done`
 * callbacks, free. Accepts NULL. Call from the loop thread. */
void sl_pool_free(struct sl_pool *pool);

#endif
