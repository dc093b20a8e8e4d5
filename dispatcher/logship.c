/* The log sink: function log lines from the log ring, shipped to a sink
 * (server.log_sink, or a function's own log_sink) as JSON, one record per
 * line, the live tail's event.
 *
 * Invocations never wait for it: a line is queued (at most SHIP_LINES
 * lines or SHIP_BYTES bytes per sink) and written with at most
 * SHIP_INFLIGHT writes in flight, so the sinks batch them their own way
 * (the file sink writes what is queued with one writev, Redis pipelines
 * XADDs on its connection). A line that does not fit, or whose one write
 * attempt fails, is dropped and counted in
 * sluice_log_lines_dropped_total{reason="sink"}: logs are not records, and
 * a sink that is down must not hold memory or the loop. Lines still
 * queued when sluice stops are lost. */
#include <stdlib.h>
#include <string.h>

#include "sluice/dispatch.h"
#include "sluice/log.h"
#include "sluice/logring.h"
#include "sluice/mem.h"
#include "sluice/sink.h"

#define SHIP_LINES    10000
#define SHIP_BYTES    (8u << 20)
#define SHIP_INFLIGHT 64

struct item {
    struct item  *next;
    struct shipq *q;
    size_t        len;
    char          json[];
};

/* One sink's queue. */
struct shipq {
    struct sl_logship *ls;
    struct sl_sink    *sink;
    struct item       *head, *tail;
    size_t             n, bytes, inflight;
    bool               failing;     /* the last write failed: said so once */
};

struct sl_logship {
    const struct sl_config *conf;
    struct sl_logring      *ring;
    struct shipq           *q;       /* parallel to conf->sinks */
    int                    *fn_q;    /* per function: index into q, -1 for none */
    bool                    stopped;
};

static void kick(struct shipq *q);

static void on_written(void *arg, int rc, const struct sl_err *err)
{
    struct item *it = arg;
    struct shipq *q = it->q;

    q->inflight--;
    free(it);
    if (rc != 0) {
        sl_logring_count_drop(q->ls->ring, "sink", 1);
        if (!q->failing && rc != SL_ESTOPPED)
            SL_WARN(q->sink->inst, "log lines are being dropped: %s",
                    err && err->msg[0] ? err->msg : sl_strerror(rc));
        q->failing = true;
    } else {
        q->failing = false;
    }
    kick(q);
}

static void kick(struct shipq *q)
{
    while (!q->ls->stopped && q->inflight < SHIP_INFLIGHT && q->head) {
        struct item *it = q->head;

        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
        q->bytes -= it->len;
        q->inflight++;
        sl_sink_write(q->sink, it->json, it->len, on_written, it);
    }
}

static void on_line(void *arg, const struct sl_logent *e)
{
    struct sl_logship *ls = arg;
    const struct sl_config *c = ls->conf;
    struct shipq *q = NULL;
    struct item *it;

    for (size_t i = 0; e->function && i < c->nfunctions; i++)
        if (strcmp(c->functions[i].name, e->function) == 0) {
            if (ls->fn_q[i] >= 0)
                q = &ls->q[ls->fn_q[i]];
            break;
        }
    if (!q || ls->stopped)
        return;
    if (q->n >= SHIP_LINES || q->bytes + e->json_len > SHIP_BYTES) {
        sl_logring_count_drop(ls->ring, "sink", 1);
        return;
    }
    it = sl_malloc(sizeof(*it) + e->json_len + 1);
    it->next = NULL;
    it->q = q;
    it->len = e->json_len;
    memcpy(it->json, e->json, e->json_len + 1);
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->n++;
    q->bytes += it->len;
    kick(q);
}

static int sink_index(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->nsinks; i++)
        if (strcmp(c->sinks[i].name, name) == 0)
            return (int)i;
    return -1;
}

struct sl_logship *sl_logship_new(struct sl_dispatcher *d, const struct sl_config *c,
                                  struct sl_logring *ring)
{
    struct sl_logship *ls;
    bool any = false;

    for (size_t i = 0; i < c->nfunctions; i++)
        any |= (c->functions[i].log_sink || c->server.log_sink);
    if (!any || !ring)
        return NULL;
    ls = sl_calloc(1, sizeof(*ls));
    ls->conf = c;
    ls->ring = ring;
    ls->q = sl_calloc(c->nsinks ? c->nsinks : 1, sizeof(*ls->q));
    ls->fn_q = sl_calloc(c->nfunctions ? c->nfunctions : 1, sizeof(*ls->fn_q));
    for (size_t i = 0; i < c->nsinks; i++) {
        ls->q[i].ls = ls;
        ls->q[i].sink = sl_dispatcher_sink(d, c->sinks[i].name);
    }
    for (size_t i = 0; i < c->nfunctions; i++) {
        const char *name = c->functions[i].log_sink ? c->functions[i].log_sink
                                                    : c->server.log_sink;
        int k = sink_index(c, name);

        ls->fn_q[i] = k >= 0 && ls->q[k].sink ? k : -1;
    }
    sl_logring_watch(ring, on_line, ls);
    return ls;
}

void sl_logship_stop(struct sl_logship *ls)
{
    if (!ls || ls->stopped)
        return;
    ls->stopped = true;
    sl_logring_unwatch(ls->ring, on_line, ls);
    for (size_t i = 0; i < ls->conf->nsinks; i++) {
        struct shipq *q = &ls->q[i];

        while (q->head) {
            struct item *it = q->head;

            q->head = it->next;
            free(it);
        }
        q->tail = NULL;
        q->n = q->bytes = 0;
    }
}

void sl_logship_free(struct sl_logship *ls)
{
    if (!ls)
        return;
    sl_logship_stop(ls);
    free(ls->q);
    free(ls->fn_q);
    free(ls);
}
