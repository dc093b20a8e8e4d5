/* The Postgres change-stream source's options: the keys of a
 * `type: postgres` source beyond the common ones (table in conf.c). */
#ifndef SLUICE_POLLERS_POSTGRES_CONF_H
#define SLUICE_POLLERS_POSTGRES_CONF_H

#include <stdint.h>

#include "sluice/config.h"
#include "sluice/pollers.h"

enum sl_pg_snapshot { SL_SNAPSHOT_NEVER = 0, SL_SNAPSHOT_INITIAL };

enum sl_pg_images { SL_IMAGES_ATTRIBUTE_VALUES = 0, SL_IMAGES_JSON };

enum sl_stream_view {
    SL_VIEW_NEW_AND_OLD_IMAGES = 0,
    SL_VIEW_NEW_IMAGE,
    SL_VIEW_OLD_IMAGE,
    SL_VIEW_KEYS_ONLY,
};

struct sl_pg_opts {
    char   *dsn;
    char   *slot;                    /* NULL: sluice_<source name> */
    char   *publication;             /* NULL: sluice_<source name> */
    struct sl_strlist tables;        /* schema.table; empty: all tables */
    int     stream_view_type;        /* enum sl_stream_view */
    int     snapshot;                /* enum sl_pg_snapshot */
    int     image_format;            /* enum sl_pg_images */
    int64_t slot_lag_warning_mb;     /* warn when the slot holds more WAL than this */
    int64_t heartbeat_interval_ms;   /* 0: no heartbeat messages */
    int64_t status_interval_ms;      /* standby status updates at least this often */
};

/* The registry entry (pollers/registry.c). */
extern const struct sl_poller_type sl__pg_poller;

static inline const struct sl_pg_opts *sl__pg_opts(const struct sl_source_conf *c)
{
    return c->opts;
}

#endif
