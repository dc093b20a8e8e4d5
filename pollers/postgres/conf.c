/* The Postgres change-stream source type: its keys and registry entry. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "sluice/mem.h"

#define SEC 1000 /* ms per second */

static const char *const view_names[] = {
    "NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY", NULL,
};
static const char *const snapshot_names[] = { "never", "initial", NULL };
static const char *const image_names[] = { "attribute_values", "json", NULL };

#define F(field) offsetof(struct sl_pg_opts, field)
static const struct sl_conf_key pg_keys[] = {
    { .name = "dsn", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED, .off = F(dsn),
      .desc = "libpq connection string of the database to stream." },
    { .name = "slot", .type = SL_CK_STRING, .off = F(slot),
      .desc = "Logical replication slot; default `sluice_<source name>`." },
    { .name = "publication", .type = SL_CK_STRING, .off = F(publication),
      .desc = "Publication; default `sluice_<source name>`." },
    { .name = "tables", .type = SL_CK_STRLIST, .off = F(tables),
      .desc = "`schema.table` names to publish; all tables when empty." },
    { .name = "stream_view_type", .type = SL_CK_ENUM, .def = "NEW_AND_OLD_IMAGES",
      .enums = view_names, .off = F(stream_view_type),
      .desc = "Which row images records carry." },
    { .name = "image_format", .type = SL_CK_ENUM, .def = "attribute_values", .enums = image_names,
      .off = F(image_format),
      .desc = "`attribute_values`: `Keys`, `NewImage` and `OldImage` in DynamoDB's AttributeValue "
              "form, as Lambda sends DynamoDB Streams records (`{\"id\":{\"N\":\"1\"}}`); "
              "`json`: plain JSON objects (`{\"id\":1}`), which DynamoDB Streams parsers do not "
              "read (see docs/POSTGRES.md)." },
    { .name = "snapshot", .type = SL_CK_ENUM, .def = "never", .enums = snapshot_names,
      .off = F(snapshot),
      .desc = "`initial`: when sluice creates the slot, deliver the rows already in the "
              "published tables (as `INSERT`s with the extra field `\"snapshot\": true`) before "
              "the changes that follow." },
    { .name = "slot_lag_warning_mb", .type = SL_CK_INT, .def = "1024", .min = 1, .max = 16777216,
      .off = F(slot_lag_warning_mb),
      .desc = "Warn when the slot holds more WAL than this many MB (it is checked every 10 s)." },
    { .name = "heartbeat_interval_s", .type = SL_CK_DURATION, .def = "30", .unit = SEC, .min = 0,
      .max = 86400, .off = F(heartbeat_interval_ms),
      .desc = "Write a tiny logical message this often so the slot advances while the published "
              "tables are idle; 0 turns it off." },
    { .name = "status_interval_s", .type = SL_CK_DURATION, .def = "10", .unit = SEC, .min = 1,
      .max = 3600, .off = F(status_interval_ms),
      .desc = "Longest time between standby status updates (the flushed position) to the server." },
};
#undef F

/* Common keys other source types read and this one refuses, with why. */
static const struct sl_conf_refusal pg_refusals[] = {
    { "starting_position",
      "a Postgres source starts where its replication slot stands (a new slot: the current WAL "
      "position) and never reads starting_position; to deliver the rows already in the tables "
      "first, set `snapshot: initial`" },
    { NULL, NULL },
};

/* Changes are sent as they come unless a window is configured. */
static const struct sl_conf_default pg_defaults[] = {
    { "maximum_batching_window_ms", "0" },
    { NULL, NULL },
};

/* The stream ARN its events carry (postgres.c):
 * arn:aws:dynamodb:<region>:<account>:table/<schema.table>/stream/<slot>
 * for a source of one table; with several (or all) tables, `*` stands
 * for the table. */
static void pg_describe(const struct sl_source_conf *c, json_t *out)
{
    const struct sl_pg_opts *o = c->opts;
    char *slot = o->slot ? sl_strdup(o->slot) : sl_asprintf("sluice_%s", c->name);
    char *table, *arn;

    /* the default slot name as postgres.c makes it */
    for (char *p = slot; !o->slot && *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    }
    if (strlen(slot) > 63)
        slot[63] = '\0';
    table = o->tables.n != 1 ? sl_strdup("*")
            : strchr(o->tables.v[0], '.') ? sl_strdup(o->tables.v[0])
                                          : sl_asprintf("public.%s", o->tables.v[0]);
    arn = sl_asprintf("arn:aws:dynamodb:%s:%s:table/%s/stream/%s", c->server->region,
                      c->server->account_id, table, slot);

    json_object_set_new(out, "EventSourceArn", json_string(arn));
    free(arn);
    free(table);
    free(slot);
}

const struct sl_poller_type sl__pg_poller = {
    .conf = {
        .name = "postgres",
        .traits = SL_CONF_STREAM,
        .keys = pg_keys,
        .nkeys = sizeof(pg_keys) / sizeof(pg_keys[0]),
        .size = sizeof(struct sl_pg_opts),
        .defaults = pg_defaults,
        .refusals = pg_refusals,
        .describe = pg_describe,
    },
    .make = sl_pg_source_new,
};
