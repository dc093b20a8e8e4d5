/* Deployment: `make install` and `make uninstall`, sluice(1), the Debian
 * package (installed on this machine with dpkg, run under its unit's
 * ExecStart, removed and purged), the systemd unit (systemd-analyze verify),
 * deploy/Containerfile and deploy/k8s/ (checked offline).
 *
 * Needs root, and what tests/deps installs (dpkg-dev, systemd, man-db,
 * python3-msgpack, tests/.layers/k8s-check). Run from the repository root;
 * $BUILD and $SANITIZE (from tests/run) pick the build that is installed
 * and packaged, so `make` rebuilds nothing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* the make flags that match the build under test */
#define MAKEVARS "BUILD=\"${BUILD:-build}\" SANITIZE=\"${SANITIZE:-}\""

/* Run a shell command; its exit code, stdout+stderr in buf (cut at n). */
static int sh(char *buf, size_t n, const char *fmt, ...)
{
    char cmd[4096];
    size_t len = 0;
    va_list ap;
    FILE *p;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    while (len + 1 < n && fgets(buf + len, (int)(n - len), p))
        len += strlen(buf + len);
    buf[len] = '\0';
    while (fgetc(p) != EOF) {
        /* drain what did not fit */
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *mktmp(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/sluice-deploy-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    return dir;
}

/* ------------------------------------------------------------------ */
/* make install / uninstall                                            */

Test(deploy, make_install_runs_a_python_function_then_uninstall_removes_it, .timeout = 300)
{
    static char out[65536];
    char dir[64], cfg[256];
    FILE *f;
    int rc;

    mktmp(dir, sizeof(dir));
    rc = sh(out, sizeof(out), "make --no-print-directory -s install " MAKEVARS
            " DESTDIR=%s PREFIX=/opt/sl", dir);
    cr_assert_eq(rc, 0, "make install: %s", out);
    rc = sh(out, sizeof(out),
            "cd %s/opt/sl && test -x bin/sluice && test -x libexec/sluice/sluice-init && "
            "test -f lib/sluice/runtime/python/sluice_bootstrap.py && "
            "test -f lib/sluice/runtime/nodejs/bootstrap.mjs && "
            "test -f lib/sluice/runtime/c/sluice_runtime.h && test -f share/man/man1/sluice.1 && "
            "test -f share/doc/sluice/sluice.yaml.example && "
            "grep -qx 'ExecStart=/opt/sl/bin/sluice run /etc/sluice/sluice.yaml' "
            "lib/systemd/system/sluice.service && "
            "grep -qx 'Type=notify' lib/systemd/system/sluice.service && "
            "grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' lib/systemd/system/sluice.service && "
            "grep -qx 'WatchdogSec=30s' lib/systemd/system/sluice.service && "
            "grep -qx 'Delegate=yes' lib/systemd/system/sluice.service && "
            "grep -q 'code: /opt/sl/share/sluice/examples/hello' share/doc/sluice/sluice.yaml.example",
            dir);
    cr_assert_eq(rc, 0, "installed tree: %s", out);

    /* the installed binary finds its init and the Python runtime by its
     * own path: nothing points it at the source tree */
    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "server:\n  data_dir: %s/data\nfunctions:\n  hello:\n    runtime: python\n"
               "    code: %s/opt/sl/share/sluice/examples/hello\n"
               "    handler: app.lambda_handler\n", dir, dir);
    fclose(f);
    rc = sh(out, sizeof(out), "cd / && env -u SLUICE_RUNTIME_DIR -u SLUICE_INIT "
            "%s/opt/sl/bin/sluice invoke --local %s hello --payload '{\"name\": \"installed\"}'",
            dir, cfg);
    cr_assert_eq(rc, 0, "invoke from the installed tree: %s", out);
    cr_assert(strstr(out, "\"message\": \"hello, installed\"") != NULL, "%s", out);

    rc = sh(out, sizeof(out), "make --no-print-directory -s uninstall " MAKEVARS
            " DESTDIR=%s PREFIX=/opt/sl && find %s/opt -mindepth 1 -not -type d", dir, dir);
    cr_assert_eq(rc, 0, "make uninstall: %s", out);
    cr_assert_str_empty(out, "left after make uninstall:\n%s", out);
    rc = sh(out, sizeof(out), "test ! -e %s/opt/sl/lib/sluice && test ! -e %s/opt/sl/share/sluice",
            dir, dir);
    cr_assert_eq(rc, 0, "directories of sluice's own left after make uninstall");
    sh(out, sizeof(out), "rm -rf %s", dir);
}

Test(deploy, man_page_renders_without_warnings)
{
    static char out[65536];
    char err[4096];
    int rc;

    rc = sh(err, sizeof(err), "MANWIDTH=80 man --warnings -l docs/sluice.1 >/dev/null");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_empty(err, "man --warnings: %s", err);
    rc = sh(err, sizeof(err), "groff -ww -z -man docs/sluice.1");
    cr_assert_str_empty(err, "groff -ww: %s", err);
    rc = sh(out, sizeof(out), "MANWIDTH=80 man -l docs/sluice.1 | col -b");
    cr_assert_eq(rc, 0);
    /* every command of `sluice help` has its entry */
    for (const char *s = "run\0lint\0invoke\0dlq\0version\0config-docs\0help\0"; *s;
         s += strlen(s) + 1) {
        char needle[64];
        snprintf(needle, sizeof(needle), "\n       %s", s);
        cr_expect(strstr(out, needle) != NULL, "no entry for %s in sluice(1)", s);
    }
    cr_expect(strstr(out, "SERVICE MANAGER") != NULL);
    cr_expect(strstr(out, "WATCHDOG=1") != NULL);
}

/* ------------------------------------------------------------------ */
/* Containerfile and Kubernetes manifests, offline                      */

Test(deploy, containerfile_stages_copies_and_runtime_packages, .timeout = 120)
{
    static char out[65536];
    int rc = sh(out, sizeof(out), "tests/deploy/containerfile-check deploy/Containerfile "
                "\"${BUILD:-build}\"");

    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "containerfile-check: ") && strstr(out, " ok, 0 problems"), "%s", out);
}

Test(deploy, containerfile_check_finds_a_missing_copy_and_package, .timeout = 120)
{
    static char out[65536];
    char dir[64];
    int rc;

    mktmp(dir, sizeof(dir));
    rc = sh(out, sizeof(out), "sed '/COPY --chown=builder pollers/d; s/ libsystemd0 / /' "
            "deploy/Containerfile > %s/Containerfile && tests/deploy/containerfile-check "
            "%s/Containerfile \"${BUILD:-build}\"", dir, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "reads pollers/") != NULL, "%s", out);
    cr_assert(strstr(out, "(package libsystemd0), which the final stage does not install") != NULL,
              "%s", out);
    sh(out, sizeof(out), "rm -rf %s", dir);
}

#define K8S_CHECK "tests/.layers/k8s-check/k8s-check"

Test(deploy, k8s_manifests_decode_strictly_into_the_api_types, .timeout = 120)
{
    static char out[65536];
    int rc;

    cr_assert_eq(access(K8S_CHECK, X_OK), 0, "no " K8S_CHECK ": run tests/deps");
    rc = sh(out, sizeof(out), K8S_CHECK " deploy/k8s/*.yaml");
    cr_assert_eq(rc, 0, "%s", out);
    for (const char *s = "*v1.Deployment sluice\0*v1.Service sluice\0*v1.ConfigMap sluice\0"
                         "*v1.PodDisruptionBudget sluice\0*main.ScaledObject sluice-kafka\0"
                         "*main.ScaledObject sluice-redis\0"
                         "*main.ScaledObject sluice-prometheus\0";
         *s; s += strlen(s) + 1)
        cr_expect(strstr(out, s) != NULL, "%s not decoded:\n%s", s, out);
    cr_expect(strstr(out, "k8s-check: 8 ok, 0 problems") != NULL, "%s", out);
}

/* Strictness: a misspelt field, in a Kubernetes type and in KEDA's, is
 * refused; so is a probe on the wrong path. */
Test(deploy, k8s_check_refuses_unknown_fields_and_wrong_probes, .timeout = 120)
{
    static char out[65536];
    char dir[64];
    int rc;

    cr_assert_eq(access(K8S_CHECK, X_OK), 0, "no " K8S_CHECK ": run tests/deps");
    mktmp(dir, sizeof(dir));
    rc = sh(out, sizeof(out), "cp deploy/k8s/*.yaml %s/ && "
            "sed -i 's/^  replicas: 2/  replicaz: 2/' %s/deployment.yaml && "
            K8S_CHECK " %s/*.yaml", dir, dir, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "unknown field \"replicaz\"") != NULL, "%s", out);

    rc = sh(out, sizeof(out), "cp deploy/k8s/*.yaml %s/ && "
            "sed -i 's/^  minReplicaCount: 2/  minReplicas: 2/' %s/scaledobject-kafka.yaml && "
            K8S_CHECK " %s/*.yaml", dir, dir, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "unknown field \"minReplicas\"") != NULL, "%s", out);

    rc = sh(out, sizeof(out), "cp deploy/k8s/*.yaml %s/ && "
            "sed -i 's#path: /readyz#path: /healthz#' %s/deployment.yaml && "
            K8S_CHECK " %s/*.yaml", dir, dir, dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "readiness probe on \"/healthz\", want /readyz") != NULL, "%s", out);
    sh(out, sizeof(out), "rm -rf %s", dir);
}

/* ------------------------------------------------------------------ */
/* The Debian package                                                   */

/* Wait for a datagram on `fd` within `ms`; 1 with it in buf. */
static int recv_within(int fd, char *buf, size_t n, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t len;

    if (poll(&p, 1, ms) <= 0)
        return 0;
    len = recv(fd, buf, n - 1, 0);
    if (len <= 0)
        return 0;
    buf[len] = '\0';
    return 1;
}

/* What the deb test leaves when an assertion ends it early: the service
 * it started, and the package (purged, so the next run starts clean). */
static pid_t service = -1;
static int deb_installed;

static void deb_cleanup(void)
{
    char out[4096];

    if (service > 0) {
        kill(service, SIGKILL);
        waitpid(service, NULL, 0);
        service = -1;
    }
    if (deb_installed) {
        sh(out, sizeof(out), "dpkg -P sluice");
        deb_installed = 0;
    }
}

/* The installed service, started as its unit says (systemd where it is
 * PID 1; else tests/deploy/unit-exec: ExecStart under the unit's
 * capability bounding set, no_new_privs and a read-only file system),
 * answers a Python function, says READY=1, and stops on SIGTERM. */
static void run_installed_service(int port)
{
    static char out[65536];
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    char name[64], msg[256], env[96];
    int fd, rc, st;
    pid_t pid;

    snprintf(name, sizeof(name), "sluice-test-deb-%d", (int)getpid());
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memcpy(a.sun_path + 1, name, strlen(name));
    cr_assert_eq(bind(fd, (struct sockaddr *)&a,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name))), 0);
    snprintf(env, sizeof(env), "@%s", name);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int log = open("/tmp/sluice-deb-service.log", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(log, 1);
        dup2(log, 2);
        setenv("NOTIFY_SOCKET", env, 1);
        setenv("WATCHDOG_USEC", "30000000", 1); /* WatchdogSec=30s */
        unsetenv("SLUICE_RUNTIME_DIR");
        unsetenv("SLUICE_INIT");
        execl("tests/deploy/unit-exec", "unit-exec", "/lib/systemd/system/sluice.service",
              (char *)NULL);
        _exit(127);
    }
    service = pid;
    cr_assert(recv_within(fd, msg, sizeof(msg), 30000), "the service sent nothing:\n%s",
              (sh(out, sizeof(out), "cat /tmp/sluice-deb-service.log"), out));
    cr_assert(strstr(msg, "READY=1") != NULL, "first notification: %s", msg);
    rc = sh(out, sizeof(out), "curl -sS -d '{\"name\": \"deb\"}' "
            "http://127.0.0.1:%d/2015-03-31/functions/hello/invocations", port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "\"message\": \"hello, deb\"") != NULL, "%s", out);
    kill(pid, SIGTERM);
    cr_assert(recv_within(fd, msg, sizeof(msg), 10000) && strstr(msg, "STOPPING=1"),
              "no STOPPING=1: %s", msg);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    service = -1;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the service exited %d", st);
    close(fd);
}

Test(deploy, deb_installs_lints_runs_removes_and_purges, .timeout = 600, .fini = deb_cleanup)
{
    static char out[65536];
    char deb[512], pid1[64] = "";
    int rc, port = th_free_port();
    FILE *f;

    rc = sh(out, sizeof(out), "dpkg-query -W -f='${Status}' sluice");
    cr_assert(rc != 0 || strstr(out, "not-installed") != NULL,
              "a sluice package is installed on this machine already: %s", out);
    rc = sh(deb, sizeof(deb), "make --no-print-directory -s deb " MAKEVARS " | tail -1");
    cr_assert_eq(rc, 0, "make deb: %s", deb);
    deb[strcspn(deb, "\n")] = '\0';

    /* the control file's Depends come from the binary's libraries */
    rc = sh(out, sizeof(out), "dpkg-deb -f %s Depends", deb);
    cr_assert_eq(rc, 0, "%s", out);
    for (const char *s = "libc6\0librdkafka1\0libhiredis\0libpq5\0libevent-2.1-7\0libsystemd0\0"
                         "libseccomp2\0libyaml-0-2\0libjansson4\0adduser\0";
         *s; s += strlen(s) + 1)
        cr_expect(strstr(out, s) != NULL, "Depends lacks %s: %s", s, out);
    rc = sh(out, sizeof(out), "dpkg-deb -I %s conffiles", deb);
    cr_assert(strstr(out, "/etc/sluice/sluice.yaml") != NULL, "conffiles: %s", out);

    deb_installed = 1;
    rc = sh(out, sizeof(out), "DEBIAN_FRONTEND=noninteractive dpkg -i %s", deb);
    cr_assert_eq(rc, 0, "dpkg -i: %s", out);

    /* files, owner and modes, the system user */
    rc = sh(out, sizeof(out),
            "set -e; test -x /usr/bin/sluice; test -x /usr/libexec/sluice/sluice-init; "
            "test -f /usr/lib/sluice/runtime/python/sluice_bootstrap.py; "
            "test -f /usr/share/man/man1/sluice.1.gz; test -f /lib/systemd/system/sluice.service; "
            "getent passwd sluice | grep -q ':/usr/sbin/nologin$'; getent group sluice; "
            "stat -c '%%U:%%G %%a' /var/lib/sluice /etc/sluice /etc/sluice/sluice.yaml");
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "root:root 700\nroot:sluice 750\nroot:sluice 640\n") != NULL, "%s", out);
    rc = sh(out, sizeof(out), "man -w sluice");
    cr_assert_eq(rc, 0, "man sluice: %s", out);

    /* the conffile passes lint as shipped; the unit verifies against the
     * installed binary and man page */
    rc = sh(out, sizeof(out), "/usr/bin/sluice lint /etc/sluice/sluice.yaml");
    cr_assert_eq(rc, 0, "%s", out);
    rc = sh(out, sizeof(out), "systemd-analyze verify /lib/systemd/system/sluice.service");
    cr_assert_eq(rc, 0, "systemd-analyze verify: %s", out);
    cr_assert_str_empty(out, "systemd-analyze verify: %s", out);
    rc = sh(out, sizeof(out), "systemd-analyze security --offline=true --no-pager "
            "/lib/systemd/system/sluice.service | tail -1");
    cr_log_info("systemd-analyze security: %s", out);

    /* start it: an operator's edit of the conffile (a free port) */
    rc = sh(out, sizeof(out), "sed -i 's/127.0.0.1:9001/127.0.0.1:%d/' /etc/sluice/sluice.yaml",
            port);
    cr_assert_eq(rc, 0);
    f = fopen("/proc/1/comm", "r");
    if (f) {
        if (!fgets(pid1, sizeof(pid1), f))
            pid1[0] = '\0';
        fclose(f);
    }
    if (strncmp(pid1, "systemd", 7) == 0) {
        rc = sh(out, sizeof(out), "systemctl restart sluice && systemctl is-active sluice && "
                "curl -sS -d '{\"name\": \"deb\"}' "
                "http://127.0.0.1:%d/2015-03-31/functions/hello/invocations", port);
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "hello, deb") != NULL, "%s", out);
    } else {
        cr_log_info("systemd is not PID 1 here (%s): running ExecStart under the unit's "
                    "capabilities and file system", pid1);
        run_installed_service(port);
    }

    /* remove: the program goes, the configuration and state stay */
    rc = sh(out, sizeof(out), "dpkg -r sluice");
    cr_assert_eq(rc, 0, "dpkg -r: %s", out);
    rc = sh(out, sizeof(out), "test ! -e /usr/bin/sluice && test ! -e /usr/lib/sluice && "
            "test ! -e /usr/libexec/sluice && test ! -e /lib/systemd/system/sluice.service && "
            "test -f /etc/sluice/sluice.yaml && test -d /var/lib/sluice");
    cr_assert_eq(rc, 0, "after dpkg -r");
    /* purge: nothing of it is left but the system user */
    rc = sh(out, sizeof(out), "dpkg -P sluice");
    cr_assert_eq(rc, 0, "dpkg -P: %s", out);
    deb_installed = 0;
    rc = sh(out, sizeof(out), "test ! -e /etc/sluice && test ! -e /var/lib/sluice && "
            "test ! -e /etc/systemd/system/multi-user.target.wants/sluice.service && "
            "! dpkg-query -W sluice");
    cr_assert_eq(rc, 0, "after dpkg -P: %s", out);
}
