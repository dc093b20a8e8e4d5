/* One uid per function.
 *
 * Handlers of different functions must not share per-user kernel limits
 * (inotify instances and watches, RLIMIT_NPROC, message queues, keys) or
 * be able to signal or ptrace each other, so each function runs as a uid
 * (and gid, the same number) of its own: server.sandbox_uid_base + the
 * function's index in the configuration. The table only grows while the
 * sandbox lives, so a uid once given to a function is never given to
 * another while any of its environments (which the sandbox outlives)
 * could still run. A function the sandbox was not told about at creation
 * (a pool made directly on a sandbox, as the benchmarks do) gets the next
 * uid after the configured ones. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sluice/mem.h"

uid_t sl__sandbox_uid(struct sl_sandbox *sb, const char *name)
{
    struct sl__uid *u;

    for (size_t i = 0; i < sb->nuids; i++)
        if (strcmp(sb->uids[i].name, name) == 0)
            return sb->uids[i].uid;
    sb->uids = sl_realloc(sb->uids, (sb->nuids + 1) * sizeof(*sb->uids));
    u = &sb->uids[sb->nuids];
    u->name = sl_strdup(name);
    /* after every uid given so far: the table is in uid order */
    u->uid = sb->nuids ? sb->uids[sb->nuids - 1].uid + 1 : sb->uid_base;
    sb->nuids++;
    return u->uid;
}

int sl__sandbox_uids_init(struct sl_sandbox *sb, const struct sl_sandbox_opts *o,
                          struct sl_err *err)
{
    int64_t base = o->uid_base > 0 ? o->uid_base : SL_SANDBOX_UID_BASE;

    /* room for the configured functions and as many more again */
    if (base < 1000 || base + 2 * (int64_t)o->nfunctions + 1 > (int64_t)SL_SANDBOX_UID_MAX)
        return sl_err_set(err, SL_ECONFIG, false, "server.sandbox_uid_base %lld: the range "
                          "for %zu functions must lie within 1000..%lld", (long long)base,
                          o->nfunctions, (long long)SL_SANDBOX_UID_MAX);
    sb->uid_base = (uid_t)base;
    for (size_t i = 0; i < o->nfunctions; i++)
        sl__sandbox_uid(sb, o->functions[i].name);
    return 0;
}

void sl__sandbox_uids_destroy(struct sl_sandbox *sb)
{
    for (size_t i = 0; i < sb->nuids; i++)
        free(sb->uids[i].name);
    free(sb->uids);
    sb->uids = NULL;
    sb->nuids = 0;
}
