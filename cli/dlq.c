/* `sluice dlq list|show|redrive CONFIG SINK`: read what a sink holds, and
 * send it back: an asynchronous invocation's destination record and a
 * stream batch's on-failure record as an asynchronous invocation of their
 * function (requestPayload, payload), a queue message to the Redis queue
 * it came from. A command line tool, so plain blocking clients are fine
 * here. An entry is removed only after the service accepted its redrive
 * (202) or the queue took the message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/redis.h"
#include "sluice/sink.h"

#include "internal.h"

struct entry {
    char *id;        /* stream id, row id, or line number */
    char *record;    /* JSON text */
};

struct entries {
    struct entry *v;
    size_t        n;
};

static void add(struct entries *e, const char *id, const char *rec, size_t len)
{
    e->v = sl_realloc(e->v, (e->n + 1) * sizeof(*e->v));
    e->v[e->n].id = sl_strdup(id);
    e->v[e->n].record = sl_strndup(rec, len);
    e->n++;
}

static void entries_free(struct entries *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].id);
        free(e->v[i].record);
    }
    free(e->v);
}

/* ------------------------------------------------------------------ */
/* Redis                                                               */

static redisContext *redis_open(const char *url)
{
    struct sl_redis_url u;
    char why[SL_ERR_MSG_MAX], red[512];
    redisContext *c;

    if (sl_redis_url_parse(url, &u, why, sizeof(why)) != 0) {
        fprintf(stderr, "sluice: %s\n", why);
        sl_redis_url_destroy(&u);
        return NULL;
    }
    sl_redis_url_show(&u, red, sizeof(red));
    c = redisConnect(u.host, u.port);
    if (!c || c->err) {
        fprintf(stderr, "sluice: cannot connect to %s: %s\n", red, c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        c = NULL;
        goto out;
    }
    if (u.pass) {
        redisReply *r = u.user ? redisCommand(c, "AUTH %s %s", u.user, u.pass)
                               : redisCommand(c, "AUTH %s", u.pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "sluice: %s refused the password\n", red);
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

static int load_redis(const struct sl_redis_sink_opts *s, struct entries *e)
{
    redisContext *c = redis_open(s->url);
    redisReply *r;

    if (!c)
        return -1;
    r = redisCommand(c, "XRANGE %s - +", s->key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "sluice: XRANGE %s failed: %s\n", s->key,
                r && r->str ? r->str : c->errstr);
        freeReplyObject(r);
        redisFree(c);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *ent = r->element[i], *f;
        if (ent->elements != 2)
            continue;
        f = ent->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            if (strcmp(f->element[k]->str, "record") == 0)
                add(e, ent->element[0]->str, f->element[k + 1]->str, f->element[k + 1]->len);
    }
    freeReplyObject(r);
    redisFree(c);
    return 0;
}

static int delete_redis(const struct sl_redis_sink_opts *s, const char *id)
{
    redisContext *c = redis_open(s->url);
    redisReply *r;
    int ok;

    if (!c)
        return -1;
    r = redisCommand(c, "XDEL %s %s", s->key, id);
    ok = r && r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */

static int load_pg(const struct sl_pg_sink_opts *s, struct entries *e)
{
    PGconn *c = PQconnectdb(s->dsn);
    char *ident, sql[512];
    PGresult *r;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "sluice: cannot connect to postgres: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    ident = PQescapeIdentifier(c, s->table, strlen(s->table));
    snprintf(sql, sizeof(sql), "SELECT id::text, record::text FROM %s ORDER BY id", ident);
    PQfreemem(ident);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "sluice: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++)
        add(e, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
    PQclear(r);
    PQfinish(c);
    return 0;
}

static int delete_pg(const struct sl_pg_sink_opts *s, const char *id)
{
    PGconn *c = PQconnectdb(s->dsn);
    const char *params[1] = { id };
    char *ident, sql[512];
    PGresult *r;
    int ok;

    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return -1;
    }
    ident = PQescapeIdentifier(c, s->table, strlen(s->table));
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = $1::bigint", ident);
    PQfreemem(ident);
    r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */

static int load_sqlite(const struct sl_sqlite_sink_opts *s, struct entries *e)
{
    sqlite3 *db;
    sqlite3_stmt *st;

    if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "sluice: cannot open %s: %s\n", s->path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    if (sqlite3_prepare_v2(db, "SELECT id, record FROM dlq ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "sluice: %s: %s\n", s->path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW)
        add(e, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
            (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static int delete_sqlite(const struct sl_sqlite_sink_opts *s, const char *id)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int ok = 0;

    if (sqlite3_open(s->path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "DELETE FROM dlq WHERE id = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, strtoll(id, NULL, 10));
        ok = sqlite3_step(st) == SQLITE_DONE;
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */

static int load_file(const struct sl_file_sink_opts *s, struct entries *e)
{
    FILE *f = fopen(s->path, "r");
    char *line = NULL, id[32];
    size_t cap = 0;
    ssize_t n;
    long no = 0;

    if (!f) {
        if (errno == ENOENT)
            return 0; /* nothing written yet */
        fprintf(stderr, "sluice: cannot open %s: %s\n", s->path, strerror(errno));
        return -1;
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

/* Rewrite the file without the given line numbers (set in `drop`). */
static int rewrite_file(const struct sl_file_sink_opts *s, const struct entries *e, const char *drop)
{
    char *tmp = sl_asprintf("%s.redrive", s->path);
    FILE *f = fopen(tmp, "w");
    int rc = 0;

    if (!f) {
        free(tmp);
        return -1;
    }
    for (size_t i = 0; i < e->n; i++)
        if (!drop[i])
            fprintf(f, "%s\n", e->v[i].record);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = -1;
    fclose(f);
    if (rc == 0 && rename(tmp, s->path) != 0)
        rc = -1;
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------ */

static int load(const struct sl_sink_conf *s, struct entries *e)
{
    if (s->type == &sl_redis_sink.conf)
        return load_redis(s->opts, e);
    if (s->type == &sl_postgres_sink.conf)
        return load_pg(s->opts, e);
    if (s->type == &sl_sqlite_sink.conf)
        return load_sqlite(s->opts, e);
    if (s->type == &sl_file_sink.conf)
        return load_file(s->opts, e);
    fprintf(stderr, "sluice: a %s sink cannot be read back; read the topic with a Kafka "
                    "consumer\n", sl_conf_type_name(s->type));
    return -1;
}

/* ------------------------------------------------------------------ */
/* What an entry is                                                    */

enum kind {
    K_UNKNOWN = 0,
    K_ASYNC,        /* an asynchronous invocation's destination record: requestPayload */
    K_BATCH,        /* a stream batch's on-failure record: its event in "payload" */
    K_LOST,         /* an on-failure record of records never delivered: nothing to send */
    K_MESSAGE,      /* a queue message redriven after max_receive_count (SQS-shaped) */
    K_OLD_BATCH,    /* before 0.2: the engine's envelope of a stream batch */
    K_OLD_QUEUE,    /* before 0.2: the envelope of a queue message ("records":[{record}]) */
};

struct target {
    int     kind;                    /* enum kind */
    char    fn[128];                 /* "?" when unknown */
    char    cond[64];                /* "-" when unknown */
    json_t *send;                    /* K_ASYNC, K_BATCH: the payload (borrowed from doc) */
    json_t *doc;                     /* the entry, owned */
};

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

/* The queue source a message came from: the Redis source whose key is the
 * last part of the message's eventSourceARN (arn:aws:sqs:<region>:<account>:<key>,
 * or before 0.2 arn:sluice:redis:<region>:<db>:<key>; a key may hold ':'),
 * or the one named `only`. NULL (said on stderr) when none or several match. */
static const struct sl_source_conf *message_source(const struct sl_config *c, json_t *msg,
                                                   const char *only, bool quiet)
{
    const char *arn = json_string_value(json_object_get(msg, "eventSourceARN")), *key = arn;
    const struct sl_source_conf *found = NULL;
    int colons = 0;

    for (; key && *key && colons < 5; key++)
        if (*key == ':')
            colons++;
    if (!key || colons < 5 || !*key) {
        if (!quiet)
            fprintf(stderr, "sluice: eventSourceARN %s names no queue\n", arn ? arn : "(none)");
        return NULL;
    }
    for (size_t i = 0; i < c->nsources; i++) {
        const struct sl_source_conf *s = &c->sources[i];
        const char *k = opt_str(s, "key"), *mode = opt_str(s, "mode");
        if (strcmp(sl_conf_type_name(s->type), "redis") != 0 || !k || strcmp(k, key) != 0 ||
            !mode || (only && strcmp(s->name, only) != 0))
            continue;
        if (found) {
            if (!quiet)
                fprintf(stderr, "sluice: sources %s and %s both read queue %s; choose one "
                        "with --source NAME\n", found->name, s->name, key);
            return NULL;
        }
        found = s;
    }
    if (!found && !quiet)
        fprintf(stderr, "sluice: no redis source%s%s reads queue %s\n", only ? " named " : "",
                only ? only : "", key);
    return found;
}

static void target_free(struct target *t)
{
    json_decref(t->doc);
    memset(t, 0, sizeof(*t));
}

/* Read one entry: what it is, its function, its condition. */
static void classify(const struct sl_config *c, const char *record, struct target *t)
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
            t->kind = K_ASYNC;
            t->send = v;
        } else if ((v = json_object_get(j, "payload")) && json_is_object(v)) {
            t->kind = K_BATCH;
            t->send = v;
        } else if (!v) {
            t->kind = K_LOST;
        }
        return;
    }
    if (is_message(j)) {
        const struct sl_source_conf *s = message_source(c, j, NULL, true);
        t->kind = K_MESSAGE;
        if (s)
            snprintf(t->fn, sizeof(t->fn), "%s", s->function);
        snprintf(t->cond, sizeof(t->cond), "MaxReceiveCountExceeded");
        return;
    }
    /* before 0.2: {"condition", "function", "source":{...}, "records":[{"id","record"}]} */
    if ((cond = json_string_value(json_object_get(j, "condition"))) &&
        json_is_array(v = json_object_get(j, "records"))) {
        const char *fn = json_string_value(json_object_get(j, "function"));
        json_t *src = json_object_get(j, "source"), *it;
        size_t i;
        snprintf(t->cond, sizeof(t->cond), "%s", cond);
        if (fn)
            snprintf(t->fn, sizeof(t->fn), "%s", fn);
        t->kind = K_OLD_BATCH;
        if (json_array_size(v) &&
            strcmp(json_string_value(json_object_get(src, "type")) ?
                       json_string_value(json_object_get(src, "type")) : "", "redis") == 0) {
            t->kind = K_OLD_QUEUE;
            json_array_foreach(v, i, it)
                if (!is_message(json_object_get(it, "record")))
                    t->kind = K_OLD_BATCH;
        }
    }
}
/* ------------------------------------------------------------------ */
/* Redrive                                                             */

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

/* Put one SQS-shaped message back on the queue of source `s`, as a new
 * message (its receive count starts again, as after SQS's redrive): in a
 * stream, XADD with the body as field `body` and its messageAttributes as
 * the other fields (Binary ones decoded); in a list, LPUSH of the body.
 * 0 or -1 (said on stderr). */
static int requeue_message(const struct sl_source_conf *s, json_t *msg)
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

    if (!url || !key || !mode || !json_is_string(body) || !(c = redis_open(url)))
        return -1;
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
        fprintf(stderr, "sluice: cannot put the message back on %s: %s\n", key,
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

/* Send one entry back: 0 sent, 1 nothing it can be sent as (kept), -1
 * refused (kept; stop). */
static int redrive_entry(const struct sl_config *c, const struct target *t, const char *id,
                         const char *endpoint, const char *only)
{
    json_t *msgs[64];
    size_t nmsg = 0;

    switch (t->kind) {
    case K_ASYNC:
    case K_BATCH: {
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
    case K_MESSAGE:
        msgs[nmsg++] = t->doc;
        break;
    case K_OLD_QUEUE: {
        json_t *it;
        size_t i;
        json_array_foreach(json_object_get(t->doc, "records"), i, it)
            if (nmsg < sizeof(msgs) / sizeof(msgs[0]))
                msgs[nmsg++] = json_object_get(it, "record");
        break;
    }
    case K_LOST:
        fprintf(stderr, "sluice: entry %s reports records the source lost before delivery; "
                "there is nothing to redrive (kept)\n", id);
        return 1;
    default:
        fprintf(stderr, "sluice: entry %s is not a record sluice can redrive; kept\n", id);
        return 1;
    }
    /* queue messages go back to the queue they came from */
    for (size_t i = 0; i < nmsg; i++) {
        const struct sl_source_conf *s = message_source(c, msgs[i], only, false);
        if (!s)
            return 1;
        if (requeue_message(s, msgs[i]) != 0) {
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
    struct entries e = { 0 };
    int rc = 0;

    if (!s) {
        fprintf(stderr, "sluice: %s has no sink named '%s'\n", c->path, sink_name);
        return 1;
    }
    if (load(s, &e) != 0)
        return 1;
    if (strcmp(verb, "list") == 0) {
        for (size_t i = 0; i < e.n; i++) {
            struct target t;
            json_t *show;
            char *text = NULL;
            classify(c, e.v[i].record, &t);
            show = t.kind == K_MESSAGE ? json_object_get(t.doc, "body")
                 : t.send ? t.send
                 : t.kind == K_OLD_BATCH || t.kind == K_OLD_QUEUE ? json_object_get(t.doc, "records")
                 : t.kind == K_LOST ? json_object_get(json_object_get(t.doc, "error"), "message")
                 : NULL;
            if (json_is_string(show))
                text = sl_strdup(json_string_value(show));
            else if (show)
                text = json_dumps(show, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("%s\t%s\t%s\t%.80s\n", e.v[i].id, t.fn, t.cond, text ? text : e.v[i].record);
            free(text);
            target_free(&t);
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
            struct target t;
            int r;
            if (id && strcmp(e.v[i].id, id) != 0)
                continue;
            classify(c, e.v[i].record, &t);
            /* removed only once the service (202) or the queue took it */
            r = redrive_entry(c, &t, e.v[i].id, endpoint, only);
            target_free(&t);
            if (r != 0) {
                rc = 1;
                if (r < 0)
                    break;
                continue;
            }
            drop[i] = 1;
            done++;
            if (s->type == &sl_redis_sink.conf && delete_redis(s->opts, e.v[i].id) != 0)
                rc = 1;
            else if (s->type == &sl_postgres_sink.conf && delete_pg(s->opts, e.v[i].id) != 0)
                rc = 1;
            else if (s->type == &sl_sqlite_sink.conf && delete_sqlite(s->opts, e.v[i].id) != 0)
                rc = 1;
        }
        if (s->type == &sl_file_sink.conf && done && rewrite_file(s->opts, &e, drop) != 0) {
            fprintf(stderr, "sluice: cannot rewrite %s; redriven entries are still in it\n",
                    ((const struct sl_file_sink_opts *)s->opts)->path);
            rc = 1;
        }
        fprintf(stderr, "redrove %zu entries from sink %s\n", done, sink_name);
        free(drop);
    }
    entries_free(&e);
    return rc;
}

int sl__cli_dlq_count(const struct sl_sink_conf *s, size_t *n)
{
    struct entries e = { 0 };

    *n = 0;
    if (s->type != &sl_redis_sink.conf && s->type != &sl_postgres_sink.conf &&
        s->type != &sl_sqlite_sink.conf && s->type != &sl_file_sink.conf)
        return -1;
    if (load(s, &e) != 0)
        return -1;
    *n = e.n;
    entries_free(&e);
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
