/* File sink: JSON lines appended to conf->path, one record per line.
 *
 * Writes queue on the loop; one job at a time runs on the worker pool and
 * takes everything queued so far (group commit): one writev, then one
 * fdatasync when conf->fsync is set, then the batch is confirmed on the
 * loop. One job at a time keeps the lines in write order. A failed batch
 * is cut off again (ftruncate to the size before it), so a torn line never
 * stays behind.
 *
 * The queue and the jobs are the batched writer of sinks/batchw.c. */
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

static const struct sl_file_sink_opts *opts_of(const struct sl_sink *s)
{
    return s->conf->opts;
}

/* flags of a job */
#define JOB_FSYNC    1u
#define JOB_SYNC_DIR 2u   /* also fsync the parent directory */

struct fctx {
    struct sl__bw   bw;
    struct sl_sink *s;
    int             fd;
    char           *path;
    bool            dir_synced;   /* parent directory fsynced once */
};

static void fctx_release(void *arg)
{
    struct fctx *c = arg;

    if (c->fd >= 0)
        close(c->fd);
    free(c->path);
    free(c);
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

static void job_work(struct sl__bw_job *j)
{
    struct fctx *c = j->bw->ctx;
    struct iovec iov[64];
    struct stat st;
    struct sl__bw_item *w = j->batch;
    size_t off = 0;    /* bytes of `w` already written */

    if (fstat(c->fd, &st) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot append to %s: %s", c->path,
                           strerror(errno));
        return;
    }
    while (w) {
        int n = 0;
        ssize_t got;

        for (struct sl__bw_item *x = w; x && n < (int)(sizeof(iov) / sizeof(iov[0])); x = x->next) {
            iov[n].iov_base = x->data + (x == w ? off : 0);
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
    if ((j->flags & JOB_FSYNC) && fdatasync(c->fd) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot fsync %s: %s", c->path,
                           strerror(errno));
        return;
    }
    if ((j->flags & JOB_SYNC_DIR) && sync_parent(c->path) != 0) {
        j->rc = sl_err_set(&j->err, SL_EIO, true, "cannot fsync the directory of %s: %s",
                           c->path, strerror(errno));
        return;
    }
    j->rc = 0;
}

/* ------------------------------------------------------------------ */
/* loop side                                                           */

static void job_start(struct sl__bw_job *j)
{
    struct fctx *c = j->bw->ctx;

    if (opts_of(c->s)->fsync)
        j->flags = JOB_FSYNC | (c->dir_synced ? 0 : JOB_SYNC_DIR);
    SL_DEBUG(SL_DBG_SINK, c->s->inst, "appending %zu records (%zu bytes)", j->n, j->bytes);
}

static void job_finish(struct sl__bw_job *j)
{
    struct fctx *c = j->bw->ctx;

    if (j->rc == 0 && (j->flags & JOB_SYNC_DIR))
        c->dir_synced = true;
}

static const struct sl__bw_ops file_bw_ops = {
    .work = job_work,
    .start = job_start,
    .finish = job_finish,
    .release = fctx_release,
};

static int file_open(struct sl_sink *s, struct sl_err *err)
{
    const struct sl_file_sink_opts *conf = s->conf->opts;
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
    c->path = sl_strdup(conf->path);
    rc = sl__bw_init(&c->bw, s, &file_bw_ops, c);
    c->fd = open(conf->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (rc != 0) {
        rc = sl_err_set(err, SL_ENOMEM, false, "cannot open %s: cannot create event", s->inst);
        sl__bw_unref(&c->bw);
        return rc;
    }
    if (c->fd < 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot open %s: %s", conf->path, strerror(errno));
        sl__bw_unref(&c->bw);
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
    char *line = sl_malloc(len + 1);

    memcpy(line, json, len);
    /* A valid JSON document has raw line breaks only between tokens, where
     * a space means the same: keep one record on one line. */
    for (char *p = line; (p = memchr(p, '\n', (size_t)(line + len - p))) != NULL;)
        *p++ = ' ';
    for (char *p = line; (p = memchr(p, '\r', (size_t)(line + len - p))) != NULL;)
        *p++ = ' ';
    line[len] = '\n';
    sl__bw_write(&c->bw, line, len + 1, done, arg);
}

static void file_close(struct sl_sink *s)
{
    struct fctx *c = s->ctx;
    struct sl_err err;

    if (!c)
        return;
    sl_err_set(&err, SL_ESTOPPED, false, "append to %s not confirmed: sink stopped", c->path);
    sl__bw_close(&c->bw, &err);
    s->ctx = NULL;
    sl__bw_unref(&c->bw);
}

static const struct sl_sink_ops file_ops = {
    .name = "file",
    .open = file_open,
    .write = file_write,
    .close = file_close,
};

/* ------------------------------------------------------------------ */
/* Configuration: the keys of a `type: file` sink                        */

#define F(field) offsetof(struct sl_file_sink_opts, field)
static const struct sl_conf_key file_keys[] = {
    { .name = "path", .type = SL_CK_PATH, .flags = SL_CK_REQUIRED, .off = F(path),
      .desc = "File (JSON lines) or SQLite database; relative to the configuration file." },
    { .name = "fsync", .type = SL_CK_BOOL, .def = "true", .off = F(fsync),
      .desc = "fsync each write before confirming it." },
};
#undef F

const struct sl_sink_type sl_file_sink = {
    .conf = {
        .name = "file",
        .keys = file_keys,
        .nkeys = sizeof(file_keys) / sizeof(file_keys[0]),
        .size = sizeof(struct sl_file_sink_opts),
    },
    .ops = &file_ops,
};
