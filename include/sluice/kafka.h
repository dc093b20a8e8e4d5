/* sluice: librdkafka configuration, the one place its properties are set
 * (the Kafka source, the Kafka sink and `sluice lint` all go through it),
 * so that no property value that may be a secret reaches a message. */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <stdbool.h>
#include <stddef.h>

#include <librdkafka/rdkafka.h>

/* True when a property's value must never be shown: its name holds
 * "password", "secret" or "key" (any case). */
bool sl_kafka_secret_property(const char *name);

/* rd_kafka_conf_set; 0, or -1 with "kafka property NAME=VALUE: why" in
 * `why` (size n). The value shows only when librdkafka knows the property
 * and its name is not a secret's: a mistyped name ("sasl.pasword") may
 * carry a secret too, so its value is never shown. */
int sl_kafka_conf_set(rd_kafka_conf_t *kc, const char *name, const char *value, char *why,
                      size_t n);

#endif
