/* The sink types this build has: one line per type. Its order is the
 * order of `type`'s values in messages and of the reference's rows. */
#include <stddef.h>

#include "sluice/sink.h"

const struct sl_conf_type *const sl_sink_types[] = {
    &sl_file_sink.conf,
    &sl_redis_sink.conf,
    &sl_kafka_sink.conf,
    &sl_postgres_sink.conf,
    &sl_sqlite_sink.conf,
    NULL,
};

const struct sl_sink_type *sl_sink_type_of(const struct sl_conf_type *t)
{
    for (size_t i = 0; t && sl_sink_types[i]; i++)
        if (sl_sink_types[i] == t)
            return (const struct sl_sink_type *)t;
    return NULL;
}
