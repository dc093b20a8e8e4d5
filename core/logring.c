/* The function log ring (sluice/logring.h): a circular array of lines, each
 * one allocation holding its fields and its JSON event, bounded in bytes.
 * The event is built once, when the line is added, so the tail's backlog
 * and every client and the log sink share it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "sluice/jbuf.h"
#include "sluice/logring.h"
#include "sluice/mem.h"

#define RING_MIN_SLOTS 256
#define RING_MAX_SLOTS (1u << 20)   /* lines, whatever their size */
#define ENT_OVERHEAD   64           /* what a line costs beyond its bytes */

const char *const sl_lvl_names[] = { "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", NULL };

int sl_lvl_parse(const char *s, size_t n)
{
    for (int i = 0; sl_lvl_names[i]; i++)
        if (strlen(sl_lvl_names[i]) == n && strncasecmp(s, sl_lvl_names[i], n) == 0)
            return i;
    if (n == 7 && strncasecmp(s, "WARNING", 7) == 0)
        return SL_LVL_WARN;
    if (n == 8 && strncasecmp(s, "CRITICAL", 8) == 0)
        return SL_LVL_FATAL;
    return -1;
}

struct ent {
    struct sl_logent e;
    size_t           bytes;      /* counted against the cap */
    char             data[];     /* the strings e points at */
};

struct watcher {
    sl_logring_watch_fn fn;
    void               *arg;
};

struct sl_logring {
    struct ent      **slot;      /* circular: the oldest at head */
    size_t            nslots, head, n;
    size_t            bytes, cap_bytes;
    uint64_t          next_seq;  /* of the next line added */
    struct watcher   *w;
    size_t            nw;
    struct sl_metric *m_drop;
};

void sl_iso8601_ms(int64_t ms, char *buf, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

struct sl_logring *sl_logring_new(size_t cap_bytes, struct sl_metrics *m)
{
    struct sl_logring *r = sl_calloc(1, sizeof(*r));

    r->cap_bytes = cap_bytes;
    r->nslots = RING_MIN_SLOTS;
    r->slot = sl_calloc(r->nslots, sizeof(*r->slot));
    r->next_seq = 1;
    if (m)
        r->m_drop = sl_metrics_family(m, "sluice_log_lines_dropped_total", SL_METRIC_COUNTER,
                                      "Function log lines dropped: evicted from the full log "
                                      "ring (ring), not sent to a live-tail client that was too "
                                      "slow and was disconnected (tail_client), not shipped to "
                                      "the log sink (sink).", "reason");
    return r;
}

void sl_logring_free(struct sl_logring *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->slot[(r->head + i) % r->nslots]);
    free(r->slot);
    free(r->w);
    free(r);
}

void sl_logring_count_drop(struct sl_logring *r, const char *reason, double n)
{
    if (r && r->m_drop && n > 0)
        sl_metric_add(r->m_drop, reason, n);
}

static void evict(struct sl_logring *r)
{
    struct ent *e = r->slot[r->head];

    r->slot[r->head] = NULL;
    r->head = (r->head + 1) % r->nslots;
    r->n--;
    r->bytes -= e->bytes;
    free(e);
}

/* Room for one more slot: grow the array, or (at its limit) evict. */
static void make_slot(struct sl_logring *r)
{
    struct ent **s;

    if (r->n < r->nslots)
        return;
    if (r->nslots >= RING_MAX_SLOTS) {
        evict(r);
        sl_logring_count_drop(r, "ring", 1);
        return;
    }
    s = sl_calloc(r->nslots * 2, sizeof(*s));
    for (size_t i = 0; i < r->n; i++)
        s[i] = r->slot[(r->head + i) % r->nslots];
    free(r->slot);
    r->slot = s;
    r->head = 0;
    r->nslots *= 2;
}

static void json_opt(struct sl_jbuf *b, const char *s)
{
    if (s)
        sl_jbuf_str(b, s, strlen(s));
    else
        SL_JBUF_LIT(b, "null");
}

/* The event text of `l`. */
static void build_event(struct sl_jbuf *b, const struct sl_logline *l)
{
    char ts[40];
    int lvl = l->level >= SL_LVL_TRACE && l->level <= SL_LVL_FATAL ? l->level : SL_LVL_INFO;

    sl_iso8601_ms(l->ts_ms, ts, sizeof(ts));
    SL_JBUF_LIT(b, "{\"timestamp\":\"");
    sl_jbuf_puts(b, ts);
    SL_JBUF_LIT(b, "\",\"level\":\"");
    sl_jbuf_puts(b, sl_lvl_names[lvl]);
    SL_JBUF_LIT(b, "\",\"function\":");
    json_opt(b, l->function);
    SL_JBUF_LIT(b, ",\"source\":");
    json_opt(b, l->source);
    SL_JBUF_LIT(b, ",\"requestId\":");
    json_opt(b, l->request_id);
    SL_JBUF_LIT(b, ",\"type\":");
    json_opt(b, l->type ? l->type : "function");
    SL_JBUF_LIT(b, ",\"message\":");
    if (l->object) /* the producer's own compact JSON object */
        sl_jbuf_puts(b, l->message);
    else
        json_opt(b, l->message ? l->message : "");
    if (l->record) {
        SL_JBUF_LIT(b, ",\"record\":");
        sl_jbuf_puts(b, l->record);
    }
    SL_JBUF_LIT(b, "}");
}

static char *put_str(char **p, const char *s)
{
    char *at = *p;
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    memcpy(at, s, n);
    *p += n;
    return at;
}

void sl_logring_add(struct sl_logring *r, const struct sl_logline *l)
{
    struct sl_jbuf b = { 0 };
    size_t fl = l->function ? strlen(l->function) + 1 : 0;
    size_t sl = l->source ? strlen(l->source) + 1 : 0;
    size_t rl = l->request_id ? strlen(l->request_id) + 1 : 0;
    struct ent *e;
    char *p;

    build_event(&b, l);
    e = sl_malloc(sizeof(*e) + fl + sl + rl + b.n + 1);
    p = e->data;
    e->e.seq = r->next_seq++;
    e->e.ts_ms = l->ts_ms;
    e->e.level = l->level;
    e->e.function = put_str(&p, l->function);
    e->e.source = put_str(&p, l->source);
    e->e.request_id = put_str(&p, l->request_id);
    memcpy(p, b.p, b.n + 1);
    e->e.json = p;
    e->e.json_len = b.n;
    e->bytes = sizeof(*e) + fl + sl + rl + b.n + 1 + ENT_OVERHEAD;
    free(b.p);

    while (r->n > 0 && r->bytes + e->bytes > r->cap_bytes) {
        evict(r);
        sl_logring_count_drop(r, "ring", 1);
    }
    make_slot(r);
    r->slot[(r->head + r->n) % r->nslots] = e;
    r->n++;
    r->bytes += e->bytes;
    for (size_t i = 0; i < r->nw; i++)
        r->w[i].fn(r->w[i].arg, &e->e);
}

uint64_t sl_logring_first(const struct sl_logring *r)
{
    return r->next_seq - r->n;
}

uint64_t sl_logring_next(const struct sl_logring *r)
{
    return r->next_seq;
}

const struct sl_logent *sl_logring_get(const struct sl_logring *r, uint64_t seq)
{
    uint64_t first = sl_logring_first(r);

    if (seq < first || seq >= r->next_seq)
        return NULL;
    return &r->slot[(r->head + (size_t)(seq - first)) % r->nslots]->e;
}

uint64_t sl_logring_since(const struct sl_logring *r, int64_t ts_ms)
{
    /* lines are added in time order (a wall clock stepping back makes this
     * approximate, never wrong about what exists) */
    size_t lo = 0, hi = r->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (r->slot[(r->head + mid) % r->nslots]->e.ts_ms < ts_ms)
            lo = mid + 1;
        else
            hi = mid;
    }
    return sl_logring_first(r) + lo;
}

void sl_logring_watch(struct sl_logring *r, sl_logring_watch_fn fn, void *arg)
{
    r->w = sl_realloc(r->w, (r->nw + 1) * sizeof(*r->w));
    r->w[r->nw].fn = fn;
    r->w[r->nw].arg = arg;
    r->nw++;
}

void sl_logring_unwatch(struct sl_logring *r, sl_logring_watch_fn fn, void *arg)
{
    for (size_t i = 0; r && i < r->nw; i++)
        if (r->w[i].fn == fn && r->w[i].arg == arg) {
            memmove(&r->w[i], &r->w[i + 1], (r->nw - i - 1) * sizeof(*r->w));
            r->nw--;
            return;
        }
}
