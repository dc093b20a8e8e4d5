/* sluice: the pollers this build has, one factory per source type.
 *
 * A factory builds the poller's state, attaches it to the engine with
 * sl_engine_add_source() and returns the source; it does no I/O. The
 * sources component (cli/run.c) then calls ops->start, which must not
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

/* A source type: its configuration keys and its poller's factory. `conf`
 * comes first: a loaded source's conf->type points at it. Each type
 * defines one in pollers/<type>/conf.c; pollers/registry.c lists them. */
struct sl_poller_type {
    struct sl_conf_type conf;
    sl_poller_factory   make;
};

/* Every source type, NULL-terminated (pollers/registry.c). */
extern const struct sl_conf_type *const sl_source_types[];

/* Every source and sink type this build has: what sl_config_load() and
 * sl_config_docs() are given by the commands, the tests and the benches. */
extern const struct sl_conf_registry sl_registry;

/* The factory for source type `t` (a loaded conf->type); NULL when `t` is
 * not one of sl_source_types. */
sl_poller_factory sl_poller_for(const struct sl_conf_type *t);

#endif
