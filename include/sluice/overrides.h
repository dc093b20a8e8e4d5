/* sluice: runtime overrides over the configuration file.
 *
 * The management API's writes (UpdateEventSourceMapping,
 * PutFunctionConcurrency, PutFunctionEventInvokeConfig, ...) do not touch
 * the YAML file: they are kept in server.data_dir/overrides.json (0600,
 * written atomically, versioned) and applied over the loaded file at
 * start. Each override is written with the YAML key it replaces, in that
 * key's unit:
 *
 *   {"version": 1,
 *    "sources":   {"orders": {"type": "redis", "function": "echo",
 *                             "last_modified_ms": 1700000000000,
 *                             "enabled": false, "batch_size": 5}},
 *    "functions": {"echo":   {"last_modified_ms": ...,
 *                             "reserved_concurrency": 3,
 *                             "async.maximum_retry_attempts": 1}}}
 *
 * A source's override remembers the type and function it was made for;
 * `sluice lint` (sl_overrides_check) refuses one whose source or function
 * is gone, whose source changed type or function, or whose value no
 * longer fits the key's range or type. Keys that can be overridden:
 * sources: enabled, batch_size, maximum_batching_window_ms,
 * maximum_retry_attempts, maximum_record_age_s,
 * bisect_batch_on_function_error, report_batch_item_failures; functions:
 * reserved_concurrency, provisioned_concurrency,
 * async.maximum_retry_attempts, async.maximum_event_age_s. */
#ifndef SLUICE_OVERRIDES_H
#define SLUICE_OVERRIDES_H

#include <stddef.h>

#include <jansson.h>

#include "sluice/config.h"

#define SL_OVERRIDES_FILE    "overrides.json"
#define SL_OVERRIDES_VERSION 1
#define SL_OVERRIDES_MAX     (1024 * 1024)   /* bytes of the file */

struct sl_overrides;

/* Read data_dir/overrides.json; a missing file (or data_dir) is an empty
 * set. 0, or -1 with why (size n) when it cannot be read or is not a
 * version this build reads. The caller owns *out (sl_overrides_free). */
int sl_overrides_load(const char *data_dir, struct sl_overrides **out, char *why, size_t n);

void sl_overrides_free(struct sl_overrides *ov);

/* The file's path (for messages). */
const char *sl_overrides_path(const struct sl_overrides *ov);

/* The document in force (borrowed): what `sluice lint` prints. */
const json_t *sl_overrides_doc(const struct sl_overrides *ov);

/* Whether any override is in force. */
bool sl_overrides_empty(const struct sl_overrides *ov);

/* Check every override against the loaded file `c`; each problem is one
 * line in `d` naming the source or function and why. The number of
 * problems. */
size_t sl_overrides_check(const struct sl_overrides *ov, const struct sl_config *c,
                          struct sl_diags *d);

/* Write every override into `c` (after sl_overrides_check found none). */
void sl_overrides_apply(const struct sl_overrides *ov, struct sl_config *c);

/* A change: a copy of the document to edit with sl_overrides_put, then
 * sl_overrides_commit (or json_decref to drop it). New reference. */
json_t *sl_overrides_draft(const struct sl_overrides *ov);

/* Set `key` of source `sc` (kind "sources") or function `fc` (kind
 * "functions", sc NULL) in `draft` to `v` (borrowed): 0, or -1 with why
 * when the key cannot be overridden for it or `v` is out of its range. */
int sl_overrides_put(json_t *draft, const struct sl_source_conf *sc,
                     const struct sl_function_conf *fc, const char *key, const json_t *v,
                     char *why, size_t n);

/* The draft as the file's text (malloc'd): what a worker writes with
 * sl_overrides_write before sl_overrides_commit. */
char *sl_overrides_text(const json_t *draft);

/* Write `text` to data_dir/overrides.json atomically (a temporary file,
 * fsync, rename, fsync of the directory), 0600. Blocking: for a worker.
 * 0 or -1 with why. */
int sl_overrides_write(const char *data_dir, const char *text, char *why, size_t n);

/* The draft was written: it becomes the set in force (stolen) and is
 * applied to `c`. */
void sl_overrides_commit(struct sl_overrides *ov, json_t *draft, struct sl_config *c);

/* A source's overrides in force (borrowed JSON object), NULL: none. */
const json_t *sl_overrides_source(const struct sl_overrides *ov, const char *name);
const json_t *sl_overrides_function(const struct sl_overrides *ov, const char *name);

/* The event source mapping's UUID: a name-based (version 5, SHA-1) UUID
 * of "<account_id>:<function>:<source>" in sluice's namespace, so it is
 * the same after a restart and on every instance with the same file. */
void sl_mapping_uuid(const struct sl_config *c, const struct sl_source_conf *sc, char out[37]);

#endif
