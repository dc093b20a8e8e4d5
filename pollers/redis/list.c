/* Mode list: a reliable queue on a plain Redis list. Producers LPUSH
 * (Sidekiq/RQ style, unchanged); sluice takes from the other end, so the
 * list is FIFO.
 *
 * Keys (P = "<key>:sluice"):
 *   P:m:<id>          HASH body, rc (receives), sent, first, owner: one per
 *                     message received and not yet deleted
 *   P:leases          ZSET id -> time the message becomes visible again
 *   P:seq             INCR counter: message ids
 *   P:proc:<consumer> LIST where BLMOVE lands one item while the queue is
 *                     empty (the blocking wait), taken by the next fetch
 *   P:consumers       ZSET consumer -> last seen (ms)
 *
 *   fetch    a script moves up to n items (landing list first, then the
 *            queue) into their own hash with a new id and a lease, in one
 *            step: a message is always either in the list or leased, so
 *            nothing is lost if sluice dies at any point. When the queue is
 *            empty, BLMOVE <key> P:proc:<me> waits (1 s at most) for one.
 *   ids      each list item gets a fresh id when first received, kept in its
 *            hash across redeliveries. Two identical payloads pushed twice
 *            are two messages with two ids: content is never deduplicated.
 *   ack      DEL the hash and ZREM the lease.
 *   reclaim  a script takes leases that expired (failed, delayed, or held
 *            by a consumer that died), increments rc and leases them again
 *            to the caller. It also returns to the queue the landing lists
 *            of consumers unseen for max(visibility, 10 s).
 *   release  the default visibility needs nothing (the lease set at the
 *            receive expires); a handler's delay moves the lease (ZADD XX).
 *   beat     leases of messages this instance still holds are moved forward
 *            (only where the hash still names this consumer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/clock.h"
#include "sluice/log.h"
#include "sluice/mem.h"

#include "internal.h"

enum { L_FETCH, L_RECLAIM, L_ACK, L_RELEASE, L_BEAT, L_STATS, L__COUNT };

#define DEAD_MIN_MS 10000

/* KEYS queue, proc, leases, seq, consumers. ARGV mprefix, consumer, now,
 * deadline, count. Returns flat (id, body, rc, sent, first) tuples. */
static const char fetch_lua[] =
    "redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])\n"
    "local out = {}\n"
    "for i = 1, tonumber(ARGV[5]) do\n"
    "  local v = redis.call('RPOP', KEYS[2])\n"
    "  if not v then v = redis.call('RPOP', KEYS[1]) end\n"
    "  if not v then break end\n"
    "  local id = tostring(redis.call('INCR', KEYS[4]))\n"
    "  redis.call('HSET', ARGV[1] .. id, 'body', v, 'rc', 1, 'sent', ARGV[3], 'first', ARGV[3],"
    " 'owner', ARGV[2])\n"
    "  redis.call('ZADD', KEYS[3], ARGV[4], id)\n"
    "  out[#out + 1] = id\n"
    "  out[#out + 1] = v\n"
    "  out[#out + 1] = 1\n"
    "  out[#out + 1] = ARGV[3]\n"
    "  out[#out + 1] = ARGV[3]\n"
    "end\n"
    "return out\n";

/* KEYS leases, consumers, queue. ARGV mprefix, consumer, now, deadline,
 * count, dead_before, procprefix. */
static const char reclaim_lua[] =
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[6], 'LIMIT', 0, 10)\n"
    "for _, c in ipairs(dead) do\n"
    "  if c ~= ARGV[2] then\n"
    "    while redis.call('LMOVE', ARGV[7] .. c, KEYS[3], 'RIGHT', 'RIGHT') do end\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[2], c)\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0,"
    " tonumber(ARGV[5]))\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local h = ARGV[1] .. id\n"
    "  local m = redis.call('HMGET', h, 'body', 'sent', 'first')\n"
    "  if not m[1] then\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "  else\n"
    "    local rc = redis.call('HINCRBY', h, 'rc', 1)\n"
    "    redis.call('HSET', h, 'owner', ARGV[2])\n"
    "    redis.call('ZADD', KEYS[1], ARGV[4], id)\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = m[1]\n"
    "    out[#out + 1] = rc\n"
    "    out[#out + 1] = m[2] or ARGV[3]\n"
    "    out[#out + 1] = m[3] or ARGV[3]\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS leases. ARGV mprefix, ids. */
static const char ack_lua[] =
    "for i = 2, #ARGV do\n"
    "  redis.call('DEL', ARGV[1] .. ARGV[i])\n"
    "  redis.call('ZREM', KEYS[1], ARGV[i])\n"
    "end\n"
    "return #ARGV - 1\n";

/* KEYS leases. ARGV mprefix, consumer, now, then (id, delay) pairs. */
static const char release_lua[] =
    "for i = 4, #ARGV, 2 do\n"
    "  local d = tonumber(ARGV[i + 1])\n"
    "  if d >= 0 and redis.call('HGET', ARGV[1] .. ARGV[i], 'owner') == ARGV[2] then\n"
    "    redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[3]) + d, ARGV[i])\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS leases. ARGV mprefix, consumer, deadline, ids. */
static const char beat_lua[] =
    "for i = 4, #ARGV do\n"
    "  if redis.call('HGET', ARGV[1] .. ARGV[i], 'owner') == ARGV[2] then\n"
    "    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[i])\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS queue, leases. ARGV mprefix, now. {depth, pending, oldest sent ms} */
static const char stats_lua[] =
    "local depth = redis.call('LLEN', KEYS[1])\n"
    "local pending = redis.call('ZCARD', KEYS[2])\n"
    "local oldest = tonumber(ARGV[2])\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, 99)) do\n"
    "  local s = tonumber(redis.call('HGET', ARGV[1] .. id, 'sent') or ARGV[2])\n"
    "  if s < oldest then oldest = s end\n"
    "end\n"
    "return {depth, pending, oldest}\n";

static const char *const scripts[L__COUNT] = { fetch_lua, reclaim_lua, ack_lua, release_lua,
                                               beat_lua, stats_lua };

struct keys {
    char mprefix[600], leases[600], seq[600], consumers[600], proc[900], procprefix[600];
};

static void keys(const struct rq *q, struct keys *k)
{
    const char *key = q->o->key;

    snprintf(k->mprefix, sizeof(k->mprefix), "%s:sluice:m:", key);
    snprintf(k->leases, sizeof(k->leases), "%s:sluice:leases", key);
    snprintf(k->seq, sizeof(k->seq), "%s:sluice:seq", key);
    snprintf(k->consumers, sizeof(k->consumers), "%s:sluice:consumers", key);
    snprintf(k->procprefix, sizeof(k->procprefix), "%s:sluice:proc:", key);
    snprintf(k->proc, sizeof(k->proc), "%s:sluice:proc:%s", key, q->consumer);
}

/* The scripts load on the command connection; the reader waits for them
 * (fetch runs there), which sl__rq_fetched's retry covers. */
static int list_setup(struct rq *q, struct sl_redis_conn *c)
{
    int n = 0;

    if (c != q->cmd)
        return 0;
    q->sha_next = 0;
    for (int i = 0; i < L__COUNT; i++)
        if (sl_redis_conn_cmdf(c, sl__rq_script_loaded, c, "SCRIPT LOAD %s", scripts[i]) == 0)
            n++;
    return n;
}

static int64_t deadline(const struct rq *q)
{
    return sl_wall_ms() + q->conf->visibility_timeout_ms;
}

/* (id, body, rc, sent, first) tuples into messages; calls sl__rq_fetched. */
static void tuples(struct rq *q, bool reclaim, const redisReply *r)
{
    struct rq_msg *m = sl_calloc(r->elements / 5 + 1, sizeof(*m));
    size_t n = 0;

    for (size_t i = 0; i + 4 < r->elements; i += 5) {
        const redisReply *id = r->element[i], *body = r->element[i + 1];

        if (id->type != REDIS_REPLY_STRING || body->type != REDIS_REPLY_STRING)
            continue;
        m[n].id = id->str;
        m[n].idlen = id->len;
        m[n].body = body->str;
        m[n].blen = body->len;
        m[n].skip = -1;
        m[n].receive_count = (int)r->element[i + 2]->integer;
        m[n].sent_ms = r->element[i + 3]->type == REDIS_REPLY_STRING
                           ? strtoll(r->element[i + 3]->str, NULL, 10) : sl_wall_ms();
        m[n].first_ms = r->element[i + 4]->type == REDIS_REPLY_STRING
                            ? strtoll(r->element[i + 4]->str, NULL, 10) : m[n].sent_ms;
        n++;
    }
    sl__rq_fetched(q, reclaim, m, n, 0);
    free(m);
}

static void list_fetch_script(struct rq *q, size_t count);

static void on_wait(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    size_t count = (size_t)(uintptr_t)priv;

    if (!r) {
        sl__rq_fetched(q, false, NULL, 0, 200);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        SL_WARN(q->inst, "BLMOVE on %s failed: %s", q->o->key, r->str ? r->str : "");
        sl__rq_fetched(q, false, NULL, 0, 1000);
        return;
    }
    if (r->type == REDIS_REPLY_NIL || q->stopping) {
        /* nothing came (or stopping: the landing list is taken over later) */
        sl__rq_fetched(q, false, NULL, 0, 0);
        return;
    }
    list_fetch_script(q, count);
}

static void on_fetch(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;
    size_t count = (size_t)(uintptr_t)priv;
    struct keys k;

    if (!r) {
        sl__rq_fetched(q, false, NULL, 0, 200);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        if (!sl__rq_script_error(q, q->cmd, r, "fetch"))
            SL_WARN(q->inst, "fetch on %s: unexpected reply (type %d)", q->o->key, r->type);
        sl__rq_fetched(q, false, NULL, 0, 1000);
        return;
    }
    if (r->elements > 0 || q->stopping) {
        tuples(q, false, r);
        return;
    }
    /* empty: wait for one item to land in our list, then fetch again */
    keys(q, &k);
    {
        char block[24];
        const char *argv[] = { "BLMOVE", q->o->key, k.proc, "RIGHT", "LEFT", block };

        snprintf(block, sizeof(block), "%g", RQ_BLOCK_MS / 1000.0);
        if (rq_cmd(q->rd, on_wait, (void *)(uintptr_t)count, 6, argv, NULL) != 0)
            sl__rq_fetched(q, false, NULL, 0, 200);
    }
}

static void list_fetch_script(struct rq *q, size_t count)
{
    struct keys k;
    char now[24], dl[24], cnt[24];

    keys(q, &k);
    snprintf(now, sizeof(now), "%lld", (long long)sl_wall_ms());
    snprintf(dl, sizeof(dl), "%lld", (long long)deadline(q));
    snprintf(cnt, sizeof(cnt), "%zu", count);
    {
        const char *argv[] = { "EVALSHA", q->sha[L_FETCH], "5", q->o->key, k.proc, k.leases,
                               k.seq, k.consumers, k.mprefix, q->consumer, now, dl, cnt };
        if (!q->sha[L_FETCH][0] ||
            rq_cmd(q->rd, on_fetch, (void *)(uintptr_t)count, 13, argv, NULL) != 0)
            sl__rq_fetched(q, false, NULL, 0, 200);
    }
}

static void list_fetch(struct rq *q, size_t count)
{
    list_fetch_script(q, count);
}

static void on_reclaim(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;

    (void)priv;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r && !sl__rq_script_error(q, q->cmd, r, "reclaim"))
            SL_WARN(q->inst, "reclaim on %s: unexpected reply (type %d)", q->o->key, r->type);
        sl__rq_fetched(q, true, NULL, 0, 1000);
        return;
    }
    tuples(q, true, r);
}

static void list_reclaim(struct rq *q, size_t count)
{
    struct keys k;
    char now[24], dl[24], cnt[24], dead[24];
    int64_t vis = q->conf->visibility_timeout_ms;

    keys(q, &k);
    snprintf(now, sizeof(now), "%lld", (long long)sl_wall_ms());
    snprintf(dl, sizeof(dl), "%lld", (long long)deadline(q));
    snprintf(cnt, sizeof(cnt), "%zu", count);
    snprintf(dead, sizeof(dead), "%lld",
             (long long)(sl_wall_ms() - (vis > DEAD_MIN_MS ? vis : DEAD_MIN_MS)));
    {
        const char *argv[] = { "EVALSHA", q->sha[L_RECLAIM], "3", k.leases, k.consumers,
                               q->o->key, k.mprefix, q->consumer, now, dl, cnt, dead,
                               k.procprefix };
        if (rq_cmd(q->cmd, on_reclaim, NULL, 13, argv, NULL) != 0)
            sl__rq_fetched(q, true, NULL, 0, 1000);
    }
}

/* argv[0..4] of the scripts on the leases: EVALSHA <sha> 1 <leases> <mprefix> */
static void lease_script(const struct rq *q, const struct keys *k, int script, const char **argv)
{
    argv[0] = "EVALSHA";
    argv[1] = q->sha[script];
    argv[2] = "1";
    argv[3] = k->leases;
    argv[4] = k->mprefix;
}

static void list_ack(struct rq *q, const char **ids, size_t n, bool cleanup,
                     void (*done)(struct rq *q, bool ok, void *arg), void *arg)
{
    const char **argv = sl_malloc((5 + n) * sizeof(*argv));
    struct keys k;

    (void)cleanup;
    keys(q, &k);
    lease_script(q, &k, L_ACK, argv);
    memcpy(argv + 5, ids, n * sizeof(*ids));
    sl__rq_script_ack(q, (int)(5 + n), argv, done, arg);
    free(argv);
}

static void on_ignore(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;

    if (r)
        sl__rq_script_error(q, q->cmd, r, priv);
}

static void send_delays(struct rq *q, const char **ids, const int64_t *delay_ms, int64_t same,
                        size_t n, const char *what)
{
    const char **argv = sl_malloc((7 + 2 * n) * sizeof(*argv));
    char (*num)[24] = sl_malloc((n + 1) * sizeof(*num));
    struct keys k;
    size_t argc = 7;

    keys(q, &k);
    snprintf(num[0], sizeof(num[0]), "%lld", (long long)sl_wall_ms());
    lease_script(q, &k, L_RELEASE, argv);
    argv[5] = q->consumer;
    argv[6] = num[0];
    for (size_t i = 0; i < n; i++) {
        int64_t d = delay_ms ? delay_ms[i] : same;
        if (d < 0)
            continue;
        snprintf(num[1 + i], sizeof(num[0]), "%lld", (long long)d);
        argv[argc++] = ids[i];
        argv[argc++] = num[1 + i];
    }
    if (argc > 7)
        rq_cmd(q->cmd, on_ignore, (void *)what, (int)argc, argv, NULL);
    free(num);
    free(argv);
}

static void list_release(struct rq *q, const char **ids, const int64_t *delay_ms,
                         const int64_t *first_ms, size_t n)
{
    (void)first_ms;
    send_delays(q, ids, delay_ms, 0, n, "release");
}

static void list_handback(struct rq *q, const char **ids, size_t n)
{
    send_delays(q, ids, NULL, 0, n, "hand back");
}

static void list_beat(struct rq *q, const char **ids, size_t n)
{
    const char **argv = sl_malloc((7 + n) * sizeof(*argv));
    char dl[24];
    struct keys k;

    keys(q, &k);
    snprintf(dl, sizeof(dl), "%lld", (long long)deadline(q));
    lease_script(q, &k, L_BEAT, argv);
    argv[5] = q->consumer;
    argv[6] = dl;
    memcpy(argv + 7, ids, n * sizeof(*ids));
    rq_cmd(q->cmd, on_ignore, "lease refresh", (int)(7 + n), argv, NULL);
    free(argv);
}

static void on_stats(void *arg, redisReply *r, void *priv)
{
    struct rq *q = arg;

    (void)priv;
    if (!sl__rq_stats_reply(q, r))
        return;
    {
        int64_t now = sl_wall_ms(), ms = r->element[2]->integer;
        q->g_oldest_s = q->g_pending > 0 && now > ms ? (double)(now - ms) / 1000.0 : 0;
    }
}

static void list_stats(struct rq *q)
{
    struct keys k;
    char now[24];

    keys(q, &k);
    snprintf(now, sizeof(now), "%lld", (long long)sl_wall_ms());
    {
        const char *argv[] = { "EVALSHA", q->sha[L_STATS], "2", q->o->key, k.leases,
                               k.mprefix, now };
        if (rq_cmd(q->cmd, on_stats, NULL, 7, argv, NULL) == 0)
            q->statting = true;
    }
}

const struct rq_mode sl__rq_list_mode = {
    .name = "list",
    .setup = list_setup,
    .fetch = list_fetch,
    .reclaim = list_reclaim,
    .ack = list_ack,
    .release = list_release,
    .beat = list_beat,
    .stats = list_stats,
    .handback = list_handback,
};
