/* sluice: the HTTP API at server.listen: Lambda's Invoke API
 * (POST /2015-03-31/functions/{name}/invocations), Lambda's management API
 * (api/mgmt.c), GET /healthz,
 * GET /readyz and GET /metrics (Prometheus text). libevent evhttp on the
 * loop. */
#ifndef SLUICE_API_H
#define SLUICE_API_H

#include <event2/buffer.h>
#include <event2/event.h>

#include "sluice/config.h"
#include "sluice/dispatch.h"
#include "sluice/metrics.h"

struct sl_api;

/* Bind server.listen and start serving. `conf`, `d` and `m` are borrowed. */
int sl_api_new(struct event_base *base, const struct sl_config *conf, struct sl_dispatcher *d,
               struct sl_metrics *m, struct sl_api **out, struct sl_err *err);

struct sl_engine;
struct sl_overrides;
struct sl_pool;

/* The management API's writes (sluice/overrides.h): `conf` is the
 * configuration sl_api_new was given, writable (the API changes its
 * settings on the loop thread, where every reader of them runs), `ov` the
 * overrides already applied to it, `pool` writes the overrides file off
 * the loop. All borrowed, and must outlive the API. Without this call the
 * management API only reads. */
void sl_api_manage(struct sl_api *a, struct sl_config *conf, struct sl_overrides *ov,
                   struct sl_pool *pool);

/* The running sources (an engine of sluice/poller.h), for the event
 * source mappings' state and for enabling and disabling them; NULL when
 * the engine is gone. Borrowed. */
void sl_api_set_engine(struct sl_api *a, struct sl_engine *e);

/* Serve GET /logs/tail (the live tail) from `ring` (borrowed: it must
 * outlive `a`); without one the tail answers 404. */
struct sl_logring;
void sl_api_set_logring(struct sl_api *a, struct sl_logring *ring);

/* Stop accepting: /readyz answers 503 and new invocations get 503. */
void sl_api_stop_accepting(struct sl_api *a);

void sl_api_free(struct sl_api *a);

/* Append the registry in Prometheus text format (0.0.4) to `out`, after
 * running its collectors. */
void sl_prom_render(struct sl_metrics *m, struct evbuffer *out);

#endif
