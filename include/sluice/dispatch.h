/* sluice: the dispatcher. It schedules invocations onto function pools
 * under the account-wide concurrency limit (server.concurrency_limit) and
 * each function's reserved_concurrency, counts them in the metrics, and
 * owns the durable asynchronous queue with its retries and destinations. */
#ifndef SLUICE_DISPATCH_H
#define SLUICE_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/env.h"
#include "sluice/metrics.h"
#include "sluice/pool.h"

struct sl_dispatcher;

/* Why an invocation was refused (HTTP 429 with Lambda's Reason). */
struct sl_throttle {
    const char *reason;        /* "ConcurrentInvocationLimitExceeded", ... */
    int         retry_after_s;
};

/* `conf`, `fns`, `metrics` and `pool` are borrowed. */
int sl_dispatcher_new(struct event_base *base, const struct sl_config *conf,
                      struct sl_functions *fns, struct sl_metrics *metrics, struct sl_pool *pool,
                      struct sl_dispatcher **out, struct sl_err *err);

bool sl_dispatcher_has_function(const struct sl_dispatcher *d, const char *fn);

/* Run one invocation now. Returns 0 and calls `cb` exactly once later;
 * SL_ENOTFOUND for an unknown function; SL_EAGAIN when throttled (`t`
 * says why; cb not called). `req->event` is borrowed until cb. */
int sl_dispatcher_invoke(struct sl_dispatcher *d, const char *fn, const struct sl_invoke_req *req,
                       sl_invoke_cb cb, void *arg, struct sl_throttle *t);

/* Queue an asynchronous invocation durably. `done(arg, 0, request_id)`
 * runs once the event is committed to the queue (answer 202 then), or
 * done(arg, rc, NULL) when it could not be stored. `payload` is copied. */
typedef void (*sl_accept_fn)(void *arg, int rc, const char *request_id);
int sl_dispatcher_enqueue(struct sl_dispatcher *d, const char *fn, const char *payload, size_t len,
                        sl_accept_fn done, void *arg);

/* The sink named `name` (opened by the dispatcher), or NULL. */
struct sl_sink *sl_dispatcher_sink(struct sl_dispatcher *d, const char *name);

/* The log sink (logship.c): function log lines from `ring` go to the
 * dispatcher's sink named by each function's log_sink, else
 * server.log_sink, as JSON records, never holding up an invocation (a
 * bounded queue; what does not fit or fails is dropped and counted).
 * NULL when no function has a log sink. `c`, `ring` and `d` are borrowed.
 * Stop it (no more writes) before sl_dispatcher_free, and free it after,
 * when the writes it had in flight have ended. */
struct sl_logring;
struct sl_logship;
struct sl_logship *sl_logship_new(struct sl_dispatcher *d, const struct sl_config *c,
                                  struct sl_logring *ring);
void sl_logship_stop(struct sl_logship *ls);
void sl_logship_free(struct sl_logship *ls);

/* Stop taking work; `done` runs once in-flight invocations finished. */
void sl_dispatcher_drain(struct sl_dispatcher *d, void (*done)(void *arg), void *arg);

/* From now on a finishing asynchronous invocation only leaves its event in
 * the queue (to run again after a restart): no update, no destination.
 * For the last results that arrive while everything is torn down, after
 * the worker pool is gone. */
void sl_dispatcher_abandon(struct sl_dispatcher *d);

/* Free after the functions (their last results still arrive here) and
 * after the worker pool (sl_pool_free runs the queue's and sinks' last
 * completions, which reach into the dispatcher); the runtime and the
 * tests free in that order. */
void sl_dispatcher_free(struct sl_dispatcher *d);

#endif
