/* Starting one environment.
 *
 * The parent prepares everything (paths, environment, pipes, cgroups,
 * the compiled seccomp filter), then clones a child into new pid, mount,
 * ipc and uts namespaces. The child is the environment's init (pid 1):
 * it joins the shared empty network namespace, builds a read-only root
 * with pivot_root, forks the handler, drops every privilege and reaps
 * orphans until the handler exits. A child forked from a threaded process
 * may only make plain system calls, so nothing below the clone allocates
 * or formats with stdio. Any failed step is reported on the setup pipe
 * as "step:errno" and the environment exits. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define MAX_MOUNTS 32
#define PATH_LEN 512
#define NDEV 5                      /* /dev/null, zero, full, random, urandom */
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* One mount (or symlink) the child makes under the new root. */
struct mnt {
    char        target[PATH_LEN];   /* absolute, under the new root */
    const char *source;             /* bind source / fs name; NULL: mkdir only */
    const char *fstype;             /* NULL: bind mount */
    const char *data;
    unsigned long flags;
    int         readonly;           /* bind: read-only, every mount below it too */
    int         nofollow;           /* bind: reach the source through no symlink */
    char        fdsrc[32];          /* ... by this /proc/self/fd path (child) */
    const char *symlink;            /* create a symlink to this instead */
    const char *step;               /* names the step in errors */
};

struct child {
    int         relaxed;
    int         userns;
    int         netns;              /* the env's network namespace to join, or -1 */
    int         newnet;             /* userns hosts: the clone made one; bring lo up */
    uid_t       uid;                /* the function's uid and gid (ids.c) */
    int         sync_r, setup_w, sock, out_w, err_w;
    const char *root;
    char        old_root[PATH_LEN];
    struct mnt  m[MAX_MOUNTS];
    int         nm;
    char        tmp_data[64];
    char        opt_data[2048];
    char        dev[NDEV][PATH_LEN]; /* device nodes under <root>/dev */
    char        ent_src[8][24];     /* bind sources of the host's system directories */
    const char *layers[MAX_MOUNTS / 2]; /* more than one: the overlay's, in fn->layers */
    int         nlayers;
    char        exe[PATH_LEN];      /* as seen inside */
    char        cwd[PATH_LEN];
    char      **argv;
    char      **envp;
    const struct sock_fprog *filter;
    rlim_t      fsize;
};

/* ------------------------------------------------------------------ */
/* Child side: system calls only                                       */

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

static void fail(const struct child *c, const char *step) __attribute__((noreturn));

static void fail(const struct child *c, const char *step)
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
    if (write(c->setup_w, buf, len) < 0) {
        /* nothing left to tell anyone */
    }
    _exit(127);
}

/* Drop capabilities (and with `switch_uid`, become the function's uid and
 * gid), set no_new_privs and load the seccomp filter. The env's init keeps
 * uid 0: changing uid would clear its parent-death signal, and a handler
 * with the function's uid cannot signal a uid-0 process anyway. */
static void drop_privileges(const struct child *c, int switch_uid)
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];

    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            fail(c, "drop capability bounding set");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (switch_uid && !c->userns) {
        /* raw: glibc's wrappers would first ask the other threads of the
         * sluice this process was cloned from, which do not exist here,
         * to change too, and wait for them forever */
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
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, c->filter, 0, 0) != 0)
        fail(c, "seccomp");
}

static void set_limits(const struct child *c)
{
    struct rlimit core = { 0, 0 }, nofile = { 1024, 1024 }, fsize = { c->fsize, c->fsize };

    if (setrlimit(RLIMIT_CORE, &core) != 0 || setrlimit(RLIMIT_NOFILE, &nofile) != 0 ||
        setrlimit(RLIMIT_FSIZE, &fsize) != 0)
        fail(c, "rlimits");
}

/* Put stdin/stdout/stderr/fd 3 in place and the setup pipe at fd 4
 * (close-on-exec: a successful exec closes it, which the parent sees as
 * EOF), even when the fds overlap; close everything else. */
static void place_fds(struct child *c, int devnull)
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
    if (dup3(high[4], 4, O_CLOEXEC) != 4)
        fail(c, "dup3");
    c->setup_w = 4;
    if (syscall(SYS_close_range, 5, ~0U, 0) != 0)
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
}

static void exec_handler(struct child *c, int devnull) __attribute__((noreturn));

static void exec_handler(struct child *c, int devnull)
{
    place_fds(c, devnull);
    drop_privileges(c, 1);
    if (chdir(c->cwd) != 0)
        fail(c, "chdir to the code directory");
    execve(c->exe, c->argv, c->envp);
    fail(c, "exec handler");
}

/* Open `path` through no symlink at all (before Linux 5.6: not the last
 * component) and put "/proc/self/fd/N" for it in `out`: a mount from
 * there mounts what was opened, so a symlink planted in the code's
 * directories cannot point a mount at the host's files. */
static void open_nofollow(const struct child *c, const char *path, const char *step,
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
static void overlay_data(struct child *c)
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
static void make_readonly(const struct child *c, const struct mnt *m)
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

static void build_root(struct child *c)
{
    /* no tty: a handler has no terminal to reach (docs/SECURITY.md) */
    static const struct { const char *name; unsigned maj, min; } devs[NDEV] = {
        { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 },
        { "random", 1, 8 }, { "urandom", 1, 9 },
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
            if (m->data == c->opt_data)
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
    for (int i = 0; i < NDEV; i++) {
        if (!c->userns) {
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

static void child_main(struct child *c) __attribute__((noreturn));

static void child_main(struct child *c)
{
    pid_t handler;
    char go;
    int devnull, st;

    /* die with sluice, and wait until it placed us in our cgroups */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        fail(c, "parent death signal");
    if (read(c->sync_r, &go, 1) != 1)
        _exit(1);
    close(c->sync_r);
    set_limits(c);

    if (c->relaxed) {
        /* no pid namespace: this init sweeps the handler's processes (reaper.c) */
        setsid();
        sl__reaper_prepare();
    } else {
        /* a session of our own: no controlling terminal, so nothing in the
         * env can open sluice's /dev/tty or TIOCSTI into it */
        if (setsid() < 0)
            fail(c, "setsid");
        /* now that we are in our cgroups, make them our cgroup root */
        if (unshare(CLONE_NEWCGROUP) != 0)
            fail(c, "create cgroup namespace");
        if (c->netns >= 0 && setns(c->netns, CLONE_NEWNET) != 0)
            fail(c, "join the environment's network namespace");
        if (c->newnet && sl__netns_lo_up() != 0)
            fail(c, "bring up loopback");
        if (sethostname("sluice", 6) != 0)
            fail(c, "set hostname");
        build_root(c);
    }
    if ((devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        fail(c, "open /dev/null");

    /* a raw clone, not fork(): this process came from a raw clone of a
     * multi-threaded sluice, so a lock glibc's fork() takes (malloc, stdio)
     * may be held by a thread that does not exist here, and would never
     * be released */
    handler = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
    if (handler < 0)
        fail(c, "fork handler");
    if (handler == 0) {
        if (c->relaxed)
            sl__reaper_child();
        exec_handler(c, devnull);
    }

    /* init: hold nothing (not the handler's channels, not sluice's own
     * fds: its terminal, its sockets), let nothing in the env open
     * /proc/1/fd, reap every orphan, and exit with the handler's status */
    (void)devnull;
    if (syscall(SYS_close_range, 0, ~0U, 0) != 0)
        for (int fd = 0; fd < 1024; fd++)
            close(fd);
    c->setup_w = -1; /* nowhere to report from here on: the exit status tells */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        _exit(125);
    if (c->relaxed)
        sl__reaper_run(handler);
    drop_privileges(c, 0);
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

/* ------------------------------------------------------------------ */
/* Parent side                                                         */

static struct mnt *add(struct child *c, const char *step, const char *rel)
{
    struct mnt *m = &c->m[c->nm++];

    memset(m, 0, sizeof(*m));
    snprintf(m->target, sizeof(m->target), "%s/%s", c->root, rel);
    m->step = step;
    return m;
}

static struct mnt *add_ro(struct child *c, const char *step, const char *rel, const char *source)
{
    struct mnt *m = add(c, step, rel);

    m->source = source;
    m->readonly = 1;
    return m;
}

static struct mnt *add_fs(struct child *c, const char *step, const char *rel, const char *fstype,
                          unsigned long flags, const char *data)
{
    struct mnt *m = add(c, step, rel);

    m->source = fstype;
    m->fstype = fstype;
    m->flags = flags;
    m->data = data;
    return m;
}

/* Step 1: what the child is, where its handler is, and what it may use. */
static void plan_child(struct child *c, const struct sl_sandbox *sb,
                       const struct sl_function_conf *fn, const char *code_dir, const char *base)
{
    c->relaxed = fn->sandbox == SL_SANDBOX_RELAXED;
    c->userns = sb->userns;
    c->netns = -1;
    c->newnet = sb->userns && fn->network == SL_NETWORK_NONE;
    c->root = sb->root;
    c->filter = &sb->filter;
    c->fsize = (rlim_t)fn->ephemeral_storage_mb * 1024 * 1024;
    if (c->relaxed) {
        snprintf(c->exe, sizeof(c->exe), "%s", fn->handler);
        snprintf(c->cwd, sizeof(c->cwd), "%s", code_dir);
    } else {
        snprintf(c->exe, sizeof(c->exe), "/var/task/%s", base);
        snprintf(c->cwd, sizeof(c->cwd), "/var/task");
        snprintf(c->old_root, sizeof(c->old_root), "%s/.old", sb->root);
    }
}

/* The child mounts the code directory and the layers through no symlink
 * (open_nofollow); say so clearly here when one is in the way. */
static int check_source(const char *what, const char *path, struct sl_err *err)
{
    struct open_how how;
    int fd;

    memset(&how, 0, sizeof(how));
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    if (fd < 0 && errno == ENOSYS)
        fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: %s %s has a symlink in its path; "
                          "sluice mounts no directory through a symlink (give its real path)",
                          what, path);
    if (fd < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot open %s %s: %s", what, path,
                          strerror(errno));
    close(fd);
    return 0;
}

/* /opt: nothing, the one layer, or an overlay of them all. */
static int plan_layers(struct child *c, const struct sl_function_conf *fn, struct sl_err *err)
{
    int rc;

    if (fn->layers.n == 0) {
        add(c, "create /opt", "opt");
        return 0;
    }
    if (fn->layers.n > sizeof(c->layers) / sizeof(c->layers[0]))
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: more than %zu layers",
                          sizeof(c->layers) / sizeof(c->layers[0]));
    for (size_t i = 0; i < fn->layers.n; i++)
        if ((rc = check_source("layer", fn->layers.v[i], err)) != 0)
            return rc;
    if (fn->layers.n == 1) {
        add_ro(c, "bind layer at /opt", "opt", fn->layers.v[0])->nofollow = 1;
        return 0;
    }
    /* later layers win, as in Lambda: the child lists the top first */
    for (size_t i = 0; i < fn->layers.n; i++)
        c->layers[c->nlayers++] = fn->layers.v[i];
    add_fs(c, "overlay layers at /opt", "opt", "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
           c->opt_data);
    return 0;
}

/* Step 2 (strict sandboxes): the mounts and device nodes of the new root. */
static int plan_root(struct child *c, const struct sl_sandbox *sb,
                     const struct sl_function_conf *fn, const char *code_dir, struct sl_err *err)
{
    int rc;

    static const char *const devs[NDEV] = { "null", "zero", "full", "random", "urandom" };

    for (int i = 0; i < sb->nents; i++) {
        if (sb->ents[i].link[0]) {
            add(c, "bind system directory", sb->ents[i].name)->symlink = sb->ents[i].link;
        } else {
            snprintf(c->ent_src[i], sizeof(c->ent_src[i]), "/%s", sb->ents[i].name);
            add_ro(c, "bind system directory", sb->ents[i].name, c->ent_src[i]);
        }
    }
    add_ro(c, "bind /etc", "etc", sb->etc);
    add(c, "create /var", "var");
    if ((rc = check_source("code directory", code_dir, err)) != 0)
        return rc;
    add_ro(c, "bind code at /var/task", "var/task", code_dir)->nofollow = 1;
    if (sb->runtime_dir)
        add_ro(c, "bind /var/runtime", "var/runtime", sb->runtime_dir);
    if ((rc = plan_layers(c, fn, err)) != 0)
        return rc;
    /* the function's own: owned by its uid (root inside a user namespace) */
    snprintf(c->tmp_data, sizeof(c->tmp_data), "size=%lldm,mode=0700,uid=%u,gid=%u",
             (long long)fn->ephemeral_storage_mb, c->userns ? 0u : (unsigned)c->uid,
             c->userns ? 0u : (unsigned)c->uid);
    add_fs(c, "mount /tmp", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, c->tmp_data);
    add_fs(c, "mount /proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    add_fs(c, "mount /dev", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755");
    add(c, "link /dev/fd", "dev/fd")->symlink = "/proc/self/fd";
    add(c, "link /dev/stdin", "dev/stdin")->symlink = "/proc/self/fd/0";
    add(c, "link /dev/stdout", "dev/stdout")->symlink = "/proc/self/fd/1";
    add(c, "link /dev/stderr", "dev/stderr")->symlink = "/proc/self/fd/2";
    for (int i = 0; i < NDEV; i++)
        snprintf(c->dev[i], sizeof(c->dev[i]), "%s/dev/%s", sb->root, devs[i]);
    return 0;
}

static char **build_env(const struct sl_sandbox *sb, const struct sl_function_conf *fn,
                        const char *init_type, const char *task_root, const char *base,
                        int relaxed)
{
    size_t n = 0, cap = fn->environment.n + 24;
    char **env = sl_calloc(cap, sizeof(char *));
    const char *rt = relaxed ? sb->runtime_dir : "/var/runtime";

    env[n++] = sl_strdup("PATH=/usr/local/bin:/usr/bin:/bin:/opt/bin");
    env[n++] = sl_strdup("LANG=C.UTF-8");
    env[n++] = sl_strdup("TZ=:UTC");
    env[n++] = sl_asprintf("LAMBDA_TASK_ROOT=%s", task_root);
    env[n++] = sl_asprintf("LAMBDA_RUNTIME_DIR=%s", rt ? rt : "");
    env[n++] = sl_asprintf("PYTHONPATH=%s/python:/opt/python", rt ? rt : "");
    env[n++] = sl_asprintf("_HANDLER=%s", base);
    env[n++] = sl_asprintf("AWS_LAMBDA_FUNCTION_NAME=%s", fn->name);
    env[n++] = sl_asprintf("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%lld", (long long)fn->memory_mb);
    env[n++] = sl_strdup("AWS_LAMBDA_FUNCTION_VERSION=$LATEST");
    env[n++] = sl_asprintf("AWS_LAMBDA_INITIALIZATION_TYPE=%s", init_type);
    env[n++] = sl_strdup("AWS_REGION=us-east-1");
    env[n++] = sl_strdup("AWS_DEFAULT_REGION=us-east-1");
    env[n++] = sl_strdup("SLUICE_RUNTIME_FD=3");
    env[n++] = sl_strdup("HOME=/tmp");
    for (size_t i = 0; i < fn->environment.n; i++)
        env[n++] = sl_asprintf("%s=%s", fn->environment.v[i].key, fn->environment.v[i].value);
    env[n] = NULL;
    return env;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Read what the setup pipe holds (non-blocking) into `err`. */
static void read_setup_error(int fd, struct sl_err *err)
{
    char buf[200];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    char *colon;

    if (n <= 0)
        return;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    colon = strrchr(buf, ':');
    if (colon) {
        *colon = '\0';
        sl_err_set(err, SL_ESANDBOX, false, "sandbox setup failed at '%s': %s", buf,
                   strerror(atoi(colon + 1)));
    }
}

/* The parent's side of one spawn: everything it must free or close. */
struct spawn {
    struct child *c;
    char         *code_dir;      /* the handler's directory (owned) */
    const char   *base;          /* the handler's file name, in fn->handler */
    int           sv[2], outp[2], errp[2], syncp[2], setupp[2];
};

static void spawn_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Free what the parent holds of `s` (closing whatever fds are left). */
static void spawn_destroy(struct spawn *s)
{
    for (int i = 0; i < 2; i++) {
        spawn_close(&s->sv[i]);
        spawn_close(&s->outp[i]);
        spawn_close(&s->errp[i]);
        spawn_close(&s->syncp[i]);
        spawn_close(&s->setupp[i]);
    }
    if (s->c) {
        free_strv(s->c->argv);
        free_strv(s->c->envp);
        free(s->c);
    }
    free(s->code_dir);
}

/* Step 3: the handler's argv and environment. */
static void plan_exec(struct spawn *s, const struct sl_sandbox *sb,
                      const struct sl_function_conf *fn, const char *init_type)
{
    struct child *c = s->c;

    c->argv = sl_calloc(2, sizeof(char *));
    c->argv[0] = sl_strdup(c->exe);
    c->envp = build_env(sb, fn, init_type, c->relaxed ? s->code_dir : "/var/task", s->base,
                        c->relaxed);
}

/* Step 4: the handler's socket (fd 3), stdout and stderr, the sync pipe
 * that holds the child until it is in its cgroups, and the setup pipe. */
static int open_channels(struct spawn *s, struct sl_err *err)
{
    struct child *c = s->c;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->sv) != 0 ||
        pipe2(s->outp, O_CLOEXEC) != 0 || pipe2(s->errp, O_CLOEXEC) != 0 ||
        pipe2(s->syncp, O_CLOEXEC) != 0 || pipe2(s->setupp, O_CLOEXEC) != 0)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot create pipes: %s",
                          strerror(errno));
    c->sync_r = s->syncp[0];
    c->setup_w = s->setupp[1];
    c->sock = s->sv[1];
    c->out_w = s->outp[1];
    c->err_w = s->errp[1];
    return 0;
}

/* Step 5: clone the env's init into its namespaces; it waits on the sync
 * pipe. The child's ends of the channels are closed here. */
static int clone_child(struct spawn *s, struct sl_sbx_proc *p, struct sl_err *err)
{
    unsigned long flags = SIGCHLD | CLONE_PIDFD;
    int pidfd = -1;
    pid_t pid;

    if (!s->c->relaxed)
        flags |= CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                 (s->c->userns ? CLONE_NEWUSER : 0) | (s->c->newnet ? CLONE_NEWNET : 0);
    pid = (pid_t)syscall(SYS_clone, flags, NULL, &pidfd, NULL, 0);
    if (pid == 0)
        child_main(s->c);
    if (pid < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot create namespaces (clone): "
                          "%s; hosts without namespace support need `sandbox: relaxed`",
                          strerror(errno));
    p->pid = pid;
    p->pidfd = pidfd;
    spawn_close(&s->syncp[0]);
    spawn_close(&s->sv[1]);
    spawn_close(&s->outp[1]);
    spawn_close(&s->errp[1]);
    spawn_close(&s->setupp[1]);
    return 0;
}

static int write_id_map(pid_t pid, const char *file, unsigned id, struct sl_err *err)
{
    char path[64], map[64];
    int fd, n;

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    n = snprintf(map, sizeof(map), "0 %u 1", id);
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0 || write(fd, map, (size_t)n) != n) {
        int rc = sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot write %s: %s", file,
                            strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    return 0;
}

/* Step 6 (unprivileged hosts): map our uid and gid to root in the env's
 * user namespace. */
static int map_ids(pid_t pid, struct sl_err *err)
{
    char path[64];
    int fd, rc;

    snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
    if ((fd = open(path, O_WRONLY | O_CLOEXEC)) >= 0) {
        if (write(fd, "deny", 4) != 4)
            SL_DEBUG(SL_DBG_SANDBOX, NULL, "setgroups deny: %s", strerror(errno));
        close(fd);
    }
    if ((rc = write_id_map(pid, "uid_map", (unsigned)getuid(), err)) != 0)
        return rc;
    return write_id_map(pid, "gid_map", (unsigned)getgid(), err);
}

/* Step 7: place the child in its cgroups and let it go on. */
static int release_child(struct spawn *s, struct sl_sandbox *sb, struct sl_sbx_proc *p,
                         struct sl_err *err)
{
    int rc;

    if (p->ncgroup && (rc = sl_sandbox_adopt(sb, p, p->pid, err)) != 0)
        return rc;
    if (write(s->syncp[1], "g", 1) != 1)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: environment died during setup");
    spawn_close(&s->syncp[1]);
    return 0;
}

/* Step 8: the parent's ends of the channels go to `p`, non-blocking. */
static void hand_over(struct spawn *s, struct sl_sbx_proc *p)
{
    p->sock = s->sv[0];
    p->out = s->outp[0];
    p->err = s->errp[0];
    p->setup = s->setupp[0];
    s->sv[0] = s->outp[0] = s->errp[0] = s->setupp[0] = -1;
    set_nonblock(p->sock);
    set_nonblock(p->out);
    set_nonblock(p->err);
    set_nonblock(p->setup);
}

/* A step after the clone failed: kill the child and take the reason it
 * may have written before it died. The exit is not waited for here (the
 * loop must not block): unless already reaped, `p` keeps the killed
 * process for the caller to reap once p->pidfd is readable. */
static void abort_child(struct spawn *s, struct sl_sandbox *sb, struct sl_sbx_proc *p,
                        struct sl_err *err)
{
    sl_sandbox_kill(sb, p);
    /* a child that failed wrote "step:errno" before it exited, and one
     * still waiting on the sync pipe wrote nothing: never block here */
    set_nonblock(s->setupp[0]);
    read_setup_error(s->setupp[0], err);
    sl_sandbox_reap(p);
}

int sl_sandbox_spawn(struct sl_sandbox *sb, const struct sl_function_conf *fn,
                     const char *init_type, struct sl_sbx_proc *p, struct sl_err *err)
{
    struct spawn s = { .sv = { -1, -1 }, .outp = { -1, -1 }, .errp = { -1, -1 },
                       .syncp = { -1, -1 }, .setupp = { -1, -1 } };
    char *slash;
    int rc;

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->pidfd = p->sock = p->out = p->err = p->setup = p->mem_fd = p->netns = -1;
    s.c = sl_calloc(1, sizeof(*s.c));
    s.code_dir = sl_strdup(fn->handler);
    slash = strrchr(s.code_dir, '/');
    s.base = slash ? fn->handler + (slash - s.code_dir) + 1 : fn->handler;
    if (slash)
        *slash = '\0';
    plan_child(s.c, sb, fn, s.code_dir, s.base);
    s.c->uid = sl__sandbox_uid(sb, fn->name);
    p->relaxed = s.c->relaxed;
    if (!s.c->relaxed) {
        if (fn->network == SL_NETWORK_NONE && !sb->userns) {
            if ((rc = sl__netns_take(&sb->net, err)) < 0)
                goto fail;
            p->netns = s.c->netns = rc;
        }
        if ((rc = plan_root(s.c, sb, fn, s.code_dir, err)) != 0)
            goto fail;
    }
    plan_exec(&s, sb, fn, init_type);
    if ((rc = open_channels(&s, err)) != 0)
        goto fail;
    if (sb->cg.kind != CG_NONE && (rc = sl_sandbox_cgroup_new(sb, fn, p, err)) != 0)
        goto fail;
    if ((rc = clone_child(&s, p, err)) != 0)
        goto fail;
    if ((s.c->userns && (rc = map_ids(p->pid, err)) != 0) ||
        (rc = release_child(&s, sb, p, err)) != 0) {
        abort_child(&s, sb, p, err);
        goto fail;
    }
    hand_over(&s, p);
    spawn_destroy(&s);
    return 0;

fail:
    spawn_destroy(&s);
    if (p->pid > 0 && !p->reaped) {
        /* a killed process still to reap: only the cgroups it is in wait */
        int *fds[] = { &p->sock, &p->out, &p->err, &p->setup, &p->mem_fd, &p->netns };
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
            spawn_close(fds[i]);
        return rc;
    }
    p->sock = p->out = p->err = p->setup = -1;
    sl_sandbox_release(sb, p);
    return rc;
}

void sl_sandbox_kill(struct sl_sandbox *sb, struct sl_sbx_proc *p)
{
    (void)sb;
    if (p->pid > 0 && !p->reaped) {
        /* the init of a pid namespace takes everything in it along; a
         * relaxed env's init without cgroups sweeps its descendants on
         * SIGTERM (reaper.c), with cgroups the cgroup kill takes them */
        int sig = p->relaxed && p->ncgroup == 0 ? SIGTERM : SIGKILL;
        if (p->pidfd >= 0)
            syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
        else
            kill(p->pid, sig);
    }
    sl__cgroup_kill(p);
}

bool sl_sandbox_reap(struct sl_sbx_proc *p)
{
    int st;
    pid_t w;

    if (p->reaped || p->pid <= 0)
        return true;
    w = waitpid(p->pid, &st, WNOHANG);
    if (w == p->pid) {
        p->reaped = true;
        p->status = st;
    } else if (w < 0 && errno == ECHILD) {
        p->reaped = true;
        p->status = 0;
    }
    return p->reaped;
}

void sl_sandbox_release(struct sl_sandbox *sb, struct sl_sbx_proc *p)
{
    int *fds[] = { &p->pidfd, &p->sock, &p->out, &p->err, &p->setup, &p->mem_fd, &p->netns };

    (void)sb;
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    sl__cgroup_remove(p);
}

/* Exposed for the environment code: a setup failure message, if any. */
void sl__sandbox_setup_error(int fd, struct sl_err *err)
{
    read_setup_error(fd, err);
}
