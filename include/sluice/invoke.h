/* sluice: invocations as every part sees them: Lambda's payload limits, a
 * request, and how it ended. Neutral ground between the sandbox that runs
 * handlers, the dispatcher and engine that schedule them, the pollers that
 * size batches and the API that answers callers; no part's protocol. */
#ifndef SLUICE_INVOKE_H
#define SLUICE_INVOKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define SL_PAYLOAD_MAX       (6 * 1024 * 1024)   /* a synchronous event or any result: 6291456 bytes */
#define SL_ASYNC_PAYLOAD_MAX (1024 * 1024)       /* an Event (asynchronous) payload: 1048576 bytes */
#define SL_EVENT_SLACK       (64 * 1024)         /* what a batch leaves for the event's envelope */
#define SL_STREAM_MAX        (20 * 1024 * 1024)  /* a streamed response (soft limit in Lambda) */

/* How an invocation ended. Strings are valid during the callback only. */
struct sl_invoke_result {
    const char *request_id;
    bool        ok;              /* the handler returned a result */
    const char *payload;         /* ok: JSON text */
    size_t      payload_len;
    const char *error_type;      /* !ok: "Sandbox.Timedout", the handler's type, ... */
    const char *error_message;
    json_t     *stack;           /* !ok: array of strings or NULL */
    json_t     *error_doc;       /* !ok: the runtime's own error document (Runtime API: an
                                  * object with errorType), which Lambda answers as it is
                                  * (Node's has `trace`, not `stackTrace`); else NULL */
    bool        throttled;       /* never ran: at the concurrency cap */
    double      duration_ms;     /* invoke phase */
    double      init_ms;         /* > 0 when this invocation waited for a cold start */
    int64_t     max_memory_mb;
    bool        cold;
    const char *log_tail;        /* the invocation's last 4 KB of log (output + REPORT) */
};

typedef void (*sl_invoke_cb)(const struct sl_invoke_result *r, void *arg);

/* Response streaming: `n` bytes of the response at `p` (valid during the
 * call) as the handler sends them, before the result; called with n == 0
 * to ask again. Returns how many bytes the receiver still holds unsent:
 * at SL_STREAM_HIGH or more the sender stops reading the handler and asks
 * again later, until it is below SL_STREAM_LOW. Called on the loop, never
 * after the invocation's result callback. */
typedef size_t (*sl_invoke_chunk_cb)(const char *p, size_t n, void *arg);

#define SL_STREAM_HIGH       (1024 * 1024)
#define SL_STREAM_LOW        (256 * 1024)

/* One request. Whoever runs it copies what it needs; `event` is borrowed
 * until the callback runs. */
struct sl_invoke_req {
    const char *event;           /* JSON text */
    size_t      event_len;
    const char *client_context;  /* JSON text or NULL */
    const char *request_id;      /* NULL: a new UUID */
    const char *trace_id;        /* the caller's X-Amzn-Trace-Id or NULL (X-Ray's
                                  * Root=...;Parent=...;Sampled=...) */
    /* NULL: the response arrives whole in the result (at most 6 MB). Set:
     * a runtime that streams (Lambda-Runtime-Function-Response-Mode:
     * streaming) hands its bytes here as they come, up to SL_STREAM_MAX,
     * and the result then carries no payload; other handlers still answer
     * in the result. */
    sl_invoke_chunk_cb on_chunk;
    void              *chunk_arg;
    const char *source;          /* the event source mapping invoking, or NULL (for logs) */
};

#endif
