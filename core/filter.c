/* Event filtering: Lambda's filter-criteria patterns (the EventBridge
 * content-filter syntax) compiled once into a small tree that lives in one
 * arena, then matched against jansson documents without allocating.
 *
 * Semantics, as EventBridge defines them:
 * - all keys of an object pattern must match (AND); "$or" adds a list of
 *   alternative object patterns for the same object;
 * - a leaf is a list of rules, any of which may match (OR);
 * - a document array stands for each of its elements: a leaf rule matches
 *   when any element matches; a nested pattern matches when one element
 *   (an object) matches all of it;
 * - rules look at leaf values only (strings, numbers, booleans, null):
 *   {"exists": true} is false for a field that holds an object. */
#include <math.h>
#include <stdarg.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/filter.h"
#include "sluice/mem.h"

/* Lambda allows 5 filters per source by default and 10 after a quota
 * increase; we accept the larger figure since there is nothing to meter. */
#define MAX_PATTERNS      10
/* Lambda's limit on one pattern, counted here on its compact JSON form. */
#define MAX_PATTERN_CHARS 4096
/* Object nesting inside a pattern; keeps compile and match recursion small. */
#define MAX_DEPTH         32

enum rule_kind {
    R_STRING,       /* exact string */
    R_NUMBER,       /* exact number, compared numerically */
    R_TRUE,
    R_FALSE,
    R_NULL,
    R_PREFIX,
    R_PREFIX_CI,    /* operand lowercased */
    R_SUFFIX,
    R_SUFFIX_CI,
    R_EQ_CI,
    R_WILDCARD,
    R_NUMERIC,      /* range lo..hi */
    R_EXISTS,
    R_NOT_EXISTS,
    R_ANYTHING_BUT, /* none of `sub` matches */
};

struct seg {
    const char *s;
    size_t      len;
};

struct rule {
    int kind;                        /* enum rule_kind */
    union {
        struct {                     /* strings, prefix, suffix, equals-ignore-case */
            const char *s;
            size_t      len;
        } str;
        struct {                     /* R_NUMBER */
            double  d;
            int64_t i;
            bool    is_int;          /* compare as integers against integers */
        } num;
        struct {                     /* R_NUMERIC; infinite when unbounded */
            double lo, hi;
            bool   lo_incl, hi_incl;
        } range;
        struct {                     /* R_WILDCARD: literal pieces between '*' */
            struct seg *segs;
            size_t      nsegs;
            bool        star_start, star_end;
        } wc;
        struct {                     /* R_ANYTHING_BUT */
            struct rule *v;
            size_t       n;
        } sub;
    } u;
};

struct node;

struct field {
    const char  *key;
    size_t       klen;
    struct node *child;              /* nested object pattern, or NULL for a leaf */
    struct rule *rules;              /* leaf: OR'ed */
    size_t       nrules;
};

struct node {
    struct field *fields;            /* AND'ed */
    size_t        nfields;
    struct node  *ors;               /* "$or": one of these must match too */
    size_t        nors;
};

struct block {
    struct block *next;
    size_t        used, cap;
    alignas(max_align_t) unsigned char data[];
};

struct sl_filter {
    struct block *blocks;            /* everything below lives here */
    struct node  *patterns;          /* OR'ed */
    size_t        npatterns;
};

/* ------------------------------------------------------------------ */
/* Arena                                                               */

static void *arena_alloc(struct sl_filter *f, size_t n)
{
    const size_t align = alignof(max_align_t);
    struct block *b = f->blocks;

    n = (n + align - 1) / align * align;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;

        b = sl_malloc(sizeof(*b) + cap);
        b->next = f->blocks;
        b->used = 0;
        b->cap = cap;
        f->blocks = b;
    }
    b->used += n;
    return memset(b->data + b->used - n, 0, n);
}

static const char *arena_strndup(struct sl_filter *f, const char *s, size_t n)
{
    char *d = arena_alloc(f, n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ------------------------------------------------------------------ */
/* Compilation                                                         */

struct cc {
    struct sl_filter *f;
    char             *msg;
    size_t            msglen;
    char              path[512];     /* "filter_criteria[1].value.amount" */
    int               depth;
};

static int fail(struct cc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct cc *c, const char *fmt, ...)
{
    char why[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (c->msglen)
        snprintf(c->msg, c->msglen, "%s: %s", c->path, why);
    return SL_EINVAL;
}

/* Append ".key" or "[i]" to the path; returns the length to restore. */
static size_t path_push(struct cc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(struct cc *c, const char *fmt, ...)
{
    size_t len = strlen(c->path);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->path + len, sizeof(c->path) - len, fmt, ap);
    va_end(ap);
    return len;
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:  return "an object";
    case JSON_ARRAY:   return "a list";
    case JSON_STRING:  return "a string";
    case JSON_INTEGER:
    case JSON_REAL:    return "a number";
    case JSON_TRUE:
    case JSON_FALSE:   return "a boolean";
    default:           return "null";
    }
}

static const char *lowered(struct sl_filter *f, const char *s, size_t n)
{
    char *d = (char *)arena_strndup(f, s, n);

    for (size_t i = 0; i < n; i++)
        if (d[i] >= 'A' && d[i] <= 'Z')
            d[i] = (char)(d[i] - 'A' + 'a');
    return d;
}

static void set_string(struct cc *c, struct rule *r, int kind, const json_t *v)
{
    size_t n = json_string_length(v);

    r->kind = kind;
    r->u.str.len = n;
    if (kind == R_PREFIX_CI || kind == R_SUFFIX_CI || kind == R_EQ_CI)
        r->u.str.s = lowered(c->f, json_string_value(v), n);
    else
        r->u.str.s = arena_strndup(c->f, json_string_value(v), n);
}

static int compile_exact(struct cc *c, const json_t *v, struct rule *r)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        set_string(c, r, R_STRING, v);
        return 0;
    case JSON_INTEGER:
        r->kind = R_NUMBER;
        r->u.num.i = json_integer_value(v);
        r->u.num.d = (double)r->u.num.i;
        r->u.num.is_int = true;
        return 0;
    case JSON_REAL:
        r->kind = R_NUMBER;
        r->u.num.d = json_real_value(v);
        return 0;
    case JSON_TRUE:  r->kind = R_TRUE; return 0;
    case JSON_FALSE: r->kind = R_FALSE; return 0;
    case JSON_NULL:  r->kind = R_NULL; return 0;
    default:
        return fail(c, "a list of rules cannot hold a list");
    }
}

/* "a*b\*c": literal pieces between unescaped stars; "\*" is a star and
 * "\\" a backslash; "**" is refused, as EventBridge does. */
static int compile_wildcard(struct cc *c, const json_t *v, struct rule *r)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), nsegs = 0, len = 0;
    char *buf = arena_alloc(c->f, n + 1), *piece = buf;
    struct seg *segs = arena_alloc(c->f, (n / 2 + 2) * sizeof(*segs));

    r->kind = R_WILDCARD;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') {
            if (i + 1 == n || (s[i + 1] != '*' && s[i + 1] != '\\'))
                return fail(c, "wildcard: '\\' must be followed by '*' or '\\'");
            piece[len++] = s[++i];
        } else if (s[i] == '*') {
            if (i + 1 < n && s[i + 1] == '*')
                return fail(c, "wildcard: consecutive '*' are not allowed");
            if (i == 0)
                r->u.wc.star_start = true;
            if (len) {
                segs[nsegs++] = (struct seg){ piece, len };
                piece += len;
                len = 0;
            }
            if (i + 1 == n)
                r->u.wc.star_end = true;
        } else {
            piece[len++] = s[i];
        }
    }
    if (len)
        segs[nsegs++] = (struct seg){ piece, len };
    r->u.wc.segs = segs;
    r->u.wc.nsegs = nsegs;
    return 0;
}

static int compile_numeric(struct cc *c, const json_t *v, struct rule *r)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    bool has_lo = false, has_hi = false;

    if (n > 4)
        return fail(c, "numeric takes at most two operators (a lower and an upper bound)");
    if (n == 0 || n % 2)
        return fail(c, "numeric needs an operator and a number");
    r->kind = R_NUMERIC;
    r->u.range.lo = -INFINITY;
    r->u.range.hi = INFINITY;
    for (size_t i = 0; i < n; i += 2) {
        const json_t *op = json_array_get(v, i), *num = json_array_get(v, i + 1);
        const char *o = json_string_value(op);
        double d;

        if (!o || !json_is_number(num))
            return fail(c, "numeric needs an operator and a number");
        d = json_number_value(num);
        if (strcmp(o, "=") == 0) {
            if (n != 2)
                return fail(c, "numeric: '=' cannot be combined with another operator");
            r->u.range.lo = r->u.range.hi = d;
            r->u.range.lo_incl = r->u.range.hi_incl = true;
        } else if (strcmp(o, ">") == 0 || strcmp(o, ">=") == 0) {
            if (has_lo)
                return fail(c, "numeric: two lower bounds");
            has_lo = true;
            r->u.range.lo = d;
            r->u.range.lo_incl = o[1] == '=';
        } else if (strcmp(o, "<") == 0 || strcmp(o, "<=") == 0) {
            if (has_hi)
                return fail(c, "numeric: two upper bounds");
            has_hi = true;
            r->u.range.hi = d;
            r->u.range.hi_incl = o[1] == '=';
        } else {
            return fail(c, "numeric: unknown operator '%s' (expected =, <, <=, > or >=)", o);
        }
    }
    if (r->u.range.lo > r->u.range.hi ||
        (r->u.range.lo == r->u.range.hi && !(r->u.range.lo_incl && r->u.range.hi_incl)))
        return fail(c, "numeric range is empty (%s %g and %s %g)", r->u.range.lo_incl ? ">=" : ">",
                    r->u.range.lo, r->u.range.hi_incl ? "<=" : "<", r->u.range.hi);
    return 0;
}

/* The operand of prefix/suffix: a string, or {"equals-ignore-case": string}. */
static int compile_affix(struct cc *c, const char *op, const json_t *v, struct rule *r,
                         int kind, int kind_ci)
{
    const json_t *ci;

    if (json_is_string(v)) {
        set_string(c, r, kind, v);
        return 0;
    }
    if (json_is_object(v) && json_object_size(v) == 1 &&
        json_is_string(ci = json_object_get(v, "equals-ignore-case"))) {
        set_string(c, r, kind_ci, ci);
        return 0;
    }
    return fail(c, "%s needs a string or {\"equals-ignore-case\": string}, got %s", op,
                kind_of(v));
}

/* A string or a non-empty list of strings: one rule of `kind` each. */
static int compile_strings(struct cc *c, const char *op, const json_t *v, int kind,
                           struct rule **out, size_t *n)
{
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    struct rule *rs;

    if (json_is_array(v) && cnt == 0)
        return fail(c, "%s: an empty list matches nothing", op);
    rs = arena_alloc(c->f, cnt * sizeof(*rs));
    for (size_t i = 0; i < cnt; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;

        if (!json_is_string(s))
            return fail(c, "%s needs a string or a list of strings, got %s", op, kind_of(s));
        if (kind == R_WILDCARD) {
            int rc = compile_wildcard(c, s, &rs[i]);
            if (rc)
                return rc;
        } else {
            set_string(c, &rs[i], kind, s);
        }
    }
    *out = rs;
    *n = cnt;
    return 0;
}

static int compile_anything_but(struct cc *c, const json_t *v, struct rule *r)
{
    const char *op;
    const json_t *arg;

    r->kind = R_ANYTHING_BUT;
    if (json_is_string(v) || json_is_number(v)) {
        r->u.sub.v = arena_alloc(c->f, sizeof(struct rule));
        r->u.sub.n = 1;
        return compile_exact(c, v, r->u.sub.v);
    }
    if (json_is_array(v)) {
        size_t n = json_array_size(v);

        if (n == 0)
            return fail(c, "anything-but: an empty list matches nothing");
        r->u.sub.v = arena_alloc(c->f, n * sizeof(struct rule));
        r->u.sub.n = n;
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(v, i);

            if (!json_is_string(e) && !json_is_number(e))
                return fail(c, "anything-but: a list holds strings or numbers, got %s",
                            kind_of(e));
            compile_exact(c, e, &r->u.sub.v[i]);
        }
        return 0;
    }
    if (!json_is_object(v) || json_object_size(v) != 1)
        return fail(c, "anything-but needs a string, a number, a list of them, or one of "
                       "prefix, suffix, equals-ignore-case, wildcard");
    op = json_object_iter_key(json_object_iter((json_t *)v));
    arg = json_object_get(v, op);
    if (strcmp(op, "prefix") == 0 || strcmp(op, "suffix") == 0) {
        r->u.sub.v = arena_alloc(c->f, sizeof(struct rule));
        r->u.sub.n = 1;
        if (op[0] == 'p')
            return compile_affix(c, "anything-but prefix", arg, r->u.sub.v, R_PREFIX, R_PREFIX_CI);
        return compile_affix(c, "anything-but suffix", arg, r->u.sub.v, R_SUFFIX, R_SUFFIX_CI);
    }
    if (strcmp(op, "equals-ignore-case") == 0)
        return compile_strings(c, "anything-but equals-ignore-case", arg, R_EQ_CI, &r->u.sub.v,
                               &r->u.sub.n);
    if (strcmp(op, "wildcard") == 0)
        return compile_strings(c, "anything-but wildcard", arg, R_WILDCARD, &r->u.sub.v,
                               &r->u.sub.n);
    return fail(c, "anything-but: unknown operator '%s' (expected prefix, suffix, "
                   "equals-ignore-case or wildcard)", op);
}

static int compile_operator(struct cc *c, const json_t *obj, struct rule *r)
{
    const char *op;
    const json_t *v;

    if (json_object_size(obj) != 1)
        return fail(c, "a rule object holds exactly one operator, got %zu",
                    json_object_size(obj));
    op = json_object_iter_key(json_object_iter((json_t *)obj));
    v = json_object_get(obj, op);
    if (strcmp(op, "prefix") == 0)
        return compile_affix(c, op, v, r, R_PREFIX, R_PREFIX_CI);
    if (strcmp(op, "suffix") == 0)
        return compile_affix(c, op, v, r, R_SUFFIX, R_SUFFIX_CI);
    if (strcmp(op, "equals-ignore-case") == 0) {
        if (!json_is_string(v))
            return fail(c, "equals-ignore-case needs a string, got %s", kind_of(v));
        set_string(c, r, R_EQ_CI, v);
        return 0;
    }
    if (strcmp(op, "wildcard") == 0) {
        if (!json_is_string(v))
            return fail(c, "wildcard needs a string, got %s", kind_of(v));
        return compile_wildcard(c, v, r);
    }
    if (strcmp(op, "numeric") == 0)
        return compile_numeric(c, v, r);
    if (strcmp(op, "exists") == 0) {
        if (!json_is_boolean(v))
            return fail(c, "exists needs true or false, got %s", kind_of(v));
        r->kind = json_is_true(v) ? R_EXISTS : R_NOT_EXISTS;
        return 0;
    }
    if (strcmp(op, "anything-but") == 0)
        return compile_anything_but(c, v, r);
    if (strcmp(op, "cidr") == 0)
        return fail(c, "cidr is not supported");
    return fail(c, "unknown operator '%s' (expected prefix, suffix, anything-but, numeric, "
                   "exists, equals-ignore-case or wildcard)", op);
}

static int compile_leaf(struct cc *c, const json_t *arr, struct field *fd)
{
    size_t n = json_array_size(arr);

    if (n == 0)
        return fail(c, "an empty list matches nothing");
    fd->rules = arena_alloc(c->f, n * sizeof(*fd->rules));
    fd->nrules = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        int rc = json_is_object(v) ? compile_operator(c, v, &fd->rules[i])
                                   : compile_exact(c, v, &fd->rules[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int compile_node(struct cc *c, const json_t *obj, struct node *nd);

static int compile_or(struct cc *c, const json_t *arr, struct node *nd)
{
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;

    if (!json_is_array(arr))
        return fail(c, "$or needs a list of patterns, got %s", kind_of(arr));
    if (n == 0)
        return fail(c, "$or: an empty list matches nothing");
    nd->ors = arena_alloc(c->f, n * sizeof(*nd->ors));
    nd->nors = n;
    for (size_t i = 0; i < n; i++) {
        size_t len = path_push(c, "[%zu]", i);
        int rc = compile_node(c, json_array_get(arr, i), &nd->ors[i]);

        if (rc)
            return rc;
        c->path[len] = '\0';
    }
    return 0;
}

static int compile_node(struct cc *c, const json_t *obj, struct node *nd)
{
    const char *key;
    const json_t *v;
    size_t i = 0;
    int rc = 0;

    if (!json_is_object(obj))
        return fail(c, "a pattern must be an object, got %s", kind_of(obj));
    if (json_object_size(obj) == 0)
        return fail(c, "an empty pattern matches nothing");
    if (++c->depth > MAX_DEPTH)
        return fail(c, "pattern is nested deeper than %d levels", MAX_DEPTH);
    nd->fields = arena_alloc(c->f, json_object_size(obj) * sizeof(*nd->fields));
    json_object_foreach ((json_t *)obj, key, v) {
        size_t klen = strlen(key), len = path_push(c, ".%s", key);

        if (strcmp(key, "$or") == 0) {
            rc = compile_or(c, v, nd);
        } else {
            struct field *fd = &nd->fields[i++];

            fd->key = arena_strndup(c->f, key, klen);
            fd->klen = klen;
            if (json_is_object(v)) {
                fd->child = arena_alloc(c->f, sizeof(*fd->child));
                rc = compile_node(c, v, fd->child);
            } else if (json_is_array(v)) {
                rc = compile_leaf(c, v, fd);
            } else if (json_is_string(v)) {
                rc = fail(c, "expected a list of rules or an object, got a string "
                             "(write [\"%s\"] to match it)", json_string_value(v));
            } else {
                rc = fail(c, "expected a list of rules or an object, got %s", kind_of(v));
            }
        }
        if (rc)
            return rc;
        c->path[len] = '\0';
    }
    nd->nfields = i;
    c->depth--;
    return 0;
}

/* One entry of the list: an object, or a string holding one as JSON
 * (Lambda's Filters[].Pattern). */
static int compile_pattern(struct cc *c, const json_t *p, struct node *nd)
{
    json_error_t jerr;
    json_t *parsed;
    size_t size;
    int rc;

    if (json_is_string(p)) {
        size = json_string_length(p);
        if (size > MAX_PATTERN_CHARS)
            return fail(c, "pattern has %zu characters, more than %d", size, MAX_PATTERN_CHARS);
        parsed = json_loadb(json_string_value(p), size, JSON_DECODE_ANY, &jerr);
        if (!parsed)
            return fail(c, "pattern is not valid JSON: %s (at character %d)", jerr.text,
                        jerr.position);
        rc = compile_node(c, parsed, nd);
        json_decref(parsed);
        return rc;
    }
    if (!json_is_object(p))
        return fail(c, "a pattern must be an object, got %s", kind_of(p));
    size = json_dumpb(p, NULL, 0, JSON_COMPACT);
    if (size > MAX_PATTERN_CHARS)
        return fail(c, "pattern has %zu characters as JSON, more than %d", size,
                    MAX_PATTERN_CHARS);
    return compile_node(c, p, nd);
}

int sl_filter_compile(const json_t *criteria, struct sl_filter **out, char *msg, size_t msglen)
{
    struct cc c = { .msg = msg, .msglen = msglen };
    const json_t *list = criteria;
    size_t n;
    int rc;

    *out = NULL;
    if (msglen)
        msg[0] = '\0';
    strcpy(c.path, "filter_criteria");
    /* Lambda's own shape, {"Filters": [{"Pattern": "..."}]}, is taken too */
    if (json_is_object(list) && json_object_size(list) == 1 && json_object_get(list, "Filters"))
        list = json_object_get(list, "Filters");
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        return fail(&c, "expected a list of patterns, got %s", kind_of(list));
    n = json_array_size(list);
    if (n == 0)
        return 0;
    if (n > MAX_PATTERNS)
        return fail(&c, "%zu patterns, at most %d are allowed", n, MAX_PATTERNS);

    c.f = sl_calloc(1, sizeof(*c.f));
    c.f->patterns = arena_alloc(c.f, n * sizeof(*c.f->patterns));
    c.f->npatterns = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_array_get(list, i);

        c.path[strlen("filter_criteria")] = '\0';
        path_push(&c, "[%zu]", i);
        if (criteria != list) {
            p = json_is_object(p) ? json_object_get(p, "Pattern") : NULL;
            if (!json_is_string(p)) {
                rc = fail(&c, "expected {\"Pattern\": string}");
                goto fail;
            }
        }
        c.depth = 0;
        if ((rc = compile_pattern(&c, p, &c.f->patterns[i])) != 0)
            goto fail;
    }
    *out = c.f;
    return 0;

fail:
    sl_filter_free(c.f);
    return rc;
}

void sl_filter_free(struct sl_filter *f)
{
    if (!f)
        return;
    for (struct block *b = f->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(f);
}

size_t sl_filter_count(const struct sl_filter *f)
{
    return f ? f->npatterns : 0;
}

/* ------------------------------------------------------------------ */
/* Matching                                                            */

static bool has_prefix_ci(const char *s, size_t n, const char *lower, size_t len)
{
    if (n < len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];

        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != lower[i])
            return false;
    }
    return true;
}

static bool wildcard_match(const struct rule *r, const char *s, size_t n)
{
    const struct seg *sg = r->u.wc.segs;
    const char *p = s, *e = s + n;
    size_t lo = 0, hi = r->u.wc.nsegs;

    if (!r->u.wc.star_start) {
        if (hi == 0)
            return n == 0;
        if (n < sg[0].len || memcmp(s, sg[0].s, sg[0].len) != 0)
            return false;
        p += sg[0].len;
        lo = 1;
    }
    if (!r->u.wc.star_end) {
        if (hi == lo)
            return p == e;
        if ((size_t)(e - p) < sg[hi - 1].len || memcmp(e - sg[hi - 1].len, sg[hi - 1].s,
                                                        sg[hi - 1].len) != 0)
            return false;
        e -= sg[hi - 1].len;
        hi--;
    }
    /* pieces between stars: leftmost placement is always the best one */
    for (size_t i = lo; i < hi; i++) {
        const char *at = memmem(p, (size_t)(e - p), sg[i].s, sg[i].len);

        if (!at)
            return false;
        p = at + sg[i].len;
    }
    return true;
}

/* One rule against one leaf value (not an array, not an object). */
static bool rule_match(const struct rule *r, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;

    switch (r->kind) {
    case R_STRING:
        return s && n == r->u.str.len && memcmp(s, r->u.str.s, n) == 0;
    case R_NUMBER:
        if (r->u.num.is_int && json_is_integer(v))
            return json_integer_value(v) == r->u.num.i;
        return json_is_number(v) && json_number_value(v) == r->u.num.d;
    case R_TRUE:
        return json_is_true(v);
    case R_FALSE:
        return json_is_false(v);
    case R_NULL:
        return json_is_null(v);
    case R_PREFIX:
        return s && n >= r->u.str.len && memcmp(s, r->u.str.s, r->u.str.len) == 0;
    case R_PREFIX_CI:
        return s && has_prefix_ci(s, n, r->u.str.s, r->u.str.len);
    case R_SUFFIX:
        return s && n >= r->u.str.len &&
               memcmp(s + n - r->u.str.len, r->u.str.s, r->u.str.len) == 0;
    case R_SUFFIX_CI:
        return s && n >= r->u.str.len &&
               has_prefix_ci(s + n - r->u.str.len, r->u.str.len, r->u.str.s, r->u.str.len);
    case R_EQ_CI:
        return s && n == r->u.str.len && has_prefix_ci(s, n, r->u.str.s, n);
    case R_WILDCARD:
        return s && wildcard_match(r, s, n);
    case R_NUMERIC: {
        double d;

        if (!json_is_number(v))
            return false;
        d = json_number_value(v);
        return (d > r->u.range.lo || (r->u.range.lo_incl && d == r->u.range.lo)) &&
               (d < r->u.range.hi || (r->u.range.hi_incl && d == r->u.range.hi));
    }
    case R_ANYTHING_BUT:
        for (size_t i = 0; i < r->u.sub.n; i++)
            if (rule_match(&r->u.sub.v[i], v))
                return false;
        return true;
    default:
        return false;
    }
}

/* Does some leaf value in `v` (arrays stand for their elements) match? */
static bool any_leaf(const struct rule *r, const json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (any_leaf(r, json_array_get(v, i)))
                return true;
        return false;
    }
    return v && !json_is_object(v) && rule_match(r, v);
}

static bool has_leaf(const json_t *v)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (has_leaf(json_array_get(v, i)))
                return true;
        return false;
    }
    return v && !json_is_object(v);
}

static bool leaf_match(const struct field *fd, const json_t *v)
{
    for (size_t i = 0; i < fd->nrules; i++) {
        const struct rule *r = &fd->rules[i];

        if (r->kind == R_EXISTS || r->kind == R_NOT_EXISTS) {
            if (has_leaf(v) == (r->kind == R_EXISTS))
                return true;
        } else if (any_leaf(r, v)) {
            return true;
        }
    }
    return false;
}

static bool node_match(const struct node *nd, const json_t *obj);

/* A nested pattern against a value: an object is matched directly, an
 * array through its object elements, anything else (or nothing) as an
 * absent object, where only {"exists": false} can hold. */
static bool nested_match(const struct node *nd, const json_t *v, bool *saw_object)
{
    if (json_is_object(v)) {
        *saw_object = true;
        return node_match(nd, v);
    }
    if (json_is_array(v))
        for (size_t i = 0; i < json_array_size(v); i++)
            if (nested_match(nd, json_array_get(v, i), saw_object))
                return true;
    return false;
}

static bool node_match(const struct node *nd, const json_t *obj)
{
    for (size_t i = 0; i < nd->nfields; i++) {
        const struct field *fd = &nd->fields[i];
        const json_t *v = obj ? json_object_getn(obj, fd->key, fd->klen) : NULL;

        if (fd->child) {
            bool saw_object = false;

            if (!nested_match(fd->child, v, &saw_object) &&
                (saw_object || !node_match(fd->child, NULL)))
                return false;
        } else if (!leaf_match(fd, v)) {
            return false;
        }
    }
    if (nd->nors == 0)
        return true;
    for (size_t i = 0; i < nd->nors; i++)
        if (node_match(&nd->ors[i], obj))
            return true;
    return false;
}

bool sl_filter_match(const struct sl_filter *f, const json_t *doc)
{
    if (!f || f->npatterns == 0)
        return true;
    if (!json_is_object(doc))
        doc = NULL;
    for (size_t i = 0; i < f->npatterns; i++)
        if (node_match(&f->patterns[i], doc))
            return true;
    return false;
}

static bool node_targets(const struct node *nd, const char *key)
{
    for (size_t i = 0; i < nd->nfields; i++)
        if (strcmp(nd->fields[i].key, key) == 0)
            return true;
    for (size_t i = 0; i < nd->nors; i++)
        if (node_targets(&nd->ors[i], key))
            return true;
    return false;
}

bool sl_filter_targets(const struct sl_filter *f, const char *key)
{
    for (size_t i = 0; f && i < f->npatterns; i++)
        if (node_targets(&f->patterns[i], key))
            return true;
    return false;
}
