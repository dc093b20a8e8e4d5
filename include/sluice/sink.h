/* sluice: sinks, where records go after their final failure (DLQ,
 * on_failure) or success (on_success).
 *
 * A write is confirmed only once it is durable. Callers that must not lose
 * a record use sl_sink_write_reliable, which retries a failed write with
 * capped exponential backoff and full jitter until it is confirmed; the
 * record's source position is held until then. */
#ifndef SLUICE_SINK_H
#define SLUICE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/pool.h"

struct sl_sink;

/* `rc` is 0 once the record is durable, else a negative SL_E* code with
 * detail in `err` (err->retriable says whether trying again may work). */
typedef void (*sl_sink_done_fn)(void *arg, int rc, const struct sl_err *err);

struct sl_sink_ops {
    const char *name;                                         /* "file", "redis", ... */
    /* Allocate s->ctx and start connecting; no blocking on the loop. */
    int  (*open)(struct sl_sink *s, struct sl_err *err);
    /* Write one record: `json` (one JSON document, no newline) is borrowed
     * until `done` runs. `done` runs exactly once, never before write returns. */
    void (*write)(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                  void *arg);
    /* Free s->ctx; writes still in flight get done(arg, SL_ESTOPPED). */
    void (*close)(struct sl_sink *s);
};

struct sl_sink {
    const struct sl_sink_ops  *ops;
    void                      *ctx;        /* the ops' own state */
    const struct sl_sink_conf *conf;       /* borrowed */
    struct event_base         *base;
    struct sl_pool            *pool;       /* for blocking work: fsync, SQLite */
    char                       inst[96];   /* "sink:<name>", the log prefix */
    uint64_t                   writes;     /* confirmed */
    uint64_t                   failures;   /* failed attempts */
};

/* ------------------------------------------------------------------ */
/* Types. Each sinks/<type>.c defines its sl_sink_type (its keys and ops);
 * sinks/registry.c lists them, one line each. The options structs are
 * here because `sluice dlq` reads them. */

/* `conf` comes first: a loaded sink's conf->type points at it. */
struct sl_sink_type {
    struct sl_conf_type       conf;
    const struct sl_sink_ops *ops;
};

extern const struct sl_sink_type sl_file_sink;
extern const struct sl_sink_type sl_redis_sink;
extern const struct sl_sink_type sl_kafka_sink;
extern const struct sl_sink_type sl_postgres_sink;
extern const struct sl_sink_type sl_sqlite_sink;

/* Every sink type, NULL-terminated (sinks/registry.c). */
extern const struct sl_conf_type *const sl_sink_types[];

/* The sink type of a loaded conf->type, NULL when it is none of them. */
const struct sl_sink_type *sl_sink_type_of(const struct sl_conf_type *t);

/* conf->opts of each type */
struct sl_file_sink_opts {
    char *path;                      /* absolute */
    bool  fsync;                     /* fsync each write before confirming */
};

struct sl_sqlite_sink_opts {
    char *path;                      /* absolute */
};

struct sl_redis_sink_opts {
    char *url;
    char *key;                       /* stream (XADD) */
};

struct sl_kafka_sink_opts {
    char *brokers;
    char *topic;
};

struct sl_pg_sink_opts {
    char *dsn;
    char *table;                     /* [schema.]table */
};

/* Open the sink `conf` describes. `conf`, `base` and `pool` are borrowed. */
int sl_sink_new(struct event_base *base, struct sl_pool *pool, const struct sl_sink_conf *conf,
                struct sl_sink **out, struct sl_err *err);

/* One attempt. */
void sl_sink_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                   void *arg);

/* Retry until durable (backoff 100 ms doubling to 30 s, full jitter),
 * logging each failure once per backoff step. `json` is copied. `done`
 * runs once with rc 0, or with SL_ESTOPPED if the sink is freed first. */
void sl_sink_write_reliable(struct sl_sink *s, const char *json, size_t len,
                            sl_sink_done_fn done, void *arg);

/* No write in flight or waiting to be retried: it can be closed without
 * failing one (a live reload closes a replaced sink then). */
bool sl_sink_idle(const struct sl_sink *s);

void sl_sink_free(struct sl_sink *s);

#endif
