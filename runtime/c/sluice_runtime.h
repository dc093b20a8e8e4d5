/* sluice_runtime: the handler side of sluice's native protocol, for C.
 *
 * A handler is a program that calls slr_start() from main(). The library
 * speaks docs/PROTOCOL.md on fd 3: it says `ready`, runs the handler once
 * per `invoke` and answers `result`, exits on `shutdown`, and does the
 * SnapStart dance (`snapshot`, `fork`) with the hooks registered here.
 *
 *     static int handle(const char *event, size_t len, const struct slr_context *ctx,
 *                       char **out, size_t *out_len, void *arg)
 *     {
 *         if (len == 0)
 *             return slr_set_error("EmptyEvent", "no event");
 *         *out = strdup("{\"ok\":true}");
 *         *out_len = strlen(*out);
 *         return 0;
 *     }
 *     int main(void) { return slr_start(handle, NULL); }
 *
 * Build: cc ... sluice_runtime.c $(pkg-config --libs msgpack)
 *
 * The library is single-threaded: call it from one thread. Nothing here is
 * async-signal-safe. */
#ifndef SLUICE_RUNTIME_H
#define SLUICE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#define SLR_RUNTIME     "c/0.1"                       /* `runtime` in `ready` */
#define SLR_FRAME_MAX   (6 * 1024 * 1024 + 64 * 1024) /* frame body bytes, either way */
#define SLR_PAYLOAD_MAX (6 * 1024 * 1024)             /* event or result JSON bytes */
#define SLR_HOOKS_MAX   16                            /* per kind of hook */

/* What sluice said about the running invocation. Every string is
 * NUL-terminated and owned by the library; it lives until the handler
 * returns. */
struct slr_context {
    const char *request_id;           /* UUID */
    const char *function_name;
    const char *function_version;     /* "$LATEST" */
    const char *invoked_function_arn;
    const char *client_context;       /* JSON text, or NULL when there is none */
    int64_t     deadline_ms;          /* Unix ms at which sluice kills the environment */
    int         memory_mb;
};

/* Milliseconds left before the deadline (negative once past it). */
int64_t slr_remaining_ms(const struct slr_context *ctx);

/* The handler. `event` is `len` bytes of JSON text followed by a NUL; it
 * is owned by the library and valid until the handler returns.
 *
 * Success: return 0 and set *out to malloc'd JSON text of *out_len bytes;
 * the library takes ownership and frees it. *out left NULL means `null`;
 * *out_len left 0 means strlen(*out).
 * Failure: return -1, after slr_set_error(). A failed invocation's *out
 * is freed and ignored. */
typedef int (*slr_handler_fn)(const char *event, size_t len, const struct slr_context *ctx,
                              char **out, size_t *out_len, void *arg);

/* Set the error_type and error_message (printf-style) of the failure being
 * reported: by a handler, a hook or slr_init_error(). Returns -1 so a
 * handler can end with `return slr_set_error(...)`. A NULL type, or no call
 * at all, reports the default: "HandlerError" for a handler,
 * "Runtime.BeforeSnapshotError" / "Runtime.AfterRestoreError" for a hook,
 * "Runtime.InitError" for slr_init_error(). */
int slr_set_error(const char *type, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* SnapStart hooks, run in registration order. A before-snapshot hook runs
 * in the template just before it is snapshotted (close connections, stop
 * threads: fork keeps only the calling thread). An after-restore hook runs
 * in each new environment forked from the template, after the library has
 * re-seeded random()/rand() and drand48(); re-seed your own generators and
 * reopen connections there. A hook returns 0, or -1 after slr_set_error(),
 * which ends that environment with `init_error`.
 * Returns 0, -EINVAL for a NULL fn or -ENOSPC past SLR_HOOKS_MAX. */
typedef int (*slr_hook_fn)(void *arg);
int slr_on_before_snapshot(slr_hook_fn fn, void *arg);
int slr_on_after_restore(slr_hook_fn fn, void *arg);

/* Run the handler loop until sluice says `shutdown` or closes the socket.
 * Makes stdout line-buffered (call it before printing anything), sends
 * `ready`, then serves `invoke`,
 * `snapshot` and `fork`. Returns the process's exit code: 0 after
 * `shutdown` or end of stream, 1 after a protocol or I/O error (explained
 * on stderr). `fn` is called with `arg` once per invocation. */
int slr_start(slr_handler_fn fn, void *arg);

/* Report a failed init (instead of `ready`) with `type` and a printf-style
 * message, then exit(1). For setup that fails before slr_start(). The
 * message also goes to stderr. */
_Noreturn void slr_init_error(const char *type, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
