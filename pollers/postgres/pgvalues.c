/* sluice: Postgres column values (text or binary form) as JSON text.
 *
 * Written directly into a buffer rather than through a JSON library so
 * numbers keep every digit Postgres sent (numeric(40,20) stays exact) and a
 * row costs no allocation per value. Every reader checks its length first:
 * the bytes come from the server and are trusted for nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

#include "pgoutput.h"

/* ------------------------------------------------------------------ */
/* buffers and strings                                                 */

void sl__pgo_buf_grow(struct pgo__buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < need)
        cap *= 2;
    b->p = sl_realloc(b->p, cap);
    b->cap = cap;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid.
 * Rejects overlongs, surrogates and code points past U+10FFFF. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0;
        if (c == 0xED && s[1] >= 0xA0)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0;
        if (c == 0xF4 && s[1] >= 0x90)
            return 0;
        return 4;
    }
    return 0;
}

void sl__pgo_json_str(struct pgo__buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, run = 0;

    if (b->cap - b->len <= n + 2)
        sl__pgo_buf_grow(b, n + 3);
    b->p[b->len++] = '"';
    while (i < n) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        pgo__buf_put(b, s + run, i - run);
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (l) {
                pgo__buf_put(b, s + i, l);
                i += l;
            } else {
                pgo__buf_put(b, "\xEF\xBF\xBD", 3);
                i++;
            }
        } else {
            char esc[6] = {'\\', 0, 0, 0, 0, 0};
            size_t el = 2;
            switch (c) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            default:
                esc[1] = 'u', esc[2] = '0', esc[3] = '0';
                esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
                el = 6;
            }
            pgo__buf_put(b, esc, el);
            i++;
        }
        run = i;
    }
    pgo__buf_put(b, s + run, i - run);
    pgo__buf_ch(b, '"');
}

static void put_cstr(struct pgo__buf *b, const char *s)
{
    pgo__buf_put(b, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* validators                                                          */

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? over exactly n bytes */
static bool is_json_number(const uint8_t *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return false;
    if (s[i] == '0')
        i++;
    else if (s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        size_t st = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == st)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t st = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == st)
            return false;
    }
    return i == n;
}

#define JSON_MAX_DEPTH 1000

static const uint8_t *jv_ws(const uint8_t *p, const uint8_t *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const uint8_t *jv_string(const uint8_t *p, const uint8_t *e)
{
    p++; /* opening quote */
    while (p < e) {
        uint8_t c = *p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            if (++p >= e)
                return NULL;
            if (*p == 'u') {
                if (e - p < 5)
                    return NULL;
                for (int k = 1; k <= 4; k++)
                    if (sl_hexval(p[k]) < 0)
                        return NULL;
                p += 5;
            } else if (strchr("\"\\/bfnrt", *p) && *p) {
                p++;
            } else {
                return NULL;
            }
        } else if (c >= 0x80) {
            size_t l = utf8_len(p, (size_t)(e - p));
            if (!l)
                return NULL;
            p += l;
        } else {
            p++;
        }
    }
    return NULL;
}

static const uint8_t *jv_value(const uint8_t *p, const uint8_t *e, int depth)
{
    p = jv_ws(p, e);
    if (p >= e || depth > JSON_MAX_DEPTH)
        return NULL;
    switch (*p) {
    case '"':
        return jv_string(p, e);
    case '{':
        p = jv_ws(p + 1, e);
        if (p < e && *p == '}')
            return p + 1;
        for (;;) {
            p = jv_ws(p, e);
            if (p >= e || *p != '"' || !(p = jv_string(p, e)))
                return NULL;
            p = jv_ws(p, e);
            if (p >= e || *p != ':')
                return NULL;
            if (!(p = jv_value(p + 1, e, depth + 1)))
                return NULL;
            p = jv_ws(p, e);
            if (p < e && *p == ',') {
                p++;
                continue;
            }
            return (p < e && *p == '}') ? p + 1 : NULL;
        }
    case '[':
        p = jv_ws(p + 1, e);
        if (p < e && *p == ']')
            return p + 1;
        for (;;) {
            if (!(p = jv_value(p, e, depth + 1)))
                return NULL;
            p = jv_ws(p, e);
            if (p < e && *p == ',') {
                p++;
                continue;
            }
            return (p < e && *p == ']') ? p + 1 : NULL;
        }
    case 't':
        return (e - p >= 4 && !memcmp(p, "true", 4)) ? p + 4 : NULL;
    case 'f':
        return (e - p >= 5 && !memcmp(p, "false", 5)) ? p + 5 : NULL;
    case 'n':
        return (e - p >= 4 && !memcmp(p, "null", 4)) ? p + 4 : NULL;
    default: {
        const uint8_t *st = p;
        while (p < e && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.' ||
                         *p == 'e' || *p == 'E'))
            p++;
        return (p > st && is_json_number(st, (size_t)(p - st))) ? p : NULL;
    }
    }
}

static bool is_json(const uint8_t *s, size_t n)
{
    const uint8_t *p = jv_value(s, s + n, 0);
    return p && jv_ws(p, s + n) == s + n;
}

/* ------------------------------------------------------------------ */
/* types                                                               */

enum cls {
    C_UNKNOWN, C_BOOL, C_INT2, C_INT4, C_INT8, C_OID, C_FLOAT4, C_FLOAT8, C_NUMERIC,
    C_TEXT, C_CHAR, C_BYTEA, C_UUID, C_JSON, C_JSONB, C_DATE, C_TIME, C_TIMETZ,
    C_TS, C_TSTZ, C_INTERVAL, C_ARRAY
};

/* Built-in type OIDs (pg_type.dat); stable across Postgres versions. */
static enum cls cls_of(uint32_t oid, uint32_t *elem)
{
    switch (oid) {
    case 16: return C_BOOL;
    case 17: return C_BYTEA;
    case 18: return C_CHAR;
    case 19: case 25: case 1042: case 1043: return C_TEXT;  /* name text bpchar varchar */
    case 20: return C_INT8;
    case 21: return C_INT2;
    case 23: return C_INT4;
    case 26: return C_OID;
    case 114: return C_JSON;
    case 700: return C_FLOAT4;
    case 701: return C_FLOAT8;
    case 1082: return C_DATE;
    case 1083: return C_TIME;
    case 1114: return C_TS;
    case 1184: return C_TSTZ;
    case 1186: return C_INTERVAL;
    case 1266: return C_TIMETZ;
    case 1700: return C_NUMERIC;
    case 2950: return C_UUID;
    case 3802: return C_JSONB;
    default: break;
    }
    uint32_t e = 0;
    switch (oid) {
    case 1000: e = 16; break;
    case 1001: e = 17; break;
    case 1002: e = 18; break;
    case 1003: e = 19; break;
    case 1005: e = 21; break;
    case 1007: e = 23; break;
    case 1009: e = 25; break;
    case 1014: e = 1042; break;
    case 1015: e = 1043; break;
    case 1016: e = 20; break;
    case 1021: e = 700; break;
    case 1022: e = 701; break;
    case 1028: e = 26; break;
    case 199: e = 114; break;
    case 1115: e = 1114; break;
    case 1182: e = 1082; break;
    case 1183: e = 1083; break;
    case 1185: e = 1184; break;
    case 1187: e = 1186; break;
    case 1231: e = 1700; break;
    case 1270: e = 1266; break;
    case 2951: e = 2950; break;
    case 3807: e = 3802; break;
    default: return C_UNKNOWN;
    }
    if (elem)
        *elem = e;
    return C_ARRAY;
}

bool sl__pgo_builtin_binary_ok(uint32_t oid)
{
    return cls_of(oid, NULL) != C_UNKNOWN;
}

/* ------------------------------------------------------------------ */
/* dates and times                                                     */

#define PG_EPOCH_UNIX_DAYS 10957                    /* 2000-01-01 - 1970-01-01 */
#define USECS_PER_DAY      INT64_C(86400000000)

/* Proleptic Gregorian (as Postgres uses) <-> days since 1970-01-01;
 * H. Hinnant's algorithms, valid for negative years too. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static char *d2(char *o, unsigned v)
{
    o[0] = (char)('0' + v / 10 % 10), o[1] = (char)('0' + v % 10);
    return o + 2;
}

/* ISO 8601 years: 0000 is 1 BC; negative and 5+ digit years get a sign. */
static int fmt_year(char *o, int64_t y)
{
    if (y >= 0 && y <= 9999) {
        d2(d2(o, (unsigned)(y / 100)), (unsigned)(y % 100));
        return 4;
    }
    return sprintf(o, "%c%04lld", y < 0 ? '-' : '+', (long long)(y < 0 ? -y : y));
}

static void put_date_days(struct pgo__buf *b, int64_t unix_days)
{
    char o[48];
    int64_t y;
    unsigned m, d;
    civil_from_days(unix_days, &y, &m, &d);
    char *e = o + fmt_year(o, y);
    *e++ = '-';
    e = d2(e, m);
    *e++ = '-';
    e = d2(e, d);
    pgo__buf_put(b, o, (size_t)(e - o));
}

/* HH:MM:SS[.ffffff] with trailing zeros of the fraction dropped, as
 * Postgres prints it. `us` is within [0, 24h]. */
static int fmt_time(char *o, int64_t us)
{
    int64_t s = us / 1000000, f = us % 1000000;
    char *e = d2(o, (unsigned)(s / 3600));
    *e++ = ':';
    e = d2(e, (unsigned)(s / 60 % 60));
    *e++ = ':';
    e = d2(e, (unsigned)(s % 60));
    if (f) {
        *e++ = '.';
        for (int64_t div = 100000; div && f; div /= 10) {
            *e++ = (char)('0' + f / div);
            f %= div;
        }
    }
    *e = 0;
    return (int)(e - o);
}

/* `us` since 1970-01-01 00:00 (UTC for timestamptz) as ISO 8601. */
static void put_timestamp(struct pgo__buf *b, int64_t us, bool tz)
{
    int64_t days = us / USECS_PER_DAY, rem = us % USECS_PER_DAY;
    if (rem < 0)
        rem += USECS_PER_DAY, days--;
    char o[64];
    pgo__buf_ch(b, '"');
    put_date_days(b, days);
    o[0] = 'T';
    int k = 1 + fmt_time(o + 1, rem);
    if (tz)
        o[k++] = 'Z';
    pgo__buf_put(b, o, (size_t)k);
    pgo__buf_ch(b, '"');
}

/* Parsers for the ISO DateStyle text; false when the text is not in it. */
static bool p_num(const uint8_t **p, const uint8_t *e, size_t min, size_t max, int64_t *v)
{
    size_t k = 0;
    int64_t x = 0;
    while (*p + k < e && k < max && (*p)[k] >= '0' && (*p)[k] <= '9')
        x = x * 10 + ((*p)[k++] - '0');
    if (k < min)
        return false;
    *p += k;
    *v = x;
    return true;
}

static bool p_ch(const uint8_t **p, const uint8_t *e, char c)
{
    if (*p < e && **p == (uint8_t)c) {
        (*p)++;
        return true;
    }
    return false;
}

static bool p_bc(const uint8_t **p, const uint8_t *e)
{
    if (e - *p == 3 && !memcmp(*p, " BC", 3)) {
        *p += 3;
        return true;
    }
    return false;
}

/* "YYYY-MM-DD" -> days since 1970 (year astronomical after a " BC" at end) */
static bool p_date(const uint8_t **p, const uint8_t *e, int64_t *days, int64_t *year,
                   int64_t *mon, int64_t *day)
{
    if (!p_num(p, e, 4, 9, year) || !p_ch(p, e, '-') || !p_num(p, e, 2, 2, mon) ||
        !p_ch(p, e, '-') || !p_num(p, e, 2, 2, day))
        return false;
    if (*mon < 1 || *mon > 12 || *day < 1 || *day > 31)
        return false;
    *days = days_from_civil(*year, (unsigned)*mon, (unsigned)*day);
    return true;
}

static bool text_infinity(struct pgo__buf *b, const uint8_t *s, size_t n)
{
    if ((n == 8 && !memcmp(s, "infinity", 8)) || (n == 9 && !memcmp(s, "-infinity", 9))) {
        sl__pgo_json_str(b, (const char *)s, n);
        return true;
    }
    return false;
}

static void text_date(struct pgo__buf *b, const uint8_t *s, size_t n)
{
    const uint8_t *p = s, *e = s + n;
    int64_t days, y, m, d;
    if (text_infinity(b, s, n))
        return;
    if (!p_date(&p, e, &days, &y, &m, &d))
        goto raw;
    if (p_bc(&p, e))
        days = days_from_civil(1 - y, (unsigned)m, (unsigned)d);
    if (p != e)
        goto raw;
    pgo__buf_ch(b, '"');
    put_date_days(b, days);
    pgo__buf_ch(b, '"');
    return;
raw:
    sl__pgo_json_str(b, (const char *)s, n);
}

static void text_timestamp(struct pgo__buf *b, const uint8_t *s, size_t n, bool tz)
{
    const uint8_t *p = s, *e = s + n;
    int64_t days, y, mo, d, hh, mi, ss, frac = 0, off = 0;
    if (text_infinity(b, s, n))
        return;
    if (!p_date(&p, e, &days, &y, &mo, &d) || !p_ch(&p, e, ' ') || !p_num(&p, e, 2, 2, &hh) ||
        !p_ch(&p, e, ':') || !p_num(&p, e, 2, 2, &mi) || !p_ch(&p, e, ':') ||
        !p_num(&p, e, 2, 2, &ss))
        goto raw;
    if (p_ch(&p, e, '.')) {
        const uint8_t *st = p;
        if (!p_num(&p, e, 1, 6, &frac))
            goto raw;
        for (ptrdiff_t k = p - st; k < 6; k++)
            frac *= 10;
    }
    if (tz) {
        int64_t oh, om = 0, os = 0;
        int sign;
        if (p_ch(&p, e, '+'))
            sign = 1;
        else if (p_ch(&p, e, '-'))
            sign = -1;
        else
            goto raw;
        if (!p_num(&p, e, 2, 2, &oh))
            goto raw;
        if (p_ch(&p, e, ':')) {
            if (!p_num(&p, e, 2, 2, &om))
                goto raw;
            if (p_ch(&p, e, ':') && !p_num(&p, e, 2, 2, &os))
                goto raw;
        }
        off = sign * (oh * 3600 + om * 60 + os);
    }
    if (p_bc(&p, e))
        days = days_from_civil(1 - y, (unsigned)mo, (unsigned)d);
    if (p != e || hh > 24 || mi > 59 || ss > 60)
        goto raw;
    put_timestamp(b, days * USECS_PER_DAY + ((hh * 60 + mi) * 60 + ss - off) * 1000000 + frac, tz);
    return;
raw:
    sl__pgo_json_str(b, (const char *)s, n);
}

/* ------------------------------------------------------------------ */
/* text form                                                           */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_base64(struct pgo__buf *b, const uint8_t *s, size_t n)
{
    size_t out = (n + 2) / 3 * 4;
    if (b->cap - b->len <= out + 2)
        sl__pgo_buf_grow(b, out + 3);
    char *o = b->p + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64[v >> 18], *o++ = b64[(v >> 12) & 63], *o++ = b64[(v >> 6) & 63],
        *o++ = b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = b64[v >> 18], *o++ = b64[(v >> 12) & 63], *o++ = '=', *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = b64[v >> 18], *o++ = b64[(v >> 12) & 63], *o++ = b64[(v >> 6) & 63], *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

/* bytea text output: "\x0a1b" (hex, the default) or the escape format */
static int text_bytea(struct pgo__buf *b, const uint8_t *s, size_t n, struct sl_err *err)
{
    uint8_t *raw = sl_malloc(n + 1);
    size_t k = 0;
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((n - 2) % 2)
            goto bad;
        for (size_t i = 2; i < n; i += 2) {
            int hi = sl_hexval(s[i]), lo = sl_hexval(s[i + 1]);
            if (hi < 0 || lo < 0)
                goto bad;
            raw[k++] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < n;) {
            if (s[i] != '\\') {
                raw[k++] = s[i++];
            } else if (i + 1 < n && s[i + 1] == '\\') {
                raw[k++] = '\\';
                i += 2;
            } else if (i + 3 < n + 0 && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
                       s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                raw[k++] = (uint8_t)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0'));
                i += 4;
            } else {
                goto bad;
            }
        }
    }
    put_base64(b, raw, k);
    free(raw);
    return 0;
bad:
    free(raw);
    return sl_err_set(err, SL_EPROTO, false, "bytea value is not in hex or escape format");
}

static int text_value(const struct pgo_decoder *dec, struct pgo__buf *b, uint32_t oid,
                      const uint8_t *s, size_t n, struct sl_err *err);

/* Postgres array literal: [optional "[lo:hi]...=" dims] {elem,elem,{...}},
 * elements quoted ("...", backslash escapes) or bare (NULL = null). */
static int text_array(const struct pgo_decoder *dec, struct pgo__buf *b, uint32_t elem,
                      const uint8_t *s, size_t n, struct sl_err *err)
{
    const uint8_t *p = s, *e = s + n;
    int depth = 0, rc = 0;
    bool need_elem = false;     /* after ',' */
    uint8_t *tmp = NULL;

    if (p < e && *p == '[') {
        while (p < e && *p != '=')
            p++;
        if (p == e)
            goto bad;
        p++;
    }
    if (p >= e || *p != '{')
        goto bad;
    tmp = sl_malloc(n + 1);
    while (p < e) {
        uint8_t c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            p++;
        } else if (c == '{') {
            if (depth >= PGO_MAX_ARRAY_DIM)
                goto bad;
            pgo__buf_ch(b, '[');
            depth++;
            need_elem = false;
            p++;
        } else if (c == '}') {
            if (!depth || need_elem)
                goto bad;
            pgo__buf_ch(b, ']');
            depth--;
            p++;
            if (!depth)
                break;
            goto after_item;
        } else {
            if (!depth)
                goto bad;
            size_t k = 0;
            bool quoted = false;
            if (c == '"') {
                quoted = true;
                p++;
                for (;;) {
                    if (p >= e)
                        goto bad;
                    if (*p == '"') {
                        p++;
                        break;
                    }
                    if (*p == '\\') {
                        if (++p >= e)
                            goto bad;
                    }
                    tmp[k++] = *p++;
                }
            } else {
                size_t last = 0;    /* trailing blanks of a bare element are dropped */
                while (p < e && *p != ',' && *p != '}' && *p != '{' && *p != '"') {
                    if (*p == '\\') {
                        if (++p >= e)
                            goto bad;
                        tmp[k++] = *p++;
                        last = k;
                    } else {
                        tmp[k++] = *p;
                        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                            last = k;
                        p++;
                    }
                }
                k = last;
                if (k == 0)
                    goto bad;
            }
            if (!quoted && k == 4 && (tmp[0] | 0x20) == 'n' && (tmp[1] | 0x20) == 'u' &&
                (tmp[2] | 0x20) == 'l' && (tmp[3] | 0x20) == 'l')
                put_cstr(b, "null");
            else if ((rc = text_value(dec, b, elem, tmp, k, err)) < 0)
                goto out;
after_item:
            while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                p++;
            if (p < e && *p == ',') {
                pgo__buf_ch(b, ',');
                need_elem = true;
                p++;
            } else if (p >= e || *p != '}') {
                goto bad;
            } else {
                need_elem = false;
            }
        }
    }
    if (depth || p != e)
        goto bad;
out:
    free(tmp);
    return rc;
bad:
    free(tmp);
    return sl_err_set(err, SL_EPROTO, false, "malformed array literal of type %u", elem);
}

static int text_value(const struct pgo_decoder *dec, struct pgo__buf *b, uint32_t oid,
                      const uint8_t *s, size_t n, struct sl_err *err)
{
    uint32_t elem = 0;
    switch (cls_of(sl__pgo_resolve(dec, oid), &elem)) {
    case C_BOOL:
        if (n == 1 && (s[0] == 't' || s[0] == 'f')) {
            put_cstr(b, s[0] == 't' ? "true" : "false");
            return 0;
        }
        break;
    case C_INT2: case C_INT4: case C_INT8: case C_OID: case C_FLOAT4: case C_FLOAT8:
    case C_NUMERIC:
        if (is_json_number(s, n)) {
            pgo__buf_put(b, s, n);
            return 0;
        }
        break;  /* NaN, Infinity, -Infinity */
    case C_JSON: case C_JSONB:
        if (is_json(s, n)) {
            pgo__buf_put(b, s, n);
            return 0;
        }
        break;
    case C_BYTEA:
        return text_bytea(b, s, n, err);
    case C_DATE:
        text_date(b, s, n);
        return 0;
    case C_TS:
        text_timestamp(b, s, n, false);
        return 0;
    case C_TSTZ:
        text_timestamp(b, s, n, true);
        return 0;
    case C_ARRAY: {
        size_t mark = b->len;
        int rc = text_array(dec, b, elem, s, n, err);
        if (rc == SL_EPROTO) {
            /* a literal we cannot split is kept whole rather than lost */
            b->len = mark;
            sl__pgo_json_str(b, (const char *)s, n);
            return 0;
        }
        return rc;
    }
    default:
        break;
    }
    sl__pgo_json_str(b, (const char *)s, n);
    return 0;
}

/* ------------------------------------------------------------------ */
/* binary form                                                         */

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static void put_i64(struct pgo__buf *b, int64_t v)
{
    char o[24];
    pgo__buf_put(b, o, (size_t)sprintf(o, "%lld", (long long)v));
}

static void put_double(struct pgo__buf *b, double v, bool single)
{
    char o[40];
    if (isnan(v)) {
        put_cstr(b, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        put_cstr(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    /* shortest form that reads back to the same value, as Postgres prints */
    for (int prec = single ? 6 : 15; prec <= (single ? 9 : 17); prec++) {
        snprintf(o, sizeof(o), "%.*g", prec, v);
        if (single ? strtof(o, NULL) == (float)v : strtod(o, NULL) == v)
            break;
    }
    put_cstr(b, o);
}

/* numeric_send: ndigits, weight, sign, dscale, then base-10000 digits */
static int bin_numeric(struct pgo__buf *b, const uint8_t *s, size_t n, struct sl_err *err)
{
    if (n < 8)
        goto bad;
    uint16_t ndig = be16(s), sign = be16(s + 4), dscale = be16(s + 6);
    int16_t weight = (int16_t)be16(s + 2);
    if (n != 8 + 2 * (size_t)ndig || dscale > 0x3FFF)
        goto bad;
    if (sign == 0xC000) {
        put_cstr(b, "\"NaN\"");
        return 0;
    }
    if (sign == 0xD000 || sign == 0xF000) {
        put_cstr(b, sign == 0xD000 ? "\"Infinity\"" : "\"-Infinity\"");
        return 0;
    }
    if (sign != 0 && sign != 0x4000)
        goto bad;
    const uint8_t *dg = s + 8;
    for (size_t i = 0; i < ndig; i++)
        if (be16(dg + 2 * i) > 9999)
            goto bad;
#define DIG(i) ((i) >= 0 && (i) < (int)ndig ? be16(dg + 2 * (i)) : 0)
    if (sign == 0x4000)
        pgo__buf_ch(b, '-');
    char o[8];
    if (weight < 0) {
        pgo__buf_ch(b, '0');
    } else {
        pgo__buf_put(b, o, (size_t)sprintf(o, "%u", DIG(0)));
        for (int i = 1; i <= weight; i++)
            pgo__buf_put(b, o, (size_t)sprintf(o, "%04u", DIG(i)));
    }
    if (dscale) {
        pgo__buf_ch(b, '.');
        int left = dscale;
        for (int i = weight + 1; left > 0; i++) {
            sprintf(o, "%04u", DIG(i));
            pgo__buf_put(b, o, left < 4 ? (size_t)left : 4);
            left -= 4;
        }
    }
#undef DIG
    return 0;
bad:
    return sl_err_set(err, SL_EPROTO, false, "malformed binary numeric (%zu bytes)", n);
}

static void put_interval(struct pgo__buf *b, int64_t us, int32_t days, int32_t months)
{
    /* IntervalStyle postgres, as interval_out prints it */
    char o[160];
    int k = 0;
    bool is_zero = true, is_before = false;
    int64_t parts[3] = {months / 12, months % 12, days};
    static const char *const units[3] = {"year", "mon", "day"};
    for (int i = 0; i < 3; i++) {
        if (!parts[i])
            continue;
        k += sprintf(o + k, "%s%s%lld %s%s", is_zero ? "" : " ", is_before && parts[i] > 0 ? "+" : "",
                     (long long)parts[i], units[i], parts[i] != 1 ? "s" : "");
        is_before = parts[i] < 0;
        is_zero = false;
    }
    int64_t hour = us / INT64_C(3600000000), rest = us % INT64_C(3600000000);
    int64_t min = rest / 60000000, sec = rest % 60000000 / 1000000, fsec = rest % 1000000;
    if (is_zero || us) {
        bool minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
        k += sprintf(o + k, "%s%s%02llu:%02llu:%02llu", is_zero ? "" : " ",
                     minus ? "-" : (is_before ? "+" : ""),
                     (unsigned long long)(hour < 0 ? -(uint64_t)hour : (uint64_t)hour),
                     (unsigned long long)(min < 0 ? -min : min), (unsigned long long)(sec < 0 ? -sec : sec));
        if (fsec) {
            k += sprintf(o + k, ".%06lld", (long long)(fsec < 0 ? -fsec : fsec));
            while (o[k - 1] == '0')
                o[--k] = 0;
        }
    }
    sl__pgo_json_str(b, o, (size_t)k);
}

static int bin_value(const struct pgo_decoder *dec, struct pgo__buf *b, uint32_t oid,
                     const uint8_t *s, size_t n, struct sl_err *err);

static int bin_array(const struct pgo_decoder *dec, struct pgo__buf *b, const uint8_t *s, size_t n,
                     struct sl_err *err)
{
    if (n < 12)
        goto bad;
    int32_t ndim = (int32_t)be32(s), flags = (int32_t)be32(s + 4);
    uint32_t elem = be32(s + 8);
    if (ndim < 0 || ndim > PGO_MAX_ARRAY_DIM || (flags != 0 && flags != 1) ||
        n < 12 + 8 * (size_t)ndim)
        goto bad;
    if (ndim == 0) {
        if (n != 12)
            goto bad;
        put_cstr(b, "[]");
        return 0;
    }
    int64_t dims[PGO_MAX_ARRAY_DIM], total = 1;
    for (int i = 0; i < ndim; i++) {
        int32_t d = (int32_t)be32(s + 12 + 8 * i);
        if (d < 0)
            goto bad;
        dims[i] = d;
        total *= d;
        if (total > (int64_t)n / 4)     /* each element takes at least 4 bytes */
            goto bad;
    }
    if (!sl__pgo_type_binary_ok(dec, elem))
        return sl_err_set(err, SL_EUNSUPPORTED, false,
                          "cannot decode binary array elements of type %u (use text mode or "
                          "sl__pgo_type_alias)", elem);
    const uint8_t *p = s + 12 + 8 * (size_t)ndim, *e = s + n;
    int64_t idx[PGO_MAX_ARRAY_DIM] = {0};
    for (int i = 0; i < ndim; i++)
        pgo__buf_ch(b, '[');
    if (total == 0) {
        for (int i = 0; i < ndim; i++)
            pgo__buf_ch(b, ']');
        return p == e ? 0 : sl_err_set(err, SL_EPROTO, false, "binary array: trailing bytes");
    }
    for (int64_t k = 0; k < total; k++) {
        if (e - p < 4)
            goto bad;
        int32_t len = (int32_t)be32(p);
        p += 4;
        if (len == -1) {
            put_cstr(b, "null");
        } else {
            if (len < 0 || (size_t)len > (size_t)(e - p))
                goto bad;
            int rc = bin_value(dec, b, elem, p, (size_t)len, err);
            if (rc < 0)
                return rc;
            p += len;
        }
        /* advance the odometer: close and reopen brackets where a dimension wraps */
        int i = ndim - 1;
        while (i >= 0 && ++idx[i] == dims[i]) {
            idx[i] = 0;
            i--;
        }
        int closed = ndim - 1 - i;
        for (int j = 0; j < closed; j++)
            pgo__buf_ch(b, ']');
        if (i >= 0) {
            pgo__buf_ch(b, ',');
            for (int j = 0; j < closed; j++)
                pgo__buf_ch(b, '[');
        }
    }
    if (p != e)
        goto bad;
    return 0;
bad:
    return sl_err_set(err, SL_EPROTO, false, "malformed binary array (%zu bytes)", n);
}

static int bin_value(const struct pgo_decoder *dec, struct pgo__buf *b, uint32_t oid,
                     const uint8_t *s, size_t n, struct sl_err *err)
{
    uint32_t elem = 0;
    char o[64];
    enum cls c = cls_of(sl__pgo_resolve(dec, oid), &elem);
    size_t want = 0;
    switch (c) {
    case C_BOOL: case C_CHAR: want = 1; break;
    case C_INT2: want = 2; break;
    case C_INT4: case C_OID: case C_FLOAT4: case C_DATE: want = 4; break;
    case C_INT8: case C_FLOAT8: case C_TS: case C_TSTZ: case C_TIME: want = 8; break;
    case C_TIMETZ: want = 12; break;
    case C_UUID: case C_INTERVAL: want = 16; break;
    default: break;
    }
    if (want && n != want)
        return sl_err_set(err, SL_EPROTO, false, "binary value of type %u has %zu bytes, expected %zu",
                          oid, n, want);
    switch (c) {
    case C_UNKNOWN:
        return sl_err_set(err, SL_EUNSUPPORTED, false,
                          "cannot decode binary values of type %u (use text mode or "
                          "sl__pgo_type_alias)", oid);
    case C_BOOL:
        put_cstr(b, s[0] ? "true" : "false");
        return 0;
    case C_INT2:
        put_i64(b, (int16_t)be16(s));
        return 0;
    case C_INT4:
        put_i64(b, (int32_t)be32(s));
        return 0;
    case C_OID:
        put_i64(b, be32(s));
        return 0;
    case C_INT8:
        put_i64(b, (int64_t)be64(s));
        return 0;
    case C_FLOAT4: {
        uint32_t u = be32(s);
        float f;
        memcpy(&f, &u, 4);
        put_double(b, f, true);
        return 0;
    }
    case C_FLOAT8: {
        uint64_t u = be64(s);
        double f;
        memcpy(&f, &u, 8);
        put_double(b, f, false);
        return 0;
    }
    case C_NUMERIC:
        return bin_numeric(b, s, n, err);
    case C_TEXT:
        sl__pgo_json_str(b, (const char *)s, n);
        return 0;
    case C_CHAR:
        /* "char" prints bytes past ASCII as \ooo */
        if (s[0] >= 0x80) {
            sprintf(o, "\\%03o", s[0]);
            sl__pgo_json_str(b, o, 4);
        } else {
            sl__pgo_json_str(b, (const char *)s, s[0] ? 1 : 0);
        }
        return 0;
    case C_BYTEA:
        put_base64(b, s, n);
        return 0;
    case C_UUID:
        sprintf(o, "\"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\"", s[0],
                s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[12], s[13],
                s[14], s[15]);
        put_cstr(b, o);
        return 0;
    case C_JSON:
    case C_JSONB:
        if (c == C_JSONB) {
            if (n < 1 || s[0] != 1)
                return sl_err_set(err, SL_EUNSUPPORTED, false, "binary jsonb version %d not supported",
                                  n < 1 ? -1 : s[0]);
            s++, n--;
        }
        if (is_json(s, n))
            pgo__buf_put(b, s, n);
        else
            sl__pgo_json_str(b, (const char *)s, n);
        return 0;
    case C_DATE: {
        int32_t d = (int32_t)be32(s);
        if (d == INT32_MAX || d == INT32_MIN) {
            put_cstr(b, d == INT32_MAX ? "\"infinity\"" : "\"-infinity\"");
            return 0;
        }
        pgo__buf_ch(b, '"');
        put_date_days(b, (int64_t)d + PG_EPOCH_UNIX_DAYS);
        pgo__buf_ch(b, '"');
        return 0;
    }
    case C_TS:
    case C_TSTZ: {
        int64_t t = (int64_t)be64(s);
        if (t == INT64_MAX || t == INT64_MIN) {
            put_cstr(b, t == INT64_MAX ? "\"infinity\"" : "\"-infinity\"");
            return 0;
        }
        /* Postgres' range stops near year 294276; beyond that the sum would overflow */
        if (t > INT64_C(9000000000000000000) - PG_EPOCH_UNIX_DAYS * USECS_PER_DAY ||
            t < -INT64_C(9000000000000000000))
            return sl_err_set(err, SL_EPROTO, false, "binary timestamp out of range");
        put_timestamp(b, t + PG_EPOCH_UNIX_DAYS * USECS_PER_DAY, c == C_TSTZ);
        return 0;
    }
    case C_TIME:
    case C_TIMETZ: {
        int64_t t = (int64_t)be64(s);
        if (t < 0 || t > USECS_PER_DAY)
            return sl_err_set(err, SL_EPROTO, false, "binary time out of range");
        int k = fmt_time(o, t);
        if (c == C_TIMETZ) {
            int32_t z = (int32_t)be32(s + 8);   /* seconds west of UTC */
            if (z < -86400 || z > 86400)
                return sl_err_set(err, SL_EPROTO, false, "binary timetz zone out of range");
            int32_t a = z < 0 ? -z : z;
            k += sprintf(o + k, "%c%02d", z <= 0 ? '+' : '-', a / 3600);
            if (a % 3600)
                k += sprintf(o + k, ":%02d", a / 60 % 60);
            if (a % 60)
                k += sprintf(o + k, ":%02d", a % 60);
        }
        sl__pgo_json_str(b, o, (size_t)k);
        return 0;
    }
    case C_INTERVAL: {
        int64_t t = (int64_t)be64(s);
        if (t == INT64_MIN)
            return sl_err_set(err, SL_EPROTO, false, "binary interval out of range");
        put_interval(b, t, (int32_t)be32(s + 8), (int32_t)be32(s + 12));
        return 0;
    }
    case C_ARRAY:
        return bin_array(dec, b, s, n, err);
    }
    return sl_err_set(err, SL_EINTERNAL, false, "unhandled type class");
}

/* ------------------------------------------------------------------ */
/* DynamoDB AttributeValues                                            */

/* How much of the JSON number s[0..n) to send as a DynamoDB N: n, or less
 * when trailing zeros of the fraction had to go to fit; 0 when DynamoDB
 * cannot hold the value exactly (it is then sent as S). DynamoDB keeps 38
 * significant digits and magnitudes from 1E-130 to under 1E+126; boto3's
 * TypeDeserializer reads such a string into a Decimal without a trap
 * (prec 38, Emin -128, Emax 126; Rounded, Inexact and Clamped trap). */
static size_t ddb_number_len(const char *s, size_t n)
{
    size_t i = 0, int_at, int_n, frac_at = 0, frac_n = 0, mant_end, lead = 0, nd, z = 0, k;
    int64_t e = 0, exp10, adj, need;
    bool nonzero = false;

    if (i < n && s[i] == '-')
        i++;
    int_at = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    int_n = i - int_at;
    if (i < n && s[i] == '.') {
        frac_at = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        frac_n = i - frac_at;
    }
    mant_end = i;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        bool neg = false;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            neg = s[i++] == '-';
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (e < 1000000)
                e = e * 10 + (s[i] - '0');
        if (neg)
            e = -e;
    }
    if (i != n || int_n + frac_n == 0)
        return 0;
    for (k = 0; k < int_n + frac_n && !nonzero; k++) {
        char c = k < int_n ? s[int_at + k] : s[frac_at + k - int_n];
        if (c == '0')
            lead++;
        else
            nonzero = true;
    }
    exp10 = e - (int64_t)frac_n;
    if (!nonzero) {
        if (exp10 >= -165 && exp10 <= 126)
            return n;
        return mant_end == n && int_n ? int_at + int_n : 0;   /* 0.000...0 -> 0 */
    }
    nd = int_n + frac_n - lead;
    adj = exp10 + (int64_t)nd - 1;
    if (adj > 125 || adj < -130)
        return 0;
    need = (int64_t)nd - 38;
    if (-165 - exp10 > need)
        need = -165 - exp10;
    if (need <= 0)
        return n;
    if (mant_end != n)
        return 0;                       /* an exponent: not rewritten */
    while (z < frac_n && s[frac_at + frac_n - 1 - z] == '0')
        z++;
    if ((int64_t)z < need)
        return 0;
    /* 1.500...0 has more digits than DynamoDB keeps, its value does not */
    return frac_n - (size_t)need ? frac_at + frac_n - (size_t)need : frac_at - 1;
}

static void av_number(struct pgo__buf *b, const char *s, size_t n)
{
    size_t use = ddb_number_len(s, n);

    pgo__buf_put(b, use ? "{\"N\":\"" : "{\"S\":\"", 6);
    pgo__buf_put(b, s, use ? use : n);
    pgo__buf_put(b, "\"}", 2);
}

/* End of the JSON string at p (its opening quote), valid JSON. */
static const char *av_str_end(const char *p, const char *e)
{
    for (p++; p < e && *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p < e ? p + 1 : e;
}

static const char *av_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Write the valid JSON value at p as an AttributeValue; strings are B
 * (base64 already) when `bin`. Returns the end of the value. */
static const char *av_walk(struct pgo__buf *b, const char *p, const char *e, bool bin)
{
    const char *q;

    p = av_ws(p, e);
    if (p >= e)
        return e;
    switch (*p) {
    case '{':
        pgo__buf_put(b, "{\"M\":{", 6);
        p = av_ws(p + 1, e);
        while (p < e && *p != '}') {
            q = av_str_end(p, e);
            pgo__buf_put(b, p, (size_t)(q - p));
            pgo__buf_ch(b, ':');
            p = av_ws(q, e);
            p = av_walk(b, p + 1, e, false);   /* after ':' */
            p = av_ws(p, e);
            if (p < e && *p == ',') {
                pgo__buf_ch(b, ',');
                p = av_ws(p + 1, e);
            }
        }
        pgo__buf_put(b, "}}", 2);
        return p < e ? p + 1 : e;
    case '[':
        pgo__buf_put(b, "{\"L\":[", 6);
        p = av_ws(p + 1, e);
        while (p < e && *p != ']') {
            p = av_ws(av_walk(b, p, e, bin), e);
            if (p < e && *p == ',') {
                pgo__buf_ch(b, ',');
                p = av_ws(p + 1, e);
            }
        }
        pgo__buf_put(b, "]}", 2);
        return p < e ? p + 1 : e;
    case '"':
        q = av_str_end(p, e);
        pgo__buf_put(b, bin ? "{\"B\":" : "{\"S\":", 5);
        pgo__buf_put(b, p, (size_t)(q - p));
        pgo__buf_ch(b, '}');
        return q;
    case 't':
        pgo__buf_put(b, "{\"BOOL\":true}", 13);
        return p + 4;
    case 'f':
        pgo__buf_put(b, "{\"BOOL\":false}", 14);
        return p + 5;
    case 'n':
        pgo__buf_put(b, "{\"NULL\":true}", 13);
        return p + 4;
    default:
        for (q = p; q < e && ((*q >= '0' && *q <= '9') || *q == '-' || *q == '+' || *q == '.' ||
                              *q == 'e' || *q == 'E'); q++)
            ;
        if (q == p)                     /* not JSON: never written by this file */
            return e;
        av_number(b, p, (size_t)(q - p));
        return q;
    }
}

/* Rewrite the plain JSON value written at b->p[mark..] as an AttributeValue,
 * in place for scalars (the common case: no copy but a short move). */
static void av_rewrite(const struct pgo_decoder *d, struct pgo__buf *b, size_t mark, uint32_t oid)
{
    uint32_t elem = 0;
    enum cls c = cls_of(sl__pgo_resolve(d, oid), &elem);
    size_t n = b->len - mark;
    char first = n ? b->p[mark] : 0;
    bool bin = c == C_BYTEA || (c == C_ARRAY && first == '[' &&
                                cls_of(sl__pgo_resolve(d, elem), NULL) == C_BYTEA);

    if (first == '"') {
        if (b->cap - b->len <= 6)
            sl__pgo_buf_grow(b, 7);
        memmove(b->p + mark + 5, b->p + mark, n);
        memcpy(b->p + mark, bin ? "{\"B\":" : "{\"S\":", 5);
        b->len += 5;
        pgo__buf_ch(b, '}');
    } else if ((first >= '0' && first <= '9') || first == '-') {
        size_t use = ddb_number_len(b->p + mark, n);
        if (b->cap - b->len <= 8)
            sl__pgo_buf_grow(b, 9);
        memmove(b->p + mark + 6, b->p + mark, n);
        memcpy(b->p + mark, use ? "{\"N\":\"" : "{\"S\":\"", 6);
        b->len = mark + 6 + (use ? use : n);
        pgo__buf_put(b, "\"}", 2);
    } else {
        struct pgo__buf *t = sl__pgo_scratch(d);
        t->len = 0;
        pgo__buf_put(t, b->p + mark, n);
        b->len = mark;
        av_walk(b, t->p, t->p + t->len, bin);
    }
}

int sl__pgo_value(const struct pgo_decoder *d, struct pgo__buf *b, uint32_t oid, bool binary,
               const uint8_t *v, size_t n, struct sl_err *err)
{
    size_t mark = b->len;
    int rc = binary ? bin_value(d, b, oid, v, n, err) : text_value(d, b, oid, v, n, err);
    if (rc < 0)
        b->len = mark;
    else if (sl__pgo_images(d) == PGO_IMAGES_AV)
        av_rewrite(d, b, mark, oid);
    return rc;
}
