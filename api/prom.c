/* The metrics registry in Prometheus text exposition format 0.0.4, for
 * GET /metrics. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "sluice/api.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"

/* Shortest text that reads back as the same double. */
static void put_value(struct evbuffer *out, double v)
{
    char buf[64];

    if (isnan(v)) {
        evbuffer_add(out, "NaN", 3);
        return;
    }
    if (isinf(v)) {
        evbuffer_add_printf(out, "%sInf", v > 0 ? "+" : "-");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        evbuffer_add_printf(out, "%.0f", v);
        return;
    }
    snprintf(buf, sizeof(buf), "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, sizeof(buf), "%.17g", v);
    evbuffer_add(out, buf, strlen(buf));
}

/* HELP text escapes backslash and newline; label values also '"'. */
static void put_escaped(struct evbuffer *out, const char *s, bool quote)
{
    const char *run = s;

    for (; *s; s++) {
        const char *rep = NULL;

        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quote)
            rep = "\\\"";
        if (rep) {
            evbuffer_add(out, run, (size_t)(s - run));
            evbuffer_add(out, rep, strlen(rep));
            run = s + 1;
        }
    }
    evbuffer_add(out, run, (size_t)(s - run));
}

/* label="value" pairs: the family's label names (comma separated) with
 * the series' value parts (SL_METRIC_LV_SEP separated), in order; a value
 * with fewer parts than names gets "" for the rest. */
static void put_labels(struct evbuffer *out, const char *names, const char *lv)
{
    const char *n = names, *v = lv;
    bool first = true;

    while (*n) {
        size_t nl = strcspn(n, ",");
        size_t vl = v ? strcspn(v, SL_METRIC_LV_SEP) : 0;
        char *part = sl_strndup(v ? v : "", vl);

        evbuffer_add_printf(out, "%s%.*s=\"", first ? "" : ",", (int)nl, n);
        put_escaped(out, part, true);
        evbuffer_add(out, "\"", 1);
        free(part);
        first = false;
        n += nl + (n[nl] == ',');
        if (v)
            v = v[vl] ? v + vl + 1 : NULL;
    }
}

/* `name{label="lv",le="x"}`; `suffix` is "_bucket", "_sum"... or "". */
static void put_sample_name(struct evbuffer *out, const struct sl_metric_view *f,
                            const struct sl_metric_series *s, const char *suffix, const char *le)
{
    bool open = false;

    evbuffer_add_printf(out, "%s%s", f->name, suffix);
    if (s->lv) {
        evbuffer_add(out, "{", 1);
        put_labels(out, f->label, s->lv);
        open = true;
    }
    if (le) {
        evbuffer_add_printf(out, "%sle=\"%s\"", open ? "," : "{", le);
        open = true;
    }
    if (open)
        evbuffer_add(out, "}", 1);
    evbuffer_add(out, " ", 1);
}

static void render_family(const struct sl_metric_view *f, void *arg)
{
    struct evbuffer *out = arg;

    evbuffer_add_printf(out, "# HELP %s ", f->name);
    put_escaped(out, f->help, false);
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", f->name, sl_metric_type_names[f->type]);
    for (size_t i = 0; i < f->n; i++) {
        const struct sl_metric_series *s = &f->s[i];

        if (f->type != SL_METRIC_HISTOGRAM) {
            put_sample_name(out, f, s, "", NULL);
            put_value(out, s->value);
            evbuffer_add(out, "\n", 1);
            continue;
        }
        {
            uint64_t cum = 0;
            char le[32];

            for (size_t b = 0; b < SL_METRIC_NBUCKETS; b++) {
                cum += s->counts[b];
                snprintf(le, sizeof(le), "%g", sl_metric_buckets[b]);
                put_sample_name(out, f, s, "_bucket", le);
                evbuffer_add_printf(out, "%llu\n", (unsigned long long)cum);
            }
            put_sample_name(out, f, s, "_bucket", "+Inf");
            evbuffer_add_printf(out, "%llu\n", (unsigned long long)s->count);
            put_sample_name(out, f, s, "_sum", NULL);
            put_value(out, s->sum);
            evbuffer_add(out, "\n", 1);
            put_sample_name(out, f, s, "_count", NULL);
            evbuffer_add_printf(out, "%llu\n", (unsigned long long)s->count);
        }
    }
}

void sl_prom_render(struct sl_metrics *m, struct evbuffer *out)
{
    sl_metrics_each(m, render_family, out);
}
