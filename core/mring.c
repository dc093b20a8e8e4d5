/* The ring of metric samples (sluice/mring.h): the last hour of chosen
 * registry families, derived (rates, sums, percentiles) at sampling time
 * so a point is one float and the ring's size is fixed by its bounds.
 *
 * A sample walks the registry once (sl_metrics_each), and for each family
 * a rule names, each of its series: split the label value, check the
 * rule's match, find the ring series of its key (the previous one is
 * tried first: a family's series are sorted, so the partitions of one
 * source come together), accumulate. Then every ring series turns its
 * accumulator into the point. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/mring.h"

#define NB (SL_METRIC_NBUCKETS + 1)     /* the fixed buckets and +Inf */

struct mseries {
    size_t   rule;
    char    *key;
    float    v[SL_MRING_POINTS];         /* NaN: no value at that point */
    /* this sample's accumulator */
    bool     touched;
    double   acc;
    uint64_t accb[NB];
    /* the previous sample's totals (rates, percentiles) */
    bool     has_prev;
    double   prev;
    uint64_t prevb[NB];
};

struct sl_mring {
    const struct sl_mring_rule *rules;
    size_t          nrules;
    size_t          max_series;
    struct mseries **s;
    size_t          n;
    size_t          dropped;
    bool            full_logged;
    int64_t         t[SL_MRING_POINTS]; /* wall-clock ms of each point */
    size_t          head;               /* index of the latest point */
    size_t          npoints;            /* points held, up to SL_MRING_POINTS */
    int64_t         last_ms;
    struct mseries *hint;               /* the last series found */
};

struct sl_mring *sl_mring_new(const struct sl_mring_rule *rules, size_t n, size_t max_series)
{
    struct sl_mring *r = sl_calloc(1, sizeof(*r));

    r->rules = rules;
    r->nrules = n;
    r->max_series = max_series;
    r->head = SL_MRING_POINTS - 1;
    return r;
}

void sl_mring_free(struct sl_mring *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->s[i]->key);
        free(r->s[i]);
    }
    free(r->s);
    free(r);
}

size_t sl_mring_series(const struct sl_mring *r)
{
    return r->n;
}

size_t sl_mring_dropped(const struct sl_mring *r)
{
    return r->dropped;
}

/* ------------------------------------------------------------------ */
/* Sampling                                                            */

static struct mseries *find(struct sl_mring *r, size_t rule, const char *key, size_t klen,
                            bool create)
{
    struct mseries *s = r->hint;

    if (s && s->rule == rule && strlen(s->key) == klen && memcmp(s->key, key, klen) == 0)
        return s;
    for (size_t i = 0; i < r->n; i++) {
        s = r->s[i];
        if (s->rule == rule && strlen(s->key) == klen && memcmp(s->key, key, klen) == 0)
            return r->hint = s;
    }
    if (!create)
        return NULL;
    if (r->n >= r->max_series) {
        r->dropped++;
        if (!r->full_logged)
            SL_WARN("console", "the sample ring holds %zu series; %s{%.*s} and later ones are "
                    "not charted", r->max_series, r->rules[rule].name, (int)klen, key);
        r->full_logged = true;
        return NULL;
    }
    s = sl_calloc(1, sizeof(*s));
    s->rule = rule;
    s->key = sl_strndup(key, klen);
    for (size_t i = 0; i < SL_MRING_POINTS; i++)
        s->v[i] = NAN;
    /* the registry creates a series on its first use: one that appears
     * after the ring's first sample was 0 (nothing) at the one before */
    s->has_prev = r->npoints > 0;
    r->s = sl_realloc(r->s, (r->n + 1) * sizeof(*r->s));
    r->s[r->n++] = s;
    return r->hint = s;
}

/* The value of label `name` in a series of a family labelled `names`
 * ("a,b") whose label value is `lv` ("x" SEP "y"): *v, *vlen. */
static bool label_part(const char *names, const char *lv, const char *name, const char **v,
                       size_t *vlen)
{
    size_t want = strlen(name);
    const char *n = names, *p = lv;

    while (n && *n) {
        size_t nl = strcspn(n, ",");
        size_t pl = p ? strcspn(p, SL_METRIC_LV_SEP) : 0;

        if (nl == want && memcmp(n, name, nl) == 0) {
            *v = p ? p : "";
            *vlen = pl;
            return true;
        }
        n += nl + (n[nl] == ',');
        if (p)
            p = p[pl] ? p + pl + 1 : NULL;
    }
    return false;
}

static bool matches(const struct sl_mring_rule *rule, const struct sl_metric_view *f,
                    const char *lv)
{
    const char *eq, *v;
    size_t vlen;
    char name[64];

    if (!rule->match)
        return true;
    eq = strchr(rule->match, '=');
    if (!eq || (size_t)(eq - rule->match) >= sizeof(name) || !f->label)
        return false;
    memcpy(name, rule->match, (size_t)(eq - rule->match));
    name[eq - rule->match] = '\0';
    return label_part(f->label, lv, name, &v, &vlen) && strlen(eq + 1) == vlen &&
           memcmp(eq + 1, v, vlen) == 0;
}

struct walk {
    struct sl_mring *r;
};

static void accumulate(const struct sl_metric_view *f, void *arg)
{
    struct sl_mring *r = ((struct walk *)arg)->r;

    for (size_t ri = 0; ri < r->nrules; ri++) {
        const struct sl_mring_rule *rule = &r->rules[ri];

        if (strcmp(rule->family, f->name) != 0)
            continue;
        for (size_t i = 0; i < f->n; i++) {
            const struct sl_metric_series *ms = &f->s[i];
            const char *key = "";
            size_t klen = 0;
            struct mseries *s;

            if (rule->key && (!f->label || !ms->lv ||
                              !label_part(f->label, ms->lv, rule->key, &key, &klen)))
                continue;
            if (!matches(rule, f, ms->lv) || !(s = find(r, ri, key, klen, true)))
                continue;
            if (rule->kind == SL_MRING_P50 || rule->kind == SL_MRING_P99) {
                if (f->type != SL_METRIC_HISTOGRAM)
                    continue;
                for (size_t b = 0; b < SL_METRIC_NBUCKETS; b++)
                    s->accb[b] += ms->counts[b];
                s->accb[NB - 1] += ms->count;  /* all of them; +Inf's own are the rest */
            } else if (rule->kind == SL_MRING_MAX) {
                s->acc = s->touched ? fmax(s->acc, ms->value) : ms->value;
            } else {
                s->acc += ms->value;
            }
            s->touched = true;
        }
    }
}

/* Prometheus' histogram_quantile over one interval's bucket counts:
 * linear within the bucket holding the rank; in +Inf, the last bound. */
static double quantile(double q, const uint64_t *d)
{
    uint64_t total = d[NB - 1], seen = 0;
    double rank = q * (double)total;

    for (size_t b = 0; b < SL_METRIC_NBUCKETS; b++) {
        double lo = b ? sl_metric_buckets[b - 1] : 0;

        if (d[b] > 0 && (double)(seen + d[b]) >= rank)
            return lo + (sl_metric_buckets[b] - lo) * (rank - (double)seen) / (double)d[b];
        seen += d[b];
    }
    return sl_metric_buckets[SL_METRIC_NBUCKETS - 1];
}

static float point(struct sl_mring *r, struct mseries *s, double dt_s)
{
    const struct sl_mring_rule *rule = &r->rules[s->rule];
    float out = NAN;

    switch (rule->kind) {
    case SL_MRING_SUM:
    case SL_MRING_MAX:
        return s->touched ? (float)s->acc : NAN;
    case SL_MRING_RATE:
        if (!s->touched)
            return NAN;
        if (s->has_prev && dt_s > 0 && s->acc >= s->prev)
            out = (float)((s->acc - s->prev) / dt_s);
        s->prev = s->acc;
        s->has_prev = true;
        return out;
    default: {
        uint64_t d[NB];
        bool back = false;

        if (!s->touched)
            return NAN;
        for (size_t b = 0; b < NB; b++) {
            back |= s->accb[b] < s->prevb[b];
            d[b] = s->accb[b] - s->prevb[b];
        }
        if (s->has_prev && !back && d[NB - 1] > 0)
            out = (float)quantile(rule->kind == SL_MRING_P50 ? 0.5 : 0.99, d);
        memcpy(s->prevb, s->accb, sizeof(s->prevb));
        s->has_prev = true;
        return out;
    }
    }
}

void sl_mring_sample(struct sl_mring *r, struct sl_metrics *m, int64_t now_ms)
{
    struct walk w = { .r = r };
    double dt_s = r->npoints ? (double)(now_ms - r->last_ms) / 1000.0 : 0;

    for (size_t i = 0; i < r->n; i++) {
        struct mseries *s = r->s[i];
        s->touched = false;
        s->acc = 0;
        memset(s->accb, 0, sizeof(s->accb));
    }
    sl_metrics_each(m, accumulate, &w);
    r->head = (r->head + 1) % SL_MRING_POINTS;
    r->t[r->head] = now_ms;
    if (r->npoints < SL_MRING_POINTS)
        r->npoints++;
    r->last_ms = now_ms;
    for (size_t i = 0; i < r->n; i++)
        r->s[i]->v[r->head] = point(r, r->s[i], dt_s);
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

static bool name_listed(const char *names, const char *name)
{
    size_t want = strlen(name);

    if (!names || !*names)
        return true;
    while (*names) {
        size_t l = strcspn(names, ",");
        if (l == want && memcmp(names, name, l) == 0)
            return true;
        names += l + (names[l] == ',');
    }
    return false;
}

static void put_float(struct sl_jbuf *out, float v)
{
    if (isnan(v) || isinf(v))
        sl_jbuf_puts(out, "null");
    else
        sl_jbuf_printf(out, "%.6g", (double)v);
}

void sl_mring_json(const struct sl_mring *r, const char *names, const char *key, size_t points,
                   sl_mring_keep_fn keep, void *arg, struct sl_jbuf *out)
{
    size_t n = points && points < r->npoints ? points : r->npoints;
    size_t first = (r->head + SL_MRING_POINTS + 1 - n) % SL_MRING_POINTS;
    bool any = false;

    sl_jbuf_printf(out, "{\"step_s\":%d,\"t\":[", SL_MRING_STEP_MS / 1000);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sl_jbuf_puts(out, ",");
        sl_jbuf_i64(out, r->t[(first + i) % SL_MRING_POINTS]);
    }
    sl_jbuf_puts(out, "],\"series\":[");
    for (size_t k = 0; k < r->n; k++) {
        const struct mseries *s = r->s[k];
        const char *name = r->rules[s->rule].name;

        if (!name_listed(names, name) || (key && strcmp(key, s->key) != 0) ||
            (keep && !keep(arg, name, s->key)))
            continue;
        sl_jbuf_puts(out, any ? ",{\"name\":" : "{\"name\":");
        sl_jbuf_str(out, name, strlen(name));
        sl_jbuf_puts(out, ",\"key\":");
        sl_jbuf_str(out, s->key, strlen(s->key));
        sl_jbuf_puts(out, ",\"v\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                sl_jbuf_puts(out, ",");
            put_float(out, s->v[(first + i) % SL_MRING_POINTS]);
        }
        sl_jbuf_puts(out, "]}");
        any = true;
    }
    sl_jbuf_puts(out, "]}");
}

int sl_mring_last(const struct sl_mring *r, const char *name, const char *key, double *v)
{
    for (size_t k = 0; r->npoints && k < r->n; k++) {
        const struct mseries *s = r->s[k];

        if (strcmp(r->rules[s->rule].name, name) == 0 && strcmp(s->key, key) == 0) {
            if (isnan(s->v[r->head]))
                return -1;
            *v = s->v[r->head];
            return 0;
        }
    }
    return -1;
}
