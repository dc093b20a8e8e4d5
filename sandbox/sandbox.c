/* Host preparation for sandboxes: cgroups, the network namespace pool
 * (netns.c), the functions' uids (ids.c), the root skeleton and a curated
 * /etc, the seccomp filter. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/log.h"
#include "sluice/mem.h"

static int mkdir_p(const char *path)
{
    char buf[1024];

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int put_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (!(f = fopen(path, "we")))
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* Copy a host file if it exists; symlinks are copied as symlinks. */
static void copy_in(const char *dir, const char *src, const char *name)
{
    char dst[1024], buf[65536], target[512];
    struct stat st;
    ssize_t n;
    int in, out;

    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    if (lstat(src, &st) != 0)
        return;
    unlink(dst);
    if (S_ISLNK(st.st_mode)) {
        n = readlink(src, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (symlink(target, dst) != 0)
                SL_DEBUG(SL_DBG_SANDBOX, NULL, "cannot link %s: %s", dst, strerror(errno));
        }
        return;
    }
    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    if ((out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) >= 0) {
        while ((n = read(in, buf, sizeof(buf))) > 0)
            if (write(out, buf, (size_t)n) != n)
                break;
        close(out);
    }
    close(in);
}

/* A curated /etc: what dynamically linked programs and Python look at,
 * and nothing about the host's users or configuration. */
static int build_etc(const char *etc)
{
    char sub[1024];

    if (mkdir_p(etc) != 0)
        return -1;
    if (put_file(etc, "passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                "sbx_user1051:x:993:990::/tmp:/usr/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n") ||
        put_file(etc, "group", "root:x:0:\nsbx_user1051:x:990:\nnogroup:x:65534:\n") ||
        put_file(etc, "hosts", "127.0.0.1 localhost sandbox.localdomain sandbox.localhost sandbox\n"
                                "::1 localhost\n") ||
        put_file(etc, "hostname", "sluice\n"))
        return -1;
    copy_in(etc, "/etc/ld.so.cache", "ld.so.cache");
    copy_in(etc, "/etc/nsswitch.conf", "nsswitch.conf");
    copy_in(etc, "/etc/resolv.conf", "resolv.conf");
    copy_in(etc, "/etc/protocols", "protocols");
    copy_in(etc, "/etc/services", "services");
    unlink(strcat(strcpy(sub, etc), "/localtime"));
    if (symlink("/usr/share/zoneinfo/Etc/UTC", sub) != 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s/ssl/certs", etc);
    if (mkdir_p(sub) != 0)
        return -1;
    copy_in(sub, "/etc/ssl/certs/ca-certificates.crt", "ca-certificates.crt");
    return 0;
}

/* sluice-init: $SLUICE_INIT, else beside the running binary, else in
 * <prefix>/libexec/sluice/ for a binary in <prefix>/bin. An O_PATH fd of
 * it, or -1 with the places looked at in `err`. */
static int find_init(struct sl_err *err)
{
    const char *env = getenv("SLUICE_INIT");
    char exe[PATH_MAX], tried[3][PATH_MAX + 64], *slash;
    int n = 0;
    ssize_t len;

    if (env && *env) {
        snprintf(tried[n++], sizeof(tried[0]), "%s", env);
    } else if ((len = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) > 0) {
        exe[len] = '\0';
        if ((slash = strrchr(exe, '/')))
            *slash = '\0';
        snprintf(tried[n++], sizeof(tried[0]), "%s/sluice-init", exe);
        snprintf(tried[n++], sizeof(tried[0]), "%s/../libexec/sluice/sluice-init", exe);
    }
    for (int i = 0; i < n; i++) {
        struct stat st;
        int fd = open(tried[i], O_PATH | O_CLOEXEC);

        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111))
            return fd;
        close(fd);
    }
    if (n == 0)
        sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot find sluice-init: /proc/self/exe "
                   "is unreadable; set SLUICE_INIT");
    else
        sl_err_set(err, SL_ESANDBOX, false, "sandbox: no executable sluice-init at %s%s%s "
                   "(make builds it beside sluice; SLUICE_INIT names another)", tried[0],
                   n > 1 ? " or " : "", n > 1 ? tried[1] : "");
    return -1;
}

int sl_sandbox_new(const struct sl_sandbox_opts *o, struct sl_sandbox **out, struct sl_err *err)
{
    static const char *const sysdirs[] = { "usr", "bin", "sbin", "lib", "lib32", "lib64",
                                           "libx32", NULL };
    struct sl_sandbox *sb = sl_calloc(1, sizeof(*sb));
    int rc;

    sb->net.host = -1;
    sb->init_exe = -1;
    sb->userns = geteuid() != 0;
    sb->state_dir = sl_strdup(o->state_dir);
    sb->root = sl_asprintf("%s/root", o->state_dir);
    sb->etc = sl_asprintf("%s/etc", o->state_dir);
    sb->runtime_dir = o->runtime_dir ? sl_strdup(o->runtime_dir) : NULL;

    if ((sb->init_exe = find_init(err)) < 0) {
        rc = SL_ESANDBOX;
        goto fail;
    }
    if ((rc = sl__nodejs_probe(sb, o, err)) != 0)
        goto fail;
    if (mkdir_p(sb->root) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot create %s: %s", sb->root,
                        strerror(errno));
        goto fail;
    }
    if (build_etc(sb->etc) != 0) {
        rc = sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot prepare %s: %s", sb->etc,
                        strerror(errno));
        goto fail;
    }
    for (int i = 0; sysdirs[i] && sb->nents < 8; i++) {
        char path[64];
        struct stat st;
        struct sl__rootent *e = &sb->ents[sb->nents];

        snprintf(path, sizeof(path), "/%s", sysdirs[i]);
        if (lstat(path, &st) != 0)
            continue;
        snprintf(e->name, sizeof(e->name), "%s", sysdirs[i]);
        e->link[0] = '\0';
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(path, e->link, sizeof(e->link) - 1);
            if (n <= 0)
                continue;
            e->link[n] = '\0';
        } else if (!S_ISDIR(st.st_mode)) {
            continue;
        }
        sb->nents++;
    }

    rc = sl__cgroups_init(&sb->cg, err);
    if (rc != 0) {
        if (!o->relaxed_only)
            goto fail;
        SL_WARN(NULL, "sandbox: no cgroups (%s); relaxed functions run without resource limits",
                err->msg);
        sl_err_clear(err);
    }
    if ((rc = sl__sandbox_uids_init(sb, o, err)) != 0)
        goto fail;
    /* unprivileged hosts: each env's user namespace owns its network
     * namespace, made by its clone */
    if (!o->relaxed_only && !sb->userns && (rc = sl__netns_init(&sb->net, o->base, err)) != 0)
        goto fail;
    rc = sl__seccomp_build(&sb->filter, err);
    if (rc != 0)
        goto fail;
    *out = sb;
    return 0;

fail:
    sl_sandbox_free(sb);
    return rc;
}

const char *sl_sandbox_cgroups(const struct sl_sandbox *sb)
{
    return sb->cg.kind == CG_NONE ? "none" : sb->cg.desc;
}

void sl_sandbox_free(struct sl_sandbox *sb)
{
    if (!sb)
        return;
    sl__cgroups_destroy(&sb->cg);
    if (sb->net.host >= 0)
        sl__netns_destroy(&sb->net);
    sl__sandbox_uids_destroy(sb);
    free(sb->filter.filter);
    if (sb->init_exe >= 0)
        close(sb->init_exe);
    free(sb->state_dir);
    free(sb->root);
    free(sb->etc);
    free(sb->runtime_dir);
    free(sb);
}
