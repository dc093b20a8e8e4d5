/* Native protocol frames: msgpack maps behind a big-endian length. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "sluice/err.h"
#include "sluice/frame.h"
#include "sluice/mem.h"

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

struct enc {
    msgpack_sbuffer sb;
    msgpack_packer  pk;
};

static void enc_begin(struct enc *e, size_t nkeys)
{
    static const char zero[4];

    msgpack_sbuffer_init(&e->sb);
    msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&e->sb, zero, 4); /* length, patched in enc_end */
    msgpack_pack_map(&e->pk, nkeys);
}

static void enc_key(struct enc *e, const char *k)
{
    msgpack_pack_str_with_body(&e->pk, k, strlen(k));
}

static void enc_str(struct enc *e, const char *k, const char *v)
{
    enc_key(e, k);
    if (v)
        msgpack_pack_str_with_body(&e->pk, v, strlen(v));
    else
        msgpack_pack_nil(&e->pk);
}

static void enc_int(struct enc *e, const char *k, int64_t v)
{
    enc_key(e, k);
    msgpack_pack_int64(&e->pk, v);
}

static int enc_end(struct enc *e, char **out, size_t *len)
{
    size_t body = e->sb.size - 4;

    if (body > SL_FRAME_MAX) {
        msgpack_sbuffer_destroy(&e->sb);
        return SL_ETOOBIG;
    }
    e->sb.data[0] = (char)(body >> 24);
    e->sb.data[1] = (char)(body >> 16);
    e->sb.data[2] = (char)(body >> 8);
    e->sb.data[3] = (char)body;
    *len = e->sb.size;
    *out = msgpack_sbuffer_release(&e->sb);
    return 0;
}

int sl_frame_invoke(const struct sl_invoke_msg *m, char **out, size_t *len)
{
    struct enc e;

    if (m->event_len > SL_PAYLOAD_MAX)
        return SL_ETOOBIG;
    enc_begin(&e, 9);
    enc_str(&e, "type", "invoke");
    enc_str(&e, "request_id", m->request_id);
    enc_int(&e, "deadline_ms", m->deadline_ms);
    enc_str(&e, "function_name", m->function_name);
    enc_str(&e, "function_version", m->function_version);
    enc_int(&e, "memory_mb", m->memory_mb);
    enc_str(&e, "invoked_function_arn", m->invoked_function_arn);
    enc_str(&e, "client_context", m->client_context);
    enc_key(&e, "event");
    msgpack_pack_bin_with_body(&e.pk, m->event, m->event_len);
    return enc_end(&e, out, len);
}

int sl_frame_shutdown(const char *reason, int64_t deadline_ms, char **out, size_t *len)
{
    struct enc e;

    enc_begin(&e, 3);
    enc_str(&e, "type", "shutdown");
    enc_str(&e, "reason", reason);
    enc_int(&e, "deadline_ms", deadline_ms);
    return enc_end(&e, out, len);
}

int sl_frame_snapshot(char **out, size_t *len)
{
    struct enc e;

    enc_begin(&e, 1);
    enc_str(&e, "type", "snapshot");
    return enc_end(&e, out, len);
}

int sl_frame_fork(const char *env_id, char **out, size_t *len)
{
    struct enc e;

    enc_begin(&e, 2);
    enc_str(&e, "type", "fork");
    enc_str(&e, "env_id", env_id);
    return enc_end(&e, out, len);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);

    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

/* str or bin into `b`; returns 0, or -1 when `o` is neither. */
static int get_bytes(const msgpack_object *o, struct sl_bytes *b)
{
    if (o->type == MSGPACK_OBJECT_STR) {
        b->p = o->via.str.ptr;
        b->n = o->via.str.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_BIN) {
        b->p = o->via.bin.ptr;
        b->n = o->via.bin.size;
        return 0;
    }
    return -1;
}

/* msgpack-c allocates a container's elements from its declared count
 * before it reads them, so a 5-byte body can ask for gigabytes. Walk the
 * headers first: every declared element needs at least one byte, and a
 * message holds at most MSG_MAX_ITEMS of them. Returns 0 when the body is
 * one well-formed object with nothing after it. */
#define MSG_MAX_ITEMS 100000

static int check_msgpack(const unsigned char *p, size_t len)
{
    size_t off = 0, pending = 1, items = 0;

    while (pending > 0) {
        unsigned char b;
        uint64_t n = 0, skip = 0;
        int nb = 0;

        if (off >= len || pending > len - off)
            return -1;
        b = p[off++];
        pending--;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            continue;
        if (b >= 0x80 && b <= 0x8f) {
            n = 2u * (b & 0x0f);
        } else if (b >= 0x90 && b <= 0x9f) {
            n = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: nb = 1; break;                     /* bin8, str8 */
            case 0xc5: case 0xda: nb = 2; break;                     /* bin16, str16 */
            case 0xc6: case 0xdb: nb = 4; break;                     /* bin32, str32 */
            case 0xc7: nb = 1; skip = 1; break;                      /* ext8 */
            case 0xc8: nb = 2; skip = 1; break;                      /* ext16 */
            case 0xc9: nb = 4; skip = 1; break;                      /* ext32 */
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                              /* fixext 1..16 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: case 0xde: nb = -2; break;                    /* array16, map16 */
            case 0xdd: case 0xdf: nb = -4; break;                    /* array32, map32 */
            default: return -1;                                      /* 0xc1 */
            }
            if (nb != 0) {
                int w = nb < 0 ? -nb : nb;
                uint64_t v = 0;
                if (len - off < (size_t)w)
                    return -1;
                for (int i = 0; i < w; i++)
                    v = v << 8 | p[off++];
                if (nb < 0)
                    n = (b == 0xde || b == 0xdf) ? 2 * v : v;
                else
                    skip += v;
            }
        }
        if (skip > len - off)
            return -1;
        off += (size_t)skip;
        items += (size_t)n;
        if (items > MSG_MAX_ITEMS || n > len - off)
            return -1;
        pending += (size_t)n;
    }
    return off == len ? 0 : (int)(len - off);
}

#define BAD(...) do { snprintf(why, whylen, __VA_ARGS__); goto bad; } while (0)

int sl_msg_decode(char *body, size_t len, struct sl_msg *m, char *why, size_t whylen)
{
    const msgpack_object *root;
    struct sl_bytes type = { NULL, 0 };
    int has_ok = 0;
    size_t off = 0;

    memset(m, 0, sizeof(*m));
    m->body = body;
    msgpack_unpacked_init(&m->up);
    {
        int rest = check_msgpack((const unsigned char *)body, len);
        if (rest < 0)
            BAD("frame body is not msgpack");
        if (rest > 0)
            BAD("%d bytes after the message in the frame", rest);
    }
    if (msgpack_unpack_next(&m->up, body, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        BAD("frame body is not msgpack");
    root = &m->up.data;
    if (root->type != MSGPACK_OBJECT_MAP)
        BAD("message is not a map");

    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key, *v = &root->via.map.ptr[i].val;
        struct sl_bytes *dst = NULL;

        if (key_is(k, "type"))
            dst = &type;
        else if (key_is(k, "request_id"))
            dst = &m->request_id;
        else if (key_is(k, "payload"))
            dst = &m->payload;
        else if (key_is(k, "error_type"))
            dst = &m->error_type;
        else if (key_is(k, "error_message"))
            dst = &m->error_message;
        else if (key_is(k, "env_id"))
            dst = &m->env_id;
        if (dst) {
            if (v->type == MSGPACK_OBJECT_NIL)
                continue;
            if (get_bytes(v, dst) != 0)
                BAD("'%.*s' is not a string", (int)k->via.str.size, k->via.str.ptr);
        } else if (key_is(k, "ok")) {
            if (v->type != MSGPACK_OBJECT_BOOLEAN)
                BAD("'ok' is not a boolean");
            m->ok = v->via.boolean;
            has_ok = 1;
        } else if (key_is(k, "restored")) {
            m->restored = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
        } else if (key_is(k, "pid")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                BAD("'pid' is not a positive integer");
            m->pid = (int64_t)v->via.u64;
        } else if (key_is(k, "stack")) {
            if (v->type == MSGPACK_OBJECT_ARRAY)
                m->stack = (msgpack_object *)v;
        }
        /* unknown keys are ignored: either side may add some */
    }

    if (!type.p)
        BAD("message has no 'type'");
#define TYPE_IS(s) (type.n == strlen(s) && memcmp(type.p, s, type.n) == 0)
    if (TYPE_IS("ready")) {
        m->type = SL_MSG_READY;
    } else if (TYPE_IS("init_error")) {
        m->type = SL_MSG_INIT_ERROR;
        if (!m->error_type.p)
            BAD("init_error without 'error_type'");
    } else if (TYPE_IS("result")) {
        m->type = SL_MSG_RESULT;
        if (!has_ok)
            BAD("result without 'ok'");
        if (!m->request_id.p)
            BAD("result without 'request_id'");
        if (m->ok && !m->payload.p)
            BAD("successful result without 'payload'");
        if (!m->ok && !m->error_type.p)
            BAD("failed result without 'error_type'");
    } else if (TYPE_IS("snapshot_ready")) {
        m->type = SL_MSG_SNAPSHOT_READY;
    } else if (TYPE_IS("forked")) {
        m->type = SL_MSG_FORKED;
        if (!m->env_id.p)
            BAD("forked without 'env_id'");
    } else {
        BAD("unknown message type '%.*s'", (int)(type.n > 64 ? 64 : type.n), type.p);
    }
#undef TYPE_IS
    return 0;

bad:
    sl_msg_destroy(m);
    return SL_EPROTO;
}

void sl_msg_destroy(struct sl_msg *m)
{
    if (!m || !m->body)
        return;
    msgpack_unpacked_destroy(&m->up);
    free(m->body);
    m->body = NULL;
}

/* ------------------------------------------------------------------ */
/* Reading from a bufferevent's input                                  */

int sl_frame_take(struct evbuffer *in, struct sl_msg *m, char *why, size_t whylen)
{
    unsigned char hdr[4];
    uint32_t blen;
    char *body;
    int rc;

    if (evbuffer_get_length(in) < 4)
        return 0;
    evbuffer_copyout(in, hdr, 4);
    blen = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (blen > SL_FRAME_MAX) {
        /* a few MB over: an oversized result; far beyond: not a frame at all */
        snprintf(why, whylen, "frame of %u bytes is over the %d byte limit", blen, SL_FRAME_MAX);
        return blen <= SL_FRAME_GARBAGE ? SL_ETOOBIG : SL_EPROTO;
    }
    if (evbuffer_get_length(in) < 4 + (size_t)blen)
        return 0;
    evbuffer_drain(in, 4);
    body = sl_malloc(blen ? blen : 1);
    evbuffer_remove(in, body, blen);
    rc = sl_msg_decode(body, blen, m, why, whylen);
    return rc == 0 ? 1 : rc;
}
