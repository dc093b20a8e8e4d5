/* sluice: pgoutput message decoder (see pgoutput.h).
 *
 * A cursor over the message checks every length before it reads; any
 * short read, bad tag or unknown relation fails the whole message, so a
 * corrupt stream is reported and never advanced past. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

#include "pgoutput.h"

#define PG_EPOCH_UNIX_US INT64_C(946684800000000)

struct alias {
    uint32_t oid, as_oid;
};

struct keyset {                       /* key columns chosen by the caller for one relation */
    uint32_t rel_oid;
    char   **names;
    size_t   n;
};

struct pgo_decoder {
    struct pgo_relation **rels;       /* open addressing by oid, NULL = empty */
    size_t   rel_cap, rel_count;
    struct pgo_relation *retired;     /* replaced last call: kept alive until the next one */
    struct alias *aliases;
    size_t   n_aliases;
    struct keyset *keysets;
    size_t   n_keysets;
    bool     in_stream;               /* between Stream Start and Stream Stop */
    struct col {                      /* one decoded tuple column, pointing into the message */
        char kind;                    /* 'n', 'u', 't', 'b' */
        const uint8_t *v;
        size_t n;
    } *oldt, *newt;
    size_t   tcap;                    /* capacity of oldt / newt */
    const struct pgo_relation **trunc;
    size_t   trunc_cap;
    enum pgo_images images;           /* how values are written */
    struct pgo__buf *scratch;         /* AttributeValue rewriting of arrays and json */
};

/* ------------------------------------------------------------------ */
/* cursor                                                              */

struct rd {
    const uint8_t *p, *end;
    bool short_read;
};

/* A read past the end: nothing more is read from this message. */
static void rd_short(struct rd *r)
{
    r->short_read = true;
    r->p = r->end;
}

static uint8_t rd_u8(struct rd *r)
{
    if (r->end - r->p < 1) {
        rd_short(r);
        return 0;
    }
    return *r->p++;
}

static uint64_t rd_uint(struct rd *r, int bytes)
{
    if (r->end - r->p < bytes) {
        rd_short(r);
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | r->p[i];
    r->p += bytes;
    return v;
}

#define rd_u16(r) ((uint16_t)rd_uint((r), 2))
#define rd_u32(r) ((uint32_t)rd_uint((r), 4))
#define rd_u64(r) (rd_uint((r), 8))

/* A NUL-terminated string inside the message; a copy, or NULL when the
 * terminator is missing. */
static char *rd_str(struct rd *r)
{
    const uint8_t *z = r->p < r->end ? memchr(r->p, 0, (size_t)(r->end - r->p)) : NULL;
    if (!z) {
        rd_short(r);
        return NULL;
    }
    char *s = sl_strndup((const char *)r->p, (size_t)(z - r->p));
    r->p = z + 1;
    return s;
}

/* A uint32 length and that many bytes, left in the message; false (a
 * short read) when they run past the end. */
static bool rd_bytes(struct rd *r, const uint8_t **v, uint32_t *n)
{
    uint32_t len = rd_u32(r);
    if (r->short_read || len > (size_t)(r->end - r->p)) {
        rd_short(r);
        return false;
    }
    *v = r->p;
    *n = len;
    r->p += len;
    return true;
}

/* An empty schema name stands for pg_catalog. */
static void default_schema(char **schema)
{
    if (*schema && !(*schema)[0]) {
        free(*schema);
        *schema = sl_strdup("pg_catalog");
    }
}

/* unsigned sum: a corrupt timestamp wraps instead of overflowing */
static int64_t pg_ts_to_unix_us(uint64_t t)
{
    return (int64_t)(t + (uint64_t)PG_EPOCH_UNIX_US);
}

static int64_t us_to_ms(int64_t us)
{
    int64_t q = us / 1000;
    return us % 1000 < 0 ? q - 1 : q;
}

/* ------------------------------------------------------------------ */
/* relation cache                                                      */

static void rel_free(struct pgo_relation *rel)
{
    if (!rel)
        return;
    for (size_t i = 0; i < rel->ncols; i++)
        free(rel->cols[i].name);
    free(rel->cols);
    free(rel->schema);
    free(rel->name);
    free(rel);
}

static size_t rel_slot(const struct pgo_decoder *d, uint32_t oid)
{
    size_t mask = d->rel_cap - 1, i = (oid * 2654435761u) & mask;
    while (d->rels[i] && d->rels[i]->oid != oid)
        i = (i + 1) & mask;
    return i;
}

static const struct pgo_relation *rel_get(const struct pgo_decoder *d, uint32_t oid)
{
    return d->rel_cap ? d->rels[rel_slot(d, oid)] : NULL;
}

static void rel_put(struct pgo_decoder *d, struct pgo_relation *rel)
{
    if ((d->rel_count + 1) * 2 > d->rel_cap) {
        struct pgo_relation **old = d->rels;
        size_t oldcap = d->rel_cap;
        d->rel_cap = oldcap ? oldcap * 2 : 16;
        d->rels = sl_calloc(d->rel_cap, sizeof(*d->rels));
        for (size_t i = 0; i < oldcap; i++)
            if (old[i])
                d->rels[rel_slot(d, old[i]->oid)] = old[i];
        free(old);
    }
    size_t i = rel_slot(d, rel->oid);
    if (d->rels[i]) {
        rel_free(d->retired);
        d->retired = d->rels[i];
    } else {
        d->rel_count++;
    }
    d->rels[i] = rel;
}

static void apply_keyset(const struct pgo_decoder *d, struct pgo_relation *rel)
{
    for (size_t k = 0; k < d->n_keysets; k++) {
        const struct keyset *ks = &d->keysets[k];
        if (ks->rel_oid != rel->oid)
            continue;
        for (size_t i = 0; i < rel->ncols; i++) {
            rel->cols[i].is_key = false;
            for (size_t j = 0; j < ks->n; j++)
                if (!strcmp(rel->cols[i].name, ks->names[j]))
                    rel->cols[i].is_key = true;
        }
    }
}

/* ------------------------------------------------------------------ */
/* public                                                              */

struct pgo_decoder *sl__pgo_new(void)
{
    struct pgo_decoder *d = sl_calloc(1, sizeof(struct pgo_decoder));

    d->scratch = sl_calloc(1, sizeof(*d->scratch));
    return d;
}

void sl__pgo_set_images(struct pgo_decoder *d, enum pgo_images images)
{
    d->images = images;
}

enum pgo_images sl__pgo_images(const struct pgo_decoder *d)
{
    return d->images;
}

struct pgo__buf *sl__pgo_scratch(const struct pgo_decoder *d)
{
    return d->scratch;
}

void sl__pgo_free(struct pgo_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->rel_cap; i++)
        rel_free(d->rels[i]);
    free(d->rels);
    rel_free(d->retired);
    free(d->aliases);
    for (size_t k = 0; k < d->n_keysets; k++) {
        for (size_t j = 0; j < d->keysets[k].n; j++)
            free(d->keysets[k].names[j]);
        free(d->keysets[k].names);
    }
    free(d->keysets);
    if (d->scratch)
        free(d->scratch->p);
    free(d->scratch);
    free(d->oldt);
    free(d->newt);
    free(d->trunc);
    free(d);
}

void sl__pgo_msg_destroy(struct pgo_msg *m)
{
    if (!m)
        return;
    free(m->keys);
    free(m->new_image);
    free(m->old_image);
    for (size_t i = 0; i < m->n_unchanged; i++)
        free(m->unchanged_toast[i]);
    free(m->unchanged_toast);
    free(m->type_schema);
    free(m->type_name);
    free(m->origin);
    free(m->prefix);
    free(m->content);
    free(m->gid);
    memset(m, 0, sizeof(*m));
}

uint32_t sl__pgo_resolve(const struct pgo_decoder *d, uint32_t oid)
{
    for (size_t i = 0; i < d->n_aliases; i++)
        if (d->aliases[i].oid == oid)
            return d->aliases[i].as_oid;
    return oid;
}

int sl__pgo_type_alias(struct pgo_decoder *d, uint32_t oid, uint32_t as_oid)
{
    if (!sl__pgo_builtin_binary_ok(as_oid))
        return SL_EINVAL;
    for (size_t i = 0; i < d->n_aliases; i++)
        if (d->aliases[i].oid == oid) {
            d->aliases[i].as_oid = as_oid;
            return 0;
        }
    d->aliases = sl_realloc(d->aliases, (d->n_aliases + 1) * sizeof(*d->aliases));
    d->aliases[d->n_aliases++] = (struct alias){oid, as_oid};
    return 0;
}

bool sl__pgo_type_binary_ok(const struct pgo_decoder *d, uint32_t oid)
{
    return sl__pgo_builtin_binary_ok(sl__pgo_resolve(d, oid));
}

int sl__pgo_set_key_columns(struct pgo_decoder *d, uint32_t rel_oid, const char *const *names,
                            size_t n)
{
    struct keyset *ks = NULL;
    for (size_t k = 0; k < d->n_keysets; k++)
        if (d->keysets[k].rel_oid == rel_oid)
            ks = &d->keysets[k];
    if (!ks) {
        d->keysets = sl_realloc(d->keysets, (d->n_keysets + 1) * sizeof(*d->keysets));
        ks = &d->keysets[d->n_keysets++];
        *ks = (struct keyset){.rel_oid = rel_oid};
    }
    for (size_t j = 0; j < ks->n; j++)
        free(ks->names[j]);
    free(ks->names);
    ks->names = sl_calloc(n ? n : 1, sizeof(char *));
    ks->n = n;
    for (size_t j = 0; j < n; j++)
        ks->names[j] = sl_strdup(names[j]);
    if (d->rel_cap) {
        struct pgo_relation *rel = d->rels[rel_slot(d, rel_oid)];
        if (rel)
            apply_keyset(d, rel);
    }
    return 0;
}

const char *sl__pgo_kind_name(enum pgo_kind k)
{
    static const char *const names[] = {
        [PGO_BEGIN] = "BEGIN", [PGO_COMMIT] = "COMMIT", [PGO_ORIGIN] = "ORIGIN",
        [PGO_RELATION] = "RELATION", [PGO_TYPE] = "TYPE", [PGO_INSERT] = "INSERT",
        [PGO_UPDATE] = "UPDATE", [PGO_DELETE] = "DELETE", [PGO_TRUNCATE] = "TRUNCATE",
        [PGO_MESSAGE] = "MESSAGE", [PGO_STREAM_START] = "STREAM_START",
        [PGO_STREAM_STOP] = "STREAM_STOP", [PGO_STREAM_COMMIT] = "STREAM_COMMIT",
        [PGO_STREAM_ABORT] = "STREAM_ABORT", [PGO_BEGIN_PREPARE] = "BEGIN_PREPARE",
        [PGO_PREPARE] = "PREPARE", [PGO_COMMIT_PREPARED] = "COMMIT_PREPARED",
        [PGO_ROLLBACK_PREPARED] = "ROLLBACK_PREPARED", [PGO_STREAM_PREPARE] = "STREAM_PREPARE",
    };
    return (unsigned)k < sizeof(names) / sizeof(names[0]) && names[k] ? names[k] : "?";
}

/* ------------------------------------------------------------------ */
/* tuples                                                              */

static int bad(struct sl_err *err, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct sl_err *err, const char *what, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return sl_err_set(err, SL_EPROTO, false, "malformed pgoutput %s message: %s", what, why);
}

/* A read that ran short fails the message as truncated. */
static int rd_check(const struct rd *r, const char *what, struct sl_err *err)
{
    return r->short_read ? bad(err, what, "truncated") : 0;
}

/* The message is over: nothing may be missing and nothing left after it. */
static int rd_end(const struct rd *r, const char *what, struct sl_err *err)
{
    if (r->short_read)
        return bad(err, what, "truncated");
    if (r->p != r->end)
        return bad(err, what, "%zu trailing bytes", (size_t)(r->end - r->p));
    return 0;
}

/* Insert, Update and Delete by their type byte. */
static const char *change_name(char type)
{
    return type == 'I' ? "Insert" : type == 'U' ? "Update" : "Delete";
}

/* The LSN (commit or final, by message), end LSN and commit time that
 * Commit, Stream Commit and the two-phase messages carry in this order. */
static void rd_lsns_time(struct rd *r, uint64_t *lsn, struct pgo_msg *m)
{
    *lsn = rd_u64(r);
    m->end_lsn = rd_u64(r);
    m->commit_time_us = pg_ts_to_unix_us(rd_u64(r));
}

/* The xid and GID that end the two-phase messages. */
static void rd_xid_gid(struct rd *r, struct pgo_msg *m)
{
    m->xid = rd_u32(r);
    m->gid = rd_str(r);
}

/* TupleData into `cols` (which holds rel->ncols entries). */
static int read_tuple(struct rd *r, const struct pgo_relation *rel, struct col *cols,
                      const char *what, struct sl_err *err)
{
    uint16_t n = rd_u16(r);
    if (r->short_read)
        return bad(err, what, "truncated before the column count");
    if (n != rel->ncols)
        return bad(err, what, "tuple has %u columns, relation %s.%s has %u", n, rel->schema,
                   rel->name, rel->ncols);
    for (size_t i = 0; i < n; i++) {
        uint8_t k = rd_u8(r);
        if (r->short_read)
            return bad(err, what, "truncated at column %zu of %u", i + 1, n);
        cols[i].kind = (char)k;
        cols[i].v = NULL;
        cols[i].n = 0;
        switch (k) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b': {
            uint32_t len;
            if (!rd_bytes(r, &cols[i].v, &len))
                return bad(err, what, "value of column %s runs past the end", rel->cols[i].name);
            cols[i].n = len;
            break;
        }
        default:
            return bad(err, what, "unknown column kind 0x%02x in column %s", k, rel->cols[i].name);
        }
    }
    return 0;
}

static void put_key_name(struct pgo__buf *b, const char *name, bool *first)
{
    pgo__buf_ch(b, *first ? '{' : ',');
    *first = false;
    sl__pgo_json_str(b, name, strlen(name));
    pgo__buf_ch(b, ':');
}

static char *buf_finish(struct pgo__buf *b, bool first)
{
    if (first)
        pgo__buf_ch(b, '{');
    pgo__buf_ch(b, '}');
    pgo__buf_ch(b, 0);
    return b->p;
}

/* Render `cols` as a JSON object; key columns also go to `keys` (when
 * non-NULL). `fill` (may be NULL) supplies values for 'u' columns (only its
 * key columns when `fill_key_only`: the rest are placeholders), and
 * `key_only` keeps just the key columns. */
static int render(const struct pgo_decoder *d, const struct pgo_relation *rel,
                  const struct col *cols, const struct col *fill, bool fill_key_only,
                  bool key_only, char **image,
                  struct pgo__buf *keys, bool *keys_first, struct pgo_msg *m, bool list_toast,
                  struct sl_err *err)
{
    struct pgo__buf b = {0};
    bool first = true;
    sl__pgo_buf_grow(&b, 64);
    for (size_t i = 0; i < rel->ncols; i++) {
        const struct pgo_column *c = &rel->cols[i];
        const struct col *v = &cols[i];
        if (key_only && !c->is_key)
            continue;
        if (v->kind == 'u' && fill && fill[i].kind != 'u' && (!fill_key_only || c->is_key))
            v = &fill[i];
        if (v->kind == 'u') {
            if (list_toast) {
                m->unchanged_toast = sl_realloc(m->unchanged_toast,
                                                (m->n_unchanged + 1) * sizeof(char *));
                m->unchanged_toast[m->n_unchanged++] = sl_strdup(c->name);
            }
            continue;
        }
        put_key_name(&b, c->name, &first);
        size_t start = b.len;
        if (v->kind == 'n') {
            if (d->images == PGO_IMAGES_AV)
                pgo__buf_put(&b, "{\"NULL\":true}", 13);
            else
                pgo__buf_put(&b, "null", 4);
        } else {
            int rc = sl__pgo_value(d, &b, c->type_oid, v->kind == 'b', v->v, v->n, err);
            if (rc < 0) {
                char why[SL_ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err ? err->msg : "");
                free(b.p);
                return sl_err_set(err, rc, false, "column %s.%s.%s: %s", rel->schema, rel->name,
                                  c->name, why);
            }
        }
        if (keys && c->is_key) {
            put_key_name(keys, c->name, keys_first);
            pgo__buf_put(keys, b.p + start, b.len - start);
        }
    }
    *image = buf_finish(&b, first);
    return 0;
}

static void grow_tuples(struct pgo_decoder *d, size_t n)
{
    if (n <= d->tcap)
        return;
    d->tcap = n;
    d->oldt = sl_realloc(d->oldt, n * sizeof(*d->oldt));
    d->newt = sl_realloc(d->newt, n * sizeof(*d->newt));
}

/* ------------------------------------------------------------------ */
/* messages                                                            */

static int dec_relation(struct pgo_decoder *d, struct rd *r, struct pgo_msg *m, struct sl_err *err)
{
    struct pgo_relation *rel = sl_calloc(1, sizeof(*rel));
    int rc;
    rel->oid = rd_u32(r);
    rel->schema = rd_str(r);
    rel->name = rd_str(r);
    rel->replica_identity = (char)rd_u8(r);
    uint16_t n = rd_u16(r);
    if ((rc = rd_check(r, "Relation", err)) < 0)
        goto fail;
    if (n > PGO_MAX_COLUMNS) {
        rc = bad(err, "Relation", "%u columns is more than the %d Postgres allows", n,
                 PGO_MAX_COLUMNS);
        goto fail;
    }
    if (!strchr("dnfi", rel->replica_identity) || !rel->replica_identity) {
        rc = bad(err, "Relation", "unknown replica identity 0x%02x", (int)rel->replica_identity);
        goto fail;
    }
    default_schema(&rel->schema);
    rel->cols = sl_calloc(n ? n : 1, sizeof(*rel->cols));
    for (size_t i = 0; i < n; i++) {
        struct pgo_column *c = &rel->cols[i];
        uint8_t flags = rd_u8(r);
        c->name = rd_str(r);
        c->type_oid = rd_u32(r);
        c->typmod = (int32_t)rd_u32(r);
        c->is_key = flags & 1;
        rel->ncols = (uint16_t)(i + 1);
        if ((rc = rd_check(r, "Relation", err)) < 0)
            goto fail;
    }
    if ((rc = rd_end(r, "Relation", err)) < 0)
        goto fail;
    apply_keyset(d, rel);
    rel_put(d, rel);
    m->rel = rel;
    grow_tuples(d, n);
    return 0;
fail:
    rel_free(rel);
    return rc;
}

static const struct pgo_relation *need_rel(struct pgo_decoder *d, struct rd *r, const char *what,
                                           struct sl_err *err)
{
    uint32_t oid = rd_u32(r);
    if (r->short_read) {
        bad(err, what, "truncated before the relation id");
        return NULL;
    }
    const struct pgo_relation *rel = rel_get(d, oid);
    if (!rel)
        bad(err, what, "unknown relation id %u (no Relation message seen for it)", oid);
    return rel;
}

static int dec_change(struct pgo_decoder *d, struct rd *r, char type, struct pgo_msg *m,
                      struct sl_err *err)
{
    const char *what = change_name(type);
    const struct pgo_relation *rel = need_rel(d, r, what, err);
    if (!rel)
        return SL_EPROTO;
    m->rel = rel;
    m->kind = type == 'I' ? PGO_INSERT : type == 'U' ? PGO_UPDATE : PGO_DELETE;

    bool has_old = false, has_new = false;
    uint8_t tag = rd_u8(r);
    if (r->short_read)
        return bad(err, what, "truncated before the tuple");
    if (type != 'I' && (tag == 'K' || tag == 'O')) {
        has_old = true;
        m->old_is_key_only = tag == 'K';
        int rc = read_tuple(r, rel, d->oldt, what, err);
        if (rc < 0)
            return rc;
        if (type == 'U') {
            tag = rd_u8(r);
            if (r->short_read)
                return bad(err, what, "truncated before the new tuple");
        }
    }
    if (type != 'D') {
        if (tag != 'N')
            return bad(err, what, "expected new tuple 'N', got 0x%02x", tag);
        has_new = true;
        int rc = read_tuple(r, rel, d->newt, what, err);
        if (rc < 0)
            return rc;
    } else if (!has_old) {
        return bad(err, what, "expected old tuple 'K' or 'O', got 0x%02x", tag);
    }
    int rc = rd_end(r, what, err);
    if (rc < 0)
        return rc;

    struct pgo__buf keys = {0};
    bool kfirst = true;
    sl__pgo_buf_grow(&keys, 32);
    if (has_new) {
        /* keys come from the new row; a key column the new row lacks
         * (unchanged TOAST) is taken from the old one when sent */
        rc = render(d, rel, d->newt, has_old ? d->oldt : NULL, m->old_is_key_only, false, &m->new_image, &keys, &kfirst,
                    m, true, err);
        if (rc < 0)
            goto fail;
    }
    if (has_old) {
        rc = render(d, rel, d->oldt, NULL, false, m->old_is_key_only, &m->old_image,
                    has_new ? NULL : &keys, &kfirst, m, false, err);
        if (rc < 0)
            goto fail;
    }
    if (kfirst) {
        /* no key columns (REPLICA IDENTITY NOTHING, or no key in the row) */
        free(keys.p);
    } else {
        m->keys = buf_finish(&keys, kfirst);
    }
    return 0;
fail:
    free(keys.p);
    return rc;
}

static int dec_truncate(struct pgo_decoder *d, struct rd *r, struct pgo_msg *m, struct sl_err *err)
{
    uint32_t n = rd_u32(r);
    m->truncate_options = rd_u8(r);
    int rc = rd_check(r, "Truncate", err);
    if (rc < 0)
        return rc;
    if ((size_t)n > (size_t)(r->end - r->p) / 4)
        return bad(err, "Truncate", "%u relations run past the end", n);
    if (n > d->trunc_cap) {
        d->trunc_cap = n;
        d->trunc = sl_realloc(d->trunc, n * sizeof(*d->trunc));
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct pgo_relation *rel = need_rel(d, r, "Truncate", err);
        if (!rel)
            return SL_EPROTO;
        d->trunc[i] = rel;
    }
    m->truncated = d->trunc;
    m->n_truncated = n;
    return 0;
}

int sl__pgo_decode(struct pgo_decoder *d, const uint8_t *buf, size_t len, struct pgo_msg *out,
               struct sl_err *err)
{
    struct rd r = {buf, buf + len, false};
    struct pgo_msg *m = out;
    int rc = 0;
    const char *what = "?";

    memset(m, 0, sizeof(*m));
    rel_free(d->retired);
    d->retired = NULL;
    if (len == 0)
        return sl_err_set(err, SL_EPROTO, false, "empty pgoutput message");

    char type = (char)rd_u8(&r);
    /* inside a stream block, these carry the transaction's xid first */
    if (d->in_stream && strchr("RYIUDTM", type) && type) {
        m->streamed = true;
        m->xid = rd_u32(&r);
    }
    switch (type) {
    case 'B':
        what = "Begin";
        m->kind = PGO_BEGIN;
        m->final_lsn = rd_u64(&r);
        m->commit_time_us = pg_ts_to_unix_us(rd_u64(&r));
        m->xid = rd_u32(&r);
        break;
    case 'C':
        what = "Commit";
        m->kind = PGO_COMMIT;
        m->flags = rd_u8(&r);
        rd_lsns_time(&r, &m->commit_lsn, m);
        break;
    case 'O':
        what = "Origin";
        m->kind = PGO_ORIGIN;
        m->origin_lsn = rd_u64(&r);
        m->origin = rd_str(&r);
        break;
    case 'R':
        m->kind = PGO_RELATION;
        if ((rc = rd_check(&r, "Relation", err)) < 0)
            return rc;
        rc = dec_relation(d, &r, m, err);
        goto done;
    case 'Y':
        what = "Type";
        m->kind = PGO_TYPE;
        m->type_oid = rd_u32(&r);
        m->type_schema = rd_str(&r);
        m->type_name = rd_str(&r);
        default_schema(&m->type_schema);
        break;
    case 'I':
    case 'U':
    case 'D':
        if ((rc = rd_check(&r, change_name(type), err)) < 0)
            return rc;
        rc = dec_change(d, &r, type, m, err);
        goto done;
    case 'T':
        m->kind = PGO_TRUNCATE;
        if ((rc = rd_check(&r, "Truncate", err)) < 0)
            return rc;
        rc = dec_truncate(d, &r, m, err);
        if (rc == 0)
            rc = rd_end(&r, "Truncate", err);
        goto done;
    case 'M': {
        what = "Message";
        m->kind = PGO_MESSAGE;
        m->flags = rd_u8(&r);
        m->transactional = m->flags & 1;
        m->message_lsn = rd_u64(&r);
        m->prefix = rd_str(&r);
        const uint8_t *v;
        uint32_t n;
        if (!rd_bytes(&r, &v, &n))
            break;
        m->content = sl_malloc((size_t)n + 1);
        memcpy(m->content, v, n);
        m->content[n] = 0;
        m->content_len = n;
        break;
    }
    case 'S':
        what = "Stream Start";
        m->kind = PGO_STREAM_START;
        m->streamed = true;
        m->xid = rd_u32(&r);
        m->first_segment = rd_u8(&r) == 1;
        break;
    case 'E':
        what = "Stream Stop";
        m->kind = PGO_STREAM_STOP;
        break;
    case 'c':
        what = "Stream Commit";
        m->kind = PGO_STREAM_COMMIT;
        m->xid = rd_u32(&r);
        m->flags = rd_u8(&r);
        rd_lsns_time(&r, &m->commit_lsn, m);
        break;
    case 'A':
        what = "Stream Abort";
        m->kind = PGO_STREAM_ABORT;
        m->xid = rd_u32(&r);
        m->subxid = rd_u32(&r);
        /* v4 with streaming=parallel adds the abort LSN and time */
        if (!r.short_read && r.end - r.p == 16) {
            m->abort_lsn = rd_u64(&r);
            m->abort_time_ms = us_to_ms(pg_ts_to_unix_us(rd_u64(&r)));
        }
        break;
    case 'b':
        what = "Begin Prepare";
        m->kind = PGO_BEGIN_PREPARE;
        rd_lsns_time(&r, &m->final_lsn, m);
        rd_xid_gid(&r, m);
        break;
    case 'P':
    case 'p':
    case 'K':
        what = type == 'K' ? "Commit Prepared" : type == 'P' ? "Prepare" : "Stream Prepare";
        m->kind = type == 'K' ? PGO_COMMIT_PREPARED : type == 'P' ? PGO_PREPARE : PGO_STREAM_PREPARE;
        m->flags = rd_u8(&r);
        rd_lsns_time(&r, type == 'K' ? &m->commit_lsn : &m->final_lsn, m);
        rd_xid_gid(&r, m);
        break;
    case 'r':
        what = "Rollback Prepared";
        m->kind = PGO_ROLLBACK_PREPARED;
        m->flags = rd_u8(&r);
        rd_lsns_time(&r, &m->final_lsn, m);
        m->abort_time_ms = us_to_ms(pg_ts_to_unix_us(rd_u64(&r)));
        rd_xid_gid(&r, m);
        break;
    default:
        return sl_err_set(err, SL_EPROTO, false, "unknown pgoutput message type 0x%02x",
                          (unsigned)(uint8_t)type);
    }
    rc = rd_end(&r, what, err);
done:
    if (rc < 0) {
        sl__pgo_msg_destroy(m);
        return rc;
    }
    m->commit_time_ms = us_to_ms(m->commit_time_us);
    if (type == 'S')
        d->in_stream = true;
    else if (type == 'E')
        d->in_stream = false;
    return 0;
}
