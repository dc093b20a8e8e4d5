/* sluice: the batched writer on the worker pool (see sinks/internal.h).
 *
 * The next job starts from a loop event, not from a job's done callback:
 * the runtime frees the pool (running the last done callbacks) before the
 * sinks, and nothing may be queued into a pool being freed. */
#include <stdlib.h>

#include "sluice/mem.h"

#include "internal.h"

#define BATCH_MAX_RECORDS 1024
#define BATCH_MAX_BYTES   (8u << 20)

static void item_free_list(struct sl__bw_item *w)
{
    while (w) {
        struct sl__bw_item *next = w->next;

        free(w->data);
        free(w);
        w = next;
    }
}

static void job_work(void *arg)
{
    struct sl__bw_job *j = arg;

    j->bw->ops->work(j);
}

static void job_done(void *arg)
{
    struct sl__bw_job *j = arg;
    struct sl__bw *bw = j->bw;

    if (!bw->closed && bw->ops->finish)
        bw->ops->finish(j);
    /* bw->job still points at j, so a close from a callback fails the rest. */
    for (struct sl__bw_item *w = j->batch; w && !bw->closed; w = w->next) {
        sl_sink_done_fn done = w->done;

        if (!done)
            continue;
        w->done = NULL;
        sl__sink_done(bw->s, done, w->arg, j->rc, j->rc ? &j->err : NULL);
    }
    bw->job = NULL;
    item_free_list(j->batch);
    free(j);
    if (!bw->closed && bw->qhead)
        event_active(bw->kick, EV_TIMEOUT, 0);
    sl__bw_unref(bw);
}

void sl__bw_submit(struct sl__bw *bw, bool empty_ok)
{
    struct sl__bw_job *j;
    struct sl__bw_item **tail;
    size_t n = 0, bytes = 0;

    if (bw->job || bw->closed || (!bw->qhead && !empty_ok))
        return;
    j = sl_calloc(1, sizeof(*j));
    j->bw = bw;
    j->batch = bw->qhead;
    tail = &j->batch;
    while (*tail && n < BATCH_MAX_RECORDS && (n == 0 || bytes + (*tail)->len <= BATCH_MAX_BYTES)) {
        bytes += (*tail)->len;
        n++;
        tail = &(*tail)->next;
    }
    bw->qhead = *tail;
    if (!bw->qhead)
        bw->qtail = NULL;
    *tail = NULL;
    j->n = n;
    j->bytes = bytes;
    bw->job = j;
    bw->refs++;
    if (bw->ops->start)
        bw->ops->start(j);
    sl_pool_submit(bw->s->pool, job_work, job_done, j);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl__bw_submit(arg, false);
}

int sl__bw_init(struct sl__bw *bw, struct sl_sink *s, const struct sl__bw_ops *ops, void *ctx)
{
    bw->s = s;
    bw->ops = ops;
    bw->ctx = ctx;
    bw->refs = 1;
    bw->kick = event_new(s->base, -1, 0, on_kick, bw);
    return bw->kick ? 0 : -1;
}

void sl__bw_write(struct sl__bw *bw, char *data, size_t len, sl_sink_done_fn done, void *arg)
{
    struct sl__bw_item *w = sl_calloc(1, sizeof(*w));

    w->data = data;
    w->len = len;
    w->done = done;
    w->arg = arg;
    if (bw->qtail)
        bw->qtail->next = w;
    else
        bw->qhead = w;
    bw->qtail = w;
    sl__bw_submit(bw, false);
}

void sl__bw_close(struct sl__bw *bw, const struct sl_err *err)
{
    bw->closed = true;
    /* The job keeps its own copies; the worker may still be writing them. */
    if (bw->job) {
        for (struct sl__bw_item *w = bw->job->batch; w; w = w->next) {
            sl_sink_done_fn done = w->done;

            if (!done)
                continue;
            w->done = NULL;
            sl__sink_done(bw->s, done, w->arg, SL_ESTOPPED, err);
        }
    }
    while (bw->qhead) {
        struct sl__bw_item *w = bw->qhead;

        bw->qhead = w->next;
        sl__sink_done(bw->s, w->done, w->arg, SL_ESTOPPED, err);
        free(w->data);
        free(w);
    }
    bw->qtail = NULL;
    event_free(bw->kick);
    bw->kick = NULL;
}

void sl__bw_unref(struct sl__bw *bw)
{
    if (--bw->refs > 0)
        return;
    if (bw->kick)
        event_free(bw->kick);
    bw->kick = NULL;
    bw->ops->release(bw->ctx);
}
