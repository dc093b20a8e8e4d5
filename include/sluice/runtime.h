/* sluice: the runtime root.
 *
 * One per process: the event_base every component registers with, the
 * worker pool, and the registry of running components (pollers, sinks, the
 * HTTP API) that are started in order and stopped in reverse order. No
 * other mutable globals. */
#ifndef SLUICE_RUNTIME_H
#define SLUICE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "sluice/err.h"
#include "sluice/pool.h"

struct sl_runtime;
struct sl_component;

/* What the runtime needs to drive a component. */
struct sl_component_ops {
    const char *kind;                                 /* "source", "sink", "api" */
    int  (*start)(void *ctx, struct sl_err *err);     /* register events; no blocking */
    /* Begin a graceful stop; call sl_component_stopped(c) when finished,
     * possibly before returning. NULL: stops at once. */
    void (*stop)(void *ctx, struct sl_component *c);
    void (*free)(void *ctx);                          /* may be NULL */
};

/* What the runtime itself needs to know; the configuration stays with
 * whoever loaded it. */
struct sl_runtime_opts {
    int64_t shutdown_grace_ms;       /* how long a graceful stop may take */
    int     worker_threads;          /* threads of the worker pool */
    int     notify;                  /* tell a service manager (sd_notify): READY=1 once
                                      * every component started, STOPPING=1, and WATCHDOG=1
                                      * from the loop when WATCHDOG_USEC asks for it */
};

/* Live reload. The command that wired the components installs `fn`
 * (cli/reload.c): it builds the new configuration beside the running one
 * and swaps it in; 0, or a negative SL_E* with every problem in *msg
 * (malloc'd, one a line; on success the summary). */
typedef int (*sl_reload_fn)(void *arg, char **msg);

/* Told around every reload, e.g. to say RELOADING=1 and READY=1 to
 * systemd: begin (rc 0) before the file is read, end with its result. */
typedef void (*sl_reload_hook)(void *arg, bool begin, int rc);

struct sl_runtime {
    struct sl_runtime_opts opts;
    struct event_base *base;
    struct sl_pool    *pool;         /* blocking work */
    struct event      *sig_term, *sig_int, *sig_hup;
    struct event      *stop_timer;   /* shutdown_grace_s */
    struct event      *watchdog;     /* WATCHDOG=1 every WATCHDOG_USEC / 2; NULL without */
    struct sl_component *components; /* registry, in start order */
    size_t             ncomponents;
    size_t             nstopping;    /* components still stopping */
    int                stopping;
    int                exit_code;
    sl_reload_fn       reload;       /* NULL: SIGHUP is logged and ignored */
    void              *reload_arg;
    sl_reload_hook     reload_hook;
    void              *reload_hook_arg;
    int                notify_failed; /* sd_notify failed once: logged, not again */
};

/* Build the root; `o` is copied. */
int sl_runtime_new(const struct sl_runtime_opts *o, struct sl_runtime **out, struct sl_err *err);

/* Register a component; the runtime owns `ctx` from now on (ops->free).
 * `name` is copied and becomes the log prefix "kind:name". */
void sl_runtime_add(struct sl_runtime *rt, const char *name, const struct sl_component_ops *ops,
                    void *ctx);

/* Start every component, then run the loop until a stop completes.
 * With opts.notify, READY=1 goes to $NOTIFY_SOCKET once every component's
 * start returned (the API listens, the sources are started), before the
 * loop runs. Returns the process exit code (0 after a graceful stop). */
int sl_runtime_run(struct sl_runtime *rt);

/* Ask for a graceful stop (what SIGTERM does). Safe to call twice. */
void sl_runtime_stop(struct sl_runtime *rt, int exit_code);

/* SIGHUP runs `fn` from now on (NULL: ignored again). */
void sl_runtime_set_reload(struct sl_runtime *rt, sl_reload_fn fn, void *arg);
void sl_runtime_set_reload_hook(struct sl_runtime *rt, sl_reload_hook fn, void *arg);

/* Reload now (SIGHUP and POST /admin/reload): the hook's begin, `fn`, the
 * hook's end. SL_ESTOPPED while stopping, SL_EUNSUPPORTED without `fn`.
 * `msg` may be NULL. */
int sl_runtime_reload(struct sl_runtime *rt, char **msg);

/* Reported by a component when its stop finished. */
void sl_component_stopped(struct sl_component *c);

/* Log prefix of a component ("source:orders"). */
const char *sl_component_name(const struct sl_component *c);

void sl_runtime_free(struct sl_runtime *rt);

#endif
