/* runtime lambda end to end: `$BUILD/sluice run` as a child process with
 * runtimes that speak the Lambda Runtime API: bash + curl bootstraps that
 * misbehave on purpose (tests/unit/fixtures/rapi), the stock awslambdaric
 * from PyPI and a function built with aws-lambda-go (tests/deps puts both
 * under tests/.layers/), invoked over sluice's Invoke API.
 *
 * Needs root (sandboxes with a network namespace each), $BUILD (make),
 * curl and tests/deps. Run from the repository root. Set SLUICE_TEST_LOG=1
 * to copy sluice's log to stderr when a test ends. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
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

#define RH_NAME "rapi"
#include "rapi_harness.h"


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *fixture(const char *name)
{
    return fmt("%s/tests/unit/fixtures/rapi/%s", root_dir, name);
}

static const char *layer(const char *name)
{
    const char *p = fmt("%s/tests/.layers/%s", root_dir, name);

    cr_assert_eq(access(p, R_OK), 0, "%s missing: run tests/deps", p);
    return p;
}

/* A runtime-lambda function: name, handler, extra YAML lines (indented 4). */
static const char *lambda_fn(const char *name, const char *handler, const char *extra)
{
    return fmt("  %s:\n    runtime: lambda\n    handler: %s\n%s", name, handler,
               extra ? extra : "");
}

static void start(const char *functions)
{
    start_server(write_config("rapi.yaml", fmt("functions:\n%s", functions), NULL));
}

/* Invoke synchronously with `event`; the answer's JSON body in *j (NULL if none). */
static struct resp invoke(const char *fn, const char *event, json_t **j)
{
    struct resp r = post(fmt("/2015-03-31/functions/%s/invocations", fn), NULL, event);

    if (j)
        *j = r.body ? json_loadb(r.body, r.blen, 0, NULL) : NULL;
    return r;
}

static const char *jstr(json_t *j, const char *key)
{
    return str_or(json_string_value(json_object_get(j, key)));
}

/* A function error: 200, X-Amz-Function-Error: Unhandled, Lambda's body. */
static json_t *expect_fn_error(const char *fn, const char *event, const char *etype,
                               const char *msg_part)
{
    json_t *j;
    struct resp r = invoke(fn, event, &j);

    cr_assert_eq(r.status, 200, "%s %s: status %d: %.300s; log:\n%s", fn, event, r.status,
                 r.body ? r.body : "", server_log());
    cr_expect_str_eq(str_or(header(&r, "X-Amz-Function-Error")), "Unhandled", "%s %s", fn,
                     event);
    cr_assert_not_null(j, "%s %s: body is not JSON: %.300s", fn, event, r.body ? r.body : "");
    cr_expect_str_eq(jstr(j, "errorType"), etype, "%s %s: %.500s", fn, event, r.body);
    if (msg_part)
        cr_expect(strstr(jstr(j, "errorMessage"), msg_part) != NULL,
                  "%s %s: errorMessage lacks '%s': %.500s", fn, event, msg_part, r.body);
    return j;
}

/* The probe runtime's record of what the Runtime API answered it. */
static const char *report(const char *fn)
{
    struct resp r = invoke(fn, "{\"do\":\"report\"}", NULL);

    cr_assert_eq(r.status, 200, "report: %d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "report failed: %.300s", r.body);
    return fmt("%.*s", (int)r.blen, r.body);
}

/* The report has a line starting with `prefix` followed by `want`. */
static void expect_line(const char *rep, const char *prefix, const char *want)
{
    const char *p = strstr(rep, prefix);
    const char *eol;

    cr_assert_not_null(p, "no '%s' in the report:\n%s", prefix, rep);
    eol = strchr(p, '\n');
    cr_expect(strstr(fmt("%.*s", (int)(eol ? eol - p : (long)strlen(p)), p), want) != NULL,
              "'%s' should show '%s':\n%s", prefix, want, rep);
}

/* ------------------------------------------------------------------ */
/* The contract                                                        */

Test(rapi, bootstrap_gets_lambda_environment_and_no_fd3, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r;
    const char *body;

    start(lambda_fn("probe", fixture("probe.sh"), "    memory_mb: 256\n"));
    r = invoke("probe", "{\"do\":\"env\"}", NULL);
    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    body = fmt("%.*s", (int)r.blen, r.body);
    cr_expect(strstr(body, "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001\n"), "%s", body);
    cr_expect(strstr(body, "AWS_LAMBDA_FUNCTION_NAME=probe\n"), "%s", body);
    cr_expect(strstr(body, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256\n"), "%s", body);
    cr_expect(strstr(body, "LAMBDA_TASK_ROOT=/var/task\n"), "%s", body);
    cr_expect(strstr(body, "_HANDLER=probe.sh\n"), "%s", body);
    cr_expect(!strstr(body, "AWS_EXECUTION_ENV"), "provided runtimes have none: %s", body);
    cr_expect(!strstr(body, "SLUICE_RUNTIME_FD"), "%s", body);
    cr_expect(!strstr(body, "PYTHONPATH"), "%s", body);
    /* ls's own fds: 0, 1, 2 and the directory it lists (3); a leaked fd 3
     * would push that to 4 */
    cr_expect(strstr(body, "fds: 0 1 2 3 \n"), "the bootstrap must get no fd 3: %s", body);
    cr_expect(strstr(body, "Lambda-Runtime-Aws-Request-Id: "), "%s", body);
    cr_expect(strstr(body, "Lambda-Runtime-Deadline-Ms: "), "%s", body);
    cr_expect(strstr(body, "Lambda-Runtime-Invoked-Function-Arn: "
                           "arn:aws:lambda:us-east-1:000000000000:function:probe"), "%s", body);
    cr_expect(!strstr(body, "Lambda-Runtime-Client-Context"), "only when set: %s", body);
    cr_expect(!strstr(body, "Lambda-Runtime-Cognito-Identity"), "only when set: %s", body);
    cr_expect(strstr(body, "Lambda-Runtime-Trace-Id: Root=1-"), "always, as Lambda: %s", body);
    stop_server(5000);
}

Test(rapi, client_context_reaches_next, .init = setup, .fini = teardown, .timeout = 60)
{
    /* {"custom":{"k":"v"}} */
    const char *cc = "eyJjdXN0b20iOnsiayI6InYifX0=";
    struct resp r;
    const char *body;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    r = http("POST", INVOKE("probe"), fmt("X-Amz-Client-Context: %s\r\n", cc),
             "{\"do\":\"env\"}", 12);
    cr_assert_eq(r.status, 200, "%d %.300s", r.status, r.body ? r.body : "");
    body = fmt("%.*s", (int)r.blen, r.body);
    cr_expect(strstr(body, "Lambda-Runtime-Client-Context: {\"custom\":{\"k\":\"v\"}}"), "%s",
              body);
    stop_server(5000);
}

Test(rapi, echo_keeps_the_payload_and_stays_warm, .init = setup, .fini = teardown, .timeout = 60)
{
    struct resp r;
    json_t *j;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    for (int i = 0; i < 3; i++) {
        const char *ev = fmt("{\"n\":%d,\"s\":\"caf\\u00e9\"}", i);
        r = invoke("probe", ev, &j);
        cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                     server_log());
        cr_expect_eq(r.blen, strlen(ev), "%.*s", (int)r.blen, r.body);
        cr_expect(memcmp(r.body, ev, r.blen) == 0, "%.*s", (int)r.blen, r.body);
        json_decref(j);
    }
    stop_server(5000);
    /* one env served all three: only the first REPORT has an Init Duration */
    {
        const char *log = server_log(), *p = log;
        int inits = 0, reports = 0;
        while ((p = strstr(p, "REPORT RequestId"))) {
            const char *eol = strchr(p, '\n');
            reports++;
            inits += eol && memmem(p, (size_t)(eol - p), "Init Duration", 13) != NULL;
            p++;
        }
        cr_expect_eq(reports, 3, "%s", log);
        cr_expect_eq(inits, 1, "%s", log);
    }
}

Test(rapi, chunked_response_is_read, .init = setup, .fini = teardown, .timeout = 60)
{
    struct resp r;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    r = invoke("probe", "{\"do\":\"chunked\"}", NULL);
    cr_assert_eq(r.status, 200, "%d", r.status);
    cr_expect_eq(r.blen, 16, "%.*s", (int)r.blen, r.body);
    cr_expect(memcmp(r.body, "{\"chunked\":true}", 16) == 0, "%.*s", (int)r.blen, r.body);
    expect_line(report("probe"), "chunked:", "202 {\"status\":\"OK\"}");
    stop_server(5000);
}

Test(rapi, large_response_gets_100_continue, .init = setup, .fini = teardown, .timeout = 60)
{
    struct resp r;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    r = invoke("probe", "{\"do\":\"two-mb\"}", NULL);
    cr_assert_eq(r.status, 200, "%d; log:\n%s", r.status, server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.300s", r.body);
    cr_expect_eq(r.blen, 2000000);
    cr_expect(r.blen > 0 && r.body[0] == 'b' && r.body[r.blen - 1] == 'b');
    expect_line(report("probe"), "continue:", "1 < HTTP/1.1 202 Accepted");
    stop_server(5000);
}

Test(rapi, error_endpoint_is_lambdas_function_error, .init = setup, .fini = teardown,
     .timeout = 60)
{
    json_t *j;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    j = expect_fn_error("probe", "{\"do\":\"error\"}", "OrderError", "order rejected");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "stackTrace"), 0)),
                     "at line 1");
    json_decref(j);
    /* no body, or one that is not JSON: the type comes from the header */
    json_decref(expect_fn_error("probe", "{\"do\":\"error-bare\"}", "Runtime.NoBody", NULL));
    json_decref(expect_fn_error("probe", "{\"do\":\"error-garbled\"}", "Function.Garbled", NULL));
    /* the env survived all three */
    cr_expect(strstr(report("probe"), "init-response:") != NULL);
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Misbehaving runtimes get Lambda's answers                           */

Test(rapi, wrong_ids_and_states_get_lambdas_answers, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r;
    const char *rep;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    r = invoke("probe", "{\"do\":\"probe\"}", NULL);
    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_expect(r.blen == 8 && memcmp(r.body, "{\"ok\":1}", 8) == 0,
              "the first response wins: %.*s", (int)r.blen, r.body);
    rep = report("probe");
    /* a response while no invocation is pending (during init) */
    expect_line(rep, "init-response:", "400 {\"errorMessage\":\"Invalid request ID\","
                                       "\"errorType\":\"InvalidRequestID\"}");
    expect_line(rep, "bogus:", "400 {\"errorMessage\":\"Invalid request ID\","
                               "\"errorType\":\"InvalidRequestID\"}");
    expect_line(rep, "initerr:", "403 ");
    expect_line(rep, "initerr:", "\"errorType\":\"InvalidStateTransition\"");
    expect_line(rep, "method:", "405 ");
    expect_line(rep, "nopath:", "404 ");
    expect_line(rep, "first:", "202 {\"status\":\"OK\"}");
    expect_line(rep, "second:", "403 ");
    expect_line(rep, "second:", "\"errorType\":\"InvalidStateTransition\"");
    expect_line(rep, "error-after:", "403 ");
    stop_server(5000);
}

Test(rapi, malformed_http_gets_400_and_the_api_lives_on, .init = setup, .fini = teardown,
     .timeout = 90)
{
    struct resp r;
    const char *rep;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    r = invoke("probe", "{\"do\":\"malformed\"}", NULL);
    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_expect(r.blen == 20 && memcmp(r.body, "{\"malformed\":\"done\"}", 20) == 0, "%.*s",
              (int)r.blen, r.body);
    rep = report("probe");
    expect_line(rep, "garbage:", "HTTP/1.1 400");
    expect_line(rep, "bare-lf:", "HTTP/1.1 400");
    expect_line(rep, "version:", "HTTP/1.1 400");
    expect_line(rep, "two-lengths:", "HTTP/1.1 400");
    expect_line(rep, "length-and-chunked:", "HTTP/1.1 400");
    expect_line(rep, "gzip:", "HTTP/1.1 501");
    expect_line(rep, "bad-chunk:", "HTTP/1.1 400");
    expect_line(rep, "bad-length:", "HTTP/1.1 400");
    expect_line(rep, "header-name:", "HTTP/1.1 400");
    expect_line(rep, "huge-head:", "HTTP/1.1 431");
    expect_line(rep, "many-headers:", "HTTP/1.1 431");
    expect_line(rep, "ninth:", "HTTP/1.1 503");
    expect_line(rep, "after:", "HTTP/1.1 404");
    stop_server(5000);
}

Test(rapi, response_over_6mb_is_413_and_response_size_too_large, .init = setup,
     .fini = teardown, .timeout = 90)
{
    const char *rep;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    json_decref(expect_fn_error("probe", "{\"do\":\"big\"}", "Function.ResponseSizeTooLarge",
                                NULL));
    json_decref(expect_fn_error("probe", "{\"do\":\"bigchunked\"}",
                                "Function.ResponseSizeTooLarge", NULL));
    /* the same env goes on */
    rep = report("probe");
    expect_line(rep, "big:", "413 {\"errorMessage\":\"Exceeded maximum allowed payload size "
                             "(6291456 bytes).\",\"errorType\":\"RequestEntityTooLarge\"}");
    expect_line(rep, "bigchunked:", "413 ");
    expect_line(rep, "bigchunked:", "RequestEntityTooLarge");
    stop_server(5000);
}

Test(rapi, exit_mid_invocation_is_runtime_exit_error, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r;

    start(lambda_fn("probe", fixture("probe.sh"), NULL));
    json_decref(expect_fn_error("probe", "{\"do\":\"exit\"}", "Runtime.ExitError",
                                "exit status 7"));
    /* a new env takes the next one */
    r = invoke("probe", "{\"after\":1}", NULL);
    cr_expect_eq(r.status, 200);
    cr_expect(r.blen == 11 && memcmp(r.body, "{\"after\":1}", 11) == 0, "%.*s", (int)r.blen,
              r.body);
    stop_server(5000);
}

Test(rapi, timeout_kills_the_env_and_the_next_invoke_works, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct resp r;

    start(lambda_fn("probe", fixture("probe.sh"), "    timeout_s: 1\n"));
    json_decref(expect_fn_error("probe", "{\"do\":\"sleep\"}", "Sandbox.Timedout",
                                "Task timed out after 1.00 seconds"));
    /* a runtime that asks for the next event without answering this one */
    json_decref(expect_fn_error("probe", "{\"do\":\"skip\"}", "Sandbox.Timedout", NULL));
    r = invoke("probe", "{\"after\":2}", NULL);
    cr_expect_eq(r.status, 200);
    cr_expect(r.blen == 11 && memcmp(r.body, "{\"after\":2}", 11) == 0, "%.*s", (int)r.blen,
              r.body);
    stop_server(5000);
}

Test(rapi, out_of_memory_is_reported, .init = setup, .fini = teardown, .timeout = 60)
{
    start(lambda_fn("probe", fixture("probe.sh"), "    memory_mb: 128\n"));
    json_decref(expect_fn_error("probe", "{\"do\":\"oom\"}", "Runtime.OutOfMemory",
                                "memory limit of 128 MB reached"));
    stop_server(5000);
}

Test(rapi, provisioned_env_is_initialized_before_the_first_invoke, .init = setup,
     .fini = teardown, .timeout = 60)
{
    struct resp r;
    const char *body, *id, *log, *p;
    double end;

    start_server(write_config("rapi.yaml", fmt("functions:\n%slog: { debug: [sandbox] }\n",
                 lambda_fn("probe", fixture("probe.sh"), "    provisioned_concurrency: 1\n")),
                 NULL));
    /* the provisioned env called /next: it is ready before anything is invoked */
    for (end = now_ms() + 10000; now_ms() < end; usleep(50000))
        if (strstr(server_log(), "environment e1 ready in"))
            break;
    cr_assert(strstr(server_log(), "environment e1 ready in"), "%s", server_log());
    r = invoke("probe", "{\"do\":\"env\"}", NULL);
    cr_assert_eq(r.status, 200, "%d %.300s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    body = fmt("%.*s", (int)r.blen, r.body);
    cr_expect(strstr(body, "AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency\n"), "%s",
              body);
    id = header(&r, "X-Amzn-RequestId");
    cr_assert_not_null(id);
    stop_server(5000);
    log = server_log();
    p = strstr(log, fmt("REPORT RequestId: %s", id));
    cr_assert_not_null(p, "%s", log);
    cr_expect(!memmem(p, (size_t)(strchr(p, '\n') ? strchr(p, '\n') - p : (long)strlen(p)),
                      "Init Duration", 13), "a provisioned env's invoke is warm: %s", log);
}

Test(rapi, bootstrap_that_never_calls_next_times_out_its_init, .init = setup, .fini = teardown,
     .timeout = 60)
{
    start(lambda_fn("quiet", fixture("no_next.sh"), "    init_timeout_s: 1\n"));
    json_decref(expect_fn_error("quiet", "{}", "Sandbox.Timedout", "init did not finish"));
    stop_server(5000);
}

Test(rapi, init_error_is_served_to_the_first_invoke, .init = setup, .fini = teardown,
     .timeout = 60)
{
    start(fmt("%s%s", lambda_fn("initerr", fixture("init_error.sh"), NULL),
              lambda_fn("bare", fixture("init_error_bare.sh"), NULL)));
    json_decref(expect_fn_error("initerr", "{}", "Runtime.ConfigInvalid", "missing setting FOO"));
    json_decref(expect_fn_error("bare", "{}", "Runtime.BareInitError", NULL));
    stop_server(5000);
}

Test(rapi, api_is_reachable_from_its_env_only, .init = setup, .fini = teardown, .timeout = 60)
{
    struct resp r;
    json_t *j;
    const char *rep, *id;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9001) };
    int fd;

    start(fmt("%s%s", lambda_fn("a", fixture("probe.sh"), NULL),
              lambda_fn("b", fixture("probe.sh"), NULL)));
    r = invoke("a", "{\"x\":1}", &j);
    cr_assert_eq(r.status, 200);
    json_decref(j);
    id = header(&r, "X-Amzn-RequestId");
    cr_assert_not_null(id);
    /* a's env is up and listening, and the host's 127.0.0.1:9001 is not
     * a's API: answering a's finished request there would get a's 403.
     * (Something else may listen there on a shared host, e.g. a sluice
     * with the default server.listen: that is not a's API either.) */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        struct resp h;
        const char *req = fmt("POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
                              "Host: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
                              id);
        cr_assert_eq(send_all(fd, req, strlen(req)), 0);
        read_resp(fd, &h, 5000);
        cr_expect(!h.body || !strstr(h.body, "InvalidStateTransition"),
                  "the host's 127.0.0.1:9001 is a's Runtime API: %s", h.body);
    }
    close(fd);
    /* b answering a's finished request: its own API has never heard of it
     * (400), where a's would say 403 (answered already) */
    r = invoke("b", fmt("{\"do\":\"poke\",\"id\":\"%s\"}", id), NULL);
    cr_assert_eq(r.status, 200);
    rep = report("b");
    expect_line(rep, "poke:", "400 {\"errorMessage\":\"Invalid request ID\"");
    stop_server(5000);
}

/* ------------------------------------------------------------------ */
/* Stock runtime clients                                               */

static const char *py_fn(const char *name, const char *extra)
{
    return fmt("  %s:\n    runtime: provided\n    handler: %s\n    layers: [%s]\n"
               "    memory_mb: 512\n%s", name, fixture("py/bootstrap"), layer("awslambdaric"),
               extra ? extra : "");
}

Test(rapi, awslambdaric_invoke_context_error_timeout, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct resp r;
    json_t *j;
    long long rem;

    start(py_fn("py", "    timeout_s: 3\n"));
    r = invoke("py", "{\"order\":7}", &j);
    cr_assert_eq(r.status, 200, "%d %.500s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.500s; log:\n%s", r.body, server_log());
    cr_assert_not_null(j, "%.500s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "echo"), "order")), 7);
    cr_expect_str_eq(jstr(j, "aws_request_id"), str_or(header(&r, "X-Amzn-RequestId")));
    cr_expect_str_eq(jstr(j, "function_name"), "py");
    cr_expect_str_eq(jstr(j, "memory_limit_in_mb"), "512");
    cr_expect_str_eq(jstr(j, "invoked_function_arn"),
                     "arn:aws:lambda:us-east-1:000000000000:function:py");
    cr_expect_str_eq(jstr(j, "log_group_name"), "/aws/lambda/py");
    rem = json_integer_value(json_object_get(j, "remaining_ms"));
    cr_expect(rem > 0 && rem <= 3000, "get_remaining_time_in_millis() = %lld", rem);
    json_decref(j);

    j = expect_fn_error("py", "{\"do\":\"fail\",\"order\":9}", "OrderError", "order 9 rejected");
    cr_expect(json_is_array(json_object_get(j, "stackTrace")), "%s",
              json_dumps(j, JSON_COMPACT));
    json_decref(j);

    json_decref(expect_fn_error("py", "{\"do\":\"sleep\",\"s\":10}", "Sandbox.Timedout",
                                "Task timed out after 3.00 seconds"));
    r = invoke("py", "{\"order\":8}", &j);
    cr_expect_eq(r.status, 200);
    cr_expect_null(header(&r, "X-Amz-Function-Error"), "%.500s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "echo"), "order")), 8,
                 "%.500s", r.body);
    json_decref(j);
    stop_server(5000);
}

Test(rapi, aws_lambda_go_invoke_error_deadline, .init = setup, .fini = teardown, .timeout = 120)
{
    struct resp r;
    json_t *j;
    long long dl, now, rem;

    start(lambda_fn("go", fmt("%s/bootstrap", layer("go-rapi")), "    timeout_s: 5\n"));
    r = invoke("go", "{\"value\":\"v1\"}", &j);
    cr_assert_eq(r.status, 200, "%d %.500s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.500s", r.body);
    cr_assert_not_null(j, "%.500s", r.body);
    cr_expect_str_eq(jstr(j, "echo"), "v1");
    cr_expect_str_eq(jstr(j, "request_id"), str_or(header(&r, "X-Amzn-RequestId")));
    cr_expect_str_eq(jstr(j, "function_name"), "go");
    cr_expect_str_eq(jstr(j, "function_arn"), "arn:aws:lambda:us-east-1:000000000000:function:go");
    dl = json_integer_value(json_object_get(j, "deadline_ms"));
    now = json_integer_value(json_object_get(j, "now_ms"));
    rem = json_integer_value(json_object_get(j, "remaining_ms"));
    cr_expect(dl - now > 0 && dl - now <= 5000, "deadline %lld ms after now", dl - now);
    cr_expect(rem > 0 && rem <= 5000, "remaining %lld ms", rem);
    json_decref(j);

    json_decref(expect_fn_error("go", "{\"do\":\"fail\",\"value\":\"7\"}", "badOrder",
                                "bad order 7"));
    json_decref(expect_fn_error("go", "{\"do\":\"plain\"}", "errorString", "plain failure"));
    json_decref(expect_fn_error("go", "{\"do\":\"exit\"}", "Runtime.ExitError", "exit status 3"));
    r = invoke("go", "{\"value\":\"again\"}", &j);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(jstr(j, "echo"), "again");
    json_decref(j);
    stop_server(5000);
}

/* tests/handlers/rapi_rust: lambda_runtime 1.5 from crates.io (built by
 * tests/deps), lambda_runtime::run as on provided.al2023 */
Test(rapi, rust_lambda_runtime_invoke_error_deadline, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct resp r;
    json_t *j;
    long long dl, now;

    start(lambda_fn("rs", fmt("%s/bootstrap", layer("rust-rapi")),
                    "    timeout_s: 4\n    memory_mb: 256\n"));
    r = invoke("rs", "{\"value\":\"r1\"}", &j);
    cr_assert_eq(r.status, 200, "%d %.500s; log:\n%s", r.status, r.body ? r.body : "",
                 server_log());
    cr_assert_null(header(&r, "X-Amz-Function-Error"), "%.500s; log:\n%s", r.body,
                   server_log());
    cr_assert_not_null(j, "%.500s", r.body);
    cr_expect_str_eq(jstr(j, "echo"), "r1");
    cr_expect_str_eq(jstr(j, "request_id"), str_or(header(&r, "X-Amzn-RequestId")));
    cr_expect_str_eq(jstr(j, "function_name"), "rs");
    cr_expect_str_eq(jstr(j, "function_arn"), "arn:aws:lambda:us-east-1:000000000000:function:rs");
    cr_expect_eq(json_integer_value(json_object_get(j, "memory_mb")), 256, "%.500s", r.body);
    dl = json_integer_value(json_object_get(j, "deadline_ms"));
    now = json_integer_value(json_object_get(j, "now_ms"));
    cr_expect(dl - now > 0 && dl - now <= 4000, "deadline %lld ms after now: %.500s", dl - now,
              r.body);
    json_decref(j);

    /* Result<_, BadOrder> with From<BadOrder> for Diagnostic: POST .../error */
    json_decref(expect_fn_error("rs", "{\"do\":\"fail\",\"value\":\"7\"}", "BadOrder",
                                "bad order 7"));
    /* the same environment answers the next one */
    r = invoke("rs", "{\"value\":\"again\"}", &j);
    cr_expect_eq(r.status, 200);
    cr_expect_null(header(&r, "X-Amz-Function-Error"), "%.500s", r.body);
    cr_expect_str_eq(jstr(j, "echo"), "again", "%.500s", r.body);
    json_decref(j);
    stop_server(5000);
}

Test(rapi, awslambdaric_async_failure_reaches_the_dlq, .init = setup, .fini = teardown,
     .timeout = 120)
{
    const char *dlq = fmt("%s/dlq.jsonl", dir);
    json_t *rec = NULL, *rc, *rp;
    struct resp r;
    double end;

    start_server(write_config("rapi.yaml", fmt("functions:\n%s"
                 "sinks:\n  dlq: { type: file, path: %s }\n",
                 py_fn("pyasync", "    async: { maximum_retry_attempts: 1, backoff_initial_ms: 10,"
                                  " backoff_max_ms: 20, on_failure: dlq }\n"), dlq), NULL));
    r = http("POST", INVOKE("pyasync"), "X-Amz-Invocation-Type: Event\r\n",
             "{\"do\":\"async-fail\",\"order\":5}", 29);
    cr_assert_eq(r.status, 202, "%d %.300s", r.status, r.body ? r.body : "");
    for (end = now_ms() + 60000; now_ms() < end && !rec; usleep(100000)) {
        char *text = slurp(dlq);
        if (text[0] == '{')
            rec = json_loads(text, JSON_DISABLE_EOF_CHECK, NULL);
    }
    cr_assert_not_null(rec, "nothing reached the on_failure sink; log:\n%s", server_log());
    rc = json_object_get(rec, "requestContext");
    cr_expect_str_eq(jstr(rc, "condition"), "RetriesExhausted");
    cr_expect_eq(json_integer_value(json_object_get(rc, "approximateInvokeCount")), 2);
    cr_expect_str_eq(jstr(rc, "requestId"), str_or(header(&r, "X-Amzn-RequestId")));
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(rec, "requestPayload"),
                                                    "order")), 5);
    cr_expect_str_eq(jstr(json_object_get(rec, "responseContext"), "functionError"), "Unhandled");
    rp = json_object_get(rec, "responsePayload");
    cr_expect_str_eq(jstr(rp, "errorType"), "OrderError");
    cr_expect_str_eq(jstr(rp, "errorMessage"), "async order rejected");
    cr_expect(json_array_size(json_object_get(rp, "stackTrace")) > 0, "awslambdaric's traceback");
    json_decref(rec);
    stop_server(5000);
}
