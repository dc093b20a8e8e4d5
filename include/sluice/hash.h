/* sluice: FNV-1a, the one non-cryptographic hash (lanes, lock keys, hash
 * tables). Chainable: pass the previous result as `h` to hash several
 * pieces as one. The values are persistent in places (the Postgres
 * advisory-lock key is derived from them and shared between old and new
 * instances): never change these functions. */
#ifndef SLUICE_HASH_H
#define SLUICE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SL_FNV64_INIT 14695981039346656037ull
#define SL_FNV32_INIT 2166136261u

static inline uint64_t sl_fnv1a64(uint64_t h, const void *data, size_t n)
{
    const unsigned char *s = data;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline uint32_t sl_fnv1a32(uint32_t h, const void *data, size_t n)
{
    const unsigned char *s = data;

    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

#endif
