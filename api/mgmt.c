/* The Lambda management API: Lambda's REST paths and JSON, as the AWS CLI
 * and SDKs send and parse them (botocore's lambda/2015-03-31 model).
 *
 *   GET    /2015-03-31/functions                                 ListFunctions
 *   GET    /2015-03-31/functions/{F}                             GetFunction
 *   GET    /2015-03-31/functions/{F}/configuration               GetFunctionConfiguration
 *   GET    /2015-03-31/event-source-mappings                     ListEventSourceMappings
 *   GET    /2015-03-31/event-source-mappings/{UUID}              GetEventSourceMapping
 *   PUT    /2015-03-31/event-source-mappings/{UUID}              UpdateEventSourceMapping
 *   GET    /2019-09-30/functions/{F}/concurrency                 GetFunctionConcurrency
 *   PUT    /2017-10-31/functions/{F}/concurrency                 PutFunctionConcurrency
 *   DELETE /2017-10-31/functions/{F}/concurrency                 DeleteFunctionConcurrency
 *   GET    /2019-09-30/functions/{F}/provisioned-concurrency     Get/Put/Delete
 *   PUT|DELETE  (same path, ?Qualifier=$LATEST)                  ProvisionedConcurrencyConfig
 *   GET|PUT /2019-09-25/functions/{F}/event-invoke-config        Get/PutFunctionEventInvokeConfig
 *   GET    /2016-08-19/account-settings                          GetAccountSettings
 *   GET    /2017-03-31/tags/{ARN}                                ListTags
 *
 * Reads need the credential's `read` scope, writes `admin`; either only
 * for the functions the credential names. Writes are runtime overrides
 * (sluice/overrides.h): checked, written to data_dir/overrides.json by a
 * worker, then applied to the running configuration and sources on the
 * loop thread. One write at a time: another one meanwhile is 409
 * ResourceConflictException. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "internal.h"
#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/overrides.h"
#include "sluice/poller.h"
#include "sluice/pool.h"

#define SEGS_MAX       8
#define PAGE_FUNCTIONS 50       /* Lambda's ListFunctions returns at most 50 */
#define PAGE_MAPPINGS  100      /* and ListEventSourceMappings 100 */
#define BODY_MAX       (64 * 1024)

enum op {
    OP_NONE = 0,
    OP_LIST_FUNCTIONS, OP_GET_FUNCTION, OP_GET_CONFIG,
    OP_LIST_ESM, OP_GET_ESM, OP_UPDATE_ESM,
    OP_GET_CONC, OP_PUT_CONC, OP_DEL_CONC,
    OP_GET_PROV, OP_PUT_PROV, OP_DEL_PROV,
    OP_GET_EIC, OP_PUT_EIC,
    OP_ACCOUNT, OP_LIST_TAGS,
};

/* An overrides write in flight: the worker writes `text`, then the loop
 * commits `draft` and answers. */
struct mwrite {
    struct sl_api            *a;
    struct evhttp_request    *req;      /* NULL once the client went away */
    struct evhttp_connection *evcon;
    char                      id[37];
    enum op                   op;
    char                      name[FN_NAME_MAX + 1]; /* function, or the source for mappings */
    json_t                   *draft;
    char                     *text;
    char                     *dir;
    int                       rc;
    char                      why[512];
};

/* ------------------------------------------------------------------ */
/* Answers                                                             */

/* Lambda's error: X-Amzn-ErrorType and {"Type","Message"|"message"} (the
 * member's case as botocore's model has it for that exception). */
static void mgmt_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                       const char *type, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void mgmt_error(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                       const char *type, const char *fmt, ...)
{
    json_t *body = json_object();
    char msg[1024], *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_set_new(body, "Type", json_string(code >= 500 ? "Service" : "User"));
    json_object_set_new(body, strcmp(type, "ResourceNotFoundException") == 0 ? "Message"
                                                                               : "message",
                        sl__api_json_text(msg));
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Amzn-ErrorType", type);
    sl__api_respond(a, req, id, code, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

/* `body` (stolen) as JSON with status `code`. */
static void mgmt_json(struct sl_api *a, struct evhttp_request *req, const char *id, int code,
                      json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    sl__api_respond(a, req, id, code, "application/json", text, text ? strlen(text) : 0);
    free(text);
}

/* ------------------------------------------------------------------ */
/* Shapes                                                              */

static const char *runtime_name(int r)
{
    switch (r) {
    case SL_RUNTIME_LAMBDA: return "lambda";
    case SL_RUNTIME_PYTHON: return "python";
    case 3:                 return "provided";
    default:                return "native";
    }
}

/* Lambda's LastModified of a function: "2019-11-14T00:38:04.835+0000". */
static json_t *lambda_time(int64_t ms)
{
    char buf[48];

    sl_iso8601(ms, buf, sizeof(buf));
    buf[strlen(buf) - 1] = '\0'; /* the Z */
    strcat(buf, "+0000");
    return json_string(buf);
}

static int64_t modified_ms(const struct sl_api *a, const json_t *ov)
{
    const json_t *v = json_object_get(ov, "last_modified_ms");

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : a->started_ms;
}

static const json_t *fn_overrides(const struct sl_api *a, const char *name)
{
    return a->ov ? sl_overrides_function(a->ov, name) : NULL;
}

static const json_t *src_overrides(const struct sl_api *a, const char *name)
{
    return a->ov ? sl_overrides_source(a->ov, name) : NULL;
}

static json_t *function_config(const struct sl_api *a, const struct sl_function_conf *fc)
{
    json_t *j = json_object(), *vars = json_object();
    struct utsname u;
    const char *arch = "x86_64";

    if (uname(&u) == 0 && strcmp(u.machine, "aarch64") == 0)
        arch = "arm64";
    json_object_set_new(j, "FunctionName", json_string(fc->name));
    json_object_set_new(j, "FunctionArn", json_string(fc->arn));
    json_object_set_new(j, "Runtime", json_string(runtime_name(fc->runtime)));
    json_object_set_new(j, "Handler", sl__api_json_text(fc->handler));
    json_object_set_new(j, "CodeSize", json_integer(0));
    json_object_set_new(j, "Description", json_string(""));
    json_object_set_new(j, "Timeout", json_integer((json_int_t)((fc->timeout_ms + 999) / 1000)));
    json_object_set_new(j, "MemorySize", json_integer((json_int_t)fc->memory_mb));
    json_object_set_new(j, "LastModified", lambda_time(modified_ms(a, fn_overrides(a, fc->name))));
    json_object_set_new(j, "CodeSha256", json_string(""));
    json_object_set_new(j, "Version", json_string("$LATEST"));
    /* names only: values may be secrets (${VAR} interpolation) */
    for (size_t i = 0; i < fc->environment.n; i++)
        json_object_set_new(vars, fc->environment.v[i].key, json_string("***"));
    json_object_set_new(j, "Environment", json_pack("{s:o}", "Variables", vars));
    json_object_set_new(j, "TracingConfig", json_pack("{s:s}", "Mode", "PassThrough"));
    json_object_set_new(j, "State", json_string("Active"));
    json_object_set_new(j, "LastUpdateStatus", json_string("Successful"));
    json_object_set_new(j, "PackageType", json_string("Zip"));
    json_object_set_new(j, "Architectures", json_pack("[s]", arch));
    json_object_set_new(j, "EphemeralStorage",
                        json_pack("{s:I}", "Size", (json_int_t)fc->ephemeral_storage_mb));
    json_object_set_new(j, "SnapStart",
                        json_pack("{s:s, s:s}", "ApplyOn", fc->snapstart ? "PublishedVersions"
                                                                         : "None",
                                  "OptimizationStatus", fc->snapstart ? "On" : "Off"));
    {
        json_t *lc = json_pack("{s:s, s:s}", "LogFormat",
                               fc->log_format == SL_FN_LOG_JSON ? "JSON" : "Text", "LogGroup",
                               "");
        char *group = sl_asprintf("/aws/lambda/%s", fc->name);

        json_object_set_new(lc, "LogGroup", json_string(group));
        free(group);
        if (fc->log_format == SL_FN_LOG_JSON && fc->log_level)
            json_object_set_new(lc, "ApplicationLogLevel", sl__api_json_text(fc->log_level));
        json_object_set_new(j, "LoggingConfig", lc);
    }
    return j;
}

static json_t *sink_destination(const char *sink)
{
    return json_pack("{s:s}", "Destination", sink);
}

static json_t *mapping_config(const struct sl_api *a, const struct sl_source_conf *sc)
{
    const struct sl_config *c = a->conf;
    const struct sl_function_conf *fc = sl_config_function(c, sc->function);
    struct sl_source *s = a->engine ? sl_engine_source(a->engine, sc->name) : NULL;
    const json_t *ov = src_overrides(a, sc->name);
    bool stream = sc->type && (sc->type->traits & SL_CONF_STREAM);
    json_t *j = json_object();
    char uuid[37], *arn;
    const char *state, *result = "No records processed";

    sl_mapping_uuid(c, sc, uuid);
    json_object_set_new(j, "UUID", json_string(uuid));
    arn = sl_asprintf("arn:aws:lambda:%s:%s:event-source-mapping:%s", c->server.region,
                      c->server.account_id, uuid);
    json_object_set_new(j, "EventSourceMappingArn", json_string(arn));
    free(arn);
    if (sc->type && (sc->type->traits & SL_CONF_START)) {
        static const char *const pos[] = { "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP" };

        json_object_set_new(j, "StartingPosition",
                            json_string(pos[sc->starting_position >= 0 &&
                                                    sc->starting_position < 3
                                                ? sc->starting_position
                                                : 0]));
    }
    json_object_set_new(j, "BatchSize", json_integer((json_int_t)sc->batch_size));
    json_object_set_new(j, "MaximumBatchingWindowInSeconds",
                        json_integer((json_int_t)(sc->maximum_batching_window_ms / 1000)));
    if (sc->type && sc->type->describe)
        sc->type->describe(sc, j);
    json_object_set_new(j, "FunctionArn", json_string(fc ? fc->arn : ""));
    json_object_set_new(j, "LastModified",
                        json_real((double)modified_ms(a, ov) / 1000.0));
    if (s) {
        state = sl_source_state(s);
        if (s->last_fail_ms > s->last_ok_ms)
            result = "PROBLEM: Function call failed";
        else if (s->last_ok_ms > 0)
            result = "OK";
    } else {
        state = sc->enabled ? "Enabling" : "Disabled";
    }
    json_object_set_new(j, "LastProcessingResult", json_string(result));
    json_object_set_new(j, "State", json_string(state));
    json_object_set_new(j, "StateTransitionReason",
                        json_string(json_object_get(ov, "enabled") ? "USER_INITIATED"
                                                                   : "User action"));
    if (sc->on_failure)
        json_object_set_new(j, "DestinationConfig",
                            json_pack("{s:o}", "OnFailure", sink_destination(sc->on_failure)));
    if (stream) {
        json_object_set_new(j, "ParallelizationFactor",
                            json_integer((json_int_t)sc->parallelization_factor));
        json_object_set_new(j, "MaximumRecordAgeInSeconds",
                            json_integer(sc->maximum_record_age_ms < 0
                                             ? -1
                                             : (json_int_t)(sc->maximum_record_age_ms / 1000)));
        json_object_set_new(j, "BisectBatchOnFunctionError",
                            json_boolean(sc->bisect_batch_on_function_error));
        json_object_set_new(j, "MaximumRetryAttempts",
                            json_integer((json_int_t)sc->maximum_retry_attempts));
    }
    json_object_set_new(j, "FunctionResponseTypes",
                        sc->report_batch_item_failures ? json_pack("[s]", "ReportBatchItemFailures")
                                                       : json_array());
    if (sc->filter_criteria && json_is_array(sc->filter_criteria)) {
        json_t *fl = json_array(), *p;
        size_t i;

        json_array_foreach(sc->filter_criteria, i, p) {
            char *t = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);

            json_array_append_new(fl, json_pack("{s:s}", "Pattern", t ? t : "{}"));
            free(t);
        }
        json_object_set_new(j, "FilterCriteria", json_pack("{s:o}", "Filters", fl));
    }
    return j;
}

static json_t *invoke_config(const struct sl_api *a, const struct sl_function_conf *fc)
{
    json_t *j = json_object(), *dc = json_object();

    json_object_set_new(j, "FunctionArn", json_string(fc->arn));
    json_object_set_new(j, "MaximumRetryAttempts",
                        json_integer((json_int_t)fc->async.maximum_retry_attempts));
    json_object_set_new(j, "MaximumEventAgeInSeconds",
                        json_integer((json_int_t)(fc->async.maximum_event_age_ms / 1000)));
    json_object_set_new(j, "LastModified",
                        json_real((double)modified_ms(a, fn_overrides(a, fc->name)) / 1000.0));
    if (fc->async.on_success)
        json_object_set_new(dc, "OnSuccess", sink_destination(fc->async.on_success));
    if (fc->async.on_failure)
        json_object_set_new(dc, "OnFailure", sink_destination(fc->async.on_failure));
    json_object_set_new(j, "DestinationConfig", dc);
    return j;
}

static json_t *prov_config(const struct sl_api *a, const struct sl_function_conf *fc,
                           size_t idx)
{
    int64_t want = fc->provisioned_concurrency;
    int64_t have = a->prov_started ? a->prov_started[idx] : want;
    json_t *j = json_pack("{s:I, s:I, s:I}", "RequestedProvisionedConcurrentExecutions",
                          (json_int_t)want, "AvailableProvisionedConcurrentExecutions",
                          (json_int_t)(have < want ? have : want),
                          "AllocatedProvisionedConcurrentExecutions",
                          (json_int_t)(have < want ? have : want));

    json_object_set_new(j, "Status", json_string(have == want ? "READY" : "IN_PROGRESS"));
    if (have != want)
        json_object_set_new(j, "StatusReason",
                            json_string("sluice starts provisioned environments when it starts: "
                                        "this takes effect at the next start"));
    json_object_set_new(j, "LastModified", lambda_time(modified_ms(a, fn_overrides(a, fc->name))));
    return j;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

/* Split the (encoded) path into decoded segments; false when a segment
 * does not decode to text or there are too many. */
static bool split_path(const char *path, char *seg[SEGS_MAX], size_t *nseg)
{
    const char *p = path;

    *nseg = 0;
    if (*p != '/')
        return false;
    while (*p == '/') {
        const char *s = ++p;
        size_t dl = 0;
        char *raw, *d;

        while (*p && *p != '/')
            p++;
        if (p == s && !*p)
            break; /* one trailing slash */
        if (*nseg == SEGS_MAX)
            return false;
        raw = sl_strndup(s, (size_t)(p - s));
        d = evhttp_uridecode(raw, 0, &dl);
        free(raw);
        if (!d || strlen(d) != dl) {
            free(d);
            return false;
        }
        seg[(*nseg)++] = d;
    }
    return true;
}

static bool is_date(const char *s)
{
    return strcmp(s, "2015-03-31") == 0 || strcmp(s, "2017-10-31") == 0 ||
           strcmp(s, "2019-09-30") == 0 || strcmp(s, "2019-09-25") == 0 ||
           strcmp(s, "2016-08-19") == 0 || strcmp(s, "2017-03-31") == 0;
}

/* The operation for segments and method; *allow: the methods the path
 * has (405), NULL when the path is not the management API's. `arg`: the
 * segment naming the function, mapping or resource. */
static enum op route(char **g, size_t n, enum evhttp_cmd_type m, const char **allow,
                     const char **arg)
{
    bool get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD, put = m == EVHTTP_REQ_PUT,
         del = m == EVHTTP_REQ_DELETE;
    const char *d = n ? g[0] : "";

    *allow = NULL;
    *arg = NULL;
    if (n < 2 || !is_date(d))
        return OP_NONE;
    if (strcmp(d, "2015-03-31") == 0 && strcmp(g[1], "functions") == 0) {
        if (n == 2) {
            *allow = "GET";
            return get ? OP_LIST_FUNCTIONS : OP_NONE;
        }
        *arg = g[2];
        if (n == 3) {
            *allow = "GET";
            return get ? OP_GET_FUNCTION : OP_NONE;
        }
        if (n == 4 && strcmp(g[3], "configuration") == 0) {
            *allow = "GET";
            return get ? OP_GET_CONFIG : OP_NONE;
        }
        return OP_NONE;
    }
    if (strcmp(d, "2015-03-31") == 0 && strcmp(g[1], "event-source-mappings") == 0) {
        if (n == 2) {
            *allow = "GET";
            return get ? OP_LIST_ESM : OP_NONE;
        }
        if (n == 3) {
            *arg = g[2];
            *allow = "GET, PUT";
            return get ? OP_GET_ESM : put ? OP_UPDATE_ESM : OP_NONE;
        }
        return OP_NONE;
    }
    if (strcmp(g[1], "functions") == 0 && n == 4) {
        *arg = g[2];
        if (strcmp(d, "2019-09-30") == 0 && strcmp(g[3], "concurrency") == 0) {
            *allow = "GET";
            return get ? OP_GET_CONC : OP_NONE;
        }
        if (strcmp(d, "2017-10-31") == 0 && strcmp(g[3], "concurrency") == 0) {
            *allow = "PUT, DELETE";
            return put ? OP_PUT_CONC : del ? OP_DEL_CONC : OP_NONE;
        }
        if (strcmp(d, "2019-09-30") == 0 && strcmp(g[3], "provisioned-concurrency") == 0) {
            *allow = "GET, PUT, DELETE";
            return get ? OP_GET_PROV : put ? OP_PUT_PROV : del ? OP_DEL_PROV : OP_NONE;
        }
        if (strcmp(d, "2019-09-25") == 0 && strcmp(g[3], "event-invoke-config") == 0) {
            *allow = "GET, PUT";
            return get ? OP_GET_EIC : put ? OP_PUT_EIC : OP_NONE;
        }
        return OP_NONE;
    }
    if (strcmp(d, "2016-08-19") == 0 && strcmp(g[1], "account-settings") == 0 && n == 2) {
        *allow = "GET";
        return get ? OP_ACCOUNT : OP_NONE;
    }
    if (strcmp(d, "2017-03-31") == 0 && strcmp(g[1], "tags") == 0 && n == 3) {
        *arg = g[2];
        *allow = "GET";
        return get ? OP_LIST_TAGS : OP_NONE;
    }
    return OP_NONE;
}

static bool is_write(enum op op)
{
    return op == OP_UPDATE_ESM || op == OP_PUT_CONC || op == OP_DEL_CONC || op == OP_PUT_PROV ||
           op == OP_DEL_PROV || op == OP_PUT_EIC;
}

/* The function `arg` names (a name or an ARN, with an optional
 * qualifier, which can only be $LATEST): 400, 403 or 404 answered and
 * NULL when it is not one the credential covers. */
static const struct sl_function_conf *find_function(struct sl_api *a, struct evhttp_request *req,
                                                    const char *id, const char *arg,
                                                    const char *qparam, const json_t *entry,
                                                    size_t *idx)
{
    char name[FN_NAME_MAX + 1], qual[QUALIFIER_MAX + 1];
    const struct sl_config *c = a->conf;

    if (sl__api_parse_function_name(arg, name, qual) != 0) {
        mgmt_error(a, req, id, 400, "ValidationException",
                   "1 validation error detected: Value '%.256s' at 'functionName' failed to "
                   "satisfy constraint: Member must satisfy regular expression pattern: "
                   "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                   "(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?",
                   arg);
        return NULL;
    }
    if (qparam && qual[0] && strcmp(qparam, qual) != 0) {
        mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                   "The derived qualifier from the function name does not match the specified "
                   "qualifier.");
        return NULL;
    }
    if (qparam && !qual[0])
        snprintf(qual, sizeof(qual), "%.*s", QUALIFIER_MAX, qparam);
    for (size_t i = 0; i < c->nfunctions; i++) {
        if (strcmp(c->functions[i].name, name) != 0)
            continue;
        if (qual[0] && strcmp(qual, "$LATEST") != 0)
            break;
        if (entry && !sl__api_token_covers(entry, name)) {
            mgmt_error(a, req, id, 403, "AccessDeniedException",
                       "this credential is not allowed to see or change function %s", name);
            return NULL;
        }
        if (idx)
            *idx = i;
        return &c->functions[i];
    }
    mgmt_error(a, req, id, 404, "ResourceNotFoundException",
               "Function not found: arn:aws:lambda:%s:%s:function:%s%s%.128s", c->server.region,
               c->server.account_id, name, qual[0] ? ":" : "", qual);
    return NULL;
}

static const struct sl_source_conf *find_mapping(struct sl_api *a, struct evhttp_request *req,
                                                 const char *id, const char *uuid,
                                                 const json_t *entry)
{
    const struct sl_config *c = a->conf;
    char u[37];

    for (size_t i = 0; i < c->nsources; i++) {
        sl_mapping_uuid(c, &c->sources[i], u);
        if (strcmp(u, uuid) != 0)
            continue;
        if (entry && !sl__api_token_covers(entry, c->sources[i].function)) {
            mgmt_error(a, req, id, 403, "AccessDeniedException",
                       "this credential is not allowed to see or change the mappings of "
                       "function %s", c->sources[i].function);
            return NULL;
        }
        return &c->sources[i];
    }
    mgmt_error(a, req, id, 404, "ResourceNotFoundException",
               "The resource you requested does not exist. (Service: Lambda, Status Code: 404, "
               "Request ID: %s)", id);
    return NULL;
}

/* The body as a JSON object (NULL answered: 400). */
static json_t *read_body(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(b);
    json_error_t je;
    json_t *j;

    if (n > BODY_MAX) {
        mgmt_error(a, req, id, 413, "RequestTooLargeException",
                   "Request must be smaller than %d bytes", BODY_MAX);
        return NULL;
    }
    j = n ? json_loadb((const char *)evbuffer_pullup(b, -1), n, JSON_REJECT_DUPLICATES, &je)
          : json_object();
    if (!j || !json_is_object(j)) {
        json_decref(j);
        mgmt_error(a, req, id, 400, "InvalidRequestContentException",
                   "Could not parse request body into json: %s",
                   j ? "not an object" : je.text);
        return NULL;
    }
    return j;
}

/* Every member of `body` is one of `known` (NULL-terminated); else 400. */
static bool only_known(struct sl_api *a, struct evhttp_request *req, const char *id,
                       const json_t *body, const char *const *known, const char *op)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)body, k, v) {
        const char *const *p;

        for (p = known; *p && strcmp(*p, k) != 0; p++)
            ;
        if (!*p) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "%s: unknown or unsupported parameter '%.64s' (settings other than "
                       "these come from the configuration file)", op, k);
            return false;
        }
    }
    return true;
}

/* Paging: MaxItems (1..10000) and Marker (an index this API gave). */
static bool paging(struct sl_api *a, struct evhttp_request *req, const char *id,
                   const struct evkeyvalq *q, size_t page, size_t *start, size_t *max)
{
    const char *mi = evhttp_find_header(q, "MaxItems"), *mk = evhttp_find_header(q, "Marker");
    char *end;
    long long v;

    *start = 0;
    *max = page;
    if (mi) {
        errno = 0;
        v = strtoll(mi, &end, 10);
        if (!*mi || *end || errno || v < 1 || v > 10000) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "MaxItems must be a number from 1 to 10000");
            return false;
        }
        if ((size_t)v < page)
            *max = (size_t)v;
    }
    if (mk) {
        errno = 0;
        v = strtoll(mk, &end, 10);
        if (!*mk || *end || errno || v < 0 || v > 1000000) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "Marker is not one this API returned");
            return false;
        }
        *start = (size_t)v;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */

static void list_functions(struct sl_api *a, struct evhttp_request *req, const char *id,
                           const struct evkeyvalq *q, const json_t *entry)
{
    const struct sl_config *c = a->conf;
    json_t *fl = json_array(), *out;
    size_t start, max, seen = 0, i;

    if (!paging(a, req, id, q, PAGE_FUNCTIONS, &start, &max)) {
        json_decref(fl);
        return;
    }
    out = json_object();
    for (i = 0; i < c->nfunctions; i++) {
        if (entry && !sl__api_token_covers(entry, c->functions[i].name))
            continue;
        if (seen++ < start)
            continue;
        if (json_array_size(fl) == max) {
            char m[24];

            snprintf(m, sizeof(m), "%zu", seen - 1);
            json_object_set_new(out, "NextMarker", json_string(m));
            break;
        }
        json_array_append_new(fl, function_config(a, &c->functions[i]));
    }
    json_object_set_new(out, "Functions", fl);
    mgmt_json(a, req, id, 200, out);
}

static void list_mappings(struct sl_api *a, struct evhttp_request *req, const char *id,
                          const struct evkeyvalq *q, const json_t *entry)
{
    const struct sl_config *c = a->conf;
    const char *fn = evhttp_find_header(q, "FunctionName");
    const char *src = evhttp_find_header(q, "EventSourceArn");
    const struct sl_function_conf *only = NULL;
    json_t *ml, *out;
    size_t start, max, seen = 0, i;

    if (fn && !(only = find_function(a, req, id, fn, NULL, entry, NULL)))
        return;
    if (!paging(a, req, id, q, PAGE_MAPPINGS, &start, &max))
        return;
    ml = json_array();
    out = json_object();
    for (i = 0; i < c->nsources; i++) {
        const struct sl_source_conf *sc = &c->sources[i];
        json_t *m;

        if (entry && !sl__api_token_covers(entry, sc->function))
            continue;
        if (only && strcmp(sc->function, only->name) != 0)
            continue;
        m = mapping_config(a, sc);
        if (src && !(json_is_string(json_object_get(m, "EventSourceArn")) &&
                     strcmp(json_string_value(json_object_get(m, "EventSourceArn")), src) == 0)) {
            json_decref(m);
            continue;
        }
        if (seen++ < start) {
            json_decref(m);
            continue;
        }
        if (json_array_size(ml) == max) {
            char mk[24];

            json_decref(m);
            snprintf(mk, sizeof(mk), "%zu", seen - 1);
            json_object_set_new(out, "NextMarker", json_string(mk));
            break;
        }
        json_array_append_new(ml, m);
    }
    json_object_set_new(out, "EventSourceMappings", ml);
    mgmt_json(a, req, id, 200, out);
}

static void account_settings(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    const struct sl_config *c = a->conf;
    int64_t reserved = 0;

    for (size_t i = 0; i < c->nfunctions; i++)
        if (c->functions[i].reserved_concurrency > 0)
            reserved += c->functions[i].reserved_concurrency;
    mgmt_json(a, req, id, 200,
              json_pack("{s:{s:i, s:i, s:i, s:I, s:I}, s:{s:i, s:I}}", "AccountLimit",
                        "TotalCodeSize", 0, "CodeSizeUnzipped", 0, "CodeSizeZipped", 0,
                        "ConcurrentExecutions", (json_int_t)c->server.concurrency_limit,
                        "UnreservedConcurrentExecutions",
                        (json_int_t)(c->server.concurrency_limit > reserved
                                         ? c->server.concurrency_limit - reserved
                                         : 0),
                        "AccountUsage", "TotalCodeSize", 0, "FunctionCount",
                        (json_int_t)c->nfunctions));
}

/* ------------------------------------------------------------------ */
/* Writes                                                              */

static void on_write_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct mwrite *w = arg;

    (void)evcon;
    w->req = NULL;
    w->evcon = NULL;
}

static void write_work(void *arg)
{
    struct mwrite *w = arg;

    w->rc = sl_overrides_write(w->dir, w->text, w->why, sizeof(w->why));
}

static void mwrite_free(struct mwrite *w)
{
    json_decref(w->draft);
    free(w->text);
    free(w->dir);
    free(w);
}

static const struct sl_source_conf *source_named(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsources; i++)
        if (strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    return NULL;
}

/* The file is written (or not): apply, steer the source, answer. */
static void write_done(void *arg)
{
    struct mwrite *w = arg;
    struct sl_api *a = w->a;
    struct evhttp_request *req = w->req;
    const struct sl_source_conf *sc;
    const struct sl_function_conf *fc;
    json_t *body = NULL;
    int code = 200;

    if (w->evcon)
        evhttp_connection_set_closecb(w->evcon, NULL, NULL);
    if (a)
        a->writing = NULL;
    if (!a) {
        mwrite_free(w);
        return;
    }
    if (w->rc != 0) {
        SL_ERROR(INST, "cannot save the overrides: %s", w->why);
        if (req)
            mgmt_error(a, req, w->id, 500, "ServiceException", "cannot save the change: %s",
                       w->why);
        mwrite_free(w);
        return;
    }
    sl_overrides_commit(a->ov, w->draft, a->conf_rw);
    w->draft = NULL;
    switch (w->op) {
    case OP_UPDATE_ESM:
        sc = source_named(a->conf, w->name);
        if (sc && a->engine) {
            struct sl_source *s = sl_engine_source(a->engine, sc->name);
            struct sl_err err;

            sl_err_clear(&err);
            if (s)
                sl_source_set_enabled(s, sc->enabled);
            else if (sc->enabled && sl_engine_start_source(a->engine, sc, &err) != 0)
                SL_ERROR(INST, "source %s: cannot start: %s", sc->name, err.msg);
        }
        SL_INFO(INST, "event source mapping %s updated (data_dir/%s)", w->name,
                SL_OVERRIDES_FILE);
        code = 202;
        body = sc ? mapping_config(a, sc) : json_object();
        break;
    case OP_PUT_CONC:
        fc = sl_config_function(a->conf, w->name);
        body = json_pack("{s:I}", "ReservedConcurrentExecutions",
                         (json_int_t)(fc ? fc->reserved_concurrency : 0));
        break;
    case OP_DEL_CONC:
    case OP_DEL_PROV:
        code = 204;
        break;
    case OP_PUT_PROV: {
        size_t idx = 0;

        fc = sl_config_function(a->conf, w->name);
        for (; fc && idx < a->conf->nfunctions && &a->conf->functions[idx] != fc; idx++)
            ;
        code = 202;
        body = fc ? prov_config(a, fc, idx) : json_object();
        break;
    }
    case OP_PUT_EIC:
        fc = sl_config_function(a->conf, w->name);
        body = fc ? invoke_config(a, fc) : json_object();
        break;
    default:
        break;
    }
    if (w->op != OP_UPDATE_ESM)
        SL_INFO(INST, "function %s: overrides updated (data_dir/%s)", w->name, SL_OVERRIDES_FILE);
    if (req && body)
        mgmt_json(a, req, w->id, code, body);
    else if (req)
        sl__api_respond(a, req, w->id, code, NULL, NULL, 0);
    else
        json_decref(body);
    mwrite_free(w);
}

/* Hand `draft` (stolen) to a worker to write; the answer follows in
 * write_done. */
static void write_start(struct sl_api *a, struct evhttp_request *req, const char *id, enum op op,
                        const char *name, json_t *draft)
{
    struct mwrite *w = sl_calloc(1, sizeof(*w));

    w->a = a;
    w->req = req;
    w->evcon = evhttp_request_get_connection(req);
    snprintf(w->id, sizeof(w->id), "%s", id);
    w->op = op;
    snprintf(w->name, sizeof(w->name), "%s", name);
    w->draft = draft;
    w->text = sl_overrides_text(draft);
    w->dir = sl_strdup(a->conf->server.data_dir);
    if (w->evcon)
        evhttp_connection_set_closecb(w->evcon, on_write_conn_close, w);
    a->writing = w;
    sl_pool_submit(a->pool, write_work, write_done, w);
}

/* The draft for a write, or NULL answered (no writes here, or one in
 * flight). */
static json_t *write_begin(struct sl_api *a, struct evhttp_request *req, const char *id)
{
    if (!a->conf_rw || !a->ov || !a->pool) {
        mgmt_error(a, req, id, 503, "ServiceException",
                   "this server does not take changes (no data_dir overrides)");
        return NULL;
    }
    if (!a->accepting) {
        mgmt_error(a, req, id, 503, "ServiceException", "sluice is stopping");
        return NULL;
    }
    if (a->writing) {
        mgmt_error(a, req, id, 409, "ResourceConflictException",
                   "The operation cannot be performed at this time. Another change is being "
                   "saved; try again.");
        return NULL;
    }
    return sl_overrides_draft(a->ov);
}

/* Put key=v into draft for source sc / function fc, or answer 400. */
static bool put(struct sl_api *a, struct evhttp_request *req, const char *id, json_t *draft,
                const struct sl_source_conf *sc, const struct sl_function_conf *fc,
                const char *key, json_t *v, const char *param)
{
    char why[512];
    int rc = sl_overrides_put(draft, sc, fc, key, v, why, sizeof(why));

    json_decref(v);
    if (rc != 0)
        mgmt_error(a, req, id, 400, "InvalidParameterValueException", "%s: %s", param, why);
    return rc == 0;
}

static bool want_int(struct sl_api *a, struct evhttp_request *req, const char *id,
                     const json_t *v, const char *param)
{
    if (json_is_integer(v))
        return true;
    mgmt_error(a, req, id, 400, "InvalidParameterValueException", "%s must be an integer", param);
    return false;
}

static bool want_bool(struct sl_api *a, struct evhttp_request *req, const char *id,
                      const json_t *v, const char *param)
{
    if (json_is_boolean(v))
        return true;
    mgmt_error(a, req, id, 400, "InvalidParameterValueException", "%s must be true or false",
               param);
    return false;
}

static void update_mapping(struct sl_api *a, struct evhttp_request *req, const char *id,
                           const struct sl_source_conf *sc, const json_t *entry)
{
    static const char *const known[] = {
        "UUID", "FunctionName", "Enabled", "BatchSize", "MaximumBatchingWindowInSeconds",
        "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
        "FunctionResponseTypes", NULL,
    };
    json_t *body = read_body(a, req, id), *draft = NULL, *v;
    bool ok = true;

    if (!body || !only_known(a, req, id, body, known, "UpdateEventSourceMapping"))
        goto out;
    if ((v = json_object_get(body, "FunctionName"))) {
        const struct sl_function_conf *fc;

        if (!json_is_string(v)) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "FunctionName must be a string");
            goto out;
        }
        if (!(fc = find_function(a, req, id, json_string_value(v), NULL, entry, NULL)))
            goto out;
        if (strcmp(fc->name, sc->function) != 0) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "FunctionName: this mapping feeds %s; a source's function is set in the "
                       "configuration file", sc->function);
            goto out;
        }
    }
    if (!(draft = write_begin(a, req, id)))
        goto out;
    if (ok && (v = json_object_get(body, "Enabled")))
        ok = want_bool(a, req, id, v, "Enabled") &&
             put(a, req, id, draft, sc, NULL, "enabled", json_incref(v), "Enabled");
    if (ok && (v = json_object_get(body, "BatchSize")))
        ok = want_int(a, req, id, v, "BatchSize") &&
             put(a, req, id, draft, sc, NULL, "batch_size", json_incref(v), "BatchSize");
    if (ok && (v = json_object_get(body, "MaximumBatchingWindowInSeconds"))) {
        ok = want_int(a, req, id, v, "MaximumBatchingWindowInSeconds");
        if (ok && (json_integer_value(v) < 0 || json_integer_value(v) > 300)) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "MaximumBatchingWindowInSeconds must be from 0 to 300");
            ok = false;
        }
        ok = ok && put(a, req, id, draft, sc, NULL, "maximum_batching_window_ms",
                       json_integer(json_integer_value(v) * 1000),
                       "MaximumBatchingWindowInSeconds");
    }
    if (ok && (v = json_object_get(body, "MaximumRetryAttempts")))
        ok = want_int(a, req, id, v, "MaximumRetryAttempts") &&
             put(a, req, id, draft, sc, NULL, "maximum_retry_attempts", json_incref(v),
                 "MaximumRetryAttempts");
    if (ok && (v = json_object_get(body, "MaximumRecordAgeInSeconds")))
        ok = want_int(a, req, id, v, "MaximumRecordAgeInSeconds") &&
             put(a, req, id, draft, sc, NULL, "maximum_record_age_s", json_incref(v),
                 "MaximumRecordAgeInSeconds");
    if (ok && (v = json_object_get(body, "BisectBatchOnFunctionError")))
        ok = want_bool(a, req, id, v, "BisectBatchOnFunctionError") &&
             put(a, req, id, draft, sc, NULL, "bisect_batch_on_function_error", json_incref(v),
                 "BisectBatchOnFunctionError");
    if (ok && (v = json_object_get(body, "FunctionResponseTypes"))) {
        size_t n = json_array_size(v);
        const char *t = json_string_value(json_array_get(v, 0));

        if (!json_is_array(v) || n > 1 || (n == 1 && (!t || strcmp(t, "ReportBatchItemFailures")))) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "FunctionResponseTypes must be [] or [\"ReportBatchItemFailures\"]");
            ok = false;
        } else {
            ok = put(a, req, id, draft, sc, NULL, "report_batch_item_failures",
                     json_boolean(n == 1), "FunctionResponseTypes");
        }
    }
    if (ok) {
        write_start(a, req, id, OP_UPDATE_ESM, sc->name, draft);
        draft = NULL;
    }
out:
    json_decref(draft);
    json_decref(body);
}

static void function_write(struct sl_api *a, struct evhttp_request *req, const char *id,
                           enum op op, const struct sl_function_conf *fc)
{
    static const char *const conc[] = { "ReservedConcurrentExecutions", NULL };
    static const char *const prov[] = { "ProvisionedConcurrentExecutions", NULL };
    static const char *const eic[] = { "MaximumRetryAttempts", "MaximumEventAgeInSeconds",
                                       "DestinationConfig", NULL };
    json_t *body = NULL, *draft = NULL, *v;
    bool ok = true;

    if (op == OP_PUT_CONC || op == OP_PUT_PROV || op == OP_PUT_EIC) {
        if (!(body = read_body(a, req, id)))
            return;
        if (!only_known(a, req, id, body,
                        op == OP_PUT_CONC ? conc : op == OP_PUT_PROV ? prov : eic,
                        op == OP_PUT_CONC   ? "PutFunctionConcurrency"
                        : op == OP_PUT_PROV ? "PutProvisionedConcurrencyConfig"
                                            : "PutFunctionEventInvokeConfig"))
            goto out;
    }
    switch (op) {
    case OP_PUT_CONC:
        v = json_object_get(body, "ReservedConcurrentExecutions");
        if (!v || !want_int(a, req, id, v, "ReservedConcurrentExecutions")) {
            if (!v)
                mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                           "ReservedConcurrentExecutions is required");
            goto out;
        }
        if (json_integer_value(v) < 0) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "ReservedConcurrentExecutions must be 0 or more");
            goto out;
        }
        if (json_integer_value(v) < fc->provisioned_concurrency) {
            mgmt_error(a, req, id, 409, "ResourceConflictException",
                       "ReservedConcurrentExecutions %lld is below the function's provisioned "
                       "concurrency (%lld)", (long long)json_integer_value(v),
                       (long long)fc->provisioned_concurrency);
            goto out;
        }
        if (!(draft = write_begin(a, req, id)))
            goto out;
        ok = put(a, req, id, draft, NULL, fc, "reserved_concurrency", json_incref(v),
                 "ReservedConcurrentExecutions");
        break;
    case OP_DEL_CONC:
        if (!(draft = write_begin(a, req, id)))
            goto out;
        ok = put(a, req, id, draft, NULL, fc, "reserved_concurrency", json_integer(-1),
                 "ReservedConcurrentExecutions");
        break;
    case OP_PUT_PROV:
    case OP_DEL_PROV: {
        json_int_t n = 0;

        if (op == OP_PUT_PROV) {
            v = json_object_get(body, "ProvisionedConcurrentExecutions");
            if (!v || !want_int(a, req, id, v, "ProvisionedConcurrentExecutions")) {
                if (!v)
                    mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                               "ProvisionedConcurrentExecutions is required");
                goto out;
            }
            n = json_integer_value(v);
            if (n < 1) {
                mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                           "ProvisionedConcurrentExecutions must be 1 or more");
                goto out;
            }
            if (fc->reserved_concurrency >= 0 && n > fc->reserved_concurrency) {
                mgmt_error(a, req, id, 409, "ResourceConflictException",
                           "ProvisionedConcurrentExecutions %lld is above the function's "
                           "reserved concurrency (%lld)", (long long)n,
                           (long long)fc->reserved_concurrency);
                goto out;
            }
        }
        if (!(draft = write_begin(a, req, id)))
            goto out;
        ok = put(a, req, id, draft, NULL, fc, "provisioned_concurrency", json_integer(n),
                 "ProvisionedConcurrentExecutions");
        break;
    }
    case OP_PUT_EIC:
        if ((v = json_object_get(body, "DestinationConfig")) &&
            !(json_is_object(v) && json_object_size(v) == 0)) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "DestinationConfig: destinations are sinks named in the configuration "
                       "file (async.on_success, async.on_failure)");
            goto out;
        }
        if (!(draft = write_begin(a, req, id)))
            goto out;
        if (ok && (v = json_object_get(body, "MaximumRetryAttempts")))
            ok = want_int(a, req, id, v, "MaximumRetryAttempts") &&
                 put(a, req, id, draft, NULL, fc, "async.maximum_retry_attempts",
                     json_incref(v), "MaximumRetryAttempts");
        if (ok && (v = json_object_get(body, "MaximumEventAgeInSeconds")))
            ok = want_int(a, req, id, v, "MaximumEventAgeInSeconds") &&
                 put(a, req, id, draft, NULL, fc, "async.maximum_event_age_s", json_incref(v),
                     "MaximumEventAgeInSeconds");
        break;
    default:
        goto out;
    }
    if (ok) {
        write_start(a, req, id, op, fc->name, draft);
        draft = NULL;
    }
out:
    json_decref(draft);
    json_decref(body);
}

/* ------------------------------------------------------------------ */

bool sl__mgmt_handle(struct sl_api *a, struct evhttp_request *req, const char *id,
                     const char *path, const char *query)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char *seg[SEGS_MAX];
    size_t nseg = 0, idx = 0;
    const char *allow, *arg;
    struct evkeyvalq q;
    const json_t *entry_c;
    json_t *entry;
    enum op op;
    bool ok = split_path(path, seg, &nseg);

    TAILQ_INIT(&q);
    if (!ok) {
        /* not text, or deeper than any route: a management path only if
         * it starts like one */
        bool ours = nseg >= 1 && is_date(seg[0]);

        for (size_t i = 0; i < nseg; i++)
            free(seg[i]);
        if (!ours)
            return false;
        mgmt_error(a, req, id, 400, "ValidationException",
                   "the request path is not valid (bad percent-encoding or too deep)");
        return true;
    }
    op = route(seg, nseg, m, &allow, &arg);
    if (op == OP_NONE && !allow) {
        for (size_t i = 0; i < nseg; i++)
            free(seg[i]);
        return false;
    }
    if (op == OP_NONE) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        sl__api_respond_error(a, req, id, 405, "MethodNotAllowedException", NULL,
                              "this method is not allowed here; use %s", allow);
        goto done;
    }
    if (!sl__api_check_token(a, req, id, &entry))
        goto done;
    entry_c = entry;
    if (entry && !(sl__api_scopes(entry) & (is_write(op) ? SL_SCOPE_ADMIN : SL_SCOPE_READ))) {
        mgmt_error(a, req, id, 403, "AccessDeniedException",
                   "this credential has no '%s' scope (server.auth scopes)",
                   is_write(op) ? "admin" : "read");
        goto done;
    }
    if (query && *query && evhttp_parse_query_str(query, &q) != 0) {
        mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                   "cannot parse the query string");
        goto done;
    }
    switch (op) {
    case OP_LIST_FUNCTIONS:
        list_functions(a, req, id, &q, entry_c);
        break;
    case OP_LIST_ESM:
        list_mappings(a, req, id, &q, entry_c);
        break;
    case OP_ACCOUNT:
        account_settings(a, req, id);
        break;
    case OP_GET_ESM:
    case OP_UPDATE_ESM: {
        const struct sl_source_conf *sc = find_mapping(a, req, id, arg, entry_c);

        if (sc && op == OP_GET_ESM)
            mgmt_json(a, req, id, 200, mapping_config(a, sc));
        else if (sc)
            update_mapping(a, req, id, sc, entry_c);
        break;
    }
    default: {
        const char *qual = evhttp_find_header(&q, "Qualifier");
        const struct sl_function_conf *fc;

        if ((op == OP_PUT_PROV || op == OP_DEL_PROV || op == OP_GET_PROV) && !qual) {
            mgmt_error(a, req, id, 400, "InvalidParameterValueException",
                       "Qualifier is required: sluice has $LATEST only");
            break;
        }
        if (!(fc = find_function(a, req, id, arg, qual, entry_c, &idx)))
            break;
        switch (op) {
        case OP_GET_FUNCTION: {
            json_t *j = json_object();

            json_object_set_new(j, "Configuration", function_config(a, fc));
            json_object_set_new(j, "Code", json_pack("{s:s, s:s}", "RepositoryType", "Local",
                                                     "Location", ""));
            json_object_set_new(j, "Tags", json_object());
            if (fc->reserved_concurrency >= 0)
                json_object_set_new(j, "Concurrency",
                                    json_pack("{s:I}", "ReservedConcurrentExecutions",
                                              (json_int_t)fc->reserved_concurrency));
            mgmt_json(a, req, id, 200, j);
            break;
        }
        case OP_GET_CONFIG:
            mgmt_json(a, req, id, 200, function_config(a, fc));
            break;
        case OP_GET_CONC:
            mgmt_json(a, req, id, 200,
                      fc->reserved_concurrency >= 0
                          ? json_pack("{s:I}", "ReservedConcurrentExecutions",
                                      (json_int_t)fc->reserved_concurrency)
                          : json_object());
            break;
        case OP_GET_PROV:
            if (fc->provisioned_concurrency <= 0)
                mgmt_error(a, req, id, 404, "ProvisionedConcurrencyConfigNotFoundException",
                           "No Provisioned Concurrency Config found for this function");
            else
                mgmt_json(a, req, id, 200, prov_config(a, fc, idx));
            break;
        case OP_GET_EIC:
            mgmt_json(a, req, id, 200, invoke_config(a, fc));
            break;
        case OP_LIST_TAGS:
            mgmt_json(a, req, id, 200, json_pack("{s:{}}", "Tags"));
            break;
        default:
            function_write(a, req, id, op, fc);
            break;
        }
    }
    }
done:
    evhttp_clear_headers(&q);
    for (size_t i = 0; i < nseg; i++)
        free(seg[i]);
    return true;
}

void sl_api_manage(struct sl_api *a, struct sl_config *conf, struct sl_overrides *ov,
                   struct sl_pool *pool)
{
    a->conf_rw = conf;
    a->ov = ov;
    a->pool = pool;
    free(a->prov_started);
    a->prov_started = sl_calloc(conf->nfunctions ? conf->nfunctions : 1, sizeof(int64_t));
    for (size_t i = 0; i < conf->nfunctions; i++)
        a->prov_started[i] = conf->functions[i].provisioned_concurrency;
}

void sl_api_set_engine(struct sl_api *a, struct sl_engine *e)
{
    if (a)
        a->engine = e;
}

void sl__mgmt_free(struct sl_api *a)
{
    /* a write still in flight (the pool outlives us): its callback answers
     * nobody and frees it */
    if (a->writing) {
        if (a->writing->evcon)
            evhttp_connection_set_closecb(a->writing->evcon, NULL, NULL);
        a->writing->a = NULL;
        a->writing->req = NULL;
        a->writing->evcon = NULL;
    }
    free(a->prov_started);
}
