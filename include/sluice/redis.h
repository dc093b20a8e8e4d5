/* sluice: the one Redis client connection, on the loop (hiredis async).
 *
 * DOWN (the reconnect timer runs: capped backoff with full jitter) ->
 * RESOLVING (a host name, through evdns: the loop never blocks) ->
 * CONNECTING (AUTH and SELECT from the URL, then the owner's setup, are
 * pipelined behind the handshake) -> READY once every setup reply is in.
 * A connection that leaves a command unanswered for its reply timeout, or
 * does not get READY within its connect timeout, is dropped and
 * reconnects, so nothing waits forever on a frozen server. Every log line
 * names the server by its URL with the password masked.
 *
 * Each command's callback runs exactly once: with the reply, or with NULL
 * when the connection was lost (or is being freed) before it came. */
#ifndef SLUICE_REDIS_H
#define SLUICE_REDIS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

/* ------------------------------------------------------------------ */
/* URLs                                                                */

/* A redis://[[user]:password@]host[:port][/db] URL, as server.async_queue
 * takes it. */
struct sl_redis_url {
    char *host;                      /* without brackets */
    int   port;                      /* 6379 when not given */
    char *user;                      /* NULL: AUTH <password> */
    char *pass;                      /* NULL: no AUTH */
    int   db;                        /* -1: no SELECT */
};

/* Parse `url` into `u` (caller's storage; release with
 * sl_redis_url_destroy, also after a failure). 0, or -1 with a message in
 * `why` (size n) that shows the URL with its password masked. */
int  sl_redis_url_parse(const char *url, struct sl_redis_url *u, char *why, size_t n);
void sl_redis_url_destroy(struct sl_redis_url *u);
/* "host:port" ("[::1]:6379" for IPv6), for messages. */
void sl_redis_url_where(const struct sl_redis_url *u, char *buf, size_t n);
/* "redis://[user][:***@]host:port[/db]" (size n, cut with "..." when
 * longer): the URL for log lines and messages, password masked. */
void sl_redis_url_show(const struct sl_redis_url *u, char *buf, size_t n);

/* ------------------------------------------------------------------ */
/* Connections                                                         */

enum sl_redis_state {
    SL_REDIS_DOWN = 0,
    SL_REDIS_RESOLVING,
    SL_REDIS_CONNECTING,
    SL_REDIS_READY,
};

struct sl_redis_conn;

/* A reply (owned by hiredis: valid during the call only), or NULL when the
 * connection went away first. `arg` is the connection's, `priv` the
 * command's. */
typedef void (*sl_redis_reply_fn)(void *arg, redisReply *r, void *priv);

struct sl_redis_conn_conf {
    struct event_base         *base;
    const struct sl_redis_url *url;        /* borrowed: outlives the connection */
    const char                *inst;       /* log prefix, borrowed */
    const char                *name;       /* "command connection"; NULL: "connection" */
    int                        dbg;        /* debug context (enum sl_log_ctx) of its lines */
    int64_t                    connect_timeout_ms; /* to READY; 0: 5000 */
    int64_t                    reply_timeout_ms;   /* a reply due this long: drop; 0: never */
    uint64_t                   backoff_base_ms;    /* 0: 100 */
    uint64_t                   backoff_cap_ms;     /* 0: 5000 */
    /* Send the owner's setup with sl_redis_conn_cmd (after AUTH/SELECT);
     * returns how many replies it awaits through sl_redis_conn_setup_done. */
    int  (*setup)(struct sl_redis_conn *c, void *arg);
    void (*up)(struct sl_redis_conn *c, void *arg);   /* READY */
    void (*down)(struct sl_redis_conn *c, void *arg); /* was READY, is lost */
    void                      *arg;
};

/* A connection, DOWN until sl_redis_conn_start. `conf` is copied (the
 * strings and the URL it points to are borrowed). Never NULL: out of
 * memory aborts, as with sl_malloc. */
struct sl_redis_conn *sl_redis_conn_new(const struct sl_redis_conn_conf *conf);
void sl_redis_conn_start(struct sl_redis_conn *c);
/* Close for good: every callback still due runs now, with NULL, and none
 * after this returns. Safe inside a reply callback. NULL is fine. */
void sl_redis_conn_free(struct sl_redis_conn *c);
/* Drop the connection (a bad reply, a stalled server); it reconnects. */
void sl_redis_conn_drop(struct sl_redis_conn *c, const char *why);

/* Send a command: argv/lens as redisAsyncCommandArgv (lens NULL: strlen),
 * or a hiredis format. Accepted while the connection is RESOLVING (held
 * until it connects), CONNECTING (pipelined behind the setup) or READY;
 * while DOWN, refused with SL_ECONN and `fn` is not called. `fn` may be
 * NULL (the reply is dropped). Owners that must wait for READY check
 * sl_redis_conn_ready first. */
int sl_redis_conn_cmd(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv, int argc,
                      const char **argv, const size_t *lens);
int sl_redis_conn_cmdf(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv,
                       const char *fmt, ...);
int sl_redis_conn_vcmdf(struct sl_redis_conn *c, sl_redis_reply_fn fn, void *priv,
                        const char *fmt, va_list ap);
/* A reply to the owner's setup arrived (ok or not; `r` for the message):
 * the connection is READY after the last, dropped after a failure. */
void sl_redis_conn_setup_done(struct sl_redis_conn *c, bool ok, const char *what,
                              const redisReply *r);

enum sl_redis_state sl_redis_conn_state(const struct sl_redis_conn *c);
bool sl_redis_conn_ready(const struct sl_redis_conn *c);
/* Why it is not READY ("" when it is). */
const char *sl_redis_conn_why(const struct sl_redis_conn *c);

/* Write and read the socket directly, without the loop, until every reply
 * due is in or `ms` passed. Shutdown only (the loop has stopped). */
void sl_redis_conn_flush(struct sl_redis_conn *c, int64_t ms);

#endif
