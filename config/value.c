/* Scalar parsing for configuration values: integers, booleans, durations
 * and sizes with units, and ${VAR} interpolation. Pure functions. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "schema.h"
#include "sluice/mem.h"

int sl__parse_int(const char *s, int64_t *out, char *why, size_t n)
{
    char *end;
    long long v;

    errno = 0;
    if (!*s || isspace((unsigned char)*s)) {
        snprintf(why, n, "'%s' is not an integer", s);
        return -1;
    }
    v = strtoll(s, &end, 10);
    if (*end != '\0') {
        snprintf(why, n, "'%s' is not an integer", s);
        return -1;
    }
    if (errno == ERANGE) {
        snprintf(why, n, "'%s' is too large", s);
        return -1;
    }
    *out = v;
    return 0;
}

int sl__parse_bool(const char *s, bool *out, char *why, size_t n)
{
    static const char *const yes[] = { "true", "yes", "on", NULL };
    static const char *const no[] = { "false", "no", "off", NULL };

    for (int i = 0; yes[i]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    snprintf(why, n, "'%s' is not a boolean (true or false)", s);
    return -1;
}

struct unit {
    const char *name;
    int64_t     mult;
};

/* Split "1.5GB" into a number and a unit, and scale by the unit (or by
 * `bare` when there is none). The result must be a whole number of the
 * smallest step (`step` names it for the message). */
static int parse_scaled(const char *s, const struct unit *units, int64_t bare,
                        const char *what, const char *step, int64_t *out, char *why, size_t n)
{
    const char *p = s;
    char num[64];
    size_t len;
    int64_t mult = -1;
    long double v;
    char *end;

    if (*p == '-' || *p == '+')
        p++;
    while (isdigit((unsigned char)*p) || *p == '.')
        p++;
    len = (size_t)(p - s);
    if (len == 0 || len >= sizeof(num) || !isdigit((unsigned char)p[-1])) {
        snprintf(why, n, "'%s' is not a %s", s, what);
        return -1;
    }
    memcpy(num, s, len);
    num[len] = '\0';
    while (*p == ' ')
        p++;
    if (*p == '\0') {
        mult = bare;
    } else {
        for (int i = 0; units[i].name; i++)
            if (strcmp(p, units[i].name) == 0)
                mult = units[i].mult;
    }
    if (mult < 0) {
        snprintf(why, n, "'%s' has an unknown unit '%s'", s, p);
        return -1;
    }
    errno = 0;
    v = strtold(num, &end);
    if (*end != '\0' || errno == ERANGE) {
        snprintf(why, n, "'%s' is not a %s", s, what);
        return -1;
    }
    v *= (long double)mult;
    if (v > (long double)INT64_MAX / 2 || v < -(long double)INT64_MAX / 2) {
        snprintf(why, n, "'%s' is too large", s);
        return -1;
    }
    if (v != (long double)(int64_t)v) {
        snprintf(why, n, "'%s' is not a whole number of %s", s, step);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int sl__parse_duration(const char *s, int64_t unit_ms, int64_t *out_ms, char *why, size_t n)
{
    static const struct unit units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "min", 60000 }, { "h", 3600000 },
        { "d", 86400000 }, { NULL, 0 },
    };
    return parse_scaled(s, units, unit_ms, "duration", "milliseconds", out_ms, why, n);
}

int sl__parse_size(const char *s, int64_t unit, int64_t *out, char *why, size_t n)
{
    static const struct unit units[] = {
        { "B", 1 }, { "K", 1024 }, { "KB", 1024 }, { "KiB", 1024 },
        { "M", 1024 * 1024 }, { "MB", 1024 * 1024 }, { "MiB", 1024 * 1024 },
        { "G", 1024LL * 1024 * 1024 }, { "GB", 1024LL * 1024 * 1024 },
        { "GiB", 1024LL * 1024 * 1024 }, { NULL, 0 },
    };
    char unit_name[32];
    int rc;

    /* Bare numbers are in the key's own unit; convert to bytes, then back. */
    rc = parse_scaled(s, units, unit, "size", "bytes", out, why, n);
    if (rc != 0)
        return rc;
    if (*out % unit != 0) {
        if (unit == 1024 * 1024)
            snprintf(unit_name, sizeof(unit_name), "MB");
        else if (unit == 1024)
            snprintf(unit_name, sizeof(unit_name), "KB");
        else
            snprintf(unit_name, sizeof(unit_name), "%lld bytes", (long long)unit);
        snprintf(why, n, "'%s' is not a whole number of %s", s, unit_name);
        return -1;
    }
    *out /= unit;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Interpolation                                                       */

char *sl__interpolate(const char *s, char *why, size_t n)
{
    size_t cap = strlen(s) + 64, len = 0;
    char *out = sl_malloc(cap);

    for (const char *p = s; *p;) {
        const char *val = NULL;
        size_t vlen = 0;

        if (p[0] == '$' && p[1] == '$') {
            val = "$";
            vlen = 1;
            p += 2;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *name = p + 2, *q = name, *close;
            char var[256];

            while (isalnum((unsigned char)*q) || *q == '_')
                q++;
            close = strchr(q, '}');
            if (!close) {
                snprintf(why, n, "unterminated '${' in '%s'", s);
                goto fail;
            }
            if (q == name || isdigit((unsigned char)*name) || (size_t)(q - name) >= sizeof(var) ||
                (*q != '}' && strncmp(q, ":-", 2) != 0)) {
                snprintf(why, n, "bad variable reference '%.*s'", (int)(close - p + 1), p);
                goto fail;
            }
            memcpy(var, name, (size_t)(q - name));
            var[q - name] = '\0';
            val = getenv(var);
            if (*q == ':') {
                /* shell semantics: the default also replaces an empty value */
                if (!val || !*val) {
                    val = q + 2;
                    vlen = (size_t)(close - val);
                } else {
                    vlen = strlen(val);
                }
            } else if (!val) {
                snprintf(why, n, "environment variable %s is not set "
                         "(use ${%s:-default} for a default)", var, var);
                goto fail;
            } else {
                vlen = strlen(val);
            }
            p = close + 1;
        } else {
            val = p;
            vlen = 1;
            p++;
        }
        if (len + vlen + 1 > cap) {
            cap = (len + vlen + 1) * 2;
            out = sl_realloc(out, cap);
        }
        memcpy(out + len, val, vlen);
        len += vlen;
    }
    out[len] = '\0';
    return out;

fail:
    free(out);
    return NULL;
}
