/* sluice: the capture sink, a test double of the sinks. It keeps every
 * record written to it in memory and can be told to fail or to delay its
 * confirmations.
 *
 * It takes over a sink that sl_sink_new (or the dispatcher) already
 * opened, whatever its configured type: the real ops are closed and the
 * capture's put in their place, so the generic layer (reliable writes,
 * backoff, failures pending at free) stays the real one. Give the sink a
 * type that needs no service (`type: file`) so that opening it needs
 * nothing. It is no configurable type: no `type: capture` in a config. */
#ifndef SLUICE_CAPTURE_SINK_H
#define SLUICE_CAPTURE_SINK_H

#include <stddef.h>

#include <jansson.h>

#include "sluice/sink.h"

struct sl_capture_sink;

/* Take over `s` (borrowed; NULL gives NULL) before anything was written
 * to it. The capture lives until sl_sink_free(s): writes still delayed
 * then end with SL_ESTOPPED. */
struct sl_capture_sink *sl_capture_sink_attach(struct sl_sink *s);

/* The next `n` attempts fail with `code` (SL_EIO when 0; retriable when
 * `retriable`); n < 0 fails every attempt from now on, 0 stops failing. */
void sl_capture_sink_fail(struct sl_capture_sink *c, int n, int code, int retriable);

/* Confirm (or fail) each attempt `ms` after it was written; 0 means on
 * the next turn of the loop (never inside the write). */
void sl_capture_sink_delay(struct sl_capture_sink *c, int ms);

/* Records confirmed so far, in the order they were written, and the
 * attempts made (confirmed, failed and still pending). */
size_t sl_capture_sink_count(const struct sl_capture_sink *c);
size_t sl_capture_sink_attempts(const struct sl_capture_sink *c);

/* Record `i` as written (borrowed until sl_sink_free, NUL-terminated), or
 * NULL. */
const char *sl_capture_sink_get(const struct sl_capture_sink *c, size_t i);

/* Record `i` parsed (a new reference: decref it), or NULL. */
json_t *sl_capture_sink_json(const struct sl_capture_sink *c, size_t i);

#endif
