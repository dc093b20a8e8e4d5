/* sluice: the native handler protocol's frames (docs/PROTOCOL.md).
 *
 * One module encodes what sluice sends and decodes what handlers send.
 * A frame is a big-endian u32 length and one msgpack map. Everything read
 * from a handler is capped and validated; nothing in it is trusted. */
#ifndef SLUICE_FRAME_H
#define SLUICE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "sluice/invoke.h"

#define SL_FRAME_MAX       (6 * 1024 * 1024 + 64 * 1024)  /* body bytes, either way */
#define SL_FRAME_GARBAGE   (64 * 1024 * 1024)             /* longer "frames" are noise */

/* ------------------------------------------------------------------ */
/* Encoding (sluice -> handler). Each returns a malloc'd frame (length
 * prefix included) in *out / *len, owned by the caller.                */

struct sl_invoke_msg {
    const char *request_id;
    int64_t     deadline_ms;          /* Unix ms */
    const char *function_name;
    const char *function_version;
    int64_t     memory_mb;
    const char *invoked_function_arn;
    const char *client_context;       /* JSON text or NULL */
    const char *event;                /* JSON text */
    size_t      event_len;
};

int sl_frame_invoke(const struct sl_invoke_msg *m, char **out, size_t *len);
int sl_frame_shutdown(const char *reason, int64_t deadline_ms, char **out, size_t *len);
int sl_frame_snapshot(char **out, size_t *len);
int sl_frame_fork(const char *env_id, char **out, size_t *len);

/* ------------------------------------------------------------------ */
/* Decoding (handler -> sluice)                                        */

enum sl_msg_type {
    SL_MSG_READY = 1,
    SL_MSG_INIT_ERROR,
    SL_MSG_RESULT,
    SL_MSG_SNAPSHOT_READY,
    SL_MSG_FORKED,
};

struct sl_bytes {
    const char *p;                    /* points into the message's body */
    size_t      n;
};

/* A decoded message. String fields point into `body`, owned here. */
struct sl_msg {
    int              type;            /* enum sl_msg_type */
    bool             ok;              /* result */
    bool             restored;        /* ready after a snapstart fork */
    struct sl_bytes  request_id;
    struct sl_bytes  payload;         /* result JSON when ok */
    struct sl_bytes  error_type;
    struct sl_bytes  error_message;
    msgpack_object  *stack;           /* array of strings or NULL */
    struct sl_bytes  env_id;          /* forked */
    int64_t          pid;             /* forked */
    char            *body;
    msgpack_unpacked up;
};

/* Take one whole frame from `in` (a bufferevent's input). Returns 1 with
 * `m` filled (release with sl_msg_destroy), 0 when more bytes are needed,
 * SL_ETOOBIG for a frame past SL_FRAME_MAX (up to SL_FRAME_GARBAGE), or
 * SL_EPROTO for a length beyond that or a body that is not a valid message
 * (`why` says what). After an error the stream
 * cannot be resynchronised. */
int sl_frame_take(struct evbuffer *in, struct sl_msg *m, char *why, size_t whylen);

/* Decode one frame body (no length prefix). Takes ownership of `body`
 * (malloc'd) in every case. Returns 0 or SL_EPROTO with `why`. */
int sl_msg_decode(char *body, size_t len, struct sl_msg *m, char *why, size_t whylen);
void sl_msg_destroy(struct sl_msg *m);

#endif
