/* Runtime root: event loop, signals, component registry, graceful stop. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/runtime.h"

struct sl_component {
    struct sl_runtime             *rt;
    const struct sl_component_ops *ops;
    void                          *ctx;
    char                          *name;    /* "kind:name" */
    int                            started;
    int                            stopped;
};

const char *sl_component_name(const struct sl_component *c)
{
    return c->name;
}

/* The service manager's protocol (systemd's Type=notify): one datagram to
 * $NOTIFY_SOCKET each, through libsystemd; nothing without the variable.
 * A failure is logged once, not at every watchdog tick. */
static void notify(struct sl_runtime *rt, const char *state)
{
    int rc;

    if (!rt->opts.notify)
        return;
    rc = sd_notify(0, state);
    if (rc < 0 && !rt->notify_failed) {
        rt->notify_failed = 1;
        SL_WARN(NULL, "cannot notify the service manager at $NOTIFY_SOCKET: %s", strerror(-rc));
    }
}

/* Sent from the loop, so a loop that stalls stops the pings and the
 * service manager restarts the service. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    notify(arg, "WATCHDOG=1");
}

/* WATCHDOG_USEC (and WATCHDOG_PID, when set, naming us): ping at half the
 * interval, as sd_watchdog_enabled(3) advises. */
static int watchdog_start(struct sl_runtime *rt, struct sl_err *err)
{
    uint64_t usec = 0;
    struct timeval tv;
    int rc;

    if (!rt->opts.notify)
        return 0;
    rc = sd_watchdog_enabled(0, &usec);
    if (rc < 0)
        SL_WARN(NULL, "ignoring the service manager's watchdog settings: %s", strerror(-rc));
    if (rc <= 0 || usec == 0)
        return 0;
    rt->watchdog = event_new(rt->base, -1, EV_PERSIST, on_watchdog, rt);
    tv.tv_sec = (time_t)(usec / 2 / 1000000);
    tv.tv_usec = (suseconds_t)(usec / 2 % 1000000);
    if (!rt->watchdog || evtimer_add(rt->watchdog, &tv) != 0)
        return sl_err_set(err, SL_EIO, false, "cannot start the watchdog timer");
    SL_INFO(NULL, "service manager watchdog: WATCHDOG=1 every %lld ms",
            (long long)(usec / 2 / 1000));
    return 0;
}

static void finish_stop(struct sl_runtime *rt)
{
    event_base_loopexit(rt->base, NULL);
}

void sl_component_stopped(struct sl_component *c)
{
    struct sl_runtime *rt = c->rt;

    if (c->stopped)
        return;
    c->stopped = 1;
    SL_DEBUG(SL_DBG_DISPATCH, c->name, "stopped");
    if (rt->nstopping > 0 && --rt->nstopping == 0)
        finish_stop(rt);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sl_runtime *rt = arg;

    (void)fd, (void)what;
    for (size_t i = 0; i < rt->ncomponents; i++)
        if (rt->components[i].started && !rt->components[i].stopped)
            SL_WARN(rt->components[i].name, "did not stop within shutdown_grace_s; "
                    "in-flight work will be redelivered");
    finish_stop(rt);
}

void sl_runtime_stop(struct sl_runtime *rt, int exit_code)
{
    struct timeval tv;

    if (rt->stopping)
        return;
    rt->stopping = 1;
    rt->exit_code = exit_code;
    notify(rt, "STOPPING=1\nSTATUS=stopping");
    tv.tv_sec = rt->opts.shutdown_grace_ms / 1000;
    tv.tv_usec = (rt->opts.shutdown_grace_ms % 1000) * 1000;
    evtimer_add(rt->stop_timer, &tv);

    /* reverse start order: sources stop before the sinks they write to */
    rt->nstopping = 0;
    for (size_t i = rt->ncomponents; i-- > 0;)
        if (rt->components[i].started)
            rt->nstopping++;
    if (rt->nstopping == 0) {
        finish_stop(rt);
        return;
    }
    /* hold one count so a synchronous stop cannot finish early */
    rt->nstopping++;
    for (size_t i = rt->ncomponents; i-- > 0;) {
        struct sl_component *c = &rt->components[i];
        if (!c->started)
            continue;
        if (c->ops->stop)
            c->ops->stop(c->ctx, c);
        else
            sl_component_stopped(c);
    }
    if (--rt->nstopping == 0)
        finish_stop(rt);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct sl_runtime *rt = arg;

    (void)what;
    if (sig == SIGHUP) {
        if (!rt->reload)
            SL_WARN(NULL, "SIGHUP received: this command does not reload; ignored");
        else if (rt->stopping)
            SL_WARN(NULL, "SIGHUP received while stopping: not reloading");
        else
            sl_runtime_reload(rt, NULL); /* it logs what it did */
        return;
    }
    if (rt->stopping) {
        SL_WARN(NULL, "second %s: stopping now", sig == SIGINT ? "SIGINT" : "SIGTERM");
        rt->exit_code = 1;
        event_base_loopbreak(rt->base);
        return;
    }
    SL_INFO(NULL, "%s received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    sl_runtime_stop(rt, 0);
}

void sl_runtime_set_reload(struct sl_runtime *rt, sl_reload_fn fn, void *arg)
{
    rt->reload = fn;
    rt->reload_arg = arg;
}

void sl_runtime_set_reload_hook(struct sl_runtime *rt, sl_reload_hook fn, void *arg)
{
    rt->reload_hook = fn;
    rt->reload_hook_arg = arg;
}

int sl_runtime_reload(struct sl_runtime *rt, char **msg)
{
    char *m = NULL;
    int rc;

    if (msg)
        *msg = NULL;
    if (!rt->reload)
        return SL_EUNSUPPORTED;
    if (rt->stopping)
        return SL_ESTOPPED;
    /* systemd: reloading until READY=1 again (MONOTONIC_USEC, which
     * Type=notify-reload asks for, is harmless for Type=notify) */
    {
        char st[96];
        snprintf(st, sizeof(st), "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
                 (unsigned long long)(sl_mono_ms() * 1000.0));
        notify(rt, st);
    }
    if (rt->reload_hook)
        rt->reload_hook(rt->reload_hook_arg, true, 0);
    rc = rt->reload(rt->reload_arg, &m);
    if (rt->reload_hook)
        rt->reload_hook(rt->reload_hook_arg, false, rc);
    notify(rt, rc == 0 ? "READY=1\nSTATUS=running" : "READY=1\nSTATUS=running (the last reload "
                                                   "was refused: see the log)");
    if (msg)
        *msg = m;
    else
        free(m);
    return rc;
}

int sl_runtime_new(const struct sl_runtime_opts *o, struct sl_runtime **out, struct sl_err *err)
{
    struct sl_runtime *rt = sl_calloc(1, sizeof(*rt));
    int rc;

    rt->opts = *o;
    rt->base = event_base_new();
    if (!rt->base) {
        rc = sl_err_set(err, SL_EIO, false, "cannot create the event loop");
        goto fail;
    }
    rt->sig_term = evsignal_new(rt->base, SIGTERM, on_signal, rt);
    rt->sig_int = evsignal_new(rt->base, SIGINT, on_signal, rt);
    rt->sig_hup = evsignal_new(rt->base, SIGHUP, on_signal, rt);
    rt->stop_timer = evtimer_new(rt->base, on_stop_timeout, rt);
    if (!rt->sig_term || !rt->sig_int || !rt->sig_hup || !rt->stop_timer ||
        evsignal_add(rt->sig_term, NULL) || evsignal_add(rt->sig_int, NULL) ||
        evsignal_add(rt->sig_hup, NULL)) {
        rc = sl_err_set(err, SL_EIO, false, "cannot install signal handlers");
        goto fail;
    }
    if ((rc = watchdog_start(rt, err)) != 0)
        goto fail;
    /* a peer closing a socket or pipe is an error return, not a death */
    signal(SIGPIPE, SIG_IGN);
    rc = sl_pool_new(rt->base, o->worker_threads, &rt->pool, err);
    if (rc != 0)
        goto fail;
    *out = rt;
    return 0;

fail:
    sl_runtime_free(rt);
    return rc;
}

void sl_runtime_add(struct sl_runtime *rt, const char *name, const struct sl_component_ops *ops,
                    void *ctx)
{
    struct sl_component *c;

    rt->components = sl_realloc(rt->components, (rt->ncomponents + 1) * sizeof(*c));
    c = &rt->components[rt->ncomponents++];
    memset(c, 0, sizeof(*c));
    c->rt = rt;
    c->ops = ops;
    c->ctx = ctx;
    c->name = sl_asprintf("%s:%s", ops->kind, name);
}

int sl_runtime_run(struct sl_runtime *rt)
{
    struct sl_err err;

    for (size_t i = 0; i < rt->ncomponents && !rt->stopping; i++) {
        struct sl_component *c = &rt->components[i];

        sl_err_clear(&err);
        if (c->ops->start && c->ops->start(c->ctx, &err) != 0) {
            SL_ERROR(c->name, "cannot start: %s", err.msg[0] ? err.msg : sl_strerror(err.code));
            sl_runtime_stop(rt, 1);
            break;
        }
        c->started = 1;
    }
    /* the API listens and every source started (a source connects in the
     * background: its lag and errors are in /metrics, not in readiness) */
    if (!rt->stopping)
        notify(rt, "READY=1\nSTATUS=running");
    if (!rt->stopping || rt->nstopping > 0)
        event_base_dispatch(rt->base);
    return rt->exit_code;
}

void sl_runtime_free(struct sl_runtime *rt)
{
    if (!rt)
        return;
    /* blocking work finishes before the components it reports to go away */
    sl_pool_free(rt->pool);
    for (size_t i = rt->ncomponents; i-- > 0;) {
        struct sl_component *c = &rt->components[i];
        if (c->ops->free)
            c->ops->free(c->ctx);
        free(c->name);
    }
    free(rt->components);
    if (rt->sig_term)
        event_free(rt->sig_term);
    if (rt->sig_int)
        event_free(rt->sig_int);
    if (rt->sig_hup)
        event_free(rt->sig_hup);
    if (rt->stop_timer)
        event_free(rt->stop_timer);
    if (rt->watchdog)
        event_free(rt->watchdog);
    if (rt->base)
        event_base_free(rt->base);
    free(rt);
}
