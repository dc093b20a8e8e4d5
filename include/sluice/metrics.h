/* sluice: metrics registry, rendered in Prometheus text format at
 * GET /metrics. Families are created once (name, type, help, at most one
 * label); components add samples by label value. Loop thread only. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <event2/buffer.h>

enum sl_metric_type { SL_METRIC_COUNTER = 0, SL_METRIC_GAUGE, SL_METRIC_HISTOGRAM };

struct sl_metrics;
struct sl_metric;

struct sl_metrics *sl_metrics_new(void);
void sl_metrics_free(struct sl_metrics *m);

/* Find or create a family. `label` is the label name or NULL. Names
 * follow Prometheus rules ("sluice_invocations_total"). */
struct sl_metric *sl_metrics_family(struct sl_metrics *m, const char *name, int type,
                                    const char *help, const char *label);

/* `lv` is the label value, NULL for a family without a label. */
void sl_metric_add(struct sl_metric *f, const char *lv, double v);      /* counter, gauge */
void sl_metric_set(struct sl_metric *f, const char *lv, double v);      /* gauge */
void sl_metric_observe(struct sl_metric *f, const char *lv, double v);  /* histogram (seconds) */

/* Called before each render, to refresh gauges that are cheaper to read
 * than to track (queue depth, oldest event age, envs per function). */
typedef void (*sl_metrics_collect_fn)(void *arg, struct sl_metrics *m);
void sl_metrics_on_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg);
/* Unregister it (its owner is going away; the series stay). */
void sl_metrics_off_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg);

void sl_metrics_render(struct sl_metrics *m, struct evbuffer *out);

#endif
