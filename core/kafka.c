/* librdkafka properties, set without showing secrets (see sluice/kafka.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sluice/kafka.h"
#include "sluice/log.h"

static bool contains(const char *s, const char *word)
{
    size_t n = strlen(word);

    for (; *s; s++)
        if (strncasecmp(s, word, n) == 0)
            return true;
    return false;
}

bool sl_kafka_secret_property(const char *name)
{
    return name && (contains(name, "password") || contains(name, "secret") ||
                    contains(name, "key"));
}

int sl_kafka_conf_set(rd_kafka_conf_t *kc, const char *name, const char *value, char *why,
                      size_t n)
{
    char errstr[512];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(kc, name, value, errstr, sizeof(errstr));
    bool hide;

    if (res == RD_KAFKA_CONF_OK)
        return 0;
    hide = res == RD_KAFKA_CONF_UNKNOWN || sl_kafka_secret_property(name);
    if (hide)  /* librdkafka quotes a value it refuses: not this one */
        sl_log_scrub(errstr, sizeof(errstr), value);
    snprintf(why, n, "kafka property %s=%s: %s", name, hide || !value ? "***" : value, errstr);
    return -1;
}
