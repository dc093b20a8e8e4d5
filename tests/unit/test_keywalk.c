/* No key may be accepted and silently ignored: walk every configuration
 * key table the loader uses (the common function, async, source, sink,
 * server and log tables in config/schema.c, each source type's table in
 * pollers/<type>/conf.c, each sink type's at the end of sinks/<type>.c)
 * and, for every key and every source or sink type it applies to, look in
 * the code outside config/ for a read of the struct field the key fills.
 *
 * The tables hold offsets, not field names: the field comes from the
 * table's source text (`.off = F(field)` under `#define F(field)
 * offsetof(struct X, field)`), and the parsed rows must be exactly the
 * live table's keys, in order, or the test fails (so it cannot drift from
 * the tables). A read is `->field` or `.field` in code (not in a comment or
 * a string) that is not the left side of a plain `=`. Where a read counts:
 *
 *   function, async, server, log keys   anywhere outside config/
 *   a common source key, or a type's    pollers/<type>/ (but its conf.c) or
 *     key stored in sl_source_conf        the engine: dispatcher/, core/,
 *     (SL_CK_BASE), for type <type>       api/, sandbox/, sinks/, cli/,
 *                                         pollers/ *.c
 *   a source type's own key             pollers/<type>/ (but its conf.c)
 *   a sink type's own key               sinks/<type>.c, sinks/ *.h, cli/
 *
 * A field the loader turns into another one (its check hook fills a field
 * of its own) is read through that one: `derived` below names them.
 * Matching is by field name, so a read of a same-named field of another
 * struct in the same place counts too: the test can miss an unread key
 * whose field name is common, never flag a read one.
 *
 * Keys accepted and read by no code are failures, except those listed in
 * `known_unread` below, each with its reason; an entry whose key is read
 * (or no longer accepted for that type) fails the test too. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "schema.h"
#include "sluice/config.h"
#include "sluice/pollers.h"
#include "sluice/sink.h"

/* Accepted today and read by no code: the test lists them on every run
 * and fails when one is read or refused (delete the entry then). */
static const struct known {
    const char *section;   /* "sources", "sinks", "functions", "server", "log" */
    const char *type;      /* source or sink type, or "" */
    const char *key;
    const char *why;
} known_unread[] = {
    { NULL, NULL, NULL, NULL }, /* none today; entries go above this end mark */
};
#define NKNOWN (sizeof(known_unread) / sizeof(known_unread[0]) - 1)

/* Fields the loader fills from a key's field: reading them reads the key. */
static const struct derived {
    const char *strct, *field, *via, *why;
} derived[] = {
    { "sl_log_conf", "debug_names", "debug", "check_debug turns the names into a bit mask" },
};

/* ------------------------------------------------------------------ */
/* source files, comments and strings blanked                          */

struct file {
    char  path[256];
    char *text;            /* code only: comments and literals are spaces */
};

static struct file files[512];
static size_t nfiles;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;

    cr_assert_not_null(f, "cannot open %s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Comments, string and character literals become spaces (newlines kept). */
static void blank(char *s)
{
    for (char *p = s; *p;) {
        if (p[0] == '/' && p[1] == '*') {
            char *e = strstr(p + 2, "*/");
            e = e ? e + 2 : p + strlen(p);
            for (; p < e; p++)
                if (*p != '\n')
                    *p = ' ';
        } else if (p[0] == '/' && p[1] == '/') {
            for (; *p && *p != '\n'; p++)
                *p = ' ';
        } else if (*p == '"' || *p == '\'') {
            char q = *p;
            *p++ = ' ';
            for (; *p && *p != q && *p != '\n'; p++) {
                if (*p == '\\' && p[1]) {
                    *p++ = ' ';
                }
                *p = ' ';
            }
            if (*p == q)
                *p++ = ' ';
        } else {
            p++;
        }
    }
}

static void add_dir(const char *dir, bool recurse)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    cr_assert_not_null(d, "cannot list %s", dir);
    while ((e = readdir(d))) {
        char path[512];
        size_t l = strlen(e->d_name);
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (recurse)
                add_dir(path, true);
        } else if (l > 2 && (strcmp(e->d_name + l - 2, ".c") == 0 ||
                             strcmp(e->d_name + l - 2, ".h") == 0)) {
            cr_assert_lt(nfiles, sizeof(files) / sizeof(files[0]));
            cr_assert_lt(strlen(path), sizeof(files[nfiles].path), "%s: path too long", path);
            memcpy(files[nfiles].path, path, strlen(path) + 1);
            files[nfiles].text = slurp(path);
            blank(files[nfiles].text);
            nfiles++;
        }
    }
    closedir(d);
}

static void load_files(void)
{
    static const char *const dirs[] = { "core", "dispatcher", "sandbox", "sinks", "pollers",
                                        "api", "cli", "include" };

    if (nfiles)
        return;
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        add_dir(dirs[i], true);
}

static bool is_ident(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* Does code `s` read `field` (->field or .field, not assigned with =)? */
static bool reads(const char *s, const char *field)
{
    size_t fl = strlen(field);

    for (const char *p = strstr(s, field); p; p = strstr(p + 1, field)) {
        const char *b = p, *a = p + fl;

        if ((p > s && is_ident(p[-1])) || is_ident(*a))
            continue;
        while (b > s && isspace((unsigned char)b[-1]))
            b--;
        if (!(b > s && b[-1] == '.') && !(b - s >= 2 && b[-1] == '>' && b[-2] == '-'))
            continue;
        if (b - s >= 2 && b[-1] == '.' && b[-2] == '.')
            continue; /* "..." */
        while (isspace((unsigned char)*a))
            a++;
        if (a[0] == '=' && a[1] != '=')
            continue; /* written, or a designated initializer */
        return true;
    }
    return false;
}

/* The scopes of the table above. */
enum scope { ANYWHERE, ENGINE_OR_POLLER, POLLER, SINK };

static bool in_scope(const char *path, enum scope sc, const char *type)
{
    char dir[128];

    if (strncmp(path, "include/", 8) == 0)
        return false; /* headers declare */
    switch (sc) {
    case ANYWHERE:
        return true;
    case ENGINE_OR_POLLER:
        if (strncmp(path, "pollers/", 8) != 0)
            return true; /* dispatcher, core, api, sandbox, sinks, cli */
        if (!strchr(path + 8, '/'))
            return true; /* pollers/ *.c: the registry and the generic parts */
        /* fallthrough */
    case POLLER:
        snprintf(dir, sizeof(dir), "pollers/%s/", type);
        return strncmp(path, dir, strlen(dir)) == 0 &&
               strcmp(path + strlen(dir), "conf.c") != 0;
    case SINK:
        snprintf(dir, sizeof(dir), "sinks/%s.c", type);
        return strcmp(path, dir) == 0 ||
               (strncmp(path, "sinks/", 6) == 0 && path[strlen(path) - 1] == 'h') ||
               strncmp(path, "cli/", 4) == 0;
    }
    return false;
}

static const char *read_where(const char *field, enum scope sc, const char *type)
{
    for (size_t i = 0; i < nfiles; i++)
        if (in_scope(files[i].path, sc, type) && reads(files[i].text, field))
            return files[i].path;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the tables' source text                                             */

struct row {
    char name[64];
    char strct[64];        /* "sl_source_conf"; "" when the row names no field */
    char field[64];
};

struct table {
    char       name[64];   /* the C array's name */
    struct row rows[CK_MAX_KEYS];
    size_t     nrows;
};

/* `struct X` of the latest `#define M(field) offsetof(struct X, field)`
 * before `at` in `src`. */
static bool macro_struct(const char *src, const char *at, const char *macro, char *out, size_t n)
{
    char pat[96];
    const char *best = NULL;

    snprintf(pat, sizeof(pat), "#define %s(field) offsetof(struct ", macro);
    for (const char *p = strstr(src, pat); p && p < at; p = strstr(p + 1, pat))
        best = p + strlen(pat);
    if (!best)
        return false;
    snprintf(out, n, "%.*s", (int)strcspn(best, ", "), best);
    return true;
}

/* Every `static const struct sl_conf_key NAME[] = { ... };` of a file. */
static size_t parse_tables(const char *path, struct table *t, size_t max)
{
    char *raw = slurp(path);
    const char *decl = "const struct sl_conf_key ";
    size_t nt = 0;

    for (char *p = strstr(raw, decl); p && nt < max; p = strstr(p + 1, decl)) {
        char *q = p + strlen(decl), *end;
        struct table *tb = &t[nt];

        if (!strstr(q, "[] = {") || strstr(q, "[] = {") - q > 60)
            continue;
        memset(tb, 0, sizeof(*tb));
        snprintf(tb->name, sizeof(tb->name), "%.*s", (int)strcspn(q, "["), q);
        q = strstr(q, "[] = {") + 6;
        end = strstr(q, "\n};");
        cr_assert_not_null(end, "%s: table %s has no end", path, tb->name);
        for (char *r = strstr(q, ".name = \""); r && r < end; r = strstr(r + 1, ".name = \"")) {
            struct row *w = &tb->rows[tb->nrows++];
            char *next = strstr(r + 1, ".name = \""), *off, macro[32];
            int ml = 0;

            cr_assert_leq(tb->nrows, CK_MAX_KEYS);
            if (!next || next > end)
                next = end;
            r += 9;
            snprintf(w->name, sizeof(w->name), "%.*s", (int)strcspn(r, "\""), r);
            off = strstr(r, ".off = ");
            if (!off || off > next)
                continue; /* names no field (`type`) */
            off += 7;
            if (strncmp(off, "offsetof(struct ", 16) == 0) {
                off += 16;
                snprintf(w->strct, sizeof(w->strct), "%.*s", (int)strcspn(off, ", "), off);
                off += strcspn(off, ",") + 1;
                off += strspn(off, " ");
                snprintf(w->field, sizeof(w->field), "%.*s", (int)strcspn(off, ") "), off);
                continue;
            }
            while (is_ident(off[ml]) && ml < 31)
                ml++;
            snprintf(macro, sizeof(macro), "%.*s", ml, off);
            cr_assert_eq(off[ml], '(', "%s: %s.%s: .off is not MACRO(field)", path, tb->name,
                         w->name);
            cr_assert(macro_struct(raw, r, macro, w->strct, sizeof(w->strct)),
                      "%s: %s.%s: no #define %s(field) offsetof(struct ...)", path, tb->name,
                      w->name, macro);
            off += ml + 1;
            snprintf(w->field, sizeof(w->field), "%.*s", (int)strcspn(off, ")"), off);
        }
        nt++;
    }
    free(raw);
    return nt;
}

/* The parsed table of `path` whose rows are exactly `keys` (in order). */
static const struct table *find_table(const char *path, const struct sl_conf_key *keys,
                                      size_t nkeys)
{
    static struct table t[16];
    size_t nt = parse_tables(path, t, 16);

    for (size_t i = 0; i < nt; i++) {
        bool same = t[i].nrows == nkeys;
        for (size_t j = 0; same && j < nkeys; j++)
            same = strcmp(t[i].rows[j].name, keys[j].name) == 0;
        if (same)
            return &t[i];
    }
    cr_assert_fail("%s: no table with exactly the live keys (%zu, first %s): the test's "
                   "parser and the tables disagree", path, nkeys, nkeys ? keys[0].name : "-");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the walk                                                            */

struct unread {
    char section[16], type[32], key[64], field[200];
};

static struct unread found[128];
static size_t nfound;
static size_t checked;

static void check_key(const char *section, const char *type, const struct sl_conf_key *k,
                      const struct row *w, enum scope sc)
{
    const char *where;

    if (k->flags & SL_CK_TYPE)
        return;
    cr_assert(w->field[0], "%s key %s: the table row names no field", section, k->name);
    checked++;
    if ((where = read_where(w->field, sc, type))) {
        if (getenv("KEYWALK_VERBOSE"))
            fprintf(stderr, "keywalk: %s %s %s: %s read in %s\n", section, type, k->name,
                    w->field, where);
        return;
    }
    for (size_t i = 0; i < sizeof(derived) / sizeof(derived[0]); i++)
        if (strcmp(derived[i].strct, w->strct) == 0 && strcmp(derived[i].field, w->field) == 0 &&
            read_where(derived[i].via, sc, type))
            return;
    cr_assert_lt(nfound, sizeof(found) / sizeof(found[0]));
    snprintf(found[nfound].section, sizeof(found[nfound].section), "%s", section);
    snprintf(found[nfound].type, sizeof(found[nfound].type), "%s", type);
    snprintf(found[nfound].key, sizeof(found[nfound].key), "%s", k->name);
    snprintf(found[nfound].field, sizeof(found[nfound].field), "struct %s.%s", w->strct,
             w->field);
    nfound++;
}

static void walk_common(const char *section, const struct sl__ctable *ct)
{
    const struct table *t = find_table("config/schema.c", ct->keys, ct->nkeys);

    for (size_t i = 0; i < ct->nkeys; i++) {
        if (ct->keys[i].type == SL_CK_OBJECT) {
            walk_common(section, ct->keys[i].sub);
            continue;
        }
        check_key(section, "", &ct->keys[i], &t->rows[i], ANYWHERE);
    }
}

static bool applies(const struct sl_conf_key *k, const struct sl_conf_type *type)
{
    return !k->traits || (type->traits & k->traits);
}

static void walk_sources(void)
{
    const struct table *common = find_table("config/schema.c", sl__source_table.keys,
                                            sl__source_table.nkeys);
    struct table saved = *common; /* find_table's storage is reused below */

    for (size_t ti = 0; sl_registry.sources[ti]; ti++) {
        const struct sl_conf_type *ty = sl_registry.sources[ti];
        char path[128];
        const struct table *own;

        for (size_t i = 0; i < sl__source_table.nkeys; i++)
            if (applies(&sl__source_table.keys[i], ty))
                check_key("sources", ty->name, &sl__source_table.keys[i], &saved.rows[i],
                          ENGINE_OR_POLLER);
        snprintf(path, sizeof(path), "pollers/%s/conf.c", ty->name);
        own = find_table(path, ty->keys, ty->nkeys);
        for (size_t i = 0; i < ty->nkeys; i++)
            check_key("sources", ty->name, &ty->keys[i], &own->rows[i],
                      (ty->keys[i].flags & SL_CK_BASE) ? ENGINE_OR_POLLER : POLLER);
    }
}

static void walk_sinks(void)
{
    for (size_t i = 0; i < sl__sink_table.nkeys; i++)
        cr_assert(sl__sink_table.keys[i].flags & SL_CK_TYPE,
                  "common sink key %s: the walk knows only `type` there", sl__sink_table.keys[i].name);
    for (size_t ti = 0; sl_registry.sinks[ti]; ti++) {
        const struct sl_conf_type *ty = sl_registry.sinks[ti];
        char path[128];
        const struct table *own;

        snprintf(path, sizeof(path), "sinks/%s.c", ty->name);
        own = find_table(path, ty->keys, ty->nkeys);
        for (size_t i = 0; i < ty->nkeys; i++)
            check_key("sinks", ty->name, &ty->keys[i], &own->rows[i], SINK);
    }
}

static bool is_known(const struct unread *u)
{
    for (size_t i = 0; i != NKNOWN; i++)
        if (strcmp(known_unread[i].section, u->section) == 0 &&
            strcmp(known_unread[i].type, u->type) == 0 && strcmp(known_unread[i].key, u->key) == 0)
            return true;
    return false;
}

Test(keywalk, every_accepted_key_is_read_by_some_code)
{
    size_t bad = 0;

    load_files();
    walk_common("functions", &sl__function_table);
    walk_common("server", &sl__server_table);
    walk_common("log", &sl__log_table);
    walk_sources();
    walk_sinks();
    cr_assert_gt(checked, 50, "only %zu keys checked: the walk lost its tables", checked);
    for (size_t i = 0; i < nfound; i++) {
        const struct unread *u = &found[i];
        bool known = is_known(u);

        fprintf(stderr, "keywalk: %s%s%s key `%s` (%s) is accepted and read by no code%s\n",
                u->section, u->type[0] ? " of type " : "", u->type, u->key, u->field,
                known ? " (known, see known_unread)" : "");
        bad += !known;
    }
    cr_assert_eq(bad, 0, "%zu key(s) accepted and read by no code (listed above): implement "
                 "them, refuse them, or list them in known_unread with the reason", bad);
    for (size_t i = 0; i != NKNOWN; i++) {
        bool still = false;
        for (size_t j = 0; j < nfound; j++)
            still = still || (strcmp(known_unread[i].section, found[j].section) == 0 &&
                              strcmp(known_unread[i].type, found[j].type) == 0 &&
                              strcmp(known_unread[i].key, found[j].key) == 0);
        cr_assert(still, "known_unread lists %s %s `%s` (%s), but it is read now or no longer "
                  "accepted: delete the entry", known_unread[i].section, known_unread[i].type,
                  known_unread[i].key, known_unread[i].why);
    }
}

/* The read detector itself. */
Test(keywalk, reads_are_reads)
{
    char s[256];
    static const struct { const char *code; bool read; } v[] = {
        { "x = c->batch_size;", true },
        { "if (o.batch_size == 3)", true },
        { "f(&c->batch_size);", true },
        { "c->batch_size += 1;", true },
        { "c -> batch_size", true },
        { "c->batch_size = 4;", false },
        { "struct s v = { .batch_size = 4 };", false },
        { "int batch_size = 4; g(batch_size);", false },
        { "c->batch_size_max", false },
        { "c->max_batch_size", false },
        { "offsetof(struct sl_source_conf, batch_size)", false },
        { "/* c->batch_size */", false },
        { "// c->batch_size\n", false },
        { "puts(\"c->batch_size\");", false },
    };

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        snprintf(s, sizeof(s), "%s", v[i].code);
        blank(s);
        cr_assert_eq(reads(s, "batch_size"), v[i].read, "%s", v[i].code);
    }
}

/* Every table the loader uses is walked: the registry's types all have
 * their table file, and the common tables are found by their keys. */
Test(keywalk, tables_parse_to_the_live_keys)
{
    const struct table *t = find_table("config/schema.c", sl__server_table.keys,
                                       sl__server_table.nkeys);

    cr_assert_str_eq(t->rows[0].strct, "sl_server_conf");
    for (size_t i = 0; i < sl__server_table.nkeys; i++)
        cr_assert(t->rows[i].field[0], "server.%s names no field", t->rows[i].name);
    for (size_t ti = 0; sl_registry.sources[ti]; ti++)
        if (strcmp(sl_registry.sources[ti]->name, "redis") == 0)
            t = find_table("pollers/redis/conf.c", sl_registry.sources[ti]->keys,
                           sl_registry.sources[ti]->nkeys);
    cr_assert_str_eq(t->rows[0].name, "url");
    for (size_t i = 0; i < t->nrows; i++)
        if (strcmp(t->rows[i].name, "visibility_timeout_s") == 0) {
            cr_assert_str_eq(t->rows[i].strct, "sl_source_conf");
            cr_assert_str_eq(t->rows[i].field, "visibility_timeout_ms");
        }
}
