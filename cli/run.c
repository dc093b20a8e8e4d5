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
 * which the runtime enforces), then everything is freed. The configuration
 * in force is svc->conf; a reload (reload.c) swaps it. */
struct core_comp {
    struct sl__service  *svc;
    struct sl_component *c;
};

static int core_start(void *ctx, struct sl_err *err)
{
    struct sl__service *svc = ((struct core_comp *)ctx)->svc;
    struct sl_runtime *rt = svc->rt;
    int rc;

    char why[512];

    /* before anything lands in it: ours alone, or no start */
    if (sl_data_dir_prepare(svc->conf->server.data_dir, why, sizeof(why)) != 0)
        return sl_err_set(err, SL_ECONFIG, false, "%s", why);
    svc->metrics = sl_metrics_new();
    svc->ring = sl_logring_new((size_t)svc->conf->server.log_ring_kb * 1024, svc->metrics);
    rc = sl_functions_new(rt->base, svc->conf, NULL, &svc->fns, err);
    if (rc == 0) {
        sl_functions_set_logring(svc->fns, svc->ring);
        rc = sl_dispatcher_new(rt->base, svc->conf, svc->fns, svc->metrics, rt->pool, &svc->d,
                               err);
    }
    if (rc == 0) {
        svc->ship = sl_logship_new(svc->d, svc->conf, svc->ring);
        rc = sl_api_new(rt->base, svc->conf, svc->d, svc->metrics, &svc->api, err);
    }
    if (rc == 0) {
        sl_api_set_logring(svc->api, svc->ring);
        if (svc->ov)
            sl_api_manage(svc->api, svc->conf, svc->ov, rt->pool);
        sl__reload_setup(svc);
    }
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
    if (cc->svc->api)
        sl_api_stop_accepting(cc->svc->api);
    if (cc->svc->d)
        sl_dispatcher_drain(cc->svc->d, core_drained, cc);
    else
        sl_component_stopped(c);
}

static void core_free(void *ctx)
{
    struct sl__service *svc = ((struct core_comp *)ctx)->svc;

    /* the API first (it stops answering); then the functions, whose last
     * results still reach the dispatcher; then the dispatcher */
    sl_api_free(svc->api);
    sl_dispatcher_abandon(svc->d); /* the worker pool is already gone */
    sl_functions_free(svc->fns);
    sl_logship_stop(svc->ship);
    for (size_t i = 0; i < svc->nold_ships; i++)
        sl_logship_stop(svc->old_ships[i]);
    sl_dispatcher_free(svc->d);
    sl_logship_free(svc->ship);
    for (size_t i = 0; i < svc->nold_ships; i++)
        sl_logship_free(svc->old_ships[i]);
    free(svc->old_ships);
    svc->old_ships = NULL;
    svc->nold_ships = 0;
    svc->ship = NULL;
    sl_logring_free(svc->ring);
    svc->ring = NULL;
    sl_metrics_free(svc->metrics);
    if (svc->gc)
        event_free(svc->gc); /* before the loop goes */
    svc->gc = NULL;
    svc->api = NULL;
    svc->fns = NULL;
    svc->d = NULL;
    svc->metrics = NULL;
    free(ctx);
}

static const struct sl_component_ops core_ops = {
    .kind = "core", .start = core_start, .stop = core_stop, .free = core_free,
};

/* The event source mappings: one outcome engine on the core's dispatcher,
 * one poller per enabled source, each in a slot that a reload can drain,
 * restart or fill (reload.c). Registered after the core, so they stop
 * first: fetching ends, batches in flight finish and are checkpointed,
 * then the dispatcher drains. */
struct sources_comp {
    struct sl__service  *svc;
    struct sl_component *c;
};

/* A poller for a source the management API enables (one disabled when
 * its slot started); the slot finds it in the engine (reload.c). */
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
    struct sl__service *svc = ((struct sources_comp *)ctx)->svc;
    const struct sl_config *conf = svc->conf;
    int rc;

    rc = sl_engine_new(svc->rt->base, conf, svc->d, svc->metrics, &svc->engine, err);
    if (rc == 0) {
        sl_engine_set_maker(svc->engine, make_source);
        sl_api_set_engine(svc->api, svc->engine);
    }
    for (size_t i = 0; rc == 0 && i < conf->nsources; i++)
        rc = sl__slot_start(sl__slot_new(svc, conf->sources[i].name), &conf->sources[i], err);
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
    sc->svc->sources_stopping = true;
    if (sc->svc->engine)
        sl_engine_stop(sc->svc->engine, sources_drained, sc);
    else
        sl_component_stopped(c);
}

static void sources_free(void *ctx)
{
    struct sl__service *svc = ((struct sources_comp *)ctx)->svc;

    svc->sources_stopping = true;
    sl_api_set_engine(svc->api, NULL);
    sl_engine_free(svc->engine);
    svc->engine = NULL;
    for (size_t i = 0; i < svc->nslots; i++)
        svc->slots[i]->s = NULL; /* freed with the engine */
    free(ctx);
}

static const struct sl_component_ops sources_ops = {
    .kind = "sources", .start = sources_start, .stop = sources_stop, .free = sources_free,
};

int sl__cmd_run(int argc, char **argv)
{
    struct sl__service svc = { 0 };
    struct sl_runtime_opts opts = { 0 };
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
    if (sl__cli_overrides(argv[1], c, &ov) != 0) {
        sl_config_free(c);
        return EXIT_FAIL;
    }
    sl_overrides_apply(ov, c);
    sl__cli_log_setup(c);
    if (!sl_overrides_empty(ov))
        SL_INFO(NULL, "runtime overrides in force from %s (sluice lint shows them)",
                sl_overrides_path(ov));
    /* the loop never waits for stderr: lines queue for a writer thread */
    if (sl_log_start_writer(SL__LOG_QUEUE) != 0)
        SL_WARN(NULL, "cannot start the log writer thread: writing the log on the loop");

    sl_err_clear(&err);
    opts.shutdown_grace_ms = c->server.shutdown_grace_ms;
    opts.worker_threads = (int)c->server.worker_threads;
    opts.notify = 1;    /* systemd's Type=notify: READY=1, STOPPING=1, WATCHDOG=1 */
    if (sl_runtime_new(&opts, &rt, &err) != 0) {
        SL_ERROR(NULL, "cannot start: %s", err.msg);
        sl_log_stop_writer(SL__LOG_STOP_MS);
        sl_overrides_free(ov);
        sl_config_free(c);
        return EXIT_FAIL;
    }
    svc.rt = rt;
    svc.path = argv[1];
    svc.conf = c;
    svc.ov = ov;
    {
        struct core_comp *cc = sl_calloc(1, sizeof(*cc));
        struct sources_comp *sc = sl_calloc(1, sizeof(*sc));
        cc->svc = &svc;
        sc->svc = &svc;
        sl_runtime_add(rt, "sluice", &core_ops, cc);
        /* always: a reload may add the first source */
        sl_runtime_add(rt, "all", &sources_ops, sc);
    }
    SL_INFO(NULL, "sluice %s running %s: %zu functions, %zu sources, %zu sinks", SL_VERSION,
            argv[1], c->nfunctions, c->nsources, c->nsinks);
    code = sl_runtime_run(rt);
    SL_INFO(NULL, "stopped (exit code %d)", code);
    sl_runtime_free(rt);
    sl__reload_free(&svc);
    sl_log_stop_writer(SL__LOG_STOP_MS);
    sl_overrides_free(svc.ov);
    sl_config_free(svc.conf);
    return code;
}
