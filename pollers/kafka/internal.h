/* The Kafka poller's pieces: consumer (consumer.c), records and events
 * (record.c), per-partition offset bookkeeping (offsets.c). Everything
 * runs on the loop thread; librdkafka's own threads only wake the loop. */
#ifndef SLUICE_KAFKA_INTERNAL_H
#define SLUICE_KAFKA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "sluice/poller.h"

struct sl_filter;

/* One partition this consumer has (or had) assigned. */
struct kpart {
    const char *topic;            /* the configured topic's name (borrowed) */
    int32_t     partition;
    char        lane[320];        /* "<topic>-<partition>": the engine lane and records key */
    uint32_t    gen;              /* bumped at each assign and release: stale records are ignored */
    bool        assigned;
    bool        revoking;         /* being released: nothing new is pushed */
    bool        full;             /* too many of its records are outstanding: not drained */
    bool        stuck;            /* full with no record final for STUCK_MS: paused */
    int64_t     since_ms;         /* full since, or last record final since (monotonic) */
    /* offsets: `pend` is a ring of the offsets pushed (or reported lost)
     * and not yet final, in increasing order; `done` marks the ones that
     * finished out of order. The committable position is the first
     * unfinished offset, else the one after the last record seen. */
    int64_t    *pend;
    uint8_t    *done;
    size_t      head, n, cap;
    int64_t     next;             /* offset after the last record seen, -1 before any */
    int64_t     stored;           /* last position handed to librdkafka, -1 none */
    int64_t     lost_from;        /* an out-of-range reset skipped from here, -1 none */
    int64_t     last_ts;          /* timestamp of the last checkpointed record (iterator age) */
    size_t      outstanding;      /* records pushed and not freed by the engine */
    size_t      out_bytes;        /* and their JSON bytes */
};

/* A record as the engine sees it, plus where it came from. Allocated
 * with its JSON right after it (sl__kr_new): one free releases both. */
struct krec {
    struct sl_record r;           /* first: the engine's pointer is ours */
    struct kpart    *p;
    uint32_t         gen;
    int64_t          offset;
    char             id[24];      /* r.id points here */
};

/* offsets.c */
void sl__kp_track(struct kpart *p, int64_t offset);
void sl__kp_finish(struct kpart *p, int64_t offset);
int64_t sl__kp_position(const struct kpart *p);
void sl__kp_reset(struct kpart *p);
void sl__kp_free(struct kpart *p);

/* record.c: the record for `m` with its part of the event as JSON (r.json,
 * r.len), r.id, r.timestamp_ms and offset set; the rest zero. */
struct krec *sl__kr_new(const rd_kafka_message_t *m);
/* The whole SelfManagedKafka event for r[0..n) (one partition). */
char *sl__kr_event(const char *bootstrap_json, struct sl_record *const *r, size_t n, size_t *len);
/* True when the record passes `f`: matched against the record's JSON with
 * "value" (parse_value) and "key" (parse_key) decoded: parsed when JSON,
 * the plain string when UTF-8 text, left out otherwise. "value" is left
 * out too when no pattern reads it; "key" then stays base64. */
bool sl__kr_filter_pass(const struct sl_filter *f, bool parse_value, bool parse_key,
                        const char *json, size_t len, const rd_kafka_message_t *m);
/* A JSON string literal (quotes included) for `s`, malloc'd. */
char *sl__kr_json_string(const char *s);

/* Lambda's KafkaBatchInfo for offsets first..last of `partition`
 * ("<topic>-<p>"), as {"KafkaBatchInfo":{...}}: a new reference.
 * Timestamps (Unix ms) < 0 and a payload_size of 0 are unknown: left out. */
json_t *sl__kr_batch_info(const char *brokers, const char *partition, const char *first,
                          const char *last, int64_t first_ts, int64_t last_ts, size_t n,
                          size_t payload_size);

#endif
