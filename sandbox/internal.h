/* Internal to sandbox/: the host preparation shared by spawn and cgroups. */
#ifndef SLUICE_SANDBOX_INTERNAL_H
#define SLUICE_SANDBOX_INTERNAL_H

#include <linux/filter.h>
#include <stdbool.h>

#include "sluice/sandbox.h"

enum { CG_NONE = 0, CG_V1, CG_V2 };
enum { CGC_MEMORY = 0, CGC_CPU, CGC_PIDS, CGC__COUNT };

struct sl__cgroups {
    int   kind;                    /* CG_* */
    char *base[CGC__COUNT];        /* our own directory per controller (v2: base[0] only) */
    unsigned long seq;             /* for env directory names */
    char  desc[96];
};

/* A system directory of the host as it appears in the sandbox root. */
struct sl__rootent {
    char name[16];                 /* "usr", "lib64", ... */
    char link[64];                 /* symlink target, or "" for a read-only bind */
};

struct sl_sandbox {
    struct sl__cgroups  cg;
    int                 netns;     /* shared empty network namespace, -1 if none */
    char               *state_dir;
    char               *root;      /* mount point every env builds its root on */
    char               *etc;       /* curated /etc, bound read-only */
    char               *runtime_dir;
    struct sl__rootent  ents[8];
    int                 nents;
    struct sock_fprog   filter;    /* compiled seccomp filter */
    bool                userns;    /* not root: each env gets a user namespace */
};

int  sl__cgroups_init(struct sl__cgroups *cg, struct sl_err *err);
void sl__cgroups_destroy(struct sl__cgroups *cg);
void sl__cgroup_kill(struct sl_sbx_proc *p);
void sl__cgroup_remove(struct sl_sbx_proc *p);
int  sl__seccomp_build(struct sock_fprog *prog, struct sl_err *err);
void sl__sandbox_setup_error(int fd, struct sl_err *err);

#endif
