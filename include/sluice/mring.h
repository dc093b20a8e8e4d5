/* sluice: a ring of metric samples, the last hour of the registry in
 * memory (no external database), for the web console's charts.
 *
 * A table of rules says what to keep: each rule turns one family of the
 * registry into one series per value of a key label (records per second
 * of each source, p99 duration of each function...). sl_mring_sample reads
 * the registry (running its collectors, as a /metrics scrape does) and
 * appends one point to every series; the ring holds SL_MRING_POINTS points
 * per series and at most `max_series` series, so its memory is bounded
 * whatever label values appear. Loop thread only; nothing here blocks. */
#ifndef SLUICE_MRING_H
#define SLUICE_MRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/jbuf.h"
#include "sluice/metrics.h"

#define SL_MRING_POINTS  360        /* an hour at one point per 10 s */
#define SL_MRING_STEP_MS 10000      /* what the API samples at */

enum sl_mring_kind {
    SL_MRING_RATE = 0,   /* counter: increase per second since the previous sample */
    SL_MRING_SUM,        /* gauge: the values of the key's series, summed */
    SL_MRING_MAX,        /* gauge: the largest of them */
    SL_MRING_P50,        /* histogram: median of what was observed since the previous sample */
    SL_MRING_P99,        /* histogram: 99th percentile, same */
};

/* One series per value of label `key` of family `family`, or one series
 * with key "" when `key` is NULL. `match` ("outcome=received", NULL: all)
 * keeps only the registry's series whose label has that value. Several
 * registry series with the same key (Kafka partitions of one source) are
 * summed (or their maximum taken, or their buckets added). */
struct sl_mring_rule {
    const char *name;       /* served as: "source.records_per_s" */
    const char *family;     /* "sluice_source_records_total" */
    int         kind;       /* enum sl_mring_kind */
    const char *key;        /* "source", "function", NULL */
    const char *match;      /* "label=value" or NULL */
};

struct sl_mring;

/* `rules` (n of them) is borrowed and must outlive the ring. */
struct sl_mring *sl_mring_new(const struct sl_mring_rule *rules, size_t n, size_t max_series);
void sl_mring_free(struct sl_mring *r);

/* Append one point (at wall-clock `now_ms`) to every series. A series
 * that has no value this time (no observation, a first rate, a counter
 * that went back) gets a gap. */
void sl_mring_sample(struct sl_mring *r, struct sl_metrics *m, int64_t now_ms);

/* Series the ring holds, and those refused because it was full. */
size_t sl_mring_series(const struct sl_mring *r);
size_t sl_mring_dropped(const struct sl_mring *r);

/* Append to `out` the JSON
 *   {"step_s":10,"t":[ms,...],"series":[{"name":..,"key":..,"v":[x|null,...]}]}
 * with the last `points` points (0: all held), oldest first, of the series
 * whose name is in `names` (a comma-separated list; NULL or "": all) and,
 * when `key` is not NULL, whose key is `key`, and that `keep` (NULL: all)
 * keeps. */
typedef bool (*sl_mring_keep_fn)(void *arg, const char *name, const char *key);
void sl_mring_json(const struct sl_mring *r, const char *names, const char *key, size_t points,
                   sl_mring_keep_fn keep, void *arg, struct sl_jbuf *out);

/* The latest point of series (name, key): 0 and *v, or -1 when it has
 * none. */
int sl_mring_last(const struct sl_mring *r, const char *name, const char *key, double *v);

#endif
