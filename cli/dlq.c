/* `sluice dlq list|show|redrive CONFIG SINK`: read what a sink holds, and
 * send it back: an asynchronous invocation's destination record and a
 * stream batch's on-failure record as an asynchronous invocation of their
 * function (requestPayload, payload), a queue message to the Redis queue
 * it came from. A command line tool, so plain blocking clients are fine
 * here (the store code is shared with the console: sinks/dlqops.c). An entry is removed only after the service accepted its redrive
 * (202) or the queue took the message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/config.h"
#include "sluice/dlqops.h"
#include "sluice/err.h"
#include "sluice/mem.h"
#include "sluice/sink.h"

#include "internal.h"

/* Send one entry back: 0 sent, 1 nothing it can be sent as (kept), -1
 * refused (kept; stop). */
static int redrive_entry(const struct sl_config *c, const struct sl_dlq_target *t,
                         const char *id, const char *endpoint, const char *only)
{
    json_t *msgs[64];
    size_t nmsg;
    struct sl_err err;

    switch (t->kind) {
    case SL_DLQ_ASYNC:
    case SL_DLQ_BATCH: {
        /* a destination record's requestPayload, a batch's event: an
         * asynchronous invocation of its function */
        char *payload = json_dumps(t->send, JSON_COMPACT | JSON_ENCODE_ANY);
        int rc;
        if (!payload || strcmp(t->fn, "?") == 0) {
            free(payload);
            fprintf(stderr, "sluice: entry %s names no function; kept\n", id);
            return 1;
        }
        rc = sl__cli_invoke_remote(endpoint, t->fn, payload, strlen(payload), true,
                                   getenv("SLUICE_TOKEN"));
        free(payload);
        if (rc != 0) {
            fprintf(stderr, "sluice: entry %s not accepted by %s; kept\n", id, endpoint);
            return -1;
        }
        return 0;
    }
    case SL_DLQ_MESSAGE:
    case SL_DLQ_OLD_QUEUE:
        break;
    case SL_DLQ_LOST:
        fprintf(stderr, "sluice: entry %s reports records the source lost before delivery; "
                "there is nothing to redrive (kept)\n", id);
        return 1;
    default:
        fprintf(stderr, "sluice: entry %s is not a record sluice can redrive; kept\n", id);
        return 1;
    }
    /* queue messages go back to the queue they came from */
    nmsg = sl_dlq_messages(t, msgs, sizeof(msgs) / sizeof(msgs[0]));
    for (size_t i = 0; i < nmsg; i++) {
        const struct sl_source_conf *s;
        sl_err_clear(&err);
        if (!(s = sl_dlq_message_source(c, msgs[i], only, &err))) {
            fprintf(stderr, "sluice: %s\n", err.msg);
            return 1;
        }
        if (sl_dlq_requeue(s, msgs[i], &err) != 0) {
            fprintf(stderr, "sluice: %s\n", err.msg);
            fprintf(stderr, "sluice: entry %s not put back on source %s; kept\n", id, s->name);
            return -1;
        }
    }
    return 0;
}

static int dlq_command(const struct sl_config *c, const char *verb, const char *sink_name,
                       const char *id, const char *endpoint, const char *only)
{
    const struct sl_sink_conf *s = sl_config_sink(c, sink_name);
    struct sl_dlq_entries e = { 0 };
    struct sl_err err;
    int rc = 0;

    if (!s) {
        fprintf(stderr, "sluice: %s has no sink named '%s'\n", c->path, sink_name);
        return 1;
    }
    sl_err_clear(&err);
    if (sl_dlq_load(s, &e, &err) != 0) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        sl_dlq_entries_free(&e);
        return 1;
    }
    if (strcmp(verb, "list") == 0) {
        for (size_t i = 0; i < e.n; i++) {
            struct sl_dlq_target t;
            char *text;
            sl_dlq_classify(c, e.v[i].record, &t);
            text = sl_dlq_summary(&t);
            printf("%s\t%s\t%s\t%.80s\n", e.v[i].id, t.fn, t.cond, text ? text : e.v[i].record);
            free(text);
            sl_dlq_target_free(&t);
        }
        fprintf(stderr, "%zu entries in sink %s\n", e.n, sink_name);
    } else if (strcmp(verb, "show") == 0) {
        rc = 1;
        for (size_t i = 0; i < e.n; i++) {
            if (!id || strcmp(e.v[i].id, id) == 0) {
                json_t *j = json_loads(e.v[i].record, 0, NULL);
                char *pretty = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
                printf("%s\n", pretty ? pretty : e.v[i].record);
                free(pretty);
                json_decref(j);
                rc = 0;
            }
        }
        if (rc)
            fprintf(stderr, "sluice: no entry %s in sink %s\n", id ? id : "", sink_name);
    } else { /* redrive */
        char *drop = sl_calloc(e.n ? e.n : 1, 1);
        size_t done = 0;

        for (size_t i = 0; i < e.n; i++) {
            struct sl_dlq_target t;
            int r;
            if (id && strcmp(e.v[i].id, id) != 0)
                continue;
            sl_dlq_classify(c, e.v[i].record, &t);
            /* removed only once the service (202) or the queue took it */
            r = redrive_entry(c, &t, e.v[i].id, endpoint, only);
            sl_dlq_target_free(&t);
            if (r != 0) {
                rc = 1;
                if (r < 0)
                    break;
                continue;
            }
            drop[i] = 1;
            done++;
            sl_err_clear(&err);
            if (s->type != &sl_file_sink.conf && sl_dlq_delete(s, e.v[i].id, &err) != 0) {
                fprintf(stderr, "sluice: %s\n", err.msg);
                rc = 1;
            }
        }
        sl_err_clear(&err);
        if (s->type == &sl_file_sink.conf && done && sl_dlq_rewrite_file(s, &e, drop, &err) != 0) {
            fprintf(stderr, "sluice: %s; redriven entries are still in it\n", err.msg);
            rc = 1;
        }
        fprintf(stderr, "redrove %zu entries from sink %s\n", done, sink_name);
        free(drop);
    }
    sl_dlq_entries_free(&e);
    return rc;
}

int sl__cli_dlq_count(const struct sl_sink_conf *s, size_t *n)
{
    struct sl_dlq_entries e = { 0 };
    struct sl_err err;

    *n = 0;
    sl_err_clear(&err);
    if (!sl_dlq_readable(s))
        return -1;
    if (sl_dlq_load(s, &e, &err) != 0) {
        sl_dlq_entries_free(&e);
        return -1;
    }
    *n = e.n;
    sl_dlq_entries_free(&e);
    return 0;
}

int sl__cmd_dlq(int argc, char **argv)
{
    const char *endpoint = getenv("SLUICE_ENDPOINT"), *args[4], *only = NULL;
    struct sl_config *c;
    int code, nargs = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (strcmp(argv[i], "--source") == 0 && i + 1 < argc)
            only = argv[++i];
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
                        "       sluice dlq show|redrive CONFIG SINK [ID] [--endpoint URL]"
                        " [--source NAME]\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(args[1], &c) != 0)
        return EXIT_FAIL;
    code = dlq_command(c, args[0], args[2], nargs == 4 ? args[3] : NULL,
                          endpoint ? endpoint : "http://127.0.0.1:9001", only);
    sl_config_free(c);
    return code;
}
