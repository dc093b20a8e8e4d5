/* The sluice binary: lint output and exit codes, help, and a graceful stop
 * on SIGTERM. Runs $BUILD/sluice ("build" by default) as a user would. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* the shell expands it: tests/run exports BUILD */
#define SLUICE "\"${BUILD:-build}/sluice\""

/* Run a shell command; returns its exit code, output (stdout+stderr) in buf. */
static int sh(const char *cmd, char *buf, size_t n)
{
    char full[1024];
    size_t len = 0;
    FILE *p;
    int st;

    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    p = popen(full, "r");
    cr_assert_not_null(p);
    while (len + 1 < n && fgets(buf + len, (int)(n - len), p))
        len += strlen(buf + len);
    buf[len] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_lines_with(const char *s, const char *needle)
{
    int n = 0;

    for (const char *line = s; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len >= strlen(needle) && strncmp(line, needle, strlen(needle)) == 0)
            n++;
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

Test(cli, lint_reports_five_mistakes_and_exits_1)
{
    char out[8192];
    int code = sh(SLUICE " lint tests/unit/fixtures/five-mistakes.yaml", out, sizeof(out));

    cr_expect_eq(code, 1, "output: %s", out);
    cr_expect_eq(count_lines_with(out, "tests/unit/fixtures/five-mistakes.yaml:"), 6, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml:4:16: functions.resize.memory_mb: 100000 is out of "
                          "range 128..10240 MB\n") != NULL, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml:5:5: functions.resize.timeout: unknown key "
                          "(did you mean 'timeout_s'?)\n") != NULL, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml:9:15: sources.orders.function: no function named "
                          "'thumbnail'\n") != NULL, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml:12:17: sources.orders.batch_size: 'lots' is not "
                          "an integer\n") != NULL, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml:13:17: sources.orders.on_failure: no sink named "
                          "'nowhere'\n") != NULL, "%s", out);
    cr_expect(strstr(out, "five-mistakes.yaml: 5 errors\n") != NULL, "%s", out);
}

Test(cli, lint_quickstart_exits_0)
{
    char out[4096];

    cr_expect_eq(sh(SLUICE " lint examples/quickstart.yaml", out, sizeof(out)), 0, "%s", out);
    cr_expect(strstr(out, "ok (4 functions, 3 sources, 2 sinks)") != NULL, "%s", out);
}

Test(cli, bad_input_is_a_clear_error)
{
    char out[4096];

    cr_expect_eq(sh(SLUICE " run /nonexistent/sluice.yaml", out, sizeof(out)), 1);
    cr_expect_str_eq(out, "/nonexistent/sluice.yaml: cannot open: No such file or directory\n");
    cr_expect_eq(sh(SLUICE " lint /bin/true", out, sizeof(out)), 1);
    cr_expect(strstr(out, "/bin/true: not a text file") != NULL, "%s", out);
    cr_expect_eq(sh("head -c 3000 /dev/urandom | tr -d '\\000' > /tmp/sluice-garbage.yaml && "
                    SLUICE " run /tmp/sluice-garbage.yaml", out, sizeof(out)), 1, "%s", out);
    cr_expect(strstr(out, "/tmp/sluice-garbage.yaml") == out, "%s", out);
    cr_expect_eq(sh(SLUICE " lint tests/unit/fixtures", out, sizeof(out)), 1, "%s", out);
    cr_expect_eq(sh(SLUICE " frobnicate", out, sizeof(out)), 2);
    cr_expect_str_eq(out, "sluice: unknown command 'frobnicate'; see 'sluice help'\n");
    cr_expect_eq(sh(SLUICE " lint", out, sizeof(out)), 2);
    cr_expect_eq(sh(SLUICE, out, sizeof(out)), 2);
}

Test(cli, help_for_every_command)
{
    static const char *const cmds[] = { "run", "lint", "version", "config-docs", "help" };
    char out[4096], cmd[256];

    cr_expect_eq(sh(SLUICE " help", out, sizeof(out)), 0);
    cr_expect_eq(sh(SLUICE " --help", out, sizeof(out)), 0);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        snprintf(cmd, sizeof(cmd), SLUICE " %s --help", cmds[i]);
        cr_expect_eq(sh(cmd, out, sizeof(out)), 0, "%s", cmd);
        cr_expect(strncmp(out, "usage: sluice ", 14) == 0, "%s: %s", cmd, out);
        snprintf(cmd, sizeof(cmd), SLUICE " help %s", cmds[i]);
        cr_expect_eq(sh(cmd, out, sizeof(out)), 0, "%s", cmd);
    }
    cr_expect_eq(sh(SLUICE " version", out, sizeof(out)), 0);
    cr_expect_eq(strncmp(out, "sluice ", 7), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(cli, run_stops_on_sigterm_within_a_second)
{
    int errp[2], st = 0;
    char buf[8192] = "";
    size_t len = 0;
    double t0, waited;
    pid_t pid;

    cr_assert_eq(pipe(errp), 0);
    pid = fork();
    if (pid == 0) {
        dup2(errp[1], 2);
        close(errp[0]);
        setenv("SLUICE_PORT", "19001", 1);
        char exe[1200];
        th_build_path(exe, sizeof(exe), NULL, "sluice");
        execl(exe, "sluice", "run", "examples/quickstart.yaml", (char *)NULL);
        _exit(127);
    }
    close(errp[1]);
    /* wait for the "running" line: the loop is up */
    t0 = now_s();
    while (!strstr(buf, "running") && now_s() - t0 < 10) {
        struct pollfd p = { errp[0], POLLIN, 0 };
        if (poll(&p, 1, 100) > 0) {
            ssize_t r = read(errp[0], buf + len, sizeof(buf) - len - 1);
            if (r <= 0)
                break;
            len += (size_t)r;
            buf[len] = '\0';
        }
    }
    cr_assert(strstr(buf, "running") != NULL, "sluice did not start: %s", buf);
    t0 = now_s();
    kill(pid, SIGTERM);
    while (waitpid(pid, &st, WNOHANG) == 0 && now_s() - t0 < 5)
        usleep(5000);
    waited = now_s() - t0;
    cr_expect_lt(waited, 1.0, "took %.3f s to stop", waited);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    if (waited >= 5)
        kill(pid, SIGKILL);
    close(errp[0]);
}
