/* The JSON buffer the source record builders share: strings, numbers,
 * base64, always NUL-terminated. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "sluice/jbuf.h"

static char *str(const char *s, size_t n)
{
    struct sl_jbuf b = { 0 };

    sl_jbuf_str(&b, s, n);
    return b.p;
}

Test(jbuf, strings_are_escaped_and_invalid_utf8_replaced)
{
    char *t;

    t = str("a\"b\\c\n\t\x01", 8);
    cr_expect_str_eq(t, "\"a\\\"b\\\\c\\n\\t\\u0001\"");
    free(t);
    t = str("caf\xc3\xa9 \xe2\x82\xac", 9);
    cr_expect_str_eq(t, "\"caf\xc3\xa9 \xe2\x82\xac\"", "valid UTF-8 is kept");
    free(t);
    /* a lone continuation byte, an overlong '/', a surrogate, a cut-off sequence */
    t = str("\x80x\xc0\xafy\xed\xa0\x80z\xe2\x82", 11);
    cr_expect_str_eq(t, "\"\\ufffdx\\ufffd\\ufffdy\\ufffd\\ufffd\\ufffdz\\ufffd\\ufffd\"");
    free(t);
    t = str("", 0);
    cr_expect_str_eq(t, "\"\"");
    free(t);
    t = str("nul\0in", 6);
    cr_expect_str_eq(t, "\"nul\\u0000in\"");
    free(t);
}

Test(jbuf, numbers_and_base64)
{
    struct sl_jbuf b = { 0 };
    static const struct { const char *in; const char *out; } b64[] = {
        { "", "\"\"" }, { "f", "\"Zg==\"" }, { "fo", "\"Zm8=\"" }, { "foo", "\"Zm9v\"" },
        { "foob", "\"Zm9vYg==\"" }, { "fooba", "\"Zm9vYmE=\"" }, { "foobar", "\"Zm9vYmFy\"" },
    };

    sl_jbuf_i64(&b, 0);
    SL_JBUF_LIT(&b, ",");
    sl_jbuf_i64(&b, INT64_MIN);
    SL_JBUF_LIT(&b, ",");
    sl_jbuf_i64(&b, INT64_MAX);
    SL_JBUF_LIT(&b, ",");
    sl_jbuf_i64(&b, -7);
    cr_expect_str_eq(b.p, "0,-9223372036854775808,9223372036854775807,-7");
    free(b.p);
    for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
        struct sl_jbuf c = { 0 };
        sl_jbuf_base64(&c, (const unsigned char *)b64[i].in, strlen(b64[i].in));
        cr_expect_str_eq(c.p, b64[i].out);
        cr_expect_eq(c.n, strlen(b64[i].out));
        free(c.p);
    }
}

Test(jbuf, grows_past_any_size)
{
    struct sl_jbuf b = { 0 };

    for (int i = 0; i < 100000; i++)
        SL_JBUF_LIT(&b, "0123456789");
    cr_expect_eq(b.n, 1000000);
    cr_expect_eq(b.p[b.n], '\0');
    sl_jbuf_printf(&b, "%s-%d", "x", 42);
    cr_expect_str_eq(b.p + 1000000, "x-42");
    free(b.p);
}
