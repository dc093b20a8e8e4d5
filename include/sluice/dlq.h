/* sluice: the `sluice dlq` command. */
#ifndef SLUICE_DLQ_H
#define SLUICE_DLQ_H

#include "sluice/config.h"

/* `verb` is list, show or redrive; `id` picks one entry (show, redrive)
 * or is NULL for all. Returns the process exit code. */
int sl_dlq_command(const struct sl_config *c, const char *verb, const char *sink,
                   const char *id, const char *endpoint);

#endif
