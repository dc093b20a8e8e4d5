/* sluice: configuration.
 *
 * One YAML file: functions, sources, sinks, server, log. Every key is a row
 * in a table giving its type, default, range and description: config/schema.c
 * holds the common ones, each source and sink type its own (registered in
 * pollers/registry.c and sinks/registry.c). The loader, `sluice lint` and
 * docs/CONFIGURATION.md all read those tables. Loading reports every problem at once as
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

enum sl_runtime_kind { SL_RUNTIME_NATIVE = 0, SL_RUNTIME_LAMBDA, SL_RUNTIME_PYTHON };
enum sl_fn_log_format { SL_FN_LOG_TEXT = 0, SL_FN_LOG_JSON };
enum sl_network_mode { SL_NETWORK_NONE = 0, SL_NETWORK_HOST };
enum sl_sandbox_mode { SL_SANDBOX_STRICT = 0, SL_SANDBOX_RELAXED };

enum sl_starting_position {
    SL_START_TRIM_HORIZON = 0,
    SL_START_LATEST,
    SL_START_AT_TIMESTAMP,
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

struct sl_server_conf;

struct sl_function_conf {
    char   *name;
    char   *handler;                 /* native: absolute path, resolved against the config
                                      * dir; python: "module.function" as written */
    int     runtime;                 /* enum sl_runtime_kind */
    char   *code;                    /* python: the code directory (absolute), else NULL */
    int     log_format;              /* enum sl_fn_log_format: AWS_LAMBDA_LOG_FORMAT */
    char   *log_level;               /* deprecated name of application_log_level, or NULL */
    char   *application_log_level;   /* TRACE..FATAL (JSON only), or NULL: log_level,
                                      * else INFO (sandbox: sl__fnlog_app_level) */
    char   *system_log_level;        /* DEBUG, INFO, WARN (JSON only), or NULL: INFO */
    char   *log_sink;                /* sink shipping this function's logs, or NULL:
                                      * server.log_sink */
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
    int64_t output_kb_per_s;         /* handler output logged per env and second, KB */
    struct sl_async_conf async;
    char   *arn;                     /* arn:aws:lambda:<region>:<account>:function:<name> */
    const struct sl_server_conf *server; /* the configuration's server section */
    int     line, col;               /* where the function is defined */
};

struct sl_conf_type;

/* sources.<name>: the keys every source has. The type's own keys live in
 * `opts`, a struct its poller declares (pollers/<type>/). */
struct sl_source_conf {
    char   *name;
    const struct sl_conf_type *type; /* from the registry the loader was given */
    char   *function;                /* function name, checked at load */
    bool    enabled;
    int64_t batch_size;
    int64_t maximum_batching_window_ms;
    int     starting_position;       /* enum sl_starting_position */
    char   *starting_position_timestamp; /* types with SL_CONF_AT_TIMESTAMP */
    int64_t maximum_retry_attempts;  /* -1 = until success; streams */
    int64_t maximum_record_age_ms;   /* -1 = no limit; streams */
    bool    bisect_batch_on_function_error;
    bool    report_batch_item_failures;
    int64_t parallelization_factor;
    json_t *filter_criteria;         /* JSON array of patterns or NULL */
    char   *on_failure;              /* sink name or NULL */
    /* queue settings the engine applies; declared by queue types with
     * SL_CK_BASE keys (redis: visibility_timeout_s, max_receive_count) */
    int64_t visibility_timeout_ms;
    int64_t max_receive_count;
    void   *opts;                    /* type->size bytes, owned by the config */
    const struct sl_server_conf *server; /* the configuration's server section */
    int     line, col;
};

/* sinks.<name>: the type and its options (a struct in include/sluice/sink.h). */
struct sl_sink_conf {
    char   *name;
    const struct sl_conf_type *type;
    void   *opts;                    /* type->size bytes, owned by the config */
    int     line, col;
};

/* What a server.auth credential may do ("scopes"). */
#define SL_SCOPE_INVOKE 0x1   /* the Invoke API */
#define SL_SCOPE_READ   0x2   /* the management API's reads */
#define SL_SCOPE_ADMIN  0x4   /* its writes (runtime overrides); implies read */

struct sl_server_conf {
    char   *listen;                  /* host:port of the HTTP API */
    int64_t concurrency_limit;
    char   *data_dir;                /* absolute */
    int64_t shutdown_grace_ms;
    int64_t worker_threads;
    /* server.auth in normal form (config/schema.c): {"<token or access key id>":
     * {"functions": "*" | "fn1,fn2", "secret": "<secret access key>" (key pairs),
     *  "scopes": SL_SCOPE_* bits, "pos": <1-based position>}}; NULL or empty: no
     * authentication */
    json_t *auth;
    char   *metrics_auth;            /* bearer token /metrics requires; NULL: open */
    int64_t max_connections;         /* HTTP connections open at once */
    int64_t header_timeout_ms;       /* to receive a request line and headers */
    int64_t body_timeout_ms;         /* to receive a body once the headers are in */
    char   *async_queue;             /* "sqlite" or a redis:// URL (checked at load) */
    char   *async_queue_key;         /* redis: stream key */
    int64_t async_queue_reclaim_ms;  /* redis: idle time before another instance takes over */
    int64_t sandbox_uid_base;        /* function i runs as uid/gid sandbox_uid_base + i */
    char   *region;                  /* in every ARN, awsRegion and AWS_REGION */
    char   *account_id;              /* twelve digits, in every ARN */
    char   *log_sink;                /* sink shipping every function's logs, or NULL */
    int64_t log_ring_kb;             /* the function log ring's size (live tail) */
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
/* Key tables. Each source and sink type declares its own keys with these
 * (pollers/<type>/conf.c, sinks/<type>.c); the loader, `sluice lint` and
 * docs/CONFIGURATION.md read them through a struct sl_conf_registry. */

enum sl_conf_kind {
    SL_CK_STRING = 0,  /* char *, non-empty */
    SL_CK_PATH,        /* char *, resolved against the config directory */
    SL_CK_INT,         /* int64_t */
    SL_CK_BOOL,        /* bool */
    SL_CK_DURATION,    /* int64_t milliseconds; bare numbers are in `unit` ms */
    SL_CK_SIZE,        /* int64_t in units of `unit` bytes ("256MB", "1GB") */
    SL_CK_ENUM,        /* int, index into `enums` */
    SL_CK_STRLIST,     /* struct sl_strlist; a single scalar is a one-item list */
    SL_CK_PATHLIST,    /* struct sl_strlist of resolved paths */
    SL_CK_MAP,         /* struct sl_kvlist of scalar to scalar */
    SL_CK_OBJECT,      /* nested table at `off` (config/ only) */
    SL_CK_JSON,        /* json_t *, any YAML subtree */
};

#define SL_CK_REQUIRED 0x01u  /* must be present (for every type the key applies to) */
#define SL_CK_REF_FUNC 0x02u  /* names a function */
#define SL_CK_REF_SINK 0x04u  /* names a sink */
#define SL_CK_NEG1     0x08u  /* -1 is accepted as "no limit" besides the range */
#define SL_CK_BASE     0x10u  /* a type's key stored in struct sl_source_conf (`off` is
                               * offsetof there), for settings the engine reads; numbers
                               * and booleans only (nothing to free) */
#define SL_CK_TYPE     0x20u  /* the `type` selector: values are the registry's names */

/* Traits of a source type. Common source keys with `traits` set apply to
 * the types that have one of those traits. */
#define SL_CONF_STREAM       0x01u  /* retried in order: retries, record age, bisect, parallelism */
#define SL_CONF_QUEUE        0x02u  /* messages redelivered after a visibility timeout */
#define SL_CONF_AT_TIMESTAMP 0x04u  /* can start at a time (starting_position AT_TIMESTAMP) */
#define SL_CONF_RETRY_CAP    0x08u  /* maximum_retry_attempts -1 with on_failure means 10, as
                                     * Lambda caps Kafka's */
#define SL_CONF_START        0x10u  /* reads starting_position (Postgres does not: its slot
                                     * is the position) */

struct sl_conf_load;             /* one load in progress (opaque) */
struct sl_conf_key;
struct sl__ctable;
struct yaml_node_s;              /* libyaml's yaml_node_t */

/* Extra validation of one value after it was stored in `field`. Report
 * problems with sl_conf_error(); returns nothing. */
typedef void (*sl_conf_check)(struct sl_conf_load *ld, const struct sl_conf_key *k,
                              void *field, struct yaml_node_s *node);

/* One configuration key. */
struct sl_conf_key {
    const char  *name;
    int          type;               /* enum sl_conf_kind */
    const char  *def;                /* default in YAML text, NULL: none */
    int64_t      min, max;           /* range in key units; min == max: unbounded */
    int64_t      unit;               /* DURATION: ms per unit; SIZE: bytes per unit */
    const char *const *enums;        /* ENUM: NULL-terminated */
    size_t       off;                /* offsetof into the section (or options) struct */
    unsigned     flags;              /* SL_CK_* */
    unsigned     traits;             /* common source keys: SL_CONF_* the type needs; 0: all */
    const struct sl__ctable *sub;    /* OBJECT */
    sl_conf_check check;
    const char  *desc;
};

/* A common key's default that differs for one type ("batch_size", "10"). */
struct sl_conf_default {
    const char *key;
    const char *value;
};

/* A common key a type refuses, and why: `sluice lint` says so. */
struct sl_conf_refusal {
    const char *key;
    const char *why;
};

/* One source or sink type: its name (the value of `type`), its own keys
 * and the options struct they fill. */
struct sl_conf_type {
    const char               *name;
    unsigned                  traits;    /* SL_CONF_* (sources) */
    const struct sl_conf_key *keys;      /* `off` is into the options struct */
    size_t                    nkeys;
    size_t                    size;      /* of the options struct, 0: none */
    const struct sl_conf_default *defaults; /* ends with a NULL key; NULL: none */
    const struct sl_conf_refusal *refusals; /* ends with a NULL key; NULL: none */
    /* Sources: add to `out` the members of Lambda's
     * EventSourceMappingConfiguration that name source `c`, as its events
     * name it (EventSourceArn; Kafka's SelfManagedEventSource and Topics).
     * NULL: none. */
    void (*describe)(const struct sl_source_conf *c, json_t *out);
};

/* The types a build has, in documentation order; NULL-terminated arrays. */
struct sl_conf_registry {
    const struct sl_conf_type *const *sources;
    const struct sl_conf_type *const *sinks;
};

/* Report a problem with the value at `node` (NULL: no place), prefixed
 * with the key path being loaded. For check hooks. */
void sl_conf_error(struct sl_conf_load *ld, struct yaml_node_s *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A check hook for a key holding a redis:// URL (sources, sinks): the
 * parser's message, with the password masked, when it is not one. */
void sl_conf_check_redis_url(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                             struct yaml_node_s *node);

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
int sl_config_load(const char *path, const struct sl_conf_registry *reg,
                   struct sl_config **out, struct sl_diags *d);

/* Same, from memory; `dir` is what relative paths resolve against. */
int sl_config_load_buffer(const char *name, const char *dir, const char *buf,
                          size_t len, const struct sl_conf_registry *reg,
                          struct sl_config **out, struct sl_diags *d);

void sl_config_free(struct sl_config *c);

const struct sl_function_conf *sl_config_function(const struct sl_config *c, const char *name);
const struct sl_sink_conf *sl_config_sink(const struct sl_config *c, const char *name);

/* A type's name for logs ("kafka", "redis", ...); "?" for NULL. */
const char *sl_conf_type_name(const struct sl_conf_type *t);

/* Write the Markdown reference (docs/CONFIGURATION.md) generated from the
 * key tables of config/ and of the registry's types. */
void sl_config_docs(FILE *out, const struct sl_conf_registry *reg);

#endif
