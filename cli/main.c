/* sluice command line: argument parsing and the command table; each
 * command lives in its own file (run.c, lint.c, invoke.c, dlq.c). */
#include <stdio.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/pollers.h"

#include "internal.h"

struct command {
    const char *name;
    const char *args;
    const char *summary;
    const char *help;
    int (*fn)(int argc, char **argv);
};

static const struct command *find_command(const char *name);
static void usage(FILE *out);

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
    sl_config_docs(stdout, &sl_registry);
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
      sl__cmd_run },
    { "lint", "CONFIG", "check a configuration file without running it",
      "Reads CONFIG, checks every key against the reference (docs/CONFIGURATION.md),\n"
      "interpolates ${VAR}, and prints every problem as file:line:col: message.\n\n"
      "Exit codes: 0 valid, 1 invalid (or unreadable), 2 usage.",
      sl__cmd_lint },
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
      sl__cmd_invoke },
    { "dlq", "list|show|redrive CONFIG SINK [ID] [--endpoint URL] [--source NAME]",
      "look at and redrive what a sink holds",
      "list: one line per entry: id, function, condition, payload (first 80 chars).\n"
      "show: the entry (or all) as indented JSON.\n"
      "redrive: sends an asynchronous invocation's destination record (its\n"
      "requestPayload) and a stream batch's on-failure record (its payload, the\n"
      "event) back to the function as an asynchronous invoke at --endpoint (default\n"
      "$SLUICE_ENDPOINT, else http://127.0.0.1:9001); puts a Redis queue message\n"
      "back on the queue of the redis source whose key ends its eventSourceARN\n"
      "(--source NAME when several sources read that key). An entry is removed only\n"
      "once it was accepted (202) or queued. Records a source lost before delivery\n"
      "(no payload) are kept. Works for redis, postgres, sqlite and file sinks.\n\n"
      "Exit codes: 0 success, 1 failure (entries that failed are kept), 2 usage.",
      sl__cmd_dlq },
    { "logs", "CONFIG [--function F] [--source S] [--request-id ID] [--level L] [--since 10m] "
              "[--follow] [--json]",
      "show a running service's function logs (like sam logs)",
      "Reads the live tail (GET /logs/tail) of the `sluice run` serving CONFIG, at its\n"
      "server.listen (a wildcard address is reached on loopback). Prints one line per\n"
      "log line: TIMESTAMP FUNCTION REQUEST_ID MESSAGE (a message the handler wrote as a\n"
      "JSON object is printed as compact JSON); --json prints the events' JSON as\n"
      "sent. Lines are what the service's log ring holds of the last --since (default\n"
      "10m; 0 for none; ms, s, m, h, d), filtered by function, event source, request\n"
      "id and least level (TRACE, DEBUG, INFO, WARN, ERROR, FATAL). Without --follow\n"
      "it exits after them; with --follow (-f) it goes on printing new lines until\n"
      "interrupted. Credentials: $SLUICE_TOKEN as a bearer token, else the first\n"
      "bearer token of CONFIG's server.auth.\n\n"
      "Exit codes: 0 done (or interrupted), 1 refused or unreachable, 2 usage.",
      sl__cmd_logs },
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
