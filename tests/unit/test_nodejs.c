/* runtime nodejs end to end: functions written for Lambda's Node.js runtime,
 * unchanged (the fixtures of tests/nodejs/fixtures/, which tests/nodejs/run
 * also runs under AWS's Runtime Interface Emulator, and
 * tests/unit/fixtures/nodejs/), run by `$BUILD/sluice run` as a child
 * process with `runtime: nodejs` (runtime/nodejs/bootstrap.mjs on
 * /usr/bin/node over the Runtime API) and invoked over sluice's Invoke API.
 * Checks ES module and CommonJS callback handlers, Lambda's context and
 * environment, Node's error documents, init errors, a timeout, the console
 * lines in sluice's log, and the clear error when node is missing.
 *
 * Needs root (sandboxes with a network namespace each), $BUILD (make) and
 * Debian's nodejs. Run from the repository root. Set SLUICE_TEST_LOG=1 to
 * copy sluice's log to stderr when a test ends. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define RH_NAME "node"
#include "rapi_harness.h"


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* tests/nodejs/fixtures/<name> (the RIE cases' functions) */
static const char *node_fixture(const char *name)
{
    return fmt("%s/tests/nodejs/fixtures/%s", root_dir, name);
}

static const char *own_fixture(void)
{
    return fmt("%s/tests/unit/fixtures/nodejs", root_dir);
}

/* A runtime-nodejs function: name, code directory, handler, extra YAML
 * lines (indented 4). */
static const char *node_fn(const char *name, const char *code, const char *handler,
                           const char *extra)
{
    return fmt("  %s:\n    runtime: nodejs\n    code: %s\n    handler: %s\n%s", name, code,
               handler, extra ? extra : "");
}

static void start(const char *functions, const char *server_extra)
{
    start_server(write_config("node.yaml", fmt("functions:\n%s", functions), server_extra));
}

/* Invoke synchronously with `event`; the answer's JSON body in *j (NULL if none). */
static struct resp invoke(const char *fn, const char *event, json_t **j)
{
    struct resp r = post(fmt("/2015-03-31/functions/%s/invocations", fn), NULL, event);

    if (j)
        *j = r.body ? json_loadb(r.body, r.blen, JSON_DECODE_ANY, NULL) : NULL;
    return r;
}

/* A successful invocation's JSON body (the caller decrefs). */
static json_t *ok(const char *fn, const char *event, struct resp *out)
{
    json_t *j;
    struct resp r = invoke(fn, event, &j);

    cr_assert_eq(r.status, 200, "%s %s: status %d: %.300s; log:\n%s", fn, event, r.status,
                 r.body ? r.body : "", server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%s %s failed: %.800s; log:\n%s", fn,
                   event, r.body, server_log());
    cr_assert_not_null(j, "%s %s: body is not JSON: %.300s", fn, event, r.body);
    if (out)
        *out = r;
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    return str_or(json_string_value(json_object_get(j, key)));
}

/* A function error: 200, X-Amz-Function-Error: Unhandled, the body (JSON). */
static json_t *fn_error(const char *fn, const char *event, const char *etype, struct resp *out)
{
    json_t *j;
    struct resp r = invoke(fn, event, &j);

    cr_assert_eq(r.status, 200, "%s %s: status %d: %.300s; log:\n%s", fn, event, r.status,
                 r.body ? r.body : "", server_log());
    /* Lambda: Unhandled for every error a runtime reports, whatever the
     * runtime's Lambda-Runtime-Function-Error-Type said */
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%s %s", fn,
                     event);
    cr_assert_not_null(j, "%s %s: body is not JSON: %.300s", fn, event, r.body ? r.body : "");
    cr_expect_str_eq(jstr(j, "errorType"), etype, "%s %s: %.800s; log:\n%s", fn, event, r.body,
                     server_log());
    if (out)
        *out = r;
    return j;
}

/* "20" from /usr/bin/node --version ("v20.20.2"). */
static const char *node_major(void)
{
    FILE *p = popen("/usr/bin/node --version", "r");
    char buf[64] = "";

    cr_assert_not_null(p);
    if (!fgets(buf, sizeof(buf), p))
        buf[0] = '\0';
    pclose(p);
    cr_assert(buf[0] == 'v' && strchr(buf, '.'), "node --version: %s", buf);
    return fmt("%.*s", (int)(strchr(buf, '.') - buf - 1), buf + 1);
}

/* The sluice log line of request `rid` that holds `needle`, or NULL. */
static const char *log_line_now(const char *rid, const char *needle)
{
    const char *t = server_log(), *p = t;

    while ((p = strstr(p, needle))) {
        const char *s = p, *e = strchr(p, '\n');
        while (s > t && s[-1] != '\n')
            s--;
        if (!e)
            e = p + strlen(p);
        if (memmem(s, (size_t)(e - s), rid, strlen(rid)))
            return fmt("%.*s", (int)(e - s), s);
        p = e;
    }
    return NULL;
}

/* The same, waiting up to 5 s: sluice's log is written by a thread of its
 * own, a moment after the invocation's answer. */
static const char *log_line_with(const char *rid, const char *needle)
{
    const char *line = NULL;

    for (double end = now_ms() + 5000; !(line = log_line_now(rid, needle)) && now_ms() < end;)
        usleep(20000);
    return line;
}

/* ================================================================== */

/* The function the Lambda console creates for Node.js, as it is. */
Test(nodejs, esm_console_function_runs_unchanged, .init = setup, .fini = teardown,
     .timeout = 90)
{
    struct resp r;
    json_t *j;

    start(node_fn("hello", node_fixture("esm"), "index.handler", NULL), NULL);
    for (int i = 0; i < 2; i++) {
        j = ok("hello", "{\"key1\":\"value1\"}", &r);
        cr_expect_eq(json_integer_value(json_object_get(j, "statusCode")), 200);
        cr_expect_str_eq(jstr(j, "body"), "\"Hello from Lambda!\"");
        cr_expect_eq(json_object_size(j), 2, "%.300s", r.body);
        json_decref(j);
    }
    stop_server(5000);
}

Test(nodejs, commonjs_callback_handlers_and_nested_paths, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct resp r;
    json_t *j;

    start(fmt("%s%s%s%s", node_fn("cb", node_fixture("callback"), "index.handler", NULL),
              node_fn("cbfail", node_fixture("callback"), "index.fails", NULL),
              node_fn("succeed", node_fixture("callback"), "index.succeeds", NULL),
              node_fn("nested", own_fixture(), "sub/dir/file.handlers.main", NULL)), NULL);
    j = ok("cb", "{\"order\":7}", &r);
    cr_expect_str_eq(jstr(j, "style"), "callback");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "received"), "order")), 7,
                 "%.300s", r.body);
    cr_expect_str_eq(jstr(j, "requestId"), str_or(header(&r, "X-Amzn-RequestId")));
    json_decref(j);

    j = fn_error("cbfail", "{\"why\":\"no stock\"}", "Error", NULL);
    cr_expect_str_eq(jstr(j, "errorMessage"), "callback failed: no stock");
    json_decref(j);

    j = ok("succeed", "{}", NULL);
    cr_expect_str_eq(jstr(j, "via"), "context.succeed");
    json_decref(j);

    j = ok("nested", "{}", NULL);
    cr_expect_str_eq(jstr(j, "from"), "sub/dir/file");
    cr_expect_str_eq(jstr(j, "fn"), "nested");
    json_decref(j);
    stop_server(5000);
}

Test(nodejs, context_is_lambdas, .init = setup, .fini = teardown, .timeout = 90)
{
    struct resp r;
    json_t *j;
    long long rem;

    start(node_fn("ctx", node_fixture("context"), "index.handler",
                  "    memory_mb: 256\n    timeout_s: 7\n"),
          "  region: eu-west-3\n  account_id: \"123456789012\"\n");
    j = ok("ctx", "{}", &r);
    cr_expect_str_eq(jstr(j, "awsRequestId"), str_or(header(&r, "X-Amzn-RequestId")));
    cr_expect_eq(strlen(jstr(j, "awsRequestId")), 36);
    cr_expect_str_eq(jstr(j, "functionName"), "ctx");
    cr_expect_str_eq(jstr(j, "functionVersion"), "$LATEST");
    cr_expect_str_eq(jstr(j, "invokedFunctionArn"),
                     "arn:aws:lambda:eu-west-3:123456789012:function:ctx");
    cr_expect_str_eq(jstr(j, "memoryLimitInMB"), "256");
    cr_expect_str_eq(jstr(json_object_get(j, "types"), "memoryLimitInMB"), "string");
    cr_expect_str_eq(jstr(j, "logGroupName"), "/aws/lambda/ctx");
    cr_expect(strstr(jstr(j, "logStreamName"), "/[$LATEST]") != NULL, "%s",
              jstr(j, "logStreamName"));
    rem = json_integer_value(json_object_get(j, "remaining"));
    cr_expect(rem > 0 && rem <= 7000, "getRemainingTimeInMillis() = %lld", rem);
    cr_expect(json_is_true(json_object_get(j, "callbackWaitsForEmptyEventLoop")));
    cr_expect(json_is_null(json_object_get(j, "identity")));
    cr_expect(json_is_null(json_object_get(j, "clientContext")));
    cr_expect_str_eq(jstr(j, "nodePath"),
                     fmt("/opt/nodejs/node%s/node_modules:/opt/nodejs/node_modules:"
                         "/var/runtime/node_modules:/var/runtime:/var/task", node_major()));
    json_decref(j);
    stop_server(5000);
}

Test(nodejs, environment_and_command_line_are_lambdas, .init = setup, .fini = teardown,
     .timeout = 90)
{
    const char *keys = "{\"keys\":[\"_HANDLER\",\"LAMBDA_TASK_ROOT\",\"LAMBDA_RUNTIME_DIR\","
                       "\"AWS_EXECUTION_ENV\",\"NODE_PATH\",\"AWS_LAMBDA_RUNTIME_API\","
                       "\"SLUICE_RUNTIME_FD\",\"PYTHONPATH\",\"AWS_LAMBDA_LOG_FORMAT\","
                       "\"AWS_LAMBDA_LOG_LEVEL\",\"AWS_REGION\",\"AWS_LAMBDA_FUNCTION_NAME\","
                       "\"AWS_LAMBDA_FUNCTION_MEMORY_SIZE\",\"TZ\",\"LANG\"]}";
    json_t *j, *env, *xa;

    start(fmt("%s%s", node_fn("envfn", own_fixture(), "probe.env", "    memory_mb: 256\n"),
              node_fn("envjson", own_fixture(), "probe.env",
                      "    log_format: json\n    log_level: WARN\n"
                      "    environment: { NODE_PATH: /opt/mine }\n")),
          "  region: ap-south-2\n");
    j = ok("envfn", keys, NULL);
    env = json_object_get(j, "env");
    cr_expect_str_eq(jstr(env, "_HANDLER"), "probe.env");
    cr_expect_str_eq(jstr(env, "LAMBDA_TASK_ROOT"), "/var/task");
    cr_expect_str_eq(jstr(env, "LAMBDA_RUNTIME_DIR"), "/var/runtime");
    cr_expect_str_eq(jstr(env, "AWS_EXECUTION_ENV"), fmt("AWS_Lambda_nodejs%s.x", node_major()));
    cr_expect_str_eq(jstr(env, "NODE_PATH"),
                     fmt("/opt/nodejs/node%s/node_modules:/opt/nodejs/node_modules:"
                         "/var/runtime/node_modules:/var/runtime:/var/task", node_major()));
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_RUNTIME_API"), "127.0.0.1:9001");
    cr_expect(json_is_null(json_object_get(env, "SLUICE_RUNTIME_FD")), "no fd 3");
    cr_expect(json_is_null(json_object_get(env, "PYTHONPATH")));
    cr_expect(json_is_null(json_object_get(env, "AWS_LAMBDA_LOG_FORMAT")), "text by default");
    cr_expect_str_eq(jstr(env, "AWS_REGION"), "ap-south-2");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_FUNCTION_NAME"), "envfn");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "256");
    cr_expect_str_eq(jstr(env, "TZ"), ":UTC");
    cr_expect_str_eq(jstr(env, "LANG"), "en_US.UTF-8");
    /* Lambda's /var/runtime/bootstrap: 256 MB = 25 MB young (12 per
     * semi-space) + 231 MB old */
    xa = json_object_get(j, "execArgv");
    cr_expect_str_eq(keep(json_dumps(xa, JSON_COMPACT)),
                     "[\"--expose-gc\",\"--max-http-header-size=81920\","
                     "\"--max-semi-space-size=12\",\"--max-old-space-size=231\"]");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "argv"), 0)),
                     "/var/runtime/nodejs/bootstrap.mjs");
    cr_expect_eq(json_array_size(json_object_get(j, "argv")), 1);
    cr_expect_str_eq(jstr(j, "cwd"), "/var/task");
    json_decref(j);

    j = ok("envjson", keys, NULL);
    env = json_object_get(j, "env");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_LOG_FORMAT"), "JSON");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_LOG_LEVEL"), "WARN");
    cr_expect_str_eq(jstr(env, "NODE_PATH"), "/opt/mine", "the function's own wins");
    json_decref(j);
    stop_server(5000);
}

/* Lambda's Node runtime: {"errorType","errorMessage","trace"} as the body
 * (no stackTrace, no requestId), X-Amz-Function-Error: Unhandled. */
Test(nodejs, errors_are_node_runtimes, .init = setup, .fini = teardown, .timeout = 90)
{
    struct resp r;
    json_t *j, *trace;
    const char *rid;

    start(fmt("%s%s", node_fn("boom", node_fixture("errors"), "index.throwsError", NULL),
              node_fn("str", node_fixture("errors"), "index.throwsString", NULL)), NULL);
    j = fn_error("boom", "{\"id\":5}", "OrderNotFound", &r);
    cr_expect_str_eq(jstr(j, "errorMessage"), "order 5 not found");
    trace = json_object_get(j, "trace");
    cr_assert(json_is_array(trace) && json_array_size(trace) >= 2, "%.800s", r.body);
    cr_expect_str_eq(json_string_value(json_array_get(trace, 0)),
                     "OrderNotFound: order 5 not found");
    cr_expect(strstr(json_string_value(json_array_get(trace, 1)),
                     "(file:///var/task/index.mjs:9:9)") != NULL, "%.800s", r.body);
    cr_expect_null(json_object_get(j, "stackTrace"), "%.800s", r.body);
    cr_expect_eq(json_object_size(j), 3, "%.800s", r.body);
    rid = str_or(header(&r, "X-Amzn-RequestId"));
    /* and the runtime's ERROR line in the function's log */
    cr_expect_not_null(log_line_with(rid, fmt("%s\\tERROR\\tInvoke Error \\t{\"errorType\":"
                                               "\"OrderNotFound\"", rid)), "log:\n%s",
                       server_log());
    json_decref(j);

    j = fn_error("str", "{}", "string", &r);
    cr_expect_str_eq(r.body, "{\"errorType\":\"string\",\"errorMessage\":\"a plain string\","
                             "\"trace\":[]}");
    json_decref(j);
    /* the environment lives on after a handled error */
    j = fn_error("boom", "{\"id\":6}", "OrderNotFound", NULL);
    cr_expect_str_eq(jstr(j, "errorMessage"), "order 6 not found");
    json_decref(j);
    stop_server(5000);
}

Test(nodejs, load_failures_are_init_errors, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;
    json_t *j;

    start(fmt("%s%s%s", node_fn("nodep", node_fixture("missingdep-cjs"), "index.handler", NULL),
              node_fn("nofile", node_fixture("esm"), "nosuchfile.handler", NULL),
              node_fn("noexport", node_fixture("esm"), "index.nope", NULL)), NULL);
    j = fn_error("nodep", "{}", "Runtime.ImportModuleError", &r);
    cr_expect(strncmp(jstr(j, "errorMessage"), "Error: Cannot find module 'no-such-package'",
                      43) == 0, "%.800s", r.body);
    cr_expect(json_is_array(json_object_get(j, "trace")), "%.800s", r.body);
    json_decref(j);
    cr_expect_not_null(log_line_with("\\tundefined\\tERROR\\t", "\\tERROR\\tUncaught Exception "
                                     "\\t{\"errorType\":\"Runtime.ImportModuleError\""),
                       "log:\n%s", server_log());
    j = fn_error("nofile", "{}", "Runtime.ImportModuleError", &r);
    cr_expect_str_eq(jstr(j, "errorMessage"), "Error: Cannot find module 'nosuchfile'\n"
                     "Require stack:\n- /var/runtime/nodejs/bootstrap.mjs", "%.800s", r.body);
    json_decref(j);
    j = fn_error("noexport", "{}", "Runtime.HandlerNotFound", &r);
    cr_expect_str_eq(jstr(j, "errorMessage"), "index.nope is undefined or not exported");
    json_decref(j);
    /* a failed init is not kept: the next invoke tries again, and fails again */
    json_decref(fn_error("nodep", "{}", "Runtime.ImportModuleError", NULL));
    stop_server(5000);
}

Test(nodejs, timeout_then_a_working_invoke, .init = setup, .fini = teardown, .timeout = 90)
{
    json_t *j;

    start(node_fn("slow", own_fixture(), "probe.sleep", "    timeout_s: 1\n"), NULL);
    j = fn_error("slow", "{\"ms\":5000}", "Sandbox.Timedout", NULL);
    cr_expect(strstr(jstr(j, "errorMessage"), "Task timed out after 1.00 seconds") != NULL,
              "%s", jstr(j, "errorMessage"));
    json_decref(j);
    j = ok("slow", "{\"ms\":1}", NULL);
    cr_expect_eq(json_integer_value(json_object_get(j, "slept")), 1);
    json_decref(j);
    stop_server(5000);
}

/* console.* as Lambda's Node runtime writes it: text lines
 * "<ISO time>\t<request id>\t<LEVEL>\t<message>" (the sluice log shows
 * tabs escaped), JSON objects with log_format json. */
Test(nodejs, console_lines_carry_the_request_id, .init = setup, .fini = teardown,
     .timeout = 90)
{
    struct resp r;
    const char *rid, *line, *iso;
    json_t *j, *rec;

    start(fmt("%s%s", node_fn("logtext", node_fixture("logs"), "index.handler", NULL),
              node_fn("logjson", node_fixture("logs"), "index.handler",
                      "    log_format: json\n    log_level: WARN\n")), NULL);
    j = ok("logtext", "{\"n\":7}", &r);
    json_decref(j);
    rid = str_or(header(&r, "X-Amzn-RequestId"));
    line = log_line_with(rid, "plain message 7");
    cr_assert_not_null(line, "no console.log line; log:\n%s", server_log());
    iso = strstr(line, fmt("[%s] ", rid));
    cr_assert_not_null(iso, "%s", line);
    iso += strlen(rid) + 3;
    cr_expect(strlen(iso) > 24 && iso[4] == '-' && iso[10] == 'T' && iso[19] == '.' &&
              iso[23] == 'Z', "timestamp: %s", line);
    cr_expect_str_eq(iso + 24, fmt("\\t%s\\tINFO\\tplain message 7", rid));
    cr_expect_not_null(log_line_with(rid, fmt("\\t%s\\tWARN\\ttwo", rid)), "log:\n%s",
                       server_log());
    cr_expect_not_null(log_line_with(rid, fmt("\\t%s\\tINFO\\tan object { a: 1 }", rid)),
                       "log:\n%s", server_log());

    j = ok("logjson", "{\"n\":8}", &r);
    json_decref(j);
    rid = str_or(header(&r, "X-Amzn-RequestId"));
    line = log_line_with(rid, "\"level\":\"WARN\"");
    cr_assert_not_null(line, "no JSON WARN line; log:\n%s", server_log());
    cr_expect_null(log_line_now(rid, "plain message 8"), "INFO is below log_level WARN");
    rec = json_loads(strchr(line, '{'), JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert_not_null(rec, "not JSON: %s", line);
    cr_expect_str_eq(jstr(rec, "requestId"), rid);
    cr_expect_str_eq(jstr(rec, "message"), "two\nlines");
    cr_expect_eq(strlen(jstr(rec, "timestamp")), 24, "%s", line);
    json_decref(rec);
    stop_server(5000);
}

/* Without /usr/bin/node sluice refuses to start, naming the function and
 * the package. The test hides node under an empty file in a mount
 * namespace of its own. */
Test(nodejs, missing_node_is_a_clear_error, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *empty = fmt("%s/not-node", dir);
    double end;
    int st = 0;
    pid_t w = 0;

    put_file(empty, "", 0644);
    cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %s", strerror(errno));
    cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    cr_assert_eq(mount(empty, "/usr/bin/node", NULL, MS_BIND, NULL), 0, "bind: %s",
                 strerror(errno));
    snprintf(log_path, sizeof(log_path), "%s/sluice.log", dir);
    server = spawn_sluice(write_config("node.yaml",
                                       fmt("functions:\n%s", node_fn("f", node_fixture("esm"),
                                                                      "index.handler", NULL)),
                                       NULL), log_path);
    for (end = now_ms() + 20000; now_ms() < end && (w = waitpid(server, &st, WNOHANG)) == 0;)
        usleep(20000);
    cr_assert_eq(w, server, "sluice still runs without node; log:\n%s", server_log());
    server = -1;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) != 0, "exit status %d", st);
    cr_expect(strstr(server_log(), "sandbox: function f has runtime nodejs, but there is no "
                                   "Node.js at /usr/bin/node (not an executable file): install "
                                   "Debian's nodejs package") != NULL, "log:\n%s",
              server_log());
}
