/* Runtime overrides over the configuration file (sluice/overrides.h):
 * data_dir/overrides.json, checked against the key tables of schema.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "schema.h"
#include "sluice/clock.h"
#include "sluice/datadir.h"
#include "sluice/mem.h"
#include "sluice/overrides.h"

struct sl_overrides {
    char   *dir;          /* data_dir */
    char   *path;         /* data_dir/overrides.json */
    json_t *doc;          /* {"version", "sources", "functions"} */
};

/* The keys that can be overridden, and the table row each stands for. */
static const char *const source_keys[] = {
    "enabled", "batch_size", "maximum_batching_window_ms", "maximum_retry_attempts",
    "maximum_record_age_s", "bisect_batch_on_function_error", "report_batch_item_failures",
    NULL,
};
static const char *const function_keys[] = {
    "reserved_concurrency", "provisioned_concurrency", "async.maximum_retry_attempts",
    "async.maximum_event_age_s", NULL,
};
/* members of an entry that are not overrides */
static bool meta_key(const char *k)
{
    return strcmp(k, "type") == 0 || strcmp(k, "function") == 0 ||
           strcmp(k, "last_modified_ms") == 0;
}

static bool listed(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0)
            return true;
    return false;
}

static const struct sl_conf_key *row(const struct sl__ctable *t, const char *name)
{
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
}

/* The table row of an overridable key ("async.x" is a row of the async table). */
static const struct sl_conf_key *key_row(bool source, const char *key)
{
    if (source)
        return listed(source_keys, key) ? row(&sl__source_table, key) : NULL;
    if (!listed(function_keys, key))
        return NULL;
    if (strncmp(key, "async.", 6) == 0)
        return row(&sl__async_table, key + 6);
    return row(&sl__function_table, key);
}

/* `v` fits row `k` (and, for a source key, source type `t`)? */
static int check_value(const struct sl_conf_key *k, const struct sl_conf_type *t, const char *key,
                       const json_t *v, char *why, size_t n)
{
    if (t && k->traits && !(t->traits & k->traits)) {
        snprintf(why, n, "%s is not a setting of %s sources", key, sl_conf_type_name(t));
        return -1;
    }
    if (k->type == SL_CK_BOOL) {
        if (!json_is_boolean(v)) {
            snprintf(why, n, "%s must be true or false", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_integer(v)) {
        snprintf(why, n, "%s must be an integer", key);
        return -1;
    }
    {
        json_int_t x = json_integer_value(v);

        if ((k->flags & SL_CK_NEG1) && x == -1)
            return 0;
        if (k->min != k->max && (x < k->min || x > k->max)) {
            snprintf(why, n, "%s %lld is out of range (%lld..%lld%s)", key, (long long)x,
                     (long long)k->min, (long long)k->max,
                     (k->flags & SL_CK_NEG1) ? ", or -1" : "");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The file                                                            */

static json_t *empty_doc(void)
{
    return json_pack("{s:i, s:{}, s:{}}", "version", SL_OVERRIDES_VERSION, "sources",
                     "functions");
}

int sl_overrides_load(const char *data_dir, struct sl_overrides **out, char *why, size_t n)
{
    struct sl_overrides *ov = sl_calloc(1, sizeof(*ov));
    char buf[512];
    json_error_t je;
    json_t *doc = NULL, *ver;
    int fd;

    ov->dir = sl_strdup(data_dir);
    ov->path = sl_asprintf("%s/%s", data_dir, SL_OVERRIDES_FILE);
    fd = sl_data_file_open(data_dir, SL_OVERRIDES_FILE, O_RDONLY, buf, sizeof(buf));
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
        ov->doc = empty_doc();
        *out = ov;
        return 0;
    }
    if (fd < 0) {
        snprintf(why, n, "%s", buf);
        goto fail;
    }
    {
        struct stat st;

        if (fstat(fd, &st) != 0 || st.st_size > SL_OVERRIDES_MAX) {
            snprintf(why, n, "%s: larger than %d bytes", ov->path, SL_OVERRIDES_MAX);
            close(fd);
            goto fail;
        }
    }
    doc = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
    close(fd);
    if (!doc) {
        snprintf(why, n, "%s:%d:%d: not JSON: %s", ov->path, je.line, je.column, je.text);
        goto fail;
    }
    ver = json_object_get(doc, "version");
    if (!json_is_object(doc) || !json_is_integer(ver)) {
        snprintf(why, n, "%s: not an overrides file (no \"version\")", ov->path);
        goto fail;
    }
    if (json_integer_value(ver) != SL_OVERRIDES_VERSION) {
        snprintf(why, n, "%s: version %lld, this sluice reads version %d", ov->path,
                 (long long)json_integer_value(ver), SL_OVERRIDES_VERSION);
        goto fail;
    }
    if (!json_is_object(json_object_get(doc, "sources")))
        json_object_set_new(doc, "sources", json_object());
    if (!json_is_object(json_object_get(doc, "functions")))
        json_object_set_new(doc, "functions", json_object());
    ov->doc = doc;
    *out = ov;
    return 0;

fail:
    json_decref(doc);
    sl_overrides_free(ov);
    return -1;
}

void sl_overrides_free(struct sl_overrides *ov)
{
    if (!ov)
        return;
    json_decref(ov->doc);
    free(ov->dir);
    free(ov->path);
    free(ov);
}

const char *sl_overrides_path(const struct sl_overrides *ov)
{
    return ov->path;
}

const json_t *sl_overrides_doc(const struct sl_overrides *ov)
{
    return ov->doc;
}

bool sl_overrides_empty(const struct sl_overrides *ov)
{
    return json_object_size(json_object_get(ov->doc, "sources")) == 0 &&
           json_object_size(json_object_get(ov->doc, "functions")) == 0;
}

const json_t *sl_overrides_source(const struct sl_overrides *ov, const char *name)
{
    return json_object_get(json_object_get(ov->doc, "sources"), name);
}

const json_t *sl_overrides_function(const struct sl_overrides *ov, const char *name)
{
    return json_object_get(json_object_get(ov->doc, "functions"), name);
}

static const struct sl_source_conf *find_source(const struct sl_config *c, const char *name)
{
    for (size_t i = 0; i < c->nsources; i++)
        if (strcmp(c->sources[i].name, name) == 0)
            return &c->sources[i];
    return NULL;
}

size_t sl_overrides_check(const struct sl_overrides *ov, const struct sl_config *c,
                          struct sl_diags *d)
{
    const char *name, *key;
    json_t *e, *v;
    size_t bad = 0;
    char why[512];

    json_object_foreach(json_object_get(ov->doc, "sources"), name, e) {
        const struct sl_source_conf *sc = find_source(c, name);
        const char *t = json_string_value(json_object_get(e, "type"));
        const char *f = json_string_value(json_object_get(e, "function"));

        if (!sc) {
            sl_diags_add(d, 0, 0, "source '%s': overridden, but the configuration has no such "
                         "source", name);
            bad++;
            continue;
        }
        if (t && strcmp(t, sl_conf_type_name(sc->type)) != 0) {
            sl_diags_add(d, 0, 0, "source '%s': overridden as a %s source, it is now a %s "
                         "source", name, t, sl_conf_type_name(sc->type));
            bad++;
            continue;
        }
        if (f && strcmp(f, sc->function) != 0) {
            sl_diags_add(d, 0, 0, "source '%s': overridden for function %s, it now feeds %s "
                         "(another event source mapping)", name, f, sc->function);
            bad++;
            continue;
        }
        json_object_foreach(e, key, v) {
            const struct sl_conf_key *k = key_row(true, key);

            if (meta_key(key))
                continue;
            if (!k) {
                sl_diags_add(d, 0, 0, "source '%s': %s cannot be overridden", name, key);
                bad++;
            } else if (check_value(k, sc->type, key, v, why, sizeof(why)) != 0) {
                sl_diags_add(d, 0, 0, "source '%s': %s", name, why);
                bad++;
            }
        }
    }
    json_object_foreach(json_object_get(ov->doc, "functions"), name, e) {
        if (!sl_config_function(c, name)) {
            sl_diags_add(d, 0, 0, "function '%s': overridden, but the configuration has no "
                         "such function", name);
            bad++;
            continue;
        }
        json_object_foreach(e, key, v) {
            const struct sl_conf_key *k = key_row(false, key);

            if (meta_key(key))
                continue;
            if (!k) {
                sl_diags_add(d, 0, 0, "function '%s': %s cannot be overridden", name, key);
                bad++;
            } else if (check_value(k, NULL, key, v, why, sizeof(why)) != 0) {
                sl_diags_add(d, 0, 0, "function '%s': %s", name, why);
                bad++;
            }
        }
    }
    return bad;
}

/* Store `v` through row `k` into the struct at `base`. */
static void store(const struct sl_conf_key *k, void *base, const json_t *v)
{
    void *field = (char *)base + k->off;

    if (k->type == SL_CK_BOOL) {
        *(bool *)field = json_is_true(v);
        return;
    }
    {
        int64_t x = (int64_t)json_integer_value(v);

        if (k->type == SL_CK_DURATION && x != -1)
            x *= k->unit ? k->unit : 1;
        *(int64_t *)field = x;
    }
}

/* One source's entry `e` of the document into `sc`. */
static void apply_source(json_t *e, struct sl_source_conf *sc)
{
    const char *key;
    json_t *v;

    json_object_foreach(e, key, v) {
        const struct sl_conf_key *k = key_row(true, key);
        char why[256];

        if (!meta_key(key) && k && check_value(k, sc->type, key, v, why, sizeof(why)) == 0)
            store(k, sc, v);
    }
}

static void apply_doc(const json_t *doc, struct sl_config *c)
{
    const char *name, *key;
    json_t *e, *v;

    json_object_foreach(json_object_get(doc, "sources"), name, e) {
        struct sl_source_conf *sc = (struct sl_source_conf *)find_source(c, name);

        if (sc)
            apply_source(e, sc);
    }
    json_object_foreach(json_object_get(doc, "functions"), name, e) {
        struct sl_function_conf *fc = (struct sl_function_conf *)sl_config_function(c, name);

        if (!fc)
            continue;
        json_object_foreach(e, key, v) {
            const struct sl_conf_key *k = key_row(false, key);
            char why[256];

            if (meta_key(key) || !k || check_value(k, NULL, key, v, why, sizeof(why)) != 0)
                continue;
            store(k, strncmp(key, "async.", 6) == 0 ? (void *)&fc->async : (void *)fc, v);
        }
    }
}

void sl_overrides_apply(const struct sl_overrides *ov, struct sl_config *c)
{
    apply_doc(ov->doc, c);
}

void sl_overrides_apply_source(const struct sl_overrides *ov, struct sl_source_conf *sc)
{
    apply_source(json_object_get(json_object_get(ov->doc, "sources"), sc->name), sc);
}

json_t *sl_overrides_draft(const struct sl_overrides *ov)
{
    return json_deep_copy(ov->doc);
}

int sl_overrides_put(json_t *draft, const struct sl_source_conf *sc,
                     const struct sl_function_conf *fc, const char *key, const json_t *v,
                     char *why, size_t n)
{
    const struct sl_conf_key *k = key_row(sc != NULL, key);
    json_t *set = json_object_get(draft, sc ? "sources" : "functions"), *e;
    const char *name = sc ? sc->name : fc->name;

    if (!k) {
        snprintf(why, n, "%s cannot be overridden", key);
        return -1;
    }
    if (check_value(k, sc ? sc->type : NULL, key, v, why, n) != 0)
        return -1;
    if (!(e = json_object_get(set, name))) {
        e = json_object();
        json_object_set_new(set, name, e);
    }
    if (sc) {
        json_object_set_new(e, "type", json_string(sl_conf_type_name(sc->type)));
        json_object_set_new(e, "function", json_string(sc->function));
    }
    json_object_set_new(e, "last_modified_ms", json_integer((json_int_t)sl_wall_ms()));
    json_object_set_new(e, key, json_deep_copy(v));
    return 0;
}

char *sl_overrides_text(const json_t *draft)
{
    char *s = json_dumps(draft, JSON_INDENT(2) | JSON_SORT_KEYS);
    char *t;

    if (!s)
        abort(); /* jansson fails only out of memory */
    t = sl_asprintf("%s\n", s);
    free(s);
    return t;
}

int sl_overrides_write(const char *data_dir, const char *text, char *why, size_t n)
{
    static const char tmp[] = SL_OVERRIDES_FILE ".tmp";
    size_t len = strlen(text), off = 0;
    char buf[512];
    int fd, dfd;

    fd = sl_data_file_open(data_dir, tmp, O_WRONLY | O_CREAT | O_TRUNC, buf, sizeof(buf));
    if (fd < 0) {
        snprintf(why, n, "%s", buf);
        return -1;
    }
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(why, n, "cannot write %s/%s: %s", data_dir, tmp, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        snprintf(why, n, "cannot fsync %s/%s: %s", data_dir, tmp, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        snprintf(why, n, "cannot open %s: %s", data_dir, strerror(errno));
        return -1;
    }
    if (renameat(dfd, tmp, dfd, SL_OVERRIDES_FILE) != 0) {
        snprintf(why, n, "cannot rename %s/%s: %s", data_dir, tmp, strerror(errno));
        close(dfd);
        return -1;
    }
    if (fsync(dfd) != 0) {
        snprintf(why, n, "cannot fsync %s: %s", data_dir, strerror(errno));
        close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
}

void sl_overrides_commit(struct sl_overrides *ov, json_t *draft, struct sl_config *c)
{
    json_decref(ov->doc);
    ov->doc = draft;
    apply_doc(draft, c);
}

/* ------------------------------------------------------------------ */
/* Mapping UUIDs                                                       */

void sl_mapping_uuid(const struct sl_config *c, const struct sl_source_conf *sc, char out[37])
{
    /* sluice's namespace: a fixed random UUID, 5d1c0e6a-7f0b-4c59-9a43-2b1f6e8d0c71 */
    static const unsigned char ns[16] = { 0x5d, 0x1c, 0x0e, 0x6a, 0x7f, 0x0b, 0x4c, 0x59,
                                          0x9a, 0x43, 0x2b, 0x1f, 0x6e, 0x8d, 0x0c, 0x71 };
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char *name = sl_asprintf("%s:%s:%s", c->server.account_id ? c->server.account_id : "",
                             sc->function, sc->name);
    EVP_MD_CTX *x = EVP_MD_CTX_new();

    if (!x)
        abort(); /* out of memory */
    EVP_DigestInit_ex(x, EVP_sha1(), NULL);
    EVP_DigestUpdate(x, ns, sizeof(ns));
    EVP_DigestUpdate(x, name, strlen(name));
    EVP_DigestFinal_ex(x, md, &mdlen);
    EVP_MD_CTX_free(x);
    free(name);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);   /* version 5 */
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0],
             md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11],
             md[12], md[13], md[14], md[15]);
}
