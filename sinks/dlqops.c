/* Reading, redriving and deleting what a dead-letter sink holds
 * (sluice/dlqops.h): `sluice dlq` and the console's dead-letter endpoints.
 * Plain blocking clients with connect timeouts: callers in the service run
 * these on the worker pool. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "sluice/dlqops.h"
#include "sluice/mem.h"
#include "sluice/redis.h"
#include "sluice/sink.h"

#define CONNECT_TIMEOUT_S 5
#define COMMAND_TIMEOUT_S 30

static void add(struct sl_dlq_entries *e, const char *id, const char *rec, size_t len)
{
    e->v = sl_realloc(e->v, (e->n + 1) * sizeof(*e->v));
    e->v[e->n].id = sl_strdup(id);
    e->v[e->n].record = sl_strndup(rec, len);
    e->n++;
}

void sl_dlq_entries_free(struct sl_dlq_entries *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].id);
        free(e->v[i].record);
    }
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

/* ------------------------------------------------------------------ */
/* Redis                                                               */

static redisContext *redis_open(const char *url, struct sl_err *err)
{
    struct sl_redis_url u;
    char why[SL_ERR_MSG_MAX], red[512];
    struct timeval ct = { CONNECT_TIMEOUT_S, 0 }, rt = { COMMAND_TIMEOUT_S, 0 };
    redisContext *c;

    if (sl_redis_url_parse(url, &u, why, sizeof(why)) != 0) {
        sl_err_set(err, SL_ECONFIG, false, "%s", why);
        sl_redis_url_destroy(&u);
        return NULL;
    }
    sl_redis_url_show(&u, red, sizeof(red));
    c = redisConnectWithTimeout(u.host, u.port, ct);
    if (!c || c->err) {
        sl_err_set(err, SL_EIO, true, "cannot connect to %s: %s", red,
                   c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        c = NULL;
        goto out;
    }
    redisSetTimeout(c, rt);
    if (u.pass) {
        redisReply *r = u.user ? redisCommand(c, "AUTH %s %s", u.user, u.pass)
                               : redisCommand(c, "AUTH %s", u.pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            sl_err_set(err, SL_EIO, false, "%s refused the password", red);
            freeReplyObject(r);
            redisFree(c);
            c = NULL;
            goto out;
        }
        freeReplyObject(r);
    }
    if (u.db >= 0)
        freeReplyObject(redisCommand(c, "SELECT %d", u.db));
out:
    sl_redis_url_destroy(&u);
    return c;
}

static int load_redis(const struct sl_redis_sink_opts *s, struct sl_dlq_entries *e,
                      struct sl_err *err)
{
    redisContext *c = redis_open(s->url, err);
    redisReply *r;

    if (!c)
        return err->code;
    r = redisCommand(c, "XRANGE %s - +", s->key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        sl_err_set(err, SL_EIO, true, "XRANGE %s failed: %s", s->key,
                   r && r->str ? r->str : c->errstr);
        freeReplyObject(r);
        redisFree(c);
        return err->code;
    }
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *ent = r->element[i], *f;
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
            ent->element[0]->type != REDIS_REPLY_STRING)
            continue;
        f = ent->element[1];
        for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2)
            if (f->element[k]->type == REDIS_REPLY_STRING &&
                f->element[k + 1]->type == REDIS_REPLY_STRING &&
                strcmp(f->element[k]->str, "record") == 0)
                add(e, ent->element[0]->str, f->element[k + 1]->str, f->element[k + 1]->len);
    }
    freeReplyObject(r);
    redisFree(c);
    return 0;
}

static int delete_redis(const struct sl_redis_sink_opts *s, const char *id, struct sl_err *err)
{
    redisContext *c = redis_open(s->url, err);
    redisReply *r;
    int ok;

    if (!c)
        return err->code;
    r = redisCommand(c, "XDEL %s %s", s->key, id);
    ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        sl_err_set(err, SL_EIO, true, "XDEL %s %s failed: %s", s->key, id,
                   r && r->str ? r->str : c->errstr);
    else if (r->integer == 0)
        ok = 0, sl_err_set(err, SL_ENOTFOUND, false, "no entry %s in %s", id, s->key);
    freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : err->code;
}

/* ------------------------------------------------------------------ */
/* Postgres                                                            */

static PGconn *pg_open(const char *dsn, struct sl_err *err)
{
    static const char *const keys[] = { "dbname", "connect_timeout", NULL };
    const char *vals[] = { dsn, "5", NULL };
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names host and user, never the password */
        sl_err_set(err, SL_EIO, true, "cannot connect to postgres: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int load_pg(const struct sl_pg_sink_opts *s, struct sl_dlq_entries *e, struct sl_err *err)
{
    PGconn *c = pg_open(s->dsn, err);
    char *ident, sql[512];
    PGresult *r;

    if (!c)
        return err->code;
    ident = PQescapeIdentifier(c, s->table, strlen(s->table));
    snprintf(sql, sizeof(sql), "SELECT id::text, record::text FROM %s ORDER BY id", ident);
    PQfreemem(ident);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sl_err_set(err, SL_EIO, true, "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return err->code;
    }
    for (int i = 0; i < PQntuples(r); i++)
        add(e, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
    PQclear(r);
    PQfinish(c);
    return 0;
}

static int delete_pg(const struct sl_pg_sink_opts *s, const char *id, struct sl_err *err)
{
    PGconn *c = pg_open(s->dsn, err);
    const char *params[1] = { id };
    char *ident, sql[512], *end;
    PGresult *r;
    int ok;

    if (!c)
        return err->code;
    errno = 0;
    (void)strtoll(id, &end, 10);
    if (!*id || *end || errno) {
        PQfinish(c);
        return sl_err_set(err, SL_ENOTFOUND, false, "no entry %s", id);
    }
    ident = PQescapeIdentifier(c, s->table, strlen(s->table));
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = $1::bigint", ident);
    PQfreemem(ident);
    r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        sl_err_set(err, SL_EIO, true, "%s", PQerrorMessage(c));
    else if (strcmp(PQcmdTuples(r), "0") == 0)
        ok = 0, sl_err_set(err, SL_ENOTFOUND, false, "no entry %s", id);
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : err->code;
}

/* ------------------------------------------------------------------ */
/* SQLite                                                              */

static int load_sqlite(const struct sl_sqlite_sink_opts *s, struct sl_dlq_entries *e,
                       struct sl_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *st;

    if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sl_err_set(err, SL_EIO, false, "cannot open %s: %s", s->path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return err->code;
    }
    sqlite3_busy_timeout(db, CONNECT_TIMEOUT_S * 1000);
    if (sqlite3_prepare_v2(db, "SELECT id, record FROM dlq ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK) {
        sl_err_set(err, SL_EIO, false, "%s: %s", s->path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return err->code;
    }
    while (sqlite3_step(st) == SQLITE_ROW)
        add(e, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
            (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static int delete_sqlite(const struct sl_sqlite_sink_opts *s, const char *id, struct sl_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int ok = 0;

    if (sqlite3_open(s->path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "DELETE FROM dlq WHERE id = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, CONNECT_TIMEOUT_S * 1000);
        sqlite3_bind_int64(st, 1, strtoll(id, NULL, 10));
        ok = sqlite3_step(st) == SQLITE_DONE;
        sqlite3_finalize(st);
        if (ok && sqlite3_changes(db) == 0) {
            sqlite3_close(db);
            return sl_err_set(err, SL_ENOTFOUND, false, "no entry %s", id);
        }
    }
    if (!ok)
        sl_err_set(err, SL_EIO, true, "cannot delete from %s: %s", s->path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return ok ? 0 : err->code;
}

/* ------------------------------------------------------------------ */
/* File                                                                */

static int load_file(const struct sl_file_sink_opts *s, struct sl_dlq_entries *e,
                     struct sl_err *err)
{
    FILE *f = fopen(s->path, "r");
    char *line = NULL, id[32];
    size_t cap = 0;
    ssize_t n;
    long no = 0;

    if (!f) {
        if (errno == ENOENT)
            return 0; /* nothing written yet */
        return sl_err_set(err, SL_EIO, false, "cannot open %s: %s", s->path, strerror(errno));
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        no++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        snprintf(id, sizeof(id), "%ld", no);
        add(e, id, line, (size_t)n);
    }
    free(line);
    fclose(f);
    return 0;
}

int sl_dlq_rewrite_file(const struct sl_sink_conf *s, const struct sl_dlq_entries *e,
                        const char *drop, struct sl_err *err)
{
    const struct sl_file_sink_opts *o = s->opts;
    char *tmp = sl_asprintf("%s.redrive", o->path);
    FILE *f = fopen(tmp, "w");
    int rc = 0;

    if (!f) {
        rc = sl_err_set(err, SL_EIO, false, "cannot write %s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    for (size_t i = 0; i < e->n; i++)
        if (!drop[i])
            fprintf(f, "%s\n", e->v[i].record);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = -1;
    fclose(f);
    if (rc == 0 && rename(tmp, o->path) != 0)
        rc = -1;
    if (rc != 0)
        rc = sl_err_set(err, SL_EIO, false, "cannot rewrite %s: %s", o->path, strerror(errno));
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------ */

bool sl_dlq_readable(const struct sl_sink_conf *s)
{
    return s->type == &sl_redis_sink.conf || s->type == &sl_postgres_sink.conf ||
           s->type == &sl_sqlite_sink.conf || s->type == &sl_file_sink.conf;
}

int sl_dlq_load(const struct sl_sink_conf *s, struct sl_dlq_entries *e, struct sl_err *err)
{
    if (s->type == &sl_redis_sink.conf)
        return load_redis(s->opts, e, err);
    if (s->type == &sl_postgres_sink.conf)
        return load_pg(s->opts, e, err);
    if (s->type == &sl_sqlite_sink.conf)
        return load_sqlite(s->opts, e, err);
    if (s->type == &sl_file_sink.conf)
        return load_file(s->opts, e, err);
    return sl_err_set(err, SL_EUNSUPPORTED, false, "a %s sink cannot be read back; read the "
                      "topic with a Kafka consumer", sl_conf_type_name(s->type));
}

int sl_dlq_delete(const struct sl_sink_conf *s, const char *id, struct sl_err *err)
{
    if (s->type == &sl_redis_sink.conf)
        return delete_redis(s->opts, id, err);
    if (s->type == &sl_postgres_sink.conf)
        return delete_pg(s->opts, id, err);
    if (s->type == &sl_sqlite_sink.conf)
        return delete_sqlite(s->opts, id, err);
    return sl_err_set(err, SL_EUNSUPPORTED, false, "entries of a %s sink are not deleted one "
                      "by one", sl_conf_type_name(s->type));
}

/* ------------------------------------------------------------------ */
/* What an entry is                                                    */

const char *sl_dlq_kind_name(int kind)
{
    static const char *const names[] = { "unknown", "async", "batch", "lost", "message",
                                         "old-batch", "old-queue" };

    return kind >= 0 && kind <= SL_DLQ_OLD_QUEUE ? names[kind] : "unknown";
}

/* The function name in a Lambda function ARN (qualified or not). */
static void arn_function(const char *arn, char *fn, size_t n)
{
    const char *p = arn ? strstr(arn, ":function:") : NULL, *colon;

    if (!p) {
        snprintf(fn, n, "?");
        return;
    }
    p += 10;
    colon = strchr(p, ':');
    snprintf(fn, n, "%.*s", (int)(colon ? (size_t)(colon - p) : strlen(p)), p);
}

/* A message built by a queue source: top-level messageId, body and eventSourceARN. */
static bool is_message(json_t *j)
{
    return json_is_string(json_object_get(j, "messageId")) &&
           json_is_string(json_object_get(j, "body")) &&
           json_is_string(json_object_get(j, "eventSourceARN"));
}

/* The value of a source's own string or enum key `name` (its type's key
 * table), or NULL. */
static const char *opt_str(const struct sl_source_conf *c, const char *name)
{
    for (size_t i = 0; c->type && c->opts && i < c->type->nkeys; i++) {
        const struct sl_conf_key *k = &c->type->keys[i];
        if (strcmp(k->name, name) != 0 || (k->flags & SL_CK_BASE))
            continue;
        if (k->type == SL_CK_STRING)
            return *(char *const *)(const void *)((const char *)c->opts + k->off);
        if (k->type == SL_CK_ENUM)
            return k->enums[*(const int *)(const void *)((const char *)c->opts + k->off)];
    }
    return NULL;
}

/* eventSourceARN arn:aws:sqs:<region>:<account>:<key> (before 0.2
 * arn:sluice:redis:<region>:<db>:<key>; a key may hold ':'). */
static const struct sl_source_conf *find_message_source(const struct sl_config *c, json_t *msg,
                                                        const char *only, struct sl_err *err)
{
    const char *arn = json_string_value(json_object_get(msg, "eventSourceARN")), *key = arn;
    const struct sl_source_conf *found = NULL;
    int colons = 0;

    for (; key && *key && colons < 5; key++)
        if (*key == ':')
            colons++;
    if (!key || colons < 5 || !*key) {
        if (err)
            sl_err_set(err, SL_ENOTFOUND, false, "eventSourceARN %s names no queue",
                       arn ? arn : "(none)");
        return NULL;
    }
    for (size_t i = 0; i < c->nsources; i++) {
        const struct sl_source_conf *s = &c->sources[i];
        const char *k = opt_str(s, "key"), *mode = opt_str(s, "mode");
        if (strcmp(sl_conf_type_name(s->type), "redis") != 0 || !k || strcmp(k, key) != 0 ||
            !mode || (only && strcmp(s->name, only) != 0))
            continue;
        if (found) {
            if (err)
                sl_err_set(err, SL_EINVAL, false, "sources %s and %s both read queue %s; "
                           "choose one with --source NAME", found->name, s->name, key);
            return NULL;
        }
        found = s;
    }
    if (!found && err)
        sl_err_set(err, SL_ENOTFOUND, false, "no redis source%s%s reads queue %s",
                   only ? " named " : "", only ? only : "", key);
    return found;
}

const struct sl_source_conf *sl_dlq_message_source(const struct sl_config *c, json_t *msg,
                                                   const char *only, struct sl_err *err)
{
    return find_message_source(c, msg, only, err);
}

void sl_dlq_target_free(struct sl_dlq_target *t)
{
    json_decref(t->doc);
    memset(t, 0, sizeof(*t));
}

void sl_dlq_classify(const struct sl_config *c, const char *record, struct sl_dlq_target *t)
{
    json_t *j = json_loads(record, 0, NULL), *ctx, *v;
    const char *cond;

    memset(t, 0, sizeof(*t));
    snprintf(t->fn, sizeof(t->fn), "?");
    snprintf(t->cond, sizeof(t->cond), "-");
    t->doc = j;
    if (!json_is_object(j))
        return;
    ctx = json_object_get(j, "requestContext");
    if (json_is_object(ctx)) {
        arn_function(json_string_value(json_object_get(ctx, "functionArn")), t->fn,
                     sizeof(t->fn));
        if ((cond = json_string_value(json_object_get(ctx, "condition"))))
            snprintf(t->cond, sizeof(t->cond), "%s", cond);
        if ((v = json_object_get(j, "requestPayload"))) {
            t->kind = SL_DLQ_ASYNC;
            t->send = v;
        } else if ((v = json_object_get(j, "payload")) && json_is_object(v)) {
            t->kind = SL_DLQ_BATCH;
            t->send = v;
        } else if (!v) {
            t->kind = SL_DLQ_LOST;
        }
        return;
    }
    if (is_message(j)) {
        const struct sl_source_conf *s = find_message_source(c, j, NULL, NULL);
        t->kind = SL_DLQ_MESSAGE;
        if (s)
            snprintf(t->fn, sizeof(t->fn), "%s", s->function);
        snprintf(t->cond, sizeof(t->cond), "MaxReceiveCountExceeded");
        return;
    }
    /* before 0.2: {"condition", "function", "source":{...}, "records":[{"id","record"}]} */
    if ((cond = json_string_value(json_object_get(j, "condition"))) &&
        json_is_array(v = json_object_get(j, "records"))) {
        const char *fn = json_string_value(json_object_get(j, "function"));
        const char *type = json_string_value(json_object_get(json_object_get(j, "source"), "type"));
        json_t *it;
        size_t i;
        snprintf(t->cond, sizeof(t->cond), "%s", cond);
        if (fn)
            snprintf(t->fn, sizeof(t->fn), "%s", fn);
        t->kind = SL_DLQ_OLD_BATCH;
        if (json_array_size(v) && type && strcmp(type, "redis") == 0) {
            t->kind = SL_DLQ_OLD_QUEUE;
            json_array_foreach(v, i, it)
                if (!is_message(json_object_get(it, "record")))
                    t->kind = SL_DLQ_OLD_BATCH;
        }
    }
}

char *sl_dlq_summary(const struct sl_dlq_target *t)
{
    json_t *show = t->kind == SL_DLQ_MESSAGE ? json_object_get(t->doc, "body")
                 : t->send ? t->send
                 : t->kind == SL_DLQ_OLD_BATCH || t->kind == SL_DLQ_OLD_QUEUE
                     ? json_object_get(t->doc, "records")
                 : t->kind == SL_DLQ_LOST
                     ? json_object_get(json_object_get(t->doc, "error"), "message")
                 : NULL;

    if (json_is_string(show))
        return sl_strdup(json_string_value(show));
    return show ? json_dumps(show, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

void sl_dlq_error(const struct sl_dlq_target *t, const char **error, long long *attempts)
{
    json_t *ctx = json_object_get(t->doc, "requestContext"), *v;

    *error = NULL;
    *attempts = -1;
    if ((v = json_object_get(json_object_get(t->doc, "error"), "message")) && json_is_string(v))
        *error = json_string_value(v);
    else if ((v = json_object_get(json_object_get(t->doc, "responsePayload"), "errorMessage")) &&
             json_is_string(v))
        *error = json_string_value(v);
    if (json_is_integer(v = json_object_get(ctx, "approximateInvokeCount")))
        *attempts = json_integer_value(v);
    else if (t->kind == SL_DLQ_MESSAGE &&
             json_is_string(v = json_object_get(json_object_get(t->doc, "attributes"),
                                                "ApproximateReceiveCount")))
        *attempts = strtoll(json_string_value(v), NULL, 10);
}

size_t sl_dlq_messages(const struct sl_dlq_target *t, json_t **msgs, size_t max)
{
    size_t n = 0, i;
    json_t *it;

    if (t->kind == SL_DLQ_MESSAGE && max > 0)
        msgs[n++] = t->doc;
    else if (t->kind == SL_DLQ_OLD_QUEUE)
        json_array_foreach(json_object_get(t->doc, "records"), i, it)
            if (n < max)
                msgs[n++] = json_object_get(it, "record");
    return n;
}

/* ------------------------------------------------------------------ */
/* Redrive of queue messages                                           */

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Standard base64 into `out` (room for n * 3 / 4 bytes); its length, or -1. */
static long b64decode(const char *in, size_t n, unsigned char *out)
{
    unsigned acc = 0;
    int bits = 0;
    long o = 0;

    for (size_t i = 0; i < n && in[i] != '='; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = ((acc << 6) | (unsigned)v) & 0xffffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* In a stream, XADD with the body as field `body` and its
 * messageAttributes as the other fields (Binary ones decoded); in a list,
 * LPUSH of the body. */
int sl_dlq_requeue(const struct sl_source_conf *s, json_t *msg, struct sl_err *err)
{
    const char *url = opt_str(s, "url"), *key = opt_str(s, "key"), *mode = opt_str(s, "mode");
    json_t *body = json_object_get(msg, "body"), *attrs = json_object_get(msg, "messageAttributes");
    json_t *a;
    const char *name;
    redisContext *c;
    redisReply *r;
    size_t argc = 0, cap = 5 + 2 * json_object_size(attrs), nowned = 0;
    const char **argv;
    size_t *lens;
    char **owned;
    int rc;

    if (!url || !key || !mode || !json_is_string(body))
        return sl_err_set(err, SL_EINVAL, false, "the message has no body, or source %s no "
                          "queue", s->name);
    if (!(c = redis_open(url, err)))
        return err->code;
    argv = sl_calloc(cap, sizeof(*argv));
    lens = sl_calloc(cap, sizeof(*lens));
    owned = sl_calloc(cap, sizeof(*owned));
#define ARG(p, n) (argv[argc] = (p), lens[argc++] = (n))
    if (strcmp(mode, "list") == 0) {
        ARG("LPUSH", 5);
        ARG(key, strlen(key));
        ARG(json_string_value(body), json_string_length(body));
    } else {
        ARG("XADD", 4);
        ARG(key, strlen(key));
        ARG("*", 1);
        ARG("body", 4);
        ARG(json_string_value(body), json_string_length(body));
        json_object_foreach(attrs, name, a) {
            json_t *sv = json_object_get(a, "stringValue"), *bv = json_object_get(a, "binaryValue");
            if (strcmp(name, "body") == 0)
                continue;
            if (json_is_string(sv)) {
                ARG(name, strlen(name));
                ARG(json_string_value(sv), json_string_length(sv));
            } else if (json_is_string(bv)) {
                unsigned char *raw = sl_malloc(json_string_length(bv) * 3 / 4 + 3);
                long rn = b64decode(json_string_value(bv), json_string_length(bv), raw);
                owned[nowned++] = (char *)raw;
                if (rn < 0)
                    continue;
                ARG(name, strlen(name));
                ARG((const char *)raw, (size_t)rn);
            }
        }
    }
#undef ARG
    r = redisCommandArgv(c, (int)argc, argv, lens);
    rc = r && r->type != REDIS_REPLY_ERROR ? 0 : -1;
    if (rc != 0)
        rc = sl_err_set(err, SL_EIO, true, "cannot put the message back on %s: %s", key,
                        r && r->str ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(argv);
    free(lens);
    return rc;
}
