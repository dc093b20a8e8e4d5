/* Worker pool: a mutex-protected FIFO of jobs, N threads, and an eventfd
 * that wakes the loop when jobs complete. No libevent call is made from a
 * worker thread. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pool.h"

struct job {
    sl_pool_work_fn work;
    sl_pool_done_fn done;
    void           *arg;
    struct job     *next;
};

struct sl_pool {
    pthread_mutex_t lock;
    pthread_cond_t  cond;        /* signalled when a job is queued or on stop */
    struct job     *head, *tail; /* queued, not started */
    struct job     *finished;    /* done, waiting for the loop (LIFO, reversed on drain) */
    size_t          pending;     /* queued + running + finished-not-delivered */
    int             stopping;
    pthread_t      *threads;
    int             nthreads;
    int             efd;         /* eventfd: completions */
    struct event   *ev;
};

static void *worker(void *arg)
{
    struct sl_pool *pool = arg;

    for (;;) {
        struct job *j;
        uint64_t one = 1;

        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->cond, &pool->lock);
        j = pool->head;
        if (!j) { /* stopping and nothing left */
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        pool->head = j->next;
        if (!pool->head)
            pool->tail = NULL;
        pthread_mutex_unlock(&pool->lock);

        j->work(j->arg);

        pthread_mutex_lock(&pool->lock);
        j->next = pool->finished;
        pool->finished = j;
        pthread_mutex_unlock(&pool->lock);
        while (write(pool->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
}

/* Loop thread: run `done` for every finished job, oldest first. */
static void drain(struct sl_pool *pool)
{
    struct job *list, *rev = NULL;

    pthread_mutex_lock(&pool->lock);
    list = pool->finished;
    pool->finished = NULL;
    pthread_mutex_unlock(&pool->lock);
    while (list) {
        struct job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        struct job *next = rev->next;
        if (rev->done)
            rev->done(rev->arg);
        free(rev);
        pthread_mutex_lock(&pool->lock);
        pool->pending--;
        pthread_mutex_unlock(&pool->lock);
        rev = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;

    (void)what;
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    drain(arg);
}

int sl_pool_new(struct event_base *base, int nthreads, struct sl_pool **out, struct sl_err *err)
{
    struct sl_pool *pool = sl_calloc(1, sizeof(*pool));
    int rc;

    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pool->efd < 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot create worker pool eventfd: %s",
                        strerror(errno));
        goto fail;
    }
    pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, on_wake, pool);
    if (!pool->ev || event_add(pool->ev, NULL) != 0) {
        rc = sl_err_set(err, SL_EIO, false, "cannot watch worker pool eventfd");
        goto fail;
    }
    pool->threads = sl_calloc((size_t)nthreads, sizeof(pthread_t));
    for (int i = 0; i < nthreads; i++) {
        int e = pthread_create(&pool->threads[i], NULL, worker, pool);
        if (e != 0) {
            rc = sl_err_set(err, SL_EIO, false, "cannot start worker thread: %s", strerror(e));
            goto fail;
        }
        pool->nthreads++;
    }
    *out = pool;
    return 0;

fail:
    sl_pool_free(pool);
    return rc;
}

void sl_pool_submit(struct sl_pool *pool, sl_pool_work_fn work, sl_pool_done_fn done, void *arg)
{
    struct job *j = sl_malloc(sizeof(*j));

    j->work = work;
    j->done = done;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->next = j;
    else
        pool->head = j;
    pool->tail = j;
    pool->pending++;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
}

size_t sl_pool_pending(const struct sl_pool *pool)
{
    size_t n;

    pthread_mutex_lock((pthread_mutex_t *)&pool->lock);
    n = pool->pending;
    pthread_mutex_unlock((pthread_mutex_t *)&pool->lock);
    return n;
}

void sl_pool_free(struct sl_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    drain(pool);
    if (pool->ev)
        event_free(pool->ev);
    if (pool->efd >= 0)
        close(pool->efd);
    free(pool->threads);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
