/* One network namespace per environment (`network: none`).
 *
 * Every strict env gets a namespace of its own with only a loopback
 * interface, up: its abstract unix sockets, /proc/net/unix, ports on
 * 127.0.0.1 are its own. Making one costs about half a millisecond of
 * kernel work, so a small pool of ready namespaces is kept, filled by one
 * worker thread of its own (an sl_pool) and handed out on the loop. A
 * namespace lives as long as a descriptor of it (or a process in it)
 * does: the pool holds one fd per namespace, the spawn moves that fd into
 * the env's sl_sbx_proc (p->netns), the child setns()es into it, and
 * sl_sandbox_release closes it. sluice keeps that fd for the env's whole
 * life so that it can open sockets inside the namespace later (the
 * Runtime API listening on the env's 127.0.0.1), see sl_sandbox_socket.
 *
 * The worker thread does nothing but unshare: each job moves it into a
 * fresh namespace, so it never needs to go back. When the pool is empty
 * (a burst of starts), the loop makes one itself and returns to the
 * host's namespace, which it holds a descriptor of. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pool.h"

/* One fill job: a namespace made on the worker, or why not. */
struct netns_job {
    struct sl__netns *ns;
    int               fd;
    int               err;      /* errno, 0 if fd is valid */
};

/* Move the calling thread into a new network namespace with loopback up;
 * returns an fd of it, or -errno. */
static int netns_make_here(void)
{
    int fd, e;

    if (unshare(CLONE_NEWNET) != 0)
        return -errno;
    if ((fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (sl__netns_lo_up() != 0) {
        e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* The loop thread goes back to the host's namespace. It cannot fail for a
 * process that could leave it; if it does, nothing the loop does next
 * (connecting to brokers, serving the API) would be right. */
static void back_home(const struct sl__netns *ns)
{
    if (setns(ns->host, CLONE_NEWNET) != 0) {
        SL_ERROR(NULL, "sandbox: cannot return to the host's network namespace: %s",
                 strerror(errno));
        abort();
    }
}

static void fill_work(void *arg)
{
    struct netns_job *j = arg;
    int fd = netns_make_here();

    j->fd = fd >= 0 ? fd : -1;
    j->err = fd >= 0 ? 0 : -fd;
}

static void fill_more(struct sl__netns *ns);

static void fill_done(void *arg)
{
    struct netns_job *j = arg;
    struct sl__netns *ns = j->ns;

    ns->filling = false;
    if (j->fd < 0) {
        /* the next take makes one on the loop and says why if it fails */
        SL_WARN(NULL, "sandbox: cannot pre-make a network namespace: %s", strerror(j->err));
        ns->fill_failed = true;
    } else if (ns->closing || ns->n == NETNS_POOL) {
        close(j->fd);
    } else {
        ns->fds[ns->n++] = j->fd;
    }
    free(j);
    if (!ns->closing && !ns->fill_failed)
        fill_more(ns);
}

static void fill_more(struct sl__netns *ns)
{
    struct netns_job *j;

    if (!ns->workers || ns->filling || ns->n >= NETNS_POOL)
        return;
    j = sl_calloc(1, sizeof(*j));
    j->ns = ns;
    j->fd = -1;
    ns->filling = true;
    sl_pool_submit(ns->workers, fill_work, fill_done, j);
}

int sl__netns_init(struct sl__netns *ns, struct event_base *base, struct sl_err *err)
{
    int fd;

    memset(ns, 0, sizeof(*ns));
    ns->host = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ns->host < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "network namespace: cannot open "
                          "/proc/thread-self/ns/net: %s", strerror(errno));
    /* one now, made the way the loop makes them when the pool is dry:
     * a host that cannot make namespaces fails here, at startup */
    if ((fd = sl__netns_take(ns, err)) < 0) {
        sl__netns_destroy(ns);
        return fd;
    }
    ns->fds[ns->n++] = fd;
    ns->made = 0;
    if (base && sl_pool_new(base, 1, &ns->workers, err) != 0) {
        sl__netns_destroy(ns);
        return err->code ? err->code : SL_ESANDBOX;
    }
    fill_more(ns);
    return 0;
}

void sl__netns_destroy(struct sl__netns *ns)
{
    ns->closing = true;
    sl_pool_free(ns->workers); /* runs the last fill_done, which closes its fd */
    ns->workers = NULL;
    while (ns->n > 0)
        close(ns->fds[--ns->n]);
    if (ns->host >= 0)
        close(ns->host);
    ns->host = -1;
}

int sl__netns_take(struct sl__netns *ns, struct sl_err *err)
{
    int fd;

    if (ns->n > 0) {
        fd = ns->fds[--ns->n];
        ns->pooled++;
        fill_more(ns);
        return fd;
    }
    /* dry: make one here, then back to the host's namespace */
    fd = netns_make_here();
    back_home(ns);
    if (fd < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "network namespace: cannot create one: %s",
                          strerror(-fd));
    ns->made++;
    ns->fill_failed = false;
    fill_more(ns);
    return fd;
}

int sl_sandbox_socket(struct sl_sandbox *sb, const struct sl_sbx_proc *p, int domain, int type,
                      struct sl_err *err)
{
    int s, e;

    if (p->netns < 0)
        return sl_err_set(err, SL_EINVAL, false, "the environment has no network namespace "
                          "of its own");
    if (setns(p->netns, CLONE_NEWNET) != 0)
        return sl_err_set(err, SL_ESANDBOX, false, "cannot enter the environment's network "
                          "namespace: %s", strerror(errno));
    s = socket(domain, type | SOCK_CLOEXEC, 0);
    e = errno;
    back_home(&sb->net);
    if (s < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "socket in the environment's network "
                          "namespace: %s", strerror(e));
    return s;
}

void sl_sandbox_netns_counts(const struct sl_sandbox *sb, size_t *pooled, size_t *made)
{
    *pooled = sb->net.pooled;
    *made = sb->net.made;
}
