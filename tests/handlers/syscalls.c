/* syscalls: probes the seccomp filter from the C runtime, for the sandbox
 * tests (docs/SECURITY.md, "Handlers: system calls"). The event names one
 * action ({"action": "..."}):
 *
 *   refused  tries what the filter must refuse, each in a child process:
 *            io_uring_setup, personality(PER_LINUX32 | ADDR_NO_RANDOMIZE),
 *            socket(AF_VSOCK), socket(AF_NETLINK), socket(AF_ALG), ioctls
 *            outside the allowed set, clone with CLONE_NEWUSER, clone3, and
 *            on x86-64 a getpid through the i386 (int $0x80) and x32 ABIs.
 *            Answers {probe: {"ret", "errno"} or {"signal"}}.
 *   work     ordinary work from four threads at once (memory, futexes,
 *            files in /tmp, epoll, eventfd, timerfd, signals, AF_UNIX,
 *            AF_INET and AF_INET6 sockets, the allowed ioctls, a child
 *            process run with posix_spawn). Answers {check: "ok" or what
 *            failed}.
 *
 * Never run `refused` outside a sandbox: nothing stops its probes there. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include "sluice_runtime.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif

extern char **environ;

/* ------------------------------------------------------------------ */
/* refused                                                             */

struct probe_result {
    long ret;
    int  err;
};

typedef long (*probe_fn)(void);

static long p_io_uring(void)
{
    struct io_uring_params params;

    memset(&params, 0, sizeof(params));
    return syscall(SYS_io_uring_setup, 4, &params);
}

static long p_personality(void)
{
    return syscall(SYS_personality, PER_LINUX32 | ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC);
}

static long p_vsock(void)
{
    return socket(AF_VSOCK, SOCK_STREAM, 0);
}

static long p_netlink(void)
{
    return socket(AF_NETLINK, SOCK_RAW, 0 /* NETLINK_ROUTE */);
}

static long p_alg(void)
{
    return socket(AF_ALG, SOCK_SEQPACKET, 0);
}

/* an AF_NETLINK socket asked for with garbage in the upper half */
static long p_netlink_high(void)
{
    return syscall(SYS_socket, (1UL << 32) | AF_NETLINK, SOCK_RAW, 0);
}

/* FIGETBSZ works on any file: on a file in /tmp it returns 0 unfiltered */
static long p_ioctl_figetbsz(void)
{
    int fd = open("/tmp/syscalls-probe", O_RDWR | O_CREAT | O_CLOEXEC, 0600), bsz = 0;
    long r;

    if (fd < 0)
        return -2;
    r = ioctl(fd, FIGETBSZ, &bsz);
    unlink("/tmp/syscalls-probe");
    return r;
}

/* changing terminal settings: ENOTTY on a pipe unfiltered, EPERM filtered */
static long p_ioctl_tcsets(void)
{
    struct termios t;

    memset(&t, 0, sizeof(t));
    return ioctl(1, TCSETS, &t);
}

/* TIOCSTI with bits set above the 32 the kernel reads */
static long p_ioctl_tiocsti_high(void)
{
    return syscall(SYS_ioctl, 1, (1UL << 32) | TIOCSTI, " ");
}

static long p_clone_newuser(void)
{
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);

    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}

static long p_clone3(void)
{
    struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal; } args;
    long r;

    memset(&args, 0, sizeof(args));
    args.exit_signal = SIGCHLD;
    r = syscall(SYS_clone3, &args, sizeof(args));
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    return r;
}

#if defined(__x86_64__)
/* getpid through the i386 ABI: eax 20 */
static long p_i386(void)
{
    long r;

    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    return r < 0 ? (errno = (int)-r, -1) : r;
}

/* getpid through the x32 ABI: __X32_SYSCALL_BIT | 39 */
static long p_x32(void)
{
    long r;

    __asm__ volatile("syscall" : "=a"(r) : "a"(0x40000000L | 39) : "rcx", "r11", "memory");
    return r < 0 ? (errno = (int)-r, -1) : r;
}
#endif

/* Run `fn` in a child; its result, or the signal that killed it. */
static json_t *probe(probe_fn fn)
{
    int p[2], st;
    struct probe_result r = { 0, 0 };
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) != 0)
        return json_pack("{s:s}", "error", strerror(errno));
    pid = fork();
    if (pid < 0)
        return json_pack("{s:s}", "error", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        errno = 0;
        r.ret = fn();
        r.err = r.ret < 0 ? errno : 0;
        if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
            _exit(2);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &r, sizeof(r)) != (ssize_t)sizeof(r))
        r.ret = -999;
    close(p[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(st))
        return json_pack("{s:i}", "signal", WTERMSIG(st));
    if (r.ret == -999)
        return json_pack("{s:s}", "error", "the probe reported nothing");
    return json_pack("{s:I,s:i,s:s}", "ret", (json_int_t)r.ret, "errno", r.err, "error",
                     r.err ? strerror(r.err) : "");
}

static json_t *refused(void)
{
    static const struct {
        const char *name;
        probe_fn    fn;
    } probes[] = {
        { "io_uring_setup", p_io_uring },
        { "personality", p_personality },
        { "socket_vsock", p_vsock },
        { "socket_netlink", p_netlink },
        { "socket_netlink_high_bits", p_netlink_high },
        { "socket_alg", p_alg },
        { "ioctl_figetbsz", p_ioctl_figetbsz },
        { "ioctl_tcsets", p_ioctl_tcsets },
        { "ioctl_tiocsti_high_bits", p_ioctl_tiocsti_high },
        { "clone_newuser", p_clone_newuser },
        { "clone3", p_clone3 },
#if defined(__x86_64__)
        { "abi_i386", p_i386 },
        { "abi_x32", p_x32 },
#endif
    };
    json_t *out = json_object();

    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
        json_object_set_new(out, probes[i].name, probe(probes[i].fn));
    return out;
}

/* ------------------------------------------------------------------ */
/* work                                                                */

#define NTHREADS 4
#define CHECKS   16

struct worker {
    int          id;
    const char  *failed[CHECKS]; /* NULL: ok */
    int          err[CHECKS];
};

static const char *const check_names[CHECKS] = {
    "memory", "getrandom", "clock", "file", "epoll_eventfd", "timerfd", "unix_socketpair",
    "tcp_loopback", "inet6_socket", "pipe_ioctls", "signal", "affinity_rlimit_uname",
    "thread_name", "personality_query", "isatty", "spawn",
};

static pthread_barrier_t barrier;
static atomic_int usr1_seen;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1_seen, 1);
}

/* Record that check `i` failed at `what`, with errno. */
static void FAIL(struct worker *w, int i, const char *what)
{
    w->failed[i] = what;
    w->err[i] = errno;
}

static void w_memory(struct worker *w)
{
    size_t n = 8 << 20;
    char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *h = malloc(1 << 20);

    if (m == MAP_FAILED) {
        FAIL(w, 0, "mmap");
        return;
    }
    memset(m, 1, n);
    if (mprotect(m, 4096, PROT_READ) != 0 || mprotect(m, 4096, PROT_READ | PROT_WRITE) != 0)
        FAIL(w, 0, "mprotect");
    else if (madvise(m, n, MADV_DONTNEED) != 0)
        FAIL(w, 0, "madvise");
    else if ((m = mremap(m, n, 2 * n, MREMAP_MAYMOVE)) == MAP_FAILED)
        FAIL(w, 0, "mremap");
    if (m != MAP_FAILED)
        munmap(m, 2 * n);
    if (!h)
        FAIL(w, 0, "malloc");
    else
        memset(h, 2, 1 << 20);
    free(h);
}

static void w_getrandom(struct worker *w)
{
    char b[64];

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        FAIL(w, 1, "getrandom");
}

static void w_clock(struct worker *w)
{
    struct timespec t, d = { 0, 1000000 };

    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0 || clock_gettime(CLOCK_REALTIME, &t) != 0)
        FAIL(w, 2, "clock_gettime");
    else if (nanosleep(&d, NULL) != 0)
        FAIL(w, 2, "nanosleep");
    else if (clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL) != 0)
        FAIL(w, 2, "clock_nanosleep");
}

static void w_file(struct worker *w)
{
    char a[64], b[64], buf[8];
    struct stat st;
    int fd;

    snprintf(a, sizeof(a), "/tmp/syscalls-%d-a", w->id);
    snprintf(b, sizeof(b), "/tmp/syscalls-%d-b", w->id);
    if ((fd = open(a, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        FAIL(w, 3, "open");
        return;
    }
    if (write(fd, "hello", 5) != 5 || fsync(fd) != 0 || ftruncate(fd, 5) != 0)
        FAIL(w, 3, "write");
    else if (pread(fd, buf, 5, 0) != 5 || memcmp(buf, "hello", 5) != 0)
        FAIL(w, 3, "pread");
    close(fd);
    if (w->failed[3])
        return;
    if (rename(a, b) != 0)
        FAIL(w, 3, "rename");
    else if (stat(b, &st) != 0 || st.st_size != 5)
        FAIL(w, 3, "stat");
    else if (mkdir(a, 0700) != 0 || rmdir(a) != 0)
        FAIL(w, 3, "mkdir");
    else if (unlink(b) != 0)
        FAIL(w, 3, "unlink");
}

static void w_epoll(struct worker *w)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event e = { .events = EPOLLIN }, got;
    uint64_t one = 1;

    if (ep < 0 || ev < 0)
        FAIL(w, 4, "epoll_create1/eventfd");
    else if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) != 0)
        FAIL(w, 4, "epoll_ctl");
    else if (write(ev, &one, 8) != 8)
        FAIL(w, 4, "eventfd write");
    else if (epoll_wait(ep, &got, 1, 1000) != 1)
        FAIL(w, 4, "epoll_wait");
    if (ep >= 0)
        close(ep);
    if (ev >= 0)
        close(ev);
}

static void w_timerfd(struct worker *w)
{
    int t = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = { { 0, 0 }, { 0, 2000000 } };
    uint64_t n;

    if (t < 0) {
        FAIL(w, 5, "timerfd_create");
        return;
    }
    if (timerfd_settime(t, 0, &its, NULL) != 0)
        FAIL(w, 5, "timerfd_settime");
    else if (read(t, &n, 8) != 8)
        FAIL(w, 5, "timerfd read");
    close(t);
}

static void w_socketpair(struct worker *w)
{
    int sv[2];
    char buf[4];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        FAIL(w, 6, "socketpair");
        return;
    }
    if (send(sv[0], "ping", 4, 0) != 4 || recv(sv[1], buf, 4, 0) != 4)
        FAIL(w, 6, "send/recv");
    close(sv[0]);
    close(sv[1]);
}

static void w_tcp(struct worker *w)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, s = -1, one = 1;
    char buf[4];

    if (l < 0) {
        FAIL(w, 7, "socket(AF_INET)");
        return;
    }
    if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        FAIL(w, 7, "setsockopt");
    else if (bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 4) != 0)
        FAIL(w, 7, "bind/listen");
    else if (getsockname(l, (struct sockaddr *)&a, &al) != 0)
        FAIL(w, 7, "getsockname");
    else if ((c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
             connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
        FAIL(w, 7, "connect");
    else if ((s = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0)
        FAIL(w, 7, "accept4");
    else if (write(c, "ping", 4) != 4 || read(s, buf, 4) != 4)
        FAIL(w, 7, "write/read");
    if (s >= 0)
        close(s);
    if (c >= 0)
        close(c);
    close(l);
}

static void w_inet6(struct worker *w)
{
    int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (s < 0 && errno != EAFNOSUPPORT) /* a kernel without IPv6 is not the filter */
        FAIL(w, 8, "socket(AF_INET6)");
    if (s >= 0)
        close(s);
}

static void w_pipe_ioctls(struct worker *w)
{
    int p[2], n = -1, on = 1;
    struct winsize ws;

    if (pipe2(p, O_CLOEXEC) != 0) {
        FAIL(w, 9, "pipe2");
        return;
    }
    if (write(p[1], "abc", 3) != 3)
        FAIL(w, 9, "write");
    else if (ioctl(p[0], FIONREAD, &n) != 0 || n != 3)
        FAIL(w, 9, "ioctl FIONREAD");
    else if (ioctl(p[0], FIONBIO, &on) != 0)
        FAIL(w, 9, "ioctl FIONBIO");
    else if (ioctl(p[0], FIOCLEX) != 0 || ioctl(p[0], FIONCLEX) != 0)
        FAIL(w, 9, "ioctl FIOCLEX/FIONCLEX");
    else if (ioctl(p[0], TIOCGWINSZ, &ws) == 0 || errno != ENOTTY)
        FAIL(w, 9, "ioctl TIOCGWINSZ is not ENOTTY");
    else if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0 || fcntl(p[0], F_GETFD) < 0)
        FAIL(w, 9, "fcntl");
    close(p[0]);
    close(p[1]);
}

static void w_signal(struct worker *w)
{
    stack_t ss = { .ss_size = SIGSTKSZ > 65536 ? SIGSTKSZ : 65536 };
    sigset_t set;
    int before = atomic_load(&usr1_seen);

    ss.ss_sp = malloc(ss.ss_size);
    if (!ss.ss_sp || sigaltstack(&ss, NULL) != 0)
        FAIL(w, 10, "sigaltstack");
    else if (pthread_kill(pthread_self(), SIGUSR1) != 0 || atomic_load(&usr1_seen) <= before)
        FAIL(w, 10, "pthread_kill (tgkill)");
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    if (!w->failed[10] && pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        FAIL(w, 10, "pthread_sigmask");
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(ss.ss_sp);
}

static void w_sys(struct worker *w)
{
    cpu_set_t cpus;
    struct rlimit rl;
    struct utsname u;

    if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0)
        FAIL(w, 11, "sched_getaffinity");
    else if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || prlimit(0, RLIMIT_STACK, NULL, &rl) != 0)
        FAIL(w, 11, "getrlimit/prlimit");
    else if (uname(&u) != 0)
        FAIL(w, 11, "uname");
    else if (sched_yield() != 0)
        FAIL(w, 11, "sched_yield");
}

static void w_name(struct worker *w)
{
    char name[16];

    snprintf(name, sizeof(name), "worker-%d", w->id);
    if (pthread_setname_np(pthread_self(), name) != 0)
        FAIL(w, 12, "pthread_setname_np");
}

static void w_personality(struct worker *w)
{
    if (personality(0xffffffff) < 0)
        FAIL(w, 13, "personality(0xffffffff)");
    else if (personality(PER_LINUX) < 0)
        FAIL(w, 13, "personality(PER_LINUX)");
}

static void w_isatty(struct worker *w)
{
    /* stdout is a pipe: isatty says no with ENOTTY (TCGETS is allowed) */
    errno = 0;
    if (isatty(1) || errno != ENOTTY)
        FAIL(w, 14, "isatty(1) did not fail with ENOTTY");
}

static void w_spawn(struct worker *w)
{
    char *argv[] = { "/bin/sh", "-c", "exit 7", NULL };
    pid_t pid;
    int st, rc;

    if ((rc = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ)) != 0) {
        errno = rc;
        FAIL(w, 15, "posix_spawn");
        return;
    }
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
        FAIL(w, 15, "waitpid: /bin/sh did not exit 7");
}

static void *work_thread(void *arg)
{
    struct worker *w = arg;
    void (*const steps[CHECKS])(struct worker *) = {
        w_memory, w_getrandom, w_clock, w_file, w_epoll, w_timerfd, w_socketpair, w_tcp,
        w_inet6, w_pipe_ioctls, w_signal, w_sys, w_name, w_personality, w_isatty, w_spawn,
    };

    pthread_barrier_wait(&barrier); /* all at once: futexes, concurrent mmap */
    for (int i = 0; i < CHECKS; i++)
        steps[i](w);
    return NULL;
}

static json_t *work(void)
{
    static struct worker ws[NTHREADS];
    pthread_t th[NTHREADS];
    struct sigaction sa;
    json_t *out = json_object();
    int started = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        json_object_set_new(out, "sigaction", json_string(strerror(errno)));
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    memset(ws, 0, sizeof(ws));
    for (int i = 0; i < NTHREADS; i++) {
        ws[i].id = i;
        int rc = pthread_create(&th[i], NULL, work_thread, &ws[i]);
        if (rc != 0) {
            json_object_set_new(out, "pthread_create", json_string(strerror(rc)));
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (started == NTHREADS)
        json_object_set_new(out, "threads", json_string("ok"));
    pthread_barrier_destroy(&barrier);
    for (int c = 0; c < CHECKS; c++) {
        char msg[160] = "ok";
        for (int i = 0; i < started; i++)
            if (ws[i].failed[c]) {
                snprintf(msg, sizeof(msg), "thread %d: %s: %s", i, ws[i].failed[c],
                         strerror(ws[i].err[c]));
                break;
            }
        json_object_set_new(out, check_names[c], json_string(msg));
    }
    return out;
}

/* ------------------------------------------------------------------ */

static int handle(const char *event, size_t len, const struct slr_context *ctx, char **out,
                  size_t *out_len, void *arg)
{
    json_error_t jerr;
    json_t *ev = json_loadb(event, len, 0, &jerr), *res;
    const char *action = ev ? json_string_value(json_object_get(ev, "action")) : NULL;

    (void)ctx, (void)arg;
    if (!action) {
        json_decref(ev);
        return slr_set_error("BadEvent", "no action");
    }
    printf("syscalls: %s\n", action);
    fflush(stdout);
    if (strcmp(action, "refused") == 0)
        res = refused();
    else if (strcmp(action, "work") == 0)
        res = work();
    else {
        int rc = slr_set_error("BadEvent", "unknown action %s", action);
        json_decref(ev);
        return rc;
    }
    json_decref(ev);
    *out = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    if (!*out)
        return slr_set_error("OutOfMemory", "cannot encode the result");
    *out_len = strlen(*out);
    return 0;
}

int main(void)
{
    return slr_start(handle, NULL);
}
