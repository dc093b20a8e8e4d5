/* The seccomp filter every handler runs under: kernel administration, and
 * the ioctls that type into a terminal, are refused with EPERM; everything
 * else is allowed. Built once with
 * libseccomp in the parent; children load the compiled BPF, because
 * building it allocates and a child forked from a threaded process must
 * not touch malloc. */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/mem.h"

static const char *const denied[] = {
    /* filesystems and namespaces */
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "name_to_handle_at", "open_by_handle_at",
    /* tracing, bpf, perf */
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open",
    /* kernel and module loading, reboot, swap */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff",
    /* keys */
    "keyctl", "add_key", "request_key",
    /* clocks, accounting, quotas, raw I/O, kernel log */
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct", "quotactl",
    "iopl", "ioperm", "syslog", "lookup_dcookie", "vhangup", "nfsservctl",
    "userfaultfd",
    NULL,
};

int sl__seccomp_build(struct sock_fprog *prog, struct sl_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    const unsigned long ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                   CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
    char *buf = NULL;
    ssize_t n;
    int fd = -1, rc;

    if (!ctx)
        return sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot create a filter");
    for (int i = 0; denied[i]; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not on this architecture */
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) != 0) {
            rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot deny %s: %s", denied[i],
                            strerror(-rc));
            goto out;
        }
    }
    /* clone may not create namespaces (one rule per flag: a rule matches
     * on equality only); clone3 hides its flags in memory seccomp cannot
     * read, so it reports ENOSYS and libc falls back to clone */
    for (unsigned long bit = 1; bit; bit <<= 1) {
        if (!(ns_flags & bit))
            continue;
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, bit, bit));
        if (rc != 0) {
            rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot filter clone: %s",
                            strerror(-rc));
            goto out;
        }
    }
    /* no typing into a terminal (TIOCSTI) nor console tricks (TIOCLINUX),
     * whatever the upper 32 bits of the command: the kernel ignores them */
    {
        static const unsigned long tty_cmds[] = { TIOCSTI, TIOCLINUX };
        for (size_t i = 0; i < sizeof(tty_cmds) / sizeof(tty_cmds[0]); i++) {
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, tty_cmds[i]));
            if (rc != 0) {
                rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot filter ioctl: %s",
                                strerror(-rc));
                goto out;
            }
        }
    }
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "seccomp: cannot filter clone3: %s",
                        strerror(-rc));
        goto out;
    }
    /* no_new_privs is set by the child itself */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);

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
