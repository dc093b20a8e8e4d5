/* Sandboxes and environments, end to end: real handlers (tests/handlers,
 * examples/handlers, tests/unit/fixtures) run in real sandboxes
 * through the library (config from YAML text, sl_functions_new, pools,
 * the event loop), and the sluice binary for `run` and `invoke --local`.
 *
 * Needs root (namespaces, cgroups) and $BUILD (make; "build" by default). Run from the repo
 * root; SLUICE_RUNTIME_DIR is set to <cwd>/runtime by every test.
 * Every test has its own data_dir (/tmp/sluice-test-sbx-<pid>), so tests
 * run in parallel (-j2). The log goes to a memfd that tests read back;
 * set SLUICE_TEST_LOG=1 to see it on stderr instead. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "harness.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/log.h"

#define ESCAPE   "tests/handlers/escape.py"
#define COUNTER  "tests/handlers/counter.py"
#define ECHO_PY  "examples/handlers/echo.py"
#define FAIL_PY  "examples/handlers/fail.py"
#define SLOW_PY  "examples/handlers/slow.py"
#define BAD      "tests/unit/fixtures/bad_frames.py"

/* ------------------------------------------------------------------ */
/* Per-test state (each Criterion test runs in its own process)        */

static char root_dir[PATH_MAX];      /* the repository: cwd */
static char data_dir[256];           /* /tmp/sluice-test-sbx-<pid> */
static struct event_base *base;
static struct sl_config *conf;
static struct sl_functions *fns;
static int log_fd = -1;
static pid_t spawned = -1;           /* a sluice process a test started */
static char orphan_needle[64];       /* cmdline marker of test 16's handlers */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Strings built by a test live until its teardown (LeakSanitizer is on
 * in SANITIZE=1 builds). */
static char *allocs[512];
static int nallocs;
static json_t *jsons[256];
static int njsons;

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    cr_assert_not_null(s);
    if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
        allocs[nallocs++] = s;
    return s;
}

/* An absolute path under the repository. */
static char *repo(const char *rel)
{
    return xasprintf("%s/%s", root_dir, rel);
}

/* `rel` under $BUILD (malloc'd): `make BUILD=build-asan test` tests that build. */
static char *built(const char *rel)
{
    char path[PATH_MAX + 64];

    return xasprintf("%s", th_build_path(path, sizeof(path), root_dir, rel));
}

static void rm_rf(const char *dir)
{
    char cmd[512];

    if (strncmp(dir, "/tmp/sluice-test-sbx-", 21) != 0)
        return; /* never anything else */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

static void setup(void)
{
    char rt[PATH_MAX + 16];

    cr_assert_not_null(getcwd(root_dir, sizeof(root_dir)));
    snprintf(rt, sizeof(rt), "%s/runtime", root_dir);
    cr_assert_eq(access(rt, R_OK), 0, "run the tests from the repository root (no %s)", rt);
    setenv("SLUICE_RUNTIME_DIR", rt, 1);
    {
        /* the test binary is no sluice: name the init of $BUILD */
        char init[PATH_MAX + 64];
        setenv("SLUICE_INIT", th_build_path(init, sizeof(init), root_dir, "sluice-init"), 1);
    }
    snprintf(data_dir, sizeof(data_dir), "/tmp/sluice-test-sbx-%d", (int)getpid());
    rm_rf(data_dir);
    cr_assert_eq(mkdir(data_dir, 0755), 0, "mkdir %s: %s", data_dir, strerror(errno));
    chmod(data_dir, 0755); /* code dirs below it are mounted for uid 993 */

    sl_log_set_level(SL_LOG_INFO);
    sl_log_set_format(SL_LOG_TEXT);
    sl_log_set_debug(0);
    if (!getenv("SLUICE_TEST_LOG")) {
        log_fd = memfd_create("sluice-test-log", MFD_CLOEXEC);
        cr_assert_geq(log_fd, 0);
        sl_log_set_fd(log_fd);
    }
    base = event_base_new();
    cr_assert_not_null(base);
}

/* Kill whatever host process still runs a handler of test 16, by pid. */
static int scan_procs(const char *needle, size_t nlen, const char *cg, pid_t *out, int max);

static void teardown(void)
{
    if (spawned > 0) {
        kill(spawned, SIGKILL);
        waitpid(spawned, NULL, 0);
        spawned = -1;
    }
    if (orphan_needle[0]) {
        pid_t pids[64];
        int n = scan_procs(orphan_needle, strlen(orphan_needle), NULL, pids, 64);
        for (int i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
    }
    sl_functions_free(fns);
    fns = NULL;
    sl_config_free(conf);
    conf = NULL;
    if (base)
        event_base_free(base);
    base = NULL;
    rm_rf(data_dir);
    while (nallocs > 0)
        free(allocs[--nallocs]);
    while (njsons > 0)
        json_decref(jsons[--njsons]);
}

/* The captured log so far (static buffer), "" when it goes to stderr. */
static const char *log_text(void)
{
    static char buf[1 << 20];
    ssize_t n = log_fd >= 0 ? pread(log_fd, buf, sizeof(buf) - 1, 0) : 0;

    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* The last `n` bytes of the log, for assertion messages. */
static const char *log_tail(size_t n)
{
    const char *t = log_text();
    size_t len = strlen(t);

    return len > n ? t + len - n : t;
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

/* One function's YAML block. `extra` holds more keys, each line indented
 * by four spaces ("    reserved_concurrency: 2\n"), or NULL. */
static char *fn_yaml(const char *name, const char *handler_abs, int memory_mb, int timeout_s,
                     const char *extra)
{
    return xasprintf("  %s:\n"
                     "    handler: %s\n"
                     "    memory_mb: %d\n"
                     "    timeout_s: %d\n"
                     "%s",
                     name, handler_abs, memory_mb, timeout_s, extra ? extra : "");
}

/* `server` holds more server keys, each line indented by two spaces, or NULL. */
static char *config_yaml_server(const char *functions, const char *dir, const char *server)
{
    return xasprintf("functions:\n%sserver:\n  data_dir: %s\n%s", functions, dir,
                     server ? server : "");
}

static char *config_yaml(const char *functions, const char *dir)
{
    return config_yaml_server(functions, dir, NULL);
}

/* Load `functions` (YAML blocks from fn_yaml) and `server` keys, and
 * prepare every pool. */
static void start_server(const char *functions, const char *server)
{
    char *text = config_yaml_server(functions, data_dir, server), *dtext = NULL;
    struct sl_diags d;
    struct sl_err err;
    size_t dlen = 0;
    int rc;

    sl_diags_init(&d, "test.yaml");
    rc = sl_config_load_buffer("test.yaml", root_dir, text, strlen(text), &sl_registry, &conf,
                               &d);
    if (rc != 0) {
        FILE *m = open_memstream(&dtext, &dlen);
        sl_diags_print(&d, m);
        fclose(m);
    }
    sl_diags_destroy(&d);
    cr_assert_eq(rc, 0, "config does not load:\n%s\n%s", text, dtext ? dtext : "");
    free(dtext);
    sl_err_clear(&err);
    rc = sl_functions_new(base, conf, NULL, &fns, &err);
    cr_assert_eq(rc, 0, "sl_functions_new: %s", err.msg);
}

static void start(const char *functions)
{
    start_server(functions, NULL);
}

static struct sl_fnpool *pool_of(const char *name)
{
    struct sl_fnpool *p = sl_functions_pool(fns, name);
    cr_assert_not_null(p, "no pool for %s", name);
    return p;
}

/* ------------------------------------------------------------------ */
/* Invocations                                                         */

/* One invocation's outcome, copied out of the callback. Always static or
 * global: a pool freed after a failed assertion still calls back. */
struct call {
    int     done;
    bool    ok;
    char   *event;              /* owned: borrowed by the pool until cb */
    char   *payload;
    json_t *json;               /* parsed payload (ok only) */
    char    etype[128];
    char    emsg[1024];
    char    request_id[40];
    bool    cold;
    double  init_ms, duration_ms;
    double  started_ms, ended_ms;
};

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct call *c = arg;

    c->done++;
    c->ok = r->ok;
    c->cold = r->cold;
    c->init_ms = r->init_ms;
    c->duration_ms = r->duration_ms;
    c->ended_ms = now_ms();
    snprintf(c->request_id, sizeof(c->request_id), "%s", r->request_id ? r->request_id : "");
    snprintf(c->etype, sizeof(c->etype), "%s", r->error_type ? r->error_type : "");
    snprintf(c->emsg, sizeof(c->emsg), "%s", r->error_message ? r->error_message : "");
    if (r->ok && r->payload) {
        c->payload = strndup(r->payload, r->payload_len);
        c->json = json_loadb(r->payload, r->payload_len, JSON_DECODE_ANY, NULL);
        /* both live until teardown, which also covers a failed assertion */
        if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
            allocs[nallocs++] = c->payload;
        if (c->json && njsons < (int)(sizeof(jsons) / sizeof(jsons[0])))
            jsons[njsons++] = c->json;
    }
}

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

/* Run the loop until pred(arg) or `timeout_ms` passed; returns pred(arg).
 * A 10 ms ticker keeps EVLOOP_ONCE from sleeping past the deadline. */
static bool wait_cond(bool (*pred)(void *), void *arg, int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, noop_cb, NULL);
    struct timeval tv = { 0, 10000 };
    double end = now_ms() + timeout_ms;

    event_add(tick, &tv);
    while (!pred(arg) && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return pred(arg);
}

static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static bool wait_until(int *flag, int timeout_ms)
{
    return wait_cond(flag_set, flag, timeout_ms);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* Let the loop run for `ms`. */
static void pump(int ms)
{
    wait_cond(never, NULL, ms);
}

/* Start an invocation; returns what sl_fnpool_invoke returned. */
static int invoke_rc(struct sl_fnpool *pool, const char *event, struct call *c)
{
    struct sl_invoke_req req;

    free(c->event);
    memset(c, 0, sizeof(*c));
    c->event = strdup(event);
    memset(&req, 0, sizeof(req));
    req.event = c->event;
    req.event_len = strlen(c->event);
    c->started_ms = now_ms();
    return sl_fnpool_invoke(pool, &req, on_result, c);
}

static void invoke(struct sl_fnpool *pool, const char *event, struct call *c)
{
    int rc = invoke_rc(pool, event, c);
    cr_assert_eq(rc, 0, "sl_fnpool_invoke(%s) = %d (%s)", event, rc, sl_errname(rc));
}

/* Invoke and wait for the result (asserting that it came). */
static void call(struct sl_fnpool *pool, const char *event, struct call *c, int timeout_ms)
{
    invoke(pool, event, c);
    cr_assert(wait_until(&c->done, timeout_ms), "no result for %s within %d ms; log:\n%s",
              event, timeout_ms, log_tail(3000));
    cr_assert_eq(c->done, 1, "callback ran %d times", c->done);
}

/* Assert success with a JSON payload. */
static json_t *ok_json(const struct call *c)
{
    cr_assert(c->ok, "invocation failed: %s: %s; log:\n%s", c->etype, c->emsg, log_tail(3000));
    cr_assert_not_null(c->json, "payload is not JSON: %.200s", c->payload ? c->payload : "");
    return c->json;
}

static json_t *jget(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert_not_null(v, "no key '%s' in %s", key, json_dumps(o, JSON_COMPACT));
    return v;
}

static long long jint(const json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    cr_assert(json_is_integer(v), "'%s' is not an integer", key);
    return (long long)json_integer_value(v);
}

static const char *jstr(const json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    cr_assert(json_is_string(v), "'%s' is not a string", key);
    return json_string_value(v);
}

/* ------------------------------------------------------------------ */
/* Host processes                                                      */

/* Read a whole /proc file (cmdline keeps its NUL separators). */
static ssize_t read_proc(pid_t pid, const char *file, char *buf, size_t n)
{
    char path[64];
    ssize_t len = 0, r;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    while (len < (ssize_t)n - 1 && (r = read(fd, buf + len, n - 1 - (size_t)len)) > 0)
        len += r;
    close(fd);
    buf[len] = '\0';
    return len;
}

/* Host pids (other than ours) whose cmdline holds the `nlen` bytes of
 * `needle` and, when `cg` is not NULL, whose /proc/PID/cgroup holds `cg`.
 * Zombies have an empty cmdline and never match. */
static int scan_procs(const char *needle, size_t nlen, const char *cg, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) && n < max) {
        char buf[8192];
        pid_t pid = (pid_t)atoi(e->d_name);
        ssize_t len;

        if (pid <= 0 || pid == getpid())
            continue;
        len = read_proc(pid, "cmdline", buf, sizeof(buf));
        if (len <= 0 || !memmem(buf, (size_t)len, needle, nlen))
            continue;
        if (cg && (read_proc(pid, "cgroup", buf, sizeof(buf)) <= 0 || !strstr(buf, cg)))
            continue;
        out[n++] = pid;
    }
    closedir(d);
    return n;
}

/* Does host process `pid` still run a command line holding `needle`? */
static bool proc_runs(pid_t pid, const char *needle, size_t nlen)
{
    char buf[4096];
    ssize_t len = read_proc(pid, "cmdline", buf, sizeof(buf));

    return len > 0 && memmem(buf, (size_t)len, needle, nlen) != NULL;
}

/* Write a file, creating directories is the caller's business. */
static void put_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "we");

    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t len = 0;
    FILE *m;
    char chunk[4096];
    size_t n;

    if (!f)
        return xasprintf("%s", "");
    m = open_memstream(&buf, &len);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
        allocs[nallocs++] = buf; /* freed at teardown */
    return buf;
}

/* ================================================================== */
/* 1. the root is read-only, /tmp is not                               */

Test(sandbox, writes_outside_tmp_fail_with_erofs, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;
    json_t *j, *r;

    start(fn_yaml("escape", repo(ESCAPE), 1769, 10, NULL));
    call(pool_of("escape"), "{\"action\":\"write_outside\"}", &c, 20000);
    j = ok_json(&c);

    r = jget(j, "/etc/sluice-escape");
    cr_expect(!json_is_true(jget(r, "ok")), "wrote /etc");
    cr_expect_eq(jint(r, "errno"), EROFS, "/etc: %s", json_dumps(r, JSON_COMPACT));

    r = jget(j, "/var/task/x");
    cr_expect(!json_is_true(jget(r, "ok")), "wrote /var/task");
    cr_expect_eq(jint(r, "errno"), EROFS, "/var/task: %s", json_dumps(r, JSON_COMPACT));

    r = jget(j, "/tmp/sluice-escape-control");
    cr_expect(json_is_true(jget(r, "ok")), "/tmp is not writable: %s",
              json_dumps(r, JSON_COMPACT));

    /* and nothing reached the host */
    cr_expect_neq(access("/etc/sluice-escape", F_OK), 0, "/etc/sluice-escape exists on the host");
    cr_expect_neq(access("/tmp/sluice-escape-control", F_OK), 0,
                  "the sandbox's /tmp is the host's /tmp");
}

/* ------------------------------------------------------------------ */
/* 2. host files outside the mounts do not exist inside                */

Test(sandbox, host_files_are_not_visible, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    char *secret = xasprintf("%s/tests/secret-%d", built(""), (int)getpid());
    char *event = xasprintf("{\"action\":\"read_host\",\"path\":\"%s\"}", secret);
    json_t *j;

    put_file(secret, "top secret\n", 0644);
    start(fn_yaml("escape", repo(ESCAPE), 1769, 10, NULL));
    call(pool_of("escape"), event, &c, 20000);
    unlink(secret);
    j = ok_json(&c);
    cr_expect(!json_is_true(jget(j, "ok")), "read the host's file: %s",
              json_dumps(j, JSON_COMPACT));
    cr_expect_eq(jint(j, "errno"), ENOENT, "%s", json_dumps(j, JSON_COMPACT));
    cr_expect_null(json_object_get(j, "data"));
}

/* ------------------------------------------------------------------ */
/* 3. no network: the host's loopback is unreachable; the env's own
 *    loopback (up, nothing listens on that port) refuses instead      */

Test(sandbox, network_is_unreachable, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    struct sockaddr_in sa;
    socklen_t slen = sizeof(sa);
    int ls, port, fd;
    char *event;
    json_t *j;

    ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(ls, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(ls, 16), 0);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&sa, &slen), 0);
    port = ntohs(sa.sin_port);

    start(fn_yaml("escape", repo(ESCAPE), 1769, 10, NULL));
    event = xasprintf("{\"action\":\"connect\",\"port\":%d}", port);
    call(pool_of("escape"), event, &c, 20000);
    j = ok_json(&c);
    cr_expect(!json_is_true(jget(j, "ok")), "connected to the host: %s",
              json_dumps(j, JSON_COMPACT));
    cr_expect_eq(jint(j, "errno"), ECONNREFUSED, "%s", json_dumps(j, JSON_COMPACT));

    fd = accept(ls, NULL, NULL);
    cr_expect_eq(fd, -1, "the listener got a connection");
    cr_expect(errno == EAGAIN || errno == EWOULDBLOCK, "accept: %s", strerror(errno));
    close(ls);
}

/* ------------------------------------------------------------------ */
/* 4. a fork bomb stops at the pids limit and harms nobody else        */

Test(sandbox, fork_bomb_hits_pids_limit, .init = setup, .fini = teardown, .timeout = 120)
{
    static struct call c, e;
    char *fns_yaml;
    json_t *j, *stop;
    long long forked;

    fns_yaml = xasprintf("%s%s", fn_yaml("escape", repo(ESCAPE), 1769, 60, NULL),
                         fn_yaml("echo", built("handlers/echo"), 128, 10, NULL));
    start(fns_yaml);
    call(pool_of("escape"), "{\"action\":\"fork_bomb\",\"max\":3000}", &c, 90000);
    j = ok_json(&c);
    forked = jint(j, "forked");
    cr_expect_lt(forked, 1100, "forked %lld processes: no pids limit (1024)", forked);
    cr_expect_gt(forked, 100, "forked only %lld: the limit is far below 1024", forked);
    stop = jget(j, "stopped_by");
    cr_assert(json_is_object(stop), "the bomb was not stopped: %s", json_dumps(j, JSON_COMPACT));
    cr_expect_eq(jint(stop, "errno"), EAGAIN, "%s", json_dumps(stop, JSON_COMPACT));

    /* the service is alive: a fresh function starts and answers */
    call(pool_of("echo"), "{\"alive\":true}", &e, 20000);
    ok_json(&e);
    cr_expect(e.cold);
    cr_expect(json_is_true(jget(e.json, "alive")), "echo answered %s", e.payload);
    /* and so is the bombed one: its env survived with all processes reaped */
    call(pool_of("escape"), "{\"action\":\"whoami\"}", &c, 20000);
    ok_json(&c);
}

/* ------------------------------------------------------------------ */
/* 5. memory_mb is a hard limit; the pool recovers                     */

Test(sandbox, out_of_memory_then_new_env, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    struct sl_fnpool *pool;

    start(fn_yaml("escape", repo(ESCAPE), 256, 30, NULL));
    pool = pool_of("escape");
    call(pool, "{\"action\":\"alloc\",\"mb\":600}", &c, 40000);
    cr_expect(!c.ok, "allocated 600 MB under a 256 MB limit: %s", c.payload);
    cr_expect_str_eq(c.etype, "Runtime.OutOfMemory", "%s: %s", c.etype, c.emsg);
    cr_expect(strstr(c.emsg, "256 MB") != NULL, "message: %s", c.emsg);
    cr_expect_eq(sl_fnpool_envs(pool), 0, "the killed env was kept");

    call(pool, "{\"action\":\"whoami\"}", &c, 20000);
    ok_json(&c);
    cr_expect(c.cold, "the next invocation did not get a new env");
    cr_expect_eq(sl_fnpool_envs(pool), 1);
}

/* ------------------------------------------------------------------ */
/* 6. kernel administration is refused                                 */

Test(sandbox, ptrace_mount_unshare_are_eperm, .init = setup, .fini = teardown, .timeout = 60)
{
    static const char *const actions[] = { "ptrace", "mount", "unshare" };
    static struct call c;
    struct sl_fnpool *pool;

    start(fn_yaml("escape", repo(ESCAPE), 1769, 10, NULL));
    pool = pool_of("escape");
    for (size_t i = 0; i < 3; i++) {
        char *event = xasprintf("{\"action\":\"%s\"}", actions[i]);
        json_t *j;
        call(pool, event, &c, 20000);
        j = ok_json(&c);
        cr_expect_eq(jint(j, "ret"), -1, "%s succeeded: %s", actions[i], c.payload);
        cr_expect_eq(jint(j, "errno"), EPERM, "%s: %s", actions[i], c.payload);

    }
}

/* ------------------------------------------------------------------ */
/* 6b. seccomp is an allowlist (hardening item 7)                      */

#define SYSCALLS "test-handlers/syscalls"
#define WORKLOAD "tests/handlers/workload.py"

/* Every value of `j` is the string "ok"; `what` names the runtime. */
static void expect_all_ok(const json_t *j, const char *what)
{
    const char *key;
    json_t *v;

    cr_assert(json_is_object(j) && json_object_size(j) > 0, "%s: no checks: %s", what,
              json_dumps(j, JSON_COMPACT));
    json_object_foreach((json_t *)j, key, v) {
        cr_expect(json_is_string(v) && strcmp(json_string_value(v), "ok") == 0,
                  "%s: %s failed: %s", what, key, json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY));
    }
}

/* What the filter must refuse, probed from the C runtime, each in a child.
 * On the denylist this replaced, io_uring_setup returned a ring,
 * personality the old persona, the vsock, netlink and AF_ALG sockets were
 * created and FIGETBSZ answered; TCSETS on a pipe said ENOTTY. */
Test(sandbox, seccomp_refuses_what_is_not_allowed, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static const char *const eperm[] = {
        "io_uring_setup", "personality", "socket_vsock", "socket_netlink",
        "socket_netlink_high_bits", "socket_alg", "ioctl_figetbsz", "ioctl_tcsets",
        "ioctl_tiocsti_high_bits", "clone_newuser",
    };
    static struct call c;
    json_t *j, *p;

    start(fn_yaml("syscalls", built(SYSCALLS), 512, 20, NULL));
    call(pool_of("syscalls"), "{\"action\":\"refused\"}", &c, 30000);
    j = ok_json(&c);
    for (size_t i = 0; i < sizeof(eperm) / sizeof(eperm[0]); i++) {
        p = jget(j, eperm[i]);
        cr_expect(json_object_get(p, "ret") && jint(p, "ret") == -1 && jint(p, "errno") == EPERM,
                  "%s was not refused with EPERM: %s", eperm[i], json_dumps(p, JSON_COMPACT));
    }
    /* ENOSYS, so that libc falls back to clone, whose flags the filter reads */
    p = jget(j, "clone3");
    cr_expect(json_object_get(p, "ret") && jint(p, "ret") == -1 && jint(p, "errno") == ENOSYS,
              "clone3 did not fail with ENOSYS: %s", json_dumps(p, JSON_COMPACT));
#if defined(__x86_64__)
    /* the other system call ABIs of the CPU kill the process */
    p = jget(j, "abi_i386");
    cr_expect(json_object_get(p, "signal") && jint(p, "signal") == SIGSYS,
              "a system call through int $0x80 was not killed: %s", json_dumps(p, JSON_COMPACT));
    p = jget(j, "abi_x32");
    cr_expect(json_object_get(p, "signal") && jint(p, "signal") == SIGSYS,
              "an x32 system call was not killed: %s", json_dumps(p, JSON_COMPACT));
#endif
}

/* Ordinary work from four threads at once in the C runtime: memory,
 * futexes, files, epoll, timers, signals, sockets, the allowed ioctls,
 * posix_spawn. */
Test(sandbox, seccomp_allows_c_handler_work, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;

    start(fn_yaml("syscalls", built(SYSCALLS), 512, 20, NULL));
    call(pool_of("syscalls"), "{\"action\":\"work\"}", &c, 30000);
    expect_all_ok(ok_json(&c), "C");
}

/* A Python handler's ordinary work: threads, asyncio, HTTP on 127.0.0.1,
 * subprocesses, fork, TLS, sqlite, mmap, signals. */
Test(sandbox, seccomp_allows_python_handler_work, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;

    start(fn_yaml("workload", repo(WORKLOAD), 512, 30, NULL));
    call(pool_of("workload"), "{\"action\":\"python\"}", &c, 40000);
    expect_all_ok(ok_json(&c), "Python");
}

/* The program workload.py runs inside the sandbox exits 0 and prints a
 * JSON object of checks that are all "ok". `members`: JSON members of the
 * `run` event ("argv": [...], optionally "env": {...}). */
static void expect_program_works(const char *what, const char *members, const char *extra)
{
    static struct call c;
    const char *out, *brace;
    json_t *j, *checks;

    start(fn_yaml("workload", repo(WORKLOAD), 1024, 60, extra));
    call(pool_of("workload"), xasprintf("{\"action\":\"run\",%s}", members), &c,
         90000);
    j = ok_json(&c);
    out = jstr(j, "output");
    cr_expect(json_is_integer(jget(j, "status")) && jint(j, "status") == 0,
              "%s exited %s:\n%s", what, json_dumps(jget(j, "status"), JSON_ENCODE_ANY), out);
    brace = strchr(out, '{');
    cr_assert_not_null(brace, "%s printed no checks:\n%s", what, out);
    checks = json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert_not_null(checks, "%s printed no JSON:\n%s", what, out);
    jsons[njsons++] = checks;
    expect_all_ok(checks, what);
}

/* Node.js (Debian's nodejs): HTTP on 127.0.0.1, fs, a worker thread,
 * crypto, a child process, DNS. UV_USE_IO_URING=1 makes a libuv that
 * knows io_uring try it, so its fallback is exercised too. */
Test(sandbox, seccomp_allows_node_work, .init = setup, .fini = teardown, .timeout = 120)
{
    cr_assert_eq(access("/usr/bin/node", X_OK), 0, "needs /usr/bin/node (Debian's nodejs)");
    expect_program_works("node",
                         "\"argv\":[\"/usr/bin/node\", \"/var/task/work.js\"],"
                         "\"env\":{\"UV_USE_IO_URING\":\"1\"}",
                         NULL);
}

/* A Go program (the runtime aws-lambda-go handlers are built on), built
 * static like a Lambda `provided` handler and given as a layer: many
 * threads, HTTP on 127.0.0.1, os/exec (pidfd, clone), signals. */
Test(sandbox, seccomp_allows_go_work, .init = setup, .fini = teardown, .timeout = 300)
{
    const char *go = access("/usr/bin/go", X_OK) == 0         ? "/usr/bin/go"
                     : access("/usr/local/go/bin/go", X_OK) == 0 ? "/usr/local/go/bin/go"
                                                                 : NULL;
    char *layer = xasprintf("%s/golayer", data_dir), *cmd;

    cr_assert_not_null(go, "needs a Go toolchain (Debian's golang-go)");
    cr_assert_eq(mkdir(layer, 0755), 0);
    cmd = xasprintf("cd '%s/tests/handlers' && CGO_ENABLED=0 GOFLAGS= GO111MODULE=off "
                    "GOCACHE=\"${GOCACHE:-/tmp/sluice-test-gocache}\" '%s' build -o '%s/work' "
                    "work.go 2>&1",
                    root_dir, go, layer);
    cr_assert_eq(system(cmd), 0, "go build failed: %s", cmd);
    expect_program_works("go", "\"argv\":[\"/opt/work\"]", xasprintf("    layers: [%s]\n", layer));
}

/* ------------------------------------------------------------------ */
/* 7. a timeout kills every process of the environment                 */

/* The children escape.py starts run `sleep 1000`, a fixed command that
 * another test process could run too. So a process counts as ours only
 * when its /proc/PID/cgroup names this test process's cgroup tree
 * ("/sluice-<our pid>/", where sluice puts each env's cgroup), and we
 * also follow the exact host pids seen before the timeout. */
Test(sandbox, timeout_kills_children, .init = setup, .fini = teardown, .timeout = 60)
{
    static const char sleep_cmd[] = "sleep\0" "1000";
    static struct call c;
    char cg[64];
    pid_t before[16], after[16];
    int nbefore, nafter = -1;
    double t_end;

    snprintf(cg, sizeof(cg), "/sluice-%d/", (int)getpid());
    start(fn_yaml("escape", repo(ESCAPE), 1769, 2, NULL));
    invoke(pool_of("escape"), "{\"action\":\"sleep_with_children\",\"sleep_ms\":60000}", &c);
    pump(1000);
    cr_assert_eq(c.done, 0, "ended early: %s: %s", c.etype, c.emsg);
    nbefore = scan_procs(sleep_cmd, sizeof(sleep_cmd), cg, before, 16);
    cr_expect_eq(nbefore, 3, "expected the handler's 3 `sleep 1000` children in %s", cg);

    cr_assert(wait_until(&c.done, 5000), "no timeout within 5 s");
    cr_expect(!c.ok);
    cr_expect_str_eq(c.etype, "Sandbox.Timedout", "%s: %s", c.etype, c.emsg);
    cr_expect(strstr(c.emsg, "2.00 seconds") != NULL, "message: %s", c.emsg);
    cr_expect_lt(c.ended_ms - c.started_ms, 3000, "took %.0f ms", c.ended_ms - c.started_ms);
    cr_expect_geq(c.ended_ms - c.started_ms, 1900, "took %.0f ms", c.ended_ms - c.started_ms);

    t_end = now_ms() + 2000;
    while (now_ms() < t_end) {
        bool any = false;
        for (int i = 0; i < nbefore; i++)
            any |= proc_runs(before[i], sleep_cmd, sizeof(sleep_cmd));
        nafter = scan_procs(sleep_cmd, sizeof(sleep_cmd), cg, after, 16);
        if (!any && nafter == 0)
            break;
        usleep(20000);
    }
    cr_expect_eq(nafter, 0, "%d `sleep 1000` left in %s after the timeout (e.g. pid %d)", nafter,
                 cg, nafter > 0 ? (int)after[0] : 0);
    for (int i = 0; i < nbefore; i++)
        cr_expect(!proc_runs(before[i], sleep_cmd, sizeof(sleep_cmd)),
                  "child %d survived the timeout", (int)before[i]);
    cr_expect_eq(sl_fnpool_envs(pool_of("escape")), 0);
}

/* ------------------------------------------------------------------ */
/* 8, 9. init failures                                                 */

Test(sandbox, exit_during_init_is_exit_error, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;

    start(fn_yaml("initexit", repo("tests/handlers/init_exit.py"), 1769, 10, NULL));
    call(pool_of("initexit"), "{}", &c, 20000);
    cr_expect(!c.ok);
    cr_expect_str_eq(c.etype, "Runtime.ExitError", "%s: %s", c.etype, c.emsg);
    cr_expect(strstr(c.emsg, "exit status 7") != NULL, "message: %s", c.emsg);
    cr_expect_eq(sl_fnpool_envs(pool_of("initexit")), 0);
}

Test(sandbox, init_error_is_reported, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;

    start(fn_yaml("initerr", repo("tests/handlers/init_error.py"), 1769, 10, NULL));
    call(pool_of("initerr"), "{}", &c, 20000);
    cr_expect(!c.ok);
    cr_expect_str_eq(c.etype, "Runtime.ImportModuleError", "%s: %s", c.etype, c.emsg);
    cr_expect(strstr(c.emsg, "no module named nothing") != NULL, "message: %s", c.emsg);
    cr_expect_eq(sl_fnpool_envs(pool_of("initerr")), 0);
}

/* ------------------------------------------------------------------ */
/* 10. protocol violations                                             */

/* escape.py writes 4096 random bytes to fd 3, then sleeps 5 s. The first
 * four are the length prefix, so what sluice must say depends on them:
 *  - over 64 MB (63/64 of all draws): not a frame, Runtime.InvalidResponse;
 *  - 6 MB + 64 KiB .. 64 MB (~1.35%): Function.ResponseSizeTooLarge;
 *  - at most 4092 (~0.0001%): the body is there and does not decode into a
 *    message with a type: Runtime.InvalidResponse;
 *  - 4093 .. 6 MB + 64 KiB (~0.15%): sluice waits for the rest of the
 *    frame, which never makes sense of the result frame that follows, and
 *    the invocation ends with Sandbox.Timedout (timeout_s: 8 here).
 * All four discard the env. The deterministic variants are tested below
 * with tests/unit/fixtures/bad_frames.py. */
Test(sandbox, garbage_on_fd3_is_invalid_response, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;
    struct sl_fnpool *pool;
    double took;

    start(fn_yaml("escape", repo(ESCAPE), 1769, 8, NULL));
    pool = pool_of("escape");
    call(pool, "{\"action\":\"garbage\"}", &c, 20000);
    took = c.ended_ms - c.started_ms;
    cr_expect(!c.ok, "garbage was taken for a result: %s", c.payload);
    if (strcmp(c.etype, "Sandbox.Timedout") == 0) {
        cr_log_warn("random length prefix was a plausible frame length: timed out (%s)", c.emsg);
    } else {
        cr_expect(strcmp(c.etype, "Runtime.InvalidResponse") == 0 ||
                  strcmp(c.etype, "Function.ResponseSizeTooLarge") == 0,
                  "%s: %s", c.etype, c.emsg);
        cr_expect_lt(took, 4000, "sluice waited %.0f ms: it did not react to the bytes", took);
    }
    cr_expect_eq(sl_fnpool_envs(pool), 0, "the env survived a protocol violation");
    call(pool, "{\"action\":\"whoami\"}", &c, 20000);
    ok_json(&c);
    cr_expect(c.cold);
}

Test(sandbox, bad_frames_are_classified, .init = setup, .fini = teardown, .timeout = 60)
{
    static const struct { const char *kind, *etype; } cases[] = {
        { "huge_length", "Runtime.InvalidResponse" },
        { "not_a_map", "Runtime.InvalidResponse" },
        { "between_caps", "Function.ResponseSizeTooLarge" },
    };
    static struct call c;
    struct sl_fnpool *pool;

    start(fn_yaml("bad", repo(BAD), 1769, 30, NULL));
    pool = pool_of("bad");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *event = xasprintf("{\"kind\":\"%s\"}", cases[i].kind);
        call(pool, event, &c, 20000);
        cr_expect(!c.ok, "%s: taken for a result", cases[i].kind);
        cr_expect_str_eq(c.etype, cases[i].etype, "%s: %s: %s", cases[i].kind, c.etype, c.emsg);
        cr_expect_lt(c.ended_ms - c.started_ms, 4000, "%s: took %.0f ms", cases[i].kind,
                     c.ended_ms - c.started_ms);
        cr_expect_eq(sl_fnpool_envs(pool), 0, "%s: the env was kept", cases[i].kind);

    }
}

/* ------------------------------------------------------------------ */
/* 11. results over 6 MB                                               */

Test(sandbox, big_result_is_too_large, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;

    start(fn_yaml("escape", repo(ESCAPE), 1769, 30, NULL));
    call(pool_of("escape"), "{\"action\":\"big_result\",\"mb\":7}", &c, 40000);
    cr_expect(!c.ok, "a 7 MB result was accepted");
    cr_expect_str_eq(c.etype, "Function.ResponseSizeTooLarge", "%s: %s", c.etype, c.emsg);
}

/* ------------------------------------------------------------------ */
/* 12. warm reuse                                                      */

Test(sandbox, warm_env_is_reused, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c[3];
    struct sl_fnpool *pool;
    const char *init_id = NULL;
    long long pid = -1;

    start(fn_yaml("counter", repo(COUNTER), 1769, 10, NULL));
    pool = pool_of("counter");
    for (int i = 0; i < 3; i++) {
        json_t *j;
        call(pool, "{}", &c[i], 20000);
        j = ok_json(&c[i]);
        cr_expect_eq(jint(j, "count"), i + 1, "invocation %d: %s", i + 1, c[i].payload);
        if (i == 0) {
            pid = jint(j, "pid");
            init_id = jstr(j, "init_id");
        }
        /* the pid alone is weak (the handler is pid 2 of every env); the
         * init_id is drawn once per process */
        cr_expect_eq(jint(j, "pid"), pid);
        cr_expect_str_eq(jstr(j, "init_id"), init_id, "invocation %d ran in another process",
                         i + 1);
        cr_expect_str_eq(jstr(j, "init_type"), "on-demand");
        cr_expect_str_eq(jstr(j, "request_id"), c[i].request_id);
    }
    cr_expect(c[0].cold, "first invocation not cold");
    cr_expect_gt(c[0].init_ms, 0);
    cr_expect(!c[1].cold, "second invocation cold");
    cr_expect(!c[2].cold, "third invocation cold");
    cr_expect_eq(c[1].init_ms, 0);
    cr_expect_eq(sl_fnpool_envs(pool), 1);
    cr_expect_eq(sl_fnpool_idle(pool), 1);
}

/* ------------------------------------------------------------------ */
/* 13. provisioned concurrency                                         */

struct idle_want {
    struct sl_fnpool *pool;
    size_t n;
};

static bool idle_reached(void *arg)
{
    struct idle_want *w = arg;
    return sl_fnpool_idle(w->pool) >= w->n;
}

Test(sandbox, provisioned_envs_are_warm, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    struct idle_want w;
    json_t *j;

    start(fn_yaml("counter", repo(COUNTER), 1769, 10, "    provisioned_concurrency: 2\n"));
    w.pool = pool_of("counter");
    w.n = 2;
    cr_expect_eq(sl_fnpool_envs(w.pool), 2, "provisioned envs not started at creation");
    cr_assert(wait_cond(idle_reached, &w, 10000), "idle %zu of 2 after 10 s",
              sl_fnpool_idle(w.pool));
    cr_expect_eq(sl_fnpool_idle(w.pool), 2);

    call(w.pool, "{}", &c, 20000);
    j = ok_json(&c);
    cr_expect(!c.cold, "invocation on a provisioned env reported cold (init %.2f ms)", c.init_ms);
    cr_expect_eq(c.init_ms, 0);
    cr_expect_str_eq(jstr(j, "init_type"), "provisioned-concurrency");
    cr_expect_eq(jint(j, "count"), 1);
    cr_expect_eq(sl_fnpool_envs(w.pool), 2, "an extra env was started");
    cr_expect(strstr(log_text(), "Init Duration") == NULL,
              "REPORT of a provisioned invocation has an Init Duration:\n%s", log_tail(2000));
}

/* ------------------------------------------------------------------ */
/* 14. reserved concurrency caps the envs                              */

Test(sandbox, reserved_concurrency_caps_envs, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call a, b, t, d;
    const char *ev = "{\"sleep_ms\":2000}";
    double t0;
    int rc;

    start(fn_yaml("slow", repo(SLOW_PY), 1769, 30, "    reserved_concurrency: 2\n"));
    invoke(pool_of("slow"), ev, &a);
    invoke(pool_of("slow"), ev, &b);
    t0 = now_ms();
    rc = invoke_rc(pool_of("slow"), ev, &t);
    cr_expect_eq(rc, SL_EAGAIN, "third invocation: %d (%s)", rc, sl_errname(rc));
    cr_expect_lt(now_ms() - t0, 50, "the refusal was not immediate");

    cr_assert(wait_until(&a.done, 20000), "first invocation did not end");
    cr_assert(wait_until(&b.done, 20000), "second invocation did not end");
    cr_expect_eq(jint(ok_json(&a), "slept_ms"), 2000);
    cr_expect_eq(jint(ok_json(&b), "slept_ms"), 2000);
    cr_expect_eq(t.done, 0, "the refused invocation called back");

    rc = invoke_rc(pool_of("slow"), "{\"sleep_ms\":10}", &d);
    cr_assert_eq(rc, 0, "invocation after the others finished: %d", rc);
    cr_assert(wait_until(&d.done, 20000));
    cr_expect_eq(jint(ok_json(&d), "slept_ms"), 10);
    cr_expect(!d.cold, "a new env was started instead of reusing one");
    cr_expect_eq(sl_fnpool_envs(pool_of("slow")), 2);
    cr_expect_eq(t.done, 0, "the refused invocation called back");
}

/* ------------------------------------------------------------------ */
/* 15. SnapStart                                                       */

Test(sandbox, snapstart_forks_restored_envs, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call a, b;
    json_t *ja, *jb;

    start(fn_yaml("snap", repo(COUNTER), 1769, 10, "    snapstart: true\n"));
    invoke(pool_of("snap"), "{}", &a);
    invoke(pool_of("snap"), "{}", &b);
    cr_assert(wait_until(&a.done, 20000), "first invocation did not end; log:\n%s",
              log_tail(3000));
    cr_assert(wait_until(&b.done, 20000), "second invocation did not end; log:\n%s",
              log_tail(3000));
    ja = ok_json(&a);
    jb = ok_json(&b);
    cr_expect_eq(sl_fnpool_envs(pool_of("snap")), 2, "two forked envs expected");

    cr_expect(json_is_true(jget(ja, "restored")), "not restored: %s", a.payload);
    cr_expect(json_is_true(jget(jb, "restored")), "not restored: %s", b.payload);
    cr_expect(json_is_true(jget(ja, "snapshotted")), "no before-snapshot hook: %s", a.payload);
    cr_expect_str_eq(jstr(ja, "init_id"), jstr(jb, "init_id"), "not forked from one template");
    cr_expect_neq(jint(ja, "pid"), jint(jb, "pid"), "same process");
    cr_expect(json_is_real(jget(ja, "restore_random")) && json_is_real(jget(jb, "restore_random")),
              "no after-restore value: %s / %s", a.payload, b.payload);
    cr_expect(json_real_value(jget(ja, "restore_random")) !=
              json_real_value(jget(jb, "restore_random")),
              "random generator not re-seeded after restore");
    cr_expect(json_real_value(jget(ja, "random")) != json_real_value(jget(jb, "random")));
    cr_expect_str_eq(jstr(ja, "init_type"), "snap-start");
    cr_expect_str_eq(jstr(jb, "init_type"), "snap-start");
    cr_expect_eq(jint(ja, "count"), 1);
    cr_expect_eq(jint(jb, "count"), 1);
    cr_expect(a.cold && b.cold, "first invocations of restored envs are cold starts");
}

/* ------------------------------------------------------------------ */
/* 16. no orphans when sluice is SIGKILLed                             */

static const char counter_src_marker[] = "sluice_runtime.start(handler)";

Test(sandbox, no_orphans_after_sigkill, .init = setup, .fini = teardown, .timeout = 60)
{
    char *code_dir = xasprintf("%s/code", data_dir);
    char *handler, *cfg, *cfg_text, *src, *logp, *sluice = built("sluice");
    pid_t pids[64];
    int n = 0, st;
    double end;

    snprintf(orphan_needle, sizeof(orphan_needle), "orphan_%d.py", (int)getpid());
    cr_assert_eq(mkdir(code_dir, 0755), 0);
    chmod(code_dir, 0755);
    handler = xasprintf("%s/%s", code_dir, orphan_needle);
    src = slurp(COUNTER);
    cr_assert(strstr(src, counter_src_marker) != NULL, "cannot read %s", COUNTER);
    put_file(handler, src, 0755);
    cfg = xasprintf("%s/orphans.yaml", data_dir);
    cfg_text = config_yaml(fn_yaml("orphans", handler, 128, 10,
                                   "    provisioned_concurrency: 2\n"),
                           data_dir);
    put_file(cfg, cfg_text, 0644);
    logp = xasprintf("%s/sluice.log", data_dir);

    spawned = fork();
    cr_assert_geq(spawned, 0);
    if (spawned == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(sluice, "sluice", "run", cfg, (char *)NULL);
        _exit(127);
    }

    end = now_ms() + 15000;
    while (now_ms() < end) {
        n = scan_procs(orphan_needle, strlen(orphan_needle), NULL, pids, 64);
        if (n >= 2 || waitpid(spawned, &st, WNOHANG) == spawned)
            break;
        usleep(50000);
    }
    cr_assert_eq(n, 2, "%d handler processes running %s after 15 s; sluice log:\n%s", n,
                 orphan_needle, slurp(logp));

    cr_assert_eq(kill(spawned, SIGKILL), 0);
    cr_assert_eq(waitpid(spawned, &st, 0), spawned);
    spawned = -1;

    end = now_ms() + 2000;
    do {
        n = scan_procs(orphan_needle, strlen(orphan_needle), NULL, pids, 64);
        if (n == 0)
            break;
        usleep(20000);
    } while (now_ms() < end);
    cr_expect_eq(n, 0, "%d handler processes outlived sluice by 2 s (e.g. pid %d)", n,
                 n ? (int)pids[0] : 0);
}

/* ------------------------------------------------------------------ */
/* 17. handler output in the log                                       */

Test(sandbox, handler_output_is_logged_per_line, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c, w;
    char *want_line, *want_report, *warm_report;
    const char *log;
    double end;

    cr_assert_geq(log_fd, 0, "unset SLUICE_TEST_LOG for this test");
    start(fn_yaml("logecho", repo(ECHO_PY), 1769, 10, NULL));
    call(pool_of("logecho"), "{\"x\":1}", &c, 20000);
    ok_json(&c);
    cr_assert(c.cold);
    want_line = xasprintf("[function:logecho] [%s] echo: got 8 bytes (", c.request_id);
    want_report = xasprintf("[function:logecho] REPORT RequestId: %s Duration: ", c.request_id);

    /* the line may come through the stdout pipe after the result */
    end = now_ms() + 2000;
    while (!strstr(log_text(), want_line) && now_ms() < end)
        pump(20);
    log = log_text();
    cr_expect(strstr(log, want_line) != NULL, "no line '%s' in the log:\n%s", want_line, log);
    {
        const char *r = strstr(log, want_report);
        const char *eol = r ? strchr(r, '\n') : NULL;
        cr_expect_not_null(r, "no '%s' in the log:\n%s", want_report, log);
        if (r && eol) {
            char *line = strndup(r, (size_t)(eol - r));
            cr_expect(strstr(line, "Init Duration: ") != NULL, "cold REPORT: %s", line);
            cr_expect(strstr(line, "Memory Size: 1769 MB") != NULL, "REPORT: %s", line);
            free(line);
        }
    }

    /* a warm invocation: its REPORT has no Init Duration */
    call(pool_of("logecho"), "{\"x\":2}", &w, 20000);
    ok_json(&w);
    cr_expect(!w.cold);
    warm_report = xasprintf("REPORT RequestId: %s Duration: ", w.request_id);
    log = log_text();
    {
        const char *r = strstr(log, warm_report);
        const char *eol = r ? strchr(r, '\n') : NULL;
        cr_expect_not_null(r, "no '%s' in the log:\n%s", warm_report, log);
        if (r && eol) {
            char *line = strndup(r, (size_t)(eol - r));
            cr_expect(strstr(line, "Init Duration") == NULL, "warm REPORT: %s", line);
            free(line);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Hardening: terminal, output and files (docs/SECURITY.md)            */

#define HOSTILE "tests/handlers/hostile_io.py"

/* Item 15: terminal escapes and forged lines in handler output reach the
 * log escaped, on the line of the request that printed them. */
Test(sandbox, handler_output_is_logged_escaped, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    const char *log;
    char *want;
    double end;

    cr_assert_geq(log_fd, 0, "unset SLUICE_TEST_LOG for this test");
    start(fn_yaml("hio", repo(HOSTILE), 1769, 10, NULL));
    call(pool_of("hio"), "{\"action\":\"escapes\"}", &c, 20000);
    ok_json(&c);
    want = xasprintf("[function:hio] [%s] raw \\xff\\xfe bytes\n", c.request_id);
    end = now_ms() + 2000;
    while (!strstr(log_text(), want) && now_ms() < end)
        pump(20);
    log = log_text();
    cr_expect(strstr(log, want) != NULL, "no '%s' in the log:\n%s", want, log);
    cr_expect(strstr(log, xasprintf("[function:hio] [%s] title \\x1b]0;pwned\\x07 red "
                                    "\\x1b[31mRED\\x1b[0m bell \\x07 del \\x7f c1 \\xc2\\x9b2J end\n",
                                    c.request_id)) != NULL,
              "escapes not escaped:\n%s", log);
    cr_expect(strstr(log, xasprintf("[function:hio] [%s] innocent\\r2024-01-01T00:00:00.000Z "
                                    "error [sluice] forged line\n", c.request_id)) != NULL,
              "carriage return not escaped:\n%s", log);
    cr_expect(strchr(log, '\x1b') == NULL && strchr(log, '\r') == NULL &&
                  strchr(log, '\x07') == NULL && strstr(log, "\xc2\x9b") == NULL &&
                  strstr(log, "\xff") == NULL,
              "a raw control byte reached the log");
}

/* Item 1: run under a pseudo-terminal (`script`), the way an operator runs
 * `sluice invoke --local`: the handler finds no terminal, and every
 * TIOCSTI/TIOCLINUX, on every fd it has or can open, is refused. */
Test(sandbox, handler_under_a_terminal_finds_none, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char *cfg = xasprintf("%s/tty.yaml", data_dir), *errp = xasprintf("%s/tty.err", data_dir);
    char *cmd, *out = NULL, *brace;
    size_t len = 0;
    json_t *j, *attempts, *opened, *a, *o;
    const char *path;
    size_t i;

    cr_assert_eq(access("/usr/bin/script", X_OK), 0, "needs script(1) (bsdutils)");
    put_file(cfg, config_yaml(fn_yaml("tty", repo(HOSTILE), 1769, 10, NULL),
                              xasprintf("%s/cli", data_dir)), 0644);
    /* sluice's stdin and stdout are the terminal, and it is sluice's
     * session's controlling terminal; stderr goes to a file */
    cmd = xasprintf("script -qec \"'%s' invoke --local '%s' tty --payload "
                    "'{\\\"action\\\":\\\"tty\\\"}' 2>'%s'\" /dev/null </dev/null",
                    built("sluice"), cfg, errp);
    {
        FILE *p = popen(cmd, "r");
        FILE *m = open_memstream(&out, &len);
        char chunk[4096];
        size_t n;

        cr_assert_not_null(p);
        while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
            fwrite(chunk, 1, n, m);
        fclose(m);
        pclose(p);
        allocs[nallocs++] = out;
    }
    brace = strchr(out, '{');
    cr_assert_not_null(brace, "no result on the terminal: %s; stderr:\n%s", out, slurp(errp));
    j = json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert_not_null(j, "result is not JSON: %s; stderr:\n%s", brace, slurp(errp));
    jsons[njsons++] = j;

    cr_expect_eq(jint(j, "tty_nr"), 0, "the handler has a controlling terminal: %s",
                 json_dumps(j, JSON_COMPACT));
    opened = jget(j, "opened");
    json_object_foreach(opened, path, o) {
        cr_expect(!json_is_true(jget(o, "ok")), "the handler opened %s: %s", path,
                  json_dumps(o, JSON_COMPACT));
    }
    attempts = jget(j, "attempts");
    cr_expect_geq(json_array_size(attempts), 12);
    json_array_foreach(attempts, i, a) {
        cr_expect_eq(jint(a, "errno"), EPERM, "ioctl %s on fd %lld not refused: %s",
                     jstr(a, "cmd"), jint(a, "fd"), json_dumps(a, JSON_COMPACT));
    }
}

/* Item 8: a copy of hostile_io.py in `dir` (which must exist). */
static char *copy_hostile(const char *dir)
{
    char *dst = xasprintf("%s/hostile_io.py", dir);

    put_file(dst, slurp(repo(HOSTILE)), 0755);
    return dst;
}

/* Item 8: a mount below the code directory or a layer (here a tmpfs the
 * test mounts in a mount namespace of its own) is read-only inside. */
Test(sandbox, code_and_layer_mounts_are_read_only_all_the_way_down, .init = setup,
     .fini = teardown, .timeout = 60)
{
    static struct call c;
    char *code = xasprintf("%s/code", data_dir), *layer = xasprintf("%s/layer", data_dir);
    char *handler;
    const char *dirs[] = { "/var/task/sub", "/opt/sub" };
    json_t *j;

    cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %s", strerror(errno));
    cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    cr_assert_eq(mkdir(code, 0755), 0);
    cr_assert_eq(mkdir(xasprintf("%s/sub", code), 0755), 0);
    cr_assert_eq(mkdir(layer, 0755), 0);
    cr_assert_eq(mkdir(xasprintf("%s/sub", layer), 0755), 0);
    handler = copy_hostile(code);
    cr_assert_eq(mount("sub", xasprintf("%s/sub", code), "tmpfs", 0, "mode=0777"), 0);
    cr_assert_eq(mount("sub", xasprintf("%s/sub", layer), "tmpfs", 0, "mode=0777"), 0);
    start(fn_yaml("hio", handler, 1769, 10, xasprintf("    layers: [%s]\n", layer)));
    for (size_t i = 0; i < 2; i++) {
        call(pool_of("hio"), xasprintf("{\"action\":\"write\",\"path\":\"%s/x\"}", dirs[i]), &c,
             20000);
        j = ok_json(&c);
        cr_expect(!json_is_true(jget(j, "ok")), "wrote %s/x: a writable mount below a "
                  "read-only one", dirs[i]);
        cr_expect_eq(jint(j, "errno"), EROFS, "%s: %s", dirs[i], c.payload);
    }
    cr_expect_neq(access(xasprintf("%s/sub/x", code), F_OK), 0, "the file reached the host");
    umount2(xasprintf("%s/sub", code), MNT_DETACH);
    umount2(xasprintf("%s/sub", layer), MNT_DETACH);
}

/* Item 8: a code directory or a layer reached through a symlink (one
 * planted after the configuration was checked, or there from the start)
 * is not mounted: the host's files it points at stay outside. */
Test(sandbox, symlinks_to_code_and_layers_are_not_followed, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;
    char *secret = xasprintf("%s/secret", data_dir), *layer = xasprintf("%s/layer", data_dir);
    char *real = xasprintf("%s/realcode", data_dir), *link = xasprintf("%s/link", data_dir);
    char *fns_yaml;

    cr_assert_eq(mkdir(secret, 0755), 0);
    put_file(xasprintf("%s/secret.txt", secret), "top secret\n", 0644);
    cr_assert_eq(mkdir(layer, 0755), 0);
    cr_assert_eq(mkdir(real, 0755), 0);
    copy_hostile(real);
    cr_assert_eq(symlink(real, link), 0);
    fns_yaml = xasprintf("%s%s",
                         fn_yaml("lay", repo(HOSTILE), 1769, 10,
                                 xasprintf("    layers: [%s]\n", layer)),
                         fn_yaml("linked", xasprintf("%s/hostile_io.py", link), 1769, 10, NULL));
    start(fns_yaml);
    /* after the configuration was checked, the layer becomes a symlink */
    cr_assert_eq(rmdir(layer), 0);
    cr_assert_eq(symlink(secret, layer), 0);

    call(pool_of("lay"), "{\"action\":\"read\",\"path\":\"/opt/secret.txt\"}", &c, 20000);
    cr_expect(!c.ok, "read through a symlinked layer: %s", c.payload);
    cr_expect(!c.payload || !strstr(c.payload, "top secret"), "%s", c.payload);
    cr_expect(strstr(c.emsg, "symlink") != NULL, "%s: %s", c.etype, c.emsg);

    call(pool_of("linked"), "{\"action\":\"read\",\"path\":\"/var/task/hostile_io.py\"}", &c,
         20000);
    cr_expect(!c.ok, "ran from a code directory reached through a symlink: %.200s", c.payload);
    cr_expect(strstr(c.emsg, "symlink") != NULL, "%s: %s", c.etype, c.emsg);
}

/* ------------------------------------------------------------------ */
/* 18. sluice invoke --local                                           */

/* Run `sluice invoke --local CFG FN --payload PAYLOAD`: stdout into `out`
 * (malloc'd), stderr into `err`; returns the exit code. */
static int invoke_local(const char *cfg, const char *fn, const char *payload, char **out,
                        char **err)
{
    char *errp = xasprintf("%s/stderr-%s", data_dir, fn);
    char *cmd = xasprintf("'%s' invoke --local '%s' '%s' --payload '%s' 2>'%s'",
                          built("sluice"), cfg, fn, payload, errp);
    FILE *p = popen(cmd, "r");
    char *buf = NULL;
    size_t len = 0;
    FILE *m;
    char chunk[4096];
    size_t n;
    int st;

    cr_assert_not_null(p);
    m = open_memstream(&buf, &len);
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    st = pclose(p);
    *out = buf;
    if (nallocs < (int)(sizeof(allocs) / sizeof(allocs[0])))
        allocs[nallocs++] = buf; /* freed at teardown like the rest */
    *err = slurp(errp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(sandbox, invoke_local_cli, .init = setup, .fini = teardown, .timeout = 60)
{
    char *cfg = xasprintf("%s/invoke.yaml", data_dir), *cli_dir = xasprintf("%s/cli", data_dir);
    char *fns_yaml = xasprintf("%s%s", fn_yaml("echo", repo(ECHO_PY), 1769, 10, NULL),
                               fn_yaml("fail", repo(FAIL_PY), 1769, 10, NULL));
    char *out, *err;
    json_t *j, *want;
    int code;

    put_file(cfg, config_yaml(fns_yaml, cli_dir), 0644);

    code = invoke_local(cfg, "echo", "{\"a\":1}", &out, &err);
    cr_expect_eq(code, 0, "exit %d; stderr:\n%s", code, err);
    j = json_loads(out, 0, NULL);
    want = json_pack("{s:i}", "a", 1);
    cr_expect(j && json_equal(j, want), "stdout: %s", out);
    cr_expect(strstr(err, "duration: ") != NULL, "stderr: %s", err);
    json_decref(j);
    json_decref(want);

    code = invoke_local(cfg, "fail", "{\"a\":1}", &out, &err);
    cr_expect_eq(code, 1, "exit %d; stderr:\n%s", code, err);
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "stdout is not JSON: %s", out);
    cr_expect_str_eq(jstr(j, "errorType"), "OrderError");
    cr_expect_str_eq(jstr(j, "errorMessage"), "order rejected");
    json_decref(j);

    code = invoke_local(cfg, "echo", "{\"a\":", &out, &err);
    cr_expect_eq(code, 1, "exit %d for a payload that is not JSON", code);
    cr_expect(strstr(err, "payload is not JSON") != NULL, "stderr: %s", err);
    cr_expect_str_eq(out, "", "stdout: %s", out);
}

/* ------------------------------------------------------------------ */
/* Layers and idle reaping                                             */

Test(sandbox, layers_overlay_at_opt_later_wins, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call a, b;
    char *l1 = xasprintf("%s/layer1", data_dir), *l2 = xasprintf("%s/layer2", data_dir);
    char *extra = xasprintf("    layers: [%s, %s]\n", l1, l2), *p;
    json_t *j;

    mkdir(data_dir, 0755);
    mkdir(l1, 0755);
    mkdir(l2, 0755);
    p = xasprintf("%s/shared.txt", l1), put_file(p, "from layer 1\n", 0644);
    p = xasprintf("%s/only1.txt", l1), put_file(p, "only in 1\n", 0644);
    p = xasprintf("%s/shared.txt", l2), put_file(p, "from layer 2\n", 0644);
    start(fn_yaml("escape", repo(ESCAPE), 1769, 10, extra));
    call(pool_of("escape"), "{\"action\":\"read_host\",\"path\":\"/opt/shared.txt\"}", &a, 20000);
    j = ok_json(&a);
    cr_expect(json_is_true(jget(j, "ok")), "%s", json_dumps(j, JSON_COMPACT));
    cr_expect_str_eq(jstr(j, "data"), "from layer 2\n");
    call(pool_of("escape"), "{\"action\":\"read_host\",\"path\":\"/opt/only1.txt\"}", &b, 20000);
    j = ok_json(&b);
    cr_expect_str_eq(jstr(j, "data"), "only in 1\n");
}

static bool no_envs(void *arg)
{
    return sl_fnpool_envs(arg) == 0;
}

Test(sandbox, idle_envs_are_reaped, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    struct sl_fnpool *pool;

    start(fn_yaml("echo", built("handlers/echo"), 256, 5, "    idle_timeout_s: 1\n"));
    pool = pool_of("echo");
    call(pool, "{}", &c, 10000);
    cr_assert(c.ok, "%s", c.etype);
    cr_expect_eq(sl_fnpool_envs(pool), 1);
    cr_expect(wait_cond(no_envs, pool, 5000), "the idle env was not reaped");
}

/* ================================================================== */
/* Isolation between functions (docs/SECURITY.md, "Handlers: isolation
 * between functions")                                                 */

/* A uid range of this test process's own: parallel tests must not share
 * per-user kernel limits through the default range. */
static long long uid_base(void)
{
    return 300000 + (long long)(getpid() % 20000) * 16;
}

static char *uid_server(void)
{
    return xasprintf("  sandbox_uid_base: %lld\n", uid_base());
}

/* One function's abstract unix socket, /proc/net/unix and a port on
 * 127.0.0.1 are not another's: each env has its own network namespace,
 * with a working loopback. */
Test(sandbox, functions_do_not_share_a_network, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call a, b, l;
    char *name = xasprintf("sluice-test-%d", (int)getpid());
    char *listen_ev = xasprintf("{\"action\":\"abstract_listen\",\"name\":\"%s\"}", name);
    char *connect_ev = xasprintf("{\"action\":\"abstract_connect\",\"name\":\"%s\"}", name);
    json_t *j;

    start(xasprintf("%s%s", fn_yaml("a", repo(ESCAPE), 256, 10, NULL),
                    fn_yaml("b", repo(ESCAPE), 256, 10, NULL)));
    call(pool_of("a"), listen_ev, &a, 20000);
    j = ok_json(&a);
    cr_assert(json_is_true(jget(j, "ok")), "a cannot listen: %s", a.payload);
    /* a's own env sees its socket: the probe itself works */
    call(pool_of("a"), connect_ev, &a, 20000);
    j = ok_json(&a);
    cr_assert(json_is_true(jget(j, "ok")) && json_is_true(jget(j, "listed")),
              "a does not reach its own socket: %s", a.payload);

    call(pool_of("b"), connect_ev, &b, 20000);
    j = ok_json(&b);
    cr_expect(!json_is_true(jget(j, "ok")), "b connected to a's abstract socket: %s", b.payload);
    cr_expect_eq(jint(j, "errno"), ECONNREFUSED, "%s", b.payload);
    cr_expect(!json_is_true(jget(j, "listed")), "b sees a's socket in /proc/net/unix");

    call(pool_of("b"), "{\"action\":\"loopback\"}", &l, 20000);
    j = ok_json(&l);
    cr_expect(json_is_true(jget(j, "ok")), "no loopback in the env: %s", l.payload);
}

/* Two envs of one function: two network namespaces. */
Test(sandbox, every_env_has_its_own_network_namespace, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call a, b;
    struct idle_want w;
    const char *na, *nb;

    start(fn_yaml("escape", repo(ESCAPE), 256, 10, "    provisioned_concurrency: 2\n"));
    w.pool = pool_of("escape");
    w.n = 2;
    cr_assert(wait_cond(idle_reached, &w, 15000), "idle %zu of 2", sl_fnpool_idle(w.pool));
    /* both idle envs: the second invocation finds the first env busy */
    invoke(w.pool, "{\"action\":\"whoami\"}", &a);
    invoke(w.pool, "{\"action\":\"whoami\"}", &b);
    cr_assert(wait_until(&a.done, 20000) && wait_until(&b.done, 20000));
    na = jstr(ok_json(&a), "netns");
    nb = jstr(ok_json(&b), "netns");
    cr_expect(strncmp(na, "net:[", 5) == 0, "netns: %s", na);
    cr_expect_str_neq(na, nb, "two envs share network namespace %s", na);
}

/* Each function runs as base + its index, uid and gid; its /tmp is its own. */
Test(sandbox, each_function_has_its_own_uid, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call a, b;
    long long ub = uid_base();
    json_t *ja, *jb, *tmp;

    start_server(xasprintf("%s%s", fn_yaml("a", repo(ESCAPE), 256, 10, NULL),
                           fn_yaml("b", repo(ESCAPE), 256, 10, NULL)),
                 uid_server());
    call(pool_of("a"), "{\"action\":\"whoami\"}", &a, 20000);
    call(pool_of("b"), "{\"action\":\"whoami\"}", &b, 20000);
    ja = ok_json(&a);
    jb = ok_json(&b);
    cr_expect_eq(jint(ja, "uid"), ub, "a: %s", a.payload);
    cr_expect_eq(jint(ja, "gid"), ub, "a: %s", a.payload);
    cr_expect_eq(jint(jb, "uid"), ub + 1, "b: %s", b.payload);
    cr_expect_eq(jint(jb, "gid"), ub + 1, "b: %s", b.payload);
    cr_expect_eq(json_array_size(jget(ja, "groups")), 0, "a keeps groups: %s", a.payload);
    tmp = jget(jb, "tmp");
    cr_expect_eq(jint(tmp, "uid"), ub + 1, "b's /tmp: %s", json_dumps(tmp, JSON_COMPACT));
    cr_expect_eq(jint(tmp, "gid"), ub + 1, "b's /tmp: %s", json_dumps(tmp, JSON_COMPACT));
    cr_expect_eq(jint(tmp, "mode"), 0700, "b's /tmp: %s", json_dumps(tmp, JSON_COMPACT));
}

/* fs.inotify.max_user_instances counts per uid: a function that uses up
 * its own leaves the others theirs. */
Test(sandbox, inotify_exhaustion_stays_in_its_function, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call a, b;
    json_t *j;

    start_server(xasprintf("%s%s", fn_yaml("a", repo(ESCAPE), 256, 10, NULL),
                           fn_yaml("b", repo(ESCAPE), 256, 10, NULL)),
                 uid_server());
    call(pool_of("a"), "{\"action\":\"inotify_exhaust\",\"max\":100000}", &a, 20000);
    j = ok_json(&a);
    cr_assert(json_is_object(jget(j, "stopped_by")), "a never hit the limit: %s", a.payload);
    cr_assert_eq(jint(jget(j, "stopped_by"), "errno"), EMFILE, "%s", a.payload);
    cr_assert_gt(jint(j, "opened"), 0, "%s", a.payload);
    /* a's env lives on, holding them, while b asks for one */
    cr_assert_eq(sl_fnpool_envs(pool_of("a")), 1);
    call(pool_of("b"), "{\"action\":\"inotify_one\"}", &b, 20000);
    j = ok_json(&b);
    cr_expect(json_is_true(jget(j, "ok")), "b cannot create an inotify instance: %s", b.payload);
}

/* sandbox: relaxed still switches to the function's uid. */
Test(sandbox, relaxed_handler_is_not_root, .init = setup, .fini = teardown, .timeout = 60)
{
    static struct call c;
    json_t *j;

    start_server(xasprintf("%s%s", fn_yaml("strict", repo(ESCAPE), 256, 10, NULL),
                           fn_yaml("relaxed", repo(ESCAPE), 256, 10,
                                   "    sandbox: relaxed\n")),
                 uid_server());
    call(pool_of("relaxed"), "{\"action\":\"whoami\"}", &c, 20000);
    j = ok_json(&c);
    cr_expect_eq(jint(j, "uid"), uid_base() + 1, "%s", c.payload);
    cr_expect_eq(jint(j, "euid"), uid_base() + 1, "%s", c.payload);
    cr_expect_eq(jint(j, "gid"), uid_base() + 1, "%s", c.payload);
    cr_expect_str_eq(jstr(j, "cap_eff"), "0000000000000000", "%s", c.payload);
}

/* A relaxed handler that daemonizes (fork, setsid, fork) at init: its
 * grandchild dies with sluice's SIGKILL too. The grandchild is a fork of
 * the handler, so it runs the same command line: the needle finds both. */
static const char relaxed_daemon_py[] =
    "#!/usr/bin/python3\n"
    "import os, time\n"
    "import sluice_runtime\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.closerange(3, 1024)\n"
    "        time.sleep(1000)\n"
    "    os._exit(0)\n"
    "os.waitpid(pid, 0)\n"
    "def handler(event, context):\n"
    "    return {}\n"
    "sluice_runtime.start(handler)\n";

/* Move `pid` into this test process's own cgroups, in every hierarchy
 * (mount point + path, as sandbox/cgroup.c finds them). Out of its env's
 * cgroups, only parentage can find it: the cgroup cleanup that a sluice
 * starting on this host does for a dead one (other tests start many)
 * cannot kill it for the env, and the test sees what a host without
 * cgroups would. Returns whether `pid` is in no sluice cgroup now. */
static bool move_to_my_cgroups(pid_t pid)
{
    FILE *cg = fopen("/proc/self/cgroup", "re");
    char line[2048], buf[8192];

    cr_assert_not_null(cg);
    while (fgets(line, sizeof(line), cg)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        FILE *mi;
        char mline[4096];

        if (!c2)
            continue;
        *c2 = '\0';
        c2[1 + strcspn(c2 + 1, "\n")] = '\0';
        if (!(mi = fopen("/proc/self/mountinfo", "re")))
            continue;
        while (fgets(mline, sizeof(mline), mi)) {
            char mnt[1024], fstype[64], opts[1024], *sep = strstr(mline, " - ");
            bool match = false;

            if (!sep || sscanf(mline, "%*s %*s %*s %*s %1023s", mnt) != 1 ||
                sscanf(sep + 3, "%63s %*s %1023s", fstype, opts) != 2)
                continue;
            if (c1[1] == '\0') {
                match = strcmp(fstype, "cgroup2") == 0;
            } else if (strcmp(fstype, "cgroup") == 0) {
                /* every controller of the line among the mount's options */
                char ctrls[256], have[1100], want[300], *save = NULL;
                snprintf(ctrls, sizeof(ctrls), "%s", c1 + 1);
                snprintf(have, sizeof(have), ",%s,", opts);
                match = true;
                for (char *t = strtok_r(ctrls, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                    snprintf(want, sizeof(want), ",%s,", t);
                    match &= strstr(have, want) != NULL;
                }
            }
            if (match) {
                char *procs = xasprintf("%s%s/cgroup.procs", mnt,
                                        strcmp(c2 + 1, "/") == 0 ? "" : c2 + 1);
                FILE *f = fopen(procs, "we");
                if (f) {
                    fprintf(f, "%d\n", (int)pid);
                    fclose(f);
                }
                break;
            }
        }
        fclose(mi);
    }
    fclose(cg);
    return read_proc(pid, "cgroup", buf, sizeof(buf)) > 0 && !strstr(buf, "/sluice-");
}

Test(sandbox, relaxed_no_orphans_after_sigkill, .init = setup, .fini = teardown, .timeout = 60)
{
    char *code_dir = xasprintf("%s/code", data_dir);
    char *handler, *cfg, *logp, *sluice = built("sluice");
    pid_t pids[64];
    int n = 0, st;
    double end;

    snprintf(orphan_needle, sizeof(orphan_needle), "relaxed_orphan_%d.py", (int)getpid());
    cr_assert_eq(mkdir(code_dir, 0755), 0);
    chmod(code_dir, 0755);
    handler = xasprintf("%s/%s", code_dir, orphan_needle);
    put_file(handler, relaxed_daemon_py, 0755);
    cfg = xasprintf("%s/relaxed.yaml", data_dir);
    put_file(cfg, config_yaml_server(fn_yaml("daemon", handler, 128, 10,
                                             "    sandbox: relaxed\n"
                                             "    provisioned_concurrency: 1\n"),
                                     data_dir, uid_server()),
             0644);
    logp = xasprintf("%s/sluice.log", data_dir);

    spawned = fork();
    cr_assert_geq(spawned, 0);
    if (spawned == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(sluice, "sluice", "run", cfg, (char *)NULL);
        _exit(127);
    }

    /* the handler and its daemonized grandchild, the same two in two scans
     * (the intermediate child shows up in one briefly, then exits) */
    end = now_ms() + 15000;
    while (now_ms() < end) {
        pid_t again[64];
        int m;

        n = scan_procs(orphan_needle, strlen(orphan_needle), NULL, pids, 64);
        if (waitpid(spawned, &st, WNOHANG) == spawned)
            break;
        usleep(100000);
        m = scan_procs(orphan_needle, strlen(orphan_needle), NULL, again, 64);
        if (n == 2 && m == 2 && memcmp(pids, again, 2 * sizeof(pid_t)) == 0)
            break;
    }
    cr_assert_eq(n, 2, "%d processes running %s after 15 s; sluice log:\n%s", n, orphan_needle,
                 slurp(logp));
    for (int i = 0; i < n; i++)
        cr_assert(move_to_my_cgroups(pids[i]), "cannot move pid %d out of its env's cgroups",
                  (int)pids[i]);

    cr_assert_eq(kill(spawned, SIGKILL), 0);
    cr_assert_eq(waitpid(spawned, &st, 0), spawned);
    spawned = -1;

    /* the sweep takes milliseconds; 5 s leaves room for a loaded machine */
    end = now_ms() + 5000;
    do {
        n = scan_procs(orphan_needle, strlen(orphan_needle), NULL, pids, 64);
        if (n == 0)
            break;
        usleep(20000);
    } while (now_ms() < end);
    if (n > 0) {
        char stat[512] = "";

        read_proc(pids[0], "stat", stat, sizeof(stat));
        cr_expect_eq(n, 0, "%d processes of a relaxed env outlived sluice by 5 s (e.g. %s)", n,
                     stat);
    }
}

/* ================================================================== */
/* Item 6: the environment's init is sluice-init, not a fork of sluice  */

/* The host pids of this process's children: the envs' inits. */
static int child_procs(pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d)) && n < max) {
        char buf[512], *p;
        pid_t pid = (pid_t)atoi(e->d_name);

        if (pid <= 0 || read_proc(pid, "stat", buf, sizeof(buf)) <= 0)
            continue;
        if (!(p = strrchr(buf, ')')) || atoi(p + 4) != (int)getpid())
            continue;
        out[n++] = pid;
    }
    closedir(d);
    return n;
}

/* Every init of this process: the sluice-init binary, with no fd, no
 * environment and nothing of this (sluice's) binary mapped. */
static void expect_inits_hold_nothing(int want)
{
    char self[PATH_MAX], exe[PATH_MAX], path[64];
    static char maps[1 << 20];
    pid_t pids[16];
    ssize_t len;
    int n = child_procs(pids, 16);

    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    cr_assert_gt(len, 0);
    self[len] = '\0';
    cr_assert_eq(n, want, "%d inits, not %d", n, want);
    for (int i = 0; i < n; i++) {
        DIR *d;
        struct dirent *e;
        int nfds = 0;
        char env[256];

        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pids[i]);
        len = readlink(path, exe, sizeof(exe) - 1);
        cr_assert_gt(len, 0, "%s: %s", path, strerror(errno));
        exe[len] = '\0';
        cr_expect(len > 12 && strcmp(exe + len - 12, "/sluice-init") == 0,
                  "init %d runs %s, not sluice-init", (int)pids[i], exe);
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pids[i]);
        cr_assert_not_null(d = opendir(path), "%s: %s", path, strerror(errno));
        while ((e = readdir(d)))
            nfds += e->d_name[0] != '.';
        closedir(d);
        cr_expect_eq(nfds, 0, "init %d holds %d fds", (int)pids[i], nfds);
        cr_expect_eq(read_proc(pids[i], "environ", env, sizeof(env)), 0,
                     "init %d has sluice's environment: %.80s", (int)pids[i], env);
        cr_assert_geq(read_proc(pids[i], "maps", maps, sizeof(maps)), 0);
        cr_expect_null(strstr(maps, self), "init %d maps sluice's binary %s", (int)pids[i],
                       self);
    }
}

/* The handler holds its four fds and nothing else. */
static void expect_handler_fds(const json_t *j)
{
    const json_t *fds = jget(j, "fds");
    const char *key;
    json_t *v;

    cr_expect_eq(json_object_size(fds), 4, "handler fds: %s", json_dumps(fds, JSON_COMPACT));
    json_object_foreach((json_t *)fds, key, v) {
        cr_expect(strlen(key) == 1 && key[0] >= '0' && key[0] <= '3', "handler holds fd %s (%s)",
                  key, json_string_value(v));
    }
}

Test(sandbox, init_is_sluice_init_holding_nothing, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;
    json_t *j;

    start(fn_yaml("escape", repo(ESCAPE), 256, 10, NULL));
    call(pool_of("escape"), "{\"action\":\"init_view\"}", &c, 20000);
    j = ok_json(&c);
    cr_expect_eq(jint(j, "ppid"), 1, "%s", c.payload);
    cr_expect_str_eq(jstr(j, "init_cmdline"), "sluice-init", "%s", c.payload);
    /* not dumpable, and another uid: its fds are closed to the handler */
    cr_expect(!json_is_true(jget(jget(j, "init_fds"), "ok")), "%s", c.payload);
    expect_handler_fds(j);
    expect_inits_hold_nothing(1);
}

Test(sandbox, relaxed_init_is_sluice_init_holding_nothing, .init = setup, .fini = teardown,
     .timeout = 60)
{
    static struct call c;
    json_t *j;

    start_server(fn_yaml("relaxed", repo(ESCAPE), 256, 10, "    sandbox: relaxed\n"),
                 uid_server());
    call(pool_of("relaxed"), "{\"action\":\"init_view\"}", &c, 20000);
    j = ok_json(&c);
    cr_expect_str_eq(jstr(j, "init_cmdline"), "sluice-init", "%s", c.payload);
    cr_expect(!json_is_true(jget(jget(j, "init_fds"), "ok")), "%s", c.payload);
    expect_handler_fds(j);
    expect_inits_hold_nothing(1);
}
