/* test_rng.h — the tests' own random numbers (splitmix64), independent of every generator under
 * test, over a state the caller holds: the same seed gives the same inputs on every machine. */
#ifndef DUET_TEST_RNG_H
#define DUET_TEST_RNG_H

#include <stdint.h>

static inline uint64_t duet_test_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static inline double duet_test_rng_unit(uint64_t *state)
{
    return (double)(duet_test_rng_next(state) >> 11) * 0x1.0p-53;
}

#endif /* DUET_TEST_RNG_H */
