/* Durable asynchronous queue on SQLite. One connection, used by one
 * worker at a time (the mutex); WAL with synchronous=FULL so a commit is
 * on disk before the caller answers 202. */
#include <pthread.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "asyncq.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define INST "dispatch:async"

TAILQ_HEAD(aevent_list, sl__aevent);

struct sl__asyncq {
    sqlite3            *db;
    pthread_mutex_t     lock;        /* one worker in SQLite at a time */
    struct sl_pool     *pool;
    struct aevent_list  events;      /* committed, in arrival order */
    size_t              depth;
    bool                closing;
};

enum job_kind { JOB_PUT, JOB_UPDATE, JOB_DELETE };

struct job {
    struct sl__asyncq *q;
    int                kind;
    struct sl__aevent *ev;
    int                rc;
    char               errmsg[200];
    void             (*put_done)(void *arg, int rc, const char *id);
    void             (*del_done)(void *arg, int rc);
    void              *arg;
    /* JOB_UPDATE works on a copy: the event may change meanwhile */
    int                attempts;
    int64_t            next_ms;
    char               last_error[256];
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

/* Worker thread. */
static void job_work(void *arg)
{
    struct job *j = arg;
    struct sl__asyncq *q = j->q;
    static const char *const sql[] = {
        [JOB_PUT] = "INSERT INTO events (id, function, payload, enqueued_ms, attempts, next_ms, "
                    "last_error) VALUES (?1, ?2, ?3, ?4, 0, ?4, '')",
        [JOB_UPDATE] = "UPDATE events SET attempts = ?2, next_ms = ?3, last_error = ?4 "
                       "WHERE id = ?1",
        [JOB_DELETE] = "DELETE FROM events WHERE id = ?1",
    };
    sqlite3_stmt *st = NULL;
    int rc;

    pthread_mutex_lock(&q->lock);
    rc = sqlite3_prepare_v2(q->db, sql[j->kind], -1, &st, NULL);
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
        snprintf(j->errmsg, sizeof(j->errmsg), "%s", sqlite3_errmsg(q->db));
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&q->lock);
}

/* Loop thread. */
static void job_done(void *arg)
{
    struct job *j = arg;
    struct sl__asyncq *q = j->q;

    switch (j->kind) {
    case JOB_PUT:
        if (j->rc == 0 && !q->closing) {
            TAILQ_INSERT_TAIL(&q->events, j->ev, link);
            q->depth++;
            j->put_done(j->arg, 0, j->ev->id);
        } else {
            if (j->rc != 0)
                SL_ERROR(INST, "cannot store an event: %s", j->errmsg);
            j->put_done(j->arg, j->rc ? j->rc : SL_ESTOPPED, NULL);
            free(j->ev->payload);
            free(j->ev);
        }
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

static void submit(struct sl__asyncq *q, struct job *j)
{
    j->q = q;
    sl_pool_submit(q->pool, job_work, job_done, j);
}

int sl__asyncq_open(struct event_base *base, struct sl_pool *pool, const char *path,
                    struct sl__asyncq **out, struct sl_err *err)
{
    struct sl__asyncq *q = sl_calloc(1, sizeof(*q));
    sqlite3_stmt *st = NULL;
    char why[256];
    int rc;

    (void)base;
    pthread_mutex_init(&q->lock, NULL);
    TAILQ_INIT(&q->events);
    q->pool = pool;
    {
        /* data_dir may not exist yet */
        char *dir = sl_strdup(path), *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            for (char *p = dir + 1; *p; p++)
                if (*p == '/') {
                    *p = '\0';
                    mkdir(dir, 0755);
                    *p = '/';
                }
            mkdir(dir, 0755);
        }
        free(dir);
    }
    rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                         SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = sl_err_set(err, SL_EIO, false, "cannot open the async queue %s: %s", path,
                        q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(q->db, 5000);
    if (exec(q->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, function TEXT NOT "
                    "NULL, payload BLOB NOT NULL, enqueued_ms INTEGER NOT NULL, attempts INTEGER "
                    "NOT NULL, next_ms INTEGER NOT NULL, last_error TEXT NOT NULL)",
             why, sizeof(why)) != 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot prepare the async queue %s: %s", path, why);
        goto fail;
    }
    rc = sqlite3_prepare_v2(q->db, "SELECT id, function, payload, enqueued_ms, attempts, next_ms, "
                            "last_error FROM events ORDER BY enqueued_ms, rowid", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        struct sl__aevent *ev = sl_calloc(1, sizeof(*ev));
        const void *blob = sqlite3_column_blob(st, 2);

        snprintf(ev->id, sizeof(ev->id), "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(ev->function, sizeof(ev->function), "%s",
                 (const char *)sqlite3_column_text(st, 1));
        ev->len = (size_t)sqlite3_column_bytes(st, 2);
        ev->payload = sl_malloc(ev->len + 1);
        if (ev->len)
            memcpy(ev->payload, blob, ev->len);
        ev->payload[ev->len] = '\0';
        ev->enqueued_ms = sqlite3_column_int64(st, 3);
        ev->attempts = sqlite3_column_int(st, 4);
        ev->next_ms = sqlite3_column_int64(st, 5);
        snprintf(ev->last_error, sizeof(ev->last_error), "%s",
                 (const char *)sqlite3_column_text(st, 6));
        ev->q = q;
        TAILQ_INSERT_TAIL(&q->events, ev, link);
        q->depth++;
    }
    sqlite3_finalize(st);
    if (q->depth)
        SL_INFO(INST, "resuming %zu queued asynchronous events from %s", q->depth, path);
    *out = q;
    return 0;

fail:
    sl__asyncq_close(q);
    return rc;
}

void sl__asyncq_put(struct sl__asyncq *q, const char *fn, const char *payload, size_t len,
                    int64_t now_ms, void (*done)(void *arg, int rc, const char *id), void *arg)
{
    struct job *j = sl_calloc(1, sizeof(*j));
    struct sl__aevent *ev = sl_calloc(1, sizeof(*ev));

    sl_uuid(ev->id);
    snprintf(ev->function, sizeof(ev->function), "%s", fn);
    ev->payload = sl_malloc(len + 1);
    memcpy(ev->payload, payload, len);
    ev->payload[len] = '\0';
    ev->len = len;
    ev->enqueued_ms = now_ms;
    ev->next_ms = now_ms;
    ev->q = q;
    j->kind = JOB_PUT;
    j->ev = ev;
    j->put_done = done;
    j->arg = arg;
    submit(q, j);
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

void sl__asyncq_delete(struct sl__asyncq *q, struct sl__aevent *ev,
                       void (*done)(void *arg, int rc), void *arg)
{
    struct job *j = sl_calloc(1, sizeof(*j));

    j->kind = JOB_DELETE;
    j->ev = ev;
    j->del_done = done;
    j->arg = arg;
    submit(q, j);
}

void sl__asyncq_forget(struct sl__aevent *ev)
{
    struct sl__asyncq *q = ev->q;

    TAILQ_REMOVE(&q->events, ev, link);
    q->depth--;
    free(ev->payload);
    free(ev);
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
    while ((ev = TAILQ_FIRST(&q->events))) {
        TAILQ_REMOVE(&q->events, ev, link);
        free(ev->payload);
        free(ev);
    }
    if (q->db)
        sqlite3_close(q->db);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
