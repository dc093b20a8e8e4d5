/* sluice: sources (event source mappings) and the shared outcome engine.
 *
 * A poller reads records from Kafka, Redis or Postgres and pushes them into
 * its source's lanes. The engine batches each lane (batch_size,
 * maximum_batching_window_ms, 6 MB), runs one batch per lane at a time, and
 * applies the delivery contract: success, partial failure
 * (batchItemFailures), function error, timeout, crash, throttle -> retry
 * with backoff and full jitter, bisect, expiry or redrive, with the on_failure
 * destination written before the records are checkpointed. A poller only
 * says how to fetch, shape an event, checkpoint and release; it never
 * retries by itself. */
#ifndef SLUICE_POLLER_H
#define SLUICE_POLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sluice/config.h"
#include "sluice/dispatch.h"
#include "sluice/sink.h"

struct sl_source;
struct sl_engine;

/* One record. The poller allocates it, the engine owns it after push
 * and hands it back through checkpoint/release, then frees it through
 * ops->free_record. */
struct sl_record {
    char    *id;             /* itemIdentifier: offset, stream id, LSN */
    const char *partition;   /* Kafka: "<topic>-<partition>", the composite itemIdentifier's
                              * {"partition":..,"offset":<id>}; NULL: none. Valid while the record is */
    char    *json;           /* this record's part of the event (JSON), owned */
    size_t   len;
    int64_t  timestamp_ms;   /* when the source got it: for maximum_record_age_s */
    int      receive_count;  /* queues: deliveries so far, this one included */
    void    *handle;         /* the poller's own, untouched by the engine */
    struct sl_record *next;  /* engine's list link */
};

enum sl_source_class {
    SL_CLASS_STREAM = 0,     /* ordered: retry the lane until success or give-up */
    SL_CLASS_QUEUE,          /* unordered: release failures, redrive after N receives */
};

struct sl_poller_ops {
    const char *name;                                       /* "kafka", "redis", "memory" */
    int         klass;                                      /* enum sl_source_class */
    int  (*start)(struct sl_source *s, struct sl_err *err);
    /* Stop fetching; call sl_source_stopped(s) when no fetch is in flight. */
    void (*stop)(struct sl_source *s);
    /* The Lambda-shaped event for records r[0..n); malloc'd JSON. */
    char *(*event)(struct sl_source *s, struct sl_record *const *r, size_t n, size_t *len);
    /* Their outcome is final (and any destination write is confirmed). */
    void (*checkpoint)(struct sl_source *s, struct sl_record *const *r, size_t n);
    /* Queues: make them deliverable again after `delay_ms`. */
    void (*release)(struct sl_source *s, struct sl_record *const *r, size_t n, int64_t delay_ms);
    /* Backpressure: stop / restart fetching. */
    void (*pause)(struct sl_source *s);
    void (*resume)(struct sl_source *s);
    void (*free_record)(struct sl_source *s, struct sl_record *r);
    void (*free)(struct sl_source *s);                      /* the poller's ctx */
    /* On-failure records: set the type's batch-info member of `rec` (Lambda's
     * "KafkaBatchInfo", "DDBStreamBatchInfo") for records r[0..n) of `lane`,
     * whose invocation payload is `payload_size` bytes. NULL: the record
     * has none. */
    void (*batch_info)(struct sl_source *s, const char *lane, struct sl_record *const *r,
                       size_t n, size_t payload_size, json_t *rec);
};

/* What the engine keeps per source; pollers use ctx and the wrappers. */
struct sl_source {
    const struct sl_poller_ops    *ops;
    void                          *ctx;       /* the poller's state */
    const struct sl_source_conf   *conf;
    const struct sl_function_conf *fn;
    struct sl_engine              *engine;
    char                           inst[96];  /* "source:<name>" */
    /* counters */
    uint64_t received, succeeded, failed_batches, retried, dead_lettered, filtered;
    size_t   pending_bytes;
    int64_t  last_ok_ms;      /* wall clock of the last batch that succeeded (0: none) */
    int64_t  last_fail_ms;    /* and of the last that failed */
    bool     paused;          /* backpressure: above the high watermark */
    bool     disabled;        /* sl_source_set_enabled(false): fetching stopped */
    bool     stopping;
    bool     fetch_stopped;   /* the poller reported sl_source_stopped() */
    struct sl__lane *lanes;
    /* retiring alone (sl_source_stop, a live reload) */
    bool     retiring;
    size_t   inflight;        /* its invocations and dead-letter writes */
    void   (*retired)(void *arg);
    void    *retired_arg;
    struct event *retired_ev; /* runs `retired` from the loop */
};

struct sl_metrics;

/* Engine: one per process, on the dispatcher. `m` may be NULL (no metrics). */
int sl_engine_new(struct event_base *base, const struct sl_config *conf, struct sl_dispatcher *d,
                  struct sl_metrics *m, struct sl_engine **out, struct sl_err *err);

/* Graceful stop: every source's ops->stop is called and no new batch
 * starts; batches in flight finish and are checkpointed as usual (the
 * poller must still accept checkpoint/release until ops->free). `done`
 * runs once every source reported sl_source_stopped() and nothing is in
 * flight. Records not yet final stay uncheckpointed: delivered again. */
void sl_engine_stop(struct sl_engine *e, void (*done)(void *arg), void *arg);

/* Frees every source (ops->free) and the records it still holds, which
 * are not checkpointed. */
void sl_engine_free(struct sl_engine *e);

/* Live reload, one source at a time. sl_source_stop is sl_engine_stop for
 * `s` alone: its poller stops fetching, no new batch of it starts, its
 * batches in flight finish and are checkpointed; `done(arg)` then runs
 * from the loop (never inside this call), and may sl_source_free(s).
 * Records fetched and not final are not checkpointed: the source (or the
 * one that replaces it) delivers them again. */
void sl_source_stop(struct sl_source *s, void (*done)(void *arg), void *arg);

/* Detach `s` from its engine and free it (ops->free) with the records it
 * still holds, unfinished. After sl_source_stop's `done`, nothing is in
 * flight; sooner, what is in flight is orphaned as on a hard stop. */
void sl_source_free(struct sl_source *s);

/* The configuration now in force: `conf` (borrowed, outlives the engine
 * or the next call) is what new sources are added from, and every source
 * now invokes its function as `conf` describes it. A source keeps the
 * sl_source_conf it was made from. */
void sl_engine_set_config(struct sl_engine *e, const struct sl_config *conf);

/* The metrics registry, NULL when the engine has none. Pollers add their
 * own families (lag, depth) with sl_metrics_family / sl_metrics_on_collect. */
struct sl_metrics *sl_engine_metrics(struct sl_engine *e);

/* The poller reports that, after ops->stop, no fetch is in flight. */
void sl_source_stopped(struct sl_source *s);

/* Attach a source; `ctx` belongs to the poller. */
struct sl_source *sl_engine_add_source(struct sl_engine *e, const struct sl_source_conf *conf,
                                       const struct sl_poller_ops *ops, void *ctx);

/* Hand over one record for `lane` (a partition, a key-hash lane, ""). */
void sl_source_push(struct sl_source *s, const char *lane, struct sl_record *r);

/* Drop the lanes named `prefix` or `prefix#...` (a Kafka partition and its
 * key-hash lanes), e.g. when a rebalance takes the partition away. Records
 * not in flight are freed at once, not checkpointed, and batches waiting
 * to retry are abandoned. A batch in flight (an invocation or its
 * on_failure write) still ends: what succeeded is checkpointed, nothing is
 * retried. `done(arg)` runs when no dropped lane has work in flight,
 * possibly before this returns; records pushed for `prefix` afterwards go
 * to fresh lanes. */
void sl_source_drop_lanes(struct sl_source *s, const char *prefix, void (*done)(void *arg),
                          void *arg);

/* Report records the source can no longer deliver (Kafka: deleted by
 * retention before they were read, or larger than an invocation payload)
 * to the source's on_failure destination, as an on-failure record with
 * no payload and no responseContext (the function never ran); they count
 * as dead-lettered. `info` is the poller's batch-info member, an object
 * such as {"KafkaBatchInfo":{...}} merged into the record (reference
 * stolen; NULL: none). `done(arg, rc)` runs once the write is confirmed
 * (rc 0) or given up (sluice stopping); at once when there is no
 * on_failure destination (logged). */
void sl_source_report_lost(struct sl_source *s, const char *lane, const char *first_id,
                           const char *last_id, size_t count, const char *condition,
                           const char *message, json_t *info, void (*done)(void *arg, int rc),
                           void *arg);

/* A lane as the console shows it; valid until the loop runs again. */
struct sl_lane_info {
    const char *key;          /* "orders-3", "orders-3#1", "stream" ... */
    size_t      waiting;      /* records queued behind the running batch */
    size_t      running;      /* records of the batch in flight or waiting to retry */
    int         attempts;     /* its failed invocations so far */
    const char *error;        /* its last error message, NULL when none */
};

/* Up to `max` of `s`'s lanes into `out`; the number it has. */
size_t sl_source_lanes(const struct sl_source *s, struct sl_lane_info *out, size_t max);

/* Records pushed but not yet final, all lanes. */
size_t sl_source_outstanding(const struct sl_source *s);

/* The retries a stream source gives a failing batch before on_failure:
 * maximum_retry_attempts, except that -1 ("until success") with an
 * on_failure destination is 10 for types with SL_CONF_RETRY_CAP (Kafka),
 * as Lambda caps them. -1: no limit. */
int64_t sl_source_max_retries(const struct sl_source_conf *c);

/* ------------------------------------------------------------------ */
/* Steering a running source (the management API, on the loop thread).
 * Settings the engine reads per batch (batch_size,
 * maximum_batching_window_ms, retries, record age, bisect,
 * report_batch_item_failures) are read from the source's
 * struct sl_source_conf each time, so writing them there on the loop
 * thread takes effect from the next batch. */

/* Stop fetching (on = false) or start again. A disabled source fetches
 * nothing more; what it already fetched still runs and is checkpointed,
 * so it then stands still with its position saved; enabling resumes from
 * there. Combined with backpressure: the poller fetches only when neither
 * holds it. */
void sl_source_set_enabled(struct sl_source *s, bool on);

/* "Enabled", "Disabling" (disabled, records still in flight) or
 * "Disabled". */
const char *sl_source_state(const struct sl_source *s);

/* The running source named `name`, NULL when it has no poller. */
struct sl_source *sl_engine_source(struct sl_engine *e, const char *name);

/* How a source that had no poller (enabled: false at start) gets one when
 * it is enabled: the poller registry's factory (sl_poller_for), given by
 * the command that wires the parts (pollers/ is above the engine). */
typedef int (*sl_engine_maker)(struct sl_engine *e, const struct sl_source_conf *c,
                               struct sl_source **out, struct sl_err *err);
void sl_engine_set_maker(struct sl_engine *e, sl_engine_maker make);

/* Make and start the poller of source `c` (which has none yet). 0, or a
 * negative SL_E* with `err` set. */
int sl_engine_start_source(struct sl_engine *e, const struct sl_source_conf *c,
                           struct sl_err *err);

/* The loop the engine runs on (for pollers' own timers). */
struct event_base *sl__engine_base(struct sl_engine *e);

/* ms (Unix) as ISO 8601 with milliseconds, "2019-11-14T00:38:04.835Z"; n >= 32. */
void sl_iso8601(int64_t ms, char *buf, size_t n);

/* {"Records":[r0,r1,...]}: the event of SQS and DynamoDB Streams shapes,
 * each record's JSON as it is; malloc'd, length in *len. */
char *sl_records_event(struct sl_record *const *r, size_t n, size_t *len);

#endif
