/* Placeholder until the redis poller lands: says so instead of starting. */
#include "sluice/pollers.h"

int sl_redis_source_new(struct sl_engine *e, const struct sl_source_conf *c,
                        struct sl_source **out, struct sl_err *err)
{
    (void)e, (void)out;
    return sl_err_set(err, SL_EUNSUPPORTED, false, "source %s: this build has no redis poller yet",
                      c->name);
}
