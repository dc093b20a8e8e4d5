/* sluice: execution environments and the per-function pool.
 *
 * An environment (env) is one sandboxed handler process, initialized once
 * and reused for invocation after invocation, like Lambda's. A function
 * pool keeps a function's envs: it starts them cold (or forks them from a
 * SnapStart template), keeps `provisioned_concurrency` of them initialized,
 * caps them at `reserved_concurrency`, reaps idle ones, and turns every way
 * an invocation can end into one result. Everything runs on the loop. */
#ifndef SLUICE_ENV_H
#define SLUICE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "sluice/config.h"
#include "sluice/invoke.h"
#include "sluice/sandbox.h"

struct sl_fnpool;

struct sl_fnpool_opts {
    int64_t idle_ms;             /* reap envs idle this long (beyond the provisioned ones) */
    int64_t max_envs;            /* cap when reserved_concurrency is -1 */
};

/* Create the pool of `fn` (borrowed: must outlive the pool) and start its
 * provisioned envs and SnapStart template. */
int sl_fnpool_new(struct event_base *base, struct sl_sandbox *sb,
                  const struct sl_function_conf *fn, const struct sl_fnpool_opts *o,
                  struct sl_fnpool **out, struct sl_err *err);

/* Run `req` on an env. Returns 0 and calls `cb` exactly once later, or
 * SL_EAGAIN when the function is at its concurrency cap (cb not called). */
int sl_fnpool_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req,
                     sl_invoke_cb cb, void *arg);

/* Envs alive, idle and initialized (ready for a warm invoke). */
size_t sl_fnpool_envs(const struct sl_fnpool *pool);
size_t sl_fnpool_idle(const struct sl_fnpool *pool);
size_t sl_fnpool_busy(const struct sl_fnpool *pool);

/* Stop everything: pending invocations fail with Sandbox.Failure
 * ("shutting down"), envs get a shutdown notice and are killed. */
void sl_fnpool_free(struct sl_fnpool *pool);

/* ------------------------------------------------------------------ */
/* Every function of a configuration: the host's sandbox preparation and
 * one pool per function.                                              */

struct sl_functions;

/* Prepare the sandbox under `conf->server.data_dir` and start a pool for
 * each function, or for `only` when not NULL (provisioned envs and
 * SnapStart templates start now). `conf` is borrowed and must outlive
 * the result. */
int sl_functions_new(struct event_base *base, const struct sl_config *conf, const char *only,
                     struct sl_functions **out, struct sl_err *err);
struct sl_fnpool *sl_functions_pool(struct sl_functions *f, const char *name);
/* Send every function's log lines (handler output, START/REPORT) to `ring`
 * (borrowed; must outlive `f`) from now on, besides sluice's log. */
struct sl_logring;
void sl_functions_set_logring(struct sl_functions *f, struct sl_logring *ring);
void sl_functions_free(struct sl_functions *f);

/* Directory of the handler runtime libraries: $SLUICE_RUNTIME_DIR, else
 * runtime/ beside the directory of the sluice binary. NULL if missing.
 * Caller frees. */
char *sl_runtime_dir(void);

/* A random UUID (v4) into buf[37]. */
void sl_uuid(char buf[37]);

#endif
