/* Fuzz target: pgoutput messages as the replication stream delivers them.
 * The input is a sequence of [u16 length][message] so one run can cache a
 * Relation and then decode changes against it; the first byte of the input
 * sets a few type aliases, as a poller would for enums and domains, key
 * columns, and the image format (plain JSON or DynamoDB AttributeValues). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../pollers/postgres/pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pgo_decoder *d = sl__pgo_new();
    struct pgo_msg m;
    struct sl_err err;

    if (size > 0 && (data[0] & 1)) {
        sl__pgo_type_alias(d, 16400, 25);       /* an enum as text */
        sl__pgo_type_alias(d, 16401, 1009);     /* its array */
    }
    if (size > 0 && (data[0] & 2)) {
        static const char *const pk[] = {"id"};
        sl__pgo_set_key_columns(d, 16384, pk, 1);
    }
    if (size > 0 && (data[0] & 4))
        sl__pgo_set_images(d, PGO_IMAGES_AV);
    size_t i = size > 0 ? 1 : 0;
    while (size - i >= 2) {
        size_t n = (size_t)data[i] << 8 | data[i + 1];
        i += 2;
        if (n > size - i)
            n = size - i;
        /* an exact-size copy, so reading one byte too far is caught */
        uint8_t *msg = malloc(n ? n : 1);
        memcpy(msg, data + i, n);
        if (sl__pgo_decode(d, msg, n, &m, &err) == 0)
            sl__pgo_msg_destroy(&m);
        free(msg);
        i += n;
    }
    sl__pgo_free(d);
    return 0;
}
