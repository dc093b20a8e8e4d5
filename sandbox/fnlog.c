/* A function's log lines, as Lambda's LoggingConfig shapes them.
 *
 * `log_format: text` (the default) keeps sluice's log as it always was:
 * each handler line as "[function:f] [request id] line" at INFO, and one
 * REPORT line per invocation. `log_format: json` writes every line as one
 * JSON object of its own, as CloudWatch would hold it: a handler line that
 * is a JSON object is kept (Lambda does not encode JSON twice) with
 * `timestamp`, `level`, `requestId` and `function` added where missing; any
 * other line becomes {"timestamp","level":"INFO","requestId","function",
 * "message"}; sluice's own lines are Telemetry-API-shaped platform records
 * ({"time","type":"platform.report","record":{...}}). The levels apply to
 * JSON only: a handler line whose `level` (INFO when it has none) is below
 * application_log_level is dropped, as Lambda drops it for runtimes that do
 * not filter at the source; platform records below system_log_level too.
 *
 * Whatever the format, every line that is kept also goes to the log ring
 * (the live tail, the log sink) with its level, function, source and
 * request id, and into the invocation's 4 KB log tail (X-Amz-Log-Result). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/jbuf.h"
#include "sluice/log.h"
#include "sluice/logring.h"
#include "sluice/mem.h"

static bool json_format(const struct sl_fnpool *pool)
{
    return pool->fn && pool->fn->log_format == SL_FN_LOG_JSON;
}

const char *sl__fnlog_app_level(const struct sl_function_conf *fn)
{
    /* log_level is the deprecated name (lint refuses both at once) */
    return fn->application_log_level ? fn->application_log_level
           : fn->log_level           ? fn->log_level
                                     : "INFO";
}

void sl__fnlog_init(struct sl_fnpool *pool)
{
    const char *a = sl__fnlog_app_level(pool->fn), *s = pool->fn->system_log_level;
    int lv;

    pool->app_level = SL_LVL_INFO;
    pool->sys_level = SL_LVL_INFO;
    /* the loader checked the names; only JSON functions have levels */
    if (json_format(pool) && a && (lv = sl_lvl_parse(a, strlen(a))) >= 0)
        pool->app_level = lv;
    if (json_format(pool) && s && (lv = sl_lvl_parse(s, strlen(s))) >= 0)
        pool->sys_level = lv;
    /* TRACE is Lambda's most detailed level: nothing is below it */
}

void sl_functions_set_logring(struct sl_functions *f, struct sl_logring *ring)
{
    for (size_t i = 0; f && f->pools && i < f->npools; i++)
        if (f->pools[i])
            f->pools[i]->ring = ring;
}

/* The request a line belongs to: the running invocation, else the last
 * one (output after the result), else none (the init). */
static const char *line_request(const struct sl_env *env)
{
    return env->inv ? env->inv->request_id : env->last_request[0] ? env->last_request : NULL;
}

static const char *line_source(const struct sl_env *env)
{
    const char *s = env->inv ? env->inv->source : env->last_source;

    return s[0] ? s : NULL;
}

static void to_tail(struct sl_env *env, struct pending *inv, const char *s, size_t n)
{
    if (!inv)
        inv = env->inv;
    if (inv) {
        sl__env_tail_add(inv, s, n);
        sl__env_tail_add(inv, "\n", 1);
    }
}

static void to_ring(struct sl_env *env, int level, const char *type, const char *rid,
                    const char *src, const char *msg, bool object, const char *record)
{
    struct sl_logline l;

    if (!env->pool->ring)
        return;
    l.ts_ms = sl_wall_ms();
    l.level = level;
    l.type = type;
    l.function = env->pool->fn->name;
    l.source = src;
    l.request_id = rid;
    l.message = msg;
    l.object = object;
    l.record = record;
    sl_logring_add(env->pool->ring, &l);
}

/* ------------------------------------------------------------------ */
/* Handler output                                                      */

/* The line as a JSON object when it is one (caller decrefs), else NULL. */
static json_t *as_object(const char *line, size_t len)
{
    size_t i = 0;
    json_t *o;

    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i == len || line[i] != '{')
        return NULL;
    o = json_loadb(line, len, 0, NULL);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* A JSON object line's level: its "level" (Lambda's key; Python's runtime
 * writes "log_level" on errors), INFO when missing or not a level. */
static int object_level(json_t *o)
{
    const json_t *v = json_object_get(o, "level");
    int lv;

    if (!json_is_string(v))
        v = json_object_get(o, "log_level");
    if (json_is_string(v) &&
        (lv = sl_lvl_parse(json_string_value(v), json_string_length(v))) >= 0)
        return lv;
    return SL_LVL_INFO;
}

/* A text line's level: Lambda's text format starts "[LEVEL]\t" (Python's
 * logging in text mode); anything else is INFO. */
static int text_level(const char *line, size_t len)
{
    const char *end;
    int lv;

    if (len < 3 || line[0] != '[' || !(end = memchr(line, ']', len < 12 ? len : 12)))
        return SL_LVL_INFO;
    lv = sl_lvl_parse(line + 1, (size_t)(end - line - 1));
    return lv >= 0 ? lv : SL_LVL_INFO;
}

void sl__fnlog_output(struct sl_env *env, const char *line, size_t len)
{
    struct sl_fnpool *pool = env->pool;
    const char *rid = line_request(env), *src = line_source(env);
    json_t *o = as_object(line, len);
    int lv = o ? object_level(o) : text_level(line, len);
    char *text = NULL, *copy;

    if (!json_format(pool)) {
        /* the log sink escapes control characters: one line stays one line */
        SL_INFO(pool->inst, "[%s] %.*s", rid ? rid : "init", (int)len, line);
        to_tail(env, NULL, line, len);
        if (o) {
            text = json_dumps(o, JSON_COMPACT);
            to_ring(env, lv, "function", rid, src, text, true, NULL);
            free(text);
        } else {
            copy = sl_strndup(line, len);
            to_ring(env, lv, "function", rid, src, copy, false, NULL);
            free(copy);
        }
        json_decref(o);
        return;
    }
    if (lv < pool->app_level) {
        json_decref(o);
        return;
    }
    if (o) {
        char ts[40];

        if (!json_object_get(o, "timestamp")) {
            sl_iso8601_ms(sl_wall_ms(), ts, sizeof(ts));
            json_object_set_new(o, "timestamp", json_string(ts));
        }
        if (!json_object_get(o, "level"))
            json_object_set_new(o, "level", json_string(sl_lvl_names[lv]));
        if (!json_object_get(o, "requestId") && rid)
            json_object_set_new(o, "requestId", json_string(rid));
        if (!json_object_get(o, "function"))
            json_object_set_new(o, "function", json_string(pool->fn->name));
        text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!text)
            return;
        sl_log_json_line(text, strlen(text));
        to_tail(env, NULL, text, strlen(text));
        to_ring(env, lv, "function", rid, src, text, true, NULL);
        free(text);
        return;
    }
    {
        struct sl_jbuf b = { 0 };
        char ts[40];

        sl_iso8601_ms(sl_wall_ms(), ts, sizeof(ts));
        SL_JBUF_LIT(&b, "{\"timestamp\":\"");
        sl_jbuf_puts(&b, ts);
        SL_JBUF_LIT(&b, "\",\"level\":\"INFO\",\"requestId\":");
        if (rid)
            sl_jbuf_str(&b, rid, strlen(rid));
        else
            SL_JBUF_LIT(&b, "null");
        SL_JBUF_LIT(&b, ",\"function\":");
        sl_jbuf_str(&b, pool->fn->name, strlen(pool->fn->name));
        SL_JBUF_LIT(&b, ",\"message\":");
        sl_jbuf_str(&b, line, len);
        SL_JBUF_LIT(&b, "}");
        sl_log_json_line(b.p, b.n);
        to_tail(env, NULL, b.p, b.n);
        free(b.p);
        copy = sl_strndup(line, len);
        to_ring(env, SL_LVL_INFO, "function", rid, src, copy, false, NULL);
        free(copy);
    }
}

/* ------------------------------------------------------------------ */
/* Platform records                                                    */

/* One of sluice's own lines: in JSON, {"time","type","record"} into the
 * log and the tail; into the ring with `text` as its message. `record`
 * is stolen. */
static void platform(struct sl_env *env, struct pending *inv, int level, const char *type,
                     const char *rid, const char *src, json_t *record, const char *text)
{
    struct sl_fnpool *pool = env->pool;
    json_t *line;
    char ts[40], *out, *rec;

    if (level < pool->sys_level) {
        json_decref(record);
        return;
    }
    sl_iso8601_ms(sl_wall_ms(), ts, sizeof(ts));
    line = json_object();
    json_object_set_new(line, "time", json_string(ts));
    json_object_set_new(line, "type", json_string(type));
    json_object_set_new(line, "record", record); /* steals */
    /* 15 digits: 0.118 rather than 0.11799999999999999 */
    out = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(15));
    rec = json_dumps(record, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (out) {
        sl_log_json_line(out, strlen(out));
        to_tail(env, inv, out, strlen(out));
    }
    to_ring(env, level, type, rid, src, text, false, rec);
    free(out);
    free(rec);
    json_decref(line);
}

void sl__fnlog_start(struct sl_env *env)
{
    char text[128];
    json_t *rec;

    if (!json_format(env->pool) || !env->inv)
        return;
    snprintf(text, sizeof(text), "START RequestId: %s Version: $LATEST", env->inv->request_id);
    rec = json_pack("{s:s,s:s}", "requestId", env->inv->request_id, "version", "$LATEST");
    platform(env, NULL, SL_LVL_INFO, "platform.start", env->inv->request_id, line_source(env),
             rec, text);
}

/* Milliseconds as Lambda's records give them: three decimals. */
static double ms3(double ms)
{
    return round(ms * 1000) / 1000;
}

static const char *status_of(const struct sl_invoke_result *r)
{
    if (r->ok)
        return "success";
    if (r->error_type && strcmp(r->error_type, "Sandbox.Timedout") == 0)
        return "timeout";
    if (r->error_type && (strncmp(r->error_type, "Runtime.", 8) == 0 ||
                          strncmp(r->error_type, "Sandbox.", 8) == 0))
        return "failure";
    return "error";
}

void sl__fnlog_report(struct sl_env *env, struct pending *inv, const struct sl_invoke_result *r,
                      int64_t billed)
{
    struct sl_fnpool *pool = env->pool;
    const char *src = inv->source[0] ? inv->source : NULL;
    char report[512], init[64] = "";
    json_t *rec, *metrics;
    int n;

    if (r->cold)
        snprintf(init, sizeof(init), "\tInit Duration: %.2f ms", r->init_ms);
    n = snprintf(report, sizeof(report), "REPORT RequestId: %s\tDuration: %.2f ms\t"
                 "Billed Duration: %lld ms\tMemory Size: %lld MB\tMax Memory Used: %lld MB%s",
                 inv->request_id, r->duration_ms, (long long)billed,
                 (long long)pool->fn->memory_mb, (long long)r->max_memory_mb, init);
    if (n < 0)
        return;
    if (!json_format(pool)) {
        sl__env_tail_add(inv, report, strlen(report));
        sl__env_tail_add(inv, "\n", 1);
        if (r->cold)
            SL_INFO(pool->inst, "REPORT RequestId: %s Duration: %.2f ms Billed Duration: %lld ms "
                    "Memory Size: %lld MB Max Memory Used: %lld MB Init Duration: %.2f ms%s",
                    inv->request_id, r->duration_ms, (long long)billed,
                    (long long)pool->fn->memory_mb, (long long)r->max_memory_mb, r->init_ms,
                    env->kind == ENV_FORKED ? " (restored)" : "");
        else
            SL_INFO(pool->inst, "REPORT RequestId: %s Duration: %.2f ms Billed Duration: %lld ms "
                    "Memory Size: %lld MB Max Memory Used: %lld MB", inv->request_id,
                    r->duration_ms, (long long)billed, (long long)pool->fn->memory_mb,
                    (long long)r->max_memory_mb);
        for (char *t = report; (t = strchr(t, '\t'));)
            *t = ' ';
        to_ring(env, SL_LVL_INFO, "platform.report", inv->request_id, src, report, false, NULL);
        return;
    }
    rec = json_pack("{s:s,s:s,s:{s:f}}", "requestId", inv->request_id, "status", status_of(r),
                    "metrics", "durationMs", ms3(r->duration_ms));
    if (!r->ok && r->error_type)
        json_object_set_new(rec, "errorType", json_string(r->error_type));
    snprintf(init, sizeof(init), "END RequestId: %s", inv->request_id);
    platform(env, inv, SL_LVL_INFO, "platform.runtimeDone", inv->request_id, src, rec, init);

    metrics = json_pack("{s:f,s:I,s:I,s:I}", "durationMs", ms3(r->duration_ms),
                        "billedDurationMs", (json_int_t)billed,
                        "memorySizeMB", (json_int_t)pool->fn->memory_mb,
                        "maxMemoryUsedMB", (json_int_t)r->max_memory_mb);
    if (r->cold)
        json_object_set_new(metrics, env->kind == ENV_FORKED ? "restoreDurationMs"
                                                             : "initDurationMs",
                            json_real(ms3(r->init_ms)));
    rec = json_pack("{s:s,s:s,s:o}", "requestId", inv->request_id, "status", status_of(r),
                    "metrics", metrics);
    if (!r->ok && r->error_type)
        json_object_set_new(rec, "errorType", json_string(r->error_type));
    for (char *t = report; (t = strchr(t, '\t'));)
        *t = ' ';
    platform(env, inv, SL_LVL_INFO, "platform.report", inv->request_id, src, rec, report);
}

void sl__fnlog_init_start(struct sl_env *env, const char *init_type)
{
    char text[128];

    if (!json_format(env->pool))
        return;
    snprintf(text, sizeof(text), "INIT_START (%s)", init_type);
    platform(env, NULL, SL_LVL_INFO, "platform.initStart", NULL, NULL,
             json_pack("{s:s,s:s}", "initializationType", init_type, "phase", "init"), text);
}

void sl__fnlog_init_report(struct sl_env *env, bool restored)
{
    char text[128];

    if (!json_format(env->pool) || env->kind == ENV_TEMPLATE)
        return;
    snprintf(text, sizeof(text), "INIT_REPORT Init Duration: %.2f ms", env->init_ms);
    platform(env, NULL, SL_LVL_INFO, "platform.initReport", NULL, NULL,
             json_pack("{s:s,s:s,s:{s:f}}", "initializationType",
                       restored ? "snap-start" : env->provisioned ? "provisioned-concurrency"
                                                                  : "on-demand",
                       "phase", "init", "metrics", "durationMs", ms3(env->init_ms)),
             text);
}

void sl__fnlog_dropped(struct sl_env *env, const char *msg)
{
    const char *rid = line_request(env);

    if (!json_format(env->pool)) {
        SL_WARN(env->pool->inst, "[%s] %s", rid ? rid : "init", msg);
        to_tail(env, NULL, msg, strlen(msg));
        to_ring(env, SL_LVL_WARN, "platform.logsDropped", rid, line_source(env), msg, false,
                NULL);
        return;
    }
    platform(env, NULL, SL_LVL_WARN, "platform.logsDropped", rid, line_source(env),
             json_pack("{s:I,s:I,s:s}", "droppedBytes", (json_int_t)env->drop_bytes,
                       "droppedRecords", (json_int_t)env->drop_lines, "reason",
                       "over output_kb_per_s"),
             msg);
}
