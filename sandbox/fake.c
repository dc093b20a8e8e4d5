/* Fake functions, the sandbox's test double: pools that answer invocations
 * from a script and count them. A fake pool is a real struct sl_fnpool
 * with no envs and `fake` set; sl_fnpool_invoke, sl_fnpool_idle and
 * sl_fnpool_free branch on it. See sluice/fake_functions.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "internal.h"
#include "sluice/err.h"
#include "sluice/fake_functions.h"
#include "sluice/log.h"
#include "sluice/mem.h"

/* An answer queued by sl_fake_functions_push. */
struct queued {
    struct sl_fake_answer  a;
    STAILQ_ENTRY(queued)   link;
};

/* An invocation waiting for its answer's delay. */
struct inflight {
    struct sl_fnpool       *pool;
    struct event           *ev;
    char                    request_id[37];
    struct sl_fake_answer   a;
    sl_invoke_cb            cb;
    void                   *arg;
    LIST_ENTRY(inflight)    link;
};

/* What all the fake pools of one sl_functions share. */
struct sl__fakes {
    sl_fake_script_fn       script;    /* for any function */
    void                   *arg;
    char                  **events;    /* every invocation's event, owned */
    size_t                  nevents, cap;
    size_t                  running;
};

/* One fake pool (pool->fake). */
struct sl__fake {
    struct sl__fakes       *fs;        /* borrowed from the functions */
    char                   *name;
    size_t                  calls;
    sl_fake_script_fn       script;
    void                   *arg;
    STAILQ_HEAD(, queued)   queue;
    LIST_HEAD(, inflight)   inflight;
};

/* ------------------------------------------------------------------ */
/* Answers                                                             */

static char *dup_or_null(const char *s)
{
    return s ? sl_strdup(s) : NULL;
}

static void answer_clear(struct sl_fake_answer *a)
{
    free(a->payload);
    free(a->error_type);
    free(a->error_message);
    memset(a, 0, sizeof(*a));
}

static void answer_copy(struct sl_fake_answer *to, const struct sl_fake_answer *from)
{
    *to = *from;
    to->payload = dup_or_null(from->payload);
    to->error_type = dup_or_null(from->error_type);
    to->error_message = dup_or_null(from->error_message);
}

void sl_fake_answer_ok(struct sl_fake_answer *a, const char *payload)
{
    free(a->payload);
    a->ok = true;
    a->payload = sl_strdup(payload ? payload : "{}");
}

void sl_fake_answer_error(struct sl_fake_answer *a, const char *type, const char *message)
{
    free(a->error_type);
    free(a->error_message);
    a->ok = false;
    a->error_type = sl_strdup(type ? type : "Error");
    a->error_message = sl_strdup(message ? message : "");
}

/* ------------------------------------------------------------------ */
/* The functions                                                       */

struct sl_functions *sl_fake_functions_new(struct event_base *base, const char *const *names)
{
    struct sl_functions *f = sl_calloc(1, sizeof(*f));

    f->fakes = sl_calloc(1, sizeof(*f->fakes));
    while (names && names[f->npools])
        f->npools++;
    f->pools = sl_calloc(f->npools ? f->npools : 1, sizeof(*f->pools));
    for (size_t i = 0; i < f->npools; i++) {
        struct sl_fnpool *pool = sl_calloc(1, sizeof(*pool));
        struct sl__fake *fk = sl_calloc(1, sizeof(*fk));

        fk->fs = f->fakes;
        fk->name = sl_strdup(names[i]);
        STAILQ_INIT(&fk->queue);
        LIST_INIT(&fk->inflight);
        pool->base = base;
        pool->fake = fk;
        LIST_INIT(&pool->envs);
        LIST_INIT(&pool->graves);
        snprintf(pool->inst, sizeof(pool->inst), "function:%s", names[i]);
        f->pools[i] = pool;
    }
    return f;
}

bool sl_fake_functions_is(const struct sl_functions *f)
{
    return f && f->fakes;
}

struct sl_fnpool *sl__fake_pool(struct sl_functions *f, const char *name)
{
    for (size_t i = 0; name && i < f->npools; i++)
        if (f->pools[i] && strcmp(f->pools[i]->fake->name, name) == 0)
            return f->pools[i];
    return NULL;
}

static struct sl__fake *fake_named(const struct sl_functions *f, const char *name)
{
    struct sl_fnpool *pool = sl_fake_functions_is(f)
                                 ? sl__fake_pool((struct sl_functions *)f, name) : NULL;

    return pool ? pool->fake : NULL;
}

void sl_fake_functions_script(struct sl_functions *f, const char *fn, sl_fake_script_fn script,
                              void *arg)
{
    struct sl__fake *fk = fake_named(f, fn);

    if (fk) {
        fk->script = script;
        fk->arg = arg;
    } else if (sl_fake_functions_is(f)) {
        f->fakes->script = script;
        f->fakes->arg = arg;
    }
}

void sl_fake_functions_push(struct sl_functions *f, const char *fn,
                            const struct sl_fake_answer *a)
{
    struct sl__fake *fk = fake_named(f, fn);
    struct queued *q;

    if (!fk)
        return;
    q = sl_calloc(1, sizeof(*q));
    answer_copy(&q->a, a);
    STAILQ_INSERT_TAIL(&fk->queue, q, link);
}

size_t sl_fake_functions_calls(const struct sl_functions *f, const char *fn)
{
    const struct sl__fake *fk = fake_named(f, fn);

    if (fk)
        return fk->calls;
    return !fn && sl_fake_functions_is(f) ? f->fakes->nevents : 0;
}

size_t sl_fake_functions_running(const struct sl_functions *f)
{
    return sl_fake_functions_is(f) ? f->fakes->running : 0;
}

const char *sl_fake_functions_event(const struct sl_functions *f, size_t i)
{
    return sl_fake_functions_is(f) && i < f->fakes->nevents ? f->fakes->events[i] : NULL;
}

void sl__fakes_free(struct sl__fakes *fs)
{
    if (!fs)
        return;
    for (size_t i = 0; i < fs->nevents; i++)
        free(fs->events[i]);
    free(fs->events);
    free(fs);
}

/* ------------------------------------------------------------------ */
/* Invocations                                                         */

/* End `in` with the answer it carries, and free it. */
static void finish(struct inflight *in)
{
    struct sl_fnpool *pool = in->pool;
    struct sl_invoke_result r;

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
    pool->fake->fs->running--;
    pool->nbusy--;
    event_free(in->ev);
    in->cb(&r, in->arg); /* may invoke again, or free the functions */
    answer_clear(&in->a);
    free(in);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    finish(arg);
}

int sl__fake_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req, sl_invoke_cb cb,
                    void *arg)
{
    struct sl__fake *fk = pool->fake;
    struct sl__fakes *fs = fk->fs;
    struct sl_fake_call call;
    struct inflight *in;
    struct queued *q;
    struct timeval tv;
    char *event;

    event = sl_malloc(req->event_len + 1);
    memcpy(event, req->event, req->event_len);
    event[req->event_len] = '\0';
    if (fs->nevents == fs->cap) {
        fs->cap = fs->cap ? 2 * fs->cap : 16;
        fs->events = sl_realloc(fs->events, fs->cap * sizeof(*fs->events));
    }
    fs->events[fs->nevents++] = event;
    fk->calls++;

    in = sl_calloc(1, sizeof(*in));
    in->pool = pool;
    in->cb = cb;
    in->arg = arg;
    if (req->request_id)
        snprintf(in->request_id, sizeof(in->request_id), "%s", req->request_id);
    else
        sl_uuid(in->request_id);
    sl_fake_answer_ok(&in->a, "{}");
    call = (struct sl_fake_call){ fk->name, event, req->event_len, fk->calls };
    if ((q = STAILQ_FIRST(&fk->queue))) {
        STAILQ_REMOVE_HEAD(&fk->queue, link);
        answer_clear(&in->a);
        in->a = q->a;
        free(q);
    } else if (fk->script) {
        fk->script(fk->arg, &call, &in->a);
    } else if (fs->script) {
        fs->script(fs->arg, &call, &in->a);
    }
    if (in->a.refuse) {
        answer_clear(&in->a);
        free(in);
        return SL_EAGAIN;
    }
    if (in->a.delay_ms < 0)
        in->a.delay_ms = 0;
    tv.tv_sec = in->a.delay_ms / 1000;
    tv.tv_usec = (in->a.delay_ms % 1000) * 1000;
    in->ev = evtimer_new(pool->base, on_due, in);
    if (!in->ev) {
        SL_ERROR(pool->inst, "cannot create the answer's timer: out of memory");
        abort();
    }
    LIST_INSERT_HEAD(&fk->inflight, in, link);
    fs->running++;
    pool->nbusy++;
    evtimer_add(in->ev, &tv); /* cb never runs inside invoke */
    return 0;
}

void sl__fake_stop(struct sl_fnpool *pool)
{
    struct sl__fake *fk = pool->fake;
    struct inflight *in;
    struct queued *q;

    /* a callback that invokes this pool again gets that invocation ended
     * here too */
    while ((in = LIST_FIRST(&fk->inflight))) {
        answer_clear(&in->a);
        sl_fake_answer_error(&in->a, "Sandbox.Failure", "sluice is shutting down");
        finish(in);
    }
    while ((q = STAILQ_FIRST(&fk->queue))) {
        STAILQ_REMOVE_HEAD(&fk->queue, link);
        answer_clear(&q->a);
        free(q);
    }
    free(fk->name);
    free(fk);
    pool->fake = NULL;
}
