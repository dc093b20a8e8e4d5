/* The environment's init (sluice-init, built from sandbox/init/) and what
 * sluice tells it.
 *
 * sluice clones a child into the env's namespaces; the child waits until
 * sluice placed it in its cgroups (and mapped its ids), puts the fds below
 * in place, closes every other fd and execs sluice-init, so nothing of
 * sluice's memory or descriptors reaches the environment. sluice-init
 * reads the plan (what to mount, which uid, the seccomp program, the
 * handler's argv and environment), builds the root, starts the handler and
 * reaps until it exits. This header is shared by sandbox/spawn.c (which
 * writes plans) and sandbox/init/ (which reads them). */
#ifndef SLUICE_SANDBOX_INIT_H
#define SLUICE_SANDBOX_INIT_H

#include <stdint.h>
#include <sys/types.h>

/* The fds sluice-init starts with. FD_NETNS is open only when the plan
 * says so; nothing else is. */
enum {
    SL_INIT_FD_PLAN  = 0,  /* a memfd holding the plan */
    SL_INIT_FD_OUT   = 1,  /* the handler's stdout (pipe to sluice) */
    SL_INIT_FD_ERR   = 2,  /* the handler's stderr */
    SL_INIT_FD_SOCK  = 3,  /* the handler's protocol socket */
    SL_INIT_FD_SETUP = 4,  /* setup errors, "step:errno\n"; EOF once the handler runs */
    SL_INIT_FD_NETNS = 5,  /* the network namespace to join */
    SL_INIT_FD_EXE   = 6,  /* (sluice-init itself: close-on-exec, only for the exec) */
};

#define SL_INIT_MAGIC    0x736c6931u  /* "sli1" */
#define SL_INIT_MOUNTS   32
#define SL_INIT_LAYERS   16
#define SL_INIT_NDEV     5            /* /dev/null, zero, full, random, urandom */

/* Strings and arrays are offsets from the plan's start into the area
 * after the header; 0 is "none". */
struct sl_init_mnt {
    uint32_t target;       /* absolute, under the new root */
    uint32_t source;       /* bind source / fs name; 0: mkdir only */
    uint32_t fstype;       /* 0: bind mount */
    uint32_t data;
    uint32_t symlink;      /* create a symlink to this instead */
    uint32_t step;         /* names the step in errors */
    uint32_t readonly;     /* bind: read-only, every mount below it too */
    uint32_t nofollow;     /* bind: reach the source through no symlink */
    uint32_t overlay;      /* the overlay of the layers: data is built from them */
    uint32_t pad;
    uint64_t flags;
};

struct sl_init_plan {
    uint32_t magic;
    uint32_t size;         /* of the whole plan */
    uint32_t relaxed;      /* no namespaces: sweep the handler's processes (reaper.c) */
    uint32_t userns;       /* in a user namespace: no uid switch, no device nodes */
    uint32_t netns;        /* SL_INIT_FD_NETNS is open: join it */
    uint32_t newnet;       /* the clone made a network namespace: bring lo up */
    uint32_t nosock;       /* runtime lambda: the handler gets no fd 3 */
    uint32_t uid;          /* the function's uid and gid */
    uint32_t nm, nlayers;
    uint64_t fsize;        /* RLIMIT_FSIZE */
    uint32_t root, old_root, exe, cwd;
    uint32_t dev[SL_INIT_NDEV];
    uint32_t layers[SL_INIT_LAYERS];
    uint32_t argv, argc;   /* offset of argc string offsets */
    uint32_t envp, envc;
    uint32_t filter, filter_len; /* struct sock_filter[filter_len], 8-aligned */
    uint32_t exts, nexts;  /* runtime lambda: extensions to start before the handler */
    struct sl_init_mnt m[SL_INIT_MOUNTS];
};

/* Bring `lo` up in the calling thread's network namespace (lo.c). Plain
 * system calls only. */
int sl__netns_lo_up(void);

/* reaper.c: the init of a relaxed env (no pid namespace), after it
 * started the handler; see there. */
void sl__reaper_prepare(void);
void sl__reaper_child(void);
void sl__reaper_run(pid_t handler) __attribute__((noreturn));

#endif
