/* runtime python, end to end: a Lambda function written for Lambda's Python
 * runtime (tests/unit/fixtures/pyfn, `handler: app.lambda_handler`, no
 * wrapper) runs in real strict sandboxes through the library (config from
 * YAML text, sl_functions_new, pools, the event loop) and through
 * `sluice invoke --local`. Checks Lambda's context object, the root
 * logger's lines (text and JSON), the environment, sys.path with the code
 * directory and a layer, the import errors, error responses and SnapStart
 * with snapshot_restore_py's hooks.
 *
 * Needs root (namespaces, cgroups) and $BUILD. Run from the repo root. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "harness.h"
#include "sluice/config.h"
#include "sluice/env.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/pollers.h"

#define PYFN "tests/unit/fixtures/pyfn"

static char root_dir[PATH_MAX];
static char data_dir[256];           /* /tmp/sluice-test-py-<pid> */
static char layer_dir[320];          /* a layer made per test under data_dir */
static char pyver[16];               /* "3.11" */
static struct event_base *base;
static struct sl_config *conf;
static struct sl_functions *fns;
static int log_fd = -1;
static const char *more_layers = "";  /* ", /path" after the test's layer */

static char *allocs[256];
static int nallocs;
static json_t *jsons[64];
static int njsons;

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

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

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void rm_rf(const char *dir)
{
    char cmd[512];

    if (strncmp(dir, "/tmp/sluice-test-py-", 20) != 0)
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        /* leftovers in /tmp are harmless */
    }
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");

    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    chmod(path, 0644);
}

static void mkdirs(const char *path)
{
    char *cmd = xasprintf("mkdir -p -m 0755 '%s'", path);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* A layer as Lambda layers are built for Python: python/ and
 * python/lib/pythonX.Y/site-packages. */
static void make_layer(void)
{
    char *py = xasprintf("%s/python", layer_dir);
    char *site = xasprintf("%s/lib/python%s/site-packages", py, pyver);

    mkdirs(site);
    put_file(xasprintf("%s/layermod.py", py), "NAME = 'layermod from the layer'\n");
    put_file(xasprintf("%s/shadow.py", py), "NAME = 'shadow from python/'\n");
    put_file(xasprintf("%s/codefirst.py", py), "NAME = 'codefirst from the layer'\n");
    put_file(xasprintf("%s/sitemod.py", site), "NAME = 'sitemod from site-packages'\n");
    put_file(xasprintf("%s/shadow.py", site), "NAME = 'shadow from site-packages'\n");
    cr_assert_eq(system(xasprintf("chmod -R a+rX '%s'", layer_dir)), 0);
}

static void setup(void)
{
    char rt[PATH_MAX + 16], init[PATH_MAX + 64], link[64];
    ssize_t n;

    cr_assert_not_null(getcwd(root_dir, sizeof(root_dir)));
    snprintf(rt, sizeof(rt), "%s/runtime", root_dir);
    cr_assert_eq(access(rt, R_OK), 0, "run the tests from the repository root (no %s)", rt);
    setenv("SLUICE_RUNTIME_DIR", rt, 1);
    setenv("SLUICE_INIT", th_build_path(init, sizeof(init), root_dir, "sluice-init"), 1);
    snprintf(data_dir, sizeof(data_dir), "/tmp/sluice-test-py-%d", (int)getpid());
    rm_rf(data_dir);
    cr_assert_eq(mkdir(data_dir, 0755), 0, "mkdir %s: %s", data_dir, strerror(errno));
    chmod(data_dir, 0755);
    n = readlink("/usr/bin/python3", link, sizeof(link) - 1);
    link[n > 0 ? n : 0] = '\0';
    snprintf(pyver, sizeof(pyver), "%.8s", strncmp(link, "python", 6) == 0 ? link + 6 : "3.11");
    snprintf(layer_dir, sizeof(layer_dir), "%s/layer", data_dir);
    make_layer();

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

static void teardown(void)
{
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

static const char *log_text(void)
{
    static char buf[1 << 20];
    ssize_t n = log_fd >= 0 ? pread(log_fd, buf, sizeof(buf) - 1, 0) : 0;

    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static const char *log_tail(size_t n)
{
    const char *t = log_text();
    size_t len = strlen(t);

    return len > n ? t + len - n : t;
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

/* A runtime python function over the fixture code and the test's layer;
 * `extra` holds more keys, each line indented by four spaces. */
static char *py_fn(const char *name, const char *handler, const char *extra)
{
    return xasprintf("  %s:\n"
                     "    runtime: python\n"
                     "    code: %s/%s\n"
                     "    handler: %s\n"
                     "    layers: [%s%s]\n"
                     "    memory_mb: 1769\n"
                     "    timeout_s: 20\n"
                     "%s",
                     name, root_dir, PYFN, handler, layer_dir, more_layers, extra ? extra : "");
}

static char *config_text(const char *functions, const char *server)
{
    return xasprintf("functions:\n%sserver:\n  data_dir: %s/data\n%s", functions, data_dir,
                     server ? server : "");
}

static void start_server(const char *functions, const char *server)
{
    char *text = config_text(functions, server), *dtext = NULL;
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

static struct sl_fnpool *pool_of(const char *name)
{
    struct sl_fnpool *p = sl_functions_pool(fns, name);
    cr_assert_not_null(p, "no pool for %s", name);
    return p;
}

/* ------------------------------------------------------------------ */
/* Invocations                                                         */

struct call {
    int     done;
    bool    ok;
    char   *event;
    char   *client_context;
    char   *payload;
    json_t *json;
    json_t *stack;
    char    etype[128];
    char    emsg[1024];
    char    request_id[40];
};

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    struct call *c = arg;

    c->done++;
    c->ok = r->ok;
    snprintf(c->request_id, sizeof(c->request_id), "%s", r->request_id ? r->request_id : "");
    snprintf(c->etype, sizeof(c->etype), "%s", r->error_type ? r->error_type : "");
    snprintf(c->emsg, sizeof(c->emsg), "%s", r->error_message ? r->error_message : "");
    if (r->stack && njsons < (int)(sizeof(jsons) / sizeof(jsons[0])))
        c->stack = jsons[njsons++] = json_incref(r->stack);
    if (r->ok && r->payload) {
        c->payload = strndup(r->payload, r->payload_len);
        c->json = json_loadb(r->payload, r->payload_len, JSON_DECODE_ANY, NULL);
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

static bool wait_until(int *flag, int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, noop_cb, NULL);
    struct timeval tv = { 0, 10000 };
    double end = now_ms() + timeout_ms;

    event_add(tick, &tv);
    while (!*flag && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *flag != 0;
}

static void invoke_cc(struct sl_fnpool *pool, const char *event, const char *cc, struct call *c)
{
    struct sl_invoke_req req;
    int rc;

    memset(c, 0, sizeof(*c));
    c->event = xasprintf("%s", event);
    c->client_context = cc ? xasprintf("%s", cc) : NULL;
    memset(&req, 0, sizeof(req));
    req.event = c->event;
    req.event_len = strlen(c->event);
    req.client_context = c->client_context;
    rc = sl_fnpool_invoke(pool, &req, on_result, c);
    cr_assert_eq(rc, 0, "sl_fnpool_invoke(%s) = %d", event, rc);
}

static void call(struct sl_fnpool *pool, const char *event, struct call *c)
{
    invoke_cc(pool, event, NULL, c);
    cr_assert(wait_until(&c->done, 30000), "no result for %s; log:\n%s", event, log_tail(3000));
}

static json_t *ok_json(const struct call *c)
{
    cr_assert(c->ok, "invocation failed: %s: %s; log:\n%s", c->etype, c->emsg, log_tail(3000));
    cr_assert_not_null(c->json, "payload is not JSON: %.200s", c->payload ? c->payload : "");
    return c->json;
}

static json_t *jget(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert_not_null(v, "no key '%s'", key);
    return v;
}

static const char *jstr(const json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    cr_assert(json_is_string(v), "'%s' is not a string", key);
    return json_string_value(v);
}

/* ================================================================== */

Test(python, handler_by_name_with_code_and_layer_deps, .init = setup, .fini = teardown,
     .timeout = 90)
{
    static struct call a, b;
    json_t *j, *deps, *path;
    const char *want[] = { "helperdep from the code directory", "layermod from the layer",
                           "sitemod from site-packages", "shadow from site-packages",
                           "codefirst from the code directory" };
    char *site = xasprintf("/opt/python/lib/python%s/site-packages", pyver);

    start_server(xasprintf("%s%s", py_fn("py", "app.lambda_handler", NULL),
                           py_fn("pkg", "app_pkg/sub.handler", NULL)), NULL);
    call(pool_of("py"), "{\"action\":\"env\"}", &a);
    j = ok_json(&a);
    deps = jget(j, "deps");
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_expect_str_eq(json_string_value(json_array_get(deps, i)), want[i]);
    /* Lambda's order: the task root, the layer's site-packages, python/ */
    path = jget(j, "sys_path");
    cr_expect_str_eq(json_string_value(json_array_get(path, 0)), "/var/task");
    cr_expect_str_eq(json_string_value(json_array_get(path, 1)), site);
    cr_expect_str_eq(json_string_value(json_array_get(path, 2)), "/opt/python");

    call(pool_of("pkg"), "{}", &b);
    cr_expect_str_eq(jstr(ok_json(&b), "module"), "app_pkg.sub");
}

Test(python, context_is_lambdas, .init = setup, .fini = teardown, .timeout = 90)
{
    static struct call a, b;
    json_t *j;
    const char *cc = "{\"custom\":{\"tenant\":\"t1\"},\"env\":{\"locale\":\"en\"},"
                     "\"client\":{\"installation_id\":\"i-9\",\"app_title\":\"shop\"}}";

    start_server(py_fn("ctx", "app.lambda_handler", NULL), "  region: eu-west-3\n"
                 "  account_id: \"123456789012\"\n");
    invoke_cc(pool_of("ctx"), "{\"action\":\"context\"}", NULL, &a);
    cr_assert(wait_until(&a.done, 30000), "no result; log:\n%s", log_tail(3000));
    j = ok_json(&a);
    cr_expect_str_eq(jstr(j, "aws_request_id"), a.request_id);
    cr_expect_str_eq(jstr(j, "function_name"), "ctx");
    cr_expect_str_eq(jstr(j, "function_version"), "$LATEST");
    cr_expect_str_eq(jstr(j, "invoked_function_arn"),
                     "arn:aws:lambda:eu-west-3:123456789012:function:ctx");
    cr_expect_str_eq(jstr(j, "memory_limit_in_mb"), "1769");
    cr_expect_str_eq(jstr(j, "memory_type"), "str");
    cr_expect_str_eq(jstr(j, "log_group_name"), "/aws/lambda/ctx");
    cr_expect(strstr(jstr(j, "log_stream_name"), "/[$LATEST]") != NULL, "log stream %s",
              jstr(j, "log_stream_name"));
    cr_expect_eq(strlen(jstr(j, "log_stream_name")), 10 + 10 + 32, "log stream %s",
                 jstr(j, "log_stream_name"));
    cr_expect_str_eq(jstr(j, "identity_type"), "CognitoIdentity");
    cr_expect(json_is_null(jget(j, "cognito_identity_id")));
    cr_expect(json_is_null(jget(j, "cognito_identity_pool_id")));
    cr_expect_str_eq(jstr(j, "client_context_type"), "NoneType");
    cr_expect(json_is_null(jget(j, "tenant_id")));
    cr_expect(json_integer_value(jget(j, "remaining")) > 0 &&
              json_integer_value(jget(j, "remaining")) <= 20000);
    cr_expect(json_is_true(jget(j, "has_log")));

    invoke_cc(pool_of("ctx"), "{\"action\":\"context\"}", cc, &b);
    cr_assert(wait_until(&b.done, 30000), "no result; log:\n%s", log_tail(3000));
    j = ok_json(&b);
    cr_expect_str_eq(jstr(j, "client_context_type"), "ClientContext");
    cr_expect_str_eq(jstr(j, "client_type"), "Client");
    cr_expect_str_eq(jstr(jget(j, "custom"), "tenant"), "t1");
    cr_expect_str_eq(jstr(jget(j, "env"), "locale"), "en");
    cr_expect_str_eq(jstr(j, "installation_id"), "i-9");
    cr_expect_str_eq(jstr(j, "app_title"), "shop");
}

Test(python, environment_is_lambdas, .init = setup, .fini = teardown, .timeout = 90)
{
    static struct call a;
    json_t *env;
    char *ev = xasprintf("{\"action\":\"env\",\"keys\":[\"_HANDLER\",\"AWS_EXECUTION_ENV\","
                         "\"AWS_LAMBDA_LOG_GROUP_NAME\",\"AWS_LAMBDA_LOG_STREAM_NAME\","
                         "\"LD_LIBRARY_PATH\",\"PYTHONPATH\",\"LANG\",\"AWS_REGION\","
                         "\"AWS_DEFAULT_REGION\",\"AWS_LAMBDA_FUNCTION_VERSION\","
                         "\"AWS_LAMBDA_FUNCTION_NAME\",\"AWS_LAMBDA_FUNCTION_MEMORY_SIZE\","
                         "\"LAMBDA_TASK_ROOT\",\"TZ\",\"AWS_ACCESS_KEY_ID\","
                         "\"AWS_SECRET_ACCESS_KEY\",\"AWS_SESSION_TOKEN\","
                         "\"AWS_LAMBDA_LOG_FORMAT\"]}");

    start_server(py_fn("envfn", "app.lambda_handler",
                       "    environment:\n"
                       "      AWS_ACCESS_KEY_ID: AKIDEXAMPLE\n"
                       "      AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI\n"
                       "      AWS_SESSION_TOKEN: tok\n"),
                 "  region: ap-south-2\n");
    call(pool_of("envfn"), ev, &a);
    env = jget(ok_json(&a), "env");
    cr_expect_str_eq(jstr(env, "_HANDLER"), "app.lambda_handler");
    cr_expect_str_eq(jstr(env, "AWS_EXECUTION_ENV"), xasprintf("AWS_Lambda_python%s", pyver));
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_LOG_GROUP_NAME"), "/aws/lambda/envfn");
    cr_expect(strstr(jstr(env, "AWS_LAMBDA_LOG_STREAM_NAME"), "/[$LATEST]") != NULL);
    cr_expect_str_eq(jstr(env, "LD_LIBRARY_PATH"),
                     "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:"
                     "/opt/lib");
    cr_expect_str_eq(jstr(env, "PYTHONPATH"),
                     xasprintf("/opt/python/lib/python%s/site-packages:/opt/python:"
                               "/var/runtime/python", pyver));
    cr_expect_str_eq(jstr(env, "LANG"), "en_US.UTF-8");
    cr_expect_str_eq(jstr(env, "AWS_REGION"), "ap-south-2");
    cr_expect_str_eq(jstr(env, "AWS_DEFAULT_REGION"), "ap-south-2");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_FUNCTION_VERSION"), "$LATEST");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_FUNCTION_NAME"), "envfn");
    cr_expect_str_eq(jstr(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "1769");
    cr_expect_str_eq(jstr(env, "LAMBDA_TASK_ROOT"), "/var/task");
    cr_expect_str_eq(jstr(env, "TZ"), ":UTC");
    cr_expect_str_eq(jstr(env, "AWS_ACCESS_KEY_ID"), "AKIDEXAMPLE");
    cr_expect_str_eq(jstr(env, "AWS_SECRET_ACCESS_KEY"), "wJalrXUtnFEMI");
    cr_expect_str_eq(jstr(env, "AWS_SESSION_TOKEN"), "tok");
    cr_expect(json_is_null(jget(env, "AWS_LAMBDA_LOG_FORMAT")), "text is the default");
}

/* The log line of request `rid` that holds `needle`, or NULL. */
static const char *log_line_with(const char *rid, const char *needle)
{
    const char *t = log_text(), *p = t;

    while ((p = strstr(p, needle))) {
        const char *start = p, *end = strchr(p, '\n');
        while (start > t && start[-1] != '\n')
            start--;
        if (!end)
            end = p + strlen(p);
        if (memmem(start, (size_t)(end - start), rid, strlen(rid)))
            return xasprintf("%.*s", (int)(end - start), start);
        p = end;
    }
    return NULL;
}

Test(python, logging_lines_are_lambdas_text_and_json, .init = setup, .fini = teardown,
     .timeout = 90)
{
    static struct call a, b, c;
    const char *line, *tab;
    json_t *j;

    start_server(xasprintf("%s%s", py_fn("logtext", "app.lambda_handler", NULL),
                           py_fn("logjson", "app.lambda_handler", "    log_format: json\n")),
                 NULL);
    /* as in Lambda the root logger stays at WARNING until the code says INFO */
    call(pool_of("logtext"), "{\"action\":\"log\"}", &a);
    ok_json(&a);
    cr_expect_null(log_line_with(a.request_id, "hello from logging"), "%s", log_tail(2000));
    call(pool_of("logtext"), "{\"action\":\"log\",\"set_level\":true}", &b);
    ok_json(&b);
    /* [INFO]\t2026-01-02T03:04:05.678Z\t<request id>\thello from logging
     * (the sluice log shows the tabs escaped) */
    line = log_line_with(b.request_id, "hello from logging");
    cr_assert_not_null(line, "no logging line; log:\n%s", log_tail(3000));
    tab = strstr(line, "[INFO]\\t");
    cr_assert_not_null(tab, "%s", line);
    tab += strlen("[INFO]\\t");
    cr_expect(strlen(tab) > 24 && tab[4] == '-' && tab[10] == 'T' && tab[19] == '.' &&
              tab[23] == 'Z' && strncmp(tab + 24, "\\t", 2) == 0, "timestamp: %s", line);
    cr_expect(strstr(line, xasprintf("Z\\t%s\\thello from logging", b.request_id)) != NULL,
              "%s", line);
    cr_expect_null(log_line_with(b.request_id, "not shown"));
    cr_expect_not_null(log_line_with(b.request_id, "from context.log"), "%s", log_tail(2000));

    /* JSON: INFO by default (AWS_LAMBDA_LOG_LEVEL), one object a line */
    call(pool_of("logjson"), "{\"action\":\"log\"}", &c);
    ok_json(&c);
    line = log_line_with(c.request_id, "hello from logging");
    cr_assert_not_null(line, "no JSON logging line; log:\n%s", log_tail(3000));
    line = strchr(line, '{');
    cr_assert_not_null(line);
    j = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert_not_null(j, "not JSON: %s", line);
    jsons[njsons++] = j;
    cr_expect_str_eq(jstr(j, "level"), "INFO");
    cr_expect_str_eq(jstr(j, "message"), "hello from logging");
    cr_expect_str_eq(jstr(j, "logger"), "root");
    cr_expect_str_eq(jstr(j, "requestId"), c.request_id);
    cr_expect_eq(strlen(jstr(j, "timestamp")), 20, "%s", jstr(j, "timestamp"));
}

Test(python, import_errors_are_lambdas, .init = setup, .fini = teardown, .timeout = 120)
{
    static struct call a, b, c, d, e;
    const char *fns_yaml = xasprintf("%s%s%s%s%s",
                                     py_fn("nomod", "nosuchmodule.handler", NULL),
                                     py_fn("depmissing", "imports_missing.handler", NULL),
                                     py_fn("nofn", "app.missing_fn", NULL),
                                     py_fn("syntax", "syntax_bad.handler", NULL),
                                     py_fn("raises", "init_raises.handler", NULL));

    start_server(fns_yaml, NULL);
    call(pool_of("nomod"), "{}", &a);
    cr_expect_str_eq(a.etype, "Runtime.ImportModuleError");
    cr_expect_str_eq(a.emsg, "Unable to import module 'nosuchmodule': No module named "
                             "'nosuchmodule'");
    call(pool_of("depmissing"), "{}", &b);
    cr_expect_str_eq(b.etype, "Runtime.ImportModuleError");
    cr_expect_str_eq(b.emsg, "Unable to import module 'imports_missing': No module named "
                             "'nosuchdep_xyz'");
    call(pool_of("nofn"), "{}", &c);
    cr_expect_str_eq(c.etype, "Runtime.HandlerNotFound");
    cr_expect_str_eq(c.emsg, "Handler 'missing_fn' missing on module 'app'");
    call(pool_of("syntax"), "{}", &d);
    cr_expect_str_eq(d.etype, "Runtime.UserCodeSyntaxError");
    cr_expect(strncmp(d.emsg, "Syntax error in module 'syntax_bad': ", 37) == 0 &&
              strstr(d.emsg, "syntax_bad.py, line 1") != NULL, "%s", d.emsg);
    cr_expect(json_is_array(d.stack) && json_array_size(d.stack) == 1 &&
              strstr(json_string_value(json_array_get(d.stack, 0)),
                     "File \"/var/task/syntax_bad.py\" Line 1") != NULL,
              "stack: %s", d.stack ? json_dumps(d.stack, 0) : "none");
    call(pool_of("raises"), "{}", &e);
    cr_expect_str_eq(e.etype, "RuntimeError");
    cr_expect_str_eq(e.emsg, "cannot reach the database");
    /* Lambda's runtime says so in the function's log too */
    cr_expect(strstr(log_text(), "[ERROR] Runtime.ImportModuleError: Unable to import module "
                                 "'nosuchmodule'") != NULL, "%s", log_tail(3000));
}

/* `sluice invoke --local`: stdout is the response, the error object of a
 * failed invocation as Lambda's Python runtime makes it. */
static int invoke_local(const char *cfg, const char *fn, const char *payload, char **out)
{
    char path[PATH_MAX + 64];
    char *cmd = xasprintf("'%s' invoke --local '%s' '%s' --payload '%s' 2>'%s/stderr'",
                          th_build_path(path, sizeof(path), root_dir, "sluice"), cfg, fn,
                          payload, data_dir);
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
        allocs[nallocs++] = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(python, error_response_has_request_id_and_stack, .init = setup, .fini = teardown,
     .timeout = 90)
{
    char *cfg = xasprintf("%s/err.yaml", data_dir), *out;
    json_t *j, *st;
    const char *first;
    int code;

    put_file(cfg, config_text(py_fn("boom", "app.lambda_handler", NULL), NULL));
    code = invoke_local(cfg, "boom", "{\"action\":\"raise\",\"order\":7}", &out);
    cr_expect_eq(code, 1, "exit %d", code);
    j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "stdout is not JSON: %s", out);
    jsons[njsons++] = j;
    cr_expect_str_eq(jstr(j, "errorType"), "ValueError");
    cr_expect_str_eq(jstr(j, "errorMessage"), "bad order 7");
    cr_expect_eq(strlen(jstr(j, "requestId")), 36, "requestId: %s", out);
    st = jget(j, "stackTrace");
    cr_assert(json_is_array(st) && json_array_size(st) == 1, "stackTrace: %s", out);
    /* traceback.format_list's form, the handler's frame first */
    first = json_string_value(json_array_get(st, 0));
    cr_expect(strncmp(first, "  File \"/var/task/app.py\", line ", 32) == 0 &&
              strstr(first, ", in lambda_handler\n    raise ValueError(") != NULL,
              "frame: %s", first);
    /* and Lambda's error line in the function's log: one line, \r between
     * the traceback's lines (shown escaped), indentation as U+00A0 */
    {
        FILE *f = fopen(xasprintf("%s/stderr", data_dir), "re");
        char buf[16384];
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

        if (f)
            fclose(f);
        buf[n] = '\0';
        cr_expect(strstr(buf, "[ERROR] ValueError: bad order 7\\rTraceback (most recent call "
                              "last):\\r\xc2\xa0\xc2\xa0" "File \"/var/task/app.py\"") != NULL,
                  "log: %s", buf);
    }
}

Test(python, snapstart_runs_snapshot_restore_py_hooks, .init = setup, .fini = teardown,
     .timeout = 90)
{
    static struct call a, b;
    json_t *ja, *jb, *want = json_pack("[ss]", "second", "first");

    jsons[njsons++] = want;
    start_server(py_fn("snap", "app.lambda_handler", "    snapstart: true\n"), NULL);
    invoke_cc(pool_of("snap"), "{\"action\":\"hooks\"}", NULL, &a);
    invoke_cc(pool_of("snap"), "{\"action\":\"hooks\"}", NULL, &b);
    cr_assert(wait_until(&a.done, 30000), "no result; log:\n%s", log_tail(3000));
    cr_assert(wait_until(&b.done, 30000), "no result; log:\n%s", log_tail(3000));
    ja = ok_json(&a);
    jb = ok_json(&b);
    cr_expect_eq(sl_fnpool_envs(pool_of("snap")), 2, "two restored environments expected");
    cr_expect_neq(json_integer_value(jget(ja, "pid")), json_integer_value(jget(jb, "pid")));
    /* before-snapshot: once, in the template, the last registered first */
    cr_expect(json_equal(jget(ja, "before"), want), "%s", a.payload);
    cr_expect(json_equal(jget(jb, "before"), want), "%s", b.payload);
    /* after-restore: once in each restored environment */
    cr_expect_eq(json_integer_value(jget(ja, "after")), 1, "%s", a.payload);
    cr_expect_eq(json_integer_value(jget(jb, "after")), 1, "%s", b.payload);
    cr_expect_str_eq(jstr(ja, "init_type"), "snap-start");
}

/* A relaxed sandbox runs the same bootstrap over the host's paths. */
Test(python, relaxed_sandbox_loads_by_name, .init = setup, .fini = teardown, .timeout = 90)
{
    static struct call a;
    json_t *j;

    start_server(py_fn("relaxed", "app_pkg/sub.handler", "    sandbox: relaxed\n"), NULL);
    call(pool_of("relaxed"), "{}", &a);
    j = ok_json(&a);
    cr_expect_str_eq(jstr(j, "module"), "app_pkg.sub");
}

/* boto3 (from the Powertools layer tests/deps builds) finds the region and
 * the credentials a function's environment gives it, as on Lambda. */
Test(python, boto3_sees_region_and_credentials, .init = setup, .fini = teardown, .timeout = 120)
{
    static struct call a;
    char *pt = xasprintf("%s/tests/.layers/powertools", root_dir);
    json_t *j;

    cr_assert_eq(access(xasprintf("%s/.done", pt), F_OK), 0, "no %s: run tests/deps", pt);
    more_layers = xasprintf(", %s", pt);
    start_server(py_fn("aws", "app.lambda_handler",
                       "    environment:\n"
                       "      AWS_ACCESS_KEY_ID: AKIDEXAMPLE\n"
                       "      AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI\n"
                       "      AWS_SESSION_TOKEN: tok\n"),
                 "  region: eu-central-2\n");
    call(pool_of("aws"), "{\"action\":\"boto3\"}", &a);
    j = ok_json(&a);
    cr_expect_str_eq(jstr(j, "region"), "eu-central-2");
    cr_expect_str_eq(jstr(j, "access_key"), "AKIDEXAMPLE");
    cr_expect_str_eq(jstr(j, "secret_key"), "wJalrXUtnFEMI");
    cr_expect_str_eq(jstr(j, "token"), "tok");
    cr_expect_str_eq(jstr(j, "method"), "env");
    cr_expect_str_eq(jstr(j, "sqs_endpoint"), "https://sqs.eu-central-2.amazonaws.com");
}
