/* Kafka sink: a librdkafka idempotent producer (acks=all) writing each
 * record as one message to conf->topic; a write is confirmed in its
 * delivery report.
 *
 * librdkafka runs its own threads; we only call into it on the loop.
 * Its main queue (delivery reports, errors, logs) writes a byte into a
 * pipe when it becomes non-empty (rd_kafka_queue_io_event_enable); a
 * libevent read event on the pipe serves it with rd_kafka_poll(rk, 0),
 * and a 100 ms timer does the same as a safety net.
 *
 * Callbacks run inside rd_kafka_poll, and a callback may free the sink:
 * the context stays alive until poll returns (`busy`), and librdkafka is
 * never destroyed from inside its own poll. A fatal producer error (the
 * idempotence guarantee is lost) rebuilds the producer. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "sluice/kafka.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

static const struct sl_kafka_sink_opts *opts_of(const struct sl_sink *s)
{
    return s->conf->opts;
}

#define TICK_MS          100
#define CLOSE_FLUSH_MS   2000
#define MSG_TIMEOUT_MS   "30000"

struct kctx;

struct kwrite {
    struct kctx     *c;
    sl_sink_done_fn  done;      /* NULL once reported */
    void            *arg;
    struct kwrite   *prev, *next;
};

struct kctx {
    struct sl_sink    *s;
    rd_kafka_t        *rk;          /* NULL while it cannot be built */
    rd_kafka_queue_t  *mainq;
    int                pipefd[2];   /* main queue wake-ups */
    struct event      *ev_wake;
    struct event      *ev_tick;
    struct kwrite     *head;        /* produced, no delivery report yet */
    char               why[SL_ERR_MSG_MAX];    /* last producer problem */
    int                busy;        /* inside rd_kafka_poll or a close */
    bool               closed;
    bool               fatal;       /* rebuild the producer after this poll */
};

static void w_unlink(struct kctx *c, struct kwrite *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        c->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* ------------------------------------------------------------------ */
/* librdkafka callbacks (inside rd_kafka_poll, on the loop)            */

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kwrite *w = m->_private;
    struct kctx *c = opaque;
    sl_sink_done_fn done;
    struct sl_err err;
    int rc = 0;

    (void)rk;
    if (!w)
        return;
    w_unlink(c, w);
    done = w->done;
    if (done && !c->closed) {
        if (m->err) {
            bool retriable = m->err != RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
            rc = sl_err_set(&err, SL_EIO, retriable, "cannot produce to topic %s: %s",
                            opts_of(c->s)->topic, rd_kafka_err2str(m->err));
        }
        sl__sink_done(c->s, done, w->arg, rc, rc ? &err : NULL);
    }
    free(w);
}

static void on_error(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
    struct kctx *c = opaque;
    char buf[256];

    if (c->closed)
        return;
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));

        snprintf(c->why, sizeof(c->why), "fatal producer error: %s: %s", rd_kafka_err2name(orig),
                 buf);
        SL_ERROR(c->s->inst, "%s; rebuilding the producer", c->why);
        c->fatal = true;
        return;
    }
    snprintf(c->why, sizeof(c->why), "%s", reason);
    SL_WARN(c->s->inst, "kafka: %s", reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct kctx *c = rd_kafka_opaque(rk);

    if (!c || c->closed)
        return;
    if (level <= 2)
        SL_ERROR(c->s->inst, "kafka %s: %s", fac, buf);
    else
        SL_DEBUG(SL_DBG_KAFKA, c->s->inst, "kafka %s: %s", fac, buf);
}

/* ------------------------------------------------------------------ */
/* producer                                                            */

static int conf_set(rd_kafka_conf_t *kc, const char *k, const char *v, struct sl_sink *s,
                    struct sl_err *err)
{
    char why[768];

    if (sl_kafka_conf_set(kc, k, v, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "cannot configure %s: %s", s->inst, why);
    return 0;
}

static int producer_new(struct kctx *c, struct sl_err *err)
{
    struct sl_sink *s = c->s;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char errstr[512], client_id[128];
    int rc;

    snprintf(client_id, sizeof(client_id), "sluice-%s", s->conf->name ? s->conf->name : "sink");
    if ((rc = conf_set(kc, "bootstrap.servers", opts_of(s)->brokers, s, err)) ||
        (rc = conf_set(kc, "client.id", client_id, s, err)) ||
        (rc = conf_set(kc, "acks", "all", s, err)) ||
        (rc = conf_set(kc, "enable.idempotence", "true", s, err)) ||
        (rc = conf_set(kc, "linger.ms", "5", s, err)) ||
        (rc = conf_set(kc, "message.timeout.ms", MSG_TIMEOUT_MS, s, err)) ||
        (rc = conf_set(kc, "log.queue", "true", s, err))) {
        rd_kafka_conf_destroy(kc);
        return rc;
    }
    rd_kafka_conf_set_dr_msg_cb(kc, on_dr);
    rd_kafka_conf_set_error_cb(kc, on_error);
    rd_kafka_conf_set_log_cb(kc, on_log);
    rd_kafka_conf_set_opaque(kc, c);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
    if (!c->rk) {
        rd_kafka_conf_destroy(kc);
        return sl_err_set(err, SL_ECONFIG, false, "cannot create kafka producer for %s: %s",
                          s->inst, errstr);
    }
    rd_kafka_set_log_queue(c->rk, NULL); /* logs through the main queue */
    c->mainq = rd_kafka_queue_get_main(c->rk);
    rd_kafka_queue_io_event_enable(c->mainq, c->pipefd[1], "1", 1);
    c->fatal = false;
    return 0;
}

/* Purge, collect the remaining reports (writes already reported only get
 * freed), destroy. Not from inside rd_kafka_poll. */
static void producer_destroy(struct kctx *c)
{
    if (!c->rk)
        return;
    rd_kafka_purge(c->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    c->busy++;
    rd_kafka_poll(c->rk, 0);
    c->busy--;
    rd_kafka_queue_io_event_enable(c->mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->mainq);
    c->mainq = NULL;
    rd_kafka_destroy(c->rk);
    c->rk = NULL;
    /* reports that never came: nothing calls back into these any more */
    while (c->head) {
        struct kwrite *w = c->head;

        w_unlink(c, w);
        free(w);
    }
}

static void kctx_free(struct kctx *c)
{
    producer_destroy(c);
    if (c->ev_wake)
        event_free(c->ev_wake);
    if (c->ev_tick)
        event_free(c->ev_tick);
    if (c->pipefd[0] >= 0)
        close(c->pipefd[0]);
    if (c->pipefd[1] >= 0)
        close(c->pipefd[1]);
    free(c);
}

/* Report every write without a report yet; keep the records linked for
 * producer_destroy. Stops early when a callback closed the sink (the close
 * reported the rest). */
static void fail_inflight(struct kctx *c, int code, bool retriable, const char *why)
{
    struct sl_err err;

    sl_err_set(&err, code, retriable, "cannot produce to topic %s: %s", opts_of(c->s)->topic, why);
    for (struct kwrite *w = c->head; w && !c->closed; w = w->next) {
        sl_sink_done_fn done = w->done;

        if (!done)
            continue;
        w->done = NULL;
        sl__sink_done(c->s, done, w->arg, code, &err);
    }
}

/* After a fatal error: fail what is in flight (retriable: the reliable
 * layer produces it again) and start over with a new producer. */
static void rebuild(struct kctx *c)
{
    struct sl_err err;
    char why[SL_ERR_MSG_MAX];

    snprintf(why, sizeof(why), "%s", c->why);
    fail_inflight(c, SL_EIO, true, why);
    if (c->closed)
        return;
    producer_destroy(c);
    if (producer_new(c, &err) != 0) {
        snprintf(c->why, sizeof(c->why), "%s", err.msg);
        SL_ERROR(c->s->inst, "%s", err.msg);
        c->fatal = true; /* try again on the next tick */
    }
}

static void kpoll(struct kctx *c)
{
    c->busy++;
    if (c->rk)
        rd_kafka_poll(c->rk, 0);
    if (c->fatal && !c->closed)
        rebuild(c);
    if (--c->busy == 0 && c->closed)
        kctx_free(c);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    kpoll(arg);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kpoll(arg);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static int kafka_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_kafka_sink_opts *conf = s->conf->opts;
    struct kctx *c;
    struct timeval tv = sl__tv_ms(TICK_MS);
    int rc;

    if (!conf->brokers || !conf->brokers[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: kafka sink needs brokers",
                          s->inst);
    if (!conf->topic || !conf->topic[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: kafka sink needs a topic",
                          s->inst);
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    c->pipefd[0] = c->pipefd[1] = -1;
    if (pipe2(c->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot open %s: cannot create pipe: %s", s->inst,
                        strerror(errno));
        goto fail;
    }
    c->ev_wake = event_new(s->base, c->pipefd[0], EV_READ | EV_PERSIST, on_wake, c);
    c->ev_tick = event_new(s->base, -1, EV_PERSIST, on_tick, c);
    if (!c->ev_wake || !c->ev_tick) {
        rc = sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create events", s->inst);
        goto fail;
    }
    rc = producer_new(c, err);
    if (rc != 0)
        goto fail;
    event_add(c->ev_wake, NULL);
    event_add(c->ev_tick, &tv);
    s->ctx = c;
    SL_INFO(s->inst, "producing to topic %s at %s", conf->topic, conf->brokers);
    return 0;

fail:
    kctx_free(c);
    return rc;
}

static void kafka_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                        void *arg)
{
    struct kctx *c = s->ctx;
    struct kwrite *w;
    rd_kafka_resp_err_t e;
    struct sl_err err;

    if (!c->rk || c->fatal) {
        sl_err_set(&err, SL_EIO, true, "cannot produce to topic %s: %s", opts_of(s)->topic,
                   c->why[0] ? c->why : "no producer");
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    w = sl_calloc(1, sizeof(*w));
    w->c = c;
    w->done = done;
    w->arg = arg;
    e = rd_kafka_producev(c->rk, RD_KAFKA_V_TOPIC(opts_of(s)->topic),
                          RD_KAFKA_V_VALUE((void *)json, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(w),
                          RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        free(w);
        if (e == RD_KAFKA_RESP_ERR__FATAL)
            c->fatal = true; /* the next poll rebuilds */
        sl_err_set(&err, SL_EIO,
                   e != RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && e != RD_KAFKA_RESP_ERR__INVALID_ARG,
                   "cannot produce to topic %s: %s", opts_of(s)->topic, rd_kafka_err2str(e));
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    w->next = c->head;
    if (c->head)
        c->head->prev = w;
    c->head = w;
}

static void kafka_close(struct sl_sink *s)
{
    struct kctx *c = s->ctx;
    struct sl_err err;

    if (!c)
        return;
    c->busy++;
    /* Give what is in flight a short, bounded chance to land. Not from
     * inside rd_kafka_poll (a delivery report freed the sink). */
    if (c->rk && c->busy == 1 && rd_kafka_outq_len(c->rk) > 0) {
        rd_kafka_resp_err_t e = rd_kafka_flush(c->rk, CLOSE_FLUSH_MS);

        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            SL_WARN(s->inst, "closing with %d messages undelivered after %d ms",
                    rd_kafka_outq_len(c->rk), CLOSE_FLUSH_MS);
    }
    c->closed = true;
    sl_err_set(&err, SL_ESTOPPED, false, "produce to topic %s not confirmed: sink stopped",
               opts_of(s)->topic);
    for (struct kwrite *w = c->head; w; w = w->next) {
        sl_sink_done_fn done = w->done;

        if (!done)
            continue;
        w->done = NULL;
        sl__sink_done(s, done, w->arg, SL_ESTOPPED, &err);
    }
    event_del(c->ev_wake);
    event_del(c->ev_tick);
    s->ctx = NULL;
    if (--c->busy == 0)
        kctx_free(c);
}

static const struct sl_sink_ops kafka_ops = {
    .name = "kafka",
    .open = kafka_open,
    .write = kafka_write,
    .close = kafka_close,
};

/* ------------------------------------------------------------------ */
/* Configuration: the keys of a `type: kafka` sink                        */

#define F(field) offsetof(struct sl_kafka_sink_opts, field)
static const struct sl_conf_key kafka_keys[] = {
    { .name = "brokers", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(brokers),
      .desc = "Bootstrap servers." },
    { .name = "topic", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(topic),
      .desc = "Topic the records are produced to." },
};
#undef F

const struct sl_sink_type sl_kafka_sink = {
    .conf = {
        .name = "kafka",
        .keys = kafka_keys,
        .nkeys = sizeof(kafka_keys) / sizeof(kafka_keys[0]),
        .size = sizeof(struct sl_kafka_sink_opts),
    },
    .ops = &kafka_ops,
};
