/* Internal to the postgres poller: the poller's state (postgres.c), the session that
 * holds the lock and drives the slot (session.c) and the initial snapshot
 * (snapshot.c). */
#ifndef SLUICE_PG_INTERNAL_H
#define SLUICE_PG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "sluice/pgconn.h"
#include "sluice/poller.h"

#include "conf.h"
#include "pgoutput.h"

/* ------------------------------------------------------------------ */
/* The poller                                                          */

/* One transaction, from Begin to the moment every change in it is final.
 * Kept in commit order; the flush LSN moves to a transaction's end_lsn
 * once it and every one before it are done. */
struct pg_txn {
    uint64_t final_lsn;       /* commit record's LSN (Begin): the SequenceNumber prefix */
    uint64_t end_lsn;         /* Commit: flush to this once final; 0 for none */
    int64_t  commit_ms;
    uint32_t xid;
    uint32_t changes;         /* ordinal of the last change seen */
    uint32_t skip;            /* changes already pushed before a reconnect */
    size_t   outstanding;     /* pushed, not final */
    bool     committed;       /* Commit seen (snapshot: rows all read and recorded) */
    bool     dead;            /* connection lost before Commit: never advances */
    bool     snapshot;
    struct pg_txn *next;
};

enum pg_phase {
    PH_IDLE = 0,          /* not started, or stopped */
    PH_STANDBY,           /* waiting for the lock */
    PH_SETUP,             /* publication, slot, state */
    PH_SNAPSHOT,          /* reading existing rows */
    PH_STREAMING,
};

struct pg_table {             /* snapshot: one published table */
    uint32_t oid;
    char    *schema, *name;
};

struct pg_tablefrag {          /* records: the per-table part, built once */
    char   *schema, *table;
    char   *text;
    size_t  len;
    struct pg_tablefrag *next;
};

struct pg {
    struct sl_source    *s;
    struct event_base   *base;
    const struct sl_source_conf *conf;
    const struct sl_pg_opts *o;          /* conf->opts */
    char                *slot;           /* names, unquoted */
    char                *publication;
    char                *where;          /* host:port/db for messages */
    int64_t              lock_key;
    struct sl_filter    *filter;
    enum pg_phase        phase;
    bool                 stopping;
    bool                 paused;         /* by the engine (bytes pending) */
    bool                 throttled;      /* by read-ahead: too many changes not final */
    size_t               outstanding;    /* changes pushed, not final */
    size_t               readahead;      /* the cap on `outstanding` */
    bool                 holder;         /* has the advisory lock */
    bool                 standing_by;    /* said so in the log */
    bool                 created_slot;   /* this process created the slot */
    bool                 text_mode;      /* binary 'true' refused by the decoder: text from now on */
    bool                 warned_lag;
    bool                 lag_pending;   /* a lag query is queued or running */
    bool                 keys_pending;  /* the FULL tables' primary keys are being read */
    int                  server_version;
    int                  rattempt;       /* replication reconnect attempts */

    struct sl_pgconn     mgmt, repl, snap;
    struct event        *lock_timer, *repl_retry, *status_timer, *lag_timer,
                        *heartbeat_timer;
    struct pgo_decoder  *dec;            /* per replication connection */

    /* stream position */
    uint64_t             start_lsn;      /* where the slot stood at setup */
    uint64_t             received_lsn;   /* highest WAL position seen */
    uint64_t             flushed;        /* every change up to here is final */
    uint64_t             sent_flush;     /* last flush position told to the server */
    uint64_t             last_commit;    /* final_lsn of the last complete transaction pushed */
    int64_t              last_status_ms;
    struct pg_txn       *thead, *ttail;  /* in commit order */
    struct pg_txn       *cur;            /* between Begin and Commit */
    bool                 skipping;       /* cur was fully pushed before a reconnect */

    /* snapshot */
    bool                 snapshot_wanted;
    char                *snapshot_name;
    uint64_t             consistent_lsn;
    struct pg_txn       *snap_txn;
    struct pg_table     *tables;
    size_t               ntables, table_i;
    struct pgo_decoder  *snap_dec;
    bool                 snap_fetching;   /* a FETCH is in flight */
    bool                 snap_all_read;   /* every row pushed */
    bool                 snap_marking;    /* the state row is being set to done */
    bool                 create_export;   /* create the slot on the replication connection */

    struct pg_tablefrag *frags;
    char                *head;           /* ","eventVersion":...,"awsRegion":"..." */
    size_t               headlen;

    /* metrics */
    struct sl_metric    *m_lag, *m_flushed, *m_changes, *m_txns, *m_age, *m_truncs;
    uint64_t             changes, txns;
    double               lag_bytes;
    int64_t              iterator_age_ms;
};

/* postgres.c */
bool sl__pg_reading(struct pg *p);          /* apply pause/throttle to the stream; true: read on */
void sl__pg_begin(struct pg *p, const struct pgo_msg *m);
void sl__pg_change(struct pg *p, struct pgo_msg *m);
void sl__pg_commit(struct pg *p, const struct pgo_msg *m);
void sl__pg_idle_advance(struct pg *p, uint64_t lsn);
void sl__pg_stream_lost(struct pg *p);
void sl__pg_advance(struct pg *p);
struct pg_txn *sl__pg_txn_new(struct pg *p, uint64_t final_lsn, int64_t commit_ms, uint32_t xid);

/* session.c */
int  sl__pg_session_start(struct pg *p);
void sl__pg_session_stop(struct pg *p);
void sl__pg_session_free(struct pg *p);
void sl__pg_send_status(struct pg *p, bool reply);
void sl__pg_repl_restart(struct pg *p, const char *why, bool quick);
void sl__pg_start_streaming(struct pg *p);
void sl__pg_snapshot_done(struct pg *p);
void sl__pg_mark_snapshot_complete(struct pg *p);

/* snapshot.c */
void sl__pg_snapshot_begin(struct pg *p);
void sl__pg_snapshot_pump(struct pg *p);
void sl__pg_snapshot_free(struct pg *p);

/* failure.c: Lambda's DDBStreamBatchInfo in on-failure records (ops->batch_info) */
void sl__pg_batch_info(struct sl_source *s, const char *lane, struct sl_record *const *r,
                       size_t n, size_t payload_size, json_t *rec);

/* Helpers shared by the files. */
/* The advisory-lock key of a slot: pinned by a unit test, never change it. */
int64_t sl__pg_lock_key(const char *slot);
char *sl__pg_quote_literal(const char *s);      /* 'it''s' */
char *sl__pg_quote_ident(const char *s);        /* "a""b" */
char *sl__pg_quote_qualified(const char *name); /* schema.table -> "schema"."table" */
void  sl__pg_lsn_text(uint64_t lsn, char *buf, size_t n);
int   sl__pg_lsn_parse(const char *s, uint64_t *out);

#endif
