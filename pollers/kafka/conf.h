/* The Kafka source's options: the keys of a `type: kafka` source beyond
 * the common ones (table in conf.c). */
#ifndef SLUICE_POLLERS_KAFKA_CONF_H
#define SLUICE_POLLERS_KAFKA_CONF_H

#include "sluice/config.h"
#include "sluice/pollers.h"

struct sl_kafka_opts {
    char             *brokers;            /* bootstrap servers */
    struct sl_strlist topics;
    char             *consumer_group_id;  /* NULL: sluice-<source name> */
    struct sl_kvlist  kafka;              /* librdkafka properties, passed through */
};

/* The registry entry (pollers/registry.c). */
extern const struct sl_poller_type sl__kafka_poller;

static inline const struct sl_kafka_opts *sl__kafka_opts(const struct sl_source_conf *c)
{
    return c->opts;
}

#endif
