/* Test double: a sink that keeps every record written to it in memory,
 * and can be told to fail or to delay its confirmations.
 *
 * It takes over a sink the dispatcher (or sl_sink_new) already opened,
 * whatever its configured type: the real ops are closed and the capture
 * ops put in their place, so the generic layer (reliable writes, backoff,
 * failures pending at free) stays the real one. Give the sink a type that
 * needs no service (`type: file`) so opening it needs nothing.
 * DESIGN.md places this double in sinks/ as a registered type; it lives
 * here until sinks/ can take it. */
#ifndef SLUICE_TEST_CAPTURE_SINK_H
#define SLUICE_TEST_CAPTURE_SINK_H

#include <stddef.h>

#include <jansson.h>

#include "sluice/sink.h"

struct capture_sink;

/* Take over `s` (borrowed). The capture lives until sl_sink_free(s):
 * writes still delayed then end with SL_ESTOPPED. */
struct capture_sink *capture_sink_attach(struct sl_sink *s);

/* The next `n` attempts fail with `code` (retriable when `retriable`);
 * n < 0 fails every attempt from now on, 0 stops failing. */
void capture_sink_fail(struct capture_sink *c, int n, int code, int retriable);

/* Confirm (or fail) each attempt `ms` after it was written; 0 means on
 * the next turn of the loop (never inside the write). */
void capture_sink_delay(struct capture_sink *c, int ms);

/* Records confirmed so far, in the order they were written, and the
 * attempts made (confirmed, failed and still pending). */
size_t capture_sink_count(const struct capture_sink *c);
size_t capture_sink_attempts(const struct capture_sink *c);

/* Record `i` as written (borrowed, NUL-terminated), or NULL. */
const char *capture_sink_get(const struct capture_sink *c, size_t i);

/* Record `i` parsed (a new reference: decref it), or NULL. */
json_t *capture_sink_json(const struct capture_sink *c, size_t i);

#endif
