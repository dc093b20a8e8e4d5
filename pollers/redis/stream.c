/* Mode stream: a consumer group on a Redis stream.
 *
 *   fetch    XREADGROUP GROUP <group> <consumer> COUNT n BLOCK 1000 STREAMS <key> >
 *            on the reader connection (the only blocking command).
 *   ack      XACK (+ XDEL with delete_on_ack), in one script with the
 *            cleanup of the two side keys below when the message had them.
 *   reclaim  a script: XPENDING IDLE <visibility> from a cursor, then
 *            XCLAIM of each entry whose delay (if any) is over. The
 *            entry's delivery counter is the receive count; entries that
 *            were trimmed or deleted meanwhile are acknowledged away, so
 *            nothing stays stuck in the pending list. Entries of dead
 *            consumers are idle too: they are reclaimed the same way.
 *   release  the default (SQS) visibility needs nothing: the entry is
 *            reclaimed once idle for the visibility timeout, counted from
 *            its delivery. A delay chosen by the handler shorter than the
 *            visibility timeout sets the entry's idle time (XCLAIM IDLE);
 *            a longer one is kept in <key>:sluice:<group>:delay (a ZSET of
 *            due times) that the reclaim script honours.
 *   beat     entries still held by this instance are claimed again with
 *            JUSTID (idle time back to 0, counter unchanged): a live
 *            instance never loses a message it is still working on.
 *
 * <key>:sluice:<group>:first (a HASH) keeps the first receive time of
 * messages that came back, for ApproximateFirstReceiveTimestamp. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

enum { S_RECLAIM, S_RELEASE, S_BEAT, S_ACK, S_STATS, S__COUNT };

/* KEYS stream, delay, first. ARGV group, consumer, min_idle, now, count, cursor. */
static const char reclaim_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[6], '+', ARGV[5])\n"
    "local now = tonumber(ARGV[4])\n"
    "local out = {'-'}\n"
    "if #p >= tonumber(ARGV[5]) then out[1] = '(' .. p[#p][1] end\n"
    "for i = 1, #p do\n"
    "  local id = p[i][1]\n"
    "  local due = redis.call('ZSCORE', KEYS[2], id)\n"
    "  if not due or tonumber(due) <= now then\n"
    "    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)\n"
    "    if due then redis.call('ZREM', KEYS[2], id) end\n"
    "    if #c == 1 and c[1] then\n"
    "      local first = redis.call('HGET', KEYS[3], id)\n"
    "      if not first then\n"
    "        first = tostring(now - p[i][3])\n"
    "        redis.call('HSET', KEYS[3], id, first)\n"
    "      end\n"
    "      out[#out + 1] = c[1][1]\n"
    "      out[#out + 1] = c[1][2]\n"
    "      out[#out + 1] = p[i][4] + 1\n"
    "      out[#out + 1] = first\n"
    "    else\n"
    "      redis.call('XACK', KEYS[1], ARGV[1], id)\n"
    "      redis.call('HDEL', KEYS[3], id)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS stream, delay, first. ARGV group, consumer, visibility, now, then
 * (id, delay, first) triples; delay -1 is the default visibility. */
static const char release_lua[] =
    "local vis, now = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "for i = 5, #ARGV, 3 do\n"
    "  local id, d = ARGV[i], tonumber(ARGV[i + 1])\n"
    "  redis.call('HSETNX', KEYS[3], id, ARGV[i + 2])\n"
    "  if d >= 0 then\n"
    "    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])\n"
    "    if #p == 1 then\n"
    "      if d <= vis then\n"
    "        redis.call('ZREM', KEYS[2], id)\n"
    "        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', vis - d, 'JUSTID')\n"
    "      else\n"
    "        redis.call('ZADD', KEYS[2], now + d, id)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS stream. ARGV group, consumer, ids. */
static const char beat_lua[] =
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])\n"
    "  if #p == 1 then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS stream, delay, first. ARGV group, delete (0/1), cleanup (0/1), ids. */
static const char ack_lua[] =
    "local n = 0\n"
    "for i = 4, #ARGV, 500 do\n"
    "  local last = math.min(i + 499, #ARGV)\n"
    "  n = n + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))\n"
    "  if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ARGV, i, last)) end\n"
    "  if ARGV[3] == '1' then\n"
    "    redis.call('HDEL', KEYS[3], unpack(ARGV, i, last))\n"
    "    redis.call('ZREM', KEYS[2], unpack(ARGV, i, last))\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS stream. ARGV group. Returns {depth, pending, oldest id or ""}. */
static const char stats_lua[] =
    "local g = redis.pcall('XINFO', 'GROUPS', KEYS[1])\n"
    "if type(g) ~= 'table' or g.err then return {0, 0, ''} end\n"
    "local depth, pending, last = false, 0, '0-0'\n"
    "for _, e in ipairs(g) do\n"
    "  local t = {}\n"
    "  for i = 1, #e, 2 do t[e[i]] = e[i + 1] end\n"
    "  if t['name'] == ARGV[1] then\n"
    "    pending = t['pending']\n"
    "    last = t['last-delivered-id']\n"
    "    if type(t['lag']) == 'number' then depth = t['lag'] end\n"
    "  end\n"
    "end\n"
    "local oldest = ''\n"
    "if pending > 0 then\n"
    "  oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]\n"
    "else\n"
    "  local r = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)\n"
    "  if #r == 1 then oldest = r[1][1] end\n"
    "end\n"
    "if not depth then depth = redis.call('XLEN', KEYS[1]) - pending end\n"
    "return {depth, pending, oldest}\n";

static const char *const scripts[S__COUNT] = { reclaim_lua, release_lua, beat_lua, ack_lua,
                                               stats_lua };

/* side keys: <key>:sluice:<group>:delay and :first */
static void side_keys(const struct rq *q, char *delay, char *first, size_t n)
{
    snprintf(delay, n, "%s:sluice:%s:delay", q->o->key, q->o->group);
    snprintf(first, n, "%s:sluice:%s:first", q->o->key, q->o->group);
}

/* argv[0..6] of the scripts on the side keys, which go to delay and first:
 * EVALSHA <sha> 3 <key> <delay> <first> <group> */
static void side_script(const struct rq *q, int script, const char **argv, char *delay,
                        char *first, size_t n)
{
    side_keys(q, delay, first, n);
    argv[0] = "EVALSHA";
    argv[1] = q->sha[script];
    argv[2] = "3";
    argv[3] = q->o->key;
    argv[4] = delay;
    argv[5] = first;
    argv[6] = q->o->group;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static void on_group(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    struct sl_redis_conn *c = priv;
    bool ok;

    if (!r)
        return;
    ok = r->type != REDIS_REPLY_ERROR || (r->str && strncmp(r->str, "BUSYGROUP", 9) == 0);
    if (ok && r->type != REDIS_REPLY_ERROR)
        SL_INFO(q->inst, "created consumer group %s on stream %s at %s", q->o->group,
                q->o->key, q->starting_latest ? "its end ($)" : "its start (0)");
    sl_redis_conn_setup_done(c, ok, "XGROUP CREATE", r);
}

static int stream_setup(struct rq *q, struct sl_redis_conn *c)
{
    int n = 0;

    if (c != q->cmd)
        return 0;
    q->sha_next = 0;
    for (int i = 0; i < S__COUNT; i++)
        if (sl_redis_conn_cmdf(c, sl__rq_script_loaded, c, "SCRIPT LOAD %s", scripts[i]) == 0)
            n++;
    if (sl_redis_conn_cmdf(c, on_group, c, "XGROUP CREATE %s %s %s MKSTREAM", q->o->key,
                      q->o->group, q->starting_latest ? "$" : "0") == 0)
        n++;
    return n;
}

/* The group went away (Redis lost its data): create it again. */
static void on_regroup(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;

    (void)priv;
    if (r && r->type != REDIS_REPLY_ERROR)
        SL_WARN(q->inst, "consumer group %s on stream %s was missing: created it again",
                q->o->group, q->o->key);
}

/* ------------------------------------------------------------------ */
/* messages out of replies                                             */

/* Fill m from a stream entry [id, [f, v, ...]]; the body is the "body"
 * field, else the only field, else all fields as a JSON object (owned in
 * *tmp). */
static bool entry_msg(const redisReply *e, struct rq_msg *m, char **tmp)
{
    const redisReply *id, *f;

    *tmp = NULL;
    memset(m, 0, sizeof(*m));
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2)
        return false;
    id = e->element[0];
    f = e->element[1];
    if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > 40)
        return false;
    m->id = id->str;
    m->idlen = id->len;
    m->sent_ms = strtoll(id->str, NULL, 10);
    m->skip = -1;
    if (f->type != REDIS_REPLY_ARRAY) {
        m->body = "";
        return true; /* deleted meanwhile: an empty message */
    }
    m->fields = f;
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && f->element[i]->len == 4 &&
            memcmp(f->element[i]->str, "body", 4) == 0 &&
            f->element[i + 1]->type == REDIS_REPLY_STRING) {
            m->body = f->element[i + 1]->str;
            m->blen = f->element[i + 1]->len;
            m->skip = (int)i;
            return true;
        }
    if (f->elements == 2 && f->element[1]->type == REDIS_REPLY_STRING) {
        m->body = f->element[1]->str;
        m->blen = f->element[1]->len;
        m->skip = 0;
        return true;
    }
    {
        json_t *o = json_object();
        for (size_t i = 0; i + 1 < f->elements; i += 2)
            if (f->element[i]->type == REDIS_REPLY_STRING &&
                f->element[i + 1]->type == REDIS_REPLY_STRING) {
                char *k = sl_strndup(f->element[i]->str, f->element[i]->len);
                json_object_set_new(o, k, json_stringn(f->element[i + 1]->str,
                                                        f->element[i + 1]->len));
                free(k);
            }
        *tmp = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        m->body = *tmp ? *tmp : "";
        m->blen = *tmp ? strlen(*tmp) : 0;
    }
    return true;
}

/* Report the n messages of a read or reclaim, then free them and the
 * bodies entry_msg made (both arrays come from sl_calloc). */
static void fetched(struct rq *q, bool reclaim, struct rq_msg *m, char **tmp, size_t n)
{
    sl__rq_fetched(q, reclaim, m, n, 0);
    for (size_t i = 0; i < n; i++)
        free(tmp[i]);
    free(tmp);
    free(m);
}

static void on_read(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    struct rq_msg *m;
    char **tmp;
    const redisReply *entries;
    size_t n = 0;
    int64_t now = sl_wall_ms();

    (void)priv;
    if (!r) {
        sl__rq_fetched(q, false, NULL, 0, 200);
        return;
    }
    if (r->type == REDIS_REPLY_NIL) {
        sl__rq_fetched(q, false, NULL, 0, 0);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        SL_WARN(q->inst, "XREADGROUP on %s failed: %s", q->o->key, r->str ? r->str : "");
        if (r->str && strncmp(r->str, "NOGROUP", 7) == 0)
            sl_redis_conn_cmdf(q->cmd, on_regroup, NULL, "XGROUP CREATE %s %s 0 MKSTREAM",
                               q->o->key, q->o->group);
        sl__rq_fetched(q, false, NULL, 0, 1000);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
        r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        SL_WARN(q->inst, "XREADGROUP on %s: unexpected reply (type %d)", q->o->key, r->type);
        sl__rq_fetched(q, false, NULL, 0, 1000);
        return;
    }
    entries = r->element[0]->element[1];
    m = sl_calloc(entries->elements + 1, sizeof(*m));
    tmp = sl_calloc(entries->elements + 1, sizeof(*tmp));
    for (size_t i = 0; i < entries->elements; i++) {
        if (!entry_msg(entries->element[i], &m[n], &tmp[n]))
            continue;
        m[n].receive_count = 1;
        m[n].first_ms = now;
        n++;
    }
    fetched(q, false, m, tmp, n);
}

static void stream_fetch(struct rq *q, size_t count)
{
    char cnt[24], block[24];
    const char *argv[] = { "XREADGROUP", "GROUP", q->o->group, q->consumer, "COUNT", cnt,
                           "BLOCK", block, "STREAMS", q->o->key, ">" };

    snprintf(cnt, sizeof(cnt), "%zu", count);
    snprintf(block, sizeof(block), "%d", RQ_BLOCK_MS);
    if (rq_cmd(q->rd, on_read, NULL, 11, argv, NULL) != 0)
        sl__rq_fetched(q, false, NULL, 0, 200);
}

static void on_reclaim(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    struct rq_msg *m;
    char **tmp;
    size_t n = 0;

    (void)priv;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        if (r && !sl__rq_script_error(q, q->cmd, r, "reclaim"))
            SL_WARN(q->inst, "reclaim on %s failed: unexpected reply", q->o->key);
        sl__rq_fetched(q, true, NULL, 0, 1000);
        return;
    }
    snprintf(q->cursor, sizeof(q->cursor), "%.*s", (int)r->element[0]->len, r->element[0]->str);
    m = sl_calloc(r->elements / 4 + 1, sizeof(*m));
    tmp = sl_calloc(r->elements / 4 + 1, sizeof(*tmp));
    for (size_t i = 1; i + 3 < r->elements; i += 4) {
        redisReply pair = { .type = REDIS_REPLY_ARRAY, .elements = 2 };
        redisReply *el[2] = { r->element[i], r->element[i + 1] };

        pair.element = el;
        if (!entry_msg(&pair, &m[n], &tmp[n]))
            continue;
        m[n].fields = r->element[i + 1]->type == REDIS_REPLY_ARRAY ? r->element[i + 1] : NULL;
        m[n].receive_count = (int)r->element[i + 2]->integer;
        m[n].first_ms = r->element[i + 3]->type == REDIS_REPLY_STRING
                            ? strtoll(r->element[i + 3]->str, NULL, 10) : sl_wall_ms();
        n++;
    }
    fetched(q, true, m, tmp, n);
}

static void stream_reclaim(struct rq *q, size_t count)
{
    char dkey[600], fkey[600], idle[24], now[24], cnt[24];
    const char *argv[] = { "EVALSHA", q->sha[S_RECLAIM], "3", q->o->key, dkey, fkey,
                           q->o->group, q->consumer, idle, now, cnt,
                           q->cursor[0] ? q->cursor : "-" };

    side_keys(q, dkey, fkey, sizeof(dkey));
    snprintf(idle, sizeof(idle), "%lld", (long long)q->conf->visibility_timeout_ms);
    snprintf(now, sizeof(now), "%lld", (long long)sl_wall_ms());
    snprintf(cnt, sizeof(cnt), "%zu", count);
    if (rq_cmd(q->cmd, on_reclaim, NULL, 12, argv, NULL) != 0)
        sl__rq_fetched(q, true, NULL, 0, 1000);
}

/* ------------------------------------------------------------------ */
/* ack, release, beat, stats, handback                                 */

static void stream_ack(struct rq *q, const char **ids, size_t n, bool cleanup,
                       void (*done)(struct rq *q, bool ok, void *arg), void *arg)
{
    size_t argc = 9 + n;
    const char **argv = sl_malloc(argc * sizeof(*argv));
    char dkey[600], fkey[600];

    side_script(q, S_ACK, argv, dkey, fkey, sizeof(dkey));
    argv[7] = q->o->delete_on_ack ? "1" : "0";
    argv[8] = cleanup ? "1" : "0";
    memcpy(argv + 9, ids, n * sizeof(*ids));
    sl__rq_script_ack(q, (int)argc, argv, done, arg);
    free(argv);
}

static void on_ignore(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    const char *what = priv;

    if (r && r->type == REDIS_REPLY_ERROR)
        SL_WARN(q->inst, "%s on %s failed: %s", what, q->o->key, r->str ? r->str : "");
}

static void stream_release(struct rq *q, const char **ids, const int64_t *delay_ms,
                           const int64_t *first_ms, size_t n)
{
    size_t argc = 10 + 3 * n;
    const char **argv = sl_malloc(argc * sizeof(*argv));
    char (*num)[24] = sl_malloc((2 * n + 2) * sizeof(*num));
    char dkey[600], fkey[600];

    side_script(q, S_RELEASE, argv, dkey, fkey, sizeof(dkey));
    snprintf(num[0], sizeof(num[0]), "%lld", (long long)q->conf->visibility_timeout_ms);
    snprintf(num[1], sizeof(num[1]), "%lld", (long long)sl_wall_ms());
    argv[7] = q->consumer;
    argv[8] = num[0];
    argv[9] = num[1];
    for (size_t i = 0; i < n; i++) {
        snprintf(num[2 + 2 * i], sizeof(num[0]), "%lld", (long long)delay_ms[i]);
        snprintf(num[3 + 2 * i], sizeof(num[0]), "%lld", (long long)first_ms[i]);
        argv[10 + 3 * i] = ids[i];
        argv[11 + 3 * i] = num[2 + 2 * i];
        argv[12 + 3 * i] = num[3 + 2 * i];
    }
    if (rq_cmd(q->cmd, on_ignore, "release", (int)argc, argv, NULL) != 0)
        SL_DEBUG(SL_DBG_REDIS, q->inst, "release of %zu message(s) not sent: not connected; "
                 "they come back after the visibility timeout", n);
    free(num);
    free(argv);
}

static void stream_beat(struct rq *q, const char **ids, size_t n)
{
    const char **argv = sl_malloc((6 + n) * sizeof(*argv));

    argv[0] = "EVALSHA";
    argv[1] = q->sha[S_BEAT];
    argv[2] = "1";
    argv[3] = q->o->key;
    argv[4] = q->o->group;
    argv[5] = q->consumer;
    memcpy(argv + 6, ids, n * sizeof(*ids));
    rq_cmd(q->cmd, on_ignore, "lease refresh", (int)(6 + n), argv, NULL);
    free(argv);
}

static void stream_handback(struct rq *q, const char **ids, size_t n)
{
    const char **argv = sl_malloc((10 + n) * sizeof(*argv));
    char idle[24];

    /* idle for the whole visibility timeout: reclaimable at once */
    snprintf(idle, sizeof(idle), "%lld", (long long)q->conf->visibility_timeout_ms);
    argv[0] = "XCLAIM";
    argv[1] = q->o->key;
    argv[2] = q->o->group;
    argv[3] = q->consumer;
    argv[4] = "0";
    memcpy(argv + 5, ids, n * sizeof(*ids));
    argv[5 + n] = "IDLE";
    argv[6 + n] = idle;
    argv[7 + n] = "JUSTID";
    rq_cmd(q->cmd, on_ignore, "hand back", (int)(8 + n), argv, NULL);
    free(argv);
}

static void on_stats(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;

    (void)priv;
    if (!sl__rq_stats_reply(q, r))
        return;
    if (r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len > 0) {
        int64_t ms = strtoll(r->element[2]->str, NULL, 10), now = sl_wall_ms();
        q->g_oldest_s = now > ms ? (double)(now - ms) / 1000.0 : 0;
    } else {
        q->g_oldest_s = 0;
    }
}

static void stream_stats(struct rq *q)
{
    const char *argv[] = { "EVALSHA", q->sha[S_STATS], "1", q->o->key, q->o->group };

    if (rq_cmd(q->cmd, on_stats, NULL, 5, argv, NULL) == 0)
        q->statting = true;
}

const struct rq_mode sl__rq_stream_mode = {
    .name = "stream",
    .setup = stream_setup,
    .fetch = stream_fetch,
    .reclaim = stream_reclaim,
    .ack = stream_ack,
    .release = stream_release,
    .beat = stream_beat,
    .stats = stream_stats,
    .handback = stream_handback,
};
