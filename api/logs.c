/* The live tail: GET /logs/tail, server-sent events of the function log
 * ring (sluice/logring.h).
 *
 *   GET /logs/tail?function=F&source=S&request_id=ID&level=L&since=10m&follow=true
 *
 * Answers `text/event-stream`: first the ring's lines of the last `since`
 * (10m when absent; `0` for none) that match the filters, then, with
 * follow (the default), every new matching line as it is added, until the
 * client goes. Each event is
 *
 *   id: <sequence number>
 *   data: {"timestamp","level","function","source","requestId","type","message"[,"record"]}
 *
 * and a comment (": keepalive") goes out every 15 s. A client that sends
 * Last-Event-ID resumes after that line if the ring still holds it.
 *
 * The gate (gate.c) authenticates the request (sl__logs_authorize, with
 * the Invoke API's credentials) and hands the client's connection over
 * (sl__logs_open): the stream is written straight to the client's socket,
 * so its own buffer is all a client can hold up. The loop never waits for
 * a client: one that stopped reading while caught up is disconnected once
 * TAIL_BUF bytes wait for it (sluice_log_tail_clients_dropped_total, and
 * its lines in sluice_log_lines_dropped_total{reason="tail_client"}); a
 * client still reading the backlog is sent more only as it reads, and is
 * disconnected if the ring drops lines before it got them. At most
 * TAIL_MAX clients at once; the next gets 503. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/logring.h"
#include "sluice/mem.h"

#define TAIL_MAX          32                 /* clients at once */
#define TAIL_BUF          (256 * 1024)       /* bytes waiting for a live client: then it goes */
#define TAIL_SNDBUF       (64 * 1024)        /* the kernel's share of that */
#define TAIL_HEARTBEAT_S  15
#define TAIL_SINCE_DEF_MS (10 * 60 * 1000LL)
#define TAIL_SINCE_MAX_MS (30 * 86400 * 1000LL)
#define TAIL_PARAM_MAX    256                /* bytes of one query value */

struct tail {
    LIST_ENTRY(tail)    link;
    struct sl_api      *a;
    struct bufferevent *bev;
    struct event       *beat;
    char               *function, *source, *request_id;  /* filters, NULL: any */
    int                 level;                           /* enum sl_lvl: at least */
    const json_t       *entry;    /* server.auth entry (borrowed), NULL: no auth */
    uint64_t            next;     /* sequence number of the next line to look at */
    bool                follow;
    bool                live;     /* caught up once: lines are pushed as they come */
    bool                closing;  /* the stream is over: close once written */
};

/* ------------------------------------------------------------------ */
/* Authorization: the one check for the tail                           */

bool sl__logs_is_path(const char *path, size_t plen)
{
    return plen == 10 && strncmp(path, "/logs/tail", 10) == 0;
}

/* The tail shows what functions print, so it takes the credentials that
 * may invoke them: server.auth's bearer tokens and key pairs (a GET has
 * no body: a signature covers the empty one). A token limited to some
 * functions sees only their lines (sl__logs_open). This is where a
 * management API scope (read) would be required. */
int sl__logs_authorize(const struct sl_server_conf *sc, const char *method, const char *target,
                       const struct sl_hdrs *h, long long now, struct sl_authn *out)
{
    static const char empty_sha256[] =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    sl__api_authenticate(sc, method, target, h, empty_sha256, now, out);
    return out->code;
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */

static void tail_free(struct tail *t)
{
    struct sl_api *a = t->a;

    LIST_REMOVE(t, link);
    a->ntails--;
    sl_metric_set(a->m_tails, NULL, (double)a->ntails);
    bufferevent_free(t->bev);
    event_free(t->beat);
    free(t->function);
    free(t->source);
    free(t->request_id);
    free(t);
}

static size_t pending(const struct tail *t)
{
    return evbuffer_get_length(bufferevent_get_output(t->bev));
}

/* One chunk of the chunked response. */
static void put_chunk(struct tail *t, const char *s, size_t n)
{
    struct evbuffer *out = bufferevent_get_output(t->bev);

    evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add(out, s, n);
    evbuffer_add(out, "\r\n", 2);
}

static void put_event(struct tail *t, const struct sl_logent *e)
{
    struct evbuffer *out = bufferevent_get_output(t->bev);
    char id[32];
    int n = snprintf(id, sizeof(id), "id: %" PRIu64 "\ndata: ", e->seq);

    /* the event JSON holds no raw line break: one data line */
    evbuffer_add_printf(out, "%zx\r\n", (size_t)n + e->json_len + 2);
    evbuffer_add(out, id, (size_t)n);
    evbuffer_add(out, e->json, e->json_len);
    evbuffer_add(out, "\n\n\r\n", 4);
}

/* End the stream: the last chunk, then close once it is out. */
static void end_stream(struct tail *t)
{
    evbuffer_add(bufferevent_get_output(t->bev), "0\r\n\r\n", 5);
    t->closing = true;
    event_del(t->beat);
}

static bool matches(const struct tail *t, const struct sl_logent *e)
{
    if (e->level < t->level)
        return false;
    if (t->function && (!e->function || strcmp(t->function, e->function) != 0))
        return false;
    if (t->source && (!e->source || strcmp(t->source, e->source) != 0))
        return false;
    if (t->request_id && (!e->request_id || strcmp(t->request_id, e->request_id) != 0))
        return false;
    /* a token limited to some functions sees only theirs */
    return !t->entry || (e->function && sl__api_token_allows(t->entry, e->function));
}

/* The client is too slow: it goes, and says so in the metrics. */
static void drop_slow(struct tail *t, uint64_t lost)
{
    struct sl_api *a = t->a;

    sl_metric_add(a->m_tail_drop, NULL, 1);
    sl_logring_count_drop(a->ring, "tail_client", (double)lost);
    SL_WARN(INST, "log tail client disconnected: it did not read fast enough (%" PRIu64
            " lines lost)", lost);
    tail_free(t);
}

/* Send what the client has not seen yet, as far as its buffer allows.
 * May free t. */
static void pump(struct tail *t)
{
    const struct sl_logring *r = t->a->ring;
    uint64_t end = sl_logring_next(r), first = sl_logring_first(r);

    if (t->closing)
        return;
    if (t->next < first) {
        /* the ring dropped lines it never got */
        drop_slow(t, first - t->next);
        return;
    }
    while (t->next < end) {
        const struct sl_logent *e = sl_logring_get(r, t->next);

        if (!t->live && pending(t) >= TAIL_BUF / 2)
            return; /* the backlog goes on as the client reads (on_write) */
        if (t->live && pending(t) + e->json_len + 64 > TAIL_BUF) {
            drop_slow(t, end - t->next);
            return;
        }
        t->next++;
        if (matches(t, e))
            put_event(t, e);
    }
    if (!t->live) {
        t->live = true;
        if (!t->follow)
            end_stream(t);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct tail *t = arg;

    if (t->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            tail_free(t);
        return;
    }
    if (!t->live)
        pump(t);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    /* nothing is expected from a tail client: dropped unread */
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        tail_free(arg);
}

static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct tail *t = arg;
    static const char beat[] = ": keepalive\n\n";

    (void)fd, (void)what;
    if (t->closing)
        return;
    if (t->live && pending(t) + 64 > TAIL_BUF) {
        drop_slow(t, 0);
        return;
    }
    if (pending(t) < TAIL_BUF)
        put_chunk(t, beat, sizeof(beat) - 1);
}

/* A new line in the ring: every client that is caught up gets it now. */
static void on_line(void *arg, const struct sl_logent *e)
{
    struct sl_api *a = arg;
    struct tail *t, *next;

    (void)e;
    for (t = LIST_FIRST(&a->tails); t; t = next) {
        next = LIST_NEXT(t, link);
        if (t->live)
            pump(t);
    }
}

/* ------------------------------------------------------------------ */
/* Opening a tail                                                      */

/* `since`: 0, or digits with a unit (ms, s, m, h, d): "10m", "90s". */
static bool parse_since(const char *v, int64_t *ms)
{
    static const struct { const char *u; int64_t ms; } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
    };
    int64_t n = 0;
    const char *p = v;

    if (!*p)
        return false;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (*p - '0');
        if (n > TAIL_SINCE_MAX_MS)
            return false;
        p++;
    }
    if (p == v)
        return false;
    if (!*p) {
        *ms = n;
        return n == 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(p, units[i].u) == 0) {
            if (n > TAIL_SINCE_MAX_MS / units[i].ms)
                return false;
            *ms = n * units[i].ms;
            return *ms <= TAIL_SINCE_MAX_MS;
        }
    return false;
}

static bool has_source(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsources; i++)
        if (strcmp(c->sources[i].name, name) == 0)
            return true;
    return false;
}

#define REFUSE(c, t, ...)                                                \
    do {                                                                 \
        snprintf(why, wn, __VA_ARGS__);                                  \
        *type = (t);                                                     \
        code = (c);                                                      \
        goto out;                                                        \
    } while (0)

int sl__logs_open(struct sl_api *a, struct bufferevent *bev, const struct sl_gate_head *h,
                  const json_t *entry, const char **type, char *why, size_t wn)
{
    struct evkeyvalq q;
    struct evkeyval *kv;
    const char *query = strchr(h->target, '?'), *last_id;
    struct sl_hdrs hd;
    struct tail *t = sl_calloc(1, sizeof(*t));
    int64_t since = TAIL_SINCE_DEF_MS;
    char *qs = NULL, id[37];
    bool since_set = false;
    int code = 0, fd;
    struct timeval beat = { TAIL_HEARTBEAT_S, 0 };

    TAILQ_INIT(&q);
    t->level = SL_LVL_TRACE;
    t->follow = true;
    if (strcmp(h->method, "GET") != 0)
        REFUSE(405, "MethodNotAllowedException", "%s is not allowed on /logs/tail; use GET",
               h->method);
    if (!a->ring)
        REFUSE(404, "ResourceNotFoundException", "this server keeps no function logs");
    if (query) {
        qs = sl_strndup(query + 1, strcspn(query + 1, "#"));
        if (evhttp_parse_query_str(qs, &q) != 0)
            REFUSE(400, "InvalidParameterValueException", "the query string is malformed");
    }
    TAILQ_FOREACH(kv, &q, next) {
        char **slot = NULL;

        if (strlen(kv->value) > TAIL_PARAM_MAX)
            REFUSE(400, "InvalidParameterValueException", "%.40s: longer than %d bytes",
                   kv->key, TAIL_PARAM_MAX);
        for (struct evkeyval *o = TAILQ_FIRST(&q); o != kv; o = TAILQ_NEXT(o, next))
            if (strcmp(o->key, kv->key) == 0)
                REFUSE(400, "InvalidParameterValueException", "%.40s is given twice", kv->key);
        if (strcmp(kv->key, "function") == 0)
            slot = &t->function;
        else if (strcmp(kv->key, "source") == 0)
            slot = &t->source;
        else if (strcmp(kv->key, "request_id") == 0)
            slot = &t->request_id;
        if (slot) {
            if (!*kv->value)
                REFUSE(400, "InvalidParameterValueException", "%s is empty", kv->key);
            *slot = sl_strdup(kv->value);
        } else if (strcmp(kv->key, "level") == 0) {
            t->level = sl_lvl_parse(kv->value, strlen(kv->value));
            if (t->level < 0)
                REFUSE(400, "InvalidParameterValueException", "level '%.40s' is not one of "
                       "TRACE, DEBUG, INFO, WARN, ERROR, FATAL", kv->value);
        } else if (strcmp(kv->key, "since") == 0) {
            if (!parse_since(kv->value, &since))
                REFUSE(400, "InvalidParameterValueException", "since '%.40s' is not 0 or a "
                       "duration of at most 30 days with a unit: ms, s, m, h or d (10m, 90s)",
                       kv->value);
            since_set = true;
        } else if (strcmp(kv->key, "follow") == 0) {
            if (strcmp(kv->value, "true") == 0 || strcmp(kv->value, "1") == 0)
                t->follow = true;
            else if (strcmp(kv->value, "false") == 0 || strcmp(kv->value, "0") == 0)
                t->follow = false;
            else
                REFUSE(400, "InvalidParameterValueException", "follow is true or false");
        } else {
            REFUSE(400, "InvalidParameterValueException", "unknown parameter '%.40s': /logs/tail "
                   "takes function, source, request_id, level, since and follow", kv->key);
        }
    }
    if (t->function && !sl_config_function(a->conf, t->function))
        REFUSE(400, "ResourceNotFoundException", "no function named '%.64s'", t->function);
    if (t->source && !has_source(a->conf, t->source))
        REFUSE(400, "ResourceNotFoundException", "no source named '%.64s'", t->source);
    if (entry && t->function && !sl__api_token_allows(entry, t->function))
        REFUSE(403, "AccessDeniedException", "this credential may not read the logs of %s",
               t->function);
    if (a->ntails >= TAIL_MAX)
        REFUSE(503, "TooManyRequestsException", "%d log tail clients are connected already; "
               "try again later", TAIL_MAX);

    t->a = a;
    t->bev = bev;
    t->entry = entry;
    sl__gate_hdrs(h, &hd);
    last_id = hd.get(hd.ctx, "last-event-id", 0);
    if (last_id && *last_id && strspn(last_id, "0123456789") == strlen(last_id) &&
        strlen(last_id) < 20) {
        t->next = strtoull(last_id, NULL, 10) + 1;
        if (t->next < sl_logring_first(a->ring))
            t->next = sl_logring_first(a->ring);
        if (t->next > sl_logring_next(a->ring))
            t->next = sl_logring_next(a->ring);
    } else {
        t->next = since_set && since == 0 ? sl_logring_next(a->ring)
                                          : sl_logring_since(a->ring, sl_wall_ms() - since);
    }
    t->beat = event_new(a->base, -1, EV_PERSIST, on_beat, t);
    LIST_INSERT_HEAD(&a->tails, t, link);
    a->ntails++;
    sl_metric_set(a->m_tails, NULL, (double)a->ntails);
    event_add(t->beat, &beat);
    /* the kernel holds little for a slow client: the rest shows here */
    fd = (int)bufferevent_getfd(bev);
    if (fd >= 0) {
        int sz = TAIL_SNDBUF;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, t);
    bufferevent_setwatermark(bev, EV_WRITE, TAIL_BUF / 4, 0);
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    sl_uuid(id);
    evbuffer_add_printf(bufferevent_get_output(bev),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                        "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                        "X-Amzn-RequestId: %s\r\nTransfer-Encoding: chunked\r\n"
                        "Connection: close\r\n\r\n", id);
    put_chunk(t, ": sluice log tail\n\n", 19);
    SL_DEBUG(SL_DBG_API, INST, "log tail opened (%zu clients)", (size_t)a->ntails);
    pump(t);
    t = NULL;
    code = 0;
out:
    evhttp_clear_headers(&q);
    free(qs);
    if (t) {
        free(t->function);
        free(t->source);
        free(t->request_id);
        free(t);
    }
    return code;
}

/* ------------------------------------------------------------------ */

void sl_api_set_logring(struct sl_api *a, struct sl_logring *ring)
{
    if (a->ring)
        sl_logring_unwatch(a->ring, on_line, a);
    a->ring = ring;
    if (ring)
        sl_logring_watch(ring, on_line, a);
}

void sl__logs_init(struct sl_api *a)
{
    LIST_INIT(&a->tails);
    a->m_tails = sl_metrics_family(a->metrics, "sluice_log_tail_clients", SL_METRIC_GAUGE,
                                   "Clients of GET /logs/tail connected now.", NULL);
    a->m_tail_drop = sl_metrics_family(a->metrics, "sluice_log_tail_clients_dropped_total",
                                       SL_METRIC_COUNTER, "Clients of GET /logs/tail "
                                       "disconnected for not reading fast enough.", NULL);
    sl_metric_set(a->m_tails, NULL, 0);
    sl_metric_add(a->m_tail_drop, NULL, 0);
}

void sl__logs_free(struct sl_api *a)
{
    while (!LIST_EMPTY(&a->tails))
        tail_free(LIST_FIRST(&a->tails));
    if (a->ring)
        sl_logring_unwatch(a->ring, on_line, a);
    a->ring = NULL;
}
