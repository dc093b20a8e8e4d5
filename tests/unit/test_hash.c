/* The shared hash and backoff: FNV-1a against published vectors, the
 * Postgres advisory-lock key pinned to the value earlier versions used
 * (an old and a new instance must agree on it, or both would stream the
 * slot), and the backoff's ceiling and range. */
#include <criterion/criterion.h>
#include <string.h>

#include "sluice/backoff.h"
#include "sluice/hash.h"

/* From pollers/postgres (pg.h needs libpq's headers; the prototype is enough). */
int64_t sl__pg_lock_key(const char *slot);

Test(hash, fnv1a_published_vectors)
{
    cr_assert_eq(sl_fnv1a64(SL_FNV64_INIT, "", 0), 0xcbf29ce484222325ull);
    cr_assert_eq(sl_fnv1a64(SL_FNV64_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
    cr_assert_eq(sl_fnv1a64(SL_FNV64_INIT, "foobar", 6), 0x85944171f73967e8ull);
    cr_assert_eq(sl_fnv1a32(SL_FNV32_INIT, "", 0), 0x811c9dc5u);
    cr_assert_eq(sl_fnv1a32(SL_FNV32_INIT, "a", 1), 0xe40c292cu);
    cr_assert_eq(sl_fnv1a32(SL_FNV32_INIT, "foobar", 6), 0xbf9cf968u);
}

Test(hash, chaining_equals_one_pass)
{
    uint64_t h = sl_fnv1a64(SL_FNV64_INIT, "public", 6);

    h = sl_fnv1a64(h, ".orders", 7);
    cr_assert_eq(h, sl_fnv1a64(SL_FNV64_INIT, "public.orders", 13));
}

/* Values computed by the code before the hash moved to core: any change
 * here breaks failover between instances of different versions. */
Test(hash, postgres_lock_key_is_pinned)
{
    cr_assert_eq(sl__pg_lock_key("orders"), -4563509950900526147ll);
    cr_assert_eq(sl__pg_lock_key("sluice_orders"), 7937619520440859267ll);
    cr_assert_eq(sl__pg_lock_key("s1"), -3057758451609349972ll);
}

Test(hash, kafka_key_hash_is_pinned)
{
    cr_assert_eq(sl_fnv1a32(SL_FNV32_INIT, "user-42", 7), 39875499u);
}

Test(backoff, ceiling_doubles_up_to_the_cap)
{
    cr_assert_eq(sl_backoff_ceil_ms(0, 100, 5000), 100);
    cr_assert_eq(sl_backoff_ceil_ms(1, 100, 5000), 200);
    cr_assert_eq(sl_backoff_ceil_ms(5, 100, 5000), 3200);
    cr_assert_eq(sl_backoff_ceil_ms(6, 100, 5000), 5000);
    cr_assert_eq(sl_backoff_ceil_ms(63, 100, 5000), 5000);
    cr_assert_eq(sl_backoff_ceil_ms(1000, 100, 5000), 5000);
    cr_assert_eq(sl_backoff_ceil_ms(62, 1ull << 40, UINT64_MAX), UINT64_MAX); /* no overflow */
}

Test(backoff, full_jitter_spans_zero_to_the_ceiling)
{
    uint64_t lo = UINT64_MAX, hi = 0;

    for (int i = 0; i < 4000; i++) {
        uint64_t d = sl_backoff_ms(3, 100, 5000);

        cr_assert_leq(d, 800);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    /* full jitter, not equal jitter: the low half is reached too */
    cr_assert_lt(lo, 100);
    cr_assert_gt(hi, 700);
    cr_assert_eq(sl_backoff_ms(0, 0, 5000), 0);
}
