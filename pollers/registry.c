/* Which poller serves which source type. */
#include "sluice/pollers.h"

sl_poller_factory sl_poller_for(int type)
{
    switch (type) {
    case SL_SOURCE_KAFKA:
        return sl_kafka_source_new;
    case SL_SOURCE_REDIS:
        return sl_redis_source_new;
    case SL_SOURCE_POSTGRES:
        return sl_pg_source_new;
    default:
        return NULL;
    }
}
