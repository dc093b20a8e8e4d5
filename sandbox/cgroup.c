/* Per-environment cgroups: memory = memory_mb (no swap), CPU quota in
 * proportion to memory (1769 MB = one CPU), a pids limit. cgroup v2 when
 * its controllers are available, else the v1 memory, cpu and pids
 * hierarchies. Each sluice process works under <own cgroup>/sluice-<pid>. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define PIDS_MAX     1024     /* Lambda's processes + threads per environment */
#define CPU_PERIOD   100000   /* us */
#define MB_PER_CPU   1769

static const char *const v1_names[CGC__COUNT] = { "memory", "cpu", "pids" };

static int write_file(const char *dir, const char *file, const char *val)
{
    char path[512];
    int fd, rc = 0;
    size_t len = strlen(val);

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (write(fd, val, len) != (ssize_t)len)
        rc = -errno;
    close(fd);
    return rc;
}

static int64_t read_num(const char *dir, const char *file, const char *key)
{
    char path[512], buf[4096];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    if (!key)
        return strtoll(buf, NULL, 10);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        size_t kl = strlen(key);
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            return strtoll(line + kl + 1, NULL, 10);
    }
    return -1;
}

/* Where a controller (v1) or the unified hierarchy (v2, ctrl NULL) is
 * mounted, from /proc/self/mountinfo. */
static char *find_mount(const char *ctrl)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096], *found = NULL;

    if (!f)
        return NULL;
    while (!found && fgets(line, sizeof(line), f)) {
        char mnt[1024], fstype[64], opts[1024];
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %1023s", mnt) != 1 ||
            sscanf(sep + 3, "%63s %*s %1023s", fstype, opts) != 2)
            continue;
        if (!ctrl && strcmp(fstype, "cgroup2") == 0) {
            found = sl_strdup(mnt);
        } else if (ctrl && strcmp(fstype, "cgroup") == 0) {
            for (char *o = strtok(opts, ","); o; o = strtok(NULL, ","))
                if (strcmp(o, ctrl) == 0)
                    found = sl_strdup(mnt);
        }
    }
    fclose(f);
    return found;
}

/* Our own path in a hierarchy, from /proc/self/cgroup ("0" for v2). */
static char *own_path(const char *ctrl)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    char line[4096], *found = NULL;

    if (!f)
        return NULL;
    while (!found && fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        line[strcspn(line, "\n")] = '\0';
        c2[1 + strcspn(c2 + 1, "\n")] = '\0';
        if (!ctrl ? strcmp(line, "0") == 0 && c1[1] == '\0' : 0) {
            found = sl_strdup(c2 + 1);
        } else if (ctrl) {
            for (char *o = strtok(c1 + 1, ","); o; o = strtok(NULL, ","))
                if (strcmp(o, ctrl) == 0)
                    found = sl_strdup(c2 + 1);
        }
    }
    fclose(f);
    return found;
}

static void kill_procs(const char *dir)
{
    char path[1800];
    long pid;
    FILE *f;

    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    if (!(f = fopen(path, "re")))
        return;
    while (fscanf(f, "%ld", &pid) == 1)
        kill((pid_t)pid, SIGKILL);
    fclose(f);
}

static void remove_children(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char p2[1700];
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        snprintf(p2, sizeof(p2), "%s/%s", dir, e->d_name);
        /* a stale env may still hold processes (a sluice killed before
         * its envs): they are ours, and nobody talks to them any more */
        kill_procs(p2);
        for (int tries = 0; tries < 20 && rmdir(p2) != 0 && errno == EBUSY; tries++)
            usleep(1000);
    }
    closedir(d);
}

/* Remove what a dead sluice process left under `parent` (sluice-<pid>). */
static void clean_stale(const char *parent)
{
    DIR *d = opendir(parent);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        char path[1400];
        long pid;

        if (strncmp(e->d_name, "sluice-", 7) != 0)
            continue;
        pid = strtol(e->d_name + 7, NULL, 10);
        if (pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(path, sizeof(path), "%s/%s", parent, e->d_name);
        remove_children(path);
        rmdir(path);
    }
    closedir(d);
}

static int make_base(struct sl__cgroups *cg, int i, const char *mnt, const char *own,
                     struct sl_err *err)
{
    char parent[1024];

    snprintf(parent, sizeof(parent), "%s%s", mnt, strcmp(own, "/") == 0 ? "" : own);
    clean_stale(parent);
    cg->base[i] = sl_asprintf("%s/sluice-%d", parent, (int)getpid());
    if (mkdir(cg->base[i], 0755) != 0 && errno != EEXIST)
        return sl_err_set(err, SL_ESANDBOX, false, "cannot create cgroup %s: %s", cg->base[i],
                          strerror(errno));
    return 0;
}

/* Whether `dir`'s cgroup.subtree_control already enables memory, cpu and
 * pids for its children. */
static bool v2_enabled_below(const char *dir)
{
    char path[1100], buf[512] = "";
    FILE *f;
    bool ok;

    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
    if (!(f = fopen(path, "re")))
        return false;
    ok = fgets(buf, sizeof(buf), f) && strstr(buf, "memory") && strstr(buf, "cpu") &&
         strstr(buf, "pids");
    fclose(f);
    return ok;
}

/* cgroup v2 enables controllers for a cgroup's children only while the
 * cgroup itself holds no process ("no internal processes", the root
 * excepted). A cgroup delegated to sluice (systemd's Delegate=yes, a
 * container's cgroup namespace) holds sluice itself: sluice moves into a
 * leaf of it, `supervisor`, and enables the controllers there, so the
 * environments' cgroups (siblings of that leaf) get them. What else
 * shares the cgroup (a login shell's scope) makes that impossible: said. */
static int v2_enable_own(const char *mnt, const char *own, struct sl_err *err)
{
    char dir[1024], leaf[1100], pid[32];
    int rc;

    snprintf(dir, sizeof(dir), "%s%s", mnt, strcmp(own, "/") == 0 ? "" : own);
    if (v2_enabled_below(dir))
        return 0;
    rc = write_file(dir, "cgroup.subtree_control", "+memory +cpu +pids");
    if (rc == -EBUSY) {
        snprintf(leaf, sizeof(leaf), "%s/supervisor", dir);
        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        if (mkdir(leaf, 0755) != 0 && errno != EEXIST)
            return sl_err_set(err, SL_ESANDBOX, false, "cannot create cgroup %s: %s", leaf,
                              strerror(errno));
        if ((rc = write_file(leaf, "cgroup.procs", pid)) != 0)
            return sl_err_set(err, SL_ESANDBOX, false, "cannot move sluice into cgroup %s: "
                              "%s", leaf, strerror(-rc));
        SL_INFO(NULL, "sandbox: moved into cgroup %s/supervisor, so the environments' "
                "cgroups beside it can have controllers", strcmp(own, "/") == 0 ? "" : own);
        rc = write_file(dir, "cgroup.subtree_control", "+memory +cpu +pids");
    }
    if (rc != 0)
        return sl_err_set(err, SL_ESANDBOX, false, "cannot enable the memory, cpu and pids "
                          "controllers below cgroup %s: %s%s", dir, strerror(-rc),
                          rc == -EBUSY ? " (other processes share sluice's cgroup: run it in "
                          "a cgroup of its own, e.g. as a systemd service with Delegate=yes, "
                          "deploy/sluice.service)" : "");
    return 0;
}

int sl__cgroups_init(struct sl__cgroups *cg, struct sl_err *err)
{
    char *mnt = find_mount(NULL), *own = NULL;
    int rc = 0;

    memset(cg, 0, sizeof(*cg));
    /* v2 only when it has the controllers we need */
    if (mnt) {
        char ctl[512];
        FILE *f;
        snprintf(ctl, sizeof(ctl), "%s/cgroup.controllers", mnt);
        if ((f = fopen(ctl, "re"))) {
            char buf[512] = "";
            if (fgets(buf, sizeof(buf), f) && strstr(buf, "memory") && strstr(buf, "cpu") &&
                strstr(buf, "pids") && (own = own_path(NULL)))
                cg->kind = CG_V2;
            fclose(f);
        }
    }
    if (cg->kind == CG_V2) {
        rc = v2_enable_own(mnt, own, err);
        if (rc == 0)
            rc = make_base(cg, 0, mnt, own, err);
        if (rc == 0) {
            /* children can only use controllers enabled in the parent */
            if (write_file(cg->base[0], "cgroup.subtree_control", "+memory +cpu +pids") != 0)
                rc = sl_err_set(err, SL_ESANDBOX, false, "cannot enable cgroup v2 controllers "
                                "in %s: %s", cg->base[0], strerror(errno));
        }
        snprintf(cg->desc, sizeof(cg->desc), "cgroup v2 (%s)", cg->base[0] ? cg->base[0] : "");
        free(mnt);
        free(own);
        return rc;
    }
    free(mnt);
    cg->kind = CG_V1;
    for (int i = 0; i < CGC__COUNT && rc == 0; i++) {
        mnt = find_mount(v1_names[i]);
        own = own_path(v1_names[i]);
        if (!mnt || !own)
            rc = sl_err_set(err, SL_ESANDBOX, false, "no cgroup v2 with memory, cpu and pids "
                            "controllers, and no cgroup v1 %s hierarchy", v1_names[i]);
        else
            rc = make_base(cg, i, mnt, own, err);
        free(mnt);
        free(own);
    }
    if (rc != 0) {
        sl__cgroups_destroy(cg);
        cg->kind = CG_NONE;
        return rc;
    }
    snprintf(cg->desc, sizeof(cg->desc), "cgroup v1 (memory, cpu, pids)");
    return 0;
}

void sl__cgroups_destroy(struct sl__cgroups *cg)
{
    for (int i = 0; i < CGC__COUNT; i++) {
        if (cg->base[i]) {
            remove_children(cg->base[i]);
            rmdir(cg->base[i]);
        }
        free(cg->base[i]);
        cg->base[i] = NULL;
    }
}

/* ------------------------------------------------------------------ */

int sl_sandbox_cgroup_new(struct sl_sandbox *sb, const struct sl_function_conf *fn,
                          struct sl_sbx_proc *p, struct sl_err *err)
{
    struct sl__cgroups *cg = &sb->cg;
    int64_t mem = fn->memory_mb * 1024 * 1024;
    int64_t quota = (int64_t)CPU_PERIOD * fn->memory_mb / MB_PER_CPU;
    char val[64];
    int n = cg->kind == CG_V2 ? 1 : cg->kind == CG_V1 ? CGC__COUNT : 0, rc;
    unsigned long id = ++cg->seq;

    if (quota < 1000)
        quota = 1000;
    p->ncgroup = 0;
    for (int i = 0; i < n; i++) {
        p->cgroup[i] = sl_asprintf("%s/env-%lu", cg->base[i], id);
        if (mkdir(p->cgroup[i], 0755) != 0) {
            rc = sl_err_set(err, SL_ESANDBOX, false, "cgroup: cannot create %s: %s",
                            p->cgroup[i], strerror(errno));
            free(p->cgroup[i]);
            p->cgroup[i] = NULL;
            return rc;
        }
        p->ncgroup++;
    }
#define SET(i, file, v)                                                                 \
    do {                                                                                \
        int e_ = write_file(p->cgroup[i], file, v);                                     \
        if (e_ != 0)                                                                    \
            return sl_err_set(err, SL_ESANDBOX, false, "cgroup: cannot write %s to %s/%s: %s", \
                              v, p->cgroup[i], file, strerror(-e_));                    \
    } while (0)
    if (cg->kind == CG_V2) {
        snprintf(val, sizeof(val), "%lld", (long long)mem);
        SET(0, "memory.max", val);
        if (write_file(p->cgroup[0], "memory.swap.max", "0") != 0 && errno != ENOENT)
            SL_DEBUG(SL_DBG_SANDBOX, NULL, "memory.swap.max not set: %s", strerror(errno));
        snprintf(val, sizeof(val), "%lld %d", (long long)quota, CPU_PERIOD);
        SET(0, "cpu.max", val);
        snprintf(val, sizeof(val), "%d", PIDS_MAX);
        SET(0, "pids.max", val);
    } else if (cg->kind == CG_V1) {
        snprintf(val, sizeof(val), "%lld", (long long)mem);
        SET(CGC_MEMORY, "memory.limit_in_bytes", val);
        /* no swap: memsw must be set after the plain limit, and may not exist */
        (void)write_file(p->cgroup[CGC_MEMORY], "memory.memsw.limit_in_bytes", val);
        snprintf(val, sizeof(val), "%d", CPU_PERIOD);
        SET(CGC_CPU, "cpu.cfs_period_us", val);
        snprintf(val, sizeof(val), "%lld", (long long)quota);
        SET(CGC_CPU, "cpu.cfs_quota_us", val);
        snprintf(val, sizeof(val), "%d", PIDS_MAX);
        SET(CGC_PIDS, "pids.max", val);
    }
#undef SET
    {
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", p->cgroup[cg->kind == CG_V2 ? 0 : CGC_MEMORY],
                 cg->kind == CG_V2 ? "memory.peak" : "memory.max_usage_in_bytes");
        p->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    return 0;
}

int sl_sandbox_adopt(struct sl_sandbox *sb, struct sl_sbx_proc *p, pid_t pid, struct sl_err *err)
{
    char val[32];

    (void)sb;
    snprintf(val, sizeof(val), "%d", (int)pid);
    for (int i = 0; i < p->ncgroup; i++) {
        int e = write_file(p->cgroup[i], "cgroup.procs", val);
        if (e != 0)
            return sl_err_set(err, SL_ESANDBOX, false, "cgroup: cannot add pid %d to %s: %s",
                              (int)pid, p->cgroup[i], strerror(-e));
    }
    return 0;
}

/* Kill everything in the cgroup: cgroup.kill where there is one, else
 * whatever cgroup.procs lists, a few rounds for forks in flight. */
void sl__cgroup_kill(struct sl_sbx_proc *p)
{
    const char *dir = p->ncgroup ? p->cgroup[p->ncgroup == 1 ? 0 : CGC_PIDS] : NULL;
    char path[600];

    if (!dir)
        return;
    /* v2 (Linux 5.14+): one write kills the whole cgroup, forks in flight too */
    if (p->ncgroup == 1 && write_file(dir, "cgroup.kill", "1") == 0)
        return;
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    for (int round = 0; round < 20; round++) {
        FILE *f = fopen(path, "re");
        int any = 0;
        long pid;

        if (!f)
            return;
        while (fscanf(f, "%ld", &pid) == 1) {
            kill((pid_t)pid, SIGKILL);
            any = 1;
        }
        fclose(f);
        if (!any)
            return;
    }
}

int64_t sl_sandbox_max_memory(const struct sl_sbx_proc *p)
{
    char buf[32];
    ssize_t n;

    /* called for every invocation: one pread on a kept-open file */
    if (p->mem_fd < 0)
        return 0;
    n = pread(p->mem_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

bool sl_sandbox_oom_killed(const struct sl_sbx_proc *p)
{
    if (p->ncgroup == 0)
        return false;
    if (p->ncgroup == 1)
        return read_num(p->cgroup[0], "memory.events", "oom_kill") > 0;
    {
        int64_t kills = read_num(p->cgroup[CGC_MEMORY], "memory.oom_control", "oom_kill");
        /* kernels without the oom_kill counter: the limit was hit at all */
        if (kills < 0)
            return read_num(p->cgroup[CGC_MEMORY], "memory.failcnt", NULL) > 0;
        return kills > 0;
    }
}

void sl__cgroup_remove(struct sl_sbx_proc *p)
{
    for (int i = 0; i < 3; i++) {
        if (!p->cgroup[i])
            continue;
        /* the last task leaves asynchronously: retry briefly, and leave a
         * straggler to sl__cgroups_destroy */
        for (int tries = 0; tries < 5 && rmdir(p->cgroup[i]) != 0 && errno == EBUSY; tries++)
            usleep(200);
        free(p->cgroup[i]);
        p->cgroup[i] = NULL;
    }
    p->ncgroup = 0;
}
