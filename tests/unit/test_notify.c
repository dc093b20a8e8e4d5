/* `sluice run` under a service manager: the sd_notify protocol systemd's
 * Type=notify and WatchdogSec= read. The test owns the datagram socket
 * $NOTIFY_SOCKET names (an abstract one), runs $BUILD/sluice as systemd
 * would, and reads what arrives: READY=1 only once the API answers
 * /readyz 200, WATCHDOG=1 periodically when WATCHDOG_USEC asks for it (and
 * never without), STOPPING=1 at SIGTERM. Needs root (sandboxes), curl. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
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

struct nt {
    char dir[128];          /* scratch: config, log, data_dir */
    char cfg[256], log[256];
    char name[64];          /* abstract socket name, without the '@' */
    int  sock;              /* bound datagram socket: what sluice sends */
    int  port;              /* server.listen */
    pid_t pid;
};

/* sluice of the running test: killed by cleanup() when an assertion ends
 * the test early (it holds the test's stdout and a port) */
static pid_t child = -1;

static void cleanup(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = -1;
    }
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nt_setup(struct nt *t, int port)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    char root[1024], echo[1200];
    FILE *f;

    memset(t, 0, sizeof(*t));
    t->pid = -1;
    snprintf(t->dir, sizeof(t->dir), "/tmp/sluice-notify-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->cfg, sizeof(t->cfg), "%s/sluice.yaml", t->dir);
    snprintf(t->log, sizeof(t->log), "%s/sluice.log", t->dir);
    cr_assert_not_null(getcwd(root, sizeof(root)));
    th_build_path(echo, sizeof(echo), root, "handlers/echo");
    t->port = port ? port : th_free_port();
    f = fopen(t->cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "server:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data\n  shutdown_grace_s: 5\n"
               "functions:\n  echo:\n    handler: %s\n", t->port, t->dir, echo);
    fclose(f);

    /* abstract: no file to clean up, reachable from any mount namespace */
    snprintf(t->name, sizeof(t->name), "sluice-test-notify-%d-%lld", (int)getpid(), now_ms());
    t->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(t->sock, 0);
    memcpy(a.sun_path + 1, t->name, strlen(t->name));
    cr_assert_eq(bind(t->sock, (struct sockaddr *)&a,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(t->name))),
                 0, "bind @%s: %s", t->name, strerror(errno));
}

/* Start sluice run with NOTIFY_SOCKET (and WATCHDOG_USEC when > 0). */
static void nt_start(struct nt *t, long long watchdog_usec)
{
    char sock[80], wd[32];

    snprintf(sock, sizeof(sock), "@%s", t->name);
    snprintf(wd, sizeof(wd), "%lld", watchdog_usec);
    t->pid = fork();
    cr_assert_geq(t->pid, 0);
    if (t->pid == 0) {
        setenv("NOTIFY_SOCKET", sock, 1);
        if (watchdog_usec > 0)
            setenv("WATCHDOG_USEC", wd, 1);
        else
            unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        execl("/bin/sh", "sh", "-c",
              "exec \"${BUILD:-build}/sluice\" run \"$0\" >/dev/null 2>>\"$1\"",
              t->cfg, t->log, (char *)NULL);
        _exit(127);
    }
    child = t->pid;
}

/* The next datagram within `ms`, into buf; 0 on a timeout. */
static int nt_recv(struct nt *t, char *buf, size_t n, int ms)
{
    struct pollfd p = { .fd = t->sock, .events = POLLIN };
    ssize_t len;

    if (poll(&p, 1, ms) <= 0)
        return 0;
    len = recv(t->sock, buf, n - 1, 0);
    cr_assert_gt(len, 0);
    buf[len] = '\0';
    return 1;
}

/* sluice's exit code within `ms`, else -1 (and it is killed). */
static int nt_wait(struct nt *t, int ms)
{
    long long end = now_ms() + ms;
    int st;

    while (now_ms() < end) {
        pid_t w = waitpid(t->pid, &st, WNOHANG);
        if (w == t->pid) {
            t->pid = child = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(20000);
    }
    kill(t->pid, SIGKILL);
    waitpid(t->pid, &st, 0);
    t->pid = child = -1;
    return -1;
}

static int http_status(int port, const char *path)
{
    char cmd[256];
    FILE *p;
    int code = 0;

    snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d%s",
             port, path);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (fscanf(p, "%d", &code) != 1)
        code = 0;
    pclose(p);
    return code;
}

static void nt_teardown(struct nt *t)
{
    char cmd[256];

    cleanup();
    close(t->sock);
    th_scan_logs(t->dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0) {
        /* a leftover scratch directory fails nothing */
    }
}

static char *slurp(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = 0;

    buf[0] = '\0';
    if (f) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

Test(notify, ready_after_readyz_then_watchdog_then_stopping, .timeout = 60, .fini = cleanup)
{
    struct nt t;
    char msg[512];
    int wd = 0, code;
    long long first_wd = 0, last_wd = 0;

    nt_setup(&t, 0);
    nt_start(&t, 300000); /* WATCHDOG_USEC 0.3 s: a ping every 150 ms */

    /* the first message is READY=1; the API answers by then */
    cr_assert(nt_recv(&t, msg, sizeof(msg), 20000), "no notification; log:\n%s", slurp(t.log));
    while (strncmp(msg, "WATCHDOG=1", 10) == 0)
        cr_assert(nt_recv(&t, msg, sizeof(msg), 20000), "no READY=1; log:\n%s", slurp(t.log));
    cr_assert(strstr(msg, "READY=1") != NULL, "first message: %s", msg);
    cr_assert_eq(http_status(t.port, "/readyz"), 200, "READY=1 before /readyz answered 200");
    cr_assert_eq(http_status(t.port, "/healthz"), 200);

    /* pings keep coming from the loop while it runs */
    while (wd < 5 && nt_recv(&t, msg, sizeof(msg), 3000)) {
        cr_assert(strstr(msg, "READY=1") == NULL, "READY=1 twice");
        if (strcmp(msg, "WATCHDOG=1") == 0) {
            last_wd = now_ms();
            if (!first_wd)
                first_wd = last_wd;
            wd++;
        }
    }
    cr_assert_eq(wd, 5, "only %d WATCHDOG=1 with WATCHDOG_USEC=300000; log:\n%s", wd,
                 slurp(t.log));
    /* four intervals of 150 ms: well below the 300 ms a manager would wait
     * for each, and clearly periodic (not a burst) */
    cr_assert_geq(last_wd - first_wd, 4 * 100, "5 pings in %lld ms", last_wd - first_wd);
    cr_assert(strstr(slurp(t.log), "WATCHDOG=1 every 150 ms") != NULL, "%s", slurp(t.log));

    kill(t.pid, SIGTERM);
    do {
        cr_assert(nt_recv(&t, msg, sizeof(msg), 10000), "no STOPPING=1 after SIGTERM");
    } while (strcmp(msg, "WATCHDOG=1") == 0);
    cr_assert(strstr(msg, "STOPPING=1") != NULL, "after SIGTERM: %s", msg);
    code = nt_wait(&t, 20000);
    cr_assert_eq(code, 0, "exit %d; log:\n%s", code, slurp(t.log));
    nt_teardown(&t);
}

Test(notify, no_watchdog_pings_without_watchdog_usec, .timeout = 60, .fini = cleanup)
{
    struct nt t;
    char msg[512];
    int code;

    nt_setup(&t, 0);
    nt_start(&t, 0);
    cr_assert(nt_recv(&t, msg, sizeof(msg), 20000), "no READY=1; log:\n%s", slurp(t.log));
    cr_assert(strstr(msg, "READY=1") != NULL, "first message: %s", msg);
    /* a second of silence: no WATCHDOG=1 that nobody asked for */
    cr_assert_not(nt_recv(&t, msg, sizeof(msg), 1000), "unasked: %s", msg);
    kill(t.pid, SIGTERM);
    cr_assert(nt_recv(&t, msg, sizeof(msg), 10000), "no STOPPING=1 after SIGTERM");
    cr_assert(strstr(msg, "STOPPING=1") != NULL, "after SIGTERM: %s", msg);
    code = nt_wait(&t, 20000);
    cr_assert_eq(code, 0, "exit %d", code);
    nt_teardown(&t);
}

/* A reload (SIGHUP, systemd's ExecReload) is framed by RELOADING=1 (with
 * MONOTONIC_USEC) and READY=1, for an applied reload and a refused one. */
Test(notify, reloading_then_ready_around_a_reload, .timeout = 60, .fini = cleanup)
{
    struct nt t;
    char msg[512];
    int code;

    nt_setup(&t, 0);
    nt_start(&t, 0);
    cr_assert(nt_recv(&t, msg, sizeof(msg), 20000), "no READY=1; log:\n%s", slurp(t.log));
    cr_assert(strstr(msg, "READY=1") != NULL, "first message: %s", msg);
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            /* an invalid file: refused, and still READY=1 after */
            FILE *f = fopen(t.cfg, "a");
            cr_assert_not_null(f);
            fputs("not_a_key: 1\n", f);
            fclose(f);
        }
        kill(t.pid, SIGHUP);
        cr_assert(nt_recv(&t, msg, sizeof(msg), 10000), "nothing after SIGHUP");
        cr_assert(strstr(msg, "RELOADING=1") != NULL, "after SIGHUP: %s", msg);
        cr_assert(strstr(msg, "MONOTONIC_USEC=") != NULL, "after SIGHUP: %s", msg);
        cr_assert(nt_recv(&t, msg, sizeof(msg), 20000), "no READY=1 after the reload");
        cr_assert(strstr(msg, "READY=1") != NULL, "after the reload: %s", msg);
        if (round == 1)
            cr_assert(strstr(msg, "refused") != NULL, "a refused reload: %s", msg);
    }
    kill(t.pid, SIGTERM);
    cr_assert(nt_recv(&t, msg, sizeof(msg), 10000), "no STOPPING=1 after SIGTERM");
    cr_assert(strstr(msg, "STOPPING=1") != NULL, "after SIGTERM: %s", msg);
    code = nt_wait(&t, 20000);
    cr_assert_eq(code, 0, "exit %d", code);
    nt_teardown(&t);
}

/* A service that cannot start never claims readiness: systemd then sees
 * the exit, not a ready service that dies. */
Test(notify, no_ready_when_the_api_cannot_listen, .timeout = 60, .fini = cleanup)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    struct nt t;
    char msg[512];
    int busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), code, ready = 0, stopping = 0;

    cr_assert_eq(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(busy, 1), 0);
    cr_assert_eq(getsockname(busy, (struct sockaddr *)&a, &len), 0);
    nt_setup(&t, ntohs(a.sin_port));
    nt_start(&t, 0);
    code = nt_wait(&t, 20000);
    cr_assert_eq(code, 1, "exit %d with server.listen taken; log:\n%s", code, slurp(t.log));
    while (nt_recv(&t, msg, sizeof(msg), 0)) {
        ready += strstr(msg, "READY=1") != NULL;
        stopping += strstr(msg, "STOPPING=1") != NULL;
    }
    cr_assert_eq(ready, 0, "READY=1 from a service that did not start");
    cr_assert_eq(stopping, 1);
    close(busy);
    nt_teardown(&t);
}
