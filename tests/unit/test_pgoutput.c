/* pgoutput decoder: hand-built messages of every type, values of every
 * supported type in text and binary form, and malformed input (every
 * prefix of every valid message, corrupted lengths) failing cleanly. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../pollers/postgres/pgoutput.h"

/* ---- message builder ---- */

struct mb {
    uint8_t b[8192];
    size_t  n;
};

static void u8(struct mb *m, uint8_t v) { m->b[m->n++] = v; }
static void u16(struct mb *m, uint16_t v) { u8(m, v >> 8), u8(m, v & 255); }
static void u32(struct mb *m, uint32_t v) { u16(m, v >> 16), u16(m, v & 0xffff); }
static void u64(struct mb *m, uint64_t v) { u32(m, v >> 32), u32(m, (uint32_t)v); }
static void bytes(struct mb *m, const void *p, size_t n) { memcpy(m->b + m->n, p, n), m->n += n; }
static void str(struct mb *m, const char *s) { bytes(m, s, strlen(s) + 1); }

struct colspec {
    uint8_t     flags;
    const char *name;
    uint32_t    type;
};

static void relation(struct mb *m, uint32_t oid, const char *schema, const char *name, char ri,
                     const struct colspec *c, size_t n)
{
    u8(m, 'R'), u32(m, oid), str(m, schema), str(m, name), u8(m, (uint8_t)ri), u16(m, (uint16_t)n);
    for (size_t i = 0; i < n; i++)
        u8(m, c[i].flags), str(m, c[i].name), u32(m, c[i].type), u32(m, 0xffffffff);
}

/* one tuple column: kind 'n'/'u', or 't'/'b' with its bytes */
static void tcol(struct mb *m, char kind, const void *v, size_t n)
{
    u8(m, (uint8_t)kind);
    if (kind == 't' || kind == 'b')
        u32(m, (uint32_t)n), bytes(m, v, n);
}
static void ttext(struct mb *m, const char *s) { tcol(m, 't', s, strlen(s)); }

/* ---- decode helpers ---- */

static struct pgo_decoder *d;
static struct pgo_msg msg;
static struct sl_err err;

static void setup(void) { d = sl__pgo_new(); memset(&msg, 0, sizeof(msg)); sl_err_clear(&err); }
static void teardown(void) { sl__pgo_msg_destroy(&msg); sl__pgo_free(d); }

TestSuite(pgoutput, .init = setup, .fini = teardown);

/* decodes from an exact-size heap copy so an over-read trips ASan */
static int dec(const struct mb *m)
{
    uint8_t *copy = malloc(m->n ? m->n : 1);
    memcpy(copy, m->b, m->n);
    sl__pgo_msg_destroy(&msg);
    int rc = sl__pgo_decode(d, copy, m->n, &msg, &err);
    free(copy);
    return rc;
}

static void ok(const struct mb *m)
{
    int rc = dec(m);
    cr_assert_eq(rc, 0, "decode failed: %s", err.msg);
}

static void valid_json(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    /* numeric has up to 131072 digits: valid JSON that jansson cannot hold */
    if (!j && strstr(je.text, "overflow"))
        return;
    cr_assert(j, "not valid JSON (%s): %s", je.text, s);
    json_decref(j);
}

/* ---- transaction messages ---- */

Test(pgoutput, begin_commit)
{
    struct mb m = {0};
    u8(&m, 'B'), u64(&m, 0x16B3748), u64(&m, 762527655123400ULL), u32(&m, 742);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_BEGIN);
    cr_assert_eq(msg.final_lsn, 0x16B3748);
    cr_assert_eq(msg.xid, 742);
    cr_assert_eq(msg.commit_time_us, 946684800000000LL + 762527655123400LL);
    cr_assert_eq(msg.commit_time_ms, 1709212455123LL);    /* 2024-02-29T13:14:15.123Z */

    m.n = 0;
    u8(&m, 'C'), u8(&m, 0), u64(&m, 0x16B3748), u64(&m, 0x16B3778), u64(&m, 1);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_COMMIT);
    cr_assert_eq(msg.commit_lsn, 0x16B3748);
    cr_assert_eq(msg.end_lsn, 0x16B3778);
    cr_assert_eq(msg.commit_time_ms, 946684800000LL);
    cr_assert_str_eq(sl__pgo_kind_name(msg.kind), "COMMIT");
}

Test(pgoutput, before_epoch_time_rounds_down)
{
    struct mb m = {0};
    u8(&m, 'B'), u64(&m, 1), u64(&m, (uint64_t)(int64_t)-946684800000500LL), u32(&m, 1);
    ok(&m);
    cr_assert_eq(msg.commit_time_us, -500);
    cr_assert_eq(msg.commit_time_ms, -1);
}

Test(pgoutput, origin_type_message)
{
    struct mb m = {0};
    u8(&m, 'O'), u64(&m, 99), str(&m, "pg_16390");
    ok(&m);
    cr_assert_eq(msg.kind, PGO_ORIGIN);
    cr_assert_eq(msg.origin_lsn, 99);
    cr_assert_str_eq(msg.origin, "pg_16390");

    m.n = 0;
    u8(&m, 'Y'), u32(&m, 16400), str(&m, "public"), str(&m, "mood");
    ok(&m);
    cr_assert_eq(msg.kind, PGO_TYPE);
    cr_assert_eq(msg.type_oid, 16400);
    cr_assert_str_eq(msg.type_schema, "public");
    cr_assert_str_eq(msg.type_name, "mood");

    m.n = 0;
    u8(&m, 'M'), u8(&m, 1), u64(&m, 0xABC), str(&m, "sluice"), u32(&m, 3), bytes(&m, "h\0i", 3);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_MESSAGE);
    cr_assert(msg.transactional);
    cr_assert_eq(msg.message_lsn, 0xABC);
    cr_assert_str_eq(msg.prefix, "sluice");
    cr_assert_eq(msg.content_len, 3);
    cr_assert_eq(memcmp(msg.content, "h\0i", 4), 0);

    m.n = 0;
    u8(&m, 'M'), u8(&m, 0), u64(&m, 1), str(&m, ""), u32(&m, 0);
    ok(&m);
    cr_assert(!msg.transactional);
    cr_assert_eq(msg.content_len, 0);
    cr_assert_str_eq(msg.content, "");
}

static const struct colspec users[] = {
    {1, "id", 23}, {0, "name", 25}, {0, "doc", 3802},
};

static void load_users(char ri)
{
    struct mb m = {0};
    relation(&m, 16384, "public", "users", ri, users, 3);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_RELATION);
    cr_assert_eq(msg.rel->oid, 16384);
    cr_assert_str_eq(msg.rel->schema, "public");
    cr_assert_str_eq(msg.rel->name, "users");
    cr_assert_eq(msg.rel->ncols, 3);
    cr_assert(msg.rel->cols[0].is_key);
    cr_assert(!msg.rel->cols[1].is_key);
    cr_assert_eq(msg.rel->cols[2].type_oid, 3802);
}

Test(pgoutput, relation_and_insert_text)
{
    load_users('d');
    struct mb m = {0};
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3);
    ttext(&m, "7"), ttext(&m, "Zoë \"q\"\n"), ttext(&m, "{\"a\": [1, 2.50]}");
    ok(&m);
    cr_assert_eq(msg.kind, PGO_INSERT);
    cr_assert_str_eq(msg.rel->name, "users");
    cr_assert_str_eq(msg.new_image, "{\"id\":7,\"name\":\"Zoë \\\"q\\\"\\n\",\"doc\":{\"a\": [1, 2.50]}}");
    cr_assert_str_eq(msg.keys, "{\"id\":7}");
    cr_assert_null(msg.old_image);
    cr_assert_eq(msg.n_unchanged, 0);
    cr_assert(!msg.streamed);
}

Test(pgoutput, empty_schema_is_pg_catalog)
{
    struct mb m = {0};
    relation(&m, 5, "", "t", 'n', users, 1);
    ok(&m);
    cr_assert_str_eq(msg.rel->schema, "pg_catalog");
    cr_assert_eq(msg.rel->replica_identity, 'n');
}

Test(pgoutput, update_key_old_and_toast)
{
    load_users('d');
    struct mb m = {0};
    /* key changed: 'K' old tuple (non-key columns null), new tuple with an unchanged TOAST doc */
    u8(&m, 'U'), u32(&m, 16384), u8(&m, 'K'), u16(&m, 3);
    ttext(&m, "7"), tcol(&m, 'n', NULL, 0), tcol(&m, 'n', NULL, 0);
    u8(&m, 'N'), u16(&m, 3), ttext(&m, "8"), tcol(&m, 'n', NULL, 0), tcol(&m, 'u', NULL, 0);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_UPDATE);
    cr_assert(msg.old_is_key_only);
    cr_assert_str_eq(msg.old_image, "{\"id\":7}");
    cr_assert_str_eq(msg.new_image, "{\"id\":8,\"name\":null}");
    cr_assert_str_eq(msg.keys, "{\"id\":8}");
    cr_assert_eq(msg.n_unchanged, 1);
    cr_assert_str_eq(msg.unchanged_toast[0], "doc");

    /* plain update: no old tuple */
    m.n = 0;
    u8(&m, 'U'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3);
    ttext(&m, "8"), ttext(&m, "x"), tcol(&m, 'u', NULL, 0);
    ok(&m);
    cr_assert_null(msg.old_image);
    cr_assert_str_eq(msg.new_image, "{\"id\":8,\"name\":\"x\"}");
    cr_assert_eq(msg.n_unchanged, 1);
}

Test(pgoutput, update_full_fills_toast_from_old)
{
    load_users('f');
    struct mb m = {0};
    u8(&m, 'U'), u32(&m, 16384), u8(&m, 'O'), u16(&m, 3);
    ttext(&m, "7"), ttext(&m, "a"), ttext(&m, "[1]");
    u8(&m, 'N'), u16(&m, 3), ttext(&m, "7"), ttext(&m, "b"), tcol(&m, 'u', NULL, 0);
    ok(&m);
    cr_assert(!msg.old_is_key_only);
    cr_assert_str_eq(msg.old_image, "{\"id\":7,\"name\":\"a\",\"doc\":[1]}");
    cr_assert_str_eq(msg.new_image, "{\"id\":7,\"name\":\"b\",\"doc\":[1]}");
    cr_assert_eq(msg.n_unchanged, 0);
}

Test(pgoutput, delete_key_and_full)
{
    load_users('d');
    struct mb m = {0};
    u8(&m, 'D'), u32(&m, 16384), u8(&m, 'K'), u16(&m, 3);
    ttext(&m, "7"), tcol(&m, 'n', NULL, 0), tcol(&m, 'n', NULL, 0);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_DELETE);
    cr_assert_str_eq(msg.old_image, "{\"id\":7}");
    cr_assert_str_eq(msg.keys, "{\"id\":7}");
    cr_assert_null(msg.new_image);

    m.n = 0;
    u8(&m, 'D'), u32(&m, 16384), u8(&m, 'O'), u16(&m, 3);
    ttext(&m, "7"), ttext(&m, "z"), tcol(&m, 'n', NULL, 0);
    ok(&m);
    cr_assert_str_eq(msg.old_image, "{\"id\":7,\"name\":\"z\",\"doc\":null}");
    cr_assert_str_eq(msg.keys, "{\"id\":7}");
}

Test(pgoutput, set_key_columns_overrides_full_identity)
{
    /* REPLICA IDENTITY FULL: the server flags every column */
    static const struct colspec all[] = {{1, "id", 23}, {1, "name", 25}};
    struct mb m = {0};
    relation(&m, 77, "public", "f", 'f', all, 2);
    ok(&m);
    m.n = 0;
    u8(&m, 'D'), u32(&m, 77), u8(&m, 'O'), u16(&m, 2), ttext(&m, "1"), ttext(&m, "a");
    ok(&m);
    cr_assert_str_eq(msg.keys, "{\"id\":1,\"name\":\"a\"}");

    const char *pk[] = {"id"};
    cr_assert_eq(sl__pgo_set_key_columns(d, 77, pk, 1), 0);
    ok(&m);
    cr_assert_str_eq(msg.keys, "{\"id\":1}");
    /* a re-sent Relation keeps the override */
    struct mb r = {0};
    relation(&r, 77, "public", "f", 'f', all, 2);
    ok(&r);
    ok(&m);
    cr_assert_str_eq(msg.keys, "{\"id\":1}");
}

Test(pgoutput, nothing_identity_has_no_keys)
{
    static const struct colspec c[] = {{0, "v", 25}};
    struct mb m = {0};
    relation(&m, 9, "s", "t", 'n', c, 1);
    ok(&m);
    m.n = 0;
    u8(&m, 'I'), u32(&m, 9), u8(&m, 'N'), u16(&m, 1), ttext(&m, "v");
    ok(&m);
    cr_assert_null(msg.keys);
    cr_assert_str_eq(msg.new_image, "{\"v\":\"v\"}");
}

Test(pgoutput, relation_resend_replaces)
{
    load_users('d');
    static const struct colspec two[] = {{1, "id", 23}, {0, "name", 25}};
    struct mb m = {0};
    relation(&m, 16384, "public", "users", 'd', two, 2);
    ok(&m);
    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 2), ttext(&m, "1"), ttext(&m, "n");
    ok(&m);
    cr_assert_str_eq(msg.new_image, "{\"id\":1,\"name\":\"n\"}");
}

Test(pgoutput, many_relations)
{
    static const struct colspec c[] = {{1, "id", 20}};
    struct mb m = {0};
    for (uint32_t oid = 1000; oid < 1100; oid++) {
        m.n = 0;
        relation(&m, oid, "s", "t", 'd', c, 1);
        ok(&m);
    }
    for (uint32_t oid = 1000; oid < 1100; oid++) {
        m.n = 0;
        char v[16];
        snprintf(v, sizeof(v), "%u", oid);
        u8(&m, 'I'), u32(&m, oid), u8(&m, 'N'), u16(&m, 1), ttext(&m, v);
        ok(&m);
        cr_assert_eq(msg.rel->oid, oid);
    }
}

Test(pgoutput, truncate)
{
    load_users('d');
    struct mb m = {0};
    relation(&m, 16385, "public", "orders", 'd', users, 1);
    ok(&m);
    m.n = 0;
    u8(&m, 'T'), u32(&m, 2), u8(&m, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
    u32(&m, 16384), u32(&m, 16385);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_TRUNCATE);
    cr_assert_eq(msg.n_truncated, 2);
    cr_assert_str_eq(msg.truncated[0]->name, "users");
    cr_assert_str_eq(msg.truncated[1]->name, "orders");
    cr_assert_eq(msg.truncate_options, 3);

    m.n = 0;
    u8(&m, 'T'), u32(&m, 1), u8(&m, 0), u32(&m, 5555);
    cr_assert_eq(dec(&m), SL_EPROTO);
    cr_assert(strstr(err.msg, "unknown relation id 5555"), "%s", err.msg);
}

Test(pgoutput, streaming_blocks)
{
    struct mb m = {0};
    u8(&m, 'S'), u32(&m, 900), u8(&m, 1);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_STREAM_START);
    cr_assert_eq(msg.xid, 900);
    cr_assert(msg.first_segment);

    /* inside the block Relation and changes carry the xid first */
    m.n = 0;
    u8(&m, 'R'), u32(&m, 900), u32(&m, 16384), str(&m, "public"), str(&m, "users"), u8(&m, 'd');
    u16(&m, 1), u8(&m, 1), str(&m, "id"), u32(&m, 23), u32(&m, 0xffffffff);
    ok(&m);
    cr_assert(msg.streamed);
    cr_assert_eq(msg.xid, 900);
    m.n = 0;
    u8(&m, 'I'), u32(&m, 900), u32(&m, 16384), u8(&m, 'N'), u16(&m, 1), ttext(&m, "5");
    ok(&m);
    cr_assert(msg.streamed);
    cr_assert_eq(msg.xid, 900);
    cr_assert_str_eq(msg.new_image, "{\"id\":5}");
    m.n = 0;
    u8(&m, 'M'), u32(&m, 900), u8(&m, 1), u64(&m, 1), str(&m, "p"), u32(&m, 0);
    ok(&m);
    cr_assert_eq(msg.xid, 900);

    m.n = 0;
    u8(&m, 'E');
    ok(&m);
    cr_assert_eq(msg.kind, PGO_STREAM_STOP);

    /* after Stop, no xid again */
    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 1), ttext(&m, "6");
    ok(&m);
    cr_assert(!msg.streamed);

    m.n = 0;
    u8(&m, 'c'), u32(&m, 900), u8(&m, 0), u64(&m, 10), u64(&m, 20), u64(&m, 0);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_STREAM_COMMIT);
    cr_assert_eq(msg.xid, 900);
    cr_assert_eq(msg.commit_lsn, 10);
    cr_assert_eq(msg.end_lsn, 20);

    m.n = 0;
    u8(&m, 'A'), u32(&m, 900), u32(&m, 901);
    ok(&m);
    cr_assert_eq(msg.kind, PGO_STREAM_ABORT);
    cr_assert_eq(msg.subxid, 901);
    cr_assert_eq(msg.abort_lsn, 0);
    u64(&m, 0x55), u64(&m, 0);
    ok(&m);
    cr_assert_eq(msg.abort_lsn, 0x55);
    cr_assert_eq(msg.abort_time_ms, 946684800000LL);
}

Test(pgoutput, two_phase)
{
    struct mb m = {0};
    u8(&m, 'b'), u64(&m, 1), u64(&m, 2), u64(&m, 0), u32(&m, 7), str(&m, "gid1");
    ok(&m);
    cr_assert_eq(msg.kind, PGO_BEGIN_PREPARE);
    cr_assert_eq(msg.final_lsn, 1);
    cr_assert_eq(msg.end_lsn, 2);
    cr_assert_str_eq(msg.gid, "gid1");
    for (const char *t = "PpK"; *t; t++) {
        m.n = 0;
        u8(&m, (uint8_t)*t), u8(&m, 0), u64(&m, 3), u64(&m, 4), u64(&m, 0), u32(&m, 7), str(&m, "g");
        ok(&m);
        cr_assert_eq(msg.kind, *t == 'P' ? PGO_PREPARE : *t == 'p' ? PGO_STREAM_PREPARE
                                                                    : PGO_COMMIT_PREPARED);
        cr_assert_eq(msg.end_lsn, 4);
        cr_assert_eq(*t == 'K' ? msg.commit_lsn : msg.final_lsn, 3);
        cr_assert_eq(msg.xid, 7);
    }
    m.n = 0;
    u8(&m, 'r'), u8(&m, 0), u64(&m, 5), u64(&m, 6), u64(&m, 0), u64(&m, 1000), u32(&m, 7),
        str(&m, "g");
    ok(&m);
    cr_assert_eq(msg.kind, PGO_ROLLBACK_PREPARED);
    cr_assert_eq(msg.final_lsn, 5);
    cr_assert_eq(msg.end_lsn, 6);
    cr_assert_eq(msg.abort_time_ms, 946684800001LL);
}

/* ---- values ---- */

/* Insert one column of type `type` with the given tuple column, return image */
static int one_value(uint32_t type, char kind, const void *v, size_t n)
{
    static uint32_t next = 50000;
    struct colspec c = {1, "v", type};
    struct mb m = {0};
    uint32_t oid = next++;
    relation(&m, oid, "s", "t", 'd', &c, 1);
    ok(&m);
    m.n = 0;
    u8(&m, 'I'), u32(&m, oid), u8(&m, 'N'), u16(&m, 1), tcol(&m, kind, v, n);
    return dec(&m);
}

static void text_is(uint32_t type, const char *in, const char *json)
{
    int rc = one_value(type, 't', in, strlen(in));
    cr_assert_eq(rc, 0, "type %u text '%s': %s", type, in, err.msg);
    char want[4096];
    snprintf(want, sizeof(want), "{\"v\":%s}", json);
    cr_assert_str_eq(msg.new_image, want, "type %u text '%s'", type, in);
    valid_json(msg.new_image);
}

static void bin_is(uint32_t type, const void *v, size_t n, const char *json)
{
    int rc = one_value(type, 'b', v, n);
    cr_assert_eq(rc, 0, "type %u binary: %s", type, err.msg);
    char want[4096];
    snprintf(want, sizeof(want), "{\"v\":%s}", json);
    cr_assert_str_eq(msg.new_image, want, "type %u binary", type);
    valid_json(msg.new_image);
}

Test(pgoutput, text_scalars)
{
    text_is(16, "t", "true");
    text_is(16, "f", "false");
    text_is(21, "-32768", "-32768");
    text_is(23, "2147483647", "2147483647");
    text_is(20, "-9223372036854775808", "-9223372036854775808");
    text_is(26, "4294967295", "4294967295");
    text_is(1700, "12345678901234567890.123456789012345678", "12345678901234567890.123456789012345678");
    text_is(1700, "NaN", "\"NaN\"");
    text_is(1700, "-Infinity", "\"-Infinity\"");
    text_is(701, "1e+30", "1e+30");
    text_is(701, "-0", "-0");
    text_is(700, "Infinity", "\"Infinity\"");
    text_is(701, "NaN", "\"NaN\"");
    text_is(25, "tab\there \\ \x01 \xc3\xa9", "\"tab\\there \\\\ \\u0001 \xc3\xa9\"");
    text_is(1043, "bad \xff utf8 \xc3", "\"bad \xef\xbf\xbd utf8 \xef\xbf\xbd\"");
    text_is(1042, "ab  ", "\"ab  \"");
    text_is(19, "pg_class", "\"pg_class\"");
    text_is(18, "x", "\"x\"");
    text_is(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
    text_is(114, " {\"k\" : [true,null,-1.5e3]} ", " {\"k\" : [true,null,-1.5e3]} ");
    text_is(3802, "\"s\"", "\"s\"");
    text_is(114, "{bad json", "\"{bad json\"");
    text_is(17, "\\x", "\"\"");
    text_is(17, "\\x00ff10", "\"AP8Q\"");
    text_is(17, "\\xDEADbeef", "\"3q2+7w==\"");
    text_is(17, "ab\\\\c\\001", "\"YWJcYwE=\"");
    text_is(1083, "13:14:15.5", "\"13:14:15.5\"");
    text_is(1266, "13:14:15+02", "\"13:14:15+02\"");
    text_is(1186, "1 year 2 mons 3 days 04:05:06", "\"1 year 2 mons 3 days 04:05:06\"");
    text_is(16400, "happy", "\"happy\"");         /* enum: unknown OID, as text */
    text_is(869, "192.168.0.1/24", "\"192.168.0.1/24\"");
}

Test(pgoutput, text_bad_bytea_is_an_error)
{
    cr_assert_eq(one_value(17, 't', "\\x0", 3), SL_EPROTO);
    cr_assert(strstr(err.msg, "bytea"), "%s", err.msg);
    cr_assert(strstr(err.msg, "s.t.v"), "%s", err.msg);
}

Test(pgoutput, text_dates_and_times)
{
    text_is(1082, "2024-02-29", "\"2024-02-29\"");
    text_is(1082, "0044-03-15 BC", "\"-0043-03-15\"");
    text_is(1082, "0001-01-01 BC", "\"0000-01-01\"");
    text_is(1082, "infinity", "\"infinity\"");
    text_is(1082, "-infinity", "\"-infinity\"");
    text_is(1082, "12345-01-01", "\"+12345-01-01\"");
    text_is(1114, "2024-02-29 13:14:15.1234", "\"2024-02-29T13:14:15.1234\"");
    text_is(1114, "2024-02-29 13:14:15", "\"2024-02-29T13:14:15\"");
    text_is(1184, "2024-02-29 13:14:15.123456+00", "\"2024-02-29T13:14:15.123456Z\"");
    text_is(1184, "2024-03-01 01:00:00+05:30", "\"2024-02-29T19:30:00Z\"");
    text_is(1184, "1999-12-31 23:00:00-02", "\"2000-01-01T01:00:00Z\"");
    text_is(1184, "1900-01-01 00:00:00+00:09:21", "\"1899-12-31T23:50:39Z\"");
    text_is(1184, "infinity", "\"infinity\"");
    /* not the ISO DateStyle: kept as text rather than guessed */
    text_is(1184, "Thu Feb 29 13:14:15 2024 UTC", "\"Thu Feb 29 13:14:15 2024 UTC\"");
}

Test(pgoutput, text_arrays)
{
    text_is(1007, "{1,2,NULL,-3}", "[1,2,null,-3]");
    text_is(1007, "{}", "[]");
    text_is(1007, "{{1,2},{3,4}}", "[[1,2],[3,4]]");
    text_is(1007, "[0:1]={5,6}", "[5,6]");
    text_is(1009, "{a,\"b c\",\"NULL\",NULL,\"q\\\"x\\\\y\",\" sp \"}",
            "[\"a\",\"b c\",\"NULL\",null,\"q\\\"x\\\\y\",\" sp \"]");
    text_is(1009, "{{a,b},{c,d}}", "[[\"a\",\"b\"],[\"c\",\"d\"]]");
    text_is(1000, "{t,f}", "[true,false]");
    text_is(1231, "{1.50,NaN}", "[1.50,\"NaN\"]");
    text_is(3807, "{\"{\\\"a\\\": 1}\",\"[]\"}", "[{\"a\": 1},[]]");
    text_is(1001, "{\"\\\\x00ff\"}", "[\"AP8=\"]");
    text_is(1185, "{\"2024-02-29 13:14:15+00\",infinity}", "[\"2024-02-29T13:14:15Z\",\"infinity\"]");
    text_is(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "[\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"]");
    /* malformed literals are kept whole as a string */
    text_is(1007, "{1,2", "\"{1,2\"");
    text_is(1007, "{1,,2}", "\"{1,,2}\"");
    text_is(1007, "1,2}", "\"1,2}\"");
}

Test(pgoutput, text_enum_array_with_alias)
{
    cr_assert_eq(sl__pgo_type_alias(d, 16401, 1009), 0);
    text_is(16401, "{happy,sad}", "[\"happy\",\"sad\"]");
    cr_assert_eq(sl__pgo_type_alias(d, 16402, 99999), SL_EINVAL);
}

static void be(uint8_t *o, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        o[i] = (uint8_t)v;
}

Test(pgoutput, binary_scalars)
{
    uint8_t b[64];
    bin_is(16, "\1", 1, "true");
    bin_is(16, "\0", 1, "false");
    be(b, (uint16_t)-2, 2), bin_is(21, b, 2, "-2");
    be(b, (uint32_t)INT32_MIN, 4), bin_is(23, b, 4, "-2147483648");
    be(b, 0xffffffff, 4), bin_is(26, b, 4, "4294967295");
    be(b, (uint64_t)INT64_MIN, 8), bin_is(20, b, 8, "-9223372036854775808");
    float f = 0.1f;
    uint32_t fu;
    memcpy(&fu, &f, 4), be(b, fu, 4), bin_is(700, b, 4, "0.1");
    double g = 0.1;
    uint64_t gu;
    memcpy(&gu, &g, 8), be(b, gu, 8), bin_is(701, b, 8, "0.1");
    g = 1e300, memcpy(&gu, &g, 8), be(b, gu, 8), bin_is(701, b, 8, "1e+300");
    g = 1.0 / 3, memcpy(&gu, &g, 8), be(b, gu, 8), bin_is(701, b, 8, "0.3333333333333333");
    g = -1.0 / 0.0, memcpy(&gu, &g, 8), be(b, gu, 8), bin_is(701, b, 8, "\"-Infinity\"");
    g = 0.0 / 0.0, memcpy(&gu, &g, 8), be(b, gu, 8), bin_is(701, b, 8, "\"NaN\"");
    bin_is(25, "h\"i", 3, "\"h\\\"i\"");
    bin_is(1043, "\xff", 1, "\"\xef\xbf\xbd\"");
    bin_is(1042, "ab ", 3, "\"ab \"");
    bin_is(19, "nm", 2, "\"nm\"");
    bin_is(18, "x", 1, "\"x\"");
    bin_is(18, "\xe9", 1, "\"\\\\351\"");
    bin_is(17, "", 0, "\"\"");
    bin_is(17, "\x00\xff\x10", 3, "\"AP8Q\"");
    bin_is(17, "ab", 2, "\"YWI=\"");
    bin_is(2950, "\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16,
           "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
    bin_is(114, "{\"a\":1}", 7, "{\"a\":1}");
    bin_is(3802, "\1{\"a\": 1}", 9, "{\"a\": 1}");
}

Test(pgoutput, binary_numeric)
{
    uint8_t b[64];
    /* 12345.678 = 1|2345|6780, weight 1, dscale 3 */
    be(b, 3, 2), be(b + 2, 1, 2), be(b + 4, 0, 2), be(b + 6, 3, 2);
    be(b + 8, 1, 2), be(b + 10, 2345, 2), be(b + 12, 6780, 2);
    bin_is(1700, b, 14, "12345.678");
    /* -0.0012 = 12 at weight -1, dscale 4 */
    be(b, 1, 2), be(b + 2, (uint16_t)-1, 2), be(b + 4, 0x4000, 2), be(b + 6, 4, 2), be(b + 8, 12, 2);
    bin_is(1700, b, 10, "-0.0012");
    /* 1.50 (dscale keeps the trailing zero), 1e8 (trailing zero groups not sent) */
    be(b, 2, 2), be(b + 2, 0, 2), be(b + 4, 0, 2), be(b + 6, 2, 2), be(b + 8, 1, 2), be(b + 10, 5000, 2);
    bin_is(1700, b, 12, "1.50");
    be(b, 1, 2), be(b + 2, 2, 2), be(b + 4, 0, 2), be(b + 6, 0, 2), be(b + 8, 1, 2);
    bin_is(1700, b, 10, "100000000");
    be(b, 0, 2), be(b + 2, 0, 2), be(b + 4, 0, 2), be(b + 6, 0, 2);
    bin_is(1700, b, 8, "0");
    be(b + 6, 2, 2), bin_is(1700, b, 8, "0.00");
    be(b + 4, 0xC000, 2), bin_is(1700, b, 8, "\"NaN\"");
    be(b + 4, 0xD000, 2), bin_is(1700, b, 8, "\"Infinity\"");
    be(b + 4, 0xF000, 2), bin_is(1700, b, 8, "\"-Infinity\"");
    /* digit out of range, bad sign, length mismatch */
    be(b, 1, 2), be(b + 2, 0, 2), be(b + 4, 0, 2), be(b + 6, 0, 2), be(b + 8, 10000, 2);
    cr_assert_eq(one_value(1700, 'b', b, 10), SL_EPROTO);
    be(b + 8, 1, 2), be(b + 4, 0x1234, 2);
    cr_assert_eq(one_value(1700, 'b', b, 10), SL_EPROTO);
    be(b + 4, 0, 2);
    cr_assert_eq(one_value(1700, 'b', b, 9), SL_EPROTO);
}

Test(pgoutput, binary_dates_and_times)
{
    uint8_t b[16];
    be(b, 8825, 4), bin_is(1082, b, 4, "\"2024-02-29\"");
    be(b, (uint32_t)-1, 4), bin_is(1082, b, 4, "\"1999-12-31\"");
    be(b, (uint32_t)-746117, 4), bin_is(1082, b, 4, "\"-0043-03-15\"");
    be(b, INT32_MAX, 4), bin_is(1082, b, 4, "\"infinity\"");
    be(b, (uint32_t)INT32_MIN, 4), bin_is(1082, b, 4, "\"-infinity\"");
    be(b, 762527655123400ULL, 8), bin_is(1184, b, 8, "\"2024-02-29T13:14:15.1234Z\"");
    bin_is(1114, b, 8, "\"2024-02-29T13:14:15.1234\"");
    be(b, (uint64_t)-500000, 8), bin_is(1184, b, 8, "\"1999-12-31T23:59:59.5Z\"");
    be(b, INT64_MAX, 8), bin_is(1114, b, 8, "\"infinity\"");
    be(b, (uint64_t)INT64_MIN, 8), bin_is(1184, b, 8, "\"-infinity\"");
    be(b, 47655123400ULL, 8), bin_is(1083, b, 8, "\"13:14:15.1234\"");
    be(b, 86400000000ULL, 8), bin_is(1083, b, 8, "\"24:00:00\"");
    be(b + 8, (uint32_t)-19800, 4), bin_is(1266, b, 12, "\"24:00:00+05:30\"");
    be(b + 8, 3600, 4), bin_is(1266, b, 12, "\"24:00:00-01\"");
    /* interval: µs, days, months */
    be(b, 14706000000ULL, 8), be(b + 8, 3, 4), be(b + 12, 14, 4);
    bin_is(1186, b, 16, "\"1 year 2 mons 3 days 04:05:06\"");
    be(b, 0, 8), be(b + 8, 0, 4), be(b + 12, 0, 4), bin_is(1186, b, 16, "\"00:00:00\"");
    be(b, (uint64_t)-3600500000LL, 8), be(b + 8, (uint32_t)-1, 4), be(b + 12, 1, 4);
    bin_is(1186, b, 16, "\"1 mon -1 days -01:00:00.5\"");
    be(b, 7200000000ULL, 8), be(b + 8, (uint32_t)-1, 4), be(b + 12, 0, 4);
    bin_is(1186, b, 16, "\"-1 days +02:00:00\"");
    /* wrong sizes */
    cr_assert_eq(one_value(1082, 'b', b, 3), SL_EPROTO);
    cr_assert_eq(one_value(1184, 'b', b, 9), SL_EPROTO);
    be(b, (uint64_t)-1, 8);
    cr_assert_eq(one_value(1083, 'b', b, 8), SL_EPROTO);
}

/* binary array header + elements */
static size_t arr(uint8_t *o, uint32_t elem, int ndim, const int *dims, int nel, const int32_t *lens,
                  const char *const *vals)
{
    size_t k = 0;
    be(o + k, (uint32_t)ndim, 4), k += 4;
    bool nulls = false;
    for (int i = 0; i < nel; i++)
        nulls |= lens[i] < 0;
    be(o + k, nulls, 4), k += 4;
    be(o + k, elem, 4), k += 4;
    for (int i = 0; i < ndim; i++)
        be(o + k, (uint32_t)dims[i], 4), be(o + k + 4, 1, 4), k += 8;
    for (int i = 0; i < nel; i++) {
        be(o + k, (uint32_t)lens[i], 4), k += 4;
        if (lens[i] > 0)
            memcpy(o + k, vals[i], (size_t)lens[i]), k += (size_t)lens[i];
    }
    return k;
}

Test(pgoutput, binary_arrays)
{
    uint8_t b[512];
    int d1[] = {3};
    int32_t l1[] = {4, -1, 4};
    const char *v1[] = {"\0\0\0\1", NULL, "\xff\xff\xff\xfe"};
    bin_is(1007, b, arr(b, 23, 1, d1, 3, l1, v1), "[1,null,-2]");

    int d2[] = {2, 2};
    int32_t l2[] = {1, 1, 1, 0};
    const char *v2[] = {"a", "\"", "b", ""};
    bin_is(1009, b, arr(b, 25, 2, d2, 4, l2, v2), "[[\"a\",\"\\\"\"],[\"b\",\"\"]]");

    int d3[] = {2, 1, 2};
    int32_t l3[] = {1, 1, 1, 1};
    const char *v3[] = {"\1", "\0", "\0", "\1"};
    bin_is(1000, b, arr(b, 16, 3, d3, 4, l3, v3), "[[[true,false]],[[false,true]]]");

    bin_is(1007, b, arr(b, 23, 0, NULL, 0, NULL, NULL), "[]");
    int dz[] = {0};
    bin_is(1007, b, arr(b, 23, 1, dz, 0, NULL, NULL), "[]");

    int32_t lj[] = {8};
    const char *vj[] = {"\1[1,2.5]"};
    bin_is(3807, b, arr(b, 3802, 1, (int[]){1}, 1, lj, vj), "[[1,2.5]]");

    /* element of a type without a binary reader */
    size_t n = arr(b, 16400, 1, (int[]){1}, 1, (int32_t[]){1}, (const char *[]){"x"});
    cr_assert_eq(one_value(16401, 'b', b, n), SL_EUNSUPPORTED);
    cr_assert_eq(sl__pgo_type_alias(d, 16401, 1009), 0);
    cr_assert_eq(one_value(16401, 'b', b, n), SL_EUNSUPPORTED, "element type still unknown");
    cr_assert_eq(sl__pgo_type_alias(d, 16400, 25), 0);
    bin_is(16401, b, n, "[\"x\"]");

    /* lies about sizes */
    n = arr(b, 23, 1, d1, 3, l1, v1);
    cr_assert_eq(one_value(1007, 'b', b, n - 1), SL_EPROTO);
    cr_assert_eq(one_value(1007, 'b', b, n + 0) == 0, true);
    be(b + 12, 0x7fffffff, 4);
    cr_assert_eq(one_value(1007, 'b', b, n), SL_EPROTO);
    be(b + 12, 3, 4), be(b, 7, 4);
    cr_assert_eq(one_value(1007, 'b', b, n), SL_EPROTO);
}

Test(pgoutput, binary_unknown_type_unsupported)
{
    cr_assert_eq(one_value(869, 'b', "\2\40\0\4\300\250\0\1", 8), SL_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "869"), "%s", err.msg);
    cr_assert(!sl__pgo_type_binary_ok(d, 869));
    cr_assert(sl__pgo_type_binary_ok(d, 1700));
    cr_assert(sl__pgo_type_binary_ok(d, 1185));
    /* a domain over int4 */
    cr_assert_eq(sl__pgo_type_alias(d, 16500, 23), 0);
    bin_is(16500, "\0\0\0\x2a", 4, "42");
    /* jsonb of an unknown version */
    cr_assert_eq(one_value(3802, 'b', "\2{}", 3), SL_EUNSUPPORTED);
}

Test(pgoutput, mixed_text_and_binary_columns)
{
    static const struct colspec c[] = {{1, "id", 20}, {0, "t", 25}, {0, "x", 869}};
    struct mb m = {0};
    relation(&m, 3, "public", "mix", 'd', c, 3);
    ok(&m);
    m.n = 0;
    u8(&m, 'I'), u32(&m, 3), u8(&m, 'N'), u16(&m, 3);
    tcol(&m, 'b', "\0\0\0\0\0\0\0\x09", 8), tcol(&m, 'b', "hi", 2), ttext(&m, "10.0.0.1");
    ok(&m);
    cr_assert_str_eq(msg.new_image, "{\"id\":9,\"t\":\"hi\",\"x\":\"10.0.0.1\"}");
    cr_assert_str_eq(msg.keys, "{\"id\":9}");
}

/* ---- malformed input ---- */

static void fails(const struct mb *m, const char *needle)
{
    int rc = dec(m);
    cr_assert_eq(rc, SL_EPROTO, "expected failure containing '%s', got rc %d", needle, rc);
    cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle);
}

Test(pgoutput, malformed_messages)
{
    load_users('d');
    struct mb m = {0};
    fails(&m, "empty");
    u8(&m, 'Z');
    fails(&m, "unknown pgoutput message type 0x5a");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 4242), u8(&m, 'N'), u16(&m, 0);
    fails(&m, "unknown relation id 4242");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 2), ttext(&m, "1"), ttext(&m, "x");
    fails(&m, "tuple has 2 columns, relation public.users has 3");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3), ttext(&m, "1"), u8(&m, 'q');
    fails(&m, "unknown column kind 0x71 in column name");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3), ttext(&m, "1"), u8(&m, 't'), u32(&m, 1000);
    bytes(&m, "ab", 2);
    fails(&m, "value of column name runs past the end");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3), ttext(&m, "1"), u8(&m, 't'),
        u32(&m, 0xffffffff);
    fails(&m, "runs past the end");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'O'), u16(&m, 3);
    fails(&m, "expected new tuple 'N'");

    m.n = 0;
    u8(&m, 'D'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3);
    fails(&m, "expected old tuple");

    m.n = 0;
    u8(&m, 'U'), u32(&m, 16384), u8(&m, 'K'), u16(&m, 3), ttext(&m, "1"), tcol(&m, 'n', 0, 0),
        tcol(&m, 'n', 0, 0), u8(&m, 'K');
    fails(&m, "expected new tuple");

    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3), ttext(&m, "1"), ttext(&m, "x"),
        ttext(&m, "1"), u8(&m, 0);
    fails(&m, "trailing bytes");

    m.n = 0;
    u8(&m, 'C'), u8(&m, 0), u64(&m, 1), u64(&m, 2), u64(&m, 3), u8(&m, 9);
    fails(&m, "Commit message: 1 trailing bytes");

    m.n = 0;
    relation(&m, 1, "s", "t", 'x', users, 1);
    fails(&m, "unknown replica identity");

    m.n = 0;
    u8(&m, 'R'), u32(&m, 1), str(&m, "s"), str(&m, "t"), u8(&m, 'd'), u16(&m, 2000);
    fails(&m, "more than the 1664");

    m.n = 0;
    u8(&m, 'T'), u32(&m, 0x40000000), u8(&m, 0), u32(&m, 16384);
    fails(&m, "run past the end");

    m.n = 0;
    u8(&m, 'M'), u8(&m, 1), u64(&m, 1), str(&m, "p"), u32(&m, 10), bytes(&m, "abc", 3);
    fails(&m, "Message message: truncated");

    m.n = 0;
    u8(&m, 'O'), u64(&m, 1), bytes(&m, "no-nul", 6);
    fails(&m, "Origin message: truncated");

    m.n = 0;
    u8(&m, 'A'), u32(&m, 1), u32(&m, 2), u32(&m, 3);
    fails(&m, "trailing bytes");

    /* a failed message leaves the output empty and the cache usable */
    cr_assert_null(msg.new_image);
    m.n = 0;
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3), ttext(&m, "1"), ttext(&m, "x"),
        tcol(&m, 'n', 0, 0);
    ok(&m);
}

/* Every prefix of every valid message fails cleanly or decodes; flipping any
 * single byte does too. Run under ASan, over-reads are caught. */
Test(pgoutput, every_prefix_and_byte_flip)
{
    struct mb msgs[16];
    size_t nm = 0;
    memset(msgs, 0, sizeof(msgs));
    struct mb *m;

    m = &msgs[nm++];
    u8(m, 'B'), u64(m, 1), u64(m, 2), u32(m, 3);
    m = &msgs[nm++];
    u8(m, 'C'), u8(m, 0), u64(m, 1), u64(m, 2), u64(m, 3);
    m = &msgs[nm++];
    u8(m, 'O'), u64(m, 1), str(m, "origin");
    m = &msgs[nm++];
    u8(m, 'Y'), u32(m, 16400), str(m, "public"), str(m, "mood");
    m = &msgs[nm++];
    u8(m, 'M'), u8(m, 1), u64(m, 1), str(m, "pfx"), u32(m, 2), bytes(m, "ok", 2);
    m = &msgs[nm++];
    static const struct colspec c[] = {
        {1, "id", 23}, {0, "n", 1700}, {0, "a", 1007}, {0, "ts", 1184}, {0, "j", 3802}, {0, "b", 17},
    };
    relation(m, 16384, "public", "t", 'd', c, 6);
    m = &msgs[nm++];
    u8(m, 'I'), u32(m, 16384), u8(m, 'N'), u16(m, 6), ttext(m, "1"), ttext(m, "1.5"),
        ttext(m, "{{1,2},{NULL,4}}"), ttext(m, "2024-01-01 00:00:00+00"), ttext(m, "{\"a\":[1]}"),
        ttext(m, "\\x0102");
    m = &msgs[nm++];
    uint8_t ab[128];
    int dims[] = {2};
    size_t an = arr(ab, 23, 1, dims, 2, (int32_t[]){4, -1}, (const char *[]){"\0\0\0\1", NULL});
    u8(m, 'U'), u32(m, 16384), u8(m, 'O'), u16(m, 6), tcol(m, 'b', "\0\0\0\1", 4),
        tcol(m, 'b', "\0\1\0\0\0\0\0\1\0\1", 10), tcol(m, 'b', ab, an),
        tcol(m, 'b', "\0\0\0\0\0\0\0\0", 8), tcol(m, 'b', "\1{}", 3), tcol(m, 'b', "xy", 2);
    u8(m, 'N'), u16(m, 6), ttext(m, "1"), tcol(m, 'n', 0, 0), tcol(m, 'u', 0, 0), ttext(m, "infinity"),
        tcol(m, 'u', 0, 0), tcol(m, 'n', 0, 0);
    m = &msgs[nm++];
    u8(m, 'D'), u32(m, 16384), u8(m, 'K'), u16(m, 6), ttext(m, "1"), tcol(m, 'n', 0, 0),
        tcol(m, 'n', 0, 0), tcol(m, 'n', 0, 0), tcol(m, 'n', 0, 0), tcol(m, 'n', 0, 0);
    m = &msgs[nm++];
    u8(m, 'T'), u32(m, 1), u8(m, 1), u32(m, 16384);
    m = &msgs[nm++];
    u8(m, 'c'), u32(m, 1), u8(m, 0), u64(m, 1), u64(m, 2), u64(m, 3);
    m = &msgs[nm++];
    u8(m, 'A'), u32(m, 1), u32(m, 2), u64(m, 3), u64(m, 4);
    m = &msgs[nm++];
    u8(m, 'r'), u8(m, 0), u64(m, 1), u64(m, 2), u64(m, 3), u64(m, 4), u32(m, 5), str(m, "g");

    /* the full messages decode (the relation first) */
    for (size_t i = 0; i < nm; i++)
        ok(&msgs[i]);

    size_t decoded = 0, failed = 0;
    for (size_t i = 0; i < nm; i++) {
        struct mb cut = msgs[i];
        for (size_t len = 0; len < msgs[i].n; len++) {
            cut.n = len;
            int rc = dec(&cut);
            cr_assert(rc == 0 || rc == SL_EPROTO, "message %zu prefix %zu: rc %d", i, len, rc);
            if (rc == 0) {
                decoded++;
                if (msg.new_image)
                    valid_json(msg.new_image);
            } else {
                failed++;
                cr_assert(err.msg[0], "no error text");
            }
            ok(&msgs[5]);   /* a shorter Relation may have replaced the real one */
        }
        for (size_t pos = 0; pos < msgs[i].n; pos++)
            for (int bit = 0; bit < 8; bit++) {
                struct mb flip = msgs[i];
                flip.b[pos] ^= (uint8_t)(1u << bit);
                int rc = dec(&flip);
                cr_assert(rc == 0 || rc == SL_EPROTO || rc == SL_EUNSUPPORTED);
                for (const char *s = msg.new_image; s; s = NULL)
                    valid_json(s);
                for (const char *s = msg.old_image; s; s = NULL)
                    valid_json(s);
                for (const char *s = msg.keys; s; s = NULL)
                    valid_json(s);
                /* a flipped type byte may have started a stream block: end it */
                struct mb stop = {.n = 1, .b = {'E'}};
                ok(&stop);
                ok(&msgs[5]);
            }
    }
    cr_assert_gt(failed, 300);
}

/* ---- DynamoDB AttributeValue images (PGO_IMAGES_AV) ---- */

static void av_text_is(uint32_t type, const char *in, const char *av)
{
    sl__pgo_set_images(d, PGO_IMAGES_AV);
    text_is(type, in, av);
    sl__pgo_msg_destroy(&msg);
}

static void av_bin_is(uint32_t type, const void *v, size_t n, const char *av)
{
    sl__pgo_set_images(d, PGO_IMAGES_AV);
    bin_is(type, v, n, av);
    sl__pgo_msg_destroy(&msg);
}

Test(pgoutput, av_scalars)
{
    uint8_t b[64];
    double g;
    uint64_t gu;

    av_text_is(16, "t", "{\"BOOL\":true}");
    av_text_is(16, "f", "{\"BOOL\":false}");
    av_text_is(23, "-42", "{\"N\":\"-42\"}");
    av_text_is(1700, "12345.678", "{\"N\":\"12345.678\"}");
    av_text_is(1700, "NaN", "{\"S\":\"NaN\"}");
    av_text_is(1700, "Infinity", "{\"S\":\"Infinity\"}");
    av_text_is(701, "-Infinity", "{\"S\":\"-Infinity\"}");
    av_text_is(701, "1e+300", "{\"S\":\"1e+300\"}");              /* past DynamoDB's 1E+126 */
    av_text_is(701, "1.5e-07", "{\"N\":\"1.5e-07\"}");
    av_text_is(701, "1e-130", "{\"N\":\"1e-130\"}");
    av_text_is(701, "1e-131", "{\"S\":\"1e-131\"}");
    /* 38 significant digits fit, 39 do not; trailing zeros of the scale go when needed */
    av_text_is(1700, "12345678901234567890123456789012345678",
               "{\"N\":\"12345678901234567890123456789012345678\"}");
    av_text_is(1700, "123456789012345678901234567890123456789",
               "{\"S\":\"123456789012345678901234567890123456789\"}");
    av_text_is(1700, "123456789012345678.01234567890123456789000",
               "{\"N\":\"123456789012345678.01234567890123456789\"}");
    av_text_is(1700, "1234567890123456789.0123456789012345678900000",
               "{\"S\":\"1234567890123456789.0123456789012345678900000\"}");
    av_text_is(1700, "1234567890123456789012345678901234567.000",
               "{\"N\":\"1234567890123456789012345678901234567.0\"}");
    av_text_is(1700, "0.0000000000000000000000000000000000000000000000000000000000000000000000"
                     "00000000000000000000000000000000000000000000000000000000000000000000000000"
                     "0000000000000000000000000000000000",
               "{\"N\":\"0\"}");
    av_text_is(1700, "-0.000", "{\"N\":\"-0.000\"}");
    av_text_is(25, "h\"i", "{\"S\":\"h\\\"i\"}");
    av_text_is(25, "", "{\"S\":\"\"}");
    av_text_is(17, "\\xdeadbeef", "{\"B\":\"3q2+7w==\"}");
    av_text_is(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "{\"S\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"}");
    av_text_is(1184, "2024-02-03 04:05:06.789+00", "{\"S\":\"2024-02-03T04:05:06.789Z\"}");
    av_text_is(1186, "1 day 02:00:00", "{\"S\":\"1 day 02:00:00\"}");
    av_text_is(99999, "anything", "{\"S\":\"anything\"}");        /* unknown type: text */
    av_bin_is(16, "\1", 1, "{\"BOOL\":true}");
    be(b, (uint64_t)INT64_MIN, 8), av_bin_is(20, b, 8, "{\"N\":\"-9223372036854775808\"}");
    g = 0.0 / 0.0, memcpy(&gu, &g, 8), be(b, gu, 8), av_bin_is(701, b, 8, "{\"S\":\"NaN\"}");
    g = 0.1, memcpy(&gu, &g, 8), be(b, gu, 8), av_bin_is(701, b, 8, "{\"N\":\"0.1\"}");
    av_bin_is(17, "ab", 2, "{\"B\":\"YWI=\"}");
    av_bin_is(17, "", 0, "{\"B\":\"\"}");
}

Test(pgoutput, av_json_and_arrays)
{
    uint8_t b[512];
    int d1[] = {2};
    int32_t l1[] = {2, -1};
    const char *v1[] = {"ab", NULL};

    av_text_is(3802, "{\"a\": [1, \"x\", true, null, {\"b\": 2.50}], \"c\": {}}",
               "{\"M\":{\"a\":{\"L\":[{\"N\":\"1\"},{\"S\":\"x\"},{\"BOOL\":true},{\"NULL\":true},"
               "{\"M\":{\"b\":{\"N\":\"2.50\"}}}]},\"c\":{\"M\":{}}}}");
    av_text_is(114, "[]", "{\"L\":[]}");
    av_text_is(114, "\"s\"", "{\"S\":\"s\"}");
    av_text_is(114, "1e400", "{\"S\":\"1e400\"}");
    av_bin_is(3802, "\1{\"a\": 1}", 9, "{\"M\":{\"a\":{\"N\":\"1\"}}}");
    av_text_is(1007, "{1,NULL,-2}", "{\"L\":[{\"N\":\"1\"},{\"NULL\":true},{\"N\":\"-2\"}]}");
    av_text_is(1009, "{{a,\"b c\"},{\"\",NULL}}",
               "{\"L\":[{\"L\":[{\"S\":\"a\"},{\"S\":\"b c\"}]},{\"L\":[{\"S\":\"\"},{\"NULL\":true}]}]}");
    av_text_is(1009, "{}", "{\"L\":[]}");
    av_text_is(1001, "{\"\\\\x6162\"}", "{\"L\":[{\"B\":\"YWI=\"}]}");
    av_bin_is(1001, b, arr(b, 17, 1, d1, 2, l1, v1), "{\"L\":[{\"B\":\"YWI=\"},{\"NULL\":true}]}");
    av_text_is(1231, "{1.5,NaN}", "{\"L\":[{\"N\":\"1.5\"},{\"S\":\"NaN\"}]}");
}

Test(pgoutput, av_null_and_keys)
{
    struct mb m = {0};

    sl__pgo_set_images(d, PGO_IMAGES_AV);
    load_users('d');
    u8(&m, 'I'), u32(&m, 16384), u8(&m, 'N'), u16(&m, 3);
    ttext(&m, "7"), tcol(&m, 'n', NULL, 0), ttext(&m, "x");
    ok(&m);
    cr_assert_str_eq(msg.keys, "{\"id\":{\"N\":\"7\"}}");
    cr_assert(strstr(msg.new_image, ":{\"NULL\":true}") != NULL, "%s", msg.new_image);
}
