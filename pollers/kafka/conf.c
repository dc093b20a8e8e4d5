/* The Kafka source type: its keys, checks and registry entry. */
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "sluice/kafka.h"
#include "sluice/mem.h"

#include "conf.h"

/* Kafka's own rule for topic names: 1..249 of [A-Za-z0-9._-], not "." or "..". */
static void check_topics(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                         struct yaml_node_s *node)
{
    const struct sl_strlist *l = field;

    (void)k;
    if (l->n == 0)
        sl_conf_error(ld, node, "at least one topic is needed");
    for (size_t i = 0; i < l->n; i++) {
        const char *t = l->v[i];
        size_t n = strlen(t);
        bool ok = n > 0 && n <= 249 && strcmp(t, ".") != 0 && strcmp(t, "..") != 0;
        for (size_t j = 0; ok && j < n; j++)
            ok = (t[j] >= 'a' && t[j] <= 'z') || (t[j] >= 'A' && t[j] <= 'Z') ||
                 (t[j] >= '0' && t[j] <= '9') || t[j] == '.' || t[j] == '_' || t[j] == '-';
        if (!ok)
            sl_conf_error(ld, node, "'%s' is not a Kafka topic name (1-249 of letters, digits, "
                          "'.', '_', '-')", t);
    }
}

/* Each property as librdkafka takes it, on a scratch configuration, so a
 * mistyped name or a bad value fails at lint rather than at start (and
 * the message hides values the way the source's own does). The ones
 * sluice sets itself are refused by the source. */
static void check_properties(struct sl_conf_load *ld, const struct sl_conf_key *k, void *field,
                             struct yaml_node_s *node)
{
    const struct sl_kvlist *l = field;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char why[768];

    (void)k;
    for (size_t i = 0; i < l->n; i++)
        if (sl_kafka_conf_set(kc, l->v[i].key, l->v[i].value, why, sizeof(why)) != 0)
            sl_conf_error(ld, node, "%s", why);
    rd_kafka_conf_destroy(kc);
}

#define F(field) offsetof(struct sl_kafka_opts, field)
static const struct sl_conf_key kafka_keys[] = {
    { .name = "brokers", .type = SL_CK_STRING, .flags = SL_CK_REQUIRED,
      .off = F(brokers), .desc = "Bootstrap servers, `host:port[,host:port…]`." },
    { .name = "topics", .type = SL_CK_STRLIST, .flags = SL_CK_REQUIRED,
      .off = F(topics), .check = check_topics, .desc = "Topics to consume." },
    { .name = "consumer_group_id", .type = SL_CK_STRING,
      .off = F(consumer_group_id), .desc = "Consumer group; default `sluice-<source name>`." },
    { .name = "kafka", .type = SL_CK_MAP, .off = F(kafka),
      .check = check_properties,
      .desc = "librdkafka properties passed through (security, SASL, TLS, fetch tuning)." },
};
#undef F

/* Lambda's self-managed Kafka mapping has no EventSourceArn: its bootstrap
 * servers and topics name it, as its events do ("bootstrapServers"). */
static void kafka_describe(const struct sl_source_conf *c, json_t *out)
{
    const struct sl_kafka_opts *o = c->opts;
    json_t *eps = json_array(), *topics = json_array();
    const char *p = o->brokers;

    while (p && *p) {
        size_t n = strcspn(p, ",");
        char *one = sl_strndup(p, n);

        json_array_append_new(eps, json_string(one));
        free(one);
        p += n;
        if (*p == ',')
            p++;
    }
    for (size_t i = 0; i < o->topics.n; i++)
        json_array_append_new(topics, json_string(o->topics.v[i]));
    json_object_set_new(out, "SelfManagedEventSource",
                        json_pack("{s:{s:o}}", "Endpoints", "KAFKA_BOOTSTRAP_SERVERS", eps));
    json_object_set_new(out, "Topics", topics);
}

const struct sl_poller_type sl__kafka_poller = {
    .conf = {
        .name = "kafka",
        .traits = SL_CONF_STREAM | SL_CONF_AT_TIMESTAMP | SL_CONF_RETRY_CAP | SL_CONF_START,
        .keys = kafka_keys,
        .nkeys = sizeof(kafka_keys) / sizeof(kafka_keys[0]),
        .size = sizeof(struct sl_kafka_opts),
        .describe = kafka_describe,
    },
    .make = sl_kafka_source_new,
};
