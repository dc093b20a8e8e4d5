/* Postgres change streams: a logical replication slot read with pgoutput,
 * delivered as DynamoDB-Streams-shaped records with stream semantics.
 *
 * This file holds the poller's ops, the record shape and the flush
 * bookkeeping; session.c holds the connections (lock, slot, replication),
 * snapshot.c the initial snapshot, conn.c the libpq plumbing.
 *
 * Flush rule: changes are pushed into the engine as they arrive (pgoutput
 * v1 sends only committed transactions, so nothing seen can roll back);
 * each transaction counts its changes not yet final, and the flush LSN
 * reported to the server moves to a transaction's end LSN only once its
 * Commit arrived and it and every transaction before it have no change
 * left in flight. Filtered changes are final at once. With several lanes
 * (parallelization_factor) this is the minimum over the lanes. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/clock.h"
#include "sluice/filter.h"
#include "sluice/hash.h"
#include "sluice/jbuf.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/pollers.h"

#include "internal.h"

/* The start value of the slot's lock key and of the lane hash. A digit
 * short of FNV's offset basis, and kept so: the lock key must stay the
 * same across versions, or an old and a new instance would both stream. */
#define PG_HASH_INIT 1469598103934665603ull

static const char *const view_names[] = {
    "NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY",
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

char *sl__pg_quote_literal(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *q = sl_malloc(2 * n + 3);

    q[o++] = '\'';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            q[o++] = '\'';
        q[o++] = s[i];
    }
    q[o++] = '\'';
    q[o] = '\0';
    return q;
}

char *sl__pg_quote_ident(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *q = sl_malloc(2 * n + 3);

    q[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            q[o++] = '"';
        q[o++] = s[i];
    }
    q[o++] = '"';
    q[o] = '\0';
    return q;
}

char *sl__pg_quote_qualified(const char *name)
{
    const char *dot = strchr(name, '.');
    char *schema, *a, *b, *out;

    if (!dot)
        return sl__pg_quote_ident(name);
    schema = sl_strndup(name, (size_t)(dot - name));
    a = sl__pg_quote_ident(schema);
    b = sl__pg_quote_ident(dot + 1);
    out = sl_asprintf("%s.%s", a, b);
    free(schema);
    free(a);
    free(b);
    return out;
}

void sl__pg_lsn_text(uint64_t lsn, char *buf, size_t n)
{
    snprintf(buf, n, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

int sl__pg_lsn_parse(const char *s, uint64_t *out)
{
    unsigned hi, lo;
    int used = 0;

    if (!s || sscanf(s, "%X/%X%n", &hi, &lo, &used) != 2 || s[used] != '\0')
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

int64_t sl__pg_lock_key(const char *slot)
{
    static const char prefix[] = "sluice:";
    uint64_t h = sl_fnv1a64(PG_HASH_INIT, prefix, sizeof(prefix) - 1);

    return (int64_t)sl_fnv1a64(h, slot, strlen(slot));
}

/* JSON string literal of a C string. */
static void sb_jstr(struct sl_jbuf *b, const char *s)
{
    sl_jbuf_str(b, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Transactions and the flush position                                 */

struct pg_txn *sl__pg_txn_new(struct pg *p, uint64_t final_lsn, int64_t commit_ms, uint32_t xid)
{
    struct pg_txn *t = sl_calloc(1, sizeof(*t));

    t->final_lsn = final_lsn;
    t->commit_ms = commit_ms;
    t->xid = xid;
    if (p->ttail)
        p->ttail->next = t;
    else
        p->thead = t;
    p->ttail = t;
    return t;
}

/* Drop the transactions at the head that are done, moving the flush
 * position to the end of each committed one. */
void sl__pg_advance(struct pg *p)
{
    while (p->thead && p->thead->outstanding == 0 && (p->thead->committed || p->thead->dead)) {
        struct pg_txn *t = p->thead;

        if (t == p->cur)
            break; /* still receiving its changes */
        if (t->committed && t->end_lsn > p->flushed)
            p->flushed = t->end_lsn;
        if (t->snapshot && t->committed)
            SL_INFO(p->s->inst, "initial snapshot delivered");
        p->thead = t->next;
        if (!p->thead)
            p->ttail = NULL;
        if (p->snap_txn == t)
            p->snap_txn = NULL;
        free(t);
    }
    /* the snapshot is recorded complete only once every row is final */
    if (p->snap_txn && !p->snap_txn->committed && !p->snap_txn->dead &&
        p->snap_txn->outstanding == 0 && p->snap_all_read && !p->snap_marking)
        sl__pg_mark_snapshot_complete(p);
    if (p->m_flushed)
        sl_metric_set(p->m_flushed, p->conf->name, (double)p->flushed);
}

/* Nothing in flight and no transaction open: everything the server sent
 * up to `lsn` is handled (keepalives and messages on a quiet publication). */
void sl__pg_idle_advance(struct pg *p, uint64_t lsn)
{
    if (p->thead || p->cur || p->skipping || lsn <= p->flushed)
        return;
    p->flushed = lsn;
    if (p->m_flushed)
        sl_metric_set(p->m_flushed, p->conf->name, (double)p->flushed);
}

/* The replication connection broke: a transaction without its Commit
 * will be sent again in full; the changes of it already pushed are
 * skipped then (same commit LSN, same order). */
void sl__pg_stream_lost(struct pg *p)
{
    if (p->cur) {
        p->cur->dead = true;
        p->cur = NULL;
    }
    p->skipping = false;
    sl__pg_advance(p);
}

void sl__pg_begin(struct pg *p, const struct pgo_msg *m)
{
    if (p->cur) {
        /* a Begin without the Commit before it: the server never does this */
        SL_WARN(p->s->inst, "transaction %u began before %u committed", m->xid, p->cur->xid);
        p->cur->dead = true;
        p->cur = NULL;
    }
    p->skipping = false;
    if (m->final_lsn <= p->last_commit) {
        /* sent again after a reconnect, and already pushed whole */
        p->skipping = true;
        return;
    }
    if (p->ttail && p->ttail->dead && p->ttail->final_lsn == m->final_lsn) {
        p->cur = p->ttail;
        p->cur->dead = false;
        p->cur->skip = p->cur->changes;
        p->cur->changes = 0;
        return;
    }
    p->cur = sl__pg_txn_new(p, m->final_lsn, m->commit_time_ms, m->xid);
}

void sl__pg_commit(struct pg *p, const struct pgo_msg *m)
{
    if (p->skipping) {
        p->skipping = false;
        return;
    }
    if (!p->cur)
        return;
    p->cur->end_lsn = m->end_lsn;
    p->cur->committed = true;
    p->last_commit = p->cur->final_lsn;
    p->cur = NULL;
    p->txns++;
    sl__pg_advance(p);
}

/* ------------------------------------------------------------------ */
/* Records                                                             */

struct shape {
    const char *event_name;
    const char *schema, *table;
    const char *keys, *new_img, *old_img;
    char *const *toast;
    size_t ntoast;
    bool snapshot;
};

/* Digits of v, zero-padded to `width` (0: as many as needed). */
static void sb_u64(struct sl_jbuf *b, uint64_t v, int width)
{
    char d[24];
    int n = 0;

    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width)
        d[n++] = '0';
    sl_jbuf_grow(b, (size_t)n);
    while (n)
        b->p[b->n++] = d[--n];
    b->p[b->n] = '\0';
}

static void sb_hex64(struct sl_jbuf *b, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";

    sl_jbuf_grow(b, 16);
    for (int i = 15; i >= 0; i--)
        b->p[b->n++] = hex[(v >> (4 * i)) & 15];
    b->p[b->n] = '\0';
}

/* The part of a record that depends only on its table, built once per
 * table: ,"eventSourceARN":"...","tableName":"..." */
static const char *table_fragment(struct pg *p, const char *schema, const char *table,
                                  size_t *len)
{
    struct pg_tablefrag *f;
    struct sl_jbuf b = { 0 };
    char *full, *arn;

    for (f = p->frags; f; f = f->next)
        if (strcmp(f->table, table) == 0 && strcmp(f->schema, schema) == 0) {
            *len = f->len;
            return f->text;
        }
    full = sl_asprintf("%s.%s", schema, table);
    arn = sl_asprintf("arn:aws:dynamodb:%s:%s:table/%s/stream/%s", p->conf->server->region,
                      p->conf->server->account_id, full, p->slot);
    sl_jbuf_puts(&b, ",\"eventSourceARN\":");
    sb_jstr(&b, arn);
    sl_jbuf_puts(&b, ",\"tableName\":");
    sb_jstr(&b, full);
    free(full);
    free(arn);
    f = sl_calloc(1, sizeof(*f));
    f->schema = sl_strdup(schema);
    f->table = sl_strdup(table);
    f->text = b.p;
    f->len = b.n;
    f->next = p->frags;
    p->frags = f;
    *len = f->len;
    return f->text;
}

static struct sl_record *make_record(struct pg *p, struct pg_txn *t, uint32_t ordinal,
                                     const struct shape *sh, char *lane, size_t lanelen)
{
    const struct sl_source_conf *c = p->conf;
    const struct sl_pg_opts *o = p->o;
    struct sl_record *r;
    struct sl_jbuf b = { 0 };
    const char *keys = sh->keys ? sh->keys : "{}", *frag;
    size_t klen = strlen(keys), nlen = 0, olen = 0, flen, size = klen, seq_at;
    bool want_new = o->stream_view_type == SL_VIEW_NEW_IMAGE ||
                    o->stream_view_type == SL_VIEW_NEW_AND_OLD_IMAGES;
    bool want_old = o->stream_view_type == SL_VIEW_OLD_IMAGE ||
                    o->stream_view_type == SL_VIEW_NEW_AND_OLD_IMAGES;
    char clsn[32];

    if (want_new && sh->new_img)
        nlen = strlen(sh->new_img);
    if (want_old && sh->old_img)
        olen = strlen(sh->old_img);
    frag = table_fragment(p, sh->schema, sh->table, &flen);
    sl_jbuf_grow(&b, 400 + klen + nlen + olen + flen);
    sl_jbuf_puts(&b, "{\"eventID\":\"");
    sb_hex64(&b, t->final_lsn);
    sb_hex64(&b, ordinal);
    sl_jbuf_puts(&b, "\",\"eventName\":\"");
    sl_jbuf_puts(&b, sh->event_name);
    sl_jbuf_put(&b, p->head, p->headlen);
    sl_jbuf_puts(&b, ",\"dynamodb\":{\"ApproximateCreationDateTime\":");
    sb_u64(&b, (uint64_t)(t->commit_ms > 0 ? t->commit_ms / 1000 : 0), 0);
    sl_jbuf_puts(&b, ",\"Keys\":");
    sl_jbuf_put(&b, keys, klen);
    if (nlen) {
        sl_jbuf_puts(&b, ",\"NewImage\":");
        sl_jbuf_put(&b, sh->new_img, nlen);
        size += nlen;
    }
    if (olen) {
        sl_jbuf_puts(&b, ",\"OldImage\":");
        sl_jbuf_put(&b, sh->old_img, olen);
        size += olen;
    }
    sl_jbuf_puts(&b, ",\"SequenceNumber\":\"");
    seq_at = b.n;
    sb_u64(&b, t->final_lsn, 20);
    sb_u64(&b, ordinal, 10);
    sl_jbuf_puts(&b, "\",\"SizeBytes\":");
    sb_u64(&b, size, 0);
    sl_jbuf_puts(&b, ",\"StreamViewType\":\"");
    sl_jbuf_puts(&b, view_names[o->stream_view_type]);
    sl_jbuf_puts(&b, "\"}");
    sl_jbuf_put(&b, frag, flen);
    sl_jbuf_puts(&b, ",\"transactionId\":");
    sb_u64(&b, t->xid, 0);
    sl__pg_lsn_text(t->final_lsn, clsn, sizeof(clsn));
    sl_jbuf_puts(&b, ",\"commitLsn\":\"");
    sl_jbuf_puts(&b, clsn);
    sl_jbuf_puts(&b, "\"");
    if (sh->ntoast) {
        sl_jbuf_puts(&b, ",\"unchangedToastColumns\":[");
        for (size_t i = 0; i < sh->ntoast; i++) {
            if (i)
                sl_jbuf_put(&b, ",", 1);
            sb_jstr(&b, sh->toast[i]);
        }
        sl_jbuf_put(&b, "]", 1);
    }
    if (sh->snapshot)
        sl_jbuf_puts(&b, ",\"snapshot\":true");
    sl_jbuf_put(&b, "}", 1);

    if (c->parallelization_factor > 1) {
        uint64_t h = sl_fnv1a64(PG_HASH_INIT, sh->schema, strlen(sh->schema));
        h = sl_fnv1a64(h, ".", 1);
        h = sl_fnv1a64(h, sh->table, strlen(sh->table));
        h = sl_fnv1a64(h, keys, klen);
        snprintf(lane, lanelen, "%u", (unsigned)(h % (uint64_t)c->parallelization_factor));
    } else {
        lane[0] = '\0';
    }
    r = sl_calloc(1, sizeof(*r));
    r->id = sl_strndup(b.p + seq_at, 30);
    r->json = b.p;
    r->len = b.n;
    r->timestamp_ms = t->commit_ms ? t->commit_ms : sl_wall_ms();
    r->receive_count = 1;
    r->handle = t;
    return r;
}

/* Push one change (or mark it final at once when the filter drops it). */
static void emit(struct pg *p, struct pg_txn *t, uint32_t ordinal, const struct shape *sh)
{
    char lane[16];
    struct sl_record *r = make_record(p, t, ordinal, sh, lane, sizeof(lane));

    p->changes++;
    if (p->filter) {
        json_t *doc = json_loadb(r->json, r->len, 0, NULL);
        bool keep = doc && sl_filter_match(p->filter, doc);
        json_decref(doc);
        if (!keep) {
            p->s->filtered++;
            free(r->id);
            free(r->json);
            free(r);
            return;
        }
    }
    t->outstanding++;
    p->outstanding++;
    if (p->outstanding >= p->readahead)
        p->throttled = true;
    sl_source_push(p->s, lane, r);
}

/* The poller's own bookkeeping tables (the snapshot state) never become
 * records. */
static bool own_table(const struct pgo_relation *rel)
{
    return rel && strcmp(rel->name, "sluice_snapshot_state") == 0;
}

void sl__pg_change(struct pg *p, struct pgo_msg *m)
{
    struct pg_txn *t = p->cur;
    struct shape sh = { 0 };

    if (p->skipping)
        return;
    if (!t) {
        SL_WARN(p->s->inst, "%s outside a transaction; ignored", sl__pgo_kind_name(m->kind));
        return;
    }
    if (m->kind == PGO_TRUNCATE) {
        /* DynamoDB Streams has no such event (Powertools' models refuse any
         * eventName but INSERT, MODIFY, REMOVE): logged and counted, not
         * delivered; the position moves past it with its transaction */
        for (size_t i = 0; i < m->n_truncated; i++) {
            uint32_t ord = ++t->changes;
            if (ord <= t->skip || own_table(m->truncated[i]))
                continue;
            p->changes++;
            SL_WARN(p->s->inst, "TRUNCATE of %s.%s not delivered: DynamoDB Streams has no "
                    "such event", m->truncated[i]->schema, m->truncated[i]->name);
            if (p->m_truncs)
                sl_metric_add(p->m_truncs, p->conf->name, 1);
        }
        return;
    }
    {
        uint32_t ord = ++t->changes;
        if (ord <= t->skip || own_table(m->rel))
            return;
        sh.schema = m->rel->schema;
        sh.table = m->rel->name;
        sh.keys = m->keys;
        switch (m->kind) {
        case PGO_INSERT:
            sh.event_name = "INSERT";
            sh.new_img = m->new_image;
            break;
        case PGO_UPDATE:
            sh.event_name = "MODIFY";
            sh.new_img = m->new_image;
            /* without REPLICA IDENTITY FULL the old row is known by its key only */
            sh.old_img = m->old_image ? m->old_image : m->keys;
            sh.toast = m->unchanged_toast;
            sh.ntoast = m->n_unchanged;
            break;
        default:
            sh.event_name = "REMOVE";
            sh.old_img = m->old_image ? m->old_image : m->keys;
            break;
        }
        emit(p, t, ord, &sh);
    }
}

/* A snapshot row: an INSERT in the snapshot's own transaction. */
void sl__pg_snapshot_row(struct pg *p, struct pgo_msg *m);
void sl__pg_snapshot_row(struct pg *p, struct pgo_msg *m)
{
    struct shape sh = { .event_name = "INSERT", .schema = m->rel->schema, .table = m->rel->name,
                        .keys = m->keys, .new_img = m->new_image, .snapshot = true };

    emit(p, p->snap_txn, ++p->snap_txn->changes, &sh);
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static int pg_start(struct sl_source *s, struct sl_err *err)
{
    struct pg *p = s->ctx;

    (void)err;
    return sl__pg_session_start(p);
}

static void pg_stop(struct sl_source *s)
{
    struct pg *p = s->ctx;

    p->stopping = true;
    sl__pg_session_stop(p);
    sl_source_stopped(s);
}

static char *pg_event(struct sl_source *s, struct sl_record *const *r, size_t n, size_t *len)
{
    (void)s;
    return sl_records_event(r, n, len);
}

/* Read the stream only while the engine wants records and the changes
 * not yet final stay under the read-ahead cap: what is read but not final
 * when sluice dies is what the server sends again. */
bool sl__pg_reading(struct pg *p)
{
    bool on = !p->paused && !p->stopping && !p->throttled;

    sl_pgconn_pause_read(&p->repl, !on);
    return on;
}

static void pg_checkpoint(struct sl_source *s, struct sl_record *const *r, size_t n)
{
    struct pg *p = s->ctx;

    for (size_t i = 0; i < n; i++) {
        struct pg_txn *t = r[i]->handle;
        t->outstanding--;
    }
    p->outstanding -= n < p->outstanding ? n : p->outstanding;
    if (p->throttled && p->outstanding <= p->readahead / 2) {
        p->throttled = false;
        sl__pg_reading(p);
        if (p->phase == PH_SNAPSHOT)
            sl__pg_snapshot_pump(p);
    }
    if (n && p->m_age) {
        p->iterator_age_ms = sl_wall_ms() - r[n - 1]->timestamp_ms;
        sl_metric_set(p->m_age, p->conf->name, (double)p->iterator_age_ms / 1000.0);
    }
    sl__pg_advance(p);
}

/* Streams never release: a record not checkpointed is delivered again. */
static void pg_release(struct sl_source *s, struct sl_record *const *r, size_t n, int64_t d)
{
    (void)s, (void)r, (void)n, (void)d;
}

static void pg_pause(struct sl_source *s)
{
    struct pg *p = s->ctx;

    p->paused = true;
    sl__pg_reading(p);
}

static void pg_resume(struct sl_source *s)
{
    struct pg *p = s->ctx;

    p->paused = false;
    sl__pg_reading(p);
    if (p->phase == PH_SNAPSHOT)
        sl__pg_snapshot_pump(p);
}

static void pg_free_record(struct sl_source *s, struct sl_record *r)
{
    (void)s;
    free(r->id);
    free(r->json);
    free(r);
}

/* The counters kept in `p`, as series, at each scrape (setting them on
 * every change would cost the hot path a lookup per row). */
static void collect(void *arg, struct sl_metrics *m)
{
    struct pg *p = arg;

    (void)m;
    sl_metric_set(p->m_changes, p->conf->name, (double)p->changes);
    sl_metric_set(p->m_txns, p->conf->name, (double)p->txns);
    sl_metric_set(p->m_lag, p->conf->name, p->lag_bytes);
}

static void pg_free(struct sl_source *s)
{
    struct pg *p = s->ctx;

    if (!p)
        return;
    if (sl_engine_metrics(s->engine))
        sl_metrics_off_collect(sl_engine_metrics(s->engine), collect, p);
    sl__pg_session_free(p);
    while (p->thead) {
        struct pg_txn *t = p->thead;
        p->thead = t->next;
        free(t);
    }
    while (p->frags) {
        struct pg_tablefrag *f = p->frags;
        p->frags = f->next;
        free(f->schema);
        free(f->table);
        free(f->text);
        free(f);
    }
    sl_filter_free(p->filter);
    free(p->slot);
    free(p->publication);
    free(p->where);
    free(p->head);
    free(p);
}

static const struct sl_poller_ops pg_ops = {
    .name = "postgres", .klass = SL_CLASS_STREAM, .start = pg_start, .stop = pg_stop,
    .event = pg_event, .checkpoint = pg_checkpoint, .release = pg_release, .pause = pg_pause,
    .resume = pg_resume, .free_record = pg_free_record, .free = pg_free,
    .batch_info = sl__pg_batch_info,
};

/* ------------------------------------------------------------------ */
/* Factory                                                             */

/* Slot names: lower-case letters, digits and underscores, 1..63. */
static bool slot_name_ok(const char *n)
{
    size_t len = strlen(n);

    if (len == 0 || len > 63)
        return false;
    for (const char *c = n; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

static char *default_name(const char *source)
{
    char *n = sl_asprintf("sluice_%s", source);

    for (char *c = n; *c; c++) {
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
        else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    }
    if (strlen(n) > 63)
        n[63] = '\0';
    return n;
}


int sl_pg_source_new(struct sl_engine *e, const struct sl_source_conf *c, struct sl_source **out,
                     struct sl_err *err)
{
    struct pg *p;
    struct sl_metrics *m = sl_engine_metrics(e);
    char msg[256];
    const struct sl_pg_opts *o = sl__pg_opts(c);

    if (!o->dsn)
        return sl_err_set(err, SL_ECONFIG, false, "source %s: dsn is required", c->name);
    if (sl_pgconn_dsn_check(o->dsn, msg, sizeof(msg)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "source %s: bad dsn: %s", c->name, msg);
    if (o->slot && !slot_name_ok(o->slot))
        return sl_err_set(err, SL_ECONFIG, false,
                          "source %s: slot %s: use 1 to 63 lower-case letters, digits or _",
                          c->name, o->slot);
    for (size_t i = 0; i < o->tables.n; i++) {
        const char *dot = strchr(o->tables.v[i], '.');
        if (!dot || dot == o->tables.v[i] || !dot[1] || strchr(dot + 1, '.'))
            return sl_err_set(err, SL_ECONFIG, false,
                              "source %s: table %s: write it as schema.table", c->name,
                              o->tables.v[i]);
    }
    p = sl_calloc(1, sizeof(*p));
    if (c->filter_criteria &&
        sl_filter_compile(c->filter_criteria, &p->filter, msg, sizeof(msg)) != 0) {
        free(p);
        return sl_err_set(err, SL_ECONFIG, false, "source %s: filter_criteria: %s", c->name, msg);
    }
    p->conf = c;
    p->o = o;
    p->base = sl__engine_base(e);
    /* enough for every lane to have its next batches ready */
    p->readahead = (size_t)(4 * c->batch_size * c->parallelization_factor);
    if (p->readahead < 2000)
        p->readahead = 2000;
    p->slot = o->slot ? sl_strdup(o->slot) : default_name(c->name);
    p->publication = o->publication ? sl_strdup(o->publication) : default_name(c->name);
    p->where = sl_pgconn_where(o->dsn);
    p->lock_key = sl__pg_lock_key(p->slot);
    {
        /* the part of every record after eventName that never changes */
        struct sl_jbuf h = { 0 };
        sl_jbuf_puts(&h, "\",\"eventVersion\":\"1.1\",\"eventSource\":\"aws:dynamodb\","
                         "\"awsRegion\":");
        sb_jstr(&h, c->server->region);
        p->head = h.p;
        p->headlen = h.n;
    }
    if (m) {
        p->m_lag = sl_metrics_family(m, "sluice_pg_slot_lag_bytes", SL_METRIC_GAUGE,
                                     "WAL the slot holds: current WAL position minus the slot's "
                                     "confirmed flush position, per source.", "source");
        p->m_flushed = sl_metrics_family(m, "sluice_pg_flushed_lsn", SL_METRIC_GAUGE,
                                         "Last LSN every change before which is final "
                                         "(sent to the server as flushed), per source.", "source");
        p->m_changes = sl_metrics_family(m, "sluice_pg_changes_total", SL_METRIC_COUNTER,
                                         "Row changes received since start, per source.",
                                         "source");
        p->m_txns = sl_metrics_family(m, "sluice_pg_transactions_total", SL_METRIC_COUNTER,
                                      "Committed transactions received since start, per source.",
                                      "source");
        p->m_truncs = sl_metrics_family(m, "sluice_pg_truncates_total", SL_METRIC_COUNTER,
                                        "TRUNCATEs seen and not delivered (DynamoDB Streams has "
                                        "no such event), per source.", "source");
        p->m_age = sl_metrics_family(m, "sluice_pg_iterator_age_seconds", SL_METRIC_GAUGE,
                                     "Age of the last change checkpointed (now minus its commit "
                                     "time), per source.", "source");
        /* every series from the start, at 0 */
        sl_metric_add(p->m_truncs, c->name, 0);
        sl_metric_set(p->m_age, c->name, 0);
        sl_metrics_on_collect(m, collect, p);
    }
    p->s = sl_engine_add_source(e, c, &pg_ops, p);
    *out = p->s;
    return 0;
}
