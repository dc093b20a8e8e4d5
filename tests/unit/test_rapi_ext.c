/* Extensions and Telemetry APIs end to end: `$BUILD/sluice run` as a child
 * process, a `runtime: lambda` function (tests/unit/fixtures/rapi/ext/fn.py,
 * a small Python runtime) with a layer holding an external extension
 * (fixtures/rapi/ext/layer/extensions/recorder) that registers for INVOKE
 * and SHUTDOWN, subscribes to telemetry and prints "EXT ..." for every
 * event and record it gets: sluice's log is where the test reads them.
 *
 * Needs root (sandboxes with a network namespace each), $BUILD (make) and
 * python3. Run from the repository root. SLUICE_TEST_LOG=1 copies sluice's
 * log to stderr when a test ends. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
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

#define INVOKE(fn) "/2015-03-31/functions/" fn "/invocations"

#define RH_NAME "rapi-ext"
#include "rapi_harness.h"


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *fixture(const char *name)
{
    return fmt("%s/tests/unit/fixtures/rapi/ext/%s", root_dir, name);
}

/* The function: the Python runtime with the recorder extension's layer;
 * `mode`: the extension's EXT_MODE; `extra`: more YAML lines (indent 4). */
static void start_fn(const char *mode, const char *extra)
{
    const char *fn = fmt("functions:\n  fx:\n    runtime: lambda\n    handler: %s\n"
                         "    layers: [%s]\n    environment:\n      EXT_MODE: %s\n"
                         "      EXT_TAG: t%d\n%s",
                         fixture("fn.py"), fixture("layer"), mode, (int)getpid(),
                         extra ? extra : "");
    start_server(write_config("ext.yaml", fn, NULL));
}

/* Invoke fx synchronously; its request id (the runtime answers with it). */
static const char *invoke_fx(const char *event)
{
    struct resp r = post(INVOKE("fx"), NULL, event);
    json_t *j = r.body ? json_loadb(r.body, r.blen, 0, NULL) : NULL;
    const char *id;

    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.300s; log:\n%s", r.body, server_log());
    cr_assert_not_null(j, "%.300s", r.body);
    id = fmt("%s", str_or(json_string_value(json_object_get(j, "requestId"))));
    json_decref(j);
    return id;
}

/* The log line holding every one of the NULL-ended strings, or NULL. */
static const char *log_line_with(const char *log, ...)
{
    for (const char *l = log; l && *l;) {
        const char *eol = strchr(l, '\n');
        char *line = strndup(l, eol ? (size_t)(eol - l) : strlen(l));
        bool all = true;
        va_list ap;

        cr_assert_not_null(line);
        va_start(ap, log);
        for (const char *s = va_arg(ap, const char *); s && all; s = va_arg(ap, const char *))
            all = strstr(line, s) != NULL;
        va_end(ap);
        if (all)
            return keep(line);
        free(line);
        l = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static size_t count_lines_with(const char *log, const char *s)
{
    size_t n = 0;

    for (const char *p = log; (p = strstr(p, s)); p += strlen(s))
        n++;
    return n;
}

/* Wait up to `ms` for a log line with `a` and `b` (b may be NULL). */
static const char *wait_line(int ms, const char *a, const char *b)
{
    double end = now_ms() + ms;

    for (;;) {
        const char *l;
        int before = nallocs;

        l = log_line_with(server_log(), a, b, (const char *)NULL);
        if (l || now_ms() > end)
            return l;
        /* nothing found: what this round kept (the log's copy) goes */
        while (nallocs > before)
            free(allocs[--nallocs]);
        usleep(50000);
    }
}

/* The host processes whose environment holds EXT_TAG=t<our pid> and
 * EXT_MODE=`mode`: the extensions (and runtimes) this test started. */
static int count_tagged(void)
{
    char want[64];
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    snprintf(want, sizeof(want), "EXT_TAG=t%d", (int)getpid());
    cr_assert_not_null(d);
    while ((de = readdir(d))) {
        char path[300], buf[16384];
        ssize_t len;
        int fd;

        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/environ", de->d_name);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        for (char *p = buf; p < buf + len; p += strlen(p) + 1)
            if (strcmp(p, want) == 0) {
                n++;
                break;
            }
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */

Test(rapi_ext, invoke_and_shutdown_events_and_telemetry_reach_the_extension, .init = setup,
     .fini = teardown, .timeout = 90)
{
    const char *ids[3], *l, *log;

    start_fn("normal", "    idle_timeout_s: 1\n    memory_mb: 256\n");
    for (int i = 0; i < 3; i++)
        ids[i] = invoke_fx(fmt("{\"n\":%d}", i));
    /* idle for a second: spindown, SHUTDOWN to the extension, which says bye */
    cr_assert_not_null(wait_line(20000, "EXT bye", NULL), "no SHUTDOWN handled; log:\n%s",
                       server_log());
    log = server_log();
    l = log_line_with(log, "EXT registered 200", "\"functionName\":\"fx\"",
                      "\"functionVersion\":\"$LATEST\"", "\"handler\":\"fn.py\"", (char *)NULL);
    cr_expect_not_null(l, "register's answer; log:\n%s", log);
    cr_expect_not_null(log_line_with(log, "EXT subscribed 200", (char *)NULL), "%s", log);
    for (int i = 0; i < 3; i++) {
        cr_expect_not_null(log_line_with(log, "EXT event ", "\"eventType\": \"INVOKE\"",
                                         fmt("\"requestId\": \"%s\"", ids[i]), "\"deadlineMs\": ",
                                         "\"invokedFunctionArn\": \"arn:aws:lambda:",
                                         "\"tracing\": {", (char *)NULL),
                           "INVOKE for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel function",
                                         fmt("\"FN handling %s\"", ids[i]), (char *)NULL),
                           "the function's line for %s by telemetry; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.start",
                                         fmt("\"requestId\": \"%s\"", ids[i]), (char *)NULL),
                           "platform.start for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.runtimeDone",
                                         fmt("\"requestId\": \"%s\"", ids[i]),
                                         "\"status\": \"success\"", (char *)NULL),
                           "platform.runtimeDone for %s; log:\n%s", ids[i], log);
        cr_expect_not_null(log_line_with(log, "EXT tel platform.report",
                                         fmt("\"requestId\": \"%s\"", ids[i]),
                                         "\"billedDurationMs\": ", "\"durationMs\": ",
                                         "\"maxMemoryUsedMB\": ", "\"memorySizeMB\": 256",
                                         "\"status\": \"success\"", (char *)NULL),
                           "platform.report for %s; log:\n%s", ids[i], log);
    }
    cr_expect_eq(count_lines_with(log, "\"eventType\": \"INVOKE\""), 3, "one INVOKE each:\n%s",
                 log);
    /* what happened before it subscribed reaches it too */
    cr_expect_not_null(log_line_with(log, "EXT tel platform.initStart", "\"phase\": \"init\"",
                                     (char *)NULL), "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT tel platform.initRuntimeDone", (char *)NULL),
                       "%s", log);
    l = log_line_with(log, "EXT event ", "\"eventType\": \"SHUTDOWN\"", (char *)NULL);
    cr_assert_not_null(l, "%s", log);
    cr_expect(strstr(l, "\"shutdownReason\": \"spindown\"") && strstr(l, "\"deadlineMs\": "),
              "%s", l);
    /* the env is gone with its processes; the next invoke starts a new one */
    ids[0] = invoke_fx("{}");
    cr_expect_not_null(wait_line(10000, "\"eventType\": \"INVOKE\"",
                                 fmt("\"requestId\": \"%s\"", ids[0])), "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, timeout_resets_the_env_with_shutdown_timeout, .init = setup, .fini = teardown,
     .timeout = 90)
{
    struct resp r;
    const char *l;

    start_fn("normal", "    timeout_s: 1\n");
    invoke_fx("{}");
    r = post(INVOKE("fx"), NULL, "{\"sleep\":30}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled");
    cr_expect(r.body && strstr(r.body, "Task timed out after 1.00 seconds"), "%.300s", r.body);
    l = wait_line(10000, "\"eventType\": \"SHUTDOWN\"", "\"shutdownReason\": \"timeout\"");
    cr_expect_not_null(l, "SHUTDOWN (timeout); log:\n%s", server_log());
    /* the next invoke gets a fresh env, its extension registered anew */
    invoke_fx("{}");
    cr_expect_eq(count_lines_with(server_log(), "EXT registered 200"), 2, "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, extension_ignoring_shutdown_is_killed_after_the_budget, .init = setup,
     .fini = teardown, .timeout = 90)
{
    double t0;

    start_fn("stubborn", "    idle_timeout_s: 1\n");
    invoke_fx("{}");
    cr_expect_geq(count_tagged(), 2, "the runtime and the extension run");
    cr_assert_not_null(wait_line(20000, "\"eventType\": \"SHUTDOWN\"", NULL), "%s", server_log());
    t0 = now_ms();
    /* Lambda's budget with external extensions is 2 s; allow for a slow host */
    while (count_tagged() > 0 && now_ms() - t0 < 8000)
        usleep(50000);
    cr_expect_eq(count_tagged(), 0, "the stubborn extension still runs 8 s after SHUTDOWN");
    cr_expect_null(log_line_with(server_log(), "EXT bye", (char *)NULL));
    stop_server(10000);
}

Test(rapi_ext, slow_listener_costs_dropped_records_told_by_logs_dropped, .init = setup,
     .fini = teardown, .timeout = 90)
{
    const char *l;

    start_fn("slow", "    output_kb_per_s: 100000\n");
    /* ~2.2 MB of lines: far more than the 256 KiB queue while a batch waits */
    invoke_fx("{\"spam\":10000}");
    /* invocations never wait for telemetry */
    invoke_fx("{}");
    l = wait_line(20000, "EXT tel platform.logsDropped", "\"droppedRecords\": ");
    cr_expect_not_null(l, "no platform.logsDropped; log:\n%.3000s", server_log());
    cr_expect(l && strstr(l, "\"droppedBytes\": ") && strstr(l, "\"reason\": "), "%s", l);
    cr_expect_not_null(log_line_with(server_log(), "telemetry: events for a subscriber on port "
                                     "4243 dropped", (char *)NULL), "sluice logs the loss");
    stop_server(10000);
}

/* ------------------------------------------------------------------ */
/* Failing and hostile extensions                                      */

Test(rapi_ext, extension_that_never_calls_next_fails_the_init, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r = { 0 };
    json_t *j;

    start_fn("nonext", "    init_timeout_s: 2\n");
    r = post(INVOKE("fx"), NULL, "{}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%.300s", r.body);
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_assert_not_null(j, "%.300s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))),
                     "Sandbox.Timedout", "%.300s", r.body);
    cr_expect(strstr(str_or(json_string_value(json_object_get(j, "errorMessage"))), "recorder"),
              "the error names the extension: %.300s", r.body);
    json_decref(j);
    /* the runtime itself was ready: nothing ran the invocation */
    cr_expect_null(log_line_with(server_log(), "FN handling", (char *)NULL), "%s", server_log());
    stop_server(10000);
}

Test(rapi_ext, extension_crash_fails_the_init_and_resets, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r = { 0 };
    json_t *j;

    start_fn("initcrash", "    init_timeout_s: 10\n");
    r = post(INVOKE("fx"), NULL, "{}");
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%.300s", r.body);
    j = json_loadb(r.body, r.blen, 0, NULL);
    cr_assert_not_null(j, "%.300s", r.body);
    cr_expect_str_eq(str_or(json_string_value(json_object_get(j, "errorType"))),
                     "Extension.Crash", "%.300s; log:\n%s", r.body, server_log());
    cr_expect(strstr(str_or(json_string_value(json_object_get(j, "errorMessage"))),
                     "extension recorder exited"), "%.300s", r.body);
    json_decref(j);
    cr_expect_null(log_line_with(server_log(), "FN handling", (char *)NULL), "%s", server_log());
    cr_expect(count_tagged() == 0 || (usleep(3000000), count_tagged() == 0),
              "the env is gone with its runtime");
    stop_server(10000);
}

Test(rapi_ext, hostile_requests_get_lambdas_errors, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *log, *id;

    start_fn("probe", NULL);
    id = invoke_fx("{}");
    log = server_log();
    cr_expect_not_null(log_line_with(log, "EXT probe unknown-id 403",
                                     "Extension.UnknownExtensionIdentifier", (char *)NULL),
                       "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe no-id 403",
                                     "Extension.MissingExtensionIdentifier", (char *)NULL),
                       "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe bad-body 403", "InvalidRequestFormat",
                                     (char *)NULL), "%s", log);
    cr_expect_not_null(log_line_with(log, "EXT probe bad-event 403", "Extension.InvalidEventType",
                                     (char *)NULL), "%s", log);
    cr_expect_eq(count_lines_with(log, "EXT probe uri "), 5, "%s", log);
    cr_expect_eq(count_lines_with(log, "EXT probe buffering "), 4, "%s", log);
    for (const char *p = log; (p = strstr(p, "EXT probe uri ")); p++) {
        const char *eol = strchr(p, '\n');
        const char *line = fmt("%.*s", (int)(eol ? eol - p : (long)strlen(p)), p);
        cr_expect(strstr(line, " 400 ") && strstr(line, "ValidationError"), "%s", line);
    }
    for (const char *p = log; (p = strstr(p, "EXT probe buffering ")); p++) {
        const char *eol = strchr(p, '\n');
        const char *line = fmt("%.*s", (int)(eol ? eol - p : (long)strlen(p)), p);
        cr_expect(strstr(line, " 400 ") && strstr(line, "ValidationError"), "%s", line);
    }
    /* and after all that it works */
    cr_expect_not_null(wait_line(5000, "\"eventType\": \"INVOKE\"",
                                 fmt("\"requestId\": \"%s\"", id)), "%s", server_log());
    stop_server(10000);
}
