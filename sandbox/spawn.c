/* Starting one environment.
 *
 * The parent prepares everything (paths, environment, pipes, cgroups, the
 * plan sluice-init follows), then clones a child into new pid, mount,
 * ipc and uts namespaces. The child waits until it is in its cgroups,
 * keeps the fds sluice-init needs (sandbox/init/init.h), closes every
 * other and execs sluice-init, the environment's init (pid 1): it builds
 * the root, starts the handler and reaps (sandbox/init/init.c). Until that
 * exec the child is a copy of a multi-threaded sluice, so it makes plain
 * system calls only: no allocation, no stdio. A failed step is reported
 * on the setup pipe as "step:errno" and the environment exits. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define MAX_MOUNTS SL_INIT_MOUNTS
#define SL_PYTHON_EXE "/usr/bin/python3"  /* runtime python's interpreter, host and inside */
#define PATH_LEN 512
#define NDEV SL_INIT_NDEV

/* One mount (or symlink) sluice-init makes under the new root. */
struct mnt {
    char        target[PATH_LEN];   /* absolute, under the new root */
    const char *source;             /* bind source / fs name; NULL: mkdir only */
    const char *fstype;             /* NULL: bind mount */
    const char *data;
    unsigned long flags;
    int         readonly;           /* bind: read-only, every mount below it too */
    int         nofollow;           /* bind: reach the source through no symlink */
    int         overlay;            /* the layers' overlay: sluice-init builds the data */
    const char *symlink;            /* create a symlink to this instead */
    const char *step;               /* names the step in errors */
};

struct child {
    int         relaxed;
    int         userns;
    int         netns;              /* the env's network namespace to join, or -1 */
    int         newnet;             /* userns hosts: the clone made one; bring lo up */
    int         nosock;             /* runtime lambda: no fd 3 for the handler */
    uid_t       uid;                /* the function's uid and gid (ids.c) */
    int         sync_r, setup_w, sock, out_w, err_w, plan, init_exe;
    const char *root;
    char        old_root[PATH_LEN];
    struct mnt  m[MAX_MOUNTS];
    int         nm;
    char        tmp_data[64];
    char        dev[NDEV][PATH_LEN]; /* device nodes under <root>/dev */
    char        ent_src[8][24];     /* bind sources of the host's system directories */
    const char *layers[SL_INIT_LAYERS]; /* more than one: the overlay's, in fn->layers */
    int         nlayers;
    char        exe[PATH_LEN];      /* as seen inside */
    char        cwd[PATH_LEN];
    char      **argv;
    char      **envp;
    const struct sock_fprog *filter;
    rlim_t      fsize;
};

/* ------------------------------------------------------------------ */
/* Child side: system calls only, until the exec                       */

static void child_fail(int fd, const char *step) __attribute__((noreturn));

static void child_fail(int fd, const char *step)
{
    char buf[96];
    size_t len = strlen(step);
    int e = errno, n = 0;
    char tmp[12];

    memcpy(buf, step, len);
    buf[len++] = ':';
    do {
        tmp[n++] = (char)('0' + e % 10);
        e /= 10;
    } while (e && n < 11);
    while (n)
        buf[len++] = tmp[--n];
    buf[len++] = '\n';
    if (write(fd, buf, len) < 0) {
        /* nothing left to tell anyone */
    }
    _exit(127);
}

static void child_main(struct child *c) __attribute__((noreturn));

/* Die with sluice, wait until sluice placed us in our cgroups (and wrote
 * our id maps: an exec before that would lose the user namespace's
 * capabilities), then become sluice-init with its fds alone. */
static void child_main(struct child *c)
{
    static char *const argv[] = { "sluice-init", NULL }, *const envp[] = { NULL };
    int fds[7] = { c->plan, c->out_w, c->err_w, c->sock, c->setup_w, c->netns, c->init_exe };
    int high[7];
    char go;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        child_fail(c->setup_w, "parent death signal");
    if (read(c->sync_r, &go, 1) != 1)
        _exit(1);
    /* above every target first, so that no dup2 below overwrites a source */
    for (int i = 0; i < 7; i++) {
        high[i] = fds[i] < 0 ? -1 : fcntl(fds[i], F_DUPFD_CLOEXEC, 16);
        if (fds[i] >= 0 && high[i] < 0)
            child_fail(c->setup_w, "dup");
    }
    for (int i = 0; i < 7; i++) {
        if (high[i] < 0)
            continue;
        if (syscall(SYS_dup3, high[i], i, i == SL_INIT_FD_EXE ? O_CLOEXEC : 0) != i)
            child_fail(high[SL_INIT_FD_SETUP], "dup2");
    }
    if (high[SL_INIT_FD_NETNS] < 0)
        close(SL_INIT_FD_NETNS);
    if (syscall(SYS_close_range, SL_INIT_FD_EXE + 1, ~0U, 0) != 0)
        for (int fd = SL_INIT_FD_EXE + 1; fd < 65536; fd++)
            close(fd);
    syscall(SYS_execveat, SL_INIT_FD_EXE, "", argv, envp, AT_EMPTY_PATH);
    child_fail(SL_INIT_FD_SETUP, "exec sluice-init");
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
    c->nosock = fn->runtime == SL_RUNTIME_LAMBDA;
    c->newnet = sb->userns && fn->network == SL_NETWORK_NONE;
    c->root = sb->root;
    c->filter = &sb->filter;
    c->fsize = (rlim_t)fn->ephemeral_storage_mb * 1024 * 1024;
    if (fn->runtime == SL_RUNTIME_PYTHON)
        snprintf(c->exe, sizeof(c->exe), "%s", SL_PYTHON_EXE);
    if (c->relaxed) {
        if (fn->runtime != SL_RUNTIME_PYTHON)
            snprintf(c->exe, sizeof(c->exe), "%s", fn->handler);
        snprintf(c->cwd, sizeof(c->cwd), "%s", code_dir);
    } else {
        if (fn->runtime != SL_RUNTIME_PYTHON)
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
           NULL)->overlay = 1;
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

/* "3.11" from /usr/bin/python3 -> python3.11 (Debian's link), else 3.11. */
static void python_version(char *buf, size_t n)
{
    char link[64];
    ssize_t len = readlink(SL_PYTHON_EXE, link, sizeof(link) - 1);

    snprintf(buf, n, "3.11");
    if (len <= 0)
        return;
    link[len] = '\0';
    if (strncmp(link, "python", 6) == 0 && link[6] >= '0' && link[6] <= '9' &&
        strspn(link + 6, "0123456789.") == strlen(link + 6))
        snprintf(buf, n, "%.8s", link + 6);
}

/* Lambda's log stream name: YYYY/MM/DD/[$LATEST]<32 hex digits>. */
static char *log_stream_name(void)
{
    unsigned char rnd[16];
    char hex[33], day[16];
    time_t now = time(NULL);
    struct tm tm;

    if (getentropy(rnd, sizeof(rnd)) != 0)
        for (size_t i = 0; i < sizeof(rnd); i++)
            rnd[i] = (unsigned char)rand();
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    gmtime_r(&now, &tm);
    strftime(day, sizeof(day), "%Y/%m/%d", &tm);
    return sl_asprintf("AWS_LAMBDA_LOG_STREAM_NAME=%s/[$LATEST]%s", day, hex);
}

/* The handler's environment, as Lambda's (sandbox/README in docs/PROTOCOL.md
 * lists it): `task_root` and the runtime dir are the paths the handler sees. */
static char **build_env(const struct sl_sandbox *sb, const struct sl_function_conf *fn,
                        const char *init_type, const char *task_root, const char *base,
                        int relaxed)
{
    size_t n = 0, cap = fn->environment.n + 32;
    char **env = sl_calloc(cap, sizeof(char *));
    const char *rt = relaxed ? sb->runtime_dir : "/var/runtime";
    bool py = fn->runtime == SL_RUNTIME_PYTHON, rapi = fn->runtime == SL_RUNTIME_LAMBDA;
    char pyver[16];

    if (!rt)
        rt = "";
    python_version(pyver, sizeof(pyver));
    env[n++] = sl_strdup("PATH=/usr/local/bin:/usr/bin:/bin:/opt/bin");
    env[n++] = sl_strdup("LANG=en_US.UTF-8");
    env[n++] = sl_strdup("TZ=:UTC");
    env[n++] = sl_asprintf("LD_LIBRARY_PATH=/lib64:/usr/lib64:%s:%s/lib:%s:%s/lib:/opt/lib", rt,
                           rt, task_root, task_root);
    env[n++] = sl_asprintf("LAMBDA_TASK_ROOT=%s", task_root);
    env[n++] = sl_asprintf("LAMBDA_RUNTIME_DIR=%s", rt);
    /* Lambda's order after the task root (sys.path[0]): the layers'
     * site-packages, then python/; native scripts find sluice_runtime first */
    if (py)
        env[n++] = sl_asprintf("PYTHONPATH=/opt/python/lib/python%s/site-packages:/opt/python:"
                               "%s/python", pyver, rt);
    else if (rapi)
        ; /* Lambda's provided runtimes set no PYTHONPATH: the bootstrap's own business */
    else
        env[n++] = sl_asprintf("PYTHONPATH=%s/python:/opt/python/lib/python%s/site-packages:"
                               "/opt/python", rt, pyver);
    env[n++] = sl_asprintf("_HANDLER=%s", py ? fn->handler : base);
    if (py)
        env[n++] = sl_asprintf("AWS_EXECUTION_ENV=AWS_Lambda_python%s", pyver);
    env[n++] = sl_asprintf("AWS_LAMBDA_FUNCTION_NAME=%s", fn->name);
    env[n++] = sl_asprintf("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%lld", (long long)fn->memory_mb);
    env[n++] = sl_strdup("AWS_LAMBDA_FUNCTION_VERSION=$LATEST");
    env[n++] = sl_asprintf("AWS_LAMBDA_INITIALIZATION_TYPE=%s", init_type);
    env[n++] = sl_asprintf("AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/%s", fn->name);
    env[n++] = log_stream_name();
    if (fn->log_format == SL_FN_LOG_JSON) {
        env[n++] = sl_strdup("AWS_LAMBDA_LOG_FORMAT=JSON");
        env[n++] = sl_asprintf("AWS_LAMBDA_LOG_LEVEL=%s",
                              sl__fnlog_app_level(fn));
    }
    env[n++] = sl_asprintf("AWS_REGION=%s", fn->server->region);
    env[n++] = sl_asprintf("AWS_DEFAULT_REGION=%s", fn->server->region);
    if (rapi)
        env[n++] = sl_asprintf("AWS_LAMBDA_RUNTIME_API=127.0.0.1:%d", SL_SANDBOX_RAPI_PORT);
    else
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
    int           plan;          /* the memfd of sluice-init's plan */
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
    spawn_close(&s->plan);
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

    c->argv = sl_calloc(4, sizeof(char *));
    c->argv[0] = sl_strdup(c->exe);
    if (fn->runtime == SL_RUNTIME_PYTHON) {
        /* run by path, not -m: a module of the code must not stand in for it */
        c->argv[1] = sl_asprintf("%s/python/sluice_bootstrap.py",
                                 c->relaxed ? sb->runtime_dir : "/var/runtime");
        c->argv[2] = sl_strdup(fn->handler);
    }
    c->envp = build_env(sb, fn, init_type, c->relaxed ? s->code_dir : "/var/task", s->base,
                        c->relaxed);
}

/* The plan as it is written: a header, then strings and arrays. */
struct planbuf {
    char  *b;
    size_t len, cap;
    bool   over;             /* past PLAN_MAX: an offset is missing */
};

#define PLAN_MAX (16u << 20)

/* Append `n` bytes aligned to `align`; their offset (0 once too big). */
static uint32_t pb_put(struct planbuf *pb, const void *data, size_t n, size_t align)
{
    size_t off = (pb->len + align - 1) & ~(align - 1);

    if (off + n > PLAN_MAX) {
        pb->over = true;
        return 0;
    }
    if (off + n > pb->cap) {
        pb->cap = (off + n) * 2;
        pb->b = sl_realloc(pb->b, pb->cap);
    }
    memset(pb->b + pb->len, 0, off - pb->len);
    memcpy(pb->b + off, data, n);
    pb->len = off + n;
    return (uint32_t)off;
}

static uint32_t pb_str(struct planbuf *pb, const char *str)
{
    return str ? pb_put(pb, str, strlen(str) + 1, 1) : 0;
}

/* The strings of `v`, then their offsets: the offset of those. */
static uint32_t pb_strv(struct planbuf *pb, char *const *v, uint32_t *n)
{
    uint32_t *offs, off;
    size_t count = 0;

    while (v[count])
        count++;
    offs = sl_calloc(count + 1, sizeof(uint32_t));
    for (size_t i = 0; i < count; i++)
        offs[i] = pb_str(pb, v[i]);
    off = pb_put(pb, offs, count * sizeof(uint32_t), sizeof(uint32_t));
    free(offs);
    *n = (uint32_t)count;
    return off;
}

/* Step 4: the plan sluice-init follows, in a memfd (sandbox/init/init.h). */
static int write_plan(struct spawn *s, struct sl_err *err)
{
    const struct child *c = s->c;
    struct sl_init_plan h;
    struct planbuf pb = { 0 };
    ssize_t n = 0;
    size_t done = 0;

    memset(&h, 0, sizeof(h));
    pb.cap = 16384;
    pb.b = sl_calloc(1, pb.cap);
    pb.len = sizeof(h);
    h.magic = SL_INIT_MAGIC;
    h.relaxed = (uint32_t)c->relaxed;
    h.userns = (uint32_t)c->userns;
    h.netns = c->netns >= 0;
    h.newnet = (uint32_t)c->newnet;
    h.nosock = (uint32_t)c->nosock;
    h.uid = (uint32_t)c->uid;
    h.fsize = (uint64_t)c->fsize;
    if (!c->relaxed) {
        h.root = pb_str(&pb, c->root);
        h.old_root = pb_str(&pb, c->old_root);
        for (int i = 0; i < NDEV; i++)
            h.dev[i] = pb_str(&pb, c->dev[i]);
    }
    h.exe = pb_str(&pb, c->exe);
    h.cwd = pb_str(&pb, c->cwd);
    h.nlayers = (uint32_t)c->nlayers;
    for (int i = 0; i < c->nlayers; i++)
        h.layers[i] = pb_str(&pb, c->layers[i]);
    h.nm = (uint32_t)c->nm;
    for (int i = 0; i < c->nm; i++) {
        const struct mnt *m = &c->m[i];
        struct sl_init_mnt *pm = &h.m[i];

        pm->target = pb_str(&pb, m->target);
        pm->source = pb_str(&pb, m->source);
        pm->fstype = pb_str(&pb, m->fstype);
        pm->data = pb_str(&pb, m->data);
        pm->symlink = pb_str(&pb, m->symlink);
        pm->step = pb_str(&pb, m->step);
        pm->flags = m->flags;
        pm->readonly = (uint32_t)m->readonly;
        pm->nofollow = (uint32_t)m->nofollow;
        pm->overlay = (uint32_t)m->overlay;
    }
    h.argv = pb_strv(&pb, c->argv, &h.argc);
    h.envp = pb_strv(&pb, c->envp, &h.envc);
    h.filter = pb_put(&pb, c->filter->filter, c->filter->len * sizeof(struct sock_filter), 8);
    h.filter_len = c->filter->len;
    h.size = (uint32_t)pb.len;
    memcpy(pb.b, &h, sizeof(h));
    if (pb.over) {
        free(pb.b);
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: the environment's plan is over "
                          "%u MB (its environment variables?)", PLAN_MAX >> 20);
    }
    s->plan = memfd_create("sluice-init-plan", MFD_CLOEXEC);
    while (s->plan >= 0 && done < pb.len) {
        n = write(s->plan, pb.b + done, pb.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    free(pb.b);
    if (done < pb.len)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot write the environment's "
                          "plan: %s", strerror(errno));
    s->c->plan = s->plan;
    return 0;
}

/* Step 5: the handler's socket (fd 3), stdout and stderr, the sync pipe
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

/* Runtime lambda: the Runtime API's listening socket, bound inside the
 * env's own network namespace before the handler can run, so its first
 * connect finds it and nothing outside the env can reach it. */
static int open_rapi(struct sl_sandbox *sb, struct sl_sbx_proc *p, struct sl_err *err)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(SL_SANDBOX_RAPI_PORT),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s, one = 1;

    if (p->netns < 0)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: runtime lambda needs a network "
                          "namespace of its own (strict sandbox, `network: none`, sluice run "
                          "as root)");
    if ((s = sl_sandbox_socket(sb, p, AF_INET, SOCK_STREAM, err)) < 0)
        return s;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s, 16) != 0) {
        int e = errno;
        close(s);
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot listen on the "
                          "environment's 127.0.0.1:%d: %s", SL_SANDBOX_RAPI_PORT, strerror(e));
    }
    set_nonblock(s);
    p->rapi = s;
    return 0;
}

/* Step 6: clone the env's init into its namespaces; it waits on the sync
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
    spawn_close(&s->plan);
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

/* Step 7 (unprivileged hosts): map our uid and gid to root in the env's
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

/* Step 8: place the child in its cgroups and let it go on. */
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

/* Step 9: the parent's ends of the channels go to `p`, non-blocking. */
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
                       .syncp = { -1, -1 }, .setupp = { -1, -1 }, .plan = -1 };
    char *slash;
    int rc;

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->pidfd = p->sock = p->out = p->err = p->setup = p->mem_fd = p->netns = p->rapi = -1;
    s.c = sl_calloc(1, sizeof(*s.c));
    if (fn->runtime == SL_RUNTIME_PYTHON) {
        if (!fn->code || !sb->runtime_dir) {
            spawn_destroy(&s);
            return sl_err_set(err, SL_ESANDBOX, false, "sandbox: runtime python needs %s",
                              fn->code ? "sluice's runtime/ directory (set SLUICE_RUNTIME_DIR)"
                                       : "`code`");
        }
        s.code_dir = sl_strdup(fn->code);
        s.base = fn->handler;
    } else {
        s.code_dir = sl_strdup(fn->handler);
        slash = strrchr(s.code_dir, '/');
        s.base = slash ? fn->handler + (slash - s.code_dir) + 1 : fn->handler;
        if (slash)
            *slash = '\0';
    }
    plan_child(s.c, sb, fn, s.code_dir, s.base);
    s.c->uid = sl__sandbox_uid(sb, fn->name);
    s.c->init_exe = sb->init_exe;
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
    if (fn->runtime == SL_RUNTIME_LAMBDA && (rc = open_rapi(sb, p, err)) != 0)
        goto fail;
    plan_exec(&s, sb, fn, init_type);
    if ((rc = write_plan(&s, err)) != 0 || (rc = open_channels(&s, err)) != 0)
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
        int *fds[] = { &p->sock, &p->out, &p->err, &p->setup, &p->mem_fd, &p->netns, &p->rapi };
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
    int *fds[] = { &p->pidfd, &p->sock, &p->out, &p->err, &p->setup, &p->mem_fd, &p->netns,
                   &p->rapi };

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
