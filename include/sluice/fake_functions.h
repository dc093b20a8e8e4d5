/* sluice: fake functions, a test double of the sandbox. A fake
 * `struct sl_functions` answers invocations from a script instead of
 * running handlers in sandboxes, and counts them; everything that takes
 * the real one (sl_dispatcher_new, sl_functions_pool, sl_fnpool_invoke,
 * sl_fnpool_idle, sl_functions_free) takes it unchanged.
 *
 * A fake pool is always warm (sl_fnpool_idle says 1: no scale-up
 * throttling) and has no concurrency cap unless an answer refuses. Every
 * answer comes from the loop, never inside sl_fnpool_invoke. */
#ifndef SLUICE_FAKE_FUNCTIONS_H
#define SLUICE_FAKE_FUNCTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "sluice/env.h"

/* One invocation as the script sees it (borrowed during the call). */
struct sl_fake_call {
    const char *fn;          /* function name */
    const char *event;       /* JSON text, NUL-terminated */
    size_t      event_len;
    size_t      n;           /* 1 for the function's first invocation */
};

/* What an invocation answers. The script fills it with the helpers below;
 * unset, an invocation succeeds with "{}" on the next turn of the loop. */
struct sl_fake_answer {
    bool  ok;
    char *payload;           /* ok: JSON text (owned by the fake) */
    char *error_type;        /* !ok: owned */
    char *error_message;     /* !ok: owned */
    int   delay_ms;          /* answer this long after the invocation */
    bool  refuse;            /* sl_fnpool_invoke says SL_EAGAIN (cb not called) */
};

void sl_fake_answer_ok(struct sl_fake_answer *a, const char *payload);
void sl_fake_answer_error(struct sl_fake_answer *a, const char *type, const char *message);

typedef void (*sl_fake_script_fn)(void *arg, const struct sl_fake_call *c,
                                  struct sl_fake_answer *a);

/* A fake pool for each function named in `names` (NULL-terminated,
 * copied); `base` is borrowed. Free it with sl_functions_free, which ends
 * the invocations still running with Sandbox.Failure ("sluice is shutting
 * down"), as it ends a real pool's. */
struct sl_functions *sl_fake_functions_new(struct event_base *base, const char *const *names);

/* True for what sl_fake_functions_new made. */
bool sl_fake_functions_is(const struct sl_functions *f);

/* The functions below do nothing (or answer 0, NULL) for real functions. */

/* Answer every invocation of `fn` (NULL, or a name it does not have: of
 * any function) through `script` once the answers queued by
 * sl_fake_functions_push are used up. */
void sl_fake_functions_script(struct sl_functions *f, const char *fn, sl_fake_script_fn script,
                              void *arg);

/* Queue one answer for the next invocation of `fn` (copied). */
void sl_fake_functions_push(struct sl_functions *f, const char *fn,
                            const struct sl_fake_answer *a);

/* Invocations of `fn` so far (NULL: of all functions), and still running. */
size_t sl_fake_functions_calls(const struct sl_functions *f, const char *fn);
size_t sl_fake_functions_running(const struct sl_functions *f);

/* The event of invocation `i` (0-based, of any function; borrowed until
 * sl_functions_free), or NULL. */
const char *sl_fake_functions_event(const struct sl_functions *f, size_t i);

#endif
