/* Internal: the key tables behind the loader, lint and generated docs. */
#ifndef SLUICE_CONFIG_SCHEMA_H
#define SLUICE_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "sluice/config.h"

struct sl_conf_load;

struct sl__ctable {
    const char            *path;      /* for docs: "sources.<name>" */
    const char            *title;
    const char            *intro;
    const struct sl_conf_key *keys;
    size_t                 nkeys;
    int                    typed;     /* sources/sinks: keys of the registry's types follow */
};

extern const struct sl__ctable sl__function_table;
extern const struct sl__ctable sl__async_table;
extern const struct sl__ctable sl__source_table;
extern const struct sl__ctable sl__sink_table;
extern const struct sl__ctable sl__server_table;
extern const struct sl__ctable sl__log_table;

/* Loader services used by the check hooks. */
const char *sl__load_keypath(struct sl_conf_load *ld);
int sl__load_has_function(struct sl_conf_load *ld, const char *name);
int sl__load_has_sink(struct sl_conf_load *ld, const char *name);
/* The scalar text of `key` in the mapping being loaded (the key's
 * siblings), NULL when absent or not a scalar. */
const char *sl__load_sibling(struct sl_conf_load *ld, const char *key);
/* `p` resolved against the configuration's directory (malloc'd). */
char *sl__load_resolve_path(struct sl_conf_load *ld, const char *p);

/* Scalar parsing shared by the loader and the tests. Each returns 0 or -1
 * with a message in `why` (size n). */
int sl__parse_int(const char *s, int64_t *out, char *why, size_t n);
int sl__parse_bool(const char *s, bool *out, char *why, size_t n);
int sl__parse_duration(const char *s, int64_t unit_ms, int64_t *out_ms, char *why, size_t n);
int sl__parse_size(const char *s, int64_t unit, int64_t *out, char *why, size_t n);
/* ${VAR} and ${VAR:-default} from the environment, $$ for a literal $.
 * Returns a new string, or NULL with a message in `why`. */
char *sl__interpolate(const char *s, char *why, size_t n);

#define CK_MAX_KEYS 64   /* keys of one section, common and every type's */
#define CK_MAX_TYPES 32  /* types of one registry (a bit each) */

#endif
