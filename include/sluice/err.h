/* sluice: error codes.
 *
 * Functions return int: 0 on success, a negative SL_E* code on failure.
 * Human detail goes into a caller-owned struct sl_err. A function that
 * returns an error never calls its callback. */
#ifndef SLUICE_ERR_H
#define SLUICE_ERR_H

#include <stdarg.h>
#include <stdbool.h>

/* X(name, text): the single list every code comes from. */
#define SL_ERRNO_MAP(X)                                                  \
    X(NOMEM,       "out of memory")                                      \
    X(INVAL,       "invalid argument")                                   \
    X(CONFIG,      "invalid configuration")                              \
    X(IO,          "input/output error")                                 \
    X(NOTFOUND,    "not found")                                          \
    X(EXISTS,      "already exists")                                     \
    X(TIMEDOUT,    "timed out")                                          \
    X(AGAIN,       "try again")                                          \
    X(CONN,        "connection failed")                                  \
    X(PROTO,       "protocol error")                                     \
    X(TOOBIG,      "too large")                                          \
    X(RANGE,       "out of range")                                       \
    X(UNSUPPORTED, "not supported")                                      \
    X(STOPPED,     "stopped")                                            \
    X(SANDBOX,     "sandbox failure")                                    \
    X(INTERNAL,    "internal error")

enum sl_errno {
    SL_EOK = 0,
#define SL__ERR_ENUM(name, text) SL__E_##name##_IDX,
    SL__E_FIRST_IDX = 0,
    SL_ERRNO_MAP(SL__ERR_ENUM)
#undef SL__ERR_ENUM
};

/* Codes are the negated positions in SL_ERRNO_MAP, starting at -1. */
#define SL_ENOMEM      (-1)
#define SL_EINVAL      (-2)
#define SL_ECONFIG     (-3)
#define SL_EIO         (-4)
#define SL_ENOTFOUND   (-5)
#define SL_EEXISTS     (-6)
#define SL_ETIMEDOUT   (-7)
#define SL_EAGAIN      (-8)
#define SL_ECONN       (-9)
#define SL_EPROTO      (-10)
#define SL_ETOOBIG     (-11)
#define SL_ERANGE      (-12)
#define SL_EUNSUPPORTED (-13)
#define SL_ESTOPPED    (-14)
#define SL_ESANDBOX    (-15)
#define SL_EINTERNAL   (-16)

#define SL_ERR_MSG_MAX 512

/* Error detail filled by the callee, owned by the caller (usually on the
 * stack). `msg` is lowercase: what failed, then why. */
struct sl_err {
    int  code;                  /* SL_E* or 0 */
    bool retriable;             /* true when trying again may succeed */
    char msg[SL_ERR_MSG_MAX];   /* human detail, never holds secrets */
};

/* Static text for a code; unknown codes give "unknown error". */
const char *sl_strerror(int code);

/* Symbolic name of a code ("SL_ENOMEM"); unknown codes give "SL_E?". */
const char *sl_errname(int code);

void sl_err_clear(struct sl_err *err);

/* Fill `err` (may be NULL) and return `code`, so callers can write
 * `return sl_err_set(err, SL_EIO, false, "cannot open %s: %s", ...);` */
int sl_err_set(struct sl_err *err, int code, bool retriable,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
