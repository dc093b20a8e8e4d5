/* bench/httpbench.h: what the HTTP benchmarks (invoke-http, invoke-async)
 * share, on top of bench.h: `build/sluice run` as a child process, a
 * minimal evhttp server as the baseline, and wrk (Debian's package) as
 * the load generator, its output parsed.
 *
 * Everything is static inline, as in bench.h. Children get
 * PR_SET_PDEATHSIG, so nothing outlives a benchmark that dies. */
#ifndef SLUICE_BENCH_HTTPBENCH_H
#define SLUICE_BENCH_HTTPBENCH_H

#include "bench.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/http.h>

#define HB_INVOKE_PATH "/2015-03-31/functions/echo/invocations"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

/* The whole file, NUL-terminated (from byte `from` on); NULL on error. */
static inline char *hb_slurp(const char *path, off_t from, size_t *len)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    if (!f)
        return NULL;
    if (from > 0)
        fseeko(f, from, SEEK_SET);
    for (;;) {
        size_t k;
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 131072;
            buf = realloc(buf, cap + 1);
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static inline off_t hb_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Occurrences of `needle` in the file from byte `from` on. */
static inline long hb_count_in_file(const char *path, off_t from, const char *needle)
{
    char *text = hb_slurp(path, from, NULL);
    long n = 0;

    for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(text);
    return n;
}

/* The last `lines` lines of a file, to stderr. */
static inline void hb_tail(const char *path, int lines)
{
    size_t len;
    char *text = hb_slurp(path, 0, &len);
    const char *p;
    int seen = 0;

    if (!text)
        return;
    for (p = text + len; p > text; p--)
        if (p[-1] == '\n' && p != text + len && ++seen >= lines)
            break;
    fprintf(stderr, "---- %s (end) ----\n%s---- end ----\n", path, p);
    free(text);
}

/* waitpid with a deadline: the child's status, or -1 if it still runs
 * after `secs` (it is then killed with SIGKILL and reaped). */
static inline int hb_wait(pid_t pid, double secs, bool *killed)
{
    double end = now_us() + secs * 1e6;
    int st;

    if (killed)
        *killed = false;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_us() >= end)
            break;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    if (killed)
        *killed = true;
    return -1;
}

/* In a child before exec: die with the parent, default signals, stdin
 * from /dev/null, stdout and stderr to `out` (appended). */
static inline void hb_child_setup(const char *out, int deathsig)
{
    int nul = open("/dev/null", O_RDONLY), fd;

    prctl(PR_SET_PDEATHSIG, deathsig);
    signal(SIGPIPE, SIG_DFL);
    if (nul >= 0)
        dup2(nul, 0);
    if (out && (fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
}

/* ------------------------------------------------------------------ */
/* A tiny HTTP client for /healthz and /metrics                        */

/* GET path on 127.0.0.1:port (HTTP/1.0, the server closes); the status,
 * or -1. *body (unless NULL) is the response body, to free. */
static inline int hb_http_get(int port, const char *path, char **body)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { 5, 0 };
    char req[256], *buf = NULL, *hdr_end;
    size_t n = 0, cap = 0;
    int fd, status = -1;

    if (body)
        *body = NULL;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write_full(fd, req, strlen(req)) != 0)
        goto out;
    for (;;) {
        ssize_t k;
        if (cap - n < 16384) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
        }
        k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            goto out;
        if (k == 0)
            break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    if (body && (hdr_end = strstr(buf, "\r\n\r\n"))) {
        *body = strdup(hdr_end + 4);
    }
out:
    free(buf);
    close(fd);
    return status;
}

/* ------------------------------------------------------------------ */
/* sluice as a child process                                           */

struct hb_sluice {
    pid_t pid;
    int   port;
    char  config[PATH_MAX + 32];
    char  log[PATH_MAX + 32];
};

/* Builds build/sluice and the echo handler if they are out of date (the
 * benchmark measures the binary, which bench/run does not rebuild); 0 or
 * -1 (make's messages printed). */
static inline int hb_make(const char *name)
{
    int rc = system("make -s --no-print-directory build/sluice build/handlers/echo >&2");

    if (rc != 0) {
        fprintf(stderr, "%s: `make build/sluice build/handlers/echo` failed\n", name);
        return -1;
    }
    return 0;
}

/* Common to the HTTP benchmarks: build what they need, make a private
 * temp dir (`dir`, size n), pick a port and write the config of one C echo
 * function listening there (*yaml, malloc'd). 0, or -1 after a message. */
static inline int hb_echo_setup(const char *name, char *dir, size_t n, int *port, char **yaml)
{
    char handler[PATH_MAX];

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (hb_make(name) != 0)
        return -1;
    if (!realpath("build/handlers/echo", handler)) {
        fprintf(stderr, "%s: build/handlers/echo: %s (run `make` first)\n", name,
                strerror(errno));
        return -1;
    }
    snprintf(dir, n, "/tmp/sluice-bench-%s-XXXXXX", name);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    *port = bench_free_port();
    if (*port <= 0 || asprintf(yaml,
                               "functions:\n"
                               "  echo:\n"
                               "    handler: %s\n"
                               "    memory_mb: 1769\n"
                               "    timeout_s: 10\n"
                               "server:\n"
                               "  listen: 127.0.0.1:%d\n"
                               "  data_dir: %s/data\n"
                               "  shutdown_grace_s: 10\n", handler, *port, dir) < 0) {
        *yaml = NULL;
        rm_tree(dir);
        return -1;
    }
    return 0;
}

/* Writes `yaml` to DIR/NAME.yaml, starts `build/sluice run` on it with
 * stdout and stderr to DIR/sluice.log, and waits (at most `secs`) for
 * GET /healthz to answer 200 on s->port (which the caller put in the
 * configuration). 0, or -1 (message printed, the child stopped). */
static inline int hb_sluice_start(struct hb_sluice *s, const char *name, const char *dir,
                                  const char *yaml, double secs)
{
    char sluice[PATH_MAX];
    double end;
    FILE *f;

    if (!realpath("build/sluice", sluice)) {
        fprintf(stderr, "%s: build/sluice: %s (run `make` first)\n", name, strerror(errno));
        return -1;
    }
    snprintf(s->config, sizeof(s->config), "%s/%s.yaml", dir, name);
    snprintf(s->log, sizeof(s->log), "%s/sluice.log", dir);
    if (!(f = fopen(s->config, "we")) || fputs(yaml, f) < 0 || fclose(f) != 0)
        return perror(s->config), -1;
    if (!getenv("SLUICE_RUNTIME_DIR")) {
        char *rt = realpath("runtime", NULL);
        if (rt)
            setenv("SLUICE_RUNTIME_DIR", rt, 1);
        free(rt);
    }
    s->pid = fork();
    if (s->pid < 0)
        return perror("fork"), -1;
    if (s->pid == 0) {
        char *argv[] = { sluice, "run", s->config, NULL };
        hb_child_setup(s->log, SIGTERM);
        execv(sluice, argv);
        _exit(127);
    }
    end = now_us() + secs * 1e6;
    while (now_us() < end) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            fprintf(stderr, "%s: sluice exited at start (status %d)\n", name,
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            hb_tail(s->log, 20);
            s->pid = 0;
            return -1;
        }
        if (hb_http_get(s->port, "/healthz", NULL) == 200)
            return 0;
        usleep(20000);
    }
    fprintf(stderr, "%s: sluice did not answer GET /healthz within %.0f s\n", name, secs);
    hb_tail(s->log, 20);
    kill(s->pid, SIGKILL);
    hb_wait(s->pid, 5, NULL);
    s->pid = 0;
    return -1;
}

/* SIGTERM, then at most `secs` for a clean exit (SIGKILL after). Returns
 * the exit code, or -1 when it had to be killed or died of a signal. */
static inline int hb_sluice_stop(struct hb_sluice *s, double secs)
{
    bool killed;
    int st;

    if (s->pid <= 0)
        return 0;
    kill(s->pid, SIGTERM);
    st = hb_wait(s->pid, secs, &killed);
    s->pid = 0;
    if (killed || st < 0 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* A series' value in Prometheus text (`series` exactly as printed, e.g.
 * `sluice_http_requests_total{code="200"}`); 0 when absent. */
static inline double hb_metric(const char *text, const char *series)
{
    size_t n = strlen(series);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return 0;
}

/* HTTP answers by status code, from sluice_http_requests_total. */
struct hb_codes {
    int    n;
    int    code[32];
    double count[32];
};

/* GET /metrics: the text (to free), or NULL. */
static inline char *hb_metrics(int port)
{
    char *text = NULL;

    if (hb_http_get(port, "/metrics", &text) != 200) {
        free(text);
        return NULL;
    }
    return text;
}

/* The answers by code in a /metrics text (NULL: none). */
static inline void hb_codes_parse(const char *text, struct hb_codes *c)
{
    static const char fam[] = "sluice_http_requests_total{code=\"";

    memset(c, 0, sizeof(*c));
    for (const char *p = text ? strstr(text, fam) : NULL; p && c->n < 32;
         p = strstr(p + 1, fam)) {
        int code;
        double v;
        if (sscanf(p + sizeof(fam) - 1, "%d\"} %lf", &code, &v) == 2) {
            c->code[c->n] = code;
            c->count[c->n++] = v;
        }
    }
}

static inline void hb_codes_scrape(int port, struct hb_codes *c)
{
    char *text = hb_metrics(port);

    hb_codes_parse(text, c);
    free(text);
}

/* How many answers with `code` came between the scrapes a and b. */
static inline double hb_codes_delta(const struct hb_codes *a, const struct hb_codes *b, int code)
{
    double va = 0, vb = 0;

    for (int i = 0; i < a->n; i++)
        if (a->code[i] == code)
            va = a->count[i];
    for (int i = 0; i < b->n; i++)
        if (b->code[i] == code)
            vb = b->count[i];
    return vb - va;
}

/* "429: 12, 500: 3" for the codes that are not 2xx between the scrapes
 * (empty when none); returns how many answers that is. */
static inline double hb_codes_errors(const struct hb_codes *a, const struct hb_codes *b,
                                     char *out, size_t n)
{
    double total = 0;
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < b->n; i++) {
        double d = hb_codes_delta(a, b, b->code[i]);
        if (b->code[i] / 100 == 2 || d <= 0)
            continue;
        total += d;
        if (used < n)
            used += (size_t)snprintf(out + used, n - used, "%s%d: %.0f", used ? ", " : "",
                                     b->code[i], d);
    }
    return total;
}

/* ------------------------------------------------------------------ */
/* The baseline: a minimal evhttp server in a forked child             */

struct hb_answer {
    int         code;
    const char *body;            /* NULL: none */
};

static inline void hb_baseline_cb(struct evhttp_request *req, void *arg)
{
    const struct hb_answer *a = arg;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    /* the headers sluice sends, roughly the same size */
    evhttp_add_header(h, "X-Amz-Executed-Version", "$LATEST");
    evhttp_add_header(h, "X-Amzn-RequestId", "00000000-0000-4000-8000-000000000000");
    evhttp_add_header(h, "Content-Type", "application/json");
    if (a->body)
        evbuffer_add(evhttp_request_get_output_buffer(req), a->body, strlen(a->body));
    evhttp_send_reply(req, a->code, a->code == 202 ? "Accepted" : "OK", NULL);
}

/* Starts the server answering every request with `a`, on a free loopback
 * port (*port), in one thread and one event loop as sluice's API. Returns
 * the child's pid, or -1 (message printed). */
static inline pid_t hb_baseline_start(const struct hb_answer *a, int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    /* non-blocking: libevent's listener accepts until EAGAIN */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    pid_t pid;

    if (fd < 0)
        return perror("socket"), -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("baseline: bind");
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        close(fd);
        return -1;
    }
    if (pid == 0) {
        struct event_base *base;
        struct evhttp *http;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGTERM, SIG_DFL);
        base = event_base_new();
        http = base ? evhttp_new(base) : NULL;
        if (!http || evhttp_accept_socket(http, fd) != 0)
            _exit(1);
        evhttp_set_gencb(http, hb_baseline_cb, (void *)a);
        event_base_dispatch(base);
        _exit(0);
    }
    close(fd);
    return pid;
}

static inline void hb_baseline_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        hb_wait(pid, 5, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* wrk                                                                 */

struct hb_wrk {
    double requests;             /* completed, all codes */
    double secs;                 /* wrk's measured duration */
    double rps;                  /* Requests/sec */
    double p50_ms, p90_ms, p99_ms;
    double non2xx;               /* "Non-2xx or 3xx responses" */
    double sock_connect, sock_read, sock_write, sock_timeout;
    char   out[PATH_MAX + 64];   /* wrk's output file */
};

/* The Lua script: POST, body `{}`, X-Amz-Invocation-Type `itype`, in
 * DIR/TAG.lua; 0 or -1. */
static inline int hb_wrk_script(const char *dir, const char *tag, const char *itype,
                                char *path, size_t n)
{
    FILE *f;

    snprintf(path, n, "%s/%s.lua", dir, tag);
    if (!(f = fopen(path, "we")))
        return perror(path), -1;
    fprintf(f,
            "wrk.method = \"POST\"\n"
            "wrk.body = \"{}\"\n"
            "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
            "wrk.headers[\"X-Amz-Invocation-Type\"] = \"%s\"\n", itype);
    return fclose(f) == 0 ? 0 : -1;
}

/* "1.23ms" and the like, in ms. */
static inline double hb_wrk_time_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (strncmp(end, "us", 2) == 0)
        return v / 1000.0;
    if (strncmp(end, "ms", 2) == 0)
        return v;
    if (end[0] == 's')
        return v * 1000.0;
    if (end[0] == 'm')
        return v * 60000.0;
    if (end[0] == 'h')
        return v * 3600000.0;
    return v;
}

static inline void hb_wrk_parse(const char *text, struct hb_wrk *w)
{
    bool dist = false;

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        const char *q = p + strspn(p, " \t");
        char unit[8];
        double v;
        int pc, used = 0;

        if (strncmp(q, "Latency Distribution", 20) == 0) {
            dist = true;
        } else if (dist && sscanf(q, "%d%%%n", &pc, &used) == 1 && used > 0) {
            const char *t = q + used;
            t += strspn(t, " \t");
            if (pc == 50)
                w->p50_ms = hb_wrk_time_ms(t);
            else if (pc == 90)
                w->p90_ms = hb_wrk_time_ms(t);
            else if (pc == 99)
                w->p99_ms = hb_wrk_time_ms(t);
        } else if (sscanf(q, "%lf requests in %lf%7s", &w->requests, &v, unit) == 3) {
            dist = false;
            w->secs = unit[0] == 'm' && unit[1] != 's' ? v * 60 : v;
        } else if (strncmp(q, "Socket errors:", 14) == 0) {
            sscanf(q, "Socket errors: connect %lf, read %lf, write %lf, timeout %lf",
                   &w->sock_connect, &w->sock_read, &w->sock_write, &w->sock_timeout);
        } else if (strncmp(q, "Non-2xx or 3xx responses:", 25) == 0) {
            w->non2xx = strtod(q + 25, NULL);
        } else if (strncmp(q, "Requests/sec:", 13) == 0) {
            w->rps = strtod(q + 13, NULL);
        }
    }
}

/* Runs `wrk -t2 -cCONNS -dSECSs --latency --timeout 10s -s SCRIPT
 * http://127.0.0.1:PORT/PATH`, output in DIR/TAG.txt, and parses it.
 * 0, or -1 (message printed: wrk missing, failed, or no result). */
static inline int hb_wrk_run(const char *name, const char *dir, const char *tag,
                             const char *script, int port, int conns, int secs,
                             struct hb_wrk *w)
{
    char c[16], d[16], url[128];
    char *text;
    pid_t pid;
    bool killed;
    int st;

    memset(w, 0, sizeof(*w));
    snprintf(w->out, sizeof(w->out), "%s/%s.txt", dir, tag);
    snprintf(c, sizeof(c), "-c%d", conns);
    snprintf(d, sizeof(d), "-d%ds", secs);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, HB_INVOKE_PATH);
    unlink(w->out);
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return perror("fork"), -1;
    if (pid == 0) {
        char *argv[] = { "wrk", "-t2", c, d, "--latency", "--timeout", "10s", "-s",
                         (char *)script, url, NULL };
        hb_child_setup(w->out, SIGKILL);
        execvp("wrk", argv);
        fprintf(stderr, "exec wrk: %s\n", strerror(errno));
        _exit(127);
    }
    st = hb_wait(pid, secs + 20, &killed);
    text = hb_slurp(w->out, 0, NULL);
    if (killed || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "%s: wrk %s\n%s", name,
                killed ? "did not finish in time" :
                WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "is missing (apt-get install wrk; "
                                                          "tests/deps installs it)"
                                                        : "failed:",
                text ? text : "");
        free(text);
        return -1;
    }
    hb_wrk_parse(text ? text : "", w);
    free(text);
    if (w->requests <= 0 || w->rps <= 0) {
        fprintf(stderr, "%s: wrk completed no request (see %s)\n", name, w->out);
        return -1;
    }
    return 0;
}

static inline double hb_wrk_sock_errors(const struct hb_wrk *w)
{
    return w->sock_connect + w->sock_read + w->sock_write + w->sock_timeout;
}

/* "N requests in S s, R req/s, latency p50 A ms, p90 B ms, p99 C ms" */
static inline void hb_wrk_print(const char *name, const char *who, const struct hb_wrk *w)
{
    printf("%s: %s: %.0f requests in %.2f s, %.0f req/s, latency p50 %.3f ms, p90 %.3f ms, "
           "p99 %.3f ms; non-2xx %.0f, socket errors %.0f (connect %.0f, read %.0f, write %.0f, "
           "timeout %.0f)\n", name, who, w->requests, w->secs, w->rps, w->p50_ms, w->p90_ms,
           w->p99_ms, w->non2xx, hb_wrk_sock_errors(w), w->sock_connect, w->sock_read,
           w->sock_write, w->sock_timeout);
}

/* The rates of sluice's run and of the baseline's (2xx answers only), and
 * every error either had, said on stderr. Returns false when the run does
 * not count: sluice did not stop cleanly, or anything failed. */
static inline bool hb_judge(const char *name, const char *unit, int stop_rc,
                            double werrs, const char *werr, double merrs, const char *merr,
                            const struct hb_wrk *warm, const struct hb_wrk *sw,
                            const struct hb_wrk *bw, double *value, double *base_value)
{
    *value = sw->rps * (sw->requests - sw->non2xx) / sw->requests;
    *base_value = bw->rps * (bw->requests - bw->non2xx) / bw->requests;
    if (stop_rc != 0)
        fprintf(stderr, "%s: sluice did not stop cleanly on SIGTERM (%d)\n", name, stop_rc);
    if (werrs > 0 || warm->non2xx > 0)
        fprintf(stderr, "%s: ERROR: sluice answered errors during the warm-up: %s "
                "(wrk: %.0f non-2xx of %.0f)\n", name, werr, warm->non2xx, warm->requests);
    if (merrs > 0 || sw->non2xx > 0)
        fprintf(stderr, "%s: ERROR: sluice answered errors during the run: %s "
                "(wrk: %.0f non-2xx of %.0f)\n", name, merr, sw->non2xx, sw->requests);
    if (hb_wrk_sock_errors(sw) > 0 || hb_wrk_sock_errors(warm) > 0)
        fprintf(stderr, "%s: ERROR: socket errors against sluice: %.0f in the warm-up, %.0f "
                "in the run\n", name, hb_wrk_sock_errors(warm), hb_wrk_sock_errors(sw));
    if (bw->non2xx > 0 || hb_wrk_sock_errors(bw) > 0)
        fprintf(stderr, "%s: ERROR: the baseline server had %.0f non-2xx answers and %.0f "
                "socket errors\n", name, bw->non2xx, hb_wrk_sock_errors(bw));
    if (stop_rc != 0 || werrs > 0 || warm->non2xx > 0 || merrs > 0 || sw->non2xx > 0 ||
        hb_wrk_sock_errors(sw) > 0 || hb_wrk_sock_errors(warm) > 0 || bw->non2xx > 0 ||
        hb_wrk_sock_errors(bw) > 0) {
        fprintf(stderr, "%s: FAILED (measured %.0f %s against the baseline's %.0f)\n", name,
                *value, unit, *base_value);
        return false;
    }
    return true;
}

#endif
