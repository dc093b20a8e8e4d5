/* The web console's HTTP side (api/console.c), against `$BUILD/sluice run`
 * with real handlers and no services: the embedded pages and their
 * headers (CSP default-src 'self', nosniff, ETag), the sample ring's JSON,
 * the scopes (read to look, admin to redrive and delete, a credential's
 * functions), and the dead letters of a SQLite sink read, shown, redriven
 * as asynchronous invocations and deleted (a file sink is read only).
 * The browser itself is tests/integration/test_console_browser.c.
 * Needs root (sandboxes) and curl; run from the repository root. */
#include <criterion/criterion.h>

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define ADMIN  "cons-admin-1"
#define READER "cons-reader-2"
#define ECHOER "cons-echo-3"
#define INVOKER "cons-invoke-4"

static char root[1024], dir[256], cfg[400], log_path[400];
static int port;
static pid_t kid = -1;

static void setup(void)
{
    cr_assert_not_null(getcwd(root, sizeof(root)));
    setenv("SLUICE_RUNTIME_DIR", "runtime", 0);
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-console-%d", (int)getpid());
    mkdir(dir, 0755);
    chmod(dir, 0755);
    port = th_free_port();
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    char cmd[400];

    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        kid = -1;
    }
    th_scan_logs(dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

TestSuite(console, .init = setup, .fini = teardown, .timeout = 120);

static void start(bool auth)
{
    char echo[PATH_MAX + 64], fail[PATH_MAX + 64];
    FILE *f;

    snprintf(cfg, sizeof(cfg), "%s/sluice.yaml", dir);
    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "functions:\n"
            "  echo:\n    handler: %s\n"
            "    async: { maximum_retry_attempts: 0, on_failure: dlq }\n"
            "  fail:\n    handler: %s\n"
            "    async: { maximum_retry_attempts: 0, on_failure: dlq }\n"
            "sinks:\n"
            "  dlq: { type: sqlite, path: %s/dlq.db }\n"
            "  lines: { type: file, path: %s/lines.jsonl }\n"
            "server:\n  listen: 127.0.0.1:%d\n  data_dir: %s/data\n",
            th_build_path(echo, sizeof(echo), root, "handlers/echo"),
            th_build_path(fail, sizeof(fail), root, "handlers/fail"), dir, dir, port, dir);
    if (auth)
        fprintf(f, "  auth:\n"
                   "    " ADMIN ": { bearer: true, functions: \"*\", scopes: \"invoke, admin\" }\n"
                   "    " READER ": { bearer: true, functions: \"*\", scopes: \"read\" }\n"
                   "    " ECHOER ": { bearer: true, functions: \"echo\", scopes: \"admin\" }\n"
                   "    " INVOKER ": \"*\"\n");
    fclose(f);
    kid = th_run_sluice(root, cfg, log_path);
    cr_assert_gt(kid, 0);
    for (int i = 0; i < 100 && !th_healthy(port); i++)
        usleep(50000);
    cr_assert(th_healthy(port), "sluice did not start");
}

struct resp {
    int   status;
    char  head[8192];
    char *body;
};

/* One request through curl; `token` NULL: none. */
static struct resp req(const char *method, const char *path, const char *token,
                       const char *extra_header)
{
    static char bodies[16][1 << 16];
    static int next;
    struct resp r = { 0 };
    char cmd[2048], hpath[512];
    FILE *p, *h;
    size_t n;

    snprintf(hpath, sizeof(hpath), "%s/head.txt", dir);
    snprintf(cmd, sizeof(cmd), "curl -s -g -X %s -D '%s' %s%s%s %s%s%s 'http://127.0.0.1:%d%s'",
             method, hpath, token ? "-H 'Authorization: Bearer " : "", token ? token : "",
             token ? "'" : "", extra_header ? "-H '" : "", extra_header ? extra_header : "",
             extra_header ? "'" : "", port, path);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    r.body = bodies[next++ % 16];
    n = fread(r.body, 1, sizeof(bodies[0]) - 1, p);
    r.body[n] = '\0';
    pclose(p);
    h = fopen(hpath, "r");
    if (h) {
        n = fread(r.head, 1, sizeof(r.head) - 1, h);
        r.head[n] = '\0';
        fclose(h);
        sscanf(r.head, "HTTP/1.1 %d", &r.status);
    }
    return r;
}

static bool has_header(const struct resp *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

static json_t *body_json(const struct resp *r)
{
    json_error_t je;
    json_t *j = json_loads(r->body, 0, &je);

    cr_assert_not_null(j, "not JSON (%s): %s", je.text, r->body);
    return j;
}

static void invoke_async(const char *fn, const char *payload)
{
    char cmd[2048];

    snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -w '%%{http_code}' -H "
             "'X-Amz-Invocation-Type: Event' -H 'Authorization: Bearer " INVOKER "' "
             "--data-binary '%s' http://127.0.0.1:%d/2015-03-31/functions/%s/invocations "
             "| grep -q 202", payload, port, fn);
    cr_assert_eq(system(cmd), 0, "%s not accepted", fn);
}

/* Entries of sink `sink`, waiting for `want` of them. */
static json_t *wait_entries(const char *token, const char *sink, size_t want)
{
    char path[200];

    snprintf(path, sizeof(path), "/console/api/dlq/%s", sink);
    for (int i = 0; i < 200; i++) {
        struct resp r = req("GET", path, token, NULL);
        json_t *j;

        if (r.status == 200) {
            j = body_json(&r);
            if (json_array_size(json_object_get(j, "entries")) >= want)
                return j;
            json_decref(j);
        }
        usleep(50000);
    }
    cr_assert_fail("sink %s never held %zu entries", sink, want);
    return NULL;
}

Test(console, pages_are_embedded_with_a_strict_csp)
{
    struct resp r;
    char etag[128] = "", hdr[200];
    const char *e;

    start(false);
    r = req("GET", "/console", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_expect(has_header(&r, "Content-Type: text/html"), "%s", r.head);
    cr_expect(has_header(&r, "Content-Security-Policy: default-src 'self'"), "%s", r.head);
    cr_expect(has_header(&r, "X-Content-Type-Options: nosniff"));
    cr_expect(has_header(&r, "X-Frame-Options: DENY"));
    cr_expect(strstr(r.body, "/console/app.js") != NULL);
    cr_expect(strstr(r.body, "<script>") == NULL, "no inline script: CSP would refuse it");

    r = req("GET", "/console/app.js", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_expect(has_header(&r, "Content-Type: text/javascript"));
    cr_expect(strstr(r.body, "innerHTML") == NULL || strstr(r.body, "no innerHTML") != NULL,
              "the pages build text nodes, never markup");
    r = req("GET", "/console/vendor/uplot/uPlot.iife.min.js", NULL, NULL);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "uPlot") != NULL);
    r = req("GET", "/console/vendor/uplot/LICENSE", NULL, NULL);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "MIT License") != NULL, "the licence is served with the library");

    /* the ETag makes a reload a 304 */
    r = req("GET", "/console/app.css", NULL, NULL);
    cr_assert_eq(r.status, 200);
    e = strcasestr(r.head, "ETag: ");
    cr_assert_not_null(e);
    sscanf(e + 6, "%127[^\r\n]", etag);
    snprintf(hdr, sizeof(hdr), "If-None-Match: %s", etag);
    r = req("GET", "/console/app.css", NULL, hdr);
    cr_expect_eq(r.status, 304, "%s", r.head);

    /* nothing but the embedded files */
    cr_expect_eq(req("GET", "/console/../../etc/passwd", NULL, NULL).status, 404);
    cr_expect_eq(req("GET", "/console/%2e%2e/sluice.yaml", NULL, NULL).status, 404);
    cr_expect_eq(req("GET", "/console/nope.js", NULL, NULL).status, 404);
    cr_expect_eq(req("POST", "/console/app.js", NULL, NULL).status, 405);
    cr_expect_eq(req("GET", "/consolex", NULL, NULL).status, 404);
    r = req("GET", "/console/api/nope", NULL, NULL);
    cr_expect_eq(r.status, 404);
    cr_expect(has_header(&r, "Content-Security-Policy: default-src 'self'"));
    cr_expect(th_healthy(port));
}

Test(console, overview_and_the_sample_ring)
{
    struct resp r;
    json_t *j, *fns, *series;
    double rate = 0;

    start(false);
    for (int i = 0; i < 5; i++)
        invoke_async("echo", "{\"n\":1}");
    r = req("GET", "/console/api/overview", NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = body_json(&r);
    fns = json_object_get(j, "functions");
    cr_assert_eq(json_array_size(fns), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(fns, 0), "name")), "echo");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(fns, 0), "state")),
                     "Active");
    cr_expect_eq(json_array_size(json_object_get(j, "sinks")), 2);
    cr_expect(json_is_false(json_object_get(j, "auth")));
    json_decref(j);

    /* the ring samples every 10 s: after the second sample, a rate */
    for (int i = 0; i < 260 && rate <= 0; i++) {
        usleep(100000);
        r = req("GET", "/console/api/series?names=function.invocations_per_s&key=echo", NULL,
                NULL);
        cr_assert_eq(r.status, 200);
        j = body_json(&r);
        series = json_object_get(j, "series");
        if (json_array_size(series) == 1) {
            json_t *v = json_object_get(json_array_get(series, 0), "v");
            rate = json_number_value(json_array_get(v, json_array_size(v) - 1));
            cr_expect_eq(json_array_size(v), json_array_size(json_object_get(j, "t")));
        }
        json_decref(j);
    }
    /* five invocations in the first 10 s */
    cr_expect_float_eq(rate, 0.5, 0.21, "invocations/s of echo: %g", rate);
    r = req("GET", "/console/api/series?names=function.cold_starts_per_s&points=1", NULL, NULL);
    j = body_json(&r);
    cr_expect_eq(json_array_size(json_object_get(j, "t")), 1);
    json_decref(j);
    cr_expect_eq(req("GET", "/console/api/series?names", NULL, NULL).status, 400);
}

Test(console, scopes_guard_reads_and_writes)
{
    struct resp r;
    json_t *j;

    start(true);
    /* the pages themselves are open; the data is not */
    cr_expect_eq(req("GET", "/console/", NULL, NULL).status, 200);
    r = req("GET", "/console/api/overview", NULL, NULL);
    cr_expect_eq(r.status, 401);
    cr_expect(has_header(&r, "WWW-Authenticate: Bearer"), "%s", r.head);
    cr_expect_eq(req("GET", "/console/api/overview", "wrong", NULL).status, 401);
    /* invoke only: no read */
    cr_expect_eq(req("GET", "/console/api/overview", INVOKER, NULL).status, 403);
    cr_expect_eq(req("GET", "/console/api/overview", READER, NULL).status, 200);
    cr_expect_eq(req("GET", "/console/api/overview", ADMIN, NULL).status, 200);
    /* read may look, not redrive or delete */
    cr_expect_eq(req("GET", "/console/api/dlq/dlq", READER, NULL).status, 200);
    cr_expect_eq(req("POST", "/console/api/dlq/dlq/redrive", READER, NULL).status, 403);
    cr_expect_eq(req("DELETE", "/console/api/dlq/dlq/1", READER, NULL).status, 403);
    /* a credential for echo sees echo only */
    r = req("GET", "/console/api/overview", ECHOER, NULL);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_expect_eq(json_array_size(json_object_get(j, "functions")), 1);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "functions"), 0), "name")), "echo");
    json_decref(j);

    /* a dead letter of fail is not echo's to see, redrive or delete */
    invoke_async("fail", "{\"who\":\"fail\"}");
    j = wait_entries(ADMIN, "dlq", 1);
    json_decref(j);
    r = req("GET", "/console/api/dlq/dlq", ECHOER, NULL);
    j = body_json(&r);
    cr_expect_eq(json_array_size(json_object_get(j, "entries")), 0, "%s", r.body);
    json_decref(j);
    cr_expect_eq(req("GET", "/console/api/dlq/dlq/1", ECHOER, NULL).status, 404);
    cr_expect_eq(req("DELETE", "/console/api/dlq/dlq/1", ECHOER, NULL).status, 404);
    r = req("POST", "/console/api/dlq/dlq/1/redrive", ECHOER, NULL);
    j = body_json(&r);
    cr_expect_eq(json_integer_value(json_object_get(j, "redriven")), 0, "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(j, "kept")), 1);
    json_decref(j);
    j = wait_entries(ADMIN, "dlq", 1);
    cr_expect_eq(json_array_size(json_object_get(j, "entries")), 1, "still there");
    json_decref(j);
}

Test(console, dead_letters_shown_redriven_and_deleted)
{
    struct resp r;
    json_t *j, *e;
    const char *hostile = "<img src=x onerror=alert(1)>";
    char id[64], path[200], payload[300];

    start(false);
    snprintf(payload, sizeof(payload), "{\"html\":\"%s\"}", hostile);
    invoke_async("fail", payload);
    j = wait_entries(NULL, "dlq", 1);
    e = json_array_get(json_object_get(j, "entries"), 0);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(e, "id")));
    cr_expect_str_eq(json_string_value(json_object_get(e, "kind")), "async");
    cr_expect_str_eq(json_string_value(json_object_get(e, "function")), "fail");
    cr_expect_str_eq(json_string_value(json_object_get(e, "condition")), "RetriesExhausted");
    cr_expect_eq(json_integer_value(json_object_get(e, "attempts")), 1);
    cr_expect(json_string_value(json_object_get(e, "error")) != NULL);
    /* the payload as data: JSON-escaped, never interpreted here */
    cr_expect(strstr(json_string_value(json_object_get(e, "summary")), hostile) != NULL);
    json_decref(j);

    snprintf(path, sizeof(path), "/console/api/dlq/dlq/%s", id);
    r = req("GET", path, NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_expect(has_header(&r, "Content-Type: application/json"));
    cr_expect(has_header(&r, "X-Content-Type-Options: nosniff"));
    j = body_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "payload"), "html")),
                     hostile);
    cr_expect(json_is_object(json_object_get(j, "record")));
    json_decref(j);
    cr_expect_eq(req("GET", "/console/api/dlq/dlq/999999", NULL, NULL).status, 404);
    cr_expect_eq(req("GET", "/console/api/dlq/nosuch", NULL, NULL).status, 404);

    /* redrive: an asynchronous invocation of fail again; it fails again and
     * comes back as a new entry, the old one is gone */
    snprintf(path, sizeof(path), "/console/api/dlq/dlq/%s/redrive", id);
    r = req("POST", path, NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = body_json(&r);
    cr_expect_eq(json_integer_value(json_object_get(j, "redriven")), 1, "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(j, "kept")), 0);
    json_decref(j);
    for (int i = 0; i < 100; i++) {
        char m[200];
        snprintf(m, sizeof(m), "curl -s http://127.0.0.1:%d/metrics | grep -q "
                 "'^sluice_invocations_total{function=\"fail\"} 2'", port);
        if (system(m) == 0)
            break;
        usleep(100000);
    }
    j = wait_entries(NULL, "dlq", 1);
    e = json_array_get(json_object_get(j, "entries"), 0);
    cr_expect_eq(json_array_size(json_object_get(j, "entries")), 1);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(e, "id")));
    json_decref(j);

    /* delete */
    snprintf(path, sizeof(path), "/console/api/dlq/dlq/%s", id);
    r = req("DELETE", path, NULL, NULL);
    cr_expect_eq(r.status, 200, "%s", r.body);
    r = req("DELETE", path, NULL, NULL);
    cr_expect_eq(r.status, 404, "deleted once: %s", r.body);
    r = req("GET", "/console/api/dlq/dlq", NULL, NULL);
    j = body_json(&r);
    cr_expect_eq(json_integer_value(json_object_get(j, "total")), 0, "%s", r.body);
    json_decref(j);

    /* a file sink the service appends to is read, not rewritten */
    cr_expect_eq(req("GET", "/console/api/dlq/lines", NULL, NULL).status, 200);
    cr_expect_eq(req("POST", "/console/api/dlq/lines/redrive", NULL, NULL).status, 409);
    cr_expect_eq(req("DELETE", "/console/api/dlq/lines/1", NULL, NULL).status, 409);
    cr_expect_eq(req("PUT", "/console/api/dlq/dlq/1", NULL, NULL).status, 405);
    cr_expect(th_healthy(port));
}
