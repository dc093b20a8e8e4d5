/* sluice: the one retry delay: capped exponential backoff with full
 * jitter (a uniform draw in [0, min(cap, base * 2^attempt)]), for
 * reconnects and retried work alike. */
#ifndef SLUICE_BACKOFF_H
#define SLUICE_BACKOFF_H

#include <stdint.h>

/* The ceiling of attempt `attempt` (0 for the first retry):
 * min(cap_ms, base_ms << attempt), without overflow. */
uint64_t sl_backoff_ceil_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms);

/* A delay drawn uniformly from [0, sl_backoff_ceil_ms(...)]. Randomness
 * from getrandom(2), so that instances restarted together spread out; no
 * state is kept. */
uint64_t sl_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms);

#endif
