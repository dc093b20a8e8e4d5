/* sluice: host names resolved without blocking the loop (evdns), for the
 * client connections (Redis, Postgres). One lookup at a time per resolver;
 * the first address wins. */
#ifndef SLUICE_RESOLVE_H
#define SLUICE_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#define SL_IP_MAX 46                  /* INET6_ADDRSTRLEN */

/* The outcome: `ip` on success, NULL with `why` ("cannot resolve db: ...")
 * on failure. Not called after a cancel. */
typedef void (*sl_resolve_fn)(const char *ip, const char *why, void *arg);

struct sl_resolver {                  /* caller storage */
    struct event_base *base;
    void              *dns;           /* evdns_base, made at the first name */
    void              *req;           /* lookup in flight */
    sl_resolve_fn      fn;
    void              *arg;
    char               host[256];
};

void sl_resolver_init(struct sl_resolver *r, struct event_base *base);
/* Cancels a lookup in flight (its callback does not run). */
void sl_resolver_destroy(struct sl_resolver *r);

/* True when `host` needs no lookup: a numeric address, copied to `ip`,
 * or "localhost", which is 127.0.0.1. */
bool sl_resolve_literal(const char *host, char ip[SL_IP_MAX]);

/* Look `host` up; `fn` runs once with the outcome, from the loop or, when
 * the answer is known at once (hosts file), before this returns. A name
 * that needs no lookup is answered too (see sl_resolve_literal). */
void sl_resolve(struct sl_resolver *r, const char *host, sl_resolve_fn fn, void *arg);
/* Forget the lookup in flight, if any; its callback does not run. */
void sl_resolve_cancel(struct sl_resolver *r);

#endif
