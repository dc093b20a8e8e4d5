/* Live reload, as nginx does it: build the new configuration beside the
 * running one, then swap it in, restarting only what changed.
 *
 * SIGHUP and POST /admin/reload (`sluice reload CONFIG`) both end in
 * svc_reload(). The file is loaded and checked first; an invalid one
 * changes nothing. Then, from the difference (sl_config_diff):
 *   - server keys that cannot change while running are put back to their
 *     running values, each named in a warning;
 *   - sinks and function pools that are new or changed are made beside the
 *     running ones (prepare), and only when all could be made are they put
 *     in force (commit); replaced pools and sinks finish what they run and
 *     go; unchanged pools keep their warm environments;
 *   - the API, the engine and the log follow the new configuration;
 *   - a removed source drains (its batches in flight finish and are
 *     checkpointed, its poller stops) and goes; a changed one drains and
 *     starts again with the new settings; an added one starts.
 * Old configurations stay in memory while a pool, sink or source still
 * reads them, and are freed by a timer once nothing does.
 *
 * Also `sluice reload CONFIG`, the client. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "sluice/api.h"
#include "sluice/clock.h"
#include "sluice/config.h"
#include "sluice/dispatch.h"
#include "sluice/env.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/overrides.h"
#include "sluice/pollers.h"
#include "sluice/runtime.h"

#include "internal.h"

#define INST    "reload"
#define GC_MS   1000        /* how often retired configurations are looked at */

/* ------------------------------------------------------------------ */
/* Source slots                                                        */

struct sl__slot *sl__slot_new(struct sl__service *svc, const char *name)
{
    struct sl__slot *slot = sl_calloc(1, sizeof(*slot));

    slot->svc = svc;
    slot->name = sl_strdup(name);
    svc->slots = sl_realloc(svc->slots, (svc->nslots + 1) * sizeof(*svc->slots));
    svc->slots[svc->nslots++] = slot;
    return slot;
}

static struct sl__slot *slot_find(struct sl__service *svc, const char *name)
{
    for (size_t i = 0; i < svc->nslots; i++)
        if (strcmp(svc->slots[i]->name, name) == 0)
            return svc->slots[i];
    return NULL;
}

static void slot_remove(struct sl__slot *slot)
{
    struct sl__service *svc = slot->svc;

    for (size_t i = 0; i < svc->nslots; i++)
        if (svc->slots[i] == slot) {
            memmove(&svc->slots[i], &svc->slots[i + 1], (svc->nslots - i - 1) * sizeof(slot));
            svc->nslots--;
            break;
        }
    free(slot->name);
    free(slot);
}

int sl__slot_start(struct sl__slot *slot, const struct sl_source_conf *sc, struct sl_err *err)
{
    sl_poller_factory make = sl_poller_for(sc->type);
    struct sl_source *s = NULL;
    char inst[96];
    int rc;

    snprintf(inst, sizeof(inst), "source:%s", sc->name);
    slot->sc = sc;
    if (!sc->enabled) {
        SL_INFO(inst, "disabled (enabled: false)");
        return 0;
    }
    if (!make)
        return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: no poller for type %s",
                          sc->name, sl_conf_type_name(sc->type));
    rc = make(slot->svc->engine, sc, &s, err);
    if (rc == 0 && s->ops->start)
        rc = s->ops->start(s, err);
    if (s)
        slot->s = s; /* attached to the engine: freed with it or by a drain */
    if (rc == 0)
        SL_INFO(inst, "started (%s -> %s)", sl_conf_type_name(sc->type), sc->function);
    return rc;
}

/* A draining source is done: free it, then start what replaces it. */
static void on_slot_drained(void *arg)
{
    struct sl__slot *slot = arg;
    struct sl__service *svc = slot->svc;
    const struct sl_source_conf *next = slot->next;
    char inst[96];

    snprintf(inst, sizeof(inst), "source:%s", slot->name);
    sl_source_free(slot->s);
    slot->s = NULL;
    slot->draining = false;
    slot->next = NULL;
    if (!next || svc->sources_stopping) {
        SL_INFO(inst, "drained and stopped");
        slot_remove(slot);
        return;
    }
    SL_INFO(inst, "drained; starting with the new settings");
    {
        struct sl_err err;
        sl_err_clear(&err);
        if (sl__slot_start(slot, next, &err) != 0)
            SL_ERROR(inst, "cannot start: %s", err.msg[0] ? err.msg : sl_strerror(err.code));
    }
}

/* Stop `slot`'s source (if running) and start `next` after (NULL: none). */
static void slot_replace(struct sl__slot *slot, const struct sl_source_conf *next)
{
    /* one the management API enabled after the slot found it disabled */
    if (!slot->s && !slot->draining && slot->svc->engine)
        slot->s = sl_engine_source(slot->svc->engine, slot->name);
    slot->next = next && next->enabled ? next : NULL;
    if (slot->draining)
        return; /* on_slot_drained starts slot->next */
    if (slot->s) {
        slot->draining = true;
        sl_source_stop(slot->s, on_slot_drained, slot);
        return;
    }
    /* nothing running (disabled before): start now, or forget the slot */
    if (slot->next) {
        struct sl_err err;
        sl_err_clear(&err);
        slot->next = NULL;
        if (sl__slot_start(slot, next, &err) != 0)
            SL_ERROR(slot->name, "cannot start: %s",
                     err.msg[0] ? err.msg : sl_strerror(err.code));
    } else if (!next) {
        slot_remove(slot);
    } else {
        slot->sc = next; /* disabled, still configured */
    }
}

/* ------------------------------------------------------------------ */
/* Retired configurations                                              */

static bool slots_use(const struct sl__service *svc, const struct sl_config *c)
{
    const struct sl_source_conf *lo = c->sources, *hi = c->sources + c->nsources;

    for (size_t i = 0; i < svc->nslots; i++) {
        const struct sl__slot *slot = svc->slots[i];
        if ((slot->sc >= lo && slot->sc < hi) || (slot->next >= lo && slot->next < hi))
            return true;
    }
    return false;
}

static void on_gc(evutil_socket_t fd, short what, void *arg)
{
    struct sl__service *svc = arg;
    struct sl__gen **pp = &svc->old;

    (void)fd, (void)what;
    while (*pp) {
        struct sl__gen *g = *pp;
        if (slots_use(svc, g->conf) || (svc->fns && sl_functions_uses(svc->fns, g->conf)) ||
            (svc->d && sl_dispatcher_uses(svc->d, g->conf))) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        SL_DEBUG(SL_DBG_DISPATCH, INST, "a previous configuration is no longer read: freed");
        sl_config_free(g->conf);
        free(g);
    }
    if (!svc->old)
        event_del(svc->gc);
}

static void retire(struct sl__service *svc, struct sl_config *c)
{
    struct sl__gen *g = sl_calloc(1, sizeof(*g));
    struct timeval tv = { GC_MS / 1000, (GC_MS % 1000) * 1000 };

    g->conf = c;
    g->next = svc->old;
    svc->old = g;
    if (!svc->gc)
        svc->gc = event_new(svc->rt->base, -1, EV_PERSIST, on_gc, svc);
    event_add(svc->gc, &tv);
}

/* ------------------------------------------------------------------ */
/* The reload                                                          */

/* server keys read once at start: a reload keeps the running value */
static void keep_fixed(struct sl_config *old, struct sl_config *nc)
{
    static const struct {
        const char *key;
        size_t off;
        bool str;
    } fixed[] = {
#define S(k, f) { k, offsetof(struct sl_server_conf, f), true }
#define I(k, f) { k, offsetof(struct sl_server_conf, f), false }
        S("listen", listen), S("data_dir", data_dir), S("async_queue", async_queue),
        S("async_queue_key", async_queue_key), I("async_queue_reclaim_s", async_queue_reclaim_ms),
        I("worker_threads", worker_threads), I("sandbox_uid_base", sandbox_uid_base),
#undef S
#undef I
    };

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        char *po = (char *)&old->server + fixed[i].off, *pn = (char *)&nc->server + fixed[i].off;
        if (fixed[i].str) {
            char **so = (char **)po, **sn = (char **)pn;
            if ((!*so && !*sn) || (*so && *sn && strcmp(*so, *sn) == 0))
                continue;
            /* the data directory and the queue hold no secret, but an
             * async_queue URL may: name the key only */
            SL_WARN(INST, "server.%s cannot change while sluice runs: keeping the running "
                    "value until a restart", fixed[i].key);
            free(*sn);
            *sn = *so ? sl_strdup(*so) : NULL;
        } else {
            int64_t *io = (int64_t *)po, *in = (int64_t *)pn;
            if (*io == *in)
                continue;
            SL_WARN(INST, "server.%s cannot change while sluice runs: keeping %lld (the file "
                    "says %lld) until a restart", fixed[i].key, (long long)*io, (long long)*in);
            *in = *io;
        }
    }
}

static bool keep_function(void *arg, const char *name)
{
    return !sl_conf_diff_find(arg, SL_DIFF_FUNCTION, name);
}

static bool keep_sink(void *arg, const char *name)
{
    return !sl_conf_diff_find(arg, SL_DIFF_SINK, name);
}

static void reload_failed(struct sl__service *svc, const char *msg)
{
    sl_metric_add(svc->m_failures, NULL, 1);
    if (svc->api)
        sl_api_reload_status(svc->api, false, msg, sl_wall_ms());
}

/* The load's problems: logged one a line, and returned as one text. */
static char *report_diags(struct sl_diags *d)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        return sl_strdup("the configuration is invalid");
    sl_diags_print(d, f);
    fclose(f);
    if (len > 0 && text[len - 1] == '\n')
        text[--len] = '\0';
    {
        char *copy = sl_strdup(text);
        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            SL_ERROR(INST, "%s", line);
        free(copy);
    }
    return text;
}

static int svc_reload(void *arg, char **msg)
{
    struct sl__service *svc = arg;
    struct sl_config *old = svc->conf, *nc = NULL;
    struct sl_functions_stage *fst = NULL;
    struct sl_dispatcher_stage *dst = NULL;
    struct sl_conf_diff diff;
    struct sl_diags dg;
    struct sl_err err;
    char summary[1024];
    int rc;

    if (!svc->engine || !svc->d || !svc->fns || !svc->api) {
        *msg = sl_strdup("sluice is still starting");
        return SL_EAGAIN;
    }
    SL_INFO(INST, "reloading %s", svc->path);
    sl_diags_init(&dg, svc->path);
    rc = sl_config_load(svc->path, &sl_registry, &nc, &dg);
    if (rc != 0) {
        *msg = report_diags(&dg);
        sl_diags_destroy(&dg);
        SL_ERROR(INST, "reload failed: %s is invalid; still running the previous configuration",
                 svc->path);
        reload_failed(svc, *msg);
        return SL_ECONFIG;
    }
    sl_diags_destroy(&dg);
    if (svc->ov) {
        size_t bad;

        sl_diags_init(&dg, sl_overrides_path(svc->ov));
        bad = sl_overrides_check(svc->ov, nc, &dg);
        if (bad) {
            char *problems = report_diags(&dg);

            *msg = sl_asprintf("%s%zu runtime override%s (made through the management API) "
                               "no longer fit%s the file: change it back, or delete those "
                               "entries from %s", problems, bad, bad == 1 ? "" : "s",
                               bad == 1 ? "s" : "", sl_overrides_path(svc->ov));
            free(problems);
            sl_diags_destroy(&dg);
            sl_config_free(nc);
            SL_ERROR(INST, "reload failed: %s", *msg);
            reload_failed(svc, *msg);
            return SL_ECONFIG;
        }
        sl_diags_destroy(&dg);
        sl_overrides_apply(svc->ov, nc);
    }
    keep_fixed(old, nc);
    sl_config_diff(old, nc, &diff);

    /* everything that can fail, before anything changes */
    sl_err_clear(&err);
    rc = sl_dispatcher_prepare(svc->d, nc, keep_sink, &diff, &dst, &err);
    if (rc == 0) {
        rc = sl_functions_prepare(svc->fns, nc, keep_function, &diff, &fst, &err);
        if (rc != 0)
            sl_dispatcher_abort(dst);
    }
    if (rc != 0) {
        *msg = sl_asprintf("%s", err.msg[0] ? err.msg : sl_strerror(rc));
        SL_ERROR(INST, "reload failed: %s; still running the previous configuration", *msg);
        sl_conf_diff_destroy(&diff);
        sl_config_free(nc);
        reload_failed(svc, *msg);
        return rc;
    }

    /* the swap: nothing below fails */
    sl_functions_commit(svc->fns, fst);
    sl_dispatcher_commit(svc->d, dst);
    sl_api_set_config(svc->api, nc);
    if (svc->ov)
        sl_api_manage(svc->api, nc, svc->ov, svc->rt->pool);
    sl_engine_set_config(svc->engine, nc);
    /* the log sink reads the file's log_sink keys: a new one for `nc`; the
     * old one takes no more lines and is freed with the core */
    if (svc->ship) {
        sl_logship_stop(svc->ship);
        svc->old_ships = sl_realloc(svc->old_ships,
                                    (svc->nold_ships + 1) * sizeof(*svc->old_ships));
        svc->old_ships[svc->nold_ships++] = svc->ship;
    }
    svc->ship = sl_logship_new(svc->d, nc, svc->ring);
    sl__cli_log_setup(nc);
    svc->rt->opts.shutdown_grace_ms = nc->server.shutdown_grace_ms;
    svc->conf = nc;
    for (size_t i = 0; i < diff.n; i++) {
        const struct sl_conf_change *c = &diff.v[i];
        const struct sl_source_conf *sc = NULL;
        struct sl__slot *slot;

        if (c->section != SL_DIFF_SOURCE)
            continue;
        for (size_t j = 0; j < nc->nsources && !sc; j++)
            if (strcmp(nc->sources[j].name, c->name) == 0)
                sc = &nc->sources[j];
        slot = slot_find(svc, c->name);
        if (!slot && sc) {
            sl_err_clear(&err);
            if (sl__slot_start(sl__slot_new(svc, c->name), sc, &err) != 0)
                SL_ERROR(INST, "source %s cannot start: %s", c->name,
                         err.msg[0] ? err.msg : sl_strerror(err.code));
        } else if (slot) {
            SL_INFO(INST, "source %s %s", c->name,
                    !sc ? "removed: draining" : "changed: draining, then starting again");
            slot_replace(slot, sc);
        }
    }
    sl_conf_diff_summary(&diff, summary, sizeof(summary));
    sl_conf_diff_destroy(&diff);
    retire(svc, old);
    SL_INFO(INST, "reload: %s", summary);
    sl_metric_add(svc->m_reloads, NULL, 1);
    sl_api_reload_status(svc->api, true, summary, sl_wall_ms());
    *msg = sl_strdup(summary);
    return 0;
}

/* POST /admin/reload: the client names the file it means; it must be ours. */
static int api_reload(void *arg, const char *config, char **msg)
{
    struct sl__service *svc = arg;
    char a[PATH_MAX], b[PATH_MAX];

    *msg = NULL;
    if (config && (!realpath(config, a) || !realpath(svc->path, b) || strcmp(a, b) != 0)) {
        *msg = sl_asprintf("this service runs %s, not %s: reload it with that file", svc->path,
                           config);
        return SL_EINVAL;
    }
    {
        int rc = sl_runtime_reload(svc->rt, msg);
        if (rc != 0 && !*msg)
            *msg = sl_strdup(rc == SL_ESTOPPED ? "sluice is stopping" : sl_strerror(rc));
        return rc;
    }
}

void sl__reload_setup(struct sl__service *svc)
{
    svc->m_reloads = sl_metrics_family(svc->metrics, "sluice_config_reloads_total",
                                       SL_METRIC_COUNTER, "Configuration reloads that were "
                                       "applied (SIGHUP, POST /admin/reload).", NULL);
    svc->m_failures = sl_metrics_family(svc->metrics, "sluice_config_reload_failures_total",
                                        SL_METRIC_COUNTER, "Configuration reloads refused: "
                                        "the file was invalid or could not be applied; the "
                                        "previous configuration kept running.", NULL);
    sl_metric_add(svc->m_reloads, NULL, 0);
    sl_metric_add(svc->m_failures, NULL, 0);
    sl_runtime_set_reload(svc->rt, svc_reload, svc);
    sl_api_on_reload(svc->api, api_reload, svc);
}

void sl__reload_free(struct sl__service *svc)
{
    while (svc->old) {
        struct sl__gen *g = svc->old;
        svc->old = g->next;
        sl_config_free(g->conf);
        free(g);
    }
    while (svc->nslots > 0)
        slot_remove(svc->slots[0]);
    free(svc->slots);
    svc->slots = NULL;
}

/* ------------------------------------------------------------------ */
/* `sluice reload CONFIG`                                              */

struct answer {
    int                status;
    char              *body;
    struct event_base *base;
};

static void on_answer(struct evhttp_request *req, void *arg)
{
    struct answer *r = arg;

    if (req) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        r->status = evhttp_request_get_response_code(req);
        r->body = sl_malloc(n + 1);
        evbuffer_remove(in, r->body, n);
        r->body[n] = '\0';
    }
    event_base_loopbreak(r->base);
}

/* server.listen of a file that does not load (it may be the very file
 * being fixed): the value of `listen:` under a top-level `server:`, when
 * it is a plain scalar. NULL: not found. */
static char *scan_listen(const char *path)
{
    char line[1024], *found = NULL;
    bool in_server = false;
    FILE *f = fopen(path, "r");

    while (f && !found && fgets(line, sizeof(line), f)) {
        char *p = line, *e;
        if (line[0] != ' ' && line[0] != '\t' && line[0] != '#' && line[0] != '\n') {
            in_server = strncmp(line, "server:", 7) == 0;
            continue;
        }
        while (*p == ' ')
            p++;
        if (!in_server || strncmp(p, "listen:", 7) != 0)
            continue;
        p += 7;
        while (*p == ' ')
            p++;
        if (*p == '"' || *p == '\'')
            p++;
        for (e = p; *e && !strchr("\"'# \t\r\n", *e); e++)
            ;
        if (e > p && !memchr(p, '$', (size_t)(e - p)))
            found = sl_strndup(p, (size_t)(e - p));
    }
    if (f)
        fclose(f);
    return found;
}

/* http://host:port of server.listen, the loopback for a wildcard. */
static char *endpoint_of(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    size_t hl = colon ? (size_t)(colon - listen) : 0;

    if (!colon)
        return NULL;
    if (hl == 0 || (hl == 7 && strncmp(listen, "0.0.0.0", 7) == 0))
        return sl_asprintf("http://127.0.0.1%s", colon);
    if (hl == 4 && strncmp(listen, "[::]", 4) == 0)
        return sl_asprintf("http://[::1]%s", colon);
    return sl_asprintf("http://%s", listen);
}

int sl__cmd_reload(int argc, char **argv)
{
    const char *endpoint = getenv("SLUICE_ENDPOINT"), *token = getenv("SLUICE_TOKEN");
    const char *path = NULL;
    struct answer r = { 0 };
    struct evhttp_uri *uri = NULL;
    struct evhttp_connection *conn = NULL;
    struct evhttp_request *req;
    struct sl_config *c = NULL;
    char *ep = NULL, real[PATH_MAX], *body = NULL;
    json_t *ans = NULL;
    int code = EXIT_FAIL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc)
            endpoint = argv[++i];
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    if (!path) {
        fprintf(stderr, "usage: sluice reload CONFIG [--endpoint URL]\n");
        return EXIT_USAGE;
    }
    if (!realpath(path, real)) {
        fprintf(stderr, "sluice: cannot open %s\n", path);
        return EXIT_FAIL;
    }
    if (!endpoint) {
        /* where the service listens: the file's server.listen, if it loads */
        struct sl_diags d;
        sl_diags_init(&d, path);
        if (sl_config_load(path, &sl_registry, &c, &d) == 0) {
            endpoint = ep = endpoint_of(c->server.listen);
        } else {
            char *listen = scan_listen(path);
            if (listen)
                endpoint = ep = endpoint_of(listen);
            free(listen);
        }
        sl_diags_destroy(&d);
        sl_config_free(c);
        if (!endpoint) {
            endpoint = "http://127.0.0.1:9001";
            fprintf(stderr, "sluice: no server.listen found in %s: asking %s\n", path,
                    endpoint);
        }
    }
    uri = evhttp_uri_parse(endpoint);
    if (!uri || !evhttp_uri_get_host(uri)) {
        fprintf(stderr, "sluice: '%s' is not an http:// URL\n", endpoint);
        goto out;
    }
    r.base = event_base_new();
    conn = evhttp_connection_base_new(r.base, NULL, evhttp_uri_get_host(uri),
                                      (ev_uint16_t)(evhttp_uri_get_port(uri) > 0
                                                        ? evhttp_uri_get_port(uri) : 80));
    evhttp_connection_set_timeout(conn, 120);
    req = evhttp_request_new(on_answer, &r);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", evhttp_uri_get_host(uri));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    if (token && *token) {
        char *auth = sl_asprintf("Bearer %s", token);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
        free(auth);
    }
    {
        json_t *b = json_pack("{s:s}", "config", real);
        body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), body ? body : "{}",
                 body ? strlen(body) : 2);
    if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, "/admin/reload") != 0) {
        fprintf(stderr, "sluice: cannot send the request to %s\n", endpoint);
        goto out;
    }
    event_base_dispatch(r.base);
    if (r.status <= 0) {
        fprintf(stderr, "sluice: no answer from %s (is `sluice run` listening there?)\n",
                endpoint);
        goto out;
    }
    ans = json_loads(r.body ? r.body : "", 0, NULL);
    if (r.status == 200 && json_is_true(json_object_get(ans, "ok"))) {
        printf("reloaded: %s\n", json_string_value(json_object_get(ans, "summary")));
        code = EXIT_OK;
    } else if (json_is_string(json_object_get(ans, "errors"))) {
        fprintf(stderr, "sluice: reload refused; the service keeps its configuration:\n%s\n",
                json_string_value(json_object_get(ans, "errors")));
    } else {
        fprintf(stderr, "sluice: %d: %s\n", r.status, r.body ? r.body : "");
    }
out:
    json_decref(ans);
    free(body);
    free(ep);
    free(r.body);
    if (conn)
        evhttp_connection_free(conn);
    if (r.base)
        event_base_free(r.base);
    if (uri)
        evhttp_uri_free(uri);
    return code;
}
