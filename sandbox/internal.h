/* Internal to sandbox/: the host preparation shared by spawn and cgroups,
 * and the environments shared by one env's lifecycle (env.c), SnapStart
 * (snapstart.c), the pool (fnpool.c) and the fake pools (fake.c). */
#ifndef SLUICE_SANDBOX_INTERNAL_H
#define SLUICE_SANDBOX_INTERNAL_H

#include <linux/filter.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "init/init.h"
#include "sluice/env.h"
#include "sluice/sandbox.h"

enum { CG_NONE = 0, CG_V1, CG_V2 };
enum { CGC_MEMORY = 0, CGC_CPU, CGC_PIDS, CGC__COUNT };

struct sl__cgroups {
    int   kind;                    /* CG_* */
    char *base[CGC__COUNT];        /* our own directory per controller (v2: base[0] only) */
    unsigned long seq;             /* for env directory names */
    char  desc[96];
};

/* A system directory of the host as it appears in the sandbox root. */
struct sl__rootent {
    char name[16];                 /* "usr", "lib64", ... */
    char link[64];                 /* symlink target, or "" for a read-only bind */
};

/* Ready network namespaces (netns.c), one per strict env. Loop only. */
#define NETNS_POOL 4

struct sl__netns {
    int             fds[NETNS_POOL];  /* ready namespaces, loopback up */
    int             n;
    int             host;             /* the loop thread's own namespace, to return to */
    struct sl_pool *workers;          /* one thread that makes them; NULL: the loop does */
    bool            filling;          /* a job is in flight */
    bool            fill_failed;      /* the last job failed: wait for a take to retry */
    bool            closing;
    size_t          pooled, made;     /* taken from the pool / made on the loop */
};

/* Each function's uid and gid (the same number), from server.sandbox_uid_base. */
struct sl__uid {
    char  *name;                   /* function name */
    uid_t  uid;
};

struct sl_sandbox {
    struct sl__cgroups  cg;
    struct sl__netns    net;       /* unused (host == -1) for relaxed-only and userns hosts */
    struct sl__uid     *uids;      /* never shrinks: a uid is never given to another function */
    size_t              nuids;
    uid_t               uid_base;
    char               *state_dir;
    char               *root;      /* mount point every env builds its root on */
    char               *etc;       /* curated /etc, bound read-only */
    char               *runtime_dir;
    struct sl__rootent  ents[8];
    int                 nents;
    struct sock_fprog   filter;    /* compiled seccomp filter */
    int                 init_exe;  /* sluice-init, O_PATH: execveat'd by each spawn */
    bool                userns;    /* not root: each env gets a user namespace */
};

int  sl__cgroups_init(struct sl__cgroups *cg, struct sl_err *err);
void sl__cgroups_destroy(struct sl__cgroups *cg);
void sl__cgroup_kill(struct sl_sbx_proc *p);
void sl__cgroup_remove(struct sl_sbx_proc *p);
int  sl__seccomp_build(struct sock_fprog *prog, struct sl_err *err);

/* netns.c. init: one namespace made now (fails on hosts that cannot),
 * the rest by a worker on `base` (NULL: made on demand by take). take:
 * an fd of a fresh namespace, the caller's; or a negative SL_E*. */
struct event_base;
int  sl__netns_init(struct sl__netns *ns, struct event_base *base, struct sl_err *err);
void sl__netns_destroy(struct sl__netns *ns);
int  sl__netns_take(struct sl__netns *ns, struct sl_err *err);

/* ids.c: the uid (and gid) of function `name`: the one it was given at
 * sl_sandbox_new, else the next unused one of the range. */
uid_t sl__sandbox_uid(struct sl_sandbox *sb, const char *name);
int   sl__sandbox_uids_init(struct sl_sandbox *sb, const struct sl_sandbox_opts *o,
                            struct sl_err *err);
void  sl__sandbox_uids_destroy(struct sl_sandbox *sb);
void sl__sandbox_setup_error(int fd, struct sl_err *err);

/* ------------------------------------------------------------------ */
/* Environments and function pools                                     */

#define LINE_MAX_LOG   4096    /* a handler's output line is cut past this */
#define DRAIN_MAX      65536   /* output bytes read per callback: the loop serves others between */
#define EXIT_DRAIN_MAX (4 << 20) /* ... when the env exited (a pipe holds at most 1 MB) */
#define LINE_COST_MIN  128     /* a line counts at least this against output_kb_per_s */
#define SHUTDOWN_MS    300     /* grace between the shutdown notice and SIGKILL */
#define EOF_GRACE_MS   200     /* socket closed: wait this long for the exit status */

struct sl__fake;                   /* one fake pool's script and answers (fake.c) */
struct sl__rapi;                   /* one env's Runtime API (rapi.c) */
struct sl__fakes;                  /* what the fake pools of one sl_functions share */
struct sl__grave;

enum env_state { ENV_STARTING, ENV_IDLE, ENV_BUSY, ENV_STOPPING };
enum env_kind { ENV_COLD, ENV_TEMPLATE, ENV_FORKED };

#define TAIL_MAX 4096          /* X-Amz-Log-Result: the last 4 KB of the log */

struct pending {
    char          tail[TAIL_MAX + 1];
    size_t        tail_len;
    char          request_id[40];
    char          source[96];        /* event source mapping, "" for none */
    const char   *event;             /* borrowed until cb */
    size_t        event_len;
    const char   *client_context;
    sl_invoke_cb  cb;
    void         *arg;
    double        queued_ms;
};

struct linebuf {
    char   buf[LINE_MAX_LOG];
    size_t len;
};

struct sl_env {
    struct sl_fnpool   *pool;
    int                 kind;            /* enum env_kind */
    int                 state;           /* enum env_state */
    char                id[24];
    struct sl_sbx_proc  proc;
    struct bufferevent *bev;             /* fd 3; NULL for runtime lambda */
    struct sl__rapi    *rapi;            /* runtime lambda: its Runtime API (rapi.c) */
    struct event       *ev_out, *ev_err, *ev_exit, *ev_setup, *ev_timer, *ev_first;
    struct linebuf      out, err;
    double              out_tokens;      /* bytes of output it may still log now */
    double              out_refill_ms;   /* when out_tokens was last topped up */
    double              drop_report_ms;  /* when dropped output was last reported */
    unsigned long long  drop_bytes, drop_lines; /* dropped, not yet reported */
    struct pending     *inv;             /* the invocation it runs or starts for */
    char                setup_error[SL_ERR_MSG_MAX];
    char                last_request[40];/* for output lines after a result */
    char                last_source[96]; /* and its source */
    double              spawned_ms, ready_ms, busy_ms, idle_ms;
    double              init_ms;         /* to report on the first invocation */
    bool                provisioned;
    bool                sock_closed;
    bool                timing_out;
    int                 fork_fds[3];     /* forked env before the template took them */
    LIST_ENTRY(sl_env)  link;
};

LIST_HEAD(env_list, sl_env);

struct sl_fnpool {
    struct event_base             *base;
    struct sl_sandbox             *sb;
    const struct sl_function_conf *fn;
    struct sl_fnpool_opts          o;
    char                           inst[96];   /* "function:<name>" */
    struct sl_logring             *ring;       /* function logs for the tail, or NULL */
    int                            app_level;  /* enum sl_lvl: json lines below are dropped */
    int                            sys_level;  /* enum sl_lvl: platform records below too */
    struct env_list                envs;
    size_t                         nenvs;      /* excluding the template */
    size_t                         nidle, nbusy, nprovisioned;
    struct sl_env                 *template;
    bool                           template_ready;
    struct event                  *reaper;
    unsigned long                  seq;
    bool                           closing;
    struct sl__fake               *fake;       /* a fake pool (fake.c): no envs, no fn */
    LIST_HEAD(, sl__grave)         graves;     /* killed processes not yet exited */
};

struct sl_functions {
    struct sl_sandbox       *sb;        /* NULL for fake functions */
    struct sl_fnpool       **pools;     /* parallel to conf->functions (fake: to its names) */
    size_t                   npools;
    const struct sl_config  *conf;      /* NULL for fake functions */
    struct sl__fakes        *fakes;     /* fake functions (fake.c), else NULL */
};

/* env.c: one environment's lifecycle */
struct sl_env *sl__env_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err);
struct sl_env *sl__env_alloc(struct sl_fnpool *pool, int kind, bool provisioned);
int  sl__env_attach(struct sl_env *env);
void sl__env_destroy(struct sl_env *env);
void sl__env_send_invoke(struct sl_env *env);
void sl__env_set_state(struct sl_env *env, int state);
void sl__env_timer(struct event *ev, double ms);
void sl__env_on_read(struct bufferevent *bev, void *arg);
/* Kill `p`'s processes and release them, now or (not exited yet) once its
 * pidfd says the init exited; `p` is left empty. */
void sl__env_bury(struct sl_fnpool *pool, struct sl_sbx_proc *p);
/* At pool free: release what is still buried without waiting. */
void sl__env_graves_free(struct sl_fnpool *pool);
/* The env's current invocation's one result (no-op without one); steals `stack`. */
void sl__env_finish(struct sl_env *env, bool ok, const char *payload, size_t len,
                    const char *etype, const char *emsg, json_t *stack);
/* The handler finished its init ("ready"): run the invocation that waits
 * for it, or become idle. */
void sl__env_ready(struct sl_env *env, bool restored);
/* The handler answered the running invocation (the env becomes idle); a
 * payload over 6 MB fails it with Function.ResponseSizeTooLarge; steals `stack`. */
void sl__env_result(struct sl_env *env, bool ok, const char *payload, size_t len,
                    const char *etype, const char *emsg, json_t *stack);
/* The env is unusable: fail its invocation with this error and destroy it. */
void sl__env_fail(struct sl_env *env, const char *etype, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Keep the last TAIL_MAX bytes an invocation logged (env.c). */
void sl__env_tail_add(struct pending *inv, const char *s, size_t n);

/* fnlog.c: a function's log lines, by its LoggingConfig (log_format,
 * application_log_level, system_log_level): into sluice's log, the
 * invocation's log tail and the log ring. init: the pool's levels.
 * output: one line the handler printed (`len` bytes, no newline).
 * start/report/init_start/init_report/dropped: sluice's own lines (in text
 * format only REPORT and the dropped-output notice exist, as before). */
void sl__fnlog_init(struct sl_fnpool *pool);
const char *sl__fnlog_app_level(const struct sl_function_conf *fn);  /* "INFO" when unset */
void sl__fnlog_output(struct sl_env *env, const char *line, size_t len);
void sl__fnlog_start(struct sl_env *env);
void sl__fnlog_report(struct sl_env *env, struct pending *inv, const struct sl_invoke_result *r,
                      int64_t billed);
void sl__fnlog_init_start(struct sl_env *env, const char *init_type);
void sl__fnlog_init_report(struct sl_env *env, bool restored);
void sl__fnlog_dropped(struct sl_env *env, const char *msg);

/* rapi.c: the Runtime API of a runtime-lambda env, listening on
 * env->proc.rapi. attach: -1 if it cannot watch it. invoke: env->inv
 * starts (the env is BUSY): hand it to the runtime's /next now or when it
 * comes. free: closes its connections (not the listening fd). */
int  sl__rapi_attach(struct sl_env *env);
void sl__rapi_invoke(struct sl_env *env, int64_t deadline_ms);
void sl__rapi_deliver(struct sl_env *env);
void sl__rapi_free(struct sl_env *env);
/* Serve an already connected socket `fd` (non-blocking; taken) as if
 * accepted: the fuzz target's way in. */
void sl__rapi_adopt(struct sl_env *env, int fd);

/* snapstart.c: envs forked from a function's template */
struct sl_env *sl__snapstart_start(struct sl_fnpool *pool, bool provisioned, struct sl_err *err);
void sl__snapstart_fork(struct sl_env *env);
void sl__snapstart_template_init(struct sl_env *env);
void sl__snapstart_template_ready(struct sl_env *env);

/* fake.c: fake functions. A fake pool answers sl_fnpool_invoke; sl_fnpool_free
 * stops it (its invocations end with Sandbox.Failure, its script goes)
 * before freeing it as any pool; sl_functions_free frees what the pools
 * shared once they are gone. */
int  sl__fake_invoke(struct sl_fnpool *pool, const struct sl_invoke_req *req, sl_invoke_cb cb,
                     void *arg);
void sl__fake_stop(struct sl_fnpool *pool);
struct sl_fnpool *sl__fake_pool(struct sl_functions *f, const char *name);
void sl__fakes_free(struct sl__fakes *fs);

#endif
