/* The init of a `sandbox: relaxed` environment.
 *
 * A strict env's init is pid 1 of its own pid namespace: when it dies, the
 * kernel kills everything in the namespace, whatever setsid() or double
 * fork a handler did. A relaxed env has no namespaces, so its init does
 * that work itself. It is a child subreaper, so every descendant that
 * loses its parent becomes its child, and it keeps root's CAP_KILL (and
 * nothing else) while the handler runs as the function's uid and cannot
 * signal it. When the handler exits, or when sluice dies (the init's
 * parent-death signal is SIGTERM, which it waits for), it sweeps: SIGKILL
 * every child, reap, again, until it has no child left; then it exits
 * with the handler's status. sluice stops a relaxed env through its
 * cgroup, or without cgroups by sending the init SIGTERM.
 *
 * This is part of sluice-init (sandbox/init/), a program of its own. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init.h"

static sigset_t reaper_set(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    return set;
}

/* Before the handler is cloned: become a subreaper, hold SIGCHLD and
 * SIGTERM for sigwaitinfo, and learn of sluice's death by SIGTERM from
 * now on (until here it was SIGKILL, which is still right: nothing to
 * sweep yet). */
void sl__reaper_prepare(void)
{
    sigset_t set = reaper_set();
    pid_t parent = getppid();

    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 ||
        sigprocmask(SIG_BLOCK, &set, NULL) != 0 ||
        prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0)
        _exit(126);
    if (getppid() != parent)
        _exit(1); /* sluice died in between */
}

/* In the handler, before its exec: the signal mask survives exec. */
void sl__reaper_child(void)
{
    sigset_t set = reaper_set();

    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* The parent pid in /proc/<pid>/stat: "pid (comm) state ppid ...", where
 * comm may hold anything, ')' included. */
static pid_t stat_ppid(const char *name)
{
    char path[64], buf[512];
    size_t len = strlen(name);
    ssize_t n;
    char *p;
    long v = 0;
    int fd;

    if (len > 20)
        return -1;
    memcpy(path, "/proc/", 6);
    memcpy(path + 6, name, len);
    memcpy(path + 6 + len, "/stat", 6);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    if (!(p = strrchr(buf, ')')) || p[1] != ' ' || !p[2] || p[3] != ' ')
        return -1;
    for (p += 4; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (*p - '0');
    return (pid_t)v;
}

/* SIGKILL every process whose parent is us. */
static void kill_children(pid_t self)
{
    char buf[4096];
    long n;
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return;
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '1' || d->d_name[0] > '9')
                continue;
            if (stat_ppid(d->d_name) == self)
                kill((pid_t)atol(d->d_name), SIGKILL);
        }
    }
    close(fd);
}

/* Kill and reap until no child is left. A process forked by a dying one
 * is reparented to us and killed in the next round. */
static void sweep(pid_t self)
{
    struct timespec ms = { 0, 1000000 };

    for (;;) {
        pid_t w;
        int reaped = 0;

        kill_children(self);
        while ((w = waitpid(-1, NULL, WNOHANG)) > 0)
            reaped = 1;
        if (w < 0 && errno == ECHILD)
            return;
        if (!reaped)
            nanosleep(&ms, NULL);
    }
}

/* Keep CAP_KILL alone: enough to SIGKILL the handler's processes. An
 * unprivileged sluice has nothing to drop (and no CAP_KILL to keep: its
 * handlers run as its own uid), so failures only leave it as it was. */
static void keep_cap_kill(void)
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];

    for (int cap = 0; cap <= 63; cap++)
        if (cap != CAP_KILL)
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    memset(data, 0, sizeof(data));
    data[0].effective = data[0].permitted = 1u << CAP_KILL;
    if (syscall(SYS_capset, &hdr, data) != 0) {
        data[0].effective = data[0].permitted = 0;
        syscall(SYS_capset, &hdr, data);
    }
}

void sl__reaper_run(pid_t handler)
{
    sigset_t set = reaper_set();
    pid_t self = getpid();
    int st = 0;

    keep_cap_kill();
    for (;;) {
        siginfo_t si;
        pid_t w;

        if (sigwaitinfo(&set, &si) < 0)
            continue;
        if (si.si_signo == SIGTERM) {
            sweep(self);
            _exit(128 + SIGKILL);
        }
        while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
            if (w != handler)
                continue;
            /* the handler is gone: so is everything it left behind */
            sweep(self);
            if (WIFEXITED(st))
                _exit(WEXITSTATUS(st));
            _exit(128 + WTERMSIG(st));
        }
    }
}
