/* sluice command line: what the commands share. Private to cli/. */
#ifndef SLUICE_CLI_INTERNAL_H
#define SLUICE_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/config.h"

#ifndef SL_VERSION
#define SL_VERSION "0.0.0-dev"
#endif

/* Exit codes, documented in `sluice help`. */
#define EXIT_OK     0
#define EXIT_FAIL   1   /* invalid configuration, or the service failed */
#define EXIT_USAGE  2   /* bad command line */

/* Load `path`, printing every problem to stderr as file:line:col. 0 and a
 * config the caller frees, or nonzero. (lint.c) */
int sl__cli_load(const char *path, struct sl_config **c);

struct sl_overrides;

/* Read data_dir's runtime overrides for `c` and check them (the
 * management API's writes): 0 with *out (the caller frees), or -1 with
 * every problem printed to stderr. (lint.c) */
int sl__cli_overrides(const char *path, const struct sl_config *c, struct sl_overrides **out);

/* Apply the file's log settings to the process's log. (lint.c) */
void sl__cli_log_setup(const struct sl_config *c);
#define SL__LOG_QUEUE   (4u << 20)  /* bytes of log lines waiting for the writer thread */
#define SL__LOG_STOP_MS 2000        /* at exit, wait this long for a slow stderr */

/* ------------------------------------------------------------------ */
/* The running service (run.c wires it, reload.c swaps configurations)  */

struct sl_runtime;
struct sl_functions;
struct sl_metrics;
struct sl_metric;
struct sl_dispatcher;
struct sl_api;
struct sl_engine;
struct sl_logring;
struct sl_logship;
struct sl_source;
struct sl_source_conf;
struct sl_err;
struct event;

/* One source name, running or draining. */
struct sl__slot {
    struct sl__service          *svc;
    char                        *name;
    struct sl_source            *s;     /* running or draining; NULL: none */
    const struct sl_source_conf *sc;    /* what `s` runs */
    const struct sl_source_conf *next;  /* start this once `s` is gone (NULL: nothing) */
    bool                         draining;
};

/* A configuration no longer in force that something may still read. */
struct sl__gen {
    struct sl_config *conf;
    struct sl__gen   *next;
};

struct sl__service {
    struct sl_runtime     *rt;
    char                  *path;        /* the file `sluice run` was given */
    struct sl_config      *conf;        /* in force */
    struct sl__gen        *old;         /* retired, freed once nothing reads them */
    struct event          *gc;          /* looks for those */
    struct sl_functions   *fns;
    struct sl_metrics     *metrics;
    struct sl_dispatcher  *d;
    struct sl_api         *api;
    struct sl_engine      *engine;
    struct sl_overrides   *ov;          /* the management API's, applied to conf */
    struct sl_logring     *ring;        /* function logs: the live tail, the log sink */
    struct sl_logship     *ship;        /* the log sink, for conf */
    struct sl_logship    **old_ships;   /* stopped by reloads, freed with the core */
    size_t                 nold_ships;
    struct sl__slot      **slots;
    size_t                 nslots;
    bool                   sources_stopping;
    struct sl_metric      *m_reloads, *m_failures;
};

/* Start the source `sc` in `slot` (engine and poller); logs. (reload.c) */
int sl__slot_start(struct sl__slot *slot, const struct sl_source_conf *sc, struct sl_err *err);
struct sl__slot *sl__slot_new(struct sl__service *svc, const char *name);

/* Install SIGHUP and POST /admin/reload on a started core. (reload.c) */
void sl__reload_setup(struct sl__service *svc);
/* Free what reload.c keeps (retired configurations, slots) once the
 * runtime is gone. (reload.c) */
void sl__reload_free(struct sl__service *svc);

/* The commands: argv[0] is the command's name; each returns the exit code. */
int sl__cmd_lint(int argc, char **argv);     /* lint.c */
int sl__cmd_run(int argc, char **argv);      /* run.c */
int sl__cmd_invoke(int argc, char **argv);   /* invoke.c */
int sl__cmd_dlq(int argc, char **argv);      /* dlq.c */
int sl__cmd_logs(int argc, char **argv);     /* logs.c */
int sl__cmd_status(int argc, char **argv);   /* status.c */

/* The number of entries sink `s` holds (its dead letters): 0, or -1 when
 * it cannot be read back (a Kafka sink) or is unreachable. (dlq.c) */
int sl__cli_dlq_count(const struct sl_sink_conf *s, size_t *n);
int sl__cmd_reload(int argc, char **argv);   /* reload.c */

/* Invoke `fn` at `endpoint` (http://host:port) as a Lambda client would.
 * Prints the result (or Lambda's error JSON) to stdout; returns the exit
 * code: 0 success or accepted, 1 function error or refusal. (invoke.c) */
int sl__cli_invoke_remote(const char *endpoint, const char *fn, const char *payload, size_t len,
                          bool async, const char *token);

#endif
