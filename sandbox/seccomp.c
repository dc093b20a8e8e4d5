/* The seccomp filter every handler (and the env's init) runs under: an
 * allowlist. What is not listed here fails with EPERM; clone3 fails with
 * ENOSYS, so libc falls back to clone, whose flags seccomp can read; the
 * 32-bit and x32 system call ABIs kill the process (libseccomp's "bad
 * architecture" action: only the native ABI is in the filter).
 *
 * The list is Docker's default profile (moby profiles/seccomp/default.json)
 * minus what a handler has no business doing: io_uring, the NUMA memory
 * policy calls, personality other than PER_LINUX, sockets other than
 * AF_UNIX/AF_INET/AF_INET6 (no netlink, no vsock, no packet, no AF_ALG),
 * name_to_handle_at, process_mrelease, memfd_secret, remap_file_pages,
 * modify_ldt and the old 32-bit compat names; ioctl is limited to a few
 * commands that ask a descriptor about itself. docs/SECURITY.md ("Handlers:
 * system calls") says what a handler may do.
 *
 * Names are resolved at compile time (SCMP_SYS: the kernel's __NR_*, or a
 * negative libseccomp pseudo number when the architecture lacks the call:
 * `open` on arm64), so one list serves x86-64 and arm64; pseudo numbers
 * are skipped.
 *
 * Built once with libseccomp in the parent; children load the compiled
 * BPF, because building it allocates and a child cloned from a threaded
 * process must not touch malloc. */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/mem.h"

/* Allowed whatever the arguments. */
static const int allowed[] = {
    /* memory */
    SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
    SCMP_SYS(madvise), SCMP_SYS(msync), SCMP_SYS(mincore), SCMP_SYS(mlock), SCMP_SYS(mlock2),
    SCMP_SYS(munlock), SCMP_SYS(mlockall), SCMP_SYS(munlockall), SCMP_SYS(membarrier),
    SCMP_SYS(pkey_alloc), SCMP_SYS(pkey_free), SCMP_SYS(pkey_mprotect), SCMP_SYS(memfd_create),

    /* processes and threads (clone and clone3: below) */
    SCMP_SYS(fork), SCMP_SYS(vfork), SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(exit),
    SCMP_SYS(exit_group), SCMP_SYS(wait4), SCMP_SYS(waitid), SCMP_SYS(set_tid_address),
    SCMP_SYS(set_robust_list), SCMP_SYS(get_robust_list), SCMP_SYS(rseq), SCMP_SYS(futex),
    SCMP_SYS(futex_waitv), SCMP_SYS(arch_prctl), SCMP_SYS(prctl), SCMP_SYS(gettid),
    SCMP_SYS(getpid), SCMP_SYS(getppid), SCMP_SYS(getpgid), SCMP_SYS(setpgid),
    SCMP_SYS(getpgrp), SCMP_SYS(getsid), SCMP_SYS(setsid), SCMP_SYS(kill), SCMP_SYS(tkill),
    SCMP_SYS(tgkill), SCMP_SYS(pidfd_open), SCMP_SYS(pidfd_send_signal),
    SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity), SCMP_SYS(sched_setaffinity),
    SCMP_SYS(sched_getparam), SCMP_SYS(sched_setparam), SCMP_SYS(sched_getscheduler),
    SCMP_SYS(sched_setscheduler), SCMP_SYS(sched_get_priority_max),
    SCMP_SYS(sched_get_priority_min), SCMP_SYS(sched_rr_get_interval), SCMP_SYS(sched_getattr),
    SCMP_SYS(sched_setattr), SCMP_SYS(getcpu), SCMP_SYS(getpriority), SCMP_SYS(setpriority),
    SCMP_SYS(ioprio_get), SCMP_SYS(ioprio_set), SCMP_SYS(getrlimit), SCMP_SYS(setrlimit),
    SCMP_SYS(prlimit64), SCMP_SYS(getrusage), SCMP_SYS(times), SCMP_SYS(sysinfo),
    SCMP_SYS(uname), SCMP_SYS(umask), SCMP_SYS(capget), SCMP_SYS(capset),
    SCMP_SYS(seccomp), /* a filter of its own can only narrow this one */
    SCMP_SYS(landlock_create_ruleset), SCMP_SYS(landlock_add_rule),
    SCMP_SYS(landlock_restrict_self),

    /* credentials: without capabilities, only to ids the process already has */
    SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid),
    SCMP_SYS(getresuid), SCMP_SYS(getresgid), SCMP_SYS(getgroups), SCMP_SYS(setuid),
    SCMP_SYS(setgid), SCMP_SYS(setreuid), SCMP_SYS(setregid), SCMP_SYS(setresuid),
    SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(setfsuid), SCMP_SYS(setfsgid),

    /* signals */
    SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigpending), SCMP_SYS(rt_sigtimedwait), SCMP_SYS(rt_sigqueueinfo),
    SCMP_SYS(rt_tgsigqueueinfo), SCMP_SYS(rt_sigsuspend), SCMP_SYS(sigaltstack),
    SCMP_SYS(signalfd), SCMP_SYS(signalfd4), SCMP_SYS(pause), SCMP_SYS(alarm),
    SCMP_SYS(restart_syscall),

    /* time and timers */
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday), SCMP_SYS(time), SCMP_SYS(timer_create),
    SCMP_SYS(timer_settime), SCMP_SYS(timer_gettime), SCMP_SYS(timer_getoverrun),
    SCMP_SYS(timer_delete), SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime), SCMP_SYS(getitimer), SCMP_SYS(setitimer),

    /* files and descriptors */
    SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64),
    SCMP_SYS(pwrite64), SCMP_SYS(preadv), SCMP_SYS(pwritev), SCMP_SYS(preadv2),
    SCMP_SYS(pwritev2), SCMP_SYS(open), SCMP_SYS(openat), SCMP_SYS(openat2), SCMP_SYS(creat),
    SCMP_SYS(close), SCMP_SYS(close_range), SCMP_SYS(lseek), SCMP_SYS(stat), SCMP_SYS(fstat),
    SCMP_SYS(lstat), SCMP_SYS(newfstatat), SCMP_SYS(statx), SCMP_SYS(statfs),
    SCMP_SYS(fstatfs), SCMP_SYS(access), SCMP_SYS(faccessat), SCMP_SYS(faccessat2),
    SCMP_SYS(readlink), SCMP_SYS(readlinkat), SCMP_SYS(getdents), SCMP_SYS(getdents64),
    SCMP_SYS(getcwd), SCMP_SYS(chdir), SCMP_SYS(fchdir), SCMP_SYS(mkdir), SCMP_SYS(mkdirat),
    SCMP_SYS(rmdir), SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2),
    SCMP_SYS(link), SCMP_SYS(linkat), SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(symlink),
    SCMP_SYS(symlinkat), SCMP_SYS(chmod), SCMP_SYS(fchmod), SCMP_SYS(fchmodat),
#ifdef __NR_fchmodat2 /* Linux 6.6: glibc 2.39's lchmod, which falls back on ENOSYS only */
    SCMP_SYS(fchmodat2),
#endif
    SCMP_SYS(chown), SCMP_SYS(fchown), SCMP_SYS(lchown),
    SCMP_SYS(fchownat), SCMP_SYS(truncate), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
    SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(sync), SCMP_SYS(syncfs),
    SCMP_SYS(sync_file_range), SCMP_SYS(fadvise64), SCMP_SYS(readahead), SCMP_SYS(utime),
    SCMP_SYS(utimes), SCMP_SYS(utimensat), SCMP_SYS(futimesat), SCMP_SYS(dup), SCMP_SYS(dup2),
    SCMP_SYS(dup3), SCMP_SYS(fcntl), SCMP_SYS(flock), SCMP_SYS(pipe), SCMP_SYS(pipe2),
    SCMP_SYS(sendfile), SCMP_SYS(splice), SCMP_SYS(tee), SCMP_SYS(vmsplice),
    SCMP_SYS(copy_file_range),
    SCMP_SYS(mknod), SCMP_SYS(mknodat), /* FIFOs; devices need CAP_MKNOD */
    SCMP_SYS(getxattr), SCMP_SYS(lgetxattr), SCMP_SYS(fgetxattr), SCMP_SYS(listxattr),
    SCMP_SYS(llistxattr), SCMP_SYS(flistxattr), SCMP_SYS(setxattr), SCMP_SYS(lsetxattr),
    SCMP_SYS(fsetxattr), SCMP_SYS(removexattr), SCMP_SYS(lremovexattr),
    SCMP_SYS(fremovexattr), SCMP_SYS(inotify_init), SCMP_SYS(inotify_init1),
    SCMP_SYS(inotify_add_watch), SCMP_SYS(inotify_rm_watch),

    /* waiting for descriptors; Linux AIO (not io_uring) */
    SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(select), SCMP_SYS(pselect6),
    SCMP_SYS(epoll_create), SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_pwait2), SCMP_SYS(eventfd),
    SCMP_SYS(eventfd2), SCMP_SYS(io_setup), SCMP_SYS(io_destroy), SCMP_SYS(io_submit),
    SCMP_SYS(io_getevents), SCMP_SYS(io_pgetevents), SCMP_SYS(io_cancel),

    /* sockets (socket and socketpair: below) */
    SCMP_SYS(bind), SCMP_SYS(listen), SCMP_SYS(accept), SCMP_SYS(accept4), SCMP_SYS(connect),
    SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(sendto), SCMP_SYS(recvfrom),
    SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(sendmmsg), SCMP_SYS(recvmmsg),
    SCMP_SYS(shutdown), SCMP_SYS(setsockopt), SCMP_SYS(getsockopt),

    /* System V and POSIX IPC: permission-checked, private in a strict env */
    SCMP_SYS(shmget), SCMP_SYS(shmat), SCMP_SYS(shmdt), SCMP_SYS(shmctl), SCMP_SYS(semget),
    SCMP_SYS(semop), SCMP_SYS(semtimedop), SCMP_SYS(semctl), SCMP_SYS(msgget),
    SCMP_SYS(msgsnd), SCMP_SYS(msgrcv), SCMP_SYS(msgctl), SCMP_SYS(mq_open),
    SCMP_SYS(mq_unlink), SCMP_SYS(mq_timedsend), SCMP_SYS(mq_timedreceive),
    SCMP_SYS(mq_notify), SCMP_SYS(mq_getsetattr),

    /* randomness */
    SCMP_SYS(getrandom),
};

/* socket(2) domains; socketpair(2) gets the first alone. The kernel
 * reads an int. */
static const unsigned long socket_domains[] = { AF_UNIX, AF_INET, AF_INET6 };

/* ioctl(2) commands that ask a descriptor about itself or set its
 * blocking and close-on-exec flags (isatty, terminal size, libuv's and
 * CPython's FIONBIO/FIOCLEX, bytes readable, interface name and index).
 * Anything that types into or reconfigures a terminal (TIOCSTI,
 * TIOCLINUX, TCSETS...), drives a device or a filesystem is refused. */
static const unsigned long ioctl_cmds[] = {
    TCGETS, TIOCGWINSZ, TIOCGPGRP, FIONREAD, FIONBIO, FIOCLEX, FIONCLEX,
    SIOCGIFNAME, SIOCGIFINDEX,
    _IOR('T', 0x2A, char[44]), /* TCGETS2 (struct termios2 is 44 bytes): newer glibc's isatty */
};

/* personality(2): PER_LINUX, and 0xffffffff, which only asks. Not
 * PER_LINUX32, nor ADDR_NO_RANDOMIZE and the other flags that weaken the
 * address space or change what uname says. */
static const unsigned long personas[] = { PER_LINUX, 0xffffffffUL };

/* clone(2) may not create namespaces (the mask Docker uses) */
#define NS_FLAGS                                                                                  \
    ((unsigned long)(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
                     CLONE_NEWNET | CLONE_NEWCGROUP))

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Allow `nr` when the low 32 bits of argument `arg` are one of `vals`
 * (the kernel reads an int there; the upper half does not matter). */
static int allow_arg32(scmp_filter_ctx ctx, int nr, unsigned arg, const unsigned long *vals,
                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct scmp_arg_cmp cmp = { arg, SCMP_CMP_MASKED_EQ, 0xffffffffUL, vals[i] };
        int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, const char **what)
{
    int rc;

    *what = "allowlist";
    for (size_t i = 0; i < N(allowed); i++) {
        if (allowed[i] < 0)
            continue; /* not on this architecture */
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0)) != 0)
            return rc;
    }
    *what = "socket";
    if ((rc = allow_arg32(ctx, SCMP_SYS(socket), 0, socket_domains, N(socket_domains))) != 0)
        return rc;
    *what = "socketpair";
    if ((rc = allow_arg32(ctx, SCMP_SYS(socketpair), 0, socket_domains, 1)) != 0)
        return rc;
    *what = "ioctl";
    if ((rc = allow_arg32(ctx, SCMP_SYS(ioctl), 1, ioctl_cmds, N(ioctl_cmds))) != 0)
        return rc;
    *what = "personality";
    if ((rc = allow_arg32(ctx, SCMP_SYS(personality), 0, personas, N(personas))) != 0)
        return rc;
    *what = "clone";
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, NS_FLAGS, 0));
    if (rc != 0)
        return rc;
    /* clone3 hides its flags in memory seccomp cannot read: ENOSYS makes
     * glibc (and musl, Go, Rust) fall back to clone */
    *what = "clone3";
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

int sl__seccomp_build(struct sock_fprog *prog, struct sl_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    const char *what = "";
    char *buf = NULL;
    ssize_t n;
    int fd = -1, rc;

    if (!ctx)
        return sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot create a filter");
    /* other ABIs of this CPU (i386 and x32 on x86-64, AArch32 on arm64)
     * are not in the filter: a call through one of them kills */
    if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot set the bad-ABI action: %s",
                        strerror(-rc));
        goto out;
    }
    if ((rc = add_rules(ctx, &what)) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot add the %s rules: %s", what,
                        strerror(-rc));
        goto out;
    }
    /* no_new_privs is set by the child itself */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    /* a binary tree: every system call pays about ten comparisons, not
     * a walk down the whole list (libseccomp 2.5) */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);

    fd = memfd_create("sluice-seccomp", MFD_CLOEXEC);
    if (fd < 0 || seccomp_export_bpf(ctx, fd) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot compile the filter");
        goto out;
    }
    n = lseek(fd, 0, SEEK_END);
    if (n <= 0 || n % (ssize_t)sizeof(struct sock_filter) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: compiled filter has %zd bytes", n);
        goto out;
    }
    buf = sl_malloc((size_t)n);
    if (pread(fd, buf, (size_t)n, 0) != n) {
        free(buf);
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot read the compiled filter");
        goto out;
    }
    prog->filter = (struct sock_filter *)buf;
    prog->len = (unsigned short)(n / (ssize_t)sizeof(struct sock_filter));
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    return rc;
}
