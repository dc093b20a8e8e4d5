/* Capped exponential backoff with full jitter. */
#include <sys/random.h>

#include "sluice/backoff.h"
#include "sluice/clock.h"

uint64_t sl_backoff_ceil_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms)
{
    if (attempt < 64 && (base_ms << attempt) >> attempt == base_ms &&
        (base_ms << attempt) < cap_ms)
        return base_ms << attempt;
    return cap_ms;
}

uint64_t sl_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms)
{
    uint64_t ceil_ms = sl_backoff_ceil_ms(attempt, base_ms, cap_ms), r = 0;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        /* no entropy yet (early boot): the clock still spreads instances */
        r = (uint64_t)(sl_mono_ms() * 1000.0) * 0x9E3779B97F4A7C15ull;
    }
    return ceil_ms == UINT64_MAX ? r : r % (ceil_ms + 1);
}
