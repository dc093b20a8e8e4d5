/* The Redis queue's SQS record digests (pollers/redis/record.c): md5OfBody
 * against RFC 1321's test suite (every length around the 56- and 64-byte
 * padding edges too, against one-shot hashing of a longer buffer's
 * prefixes), and md5OfMessageAttributes against digests published for
 * SQS's algorithm (a String and a Binary attribute, several attributes
 * out of order), built from stream fields as Redis returns them. */
#include <criterion/criterion.h>
#include <string.h>

#include <hiredis/hiredis.h>

/* From pollers/redis/internal.h (which needs libevent's headers; the
 * prototypes are enough). */
void sl__rq_md5_hex(const void *data, size_t len, char out[33]);
size_t sl__rq_attrs_md5(const redisReply *fields, int skip, char out[33]);

static void md5_is(const char *s, const char *want)
{
    char out[33];

    sl__rq_md5_hex(s, strlen(s), out);
    cr_assert_str_eq(out, want, "md5(\"%s\")", s);
}

Test(sqs_record, md5_rfc1321_suite)
{
    md5_is("", "d41d8cd98f00b204e9800998ecf8427e");
    md5_is("a", "0cc175b9c0f1b6a831c399e269772661");
    md5_is("abc", "900150983cd24fb0d6963f7d28e17f72");
    md5_is("message digest", "f96b697d7cb7938d525a2f31aaf161d0");
    md5_is("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b");
    md5_is("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
           "d174ab98d277d9f5a5611c2c9f419d9f");
    md5_is("1234567890123456789012345678901234567890123456789012345678901234567890123456"
           "7890",
           "57edf4a22be3c955ac49da2e2107b67a");
}

/* Lengths at the padding edges: "a" repeated n times (values from
 * Python's hashlib). */
Test(sqs_record, md5_padding_edges)
{
    static const struct { size_t n; const char *md5; } v[] = {
        { 55, "ef1772b6dff9a122358552954ad0df65" },
        { 56, "3b0c8ac703f828b04c6c197006d17218" },
        { 57, "652b906d60af96844ebd21b674f35e93" },
        { 63, "b06521f39153d618550606be297466d5" },
        { 64, "014842d480b571495a4a0363793f7367" },
        { 65, "c743a45e0d2e6a95cb859adae0248435" },
        { 128, "e510683b3f5ffe4093d021808bc6ff70" },
        { 1000, "cabe45dcc9ae5b66ba86600cca6b8ba8" },
    };
    char buf[1000], out[33];

    memset(buf, 'a', sizeof(buf));
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        sl__rq_md5_hex(buf, v[i].n, out);
        cr_assert_str_eq(out, v[i].md5, "md5 of %zu bytes", v[i].n);
    }
}

/* ------------------------------------------------------------------ */
/* message attributes                                                  */

/* A stream entry's field list [f, v, f, v...] as hiredis builds it. */
struct fields {
    redisReply  arr;
    redisReply  el[16];
    redisReply *ptr[16];
};

static redisReply *fields(struct fields *f, size_t n, const char *const *kv, const size_t *lens)
{
    memset(f, 0, sizeof(*f));
    f->arr.type = REDIS_REPLY_ARRAY;
    f->arr.elements = n;
    f->arr.element = f->ptr;
    for (size_t i = 0; i < n; i++) {
        f->el[i].type = REDIS_REPLY_STRING;
        f->el[i].str = (char *)kv[i];
        f->el[i].len = lens ? lens[i] : strlen(kv[i]);
        f->ptr[i] = &f->el[i];
    }
    return &f->arr;
}

/* Published digests of SQS's algorithm. String: the sqs-md5 checksum
 * module's test ("SellerName" = "Example Store"). Binary: a stream value
 * that is not UTF-8 is a Binary attribute, and Amazon's binary sample
 * (ydb's attributes_md5 test, "test_attribute_value" as Binary:
 * 23f6bd27ea87aab7dfeadcc9aebee495) is UTF-8, so the value here has one
 * more byte, 0xff; its digest comes from a Python implementation of the
 * algorithm that reproduces that sample and the String ones. */
Test(sqs_record, attributes_md5_published_vectors)
{
    struct fields f;
    char out[33];
    const char *one[] = { "SellerName", "Example Store" };
    const char *bin[] = { "test_attribute_name", "test_attribute_value\xff" };
    size_t binlen[] = { 19, 21 };

    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 2, one, NULL), -1, out), 1);
    cr_assert_str_eq(out, "cd28f3b68aeee4b2eac9c66f2f694b58");
    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 2, bin, binlen), -1, out), 1);
    cr_assert_str_eq(out, "4e526a71abb970dcb86c407e7e69125b");
}

/* Several attributes: sorted by name whatever their order in the entry
 * (ydb's "AmazonSample" with two strings, given in reverse order). */
Test(sqs_record, attributes_md5_sorted_by_name)
{
    struct fields f;
    char out[33];
    const char *kv[] = { "test_attribute_name_2", "test_attribute_value_2",
                         "test_attribute_name_1", "test_attribute_value_1" };

    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 4, kv, NULL), -1, out), 2);
    cr_assert_str_eq(out, "d53f3b558fe951154770f25cb63dbba9");
}

/* The body's field is not an attribute; without other fields there are
 * none and no digest. */
Test(sqs_record, attributes_md5_skips_body_and_empty)
{
    struct fields f;
    char out[33];
    const char *kv[] = { "body", "{\"n\":1}", "SellerName", "Example Store" };

    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 4, kv, NULL), 0, out), 1);
    cr_assert_str_eq(out, "cd28f3b68aeee4b2eac9c66f2f694b58");
    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 2, kv, NULL), 0, out), 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(sl__rq_attrs_md5(NULL, -1, out), 0);
}

/* A field repeated in one entry: the last value counts, as a JSON parser
 * reads the messageAttributes object. */
Test(sqs_record, attributes_md5_repeated_name_last_wins)
{
    struct fields f;
    char out[33];
    const char *kv[] = { "SellerName", "Other", "SellerName", "Example Store" };

    cr_assert_eq(sl__rq_attrs_md5(fields(&f, 4, kv, NULL), -1, out), 1);
    cr_assert_str_eq(out, "cd28f3b68aeee4b2eac9c66f2f694b58");
}
