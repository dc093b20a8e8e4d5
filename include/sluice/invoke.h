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

/* How an invocation ended. Strings are valid during the callback only. */
struct sl_invoke_result {
    const char *request_id;
    bool        ok;              /* the handler returned a result */
    const char *payload;         /* ok: JSON text */
    size_t      payload_len;
    const char *error_type;      /* !ok: "Sandbox.Timedout", the handler's type, ... */
    const char *error_message;
    json_t     *stack;           /* !ok: array of strings or NULL */
    bool        throttled;       /* never ran: at the concurrency cap */
    double      duration_ms;     /* invoke phase */
    double      init_ms;         /* > 0 when this invocation waited for a cold start */
    int64_t     max_memory_mb;
    bool        cold;
    const char *log_tail;        /* the invocation's last 4 KB of log (output + REPORT) */
};

typedef void (*sl_invoke_cb)(const struct sl_invoke_result *r, void *arg);

/* One request. Whoever runs it copies what it needs; `event` is borrowed
 * until the callback runs. */
struct sl_invoke_req {
    const char *event;           /* JSON text */
    size_t      event_len;
    const char *client_context;  /* JSON text or NULL */
    const char *request_id;      /* NULL: a new UUID */
    const char *source;          /* the event source mapping invoking, or NULL (for logs) */
};

#endif
