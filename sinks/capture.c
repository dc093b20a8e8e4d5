/* The capture sink, the sinks' test double: it keeps what it is given.
 * Not in sinks/registry.c: it takes over an opened sink instead (see
 * sluice/capture_sink.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "sluice/capture_sink.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

/* One attempt waiting for its confirmation. */
struct attempt {
    struct sl_capture_sink *c;
    struct event           *ev;
    char                   *json;       /* owned */
    int                     rc;         /* what the attempt will end with */
    bool                    retriable;
    sl_sink_done_fn         done;
    void                   *arg;
    TAILQ_ENTRY(attempt)    link;
};

struct sl_capture_sink {
    struct sl_sink          *s;           /* borrowed: the sink taken over */
    char                   **recs;        /* confirmed records, owned */
    size_t                   n, cap;
    size_t                   attempts;
    int                      fail_left;   /* attempts still to fail; < 0: all */
    int                      fail_code;
    bool                     fail_retriable;
    int                      delay_ms;
    TAILQ_HEAD(, attempt)    pending;
};

static void finish(struct attempt *a, int rc, bool retriable)
{
    struct sl_capture_sink *c = a->c;
    struct sl_err err;

    TAILQ_REMOVE(&c->pending, a, link);
    event_free(a->ev);
    sl_err_clear(&err);
    if (rc == 0) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 16;
            c->recs = sl_realloc(c->recs, c->cap * sizeof(*c->recs));
        }
        c->recs[c->n++] = a->json;
        a->json = NULL;
    } else {
        sl_err_set(&err, rc, retriable, "capture sink: %s",
                   rc == SL_ESTOPPED ? "sink stopped" : "failing as told");
    }
    sl__sink_done(c->s, a->done, a->arg, rc, rc ? &err : NULL); /* may free the sink */
    free(a->json);
    free(a);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    struct attempt *a = arg;

    (void)fd, (void)what;
    finish(a, a->rc, a->retriable);
}

static int capture_open(struct sl_sink *s, struct sl_err *err)
{
    (void)s, (void)err;
    return 0;
}

static void capture_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                          void *arg)
{
    struct sl_capture_sink *c = s->ctx;
    struct attempt *a = sl_calloc(1, sizeof(*a));
    struct timeval tv = sl__tv_ms((uint64_t)c->delay_ms);

    a->c = c;
    a->json = sl_malloc(len + 1);
    memcpy(a->json, json, len);
    a->json[len] = '\0';
    a->done = done;
    a->arg = arg;
    if (c->fail_left != 0) {
        a->rc = c->fail_code;
        a->retriable = c->fail_retriable;
        if (c->fail_left > 0)
            c->fail_left--;
    }
    c->attempts++;
    a->ev = evtimer_new(s->base, on_due, a);
    if (!a->ev) {
        SL_ERROR(s->inst, "cannot create the capture's timer: out of memory");
        abort();
    }
    TAILQ_INSERT_TAIL(&c->pending, a, link);
    evtimer_add(a->ev, &tv); /* done never runs inside write */
}

static void capture_close(struct sl_sink *s)
{
    struct sl_capture_sink *c = s->ctx;
    struct attempt *a;

    if (!c)
        return;
    while ((a = TAILQ_FIRST(&c->pending)))
        finish(a, SL_ESTOPPED, false);
    for (size_t i = 0; i < c->n; i++)
        free(c->recs[i]);
    free(c->recs);
    free(c);
    s->ctx = NULL;
}

static const struct sl_sink_ops capture_ops = {
    .name = "capture",
    .open = capture_open,
    .write = capture_write,
    .close = capture_close,
};

struct sl_capture_sink *sl_capture_sink_attach(struct sl_sink *s)
{
    struct sl_capture_sink *c;

    if (!s)
        return NULL;
    s->ops->close(s); /* nothing written yet: the real sink has nothing pending */
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    TAILQ_INIT(&c->pending);
    s->ops = &capture_ops;
    s->ctx = c;
    return c;
}

void sl_capture_sink_fail(struct sl_capture_sink *c, int n, int code, int retriable)
{
    c->fail_left = n;
    c->fail_code = code ? code : SL_EIO;
    c->fail_retriable = retriable != 0;
}

void sl_capture_sink_delay(struct sl_capture_sink *c, int ms)
{
    c->delay_ms = ms < 0 ? 0 : ms;
}

size_t sl_capture_sink_count(const struct sl_capture_sink *c)
{
    return c ? c->n : 0;
}

size_t sl_capture_sink_attempts(const struct sl_capture_sink *c)
{
    return c ? c->attempts : 0;
}

const char *sl_capture_sink_get(const struct sl_capture_sink *c, size_t i)
{
    return c && i < c->n ? c->recs[i] : NULL;
}

json_t *sl_capture_sink_json(const struct sl_capture_sink *c, size_t i)
{
    const char *r = sl_capture_sink_get(c, i);

    return r ? json_loads(r, 0, NULL) : NULL;
}
