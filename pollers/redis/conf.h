/* The Redis queue source's options: the keys of a `type: redis` source
 * beyond the common ones (table in conf.c). visibility_timeout_s and
 * max_receive_count are declared there too but stored in struct
 * sl_source_conf, where the engine reads them. */
#ifndef SLUICE_POLLERS_REDIS_CONF_H
#define SLUICE_POLLERS_REDIS_CONF_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/config.h"
#include "sluice/pollers.h"

enum sl_redis_mode { SL_REDIS_STREAM = 0, SL_REDIS_LIST };

struct sl_redis_opts {
    char   *url;
    char   *key;                     /* stream or list */
    int     mode;                    /* enum sl_redis_mode */
    char   *group;                   /* stream consumer group */
    char   *consumer;                /* NULL: host name and pid */
    bool    delete_on_ack;
    int64_t maximum_concurrency;     /* lanes */
};

/* The registry entry (pollers/registry.c). */
extern const struct sl_poller_type sl__redis_poller;

static inline const struct sl_redis_opts *sl__redis_opts(const struct sl_source_conf *c)
{
    return c->opts;
}

#endif
