/* Key tables: one row per configuration key. The loader, `sluice lint` and
 * docs/CONFIGURATION.md are all driven from these and from the tables each
 * source and sink type registers (pollers/registry.c, sinks/registry.c);
 * a key that is not in a table does not exist. Here: functions, the keys
 * every source or sink has, server and log. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "schema.h"
#include "sluice/datadir.h"
#include "sluice/filter.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/redis.h"

#define SEC  1000     /* ms per second */
#define MIN  60000
#define MB   (1024 * 1024)

/* "provided" (Lambda's name for custom runtimes) is read as "lambda" (check_runtime) */
static const char *const runtime_names[] = { "native", "lambda", "python", "provided", NULL };
#define RUNTIME_PROVIDED 3
static const char *const fn_log_format_names[] = { "text", "json", NULL };
static const char *const network_names[] = { "none", "host", NULL };
static const char *const sandbox_names[] = { "strict", "relaxed", NULL };
static const char *const start_names[] = { "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", NULL };
static const char *const format_names[] = { "text", "json", NULL };

const char *sl_conf_type_name(const struct sl_conf_type *t)
{
    return t ? t->name : "?";
}

/* ------------------------------------------------------------------ */
/* Check hooks                                                         */

static bool is_python_runtime(struct sl_conf_load *ld)
{
    const char *rt = sl__load_sibling(ld, "runtime");

    return rt && strcmp(rt, "python") == 0;
}

/* Lambda's Python handler string: module.function, the module dotted or
 * slashed (`pkg/mod.fn` imports pkg.mod), the function an identifier. */
static bool python_handler_ok(const char *h)
{
    const char *dot = strrchr(h, '.'), *p;

    if (!dot || dot == h || !dot[1] || h[0] == '/' || h[0] == '.' || dot[-1] == '/' ||
        dot[-1] == '.')
        return false;
    if (!isalpha((unsigned char)dot[1]) && dot[1] != '_')
        return false;
    for (p = dot + 1; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    for (p = h; p < dot; p++) {
        if (isspace((unsigned char)*p) || (unsigned char)*p < 0x20)
            return false;
        if ((*p == '.' || *p == '/') && (p[1] == '.' || p[1] == '/'))
            return false; /* an empty package name */
    }
    return true;
}

/* `handler`: with runtime python the module.function string, kept as
 * written; with the others an executable, resolved against the
 * configuration's directory. */
static void check_handler(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                          yaml_node_t *node)
{
    char **hp = field, *path;
    struct stat st;

    (void)k;
    if (is_python_runtime(ld)) {
        if (!python_handler_ok(*hp))
            sl_conf_error(ld, node, "handler '%s' is not module.function (as "
                          "app.lambda_handler or pkg/mod.fn), as runtime python needs", *hp);
        return;
    }
    path = sl__load_resolve_path(ld, *hp);
    free(*hp);
    *hp = path;
    if (stat(path, &st) != 0)
        sl_conf_error(ld, node, "handler %s does not exist", path);
    else if (!S_ISREG(st.st_mode))
        sl_conf_error(ld, node, "handler %s is not a regular file", path);
    else if (access(path, X_OK) != 0)
        sl_conf_error(ld, node, "handler %s is not executable", path);
}

static void check_code(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                       yaml_node_t *node)
{
    const char *path = *(char **)field;
    struct stat st;

    (void)k;
    if (!is_python_runtime(ld))
        sl_conf_error(ld, node, "`code` is for runtime python only (the other runtimes run "
                      "`handler`, an executable, with its directory as the code)");
    else if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        sl_conf_error(ld, node, "code %s is not a directory", path);
}

/* `lambda` (alias `provided`): a bootstrap speaking the Lambda Runtime API
 * (sandbox/rapi.c), which needs the env's own network namespace. */
static void check_runtime(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                          yaml_node_t *node)
{
    const char *v;
    bool snap = false;
    char why[128];

    (void)k;
    if (*(int *)field == RUNTIME_PROVIDED)
        *(int *)field = SL_RUNTIME_LAMBDA;
    if (*(int *)field != SL_RUNTIME_LAMBDA)
        return;
    /* the Runtime API listens on the env's own 127.0.0.1: without a
     * network namespace of its own there is no address only it can reach */
    if ((v = sl__load_sibling(ld, "sandbox")) && strcmp(v, "relaxed") == 0)
        sl_conf_error(ld, node, "runtime lambda needs `sandbox: strict`: the Runtime API "
                      "listens inside the environment's own network namespace, which a relaxed "
                      "sandbox does not have");
    else if ((v = sl__load_sibling(ld, "network")) && strcmp(v, "host") == 0)
        sl_conf_error(ld, node, "runtime lambda needs `network: none`: with the host's network "
                      "the Runtime API's 127.0.0.1:9001 would be reachable from the host and "
                      "every other environment on it");
    else if ((v = sl__load_sibling(ld, "snapstart")) &&
             sl__parse_bool(v, &snap, why, sizeof(why)) == 0 && snap)
        sl_conf_error(ld, node, "runtime lambda cannot use `snapstart` yet: the Runtime API's "
                      "restore hooks (/runtime/restore/next) are not implemented");
}

/* Lambda's LoggingConfig levels: one of `levels`, and only with
 * `log_format: json` (Lambda applies levels to JSON logs only). */
static void check_level_of(struct sl_conf_load *ld, yaml_node_t *node, const char *key,
                           const char *v, const char *const *levels, const char *shown)
{
    const char *fmt = sl__load_sibling(ld, "log_format");

    for (int i = 0; levels[i]; i++)
        if (strcmp(v, levels[i]) == 0) {
            if (!fmt || strcmp(fmt, "json") != 0)
                sl_conf_error(ld, node, "%s needs `log_format: json` (as in Lambda, "
                              "levels apply to JSON logs only)", key);
            return;
        }
    sl_conf_error(ld, node, "'%s' is not one of %s", v, shown);
}

static const char *const app_levels[] = { "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL",
                                          NULL };

static void check_log_level(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                            yaml_node_t *node)
{
    (void)k;
    if (sl__load_sibling(ld, "application_log_level")) {
        sl_conf_error(ld, node, "log_level is the old name of application_log_level: set "
                      "application_log_level only");
        return;
    }
    check_level_of(ld, node, "log_level", *(char **)field, app_levels,
                   "TRACE, DEBUG, INFO, WARN, ERROR, FATAL");
}

static void check_app_level(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                            yaml_node_t *node)
{
    (void)k;
    check_level_of(ld, node, "application_log_level", *(char **)field, app_levels,
                   "TRACE, DEBUG, INFO, WARN, ERROR, FATAL");
}

static void check_system_level(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                               yaml_node_t *node)
{
    static const char *const levels[] = { "DEBUG", "INFO", "WARN", NULL };

    (void)k;
    check_level_of(ld, node, "system_log_level", *(char **)field, levels, "DEBUG, INFO, WARN");
}

static void check_layers(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                         yaml_node_t *node)
{
    const struct sl_strlist *l = field;
    struct stat st;

    (void)k;
    for (size_t i = 0; i < l->n; i++)
        if (stat(l->v[i], &st) != 0 || !S_ISDIR(st.st_mode))
            sl_conf_error(ld, node, "layer %s is not a directory", l->v[i]);
}

/* Lambda's own rules for variables: reserved names are refused, keys start
 * with a letter, use [A-Za-z0-9_], and all of them fit in 4 KB. Unlike
 * Lambda, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN
 * may be set: sluice has no execution role to take them from. */
static const char *const reserved_env[] = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL", "AWS_ACCESS_KEY", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", NULL,
};

static void check_environment(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                              yaml_node_t *node)
{
    const struct sl_kvlist *env = field;
    size_t total = 0;

    (void)k;
    for (size_t i = 0; i < env->n; i++) {
        const char *key = env->v[i].key;
        int ok = isalpha((unsigned char)key[0]) && key[1] != '\0';

        for (const char *p = key; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '_';
        if (!ok)
            sl_conf_error(ld, node, "variable name '%s' must start with a letter, have at least "
                          "2 characters and use only letters, digits and '_'", key);
        for (int r = 0; reserved_env[r]; r++)
            if (strcmp(key, reserved_env[r]) == 0)
                sl_conf_error(ld, node, "variable name '%s' is reserved", key);
        total += strlen(key) + strlen(env->v[i].value);
    }
    if (total > 4096)
        sl_conf_error(ld, node, "variables take %zu bytes, more than the 4 KB limit", total);
}

static void check_function_ref(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                               yaml_node_t *node)
{
    const char *name = *(char **)field;

    (void)k;
    if (!sl__load_has_function(ld, name))
        sl_conf_error(ld, node, "no function named '%s'", name);
}

static void check_sink_ref(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                           yaml_node_t *node)
{
    const char *name = *(char **)field;

    (void)k;
    if (!sl__load_has_sink(ld, name))
        sl_conf_error(ld, node, "no sink named '%s'", name);
}

/* ISO-8601 UTC ("2026-01-02T03:04:05Z") or Unix seconds. */
static void check_timestamp(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                            yaml_node_t *node)
{
    const char *s = *(char **)field;
    struct tm tm;
    const char *end;
    int64_t secs;
    char why[64];

    (void)k;
    if (sl__parse_int(s, &secs, why, sizeof(why)) == 0 && secs >= 0)
        return;
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && (*end == 'Z' || *end == '\0'))
        return;
    sl_conf_error(ld, node, "'%s' is not a timestamp (ISO-8601 like 2026-01-02T03:04:05Z, "
                  "or Unix seconds)", s);
}

static void check_debug(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                        yaml_node_t *node)
{
    const struct sl_strlist *l = field;
    struct sl_log_conf *lc = (struct sl_log_conf *)((char *)field - k->off);

    lc->debug = 0;
    for (size_t i = 0; i < l->n; i++) {
        long bit = sl_log_ctx_parse(l->v[i]);
        if (bit < 0)
            sl_conf_error(ld, node, "unknown debug context '%s' (one of: all, config, kafka, "
                          "redis, postgres, sandbox, dispatch, api, sink)", l->v[i]);
        else
            lc->debug |= (unsigned)bit;
    }
}

/* server.auth. Each key is a bearer token or an AWS access key id; its
 * value is the functions it may invoke ("*" or "fn1, fn2"), or, for an
 * access key, a mapping {secret_access_key | secret_access_key_file,
 * functions}. Keys are interpolated here (the loader interpolates values
 * only) so they can come from the environment. The value is replaced by
 * its normal form, which api/ reads:
 *   { "<token or key id>": { "functions": "fn1,fn2" | "*",
 *                            "secret": "<secret access key>" (key pairs only) } }
 * Messages name an entry by its position, never by its text. */
static bool check_functions(struct sl_conf_load *ld, yaml_node_t *node, size_t i,
                            const char *spec)
{
    const char *p = spec;
    size_t before = 0;

    if (strcmp(p, "*") == 0)
        return true;
    while (*p) {
        const char *s, *e;

        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        s = p;
        while (*p && *p != ',')
            p++;
        for (e = p; e > s && e[-1] == ' '; e--)
            ;
        {
            char *name = sl_strndup(s, (size_t)(e - s));
            if (strcmp(name, "*") == 0)
                sl_conf_error(ld, node, "token %zu: '*' must stand alone", i + 1);
            else if (!sl__load_has_function(ld, name))
                sl_conf_error(ld, node, "token %zu allows '%s', which is not a function",
                              i + 1, name);
            free(name);
            before++;
        }
    }
    if (before == 0) {
        sl_conf_error(ld, node, "token %zu allows no function: give \"*\" or names "
                      "separated by commas", i + 1);
        return false;
    }
    return true;
}

/* The secret of key pair `i`: from secret_access_key (interpolated by the
 * loader) or from the file secret_access_key_file (one line). */
static char *auth_secret(struct sl_conf_load *ld, yaml_node_t *node, size_t i, json_t *spec)
{
    json_t *inline_s = json_object_get(spec, "secret_access_key");
    json_t *file = json_object_get(spec, "secret_access_key_file");
    char buf[512], *secret;
    size_t n;
    FILE *f;

    if (!inline_s == !file) {
        sl_conf_error(ld, node, "key %zu: give one of secret_access_key and "
                      "secret_access_key_file (or bearer: true for a bearer token)", i + 1);
        return NULL;
    }
    if (inline_s) {
        if (!json_is_string(inline_s) || !*json_string_value(inline_s)) {
            sl_conf_error(ld, node, "key %zu: secret_access_key is empty or not a string (is "
                          "its variable set?)", i + 1);
            return NULL;
        }
        return sl_strdup(json_string_value(inline_s));
    }
    if (!json_is_string(file) || json_string_value(file)[0] != '/') {
        sl_conf_error(ld, node, "key %zu: secret_access_key_file must be an absolute path",
                      i + 1);
        return NULL;
    }
    f = fopen(json_string_value(file), "re");
    if (!f) {
        sl_conf_error(ld, node, "key %zu: cannot read secret_access_key_file %s: %s", i + 1,
                      json_string_value(file), strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!*buf || n == sizeof(buf) - 1) {
        sl_conf_error(ld, node, "key %zu: secret_access_key_file %s is empty or longer than "
                      "a line of %zu bytes", i + 1, json_string_value(file), sizeof(buf) - 2);
        return NULL;
    }
    secret = sl_strdup(buf);
    memset(buf, 0, sizeof(buf));
    return secret;
}

/* An existing data_dir must be this user's alone (sluice run refuses it
 * otherwise); one that does not exist yet is made 0700 at start. */
static void check_data_dir(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                           yaml_node_t *node)
{
    const char *dir = *(char **)field;
    char why[512];

    (void)k;
    if (dir && sl_data_dir_check(dir, why, sizeof(why)) != 0)
        sl_conf_error(ld, node, "%s", why);
}

/* An entry's scopes: "invoke", "read", "admin", separated by commas;
 * admin implies read. A bitmask of SL_SCOPE_*, or -1 (reported). */
static int parse_scopes(struct sl_conf_load *ld, yaml_node_t *node, size_t i, const json_t *v)
{
    const char *p = json_string_value(v);
    int mask = 0;

    if (!p) {
        sl_conf_error(ld, node, "entry %zu: scopes must be a string such as \"invoke, read\"",
                      i + 1);
        return -1;
    }
    while (*p) {
        const char *s, *e;

        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        for (s = p; *p && *p != ','; p++)
            ;
        for (e = p; e > s && e[-1] == ' '; e--)
            ;
        if (e - s == 6 && strncmp(s, "invoke", 6) == 0)
            mask |= SL_SCOPE_INVOKE;
        else if (e - s == 4 && strncmp(s, "read", 4) == 0)
            mask |= SL_SCOPE_READ;
        else if (e - s == 5 && strncmp(s, "admin", 5) == 0)
            mask |= SL_SCOPE_ADMIN | SL_SCOPE_READ;
        else {
            sl_conf_error(ld, node, "entry %zu: unknown scope '%.*s' (invoke, read, admin)",
                          i + 1, (int)(e - s) > 32 ? 32 : (int)(e - s), s);
            return -1;
        }
    }
    if (mask == 0) {
        sl_conf_error(ld, node, "entry %zu: scopes is empty (invoke, read, admin)", i + 1);
        return -1;
    }
    return mask;
}

static void check_auth(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                       yaml_node_t *node)
{
    json_t **jp = field, *norm = json_object();
    const char *raw;
    json_t *val;
    size_t i = 0;

    (void)k;
    if (!json_is_object(*jp)) {
        sl_conf_error(ld, node, "expected a mapping of tokens (or access key ids) to "
                      "functions");
        json_decref(norm);
        return;
    }
    json_object_foreach(*jp, raw, val) {
        size_t rl = strlen(raw);
        char why[512], *tok = sl__interpolate(raw, why, sizeof(why)), *secret = NULL;
        const char *p, *fns = NULL;
        json_t *fnv = val, *dup = NULL;
        bool bearer = !json_is_object(val), pair = false;
        int scopes = SL_SCOPE_INVOKE;

        if (!tok) {
            /* `why` quotes the key: show it only when the key is a pure reference */
            if (rl > 3 && strncmp(raw, "${", 2) == 0 && raw[rl - 1] == '}' &&
                !strchr(raw + 2, '$'))
                sl_conf_error(ld, node, "token %zu: %s", i + 1, why);
            else
                sl_conf_error(ld, node, "token %zu: bad '$' (write ${VAR} for a variable, "
                              "$$ for a literal $)", i + 1);
            i++;
            continue;
        }
        if (json_is_object(val)) {
            json_t *b = json_object_get(val, "bearer");

            if (b && !json_is_boolean(b))
                sl_conf_error(ld, node, "entry %zu: bearer must be true or false", i + 1);
            bearer = json_is_true(b);
            pair = !bearer;
        }
        if (!*tok)
            sl_conf_error(ld, node, "token %zu is empty (is its variable set?)", i + 1);
        for (p = tok; *p; p++)
            if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p) || *p == ',' ||
                (*p == '/' && pair))
                break;
        if (*p)
            sl_conf_error(ld, node, "%s %zu contains a space, a comma%s or a control character",
                          pair ? "key" : "token", i + 1, pair ? ", a slash" : "");
        else if ((dup = json_object_get(norm, tok)))
            sl_conf_error(ld, node, "tokens %zu and %zu are the same",
                          (size_t)json_integer_value(json_object_get(dup, "pos")), i + 1);
        if (json_is_object(val)) {
            const char *mk;
            json_t *mv, *sv = json_object_get(val, "scopes");

            json_object_foreach(val, mk, mv)
                if (strcmp(mk, "secret_access_key") != 0 &&
                    strcmp(mk, "secret_access_key_file") != 0 && strcmp(mk, "functions") != 0 &&
                    strcmp(mk, "scopes") != 0 && strcmp(mk, "bearer") != 0)
                    sl_conf_error(ld, node, "entry %zu: unknown key '%s' (an access key has "
                                  "secret_access_key or secret_access_key_file, functions and "
                                  "scopes; a bearer token bearer: true, functions and scopes)",
                                  i + 1, mk);
            if (bearer && (json_object_get(val, "secret_access_key") ||
                           json_object_get(val, "secret_access_key_file")))
                sl_conf_error(ld, node, "entry %zu: a bearer token (bearer: true) has no "
                              "secret_access_key", i + 1);
            else if (pair)
                secret = auth_secret(ld, node, i, val);
            if (sv && (scopes = parse_scopes(ld, node, i, sv)) < 0)
                scopes = 0;
            fnv = json_object_get(val, "functions");
            if (!fnv)
                sl_conf_error(ld, node, "entry %zu: missing 'functions' (\"*\" or names "
                              "separated by commas)", i + 1);
        }
        if (fnv && !json_is_string(fnv))
            sl_conf_error(ld, node, "token %zu: give \"*\" or function names separated by "
                          "commas, as a string", i + 1);
        else if (fnv)
            fns = json_string_value(fnv);
        if (fns && check_functions(ld, node, i, fns) && *tok && !*p && !dup && scopes > 0) {
            json_t *e = json_pack("{s:s, s:I, s:i}", "functions", fns, "pos", (json_int_t)(i + 1),
                                  "scopes", scopes);

            if (secret)
                json_object_set_new(e, "secret", json_string(secret));
            json_object_set_new(norm, tok, e);
        }
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
        free(tok);
        i++;
    }
    json_decref(*jp);
    *jp = norm;
}

/* server.metrics_auth: a bearer token, like a server.auth key. */
static void check_metrics_auth(struct sl_conf_load *ld, const struct sl_conf_key *k,
                               void *field, yaml_node_t *node)
{
    const char *tok = *(char **)field;

    (void)k;
    for (const char *p = tok; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
            sl_conf_error(ld, node, "the metrics token contains a space or a control "
                          "character");
            return;
        }
}

/* ------------------------------------------------------------------ */
/* server.region, server.account_id                                    */

static void check_region(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                         yaml_node_t *node)
{
    const char *s = *(char **)field, *p = s;

    (void)k;
    /* partition-free region names as AWS spells them: us-east-1, us-gov-west-1 */
    while (islower((unsigned char)*p))
        p++;
    if (p - s == 2 && strncmp(p, "-gov", 4) == 0)
        p += 4;
    if (p - s >= 2 && *p == '-') {
        const char *w = ++p;
        while (islower((unsigned char)*p))
            p++;
        if (p > w && *p == '-' && isdigit((unsigned char)p[1])) {
            for (p++; isdigit((unsigned char)*p); p++)
                ;
            if (*p == '\0' && p - s <= 32)
                return;
        }
    }
    sl_conf_error(ld, node, "\"%s\" is not a region name (like us-east-1 or eu-west-2)", s);
}

static void check_account_id(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                             yaml_node_t *node)
{
    const char *s = *(char **)field;
    size_t i = 0;

    (void)k;
    while (isdigit((unsigned char)s[i]))
        i++;
    if (i != 12 || s[i])
        sl_conf_error(ld, node, "\"%s\" is not an account id (twelve digits, quoted so YAML "
                      "keeps leading zeros)", s);
}

/* ------------------------------------------------------------------ */
/* server.async_queue                                                  */

#define QUEUE_FORMS "\"sqlite\" or redis://[:password@]host:port[/db]"

static void check_async_queue(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                              yaml_node_t *node)
{
    const char *s = *(char **)field;
    struct sl_redis_url u;
    char why[700];

    (void)k;
    if (strcmp(s, "sqlite") == 0)
        return;
    if (sl_redis_url_parse(s, &u, why, sizeof(why)) != 0)
        sl_conf_error(ld, node, "%s; want " QUEUE_FORMS, why);
    sl_redis_url_destroy(&u);
}

void sl_conf_check_redis_url(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                             yaml_node_t *node)
{
    const char *s = *(char **)field;
    struct sl_redis_url u;
    char why[700];

    (void)k;
    if (!s)
        return;
    if (sl_redis_url_parse(s, &u, why, sizeof(why)) != 0)
        sl_conf_error(ld, node, "%s", why);
    sl_redis_url_destroy(&u);
}

/* Patterns are compiled at load time so `sluice lint` rejects what the
 * pollers would; the message already names the pattern and its path
 * below filter_criteria, the key path says which source. */
static void check_filter(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                         yaml_node_t *node)
{
    struct sl_filter *f = NULL;
    char msg[600];
    const char *m = msg;

    (void)k;
    if (sl_filter_compile(*(json_t **)field, &f, msg, sizeof(msg)) != 0) {
        if (strncmp(m, "filter_criteria", 15) == 0)
            m += m[15] == ':' ? 17 : 15;
        sl_conf_error(ld, node, "%s", m);
    }
    sl_filter_free(f);
}

/* ------------------------------------------------------------------ */
/* functions.<name>.async                                              */

#define F(field) offsetof(struct sl_async_conf, field)
static const struct sl_conf_key async_keys[] = {
    { .name = "maximum_retry_attempts", .type = SL_CK_INT, .def = "3", .min = 0, .max = 100,
      .off = F(maximum_retry_attempts),
      .desc = "Retries after a failed asynchronous invocation (3: tried at least 4 times)." },
    { .name = "maximum_event_age_s", .type = SL_CK_DURATION, .def = "6h", .unit = SEC,
      .min = 60, .max = 21600, .off = F(maximum_event_age_ms),
      .desc = "An event older than this is not retried again and goes to `on_failure`." },
    { .name = "backoff_initial_ms", .type = SL_CK_DURATION, .def = "1000", .unit = 1, .min = 1,
      .max = 3600000, .off = F(backoff_initial_ms),
      .desc = "Wait before the first retry; it doubles per retry, with full jitter." },
    { .name = "backoff_max_ms", .type = SL_CK_DURATION, .def = "300000", .unit = 1, .min = 1,
      .max = 3600000, .off = F(backoff_max_ms), .desc = "Longest wait between two retries." },
    { .name = "on_success", .type = SL_CK_STRING, .flags = SL_CK_REF_SINK, .off = F(on_success),
      .check = check_sink_ref, .desc = "Sink that receives a record of each successful invocation." },
    { .name = "on_failure", .type = SL_CK_STRING, .flags = SL_CK_REF_SINK, .off = F(on_failure),
      .check = check_sink_ref,
      .desc = "Sink that receives events whose retries ran out or that expired." },
};
#undef F

const struct sl__ctable sl__async_table = {
    .path = "functions.<name>.async", .title = "Asynchronous invocation",
    .intro = "How events sent with `X-Amz-Invocation-Type: Event` are retried and where they go.",
    .keys = async_keys, .nkeys = sizeof(async_keys) / sizeof(async_keys[0]),
};

/* ------------------------------------------------------------------ */
/* functions.<name>                                                    */

#define F(field) offsetof(struct sl_function_conf, field)
static const struct sl_conf_key function_keys[] = {
    { .name = "handler", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(handler),
      .check = check_handler,
      .desc = "Runtime `native` and `lambda`: the executable run in each environment (for "
              "`lambda` the `bootstrap`), relative to the "
              "configuration file. Runtime `python`: `module.function` (`app.lambda_handler`, "
              "`pkg/mod.fn`) in `code`, as Lambda's `_HANDLER`." },
    { .name = "runtime", .type = SL_CK_ENUM, .def = "native", .enums = runtime_names,
      .off = F(runtime), .check = check_runtime,
      .desc = "`native`: msgpack frames on fd 3 (docs/PROTOCOL.md). `lambda` (alias "
              "`provided`): `handler` is a `bootstrap` speaking the Lambda Runtime API at "
              "`AWS_LAMBDA_RUNTIME_API` (docs/RUNTIME-API.md; needs `sandbox: strict`, "
              "`network: none`, no `snapstart`). "
              "`python`: Lambda's Python 3 runtime: `handler` names a function in `code`." },
    { .name = "code", .type = SL_CK_PATH, .off = F(code), .check = check_code,
      .desc = "Runtime `python` only (and required there): the code directory, mounted "
              "read-only at `/var/task`; relative to the configuration file." },
    { .name = "log_format", .type = SL_CK_ENUM, .def = "text", .enums = fn_log_format_names,
      .off = F(log_format),
      .desc = "Lambda's `LogFormat`. `text`: each line the handler prints is logged as "
              "`[function:NAME] [REQUEST_ID] LINE` in sluice's log, with a `REPORT` line per "
              "invocation. `json`: sets `AWS_LAMBDA_LOG_FORMAT=JSON` (runtime `python` and "
              "`nodejs` then write `logging`/`console` records as JSON), and every line is "
              "written as one JSON object: a line that is a JSON object is kept, with "
              "`timestamp`, `level` (INFO), `requestId` and `function` added when missing; "
              "any other line becomes `{\"timestamp\",\"level\":\"INFO\",\"requestId\","
              "\"function\",\"message\"}`; sluice's own lines are Lambda's platform records "
              "(`{\"time\",\"type\":\"platform.report\",\"record\":{...}}`). "
              "README, \"Function logs\"." },
    { .name = "application_log_level", .type = SL_CK_STRING, .off = F(application_log_level),
      .check = check_app_level,
      .desc = "Lambda's `ApplicationLogLevel`: TRACE, DEBUG, INFO, WARN, ERROR or FATAL "
              "(`log_format: json` only; INFO when unset). Sets `AWS_LAMBDA_LOG_LEVEL`, which "
              "the runtimes filter by at the source (`python`'s root logger, `nodejs`'s "
              "`console`); sluice also drops the JSON object lines whose `level` is below it "
              "(a line without a valid `level` counts as INFO), as Lambda does for other "
              "runtimes." },
    { .name = "log_level", .type = SL_CK_STRING, .off = F(log_level), .check = check_log_level,
      .desc = "Deprecated: the old name of `application_log_level`, still read; setting both "
              "is an error." },
    { .name = "system_log_level", .type = SL_CK_STRING, .off = F(system_log_level),
      .check = check_system_level,
      .desc = "Lambda's `SystemLogLevel`: DEBUG, INFO or WARN (`log_format: json` only; INFO "
              "when unset). sluice's per-invocation records (`platform.start`, "
              "`platform.runtimeDone`, `platform.report`) and init records "
              "(`platform.initStart`, `platform.initReport`) are INFO; dropped-output notices "
              "(`platform.logsDropped`) are WARN. WARN keeps only the latter." },
    { .name = "log_sink", .type = SL_CK_STRING, .flags = SL_CK_REF_SINK, .off = F(log_sink),
      .check = check_sink_ref,
      .desc = "A sink (in `sinks`) that receives this function's log lines as JSON, the "
              "live tail's events; overrides `server.log_sink`." },
    { .name = "memory_mb", .type = SL_CK_SIZE, .def = "128", .unit = MB, .min = 128, .max = 10240,
      .off = F(memory_mb),
      .desc = "Memory limit of an environment; CPU share grows with it (1769 MB = 1 CPU)." },
    { .name = "timeout_s", .type = SL_CK_DURATION, .def = "3", .unit = SEC, .min = 1, .max = 900,
      .off = F(timeout_ms), .desc = "Longest an invocation may run before its environment is killed." },
    { .name = "init_timeout_s", .type = SL_CK_DURATION, .def = "10", .unit = SEC, .min = 1,
      .max = 900, .off = F(init_timeout_ms),
      .desc = "Longest the handler may take to start and report ready." },
    { .name = "ephemeral_storage_mb", .type = SL_CK_SIZE, .def = "512", .unit = MB, .min = 512,
      .max = 10240, .off = F(ephemeral_storage_mb), .desc = "Size of the environment's `/tmp`." },
    { .name = "environment", .type = SL_CK_MAP, .off = F(environment), .check = check_environment,
      .desc = "Variables for the handler (Lambda's rules: no reserved names, 4 KB in all)." },
    { .name = "layers", .type = SL_CK_PATHLIST, .off = F(layers), .check = check_layers,
      .desc = "Directories mounted read-only under `/opt`, in order." },
    { .name = "network", .type = SL_CK_ENUM, .def = "none", .enums = network_names,
      .off = F(network), .desc = "`none`: no network at all. `host`: the host's network." },
    { .name = "sandbox", .type = SL_CK_ENUM, .def = "strict", .enums = sandbox_names,
      .off = F(sandbox),
      .desc = "`relaxed` runs without namespaces, for hosts that cannot create them." },
    { .name = "reserved_concurrency", .type = SL_CK_INT, .def = "-1", .min = 0, .max = 100000,
      .flags = SL_CK_NEG1, .off = F(reserved_concurrency),
      .desc = "Most environments of this function at once; -1 shares the unreserved pool." },
    { .name = "provisioned_concurrency", .type = SL_CK_INT, .def = "0", .min = 0, .max = 100000,
      .off = F(provisioned_concurrency), .desc = "Environments kept initialized at all times." },
    { .name = "snapstart", .type = SL_CK_BOOL, .def = "false", .off = F(snapstart),
      .desc = "Start new environments by forking an initialized template." },
    { .name = "idle_timeout_s", .type = SL_CK_DURATION, .def = "10m", .unit = SEC, .min = 1,
      .max = 86400, .off = F(idle_timeout_ms),
      .desc = "An environment idle this long is shut down (provisioned ones are kept)." },
    { .name = "output_kb_per_s", .type = SL_CK_SIZE, .def = "1024", .unit = 1024, .min = 1,
      .max = 1048576, .off = F(output_kb_per_s),
      .desc = "Handler output (stdout and stderr) logged per environment and second, in KB "
              "(a line counts at least 128 bytes); the excess is dropped and counted." },
    { .name = "async", .type = SL_CK_OBJECT, .sub = &sl__async_table, .off = F(async),
      .desc = "Asynchronous invocation settings (below)." },
};
#undef F

const struct sl__ctable sl__function_table = {
    .path = "functions.<name>", .title = "Functions",
    .intro = "A function is a handler program and the limits of the environments it runs in. "
             "Names use letters, digits, `-` and `_`, at most 64 characters.",
    .keys = function_keys, .nkeys = sizeof(function_keys) / sizeof(function_keys[0]),
};

/* ------------------------------------------------------------------ */
/* sources.<name>                                                      */

#define F(field) offsetof(struct sl_source_conf, field)
static const struct sl_conf_key source_keys[] = {
    { .name = "type", .type = SL_CK_ENUM, .flags = SL_CK_REQUIRED | SL_CK_TYPE,
      .desc = "Which poller reads this source." },
    { .name = "function", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED | SL_CK_REF_FUNC,
      .off = F(function), .check = check_function_ref,
      .desc = "Function that receives the batches." },
    { .name = "enabled", .type = SL_CK_BOOL, .def = "true", .off = F(enabled),
      .desc = "`false` keeps the source configured but stops polling." },
    { .name = "batch_size", .type = SL_CK_INT, .def = "100",
      .min = 1, .max = 10000, .off = F(batch_size), .desc = "Most records in one batch." },
    { .name = "maximum_batching_window_ms", .type = SL_CK_DURATION, .def = "500ms", .unit = 1, .min = 0,
      .max = 300000, .off = F(maximum_batching_window_ms),
      .desc = "Longest a batch waits to fill before it is sent." },
    { .name = "starting_position", .type = SL_CK_ENUM, .def = "TRIM_HORIZON", .enums = start_names,
      .traits = SL_CONF_START, .off = F(starting_position),
      .desc = "Where a new consumer starts: the oldest record, new records, or a time (Kafka). "
              "Not for Postgres, which starts where its slot stands (see `snapshot`)." },
    { .name = "starting_position_timestamp", .type = SL_CK_STRING, .traits = SL_CONF_AT_TIMESTAMP,
      .off = F(starting_position_timestamp), .check = check_timestamp,
      .desc = "Time for `AT_TIMESTAMP`: ISO-8601 UTC or Unix seconds." },
    { .name = "maximum_retry_attempts", .type = SL_CK_INT, .def = "-1", .min = 0, .max = 10000,
      .flags = SL_CK_NEG1, .traits = SL_CONF_STREAM, .off = F(maximum_retry_attempts),
      .desc = "Retries of a failed batch before it goes to `on_failure`; -1 retries until success "
              "(Kafka with `on_failure`: 10, as in Lambda)." },
    { .name = "maximum_record_age_s", .type = SL_CK_DURATION, .def = "-1", .unit = SEC, .min = 60,
      .max = 604800, .flags = SL_CK_NEG1, .traits = SL_CONF_STREAM, .off = F(maximum_record_age_ms),
      .desc = "Records older than this are not retried again; -1 means no limit." },
    { .name = "bisect_batch_on_function_error", .type = SL_CK_BOOL, .def = "false", .traits = SL_CONF_STREAM,
      .off = F(bisect_batch_on_function_error),
      .desc = "Split a failing batch in two and retry each half." },
    { .name = "report_batch_item_failures", .type = SL_CK_BOOL, .def = "false",
      .off = F(report_batch_item_failures),
      .desc = "Honour `batchItemFailures` in the handler's response." },
    { .name = "parallelization_factor", .type = SL_CK_INT, .def = "1", .min = 1, .max = 10,
      .traits = SL_CONF_STREAM, .off = F(parallelization_factor),
      .desc = "Concurrent batches per partition (Kafka) or stream (Postgres), split by key." },
    { .name = "filter_criteria", .type = SL_CK_JSON, .off = F(filter_criteria),
      .check = check_filter,
      .desc = "Event filter patterns (Lambda syntax, see docs/FILTERING.md), at most 10; "
              "a record matching none is skipped and counted as filtered." },
    { .name = "on_failure", .type = SL_CK_STRING, .flags = SL_CK_REF_SINK, .off = F(on_failure),
      .check = check_sink_ref,
      .desc = "Sink for records that failed for good (streams) or were redriven (queues)." },
};
#undef F

const struct sl__ctable sl__source_table = {
    .path = "sources.<name>", .title = "Sources",
    .intro = "A source (an event source mapping) polls one Kafka topic set, Redis queue or "
             "Postgres change stream and sends batches to one function.",
    .keys = source_keys, .nkeys = sizeof(source_keys) / sizeof(source_keys[0]),
    .typed = 1,
};

/* ------------------------------------------------------------------ */
/* sinks.<name>                                                        */

static const struct sl_conf_key sink_keys[] = {
    { .name = "type", .type = SL_CK_ENUM, .flags = SL_CK_REQUIRED | SL_CK_TYPE,
      .desc = "Where records are written." },
};

const struct sl__ctable sl__sink_table = {
    .path = "sinks.<name>", .title = "Sinks",
    .intro = "A sink holds records after their final failure (a dead-letter queue) or "
             "success (a destination). A record's source position advances only after the "
             "sink confirmed the write.",
    .keys = sink_keys, .nkeys = sizeof(sink_keys) / sizeof(sink_keys[0]),
    .typed = 1,
};

/* ------------------------------------------------------------------ */
/* server, log                                                         */

#define F(field) offsetof(struct sl_server_conf, field)
static const struct sl_conf_key server_keys[] = {
    { .name = "listen", .type = SL_CK_STRING, .def = "127.0.0.1:9001", .off = F(listen),
      .desc = "Address of the HTTP API (Invoke API, health, metrics)." },
    { .name = "concurrency_limit", .type = SL_CK_INT, .def = "1000", .min = 1, .max = 100000,
      .off = F(concurrency_limit), .desc = "Most environments running at once, all functions together." },
    { .name = "data_dir", .type = SL_CK_PATH, .def = ".sluice", .off = F(data_dir),
      .check = check_data_dir,
      .desc = "Directory for durable state; relative to the configuration file. Must be this "
              "user's and writable by no one else (made 0700 when missing); its files are 0600." },
    { .name = "shutdown_grace_s", .type = SL_CK_DURATION, .def = "30", .unit = SEC, .min = 0,
      .max = 900, .off = F(shutdown_grace_ms),
      .desc = "On SIGTERM, how long in-flight invocations may finish before they are stopped." },
    { .name = "worker_threads", .type = SL_CK_INT, .def = "2", .min = 1, .max = 64,
      .off = F(worker_threads), .desc = "Threads for blocking work kept off the event loop." },
    { .name = "auth", .type = SL_CK_JSON, .off = F(auth), .check = check_auth,
      .desc = "Credentials for invocations, a mapping. A bearer token: `TOKEN: \"*\"` "
              "allows every function, `TOKEN: \"fn1,fn2\"` those named; clients send "
              "`Authorization: Bearer TOKEN`. An AWS key pair: `ACCESS_KEY_ID: "
              "{secret_access_key: ${SECRET}, functions: \"*\"}` (or "
              "`secret_access_key_file: /abs/path`, one line); clients (the AWS CLI and "
              "SDKs) sign with AWS Signature Version 4 for service `lambda`, any region, and "
              "sluice verifies the signature and a clock skew of at most 5 minutes. A bearer "
              "token is never accepted as an access key id. Keys are interpolated too "
              "(`${SLUICE_TOKEN}: \"*\"`). Each credential has scopes: `invoke` (the "
              "Invoke API), `read` (the management API's reads), `admin` (its writes, and "
              "reads); the forms above have `invoke` only. Give others with `scopes: "
              "\"invoke, read\"` in a key pair's mapping, or write a bearer token as a "
              "mapping `TOKEN: {bearer: true, functions: \"*\", scopes: \"read\"}`. "
              "`functions` limits every scope to those functions. Empty: no authentication "
              "(every operation is open). `/healthz` and `/readyz` stay open; `/metrics` "
              "too unless `metrics_auth` is set." },
    { .name = "metrics_auth", .type = SL_CK_STRING, .off = F(metrics_auth),
      .check = check_metrics_auth,
      .desc = "A bearer token that `GET /metrics` then requires (`Authorization: Bearer "
              "TOKEN`, Prometheus' `authorization` setting), for deployments where the "
              "metrics leave the host. Unset: `/metrics` is open." },
    { .name = "max_connections", .type = SL_CK_INT, .def = "256", .min = 1, .max = 1000000,
      .off = F(max_connections),
      .desc = "Most HTTP client connections open at once. When it is reached, the oldest "
              "connection that has not sent a whole request yet is closed to make room; when "
              "every one has, the new one is answered 503 `TooManyRequestsException` and "
              "closed. Lowered at start to fit the open-file limit (`ulimit -n`): a quarter "
              "of it (at least 64) is kept for the rest, and a connection with a request "
              "takes three descriptors. Out of descriptors anyway, new connections are "
              "accepted and closed at once." },
    { .name = "header_timeout_s", .type = SL_CK_DURATION, .def = "10", .unit = SEC,
      .min = 1, .max = 300, .off = F(header_timeout_ms),
      .desc = "Time a client has to send a request's line and headers, from the connection "
              "(or the request's first byte on a kept-alive connection). Then a new "
              "connection is answered 408 and closed; a kept-alive one is closed once the "
              "answers to its earlier requests are out." },
    { .name = "body_timeout_s", .type = SL_CK_DURATION, .def = "60", .unit = SEC,
      .min = 1, .max = 900, .off = F(body_timeout_ms),
      .desc = "Time a client has to send a request's body once its headers are in; then the "
              "connection is closed." },
    { .name = "sandbox_uid_base", .type = SL_CK_INT, .def = "100000", .min = 1000,
      .max = 3000000000LL, .off = F(sandbox_uid_base),
      .desc = "Each function's handlers run as a uid and gid of its own: this plus the "
              "function's index in `functions` (0, 1, ...), so that no function can use up "
              "another's per-user kernel limits (inotify instances, processes) or signal "
              "it. Pick a range no host user and no other sluice instance on the host "
              "uses. Needs sluice to run as root (also for `sandbox: relaxed`)." },
    { .name = "region", .type = SL_CK_STRING, .def = "us-east-1", .off = F(region),
      .check = check_region,
      .desc = "The region sluice says it is in, as Lambda would: in every ARN (functions, "
              "event sources), the records' `awsRegion`, and handlers' `AWS_REGION` and "
              "`AWS_DEFAULT_REGION`." },
    { .name = "account_id", .type = SL_CK_STRING, .def = "000000000000", .off = F(account_id),
      .check = check_account_id,
      .desc = "The account in every ARN sluice writes (functions, event sources): twelve "
              "digits, quoted (`\"123456789012\"`)." },
    { .name = "async_queue", .type = SL_CK_STRING, .def = "sqlite", .off = F(async_queue),
      .check = check_async_queue,
      .desc = "Where asynchronous events wait: `sqlite` (`async.db` in `data_dir`, WAL mode) "
              "or `redis://[:password@]host:port[/db]`, a Redis stream that every instance "
              "naming the same URL and key shares (consumer group `sluice`). With Redis, the "
              "202 follows Redis's reply to XADD: durability is Redis's persistence "
              "(`appendonly`, `appendfsync`). Instances that share a queue must configure "
              "the same functions." },
    { .name = "async_queue_key", .type = SL_CK_STRING, .def = "sluice:async",
      .off = F(async_queue_key),
      .desc = "Redis queue: the stream key; attempts and next retry time live in hashes "
              "`<key>:state:<request id>`." },
    { .name = "async_queue_reclaim_s", .type = SL_CK_DURATION, .def = "60", .unit = SEC, .min = 1,
      .max = 3600, .off = F(async_queue_reclaim_ms),
      .desc = "Redis queue: an event that its instance stopped refreshing for this long "
              "(the instance died or lost Redis) is taken over by another. Live instances "
              "refresh the events they hold, waiting or running, every "
              "min(5 s, this / 4), so it need not cover function timeouts or backoff." },
    { .name = "log_sink", .type = SL_CK_STRING, .flags = SL_CK_REF_SINK, .off = F(log_sink),
      .check = check_sink_ref,
      .desc = "A sink (in `sinks`) that receives every function's log lines (handler output "
              "and sluice's per-invocation lines), one JSON object each, as the live tail "
              "sends them. Lines are queued (at most 10000 or 8 MB) and written with at most "
              "64 writes in flight; what does not fit, or fails, is dropped and counted "
              "(`sluice_log_lines_dropped_total{reason=\"sink\"}`): invocations never wait "
              "for it. A function's `log_sink` overrides it." },
    { .name = "log_ring_kb", .type = SL_CK_SIZE, .def = "4096", .unit = 1024, .min = 64,
      .max = 1048576, .off = F(log_ring_kb),
      .desc = "Size in KB of the in-memory ring of recent function log lines that "
              "`GET /logs/tail` and `sluice logs` replay (`since`); the oldest lines make "
              "room (`sluice_log_lines_dropped_total{reason=\"ring\"}`)." },
};
#undef F

const struct sl__ctable sl__server_table = {
    .path = "server", .title = "Server", .intro = "The process itself.",
    .keys = server_keys, .nkeys = sizeof(server_keys) / sizeof(server_keys[0]),
};

#define F(field) offsetof(struct sl_log_conf, field)
static const struct sl_conf_key log_keys[] = {
    { .name = "level", .type = SL_CK_ENUM, .def = "info", .enums = sl_log_level_names,
      .off = F(level), .desc = "Least severe level written." },
    { .name = "format", .type = SL_CK_ENUM, .def = "text", .enums = format_names, .off = F(format),
      .desc = "`text` lines or `json` lines, on stderr." },
    { .name = "debug", .type = SL_CK_STRLIST, .off = F(debug_names), .check = check_debug,
      .desc = "Areas whose debug lines are written whatever the level: `all`, `config`, "
              "`kafka`, `redis`, `postgres`, `sandbox`, `dispatch`, `api`, `sink`." },
};
#undef F

const struct sl__ctable sl__log_table = {
    .path = "log", .title = "Logging", .intro = "Logs never contain passwords.",
    .keys = log_keys, .nkeys = sizeof(log_keys) / sizeof(log_keys[0]),
};
