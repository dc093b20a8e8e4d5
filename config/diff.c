/* What differs between two loaded configurations, walked through the same
 * key tables the loader fills and frees: a live reload restarts only what
 * this names, and logs it. Pure: no I/O, no globals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"
#include "sluice/mem.h"

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* ", key" onto `buf` (size n); "..." once it is full. */
static void add_key(char *buf, size_t n, const char *prefix, const char *key)
{
    size_t len = strlen(buf);

    if (len + 4 >= n)
        return;
    if (len > 0 && strcmp(buf + len - 3, "...") == 0)
        return;
    if ((size_t)snprintf(buf + len, n - len, "%s%s%s", len ? ", " : "", prefix, key) >= n - len)
        snprintf(buf + (n > 4 ? n - 4 : 0), 4, "...");
}

static void diff_keys(const struct sl_conf_key *keys, size_t nkeys, const char *prefix,
                      const void *a, const void *b, const void *oa, const void *ob,
                      char *out, size_t n);

/* Whether key `k` holds the same value at fa and fb; an OBJECT adds its
 * own sub-keys (as "async.on_failure") and answers true. */
static bool same(const struct sl_conf_key *k, const char *prefix, const void *fa, const void *fb,
                 char *out, size_t n)
{
    switch (k->type) {
    case SL_CK_STRING:
    case SL_CK_PATH:
        return str_eq(*(char *const *)fa, *(char *const *)fb);
    case SL_CK_INT:
    case SL_CK_DURATION:
    case SL_CK_SIZE:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case SL_CK_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case SL_CK_ENUM:
        return *(const int *)fa == *(const int *)fb;
    case SL_CK_STRLIST:
    case SL_CK_PATHLIST: {
        const struct sl_strlist *la = fa, *lb = fb;
        if (la->n != lb->n)
            return false;
        for (size_t i = 0; i < la->n; i++)
            if (!str_eq(la->v[i], lb->v[i]))
                return false;
        return true;
    }
    case SL_CK_MAP: {
        const struct sl_kvlist *la = fa, *lb = fb;
        if (la->n != lb->n)
            return false;
        for (size_t i = 0; i < la->n; i++)
            if (!str_eq(la->v[i].key, lb->v[i].key) || !str_eq(la->v[i].value, lb->v[i].value))
                return false;
        return true;
    }
    case SL_CK_OBJECT: {
        char sub[128];
        snprintf(sub, sizeof(sub), "%s%s.", prefix, k->name);
        diff_keys(k->sub->keys, k->sub->nkeys, sub, fa, fb, NULL, NULL, out, n);
        return true;
    }
    case SL_CK_JSON: {
        const json_t *ja = *(json_t *const *)fa, *jb = *(json_t *const *)fb;
        return ja == jb || (ja && jb && json_equal((json_t *)ja, (json_t *)jb));
    }
    default:
        return true;
    }
}

/* Every key of the table whose value differs between `a` and `b`
 * (sections) or, for a type's keys, `oa` and `ob` (options structs; NULL:
 * a common table). SL_CK_BASE keys of a type live in the section. */
static void diff_keys(const struct sl_conf_key *keys, size_t nkeys, const char *prefix,
                      const void *a, const void *b, const void *oa, const void *ob,
                      char *out, size_t n)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct sl_conf_key *k = &keys[i];
        const char *pa, *pb;

        if (k->flags & SL_CK_TYPE)
            continue; /* compared by the caller (the descriptor) */
        if (oa && !(k->flags & SL_CK_BASE)) {
            pa = (const char *)oa + k->off;
            pb = (const char *)ob + k->off;
        } else {
            pa = (const char *)a + k->off;
            pb = (const char *)b + k->off;
        }
        if (!same(k, prefix, pa, pb, out, n))
            add_key(out, n, prefix, k->name);
    }
}

static void typed_keys(const struct sl__ctable *t, const struct sl_conf_type *ta,
                       const struct sl_conf_type *tb, const void *a, const void *b,
                       const void *oa, const void *ob, char *out, size_t n)
{
    if (ta != tb) {
        add_key(out, n, "", "type");
        return; /* the options mean different things */
    }
    diff_keys(t->keys, t->nkeys, "", a, b, NULL, NULL, out, n);
    if (ta && oa && ob)
        diff_keys(ta->keys, ta->nkeys, "", a, b, oa, ob, out, n);
}

static void push(struct sl_conf_diff *d, int section, int kind, const char *name,
                 const char *keys)
{
    struct sl_conf_change *c;

    d->v = sl_realloc(d->v, (d->n + 1) * sizeof(*d->v));
    c = &d->v[d->n++];
    memset(c, 0, sizeof(*c));
    c->section = section;
    c->kind = kind;
    c->name = name;
    snprintf(c->keys, sizeof(c->keys), "%s", keys ? keys : "");
}

/* One section: names only in `b` are added, only in `a` removed, in both
 * with a differing key changed. */
#define DIFF_NAMED(d, sec, A, B, arr, count, KEYS)                                      \
    do {                                                                                \
        for (size_t i_ = 0; i_ < (B)->count; i_++) {                                    \
            const __typeof__((B)->arr[0]) *y = &(B)->arr[i_], *x = NULL;                \
            char keys_[sizeof(((struct sl_conf_change *)0)->keys)] = "";                \
            for (size_t j_ = 0; j_ < (A)->count && !x; j_++)                            \
                if (strcmp((A)->arr[j_].name, y->name) == 0)                            \
                    x = &(A)->arr[j_];                                                  \
            if (!x) {                                                                   \
                push(d, sec, SL_DIFF_ADDED, y->name, NULL);                             \
                continue;                                                               \
            }                                                                           \
            KEYS;                                                                       \
            if (keys_[0])                                                               \
                push(d, sec, SL_DIFF_CHANGED, y->name, keys_);                          \
        }                                                                               \
        for (size_t j_ = 0; j_ < (A)->count; j_++) {                                    \
            bool found_ = false;                                                        \
            for (size_t i_ = 0; i_ < (B)->count && !found_; i_++)                       \
                found_ = strcmp((A)->arr[j_].name, (B)->arr[i_].name) == 0;             \
            if (!found_)                                                                \
                push(d, sec, SL_DIFF_REMOVED, (A)->arr[j_].name, NULL);                 \
        }                                                                               \
    } while (0)

void sl_config_diff(const struct sl_config *a, const struct sl_config *b, struct sl_conf_diff *d)
{
    memset(d, 0, sizeof(*d));
    DIFF_NAMED(d, SL_DIFF_FUNCTION, a, b, functions, nfunctions, {
        diff_keys(sl__function_table.keys, sl__function_table.nkeys, "", x, y, NULL, NULL,
                  keys_, sizeof(keys_));
        if (!str_eq(x->arn, y->arn))
            add_key(keys_, sizeof(keys_), "", "arn");
    });
    DIFF_NAMED(d, SL_DIFF_SOURCE, a, b, sources, nsources, {
        typed_keys(&sl__source_table, x->type, y->type, x, y, x->opts, y->opts, keys_,
                   sizeof(keys_));
    });
    DIFF_NAMED(d, SL_DIFF_SINK, a, b, sinks, nsinks, {
        typed_keys(&sl__sink_table, x->type, y->type, x, y, x->opts, y->opts, keys_,
                   sizeof(keys_));
    });
    diff_keys(sl__server_table.keys, sl__server_table.nkeys, "", &a->server, &b->server, NULL,
              NULL, d->server, sizeof(d->server));
    diff_keys(sl__log_table.keys, sl__log_table.nkeys, "", &a->log, &b->log, NULL, NULL,
              d->log, sizeof(d->log));
}

void sl_conf_diff_destroy(struct sl_conf_diff *d)
{
    if (!d)
        return;
    free(d->v);
    d->v = NULL;
    d->n = 0;
}

const struct sl_conf_change *sl_conf_diff_find(const struct sl_conf_diff *d, int section,
                                               const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].section == section && strcmp(d->v[i].name, name) == 0)
            return &d->v[i];
    return NULL;
}

bool sl_conf_diff_empty(const struct sl_conf_diff *d)
{
    return d->n == 0 && !d->server[0] && !d->log[0];
}

void sl_conf_diff_summary(const struct sl_conf_diff *d, char *buf, size_t n)
{
    static const char *const what[] = { "function", "source", "sink" };
    static const char sign[] = { '?', '+', '-', '~' };
    size_t o = 0;

    buf[0] = '\0';
    for (int kind = SL_DIFF_ADDED; kind <= SL_DIFF_CHANGED; kind++)
        for (int sec = SL_DIFF_FUNCTION; sec <= SL_DIFF_SINK; sec++) {
            size_t count = 0;
            char names[256] = "";
            for (size_t i = 0; i < d->n; i++) {
                const struct sl_conf_change *c = &d->v[i];
                char one[200];
                if (c->kind != kind || c->section != sec)
                    continue;
                count++;
                if (kind == SL_DIFF_CHANGED)
                    snprintf(one, sizeof(one), "%s (%s)", c->name, c->keys);
                else
                    snprintf(one, sizeof(one), "%s", c->name);
                add_key(names, sizeof(names), "", one);
            }
            if (count && o < n)
                o += (size_t)snprintf(buf + o, n - o, "%s%c%zu %s%s: %s", o ? ", " : "",
                                      sign[kind], count, what[sec], count > 1 ? "s" : "", names);
        }
    if (d->server[0] && o < n)
        o += (size_t)snprintf(buf + o, n - o, "%s~server (%s)", o ? ", " : "", d->server);
    if (d->log[0] && o < n)
        o += (size_t)snprintf(buf + o, n - o, "%s~log (%s)", o ? ", " : "", d->log);
    if (o == 0)
        snprintf(buf, n, "no change");
}
