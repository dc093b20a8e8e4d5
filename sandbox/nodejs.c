/* runtime nodejs: Lambda's Node.js runtime on the host's /usr/bin/node.
 *
 * The environment runs runtime/nodejs/bootstrap.mjs (our implementation of
 * Lambda's Node runtime interface client, docs/NODEJS.md) over the Runtime
 * API, exactly as runtime lambda runs a bootstrap (rapi.c). What is Node's
 * own lives here: finding node and its version once when the sandbox is
 * prepared, the command line Lambda's /var/runtime/bootstrap builds, and
 * the environment variables Lambda's managed nodejs runtimes add. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/mem.h"

#define PROBE_MS 10000   /* `node --version` takes milliseconds; a hung one is killed */

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Run `node --version` and read what it prints into buf (NUL-ended). 0 or
 * an errno value; *status is its wait status. */
static int run_version(char *buf, size_t n, int *status)
{
    char *const argv[] = { (char *)SL__NODE_EXE, (char *)"--version", NULL };
    char *const envp[] = { (char *)"PATH=/usr/bin:/bin", NULL };
    posix_spawn_file_actions_t fa;
    int pfd[2], rc;
    size_t len = 0;
    double end = mono_ms() + PROBE_MS;
    pid_t pid;

    if (pipe2(pfd, O_CLOEXEC) != 0)
        return errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    rc = posix_spawn(&pid, SL__NODE_EXE, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return rc;
    }
    for (;;) {
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        int left = (int)(end - mono_ms());
        ssize_t r;

        if (left <= 0 || poll(&p, 1, left) <= 0) {
            if (left > 0 && errno == EINTR)
                continue;
            kill(pid, SIGKILL);
            rc = ETIMEDOUT;
            break;
        }
        r = read(pfd[0], buf + len, n - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == n - 1)
            break; /* more than a version: what is there says it */
    }
    buf[len] = '\0';
    close(pfd[0]);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    return rc;
}

int sl__nodejs_probe(struct sl_sandbox *sb, const struct sl_sandbox_opts *o, struct sl_err *err)
{
    const char *who = NULL, *why = NULL;
    char out[64], *end = NULL;
    struct stat st;
    int status = 0, rc;
    long major;

    for (size_t i = 0; i < o->nfunctions && !who; i++)
        if (o->functions[i].runtime == SL_RUNTIME_NODEJS)
            who = o->functions[i].name;
    if (!who)
        return 0;
    if (stat(SL__NODE_EXE, &st) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode) || access(SL__NODE_EXE, X_OK) != 0)
        why = "not an executable file";
    if (why)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: function %s has runtime nodejs, "
                          "but there is no Node.js at %s (%s): install Debian's nodejs package",
                          who, SL__NODE_EXE, why);
    if ((rc = run_version(out, sizeof(out), &status)) != 0)
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: cannot run %s --version: %s",
                          SL__NODE_EXE, strerror(rc));
    out[strcspn(out, "\r\n")] = '\0';
    errno = 0;
    major = out[0] == 'v' ? strtol(out + 1, &end, 10) : 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || errno || major < 1 || major > 999 ||
        !end || *end != '.')
        return sl_err_set(err, SL_ESANDBOX, false, "sandbox: %s --version printed '%.40s' "
                          "(exit status %d), not a Node.js version", SL__NODE_EXE, out,
                          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    sb->node_major = (int)major;
    return 0;
}

/* Lambda's /var/runtime/bootstrap: node --expose-gc --max-http-header-size
 * 81920, a tenth of the memory for the young generation (half of it per
 * semi-space) and the rest for the old one, then the runtime's entry. */
char **sl__nodejs_argv(const struct sl_function_conf *fn, const char *rt)
{
    char **argv = sl_calloc(8, sizeof(char *));
    long long mem = (long long)fn->memory_mb, young = mem / 10;

    argv[0] = sl_strdup(SL__NODE_EXE);
    argv[1] = sl_strdup("--expose-gc");
    argv[2] = sl_strdup("--max-http-header-size=81920");
    argv[3] = sl_asprintf("--max-semi-space-size=%lld", young / 2);
    argv[4] = sl_asprintf("--max-old-space-size=%lld", mem - young);
    argv[5] = sl_asprintf("%s/nodejs/bootstrap.mjs", rt);
    return argv;
}

/* Lambda's nodejs<major>.x environment on top of the common one: the
 * handler as written, AWS_EXECUTION_ENV, and NODE_PATH (layers' node_modules
 * for this major first, then every major's, then the runtime's and the
 * task root) unless `environment` gives one. */
size_t sl__nodejs_env(const struct sl_sandbox *sb, const struct sl_function_conf *fn,
                      const char *rt, const char *task_root, char **env)
{
    size_t n = 0;

    env[n++] = sl_asprintf("_HANDLER=%s", fn->handler);
    env[n++] = sl_asprintf("AWS_EXECUTION_ENV=AWS_Lambda_nodejs%d.x", sb->node_major);
    for (size_t i = 0; i < fn->environment.n; i++)
        if (strcmp(fn->environment.v[i].key, "NODE_PATH") == 0)
            return n; /* the function's own (Lambda's bootstrap sets one only when unset) */
    env[n++] = sl_asprintf("NODE_PATH=/opt/nodejs/node%d/node_modules:/opt/nodejs/node_modules:"
                           "%s/node_modules:%s:%s", sb->node_major, rt, rt, task_root);
    return n;
}
