/* Config loader: a table of good and bad files with their exact messages,
 * value parsing, defaults, interpolation, and the generated reference. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schema.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/sink.h"

#include "../../pollers/kafka/conf.h"
#include "../../pollers/redis/conf.h"
#include "sluice/err.h"

#define FIX "tests/unit/fixtures"

/* Load `yaml` as file "t.yaml" relative to the fixtures; return the
 * printed diagnostics (caller frees) and the config in *out when valid. */
static char *load(const char *yaml, struct sl_config **out)
{
    struct sl_diags d;
    struct sl_config *c = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    sl_diags_init(&d, "t.yaml");
    sl_config_load_buffer("t.yaml", FIX, yaml, strlen(yaml), &sl_registry, &c, &d);
    f = open_memstream(&text, &len);
    sl_diags_print(&d, f);
    fclose(f);
    sl_diags_destroy(&d);
    if (out)
        *out = c;
    else
        sl_config_free(c);
    return text;
}

struct bad_case {
    const char *name;
    const char *yaml;
    const char *expect; /* the whole printed output */
};

static const struct bad_case bad[] = {
    { "yaml syntax",
      "functions:\n  f: [\n",
      "t.yaml:3:1: yaml: did not find expected node content while parsing a flow node\n" },
    { "empty file", "", "t.yaml: the configuration is empty\n" },
    { "top is a list", "- a\n- b\n", "t.yaml:1:1: expected a mapping at the top, got a list\n" },
    { "unknown top key", "funcs: {}\n",
      "t.yaml:1:1: funcs: unknown key (expected functions, sources, sinks, server or log)\n" },
    { "unknown key with suggestion",
      "functions:\n  f:\n    handler: handler.sh\n    memory_md: 256\n",
      "t.yaml:4:5: functions.f.memory_md: unknown key (did you mean 'memory_mb'?)\n" },
    { "unknown key without suggestion",
      "functions:\n  f:\n    handler: handler.sh\n    colour: red\n",
      "t.yaml:4:5: functions.f.colour: unknown key\n" },
    { "duplicate key",
      "functions:\n  f:\n    handler: handler.sh\n    timeout_s: 3\n    timeout_s: 4\n",
      "t.yaml:5:5: functions.f.timeout_s: duplicate key\n" },
    { "wrong type int",
      "functions:\n  f:\n    handler: handler.sh\n    reserved_concurrency: lots\n",
      "t.yaml:4:27: functions.f.reserved_concurrency: 'lots' is not an integer\n" },
    { "wrong type mapping for scalar",
      "functions:\n  f:\n    handler: { a: 1 }\n",
      "t.yaml:3:14: functions.f.handler: expected a scalar, got a mapping\n" },
    { "out of range",
      "functions:\n  f:\n    handler: handler.sh\n    memory_mb: 64\n",
      "t.yaml:4:16: functions.f.memory_mb: 64 is out of range 128..10240 MB\n" },
    { "duration out of range with unit",
      "functions:\n  f:\n    handler: handler.sh\n    timeout_s: 500ms\n",
      "t.yaml:4:16: functions.f.timeout_s: 500ms is out of range 1..900 s\n" },
    { "bad duration unit",
      "functions:\n  f:\n    handler: handler.sh\n    timeout_s: 3 fortnights\n",
      "t.yaml:4:16: functions.f.timeout_s: '3 fortnights' has an unknown unit 'fortnights'\n" },
    { "size not whole MB",
      "functions:\n  f:\n    handler: handler.sh\n    memory_mb: 1000KB\n",
      "t.yaml:4:16: functions.f.memory_mb: '1000KB' is not a whole number of MB\n" },
    { "output rate of zero",
      "functions:\n  f:\n    handler: handler.sh\n    output_kb_per_s: 0\n",
      "t.yaml:4:22: functions.f.output_kb_per_s: 0 is out of range 1..1048576 KB\n" },
    { "enum",
      "functions:\n  f:\n    handler: handler.sh\n    network: wifi\n",
      "t.yaml:4:14: functions.f.network: 'wifi' is not one of none, host\n" },
    { "bool",
      "functions:\n  f:\n    handler: handler.sh\n    snapstart: maybe\n",
      "t.yaml:4:16: functions.f.snapstart: 'maybe' is not a boolean (true or false)\n" },
    { "missing handler file",
      "functions:\n  f:\n    handler: nope.sh\n",
      "t.yaml:3:14: functions.f.handler: handler tests/unit/fixtures/nope.sh does not exist\n" },
    { "handler not executable",
      "functions:\n  f:\n    handler: plain.txt\n",
      "t.yaml:3:14: functions.f.handler: handler tests/unit/fixtures/plain.txt is not executable\n" },
    { "duplicate name",
      "functions:\n  f: { handler: handler.sh }\n  f: { handler: handler.sh }\n",
      "t.yaml:3:3: functions.f: duplicate name\n" },
    { "missing required",
      "functions:\n  f:\n    memory_mb: 256\n",
      "t.yaml:2:3: functions.f: missing required key 'handler'\n" },
    { "bad name",
      "functions:\n  bad name:\n    handler: handler.sh\n",
      "t.yaml:2:3: functions.bad name: name must be 1 to 64 letters, digits, '-' or '_'\n" },
    { "dangling function",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: redis\n"
      "    function: g\n    url: redis://x\n    key: q\n",
      "t.yaml:7:15: sources.s.function: no function named 'g'\n" },
    { "dangling sink",
      "functions:\n  f:\n    handler: handler.sh\n    async:\n      on_failure: dlq\n",
      "t.yaml:5:19: functions.f.async.on_failure: no sink named 'dlq'\n" },
    { "key of another source type",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: redis\n"
      "    function: f\n    url: redis://x\n    key: q\n    topics: [a]\n",
      "t.yaml:10:5: sources.s.topics: not a key of redis sources\n" },
    { "unknown source type",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: kinesis\n"
      "    function: f\n",
      "t.yaml:6:11: sources.s.type: 'kinesis' is not one of kafka, redis, postgres\n" },
    { "type-specific required",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: kafka\n"
      "    function: f\n    topics: orders\n",
      "t.yaml:5:3: sources.s: missing required key 'brokers'\n" },
    { "unset variable",
      "functions:\n  f:\n    handler: ${SLUICE_TEST_UNSET_VAR}\n",
      "t.yaml:3:14: functions.f.handler: environment variable SLUICE_TEST_UNSET_VAR is not set "
      "(use ${SLUICE_TEST_UNSET_VAR:-default} for a default)\n" },
    { "unterminated variable",
      "functions:\n  f:\n    handler: ${HOME\n",
      "t.yaml:3:14: functions.f.handler: unterminated '${' in '${HOME'\n" },
    { "reserved environment variable",
      "functions:\n  f:\n    handler: handler.sh\n    environment: { AWS_REGION: x }\n",
      "t.yaml:4:18: functions.f.environment: variable name 'AWS_REGION' is reserved\n" },
    { "provisioned above reserved",
      "functions:\n  f:\n    handler: handler.sh\n    reserved_concurrency: 2\n"
      "    provisioned_concurrency: 3\n",
      "t.yaml:2:3: functions.f: provisioned_concurrency (3) is more than reserved_concurrency (2)\n" },
    { "at timestamp needs time",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: kafka\n"
      "    function: f\n    brokers: b:1\n    topics: t\n    starting_position: AT_TIMESTAMP\n",
      "t.yaml:5:3: sources.s: starting_position AT_TIMESTAMP needs starting_position_timestamp\n" },
    { "postgres refuses starting_position, saying why",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: postgres\n"
      "    function: f\n    dsn: host=h\n    starting_position: LATEST\n",
      "t.yaml:9:5: sources.s.starting_position: not a key of postgres sources: a Postgres source "
      "starts where its replication slot stands (a new slot: the current WAL position) and never "
      "reads starting_position; to deliver the rows already in the tables first, set "
      "`snapshot: initial`\n" },
    { "postgres image_format is one of two",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n    type: postgres\n"
      "    function: f\n    dsn: host=h\n    image_format: dynamo\n",
      "t.yaml:9:19: sources.s.image_format: 'dynamo' is not one of attribute_values, json\n" },
    { "redis urls are checked at load",
      "functions:\n  f:\n    handler: handler.sh\nsources:\n  q:\n    type: redis\n"
      "    function: f\n    url: rediss://h:6379\n    key: k\n"
      "sinks:\n  d:\n    type: redis\n    url: redis://h:notaport\n    key: k\n",
      "t.yaml:8:10: sources.q.url: bad redis url 'rediss://h:6379': tls (rediss://) is not "
      "supported\n"
      "t.yaml:13:10: sinks.d.url: bad redis url 'redis://h:notaport': port must be a number in 1..65535\n" },
    { "bad debug context",
      "log:\n  debug: [kafka, disk]\n",
      "t.yaml:2:10: log.debug: unknown debug context 'disk' (one of: all, config, kafka, redis, "
      "postgres, sandbox, dispatch, api, sink)\n" },
    { "bad region and account",
      "server:\n  region: US-EAST-1\n  account_id: 12345\n",
      "t.yaml:2:11: server.region: \"US-EAST-1\" is not a region name (like us-east-1 or "
      "eu-west-2)\n"
      "t.yaml:3:15: server.account_id: \"12345\" is not an account id (twelve digits, quoted "
      "so YAML keeps leading zeros)\n" },
    { "runtime python: handler form, code required",
      "functions:\n  f:\n    runtime: python\n    handler: app\n    code: layer\n"
      "  g:\n    handler: app.main\n    runtime: python\n"
      "  h:\n    runtime: python\n    handler: pkg//mod.fn\n    code: nope\n"
      "  i:\n    runtime: python\n    handler: .app.fn\n    code: layer\n"
      "  j:\n    runtime: python\n    handler: app.9fn\n    code: layer\n",
      "t.yaml:4:14: functions.f.handler: handler 'app' is not module.function (as "
      "app.lambda_handler or pkg/mod.fn), as runtime python needs\n"
      "t.yaml:6:3: functions.g: runtime python needs `code`, the directory mounted at /var/task\n"
      "t.yaml:11:14: functions.h.handler: handler 'pkg//mod.fn' is not module.function (as "
      "app.lambda_handler or pkg/mod.fn), as runtime python needs\n"
      "t.yaml:12:11: functions.h.code: code tests/unit/fixtures/nope is not a directory\n"
      "t.yaml:15:14: functions.i.handler: handler '.app.fn' is not module.function (as "
      "app.lambda_handler or pkg/mod.fn), as runtime python needs\n"
      "t.yaml:19:14: functions.j.handler: handler 'app.9fn' is not module.function (as "
      "app.lambda_handler or pkg/mod.fn), as runtime python needs\n" },
    { "code is for runtime python only",
      "functions:\n  f:\n    code: layer\n    handler: handler.sh\n",
      "t.yaml:3:11: functions.f.code: `code` is for runtime python only (the other runtimes "
      "run `handler`, an executable, with its directory as the code)\n" },
    { "log_level needs json and a level",
      "functions:\n  f:\n    handler: handler.sh\n    log_level: INFO\n"
      "  g:\n    handler: handler.sh\n    log_format: json\n    log_level: LOUD\n",
      "t.yaml:4:16: functions.f.log_level: log_level needs `log_format: json` (as in Lambda, "
      "levels apply to JSON logs only)\n"
      "t.yaml:8:16: functions.g.log_level: 'LOUD' is not one of TRACE, DEBUG, INFO, WARN, "
      "ERROR, FATAL\n" },
    { "LoggingConfig: levels need json, names are Lambda's, one name for the app level",
      "functions:\n  f:\n    handler: handler.sh\n    system_log_level: WARN\n"
      "    application_log_level: ERROR\n"
      "  g:\n    handler: handler.sh\n    log_format: json\n    system_log_level: ERROR\n"
      "    application_log_level: warn\n"
      "  h:\n    handler: handler.sh\n    log_format: json\n    log_level: INFO\n"
      "    application_log_level: INFO\n",
      "t.yaml:4:23: functions.f.system_log_level: system_log_level needs `log_format: json` (as "
      "in Lambda, levels apply to JSON logs only)\n"
      "t.yaml:5:28: functions.f.application_log_level: application_log_level needs "
      "`log_format: json` (as in Lambda, levels apply to JSON logs only)\n"
      "t.yaml:9:23: functions.g.system_log_level: 'ERROR' is not one of DEBUG, INFO, WARN\n"
      "t.yaml:10:28: functions.g.application_log_level: 'warn' is not one of TRACE, DEBUG, "
      "INFO, WARN, ERROR, FATAL\n"
      "t.yaml:14:16: functions.h.log_level: log_level is the old name of "
      "application_log_level: set application_log_level only\n" },
    { "log sinks must exist",
      "functions:\n  f:\n    handler: handler.sh\n    log_sink: nowhere\n"
      "server:\n  log_sink: gone\n",
      "t.yaml:4:15: functions.f.log_sink: no sink named 'nowhere'\n"
      "t.yaml:6:13: server.log_sink: no sink named 'gone'\n" },
    { "credentials may be set, the rest stays reserved",
      "functions:\n  f:\n    handler: handler.sh\n    environment:\n"
      "      AWS_ACCESS_KEY_ID: a\n      AWS_SECRET_ACCESS_KEY: b\n      AWS_SESSION_TOKEN: c\n"
      "      AWS_ACCESS_KEY: d\n",
      "t.yaml:5:7: functions.f.environment: variable name 'AWS_ACCESS_KEY' is reserved\n" },
    { "runtime lambda needs its own network namespace and no snapstart",
      "functions:\n  f:\n    handler: handler.sh\n    runtime: lambda\n    sandbox: relaxed\n"
      "  g:\n    network: host\n    handler: handler.sh\n    runtime: provided\n"
      "  h:\n    runtime: lambda\n    handler: handler.sh\n    snapstart: yes\n",
      "t.yaml:4:14: functions.f.runtime: runtime lambda needs `sandbox: strict`: the Runtime API "
      "listens inside the environment's own network namespace, which a relaxed sandbox does "
      "not have\n"
      "t.yaml:9:14: functions.g.runtime: runtime lambda needs `network: none`: with the host's "
      "network the Runtime API's 127.0.0.1:9001 would be reachable from the host and every "
      "other environment on it\n"
      "t.yaml:11:14: functions.h.runtime: runtime lambda cannot use `snapstart` yet: the Runtime "
      "API's restore hooks (/runtime/restore/next) are not implemented\n" },
    { "two documents",
      "log: {}\n---\nlog: {}\n",
      "t.yaml:2:1: only one YAML document is allowed\n" },
    { "all errors at once, in file order",
      "functions:\n  f:\n    handler: handler.sh\n    memory_mb: 1\n    timeout_s: x\n"
      "sinks:\n  d:\n    type: file\n    url: redis://x\nlog:\n  level: loud\n",
      "t.yaml:4:16: functions.f.memory_mb: 1 is out of range 128..10240 MB\n"
      "t.yaml:5:16: functions.f.timeout_s: 'x' is not a duration\n"
      "t.yaml:7:3: sinks.d: missing required key 'path'\n"
      "t.yaml:9:5: sinks.d.url: not a key of file sinks\n"
      "t.yaml:11:10: log.level: 'loud' is not one of error, warn, info, debug\n" },
};

Test(config, bad_files_report_exact_messages)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sl_config *c = NULL;
        char *got = load(bad[i].yaml, &c);

        cr_expect_null(c, "case '%s' loaded although it is invalid", bad[i].name);
        cr_expect_str_eq(got, bad[i].expect, "case '%s'", bad[i].name);
        sl_config_free(c);
        free(got);
    }
}

/* A mistyped librdkafka property is refused at lint, by name, without its
 * value: "sasl.pasword" may well hold the password. */
Test(config, kafka_property_typo_is_refused_without_its_value)
{
    struct sl_config *c = NULL;
    char *got = load("functions:\n  f:\n    handler: handler.sh\nsources:\n  s:\n"
                     "    type: kafka\n    function: f\n    brokers: 127.0.0.1:9092\n"
                     "    topics: [t]\n    kafka:\n      sasl.pasword: Distinctive-Kafka-Pw-9\n"
                     "      ssl.key.password: Distinctive-Kafka-Pw-9\n",
                     &c);

    cr_expect_null(c);
    cr_expect(strstr(got, "sasl.pasword") != NULL, "%s", got);
    cr_expect(strstr(got, "No such configuration property") != NULL, "%s", got);
    cr_expect(strstr(got, "Distinctive-Kafka-Pw-9") == NULL, "the value shows in:\n%s", got);
    sl_config_free(c);
    free(got);
}

/* lint refuses a data_dir another user could write to. */
Test(config, world_writable_data_dir_is_refused)
{
    char dir[128], yaml[300], want[300], *got;
    struct sl_config *c = NULL;

    snprintf(dir, sizeof(dir), "/tmp/sluice-test-cfg-dd-%d", (int)getpid());
    rmdir(dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    cr_assert_eq(chmod(dir, 01777), 0);
    snprintf(yaml, sizeof(yaml), "server: { data_dir: %s }\n", dir);
    got = load(yaml, &c);
    rmdir(dir);
    snprintf(want, sizeof(want), "t.yaml:1:21: server.data_dir: data_dir %s is writable by other "
             "users (mode 1777): chmod 700 it or use a private directory\n", dir);
    cr_expect_null(c);
    cr_expect_str_eq(got, want);
    sl_config_free(c);
    free(got);
}

/* One region and account for every ARN; the function's ARN is built once. */
Test(config, region_and_account_name_every_arn)
{
    struct sl_config *c;
    char *got;

    got = load("functions:\n  f:\n    handler: handler.sh\n", &c);
    cr_assert_str_empty(got, "%s", got);
    cr_assert_str_eq(c->server.region, "us-east-1");
    cr_assert_str_eq(c->server.account_id, "000000000000");
    cr_assert_str_eq(c->functions[0].arn, "arn:aws:lambda:us-east-1:000000000000:function:f");
    cr_assert_eq(c->functions[0].server, &c->server);
    sl_config_free(c);
    free(got);

    got = load("server:\n  region: us-gov-west-1\n  account_id: \"012345678901\"\n"
               "functions:\n  f:\n    handler: handler.sh\n"
               "sources:\n  q:\n    type: redis\n    url: redis://127.0.0.1:6379\n"
               "    key: jobs\n    function: f\n", &c);
    cr_assert_str_empty(got, "%s", got);
    cr_assert_str_eq(c->functions[0].arn,
                     "arn:aws:lambda:us-gov-west-1:012345678901:function:f");
    cr_assert_eq(c->sources[0].server, &c->server);
    sl_config_free(c);
    free(got);
}

Test(config, runtime_python_keeps_handler_and_resolves_code)
{
    struct sl_config *c;
    char *got = load("functions:\n  f:\n    runtime: python\n    code: ./layer\n"
                     "    handler: pkg/mod.lambda_handler\n    log_format: json\n"
                     "    log_level: WARN\n  n:\n    handler: handler.sh\n", &c);

    cr_assert_str_empty(got, "%s", got);
    cr_assert_not_null(c);
    cr_expect_eq(c->functions[0].runtime, SL_RUNTIME_PYTHON);
    cr_expect_str_eq(c->functions[0].handler, "pkg/mod.lambda_handler");
    cr_expect_str_eq(c->functions[0].code, "tests/unit/fixtures/layer");
    cr_expect_eq(c->functions[0].log_format, SL_FN_LOG_JSON);
    cr_expect_str_eq(c->functions[0].log_level, "WARN");
    cr_expect_eq(c->functions[1].runtime, SL_RUNTIME_NATIVE);
    cr_expect_str_eq(c->functions[1].handler, "tests/unit/fixtures/handler.sh");
    cr_expect_null(c->functions[1].code);
    cr_expect_null(c->functions[1].log_level);
    sl_config_free(c);
    free(got);
}

Test(config, runtime_lambda_and_its_alias_provided)
{
    struct sl_config *c;
    char *got = load("functions:\n  f:\n    runtime: lambda\n    handler: handler.sh\n"
                     "  g:\n    runtime: provided\n    handler: handler.sh\n"
                     "    snapstart: false\n    network: none\n    sandbox: strict\n", &c);

    cr_assert_str_empty(got, "%s", got);
    cr_assert_not_null(c);
    cr_expect_eq(c->functions[0].runtime, SL_RUNTIME_LAMBDA);
    cr_expect_eq(c->functions[1].runtime, SL_RUNTIME_LAMBDA);
    cr_expect_str_eq(c->functions[1].handler, "tests/unit/fixtures/handler.sh");
    sl_config_free(c);
    free(got);
}

/* starting_position applies to the types that read it (SL_CONF_START). */
Test(config, starting_position_is_read_by_kafka_and_redis)
{
    struct sl_config *c;
    char *got;

    got = load("functions:\n  f:\n    handler: handler.sh\n"
               "sources:\n  q:\n    type: redis\n    url: redis://127.0.0.1:6379\n"
               "    key: jobs\n    function: f\n    starting_position: LATEST\n"
               "  k:\n    type: kafka\n    brokers: b:1\n    topics: t\n    function: f\n"
               "    starting_position: LATEST\n"
               "  p:\n    type: postgres\n    dsn: host=h\n    function: f\n", &c);
    cr_assert_str_empty(got, "%s", got);
    cr_assert_eq(c->sources[0].starting_position, SL_START_LATEST);
    cr_assert_eq(c->sources[1].starting_position, SL_START_LATEST);
    sl_config_free(c);
    free(got);
}

Test(config, good_file_gets_defaults_and_units)
{
    const struct sl_kafka_opts *kafka;
    const struct sl_redis_opts *redis;
    struct sl_config *c;
    char *got;

    setenv("SLUICE_TEST_BROKERS", "127.0.0.1:19092", 1);
    unsetenv("SLUICE_TEST_EMPTY");
    got = load("functions:\n"
               "  f:\n"
               "    handler: ./handler.sh\n"
               "    memory_mb: 1GB\n"
               "    timeout_s: 2m\n"
               "    environment: { GREETING: hi, PORT: 8080 }\n"
               "    layers: [layer]\n"
               "sources:\n"
               "  k:\n"
               "    type: kafka\n"
               "    function: f\n"
               "    brokers: ${SLUICE_TEST_BROKERS}\n"
               "    topics: orders\n"
               "    maximum_record_age_s: -1\n"
               "    filter_criteria: [ { value: { n: [ { numeric: ['>', 5] } ], s: ['5'] } } ]\n"
               "  r:\n"
               "    type: redis\n"
               "    function: f\n"
               "    url: ${SLUICE_TEST_EMPTY:-redis://127.0.0.1:6379}\n"
               "    key: 'price: $$5'\n"
               "    visibility_timeout_s: 1500ms\n"
               "    on_failure:\n"
               "server:\n"
               "  listen: 127.0.0.1:9999\n", &c);
    cr_assert_str_eq(got, "");
    cr_assert_not_null(c);
    free(got);

    cr_assert_eq(c->nfunctions, 1);
    cr_expect_eq(c->functions[0].memory_mb, 1024);
    cr_expect_eq(c->functions[0].timeout_ms, 120000);
    cr_expect_eq(c->functions[0].init_timeout_ms, 10000);
    cr_expect_eq(c->functions[0].reserved_concurrency, -1);
    cr_expect_eq(c->functions[0].output_kb_per_s, 1024, "default: 1 MB/s");
    cr_expect_eq(c->functions[0].async.maximum_retry_attempts, 3);
    cr_expect_eq(c->functions[0].async.maximum_event_age_ms, 6 * 3600 * 1000LL);
    cr_expect_str_eq(c->functions[0].handler, FIX "/handler.sh");
    cr_expect_str_eq(c->functions[0].layers.v[0], FIX "/layer");
    cr_assert_eq(c->functions[0].environment.n, 2);
    cr_expect_str_eq(c->functions[0].environment.v[1].key, "PORT");
    cr_expect_str_eq(c->functions[0].environment.v[1].value, "8080");

    cr_assert_eq(c->nsources, 2);
    kafka = c->sources[0].opts;
    redis = c->sources[1].opts;
    cr_expect_str_eq(kafka->brokers, "127.0.0.1:19092");
    cr_expect_eq(kafka->topics.n, 1);
    cr_expect_str_eq(kafka->topics.v[0], "orders");
    cr_expect_eq(c->sources[0].batch_size, 100);
    cr_expect_eq(c->sources[0].maximum_batching_window_ms, 500);
    cr_expect_eq(c->sources[0].maximum_record_age_ms, -1);
    cr_expect_eq(c->sources[0].maximum_retry_attempts, -1);
    cr_expect(c->sources[0].enabled);
    {
        char *js = json_dumps(c->sources[0].filter_criteria, JSON_COMPACT | JSON_SORT_KEYS);
        cr_expect_str_eq(js, "[{\"value\":{\"n\":[{\"numeric\":[\">\",5]}],\"s\":[\"5\"]}}]");
        free(js);
    }
    /* per-type defaults: redis batches are 10 and have no window */
    cr_expect_eq(c->sources[1].batch_size, 10);
    cr_expect_eq(c->sources[1].maximum_batching_window_ms, 0);
    cr_expect_str_eq(redis->url, "redis://127.0.0.1:6379");
    cr_expect_str_eq(redis->key, "price: $5");
    cr_expect_eq(c->sources[1].visibility_timeout_ms, 1500);
    cr_expect_null(c->sources[1].on_failure);
    cr_expect_eq(c->sources[1].max_receive_count, 5);

    cr_expect_str_eq(c->server.listen, "127.0.0.1:9999");
    cr_expect_eq(c->server.concurrency_limit, 1000);
    cr_expect_str_eq(c->server.data_dir, FIX "/.sluice");
    cr_expect_eq(c->log.level, 2);
    sl_config_free(c);
}

Test(config, quickstart_example_is_valid)
{
    struct sl_diags d;
    struct sl_config *c = NULL;
    int rc;

    sl_diags_init(&d, "examples/quickstart.yaml");
    rc = sl_config_load("examples/quickstart.yaml", &sl_registry, &c, &d);
    cr_assert_eq(rc, 0, "quickstart has %zu errors, first: %s", d.n, d.n ? d.v[0].msg : "");
    cr_expect_eq(c->nfunctions, 4);
    cr_expect_eq(c->nsources, 3);
    sl_diags_destroy(&d);
    sl_config_free(c);
}

Test(config, missing_file_is_a_clear_error)
{
    struct sl_diags d;
    struct sl_config *c = NULL;
    char *text = NULL;
    size_t len;
    FILE *f;

    sl_diags_init(&d, "nope.yaml");
    cr_assert_eq(sl_config_load("tests/unit/fixtures/nope.yaml", &sl_registry, &c, &d), SL_EIO);
    f = open_memstream(&text, &len);
    sl_diags_print(&d, f);
    fclose(f);
    cr_expect_str_eq(text, "nope.yaml: cannot open: No such file or directory\n");
    cr_expect_null(c);
    free(text);
    sl_diags_destroy(&d);
}

Test(config, binary_garbage_is_rejected)
{
    static const char junk[] = "\x01\x02\xff\xfe\x00\x80garbage";
    struct sl_diags d;
    struct sl_config *c = NULL;

    sl_diags_init(&d, "junk");
    cr_expect_neq(sl_config_load_buffer("junk", ".", junk, sizeof(junk) - 1, &sl_registry, &c,
                                        &d), 0);
    cr_expect_geq(d.n, 1);
    cr_expect_null(c);
    sl_diags_destroy(&d);
}

/* ------------------------------------------------------------------ */

Test(values, integers)
{
    int64_t v;
    char why[128];

    cr_expect_eq(sl__parse_int("42", &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 42);
    cr_expect_eq(sl__parse_int("-7", &v, why, sizeof(why)), 0);
    cr_expect_eq(v, -7);
    cr_expect_eq(sl__parse_int("4x", &v, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "'4x' is not an integer");
    cr_expect_eq(sl__parse_int("", &v, why, sizeof(why)), -1);
    cr_expect_eq(sl__parse_int("99999999999999999999", &v, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "'99999999999999999999' is too large");
}

Test(values, durations)
{
    int64_t ms;
    char why[128];

    cr_expect_eq(sl__parse_duration("500ms", 1000, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 500);
    cr_expect_eq(sl__parse_duration("30", 1000, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 30000);
    cr_expect_eq(sl__parse_duration("30", 1, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 30);
    cr_expect_eq(sl__parse_duration("1.5s", 1000, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 1500);
    cr_expect_eq(sl__parse_duration("6h", 1000, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 21600000);
    cr_expect_eq(sl__parse_duration("2m", 1000, &ms, why, sizeof(why)), 0);
    cr_expect_eq(ms, 120000);
    cr_expect_eq(sl__parse_duration("0.5ms", 1, &ms, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "'0.5ms' is not a whole number of milliseconds");
    cr_expect_eq(sl__parse_duration("s", 1, &ms, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "'s' is not a duration");
}

Test(values, sizes)
{
    int64_t v;
    char why[128];

    cr_expect_eq(sl__parse_size("256MB", 1024 * 1024, &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 256);
    cr_expect_eq(sl__parse_size("256", 1024 * 1024, &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 256);
    cr_expect_eq(sl__parse_size("2GiB", 1024 * 1024, &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 2048);
    cr_expect_eq(sl__parse_size("6MB", 1, &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 6 * 1024 * 1024);
    cr_expect_eq(sl__parse_size("10 KB", 1, &v, why, sizeof(why)), 0);
    cr_expect_eq(v, 10240);
    cr_expect_eq(sl__parse_size("5XB", 1, &v, why, sizeof(why)), -1);
    cr_expect_str_eq(why, "'5XB' has an unknown unit 'XB'");
}

Test(values, booleans)
{
    bool b;
    char why[128];

    cr_expect_eq(sl__parse_bool("true", &b, why, sizeof(why)), 0);
    cr_expect(b);
    cr_expect_eq(sl__parse_bool("Off", &b, why, sizeof(why)), 0);
    cr_expect_not(b);
    cr_expect_eq(sl__parse_bool("1", &b, why, sizeof(why)), -1);
}

Test(values, interpolation)
{
    char why[256], *s;

    setenv("SL_T_A", "alpha", 1);
    setenv("SL_T_EMPTY", "", 1);
    unsetenv("SL_T_UNSET");

    s = sl__interpolate("x-${SL_T_A}-y", why, sizeof(why));
    cr_expect_str_eq(s, "x-alpha-y");
    free(s);
    s = sl__interpolate("${SL_T_UNSET:-fallback:1}", why, sizeof(why));
    cr_expect_str_eq(s, "fallback:1");
    free(s);
    s = sl__interpolate("${SL_T_EMPTY:-d}", why, sizeof(why));
    cr_expect_str_eq(s, "d");
    free(s);
    s = sl__interpolate("$${SL_T_A} costs $5", why, sizeof(why));
    cr_expect_str_eq(s, "${SL_T_A} costs $5");
    free(s);
    s = sl__interpolate("${SL_T_EMPTY}", why, sizeof(why));
    cr_expect_str_eq(s, "");
    free(s);

    cr_expect_null(sl__interpolate("${SL_T_UNSET}", why, sizeof(why)));
    cr_expect_null(sl__interpolate("${1BAD}", why, sizeof(why)));
    cr_expect_str_eq(why, "bad variable reference '${1BAD}'");
    cr_expect_null(sl__interpolate("${A B}", why, sizeof(why)));
}

/* ------------------------------------------------------------------ */

Test(config, every_table_default_parses)
{
    /* A config with one of each source and sink type takes every default,
     * so a bad default in a table fails here rather than for a user. */
    struct sl_config *c;
    char *got = load("functions: { f: { handler: handler.sh } }\n"
                     "sources:\n"
                     "  k: { type: kafka, function: f, brokers: b:1, topics: t }\n"
                     "  r: { type: redis, function: f, url: redis://x, key: q }\n"
                     "  p: { type: postgres, function: f, dsn: 'dbname=x' }\n"
                     "sinks:\n"
                     "  a: { type: file, path: a.jsonl }\n"
                     "  b: { type: redis, url: redis://x, key: d }\n"
                     "  c: { type: kafka, brokers: b:1, topic: d }\n"
                     "  d: { type: postgres, dsn: 'dbname=x' }\n"
                     "  e: { type: sqlite, path: e.db }\n", &c);
    cr_assert_str_eq(got, "");
    free(got);
    cr_expect_eq(c->nsinks, 5);
    cr_expect_str_eq(((struct sl_pg_sink_opts *)c->sinks[3].opts)->table, "sluice_dlq");
    cr_expect(((struct sl_file_sink_opts *)c->sinks[0].opts)->fsync);
    sl_config_free(c);
}

Test(config, generated_reference_is_current)
{
    char *gen = NULL, *disk = NULL;
    size_t glen = 0, dlen = 0;
    FILE *f;

    f = open_memstream(&gen, &glen);
    sl_config_docs(f, &sl_registry);
    fclose(f);

    f = fopen("docs/CONFIGURATION.md", "r");
    cr_assert_not_null(f, "docs/CONFIGURATION.md is missing: run `make docs`");
    {
        FILE *m = open_memstream(&disk, &dlen);
        char buf[4096];
        size_t r;
        while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, r, m);
        fclose(m);
    }
    fclose(f);
    cr_expect(glen == dlen && memcmp(gen, disk, glen) == 0,
              "docs/CONFIGURATION.md is stale: run `make docs` and commit it");
    cr_expect(strstr(gen, "| `batch_size` | integer | `100`, redis: `10` | 1..10000 |") != NULL);
    free(gen);
    free(disk);
}

/* server.auth scopes: the old forms are invoke only; admin implies read;
 * a bearer token takes scopes as a mapping with bearer: true. */
Test(config, auth_scopes_and_bearer_mappings)
{
    struct sl_config *c;
    char *got;
    json_t *a;

    got = load("functions:\n  f:\n    handler: handler.sh\n"
               "server:\n  auth:\n"
               "    tok-old: \"*\"\n"
               "    AKIAOLD: { secret_access_key: s1, functions: f }\n"
               "    AKIAADM: { secret_access_key: s2, functions: \"*\", scopes: \"admin\" }\n"
               "    tok-read: { bearer: true, functions: f, scopes: \"invoke, read\" }\n", &c);
    cr_assert_str_empty(got, "%s", got);
    a = c->server.auth;
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(a, "tok-old"), "scopes")),
                 SL_SCOPE_INVOKE);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(a, "AKIAOLD"), "scopes")),
                 SL_SCOPE_INVOKE);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(a, "AKIAADM"), "scopes")),
                 SL_SCOPE_ADMIN | SL_SCOPE_READ);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(a, "tok-read"), "scopes")),
                 SL_SCOPE_INVOKE | SL_SCOPE_READ);
    cr_assert_null(json_object_get(json_object_get(a, "tok-read"), "secret"),
                   "a bearer token has no secret");
    cr_assert_not_null(json_object_get(json_object_get(a, "AKIAADM"), "secret"));
    sl_config_free(c);
    free(got);

    got = load("functions:\n  f:\n    handler: handler.sh\n"
               "server:\n  auth:\n"
               "    AKIAX: { secret_access_key: s1, functions: f, scopes: \"read, root\" }\n"
               "    tok-b: { bearer: true, functions: f, secret_access_key: s }\n"
               "    AKIAY: { functions: f }\n"
               "    tok-c: { bearer: yes, functions: f, scopes: \"\" }\n", NULL);
    cr_assert(strstr(got, "entry 1: unknown scope 'root' (invoke, read, admin)"), "%s", got);
    cr_assert(strstr(got, "entry 2: a bearer token (bearer: true) has no secret_access_key"),
              "%s", got);
    cr_assert(strstr(got, "key 3: give one of secret_access_key and secret_access_key_file (or "
                          "bearer: true for a bearer token)"), "%s", got);
    cr_assert(strstr(got, "entry 4: scopes is empty"), "%s", got);
    cr_assert_null(strstr(got, "s1"), "a secret in a message: %s", got);
    free(got);
}

#include "sluice/overrides.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Runtime overrides: checked against the file (a removed source, a
 * changed type, a value out of the key's range, a stream key on a queue),
 * applied in the key's unit, written 0600 and read back; the mapping's
 * UUID is pinned (instances and restarts must agree on it). */
Test(config, runtime_overrides_check_apply_and_persist)
{
    static const char yaml[] =
        "functions:\n  f:\n    handler: handler.sh\n"
        "sources:\n"
        "  q:\n    type: redis\n    url: redis://127.0.0.1:6379\n    key: jobs\n    function: f\n"
        "  k:\n    type: kafka\n    brokers: 127.0.0.1:9092\n    topics: [t]\n    function: f\n";
    char tmpl[] = "/tmp/sluice-ovr-XXXXXX", path[256], why[512], uuid[37], *got, *text;
    struct sl_overrides *ov;
    struct sl_config *c;
    struct sl_diags d;
    struct stat st;
    json_t *draft, *v;
    FILE *f;
    size_t len = 0;

    cr_assert_not_null(mkdtemp(tmpl));
    got = load(yaml, &c);
    cr_assert_str_empty(got, "%s", got);
    free(got);

    sl_mapping_uuid(c, &c->sources[0], uuid);
    cr_assert_str_eq(uuid, "5ff76bb0-391a-5a2f-876b-fc6b8934140d", "the UUID of (000000000000, f, q) changed");

    /* none yet: an empty set */
    cr_assert_eq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0, "%s", why);
    cr_assert(sl_overrides_empty(ov));
    draft = sl_overrides_draft(ov);
    v = json_integer(20000);
    cr_assert_neq(sl_overrides_put(draft, &c->sources[0], NULL, "batch_size", v, why,
                                   sizeof(why)), 0);
    cr_assert_str_eq(why, "batch_size 20000 is out of range (1..10000)");
    json_decref(v);
    v = json_integer(3);
    cr_assert_neq(sl_overrides_put(draft, &c->sources[0], NULL, "maximum_retry_attempts", v, why,
                                   sizeof(why)), 0);
    cr_assert_str_eq(why, "maximum_retry_attempts is not a setting of redis sources");
    cr_assert_neq(sl_overrides_put(draft, &c->sources[0], NULL, "visibility_timeout_s", v, why,
                                   sizeof(why)), 0);
    cr_assert_eq(sl_overrides_put(draft, &c->sources[1], NULL, "maximum_retry_attempts", v, why,
                                  sizeof(why)), 0, "%s", why);
    json_decref(v);
    v = json_integer(2500);
    cr_assert_eq(sl_overrides_put(draft, &c->sources[0], NULL, "maximum_batching_window_ms", v,
                                  why, sizeof(why)), 0, "%s", why);
    json_decref(v);
    cr_assert_eq(sl_overrides_put(draft, &c->sources[0], NULL, "enabled", json_false(), why,
                                  sizeof(why)), 0, "%s", why);
    v = json_integer(4);
    cr_assert_eq(sl_overrides_put(draft, NULL, &c->functions[0], "reserved_concurrency", v, why,
                                  sizeof(why)), 0, "%s", why);
    json_decref(v);
    v = json_integer(900);
    cr_assert_eq(sl_overrides_put(draft, NULL, &c->functions[0], "async.maximum_event_age_s", v,
                                  why, sizeof(why)), 0, "%s", why);
    json_decref(v);
    text = sl_overrides_text(draft);
    cr_assert_eq(sl_overrides_write(tmpl, text, why, sizeof(why)), 0, "%s", why);
    free(text);
    sl_overrides_commit(ov, draft, c);
    cr_assert_eq(c->sources[0].enabled, false);
    cr_assert_eq(c->sources[0].maximum_batching_window_ms, 2500);
    cr_assert_eq(c->sources[1].maximum_retry_attempts, 3);
    cr_assert_eq(c->functions[0].reserved_concurrency, 4);
    cr_assert_eq(c->functions[0].async.maximum_event_age_ms, 900000);
    sl_overrides_free(ov);
    sl_config_free(c);

    snprintf(path, sizeof(path), "%s/%s", tmpl, SL_OVERRIDES_FILE);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);

    /* read back and applied to a fresh load */
    got = load(yaml, &c);
    free(got);
    cr_assert_eq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0, "%s", why);
    sl_diags_init(&d, "o");
    cr_assert_eq(sl_overrides_check(ov, c, &d), 0);
    sl_diags_destroy(&d);
    sl_overrides_apply(ov, c);
    cr_assert_eq(c->sources[0].enabled, false);
    cr_assert_eq(c->functions[0].reserved_concurrency, 4);
    sl_overrides_free(ov);
    sl_config_free(c);

    /* the file changed under them: q gone, or q a kafka source now */
    got = load("functions:\n  f:\n    handler: handler.sh\n", &c);
    free(got);
    cr_assert_eq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0, "%s", why);
    sl_diags_init(&d, "o");
    cr_assert_eq(sl_overrides_check(ov, c, &d), 2);
    f = open_memstream(&text, &len);
    sl_diags_print(&d, f);
    fclose(f);
    cr_assert(strstr(text, "source 'q': overridden, but the configuration has no such source"),
              "%s", text);
    cr_assert(strstr(text, "source 'k': overridden"), "%s", text);
    free(text);
    sl_diags_destroy(&d);
    sl_overrides_free(ov);
    sl_config_free(c);

    /* a hand-edited value out of range, an unknown version */
    write_file(path, "{\"version\":1,\"sources\":{},\"functions\":{\"f\":"
                     "{\"reserved_concurrency\":-7,\"memory_mb\":1}}}");
    got = load(yaml, &c);
    free(got);
    cr_assert_eq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0, "%s", why);
    sl_diags_init(&d, "o");
    cr_assert_eq(sl_overrides_check(ov, c, &d), 2);
    sl_diags_destroy(&d);
    sl_overrides_free(ov);
    write_file(path, "{\"version\":9}");
    cr_assert_neq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0);
    cr_assert(strstr(why, "version 9, this sluice reads version 1"), "%s", why);
    write_file(path, "{not json");
    cr_assert_neq(sl_overrides_load(tmpl, &ov, why, sizeof(why)), 0);
    cr_assert(strstr(why, "not JSON"), "%s", why);
    sl_config_free(c);
    unlink(path);
    rmdir(tmpl);
}
