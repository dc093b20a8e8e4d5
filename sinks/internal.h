/* sluice: what the sink implementations (sinks/) share with the generic
 * layer (sinks/sink.c). Not a public header.
 *
 * Rules every implementation follows:
 *  - `done` never runs before ops->write returns: failures found inside
 *    write go through sl__sink_fail_soon.
 *  - outcomes are reported through sl__sink_done, which keeps s->writes
 *    and s->failures.
 *  - `done` may free the sink (sl_sink_free -> ops->close). Code that runs
 *    after a completion must check whether its context was closed before
 *    touching it again; contexts are freed only once no handler of theirs
 *    is on the stack (a `busy` count or job references). */
#ifndef SLUICE_SINKS_INTERNAL_H
#define SLUICE_SINKS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>

#include "sluice/sink.h"

extern const struct sl_sink_ops sl__sink_file_ops;
extern const struct sl_sink_ops sl__sink_redis_ops;
extern const struct sl_sink_ops sl__sink_kafka_ops;
extern const struct sl_sink_ops sl__sink_postgres_ops;
extern const struct sl_sink_ops sl__sink_sqlite_ops;

/* Report one attempt's outcome: counts it (writes on rc 0, failures on any
 * other rc but SL_ESTOPPED), then calls done(arg, rc, err). */
void sl__sink_done(struct sl_sink *s, sl_sink_done_fn done, void *arg, int rc,
                   const struct sl_err *err);

/* Report a failure from the next loop iteration, so that `done` never runs
 * before write returned. `err` is copied. Flushed by sl_sink_free. */
void sl__sink_fail_soon(struct sl_sink *s, sl_sink_done_fn done, void *arg,
                        const struct sl_err *err);

/* Full-jitter backoff: a random delay in [0, min(cap_ms, base_ms << attempt)]
 * milliseconds. Loop thread only (uses the sink's own generator). */
uint64_t sl__sink_backoff_ms(struct sl_sink *s, unsigned attempt, uint64_t base_ms,
                             uint64_t cap_ms);

/* Create the parent directories of `path` (mode 0755), like mkdir -p. */
int sl__sink_make_parent(const char *path, struct sl_err *err);

static inline struct timeval sl__tv_ms(uint64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    return tv;
}

/* Copy the first line of a multi-line library message (libpq's end in
 * "\n"), without trailing whitespace. */
void sl__sink_first_line(char *out, size_t n, const char *msg);

#endif
