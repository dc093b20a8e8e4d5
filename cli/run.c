/* `sluice run CONFIG`: the service. Wires the parts together as runtime
 * components: the core (functions, dispatcher, API) and the sources. */
#include <stdio.h>
#include <stdlib.h>

#include "sluice/api.h"
#include "sluice/config.h"
#include "sluice/datadir.h"
#include "sluice/dispatch.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/logring.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/overrides.h"
#include "sluice/pollers.h"
#include "sluice/runtime.h"

#include "internal.h"

/* The service core as one runtime component: the functions' environments,
 * the dispatcher with its queue and sinks, and the HTTP API. It starts
 * before the sources that feed it and stops after them: on stop the API
 * stops accepting, in-flight invocations finish (within shutdown_grace_s,
 * which the runtime enforces), then everything is freed. */
struct core_comp {
    struct sl_runtime    *rt;
    const struct sl_config *conf;    /* borrowed: freed after the runtime */
    struct sl_config     *conf_rw;   /* the same, for the management API's writes */
    struct sl_overrides  *ov;        /* borrowed: the overrides applied to it */
    struct sl_functions  *fns;
    struct sl_metrics    *metrics;
    struct sl_dispatcher *d;
    struct sl_api        *api;
    struct sl_logring    *ring;      /* function logs: the live tail, the log sink */
    struct sl_logship    *ship;
    struct sl_component  *c;
};

static int core_start(void *ctx, struct sl_err *err)
{
    struct core_comp *cc = ctx;
    struct sl_runtime *rt = cc->rt;
    int rc;

    char why[512];

    /* before anything lands in it: ours alone, or no start */
    if (sl_data_dir_prepare(cc->conf->server.data_dir, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "%s", why);
    cc->metrics = sl_metrics_new();
    cc->ring = sl_logring_new((size_t)cc->conf->server.log_ring_kb * 1024, cc->metrics);
    rc = sl_functions_new(rt->base, cc->conf, NULL, &cc->fns, err);
    if (rc == 0) {
        sl_functions_set_logring(cc->fns, cc->ring);
        rc = sl_dispatcher_new(rt->base, cc->conf, cc->fns, cc->metrics, rt->pool, &cc->d, err);
    }
    if (rc == 0) {
        cc->ship = sl_logship_new(cc->d, cc->conf, cc->ring);
        rc = sl_api_new(rt->base, cc->conf, cc->d, cc->metrics, &cc->api, err);
    }
    if (rc == 0)
        sl_api_set_logring(cc->api, cc->ring);
    if (rc == 0 && cc->ov)
        sl_api_manage(cc->api, cc->conf_rw, cc->ov, rt->pool);
    return rc;
}

static void core_drained(void *arg)
{
    struct core_comp *cc = arg;

    sl_component_stopped(cc->c);
}

static void core_stop(void *ctx, struct sl_component *c)
{
    struct core_comp *cc = ctx;

    cc->c = c;
    if (cc->api)
        sl_api_stop_accepting(cc->api);
    if (cc->d)
        sl_dispatcher_drain(cc->d, core_drained, cc);
    else
        sl_component_stopped(c);
}

static void core_free(void *ctx)
{
    struct core_comp *cc = ctx;

    /* the API first (it stops answering); then the functions, whose last
     * results still reach the dispatcher; then the dispatcher */
    sl_api_free(cc->api);
    sl_dispatcher_abandon(cc->d); /* the worker pool is already gone */
    sl_functions_free(cc->fns);
    sl_logship_stop(cc->ship);
    sl_dispatcher_free(cc->d);
    sl_logship_free(cc->ship);
    sl_logring_free(cc->ring);
    sl_metrics_free(cc->metrics);
    free(cc);
}

static const struct sl_component_ops core_ops = {
    .kind = "core", .start = core_start, .stop = core_stop, .free = core_free,
};

/* The event source mappings: one outcome engine on the core's dispatcher,
 * one poller per enabled source. Registered after the core, so they stop
 * first: fetching ends, batches in flight finish and are checkpointed,
 * then the dispatcher drains. */
struct sources_comp {
    struct core_comp    *cc;
    struct sl_engine    *engine;
    struct sl_component *c;
};

/* A poller for a source enabled through the management API. */
static int make_source(struct sl_engine *e, const struct sl_source_conf *c,
                       struct sl_source **out, struct sl_err *err)
{
    sl_poller_factory make = sl_poller_for(c->type);

    if (!make)
        return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: no poller for type %s",
                          c->name, sl_conf_type_name(c->type));
    return make(e, c, out, err);
}

static int sources_start(void *ctx, struct sl_err *err)
{
    struct sources_comp *sc = ctx;
    const struct sl_config *conf = sc->cc->conf;
    int rc;

    rc = sl_engine_new(sc->cc->rt->base, conf, sc->cc->d, sc->cc->metrics, &sc->engine, err);
    if (rc == 0) {
        sl_engine_set_maker(sc->engine, make_source);
        sl_api_set_engine(sc->cc->api, sc->engine);
    }
    for (size_t i = 0; rc == 0 && i < conf->nsources; i++) {
        const struct sl_source_conf *sconf = &conf->sources[i];
        sl_poller_factory make = sl_poller_for(sconf->type);
        struct sl_source *s = NULL;
        char inst[96];

        snprintf(inst, sizeof(inst), "source:%s", sconf->name);
        if (!sconf->enabled) {
            SL_INFO(inst, "disabled (enabled: false%s)",
                    sc->cc->ov && json_object_get(sl_overrides_source(sc->cc->ov, sconf->name),
                                                  "enabled")
                        ? ", by the management API's override"
                        : "");
            continue;
        }
        if (!make)
            return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: no poller for type %s",
                              sconf->name, sl_conf_type_name(sconf->type));
        rc = make(sc->engine, sconf, &s, err);
        if (rc == 0 && s->ops->start)
            rc = s->ops->start(s, err);
        if (rc == 0)
            SL_INFO(inst, "started (%s -> %s)", sl_conf_type_name(sconf->type), sconf->function);
    }
    return rc;
}

static void sources_drained(void *arg)
{
    struct sources_comp *sc = arg;

    sl_component_stopped(sc->c);
}

static void sources_stop(void *ctx, struct sl_component *c)
{
    struct sources_comp *sc = ctx;

    sc->c = c;
    if (sc->engine)
        sl_engine_stop(sc->engine, sources_drained, sc);
    else
        sl_component_stopped(c);
}

static void sources_free(void *ctx)
{
    struct sources_comp *sc = ctx;

    sl_api_set_engine(sc->cc->api, NULL);
    sl_engine_free(sc->engine);
    free(sc);
}

static const struct sl_component_ops sources_ops = {
    .kind = "sources", .start = sources_start, .stop = sources_stop, .free = sources_free,
};

int sl__cmd_run(int argc, char **argv)
{
    struct sl_runtime_opts opts;
    struct sl_runtime *rt;
    struct sl_config *c;
    struct sl_overrides *ov = NULL;
    struct sl_err err;
    int code;

    if (argc != 2) {
        fprintf(stderr, "usage: sluice run CONFIG\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(argv[1], &c) != 0)
        return EXIT_FAIL;
    sl__cli_log_setup(c);
    if (sl__cli_overrides(argv[1], c, &ov) != 0) {
        sl_config_free(c);
        return EXIT_FAIL;
    }
    sl_overrides_apply(ov, c);
    if (!sl_overrides_empty(ov))
        SL_INFO(NULL, "runtime overrides in force from %s (sluice lint shows them)",
                sl_overrides_path(ov));
    /* the loop never waits for stderr: lines queue for a writer thread */
    if (sl_log_start_writer(SL__LOG_QUEUE) != 0)
        SL_WARN(NULL, "cannot start the log writer thread: writing the log on the loop");

    sl_err_clear(&err);
    opts.shutdown_grace_ms = c->server.shutdown_grace_ms;
    opts.worker_threads = (int)c->server.worker_threads;
    if (sl_runtime_new(&opts, &rt, &err) != 0) {
        SL_ERROR(NULL, "cannot start: %s", err.msg);
        sl_log_stop_writer(SL__LOG_STOP_MS);
        sl_overrides_free(ov);
        sl_config_free(c);
        return EXIT_FAIL;
    }
    {
        struct core_comp *cc = sl_calloc(1, sizeof(*cc));
        struct sources_comp *sc = sl_calloc(1, sizeof(*sc));
        cc->rt = rt;
        cc->conf = c;
        cc->conf_rw = c;
        cc->ov = ov;
        sc->cc = cc;
        sl_runtime_add(rt, "sluice", &core_ops, cc);
        if (c->nsources > 0)
            sl_runtime_add(rt, "all", &sources_ops, sc);
        else
            free(sc);
    }
    SL_INFO(NULL, "sluice %s running %s: %zu functions, %zu sources, %zu sinks", SL_VERSION,
            argv[1], c->nfunctions, c->nsources, c->nsinks);
    code = sl_runtime_run(rt);
    SL_INFO(NULL, "stopped (exit code %d)", code);
    sl_runtime_free(rt);
    sl_log_stop_writer(SL__LOG_STOP_MS);
    sl_overrides_free(ov);
    sl_config_free(c);
    return code;
}
