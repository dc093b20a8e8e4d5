/* SQLite sink: each record is one row of table `dlq` in the database at
 * conf->path (WAL mode, synchronous=FULL), confirmed after its commit.
 *
 * SQLite calls run on the worker pool, one job at a time (and under the
 * context's mutex besides), so only one thread touches the database at a
 * time. Writes queue on the loop; each job takes everything queued (group
 * commit: one transaction per job), which also keeps the rows in write
 * order. The database is opened by a first job at sl_sink_new time (so
 * problems show up in the log early) and again by the next job whenever
 * it was closed after an error.
 *
 * The runtime frees the pool before the sinks, so the close cannot rely
 * on a job: the database is closed when the last reference goes, on the
 * loop thread, once no job can touch it any more. The queue and the jobs
 * are the batched writer of sinks/batchw.c. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define BUSY_TIMEOUT_MS   5000

struct sctx {
    struct sl__bw    bw;
    struct sl_sink  *s;
    char            *path;
    pthread_mutex_t  lock;      /* held by a job for all of its SQLite calls */
    sqlite3         *db;        /* under lock */
    sqlite3_stmt    *ins;       /* under lock */
    atomic_bool      closing;   /* closed, as the workers see it */
};

static void db_close(struct sctx *c);

/* No job holds the database any more: close it here, on the loop. */
static void sctx_release(void *arg)
{
    struct sctx *c = arg;

    db_close(c);
    pthread_mutex_destroy(&c->lock);
    free(c->path);
    free(c);
}

/* ------------------------------------------------------------------ */
/* worker side (under c->lock)                                         */

static void db_close(struct sctx *c)
{
    if (c->ins)
        sqlite3_finalize(c->ins);
    c->ins = NULL;
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

static int on_mode(void *arg, int ncol, char **vals, char **names)
{
    char *mode = arg;

    (void)names;
    if (ncol > 0 && vals[0])
        snprintf(mode, 16, "%s", vals[0]);
    return 0;
}

static int db_open(struct sctx *c, struct sl_err *err)
{
    char mode[16] = "";
    char *emsg = NULL;
    int e;

    if (c->db)
        return 0;
    e = sqlite3_open_v2(c->path, &c->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (e != SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot open sqlite database %s: %s", c->path,
                   c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(e));
        goto fail;
    }
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    if (sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", on_mode, mode, &emsg) != SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot open sqlite database %s: %s", c->path,
                   emsg ? emsg : sqlite3_errmsg(c->db));
        goto fail;
    }
    if (strcmp(mode, "wal") != 0) {
        sl_err_set(err, SL_EIO, true, "cannot open sqlite database %s: WAL mode refused (%s)",
                   c->path, mode);
        goto fail;
    }
    if (sqlite3_exec(c->db,
                     "PRAGMA synchronous=FULL;"
                     "CREATE TABLE IF NOT EXISTS dlq (id INTEGER PRIMARY KEY, "
                     "created_at TEXT DEFAULT CURRENT_TIMESTAMP, record TEXT NOT NULL)",
                     NULL, NULL, &emsg) != SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot create table dlq in %s: %s", c->path,
                   emsg ? emsg : sqlite3_errmsg(c->db));
        goto fail;
    }
    if (sqlite3_prepare_v2(c->db, "INSERT INTO dlq (record) VALUES (?1)", -1, &c->ins, NULL) !=
        SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot prepare insert into %s: %s", c->path,
                   sqlite3_errmsg(c->db));
        goto fail;
    }
    return 0;

fail:
    sqlite3_free(emsg);
    db_close(c);
    return err->code;
}

/* One transaction for the whole batch. */
static int db_insert(struct sctx *c, struct sl__bw_item *batch, struct sl_err *err)
{
    char *emsg = NULL;
    int e;

    if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, &emsg) != SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot insert into %s: %s", c->path,
                   emsg ? emsg : sqlite3_errmsg(c->db));
        sqlite3_free(emsg);
        return err->code;
    }
    for (struct sl__bw_item *w = batch; w; w = w->next) {
        sqlite3_bind_text(c->ins, 1, w->data, (int)w->len, SQLITE_STATIC);
        e = sqlite3_step(c->ins);
        sqlite3_reset(c->ins);
        sqlite3_clear_bindings(c->ins);
        if (e != SQLITE_DONE) {
            sl_err_set(err, SL_EIO, true, "cannot insert into %s: %s", c->path,
                       sqlite3_errmsg(c->db));
            goto rollback;
        }
    }
    if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, &emsg) != SQLITE_OK) {
        sl_err_set(err, SL_EIO, true, "cannot commit to %s: %s", c->path,
                   emsg ? emsg : sqlite3_errmsg(c->db));
        sqlite3_free(emsg);
        goto rollback;
    }
    return 0;

rollback:
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    e = sqlite3_errcode(c->db) & 0xff;
    /* start over with a fresh handle after anything but contention */
    if (e != SQLITE_BUSY && e != SQLITE_LOCKED)
        db_close(c);
    return err->code;
}

static void job_work(struct sl__bw_job *j)
{
    struct sctx *c = j->bw->ctx;

    pthread_mutex_lock(&c->lock);
    /* after a close nobody waits for this batch: its writes were
     * reported as not confirmed */
    if (!atomic_load(&c->closing)) {
        j->rc = db_open(c, &j->err);
        if (j->rc == 0 && j->batch)
            j->rc = db_insert(c, j->batch, &j->err);
    }
    pthread_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------------ */
/* loop side                                                           */

static void job_finish(struct sl__bw_job *j)
{
    struct sctx *c = j->bw->ctx;

    if (j->rc != 0 && !j->batch)
        SL_ERROR(c->s->inst, "%s", j->err.msg);
}

static const struct sl__bw_ops sqlite_bw_ops = {
    .work = job_work,
    .finish = job_finish,
    .release = sctx_release,
};

static int sqlite_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_sqlite_sink_opts *conf = s->conf->opts;
    struct sctx *c;
    struct stat st;
    int rc;

    if (!conf->path || !conf->path[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: sqlite sink needs a path",
                          s->inst);
    if (!s->pool)
        return sl_err_set(err, SL_EINVAL, false,
                          "cannot open %s: sqlite sink needs a worker pool", s->inst);
    rc = sl__sink_make_parent(conf->path, err);
    if (rc != 0)
        return rc;
    if (stat(conf->path, &st) == 0 && !S_ISREG(st.st_mode))
        return sl_err_set(err, SL_ECONFIG, false,
                          "cannot open sqlite database %s: not a regular file", conf->path);
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    c->path = sl_strdup(conf->path);
    pthread_mutex_init(&c->lock, NULL);
    if (sl__bw_init(&c->bw, s, &sqlite_bw_ops, c) != 0) {
        sl__bw_unref(&c->bw);
        return sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create event", s->inst);
    }
    s->ctx = c;
    SL_INFO(s->inst, "inserting records into table dlq of %s", c->path);
    sl__bw_submit(&c->bw, true); /* open now, so problems show up early */
    return 0;
}

static void sqlite_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                         void *arg)
{
    struct sctx *c = s->ctx;
    char *copy;
    struct sl_err err;

    if (len > 0x7fffffff) {
        sl_err_set(&err, SL_ETOOBIG, false, "cannot insert into %s: record of %zu bytes",
                   c->path, len);
        sl__sink_fail_soon(s, done, arg, &err);
        return;
    }
    copy = sl_malloc(len);
    memcpy(copy, json, len);
    sl__bw_write(&c->bw, copy, len, done, arg);
}

static void sqlite_close(struct sl_sink *s)
{
    struct sctx *c = s->ctx;
    struct sl_err err;

    if (!c)
        return;
    atomic_store(&c->closing, true);
    sl_err_set(&err, SL_ESTOPPED, false, "insert into %s not confirmed: sink stopped", c->path);
    sl__bw_close(&c->bw, &err);
    s->ctx = NULL;
    sl__bw_unref(&c->bw); /* closes the database unless a job still runs */
}

static const struct sl_sink_ops sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .write = sqlite_write,
    .close = sqlite_close,
};

/* ------------------------------------------------------------------ */
/* Configuration: the keys of a `type: sqlite` sink                        */

#define F(field) offsetof(struct sl_sqlite_sink_opts, field)
static const struct sl_conf_key sqlite_keys[] = {
    /* the same row as file's `path` in the reference */
    { .name = "path", .type = SL_CK_PATH, .flags = SL_CK_REQUIRED, .off = F(path),
      .desc = "File (JSON lines) or SQLite database; relative to the configuration file." },
};
#undef F

const struct sl_sink_type sl_sqlite_sink = {
    .conf = {
        .name = "sqlite",
        .keys = sqlite_keys,
        .nkeys = sizeof(sqlite_keys) / sizeof(sqlite_keys[0]),
        .size = sizeof(struct sl_sqlite_sink_opts),
    },
    .ops = &sqlite_ops,
};
