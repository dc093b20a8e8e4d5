/* One execution environment: a sandboxed handler process, initialized
 * once and reused for invocation after invocation.
 *
 * An env moves STARTING -> IDLE <-> BUSY -> gone. Every way an env or an
 * invocation can end funnels into sl__env_finish (the invocation's one
 * result) and sl__env_destroy (the env's processes killed, reaped,
 * released). SnapStart's forked envs start in snapstart.c, the pool that
 * keeps envs is fnpool.c. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/clock.h"
#include "sluice/mem.h"

static void drain_output(struct sl_env *env, int fd, struct linebuf *lb, size_t max);
static void report_dropped(struct sl_env *env, bool now);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

void sl__env_timer(struct event *ev, double ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)fmod(ms, 1000) * 1000 };
    evtimer_add(ev, &tv);
}

void sl__env_set_state(struct sl_env *env, int state)
{
    struct sl_fnpool *pool = env->pool;

    if (env->kind != ENV_TEMPLATE) {
        if (env->state == ENV_IDLE)
            pool->nidle--;
        if (env->state == ENV_BUSY)
            pool->nbusy--;
        if (state == ENV_IDLE)
            pool->nidle++;
        if (state == ENV_BUSY)
            pool->nbusy++;
    }
    env->state = state;
}

/* ------------------------------------------------------------------ */
/* Ending an invocation                                                */

/* Keep the last TAIL_MAX bytes of what an invocation logged. */
void sl__env_tail_add(struct pending *inv, const char *s, size_t n)
{
    if (n >= TAIL_MAX) {
        s += n - TAIL_MAX;
        n = TAIL_MAX;
    }
    if (inv->tail_len + n > TAIL_MAX) {
        size_t drop = inv->tail_len + n - TAIL_MAX;
        memmove(inv->tail, inv->tail + drop, inv->tail_len - drop);
        inv->tail_len -= drop;
    }
    memcpy(inv->tail + inv->tail_len, s, n);
    inv->tail_len += n;
    inv->tail[inv->tail_len] = '\0';
}

static json_t *stack_json(const msgpack_object *stack)
{
    json_t *a;

    if (!stack || stack->type != MSGPACK_OBJECT_ARRAY)
        return NULL;
    a = json_array();
    for (uint32_t i = 0; i < stack->via.array.size && i < 256; i++) {
        const msgpack_object *o = &stack->via.array.ptr[i];
        if (o->type == MSGPACK_OBJECT_STR)
            json_array_append_new(a, json_stringn_nocheck(o->via.str.ptr, o->via.str.size));
    }
    return a;
}

void sl__env_finish(struct sl_env *env, bool ok, const char *payload, size_t len,
                    const char *etype, const char *emsg, json_t *stack)
{
    struct sl_fnpool *pool = env->pool;
    struct pending *inv = env->inv;
    struct sl_invoke_result r;
    double now = sl_mono_ms();
    int64_t billed;

    if (!inv) {
        json_decref(stack);
        return;
    }
    /* what the handler printed before answering is already in the pipes
     * (its writes finished before its result was sent): take it now so it
     * is tagged with this request and lands in its log tail */
    if (env->proc.out >= 0)
        drain_output(env, env->proc.out, &env->out, DRAIN_MAX);
    if (env->proc.err >= 0)
        drain_output(env, env->proc.err, &env->err, DRAIN_MAX);
    report_dropped(env, true);
    env->inv = NULL;
    memset(&r, 0, sizeof(r));
    r.request_id = inv->request_id;
    r.ok = ok;
    r.payload = payload;
    r.payload_len = len;
    r.error_type = etype;
    r.error_message = emsg;
    r.stack = stack;
    r.duration_ms = env->busy_ms > 0 ? now - env->busy_ms : 0;
    r.init_ms = env->init_ms;
    r.cold = env->init_ms > 0;
    r.max_memory_mb = (sl_sandbox_max_memory(&env->proc) + 1024 * 1024 - 1) / (1024 * 1024);
    env->init_ms = 0;
    env->busy_ms = 0;
    snprintf(env->last_request, sizeof(env->last_request), "%s", inv->request_id);

    billed = (int64_t)ceil(r.duration_ms + (r.cold && env->kind == ENV_COLD ? r.init_ms : 0));
    if (billed < 1)
        billed = 1;
    sl__fnlog_report(env, inv, &r, billed);
    snprintf(env->last_source, sizeof(env->last_source), "%s", inv->source);
    r.log_tail = inv->tail;
    if (!ok)
        SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "%s failed: %s: %s", inv->request_id, etype,
                 emsg ? emsg : "");
    inv->cb(&r, inv->arg);
    json_decref(stack);
    free(inv);
}

void sl__env_fail(struct sl_env *env, const char *etype, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!env->inv && env->state != ENV_STOPPING)
        SL_WARN(env->pool->inst, "environment %s lost: %s: %s", env->id, etype, msg);
    sl__env_finish(env, false, NULL, 0, etype, msg, NULL);
    sl__env_destroy(env);
}

/* ------------------------------------------------------------------ */
/* Handler output                                                      */

/* Say how much output was dropped: at most once a second while it goes
 * on, and (`now`) when the invocation ends or the env goes. */
static void report_dropped(struct sl_env *env, bool now)
{
    double t = sl_mono_ms();
    char msg[200];

    if (!env->drop_lines || (!now && t - env->drop_report_ms < 1000))
        return;
    snprintf(msg, sizeof(msg), "sluice: %llu bytes of output in %llu lines dropped "
             "(over output_kb_per_s: %lld)", env->drop_bytes, env->drop_lines,
             (long long)env->pool->fn->output_kb_per_s);
    sl__fnlog_dropped(env, msg);
    env->drop_bytes = env->drop_lines = 0;
    env->drop_report_ms = t;
}

/* One whole line of output: logged while the env's rate allows, else
 * dropped and counted. */
static void out_line(struct sl_env *env, const char *line, size_t len)
{
    double cost = len + 1 < LINE_COST_MIN ? LINE_COST_MIN : (double)(len + 1);

    if (env->out_tokens >= cost) {
        env->out_tokens -= cost;
        sl__fnlog_output(env, line, len);
        return;
    }
    if (!env->drop_lines && sl_mono_ms() - env->drop_report_ms >= 1000)
        env->drop_report_ms = sl_mono_ms(); /* the first report comes a second later */
    env->drop_bytes += len + 1;
    env->drop_lines++;
}

/* Read at most `max` bytes of one output pipe (a handler writing without
 * end must not keep the loop here) and log them line by line. */
static void drain_output(struct sl_env *env, int fd, struct linebuf *lb, size_t max)
{
    double rate = (double)env->pool->fn->output_kb_per_s * 1024, now = sl_mono_ms();
    char buf[8192];
    size_t total = 0;
    ssize_t n = -1;

    /* token bucket: `rate` bytes a second, a burst of one second's worth */
    env->out_tokens += (now - env->out_refill_ms) * rate / 1000;
    if (env->out_tokens > rate)
        env->out_tokens = rate;
    env->out_refill_ms = now;
    while (total < max && (n = read(fd, buf, sizeof(buf))) > 0) {
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' || lb->len == sizeof(lb->buf)) {
                out_line(env, lb->buf, lb->len);
                lb->len = 0;
                if (buf[i] == '\n')
                    continue;
            }
            lb->buf[lb->len++] = buf[i];
        }
    }
    if (n == 0 && lb->len) {
        out_line(env, lb->buf, lb->len);
        lb->len = 0;
    }
    report_dropped(env, false);
}

static void on_output(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;

    (void)what;
    drain_output(env, fd, fd == env->proc.out ? &env->out : &env->err, DRAIN_MAX);
}

static void on_setup(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    struct sl_err e;

    (void)what;
    sl_err_clear(&e);
    sl__sandbox_setup_error(fd, &e);
    if (e.msg[0])
        snprintf(env->setup_error, sizeof(env->setup_error), "%s", e.msg);
    /* EOF (exec ran) or a message: either way nothing more comes */
    event_del(env->ev_setup);
}

/* ------------------------------------------------------------------ */
/* Exit and timers                                                     */

static void fail_oom(struct sl_env *env)
{
    sl__env_fail(env, "Runtime.OutOfMemory", "RequestId: %s Error: Runtime exited with error: "
                 "signal: killed (memory limit of %lld MB reached)",
                 env->inv ? env->inv->request_id : "-", (long long)env->pool->fn->memory_mb);
}

static void on_exit_ev(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    int st;

    (void)fd, (void)what;
    sl_sandbox_reap(&env->proc);
    /* whatever the handler printed last belongs to this invocation; its
     * processes are gone, so the pipes hold at most their capacity */
    if (env->proc.out >= 0)
        drain_output(env, env->proc.out, &env->out, EXIT_DRAIN_MAX);
    if (env->proc.err >= 0)
        drain_output(env, env->proc.err, &env->err, EXIT_DRAIN_MAX);
    if (env->ev_setup)
        on_setup(env->proc.setup, 0, env);
    st = env->proc.status;
    if (env->setup_error[0]) {
        sl__env_fail(env, "Sandbox.Failure", "%s", env->setup_error);
    } else if (sl_sandbox_oom_killed(&env->proc)) {
        fail_oom(env);
    } else if (env->kind == ENV_FORKED) {
        sl__env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited",
                     env->inv ? env->inv->request_id : "-");
    } else if (WIFEXITED(st) && WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + 65) {
        sl__env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
                     "signal: %s", env->inv ? env->inv->request_id : "-",
                     strsignal(WEXITSTATUS(st) - 128));
    } else if (WIFEXITED(st)) {
        sl__env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
                     "exit status %d", env->inv ? env->inv->request_id : "-", WEXITSTATUS(st));
    } else {
        sl__env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
                     "signal: %s", env->inv ? env->inv->request_id : "-",
                     WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "unknown");
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    struct sl_fnpool *pool = env->pool;

    (void)fd, (void)what;
    switch (env->state) {
    case ENV_STARTING:
        sl__env_fail(env, "Sandbox.Timedout", "init did not finish within %.2f seconds",
                     pool->fn->init_timeout_ms / 1000.0);
        return;
    case ENV_BUSY:
        if (env->sock_closed) {
            /* a throttled cgroup can delay the init's exit past the grace */
            if (sl_sandbox_oom_killed(&env->proc))
                fail_oom(env);
            else
                sl__env_fail(env, "Runtime.InvalidResponse", "handler closed its protocol socket");
            return;
        }
        sl__env_fail(env, "Sandbox.Timedout",
                     "RequestId: %s Error: Task timed out after %.2f seconds",
                     env->inv ? env->inv->request_id : "-", pool->fn->timeout_ms / 1000.0);
        return;
    default:
        sl__env_destroy(env); /* shutdown grace over */
    }
}

/* ------------------------------------------------------------------ */
/* Protocol                                                            */

static void on_ready(struct sl_env *env, const struct sl_msg *m)
{
    if (env->state != ENV_STARTING) {
        sl__env_fail(env, "Runtime.InvalidResponse", "'ready' from an initialized handler");
        return;
    }
    sl__env_ready(env, m->restored);
}

void sl__env_ready(struct sl_env *env, bool restored)
{
    struct sl_fnpool *pool = env->pool;

    event_del(env->ev_timer);
    env->ready_ms = sl_mono_ms();
    env->init_ms = env->ready_ms - env->spawned_ms;
    SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "environment %s ready in %.2f ms%s", env->id,
             env->init_ms, restored ? " (restored)" : "");
    sl__fnlog_init_report(env, restored);
    if (env->kind == ENV_TEMPLATE) {
        sl__snapstart_template_init(env);
        return;
    }
    if (env->inv) {
        sl__env_send_invoke(env);
        return;
    }
    /* nobody waited for this init: the first invocation will be warm */
    env->init_ms = 0;
    sl__env_set_state(env, ENV_IDLE);
    env->idle_ms = sl_mono_ms();
}


void sl__env_result(struct sl_env *env, bool ok, const char *payload, size_t len,
                    const char *etype, const char *emsg, json_t *stack)
{
    char msg[256];

    event_del(env->ev_timer);
    sl__env_set_state(env, ENV_IDLE);
    env->idle_ms = sl_mono_ms();
    if (ok && len > SL_PAYLOAD_MAX) {
        snprintf(msg, sizeof(msg), "Response payload size (%zu bytes) exceeded maximum "
                 "allowed payload size (%d bytes).", len, SL_PAYLOAD_MAX);
        sl__env_finish(env, false, NULL, 0, "Function.ResponseSizeTooLarge", msg, stack);
    } else {
        sl__env_finish(env, ok, payload, len, etype, emsg, stack);
    }
}

static void on_message(struct sl_env *env, struct sl_msg *m)
{
    struct sl_fnpool *pool = env->pool;
    char etype[128], emsg[1024];

    switch (m->type) {
    case SL_MSG_READY:
        on_ready(env, m);
        return;
    case SL_MSG_INIT_ERROR:
        snprintf(etype, sizeof(etype), "%.*s", (int)m->error_type.n, m->error_type.p);
        snprintf(emsg, sizeof(emsg), "%.*s", (int)m->error_message.n,
                 m->error_message.p ? m->error_message.p : "");
        if (env->kind == ENV_TEMPLATE)
            SL_ERROR(pool->inst, "snapstart template failed to initialize: %s: %s", etype, emsg);
        sl__env_finish(env, false, NULL, 0, etype, emsg, stack_json(m->stack));
        sl__env_destroy(env);
        return;
    case SL_MSG_RESULT:
        if (env->state != ENV_BUSY || !env->inv ||
            m->request_id.n != strlen(env->inv->request_id) ||
            memcmp(m->request_id.p, env->inv->request_id, m->request_id.n) != 0) {
            sl__env_fail(env, "Runtime.InvalidResponse",
                         "result for a request that is not running");
            return;
        }
        if (m->ok) {
            sl__env_result(env, true, m->payload.p, m->payload.n, NULL, NULL, NULL);
        } else {
            snprintf(etype, sizeof(etype), "%.*s", (int)m->error_type.n, m->error_type.p);
            snprintf(emsg, sizeof(emsg), "%.*s", (int)m->error_message.n,
                     m->error_message.p ? m->error_message.p : "");
            sl__env_result(env, false, NULL, 0, etype, emsg, stack_json(m->stack));
        }
        return;
    case SL_MSG_SNAPSHOT_READY:
        if (env->kind != ENV_TEMPLATE) {
            sl__env_fail(env, "Runtime.InvalidResponse", "unexpected snapshot_ready");
            return;
        }
        sl__snapstart_template_ready(env);
        return;
    case SL_MSG_FORKED:
        SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "template forked %.*s as pid %lld",
                 (int)m->env_id.n, m->env_id.p, (long long)m->pid);
        return;
    default:
        sl__env_fail(env, "Runtime.InvalidResponse", "unexpected message");
    }
}

void sl__env_on_read(struct bufferevent *bev, void *arg)
{
    struct sl_env *env = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    for (;;) {
        struct sl_msg m;
        char why[256];
        int rc = sl_frame_take(in, &m, why, sizeof(why));

        if (rc == 0)
            return;
        if (rc == SL_ETOOBIG) {
            sl__env_fail(env, "Function.ResponseSizeTooLarge", "%s", why);
            return;
        }
        if (rc < 0) {
            sl__env_fail(env, "Runtime.InvalidResponse", "%s", why);
            return;
        }
        /* on_message may destroy the env: stop reading if it did */
        {
            struct sl_fnpool *pool = env->pool;
            struct sl_env *e;
            bool alive = false;

            on_message(env, &m);
            sl_msg_destroy(&m);
            LIST_FOREACH(e, &pool->envs, link)
                alive |= e == env;
            if (!alive)
                return;
        }
    }
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct sl_env *env = arg;

    (void)bev;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    env->sock_closed = true;
    bufferevent_disable(env->bev, EV_READ | EV_WRITE);
    /* the exit event gives the real reason; if the process stays alive
     * without its socket, the timer calls it a protocol violation */
    if (env->state == ENV_BUSY || env->state == ENV_STARTING)
        sl__env_timer(env->ev_timer, EOF_GRACE_MS);
}

/* ------------------------------------------------------------------ */
/* Creating and destroying envs                                        */

int sl__env_attach(struct sl_env *env)
{
    struct event_base *base = env->pool->base;

    if (env->proc.rapi >= 0) {
        /* runtime lambda: the handler never had fd 3, the Runtime API is its channel */
        if (env->proc.sock >= 0)
            close(env->proc.sock);
        env->proc.sock = -1;
        if (sl__rapi_attach(env) != 0)
            return -1;
    } else {
        env->bev = bufferevent_socket_new(base, env->proc.sock, 0);
        if (!env->bev)
            return -1;
        bufferevent_setcb(env->bev, sl__env_on_read, NULL, on_bev_event, env);
        bufferevent_enable(env->bev, EV_READ | EV_WRITE);
    }
    if (env->proc.out >= 0) {
        env->ev_out = event_new(base, env->proc.out, EV_READ | EV_PERSIST, on_output, env);
        event_add(env->ev_out, NULL);
    }
    if (env->proc.err >= 0) {
        env->ev_err = event_new(base, env->proc.err, EV_READ | EV_PERSIST, on_output, env);
        event_add(env->ev_err, NULL);
    }
    if (env->proc.setup >= 0) {
        env->ev_setup = event_new(base, env->proc.setup, EV_READ | EV_PERSIST, on_setup, env);
        event_add(env->ev_setup, NULL);
    }
    if (env->proc.pidfd >= 0) {
        env->ev_exit = event_new(base, env->proc.pidfd, EV_READ, on_exit_ev, env);
        event_add(env->ev_exit, NULL);
    }
    return 0;
}

struct sl_env *sl__env_alloc(struct sl_fnpool *pool, int kind, bool provisioned)
{
    struct sl_env *env = sl_calloc(1, sizeof(*env));

    env->pool = pool;
    env->kind = kind;
    env->state = ENV_STARTING;
    env->provisioned = provisioned;
    env->spawned_ms = sl_mono_ms();
    env->out_refill_ms = env->spawned_ms;
    env->out_tokens = (double)pool->fn->output_kb_per_s * 1024;
    env->fork_fds[0] = env->fork_fds[1] = env->fork_fds[2] = -1;
    env->proc.pid = -1;
    env->proc.pidfd = env->proc.sock = env->proc.out = env->proc.err = env->proc.setup = -1;
    env->proc.mem_fd = env->proc.netns = env->proc.rapi = -1;
    snprintf(env->id, sizeof(env->id), "%s%lu", kind == ENV_TEMPLATE ? "t" : "e", ++pool->seq);
    env->ev_timer = evtimer_new(pool->base, on_timer, env);
    LIST_INSERT_HEAD(&pool->envs, env, link);
    if (kind != ENV_TEMPLATE) {
        pool->nenvs++;
        pool->nprovisioned += provisioned;
    }
    return env;
}

void sl__env_destroy(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    bool replace;

    sl__env_finish(env, false, NULL, 0, "Sandbox.Failure", "environment stopped", NULL);
    report_dropped(env, true);
    LIST_REMOVE(env, link);
    if (env->kind != ENV_TEMPLATE) {
        sl__env_set_state(env, ENV_STOPPING);
        pool->nenvs--;
        pool->nprovisioned -= env->provisioned;
    } else {
        pool->template = NULL;
        pool->template_ready = false;
    }
    replace = env->provisioned && !pool->closing;
    sl__rapi_free(env);
    if (env->bev)
        bufferevent_free(env->bev); /* does not close the fd: release does */
    if (env->ev_out)
        event_free(env->ev_out);
    if (env->ev_err)
        event_free(env->ev_err);
    if (env->ev_setup)
        event_free(env->ev_setup);
    if (env->ev_exit)
        event_free(env->ev_exit);
    if (env->ev_first)
        event_free(env->ev_first);
    event_free(env->ev_timer);
    for (int i = 0; i < 3; i++)
        if (env->fork_fds[i] >= 0)
            close(env->fork_fds[i]);
    /* SIGKILL now; the processes are released once they exited, off this path */
    sl__env_bury(pool, &env->proc);
    free(env);

    /* provisioned concurrency is a floor: put a lost env back */
    if (replace && pool->nprovisioned < (size_t)pool->fn->provisioned_concurrency) {
        struct sl_err err;
        if (!sl__env_start(pool, true, &err))
            SL_ERROR(pool->inst, "cannot replace a provisioned environment: %s", err.msg);
    }
}

void sl__env_send_invoke(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    const struct sl_function_conf *fn = pool->fn;
    struct sl_invoke_msg m;
    char *frame;
    size_t len;
    int rc;

    m.request_id = env->inv->request_id;
    m.deadline_ms = sl_wall_ms() + fn->timeout_ms;
    m.function_name = fn->name;
    m.function_version = "$LATEST";
    m.memory_mb = fn->memory_mb;
    m.invoked_function_arn = fn->arn;
    m.client_context = env->inv->client_context;
    m.event = env->inv->event;
    m.event_len = env->inv->event_len;
    sl__env_set_state(env, ENV_BUSY);
    env->busy_ms = sl_mono_ms();
    sl__fnlog_start(env);
    if (env->rapi) {
        if (m.event_len > SL_PAYLOAD_MAX) {
            sl__env_set_state(env, ENV_IDLE);
            sl__env_finish(env, false, NULL, 0, "RequestTooLargeException", "event is over 6 MB",
                           NULL);
            return;
        }
        sl__env_timer(env->ev_timer, (double)fn->timeout_ms);
        sl__rapi_invoke(env, m.deadline_ms);
        return;
    }
    rc = sl_frame_invoke(&m, &frame, &len);
    if (rc != 0) {
        /* the event itself is too big: the env is fine */
        sl__env_set_state(env, ENV_IDLE);
        sl__env_finish(env, false, NULL, 0, "RequestTooLargeException", "event is over 6 MB", NULL);
        return;
    }
    /* write now rather than on the next loop turn: most frames fit the
     * socket buffer whole; the bufferevent takes whatever does not */
    {
        size_t off = 0;
        if (evbuffer_get_length(bufferevent_get_output(env->bev)) == 0) {
            ssize_t w = send(env->proc.sock, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                off = (size_t)w;
        }
        if (off < len)
            bufferevent_write(env->bev, frame + off, len - off);
    }
    free(frame);
    sl__env_timer(env->ev_timer, (double)fn->timeout_ms);
}

/* ------------------------------------------------------------------ */
/* Killed processes still to reap                                      */

/* A killed env's processes that had not exited yet: released once the
 * init's exit shows on its pidfd, so the loop never waits for them. */
struct sl__grave {
    struct sl_fnpool       *pool;
    struct sl_sbx_proc      proc;
    struct event           *ev;
    LIST_ENTRY(sl__grave)   link;
};

static void grave_free(struct sl__grave *g)
{
    sl_sandbox_reap(&g->proc);
    sl_sandbox_release(g->pool->sb, &g->proc);
    LIST_REMOVE(g, link);
    event_free(g->ev);
    free(g);
}

static void on_grave(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    grave_free(arg);
}

void sl__env_bury(struct sl_fnpool *pool, struct sl_sbx_proc *p)
{
    struct sl__grave *g;

    sl_sandbox_kill(pool->sb, p);
    if (sl_sandbox_reap(p) || p->pidfd < 0) {
        sl_sandbox_release(pool->sb, p);
        return;
    }
    g = sl_calloc(1, sizeof(*g));
    g->pool = pool;
    g->proc = *p;
    g->ev = event_new(pool->base, g->proc.pidfd, EV_READ, on_grave, g);
    LIST_INSERT_HEAD(&pool->graves, g, link);
    event_add(g->ev, NULL);
    /* `p` no longer owns anything */
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->pidfd = p->sock = p->out = p->err = p->setup = p->mem_fd = p->netns = p->rapi = -1;
}

void sl__env_graves_free(struct sl_fnpool *pool)
{
    /* SIGKILL went out long ago; one still running keeps its zombie */
    while (!LIST_EMPTY(&pool->graves))
        grave_free(LIST_FIRST(&pool->graves));
}

/* ------------------------------------------------------------------ */
/* Starting                                                            */

/* An env that could not start: undo sl__env_alloc, bury its processes. */
static void start_failed(struct sl_env *env, struct sl_err *err)
{
    struct sl_fnpool *pool = env->pool;

    if (!err->msg[0])
        sl_err_set(err, SL_ESANDBOX, false, "cannot watch the environment");
    if (env->kind == ENV_TEMPLATE)
        pool->template = NULL;
    LIST_REMOVE(env, link);
    if (env->kind != ENV_TEMPLATE) {
        pool->nenvs--;
        pool->nprovisioned -= env->provisioned;
    }
    sl__rapi_free(env);
    if (env->bev)
        bufferevent_free(env->bev);
    event_free(env->ev_timer);
    sl__env_bury(pool, &env->proc);
    free(env);
}

/* A cold env, or the function's SnapStart template when it has none yet,
 * or a fork of the template. NULL with `err` set when it cannot start. */
struct sl_env *sl__env_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err)
{
    struct sl_env *env;
    const char *init_type;

    if (pool->fn->snapstart && pool->fn->runtime == SL_RUNTIME_LAMBDA) {
        sl_err_set(err, SL_EINVAL, false, "runtime lambda cannot use snapstart");
        return NULL;
    }
    if (pool->fn->snapstart && pool->template)
        return sl__snapstart_start(pool, provisioned, err);
    init_type = pool->fn->snapstart ? "snap-start"
                : provisioned ? "provisioned-concurrency" : "on-demand";
    env = sl__env_alloc(pool, pool->fn->snapstart ? ENV_TEMPLATE : ENV_COLD, provisioned);
    if (sl_sandbox_spawn(pool->sb, pool->fn, init_type, &env->proc, err) != 0 ||
        sl__env_attach(env) != 0) {
        start_failed(env, err);
        return NULL;
    }
    if (env->kind == ENV_TEMPLATE)
        pool->template = env;
    sl__fnlog_init_start(env, init_type);
    sl__env_timer(env->ev_timer, (double)pool->fn->init_timeout_ms);
    SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "environment %s started (pid %d, %s)", env->id,
             (int)env->proc.pid, init_type);
    return env;
}

