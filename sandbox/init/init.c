/* sluice-init: the init (pid 1) of one environment.
 *
 * sluice starts it with the fds of init.h and nothing else, in the env's
 * new pid, mount, ipc and uts namespaces, already in its cgroups. It reads
 * the plan sluice wrote, joins the env's network namespace, builds a
 * read-only root with pivot_root, starts the handler, drops every
 * privilege and reaps orphans until the handler exits, with its status.
 * A relaxed env has no namespaces: the init only starts the handler and
 * sweeps its processes (reaper.c). Any failed step is reported on the
 * setup fd as "step:errno" and the init exits 127.
 *
 * A program of its own, so that no environment holds a copy of sluice's
 * memory or any of its descriptors. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init.h"

#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* One mount (or symlink) under the new root, as read from the plan. */
struct mnt {
    const char   *target;
    const char   *source;
    const char   *fstype;
    const char   *data;
    const char   *symlink;
    const char   *step;
    unsigned long flags;
    int           readonly, nofollow, overlay;
    char          fdsrc[32];          /* the source by its /proc/self/fd path */
};

struct init {
    int         relaxed, userns, netns, newnet, nosock;
    uid_t       uid;
    int         setup_w, sock, out_w, err_w;
    const char *root, *old_root, *exe, *cwd;
    struct mnt  m[SL_INIT_MOUNTS];
    int         nm;
    const char *layers[SL_INIT_LAYERS];
    int         nlayers;
    char        opt_data[2048];
    const char *dev[SL_INIT_NDEV];
    char      **argv, **envp;
    char      **exts;          /* runtime lambda: external extensions to start */
    int         nexts;
    struct sock_fprog filter;
    rlim_t      fsize;
};

static void put_num(char *buf, size_t *len, long v)
{
    char tmp[24];
    int n = 0;

    if (v < 0) {
        buf[(*len)++] = '-';
        v = -v;
    }
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < 20);
    while (n)
        buf[(*len)++] = tmp[--n];
}

static void fail(const struct init *c, const char *step) __attribute__((noreturn));

static void fail(const struct init *c, const char *step)
{
    char buf[160];
    size_t len = 0, sl = strlen(step);
    int e = errno;

    if (sl > 120)
        sl = 120;
    memcpy(buf, step, sl);
    len = sl;
    buf[len++] = ':';
    put_num(buf, &len, e);
    buf[len++] = '\n';
    if (c->setup_w >= 0 && write(c->setup_w, buf, len) < 0) {
        /* nothing left to tell anyone */
    }
    _exit(127);
}

/* ------------------------------------------------------------------ */
/* The plan                                                            */

/* The string at offset `off` of the plan, NULL for 0; a bad offset fails. */
static const char *plan_str(const struct init *c, const char *buf, uint32_t size, uint32_t off)
{
    if (off == 0)
        return NULL;
    if (off < sizeof(struct sl_init_plan) || off >= size || !memchr(buf + off, '\0', size - off)) {
        errno = EINVAL;
        fail(c, "read the plan (bad string)");
    }
    return buf + off;
}

/* argc strings from the offsets at `off`, NULL-terminated. */
static char **plan_strv(const struct init *c, const char *buf, uint32_t size, uint32_t off,
                        uint32_t n)
{
    char **v;

    if (n > 65536 || off < sizeof(struct sl_init_plan) || off > size ||
        (size - off) / sizeof(uint32_t) < n || off % sizeof(uint32_t)) {
        errno = EINVAL;
        fail(c, "read the plan (bad list)");
    }
    if (!(v = calloc(n + 1, sizeof(char *))))
        fail(c, "read the plan");
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s;
        memcpy(&s, buf + off + i * sizeof(uint32_t), sizeof(s));
        if (!(v[i] = (char *)plan_str(c, buf, size, s))) {
            errno = EINVAL;
            fail(c, "read the plan (bad list)");
        }
    }
    return v;
}

/* Read the plan from its memfd (then closed) into `c`. */
static void read_plan(struct init *c)
{
    struct sl_init_plan h;
    struct stat st;
    char *buf;
    size_t got = 0;

    if (fstat(SL_INIT_FD_PLAN, &st) != 0)
        fail(c, "read the plan");
    if (st.st_size < (off_t)sizeof(h) || st.st_size > (64 << 20)) {
        errno = EINVAL;
        fail(c, "read the plan (size)");
    }
    if (!(buf = malloc((size_t)st.st_size)))
        fail(c, "read the plan");
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(SL_INIT_FD_PLAN, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail(c, "read the plan");
        got += (size_t)n;
    }
    close(SL_INIT_FD_PLAN);
    memcpy(&h, buf, sizeof(h));
    if (h.magic != SL_INIT_MAGIC || h.size != (uint32_t)st.st_size || h.nm > SL_INIT_MOUNTS ||
        h.nlayers > SL_INIT_LAYERS) {
        errno = EINVAL;
        fail(c, "read the plan (not from this sluice's build)");
    }
    c->relaxed = (int)h.relaxed;
    c->userns = (int)h.userns;
    c->netns = h.netns ? SL_INIT_FD_NETNS : -1;
    c->newnet = (int)h.newnet;
    c->nosock = (int)h.nosock;
    c->uid = (uid_t)h.uid;
    c->fsize = (rlim_t)h.fsize;
    c->root = plan_str(c, buf, h.size, h.root);
    c->old_root = plan_str(c, buf, h.size, h.old_root);
    c->exe = plan_str(c, buf, h.size, h.exe);
    c->cwd = plan_str(c, buf, h.size, h.cwd);
    if (!c->exe || !c->cwd || (!c->relaxed && (!c->root || !c->old_root))) {
        errno = EINVAL;
        fail(c, "read the plan (no handler)");
    }
    for (int i = 0; i < SL_INIT_NDEV; i++)
        c->dev[i] = plan_str(c, buf, h.size, h.dev[i]);
    c->nlayers = (int)h.nlayers;
    for (int i = 0; i < c->nlayers; i++)
        if (!(c->layers[i] = plan_str(c, buf, h.size, h.layers[i]))) {
            errno = EINVAL;
            fail(c, "read the plan (bad layer)");
        }
    c->nm = (int)h.nm;
    for (int i = 0; i < c->nm; i++) {
        const struct sl_init_mnt *pm = &h.m[i];
        struct mnt *m = &c->m[i];

        m->target = plan_str(c, buf, h.size, pm->target);
        m->source = plan_str(c, buf, h.size, pm->source);
        m->fstype = plan_str(c, buf, h.size, pm->fstype);
        m->data = plan_str(c, buf, h.size, pm->data);
        m->symlink = plan_str(c, buf, h.size, pm->symlink);
        m->step = plan_str(c, buf, h.size, pm->step);
        m->flags = (unsigned long)pm->flags;
        m->readonly = (int)pm->readonly;
        m->nofollow = (int)pm->nofollow;
        m->overlay = (int)pm->overlay;
        if (!m->target || !m->step) {
            errno = EINVAL;
            fail(c, "read the plan (bad mount)");
        }
        if (m->overlay)
            m->data = c->opt_data;
    }
    c->argv = plan_strv(c, buf, h.size, h.argv, h.argc);
    c->envp = plan_strv(c, buf, h.size, h.envp, h.envc);
    if (h.nexts > 10) {
        errno = EINVAL;
        fail(c, "read the plan (too many extensions)");
    }
    c->nexts = (int)h.nexts;
    c->exts = h.nexts ? plan_strv(c, buf, h.size, h.exts, h.nexts) : NULL;
    if (h.filter_len == 0 || h.filter_len > BPF_MAXINSNS || h.filter % 8 ||
        h.filter < sizeof(h) || h.filter > h.size ||
        (h.size - h.filter) / sizeof(struct sock_filter) < h.filter_len) {
        errno = EINVAL;
        fail(c, "read the plan (bad seccomp program)");
    }
    c->filter.len = (unsigned short)h.filter_len;
    c->filter.filter = (struct sock_filter *)(void *)(buf + h.filter); /* malloc: aligned */
}

/* ------------------------------------------------------------------ */
/* Privileges, limits, fds                                             */

/* Drop capabilities (and with `switch_uid`, become the function's uid and
 * gid), set no_new_privs and load the seccomp filter. The init keeps
 * uid 0: changing uid would clear its parent-death signal, and a handler
 * with the function's uid cannot signal a uid-0 process anyway. */
static void drop_privileges(const struct init *c, int switch_uid)
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];

    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            fail(c, "drop capability bounding set");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (switch_uid && !c->userns) {
        if (syscall(SYS_setgroups, 0, NULL) != 0)
            fail(c, "setgroups");
        if (syscall(SYS_setresgid, c->uid, c->uid, c->uid) != 0)
            fail(c, "setresgid");
        if (syscall(SYS_setresuid, c->uid, c->uid, c->uid) != 0)
            fail(c, "setresuid");
    }
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &hdr, data) != 0)
        fail(c, "drop capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail(c, "no_new_privs");
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &c->filter, 0, 0) != 0)
        fail(c, "seccomp");
}

static void set_limits(const struct init *c)
{
    struct rlimit core = { 0, 0 }, nofile = { 1024, 1024 }, fsize = { c->fsize, c->fsize };

    if (setrlimit(RLIMIT_CORE, &core) != 0 || setrlimit(RLIMIT_NOFILE, &nofile) != 0 ||
        setrlimit(RLIMIT_FSIZE, &fsize) != 0)
        fail(c, "rlimits");
}

/* Put stdin/stdout/stderr/fd 3 in place and the setup pipe at fd 4
 * (close-on-exec: a successful exec closes it, which sluice sees as
 * EOF), even when the fds overlap; close everything else. */
static void place_fds(struct init *c, int devnull)
{
    int fds[5] = { devnull, c->out_w, c->err_w, c->sock, c->setup_w }, high[5];

    for (int i = 0; i < 5; i++) {
        high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 16);
        if (high[i] < 0)
            fail(c, "dup");
    }
    for (int i = 0; i < 4; i++)
        if (dup2(high[i], i) != i)
            fail(c, "dup2");
    if (c->nosock)
        close(3); /* runtime lambda: the Runtime API is its only channel */
    if (dup3(high[4], 4, O_CLOEXEC) != 4)
        fail(c, "dup3");
    c->setup_w = 4;
    if (syscall(SYS_close_range, 5, ~0U, 0) != 0)
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
}

static void exec_handler(struct init *c, int devnull) __attribute__((noreturn));

/* What Lambda hides from extensions (the runtime's own variables). */
static int ext_hidden(const char *kv)
{
    static const char *const hide[] = {
        "_HANDLER=", "AWS_EXECUTION_ENV=", "AWS_LAMBDA_LOG_GROUP_NAME=",
        "AWS_LAMBDA_LOG_STREAM_NAME=", "AWS_XRAY_CONTEXT_MISSING=", "AWS_XRAY_DAEMON_ADDRESS=",
        "LAMBDA_RUNTIME_DIR=", "LAMBDA_TASK_ROOT=", "_AWS_XRAY_DAEMON_ADDRESS=",
        "_AWS_XRAY_DAEMON_PORT=",
    };

    for (size_t i = 0; i < sizeof(hide) / sizeof(hide[0]); i++)
        if (strncmp(kv, hide[i], strlen(hide[i])) == 0)
            return 1;
    return 0;
}

/* Runtime lambda: start each external extension, as Lambda does before
 * the runtime: its own process, the function's uid, the handler's output
 * pipes, the handler's environment without what Lambda hides from
 * extensions, cwd /. Their pids in the env's pid namespace are 2..n+1, so
 * the handler's is n+2 (sluice finds it by that to SIGTERM it). */
static void start_extensions(struct init *c, int devnull)
{
    char **envp;
    int n = 0;

    if (!c->nexts)
        return;
    for (char **e = c->envp; e && *e; e++)
        n++;
    if (!(envp = calloc((size_t)n + 1, sizeof(char *))))
        fail(c, "start extensions");
    n = 0;
    for (char **e = c->envp; e && *e; e++)
        if (!ext_hidden(*e))
            envp[n++] = *e;
    for (int i = 0; i < c->nexts; i++) {
        pid_t pid = fork();

        if (pid < 0)
            fail(c, "fork an extension");
        if (pid == 0) {
            char *argv[2] = { c->exts[i], NULL };
            place_fds(c, devnull);
            close(4); /* the setup pipe tells about the handler only */
            drop_privileges(c, 1);
            if (chdir("/") == 0)
                execve(c->exts[i], argv, envp);
            dprintf(2, "sluice-init: cannot start extension %s: %s\n", c->exts[i],
                    strerror(errno));
            _exit(127);
        }
    }
    free(envp);
}

static void exec_handler(struct init *c, int devnull)
{
    place_fds(c, devnull);
    drop_privileges(c, 1);
    if (chdir(c->cwd) != 0)
        fail(c, "chdir to the code directory");
    execve(c->exe, c->argv, c->envp);
    fail(c, "exec handler");
}

/* ------------------------------------------------------------------ */
/* The root                                                            */

/* Open `path` through no symlink at all (before Linux 5.6: not the last
 * component) and put "/proc/self/fd/N" for it in `out`: a mount from
 * there mounts what was opened, so a symlink planted in the code's
 * directories cannot point a mount at the host's files. */
static void open_nofollow(const struct init *c, const char *path, const char *step,
                          char out[32])
{
    struct open_how how;
    size_t len = 14;
    int fd;

    memset(&how, 0, sizeof(how));
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    if (fd < 0 && errno == ENOSYS)
        fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        fail(c, step);
    memcpy(out, "/proc/self/fd/", 14);
    put_num(out, &len, fd);
    out[len] = '\0';
}

/* "lowerdir=" and the layers, the top (last) first, into c->opt_data. */
static void overlay_data(struct init *c)
{
    size_t len = 9;

    memcpy(c->opt_data, "lowerdir=", 9);
    for (int i = c->nlayers; i-- > 0;) {
        char fdpath[32];
        size_t n;

        open_nofollow(c, c->layers[i], "open layer (symlinks are refused)", fdpath);
        n = strlen(fdpath);
        if (len + n + 2 > sizeof(c->opt_data)) {
            errno = E2BIG;
            fail(c, "overlay layers at /opt");
        }
        memcpy(c->opt_data + len, fdpath, n);
        len += n;
        if (i)
            c->opt_data[len++] = ':';
    }
    c->opt_data[len] = '\0';
}

/* A read-only bind is read-only all the way down: a mount below its
 * source (a tmpfs in the code directory) comes along read-only too. */
static void make_readonly(const struct init *c, const struct mnt *m)
{
    struct mount_attr attr;

    memset(&attr, 0, sizeof(attr));
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (syscall(SYS_mount_setattr, AT_FDCWD, m->target, AT_RECURSIVE, &attr, sizeof(attr)) == 0)
        return;
    if (errno != ENOSYS)
        fail(c, m->step);
    /* before Linux 5.12: the top mount alone, nothing below it comes along */
    if (umount2(m->target, MNT_DETACH) != 0 ||
        mount(m->source, m->target, NULL, MS_BIND, NULL) != 0 ||
        mount(NULL, m->target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
              NULL) != 0)
        fail(c, m->step);
}

static void build_root(struct init *c)
{
    /* no tty: a handler has no terminal to reach (docs/SECURITY.md) */
    static const struct { unsigned maj, min; } devs[SL_INIT_NDEV] = {
        { 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 }, { 1, 9 },
    };

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        fail(c, "make mounts private");
    if (mount("sluice", c->root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0)
        fail(c, "mount root tmpfs");
    for (int i = 0; i < c->nm; i++) {
        struct mnt *m = &c->m[i];

        if (m->symlink) {
            if (symlink(m->symlink, m->target) != 0)
                fail(c, m->step);
            continue;
        }
        if (mkdir(m->target, 0755) != 0 && errno != EEXIST)
            fail(c, m->step);
        if (!m->source)
            continue;
        if (m->fstype) {
            if (m->overlay)
                overlay_data(c);
            if (mount(m->source, m->target, m->fstype, m->flags, m->data) != 0)
                fail(c, m->step);
            continue;
        }
        if (m->nofollow) {
            open_nofollow(c, m->source, m->step, m->fdsrc);
            m->source = m->fdsrc;
        }
        if (mount(m->source, m->target, NULL, MS_BIND | MS_REC, NULL) != 0)
            fail(c, m->step);
        if (m->readonly)
            make_readonly(c, m);
    }
    for (int i = 0; i < SL_INIT_NDEV; i++) {
        if (!c->userns && c->dev[i]) {
            /* chmod: mknod's mode is cut by the umask */
            if (mknod(c->dev[i], S_IFCHR | 0666, makedev(devs[i].maj, devs[i].min)) != 0 ||
                chmod(c->dev[i], 0666) != 0)
                fail(c, "create /dev nodes");
        }
        /* (user namespaces cannot mknod; those hosts get no /dev nodes) */
    }
    if (mkdir(c->old_root, 0700) != 0)
        fail(c, "create old root");
    if (syscall(SYS_pivot_root, c->root, c->old_root) != 0)
        fail(c, "pivot_root");
    if (chdir("/") != 0)
        fail(c, "chdir /");
    if (umount2("/.old", MNT_DETACH) != 0)
        fail(c, "detach the host root");
    if (rmdir("/.old") != 0)
        fail(c, "remove old root");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
        fail(c, "make root read-only");
}

int main(void)
{
    static struct init c;
    pid_t handler;
    int devnull, st;

    c.setup_w = SL_INIT_FD_SETUP;
    c.out_w = SL_INIT_FD_OUT;
    c.err_w = SL_INIT_FD_ERR;
    c.sock = SL_INIT_FD_SOCK;
    /* the setup fd reaches the handler's exec only to be closed by it */
    if (fcntl(c.setup_w, F_SETFD, FD_CLOEXEC) != 0)
        _exit(127);
    read_plan(&c);
    set_limits(&c);

    if (c.relaxed) {
        /* no pid namespace: this init sweeps the handler's processes (reaper.c) */
        setsid();
        sl__reaper_prepare();
    } else {
        /* a session of our own: no controlling terminal, so nothing in the
         * env can open sluice's /dev/tty or TIOCSTI into it */
        if (setsid() < 0)
            fail(&c, "setsid");
        /* we are in our cgroups: make them our cgroup root */
        if (unshare(CLONE_NEWCGROUP) != 0)
            fail(&c, "create cgroup namespace");
        if (c.netns >= 0 && setns(c.netns, CLONE_NEWNET) != 0)
            fail(&c, "join the environment's network namespace");
        if (c.netns >= 0)
            close(c.netns);
        if (c.newnet && sl__netns_lo_up() != 0)
            fail(&c, "bring up loopback");
        if (sethostname("sluice", 6) != 0)
            fail(&c, "set hostname");
        build_root(&c);
    }
    if ((devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        fail(&c, "open /dev/null");

    if (!c.relaxed)
        start_extensions(&c, devnull);
    handler = fork();
    if (handler < 0)
        fail(&c, "fork handler");
    if (handler == 0) {
        if (c.relaxed)
            sl__reaper_child();
        exec_handler(&c, devnull);
    }

    /* init: hold nothing (not the handler's channels), let nothing in the
     * env open /proc/1/fd, reap every orphan, and exit with the handler's
     * status */
    if (syscall(SYS_close_range, 0, ~0U, 0) != 0)
        for (int fd = 0; fd < 1024; fd++)
            close(fd);
    c.setup_w = -1; /* nowhere to report from here on: the exit status tells */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        _exit(125);
    if (c.relaxed)
        sl__reaper_run(handler);
    drop_privileges(&c, 0);
    for (;;) {
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            _exit(126);
        if (w != handler)
            continue;
        if (WIFEXITED(st))
            _exit(WEXITSTATUS(st));
        _exit(128 + WTERMSIG(st));
    }
}
