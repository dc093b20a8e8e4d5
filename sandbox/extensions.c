/* The Extensions API and the Telemetry API of a `runtime: lambda` env,
 * served on its Runtime API (rapi.c routes /2020-01-01/extension/... and
 * /2022-07-01/telemetry here), and the lifecycle that waits for
 * extensions as Lambda's does (docs/RUNTIME-API.md, "Extensions"):
 *
 *   init    ends when the runtime called /next and every extension that
 *           was started from /opt/extensions (and every internal one with
 *           events) called /event/next;
 *   invoke  the client gets its answer when the runtime posts it; the env
 *           takes its next invocation once every extension subscribed to
 *           INVOKE called /event/next again (the function's timeout bounds
 *           both);
 *   shutdown (idle, timeout) SHUTDOWN to the subscribed extensions, then
 *           SIGTERM to the runtime, SIGKILL 2 s after the start at most.
 *
 * Telemetry subscribers get JSON arrays of {time, type, record} POSTed to
 * their listener inside the env's network namespace, one batch in flight
 * at a time, bounded queues; a listener that is slow, dead or never reads
 * costs dropped events (counted, logged once), never a stalled loop.
 * Everything here runs on the loop. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define SHUTDOWN_BUDGET_MS  2000   /* Lambda's, with external extensions */
#define RUNTIME_TERM_MS     300    /* of which the runtime gets this after SIGTERM */
#define BACKLOG_MAX         128    /* events kept for subscribers still to come */
#define TEL_SUBS_MAX        SL_EXT_MAX
#define TEL_SEND_TIMEOUT_S  2      /* a delivery that takes longer is dropped */

enum { X_REGISTERED, X_WAITING, X_RUNNING, X_ERROR };
enum { T_PLATFORM = 1, T_FUNCTION = 2, T_EXTENSION = 4 };

struct ext {
    char              id[40];
    char              name[SL_EXT_NAME_MAX + 1];
    bool              external;       /* started from /opt/extensions */
    bool              on_invoke, on_shutdown;
    int               st;             /* X_* */
    struct rapi_conn *waiter;         /* its parked /event/next */
    char             *event;          /* the next event, until it asks */
};

struct tel_sub {
    struct sl__ext     *x;
    unsigned            types;
    uint16_t            port;
    char                path[256];
    size_t              max_items, max_bytes;
    int                 timeout_ms;
    struct evbuffer    *q;            /* queued events, comma-separated */
    size_t              nq;
    struct bufferevent *bev;          /* the batch in flight */
    struct event       *ev_flush;
    size_t              inflight_n, inflight_bytes;  /* the batch in flight */
    unsigned long long  dropped;
    unsigned long long  pend_records, pend_bytes;   /* not yet told by logsDropped */
    const char         *pend_why;
    bool                drop_logged;
};

struct backlog_ev {
    unsigned type;
    char    *json;
};

struct sl__ext {
    struct sl_env     *env;
    char               launched[SL_EXT_MAX][SL_EXT_NAME_MAX + 1];
    size_t             nlaunched;
    struct ext         e[SL_EXT_MAX];
    size_t             n;
    bool               rt_next;       /* the runtime called /next in init */
    bool               holding;       /* an invocation answered, extensions busy */
    bool               shutting;
    struct event      *ev_phase;      /* shutdown: end of the extensions' part */
    struct event      *ev_crash;      /* an extension was gone when we looked */
    struct xproc {                    /* the launched extensions' processes */
        struct sl__ext *x;
        size_t          i;            /* in launched[] */
        int             pidfd;
        struct event   *ev;
        bool            gone;
    }                  procs[SL_EXT_MAX];
    bool               scanned;
    pid_t              rt_pid;        /* the runtime's host pid, -1 unknown */
    struct tel_sub    *subs[TEL_SUBS_MAX];
    size_t             nsubs;
    struct backlog_ev  backlog[BACKLOG_MAX];
    size_t             nbacklog;
    double             rt_done_ms;    /* the runtime answered */
};

/* ------------------------------------------------------------------ */
/* Scanning the layers                                                 */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

size_t sl__ext_scan(const struct sl_function_conf *fn, char names[][SL_EXT_NAME_MAX + 1])
{
    size_t n = 0;

    for (size_t i = 0; i < fn->layers.n; i++) {
        char path[4096];
        DIR *d;
        struct dirent *de;

        snprintf(path, sizeof(path), "%s/extensions", fn->layers.v[i]);
        if (!(d = opendir(path)))
            continue;
        while ((de = readdir(d))) {
            struct stat st;
            char full[4096 + 256];
            bool dup = false;

            if (de->d_name[0] == '.' || strlen(de->d_name) > SL_EXT_NAME_MAX)
                continue;
            snprintf(full, sizeof(full), "%s/%s", path, de->d_name);
            if (lstat(full, &st) != 0)
                continue;
            if (!S_ISLNK(st.st_mode) && !(S_ISREG(st.st_mode) && (st.st_mode & 0111)))
                continue;
            for (size_t k = 0; k < n; k++)
                dup |= strcmp(names[k], de->d_name) == 0;
            if (!dup && n < SL_EXT_MAX)
                snprintf(names[n++], SL_EXT_NAME_MAX + 1, "%.*s", SL_EXT_NAME_MAX, de->d_name);
        }
        closedir(d);
    }
    qsort(names, n, sizeof(names[0]), name_cmp);
    return n;
}

void sl__ext_header(struct sl__ext_hdrs *h, const char *name, const char *v)
{
    const char *k = name + 17; /* after "Lambda-Extension-" */

    if (strcasecmp(k, "Name") == 0) {
        snprintf(h->name, sizeof(h->name), "%s", v);
        h->has_name = true;
    } else if (strcasecmp(k, "Identifier") == 0) {
        snprintf(h->id, sizeof(h->id), "%s", v);
        h->has_id = true;
    } else if (strcasecmp(k, "Function-Error-Type") == 0) {
        snprintf(h->etype, sizeof(h->etype), "%s", v);
        h->has_etype = true;
    } else if (strcasecmp(k, "Accept-Feature") == 0) {
        snprintf(h->feature, sizeof(h->feature), "%s", v);
    }
}

/* ------------------------------------------------------------------ */
/* Telemetry                                                           */

static void now_iso(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    char day[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%.20s.%03dZ", day, (int)(ts.tv_nsec / 1000000) % 1000);
}

static void tel_flush(struct tel_sub *s);

/* Records lost for `s`: counted, logged once, and told to the subscriber
 * by a platform.logsDropped event as soon as its queue has room. */
static void tel_drop(struct tel_sub *s, size_t n, size_t bytes, const char *why)
{
    s->dropped += n;
    s->pend_records += n;
    s->pend_bytes += bytes;
    s->pend_why = why;
    if (!s->drop_logged) {
        SL_WARN(s->x->env->pool->inst, "telemetry: events for a subscriber on port %u "
                "dropped (%s); counting on, logged once per subscription", s->port, why);
        s->drop_logged = true;
    }
}

static void tel_done(struct tel_sub *s)
{
    s->inflight_n = s->inflight_bytes = 0;
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    /* what queued up meanwhile goes next, on the loop */
    if (s->nq && !evtimer_pending(s->ev_flush, NULL))
        sl__env_timer(s->ev_flush, 0);
}

static void tel_on_read(struct bufferevent *bev, void *arg)
{
    struct tel_sub *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    /* the status line is all we want: any answer ends the delivery */
    if (evbuffer_search(in, "\r\n", 2, NULL).pos >= 0) {
        const char *p = (const char *)evbuffer_pullup(in, 12);
        if (!p || strncmp(p, "HTTP/1.", 7) != 0 || p[9] != '2')
            SL_DEBUG(SL_DBG_SANDBOX, s->x->env->pool->inst, "telemetry: listener answered "
                     "%.12s", p ? p : "");
        tel_done(s);
    }
}

static void tel_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct tel_sub *s = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        tel_drop(s, s->inflight_n, s->inflight_bytes,
                 what & BEV_EVENT_TIMEOUT ? "listener too slow" : "listener unreachable");
    tel_done(s);
}

static void tel_flush(struct tel_sub *s)
{
    struct sl_env *env = s->x->env;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(s->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { TEL_SEND_TIMEOUT_S, 0 };
    struct evbuffer *out;
    struct sl_err err;
    size_t len;
    int fd;

    evtimer_del(s->ev_flush);
    if (s->bev || !s->nq)
        return; /* one batch at a time: the rest waits in the queue */
    sl_err_clear(&err);
    fd = sl_sandbox_socket(env->pool->sb, &env->proc, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, &err);
    if (fd < 0) {
        tel_drop(s, s->nq, evbuffer_get_length(s->q), "cannot reach the listener");
        evbuffer_drain(s->q, evbuffer_get_length(s->q));
        s->nq = 0;
        return;
    }
    s->bev = bufferevent_socket_new(env->pool->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        close(fd);
        return;
    }
    len = evbuffer_get_length(s->q) + 2;
    out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "POST %s HTTP/1.1\r\nHost: sandbox.localdomain:%u\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n[", s->path, s->port, len);
    evbuffer_add_buffer(out, s->q);
    evbuffer_add(out, "]", 1);
    s->inflight_n = s->nq;
    s->inflight_bytes = len;
    s->nq = 0;
    bufferevent_setcb(s->bev, tel_on_read, NULL, tel_on_event, s);
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&a, sizeof(a)) != 0) {
        tel_drop(s, s->inflight_n, s->inflight_bytes, "cannot connect");
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
}

static void tel_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    tel_flush(arg);
}

static bool tel_room(const struct tel_sub *s, size_t n)
{
    return s->nq < s->max_items && evbuffer_get_length(s->q) + n + 1 <= s->max_bytes;
}

static void tel_add(struct tel_sub *s, const char *json, size_t n)
{
    if (s->nq)
        evbuffer_add(s->q, ",", 1);
    evbuffer_add(s->q, json, n);
    s->nq++;
}

static void tel_push(struct tel_sub *s, const char *json)
{
    size_t n = strlen(json);
    char note[320], t[40];

    if (!tel_room(s, n))
        tel_flush(s); /* full: one batch goes, unless one is in flight */
    if (s->pend_records) {
        /* Lambda's platform.logsDropped, first in line once there is room */
        now_iso(t, sizeof(t));
        snprintf(note, sizeof(note), "{\"time\":\"%s\",\"type\":\"platform.logsDropped\","
                 "\"record\":{\"droppedRecords\":%llu,\"droppedBytes\":%llu,\"reason\":"
                 "\"%s\"}}", t, s->pend_records, s->pend_bytes, s->pend_why);
        if (tel_room(s, strlen(note) + n + 1)) {
            tel_add(s, note, strlen(note));
            s->pend_records = s->pend_bytes = 0;
        }
    }
    if (!tel_room(s, n)) {
        tel_drop(s, 1, n, "Some logs were dropped because the subscriber's buffer was full");
        return;
    }
    tel_add(s, json, n);
    if (s->nq >= s->max_items)
        tel_flush(s);
    else if (!evtimer_pending(s->ev_flush, NULL))
        sl__env_timer(s->ev_flush, s->timeout_ms);
}

/* One telemetry event; takes `record`. */
static void emit(struct sl__ext *x, unsigned type, const char *name, json_t *record)
{
    char t[40];
    json_t *o;
    char *s;

    if (!x->nsubs && (x->nbacklog >= BACKLOG_MAX || x->env->state != ENV_STARTING)) {
        json_decref(record); /* nobody to tell, nobody still to come */
        return;
    }
    now_iso(t, sizeof(t));
    o = json_pack("{s:s, s:s, s:o}", "time", t, "type", name, "record", record);
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return;
    for (size_t i = 0; i < x->nsubs; i++)
        if (x->subs[i]->types & type)
            tel_push(x->subs[i], s);
    /* until registration closes, later subscribers get what they missed */
    if (x->env->state == ENV_STARTING && x->nbacklog < BACKLOG_MAX) {
        x->backlog[x->nbacklog].type = type;
        x->backlog[x->nbacklog++].json = s;
        return;
    }
    free(s);
}

static const char *init_type(const struct sl_env *env)
{
    return env->provisioned ? "provisioned-concurrency" : "on-demand";
}

void sl__ext_log(struct sl_env *env, const char *line, size_t len)
{
    struct sl__ext *x = env->ext;
    bool want = false;

    for (size_t i = 0; i < x->nsubs; i++)
        want |= (x->subs[i]->types & T_FUNCTION) != 0;
    if (!want && env->state != ENV_STARTING)
        return;
    emit(x, T_FUNCTION, "function", json_stringn_nocheck(line, len));
}

void sl__ext_report(struct sl_env *env, const char *request_id, bool ok, double duration_ms,
                    int64_t billed_ms, int64_t max_memory_mb, double init_ms)
{
    json_t *m = json_pack("{s:f, s:I, s:I, s:I}", "durationMs", round(duration_ms * 1000) / 1000,
                          "billedDurationMs", (json_int_t)billed_ms, "memorySizeMB",
                          (json_int_t)env->pool->fn->memory_mb, "maxMemoryUsedMB",
                          (json_int_t)max_memory_mb);

    if (init_ms > 0)
        json_object_set_new(m, "initDurationMs", json_real(round(init_ms * 1000) / 1000));
    emit(env->ext, T_PLATFORM, "platform.report",
         json_pack("{s:s, s:s, s:o}", "requestId", request_id, "status",
                   ok ? "success" : "failure", "metrics", m));
}

/* PUT /2022-07-01/telemetry */
static void on_subscribe(struct sl__ext *x, struct rapi_conn *c, const char *body, size_t len)
{
    json_error_t je;
    json_t *doc = json_loadb(body, len, 0, &je), *types, *dest, *buf, *v;
    const char *uri, *proto, *rest;
    struct tel_sub *s;
    char host[64];
    unsigned long port;
    size_t i;
    char *end;

#define BAD(...) do { char m_[256]; snprintf(m_, sizeof(m_), __VA_ARGS__); \
        sl__rapi_send_error(c, 400, "ValidationError", m_); json_decref(doc); return; } while (0)
    if (!json_is_object(doc))
        BAD("the subscription is not a JSON object");
    v = json_object_get(doc, "schemaVersion");
    if (!json_is_string(v) || (strcmp(json_string_value(v), "2022-07-01") != 0 &&
                               strcmp(json_string_value(v), "2022-12-13") != 0 &&
                               strcmp(json_string_value(v), "2025-01-29") != 0))
        BAD("schemaVersion must be 2022-07-01 or 2022-12-13");
    dest = json_object_get(doc, "destination");
    proto = json_string_value(json_object_get(dest, "protocol"));
    uri = json_string_value(json_object_get(dest, "URI"));
    if (!proto || strcmp(proto, "HTTP") != 0)
        BAD("destination.protocol: only HTTP is supported");
    if (!uri || strncmp(uri, "http://", 7) != 0)
        BAD("destination.URI must be http://sandbox.localdomain:<port>/<path>");
    rest = uri + 7;
    i = strcspn(rest, ":/");
    if (i == 0 || i >= sizeof(host) || rest[i] != ':')
        BAD("destination.URI must name a port");
    snprintf(host, sizeof(host), "%.*s", (int)i, rest);
    if (strcmp(host, "sandbox.localdomain") != 0 && strcmp(host, "sandbox") != 0 &&
        strcmp(host, "sandbox.localhost") != 0 &&
        strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0)
        BAD("destination.URI host must be sandbox.localdomain");
    errno = 0;
    port = strtoul(rest + i + 1, &end, 10);
    if (errno || end == rest + i + 1 || port == 0 || port > 65535 ||
        port == SL_SANDBOX_RAPI_PORT || (*end && *end != '/'))
        BAD("destination.URI port must be 1..65535 and not %d", SL_SANDBOX_RAPI_PORT);
    for (const char *p = end; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            BAD("destination.URI has a bad path");
    if (strlen(end) >= sizeof(s->path))
        BAD("destination.URI path too long");
    types = json_object_get(doc, "types");
    if (!json_is_array(types) || json_array_size(types) == 0)
        BAD("types must be a non-empty array of platform, function, extension");
    s = sl_calloc(1, sizeof(*s));
    json_array_foreach(types, i, v) {
        const char *t = json_string_value(v);
        if (t && strcmp(t, "platform") == 0)
            s->types |= T_PLATFORM;
        else if (t && strcmp(t, "function") == 0)
            s->types |= T_FUNCTION;
        else if (t && strcmp(t, "extension") == 0)
            s->types |= T_EXTENSION;
        else {
            free(s);
            BAD("types: unknown type");
        }
    }
    s->max_items = 10000;
    s->max_bytes = 262144;
    s->timeout_ms = 1000;
    buf = json_object_get(doc, "buffering");
    if (buf && !json_is_object(buf)) {
        free(s);
        BAD("buffering must be an object");
    }
    if ((v = json_object_get(buf, "maxItems"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1000 || json_integer_value(v) > 10000) {
            free(s);
            BAD("buffering.maxItems must be 1000..10000");
        }
        s->max_items = (size_t)json_integer_value(v);
    }
    if ((v = json_object_get(buf, "maxBytes"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 262144 ||
            json_integer_value(v) > 1048576) {
            free(s);
            BAD("buffering.maxBytes must be 262144..1048576");
        }
        s->max_bytes = (size_t)json_integer_value(v);
    }
    if ((v = json_object_get(buf, "timeoutMs"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 25 || json_integer_value(v) > 30000) {
            free(s);
            BAD("buffering.timeoutMs must be 25..30000");
        }
        s->timeout_ms = (int)json_integer_value(v);
    }
#undef BAD
    s->x = x;
    s->port = (uint16_t)port;
    snprintf(s->path, sizeof(s->path), "%s", *end ? end : "/"); /* (end lives in doc) */
    json_decref(doc);
    s->q = evbuffer_new();
    s->ev_flush = evtimer_new(x->env->pool->base, tel_on_flush, s);
    if (x->nsubs >= TEL_SUBS_MAX) {
        evbuffer_free(s->q);
        event_free(s->ev_flush);
        free(s);
        sl__rapi_send_error(c, 400, "ValidationError", "too many subscriptions");
        return;
    }
    x->subs[x->nsubs++] = s;
    for (i = 0; i < x->nbacklog; i++)
        if (s->types & x->backlog[i].type)
            tel_push(s, x->backlog[i].json);
    SL_DEBUG(SL_DBG_SANDBOX, x->env->pool->inst, "telemetry: subscribed port %u%s", s->port,
             s->path);
    sl__rapi_send(c, 200, NULL, "\"OK\"");
}

static void tel_free(struct tel_sub *s)
{
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->dropped)
        SL_WARN(s->x->env->pool->inst, "telemetry: %llu events dropped for the subscriber on "
                "port %u", s->dropped, s->port);
    evbuffer_free(s->q);
    event_free(s->ev_flush);
    free(s);
}

/* ------------------------------------------------------------------ */
/* Extension events and the lifecycle                                  */

static struct ext *find_ext(struct sl__ext *x, const char *id)
{
    for (size_t i = 0; i < x->n; i++)
        if (strcmp(x->e[i].id, id) == 0)
            return &x->e[i];
    return NULL;
}

static void give_event(struct ext *e)
{
    char head[128], evid[37];

    if (!e->waiter || !e->event)
        return;
    sl_uuid(evid);
    snprintf(head, sizeof(head), "Lambda-Extension-Event-Identifier: %s\r\n", evid);
    {
        struct rapi_conn *c = e->waiter;
        char *ev = e->event;
        e->waiter = NULL;
        e->event = NULL;
        e->st = X_RUNNING;
        sl__rapi_send(c, 200, head, ev);
        free(ev);
    }
}

static void queue_event(struct ext *e, json_t *ev)
{
    free(e->event);
    e->event = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (e->st != X_ERROR)
        e->st = X_RUNNING; /* busy with it until it asks for the next */
    give_event(e);
}

/* Every extension that must be is parked in /event/next (for `shutdown`:
 * every SHUTDOWN subscriber). */
static bool all_waiting(const struct sl__ext *x, bool shutdown)
{
    for (size_t i = 0; i < x->n; i++) {
        const struct ext *e = &x->e[i];
        if (e->st == X_ERROR || (shutdown && !e->on_shutdown))
            continue;
        if (!e->external && !e->on_invoke && !e->on_shutdown)
            continue; /* an internal one without events never asks */
        if (e->st != X_WAITING)
            return false;
    }
    return true;
}

static void phase_end(struct sl__ext *x);
static void scan_procs(struct sl__ext *x);

/* Something moved: init done, an invocation's extensions done, shutdown
 * acknowledged. May destroy nothing; may start an invocation. */
static void progress(struct sl__ext *x)
{
    struct sl_env *env = x->env;

    if (x->shutting) {
        if (all_waiting(x, true) && event_pending(x->ev_phase, EV_TIMEOUT, NULL))
            phase_end(x);
        return;
    }
    if (env->state == ENV_STARTING && env->kind == ENV_COLD) {
        size_t ext_registered = 0;
        for (size_t i = 0; i < x->n; i++)
            ext_registered += x->e[i].external;
        if (x->rt_next && ext_registered >= x->nlaunched && all_waiting(x, false)) {
            double init_ms = sl_mono_ms() - env->spawned_ms;
            emit(x, T_PLATFORM, "platform.initReport",
                 json_pack("{s:s, s:s, s:s, s:{s:f}}", "initializationType", init_type(env),
                           "phase", "init", "status", "success", "metrics", "durationMs",
                           round(init_ms * 1000) / 1000));
            for (size_t i = 0; i < x->nbacklog; i++)
                free(x->backlog[i].json);
            x->nbacklog = 0;
            sl__env_ready(env, false); /* may deliver the invocation at once */
        }
        return;
    }
    if (x->holding && all_waiting(x, false)) {
        x->holding = false;
        event_del(env->ev_timer);
        if (env->inv) {
            sl__env_send_invoke(env); /* one came while the extensions worked */
        } else {
            sl__env_set_state(env, ENV_IDLE);
            env->idle_ms = sl_mono_ms();
        }
    }
}

void sl__ext_runtime_next(struct sl_env *env)
{
    struct sl__ext *x = env->ext;

    if (!x) {
        sl__env_ready(env, false);
        return;
    }
    if (!x->rt_next) {
        x->rt_next = true;
        scan_procs(x);
        emit(x, T_PLATFORM, "platform.initRuntimeDone",
             json_pack("{s:s, s:s, s:s}", "initializationType", init_type(env), "phase", "init",
                       "status", "success"));
    }
    progress(x);
}

size_t sl__ext_pending(const struct sl_env *env, char *buf, size_t n)
{
    const struct sl__ext *x = env->ext;
    size_t len = 0;

    buf[0] = '\0';
    if (!x)
        return 0;
    for (size_t i = 0; i < x->nlaunched; i++) {
        const struct ext *e = NULL;
        for (size_t k = 0; k < x->n; k++)
            if (x->e[k].external && strcmp(x->e[k].name, x->launched[i]) == 0)
                e = &x->e[k];
        if (e && e->st == X_WAITING)
            continue;
        len += (size_t)snprintf(buf + (len < n ? len : n - 1), len < n ? n - len : 1,
                                "%sextension %s %s", len ? ", " : "", x->launched[i],
                                e ? "did not call /event/next" : "did not register");
    }
    for (size_t k = 0; k < x->n; k++) {
        const struct ext *e = &x->e[k];
        if (e->external || e->st == X_WAITING || (!e->on_invoke && !e->on_shutdown))
            continue;
        len += (size_t)snprintf(buf + (len < n ? len : n - 1), len < n ? n - len : 1,
                                "%sextension %s did not call /event/next", len ? ", " : "",
                                e->name);
    }
    return len;
}

void sl__ext_invoke(struct sl_env *env, int64_t deadline_ms)
{
    struct sl__ext *x = env->ext;
    const struct sl_function_conf *fn = env->pool->fn;

    if (!x || !env->inv)
        return;
    emit(x, T_PLATFORM, "platform.start",
         json_pack("{s:s, s:s}", "requestId", env->inv->request_id, "version", "$LATEST"));
    for (size_t i = 0; i < x->n; i++) {
        struct ext *e = &x->e[i];
        if (!e->on_invoke || e->st == X_ERROR)
            continue;
        queue_event(e, json_pack("{s:s, s:I, s:s, s:s, s:{s:s, s:s}}", "eventType", "INVOKE",
                                 "deadlineMs", (json_int_t)deadline_ms, "requestId",
                                 env->inv->request_id, "invokedFunctionArn",
                                 fn->arn ? fn->arn : "", "tracing", "type", "X-Amzn-Trace-Id",
                                 "value", ""));
    }
}

bool sl__ext_hold(struct sl_env *env, bool ok)
{
    struct sl__ext *x = env->ext;

    if (env->inv)
        emit(x, T_PLATFORM, "platform.runtimeDone",
             json_pack("{s:s, s:s, s:{s:f}}", "requestId", env->inv->request_id, "status",
                       ok ? "success" : "failure", "metrics", "durationMs",
                       round((sl_mono_ms() - env->busy_ms) * 1000) / 1000));
    if (all_waiting(x, false))
        return false;
    x->holding = true;
    return true;
}

/* The host pid of the env init's child that is `nspid` in the env's pid
 * namespace, from the NSpid line of its status; -1 if none. */
static pid_t ns_child(const struct sl__ext *x, pid_t *kids, size_t nkids, pid_t nspid)
{
    for (size_t k = 0; k < nkids; k++) {
        char sp[64], line[256];
        pid_t found = -1;
        FILE *s;

        snprintf(sp, sizeof(sp), "/proc/%d/status", (int)kids[k]);
        if (!(s = fopen(sp, "r")))
            continue;
        while (fgets(line, sizeof(line), s))
            if (strncmp(line, "NSpid:", 6) == 0) {
                char *last = strrchr(line, '\t');
                if (last && atoi(last + 1) == nspid)
                    found = kids[k];
                break;
            }
        fclose(s);
        if (found > 0)
            return found;
    }
    (void)x;
    return -1;
}

static void ext_gone(struct sl__ext *x, size_t i);

static void on_proc_exit(evutil_socket_t fd, short what, void *arg)
{
    struct xproc *p = arg;

    (void)fd, (void)what;
    ext_gone(p->x, p->i);
}

static void on_crash(evutil_socket_t fd, short what, void *arg)
{
    struct sl__ext *x = arg;

    (void)fd, (void)what;
    for (size_t i = 0; i < x->nlaunched; i++)
        if (x->procs[i].pidfd < 0 && !x->procs[i].gone) {
            ext_gone(x, i);
            return; /* (the env may be gone now) */
        }
}

/* Once the runtime runs (sluice-init starts the n extensions first, so
 * they are pids 2..n+1 of the env's pid namespace and the runtime n+2):
 * find their host pids, watch the extensions' exits through pidfds. An
 * extension that is gone already crashed. */
static void scan_procs(struct sl__ext *x)
{
    char path[64];
    pid_t kids[64];
    size_t nkids = 0;
    long v;
    FILE *f;
    bool missing = false;

    if (x->scanned)
        return;
    x->scanned = true;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)x->env->proc.pid,
             (int)x->env->proc.pid);
    if ((f = fopen(path, "r"))) {
        while (nkids < sizeof(kids) / sizeof(kids[0]) && fscanf(f, "%ld", &v) == 1)
            if (v > 0)
                kids[nkids++] = (pid_t)v;
        fclose(f);
    }
    x->rt_pid = ns_child(x, kids, nkids, (pid_t)x->nlaunched + 2);
    for (size_t i = 0; i < x->nlaunched; i++) {
        struct xproc *p = &x->procs[i];
        pid_t pid = ns_child(x, kids, nkids, (pid_t)i + 2);

        if (pid > 0 && (p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) >= 0) {
            p->ev = event_new(x->env->pool->base, p->pidfd, EV_READ, on_proc_exit, p);
            if (p->ev && event_add(p->ev, NULL) == 0)
                continue;
        }
        missing = true;
    }
    if (missing)
        sl__env_timer(x->ev_crash, 0); /* from the loop: we are inside a request */
}

/* Launched extension i exited (or was gone when we looked). After
 * SHUTDOWN that is its way to say it is done; before, a crash: Lambda's
 * Extension.Crash, the env is reset. */
static void ext_gone(struct sl__ext *x, size_t i)
{
    struct sl_env *env = x->env;
    struct xproc *p = &x->procs[i];
    char msg[160];

    p->gone = true;
    if (p->ev)
        event_del(p->ev);
    for (size_t k = 0; k < x->n; k++)
        if (x->e[k].external && strcmp(x->e[k].name, x->launched[i]) == 0) {
            x->e[k].st = X_ERROR; /* nothing more to wait for */
            x->e[k].waiter = NULL;
        }
    if (x->shutting) {
        progress(x);
        return;
    }
    snprintf(msg, sizeof(msg), "RequestId: %s Error: extension %s exited",
             env->inv ? env->inv->request_id : "-", x->launched[i]);
    SL_WARN(env->pool->inst, "environment %s: %s", env->id, msg);
    sl__env_finish(env, false, NULL, 0, "Extension.Crash", msg, NULL);
    if (env->state == ENV_STOPPING)
        return;
    if (!sl__ext_shutdown(env, "failure"))
        sl__env_destroy(env);
}

/* The extensions had their part of the shutdown: SIGTERM to the runtime,
 * SIGKILL (the env destroyed) when it exits or RUNTIME_TERM_MS later. */
static void phase_end(struct sl__ext *x)
{
    event_del(x->ev_phase);
    scan_procs(x);
    if (x->rt_pid > 0)
        kill(x->rt_pid, SIGTERM);
    sl__env_timer(x->env->ev_timer, RUNTIME_TERM_MS);
}

static void on_phase(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    phase_end(arg);
}

size_t sl__ext_conns(const struct sl_env *env)
{
    const struct sl__ext *x = env->ext;
    size_t n = 0;

    if (!x)
        return 0;
    n = x->nlaunched;
    for (size_t i = 0; i < x->n; i++)
        n += !x->e[i].external;
    return 2 * n; /* a parked /event/next and one more request each */
}

size_t sl__ext_count(const struct sl_env *env)
{
    return env->ext ? env->ext->n + env->ext->nlaunched : 0;
}

bool sl__ext_shutdown(struct sl_env *env, const char *reason)
{
    struct sl__ext *x = env->ext;

    if (!x || x->n == 0 || x->shutting)
        return false;
    x->shutting = true;
    x->holding = false;
    sl__env_set_state(env, ENV_STOPPING);
    event_del(env->ev_timer);
    SL_DEBUG(SL_DBG_SANDBOX, env->pool->inst, "environment %s: shutdown (%s) with %zu "
             "extension(s)", env->id, reason, x->n);
    for (size_t i = 0; i < x->n; i++) {
        struct ext *e = &x->e[i];
        if (!e->on_shutdown || e->st == X_ERROR)
            continue;
        queue_event(e, json_pack("{s:s, s:s, s:I}", "eventType", "SHUTDOWN", "shutdownReason",
                                 reason, "deadlineMs",
                                 (json_int_t)(sl_wall_ms() + SHUTDOWN_BUDGET_MS)));
    }
    for (size_t i = 0; i < x->nsubs; i++)
        tel_flush(x->subs[i]);
    sl__env_timer(x->ev_phase, SHUTDOWN_BUDGET_MS - RUNTIME_TERM_MS);
    progress(x);
    return true;
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */

static bool is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static void forbid(struct rapi_conn *c, const char *etype, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void forbid(struct rapi_conn *c, const char *etype, const char *fmt, ...)
{
    char msg[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sl__rapi_send_error(c, 403, etype, msg);
}

/* The extension the request names, or NULL (answered). */
static struct ext *identify(struct sl__ext *x, struct rapi_conn *c, const struct sl__ext_hdrs *h)
{
    struct ext *e;

    if (!h->has_id || !h->id[0]) {
        forbid(c, "Extension.MissingExtensionIdentifier",
               "Missing Lambda-Extension-Identifier header");
        return NULL;
    }
    if (!is_uuid(h->id)) {
        forbid(c, "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier");
        return NULL;
    }
    if (!(e = find_ext(x, h->id))) {
        forbid(c, "Extension.UnknownExtensionIdentifier", "Unknown extension %s", h->id);
        return NULL;
    }
    return e;
}

static const char *state_name(const struct ext *e)
{
    switch (e->st) {
    case X_REGISTERED: return "Registered";
    case X_WAITING:    return "Ready";
    case X_RUNNING:    return "Running";
    default:           return "ExitError";
    }
}

static void on_register(struct sl__ext *x, struct rapi_conn *c, const struct sl__ext_hdrs *h,
                        const char *body, size_t len)
{
    struct sl_env *env = x->env;
    const struct sl_function_conf *fn = env->pool->fn;
    json_t *doc, *events, *v, *resp;
    struct ext *e;
    bool external = false, on_invoke = false, on_shutdown = false;
    const char *base;
    char head[128], *s;
    size_t i;

    if (!h->has_name || !h->name[0]) {
        forbid(c, "Extension.InvalidExtensionName", "Empty extension name");
        return;
    }
    if (strlen(h->name) > SL_EXT_NAME_MAX) {
        forbid(c, "Extension.InvalidExtensionName", "Extension name longer than %d bytes",
               SL_EXT_NAME_MAX);
        return;
    }
    doc = json_loadb(body, len, 0, NULL);
    events = json_object_get(doc, "events");
    if (!json_is_object(doc) || (events && !json_is_array(events))) {
        json_decref(doc);
        forbid(c, "InvalidRequestFormat", "the body must be {\"events\":[...]}");
        return;
    }
    for (i = 0; i < x->nlaunched; i++)
        external |= strcmp(x->launched[i], h->name) == 0;
    json_array_foreach(events, i, v) {
        const char *t = json_string_value(v);
        if (t && strcmp(t, "INVOKE") == 0) {
            on_invoke = true;
        } else if (t && strcmp(t, "SHUTDOWN") == 0 && external) {
            on_shutdown = true;
        } else {
            /* (t lives in doc: the message first) */
            forbid(c, "Extension.InvalidEventType", "%.64s: %s", t ? t : "(not a string)",
                   t && strcmp(t, "SHUTDOWN") == 0 ?
                   "internal extensions cannot register for SHUTDOWN" : "unknown event type");
            json_decref(doc);
            return;
        }
    }
    json_decref(doc);
    if (env->state != ENV_STARTING || env->kind != ENV_COLD) {
        forbid(c, "Extension.RegistrationClosed", "Extension registration closed already");
        return;
    }
    for (i = 0; i < x->n; i++)
        if (strcmp(x->e[i].name, h->name) == 0) {
            forbid(c, "Extension.InvalidExtensionState", "State transition from %s to "
                   "Registered failed for extension %s. Error: State transition is not "
                   "allowed", state_name(&x->e[i]), h->name);
            return;
        }
    if (x->n >= SL_EXT_MAX) {
        forbid(c, "Extension.TooManyExtensions", "Extension limit (%d) reached", SL_EXT_MAX);
        return;
    }
    e = &x->e[x->n++];
    memset(e, 0, sizeof(*e));
    sl_uuid(e->id);
    snprintf(e->name, sizeof(e->name), "%.*s", SL_EXT_NAME_MAX, h->name);
    e->external = external;
    e->on_invoke = on_invoke;
    e->on_shutdown = on_shutdown;
    e->st = X_REGISTERED;
    base = strrchr(fn->handler, '/');
    base = base ? base + 1 : fn->handler;
    resp = json_pack("{s:s, s:s, s:s}", "functionName", fn->name, "functionVersion", "$LATEST",
                     "handler", base);
    if (strstr(h->feature, "accountId") && fn->server && fn->server->account_id)
        json_object_set_new(resp, "accountId", json_string(fn->server->account_id));
    s = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    snprintf(head, sizeof(head), "Lambda-Extension-Identifier: %s\r\n", e->id);
    SL_DEBUG(SL_DBG_SANDBOX, env->pool->inst, "extension %s registered (%s%s%s)", e->name,
             external ? "external" : "internal", on_invoke ? ", INVOKE" : "",
             on_shutdown ? ", SHUTDOWN" : "");
    sl__rapi_send(c, 200, head, s ? s : "{}");
    free(s);
}

static void on_event_next(struct sl__ext *x, struct rapi_conn *c, struct ext *e)
{
    if (e->st == X_ERROR || e->waiter) {
        forbid(c, "Extension.InvalidExtensionState", "State transition from %s to Ready failed "
               "for extension %s. Error: State transition is not allowed",
               e->waiter ? "Ready" : state_name(e), e->name);
        return;
    }
    e->waiter = c;
    sl__rapi_park(c);
    if (e->event) {
        give_event(e);
        return;
    }
    e->st = X_WAITING;
    progress(x);
}

/* POST …/init/error and …/exit/error */
static void on_ext_error(struct sl__ext *x, struct rapi_conn *c, struct ext *e,
                         const struct sl__ext_hdrs *h, const char *body, size_t len, bool init)
{
    struct sl_env *env = x->env;
    json_t *doc;
    const char *msg = "";
    char emsg[512];

    if (!h->has_etype || !h->etype[0]) {
        forbid(c, "Extension.MissingHeader", "Lambda-Extension-Function-Error-Type not found");
        return;
    }
    if (e->st == X_ERROR || (init && env->state != ENV_STARTING)) {
        forbid(c, "Extension.InvalidExtensionState", "State transition from %s to %s failed for "
               "extension %s. Error: State transition is not allowed",
               e->st == X_ERROR ? "ExitError" : state_name(e), init ? "InitError" : "ExitError",
               e->name);
        return;
    }
    doc = json_loadb(body, len, 0, NULL);
    if (json_is_string(json_object_get(doc, "errorMessage")))
        msg = json_string_value(json_object_get(doc, "errorMessage"));
    snprintf(emsg, sizeof(emsg), "extension %s: %s", e->name, msg);
    json_decref(doc);
    e->st = X_ERROR;
    if (e->waiter) {
        struct rapi_conn *w = e->waiter;
        e->waiter = NULL;
        forbid(w, "Extension.InvalidExtensionState", "the extension reported an error");
    }
    sl__rapi_send(c, 202, NULL, "{\"status\":\"OK\"}");
    SL_WARN(env->pool->inst, "environment %s: %s/error: %s: %s", env->id, init ? "init" : "exit",
            h->etype, emsg);
    if (env->state == ENV_STARTING || env->state == ENV_BUSY) {
        /* the init (or the invocation) fails with the extension's error */
        sl__env_finish(env, false, NULL, 0, h->etype, emsg, NULL);
        if (sl__ext_shutdown(env, "failure"))
            return;
        sl__env_destroy(env);
        return;
    }
    progress(x);
}

void sl__ext_route(struct sl_env *env, struct rapi_conn *c, const char *method, const char *path,
                   const struct sl__ext_hdrs *h, const char *body, size_t len, bool over)
{
    struct sl__ext *x = env->ext;
    const char *p = path;
    struct ext *e;

    if (!x) {
        sl__rapi_send_error(c, 404, "InvalidRequest", "no such path");
        return;
    }
    if (over) {
        sl__rapi_send_error(c, 413, "RequestEntityTooLarge", "request body too large");
        return;
    }
    if (strcmp(p, "/2022-07-01/telemetry") == 0) {
        if (strcmp(method, "PUT") != 0) {
            sl__rapi_send_error(c, 405, "InvalidRequest", "method not allowed");
            return;
        }
        if ((e = identify(x, c, h)))
            on_subscribe(x, c, body, len);
        return;
    }
    p += strlen("/2020-01-01/extension/");
    if (strcmp(p, "register") == 0) {
        if (strcmp(method, "POST") != 0)
            sl__rapi_send_error(c, 405, "InvalidRequest", "method not allowed");
        else
            on_register(x, c, h, body, len);
        return;
    }
    if (strcmp(p, "event/next") == 0 || strcmp(p, "init/error") == 0 ||
        strcmp(p, "exit/error") == 0) {
        bool next = p[0] == 'e' && p[1] == 'v';
        if (strcmp(method, next ? "GET" : "POST") != 0) {
            sl__rapi_send_error(c, 405, "InvalidRequest", "method not allowed");
            return;
        }
        if (!(e = identify(x, c, h)))
            return;
        if (next)
            on_event_next(x, c, e);
        else
            on_ext_error(x, c, e, h, body, len, p[1] == 'n');
        return;
    }
    sl__rapi_send_error(c, 404, "InvalidRequest", "no such path");
}

void sl__ext_conn_gone(struct sl_env *env, struct rapi_conn *c)
{
    struct sl__ext *x = env->ext;

    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++)
        if (x->e[i].waiter == c) {
            /* it stopped waiting; it is waiting no more either */
            x->e[i].waiter = NULL;
            if (x->e[i].st == X_WAITING)
                x->e[i].st = X_REGISTERED;
        }
}

/* ------------------------------------------------------------------ */
/* Lifetime                                                            */

int sl__ext_attach(struct sl_env *env)
{
    struct sl__ext *x = sl_calloc(1, sizeof(*x));

    x->env = env;
    x->nlaunched = sl__ext_scan(env->pool->fn, x->launched);
    x->ev_phase = evtimer_new(env->pool->base, on_phase, x);
    x->ev_crash = evtimer_new(env->pool->base, on_crash, x);
    x->rt_pid = -1;
    for (size_t i = 0; i < SL_EXT_MAX; i++) {
        x->procs[i].x = x;
        x->procs[i].i = i;
        x->procs[i].pidfd = -1;
    }
    env->ext = x;
    if (!x->ev_phase || !x->ev_crash) {
        sl__ext_free(env);
        return -1;
    }
    emit(x, T_PLATFORM, "platform.initStart",
         json_pack("{s:s, s:s, s:s, s:s}", "initializationType", init_type(env), "phase", "init",
                   "functionName", env->pool->fn->name, "functionVersion", "$LATEST"));
    return 0;
}

void sl__ext_free(struct sl_env *env)
{
    struct sl__ext *x = env->ext;

    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++)
        free(x->e[i].event);
    for (size_t i = 0; i < x->nsubs; i++)
        tel_free(x->subs[i]);
    for (size_t i = 0; i < x->nbacklog; i++)
        free(x->backlog[i].json);
    if (x->ev_phase)
        event_free(x->ev_phase);
    if (x->ev_crash)
        event_free(x->ev_crash);
    for (size_t i = 0; i < SL_EXT_MAX; i++) {
        if (x->procs[i].ev)
            event_free(x->procs[i].ev);
        if (x->procs[i].pidfd >= 0)
            close(x->procs[i].pidfd);
    }
    free(x);
    env->ext = NULL;
}
