/* The harness of the tests that run `$BUILD/sluice run` as a child and
 * talk to it over HTTP: a scratch directory per test process
 * (/tmp/sluice-test-<RH_NAME>-<pid>), config files, the child's start
 * (waiting for /healthz) and stop (SIGTERM, exit 0), a small HTTP client
 * with keep-alive-free requests, and an arena for formatted strings.
 * Shared by test_rapi, test_rapi_ext, test_rapi_stream and test_nodejs:
 * define RH_NAME (the directory's tag) before including it. */
#ifndef SLUICE_TEST_RAPI_HARNESS_H
#define SLUICE_TEST_RAPI_HARNESS_H

#ifndef RH_NAME
#error "define RH_NAME before including rapi_harness.h"
#endif

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ------------------------------------------------------------------ */
/* Per-test state (each Criterion test runs in its own process)        */

static char root_dir[PATH_MAX];
static char dir[256];                /* /tmp/sluice-test-<RH_NAME>-<pid> */
static char log_path[300];
static pid_t server = -1;
static int port;

static inline const char *sluice_bin(void)
{
    static char exe[PATH_MAX + 64];
    const char *b = getenv("SLUICE_TEST_BIN");
    return b && *b ? b : th_build_path(exe, sizeof(exe), root_dir, "sluice");
}

static char *allocs[1024];
static int nallocs;

static inline char *keep(char *s)
{
    cr_assert_not_null(s);
    if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
        allocs[nallocs++] = s;
    return s;
}

static inline char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static inline char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return keep(s);
}

static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void put_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static inline char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return fmt("(cannot read %s)", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = keep(calloc(1, (size_t)n + 1));
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = '\0';
    fclose(f);
    return buf;
}

static inline const char *server_log(void)
{
    return log_path[0] ? slurp(log_path) : "";
}

static inline void rm_rf(const char *d)
{
    char cmd[400];

    if (strncmp(d, "/tmp/sluice-test-", 17) != 0)
        return; /* never anything else */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

static inline int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), p;

    cr_assert_geq(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    p = ntohs(sa.sin_port);
    close(fd);
    return p;
}

static inline void setup(void)
{
    cr_assert_not_null(getcwd(root_dir, sizeof(root_dir)));
    cr_assert_eq(access(sluice_bin(), X_OK), 0, "run from the repository root after make");
    setenv("SLUICE_RUNTIME_DIR", fmt("%s/runtime", root_dir), 1);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-" RH_NAME "-%d", (int)getpid());
    rm_rf(dir);
    cr_assert_eq(mkdir(dir, 0755), 0, "mkdir %s: %s", dir, strerror(errno));
    chmod(dir, 0755); /* handlers here are mounted for the sandbox user */
    port = free_port();
    signal(SIGPIPE, SIG_IGN);
}

static inline void teardown(void)
{
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
    }
    if (getenv("SLUICE_TEST_LOG") && log_path[0])
        fprintf(stderr, "---- sluice log ----\n%s\n", server_log());
    rm_rf(dir);
    while (nallocs > 0)
        free(allocs[--nallocs]);
}

/* ------------------------------------------------------------------ */
/* A small HTTP/1.1 client: one request per connection                 */

struct resp {
    int    status;          /* 0: no answer */
    char  *head;            /* status line and headers */
    char  *body;
    size_t blen;
};

static inline int connect_server(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { 30, 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static inline int send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read a whole response (the server closes: we send Connection: close). */
static inline void read_resp(int fd, struct resp *r, int timeout_ms)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1), *sep;
    double end = now_ms() + timeout_ms;

    memset(r, 0, sizeof(*r));
    cr_assert_not_null(buf);
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int left = (int)(end - now_ms());
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    keep(buf);
    sep = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || !sep)
        return;
    r->status = atoi(buf + 9);
    *sep = '\0';
    r->head = buf;
    r->body = sep + 4;
    r->blen = len - (size_t)(r->body - buf);
}

static inline struct resp http(const char *method, const char *path, const char *headers,
                        const char *body, size_t blen)
{
    struct resp r = { 0 };
    int fd = connect_server();
    char *req;

    if (fd < 0)
        return r;
    req = fmt("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
              "Content-Length: %zu\r\n%s\r\n", method, path, port, blen, headers ? headers : "");
    if (send_all(fd, req, strlen(req)) == 0 && (blen == 0 || send_all(fd, body, blen) == 0))
        read_resp(fd, &r, 30000);
    close(fd);
    return r;
}

static inline struct resp post(const char *path, const char *headers, const char *body)
{
    return http("POST", path, headers, body, strlen(body));
}

static inline struct resp get(const char *path)
{
    return http("GET", path, NULL, "", 0);
}

/* Value of a response header (case-insensitive name), or NULL. */
static inline const char *header(const struct resp *r, const char *name)
{
    size_t nl = strlen(name);

    for (const char *line = r->head ? strstr(r->head, "\r\n") : NULL; line;
         line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2, *e;

        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            for (l += nl + 1; *l == ' '; l++)
                ;
            e = strstr(l, "\r\n");
            return fmt("%.*s", (int)(e ? (size_t)(e - l) : strlen(l)), l);
        }
    }
    return NULL;
}

static inline const char *str_or(const char *s)
{
    return s ? s : "(none)";
}

/* ------------------------------------------------------------------ */
/* The server                                                          */

static inline const char *write_config(const char *name, const char *functions, const char *server_extra)
{
    const char *path = fmt("%s/%s", dir, name);

    put_file(path,
             fmt("%sserver:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data-%s\n%s",
                 functions, port, dir, name, server_extra ? server_extra : ""),
             0644);
    return path;
}

static inline pid_t spawn_sluice(const char *config, const char *logfile)
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(sluice_bin(), "sluice", "run", config, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Start `build/sluice run CONFIG` and wait until /healthz answers. */
static inline void start_server(const char *config)
{
    double end = now_ms() + 15000;
    int st;

    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    server = spawn_sluice(config, log_path);
    while (now_ms() < end) {
        struct resp r = get("/healthz");

        if (r.status == 200) {
            cr_assert_eq(r.blen, 3, "healthz body");
            cr_assert(memcmp(r.body, "ok\n", 3) == 0);
            return;
        }
        if (waitpid(server, &st, WNOHANG) == server) {
            server = -1;
            cr_assert_fail("sluice exited early (status %d); log:\n%s", st, server_log());
        }
        usleep(50000);
    }
    cr_assert_fail("/healthz did not answer within 15 s; log:\n%s", server_log());
}

/* SIGTERM, then exit code 0 within `ms`. */
static inline void stop_server(int ms)
{
    double end = now_ms() + ms;
    int st = 0;
    pid_t w = 0;

    cr_assert_gt(server, 0);
    cr_assert_eq(kill(server, SIGTERM), 0);
    while (now_ms() < end && (w = waitpid(server, &st, WNOHANG)) == 0)
        usleep(20000);
    cr_assert_eq(w, server, "sluice still running %d ms after SIGTERM; log:\n%s", ms,
                 server_log());
    server = -1;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after SIGTERM; log:\n%s",
              st, server_log());
}

#endif
