/* The source types this build has: one line per type. Its order is the
 * order of `type`'s values in messages and of the reference's rows. */
#include <stddef.h>

#include "sluice/pollers.h"
#include "sluice/sink.h"

#include "kafka/conf.h"
#include "postgres/conf.h"
#include "redis/conf.h"

const struct sl_conf_type *const sl_source_types[] = {
    &sl__kafka_poller.conf,
    &sl__redis_poller.conf,
    &sl__pg_poller.conf,
    NULL,
};

const struct sl_conf_registry sl_registry = {
    .sources = sl_source_types,
    .sinks = sl_sink_types,
};

sl_poller_factory sl_poller_for(const struct sl_conf_type *t)
{
    for (size_t i = 0; t && sl_source_types[i]; i++)
        if (sl_source_types[i] == t)
            return ((const struct sl_poller_type *)t)->make;
    return NULL;
}
