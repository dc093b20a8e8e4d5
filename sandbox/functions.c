/* All functions of a configuration: one sandbox preparation, one pool each. */
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "sluice/datadir.h"
#include "sluice/log.h"
#include "sluice/mem.h"

char *sl_runtime_dir(void)
{
    /* <prefix>/build/sluice -> <prefix>/runtime (a build tree), then
     * <prefix>/bin/sluice -> <prefix>/lib/sluice/runtime (`make install`) */
    static const char *const below[] = { "runtime", "lib/sluice/runtime" };
    const char *env = getenv("SLUICE_RUNTIME_DIR");
    char exe[PATH_MAX], real[PATH_MAX], *prefix;
    struct stat st;
    ssize_t n;

    if (env && *env)
        return stat(env, &st) == 0 && S_ISDIR(st.st_mode) ? sl_strdup(env) : NULL;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    prefix = dirname(dirname(exe)); /* works in place */
    for (size_t i = 0; i < sizeof(below) / sizeof(below[0]); i++) {
        char *dir = sl_asprintf("%s/%s", prefix, below[i]);
        bool ok = realpath(dir, real) && stat(real, &st) == 0 && S_ISDIR(st.st_mode);

        free(dir);
        if (ok)
            return sl_strdup(real);
    }
    return NULL;
}

int sl_functions_new(struct event_base *base, const struct sl_config *conf, const char *only,
                     struct sl_functions **out, struct sl_err *err)
{
    struct sl_functions *f = sl_calloc(1, sizeof(*f));
    struct sl_sandbox_opts so;
    struct sl_fnpool_opts po = { .idle_ms = 600000, .max_envs = conf->server.concurrency_limit };
    bool relaxed_only = conf->nfunctions > 0;
    char *rtdir = sl_runtime_dir();
    char *state = sl_asprintf("%s/sandbox", conf->server.data_dir), why[512];
    int rc;

    /* data_dir first, ours alone (0700 when made here), before the
     * sandbox's state goes below it */
    if (sl_data_dir_prepare(conf->server.data_dir, why, sizeof(why)) != 0) {
        free(state);
        free(rtdir);
        free(f);
        return sl_err_set(err, SL_ECONFIG, false, "%s", why);
    }
    f->conf = conf;
    f->base = base;
    for (size_t i = 0; i < conf->nfunctions; i++)
        if (!only || strcmp(conf->functions[i].name, only) == 0)
            relaxed_only &= conf->functions[i].sandbox == SL_SANDBOX_RELAXED;
    so.state_dir = state;
    so.runtime_dir = rtdir;
    so.relaxed_only = relaxed_only;
    f->relaxed_only = relaxed_only;
    so.base = base;
    so.uid_base = conf->server.sandbox_uid_base;
    so.functions = conf->functions;
    so.nfunctions = conf->nfunctions;
    if (!rtdir)
        SL_WARN(NULL, "no runtime/ directory found beside the sluice binary nor "
                "lib/sluice/runtime/ (set SLUICE_RUNTIME_DIR): handlers cannot import the "
                "runtime libraries");
    rc = sl_sandbox_new(&so, &f->sb, err);
    free(state);
    free(rtdir);
    if (rc != 0) {
        free(f);
        return rc;
    }
    SL_INFO(NULL, "sandbox: resource limits through %s", sl_sandbox_cgroups(f->sb));
    f->pools = sl_calloc(conf->nfunctions ? conf->nfunctions : 1, sizeof(*f->pools));
    f->npools = conf->nfunctions;
    for (size_t i = 0; i < conf->nfunctions; i++) {
        const struct sl_function_conf *fn = &conf->functions[i];
        if (only && strcmp(fn->name, only) != 0)
            continue;
        if (fn->idle_timeout_ms > 0)
            po.idle_ms = fn->idle_timeout_ms;
        rc = sl_fnpool_new(base, f->sb, fn, &po, &f->pools[i], err);
        if (rc != 0) {
            char msg[SL_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            sl_err_set(err, rc, false, "function %s: %s", fn->name, msg);
            sl_functions_free(f);
            return rc;
        }
    }
    *out = f;
    return 0;
}

struct sl_fnpool *sl_functions_pool(struct sl_functions *f, const char *name)
{
    if (f->fakes)
        return sl__fake_pool(f, name);
    for (size_t i = 0; i < f->npools; i++)
        if (strcmp(f->conf->functions[i].name, name) == 0)
            return f->pools[i];
    return NULL;
}

void sl_functions_free(struct sl_functions *f)
{
    if (!f)
        return;
    /* retired pools first: their last invocations end as on a shutdown */
    for (size_t i = 0; i < f->nretired; i++)
        sl_fnpool_free(f->retired[i]);
    free(f->retired);
    if (f->retire_timer)
        event_free(f->retire_timer);
    for (size_t i = 0; f->pools && i < f->npools; i++) {
        struct sl_fnpool *pool = f->pools[i];
        /* gone before its free ends invocations: a callback that invokes
         * again finds no pool rather than a freed one */
        f->pools[i] = NULL;
        sl_fnpool_free(pool); /* NULL for functions left out */
    }
    free(f->pools);
    sl__fakes_free(f->fakes);
    sl_sandbox_free(f->sb);
    free(f);
}

/* ------------------------------------------------------------------ */
/* Live reload                                                         */

struct sl_functions_stage {
    const struct sl_config *conf;
    struct sl_fnpool      **pools;      /* parallel to conf->functions */
    bool                   *kept;       /* pools[i] is a running pool, rebound at commit */
};

static void stage_free(struct sl_functions_stage *st, bool free_new)
{
    if (!st)
        return;
    for (size_t i = 0; free_new && i < st->conf->nfunctions; i++)
        if (!st->kept[i])
            sl_fnpool_free(st->pools[i]);
    free(st->pools);
    free(st->kept);
    free(st);
}

int sl_functions_prepare(struct sl_functions *f, const struct sl_config *conf,
                         bool (*keep)(void *arg, const char *name), void *arg,
                         struct sl_functions_stage **out, struct sl_err *err)
{
    struct sl_functions_stage *st = sl_calloc(1, sizeof(*st));
    size_t n = conf->nfunctions ? conf->nfunctions : 1;

    st->conf = conf;
    st->pools = sl_calloc(n, sizeof(*st->pools));
    st->kept = sl_calloc(n, sizeof(*st->kept));
    for (size_t i = 0; i < conf->nfunctions; i++) {
        const struct sl_function_conf *fn = &conf->functions[i];
        struct sl_fnpool_opts po = { .idle_ms = 600000,
                                     .max_envs = conf->server.concurrency_limit };
        struct sl_fnpool *old = f->sb ? sl_functions_pool(f, fn->name) : NULL;
        int rc;

        if (f->relaxed_only && fn->sandbox != SL_SANDBOX_RELAXED) {
            stage_free(st, true);
            return sl_err_set(err, SL_ECONFIG, false, "function %s: a strict sandbox needs a "
                              "restart (sluice started with relaxed functions only, without "
                              "network namespaces)", fn->name);
        }
        if (old && keep(arg, fn->name)) {
            st->pools[i] = old;
            st->kept[i] = true;
            continue;
        }
        if (fn->idle_timeout_ms > 0)
            po.idle_ms = fn->idle_timeout_ms;
        rc = sl_fnpool_new(f->base, f->sb, fn, &po, &st->pools[i], err);
        if (rc != 0) {
            char msg[SL_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            sl_err_set(err, rc, false, "function %s: %s", fn->name, msg);
            stage_free(st, true);
            return rc;
        }
    }
    *out = st;
    return 0;
}

static void on_retire_check(evutil_socket_t fd, short what, void *arg)
{
    struct sl_functions *f = arg;
    size_t k = 0;

    (void)fd, (void)what;
    for (size_t i = 0; i < f->nretired; i++) {
        struct sl_fnpool *pool = f->retired[i];
        if (sl__fnpool_active(pool)) {
            f->retired[k++] = pool;
            continue;
        }
        SL_INFO(pool->inst, "replaced pool: its last invocation finished; stopping its "
                "environments");
        sl_fnpool_free(pool);
    }
    f->nretired = k;
    if (k == 0)
        event_del(f->retire_timer);
}

void sl_functions_commit(struct sl_functions *f, struct sl_functions_stage *st)
{
    const struct sl_config *conf = st->conf;

    /* every running pool not kept retires */
    for (size_t i = 0; i < f->npools; i++) {
        struct sl_fnpool *pool = f->pools[i];
        bool kept = false;
        for (size_t j = 0; pool && j < conf->nfunctions; j++)
            kept |= st->kept[j] && st->pools[j] == pool;
        if (!pool || kept)
            continue;
        f->retired = sl_realloc(f->retired, (f->nretired + 1) * sizeof(*f->retired));
        f->retired[f->nretired++] = pool;
    }
    for (size_t i = 0; i < conf->nfunctions; i++)
        if (st->kept[i])
            sl_fnpool_rebind(st->pools[i], &conf->functions[i], conf->server.concurrency_limit);
    free(f->pools);
    f->pools = st->pools;
    f->npools = conf->nfunctions;
    f->conf = conf;
    st->pools = NULL;
    stage_free(st, false);
    if (f->nretired > 0) {
        struct timeval tv = { 0, 100000 };
        if (!f->retire_timer)
            f->retire_timer = event_new(f->base, -1, EV_PERSIST, on_retire_check, f);
        event_add(f->retire_timer, &tv);
        on_retire_check(-1, 0, f);
    }
}

void sl_functions_abort(struct sl_functions_stage *st)
{
    stage_free(st, true);
}

static bool in_conf(const struct sl_config *conf, const struct sl_function_conf *fn)
{
    return conf->nfunctions && fn >= conf->functions && fn < conf->functions + conf->nfunctions;
}

bool sl_functions_uses(const struct sl_functions *f, const struct sl_config *conf)
{
    if (f->conf == conf)
        return true;
    for (size_t i = 0; i < f->npools; i++)
        if (f->pools[i] && in_conf(conf, f->pools[i]->fn))
            return true;
    for (size_t i = 0; i < f->nretired; i++)
        if (in_conf(conf, f->retired[i]->fn))
            return true;
    return false;
}
