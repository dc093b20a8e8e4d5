/* sluice: reading, redriving and deleting what a dead-letter sink holds,
 * shared by `sluice dlq` (cli/dlq.c) and the web console's dead-letter
 * endpoints (api/console.c).
 *
 * Everything that talks to a store here is blocking (plain hiredis,
 * libpq, SQLite, stdio, each with a connect timeout): the command line
 * calls it directly, the service only from its worker pool. Classifying an
 * entry is pure. */
#ifndef SLUICE_DLQOPS_H
#define SLUICE_DLQOPS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "sluice/config.h"
#include "sluice/err.h"

/* One entry as the sink holds it. */
struct sl_dlq_entry {
    char *id;        /* stream id, row id, or line number */
    char *record;    /* JSON text */
};

struct sl_dlq_entries {
    struct sl_dlq_entry *v;
    size_t               n;
};

/* Whether entries of sink `s` can be read back (not Kafka). */
bool sl_dlq_readable(const struct sl_sink_conf *s);

/* Every entry of sink `s`, oldest first, into `e` (zeroed by the caller;
 * release with sl_dlq_entries_free, also after a failure). Blocking. */
int sl_dlq_load(const struct sl_sink_conf *s, struct sl_dlq_entries *e, struct sl_err *err);

void sl_dlq_entries_free(struct sl_dlq_entries *e);

/* Delete entry `id` from a Redis, Postgres or SQLite sink. Blocking. */
int sl_dlq_delete(const struct sl_sink_conf *s, const char *id, struct sl_err *err);

/* A file sink: rewrite it without the entries whose `drop` is set
 * (e as sl_dlq_load read it), atomically (a new file renamed over it).
 * A running sluice keeps appending to the file it opened, so this is for
 * `sluice dlq` on a stopped service only. Blocking. */
int sl_dlq_rewrite_file(const struct sl_sink_conf *s, const struct sl_dlq_entries *e,
                        const char *drop, struct sl_err *err);

/* ------------------------------------------------------------------ */
/* What an entry is                                                    */

enum sl_dlq_kind {
    SL_DLQ_UNKNOWN = 0,
    SL_DLQ_ASYNC,      /* an asynchronous invocation's destination record: requestPayload */
    SL_DLQ_BATCH,      /* a stream batch's on-failure record: its event in "payload" */
    SL_DLQ_LOST,       /* an on-failure record of records never delivered: nothing to send */
    SL_DLQ_MESSAGE,    /* a queue message redriven after max_receive_count (SQS-shaped) */
    SL_DLQ_OLD_BATCH,  /* before 0.2: the engine's envelope of a stream batch */
    SL_DLQ_OLD_QUEUE,  /* before 0.2: the envelope of a queue message ("records":[{record}]) */
};

struct sl_dlq_target {
    int     kind;                    /* enum sl_dlq_kind */
    char    fn[128];                 /* "?" when unknown */
    char    cond[64];                /* "-" when unknown */
    json_t *send;                    /* ASYNC, BATCH: the payload (borrowed from doc) */
    json_t *doc;                     /* the entry parsed, owned; NULL when not JSON */
};

/* Read one entry: what it is, its function, its condition. */
void sl_dlq_classify(const struct sl_config *c, const char *record, struct sl_dlq_target *t);
void sl_dlq_target_free(struct sl_dlq_target *t);

/* "async", "batch", "lost", "message", "old-batch", "old-queue", "unknown". */
const char *sl_dlq_kind_name(int kind);

/* What `sluice dlq list` shows of an entry: the payload, the message's
 * body or the error (malloc'd), NULL when nothing better than the record. */
char *sl_dlq_summary(const struct sl_dlq_target *t);

/* The entry's error message and attempts when it says (destination
 * records: requestContext.condition and approximateInvokeCount, a
 * batch's responsePayload errorMessage; queue messages:
 * ApproximateReceiveCount). *error borrowed from t->doc or NULL;
 * *attempts -1 when unknown. */
void sl_dlq_error(const struct sl_dlq_target *t, const char **error, long long *attempts);

/* The queue messages a MESSAGE or OLD_QUEUE entry holds (borrowed from
 * t->doc), at most `max`; their number. */
size_t sl_dlq_messages(const struct sl_dlq_target *t, json_t **msgs, size_t max);

/* The Redis queue source a message came from: the one whose key is the
 * last part of its eventSourceARN, or the one named `only`. NULL with
 * `err` set when none or several match. */
const struct sl_source_conf *sl_dlq_message_source(const struct sl_config *c, json_t *msg,
                                                   const char *only, struct sl_err *err);

/* Put one SQS-shaped message back on the queue of source `s`, as a new
 * message (its receive count starts again, as after SQS's redrive).
 * Blocking. */
int sl_dlq_requeue(const struct sl_source_conf *s, json_t *msg, struct sl_err *err);

#endif
