/* sluice: configuration.
 *
 * One YAML file: functions, sources, sinks, server, log. Every key is a row
 * in a table (config/schema.c) giving its type, default, range and
 * description; the loader, `sluice lint` and docs/CONFIGURATION.md all read
 * those tables. Loading reports every problem at once as
 * "file:line:col: message". */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* ------------------------------------------------------------------ */
/* Values                                                              */

struct sl_strlist {
    char  **v;
    size_t  n;
};

struct sl_kv {
    char *key;
    char *value;
};

struct sl_kvlist {
    struct sl_kv *v;
    size_t        n;
};

enum sl_runtime_kind { SL_RUNTIME_NATIVE = 0, SL_RUNTIME_LAMBDA };
enum sl_network_mode { SL_NETWORK_NONE = 0, SL_NETWORK_HOST };
enum sl_sandbox_mode { SL_SANDBOX_STRICT = 0, SL_SANDBOX_RELAXED };

enum sl_source_type {
    SL_SOURCE_KAFKA = 0,
    SL_SOURCE_REDIS,
    SL_SOURCE_POSTGRES,
    SL_SOURCE__COUNT,
};

enum sl_sink_type {
    SL_SINK_FILE = 0,
    SL_SINK_REDIS,
    SL_SINK_KAFKA,
    SL_SINK_POSTGRES,
    SL_SINK_SQLITE,
    SL_SINK__COUNT,
};

enum sl_starting_position {
    SL_START_TRIM_HORIZON = 0,
    SL_START_LATEST,
    SL_START_AT_TIMESTAMP,
};

enum sl_redis_mode { SL_REDIS_STREAM = 0, SL_REDIS_LIST };

enum sl_pg_snapshot { SL_SNAPSHOT_NEVER = 0, SL_SNAPSHOT_INITIAL };

enum sl_stream_view {
    SL_VIEW_NEW_AND_OLD_IMAGES = 0,
    SL_VIEW_NEW_IMAGE,
    SL_VIEW_OLD_IMAGE,
    SL_VIEW_KEYS_ONLY,
};

/* ------------------------------------------------------------------ */
/* Sections. Durations are milliseconds, sizes are in the unit the key
 * name gives (memory_mb is MB). -1 means "no limit" where documented. */

struct sl_async_conf {
    int64_t maximum_retry_attempts;  /* 0..100 */
    int64_t maximum_event_age_ms;    /* 60 s..6 h */
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    char   *on_success;              /* sink name or NULL */
    char   *on_failure;              /* sink name or NULL */
};

struct sl_function_conf {
    char   *name;
    char   *handler;                 /* absolute path, resolved against the config dir */
    int     runtime;                 /* enum sl_runtime_kind */
    int64_t memory_mb;
    int64_t timeout_ms;
    int64_t init_timeout_ms;
    int64_t ephemeral_storage_mb;
    struct sl_kvlist  environment;
    struct sl_strlist layers;        /* absolute directories */
    int     network;                 /* enum sl_network_mode */
    int     sandbox;                 /* enum sl_sandbox_mode */
    int64_t reserved_concurrency;    /* -1: draws from the unreserved pool */
    int64_t provisioned_concurrency;
    bool    snapstart;
    int64_t idle_timeout_ms;         /* reap idle envs after this */
    struct sl_async_conf async;
    int     line, col;               /* where the function is defined */
};

struct sl_source_conf {
    char   *name;
    int     type;                    /* enum sl_source_type */
    char   *function;                /* function name, checked at load */
    bool    enabled;
    int64_t batch_size;
    int64_t maximum_batching_window_ms;
    int     starting_position;       /* enum sl_starting_position */
    char   *starting_position_timestamp;
    int64_t maximum_retry_attempts;  /* -1 = until success */
    int64_t maximum_record_age_ms;   /* -1 = no limit */
    bool    bisect_batch_on_function_error;
    bool    report_batch_item_failures;
    int64_t parallelization_factor;
    json_t *filter_criteria;         /* JSON array of patterns or NULL */
    char   *on_failure;              /* sink name or NULL */
    /* kafka */
    char   *brokers;
    struct sl_strlist topics;
    char   *consumer_group_id;
    struct sl_kvlist  kafka;         /* librdkafka properties, passed through */
    /* redis */
    char   *url;
    char   *key;
    int     mode;                    /* enum sl_redis_mode */
    char   *group;
    char   *consumer;
    int64_t visibility_timeout_ms;
    int64_t max_receive_count;
    bool    delete_on_ack;
    int64_t maximum_concurrency;
    /* postgres */
    char   *dsn;
    char   *slot;
    char   *publication;
    struct sl_strlist tables;
    int     stream_view_type;        /* enum sl_stream_view */
    int     snapshot;                /* enum sl_pg_snapshot */
    int64_t slot_lag_warning_mb;     /* warn when the slot holds more WAL than this */
    int64_t heartbeat_interval_ms;   /* 0: no heartbeat messages */
    int64_t status_interval_ms;      /* standby status updates at least this often */
    int     line, col;
};

struct sl_sink_conf {
    char   *name;
    int     type;                    /* enum sl_sink_type */
    char   *path;                    /* file, sqlite: absolute */
    char   *url;                     /* redis */
    char   *key;                     /* redis */
    char   *brokers;                 /* kafka */
    char   *topic;                   /* kafka */
    char   *dsn;                     /* postgres */
    char   *table;                   /* postgres */
    bool    fsync;                   /* file: fsync each write before confirming */
    int     line, col;
};

struct sl_server_conf {
    char   *listen;                  /* host:port of the HTTP API */
    int64_t concurrency_limit;
    char   *data_dir;                /* absolute */
    int64_t shutdown_grace_ms;
    int64_t worker_threads;
    struct sl_kvlist auth;           /* API token -> "*" or "fn1,fn2"; empty: no auth */
    char   *async_queue;             /* "sqlite" or a redis:// URL (checked at load) */
    char   *async_queue_key;         /* redis: stream key */
    int64_t async_queue_reclaim_ms;  /* redis: idle time before another instance takes over */
};

struct sl_log_conf {
    int      level;                  /* enum sl_log_level */
    int      format;                 /* enum sl_log_format */
    unsigned debug;                  /* bitmask of enum sl_log_ctx */
    struct sl_strlist debug_names;
};

struct sl_config {
    char *path;                      /* as given */
    char *dir;                       /* directory relative paths resolve against */
    struct sl_function_conf *functions;
    size_t                   nfunctions;
    struct sl_source_conf   *sources;
    size_t                   nsources;
    struct sl_sink_conf     *sinks;
    size_t                   nsinks;
    struct sl_server_conf    server;
    struct sl_log_conf       log;
};

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */

struct sl_diag {
    int    line, col;                /* 1-based; 0 when not tied to a place */
    size_t seq;                      /* insertion order, keeps sorting stable */
    char  *msg;
};

struct sl_diags {
    char           *file;            /* name used in messages */
    struct sl_diag *v;
    size_t          n;
};

void sl_diags_init(struct sl_diags *d, const char *file);
void sl_diags_destroy(struct sl_diags *d);
void sl_diags_add(struct sl_diags *d, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sort by place, then print one "file:line:col: message" line each. */
void sl_diags_print(struct sl_diags *d, FILE *out);

/* ------------------------------------------------------------------ */
/* Loading                                                             */

/* Read, interpolate, validate. On success returns 0 and stores a config
 * the caller owns (sl_config_free) in *out. On failure returns SL_ECONFIG
 * with every problem in `d` (which the caller initialised and owns) and
 * leaves *out untouched. */
int sl_config_load(const char *path, struct sl_config **out, struct sl_diags *d);

/* Same, from memory; `dir` is what relative paths resolve against. */
int sl_config_load_buffer(const char *name, const char *dir, const char *buf,
                          size_t len, struct sl_config **out, struct sl_diags *d);

void sl_config_free(struct sl_config *c);

const struct sl_function_conf *sl_config_function(const struct sl_config *c, const char *name);
const struct sl_sink_conf *sl_config_sink(const struct sl_config *c, const char *name);

/* Names of the enums, for logs ("kafka", "redis", ...). */
const char *sl_source_type_name(int type);
const char *sl_sink_type_name(int type);

/* Write the Markdown reference (docs/CONFIGURATION.md) generated from the
 * key tables. */
void sl_config_docs(FILE *out);

#endif
