/* sluice: the metrics registry. Families are created once (name, type,
 * help, label names); components add samples by label value. The
 * API renders it at GET /metrics (api/prom.c). Loop thread only. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum sl_metric_type { SL_METRIC_COUNTER = 0, SL_METRIC_GAUGE, SL_METRIC_HISTOGRAM };

struct sl_metrics;
struct sl_metric;

struct sl_metrics *sl_metrics_new(void);
void sl_metrics_free(struct sl_metrics *m);

/* Find or create a family. `label` is the label name, several names
 * separated by commas ("source,outcome", at most SL_METRIC_MAXLABELS), or
 * NULL. Names follow Prometheus rules ("sluice_invocations_total"). */
struct sl_metric *sl_metrics_family(struct sl_metrics *m, const char *name, int type,
                                    const char *help, const char *label);

/* `lv` is the label value, NULL for a family without a label; for several
 * labels, their values in order joined by SL_METRIC_LV_SEP. */
#define SL_METRIC_MAXLABELS 4
#define SL_METRIC_LV_SEP    "\x1f"

void sl_metric_add(struct sl_metric *f, const char *lv, double v);      /* counter, gauge */
void sl_metric_set(struct sl_metric *f, const char *lv, double v);      /* gauge */
void sl_metric_observe(struct sl_metric *f, const char *lv, double v);  /* histogram (seconds) */

/* Called before each render, to refresh gauges that are cheaper to read
 * than to track (queue depth, oldest event age, envs per function). */
typedef void (*sl_metrics_collect_fn)(void *arg, struct sl_metrics *m);
void sl_metrics_on_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg);
/* Unregister it (its owner is going away; the series stay). */
void sl_metrics_off_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg);

/* Histogram bucket upper bounds in seconds (+Inf is implied). */
#define SL_METRIC_NBUCKETS 15
extern const double sl_metric_buckets[SL_METRIC_NBUCKETS];
extern const char *const sl_metric_type_names[];   /* "counter", "gauge", "histogram" */

/* One series of a family: one label value. */
struct sl_metric_series {
    char    *lv;                             /* label value; NULL: no label */
    double   value;                          /* counter, gauge */
    uint64_t counts[SL_METRIC_NBUCKETS];     /* histogram: per bucket, not cumulative */
    uint64_t count;                          /* histogram: all observations */
    double   sum;
};

/* A family as a renderer sees it; valid during the callback only. */
struct sl_metric_view {
    const char *name, *help, *label;         /* label NULL: no label; "a,b": two */
    int         type;                        /* enum sl_metric_type */
    const struct sl_metric_series *s;        /* sorted by label value, unlabelled first */
    size_t      n;
};

typedef void (*sl_metrics_each_fn)(const struct sl_metric_view *v, void *arg);

/* Run the collectors, then call `fn` for every family in creation order. */
void sl_metrics_each(struct sl_metrics *m, sl_metrics_each_fn fn, void *arg);

#endif
