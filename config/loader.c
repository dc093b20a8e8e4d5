/* Configuration loader: YAML document -> struct sl_config, driven by the key
 * tables in schema.c and those of the source and sink types in the
 * registry the caller passes. It never stops at the first problem: every error is
 * collected with its place so `sluice lint` can show them all at once. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#define CONFIG_MAX_BYTES (16 * 1024 * 1024)

struct sl_conf_load {
    struct sl_diags *d;
    const struct sl_conf_registry *reg;
    yaml_document_t  doc;
    struct sl_config *c;
    char             keypath[1024];
    yaml_node_t     *functions;   /* top-level mappings, for references */
    yaml_node_t     *sinks;
    yaml_node_t     *cur_map;     /* the mapping apply_view is filling */
};

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */

void sl_diags_init(struct sl_diags *d, const char *file)
{
    memset(d, 0, sizeof(*d));
    d->file = sl_strdup(file);
}

void sl_diags_destroy(struct sl_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].msg);
    free(d->v);
    free(d->file);
    memset(d, 0, sizeof(*d));
}

static void diags_addv(struct sl_diags *d, int line, int col, const char *fmt, va_list ap)
{
    char buf[1024];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    d->v = sl_realloc(d->v, (d->n + 1) * sizeof(*d->v));
    d->v[d->n].line = line;
    d->v[d->n].col = col;
    d->v[d->n].seq = d->n;
    d->v[d->n].msg = sl_strdup(buf);
    d->n++;
}

void sl_diags_add(struct sl_diags *d, int line, int col, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    diags_addv(d, line, col, fmt, ap);
    va_end(ap);
}

static int diag_cmp(const void *a, const void *b)
{
    const struct sl_diag *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void sl_diags_print(struct sl_diags *d, FILE *out)
{
    if (d->n > 1)
        qsort(d->v, d->n, sizeof(*d->v), diag_cmp);
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i].line > 0)
            fprintf(out, "%s:%d:%d: %s\n", d->file, d->v[i].line, d->v[i].col, d->v[i].msg);
        else
            fprintf(out, "%s: %s\n", d->file, d->v[i].msg);
    }
}

void sl_conf_error(struct sl_conf_load *ld, struct yaml_node_s *node, const char *fmt, ...)
{
    char msg[900];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (node)
        sl_diags_add(ld->d, (int)node->start_mark.line + 1, (int)node->start_mark.column + 1,
                     "%s%s%s", ld->keypath, ld->keypath[0] ? ": " : "", msg);
    else
        sl_diags_add(ld->d, 0, 0, "%s%s%s", ld->keypath, ld->keypath[0] ? ": " : "", msg);
}

const char *sl__load_keypath(struct sl_conf_load *ld)
{
    return ld->keypath;
}

/* Push ".name" onto the key path; returns the length to pop back to. */
static size_t path_push(struct sl_conf_load *ld, const char *name)
{
    size_t len = strlen(ld->keypath);

    snprintf(ld->keypath + len, sizeof(ld->keypath) - len, "%s%s", len ? "." : "", name);
    return len;
}

static void path_pop(struct sl_conf_load *ld, size_t len)
{
    ld->keypath[len] = '\0';
}

/* ------------------------------------------------------------------ */
/* YAML helpers                                                        */

static yaml_node_t *node_at(struct sl_conf_load *ld, int id)
{
    return yaml_document_get_node(&ld->doc, id);
}

static const char *scalar(yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_null(yaml_node_t *n)
{
    const char *s;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    s = scalar(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static const char *node_kind(yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:  return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    default:                 return "a scalar";
    }
}

static yaml_node_t *map_get(struct sl_conf_load *ld, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(ld, p->key);
        if (k->type == YAML_SCALAR_NODE && strcmp(scalar(k), key) == 0)
            return node_at(ld, p->value);
    }
    return NULL;
}

const char *sl__load_sibling(struct sl_conf_load *ld, const char *key)
{
    yaml_node_t *n = map_get(ld, ld->cur_map, key);

    return n && n->type == YAML_SCALAR_NODE ? scalar(n) : NULL;
}

int sl__load_has_function(struct sl_conf_load *ld, const char *name)
{
    return map_get(ld, ld->functions, name) != NULL;
}

int sl__load_has_sink(struct sl_conf_load *ld, const char *name)
{
    return map_get(ld, ld->sinks, name) != NULL;
}

/* Interpolated text of a scalar node, owned by the caller; NULL after an
 * error was reported. */
static char *scalar_text(struct sl_conf_load *ld, yaml_node_t *n)
{
    char why[512];
    char *s;

    if (n->type != YAML_SCALAR_NODE) {
        sl_conf_error(ld, n, "expected a scalar, got %s", node_kind(n));
        return NULL;
    }
    s = sl__interpolate(scalar(n), why, sizeof(why));
    if (!s)
        sl_conf_error(ld, n, "%s", why);
    return s;
}

/* Edit distance, for "did you mean" on unknown keys. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[65], cur[65];

    if (la > 64 || lb > 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            cur[j] = del < ins ? (del < sub ? del : sub) : (ins < sub ? ins : sub);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Values                                                              */

static char *resolve_path(struct sl_conf_load *ld, const char *p)
{
    if (p[0] == '/')
        return sl_strdup(p);
    if (p[0] == '.' && p[1] == '/')
        p += 2;
    return sl_asprintf("%s/%s", ld->c->dir, p);
}

char *sl__load_resolve_path(struct sl_conf_load *ld, const char *p)
{
    return resolve_path(ld, p);
}

/* Ranges are written in the key's unit; durations are stored in ms. */
static int range_ok(const struct sl_conf_key *k, int64_t v)
{
    int64_t scale = k->type == SL_CK_DURATION ? k->unit : 1;

    return k->min == k->max || (v >= k->min * scale && v <= k->max * scale);
}

static const char *range_unit(const struct sl_conf_key *k)
{
    if (k->type == SL_CK_DURATION)
        return k->unit == 1 ? " ms" : k->unit == 1000 ? " s" : "";
    if (k->type == SL_CK_SIZE)
        return k->unit == 1024 * 1024 ? " MB" : k->unit == 1024 ? " KB" : "";
    return "";
}

/* Store one scalar `text` into `field` per the key's type. `node` places
 * errors; NULL while applying defaults (an error there is a table bug). */
static void store_scalar(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                         const char *text, yaml_node_t *node)
{
    char why[512];
    int64_t v;

    switch (k->type) {
    case SL_CK_STRING:
    case SL_CK_PATH:
        if (!*text) {
            sl_conf_error(ld, node, "must not be empty");
            return;
        }
        free(*(char **)field);
        *(char **)field = k->type == SL_CK_PATH ? resolve_path(ld, text) : sl_strdup(text);
        return;
    case SL_CK_BOOL:
        if (sl__parse_bool(text, (bool *)field, why, sizeof(why)) != 0)
            sl_conf_error(ld, node, "%s", why);
        return;
    case SL_CK_ENUM:
        for (int i = 0; k->enums[i]; i++) {
            if (strcmp(text, k->enums[i]) == 0) {
                *(int *)field = i;
                return;
            }
        }
        {
            char list[256] = "";
            for (int i = 0; k->enums[i]; i++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                         i ? ", " : "", k->enums[i]);
            sl_conf_error(ld, node, "'%s' is not one of %s", text, list);
        }
        return;
    case SL_CK_INT:
    case SL_CK_DURATION:
    case SL_CK_SIZE:
        if ((k->flags & SL_CK_NEG1) && strcmp(text, "-1") == 0) {
            *(int64_t *)field = -1;
            return;
        }
        if (k->type == SL_CK_INT && sl__parse_int(text, &v, why, sizeof(why)) != 0) {
            sl_conf_error(ld, node, "%s", why);
            return;
        }
        if (k->type == SL_CK_DURATION &&
            sl__parse_duration(text, k->unit, &v, why, sizeof(why)) != 0) {
            sl_conf_error(ld, node, "%s", why);
            return;
        }
        if (k->type == SL_CK_SIZE && sl__parse_size(text, k->unit, &v, why, sizeof(why)) != 0) {
            sl_conf_error(ld, node, "%s", why);
            return;
        }
        if (!range_ok(k, v)) {
            const char *u = range_unit(k);
            sl_conf_error(ld, node, "%s is out of range %lld..%lld%s%s", text,
                          (long long)k->min, (long long)k->max, u,
                          (k->flags & SL_CK_NEG1) ? " (or -1)" : "");
            return;
        }
        *(int64_t *)field = v;
        return;
    default:
        sl_conf_error(ld, node, "internal error: key type %d is not a scalar", k->type);
    }
}

static void strlist_free(struct sl_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void kvlist_free(struct sl_kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].value);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void store_list(struct sl_conf_load *ld, const struct sl_conf_key *k, struct sl_strlist *l,
                       yaml_node_t *node)
{
    yaml_node_item_t *start, *top, one;

    strlist_free(l);
    if (node->type == YAML_MAPPING_NODE) {
        sl_conf_error(ld, node, "expected a list, got a mapping");
        return;
    }
    if (node->type == YAML_SCALAR_NODE) {
        /* a single scalar is a one-item list: `topics: orders` */
        one = (yaml_node_item_t)(node - ld->doc.nodes.start + 1);
        start = &one;
        top = start + 1;
    } else {
        start = node->data.sequence.items.start;
        top = node->data.sequence.items.top;
    }
    l->v = sl_calloc((size_t)(top - start), sizeof(char *));
    for (yaml_node_item_t *it = start; it < top; it++) {
        yaml_node_t *item = node_at(ld, *it);
        char *s = scalar_text(ld, item);

        if (!s)
            continue;
        if (!*s)
            sl_conf_error(ld, item, "list items must not be empty");
        else
            l->v[l->n++] = k->type == SL_CK_PATHLIST ? resolve_path(ld, s) : sl_strdup(s);
        free(s);
    }
}

static void store_map(struct sl_conf_load *ld, struct sl_kvlist *l, yaml_node_t *node)
{
    yaml_node_pair_t *start, *top;

    kvlist_free(l);
    if (node->type != YAML_MAPPING_NODE) {
        sl_conf_error(ld, node, "expected a mapping, got %s", node_kind(node));
        return;
    }
    start = node->data.mapping.pairs.start;
    top = node->data.mapping.pairs.top;
    l->v = sl_calloc((size_t)(top - start), sizeof(*l->v));
    for (yaml_node_pair_t *p = start; p < top; p++) {
        yaml_node_t *kn = node_at(ld, p->key), *vn = node_at(ld, p->value);
        char *v;
        int dup = 0;

        if (kn->type != YAML_SCALAR_NODE) {
            sl_conf_error(ld, kn, "keys must be scalars");
            continue;
        }
        for (size_t i = 0; i < l->n; i++)
            dup |= strcmp(l->v[i].key, scalar(kn)) == 0;
        if (dup) {
            sl_conf_error(ld, kn, "duplicate key '%s'", scalar(kn));
            continue;
        }
        if (is_null(vn)) {
            sl_conf_error(ld, vn, "'%s' has no value", scalar(kn));
            continue;
        }
        v = scalar_text(ld, vn);
        if (!v)
            continue;
        l->v[l->n].key = sl_strdup(scalar(kn));
        l->v[l->n].value = v;
        l->n++;
    }
}

static int looks_numeric(const char *s)
{
    if (*s == '-' || *s == '+')
        s++;
    return *s >= '0' && *s <= '9';
}

/* YAML subtree -> JSON. Plain scalars become numbers, booleans or null
 * when they read as such; quoted scalars stay strings. */
static json_t *to_json(struct sl_conf_load *ld, yaml_node_t *node, int depth)
{
    json_t *j;

    if (depth > 32) {
        sl_conf_error(ld, node, "nested too deeply");
        return NULL;
    }
    switch (node->type) {
    case YAML_MAPPING_NODE:
        j = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = node_at(ld, p->key);
            json_t *v;

            if (kn->type != YAML_SCALAR_NODE) {
                sl_conf_error(ld, kn, "keys must be scalars");
                continue;
            }
            v = to_json(ld, node_at(ld, p->value), depth + 1);
            if (v)
                json_object_set_new(j, scalar(kn), v);
        }
        return j;
    case YAML_SEQUENCE_NODE:
        j = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            json_t *v = to_json(ld, node_at(ld, *it), depth + 1);
            if (v)
                json_array_append_new(j, v);
        }
        return j;
    case YAML_SCALAR_NODE: {
        char *s = scalar_text(ld, node);
        int64_t iv;
        char why[64], *end;
        double dv;
        bool bv;

        if (!s)
            return NULL;
        if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            j = json_string(s);
        else if (is_null(node))
            j = json_null();
        else if (sl__parse_int(s, &iv, why, sizeof(why)) == 0)
            j = json_integer(iv);
        else if (looks_numeric(s) && (dv = strtod(s, &end), *end == '\0') && isfinite(dv))
            j = json_real(dv);
        else if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
            j = (sl__parse_bool(s, &bv, why, sizeof(why)), json_boolean(bv));
        else
            j = json_string(s);
        if (!j) /* jansson refuses invalid UTF-8 */
            sl_conf_error(ld, node, "'%s' is not valid UTF-8", s);
        free(s);
        return j;
    }
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Views: the keys of one section as the loader sees them              */

/* One key of a section: a row of a config/ table (`type` -1) or a row of
 * the table of registered type `type`. */
struct vkey {
    const struct sl_conf_key *k;
    int                       type;
};

/* The common keys of a table, then (sources, sinks) every registered
 * type's own keys in registry order: the order of the reference, of
 * "did you mean" and of "missing required key" messages. */
struct view {
    struct vkey                       v[CK_MAX_KEYS];
    size_t                            n;
    const struct sl_conf_type *const *types;   /* NULL: an untyped table */
    const char                       *kind;    /* "sources", "sinks" */
    struct sl_conf_key                typekey; /* `type`, with the registry's names */
    const char                       *names[CK_MAX_TYPES + 1];
};

static void view_add(struct sl_conf_load *ld, struct view *vw, const struct sl_conf_key *k,
                     int type)
{
    if (vw->n == CK_MAX_KEYS) {
        sl_diags_add(ld->d, 0, 0, "internal error: %s has more than %d keys", vw->kind,
                     CK_MAX_KEYS);
        return;
    }
    vw->v[vw->n].k = k;
    vw->v[vw->n].type = type;
    vw->n++;
}

static void view_init(struct sl_conf_load *ld, struct view *vw, const struct sl__ctable *t,
                      const struct sl_conf_type *const *types, const char *kind)
{
    memset(vw, 0, sizeof(*vw));
    vw->kind = kind;
    vw->types = t->typed ? types : NULL;
    for (size_t i = 0; vw->types && vw->types[i]; i++) {
        if (i == CK_MAX_TYPES) {
            sl_diags_add(ld->d, 0, 0, "internal error: more than %d %s types", CK_MAX_TYPES,
                         kind);
            break;
        }
        vw->names[i] = vw->types[i]->name;
    }
    for (size_t i = 0; i < t->nkeys; i++) {
        if (t->keys[i].flags & SL_CK_TYPE) {
            vw->typekey = t->keys[i];
            vw->typekey.enums = vw->names;
            view_add(ld, vw, &vw->typekey, -1);
        } else {
            view_add(ld, vw, &t->keys[i], -1);
        }
    }
    for (int i = 0; vw->types && vw->names[i]; i++)
        for (size_t j = 0; j < vw->types[i]->nkeys; j++)
            view_add(ld, vw, &vw->types[i]->keys[j], i);
}

/* Does `vk` apply to sources or sinks of registry type `type`? (-1: the
 * table has no types, -2: the type is unknown, every key is accepted.) */
static int view_applies(const struct view *vw, const struct vkey *vk, int type)
{
    if (type < 0)
        return 1;
    if (vk->type >= 0)
        return vk->type == type;
    return !vk->k->traits || (vw->types[type]->traits & vk->k->traits);
}

/* Why source or sink type `type` refuses the common key `name`, or NULL. */
static const char *refusal(const struct view *vw, int type, const char *name)
{
    const struct sl_conf_refusal *r;

    if (type < 0 || !vw->types || !vw->types[type]->refusals)
        return NULL;
    for (r = vw->types[type]->refusals; r->key; r++)
        if (strcmp(r->key, name) == 0)
            return r->why;
    return NULL;
}

/* Where `vk`'s value lives: in the section struct, or in the options
 * struct of the type that declares it. */
static void *view_field(const struct vkey *vk, void *base, void *const *opts)
{
    if (vk->type < 0 || (vk->k->flags & SL_CK_BASE))
        return (char *)base + vk->k->off;
    return (char *)opts[vk->type] + vk->k->off;
}

/* A common key's default, or the type's override of it. */
static const char *view_default(const struct view *vw, const struct vkey *vk, int type)
{
    if (vk->type < 0 && type >= 0 && vw->types[type]->defaults)
        for (const struct sl_conf_default *d = vw->types[type]->defaults; d->key; d++)
            if (strcmp(d->key, vk->k->name) == 0)
                return d->value;
    return vk->k->def;
}

static void apply_table(struct sl_conf_load *ld, const struct sl__ctable *t, void *base,
                        yaml_node_t *node, yaml_node_t *at);

static void store_value(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                        yaml_node_t *node)
{
    size_t before = ld->d->n;
    int typeidx;
    char *s;

    switch (k->type) {
    case SL_CK_STRLIST:
    case SL_CK_PATHLIST:
        store_list(ld, k, field, node);
        break;
    case SL_CK_MAP:
        store_map(ld, field, node);
        break;
    case SL_CK_OBJECT:
        apply_table(ld, k->sub, field, node, node);
        return; /* the sub-table ran its own checks */
    case SL_CK_JSON:
        json_decref(*(json_t **)field);
        *(json_t **)field = to_json(ld, node, 0);
        break;
    default:
        s = scalar_text(ld, node);
        if (!s)
            return;
        /* `type` was resolved before the other keys: only check it here */
        store_scalar(ld, k, (k->flags & SL_CK_TYPE) ? (void *)&typeidx : field, s, node);
        free(s);
        break;
    }
    if (k->check && ld->d->n == before)
        k->check(ld, k, field, node);
}

static void apply_default(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                          const char *def)
{
    if (k->type == SL_CK_OBJECT) {
        apply_table(ld, k->sub, field, NULL, NULL);
        return;
    }
    if (def)
        store_scalar(ld, k, field, def, NULL);
}

/* Fill `base` (and the options struct opts[type]) from mapping `node`
 * (NULL: defaults only). `type` is the registry index of the source/sink
 * type, -1 when the table has no types, -2 when the type is unknown (then
 * opts[] holds a scratch struct per type so values are still checked).
 * Missing keys are reported at `at`. */
static void apply_view(struct sl_conf_load *ld, const struct view *vw, void *base,
                       void *const *opts, yaml_node_t *node, int type, yaml_node_t *at)
{
    char seen[CK_MAX_KEYS] = { 0 };
    yaml_node_t *outer = ld->cur_map;

    if (node && node->type != YAML_MAPPING_NODE && !is_null(node)) {
        sl_conf_error(ld, node, "expected a mapping, got %s", node_kind(node));
        node = NULL;
    }
    ld->cur_map = node;
    if (node && node->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = node_at(ld, p->key), *vn = node_at(ld, p->value);
            const struct vkey *vk = NULL;
            size_t mark, i, other = vw->n;

            if (kn->type != YAML_SCALAR_NODE) {
                sl_conf_error(ld, kn, "keys must be scalars");
                continue;
            }
            for (i = 0; i < vw->n; i++) {
                if (strcmp(vw->v[i].k->name, scalar(kn)) != 0)
                    continue;
                if (view_applies(vw, &vw->v[i], type)) {
                    vk = &vw->v[i];
                    break;
                }
                if (other == vw->n)
                    other = i;
            }
            mark = path_push(ld, scalar(kn));
            if (!vk && other < vw->n && seen[other]) {
                sl_conf_error(ld, kn, "duplicate key");
            } else if (!vk && other < vw->n) {
                const char *why = refusal(vw, type, scalar(kn));
                seen[other] = 1;
                sl_conf_error(ld, kn, "not a key of %s %s%s%s", vw->names[type], vw->kind,
                              why ? ": " : "", why ? why : "");
            } else if (!vk) {
                const char *best = NULL;
                size_t bestd = 3;
                for (size_t j = 0; j < vw->n; j++) {
                    size_t dd = distance(scalar(kn), vw->v[j].k->name);
                    if (dd < bestd) {
                        bestd = dd;
                        best = vw->v[j].k->name;
                    }
                }
                if (best)
                    sl_conf_error(ld, kn, "unknown key (did you mean '%s'?)", best);
                else
                    sl_conf_error(ld, kn, "unknown key");
            } else if (seen[i]) {
                sl_conf_error(ld, kn, "duplicate key");
            } else if (is_null(vn) && vk->k->type != SL_CK_JSON) {
                /* `key:` with no value: as if absent */
            } else {
                seen[i] = 1;
                store_value(ld, vk->k, view_field(vk, base, opts), vn);
            }
            path_pop(ld, mark);
        }
    }
    for (size_t i = 0; i < vw->n; i++) {
        const struct vkey *vk = &vw->v[i];

        if (seen[i] || !view_applies(vw, vk, type))
            continue;
        if (type == -2 && vk->type >= 0)
            continue; /* unknown type: its keys neither required nor defaulted */
        if (vk->k->flags & SL_CK_REQUIRED)
            sl_conf_error(ld, at, "missing required key '%s'", vk->k->name);
        else
            apply_default(ld, vk->k, view_field(vk, base, opts), view_default(vw, vk, type));
    }
    ld->cur_map = outer;
}

/* An untyped table (functions, async, server, log). */
static void apply_table(struct sl_conf_load *ld, const struct sl__ctable *t, void *base,
                        yaml_node_t *node, yaml_node_t *at)
{
    struct view vw;

    view_init(ld, &vw, t, NULL, t->path);
    apply_view(ld, &vw, base, NULL, node, -1, at);
}

/* ------------------------------------------------------------------ */
/* Sections                                                            */

enum section { SEC_FUNCTIONS, SEC_SOURCES, SEC_SINKS };

struct name_ref {
    const char *name;
    size_t      idx;
};

static int name_ref_cmp(const void *a, const void *b)
{
    const struct name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : (x->idx < y->idx ? -1 : 1);
}

/* One flag per pair of `map`: set when an earlier pair has the same scalar
 * key. Sorting keeps thousands of sources from costing n^2 compares. */
static char *find_duplicates(struct sl_conf_load *ld, yaml_node_t *map)
{
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start), m = 0;
    struct name_ref *refs = sl_calloc(n ? n : 1, sizeof(*refs));
    char *dup = sl_calloc(n ? n : 1, 1);

    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = node_at(ld, map->data.mapping.pairs.start[i].key);
        if (k->type == YAML_SCALAR_NODE)
            refs[m++] = (struct name_ref){ scalar(k), i };
    }
    qsort(refs, m, sizeof(*refs), name_ref_cmp);
    for (size_t i = 1; i < m; i++)
        if (strcmp(refs[i - 1].name, refs[i].name) == 0)
            dup[refs[i].idx] = 1;
    free(refs);
    return dup;
}

/* Free the keys of one table whose values live at `base` (and, for a
 * type's keys, in its options struct `opts`). */
static void free_keys(const struct sl_conf_key *keys, size_t n, void *base, void *opts);

static void free_opts(const struct sl_conf_type *t, void *base, void *opts)
{
    if (!t)
        return;
    free_keys(t->keys, t->nkeys, base, opts);
    free(opts);
}

/* Load `functions:`, `sources:` or `sinks:` (a mapping of name -> object)
 * into a freshly allocated array. */
static void load_named(struct sl_conf_load *ld, yaml_node_t *node, enum section sec)
{
    static const struct {
        const char *name;
        const struct sl__ctable *t;
        size_t size;
    } secs[] = {
        [SEC_FUNCTIONS] = { "functions", &sl__function_table, sizeof(struct sl_function_conf) },
        [SEC_SOURCES] = { "sources", &sl__source_table, sizeof(struct sl_source_conf) },
        [SEC_SINKS] = { "sinks", &sl__sink_table, sizeof(struct sl_sink_conf) },
    };
    const struct sl_conf_type *const *types = sec == SEC_SOURCES ? ld->reg->sources
                                            : sec == SEC_SINKS ? ld->reg->sinks : NULL;
    struct view vw;
    size_t npairs, n = 0, mark;
    char *arr, *dups;

    mark = path_push(ld, secs[sec].name);
    if (is_null(node)) {
        path_pop(ld, mark);
        return;
    }
    if (node->type != YAML_MAPPING_NODE) {
        sl_conf_error(ld, node, "expected a mapping of names, got %s", node_kind(node));
        path_pop(ld, mark);
        return;
    }
    view_init(ld, &vw, secs[sec].t, types, secs[sec].name);
    npairs = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    arr = sl_calloc(npairs ? npairs : 1, secs[sec].size);
    dups = find_duplicates(ld, node);
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = node_at(ld, p->key), *vn = node_at(ld, p->value);
        void *base = arr + n * secs[sec].size;
        void *opts[CK_MAX_TYPES] = { 0 };
        const struct sl_conf_type **typep = NULL;
        void **optsp = NULL;
        char **name = NULL;
        int *line = NULL, *col = NULL, type = -1;
        size_t m;

        if (kn->type != YAML_SCALAR_NODE) {
            sl_conf_error(ld, kn, "names must be scalars");
            continue;
        }
        m = path_push(ld, scalar(kn));
        if (dups[p - node->data.mapping.pairs.start]) {
            sl_conf_error(ld, kn, "duplicate name");
            path_pop(ld, m);
            continue;
        }
        if (!valid_name(scalar(kn)))
            sl_conf_error(ld, kn, "name must be 1 to 64 letters, digits, '-' or '_'");
        switch (sec) {
        case SEC_FUNCTIONS: {
            struct sl_function_conf *f = base;
            name = &f->name, line = &f->line, col = &f->col;
            break;
        }
        case SEC_SOURCES: {
            struct sl_source_conf *s = base;
            name = &s->name, line = &s->line, col = &s->col;
            typep = &s->type, optsp = &s->opts;
            break;
        }
        case SEC_SINKS: {
            struct sl_sink_conf *s = base;
            name = &s->name, line = &s->line, col = &s->col;
            typep = &s->type, optsp = &s->opts;
            break;
        }
        }
        *name = sl_strdup(scalar(kn));
        *line = (int)kn->start_mark.line + 1;
        *col = (int)kn->start_mark.column + 1;
        n++;
        if (!typep) {
            apply_table(ld, secs[sec].t, base, vn, kn);
            path_pop(ld, m);
            continue;
        }
        /* `type` first: it decides which other keys exist */
        if (vn->type != YAML_MAPPING_NODE) {
            sl_conf_error(ld, vn, "expected a mapping, got %s", node_kind(vn));
            path_pop(ld, m);
            continue;
        }
        {
            yaml_node_t *tn = map_get(ld, vn, "type");
            if (tn && tn->type == YAML_SCALAR_NODE)
                for (int i = 0; vw.names[i]; i++)
                    if (strcmp(scalar(tn), vw.names[i]) == 0)
                        type = i;
        }
        if (type >= 0) {
            *typep = types[type];
            if (types[type]->size)
                *optsp = opts[type] = sl_calloc(1, types[type]->size);
            apply_view(ld, &vw, base, opts, vn, type, kn);
        } else {
            /* unknown type: `type` itself reports it; the other keys are
             * still checked, each in a scratch struct of its type */
            for (int i = 0; vw.names[i]; i++)
                opts[i] = sl_calloc(1, types[i]->size ? types[i]->size : 1);
            apply_view(ld, &vw, base, opts, vn, -2, kn);
            for (int i = 0; vw.names[i]; i++)
                free_opts(types[i], base, opts[i]);
        }
        path_pop(ld, m);
    }
    free(dups);
    switch (sec) {
    case SEC_FUNCTIONS:
        ld->c->functions = (struct sl_function_conf *)arr, ld->c->nfunctions = n;
        break;
    case SEC_SOURCES:
        ld->c->sources = (struct sl_source_conf *)arr, ld->c->nsources = n;
        break;
    case SEC_SINKS:
        ld->c->sinks = (struct sl_sink_conf *)arr, ld->c->nsinks = n;
        break;
    }
    path_pop(ld, mark);
}

/* "kafka" or "kafka, x": the source types with every bit of `traits`. */
static void type_names_with(const struct sl_conf_type *const *types, unsigned traits,
                            char *buf, size_t n)
{
    buf[0] = '\0';
    for (size_t i = 0; types[i]; i++)
        if ((types[i]->traits & traits) == traits)
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     types[i]->name);
}

/* Rules that span several keys. */
static void check_cross(struct sl_conf_load *ld)
{
    struct sl_config *c = ld->c;
    char at_ts[256];

    for (size_t i = 0; i < c->nfunctions; i++) {
        struct sl_function_conf *f = &c->functions[i];
        if (f->runtime == SL_RUNTIME_PYTHON && !f->code)
            sl_diags_add(ld->d, f->line, f->col, "functions.%s: runtime python needs `code`, "
                         "the directory mounted at /var/task", f->name);
        if (f->reserved_concurrency >= 0 && f->provisioned_concurrency > f->reserved_concurrency)
            sl_diags_add(ld->d, f->line, f->col, "functions.%s: provisioned_concurrency (%lld) "
                         "is more than reserved_concurrency (%lld)", f->name,
                         (long long)f->provisioned_concurrency, (long long)f->reserved_concurrency);
    }
    type_names_with(ld->reg->sources, SL_CONF_AT_TIMESTAMP, at_ts, sizeof(at_ts));
    for (size_t i = 0; i < c->nsources; i++) {
        struct sl_source_conf *s = &c->sources[i];
        bool can = s->type && (s->type->traits & SL_CONF_AT_TIMESTAMP);

        if (!s->type || s->starting_position != SL_START_AT_TIMESTAMP)
            continue;
        if (can && !s->starting_position_timestamp)
            sl_diags_add(ld->d, s->line, s->col, "sources.%s: starting_position AT_TIMESTAMP "
                         "needs starting_position_timestamp", s->name);
        if (!can)
            sl_diags_add(ld->d, s->line, s->col, "sources.%s: starting_position AT_TIMESTAMP "
                         "is for %s sources only", s->name, at_ts);
    }
}

/* Point every function and source at the server section and name each
 * function's ARN once, for the layers above that print them. */
static void link_server(struct sl_config *c)
{
    const struct sl_server_conf *sv = &c->server;

    for (size_t i = 0; i < c->nfunctions; i++) {
        struct sl_function_conf *fn = &c->functions[i];
        fn->server = sv;
        if (fn->name && sv->region && sv->account_id)
            fn->arn = sl_asprintf("arn:aws:lambda:%s:%s:function:%s", sv->region,
                                  sv->account_id, fn->name);
    }
    for (size_t i = 0; i < c->nsources; i++)
        c->sources[i].server = sv;
}

static void load_root(struct sl_conf_load *ld, yaml_node_t *root)
{
    static const char *const top[] = { "functions", "sources", "sinks", "server", "log", NULL };

    if (!root || is_null(root)) {
        sl_diags_add(ld->d, 0, 0, "the configuration is empty");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        sl_conf_error(ld, root, "expected a mapping at the top, got %s", node_kind(root));
        return;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = node_at(ld, p->key);
        int known = 0, dup = 0;

        if (kn->type != YAML_SCALAR_NODE) {
            sl_conf_error(ld, kn, "keys must be scalars");
            continue;
        }
        for (int i = 0; top[i]; i++)
            known |= strcmp(top[i], scalar(kn)) == 0;
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qk = node_at(ld, q->key);
            dup |= qk->type == YAML_SCALAR_NODE && strcmp(scalar(qk), scalar(kn)) == 0;
        }
        if (!known)
            sl_diags_add(ld->d, (int)kn->start_mark.line + 1, (int)kn->start_mark.column + 1,
                         "%s: unknown key (expected functions, sources, sinks, server or log)",
                         scalar(kn));
        else if (dup)
            sl_diags_add(ld->d, (int)kn->start_mark.line + 1, (int)kn->start_mark.column + 1,
                         "%s: duplicate key", scalar(kn));
    }
    ld->functions = map_get(ld, root, "functions");
    ld->sinks = map_get(ld, root, "sinks");

    /* sinks first so their names exist for the references in the rest */
    if (ld->sinks)
        load_named(ld, ld->sinks, SEC_SINKS);
    if (ld->functions)
        load_named(ld, ld->functions, SEC_FUNCTIONS);
    if (map_get(ld, root, "sources"))
        load_named(ld, map_get(ld, root, "sources"), SEC_SOURCES);

    path_push(ld, "server");
    apply_table(ld, &sl__server_table, &ld->c->server, map_get(ld, root, "server"), root);
    path_pop(ld, 0);
    path_push(ld, "log");
    apply_table(ld, &sl__log_table, &ld->c->log, map_get(ld, root, "log"), root);
    path_pop(ld, 0);
    check_cross(ld);
    link_server(ld->c);
}

/* ------------------------------------------------------------------ */
/* Entry points                                                        */

static const struct sl_conf_type *const no_type[] = { NULL };
static const struct sl_conf_registry no_types = { no_type, no_type };

int sl_config_load_buffer(const char *name, const char *dir, const char *buf, size_t len,
                          const struct sl_conf_registry *reg, struct sl_config **out,
                          struct sl_diags *d)
{
    struct sl_conf_load ld;
    yaml_parser_t parser;
    yaml_document_t extra;
    int rc = SL_ECONFIG;

    (void)name;
    memset(&ld, 0, sizeof(ld));
    ld.d = d;
    ld.reg = reg ? reg : &no_types;
    ld.c = sl_calloc(1, sizeof(*ld.c));
    ld.c->path = sl_strdup(name);
    ld.c->dir = sl_strdup(dir);

    if (!yaml_parser_initialize(&parser)) {
        sl_diags_add(d, 0, 0, "cannot initialise the YAML parser");
        sl_config_free(ld.c);
        return SL_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &ld.doc)) {
        sl_diags_add(d, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1,
                     "yaml: %s%s%s", parser.problem ? parser.problem : "syntax error",
                     parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        sl_config_free(ld.c);
        return SL_ECONFIG;
    }
    load_root(&ld, yaml_document_get_root_node(&ld.doc));
    /* a second document would be silently ignored: refuse it */
    if (yaml_document_get_root_node(&ld.doc)) {
        if (!yaml_parser_load(&parser, &extra)) {
            sl_diags_add(d, (int)parser.problem_mark.line + 1,
                         (int)parser.problem_mark.column + 1, "yaml: %s%s%s",
                         parser.problem ? parser.problem : "syntax error",
                         parser.context ? " " : "", parser.context ? parser.context : "");
        } else {
            if (yaml_document_get_root_node(&extra))
                sl_diags_add(d, (int)extra.start_mark.line + 1, (int)extra.start_mark.column + 1,
                             "only one YAML document is allowed");
            yaml_document_delete(&extra);
        }
    }
    yaml_document_delete(&ld.doc);
    yaml_parser_delete(&parser);

    if (d->n == 0) {
        *out = ld.c;
        rc = 0;
    } else {
        sl_config_free(ld.c);
    }
    return rc;
}

int sl_config_load(const char *path, const struct sl_conf_registry *reg,
                   struct sl_config **out, struct sl_diags *d)
{
    char *buf = NULL, *copy, real[PATH_MAX], *dir;
    size_t len = 0, cap = 0;
    FILE *f;
    int rc;

    f = fopen(path, "rb");
    if (!f) {
        sl_diags_add(d, 0, 0, "cannot open: %s", strerror(errno));
        return SL_EIO;
    }
    for (;;) {
        size_t r;
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = sl_realloc(buf, cap);
        }
        r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (len > CONFIG_MAX_BYTES) {
            fclose(f);
            free(buf);
            sl_diags_add(d, 0, 0, "larger than %d MB", CONFIG_MAX_BYTES / (1024 * 1024));
            return SL_ECONFIG;
        }
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        free(buf);
        sl_diags_add(d, 0, 0, "cannot read: %s", strerror(e));
        return SL_EIO;
    }
    fclose(f);
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        sl_diags_add(d, 0, 0, "not a text file (contains NUL bytes)");
        return SL_ECONFIG;
    }

    if (!realpath(path, real))
        snprintf(real, sizeof(real), "%s", path);
    copy = sl_strdup(real);
    dir = dirname(copy);
    rc = sl_config_load_buffer(path, dir, buf, len, reg, out, d);
    free(copy);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Freeing follows the same tables                                     */

static void free_key(const struct sl_conf_key *k, void *field)
{
    switch (k->type) {
    case SL_CK_STRING:
    case SL_CK_PATH:
        free(*(char **)field);
        break;
    case SL_CK_STRLIST:
    case SL_CK_PATHLIST:
        strlist_free(field);
        break;
    case SL_CK_MAP:
        kvlist_free(field);
        break;
    case SL_CK_OBJECT:
        free_keys(k->sub->keys, k->sub->nkeys, field, NULL);
        break;
    case SL_CK_JSON:
        json_decref(*(json_t **)field);
        break;
    default:
        break;
    }
}

static void free_keys(const struct sl_conf_key *keys, size_t n, void *base, void *opts)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i].flags & SL_CK_TYPE)
            continue;
        if (opts && !(keys[i].flags & SL_CK_BASE))
            free_key(&keys[i], (char *)opts + keys[i].off);
        else if (!opts && base)
            free_key(&keys[i], (char *)base + keys[i].off);
    }
}

static void free_table(const struct sl__ctable *t, void *base)
{
    free_keys(t->keys, t->nkeys, base, NULL);
}

void sl_config_free(struct sl_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nfunctions; i++) {
        free_table(&sl__function_table, &c->functions[i]);
        free(c->functions[i].name);
        free(c->functions[i].arn);
    }
    for (size_t i = 0; i < c->nsources; i++) {
        free_table(&sl__source_table, &c->sources[i]);
        free_opts(c->sources[i].type, NULL, c->sources[i].opts);
        free(c->sources[i].name);
    }
    for (size_t i = 0; i < c->nsinks; i++) {
        free_table(&sl__sink_table, &c->sinks[i]);
        free_opts(c->sinks[i].type, NULL, c->sinks[i].opts);
        free(c->sinks[i].name);
    }
    free(c->functions);
    free(c->sources);
    free(c->sinks);
    free_table(&sl__server_table, &c->server);
    free_table(&sl__log_table, &c->log);
    free(c->path);
    free(c->dir);
    free(c);
}

const struct sl_function_conf *sl_config_function(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nfunctions; i++)
        if (strcmp(c->functions[i].name, name) == 0)
            return &c->functions[i];
    return NULL;
}

const struct sl_sink_conf *sl_config_sink(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsinks; i++)
        if (strcmp(c->sinks[i].name, name) == 0)
            return &c->sinks[i];
    return NULL;
}
