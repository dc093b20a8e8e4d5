/* Internal to api/: the web console's static files, embedded in the
 * binary. The table is generated at build time from console/ by
 * console/embed.sh into $(BUILD)/gen/console_assets.c. */
#ifndef SLUICE_API_ASSETS_H
#define SLUICE_API_ASSETS_H

#include <stddef.h>

struct sl__asset {
    const char          *path;    /* under /console/: "index.html", "vendor/uplot/LICENSE" */
    const char          *ctype;   /* Content-Type */
    const char          *etag;    /* quoted: a hash of the bytes */
    const unsigned char *data;
    size_t               len;
};

extern const struct sl__asset sl__console_assets[];
extern const size_t sl__console_nassets;

#endif
