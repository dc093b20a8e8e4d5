/* Metrics registry: families, counters, gauges, histograms, collection.
 *
 * A family is a name, a type, a help text and its label names (none, one,
 * or up to SL_METRIC_MAXLABELS separated by commas); its series are
 * created on first use, one per label value (the values of several labels
 * joined by SL_METRIC_LV_SEP), and kept sorted
 * by label value so the output is stable. Histograms use one fixed set of
 * buckets made for seconds. Everything runs on the loop thread; nothing
 * here blocks or fails: a bad call is logged once and ignored. */
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"

/* Upper bounds, in seconds, of the histogram buckets (+Inf is implied):
 * from a warm C invoke (~1 ms) to the longest timeouts worth telling
 * apart. */
const double sl_metric_buckets[SL_METRIC_NBUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

/* Label values come from configuration and code, but a family must not
 * grow without bound if one ever comes from outside. */
#define MAX_SERIES 10000

struct sl_metric {
    char          *name;
    char          *help;
    char          *label;            /* NULL: no label */
    int            type;             /* enum sl_metric_type */
    struct sl_metric_series *s;                /* sorted by lv */
    size_t         n, cap;
    bool           full_logged;      /* MAX_SERIES reached, said once */
};

struct collector {
    sl_metrics_collect_fn fn;
    void                 *arg;
};

struct sl_metrics {
    struct sl_metric **f;            /* families in creation order */
    size_t             nf;
    struct collector  *c;
    size_t             nc;
};

const char *const sl_metric_type_names[] = { "counter", "gauge", "histogram" };

/* ------------------------------------------------------------------ */

struct sl_metrics *sl_metrics_new(void)
{
    return sl_calloc(1, sizeof(struct sl_metrics));
}

static void family_free(struct sl_metric *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->s[i].lv);
    free(f->s);
    free(f->name);
    free(f->help);
    free(f->label);
    free(f);
}

void sl_metrics_free(struct sl_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nf; i++)
        family_free(m->f[i]);
    free(m->f);
    free(m->c);
    free(m);
}

/* Prometheus: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* without the reserved "__" prefix. */
static bool valid_name(const char *s, bool label)
{
    if (!s || !*s || isdigit((unsigned char)*s))
        return false;
    if (label && strncmp(s, "__", 2) == 0)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || (!label && *s == ':')))
            return false;
    return true;
}

/* "a" or "a,b,c": each a label name, none twice, none "le" for a
 * histogram (its bucket label) */
static bool valid_labels(const char *spec, int type)
{
    char buf[128], *save = NULL, *tok;
    const char *seen[SL_METRIC_MAXLABELS];
    size_t n = 0;

    if (strlen(spec) >= sizeof(buf))
        return false;
    memcpy(buf, spec, strlen(spec) + 1);
    if (buf[0] == ',' || (buf[0] && buf[strlen(buf) - 1] == ','))
        return false;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == SL_METRIC_MAXLABELS || !valid_name(tok, true) ||
            (type == SL_METRIC_HISTOGRAM && strcmp(tok, "le") == 0))
            return false;
        for (size_t i = 0; i < n; i++)
            if (strcmp(seen[i], tok) == 0)
                return false;
        seen[n++] = tok;
    }
    return n > 0 && !strstr(spec, ",,");
}

static struct sl_metric_series *series_insert(struct sl_metric *f, const char *lv, size_t at)
{
    struct sl_metric_series *s;

    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->s = sl_realloc(f->s, f->cap * sizeof(*f->s));
    }
    memmove(&f->s[at + 1], &f->s[at], (f->n - at) * sizeof(*f->s));
    f->n++;
    s = &f->s[at];
    memset(s, 0, sizeof(*s));
    s->lv = lv ? sl_strdup(lv) : NULL;
    return s;
}

struct sl_metric *sl_metrics_family(struct sl_metrics *m, const char *name, int type,
                                    const char *help, const char *label)
{
    struct sl_metric *f;

    for (size_t i = 0; i < m->nf; i++) {
        f = m->f[i];
        if (strcmp(f->name, name) != 0)
            continue;
        if (f->type != type || (f->label == NULL) != (label == NULL) ||
            (label && strcmp(f->label, label) != 0)) {
            SL_ERROR("metrics", "metric %s is already registered as a %s%s%s; ignored", name,
                     sl_metric_type_names[f->type], f->label ? " by " : "", f->label ? f->label : "");
            return NULL;
        }
        return f;
    }
    if (type < SL_METRIC_COUNTER || type > SL_METRIC_HISTOGRAM || !valid_name(name, false) ||
        (label && !valid_labels(label, type))) {
        SL_ERROR("metrics", "invalid metric %s (type %d, label %s); ignored", name ? name : "?",
                 type, label ? label : "none");
        return NULL;
    }
    f = sl_calloc(1, sizeof(*f));
    f->name = sl_strdup(name);
    f->help = sl_strdup(help ? help : "");
    f->label = label ? sl_strdup(label) : NULL;
    f->type = type;
    /* an unlabelled metric exists from the start, at 0 */
    if (!label)
        series_insert(f, NULL, 0);
    m->f = sl_realloc(m->f, (m->nf + 1) * sizeof(*m->f));
    m->f[m->nf++] = f;
    return f;
}

/* The series for `lv`, created when missing; NULL when the family is full. */
static struct sl_metric_series *series_get(struct sl_metric *f, const char *lv)
{
    size_t lo = 0, hi = f->n;

    if (!f->label || !lv)
        lv = NULL;
    if (!lv) {
        /* the unlabelled series sorts first */
        if (f->n > 0 && f->s[0].lv == NULL)
            return &f->s[0];
        hi = 0;
    } else {
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = f->s[mid].lv ? strcmp(f->s[mid].lv, lv) : -1;

            if (c == 0)
                return &f->s[mid];
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    if (f->n >= MAX_SERIES) {
        if (!f->full_logged)
            SL_WARN("metrics", "%s has %d series; new label values are not recorded", f->name,
                    MAX_SERIES);
        f->full_logged = true;
        return NULL;
    }
    return series_insert(f, lv, lo);
}

void sl_metric_add(struct sl_metric *f, const char *lv, double v)
{
    struct sl_metric_series *s;

    if (!f || f->type == SL_METRIC_HISTOGRAM || (f->type == SL_METRIC_COUNTER && v < 0))
        return;
    if ((s = series_get(f, lv)))
        s->value += v;
}

void sl_metric_set(struct sl_metric *f, const char *lv, double v)
{
    struct sl_metric_series *s;

    /* counters too, for collectors mirroring a total kept elsewhere */
    if (!f || f->type == SL_METRIC_HISTOGRAM)
        return;
    if ((s = series_get(f, lv)))
        s->value = v;
}

void sl_metric_observe(struct sl_metric *f, const char *lv, double v)
{
    struct sl_metric_series *s;

    if (!f || f->type != SL_METRIC_HISTOGRAM || isnan(v))
        return;
    if (!(s = series_get(f, lv)))
        return;
    for (size_t i = 0; i < SL_METRIC_NBUCKETS; i++) {
        if (v <= sl_metric_buckets[i]) {
            s->counts[i]++;
            break;
        }
    }
    s->count++;
    s->sum += v;
}

void sl_metrics_on_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg)
{
    m->c = sl_realloc(m->c, (m->nc + 1) * sizeof(*m->c));
    m->c[m->nc].fn = fn;
    m->c[m->nc].arg = arg;
    m->nc++;
}

void sl_metrics_off_collect(struct sl_metrics *m, sl_metrics_collect_fn fn, void *arg)
{
    for (size_t i = 0; i < m->nc; i++)
        if (m->c[i].fn == fn && m->c[i].arg == arg) {
            memmove(&m->c[i], &m->c[i + 1], (m->nc - i - 1) * sizeof(*m->c));
            m->nc--;
            return;
        }
}

void sl_metrics_each(struct sl_metrics *m, sl_metrics_each_fn fn, void *arg)
{
    for (size_t i = 0; i < m->nc; i++)
        m->c[i].fn(m->c[i].arg, m);
    for (size_t i = 0; i < m->nf; i++) {
        const struct sl_metric *f = m->f[i];
        struct sl_metric_view v = {
            .name = f->name, .help = f->help, .label = f->label, .type = f->type,
            .s = f->s, .n = f->n,
        };
        fn(&v, arg);
    }
}
