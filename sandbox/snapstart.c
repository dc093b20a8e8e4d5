/* SnapStart: a function's template env initializes once and snapshots
 * itself; every further env is a fork of it, sent its protocol socket and
 * pipes, then placed in its own cgroups once its first message names its
 * pid. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "internal.h"
#include "sluice/frame.h"
#include "sluice/log.h"
#include "sluice/mem.h"

/* The first message of a forked env carries its credentials: read it by
 * hand, place the process in its cgroups, then hand over to a bufferevent. */
static void on_first(evutil_socket_t fd, short what, void *arg)
{
    struct sl_env *env = arg;
    struct sl_fnpool *pool = env->pool;
    char buf[65536], cbuf[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = { buf, sizeof(buf) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf) };
    struct ucred cred = { 0, 0, 0 };
    struct cmsghdr *cm;
    struct sl_err err;
    ssize_t n;
    int pidfd;

    (void)what;
    n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        sl__env_fail(env, "Runtime.ExitError", "restored environment exited before it was ready");
        return;
    }
    for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
            memcpy(&cred, CMSG_DATA(cm), sizeof(cred));
    if (cred.pid <= 0) {
        sl__env_fail(env, "Runtime.InvalidResponse", "restored environment sent no credentials");
        return;
    }
    event_free(env->ev_first);
    env->ev_first = NULL;
    env->proc.pid = cred.pid;
    pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
    env->proc.pidfd = pidfd;
    sl_err_clear(&err);
    if (pidfd < 0 || sl_sandbox_cgroup_new(pool->sb, pool->fn, &env->proc, &err) != 0 ||
        sl_sandbox_adopt(pool->sb, &env->proc, cred.pid, &err) != 0) {
        sl__env_fail(env, "Sandbox.Failure", "cannot isolate the restored environment: %s",
                     err.msg[0] ? err.msg : strerror(errno));
        return;
    }
    if (sl__env_attach(env) != 0) {
        sl__env_fail(env, "Sandbox.Failure", "cannot watch the restored environment");
        return;
    }
    {
        /* a socket bufferevent freezes the end of its input: thaw it to
         * put back the frame recvmsg already took */
        struct evbuffer *in = bufferevent_get_input(env->bev);
        int added;

        evbuffer_unfreeze(in, 0);
        added = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (added != 0) {
            sl__env_fail(env, "Sandbox.Failure", "cannot buffer the restored environment's frame");
            return;
        }
    }
    sl__env_on_read(env->bev, env);
}

/* Ask the template to fork `env` (later, once the template is ready). */
void sl__snapstart_fork(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    struct sl_env *t = pool->template;
    char cbuf[CMSG_SPACE(3 * sizeof(int))], *frame;
    struct iovec iov;
    struct msghdr mh;
    struct cmsghdr *cm;
    size_t len;
    ssize_t n;

    if (!t || !pool->template_ready)
        return; /* done when the template is ready */
    sl_frame_fork(env->id, &frame, &len);
    iov.iov_base = frame;
    iov.iov_len = len;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
    memcpy(CMSG_DATA(cm), env->fork_fds, 3 * sizeof(int));
    /* the template's output buffer only ever holds small frames that the
     * kernel takes whole, so this send does not interleave with them */
    n = evbuffer_get_length(bufferevent_get_output(t->bev)) == 0
            ? sendmsg(t->proc.sock, &mh, MSG_NOSIGNAL) : -1;
    free(frame);
    for (int i = 0; i < 3; i++) {
        close(env->fork_fds[i]);
        env->fork_fds[i] = -1;
    }
    if (n != (ssize_t)len) {
        sl__env_fail(env, "Sandbox.Failure", "cannot ask the snapstart template to fork");
        return;
    }
    env->ev_first = event_new(pool->base, env->proc.sock, EV_READ | EV_PERSIST, on_first, env);
    event_add(env->ev_first, NULL);
}

/* A new env forked from the pool's template. */
struct sl_env *sl__snapstart_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err)
{
    struct sl_env *env;
    int sv[2], outp[2], errp[2], one = 1;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a socket pair: %s", strerror(errno));
        return NULL;
    }
    if (pipe2(outp, O_CLOEXEC) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a pipe: %s", strerror(errno));
        close(sv[0]), close(sv[1]);
        return NULL;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        sl_err_set(err, SL_ESANDBOX, false, "cannot create a pipe: %s", strerror(errno));
        close(sv[0]), close(sv[1]), close(outp[0]), close(outp[1]);
        return NULL;
    }
    setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
    env = sl__env_alloc(pool, ENV_FORKED, provisioned);
    env->proc.sock = sv[0];
    env->proc.out = outp[0];
    env->proc.err = errp[0];
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    env->fork_fds[0] = sv[1];
    env->fork_fds[1] = outp[1];
    env->fork_fds[2] = errp[1];
    sl__env_timer(env->ev_timer, (double)pool->fn->init_timeout_ms);
    sl__snapstart_fork(env);
    return env;
}

/* The template initialized: ask it to snapshot itself. */
void sl__snapstart_template_init(struct sl_env *env)
{
    char *frame;
    size_t len;

    env->state = ENV_IDLE;
    sl_frame_snapshot(&frame, &len);
    bufferevent_write(env->bev, frame, len);
    free(frame);
}

/* The template's snapshot is ready: fork the envs waiting for it. */
void sl__snapstart_template_ready(struct sl_env *env)
{
    struct sl_fnpool *pool = env->pool;
    struct sl_env *e;

    pool->template_ready = true;
    SL_INFO(pool->inst, "snapstart template ready in %.2f ms", env->init_ms);
    LIST_FOREACH(e, &pool->envs, link)
        if (e->kind == ENV_FORKED && e->fork_fds[0] >= 0)
            sl__snapstart_fork(e);
}
