/* The Redis queue source type: its keys, checks and registry entry. */
#include <stddef.h>
#include <stdlib.h>

#include "conf.h"
#include "sluice/mem.h"
#include "sluice/redis.h"

#define SEC 1000 /* ms per second */

static const char *const mode_names[] = { "stream", "list", NULL };

#define F(field) offsetof(struct sl_redis_opts, field)
#define BASE(field) offsetof(struct sl_source_conf, field)
static const struct sl_conf_key redis_keys[] = {
    { .name = "url", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(url),
      .check = sl_conf_check_redis_url, .desc = "`redis://[user:password@]host:port[/db]` (TLS, `rediss://`, is not supported "
              "yet: use a local TLS tunnel)." },
    { .name = "key", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(key),
      .desc = "Stream or list key of the queue." },
    { .name = "mode", .type = SL_CK_ENUM, .def = "stream", .enums = mode_names,
      .off = F(mode), .desc = "`stream`: a consumer group on a stream. `list`: a reliable list queue." },
    { .name = "group", .type = SL_CK_STRING, .def = "sluice", .off = F(group),
      .desc = "Consumer group of a stream queue." },
    { .name = "consumer", .type = SL_CK_STRING, .off = F(consumer),
      .desc = "Consumer name, unique per instance; default host name and pid." },
    { .name = "visibility_timeout_s", .type = SL_CK_DURATION, .def = "30", .unit = SEC, .min = 0,
      .max = 43200, .flags = SL_CK_BASE, .off = BASE(visibility_timeout_ms),
      .desc = "A received message that is not acknowledged is delivered again after this." },
    { .name = "max_receive_count", .type = SL_CK_INT, .def = "5", .min = 1, .max = 1000,
      .flags = SL_CK_BASE,
      .off = BASE(max_receive_count),
      .desc = "Receives after which a failing message is redriven to `on_failure`." },
    { .name = "delete_on_ack", .type = SL_CK_BOOL, .def = "false",
      .off = F(delete_on_ack), .desc = "XDEL stream entries once acknowledged." },
    { .name = "maximum_concurrency", .type = SL_CK_INT, .def = "2", .min = 2, .max = 1000,
      .off = F(maximum_concurrency),
      .desc = "Most invocations of this source at once: batches run in this many lanes." },
};
#undef F
#undef BASE

/* The queue's ARN as its events carry it (record.c): SQS's, with the key
 * standing for the queue name. */
static void redis_describe(const struct sl_source_conf *c, json_t *out)
{
    const struct sl_redis_opts *o = c->opts;
    char *arn = sl_asprintf("arn:aws:sqs:%s:%s:%s", c->server->region, c->server->account_id,
                            o->key);

    json_object_set_new(out, "EventSourceArn", json_string(arn));
    free(arn);
}

/* A queue: small batches sent at once unless told otherwise. */
static const struct sl_conf_default redis_defaults[] = {
    { "batch_size", "10" },
    { "maximum_batching_window_ms", "0" },
    { NULL, NULL },
};

const struct sl_poller_type sl__redis_poller = {
    .conf = {
        .name = "redis",
        .traits = SL_CONF_QUEUE | SL_CONF_START,
        .keys = redis_keys,
        .nkeys = sizeof(redis_keys) / sizeof(redis_keys[0]),
        .size = sizeof(struct sl_redis_opts),
        .defaults = redis_defaults,
        .describe = redis_describe,
    },
    .make = sl_redis_source_new,
};
