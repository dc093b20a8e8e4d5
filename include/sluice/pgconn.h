/* sluice: the one Postgres client connection, non-blocking on the loop.
 *
 * Connects with PQconnectStartParams/PQconnectPoll after resolving the
 * host name through evdns (libpq gets `hostaddr`, keeps `host` for TLS
 * and authentication), runs queries one at a time with PQsendQuery or
 * PQsendQueryParams, and streams copy-both data (replication=database
 * connections) with PQgetCopyData(async) and PQputCopyData/PQflush,
 * waiting for write readiness while libpq still holds output. The owner
 * gets on_up, on_down, per-query callbacks and copy data; every callback
 * may close the connection (the generation counter tells the helper to
 * stop touching it). sl_pgconn_retry reconnects after the shared backoff.
 * Log lines name the server as host:port/db, never with a password. */
#ifndef SLUICE_PGCONN_H
#define SLUICE_PGCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "sluice/resolve.h"

struct sl_pgconn;

/* A query's outcome: `res` is its first result (NULL when there was none;
 * then `why` says so). Owned by the helper: do not PQclear. Queries still
 * queued when the connection goes down are dropped without a call: the
 * owner learns of it through on_down. */
typedef void (*sl_pgconn_result_fn)(struct sl_pgconn *c, PGresult *res, const char *why,
                                    void *arg);

struct sl_pgconn_query;

enum sl_pgconn_state {
    SL_PGCONN_DOWN = 0,
    SL_PGCONN_CONNECTING,             /* resolving the host, then libpq's handshake */
    SL_PGCONN_READY,
    SL_PGCONN_COPY,
};

struct sl_pgconn {                    /* caller storage: sl_pgconn_init/_destroy */
    struct event_base      *base;
    const char             *inst;     /* log prefix, borrowed */
    const char             *what;     /* "management", "replication", "snapshot" */
    PGconn                 *conn;
    enum sl_pgconn_state    state;
    struct event           *ev;       /* on PQsocket */
    int                     ev_fd;
    short                   ev_what;
    struct event           *timeout;  /* connect timeout; also reports failures from the loop */
    struct event           *again;    /* more buffered copy data to read */
    struct event           *retry;    /* sl_pgconn_retry */
    struct sl_resolver      res;
    struct sl_pgconn_query *qhead, *qtail, *cur;
    PGresult               *first;    /* first result of `cur` */
    bool                    read_paused; /* copy mode: leave data in the socket */
    bool                    want_write;  /* output still queued in libpq */
    unsigned                gen;      /* bumped at every close: stale callbacks see it */
    unsigned                attempt;  /* retries since the last success */
    uint64_t                retry_base_ms, retry_cap_ms; /* backoff of sl_pgconn_retry */
    char                   *where;    /* host:port/db of the last DSN, for messages */
    char                    fail[300]; /* why the connect failed before libpq ran */
    /* what sl_pgconn_retry connects with again */
    char                   *dsn;
    char                   *kw[16], *val[16];
    /* callbacks; `arg` is theirs */
    void (*on_up)(struct sl_pgconn *c, void *arg);
    void (*on_down)(struct sl_pgconn *c, const char *why, void *arg);
    /* copy-both data; return false to stop reading for now (the helper
     * resumes on sl_pgconn_pause_read(c, false)) */
    bool (*on_copy)(struct sl_pgconn *c, const char *buf, size_t len, void *arg);
    void  *arg;
};

/* `what` names the connection in messages ("management"). Retries back
 * off from 200 ms to 5 s unless retry_base_ms/retry_cap_ms are set. */
void sl_pgconn_init(struct sl_pgconn *c, struct event_base *base, const char *inst,
                    const char *what);
/* Start connecting: `dsn` expanded, then keyword/value pairs (NULL-ended,
 * at most 12) override it. on_up or on_down follows, never inside this
 * call. Everything is copied. */
void sl_pgconn_connect(struct sl_pgconn *c, const char *dsn, const char *const *kw,
                       const char *const *val);
/* Connect again with the last parameters after a backoff delay (full
 * jitter, growing with c->attempt, which a success resets); returns the
 * delay. Typically called from on_down. */
uint64_t sl_pgconn_retry(struct sl_pgconn *c);
/* Queue a query; `cb` (may be NULL) runs once with its first result. */
void sl_pgconn_query(struct sl_pgconn *c, const char *sql, sl_pgconn_result_fn cb, void *arg);
/* The same with parameters (PQsendQueryParams, text result). `sql` and
 * the arrays are copied; the values themselves are borrowed until `cb`
 * runs or the connection goes down. */
void sl_pgconn_query_params(struct sl_pgconn *c, const char *sql, int n, const Oid *types,
                            const char *const *values, const int *lengths, const int *formats,
                            sl_pgconn_result_fn cb, void *arg);
/* Copy-both: queue bytes for the server; false when the connection broke. */
bool sl_pgconn_put_copy(struct sl_pgconn *c, const char *buf, size_t len);
void sl_pgconn_pause_read(struct sl_pgconn *c, bool paused);
/* Drop the connection, its queue and a pending retry; no callback runs. */
void sl_pgconn_close(struct sl_pgconn *c);
void sl_pgconn_destroy(struct sl_pgconn *c);
/* First line of the connection's last error. */
const char *sl_pgconn_error(struct sl_pgconn *c, char *buf, size_t n);

/* Does `dsn` parse (libpq key=value or URI form)? 0, or -1 with the first
 * line of libpq's complaint in `why` (size n), every password of the DSN
 * masked: the one check the sources and sinks run on a DSN. */
int sl_pgconn_dsn_check(const char *dsn, char *why, size_t n);
/* "host:port/db" of a DSN (no secrets), malloc'd; "?" when it does not parse. */
char *sl_pgconn_where(const char *dsn);

#endif
