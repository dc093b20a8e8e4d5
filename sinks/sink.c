/* Sinks, the generic layer: picks the ops for a sink type, runs reliable
 * writes (retry with capped exponential backoff and full jitter until the
 * sink confirms), and fails whatever is still pending when a sink is freed.
 *
 * The public struct sl_sink is the first member of a private struct impl,
 * which holds the generic layer's own state. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sluice/backoff.h"
#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define RELIABLE_BASE_MS 100
#define RELIABLE_CAP_MS  30000


/* A failure waiting for the next loop iteration. */
struct deferred {
    sl_sink_done_fn  done;
    void            *arg;
    struct sl_err    err;
    struct deferred *next;
};

/* A write that is retried until it is confirmed. */
struct reliable {
    struct impl     *im;
    char            *json;      /* owned copy */
    size_t           len;
    sl_sink_done_fn  done;
    void            *arg;
    unsigned         attempt;   /* failed attempts so far */
    bool             waiting;   /* backoff timer armed (else an attempt is in flight) */
    struct event    *timer;
    struct reliable *prev, *next;
};

struct impl {
    struct sl_sink   s;          /* first: the public part */
    struct deferred *dhead, *dtail;
    struct event    *dev;        /* fires the deferred failures */
    struct reliable *rel;        /* pending reliable writes */
    long long        warned_ms;  /* last retry warning (monotonic ms) */
    unsigned         quiet;      /* retry warnings held back since */
    int              busy;       /* our own handlers on the stack */
    bool             closing;    /* sl_sink_free started */
    bool             dead;       /* free the impl when busy drops to 0 */
};

static struct impl *impl_of(struct sl_sink *s)
{
    return (struct impl *)s;
}

/* ------------------------------------------------------------------ */
/* helpers for the implementations                                     */

void sl__sink_done(struct sl_sink *s, sl_sink_done_fn done, void *arg, int rc,
                   const struct sl_err *err)
{
    if (rc == 0)
        s->writes++;
    else if (rc != SL_ESTOPPED)
        s->failures++;
    done(arg, rc, err);
}

void sl__sink_fail_soon(struct sl_sink *s, sl_sink_done_fn done, void *arg,
                        const struct sl_err *err)
{
    struct impl *im = impl_of(s);
    struct deferred *d = sl_calloc(1, sizeof(*d));

    d->done = done;
    d->arg = arg;
    d->err = *err;
    if (d->err.code == 0)
        d->err.code = SL_EINTERNAL;
    if (im->dtail)
        im->dtail->next = d;
    else
        im->dhead = d;
    im->dtail = d;
    if (!im->closing)
        event_active(im->dev, EV_TIMEOUT, 0);
}

int sl__sink_make_parent(const char *path, struct sl_err *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    char *slash;

    if (n == 0 || n >= sizeof(buf))
        return sl_err_set(err, SL_ECONFIG, false, "bad path '%s': empty or too long", path);
    memcpy(buf, path, n + 1);
    slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0; /* relative name in cwd, or a file in / */
    *slash = '\0';
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            struct stat st;

            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return sl_err_set(err, SL_EIO, false, "cannot create directory %s: %s", buf,
                                  strerror(errno));
            if (stat(buf, &st) != 0)
                return sl_err_set(err, SL_EIO, false, "cannot create directory %s: %s", buf,
                                  strerror(errno));
            if (!S_ISDIR(st.st_mode))
                return sl_err_set(err, SL_EIO, false, "cannot create directory %s: %s", buf,
                                  strerror(ENOTDIR));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

void sl__sink_first_line(char *out, size_t n, const char *msg)
{
    size_t len;

    if (n == 0)
        return;
    if (!msg)
        msg = "";
    len = strcspn(msg, "\r\n");
    if (len >= n)
        len = n - 1;
    while (len > 0 && (msg[len - 1] == ' ' || msg[len - 1] == '\t'))
        len--;
    memcpy(out, msg, len);
    out[len] = '\0';
}

/* ------------------------------------------------------------------ */
/* deferred failures                                                   */

static void impl_release(struct impl *im)
{
    if (--im->busy == 0 && im->dead) {
        event_free(im->dev);
        free(im);
    }
}

/* Run the deferred failures one by one; a callback may free the sink, in
 * which case sl_sink_free has already flushed the rest. */
static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct impl *im = arg;

    (void)fd;
    (void)what;
    im->busy++;
    while (im->dhead && !im->closing) {
        struct deferred *d = im->dhead;

        im->dhead = d->next;
        if (!im->dhead)
            im->dtail = NULL;
        sl__sink_done(&im->s, d->done, d->arg, d->err.code, &d->err);
        free(d);
    }
    impl_release(im);
}

/* During sl_sink_free: report every deferred failure now. */
static bool flush_deferred(struct impl *im)
{
    bool any = false;

    while (im->dhead) {
        struct deferred *d = im->dhead;

        im->dhead = d->next;
        if (!im->dhead)
            im->dtail = NULL;
        sl__sink_done(&im->s, d->done, d->arg, d->err.code, &d->err);
        free(d);
        any = true;
    }
    return any;
}

/* ------------------------------------------------------------------ */
/* public API                                                          */

int sl_sink_new(struct event_base *base, struct sl_pool *pool, const struct sl_sink_conf *conf,
                struct sl_sink **out, struct sl_err *err)
{
    const struct sl_sink_type *t;
    struct impl *im;
    int rc;

    *out = NULL;
    if (!base || !conf)
        return sl_err_set(err, SL_EINVAL, false, "cannot open sink: no event base or config");
    if (!(t = sl_sink_type_of(conf->type)))
        return sl_err_set(err, SL_ECONFIG, false, "cannot open sink %s: unknown type %s",
                          conf->name ? conf->name : "?", sl_conf_type_name(conf->type));
    if (t->conf.size && !conf->opts)
        return sl_err_set(err, SL_ECONFIG, false, "cannot open sink %s: no %s options",
                          conf->name ? conf->name : "?", t->conf.name);
    im = sl_calloc(1, sizeof(*im));
    im->s.ops = t->ops;
    im->s.conf = conf;
    im->s.base = base;
    im->s.pool = pool;
    snprintf(im->s.inst, sizeof(im->s.inst), "sink:%s", conf->name ? conf->name : "?");
    im->dev = event_new(base, -1, 0, on_deferred, im);
    if (!im->dev) {
        free(im);
        return sl_err_set(err, SL_ENOMEM, false, "cannot open sink %s: cannot create event",
                          conf->name ? conf->name : "?");
    }
    rc = im->s.ops->open(&im->s, err);
    if (rc != 0) {
        event_free(im->dev);
        free(im);
        return rc;
    }
    *out = &im->s;
    return 0;
}

void sl_sink_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                   void *arg)
{
    struct impl *im = impl_of(s);
    struct sl_err err;

    if (im->closing) {
        sl_err_set(&err, SL_ESTOPPED, false, "cannot write to %s: sink is closing", s->inst);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    if (len == 0) {
        sl_err_set(&err, SL_EINVAL, false, "cannot write to %s: empty record", s->inst);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    s->ops->write(s, json, len, done, arg);
}

static void rel_unlink(struct reliable *r)
{
    struct impl *im = r->im;

    if (r->prev)
        r->prev->next = r->next;
    else
        im->rel = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void rel_finish(struct reliable *r, int rc, const struct sl_err *err)
{
    sl_sink_done_fn done = r->done;
    void *arg = r->arg;

    rel_unlink(r);
    event_free(r->timer);
    free(r->json);
    free(r);
    done(arg, rc, err);
}

static void rel_attempt(struct reliable *r);

/* One line per failed attempt, but at most one a second per sink: with
 * the store down, every pending record fails at each backoff step. */
static void warn_retry(struct impl *im, struct reliable *r, uint64_t delay, int rc,
                       const struct sl_err *err)
{
    long long now = (long long)sl_mono_ms();
    const char *why = err && err->msg[0] ? err->msg : sl_strerror(rc);
    int level = !err || err->retriable ? SL_LOG_WARN : SL_LOG_ERROR;

    if (im->warned_ms && now - im->warned_ms < 1000) {
        im->quiet++;
        SL_DEBUG(SL_DBG_SINK, im->s.inst, "write failed (attempt %u), retrying in %llu ms: %s",
                 r->attempt, (unsigned long long)delay, why);
        return;
    }
    if (im->quiet)
        sl_log(level, im->s.inst,
               "write failed (attempt %u), retrying in %llu ms: %s (%u more failed attempts "
               "since the last warning)",
               r->attempt, (unsigned long long)delay, why, im->quiet);
    else
        sl_log(level, im->s.inst, "write failed (attempt %u), retrying in %llu ms: %s",
               r->attempt, (unsigned long long)delay, why);
    im->warned_ms = now;
    im->quiet = 0;
}

static void on_rel_attempt(void *arg, int rc, const struct sl_err *err)
{
    struct reliable *r = arg;
    struct impl *im = r->im;
    uint64_t delay;
    struct timeval tv;

    if (rc == 0) {
        rel_finish(r, 0, NULL);
        return;
    }
    if (im->closing) {
        struct sl_err stop;

        sl_err_set(&stop, SL_ESTOPPED, false, "write to %s not confirmed: sink stopped (%s)",
                   im->s.inst, err && err->msg[0] ? err->msg : sl_strerror(rc));
        rel_finish(r, SL_ESTOPPED, &stop);
        return;
    }
    delay = sl_backoff_ms(r->attempt, RELIABLE_BASE_MS, RELIABLE_CAP_MS);
    r->attempt++;
    warn_retry(im, r, delay, rc, err);
    r->waiting = true;
    tv = sl__tv_ms(delay);
    evtimer_add(r->timer, &tv);
}

static void on_rel_timer(evutil_socket_t fd, short what, void *arg)
{
    struct reliable *r = arg;

    (void)fd;
    (void)what;
    rel_attempt(r);
}

static void rel_attempt(struct reliable *r)
{
    r->waiting = false;
    sl_sink_write(&r->im->s, r->json, r->len, on_rel_attempt, r);
}

void sl_sink_write_reliable(struct sl_sink *s, const char *json, size_t len,
                            sl_sink_done_fn done, void *arg)
{
    struct impl *im = impl_of(s);
    struct reliable *r = sl_calloc(1, sizeof(*r));

    r->im = im;
    r->json = sl_malloc(len + 1);
    memcpy(r->json, json, len);
    r->json[len] = '\0';
    r->len = len;
    r->done = done;
    r->arg = arg;
    r->timer = evtimer_new(s->base, on_rel_timer, r);
    if (!r->timer) {
        SL_ERROR(s->inst, "cannot create retry timer: out of memory");
        abort();
    }
    r->next = im->rel;
    if (im->rel)
        im->rel->prev = r;
    im->rel = r;
    rel_attempt(r);
}

bool sl_sink_idle(const struct sl_sink *s)
{
    const struct impl *im = (const struct impl *)s;

    return !im->rel && !im->dhead && im->busy == 0;
}

void sl_sink_free(struct sl_sink *s)
{
    struct impl *im;
    bool again;

    if (!s)
        return;
    im = impl_of(s);
    if (im->closing)
        return;
    im->closing = true;
    /* In-flight writes (plain and reliable attempts) end with SL_ESTOPPED;
     * on_rel_attempt sees `closing` and ends reliable writes too. */
    s->ops->close(s);
    s->ctx = NULL;
    do {
        struct reliable *r = im->rel;
        struct sl_err stop;

        /* deferred failures first: they end reliable attempts as well */
        again = flush_deferred(im);
        if (again || !r)
            continue;
        /* Only writes waiting for their retry timer should be left: the
         * close ended the attempts in flight. */
        if (!r->waiting)
            SL_ERROR(s->inst, "internal: a write attempt outlived the close of the sink");
        sl_err_set(&stop, SL_ESTOPPED, false,
                   "write to %s not confirmed: sink stopped after %u failed attempts", s->inst,
                   r->attempt);
        rel_finish(r, SL_ESTOPPED, &stop);
        again = true; /* the callback may have changed the lists */
    } while (again);
    if (im->busy > 0) {
        im->dead = true;
        return;
    }
    event_free(im->dev);
    free(im);
}
