/* sluice: logging.
 *
 * One process-wide log sink (the only mutable global besides the runtime
 * root). Lines are written whole with one write(2), as text or JSON, with
 * control characters and bytes that are not UTF-8 escaped (\n, \r, \t,
 * \xNN; \u00NN in JSON), so every line is one line and carries no
 * terminal escapes, whatever a handler or client put in it.
 * The level is checked before the arguments are evaluated. Never pass
 * secrets: run connection strings through sl_log_redact first. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum sl_log_level {
    SL_LOG_ERROR = 0,
    SL_LOG_WARN,
    SL_LOG_INFO,
    SL_LOG_DEBUG,
};

enum sl_log_format {
    SL_LOG_TEXT = 0,
    SL_LOG_JSON,
};

/* Debug contexts: `log.debug: [kafka, sandbox]` turns on debug lines for
 * those areas alone, whatever the level. Order matches sl_log_ctx_names. */
enum sl_log_ctx {
    SL_DBG_CONFIG = 0,
    SL_DBG_KAFKA,
    SL_DBG_REDIS,
    SL_DBG_POSTGRES,
    SL_DBG_SANDBOX,
    SL_DBG_DISPATCH,
    SL_DBG_API,
    SL_DBG_SINK,
    SL_DBG__COUNT,
};

/* NULL-terminated; "all" is accepted by sl_log_ctx_parse as well. */
extern const char *const sl_log_ctx_names[];
extern const char *const sl_log_level_names[];

extern int      sl__log_level;      /* read by the macros only */
extern unsigned sl__log_debug_mask; /* bit per enum sl_log_ctx */

void sl_log_set_level(enum sl_log_level level);
void sl_log_set_format(enum sl_log_format format);
/* Bitmask of debug contexts; 0 clears. */
void sl_log_set_debug(unsigned mask);
/* Where lines go (default 2). Tests point it at a pipe. */
void sl_log_set_fd(int fd);
/* Write from a thread of its own from now on: a line is queued (at most
 * `cap` bytes wait) and the caller goes on, so a slow log fd never blocks
 * the event loop. A line that finds the queue full is dropped and counted;
 * once the writer caught up it writes one line saying how many. 0, or -1
 * when the thread cannot start (lines are then written directly). */
int  sl_log_start_writer(size_t cap);
/* Write out what is queued, waiting at most `ms` for a slow fd, then write
 * directly again. Past `ms` the writer is left to finish on its own. */
void sl_log_stop_writer(int ms);
/* Lines dropped because the writer's queue was full. */
unsigned long long sl_log_dropped(void);
/* Bit for a context name, or -1 when unknown ("all" gives every bit). */
long sl_log_ctx_parse(const char *name);

/* `inst` is the instance prefix ("source:orders") or NULL. */
void sl__log(int level, const char *inst, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sl_log(level, inst, ...)                                         \
    do {                                                                 \
        if ((int)(level) <= sl__log_level)                               \
            sl__log((level), (inst), __VA_ARGS__);                       \
    } while (0)

#define SL_ERROR(inst, ...) sl_log(SL_LOG_ERROR, inst, __VA_ARGS__)
#define SL_WARN(inst, ...)  sl_log(SL_LOG_WARN, inst, __VA_ARGS__)
#define SL_INFO(inst, ...)  sl_log(SL_LOG_INFO, inst, __VA_ARGS__)

#define SL_DEBUG(ctx, inst, ...)                                         \
    do {                                                                 \
        if (sl__log_level >= SL_LOG_DEBUG ||                             \
            (sl__log_debug_mask & (1u << (ctx))))                        \
            sl__log(SL_LOG_DEBUG, (inst), __VA_ARGS__);                  \
    } while (0)

/* Write one JSON object (n bytes, no line break in it: JSON text from
 * jansson or sl_jbuf) as a line of its own, whatever the log format: the
 * function logs of `log_format: json` functions. DEL and C1 controls are
 * written as \u00NN, so the line carries no terminal escapes. Not gated
 * by the log level: the caller filtered. */
void sl_log_json_line(const char *json, size_t n);

/* Copy `in` to `out` (size n, always terminated) with passwords masked:
 * URL userinfo ("redis://user:***@host"; for redis:// and rediss:// a
 * userinfo without ':' is the password, shown as "***@host"), and
 * "password=***" in libpq keyword strings and query parameters. */
void sl_log_redact(const char *in, char *out, size_t n);
/* Replace every occurrence of `secret` in the string `msg` (buffer size n)
 * with "***", in place; for messages of a library that quotes a password
 * it was given (libpq's percent-decoding errors). NULL or "" secret: no-op. */
void sl_log_scrub(char *msg, size_t n, const char *secret);

#endif
