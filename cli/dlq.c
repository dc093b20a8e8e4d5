/* `sluice dlq list|show|redrive CONFIG SINK`: read what a sink holds, and
 * send dead-lettered events back as asynchronous invocations. A command
 * line tool, so plain blocking clients are fine here. An entry is removed
 * only after the service accepted its redrive (202). */
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

/* Function name and payload of a destination record; 0 or -1. */
static int redrive_target(const char *record, char *fn, size_t fnlen, char **payload)
{
    json_t *j = json_loads(record, 0, NULL), *arn, *req;
    const char *a, *p, *colon;
    int rc = -1;

    if (!j)
        return -1;
    arn = json_object_get(json_object_get(j, "requestContext"), "functionArn");
    req = json_object_get(j, "requestPayload");
    a = json_string_value(arn);
    if (a && req && (p = strstr(a, ":function:"))) {
        p += 10;
        colon = strchr(p, ':');
        snprintf(fn, fnlen, "%.*s", (int)(colon ? (size_t)(colon - p) : strlen(p)), p);
        *payload = json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY);
        rc = *payload ? 0 : -1;
    }
    json_decref(j);
    return rc;
}

static int dlq_command(const struct sl_config *c, const char *verb, const char *sink_name,
                   const char *id, const char *endpoint)
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
            char fn[128] = "?", *payload = NULL;
            json_t *j = json_loads(e.v[i].record, 0, NULL);
            const char *cond = json_string_value(json_object_get(
                json_object_get(j, "requestContext"), "condition"));
            if (redrive_target(e.v[i].record, fn, sizeof(fn), &payload) != 0)
                snprintf(fn, sizeof(fn), "?");
            printf("%s\t%s\t%s\t%.80s\n", e.v[i].id, fn, cond ? cond : "-",
                   payload ? payload : e.v[i].record);
            free(payload);
            json_decref(j);
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
            char fn[128], *payload = NULL;
            if (id && strcmp(e.v[i].id, id) != 0)
                continue;
            if (redrive_target(e.v[i].record, fn, sizeof(fn), &payload) != 0) {
                fprintf(stderr, "sluice: entry %s is not a destination record; kept\n",
                        e.v[i].id);
                rc = 1;
                continue;
            }
            /* removed only once the service took it (202) */
            if (sl__cli_invoke_remote(endpoint, fn, payload, strlen(payload), true,
                                 getenv("SLUICE_TOKEN")) != 0) {
                fprintf(stderr, "sluice: entry %s not accepted by %s; kept\n", e.v[i].id,
                        endpoint);
                free(payload);
                rc = 1;
                break;
            }
            free(payload);
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

int sl__cmd_dlq(int argc, char **argv)
{
    const char *endpoint = getenv("SLUICE_ENDPOINT"), *args[4];
    struct sl_config *c;
    int code, nargs = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
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
                        "       sluice dlq show|redrive CONFIG SINK [ID] [--endpoint URL]\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(args[1], &c) != 0)
        return EXIT_FAIL;
    code = dlq_command(c, args[0], args[2], nargs == 4 ? args[3] : NULL,
                          endpoint ? endpoint : "http://127.0.0.1:9001");
    sl_config_free(c);
    return code;
}
