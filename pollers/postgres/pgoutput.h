/* sluice: pgoutput decoder (logical replication message formats).
 *
 * Pure: no I/O, no libpq. Takes one pgoutput message (the payload of an
 * XLogData 'w' message, or one row of pg_logical_slot_peek_binary_changes)
 * and returns it decoded, with row images rendered as JSON object text.
 *
 * Protocol: versions 1 to 4. Begin, Commit, Origin, Relation, Type, Insert,
 * Update, Delete, Truncate, Message; the v2 streaming messages (Stream
 * Start/Stop/Commit/Abort, with the v4 abort LSN and time) and the v3
 * two-phase messages are decoded too, so every message the server can send
 * is understood. The decoder tracks Stream Start/Stop itself: inside a
 * stream block the changes carry a leading xid, which is returned in
 * msg->xid with msg->streamed set.
 *
 * Tuple columns: 'n' null, 'u' unchanged TOAST, 't' text and 'b' binary are
 * tagged per column by the server, so no "binary" switch is passed here;
 * the server falls back to text per column for types without a send
 * function.
 *
 * Binary mode: bool, int2/4/8, oid, float4/8, numeric, text, varchar,
 * bpchar, name, "char", bytea, uuid, json, jsonb, date, time, timetz,
 * timestamp, timestamptz, interval, and arrays (any dimension) of these
 * are decoded. Any other type in binary form (enums, domains and other
 * user types, inet, money, ranges, ...) makes sl__pgo_decode fail with
 * SL_EUNSUPPORTED unless it was mapped with sl__pgo_type_alias; the stream is
 * then safe to restart in text mode from the same position (nothing was
 * consumed). Text mode handles every type.
 *
 * Ownership: the decoder owns its relation cache; a msg's rel / truncate
 * pointers are valid until the next sl__pgo_decode or sl__pgo_free (a Relation
 * message may replace the entry). The strings and arrays in a msg
 * (keys, new_image, old_image, unchanged_toast, origin, prefix, gid,
 * content) belong to the msg: release them with sl__pgo_msg_destroy; to keep
 * one, take the pointer and set the field to NULL before destroying. */
#ifndef SLUICE_PGOUTPUT_H
#define SLUICE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/err.h"

/* Hard caps on what the outside world can make the decoder allocate. */
#define PGO_MAX_COLUMNS   1664        /* Postgres' own MaxTupleAttributeNumber */
#define PGO_MAX_ARRAY_DIM 6           /* Postgres' own MAXDIM */

struct pgo_decoder;

struct pgo_column {
    char    *name;
    uint32_t type_oid;
    int32_t  typmod;
    bool     is_key;                  /* part of the replica identity key (flags bit 1) */
};

struct pgo_relation {
    uint32_t oid;
    char    *schema;                  /* "pg_catalog" when the server sends "" */
    char    *name;
    char     replica_identity;        /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t ncols;
    struct pgo_column *cols;
};

enum pgo_kind {
    PGO_BEGIN,              /* final_lsn, commit_time_ms, xid */
    PGO_COMMIT,             /* flags, commit_lsn, end_lsn, commit_time_ms */
    PGO_ORIGIN,             /* origin_lsn, origin */
    PGO_RELATION,           /* rel (just cached) */
    PGO_TYPE,               /* type_oid, type_schema, type_name */
    PGO_INSERT,             /* rel, keys, new_image */
    PGO_UPDATE,             /* rel, keys, new_image, old_image (only with 'O' or 'K'), unchanged_toast */
    PGO_DELETE,             /* rel, keys, old_image ('O': full row; 'K': the key columns) */
    PGO_TRUNCATE,           /* truncated[], n_truncated, truncate_options */
    PGO_MESSAGE,            /* transactional, message_lsn, prefix, content, content_len */
    PGO_STREAM_START,       /* xid, first_segment */
    PGO_STREAM_STOP,
    PGO_STREAM_COMMIT,      /* xid, flags, commit_lsn, end_lsn, commit_time_ms */
    PGO_STREAM_ABORT,       /* xid, subxid, [abort_lsn, abort_time_ms (v4 parallel)] */
    PGO_BEGIN_PREPARE,      /* prepare_lsn (final_lsn), end_lsn, commit_time_ms, xid, gid */
    PGO_PREPARE,            /* flags, prepare_lsn (final_lsn), end_lsn, commit_time_ms, xid, gid */
    PGO_COMMIT_PREPARED,    /* flags, commit_lsn, end_lsn, commit_time_ms, xid, gid */
    PGO_ROLLBACK_PREPARED,  /* flags, final_lsn (prepare end), end_lsn (rollback end),
                               commit_time_ms (prepare), abort_time_ms (rollback), xid, gid */
    PGO_STREAM_PREPARE      /* as PGO_PREPARE */
};

#define PGO_TRUNCATE_CASCADE          1
#define PGO_TRUNCATE_RESTART_IDENTITY 2

/* Filled by sl__pgo_decode; fields not listed for a kind are zero / NULL. */
struct pgo_msg {
    enum pgo_kind kind;
    bool     streamed;                /* inside a Stream Start/Stop block (xid is set) */
    uint32_t xid;
    uint8_t  flags;
    uint64_t final_lsn;               /* Begin */
    uint64_t commit_lsn;              /* Commit, Stream Commit, Commit Prepared */
    uint64_t end_lsn;                 /* Commit: flush the slot to this once processed */
    int64_t  commit_time_ms;          /* Unix ms */
    int64_t  commit_time_us;          /* Unix µs, the server's full precision */

    const struct pgo_relation *rel;   /* Relation, Insert, Update, Delete */
    char    *keys;                    /* JSON object of the key columns, NULL when none known */
    char    *new_image;               /* JSON object, Insert / Update */
    char    *old_image;               /* JSON object, Update with 'O'/'K', Delete */
    bool     old_is_key_only;         /* old tuple was 'K' (key columns only) */
    char   **unchanged_toast;         /* column names present in neither image */
    size_t   n_unchanged;

    const struct pgo_relation **truncated;  /* Truncate */
    size_t   n_truncated;
    uint8_t  truncate_options;        /* PGO_TRUNCATE_* bits */

    uint32_t type_oid;                /* Type */
    char    *type_schema, *type_name;

    uint64_t origin_lsn;              /* Origin */
    char    *origin;

    bool     transactional;           /* Message */
    uint64_t message_lsn;
    char    *prefix;
    char    *content;                 /* content_len bytes, NUL-terminated for convenience */
    size_t   content_len;

    bool     first_segment;           /* Stream Start */
    uint32_t subxid;                  /* Stream Abort */
    uint64_t abort_lsn;               /* Stream Abort (v4 parallel), else 0 */
    int64_t  abort_time_ms;           /* Stream Abort (v4 parallel), Rollback Prepared */
    char    *gid;                     /* two-phase messages */
};

/* A decoder with an empty relation cache. Never NULL (aborts on OOM). */
struct pgo_decoder *sl__pgo_new(void);

/* Frees the decoder and its relation cache; accepts NULL. */
void sl__pgo_free(struct pgo_decoder *d);

/* Decode one message of `len` bytes. On success returns 0 and fills `out`
 * (which the caller must sl__pgo_msg_destroy). On failure returns
 *   SL_EPROTO        malformed / truncated input, unknown message type,
 *                    unknown relation OID, column count mismatch, ...
 *   SL_EUNSUPPORTED  a binary-format value of a type the decoder cannot read
 * with the reason in `err` (may be NULL); `out` is then left empty (no
 * destroy needed, harmless if called). Never reads past buf[len-1]. */
int sl__pgo_decode(struct pgo_decoder *d, const uint8_t *buf, size_t len,
               struct pgo_msg *out, struct sl_err *err);

/* Frees what `m` still holds and zeroes it; accepts NULL. */
void sl__pgo_msg_destroy(struct pgo_msg *m);

/* Decode the user type `oid` (an enum, a domain, an array of those...) as
 * if it were the built-in type `as_oid` (e.g. an enum as text = 25, a domain
 * over int4 as 23, an enum array as text[] = 1009). Needed only in binary
 * mode, or to give a user array type its element type in text mode.
 * Returns 0, or SL_EINVAL when `as_oid` is not a built-in the decoder knows. */
int sl__pgo_type_alias(struct pgo_decoder *d, uint32_t oid, uint32_t as_oid);

/* True when values of `oid` (after aliases) are decoded in binary form. */
bool sl__pgo_type_binary_ok(const struct pgo_decoder *d, uint32_t oid);

/* Use `names` as the key columns of relation `rel_oid` (now and whenever
 * its Relation message is re-sent), instead of the replica identity flags.
 * Useful under REPLICA IDENTITY FULL, where the server flags every column
 * as a key: pass the primary key's columns to get real keys. Copies
 * `names`. Returns 0. */
int sl__pgo_set_key_columns(struct pgo_decoder *d, uint32_t rel_oid, const char *const *names,
                        size_t n);

/* How row images are written. PGO_IMAGES_JSON (the default): plain JSON,
 * {"id":1,"name":"a"}. PGO_IMAGES_AV: DynamoDB AttributeValues as Lambda
 * sends DynamoDB Streams images, {"id":{"N":"1"},"name":{"S":"a"}}:
 * numbers N (a string; S when DynamoDB cannot hold the value exactly:
 * NaN, +-Infinity, more than 38 significant digits, magnitude outside
 * 1E-130..1E+126), bool BOOL, NULL {"NULL":true}, bytea B (base64), json
 * objects M, json and Postgres arrays L, everything else S. */
enum pgo_images { PGO_IMAGES_JSON = 0, PGO_IMAGES_AV };

void sl__pgo_set_images(struct pgo_decoder *d, enum pgo_images images);

/* Name of a kind ("INSERT", "STREAM_START", ...), for logs. */
const char *sl__pgo_kind_name(enum pgo_kind k);

/* ---- internal: shared by pgoutput.c and pgvalues.c, not for callers ---- */

struct pgo__buf {                     /* growable text, always NUL-terminated after use */
    char  *p;
    size_t len, cap;
};

void sl__pgo_buf_grow(struct pgo__buf *b, size_t need);

static inline void pgo__buf_put(struct pgo__buf *b, const void *s, size_t n)
{
    if (b->cap - b->len <= n)
        sl__pgo_buf_grow(b, n + 1);
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void pgo__buf_ch(struct pgo__buf *b, char c)
{
    if (b->cap - b->len <= 1)
        sl__pgo_buf_grow(b, 2);
    b->p[b->len++] = c;
}

enum pgo_images sl__pgo_images(const struct pgo_decoder *d);
struct pgo__buf *sl__pgo_scratch(const struct pgo_decoder *d);   /* the decoder's own */

/* `oid` after the decoder's aliases (the oid itself when none). */
uint32_t sl__pgo_resolve(const struct pgo_decoder *d, uint32_t oid);

/* Append the JSON for one column value of type `oid`, sent as text
 * (binary=false) or in the type's binary form, `n` bytes at `v`. */
int sl__pgo_value(const struct pgo_decoder *d, struct pgo__buf *b, uint32_t oid, bool binary,
               const uint8_t *v, size_t n, struct sl_err *err);

/* Append `n` bytes as a JSON string; invalid UTF-8 becomes U+FFFD. */
void sl__pgo_json_str(struct pgo__buf *b, const char *s, size_t n);

/* True when `oid` is a built-in type sl__pgo_value reads in binary form. */
bool sl__pgo_builtin_binary_ok(uint32_t oid);

#endif
