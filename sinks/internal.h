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


/* Report one attempt's outcome: counts it (writes on rc 0, failures on any
 * other rc but SL_ESTOPPED), then calls done(arg, rc, err). */
void sl__sink_done(struct sl_sink *s, sl_sink_done_fn done, void *arg, int rc,
                   const struct sl_err *err);

/* Report a failure from the next loop iteration, so that `done` never runs
 * before write returned. `err` is copied. Flushed by sl_sink_free. */
void sl__sink_fail_soon(struct sl_sink *s, sl_sink_done_fn done, void *arg,
                        const struct sl_err *err);

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

/* Batched writer on the worker pool, shared by the sinks whose writes
 * block (file, SQLite). Writes queue on the loop; one job at a time runs
 * on the pool and takes everything queued so far, up to a size cap (group
 * commit), which also keeps the writes in order. The sink supplies the
 * work done on the worker and owns the context the writer is embedded in;
 * the writer keeps the references (the sink + the job in flight) and calls
 * ops->release when the last one goes. */
struct sl__bw_item {
    char               *data;   /* owned copy: the worker may outlive a close */
    size_t              len;
    sl_sink_done_fn     done;   /* NULL once reported */
    void               *arg;
    struct sl__bw_item *next;
};

struct sl__bw;

struct sl__bw_job {
    struct sl__bw      *bw;
    struct sl__bw_item *batch;  /* NULL: an empty job (see sl__bw_submit) */
    size_t              n, bytes;
    unsigned            flags;  /* the sink's own, set by ops->start */
    int                 rc;
    struct sl_err       err;    /* filled on the worker */
};

struct sl__bw_ops {
    /* Worker: write j->batch, set j->rc (and j->err on failure). */
    void (*work)(struct sl__bw_job *j);
    /* Loop, optional: just before the job goes to the pool. */
    void (*start)(struct sl__bw_job *j);
    /* Loop, optional: the job is back and the writer is not closed; runs
     * before its writes are reported. */
    void (*finish)(struct sl__bw_job *j);
    /* Loop: the last reference is gone; free the sink's context. */
    void (*release)(void *ctx);
};

struct sl__bw {
    struct sl_sink           *s;
    const struct sl__bw_ops  *ops;
    void                     *ctx;          /* handed to ops->release */
    struct sl__bw_item       *qhead, *qtail; /* queued, no job yet */
    struct sl__bw_job        *job;          /* in flight (or its done running) */
    struct event             *kick;         /* starts the next job from the loop */
    int                       refs;         /* the sink + the job in flight */
    bool                      closed;
};

/* Set up `bw` with one reference (the sink's). Returns 0, or -1 when the
 * kick event cannot be created (drop the reference with sl__bw_unref). */
int sl__bw_init(struct sl__bw *bw, struct sl_sink *s, const struct sl__bw_ops *ops, void *ctx);

/* Queue one write (taking ownership of `data`) and start a job if none
 * runs. */
void sl__bw_write(struct sl__bw *bw, char *data, size_t len, sl_sink_done_fn done, void *arg);

/* Start a job for what is queued, if no job runs; with `empty_ok`, also
 * when nothing is queued (a job with batch NULL). */
void sl__bw_submit(struct sl__bw *bw, bool empty_ok);

/* Mark closed and report every queued and in-flight write with `err`
 * (SL_ESTOPPED). Does not drop the sink's reference. */
void sl__bw_close(struct sl__bw *bw, const struct sl_err *err);

void sl__bw_unref(struct sl__bw *bw);

#endif
