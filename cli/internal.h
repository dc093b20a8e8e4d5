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

/* The commands: argv[0] is the command's name; each returns the exit code. */
int sl__cmd_lint(int argc, char **argv);     /* lint.c */
int sl__cmd_run(int argc, char **argv);      /* run.c */
int sl__cmd_invoke(int argc, char **argv);   /* invoke.c */
int sl__cmd_dlq(int argc, char **argv);      /* dlq.c */
int sl__cmd_logs(int argc, char **argv);     /* logs.c */

/* Invoke `fn` at `endpoint` (http://host:port) as a Lambda client would.
 * Prints the result (or Lambda's error JSON) to stdout; returns the exit
 * code: 0 success or accepted, 1 function error or refusal. (invoke.c) */
int sl__cli_invoke_remote(const char *endpoint, const char *fn, const char *payload, size_t len,
                          bool async, const char *token);

#endif
