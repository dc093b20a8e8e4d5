/* A source fed from memory: the test double every poller's contract is
 * checked against (see include/sluice/memory_poller.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/memory_poller.h"
#include "sluice/clock.h"
#include "sluice/mem.h"

struct redelivery {
    struct sl_source *s;
    char             *lane, *id, *json;
    int64_t           ts;
    int               receives;
    struct event     *ev;
};

struct mem {
    int    klass;
    char **ids;          /* checkpointed */
    size_t nids;
    size_t events;
    struct redelivery **pending;
    size_t npending;
};

static struct sl_record *record(const char *lane, const char *id, const char *json, int64_t ts,
                                int receives)
{
    struct sl_record *r = sl_calloc(1, sizeof(*r));

    r->id = sl_strdup(id);
    r->json = sl_strdup(json);
    r->len = strlen(json);
    r->timestamp_ms = ts ? ts : sl_wall_ms();
    r->receive_count = receives;
    r->handle = sl_strdup(lane);
    /* the lane is the partition, as a Kafka partition's is "<topic>-<partition>" */
    r->partition = *lane ? r->handle : NULL;
    return r;
}

static char *mem_event(struct sl_source *s, struct sl_record *const *r, size_t n, size_t *len)
{
    struct mem *m = s->ctx;

    m->events++;
    return sl_records_event(r, n, len);
}

static void mem_checkpoint(struct sl_source *s, struct sl_record *const *r, size_t n)
{
    struct mem *m = s->ctx;

    m->ids = sl_realloc(m->ids, (m->nids + n) * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        m->ids[m->nids++] = sl_strdup(r[i]->id);
}

static void on_redeliver(evutil_socket_t fd, short what, void *arg)
{
    struct redelivery *d = arg;
    struct mem *m = d->s->ctx;

    (void)fd, (void)what;
    for (size_t i = 0; i < m->npending; i++)
        if (m->pending[i] == d)
            m->pending[i] = m->pending[--m->npending];
    sl_source_push(d->s, d->lane, record(d->lane, d->id, d->json, d->ts, d->receives));
    event_free(d->ev);
    free(d->lane);
    free(d->id);
    free(d->json);
    free(d);
}

static void mem_release(struct sl_source *s, struct sl_record *const *r, size_t n, int64_t delay)
{
    struct mem *m = s->ctx;

    for (size_t i = 0; i < n; i++) {
        struct redelivery *d = sl_calloc(1, sizeof(*d));
        struct timeval tv = { (time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000 };

        d->s = s;
        d->lane = sl_strdup(r[i]->handle);
        d->id = sl_strdup(r[i]->id);
        d->json = sl_strdup(r[i]->json);
        d->ts = r[i]->timestamp_ms;
        d->receives = r[i]->receive_count + 1;
        d->ev = evtimer_new(sl__engine_base(s->engine), on_redeliver, d);
        evtimer_add(d->ev, &tv);
        m->pending = sl_realloc(m->pending, (m->npending + 1) * sizeof(*m->pending));
        m->pending[m->npending++] = d;
    }
}

static void mem_free_record(struct sl_source *s, struct sl_record *r)
{
    (void)s;
    free(r->id);
    free(r->json);
    free(r->handle);
    free(r);
}

static void mem_free(struct sl_source *s)
{
    struct mem *m = s->ctx;

    for (size_t i = 0; i < m->nids; i++)
        free(m->ids[i]);
    for (size_t i = 0; i < m->npending; i++) {
        event_free(m->pending[i]->ev);
        free(m->pending[i]->lane);
        free(m->pending[i]->id);
        free(m->pending[i]->json);
        free(m->pending[i]);
    }
    free(m->pending);
    free(m->ids);
    free(m);
}

static const struct sl_poller_ops stream_ops = {
    .name = "memory", .klass = SL_CLASS_STREAM, .event = mem_event,
    .checkpoint = mem_checkpoint, .release = mem_release, .free_record = mem_free_record,
    .free = mem_free,
};

static const struct sl_poller_ops queue_ops = {
    .name = "memory", .klass = SL_CLASS_QUEUE, .event = mem_event,
    .checkpoint = mem_checkpoint, .release = mem_release, .free_record = mem_free_record,
    .free = mem_free,
};

struct sl_source *sl_memory_source(struct sl_engine *e, const struct sl_source_conf *conf,
                                   int klass)
{
    struct mem *m = sl_calloc(1, sizeof(*m));

    m->klass = klass;
    return sl_engine_add_source(e, conf, klass == SL_CLASS_QUEUE ? &queue_ops : &stream_ops, m);
}

void sl_memory_push(struct sl_source *s, const char *lane, const char *id, const char *json,
                    int64_t ts_ms)
{
    sl_source_push(s, lane, record(lane, id, json, ts_ms, 1));
}

size_t sl_memory_checkpointed(const struct sl_source *s, const char *const **ids)
{
    const struct mem *m = s->ctx;

    *ids = (const char *const *)m->ids;
    return m->nids;
}

size_t sl_memory_events(const struct sl_source *s)
{
    return ((const struct mem *)s->ctx)->events;
}
