/* `sluice lint CONFIG`, and the loading every command shares. */
#include <stdio.h>

#include "sluice/config.h"
#include "sluice/log.h"
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

void sl__cli_log_setup(const struct sl_config *c)
{
    sl_log_set_level(c->log.level);
    sl_log_set_format(c->log.format);
    sl_log_set_debug(c->log.debug);
}

int sl__cmd_lint(int argc, char **argv)
{
    struct sl_config *c;

    if (argc != 2) {
        fprintf(stderr, "usage: sluice lint CONFIG\n");
        return EXIT_USAGE;
    }
    if (sl__cli_load(argv[1], &c) != 0)
        return EXIT_FAIL;
    printf("%s: ok (%zu functions, %zu sources, %zu sinks)\n", argv[1], c->nfunctions,
           c->nsources, c->nsinks);
    sl_config_free(c);
    return EXIT_OK;
}
