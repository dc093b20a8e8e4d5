/* Fuzz target: the Runtime API (sandbox/rapi.c) on arbitrary bytes, as a
 * hostile runtime inside a runtime-lambda environment sends them.
 *
 * An environment of a function with `runtime: lambda`, without processes:
 * the first byte picks its state (starting with an invocation waiting for
 * its init, busy with an invocation the runtime has not asked for yet,
 * idle, or busy with an invocation whose client takes a streamed response
 * and now and then says it is full), the second where the rest is cut
 * into two writes. The rest is
 * what the runtime sends on one connection (sl__rapi_adopt on one end of
 * a socketpair); the loop runs after each write and the answers are read
 * and dropped; then the runtime hangs up and the environment is destroyed
 * if the input did not already end it. Half the inputs also get the
 * Extensions and Telemetry APIs (sl__ext_attach, no extension processes). Every input must end without a
 * crash, a leak or a sanitizer report, and the invocation must get its
 * one result. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "../sandbox/internal.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/pollers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] =
    "functions:\n"
    "  rt:\n"
    "    runtime: lambda\n"
    "    handler: /bin/true\n"
    "server:\n"
    "  data_dir: /tmp/sluice-fuzz-rapi\n";

static struct sl_config *conf;
static const char event[] = "{\"fuzz\":true}";

static void setup(void)
{
    struct sl_diags d;

    sl_diags_init(&d, "fuzz-rapi.yaml");
    if (sl_config_load_buffer("fuzz-rapi.yaml", "/nonexistent", yaml, sizeof(yaml) - 1,
                              &sl_registry, &conf, &d) != 0) {
        sl_diags_print(&d, stderr);
        fprintf(stderr, "fuzz/rapi.c: the built-in configuration does not load\n");
        abort();
    }
    sl_diags_destroy(&d);
    sl_log_set_level(SL_LOG_ERROR);
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static void on_result(const struct sl_invoke_result *r, void *arg)
{
    if (getenv("SLUICE_FUZZ_VERBOSE"))
        fprintf(stderr, "result: %s %.*s %s %s\n", r->ok ? "ok" : "failed",
                (int)r->payload_len, r->payload ? r->payload : "", str_or_empty(r->error_type),
                str_or_empty(r->error_message));
    (*(int *)arg)++;
}

/* An InvokeWithResponseStream client: takes the bytes, and holds "too
 * much" after a piece starting with '!' (the stream pauses and asks
 * again). */
static size_t on_chunk(const char *p, size_t n, void *arg)
{
    volatile char sink = 0;

    (void)arg;
    for (size_t i = 0; i < n; i++)
        sink ^= p[i]; /* every byte it was given is readable */
    (void)sink;
    return n && p[0] == '!' ? SL_STREAM_HIGH : 0;
}

static void pump(struct event_base *base, int fd)
{
    char buf[65536];

    for (int i = 0; i < 8; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
            ;
    }
}

static bool alive(struct sl_fnpool *pool, struct sl_env *env)
{
    struct sl_env *e;

    LIST_FOREACH(e, &pool->envs, link)
        if (e == env)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sl_fnpool *pool;
    struct sl_env *env;
    struct pending *inv;
    int sv[2], results = 0, mode;
    size_t cut;

    if (!conf)
        setup();
    if (size < 2)
        return 0;
    mode = data[0] % 4;
    cut = data[1];
    data += 2;
    size -= 2;
    if (cut > size)
        cut = size;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;

    pool = sl_calloc(1, sizeof(*pool));
    pool->base = event_base_new();
    pool->fn = &conf->functions[0];
    snprintf(pool->inst, sizeof(pool->inst), "function:rt");
    LIST_INIT(&pool->envs);
    LIST_INIT(&pool->graves);
    env = sl__env_alloc(pool, ENV_COLD, false);
    sl__rapi_adopt(env, sv[0]);
    if ((data[-2] / 3) & 1)
        sl__ext_attach(env); /* the Extensions and Telemetry APIs too (extensions.c) */

    inv = sl_calloc(1, sizeof(*inv));
    snprintf(inv->request_id, sizeof(inv->request_id), "8f3c2e1a-0000-4000-8000-000000000001");
    inv->event = event;
    inv->event_len = sizeof(event) - 1;
    inv->cb = on_result;
    inv->arg = &results;
    if (mode == 0) {
        env->inv = inv;                    /* waits for the init: the first /next */
    } else if (mode == 1 || mode == 3) {
        sl__env_set_state(env, ENV_IDLE);
        env->inv = inv;
        if (mode == 3)
            inv->on_chunk = on_chunk;      /* a streamed response goes there */
        sl__env_send_invoke(env);          /* busy, not asked for yet */
    } else {
        sl__env_set_state(env, ENV_IDLE);  /* nothing running */
        free(inv);
        inv = NULL;
    }

    if (cut && send(sv[1], data, cut, MSG_NOSIGNAL) < 0)
        cut = size;
    pump(pool->base, sv[1]);
    if (size > cut && alive(pool, env) && send(sv[1], data + cut, size - cut, MSG_NOSIGNAL) < 0)
        size = cut;
    pump(pool->base, sv[1]);
    close(sv[1]);
    pump(pool->base, -1);

    if (alive(pool, env))
        sl__env_destroy(env);
    if (inv && results != 1)
        abort(); /* an invocation ends exactly once */
    sl__env_graves_free(pool);
    event_base_free(pool->base);
    free(pool);
    return 0;
}
