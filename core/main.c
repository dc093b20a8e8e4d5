/* sluice command line: run, lint, version, help, config-docs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "sluice/api.h"
#include "sluice/client.h"
#include "sluice/config.h"
#include "sluice/dispatch.h"
#include "sluice/dlq.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pollers.h"
#include "sluice/runtime.h"

#ifndef SL_VERSION
#define SL_VERSION "0.0.0-dev"
#endif

/* Exit codes, documented in `sluice help`. */
#define EXIT_OK     0
#define EXIT_FAIL   1   /* invalid configuration, or the service failed */
#define EXIT_USAGE  2   /* bad command line */

struct command {
    const char *name;
    const char *args;
    const char *summary;
    const char *help;
    int (*fn)(int argc, char **argv);
};

static const struct command *find_command(const char *name);
static void usage(FILE *out);

/* ------------------------------------------------------------------ */

static int load(const char *path, struct sl_config **c)
{
    struct sl_diags d;
    int rc;

    sl_diags_init(&d, path);
    rc = sl_config_load(path, c, &d);
    if (rc != 0) {
        sl_diags_print(&d, stderr);
        if (d.n > 1)
            fprintf(stderr, "%s: %zu errors\n", path, d.n);
    }
    sl_diags_destroy(&d);
    return rc;
}

static int cmd_lint(int argc, char **argv)
{
    struct sl_config *c;

    if (argc != 2) {
        fprintf(stderr, "usage: sluice lint CONFIG\n");
        return EXIT_USAGE;
    }
    if (load(argv[1], &c) != 0)
        return EXIT_FAIL;
    printf("%s: ok (%zu functions, %zu sources, %zu sinks)\n", argv[1], c->nfunctions,
           c->nsources, c->nsinks);
    sl_config_free(c);
    return EXIT_OK;
}

/* The service core as one runtime component: the functions' environments,
 * the dispatcher with its queue and sinks, and the HTTP API. It starts
 * before the sources that feed it and stops after them: on stop the API
 * stops accepting, in-flight invocations finish (within shutdown_grace_s,
 * which the runtime enforces), then everything is freed. */
struct core_comp {
    struct sl_runtime    *rt;
    struct sl_functions  *fns;
    struct sl_metrics    *metrics;
    struct sl_dispatcher *d;
    struct sl_api        *api;
    struct sl_component  *c;
};

static int core_start(void *ctx, struct sl_err *err)
{
    struct core_comp *cc = ctx;
    struct sl_runtime *rt = cc->rt;
    int rc;

    cc->metrics = sl_metrics_new();
    rc = sl_functions_new(rt->base, rt->conf, NULL, &cc->fns, err);
    if (rc == 0)
        rc = sl_dispatcher_new(rt->base, rt->conf, cc->fns, cc->metrics, rt->pool, &cc->d, err);
    if (rc == 0)
        rc = sl_api_new(rt->base, rt->conf, cc->d, cc->metrics, &cc->api, err);
    return rc;
}

static void core_drained(void *arg)
{
    struct core_comp *cc = arg;

    sl_component_stopped(cc->c);
}

static void core_stop(void *ctx, struct sl_component *c)
{
    struct core_comp *cc = ctx;

    cc->c = c;
    if (cc->api)
        sl_api_stop_accepting(cc->api);
    if (cc->d)
        sl_dispatcher_drain(cc->d, core_drained, cc);
    else
        sl_component_stopped(c);
}

static void core_free(void *ctx)
{
    struct core_comp *cc = ctx;

    /* the API first (it stops answering); then the functions, whose last
     * results still reach the dispatcher; then the dispatcher */
    sl_api_free(cc->api);
    sl_dispatcher_abandon(cc->d); /* the worker pool is already gone */
    sl_functions_free(cc->fns);
    sl_dispatcher_free(cc->d);
    sl_metrics_free(cc->metrics);
    free(cc);
}

static const struct sl_component_ops core_ops = {
    .kind = "core", .start = core_start, .stop = core_stop, .free = core_free,
};

/* The event source mappings: one outcome engine on the core's dispatcher,
 * one poller per enabled source. Registered after the core, so they stop
 * first: fetching ends, batches in flight finish and are checkpointed,
 * then the dispatcher drains. */
struct sources_comp {
    struct core_comp    *cc;
    struct sl_engine    *engine;
    struct sl_component *c;
};

static int sources_start(void *ctx, struct sl_err *err)
{
    struct sources_comp *sc = ctx;
    const struct sl_config *conf = sc->cc->rt->conf;
    int rc;

    rc = sl_engine_new(sc->cc->rt->base, conf, sc->cc->d, sc->cc->metrics, &sc->engine, err);
    for (size_t i = 0; rc == 0 && i < conf->nsources; i++) {
        const struct sl_source_conf *sconf = &conf->sources[i];
        sl_poller_factory make = sl_poller_for(sconf->type);
        struct sl_source *s = NULL;
        char inst[96];

        snprintf(inst, sizeof(inst), "source:%s", sconf->name);
        if (!sconf->enabled) {
            SL_INFO(inst, "disabled (enabled: false)");
            continue;
        }
        if (!make)
            return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: no poller for type %s",
                              sconf->name, sl_source_type_name(sconf->type));
        rc = make(sc->engine, sconf, &s, err);
        if (rc == 0 && s->ops->start)
            rc = s->ops->start(s, err);
        if (rc == 0)
            SL_INFO(inst, "started (%s -> %s)", sl_source_type_name(sconf->type), sconf->function);
    }
    return rc;
}

static void sources_drained(void *arg)
{
    struct sources_comp *sc = arg;

    sl_component_stopped(sc->c);
}

static void sources_stop(void *ctx, struct sl_component *c)
{
    struct sources_comp *sc = ctx;

    sc->c = c;
    if (sc->engine)
        sl_engine_stop(sc->engine, sources_drained, sc);
    else
        sl_component_stopped(c);
}

static void sources_free(void *ctx)
{
    struct sources_comp *sc = ctx;

    sl_engine_free(sc->engine);
    free(sc);
}

static const struct sl_component_ops sources_ops = {
    .kind = "sources", .start = sources_start, .stop = sources_stop, .free = sources_free,
};

static int cmd_run(int argc, char **argv)
{
    struct sl_runtime *rt;
    struct sl_config *c;
    struct sl_err err;
    int code;

    if (argc != 2) {
        fprintf(stderr, "usage: sluice run CONFIG\n");
        return EXIT_USAGE;
    }
    if (load(argv[1], &c) != 0)
        return EXIT_FAIL;
    sl_log_set_level(c->log.level);
    sl_log_set_format(c->log.format);
    sl_log_set_debug(c->log.debug);

    sl_err_clear(&err);
    if (sl_runtime_new(c, &rt, &err) != 0) {
        SL_ERROR(NULL, "cannot start: %s", err.msg);
        sl_config_free(c);
        return EXIT_FAIL;
    }
    {
        struct core_comp *cc = sl_calloc(1, sizeof(*cc));
        struct sources_comp *sc = sl_calloc(1, sizeof(*sc));
        cc->rt = rt;
        sc->cc = cc;
        sl_runtime_add(rt, "sluice", &core_ops, cc);
        if (c->nsources > 0)
            sl_runtime_add(rt, "all", &sources_ops, sc);
        else
            free(sc);
    }
    SL_INFO(NULL, "sluice %s running %s: %zu functions, %zu sources, %zu sinks", SL_VERSION,
            argv[1], c->nfunctions, c->nsources, c->nsinks);
    code = sl_runtime_run(rt);
    SL_INFO(NULL, "stopped (exit code %d)", code);
    sl_runtime_free(rt);
    return code;
}

/* ------------------------------------------------------------------ */
/* invoke --local                                                      */

struct local_result {
    struct event_base *base;
    int    done, ok;
    char  *out;          /* what goes to stdout */
    double duration_ms, init_ms;
    long long max_memory_mb, memory_mb;
};

static void on_local_result(const struct sl_invoke_result *r, void *arg)
{
    struct local_result *lr = arg;

    lr->done = 1;
    lr->ok = r->ok;
    lr->duration_ms = r->duration_ms;
    lr->init_ms = r->init_ms;
    lr->max_memory_mb = (long long)r->max_memory_mb;
    if (r->ok) {
        lr->out = strndup(r->payload, r->payload_len);
    } else {
        json_t *e = json_pack("{s:s, s:s}", "errorMessage",
                              r->error_message ? r->error_message : "", "errorType",
                              r->error_type ? r->error_type : "Unknown");
        if (!e) /* the handler's text was not UTF-8 */
            e = json_pack("{s:s, s:s}", "errorMessage", "(not UTF-8)", "errorType",
                          "Runtime.InvalidResponse");
        if (r->stack)
            json_object_set(e, "stackTrace", r->stack);
        lr->out = json_dumps(e, JSON_COMPACT);
        json_decref(e);
    }
    event_base_loopbreak(lr->base);
}

static char *read_payload(const char *arg)
{
    FILE *f;
    char *buf = NULL;
    size_t len = 0;

    if (arg[0] != '@')
        return strdup(arg);
    f = fopen(arg + 1, "rb");
    if (!f) {
        fprintf(stderr, "sluice: cannot open %s: %s\n", arg + 1, strerror(errno));
        return NULL;
    }
    {
        FILE *m = open_memstream(&buf, &len);
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && len < 7 * 1024 * 1024)
            fwrite(chunk, 1, n, m);
        fclose(m);
    }
    fclose(f);
    return buf;
}

static int cmd_invoke(int argc, char **argv)
{
    const char *config = NULL, *fname = NULL, *payload_arg = "{}", *endpoint = NULL;
    struct local_result lr = { 0 };
    struct sl_functions *fns = NULL;
    struct sl_invoke_req req = { 0 };
    struct sl_fnpool *pool;
    struct sl_config *c = NULL;
    struct sl_err err;
    json_error_t jerr;
    json_t *check;
    char *payload;
    int local = 0, async = 0, code = EXIT_FAIL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--local") == 0)
            local = 1;
        else if (strcmp(argv[i], "--async") == 0)
            async = 1;
        else if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
            payload_arg = argv[++i];
        else if (argv[i][0] == '-')
            return fprintf(stderr, "sluice invoke: unknown option %s\n", argv[i]), EXIT_USAGE;
        else if (!config)
            config = argv[i];
        else if (!fname)
            fname = argv[i];
        else
            return fprintf(stderr, "usage: sluice invoke --local CONFIG FUNCTION "
                                   "[--payload JSON|@FILE]\n"), EXIT_USAGE;
    }
    if (!local) {
        /* remote: the only positional argument is the function */
        if (fname) {
            fprintf(stderr, "sluice invoke: without --local, give only FUNCTION\n");
            return EXIT_USAGE;
        }
        fname = config;
    }
    if ((local && (!config || !fname)) || !fname || (local && async)) {
        fprintf(stderr, "usage: sluice invoke --local CONFIG FUNCTION [--payload JSON|@FILE]\n"
                        "       sluice invoke [--endpoint URL] FUNCTION [--payload JSON|@FILE] "
                        "[--async]\n");
        return EXIT_USAGE;
    }
    if (!(payload = read_payload(payload_arg)))
        return EXIT_FAIL;
    if (!local) {
        const char *ep = endpoint ? endpoint : getenv("SLUICE_ENDPOINT");
        code = sl_client_invoke(ep ? ep : "http://127.0.0.1:9001", fname, payload,
                                strlen(payload), async, getenv("SLUICE_TOKEN"));
        free(payload);
        return code;
    }
    check = json_loads(payload, JSON_DECODE_ANY, &jerr);
    if (!check) {
        fprintf(stderr, "sluice: the payload is not JSON: %s (line %d, column %d)\n", jerr.text,
                jerr.line, jerr.column);
        free(payload);
        return EXIT_FAIL;
    }
    json_decref(check);
    if (load(config, &c) != 0) {
        free(payload);
        return EXIT_FAIL;
    }
    sl_log_set_level(c->log.level);
    sl_log_set_format(c->log.format);
    sl_log_set_debug(c->log.debug);
    if (!sl_config_function(c, fname)) {
        fprintf(stderr, "sluice: %s has no function named '%s'\n", config, fname);
        goto out;
    }
    lr.base = event_base_new();
    sl_err_clear(&err);
    if (sl_functions_new(lr.base, c, fname, &fns, &err) != 0) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        goto out;
    }
    pool = sl_functions_pool(fns, fname);
    req.event = payload;
    req.event_len = strlen(payload);
    if (sl_fnpool_invoke(pool, &req, on_local_result, &lr) != 0) {
        fprintf(stderr, "sluice: function %s has no concurrency (reserved_concurrency: 0)\n",
                fname);
        goto out;
    }
    while (!lr.done)
        event_base_loop(lr.base, EVLOOP_ONCE);
    printf("%s\n", lr.out ? lr.out : "");
    fprintf(stderr, "duration: %.2f ms, init: %.2f ms, max memory used: %lld MB of %lld MB\n",
            lr.duration_ms, lr.init_ms, lr.max_memory_mb,
            (long long)sl_config_function(c, fname)->memory_mb);
    code = lr.ok ? EXIT_OK : EXIT_FAIL;
out:
    sl_functions_free(fns);
    if (lr.base)
        event_base_free(lr.base);
    free(lr.out);
    free(payload);
    sl_config_free(c);
    return code;
}

static int cmd_dlq(int argc, char **argv)
{
    const char *endpoint = getenv("SLUICE_ENDPOINT"), *args[4];
    struct sl_config *c;
    int code, nargs = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (nargs < 4)
            args[nargs++] = argv[i];
        else
            nargs = 99;
    }
    /* VERB CONFIG SINK [ID] */
    if (nargs < 3 || nargs > 4 ||
        (strcmp(args[0], "list") != 0 && strcmp(args[0], "show") != 0 &&
         strcmp(args[0], "redrive") != 0) || (strcmp(args[0], "list") == 0 && nargs == 4)) {
        fprintf(stderr, "usage: sluice dlq list CONFIG SINK\n"
                        "       sluice dlq show|redrive CONFIG SINK [ID] [--endpoint URL]\n");
        return EXIT_USAGE;
    }
    if (load(args[1], &c) != 0)
        return EXIT_FAIL;
    code = sl_dlq_command(c, args[0], args[2], nargs == 4 ? args[3] : NULL,
                          endpoint ? endpoint : "http://127.0.0.1:9001");
    sl_config_free(c);
    return code;
}

static int cmd_version(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: sluice version\n");
        return EXIT_USAGE;
    }
    printf("sluice %s\n", SL_VERSION);
    return EXIT_OK;
}

static int cmd_config_docs(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: sluice config-docs\n");
        return EXIT_USAGE;
    }
    sl_config_docs(stdout);
    return EXIT_OK;
}

static int cmd_help(int argc, char **argv)
{
    const struct command *cmd;

    if (argc == 1) {
        usage(stdout);
        return EXIT_OK;
    }
    cmd = argc == 2 ? find_command(argv[1]) : NULL;
    if (!cmd) {
        fprintf(stderr, "sluice: no command '%s'; see 'sluice help'\n", argc >= 2 ? argv[1] : "");
        return EXIT_USAGE;
    }
    printf("usage: sluice %s%s%s\n\n%s\n", cmd->name, cmd->args[0] ? " " : "", cmd->args,
           cmd->help);
    return EXIT_OK;
}

static const struct command commands[] = {
    { "run", "CONFIG", "run the service in the foreground",
      "Loads CONFIG, starts every source, sink and function it names and runs until\n"
      "SIGTERM or SIGINT, which stop it gracefully: in-flight invocations may finish\n"
      "within server.shutdown_grace_s, and nothing unfinished is checkpointed. A\n"
      "second SIGTERM/SIGINT stops at once. SIGHUP is reserved for reload. Logs go to\n"
      "stderr (log.format: text or json).\n\n"
      "Exit codes: 0 stopped cleanly, 1 invalid configuration or a failure, 2 usage.",
      cmd_run },
    { "lint", "CONFIG", "check a configuration file without running it",
      "Reads CONFIG, checks every key against the reference (docs/CONFIGURATION.md),\n"
      "interpolates ${VAR}, and prints every problem as file:line:col: message.\n\n"
      "Exit codes: 0 valid, 1 invalid (or unreadable), 2 usage.",
      cmd_lint },
    { "invoke", "[--local CONFIG | --endpoint URL] FUNCTION [--payload JSON|@FILE] [--async]",
      "invoke a function: locally in its sandbox, or on a running service",
      "With --endpoint (default $SLUICE_ENDPOINT, else http://127.0.0.1:9001), sends\n"
      "the Invoke API request a Lambda client would (RequestResponse, or Event with\n"
      "--async) to a running `sluice run`; $SLUICE_TOKEN is sent as a bearer token.\n\n"
      "With --local CONFIG, starts an environment of FUNCTION from CONFIG (sandbox and all), invokes it\n"
      "once with the payload (default {}), prints the result JSON to stdout and\n"
      "the duration, init duration and peak memory to stderr, like sam local invoke.\n"
      "A function error prints Lambda's error JSON ({\"errorMessage\", \"errorType\",\n"
      "\"stackTrace\"}) and exits 1.\n\n"
      "Exit codes: 0 success, 1 function error or failure, 2 usage.",
      cmd_invoke },
    { "dlq", "list|show|redrive CONFIG SINK [ID] [--endpoint URL]",
      "look at and redrive what a sink holds",
      "list: one line per entry: id, function, condition, payload (first 80 chars).\n"
      "show: the entry (or all) as indented JSON.\n"
      "redrive: sends each entry's requestPayload back to its function as an\n"
      "asynchronous invoke at --endpoint (default $SLUICE_ENDPOINT, else\n"
      "http://127.0.0.1:9001) and removes the entry only once it was accepted (202).\n"
      "Works for redis, postgres, sqlite and file sinks.\n\n"
      "Exit codes: 0 success, 1 failure (entries that failed are kept), 2 usage.",
      cmd_dlq },
    { "version", "", "print the version", "Prints 'sluice VERSION'. Exit code 0.", cmd_version },
    { "config-docs", "", "print the configuration reference (Markdown)",
      "Prints docs/CONFIGURATION.md, generated from the key tables. Exit code 0.",
      cmd_config_docs },
    { "help", "[COMMAND]", "show help for sluice or one command",
      "Without COMMAND, lists the commands; with one, describes it.", cmd_help },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "sluice %s: Lambda-style event source mappings for Kafka, Redis and Postgres\n\n"
                 "usage: sluice COMMAND [ARGS]\n\ncommands:\n", SL_VERSION);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", commands[i].name, commands[i].args);
        fprintf(out, "  %-22s %s\n", left, commands[i].summary);
    }
    fprintf(out, "\n'sluice help COMMAND' or 'sluice COMMAND --help' describes one command.\n"
                 "Exit codes: 0 success, 1 failure (invalid configuration, service error),"
                 " 2 usage error.\n");
}

int main(int argc, char **argv)
{
    const struct command *cmd;

    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cmd_help(1, argv);
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv);
    cmd = find_command(argv[1]);
    if (!cmd) {
        fprintf(stderr, "sluice: unknown command '%s'; see 'sluice help'\n", argv[1]);
        return EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            char *h[] = { "help", (char *)cmd->name, NULL };
            return cmd_help(2, h);
        }
    }
    return cmd->fn(argc - 1, argv + 1);
}
