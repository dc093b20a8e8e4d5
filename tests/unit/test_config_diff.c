/* config/diff.c: what a live reload restarts. Two configurations loaded
 * from memory, compared key by key through the key tables. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/pollers.h"

#define FIX "tests/unit/fixtures"

static struct sl_config *load(const char *yaml)
{
    struct sl_diags d;
    struct sl_config *c = NULL;

    sl_diags_init(&d, "t.yaml");
    sl_config_load_buffer("t.yaml", FIX, yaml, strlen(yaml), &sl_registry, &c, &d);
    if (!c)
        sl_diags_print(&d, stderr);
    sl_diags_destroy(&d);
    cr_assert_not_null(c, "fixture does not load:\n%s", yaml);
    return c;
}

#define BASE                                                                              \
    "functions:\n"                                                                        \
    "  f: { handler: handler.sh, memory_mb: 128, environment: { AA: '1' } }\n"             \
    "  g: { handler: handler.sh }\n"                                                      \
    "sources:\n"                                                                          \
    "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, batch_size: 10 }\n" \
    "  k: { type: kafka, function: g, brokers: 'b:9092', topics: [t], on_failure: d }\n"  \
    "sinks:\n"                                                                            \
    "  d: { type: file, path: /tmp/d.jsonl }\n"

/* The summary of BASE -> `b`, and the diff kept in *out (destroyed by the caller). */
static void diff(const char *a, const char *b, char *summary, size_t n)
{
    struct sl_config *ca = load(a), *cb = load(b);
    struct sl_conf_diff d;

    sl_config_diff(ca, cb, &d);
    sl_conf_diff_summary(&d, summary, n);
    sl_conf_diff_destroy(&d);
    sl_config_free(ca);
    sl_config_free(cb);
}

Test(config_diff, same_file_is_no_change)
{
    struct sl_config *a = load(BASE), *b = load(BASE);
    struct sl_conf_diff d;
    char s[512];

    sl_config_diff(a, b, &d);
    cr_expect(sl_conf_diff_empty(&d));
    cr_expect_eq(d.n, 0);
    sl_conf_diff_summary(&d, s, sizeof(s));
    cr_expect_str_eq(s, "no change");
    sl_conf_diff_destroy(&d);
    sl_config_free(a);
    sl_config_free(b);
}

Test(config_diff, a_source_batch_size_is_that_source_alone)
{
    char s[512];

    diff(BASE, "functions:\n"
               "  f: { handler: handler.sh, memory_mb: 128, environment: { AA: '1' } }\n"
               "  g: { handler: handler.sh }\n"
               "sources:\n"
               "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, "
               "batch_size: 20 }\n"
               "  k: { type: kafka, function: g, brokers: 'b:9092', topics: [t], "
               "on_failure: d }\n"
               "sinks:\n"
               "  d: { type: file, path: /tmp/d.jsonl }\n", s, sizeof(s));
    cr_expect_str_eq(s, "~1 source: q (batch_size)");
}

Test(config_diff, function_environment_and_memory)
{
    struct sl_config *a = load(BASE), *b;
    const struct sl_conf_change *c;
    struct sl_conf_diff d;

    b = load("functions:\n"
             "  f: { handler: handler.sh, memory_mb: 256, environment: { AA: '2' } }\n"
             "  g: { handler: handler.sh }\n"
             "sources:\n"
             "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, "
             "batch_size: 10 }\n"
             "  k: { type: kafka, function: g, brokers: 'b:9092', topics: [t], on_failure: d }\n"
             "sinks:\n"
             "  d: { type: file, path: /tmp/d.jsonl }\n");
    sl_config_diff(a, b, &d);
    cr_assert_eq(d.n, 1);
    c = sl_conf_diff_find(&d, SL_DIFF_FUNCTION, "f");
    cr_assert_not_null(c);
    cr_expect_eq(c->kind, SL_DIFF_CHANGED);
    cr_expect_str_eq(c->keys, "memory_mb, environment");
    /* the source of f did not change: it keeps running */
    cr_expect_null(sl_conf_diff_find(&d, SL_DIFF_SOURCE, "q"));
    cr_expect_null(sl_conf_diff_find(&d, SL_DIFF_FUNCTION, "g"));
    sl_conf_diff_destroy(&d);
    sl_config_free(a);
    sl_config_free(b);
}

Test(config_diff, added_removed_and_every_section)
{
    char s[1024];

    diff(BASE,
         "functions:\n"
         "  f: { handler: handler.sh, memory_mb: 128, environment: { AA: '1' } }\n"
         "  h: { handler: handler.sh }\n"
         "sources:\n"
         "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, batch_size: 10 }\n"
         "  k: { type: kafka, function: h, brokers: 'b:9092', topics: [t, u], on_failure: d }\n"
         "  n: { type: redis, function: f, url: redis://127.0.0.1:6379, key: n }\n"
         "sinks:\n"
         "  d: { type: file, path: /tmp/e.jsonl }\n"
         "server: { auth: { tok: '*' }, concurrency_limit: 50 }\n"
         "log: { level: debug }\n",
         s, sizeof(s));
    cr_expect_str_eq(s, "+1 function: h, +1 source: n, -1 function: g, "
                        "~1 source: k (function, topics), ~1 sink: d (path), "
                        "~server (concurrency_limit, auth), ~log (level)");
}

Test(config_diff, a_type_change_is_only_type)
{
    char s[512];

    diff(BASE,
         "functions:\n"
         "  f: { handler: handler.sh, memory_mb: 128, environment: { AA: '1' } }\n"
         "  g: { handler: handler.sh }\n"
         "sources:\n"
         "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, batch_size: 10 }\n"
         "  k: { type: kafka, function: g, brokers: 'b:9092', topics: [t], on_failure: d }\n"
         "sinks:\n"
         "  d: { type: sqlite, path: /tmp/d.db }\n",
         s, sizeof(s));
    cr_expect_str_eq(s, "~1 sink: d (type)");
}

Test(config_diff, nested_and_derived_keys)
{
    char s[512];

    /* async.* is a nested table; a new region changes every function's ARN */
    diff(BASE,
         "functions:\n"
         "  f: { handler: handler.sh, memory_mb: 128, environment: { AA: '1' },\n"
         "       async: { maximum_retry_attempts: 0 } }\n"
         "  g: { handler: handler.sh }\n"
         "sources:\n"
         "  q: { type: redis, function: f, url: redis://127.0.0.1:6379, key: q, batch_size: 10 }\n"
         "  k: { type: kafka, function: g, brokers: 'b:9092', topics: [t], on_failure: d }\n"
         "sinks:\n"
         "  d: { type: file, path: /tmp/d.jsonl }\n"
         "server: { region: eu-west-1 }\n",
         s, sizeof(s));
    cr_expect_str_eq(s, "~2 functions: f (async.maximum_retry_attempts, arn), g (arn), "
                        "~server (region)");
}
