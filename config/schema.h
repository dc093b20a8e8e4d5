/* Internal: the key tables behind the loader, lint and generated docs. */
#ifndef SLUICE_CONFIG_SCHEMA_H
#define SLUICE_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "sluice/config.h"

enum sl__ck_type {
    CK_STRING = 0,  /* char *, non-empty */
    CK_PATH,        /* char *, resolved against the config directory */
    CK_INT,         /* int64_t */
    CK_BOOL,        /* bool */
    CK_DURATION,    /* int64_t milliseconds; bare numbers are in `unit` ms */
    CK_SIZE,        /* int64_t in units of `unit` bytes ("256MB", "1GB") */
    CK_ENUM,        /* int, index into `enums` */
    CK_STRLIST,     /* struct sl_strlist; a single scalar is a one-item list */
    CK_PATHLIST,    /* struct sl_strlist of resolved paths */
    CK_MAP,         /* struct sl_kvlist of scalar to scalar */
    CK_OBJECT,      /* nested table at `off` */
    CK_JSON,        /* json_t *, any YAML subtree */
};

#define CK_REQUIRED   0x01u  /* must be present (for every type) */
#define CK_REF_FUNC   0x02u  /* names a function */
#define CK_REF_SINK   0x04u  /* names a sink */
#define CK_NEG1       0x08u  /* -1 is accepted as "no limit" besides the range */

struct sl__load;
struct sl__ckey;

/* Extra validation of one value after it was stored. Report problems with
 * sl__load_error(ld, node, ...); returns nothing. */
typedef void (*sl__ck_check)(struct sl__load *ld, const struct sl__ckey *k,
                             void *field, yaml_node_t *node);

struct sl__ctable;

struct sl__ckey {
    const char  *name;
    int          type;               /* enum sl__ck_type */
    const char  *def;                /* default in YAML text, NULL: none */
    const char  *tdef[8];            /* per source/sink type default, overrides def */
    int64_t      min, max;           /* range in key units; min == max: unbounded */
    int64_t      unit;               /* DURATION: ms per unit; SIZE: bytes per unit */
    const char *const *enums;        /* ENUM: NULL-terminated */
    size_t       off;                /* offsetof into the section struct */
    unsigned     flags;              /* CK_* */
    unsigned     types;              /* bit per type the key applies to; 0: all */
    unsigned     req_types;          /* bit per type that requires the key */
    const struct sl__ctable *sub;    /* OBJECT */
    sl__ck_check check;
    const char  *desc;
};

struct sl__ctable {
    const char            *path;      /* for docs: "sources.<name>" */
    const char            *title;
    const char            *intro;
    const struct sl__ckey *keys;
    size_t                 nkeys;
    const char *const     *type_names; /* sources/sinks: names of `type` */
};

extern const struct sl__ctable sl__function_table;
extern const struct sl__ctable sl__async_table;
extern const struct sl__ctable sl__source_table;
extern const struct sl__ctable sl__sink_table;
extern const struct sl__ctable sl__server_table;
extern const struct sl__ctable sl__log_table;
extern const char *const sl__source_type_names[];
extern const char *const sl__sink_type_names[];

/* Loader services used by the check hooks. */
void sl__load_error(struct sl__load *ld, yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *sl__load_keypath(struct sl__load *ld);
int sl__load_has_function(struct sl__load *ld, const char *name);
int sl__load_has_sink(struct sl__load *ld, const char *name);

/* Scalar parsing shared by the loader and the tests. Each returns 0 or -1
 * with a message in `why` (size n). */
int sl__parse_int(const char *s, int64_t *out, char *why, size_t n);
int sl__parse_bool(const char *s, bool *out, char *why, size_t n);
int sl__parse_duration(const char *s, int64_t unit_ms, int64_t *out_ms, char *why, size_t n);
int sl__parse_size(const char *s, int64_t unit, int64_t *out, char *why, size_t n);
/* ${VAR} and ${VAR:-default} from the environment, $$ for a literal $.
 * Returns a new string, or NULL with a message in `why`. */
char *sl__interpolate(const char *s, char *why, size_t n);

#define CK_MAX_KEYS 64

#endif
