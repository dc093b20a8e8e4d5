/* Name resolution on the loop through evdns: getaddrinfo(3) would block
 * the loop thread for as long as DNS takes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "sluice/resolve.h"

void sl_resolver_init(struct sl_resolver *r, struct event_base *base)
{
    memset(r, 0, sizeof(*r));
    r->base = base;
}

void sl_resolve_cancel(struct sl_resolver *r)
{
    void *req = r->req;

    r->req = NULL;
    r->fn = NULL;
    if (req)
        evdns_getaddrinfo_cancel(req); /* calls back with EAI_CANCEL: ignored */
}

void sl_resolver_destroy(struct sl_resolver *r)
{
    sl_resolve_cancel(r);
    if (r->dns)
        evdns_base_free(r->dns, 1);
    r->dns = NULL;
}

bool sl_resolve_literal(const char *host, char ip[SL_IP_MAX])
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
        snprintf(ip, SL_IP_MAX, "%s", host);
        return true;
    }
    if (strcmp(host, "localhost") == 0) {
        snprintf(ip, SL_IP_MAX, "127.0.0.1");
        return true;
    }
    return false;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct sl_resolver *r = arg;
    sl_resolve_fn fn = r->fn;
    char ip[SL_IP_MAX], why[400];

    if (result == EVUTIL_EAI_CANCEL || !fn) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    r->req = NULL;
    r->fn = NULL;
    if (result != 0 || !res) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", r->host,
                 result ? evutil_gai_strerror(result) : "no address");
        fn(NULL, why, r->arg);
    } else {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof(ip));
        fn(ip, NULL, r->arg);
    }
    if (res)
        evutil_freeaddrinfo(res);
}

void sl_resolve(struct sl_resolver *r, const char *host, sl_resolve_fn fn, void *arg)
{
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    char ip[SL_IP_MAX], why[400];
    void *req;

    sl_resolve_cancel(r);
    if (sl_resolve_literal(host, ip)) {
        fn(ip, NULL, arg);
        return;
    }
    if (!r->dns)
        r->dns = evdns_base_new(r->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!r->dns) {
        snprintf(why, sizeof(why), "cannot resolve %s: no DNS resolver", host);
        fn(NULL, why, arg);
        return;
    }
    snprintf(r->host, sizeof(r->host), "%s", host);
    r->fn = fn;
    r->arg = arg;
    /* NULL when answered at once: on_resolved has run (and may have
     * started another lookup, which must not be forgotten) */
    req = evdns_getaddrinfo(r->dns, host, NULL, &hints, on_resolved, r);
    if (req)
        r->req = req;
}
