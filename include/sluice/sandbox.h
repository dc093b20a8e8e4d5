/* sluice: sandboxes for handler processes.
 *
 * struct sl_sandbox is the host-wide preparation made once at startup: the
 * cgroup hierarchy in use, a pool of fresh network namespaces (one per
 * environment), each function's uid, the sandbox's root skeleton and
 * /etc, and the compiled seccomp filter.
 * sl_sandbox_spawn starts one environment's processes inside it. */
#ifndef SLUICE_SANDBOX_H
#define SLUICE_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice/config.h"
#include "sluice/err.h"

struct sl_sandbox;

#define SL_SANDBOX_UID_BASE 100000       /* server.sandbox_uid_base's default */
#define SL_SANDBOX_UID_MAX  4000000000LL  /* uids given stay below this */

struct event_base;

struct sl_sandbox_opts {
    const char *state_dir;     /* private directory for the root skeleton */
    const char *runtime_dir;   /* mounted at /var/runtime; NULL: none */
    bool        relaxed_only;  /* every function is `sandbox: relaxed` */
    struct event_base *base;   /* the loop: pre-made network namespaces are handed over
                                * on it (NULL: each is made when an env starts) */
    int64_t     uid_base;      /* function i runs as uid and gid uid_base + i; 0: default */
    const struct sl_function_conf *functions;  /* in configuration order, for the uids */
    size_t      nfunctions;
};

/* Prepare the host. Fails with a message naming the step. */
int sl_sandbox_new(const struct sl_sandbox_opts *o, struct sl_sandbox **out, struct sl_err *err);
void sl_sandbox_free(struct sl_sandbox *sb);

/* "cgroup v1 (memory, cpu, pids)", "cgroup v2" or "none". */
const char *sl_sandbox_cgroups(const struct sl_sandbox *sb);

/* One environment's processes as seen from sluice. */
struct sl_sbx_proc {
    pid_t  pid;                /* host pid of the environment's init */
    int    pidfd;              /* readable once `pid` exited */
    int    sock;               /* sluice's end of the handler's fd 3 */
    int    out, err;           /* read ends of the handler's stdout, stderr */
    int    setup;              /* read end: sandbox setup errors, EOF once exec ran */
    int    mem_fd;             /* the cgroup's peak memory file, kept open: read per invoke */
    int    netns;              /* the env's own network namespace (strict, `network: none`,
                                * root hosts), else -1: kept for the env's whole life */
    int    rapi;               /* runtime lambda: the listening socket on the env's
                                * 127.0.0.1:9001 (non-blocking), else -1 */
    char  *cgroup[3];          /* per-controller directories, NULL if unused */
    int    ncgroup;
    bool   relaxed;
    bool   reaped;
    int    status;             /* wait status once reaped */
};

#define SL_SANDBOX_RAPI_PORT 9001  /* the Runtime API's port on the env's 127.0.0.1 */

/* Start the handler of `fn` in a new sandbox. With runtime lambda the
 * handler gets no fd 3 and `p->rapi` listens (before the handler runs)
 * on 127.0.0.1:9001 inside the env's own network namespace. `init_type` is the value of
 * AWS_LAMBDA_INITIALIZATION_TYPE. All fds in `p` are non-blocking and
 * close-on-exec; the caller owns them (sl_sandbox_release). On failure
 * `p` holds no fds but p->pidfd, and only when the environment's init was
 * created and killed but has not exited yet (p->pid > 0): the caller then
 * reaps it once p->pidfd is readable (sl_sandbox_reap), and releases `p`.
 * Nothing here waits for a process. */
int sl_sandbox_spawn(struct sl_sandbox *sb, const struct sl_function_conf *fn,
                     const char *init_type, struct sl_sbx_proc *p, struct sl_err *err);

/* Put an extra process (a snapstart child, by host pid) into `p`'s cgroups. */
int sl_sandbox_adopt(struct sl_sandbox *sb, struct sl_sbx_proc *p, pid_t pid, struct sl_err *err);

/* Create the cgroups of a process that was not spawned (a snapstart
 * child) and apply `fn`'s limits. */
int sl_sandbox_cgroup_new(struct sl_sandbox *sb, const struct sl_function_conf *fn,
                          struct sl_sbx_proc *p, struct sl_err *err);

/* SIGKILL every process of the environment. */
void sl_sandbox_kill(struct sl_sandbox *sb, struct sl_sbx_proc *p);

/* Collect the exit status if the init has exited; returns true once reaped. */
bool sl_sandbox_reap(struct sl_sbx_proc *p);

/* Peak memory in bytes (0 when unknown) and whether the kernel's OOM
 * killer fired in the environment's memory cgroup. */
int64_t sl_sandbox_max_memory(const struct sl_sbx_proc *p);
bool sl_sandbox_oom_killed(const struct sl_sbx_proc *p);

/* A socket (close-on-exec, blocking) created inside the network
 * namespace of `p`: what listens on the env's 127.0.0.1 (the Runtime API)
 * or connects into it. Negative SL_E* when the env has no namespace of
 * its own (relaxed, `network: host`, SnapStart forks, unprivileged
 * hosts). Call on the loop thread: it enters the namespace and returns. */
int sl_sandbox_socket(struct sl_sandbox *sb, const struct sl_sbx_proc *p, int domain, int type,
                      struct sl_err *err);

/* Network namespaces handed to envs so far: from the pre-made pool, and
 * made on the spot because the pool was empty. */
void sl_sandbox_netns_counts(const struct sl_sandbox *sb, size_t *pooled, size_t *made);

/* Close fds, remove cgroups. The processes must be dead (kill + reap). */
void sl_sandbox_release(struct sl_sandbox *sb, struct sl_sbx_proc *p);

#endif
