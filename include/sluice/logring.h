/* sluice: the function log ring.
 *
 * A bounded, in-process ring of the most recent function log lines (what
 * handlers print and sluice's own per-invocation lines: START, REPORT, init)
 * with their structure: time, level, function, event source, request id,
 * and the line as the JSON event the live tail sends and the log sink
 * ships. Appending never blocks and never fails: when the ring is full the
 * oldest lines make room (counted in sluice_log_lines_dropped_total
 * {reason="ring"}). Watchers (the tail's clients, the log sink) hear of
 * every line as it is added. Loop thread only. */
#ifndef SLUICE_LOGRING_H
#define SLUICE_LOGRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/metrics.h"

/* Lambda's log levels, least severe first (ApplicationLogLevel; the
 * system lines use DEBUG, INFO and WARN). */
enum sl_lvl {
    SL_LVL_TRACE = 0,
    SL_LVL_DEBUG,
    SL_LVL_INFO,
    SL_LVL_WARN,
    SL_LVL_ERROR,
    SL_LVL_FATAL,
};

/* "TRACE" ... "FATAL", NULL-terminated, in enum order. */
extern const char *const sl_lvl_names[];

/* The level s[0..n) names, any case; WARNING and CRITICAL (Python's
 * names) count as WARN and FATAL. -1 when it names none. */
int sl_lvl_parse(const char *s, size_t n);

/* One line as a producer gives it; everything is copied by sl_logring_add. */
struct sl_logline {
    int64_t     ts_ms;        /* Unix ms */
    int         level;        /* enum sl_lvl */
    const char *type;         /* "function", or a platform record's ("platform.report") */
    const char *function;
    const char *source;       /* the event source mapping that invoked, or NULL */
    const char *request_id;   /* NULL outside an invocation */
    const char *message;      /* the text; with `object`, a JSON object's text */
    bool        object;       /* `message` is a JSON object the handler wrote */
    const char *record;       /* platform lines: the record object's JSON text, or NULL */
};

/* A line as the ring keeps it. Valid until the next sl_logring_add. */
struct sl_logent {
    uint64_t    seq;          /* 1, 2, ...: its place in the ring's history */
    int64_t     ts_ms;
    int         level;
    const char *function;
    const char *source;       /* NULL when none */
    const char *request_id;   /* NULL when none */
    const char *json;         /* the event: {"timestamp","level","function","source",
                               * "requestId","type","message"[,"record"]} */
    size_t      json_len;
};

struct sl_logring;

/* A ring holding at most `cap_bytes` of lines; `m` (borrowed, may be
 * NULL) gets sluice_log_lines_dropped_total. */
struct sl_logring *sl_logring_new(size_t cap_bytes, struct sl_metrics *m);
void sl_logring_free(struct sl_logring *r);

/* Append a copy of `l` and tell the watchers. */
void sl_logring_add(struct sl_logring *r, const struct sl_logline *l);

/* The line with sequence number `seq`, or NULL when it was evicted or is
 * not there yet. */
const struct sl_logent *sl_logring_get(const struct sl_logring *r, uint64_t seq);
/* Sequence number of the oldest line held, and of the next line to come. */
uint64_t sl_logring_first(const struct sl_logring *r);
uint64_t sl_logring_next(const struct sl_logring *r);
/* Sequence number of the first line held at or after `ts_ms` (next when none). */
uint64_t sl_logring_since(const struct sl_logring *r, int64_t ts_ms);

/* Count `n` lines dropped for `reason` ("tail_client", "sink") in
 * sluice_log_lines_dropped_total. */
void sl_logring_count_drop(struct sl_logring *r, const char *reason, double n);

/* Call fn(arg, e) for every line added from now on, after it is in the
 * ring. A watcher may not add lines. */
typedef void (*sl_logring_watch_fn)(void *arg, const struct sl_logent *e);
void sl_logring_watch(struct sl_logring *r, sl_logring_watch_fn fn, void *arg);
void sl_logring_unwatch(struct sl_logring *r, sl_logring_watch_fn fn, void *arg);

/* "2024-01-02T03:04:05.678Z" for Unix ms `ms` into buf (>= 32 bytes). */
void sl_iso8601_ms(int64_t ms, char *buf, size_t n);

#endif
