/* Execution environments and the per-function pool.
 *
 * An env moves STARTING -> IDLE <-> BUSY -> gone. Every way an env or an
 * invocation can end funnels into finish() (the invocation's one result)
 * and env_destroy() (the env's processes killed, reaped, released). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/queue.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/env.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/clock.h"
#include "sluice/mem.h"

#define LINE_MAX_LOG   4096    /* a handler's output line is cut past this */
#define SHUTDOWN_MS    300     /* grace between the shutdown notice and SIGKILL */
#define EOF_GRACE_MS   200     /* socket closed: wait this long for the exit status */

enum env_state { ENV_STARTING, ENV_IDLE, ENV_BUSY, ENV_STOPPING };
enum env_kind { ENV_COLD, ENV_TEMPLATE, ENV_FORKED };

#define TAIL_MAX 4096          /* X-Amz-Log-Result: the last 4 KB of the log */

struct pending {
    char          tail[TAIL_MAX + 1];
    size_t        tail_len;
    char          request_id[40];
    const char   *event;             /* borrowed until cb */
    size_t        event_len;
    const char   *client_context;
    sl_invoke_cb  cb;
    void         *arg;
    double        queued_ms;
};

struct linebuf {
    char   buf[LINE_MAX_LOG];
    size_t len;
};

struct sl_env {
    struct sl_fnpool   *pool;
    int                 kind;            /* enum env_kind */
    int                 state;           /* enum env_state */
    char                id[24];
    struct sl_sbx_proc  proc;
    struct bufferevent *bev;             /* fd 3 */
    struct event       *ev_out, *ev_err, *ev_exit, *ev_setup, *ev_timer, *ev_first;
    struct linebuf      out, err;
    struct pending     *inv;             /* the invocation it runs or starts for */
    char                setup_error[SL_ERR_MSG_MAX];
    char                last_request[40];/* for output lines after a result */
    double              spawned_ms, ready_ms, busy_ms, idle_ms;
    double              init_ms;         /* to report on the first invocation */
    bool                provisioned;
    bool                sock_closed;
    bool                timing_out;
    int                 fork_fds[3];     /* forked env before the template took them */
    LIST_ENTRY(sl_env)  link;
};

LIST_HEAD(env_list, sl_env);

struct sl_fnpool {
    struct event_base             *base;
    struct sl_sandbox             *sb;
    const struct sl_function_conf *fn;
    struct sl_fnpool_opts          o;
    char                           inst[96];   /* "function:<name>" */
    struct env_list                envs;
    size_t                         nenvs;      /* excluding the template */
    size_t                         nidle, nbusy, nprovisioned;
    struct sl_env                 *template;
    bool                           template_ready;
    struct event                  *reaper;
    unsigned long                  seq;
    bool                           closing;
};

static void env_destroy(struct sl_env *env);
static void env_send_invoke(struct sl_env *env);
static void drain_output(struct sl_env *env, int fd, struct linebuf *lb);
static struct sl_env *env_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err);

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

static void timer_ms(struct event *ev, double ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)fmod(ms, 1000) * 1000 };
    evtimer_add(ev, &tv);
}

static void set_state(struct sl_env *env, int state)
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
static void tail_add(struct pending *inv, const char *s, size_t n)
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

/* Deliver the env's current invocation's one result. */
static void finish(struct sl_env *env, bool ok, const char *payload, size_t len,
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
        drain_output(env, env->proc.out, &env->out);
    if (env->proc.err >= 0)
        drain_output(env, env->proc.err, &env->err);
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
    {
        char report[512], init[64] = "";
        int n;

        if (r.cold)
            snprintf(init, sizeof(init), "\tInit Duration: %.2f ms", r.init_ms);
        n = snprintf(report, sizeof(report), "REPORT RequestId: %s\tDuration: %.2f ms\t"
                     "Billed Duration: %lld ms\tMemory Size: %lld MB\tMax Memory Used: %lld MB"
                     "%s\n", inv->request_id, r.duration_ms, (long long)billed,
                     (long long)pool->fn->memory_mb, (long long)r.max_memory_mb, init);
        if (n > 0)
            tail_add(inv, report, (size_t)n < sizeof(report) ? (size_t)n : sizeof(report) - 1);
        r.log_tail = inv->tail;
    }
    if (r.cold)
        SL_INFO(pool->inst, "REPORT RequestId: %s Duration: %.2f ms Billed Duration: %lld ms "
                "Memory Size: %lld MB Max Memory Used: %lld MB Init Duration: %.2f ms%s",
                inv->request_id, r.duration_ms, (long long)billed,
                (long long)pool->fn->memory_mb, (long long)r.max_memory_mb, r.init_ms,
                env->kind == ENV_FORKED ? " (restored)" : "");
    else
        SL_INFO(pool->inst, "REPORT RequestId: %s Duration: %.2f ms Billed Duration: %lld ms "
                "Memory Size: %lld MB Max Memory Used: %lld MB", inv->request_id,
                r.duration_ms, (long long)billed, (long long)pool->fn->memory_mb,
                (long long)r.max_memory_mb);
    if (!ok)
        SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "%s failed: %s: %s", inv->request_id, etype,
                 emsg ? emsg : "");
    inv->cb(&r, inv->arg);
    json_decref(stack);
    free(inv);
}

/* The env is unusable: fail its invocation with this error and destroy it. */
static void env_fail(struct sl_env *env, const char *etype, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void env_fail(struct sl_env *env, const char *etype, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!env->inv && env->state != ENV_STOPPING)
        SL_WARN(env->pool->inst, "environment %s lost: %s: %s", env->id, etype, msg);
    finish(env, false, NULL, 0, etype, msg, NULL);
    env_destroy(env);
}

/* ------------------------------------------------------------------ */
/* Handler output                                                      */

static void log_line(struct sl_env *env, const char *line, size_t len)
{
    const char *req = env->inv ? env->inv->request_id : env->last_request[0] ? env->last_request
                                                                            : "init";
    SL_INFO(env->pool->inst, "[%s] %.*s", req, (int)len, line);
    if (env->inv) {
        tail_add(env->inv, line, len);
        tail_add(env->inv, "\n", 1);
    }
}

static void drain_output(struct sl_env *env, int fd, struct linebuf *lb)
{
    char buf[8192];
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' || lb->len == sizeof(lb->buf)) {
                log_line(env, lb->buf, lb->len);
                lb->len = 0;
                if (buf[i] == '\n')
                    continue;
            }
            lb->buf[lb->len++] = buf[i];
        }
    }
    if (n == 0 && lb->len) {
        log_line(env, lb->buf, lb->len);
        lb->len = 0;
    }
}

static void on_output(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;

    (void)what;
    drain_output(env, fd, fd == env->proc.out ? &env->out : &env->err);
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
    env_fail(env, "Runtime.OutOfMemory", "RequestId: %s Error: Runtime exited with error: "
             "signal: killed (memory limit of %lld MB reached)",
             env->inv ? env->inv->request_id : "-", (long long)env->pool->fn->memory_mb);
}

static void on_exit_ev(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    int st;

    (void)fd, (void)what;
    sl_sandbox_reap(&env->proc);
    /* whatever the handler printed last belongs to this invocation */
    if (env->proc.out >= 0)
        drain_output(env, env->proc.out, &env->out);
    if (env->proc.err >= 0)
        drain_output(env, env->proc.err, &env->err);
    if (env->ev_setup)
        on_setup(env->proc.setup, 0, env);
    st = env->proc.status;
    if (env->setup_error[0]) {
        env_fail(env, "Sandbox.Failure", "%s", env->setup_error);
    } else if (sl_sandbox_oom_killed(&env->proc)) {
        fail_oom(env);
    } else if (env->kind == ENV_FORKED) {
        env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited",
                 env->inv ? env->inv->request_id : "-");
    } else if (WIFEXITED(st) && WEXITSTATUS(st) > 128 && WEXITSTATUS(st) < 128 + 65) {
        env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
                 "signal: %s", env->inv ? env->inv->request_id : "-",
                 strsignal(WEXITSTATUS(st) - 128));
    } else if (WIFEXITED(st)) {
        env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
                 "exit status %d", env->inv ? env->inv->request_id : "-", WEXITSTATUS(st));
    } else {
        env_fail(env, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: "
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
        env_fail(env, "Sandbox.Timedout", "init did not finish within %.2f seconds",
                 pool->fn->init_timeout_ms / 1000.0);
        return;
    case ENV_BUSY:
        if (env->sock_closed) {
            /* a throttled cgroup can delay the init's exit past the grace */
            if (sl_sandbox_oom_killed(&env->proc))
                fail_oom(env);
            else
                env_fail(env, "Runtime.InvalidResponse", "handler closed its protocol socket");
            return;
        }
        env_fail(env, "Sandbox.Timedout", "RequestId: %s Error: Task timed out after %.2f seconds",
                 env->inv ? env->inv->request_id : "-", pool->fn->timeout_ms / 1000.0);
        return;
    default:
        env_destroy(env); /* shutdown grace over */
    }
}

/* ------------------------------------------------------------------ */
/* Protocol                                                            */

static void on_ready(struct sl_env *env, const struct sl_msg *m)
{
    struct sl_fnpool *pool = env->pool;

    if (env->state != ENV_STARTING) {
        env_fail(env, "Runtime.InvalidResponse", "'ready' from an initialized handler");
        return;
    }
    event_del(env->ev_timer);
    env->ready_ms = sl_mono_ms();
    env->init_ms = env->ready_ms - env->spawned_ms;
    SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "environment %s ready in %.2f ms%s", env->id,
             env->init_ms, m->restored ? " (restored)" : "");
    if (env->kind == ENV_TEMPLATE) {
        char *frame;
        size_t len;
        env->state = ENV_IDLE;
        sl_frame_snapshot(&frame, &len);
        bufferevent_write(env->bev, frame, len);
        free(frame);
        return;
    }
    if (env->inv) {
        env_send_invoke(env);
        return;
    }
    /* nobody waited for this init: the first invocation will be warm */
    env->init_ms = 0;
    set_state(env, ENV_IDLE);
    env->idle_ms = sl_mono_ms();
}

static void fork_from_template(struct sl_env *env);

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
        finish(env, false, NULL, 0, etype, emsg, stack_json(m->stack));
        env_destroy(env);
        return;
    case SL_MSG_RESULT:
        if (env->state != ENV_BUSY || !env->inv ||
            m->request_id.n != strlen(env->inv->request_id) ||
            memcmp(m->request_id.p, env->inv->request_id, m->request_id.n) != 0) {
            env_fail(env, "Runtime.InvalidResponse", "result for a request that is not running");
            return;
        }
        event_del(env->ev_timer);
        set_state(env, ENV_IDLE);
        env->idle_ms = sl_mono_ms();
        if (m->ok && m->payload.n > SL_PAYLOAD_MAX) {
            snprintf(emsg, sizeof(emsg), "Response payload size (%zu bytes) exceeded maximum "
                     "allowed payload size (%d bytes).", m->payload.n, SL_PAYLOAD_MAX);
            finish(env, false, NULL, 0, "Function.ResponseSizeTooLarge", emsg, NULL);
        } else if (m->ok) {
            finish(env, true, m->payload.p, m->payload.n, NULL, NULL, NULL);
        } else {
            snprintf(etype, sizeof(etype), "%.*s", (int)m->error_type.n, m->error_type.p);
            snprintf(emsg, sizeof(emsg), "%.*s", (int)m->error_message.n,
                     m->error_message.p ? m->error_message.p : "");
            finish(env, false, NULL, 0, etype, emsg, stack_json(m->stack));
        }
        return;
    case SL_MSG_SNAPSHOT_READY:
        if (env->kind != ENV_TEMPLATE) {
            env_fail(env, "Runtime.InvalidResponse", "unexpected snapshot_ready");
            return;
        }
        pool->template_ready = true;
        SL_INFO(pool->inst, "snapstart template ready in %.2f ms", env->init_ms);
        {
            struct sl_env *e;
            LIST_FOREACH(e, &pool->envs, link)
                if (e->kind == ENV_FORKED && e->fork_fds[0] >= 0)
                    fork_from_template(e);
        }
        return;
    case SL_MSG_FORKED:
        SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "template forked %.*s as pid %lld",
                 (int)m->env_id.n, m->env_id.p, (long long)m->pid);
        return;
    default:
        env_fail(env, "Runtime.InvalidResponse", "unexpected message");
    }
}

static void on_read(struct bufferevent *bev, void *arg)
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
            env_fail(env, "Function.ResponseSizeTooLarge", "%s", why);
            return;
        }
        if (rc < 0) {
            env_fail(env, "Runtime.InvalidResponse", "%s", why);
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
        timer_ms(env->ev_timer, EOF_GRACE_MS);
}

/* ------------------------------------------------------------------ */
/* Creating and destroying envs                                        */

static int env_attach(struct sl_env *env)
{
    struct event_base *base = env->pool->base;

    env->bev = bufferevent_socket_new(base, env->proc.sock, 0);
    if (!env->bev)
        return -1;
    bufferevent_setcb(env->bev, on_read, NULL, on_bev_event, env);
    bufferevent_enable(env->bev, EV_READ | EV_WRITE);
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

static struct sl_env *env_alloc(struct sl_fnpool *pool, int kind, bool provisioned)
{
    struct sl_env *env = sl_calloc(1, sizeof(*env));

    env->pool = pool;
    env->kind = kind;
    env->state = ENV_STARTING;
    env->provisioned = provisioned;
    env->spawned_ms = sl_mono_ms();
    env->fork_fds[0] = env->fork_fds[1] = env->fork_fds[2] = -1;
    env->proc.pid = -1;
    env->proc.pidfd = env->proc.sock = env->proc.out = env->proc.err = env->proc.setup = -1;
    env->proc.mem_fd = -1;
    snprintf(env->id, sizeof(env->id), "%s%lu", kind == ENV_TEMPLATE ? "t" : "e", ++pool->seq);
    env->ev_timer = evtimer_new(pool->base, on_timer, env);
    LIST_INSERT_HEAD(&pool->envs, env, link);
    if (kind != ENV_TEMPLATE) {
        pool->nenvs++;
        pool->nprovisioned += provisioned;
    }
    return env;
}

static void env_destroy(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    bool replace;

    finish(env, false, NULL, 0, "Sandbox.Failure", "environment stopped", NULL);
    LIST_REMOVE(env, link);
    if (env->kind != ENV_TEMPLATE) {
        set_state(env, ENV_STOPPING);
        pool->nenvs--;
        pool->nprovisioned -= env->provisioned;
    } else {
        pool->template = NULL;
        pool->template_ready = false;
    }
    replace = env->provisioned && !pool->closing;
    if (env->proc.pid > 0 || env->proc.ncgroup) {
        sl_sandbox_kill(pool->sb, &env->proc);
        /* SIGKILL was sent; the exit is immediate for all practical purposes */
        for (int i = 0; i < 2000 && !sl_sandbox_reap(&env->proc); i++)
            usleep(50);
    }
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
    sl_sandbox_release(pool->sb, &env->proc);
    free(env);

    /* provisioned concurrency is a floor: put a lost env back */
    if (replace && pool->nprovisioned < (size_t)pool->fn->provisioned_concurrency) {
        struct sl_err err;
        if (!env_start(pool, true, &err))
            SL_ERROR(pool->inst, "cannot replace a provisioned environment: %s", err.msg);
    }
}

static void env_send_invoke(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    const struct sl_function_conf *fn = pool->fn;
    struct sl_invoke_msg m;
    char arn[256], *frame;
    size_t len;
    int rc;

    snprintf(arn, sizeof(arn), "arn:aws:lambda:us-east-1:000000000000:function:%s", fn->name);
    m.request_id = env->inv->request_id;
    m.deadline_ms = sl_wall_ms() + fn->timeout_ms;
    m.function_name = fn->name;
    m.function_version = "$LATEST";
    m.memory_mb = fn->memory_mb;
    m.invoked_function_arn = arn;
    m.client_context = env->inv->client_context;
    m.event = env->inv->event;
    m.event_len = env->inv->event_len;
    set_state(env, ENV_BUSY);
    env->busy_ms = sl_mono_ms();
    rc = sl_frame_invoke(&m, &frame, &len);
    if (rc != 0) {
        /* the event itself is too big: the env is fine */
        set_state(env, ENV_IDLE);
        finish(env, false, NULL, 0, "RequestTooLargeException", "event is over 6 MB", NULL);
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
    timer_ms(env->ev_timer, (double)fn->timeout_ms);
}

/* ------------------------------------------------------------------ */
/* SnapStart                                                           */

/* The first message of a forked env carries its credentials: read it by
 * hand, place the process in its cgroups, then hand over to a bufferevent. */
static void on_first(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    struct sl_fnpool *pool = env->pool;
    char buf[65536], cbuf[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = { buf, sizeof(buf) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    struct ucred cred = { 0, 0, 0 };
    struct cmsghdr *cm;
    struct sl_err err;
    ssize_t n;
    int pidfd;

    (void)what;
    n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        env_fail(env, "Runtime.ExitError", "restored environment exited before it was ready");
        return;
    }
    for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
            memcpy(&cred, CMSG_DATA(cm), sizeof(cred));
    if (cred.pid <= 0) {
        env_fail(env, "Runtime.InvalidResponse", "restored environment sent no credentials");
        return;
    }
    event_free(env->ev_first);
    env->ev_first = NULL;
    env->proc.pid = cred.pid;
    pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
    env->proc.pidfd = pidfd;
    sl_err_clear(&err);
    if (pidfd < 0 || sl_sandbox_cgroup_new(pool->sb, pool->fn, &env->proc, &err) != 0 ||
        sl_sandbox_adopt(pool->sb, &env->proc, cred.pid, &err) != 0) {
        env_fail(env, "Sandbox.Failure", "cannot isolate the restored environment: %s",
                 err.msg[0] ? err.msg : strerror(errno));
        return;
    }
    if (env_attach(env) != 0) {
        env_fail(env, "Sandbox.Failure", "cannot watch the restored environment");
        return;
    }
    {
        /* a socket bufferevent freezes the end of its input: thaw it to
         * put back the frame recvmsg already took */
        struct evbuffer *in = bufferevent_get_input(env->bev);
        int added;

        evbuffer_unfreeze(in, 0);
        added = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (added != 0) {
            env_fail(env, "Sandbox.Failure", "cannot buffer the restored environment's frame");
            return;
        }
    }
    on_read(env->bev, env);
}

static void fork_from_template(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    struct sl_env *t = pool->template;
    char cbuf[CMSG_SPACE(3 * sizeof(int))], *frame;
    struct iovec iov;
    struct msghdr mh;
    struct cmsghdr *cm;
    size_t len;
    ssize_t n;

    if (!t || !pool->template_ready)
        return; /* done when the template is ready */
    sl_frame_fork(env->id, &frame, &len);
    iov.iov_base = frame;
    iov.iov_len = len;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
    memcpy(CMSG_DATA(cm), env->fork_fds, 3 * sizeof(int));
    /* the template's output buffer only ever holds small frames that the
     * kernel takes whole, so this send does not interleave with them */
    n = evbuffer_get_length(bufferevent_get_output(t->bev)) == 0
            ? sendmsg(t->proc.sock, &mh, MSG_NOSIGNAL) : -1;
    free(frame);
    for (int i = 0; i < 3; i++) {
        close(env->fork_fds[i]);
        env->fork_fds[i] = -1;
    }
    if (n != (ssize_t)len) {
        env_fail(env, "Sandbox.Failure", "cannot ask the snapstart template to fork");
        return;
    }
    env->ev_first = event_new(pool->base, env->proc.sock, EV_READ | EV_PERSIST, on_first, env);
    event_add(env->ev_first, NULL);
}

static struct sl_env *env_start_forked(struct sl_fnpool *pool, bool provisioned,
                                       struct sl_err *err)
{
    struct sl_env *env;
    int sv[2], outp[2], errp[2], one = 1;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a socket pair: %s", strerror(errno));
        return NULL;
    }
    if (pipe2(outp, O_CLOEXEC) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a pipe: %s", strerror(errno));
        close(sv[0]), close(sv[1]);
        return NULL;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a pipe: %s", strerror(errno));
        close(sv[0]), close(sv[1]), close(outp[0]), close(outp[1]);
        return NULL;
    }
    setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
    env = env_alloc(pool, ENV_FORKED, provisioned);
    env->proc.sock = sv[0];
    env->proc.out = outp[0];
    env->proc.err = errp[0];
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    env->fork_fds[0] = sv[1];
    env->fork_fds[1] = outp[1];
    env->fork_fds[2] = errp[1];
    timer_ms(env->ev_timer, (double)pool->fn->init_timeout_ms);
    fork_from_template(env);
    return env;
}

/* ------------------------------------------------------------------ */

static struct sl_env *env_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err)
{
    struct sl_env *env;
    const char *init_type;

    if (pool->fn->snapstart && pool->template)
        return env_start_forked(pool, provisioned, err);
    init_type = pool->fn->snapstart ? "snap-start"
                : provisioned ? "provisioned-concurrency" : "on-demand";
    env = env_alloc(pool, pool->fn->snapstart ? ENV_TEMPLATE : ENV_COLD, provisioned);
    if (sl_sandbox_spawn(pool->sb, pool->fn, init_type, &env->proc, err) != 0 ||
        env_attach(env) != 0) {
        if (!err->msg[0])
            sl_err_set(err, SL_ESANDBOX, false, "cannot watch the environment");
        env->provisioned = false; /* no replacement loop on a broken host */
        if (env->kind == ENV_TEMPLATE)
            pool->template = NULL;
        LIST_REMOVE(env, link);
        if (env->kind != ENV_TEMPLATE) {
            pool->nenvs--;
            pool->nprovisioned -= provisioned;
        }
        sl_sandbox_kill(pool->sb, &env->proc);
        sl_sandbox_release(pool->sb, &env->proc);
        event_free(env->ev_timer);
        if (env->bev)
            bufferevent_free(env->bev);
        free(env);
        return NULL;
    }
    if (env->kind == ENV_TEMPLATE)
        pool->template = env;
    timer_ms(env->ev_timer, (double)pool->fn->init_timeout_ms);
    SL_DEBUG(SL_DBG_SANDBOX, pool->inst, "environment %s started (pid %d, %s)", env->id,
             (int)env->proc.pid, init_type);
    return env;
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
            sl_frame_shutdown("spindown", sl_wall_ms() + SHUTDOWN_MS, &frame, &len);
            bufferevent_write(env->bev, frame, len);
            free(frame);
            set_state(env, ENV_STOPPING);
            timer_ms(env->ev_timer, SHUTDOWN_MS);
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
    snprintf(pool->inst, sizeof(pool->inst), "function:%s", fn->name);
    pool->reaper = event_new(base, -1, EV_PERSIST, on_reap, pool);
    event_add(pool->reaper, &tv);

    if (fn->snapstart && !env_start(pool, false, err))
        goto fail;
    for (int64_t i = 0; i < fn->provisioned_concurrency; i++)
        if (!env_start(pool, true, err))
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
    int64_t cap = fn->reserved_concurrency >= 0 ? fn->reserved_concurrency : pool->o.max_envs;
    struct sl_env *env, *pick = NULL;
    struct pending *inv;
    struct sl_err err;

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
    inv->event = req->event;
    inv->event_len = req->event_len;
    inv->client_context = req->client_context;
    inv->cb = cb;
    inv->arg = arg;
    inv->queued_ms = sl_mono_ms();

    if (!pick) {
        sl_err_clear(&err);
        pick = env_start(pool, false, &err);
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
        env_send_invoke(pick);
    else
        pick->init_ms = 0; /* set at ready; marks this invocation cold */
    return 0;
}

size_t sl_fnpool_envs(const struct sl_fnpool *pool) { return pool->nenvs; }
size_t sl_fnpool_idle(const struct sl_fnpool *pool) { return pool->nidle; }
size_t sl_fnpool_busy(const struct sl_fnpool *pool) { return pool->nbusy; }

void sl_fnpool_free(struct sl_fnpool *pool)
{
    struct sl_env *env;

    if (!pool)
        return;
    pool->closing = true;
    /* forked envs first: they live inside the template's namespace */
    while ((env = LIST_FIRST(&pool->envs))) {
        struct sl_env *e, *victim = env;
        LIST_FOREACH(e, &pool->envs, link)
            if (e->kind != ENV_TEMPLATE) {
                victim = e;
                break;
            }
        if (victim->inv) {
            finish(victim, false, NULL, 0, "Sandbox.Failure", "sluice is shutting down", NULL);
        }
        env_destroy(victim);
    }
    if (pool->reaper)
        event_free(pool->reaper);
    free(pool);
}
