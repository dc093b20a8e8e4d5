/* The ring of metric samples (core/mring.c): rates from counters, sums and
 * maxima of gauges across a key's series, percentiles of a histogram over
 * one interval, gaps, the hour's wrap, the series bound, the JSON. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mring.h"

static const struct sl_mring_rule rules[] = {
    { "source.records_per_s", "sluice_source_records_total", SL_MRING_RATE, "source",
      "outcome=received" },
    { "source.lag", "sluice_kafka_offset_lag", SL_MRING_SUM, "source", NULL },
    { "source.iterator_age_s", "sluice_kafka_iterator_age_seconds", SL_MRING_MAX, "source", NULL },
    { "function.duration_p50_s", "sluice_invocation_duration_seconds", SL_MRING_P50, "function",
      NULL },
    { "function.duration_p99_s", "sluice_invocation_duration_seconds", SL_MRING_P99, "function",
      NULL },
    { "all.concurrency", "sluice_concurrent_executions", SL_MRING_SUM, NULL, NULL },
};
#define NRULES (sizeof(rules) / sizeof(rules[0]))

struct fx {
    struct sl_metrics *m;
    struct sl_metric  *rec, *lag, *age, *dur, *conc;
};

static void fx_init(struct fx *x)
{
    x->m = sl_metrics_new();
    x->rec = sl_metrics_family(x->m, "sluice_source_records_total", SL_METRIC_COUNTER, "",
                               "source,outcome");
    x->lag = sl_metrics_family(x->m, "sluice_kafka_offset_lag", SL_METRIC_GAUGE, "",
                               "source,partition");
    x->age = sl_metrics_family(x->m, "sluice_kafka_iterator_age_seconds", SL_METRIC_GAUGE, "",
                               "source,partition");
    x->dur = sl_metrics_family(x->m, "sluice_invocation_duration_seconds", SL_METRIC_HISTOGRAM,
                               "", "function");
    x->conc = sl_metrics_family(x->m, "sluice_concurrent_executions", SL_METRIC_GAUGE, "", NULL);
}

static double last(struct sl_mring *r, const char *name, const char *key)
{
    double v;

    return sl_mring_last(r, name, key, &v) == 0 ? v : NAN;
}

Test(mring, rates_sums_maxima_and_percentiles)
{
    struct fx x;
    struct sl_mring *r;

    fx_init(&x);
    r = sl_mring_new(rules, NRULES, 100);
    sl_metric_add(x.rec, "orders" SL_METRIC_LV_SEP "received", 100);
    sl_metric_add(x.rec, "orders" SL_METRIC_LV_SEP "succeeded", 5000); /* not matched */
    sl_metric_set(x.lag, "orders" SL_METRIC_LV_SEP "0", 7);
    sl_metric_set(x.lag, "orders" SL_METRIC_LV_SEP "1", 5);
    sl_metric_set(x.lag, "audit" SL_METRIC_LV_SEP "0", 1);
    sl_metric_set(x.age, "orders" SL_METRIC_LV_SEP "0", 3);
    sl_metric_set(x.age, "orders" SL_METRIC_LV_SEP "1", 9);
    for (int i = 0; i < 100; i++)
        sl_metric_observe(x.dur, "echo", 0.3);          /* before the first sample */
    sl_metric_set(x.conc, NULL, 4);
    sl_mring_sample(r, x.m, 1000000);
    cr_expect(isnan(last(r, "source.records_per_s", "orders")), "no rate from one sample");
    cr_expect_float_eq(last(r, "source.lag", "orders"), 12, 1e-9, "partitions summed");
    cr_expect_float_eq(last(r, "source.lag", "audit"), 1, 1e-9);
    cr_expect_float_eq(last(r, "source.iterator_age_s", "orders"), 9, 1e-9, "the oldest");
    cr_expect_float_eq(last(r, "all.concurrency", ""), 4, 1e-9);
    cr_expect(isnan(last(r, "function.duration_p50_s", "echo")), "no interval yet");

    /* ten seconds later: 250 more received, durations in two buckets */
    sl_metric_add(x.rec, "orders" SL_METRIC_LV_SEP "received", 250);
    for (int i = 0; i < 98; i++)
        sl_metric_observe(x.dur, "echo", 0.004);         /* bucket (0.0025, 0.005] */
    sl_metric_observe(x.dur, "echo", 2);                 /* (1, 2.5] */
    sl_metric_observe(x.dur, "echo", 2);
    sl_mring_sample(r, x.m, 1010000);
    cr_expect_float_eq(last(r, "source.records_per_s", "orders"), 25, 1e-6);
    /* median: rank 50 of 100 in (0.0025, 0.005] holding 98: 0.0025 + 0.0025 * 50/98 */
    cr_expect_float_eq(last(r, "function.duration_p50_s", "echo"), 0.0025 + 0.0025 * 50 / 98.0,
                       1e-6, "the interval only, not the 0.3 s before it");
    /* p99: rank 99, past the 98 in the small bucket: (1, 2.5] at 1/2 */
    cr_expect_float_eq(last(r, "function.duration_p99_s", "echo"), 1.75, 1e-6);

    /* a counter that appears between samples started from nothing */
    sl_metric_add(x.rec, "audit" SL_METRIC_LV_SEP "received", 30);
    sl_mring_sample(r, x.m, 1015000);
    cr_expect_float_eq(last(r, "source.records_per_s", "audit"), 6, 1e-6,
                       "a new series' first interval counts from 0");

    /* nothing observed: a gap, not a zero */
    sl_mring_sample(r, x.m, 1020000);
    cr_expect(isnan(last(r, "function.duration_p99_s", "echo")));
    cr_expect_float_eq(last(r, "source.records_per_s", "orders"), 0, 1e-9);
    sl_mring_free(r);
    sl_metrics_free(x.m);
}

Test(mring, wraps_after_an_hour_and_serves_json)
{
    struct fx x;
    struct sl_mring *r;
    struct sl_jbuf b = { 0 };
    json_t *j, *t, *s, *v;
    json_error_t je;

    fx_init(&x);
    r = sl_mring_new(rules, NRULES, 100);
    for (int i = 0; i < SL_MRING_POINTS + 5; i++) {
        sl_metric_add(x.rec, "orders" SL_METRIC_LV_SEP "received", 10 * (i + 1));
        sl_mring_sample(r, x.m, 10000LL * i);
    }
    sl_mring_json(r, "source.records_per_s,source.lag", NULL, 0, NULL, NULL, &b);
    j = json_loads(b.p, 0, &je);
    cr_assert(j, "%s: %s", je.text, b.p);
    t = json_object_get(j, "t");
    cr_expect_eq(json_array_size(t), SL_MRING_POINTS);
    cr_expect_eq(json_integer_value(json_array_get(t, 0)), 10000LL * 5, "oldest first");
    cr_expect_eq(json_integer_value(json_array_get(t, SL_MRING_POINTS - 1)),
                 10000LL * (SL_MRING_POINTS + 4));
    s = json_object_get(j, "series");
    cr_assert_eq(json_array_size(s), 1, "only the names asked for that exist: %s", b.p);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(s, 0), "key")), "orders");
    v = json_object_get(json_array_get(s, 0), "v");
    cr_expect_eq(json_array_size(v), SL_MRING_POINTS);
    /* increments of 10*(i+1) over 10 s: the last point is (i+1) for i = 364 */
    cr_expect_float_eq(json_number_value(json_array_get(v, SL_MRING_POINTS - 1)), 365, 1e-3);
    json_decref(j);
    free(b.p);

    /* the last point only, for the overview's tables */
    b = (struct sl_jbuf){ 0 };
    sl_mring_json(r, NULL, "orders", 1, NULL, NULL, &b);
    j = json_loads(b.p, 0, &je);
    cr_assert(j);
    cr_expect_eq(json_array_size(json_object_get(j, "t")), 1);
    cr_expect_eq(json_array_size(json_object_get(json_array_get(json_object_get(j, "series"), 0),
                                                 "v")), 1);
    json_decref(j);
    free(b.p);
    sl_mring_free(r);
    sl_metrics_free(x.m);
}

static bool keep_s0(void *arg, const char *name, const char *key)
{
    (void)arg;
    (void)name;
    return strncmp(key, "s00", 3) == 0;
}

Test(mring, series_are_bounded_and_keys_escaped)
{
    struct fx x;
    struct sl_mring *r;
    struct sl_jbuf b = { 0 };
    json_t *j;
    char key[64];

    fx_init(&x);
    r = sl_mring_new(rules, NRULES, 10);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "s%02d\"<x>" SL_METRIC_LV_SEP "0", i);
        sl_metric_set(x.lag, key, 1);
    }
    sl_mring_sample(r, x.m, 1);
    sl_mring_sample(r, x.m, 2);
    cr_expect_eq(sl_mring_series(r), 10);
    cr_expect_geq(sl_mring_dropped(r), 40);
    sl_mring_json(r, NULL, NULL, 0, keep_s0, NULL, &b);
    j = json_loads(b.p, 0, NULL);
    cr_assert(j, "valid JSON with quotes in keys: %s", b.p);
    cr_expect_eq(json_array_size(json_object_get(j, "series")), 1, "what keep keeps: %s", b.p);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "series"), 0), "key")),
                     "s00\"<x>");
    json_decref(j);
    free(b.p);
    sl_mring_free(r);
    sl_metrics_free(x.m);
}
