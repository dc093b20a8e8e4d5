/* Fuzz target: the filter pattern compiler on arbitrary bytes, then the
 * matcher against a fixed document and against the input itself. Every
 * input must compile or be refused with a message, never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char doc_text[] =
    "{\"topic\":\"orders\",\"partition\":3,\"offset\":42,\"eventName\":\"INSERT\","
    "\"value\":{\"type\":\"order\",\"amount\":12.5,\"n\":-3,\"big\":9007199254740993,"
    "\"ok\":true,\"none\":null,\"empty\":\"\",\"region\":\"us-east-1\",\"file\":\"a/b/c.PNG\","
    "\"tags\":[\"red\",\"blue\",[\"deep\"]],\"items\":[{\"sku\":\"a\",\"q\":1},{\"sku\":\"b\",\"q\":2}],"
    "\"nested\":{\"a\":{\"b\":{\"c\":[1,2,3]}}}},"
    "\"body\":\"plain text\",\"dynamodb\":{\"NewImage\":{\"status\":{\"S\":\"paid\"}}}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loads(doc_text, 0, NULL);
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    json_t *criteria;
    struct sl_filter *f = NULL;
    char msg[256];

    /* not JSON: try the bytes as one pattern string (Lambda's form) */
    if (in)
        criteria = json_is_array(in) || json_is_null(in) ? json_incref(in)
                                                         : json_pack("[O]", in);
    else
        criteria = json_pack("[s#]", (const char *)data, (int)size);
    if (criteria && sl_filter_compile(criteria, &f, msg, sizeof(msg)) == 0) {
        sl_filter_match(f, doc);
        sl_filter_match(f, in);
        sl_filter_match(f, NULL);
        sl_filter_targets(f, "value");
        sl_filter_free(f);
    } else if (criteria && memchr(msg, '\0', sizeof(msg)) == NULL) {
        __builtin_trap(); /* every refusal carries a terminated message */
    }
    json_decref(criteria);
    json_decref(in);
    json_decref(doc);
    return 0;
}
