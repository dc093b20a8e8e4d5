/* File sink: JSON lines appended to conf->path, one record per line.
 *
 * Writes queue on the loop; one job at a time runs on the worker pool and
 * takes everything queued so far (group commit): one writev, then one
 * fdatasync when conf->fsync is set, then the batch is confirmed on the
 * loop. One job at a time keeps the lines in write order. A failed batch
 * is cut off again (ftruncate to the size before it), so a torn line never
 * stays behind.
 *
 * The next job starts from a loop event, not from a job's done callback:
 * the runtime frees the pool (running the last done callbacks) before the
 * sinks, and nothing may be queued into a pool being freed. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

#define BATCH_MAX_RECORDS 1024
#define BATCH_MAX_BYTES   (8u << 20)

struct fwrite {
    char            *line;      /* owned copy, newline-terminated */
    size_t           len;       /* with the newline */
    sl_sink_done_fn  done;      /* NULL once reported */
    void            *arg;
    struct fwrite   *next;
};

struct fctx;

struct fjob {
    struct fctx   *c;
    struct fwrite *batch;
    bool           fsync;
    bool           sync_dir;   /* also fsync the parent directory */
    int            rc;
    struct sl_err  err;        /* filled on the worker */
};

struct fctx {
    struct sl_sink *s;
    int             fd;
    char           *path;
    bool            dir_synced;   /* parent directory fsynced once */
    struct fwrite  *qhead, *qtail; /* queued, no job yet */
    struct fjob    *job;          /* in flight (or its done running) */
    struct event   *kick;         /* starts the next job from the loop */
    int             refs;         /* the sink + a running job */
    bool            closed;
};

static void fctx_unref(struct fctx *c)
{
    if (--c->refs > 0)
        return;
    if (c->kick)
        event_free(c->kick);
    if (c->fd >= 0)
        close(c->fd);
    free(c->path);
    free(c);
}

static void fwrite_free_list(struct fwrite *w)
{
    while (w) {
        struct fwrite *next = w->next;
        free(w->line);
        free(w);
        w = next;
    }
}

/* ------------------------------------------------------------------ */
/* worker side                                                         */

static int sync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    int fd, rc;

    if (n == 0)
        n = slash ? 1 : 0;
    if (n == 0 || n >= sizeof(dir)) {
        dir[0] = '.';
        dir[1] = '\0';
    } else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static void job_work(void *arg)
{
    struct fjob *j = arg;
    struct fctx *c = j->c;
    struct iovec iov[64];
    struct stat st;
    struct fwrite *w = j->batch;
    size_t off = 0;    /* bytes of `w` already written */

    if (fstat(c->fd, &st) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot append to %s: %s", c->path,
                           strerror(errno));
        return;
    }
    while (w) {
        int n = 0;
        ssize_t got;

        for (struct fwrite *x = w; x && n < (int)(sizeof(iov) / sizeof(iov[0])); x = x->next) {
            iov[n].iov_base = x->line + (x == w ? off : 0);
            iov[n].iov_len = x->len - (x == w ? off : 0);
            n++;
        }
        got = writev(c->fd, iov, n);
        if (got < 0) {
            int e = errno;

            if (e == EINTR)
                continue;
            j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot append to %s: %s", c->path,
                               strerror(e));
            /* Cut a torn batch off again; we are the file's only writer. */
            if (ftruncate(c->fd, st.st_size) != 0)
                sl_err_set(&j->err, SL_EIO, true,
                           "cannot append to %s: %s (and cannot cut the partial line off: %s)",
                           c->path, strerror(e), strerror(errno));
            return;
        }
        while (w && got > 0) {
            size_t left = w->len - off;

            if ((size_t)got >= left) {
                got -= (ssize_t)left;
                w = w->next;
                off = 0;
            } else {
                off += (size_t)got;
                got = 0;
            }
        }
    }
    if (j->fsync && fdatasync(c->fd) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot fsync %s: %s", c->path,
                           strerror(errno));
        return;
    }
    if (j->sync_dir && sync_parent(c->path) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot fsync the directory of %s: %s",
                           c->path, strerror(errno));
        return;
    }
    j->rc = 0;
}

/* ------------------------------------------------------------------ */
/* loop side                                                           */

static void job_done(void *arg);

static void submit(struct fctx *c)
{
    struct fjob *j;
    struct fwrite **tail;
    size_t n = 0, bytes = 0;

    if (c->job || !c->qhead || c->closed)
        return;
    j = sl_calloc(1, sizeof(*j));
    j->c = c;
    j->fsync = c->s->conf->fsync;
    j->sync_dir = j->fsync && !c->dir_synced;
    j->batch = c->qhead;
    tail = &j->batch;
    while (*tail && n < BATCH_MAX_RECORDS && (n == 0 || bytes + (*tail)->len <= BATCH_MAX_BYTES)) {
        bytes += (*tail)->len;
        n++;
        tail = &(*tail)->next;
    }
    c->qhead = *tail;
    if (!c->qhead)
        c->qtail = NULL;
    *tail = NULL;
    c->job = j;
    c->refs++;
    SL_DEBUG(SL_DBG_SINK, c->s->inst, "appending %zu records (%zu bytes)", n, bytes);
    sl_pool_submit(c->s->pool, job_work, job_done, j);
}

static void job_done(void *arg)
{
    struct fjob *j = arg;
    struct fctx *c = j->c;

    if (!c->closed && j->rc == 0 && j->sync_dir)
        c->dir_synced = true;
    /* c->job still points at j, so a close from a callback fails the rest. */
    for (struct fwrite *w = j->batch; w && !c->closed; w = w->next) {
        sl_sink_done_fn done = w->done;

        if (!done)
            continue;
        w->done = NULL;
        sl__sink_done(c->s, done, w->arg, j->rc, j->rc ? &j->err : NULL);
    }
    c->job = NULL;
    fwrite_free_list(j->batch);
    free(j);
    if (!c->closed && c->qhead)
        event_active(c->kick, EV_TIMEOUT, 0);
    fctx_unref(c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    submit(arg);
}

static int file_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_sink_conf *conf = s->conf;
    struct fctx *c;
    int rc;

    if (!conf->path || !conf->path[0])
        return sl_err_set(err, SL_ECONFIG, false, "cannot open %s: file sink needs a path",
                          s->inst);
    if (!s->pool)
        return sl_err_set(err, SL_EINVAL, false, "cannot open %s: file sink needs a worker pool",
                          s->inst);
    rc = sl__sink_make_parent(conf->path, err);
    if (rc != 0)
        return rc;
    c = sl_calloc(1, sizeof(*c));
    c->s = s;
    c->refs = 1;
    c->path = sl_strdup(conf->path);
    c->kick = event_new(s->base, -1, 0, on_kick, c);
    c->fd = open(conf->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (!c->kick) {
        rc = sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create event", s->inst);
        fctx_unref(c);
        return rc;
    }
    if (c->fd < 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot open %s: %s", conf->path, strerror(errno));
        fctx_unref(c);
        return rc;
    }
    s->ctx = c;
    SL_INFO(s->inst, "appending JSON lines to %s%s", c->path, conf->fsync ? " (fsync)" : "");
    return 0;
}

static void file_write(struct sl_sink *s, const char *json, size_t len, sl_sink_done_fn done,
                       void *arg)
{
    struct fctx *c = s->ctx;
    struct fwrite *w = sl_calloc(1, sizeof(*w));

    w->line = sl_malloc(len + 1);
    memcpy(w->line, json, len);
    /* A valid JSON document has raw line breaks only between tokens, where
     * a space means the same: keep one record on one line. */
    for (char *p = w->line; (p = memchr(p, '\n', (size_t)(w->line + len - p))) != NULL;)
        *p++ = ' ';
    for (char *p = w->line; (p = memchr(p, '\r', (size_t)(w->line + len - p))) != NULL;)
        *p++ = ' ';
    w->line[len] = '\n';
    w->len = len + 1;
    w->done = done;
    w->arg = arg;
    if (c->qtail)
        c->qtail->next = w;
    else
        c->qhead = w;
    c->qtail = w;
    submit(c);
}

static void file_close(struct sl_sink *s)
{
    struct fctx *c = s->ctx;
    struct sl_err err;

    if (!c)
        return;
    c->closed = true;
    sl_err_set(&err, SL_ESTOPPED, false, "append to %s not confirmed: sink stopped", c->path);
    /* The job keeps its own copies; the worker may still be writing them. */
    if (c->job) {
        for (struct fwrite *w = c->job->batch; w; w = w->next) {
            sl_sink_done_fn done = w->done;

            if (!done)
                continue;
            w->done = NULL;
            sl__sink_done(s, done, w->arg, SL_ESTOPPED, &err);
        }
    }
    while (c->qhead) {
        struct fwrite *w = c->qhead;

        c->qhead = w->next;
        sl__sink_done(s, w->done, w->arg, SL_ESTOPPED, &err);
        free(w->line);
        free(w);
    }
    c->qtail = NULL;
    event_free(c->kick);
    c->kick = NULL;
    s->ctx = NULL;
    fctx_unref(c);
}

const struct sl_sink_ops sl__sink_file_ops = {
    .name = "file",
    .open = file_open,
    .write = file_write,
    .close = file_close,
};
