/* sluice: a source fed from memory, for tests and examples. It behaves as
 * a stream or a queue (`klass`), builds {"Records":[...]} events from the
 * records' JSON, remembers the order of checkpoints, and redelivers
 * released records with their receive count raised. */
#ifndef SLUICE_MEMORY_POLLER_H
#define SLUICE_MEMORY_POLLER_H

#include "sluice/poller.h"

struct sl_source *sl_memory_source(struct sl_engine *e, const struct sl_source_conf *conf,
                                   int klass);

/* Push a record: `json` is copied; `ts_ms` 0 means now. A non-empty
 * `lane` is also the record's partition (what a composite itemIdentifier
 * names, as "<topic>-<partition>" for Kafka). */
void sl_memory_push(struct sl_source *s, const char *lane, const char *id, const char *json,
                    int64_t ts_ms);

/* Ids checkpointed so far, in order (borrowed). */
size_t sl_memory_checkpointed(const struct sl_source *s, const char *const **ids);

/* Events built so far (one per invocation attempt). */
size_t sl_memory_events(const struct sl_source *s);

#endif
