/* Native protocol frames: what sluice sends decodes as the protocol says,
 * and everything a handler might send is either a valid message or a
 * clean error, never a crash. */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/frame.h"

/* Build a frame body from a msgpack packer callback. */
static char *pack(void (*fn)(msgpack_packer *), size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

static void str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void ok_result(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 5);
    str(pk, "type"), str(pk, "result");
    str(pk, "request_id"), str(pk, "r-1");
    str(pk, "ok"), msgpack_pack_true(pk);
    str(pk, "payload"), msgpack_pack_bin_with_body(pk, "{\"a\":1}", 7);
    str(pk, "future_key"), msgpack_pack_int(pk, 42); /* unknown keys are ignored */
}

static void err_result(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    str(pk, "type"), str(pk, "result");
    str(pk, "request_id"), str(pk, "r-2");
    str(pk, "ok"), msgpack_pack_false(pk);
    str(pk, "error_type"), str(pk, "ValueError");
    str(pk, "error_message"), str(pk, "bad");
    str(pk, "stack"), msgpack_pack_array(pk, 1), str(pk, "line 1");
}

static void no_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    str(pk, "ok"), msgpack_pack_true(pk);
}

static void not_map(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    str(pk, "ready");
}

static void ok_not_bool(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    str(pk, "type"), str(pk, "result");
    str(pk, "request_id"), str(pk, "r");
    str(pk, "ok"), msgpack_pack_int(pk, 1);
    str(pk, "payload"), str(pk, "{}");
}

static void ok_without_payload(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    str(pk, "type"), str(pk, "result");
    str(pk, "request_id"), str(pk, "r");
    str(pk, "ok"), msgpack_pack_true(pk);
}

static void unknown_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    str(pk, "type"), str(pk, "hello");
}

static void request_id_int(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    str(pk, "type"), str(pk, "result");
    str(pk, "request_id"), msgpack_pack_int(pk, 7);
    str(pk, "ok"), msgpack_pack_true(pk);
    str(pk, "payload"), str(pk, "{}");
}

Test(frame, decodes_results)
{
    struct sl_msg m;
    char why[256];
    size_t len;
    char *b = pack(ok_result, &len);

    cr_assert_eq(sl_msg_decode(b, len, &m, why, sizeof(why)), 0, "%s", why);
    cr_expect_eq(m.type, SL_MSG_RESULT);
    cr_expect(m.ok);
    cr_expect_eq(m.request_id.n, 3);
    cr_expect_eq(memcmp(m.request_id.p, "r-1", 3), 0);
    cr_expect_eq(m.payload.n, 7);
    cr_expect_eq(memcmp(m.payload.p, "{\"a\":1}", 7), 0);
    sl_msg_destroy(&m);

    b = pack(err_result, &len);
    cr_assert_eq(sl_msg_decode(b, len, &m, why, sizeof(why)), 0, "%s", why);
    cr_expect_not(m.ok);
    cr_expect_eq(memcmp(m.error_type.p, "ValueError", 10), 0);
    cr_assert_not_null(m.stack);
    cr_expect_eq(m.stack->via.array.size, 1);
    sl_msg_destroy(&m);
}

Test(frame, rejects_malformed_messages_with_a_reason)
{
    static const struct {
        void (*fn)(msgpack_packer *);
        const char *why;
    } cases[] = {
        { no_type, "message has no 'type'" },
        { not_map, "message is not a map" },
        { ok_not_bool, "'ok' is not a boolean" },
        { ok_without_payload, "successful result without 'payload'" },
        { unknown_type, "unknown message type 'hello'" },
        { request_id_int, "'request_id' is not a string" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sl_msg m;
        char why[256] = "";
        size_t len;
        char *b = pack(cases[i].fn, &len);

        cr_expect_eq(sl_msg_decode(b, len, &m, why, sizeof(why)), SL_EPROTO, "case %zu", i);
        cr_expect_str_eq(why, cases[i].why);
    }
}

Test(frame, truncated_and_trailing_bytes_are_errors)
{
    struct sl_msg m;
    char why[256];
    size_t len;
    char *b = pack(ok_result, &len), *cut = malloc(len);

    memcpy(cut, b, len);
    cr_expect_eq(sl_msg_decode(cut, len - 3, &m, why, sizeof(why)), SL_EPROTO);
    cr_expect_str_eq(why, "frame body is not msgpack");
    b = realloc(b, len + 2);
    b[len] = (char)0xc0, b[len + 1] = (char)0xc0;
    cr_expect_eq(sl_msg_decode(b, len + 2, &m, why, sizeof(why)), SL_EPROTO);
    cr_expect_str_eq(why, "2 bytes after the message in the frame");
}

Test(frame, take_waits_for_whole_frames_and_caps_lengths)
{
    struct evbuffer *in = evbuffer_new();
    struct sl_msg m;
    char why[256];
    size_t len;
    char *b = pack(ok_result, &len);
    unsigned char hdr[4] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len };

    evbuffer_add(in, hdr, 2);
    cr_expect_eq(sl_frame_take(in, &m, why, sizeof(why)), 0);
    evbuffer_add(in, hdr + 2, 2);
    evbuffer_add(in, b, len - 1);
    cr_expect_eq(sl_frame_take(in, &m, why, sizeof(why)), 0);
    evbuffer_add(in, b + len - 1, 1);
    cr_assert_eq(sl_frame_take(in, &m, why, sizeof(why)), 1, "%s", why);
    cr_expect_eq(m.type, SL_MSG_RESULT);
    sl_msg_destroy(&m);
    cr_expect_eq(evbuffer_get_length(in), 0);
    free(b);

    /* 7 MB announced: an oversized result */
    {
        unsigned char big[4] = { 0x00, 0x70, 0x00, 0x00 };
        evbuffer_add(in, big, 4);
        cr_expect_eq(sl_frame_take(in, &m, why, sizeof(why)), SL_ETOOBIG);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    /* 2 GB announced: not a frame at all */
    {
        unsigned char junk[4] = { 0x80, 0x00, 0x00, 0x01 };
        evbuffer_add(in, junk, 4);
        cr_expect_eq(sl_frame_take(in, &m, why, sizeof(why)), SL_EPROTO);
        cr_expect_str_eq(why, "frame of 2147483649 bytes is over the 6356992 byte limit");
    }
    evbuffer_free(in);
}

Test(frame, invoke_frame_round_trips)
{
    struct sl_invoke_msg im = {
        .request_id = "abc", .deadline_ms = 1767225600123LL, .function_name = "f",
        .function_version = "$LATEST", .memory_mb = 256, .invoked_function_arn = "arn:x",
        .client_context = NULL, .event = "{\"k\":[1,2]}", .event_len = 11,
    };
    msgpack_unpacked up;
    char *frame;
    size_t len, off = 0;
    uint32_t blen;
    int found = 0;

    cr_assert_eq(sl_frame_invoke(&im, &frame, &len), 0);
    blen = (uint32_t)(unsigned char)frame[0] << 24 | (uint32_t)(unsigned char)frame[1] << 16 |
           (uint32_t)(unsigned char)frame[2] << 8 | (unsigned char)frame[3];
    cr_expect_eq(blen, len - 4);
    msgpack_unpacked_init(&up);
    cr_assert_eq(msgpack_unpack_next(&up, frame + 4, len - 4, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(up.data.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        msgpack_object k = up.data.via.map.ptr[i].key, v = up.data.via.map.ptr[i].val;
        if (k.via.str.size == 5 && memcmp(k.via.str.ptr, "event", 5) == 0) {
            cr_expect_eq(v.type, MSGPACK_OBJECT_BIN);
            cr_expect_eq(v.via.bin.size, 11);
            found++;
        }
        if (k.via.str.size == 11 && memcmp(k.via.str.ptr, "deadline_ms", 11) == 0) {
            cr_expect_eq(v.via.u64, 1767225600123ULL);
            found++;
        }
    }
    cr_expect_eq(found, 2);
    msgpack_unpacked_destroy(&up);
    free(frame);

    im.event_len = SL_PAYLOAD_MAX + 1;
    cr_expect_eq(sl_frame_invoke(&im, &frame, &len), SL_ETOOBIG);
}

/* A few bytes declaring a huge container must not make the decoder
 * allocate for it. */
Test(frame, huge_declared_containers_are_refused)
{
    static const unsigned char bodies[][6] = {
        { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00 },  /* array32 of 4 G elements */
        { 0xdf, 0x10, 0x00, 0x00, 0x00, 0x00 },  /* map32 of 256 M pairs */
        { 0x81, 0xa1, 't', 0xdc, 0xff, 0xff },   /* nested array16 of 65535 */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct sl_msg m;
        char why[256], *b = malloc(6);

        memcpy(b, bodies[i], 6);
        cr_expect_eq(sl_msg_decode(b, 6, &m, why, sizeof(why)), SL_EPROTO, "case %zu", i);
        cr_expect_str_eq(why, "frame body is not msgpack");
    }
}

/* Random bodies: any outcome but a crash or a leak (ASan checks). */
Test(frame, random_bodies_never_crash)
{
    srandom(12345);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(random() % 64);
        char *b = malloc(len ? len : 1), why[256];
        struct sl_msg m;

        for (size_t j = 0; j < len; j++)
            b[j] = (char)random();
        if (i % 3 == 0 && len > 0)
            b[0] = (char)(0x80 | (len % 15)); /* a fixmap header, to get deeper */
        if (sl_msg_decode(b, len, &m, why, sizeof(why)) == 0)
            sl_msg_destroy(&m);
    }
}
