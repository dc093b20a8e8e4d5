/* Test double: a function pool that answers invocations from a script
 * instead of running handlers in sandboxes, and counts them.
 *
 * fake_functions_handle() stands in for the `struct sl_functions *` that
 * sl_dispatcher_new takes. The test binaries are linked with
 * -Wl,--wrap for sl_functions_pool, sl_fnpool_idle and sl_fnpool_invoke
 * (see the Makefile): the wrappers answer for a fake handle and hand
 * everything else to the real functions, so a binary may use both.
 * DESIGN.md places this double with the sandbox; it lives here until the
 * dispatcher has a seam for it. */
#ifndef SLUICE_TEST_FAKE_FUNCTIONS_H
#define SLUICE_TEST_FAKE_FUNCTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "sluice/env.h"

struct fake_functions;

/* One invocation as the script sees it (borrowed during the call). */
struct fake_call {
    const char *fn;          /* function name */
    const char *event;       /* JSON text, NUL-terminated */
    size_t      event_len;
    size_t      n;           /* 1 for the function's first invocation */
};

/* What an invocation answers. The script fills it with the helpers below;
 * unset, an invocation succeeds with "{}" on the next turn of the loop. */
struct fake_answer {
    bool  ok;
    char *payload;           /* ok: JSON text (owned by the fake) */
    char *error_type;        /* !ok: owned */
    char *error_message;     /* !ok: owned */
    int   delay_ms;          /* answer this long after the invocation */
    bool  refuse;            /* sl_fnpool_invoke says SL_EAGAIN (cb not called) */
};

void fake_answer_ok(struct fake_answer *a, const char *payload);
void fake_answer_error(struct fake_answer *a, const char *type, const char *message);

typedef void (*fake_script_fn)(void *arg, const struct fake_call *c, struct fake_answer *a);

/* A fake pool for each function named in `names` (NULL-terminated). */
struct fake_functions *fake_functions_new(struct event_base *base, const char *const *names);

/* Answer every invocation of `fn` (NULL: of any function) through
 * `script` once the queued answers of fake_functions_push are used up. */
void fake_functions_script(struct fake_functions *f, const char *fn, fake_script_fn script,
                           void *arg);

/* Queue one answer for the next invocation of `fn` (copied). */
void fake_functions_push(struct fake_functions *f, const char *fn, const struct fake_answer *a);

/* What the dispatcher takes. */
struct sl_functions *fake_functions_handle(struct fake_functions *f);

/* Invocations of `fn` so far (NULL: of all functions), and still running. */
size_t fake_functions_calls(const struct fake_functions *f, const char *fn);
size_t fake_functions_running(const struct fake_functions *f);

/* The event of invocation `i` (0-based, of any function), or NULL. */
const char *fake_functions_event(const struct fake_functions *f, size_t i);

/* Invocations still running end now with Sandbox.Failure ("sluice is
 * shutting down"), as sl_functions_free ends them. Accepts NULL. */
void fake_functions_free(struct fake_functions *f);

#endif
