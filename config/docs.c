/* docs/CONFIGURATION.md, generated from the key tables (`make docs`): those
 * of config/ and, for sources and sinks, those of every registered type. */
#include <string.h>

#include "schema.h"

static const char *type_name(const struct sl_conf_key *k)
{
    switch (k->type) {
    case SL_CK_STRING:   return (k->flags & SL_CK_REF_FUNC) ? "function name"
                              : (k->flags & SL_CK_REF_SINK) ? "sink name" : "string";
    case SL_CK_PATH:     return "path";
    case SL_CK_INT:      return "integer";
    case SL_CK_BOOL:     return "boolean";
    case SL_CK_DURATION: return "duration";
    case SL_CK_SIZE:     return "size";
    case SL_CK_ENUM:     return "enum";
    case SL_CK_STRLIST:  return "list of strings";
    case SL_CK_PATHLIST: return "list of paths";
    case SL_CK_MAP:      return "map of strings";
    case SL_CK_OBJECT:   return "mapping";
    case SL_CK_JSON:     return "any";
    default:             return "?";
    }
}

/* `types`: the registry's list for a typed table, NULL otherwise. Common
 * keys show the types' overrides of their default after their own. */
static void print_default(FILE *out, const struct sl_conf_key *k, int common,
                          const struct sl_conf_type *const *types)
{
    int any = 0;

    if (k->flags & SL_CK_REQUIRED) {
        fputs("required", out);
        return;
    }
    if (k->def) {
        fprintf(out, "`%s`", k->def);
        any = 1;
    }
    for (size_t i = 0; common && types && types[i]; i++) {
        for (const struct sl_conf_default *d = types[i]->defaults; d && d->key; d++) {
            if (strcmp(d->key, k->name) == 0) {
                fprintf(out, "%s%s: `%s`", any ? ", " : "", types[i]->name, d->value);
                any = 1;
            }
        }
    }
    if (!any)
        fputs("—", out);
}

static void print_range(FILE *out, const struct sl_conf_key *k,
                        const struct sl_conf_type *const *types)
{
    const char *u = "";

    if (k->type == SL_CK_DURATION)
        u = k->unit == 1 ? " ms" : k->unit == 1000 ? " s" : "";
    if (k->type == SL_CK_SIZE)
        u = k->unit == 1024 * 1024 ? " MB" : "";
    if (k->flags & SL_CK_TYPE) {
        for (size_t i = 0; types && types[i]; i++)
            fprintf(out, "%s`%s`", i ? ", " : "", types[i]->name);
        return;
    }
    if (k->type == SL_CK_ENUM) {
        for (int i = 0; k->enums[i]; i++)
            fprintf(out, "%s`%s`", i ? ", " : "", k->enums[i]);
        return;
    }
    if (k->min != k->max) {
        fprintf(out, "%lld..%lld%s", (long long)k->min, (long long)k->max, u);
        if (k->flags & SL_CK_NEG1)
            fputs(", or -1", out);
        return;
    }
    fputs("—", out);
}

/* The "applies to" cell: every type for a common key without traits,
 * else the types with one of its traits (common) or declaring it. */
static void print_applies(FILE *out, const struct sl_conf_key *k, int common,
                          const struct sl_conf_type *const *types)
{
    int first = 1;

    if (common && !k->traits) {
        fputs("all", out);
        return;
    }
    for (size_t i = 0; types[i]; i++) {
        int has = 0;

        if (common) {
            has = (types[i]->traits & k->traits) != 0;
        } else {
            for (size_t j = 0; j < types[i]->nkeys; j++)
                has |= strcmp(types[i]->keys[j].name, k->name) == 0;
        }
        if (has) {
            fprintf(out, "%s%s", first ? "" : ", ", types[i]->name);
            first = 0;
        }
    }
}

static void print_row(FILE *out, const struct sl_conf_key *k, int common,
                      const struct sl_conf_type *const *types)
{
    fprintf(out, "| `%s` | %s | ", k->name, type_name(k));
    print_default(out, k, common, types);
    fputs(" | ", out);
    print_range(out, k, types);
    fputs(" |", out);
    if (types) {
        fputc(' ', out);
        print_applies(out, k, common, types);
        fputs(" |", out);
    }
    fprintf(out, " %s |\n", k->desc);
}

/* Has a type before `types[t]` (or `types[t]` before key `j`) declared a
 * key named `name`? Keys several types share get one row, the first's. */
static int declared_before(const struct sl_conf_type *const *types, size_t t, size_t j,
                           const char *name)
{
    for (size_t i = 0; i <= t; i++)
        for (size_t m = 0; m < (i == t ? j : types[i]->nkeys); m++)
            if (strcmp(types[i]->keys[m].name, name) == 0)
                return 1;
    return 0;
}

static void print_table(FILE *out, const struct sl__ctable *t,
                        const struct sl_conf_type *const *types)
{
    if (!t->typed)
        types = NULL;
    fprintf(out, "## %s (`%s`)\n\n%s\n\n", t->title, t->path, t->intro);
    fprintf(out, "| key | type | default | range / values |%s description |\n",
            types ? " applies to |" : "");
    fprintf(out, "| --- | --- | --- | --- |%s --- |\n", types ? " --- |" : "");
    for (size_t i = 0; i < t->nkeys; i++)
        print_row(out, &t->keys[i], 1, types);
    for (size_t i = 0; types && types[i]; i++)
        for (size_t j = 0; j < types[i]->nkeys; j++)
            if (!declared_before(types, i, j, types[i]->keys[j].name))
                print_row(out, &types[i]->keys[j], 0, types);
    fputc('\n', out);
}

void sl_config_docs(FILE *out, const struct sl_conf_registry *reg)
{
    fputs("<!-- Generated by `make docs` (sluice config-docs) from config/schema.c. "
          "Do not edit by hand. -->\n"
          "# Configuration reference\n\n"
          "sluice reads one YAML file with five top-level keys: `functions`, `sources`, "
          "`sinks`, `server` and `log`. Lambda's names are kept, in snake_case. "
          "`sluice lint FILE` checks a file without running anything and prints every "
          "problem as `file:line:col: message`.\n\n"
          "Values:\n\n"
          "- **Interpolation**: `${VAR}` is replaced by the environment variable `VAR` "
          "(an error when it is not set), `${VAR:-default}` falls back to `default` when "
          "`VAR` is unset or empty, and `$$` is a literal `$`. It applies to every value, "
          "never to keys.\n"
          "- **Durations** take `ms`, `s`, `m`, `h` or `d` (`500ms`, `30s`, `6h`); a bare "
          "number is in the unit the key name ends with (`timeout_s: 30` is 30 seconds).\n"
          "- **Sizes** take `B`, `KB`, `MB`, `GB` (powers of 1024; `KiB`, `MiB`, `GiB` and "
          "`K`, `M`, `G` too); a bare number is in the key's unit (`memory_mb: 256`).\n"
          "- **Booleans** are `true`/`false` (`yes`/`no`, `on`/`off` also read).\n"
          "- **Paths** are relative to the directory of the configuration file.\n"
          "- A key with no value (`on_failure:`) is the same as leaving it out.\n"
          "- Unknown keys are errors, and so are references to functions or sinks that "
          "are not defined.\n\n", out);
    print_table(out, &sl__function_table, NULL);
    print_table(out, &sl__async_table, NULL);
    print_table(out, &sl__source_table, reg->sources);
    print_table(out, &sl__sink_table, reg->sinks);
    print_table(out, &sl__server_table, NULL);
    print_table(out, &sl__log_table, NULL);
}
