/* AWS Signature Version 4 for service `lambda`, verified the way AWS
 * documents it (Signature Version 4 signing process: canonical request,
 * string to sign, signing key). HMAC-SHA256 and SHA-256 are OpenSSL's
 * libcrypto; nothing cryptographic is ours. The request comes as its
 * method, its target as sent (path and query, still percent-encoded), a
 * header lookup and the payload's SHA-256 in hex. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "internal.h"
#include "sluice/mem.h"

#define SKEW_S       300                  /* AWS's 5 minutes */
#define CANON_MAX    (64 * 1024)          /* a canonical request bigger than the headers cap */

/* ------------------------------------------------------------------ */
/* Text helpers                                                        */

struct sbuf {
    char   *p;
    size_t  len, cap;
    bool    over;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->over || b->len + n + 1 > b->cap) {
        b->over = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void sb_addc(struct sbuf *b, char c)
{
    sb_addn(b, &c, 1);
}

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encode `s[0..n)`, leaving unreserved characters (and '/' when
 * `keep_slash`). */
static void sb_encode(struct sbuf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (unreserved(c) || (keep_slash && c == '/')) {
            sb_addc(b, (char)c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            sb_addn(b, e, 3);
        }
    }
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sl__sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        out[0] = '\0';
        return;
    }
    to_hex(md, 32, out);
}

static bool hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int olen = 0;

    return HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out,
                &olen) && olen == 32;
}

/* ------------------------------------------------------------------ */
/* The Authorization header                                            */

/* The value of `name=` in a comma-separated list, up to the next comma. */
static bool auth_param(const char *h, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);

    for (const char *p = h; *p;) {
        size_t vl;

        while (*p == ' ' || *p == ',')
            p++;
        vl = strcspn(p, ",");
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            size_t l = vl - nl - 1;

            while (l > 0 && v[l - 1] == ' ')
                l--;
            if (l == 0 || l >= n)
                return false;
            memcpy(out, v, l);
            out[l] = '\0';
            return true;
        }
        p += vl;
    }
    return false;
}

int sl__sigv4_parse(const char *authz, struct sl_sigv4 *s)
{
    char cred[512], *parts[5], *save = NULL, *tok;
    int n = 0;

    memset(s, 0, sizeof(*s));
    while (*authz == ' ')
        authz++;
    if (strncmp(authz, "AWS4-HMAC-SHA256 ", 17) != 0)
        return -1;
    authz += 17;
    if (!auth_param(authz, "Credential", cred, sizeof(cred)) ||
        !auth_param(authz, "SignedHeaders", s->signed_headers, sizeof(s->signed_headers)) ||
        !auth_param(authz, "Signature", s->signature, sizeof(s->signature)))
        return -1;
    for (tok = strtok_r(cred, "/", &save); tok && n < 5; tok = strtok_r(NULL, "/", &save))
        parts[n++] = tok;
    if (n != 5 || tok || strcmp(parts[4], "aws4_request") != 0 ||
        strlen(parts[0]) >= sizeof(s->key_id) || strlen(parts[1]) != 8 ||
        strlen(parts[2]) >= sizeof(s->region) || strlen(parts[3]) >= sizeof(s->service))
        return -1;
    strcpy(s->key_id, parts[0]);
    strcpy(s->date, parts[1]);
    strcpy(s->region, parts[2]);
    strcpy(s->service, parts[3]);
    for (const char *p = s->date; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    if (strlen(s->signature) != 64)
        return -1;
    for (const char *p = s->signature; *p; p++)
        if (!isxdigit((unsigned char)*p))
            return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */

/* "YYYYMMDDTHHMMSSZ" to Unix seconds, -1 when malformed. */
static long long amz_time(const char *v)
{
    struct tm tm = { 0 };
    const char *end;

    if (!v || strlen(v) != 16)
        return -1;
    end = strptime(v, "%Y%m%dT%H%M%SZ", &tm);
    if (!end || *end)
        return -1;
    return (long long)timegm(&tm);
}

/* Header `name`'s values, trimmed, inner runs of spaces folded, joined by ','. */
static void canon_header(struct sbuf *b, const struct sl_hdrs *h, const char *name)
{
    for (size_t i = 0;; i++) {
        const char *v = h->get(h->ctx, name, i);
        bool space = false;

        if (!v)
            break;
        if (i > 0)
            sb_addc(b, ',');
        while (*v == ' ' || *v == '\t')
            v++;
        for (; *v; v++) {
            if (*v == ' ' || *v == '\t') {
                space = true;
                continue;
            }
            if (space)
                sb_addc(b, ' ');
            space = false;
            sb_addc(b, *v);
        }
    }
}

struct qpair {
    char *k, *v;
};

static int qpair_cmp(const void *x, const void *y)
{
    const struct qpair *a = x, *b = y;
    int c = strcmp(a->k, b->k);

    return c ? c : strcmp(a->v, b->v);
}

/* The query as AWS canonicalizes it: each name and value decoded, then
 * encoded strictly, sorted by name then value. */
static void canon_query(struct sbuf *b, const char *q)
{
    struct qpair pairs[64];
    size_t n = 0;

    while (q && *q && n < 64) {
        size_t len = strcspn(q, "&"), kl, dl;
        const char *eq = memchr(q, '=', len);
        struct sbuf e;
        char *d;

        if (len > 0) {
            kl = eq ? (size_t)(eq - q) : len;
            for (int part = 0; part < 2; part++) {
                const char *s = part ? (eq ? eq + 1 : q + len) : q;
                size_t sl = part ? (size_t)(q + len - s) : kl;

                d = sl_pct_decode(s, sl, false, &dl); /* '+' stays '+' */
                e.cap = dl * 3 + 1;
                e.p = sl_malloc(e.cap);
                e.len = 0;
                e.over = false;
                e.p[0] = '\0';
                sb_encode(&e, d, dl, false);
                free(d);
                if (part)
                    pairs[n].v = e.p;
                else
                    pairs[n].k = e.p;
            }
            n++;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    if (q && *q)
        b->over = true; /* more than 64 parameters: refuse rather than guess */
    qsort(pairs, n, sizeof(pairs[0]), qpair_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_addc(b, '&');
        sb_add(b, pairs[i].k);
        sb_addc(b, '=');
        sb_add(b, pairs[i].v);
        free(pairs[i].k);
        free(pairs[i].v);
    }
}

int sl__sigv4_verify(const struct sl_sigv4 *s, const char *secret, const char *method,
                     const char *target, const struct sl_hdrs *h, const char *payload_sha256,
                     long long now, const char **why)
{
    const char *amzdate = h->get(h->ctx, "x-amz-date", 0), *q;
    char scope[256], chash[65], sig[65], *ksecret;
    unsigned char k1[32], k2[32], k3[32], k4[32], mac[32];
    struct sbuf b = { 0 };
    long long t;
    bool ok;
    int rc = -1;

    if (strcmp(s->service, "lambda") != 0) {
        *why = "the credential scope names another service than lambda";
        return -1;
    }
    if ((t = amz_time(amzdate)) < 0) {
        *why = "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ";
        return -1;
    }
    if (strncmp(amzdate, s->date, 8) != 0) {
        *why = "the credential scope's date is not X-Amz-Date's";
        return -1;
    }
    if (t < now - SKEW_S || t > now + SKEW_S) {
        *why = "Signature expired: X-Amz-Date is more than 5 minutes from the server's clock";
        return -2;
    }
    /* signed headers: lowercase, sorted, ';'-separated, with host and x-amz-date */
    {
        char prev[128] = "";
        bool host = false, date = false;
        const char *p = s->signed_headers;

        while (*p) {
            size_t l = strcspn(p, ";");
            char name[128];

            if (l == 0 || l >= sizeof(name)) {
                *why = "SignedHeaders is malformed";
                return -1;
            }
            memcpy(name, p, l);
            name[l] = '\0';
            for (size_t i = 0; i < l; i++)
                if (isupper((unsigned char)name[i]) || name[i] == ' ') {
                    *why = "SignedHeaders is malformed";
                    return -1;
                }
            if (prev[0] && strcmp(prev, name) >= 0) {
                *why = "SignedHeaders is not sorted";
                return -1;
            }
            snprintf(prev, sizeof(prev), "%s", name);
            host |= strcmp(name, "host") == 0;
            date |= strcmp(name, "x-amz-date") == 0;
            p += l;
            if (*p == ';')
                p++;
        }
        if (!host || !date) {
            *why = "SignedHeaders must include host and x-amz-date";
            return -1;
        }
    }

    b.cap = CANON_MAX;
    b.p = sl_malloc(b.cap);
    b.p[0] = '\0';
    sb_add(&b, method);
    sb_addc(&b, '\n');
    q = strchr(target, '?');
    sb_encode(&b, target, q ? (size_t)(q - target) : strlen(target), true);
    sb_addc(&b, '\n');
    canon_query(&b, q ? q + 1 : NULL);
    sb_addc(&b, '\n');
    for (const char *p = s->signed_headers; *p;) {
        size_t l = strcspn(p, ";");
        char name[128];

        memcpy(name, p, l);
        name[l] = '\0';
        if (!h->get(h->ctx, name, 0)) {
            *why = "a signed header is missing from the request";
            goto out;
        }
        sb_add(&b, name);
        sb_addc(&b, ':');
        canon_header(&b, h, name);
        sb_addc(&b, '\n');
        p += l;
        if (*p == ';')
            p++;
    }
    sb_addc(&b, '\n');
    sb_add(&b, s->signed_headers);
    sb_addc(&b, '\n');
    sb_add(&b, payload_sha256);
    if (b.over) {
        *why = "the request is too large to verify";
        goto out;
    }
    sl__sha256_hex(b.p, b.len, chash);

    snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", s->date, s->region, s->service);
    b.len = 0;
    b.p[0] = '\0';
    sb_add(&b, "AWS4-HMAC-SHA256\n");
    sb_add(&b, amzdate);
    sb_addc(&b, '\n');
    sb_add(&b, scope);
    sb_addc(&b, '\n');
    sb_add(&b, chash);

    ksecret = sl_malloc(strlen(secret) + 5);
    sprintf(ksecret, "AWS4%s", secret);
    ok = hmac(ksecret, strlen(ksecret), s->date, k1) && hmac(k1, 32, s->region, k2) &&
         hmac(k2, 32, s->service, k3) && hmac(k3, 32, "aws4_request", k4) &&
         hmac(k4, 32, b.p, mac);
    OPENSSL_cleanse(ksecret, strlen(ksecret));
    free(ksecret);
    OPENSSL_cleanse(k4, sizeof(k4));
    if (!ok) {
        *why = "cannot compute the signature";
        goto out;
    }
    to_hex(mac, 32, sig);
    {
        char given[65];

        for (int i = 0; i < 65; i++)
            given[i] = (char)tolower((unsigned char)s->signature[i]);
        if (CRYPTO_memcmp(sig, given, 64) != 0) {
            *why = "The request signature we calculated does not match the signature you "
                   "provided. Check your AWS Secret Access Key and signing method.";
            rc = -3;
            goto out;
        }
    }
    rc = 0;
out:
    free(b.p);
    return rc;
}
