/* The per-function pool: it starts envs cold (or forked from a SnapStart
 * template), keeps `provisioned_concurrency` of them initialized, caps
 * them at `reserved_concurrency`, reaps idle ones and hands each
 * invocation to an env. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/clock.h"
#include "sluice/mem.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

void sl_uuid(char buf[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    int o = 0;

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        for (int i = 0; i < 16; i++)
            r[i] = (unsigned char)random();
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[o++] = '-';
        buf[o++] = hex[r[i] >> 4];
        buf[o++] = hex[r[i] & 15];
    }
    buf[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Pool                                                                */

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct sl_fnpool *pool = arg;
    struct sl_env *env, *next;
    double now = sl_mono_ms();

    (void)fd, (void)what;
    for (env = LIST_FIRST(&pool->envs); env; env = next) {
        next = LIST_NEXT(env, link);
        if (env->kind == ENV_TEMPLATE || env->state != ENV_IDLE || env->provisioned)
            continue;
        if (now - env->idle_ms < (double)pool->o.idle_ms)
            continue;
        {
            char *frame;
            size_t len;
            SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "environment %s idle: shutting down", env->id);
            /* runtime lambda: Lambda tells only extensions; the runtime is killed */
            if (env->bev) {
                sl_frame_shutdown("spindown", sl_wall_ms() + SHUTDOWN_MS, &frame, &len);
                bufferevent_write(env->bev, frame, len);
                free(frame);
            }
            sl__env_set_state(env, ENV_STOPPING);
            sl__env_timer(env->ev_timer, SHUTDOWN_MS);
        }
    }
}

int sl_fnpool_new(struct event_base *base, struct sl_sandbox *sb,
                  const struct sl_function_conf *fn, const struct sl_fnpool_opts *o,
                  struct sl_fnpool **out, struct sl_err *err)
{
    struct sl_fnpool *pool = sl_calloc(1, sizeof(*pool));
    struct timeval tv = { 1, 0 };

    pool->base = base;
    pool->sb = sb;
    pool->fn = fn;
    pool->o = *o;
    LIST_INIT(&pool->envs);
    LIST_INIT(&pool->graves);
    snprintf(pool->inst, sizeof(pool->inst), "function:%s", fn->name);
    sl__fnlog_init(pool);
    pool->reaper = event_new(base, -1, EV_PERSIST, on_reap, pool);
    event_add(pool->reaper, &tv);

    if (fn->snapstart && !sl__env_start(pool, false, err))
        goto fail;
    for (int64_t i = 0; i < fn->provisioned_concurrency; i++)
        if (!sl__env_start(pool, true, err))
            goto fail;
    *out = pool;
    return 0;

fail:
    sl_fnpool_free(pool);
    return err->code ? err->code : SL_ESANDBOX;
}

struct late_failure {
    struct pending *inv;
    char            msg[SL_ERR_MSG_MAX];
};

static void on_late_failure(evutil_socket_t fd, short what, void *arg)
{
    struct late_failure *lf = arg;
    struct sl_invoke_result r;

    (void)fd, (void)what;
    memset(&r, 0, sizeof(r));
    r.request_id = lf->inv->request_id;
    r.error_type = "Sandbox.Failure";
    r.error_message = lf->msg;
    lf->inv->cb(&r, lf->inv->arg);
    free(lf->inv);
    free(lf);
}

int sl_fnpool_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req, sl_invoke_cb cb,
                     void *arg)
{
    const struct sl_function_conf *fn = pool->fn;
    struct sl_env *env, *pick = NULL;
    struct pending *inv;
    struct sl_err err;
    int64_t cap;

    if (pool->fake)
        return sl__fake_invoke(pool, req, cb, arg);
    cap = fn->reserved_concurrency >= 0 ? fn->reserved_concurrency : pool->o.max_envs;
    /* warm first: an idle env, preferring the most recently used */
    LIST_FOREACH(env, &pool->envs, link)
        if (env->kind != ENV_TEMPLATE && env->state == ENV_IDLE && !env->inv &&
            (!pick || env->idle_ms > pick->idle_ms))
            pick = env;
    /* then one that is starting with nobody waiting for it */
    if (!pick)
        LIST_FOREACH(env, &pool->envs, link)
            if (env->kind != ENV_TEMPLATE && env->state == ENV_STARTING && !env->inv)
                pick = env;
    if (!pick && (int64_t)pool->nenvs >= cap)
        return SL_EAGAIN;

    inv = sl_calloc(1, sizeof(*inv));
    if (req->request_id)
        snprintf(inv->request_id, sizeof(inv->request_id), "%s", req->request_id);
    else
        sl_uuid(inv->request_id);
    if (req->source)
        snprintf(inv->source, sizeof(inv->source), "%s", req->source);
    inv->event = req->event;
    inv->event_len = req->event_len;
    inv->client_context = req->client_context;
    inv->cb = cb;
    inv->arg = arg;
    inv->queued_ms = sl_mono_ms();

    if (!pick) {
        sl_err_clear(&err);
        pick = sl__env_start(pool, false, &err);
        if (!pick) {
            /* the one result, as a failure, from the loop: never before
             * this call returns */
            struct late_failure *lf = sl_calloc(1, sizeof(*lf));
            struct timeval now = { 0, 0 };
            SL_ERROR(pool->inst, "cannot start an environment: %s", err.msg);
            lf->inv = inv;
            snprintf(lf->msg, sizeof(lf->msg), "%s", err.msg);
            if (event_base_once(pool->base, -1, EV_TIMEOUT, on_late_failure, lf, &now) != 0)
                on_late_failure(-1, 0, lf);
            return 0;
        }
    }
    pick->inv = inv;
    if (pick->state == ENV_IDLE)
        sl__env_send_invoke(pick);
    else
        pick->init_ms = 0; /* set at ready; marks this invocation cold */
    return 0;
}

size_t sl_fnpool_envs(const struct sl_fnpool *pool) { return pool->nenvs; }
/* a fake pool is always warm: the dispatcher never throttles its scale-up */
size_t sl_fnpool_idle(const struct sl_fnpool *pool) { return pool->fake ? 1 : pool->nidle; }
size_t sl_fnpool_busy(const struct sl_fnpool *pool) { return pool->nbusy; }

void sl_fnpool_free(struct sl_fnpool *pool)
{
    struct sl_env *env;

    if (!pool)
        return;
    pool->closing = true;
    if (pool->fake)
        sl__fake_stop(pool); /* no envs, no reaper: the rest is a no-op */
    /* forked envs first: they live inside the template's namespace */
    while ((env = LIST_FIRST(&pool->envs))) {
        struct sl_env *e, *victim = env;
        LIST_FOREACH(e, &pool->envs, link)
            if (e->kind != ENV_TEMPLATE) {
                victim = e;
                break;
            }
        if (victim->inv) {
            sl__env_finish(victim, false, NULL, 0, "Sandbox.Failure", "sluice is shutting down",
                           NULL);
        }
        sl__env_destroy(victim);
    }
    sl__env_graves_free(pool);
    if (pool->reaper)
        event_free(pool->reaper);
    free(pool);
}
