/* Fuzz target: handler frames as sluice reads them (length prefix, cap,
 * msgpack body, message validation) from arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "sluice/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *in = evbuffer_new();
    char why[256];
    struct sl_msg m;
    int rc;

    evbuffer_add(in, data, size);
    while ((rc = sl_frame_take(in, &m, why, sizeof(why))) == 1)
        sl_msg_destroy(&m);
    evbuffer_free(in);

    /* the decoder alone, on the raw bytes as a body */
    if (size > 0) {
        char *body = malloc(size);
        memcpy(body, data, size);
        if (sl_msg_decode(body, size, &m, why, sizeof(why)) == 0)
            sl_msg_destroy(&m);
    }
    return 0;
}
