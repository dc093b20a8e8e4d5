/* sluice: the pollers this build has, one factory per source type.
 *
 * A factory builds the poller's state, attaches it to the engine with
 * sl_engine_add_source() and returns the source; it does no I/O. The
 * sources component (core/main.c) then calls ops->start, which must not
 * block: a broker or server that is down is retried in the background
 * with backoff and logged, it is not a start failure. Only bad settings
 * (which lint could not see) fail start. */
#ifndef SLUICE_POLLERS_H
#define SLUICE_POLLERS_H

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/poller.h"

typedef int (*sl_poller_factory)(struct sl_engine *e, const struct sl_source_conf *c,
                                 struct sl_source **out, struct sl_err *err);

int sl_kafka_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                        struct sl_source **out, struct sl_err *err);
int sl_redis_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                        struct sl_source **out, struct sl_err *err);
int sl_pg_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                     struct sl_source **out, struct sl_err *err);

/* The factory for enum sl_source_type `type`. */
sl_poller_factory sl_poller_for(int type);

#endif
