/* Event filtering: every rule kind matching and not matching, arrays in
 * documents, nesting, $or, numeric edge cases, payloads that are not JSON,
 * and bad patterns with their exact messages (at compile time and through
 * `sluice lint`); the documents the Redis and Kafka sources build, matched
 * as Lambda matches SQS and Kafka records (eventSource, body, plain-string
 * payloads, Kafka's decoded key). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <librdkafka/rdkafka.h>

#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/err.h"
#include "sluice/filter.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);

    cr_assert_not_null(j, "test JSON does not parse: %s: %s", text, e.text);
    return j;
}

static struct sl_filter *compile(const char *criteria)
{
    json_t *c = parse(criteria);
    struct sl_filter *f = NULL;
    char msg[512];

    cr_assert_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), 0, "%s: %s", criteria, msg);
    json_decref(c);
    return f;
}

struct match_case {
    const char *criteria; /* JSON list of patterns */
    const char *doc;
    bool        expect;
};

static const struct match_case cases[] = {
    /* exact values */
    { "[{\"value\":{\"type\":[\"order\"]}}]", "{\"value\":{\"type\":\"order\"}}", true },
    { "[{\"value\":{\"type\":[\"order\"]}}]", "{\"value\":{\"type\":\"Order\"}}", false },
    { "[{\"value\":{\"type\":[\"order\"]}}]", "{\"value\":{\"kind\":\"order\"}}", false },
    { "[{\"value\":{\"type\":[\"order\",\"refund\"]}}]", "{\"value\":{\"type\":\"refund\"}}", true },
    { "[{\"v\":[\"\"]}]", "{\"v\":\"\"}", true },
    { "[{\"v\":[\"\"]}]", "{\"v\":\"x\"}", false },
    { "[{\"v\":[300]}]", "{\"v\":300}", true },
    { "[{\"v\":[300]}]", "{\"v\":300.0}", true },   /* numbers compare numerically */
    { "[{\"v\":[3.0e2]}]", "{\"v\":300}", true },
    { "[{\"v\":[300]}]", "{\"v\":\"300\"}", false }, /* but a string is not a number */
    { "[{\"v\":[\"300\"]}]", "{\"v\":300}", false },
    { "[{\"v\":[9007199254740993]}]", "{\"v\":9007199254740992}", false }, /* exact integers */
    { "[{\"v\":[9007199254740993]}]", "{\"v\":9007199254740993}", true },
    { "[{\"v\":[true]}]", "{\"v\":true}", true },
    { "[{\"v\":[true]}]", "{\"v\":false}", false },
    { "[{\"v\":[false]}]", "{\"v\":false}", true },
    { "[{\"v\":[true]}]", "{\"v\":\"true\"}", false },
    { "[{\"v\":[null]}]", "{\"v\":null}", true },
    { "[{\"v\":[null]}]", "{}", false },             /* null is a value, not absence */
    { "[{\"v\":[null]}]", "{\"v\":0}", false },
    /* prefix, suffix, equals-ignore-case, wildcard */
    { "[{\"r\":[{\"prefix\":\"us-\"}]}]", "{\"r\":\"us-east-1\"}", true },
    { "[{\"r\":[{\"prefix\":\"us-\"}]}]", "{\"r\":\"eu-west-1\"}", false },
    { "[{\"r\":[{\"prefix\":\"us-\"}]}]", "{\"r\":\"us\"}", false },
    { "[{\"r\":[{\"prefix\":\"1\"}]}]", "{\"r\":12}", false }, /* strings only */
    { "[{\"r\":[{\"prefix\":{\"equals-ignore-case\":\"US-\"}}]}]", "{\"r\":\"uS-x\"}", true },
    { "[{\"r\":[{\"prefix\":{\"equals-ignore-case\":\"US-\"}}]}]", "{\"r\":\"eu-x\"}", false },
    { "[{\"f\":[{\"suffix\":\".png\"}]}]", "{\"f\":\"a.png\"}", true },
    { "[{\"f\":[{\"suffix\":\".png\"}]}]", "{\"f\":\"a.PNG\"}", false },
    { "[{\"f\":[{\"suffix\":\".png\"}]}]", "{\"f\":\"png\"}", false },
    { "[{\"f\":[{\"suffix\":{\"equals-ignore-case\":\".PNG\"}}]}]", "{\"f\":\"a.png\"}", true },
    { "[{\"n\":[{\"equals-ignore-case\":\"alice\"}]}]", "{\"n\":\"ALICE\"}", true },
    { "[{\"n\":[{\"equals-ignore-case\":\"alice\"}]}]", "{\"n\":\"alic\"}", false },
    { "[{\"n\":[{\"equals-ignore-case\":\"alice\"}]}]", "{\"n\":\"alicex\"}", false },
    { "[{\"k\":[{\"wildcard\":\"orders/*/item-*.json\"}]}]", "{\"k\":\"orders/7/item-1.json\"}", true },
    { "[{\"k\":[{\"wildcard\":\"orders/*/item-*.json\"}]}]", "{\"k\":\"orders/7/item-1.jso\"}", false },
    { "[{\"k\":[{\"wildcard\":\"orders/*/item-*.json\"}]}]", "{\"k\":\"xorders/7/item-1.json\"}", false },
    { "[{\"k\":[{\"wildcard\":\"*\"}]}]", "{\"k\":\"\"}", true },
    { "[{\"k\":[{\"wildcard\":\"a*a\"}]}]", "{\"k\":\"a\"}", false },
    { "[{\"k\":[{\"wildcard\":\"a*a\"}]}]", "{\"k\":\"aa\"}", true },
    { "[{\"k\":[{\"wildcard\":\"*ab*ab*\"}]}]", "{\"k\":\"xabyab\"}", true },
    { "[{\"k\":[{\"wildcard\":\"*ab*ab*\"}]}]", "{\"k\":\"xaby\"}", false },
    { "[{\"k\":[{\"wildcard\":\"exact\"}]}]", "{\"k\":\"exact\"}", true },
    { "[{\"k\":[{\"wildcard\":\"exact\"}]}]", "{\"k\":\"exactly\"}", false },
    { "[{\"k\":[{\"wildcard\":\"a\\\\*b\"}]}]", "{\"k\":\"a*b\"}", true },  /* escaped star */
    { "[{\"k\":[{\"wildcard\":\"a\\\\*b\"}]}]", "{\"k\":\"axb\"}", false },
    { "[{\"k\":[{\"wildcard\":\"a\\\\\\\\*\"}]}]", "{\"k\":\"a\\\\zz\"}", true }, /* a\ then star */
    /* anything-but */
    { "[{\"w\":[{\"anything-but\":[\"Raining\"]}]}]", "{\"w\":\"Sunny\"}", true },
    { "[{\"w\":[{\"anything-but\":[\"Raining\"]}]}]", "{\"w\":\"Raining\"}", false },
    { "[{\"w\":[{\"anything-but\":[\"Raining\"]}]}]", "{}", false }, /* needs the field */
    { "[{\"w\":[{\"anything-but\":\"Raining\"}]}]", "{\"w\":\"Snow\"}", true },
    { "[{\"w\":[{\"anything-but\":[1,2]}]}]", "{\"w\":2.0}", false },
    { "[{\"w\":[{\"anything-but\":[1,2]}]}]", "{\"w\":3}", true },
    { "[{\"w\":[{\"anything-but\":{\"prefix\":\"in\"}}]}]", "{\"w\":\"init\"}", false },
    { "[{\"w\":[{\"anything-but\":{\"prefix\":\"in\"}}]}]", "{\"w\":\"done\"}", true },
    { "[{\"w\":[{\"anything-but\":{\"suffix\":\".tmp\"}}]}]", "{\"w\":\"a.tmp\"}", false },
    { "[{\"w\":[{\"anything-but\":{\"suffix\":\".tmp\"}}]}]", "{\"w\":\"a.txt\"}", true },
    { "[{\"w\":[{\"anything-but\":{\"equals-ignore-case\":[\"a\",\"B\"]}}]}]", "{\"w\":\"b\"}", false },
    { "[{\"w\":[{\"anything-but\":{\"equals-ignore-case\":[\"a\",\"B\"]}}]}]", "{\"w\":\"c\"}", true },
    { "[{\"w\":[{\"anything-but\":{\"wildcard\":\"*.tmp\"}}]}]", "{\"w\":\"x.tmp\"}", false },
    { "[{\"w\":[{\"anything-but\":{\"wildcard\":\"*.tmp\"}}]}]", "{\"w\":\"x.tmpl\"}", true },
    /* numeric */
    { "[{\"p\":[{\"numeric\":[\">\",0,\"<=\",5]}]}]", "{\"p\":5}", true },
    { "[{\"p\":[{\"numeric\":[\">\",0,\"<=\",5]}]}]", "{\"p\":0}", false },
    { "[{\"p\":[{\"numeric\":[\">\",0,\"<=\",5]}]}]", "{\"p\":0.000001}", true },
    { "[{\"p\":[{\"numeric\":[\">\",0,\"<=\",5]}]}]", "{\"p\":5.000001}", false },
    { "[{\"p\":[{\"numeric\":[\">\",0,\"<=\",5]}]}]", "{\"p\":\"3\"}", false }, /* not a number */
    { "[{\"p\":[{\"numeric\":[\">=\",-1.5,\"<\",0]}]}]", "{\"p\":-1.5}", true },
    { "[{\"p\":[{\"numeric\":[\">=\",-1.5,\"<\",0]}]}]", "{\"p\":0}", false },
    { "[{\"p\":[{\"numeric\":[\"<\",10]}]}]", "{\"p\":-1e300}", true },
    { "[{\"p\":[{\"numeric\":[\"=\",100]}]}]", "{\"p\":100.0}", true },
    { "[{\"p\":[{\"numeric\":[\"=\",100]}]}]", "{\"p\":100.5}", false },
    { "[{\"p\":[{\"numeric\":[\">=\",7,\"<=\",7]}]}]", "{\"p\":7}", true }, /* a point range */
    { "[{\"p\":[{\"numeric\":[\"<=\",5,\">\",0]}]}]", "{\"p\":3}", true },  /* either order */
    { "[{\"p\":[{\"numeric\":[\">\",1e9]}]}]", "{\"p\":4000000000}", true },
    /* exists */
    { "[{\"n\":[{\"exists\":true}]}]", "{\"n\":\"x\"}", true },
    { "[{\"n\":[{\"exists\":true}]}]", "{\"n\":null}", true },
    { "[{\"n\":[{\"exists\":true}]}]", "{\"m\":1}", false },
    { "[{\"n\":[{\"exists\":true}]}]", "{\"n\":{\"a\":1}}", false }, /* leaves only */
    { "[{\"n\":[{\"exists\":true}]}]", "{\"n\":[]}", false },
    { "[{\"n\":[{\"exists\":false}]}]", "{\"m\":1}", true },
    { "[{\"n\":[{\"exists\":false}]}]", "{\"n\":0}", false },
    { "[{\"a\":{\"b\":[{\"exists\":false}]}}]", "{}", true },          /* absent parent */
    { "[{\"a\":{\"b\":[{\"exists\":false}]}}]", "{\"a\":5}", true },
    { "[{\"a\":{\"b\":[{\"exists\":false}]}}]", "{\"a\":{\"b\":1}}", false },
    { "[{\"a\":{\"b\":[{\"exists\":false}]}}]", "{\"a\":[{\"b\":1}]}", false },
    { "[{\"a\":{\"b\":[{\"exists\":false}]}}]", "{\"a\":[{\"b\":1},{\"c\":1}]}", true },
    { "[{\"n\":[\"x\",{\"exists\":false}]}]", "{}", true },           /* OR inside a leaf */
    { "[{\"n\":[\"x\",{\"exists\":false}]}]", "{\"n\":\"y\"}", false },
    /* arrays in the document */
    { "[{\"tags\":[\"red\"]}]", "{\"tags\":[\"blue\",\"red\"]}", true },
    { "[{\"tags\":[\"red\"]}]", "{\"tags\":[\"blue\",[\"red\"]]}", true },
    { "[{\"tags\":[\"red\"]}]", "{\"tags\":[]}", false },
    { "[{\"tags\":[{\"anything-but\":\"red\"}]}]", "{\"tags\":[\"red\",\"blue\"]}", true },
    { "[{\"tags\":[{\"anything-but\":\"red\"}]}]", "{\"tags\":[\"red\"]}", false },
    { "[{\"i\":{\"sku\":[\"b\"]}}]", "{\"i\":[{\"sku\":\"a\"},{\"sku\":\"b\"}]}", true },
    { "[{\"i\":{\"sku\":[\"b\"],\"q\":[2]}}]", "{\"i\":[{\"sku\":\"a\",\"q\":2},{\"sku\":\"b\",\"q\":1}]}",
      false }, /* both keys from one element */
    { "[{\"i\":{\"sku\":[\"b\"],\"q\":[2]}}]", "{\"i\":[{\"sku\":\"a\",\"q\":2},{\"sku\":\"b\",\"q\":2}]}",
      true },
    /* nesting and AND */
    { "[{\"value\":{\"a\":{\"b\":{\"c\":[1]}}}}]", "{\"value\":{\"a\":{\"b\":{\"c\":1}}}}", true },
    { "[{\"value\":{\"a\":{\"b\":{\"c\":[1]}}}}]", "{\"value\":{\"a\":{\"b\":{\"c\":2}}}}", false },
    { "[{\"value\":{\"a\":{\"b\":[1]}}}]", "{\"value\":{\"a\":{\"b\":{\"c\":1}}}}", false },
    { "[{\"value\":{\"a\":[\"x\"]}}]", "{\"value\":{\"a\":{\"x\":1}}}", false },
    { "[{\"eventName\":[\"INSERT\"],\"dynamodb\":{\"NewImage\":{\"st\":{\"S\":[\"paid\"]}}}}]",
      "{\"eventName\":\"INSERT\",\"dynamodb\":{\"NewImage\":{\"st\":{\"S\":\"paid\"}}}}", true },
    { "[{\"eventName\":[\"INSERT\"],\"dynamodb\":{\"NewImage\":{\"st\":{\"S\":[\"paid\"]}}}}]",
      "{\"eventName\":\"MODIFY\",\"dynamodb\":{\"NewImage\":{\"st\":{\"S\":\"paid\"}}}}", false },
    /* the Postgres source's records: DynamoDB Streams, typed attribute values */
    { "[{\"eventSource\":[\"aws:dynamodb\"]}]", "{\"eventSource\":\"aws:dynamodb\"}", true },
    { "[{\"eventSource\":[\"aws:dynamodb\"]}]", "{\"eventSource\":\"sluice:postgres\"}", false },
    { "[{\"dynamodb\":{\"NewImage\":{\"status\":{\"S\":[\"active\"]}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"status\":{\"S\":\"active\"},\"n\":{\"N\":\"5\"}}}}", true },
    { "[{\"dynamodb\":{\"NewImage\":{\"status\":{\"S\":[\"active\"]}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"status\":{\"NULL\":true}}}}", false },
    { "[{\"dynamodb\":{\"NewImage\":{\"n\":{\"N\":[\"5\"]}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"n\":{\"N\":\"5\"}}}}", true },
    { "[{\"dynamodb\":{\"NewImage\":{\"ok\":{\"BOOL\":[true]}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"ok\":{\"BOOL\":true}}}}", true },
    { "[{\"dynamodb\":{\"NewImage\":{\"ok\":{\"BOOL\":[true]}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"ok\":{\"BOOL\":false}}}}", false },
    { "[{\"dynamodb\":{\"NewImage\":{\"tags\":{\"L\":{\"S\":[\"x\"]}}}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"tags\":{\"L\":[{\"S\":\"y\"},{\"S\":\"x\"}]}}}}", true },
    { "[{\"dynamodb\":{\"OldImage\":{\"status\":[{\"exists\":false}]}}}]",
      "{\"dynamodb\":{\"NewImage\":{\"status\":{\"S\":\"a\"}}}}", true },
    /* several patterns are OR'ed */
    { "[{\"a\":[1]},{\"b\":[2]}]", "{\"b\":2}", true },
    { "[{\"a\":[1]},{\"b\":[2]}]", "{\"a\":2,\"b\":1}", false },
    /* $or */
    { "[{\"c\":[\"x\"],\"$or\":[{\"p\":[{\"numeric\":[\">\",10]}]},{\"q\":[\"y\"]}]}]",
      "{\"c\":\"x\",\"q\":\"y\"}", true },
    { "[{\"c\":[\"x\"],\"$or\":[{\"p\":[{\"numeric\":[\">\",10]}]},{\"q\":[\"y\"]}]}]",
      "{\"c\":\"x\",\"p\":11}", true },
    { "[{\"c\":[\"x\"],\"$or\":[{\"p\":[{\"numeric\":[\">\",10]}]},{\"q\":[\"y\"]}]}]",
      "{\"c\":\"x\",\"p\":9}", false },
    { "[{\"c\":[\"x\"],\"$or\":[{\"p\":[{\"numeric\":[\">\",10]}]},{\"q\":[\"y\"]}]}]",
      "{\"c\":\"z\",\"q\":\"y\"}", false },
    { "[{\"v\":{\"$or\":[{\"a\":[1]},{\"$or\":[{\"b\":[2]},{\"c\":[3]}]}]}}]", "{\"v\":{\"c\":3}}",
      true },
    { "[{\"v\":{\"$or\":[{\"a\":[1]},{\"$or\":[{\"b\":[2]},{\"c\":[3]}]}]}}]", "{\"v\":{\"d\":3}}",
      false },
    /* Lambda's string patterns and {"Filters": [...]} shape */
    { "[\"{\\\"body\\\":{\\\"k\\\":[\\\"a\\\"]}}\"]", "{\"body\":{\"k\":\"a\"}}", true },
    { "{\"Filters\":[{\"Pattern\":\"{\\\"body\\\":{\\\"k\\\":[\\\"a\\\"]}}\"}]}",
      "{\"body\":{\"k\":\"b\"}}", false },
    /* no patterns: everything passes */
    { "[]", "{\"x\":1}", true },
    { "null", "{}", true },
};

Test(filter, every_rule_kind_matches_and_misses)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sl_filter *f = compile(cases[i].criteria);
        json_t *doc = parse(cases[i].doc);

        cr_expect_eq(sl_filter_match(f, doc), cases[i].expect, "case %zu: %s against %s: want %s",
                     i, cases[i].criteria, cases[i].doc, cases[i].expect ? "match" : "no match");
        json_decref(doc);
        sl_filter_free(f);
    }
}

Test(filter, no_patterns_compile_to_null_and_match_everything)
{
    struct sl_filter *f = (struct sl_filter *)1;
    char msg[64];

    cr_expect_eq(sl_filter_compile(NULL, &f, msg, sizeof(msg)), 0);
    cr_expect_null(f);
    cr_expect(sl_filter_match(NULL, NULL));
    cr_expect_not(sl_filter_targets(NULL, "value"));
    cr_expect_eq(sl_filter_count(NULL), 0);
    sl_filter_free(NULL);
}

/* A Kafka record whose value is not JSON: the poller leaves "value" out
 * of the document, so a pattern on the value does not match while one on
 * metadata alone still does. */
Test(filter, payload_that_is_not_json)
{
    struct sl_filter *on_value = compile("[{\"value\":{\"type\":[\"order\"]}}]");
    struct sl_filter *on_meta = compile("[{\"topic\":[\"orders\"]}]");
    struct sl_filter *absent = compile("[{\"value\":[{\"exists\":false}]}]");
    json_t *doc = parse("{\"topic\":\"orders\",\"partition\":0,\"offset\":7}");

    cr_expect_not(sl_filter_match(on_value, doc));
    cr_expect(sl_filter_match(on_meta, doc));
    cr_expect(sl_filter_match(absent, doc));
    cr_expect(sl_filter_targets(on_value, "value"));
    cr_expect_not(sl_filter_targets(on_meta, "value"));
    cr_expect(sl_filter_targets(absent, "value"));
    /* anything that is not an object is an empty document */
    json_decref(doc);
    doc = parse("\"not an object\"");
    cr_expect_not(sl_filter_match(on_meta, doc));
    cr_expect(sl_filter_match(absent, doc));
    json_decref(doc);
    sl_filter_free(on_value);
    sl_filter_free(on_meta);
    sl_filter_free(absent);
}

Test(filter, targets_sees_keys_inside_or)
{
    struct sl_filter *f =
        compile("[{\"eventName\":[\"INSERT\"]},{\"$or\":[{\"a\":[1]},{\"body\":{\"x\":[1]}}]}]");

    cr_expect_eq(sl_filter_count(f), 2);
    cr_expect(sl_filter_targets(f, "body"));
    cr_expect(sl_filter_targets(f, "eventName"));
    cr_expect_not(sl_filter_targets(f, "x")); /* nested keys are not top-level targets */
    sl_filter_free(f);
}

struct bad_case {
    const char *criteria;
    const char *expect;
};

static const struct bad_case bad[] = {
    { "{\"value\":{}}", "filter_criteria: expected a list of patterns, got an object" },
    { "[1]", "filter_criteria[0]: a pattern must be an object, got a number" },
    { "[{}]", "filter_criteria[0]: an empty pattern matches nothing" },
    { "[{\"a\":[1]},{\"value\":{\"amount\":[{\"numeric\":[\">\"]}]}}]",
      "filter_criteria[1].value.amount: numeric needs an operator and a number" },
    { "[{\"v\":[{\"numeric\":[]}]}]", "filter_criteria[0].v: numeric needs an operator and a number" },
    { "[{\"v\":[{\"numeric\":\">\"}]}]", "filter_criteria[0].v: numeric needs an operator and a number" },
    { "[{\"v\":[{\"numeric\":[\">\",\"5\"]}]}]",
      "filter_criteria[0].v: numeric needs an operator and a number" },
    { "[{\"v\":[{\"numeric\":[\"!=\",5]}]}]",
      "filter_criteria[0].v: numeric: unknown operator '!=' (expected =, <, <=, > or >=)" },
    { "[{\"v\":[{\"numeric\":[\">\",5,\"<\",3]}]}]",
      "filter_criteria[0].v: numeric range is empty (> 5 and < 3)" },
    { "[{\"v\":[{\"numeric\":[\">\",5,\"<=\",5]}]}]",
      "filter_criteria[0].v: numeric range is empty (> 5 and <= 5)" },
    { "[{\"v\":[{\"numeric\":[\">\",1,\">\",2]}]}]", "filter_criteria[0].v: numeric: two lower bounds" },
    { "[{\"v\":[{\"numeric\":[\"<\",1,\"<=\",2]}]}]", "filter_criteria[0].v: numeric: two upper bounds" },
    { "[{\"v\":[{\"numeric\":[\"=\",1,\"<\",2]}]}]",
      "filter_criteria[0].v: numeric: '=' cannot be combined with another operator" },
    { "[{\"v\":[{\"numeric\":[\">\",1,\"<\",2,\"<\",3]}]}]",
      "filter_criteria[0].v: numeric takes at most two operators (a lower and an upper bound)" },
    { "[{\"v\":[]}]", "filter_criteria[0].v: an empty list matches nothing" },
    { "[{\"v\":\"order\"}]",
      "filter_criteria[0].v: expected a list of rules or an object, got a string (write "
      "[\"order\"] to match it)" },
    { "[{\"v\":5}]", "filter_criteria[0].v: expected a list of rules or an object, got a number" },
    { "[{\"v\":[[1]]}]", "filter_criteria[0].v: a list of rules cannot hold a list" },
    { "[{\"a\":{\"b\":{}}}]", "filter_criteria[0].a.b: an empty pattern matches nothing" },
    { "[{\"v\":[{\"prefixx\":\"a\"}]}]",
      "filter_criteria[0].v: unknown operator 'prefixx' (expected prefix, suffix, anything-but, "
      "numeric, exists, equals-ignore-case or wildcard)" },
    { "[{\"v\":[{\"cidr\":\"10.0.0.0/8\"}]}]", "filter_criteria[0].v: cidr is not supported" },
    { "[{\"v\":[{}]}]", "filter_criteria[0].v: a rule object holds exactly one operator, got 0" },
    { "[{\"v\":[{\"prefix\":\"a\",\"suffix\":\"b\"}]}]",
      "filter_criteria[0].v: a rule object holds exactly one operator, got 2" },
    { "[{\"v\":[{\"prefix\":5}]}]",
      "filter_criteria[0].v: prefix needs a string or {\"equals-ignore-case\": string}, got a number" },
    { "[{\"v\":[{\"suffix\":{\"wildcard\":\"a\"}}]}]",
      "filter_criteria[0].v: suffix needs a string or {\"equals-ignore-case\": string}, got an object" },
    { "[{\"v\":[{\"equals-ignore-case\":[\"a\"]}]}]",
      "filter_criteria[0].v: equals-ignore-case needs a string, got a list" },
    { "[{\"v\":[{\"exists\":\"yes\"}]}]", "filter_criteria[0].v: exists needs true or false, got a string" },
    { "[{\"v\":[{\"wildcard\":\"a**b\"}]}]",
      "filter_criteria[0].v: wildcard: consecutive '*' are not allowed" },
    { "[{\"v\":[{\"wildcard\":\"a\\\\b\"}]}]",
      "filter_criteria[0].v: wildcard: '\\' must be followed by '*' or '\\'" },
    { "[{\"v\":[{\"wildcard\":7}]}]", "filter_criteria[0].v: wildcard needs a string, got a number" },
    { "[{\"v\":[{\"anything-but\":[]}]}]", "filter_criteria[0].v: anything-but: an empty list matches nothing" },
    { "[{\"v\":[{\"anything-but\":[true]}]}]",
      "filter_criteria[0].v: anything-but: a list holds strings or numbers, got a boolean" },
    { "[{\"v\":[{\"anything-but\":{\"numeric\":[\">\",1]}}]}]",
      "filter_criteria[0].v: anything-but: unknown operator 'numeric' (expected prefix, suffix, "
      "equals-ignore-case or wildcard)" },
    { "[{\"v\":[{\"anything-but\":{\"equals-ignore-case\":[]}}]}]",
      "filter_criteria[0].v: anything-but equals-ignore-case: an empty list matches nothing" },
    { "[{\"$or\":{\"a\":[1]}}]", "filter_criteria[0].$or: $or needs a list of patterns, got an object" },
    { "[{\"$or\":[]}]", "filter_criteria[0].$or: $or: an empty list matches nothing" },
    { "[{\"$or\":[{\"a\":[1]},{\"b\":[{\"numeric\":[\"<\"]}]}]}]",
      "filter_criteria[0].$or[1].b: numeric needs an operator and a number" },
    { "[\"{\\\"a\\\": [1\"]",
      "filter_criteria[0]: pattern is not valid JSON: ']' expected near end of file (at "
      "character 8)" },
    { "[\"[1]\"]", "filter_criteria[0]: a pattern must be an object, got a list" },
    { "{\"Filters\":[{\"Pattern\":5}]}", "filter_criteria[0]: expected {\"Pattern\": string}" },
    { "[{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},"
      "{\"a\":[1]},{\"a\":[1]},{\"a\":[1]},{\"a\":[1]}]",
      "filter_criteria: 11 patterns, at most 10 are allowed" },
};

Test(filter, bad_patterns_name_index_and_path)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *c = parse(bad[i].criteria);
        struct sl_filter *f = (struct sl_filter *)1;
        char msg[512];

        cr_expect_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), SL_EINVAL, "case %zu: %s", i,
                     bad[i].criteria);
        cr_expect_null(f, "case %zu", i);
        cr_expect_str_eq(msg, bad[i].expect, "case %zu: %s", i, bad[i].criteria);
        json_decref(c);
    }
}

Test(filter, size_and_depth_limits)
{
    char *big = malloc(5000), *deep = malloc(4096), msg[256];
    struct sl_filter *f;
    json_t *c;
    size_t n = 0;

    /* a 4097-character pattern */
    n = (size_t)snprintf(big, 5000, "[{\"v\":[\""); /* the pattern is 10 characters and the x's */
    memset(big + n, 'x', 4097 - 10);
    strcpy(big + n + 4097 - 10, "\"]}]");
    c = parse(big);
    cr_expect_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), SL_EINVAL);
    cr_expect_str_eq(msg, "filter_criteria[0]: pattern has 4097 characters as JSON, more than 4096");
    json_decref(c);
    /* one character less is fine */
    strcpy(big + n + 4096 - 10, "\"]}]");
    c = parse(big);
    cr_expect_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), 0, "%s", msg);
    sl_filter_free(f);
    json_decref(c);

    /* 33 nested objects */
    n = 0;
    n += (size_t)sprintf(deep + n, "[");
    for (int i = 0; i < 33; i++)
        n += (size_t)sprintf(deep + n, "{\"a\":");
    n += (size_t)sprintf(deep + n, "[1]");
    for (int i = 0; i < 33; i++)
        n += (size_t)sprintf(deep + n, "}");
    sprintf(deep + n, "]");
    c = parse(deep);
    cr_expect_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), SL_EINVAL);
    cr_expect(strstr(msg, ": pattern is nested deeper than 32 levels") != NULL, "%s", msg);
    json_decref(c);
    free(big);
    free(deep);
}

/* Compiled rules own copies of their strings: the criteria may go away. */
Test(filter, compiled_filter_outlives_its_criteria)
{
    json_t *c = parse("[{\"value\":{\"k\":[{\"prefix\":\"ab\"},{\"wildcard\":\"*z\"}]}}]");
    json_t *yes = parse("{\"value\":{\"k\":[\"q\",\"xyz\"]}}");
    struct sl_filter *f;
    char msg[128];

    cr_assert_eq(sl_filter_compile(c, &f, msg, sizeof(msg)), 0);
    json_decref(c);
    cr_expect(sl_filter_match(f, yes));
    json_decref(yes);
    sl_filter_free(f);
}

/* ------------------------------------------------------------------ */
/* Through the configuration loader and `sluice lint`                  */

static char *load_diags(const char *yaml, struct sl_config **out)
{
    struct sl_diags d;
    char *text = NULL;
    size_t len = 0;
    FILE *fp;

    sl_diags_init(&d, "t.yaml");
    sl_config_load_buffer("t.yaml", "tests/unit/fixtures", yaml, strlen(yaml), &sl_registry, out,
                          &d);
    fp = open_memstream(&text, &len);
    sl_diags_print(&d, fp);
    fclose(fp);
    sl_diags_destroy(&d);
    return text;
}

Test(filter, config_accepts_yaml_and_json_string_patterns)
{
    struct sl_config *c = NULL;
    struct sl_filter *f;
    char msg[256], *got;
    json_t *doc;

    got = load_diags("functions:\n  f: { handler: handler.sh }\n"
                     "sources:\n  q:\n    type: redis\n    function: f\n    url: redis://x\n"
                     "    key: q\n    filter_criteria:\n"
                     "      - body: { kind: [order], n: [ { numeric: ['>', 5] } ] }\n"
                     "      - '{\"body\": {\"kind\": [\"refund\"]}}'\n"
                     "      - $or: [ { x: [~] }, { y: [ { exists: false } ] } ]\n"
                     "        body: { z: [true, 1.5] }\n",
                     &c);
    cr_assert_str_eq(got, "");
    free(got);
    cr_assert_not_null(c);
    cr_assert_eq(sl_filter_compile(c->sources[0].filter_criteria, &f, msg, sizeof(msg)), 0, "%s",
                 msg);
    cr_expect_eq(sl_filter_count(f), 3);
    doc = parse("{\"body\":{\"kind\":\"order\",\"n\":6}}");
    cr_expect(sl_filter_match(f, doc));
    json_decref(doc);
    doc = parse("{\"body\":{\"kind\":\"order\",\"n\":5}}");
    cr_expect_not(sl_filter_match(f, doc));
    json_decref(doc);
    doc = parse("{\"body\":{\"kind\":\"refund\"}}");
    cr_expect(sl_filter_match(f, doc));
    json_decref(doc);
    doc = parse("{\"x\":null,\"y\":1,\"body\":{\"z\":1.5}}");
    cr_expect(sl_filter_match(f, doc));
    json_decref(doc);
    doc = parse("{\"x\":0,\"y\":1,\"body\":{\"z\":true}}");
    cr_expect_not(sl_filter_match(f, doc));
    json_decref(doc);
    sl_filter_free(f);
    sl_config_free(c);
}

Test(filter, config_rejects_bad_patterns_with_line_and_column)
{
    struct sl_config *c = NULL;
    char *got = load_diags("functions:\n  f: { handler: handler.sh }\n"
                           "sources:\n  k:\n    type: kafka\n    function: f\n"
                           "    brokers: b:1\n    topics: t\n"
                           "    filter_criteria: [ { value: { type: [order] } },\n"
                           "                       { value: { amount: [ { numeric: ['>'] } ] } } ]\n",
                           &c);

    cr_expect_null(c);
    cr_expect_str_eq(got, "t.yaml:9:22: sources.k.filter_criteria: [1].value.amount: numeric "
                          "needs an operator and a number\n");
    free(got);
    sl_config_free(c);
}

Test(filter, lint_fails_on_a_bad_pattern)
{
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[512], out[4096];
    size_t len = 0;
    FILE *p;
    int st;

    snprintf(cmd, sizeof(cmd), "%s/sluice lint tests/unit/fixtures/bad-filter.yaml 2>&1", build);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    while (len + 1 < sizeof(out) && fgets(out + len, (int)(sizeof(out) - len), p))
        len += strlen(out + len);
    out[len] = '\0';
    st = pclose(p);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d: %s", st, out);
    cr_expect(strstr(out, "tests/unit/fixtures/bad-filter.yaml:12:7: sources.orders.filter_criteria: "
                          "[1].value.amount: numeric needs an operator and a number\n") != NULL,
              "%s", out);
    cr_expect(strstr(out, "tests/unit/fixtures/bad-filter.yaml:21:7: sources.jobs.filter_criteria: "
                          "[0].body.kind: expected a list of rules or an object, got a string "
                          "(write [\"order\"] to match it)\n") != NULL,
              "%s", out);
    cr_expect(strstr(out, "bad-filter.yaml: 2 errors\n") != NULL, "%s", out);
}

/* ------------------------------------------------------------------ */
/* the documents the pollers build (Lambda's data keys)                */

/* From pollers/redis/internal.h and pollers/kafka/internal.h (they need
 * libevent's and hiredis' headers; the prototypes are enough). */
json_t *sl__rq_filter_doc(const char *json, size_t len);
bool sl__kr_filter_pass(const struct sl_filter *f, bool parse_value, bool parse_key,
                        const char *json, size_t len, const rd_kafka_message_t *m);

/* An SQS record as the Redis source builds it, with `body_json` (a JSON
 * string literal) as its body. */
static bool sqs_match(const char *criteria, const char *body_json)
{
    char rec[1024];
    struct sl_filter *f = compile(criteria);
    json_t *doc;
    bool m;

    snprintf(rec, sizeof(rec),
             "{\"messageId\":\"1-0\",\"receiptHandle\":\"stream:1-0:1\",\"body\":%s,"
             "\"attributes\":{\"ApproximateReceiveCount\":\"1\"},\"messageAttributes\":"
             "{\"origin\":{\"stringValue\":\"web\",\"stringListValues\":[],"
             "\"binaryListValues\":[],\"dataType\":\"String\"}},\"md5OfBody\":\"x\","
             "\"eventSource\":\"aws:sqs\",\"eventSourceARN\":"
             "\"arn:aws:sqs:us-east-1:000000000000:jobs\",\"awsRegion\":\"us-east-1\"}",
             body_json);
    doc = sl__rq_filter_doc(rec, strlen(rec));
    cr_assert_not_null(doc);
    m = sl_filter_match(f, doc);
    json_decref(doc);
    sl_filter_free(f);
    return m;
}

Test(filter, sqs_metadata_and_body_as_lambda)
{
    const char *order = "\"{\\\"status\\\":\\\"x\\\"}\"";

    cr_assert(sqs_match("[{\"eventSource\":[\"aws:sqs\"]}]", order));
    cr_assert(!sqs_match("[{\"eventSource\":[\"sluice:redis\"]}]", order));
    cr_assert(sqs_match("[{\"eventSourceARN\":[{\"prefix\":\"arn:aws:sqs:\"}]}]", order));
    cr_assert(sqs_match("[{\"body\":{\"status\":[\"x\"]}}]", order));
    cr_assert(!sqs_match("[{\"body\":{\"status\":[\"y\"]}}]", order));
    cr_assert(sqs_match("[{\"eventSource\":[\"aws:sqs\"],\"body\":{\"status\":[\"x\"]}}]", order));
    cr_assert(sqs_match("[{\"messageAttributes\":{\"origin\":{\"stringValue\":[\"web\"]}}}]",
                        order));
    /* a JSON body against a plain-string pattern: dropped */
    cr_assert(!sqs_match("[{\"body\":[\"{\\\"status\\\":\\\"x\\\"}\"]}]", order));
}

Test(filter, sqs_plain_string_body_as_lambda)
{
    /* plain pattern, plain body: matched; JSON pattern, plain body: dropped;
     * metadata only: the body does not matter */
    cr_assert(sqs_match("[{\"body\":[\"hello\"]}]", "\"hello\""));
    cr_assert(sqs_match("[{\"body\":[{\"prefix\":\"hel\"}]}]", "\"hello\""));
    cr_assert(!sqs_match("[{\"body\":[\"bye\"]}]", "\"hello\""));
    cr_assert(!sqs_match("[{\"body\":{\"status\":[\"x\"]}}]", "\"hello\""));
    cr_assert(sqs_match("[{\"eventSource\":[\"aws:sqs\"]}]", "\"hello\""));
}

/* A Kafka record as the Kafka source builds it, with the raw key and value
 * (NULL: none) in `m`. */
static bool kafka_match(const char *criteria, const char *key, const char *value, size_t vlen)
{
    char rec[512];
    struct sl_filter *f = compile(criteria);
    rd_kafka_message_t m = { 0 };
    bool pass;

    m.key = (void *)key;
    m.key_len = key ? strlen(key) : 0;
    m.payload = (void *)value;
    m.len = vlen;
    /* base64 in the record: what the handler sees, never what a pattern matches */
    snprintf(rec, sizeof(rec),
             "{\"topic\":\"t\",\"partition\":0,\"offset\":5,\"timestamp\":1,"
             "\"timestampType\":\"CREATE_TIME\",\"key\":%s,\"value\":\"eA==\",\"headers\":[]}",
             key ? "\"dXNlci00Mg==\"" : "null");
    pass = sl__kr_filter_pass(f, sl_filter_targets(f, "value"), sl_filter_targets(f, "key"), rec,
                              strlen(rec), &m);
    sl_filter_free(f);
    return pass;
}

Test(filter, kafka_key_and_value_decoded_as_lambda)
{
    const char *order = "{\"type\":\"order\"}";

    cr_assert(kafka_match("[{\"key\":[\"user-42\"]}]", "user-42", order, strlen(order)));
    cr_assert(!kafka_match("[{\"key\":[\"dXNlci00Mg==\"]}]", "user-42", order, strlen(order)));
    cr_assert(!kafka_match("[{\"key\":[\"user-7\"]}]", "user-42", order, strlen(order)));
    cr_assert(kafka_match("[{\"key\":{\"tenant\":[\"a\"]}}]", "{\"tenant\":\"a\"}", order,
                          strlen(order)));
    cr_assert(kafka_match("[{\"key\":[\"user-42\"],\"value\":{\"type\":[\"order\"]}}]", "user-42",
                          order, strlen(order)));
    cr_assert(!kafka_match("[{\"key\":[\"user-42\"],\"value\":{\"type\":[\"x\"]}}]", "user-42",
                           order, strlen(order)));
    cr_assert(kafka_match("[{\"key\":[null]}]", NULL, order, strlen(order)));
    /* a plain-text value: plain patterns match it, JSON ones do not */
    cr_assert(kafka_match("[{\"value\":[\"keep me\"]}]", NULL, "keep me", 7));
    cr_assert(!kafka_match("[{\"value\":{\"type\":[\"order\"]}}]", NULL, "keep me", 7));
    /* bytes that are not text are left out */
    cr_assert(!kafka_match("[{\"value\":[{\"exists\":true}]}]", NULL, "\xff\xfe", 2));
    cr_assert(kafka_match("[{\"value\":[{\"exists\":false}]}]", NULL, "\xff\xfe", 2));
}
