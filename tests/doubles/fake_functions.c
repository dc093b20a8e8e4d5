/* Test double: function pools answered by a script. See fake_functions.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "sluice/err.h"
#include "sluice/mem.h"

#include "fake_functions.h"

#define FAKE_MAGIC 0x66616b65u /* "fake" */

struct queued {
    struct fake_answer     a;
    STAILQ_ENTRY(queued)   link;
};

struct fpool {
    uint32_t                magic;     /* first: tells a fake pool from a real one */
    struct fake_functions  *f;
    char                   *name;
    size_t                  calls;
    fake_script_fn          script;
    void                   *arg;
    STAILQ_HEAD(, queued)   queue;
};

struct inflight {
    struct fpool           *p;
    struct event           *ev;
    char                    request_id[37];
    struct fake_answer      a;
    sl_invoke_cb            cb;
    void                   *arg;
    LIST_ENTRY(inflight)    link;
};

struct fake_functions {
    uint32_t                magic;     /* first: tells a fake handle from a real one */
    struct event_base      *base;
    struct fpool          **pools;
    size_t                  npools;
    fake_script_fn          script;    /* for any function */
    void                   *arg;
    char                  **events;    /* every invocation's event, owned */
    size_t                  nevents, cap;
    size_t                  running;
    LIST_HEAD(, inflight)   inflight;
};

/* the real ones, from libsluice.a (-Wl,--wrap) */
struct sl_fnpool *__real_sl_functions_pool(struct sl_functions *f, const char *name);
size_t __real_sl_fnpool_idle(const struct sl_fnpool *pool);
int __real_sl_fnpool_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req,
                            sl_invoke_cb cb, void *arg);
struct sl_fnpool *__wrap_sl_functions_pool(struct sl_functions *f, const char *name);
size_t __wrap_sl_fnpool_idle(const struct sl_fnpool *pool);
int __wrap_sl_fnpool_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req,
                            sl_invoke_cb cb, void *arg);

/* ------------------------------------------------------------------ */
/* answers                                                             */

static char *dup_or_null(const char *s)
{
    return s ? sl_strdup(s) : NULL;
}

static void answer_clear(struct fake_answer *a)
{
    free(a->payload);
    free(a->error_type);
    free(a->error_message);
    memset(a, 0, sizeof(*a));
}

static void answer_copy(struct fake_answer *to, const struct fake_answer *from)
{
    *to = *from;
    to->payload = dup_or_null(from->payload);
    to->error_type = dup_or_null(from->error_type);
    to->error_message = dup_or_null(from->error_message);
}

void fake_answer_ok(struct fake_answer *a, const char *payload)
{
    free(a->payload);
    a->ok = true;
    a->payload = sl_strdup(payload ? payload : "{}");
}

void fake_answer_error(struct fake_answer *a, const char *type, const char *message)
{
    free(a->error_type);
    free(a->error_message);
    a->ok = false;
    a->error_type = sl_strdup(type ? type : "Error");
    a->error_message = sl_strdup(message ? message : "");
}

/* ------------------------------------------------------------------ */
/* the functions                                                       */

struct fake_functions *fake_functions_new(struct event_base *base, const char *const *names)
{
    struct fake_functions *f = sl_calloc(1, sizeof(*f));

    f->magic = FAKE_MAGIC;
    f->base = base;
    LIST_INIT(&f->inflight);
    while (names && names[f->npools])
        f->npools++;
    f->pools = sl_calloc(f->npools ? f->npools : 1, sizeof(*f->pools));
    for (size_t i = 0; i < f->npools; i++) {
        struct fpool *p = sl_calloc(1, sizeof(*p));
        p->magic = FAKE_MAGIC;
        p->f = f;
        p->name = sl_strdup(names[i]);
        STAILQ_INIT(&p->queue);
        f->pools[i] = p;
    }
    return f;
}

static struct fpool *pool_named(const struct fake_functions *f, const char *name)
{
    for (size_t i = 0; name && i < f->npools; i++)
        if (strcmp(f->pools[i]->name, name) == 0)
            return f->pools[i];
    return NULL;
}

void fake_functions_script(struct fake_functions *f, const char *fn, fake_script_fn script,
                           void *arg)
{
    struct fpool *p = pool_named(f, fn);

    if (p) {
        p->script = script;
        p->arg = arg;
    } else {
        f->script = script;
        f->arg = arg;
    }
}

void fake_functions_push(struct fake_functions *f, const char *fn, const struct fake_answer *a)
{
    struct fpool *p = pool_named(f, fn);
    struct queued *q;

    if (!p)
        return;
    q = sl_calloc(1, sizeof(*q));
    answer_copy(&q->a, a);
    STAILQ_INSERT_TAIL(&p->queue, q, link);
}

struct sl_functions *fake_functions_handle(struct fake_functions *f)
{
    return (struct sl_functions *)f;
}

size_t fake_functions_calls(const struct fake_functions *f, const char *fn)
{
    const struct fpool *p = pool_named(f, fn);

    return p ? p->calls : fn ? 0 : f->nevents;
}

size_t fake_functions_running(const struct fake_functions *f)
{
    return f->running;
}

const char *fake_functions_event(const struct fake_functions *f, size_t i)
{
    return i < f->nevents ? f->events[i] : NULL;
}

/* End `in` with `a` (or the answer it carries) and free it. */
static void finish(struct inflight *in)
{
    struct sl_invoke_result r;
    struct fake_functions *f = in->p->f;

    memset(&r, 0, sizeof(r));
    r.request_id = in->request_id;
    r.ok = in->a.ok;
    if (r.ok) {
        r.payload = in->a.payload ? in->a.payload : "{}";
        r.payload_len = strlen(r.payload);
    } else {
        r.error_type = in->a.error_type ? in->a.error_type : "Error";
        r.error_message = in->a.error_message ? in->a.error_message : "";
    }
    r.duration_ms = in->a.delay_ms;
    r.max_memory_mb = 1;
    r.log_tail = "";
    LIST_REMOVE(in, link);
    f->running--;
    event_free(in->ev);
    in->cb(&r, in->arg);
    answer_clear(&in->a);
    free(in);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    finish(arg);
}

void fake_functions_free(struct fake_functions *f)
{
    struct inflight *in;

    if (!f)
        return;
    while ((in = LIST_FIRST(&f->inflight))) {
        answer_clear(&in->a);
        fake_answer_error(&in->a, "Sandbox.Failure", "sluice is shutting down");
        finish(in);
    }
    for (size_t i = 0; i < f->npools; i++) {
        struct queued *q;
        while ((q = STAILQ_FIRST(&f->pools[i]->queue))) {
            STAILQ_REMOVE_HEAD(&f->pools[i]->queue, link);
            answer_clear(&q->a);
            free(q);
        }
        free(f->pools[i]->name);
        free(f->pools[i]);
    }
    free(f->pools);
    for (size_t i = 0; i < f->nevents; i++)
        free(f->events[i]);
    free(f->events);
    free(f);
}

/* ------------------------------------------------------------------ */
/* the wrapped library functions                                       */

static bool is_fake(const void *p)
{
    return p && *(const uint32_t *)p == FAKE_MAGIC;
}

struct sl_fnpool *__wrap_sl_functions_pool(struct sl_functions *fns, const char *name)
{
    struct fake_functions *f = (struct fake_functions *)fns;

    if (!is_fake(fns))
        return __real_sl_functions_pool(fns, name);
    return (struct sl_fnpool *)pool_named(f, name);
}

size_t __wrap_sl_fnpool_idle(const struct sl_fnpool *pool)
{
    /* a fake environment is always warm: no scale-up throttling */
    return is_fake(pool) ? 1 : __real_sl_fnpool_idle(pool);
}

int __wrap_sl_fnpool_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req,
                            sl_invoke_cb cb, void *arg)
{
    struct fpool *p = (struct fpool *)pool;
    struct fake_functions *f;
    struct fake_call call;
    struct inflight *in;
    struct queued *q;
    struct timeval tv;
    char *event;

    if (!is_fake(pool))
        return __real_sl_fnpool_invoke(pool, req, cb, arg);
    f = p->f;
    event = sl_malloc(req->event_len + 1);
    memcpy(event, req->event, req->event_len);
    event[req->event_len] = '\0';
    if (f->nevents == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 16;
        f->events = sl_realloc(f->events, f->cap * sizeof(*f->events));
    }
    f->events[f->nevents++] = event;
    p->calls++;

    in = sl_calloc(1, sizeof(*in));
    in->p = p;
    in->cb = cb;
    in->arg = arg;
    if (req->request_id)
        snprintf(in->request_id, sizeof(in->request_id), "%s", req->request_id);
    else
        sl_uuid(in->request_id);
    fake_answer_ok(&in->a, "{}");
    call = (struct fake_call){ p->name, event, req->event_len, p->calls };
    if ((q = STAILQ_FIRST(&p->queue))) {
        STAILQ_REMOVE_HEAD(&p->queue, link);
        answer_clear(&in->a);
        in->a = q->a;
        free(q);
    } else if (p->script) {
        p->script(p->arg, &call, &in->a);
    } else if (f->script) {
        f->script(f->arg, &call, &in->a);
    }
    if (in->a.refuse) {
        answer_clear(&in->a);
        free(in);
        return SL_EAGAIN;
    }
    tv.tv_sec = in->a.delay_ms / 1000;
    tv.tv_usec = (in->a.delay_ms % 1000) * 1000;
    in->ev = evtimer_new(f->base, on_due, in);
    LIST_INSERT_HEAD(&f->inflight, in, link);
    f->running++;
    evtimer_add(in->ev, &tv); /* cb never runs inside invoke */
    return 0;
}
