/* An unchanged Powertools for AWS Lambda (Python) function against a real
 * source: shared by the per-source tests (test_powertools_kafka.c; the Redis
 * queue and Postgres ones use the same pieces).
 *
 * The function is tests/integration/fixtures/powertools/app.py, run by
 * runtime python in a strict sandbox with the layer tests/deps builds
 * (tests/.layers/powertools). POWERTOOLS_SOURCE picks its parser model and
 * EventType (kafka, sqs, dynamodb). Record payloads are JSON objects with an
 * integer "id" (below PT_MAX_ID); "poison": true makes the record handler
 * raise. The handler prints "POWERTOOLS-HANDLED <id>" per handled record,
 * which sluice logs as "[<request id>] POWERTOOLS-HANDLED <id>".
 *
 * pt_function_yaml: the `functions:` section. pt_handled: per id, how often
 * it was handled in all, and in the first invocation that handled it.
 * pt_dead_letters: per id, how often it is in the dead-letter file (any
 * envelope shape: Kafka records' base64 `value`, SQS `body`, DynamoDB
 * `NewImage` are found wherever they sit). */
#ifndef SLUICE_TEST_POWERTOOLS_H
#define SLUICE_TEST_POWERTOOLS_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PT_MAX_ID 1000

/* The layer exists (tests/deps made it). */
static inline void pt_require_layer(const char *top)
{
    char path[1200];

    snprintf(path, sizeof(path), "%s/tests/.layers/powertools/.done", top);
    cr_assert_eq(access(path, F_OK), 0, "no Powertools layer at %s/tests/.layers/powertools: "
                 "run tests/deps", top);
}

/* The `functions:` section: function `pt`, the Powertools app for
 * `source` (kafka, sqs, dynamodb), `extra` more keys (4-space indent). */
static inline void pt_function_yaml(char *buf, size_t n, const char *top, const char *source,
                                    const char *extra)
{
    snprintf(buf, n,
             "functions:\n"
             "  pt:\n"
             "    runtime: python\n"
             "    code: %s/tests/integration/fixtures/powertools\n"
             "    handler: app.lambda_handler\n"
             "    layers: [%s/tests/.layers/powertools]\n"
             "    memory_mb: 512\n"
             "    timeout_s: 30\n"
             "    init_timeout_s: 30\n"
             "    environment: { POWERTOOLS_SOURCE: %s, POWERTOOLS_SERVICE_NAME: sluice-test }\n"
             "%s",
             top, top, source, extra ? extra : "");
}

/* Read the sluice log `log`: total[id] how often id was handled,
 * first[id] how often in the first invocation that handled it. Returns
 * the number of handled lines. */
static inline size_t pt_handled(const char *log, int *total, int *first)
{
    static char rid_of[PT_MAX_ID][40];
    FILE *f = fopen(log, "r");
    char line[2048];
    size_t n = 0;

    memset(total, 0, PT_MAX_ID * sizeof(int));
    memset(first, 0, PT_MAX_ID * sizeof(int));
    memset(rid_of, 0, sizeof(rid_of));
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char *p = strstr(line, "] POWERTOOLS-HANDLED "), *rid;
        int id;

        if (!p || p - line < 37)
            continue;
        rid = p - 36;
        if (rid[-1] != '[')
            continue;
        id = atoi(p + strlen("] POWERTOOLS-HANDLED "));
        if (id < 0 || id >= PT_MAX_ID)
            continue;
        n++;
        total[id]++;
        if (!rid_of[id][0])
            snprintf(rid_of[id], sizeof(rid_of[id]), "%.36s", rid);
        if (strncmp(rid_of[id], rid, 36) == 0)
            first[id]++;
    }
    fclose(f);
    return n;
}

static inline int pt_b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 to text (malloc'd). */
static inline char *pt_b64dec(const char *s)
{
    size_t len = strlen(s), o = 0;
    char *out = malloc(len + 1);
    unsigned acc = 0;
    int bits = 0;

    for (size_t i = 0; i < len; i++) {
        int v = pt_b64val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return out;
}

/* The "id" of a payload given as JSON text. */
static inline int pt_text_id(const char *text)
{
    json_t *j = json_loads(text, 0, NULL), *id = json_object_get(j, "id");
    int v = json_is_integer(id) ? (int)json_integer_value(id) : -1;

    json_decref(j);
    return v;
}

/* Walk one envelope and count the payload ids of the records in it. */
static inline void pt_walk(json_t *o, int *count)
{
    const char *k;
    json_t *v;
    size_t i;
    int id = -1;

    if (json_is_array(o)) {
        json_array_foreach(o, i, v)
            pt_walk(v, count);
        return;
    }
    if (!json_is_object(o))
        return;
    if (json_is_string(json_object_get(o, "value")) && json_object_get(o, "offset")) {
        char *text = pt_b64dec(json_string_value(json_object_get(o, "value")));
        id = pt_text_id(text);
        free(text);
    } else if (json_is_string(json_object_get(o, "body")) && json_object_get(o, "messageId")) {
        id = pt_text_id(json_string_value(json_object_get(o, "body")));
    } else if (json_is_object(json_object_get(o, "NewImage"))) {
        json_t *a = json_object_get(json_object_get(o, "NewImage"), "id");
        if (json_is_object(a) && json_is_string(json_object_get(a, "N")))
            id = atoi(json_string_value(json_object_get(a, "N")));
        else if (json_is_integer(a))
            id = (int)json_integer_value(a);
    }
    if (id >= 0 && id < PT_MAX_ID) {
        count[id]++;
        return; /* one record: its fields hold no other record */
    }
    json_object_foreach(o, k, v)
        pt_walk(v, count);
}

/* count[id]: how often id's record is in the JSON-lines file `path`.
 * Returns the number of envelopes. */
static inline size_t pt_dead_letters(const char *path, int *count)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, n = 0;

    memset(count, 0, PT_MAX_ID * sizeof(int));
    if (!f)
        return 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j)
            continue;
        n++;
        pt_walk(j, count);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

/* Some line of the file `path` holds `needle`. */
static inline bool pt_log_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;

    if (!f)
        return false;
    while (!found && getline(&line, &cap, f) > 0)
        found = strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return found;
}

/* Assert the outcome of one run over ids [0, n): every good id handled,
 * exactly once in the first invocation that handled it, never a poison
 * one; exactly the poison ids dead-lettered, once each. */
static inline void pt_assert_outcome(const char *log, const char *dlq, int n,
                                     const bool *poison)
{
    static int total[PT_MAX_ID], first[PT_MAX_ID], dead[PT_MAX_ID];

    pt_handled(log, total, first);
    pt_dead_letters(dlq, dead);
    for (int id = 0; id < n; id++) {
        if (poison[id]) {
            cr_expect_eq(total[id], 0, "poison record %d was handled", id);
            cr_expect_eq(dead[id], 1, "poison record %d dead-lettered %d times", id, dead[id]);
        } else {
            cr_expect_eq(first[id], 1, "good record %d handled %d times in its first pass",
                         id, first[id]);
            cr_expect_eq(dead[id], 0, "good record %d was dead-lettered", id);
        }
    }
}

#endif
