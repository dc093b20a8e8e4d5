/* `sluice lint CONFIG`, and the loading every command shares. */
#include <stdio.h>
#include <stdlib.h>

#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/overrides.h"
#include "sluice/pollers.h"

#include "internal.h"

int sl__cli_load(const char *path, struct sl_config **c)
{
    struct sl_diags d;
    int rc;

    sl_diags_init(&d, path);
    rc = sl_config_load(path, &sl_registry, c, &d);
    if (rc != 0) {
        sl_diags_print(&d, stderr);
        if (d.n > 1)
            fprintf(stderr, "%s: %zu errors\n", path, d.n);
    }
    sl_diags_destroy(&d);
    return rc;
}

int sl__cli_overrides(const char *path, const struct sl_config *c, struct sl_overrides **out)
{
    struct sl_diags d;
    char why[1024];
    size_t bad;

    (void)path;
    *out = NULL;
    if (sl_overrides_load(c->server.data_dir, out, why, sizeof(why)) != 0) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    sl_diags_init(&d, sl_overrides_path(*out));
    bad = sl_overrides_check(*out, c, &d);
    if (bad) {
        sl_diags_print(&d, stderr);
        fprintf(stderr, "%s: %zu override%s no longer fit%s the configuration (made through "
                "the management API): change the configuration back, or delete %s or those "
                "entries from it\n", sl_overrides_path(*out), bad, bad == 1 ? "" : "s",
                bad == 1 ? "s" : "", sl_overrides_path(*out));
        sl_overrides_free(*out);
        *out = NULL;
    }
    sl_diags_destroy(&d);
    return bad ? -1 : 0;
}

void sl__cli_log_setup(const struct sl_config *c)
{
    sl_log_set_level(c->log.level);
    sl_log_set_format(c->log.format);
    sl_log_set_debug(c->log.debug);
}

int sl__cmd_lint(int argc, char **argv)
{
    struct sl_config *c;
    struct sl_overrides *ov;

    if (argc != 2) {
        fprintf(stderr, "usage: sluice lint CONFIG\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(argv[1], &c) != 0)
        return EXIT_FAIL;
    if (sl__cli_overrides(argv[1], c, &ov) != 0) {
        sl_config_free(c);
        return EXIT_FAIL;
    }
    printf("%s: ok (%zu functions, %zu sources, %zu sinks)\n", argv[1], c->nfunctions,
           c->nsources, c->nsinks);
    if (!sl_overrides_empty(ov)) {
        char *t = json_dumps(sl_overrides_doc(ov), JSON_INDENT(2) | JSON_SORT_KEYS);

        printf("runtime overrides in force (%s, made through the management API):\n%s\n",
               sl_overrides_path(ov), t ? t : "");
        free(t);
    }
    sl_overrides_free(ov);
    sl_config_free(c);
    return EXIT_OK;
}
