/* The asynchronous queue: the in-memory index every backend shares, and
 * the SQLite backend. One connection, used by one worker at a time (the
 * mutex); WAL with synchronous=FULL so a commit is on disk before the
 * caller answers 202. The Redis backend is asyncq_redis.c. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "internal.h"
#include "sluice/datadir.h"
#include "sluice/env.h"
#include "sluice/hash.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define INST "dispatch:async"

/* ------------------------------------------------------------------ */
/* SQLite backend                                                      */

struct job;

/* Group commit: every submit queues its job here and posts one pool job;
 * the pool job that runs first takes everything queued by then and
 * commits it in one transaction. Later pool jobs find less (or nothing).
 * So one fsync covers all the puts and deletes that arrived meanwhile. */
struct sqlq {
    sqlite3            *db;
    pthread_mutex_t     lock;        /* one worker in SQLite at a time */
    pthread_mutex_t     pend_lock;   /* guards pend: never held across SQLite calls */
    struct job         *pend_head, *pend_tail;
};

enum job_kind { JOB_PUT, JOB_UPDATE, JOB_DELETE };

struct job {
    struct sl__asyncq *q;
    int                kind;
    struct sl__aevent *ev;
    int                rc;
    char               errmsg[200];
    struct sl__aput   *put;
    void             (*del_done)(void *arg, int rc);
    void              *arg;
    /* JOB_UPDATE works on a copy: the event may change meanwhile */
    int                attempts;
    int64_t            next_ms;
    char               last_error[256];
    struct job        *next;         /* in sqlq.pend, then in a flush */
};

/* One pool job: the jobs it committed, for their callbacks on the loop. */
struct flush {
    struct sl__asyncq *q;
    struct job        *jobs;
};

static int exec(sqlite3 *db, const char *sql, char *why, size_t n)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK) {
        snprintf(why, n, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Worker thread, sq->lock held: one statement of the open transaction. */
static void job_run(struct sqlq *sq, struct job *j)
{
    static const char *const sql[] = {
        [JOB_PUT] = "INSERT INTO events (id, function, payload, enqueued_ms, attempts, next_ms, "
                    "last_error) VALUES (?1, ?2, ?3, ?4, 0, ?4, '')",
        [JOB_UPDATE] = "UPDATE events SET attempts = ?2, next_ms = ?3, last_error = ?4 "
                       "WHERE id = ?1",
        [JOB_DELETE] = "DELETE FROM events WHERE id = ?1",
    };
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(sq->db, sql[j->kind], -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, j->ev->id, -1, SQLITE_STATIC);
        if (j->kind == JOB_PUT) {
            sqlite3_bind_text(st, 2, j->ev->function, -1, SQLITE_STATIC);
            sqlite3_bind_blob(st, 3, j->ev->payload, (int)j->ev->len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, j->ev->enqueued_ms);
        } else if (j->kind == JOB_UPDATE) {
            sqlite3_bind_int(st, 2, j->attempts);
            sqlite3_bind_int64(st, 3, j->next_ms);
            sqlite3_bind_text(st, 4, j->last_error, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        j->rc = SL_EIO;
        snprintf(j->errmsg, sizeof(j->errmsg), "%s", sqlite3_errmsg(sq->db));
    }
    sqlite3_finalize(st);
}

/* Worker thread: commit everything queued so far in one transaction. */
static void flush_work(void *arg)
{
    struct flush *f = arg;
    struct sqlq *sq = f->q->ctx;
    char why[200];

    pthread_mutex_lock(&sq->lock);
    pthread_mutex_lock(&sq->pend_lock);
    f->jobs = sq->pend_head;
    sq->pend_head = sq->pend_tail = NULL;
    pthread_mutex_unlock(&sq->pend_lock);
    if (f->jobs) {
        int began = exec(sq->db, "BEGIN IMMEDIATE", why, sizeof(why)) == 0;
        for (struct job *j = f->jobs; j; j = j->next)
            job_run(sq, j);
        if (began && exec(sq->db, "COMMIT", why, sizeof(why)) != 0) {
            /* nothing of it is durable: every job of the batch failed */
            char ignored[64];
            exec(sq->db, "ROLLBACK", ignored, sizeof(ignored));
            for (struct job *j = f->jobs; j; j = j->next) {
                j->rc = SL_EIO;
                snprintf(j->errmsg, sizeof(j->errmsg), "commit failed: %.150s", why);
            }
        }
    }
    pthread_mutex_unlock(&sq->lock);
}

/* Loop thread. */
static void job_done(struct job *j)
{
    switch (j->kind) {
    case JOB_PUT:
        if (j->rc != 0)
            SL_ERROR(INST, "cannot store an event: %s", j->errmsg);
        sl__asyncq_put_done(j->put, j->rc, true);
        break;
    case JOB_UPDATE:
        if (j->rc != 0)
            SL_WARN(INST, "cannot record attempt %d of %s: %s", j->attempts, j->ev->id,
                    j->errmsg);
        break;
    case JOB_DELETE:
        j->del_done(j->arg, j->rc);
        break;
    }
    free(j);
}

static void flush_done(void *arg)
{
    struct flush *f = arg;

    while (f->jobs) {
        struct job *j = f->jobs;
        f->jobs = j->next;
        job_done(j);
    }
    free(f);
}

static void submit(struct sl__asyncq *q, struct job *j)
{
    struct sqlq *sq = q->ctx;
    struct flush *f = sl_calloc(1, sizeof(*f));

    j->q = q;
    j->next = NULL;
    pthread_mutex_lock(&sq->pend_lock);
    if (sq->pend_tail)
        sq->pend_tail->next = j;
    else
        sq->pend_head = j;
    sq->pend_tail = j;
    pthread_mutex_unlock(&sq->pend_lock);
    f->q = q;
    sl_pool_submit(q->pool, flush_work, flush_done, f);
}

static void sqlite_put(struct sl__asyncq *q, struct sl__aput *p)
{
    struct job *j = sl_calloc(1, sizeof(*j));

    j->kind = JOB_PUT;
    j->ev = p->ev;
    j->put = p;
    submit(q, j);
}

static void sqlite_update(struct sl__asyncq *q, struct sl__aevent *ev)
{
    struct job *j = sl_calloc(1, sizeof(*j));

    j->kind = JOB_UPDATE;
    j->ev = ev;
    j->attempts = ev->attempts;
    j->next_ms = ev->next_ms;
    snprintf(j->last_error, sizeof(j->last_error), "%s", ev->last_error);
    /* the event stays busy until the update is queued: nothing frees it
     * meanwhile, and a later delete is queued after this update */
    submit(q, j);
}

static void sqlite_remove(struct sl__asyncq *q, struct sl__aevent *ev,
                          void (*done)(void *arg, int rc), void *arg)
{
    struct job *j = sl_calloc(1, sizeof(*j));

    j->kind = JOB_DELETE;
    j->ev = ev;
    j->del_done = done;
    j->arg = arg;
    submit(q, j);
}

static void sqlite_close(struct sl__asyncq *q)
{
    struct sqlq *sq = q->ctx;

    if (!sq)
        return;
    if (sq->db)
        sqlite3_close(sq->db);
    pthread_mutex_destroy(&sq->lock);
    pthread_mutex_destroy(&sq->pend_lock);
    free(sq);
    q->ctx = NULL;
}

static const struct sl__asyncq_ops sqlite_ops = {
    .name = "sqlite",
    .put = sqlite_put,
    .update = sqlite_update,
    .remove = sqlite_remove,
    .close = sqlite_close,
};

/* async.db and its WAL files, 0600 and not through a link: SQLite makes
 * the WAL and shared-memory files with the database file's mode, so a
 * database made 0600 here keeps them private; ones an older sluice left
 * readable are made private. */
static int private_files(const char *dir, struct sl_err *err)
{
    static const char *const names[] = { "async.db", "async.db-wal", "async.db-shm" };
    char why[512];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int fd = sl_data_file_open(dir, names[i], O_RDWR | (i == 0 ? O_CREAT : 0), why,
                                   sizeof(why));

        if (fd < 0 && (i == 0 || errno != ENOENT))
            return sl_err_set(err, SL_EIO, false, "async queue: %s", why);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}

static int sqlite_load(struct sqlq *sq, struct sl__asyncq *q, const char *path,
                       struct sl_err *err);

/* Open (or create) async.db in data_dir `dir` and load what it holds. */
static int sqlite_open(struct sl__asyncq *q, const char *dir, struct sl_err *err)
{
    struct sqlq *sq = sl_calloc(1, sizeof(*sq));
    char why[512], *path = sl_asprintf("%s/async.db", dir);
    int rc;

    pthread_mutex_init(&sq->lock, NULL);
    pthread_mutex_init(&sq->pend_lock, NULL);
    q->ops = &sqlite_ops;
    q->ctx = sq;
    rc = sl_data_dir_prepare(dir, why, sizeof(why)) != 0
             ? sl_err_set(err, SL_ECONFIG, false, "async queue: %s", why)
             : private_files(dir, err);
    if (rc == 0)
        rc = sqlite_load(sq, q, path, err);
    free(path);
    return rc;
}

static int sqlite_load(struct sqlq *sq, struct sl__asyncq *q, const char *path,
                       struct sl_err *err)
{
    sqlite3_stmt *st = NULL;
    char why[256];
    int rc;

    rc = sqlite3_open_v2(path, &sq->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                         SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK)
        return sl_err_set(err, SL_EIO, false, "cannot open the async queue %s: %s", path,
                          sq->db ? sqlite3_errmsg(sq->db) : sqlite3_errstr(rc));
    sqlite3_busy_timeout(sq->db, 5000);
    if (exec(sq->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, function TEXT NOT "
                     "NULL, payload BLOB NOT NULL, enqueued_ms INTEGER NOT NULL, attempts INTEGER "
                     "NOT NULL, next_ms INTEGER NOT NULL, last_error TEXT NOT NULL)",
             why, sizeof(why)) != 0)
        return sl_err_set(err, SL_EIO, false, "cannot prepare the async queue %s: %s", path, why);
    rc = sqlite3_prepare_v2(sq->db, "SELECT id, function, payload, enqueued_ms, attempts, "
                            "next_ms, last_error FROM events ORDER BY enqueued_ms, rowid", -1, &st,
                            NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(st, 2); /* before _bytes */
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        struct sl__aevent *ev = sl__aevent_new(q, (const char *)sqlite3_column_text(st, 0),
                                               (const char *)sqlite3_column_text(st, 1), blob,
                                               len, sqlite3_column_int64(st, 3));

        ev->attempts = sqlite3_column_int(st, 4);
        ev->next_ms = sqlite3_column_int64(st, 5);
        snprintf(ev->last_error, sizeof(ev->last_error), "%s",
                 (const char *)sqlite3_column_text(st, 6));
        sl__asyncq_index(q, ev);
    }
    sqlite3_finalize(st);
    if (q->depth)
        SL_INFO(INST, "resuming %zu queued asynchronous events from %s", q->depth, path);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The index, shared by the backends                                   */

struct sl__aevent *sl__aevent_new(struct sl__asyncq *q, const char *id, const char *fn,
                                  const char *payload, size_t len, int64_t enqueued_ms)
{
    struct sl__aevent *ev = sl_calloc(1, sizeof(*ev));

    snprintf(ev->id, sizeof(ev->id), "%s", id);
    snprintf(ev->function, sizeof(ev->function), "%s", fn);
    ev->payload = sl_malloc(len + 1);
    if (len)
        memcpy(ev->payload, payload, len);
    ev->payload[len] = '\0';
    ev->len = len;
    ev->enqueued_ms = enqueued_ms;
    ev->next_ms = enqueued_ms;
    ev->q = q;
    return ev;
}

void sl__aevent_free(struct sl__aevent *ev)
{
    if (!ev)
        return;
    free(ev->payload);
    free(ev);
}

static size_t hash_id(const char *id)
{
    return (size_t)sl_fnv1a64(SL_FNV64_INIT, id, strlen(id));
}

static void hash_grow(struct sl__asyncq *q)
{
    size_t n = q->nbuckets ? q->nbuckets * 2 : 64;
    struct sl__aevent **b = sl_calloc(n, sizeof(*b)), *ev;

    for (size_t i = 0; i < q->nbuckets; i++)
        while ((ev = q->buckets[i])) {
            size_t h = hash_id(ev->id) & (n - 1);
            q->buckets[i] = ev->hnext;
            ev->hnext = b[h];
            b[h] = ev;
        }
    free(q->buckets);
    q->buckets = b;
    q->nbuckets = n;
}

void sl__asyncq_index(struct sl__asyncq *q, struct sl__aevent *ev)
{
    struct sl__aevent *after;
    size_t h;

    /* oldest first; arrivals are nearly in order, so look from the tail */
    for (after = TAILQ_LAST(&q->events, sl__aevent_list); after;
         after = TAILQ_PREV(after, sl__aevent_list, link))
        if (after->enqueued_ms <= ev->enqueued_ms)
            break;
    if (after)
        TAILQ_INSERT_AFTER(&q->events, after, ev, link);
    else
        TAILQ_INSERT_HEAD(&q->events, ev, link);
    if (q->depth + 1 > q->nbuckets)
        hash_grow(q);
    h = hash_id(ev->id) & (q->nbuckets - 1);
    ev->hnext = q->buckets[h];
    q->buckets[h] = ev;
    ev->q = q;
    q->depth++;
}

struct sl__aevent *sl__asyncq_find(const struct sl__asyncq *q, const char *id)
{
    struct sl__aevent *ev;

    if (!q->nbuckets)
        return NULL;
    for (ev = q->buckets[hash_id(id) & (q->nbuckets - 1)]; ev; ev = ev->hnext)
        if (strcmp(ev->id, id) == 0)
            return ev;
    return NULL;
}

static void unindex(struct sl__asyncq *q, struct sl__aevent *ev)
{
    struct sl__aevent **pp = &q->buckets[hash_id(ev->id) & (q->nbuckets - 1)];

    while (*pp && *pp != ev)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = ev->hnext;
    TAILQ_REMOVE(&q->events, ev, link);
    q->depth--;
}

void sl__asyncq_arrived(struct sl__asyncq *q)
{
    if (q->ready && !q->closing)
        q->ready(q->ready_arg);
}

void sl__asyncq_put_done(struct sl__aput *p, int rc, bool index)
{
    struct sl__asyncq *q = p->q;
    struct sl__aevent *ev = p->ev;

    if (rc == 0 && q->closing)
        rc = SL_ESTOPPED;
    if (rc == 0) {
        if (index)
            sl__asyncq_index(q, ev);
        p->done(p->arg, 0, ev->id);
        if (!index)
            sl__aevent_free(ev);
    } else {
        p->done(p->arg, rc, NULL);
        sl__aevent_free(ev);
    }
    free(p);
}

/* ------------------------------------------------------------------ */
/* The interface                                                       */

int sl__asyncq_open(struct event_base *base, struct sl_pool *pool,
                    const struct sl_server_conf *conf, void (*ready)(void *arg), void *arg,
                    struct sl__asyncq **out, struct sl_err *err)
{
    struct sl__asyncq *q = sl_calloc(1, sizeof(*q));
    int rc;

    TAILQ_INIT(&q->events);
    q->base = base;
    q->pool = pool;
    q->ready = ready;
    q->ready_arg = arg;
    hash_grow(q);
    if (!conf->async_queue || strcmp(conf->async_queue, "sqlite") == 0) {
        rc = sqlite_open(q, conf->data_dir, err);
    } else {
        rc = sl__asyncq_redis_open(q, conf, err);
    }
    if (rc != 0)
        goto fail;
    *out = q;
    return 0;

fail:
    sl__asyncq_close(q);
    return rc;
}

void sl__asyncq_put(struct sl__asyncq *q, const char *fn, const char *payload, size_t len,
                    int64_t now_ms, void (*done)(void *arg, int rc, const char *id), void *arg)
{
    struct sl__aput *p = sl_calloc(1, sizeof(*p));
    char id[40];

    sl_uuid(id);
    p->q = q;
    p->ev = sl__aevent_new(q, id, fn, payload, len, now_ms);
    p->done = done;
    p->arg = arg;
    q->ops->put(q, p);
}

struct sl__aevent *sl__asyncq_next_due(struct sl__asyncq *q, int64_t now, int64_t *next)
{
    struct sl__aevent *ev;

    TAILQ_FOREACH(ev, &q->events, link) {
        if (ev->busy)
            continue;
        if (ev->next_ms <= now) {
            ev->busy = true;
            return ev;
        }
        if (ev->next_ms < *next)
            *next = ev->next_ms;
    }
    return NULL;
}

void sl__asyncq_release(struct sl__aevent *ev)
{
    ev->busy = false;
}

void sl__asyncq_update(struct sl__asyncq *q, struct sl__aevent *ev)
{
    q->ops->update(q, ev);
}

void sl__asyncq_delete(struct sl__asyncq *q, struct sl__aevent *ev,
                       void (*done)(void *arg, int rc), void *arg)
{
    q->ops->remove(q, ev, done, arg);
}

void sl__asyncq_forget(struct sl__aevent *ev)
{
    unindex(ev->q, ev);
    sl__aevent_free(ev);
}

size_t sl__asyncq_depth(const struct sl__asyncq *q)
{
    return q->depth;
}

int64_t sl__asyncq_oldest_ms(const struct sl__asyncq *q)
{
    const struct sl__aevent *ev = TAILQ_FIRST(&q->events);

    return ev ? ev->enqueued_ms : 0;
}

void sl__asyncq_close(struct sl__asyncq *q)
{
    struct sl__aevent *ev;

    if (!q)
        return;
    q->closing = true;
    if (q->ops)
        q->ops->close(q);
    while ((ev = TAILQ_FIRST(&q->events))) {
        TAILQ_REMOVE(&q->events, ev, link);
        sl__aevent_free(ev);
    }
    free(q->buckets);
    free(q);
}
